// The process's metrics, declared once (exporters/prometheus/metrics.cc lists
// every family with its name, type, help and labels) and exposed in the
// Prometheus text format 0.0.4.
//
// prometheus-cpp is used only behind this header (it is not included here).
//
// Naming: every metric starts with `invariantd_`; counters end in `_total`;
// units are base units (`_seconds`, `_bytes`). `invariantd_build_info
// {version="..."} 1` carries the version.
//
// Labels: values are passed through SanitizeText with a cap of
// kMaxLabelValueBytes (so no control character or unbounded string reaches
// the exposition). Label values must come from configuration (source and
// rule names, fixed reason codes), never from event data -- with one
// exception, ProtocolState's `key`, whose series count is hard-capped: beyond
// `max_protocol_series` distinct (name, key) pairs, updates of new pairs are
// dropped and counted in invariantd_protocol_state_series_dropped_total.
//
// "Set to a total" counters (RuleOverflow, RuleSkipped): the caller reports
// the cumulative total it keeps; the counter grows by the difference from the
// last reported total. A total lower than the last one means the caller's
// count restarted (e.g. a reload built new state): the counter then grows by
// the new total, so it never goes down.
//
// Thread-safety: every method may be called concurrently.
#ifndef INVARIANTD_EXPORTERS_PROMETHEUS_METRICS_H_
#define INVARIANTD_EXPORTERS_PROMETHEUS_METRICS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace invariantd {

class Metrics {
 public:
  static constexpr size_t kMaxLabelValueBytes = 128;
  static constexpr size_t kMaxProtocolKeyBytes = 64;
  static constexpr size_t kDefaultMaxProtocolSeries = 1000;

  explicit Metrics(std::string version,
                   size_t max_protocol_series = kDefaultMaxProtocolSeries);
  ~Metrics();

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // --- sources (kind: "file" | "http" | "kafka"; name: configured name) ---
  // invariantd_source_events_total{kind,source}
  void SourceEvents(std::string_view kind, std::string_view source,
                    uint64_t delta);
  // invariantd_source_rejected_total{kind,source,reason}
  void SourceRejected(std::string_view kind, std::string_view source,
                      std::string_view reason, uint64_t delta);
  // invariantd_source_redelivered_total{kind,source}
  void SourceRedelivered(std::string_view kind, std::string_view source,
                         uint64_t delta);
  // invariantd_source_lag_bytes{kind,source}: bytes not yet read (file).
  void SourceLagBytes(std::string_view kind, std::string_view source,
                      double bytes);
  // invariantd_kafka_consumer_lag_messages{source,partition}; a negative
  // partition is the sum over the assigned partitions (partition="all").
  void KafkaLag(std::string_view source, int32_t partition, double messages);

  // --- rules ---
  // invariantd_rule_violations_total{rule,severity}
  void RuleViolation(std::string_view rule, std::string_view severity,
                     uint64_t delta = 1);
  // invariantd_rule_eval_duration_seconds (histogram)
  void RuleEvalLatency(double seconds);
  // invariantd_rule_keys{rule}: keys tracked now.
  void RuleKeys(std::string_view rule, double keys);
  // invariantd_rule_overflow_total{rule,policy}; policy "evicted" |
  // "rejected"; `total` is cumulative (see above).
  void RuleOverflow(std::string_view rule, std::string_view policy,
                    uint64_t total);
  // invariantd_rule_state_bytes{rule}: memory of the rule's state now;
  // invariantd_rule_budget_refusals_total{rule}: new keys refused because
  // the state memory budget was spent (each also counted in
  // rule_overflow_total as evicted or rejected); `refusals_total` cumulative.
  void RuleState(std::string_view rule, double bytes, uint64_t refusals_total);
  // Redaction of the key labels of new protocol-state series (config
  // `redact`); the function edits the raw key in place.
  void SetLabelRedaction(std::function<void(std::string*)> redact);
  // invariantd_redactions_total{rule}: cumulative replacements.
  void Redactions(std::string_view rule, uint64_t total);
  // invariantd_state_budget_bytes and invariantd_state_budget_used_bytes:
  // the memory budget of all rules' state and what is charged to it.
  void StateBudget(double limit, double used);
  // invariantd_rule_skipped_total{rule,reason}; `total` is cumulative.
  void RuleSkipped(std::string_view rule, std::string_view reason,
                   uint64_t total);

  // --- pipeline ---
  // invariantd_queue_depth{queue}: records queued now.
  void QueueDepth(std::string_view queue, double depth);
  // invariantd_rejected_requests_due_to_admission_control_total{reason}
  void AdmissionRejected(std::string_view reason, uint64_t delta = 1);
  // invariantd_checkpoint_age_seconds
  void CheckpointAge(double seconds);
  // invariantd_evidence_commit_duration_seconds (histogram): one evidence
  // transaction, fsync included.
  void EvidenceCommitLatency(double seconds);
  // invariantd_state_checkpoint_duration_seconds (histogram): one write of
  // rule-state checkpoints to state.db, fsync included.
  void StateCheckpointLatency(double seconds);
  // invariantd_state_checkpoint_pause_seconds (histogram): a worker's pause
  // in evaluation to hand its rule state to a checkpoint.
  void StateCheckpointPause(double seconds);
  // invariantd_evidence_records_total{result="stored"|"duplicate"},
  // invariantd_evidence_commit_failures_total (from running totals),
  // invariantd_evidence_pending, invariantd_evidence_head_seq.
  void Evidence(uint64_t stored_total, uint64_t duplicate_total,
                uint64_t failures_total, double pending, double head_seq);
  // invariantd_evidence_wal_checkpoints_total{result="complete"|"partial"|
  // "failed"} (from running totals).
  void EvidenceWalCheckpoints(uint64_t complete_total, uint64_t partial_total,
                              uint64_t failed_total);
  // invariantd_state_checkpoints_total{type="full"|"changes"} and
  // invariantd_state_checkpoint_bytes_total (from running totals);
  // invariantd_state_restored (1 or 0).
  void StateCheckpoints(uint64_t full_total, uint64_t changes_total,
                        uint64_t bytes_total);
  void StateRestored(bool restored);
  // invariantd_config_reloads_total{result="success"|"failure"} and
  // invariantd_config_last_reload_successful (1 or 0).
  void Reload(bool ok);
  // invariantd_http_requests_total{code}; codes outside 100..599 are counted
  // as code="other".
  void HttpRequest(int code, uint64_t delta = 1);
  // invariantd_http_unauthorized_total{scope="ingest"|"query",
  // reason="missing"|"invalid"|"wrong_scope"}: requests refused with 401 or
  // 403 (sidecar/core/auth.h). Running totals are Set, deltas Added.
  void HttpUnauthorized(std::string_view scope, std::string_view reason,
                        uint64_t delta = 1);

  // --- paging (sink: the sink's configured name, never a URL) ---
  // Running totals of one sink: invariantd_alert_notifications_total
  // {sink,result="delivered"|"grouped"|"rejected"} (outbox rows delivered;
  // "grouped": of those, folded into another notification's delivery;
  // "rejected": refused by an Alertmanager as invalid, not retried),
  // invariantd_alert_deliveries_total{sink} (successful POSTs),
  // invariantd_alert_delivery_failures_total{sink} (failed POSTs, resends
  // included), invariantd_alert_delivery_retries_total{sink} (POSTs of pages
  // that had failed before), invariantd_alert_resends_total{sink}; gauges
  // invariantd_alert_outbox_queued{sink} and
  // invariantd_alert_outbox_oldest_age_seconds{sink}.
  void AlertSink(std::string_view sink, uint64_t delivered_total,
                 uint64_t grouped_total, uint64_t rejected_total,
                 uint64_t deliveries_total, uint64_t failures_total,
                 uint64_t retries_total, uint64_t resends_total, double queued,
                 double oldest_age_s);
  // invariantd_alerts_active and invariantd_alert_resolves_total (running
  // total of resolves queued: hold expired or operator).
  void AlertsActive(double active, uint64_t resolves_total);

  // --- protocol state (capped) ---
  // invariantd_protocol_state{name,key} = value.
  void ProtocolState(std::string_view name, std::string_view key, double value);
  size_t protocol_series() const;

  // The whole registry in the text format 0.0.4.
  std::string Exposition() const;
  static constexpr std::string_view kContentType =
      "text/plain; version=0.0.4; charset=utf-8";

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_PROMETHEUS_METRICS_H_
