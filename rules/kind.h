// Invariant kinds: the contract every kind implements, and the registry.
//
// A kind is two things:
//   - a compiled, immutable configuration (KindConfig), built once from the
//     rule's kind-specific YAML fields through a KindCompiler, shared by
//     every thread that evaluates the rule;
//   - per-key state, plain data in a bounded KeyTable, owned by one
//     evaluation thread through the RuleState the config creates.
// Each kind lives in its own file (rules/kinds/<kind>.cc) and registers a
// KindSpec in kinds/registry.cc. Adding a kind is: one file, one registry
// line, one test file, one section of docs/rules.md.
#ifndef INVARIANTD_RULES_KIND_H_
#define INVARIANTD_RULES_KIND_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "rules/expr.h"
#include "rules/key_table.h"
#include "rules/shared_key_table.h"
#include "sidecar/core/binary.h"
#include "sidecar/core/event.h"
#include "sidecar/core/hash.h"
#include "sidecar/core/value.h"

namespace invariantd {

class KindConfig;

// What a kind found wrong with one event.
struct Finding {
  std::string reason;   // stable, kind-specific: "regressed", "gap", ...
  Value observed;       // points into the event
  OwnedValue previous;  // the state it contradicts (missing if none)
  uint64_t previous_line = 0;
  std::string message;  // one sentence, unsanitized
};

// The event as one rule sees it.
struct ObserveInput {
  const Event* event = nullptr;
  Hash128 key;       // hash of the rule's key tuple
  Hash128 identity;  // the event's identity (raw bytes or `id` expression)
};

enum class ObserveStatus {
  kOk,           // evaluated (a Finding may have been produced)
  kMissing,      // a field the rule reads is absent: rule does not apply
  kTypeError,    // a field had a kind the rule cannot use
  kRejected,     // no room for a new key (reject_new at max_keys)
  kRedelivered,  // `unique`: the same event seen again; not an occurrence
};

// What one checkpoint image of a rule state holds besides the changes
// since the previous one: every key (full), or the keys whose hash (the
// table's normalized key.lo) lies in [first, last] when `slice` is set.
struct ImageSpec {
  bool full = false;
  bool slice = false;
  uint64_t first = 0;
  uint64_t last = 0;
};

// Writes the entries of a KeyTable-backed image after its header:
// put(key, state-or-null) for the changes the table recorded (or, when
// full, for every key), then for the keys of the slice. Returns the bytes
// the slice (or the full image) took.
template <typename Table, typename Put>
size_t PutTableImage(Table& table, const ImageSpec& spec, std::string* out,
                     Put&& put) {
  using State = std::remove_cv_t<
      std::remove_pointer_t<decltype(table.Find(std::declval<Hash128>()))>>;
  const size_t start = out->size();
  if (spec.full) {
    table.DrainChanges([](const Hash128&, const State*) {});
    table.ForEach([&](const Hash128& k, const State& s) { put(k, &s); });
    return out->size() - start;
  }
  table.DrainChanges(put);
  const size_t slice_at = out->size();
  if (spec.slice) {
    table.ForEachInRange(spec.first, spec.last,
                         [&](const Hash128& k, const State& s) { put(k, &s); });
  }
  return out->size() - slice_at;
}

// Applies the entries of an image body -- (key, present, state) each, as
// PutTableImage's callers write them -- to a table: `read(&in, &state)`
// parses one state, `put(key, state&&)` stores it, `erase(key)` erases.
//
// In two passes: the erasures first, then the present entries, skipping the
// keys the image erases. An image lists an erasure only for a key absent
// when it was written, and its other entries (a slice copied ahead, changes
// in the order they happened) may hold keys that were inserted and erased
// again before that. Applied in one pass, such keys would sit in the table
// next to the keys of older images until the erasures at the end, so a
// table at its max_keys would evict (or reject) as it restores, and lose
// keys it held when the image was written. In two passes the table holds
// only keys that were live at some checkpoint being applied: never more
// than the bound (and the memory) it had then.
template <typename State, typename Read, typename Erase>
bool RestoreErasedEntries(std::string_view in, Read&& read, Erase&& erase) {
  for (std::string_view p = in; !p.empty();) {
    Hash128 key;
    uint8_t present = 0;
    if (!GetHash(&p, &key) || !GetU8(&p, &present)) return false;
    if (present == 0) {
      erase(key);
      continue;
    }
    State skipped{};
    if (!read(&p, &skipped)) return false;
  }
  return true;
}
template <typename State, typename Read, typename Put, typename Erase>
bool RestoreEntries(std::string_view in, Read&& read, Put&& put,
                    Erase&& erase) {
  absl::flat_hash_set<Hash128> erased;
  if (!RestoreErasedEntries<State>(in, read, [&](const Hash128& key) {
        erase(key);
        erased.insert(key);
      })) {
    return false;
  }
  for (std::string_view p = in; !p.empty();) {
    Hash128 key;
    uint8_t present = 0;
    GetHash(&p, &key);
    GetU8(&p, &present);
    if (present == 0) continue;
    State state{};
    read(&p, &state);
    if (!erased.contains(key)) put(key, std::move(state));
  }
  return true;
}

// Counters of one rule's state table.
struct TableStats {
  size_t keys = 0;
  size_t bytes = 0;
  uint64_t evicted = 0;
  uint64_t rejected = 0;
  uint64_t budget_refusals = 0;  // of evicted + rejected: the memory budget
};

class RuleState {
 public:
  virtual ~RuleState() = default;
  virtual ObserveStatus Observe(const ObserveInput& in,
                                std::optional<Finding>* finding) = 0;
  // Optional: start loading the state `in.key` will need (see
  // KeyTable::Prefetch). Must not change any state.
  virtual void Prefetch(const Hash128& key) const {}
  virtual TableStats Stats() const = 0;
  // Points the state at an identical configuration compiled in another
  // rule set (rule reload keeps the state of unchanged rules). `config`
  // must be of this state's kind and outlive the state.
  virtual void Rebind(const KindConfig* config) = 0;
  // Charges the state's memory to `budget` from now on (rules/memory_budget.h;
  // null: none). Stateless kinds keep the default.
  virtual void SetBudget(MemoryBudget* budget) {}
  // Optional: sizes the state for `keys` keys up front (a rule's
  // expected_keys; see KeyTable::Reserve). Stateless kinds keep the default.
  virtual void Reserve(size_t keys) {}
  // The table this state shares with other rules' (null: none; see
  // KindConfig::NewSharedState).
  virtual SharedKeyTable* shared_table() const { return nullptr; }
  // For a state dropped while rules it shares a table with keep theirs:
  // takes its keys out of the shared table. Others keep the default.
  virtual void Discard() {}

  // Checkpoints (sidecar/pipeline). After TrackChanges(), SaveState appends
  // to `out` an image of what changed since the previous SaveState, plus
  // every key of `spec`'s slice (a rolling base: over a round of
  // checkpoints the slices cover every key) -- of everything when
  // spec.full -- and returns how many bytes the slice took. RestoreState
  // applies such images in the order they were written, starting from
  // empty: a full image and the changes after it, or a whole round of
  // slices and the changes since the round began. RestoreState returns
  // false when the bytes are not an image this kind wrote with this
  // layout; the caller then discards the rule's state. Stateless kinds
  // keep the defaults.
  virtual void TrackChanges() {}
  virtual size_t SaveState(const ImageSpec& spec, Pieces* out) { return 0; }
  virtual bool RestoreState(std::string_view in) { return in.empty(); }
  // Optional: applies only the erasures of such an image, ahead of
  // RestoreState (which applies them again, and the rest): the engine does
  // this for every rule of an image first, so that a table shared by
  // several rules drops the keys all of them lost before any of them
  // restores the keys they gained (RestoreEntries). False: not an image
  // this kind wrote (RestoreState then says so too).
  virtual bool RestoreErasures(std::string_view in) { return true; }

  // Slices taken ahead of the checkpoint that writes them, so that the
  // checkpoint itself does not stop the evaluating thread for the scan.
  // BeginSlice(first, last) names the hash range of the next SaveState's
  // slice; CaptureSlice(max_slots) copies about that many table slots'
  // worth of it and returns true once all of it is copied; SaveState then
  // writes what was copied (and copies the rest). A slice so copied holds
  // each key as it was at some moment since the previous SaveState, and
  // comes first in the image, before the changes: a key changed after it
  // was copied is then set by its change, and one changed before by a
  // change that left it as the slice has it. A range that differs from
  // SaveState's spec is dropped and scanned at SaveState. Kinds that do
  // not capture keep the defaults and scan at SaveState.
  virtual void BeginSlice(uint64_t first, uint64_t last) {}
  virtual bool CaptureSlice(size_t max_slots) { return true; }

  // Idle work (KeyTable::MigrateIdle): moves up to about `steps` slots of
  // a growth still in progress; true once none is.
  virtual bool MigrateIdle(size_t steps) { return true; }
};

class KindConfig {
 public:
  virtual ~KindConfig() = default;
  // Stateful kinds keep state per key, so an event whose key fields are
  // absent cannot be judged. A stateless kind (always) judges it anyway and
  // reports the absent key fields as null.
  virtual bool NeedsKey() const { return true; }
  // The numeric field a rule with `export_gauge: true` publishes as a
  // protocol-state gauge, or null when the kind has none.
  virtual const Expr* GaugeField() const { return nullptr; }
  virtual std::unique_ptr<RuleState> NewState(size_t max_keys,
                                              OverflowPolicy policy) const = 0;
  // Kinds whose per-key state is plain data keyed by the rule's key can
  // keep it in a table shared with other rules of the same key
  // (rules/shared_key_table.h; the engine decides). SharedStateSize is the
  // state's size (0: cannot share); NewSharedState makes the state of
  // member `member` of `table`.
  virtual size_t SharedStateSize() const { return 0; }
  virtual std::unique_ptr<RuleState> NewSharedState(
      std::shared_ptr<SharedKeyTable> table, int member) const {
    return nullptr;
  }
};

// The loader's view given to a kind while it compiles. Every getter reports
// its own diagnostics (file:line:column of the offending YAML node) and
// returns nullopt/nullptr on error or absence; the kind adds semantic errors
// with Error().
class KindCompiler {
 public:
  virtual ~KindCompiler() = default;
  virtual bool Has(std::string_view field) const = 0;
  // `boolean`: the expression is a condition (must be bool-compatible).
  virtual std::unique_ptr<Expr> Expression(std::string_view field,
                                           bool required, bool boolean) = 0;
  virtual std::optional<bool> Bool(std::string_view field) = 0;
  virtual std::optional<int64_t> Int(std::string_view field, int64_t min,
                                     int64_t max) = 0;
  virtual std::optional<std::vector<std::string>> StringList(
      std::string_view field) = 0;
  // A map of scalar → list of scalars (transition graphs).
  virtual std::optional<
      std::vector<std::pair<std::string, std::vector<std::string>>>>
  StringListMap(std::string_view field) = 0;
  // `field` may be empty for an error about the rule as a whole.
  virtual void Error(std::string_view field, std::string message) = 0;
};

struct KindSpec {
  std::string_view name;
  std::vector<std::string_view> fields;  // kind-specific YAML fields
  std::function<std::unique_ptr<KindConfig>(KindCompiler&)> compile;
};

// The registry of kinds; the names are part of the output contract.
const KindSpec* FindKind(std::string_view name);
std::vector<std::string> KindNames();

// Evaluates a value-producing expression for a kind, mapping missing and
// type errors to an ObserveStatus.
inline ObserveStatus EvalValue(const Expr& expr, const Event& event,
                               Value* out) {
  const EvalResult r = expr.Eval(event);
  if (r.status == EvalStatus::kTypeError) return ObserveStatus::kTypeError;
  if (r.status == EvalStatus::kMissing || r.value.is_missing()) {
    return ObserveStatus::kMissing;
  }
  *out = r.value;
  return ObserveStatus::kOk;
}

// A RuleState over a KeyTable for kinds of this shape:
//   struct K {
//     using Config = ...; using State = ...;   // State: plain data
//     static ObserveStatus Extract(const Config&, const ObserveInput&,
//                                  Value* v);
//     static Hash128 TableKey(const Config&, const ObserveInput&,
//                             const Value& v);
//     static constexpr bool kTableKeyIsRuleKey;  // TableKey == in.key
//     static ObserveStatus Step(const Config&, State&, bool is_new,
//                               const Value& v, const ObserveInput&,
//                               std::optional<Finding>*);
//     static size_t HeapBytes(const State&);
//     // Only when State is not trivially copyable (checkpoints):
//     static void Encode(const State&, std::string* out);
//     static bool Decode(std::string_view* in, State* s);
//   };
//
// With kShared the keys live in a table shared with other rules of the same
// key (rules/shared_key_table.h) instead of one of the rule's own; only
// plain-data states can share one.
template <typename K, bool kShared = false>
class KeyedRuleState final : public RuleState {
 public:
  KeyedRuleState(const typename K::Config* config, size_t max_keys,
                 OverflowPolicy policy)
      : config_(config), table_(max_keys, policy) {}
  KeyedRuleState(const typename K::Config* config,
                 std::shared_ptr<SharedKeyTable> table, int member)
      : config_(config), table_(std::move(table), member) {}

  ObserveStatus Observe(const ObserveInput& in,
                        std::optional<Finding>* finding) override {
    Value v;
    const ObserveStatus st = K::Extract(*config_, in, &v);
    if (st != ObserveStatus::kOk) return st;
    const Hash128 key = K::TableKey(*config_, in, v);
    auto ref = table_.FindOrInsert(key);
    if (ref.state == nullptr) return ObserveStatus::kRejected;
    if constexpr (kOwnsHeap) {
      const size_t before = ref.inserted ? 0 : K::HeapBytes(*ref.state);
      const ObserveStatus r =
          K::Step(*config_, *ref.state, ref.inserted, v, in, finding);
      table_.AddHeapBytes(static_cast<int64_t>(K::HeapBytes(*ref.state)) -
                          static_cast<int64_t>(before));
      table_.NoteChanged(key);
      return r;
    } else {
      // Checkpoints record the keys whose state changed, not every key
      // looked at: most events leave most states as they were.
      const typename K::State before = *ref.state;
      const ObserveStatus r =
          K::Step(*config_, *ref.state, ref.inserted, v, in, finding);
      if (tracking_ &&
          (ref.inserted || std::memcmp(static_cast<const void*>(&before),
                                       static_cast<const void*>(ref.state),
                                       sizeof(before)) != 0)) {
        PutEntry(&log_, key, ref.state);
      }
      return r;
    }
  }

  void Rebind(const KindConfig* config) override {
    config_ = static_cast<const typename K::Config*>(config);
  }

  SharedKeyTable* shared_table() const override {
    if constexpr (kShared) return table_.shared();
    return nullptr;
  }
  void Discard() override {
    if constexpr (kShared) table_.Clear();
  }

  void Prefetch(const Hash128& key) const override {
    if constexpr (K::kTableKeyIsRuleKey) table_.Prefetch(key);
  }

  // O(1): the heap of the states is kept up to date as they change.
  TableStats Stats() const override {
    return TableStats{table_.size(), table_.Bytes(), table_.evicted(),
                      table_.rejected(), table_.budget_refusals()};
  }
  void SetBudget(MemoryBudget* budget) override { table_.SetBudget(budget); }
  void Reserve(size_t keys) override { table_.Reserve(keys); }

  void TrackChanges() override {
    table_.TrackChanges(/*on_touch=*/false);
    tracking_ = true;
    log_.clear();
    DropSlice();
  }

  // Image: layout tag, then (key, present, state) per entry; a state that
  // is trivially copyable is stored as its bytes. A full image is every
  // key. Otherwise: the slice (copied ahead by CaptureSlice, or now), then
  // the changes. Trivially copyable states log each change as it happens
  // (Observe), so their changes are that log -- in order, later entries of
  // a key win -- then the erasures: no lookup, sort or scan of the changed
  // keys. States that own heap are written once per changed key, as they
  // are at the checkpoint.
  size_t SaveState(const ImageSpec& spec, Pieces* out) override {
    std::string* to = out->tail();
    PutU64(to, LayoutTag());
    PutU8(to, spec.full ? 1 : 0);
    auto put = [&](const Hash128& key, const typename K::State* s) {
      PutEntry(to, key, s);
    };
    if (spec.full) {
      DropSlice();
      if constexpr (!kOwnsHeap) {
        log_.clear();
        table_.DrainErased([](const Hash128&) {});
      }
      return PutTableImage(table_, spec, to, put);
    }
    size_t slice_bytes = 0;
    if (!spec.slice) {
      DropSlice();  // copied before these changes: stale
    } else {
      if (!capturing_ || slice_first_ != spec.first ||
          slice_last_ != spec.last) {
        BeginSlice(spec.first, spec.last);
      }
      while (!CaptureSlice(SIZE_MAX)) {
      }
      slice_bytes = slice_.size();
      out->Adopt(std::move(slice_));
      slice_ = std::string();
      capturing_ = false;
      to = out->tail();
    }
    if constexpr (!kOwnsHeap) {
      // The log is moved into the image, not copied; the next one gets
      // room for as much (untouched pages cost nothing).
      const size_t used = log_.size();
      out->Adopt(std::move(log_));
      log_ = std::string();
      log_.reserve(std::min(used + used / 4, size_t{64} << 20));
      to = out->tail();
      table_.DrainErased([&](const Hash128& k) { put(k, nullptr); });
    } else {
      table_.DrainChanges(put);
    }
    return slice_bytes;
  }

  bool MigrateIdle(size_t steps) override { return table_.MigrateIdle(steps); }

  void BeginSlice(uint64_t first, uint64_t last) override {
    slice_.clear();
    capturing_ = first <= last;
    slice_first_ = slice_next_ = first;
    slice_last_ = last;
    slice_done_ = !capturing_;
  }

  bool CaptureSlice(size_t max_slots) override {
    if (!capturing_ || slice_done_) return true;
    // The hash width of `max_slots` home positions (a home is the top
    // bits of the hash), at least one.
    const size_t slots = std::max<size_t>(table_.capacity(), 1);
    const uint64_t per_slot = std::max<uint64_t>(UINT64_MAX / slots, 1);
    const uint64_t width = max_slots >= UINT64_MAX / per_slot
                               ? UINT64_MAX
                               : per_slot * static_cast<uint64_t>(max_slots);
    const uint64_t end = slice_last_ - slice_next_ < width
                             ? slice_last_
                             : slice_next_ + width - 1;
    table_.ForEachInRange(slice_next_, end,
                          [&](const Hash128& k, const typename K::State& s) {
                            PutEntry(&slice_, k, &s);
                          });
    if (end == slice_last_) {
      slice_done_ = true;
    } else {
      slice_next_ = end + 1;
    }
    return slice_done_;
  }

  bool RestoreErasures(std::string_view in) override {
    if (!SkipImageHeader(&in)) return false;
    return RestoreErasedEntries<typename K::State>(
        in, ReadState, [&](const Hash128& key) { table_.Erase(key); });
  }

  bool RestoreState(std::string_view in) override {
    if (!SkipImageHeader(&in)) return false;
    using State = typename K::State;
    return RestoreEntries<State>(
        in, ReadState,
        [&](const Hash128& key, State&& state) {
          auto ref = table_.FindOrInsert(key);
          if (ref.state == nullptr) return;  // over max_keys: counted
          if constexpr (kOwnsHeap) {
            const size_t before = ref.inserted ? 0 : K::HeapBytes(*ref.state);
            *ref.state = std::move(state);
            table_.AddHeapBytes(static_cast<int64_t>(K::HeapBytes(*ref.state)) -
                                static_cast<int64_t>(before));
          } else {
            *ref.state = state;
          }
        },
        [&](const Hash128& key) { table_.Erase(key); });
  }

  const auto& table() const { return table_; }

 private:
  static bool SkipImageHeader(std::string_view* in) {
    uint64_t tag = 0;
    uint8_t full = 0;
    return GetU64(in, &tag) && tag == LayoutTag() && GetU8(in, &full);
  }
  static bool ReadState(std::string_view* p, typename K::State* state) {
    if constexpr (kOwnsHeap) {
      return K::Decode(p, state);
    } else {
      return GetRaw(p, state);
    }
  }
  // Changes when the state's layout does (size; heap-owning or not).
  static constexpr uint64_t LayoutTag() {
    return 0x4b53'0000'0000'0000ULL | (uint64_t{kOwnsHeap} << 32) |
           sizeof(typename K::State);
  }
  static constexpr bool kOwnsHeap =
      !std::is_trivially_copyable_v<typename K::State>;
  // One append per entry: this runs for every change of a state (Observe)
  // and every key of a slice, so the appends' calls are most of its cost.
  static void PutEntry(std::string* out, const Hash128& key,
                       const typename K::State* s) {
    if constexpr (kOwnsHeap) {
      PutHash(out, key);
      PutU8(out, s != nullptr ? 1 : 0);
      if (s != nullptr) K::Encode(*s, out);
    } else {
      char b[17 + sizeof(typename K::State)];
      StoreHash(b, key);
      b[16] = s != nullptr ? 1 : 0;
      if (s == nullptr) {
        out->append(b, 17);
        return;
      }
      std::memcpy(b + 17, static_cast<const void*>(s), sizeof(*s));
      out->append(b, sizeof(b));
    }
  }
  struct HeapOf {
    size_t operator()(const typename K::State& s) const {
      return K::HeapBytes(s);
    }
  };
  void DropSlice() {
    slice_ = std::string();
    capturing_ = false;
  }

  static_assert(!kShared || !kOwnsHeap, "only plain states share tables");
  using Table = std::conditional_t<kShared, SharedMember<typename K::State>,
                                   KeyTable<typename K::State, HeapOf>>;

  const typename K::Config* config_;
  Table table_;
  bool tracking_ = false;
  std::string log_;  // changes since the last SaveState (trivial states)
  // The next image's slice, copied ahead (BeginSlice, CaptureSlice): the
  // entries of hashes [slice_first_, slice_next_) so far, all of them up to
  // slice_last_ once slice_done_.
  std::string slice_;
  bool capturing_ = false;
  bool slice_done_ = true;
  uint64_t slice_first_ = 0;
  uint64_t slice_next_ = 0;
  uint64_t slice_last_ = 0;
};

// The Config base of a kind K kept in a KeyedRuleState<K>: makes its
// states, and, for plain-data states, lets them share a table.
template <typename K>
class KeyedKindConfig : public KindConfig {
 public:
  std::unique_ptr<RuleState> NewState(size_t max_keys,
                                      OverflowPolicy p) const override {
    return std::make_unique<KeyedRuleState<K>>(Self(), max_keys, p);
  }
  size_t SharedStateSize() const override {
    if constexpr (std::is_trivially_copyable_v<typename K::State> &&
                  K::kTableKeyIsRuleKey && alignof(typename K::State) <= 8) {
      return sizeof(typename K::State);
    }
    return 0;
  }
  std::unique_ptr<RuleState> NewSharedState(
      std::shared_ptr<SharedKeyTable> table, int member) const override {
    if constexpr (std::is_trivially_copyable_v<typename K::State> &&
                  K::kTableKeyIsRuleKey && alignof(typename K::State) <= 8) {
      return std::make_unique<KeyedRuleState<K, true>>(Self(), std::move(table),
                                                       member);
    }
    return nullptr;
  }

 private:
  const typename K::Config* Self() const {
    return static_cast<const typename K::Config*>(this);
  }
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_KIND_H_
