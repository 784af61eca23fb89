#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rules/rule_set.h"

namespace invariantd {
namespace {

using ::testing::AllOf;
using ::testing::Field;
using ::testing::HasSubstr;

auto DiagAt(int line, int column, const std::string& msg) {
  return AllOf(Field(&Diagnostic::line, line),
               Field(&Diagnostic::column, column),
               Field(&Diagnostic::message, HasSubstr(msg)));
}

TEST(LoaderTest, LoadsAValidRuleWithDefaults) {
  LoadResult r = LoadRuleText(R"yaml(
rules:
  - name: term
    kind: monotonic
    key: [event.nid, {cluster: labels.cluster}]
    field: event.state.term
)yaml",
                              "t.yaml");
  ASSERT_TRUE(r.ok()) << FormatDiagnostic(r.diagnostics.front());
  ASSERT_EQ(r.rules->rules().size(), 1u);
  const Rule& rule = r.rules->rules()[0];
  EXPECT_EQ(rule.kind, "monotonic");
  EXPECT_EQ(rule.severity, "critical");
  EXPECT_EQ(rule.max_keys, kDefaultMaxKeys);
  ASSERT_EQ(rule.key.size(), 2u);
  EXPECT_EQ(rule.key[0].name, "event.nid");
  EXPECT_EQ(rule.key[1].name, "cluster");
  EXPECT_EQ(rule.line, 3);
  EXPECT_GE(r.rules->fields().size(), 3);
}

TEST(LoaderTest, ExpectedKeysIsReadAndBoundedByMaxKeys) {
  LoadResult r = LoadRuleText(R"yaml(
rules:
  - name: term
    kind: monotonic
    key: [event.nid]
    field: event.state.term
    expected_keys: 250000
)yaml",
                              "t.yaml");
  ASSERT_TRUE(r.ok()) << FormatDiagnostic(r.diagnostics.front());
  EXPECT_EQ(r.rules->rules()[0].expected_keys, 250000u);
  r = LoadRuleText(R"yaml(
rules:
  - name: term
    kind: monotonic
    key: [event.nid]
    field: event.state.term
    max_keys: 1000
    expected_keys: 5000
)yaml",
                   "t.yaml");
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].line, 8);
  EXPECT_EQ(r.diagnostics[0].column, 20);
  EXPECT_NE(r.diagnostics[0].message.find(
                "expected_keys (5000) is above max_keys (1000)"),
            std::string::npos)
      << r.diagnostics[0].message;
}

// YAML allows printable characters only; yaml-cpp 0.7 looped without end
// on ",\x01" (found by fuzz_rules). Such bytes, C1 controls and invalid
// UTF-8 are refused at their position before the YAML parser runs.
TEST(LoaderTest, NonPrintableCharactersAreRefusedWhereTheyAre) {
  struct Case {
    std::string text;
    int line, column;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {std::string(",\x01\0\0", 4), 1, 2, "U+0001 is not allowed"},
           {"rules:\n  - name: \"a\xc2\x9b\"\n", 2, 13, "U+009B"},
           {"rules: []\n# \xff\xfe\n", 2, 3, "byte 0xff is not valid UTF-8"},
           {"rules:\x7f\n", 1, 7, "U+007F"}}) {
    const LoadResult r = LoadRuleText(c.text, "bad.yaml");
    ASSERT_EQ(r.diagnostics.size(), 1u) << c.says;
    EXPECT_EQ(r.diagnostics[0].line, c.line) << c.says;
    EXPECT_EQ(r.diagnostics[0].column, c.column) << c.says;
    EXPECT_NE(r.diagnostics[0].message.find(c.says), std::string::npos)
        << r.diagnostics[0].message;
  }
  // Tabs, CR LF, NEL and non-ASCII text are fine.
  const LoadResult ok = LoadRuleText(
      "rules:\r\n  - {name: ete, kind: always,\tkey: [k], "
      "always: \"k != '\xc3\xa9t\xc3\xa9'\"}\r\n",
      "ok.yaml");
  EXPECT_TRUE(ok.ok()) << (ok.diagnostics.empty()
                               ? ""
                               : FormatDiagnostic(ok.diagnostics[0]));
}

// Streams on which yaml-cpp 0.7's LoadAll never returns (it adds empty
// documents until memory runs out; found by fuzz_rules) get a diagnostic.
// A regression here hangs the test until ctest's timeout fails it.
TEST(LoaderTest, StreamsThatHungTheYamlParserAreDiagnosed) {
  for (const std::string text :
       {",", " ,", "\"x\",", "{a: 1},", "rules: []\n---\n,", "---\n,\n"}) {
    const LoadResult r = LoadRuleText(text, "bad.yaml");
    EXPECT_FALSE(r.ok()) << text;
    EXPECT_FALSE(r.diagnostics.empty()) << text;
  }
  const LoadResult two = LoadRuleText("rules: []\n...\nrules: []\n", "t.yaml");
  ASSERT_EQ(two.diagnostics.size(), 1u);
  EXPECT_EQ(two.diagnostics[0].line, 3);
  EXPECT_NE(two.diagnostics[0].message.find("one YAML document"),
            std::string::npos);
}

TEST(LoaderTest, UnknownFieldIsAnErrorWithASuggestion) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: term
    kind: monotonic
    feild: event.state.term
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::Contains(DiagAt(4, 5, "unknown field 'feild'")));
  EXPECT_THAT(r.diagnostics[0].message, HasSubstr("did you mean 'field'"));
  EXPECT_EQ(r.diagnostics[0].rule, "term");
  EXPECT_EQ(r.diagnostics[0].file, "t.yaml");
}

TEST(LoaderTest, AllErrorsOfAllRulesInOnePass) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: a
    kind: monotonc
  - name: b
    kind: agreement
    field: x
    severity: fatal
  - name: a
    kind: always
    always: x <
  - kind: sequence
    field: y
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::IsSupersetOf(
                  {DiagAt(3, 11, "unknown kind 'monotonc'"),
                   DiagAt(7, 15, "unknown severity 'fatal'"),
                   DiagAt(8, 11, "duplicate rule name 'a'"),
                   DiagAt(11, 5, "missing required field 'name'")}));
  // The expression error points inside the expression (line 10).
  bool expr_error = false;
  for (const Diagnostic& d : r.diagnostics) {
    if (d.line == 10 && d.column > 13) expr_error = true;
  }
  EXPECT_TRUE(expr_error);
}

TEST(LoaderTest, ExpressionErrorPointsInsideTheExpression) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: a
    kind: always
    always: "x.startswith('a')"
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  const Diagnostic& d = r.diagnostics[0];
  EXPECT_EQ(d.line, 4);
  // `startswith` starts at column 16: 13 for the opening quote, +3 for "x.".
  EXPECT_EQ(d.column, 16) << FormatDiagnostic(d);
  EXPECT_THAT(FormatDiagnostic(d), HasSubstr("t.yaml:4:16: error:"));
  EXPECT_THAT(FormatDiagnostic(d), HasSubstr("always: \"x.startswith('a')\""));
}

TEST(LoaderTest, ExpressionErrorInABlockScalarPointsAtTheRightLine) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: a
    kind: always
    always: |
      x > 1 &&
      y ! 2
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.diagnostics[0].line, 6) << FormatDiagnostic(r.diagnostics[0]);
}

TEST(LoaderTest, NonBooleanConditionIsRejected) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - {name: a, kind: always, always: "1 + 2"}
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics[0].message, HasSubstr("not a boolean"));
}

TEST(LoaderTest, InvalidYamlIsLocated) {
  LoadResult r = LoadRuleText("rules:\n  - name: [unclosed\n", "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics[0].message, HasSubstr("invalid YAML"));
  EXPECT_GT(r.diagnostics[0].line, 0);
}

TEST(LoaderTest, TransitionGraphIsChecked) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: t
    kind: transition
    field: s
    states: [A, B]
    transitions: {A: [C]}
    terminal: [D]
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::IsSupersetOf(
                  {Field(&Diagnostic::message,
                         HasSubstr("state 'C' is not listed in 'states'")),
                   Field(&Diagnostic::message,
                         HasSubstr("state 'D' does not appear"))}));
}

TEST(LoaderTest, LabelsAreValidatedForAlerting) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: t
    kind: monotonic
    field: x
    labels: {severity: high, "bad-name": x, __meta: y, team: storage}
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.diagnostics.size(), 3u);
}

TEST(LoaderTest, InputSectionAndEventId) {
  LoadResult r = LoadRuleText(R"yaml(input:
  format: logfmt
  id: request_id
rules:
  - {name: u, kind: unique, key: [tenant], field: idempotency_key}
)yaml",
                              "t.yaml");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r.rules->input().has_value());
  EXPECT_EQ(r.rules->input()->format, "logfmt");
  EXPECT_NE(r.rules->event_id(), nullptr);
}

TEST(LoaderTest, RulesSharingAKeyShareAKeyGroup) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - {name: a, kind: monotonic, key: [n], field: x}
  - {name: b, kind: monotonic, key: [n], field: y}
  - {name: c, kind: monotonic, key: [m], field: y}
)yaml",
                              "t.yaml");
  ASSERT_TRUE(r.ok());
  const auto& rules = r.rules->rules();
  EXPECT_EQ(rules[0].key_group, rules[1].key_group);
  EXPECT_NE(rules[0].key_group, rules[2].key_group);
  EXPECT_EQ(r.rules->key_groups(), 2);
}

TEST(LoaderTest, MissingFileAndEmptyDirectoryAreReported) {
  LoadResult r = LoadRuleFiles({"/nonexistent/rules.yaml"});
  ASSERT_FALSE(r.ok());
  // The reason, named by file, and no second "no rules found" without one.
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].file, "/nonexistent/rules.yaml");
  EXPECT_THAT(r.diagnostics[0].message, HasSubstr("no such file"));
}

TEST(LoaderTest, ShippedPacksValidate) {
  LoadResult r =
      LoadRuleFiles({std::string(INVARIANTD_SOURCE_DIR) + "/rules/packs"});
  for (const Diagnostic& d : r.diagnostics)
    ADD_FAILURE() << FormatDiagnostic(d);
  ASSERT_TRUE(r.ok());
  EXPECT_GE(r.rules->rules().size(), 12u);
}

}  // namespace
}  // namespace invariantd

namespace invariantd {
namespace {

TEST(LoaderRobustnessTest, NonStringKeysAreDiagnosticsNotCrashes) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: a
    kind: monotonic
    field: x
    [weird]: 1
    labels: {[k]: v}
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::Contains(DiagAt(5, 5, "field name must be")));
}

TEST(LoaderRobustnessTest, SecondDocumentIsAnErrorNotIgnored) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - {name: a, kind: monotonic, field: x}
---
rules:
  - {name: b, kind: monotonic, field: y}
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics[0].message, HasSubstr("one YAML document"));
}

TEST(LoaderRobustnessTest, DuplicateFieldsAreErrors) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: a
    kind: always
    always: x > 1
    always: x > 2
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::Contains(DiagAt(5, 5, "duplicate field 'always'")));
}

TEST(LoaderRobustnessTest, ErrorsInFoldedAndQuotedScalarsAreLocated) {
  // Folded block: the bad token is on the second content line.
  LoadResult folded = LoadRuleText(R"yaml(rules:
  - name: a
    kind: always
    always: >-
      x > 1 &&
        y.foo(1)
)yaml",
                                   "t.yaml");
  ASSERT_FALSE(folded.ok());
  EXPECT_EQ(folded.diagnostics[0].line, 6)
      << FormatDiagnostic(folded.diagnostics[0]);
  EXPECT_EQ(folded.diagnostics[0].column, 11)
      << FormatDiagnostic(folded.diagnostics[0]);
  // Escapes before the error shift the source column, not the value's.
  LoadResult quoted = LoadRuleText(
      "rules:\n  - {name: a, kind: always, always: \"s == \\\"q\\\" && "
      "y.foo(1)\"}\n",
      "t.yaml");
  ASSERT_FALSE(quoted.ok());
  const Diagnostic& d = quoted.diagnostics[0];
  EXPECT_EQ(d.line, 2);
  EXPECT_EQ(d.snippet.substr(d.column - 1, 3), "foo") << FormatDiagnostic(d);
}

TEST(LoaderRobustnessTest, TransitionWithoutGraphIsLocatedAtTheRule) {
  LoadResult r = LoadRuleText(R"yaml(rules:
  - name: t
    kind: transition
    field: s
)yaml",
                              "t.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics,
              ::testing::Contains(DiagAt(2, 5, "needs 'transitions'")));
}

// Configurable limits (config `rule_limits`): over them, a diagnostic at the
// place; at them, the rule loads.
TEST(LoaderLimitsTest, FileSizeExpressionLengthAndDepth) {
  const std::string text = R"yaml(rules:
  - name: a
    kind: always
    key: [k]
    always: '((x)) > 1'
)yaml";
  LoadLimits limits;
  EXPECT_TRUE(LoadRuleText(text, "r.yaml", limits).ok());
  limits.max_file_bytes = text.size() - 1;
  LoadResult r = LoadRuleText(text, "r.yaml", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(
      r.diagnostics[0].message,
      HasSubstr(absl::StrCat("rule file is ", text.size(),
                             " bytes; the limit is ", text.size() - 1)));
  limits = LoadLimits();
  limits.expression.max_bytes = 8;
  r = LoadRuleText(text, "r.yaml", limits);
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 1u);
  EXPECT_EQ(r.diagnostics[0].line, 5) << FormatDiagnostic(r.diagnostics[0]);
  EXPECT_THAT(r.diagnostics[0].message,
              HasSubstr("expression is 9 bytes long; the limit is 8 bytes"));
  limits = LoadLimits();
  limits.expression.max_depth = 2;
  r = LoadRuleText(text, "r.yaml", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.diagnostics[0].message,
              HasSubstr("nests more than 2 levels deep"));
  limits.expression.max_depth = 3;
  EXPECT_TRUE(LoadRuleText(text, "r.yaml", limits).ok());
}

}  // namespace
}  // namespace invariantd
