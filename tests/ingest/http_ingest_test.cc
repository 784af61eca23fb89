#include "ingest/http/http_ingest.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rapidcheck/gtest.h"

namespace invariantd {
namespace {

using ::testing::Contains;
using ::testing::Pair;

// A sink that admits or refuses whole batches and keeps what it admitted.
// `on_push` runs inside TryPushBatch after the batch is stored.
class FakeSink : public RecordSink {
 public:
  bool Push(Record record) override {
    std::lock_guard<std::mutex> l(mu_);
    records_.push_back(std::move(record));
    cv_.notify_all();
    return true;
  }
  bool TryPushBatch(std::vector<Record>* batch) override {
    std::vector<Record> admitted;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (refuse_) return false;
      ++batches_;
      for (Record& r : *batch) {
        records_.push_back(r);
        admitted.push_back(std::move(r));
      }
      batch->clear();
      cv_.notify_all();
    }
    if (process_inline_) {
      for (const Record& r : admitted) r.acker->Processed(r.ack_seq);
    }
    return true;
  }

  void set_refuse(bool refuse) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_ = refuse;
  }
  void set_process_inline(bool v) { process_inline_ = v; }

  std::vector<Record> records() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_;
  }
  // Blocks until at least `n` records were admitted.
  void WaitForRecords(size_t n) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return records_.size() >= n; });
  }
  // Acknowledges every admitted record not acknowledged yet.
  void ProcessAll() {
    std::vector<Record> todo;
    {
      std::lock_guard<std::mutex> l(mu_);
      todo.assign(records_.begin() + processed_, records_.end());
      processed_ = records_.size();
    }
    for (const Record& r : todo) r.acker->Processed(r.ack_seq);
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
  size_t processed_ = 0;
  size_t batches_ = 0;
  bool refuse_ = false;
  bool process_inline_ = false;
};

HttpRequestView Post(std::string_view body, std::string_view query = {},
                     std::string_view auth = {}) {
  HttpRequestView r;
  r.method = "POST";
  r.content_type = "application/x-ndjson";
  r.query = query;
  r.authorization = auth;
  r.body = body;
  return r;
}

std::string Header(const HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

nlohmann::json Body(const HttpResponse& r) {
  return nlohmann::json::parse(r.body);
}

TEST(ConstantTimeEqualsTest, Compares) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secreT", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secretsecret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("", "secret"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("x", ""));
}

TEST(HttpIngestTest, AcceptsLinesAsOneBatch) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  HttpResponse r = ingest.Handle(Post("{\"a\":1}\n{\"a\":2}\r\n{\"a\":3}"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Header(r, "Content-Type"), "application/json");
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["accepted"], 3);
  EXPECT_EQ(j["rejected"], 0);
  EXPECT_EQ(j["ack"], "accepted");
  EXPECT_TRUE(j["rejections"].empty());
  std::vector<Record> recs = sink.records();
  ASSERT_EQ(recs.size(), 3u);
  const uint64_t batch = j["batch"].get<uint64_t>();
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(recs[i].source, "http");
    EXPECT_EQ(recs[i].offset, batch);
    EXPECT_EQ(recs[i].line, i + 1);
    EXPECT_EQ(recs[i].acker, &ingest);
    EXPECT_EQ(recs[i].ack_seq, batch);
  }
  EXPECT_EQ(recs[1].bytes, "{\"a\":2}");  // '\r' stripped
  EXPECT_EQ(recs[1].length, 7u);
  HttpIngestStats s = ingest.Stats();
  EXPECT_EQ(s.lines_accepted, 3u);
  EXPECT_EQ(s.batches, 1u);
  EXPECT_THAT(s.requests_by_code, Contains(Pair(200, 1u)));
}

TEST(HttpIngestTest, RejectsMethod) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  HttpRequestView req = Post("{}\n");
  req.method = "GET";
  HttpResponse r = ingest.Handle(req);
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(Header(r, "Allow"), "POST");
  EXPECT_TRUE(sink.records().empty());
}

TEST(HttpIngestTest, RequiresBearerToken) {
  FakeSink sink;
  HttpIngestOptions opts;
  opts.token = "s3cret-token";
  HttpIngest ingest(opts, &sink);

  HttpResponse missing = ingest.Handle(Post("{}\n"));
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(Header(missing, "WWW-Authenticate"), "Bearer");

  for (std::string_view bad :
       {"Bearer wrong", "Bearer s3cret-toke", "Bearer s3cret-token2",
        "Basic s3cret-token", "Bearer", "s3cret-token"}) {
    HttpResponse r = ingest.Handle(Post("{}\n", {}, bad));
    EXPECT_EQ(r.status, 401) << bad;
    EXPECT_THAT(Header(r, "WWW-Authenticate"), ::testing::StartsWith("Bearer"));
  }
  EXPECT_TRUE(sink.records().empty());

  EXPECT_EQ(ingest.Handle(Post("{}\n", {}, "Bearer s3cret-token")).status, 200);
  EXPECT_EQ(ingest.Handle(Post("{}\n", {}, "bearer  s3cret-token ")).status,
            200);

  HttpIngestStats s = ingest.Stats();
  EXPECT_EQ(s.unauthenticated["missing"], 1u);
  EXPECT_EQ(s.unauthenticated["invalid"], 6u);
  EXPECT_EQ(s.requests_by_code[401], 7u);
  EXPECT_EQ(s.requests_by_code[200], 2u);
}

TEST(HttpIngestTest, RequiresJsonLinesContentType) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  for (std::string_view ct :
       {"", "text/plain", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x"}) {
    HttpRequestView req = Post("{}\n");
    req.content_type = ct;
    EXPECT_EQ(ingest.Handle(req).status, 415) << ct;
  }
  for (std::string_view ct :
       {"application/x-ndjson", "application/json; charset=utf-8",
        "Application/JSONL"}) {
    HttpRequestView req = Post("{}\n");
    req.content_type = ct;
    EXPECT_EQ(ingest.Handle(req).status, 200) << ct;
  }
  HttpIngestOptions lax;
  lax.require_json_content_type = false;
  HttpIngest lax_ingest(lax, &sink);
  HttpRequestView req = Post("{}\n");
  req.content_type = "";
  EXPECT_EQ(lax_ingest.Handle(req).status, 200);
}

TEST(HttpIngestTest, BodyAndEventLimits) {
  FakeSink sink;
  HttpIngestOptions opts;
  opts.max_body_bytes = 64;
  opts.max_events = 3;
  HttpIngest ingest(opts, &sink);

  std::string big(65, 'x');
  HttpResponse r = ingest.Handle(Post(big));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Body(r)["error"], "body_too_large");

  r = ingest.Handle(Post("1\n2\n3\n4\n"));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(Body(r)["error"], "too_many_events");

  // Exactly max_events, with the final empty line not counted.
  r = ingest.Handle(Post("1\n2\n3\n"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["accepted"], 3);
  EXPECT_TRUE(ingest.Handle(Post("")).status == 400);
  EXPECT_EQ(sink.records().size(), 3u);
}

TEST(HttpIngestTest, RejectsBadLinesWithReasons) {
  FakeSink sink;
  HttpIngestOptions opts;
  opts.max_line_bytes = 8;
  HttpIngest ingest(opts, &sink);
  std::string body = "{\"a\":1}\n";  // 1 ok
  body += "\n";                      // 2 empty
  body += "123456789\n";             // 3 too long
  body += "\xff\xfe\n";              // 4 invalid utf-8
  body += "\r\n";                    // 5 empty after '\r'
  body += "12345678\r\n";            // 6 ok (8 bytes after strip)
  body += "not json";                // 7 ok here (decoder rejects later)
  HttpResponse r = ingest.Handle(Post(body));
  ASSERT_EQ(r.status, 200) << r.body;
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["accepted"], 3);
  EXPECT_EQ(j["rejected"], 4);
  nlohmann::json expected = nlohmann::json::parse(
      R"([{"line":2,"reason":"empty_line"},{"line":3,"reason":"line_too_long"},
          {"line":4,"reason":"invalid_utf8"},{"line":5,"reason":"empty_line"}])");
  EXPECT_EQ(j["rejections"], expected);
  std::vector<Record> recs = sink.records();
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].line, 1u);
  EXPECT_EQ(recs[1].line, 6u);
  EXPECT_EQ(recs[2].line, 7u);
  EXPECT_EQ(recs[2].bytes, "not json");
  HttpIngestStats s = ingest.Stats();
  EXPECT_EQ(s.lines_rejected["empty_line"], 2u);
  EXPECT_EQ(s.lines_rejected["line_too_long"], 1u);
  EXPECT_EQ(s.lines_rejected["invalid_utf8"], 1u);
}

TEST(HttpIngestTest, RejectionListIsCapped) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  std::string body = "{}\n";
  for (int i = 0; i < 250; ++i) body += "\xc0\n";
  HttpResponse r = ingest.Handle(Post(body));
  ASSERT_EQ(r.status, 200);
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["rejected"], 250);
  EXPECT_EQ(j["rejections"].size(), HttpIngest::kMaxRejectionsListed);
  EXPECT_EQ(j["rejections_truncated"], true);
}

TEST(HttpIngestTest, AllLinesRejectedIs400) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  HttpResponse r = ingest.Handle(Post("\n\n"));
  EXPECT_EQ(r.status, 400);
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["error"], "no_valid_lines");
  EXPECT_EQ(j["rejected"], 2);
  EXPECT_TRUE(sink.records().empty());
}

TEST(HttpIngestTest, FullSinkIs429WithRetryAfter) {
  FakeSink sink;
  sink.set_refuse(true);
  HttpIngestOptions opts;
  opts.retry_after_seconds = 3;
  HttpIngest ingest(opts, &sink);
  HttpResponse r = ingest.Handle(Post("{}\n{}\n", "wait=processed"));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(Header(r, "Retry-After"), "3");
  EXPECT_EQ(Body(r)["error"], "queue_full");
  HttpIngestStats s = ingest.Stats();
  EXPECT_EQ(s.throttled, 1u);
  EXPECT_EQ(s.lines_accepted, 0u);
  EXPECT_EQ(s.requests_by_code[429], 1u);

  sink.set_refuse(false);
  EXPECT_EQ(ingest.Handle(Post("{}\n")).status, 200);
}

TEST(HttpIngestTest, BatchIdsCarryEpochAndIncrease) {
  FakeSink sink;
  HttpIngestOptions opts;
  opts.epoch = 0xABCDEF;
  HttpIngest ingest(opts, &sink);
  uint64_t a = Body(ingest.Handle(Post("{}\n")))["batch"].get<uint64_t>();
  uint64_t b = Body(ingest.Handle(Post("{}\n")))["batch"].get<uint64_t>();
  EXPECT_EQ(a >> 40, 0xABCDEFu);
  EXPECT_EQ(b, a + 1);

  HttpIngest other({}, &sink);
  HttpIngest another({}, &sink);
  uint64_t c = Body(other.Handle(Post("{}\n")))["batch"].get<uint64_t>();
  uint64_t d = Body(another.Handle(Post("{}\n")))["batch"].get<uint64_t>();
  // Random epochs: equal with probability 2^-24.
  EXPECT_NE(c, d);
}

TEST(HttpIngestTest, BadQueryIs400) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  EXPECT_EQ(ingest.Handle(Post("{}\n", "wait=durable")).status, 400);
  EXPECT_EQ(ingest.Handle(Post("{}\n", "timeout_ms=abc")).status, 400);
  EXPECT_EQ(ingest.Handle(Post("{}\n", "timeout_ms=-1")).status, 400);
  EXPECT_EQ(ingest.Handle(Post("{}\n", "other=1&wait=accepted")).status, 200);
}

TEST(HttpIngestTest, WaitProcessedInline) {
  FakeSink sink;
  sink.set_process_inline(true);  // Processed() before TryPushBatch returns
  HttpIngest ingest({}, &sink);
  HttpResponse r = ingest.Handle(Post("{}\n{}\n", "wait=processed"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["ack"], "processed");
  EXPECT_EQ(Body(r)["durable"], false);  // this sink acks when evaluated
  EXPECT_EQ(ingest.Stats().processed, 2u);
}

// Behind the sidecar's pipeline, an ack means the checkpoint is durable:
// a processed batch says so; an accepted one never does.
TEST(HttpIngestTest, ProcessedIsDurableWhenTheSinkSaysSo) {
  FakeSink sink;
  sink.set_process_inline(true);
  HttpIngestOptions o;
  o.durable_acks = true;
  HttpIngest ingest(o, &sink);
  HttpResponse r = ingest.Handle(Post("{}\n", "wait=processed"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Body(r)["ack"], "processed");
  EXPECT_EQ(Body(r)["durable"], true);
  r = ingest.Handle(Post("{}\n"));
  EXPECT_EQ(Body(r)["ack"], "accepted");
  EXPECT_EQ(Body(r)["durable"], false);
}

TEST(HttpIngestTest, WaitProcessedFromAnotherThread) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  std::thread pipeline([&] {
    sink.WaitForRecords(3);
    sink.ProcessAll();
  });
  HttpResponse r =
      ingest.Handle(Post("{}\n{}\n{}\n", "wait=processed&timeout_ms=60000"));
  pipeline.join();
  ASSERT_EQ(r.status, 200) << r.body;
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["ack"], "processed");
  EXPECT_FALSE(j.contains("timed_out"));
}

TEST(HttpIngestTest, WaitProcessedTimesOut) {
  FakeSink sink;  // never processes
  HttpIngest ingest({}, &sink);
  HttpResponse r = ingest.Handle(Post("{}\n", "wait=processed&timeout_ms=20"));
  ASSERT_EQ(r.status, 202) << r.body;
  nlohmann::json j = Body(r);
  EXPECT_EQ(j["ack"], "accepted");
  EXPECT_EQ(j["timed_out"], true);
  EXPECT_EQ(j["accepted"], 1);
  EXPECT_EQ(ingest.Stats().wait_timeouts, 1u);
  // A late callback for the finished batch is harmless.
  sink.ProcessAll();
  EXPECT_EQ(ingest.Stats().processed, 1u);
}

TEST(HttpIngestTest, ShutdownReleasesWaiters) {
  FakeSink sink;
  HttpIngest ingest({}, &sink);
  HttpResponse r;
  std::thread client([&] {
    r = ingest.Handle(Post("{}\n", "wait=processed&timeout_ms=60000"));
  });
  sink.WaitForRecords(1);
  ingest.Shutdown();
  client.join();
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(Body(r)["timed_out"], true);
}

// Any body: never crashes, the response is JSON, and every line is either
// accepted or rejected.
RC_GTEST_PROP(HttpIngestProperty, EveryLineAccountedFor,
              (const std::vector<std::string>& parts, bool trailing)) {
  FakeSink sink;
  HttpIngestOptions opts;
  opts.max_line_bytes = 16;
  opts.max_events = 1000;
  HttpIngest ingest(opts, &sink);
  std::string body;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) body.push_back('\n');
    body += parts[i];
  }
  if (trailing) body.push_back('\n');
  HttpResponse r = ingest.Handle(Post(body));
  nlohmann::json j = nlohmann::json::parse(r.body);
  size_t lines =
      static_cast<size_t>(std::count(body.begin(), body.end(), '\n'));
  if (!body.empty() && body.back() != '\n') ++lines;
  if (lines == 0) {
    RC_ASSERT(r.status == 400);
    return;
  }
  RC_ASSERT(j["accepted"].get<size_t>() + j["rejected"].get<size_t>() == lines);
  RC_ASSERT(sink.records().size() == j["accepted"].get<size_t>());
  for (const Record& rec : sink.records()) {
    RC_ASSERT(!rec.bytes.empty());
    RC_ASSERT(rec.bytes.size() <= 16u);
    RC_ASSERT(rec.bytes.find('\n') == std::string::npos);
  }
}

}  // namespace
}  // namespace invariantd
