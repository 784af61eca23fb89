#include "sidecar/redactor.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Redactor> Make(const std::vector<RedactRule>& rules) {
  auto r = Redactor::Create(rules);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

TEST(RedactorTest, ReplacesEveryMatchAndCountsPerRule) {
  auto r = Make({{"bearer", R"((?i)bearer [A-Za-z0-9._-]+)", ""},
                 {"email", R"([a-z0-9.]+@([a-z0-9.]+))", "***@\\1"}});
  ASSERT_TRUE(r);
  std::string text =
      "Authorization: Bearer abc.def-1 and bearer XYZ from ann@example.org";
  EXPECT_EQ(r->Apply(&text), 3u);
  EXPECT_EQ(text,
            "Authorization: [REDACTED:bearer] and [REDACTED:bearer] from "
            "***@example.org");
  std::string clean = "nothing to see";
  EXPECT_EQ(r->Apply(&clean), 0u);
  EXPECT_EQ(clean, "nothing to see");
  EXPECT_THAT(r->Counts(), ::testing::ElementsAre(
                               std::pair<std::string, uint64_t>("bearer", 2),
                               std::pair<std::string, uint64_t>("email", 1)));
}

TEST(RedactorTest, RedactsEveryTextOfAViolationAndKeepsItsId) {
  auto r = Make({{"secret", R"(s3cr3t\w*)", ""}});
  ASSERT_TRUE(r);
  Violation v;
  v.id = "0123456789abcdef0123456789abcdef";
  v.witness = R"({"user":"s3cr3t-user","term":1})";
  v.message = "term of s3cr3tuser regressed";
  v.key = {{"user", OwnedValue(Value::String("s3cr3tuser"))},
           {"n", OwnedValue(Value::Int(7))}};
  v.observed = OwnedValue(Value::Json(R"({"a":"s3cr3t1"})"));
  v.previous = OwnedValue(Value::String("plain"));
  EXPECT_EQ(r->Apply(&v), 4u);
  EXPECT_EQ(v.witness, R"({"user":"[REDACTED:secret]-user","term":1})");
  EXPECT_EQ(v.message, "term of [REDACTED:secret] regressed");
  EXPECT_EQ(v.key[0].second.view().str(), "[REDACTED:secret]");
  EXPECT_EQ(v.key[1].second.view().int_value(), 7);
  // A changed raw-JSON value becomes a string: no pattern can break JSON.
  EXPECT_TRUE(v.observed.view().is_string());
  EXPECT_EQ(v.observed.view().str(), R"({"a":"[REDACTED:secret]"})");
  EXPECT_EQ(v.previous.view().str(), "plain");
  EXPECT_EQ(v.id, "0123456789abcdef0123456789abcdef");
}

TEST(RedactorTest, RefusesRulesThatCannotWork) {
  EXPECT_THAT(Redactor::Create({{"x", "(", ""}}).status().message(),
              HasSubstr("redact rule 'x': invalid RE2 pattern"));
  EXPECT_THAT(Redactor::Create({{"x", "a*", ""}}).status().message(),
              HasSubstr("matches the empty text"));
  EXPECT_THAT(Redactor::Create({{"Bad Name", "a", ""}}).status().message(),
              HasSubstr("must be 1-64 of [a-z0-9_.-]"));
  EXPECT_THAT(
      Redactor::Create({{"x", "a", ""}, {"x", "b", ""}}).status().message(),
      HasSubstr("defined twice"));
  EXPECT_THAT(Redactor::Create({{"x", "a", "\\2"}}).status().message(),
              HasSubstr("invalid replacement"));
}

}  // namespace
}  // namespace invariantd
