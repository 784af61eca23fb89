#include "rules/engine.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace invariantd {

Engine::Engine(std::shared_ptr<const RuleSet> rules, EngineOptions options)
    : rules_(std::move(rules)), options_(options) {
  PlanSharedTables();
  for (size_t i = 0; i < rules_->rules().size(); ++i) {
    states_.push_back(NewState(i));
  }
  counters_.resize(rules_->rules().size());
  scratch_ = NewPrepared();
  window_ = RedeliveryWindow(options_.dedupe_window);
}

void Engine::PlanSharedTables() {
  const std::vector<Rule>& rules = rules_->rules();
  shared_of_.assign(rules.size(), nullptr);
  member_of_.assign(rules.size(), -1);
  if (!options_.share_tables) return;
  struct Group {
    const Rule* first = nullptr;
    std::vector<size_t> rules;
    std::vector<size_t> sizes;
    size_t bytes = 0;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& r = rules[i];
    if (r.when != nullptr || !r.config->NeedsKey()) continue;
    const size_t size = r.config->SharedStateSize();
    const size_t rounded = SharedKeyTable::RoundedSize(size, 8);
    if (rounded == 0) continue;
    Group* g = nullptr;
    for (Group& o : groups) {
      if (o.first->key_group == r.key_group &&
          o.first->max_keys == r.max_keys && o.first->overflow == r.overflow &&
          o.rules.size() < SharedKeyTable::kMaxMembers &&
          o.bytes + rounded <= SharedKeyTable::kMaxStateBytes) {
        g = &o;
        break;
      }
    }
    if (g == nullptr) {
      g = &groups.emplace_back();
      g->first = &r;
    }
    g->rules.push_back(i);
    g->sizes.push_back(size);
    g->bytes += rounded;
  }
  const size_t shards = options_.shards == 0 ? 1 : options_.shards;
  for (const Group& g : groups) {
    if (g.rules.size() < 2) continue;  // alone: a table of its own
    auto table = SharedKeyTable::Create(
        g.sizes, (g.first->max_keys + shards - 1) / shards, g.first->overflow);
    if (table == nullptr) continue;
    for (size_t m = 0; m < g.rules.size(); ++m) {
      shared_of_[g.rules[m]] = table;
      member_of_[g.rules[m]] = static_cast<int>(m);
    }
  }
}

std::unique_ptr<RuleState> Engine::NewState(size_t i) const {
  const Rule& r = rules_->rules()[i];
  const size_t shards = options_.shards == 0 ? 1 : options_.shards;
  std::unique_ptr<RuleState> s =
      shared_of_[i] != nullptr
          ? r.config->NewSharedState(shared_of_[i], member_of_[i])
          : r.config->NewState((r.max_keys + shards - 1) / shards, r.overflow);
  s->SetBudget(options_.budget.get());
  if (r.expected_keys > 0 && options_.reserve_expected_keys) {
    // Keys split over shards by hash: a shard's count varies by about its
    // square root, so shards get headroom (four standard deviations) and
    // do not grow just past their even share.
    size_t share = (r.expected_keys + shards - 1) / shards;
    if (shards > 1) {
      share += 4 * static_cast<size_t>(
                       std::ceil(std::sqrt(static_cast<double>(share))));
    }
    s->Reserve(share);
  }
  return s;
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

PreparedEvent Engine::NewPrepared() const {
  PreparedEvent p;
  p.key_hash.resize(rules_->key_groups());
  p.key_status.resize(rules_->key_groups());
  p.key_done.resize(rules_->key_groups());
  p.rule_status.resize(rules_->rules().size());
  p.rule_filtered.resize(rules_->rules().size());
  return p;
}

ObserveStatus Engine::PrepareRule(const Rule& rule, const Event& event,
                                  PreparedEvent* p, bool* filtered) {
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
  if (!p->key_done[g]) {
    p->key_done[g] = 1;
    p->key_status[g] = ObserveStatus::kOk;
    hasher_.Clear();
    for (const KeyField& k : rule.key) {
      const EvalResult r = k.expr->Eval(event);
      if (r.status == EvalStatus::kTypeError) {
        p->key_status[g] = ObserveStatus::kTypeError;
      } else if ((r.status == EvalStatus::kMissing || r.value.is_missing()) &&
                 p->key_status[g] == ObserveStatus::kOk) {
        p->key_status[g] = ObserveStatus::kMissing;
      }
      // Absent or unusable fields hash as "missing", so a stateless rule
      // still gets a stable key (and violation id) for the event.
      hasher_.Add(r.status == EvalStatus::kOk ? r.value : Value::Missing());
    }
    p->key_hash[g] = hasher_.Finish();
  }
  if (!rule.config->NeedsKey()) return ObserveStatus::kOk;
  return p->key_status[g];
}

void Engine::Prepare(const Event& event, PreparedEvent* p) {
  p->identity = Identity(event);
  window_.Prefetch(p->identity);
  std::fill(p->key_done.begin(), p->key_done.end(), 0);
  const std::vector<Rule>& rules = rules_->rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    bool filtered;
    p->rule_status[i] = PrepareRule(rules[i], event, p, &filtered);
    p->rule_filtered[i] = filtered;
    if (p->rule_status[i] == ObserveStatus::kOk && !filtered) {
      states_[i]->Prefetch(p->key_hash[rules[i].key_group]);
    }
  }
}

void Engine::PrefetchState(const PreparedEvent& p, const uint8_t* mask) const {
  const std::vector<Rule>& rules = rules_->rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    if ((mask == nullptr || mask[i] != 0) &&
        p.rule_status[i] == ObserveStatus::kOk && !p.rule_filtered[i]) {
      states_[i]->Prefetch(p.key_hash[rules[i].key_group]);
    }
  }
}

bool Engine::Process(const Event& event, std::vector<Violation>* out) {
  if (scratch_.rule_status.size() != rules_->rules().size()) {
    scratch_ = NewPrepared();
  }
  Prepare(event, &scratch_);
  return Commit(event, scratch_, out);
}

bool Engine::IsRedelivery(const Hash128& identity) {
  ++events_;
  if (!window_.SeenOrTake(identity)) return false;
  ++redelivered_;
  return true;
}

bool Engine::Commit(const Event& event, const PreparedEvent& p,
                    std::vector<Violation>* out) {
  if (IsRedelivery(p.identity)) return false;
  Evaluate(event, p, nullptr, out);
  return true;
}

void Engine::Evaluate(const Event& event, const PreparedEvent& p,
                      const uint8_t* mask, std::vector<Violation>* out) {
  ObserveInput in;
  in.event = &event;
  in.identity = p.identity;
  const std::vector<Rule>& rules = rules_->rules();
  // One for all rules: GCC zero-fills a fresh optional<Finding> (176
  // bytes, `rep stos`), which cost 2.5% of replay when it was made per rule.
  std::optional<Finding> finding;
  for (size_t i = 0; i < rules.size(); ++i) {
    if (mask != nullptr && mask[i] == 0) continue;
    const Rule& rule = rules[i];
    RuleCounters& c = counters_[i];
    if (p.rule_filtered[i]) {
      ++c.filtered;
      continue;
    }
    ObserveStatus st = p.rule_status[i];
    finding.reset();
    if (st == ObserveStatus::kOk) {
      in.key = p.key_hash[rule.key_group];
      st = states_[i]->Observe(in, &finding);
    }
    if (st == ObserveStatus::kOk && rule.export_gauge && options_.on_gauge) {
      PublishGauge(rule, event);
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
}

Violation Engine::MakeViolation(const Rule& rule, const Event& event,
                                const Hash128& key, Finding f) {
  Violation v;
  v.id = MakeViolationId(rule.name, key, event.position);
  v.rule = rule.name;
  v.kind = rule.kind;
  v.severity = rule.severity;
  v.reason = std::move(f.reason);
  v.message = std::move(f.message);
  for (const KeyField& k : rule.key) {
    const EvalResult r = k.expr->Eval(event);
    v.key.emplace_back(
        k.name,
        OwnedValue(r.status == EvalStatus::kOk ? r.value : Value::Missing()));
  }
  v.source = std::string(event.position.source);
  v.line = event.position.line;
  v.offset = event.position.offset;
  v.stream = event.position.stream;
  v.observed = OwnedValue(f.observed);
  v.previous = std::move(f.previous);
  v.previous_line = f.previous_line;
  v.witness = std::string(event.raw);
  v.description = rule.description;
  v.runbook = rule.runbook;
  v.labels = rule.labels;
  return v;
}

void Engine::PublishGauge(const Rule& rule, const Event& event) {
  const EvalResult v = rule.config->GaugeField()->Eval(event);
  if (v.status != EvalStatus::kOk || !v.value.is_number()) return;
  std::string key;
  for (const KeyField& k : rule.key) {
    const EvalResult r = k.expr->Eval(event);
    if (!key.empty()) key.push_back(',');
    key += r.status == EvalStatus::kOk ? r.value.ToText() : "";
  }
  options_.on_gauge(rule.name, key, v.value.AsDouble());
}

std::vector<std::string> Engine::TakeStateFrom(Engine& old) {
  std::vector<std::string> carried;
  std::vector<const SharedKeyTable*> kept_tables;
  const std::vector<Rule>& now = rules_->rules();
  const std::vector<Rule>& before = old.rules_->rules();
  for (size_t i = 0; i < now.size(); ++i) {
    for (size_t j = 0; j < before.size(); ++j) {
      if (before[j].name == now[i].name && before[j].digest == now[i].digest &&
          old.states_[j] != nullptr) {
        states_[i] = std::move(old.states_[j]);
        if (SharedKeyTable* t = states_[i]->shared_table()) {
          kept_tables.push_back(t);
        }
        states_[i]->Rebind(now[i].config.get());
        states_[i]->SetBudget(options_.budget.get());
        counters_[i] = old.counters_[j];
        carried.push_back(now[i].name);
        break;
      }
    }
  }
  // A table planned for this engine that lost a member to a carried state
  // is not used as planned: its other members get tables of their own
  // (their fresh states were sized, and charged, for the whole table).
  std::vector<const SharedKeyTable*> broken;
  for (size_t i = 0; i < now.size(); ++i) {
    if (shared_of_[i] != nullptr &&
        states_[i]->shared_table() != shared_of_[i].get()) {
      broken.push_back(shared_of_[i].get());  // i's state was carried
    }
  }
  for (size_t i = 0; i < now.size(); ++i) {
    if (shared_of_[i] == nullptr ||
        std::find(broken.begin(), broken.end(), shared_of_[i].get()) ==
            broken.end()) {
      continue;
    }
    const bool fresh = states_[i]->shared_table() == shared_of_[i].get();
    shared_of_[i] = nullptr;
    member_of_[i] = -1;
    if (fresh) states_[i] = NewState(i);
  }
  // A rule left behind takes its keys out of a table that rules carried
  // over still use.
  for (auto& st : old.states_) {
    if (st != nullptr && st->shared_table() != nullptr &&
        std::find(kept_tables.begin(), kept_tables.end(), st->shared_table()) !=
            kept_tables.end()) {
      st->Discard();
    }
  }
  if (options_.dedupe_window == old.options_.dedupe_window) {
    window_ = std::move(old.window_);
    window_saved_ = old.window_saved_;
  }
  events_ = old.events_;
  redelivered_ = old.redelivered_;
  return carried;
}

namespace {
constexpr uint64_t kEngineImageTag = 0x31474e45'00000001ULL;  // "ENG1", v1
}  // namespace

void Engine::TrackChanges() {
  for (auto& st : states_) st->TrackChanges();
  window_saved_ = window_.taken();
  capture_rule_ = states_.size();  // no slice to copy ahead
}

size_t Engine::SaveState(const ImageSpec& spec, Pieces* pieces) {
  const bool full = spec.full;
  size_t slice_bytes = 0;
  std::string* out = pieces->tail();
  PutU64(out, kEngineImageTag);
  PutU8(out, full ? 1 : 0);
  const std::vector<Rule>& rules = rules_->rules();
  uint64_t stateful = 0;
  // Patched below (by position: the rules' images may add pieces).
  auto place = [&] {
    std::string* at = pieces->tail();
    std::pair<size_t, size_t> where{pieces->pieces().size() - 1, at->size()};
    PutU64(at, 0);
    return where;
  };
  auto patch = [&](std::pair<size_t, size_t> where, uint64_t v) {
    std::string bytes;
    PutU64(&bytes, v);
    pieces->piece(where.first)->replace(where.second, 8, bytes);
  };
  const auto count_at = place();  // number of rule sections
  for (size_t i = 0; i < rules.size(); ++i) {
    std::string* head = pieces->tail();
    const size_t section_at = head->size();
    PutBytes(head, rules[i].name);
    PutHash(head, rules[i].digest);
    const auto length_at = place();
    const size_t before = pieces->size();
    slice_bytes += states_[i]->SaveState(spec, pieces);
    const size_t length = pieces->size() - before;
    if (length == 0) {  // stateless: nothing was added after the header
      head->resize(section_at);
      continue;
    }
    patch(length_at, length);
    ++stateful;
  }
  patch(count_at, stateful);
  out = pieces->tail();
  // The window: the identities taken in since the last image, oldest
  // first; all of the ring when full, and with the first slice of a round
  // (a restore starts there: the older identities are in no later image).
  const uint64_t size = window_.capacity();
  const uint64_t taken = window_.taken();
  const bool whole = full || (spec.slice && spec.first == 0);
  uint64_t n = whole ? std::min<uint64_t>(taken, size)
                     : std::min<uint64_t>(taken - window_saved_, size);
  PutU64(out, n);
  // Written in place: tens of thousands of identities per checkpoint, on
  // the dispatcher's thread, which dispatches nothing meanwhile.
  const size_t at = out->size();
  out->resize(at + n * 16);
  char* p = out->data() + at;
  window_.ForNewest(n, [&](const Hash128& id) {
    StoreHash(p, id);
    p += 16;
  });
  window_saved_ = taken;
  return slice_bytes;
}

void Engine::BeginSlice(const ImageSpec& next) {
  if (next.full || !next.slice) {
    capture_rule_ = states_.size();  // nothing to copy ahead
    return;
  }
  capture_rule_ = 0;
  for (auto& st : states_) st->BeginSlice(next.first, next.last);
}

bool Engine::CaptureSlice(size_t max_slots) {
  // One rule's step per call: a call costs at most about max_slots slots.
  if (capture_rule_ < states_.size() &&
      states_[capture_rule_]->CaptureSlice(max_slots)) {
    ++capture_rule_;  // done (or nothing to copy): the next rule's turn
  }
  return capture_rule_ >= states_.size();
}

bool Engine::MigrateIdle(size_t steps) {
  // One table's step per call (the members of a shared table would each
  // step it): a call moves at most about `steps` slots.
  for (auto& st : states_) {
    if (!st->MigrateIdle(steps)) return false;
  }
  return true;
}

absl::Status Engine::RestoreState(std::string_view in,
                                  std::vector<std::string>* skipped,
                                  std::vector<std::string>* discarded) {
  uint64_t tag = 0, sections = 0;
  uint8_t full = 0;
  auto bad = [] {
    return absl::DataLossError("rule state image is truncated or malformed");
  };
  if (!GetU64(&in, &tag) || tag != kEngineImageTag || !GetU8(&in, &full) ||
      !GetU64(&in, &sections)) {
    return absl::DataLossError("not a rule state image of this version");
  }
  const std::vector<Rule>& rules = rules_->rules();
  std::vector<std::pair<size_t, std::string_view>> found;  // rule, image
  for (uint64_t s = 0; s < sections; ++s) {
    std::string_view name, image;
    Hash128 digest;
    if (!GetBytes(&in, &name) || !GetHash(&in, &digest) ||
        !GetBytes(&in, &image)) {
      return bad();
    }
    size_t i = 0;
    while (i < rules.size() &&
           !(rules[i].name == name && rules[i].digest == digest)) {
      ++i;
    }
    if (i == rules.size()) {
      if (std::find(skipped->begin(), skipped->end(), name) == skipped->end()) {
        skipped->emplace_back(name);
      }
      continue;
    }
    if (std::find(discarded->begin(), discarded->end(), name) !=
        discarded->end()) {
      continue;  // its base was unreadable: later changes mean nothing
    }
    found.emplace_back(i, image);
  }
  // Every rule's erasures first: rules that share a table drop the keys
  // they all lost before any restores the keys it gained.
  for (const auto& [i, image] : found) states_[i]->RestoreErasures(image);
  for (const auto& [i, image] : found) {
    if (!states_[i]->RestoreState(image)) {
      ResetState(i);
      const std::string& name = rules[i].name;
      if (std::find(discarded->begin(), discarded->end(), name) ==
          discarded->end()) {
        discarded->emplace_back(name);
      }
    }
  }
  uint64_t n = 0;
  if (!GetU64(&in, &n) || n > in.size() / 16) return bad();
  for (uint64_t k = 0; k < n; ++k) {
    Hash128 id;
    if (!GetHash(&in, &id)) return bad();
    window_.SeenOrTake(id);
  }
  if (!in.empty()) return bad();
  return absl::OkStatus();
}

void Engine::ResetRules(const std::vector<std::string>& names) {
  const std::vector<Rule>& rules = rules_->rules();
  for (size_t i = 0; i < rules.size(); ++i) {
    if (std::find(names.begin(), names.end(), rules[i].name) == names.end()) {
      continue;
    }
    ResetState(i);
  }
}

void Engine::ResetState(size_t i) {
  states_[i]->Discard();
  states_[i].reset();  // gone before its successor takes its place
  states_[i] = NewState(i);
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
