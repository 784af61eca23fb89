#include "exporters/prometheus/metrics.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

void FillAll(Metrics* m) {
  m->SourceEvents("file", "audit", 10);
  m->SourceEvents("http", "http", 3);
  m->SourceRejected("file", "audit", "invalid_json", 2);
  m->SourceRedelivered("kafka", "events", 1);
  m->SourceLagBytes("file", "audit", 4096);
  m->KafkaLag("events", 3, 17);
  m->RuleViolation("term-never-regresses", "critical");
  m->RuleEvalLatency(0.00002);
  m->RuleEvalLatency(0.3);
  m->RuleKeys("term-never-regresses", 5);
  m->RuleOverflow("term-never-regresses", "evicted", 4);
  m->RuleSkipped("term-never-regresses", "missing_field", 9);
  m->QueueDepth("ingest", 12);
  m->AdmissionRejected("queue_full");
  m->CheckpointAge(1.5);
  m->Reload(true);
  m->Reload(false);
  m->HttpRequest(200);
  m->HttpRequest(429);
  m->HttpRequest(7);
  m->ProtocolState("term", "node-1", 42);
  m->EvidenceWalCheckpoints(6, 2, 1);
}

TEST(MetricsTest, ExpositionHasExpectedSeries) {
  Metrics m("1.2.3");
  FillAll(&m);
  std::string text = m.Exposition();
  for (std::string_view want : {
           "invariantd_build_info{version=\"1.2.3\"} 1",
           "invariantd_source_events_total{kind=\"file\",source=\"audit\"} 10",
           "invariantd_source_rejected_total{kind=\"file\",reason=\"invalid_"
           "json\",source=\"audit\"} 2",
           "invariantd_source_redelivered_total{kind=\"kafka\",source="
           "\"events\"} 1",
           "invariantd_source_lag_bytes{kind=\"file\",source=\"audit\"} 4096",
           "invariantd_kafka_consumer_lag_messages{partition=\"3\",source="
           "\"events\"} 17",
           "invariantd_rule_violations_total{rule=\"term-never-regresses\","
           "severity=\"critical\"} 1",
           "invariantd_rule_eval_duration_seconds_count 2",
           "invariantd_rule_eval_duration_seconds_bucket{le=\"2.5e-05\"} 1",
           "invariantd_rule_keys{rule=\"term-never-regresses\"} 5",
           "invariantd_rule_overflow_total{policy=\"evicted\",rule=\"term-"
           "never-regresses\"} 4",
           "invariantd_rule_skipped_total{reason=\"missing_field\",rule="
           "\"term-never-regresses\"} 9",
           "invariantd_queue_depth{queue=\"ingest\"} 12",
           "invariantd_rejected_requests_due_to_admission_control_total{"
           "reason=\"queue_full\"} 1",
           "invariantd_checkpoint_age_seconds 1.5",
           "invariantd_config_reloads_total{result=\"success\"} 1",
           "invariantd_config_reloads_total{result=\"failure\"} 1",
           "invariantd_config_last_reload_successful 0",
           "invariantd_http_requests_total{code=\"200\"} 1",
           "invariantd_http_requests_total{code=\"429\"} 1",
           "invariantd_http_requests_total{code=\"other\"} 1",
           "invariantd_protocol_state{key=\"node-1\",name=\"term\"} 42",
           "invariantd_protocol_state_series_dropped_total 0",
           "invariantd_evidence_wal_checkpoints_total{result=\"complete\"} 6",
           "invariantd_evidence_wal_checkpoints_total{result=\"partial\"} 2",
           "invariantd_evidence_wal_checkpoints_total{result=\"failed\"} 1",
           "# TYPE invariantd_rule_eval_duration_seconds histogram",
       }) {
    EXPECT_THAT(text, HasSubstr(std::string(want)));
  }
}

TEST(MetricsTest, SetTotalCountersGrowByDifference) {
  Metrics m("v");
  m.RuleOverflow("r", "rejected", 5);
  m.RuleOverflow("r", "rejected", 5);
  m.RuleOverflow("r", "rejected", 8);
  EXPECT_THAT(m.Exposition(),
              HasSubstr("invariantd_rule_overflow_total{policy=\"rejected\","
                        "rule=\"r\"} 8"));
  // The caller's count restarted (reload): the counter still only grows.
  m.RuleOverflow("r", "rejected", 2);
  EXPECT_THAT(m.Exposition(),
              HasSubstr("invariantd_rule_overflow_total{policy=\"rejected\","
                        "rule=\"r\"} 10"));
}

TEST(MetricsTest, ProtocolStateSeriesAreCapped) {
  Metrics m("v", /*max_protocol_series=*/10);
  for (int i = 0; i < 1000; ++i) {
    m.ProtocolState("term", absl::StrCat("key-", i), i);
  }
  // Existing series keep updating at the cap.
  m.ProtocolState("term", "key-3", 99);
  EXPECT_EQ(m.protocol_series(), 10u);
  std::string text = m.Exposition();
  size_t series = 0;
  for (size_t pos = 0; (pos = text.find("\ninvariantd_protocol_state{", pos)) !=
                       std::string::npos;
       ++pos) {
    ++series;
  }
  EXPECT_EQ(series, 10u);
  EXPECT_THAT(text, HasSubstr("invariantd_protocol_state_series_dropped_total "
                              "990"));
  EXPECT_THAT(text,
              HasSubstr("invariantd_protocol_state{key=\"key-3\",name=\"term\"}"
                        " 99"));
  EXPECT_THAT(text, Not(HasSubstr("key-10\"")));
}

TEST(MetricsTest, LabelValuesAreSanitizedAndCapped) {
  Metrics m("v");
  m.RuleKeys("evil\nrule\x1b[31m\xe2\x80\xae", 1);
  m.ProtocolState("n", std::string(500, 'k'), 1);
  std::string text = m.Exposition();
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_EQ(text.find("\xe2\x80\xae"), std::string::npos);
  EXPECT_THAT(text, Not(HasSubstr("evil\nrule")));
  EXPECT_THAT(text, HasSubstr("evil\\\\nrule"));
  EXPECT_THAT(text, Not(HasSubstr(std::string(100, 'k'))));
  for (size_t pos = 0, next; pos < text.size(); pos = next + 1) {
    next = text.find('\n', pos);
    if (next == std::string::npos) next = text.size();
    EXPECT_LE(next - pos, 1024u);
  }
}

TEST(MetricsTest, ConcurrentUpdates) {
  Metrics m("v", 50);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 1000; ++i) {
        m.SourceEvents("file", "audit", 1);
        m.RuleOverflow("r", "evicted", static_cast<uint64_t>(i));
        m.ProtocolState("term", absl::StrCat("k", t, "-", i % 20), i);
        m.HttpRequest(200);
        if (i % 100 == 0) (void)m.Exposition();
      }
    });
  }
  for (auto& th : threads) th.join();
  std::string text = m.Exposition();
  EXPECT_THAT(
      text,
      HasSubstr(
          "invariantd_source_events_total{kind=\"file\",source=\"audit\"} "
          "8000"));
  EXPECT_THAT(text, HasSubstr("invariantd_http_requests_total{code=\"200\"} "
                              "8000"));
  EXPECT_EQ(m.protocol_series(), 50u);
  // 160 distinct keys were offered; which 50 got in depends on scheduling.
  EXPECT_THAT(text,
              HasSubstr("invariantd_protocol_state_series_dropped_total "));
  EXPECT_THAT(
      text,
      Not(HasSubstr("invariantd_protocol_state_series_dropped_total 0\n")));
}

// The exposition passes the real `promtool check metrics` (format and lint:
// counter suffixes, base units, help text, label names).
TEST(MetricsTest, PromtoolAcceptsExposition) {
  const char* promtool = "/usr/bin/promtool";
  if (access(promtool, X_OK) != 0) GTEST_SKIP() << "promtool not installed";
  Metrics m("0.1.0");
  FillAll(&m);
  m.ProtocolState("commit", "node-\"2\"\n", 7);
  std::string text = m.Exposition();

  char dir_template[] = "/tmp/invariantd-metrics-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string path = absl::StrCat(dir_template, "/metrics.txt");
  {
    std::ofstream out(path, std::ios::binary);
    out << text;
  }
  std::string cmd = absl::StrCat(promtool, " check metrics < ", path, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) output.append(buf, n);
  int status = pclose(p);
  std::remove(path.c_str());
  rmdir(dir_template);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n---\n" << text;
  EXPECT_EQ(output, "") << text;
}

}  // namespace
}  // namespace invariantd
