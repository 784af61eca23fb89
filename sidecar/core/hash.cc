#include "sidecar/core/hash.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_format.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace invariantd {

std::string Hash128::Hex() const {
  return absl::StrFormat("%016x%016x", hi, lo);
}

Hash128 HashBytes(std::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return Hash128{h.low64, h.high64};
}

void TupleHasher::AddU64(uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  buf_.append(b, 8);
}

void TupleHasher::AddBytes(std::string_view bytes) {
  AddU64(bytes.size());
  buf_.append(bytes);
}

void TupleHasher::Add(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kMissing:
      buf_.push_back('m');
      return;
    case ValueKind::kNull:
      buf_.push_back('n');
      return;
    case ValueKind::kBool:
      buf_.push_back(v.bool_value() ? 't' : 'f');
      return;
    case ValueKind::kInt:
      buf_.push_back('i');
      AddU64(static_cast<uint64_t>(v.int_value()));
      return;
    case ValueKind::kDouble: {
      const double d = v.double_value();
      if (std::isfinite(d) && d == std::floor(d) &&
          d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        buf_.push_back('i');
        AddU64(static_cast<uint64_t>(static_cast<int64_t>(d)));
        return;
      }
      uint64_t bits;
      std::memcpy(&bits, &d, 8);
      buf_.push_back('d');
      AddU64(bits);
      return;
    }
    case ValueKind::kString:
      buf_.push_back('s');
      AddBytes(v.str());
      return;
    case ValueKind::kJson:
      buf_.push_back('j');
      AddBytes(v.str());
      return;
  }
}

}  // namespace invariantd
