#include "rules/key_sort.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"

namespace invariantd {
namespace {

std::vector<Hash128> Reference(std::vector<Hash128> v) {
  std::sort(v.begin(), v.end(), KeyLess);
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

std::vector<Hash128> Sorted(std::vector<Hash128> v, bool* fell_back = nullptr) {
  std::vector<Hash128> scratch;
  std::vector<uint32_t> counts;
  const bool f = SortUniqueKeys(&v, &scratch, &counts);
  if (fell_back != nullptr) *fell_back = f;
  return v;
}

TEST(SortUniqueKeysTest, OrdersByLoThenHiAndDropsDuplicates) {
  std::mt19937_64 rng(7);
  std::vector<Hash128> v;
  for (int i = 0; i < 5000; ++i) v.push_back(Hash128{rng(), rng()});
  for (int i = 0; i < 5000; i += 3) v.push_back(v[static_cast<size_t>(i)]);
  // Equal lo, different hi; and the extremes of lo.
  v.push_back(Hash128{42, 2});
  v.push_back(Hash128{42, 1});
  v.push_back(Hash128{UINT64_MAX, 0});
  v.push_back(Hash128{0, UINT64_MAX});
  const std::vector<Hash128> want = Reference(v);
  bool fell_back = true;
  const std::vector<Hash128> got = Sorted(v, &fell_back);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want);
  EXPECT_FALSE(fell_back);  // hashed keys: the linear path did it
}

// Keys ground to share their top bits land in one bucket: the insertion
// sort runs out of budget and std::sort finishes, with the same result.
TEST(SortUniqueKeysTest, OneCrowdedBucketStillSortsCorrectly) {
  std::mt19937_64 rng(9);
  std::vector<Hash128> v;
  for (int i = 0; i < 20000; ++i) {
    v.push_back(Hash128{rng() >> 24, rng()});  // top 24 bits zero
  }
  const std::vector<Hash128> want = Reference(v);
  bool fell_back = false;
  EXPECT_TRUE(Sorted(v, &fell_back) == want);
  EXPECT_TRUE(fell_back);
}

TEST(SortUniqueKeysTest, ReusesItsWorkingMemory) {
  std::vector<Hash128> scratch;
  std::vector<uint32_t> counts;
  std::mt19937_64 rng(3);
  for (size_t n : {size_t{100}, size_t{3000}, size_t{0}, size_t{70},
                   kMaxBucketSortKeys + 1}) {
    std::vector<Hash128> v;
    for (size_t i = 0; i < n; ++i) v.push_back(Hash128{rng(), rng()});
    const std::vector<Hash128> want = Reference(v);
    SortUniqueKeys(&v, &scratch, &counts);
    EXPECT_TRUE(v == want) << n;
  }
}

RC_GTEST_PROP(SortUniqueKeysProperty, MatchesSortAndUnique, ()) {
  // Few distinct top bits and many repeats: crowded buckets and duplicates;
  // sizes on both sides of the 64-key std::sort cut-off.
  const auto lo_top = *rc::gen::inRange<uint64_t>(0, 8);
  const auto size = *rc::gen::inRange<size_t>(0, 600);
  const auto raw =
      *rc::gen::container<std::vector<std::pair<uint8_t, uint8_t>>>(
          size, rc::gen::pair(rc::gen::arbitrary<uint8_t>(),
                              rc::gen::inRange<uint8_t>(0, 4)));
  std::vector<Hash128> v;
  for (const auto& [lo, hi] : raw) {
    v.push_back(Hash128{((lo_top + lo % 3) << 61) | lo, hi});
  }
  RC_ASSERT(Sorted(v) == Reference(v));
}

}  // namespace
}  // namespace invariantd
