// Stable 128-bit hashing (XXH3-128) of bytes and of canonical Values.
//
// Stable means: the same input gives the same hash in every process, build
// and machine. Violation ids, event identities and per-key state keys are
// built on it, so a replay after a crash reproduces them exactly. (absl::Hash
// is seeded per process and must never be used for these.)
#ifndef INVARIANTD_CORE_HASH_H_
#define INVARIANTD_CORE_HASH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "sidecar/core/value.h"

namespace invariantd {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const Hash128& a, const Hash128& b) {
    return a.lo == b.lo && a.hi == b.hi;
  }
  friend bool operator!=(const Hash128& a, const Hash128& b) {
    return !(a == b);
  }
  // 32 lowercase hex digits, hi first.
  std::string Hex() const;
  template <typename H>
  friend H AbslHashValue(H h, const Hash128& v) {
    return H::combine(std::move(h), v.lo, v.hi);
  }
};

Hash128 HashBytes(std::string_view bytes);

// Builds the canonical byte encoding of a tuple of values and hashes it.
// Reuse one encoder per thread to avoid allocations. Canonical: a number
// that is integral hashes as an int whatever its JSON spelling; strings are
// length-prefixed so ("ab","c") and ("a","bc") differ.
class TupleHasher {
 public:
  void Clear() { buf_.clear(); }
  void Add(const Value& v);
  void AddBytes(std::string_view bytes);
  void AddU64(uint64_t v);
  Hash128 Finish() const { return HashBytes(buf_); }

 private:
  std::string buf_;
};

}  // namespace invariantd

#endif  // INVARIANTD_CORE_HASH_H_
