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
// Bounds: at most `max_keys` live keys. When a new key arrives at the limit:
//   kEvictOldest  evicts an approximately least-recently-touched key (the
//                 oldest of 8 sampled keys, as Redis does) and counts it;
//   kRejectNew    leaves the table unchanged, counts the rejection, and the
//                 caller skips the event for this rule (lost coverage).
// Sampling uses a fixed-seed generator: the same input evicts the same keys.
//
// Thread-safety: none; one table is owned by one evaluation thread.
#ifndef INVARIANTD_RULES_KEY_TABLE_H_
#define INVARIANTD_RULES_KEY_TABLE_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "sidecar/core/hash.h"

namespace invariantd {

enum class OverflowPolicy { kEvictOldest, kRejectNew };

template <typename State>
class KeyTable {
 public:
  struct Slot {
    Hash128 key;         // {0,0} marks an empty slot
    uint64_t touch = 0;  // clock value of the last access (never wraps)
    State state{};
  };

  KeyTable(size_t max_keys, OverflowPolicy policy)
      : max_keys_(max_keys), policy_(policy) {}

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
    if (capacity() != 0) {
      size_t i = Home(key);
      while (!Empty(slots_[i])) {
        if (slots_[i].key == key) {
          slots_[i].touch = clock_;
          return Ref{&slots_[i].state, false};
        }
        i = Next(i);
      }
    }
    if (size_ >= max_keys_) {
      if (policy_ == OverflowPolicy::kRejectNew || max_keys_ == 0) {
        ++rejected_;
        return Ref{};
      }
      EvictOne();
    }
    if ((size_ + 1) * 8 > capacity() * 7) Grow();
    size_t i = Home(key);
    while (!Empty(slots_[i])) i = Next(i);
    slots_[i].key = key;
    slots_[i].touch = clock_;
    slots_[i].state = State{};
    ++size_;
    return Ref{&slots_[i].state, true};
  }

  // Hints the CPU to load the slot where `key` lives: the engine issues this
  // for every rule of an event before observing any, so the cache misses of
  // several tables overlap instead of adding up.
  void Prefetch(Hash128 key) const {
    if (capacity() != 0) __builtin_prefetch(&slots_[Home(Normalize(key))]);
  }

  // Pointer to the state of `key`, or null. Does not count as a touch.
  State* Find(Hash128 key) {
    key = Normalize(key);
    if (capacity() == 0) return nullptr;
    for (size_t i = Home(key); !Empty(slots_[i]); i = Next(i)) {
      if (slots_[i].key == key) return &slots_[i].state;
    }
    return nullptr;
  }

  bool Erase(Hash128 key) {
    key = Normalize(key);
    if (capacity() == 0) return false;
    for (size_t i = Home(key); !Empty(slots_[i]); i = Next(i)) {
      if (slots_[i].key == key) {
        EraseAt(i);
        return true;
      }
    }
    return false;
  }

  // Erases every entry whose state satisfies `pred`; returns how many.
  // O(capacity): for occasional sweeps (e.g. expired windows), not per event.
  template <typename P>
  size_t EraseIf(P&& pred) {
    std::vector<Hash128> doomed;
    for (const Slot& s : slots_) {
      if (!Empty(s) && pred(s.state)) doomed.push_back(s.key);
    }
    for (const Hash128& k : doomed) Erase(k);
    return doomed.size();
  }

  // Visits every live (key, state); for checkpoints and tests.
  template <typename F>
  void ForEach(F&& f) const {
    for (const Slot& s : slots_) {
      if (!Empty(s)) f(s.key, s.state);
    }
  }

  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }
  size_t max_keys() const { return max_keys_; }
  uint64_t evicted() const { return evicted_; }
  uint64_t rejected() const { return rejected_; }
  // Bytes held by the slot array (states' own heap is the caller's to add).
  size_t SlotBytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  static bool Empty(const Slot& s) { return s.key.lo == 0 && s.key.hi == 0; }
  static Hash128 Normalize(Hash128 k) {
    if (k.lo == 0 && k.hi == 0) k.lo = 1;  // {0,0} is the empty marker
    return k;
  }
  // Multiply-shift range reduction: any capacity, no modulo.
  size_t Home(const Hash128& k) const {
    return static_cast<size_t>(
        (static_cast<unsigned __int128>(k.lo) * slots_.size()) >> 64);
  }
  size_t Next(size_t i) const { return i + 1 == slots_.size() ? 0 : i + 1; }
  // Distance from home h to position i going forward (with wrap).
  size_t Dist(size_t h, size_t i) const {
    return i >= h ? i - h : i + slots_.size() - h;
  }

  void Grow() {
    const size_t new_cap = capacity() < 16 ? 16 : capacity() + capacity() / 2;
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.reserve(new_cap);  // allocate, advise, then touch
    AdviseHugePages(slots_.data(), new_cap * sizeof(Slot));
    slots_.resize(new_cap);
    for (Slot& s : old) {
      if (Empty(s)) continue;
      size_t i = Home(s.key);
      while (!Empty(slots_[i])) i = Next(i);
      slots_[i] = std::move(s);
    }
  }

  // Large tables are accessed at random: one TLB miss per lookup with 4 KiB
  // pages. Ask for transparent huge pages on the 2 MiB-aligned interior
  // (Linux, THP in madvise mode); elsewhere, or if refused, nothing changes.
  static void AdviseHugePages(void* p, size_t bytes) {
    constexpr uintptr_t kHuge = uintptr_t{2} << 20;
    if (bytes < 2 * kHuge) return;
    const uintptr_t begin =
        (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t end =
        (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
    if (end > begin) {
      ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
  }

  // Backward-shift deletion: pulls later members of the probe run into the
  // hole when that does not move them before their home.
  void EraseAt(size_t hole) {
    size_t i = Next(hole);
    while (!Empty(slots_[i])) {
      const size_t h = Home(slots_[i].key);
      if (Dist(h, i) >= Dist(hole, i)) {
        slots_[hole] = std::move(slots_[i]);
        hole = i;
      }
      i = Next(i);
    }
    slots_[hole] = Slot{};
    --size_;
  }

  void EvictOne() {
    size_t victim = SIZE_MAX;
    uint64_t oldest_age = 0;
    for (int k = 0; k < 8; ++k) {
      size_t i = static_cast<size_t>(
          (static_cast<unsigned __int128>(NextRandom()) * slots_.size()) >> 64);
      while (Empty(slots_[i])) i = Next(i);
      const uint64_t age = clock_ - slots_[i].touch;
      if (victim == SIZE_MAX || age > oldest_age) {
        victim = i;
        oldest_age = age;
      }
    }
    EraseAt(victim);
    ++evicted_;
  }

  uint64_t NextRandom() {  // splitmix64, fixed seed: deterministic eviction
    uint64_t z = (rng_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
  size_t max_keys_;
  OverflowPolicy policy_;
  uint64_t clock_ = 0;
  uint64_t rng_ = 0x1f2e3d4c5b6a7988ULL;
  uint64_t evicted_ = 0;
  uint64_t rejected_ = 0;
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_KEY_TABLE_H_
