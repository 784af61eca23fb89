// Engine: evaluates a RuleSet over a stream of decoded events and produces
// Violations. Owns all per-key state for the rule set.
//
// Per event: (1) its identity (the rule set's `id` expression, or a hash of
// the raw bytes) is checked against a bounded window of recent identities;
// a redelivered event is counted and skipped before any rule sees it.
// (2) For every rule: `when` filters; the key tuple is evaluated and hashed
// (once per distinct key tuple, shared between rules); the kind's state
// machine observes the event. A rule that reads an absent field does not
// apply to the event (counted as skipped_missing); a field of the wrong type
// is counted as skipped_type; both are per rule.
//
// Thread-safety: an Engine is used by one thread. Several engines may share
// one RuleSet. The RuleSet must outlive the engine (held by shared_ptr).
#ifndef INVARIANTD_RULES_ENGINE_H_
#define INVARIANTD_RULES_ENGINE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "rules/kind.h"
#include "rules/memory_budget.h"
#include "rules/redelivery_window.h"
#include "rules/rule_set.h"
#include "sidecar/core/event.h"
#include "sidecar/core/violation.h"

namespace invariantd {

struct EngineOptions {
  // How many recent event identities are remembered for redelivery
  // detection (0 disables it).
  size_t dedupe_window = 1 << 16;
  // When a rule's keys are split over this many engines (sharded
  // evaluation), each engine tracks at most ceil(max_keys / shards) of them
  // so the rule's total stays within its max_keys.
  size_t shards = 1;
  // Called for rules with `export_gauge: true` after each event they
  // judged: (rule name, key values joined by ",", the field's value).
  std::function<void(std::string_view, std::string_view, double)> on_gauge;
  // One memory budget for the state of every rule of every engine that
  // shares it (rules/memory_budget.h); null: only max_keys bounds a rule.
  std::shared_ptr<MemoryBudget> budget;
  // Size each rule's state for its share of the rule's expected_keys at
  // the start. False for an engine whose rule states stay empty (the
  // pipeline's dispatcher only prepares events and detects redeliveries).
  bool reserve_expected_keys = true;
  // Rules keyed by the same key tuple, with the same max_keys and overflow
  // policy, no `when`, and plain-data state keep their keys in one shared
  // table (rules/shared_key_table.h): one lookup per event for all of them.
  // False gives every rule a table of its own (tests compare the two).
  bool share_tables = true;
};

struct RuleCounters {
  uint64_t evaluated = 0;        // events the rule applied to
  uint64_t filtered = 0;         // events its `when` excluded
  uint64_t skipped_missing = 0;  // a field it reads was absent
  uint64_t skipped_type = 0;     // a field had an unusable type
  uint64_t rejected = 0;         // no room for a new key (lost coverage)
  uint64_t redelivered = 0;      // `unique`: same event seen again
  uint64_t violations = 0;
};

struct RuleStats {
  const Rule* rule = nullptr;
  RuleCounters counters;
  TableStats table;
};

// The result of Engine::Prepare for one event: its identity, and per rule
// whether it applies and under which key. Plain scratch, reused between
// events; create one with Engine::NewPrepared().
struct PreparedEvent {
  Hash128 identity;
  std::vector<Hash128> key_hash;           // by key group
  std::vector<ObserveStatus> key_status;   // by key group
  std::vector<uint8_t> key_done;           // by key group: computed?
  std::vector<ObserveStatus> rule_status;  // by rule
  std::vector<uint8_t> rule_filtered;      // by rule
};

class Engine {
 public:
  explicit Engine(std::shared_ptr<const RuleSet> rules,
                  EngineOptions options = {});

  // Evaluates one event; appends its violations to `out` (in rule order).
  // Returns false when the event was a redelivery and was skipped.
  // Equivalent to Prepare followed by Commit.
  bool Process(const Event& event, std::vector<Violation>* out);

  // Two-stage form for pipelining: Prepare reads only the event and the
  // (immutable) rules -- identity, filters, keys -- and prefetches the
  // state every rule will touch; it changes no state. Commit then runs the
  // state machines. A caller may Prepare event N+1 before committing event
  // N (both events must stay valid) so that N+1's memory loads overlap N's
  // work; Commit must still be called in input order.
  PreparedEvent NewPrepared() const;
  void Prepare(const Event& event, PreparedEvent* p);
  bool Commit(const Event& event, const PreparedEvent& p,
              std::vector<Violation>* out);

  // The parts of Commit, for sharded evaluation (sidecar/pipeline): one
  // engine checks redelivery for the whole stream, then each shard's engine
  // evaluates only the rules it owns for the event (`mask[i]` non-zero;
  // null mask: all rules).
  bool IsRedelivery(const Hash128& identity);
  void Evaluate(const Event& event, const PreparedEvent& p, const uint8_t* mask,
                std::vector<Violation>* out);
  // Starts loading the state Evaluate(p, mask) will touch, so that a shard
  // can overlap the cache misses of the next events with its current work
  // (Prepare prefetches the preparing engine's own state, which a shard's
  // is not). Changes nothing.
  void PrefetchState(const PreparedEvent& p, const uint8_t* mask) const;

  // Rule reload: takes over the state of every rule of `old` whose
  // definition is unchanged (same name and digest) -- its keys, counters
  // and table -- and the redelivery window. Rules that are new or changed
  // start fresh. Returns the names of the rules whose state carried over.
  // `old` must not be used afterwards except to be destroyed.
  std::vector<std::string> TakeStateFrom(Engine& old);

  // Checkpoints (sidecar/pipeline). TrackChanges starts recording what
  // changes; SaveState appends an image of the changes since the previous
  // SaveState (of everything when `full`): per stateful rule its name,
  // digest and state image, then the identities the redelivery window
  // took in. RestoreState applies images in the order they were written
  // (the full one first). A rule that is no longer in the rule set, or
  // whose definition changed (digest), is skipped and named in `*skipped`;
  // a rule whose image this build cannot read starts empty and is named in
  // `*discarded`. Error: bytes that are not an engine image.
  void TrackChanges();
  // Returns the bytes the rules' slices (or full images) took.
  size_t SaveState(const ImageSpec& spec, Pieces* out);
  // The slice of the next SaveState, copied ahead a step at a time so that
  // SaveState does not stop the thread for the scan (RuleState::BeginSlice):
  // BeginSlice names it (`next`: the spec that SaveState will get; nothing
  // for a full one), each CaptureSlice copies about `max_slots` table slots
  // of one rule's share and returns true once every rule's is copied.
  void BeginSlice(const ImageSpec& next);
  bool CaptureSlice(size_t max_slots);

  // Idle work: moves up to about `steps` slots of a rule table's growth
  // still in progress (RuleState::MigrateIdle; one table per call), for a
  // worker with nothing to evaluate; true once no table is migrating. A table
  // migrates a few slots per lookup otherwise, so one that grew just before the
  // input went quiet would hold its old array until events arrive.
  bool MigrateIdle(size_t steps);
  absl::Status RestoreState(std::string_view in,
                            std::vector<std::string>* skipped,
                            std::vector<std::string>* discarded);

  // Empties the state of the named rules (e.g. one whose image was
  // unreadable on another worker: a rule is restored everywhere or
  // nowhere).
  void ResetRules(const std::vector<std::string>& names);

  uint64_t events() const { return events_; }
  uint64_t redelivered_events() const { return redelivered_; }
  std::vector<RuleStats> Stats() const;
  const RuleSet& rules() const { return *rules_; }

 private:
  // A fresh state for rule `i`, with its share of max_keys and the budget.
  std::unique_ptr<RuleState> NewState(size_t i) const;
  // Drops rule i's state for a fresh one (keys it shared go too).
  void ResetState(size_t i);
  // Which rules share a table (options_.share_tables): shared_of_[i] and
  // member_of_[i], null for a rule with a table of its own.
  void PlanSharedTables();
  Hash128 Identity(const Event& event);
  void PublishGauge(const Rule& rule, const Event& event);
  // `when` and key for one rule. Returns kOk when the rule applies; its key
  // hash is then in p->key_hash[rule.key_group].
  ObserveStatus PrepareRule(const Rule& rule, const Event& event,
                            PreparedEvent* p, bool* filtered);
  Violation MakeViolation(const Rule& rule, const Event& event,
                          const Hash128& key, Finding finding);

  std::shared_ptr<const RuleSet> rules_;
  EngineOptions options_;
  std::vector<std::shared_ptr<SharedKeyTable>> shared_of_;
  std::vector<int> member_of_;
  std::vector<std::unique_ptr<RuleState>> states_;
  std::vector<RuleCounters> counters_;
  PreparedEvent scratch_;  // for Process()
  TupleHasher hasher_;
  RedeliveryWindow window_;
  uint64_t window_saved_ = 0;  // window_.taken() as of the last SaveState
  size_t capture_rule_ = 0;    // CaptureSlice: the rule it is copying
  uint64_t events_ = 0;
  uint64_t redelivered_ = 0;
};

}  // namespace invariantd

#endif  // INVARIANTD_RULES_ENGINE_H_
