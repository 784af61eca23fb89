// Pager: delivers the alert outbox (outbox.h) to Alertmanager and webhook
// sinks, re-sends active alerts, and queues resolves.
//
// One thread with its own SQLite connection to the evidence database (WAL;
// busy timeout; every write is one short IMMEDIATE transaction, so the
// evidence writer is never held up for longer than a few row updates). Each
// round it
//   1. resolves alerts whose hold expired and queues the resolves of every
//      resolved alert (QueueResolves);
//   2. per sink, takes up to max_batch rows from the head of its queue (in
//      row-id order, strictly: while the head is not due, i.e. backing
//      off, nothing of that sink is sent) and delivers them:
//        Alertmanager: one POST /api/v2/alerts with one alert per
//          fingerprint in the batch, in its current state (firing with
//          endsAt = now + endsat_intervals * resend_interval, or resolved
//          with endsAt = the resolve time); on a 400 the batch is halved
//          until the refused alerts are alone, and only those are dropped
//          (counted as rejected);
//        webhook: one POST per run of rows of a fingerprint with the same
//          status, in queue order (a status change starts the next one),
//          carrying the number of notifications it stands for and up to
//          max_webhook_violations of the violations (the rest are counted
//          in `omitted`, never dropped silently); its delivery id and rows
//          are stored before the first attempt and reused by every retry;
//      a 2xx deletes the delivered rows; anything else (or a timeout) keeps
//      them, increments their attempts and sets their next attempt after an
//      exponential backoff with jitter (BackoffDelay), persisted, so a
//      restart continues where it was;
//   3. per Alertmanager sink, every resend_interval (and at start), re-sends
//      every active alert, so an Alertmanager that lost its state (restart
//      with empty storage) gets them back; a failed resend is retried after
//      the backoff.
// Delivery is at least once: a crash between a POST and the delete sends
// again. Alertmanager deduplicates by labels; webhook receivers by the
// X-Invariantd-Delivery header or the evidence ids in the body.
//
// Thread-safety: Start/Stop from one thread; Notify, Stats and SetExternalUrl
// (before Start) from any.
#ifndef INVARIANTD_EXPORTERS_ALERTING_PAGER_H_
#define INVARIANTD_EXPORTERS_ALERTING_PAGER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exporters/alerting/outbox.h"

struct sqlite3;

namespace invariantd {
namespace sqlite_internal {
struct DueRow;
}  // namespace sqlite_internal

struct AlertSink {
  enum class Kind { kAlertmanager, kWebhook };
  Kind kind = Kind::kAlertmanager;
  // Shown in logs and metrics (no credentials): "alertmanager/HOST:PORT" or
  // "webhook/HOST:PORT" (with "#N" appended when two sinks share it).
  std::string name;
  std::string url;     // base URL (Alertmanager) or the full URL (webhook)
  std::string secret;  // webhook HMAC key; empty: no signature header
};

// The sink name for `url` (scheme, userinfo, path and query left out).
std::string SinkName(AlertSink::Kind kind, std::string_view url);

struct PagerOptions {
  std::vector<AlertSink> sinks;
  // Base of the evidence links (generatorURL): <external_url>/v1/violations/ID
  std::string external_url;
  std::chrono::milliseconds resend_interval{std::chrono::minutes(1)};
  int endsat_intervals = 4;
  std::chrono::milliseconds timeout{5000};
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{std::chrono::minutes(5)};
  size_t max_batch = 500;
  size_t max_webhook_violations = 20;
  // Resolved alerts with nothing queued are forgotten after this long.
  std::chrono::milliseconds forget_resolved{std::chrono::hours(24 * 7)};
  // Longest wait between rounds when nothing wakes the pager.
  std::chrono::milliseconds tick{500};
  // The queue depth and active alert gauges are counted at most this often
  // (and when a drain ends).
  std::chrono::milliseconds gauge_interval{2000};

  // Test seams: the HTTP POST (default: libcurl) and the wall clock.
  struct Response {
    int status = 0;
    std::string body;  // first bytes, for the error message
  };
  using PostFn = std::function<absl::StatusOr<Response>(
      const AlertSink& sink, const std::string& url,
      const std::vector<std::pair<std::string, std::string>>& headers,
      const std::string& body)>;
  PostFn post;
  std::function<int64_t()> now_ms;
  uint64_t seed = 0;  // jitter; 0: random
};

struct PagerSinkStats {
  std::string name;
  bool configured = true;        // false: rows queued for a removed sink
  uint64_t queued = 0;           // outbox rows waiting
  double oldest_age_s = 0;       // age of the oldest waiting row
  uint64_t delivered = 0;        // notifications delivered (rows)
  uint64_t grouped = 0;          // of those, folded into another's delivery
  uint64_t rejected = 0;         // refused by Alertmanager as invalid (400)
  uint64_t deliveries = 0;       // successful POSTs
  uint64_t failures = 0;         // failed POSTs (deliveries and resends)
  uint64_t retries = 0;          // POSTs of rows that had failed before
  uint64_t resends = 0;          // successful resend POSTs
  std::string last_error;        // of the last failure, until a success
  int64_t failing_since_ms = 0;  // 0: last attempt succeeded
};

struct PagerStats {
  std::vector<PagerSinkStats> sinks;
  uint64_t active_alerts = 0;
  uint64_t resolves_queued = 0;
  uint64_t db_errors = 0;
  std::string last_db_error;
};

class Pager {
 public:
  // Opens its own connection to `db_path` (the alerting schema must exist:
  // CreateAlertingSchema on the store's connection first).
  static absl::StatusOr<std::unique_ptr<Pager>> Open(const std::string& db_path,
                                                     PagerOptions options);
  ~Pager();  // Stop()
  Pager(const Pager&) = delete;
  Pager& operator=(const Pager&) = delete;

  void SetExternalUrl(std::string url);
  void Start();
  // Stops the thread, aborting a POST in flight at `deadline` at the latest.
  // Whatever is undelivered stays in the outbox for the next start.
  void Stop(std::chrono::steady_clock::time_point deadline =
                std::chrono::steady_clock::time_point::max());
  // Wakes the thread (new outbox rows or a resolve).
  void Notify();
  // One round (what the thread does), for tests without the thread. True
  // when a full batch was delivered (more may be due at once).
  bool RunOnce();

  PagerStats Stats() const;
  // "" when every sink delivers; otherwise one short sanitized line.
  std::string HealthDetail() const;

 private:
  struct SinkState;
  Pager(sqlite3* db, PagerOptions options);
  void Run();
  bool stopping() const;
  int64_t Now() const;
  // (fingerprint, alert JSON)
  using AmItem = std::pair<std::string, std::string>;
  void DeliverAlertmanager(SinkState& sink, int64_t now);
  // POSTs items[lo, hi); on a 400 bisects to find the refused alerts, which
  // are added to `rejected`. False on any other failure.
  bool PostAlerts(SinkState& sink, const std::vector<AmItem>& items, size_t lo,
                  size_t hi, int64_t now, std::set<std::string>* rejected,
                  std::string* reject_error);
  void DeliverWebhook(SinkState& sink, int64_t now);
  std::string DeliveryId(const std::string& sink, int64_t first_row);
  // Keeps `rows` for a retry after the backoff (persisted).
  void Postpone(SinkState& sink,
                const std::vector<const sqlite_internal::DueRow*>& rows,
                int64_t now);
  void Resend(SinkState& sink, int64_t now);
  void CountGauges();
  void PublishStats(int64_t now);
  absl::StatusOr<PagerOptions::Response> Post(
      SinkState& sink, const std::string& url,
      const std::vector<std::pair<std::string, std::string>>& headers,
      const std::string& body);
  bool Succeeded(SinkState& sink,
                 const absl::StatusOr<PagerOptions::Response>& r, int64_t now);
  void DbError(const absl::Status& st);
  std::string AlertmanagerAlert(const AlertRow& a, int64_t now) const;
  std::string EvidenceUrl(const std::string& id) const;
  double Jitter();

  sqlite3* db_;  // the pager thread's (or RunOnce's caller's)
  PagerOptions options_;
  std::vector<std::unique_ptr<SinkState>> sinks_;
  std::vector<std::string> sink_names_;
  std::mt19937_64 rng_;
  std::string external_url_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool notified_ = false;
  // A POST in flight is aborted once the steady clock passes this.
  std::atomic<int64_t> abort_at_ns_{std::numeric_limits<int64_t>::max()};
  // Pager thread:
  bool more_ = false;     // a full batch went out: more may be due at once
  bool changed_ = false;  // the outbox changed since the last count
  int64_t next_gauges_ms_ = 0;
  uint64_t active_ = 0;
  // sink -> (rows queued, oldest created_ms), as last counted
  std::map<std::string, std::pair<uint64_t, int64_t>> depth_;
  PagerStats stats_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_ALERTING_PAGER_H_
