// SharedKeyTable: one KeyTable for several rules of the same key.
//
// Rules keyed by the same tuple (the etcd-raft pack keys three rules by
// node) each kept their own table: an event looked its key up once per
// rule -- one cache miss per rule at DRAM latency once the tables outgrow
// the caches -- and each key cost each rule its own 16-byte key, touch
// clock and slot. A shared table keeps one slot per key holding every
// member rule's state side by side (one cache line for up to three 16-byte
// states), so an event costs one miss for all of them and a key about half
// the memory.
//
// Slot state (a blob of N bytes, 8-aligned): byte 0 holds one presence bit
// per member; each member's state sits at its own 8-aligned offset from
// byte 8. A member has a key when its bit is set: a rule that never saw a
// key (its field was absent from every event of it) has no state for it,
// exactly as with a table of its own. The key leaves the table when no
// member has it any more.
//
// What members share, and what that changes:
//   - the bound: the table holds at most max_keys distinct keys of all its
//     members (the engine only groups rules with the same max_keys and
//     overflow policy), so each member stays within its own bound; a
//     member that has fewer keys than the others may see one evicted
//     earlier than a table of its own would have (eviction picks the least
//     recently touched key of the group). A member counts the evictions
//     and rejections of its own keys.
//   - the memory: each member reports an equal share of the table's bytes.
// The checkpoint image of a member has the format a table of its own
// writes (rules/kind.h; entries may come in another order), so images move
// between both layouts. A restore applies every rule's erasures before any
// rule's other entries (Engine::RestoreState), so a shared table at its
// bound restores without evicting.
//
// Thread-safety: none; the table and all its members belong to one engine.
#ifndef INVARIANTD_RULES_SHARED_KEY_TABLE_H_
#define INVARIANTD_RULES_SHARED_KEY_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "rules/key_table.h"
#include "rules/memory_budget.h"
#include "sidecar/core/hash.h"

namespace invariantd {

class SharedKeyTable {
 public:
  static constexpr int kMaxMembers = 8;
  // The members' states together, each rounded up to 8 bytes.
  static constexpr size_t kMaxStateBytes = 64;
  // The bytes a member state of `bytes` bytes and alignment `align` takes
  // in a slot, or 0 when it cannot share one (empty, or more than
  // 8-aligned).
  static size_t RoundedSize(size_t bytes, size_t align) {
    if (bytes == 0 || align > 8) return 0;
    return (bytes + 7) / 8 * 8;
  }

  // A table for members whose states take `sizes` bytes each (at most
  // kMaxMembers, rounded sizes adding up to at most kMaxStateBytes).
  // `incremental_from_bytes` as for KeyTable (tests pass 0).
  static std::shared_ptr<SharedKeyTable> Create(
      const std::vector<size_t>& sizes, size_t max_keys, OverflowPolicy policy,
      size_t incremental_from_bytes = kIncrementalGrowthFromBytes);

  virtual ~SharedKeyTable() = default;
  SharedKeyTable(const SharedKeyTable&) = delete;
  SharedKeyTable& operator=(const SharedKeyTable&) = delete;

  struct Ref {
    void* state = nullptr;  // the member's bytes; null when rejected
    bool inserted = false;  // new for this member: the caller constructs it
  };
  // Finds `key` for member `m`, adding it (to the table, to the member, or
  // both) when absent. The pointer is valid until the next mutating call.
  virtual Ref FindOrInsert(const Hash128& key, int m) = 0;
  // Member m's state of `key`, or null.
  virtual void* Find(const Hash128& key, int m) = 0;
  // Takes `key` from member m; the key leaves the table when no member has
  // it. Returns false when m did not have it.
  virtual bool Erase(const Hash128& key, int m) = 0;
  // Hints the CPU to load `key`'s slot (once for consecutive calls with
  // the same key: every member of an event asks).
  virtual void Prefetch(const Hash128& key) const = 0;

  using Visit = absl::FunctionRef<void(const Hash128&, const void*)>;
  // Member m's keys (in the range of KeyTable::ForEachInRange).
  virtual void ForEach(int m, Visit f) const = 0;
  virtual void ForEachInRange(int m, uint64_t first, uint64_t last,
                              Visit f) const = 0;

  virtual size_t capacity() const = 0;
  virtual size_t Bytes() const = 0;
  virtual void SetBudget(MemoryBudget* budget) = 0;
  virtual bool Reserve(size_t keys) = 0;
  // KeyTable::MigrateIdle.
  virtual bool MigrateIdle(size_t steps) = 0;

  // Distinct keys in the table (of any member).
  virtual size_t keys() const = 0;
  int members() const { return static_cast<int>(members_.size()); }
  size_t offset(int m) const { return members_[m].offset; }
  // Member m's counters (see KeyTable).
  size_t size(int m) const { return members_[m].keys; }
  uint64_t evicted(int m) const { return members_[m].evicted; }
  uint64_t rejected(int m) const { return members_[m].rejected; }
  uint64_t budget_refusals(int m) const { return members_[m].refusals; }
  // Member m's share of Bytes(): an equal part for each member that has a
  // state (SharedMember) now.
  size_t BytesOf(int m) const;
  void Attach(int m, int delta) { members_[m].states += delta; }

  // Erasures, for checkpoints (KeyTable::DrainErased, per member): from
  // TrackErasures(m) on, the keys member m loses are recorded, and
  // DrainErased(m, f) calls f(key) for each one it lost since its previous
  // drain and does not have now.
  void TrackErasures(int m);
  // Member m records nothing more (its state is gone).
  void StopTracking(int m);
  void DrainErased(int m, absl::FunctionRef<void(const Hash128&)> f);

  // Takes every key from member m and zeroes its counters: for a rule whose
  // state is dropped while the other members' stays (reload, a restore
  // that could not read its image).
  void ClearMember(int m);

 protected:
  SharedKeyTable() = default;

  struct Member {
    size_t offset = 0;
    size_t keys = 0;
    uint64_t evicted = 0;
    uint64_t rejected = 0;
    uint64_t refusals = 0;
    bool tracking = false;
    int states = 0;      // SharedMembers of it alive
    size_t drained = 0;  // erased_ entries this member has drained
  };
  static Member MemberAt(size_t offset) {
    Member m;
    m.offset = offset;
    return m;
  }
  static uint8_t Bit(int m) { return static_cast<uint8_t>(1u << m); }
  // A key left members `mask` (eviction, or Erase by one member).
  void NoteLost(const Hash128& key, uint8_t mask, bool evicted);
  virtual std::vector<Hash128> KeysOf(int m) const = 0;
  // Drops the erasures every recording member has drained.
  void TrimErased();

  std::vector<Member> members_;
  uint8_t tracking_ = 0;  // members that record erasures
  std::vector<std::pair<Hash128, uint8_t>> erased_;  // key, members lost
};

// The view of one member, with the KeyTable calls KeyedRuleState makes.
template <typename State>
class SharedMember {
  static_assert(std::is_trivially_copyable_v<State> && alignof(State) <= 8);

 public:
  SharedMember(std::shared_ptr<SharedKeyTable> table, int member)
      : t_(std::move(table)), m_(member) {
    t_->Attach(m_, 1);
  }
  ~SharedMember() {
    t_->StopTracking(m_);
    t_->Attach(m_, -1);
  }
  SharedMember(const SharedMember&) = delete;
  SharedMember& operator=(const SharedMember&) = delete;

  struct Ref {
    State* state = nullptr;
    bool inserted = false;
  };
  Ref FindOrInsert(const Hash128& key) {
    const SharedKeyTable::Ref r = t_->FindOrInsert(key, m_);
    if (r.state == nullptr) return Ref{};
    if (r.inserted) return Ref{::new (r.state) State{}, true};
    return Ref{std::launder(static_cast<State*>(r.state)), false};
  }
  State* Find(const Hash128& key) {
    void* p = t_->Find(key, m_);
    return p == nullptr ? nullptr : std::launder(static_cast<State*>(p));
  }
  bool Erase(const Hash128& key) { return t_->Erase(key, m_); }
  void Prefetch(const Hash128& key) const { t_->Prefetch(key); }
  bool MigrateIdle(size_t steps) { return t_->MigrateIdle(steps); }

  template <typename F>
  void ForEach(F&& f) const {
    t_->ForEach(m_, [&](const Hash128& k, const void* s) {
      f(k, *std::launder(static_cast<const State*>(s)));
    });
  }
  template <typename F>
  void ForEachInRange(uint64_t first, uint64_t last, F&& f) const {
    t_->ForEachInRange(m_, first, last, [&](const Hash128& k, const void* s) {
      f(k, *std::launder(static_cast<const State*>(s)));
    });
  }

  // Checkpoints: only erasures are the table's to record (changes of plain
  // states are logged by their owner), as KeyTable::TrackChanges(false).
  void TrackChanges(bool /*on_touch*/) { t_->TrackErasures(m_); }
  template <typename F>
  void DrainChanges(F&&) {}
  template <typename F>
  void DrainErased(F&& f) {
    t_->DrainErased(m_, f);
  }

  size_t size() const { return t_->size(m_); }
  size_t Bytes() const { return t_->BytesOf(m_); }
  size_t capacity() const { return t_->capacity(); }
  uint64_t evicted() const { return t_->evicted(m_); }
  uint64_t rejected() const { return t_->rejected(m_); }
  uint64_t budget_refusals() const { return t_->budget_refusals(m_); }
  void SetBudget(MemoryBudget* budget) { t_->SetBudget(budget); }
  void Reserve(size_t keys) { t_->Reserve(keys); }

  SharedKeyTable* shared() const { return t_.get(); }
  void Clear() { t_->ClearMember(m_); }

 private:
  std::shared_ptr<SharedKeyTable> t_;
  int m_;
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_SHARED_KEY_TABLE_H_
