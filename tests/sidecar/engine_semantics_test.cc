// Engine semantics that the property tests do not reach: counters for
// skipped events, stateless rules with absent key fields, window expiry
// under reject_new, extreme numbers, long values, and `invariantd test`
// matching.
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rules/engine.h"
#include "rules/memory_budget.h"
#include "rules/rule_set.h"
#include "sidecar/core/strings.h"
#include "sidecar/replayer.h"
#include "sidecar/rule_test.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;

struct Outcome {
  std::vector<Violation> violations;
  std::vector<RuleCounters> counters;
  std::vector<TableStats> tables;
};

Outcome RunRules(const std::string& rules, const std::string& events) {
  LoadResult loaded = LoadRuleText(rules, "t.yaml");
  Outcome o;
  for (const auto& d : loaded.diagnostics) ADD_FAILURE() << FormatDiagnostic(d);
  if (!loaded.ok()) return o;
  auto r = Replayer::Create(loaded.rules, ReplayerOptions{});
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(
      (*r)->ProcessText(events, "t",
                        [&](const Violation& v) { o.violations.push_back(v); })
          .ok());
  for (const RuleStats& s : (*r)->engine().Stats()) {
    o.counters.push_back(s.counters);
    o.tables.push_back(s.table);
  }
  return o;
}

TEST(EngineSemanticsTest, TypeErrorsAndMissingFieldsAreCountedApart) {
  const Outcome o = RunRules(
      "rules:\n  - {name: m, kind: monotonic, key: [k], field: v + 1}\n",
      "{\"k\":1,\"v\":\"x\"}\n{\"k\":1}\n{\"k\":1,\"v\":9223372036854775807}\n"
      "{\"k\":1,\"v\":2}\n");
  ASSERT_EQ(o.counters.size(), 1u);
  EXPECT_EQ(o.counters[0].skipped_type, 2u);  // string, and int overflow
  EXPECT_EQ(o.counters[0].skipped_missing, 1u);
  EXPECT_EQ(o.counters[0].evaluated, 1u);
}

// previous_line is the line that set the state a violation contradicts:
// for monotonic the first line that reached the value, for transition the
// line that entered the state (repeats and self-transitions keep it).
TEST(EngineSemanticsTest, PreviousLineIsTheLineThatSetTheState) {
  const Outcome o = RunRules(
      "rules:\n  - {name: m, kind: monotonic, key: [k], field: v}\n"
      "  - name: t\n    kind: transition\n    key: [k]\n    field: s\n"
      "    transitions: {A: [B], B: [A]}\n",
      "{\"k\":1,\"v\":5,\"s\":\"A\"}\n{\"k\":1,\"v\":7,\"s\":\"B\"}\n"
      "{\"k\":1,\"v\":7,\"s\":\"B\"}\n{\"k\":1,\"v\":7,\"s\":\"B\"}\n"
      "{\"k\":1,\"v\":6,\"s\":\"C\"}\n");
  ASSERT_EQ(o.violations.size(), 2u);
  for (const Violation& v : o.violations) {
    EXPECT_EQ(v.line, 5u);
    EXPECT_EQ(v.previous_line, 2u) << v.rule;
  }
}

TEST(EngineSemanticsTest, AlwaysJudgesEventsWithAbsentKeyFields) {
  const Outcome o = RunRules(
      "rules:\n  - {name: a, kind: always, key: [node], always: "
      "\"commit <= last\"}\n",
      "{\"commit\":5,\"last\":4}\n{\"node\":\"n\",\"commit\":5,\"last\":4}"
      "\n");
  ASSERT_EQ(o.violations.size(), 2u);
  EXPECT_TRUE(o.violations[0].key[0].second.view().is_missing());
  EXPECT_EQ(o.violations[1].key[0].second.ToText(), "n");
  EXPECT_NE(o.violations[0].id, o.violations[1].id);
}

TEST(EngineSemanticsTest, UniqueWindowReclaimsExpiredEntriesUnderRejectNew) {
  std::string events;
  for (int i = 0; i < 1000; ++i) absl::StrAppend(&events, "{\"v\":", i, "}\n");
  absl::StrAppend(&events, "{\"v\":999,\"again\":true}\n");
  const Outcome o = RunRules(
      "rules:\n  - {name: u, kind: unique, field: v, window_count: 10, "
      "max_keys: 100, on_overflow: reject_new}\n",
      events);
  ASSERT_EQ(o.counters.size(), 1u);
  EXPECT_EQ(o.counters[0].rejected, 0u);
  EXPECT_LE(o.tables[0].keys, 100u);
  ASSERT_EQ(o.violations.size(), 1u);  // the recent duplicate is still caught
  EXPECT_EQ(o.violations[0].line, 1001u);
}

TEST(EngineSemanticsTest, SequenceRejectsNumbersOutsideInt64) {
  const Outcome o =
      RunRules("rules:\n  - {name: s, kind: sequence, key: [k], field: seq}\n",
               "{\"k\":1,\"seq\":1}\n{\"k\":1,\"seq\":18446744073709551615}\n"
               "{\"k\":1,\"seq\":1e19}\n{\"k\":1,\"seq\":2.0}\n");
  ASSERT_EQ(o.counters.size(), 1u);
  EXPECT_EQ(o.counters[0].skipped_type, 2u);
  EXPECT_TRUE(o.violations.empty());  // 2.0 follows 1
}

TEST(EngineSemanticsTest, AgreementKeepsLongValuesBounded) {
  const std::string big(100000, 'a');
  const Outcome o = RunRules(
      "rules:\n  - {name: g, kind: agreement, key: [i], field: data}\n",
      absl::StrCat("{\"i\":1,\"data\":\"", big, "\"}\n{\"i\":1,\"data\":\"",
                   big, "b\"}\n"));
  ASSERT_EQ(o.violations.size(), 1u);
  EXPECT_LT(o.tables[0].bytes, 4096u);
  EXPECT_THAT(o.violations[0].previous.ToText(), HasSubstr("...[+"));
  EXPECT_LT(o.violations[0].message.size(), 1000u);
}

TEST(RuleTestMatchingTest, SpecificExpectationsChooseFirst) {
  char path[] = "/tmp/invariantd-match-XXXXXX.yaml";
  const int fd = mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  const std::string t =
      "rules:\n  - {name: r, kind: monotonic, field: v}\n"
      "tests:\n  - name: vague then precise\n    events: |\n"
      "      {\"v\": 3}\n      {\"v\": 2}\n      {\"v\": 1}\n"
      "    expect:\n      - {rule: r}\n      - {rule: r, line: 2}\n"
      "  - name: events given as maps are refused, not ignored\n"
      "    events: [{\"v\": 1}]\n";
  ASSERT_EQ(write(fd, t.data(), t.size()), static_cast<ssize_t>(t.size()));
  close(fd);
  std::ostringstream out;
  const RuleTestResult r = RunRuleTestFiles({path}, out);
  unlink(path);
  EXPECT_EQ(r.passed, 1) << out.str();
  EXPECT_EQ(r.failed, 1) << out.str();
  EXPECT_THAT(out.str(), HasSubstr("must be a string holding one record"));
}

}  // namespace
}  // namespace invariantd

namespace invariantd {
namespace {

// expected_keys sizes each shard's table when the engine starts: the
// memory is there (and charged to the budget) before the first event.
TEST(EngineSemanticsTest, ExpectedKeysSizeTheStateUpFrontPerShard) {
  LoadResult loaded = LoadRuleText(
      "rules:\n"
      "  - {name: sized, kind: monotonic, key: [n], field: t,"
      " expected_keys: 40000}\n"
      "  - {name: grown, kind: monotonic, key: [n], field: t}\n",
      "t.yaml");
  ASSERT_TRUE(loaded.ok());
  auto budget = std::make_shared<MemoryBudget>(1 << 30);
  EngineOptions one;
  one.budget = budget;
  one.share_tables = false;  // two rules of one key: each its own table
  EngineOptions two = one;
  two.shards = 2;
  const Engine whole(loaded.rules, one);
  const Engine half(loaded.rules, two);
  const std::vector<RuleStats> w = whole.Stats();
  const std::vector<RuleStats> h = half.Stats();
  EXPECT_EQ(w[1].table.bytes, 0u);  // grows from empty
  EXPECT_GT(w[0].table.bytes, 40000u * 8 / 7 * 16);
  // A shard is sized for its share of the keys, with headroom for the
  // hash split's spread (4 standard deviations: 568 keys of 20000).
  EXPECT_GT(h[0].table.bytes, w[0].table.bytes / 2 + 20000);
  EXPECT_LT(h[0].table.bytes, w[0].table.bytes / 2 * 105 / 100);
  // An engine whose states stay empty reserves nothing.
  EngineOptions router = one;
  router.reserve_expected_keys = false;
  EXPECT_EQ(Engine(loaded.rules, router).Stats()[0].table.bytes, 0u);
  EXPECT_GE(budget->used(), w[0].table.bytes + h[0].table.bytes);
}

TEST(EngineGaugeTest, ExportedRulesPublishTheirFieldPerKey) {
  LoadResult loaded = LoadRuleText(
      "rules:\n"
      "  - {name: term, kind: monotonic, key: [n], field: t, export_gauge: "
      "true}\n"
      "  - {name: quiet, kind: monotonic, key: [n], field: t}\n",
      "t.yaml");
  ASSERT_TRUE(loaded.ok());
  std::vector<std::string> seen;
  EngineOptions o;
  o.on_gauge = [&](std::string_view rule, std::string_view key, double v) {
    seen.push_back(absl::StrCat(AV(rule), "/", AV(key), "=", v));
  };
  ReplayerOptions ro;
  ro.engine = o;
  auto r = Replayer::Create(loaded.rules, ro);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*r)->ProcessText("{\"n\":\"a\",\"t\":3}\n{\"n\":\"b\",\"t\":7}\n"
                                "{\"n\":\"a\"}\n",
                                "s", [](const Violation&) {})
                  .ok());
  EXPECT_THAT(seen, ::testing::ElementsAre("term/a=3", "term/b=7"));
  LoadResult bad = LoadRuleText(
      "rules:\n  - {name: g, kind: agreement, field: x, export_gauge: true}\n",
      "t.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.diagnostics[0].message, HasSubstr("export_gauge needs"));
}

}  // namespace
}  // namespace invariantd
