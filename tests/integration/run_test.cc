// The real sidecar (`invariantd run`) on loopback: tailing with a restart in
// the middle (nothing lost, nothing read twice), HTTP ingest with curl,
// metrics validated by promtool, health, and SIGTERM shutdown.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"

extern char** environ;

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
namespace fs = std::filesystem;

// Runs a child process and collects its stdout and stderr on threads.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int out[2], err[2];
    EXPECT_EQ(pipe(out), 0);
    EXPECT_EQ(pipe(err), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    for (int fd : {out[0], out[1], err[0], err[1]}) {
      posix_spawn_file_actions_addclose(&fa, fd);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ),
              0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(err[1]);
    readers_.emplace_back([this, fd = out[0]] { Drain(fd, &out_); });
    readers_.emplace_back([this, fd = err[0]] { Drain(fd, &err_); });
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }

  std::string out() {
    std::lock_guard<std::mutex> l(mu_);
    return out_;
  }
  std::string err() {
    std::lock_guard<std::mutex> l(mu_);
    return err_;
  }
  // Polls `pred` until true or `seconds` pass.
  bool WaitFor(const std::function<bool()>& pred, int seconds = 30) {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
  }
  int Signal(int sig) { return kill(pid_, sig); }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    for (auto& t : readers_) t.join();
    readers_.clear();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  void Drain(int fd, std::string* into) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
      std::lock_guard<std::mutex> l(mu_);
      into->append(buf, static_cast<size_t>(n));
    }
    close(fd);
  }
  pid_t pid_ = -1;
  std::mutex mu_;
  std::string out_, err_;
  std::vector<std::thread> readers_;
};

std::string Src(const std::string& p) {
  return absl::StrCat(INVARIANTD_SOURCE_DIR, "/", p);
}

size_t Lines(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n');
}

// Runs a shell command; returns its exit status and output.
int Shell(const std::string& cmd, std::string* output) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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
    static const LazyRE2 kPort = {R"re("port":"(\d+)")re"};
    EXPECT_TRUE(c->WaitFor([&] {
      return RE2::PartialMatch(c->err(), *kPort, &port_);
    })) << c->err();
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

TEST_F(RunTest, BadConfigurationRefusesToStart) {
  Child c({INVARIANTD_BINARY, "run", "--rules", "/nonexistent.yaml", "--listen",
           "127.0.0.1:0", "--data-dir", (dir_ / "data").string()});
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_THAT(c.err(), HasSubstr("cannot start"));
  EXPECT_THAT(c.err(), HasSubstr("no such file"));
}

}  // namespace
}  // namespace invariantd
