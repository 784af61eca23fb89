#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/decoder.h"
#include "tests/ingest/ingest_test_util.h"

namespace invariantd {
namespace {

using testing_util::DecoderHarness;
using testing_util::IsBool;
using testing_util::IsDouble;
using testing_util::IsInt;
using testing_util::IsInvalidArgumentWith;
using testing_util::IsMissing;
using testing_util::IsNull;
using testing_util::IsString;
using testing_util::RegexOptions;

std::unique_ptr<DecoderHarness> Regex(const std::string& pattern,
                                      const std::vector<std::string>& paths) {
  auto h = DecoderHarness::Make(RegexOptions(pattern), paths);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? std::move(*h) : nullptr;
}

TEST(RegexDecoderTest, NamedGroupsBecomeTypedFields) {
  auto h =
      Regex(R"re(node=(?P<node>\S+) term=(?P<term>\S+) ratio=(?P<ratio>\S+) )re"
            R"re(ok=(?P<ok>\S+) v=(?P<v>\S+) msg="(?P<msg>[^"]*)")re",
            {"node", "term", "ratio", "ok", "v", "msg"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"(ts=1 node=n1 term=12 ratio=0.5 ok=false v=null )"
                        R"(msg="12")")
                  .ok());
  EXPECT_THAT(h->Get("node"), IsString("n1"));
  EXPECT_THAT(h->Get("term"), IsInt(12));
  EXPECT_THAT(h->Get("ratio"), IsDouble(0.5));
  EXPECT_THAT(h->Get("ok"), IsBool(false));
  EXPECT_THAT(h->Get("v"), IsNull());
  // Captured text has no quoting: typed by spelling like the rest.
  EXPECT_THAT(h->Get("msg"), IsInt(12));
}

TEST(RegexDecoderTest, CapturesViewTheLine) {
  auto h = Regex(R"(id=(?P<id>\w+))", {"id"});
  ASSERT_TRUE(h);
  testing_util::PaddedLine line("x id=abc y");
  ASSERT_TRUE(h->DecodeInPlace(line.view()).ok());
  ASSERT_THAT(h->Get("id"), IsString("abc"));
  EXPECT_EQ(h->Get("id").str().data(), line.view().data() + 5);
}

TEST(RegexDecoderTest, NonParticipatingGroupIsMissingEmptyGroupIsEmpty) {
  auto h =
      Regex(R"(^(?:a=(?P<a>\d+)|b=(?P<b>\d+)) c=(?P<c>\d*)$)", {"a", "b", "c"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("b=2 c=").ok());
  EXPECT_THAT(h->Get("a"), IsMissing());
  EXPECT_THAT(h->Get("b"), IsInt(2));
  EXPECT_THAT(h->Get("c"), IsString(""));
}

TEST(RegexDecoderTest, UnanchoredSearchAndNoMatch) {
  auto h = Regex(R"(term=(?P<term>\d+))", {"term"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("prefix term=5 suffix").ok());
  EXPECT_THAT(h->Get("term"), IsInt(5));
  EXPECT_THAT(h->Decode("no terms here"),
              IsInvalidArgumentWith("does not match"));
  EXPECT_EQ(h->reason(), reject::kNoMatch);

  auto anchored = Regex(R"(^term=(?P<term>\d+)$)", {"term"});
  ASSERT_TRUE(anchored);
  EXPECT_FALSE(anchored->Decode("prefix term=5").ok());
  EXPECT_EQ(anchored->reason(), reject::kNoMatch);
  EXPECT_TRUE(anchored->Decode("term=5").ok());
}

TEST(RegexDecoderTest, UnreadGroupsAndUnmatchedPaths) {
  // `skip` is read by no rule; `absent` names no group.
  auto h = Regex(R"((?P<skip>\w+) (?P<keep>\w+))", {"keep", "absent"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("one two").ok());
  EXPECT_THAT(h->Get("keep"), IsString("two"));
  EXPECT_THAT(h->Get("absent"), IsMissing());
  // No group read at all: the decoder still filters by match.
  auto none = Regex(R"((?P<x>\d+))", {"other"});
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->Decode("a1").ok());
  EXPECT_FALSE(none->Decode("abc").ok());
  EXPECT_EQ(none->reason(), reject::kNoMatch);
}

TEST(RegexDecoderTest, RejectsInvalidUtf8AndEmptyLines) {
  auto h = Regex(R"((?P<a>.*))", {"a"});
  ASSERT_TRUE(h);
  EXPECT_THAT(h->Decode("ab\xff"),
              IsInvalidArgumentWith("invalid UTF-8 at column 3"));
  EXPECT_EQ(h->reason(), reject::kInvalidUtf8);
  EXPECT_FALSE(h->Decode("  ").ok());
  EXPECT_EQ(h->reason(), reject::kEmptyLine);
}

TEST(RegexDecoderTest, BadPatternsFailAtConstruction) {
  FieldSet fields;
  fields.Add(*FieldPath::Parse("a"));
  auto bad = MakeDecoder(RegexOptions("(?P<a>unclosed"), fields);
  EXPECT_THAT(bad.status(), IsInvalidArgumentWith("missing )"));
  EXPECT_THAT(bad.status(), IsInvalidArgumentWith("invalid regex pattern"));
  EXPECT_THAT(MakeDecoder(RegexOptions(R"((\d+) (a))"), fields).status(),
              IsInvalidArgumentWith("no named groups"));
  EXPECT_THAT(MakeDecoder(RegexOptions(""), fields).status(),
              IsInvalidArgumentWith("needs a pattern"));
  EXPECT_THAT(MakeDecoder(RegexOptions("(?P<a-b>x)"), fields).status(),
              IsInvalidArgumentWith("invalid regex pattern"));
}

TEST(RegexDecoderTest, SharedGroupNameTakesFirstParticipatingGroup) {
  auto h = Regex(R"(^(?:id=(?P<id>\d+)|name=(?P<id>\w+))(?: (?P<id>\S+))?$)",
                 {"id"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("id=7").ok());
  EXPECT_THAT(h->Get("id"), IsInt(7));
  ASSERT_TRUE(h->Decode("name=bob").ok());
  EXPECT_THAT(h->Get("id"), IsString("bob"));
  ASSERT_TRUE(h->Decode("name=bob extra").ok());
  EXPECT_THAT(h->Get("id"), IsString("bob"));
}

}  // namespace
}  // namespace invariantd
