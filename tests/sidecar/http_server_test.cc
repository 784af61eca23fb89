#include "sidecar/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "exporters/prometheus/metrics.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/http/http_ingest.h"
#include "nlohmann/json.hpp"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "test-token-123";

class TestSink : public RecordSink {
 public:
  bool Push(Record) override { return false; }
  bool TryPushBatch(std::vector<Record>* batch) override {
    std::lock_guard<std::mutex> l(mu_);
    if (refuse_) return false;
    ++batches_;
    for (Record& r : *batch) records_.push_back(std::move(r));
    batch->clear();
    cv_.notify_all();
    return true;
  }
  void set_refuse(bool v) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_ = v;
  }
  size_t records() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_.size();
  }
  void WaitForBatches(size_t n) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return batches_ >= n; });
  }
  void ProcessAll() {
    std::vector<std::pair<Acker*, uint64_t>> todo;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (size_t i = processed_; i < records_.size(); ++i) {
        todo.emplace_back(records_[i].acker, records_[i].ack_seq);
      }
      processed_ = records_.size();
    }
    for (auto& [acker, seq] : todo) acker->Processed(seq);
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
  size_t batches_ = 0;
  size_t processed_ = 0;
  bool refuse_ = false;
};

struct RawResponse {
  bool ok = false;  // a complete status line and headers arrived
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool closed = false;  // the server closed the connection
};

int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` (stopping early if the server closes) and reads the
// response until the server closes the connection or `timeout_ms` passes.
RawResponse Exchange(int port, const std::string& request,
                     int timeout_ms = 20000) {
  RawResponse out;
  int fd = Connect(port);
  if (fd < 0) return out;
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n =
        send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      out.closed = true;
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return out;
  std::string_view head(raw.data(), end);
  out.body = raw.substr(end + 4);
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() < 12 ||
      !absl::SimpleAtoi(AV(status_line.substr(9, 3)), &out.status)) {
    return out;
  }
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view line = head.substr(start, eol - start);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = absl::AsciiStrToLower(AV(line.substr(0, colon)));
    out.headers[name] =
        std::string(absl::StripAsciiWhitespace(AV(line.substr(colon + 1))));
  }
  out.ok = true;
  return out;
}

std::string PostRequest(std::string_view path, std::string_view body,
                        std::string_view token = kToken) {
  std::string r = absl::StrCat("POST ", AV(path),
                               " HTTP/1.1\r\nHost: localhost\r\n"
                               "Connection: close\r\n"
                               "Content-Type: application/x-ndjson\r\n");
  if (!token.empty())
    absl::StrAppend(&r, "Authorization: Bearer ", AV(token), "\r\n");
  absl::StrAppend(&r, "Content-Length: ", body.size(), "\r\n\r\n", AV(body));
  return r;
}

std::string GetRequest(std::string_view path) {
  return absl::StrCat("GET ", AV(path),
                      " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                      "\r\n");
}

// Runs a shell command, returns its stdout and exit status.
std::pair<std::string, int> RunCommand(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {"", -1};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServer::Options opts = {}) {
    HttpIngestOptions iopts;
    iopts.token = kToken;
    iopts.max_body_bytes = kMaxBody;
    iopts.retry_after_seconds = 2;
    ingest_ = std::make_unique<HttpIngest>(iopts, &sink_);
    metrics_ = std::make_unique<Metrics>("test");
    RegisterIngestRoute(&server_, ingest_.get());
    RegisterMetricsRoute(&server_, metrics_.get());
    RegisterHealthRoutes(&server_, [this] {
      std::lock_guard<std::mutex> l(mu_);
      return readiness_;
    });
    opts.listen = "127.0.0.1:0";
    opts.max_body_bytes = kMaxBody;
    Metrics* m = metrics_.get();
    opts.on_response = [m](int code) { m->HttpRequest(code); };
    absl::Status s = server_.Start(opts);
    ASSERT_TRUE(s.ok()) << s;
    port_ = server_.port();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override { server_.Stop(); }

  static constexpr size_t kMaxBody = 4096;
  TestSink sink_;
  std::unique_ptr<HttpIngest> ingest_;
  std::unique_ptr<Metrics> metrics_;
  HttpServer server_;
  int port_ = 0;
  std::mutex mu_;
  Readiness readiness_{true, {}};
};

TEST_F(HttpServerTest, PostsEvents) {
  StartServer();
  RawResponse r = Exchange(port_, PostRequest("/v1/events", "{\"a\":1}\n{}\n"));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  nlohmann::json j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["accepted"], 2);
  EXPECT_EQ(j["ack"], "accepted");
  EXPECT_EQ(sink_.records(), 2u);
}

TEST_F(HttpServerTest, ChunkedBody) {
  StartServer();
  std::string req = absl::StrCat(
      "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Type: application/x-ndjson\r\nAuthorization: Bearer ",
      kToken,
      "\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\n{}\n{\r\n2\r\n}\n\r\n0\r\n\r\n");
  RawResponse r = Exchange(port_, req);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(sink_.records(), 2u);
}

TEST_F(HttpServerTest, Unauthorized) {
  StartServer();
  RawResponse r = Exchange(port_, PostRequest("/v1/events", "{}\n", ""));
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.headers["www-authenticate"], StartsWith("Bearer"));
  r = Exchange(port_, PostRequest("/v1/events", "{}\n", "nope"));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(sink_.records(), 0u);
  EXPECT_EQ(ingest_->Stats().unauthenticated["missing"], 1u);
  EXPECT_EQ(ingest_->Stats().unauthenticated["invalid"], 1u);
}

TEST_F(HttpServerTest, MethodAndPath) {
  StartServer();
  RawResponse r = Exchange(port_, GetRequest("/v1/events"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "POST");
  r = Exchange(port_, PostRequest("/metrics", "x"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers["allow"], "GET");
  r = Exchange(port_, GetRequest("/nope"));
  EXPECT_EQ(r.status, 404);
  r = Exchange(port_, GetRequest("/v1/events/extra"));
  EXPECT_EQ(r.status, 404);
}

TEST_F(HttpServerTest, BodyOverLimitIs413) {
  StartServer();
  std::string body(kMaxBody + 1, 'x');
  RawResponse r = Exchange(port_, PostRequest("/v1/events", body));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 413);
  EXPECT_THAT(r.body, HasSubstr("body_too_large"));
  // Exactly at the limit is fine (one line of kMaxBody - 1 bytes + '\n').
  std::string at_limit(kMaxBody - 1, 'y');
  at_limit.push_back('\n');
  r = Exchange(port_, PostRequest("/v1/events", at_limit));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(sink_.records(), 1u);
}

TEST_F(HttpServerTest, ChunkedBodyOverLimitIs413) {
  StartServer();
  std::string chunk(kMaxBody, 'x');
  std::string req = absl::StrCat(
      "POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      "Content-Type: application/x-ndjson\r\nAuthorization: Bearer ",
      kToken, "\r\nTransfer-Encoding: chunked\r\n\r\n", absl::Hex(chunk.size()),
      "\r\n", chunk, "\r\n", absl::Hex(chunk.size()), "\r\n", chunk,
      "\r\n0\r\n\r\n");
  RawResponse r = Exchange(port_, req);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(sink_.records(), 0u);
}

// A Content-Length over the limit is refused from the headers alone: the
// response arrives and the connection closes although no body byte was sent.
TEST_F(HttpServerTest, ContentLengthOverLimitIs413WithoutBody) {
  StartServer();
  std::string req = absl::StrCat(
      "POST /v1/events HTTP/1.1\r\nHost: x\r\n"
      "Content-Type: application/x-ndjson\r\nAuthorization: Bearer ",
      kToken, "\r\nContent-Length: 10000000000\r\n\r\n");
  auto start = std::chrono::steady_clock::now();
  RawResponse r = Exchange(port_, req, /*timeout_ms=*/20000);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 413);
  EXPECT_TRUE(r.closed);
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST_F(HttpServerTest, HeadersOverLimitAreRefused) {
  HttpServer::Options opts;
  opts.max_header_bytes = 2048;
  StartServer(opts);
  std::string req = absl::StrCat(
      "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ",
      std::string(4096, 'a'), "\r\n\r\n");
  RawResponse r = Exchange(port_, req);
  EXPECT_NE(r.status, 200);
  EXPECT_TRUE(r.closed);
}

TEST_F(HttpServerTest, FullQueueIs429WithRetryAfter) {
  StartServer();
  sink_.set_refuse(true);
  RawResponse r = Exchange(port_, PostRequest("/v1/events", "{}\n"));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "2");
  EXPECT_EQ(sink_.records(), 0u);
}

TEST_F(HttpServerTest, MetricsAndHealth) {
  StartServer();
  ASSERT_EQ(Exchange(port_, PostRequest("/v1/events", "{}\n")).status, 200);
  RawResponse r = Exchange(port_, GetRequest("/metrics"));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.headers["content-type"],
              StartsWith("text/plain; version=0.0.4"));
  EXPECT_THAT(r.body, HasSubstr("invariantd_build_info{version=\"test\"} 1"));
  EXPECT_THAT(r.body,
              HasSubstr("invariantd_http_requests_total{code=\"200\"}"));

  r = Exchange(port_, GetRequest("/healthz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(nlohmann::json::parse(r.body)["status"], "ok");

  r = Exchange(port_, GetRequest("/readyz"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(nlohmann::json::parse(r.body)["ready"], true);
  {
    std::lock_guard<std::mutex> l(mu_);
    readiness_ = {false, {"rules not loaded", "evidence\nstore down"}};
  }
  r = Exchange(port_, GetRequest("/readyz"));
  EXPECT_EQ(r.status, 503);
  nlohmann::json j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["ready"], false);
  EXPECT_EQ(j["reasons"][1], "evidence\nstore down");
  EXPECT_EQ(r.body.find('\n'), std::string::npos);
}

// The real curl binary: a normal POST, and a body over the limit (curl sends
// `Expect: 100-continue`; the server answers 413 without reading).
TEST_F(HttpServerTest, RealCurlClient) {
  if (access("/usr/bin/curl", X_OK) != 0) GTEST_SKIP() << "no curl";
  StartServer();
  char dir[] = "/tmp/invariantd-http-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string small = absl::StrCat(dir, "/small.ndjson");
  std::string big = absl::StrCat(dir, "/big.ndjson");
  std::ofstream(small) << "{\"a\":1}\n{\"a\":2}\n";
  std::ofstream(big) << std::string(kMaxBody * 4, 'x') << "\n";
  std::string base = absl::StrCat(
      "/usr/bin/curl -sS -o /dev/null -w '%{http_code}' "
      "-H 'Content-Type: application/x-ndjson' "
      "-H 'Authorization: Bearer ",
      kToken, "' http://127.0.0.1:", port_, "/v1/events --data-binary @");
  auto [code, rc] = RunCommand(base + small);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(code, "200");
  std::tie(code, rc) = RunCommand(base + big);
  EXPECT_EQ(code, "413");
  std::tie(code, rc) = RunCommand(
      absl::StrCat("/usr/bin/curl -sS -o /dev/null -w '%{http_code}' ",
                   "http://127.0.0.1:", port_, "/metrics"));
  EXPECT_EQ(code, "200");
  std::remove(small.c_str());
  std::remove(big.c_str());
  rmdir(dir);
  EXPECT_EQ(sink_.records(), 2u);
}

// `threads` requests are served at once: four wait=processed requests are
// all admitted before any of them is released.
TEST_F(HttpServerTest, ServesRequestsConcurrently) {
  HttpServer::Options opts;
  opts.threads = 4;
  StartServer(opts);
  std::vector<std::thread> clients;
  std::vector<RawResponse> responses(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      responses[i] = Exchange(
          port_,
          PostRequest("/v1/events?wait=processed&timeout_ms=60000", "{}\n"));
    });
  }
  sink_.WaitForBatches(4);  // all four handlers are blocked at once
  sink_.ProcessAll();
  for (auto& c : clients) c.join();
  for (const RawResponse& r : responses) {
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(nlohmann::json::parse(r.body)["ack"], "processed");
  }
}

TEST_F(HttpServerTest, ManyClients) {
  StartServer();
  constexpr int kClients = 8, kRequests = 25;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < kRequests; ++i) {
        if (Exchange(port_, PostRequest("/v1/events", "{}\n{}\n")).status ==
            200) {
          ++ok;
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
  EXPECT_EQ(sink_.records(), static_cast<size_t>(2 * kClients * kRequests));
}

TEST_F(HttpServerTest, StopsPromptly) {
  StartServer();
  // An idle connection and a request waiting for processing.
  int idle = Connect(port_);
  ASSERT_GE(idle, 0);
  RawResponse waited;
  std::thread client([&] {
    waited = Exchange(
        port_,
        PostRequest("/v1/events?wait=processed&timeout_ms=60000", "{}\n"));
  });
  sink_.WaitForBatches(1);
  auto start = std::chrono::steady_clock::now();
  server_.Stop();
  auto elapsed = std::chrono::steady_clock::now() - start;
  client.join();
  close(idle);
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  EXPECT_EQ(waited.status, 202);
  EXPECT_EQ(server_.port(), 0);
  EXPECT_LT(Connect(port_), 0);  // no longer listening
}

TEST(HttpServerStartTest, PortInUseFails) {
  HttpServer a;
  HttpServer::Options opts;
  opts.listen = "127.0.0.1:0";
  ASSERT_TRUE(a.Start(opts).ok());
  HttpServer b;
  opts.listen = absl::StrCat("127.0.0.1:", a.port());
  absl::Status s = b.Start(opts);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(b.port(), 0);
}

}  // namespace
}  // namespace invariantd
