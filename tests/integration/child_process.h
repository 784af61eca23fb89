// Helpers shared by the integration tests that run the real `invariantd`
// binary: a child process whose stdout and stderr are collected on threads,
// a shell runner, and paths into the source tree.
#ifndef INVARIANTD_TESTS_INTEGRATION_CHILD_PROCESS_H_
#define INVARIANTD_TESTS_INTEGRATION_CHILD_PROCESS_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "re2/re2.h"

// INVARIANTD_ASAN: built with AddressSanitizer (GCC or clang), where RSS
// says nothing about the program's own memory.
#if defined(__SANITIZE_ADDRESS__)
#define INVARIANTD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INVARIANTD_ASAN 1
#endif
#endif

extern char** environ;

namespace invariantd {

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
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

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
  // Waits for the daemon's "listening" log line and reads the port it
  // picked (--listen 127.0.0.1:0).
  bool WaitForPort(int* port, int seconds = 30) {
    static const LazyRE2 kPort = {R"re("port":"(\d+)")re"};
    return WaitFor([&] { return RE2::PartialMatch(err(), *kPort, port); },
                   seconds);
  }
  int Signal(int sig) { return kill(pid_, sig); }
  pid_t pid() const { return pid_; }
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

// A path inside the source tree.
inline std::string Src(const std::string& p) {
  return absl::StrCat(INVARIANTD_SOURCE_DIR, "/", p);
}

// The number of lines (newlines) in `s`.
inline size_t Lines(const std::string& s) {
  return std::count(s.begin(), s.end(), '\n');
}

// The sum of the samples of `name` in a Prometheus text exposition whose
// label text contains every one of `labels` (each `k="v"`), or nullopt when
// there is no such sample.
inline std::optional<double> MetricSum(
    const std::string& exposition, absl::string_view name,
    std::initializer_list<std::string> labels = {}) {
  std::optional<double> sum;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    const absl::string_view rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;
    const size_t end = rest[0] == '{' ? rest.rfind('}') : 0;
    if (end == absl::string_view::npos) continue;
    bool all = true;
    for (const std::string& l : labels) {
      all = all && rest.substr(0, end).find(l) != absl::string_view::npos;
    }
    double value = 0;
    if (all && absl::SimpleAtod(rest.substr(end + 1), &value)) {
      sum = sum.value_or(0) + value;
    }
  }
  return sum;
}

// Runs a shell command; returns its exit status and output.
inline int Shell(const std::string& cmd, std::string* output) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output->append(buf, n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

}  // namespace invariantd

#endif  // INVARIANTD_TESTS_INTEGRATION_CHILD_PROCESS_H_
