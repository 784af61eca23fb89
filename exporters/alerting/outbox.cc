#include "exporters/alerting/outbox.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "exporters/sqlite.h"
#include "nlohmann/json.hpp"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"

namespace invariantd {

using Json = nlohmann::json;
using sqlite_internal::Exec;
using sqlite_internal::InTransaction;
using sqlite_internal::SqlError;
using sqlite_internal::Stmt;
using sqlite_internal::StmtCache;

namespace {

void AppendLenPrefixed(std::string* out, std::string_view bytes) {
  uint64_t n = bytes.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out->append(len, 8);
  out->append(bytes);
}

std::string ToJsonObject(const LabelList& kv) {
  Json j = Json::object();
  for (const auto& [k, v] : kv) j[k] = v;
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string KeyText(const EvidenceRecord& r) {
  std::string out = "{";
  for (size_t i = 0; i < r.key.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", r.key[i].first, "=", r.key[i].second);
  }
  out += "}";
  return out;
}

}  // namespace

absl::Status CreateAlertingSchema(sqlite3* db) {
  return InTransaction(db, [&]() -> absl::Status {
    {
      Stmt s(db,
             "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
             "name = 'alerting_meta'");
      if (!s.status().ok() || s.Step() != SQLITE_ROW) {
        return SqlError(db, "reading the alerting schema");
      }
      if (s.Int(0) == 1) {
        Stmt v(db, "SELECT max(version) FROM alerting_meta");
        if (!v.status().ok() || v.Step() != SQLITE_ROW) {
          return SqlError(db, "reading the alerting schema version");
        }
        if (v.Int(0) > kAlertingSchemaVersion) {
          return absl::FailedPreconditionError(
              absl::StrCat("alerting tables have version ", v.Int(0),
                           ", newer than this invariantd reads (",
                           kAlertingSchemaVersion, ")"));
        }
        if (v.Int(0) == kAlertingSchemaVersion) return absl::OkStatus();
        v.Finalize();
        s.Finalize();
        // Version 1 -> 2: the delivery id of a webhook delivery is fixed on
        // its rows at the first attempt; the queue is read in id order per
        // sink (the (sink, next_attempt_ms) index made every batch a sort).
        for (const char* sql : {
                 "ALTER TABLE outbox ADD COLUMN delivery TEXT NOT NULL"
                 " DEFAULT ''",
                 "DROP INDEX IF EXISTS outbox_due",
                 "CREATE INDEX outbox_sink_id ON outbox(sink, id)",
                 "CREATE INDEX outbox_delivery ON outbox(sink, delivery)"
                 " WHERE delivery != ''",
                 "UPDATE alerting_meta SET version = 2",
             }) {
          if (absl::Status st = Exec(db, sql); !st.ok()) return st;
        }
        return absl::OkStatus();
      }
    }
    for (const char* sql : {
             "CREATE TABLE alerting_meta(version INTEGER NOT NULL)",
             "INSERT INTO alerting_meta VALUES(2)",
             "CREATE TABLE alerts("
             " fingerprint TEXT PRIMARY KEY, rule TEXT NOT NULL,"
             " key_json TEXT NOT NULL, labels_json TEXT NOT NULL,"
             " annotations_json TEXT NOT NULL, starts_ms INTEGER NOT NULL,"
             " last_violation_ms INTEGER NOT NULL,"
             " active_until_ms INTEGER NOT NULL,"
             " violations INTEGER NOT NULL, last_evidence_id TEXT NOT NULL,"
             " resolved INTEGER NOT NULL DEFAULT 0,"
             " resolved_ms INTEGER NOT NULL DEFAULT 0,"
             " resolved_by TEXT NOT NULL DEFAULT '',"
             " resolve_queued INTEGER NOT NULL DEFAULT 0)",
             "CREATE INDEX alerts_open ON alerts(resolved, active_until_ms)",
             "CREATE TABLE outbox("
             " id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL,"
             " status TEXT NOT NULL, fingerprint TEXT NOT NULL,"
             " evidence_id TEXT NOT NULL, payload TEXT NOT NULL,"
             " created_ms INTEGER NOT NULL,"
             " attempts INTEGER NOT NULL DEFAULT 0,"
             " next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
             " last_error TEXT NOT NULL DEFAULT '',"
             " delivery TEXT NOT NULL DEFAULT '')",
             "CREATE INDEX outbox_sink_id ON outbox(sink, id)",
             "CREATE INDEX outbox_delivery ON outbox(sink, delivery)"
             " WHERE delivery != ''",
             "CREATE INDEX outbox_fingerprint ON outbox(fingerprint)",
         }) {
      if (absl::Status s = Exec(db, sql); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

std::string AlertFingerprint(std::string_view rule, const LabelList& key) {
  std::string content = "invariantd-alert-v1";
  AppendLenPrefixed(&content, rule);
  for (const auto& [name, value] : key) {
    AppendLenPrefixed(&content, name);
    AppendLenPrefixed(&content, value);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(content.data(), content.size(), md, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(md), 16));
}

std::string LabelName(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() + 1);
  for (char c : raw) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_';
    out.push_back(ok ? c : '_');
  }
  if (out.empty()) return "_";
  if (out[0] >= '0' && out[0] <= '9') out.insert(out.begin(), '_');
  if (out.size() >= 2 && out[0] == '_' && out[1] == '_') {
    out.insert(out.begin(), 'k');
  }
  if (out.size() > 128) out.resize(128);
  return out;
}

AlertLabels BuildAlertLabels(const EvidenceRecord& r, const AlertRuleInfo& info,
                             std::string_view fingerprint, size_t max_labels) {
  AlertLabels out;
  std::map<std::string, std::string> labels;
  labels["alertname"] = SanitizeText(r.rule, kMaxLabelValueBytes);
  labels["severity"] = SanitizeText(r.severity, kMaxLabelValueBytes);
  labels["kind"] = SanitizeText(r.kind, kMaxLabelValueBytes);
  labels["fingerprint"] = std::string(fingerprint);
  const size_t cap = std::max<size_t>(max_labels, labels.size());
  auto add = [&](std::string name, std::string_view value, bool is_key) {
    if (labels.count(name) && is_key) name = "key_" + name;
    if (labels.count(name) || labels.size() >= cap) {
      ++out.dropped;
      return;
    }
    labels[name] = SanitizeText(value, kMaxLabelValueBytes);
  };
  for (const auto& [name, value] : info.labels) add(LabelName(name), value, 0);
  for (const auto& [name, value] : r.key) add(LabelName(name), value, true);
  out.labels.assign(labels.begin(), labels.end());
  return out;
}

LabelList BuildAlertAnnotations(const EvidenceRecord& r,
                                const AlertRuleInfo& info,
                                size_t labels_dropped) {
  LabelList a;
  std::string summary =
      absl::StrCat(r.rule, " (", r.kind, "/", r.reason, ") ", KeyText(r));
  if (!r.message.empty()) absl::StrAppend(&summary, ": ", r.message);
  a.emplace_back("summary", SanitizeText(summary, kMaxAnnotationBytes));
  if (!info.description.empty()) {
    a.emplace_back("description",
                   SanitizeText(info.description, kMaxAnnotationBytes));
  }
  if (!info.runbook.empty()) {
    a.emplace_back("runbook_url",
                   SanitizeText(info.runbook, kMaxAnnotationBytes));
  }
  a.emplace_back("evidence_id", SanitizeText(r.id, 64));
  a.emplace_back("key", SanitizeText(r.key_json, kMaxAnnotationBytes));
  if (labels_dropped > 0) {
    a.emplace_back("labels_dropped", absl::StrCat(labels_dropped));
  }
  return a;
}

absl::Status QueueViolations(StmtCache* cache, const OutboxOptions& options,
                             const std::vector<const EvidenceRecord*>& fresh,
                             int64_t now_ms) {
  if (fresh.empty()) return absl::OkStatus();
  sqlite3* db = cache->db();
  // A new violation refreshes the alert; one of a resolved alert re-opens
  // it (new start, labels as computed now).
  Stmt up(cache,
          "INSERT INTO alerts(fingerprint, rule, key_json, labels_json,"
          " annotations_json, starts_ms, last_violation_ms, active_until_ms,"
          " violations, last_evidence_id)"
          " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, 1, ?8)"
          " ON CONFLICT(fingerprint) DO UPDATE SET"
          " labels_json = CASE WHEN resolved THEN excluded.labels_json"
          "   ELSE labels_json END,"
          " annotations_json = excluded.annotations_json,"
          " starts_ms = CASE WHEN resolved THEN excluded.starts_ms"
          "   ELSE starts_ms END,"
          " last_violation_ms = max(last_violation_ms,"
          "   excluded.last_violation_ms),"
          " active_until_ms = CASE WHEN resolved THEN excluded.active_until_ms"
          "   ELSE max(active_until_ms, excluded.active_until_ms) END,"
          " violations = violations + 1,"
          " last_evidence_id = excluded.last_evidence_id,"
          " resolved = 0, resolved_ms = 0, resolved_by = '',"
          " resolve_queued = 0");
  Stmt out(cache,
           "INSERT INTO outbox(sink, status, fingerprint, evidence_id,"
           " payload, created_ms, next_attempt_ms)"
           " VALUES(?1, 'firing', ?2, ?3, ?4, ?5, 0)");
  for (Stmt* st : {&up, &out}) {
    if (!st->status().ok()) return st->status();
  }
  const int64_t hold_ms = options.hold.count();
  for (const EvidenceRecord* r : fresh) {
    const std::string fp = AlertFingerprint(r->rule, r->key);
    AlertRuleInfo info;
    if (options.rule_info) info = options.rule_info(r->rule);
    const AlertLabels labels =
        BuildAlertLabels(*r, info, fp, options.max_labels);
    const LabelList annotations =
        BuildAlertAnnotations(*r, info, labels.dropped);
    // Detection time is when the violation was seen; never in the future
    // of this commit (a skewed clock would otherwise extend the hold).
    const int64_t at = std::min(r->detected_unix_ms, now_ms);
    up.Bind(1, fp);
    up.Bind(2, r->rule);
    up.Bind(3, r->key_json);
    up.Bind(4, ToJsonObject(labels.labels));
    up.Bind(5, ToJsonObject(annotations));
    up.Bind(6, at);
    up.Bind(7, at + hold_ms);
    up.Bind(8, r->id);
    if (up.Step() != SQLITE_DONE) return SqlError(db, "upserting an alert");
    up.Reset();
    const std::string payload =
        options.violation_json ? options.violation_json(*r) : "{}";
    for (const std::string& sink : options.sinks) {
      out.Bind(1, sink);
      out.Bind(2, fp);
      out.Bind(3, r->id);
      const bool bare = std::find(options.sinks_without_payload.begin(),
                                  options.sinks_without_payload.end(),
                                  sink) != options.sinks_without_payload.end();
      out.Bind(4, bare ? std::string_view("{}") : std::string_view(payload));
      out.Bind(5, now_ms);
      if (out.Step() != SQLITE_DONE) return SqlError(db, "queueing a page");
      out.Reset();
    }
  }
  return absl::OkStatus();
}

EvidenceStore::TxnFn OutboxHook(OutboxOptions options) {
  return
      [options = std::move(options)](
          StmtCache* cache, const std::vector<const EvidenceRecord*>& fresh) {
        return QueueViolations(cache, options, fresh,
                               absl::ToUnixMillis(absl::Now()));
      };
}

absl::StatusOr<size_t> QueueResolves(sqlite3* db,
                                     const std::vector<std::string>& sinks,
                                     int64_t now_ms, int64_t forget_ms) {
  {
    Stmt s(db,
           "SELECT EXISTS(SELECT 1 FROM alerts WHERE resolved = 0 AND"
           " active_until_ms <= ?1) OR EXISTS(SELECT 1 FROM alerts WHERE"
           " resolved = 1 AND (resolve_queued = 0 OR (resolved_ms < ?2 AND"
           " NOT EXISTS(SELECT 1 FROM outbox"
           " WHERE outbox.fingerprint = alerts.fingerprint))))");
    if (!s.status().ok()) return s.status();
    s.Bind(1, now_ms);
    s.Bind(2, forget_ms);
    if (s.Step() != SQLITE_ROW) return SqlError(db, "looking for resolves");
    if (s.Int(0) == 0) return 0;
  }
  size_t queued = 0;
  absl::Status st = InTransaction(db, [&]() -> absl::Status {
    Stmt expire(db,
                "UPDATE alerts SET resolved = 1, resolved_ms = ?1,"
                " resolved_by = 'expired', resolve_queued = 0"
                " WHERE resolved = 0 AND active_until_ms <= ?1");
    Stmt count(db,
               "SELECT count(*) FROM alerts WHERE resolved = 1 AND"
               " resolve_queued = 0");
    Stmt ins(db,
             "INSERT INTO outbox(sink, status, fingerprint, evidence_id,"
             " payload, created_ms, next_attempt_ms)"
             " SELECT ?1, 'resolved', fingerprint, last_evidence_id, '', ?2, 0"
             " FROM alerts WHERE resolved = 1 AND resolve_queued = 0"
             " ORDER BY fingerprint");
    Stmt mark(db,
              "UPDATE alerts SET resolve_queued = 1 WHERE resolved = 1 AND"
              " resolve_queued = 0");
    Stmt forget(db,
                "DELETE FROM alerts WHERE resolved = 1 AND resolve_queued = 1"
                " AND resolved_ms < ?1 AND NOT EXISTS(SELECT 1 FROM outbox"
                " WHERE outbox.fingerprint = alerts.fingerprint)");
    for (Stmt* s : {&expire, &count, &ins, &mark, &forget}) {
      if (!s->status().ok()) return s->status();
    }
    expire.Bind(1, now_ms);
    if (expire.Step() != SQLITE_DONE) return SqlError(db, "expiring alerts");
    if (count.Step() != SQLITE_ROW) return SqlError(db, "counting resolves");
    queued = static_cast<size_t>(count.Int(0));
    for (const std::string& sink : sinks) {
      ins.Bind(1, sink);
      ins.Bind(2, now_ms);
      if (ins.Step() != SQLITE_DONE) return SqlError(db, "queueing resolves");
      ins.Reset();
    }
    if (mark.Step() != SQLITE_DONE) return SqlError(db, "marking resolves");
    forget.Bind(1, forget_ms);
    if (forget.Step() != SQLITE_DONE) return SqlError(db, "forgetting alerts");
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return queued;
}

namespace {

constexpr char kAlertColumns[] =
    "fingerprint, rule, key_json, labels_json, annotations_json, starts_ms,"
    " last_violation_ms, active_until_ms, violations, last_evidence_id,"
    " resolved, resolved_ms, resolved_by,"
    " (SELECT count(*) FROM outbox o WHERE o.fingerprint = alerts.fingerprint)";
// The same without the count (linear in the alert's queued rows).
constexpr char kAlertColumnsUncounted[] =
    "fingerprint, rule, key_json, labels_json, annotations_json, starts_ms,"
    " last_violation_ms, active_until_ms, violations, last_evidence_id,"
    " resolved, resolved_ms, resolved_by, 0";

AlertRow ReadAlert(const Stmt& s) {
  AlertRow a;
  a.fingerprint = s.Text(0);
  a.rule = s.Text(1);
  a.key_json = s.Text(2);
  a.labels_json = s.Text(3);
  a.annotations_json = s.Text(4);
  a.starts_ms = s.Int(5);
  a.last_violation_ms = s.Int(6);
  a.active_until_ms = s.Int(7);
  a.violations = static_cast<uint64_t>(s.Int(8));
  a.last_evidence_id = s.Text(9);
  a.resolved = s.Int(10) != 0;
  a.resolved_ms = s.Int(11);
  a.resolved_by = s.Text(12);
  a.queued = static_cast<uint64_t>(s.Int(13));
  return a;
}

}  // namespace

absl::StatusOr<std::vector<AlertRow>> ListAlerts(sqlite3* db, bool all,
                                                 size_t limit) {
  Stmt s(db, absl::StrCat("SELECT ", kAlertColumns, " FROM alerts",
                          all ? "" : " WHERE resolved = 0",
                          " ORDER BY last_violation_ms DESC, fingerprint"
                          " LIMIT ?1"));
  if (!s.status().ok()) return s.status();
  s.Bind(1, static_cast<int64_t>(limit));
  std::vector<AlertRow> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadAlert(s));
  if (rc != SQLITE_DONE) return SqlError(db, "listing alerts");
  return out;
}

absl::StatusOr<std::vector<AlertRow>> GetAlerts(
    sqlite3* db, const std::vector<std::string>& fingerprints,
    bool count_queued) {
  Stmt s(db, absl::StrCat("SELECT ",
                          count_queued ? kAlertColumns : kAlertColumnsUncounted,
                          " FROM alerts WHERE fingerprint = ?1"));
  if (!s.status().ok()) return s.status();
  std::vector<AlertRow> out;
  for (const std::string& fp : fingerprints) {
    s.Bind(1, fp);
    const int rc = s.Step();
    if (rc == SQLITE_ROW) {
      out.push_back(ReadAlert(s));
    } else if (rc != SQLITE_DONE) {
      return SqlError(db, "reading an alert");
    }
    s.Reset();
  }
  return out;
}

absl::Status ResolveAlert(sqlite3* db, std::string_view fingerprint,
                          std::string_view by, int64_t now_ms) {
  return InTransaction(db, [&]() -> absl::Status {
    Stmt get(db, "SELECT resolved FROM alerts WHERE fingerprint = ?1");
    if (!get.status().ok()) return get.status();
    get.Bind(1, fingerprint);
    const int rc = get.Step();
    if (rc == SQLITE_DONE) {
      return absl::NotFoundError(absl::StrCat("no alert with fingerprint ",
                                              SanitizeText(fingerprint, 64)));
    }
    if (rc != SQLITE_ROW) return SqlError(db, "reading the alert");
    if (get.Int(0) != 0) {
      return absl::FailedPreconditionError("the alert is already resolved");
    }
    Stmt up(db,
            "UPDATE alerts SET resolved = 1, resolved_ms = ?2,"
            " resolved_by = ?3, resolve_queued = 0 WHERE fingerprint = ?1");
    if (!up.status().ok()) return up.status();
    up.Bind(1, fingerprint);
    up.Bind(2, now_ms);
    up.Bind(3, by);
    if (up.Step() != SQLITE_DONE) return SqlError(db, "resolving the alert");
    return absl::OkStatus();
  });
}

absl::StatusOr<sqlite3*> OpenAlertDb(const std::string& path, bool read_only) {
  sqlite3* db = nullptr;
  const int flags = (read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                    SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    const std::string msg =
        db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  Stmt s(db,
         "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
         "name IN ('alerts', 'outbox', 'alerting_meta')");
  if (!s.status().ok() || s.Step() != SQLITE_ROW) {
    absl::Status st = SqlError(db, absl::StrCat(path, ": reading the schema"));
    s.Finalize();
    sqlite3_close_v2(db);
    return st;
  }
  if (s.Int(0) != 3) {
    s.Finalize();
    sqlite3_close_v2(db);
    return absl::NotFoundError(absl::StrCat(
        path, ": no alerts here (paging was never enabled with this store)"));
  }
  s.Finalize();
  return db;
}

void CloseAlertDb(sqlite3* db) { sqlite3_close_v2(db); }

std::string Rfc3339Ms(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

std::string AlertJson(const AlertRow& a) {
  nlohmann::ordered_json j;
  j["fingerprint"] = a.fingerprint;
  j["rule"] = a.rule;
  j["key"] = Json::parse(a.key_json, nullptr, false);
  if (j["key"].is_discarded()) j["key"] = nullptr;
  j["status"] = a.resolved ? "resolved" : "firing";
  j["labels"] = Json::parse(a.labels_json, nullptr, false);
  if (j["labels"].is_discarded()) j["labels"] = Json::object();
  j["annotations"] = Json::parse(a.annotations_json, nullptr, false);
  if (j["annotations"].is_discarded()) j["annotations"] = Json::object();
  j["starts_at"] = Rfc3339Ms(a.starts_ms);
  j["last_violation_at"] = Rfc3339Ms(a.last_violation_ms);
  j["active_until"] = Rfc3339Ms(a.active_until_ms);
  j["violations"] = a.violations;
  j["last_evidence_id"] = a.last_evidence_id;
  if (a.resolved) {
    j["resolved_at"] = Rfc3339Ms(a.resolved_ms);
    j["resolved_by"] = a.resolved_by;
  }
  j["queued_notifications"] = a.queued;
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), md,
       &len);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(md), len));
}

std::chrono::milliseconds BackoffDelay(int attempts,
                                       std::chrono::milliseconds initial,
                                       std::chrono::milliseconds max,
                                       double unit_random) {
  const int shift = std::clamp(attempts - 1, 0, 40);
  double d = static_cast<double>(initial.count()) * std::ldexp(1.0, shift);
  d = std::min(d, static_cast<double>(max.count()));
  const double u = std::clamp(unit_random, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<int64_t>(d / 2 + d / 2 * u));
}

}  // namespace invariantd
