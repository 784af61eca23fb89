// The alert outbox: labels, fingerprint, HMAC, backoff, the evidence
// transaction hook, the resolve policy, and the pager's delivery, retry,
// resend and grouping against a fake HTTP endpoint (no network).
#include "exporters/alerting/outbox.h"

#include <sqlite3.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "exporters/alerting/pager.h"
#include "exporters/evidence/store.h"
#include "exporters/sqlite.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

EvidenceRecord Record(std::string id, std::string rule, std::string key_value,
                      int64_t detected_ms) {
  EvidenceRecord r;
  r.id = std::move(id);
  r.rule = std::move(rule);
  r.kind = "monotonic";
  r.severity = "critical";
  r.reason = "regressed";
  r.message = "term went from 5 to 4";
  r.key = {{"event.nid", key_value}};
  r.key_json = absl::StrCat("{\"event.nid\":\"", key_value, "\"}");
  r.observed_json = "4";
  r.previous_json = "5";
  r.source = "test";
  r.line = 1;
  r.witness = "{}";
  r.ruleset_digest = "d";
  r.version = "v";
  r.detected_unix_ms = detected_ms;
  return r;
}

int64_t Count(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  int64_t n = -1;
  if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

TEST(AlertLabelsTest, FingerprintIsRuleAndKey) {
  const std::string a = AlertFingerprint("r", {{"k", "1"}});
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a, AlertFingerprint("r", {{"k", "1"}}));
  EXPECT_NE(a, AlertFingerprint("r", {{"k", "2"}}));
  EXPECT_NE(a, AlertFingerprint("r2", {{"k", "1"}}));
  // Length prefixes: no ambiguity between ("ab","c") and ("a","bc").
  EXPECT_NE(AlertFingerprint("r", {{"ab", "c"}}),
            AlertFingerprint("r", {{"a", "bc"}}));
}

TEST(AlertLabelsTest, LabelNamesAreValid) {
  EXPECT_EQ(LabelName("event.nid"), "event_nid");
  EXPECT_EQ(LabelName("9lives"), "_9lives");
  EXPECT_EQ(LabelName("__name__"), "k__name__");
  EXPECT_EQ(LabelName(""), "_");
  EXPECT_EQ(LabelName("a-b c\n\xe2\x80\xae"), "a_b_c____");
  EXPECT_EQ(LabelName(std::string(500, 'x')).size(), 128u);
}

TEST(AlertLabelsTest, FixedRuleAndKeyLabelsSanitizedAndBounded) {
  EvidenceRecord r = Record("id1", "term-never-regresses", "n1\x1b[31m\n", 1);
  r.key.emplace_back("severity", "evil");  // collides with a fixed label
  AlertRuleInfo info;
  info.labels = {{"team", "storage"}, {"alertname", "forged"}};
  const AlertLabels l = BuildAlertLabels(r, info, "fp", 32);
  std::map<std::string, std::string> m(l.labels.begin(), l.labels.end());
  EXPECT_EQ(m["alertname"], "term-never-regresses");
  EXPECT_EQ(m["severity"], "critical");
  EXPECT_EQ(m["kind"], "monotonic");
  EXPECT_EQ(m["fingerprint"], "fp");
  EXPECT_EQ(m["team"], "storage");
  EXPECT_EQ(m["event_nid"], "n1\\x1b[31m\\n");
  EXPECT_EQ(m["key_severity"], "evil");
  EXPECT_EQ(l.dropped, 1u);  // the rule's "alertname" cannot override
  for (const auto& [k, v] : l.labels) {
    for (char c : v) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << k;
  }
  // A cap: the four fixed labels always, the rest counted as dropped.
  r.key.clear();
  for (int i = 0; i < 10; ++i) r.key.emplace_back(absl::StrCat("f", i), "v");
  const AlertLabels capped = BuildAlertLabels(r, {}, "fp", 6);
  EXPECT_EQ(capped.labels.size(), 6u);
  EXPECT_EQ(capped.dropped, 8u);
  const LabelList ann = BuildAlertAnnotations(r, info, capped.dropped);
  EXPECT_THAT(ann, ::testing::Contains(std::pair<std::string, std::string>(
                       "labels_dropped", "8")));
  // A long value is capped, visibly.
  r.key = {{"k", std::string(1000, 'v')}};
  const AlertLabels longv = BuildAlertLabels(r, {}, "fp", 32);
  for (const auto& [k, v] : longv.labels) {
    if (k == "k") {
      EXPECT_LE(v.size(), kMaxLabelValueBytes + 24);  // + the marker
      EXPECT_THAT(v, HasSubstr("bytes]"));
    }
  }
}

TEST(HmacTest, Rfc4231AndOpensslCommandLine) {
  // RFC 4231 test case 2.
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  // The same as `openssl dgst -sha256 -hmac KEY` computes, when installed.
  FILE* p = popen(
      "printf '%s' '{\"a\":1}' | openssl dgst -sha256 -hmac 's3cret' "
      "2>/dev/null",
      "r");
  ASSERT_NE(p, nullptr);
  char buf[256] = {0};
  const size_t n = fread(buf, 1, sizeof(buf) - 1, p);
  pclose(p);
  const std::string out(buf, n);
  if (out.empty()) GTEST_SKIP() << "openssl command not installed";
  EXPECT_THAT(out, HasSubstr(HmacSha256Hex("s3cret", "{\"a\":1}")));
}

TEST(BackoffTest, ExponentialCappedWithJitter) {
  using std::chrono::milliseconds;
  const milliseconds init(100), max(1000);
  EXPECT_EQ(BackoffDelay(1, init, max, 0.0), milliseconds(50));
  EXPECT_EQ(BackoffDelay(1, init, max, 0.999), milliseconds(99));
  EXPECT_EQ(BackoffDelay(2, init, max, 0.0), milliseconds(100));
  EXPECT_EQ(BackoffDelay(3, init, max, 0.0), milliseconds(200));
  EXPECT_EQ(BackoffDelay(30, init, max, 0.0), milliseconds(500));
  EXPECT_EQ(BackoffDelay(1000, init, max, 1.0), milliseconds(1000));
  for (int a = 1; a < 50; ++a) {
    const auto d = BackoffDelay(a, init, max, 0.5);
    EXPECT_GE(d, milliseconds(50));
    EXPECT_LE(d, max);
  }
}

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("evidence.db");
    auto s = EvidenceStore::Open(path_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    ASSERT_TRUE(CreateAlertingSchema(store_->db()).ok());
    OutboxOptions o;
    o.sinks = {"am", "hook"};
    o.sinks_without_payload = {"am"};
    o.hold = std::chrono::milliseconds(hold_ms_);
    o.rule_info = [](std::string_view rule) {
      AlertRuleInfo i;
      i.description = "about " + std::string(rule);
      i.runbook = "https://runbook.example/x";
      i.labels = {{"team", "storage"}};
      return i;
    };
    o.violation_json = [](const EvidenceRecord& r) {
      return absl::StrCat("{\"id\":\"", r.id, "\",\"rule\":\"", r.rule, "\"}");
    };
    store_->AddTxnHook(OutboxHook(o));
  }
  void Append(std::vector<EvidenceRecord> recs) {
    auto n = store_->Append(&recs);
    ASSERT_TRUE(n.ok()) << n.status();
  }
  sqlite3* db() { return store_->db(); }

  TempDir dir_;
  std::string path_;
  std::unique_ptr<EvidenceStore> store_;
  int64_t hold_ms_ = 60000;
};

TEST_F(OutboxTest, HookQueuesOnePagePerSinkAndOneAlertPerKey) {
  const int64_t now = absl::ToUnixMillis(absl::Now());
  Append({Record("a1", "r", "1", now), Record("a2", "r", "1", now),
          Record("b1", "r", "2", now)});
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM alerts"), 2);
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 6);
  // Only the webhook keeps a copy of the violation.
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM outbox WHERE sink = 'am' AND "
                  "payload = '{}'"),
            3);
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM outbox WHERE sink = 'hook' AND "
                  "payload LIKE '{\"id\":%'"),
            3);
  EXPECT_EQ(Count(db(),
                  "SELECT violations FROM alerts WHERE "
                  "last_evidence_id = 'a2'"),
            2);
  // Re-evaluation after a crash: ids already stored, nothing queued again.
  Append({Record("a1", "r", "1", now), Record("b1", "r", "2", now)});
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 6);
  auto alerts = ListAlerts(db(), false, 10);
  ASSERT_TRUE(alerts.ok());
  ASSERT_EQ(alerts->size(), 2u);
  const Json j = Json::parse(AlertJson(alerts->front()));
  EXPECT_EQ(j["labels"]["team"], "storage");
  EXPECT_EQ(j["labels"]["alertname"], "r");
  EXPECT_EQ(j["annotations"]["runbook_url"], "https://runbook.example/x");
  EXPECT_EQ(j["status"], "firing");
}

// The hook runs in the evidence commit of every violation: its statements
// come from the store's cache, so after the first commit with violations no
// commit compiles the outbox's SQL again. SQLite consults the authorizer
// when it compiles a statement (not when it runs one): count its INSERT
// checks on the alerting tables.
int CountAlertingInserts(void* count, int action, const char* table,
                         const char*, const char*, const char*) {
  if (action == SQLITE_INSERT && table != nullptr &&
      (std::string_view(table) == "outbox" ||
       std::string_view(table) == "alerts")) {
    ++*static_cast<int*>(count);
  }
  return SQLITE_OK;
}

TEST_F(OutboxTest, HookCompilesItsStatementsOnce) {
  int compiles = 0;
  ASSERT_EQ(sqlite3_set_authorizer(db(), CountAlertingInserts, &compiles),
            SQLITE_OK);
  const int64_t now = absl::ToUnixMillis(absl::Now());
  Append({Record("c1", "r", "1", now)});
  EXPECT_EQ(compiles, 2);  // the alert upsert and the outbox insert
  for (int i = 2; i <= 5; ++i) {
    Append({Record(absl::StrCat("c", i), "r", absl::StrCat(i % 2), now)});
  }
  EXPECT_EQ(compiles, 2);
  sqlite3_set_authorizer(db(), nullptr, nullptr);
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 10);
  EXPECT_EQ(Count(db(), "SELECT sum(violations) FROM alerts"), 5);
}

TEST_F(OutboxTest, HookFailureRollsBackTheEvidence) {
  ASSERT_EQ(sqlite3_exec(db(), "DROP TABLE outbox", nullptr, nullptr, nullptr),
            SQLITE_OK);
  std::vector<EvidenceRecord> recs = {Record("x", "r", "1", 1)};
  EXPECT_FALSE(store_->Append(&recs).ok());
  auto got = store_->Get("x");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());  // stored iff its pages are queued
}

TEST_F(OutboxTest, HoldExpiryResolvesAndNewViolationRefreshes) {
  const int64_t t0 = 1'700'000'000'000;
  Append({Record("a1", "r", "1", t0)});
  // Not expired yet: nothing to do.
  auto q = QueueResolves(db(), {"am", "hook"}, t0 + hold_ms_ - 1, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 0u);
  // A new violation refreshes the hold.
  Append({Record("a2", "r", "1", t0 + 1000)});
  q = QueueResolves(db(), {"am", "hook"}, t0 + hold_ms_ + 500, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 0u);
  q = QueueResolves(db(), {"am", "hook"}, t0 + hold_ms_ + 1000, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 1u);
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM outbox WHERE status = "
                  "'resolved'"),
            2);
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM alerts WHERE resolved = 1 AND "
                  "resolved_by = 'expired'"),
            1);
  // Queued once only.
  q = QueueResolves(db(), {"am", "hook"}, t0 + hold_ms_ + 2000, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 0u);
  // A violation after the resolve re-opens it with a new start.
  Append({Record("a3", "r", "1", t0 + hold_ms_ + 5000)});
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM alerts WHERE resolved = 0 AND "
                  "starts_ms = " +
                      std::to_string(t0 + hold_ms_ + 5000)),
            1);
}

TEST_F(OutboxTest, OperatorResolveThroughItsOwnConnection) {
  Append({Record("a1", "r", "1", absl::ToUnixMillis(absl::Now()))});
  const std::string fp = AlertFingerprint("r", {{"event.nid", "1"}});
  auto other = OpenAlertDb(path_, /*read_only=*/false);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(absl::IsNotFound(ResolveAlert(*other, "nope", "op", 1)));
  EXPECT_TRUE(ResolveAlert(*other, fp, "operator", 5).ok());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(ResolveAlert(*other, fp, "operator", 6)));
  CloseAlertDb(*other);
  auto q = QueueResolves(db(), {"am"}, 10, 0);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, 1u);
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM alerts WHERE resolved_by = "
                  "'operator'"),
            1);
  // Resolved alerts with nothing queued are forgotten after a while.
  ASSERT_EQ(sqlite3_exec(db(), "DELETE FROM outbox", nullptr, nullptr, nullptr),
            SQLITE_OK);
  q = QueueResolves(db(), {"am"}, 20, /*forget_ms=*/100);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM alerts"), 0);
}

// Issue: resolved alerts whose rows wait for a removed sink kept the
// pre-check true, so every round took the write lock for nothing.
TEST_F(OutboxTest, NoTransactionWhenOnlyRowsOfARemovedSinkAreLeft) {
  Append({Record("a1", "r", "1", 1000)});
  auto q = QueueResolves(db(), {"am", "gone"}, 1000 + hold_ms_, 0);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(*q, 1u);
  // "am" and "hook" delivered everything; rows for "gone" stay.
  ASSERT_EQ(sqlite3_exec(db(), "DELETE FROM outbox WHERE sink != 'gone'",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  int begins = 0;
  sqlite3_trace_v2(
      db(), SQLITE_TRACE_STMT,
      [](unsigned, void* ctx, void*, void* x) {
        const char* sql = static_cast<const char*>(x);
        if (std::string_view(sql).starts_with("BEGIN")) {
          ++*static_cast<int*>(ctx);
        }
        return 0;
      },
      &begins);
  for (int i = 0; i < 3; ++i) {
    q = QueueResolves(db(), {"am"}, 1'000'000 + i, /*forget_ms=*/500'000);
    ASSERT_TRUE(q.ok());
    EXPECT_EQ(*q, 0u);
  }
  sqlite3_trace_v2(db(), 0, nullptr, nullptr);
  EXPECT_EQ(begins, 0);
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM alerts"), 1);  // rows left
}

// A rollback to a build that reads an older alerting schema refuses the
// newer tables instead of writing into them (docs/operations.md).
TEST(AlertingSchemaTest, ANewerVersionIsRefused) {
  TempDir dir;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.File("v3.db").c_str(), &db), SQLITE_OK);
  ASSERT_TRUE(CreateAlertingSchema(db).ok());
  ASSERT_EQ(sqlite3_exec(db, "UPDATE alerting_meta SET version = 3", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  const absl::Status st = CreateAlertingSchema(db);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("alerting tables have version 3, newer than "
                              "this invariantd reads (2)"),
            std::string::npos)
      << st;
  EXPECT_EQ(Count(db, "SELECT max(version) FROM alerting_meta"), 3);
  sqlite3_close(db);
}

TEST(AlertingSchemaTest, Version1IsMigrated) {
  TempDir dir;
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir.File("v1.db").c_str(), &db), SQLITE_OK);
  const char* v1 =
      "CREATE TABLE alerting_meta(version INTEGER NOT NULL);"
      "INSERT INTO alerting_meta VALUES(1);"
      "CREATE TABLE alerts(fingerprint TEXT PRIMARY KEY, rule TEXT NOT NULL,"
      " key_json TEXT NOT NULL, labels_json TEXT NOT NULL,"
      " annotations_json TEXT NOT NULL, starts_ms INTEGER NOT NULL,"
      " last_violation_ms INTEGER NOT NULL, active_until_ms INTEGER NOT NULL,"
      " violations INTEGER NOT NULL, last_evidence_id TEXT NOT NULL,"
      " resolved INTEGER NOT NULL DEFAULT 0,"
      " resolved_ms INTEGER NOT NULL DEFAULT 0,"
      " resolved_by TEXT NOT NULL DEFAULT '',"
      " resolve_queued INTEGER NOT NULL DEFAULT 0);"
      "CREATE INDEX alerts_open ON alerts(resolved, active_until_ms);"
      "CREATE TABLE outbox(id INTEGER PRIMARY KEY AUTOINCREMENT,"
      " sink TEXT NOT NULL, status TEXT NOT NULL, fingerprint TEXT NOT NULL,"
      " evidence_id TEXT NOT NULL, payload TEXT NOT NULL,"
      " created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
      " next_attempt_ms INTEGER NOT NULL DEFAULT 0,"
      " last_error TEXT NOT NULL DEFAULT '');"
      "CREATE INDEX outbox_due ON outbox(sink, next_attempt_ms);"
      "CREATE INDEX outbox_fingerprint ON outbox(fingerprint);"
      "INSERT INTO outbox(sink, status, fingerprint, evidence_id, payload,"
      " created_ms) VALUES('am', 'firing', 'f', 'e', '{}', 1);";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_TRUE(CreateAlertingSchema(db).ok());
  ASSERT_TRUE(CreateAlertingSchema(db).ok());  // idempotent
  EXPECT_EQ(Count(db, "SELECT max(version) FROM alerting_meta"), 2);
  EXPECT_EQ(Count(db, "SELECT count(*) FROM outbox WHERE delivery = ''"), 1);
  EXPECT_EQ(Count(db,
                  "SELECT count(*) FROM sqlite_schema WHERE name IN"
                  " ('outbox_sink_id', 'outbox_delivery', 'outbox_due')"),
            2);
  sqlite3_close(db);
}

// The pager against a scripted endpoint.
struct FakeEndpoint {
  struct Call {
    std::string sink, url, body;
    std::map<std::string, std::string> headers;
  };
  std::vector<Call> calls;
  bool up = true;
  int status = 200;
  std::function<int(const std::string& body)> answer;  // overrides `status`
  PagerOptions::PostFn Fn() {
    return
        [this](
            const AlertSink& sink, const std::string& url,
            const std::vector<std::pair<std::string, std::string>>& h,
            const std::string& body) -> absl::StatusOr<PagerOptions::Response> {
          Call c{sink.name, url, body, {h.begin(), h.end()}};
          calls.push_back(std::move(c));
          if (!up) return absl::UnavailableError("connection refused");
          return PagerOptions::Response{answer ? answer(body) : status,
                                        "bad alert"};
        };
  }
};

class PagerTest : public OutboxTest {
 protected:
  std::unique_ptr<Pager> NewPager() {
    PagerOptions o;
    AlertSink am;
    am.name = "am";
    am.url = "http://am";
    AlertSink hook;
    hook.kind = AlertSink::Kind::kWebhook;
    hook.name = "hook";
    hook.url = "http://hook/in";
    hook.secret = "k3y";
    o.sinks = {am, hook};
    o.external_url = "http://inv:9464";
    o.resend_interval = std::chrono::seconds(20);
    o.backoff_initial = std::chrono::milliseconds(1000);
    o.backoff_max = std::chrono::milliseconds(8000);
    o.post = ep_.Fn();
    o.now_ms = [this] { return now_; };
    o.seed = 7;
    auto p = Pager::Open(path_, o);
    EXPECT_TRUE(p.ok()) << p.status();
    return *std::move(p);
  }
  std::vector<FakeEndpoint::Call> CallsTo(const std::string& sink) {
    std::vector<FakeEndpoint::Call> out;
    for (const auto& c : ep_.calls) {
      if (c.sink == sink) out.push_back(c);
    }
    return out;
  }
  FakeEndpoint ep_;
  int64_t now_ = 1'700'000'000'000;
};

TEST_F(PagerTest, DeliversGroupsSignsAndResends) {
  Append({Record("a1", "r", "1", now_), Record("a2", "r", "1", now_),
          Record("b1", "r", "2", now_)});
  auto pager = NewPager();
  pager->RunOnce();
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 0);
  // Alertmanager: one POST with one alert per fingerprint (the delivery),
  // then the resend of the active alerts (first round after start).
  auto am = CallsTo("am");
  ASSERT_EQ(am.size(), 2u);
  EXPECT_EQ(am[0].url, "http://am/api/v2/alerts");
  const Json alerts = Json::parse(am[0].body);
  ASSERT_EQ(alerts.size(), 2u);
  for (const Json& a : alerts) {
    EXPECT_EQ(a["labels"]["alertname"], "r");
    EXPECT_TRUE(a["labels"].contains("event_nid"));
    EXPECT_THAT(a["generatorURL"].get<std::string>(),
                HasSubstr("http://inv:9464/v1/violations/"));
    EXPECT_GT(a["endsAt"].get<std::string>(), a["startsAt"].get<std::string>());
  }
  // Webhook: one POST per fingerprint; the two violations of key 1 are one
  // delivery with count 2; signature and delivery id headers.
  auto hook = CallsTo("hook");
  ASSERT_EQ(hook.size(), 2u);
  const Json first = Json::parse(hook[0].body);
  EXPECT_EQ(first["count"], 2);
  EXPECT_EQ(first["omitted"], 0);
  ASSERT_EQ(first["violations"].size(), 2u);
  EXPECT_EQ(first["violations"][0]["id"], "a1");
  EXPECT_EQ(first["violations"][1]["evidence_url"],
            "http://inv:9464/v1/violations/a2");
  EXPECT_EQ(hook[0].headers["X-Invariantd-Signature"],
            "sha256=" + HmacSha256Hex("k3y", hook[0].body));
  EXPECT_EQ(hook[0].headers["X-Invariantd-Delivery"], first["delivery_id"]);
  EXPECT_FALSE(hook[0].headers["X-Invariantd-Timestamp"].empty());
  const PagerStats st = pager->Stats();
  ASSERT_EQ(st.sinks.size(), 2u);
  EXPECT_EQ(st.sinks[0].delivered, 3u);
  EXPECT_EQ(st.sinks[0].grouped, 1u);
  EXPECT_EQ(st.sinks[1].delivered, 3u);
  EXPECT_EQ(st.sinks[1].deliveries, 2u);
  EXPECT_EQ(st.active_alerts, 2u);

  // Nothing due: no POST until the resend interval passes.
  ep_.calls.clear();
  now_ += 10'000;
  pager->RunOnce();
  EXPECT_TRUE(ep_.calls.empty());
  now_ += 11'000;
  pager->RunOnce();
  am = CallsTo("am");
  ASSERT_EQ(am.size(), 1u);
  EXPECT_EQ(Json::parse(am[0].body).size(), 2u);
  EXPECT_TRUE(CallsTo("hook").empty());  // webhooks are not re-sent
}

TEST_F(PagerTest, FailuresBackOffPersistAndSurviveRestart) {
  Append({Record("a1", "r", "1", now_)});
  ep_.up = false;
  {
    auto pager = NewPager();
    pager->RunOnce();
    // Both sinks failed once; rows kept with attempts and a next attempt.
    EXPECT_EQ(Count(db(),
                    "SELECT count(*) FROM outbox WHERE attempts = 1 "
                    "AND next_attempt_ms > " +
                        std::to_string(now_) + " AND last_error != ''"),
              2);
    const PagerStats st = pager->Stats();
    EXPECT_EQ(st.sinks[0].queued, 1u);
    EXPECT_GE(st.sinks[0].failures, 1u);
    EXPECT_THAT(pager->HealthDetail(), HasSubstr("connection refused"));
    // Backing off: no POST before the next attempt is due.
    ep_.calls.clear();
    now_ += 100;
    pager->RunOnce();
    EXPECT_TRUE(ep_.calls.empty());
    // Due again (backoff of the first retry is at most 1 s): fails again,
    // attempts 2, longer delay.
    now_ += 1000;
    pager->RunOnce();
    EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox WHERE attempts = 2"), 2);
  }
  // A restart with the endpoint back: the outbox is delivered.
  ep_.up = true;
  ep_.calls.clear();
  now_ += 10'000;
  auto pager = NewPager();
  pager->RunOnce();
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 0);
  const PagerStats st = pager->Stats();
  EXPECT_EQ(st.sinks[0].retries, 1u);
  EXPECT_EQ(st.sinks[1].retries, 1u);
  EXPECT_EQ(pager->HealthDetail(), "");
}

TEST_F(PagerTest, ResolveIsDeliveredToEverySink) {
  Append({Record("a1", "r", "1", now_)});
  auto pager = NewPager();
  pager->RunOnce();
  ep_.calls.clear();
  now_ += hold_ms_ + 1;
  pager->RunOnce();
  auto am = CallsTo("am");
  ASSERT_EQ(am.size(), 1u);  // the resolve; no resend of resolved alerts
  const Json a = Json::parse(am[0].body);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["endsAt"], Rfc3339Ms(now_));
  EXPECT_EQ(a[0]["annotations"]["resolved_by"], "expired");
  auto hook = CallsTo("hook");
  ASSERT_EQ(hook.size(), 1u);
  const Json h = Json::parse(hook[0].body);
  EXPECT_EQ(h["status"], "resolved");
  EXPECT_EQ(h["resolved_by"], "expired");
  EXPECT_EQ(pager->Stats().active_alerts, 0u);
}

TEST_F(PagerTest, InvalidAlertsAreCountedNotRetriedForeverOthersAre) {
  Append({Record("a1", "r", "1", now_)});
  ep_.status = 400;
  auto pager = NewPager();
  pager->RunOnce();
  // Alertmanager's 400 (invalid alerts; the valid ones of the batch are
  // stored) is not retried: counted as rejected and as a failure.
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox WHERE sink = 'am'"), 0);
  // A webhook's 400 is retried like any other failure.
  EXPECT_EQ(Count(db(),
                  "SELECT count(*) FROM outbox WHERE sink = 'hook' "
                  "AND attempts = 1"),
            1);
  const PagerStats st = pager->Stats();
  EXPECT_EQ(st.sinks[0].rejected, 1u);
  EXPECT_GE(st.sinks[0].failures, 1u);
  EXPECT_EQ(st.sinks[0].delivered, 0u);
  EXPECT_THAT(st.sinks[0].last_error, HasSubstr("HTTP 400: bad alert"));
}

std::vector<Json> Bodies(const std::vector<FakeEndpoint::Call>& calls) {
  std::vector<Json> out;
  for (const auto& c : calls) out.push_back(Json::parse(c.body));
  return out;
}

// Issue: grouping by (fingerprint, status) turned [firing, resolved,
// firing] into "firing x2" then "resolved": the receiver closed an active
// incident.
TEST_F(PagerTest, WebhookKeepsTheOrderOfStatusesOfAnAlert) {
  const std::string fp = AlertFingerprint("r", {{"event.nid", "1"}});
  Append({Record("a1", "r", "1", now_)});
  ASSERT_TRUE(ResolveAlert(db(), fp, "operator", now_).ok());
  ASSERT_TRUE(QueueResolves(db(), {"am", "hook"}, now_, 0).ok());
  Append({Record("a2", "r", "1", now_), Record("b1", "r", "2", now_),
          Record("a3", "r", "1", now_)});
  auto pager = NewPager();
  pager->RunOnce();
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 0);
  std::vector<std::pair<std::string, int>> got;  // of fingerprint fp
  for (const Json& b : Bodies(CallsTo("hook"))) {
    if (b["fingerprint"] == fp) got.emplace_back(b["status"], b["count"]);
  }
  // The two firings after the resolve are one delivery; the last message
  // is the current status.
  EXPECT_EQ(got, (std::vector<std::pair<std::string, int>>{
                     {"firing", 1}, {"resolved", 1}, {"firing", 2}}));
}

// Issue: the backoff point lived in memory only, so after a restart a
// resolve queued later went out before the firing that was backing off.
TEST_F(PagerTest, QueueOrderHoldsAcrossARestart) {
  const std::string fp = AlertFingerprint("r", {{"event.nid", "1"}});
  Append({Record("a1", "r", "1", now_)});
  ep_.up = false;
  NewPager()->RunOnce();  // the firing fails and backs off (>= 500 ms)
  ASSERT_TRUE(ResolveAlert(db(), fp, "operator", now_).ok());
  ASSERT_TRUE(QueueResolves(db(), {"am", "hook"}, now_, 0).ok());
  ep_.up = true;
  ep_.calls.clear();
  now_ += 100;
  auto pager = NewPager();
  pager->RunOnce();
  EXPECT_TRUE(CallsTo("hook").empty());  // the head is not due yet
  now_ += 10'000;
  pager->RunOnce();
  std::vector<std::string> statuses;
  for (const Json& b : Bodies(CallsTo("hook"))) statuses.push_back(b["status"]);
  EXPECT_EQ(statuses, (std::vector<std::string>{"firing", "resolved"}));
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 0);
}

// Issue: the delivery id hashed the rows of the group, and rows joined the
// group between retries: a retry of a POST the receiver got (but whose
// answer was lost) carried another id.
TEST_F(PagerTest, DeliveryIdAndSetAreFixedAcrossRetriesAndRestarts) {
  Append({Record("a1", "r", "1", now_)});
  ep_.up = false;
  std::string id;
  {
    auto pager = NewPager();
    pager->RunOnce();
    auto hook = CallsTo("hook");
    ASSERT_EQ(hook.size(), 1u);
    id = hook[0].headers["X-Invariantd-Delivery"];
    Append({Record("a2", "r", "1", now_)});  // same alert, same status
    now_ += 2'000;
    ep_.calls.clear();
    pager->RunOnce();
    hook = CallsTo("hook");
    ASSERT_EQ(hook.size(), 1u);
    EXPECT_EQ(hook[0].headers["X-Invariantd-Delivery"], id);
    EXPECT_EQ(Json::parse(hook[0].body)["count"], 1);
  }
  ep_.up = true;
  ep_.calls.clear();
  now_ += 10'000;
  auto pager = NewPager();
  pager->RunOnce();
  auto hook = CallsTo("hook");
  ASSERT_EQ(hook.size(), 2u);
  const Json first = Json::parse(hook[0].body);
  EXPECT_EQ(hook[0].headers["X-Invariantd-Delivery"], id);
  EXPECT_EQ(first["delivery_id"], id);
  EXPECT_EQ(first["count"], 1);
  EXPECT_EQ(first["violations"][0]["id"], "a1");
  const Json second = Json::parse(hook[1].body);
  EXPECT_NE(second["delivery_id"], id);
  EXPECT_EQ(second["violations"][0]["id"], "a2");
}

TEST_F(PagerTest, DeliveryIdsAreUniqueEvenWithTheSameSeed) {
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    Append({Record(absl::StrCat("a", i), "r", "1", now_)});
    NewPager()->RunOnce();  // a restart each time: the same random draws
    const auto hook = CallsTo("hook");
    ASSERT_EQ(hook.size(), static_cast<size_t>(i + 1));
    ids.insert(hook.back().headers.at("X-Invariantd-Delivery"));
  }
  EXPECT_EQ(ids.size(), 3u);
}

// Issue: a 400 deleted the whole batch, resolves included.
TEST_F(PagerTest, AlertmanagerRejectionDropsOnlyTheInvalidAlerts) {
  const std::string fp = AlertFingerprint("r", {{"event.nid", "1"}});
  Append({Record("a1", "r", "1", now_)});
  auto pager = NewPager();
  pager->RunOnce();
  // Alertmanager refuses any POST that holds an alert of rule "bad".
  ep_.answer = [](const std::string& body) {
    return body.find("\"alertname\":\"bad\"") == std::string::npos ? 200 : 400;
  };
  Append({Record("x1", "bad", "9", now_)});
  ASSERT_TRUE(ResolveAlert(db(), fp, "operator", now_).ok());
  ep_.calls.clear();
  pager->RunOnce();
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox WHERE sink = 'am'"), 0);
  // The resolve went out alone after the batch was refused.
  bool resolve_sent = false;
  for (const Json& b : Bodies(CallsTo("am"))) {
    if (b.size() == 1 && b[0]["labels"]["fingerprint"] == fp) {
      EXPECT_EQ(b[0]["annotations"]["resolved_by"], "operator");
      resolve_sent = true;
    }
  }
  EXPECT_TRUE(resolve_sent);
  const PagerStats st = pager->Stats();
  EXPECT_EQ(st.sinks[0].rejected, 1u);   // the invalid firing
  EXPECT_EQ(st.sinks[0].delivered, 2u);  // the first firing, the resolve
  EXPECT_THAT(pager->HealthDetail(), HasSubstr("HTTP 400"));
}

// The queue depth is counted at most every gauge_interval (2 s), not every
// round: a backlog drains without a full count of the outbox per round.
TEST_F(PagerTest, GaugesAreCountedAtMostEveryInterval) {
  Append({Record("a1", "r", "1", now_)});
  ep_.up = false;
  auto pager = NewPager();
  pager->RunOnce();
  EXPECT_EQ(pager->Stats().sinks[0].queued, 1u);
  Append({Record("a2", "r", "2", now_)});
  now_ += 100;
  pager->RunOnce();  // backing off: nothing changed by the pager
  EXPECT_EQ(pager->Stats().sinks[0].queued, 1u);
  now_ += 2'000;
  pager->RunOnce();
  EXPECT_EQ(pager->Stats().sinks[0].queued, 2u);
}

TEST_F(PagerTest, WebhookGroupsAreBoundedAndCounted) {
  std::vector<EvidenceRecord> recs;
  for (int i = 0; i < 30; ++i) {
    recs.push_back(Record(absl::StrCat("v", i), "r", "1", now_));
  }
  Append(std::move(recs));
  auto pager = NewPager();
  pager->RunOnce();
  auto hook = CallsTo("hook");
  ASSERT_EQ(hook.size(), 1u);
  const Json h = Json::parse(hook[0].body);
  EXPECT_EQ(h["count"], 30);
  EXPECT_EQ(h["violations"].size(), 20u);
  EXPECT_EQ(h["omitted"], 10);
  EXPECT_EQ(pager->Stats().sinks[1].grouped, 29u);
}

// A backlog drains in linear time: 20,000 pages for one Alertmanager sink
// (1,000 alerts) go out in max_batch POSTs. Prints the time; asserts none.
TEST_F(PagerTest, BacklogOfTwentyThousandDrains) {
  OutboxOptions o;
  o.sinks = {"am"};
  o.sinks_without_payload = {"am"};
  // INVARIANTD_BACKLOG_ROWS sizes the backlog for a manual measurement.
  const char* env = std::getenv("INVARIANTD_BACKLOG_ROWS");
  const int n = env != nullptr ? std::atoi(env) : 20000;
  std::vector<EvidenceRecord> recs;
  for (int i = 0; i < n; ++i) {
    recs.push_back(
        Record(absl::StrCat("e", i), "r", absl::StrCat(i % 1000), now_));
  }
  std::vector<const EvidenceRecord*> fresh;
  for (const EvidenceRecord& r : recs) fresh.push_back(&r);
  ASSERT_EQ(sqlite3_exec(db(), "BEGIN", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite_internal::StmtCache cache(db());
  ASSERT_TRUE(QueueViolations(&cache, o, fresh, now_).ok());
  ASSERT_EQ(sqlite3_exec(db(), "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_EQ(Count(db(), "SELECT count(*) FROM outbox"), n);
  auto pager = NewPager();
  const absl::Time start = absl::Now();
  int rounds = 0;
  bool more = true;
  while (more && rounds < 10000) {
    more = pager->RunOnce();
    ++rounds;
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(Count(db(), "SELECT count(*) FROM outbox"), 0);
  EXPECT_EQ(pager->Stats().sinks[0].delivered, static_cast<uint64_t>(n));
  std::printf("drained %d pages in %d rounds, %.3f s\n", n, rounds,
              absl::ToDoubleSeconds(took));
}

}  // namespace
}  // namespace invariantd
