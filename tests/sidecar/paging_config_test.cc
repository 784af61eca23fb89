// The alerting section of the configuration and how it becomes the pager's
// sinks (names without credentials, the webhook secret from its file).
#include <sqlite3.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "exporters/alerting/outbox.h"
#include "exporters/evidence/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "sidecar/config.h"
#include "sidecar/paging.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;

TEST(PagingConfigTest, ReadsTheAlertingSection) {
  TempDir dir;
  const std::string path = dir.File("c.yaml");
  std::ofstream(path) << R"yaml(
rules: [r.yaml]
alerting:
  alertmanagers: [http://am-0:9093, "http://user:pw@am-1:9093/prefix/"]
  webhook: {url: "https://hooks.example.com/x?token=abc", secret_file: /s}
  external_url: https://inv.example.com
  resend_interval_seconds: 30
  hold_seconds: 600
  timeout_ms: 2000
  backoff_initial_ms: 200
  backoff_max_ms: 60000
  max_batch: 100
  max_labels: 12
)yaml";
  RunConfig c;
  ASSERT_TRUE(LoadRunConfig(path, &c).ok());
  EXPECT_EQ(c.alertmanagers.size(), 2u);
  EXPECT_EQ(c.webhook_url, "https://hooks.example.com/x?token=abc");
  EXPECT_EQ(c.webhook_secret_file, "/s");
  EXPECT_EQ(c.alert_external_url, "https://inv.example.com");
  EXPECT_EQ(c.alert_resend_interval_seconds, 30);
  EXPECT_EQ(c.alert_hold_seconds, 600);
  EXPECT_EQ(c.alert_timeout_ms, 2000);
  EXPECT_EQ(c.alert_backoff_initial_ms, 200);
  EXPECT_EQ(c.alert_backoff_max_ms, 60000);
  EXPECT_EQ(c.alert_max_batch, 100);
  EXPECT_EQ(c.alert_max_labels, 12);
  EXPECT_TRUE(ValidateRunConfig(c).ok());
  EXPECT_TRUE(PagingEnabled(c));
}

TEST(PagingConfigTest, UnknownKeysAndBadValuesAreReportedWithLocations) {
  TempDir dir;
  const std::string path = dir.File("c.yaml");
  std::ofstream(path) << "alerting:\n  alertmanager: [x]\n"
                         "  webhook: {uri: x}\n  hold_seconds: 0\n";
  RunConfig c;
  const absl::Status st = LoadRunConfig(path, &c);
  ASSERT_FALSE(st.ok());
  const std::string msg(st.message());
  EXPECT_THAT(msg, HasSubstr(path + ":2:3: unknown key 'alertmanager'"));
  EXPECT_THAT(msg, HasSubstr(path + ":3:13: unknown key 'uri'"));
  EXPECT_THAT(msg, HasSubstr(path + ":4:17: expected an integer from 1"));
}

TEST(PagingConfigTest, CrossFieldValidation) {
  RunConfig c;
  c.rules = {"r.yaml"};
  c.alertmanagers = {"am:9093"};
  c.webhook_secret_file = "/s";
  c.evidence = false;
  c.alert_backoff_initial_ms = 5000;
  c.alert_backoff_max_ms = 100;
  const std::string msg(ValidateRunConfig(c).message());
  EXPECT_THAT(msg, HasSubstr("'am:9093' is not an http(s) URL"));
  EXPECT_THAT(msg, HasSubstr("secret file is given without a webhook URL"));
  EXPECT_THAT(msg, HasSubstr("alerting needs the evidence store"));
  EXPECT_THAT(msg, HasSubstr("backoff_max_ms is below"));
}

TEST(PagingConfigTest, InvalidSinkUrlsAreReportedWithoutSecrets) {
  RunConfig c;
  c.rules = {"r.yaml"};
  c.alertmanagers = {"ftp://admin:hunter2@am:9093/api?token=t0k"};
  c.webhook_url = "https://bot:s3cret@hooks.example.com /services/T0K3N";
  const std::string msg(ValidateRunConfig(c).message());
  EXPECT_THAT(msg, HasSubstr("alertmanager URL 'ftp://***@am:9093/***' is "
                             "not an http(s) URL"));
  EXPECT_THAT(msg, HasSubstr("webhook URL 'https://***@hooks.example.com "
                             "/***' is not an http(s) URL"));
  for (const char* secret : {"admin", "hunter2", "t0k", "bot", "s3cret",
                             "T0K3N", "services", "api"}) {
    EXPECT_THAT(msg, ::testing::Not(HasSubstr(secret))) << secret;
  }
}

TEST(PagingConfigTest, SinksAreNamedWithoutCredentialsAndReadTheSecret) {
  TempDir dir;
  std::ofstream(dir.File("secret")) << "  s3cret \n";
  RunConfig c;
  c.alertmanagers = {"http://user:pw@am:9093/", "http://am:9093"};
  c.webhook_url = "https://hooks.example.com/x?token=abc";
  c.webhook_secret_file = dir.File("secret");
  auto o = PagerOptionsFromConfig(c);
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_EQ(o->sinks.size(), 3u);
  EXPECT_EQ(o->sinks[0].name, "alertmanager/am:9093");
  EXPECT_EQ(o->sinks[0].url, "http://user:pw@am:9093");
  EXPECT_EQ(o->sinks[1].name, "alertmanager/am:9093#2");
  EXPECT_EQ(o->sinks[2].name, "webhook/hooks.example.com");
  EXPECT_EQ(o->sinks[2].secret, "s3cret");
  c.webhook_secret_file = dir.File("missing");
  EXPECT_THAT(std::string(PagerOptionsFromConfig(c).status().message()),
              HasSubstr("does not exist"));
  std::ofstream(dir.File("empty")) << "\n";
  c.webhook_secret_file = dir.File("empty");
  EXPECT_THAT(std::string(PagerOptionsFromConfig(c).status().message()),
              HasSubstr("is empty"));
}

TEST(PagingConfigTest, DefaultExternalUrl) {
  EXPECT_EQ(DefaultExternalUrl("127.0.0.1:0", 4321), "http://127.0.0.1:4321");
  EXPECT_EQ(DefaultExternalUrl("[::1]:9464", 9464), "http://[::1]:9464");
  const std::string wild = DefaultExternalUrl("0.0.0.0:9464", 9464);
  EXPECT_THAT(wild, ::testing::StartsWith("http://"));
  EXPECT_THAT(wild, ::testing::Not(HasSubstr("0.0.0.0")));
}

}  // namespace
}  // namespace invariantd

namespace invariantd {
namespace {

// InstallPaging on a real store: the hook queues a page per sink in the
// evidence transaction; the webhook's copy cuts a large witness.
TEST(PagingInstallTest, HookQueuesPagesAndCutsLargeWitnesses) {
  TempDir dir;
  const std::string path = dir.File("evidence.db");
  auto store = EvidenceStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  RunConfig c;
  c.alertmanagers = {"http://127.0.0.1:1"};
  c.webhook_url = "http://127.0.0.1:1/hook";
  auto pager = InstallPaging(c, store->get(), path,
                             [] { return std::shared_ptr<const RuleSet>(); });
  ASSERT_TRUE(pager.ok()) << pager.status();
  std::vector<EvidenceRecord> recs(1);
  recs[0].id = "00000000000000000000000000000001";
  recs[0].rule = "r";
  recs[0].kind = "unique";
  recs[0].severity = "critical";
  recs[0].key = {{"k", "v"}};
  recs[0].key_json = "{\"k\":\"v\"}";
  recs[0].witness = std::string(10000, 'w');
  recs[0].detected_unix_ms = 1;
  ASSERT_TRUE((*store)->Append(&recs).ok());
  auto db = OpenAlertDb(path, /*read_only=*/true);
  ASSERT_TRUE(db.ok()) << db.status();
  auto alerts = ListAlerts(*db, false, 10);
  ASSERT_TRUE(alerts.ok());
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ(alerts->front().queued, 2u);  // one per sink
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(*db,
                               "SELECT payload FROM outbox WHERE sink LIKE "
                               "'webhook/%'",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  const nlohmann::json j = nlohmann::json::parse(
      reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  sqlite3_finalize(st);
  EXPECT_EQ(j["id"], recs[0].id);
  EXPECT_EQ(j["witness_truncated"], true);
  EXPECT_EQ(j["witness_bytes"], 10000);
  EXPECT_EQ(j["witness"].get<std::string>().size(), 4096u);
  CloseAlertDb(*db);
}

}  // namespace
}  // namespace invariantd
