#include "exporters/prometheus/metrics.h"

#include <exception>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"

namespace invariantd {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;

namespace {

std::string Label(std::string_view value,
                  size_t cap = Metrics::kMaxLabelValueBytes) {
  return SanitizeText(value, cap);
}

// Bucket bounds for per-event rule evaluation, in seconds (1us .. 1s).
Histogram::BucketBoundaries EvalBuckets() {
  return {1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4,
          5e-4, 1e-3,   2.5e-3, 5e-3, 1e-2,   0.1,  1.0};
}

// Bucket bounds for a transaction with an fsync, in seconds (50us .. 5s).
Histogram::BucketBoundaries CommitBuckets() {
  return {5e-5,   1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
          2.5e-2, 5e-2, 0.1,    0.25, 0.5,  1.0,    5.0};
}

}  // namespace

struct Metrics::Impl {
  explicit Impl(const std::string& version, size_t max_series)
      : registry(std::make_shared<prometheus::Registry>()),
        max_protocol_series(max_series),
        build_info(prometheus::BuildGauge()
                       .Name("invariantd_build_info")
                       .Help("Build information; the value is always 1.")
                       .Register(*registry)),
        source_events(prometheus::BuildCounter()
                          .Name("invariantd_source_events_total")
                          .Help("Records read from a source.")
                          .Register(*registry)),
        source_rejected(prometheus::BuildCounter()
                            .Name("invariantd_source_rejected_total")
                            .Help("Records a source rejected, by reason.")
                            .Register(*registry)),
        source_redelivered(
            prometheus::BuildCounter()
                .Name("invariantd_source_redelivered_total")
                .Help("Redelivered records recognized and not re-applied.")
                .Register(*registry)),
        source_lag_bytes(prometheus::BuildGauge()
                             .Name("invariantd_source_lag_bytes")
                             .Help("Bytes of a source not yet read.")
                             .Register(*registry)),
        kafka_lag(prometheus::BuildGauge()
                      .Name("invariantd_kafka_consumer_lag_messages")
                      .Help("Messages of a Kafka partition not yet consumed.")
                      .Register(*registry)),
        rule_violations(prometheus::BuildCounter()
                            .Name("invariantd_rule_violations_total")
                            .Help("Violations found, by rule and severity.")
                            .Register(*registry)),
        rule_eval(prometheus::BuildHistogram()
                      .Name("invariantd_rule_eval_duration_seconds")
                      .Help("Time to evaluate the rules on one event.")
                      .Register(*registry)
                      .Add({}, EvalBuckets())),
        evidence_commit(
            prometheus::BuildHistogram()
                .Name("invariantd_evidence_commit_duration_seconds")
                .Help("Time of one evidence transaction, fsync included.")
                .Register(*registry)
                .Add({}, CommitBuckets())),
        state_checkpoint(
            prometheus::BuildHistogram()
                .Name("invariantd_state_checkpoint_duration_seconds")
                .Help("Time to write rule-state checkpoints to state.db, "
                      "fsync included.")
                .Register(*registry)
                .Add({}, CommitBuckets())),
        state_pause(
            prometheus::BuildHistogram()
                .Name("invariantd_state_checkpoint_pause_seconds")
                .Help("Time a worker paused evaluation to hand its rule "
                      "state to a checkpoint.")
                .Register(*registry)
                .Add({}, CommitBuckets())),
        rule_keys(prometheus::BuildGauge()
                      .Name("invariantd_rule_keys")
                      .Help("Keys a rule tracks state for.")
                      .Register(*registry)),
        rule_overflow(
            prometheus::BuildCounter()
                .Name("invariantd_rule_overflow_total")
                .Help("Keys a rule evicted or refused at its key limit "
                      "(lost coverage).")
                .Register(*registry)),
        redactions(prometheus::BuildCounter()
                       .Name("invariantd_redactions_total")
                       .Help("Matches replaced by a redaction rule.")
                       .Register(*registry)),
        rule_state_bytes(prometheus::BuildGauge()
                             .Name("invariantd_rule_state_bytes")
                             .Help("Memory held by a rule's state.")
                             .Register(*registry)),
        rule_budget_refusals(
            prometheus::BuildCounter()
                .Name("invariantd_rule_budget_refusals_total")
                .Help("New keys a rule could not track because the state "
                      "memory budget was spent (also in "
                      "invariantd_rule_overflow_total).")
                .Register(*registry)),
        state_budget(prometheus::BuildGauge()
                         .Name("invariantd_state_budget_bytes")
                         .Help("Memory budget for the state of all rules "
                               "(0: none).")
                         .Register(*registry)
                         .Add({})),
        state_budget_used(prometheus::BuildGauge()
                              .Name("invariantd_state_budget_used_bytes")
                              .Help("Rule state memory charged to the budget.")
                              .Register(*registry)
                              .Add({})),
        rule_skipped(prometheus::BuildCounter()
                         .Name("invariantd_rule_skipped_total")
                         .Help("Events a rule could not evaluate, by reason.")
                         .Register(*registry)),
        queue_depth(prometheus::BuildGauge()
                        .Name("invariantd_queue_depth")
                        .Help("Records waiting in a pipeline queue.")
                        .Register(*registry)),
        admission_rejected(
            prometheus::BuildCounter()
                .Name("invariantd_rejected_requests_due_to_admission_"
                      "control_total")
                .Help("Requests refused because a queue was full.")
                .Register(*registry)),
        checkpoint_age(prometheus::BuildGauge()
                           .Name("invariantd_checkpoint_age_seconds")
                           .Help("Seconds since the last committed checkpoint.")
                           .Register(*registry)
                           .Add({})),
        reloads(prometheus::BuildCounter()
                    .Name("invariantd_config_reloads_total")
                    .Help("Configuration reloads, by result.")
                    .Register(*registry)),
        last_reload_ok(
            prometheus::BuildGauge()
                .Name("invariantd_config_last_reload_successful")
                .Help("1 when the last configuration reload succeeded.")
                .Register(*registry)
                .Add({})),
        http_requests(prometheus::BuildCounter()
                          .Name("invariantd_http_requests_total")
                          .Help("HTTP requests served, by status code.")
                          .Register(*registry)),
        http_unauthorized(
            prometheus::BuildCounter()
                .Name("invariantd_http_unauthorized_total")
                .Help("HTTP requests refused for their bearer token (401, "
                      "403), by scope and reason.")
                .Register(*registry)),
        protocol_state(
            prometheus::BuildGauge()
                .Name("invariantd_protocol_state")
                .Help("Last value of a tracked protocol quantity per key.")
                .Register(*registry)),
        protocol_dropped(
            prometheus::BuildCounter()
                .Name("invariantd_protocol_state_series_dropped_total")
                .Help("Protocol state updates dropped at the series cap.")
                .Register(*registry)
                .Add({})),
        evidence_records(
            prometheus::BuildCounter()
                .Name("invariantd_evidence_records_total")
                .Help("Violations committed to the evidence store "
                      "(result=stored), or found already stored "
                      "(result=duplicate: a re-evaluation after a restart).")
                .Register(*registry)),
        evidence_failures(
            prometheus::BuildCounter()
                .Name("invariantd_evidence_commit_failures_total")
                .Help("Failed evidence commits (retried; nothing waiting on "
                      "them is acknowledged).")
                .Register(*registry)),
        evidence_wal_checkpoints(
            prometheus::BuildCounter()
                .Name("invariantd_evidence_wal_checkpoints_total")
                .Help("Background copies of the evidence WAL into the "
                      "database: complete, partial (a reader held an older "
                      "snapshot; retried) or failed (I/O error).")
                .Register(*registry)),
        evidence_pending(prometheus::BuildGauge()
                             .Name("invariantd_evidence_pending")
                             .Help("Violations waiting to be committed.")
                             .Register(*registry)
                             .Add({})),
        alert_notifications(
            prometheus::BuildCounter()
                .Name("invariantd_alert_notifications_total")
                .Help("Alert outbox notifications delivered to a sink "
                      "(result=grouped: folded into another's delivery).")
                .Register(*registry)),
        alert_deliveries(prometheus::BuildCounter()
                             .Name("invariantd_alert_deliveries_total")
                             .Help("Successful POSTs to an alert sink.")
                             .Register(*registry)),
        alert_failures(
            prometheus::BuildCounter()
                .Name("invariantd_alert_delivery_failures_total")
                .Help("Failed POSTs to an alert sink (retried later).")
                .Register(*registry)),
        alert_retries(prometheus::BuildCounter()
                          .Name("invariantd_alert_delivery_retries_total")
                          .Help("POSTs of pages that had failed before.")
                          .Register(*registry)),
        alert_resends(prometheus::BuildCounter()
                          .Name("invariantd_alert_resends_total")
                          .Help("Successful re-sends of the active alerts to "
                                "an Alertmanager.")
                          .Register(*registry)),
        alert_queued(prometheus::BuildGauge()
                         .Name("invariantd_alert_outbox_queued")
                         .Help("Notifications waiting in the outbox.")
                         .Register(*registry)),
        alert_oldest(prometheus::BuildGauge()
                         .Name("invariantd_alert_outbox_oldest_age_seconds")
                         .Help("Age of the oldest undelivered notification.")
                         .Register(*registry)),
        alerts_active(prometheus::BuildGauge()
                          .Name("invariantd_alerts_active")
                          .Help("Alerts firing (not resolved).")
                          .Register(*registry)
                          .Add({})),
        alert_resolves(prometheus::BuildCounter()
                           .Name("invariantd_alert_resolves_total")
                           .Help("Alert resolves queued (hold expired or "
                                 "resolved by an operator).")
                           .Register(*registry)),
        evidence_head(prometheus::BuildGauge()
                          .Name("invariantd_evidence_head_seq")
                          .Help("Sequence number of the newest evidence "
                                "record (the chain's head).")
                          .Register(*registry)
                          .Add({})) {
    build_info.Add({{"version", Label(version)}}).Set(1);
    last_reload_ok.Set(1);
  }

  // Adds total - last (or total after a restart of the caller's count).
  void SetTotal(Family<Counter>& family, Labels labels, uint64_t total) {
    std::lock_guard<std::mutex> l(mu);
    Counter& c = family.Add(labels);
    uint64_t& last = last_totals[&c];
    uint64_t delta = total >= last ? total - last : total;
    last = total;
    if (delta > 0) c.Increment(static_cast<double>(delta));
  }

  std::shared_ptr<prometheus::Registry> registry;
  const size_t max_protocol_series;

  Family<Gauge>& build_info;
  Family<Counter>& source_events;
  Family<Counter>& source_rejected;
  Family<Counter>& source_redelivered;
  Family<Gauge>& source_lag_bytes;
  Family<Gauge>& kafka_lag;
  Family<Counter>& rule_violations;
  Histogram& rule_eval;
  Histogram& evidence_commit;
  Histogram& state_checkpoint;
  Histogram& state_pause;
  Family<Gauge>& rule_keys;
  Family<Counter>& rule_overflow;
  Family<Counter>& redactions;
  Family<Gauge>& rule_state_bytes;
  Family<Counter>& rule_budget_refusals;
  Gauge& state_budget;
  Gauge& state_budget_used;
  Family<Counter>& rule_skipped;
  Family<Gauge>& queue_depth;
  Family<Counter>& admission_rejected;
  Gauge& checkpoint_age;
  Family<Counter>& reloads;
  Gauge& last_reload_ok;
  Family<Counter>& http_requests;
  Family<Counter>& http_unauthorized;
  Family<Gauge>& protocol_state;
  Counter& protocol_dropped;
  Family<Counter>& evidence_records;
  Family<Counter>& evidence_failures;
  Family<Counter>& evidence_wal_checkpoints;
  Gauge& evidence_pending;
  Family<Counter>& alert_notifications;
  Family<Counter>& alert_deliveries;
  Family<Counter>& alert_failures;
  Family<Counter>& alert_retries;
  Family<Counter>& alert_resends;
  Family<Gauge>& alert_queued;
  Family<Gauge>& alert_oldest;
  Gauge& alerts_active;
  Family<Counter>& alert_resolves;
  Gauge& evidence_head;
  // Rule-state checkpoints (declared with their initializers: built after
  // the registry, in declaration order).
  Family<Counter>& state_checkpoints =
      prometheus::BuildCounter()
          .Name("invariantd_state_checkpoints_total")
          .Help(
              "Rule-state checkpoints committed with the evidence, by "
              "type (full image or changes only).")
          .Register(*registry);
  Counter& state_bytes = prometheus::BuildCounter()
                             .Name("invariantd_state_checkpoint_bytes_total")
                             .Help("Bytes of rule-state images written.")
                             .Register(*registry)
                             .Add({});
  Gauge& state_restored =
      prometheus::BuildGauge()
          .Name("invariantd_state_restored")
          .Help(
              "1 when the rule state was restored from the checkpoint at "
              "start, 0 when the rules started empty.")
          .Register(*registry)
          .Add({});

  std::mutex mu;
  std::function<void(std::string*)> redact;        // guarded by mu
  std::map<const Counter*, uint64_t> last_totals;  // guarded by mu
  // (sanitized name, sanitized key) -> series; guarded by mu.
  std::map<std::pair<std::string, std::string>, Gauge*> protocol_series;
};

Metrics::Metrics(std::string version, size_t max_protocol_series)
    : impl_(std::make_unique<Impl>(version, max_protocol_series)) {}

Metrics::~Metrics() = default;

void Metrics::SourceEvents(std::string_view kind, std::string_view source,
                           uint64_t delta) {
  impl_->source_events.Add({{"kind", Label(kind)}, {"source", Label(source)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::SourceRejected(std::string_view kind, std::string_view source,
                             std::string_view reason, uint64_t delta) {
  impl_->source_rejected
      .Add({{"kind", Label(kind)},
            {"source", Label(source)},
            {"reason", Label(reason)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::SourceRedelivered(std::string_view kind, std::string_view source,
                                uint64_t delta) {
  impl_->source_redelivered
      .Add({{"kind", Label(kind)}, {"source", Label(source)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::SourceLagBytes(std::string_view kind, std::string_view source,
                             double bytes) {
  impl_->source_lag_bytes
      .Add({{"kind", Label(kind)}, {"source", Label(source)}})
      .Set(bytes);
}

void Metrics::KafkaLag(std::string_view source, int32_t partition,
                       double messages) {
  impl_->kafka_lag
      .Add({{"source", Label(source)},
            {"partition",
             partition < 0 ? std::string("all") : absl::StrCat(partition)}})
      .Set(messages);
}

void Metrics::RuleViolation(std::string_view rule, std::string_view severity,
                            uint64_t delta) {
  impl_->rule_violations
      .Add({{"rule", Label(rule)}, {"severity", Label(severity)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::RuleEvalLatency(double seconds) {
  impl_->rule_eval.Observe(seconds);
}

void Metrics::RuleKeys(std::string_view rule, double keys) {
  impl_->rule_keys.Add({{"rule", Label(rule)}}).Set(keys);
}

void Metrics::RuleOverflow(std::string_view rule, std::string_view policy,
                           uint64_t total) {
  impl_->SetTotal(impl_->rule_overflow,
                  {{"rule", Label(rule)}, {"policy", Label(policy)}}, total);
}

void Metrics::RuleState(std::string_view rule, double bytes,
                        uint64_t refusals_total) {
  impl_->rule_state_bytes.Add({{"rule", Label(rule)}}).Set(bytes);
  impl_->SetTotal(impl_->rule_budget_refusals, {{"rule", Label(rule)}},
                  refusals_total);
}

void Metrics::StateBudget(double limit, double used) {
  impl_->state_budget.Set(limit);
  impl_->state_budget_used.Set(used);
}

void Metrics::RuleSkipped(std::string_view rule, std::string_view reason,
                          uint64_t total) {
  impl_->SetTotal(impl_->rule_skipped,
                  {{"rule", Label(rule)}, {"reason", Label(reason)}}, total);
}

void Metrics::QueueDepth(std::string_view queue, double depth) {
  impl_->queue_depth.Add({{"queue", Label(queue)}}).Set(depth);
}

void Metrics::AdmissionRejected(std::string_view reason, uint64_t delta) {
  impl_->admission_rejected.Add({{"reason", Label(reason)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::Evidence(uint64_t stored_total, uint64_t duplicate_total,
                       uint64_t failures_total, double pending,
                       double head_seq) {
  impl_->SetTotal(impl_->evidence_records, {{"result", "stored"}},
                  stored_total);
  impl_->SetTotal(impl_->evidence_records, {{"result", "duplicate"}},
                  duplicate_total);
  impl_->SetTotal(impl_->evidence_failures, {}, failures_total);
  impl_->evidence_pending.Set(pending);
  impl_->evidence_head.Set(head_seq);
}

void Metrics::EvidenceWalCheckpoints(uint64_t complete_total,
                                     uint64_t partial_total,
                                     uint64_t failed_total) {
  impl_->SetTotal(impl_->evidence_wal_checkpoints, {{"result", "complete"}},
                  complete_total);
  impl_->SetTotal(impl_->evidence_wal_checkpoints, {{"result", "partial"}},
                  partial_total);
  impl_->SetTotal(impl_->evidence_wal_checkpoints, {{"result", "failed"}},
                  failed_total);
}

void Metrics::StateCheckpoints(uint64_t full_total, uint64_t changes_total,
                               uint64_t bytes_total) {
  impl_->SetTotal(impl_->state_checkpoints, {{"type", "full"}}, full_total);
  impl_->SetTotal(impl_->state_checkpoints, {{"type", "changes"}},
                  changes_total);
  std::lock_guard<std::mutex> l(impl_->mu);
  uint64_t& last = impl_->last_totals[&impl_->state_bytes];
  if (bytes_total >= last) {
    impl_->state_bytes.Increment(static_cast<double>(bytes_total - last));
  }
  last = bytes_total;
}

void Metrics::StateRestored(bool restored) {
  impl_->state_restored.Set(restored ? 1 : 0);
}

void Metrics::AlertSink(std::string_view sink, uint64_t delivered_total,
                        uint64_t grouped_total, uint64_t rejected_total,
                        uint64_t deliveries_total, uint64_t failures_total,
                        uint64_t retries_total, uint64_t resends_total,
                        double queued, double oldest_age_s) {
  const std::string name = Label(sink);
  impl_->SetTotal(impl_->alert_notifications,
                  {{"sink", name}, {"result", "delivered"}}, delivered_total);
  impl_->SetTotal(impl_->alert_notifications,
                  {{"sink", name}, {"result", "grouped"}}, grouped_total);
  impl_->SetTotal(impl_->alert_notifications,
                  {{"sink", name}, {"result", "rejected"}}, rejected_total);
  impl_->SetTotal(impl_->alert_deliveries, {{"sink", name}}, deliveries_total);
  impl_->SetTotal(impl_->alert_failures, {{"sink", name}}, failures_total);
  impl_->SetTotal(impl_->alert_retries, {{"sink", name}}, retries_total);
  impl_->SetTotal(impl_->alert_resends, {{"sink", name}}, resends_total);
  impl_->alert_queued.Add({{"sink", name}}).Set(queued);
  impl_->alert_oldest.Add({{"sink", name}}).Set(oldest_age_s);
}

void Metrics::AlertsActive(double active, uint64_t resolves_total) {
  impl_->alerts_active.Set(active);
  impl_->SetTotal(impl_->alert_resolves, {}, resolves_total);
}

void Metrics::CheckpointAge(double seconds) {
  impl_->checkpoint_age.Set(seconds);
}

void Metrics::EvidenceCommitLatency(double seconds) {
  impl_->evidence_commit.Observe(seconds);
}

void Metrics::StateCheckpointLatency(double seconds) {
  impl_->state_checkpoint.Observe(seconds);
}

void Metrics::StateCheckpointPause(double seconds) {
  impl_->state_pause.Observe(seconds);
}

void Metrics::Reload(bool ok) {
  impl_->reloads.Add({{"result", ok ? "success" : "failure"}}).Increment();
  impl_->last_reload_ok.Set(ok ? 1 : 0);
}

void Metrics::HttpRequest(int code, uint64_t delta) {
  std::string label =
      code >= 100 && code <= 599 ? absl::StrCat(code) : std::string("other");
  impl_->http_requests.Add({{"code", label}})
      .Increment(static_cast<double>(delta));
}

void Metrics::HttpUnauthorized(std::string_view scope, std::string_view reason,
                               uint64_t delta) {
  impl_->http_unauthorized
      .Add({{"scope", std::string(scope)}, {"reason", std::string(reason)}})
      .Increment(static_cast<double>(delta));
}

void Metrics::ProtocolState(std::string_view name, std::string_view key,
                            double value) {
  std::pair<std::string, std::string> id(Label(name),
                                         Label(key, kMaxProtocolKeyBytes));
  std::lock_guard<std::mutex> l(impl_->mu);
  auto it = impl_->protocol_series.find(id);
  if (it == impl_->protocol_series.end()) {
    if (impl_->protocol_series.size() >= impl_->max_protocol_series) {
      impl_->protocol_dropped.Increment();
      return;
    }
    std::string label = id.second;
    if (impl_->redact) {
      std::string raw(key);
      impl_->redact(&raw);
      label = Label(raw, kMaxProtocolKeyBytes);
    }
    Gauge& g = impl_->protocol_state.Add({{"name", id.first}, {"key", label}});
    it = impl_->protocol_series.emplace(std::move(id), &g).first;
  }
  it->second->Set(value);
}

void Metrics::SetLabelRedaction(std::function<void(std::string*)> redact) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->redact = std::move(redact);
}

void Metrics::Redactions(std::string_view rule, uint64_t total) {
  impl_->SetTotal(impl_->redactions, {{"rule", Label(rule)}}, total);
}

size_t Metrics::protocol_series() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->protocol_series.size();
}

std::string Metrics::Exposition() const {
  try {
    return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
  } catch (const std::exception& e) {
    return absl::StrCat("# exposition failed: ", SanitizeText(e.what(), 256),
                        "\n");
  }
}

}  // namespace invariantd
