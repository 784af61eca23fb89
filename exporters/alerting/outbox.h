// The alert outbox: the durable half of paging.
//
// Two tables live in the evidence database next to the evidence (their own
// schema version in `alerting_meta`; the store's `PRAGMA user_version` is
// left to the store):
//
//   alerts  one row per alert fingerprint (rule + key): labels and
//           annotations as first sent, when it started, its last violation,
//           until when it stays active (last violation + hold), how many
//           violations it collected, the last evidence id, and whether (when,
//           by whom) it was resolved.
//   outbox  one row per (sink, notification): "firing" for a new violation,
//           "resolved" for a resolve; attempts, the next attempt time and the
//           last error, so retries survive restarts; the webhook delivery
//           id, fixed at the first attempt (version 2).
//
// OutboxHook() returns an EvidenceStore transaction hook: the alert upsert
// and the outbox rows of the violations that are new in an Append commit in
// the same transaction as their evidence, so a violation is stored if and
// only if its pages are queued. A re-evaluation after a crash produces ids
// that are already stored: they are not fresh, so nothing is paged twice.
//
// Resolve policy: an alert is active until `hold` after its last violation;
// a new violation of the same rule and key refreshes it (and re-opens it if
// it was resolved). It is resolved when the hold expires (QueueResolves,
// run by the pager) or by an operator (ResolveAlert: API or CLI). A resolve
// is a flag on the alert first; QueueResolves turns every flagged alert into
// "resolved" outbox rows for the configured sinks, in one transaction, so a
// resolve made by the CLI or lost in a crash is still delivered.
//
// Fingerprint: the first 16 bytes (32 hex digits) of
//   SHA-256("invariantd-alert-v1" || len(rule) || rule || {len(name) || name
//           || len(value) || value} for each key field in rule order)
// with 8-byte little-endian lengths.
#ifndef INVARIANTD_EXPORTERS_ALERTING_OUTBOX_H_
#define INVARIANTD_EXPORTERS_ALERTING_OUTBOX_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exporters/evidence/store.h"

struct sqlite3;

namespace invariantd {

using LabelList = std::vector<std::pair<std::string, std::string>>;

inline constexpr int kAlertingSchemaVersion = 2;
inline constexpr size_t kDefaultMaxAlertLabels = 32;
inline constexpr size_t kMaxLabelValueBytes = 256;
inline constexpr size_t kMaxAnnotationBytes = 4096;

// What the outbox needs to know about a rule (from the running rule set).
struct AlertRuleInfo {
  std::string description;
  std::string runbook;
  LabelList labels;
};
using RuleInfoFn = std::function<AlertRuleInfo(std::string_view rule)>;
// A violation as JSON (the evidence JSON), kept with its firing
// notification for the webhook body.
using ViolationJsonFn = std::function<std::string(const EvidenceRecord&)>;

struct OutboxOptions {
  std::vector<std::string> sinks;  // sink names; one outbox row per sink
  std::chrono::milliseconds hold{std::chrono::hours(1)};
  size_t max_labels = kDefaultMaxAlertLabels;
  RuleInfoFn rule_info;            // may be null: no description/labels
  ViolationJsonFn violation_json;  // may be null: payload "{}"
  // Sinks that never read the payload (Alertmanager: it sends the alert's
  // state); their rows store "{}" instead of a copy of the violation.
  std::vector<std::string> sinks_without_payload;
};

// Creates the alerting tables when missing (in a transaction) and checks
// their version. FailedPrecondition for a newer version.
absl::Status CreateAlertingSchema(sqlite3* db);

std::string AlertFingerprint(std::string_view rule, const LabelList& key);

// `raw` as a valid label name ([a-zA-Z_][a-zA-Z0-9_]*): every other byte
// becomes '_', a leading digit gets a '_' prefix, "__" (reserved) a "k"
// prefix; empty becomes "_".
std::string LabelName(std::string_view raw);

struct AlertLabels {
  LabelList labels;    // sorted by name
  size_t dropped = 0;  // rule labels and key fields over max_labels
};

// alertname (the rule), severity, kind, fingerprint, then the rule's labels,
// then the key fields (names made valid; a name already taken gets a "key_"
// prefix, and is dropped -- counted -- if that is taken too); values
// sanitized and capped at kMaxLabelValueBytes; at most max_labels in all
// (the four fixed ones are always there).
AlertLabels BuildAlertLabels(const EvidenceRecord& r, const AlertRuleInfo& info,
                             std::string_view fingerprint, size_t max_labels);

// The annotations of the alert of `r`: summary, description, runbook_url,
// evidence_id, key (sanitized, capped at kMaxAnnotationBytes), and
// labels_dropped when labels were dropped.
LabelList BuildAlertAnnotations(const EvidenceRecord& r,
                                const AlertRuleInfo& info,
                                size_t labels_dropped);

// Inserts the alert upserts and outbox rows of `fresh` (see file comment),
// with statements borrowed from `cache` (compiled once per connection: this
// runs in the evidence commit of every violation).
absl::Status QueueViolations(sqlite_internal::StmtCache* cache,
                             const OutboxOptions& options,
                             const std::vector<const EvidenceRecord*>& fresh,
                             int64_t now_ms);

// The evidence store hook doing QueueViolations in the evidence transaction.
EvidenceStore::TxnFn OutboxHook(OutboxOptions options);

// Resolves (flags) every unresolved alert whose hold expired at `now_ms`
// (resolved_by "expired"), then queues a "resolved" notification per sink
// for every flagged alert; deletes resolved alerts older than `forget_ms`
// that have nothing queued. One short transaction, only when there is
// something to do (an old resolved alert with rows left, e.g. for a removed
// sink, is not). Returns the number of resolves queued.
absl::StatusOr<size_t> QueueResolves(sqlite3* db,
                                     const std::vector<std::string>& sinks,
                                     int64_t now_ms, int64_t forget_ms);

// One alert as stored.
struct AlertRow {
  std::string fingerprint;
  std::string rule;
  std::string key_json;
  std::string labels_json;       // JSON object
  std::string annotations_json;  // JSON object
  int64_t starts_ms = 0;
  int64_t last_violation_ms = 0;
  int64_t active_until_ms = 0;
  uint64_t violations = 0;
  std::string last_evidence_id;
  bool resolved = false;
  int64_t resolved_ms = 0;
  std::string resolved_by;
  uint64_t queued = 0;  // outbox rows waiting for this alert (every sink)
};

// Alerts, newest last violation first (unresolved only unless `all`).
absl::StatusOr<std::vector<AlertRow>> ListAlerts(sqlite3* db, bool all,
                                                 size_t limit);
// `queued` is left 0 unless `count_queued` (the pager does not need it).
absl::StatusOr<std::vector<AlertRow>> GetAlerts(
    sqlite3* db, const std::vector<std::string>& fingerprints,
    bool count_queued = true);

// Flags the alert resolved by `by` at `now_ms`: NotFound when no such
// alert, FailedPrecondition when already resolved. The pager queues the
// notifications (QueueResolves).
absl::Status ResolveAlert(sqlite3* db, std::string_view fingerprint,
                          std::string_view by, int64_t now_ms);

// Opens the evidence database at `path` for the alert commands (API, CLI):
// read-write without creating it, WAL, busy timeout. The caller closes it
// with CloseAlertDb. NotFound when there is no database or no alerting
// tables in it.
absl::StatusOr<sqlite3*> OpenAlertDb(const std::string& path, bool read_only);
void CloseAlertDb(sqlite3* db);

// JSON of an alert row (labels and annotations as objects; times RFC 3339).
std::string AlertJson(const AlertRow& a);

// Lower-case hex HMAC-SHA256 of `data` under `key`.
std::string HmacSha256Hex(std::string_view key, std::string_view data);

// Delay before attempt `attempts`+1 after `attempts` failures (>= 1):
// initial * 2^(attempts-1) capped at max, with "equal jitter": half of it
// fixed, the other half scaled by `unit_random` in [0, 1).
std::chrono::milliseconds BackoffDelay(int attempts,
                                       std::chrono::milliseconds initial,
                                       std::chrono::milliseconds max,
                                       double unit_random);

// RFC 3339 UTC with milliseconds.
std::string Rfc3339Ms(int64_t unix_ms);

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_ALERTING_OUTBOX_H_
