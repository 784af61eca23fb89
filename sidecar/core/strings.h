// String glue. Debian 12's Abseil is built with its own absl::string_view
// (ABSL_OPTION_USE_STD_STRING_VIEW 0), distinct from std::string_view. The
// project speaks std::string_view; these helpers cross the boundary.
#ifndef INVARIANTD_CORE_STRINGS_H_
#define INVARIANTD_CORE_STRINGS_H_

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace invariantd {

inline absl::string_view AV(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view SV(absl::string_view s) {
  return std::string_view(s.data(), s.size());
}

// Transparent hash/eq so maps keyed by std::string accept std::string_view
// lookups without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const {
    return absl::Hash<absl::string_view>{}(AV(s));
  }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const {
    return a == b;
  }
};

template <typename V>
using StringMap = absl::flat_hash_map<std::string, V, StringHash, StringEq>;
using StringSet = absl::flat_hash_set<std::string, StringHash, StringEq>;

}  // namespace invariantd

#endif  // INVARIANTD_CORE_STRINGS_H_
