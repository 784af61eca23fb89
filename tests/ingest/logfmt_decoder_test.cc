#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
using testing_util::LogfmtOptions;

std::unique_ptr<DecoderHarness> Logfmt(const std::vector<std::string>& paths) {
  auto h = DecoderHarness::Make(LogfmtOptions(), paths);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? std::move(*h) : nullptr;
}

TEST(LogfmtDecoderTest, TypesBareValuesBySpelling) {
  auto h =
      Logfmt({"i",    "neg",  "zero",  "d",       "e",     "t",    "f",   "n",
              "s",    "lead", "plus",  "dot",     "trail", "huge", "hex", "inf",
              "True", "bare", "empty", "missing", "range", "minus"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("i=42 neg=-7 zero=0 d=1.5 e=2E-3 t=true f=false "
                        "n=null s=hello lead=007 plus=+1 dot=.5 trail=1. "
                        "huge=9223372036854775808 hex=0x10 inf=inf "
                        "True=True bare empty= range=1e400 minus=-")
                  .ok());
  EXPECT_THAT(h->Get("i"), IsInt(42));
  EXPECT_THAT(h->Get("neg"), IsInt(-7));
  EXPECT_THAT(h->Get("zero"), IsInt(0));
  EXPECT_THAT(h->Get("d"), IsDouble(1.5));
  EXPECT_THAT(h->Get("e"), IsDouble(2e-3));
  EXPECT_THAT(h->Get("t"), IsBool(true));
  EXPECT_THAT(h->Get("f"), IsBool(false));
  EXPECT_THAT(h->Get("n"), IsNull());
  EXPECT_THAT(h->Get("s"), IsString("hello"));
  EXPECT_THAT(h->Get("lead"), IsString("007"));
  EXPECT_THAT(h->Get("plus"), IsString("+1"));
  EXPECT_THAT(h->Get("dot"), IsString(".5"));
  EXPECT_THAT(h->Get("trail"), IsString("1."));
  EXPECT_THAT(h->Get("huge"), IsDouble(9223372036854775808.0));
  EXPECT_THAT(h->Get("hex"), IsString("0x10"));
  EXPECT_THAT(h->Get("inf"), IsString("inf"));
  EXPECT_THAT(h->Get("True"), IsString("True"));
  EXPECT_THAT(h->Get("bare"), IsBool(true));
  EXPECT_THAT(h->Get("empty"), IsString(""));
  EXPECT_THAT(h->Get("missing"), IsMissing());
  EXPECT_THAT(h->Get("range"), IsString("1e400"));
  EXPECT_THAT(h->Get("minus"), IsString("-"));
}

TEST(LogfmtDecoderTest, QuotedValuesAreAlwaysStrings) {
  auto h = Logfmt({"a", "b", "c", "d"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"(a="1" b="true" c="two words" d="")").ok());
  EXPECT_THAT(h->Get("a"), IsString("1"));
  EXPECT_THAT(h->Get("b"), IsString("true"));
  EXPECT_THAT(h->Get("c"), IsString("two words"));
  EXPECT_THAT(h->Get("d"), IsString(""));
}

TEST(LogfmtDecoderTest, UnescapesQuotedValues) {
  auto h = Logfmt({"msg", "u", "other"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"(msg="say \"hi\" \\ a\nb\tc\r\/" )"
                        R"(u="caf\u00e9 \ud83d\ude00" other="x\ty")")
                  .ok());
  EXPECT_THAT(h->Get("msg"), IsString("say \"hi\" \\ a\nb\tc\r/"));
  EXPECT_THAT(h->Get("u"), IsString("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_THAT(h->Get("other"), IsString("x\ty"));
}

TEST(LogfmtDecoderTest, DottedKeysMatchDottedPaths) {
  auto h = Logfmt({"event.nid", "event.state.term", "plain"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("event.nid=3 event.state.term=7 plain=x").ok());
  EXPECT_THAT(h->Get("event.nid"), IsInt(3));
  EXPECT_THAT(h->Get("event.state.term"), IsInt(7));
  EXPECT_THAT(h->Get("plain"), IsString("x"));
}

TEST(LogfmtDecoderTest, SeparatorsAndEqualsInValues) {
  auto h = Logfmt({"a", "url", "b"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode("  a=1\t\turl=/x?y=z&w=1   b   ").ok());
  EXPECT_THAT(h->Get("a"), IsInt(1));
  EXPECT_THAT(h->Get("url"), IsString("/x?y=z&w=1"));
  EXPECT_THAT(h->Get("b"), IsBool(true));
}

TEST(LogfmtDecoderTest, LastDuplicateWins) {
  auto h = Logfmt({"a"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"(a=1 a="x\ny" a=3)").ok());
  EXPECT_THAT(h->Get("a"), IsInt(3));
  ASSERT_TRUE(h->Decode(R"(a=1 a="x\ny")").ok());
  EXPECT_THAT(h->Get("a"), IsString("x\ny"));
}

TEST(LogfmtDecoderTest, ManyEscapedValuesStayValid) {
  std::vector<std::string> paths;
  std::string line;
  for (int i = 0; i < 50; ++i) {
    paths.push_back(absl::StrCat("k", i));
    absl::StrAppend(&line, "k", i, "=\"v", i, "\\n\" ");
  }
  auto h = Logfmt(paths);
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(line).ok());
  for (int i = 0; i < 50; ++i) {
    EXPECT_THAT(h->Get(absl::StrCat("k", i)),
                IsString(absl::StrCat("v", i, "\n")));
  }
}

TEST(LogfmtDecoderTest, RejectsMalformedRecordsWithColumn) {
  auto h = Logfmt({"a"});
  ASSERT_TRUE(h);
  struct Case {
    const char* line;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {R"(a="unterminated)", "unterminated quoted value at column 3"},
           {R"(a=1 b="x\")", "unterminated quoted value at column 7"},
           {"a=1 =2", "'=' without a key at column 5"},
           {"=", "'=' without a key at column 1"},
           {R"(a"b=1)", "'\"' in a key at column 2"},
           {R"(a=b"c)", "'\"' in an unquoted value at column 4"},
           {R"(a="x"y)", "expected a space after a quoted value at column 6"},
           {R"(a="\q")", "bad escape in a quoted value at column 4"},
           {R"(z="ok \x")", "bad escape in a quoted value at column 7"},
           {R"(a="\u12")", "bad escape in a quoted value at column 4"},
           {R"(a="\udc00")", "bad escape in a quoted value at column 4"},
           {R"(a="x\ud800y")", "bad escape in a quoted value at column 5"},
       }) {
    EXPECT_THAT(h->Decode(c.line), IsInvalidArgumentWith(c.message)) << c.line;
    EXPECT_EQ(h->reason(), reject::kInvalidLogfmt) << c.line;
  }
}

TEST(LogfmtDecoderTest, RejectsInvalidUtf8AndEmptyLines) {
  auto h = Logfmt({"a"});
  ASSERT_TRUE(h);
  EXPECT_THAT(h->Decode("a=\xe2\x82"),
              IsInvalidArgumentWith("invalid UTF-8 at column 3"));
  EXPECT_EQ(h->reason(), reject::kInvalidUtf8);
  EXPECT_THAT(h->Decode(" \t "), IsInvalidArgumentWith("empty line"));
  EXPECT_EQ(h->reason(), reject::kEmptyLine);
  EXPECT_FALSE(h->Decode("").ok());
  EXPECT_EQ(h->reason(), reject::kEmptyLine);
}

TEST(LogfmtDecoderTest, RealisticLine) {
  auto h = Logfmt({"level", "msg", "term", "index", "leader", "took"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"(ts=2024-07-02T03:01:14Z level=info )"
                        R"(msg="became leader at term 5" term=5 )"
                        R"(index=1024 leader=node-2 took=1.25)")
                  .ok());
  EXPECT_THAT(h->Get("level"), IsString("info"));
  EXPECT_THAT(h->Get("msg"), IsString("became leader at term 5"));
  EXPECT_THAT(h->Get("term"), IsInt(5));
  EXPECT_THAT(h->Get("index"), IsInt(1024));
  EXPECT_THAT(h->Get("leader"), IsString("node-2"));
  EXPECT_THAT(h->Get("took"), IsDouble(1.25));
}

}  // namespace
}  // namespace invariantd
