#include "exporters/alerting/pager.h"

#include <curl/curl.h>
#include <sqlite3.h>

#include <algorithm>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "exporters/sqlite.h"
#include "nlohmann/json.hpp"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"
#include "sidecar/core/thread_priority.h"

namespace invariantd {

using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;
using sqlite_internal::Exec;
using sqlite_internal::InTransaction;
using sqlite_internal::SqlError;
using sqlite_internal::Stmt;

namespace {

constexpr size_t kMaxResponseBytes = 512;
constexpr size_t kMaxErrorBytes = 300;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t CurlWrite(char* p, size_t size, size_t n, void* ud) {
  auto* out = static_cast<std::string*>(ud);
  const size_t len = size * n;
  if (out->size() < kMaxResponseBytes) {
    out->append(p, std::min(len, kMaxResponseBytes - out->size()));
  }
  return len;
}

int CurlProgress(void* ud, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* abort_at = static_cast<const std::atomic<int64_t>*>(ud);
  return SteadyNs() >= abort_at->load() ? 1 : 0;
}

Json ParseObject(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Json::object();
  return j;
}

std::string Dump(const OJson& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

std::string SinkName(AlertSink::Kind kind, std::string_view url) {
  std::string_view rest = url;
  if (const size_t p = rest.find("://"); p != std::string_view::npos) {
    rest.remove_prefix(p + 3);
  }
  rest = rest.substr(0, rest.find_first_of("/?#"));
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    rest.remove_prefix(at + 1);  // userinfo (credentials) never shown
  }
  return absl::StrCat(
      kind == AlertSink::Kind::kAlertmanager ? "alertmanager/" : "webhook/",
      SanitizeText(rest, 100));
}

struct Pager::SinkState {
  AlertSink config;
  CURL* curl = nullptr;
  int64_t retry_at_ms = 0;     // backing off until then
  int64_t next_resend_ms = 0;  // Alertmanager: next resend of active alerts
  int resend_failures = 0;
  PagerSinkStats stats;  // counters (this thread); copied under mu_

  ~SinkState() {
    if (curl != nullptr) curl_easy_cleanup(curl);
  }
};

absl::StatusOr<std::unique_ptr<Pager>> Pager::Open(const std::string& db_path,
                                                   PagerOptions options) {
  static std::once_flag curl_once;
  std::call_once(curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string msg =
        db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return absl::UnavailableError(
        absl::StrCat("pager: cannot open ", db_path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  if (absl::Status st = CreateAlertingSchema(db); !st.ok()) {
    sqlite3_close_v2(db);
    return absl::Status(st.code(),
                        absl::StrCat("pager: ", db_path, ": ", st.message()));
  }
  return std::unique_ptr<Pager>(new Pager(db, std::move(options)));
}

Pager::Pager(sqlite3* db, PagerOptions options)
    : db_(db),
      options_(std::move(options)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
  external_url_ = options_.external_url;
  for (const AlertSink& s : options_.sinks) {
    auto st = std::make_unique<SinkState>();
    st->config = s;
    st->stats.name = s.name;
    sink_names_.push_back(s.name);
    sinks_.push_back(std::move(st));
  }
  stats_.sinks.resize(sinks_.size());
  for (size_t i = 0; i < sinks_.size(); ++i)
    stats_.sinks[i].name = sinks_[i]->config.name;
}

Pager::~Pager() {
  Stop();
  sinks_.clear();
  sqlite3_close_v2(db_);
}

void Pager::SetExternalUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  external_url_ = std::move(url);
}

void Pager::Start() {
  abort_at_ns_ = std::numeric_limits<int64_t>::max();
  thread_ = std::thread([this] {
    NameThisThread("inv-pager");
    Run();
  });
}

void Pager::Stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (deadline != std::chrono::steady_clock::time_point::max()) {
    abort_at_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       deadline.time_since_epoch())
                       .count();
  }
  if (thread_.joinable()) thread_.join();
}

void Pager::Notify() {
  std::lock_guard<std::mutex> l(mu_);
  notified_ = true;
  cv_.notify_all();
}

bool Pager::stopping() const {
  std::lock_guard<std::mutex> l(mu_);
  return stop_;
}

int64_t Pager::Now() const {
  return options_.now_ms ? options_.now_ms() : absl::ToUnixMillis(absl::Now());
}

double Pager::Jitter() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void Pager::Run() {
  while (true) {
    const bool more = RunOnce();
    std::unique_lock<std::mutex> l(mu_);
    if (!more) {
      cv_.wait_for(l, options_.tick, [&] { return stop_ || notified_; });
    }
    if (stop_) break;
    notified_ = false;
  }
  for (auto& s : sinks_) {
    if (s->curl != nullptr) {
      curl_easy_cleanup(s->curl);
      s->curl = nullptr;
    }
  }
}

bool Pager::RunOnce() {
  more_ = false;
  const int64_t now = Now();
  auto resolves = QueueResolves(db_, sink_names_, now,
                                now - options_.forget_resolved.count());
  if (!resolves.ok()) {
    DbError(resolves.status());
  } else if (*resolves > 0) {
    changed_ = true;
    std::lock_guard<std::mutex> l(mu_);
    stats_.resolves_queued += *resolves;
  }
  for (auto& sink : sinks_) {
    if (stopping()) break;
    if (Now() < sink->retry_at_ms) continue;
    if (sink->config.kind == AlertSink::Kind::kAlertmanager) {
      DeliverAlertmanager(*sink, Now());
      if (Now() >= sink->retry_at_ms && !stopping()) Resend(*sink, Now());
    } else {
      DeliverWebhook(*sink, Now());
    }
  }
  // The queue depth and active alerts are counted at most every
  // gauge_interval (a backlog drains without a full count per round), and
  // at the end of a drain so an empty queue shows at once.
  const int64_t end = Now();
  if (end >= next_gauges_ms_ || (changed_ && !more_)) {
    next_gauges_ms_ = end + options_.gauge_interval.count();
    changed_ = false;
    CountGauges();
  }
  PublishStats(end);
  return more_;
}

void Pager::DbError(const absl::Status& st) {
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.db_errors;
  stats_.last_db_error = SanitizeText(SV(st.message()), kMaxErrorBytes);
}

std::string Pager::EvidenceUrl(const std::string& id) const {
  return absl::StrCat(external_url_, "/v1/violations/", id);
}

absl::StatusOr<PagerOptions::Response> Pager::Post(
    SinkState& sink, const std::string& url,
    const std::vector<std::pair<std::string, std::string>>& headers,
    const std::string& body) {
  if (options_.post) return options_.post(sink.config, url, headers, body);
  if (sink.curl == nullptr) {
    sink.curl = curl_easy_init();
    if (sink.curl == nullptr) return absl::InternalError("curl_easy_init");
  }
  CURL* h = sink.curl;
  curl_easy_reset(h);
  curl_slist* hdrs = nullptr;
  for (const auto& [k, v] : headers) {
    hdrs = curl_slist_append(hdrs, absl::StrCat(k, ": ", v).c_str());
  }
  hdrs = curl_slist_append(hdrs, "Expect:");  // no 100-continue round trip
  PagerOptions::Response resp;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POST, 1L);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_USERAGENT, "invariantd");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, CurlWrite);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp.body);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, CurlProgress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &abort_at_ns_);
  const CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hdrs);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(curl_easy_strerror(rc));
  }
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  resp.status = static_cast<int>(code);
  return resp;
}

bool Pager::Succeeded(SinkState& sink,
                      const absl::StatusOr<PagerOptions::Response>& r,
                      int64_t now) {
  const bool ok = r.ok() && r->status >= 200 && r->status < 300;
  if (ok) {
    sink.stats.last_error.clear();
    sink.stats.failing_since_ms = 0;
    return true;
  }
  ++sink.stats.failures;
  sink.stats.last_error =
      r.ok() ? SanitizeText(absl::StrCat("HTTP ", r->status, ": ", r->body),
                            kMaxErrorBytes)
             : SanitizeText(SV(r.status().message()), kMaxErrorBytes);
  if (sink.stats.failing_since_ms == 0) sink.stats.failing_since_ms = now;
  return false;
}

namespace sqlite_internal {

struct DueRow {
  int64_t id = 0;
  std::string status;
  std::string fingerprint;
  std::string evidence_id;
  std::string payload;
  int64_t attempts = 0;
  int64_t next_attempt_ms = 0;
  std::string delivery;  // webhook: fixed at the first attempt; "" before
};

}  // namespace sqlite_internal

using sqlite_internal::DueRow;

namespace {

constexpr char kRowColumns[] =
    "id, status, fingerprint, evidence_id, payload, attempts,"
    " next_attempt_ms, delivery";

DueRow ReadRow(const Stmt& s) {
  DueRow r;
  r.id = s.Int(0);
  r.status = s.Text(1);
  r.fingerprint = s.Text(2);
  r.evidence_id = s.Text(3);
  r.payload = s.Text(4);
  r.attempts = s.Int(5);
  r.next_attempt_ms = s.Int(6);
  r.delivery = s.Text(7);
  return r;
}

// The head of a sink's queue. Each sink's queue is delivered strictly in
// row-id order: nothing passes a row that is not delivered yet, so a
// receiver never gets a later notification of an alert before an earlier
// one (a resolve before the firing it ends), across restarts too.
struct QueueHead {
  std::vector<DueRow> rows;  // up to `limit` rows in id order, all due
  bool full = false;         // `limit` rows, none held back
  int64_t wait_until = 0;    // the head is not due before then (0: it is)
};

// Reads up to `limit` rows of `sink` in id order (the (sink, id) index:
// linear in the rows read, whatever the backlog), cut before the first row
// not due at `now`.
absl::StatusOr<QueueHead> ReadQueueHead(sqlite3* db, const std::string& sink,
                                        int64_t now, size_t limit) {
  Stmt s(db, absl::StrCat("SELECT ", kRowColumns,
                          " FROM outbox WHERE sink = ?1 ORDER BY id"
                          " LIMIT ?2"));
  if (!s.status().ok()) return s.status();
  s.Bind(1, sink);
  s.Bind(2, static_cast<int64_t>(limit));
  QueueHead head;
  size_t read = 0;
  bool cut = false;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    ++read;
    DueRow r = ReadRow(s);
    if (r.next_attempt_ms > now) {
      if (head.rows.empty()) head.wait_until = r.next_attempt_ms;
      cut = true;
      break;
    }
    head.rows.push_back(std::move(r));
  }
  if (!cut && rc != SQLITE_DONE) return SqlError(db, "reading the outbox");
  head.full = !cut && read == limit;
  return head;
}

// Every row of one webhook delivery (its set is fixed at its first attempt).
absl::StatusOr<std::vector<DueRow>> DeliveryRows(sqlite3* db,
                                                 const std::string& sink,
                                                 const std::string& delivery) {
  Stmt s(db, absl::StrCat("SELECT ", kRowColumns,
                          " FROM outbox WHERE sink = ?1 AND delivery = ?2"
                          " AND delivery != '' ORDER BY id"));
  if (!s.status().ok()) return s.status();
  s.Bind(1, sink);
  s.Bind(2, delivery);
  std::vector<DueRow> rows;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) rows.push_back(ReadRow(s));
  if (rc != SQLITE_DONE) return SqlError(db, "reading a delivery");
  return rows;
}

absl::Status DeleteRows(sqlite3* db, const std::vector<const DueRow*>& rows) {
  return InTransaction(db, [&]() -> absl::Status {
    Stmt del(db, "DELETE FROM outbox WHERE id = ?1");
    if (!del.status().ok()) return del.status();
    for (const DueRow* r : rows) {
      del.Bind(1, r->id);
      if (del.Step() != SQLITE_DONE) return SqlError(db, "deleting a page");
      del.Reset();
    }
    return absl::OkStatus();
  });
}

absl::Status PostponeRows(sqlite3* db, const std::vector<const DueRow*>& rows,
                          int64_t next_ms, const std::string& error) {
  return InTransaction(db, [&]() -> absl::Status {
    Stmt up(db,
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?2,"
            " last_error = ?3 WHERE id = ?1");
    if (!up.status().ok()) return up.status();
    for (const DueRow* r : rows) {
      up.Bind(1, r->id);
      up.Bind(2, next_ms);
      up.Bind(3, error);
      if (up.Step() != SQLITE_DONE) return SqlError(db, "postponing a page");
      up.Reset();
    }
    return absl::OkStatus();
  });
}

struct Delivery {
  std::string id;
  std::vector<DueRow> rows;
  bool fresh = false;  // id not stored yet
};

// Stores the ids of the fresh deliveries on their rows (one transaction).
absl::Status FixDeliveries(sqlite3* db, const std::vector<Delivery>& ds) {
  return InTransaction(db, [&]() -> absl::Status {
    Stmt up(db, "UPDATE outbox SET delivery = ?2 WHERE id = ?1");
    if (!up.status().ok()) return up.status();
    for (const Delivery& d : ds) {
      if (!d.fresh) continue;
      for (const DueRow& r : d.rows) {
        up.Bind(1, r.id);
        up.Bind(2, d.id);
        if (up.Step() != SQLITE_DONE) return SqlError(db, "fixing a delivery");
        up.Reset();
      }
    }
    return absl::OkStatus();
  });
}

std::vector<const DueRow*> Pointers(const std::vector<DueRow>& rows) {
  std::vector<const DueRow*> out;
  out.reserve(rows.size());
  for (const DueRow& r : rows) out.push_back(&r);
  return out;
}

}  // namespace

std::string Pager::AlertmanagerAlert(const AlertRow& a, int64_t now) const {
  OJson j;
  j["labels"] = ParseObject(a.labels_json);
  Json ann = ParseObject(a.annotations_json);
  ann["violations"] = absl::StrCat(a.violations);
  ann["evidence_url"] = EvidenceUrl(a.last_evidence_id);
  ann["active_until"] = Rfc3339Ms(a.active_until_ms);
  if (a.resolved) ann["resolved_by"] = SanitizeText(a.resolved_by, 64);
  j["annotations"] = ann;
  j["startsAt"] = Rfc3339Ms(a.starts_ms);
  const int64_t ends = a.resolved ? std::max(a.resolved_ms, a.starts_ms)
                                  : now + options_.endsat_intervals *
                                              options_.resend_interval.count();
  j["endsAt"] = Rfc3339Ms(ends);
  j["generatorURL"] = EvidenceUrl(a.last_evidence_id);
  return Dump(j);
}

bool Pager::PostAlerts(SinkState& sink, const std::vector<AmItem>& items,
                       size_t lo, size_t hi, int64_t now,
                       std::set<std::string>* rejected,
                       std::string* reject_error) {
  std::string body = "[";
  for (size_t i = lo; i < hi; ++i) {
    absl::StrAppend(&body, i > lo ? "," : "", items[i].second);
  }
  body += "]";
  auto r = Post(sink, sink.config.url + "/api/v2/alerts",
                {{"Content-Type", "application/json"}}, body);
  if (Succeeded(sink, r, now)) return true;
  if (!r.ok() || r->status != 400) return false;
  // 400: some alert of the batch is invalid (or the whole body was refused
  // before any was read). Halve the batch until each refused alert is
  // alone: only those are given up; the others (resolves too) are sent.
  *reject_error = sink.stats.last_error;
  if (hi - lo == 1) {
    rejected->insert(items[lo].first);
    return true;
  }
  const size_t mid = lo + (hi - lo) / 2;
  return PostAlerts(sink, items, lo, mid, now, rejected, reject_error) &&
         PostAlerts(sink, items, mid, hi, now, rejected, reject_error);
}

void Pager::Postpone(SinkState& sink, const std::vector<const DueRow*>& rows,
                     int64_t now) {
  int64_t attempts = 0;
  for (const DueRow* r : rows) attempts = std::max(attempts, r->attempts);
  const int64_t next = now + BackoffDelay(static_cast<int>(attempts + 1),
                                          options_.backoff_initial,
                                          options_.backoff_max, Jitter())
                                 .count();
  sink.retry_at_ms = next;
  changed_ = true;
  if (absl::Status st = PostponeRows(db_, rows, next, sink.stats.last_error);
      !st.ok()) {
    DbError(st);
  }
}

void Pager::DeliverAlertmanager(SinkState& sink, int64_t now) {
  auto head = ReadQueueHead(db_, sink.config.name, now, options_.max_batch);
  if (!head.ok()) return DbError(head.status());
  if (head->wait_until != 0) sink.retry_at_ms = head->wait_until;
  const std::vector<DueRow>& rows = head->rows;
  if (rows.empty()) return;
  std::vector<std::string> fps;
  bool retry = false;
  for (const DueRow& r : rows) {
    if (std::find(fps.begin(), fps.end(), r.fingerprint) == fps.end()) {
      fps.push_back(r.fingerprint);
    }
    retry = retry || r.attempts > 0;
  }
  auto alerts = GetAlerts(db_, fps, /*count_queued=*/false);
  if (!alerts.ok()) return DbError(alerts.status());
  std::vector<AmItem> items;
  for (const AlertRow& a : *alerts) {
    items.emplace_back(a.fingerprint, AlertmanagerAlert(a, now));
  }
  const std::vector<const DueRow*> all = Pointers(rows);
  std::set<std::string> rejected;
  std::string reject_error;
  if (!items.empty()) {
    if (retry) ++sink.stats.retries;
    if (!PostAlerts(sink, items, 0, items.size(), now, &rejected,
                    &reject_error)) {
      return Postpone(sink, all, now);
    }
  }
  if (absl::Status st = DeleteRows(db_, all); !st.ok()) return DbError(st);
  changed_ = true;
  size_t refused = 0;
  for (const DueRow& r : rows) refused += rejected.count(r.fingerprint);
  const size_t delivered = rows.size() - refused;
  const size_t sent = items.size() - rejected.size();
  sink.stats.rejected += refused;
  sink.stats.delivered += delivered;
  sink.stats.grouped += delivered - std::min(delivered, sent);
  if (delivered > 0) ++sink.stats.deliveries;
  if (!rejected.empty()) {
    // Counted as a failure, its message shown until the next success.
    sink.stats.last_error = reject_error;
    if (sink.stats.failing_since_ms == 0) sink.stats.failing_since_ms = now;
  }
  if (head->full) more_ = true;
}

void Pager::DeliverWebhook(SinkState& sink, int64_t now) {
  auto head = ReadQueueHead(db_, sink.config.name, now, options_.max_batch);
  if (!head.ok()) return DbError(head.status());
  if (head->wait_until != 0) sink.retry_at_ms = head->wait_until;
  // Deliveries in the order of their first row. A delivery whose id is
  // stored is sent again with exactly its rows. New rows are grouped per
  // fingerprint: a row joins the fingerprint's open group when it has the
  // same status, else opens the next one, so the last message a receiver
  // gets for a fingerprint is its latest status ([firing, resolved,
  // firing] is three deliveries, in that order).
  std::vector<Delivery> deliveries;
  std::set<std::string> seen;
  std::map<std::string, size_t> open;  // fingerprint -> its open delivery
  for (const DueRow& r : head->rows) {
    if (!r.delivery.empty()) {
      open.erase(r.fingerprint);
      if (!seen.insert(r.delivery).second) continue;
      auto rows = DeliveryRows(db_, sink.config.name, r.delivery);
      if (!rows.ok()) return DbError(rows.status());
      deliveries.push_back({r.delivery, *std::move(rows), false});
      continue;
    }
    auto it = open.find(r.fingerprint);
    if (it != open.end() &&
        deliveries[it->second].rows.back().status == r.status) {
      deliveries[it->second].rows.push_back(r);
      continue;
    }
    open[r.fingerprint] = deliveries.size();
    deliveries.push_back({DeliveryId(sink.config.name, r.id), {r}, true});
  }
  if (deliveries.empty()) return;
  // The set of a delivery is fixed before its first attempt, so a retry
  // (after a timeout the receiver may have seen, or a restart) carries the
  // same id and the same notifications.
  if (absl::Status st = FixDeliveries(db_, deliveries); !st.ok()) {
    return DbError(st);
  }
  for (const Delivery& d : deliveries) {
    if (stopping()) return;
    const std::vector<const DueRow*> group = Pointers(d.rows);
    const DueRow& first = *group.front();
    auto alerts = GetAlerts(db_, {first.fingerprint}, /*count_queued=*/false);
    if (!alerts.ok()) return DbError(alerts.status());
    OJson j;
    j["version"] = 1;
    j["delivery_id"] = d.id;
    j["status"] = first.status;
    j["fingerprint"] = first.fingerprint;
    if (!alerts->empty()) {
      const AlertRow& a = alerts->front();
      j["rule"] = a.rule;
      j["labels"] = ParseObject(a.labels_json);
      j["annotations"] = ParseObject(a.annotations_json);
      j["starts_at"] = Rfc3339Ms(a.starts_ms);
      j["active_until"] = Rfc3339Ms(a.active_until_ms);
      j["violations_total"] = a.violations;
      if (first.status == "resolved" && a.resolved) {
        j["resolved_at"] = Rfc3339Ms(a.resolved_ms);
        j["resolved_by"] = a.resolved_by;
      }
    }
    j["count"] = group.size();
    Json violations = Json::array();
    size_t omitted = 0;
    if (first.status == "firing") {
      for (const DueRow* r : group) {
        if (violations.size() >= options_.max_webhook_violations) {
          ++omitted;
          continue;
        }
        Json v = Json::parse(r->payload, nullptr, false);
        if (v.is_discarded() || !v.is_object())
          v = Json{{"id", r->evidence_id}};
        v["evidence_url"] = EvidenceUrl(r->evidence_id);
        violations.push_back(std::move(v));
      }
    }
    j["omitted"] = omitted;
    j["violations"] = violations;
    j["evidence_url"] = EvidenceUrl(group.back()->evidence_id);
    j["sent_at"] = Rfc3339Ms(now);
    const std::string body = Dump(j);
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"},
        {"X-Invariantd-Delivery", d.id},
        {"X-Invariantd-Timestamp", absl::StrCat(now / 1000)}};
    if (!sink.config.secret.empty()) {
      headers.emplace_back("X-Invariantd-Signature",
                           "sha256=" + HmacSha256Hex(sink.config.secret, body));
    }
    bool retry = false;
    for (const DueRow* r : group) retry = retry || r->attempts > 0;
    if (retry) ++sink.stats.retries;
    auto r = Post(sink, sink.config.url, headers, body);
    if (!Succeeded(sink, r, now)) return Postpone(sink, group, now);
    if (absl::Status st = DeleteRows(db_, group); !st.ok()) return DbError(st);
    changed_ = true;
    sink.stats.delivered += group.size();
    sink.stats.grouped += group.size() - 1;
    ++sink.stats.deliveries;
  }
  if (head->full) more_ = true;
}

std::string Pager::DeliveryId(const std::string& sink, int64_t first_row) {
  // Random (row ids repeat across databases: receivers shared by several
  // invariantd must not see one id twice), and bound to the sink and the
  // delivery's first row (never reused in this database), so it is unique
  // even when the generator is seeded.
  std::string raw(16, '\0');
  for (size_t i = 0; i < raw.size(); i += 8) {
    const uint64_t x = rng_();
    for (size_t b = 0; b < 8; ++b) {
      raw[i + b] = static_cast<char>((x >> (8 * b)) & 0xff);
    }
  }
  return HmacSha256Hex(raw, absl::StrCat(sink, "|", first_row)).substr(0, 32);
}

void Pager::Resend(SinkState& sink, int64_t now) {
  if (now < sink.next_resend_ms) return;
  std::vector<std::string> fps;
  {
    Stmt s(db_,
           "SELECT fingerprint FROM alerts WHERE resolved = 0"
           " ORDER BY fingerprint");
    if (!s.status().ok()) return DbError(s.status());
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) fps.push_back(s.Text(0));
    if (rc != SQLITE_DONE) return DbError(SqlError(db_, "listing alerts"));
  }
  for (size_t i = 0; i < fps.size(); i += options_.max_batch) {
    if (stopping()) return;
    std::vector<std::string> chunk(
        fps.begin() + static_cast<ptrdiff_t>(i),
        fps.begin() + static_cast<ptrdiff_t>(
                          std::min(fps.size(), i + options_.max_batch)));
    auto alerts = GetAlerts(db_, chunk, /*count_queued=*/false);
    if (!alerts.ok()) return DbError(alerts.status());
    std::vector<std::string> items;
    for (const AlertRow& a : *alerts) {
      if (!a.resolved) items.push_back(AlertmanagerAlert(a, now));
    }
    if (items.empty()) continue;
    auto r = Post(sink, sink.config.url + "/api/v2/alerts",
                  {{"Content-Type", "application/json"}},
                  absl::StrCat("[", absl::StrJoin(items, ","), "]"));
    if (!Succeeded(sink, r, now) && !(r.ok() && r->status == 400)) {
      ++sink.resend_failures;
      sink.next_resend_ms =
          now +
          BackoffDelay(sink.resend_failures, options_.backoff_initial,
                       std::min(options_.backoff_max, options_.resend_interval),
                       Jitter())
              .count();
      return;
    }
    ++sink.stats.resends;
  }
  sink.resend_failures = 0;
  sink.next_resend_ms = now + options_.resend_interval.count();
}

void Pager::CountGauges() {
  std::map<std::string, std::pair<uint64_t, int64_t>> depth;
  {
    Stmt s(db_,
           "SELECT sink, count(*), min(created_ms) FROM outbox GROUP BY sink");
    if (!s.status().ok()) return DbError(s.status());
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      depth[s.Text(0)] = {static_cast<uint64_t>(s.Int(1)), s.Int(2)};
    }
    if (rc != SQLITE_DONE) return DbError(SqlError(db_, "outbox depth"));
  }
  Stmt s(db_, "SELECT count(*) FROM alerts WHERE resolved = 0");
  if (!s.status().ok() || s.Step() != SQLITE_ROW) {
    return DbError(SqlError(db_, "counting alerts"));
  }
  active_ = static_cast<uint64_t>(s.Int(0));
  depth_ = std::move(depth);
}

void Pager::PublishStats(int64_t now) {
  // Ages move on between counts.
  auto age = [&](int64_t oldest) {
    return static_cast<double>(std::max<int64_t>(0, now - oldest)) / 1000.0;
  };
  std::lock_guard<std::mutex> l(mu_);
  stats_.active_alerts = active_;
  stats_.sinks.clear();
  std::map<std::string, std::pair<uint64_t, int64_t>> depth = depth_;
  for (auto& sink : sinks_) {
    PagerSinkStats st = sink->stats;
    auto it = depth.find(sink->config.name);
    st.queued = it == depth.end() ? 0 : it->second.first;
    st.oldest_age_s = it == depth.end() ? 0 : age(it->second.second);
    if (it != depth.end()) depth.erase(it);
    stats_.sinks.push_back(std::move(st));
  }
  for (const auto& [name, d] : depth) {  // rows of sinks no longer configured
    PagerSinkStats st;
    st.name = name;
    st.configured = false;
    st.queued = d.first;
    st.oldest_age_s = age(d.second);
    stats_.sinks.push_back(std::move(st));
  }
}

PagerStats Pager::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

std::string Pager::HealthDetail() const {
  const PagerStats st = Stats();
  std::vector<std::string> problems;
  const int64_t now = Now();
  for (const PagerSinkStats& s : st.sinks) {
    if (!s.configured) {
      problems.push_back(absl::StrCat(s.queued, " pages queued for ", s.name,
                                      ", which is no longer configured"));
    } else if (s.failing_since_ms != 0) {
      problems.push_back(absl::StrCat(
          s.name, " failing for ", (now - s.failing_since_ms) / 1000, "s (",
          s.last_error, "), ", s.queued, " pages queued"));
    }
  }
  if (st.db_errors > 0 && !st.last_db_error.empty()) {
    problems.push_back(absl::StrCat("outbox database: ", st.last_db_error));
  }
  return SanitizeText(absl::StrJoin(problems, "; "), 2000);
}

}  // namespace invariantd
