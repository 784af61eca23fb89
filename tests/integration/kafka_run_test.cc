// The real sidecar (`invariantd run`) consuming Kafka: this test process
// runs librdkafka's mock cluster (3 brokers on loopback) and a real
// librdkafka producer, and the daemon consumes the topic over TCP. Checked:
// violations carry the Kafka position (source = "kafka:<topic>/<partition>",
// offset = the Kafka offset), a restart in the same consumer group resumes
// after the offsets committed on SIGTERM (each violation reported exactly
// once across both runs), and /metrics counts every consumed event.
//
// The etcd raft sample is produced with the node id as message key, node n
// to partition n-1, so each node's events keep their order. Rules keyed
// across nodes (one leader per term) depend on the order of events from
// different partitions, which Kafka does not define: where a test asserts
// the exact offset of such a violation, it produces the events before the
// fault, waits until the daemon has processed them, and only then produces
// the rest.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tests/integration/child_process.h"
#include "tests/kafka_mock_cluster.h"

namespace invariantd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;
using Json = nlohmann::json;
namespace fs = std::filesystem;

// Deadline for every polled condition.
constexpr int kDeadlineSeconds = 60;

// Where the broker stored a produced message.
struct Position {
  int32_t partition = -1;
  int64_t offset = -1;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FAIL;
};

void DeliveryReport(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* pos = static_cast<Position*>(m->_private);
  pos->partition = m->partition;
  pos->offset = m->offset;
  pos->err = m->err;
}

// The node id of an etcd raft trace line ("1", "2" or "3").
std::string NodeId(const std::string& line) {
  return Json::parse(line)["event"]["nid"].get<std::string>();
}

// Produces lines[from, to) in order, keyed by node id, node n to partition
// n-1, waits until every message is acknowledged and records where each
// went in (*positions)[i].
void ProduceLines(const std::string& bootstraps, const std::string& topic,
                  const std::vector<std::string>& lines, size_t from, size_t to,
                  std::vector<Position>* positions) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[256];
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(),
                              errstr, sizeof(errstr)),
            RD_KAFKA_CONF_OK);
  // In order per partition: offsets follow production order.
  ASSERT_EQ(
      rd_kafka_conf_set(conf, "max.in.flight", "1", errstr, sizeof(errstr)),
      RD_KAFKA_CONF_OK);
  rd_kafka_conf_set_log_cb(conf, &QuietKafkaLog);
  rd_kafka_conf_set_dr_msg_cb(conf, &DeliveryReport);
  rd_kafka_t* rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ASSERT_NE(rk, nullptr) << errstr;
  for (size_t i = from; i < to; ++i) {
    const std::string key = NodeId(lines[i]);
    int node = 0;
    ASSERT_TRUE(absl::SimpleAtoi(key, &node)) << key;
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(node - 1),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE(const_cast<char*>(lines[i].data()), lines[i].size()),
        RD_KAFKA_V_KEY(key.data(), key.size()),
        RD_KAFKA_V_OPAQUE(&(*positions)[i]), RD_KAFKA_V_END);
    ASSERT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  EXPECT_EQ(rd_kafka_outq_len(rk), 0);
  rd_kafka_destroy(rk);
  for (size_t i = from; i < to; ++i) {
    ASSERT_EQ((*positions)[i].err, RD_KAFKA_RESP_ERR_NO_ERROR)
        << "line " << i + 1 << ": " << rd_kafka_err2str((*positions)[i].err);
  }
}

// A violation as the test identifies it.
using Found = std::tuple<std::string, std::string, int64_t>;  // rule, source,
                                                              // offset

std::vector<Json> Violations(const std::string& out) {
  std::vector<Json> v;
  for (absl::string_view l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    v.push_back(Json::parse(l));
  }
  return v;
}

std::vector<Found> Keys(const std::vector<Json>& violations) {
  std::vector<Found> keys;
  for (const Json& v : violations) {
    keys.emplace_back(v["rule"].get<std::string>(),
                      v["source"].get<std::string>(),
                      v["offset"].get<int64_t>());
  }
  return keys;
}

// The daemon's "kafka" notices with event `event`, in order (details).
std::vector<std::string> Notices(const std::string& err,
                                 const std::string& event) {
  std::vector<std::string> details;
  for (absl::string_view l : absl::StrSplit(err, '\n', absl::SkipEmpty())) {
    const Json j = Json::parse(l, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.value("msg", "") == "kafka" &&
        j.value("event", "") == event) {
      details.push_back(j.value("detail", ""));
    }
  }
  return details;
}

class KafkaRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = fs::temp_directory_path() /
           absl::StrCat("invariantd-kafka-", getpid(), "-", name);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ifstream in(Src("rules/packs/samples/etcd-raft-faults.ndjson"));
    std::string line;
    while (std::getline(in, line)) sample_.push_back(line);
    ASSERT_EQ(sample_.size(), 140u);
    positions_.resize(sample_.size());
    topic_ = absl::StrCat("raft-", name);
    // A group of its own: no committed offsets from another test or run.
    group_ = absl::StrCat("invariantd-", name, "-", getpid());
    cluster_ = std::make_unique<MockCluster>();
    cluster_->CreateTopic(topic_, 3);
    // The daemon leaves the group on SIGTERM (LeaveGroup is sent and
    // received), but librdkafka's mock coordinator (2.0.2) then keeps the
    // emptied group joining until a timer of the departed member's session
    // timeout fires, and only then answers the restarted member's join
    // (44 s with the default 45 s session). A short session keeps the
    // restart test within seconds.
    std::ofstream config(dir_ / "config.yaml");
    config << "kafka:\n  config:\n    session.timeout.ms: \"6000\"\n"
           << "    heartbeat.interval.ms: \"250\"\n";
  }
  void TearDown() override {
    cluster_.reset();
    // Every librdkafka handle of the test process is gone, with its threads.
    EXPECT_EQ(rd_kafka_wait_destroyed(10000), 0);
    fs::remove_all(dir_);
  }

  // Starts `invariantd run` on the topic into *c and waits for its HTTP
  // port.
  void Start(std::unique_ptr<Child>* c) {
    *c = std::make_unique<Child>(std::vector<std::string>{
        INVARIANTD_BINARY, "run", "--rules", Src("rules/packs/etcd-raft.yaml"),
        "--config", (dir_ / "config.yaml").string(), "--listen", "127.0.0.1:0",
        "--data-dir", (dir_ / "data").string(), "--kafka-brokers",
        cluster_->bootstraps(), "--kafka-topic", topic_, "--kafka-group",
        group_});
    Child* child = c->get();
    port_ = 0;
    ASSERT_TRUE(child->WaitForPort(&port_, kDeadlineSeconds)) << child->err();
  }

  void Produce(size_t from, size_t to) {
    ProduceLines(cluster_->bootstraps(), topic_, sample_, from, to,
                 &positions_);
  }

  std::string Metrics() const {
    std::string m;
    Shell(absl::StrCat("curl -sf http://127.0.0.1:", port_, "/metrics"), &m);
    return m;
  }
  std::optional<double> KafkaEvents(const std::string& metrics) const {
    return MetricSum(
        metrics, "invariantd_source_events_total",
        {"kind=\"kafka\"", absl::StrCat("source=\"", group_, "\"")});
  }
  std::optional<double> KafkaLag(const std::string& metrics) const {
    return MetricSum(
        metrics, "invariantd_kafka_consumer_lag_messages",
        {absl::StrCat("source=\"", group_, "\""), "partition=\"all\""});
  }

  // Polls /metrics until this run has checked `events` Kafka events, then
  // expects exactly that many (more means something was read twice). With
  // `lag_zero`, also waits for the consumer lag gauge to be 0. The gauge is
  // only meaningful when every message was produced before the daemon
  // started: then lag 0 means every message up to the partitions' ends was
  // processed (Processed() called), so its offset is stored for the commit.
  // (After a later produce the gauge may still show the lag computed before
  // the new messages were fetched, and after a restart it stays unknown
  // until every partition delivers a new message.)
  void WaitEvents(Child* c, double events, bool lag_zero = false) {
    std::string last;
    ASSERT_TRUE(c->WaitFor(
        [&] {
          last = Metrics();
          const auto n = KafkaEvents(last);
          const auto lag = KafkaLag(last);
          return n && *n >= events && (!lag_zero || (lag && *lag == 0));
        },
        kDeadlineSeconds))
        << "waiting for " << events << " events"
        << (lag_zero ? " and lag 0\n" : "\n") << last << c->err();
    EXPECT_EQ(KafkaEvents(last), events) << last;
  }

  // What the daemon must report for sample lines [from, to): rule, the
  // Kafka partition the line went to and its offset there.
  std::vector<Found> Expected(size_t from, size_t to) const {
    // 1-based sample lines of the three injected faults.
    static const auto* const kFaults =
        new std::vector<std::pair<size_t, std::string>>{
            {102, "etcd-raft-term-never-regresses"},
            {118, "etcd-raft-one-leader-per-term"},
            {118, "etcd-raft-role-transitions"},
            {128, "etcd-raft-applied-within-commit"}};
    std::vector<Found> out;
    for (const auto& [line, rule] : *kFaults) {
      if (line - 1 < from || line - 1 >= to) continue;
      const Position& p = positions_[line - 1];
      out.emplace_back(rule, absl::StrCat("kafka:", topic_, "/", p.partition),
                       p.offset);
    }
    return out;
  }

  // Per partition, the offset after the last produced message of
  // lines[0, to), as "topic/p@offset" (the form of a "committed" notice).
  std::vector<std::string> EndOffsets(size_t to) const {
    std::map<int32_t, int64_t> end;
    for (size_t i = 0; i < to; ++i) {
      end[positions_[i].partition] = positions_[i].offset + 1;
    }
    std::vector<std::string> out;
    for (const auto& [p, o] : end) {
      out.push_back(absl::StrCat(topic_, "/", p, "@", o));
    }
    return out;
  }

  fs::path dir_;
  std::vector<std::string> sample_;
  std::vector<Position> positions_;  // per sample line, once produced
  std::string topic_, group_;
  std::unique_ptr<MockCluster> cluster_;
  int port_ = 0;
};

TEST_F(KafkaRunTest, ReportsViolationsAtTheirKafkaPartitionAndOffset) {
  // Everything before the second leader of term 2 (line 118) first, so the
  // daemon has seen node 3 lead term 2 before node 2 claims it.
  ASSERT_NO_FATAL_FAILURE(Produce(0, 117));
  std::unique_ptr<Child> c;
  ASSERT_NO_FATAL_FAILURE(Start(&c));
  ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 117));
  ASSERT_NO_FATAL_FAILURE(Produce(117, 140));
  ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 140));
  ASSERT_TRUE(
      c->WaitFor([&] { return Lines(c->out()) >= 4; }, kDeadlineSeconds))
      << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0) << c->err();

  // Each node's events went to its own partition, in order, so all three
  // partitions carry events and the offsets count from 0 per partition.
  std::map<int32_t, int64_t> next;
  for (size_t i = 0; i < sample_.size(); ++i) {
    const int32_t p = positions_[i].partition;
    EXPECT_EQ(std::to_string(p + 1), NodeId(sample_[i])) << "line " << i + 1;
    EXPECT_EQ(positions_[i].offset, next[p]++) << "line " << i + 1;
  }
  EXPECT_EQ(next.size(), 3u);

  const std::vector<Json> violations = Violations(c->out());
  EXPECT_THAT(Keys(violations), UnorderedElementsAreArray(Expected(0, 140)))
      << c->out();
  for (const Json& v : violations) {
    EXPECT_EQ(v["line"], 0) << v;  // Kafka records have no line number
    if (v["rule"] == "etcd-raft-one-leader-per-term") {
      EXPECT_EQ(v["observed"], "2") << v;
      EXPECT_EQ(v["previous"], "3") << v;
    }
  }
  EXPECT_THAT(c->err(), HasSubstr("\"events\":\"140\""));
}

TEST_F(KafkaRunTest, RestartInTheSameGroupReportsEachViolationOnce) {
  // First run: lines 1-110 hold one fault (line 102).
  ASSERT_NO_FATAL_FAILURE(Produce(0, 110));
  std::string first_out;
  {
    std::unique_ptr<Child> c;
    ASSERT_NO_FATAL_FAILURE(Start(&c));
    // Everything processed before the stop: its offsets are committed.
    ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 110, /*lag_zero=*/true));
    ASSERT_TRUE(
        c->WaitFor([&] { return Lines(c->out()) >= 1; }, kDeadlineSeconds))
        << c->err();
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0) << c->err();
    first_out = c->out();
    EXPECT_THAT(Keys(Violations(first_out)),
                UnorderedElementsAreArray(Expected(0, 110)));
    // Stop committed the processed offsets (if the auto-commit timer had not
    // already): some successful commit covers each partition's end.
    const std::vector<std::string> commits = Notices(c->err(), "committed");
    for (const std::string& end : EndOffsets(110)) {
      bool covered = false;
      for (const std::string& d : commits) {
        for (absl::string_view part : absl::StrSplit(d, ',')) {
          covered = covered || part == end;
        }
      }
      EXPECT_TRUE(covered) << end << " not committed:\n" << c->err();
    }
    EXPECT_THAT(Notices(c->err(), "commit_failed"), ElementsAre()) << c->err();
  }
  // While it is down, the service keeps producing (up to line 117); the
  // rest comes once the second run has processed those.
  ASSERT_NO_FATAL_FAILURE(Produce(110, 117));
  std::string second_out;
  {
    std::unique_ptr<Child> c;
    ASSERT_NO_FATAL_FAILURE(Start(&c));
    // Exactly 7 events: nothing committed by the first run is read again.
    ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 7));
    ASSERT_NO_FATAL_FAILURE(Produce(117, 140));
    ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 30));
    ASSERT_TRUE(
        c->WaitFor([&] { return Lines(c->out()) >= 3; }, kDeadlineSeconds))
        << c->err();
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0) << c->err();
    second_out = c->out();
    EXPECT_THAT(c->err(), HasSubstr("\"events\":\"30\""));
  }
  // Across both runs, each of the four violations exactly once.
  EXPECT_THAT(Keys(Violations(first_out + second_out)),
              UnorderedElementsAreArray(Expected(0, 140)))
      << "first run:\n"
      << first_out << "second run:\n"
      << second_out;
}

TEST_F(KafkaRunTest, MetricsCountEveryConsumedEvent) {
  std::unique_ptr<Child> c;
  ASSERT_NO_FATAL_FAILURE(Start(&c));
  // Produced while the daemon runs, all at once.
  ASSERT_TRUE(c->WaitFor([&] { return !Notices(c->err(), "assigned").empty(); },
                         kDeadlineSeconds))
      << c->err();
  ASSERT_NO_FATAL_FAILURE(Produce(0, 140));
  ASSERT_NO_FATAL_FAILURE(WaitEvents(c.get(), 140));
  std::string out;
  EXPECT_EQ(
      Shell(absl::StrCat("curl -sf http://127.0.0.1:", port_, "/readyz"), &out),
      0)
      << out;
  // Every fault is found. Which node's leadership event is the second in
  // term 2 depends on the order across partitions, so only rules are
  // compared here.
  ASSERT_TRUE(
      c->WaitFor([&] { return Lines(c->out()) >= 4; }, kDeadlineSeconds))
      << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0) << c->err();
  std::vector<std::string> rules;
  for (const Json& v : Violations(c->out())) rules.push_back(v["rule"]);
  std::vector<std::string> expected;
  for (const Found& f : Expected(0, 140)) expected.push_back(std::get<0>(f));
  EXPECT_THAT(rules, UnorderedElementsAreArray(expected)) << c->out();
  EXPECT_THAT(c->err(), HasSubstr("\"events\":\"140\""));
}

}  // namespace
}  // namespace invariantd
