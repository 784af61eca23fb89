#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/decoder.h"
#include "tests/ingest/ingest_test_util.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using testing_util::DecoderHarness;
using testing_util::IsBool;
using testing_util::IsDouble;
using testing_util::IsInt;
using testing_util::IsInvalidArgumentWith;
using testing_util::IsJson;
using testing_util::IsMissing;
using testing_util::IsNull;
using testing_util::IsString;
using testing_util::JsonOptions;

std::unique_ptr<DecoderHarness> Json(const std::vector<std::string>& paths,
                                     int max_depth = 64) {
  auto h = DecoderHarness::Make(JsonOptions(max_depth), paths);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? std::move(*h) : nullptr;
}

TEST(JsonDecoderTest, TypesScalarsByJsonKind) {
  auto h = Json({"s", "i", "neg", "max", "min", "u", "big", "d", "e", "t", "f",
                 "n", "o", "a", "empty"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"s":"text","i":42,"neg":-7,)"
                        R"("max":9223372036854775807,)"
                        R"("min":-9223372036854775808,)"
                        R"("u":18446744073709551615,)"
                        R"("big":123456789012345678901234567890,)"
                        R"("d":1.5,"e":1e3,"t":true,"f":false,"n":null,)"
                        R"("o":{"k": [1, {"x":2}]},"a":[ 1 , 2 ],"empty":""})")
                  .ok());
  EXPECT_THAT(h->Get("s"), IsString("text"));
  EXPECT_THAT(h->Get("i"), IsInt(42));
  EXPECT_THAT(h->Get("neg"), IsInt(-7));
  EXPECT_THAT(h->Get("max"), IsInt(std::numeric_limits<int64_t>::max()));
  EXPECT_THAT(h->Get("min"), IsInt(std::numeric_limits<int64_t>::min()));
  EXPECT_THAT(h->Get("u"), IsDouble(18446744073709551615.0));
  EXPECT_THAT(h->Get("big"), IsDouble(123456789012345678901234567890.0));
  EXPECT_THAT(h->Get("d"), IsDouble(1.5));
  EXPECT_THAT(h->Get("e"), IsDouble(1000.0));
  EXPECT_THAT(h->Get("t"), IsBool(true));
  EXPECT_THAT(h->Get("f"), IsBool(false));
  EXPECT_THAT(h->Get("n"), IsNull());
  EXPECT_THAT(h->Get("o"), IsJson(R"({"k": [1, {"x":2}]})"));
  EXPECT_THAT(h->Get("a"), IsJson("[ 1 , 2 ]"));
  EXPECT_THAT(h->Get("empty"), IsString(""));
}

TEST(JsonDecoderTest, NestedPathsAndMissingFields) {
  auto h =
      Json({"event.name", "event.state.term", "event.state.vote", "event.nope",
            "event.state.term.deeper", "nope.at.all", "level"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"level":"debug","event":{"name":"Commit",)"
                        R"("state":{"term":3,"vote":"2"},"log":9}})")
                  .ok());
  EXPECT_THAT(h->Get("event.name"), IsString("Commit"));
  EXPECT_THAT(h->Get("event.state.term"), IsInt(3));
  EXPECT_THAT(h->Get("event.state.vote"), IsString("2"));
  EXPECT_THAT(h->Get("event.nope"), IsMissing());
  // A scalar where the path continues: the deeper path is missing.
  EXPECT_THAT(h->Get("event.state.term.deeper"), IsMissing());
  EXPECT_THAT(h->Get("nope.at.all"), IsMissing());
  EXPECT_THAT(h->Get("level"), IsString("debug"));
}

TEST(JsonDecoderTest, ArrayIndexPaths) {
  auto h = Json({"a.0", "a.2.x", "a.10", "a.11", "short.1", "o.0", "after",
                 "nested.1.0"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"a":["zero",1,{"x":"two"},3,4,5,6,7,8,9,"ten"],)"
                        R"("short":[1],"o":{"0":"key zero"},)"
                        R"("nested":[[0],[10,11]],"after":true})")
                  .ok());
  EXPECT_THAT(h->Get("a.0"), IsString("zero"));
  EXPECT_THAT(h->Get("a.2.x"), IsString("two"));
  EXPECT_THAT(h->Get("a.10"), IsString("ten"));
  EXPECT_THAT(h->Get("a.11"), IsMissing());
  EXPECT_THAT(h->Get("short.1"), IsMissing());
  // A numeric segment also matches an object key spelled the same.
  EXPECT_THAT(h->Get("o.0"), IsString("key zero"));
  EXPECT_THAT(h->Get("nested.1.0"), IsInt(10));
  // The array walk stops early; the fields after it are still read.
  EXPECT_THAT(h->Get("after"), IsBool(true));
}

TEST(JsonDecoderTest, StopsArrayEarlyAndKeepsReadingSiblings) {
  auto h = Json({"a.0", "b", "c.k"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(
      h->Decode(R"({"a":[1,[2,[3]],{"x":[4]}],"b":"B","c":{"k":[5]}})").ok());
  EXPECT_THAT(h->Get("a.0"), IsInt(1));
  EXPECT_THAT(h->Get("b"), IsString("B"));
  EXPECT_THAT(h->Get("c.k"), IsJson("[5]"));
}

TEST(JsonDecoderTest, EscapedStringsAreUnescaped) {
  auto h = Json({"msg", "plain"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"msg":"a\"b\\c\nd\u00e9\ud83d\ude00\/",)"
                        R"("plain":"caf\u00e9 x"})")
                  .ok());
  EXPECT_THAT(h->Get("msg"), IsString("a\"b\\c\nd\xc3\xa9\xf0\x9f\x98\x80/"));
  EXPECT_THAT(h->Get("plain"), IsString("caf\xc3\xa9 x"));
}

TEST(JsonDecoderTest, PlainStringsViewTheLine) {
  auto h = Json({"s"});
  ASSERT_TRUE(h);
  testing_util::PaddedLine line(R"({"s":"in place"})");
  ASSERT_TRUE(h->DecodeInPlace(line.view()).ok());
  const Value v = h->Get("s");
  ASSERT_THAT(v, IsString("in place"));
  EXPECT_EQ(v.str().data(), line.view().data() + 6);
}

TEST(JsonDecoderTest, EscapedAndBracketQuotedKeys) {
  auto h = Json({R"(metadata.labels["app.kubernetes.io/name"])", R"(["a\"b"])",
                 R"(["c.d"])", R"(["x y"].z)"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"metadata":{"labels":{"app":"no",)"
                        R"("app.kubernetes.io\/name":"web"}},)"
                        R"("a\"b":1,"c\u002ed":2,"x y":{"z":3}})")
                  .ok());
  EXPECT_THAT(h->Get(R"(metadata.labels["app.kubernetes.io/name"])"),
              IsString("web"));
  EXPECT_THAT(h->Get(R"(["a\"b"])"), IsInt(1));
  EXPECT_THAT(h->Get(R"(["c.d"])"), IsInt(2));
  EXPECT_THAT(h->Get(R"(["x y"].z)"), IsInt(3));
}

// Keys of up to 8 bytes are matched as one word, longer ones byte by byte:
// every byte and the length count, at and around the 8-byte boundary.
TEST(JsonDecoderTest, KeysMatchOnEveryByteAndTheLength) {
  auto h = Json({"k", "key", "abcdefg", "abcdefgh", "abcdefghi", "abcdefghij.x",
                 "o.abcdefgh"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"ke":0,"keyy":0,"abcdefgX":0,"abcdefghX":0,)"
                        R"("Xbcdefgh":0,"abcdefghij":{"x":5},"k":1,)"
                        R"("o":{"abcdefgh":7}})")
                  .ok());
  EXPECT_THAT(h->Get("k"), IsInt(1));
  EXPECT_THAT(h->Get("key"), IsMissing());
  EXPECT_THAT(h->Get("abcdefg"), IsMissing());
  EXPECT_THAT(h->Get("abcdefgh"), IsMissing());
  EXPECT_THAT(h->Get("abcdefghi"), IsMissing());
  EXPECT_THAT(h->Get("abcdefghij.x"), IsInt(5));
  EXPECT_THAT(h->Get("o.abcdefgh"), IsInt(7));
  // Exact matches, one escaped ("k\u0065y": unescaped by simdjson, so not
  // viewed in the line); the last key ends 5 bytes before the line's end.
  ASSERT_TRUE(h->Decode(R"({"abcdefg":1,"abcdefgh":2,"abcdefghi":3,)"
                        R"("key":4,"o":{"abcdefgh":8}})")
                  .ok());
  EXPECT_THAT(h->Get("abcdefg"), IsInt(1));
  EXPECT_THAT(h->Get("abcdefgh"), IsInt(2));
  EXPECT_THAT(h->Get("abcdefghi"), IsInt(3));
  EXPECT_THAT(h->Get("key"), IsInt(4));
  EXPECT_THAT(h->Get("o.abcdefgh"), IsInt(8));
}

TEST(JsonDecoderTest, DuplicateKeysLastWins) {
  auto h = Json({"a", "o.x", "o.y"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(
      h->Decode(R"({"a":1,"o":{"x":1},"a":2,"o":{"y":2},"a":"last"})").ok());
  EXPECT_THAT(h->Get("a"), IsString("last"));
  EXPECT_THAT(h->Get("o.x"), IsInt(1));
  EXPECT_THAT(h->Get("o.y"), IsInt(2));
}

TEST(JsonDecoderTest, PathAndItsPrefixAreBothFilled) {
  auto h = Json(
      {"event", "event.state.term", "event.state", "event.tags.1", "other"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"event": {"state":{"term":5, "x":[1]} ,)"
                        R"("tags":["a","b"]} , "other":1})")
                  .ok());
  EXPECT_THAT(h->Get("event"),
              IsJson(R"({"state":{"term":5, "x":[1]} ,"tags":["a","b"]})"));
  EXPECT_THAT(h->Get("event.state"), IsJson(R"({"term":5, "x":[1]})"));
  EXPECT_THAT(h->Get("event.state.term"), IsInt(5));
  EXPECT_THAT(h->Get("event.tags.1"), IsString("b"));
  EXPECT_THAT(h->Get("other"), IsInt(1));
}

TEST(JsonDecoderTest, PrefixOfArrayPath) {
  auto h = Json({"a", "a.1"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"a":[true,"x\ty"]})").ok());
  EXPECT_THAT(h->Get("a"), IsJson(R"([true,"x\ty"])"));
  EXPECT_THAT(h->Get("a.1"), IsString("x\ty"));
  // Scalar at a node that also has children: only the scalar is set.
  ASSERT_TRUE(h->Decode(R"({"a":7})").ok());
  EXPECT_THAT(h->Get("a"), IsInt(7));
  EXPECT_THAT(h->Get("a.1"), IsMissing());
}

TEST(JsonDecoderTest, EscapedStringsOfReparsedSiblingsSurvive) {
  // `a` and `b` are re-parsed by the same sub-parser in one Decode: the
  // unescaped strings of the first must survive the second.
  auto h = Json({"a", "a.s", "a.t", "b", "b.s", "b.c", "b.c.d", "b.c.d.e"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"a":{"s":"x\ny","t":"p\"q"},)"
                        R"("b":{"s":"z\tw","c":{"d":{"e":"\u00e9\\"}}}})")
                  .ok());
  EXPECT_THAT(h->Get("a.s"), IsString("x\ny"));
  EXPECT_THAT(h->Get("a.t"), IsString("p\"q"));
  EXPECT_THAT(h->Get("b.s"), IsString("z\tw"));
  EXPECT_THAT(h->Get("b.c"), IsJson(R"({"d":{"e":"\u00e9\\"}})"));
  EXPECT_THAT(h->Get("b.c.d"), IsJson(R"({"e":"\u00e9\\"})"));
  EXPECT_THAT(h->Get("b.c.d.e"), IsString("\xc3\xa9\\"));
}

TEST(JsonDecoderTest, ManyChildrenUseTheHashedLookup) {
  std::vector<std::string> paths;
  std::string line = "{";
  for (int i = 0; i < 20; ++i) {
    paths.push_back(absl::StrCat("k", i));
    if (i > 0) line += ",";
    absl::StrAppend(&line, "\"k", i, "\":", i * 10);
  }
  line += ",\"unrelated\":0}";
  auto h = Json(paths);
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(line).ok());
  for (int i = 0; i < 20; ++i) {
    EXPECT_THAT(h->Get(absl::StrCat("k", i)), IsInt(i * 10)) << i;
  }
}

TEST(JsonDecoderTest, NoRequestedFieldsStillValidates) {
  auto h = Json({});
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode(R"({"a":[1,{"b":2}]})").ok());
  EXPECT_FALSE(h->Decode(R"({"a":1,})").ok());
  EXPECT_EQ(h->reason(), reject::kInvalidJson);
}

TEST(JsonDecoderTest, ToleratesSurroundingWhitespaceAndCarriageReturn) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(" \t{\"a\" : 1 }\r").ok());
  EXPECT_THAT(h->Get("a"), IsInt(1));
}

TEST(JsonDecoderTest, RejectsEmptyLines) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  for (const char* line : {"", " ", "\t \r"}) {
    EXPECT_THAT(h->Decode(line), IsInvalidArgumentWith("empty line"));
    EXPECT_EQ(h->reason(), reject::kEmptyLine);
  }
}

TEST(JsonDecoderTest, RejectsNonObjects) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  EXPECT_THAT(h->Decode("[1,2]"),
              IsInvalidArgumentWith("expected a JSON object, got an array"));
  EXPECT_EQ(h->reason(), reject::kNotAnObject);
  EXPECT_THAT(h->Decode("  \"str\""), IsInvalidArgumentWith("column 3"));
  EXPECT_EQ(h->reason(), reject::kNotAnObject);
  EXPECT_FALSE(h->Decode("42").ok());
  EXPECT_EQ(h->reason(), reject::kNotAnObject);
  EXPECT_FALSE(h->Decode("null").ok());
  EXPECT_EQ(h->reason(), reject::kNotAnObject);
}

TEST(JsonDecoderTest, RejectsInvalidJsonWithSimdjsonTextAndColumn) {
  auto h = Json({"a", "b"});
  ASSERT_TRUE(h);
  absl::Status s = h->Decode(R"({"a":1,})");
  EXPECT_THAT(s, IsInvalidArgumentWith("invalid JSON"));
  EXPECT_THAT(s, IsInvalidArgumentWith("column 8"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("improper structure"));
  EXPECT_EQ(h->reason(), reject::kInvalidJson);

  EXPECT_THAT(h->Decode(R"({"a" 1})"), IsInvalidArgumentWith("column 6"));
  EXPECT_EQ(h->reason(), reject::kInvalidJson);

  EXPECT_THAT(h->Decode(R"({"a":1} {"b":2})"),
              IsInvalidArgumentWith("unexpected content after the top-level "
                                    "object at column 9"));
  EXPECT_EQ(h->reason(), reject::kInvalidJson);

  for (const char* bad :
       {R"({"a":1)", R"({"a":"unterminated})", "xyz", R"({"a":tru})",
        R"({"a":nul})", R"({"a":-})", R"({"a":1.2.3})", R"({"a":"x\q"})",
        R"({"a":[1,2)", R"({"b":{"x":1})", "{\"a\":\"\\ud800\"}"}) {
    EXPECT_FALSE(h->Decode(bad).ok()) << bad;
    EXPECT_EQ(h->reason(), reject::kInvalidJson) << bad;
  }
}

TEST(JsonDecoderTest, RejectsInvalidUtf8WithColumn) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  EXPECT_THAT(h->Decode("{\"a\":\"ok\xff\"}"),
              IsInvalidArgumentWith("invalid UTF-8 at column 9"));
  EXPECT_EQ(h->reason(), reject::kInvalidUtf8);
  // Also in parts of the line no rule reads, and for overlong forms.
  EXPECT_FALSE(h->Decode("{\"z\":\"\xc0\xaf\",\"a\":1}").ok());
  EXPECT_EQ(h->reason(), reject::kInvalidUtf8);
}

TEST(JsonDecoderTest, RejectsTooDeepNesting) {
  auto h = Json({"a.b.c"}, /*max_depth=*/3);
  ASSERT_TRUE(h);
  EXPECT_TRUE(h->Decode(R"({"a":{"b":{"c":1}}})").ok());
  EXPECT_THAT(h->Get("a.b.c"), IsInt(1));
  EXPECT_THAT(h->Decode(R"({"a":{"b":{"c":[1]}}})"),
              IsInvalidArgumentWith("deeper than 3 at column 16"));
  EXPECT_EQ(h->reason(), reject::kTooDeep);
  // Also in fields no rule reads.
  EXPECT_FALSE(h->Decode(R"({"z":[[[0]]]})").ok());
  EXPECT_EQ(h->reason(), reject::kTooDeep);
  // Brackets inside strings do not nest; closed containers do not add up.
  EXPECT_TRUE(
      h->Decode(R"({"s":"[[[[{{{{\"[[","a":{"b":{}},"x":[[1],[2]]})").ok());
  EXPECT_THAT(h->Get("a.b.c"), IsMissing());
}

TEST(JsonDecoderTest, DefaultDepthLimitIs64) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  auto nested = [](int depth) {
    std::string s = "{\"a\":";
    for (int i = 1; i < depth; ++i) s += "[";
    s += "0";
    for (int i = 1; i < depth; ++i) s += "]";
    s += "}";
    return s;
  };
  EXPECT_TRUE(h->Decode(nested(64)).ok());
  EXPECT_FALSE(h->Decode(nested(65)).ok());
  EXPECT_EQ(h->reason(), reject::kTooDeep);
}

TEST(JsonDecoderTest, InvalidValueInARequestedFieldIsRejected) {
  auto h = Json({"a"});
  ASSERT_TRUE(h);
  EXPECT_FALSE(h->Decode(R"({"a":[1 2]})").ok());
  EXPECT_EQ(h->reason(), reject::kInvalidJson);
  // On-demand: the same defect in a field nobody reads is not looked at.
  EXPECT_TRUE(h->Decode(R"({"z":[1 2],"a":1})").ok());
  EXPECT_THAT(h->Get("a"), IsInt(1));
}

TEST(JsonDecoderTest, DecoderIsReusableAcrossShapes) {
  auto h = Json({"a.b", "c"});
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->Decode(R"({"a":{"b":"first\n"},"c":1})").ok());
  EXPECT_THAT(h->Get("a.b"), IsString("first\n"));
  ASSERT_FALSE(h->Decode(R"({"a":)").ok());
  ASSERT_TRUE(h->Decode(R"({"c":"only c"})").ok());
  EXPECT_THAT(h->Get("a.b"), IsMissing());
  EXPECT_THAT(h->Get("c"), IsString("only c"));
  const std::string big =
      absl::StrCat("{\"c\":\"", std::string(100000, 'x'), "\"}");
  ASSERT_TRUE(h->Decode(big).ok());
  EXPECT_EQ(h->Get("c").str().size(), 100000u);
  ASSERT_TRUE(h->Decode(R"({"a":{"b":2}})").ok());
  EXPECT_THAT(h->Get("a.b"), IsInt(2));
}

TEST(JsonDecoderTest, ResetsFieldsOfTheWrongSize) {
  FieldSet fields;
  fields.Add(*FieldPath::Parse("a"));
  fields.Add(*FieldPath::Parse("b"));
  auto decoder = MakeDecoder(JsonOptions(), fields);
  ASSERT_TRUE(decoder.ok());
  testing_util::PaddedLine line(R"({"b":2})");
  Event event;  // not Reset by the caller
  std::string_view reason;
  ASSERT_TRUE((*decoder)->Decode(line.view(), &event, &reason).ok());
  ASSERT_EQ(event.fields.size(), 2u);
  EXPECT_THAT(event.fields[1], IsInt(2));
}

TEST(JsonDecoderTest, RejectsBadMaxDepth) {
  FieldSet fields;
  EXPECT_THAT(MakeDecoder(JsonOptions(0), fields).status(),
              IsInvalidArgumentWith("max_depth must be between 1 and 1024"));
  EXPECT_FALSE(MakeDecoder(JsonOptions(1025), fields).ok());
  EXPECT_TRUE(MakeDecoder(JsonOptions(1024), fields).ok());
}

TEST(JsonDecoderTest, RawJsonHandedOutIsValidated) {
  auto h = Json({"o", "p", "p.k"});
  ASSERT_TRUE(h);
  for (const char* bad :
       {R"({"o":{"a":[1 2]}})", R"({"o":{"a":tru}})", R"({"o":[{"a" 1}]})",
        R"({"o":["\x"]})", R"({"p":{"k":1,"z":nul}})",
        R"({"p":{"k":1,"z":{"y":[01]}}})"}) {
    EXPECT_FALSE(h->Decode(bad).ok()) << bad;
    EXPECT_EQ(h->reason(), reject::kInvalidJson) << bad;
  }
  ASSERT_TRUE(
      h->Decode(R"({"o":{"a":[1,-2.5e3,"\u00e9",true,null,{}]},"p":{"k":1}})")
          .ok());
  EXPECT_THAT(h->Get("o"), IsJson(R"({"a":[1,-2.5e3,"\u00e9",true,null,{}]})"));
  EXPECT_THAT(h->Get("p.k"), IsInt(1));
}

TEST(JsonDecoderTest, ColumnsOfErrorsInsideReparsedValuesPointIntoTheLine) {
  auto h = Json({"o"});
  ASSERT_TRUE(h);
  // The bad token `tru` starts at byte 17 (column 18).
  EXPECT_THAT(h->Decode(R"({"x":1, "o":{"a":tru}})"),
              IsInvalidArgumentWith("column 18"));
}

}  // namespace
}  // namespace invariantd
