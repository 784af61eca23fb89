// KeyTable<State>: the bounded per-key state table behind every stateful rule.
//
// Keys are 128-bit stable hashes of the rule's key tuple (core/hash.h); the
// key values themselves are not stored (a violation takes them from the
// event that triggered it), which is what keeps a tracked key at a few dozen
// bytes. A 128-bit hash makes a collision between two live keys practically
// impossible (about 1 in 10^23 at 10M keys).
//
// Layout: open addressing with linear probing over one flat array of slots
// {key, last-touch, State} (40 bytes for a 16-byte State); capacity grows
// by 1.5x at 7/8 load, so the table's average load stays high (memory per key
// is measured by bench/key_table_bench and recorded in docs/benchmarks.md).
// Deletion is backward-shift, so no tombstones accumulate under churn.
//
// Growth. Arrays of 4 MiB and more are mmap'ed (zero pages, no memset) and
// advised for transparent huge pages before their first touch. A growth
// whose old array is under 64 MiB moves every entry at once (a tight loop
// with prefetching: ~40 ms at that size). Larger tables grow
// incrementally, so that no single event pays for rehashing millions of
// entries: each later FindOrInsert moves a few slots of the old array into
// the new one, which finishes well before the new array is due to grow.
// Meanwhile a key lives in exactly one of the two arrays. The old array
// only ever loses entries (by backward-shift), so it stays a valid
// linear-probing table; every position below its migration cursor is empty
// and no key it holds has its home there, so each lookup searches one array
// (two for an absent key). Both arrays are resident until the move ends.
// A slot's State is constructed when its key is inserted and destroyed when
// it is erased or moved.
//
// Bounds: at most `max_keys` live keys. When a new key arrives at the limit:
//   kEvictOldest  evicts an approximately least-recently-touched key (the
//                 oldest of 8 sampled keys, as Redis does) and counts it;
//   kRejectNew    leaves the table unchanged, counts the rejection, and the
//                 caller skips the event for this rule (lost coverage).
// Sampling uses a fixed-seed generator: the same input evicts the same keys.
// With a MemoryBudget (SetBudget), a new key that needs memory the budget
// does not have -- a larger slot array, or any while the budget is spent on
// heap -- is an overflow too, handled by the same policy and also counted
// in budget_refusals(). A table that cannot evict (empty) rejects.
//
// Thread-safety: none; one table is owned by one evaluation thread.
#ifndef INVARIANTD_RULES_KEY_TABLE_H_
#define INVARIANTD_RULES_KEY_TABLE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "rules/key_sort.h"
#include "rules/memory_budget.h"
#include "sidecar/core/hash.h"
#include "sidecar/core/zeroed_memory.h"

namespace invariantd {

enum class OverflowPolicy { kEvictOldest, kRejectNew };

// Heap owned by a State, for tables whose states own none.
template <typename State>
struct NoHeap {
  size_t operator()(const State&) const { return 0; }
};

// Called with each key the table evicts and its state, just before it goes
// (rules/shared_key_table.h counts evictions per rule with it).
template <typename State>
struct NoEvictHook {
  void operator()(const Hash128&, const State&) const {}
};

// Old arrays at least this large migrate a few slots per lookup after a
// growth; smaller ones are rehashed at once. A 64 MiB array (1.6M slots,
// 1.4M keys) rehashes in ~40 ms, and incremental migration costs more in
// all (~150 ns per entry moved against ~25 ns), so only the largest tables,
// whose one-shot rehash would stall evaluation for longer, use it.
inline constexpr size_t kIncrementalGrowthFromBytes = size_t{64} << 20;

// `HeapOf(state)` is the heap memory a State owns: the table subtracts it
// when it removes a state, and the caller reports changes with
// AddHeapBytes, so heap_bytes() is exact without a scan.
template <typename State, typename HeapOf = NoHeap<State>,
          typename OnEvict = NoEvictHook<State>>
class KeyTable {
 public:
  // `incremental_from_bytes`: old arrays at least this large are migrated
  // incrementally, smaller ones at once (tests pass 0 to always migrate).
  KeyTable(size_t max_keys, OverflowPolicy policy,
           size_t incremental_from_bytes = kIncrementalGrowthFromBytes)
      : max_keys_(max_keys),
        policy_(policy),
        incremental_from_bytes_(incremental_from_bytes) {}
  ~KeyTable() = default;
  KeyTable(const KeyTable&) = delete;
  KeyTable& operator=(const KeyTable&) = delete;
  KeyTable(KeyTable&&) noexcept = default;
  KeyTable& operator=(KeyTable&&) noexcept = default;

  void SetEvictHook(OnEvict hook) { on_evict_ = std::move(hook); }

  // Result of FindOrInsert.
  struct Ref {
    State* state = nullptr;  // null when rejected (kRejectNew at the limit)
    bool inserted = false;   // true when the key is new (state value-init)
  };

  // Finds `key`, or inserts it with a value-initialized State. The returned
  // pointer is valid until the next mutating call.
  Ref FindOrInsert(Hash128 key) {
    key = Normalize(key);
    ++clock_;
    if (Migrating()) Migrate(kMigrateSteps);
    auto [a, i] = Locate(key);
    if (a != nullptr) {
      // Not touched since the last DrainChanges: its first change.
      if (track_ && on_touch_ && a->at(i).touch <= mark_) {
        changed_.push_back(key);
      }
      a->at(i).touch = clock_;
      return Ref{a->state(i), false};
    }
    const bool over_budget = size_ < max_keys_ && !ReserveForInsert();
    if (size_ >= max_keys_ || over_budget) {
      if (over_budget) NoteRefusal();
      if (policy_ == OverflowPolicy::kRejectNew || size_ == 0) {
        ++rejected_;
        return Ref{};
      }
      EvictOne();
    }
    if (NeedsGrow()) {
      // Only after an eviction from the old array while migrating.
      if (!charge_.Reserve(Bytes() + GrowBytes())) {
        NoteRefusal();
        ++rejected_;
        return Ref{};
      }
      Grow();
    }
    i = cur_.FreeSlotFor(key);
    cur_.Construct(i, key, clock_);
    ++size_;
    if (track_ && on_touch_) changed_.push_back(key);
    return Ref{cur_.state(i), true};
  }

  // Hints the CPU to load the slot where `key` lives: the engine issues this
  // for every rule of an event before observing any, so the cache misses of
  // several tables overlap instead of adding up.
  void Prefetch(Hash128 key) const {
    key = Normalize(key);
    if (Migrating()) {
      const size_t h = old_.Home(key);
      if (h >= old_.cursor) Touch(&old_.at(h));
    }
    if (cur_.capacity() != 0) Touch(&cur_.at(cur_.Home(key)));
  }

  // Pointer to the state of `key`, or null. Does not count as a touch.
  State* Find(Hash128 key) {
    auto [a, i] = Locate(Normalize(key));
    return a == nullptr ? nullptr : a->state(i);
  }

  bool Erase(Hash128 key) {
    auto [a, i] = Locate(Normalize(key));
    if (a == nullptr) return false;
    Remove(a, i);
    return true;
  }

  // Erases every entry whose state satisfies `pred`; returns how many.
  // O(capacity): for occasional sweeps (e.g. expired windows), not per event.
  template <typename P>
  size_t EraseIf(P&& pred) {
    std::vector<Hash128> doomed;
    ForEach([&](const Hash128& k, const State& s) {
      if (pred(s)) doomed.push_back(k);
    });
    for (const Hash128& k : doomed) Erase(k);
    return doomed.size();
  }

  // Visits every live (key, state); for checkpoints and tests.
  template <typename F>
  void ForEach(F&& f) const {
    for (const Array* a : {&old_, &cur_}) {
      for (size_t i = 0; i < a->capacity(); ++i) {
        if (!a->Empty(i)) f(a->at(i).key, *a->state(i));
      }
    }
  }

  // Visits every live (key, state) whose (normalized) key.lo lies in
  // [first, last]: the keys of one slice of a rolling checkpoint. Homes are
  // a monotonic function of key.lo, so this scans the positions homed in
  // the range and the rest of the last probe run: about
  // capacity * (last - first) / 2^64 slots, not the whole array.
  template <typename F>
  void ForEachInRange(uint64_t first, uint64_t last, F&& f) const {
    if (first > last) return;
    for (const Array* a : {&old_, &cur_}) {
      const size_t n = a->capacity();
      if (n == 0 || a->live == 0) continue;
      // Below the cursor (migration) positions are empty, and no key still
      // in the array is homed there (see Locate).
      const size_t start = std::max(a->Home(Hash128{first, 0}), a->cursor);
      const size_t end = a->Home(Hash128{last, 0});
      if (start > end) continue;
      const size_t homed = end - start + 1;
      size_t i = start;
      for (size_t step = 0; step < n; ++step, i = a->Next(i)) {
        if (a->Empty(i)) {
          if (step >= homed) break;  // past the range and its last run
          continue;
        }
        const Hash128& k = a->at(i).key;
        if (k.lo >= first && k.lo <= last) f(k, *a->state(i));
      }
    }
  }

  // Change tracking, for incremental checkpoints. From TrackChanges() on,
  // the table remembers every key it inserts, touches (FindOrInsert) or
  // erases; DrainChanges(f) calls f(key, state) for each such key -- state
  // null when the key is no longer present -- and starts a new interval.
  // Costs one comparison per lookup and 16 bytes per key first changed in
  // an interval, plus up to 1.5 MiB while a drain sorts them (larger
  // drains sort in place). When more keys changed than a sequential pass
  // over the slots costs (a quarter of the capacity), the drain scans the
  // arrays for slots touched since the last drain instead of looking each
  // key up; otherwise it sorts them by key.lo (rules/key_sort.h) and looks
  // them up in address order, prefetching ahead. Drain of 24k
  // changed keys out of 250k: 1.1 ms, against 2.9 ms with std::sort by
  // (hi, lo) and no prefetch.
  //
  // With `on_touch` false, lookups mark nothing: the owner calls
  // NoteChanged(key) for the keys whose state it changed (erasures are
  // still recorded by the table).
  void TrackChanges(bool on_touch = true) {
    track_ = true;
    on_touch_ = on_touch;
    changed_.clear();
    erased_.clear();
    mark_ = clock_;
  }
  template <typename F>
  void DrainChanges(F&& f) {
    if (on_touch_ && changed_.size() * 4 > cur_.capacity() + old_.capacity()) {
      for (const Array* a : {&old_, &cur_}) {
        for (size_t i = 0; i < a->capacity(); ++i) {
          if (!a->Empty(i) && a->at(i).touch > mark_) {
            f(a->at(i).key, a->state(i));
          }
        }
      }
      SortUniqueKeys(&erased_, &sort_scratch_, &sort_counts_);
      for (const Hash128& k : erased_) {
        if (Find(k) == nullptr) f(k, static_cast<const State*>(nullptr));
      }
    } else {
      changed_.insert(changed_.end(), erased_.begin(), erased_.end());
      // In key.lo order (rules/key_sort.h): homes are monotonic in it, so
      // the lookups below walk the arrays in address order.
      SortUniqueKeys(&changed_, &sort_scratch_, &sort_counts_);
      for (size_t j = 0; j < changed_.size(); ++j) {
        if (j + kPrefetchAhead < changed_.size()) {
          Prefetch(changed_[j + kPrefetchAhead]);
        }
        const Hash128& k = changed_[j];
        const State* s = Find(k);
        f(k, s);
      }
    }
    changed_.clear();
    erased_.clear();
    mark_ = clock_;
    ReleaseSortMemory();
  }
  void NoteChanged(Hash128 key) {
    if (!track_) return;
    key = Normalize(key);
    // Consecutive events of one key (common) are noted once.
    if (changed_.empty() || !(changed_.back() == key)) changed_.push_back(key);
  }
  // For owners that log their changes themselves (the state as it was
  // changed, in order) and need only the erasures from the table: calls
  // f(key) for each key erased since the last drain and absent now -- a
  // key erased and inserted again is in the owner's log after its erasure
  // -- and starts a new interval. Such owners never call NoteChanged.
  template <typename F>
  void DrainErased(F&& f) {
    SortUniqueKeys(&erased_, &sort_scratch_, &sort_counts_);
    for (const Hash128& k : erased_) {
      if (Find(k) == nullptr) f(k);
    }
    changed_.clear();
    erased_.clear();
    mark_ = clock_;
    ReleaseSortMemory();
  }
  size_t pending_changes() const { return changed_.size() + erased_.size(); }

  size_t size() const { return size_; }
  // Heap owned by the live states (see HeapOf).
  size_t heap_bytes() const { return heap_bytes_; }
  void AddHeapBytes(int64_t delta) {
    heap_bytes_ =
        static_cast<size_t>(static_cast<int64_t>(heap_bytes_) + delta);
    Retrack();
  }
  // Charges this table's memory (slot arrays and states' heap) to `budget`
  // from now on (null: none); the charge is released when it is destroyed.
  void SetBudget(MemoryBudget* budget) { charge_.Set(budget, Bytes()); }
  // New keys refused because the budget was spent.
  uint64_t budget_refusals() const { return budget_refusals_; }

  // Sizes an empty table for `keys` keys (at most max_keys) at once, so
  // that it never grows on the way there: no copy of the arrays and no
  // first touch of the memory of every smaller array (the sizes a growing
  // table passes through add up to about three times the last one). The
  // memory is charged to the budget now, and the pages are touched as keys
  // arrive. Returns false, and changes nothing, when the table is not
  // empty, is already that large, or the budget (or the system) cannot
  // provide the memory.
  bool Reserve(size_t keys) {
    keys = std::min(keys, max_keys_);
    if (size_ != 0 || Migrating() || keys == 0) return false;
    // Room for `keys` without reaching NeedsGrow().
    const size_t cap = (keys + 1) * 8 / 7 + 1;
    if (cap <= cur_.capacity()) return false;
    if (!charge_.Reserve(cap * sizeof(Slot) + heap_bytes_)) return false;
    try {
      cur_ = Array(cap);
    } catch (const std::bad_alloc&) {
      Retrack();  // the charge back to what is held
      return false;
    }
    Retrack();
    return true;
  }
  // Slot arrays plus the states' heap.
  size_t Bytes() const { return SlotBytes() + heap_bytes_; }
  size_t capacity() const { return cur_.capacity(); }
  size_t max_keys() const { return max_keys_; }
  uint64_t evicted() const { return evicted_; }
  uint64_t rejected() const { return rejected_; }
  // Bytes held by the slot arrays (states' own heap is the caller's to add).
  size_t SlotBytes() const {
    return (cur_.capacity() + old_.capacity()) * sizeof(Slot);
  }
  // True while an old array is still being moved into the new one.
  bool Migrating() const { return old_.capacity() != 0; }
  // Moves up to `steps` positions of a growth's old array into the new one,
  // as every FindOrInsert does: for a thread with nothing to evaluate, so
  // that a table that grew just before its input went quiet does not hold
  // both arrays until events arrive. True once no migration remains.
  bool MigrateIdle(size_t steps) {
    if (Migrating()) Migrate(steps);
    return !Migrating();
  }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  // Large arrays are accessed at random: they come from ZeroedMemory
  // (huge pages from 4 MiB up; sidecar/core/zeroed_memory.h).
  static constexpr size_t kHugePage = ZeroedMemory::kHugePage;
  // Old-array positions moved per FindOrInsert. Growth happens at 7/8 load
  // into 1.5x the capacity, leaving (1.5 * 7/8 - 7/8) = 0.44 x old capacity
  // insertions before the next growth; 4 positions per call (at least one
  // call per insertion) empties the old array after 0.25 x old capacity.
  static constexpr int kMigrateSteps = 4;
  static constexpr size_t kPrefetchAhead = 8;
  static constexpr size_t kKeepSortBytes = size_t{4} << 20;

  // Trivial, so a zero-filled array of them is all empty slots. The State is
  // constructed in `storage` only while the slot holds a key.
  struct Slot {
    Hash128 key;     // {0,0} marks an empty slot
    uint64_t touch;  // clock value of the last access (never wraps)
    alignas(State) unsigned char storage[sizeof(State)];
  };

  // One linear-probing array of slots.
  struct Array {
    Array() = default;
    explicit Array(size_t n)
        : mem(n * sizeof(Slot), alignof(Slot)),
          slots(static_cast<Slot*>(mem.data())),
          n(n) {}
    Array(Array&& o) noexcept
        : mem(std::move(o.mem)),
          slots(std::exchange(o.slots, nullptr)),
          returned(std::exchange(o.returned, 0)),
          n(std::exchange(o.n, 0)),
          live(std::exchange(o.live, 0)),
          cursor(std::exchange(o.cursor, 0)) {}
    Array& operator=(Array&& o) noexcept {
      if (this != &o) {
        Release();
        mem = std::move(o.mem);
        slots = std::exchange(o.slots, nullptr);
        returned = std::exchange(o.returned, 0);
        n = std::exchange(o.n, 0);
        live = std::exchange(o.live, 0);
        cursor = std::exchange(o.cursor, 0);
      }
      return *this;
    }
    ~Array() { Release(); }

    void Release() {
      if (slots == nullptr) return;
      if constexpr (!std::is_trivially_destructible_v<State>) {
        for (size_t i = 0; i < n && live > 0; ++i) {
          if (!Empty(i)) Destroy(i);
        }
      }
      mem.Release();
      slots = nullptr;
      returned = 0;
      n = live = cursor = 0;
    }

    size_t capacity() const { return n; }
    // Gives the kernel back the whole pages below the migration cursor:
    // nothing is stored there again, and reading them yields zeros (empty
    // slots). So the old array shrinks as the new one fills, and the peak
    // resident size of a growth stays near that of a one-shot rehash.
    void ReturnPagesBelowCursor() {
      if (!mem.mapped()) return;
      // `slots` is huge-page aligned when mapped.
      const size_t upto = (cursor * sizeof(Slot)) & ~(kHugePage - 1);
      if (upto < returned + kHugePage) return;
      mem.DiscardPages(returned, upto - returned);
      returned = upto;
    }
    Slot& at(size_t i) { return slots[i]; }
    const Slot& at(size_t i) const { return slots[i]; }
    State* state(size_t i) {
      return std::launder(reinterpret_cast<State*>(slots[i].storage));
    }
    const State* state(size_t i) const {
      return std::launder(reinterpret_cast<const State*>(slots[i].storage));
    }
    bool Empty(size_t i) const {
      return slots[i].key.lo == 0 && slots[i].key.hi == 0;
    }
    // Multiply-shift range reduction: any capacity, no modulo.
    size_t Home(const Hash128& k) const {
      return static_cast<size_t>((static_cast<unsigned __int128>(k.lo) * n) >>
                                 64);
    }
    size_t Next(size_t i) const { return i + 1 == n ? 0 : i + 1; }
    // Distance from home h to position i going forward (with wrap).
    size_t Dist(size_t h, size_t i) const { return i >= h ? i - h : i + n - h; }

    size_t Find(const Hash128& key) const {
      if (n == 0) return kNone;
      for (size_t i = Home(key); !Empty(i); i = Next(i)) {
        if (slots[i].key == key) return i;
      }
      return kNone;
    }
    // The empty slot where `key` (absent) goes; there is always one.
    size_t FreeSlotFor(const Hash128& key) const {
      size_t i = Home(key);
      while (!Empty(i)) i = Next(i);
      return i;
    }
    void Construct(size_t i, const Hash128& key, uint64_t touch) {
      ::new (static_cast<void*>(slots[i].storage)) State{};
      slots[i].key = key;
      slots[i].touch = touch;
      ++live;
    }
    void Destroy(size_t i) {
      state(i)->~State();
      slots[i].key = Hash128{0, 0};
      --live;
    }
    // Moves the entry at `from` in `src` into the empty slot `to` here.
    void MoveIn(size_t to, Array& src, size_t from) {
      ::new (static_cast<void*>(slots[to].storage))
          State(std::move(*src.state(from)));
      slots[to].key = src.slots[from].key;
      slots[to].touch = src.slots[from].touch;
      ++live;
      src.Destroy(from);
    }
    void EraseAt(size_t hole) {
      Destroy(hole);
      CloseHole(hole);
    }
    // Backward-shift deletion: pulls later members of the probe run into
    // the (empty) hole when that does not move them before their home.
    void CloseHole(size_t hole) {
      for (size_t i = Next(hole); !Empty(i); i = Next(i)) {
        if (Dist(Home(slots[i].key), i) >= Dist(hole, i)) {
          MoveIn(hole, *this, i);
          hole = i;
        }
      }
    }

    ZeroedMemory mem;
    Slot* slots = nullptr;
    size_t returned = 0;  // bytes from `slots` given back by madvise
    size_t n = 0;
    size_t live = 0;
    size_t cursor = 0;  // migration: every position below it is empty
  };

  // The array holding `key` and its index there; {nullptr, kNone} if absent.
  // While migrating, a key whose home in the old array is below the cursor
  // cannot be there (its probe run would cross an empty position), so each
  // key is looked up in one array, except an absent key or one inserted
  // since the growth began whose old home is at or above the cursor.
  std::pair<Array*, size_t> Locate(const Hash128& key) {
    if (Migrating() && old_.Home(key) >= old_.cursor) {
      const size_t i = old_.Find(key);
      if (i != kNone) return {&old_, i};
    }
    const size_t i = cur_.Find(key);
    if (i != kNone) return {&cur_, i};
    return {nullptr, kNone};
  }

  // After a drain: the change lists and the sort's scratch (which swap
  // buffers) are not kept beyond kKeepSortBytes each; a burst of changes
  // does not leave its peak behind in every rule's table. (The counters
  // stay under 512 KiB: rules/key_sort.h sorts at most 64k keys by bucket.)
  void ReleaseSortMemory() {
    for (std::vector<Hash128>* v : {&changed_, &erased_, &sort_scratch_}) {
      if (v->capacity() * sizeof(Hash128) > kKeepSortBytes) {
        std::vector<Hash128>().swap(*v);
      }
    }
  }

  // A prefetch. The empty asm keeps GCC from treating a function that only
  // prefetches as side-effect free and deleting its calls (GCC 12 did).
  static void Touch(const void* p) {
    __builtin_prefetch(p);
    asm volatile("" : : "r"(p));
  }

  void Remove(Array* a, size_t i) {
    if (track_) erased_.push_back(a->at(i).key);
    heap_bytes_ -= HeapOf()(*a->state(i));
    a->EraseAt(i);
    --size_;
    Retrack();
  }

  static Hash128 Normalize(Hash128 k) {
    if (k.lo == 0 && k.hi == 0) k.lo = 1;  // {0,0} is the empty marker
    return k;
  }

  bool NeedsGrow() const { return (cur_.live + 1) * 8 > cur_.capacity() * 7; }
  static size_t GrownCapacity(size_t cap) {
    return cap < 16 ? 16 : cap + cap / 2;
  }
  size_t GrowBytes() const {
    return GrownCapacity(cur_.capacity()) * sizeof(Slot);
  }
  // Makes the budget cover the memory one more key needs: the larger array
  // when the current one is due to grow.
  bool ReserveForInsert() {
    if (charge_.budget() == nullptr) return true;
    return charge_.Reserve(Bytes() + (NeedsGrow() ? GrowBytes() : 0));
  }
  void NoteRefusal() {
    ++budget_refusals_;
    charge_.budget()->NoteRefusal();
  }
  // Brings the budget's charge in line with what the table holds.
  void Retrack() {
    if (charge_.budget() != nullptr) charge_.Track(Bytes());
  }

  void Grow() {
    if (Migrating()) MigrateAll();  // not reached at the rates above
    const size_t cap = cur_.capacity();
    const size_t new_cap = GrownCapacity(cap);
    old_ = std::move(cur_);
    cur_ = Array(new_cap);
    // Small arrays are rehashed at once (well under a millisecond).
    if (old_.capacity() * sizeof(Slot) < incremental_from_bytes_) MigrateAll();
    Retrack();
  }

  // Moves up to `steps` positions of the old array into the new one.
  void Migrate(size_t steps) {
    const size_t cap = old_.capacity();
    for (size_t k = 0; k < steps && old_.cursor < cap; ++k) {
      const size_t i = old_.cursor;
      // Start loading where an entry a little ahead will go, so the moves
      // of consecutive calls overlap their cache misses.
      const size_t ahead = i + kPrefetchAhead;
      if (ahead < cap && !old_.Empty(ahead)) {
        Touch(&cur_.at(cur_.Home(old_.at(ahead).key)));
      }
      if (old_.Empty(i)) {
        ++old_.cursor;
        continue;
      }
      // CloseHole may pull a later entry into i: the cursor stays put.
      cur_.MoveIn(cur_.FreeSlotFor(old_.at(i).key), old_, i);
      old_.CloseHole(i);
    }
    if (old_.live == 0 || old_.cursor >= cap) {
      old_.Release();
      Retrack();
    } else {
      old_.ReturnPagesBelowCursor();
    }
  }

  // Moves every remaining entry of the old array and frees it.
  void MigrateAll() {
    const size_t cap = old_.capacity();
    for (size_t i = old_.cursor; i < cap && old_.live > 0; ++i) {
      const size_t ahead = i + kPrefetchAhead;
      if (ahead < cap && !old_.Empty(ahead)) {
        Touch(&cur_.at(cur_.Home(old_.at(ahead).key)));
      }
      if (!old_.Empty(i))
        cur_.MoveIn(cur_.FreeSlotFor(old_.at(i).key), old_, i);
    }
    old_.Release();
    Retrack();
  }

  // Evicts the least recently touched of 8 sampled keys. Samples come from
  // either array in proportion to its share of the keys.
  void EvictOne() {
    Array* victim_array = nullptr;
    size_t victim = 0;
    uint64_t oldest_age = 0;
    for (int k = 0; k < 8; ++k) {
      const uint64_t r = NextRandom();
      Array& a = (Migrating() && old_.live > 0 &&
                  (cur_.live == 0 || r % size_ < old_.live))
                     ? old_
                     : cur_;
      // Positions below the cursor are empty: sample and wrap above it.
      const size_t lo = a.cursor;
      const size_t span = a.capacity() - lo;
      size_t i =
          lo + static_cast<size_t>(
                   (static_cast<unsigned __int128>(NextRandom()) * span) >> 64);
      while (a.Empty(i)) i = i + 1 == a.capacity() ? lo : i + 1;
      const uint64_t age = clock_ - a.at(i).touch;
      if (victim_array == nullptr || age > oldest_age) {
        victim_array = &a;
        victim = i;
        oldest_age = age;
      }
    }
    on_evict_(victim_array->at(victim).key, *victim_array->state(victim));
    Remove(victim_array, victim);
    ++evicted_;
    if (Migrating() && old_.live == 0) {
      old_.Release();
      Retrack();
    }
  }

  uint64_t NextRandom() {  // splitmix64, fixed seed: deterministic eviction
    uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  Array cur_;  // where new keys go
  Array old_;  // being emptied into cur_ (capacity 0 when not migrating)
  size_t size_ = 0;
  size_t heap_bytes_ = 0;
  size_t max_keys_;
  OverflowPolicy policy_;
  size_t incremental_from_bytes_;
  uint64_t clock_ = 0;
  bool track_ = false;
  bool on_touch_ = true;
  uint64_t mark_ = 0;             // clock_ at the last DrainChanges
  std::vector<Hash128> changed_;  // inserted or first touched
  std::vector<Hash128> erased_;
  std::vector<Hash128> sort_scratch_;  // SortUniqueKeys' working memory
  std::vector<uint32_t> sort_counts_;
  uint64_t rng_ = 0x1f2e3d4c5b6a7988ULL;
  uint64_t evicted_ = 0;
  uint64_t rejected_ = 0;
  uint64_t budget_refusals_ = 0;
  [[no_unique_address]] OnEvict on_evict_;
  BudgetCharge charge_;  // last: released before the arrays are freed
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_KEY_TABLE_H_
