#include "sidecar/core/value.h"

#include "gtest/gtest.h"
#include "sidecar/core/hash.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/sanitize.h"

namespace invariantd {
namespace {

TEST(ValueTest, CanonicalNumericEquality) {
  EXPECT_EQ(Value::Int(5), Value::Double(5.0));
  EXPECT_FALSE(Value::Int(5) == Value::Double(5.5));
  EXPECT_FALSE(Value::Int(1) == Value::String("1"));
  EXPECT_EQ(Value::Missing(), Value::Missing());
  EXPECT_FALSE(Value::Missing() == Value::Null());
}

TEST(ValueTest, CompareNumbersExactForLargeInts) {
  const int64_t big = (int64_t{1} << 53) + 1;
  EXPECT_EQ(Value::CompareNumbers(Value::Int(big),
                                  Value::Double(static_cast<double>(big))),
            1);
  EXPECT_EQ(Value::CompareNumbers(Value::Int(2), Value::Double(2.5)), -1);
  EXPECT_EQ(Value::CompareNumbers(Value::Double(2.5), Value::Int(2)), 1);
  EXPECT_EQ(Value::CompareNumbers(Value::Int(2), Value::String("2")),
            std::nullopt);
}

TEST(ValueTest, HashIsCanonicalAndStable) {
  TupleHasher a, b;
  a.Add(Value::Int(7));
  b.Add(Value::Double(7.0));
  EXPECT_EQ(a.Finish(), b.Finish());
  TupleHasher c, d;
  c.Add(Value::String("ab"));
  c.Add(Value::String("c"));
  d.Add(Value::String("a"));
  d.Add(Value::String("bc"));
  EXPECT_NE(c.Finish(), d.Finish());
  // Pinned: ids must not change between releases.
  EXPECT_EQ(HashBytes("invariantd").Hex().size(), 32u);
  EXPECT_EQ(HashBytes("invariantd"), HashBytes("invariantd"));
}

TEST(JsonTextTest, EscapesControlsSeparatorsAndInvalidUtf8) {
  EXPECT_EQ(JsonString("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
  EXPECT_EQ(JsonString("\xe2\x80\xa8"), "\"\\u2028\"");
  EXPECT_EQ(JsonString("\xff"), "\"\\ufffd\"");
  EXPECT_EQ(JsonString("h\xc3\xa9"), "\"h\xc3\xa9\"");
  // The sanitizer's set: C1 controls, DEL and bidi overrides.
  EXPECT_EQ(JsonString("\xc2\x85\x7f\xe2\x80\xae"),
            "\"\\u0085\\u007f\\u202e\"");
}

TEST(SanitizeTest, NeutralizesControlsAndBidi) {
  EXPECT_EQ(SanitizeText("a\nb\r\x1b[31m"), "a\\nb\\r\\x1b[31m");
  EXPECT_EQ(SanitizeText("\xe2\x80\xae"), "\\u202e");
  EXPECT_EQ(SanitizeText("\xc2\x85"), "\\u0085");
  EXPECT_EQ(SanitizeText("\xff"), "\\xff");
  EXPECT_EQ(SanitizeText("back\\slash"), "back\\\\slash");
}

TEST(SanitizeTest, TruncatesVisibly) {
  EXPECT_EQ(SanitizeText("abcdef", 3), "abc...[+3 bytes]");
}

}  // namespace
}  // namespace invariantd
