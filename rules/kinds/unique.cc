// unique: a value (an idempotency key, a request id) occurs at most once per
// key scope: "no double-apply". Reason: "duplicate".
//
// Occurrence versus redelivery: the state remembers the identity of the
// event that first carried the value. The *same* event seen again (a
// redelivery, identity equal) is not a second occurrence and is counted as
// redelivered; a *different* event with the same value is the double-apply.
//
// Window: without one, a value is remembered until evicted by max_keys.
// `window_count: N` forgets a value after N further events of this rule;
// `window_field: EXPR` with `window_size: N` forgets it once the events' own
// sequence field has advanced by more than N (time is untrusted; counters
// are not). Expiry is lazy: an expired entry is overwritten when its value
// reappears, and when the table is full, expired entries are swept out
// before max_keys evicts or rejects anything (at most one O(max_keys) sweep
// per eighth of a window, so the cost stays amortized).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"

namespace invariantd {
namespace {

struct UniqueConfig : KindConfig {
  std::unique_ptr<Expr> field;
  int64_t window_count = 0;  // 0: no count window
  std::unique_ptr<Expr> window_field;
  int64_t window_size = 0;
  std::unique_ptr<RuleState> NewState(size_t max_keys,
                                      OverflowPolicy p) const override;
};

// 24 bytes of state per remembered value.
struct UniqueEntry {
  uint64_t identity = 0;  // low 64 bits of the first event's identity
  uint64_t line = 0;
  int64_t stamp = 0;  // ordinal or sequence value when first seen
};

class UniqueState final : public RuleState {
 public:
  UniqueState(const UniqueConfig* c, size_t max_keys, OverflowPolicy p)
      : c_(c), table_(max_keys, p) {}

  ObserveStatus Observe(const ObserveInput& in,
                        std::optional<Finding>* out) override {
    Value v;
    ObserveStatus st = ExtractField(*c_->field, in, &v);
    if (st != ObserveStatus::kOk) return st;
    int64_t stamp = ++ordinal_;
    if (c_->window_field != nullptr) {
      Value seq;
      st = ExtractField(*c_->window_field, in, &seq);
      if (st != ObserveStatus::kOk) return st;
      if (!seq.is_int()) return ObserveStatus::kTypeError;
      stamp = seq.int_value();
    }
    hasher_.Clear();
    hasher_.AddU64(in.key.lo);
    hasher_.AddU64(in.key.hi);
    hasher_.Add(v);
    const Hash128 slot_key = hasher_.Finish();
    if (table_.size() >= table_.max_keys() && WindowSize() > 0 &&
        table_.Find(slot_key) == nullptr) {
      SweepExpired(stamp);
    }
    auto ref = table_.FindOrInsert(slot_key);
    if (ref.state == nullptr) return ObserveStatus::kRejected;
    UniqueEntry& e = *ref.state;
    const uint64_t line = in.event->position.line;
    if (ref.inserted || Expired(e, stamp)) {
      e = UniqueEntry{in.identity.lo, line, stamp};
      return ObserveStatus::kOk;
    }
    if (e.identity == in.identity.lo) return ObserveStatus::kRedelivered;
    Finding f;
    f.reason = "duplicate";
    f.observed = v;
    f.previous = OwnedValue(v);
    f.previous_line = e.line;
    f.message = absl::StrCat(c_->field->text(), " ", v.ToText(),
                             " occurred again in a different event");
    *out = std::move(f);
    return ObserveStatus::kOk;
  }

  TableStats Stats() const override {
    return TableStats{table_.size(), table_.Bytes(), table_.evicted(),
                      table_.rejected(), table_.budget_refusals()};
  }
  void SetBudget(MemoryBudget* budget) override { table_.SetBudget(budget); }
  // A unique rule's keys are its (key, value) pairs.
  void Reserve(size_t keys) override { table_.Reserve(keys); }
  bool MigrateIdle(size_t steps) override { return table_.MigrateIdle(steps); }

  void Rebind(const KindConfig* config) override {
    c_ = static_cast<const UniqueConfig*>(config);
  }

  void TrackChanges() override { table_.TrackChanges(); }

  // Image: layout tag, the window counters, then (key, present, entry).
  size_t SaveState(const ImageSpec& spec, Pieces* pieces) override {
    std::string* out = pieces->tail();
    PutU64(out, kLayoutTag);
    PutU8(out, spec.full ? 1 : 0);
    PutU64(out, static_cast<uint64_t>(ordinal_));
    PutU8(out, swept_once_ ? 1 : 0);
    PutU64(out, static_cast<uint64_t>(last_sweep_));
    return PutTableImage(table_, spec, out,
                         [&](const Hash128& key, const UniqueEntry* e) {
                           PutHash(out, key);
                           PutU8(out, e != nullptr ? 1 : 0);
                           if (e != nullptr) PutRaw(out, *e);
                         });
  }

  bool RestoreState(std::string_view in) override {
    uint64_t tag = 0, ordinal = 0, last_sweep = 0;
    uint8_t full = 0, swept = 0;
    if (!GetU64(&in, &tag) || tag != kLayoutTag || !GetU8(&in, &full) ||
        !GetU64(&in, &ordinal) || !GetU8(&in, &swept) ||
        !GetU64(&in, &last_sweep)) {
      return false;
    }
    ordinal_ = static_cast<int64_t>(ordinal);
    swept_once_ = swept != 0;
    last_sweep_ = static_cast<int64_t>(last_sweep);
    return RestoreEntries<UniqueEntry>(
        in, [](std::string_view* p, UniqueEntry* e) { return GetRaw(p, e); },
        [&](const Hash128& key, UniqueEntry&& e) {
          auto ref = table_.FindOrInsert(key);
          if (ref.state != nullptr) *ref.state = e;
        },
        [&](const Hash128& key) { table_.Erase(key); });
  }

 private:
  static constexpr uint64_t kLayoutTag =
      0x554e'0000'0000'0000ULL | sizeof(UniqueEntry);
  int64_t WindowSize() const {
    return c_->window_field != nullptr ? c_->window_size : c_->window_count;
  }

  // Frees expired entries when the table is full, at most once per eighth
  // of a window of progress.
  void SweepExpired(int64_t stamp) {
    const uint64_t step =
        std::max<uint64_t>(1, static_cast<uint64_t>(WindowSize()) / 8);
    if (swept_once_ && stamp > last_sweep_ &&
        static_cast<uint64_t>(stamp) - static_cast<uint64_t>(last_sweep_) <
            step) {
      return;
    }
    if (swept_once_ && stamp <= last_sweep_) return;
    swept_once_ = true;
    last_sweep_ = stamp;
    table_.EraseIf([&](const UniqueEntry& e) { return Expired(e, stamp); });
  }

  bool Expired(const UniqueEntry& e, int64_t stamp) const {
    const int64_t size = WindowSize();
    if (size <= 0) return false;
    // Unsigned difference: no overflow on extreme sequence values.
    return static_cast<uint64_t>(stamp) - static_cast<uint64_t>(e.stamp) >
               static_cast<uint64_t>(size) &&
           stamp > e.stamp;
  }

  const UniqueConfig* c_;
  KeyTable<UniqueEntry> table_;
  TupleHasher hasher_;  // reused: no allocation per event
  int64_t ordinal_ = 0;
  bool swept_once_ = false;
  int64_t last_sweep_ = 0;
};

std::unique_ptr<RuleState> UniqueConfig::NewState(size_t max_keys,
                                                  OverflowPolicy p) const {
  return std::make_unique<UniqueState>(this, max_keys, p);
}

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<UniqueConfig>();
  c->field = kc.Expression("field", /*required=*/true, /*boolean=*/false);
  c->window_count = kc.Int("window_count", 1, INT64_MAX).value_or(0);
  c->window_field =
      kc.Expression("window_field", /*required=*/false, /*boolean=*/false);
  c->window_size = kc.Int("window_size", 1, INT64_MAX).value_or(0);
  if (c->window_field != nullptr && c->window_size == 0) {
    kc.Error("window_field", "window_field needs window_size");
  }
  if (c->window_field == nullptr && kc.Has("window_size")) {
    kc.Error("window_size", "window_size needs window_field");
  }
  if (c->window_count != 0 && kc.Has("window_field")) {
    kc.Error("window_count",
             "use either window_count or window_field/window_size, not both");
  }
  if (!c->field) return nullptr;
  return c;
}

}  // namespace

KindSpec UniqueKindSpec() {
  return KindSpec{"unique",
                  {"field", "window_count", "window_field", "window_size"},
                  Compile};
}

}  // namespace invariantd
