#include "sidecar/core/auth.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace invariantd {
namespace {

TEST(TokenAuthTest, EachScopeAcceptsOnlyItsTokens) {
  TokenAuth a;
  a.Add(AuthScope::kIngest, "in-1");
  a.Add(AuthScope::kIngest, "in-2");  // rotation: both valid
  a.Add(AuthScope::kQuery, "q-1");
  a.Add(AuthScope::kQuery, "both");
  a.Add(AuthScope::kIngest, "both");
  auto check = [&](AuthScope s, const std::string& header) {
    const AuthDecision d = a.Check(s, header);
    return std::to_string(d.status) + ":" + std::string(d.reason);
  };
  EXPECT_EQ(check(AuthScope::kIngest, "Bearer in-1"), "200:");
  EXPECT_EQ(check(AuthScope::kIngest, "bearer\tin-2 "), "200:");
  EXPECT_EQ(check(AuthScope::kIngest, "Bearer both"), "200:");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer both"), "200:");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer q-1"), "200:");
  EXPECT_EQ(check(AuthScope::kIngest, "Bearer q-1"), "403:wrong_scope");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer in-1"), "403:wrong_scope");
  EXPECT_EQ(check(AuthScope::kQuery, ""), "401:missing");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer q-"), "401:invalid");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer q-1x"), "401:invalid");
  EXPECT_EQ(check(AuthScope::kQuery, "Basic cS0x"), "401:invalid");
  EXPECT_EQ(check(AuthScope::kQuery, "Bearer "), "401:invalid");
}

TEST(TokenAuthTest, AScopeWithoutTokensIsOpen) {
  TokenAuth a;
  a.Add(AuthScope::kIngest, "in");
  a.Add(AuthScope::kIngest, "");  // ignored
  EXPECT_TRUE(a.Required(AuthScope::kIngest));
  EXPECT_FALSE(a.Required(AuthScope::kQuery));
  EXPECT_TRUE(a.Check(AuthScope::kQuery, "").allowed());
  EXPECT_FALSE(a.Check(AuthScope::kIngest, "").allowed());
}

TEST(TokenAuthTest, TokenFilesHoldOnePerLine) {
  EXPECT_EQ(ParseTokenFile("# comment\n\n  tok-a  \r\ntok-b\n#tok-c\n"),
            (std::vector<std::string>{"tok-a", "tok-b"}));
  EXPECT_TRUE(ParseTokenFile("\n# only a comment\n").empty());
}

TEST(TokenAuthTest, ConstantTimeEqualsCompares) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secreT", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secretsecret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("", "secret"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace invariantd
