// Paging through the real binaries: `invariantd run` tailing a file with
// violations pages the real Alertmanager (Debian's prometheus-alertmanager,
// on a free loopback port with its own temporary storage); an outage makes
// deliveries fail (visible in the metrics) and, once Alertmanager is back
// with EMPTY storage, every firing alert is there again (outbox retries and
// resends). An operator resolve reaches it too. A webhook receiver checks
// the HMAC signature and that every violation arrives at least once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "exporters/alerting/outbox.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tests/integration/alertmanager.h"
#include "tests/integration/child_process.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

class PagingRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(Logs());
    fs::copy_file(Src("rules/packs/samples/etcd-raft-faults.ndjson"),
                  Logs() / "raft.ndjson");
  }
  fs::path Logs() const { return fs::path(dir_.path()) / "logs"; }
  std::string Data() const { return dir_.File("data"); }

  std::unique_ptr<Child> Start(const std::string& alerting_yaml,
                               std::vector<std::string> extra = {}) {
    const std::string config = dir_.File("invariantd.yaml");
    std::ofstream(config) << alerting_yaml;
    std::vector<std::string> args = {
        INVARIANTD_BINARY, "run",
        "--config",        config,
        "--rules",         Src("rules/packs/etcd-raft.yaml"),
        "--tail",          (Logs() / "*.ndjson").string(),
        "--listen",        "127.0.0.1:0",
        "--data-dir",      Data(),
        "--no-stdout"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = std::make_unique<Child>(args);
    EXPECT_TRUE(c->WaitForPort(&port_)) << c->err();
    return c;
  }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  // The alerts the daemon keeps, by fingerprint (the CLI, while it runs).
  std::map<std::string, Json> StoredAlerts(bool all = false) {
    std::string out;
    EXPECT_EQ(Shell(absl::StrCat(INVARIANTD_BINARY,
                                 " alerts list --format jsonl --data-dir ",
                                 Data(), all ? " --all" : ""),
                    &out),
              0)
        << out;
    std::map<std::string, Json> m;
    for (auto l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
      const Json j = Json::parse(l, nullptr, false);
      if (j.is_object()) m[j["fingerprint"]] = j;
    }
    return m;
  }
  std::vector<Json> Evidence() {
    std::string out;
    EXPECT_EQ(Shell(absl::StrCat(INVARIANTD_BINARY,
                                 " evidence query --format jsonl --data-dir ",
                                 Data()),
                    &out),
              0);
    std::vector<Json> v;
    for (auto l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
      v.push_back(Json::parse(l));
    }
    return v;
  }
  double Metric(const std::string& series) {
    const std::string body = Curl(Url("/metrics"));
    for (auto line : absl::StrSplit(body, '\n')) {
      if (absl::StartsWith(line, series + " ")) {
        double v = 0;
        if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
      }
    }
    return -1;
  }

  TempDir dir_;
  int port_ = 0;
};

// The sample holds 4 violations (lines 102, 118 twice, 128).
constexpr size_t kSampleViolations = 4;

TEST_F(PagingRunTest, AlertmanagerGetsOneAlertPerRuleAndKeyAndSurvivesOutage) {
  if (!fs::exists(kAlertmanagerBinary)) {
    GTEST_SKIP() << "no " << kAlertmanagerBinary;
  }
  const int am_port = FreePort();
  auto am = std::make_unique<Alertmanager>(fs::path(dir_.path()), am_port,
                                           dir_.File("am-storage-1"));
  ASSERT_TRUE(am->ready()) << am->err();
  auto c = Start(
      absl::StrCat("alerting:\n  alertmanagers: [http://127.0.0.1:", am_port,
                   "]\n  resend_interval_seconds: 1\n"
                   "  backoff_initial_ms: 100\n"
                   "  backoff_max_ms: 400\n  timeout_ms: 1000\n"));
  ASSERT_TRUE(Poll([&] { return Evidence().size() >= kSampleViolations; }, 30))
      << c->err();
  const std::vector<Json> evidence = Evidence();
  ASSERT_EQ(evidence.size(), kSampleViolations);
  std::set<std::pair<std::string, std::string>> rule_keys;
  for (const Json& e : evidence) rule_keys.insert({e["rule"], e["key"].dump()});

  // One stored alert per (rule, key); exactly those in Alertmanager, with
  // the labels the daemon built.
  std::map<std::string, Json> stored;
  ASSERT_TRUE(Poll(
      [&] {
        stored = StoredAlerts();
        return stored.size() == rule_keys.size();
      },
      30));
  std::set<std::pair<std::string, std::string>> stored_keys;
  for (const auto& [fp, a] : stored)
    stored_keys.insert({a["rule"], a["key"].dump()});
  EXPECT_EQ(stored_keys, rule_keys);
  std::map<std::string, Json> in_am;
  ASSERT_TRUE(Poll(
      [&] {
        in_am = am->Alerts();
        return in_am.size() == stored.size();
      },
      30))
      << in_am.size() << " alerts in Alertmanager; daemon: " << c->err();
  for (const auto& [fp, a] : stored) {
    ASSERT_TRUE(in_am.count(fp)) << fp;
    const Json& labels = in_am[fp]["labels"];
    EXPECT_EQ(labels, a["labels"]);
    EXPECT_EQ(labels["alertname"], a["rule"]);
    EXPECT_EQ(labels["severity"], "critical");
    EXPECT_TRUE(labels.contains("kind"));
    // The key field event.nid as a label.
    for (const auto& [name, value] : a["key"].items()) {
      EXPECT_EQ(labels[LabelName(name)],
                value.is_string() ? value.get<std::string>() : value.dump());
    }
    EXPECT_THAT(
        in_am[fp]["generatorURL"].get<std::string>(),
        ::testing::HasSubstr(
            Url("/v1/violations/" + a["last_evidence_id"].get<std::string>())));
    EXPECT_EQ(in_am[fp]["annotations"]["evidence_id"], a["last_evidence_id"]);
  }

  // Outage: Alertmanager stops; a violation of a new key is detected
  // meanwhile; deliveries fail and the backlog shows in the metrics.
  am->Stop();
  std::ofstream(Logs() / "raft.ndjson", std::ios::app)
      << "{\"event\":{\"nid\":\"77\",\"state\":{\"term\":5}}}\n"
      << "{\"event\":{\"nid\":\"77\",\"state\":{\"term\":4}}}\n";
  const std::string sink =
      absl::StrCat("{sink=\"alertmanager/127.0.0.1:", am_port, "\"}");
  ASSERT_TRUE(Poll(
      [&] {
        return Metric("invariantd_alert_delivery_failures_total" + sink) >= 3 &&
               Metric("invariantd_alert_outbox_queued" + sink) >= 1;
      },
      60))
      << Curl(Url("/metrics"));
  EXPECT_GT(Metric("invariantd_alert_outbox_oldest_age_seconds" + sink), 0);
  std::string ready = Curl(Url("/readyz"));
  EXPECT_THAT(ready, ::testing::HasSubstr("alertmanager/127.0.0.1"));
  stored = StoredAlerts();
  EXPECT_EQ(stored.size(), rule_keys.size() + 1);

  // Back with EMPTY storage: every firing alert is there again.
  am = std::make_unique<Alertmanager>(fs::path(dir_.path()), am_port,
                                      dir_.File("am-storage-2"));
  ASSERT_TRUE(am->ready()) << am->err();
  ASSERT_TRUE(Poll(
      [&] {
        in_am = am->Alerts();
        if (in_am.size() != stored.size()) return false;
        for (const auto& [fp, a] : stored) {
          if (!in_am.count(fp)) return false;
        }
        return true;
      },
      60))
      << in_am.size() << " of " << stored.size();
  ASSERT_TRUE(
      Poll([&] { return Metric("invariantd_alert_outbox_queued" + sink) == 0; },
           30));
  EXPECT_GE(Metric("invariantd_alert_delivery_retries_total" + sink), 1);
  EXPECT_GE(Metric("invariantd_alert_resends_total" + sink), 1);
  EXPECT_EQ(Metric("invariantd_alerts_active"),
            static_cast<double>(stored.size()));

  // An operator resolve (API) is delivered: the alert leaves Alertmanager's
  // active list; the CLI shows it resolved; resolving again is a conflict.
  const std::string fp = stored.begin()->first;
  std::string out;
  ASSERT_EQ(
      Shell("curl -sf -X POST " + Url("/v1/alerts/" + fp + "/resolve"), &out),
      0)
      << out;
  ASSERT_TRUE(Poll([&] { return am->Alerts().count(fp) == 0; }, 30));
  EXPECT_EQ(am->Alerts().size(), stored.size() - 1);
  auto all = StoredAlerts(/*all=*/true);
  EXPECT_EQ(all[fp]["status"], "resolved");
  EXPECT_EQ(all[fp]["resolved_by"], "operator");
  out.clear();
  EXPECT_EQ(Shell("curl -s -o /dev/null -w '%{http_code}' -X POST " +
                      Url("/v1/alerts/" + fp + "/resolve"),
                  &out),
            0);
  EXPECT_EQ(out, "409");
  // The CLI resolves while the daemon runs; the daemon delivers it.
  const std::string fp2 = std::next(stored.begin())->first;
  out.clear();
  ASSERT_EQ(Shell(absl::StrCat(INVARIANTD_BINARY, " alerts resolve ", fp2,
                               " --data-dir ", Data()),
                  &out),
            0)
      << out;
  ASSERT_TRUE(Poll([&] { return am->Alerts().count(fp2) == 0; }, 30));
  out.clear();
  EXPECT_EQ(Shell(absl::StrCat(INVARIANTD_BINARY, " alerts resolve nope",
                               " --data-dir ", Data()),
                  &out),
            1);

  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

// A loopback HTTP receiver: records every request; answers 503 to the first
// `failures` of them, then 200.
class Receiver {
 public:
  struct Request {
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;
    int status = 0;
  };
  explicit Receiver(int failures) : failures_(failures) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~Receiver() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      const int c = accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      Serve(c);
      close(c);
    }
  }
  void Serve(int c) {
    std::string data;
    char buf[4096];
    size_t header_end = std::string::npos;
    size_t need = 0;
    while (true) {
      pollfd p{c, POLLIN, 0};
      if (poll(&p, 1, 5000) <= 0) return;
      const ssize_t n = read(c, buf, sizeof(buf));
      if (n <= 0) return;
      data.append(buf, static_cast<size_t>(n));
      if (header_end == std::string::npos) {
        header_end = data.find("\r\n\r\n");
        if (header_end == std::string::npos) continue;
        Request r;
        for (auto line : absl::StrSplit(data.substr(0, header_end), "\r\n")) {
          const size_t colon = line.find(':');
          if (colon == absl::string_view::npos) continue;
          r.headers[absl::AsciiStrToLower(line.substr(0, colon))] =
              std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
        }
        size_t cl = 0;
        (void)absl::SimpleAtoi(r.headers["content-length"], &cl);
        need = header_end + 4 + cl;
        pending_ = std::move(r);
      }
      if (data.size() >= need) break;
    }
    pending_.body = data.substr(header_end + 4);
    {
      std::lock_guard<std::mutex> l(mu_);
      pending_.status = failures_ > 0 ? 503 : 200;
      if (failures_ > 0) --failures_;
      requests_.push_back(pending_);
    }
    const std::string resp =
        absl::StrCat("HTTP/1.1 ", pending_.status,
                     " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    (void)!write(c, resp.data(), resp.size());
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  int failures_;
  std::vector<Request> requests_;
  Request pending_;
};

TEST_F(PagingRunTest, WebhookSignedAtLeastOnceWithRetries) {
  Receiver receiver(/*failures=*/3);
  const std::string secret_file = dir_.File("secret");
  std::ofstream(secret_file) << "hunter2-secret\n";
  auto c = Start(
      "alerting:\n  backoff_initial_ms: 100\n  backoff_max_ms: 300\n",
      {"--webhook", absl::StrCat("http://127.0.0.1:", receiver.port(), "/hook"),
       "--webhook-secret-file", secret_file});
  ASSERT_TRUE(Poll([&] { return Evidence().size() >= kSampleViolations; }, 30))
      << c->err();
  std::set<std::string> ids;
  for (const Json& e : Evidence()) ids.insert(e["id"]);
  std::set<std::string> delivered;
  ASSERT_TRUE(Poll(
      [&] {
        delivered.clear();
        for (const auto& r : receiver.requests()) {
          if (r.status != 200) continue;
          const Json j = Json::parse(r.body, nullptr, false);
          if (!j.is_object()) continue;
          for (const Json& v : j["violations"]) delivered.insert(v["id"]);
        }
        return delivered == ids;
      },
      60))
      << receiver.requests().size() << " requests; " << c->err();
  const auto requests = receiver.requests();
  ASSERT_GT(requests.size(), 3u);
  std::set<std::string> delivery_ids;
  size_t count = 0;
  for (const auto& r : requests) {
    // Every request is signed with the secret (file's trailing newline
    // stripped), timestamped and carries its delivery id.
    EXPECT_EQ(r.headers.at("x-invariantd-signature"),
              "sha256=" + HmacSha256Hex("hunter2-secret", r.body));
    EXPECT_FALSE(r.headers.at("x-invariantd-timestamp").empty());
    const Json j = Json::parse(r.body);
    EXPECT_EQ(r.headers.at("x-invariantd-delivery"), j["delivery_id"]);
    EXPECT_EQ(j["status"], "firing");
    EXPECT_EQ(j["omitted"], 0);
    for (const Json& v : j["violations"]) {
      EXPECT_TRUE(ids.count(v["id"]));
      EXPECT_THAT(v["evidence_url"].get<std::string>(),
                  ::testing::HasSubstr("/v1/violations/"));
      EXPECT_EQ(v["rule"], j["rule"]);
    }
    if (r.status == 200 && delivery_ids.insert(j["delivery_id"]).second) {
      count += j["count"].get<size_t>();
    }
  }
  // Deduplicated by delivery id, every violation was delivered once.
  EXPECT_EQ(count, ids.size());
  const std::string sink =
      absl::StrCat("{sink=\"webhook/127.0.0.1:", receiver.port(), "\"}");
  ASSERT_TRUE(Poll(
      [&] {
        return Metric("invariantd_alert_delivery_failures_total" + sink) >= 3;
      },
      30));
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

}  // namespace
}  // namespace invariantd
