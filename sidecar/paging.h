// Paging in the sidecar: builds the pager from the configuration, installs
// the outbox hook on the evidence store, serves the alert API and runs the
// `invariantd alerts` command (docs/alerting.md).
#ifndef INVARIANTD_SIDECAR_PAGING_H_
#define INVARIANTD_SIDECAR_PAGING_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exporters/alerting/pager.h"
#include "exporters/evidence/store.h"
#include "rules/rule_set.h"
#include "sidecar/config.h"
#include "sidecar/http_server.h"

namespace invariantd {

class Metrics;

// True when the configuration names at least one sink.
bool PagingEnabled(const RunConfig& config);

// The sinks and policy of `config` (reads the webhook secret file).
absl::StatusOr<PagerOptions> PagerOptionsFromConfig(const RunConfig& config);

// "http://HOST:PORT" for the listen address (a wildcard host becomes this
// machine's host name) and the port actually bound.
std::string DefaultExternalUrl(const std::string& listen, int port);

// Creates the alerting tables on `store`'s connection, installs the outbox
// hook (rule descriptions, runbooks and labels from `rules()`), and opens
// the pager on `db_path`. Call before the evidence writer starts.
absl::StatusOr<std::unique_ptr<Pager>> InstallPaging(
    const RunConfig& config, EvidenceStore* store, const std::string& db_path,
    std::function<std::shared_ptr<const RuleSet>()> rules);

// GET /v1/alerts[?all=1&limit=N] and POST /v1/alerts/{fingerprint}/resolve.
void RegisterAlertRoutes(
    HttpServer* http, const std::string& db_path, Pager* pager,
    std::function<AuthDecision(const HttpRequestView&)> authorize);

// Copies the pager's counters and gauges into the metrics.
void ReportPagerMetrics(const Pager& pager, Metrics* metrics);

struct AlertsCommand {
  std::string action;  // list, resolve
  std::string data_dir = "./data";
  std::string fingerprint;      // resolve
  bool all = false;             // list: resolved ones too
  size_t limit = 1000;          // list
  std::string format = "text";  // list: text | jsonl
};

// `invariantd alerts list|resolve`: 0 done, 1 no such alert or already
// resolved, 2 error.
int RunAlerts(const AlertsCommand& cmd, std::ostream& out, std::ostream& err);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_PAGING_H_
