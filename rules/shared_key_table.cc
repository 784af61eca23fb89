#include "rules/shared_key_table.h"

#include <algorithm>

namespace invariantd {
namespace {

// The table for slots of N bytes of member state (presence byte included).
template <size_t N>
class SharedKeyTableOf final : public SharedKeyTable {
 public:
  SharedKeyTableOf(const std::vector<size_t>& offsets, size_t max_keys,
                   OverflowPolicy policy, size_t incremental_from_bytes)
      : table_(max_keys, policy, incremental_from_bytes) {
    for (size_t off : offsets) members_.push_back(MemberAt(off));
    table_.SetEvictHook(EvictHook{this});
  }

  Ref FindOrInsert(const Hash128& key, int m) override {
    Member& mem = members_[m];
    Blob* blob = nullptr;
    // The members of an event ask one after another for the same key: the
    // slot the first one got stays valid until the table next changes.
    if (cached_ != nullptr && key == cached_key_) {
      blob = cached_;
    } else {
      cached_ = nullptr;
      const uint64_t refusals = table_.budget_refusals();
      auto ref = table_.FindOrInsert(key);
      mem.refusals += table_.budget_refusals() - refusals;
      if (ref.state == nullptr) {
        ++mem.rejected;
        return Ref{};
      }
      blob = ref.state;
      cached_ = blob;
      cached_key_ = key;
    }
    unsigned char* b = blob->b;
    void* state = b + mem.offset;
    if (b[0] & Bit(m)) return Ref{state, false};
    b[0] |= Bit(m);
    ++mem.keys;
    return Ref{state, true};
  }

  void* Find(const Hash128& key, int m) override {
    Blob* blob = table_.Find(key);
    if (blob == nullptr || !(blob->b[0] & Bit(m))) return nullptr;
    return blob->b + members_[m].offset;
  }

  bool Erase(const Hash128& key, int m) override {
    cached_ = nullptr;
    Blob* blob = table_.Find(key);
    if (blob == nullptr || !(blob->b[0] & Bit(m))) return false;
    blob->b[0] &= static_cast<uint8_t>(~Bit(m));
    const bool last = blob->b[0] == 0;
    NoteLost(key, Bit(m), /*evicted=*/false);
    if (last) table_.Erase(key);
    return true;
  }

  void Prefetch(const Hash128& key) const override {
    if (key == last_prefetch_) return;
    last_prefetch_ = key;
    table_.Prefetch(key);
  }

  void ForEach(int m, Visit f) const override {
    const uint8_t bit = Bit(m);
    const size_t off = members_[m].offset;
    table_.ForEach([&](const Hash128& k, const Blob& s) {
      if (s.b[0] & bit) f(k, s.b + off);
    });
  }
  void ForEachInRange(int m, uint64_t first, uint64_t last,
                      Visit f) const override {
    const uint8_t bit = Bit(m);
    const size_t off = members_[m].offset;
    table_.ForEachInRange(first, last, [&](const Hash128& k, const Blob& s) {
      if (s.b[0] & bit) f(k, s.b + off);
    });
  }

  size_t keys() const override { return table_.size(); }
  size_t capacity() const override { return table_.capacity(); }
  size_t Bytes() const override { return table_.Bytes(); }
  void SetBudget(MemoryBudget* budget) override {
    if (budget != budget_set_ || !budget_known_) table_.SetBudget(budget);
    budget_set_ = budget;
    budget_known_ = true;
  }
  bool Reserve(size_t keys) override {
    cached_ = nullptr;
    return table_.Reserve(keys);
  }
  bool MigrateIdle(size_t steps) override {
    if (!table_.Migrating()) return true;
    cached_ = nullptr;  // slots move
    return table_.MigrateIdle(steps);
  }

 protected:
  std::vector<Hash128> KeysOf(int m) const override {
    std::vector<Hash128> keys;
    ForEach(m, [&](const Hash128& k, const void*) { keys.push_back(k); });
    return keys;
  }

 private:
  struct Blob {
    alignas(8) unsigned char b[N];
  };

  struct EvictHook {
    SharedKeyTableOf* owner = nullptr;
    void operator()(const Hash128& key, const Blob& s) const {
      owner->NoteLost(key, s.b[0], /*evicted=*/true);
    }
  };

  KeyTable<Blob, NoHeap<Blob>, EvictHook> table_;
  mutable Hash128 last_prefetch_{0, 0};
  // The slot of the last FindOrInsert; null once anything else may have
  // moved it (every other mutating call).
  Blob* cached_ = nullptr;
  Hash128 cached_key_{0, 0};
  MemoryBudget* budget_set_ = nullptr;
  bool budget_known_ = false;
};

}  // namespace

std::shared_ptr<SharedKeyTable> SharedKeyTable::Create(
    const std::vector<size_t>& sizes, size_t max_keys, OverflowPolicy policy,
    size_t incremental_from_bytes) {
  if (sizes.empty() || sizes.size() > kMaxMembers) return nullptr;
  std::vector<size_t> offsets;
  size_t at = 8;  // byte 0: the presence bits
  for (size_t s : sizes) {
    const size_t r = RoundedSize(s, 8);
    if (r == 0) return nullptr;
    offsets.push_back(at);
    at += r;
  }
  if (at - 8 > kMaxStateBytes) return nullptr;
  // Slots in steps of 16 bytes (a 24-byte key and touch clock, then this).
  if (at <= 24) {
    return std::make_shared<SharedKeyTableOf<24>>(offsets, max_keys, policy,
                                                  incremental_from_bytes);
  }
  if (at <= 40) {
    return std::make_shared<SharedKeyTableOf<40>>(offsets, max_keys, policy,
                                                  incremental_from_bytes);
  }
  if (at <= 56) {
    return std::make_shared<SharedKeyTableOf<56>>(offsets, max_keys, policy,
                                                  incremental_from_bytes);
  }
  return std::make_shared<SharedKeyTableOf<72>>(offsets, max_keys, policy,
                                                incremental_from_bytes);
}

size_t SharedKeyTable::BytesOf(int m) const {
  if (members_[m].states <= 0) return 0;
  size_t n = 0;
  int first = -1;
  for (int i = 0; i < members(); ++i) {
    if (members_[i].states <= 0) continue;
    if (first < 0) first = i;
    ++n;
  }
  const size_t all = Bytes();
  return all / n + (m == first ? all % n : 0);
}

void SharedKeyTable::NoteLost(const Hash128& key, uint8_t mask, bool evicted) {
  for (int m = 0; m < members(); ++m) {
    if (!(mask & Bit(m))) continue;
    --members_[m].keys;
    if (evicted) ++members_[m].evicted;
  }
  const uint8_t record = mask & tracking_;
  if (record != 0) erased_.emplace_back(key, record);
}

void SharedKeyTable::TrackErasures(int m) {
  members_[m].tracking = true;
  members_[m].drained = erased_.size();
  tracking_ |= Bit(m);
}

void SharedKeyTable::DrainErased(int m,
                                 absl::FunctionRef<void(const Hash128&)> f) {
  Member& mem = members_[m];
  std::vector<Hash128> lost;
  for (size_t j = mem.drained; j < erased_.size(); ++j) {
    if ((erased_[j].second & Bit(m)) && Find(erased_[j].first, m) == nullptr) {
      lost.push_back(erased_[j].first);
    }
  }
  // Once each, in key order, as KeyTable::DrainErased writes them.
  std::sort(lost.begin(), lost.end(), [](const Hash128& a, const Hash128& b) {
    return a.lo != b.lo ? a.lo < b.lo : a.hi < b.hi;
  });
  lost.erase(std::unique(lost.begin(), lost.end()), lost.end());
  for (const Hash128& k : lost) f(k);
  mem.drained = erased_.size();
  TrimErased();
}

void SharedKeyTable::StopTracking(int m) {
  members_[m].tracking = false;
  tracking_ &= static_cast<uint8_t>(~Bit(m));
  TrimErased();
}

void SharedKeyTable::TrimErased() {
  // Once every recording member has drained them, the entries go.
  for (const Member& o : members_) {
    if (o.tracking && o.drained != erased_.size()) return;
  }
  if (erased_.capacity() * sizeof(erased_[0]) > (size_t{1} << 20)) {
    std::vector<std::pair<Hash128, uint8_t>>().swap(erased_);
  } else {
    erased_.clear();
  }
  for (Member& o : members_) o.drained = 0;
}

void SharedKeyTable::ClearMember(int m) {
  if (members_[m].keys != 0) {
    for (const Hash128& k : KeysOf(m)) {
      // Not an erasure anyone records: the member's state is gone whole.
      const uint8_t tracking = std::exchange(tracking_, 0);
      Erase(k, m);
      tracking_ = tracking;
    }
  }
  const size_t offset = members_[m].offset;
  const int states = members_[m].states;
  members_[m] = MemberAt(offset);
  members_[m].states = states;
  tracking_ &= static_cast<uint8_t>(~Bit(m));
}

}  // namespace invariantd
