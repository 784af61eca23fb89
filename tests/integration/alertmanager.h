// The real Alertmanager (Debian's prometheus-alertmanager) for integration
// tests: on a free loopback port, with its own storage directory, gossip
// off, and a route to nowhere (alerts are only read back through its API).
#ifndef INVARIANTD_TESTS_INTEGRATION_ALERTMANAGER_H_
#define INVARIANTD_TESTS_INTEGRATION_ALERTMANAGER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"

namespace invariantd {

inline constexpr char kAlertmanagerBinary[] =
    "/usr/bin/prometheus-alertmanager";

// A loopback TCP port nobody listens on right now.
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Polls `pred` until it holds or `seconds` pass (for state owned by another
// process, which cannot signal us).
inline bool Poll(const std::function<bool()>& pred, int seconds) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return pred();
}

// `curl -sf ARGS`: the body, or "" on any failure.
inline std::string Curl(const std::string& args) {
  std::string out;
  if (Shell("curl -sf " + args, &out) != 0) return "";
  return out;
}

class Alertmanager {
 public:
  Alertmanager(const std::filesystem::path& dir, int port,
               const std::string& storage)
      : port_(port) {
    const std::filesystem::path config = dir / "alertmanager.yml";
    std::ofstream(config) << "route:\n  receiver: blackhole\n"
                             "  group_wait: 1h\nreceivers:\n"
                             "  - name: blackhole\n";
    std::filesystem::create_directories(storage);
    child_ = std::make_unique<Child>(std::vector<std::string>{
        kAlertmanagerBinary, "--config.file=" + config.string(),
        "--storage.path=" + storage,
        absl::StrCat("--web.listen-address=127.0.0.1:", port),
        "--cluster.listen-address=", "--log.level=warn"});
    ready_ = Poll([&] { return !Curl(Url("/-/ready")).empty(); }, 30);
  }
  ~Alertmanager() { Stop(); }
  Alertmanager(const Alertmanager&) = delete;
  Alertmanager& operator=(const Alertmanager&) = delete;

  void Stop() {
    if (child_) {
      child_->Signal(SIGTERM);
      child_->Wait();
      child_.reset();
    }
  }
  bool ready() const { return ready_; }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  // Active alerts by their `fingerprint` label (invariantd's).
  std::map<std::string, nlohmann::json> Alerts() const {
    std::map<std::string, nlohmann::json> out;
    const std::string body = Curl("'" + Url("/api/v2/alerts") + "'");
    const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_array()) return out;
    for (const nlohmann::json& a : j) {
      out[a["labels"].value("fingerprint", "")] = a;
    }
    return out;
  }
  std::string err() { return child_ ? child_->err() : ""; }

 private:
  int port_;
  bool ready_ = false;
  std::unique_ptr<Child> child_;
};

}  // namespace invariantd

#endif  // INVARIANTD_TESTS_INTEGRATION_ALERTMANAGER_H_
