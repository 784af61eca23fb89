// KafkaSource against librdkafka's in-process mock cluster (3 brokers on
// loopback), fed by a real librdkafka producer.
#include "ingest/kafka/kafka_source.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/record.h"
#include "sidecar/core/strings.h"
#include "tests/kafka_mock_cluster.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kDeadline{30};

// Global order of test-observable events (deliveries, acks, notices).
std::atomic<uint64_t> g_seq{0};

// Polls `pred` until it holds or the deadline passes. Returns pred().
bool WaitUntil(const std::function<bool()>& pred,
               std::chrono::seconds deadline = kDeadline) {
  const auto end = Clock::now() + deadline;
  while (Clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

struct Msg {
  int32_t partition = 0;
  std::optional<std::string> key;
  std::string value;
  // A header value of nullopt is a null header value.
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;
};

std::atomic<int> g_delivery_errors{0};

void DeliveryReport(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) g_delivery_errors++;
}

// Produces `msgs` in order and waits until all are acknowledged.
void Produce(const std::string& bootstraps, const std::string& topic,
             const std::vector<Msg>& msgs) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[256];
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(),
                              errstr, sizeof(errstr)),
            RD_KAFKA_CONF_OK);
  // In-order per partition: offsets follow production order.
  ASSERT_EQ(
      rd_kafka_conf_set(conf, "max.in.flight", "1", errstr, sizeof(errstr)),
      RD_KAFKA_CONF_OK);
  rd_kafka_conf_set_log_cb(conf, &QuietKafkaLog);
  rd_kafka_conf_set_dr_msg_cb(conf, &DeliveryReport);
  rd_kafka_t* rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ASSERT_NE(rk, nullptr) << errstr;
  g_delivery_errors = 0;
  for (const Msg& m : msgs) {
    rd_kafka_headers_t* h = rd_kafka_headers_new(m.headers.size());
    for (const auto& [name, value] : m.headers) {
      rd_kafka_header_add(h, name.data(), static_cast<ssize_t>(name.size()),
                          value ? value->data() : nullptr,
                          value ? static_cast<ssize_t>(value->size()) : 0);
    }
    void* vptr = const_cast<char*>(m.value.data());
    rd_kafka_resp_err_t err;
    if (m.key) {
      void* kptr = const_cast<char*>(m.key->data());
      err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                              RD_KAFKA_V_PARTITION(m.partition),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(vptr, m.value.size()),
                              RD_KAFKA_V_KEY(kptr, m.key->size()),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    } else {
      err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                              RD_KAFKA_V_PARTITION(m.partition),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(vptr, m.value.size()),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    }
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(h);
    ASSERT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(rd_kafka_outq_len(rk), 0);
  EXPECT_EQ(g_delivery_errors.load(), 0);
  rd_kafka_destroy(rk);
}

// `per_partition` plain messages to each of `partitions` partitions, values
// "p<partition>-<n>" with n counting from `first`.
std::vector<Msg> Plain(int partitions, int per_partition, int first = 0) {
  std::vector<Msg> out;
  for (int n = first; n < first + per_partition; ++n) {
    for (int p = 0; p < partitions; ++p) {
      Msg m;
      m.partition = p;
      m.value = absl::StrCat("p", p, "-", n);
      out.push_back(std::move(m));
    }
  }
  return out;
}

struct Delivered {
  Record record;
  uint64_t seq;  // g_seq at delivery
};

// A thread-safe RecordSink that keeps what it admits. It can refuse every
// batch (until released) or every other batch.
class TestSink : public RecordSink {
 public:
  bool Push(Record record) override {
    std::lock_guard<std::mutex> l(mu_);
    records_.push_back({std::move(record), g_seq++});
    cv_.notify_all();
    return true;
  }
  bool TryPushBatch(std::vector<Record>* batch) override {
    std::lock_guard<std::mutex> l(mu_);
    ++attempts_;
    if (refuse_ || (refuse_odd_ && attempts_ % 2 == 1)) {
      ++refused_;
      return false;
    }
    for (Record& r : *batch) records_.push_back({std::move(r), g_seq++});
    batch->clear();
    cv_.notify_all();
    return true;
  }

  void set_refuse(bool v) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_ = v;
  }
  void set_refuse_odd(bool v) {
    std::lock_guard<std::mutex> l(mu_);
    refuse_odd_ = v;
  }
  size_t size() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_.size();
  }
  uint64_t refused() const {
    std::lock_guard<std::mutex> l(mu_);
    return refused_;
  }
  std::vector<Delivered> Snapshot() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_;
  }
  // Blocks until there are more than `seen` records or `stop` is set;
  // returns the records from index `seen`.
  std::vector<Delivered> WaitNew(size_t seen, const std::atomic<bool>& stop) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(50),
                 [&] { return records_.size() > seen || stop.load(); });
    return std::vector<Delivered>(records_.begin() + seen, records_.end());
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Delivered> records_;
  bool refuse_ = false;
  bool refuse_odd_ = false;
  uint64_t attempts_ = 0;
  uint64_t refused_ = 0;
};

struct AckEvent {
  std::string source;
  uint64_t offset;
  uint64_t seq;
};

// Acknowledges everything its sink admits, from its own thread (as a
// pipeline worker would), newest first within each chunk so completions
// come out of order.
class AutoAcker {
 public:
  explicit AutoAcker(TestSink* sink)
      : sink_(sink), thread_([this] { Run(); }) {}
  ~AutoAcker() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acked() const { return acked_.load(); }
  std::vector<AckEvent> acks() const {
    std::lock_guard<std::mutex> l(mu_);
    return acks_;
  }

 private:
  void Run() {
    size_t seen = 0;
    while (!stop_.load()) {
      std::vector<Delivered> fresh = sink_->WaitNew(seen, stop_);
      seen += fresh.size();
      for (auto it = fresh.rbegin(); it != fresh.rend(); ++it) {
        {
          std::lock_guard<std::mutex> l(mu_);
          acks_.push_back({it->record.source, it->record.offset, g_seq++});
        }
        it->record.acker->Processed(it->record.ack_seq);
        acked_++;
      }
    }
  }

  TestSink* sink_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> acked_{0};
  mutable std::mutex mu_;
  std::vector<AckEvent> acks_;
  std::thread thread_;
};

struct NoticeEvent {
  std::string event;
  std::string detail;
  uint64_t seq;
};

class Notices {
 public:
  KafkaSource::NoticeFn fn() {
    return [this](std::string_view event, std::string_view detail) {
      std::lock_guard<std::mutex> l(mu_);
      events_.push_back({std::string(event), std::string(detail), g_seq++});
    };
  }
  std::vector<NoticeEvent> events() const {
    std::lock_guard<std::mutex> l(mu_);
    return events_;
  }
  bool Has(std::string_view event, std::string_view detail_part) const {
    std::lock_guard<std::mutex> l(mu_);
    for (const NoticeEvent& e : events_) {
      if (e.event == event && e.detail.find(detail_part) != std::string::npos) {
        return true;
      }
    }
    return false;
  }

 private:
  mutable std::mutex mu_;
  std::vector<NoticeEvent> events_;
};

std::string Str(const std::vector<NoticeEvent>& events) {
  std::string out;
  for (const NoticeEvent& e : events) {
    absl::StrAppend(&out, "  #", e.seq, " ", e.event, ": ", e.detail, "\n");
  }
  return out;
}

class KafkaSourceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // Every rd_kafka_t of the test (sources, producers, the mock cluster's
    // handle) must be gone, with librdkafka's threads.
    EXPECT_EQ(rd_kafka_wait_destroyed(10000), 0);
  }

  static KafkaOptions Options(const MockCluster& mc,
                              std::vector<std::string> topics,
                              std::string group) {
    KafkaOptions o;
    o.brokers = mc.bootstraps();
    o.topics = std::move(topics);
    o.group_id = std::move(group);
    o.config["session.timeout.ms"] = "6000";
    o.config["heartbeat.interval.ms"] = "250";
    o.poll_timeout = std::chrono::milliseconds(50);
    return o;
  }
};

using Meta = std::vector<std::pair<std::string, std::string>>;

TEST_F(KafkaSourceTest, KafkaDeliversRecordsWithPositionAndMeta) {
  MockCluster mc;
  mc.CreateTopic("events", 3);
  std::vector<Msg> msgs;
  for (int i = 0; i < 30; ++i) {
    Msg m;
    m.partition = i % 3;
    m.value = absl::StrCat("{\"i\":", i, "}");
    if (i % 2 == 0) m.key = absl::StrCat("key-", i);
    if (i == 4) m.key = std::string("k\0ey", 4);  // binary key
    m.headers.push_back({"trace", absl::StrCat("t", i)});
    if (i % 5 == 0) m.headers.push_back({"empty", std::nullopt});
    msgs.push_back(std::move(m));
  }
  Produce(mc.bootstraps(), "events", msgs);

  TestSink sink;
  Notices notices;
  KafkaSource src(Options(mc, {"events"}, "g-meta"), &sink, notices.fn());
  ASSERT_TRUE(src.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 30; }))
      << sink.size() << "\n"
      << Str(notices.events());
  std::vector<Delivered> got = sink.Snapshot();
  ASSERT_EQ(got.size(), 30u);

  std::set<uint64_t> seqs;
  std::map<std::pair<int, uint64_t>, const Record*> by_pos;
  for (const Delivered& d : got) {
    const Record& r = d.record;
    EXPECT_EQ(r.acker, &src);
    EXPECT_TRUE(seqs.insert(r.ack_seq).second) << "duplicate ack_seq";
    ASSERT_EQ(r.source.rfind("kafka:events/", 0), 0u) << r.source;
    int p = std::stoi(r.source.substr(13));
    EXPECT_TRUE(by_pos.emplace(std::make_pair(p, r.offset), &r).second);
  }
  for (int i = 0; i < 30; ++i) {
    const Msg& m = msgs[i];
    const uint64_t offset = i / 3;  // the i-th message of its partition
    auto it = by_pos.find({m.partition, offset});
    ASSERT_NE(it, by_pos.end()) << "missing message " << i;
    const Record& r = *it->second;
    EXPECT_EQ(r.source, absl::StrCat("kafka:events/", m.partition));
    EXPECT_EQ(r.offset, offset);
    EXPECT_EQ(r.line, 0u);
    EXPECT_EQ(r.bytes, m.value);
    EXPECT_EQ(r.length, m.value.size());
    EXPECT_FALSE(r.too_long);
    Meta want = {{"$kafka.topic", "events"},
                 {"$kafka.partition", absl::StrCat(m.partition)},
                 {"$kafka.offset", absl::StrCat(offset)}};
    if (m.key) want.push_back({"$kafka.key", *m.key});
    for (const auto& [name, value] : m.headers) {
      want.push_back({"$kafka.headers." + name, value.value_or("")});
    }
    EXPECT_EQ(r.meta, want) << "message " << i;
  }

  for (const Delivered& d : got) {
    d.record.acker->Processed(d.record.ack_seq);
  }
  EXPECT_TRUE(WaitUntil([&] {
    KafkaStats s = src.Stats();
    return s.processed == 30 && s.lag == 0;
  })) << src.Stats().lag;
  KafkaStats s = src.Stats();
  EXPECT_EQ(s.records, 30u);
  EXPECT_EQ(s.assigned_partitions, 3u);
  EXPECT_EQ(s.errors, 0u) << Str(notices.events());
  EXPECT_TRUE(notices.Has("assigned", "events/0"));
  src.Stop();
  src.Stop();  // idempotent
  EXPECT_EQ(src.Stats().assigned_partitions, 0u);
  EXPECT_EQ(sink.size(), 30u);
}

TEST_F(KafkaSourceTest, KafkaTooLongValueIsFlagged) {
  MockCluster mc;
  mc.CreateTopic("big", 1);
  Msg big;
  big.value = std::string(2000, 'x');
  Msg small;
  small.value = "ok";
  Produce(mc.bootstraps(), "big", {big, small});
  TestSink sink;
  KafkaOptions o = Options(mc, {"big"}, "g-big");
  o.max_record_bytes = 1000;
  KafkaSource src(o, &sink, nullptr);
  ASSERT_TRUE(src.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 2; }));
  std::vector<Delivered> got = sink.Snapshot();
  EXPECT_TRUE(got[0].record.too_long);
  EXPECT_EQ(got[0].record.bytes, "");
  EXPECT_EQ(got[0].record.length, 2000u);
  EXPECT_FALSE(got[1].record.too_long);
  EXPECT_EQ(got[1].record.bytes, "ok");
  src.Stop();
}

std::vector<uint64_t> Offsets(const std::vector<Delivered>& got) {
  std::vector<uint64_t> out;
  for (const Delivered& d : got) out.push_back(d.record.offset);
  return out;
}

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {  // [from, to)
  std::vector<uint64_t> out;
  for (uint64_t i = from; i < to; ++i) out.push_back(i);
  return out;
}

TEST_F(KafkaSourceTest, KafkaCommitsOnlyTheInOrderProcessedWatermark) {
  MockCluster mc;
  mc.CreateTopic("orders", 1);
  Produce(mc.bootstraps(), "orders", Plain(1, 20));
  constexpr uint64_t kK = 8;
  const KafkaOptions options = Options(mc, {"orders"}, "g-offsets");

  {  // First run: process 0..K-1 and K+1, not K.
    TestSink sink;
    Notices notices;
    KafkaSource src(options, &sink, notices.fn());
    ASSERT_TRUE(src.Start().ok());
    ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 20; }));
    std::vector<Delivered> got = sink.Snapshot();
    ASSERT_EQ(Offsets(got), Range(0, 20));
    // Out of order: K+1 first, then K-1 .. 0.
    got[kK + 1].record.acker->Processed(got[kK + 1].record.ack_seq);
    for (int i = kK - 1; i >= 0; --i) {
      got[i].record.acker->Processed(got[i].record.ack_seq);
    }
    got[3].record.acker->Processed(got[3].record.ack_seq);  // repeated: no-op
    EXPECT_TRUE(WaitUntil([&] { return src.Stats().processed == kK + 1; }));
    src.Stop();
    EXPECT_EQ(src.Stats().errors, 0u) << Str(notices.events());
  }
  {  // Second run: redelivered from K (K+1 too: the watermark stopped at K).
    TestSink sink;
    KafkaSource src(options, &sink, nullptr);
    ASSERT_TRUE(src.Start().ok());
    ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 20 - kK; }));
    std::vector<Delivered> got = sink.Snapshot();
    ASSERT_EQ(Offsets(got), Range(kK, 20));
    // Everything processed, out of order (newest first).
    for (auto it = got.rbegin(); it != got.rend(); ++it) {
      it->record.acker->Processed(it->record.ack_seq);
    }
    EXPECT_TRUE(WaitUntil([&] { return src.Stats().lag == 0; }));
    src.Stop();
  }
  // Third run: nothing old comes back; only a new message.
  Produce(mc.bootstraps(), "orders", Plain(1, 1, 20));
  {
    TestSink sink;
    KafkaSource src(options, &sink, nullptr);
    ASSERT_TRUE(src.Start().ok());
    ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 1; }));
    std::vector<Delivered> got = sink.Snapshot();
    ASSERT_EQ(Offsets(got), Range(20, 21));
    EXPECT_EQ(got[0].record.bytes, "p0-20");
    src.Stop();
  }
}

// Every (partition, offset) of `got` exactly once, and exactly the
// produced ones.
void ExpectExactlyOnce(const std::vector<Delivered>& got,
                       const std::string& topic, int partitions,
                       uint64_t per_partition) {
  std::map<std::pair<std::string, uint64_t>, int> count;
  for (const Delivered& d : got) count[{d.record.source, d.record.offset}]++;
  for (int p = 0; p < partitions; ++p) {
    for (uint64_t o = 0; o < per_partition; ++o) {
      auto it = count.find({absl::StrCat("kafka:", topic, "/", p), o});
      ASSERT_NE(it, count.end()) << "lost " << p << "@" << o;
      EXPECT_EQ(it->second, 1) << "duplicated " << p << "@" << o;
    }
  }
  EXPECT_EQ(got.size(), partitions * per_partition);
}

TEST_F(KafkaSourceTest, KafkaBackpressurePausesAndResumesWithoutLoss) {
  MockCluster mc;
  mc.CreateTopic("bp", 3);
  Produce(mc.bootstraps(), "bp", Plain(3, 100));
  TestSink sink;
  sink.set_refuse(true);
  Notices notices;
  KafkaOptions o = Options(mc, {"bp"}, "g-bp");
  o.batch = 10;
  KafkaSource src(o, &sink, notices.fn());
  ASSERT_TRUE(src.Start().ok());

  // Full sink: the partitions with records get paused...
  ASSERT_TRUE(WaitUntil([&] {
    return src.Stats().paused_partitions > 0 && sink.refused() > 0;
  })) << Str(notices.events());
  // ...and the poll loop keeps running (heartbeats, rebalances).
  const uint64_t polls = src.Stats().polls;
  const uint64_t refused = sink.refused();
  ASSERT_TRUE(WaitUntil([&] {
    return src.Stats().polls > polls + 10 && sink.refused() > refused + 5;
  }));
  EXPECT_EQ(sink.size(), 0u);
  EXPECT_TRUE(notices.Has("paused", "bp/"));
  // Bounded: what librdkafka handed out before each pause, not the topic.
  EXPECT_LE(src.Stats().max_buffered, 3 * o.batch);

  sink.set_refuse(false);
  ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 300; }))
      << sink.size() << "\n"
      << Str(notices.events());
  ASSERT_TRUE(WaitUntil([&] { return src.Stats().paused_partitions == 0; }));
  KafkaStats s = src.Stats();
  EXPECT_GT(s.pauses, 0u);
  EXPECT_EQ(s.resumes, s.pauses);
  EXPECT_EQ(s.buffered, 0u);
  EXPECT_TRUE(notices.Has("resumed", "bp/"));
  ExpectExactlyOnce(sink.Snapshot(), "bp", 3, 100);

  // Intermittently full: every other batch is refused.
  sink.set_refuse_odd(true);
  Produce(mc.bootstraps(), "bp", Plain(3, 100, 100));
  ASSERT_TRUE(WaitUntil([&] { return sink.size() >= 600; })) << sink.size();
  ExpectExactlyOnce(sink.Snapshot(), "bp", 3, 200);
  EXPECT_EQ(src.Stats().records, 600u);
  src.Stop();
  EXPECT_EQ(src.Stats().errors, 0u) << Str(notices.events());
}

// Consumer restarts and group rebalances, with eager and cooperative
// assignment.
class KafkaRebalanceTest : public KafkaSourceTest,
                           public ::testing::WithParamInterface<const char*> {};

struct Member {
  std::string name;
  TestSink sink;
  Notices notices;
  std::unique_ptr<KafkaSource> source;
  std::unique_ptr<AutoAcker> acker;

  Member(std::string n, const KafkaOptions& o) : name(std::move(n)) {
    source = std::make_unique<KafkaSource>(o, &sink, notices.fn());
    acker = std::make_unique<AutoAcker>(&sink);
  }
  // Stops the source once everything it delivered is processed.
  void Stop() {
    EXPECT_TRUE(WaitUntil([&] { return acker->acked() == sink.size(); }));
    source->Stop();
    acker->Stop();
  }
};

TEST_P(KafkaRebalanceTest, KafkaRestartAndRebalanceLoseNothing) {
  // librdkafka 2.0.2 (Debian 12) can abort when a cooperative-sticky
  // consumer that never got an assignment is destroyed (librdkafka#4312,
  // fixed in 2.3); one such abort was seen here. The case passed in every
  // later run, but an abort would take the whole suite down, so CI runs it
  // only on request.
  if (std::string(GetParam()) == "cooperative-sticky" &&
      std::getenv("INVARIANTD_KAFKA_COOPERATIVE") == nullptr) {
    GTEST_SKIP() << "set INVARIANTD_KAFKA_COOPERATIVE=1 to run (librdkafka "
                    "2.0.2 issue 4312)";
  }
  constexpr int kParts = 4;
  MockCluster mc;
  mc.CreateTopic("rb", kParts);
  KafkaOptions o = Options(mc, {"rb"}, "g-rb");
  o.config["partition.assignment.strategy"] = GetParam();
  o.batch = 7;
  o.config["auto.commit.interval.ms"] = "200";

  Produce(mc.bootstraps(), "rb", Plain(kParts, 50));
  std::vector<std::unique_ptr<Member>> members;
  auto total = [&] {
    std::set<std::pair<std::string, uint64_t>> seen;
    for (auto& m : members) {
      for (const Delivered& d : m->sink.Snapshot()) {
        seen.insert({d.record.source, d.record.offset});
      }
    }
    return seen.size();
  };
  auto dump = [&] {
    std::string out;
    for (auto& m : members) {
      absl::StrAppend(&out, m->name, ": ", m->sink.size(), " records\n",
                      Str(m->notices.events()));
    }
    return out;
  };

  members.push_back(std::make_unique<Member>("A", o));
  Member& a = *members.back();
  ASSERT_TRUE(a.source->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return total() == kParts * 50; })) << dump();

  // Everything A processed is committed (auto-commit) before anyone joins.
  auto committed = [&](const Member& m, int offset) {
    for (int p = 0; p < kParts; ++p) {
      if (!m.notices.Has("committed", absl::StrCat("rb/", p, "@", offset))) {
        return false;
      }
    }
    return true;
  };
  ASSERT_TRUE(WaitUntil([&] { return committed(a, 50); })) << dump();

  // B joins: the partitions are shared between A and B.
  members.push_back(std::make_unique<Member>("B", o));
  Member& b = *members.back();
  ASSERT_TRUE(b.source->Start().ok());
  ASSERT_TRUE(WaitUntil([&] {
    return b.source->Stats().assigned_partitions > 0 &&
           a.source->Stats().assigned_partitions +
                   b.source->Stats().assigned_partitions ==
               kParts;
  })) << dump();
  Produce(mc.bootstraps(), "rb", Plain(kParts, 50, 50));
  ASSERT_TRUE(WaitUntil([&] { return total() == kParts * 100; })) << dump();

  // A stops (leaves the group): B owns everything.
  a.Stop();
  ASSERT_TRUE(WaitUntil([&] {
    return b.source->Stats().assigned_partitions == kParts;
  })) << dump();
  Produce(mc.bootstraps(), "rb", Plain(kParts, 25, 100));
  ASSERT_TRUE(WaitUntil([&] { return total() == kParts * 125; })) << dump();

  ASSERT_TRUE(WaitUntil([&] { return committed(b, 125); })) << dump();

  // A restarts and B stops: A owns everything again.
  members.push_back(std::make_unique<Member>("A2", o));
  Member& a2 = *members.back();
  ASSERT_TRUE(a2.source->Start().ok());
  ASSERT_TRUE(WaitUntil([&] {
    return a2.source->Stats().assigned_partitions > 0;
  })) << dump();
  b.Stop();
  Produce(mc.bootstraps(), "rb", Plain(kParts, 25, 125));
  ASSERT_TRUE(WaitUntil([&] { return total() == kParts * 150; })) << dump();
  a2.Stop();

  // Every produced offset was delivered (and processed) at least once.
  EXPECT_EQ(total(), static_cast<size_t>(kParts * 150));

  // A record below an offset the group committed (a "committed" notice)
  // is never delivered again.
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> commits;
  for (auto& m : members) {
    for (const NoticeEvent& n : m->notices.events()) {
      if (n.event != "committed") continue;
      for (absl::string_view item : absl::StrSplit(AV(n.detail), ',')) {
        std::pair<absl::string_view, absl::string_view> po =
            absl::StrSplit(item, '@');
        uint64_t offset = 0;
        ASSERT_TRUE(absl::SimpleAtoi(po.second, &offset)) << n.detail;
        commits[absl::StrCat("kafka:", po.first)].push_back({n.seq, offset});
      }
    }
  }
  EXPECT_FALSE(commits.empty());
  // With the cooperative protocol the group stays up while partitions are
  // revoked, so the commit on revoke succeeds: a record processed before
  // its owner's "revoked" notice is never delivered again. (The mock
  // coordinator rejects commits while an eager rebalance is joining, which
  // real brokers accept; there the record is read again, uncommitted.)
  const bool cooperative = std::string(GetParam()) == "cooperative-sticky";
  std::map<std::pair<std::string, uint64_t>, uint64_t> revoked_after_ack;
  for (auto& m : members) {
    if (!cooperative) break;
    std::vector<NoticeEvent> notices = m->notices.events();
    for (const AckEvent& ack : m->acker->acks()) {
      const std::string part = ack.source.substr(6);  // "rb/<p>"
      for (const NoticeEvent& n : notices) {
        if (n.event != "revoked" || n.seq < ack.seq) continue;
        if (n.detail.find("(lost)") != std::string::npos) continue;
        bool covers = false;
        for (absl::string_view item : absl::StrSplit(AV(n.detail), ',')) {
          if (SV(item) == part) covers = true;
        }
        if (!covers) continue;
        auto key = std::make_pair(ack.source, ack.offset);
        auto [it, fresh] = revoked_after_ack.emplace(key, n.seq);
        if (!fresh) it->second = std::min(it->second, n.seq);
        break;
      }
    }
  }
  size_t duplicates = 0;
  std::map<std::pair<std::string, uint64_t>, int> deliveries;
  for (auto& m : members) {
    for (const Delivered& d : m->sink.Snapshot()) {
      auto key = std::make_pair(d.record.source, d.record.offset);
      if (++deliveries[key] > 1) ++duplicates;
      for (const auto& [seq, offset] : commits[d.record.source]) {
        EXPECT_FALSE(seq < d.seq && d.record.offset < offset)
            << m->name << " got " << key.first << "@" << key.second
            << " after offset " << offset << " was committed";
      }
      auto it = revoked_after_ack.find(key);
      EXPECT_FALSE(it != revoked_after_ack.end() && d.seq > it->second)
          << m->name << " got " << key.first << "@" << key.second
          << " again after it was processed before a revoke";
    }
  }
  // Duplicates are records delivered but not committed at a rebalance.
  std::cout << "[ INFO     ] " << duplicates << " redelivered of "
            << kParts * 150 << "\n"
            << (std::getenv("KAFKA_TEST_DUMP") ? dump() : "");

  // Everything was processed and committed: a new member of the group
  // reads only new messages.
  Produce(mc.bootstraps(), "rb", Plain(kParts, 1, 150));
  TestSink sink;
  KafkaSource fresh(o, &sink, nullptr);
  ASSERT_TRUE(fresh.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return sink.size() >= kParts; }));
  for (const Delivered& d : sink.Snapshot()) {
    EXPECT_EQ(d.record.offset, 150u) << d.record.source;
  }
  fresh.Stop();
}

INSTANTIATE_TEST_SUITE_P(Protocols, KafkaRebalanceTest,
                         ::testing::Values("range", "cooperative-sticky"),
                         [](const auto& info) {
                           return std::string(info.param) == "range"
                                      ? std::string("Eager")
                                      : std::string("Cooperative");
                         });

TEST_F(KafkaSourceTest, KafkaBadConfigFailsStart) {
  MockCluster mc;
  TestSink sink;
  {
    KafkaOptions o = Options(mc, {"t"}, "g");
    o.config["no.such.property"] = "1";
    KafkaSource src(o, &sink, nullptr);
    absl::Status s = src.Start();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("No such configuration property"));
  }
  {
    KafkaOptions o = Options(mc, {"t"}, "g");
    o.config["session.timeout.ms"] = "soon";
    KafkaSource src(o, &sink, nullptr);
    absl::Status s = src.Start();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("session.timeout.ms"));
  }
  {
    KafkaOptions o = Options(mc, {"t"}, "g");
    o.config["enable.auto.offset.store"] = "true";
    KafkaSource src(o, &sink, nullptr);
    EXPECT_EQ(src.Start().code(), absl::StatusCode::kInvalidArgument);
  }
  {
    KafkaOptions o = Options(mc, {}, "g");
    KafkaSource src(o, &sink, nullptr);
    EXPECT_EQ(src.Start().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(KafkaSourceTest, KafkaUnknownTopicIsANotice) {
  MockCluster mc;
  mc.CreateTopic("present", 1);
  TestSink sink;
  Notices notices;
  // The mock cluster creates topics on first sight; make "absent" report
  // what a real broker does for a topic that does not exist.
  rd_kafka_mock_topic_set_error(mc.cluster(), "absent",
                                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  KafkaSource src(Options(mc, {"absent"}, "g-absent"), &sink, notices.fn());
  ASSERT_TRUE(src.Start().ok());
  EXPECT_TRUE(WaitUntil([&] { return notices.Has("error", "absent"); }))
      << Str(notices.events());
  EXPECT_GT(src.Stats().errors, 0u);
  src.Stop();
  EXPECT_EQ(sink.size(), 0u);
}

}  // namespace
}  // namespace invariantd
