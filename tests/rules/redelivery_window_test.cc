#include "rules/redelivery_window.h"

#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"

namespace invariantd {
namespace {

Hash128 Id(uint64_t lo, uint64_t hi) {
  Hash128 h;
  h.lo = lo;
  h.hi = hi;
  return h;
}

TEST(RedeliveryWindowTest, AnIdentityLeavesAfterExactlyCapacityOthers) {
  RedeliveryWindow w(3);
  EXPECT_FALSE(w.SeenOrTake(Id(1, 1)));
  EXPECT_TRUE(w.SeenOrTake(Id(1, 1)));  // a redelivery: not taken again
  EXPECT_FALSE(w.SeenOrTake(Id(2, 2)));
  EXPECT_FALSE(w.SeenOrTake(Id(3, 3)));
  EXPECT_TRUE(w.Contains(Id(1, 1)));  // 3 taken: all inside
  EXPECT_FALSE(w.SeenOrTake(Id(4, 4)));
  EXPECT_FALSE(w.Contains(Id(1, 1)));  // the oldest left
  EXPECT_TRUE(w.Contains(Id(2, 2)));
  EXPECT_EQ(w.taken(), 4u);
  EXPECT_EQ(w.Newest(1), Id(4, 4));
  EXPECT_EQ(w.Newest(3), Id(2, 2));
}

TEST(RedeliveryWindowTest, CapacityZeroKeepsNothing) {
  RedeliveryWindow w(0);
  EXPECT_FALSE(w.SeenOrTake(Id(1, 1)));
  EXPECT_FALSE(w.SeenOrTake(Id(1, 1)));
  EXPECT_FALSE(w.Contains(Id(1, 1)));
  EXPECT_EQ(w.taken(), 0u);
}

// Identities that share a bucket (the same low word) and differ only in
// the high word: one long chain, walked past identities that left.
TEST(RedeliveryWindowTest, OneBucketChainStopsWhereTheWindowEnds) {
  RedeliveryWindow w(4);
  for (uint64_t i = 1; i <= 10; ++i) EXPECT_FALSE(w.SeenOrTake(Id(7, i)));
  for (uint64_t i = 1; i <= 6; ++i) EXPECT_FALSE(w.Contains(Id(7, i))) << i;
  for (uint64_t i = 7; i <= 10; ++i) EXPECT_TRUE(w.Contains(Id(7, i))) << i;
}

// Against a reference model (a deque of the last N identities taken), after
// every step, for random sequences drawn from a small pool so that
// redeliveries, bucket collisions (few distinct low words) and identities
// that return after leaving are all common.
RC_GTEST_PROP(RedeliveryWindowProperty, MatchesTheLastNTaken, ()) {
  const size_t capacity = *rc::gen::inRange<size_t>(0, 20);
  const auto ids = *rc::gen::container<std::vector<std::pair<int, int>>>(
      rc::gen::pair(rc::gen::inRange(0, 4), rc::gen::inRange(0, 12)));
  RedeliveryWindow w(capacity);
  std::deque<Hash128> ref;  // newest at the back
  auto in_ref = [&](const Hash128& id) {
    for (const Hash128& r : ref) {
      if (r == id) return true;
    }
    return false;
  };
  uint64_t taken = 0;
  for (const auto& [lo, hi] : ids) {
    const Hash128 id = Id(static_cast<uint64_t>(lo), static_cast<uint64_t>(hi));
    const bool expected = in_ref(id);
    RC_ASSERT(w.Contains(id) == expected);
    RC_ASSERT(w.SeenOrTake(id) == expected);
    if (!expected && capacity > 0) {
      ref.push_back(id);
      ++taken;
      if (ref.size() > capacity) ref.pop_front();
    }
    RC_ASSERT(w.taken() == taken);
    for (uint64_t k = 1; k <= ref.size(); ++k) {
      RC_ASSERT(w.Newest(k) == ref[ref.size() - k]);
    }
    for (int l = 0; l < 4; ++l) {
      for (int h = 0; h < 12; ++h) {
        const Hash128 probe =
            Id(static_cast<uint64_t>(l), static_cast<uint64_t>(h));
        RC_ASSERT(w.Contains(probe) == in_ref(probe));
      }
    }
  }
}

}  // namespace
}  // namespace invariantd
