#include "sidecar/core/value.h"

#include <charconv>
#include <cmath>
#include <limits>

#include "sidecar/core/json_text.h"

namespace invariantd {
namespace {

// An integral double within int64 range canonicalizes to int.
bool IntegralDouble(double d, int64_t* out) {
  if (!std::isfinite(d) || d != std::floor(d)) return false;
  if (d < -9223372036854775808.0 || d >= 9223372036854775808.0) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

}  // namespace

std::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kMissing:
      return "missing";
    case ValueKind::kNull:
      return "null";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt:
      return "int";
    case ValueKind::kDouble:
      return "double";
    case ValueKind::kString:
      return "string";
    case ValueKind::kJson:
      return "json";
  }
  return "unknown";
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_int() && b.is_int()) return a.int_value() == b.int_value();
    if (a.is_double() && b.is_double()) {
      return a.double_value() == b.double_value();
    }
    const Value& d = a.is_double() ? a : b;
    const Value& i = a.is_int() ? a : b;
    int64_t as_int;
    return IntegralDouble(d.double_value(), &as_int) && as_int == i.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case ValueKind::kMissing:
    case ValueKind::kNull:
      return true;
    case ValueKind::kBool:
      return a.bool_value() == b.bool_value();
    case ValueKind::kString:
    case ValueKind::kJson:
      return a.str() == b.str();
    default:
      return false;
  }
}

std::optional<int> Value::CompareMixedNumbers(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number()) return std::nullopt;
  const double x = a.AsDouble();
  const double y = b.AsDouble();
  if (std::isnan(x) || std::isnan(y)) return std::nullopt;
  // Exact comparison when one side is a large int that a double cannot hold.
  if (a.is_int() != b.is_int()) {
    const int64_t i = a.is_int() ? a.int_value() : b.int_value();
    const double d = a.is_int() ? y : x;
    int c;
    if (d >= 9223372036854775808.0) {
      c = -1;  // i < d
    } else if (d < -9223372036854775808.0) {
      c = 1;
    } else {
      const double fl = std::floor(d);
      const int64_t di = static_cast<int64_t>(fl);
      if (i != di) {
        c = i < di ? -1 : 1;
      } else {
        c = (d > fl) ? -1 : 0;
      }
    }
    return a.is_int() ? c : -c;
  }
  return x < y ? -1 : x > y ? 1 : 0;
}

std::string Value::ToJson() const {
  switch (kind_) {
    case ValueKind::kMissing:
    case ValueKind::kNull:
      return "null";
    case ValueKind::kBool:
      return bool_value() ? "true" : "false";
    case ValueKind::kInt:
    case ValueKind::kDouble:
      if (is_double() && !std::isfinite(d_)) return "null";
      return ToText();
    case ValueKind::kString: {
      std::string out;
      AppendJsonString(str(), &out);
      return out;
    }
    case ValueKind::kJson:
      return std::string(str());
  }
  return "null";
}

std::string Value::ToText() const {
  switch (kind_) {
    case ValueKind::kMissing:
      return "<missing>";
    case ValueKind::kNull:
      return "null";
    case ValueKind::kBool:
      return bool_value() ? "true" : "false";
    case ValueKind::kInt:
      return std::to_string(i_);
    case ValueKind::kDouble: {
      char buf[64];
      auto res = std::to_chars(buf, buf + sizeof(buf), d_);
      return std::string(buf, res.ptr);
    }
    case ValueKind::kString:
    case ValueKind::kJson:
      return std::string(str());
  }
  return "";
}

OwnedValue::OwnedValue(const Value& v) : value_(v) {
  if (v.is_string() || v.is_json()) text_.assign(v.str());
}

Value OwnedValue::view() const {
  if (value_.is_string()) return Value::String(text_);
  if (value_.is_json()) return Value::Json(text_);
  return value_;
}

}  // namespace invariantd
