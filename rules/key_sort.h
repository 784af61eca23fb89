// SortUniqueKeys: sorts 128-bit keys by (lo, hi) and drops duplicates, in
// about linear time for hashed keys.
//
// KeyTable drains the keys changed since the last checkpoint in this order
// (homes are monotonic in key.lo, so the lookups that follow walk the slot
// arrays in address order). That drain runs on the evaluation thread while
// events wait, so its cost is part of detection latency: std::sort took
// 1.2 ms of a 2.5 ms drain of 24k keys. Here a counting pass scatters the
// keys into about one bucket per key by the top bits of lo, and an
// insertion sort finishes the few inversions left inside buckets.
//
// Keys are hashes of event fields, so an adversary who grinds inputs could
// pile many keys into one bucket and make the insertion sort quadratic: it
// gives up after a linear budget of moves and std::sort finishes the job.
#ifndef INVARIANTD_RULES_KEY_SORT_H_
#define INVARIANTD_RULES_KEY_SORT_H_

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sidecar/core/hash.h"

namespace invariantd {

// Above this many keys the sort works in place (std::sort): a drain that
// large is a flood of new keys, where memory matters more than the pause,
// and the bucket pass would need a second copy of all of them.
inline constexpr size_t kMaxBucketSortKeys = size_t{1} << 16;

inline bool KeyLess(const Hash128& a, const Hash128& b) {
  return a.lo != b.lo ? a.lo < b.lo : a.hi < b.hi;
}

// `scratch` and `counts` are working memory, kept by the caller so that
// repeated sorts do not allocate. Returns true when the insertion sort ran
// out of budget and std::sort finished (for tests).
inline bool SortUniqueKeys(std::vector<Hash128>* keys,
                           std::vector<Hash128>* scratch,
                           std::vector<uint32_t>* counts) {
  std::vector<Hash128>& v = *keys;
  const size_t n = v.size();
  bool fell_back = false;
  if (n < 64 || n > kMaxBucketSortKeys) {
    std::sort(v.begin(), v.end(), KeyLess);
  } else {
    const int bits = static_cast<int>(std::bit_width(n));
    const int shift = 64 - bits;
    counts->assign((size_t{1} << bits) + 1, 0);
    uint32_t* c = counts->data();
    for (const Hash128& k : v) ++c[(k.lo >> shift) + 1];
    for (size_t b = 1; b < counts->size(); ++b) c[b] += c[b - 1];
    scratch->resize(n);
    Hash128* out = scratch->data();
    for (const Hash128& k : v) out[c[k.lo >> shift]++] = k;
    // Ordered by bucket: what is left are inversions inside buckets.
    const size_t budget = 8 * n;
    size_t moves = 0;
    bool done = true;
    for (size_t i = 1; i < n && done; ++i) {
      const Hash128 k = out[i];
      size_t j = i;
      for (; j > 0 && KeyLess(k, out[j - 1]); --j) out[j] = out[j - 1];
      out[j] = k;
      moves += i - j;
      if (moves > budget) done = false;
    }
    if (!done) {
      std::sort(scratch->begin(), scratch->end(), KeyLess);
      fell_back = true;
    }
    v.swap(*scratch);
  }
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return fell_back;
}

}  // namespace invariantd

#endif  // INVARIANTD_RULES_KEY_SORT_H_
