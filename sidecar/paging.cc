#include "sidecar/paging.h"

#include <unistd.h>

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "exporters/prometheus/metrics.h"
#include "nlohmann/json.hpp"
#include "sidecar/checkpoint_file.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/violation_format.h"

namespace invariantd {

using Json = nlohmann::json;

namespace {

constexpr size_t kMaxWebhookWitnessBytes = 4096;

// Closes the connection when it goes out of scope.
struct DbCloser {
  sqlite3* db;
  ~DbCloser() { CloseAlertDb(db); }
};

AlertRuleInfo RuleInfoFor(const std::shared_ptr<const RuleSet>& rules,
                          std::string_view name) {
  AlertRuleInfo info;
  if (!rules) return info;
  for (const Rule& r : rules->rules()) {
    if (r.name == name) {
      info.description = r.description;
      info.runbook = r.runbook;
      info.labels = r.labels;
      break;
    }
  }
  return info;
}

}  // namespace

bool PagingEnabled(const RunConfig& c) {
  return !c.alertmanagers.empty() || !c.webhook_url.empty();
}

absl::StatusOr<PagerOptions> PagerOptionsFromConfig(const RunConfig& c) {
  PagerOptions o;
  std::map<std::string, int> seen;
  auto add = [&](AlertSink s) {
    const int n = ++seen[s.name];
    if (n > 1) absl::StrAppend(&s.name, "#", n);
    o.sinks.push_back(std::move(s));
  };
  for (const std::string& url : c.alertmanagers) {
    AlertSink s;
    s.kind = AlertSink::Kind::kAlertmanager;
    s.url = url;
    while (!s.url.empty() && s.url.back() == '/') s.url.pop_back();
    s.name = SinkName(s.kind, url);
    add(std::move(s));
  }
  if (!c.webhook_url.empty()) {
    AlertSink s;
    s.kind = AlertSink::Kind::kWebhook;
    s.url = c.webhook_url;
    s.name = SinkName(s.kind, c.webhook_url);
    if (!c.webhook_secret_file.empty()) {
      auto content = ReadFileIfExists(c.webhook_secret_file);
      if (!content.ok()) return content.status();
      if (!content->has_value()) {
        return absl::NotFoundError(absl::StrCat(
            "webhook secret file ", c.webhook_secret_file, " does not exist"));
      }
      s.secret = std::string(absl::StripAsciiWhitespace(**content));
      if (s.secret.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "webhook secret file ", c.webhook_secret_file, " is empty"));
      }
    }
    add(std::move(s));
  }
  o.external_url = c.alert_external_url;
  o.resend_interval = std::chrono::seconds(c.alert_resend_interval_seconds);
  o.timeout = std::chrono::milliseconds(c.alert_timeout_ms);
  o.backoff_initial = std::chrono::milliseconds(c.alert_backoff_initial_ms);
  o.backoff_max = std::chrono::milliseconds(c.alert_backoff_max_ms);
  o.max_batch = static_cast<size_t>(c.alert_max_batch);
  return o;
}

std::string DefaultExternalUrl(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {0};
    host = gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0'
               ? std::string(name)
               : "localhost";
  }
  return absl::StrCat("http://", host, ":", port);
}

absl::StatusOr<std::unique_ptr<Pager>> InstallPaging(
    const RunConfig& config, EvidenceStore* store, const std::string& db_path,
    std::function<std::shared_ptr<const RuleSet>()> rules) {
  auto options = PagerOptionsFromConfig(config);
  if (!options.ok()) return options.status();
  if (absl::Status st = CreateAlertingSchema(store->db()); !st.ok()) {
    return absl::Status(st.code(),
                        absl::StrCat("evidence store ", db_path,
                                     ": alerting tables: ", st.message()));
  }
  OutboxOptions outbox;
  for (const AlertSink& s : options->sinks) {
    outbox.sinks.push_back(s.name);
    if (s.kind == AlertSink::Kind::kAlertmanager) {
      outbox.sinks_without_payload.push_back(s.name);
    }
  }
  outbox.hold = std::chrono::seconds(config.alert_hold_seconds);
  outbox.max_labels = static_cast<size_t>(config.alert_max_labels);
  outbox.rule_info = [rules = std::move(rules)](std::string_view rule) {
    return RuleInfoFor(rules(), rule);
  };
  // The webhook's copy of a violation: its evidence JSON, with the witness
  // cut at kMaxWebhookWitnessBytes (the whole one is one evidence_url away)
  // so a page never carries megabytes.
  outbox.violation_json = [](const EvidenceRecord& r) {
    if (r.witness.size() <= kMaxWebhookWitnessBytes) return EvidenceJson(r);
    EvidenceRecord cut = r;
    cut.witness.resize(kMaxWebhookWitnessBytes);
    std::string j = EvidenceJson(cut);
    j.pop_back();  // the closing brace
    absl::StrAppend(&j, ",\"witness_truncated\":true,\"witness_bytes\":",
                    r.witness.size(), "}");
    return j;
  };
  store->AddTxnHook(OutboxHook(std::move(outbox)));
  return Pager::Open(db_path, *std::move(options));
}

void RegisterAlertRoutes(
    HttpServer* http, const std::string& db_path, Pager* pager,
    std::function<AuthDecision(const HttpRequestView&)> authorize) {
  http->Handle("GET", "/v1/alerts", [=](const HttpRequestView& r) {
    if (auto d = authorize(r); !d.allowed()) return AuthError(d);
    bool all = false;
    size_t limit = 1000;
    for (const auto& [k, v] : ParseQueryString(r.query)) {
      if (k == "all") {
        all = v == "1" || v == "true";
      } else if (k == "limit") {
        if (!absl::SimpleAtoi(v, &limit) || limit < 1 || limit > 10000) {
          return JsonError(400, "bad_limit");
        }
      } else {
        return JsonError(400, "unknown_parameter");
      }
    }
    auto db = OpenAlertDb(db_path, /*read_only=*/true);
    if (!db.ok()) return JsonError(503, "alerts_unavailable");
    DbCloser closer{*db};
    auto alerts = ListAlerts(*db, all, limit);
    if (!alerts.ok()) return JsonError(500, "alerts_query_failed");
    std::string body = "{\"alerts\":[";
    for (size_t i = 0; i < alerts->size(); ++i) {
      if (i > 0) body += ",";
      body += AlertJson((*alerts)[i]);
    }
    body += "]}";
    HttpResponse ok;
    ok.body = std::move(body);
    return ok;
  });
  http->Handle("POST", "/v1/alerts/*", [=](const HttpRequestView& r) {
    if (auto d = authorize(r); !d.allowed()) return AuthError(d);
    std::string_view rest =
        r.path.substr(std::string_view("/v1/alerts/").size());
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos || rest.substr(slash) != "/resolve") {
      return JsonError(404, "not_found");
    }
    const std::string fp(rest.substr(0, slash));
    auto db = OpenAlertDb(db_path, /*read_only=*/false);
    if (!db.ok()) return JsonError(503, "alerts_unavailable");
    DbCloser closer{*db};
    const absl::Status st =
        ResolveAlert(*db, fp, "operator", absl::ToUnixMillis(absl::Now()));
    if (absl::IsNotFound(st)) return JsonError(404, "no_such_alert");
    if (absl::IsFailedPrecondition(st)) {
      return JsonError(409, "already_resolved");
    }
    if (!st.ok()) return JsonError(503, "resolve_failed");
    if (pager != nullptr) pager->Notify();
    HttpResponse ok;
    ok.body = absl::StrCat("{\"fingerprint\":", Json(fp).dump(),
                           ",\"status\":\"resolved\"}");
    return ok;
  });
}

void ReportPagerMetrics(const Pager& pager, Metrics* m) {
  const PagerStats st = pager.Stats();
  for (const PagerSinkStats& s : st.sinks) {
    m->AlertSink(s.name, s.delivered, s.grouped, s.rejected, s.deliveries,
                 s.failures, s.retries, s.resends,
                 static_cast<double>(s.queued), s.oldest_age_s);
  }
  m->AlertsActive(static_cast<double>(st.active_alerts), st.resolves_queued);
}

int RunAlerts(const AlertsCommand& cmd, std::ostream& out, std::ostream& err) {
  const std::string path = cmd.data_dir + "/evidence.db";
  auto db = OpenAlertDb(path, /*read_only=*/cmd.action == "list");
  if (!db.ok()) {
    err << "invariantd alerts: " << db.status().message() << "\n";
    return 2;
  }
  DbCloser closer{*db};
  if (cmd.action == "resolve") {
    const absl::Status st = ResolveAlert(*db, cmd.fingerprint, "operator",
                                         absl::ToUnixMillis(absl::Now()));
    if (absl::IsNotFound(st) || absl::IsFailedPrecondition(st)) {
      err << "invariantd alerts resolve: " << st.message() << "\n";
      return 1;
    }
    if (!st.ok()) {
      err << "invariantd alerts resolve: " << st.message() << "\n";
      return 2;
    }
    out << "resolved " << SanitizeText(cmd.fingerprint, 64)
        << "; the running daemon sends the resolve to every sink\n";
    return 0;
  }
  auto alerts = ListAlerts(*db, cmd.all, cmd.limit);
  if (!alerts.ok()) {
    err << "invariantd alerts list: " << alerts.status().message() << "\n";
    return 2;
  }
  for (const AlertRow& a : *alerts) {
    if (cmd.format == "jsonl") {
      out << AlertJson(a) << "\n";
      continue;
    }
    out << a.fingerprint << " " << (a.resolved ? "resolved" : "firing") << " "
        << SanitizeText(a.rule, 200) << " " << SanitizeText(a.key_json, 400)
        << " violations=" << a.violations
        << " last=" << Rfc3339Ms(a.last_violation_ms)
        << (a.resolved ? " resolved_at=" + Rfc3339Ms(a.resolved_ms) +
                             " by=" + SanitizeText(a.resolved_by, 64)
                       : " active_until=" + Rfc3339Ms(a.active_until_ms))
        << " queued=" << a.queued << "\n";
  }
  return 0;
}

}  // namespace invariantd
