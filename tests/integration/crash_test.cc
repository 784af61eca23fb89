// Crash consistency of the real binary (RELIABILITY.md R1): `invariantd run`
// tails a growing file and pages the real Alertmanager; the test kills it
// with SIGKILL at random moments -- at start-up, mid-batch, between an
// evidence commit and the acknowledgement of its input, mid-POST -- and
// restarts it, many times. At the end:
//   - every violation the stream holds (by `invariantd replay` of the final
//     file) is in the evidence store exactly once, including the ones whose
//     state was built before a crash and completed after it;
//   - each reached Alertmanager: one alert per rule and key;
//   - `invariantd evidence verify` finds the chain intact.
// The seed and the kill schedule are printed; INVARIANTD_CRASH_KILLS sets
// how many kills (default 50; docs/semantics.md records a longer run).
// The same with a Kafka source (librdkafka's mock cluster in this process,
// 5 partitions): every violation of every partition stored exactly once.
// Each Kafka restart waits for the killed member's session to expire
// (6 s), so it runs fewer kills (INVARIANTD_CRASH_KAFKA_KILLS, default 6).
#include <signal.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "exporters/evidence/store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tests/integration/alertmanager.h"
#include "tests/integration/child_process.h"
#include "tests/kafka_mock_cluster.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// Term per node never regresses; one leader per term; an operation id is
// applied once per node. Faults are planted far apart from the events they
// contradict, so most of them span at least one crash.
constexpr char kRules[] = R"yaml(input: {format: json}
rules:
  - {name: term-monotonic, kind: monotonic, key: [node], field: term}
  - name: one-leader
    kind: agreement
    when: role == "leader"
    key: [{term: term}]
    field: node
  - {name: applied-once, kind: unique, key: [node], field: op}
)yaml";

constexpr int kNodes = 5;

// Line i (0-based) of the stream. `dense` plants an operation applied
// twice every 97 lines, 700 lines after its first use.
std::string EventLine(int i, bool dense = false) {
  const int node = i % kNodes;
  int term = 1 + i / 50;
  if (i % 997 == 996) term -= 3;  // a regression
  std::string op = absl::StrCat("op-", i);
  if (i % 1301 == 1300) op = absl::StrCat("op-", i - 1000);  // applied twice
  if (dense && i >= 700 && i % 97 == 95) op = absl::StrCat("op-", i - 700);
  std::string role = "follower";
  if (i % 50 == node) role = "leader";  // node (i % 50) leads term
  int t = term;
  if (i % 1499 == 1498) {  // a second leader, for an older term
    role = "leader";
    t = term - 2;
  }
  return absl::StrCat("{\"node\":\"n", node, "\",\"term\":", t, ",\"role\":\"",
                      role, "\",\"op\":\"", op, "\"}");
}

using Found = std::tuple<std::string, uint64_t>;  // rule, line

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir() / "logs");
    std::ofstream(dir() / "rules.yaml") << kRules;
    // Tail positions saved often, so that restarts resume late in the
    // stream and the rule state they need comes from the checkpoint.
    std::ofstream(dir() / "config.yaml") << "checkpoint_interval_ms: 20\n";
    log_ = dir() / "logs" / "stream.ndjson";
  }
  fs::path dir() const { return fs::path(tmp_.path()); }
  std::string Data() const { return (dir() / "data").string(); }

  void Append(int from, int to) {
    std::ofstream out(log_, std::ios::app);
    for (int i = from; i < to; ++i) out << EventLine(i) << "\n";
  }

  std::unique_ptr<Child> StartDaemon(const std::string& alertmanager,
                                     const std::string& log_level = "warning") {
    return std::make_unique<Child>(std::vector<std::string>{
        INVARIANTD_BINARY, "run", "--config", (dir() / "config.yaml").string(),
        "--rules", (dir() / "rules.yaml").string(), "--tail",
        (dir() / "logs" / "*.ndjson").string(), "--listen", "127.0.0.1:0",
        "--data-dir", Data(), "--workers", "2", "--alertmanager", alertmanager,
        "--log-level", log_level});
  }

  // The acknowledged tail position (bytes) of the stream, or -1.
  int64_t AckedOffset() const {
    std::ifstream in(fs::path(Data()) / "tail-positions.json");
    const Json j = Json::parse(in, nullptr, false);
    if (!j.is_object()) return -1;
    for (const Json& p : j["positions"]) return p.value("offset", int64_t{-1});
    return -1;
  }

  TempDir tmp_;
  fs::path log_;
};

TEST_F(CrashTest, KillNineAnywhereLosesAndDoublesNothing) {
  int kills = 50;
  if (const char* k = std::getenv("INVARIANTD_CRASH_KILLS")) {
    ASSERT_TRUE(absl::SimpleAtoi(k, &kills));
  }
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::cout << "crash test: seed " << seed << ", " << kills << " kills\n";

  Alertmanager am(dir(), FreePort(), (dir() / "am").string());
  ASSERT_TRUE(am.ready()) << am.err();
  const std::string am_url = am.Url("");

  // Each round appends events and kills the daemon after a random delay;
  // a third of the rounds append while it runs.
  constexpr int kPerRound = 400;
  int written = 0;
  std::uniform_int_distribution<int> delay_ms(0, 400);
  for (int round = 0; round < kills; ++round) {
    const bool during = rng() % 3 == 0;
    if (!during) {
      Append(written, written + kPerRound);
      written += kPerRound;
    }
    auto d = StartDaemon(am_url);
    if (during) {
      Append(written, written + kPerRound);
      written += kPerRound;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ASSERT_EQ(d->Signal(SIGKILL), 0);
    const int status = d->Wait();
    // Killed, or (rarely) it had already failed: then say why.
    ASSERT_EQ(status, 128 + SIGKILL) << d->err();
  }

  // The last life runs until every line is acknowledged, and on until the
  // pages have reached Alertmanager (the checks below read the store while
  // it runs, as an operator would).
  const int64_t size = static_cast<int64_t>(fs::file_size(log_));
  auto last = StartDaemon(am_url, "info");
  ASSERT_TRUE(last->WaitFor([&] {
    return last->err().find("\"msg\":\"started\"") != std::string::npos;
  })) << last->err();
  ASSERT_TRUE(last->WaitFor([&] { return AckedOffset() == size; }, 300))
      << "acked " << AckedOffset() << " of " << size << "\n"
      << last->err();

  // What the stream holds, by the replayer on the final file.
  std::multiset<Found> want;
  {
    std::string out;
    ASSERT_EQ(
        Shell(absl::StrCat(INVARIANTD_BINARY, " replay --rules ",
                           (dir() / "rules.yaml").string(),
                           " --format jsonl --no-summary ", log_.string()),
              &out),
        1)
        << out;
    for (absl::string_view l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
      const Json v = Json::parse(l);
      want.emplace(v["rule"].get<std::string>(), v["line"].get<uint64_t>());
    }
  }
  ASSERT_GT(want.size(), static_cast<size_t>(kills / 2));

  // The store: each exactly once.
  std::multiset<Found> got;
  std::set<std::pair<std::string, std::string>> rule_keys;
  {
    auto store =
        EvidenceStore::Open(Data() + "/evidence.db", /*read_only=*/true);
    ASSERT_TRUE(store.ok()) << store.status();
    EvidenceQuery q;
    q.limit = 1000;
    while (true) {
      auto page = (*store)->Find(q);
      ASSERT_TRUE(page.ok()) << page.status();
      if (page->empty()) break;
      for (const EvidenceRecord& r : *page) {
        got.emplace(r.rule, r.line);
        rule_keys.emplace(r.rule, r.key_json);
        q.after_seq = r.seq;
      }
    }
  }
  std::vector<Found> missing, extra;
  std::set_difference(want.begin(), want.end(), got.begin(), got.end(),
                      std::back_inserter(missing));
  std::set_difference(got.begin(), got.end(), want.begin(), want.end(),
                      std::back_inserter(extra));
  auto show = [](const std::vector<Found>& v) {
    std::string s;
    for (const auto& [rule, line] : v)
      absl::StrAppend(&s, rule, ":", line, " ");
    return s;
  };
  EXPECT_TRUE(missing.empty())
      << "lost (seed " << seed << "): " << show(missing);
  EXPECT_TRUE(extra.empty())
      << "doubled or invented (seed " << seed << "): " << show(extra);

  // The alerts the store holds (committed with the evidence): one per rule
  // and key.
  std::set<std::string> fingerprints;
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2((Data() + "/evidence.db").c_str(), &db,
                              SQLITE_OPEN_READONLY, nullptr),
              SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT fingerprint FROM alerts", -1, &st,
                                 nullptr),
              SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      fingerprints.insert(
          reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  EXPECT_EQ(fingerprints.size(), rule_keys.size());

  // Alertmanager: every one of them, once.
  std::map<std::string, Json> alerts;
  EXPECT_TRUE(Poll(
      [&] {
        alerts = am.Alerts();
        return alerts.size() >= fingerprints.size();
      },
      300))
      << alerts.size() << " alerts for " << fingerprints.size()
      << " rule/key pairs";
  std::set<std::string> paged;
  for (const auto& [fp, a] : alerts) paged.insert(fp);
  EXPECT_EQ(paged, fingerprints);
  last->Signal(SIGTERM);
  EXPECT_EQ(last->Wait(), 0) << last->err();

  std::string out;
  EXPECT_EQ(Shell(absl::StrCat(INVARIANTD_BINARY,
                               " evidence verify --data-dir ", Data()),
                  &out),
            0)
      << out;
}

// Per-node rules only: a partition holds one node's events, and the order
// between partitions is not defined, so a cross-node rule's findings would
// depend on the interleaving of each life.
constexpr char kKafkaRules[] = R"yaml(input: {format: json}
rules:
  - {name: term-monotonic, kind: monotonic, key: [node], field: term}
  - {name: applied-once, kind: unique, key: [node], field: op}
)yaml";

using KafkaFound = std::tuple<std::string, std::string, uint64_t>;  // rule,
                                                                    // source,
                                                                    // offset

void KafkaDelivered(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++*static_cast<int*>(opaque);
  }
}

// Produces events [from, to) in order, node n to partition n.
void ProduceEvents(const std::string& bootstraps, const std::string& topic,
                   int from, int to) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char errstr[256];
  ASSERT_EQ(rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(),
                              errstr, sizeof(errstr)),
            RD_KAFKA_CONF_OK);
  ASSERT_EQ(
      rd_kafka_conf_set(conf, "max.in.flight", "1", errstr, sizeof(errstr)),
      RD_KAFKA_CONF_OK);
  int failed = 0;
  rd_kafka_conf_set_opaque(conf, &failed);
  rd_kafka_conf_set_log_cb(conf, &QuietKafkaLog);
  rd_kafka_conf_set_dr_msg_cb(conf, &KafkaDelivered);
  rd_kafka_t* rk =
      rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  ASSERT_NE(rk, nullptr) << errstr;
  for (int i = from; i < to; ++i) {
    const std::string line = EventLine(i, /*dense=*/true);
    ASSERT_EQ(rd_kafka_producev(
                  rk, RD_KAFKA_V_TOPIC(topic.c_str()),
                  RD_KAFKA_V_PARTITION(i % kNodes),
                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                  RD_KAFKA_V_VALUE(const_cast<char*>(line.data()), line.size()),
                  RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  EXPECT_EQ(rd_kafka_flush(rk, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
  EXPECT_EQ(failed, 0);
}

TEST_F(CrashTest, KafkaKillNineLosesAndDoublesNothing) {
  int kills = 6;
  if (const char* k = std::getenv("INVARIANTD_CRASH_KAFKA_KILLS")) {
    ASSERT_TRUE(absl::SimpleAtoi(k, &kills));
  }
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::cout << "kafka crash test: seed " << seed << ", " << kills << " kills\n";
  std::ofstream(dir() / "kafka-rules.yaml") << kKafkaRules;
  // A short session: the restarted member's join completes once the killed
  // member's session expires (see kafka_run_test.cc).
  std::ofstream(dir() / "kafka-config.yaml")
      << "checkpoint_interval_ms: 20\nkafka:\n  config:\n"
      << "    session.timeout.ms: \"6000\"\n"
      << "    heartbeat.interval.ms: \"250\"\n"
      // Offsets committed often, so that restarts resume late and depend on
      // the restored rule state.
      << "    auto.commit.interval.ms: \"100\"\n";
  const std::string topic = "crash";
  const std::string group = absl::StrCat("crash-", getpid());
  {
    MockCluster cluster;
    cluster.CreateTopic(topic, kNodes);
    auto start = [&] {
      return std::make_unique<Child>(std::vector<std::string>{
          INVARIANTD_BINARY, "run",
          "--config",        (dir() / "kafka-config.yaml").string(),
          "--rules",         (dir() / "kafka-rules.yaml").string(),
          "--listen",        "127.0.0.1:0",
          "--data-dir",      Data(),
          "--workers",       "2",
          "--kafka-brokers", cluster.bootstraps(),
          "--kafka-topic",   topic,
          "--kafka-group",   group,
          "--log-level",     "warning",
          "--no-stdout"});
    };
    // Each life: the join completes once the previous (killed) member's
    // session has expired; then events are produced while it consumes, and
    // it is killed a random moment later (mid-batch, mid-commit, or idle).
    constexpr int kPerRound = 500;
    int produced = 0;
    std::uniform_int_distribution<int> join_ms(5500, 8000);
    std::uniform_int_distribution<int> delay_ms(0, 300);
    for (int round = 0; round < kills; ++round) {
      auto d = start();
      std::this_thread::sleep_for(std::chrono::milliseconds(join_ms(rng)));
      ASSERT_NO_FATAL_FAILURE(ProduceEvents(cluster.bootstraps(), topic,
                                            produced, produced + kPerRound));
      produced += kPerRound;
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
      ASSERT_EQ(d->Signal(SIGKILL), 0);
      ASSERT_EQ(d->Wait(), 128 + SIGKILL) << d->err();
    }

    // What each partition holds: the replayer on its events, in order.
    std::multiset<KafkaFound> want;
    for (int p = 0; p < kNodes; ++p) {
      const fs::path part = dir() / absl::StrCat("partition-", p, ".ndjson");
      {
        std::ofstream out(part);
        for (int i = p; i < produced; i += kNodes) {
          out << EventLine(i, /*dense=*/true) << "\n";
        }
      }
      std::string out;
      ASSERT_EQ(
          Shell(absl::StrCat(INVARIANTD_BINARY, " replay --rules ",
                             (dir() / "kafka-rules.yaml").string(),
                             " --format jsonl --no-summary ", part.string()),
                &out),
          1)
          << out;
      for (absl::string_view l : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
        const Json v = Json::parse(l);
        want.emplace(v["rule"].get<std::string>(),
                     absl::StrCat("kafka:", topic, "/", p),
                     v["line"].get<uint64_t>() - 1);
      }
    }
    ASSERT_FALSE(want.empty());

    // The last life runs until the store holds as many violations as the
    // stream, then drains and stops.
    auto count = [&]() -> size_t {
      auto store =
          EvidenceStore::Open(Data() + "/evidence.db", /*read_only=*/true);
      if (!store.ok()) return 0;
      auto v = (*store)->Verify();
      return v.ok() ? v->records : 0;
    };
    auto last = start();
    EXPECT_TRUE(last->WaitFor([&] { return count() >= want.size(); }, 180))
        << count() << " of " << want.size() << "\n"
        << last->err();
    last->Signal(SIGTERM);
    EXPECT_EQ(last->Wait(), 0) << last->err();

    std::multiset<KafkaFound> got;
    auto store =
        EvidenceStore::Open(Data() + "/evidence.db", /*read_only=*/true);
    ASSERT_TRUE(store.ok()) << store.status();
    EvidenceQuery q;
    q.limit = 1000;
    while (true) {
      auto page = (*store)->Find(q);
      ASSERT_TRUE(page.ok()) << page.status();
      if (page->empty()) break;
      for (const EvidenceRecord& r : *page) {
        got.emplace(r.rule, r.source, r.offset);
        q.after_seq = r.seq;
      }
    }
    std::vector<KafkaFound> missing, extra;
    std::set_difference(want.begin(), want.end(), got.begin(), got.end(),
                        std::back_inserter(missing));
    std::set_difference(got.begin(), got.end(), want.begin(), want.end(),
                        std::back_inserter(extra));
    auto show = [](const std::vector<KafkaFound>& v) {
      std::string s;
      for (const auto& [rule, source, offset] : v) {
        absl::StrAppend(&s, rule, ":", source, "@", offset, " ");
      }
      return s;
    };
    EXPECT_TRUE(missing.empty())
        << "lost (seed " << seed << "): " << show(missing);
    EXPECT_TRUE(extra.empty())
        << "doubled or invented (seed " << seed << "): " << show(extra);
    auto verify = (*store)->Verify();
    ASSERT_TRUE(verify.ok());
    EXPECT_TRUE(verify->ok) << verify->problem;
  }
  EXPECT_EQ(rd_kafka_wait_destroyed(10000), 0);
}

}  // namespace
}  // namespace invariantd
