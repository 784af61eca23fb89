#include "sidecar/config.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/invariantd-config-XXXXXX.yaml";
  const int fd = mkstemps(path, 5);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, text.data(), text.size()),
            static_cast<ssize_t>(text.size()));
  close(fd);
  return path;
}

TEST(ConfigTest, ReadsEverySectionOverDefaults) {
  const std::string path = WriteTemp(R"yaml(
rules: [rules/packs/etcd-raft.yaml]
listen: 0.0.0.0:9000
data_dir: /var/lib/invariantd
workers: 4
stdout: false
scheduler_slice_us: 250
input: {format: logfmt, max_line_bytes: 4096, dedupe_window: 10,
        max_depth: 8, max_fields: 100, max_string_bytes: 1000}
state: {max_bytes: 0}
rule_limits: {max_file_bytes: 65536, max_expression_bytes: 512,
              max_expression_depth: 16}
tail: {paths: ["/var/log/app/*.log"], poll_interval_ms: 50}
http: {ingest: false, auth_token_file: /etc/token, max_events: 5}
kafka: {brokers: "k:9092", topics: [raft], group: g, config: {client.id: x}}
)yaml");
  RunConfig c;
  ASSERT_TRUE(LoadRunConfig(path, &c).ok());
  unlink(path.c_str());
  EXPECT_EQ(c.rules.size(), 1u);
  EXPECT_EQ(c.listen, "0.0.0.0:9000");
  EXPECT_EQ(c.workers, 4);
  EXPECT_FALSE(c.stdout_violations);
  EXPECT_EQ(c.scheduler_slice_us, 250);
  EXPECT_EQ(RunConfig().scheduler_slice_us, 100);  // the default
  EXPECT_EQ(c.input_format, "logfmt");
  EXPECT_EQ(c.max_line_bytes, 4096u);
  EXPECT_EQ(c.max_depth, 8);
  EXPECT_EQ(c.max_fields, 100u);
  EXPECT_EQ(c.max_string_bytes, 1000u);
  EXPECT_EQ(c.state_max_bytes, 0u);
  EXPECT_EQ(c.rule_limits.max_file_bytes, 65536u);
  EXPECT_EQ(c.rule_limits.expression.max_bytes, 512u);
  EXPECT_EQ(c.rule_limits.expression.max_depth, 16);
  EXPECT_EQ(RunConfig().state_max_bytes, uint64_t{1} << 30);  // the default
  EXPECT_EQ(c.tail[0], "/var/log/app/*.log");
  EXPECT_EQ(c.tail_poll_interval_ms, 50);
  EXPECT_FALSE(c.http_ingest);
  EXPECT_EQ(c.http_max_events, 5u);
  EXPECT_EQ(c.kafka_topics[0], "raft");
  EXPECT_EQ(c.kafka_config.at("client.id"), "x");
  EXPECT_EQ(c.checkpoint_interval_ms, 1000);  // default kept
  EXPECT_TRUE(ValidateRunConfig(c).ok());
}

TEST(ConfigTest, AllProblemsAreReportedWithLocations) {
  const std::string path = WriteTemp(
      "rules: [r.yaml]\nworkerz: 2\nworkers: 999\ntail: {pathz: [a]}\n"
      "scheduler_slice_us: 200000\n");
  RunConfig c;
  const absl::Status st = LoadRunConfig(path, &c);
  unlink(path.c_str());
  ASSERT_FALSE(st.ok());
  const std::string msg(st.message());
  EXPECT_THAT(msg, HasSubstr(path + ":2:1: unknown key 'workerz'"));
  EXPECT_THAT(msg, HasSubstr(path + ":3:10: expected an integer from 1 to 64"));
  EXPECT_THAT(msg, HasSubstr(path + ":4:8: unknown key 'pathz' in tail"));
  EXPECT_THAT(msg,
              HasSubstr(path + ":5:21: expected an integer from 0 to 100000"));
}

TEST(ConfigTest, RedactRulesAreCheckedWhereTheyAreWritten) {
  const std::string ok = WriteTemp(R"yaml(
redact:
  - {name: bearer, pattern: '(?i)bearer \S+'}
  - {name: email, pattern: '[a-z]+@[a-z.]+', replacement: '<email>'}
)yaml");
  RunConfig c;
  ASSERT_TRUE(LoadRunConfig(ok, &c).ok());
  unlink(ok.c_str());
  ASSERT_EQ(c.redact.size(), 2u);
  EXPECT_EQ(c.redact[1].replacement, "<email>");
  const std::string bad = WriteTemp(
      "redact:\n  - {name: a, pattern: '('}\n  - {name: a, pattern: x}\n"
      "  - {name: b}\n  - {name: c, pattern: x, colour: red}\n");
  const absl::Status st = LoadRunConfig(bad, &c);
  unlink(bad.c_str());
  const std::string msg(st.message());
  EXPECT_THAT(msg, HasSubstr(bad + ":2:5: redact rule 'a': invalid RE2"));
  EXPECT_THAT(msg, HasSubstr(bad + ":4:5: a redact rule needs a name"));
  EXPECT_THAT(msg, HasSubstr(bad + ":5:27: unknown key 'colour'"));
}

TEST(ConfigTest, CrossFieldValidation) {
  RunConfig c;
  EXPECT_THAT(std::string(ValidateRunConfig(c).message()),
              HasSubstr("no rules"));
  c.rules = {"r.yaml"};
  c.listen = "nonsense";
  c.kafka_topics = {"t"};
  const std::string msg(ValidateRunConfig(c).message());
  EXPECT_THAT(msg, HasSubstr("not HOST:PORT"));
  EXPECT_THAT(msg, HasSubstr("without kafka brokers"));
  c.listen = "[::1]:9464";
  c.kafka_topics.clear();
  EXPECT_TRUE(ValidateRunConfig(c).ok());
}

}  // namespace
}  // namespace invariantd
