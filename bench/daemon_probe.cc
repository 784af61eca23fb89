// daemon_probe: whole-daemon measurements of `invariantd run`, driven by
// bench/run-daemon. It starts the daemon itself (stdout and stderr on pipes)
// so that every timestamp comes from one monotonic clock in one process.
//
//   daemon_probe append-fault --trace FILE
//       Appends one term regression (a copy of the last follower event of a
//       node that does not appear after it, with its term minus one) to the
//       trace and prints the trace's new line count: the sentinel whose
//       violation marks the end of a throughput run.
//
//   daemon_probe throughput --invariantd BIN --rules PACK --workers N
//                           --trace FILE --events N --work DIR
//       Starts the daemon tailing DIR/tail/*.ndjson (empty), hard-links the
//       trace into that directory (like `mv`: no copy, one IN_CREATE) and
//       measures the time until the violation of the trace's last line
//       arrives on the daemon's stdout, then until /metrics reports all N
//       events (that counter is refreshed once per second, so it is an upper
//       bound), then stops the daemon and checks its "stopped" log.
//
//   daemon_probe latency --invariantd BIN --rules PACK --workers N
//                        --trace FILE --rate R --duration S
//                        [--fault-every K] [--tick-us T] [--warmup W]
//                        --work DIR
//       Starts the daemon on an empty directory; with --warmup, writes the
//       first W lines of the trace at once, waits until the daemon has
//       counted them (steady state: rule tables at their working size) and
//       flushes the file system (syncfs) so that the burst's writeback is
//       not measured.
//       Then appends the clean trace
//       to DIR/tail/live.ndjson at R events/s, paced by intended send times
//       (event i is due at start + i/R; the writer wakes every T us and
//       writes everything due), inserting a term regression every K lines.
//       A reader timestamps each violation line on arrival and matches it by
//       line number; latency = arrival - intended time of the faulty line, so
//       a writer that falls behind adds to the latency instead of hiding it
//       (no coordinated omission).
//
// Every mode ends with one line `RESULT key=value ...` for the script.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

void SleepUntilNs(int64_t deadline_ns) {
  std::this_thread::sleep_until(
      SteadyClock::time_point(std::chrono::nanoseconds(deadline_ns)));
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "daemon_probe: %s\n", message.c_str());
  std::exit(2);
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// The unsigned integer after `key` (e.g. "\"line\":") in `text`, if any.
std::optional<uint64_t> UintAfter(std::string_view text, std::string_view key,
                                  size_t from = 0) {
  const size_t at = text.find(key, from);
  if (at == std::string_view::npos) return std::nullopt;
  size_t i = at + key.size();
  if (i < text.size() && text[i] == '"') ++i;  // "port":"123"
  size_t j = i;
  while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
  uint64_t v = 0;
  if (j == i ||
      std::from_chars(text.data() + i, text.data() + j, v).ec != std::errc()) {
    return std::nullopt;
  }
  return v;
}

// The violation's own line: the top-level "line" follows "source".
std::optional<uint64_t> ViolationLine(std::string_view json) {
  const size_t source = json.find("\"source\":");
  return UintAfter(json,
                   "\"line\":", source == std::string_view::npos ? 0 : source);
}

// A follower event of the etcd trace with its term lowered by one: a term
// regression for that node if this line was its latest event.
std::optional<std::string> TermRegression(std::string_view line) {
  if (line.find("\"role\":\"StateFollower\"") == std::string_view::npos) {
    return std::nullopt;
  }
  constexpr std::string_view kTerm = "\"term\":";
  const size_t at = line.find(kTerm);
  if (at == std::string_view::npos) return std::nullopt;
  const size_t i = at + kTerm.size();
  size_t j = i;
  while (j < line.size() && line[j] >= '0' && line[j] <= '9') ++j;
  int64_t term = 0;
  if (j == i ||
      std::from_chars(line.data() + i, line.data() + j, term).ec !=
          std::errc() ||
      term < 1) {
    return std::nullopt;
  }
  std::string out(line.substr(0, i));
  out += std::to_string(term - 1);
  out += line.substr(j);
  return out;
}

std::string_view NodeId(std::string_view line) {
  constexpr std::string_view kNid = "\"nid\":\"";
  const size_t at = line.find(kNid);
  if (at == std::string_view::npos) return {};
  const size_t end = line.find('"', at + kNid.size());
  if (end == std::string_view::npos) return {};
  return line.substr(at + kNid.size(), end - at - kNid.size());
}

// A read-only mapping of a whole file.
class MappedFile {
 public:
  // `resident`: lock the pages in memory (mlock). The latency writer reads
  // the trace as it goes; on a VM whose kernel pages out cold page cache
  // (a DAMON `pageout` scheme, seen here: 90 MiB of refaults in 5 s), a
  // page read back from disk stalled the writer for up to a second, which
  // the benchmark would charge to the daemon.
  explicit MappedFile(const std::string& path, bool resident = false) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) Die(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size == 0) Die("empty trace " + path);
    size_ = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED)
      Die(absl::StrCat("mmap ", path, ": ", strerror(errno)));
    ::madvise(p, size_, MADV_SEQUENTIAL);
    if (resident && ::mlock(p, size_) != 0) {
      std::fprintf(stderr,
                   "daemon_probe: mlock of %s failed (%s); the trace may be "
                   "read from disk during the run\n",
                   path.c_str(), strerror(errno));
    }
    data_ = static_cast<const char*>(p);
  }
  ~MappedFile() { ::munmap(const_cast<char*>(data_), size_); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  std::string_view view() const { return {data_, size_}; }

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// Minimal HTTP/1.0 GET on 127.0.0.1; the body, or nullopt on any error.
std::optional<std::string> HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (ok) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    ok = WriteAll(fd, request.data(), request.size());
  }
  char buf[16384];
  while (ok) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  // "HTTP/1.x 200 ..."
  if (!ok || response.size() < 12 || response.compare(0, 7, "HTTP/1.") != 0 ||
      response.compare(8, 4, " 200") != 0) {
    return std::nullopt;
  }
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return std::nullopt;
  return response.substr(body + 4);
}

std::optional<uint64_t> TailEventsTotal(int port) {
  const auto body = HttpGet(port, "/metrics");
  if (!body) return std::nullopt;
  return UintAfter(*body,
                   "invariantd_source_events_total{kind=\"file\","
                   "source=\"tail\"} ");
}

// The cumulative bucket counts of histogram `name` in an exposition, in
// the order written (ascending `le`, +Inf last as infinity).
std::vector<std::pair<double, uint64_t>> Buckets(std::string_view body,
                                                 std::string_view name) {
  std::vector<std::pair<double, uint64_t>> out;
  const std::string key = std::string(name) + "_bucket{le=\"";
  size_t at = 0;
  while ((at = body.find(key, at)) != std::string_view::npos) {
    at += key.size();
    const size_t q = body.find('"', at);
    if (q == std::string_view::npos) break;
    const std::string le(body.substr(at, q - at));
    const double bound =
        le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
    const auto n = UintAfter(body, "} ", q);
    if (!n) break;
    out.emplace_back(bound, *n);
  }
  return out;
}

// From two scrapes of one histogram: the upper bound (ms) of the bucket
// that holds quantile q of the observations made between them (q = 1: of
// the largest), or NAN when there were none.
double BucketQuantileMs(const std::vector<std::pair<double, uint64_t>>& before,
                        const std::vector<std::pair<double, uint64_t>>& after,
                        double q) {
  if (after.empty()) return NAN;
  auto count = [&](size_t i) {
    const uint64_t b = i < before.size() ? before[i].second : 0;
    return after[i].second - std::min(after[i].second, b);
  };
  const uint64_t total = count(after.size() - 1);
  if (total == 0) return NAN;
  const auto rank =
      static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  for (size_t i = 0; i < after.size(); ++i) {
    if (count(i) >= std::max<uint64_t>(rank, 1)) return after[i].first * 1e3;
  }
  return after.back().first * 1e3;
}

// One violation as it arrived on the daemon's stdout.
struct Arrival {
  uint64_t line = 0;
  int64_t ns = 0;
};

// A running `invariantd run` with both output streams read by threads.
class Daemon {
 public:
  struct Options {
    std::string binary;
    std::string rules;
    int workers = 2;
    std::string tail_glob;
    std::string data_dir;
    std::vector<std::string> extra_args;  // e.g. --no-evidence
  };

  explicit Daemon(const Options& o) {
    int out[2];
    int err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
      Die("pipe2 failed");
    }
    std::vector<std::string> args = {
        o.binary,     "run",       "--rules",   o.rules,
        "--tail",     o.tail_glob, "--listen",  "127.0.0.1:0",
        "--data-dir", o.data_dir,  "--workers", absl::StrCat(o.workers)};
    args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
    pid_ = ::fork();
    if (pid_ < 0) Die("fork failed");
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    stdout_thread_ = std::thread([this, fd = out[0]] { ReadStdout(fd); });
    stderr_thread_ = std::thread([this, fd = err[0]] { ReadStderr(fd); });
  }

  ~Daemon() {
    if (pid_ > 0 && !reaped_) Stop();
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Waits for the listening port and for /readyz, then lets the tailer set
  // up its directory watches.
  int WaitReady() {
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, std::chrono::seconds(30),
                      [&] { return port_ != 0 || stderr_closed_; }) ||
        port_ == 0) {
      Die("the daemon did not log its port; stderr:\n" + stderr_text_);
    }
    const int port = port_;
    l.unlock();
    const int64_t deadline = NowNs() + 30'000'000'000;
    while (!HttpGet(port, "/readyz")) {
      if (NowNs() > deadline) Die("the daemon never became ready");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    l.lock();
    cv_.wait_for(l, std::chrono::seconds(10),
                 [&] { return started_ || stderr_closed_; });
    l.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return port;
  }

  // Blocks until a violation of `line` has arrived; its arrival time, or
  // nullopt after `timeout_ns`.
  std::optional<int64_t> WaitForLine(uint64_t line, int64_t timeout_ns) {
    std::unique_lock<std::mutex> l(mu_);
    const bool seen = cv_.wait_for(
        l, std::chrono::nanoseconds(timeout_ns),
        [&] { return line_seen_.count(line) != 0 || stdout_closed_; });
    if (!seen || line_seen_.count(line) == 0) return std::nullopt;
    return line_seen_[line];
  }

  // Blocks until `n` violations have arrived or `timeout_ns` passed.
  void WaitForViolations(size_t n, int64_t timeout_ns) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::nanoseconds(timeout_ns),
                 [&] { return arrivals_.size() >= n || stdout_closed_; });
  }

  // SIGTERM, wait; the events of the "stopped" log and the CPU seconds
  // (user + system) the daemon used.
  void Stop() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    rusage ru{};
    while (::wait4(pid_, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    cpu_s_ =
        static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
        static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    stdout_thread_.join();
    stderr_thread_.join();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "daemon_probe: the daemon exited with status %d\n",
                   status);
    }
  }

  std::vector<Arrival> arrivals() {
    std::lock_guard<std::mutex> l(mu_);
    return arrivals_;
  }
  uint64_t stopped_events() {
    std::lock_guard<std::mutex> l(mu_);
    return stopped_events_;
  }
  double cpu_s() const { return cpu_s_; }

 private:
  void ReadStdout(int fd) {
    std::string pending;
    char buf[65536];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      const int64_t now = NowNs();
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      size_t nl;
      std::lock_guard<std::mutex> l(mu_);
      while ((nl = pending.find('\n', start)) != std::string::npos) {
        const auto line =
            ViolationLine(std::string_view(pending).substr(start, nl - start));
        if (line) {
          arrivals_.push_back({*line, now});
          line_seen_.emplace(*line, now);
        }
        start = nl + 1;
      }
      pending.erase(0, start);
      cv_.notify_all();
    }
    ::close(fd);
    std::lock_guard<std::mutex> l(mu_);
    stdout_closed_ = true;
    cv_.notify_all();
  }

  void ReadStderr(int fd) {
    std::string pending;
    char buf[16384];
    while (true) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      size_t nl;
      std::lock_guard<std::mutex> l(mu_);
      while ((nl = pending.find('\n', start)) != std::string::npos) {
        const std::string_view log =
            std::string_view(pending).substr(start, nl - start);
        stderr_text_.append(log).append("\n");
        if (port_ == 0) {
          if (auto p = UintAfter(log, "\"port\":"))
            port_ = static_cast<int>(*p);
        }
        if (log.find("\"msg\":\"started\"") != std::string_view::npos) {
          started_ = true;
        }
        if (log.find("\"msg\":\"stopped\"") != std::string_view::npos) {
          stopped_events_ = UintAfter(log, "\"events\":").value_or(0);
        }
        start = nl + 1;
      }
      pending.erase(0, start);
      cv_.notify_all();
    }
    ::close(fd);
    std::lock_guard<std::mutex> l(mu_);
    stderr_closed_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  double cpu_s_ = 0;
  std::thread stdout_thread_;
  std::thread stderr_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  int port_ = 0;
  bool started_ = false;
  bool stdout_closed_ = false;
  bool stderr_closed_ = false;
  uint64_t stopped_events_ = 0;
  std::string stderr_text_;
  std::vector<Arrival> arrivals_;
  std::unordered_map<uint64_t, int64_t> line_seen_;
};

struct Common {
  std::string binary = "build/invariantd";
  std::string rules = "rules/packs/etcd-raft.yaml";
  int workers = 2;
  std::string trace;
  std::string work;
  std::string data_dir;  // default: WORK/data
  std::vector<std::string> daemon_args;
};

std::string DataDir(const Common& c) {
  return c.data_dir.empty() ? c.work + "/data" : c.data_dir;
}

Daemon::Options DaemonOptions(const Common& c, const std::string& tail_dir) {
  Daemon::Options o;
  o.binary = c.binary;
  o.rules = c.rules;
  o.workers = c.workers;
  o.extra_args = c.daemon_args;
  o.tail_glob = tail_dir + "/*.ndjson";
  o.data_dir = DataDir(c);
  return o;
}

// A fresh, empty tail directory and data directory under `work`.
std::string FreshDirs(const Common& c) {
  namespace fs = std::filesystem;
  const std::string tail_dir = c.work + "/tail";
  fs::remove_all(tail_dir);
  fs::remove_all(DataDir(c));
  fs::create_directories(tail_dir);
  return tail_dir;
}

int AppendFault(const std::string& path) {
  uint64_t lines = 0;
  std::string fault;
  {
    const MappedFile trace(path);
    const std::string_view all = trace.view();
    lines = static_cast<uint64_t>(std::count(all.begin(), all.end(), '\n'));
    if (all.back() != '\n') Die("the trace does not end with a newline");
    // Walk back from the end: the latest follower line of a node with no
    // later event.
    std::unordered_set<std::string_view> later;
    size_t end = all.size() - 1;
    while (end > 0 && fault.empty()) {
      const size_t start = all.rfind('\n', end - 1);
      const size_t from = start == std::string_view::npos ? 0 : start + 1;
      const std::string_view line = all.substr(from, end - from);
      const std::string_view nid = NodeId(line);
      if (!later.count(nid)) {
        if (auto f = TermRegression(line)) fault = *f;
      }
      later.insert(nid);
      if (start == std::string_view::npos) break;
      end = start;
    }
  }
  if (fault.empty()) Die("no follower line to copy in " + path);
  fault.push_back('\n');
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0 || !WriteAll(fd, fault.data(), fault.size())) {
    Die("cannot append to " + path);
  }
  ::close(fd);
  std::printf("%llu\n", static_cast<unsigned long long>(lines + 1));
  return 0;
}

int Throughput(const Common& c, uint64_t events) {
  const std::string tail_dir = FreshDirs(c);
  Daemon daemon(DaemonOptions(c, tail_dir));
  const int port = daemon.WaitReady();
  const std::string target = tail_dir + "/trace.ndjson";
  const int64_t t0 = NowNs();
  if (::link(c.trace.c_str(), target.c_str()) != 0) {
    Die(absl::StrCat("link ", c.trace, " -> ", target, ": ", strerror(errno)));
  }
  const auto last = daemon.WaitForLine(events, 600'000'000'000);
  if (!last) Die("the violation of the last line never arrived");
  const int64_t t1 = *last;
  // The metrics counter is refreshed once per second: an upper bound.
  int64_t t2 = 0;
  uint64_t counted = 0;
  while (NowNs() - t1 < 10'000'000'000) {
    counted = TailEventsTotal(port).value_or(0);
    if (counted >= events) {
      t2 = NowNs();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  daemon.Stop();
  ::unlink(target.c_str());
  const double wall = static_cast<double>(t1 - t0) / 1e9;
  const double metrics_wall = static_cast<double>(t2 - t0) / 1e9;
  std::printf(
      "RESULT mode=throughput workers=%d events=%llu wall_s=%.3f "
      "events_per_s=%.0f metrics_wall_s=%.3f metrics_events=%llu "
      "stopped_events=%llu violations=%zu cpu_s=%.2f\n",
      c.workers, static_cast<unsigned long long>(events), wall,
      static_cast<double>(events) / wall, t2 ? metrics_wall : -1.0,
      static_cast<unsigned long long>(counted),
      static_cast<unsigned long long>(daemon.stopped_events()),
      daemon.arrivals().size(), daemon.cpu_s());
  return 0;
}

// A fault written by the writer: its line in the live file, when it was due
// and when the write(2) that carried it returned.
struct Fault {
  uint64_t line = 0;
  int64_t intended_ns = 0;
  int64_t written_ns = 0;
};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(
      std::ceil(q * static_cast<double>(v.size())));  // nearest rank
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

int Latency(const Common& c, double rate, double duration, uint64_t every,
            int tick_us, uint64_t warmup, const std::string& dump) {
  const MappedFile trace(c.trace, /*resident=*/true);
  const std::string_view src = trace.view();
  const std::string tail_dir = FreshDirs(c);
  const std::string live = tail_dir + "/live.ndjson";
  const int fd =
      ::open(live.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) Die("cannot create " + live);
  Daemon daemon(DaemonOptions(c, tail_dir));
  const int port = daemon.WaitReady();

  std::string buf;
  size_t pos = 0;             // next trace byte
  std::string_view previous;  // the last trace line written
  uint64_t emitted = 0;       // lines written (= last line number)
  // Warm-up: the first `warmup` clean lines at once, then wait until the
  // daemon has counted them, so the measurement sees tables at their
  // working size instead of the growth of a cold start.
  while (emitted < warmup && pos < src.size()) {
    size_t nl = src.find('\n', pos);
    if (nl == std::string_view::npos) nl = src.size();
    previous = src.substr(pos, nl - pos);
    pos = nl + 1;
    ++emitted;
  }
  if (emitted > 0) {
    if (!WriteAll(fd, src.data(), std::min(pos, src.size()))) {
      Die("write failed");
    }
    const int64_t deadline = NowNs() + 300'000'000'000;
    while (TailEventsTotal(port).value_or(0) < emitted) {
      if (NowNs() > deadline) Die("the daemon did not count the warm-up");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // The warm-up is one burst (1.2 GB at full size) that a service never
    // writes at once; left in the page cache, its writeback would land in
    // the measured window and stall every fsync there. Flush it, and
    // whatever the daemon wrote while taking it in, before the clock
    // starts.
    if (::syncfs(fd) != 0) Die("syncfs failed");
  }
  const uint64_t base = emitted;
  // The daemon's own timings of the measured window: its evidence commits
  // and its workers' checkpoint pauses (histograms, diffed at the end).
  constexpr std::string_view kCommit =
      "invariantd_evidence_commit_duration_seconds";
  constexpr std::string_view kPause =
      "invariantd_state_checkpoint_pause_seconds";
  const std::string metrics_before =
      HttpGet(port, "/metrics").value_or(std::string());
  const uint64_t total = base + static_cast<uint64_t>(rate * duration);
  const double ns_per_event = 1e9 / rate;
  std::vector<Fault> faults;
  faults.reserve((total - base) / every + 1);
  bool fault_due = false;
  int64_t max_lag_ns = 0;  // how far behind schedule the writer got
  const int64_t tick_ns = int64_t{tick_us} * 1000;
  const int64_t start = NowNs() + 1'000'000;
  auto intended = [&](uint64_t i) {
    return start +
           static_cast<int64_t>(static_cast<double>(i - base) * ns_per_event);
  };
  while (emitted < total && pos < src.size()) {
    const int64_t now = NowNs();
    const uint64_t due = std::min<uint64_t>(
        total, now < start
                   ? base
                   : base +
                         static_cast<uint64_t>(
                             static_cast<double>(now - start) / ns_per_event) +
                         1);
    buf.clear();
    const size_t batch_faults = faults.size();
    while (emitted < due && pos < src.size() && buf.size() < (1 << 20)) {
      if (emitted > 0 && (emitted + 1) % every == 0) fault_due = true;
      std::optional<std::string> fault;
      if (fault_due && !previous.empty()) fault = TermRegression(previous);
      if (fault) {
        buf.append(*fault).push_back('\n');
        faults.push_back({emitted + 1, intended(emitted), 0});
        fault_due = false;
      } else {
        size_t nl = src.find('\n', pos);
        if (nl == std::string_view::npos) nl = src.size();
        previous = src.substr(pos, nl - pos);
        buf.append(previous).push_back('\n');
        pos = nl + 1;
      }
      max_lag_ns = std::max(max_lag_ns, now - intended(emitted));
      ++emitted;
    }
    if (!buf.empty()) {
      if (!WriteAll(fd, buf.data(), buf.size())) Die("write failed");
      const int64_t written = NowNs();
      for (size_t i = batch_faults; i < faults.size(); ++i) {
        faults[i].written_ns = written;
      }
    }
    if (emitted < due) continue;  // a capped batch: write the rest at once
    SleepUntilNs(std::max(intended(emitted), now + tick_ns));
  }
  const int64_t end = NowNs();
  ::close(fd);
  // Wait for the last violations, then for the events counter.
  daemon.WaitForViolations(faults.size(), 10'000'000'000);
  const int64_t counted_deadline = NowNs() + 3'000'000'000;
  while (NowNs() < counted_deadline &&
         TailEventsTotal(port).value_or(0) < emitted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string metrics_after =
      HttpGet(port, "/metrics").value_or(std::string());
  daemon.Stop();
  const auto commit_before = Buckets(metrics_before, kCommit);
  const auto commit_after = Buckets(metrics_after, kCommit);
  const auto pause_before = Buckets(metrics_before, kPause);
  const auto pause_after = Buckets(metrics_after, kPause);

  std::unordered_map<uint64_t, int64_t> arrived;
  size_t unexpected = 0;
  std::unordered_set<uint64_t> fault_lines;
  for (const Fault& f : faults) fault_lines.insert(f.line);
  const std::vector<Arrival> arrivals = daemon.arrivals();
  for (const Arrival& a : arrivals) {
    if (!fault_lines.count(a.line)) ++unexpected;
    arrived.emplace(a.line, a.ns);
  }
  std::vector<double> from_intended;
  std::vector<double> from_write;
  for (const Fault& f : faults) {
    const auto it = arrived.find(f.line);
    if (it == arrived.end()) continue;
    from_intended.push_back(static_cast<double>(it->second - f.intended_ns) /
                            1e6);
    from_write.push_back(static_cast<double>(it->second - f.written_ns) / 1e6);
  }
  if (!dump.empty()) {
    // One line per fault: seconds since the start, the intended time (ns,
    // steady clock: joins with the daemon's own timings), its line number,
    // latency ms (-1: missing).
    FILE* f = std::fopen(dump.c_str(), "w");
    if (f == nullptr) Die("cannot write " + dump);
    for (const Fault& fault : faults) {
      const auto it = arrived.find(fault.line);
      std::fprintf(
          f, "%.6f %lld %llu %.3f\n",
          static_cast<double>(fault.intended_ns - start) / 1e9,
          static_cast<long long>(fault.intended_ns),
          static_cast<unsigned long long>(fault.line),
          it == arrived.end()
              ? -1.0
              : static_cast<double>(it->second - fault.intended_ns) / 1e6);
    }
    std::fclose(f);
  }
  const double seconds = static_cast<double>(end - start) / 1e9;
  std::printf(
      "RESULT mode=latency workers=%d rate=%.0f achieved_rate=%.0f "
      "duration_s=%.2f events=%llu faults=%zu violations=%zu matched=%zu "
      "unexpected=%zu p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f "
      "write_p50_ms=%.3f write_p99_ms=%.3f write_p999_ms=%.3f "
      "writer_max_lag_ms=%.3f stopped_events=%llu cpu_s=%.2f warmup=%llu "
      "commit_p99_ms=%g commit_max_ms=%g pause_p99_ms=%g pause_max_ms=%g\n",
      c.workers, rate, static_cast<double>(emitted - base) / seconds, seconds,
      static_cast<unsigned long long>(emitted - base), faults.size(),
      arrivals.size(), from_intended.size(), unexpected,
      Percentile(from_intended, 0.50), Percentile(from_intended, 0.99),
      Percentile(from_intended, 0.999), Percentile(from_intended, 1.0),
      Percentile(from_write, 0.50), Percentile(from_write, 0.99),
      Percentile(from_write, 0.999), static_cast<double>(max_lag_ns) / 1e6,
      static_cast<unsigned long long>(daemon.stopped_events()), daemon.cpu_s(),
      static_cast<unsigned long long>(base),
      BucketQuantileMs(commit_before, commit_after, 0.99),
      BucketQuantileMs(commit_before, commit_after, 1.0),
      BucketQuantileMs(pause_before, pause_after, 0.99),
      BucketQuantileMs(pause_before, pause_after, 1.0));
  return 0;
}

void AddCommon(CLI::App* app, Common* c) {
  app->add_option("--invariantd", c->binary, "invariantd binary");
  app->add_option("--rules", c->rules, "Rule pack");
  app->add_option("--workers", c->workers, "Daemon --workers")
      ->check(CLI::Range(1, 64));
  app->add_option("--trace", c->trace, "Trace file (etcd format)")->required();
  app->add_option("--work", c->work, "Scratch directory (same filesystem)")
      ->required();
  app->add_option("--data-dir", c->data_dir,
                  "The daemon's data directory (emptied first; default "
                  "WORK/data): e.g. on another volume than the tailed files");
  app->add_option("--daemon-arg", c->daemon_args,
                  "Extra argument for `invariantd run` (repeatable), e.g. "
                  "--daemon-arg=--no-evidence");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Whole-daemon throughput and detection latency probe"};
  app.require_subcommand(1);
  std::string fault_trace;
  CLI::App* append = app.add_subcommand(
      "append-fault", "Append a term regression; print the line count");
  append->add_option("--trace", fault_trace, "Trace file")->required();

  Common c;
  uint64_t events = 0;
  CLI::App* tp =
      app.add_subcommand("throughput", "Events/s from a tailed file");
  AddCommon(tp, &c);
  tp->add_option("--events", events, "Lines in the trace (last = a fault)")
      ->required();

  double rate = 100'000;
  double duration = 20;
  uint64_t every = 1000;
  int tick_us = 100;
  std::string dump;
  CLI::App* lat =
      app.add_subcommand("latency", "Append-to-violation latency at a rate");
  AddCommon(lat, &c);
  lat->add_option("--rate", rate, "Events per second")
      ->check(CLI::PositiveNumber);
  lat->add_option("--duration", duration, "Seconds of writing")
      ->check(CLI::PositiveNumber);
  lat->add_option("--fault-every", every, "A term regression every K lines")
      ->check(CLI::Range(2, 1'000'000'000));
  lat->add_option("--tick-us", tick_us, "Writer wake-up period")
      ->check(CLI::Range(1, 1'000'000));
  uint64_t warmup = 0;
  lat->add_option("--warmup", warmup,
                  "Clean lines written (and processed) before measuring");
  lat->add_option("--dump", dump,
                  "Write 'seconds-since-start intended-ns line latency-ms' "
                  "per fault here");
  CLI11_PARSE(app, argc, argv);

  ::signal(SIGPIPE, SIG_IGN);
  if (append->parsed()) return AppendFault(fault_trace);
  if (tp->parsed()) return Throughput(c, events);
  return Latency(c, rate, duration, every, tick_us, warmup, dump);
}
