// RunConfig: the configuration of `invariantd run`, from a YAML file
// (docs/configuration.md) with command-line flags applied on top.
//
// Unknown keys are errors, like in rule files; every problem is reported
// with file:line:column, all at once.
#ifndef INVARIANTD_SIDECAR_CONFIG_H_
#define INVARIANTD_SIDECAR_CONFIG_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rules/rule_set.h"
#include "sidecar/core/thread_priority.h"
#include "sidecar/redactor.h"

namespace invariantd {

struct RunConfig {
  std::vector<std::string> rules;
  std::string listen = "127.0.0.1:9464";
  std::string data_dir = "./data";
  int workers = 2;
  bool stdout_violations = true;
  std::string log_level = "info";
  // input
  std::string input_format;  // empty: the rule files' `input`, else json
  std::string pattern;
  size_t max_line_bytes = 1 << 20;
  int max_depth = 64;                   // JSON nesting
  size_t max_fields = 10000;            // per record
  size_t max_string_bytes = 256 << 10;  // per string value
  size_t dedupe_window = 1 << 16;
  size_t queue_capacity = 65536;
  // Scheduler slice of the threads on a violation's path, in microseconds
  // (0: the kernel's default); sidecar/core/thread_priority.h.
  int scheduler_slice_us = kDefaultViolationPathSliceUs;
  // file tail
  std::vector<std::string> tail;
  int tail_poll_interval_ms = 200;
  // HTTP push
  bool http_ingest = true;
  std::string auth_token_file;    // tokens for ingest and queries
  std::string ingest_token_file;  // tokens for ingest only
  std::string query_token_file;   // tokens for evidence queries only
  // Listening off loopback with an unauthenticated scope is refused unless
  // this is set.
  bool allow_unauthenticated = false;
  size_t http_max_body_bytes = 8 << 20;
  size_t http_max_header_bytes = 16 << 10;  // request line and headers
  int http_threads = 4;                     // requests served at once
  int http_max_queued = 64;  // accepted connections waiting for a thread
  int http_request_timeout_ms = 10000;  // per read of a request
  size_t http_max_events = 10000;
  // Kafka
  std::string kafka_brokers;
  std::vector<std::string> kafka_topics;
  std::string kafka_group = "invariantd";
  std::map<std::string, std::string> kafka_config;
  // evidence store (data_dir/evidence.db)
  bool evidence = true;
  int evidence_retention_hours = 720;               // 0: no age limit
  uint64_t evidence_max_bytes = uint64_t{1} << 30;  // 0: no size limit
  int evidence_commit_interval_ms = 0;              // 0: commit as soon as idle
  // Rule-state checkpoint at least this often while events flow (and
  // whenever the input goes idle); inputs are acknowledged after it.
  int evidence_state_interval_ms = 100;
  // alerting (paging; docs/alerting.md): on when a sink is configured
  std::vector<std::string> alertmanagers;  // base URLs, one sink each
  std::string webhook_url;
  std::string webhook_secret_file;  // HMAC-SHA256 key of the signature
  std::string alert_external_url;   // empty: http://<listen address>
  int alert_resend_interval_seconds = 60;
  int alert_hold_seconds = 3600;
  int alert_timeout_ms = 5000;
  int alert_backoff_initial_ms = 1000;
  int alert_backoff_max_ms = 300000;
  int alert_max_batch = 500;
  int alert_max_labels = 32;
  // Limits on rule files and their expressions.
  LoadLimits rule_limits;
  // Redaction rules for what violations carry out (sidecar/redactor.h).
  std::vector<RedactRule> redact;
  // Series of invariantd_protocol_state (export_gauge rules); more are
  // dropped and counted.
  size_t metrics_max_protocol_series = 1000;
  // Memory budget for the state of all rules (0: none; max_keys only).
  uint64_t state_max_bytes = uint64_t{1} << 30;
  // lifecycle
  int shutdown_timeout_ms = 10000;
  int checkpoint_interval_ms = 1000;
};

// Reads `path` into `config` (fields present in the file override the
// defaults already in `config`). Errors: InvalidArgument listing every
// problem as "file:line:col: message", one per line.
absl::Status LoadRunConfig(const std::string& path, RunConfig* config);

// Checks cross-field constraints after flags are applied (e.g. at least
// one source, workers in range, listen address syntax).
absl::Status ValidateRunConfig(const RunConfig& config);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CONFIG_H_
