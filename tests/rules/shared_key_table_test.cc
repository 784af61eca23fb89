// SharedKeyTable: one slot per key for several rules. Per-member presence,
// counters and erasure logs must read exactly as tables of their own would.
#include "rules/shared_key_table.h"

#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace invariantd {
namespace {

Hash128 K(uint64_t i) { return Hash128{i * 0x9e3779b97f4a7c15ULL, i}; }

void Put(void* state, uint64_t v) { std::memcpy(state, &v, 8); }
uint64_t Get(const void* state) {
  uint64_t v;
  std::memcpy(&v, state, 8);
  return v;
}

std::shared_ptr<SharedKeyTable> Three(
    size_t max_keys = 1000, OverflowPolicy p = OverflowPolicy::kEvictOldest) {
  return SharedKeyTable::Create({16, 16, 16}, max_keys, p);
}

std::vector<Hash128> KeysOf(const SharedKeyTable& t, int m) {
  std::vector<Hash128> keys;
  t.ForEach(m, [&](const Hash128& k, const void*) { keys.push_back(k); });
  return keys;
}

TEST(SharedKeyTableTest, LayoutsThatFitAndThatDoNot) {
  EXPECT_NE(SharedKeyTable::Create({16, 16, 16, 16}, 10,
                                   OverflowPolicy::kEvictOldest),
            nullptr);
  EXPECT_NE(SharedKeyTable::Create({4, 12, 8}, 10, OverflowPolicy::kRejectNew),
            nullptr);
  EXPECT_EQ(SharedKeyTable::Create({16, 16, 16, 16, 8}, 10,
                                   OverflowPolicy::kEvictOldest),
            nullptr);  // 72 bytes of state
  EXPECT_EQ(SharedKeyTable::Create(std::vector<size_t>(9, 4), 10,
                                   OverflowPolicy::kEvictOldest),
            nullptr);  // 9 members
  EXPECT_EQ(SharedKeyTable::Create({16, 0}, 10, OverflowPolicy::kEvictOldest),
            nullptr);
  auto t = SharedKeyTable::Create({4, 12, 8}, 10, OverflowPolicy::kRejectNew);
  EXPECT_EQ(t->offset(0), 8u);
  EXPECT_EQ(t->offset(1), 16u);
  EXPECT_EQ(t->offset(2), 32u);
}

TEST(SharedKeyTableTest, AMemberHasOnlyTheKeysItAskedFor) {
  auto t = Three();
  SharedKeyTable::Ref r = t->FindOrInsert(K(1), 0);
  ASSERT_NE(r.state, nullptr);
  EXPECT_TRUE(r.inserted);
  Put(r.state, 11);
  EXPECT_EQ(t->Find(K(1), 1), nullptr);
  r = t->FindOrInsert(K(1), 1);
  EXPECT_TRUE(r.inserted);  // new for member 1, though the key was there
  Put(r.state, 21);
  r = t->FindOrInsert(K(1), 0);
  EXPECT_FALSE(r.inserted);
  EXPECT_EQ(Get(r.state), 11u);  // each member's bytes are its own
  EXPECT_EQ(Get(t->Find(K(1), 1)), 21u);
  t->FindOrInsert(K(2), 2);
  EXPECT_EQ(t->keys(), 2u);
  EXPECT_EQ(t->size(0), 1u);
  EXPECT_EQ(t->size(1), 1u);
  EXPECT_EQ(t->size(2), 1u);
  EXPECT_EQ(KeysOf(*t, 2), std::vector<Hash128>{K(2)});
  // The memory is reported in shares by the members that have a state.
  for (int m = 0; m < 3; ++m) t->Attach(m, 1);
  EXPECT_EQ(t->BytesOf(0) + t->BytesOf(1) + t->BytesOf(2), t->Bytes());
  t->Attach(0, -1);
  EXPECT_EQ(t->BytesOf(0), 0u);
  EXPECT_EQ(t->BytesOf(1) + t->BytesOf(2), t->Bytes());
}

TEST(SharedKeyTableTest, AKeyLeavesWithItsLastMember) {
  auto t = Three();
  Put(t->FindOrInsert(K(1), 0).state, 5);
  Put(t->FindOrInsert(K(1), 2).state, 7);
  EXPECT_FALSE(t->Erase(K(1), 1));  // member 1 never had it
  EXPECT_TRUE(t->Erase(K(1), 0));
  EXPECT_EQ(t->keys(), 1u);
  EXPECT_EQ(t->Find(K(1), 0), nullptr);
  EXPECT_EQ(Get(t->Find(K(1), 2)), 7u);
  EXPECT_TRUE(t->Erase(K(1), 2));
  EXPECT_EQ(t->keys(), 0u);
  EXPECT_EQ(t->size(2), 0u);
}

TEST(SharedKeyTableTest, EvictionsCountForTheMembersThatHadTheKey) {
  auto t = Three(/*max_keys=*/2);
  for (int m = 0; m < 3; ++m) t->TrackErasures(m);
  t->FindOrInsert(K(1), 0);
  t->FindOrInsert(K(1), 1);
  t->FindOrInsert(K(2), 1);
  t->FindOrInsert(K(2), 2);
  // A third key evicts one of the two (sampled: either may go).
  ASSERT_NE(t->FindOrInsert(K(3), 2).state, nullptr);
  EXPECT_EQ(t->keys(), 2u);
  const bool first_went = t->Find(K(1), 1) == nullptr;
  EXPECT_EQ(first_went, t->Find(K(2), 1) != nullptr);
  EXPECT_EQ(t->evicted(0), first_went ? 1u : 0u);
  EXPECT_EQ(t->evicted(1), 1u);
  EXPECT_EQ(t->evicted(2), first_went ? 0u : 1u);
  EXPECT_EQ(t->size(0), first_went ? 0u : 1u);
  EXPECT_EQ(t->size(1), 1u);
  EXPECT_EQ(t->size(2), first_went ? 2u : 1u);
  // The eviction is an erasure for exactly those members.
  for (int m = 0; m < 3; ++m) {
    std::vector<Hash128> lost;
    t->DrainErased(m, [&](const Hash128& k) { lost.push_back(k); });
    EXPECT_EQ(lost.size(), t->evicted(m)) << m;
  }
}

TEST(SharedKeyTableTest, RejectNewCountsTheMemberThatAsked) {
  auto t = Three(/*max_keys=*/1, OverflowPolicy::kRejectNew);
  t->FindOrInsert(K(1), 0);
  EXPECT_EQ(t->FindOrInsert(K(2), 1).state, nullptr);
  EXPECT_EQ(t->rejected(0), 0u);
  EXPECT_EQ(t->rejected(1), 1u);
  // A member joining a key that is already there needs no room.
  EXPECT_NE(t->FindOrInsert(K(1), 1).state, nullptr);
}

TEST(SharedKeyTableTest, EachMemberDrainsItsOwnErasures) {
  auto t = Three();
  for (int m = 0; m < 3; ++m) t->TrackErasures(m);
  auto drain = [&](int m) {
    std::vector<Hash128> out;
    t->DrainErased(m, [&](const Hash128& k) { out.push_back(k); });
    return out;
  };
  t->FindOrInsert(K(1), 0);
  t->FindOrInsert(K(1), 1);
  t->FindOrInsert(K(2), 0);
  t->FindOrInsert(K(3), 0);
  t->Erase(K(1), 0);
  t->Erase(K(1), 1);
  EXPECT_EQ(drain(0), std::vector<Hash128>{K(1)});
  t->Erase(K(2), 0);  // after member 0's drain, before member 1's
  EXPECT_EQ(drain(1), std::vector<Hash128>{K(1)});
  EXPECT_EQ(drain(2), std::vector<Hash128>{});
  EXPECT_EQ(drain(0), std::vector<Hash128>{K(2)});
  EXPECT_EQ(drain(0), std::vector<Hash128>{});
  // A key lost and taken again since the drain is not reported lost.
  t->Erase(K(3), 0);
  t->FindOrInsert(K(3), 0);
  EXPECT_EQ(drain(0), std::vector<Hash128>{});
  // One lost twice is reported once.
  t->Erase(K(3), 0);
  t->FindOrInsert(K(3), 0);
  t->Erase(K(3), 0);
  EXPECT_EQ(drain(0), std::vector<Hash128>{K(3)});
}

TEST(SharedKeyTableTest, ClearingAMemberLeavesTheOthersWhole) {
  auto t = Three();
  for (uint64_t i = 1; i <= 50; ++i) {
    Put(t->FindOrInsert(K(i), 0).state, i);
    if (i % 2 == 0) Put(t->FindOrInsert(K(i), 1).state, 100 + i);
  }
  t->FindOrInsert(K(1), 2);
  t->ClearMember(0);
  EXPECT_EQ(t->size(0), 0u);
  EXPECT_EQ(t->keys(), 26u);  // member 1's 25 keys and member 2's one
  EXPECT_EQ(t->size(1), 25u);
  EXPECT_EQ(Get(t->Find(K(10), 1)), 110u);
  EXPECT_NE(t->Find(K(1), 2), nullptr);
  EXPECT_EQ(t->Find(K(2), 0), nullptr);
}

// Idle steps move slots: the slot the members of one event reuse must not
// outlive them. Member 0 looks up a key that the migration will move (its
// slot is kept for the next member), the migration finishes and frees the
// old array, then member 1 asks for the same key: it must get the key's
// new slot (the sanitizer build also checks that nothing reads the freed
// array).
std::shared_ptr<SharedKeyTable> GrowingTwoMembers(uint64_t* n) {
  auto t =
      SharedKeyTable::Create({16, 16}, 100'000, OverflowPolicy::kEvictOldest,
                             /*incremental_from_bytes=*/0);
  // Grow until a migration is under way (most keys still in the old array).
  for (*n = 0; *n < 2'000 || t->MigrateIdle(0); ++*n) {
    Put(t->FindOrInsert(K(*n), 0).state, *n);
  }
  return t;
}

TEST(SharedKeyTableTest, IdleMigrationMovesEveryMembersState) {
  // A twin built the same way shows which key the migration moves.
  uint64_t n = 0;
  uint64_t key = UINT64_MAX;
  {
    auto twin = GrowingTwoMembers(&n);
    std::vector<const void*> before(n);
    for (uint64_t k = 0; k < n; ++k) before[k] = twin->Find(K(k), 0);
    while (!twin->MigrateIdle(8)) {
    }
    for (uint64_t k = 0; k < n && key == UINT64_MAX; ++k) {
      if (twin->Find(K(k), 0) != before[k]) key = k;
    }
  }
  ASSERT_NE(key, UINT64_MAX);
  auto t = GrowingTwoMembers(&n);
  SharedKeyTable::Ref r0 = t->FindOrInsert(K(key), 0);
  ASSERT_FALSE(r0.inserted);
  while (!t->MigrateIdle(8)) {
  }
  SharedKeyTable::Ref r1 = t->FindOrInsert(K(key), 1);
  ASSERT_NE(r1.state, nullptr);
  EXPECT_TRUE(r1.inserted);
  Put(r1.state, 7);
  EXPECT_EQ(t->keys(), n);
  EXPECT_EQ(t->size(0), n);
  EXPECT_EQ(t->size(1), 1u);
  for (uint64_t k = 0; k < n; ++k) {
    ASSERT_NE(t->Find(K(k), 0), nullptr) << k;
    EXPECT_EQ(Get(t->Find(K(k), 0)), k);
  }
  ASSERT_NE(t->Find(K(key), 1), nullptr);
  EXPECT_EQ(Get(t->Find(K(key), 1)), 7u);
}

}  // namespace
}  // namespace invariantd
