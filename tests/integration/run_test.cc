// The real sidecar (`invariantd run`) on loopback: tailing with a restart in
// the middle (nothing lost, nothing read twice), HTTP ingest with curl,
// metrics validated by promtool, health, and SIGTERM shutdown.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "sidecar/core/thread_priority.h"
#include "tests/integration/child_process.h"
#include "tests/kernel_slices.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
namespace fs = std::filesystem;

// The names of a process's threads (/proc/PID/task/*/comm).
std::vector<std::string> ThreadNames(pid_t pid) {
  std::vector<std::string> names;
  for (const auto& t : fs::directory_iterator(fs::path("/proc") /
                                              std::to_string(pid) / "task")) {
    std::ifstream in(t.path() / "comm");
    std::string name;
    if (std::getline(in, name)) names.push_back(name);
  }
  return names;
}

// The scheduler slice (ns) of the thread of `pid` named `name` (empty:
// its first thread); 0 if none.
uint64_t SliceOf(pid_t pid, const std::string& name) {
  for (const auto& t : fs::directory_iterator(fs::path("/proc") /
                                              std::to_string(pid) / "task")) {
    std::ifstream in(t.path() / "comm");
    std::string comm;
    if (!std::getline(in, comm) || (!name.empty() && comm != name)) continue;
    return SchedulerSliceNs(static_cast<int>(std::stol(t.path().filename())));
  }
  return 0;
}

class RunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat(
               "invariantd-run-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "logs");
    std::ifstream in(Src("rules/packs/samples/etcd-raft-faults.ndjson"));
    std::string line;
    while (std::getline(in, line)) sample_.push_back(line);
    ASSERT_EQ(sample_.size(), 140u);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Child> Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        INVARIANTD_BINARY, "run",
        "--rules",         Src("rules/packs/etcd-raft.yaml"),
        "--tail",          (dir_ / "logs" / "*.ndjson").string(),
        "--listen",        "127.0.0.1:0",
        "--data-dir",      (dir_ / "data").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto c = std::make_unique<Child>(args);
    EXPECT_TRUE(c->WaitForPort(&port_)) << c->err();
    return c;
  }
  void Append(size_t from, size_t to) {
    std::ofstream out(dir_ / "logs" / "raft.ndjson", std::ios::app);
    for (size_t i = from; i < to; ++i) out << sample_[i] << "\n";
  }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }

  fs::path dir_;
  std::vector<std::string> sample_;
  int port_ = 0;
};

TEST_F(RunTest, TailsAcrossARestartWithoutLossOrRereading) {
  // First run: the first 110 lines hold one fault (line 102).
  Append(0, 110);
  const fs::path positions = dir_ / "data" / "tail-positions.json";
  {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] { return Lines(c->out()) >= 1; })) << c->err();
    // Wait until the periodic checkpoint covers all 110 lines.
    ASSERT_TRUE(c->WaitFor([&] {
      std::ifstream in(positions);
      std::string text((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      return text.find("\"line\": 110") != std::string::npos;
    }));
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0);
    EXPECT_THAT(c->err(), HasSubstr("final checkpoint written"));
    const auto lines = absl::StrSplit(c->out(), '\n', absl::SkipEmpty());
    ASSERT_EQ(std::distance(lines.begin(), lines.end()), 1) << c->out();
    EXPECT_EQ(Json::parse(*lines.begin())["line"], 102);
  }
  // While it is down, the service keeps writing.
  Append(110, 140);
  {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] { return Lines(c->out()) >= 3; })) << c->err();
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0);
    std::vector<int> got;
    for (auto l : absl::StrSplit(c->out(), '\n', absl::SkipEmpty())) {
      got.push_back(Json::parse(l)["line"].get<int>());
    }
    // Lines 118 (two rules) and 128; line 102 is not reported again.
    EXPECT_THAT(got, ::testing::UnorderedElementsAre(118, 118, 128));
    EXPECT_THAT(c->err(), HasSubstr("\"events\":\"30\""));
  }
}

TEST_F(RunTest, HttpIngestMetricsAndHealth) {
  auto c = Start();
  std::string out;
  // Health and readiness.
  EXPECT_EQ(Shell(absl::StrCat("curl -sf ", Url("/healthz")), &out), 0);
  EXPECT_THAT(out, HasSubstr("ok"));
  out.clear();
  EXPECT_EQ(Shell(absl::StrCat("curl -sf ", Url("/readyz")), &out), 0) << out;
  // Every long-lived thread is named for `top -H` (docs/operations.md).
  EXPECT_THAT(
      ThreadNames(c->pid()),
      ::testing::IsSupersetOf({"inv-tail", "inv-dispatch", "inv-worker-0",
                               "inv-worker-1", "inv-evidence", "inv-state",
                               "inv-walckpt", "inv-housekeep", "inv-signals"}));
  // On Linux 6.12+ the threads on a violation's path run with the short
  // CPU slice (scheduler_slice_us, default 100 us); the others do not.
  if (KernelTakesSlices()) {
    EXPECT_EQ(SliceOf(c->pid(), "inv-worker-0"), 100'000u);
    EXPECT_EQ(SliceOf(c->pid(), "inv-evidence"), 100'000u);
    // The others keep the slice they inherited (this test's own).
    EXPECT_EQ(SliceOf(c->pid(), "inv-state"), SliceOf(getpid(), ""));
  }
  // Push two events that regress a term, waiting until they are processed.
  const std::string body = fs::path(dir_ / "body.ndjson").string();
  {
    std::ofstream b(body);
    b << "{\"event\":{\"nid\":\"h\",\"state\":{\"term\":5}}}\n"
      << "{\"event\":{\"nid\":\"h\",\"state\":{\"term\":4}}}\n";
  }
  out.clear();
  EXPECT_EQ(
      Shell(absl::StrCat("curl -sf -H 'Content-Type: application/x-ndjson' "
                         "--data-binary @",
                         body, " '", Url("/v1/events?wait=processed"), "'"),
            &out),
      0)
      << out;
  const Json resp = Json::parse(out);
  EXPECT_EQ(resp["accepted"], 2);
  EXPECT_EQ(resp["ack"], "processed");
  ASSERT_TRUE(c->WaitFor([&] { return Lines(c->out()) >= 1; }));
  const Json v = Json::parse(c->out().substr(0, c->out().find('\n')));
  EXPECT_EQ(v["rule"], "etcd-raft-term-never-regresses");
  EXPECT_EQ(v["source"], "http");
  // Metrics: the violation is counted and the exposition passes promtool.
  ASSERT_TRUE(c->WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find(
               "invariantd_rule_violations_total{rule=\"etcd-raft-term-"
               "never-regresses\"") != std::string::npos;
  }));
  {
    // The violation's evidence commit was timed (fsync included).
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    int commits = 0;
    EXPECT_TRUE(RE2::PartialMatch(
        m, R"re(\ninvariantd_evidence_commit_duration_seconds_count (\d+))re",
        &commits))
        << m;
    EXPECT_GE(commits, 1);
  }
  if (fs::exists("/usr/bin/promtool")) {
    out.clear();
    EXPECT_EQ(Shell(absl::StrCat("curl -sf ", Url("/metrics"),
                                 " | promtool check metrics"),
                    &out),
              0)
        << out;
  }
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

TEST_F(RunTest, AuthTokenIsRequiredWhenConfigured) {
  const std::string token = (dir_ / "token").string();
  {
    std::ofstream t(token);
    t << "s3cret\n";
  }
  auto c = Start({"--auth-token-file", token});
  std::string out;
  const std::string post = absl::StrCat(
      "curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: "
      "application/x-ndjson' --data-binary '{\"a\":1}' ",
      Url("/v1/events"));
  Shell(post, &out);
  EXPECT_EQ(out, "401");
  out.clear();
  Shell(absl::StrCat(post, " -H 'Authorization: Bearer wrong'"), &out);
  EXPECT_EQ(out, "401");
  out.clear();
  Shell(absl::StrCat(post, " -H 'Authorization: Bearer s3cret'"), &out);
  EXPECT_EQ(out, "200");
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

// Least authority: an ingest token cannot read the evidence and a query
// token cannot push events (403, counted by scope and reason); each token
// file may hold several tokens (rotation); no token reaches the logs.
TEST_F(RunTest, ScopedTokensGrantOnlyTheirScope) {
  const std::string ingest = (dir_ / "ingest-token").string();
  const std::string query = (dir_ / "query-token").string();
  std::ofstream(ingest)
      << "# rotated weekly\ningest-old-7f3a\n\ningest-new-91c2\n";
  std::ofstream(query) << "query-5d1e\n";
  auto c = Start({"--ingest-token-file", ingest, "--query-token-file", query});
  auto code = [&](const std::string& cmd) {
    std::string out;
    Shell(cmd, &out);
    return out;
  };
  const std::string post = absl::StrCat(
      "curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: "
      "application/x-ndjson' --data-binary '{\"a\":1}' ",
      Url("/v1/events"));
  const std::string get = absl::StrCat(
      "curl -s -o /dev/null -w '%{http_code}' ", Url("/v1/violations"));
  auto bearer = [](const std::string& t) {
    return absl::StrCat(" -H 'Authorization: Bearer ", t, "'");
  };
  EXPECT_EQ(code(post + bearer("ingest-old-7f3a")), "200");
  EXPECT_EQ(code(post + bearer("ingest-new-91c2")), "200");
  EXPECT_EQ(code(post + bearer("query-5d1e")), "403");
  EXPECT_EQ(code(post), "401");
  EXPECT_EQ(code(get + bearer("query-5d1e")), "200");
  EXPECT_EQ(code(get + bearer("ingest-new-91c2")), "403");
  EXPECT_EQ(code(get + bearer("nope")), "401");
  EXPECT_EQ(code(get), "401");
  // Scrapes and probes need no token.
  EXPECT_EQ(code(absl::StrCat("curl -s -o /dev/null -w '%{http_code}' ",
                              Url("/metrics"))),
            "200");
  EXPECT_EQ(code(absl::StrCat("curl -s -o /dev/null -w '%{http_code}' ",
                              Url("/healthz"))),
            "200");
  ASSERT_TRUE(c->WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find(
               "invariantd_http_unauthorized_total{reason=\"wrong_scope\","
               "scope=\"ingest\"} 1") != std::string::npos &&
           m.find(
               "invariantd_http_unauthorized_total{reason=\"missing\","
               "scope=\"ingest\"} 1") != std::string::npos &&
           m.find(
               "invariantd_http_unauthorized_total{reason=\"wrong_scope\","
               "scope=\"query\"} 1") != std::string::npos &&
           m.find(
               "invariantd_http_unauthorized_total{reason=\"invalid\","
               "scope=\"query\"} 1") != std::string::npos &&
           m.find(
               "invariantd_http_unauthorized_total{reason=\"missing\","
               "scope=\"query\"} 1") != std::string::npos;
  })) << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
  for (const char* t : {"ingest-old-7f3a", "ingest-new-91c2", "query-5d1e"}) {
    EXPECT_EQ(c->err().find(t), std::string::npos) << t;
    EXPECT_EQ(c->out().find(t), std::string::npos) << t;
  }
}

// Request line and headers over http.max_header_bytes are refused by the
// HTTP layer (400) before any handler, and counted like every response.
TEST_F(RunTest, OversizedHeadersAreRefusedAndCounted) {
  const fs::path config = dir_ / "config.yaml";
  std::ofstream(config) << "http:\n  max_header_bytes: 2048\n";
  auto c = Start({"--config", config.string()});
  auto code = [&](const std::string& extra) {
    std::string out;
    Shell(absl::StrCat("curl -s -o /dev/null -w '%{http_code}' ", extra, " ",
                       Url("/healthz")),
          &out);
    return out;
  };
  EXPECT_EQ(code(absl::StrCat("-H 'X-Pad: ", std::string(4096, 'a'), "'")),
            "400");
  EXPECT_EQ(code(absl::StrCat("-H 'X-Pad: ", std::string(1024, 'a'), "'")),
            "200");
  ASSERT_TRUE(c->WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find("invariantd_http_requests_total{code=\"400\"} 1") !=
           std::string::npos;
  })) << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

// Off loopback, a scope without a token is refused at start, naming what
// is open and how to close it (nothing is bound).
TEST_F(RunTest, OffLoopbackWithoutTokensRefusesToStart) {
  Child c({INVARIANTD_BINARY, "run", "--rules",
           Src("rules/packs/etcd-raft.yaml"), "--listen", "0.0.0.0:0",
           "--data-dir", (dir_ / "data").string(), "--no-stdout"});
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_THAT(c.err(), HasSubstr("not loopback"));
  EXPECT_THAT(c.err(), HasSubstr("--ingest-token-file"));
  EXPECT_THAT(c.err(), HasSubstr("--query-token-file"));
  EXPECT_THAT(c.err(), HasSubstr("--allow-unauthenticated"));
}

TEST_F(RunTest, RotationByRenameAndByCopytruncateLosesNothing) {
  const fs::path log = dir_ / "logs" / "raft.ndjson";
  auto c = Start();
  Append(0, 60);
  ASSERT_TRUE(c->WaitFor(
      [&] { return c->err().find("\"opened\"") != std::string::npos; }));
  // rename + create: the old file moves out of the glob, a new one appears.
  fs::rename(log, dir_ / "logs" / "raft.ndjson.1");
  Append(60, 110);  // into the new file
  // copytruncate: copy away, then truncate the live file in place.
  ASSERT_TRUE(c->WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find(
               "invariantd_source_events_total{kind=\"file\",source=\"tail"
               "\"} 110") != std::string::npos;
  })) << c->err();
  fs::copy_file(log, dir_ / "logs" / "raft.ndjson.2");
  fs::resize_file(log, 0);
  {
    // The service keeps writing into the truncated file.
    std::ofstream out(log, std::ios::app);
    for (size_t i = 110; i < 140; ++i) out << sample_[i] << "\n";
  }
  ASSERT_TRUE(c->WaitFor([&] { return Lines(c->out()) >= 4; })) << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
  // The four faults (lines 102, 118 x2, 128 of the sample) were each
  // reported once, whatever file they ended up in.
  std::vector<std::string> rules;
  for (auto l : absl::StrSplit(c->out(), '\n', absl::SkipEmpty())) {
    rules.push_back(Json::parse(l)["rule"]);
  }
  EXPECT_THAT(
      rules,
      ::testing::UnorderedElementsAre(
          "etcd-raft-term-never-regresses", "etcd-raft-one-leader-per-term",
          "etcd-raft-role-transitions", "etcd-raft-applied-within-commit"));
  EXPECT_THAT(c->err(), HasSubstr("\"events\":\"140\""));
}

TEST_F(RunTest, OversizedBodiesAndFullQueuesAreRefused) {
  const fs::path config = dir_ / "config.yaml";
  {
    std::ofstream c(config);
    c << "queue_capacity: 16\nhttp: {max_body_bytes: 4096, max_events: 1000}\n";
  }
  auto c = Start({"--config", config.string()});
  auto post = [&](size_t lines, size_t pad) {
    const fs::path body = dir_ / "body";
    {
      std::ofstream b(body);
      for (size_t i = 0; i < lines; ++i) {
        b << "{\"i\":" << i << ",\"p\":\"" << std::string(pad, 'x') << "\"}\n";
      }
    }
    std::string out;
    Shell(absl::StrCat("curl -s -D - -o /dev/null -H 'Content-Type: "
                       "application/x-ndjson' --data-binary @",
                       body.string(), " ", Url("/v1/events")),
          &out);
    return out;
  };
  EXPECT_THAT(post(1, 8000), HasSubstr("413"));  // body over 4096 bytes
  const std::string full = post(40, 10);         // 40 records > queue of 16
  EXPECT_THAT(full, HasSubstr("429"));
  EXPECT_THAT(full, HasSubstr("Retry-After"));
  EXPECT_THAT(post(5, 10), HasSubstr("200"));  // fits
  ASSERT_TRUE(c->WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find(
               "invariantd_rejected_requests_due_to_admission_control_"
               "total{reason=\"queue_full\"} 1") != std::string::npos;
  }));
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

TEST_F(RunTest, ReloadKeepsRunningRulesOnErrorsAndStateWhenUnchanged) {
  const fs::path rules = dir_ / "rules.yaml";
  fs::copy_file(Src("rules/packs/etcd-raft.yaml"), rules);
  std::vector<std::string> args = {
      INVARIANTD_BINARY, "run",
      "--rules",         rules.string(),
      "--tail",          (dir_ / "logs" / "*.ndjson").string(),
      "--listen",        "127.0.0.1:0",
      "--data-dir",      (dir_ / "data").string()};
  Child c(args);
  ASSERT_TRUE(c.WaitForPort(&port_));
  Append(0, 100);  // node 1 and 2 state is now known to the rules
  ASSERT_TRUE(c.WaitFor([&] {
    std::string m;
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &m);
    return m.find(
               "invariantd_source_events_total{kind=\"file\",source=\"tail"
               "\"} 100") != std::string::npos;
  })) << c.err();
  // An invalid rule file: the running rules stay, the failure is counted.
  {
    std::ofstream r(rules, std::ios::app);
    r << "  - {name: broken, kind: monotonic, feild: x}\n";
  }
  c.Signal(SIGHUP);
  ASSERT_TRUE(c.WaitFor([&] {
    return c.err().find("rule reload failed") != std::string::npos;
  })) << c.err();
  EXPECT_THAT(c.err(), HasSubstr("unknown field 'feild'"));
  // A valid change (one more rule), picked up from the file by the watcher
  // without a signal: the pack's rules keep their state.
  fs::copy_file(Src("rules/packs/etcd-raft.yaml"), rules,
                fs::copy_options::overwrite_existing);
  {
    std::ofstream r(rules, std::ios::app);
    r << "  - {name: extra-term-rule, kind: monotonic, key: [event.nid], "
         "field: event.state.term}\n";
  }
  ASSERT_TRUE(c.WaitFor([&] {
    return c.err().find("\"msg\":\"rules reloaded\"") != std::string::npos;
  })) << c.err();
  EXPECT_THAT(c.err(), HasSubstr("\"fresh_state\":\"extra-term-rule\""));
  // The pack's rules kept their state (the pipeline test checks what that
  // means for verdicts); the faults after the reload are all caught.
  EXPECT_THAT(c.err(), HasSubstr("etcd-raft-term-never-regresses,"));
  Append(100, 140);
  ASSERT_TRUE(c.WaitFor([&] { return Lines(c.out()) >= 4; })) << c.err();
  c.Signal(SIGTERM);
  EXPECT_EQ(c.Wait(), 0);
  std::vector<std::string> rules_hit;
  for (auto l : absl::StrSplit(c.out(), '\n', absl::SkipEmpty())) {
    rules_hit.push_back(Json::parse(l)["rule"]);
  }
  EXPECT_THAT(rules_hit, ::testing::Contains("etcd-raft-term-never-regresses"));
  EXPECT_THAT(rules_hit,
              ::testing::Contains("etcd-raft-applied-within-commit"));
}

TEST_F(RunTest, BadConfigurationRefusesToStart) {
  Child c({INVARIANTD_BINARY, "run", "--rules", "/nonexistent.yaml", "--listen",
           "127.0.0.1:0", "--data-dir", (dir_ / "data").string()});
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_THAT(c.err(), HasSubstr("cannot start"));
  EXPECT_THAT(c.err(), HasSubstr("no such file"));
}

}  // namespace
}  // namespace invariantd
