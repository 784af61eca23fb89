#include "rules/engine.h"

#include <utility>

namespace invariantd {

Engine::Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options)
    : rules_(std::move(rules)), options_(options) {
  for (const Rule& r : rules_->rules()) {
    states_.push_back(r.config->NewState(r.max_keys, r.overflow));
  }
  counters_.resize(rules_->rules().size());
  key_epoch_.assign(rules_->key_groups(), 0);
  key_hash_.resize(rules_->key_groups());
  key_status_.resize(rules_->key_groups());
  rule_status_.resize(rules_->rules().size());
  rule_filtered_.resize(rules_->rules().size());
  ring_.resize(options_.dedupe_window);
}

Hash128 Engine::Identity(const Event& event) {
  if (const Expr* id = rules_->event_id()) {
    const EvalResult r = id->Eval(event);
    if (r.status == EvalStatus::kOk && !r.value.is_missing()) {
      hasher_.Clear();
      hasher_.Add(r.value);
      return hasher_.Finish();
    }
  }
  return HashBytes(event.raw);
}

bool Engine::SeenRecently(const Hash128& id) {
  if (options_.dedupe_window == 0) return false;
  if (recent_.contains(id)) return true;
  Hash128& slot = ring_[ring_next_];
  if (slot != Hash128{}) recent_.erase(slot);
  slot = id;
  recent_.insert(id);
  ring_next_ = (ring_next_ + 1) % ring_.size();
  return false;
}

ObserveStatus Engine::Prepare(const Rule& rule, const Event& event,
                              bool* filtered) {
  *filtered = false;
  if (rule.when != nullptr) {
    const EvalResult w = rule.when->Eval(event);
    if (w.status == EvalStatus::kMissing) return ObserveStatus::kMissing;
    if (w.status == EvalStatus::kTypeError || !w.value.is_bool()) {
      return ObserveStatus::kTypeError;
    }
    if (!w.value.bool_value()) {
      *filtered = true;
      return ObserveStatus::kOk;
    }
  }
  const int g = rule.key_group;
  if (key_epoch_[g] != epoch_) {
    key_epoch_[g] = epoch_;
    key_status_[g] = ObserveStatus::kOk;
    hasher_.Clear();
    for (const KeyField& k : rule.key) {
      const EvalResult r = k.expr->Eval(event);
      if (r.status != EvalStatus::kOk || r.value.is_missing()) {
        key_status_[g] = r.status == EvalStatus::kTypeError
                             ? ObserveStatus::kTypeError
                             : ObserveStatus::kMissing;
        break;
      }
      hasher_.Add(r.value);
    }
    key_hash_[g] = hasher_.Finish();
  }
  return key_status_[g];
}

bool Engine::Process(const Event& event, std::vector<Violation>* out) {
  ++events_;
  ObserveInput in;
  in.event = &event;
  in.identity = Identity(event);
  if (options_.dedupe_window != 0) recent_.prefetch(in.identity);
  ++epoch_;
  const std::vector<Rule>& rules = rules_->rules();
  // Pass 1: filters and keys, prefetching every table slot the event needs
  // so that the cache misses of all rules overlap.
  for (size_t i = 0; i < rules.size(); ++i) {
    bool filtered;
    rule_status_[i] = Prepare(rules[i], event, &filtered);
    rule_filtered_[i] = filtered;
    if (rule_status_[i] == ObserveStatus::kOk && !filtered) {
      states_[i]->Prefetch(key_hash_[rules[i].key_group]);
    }
  }
  if (SeenRecently(in.identity)) {
    ++redelivered_;
    return false;
  }
  // Pass 2: the state machines, in rule order.
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& rule = rules[i];
    RuleCounters& c = counters_[i];
    if (rule_filtered_[i]) {
      ++c.filtered;
      continue;
    }
    ObserveStatus st = rule_status_[i];
    std::optional<Finding> finding;
    if (st == ObserveStatus::kOk) {
      in.key = key_hash_[rule.key_group];
      st = states_[i]->Observe(in, &finding);
    }
    switch (st) {
      case ObserveStatus::kOk:
        ++c.evaluated;
        break;
      case ObserveStatus::kMissing:
        ++c.skipped_missing;
        break;
      case ObserveStatus::kTypeError:
        ++c.skipped_type;
        break;
      case ObserveStatus::kRejected:
        ++c.rejected;
        break;
      case ObserveStatus::kRedelivered:
        ++c.evaluated;
        ++c.redelivered;
        break;
    }
    if (finding.has_value()) {
      ++c.violations;
      out->push_back(MakeViolation(rule, event, in.key, std::move(*finding)));
    }
  }
  return true;
}

Violation Engine::MakeViolation(const Rule& rule, const Event& event,
                                const Hash128& key, Finding f) {
  Violation v;
  v.id = MakeViolationId(rule.name, key, event.position.source,
                         event.position.offset);
  v.rule = rule.name;
  v.kind = rule.kind;
  v.severity = rule.severity;
  v.reason = std::move(f.reason);
  v.message = std::move(f.message);
  for (const KeyField& k : rule.key) {
    v.key.emplace_back(k.name, OwnedValue(k.expr->Eval(event).value));
  }
  v.source = std::string(event.position.source);
  v.line = event.position.line;
  v.offset = event.position.offset;
  v.observed = OwnedValue(f.observed);
  v.previous = std::move(f.previous);
  v.previous_line = f.previous_line;
  v.witness = std::string(event.raw);
  v.description = rule.description;
  v.runbook = rule.runbook;
  v.labels = rule.labels;
  return v;
}

std::vector<RuleStats> Engine::Stats() const {
  std::vector<RuleStats> out;
  const std::vector<Rule>& rules = rules_->rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    out.push_back(RuleStats{&rules[i], counters_[i], states_[i]->Stats()});
  }
  return out;
}

}  // namespace invariantd
