#include "sidecar/core/binary.h"

namespace invariantd {

void PutValue(std::string* out, const Value& v) {
  PutU8(out, static_cast<uint8_t>(v.kind()));
  switch (v.kind()) {
    case ValueKind::kMissing:
    case ValueKind::kNull:
      return;
    case ValueKind::kBool:
      PutU64(out, v.bool_value() ? 1 : 0);
      return;
    case ValueKind::kInt:
      PutU64(out, static_cast<uint64_t>(v.int_value()));
      return;
    case ValueKind::kDouble: {
      uint64_t bits;
      const double d = v.double_value();
      std::memcpy(&bits, &d, 8);
      PutU64(out, bits);
      return;
    }
    case ValueKind::kString:
    case ValueKind::kJson:
      PutBytes(out, v.str());
      return;
  }
}

bool GetValue(std::string_view* in, OwnedValue* v) {
  uint8_t kind = 0;
  if (!GetU8(in, &kind)) return false;
  uint64_t u = 0;
  std::string_view text;
  switch (static_cast<ValueKind>(kind)) {
    case ValueKind::kMissing:
      *v = OwnedValue(Value::Missing());
      return true;
    case ValueKind::kNull:
      *v = OwnedValue(Value::Null());
      return true;
    case ValueKind::kBool:
      if (!GetU64(in, &u)) return false;
      *v = OwnedValue(Value::Bool(u != 0));
      return true;
    case ValueKind::kInt:
      if (!GetU64(in, &u)) return false;
      *v = OwnedValue(Value::Int(static_cast<int64_t>(u)));
      return true;
    case ValueKind::kDouble: {
      if (!GetU64(in, &u)) return false;
      double d;
      std::memcpy(&d, &u, 8);
      *v = OwnedValue(Value::Double(d));
      return true;
    }
    case ValueKind::kString:
      if (!GetBytes(in, &text)) return false;
      *v = OwnedValue(Value::String(text));
      return true;
    case ValueKind::kJson:
      if (!GetBytes(in, &text)) return false;
      *v = OwnedValue(Value::Json(text));
      return true;
  }
  return false;  // not a kind this build knows
}

}  // namespace invariantd
