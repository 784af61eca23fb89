#include "rules/key_table.h"

#include <iterator>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"

namespace invariantd {
namespace {

Hash128 K(uint64_t i) { return HashBytes(std::to_string(i)); }

TEST(KeyTableTest, InsertFindErase) {
  KeyTable<int> t(100, OverflowPolicy::kEvictOldest);
  auto r = t.FindOrInsert(K(1));
  ASSERT_NE(r.state, nullptr);
  EXPECT_TRUE(r.inserted);
  *r.state = 42;
  r = t.FindOrInsert(K(1));
  EXPECT_FALSE(r.inserted);
  EXPECT_EQ(*r.state, 42);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.Erase(K(1)));
  EXPECT_EQ(t.Find(K(1)), nullptr);
  EXPECT_EQ(t.size(), 0u);
}

TEST(KeyTableTest, ZeroHashIsAValidKey) {
  KeyTable<int> t(10, OverflowPolicy::kEvictOldest);
  *t.FindOrInsert(Hash128{0, 0}).state = 7;
  ASSERT_NE(t.Find(Hash128{0, 0}), nullptr);
  EXPECT_EQ(*t.Find(Hash128{0, 0}), 7);
}

TEST(KeyTableTest, RejectNewAtLimitCountsAndKeepsOldKeys) {
  KeyTable<int> t(3, OverflowPolicy::kRejectNew);
  for (int i = 0; i < 3; ++i) ASSERT_NE(t.FindOrInsert(K(i)).state, nullptr);
  EXPECT_EQ(t.FindOrInsert(K(99)).state, nullptr);
  EXPECT_EQ(t.FindOrInsert(K(98)).state, nullptr);
  EXPECT_EQ(t.rejected(), 2u);
  EXPECT_EQ(t.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NE(t.Find(K(i)), nullptr);
}

TEST(KeyTableTest, EvictOldestPrefersStaleKeys) {
  // One hot key touched constantly survives a flood of new keys.
  KeyTable<int> t(64, OverflowPolicy::kEvictOldest);
  t.FindOrInsert(K(0));
  for (int i = 1; i < 10000; ++i) {
    t.FindOrInsert(K(0));
    t.FindOrInsert(K(i));
  }
  EXPECT_EQ(t.size(), 64u);
  EXPECT_EQ(t.evicted(), 10000u - 64u);
  EXPECT_NE(t.Find(K(0)), nullptr);
}

TEST(KeyTableTest, MemoryPerKeyAtOneMillionKeysForMonotonicSizedState) {
  struct S16 {
    uint64_t a, b;
  };
  KeyTable<S16> t(2'000'000, OverflowPolicy::kEvictOldest);
  for (uint64_t i = 0; i < 1'000'000; ++i) t.FindOrInsert(K(i));
  // A growth in progress holds both arrays until later calls finish it.
  while (t.Migrating()) t.FindOrInsert(K(0));
  // 40-byte slots at >= 57% load: at most 70 bytes per key whatever the
  // growth point; bench/ records the exact figure.
  EXPECT_LE(t.SlotBytes() / t.size(), 70u);
}

// Differential: the table against std::map under random operations,
// including churn at the limit with reject_new (exactly predictable).
RC_GTEST_PROP(KeyTableProperty, MatchesReferenceMap, ()) {
  const size_t limit = *rc::gen::inRange<size_t>(1, 40);
  KeyTable<uint64_t> t(limit, OverflowPolicy::kRejectNew);
  std::map<uint64_t, uint64_t> ref;
  const auto ops = *rc::gen::container<std::vector<std::pair<int, uint64_t>>>(
      rc::gen::pair(rc::gen::inRange(0, 3), rc::gen::inRange<uint64_t>(0, 60)));
  uint64_t rejected = 0;
  for (const auto& [op, k] : ops) {
    if (op == 0 || op == 1) {
      auto r = t.FindOrInsert(K(k));
      if (ref.count(k)) {
        RC_ASSERT(r.state != nullptr);
        RC_ASSERT(!r.inserted);
        RC_ASSERT(*r.state == ref[k]);
        *r.state = ref[k] = ref[k] + 1;
      } else if (ref.size() >= limit) {
        RC_ASSERT(r.state == nullptr);
        ++rejected;
      } else {
        RC_ASSERT(r.state != nullptr);
        RC_ASSERT(r.inserted);
        RC_ASSERT(*r.state == 0u);
        *r.state = ref[k] = 1;
      }
    } else {
      RC_ASSERT(t.Erase(K(k)) == (ref.erase(k) == 1));
    }
    RC_ASSERT(t.size() == ref.size());
  }
  RC_ASSERT(t.rejected() == rejected);
  for (const auto& [k, v] : ref) {
    RC_ASSERT(t.Find(K(k)) != nullptr);
    RC_ASSERT(*t.Find(K(k)) == v);
  }
  size_t visited = 0;
  t.ForEach([&](const Hash128&, const uint64_t&) { ++visited; });
  RC_ASSERT(visited == ref.size());
}

// With eviction the table never exceeds its limit, counts every eviction,
// and keeps every key it did not evict.
RC_GTEST_PROP(KeyTableProperty, EvictionIsBoundedAndCounted, ()) {
  const size_t limit = *rc::gen::inRange<size_t>(1, 30);
  KeyTable<int> t(limit, OverflowPolicy::kEvictOldest);
  const auto keys = *rc::gen::container<std::vector<uint64_t>>(
      rc::gen::inRange<uint64_t>(0, 100));
  std::map<uint64_t, bool> inserted;
  uint64_t new_keys = 0;
  for (uint64_t k : keys) {
    const bool present = t.Find(K(k)) != nullptr;
    auto r = t.FindOrInsert(K(k));
    RC_ASSERT(r.state != nullptr);
    RC_ASSERT(r.inserted == !present);
    if (!present) ++new_keys;
    RC_ASSERT(t.size() <= limit);
  }
  RC_ASSERT(t.size() + t.evicted() == new_keys);
}

// Growth is incremental: across many growths, with erasures and evictions
// interleaved while an old array is still being emptied, the table agrees
// with a reference map, states that own heap memory are constructed and
// destroyed exactly once (the sanitizer build checks the memory), and the
// heap it accounts equals a scan.
// Heap a string owns: none while it fits in its inline buffer.
struct StringHeap {
  size_t operator()(const std::string& s) const {
    return s.capacity() > std::string().capacity() ? s.capacity() + 1 : 0;
  }
};

RC_GTEST_PROP(KeyTableProperty, IncrementalGrowthMatchesReference, ()) {
  const size_t limit = *rc::gen::inRange<size_t>(1, 3000);
  const bool evict = *rc::gen::arbitrary<bool>();
  // Every growth migrates incrementally, however small the table.
  KeyTable<std::string, StringHeap> t(
      limit, evict ? OverflowPolicy::kEvictOldest : OverflowPolicy::kRejectNew,
      /*incremental_from_bytes=*/0);
  std::map<uint64_t, std::string> ref;
  const auto ops =
      *rc::gen::container<std::vector<std::pair<int, uint64_t>>>(rc::gen::pair(
          rc::gen::inRange(0, 11), rc::gen::inRange<uint64_t>(0, 4000)));
  bool migrated = false;
  for (const auto& [op, k] : ops) {
    if (op == 10) {
      // An idle step (a worker with nothing queued) moves part of the old
      // array, as lookups do.
      const bool done = t.MigrateIdle(k % 8 + 1);
      RC_ASSERT(done == !t.Migrating());
    } else if (op < 8) {
      const bool present = ref.count(k) != 0;
      auto r = t.FindOrInsert(K(k));
      if (r.state == nullptr) {
        RC_ASSERT(!evict && !present && ref.size() >= limit);
        continue;
      }
      RC_ASSERT(r.inserted == !present);
      if (present) RC_ASSERT(*r.state == ref[k]);
      // Long enough to live on the heap; its size varies with the key.
      const int64_t before = static_cast<int64_t>(StringHeap()(*r.state));
      *r.state = ref[k] =
          std::string(20 + k % 50, static_cast<char>('a' + k % 26));
      t.AddHeapBytes(static_cast<int64_t>(StringHeap()(*r.state)) - before);
      if (evict && ref.size() > t.size()) {
        // Evicted keys are gone from the table; drop them from ref too.
        for (auto it = ref.begin(); it != ref.end();) {
          it = t.Find(K(it->first)) == nullptr ? ref.erase(it) : std::next(it);
        }
      }
    } else {
      RC_ASSERT(t.Erase(K(k)) == (ref.erase(k) == 1));
    }
    migrated = migrated || t.Migrating();
    RC_ASSERT(t.size() == ref.size());
    RC_ASSERT(t.size() <= limit);
  }
  for (const auto& [k, v] : ref) {
    RC_ASSERT(t.Find(K(k)) != nullptr);
    RC_ASSERT(*t.Find(K(k)) == v);
  }
  size_t visited = 0;
  size_t heap = 0;
  t.ForEach([&](const Hash128&, const std::string& s) {
    ++visited;
    heap += StringHeap()(s);
  });
  RC_ASSERT(visited == ref.size());
  RC_ASSERT(t.heap_bytes() == heap);
  RC_TAG(migrated ? "grew while in use" : "no migration");
}

// A table that grew just before its input went quiet: idle steps finish
// the migration, release the old array and its charge, and move every key
// with its state.
TEST(KeyTableTest, IdleStepsFinishAGrowthAndReleaseTheOldArray) {
  MemoryBudget budget(1 << 30);
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kEvictOldest,
                       /*incremental_from_bytes=*/0);
  t.SetBudget(&budget);
  uint64_t n = 0;
  for (; n < 50'000 || !t.Migrating(); ++n) *t.FindOrInsert(K(n)).state = n;
  const size_t both = t.SlotBytes();  // the new array and the old one
  const size_t charged = budget.used();
  size_t steps = 0;
  while (!t.MigrateIdle(16)) ++steps;
  EXPECT_FALSE(t.Migrating());
  EXPECT_TRUE(t.MigrateIdle(16));  // nothing left: a no-op
  const size_t per_slot = t.SlotBytes() / t.capacity();
  ASSERT_LT(t.SlotBytes(), both);
  const size_t old_slots = (both - t.SlotBytes()) / per_slot;
  // Each step moves an entry or passes an empty position (an entry pulled
  // back into the cursor's position is moved by a later step).
  EXPECT_LE(steps * 16, 2 * old_slots + 16);
  // The charge follows (in whole chunks of the budget).
  EXPECT_LT(budget.used(), charged);
  EXPECT_GE(budget.used(), t.Bytes());
  ASSERT_EQ(t.size(), n);
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t* v = t.Find(K(k));
    ASSERT_NE(v, nullptr) << k;
    EXPECT_EQ(*v, k);
  }
}

TEST(KeyTableTest, SmallTablesGrowAtOnce) {
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kEvictOldest);
  for (uint64_t i = 0; i < 100'000; ++i) {
    *t.FindOrInsert(K(i)).state = i;
    ASSERT_FALSE(t.Migrating()) << i;
  }
}

// A reserved table takes its expected keys without growing once.
TEST(KeyTableTest, ReserveSizesOnceForTheExpectedKeys) {
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kEvictOldest);
  ASSERT_TRUE(t.Reserve(100'000));
  const size_t cap = t.capacity();
  EXPECT_GE(cap * 7, 100'001u * 8);       // room below the growth threshold
  EXPECT_LE(cap, 100'000u * 8 / 7 + 16);  // and not much more
  for (uint64_t i = 0; i < 100'000; ++i) {
    *t.FindOrInsert(K(i)).state = i;
    ASSERT_EQ(t.capacity(), cap) << i;
  }
  for (uint64_t i = 0; i < 100'000; ++i) ASSERT_EQ(*t.Find(K(i)), i);
  // The next keys grow it as usual.
  for (uint64_t i = 100'000; i < 120'000; ++i) t.FindOrInsert(K(i));
  EXPECT_GT(t.capacity(), cap);
  EXPECT_FALSE(t.Reserve(1'000'000));  // not empty: unchanged
}

TEST(KeyTableTest, ReserveIsBoundedByMaxKeysAndTheBudget) {
  KeyTable<uint64_t> small(1000, OverflowPolicy::kEvictOldest);
  ASSERT_TRUE(small.Reserve(1'000'000));
  EXPECT_LE(small.capacity(), 1000u * 8 / 7 + 16);  // max_keys caps it
  EXPECT_FALSE(small.Reserve(1000));                // already that large

  MemoryBudget budget(1 << 20);
  KeyTable<uint64_t> t(10'000'000, OverflowPolicy::kEvictOldest);
  t.SetBudget(&budget);
  EXPECT_FALSE(t.Reserve(1'000'000));  // 24+ MiB do not fit in 1 MiB
  EXPECT_EQ(t.capacity(), 0u);
  EXPECT_EQ(budget.used(), 0u);
  ASSERT_TRUE(t.Reserve(10'000));
  EXPECT_EQ(budget.used() % MemoryBudget::kChunk, 0u);
  EXPECT_GE(budget.used(), t.SlotBytes());  // charged up front
}

TEST(KeyTableTest, GrowthMovesEntriesGraduallyAndKeepsThemFindable) {
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kEvictOldest,
                       /*incremental_from_bytes=*/0);
  uint64_t migrating_inserts = 0;
  for (uint64_t i = 0; i < 100'000; ++i) {
    *t.FindOrInsert(K(i)).state = i;
    if (t.Migrating()) ++migrating_inserts;
  }
  // Most growths are still in progress for a while after they start.
  EXPECT_GT(migrating_inserts, 10'000u);
  for (uint64_t i = 0; i < 100'000; ++i) {
    ASSERT_NE(t.Find(K(i)), nullptr) << i;
    EXPECT_EQ(*t.Find(K(i)), i);
  }
}

// Change tracking (incremental checkpoints): a replica that only ever sees
// what DrainChanges reports -- applied in order, starting from a full copy
// -- equals the table after every drain, whatever mix of inserts, touches,
// erases, evictions and growth happened in between (few keys: the drain
// scans the slots; many: it looks the keys up).
RC_GTEST_PROP(KeyTableProperty, DrainedChangesRebuildTheTable, ()) {
  const size_t limit = *rc::gen::inRange<size_t>(1, 200);
  KeyTable<uint64_t> t(limit, OverflowPolicy::kEvictOldest,
                       /*incremental_from_bytes=*/0);
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> replica;
  auto id = [](const Hash128& k) { return std::make_pair(k.hi, k.lo); };
  t.TrackChanges();
  const auto ops = *rc::gen::container<std::vector<std::pair<int, int>>>(
      rc::gen::pair(rc::gen::inRange(0, 10), rc::gen::inRange(0, 300)));
  uint64_t value = 0;
  for (const auto& [op, k] : ops) {
    if (op < 6) {
      auto ref = t.FindOrInsert(K(static_cast<uint64_t>(k)));
      if (ref.state != nullptr) *ref.state = ++value;
    } else if (op < 8) {
      t.Erase(K(static_cast<uint64_t>(k)));
    } else if (op == 8) {
      t.FindOrInsert(K(static_cast<uint64_t>(k)));  // a touch, no change
    } else {
      t.DrainChanges([&](const Hash128& key, const uint64_t* st) {
        if (st == nullptr) {
          replica.erase(id(key));
        } else {
          replica[id(key)] = *st;
        }
      });
      std::map<std::pair<uint64_t, uint64_t>, uint64_t> now;
      t.ForEach(
          [&](const Hash128& key, const uint64_t& v) { now[id(key)] = v; });
      RC_ASSERT(now == replica);
    }
  }
}

// The slices of a rolling checkpoint: ForEachInRange visits exactly the
// live keys whose hash lies in the range -- also while an incremental
// growth has keys in two arrays, and with probe runs that wrap around the
// end -- and consecutive ranges that cover the hash space visit every key
// once.
RC_GTEST_PROP(KeyTableProperty, RangesVisitExactlyTheirKeys, ()) {
  KeyTable<uint64_t> t(1 << 20, OverflowPolicy::kEvictOldest,
                       /*incremental_from_bytes=*/0);
  const auto ops = *rc::gen::container<std::vector<std::pair<int, int>>>(
      rc::gen::pair(rc::gen::inRange(0, 4), rc::gen::inRange(0, 2000)));
  for (const auto& [op, k] : ops) {
    if (op < 3) {
      auto ref = t.FindOrInsert(K(static_cast<uint64_t>(k)));
      *ref.state = static_cast<uint64_t>(k);
    } else {
      t.Erase(K(static_cast<uint64_t>(k)));
    }
  }
  std::map<uint64_t, int> all;  // key.lo -> times visited
  t.ForEach([&](const Hash128& key, const uint64_t&) { all[key.lo] = 0; });
  // A random range against the filtered whole.
  uint64_t a = *rc::gen::arbitrary<uint64_t>();
  uint64_t b = *rc::gen::arbitrary<uint64_t>();
  if (a > b) std::swap(a, b);
  std::set<uint64_t> want, got;
  for (const auto& [lo, n] : all) {
    if (lo >= a && lo <= b) want.insert(lo);
  }
  t.ForEachInRange(a, b, [&](const Hash128& key, const uint64_t&) {
    RC_ASSERT(got.insert(key.lo).second);
  });
  RC_ASSERT(got == want);
  // A round of slices.
  const uint64_t pieces = *rc::gen::inRange<uint64_t>(1, 40);
  const uint64_t width = UINT64_MAX / pieces;
  for (uint64_t i = 0; i < pieces; ++i) {
    const uint64_t first = i * width;
    const uint64_t last = i + 1 == pieces ? UINT64_MAX : first + width - 1;
    t.ForEachInRange(first, last, [&](const Hash128& key, const uint64_t& v) {
      RC_ASSERT(K(v) == key);
      ++all[key.lo];
    });
  }
  for (const auto& [lo, n] : all) RC_ASSERT(n == 1);
}

// The memory budget: tables of both policies share one budget, grow
// (incrementally or at once), insert, erase and evict. After every step the
// memory they hold is charged and within the budget, every new key is
// either tracked or counted as rejected, and every key that left without
// an erase is counted as evicted. When the tables are gone nothing is
// charged.
RC_GTEST_PROP(KeyTableProperty, BudgetBoundsMemoryAndCountsEveryKey, ()) {
  const size_t limit = *rc::gen::inRange<size_t>(0, 400'000);
  MemoryBudget budget(limit);
  struct Ledger {
    uint64_t absent_inserts = 0;  // FindOrInsert of a key not present
    uint64_t inserted = 0;
    uint64_t refused = 0;
    uint64_t erased = 0;
  };
  {
    std::vector<KeyTable<uint64_t>> tables;
    for (int i = 0; i < 3; ++i) {
      const bool evict = *rc::gen::arbitrary<bool>();
      const size_t incremental = *rc::gen::element<size_t>(0, 1 << 30);
      tables.emplace_back(
          *rc::gen::inRange<size_t>(1, 20'000),
          evict ? OverflowPolicy::kEvictOldest : OverflowPolicy::kRejectNew,
          incremental);
      tables.back().SetBudget(&budget);
    }
    std::vector<Ledger> ledger(tables.size());
    const auto ops =
        *rc::gen::container<std::vector<std::tuple<int, int, int>>>(
            rc::gen::tuple(rc::gen::inRange(0, 3), rc::gen::inRange(0, 10),
                           rc::gen::inRange(0, 3'000)));
    uint64_t next = 1'000'000;
    for (const auto& [ti, op, k] : ops) {
      KeyTable<uint64_t>& t = tables[static_cast<size_t>(ti)];
      Ledger& l = ledger[static_cast<size_t>(ti)];
      // op 0 erases key k (of the first run, so often present); others
      // insert a run of k keys, most of them new, so the budget is reached.
      const uint64_t run = op == 0 ? 1 : static_cast<uint64_t>(k);
      const uint64_t base = op == 0  ? static_cast<uint64_t>(k)
                            : op < 3 ? 0
                                     : std::exchange(next, next + run);
      for (uint64_t key = base; key < base + run; ++key) {
        if (op == 0) {
          if (t.Erase(K(key))) ++l.erased;
        } else {
          const bool present = t.Find(K(key)) != nullptr;
          auto r = t.FindOrInsert(K(key));
          if (!present) {
            ++l.absent_inserts;
            if (r.state != nullptr) {
              RC_ASSERT(r.inserted);
              ++l.inserted;
            } else {
              ++l.refused;
            }
          }
        }
        size_t held = 0;
        for (const auto& table : tables) held += table.Bytes();
        RC_ASSERT(held <= budget.used());
        RC_ASSERT(budget.used() <= limit);
        RC_ASSERT(l.absent_inserts == l.inserted + l.refused);
        RC_ASSERT(t.rejected() == l.refused);
        RC_ASSERT(t.size() == l.inserted - t.evicted() - l.erased);
        RC_ASSERT(t.budget_refusals() <= t.evicted() + t.rejected());
      }
    }
  }
  RC_ASSERT(budget.used() == 0u);
}

TEST(KeyTableTest, AtTheBudgetEvictOldestKeepsTrackingNewKeys) {
  MemoryBudget budget(64 << 10);
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kEvictOldest);
  t.SetBudget(&budget);
  for (uint64_t k = 0; k < 100'000; ++k) {
    auto r = t.FindOrInsert(K(k));
    ASSERT_NE(r.state, nullptr) << k;
  }
  EXPECT_LE(budget.used(), budget.limit());
  EXPECT_GT(t.budget_refusals(), 0u);
  EXPECT_EQ(t.size() + t.evicted(), 100'000u);
  EXPECT_EQ(t.rejected(), 0u);
  EXPECT_NE(t.Find(K(99'999)), nullptr);  // the newest key is tracked
  EXPECT_EQ(budget.refusals(), t.budget_refusals());
}

TEST(KeyTableTest, AtTheBudgetRejectNewKeepsTheOldKeys) {
  MemoryBudget budget(64 << 10);
  KeyTable<uint64_t> t(1'000'000, OverflowPolicy::kRejectNew);
  t.SetBudget(&budget);
  for (uint64_t k = 0; k < 100'000; ++k) t.FindOrInsert(K(k));
  EXPECT_LE(budget.used(), budget.limit());
  EXPECT_GT(t.size(), 500u);
  EXPECT_GT(t.rejected(), 0u);
  EXPECT_EQ(t.size() + t.rejected(), 100'000u);
  EXPECT_EQ(t.budget_refusals(), t.rejected());
  for (uint64_t k = 0; k < t.size(); ++k) {
    ASSERT_NE(t.Find(K(k)), nullptr) << k;  // the first keys stay
  }
}

// Heap owned by states is charged as it changes; erasing gives it back.
TEST(KeyTableTest, BudgetFollowsTheStatesHeap) {
  MemoryBudget budget(1 << 20);
  {
    KeyTable<std::string, StringHeap> t(1000, OverflowPolicy::kRejectNew);
    t.SetBudget(&budget);
    const size_t empty = budget.used();
    auto r = t.FindOrInsert(K(1));
    *r.state = std::string(200'000, 'x');
    t.AddHeapBytes(static_cast<int64_t>(StringHeap()(*r.state)));
    EXPECT_GE(budget.used(), empty + 200'000);
    EXPECT_TRUE(t.Erase(K(1)));
    EXPECT_LE(budget.used(), empty + 2 * MemoryBudget::kChunk);
  }
  EXPECT_EQ(budget.used(), 0u);
}

}  // namespace
}  // namespace invariantd
