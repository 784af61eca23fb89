#include "rules/expr.h"

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sidecar/core/field_path.h"

namespace invariantd {

// Found by argument-dependent lookup when gtest prints an EvalResult.
void PrintTo(const EvalResult& r, std::ostream* os) {
  switch (r.status) {
    case EvalStatus::kOk:
      *os << "ok(" << ValueKindName(r.value.kind()) << " " << r.value.ToJson()
          << ")";
      return;
    case EvalStatus::kMissing:
      *os << "missing";
      return;
    case EvalStatus::kTypeError:
      *os << "type error";
      return;
  }
}

namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

MATCHER(IsMissing, "is missing") { return arg.status == EvalStatus::kMissing; }
MATCHER(IsTypeError, "is a type error") {
  return arg.status == EvalStatus::kTypeError;
}
// ok, of exactly the kind of `v`, and equal to it.
MATCHER_P(Is, v, "is ok(" + Value(v).ToJson() + ")") {
  return arg.status == EvalStatus::kOk && arg.value.kind() == v.kind() &&
         arg.value == v;
}
MATCHER(IsTrue, "is true") {
  return arg.status == EvalStatus::kOk && arg.value.is_bool() &&
         arg.value.bool_value();
}
MATCHER(IsFalse, "is false") {
  return arg.status == EvalStatus::kOk && arg.value.is_bool() &&
         !arg.value.bool_value();
}

auto Err(size_t offset, std::string_view message_part) {
  return AllOf(
      Field(&ExprError::offset, offset),
      Field(&ExprError::message, HasSubstr(std::string(message_part))));
}

// Compiles expressions against one FieldSet and evaluates them on an event
// whose fields are set by path text.
class ExprTest : public ::testing::Test {
 protected:
  std::unique_ptr<Expr> Compile(std::string_view text) {
    std::vector<ExprError> errors;
    std::unique_ptr<Expr> e = CompileExpr(text, &fields_, &errors);
    EXPECT_NE(e, nullptr) << text;
    for (const ExprError& err : errors) {
      ADD_FAILURE() << "'" << text << "' @" << err.offset << ": "
                    << err.message;
    }
    return e;
  }

  // Compiles `text`, expecting failure; returns the errors.
  std::vector<ExprError> Errors(std::string_view text) {
    std::vector<ExprError> errors;
    FieldSet fields;
    std::unique_ptr<Expr> e = CompileExpr(text, &fields, &errors);
    EXPECT_EQ(e, nullptr) << text;
    EXPECT_THAT(errors, ::testing::Not(IsEmpty())) << text;
    EXPECT_EQ(fields.size(), 0) << "a failed compile must not add paths";
    return errors;
  }

  // The single error of `text`.
  ExprError Error(std::string_view text) {
    std::vector<ExprError> errors = Errors(text);
    EXPECT_THAT(errors, SizeIs(1)) << text;
    return errors.empty() ? ExprError{} : errors[0];
  }

  void Set(std::string_view path, Value v) {
    values_.emplace_back(std::string(path), v);
  }

  Event MakeEvent() {
    Event event;
    event.Reset(fields_.size());
    for (const auto& [path, v] : values_) {
      absl::StatusOr<FieldPath> p = FieldPath::Parse(path);
      EXPECT_TRUE(p.ok()) << path;
      if (!p.ok()) continue;
      const int slot = fields_.Find(*p);
      if (slot >= 0) event.fields[static_cast<size_t>(slot)] = v;
    }
    return event;
  }

  // The result may point into the compiled expression (string constants),
  // so the fixture keeps every compiled expression alive.
  EvalResult Eval(std::string_view text) {
    std::unique_ptr<Expr> e = Compile(text);
    if (e == nullptr) return EvalResult{EvalStatus::kTypeError, Value()};
    kept_.push_back(std::move(e));
    return kept_.back()->Eval(MakeEvent());
  }

  ExprType TypeOf(std::string_view text) {
    std::unique_ptr<Expr> e = Compile(text);
    return e == nullptr ? ExprType::kAny : e->type();
  }

  FieldSet fields_;
  std::vector<std::pair<std::string, Value>> values_;
  std::vector<std::unique_ptr<Expr>> kept_;
};

// --- literals --------------------------------------------------------------

TEST_F(ExprTest, IntegerLiterals) {
  EXPECT_THAT(Eval("0"), Is(Value::Int(0)));
  EXPECT_THAT(Eval("42"), Is(Value::Int(42)));
  EXPECT_THAT(Eval("007"), Is(Value::Int(7)));
  EXPECT_THAT(Eval("-42"), Is(Value::Int(-42)));
  EXPECT_THAT(Eval("9223372036854775807"), Is(Value::Int(kMax)));
  EXPECT_THAT(Eval("-9223372036854775808"), Is(Value::Int(kMin)));
  EXPECT_THAT(Eval("- 9223372036854775808"), Is(Value::Int(kMin)));
}

TEST_F(ExprTest, FloatLiterals) {
  EXPECT_THAT(Eval("1.5"), Is(Value::Double(1.5)));
  EXPECT_THAT(Eval("1e3"), Is(Value::Double(1000)));
  EXPECT_THAT(Eval("1E+3"), Is(Value::Double(1000)));
  EXPECT_THAT(Eval("2.5e-3"), Is(Value::Double(0.0025)));
  EXPECT_THAT(Eval("-0.5"), Is(Value::Double(-0.5)));
  EXPECT_THAT(Eval("1.0"), Is(Value::Double(1.0)));
}

TEST_F(ExprTest, StringLiteralsAndEscapes) {
  EXPECT_THAT(Eval(R"("abc")"), Is(Value::String("abc")));
  EXPECT_THAT(Eval(R"('abc')"), Is(Value::String("abc")));
  EXPECT_THAT(Eval(R"("")"), Is(Value::String("")));
  EXPECT_THAT(Eval(R"("a\"b\'c\\d")"), Is(Value::String("a\"b'c\\d")));
  EXPECT_THAT(Eval(R"('it\'s "x"')"), Is(Value::String("it's \"x\"")));
  EXPECT_THAT(Eval(R"("\n\t\r")"), Is(Value::String("\n\t\r")));
  EXPECT_THAT(Eval(R"("\u00e9")"), Is(Value::String("\xc3\xa9")));
  EXPECT_THAT(Eval(R"("\u20AC")"), Is(Value::String("\xe2\x82\xac")));
  EXPECT_THAT(Eval(R"("\ud83d\ude00")"), Is(Value::String("\xf0\x9f\x98\x80")));
  EXPECT_THAT(Eval(R"("\u0000")"),
              Is(Value::String(std::string_view("\0", 1))));
  EXPECT_THAT(Eval("\"h\xc3\xa9\""), Is(Value::String("h\xc3\xa9")));
}

TEST_F(ExprTest, KeywordLiterals) {
  EXPECT_THAT(Eval("true"), IsTrue());
  EXPECT_THAT(Eval("false"), IsFalse());
  EXPECT_THAT(Eval("null"), Is(Value::Null()));
}

// --- paths -----------------------------------------------------------------

TEST_F(ExprTest, PathsReadEventFieldsBySlot) {
  Set("event.role", Value::String("leader"));
  Set("sourceIPs.0", Value::String("10.0.0.1"));
  Set(R"(labels["app.kubernetes.io/name"])", Value::String("etcd"));
  Set("$meta", Value::Int(1));
  Set("@timestamp", Value::Int(2));
  Set("a.in", Value::Int(3));
  Set("a.true.null", Value::Int(4));
  Set("a.0.5", Value::Int(5));
  Set("x_1.y2", Value::Int(6));
  EXPECT_THAT(Eval("event.role"), Is(Value::String("leader")));
  EXPECT_THAT(Eval("sourceIPs.0"), Is(Value::String("10.0.0.1")));
  EXPECT_THAT(Eval(R"(labels["app.kubernetes.io/name"])"),
              Is(Value::String("etcd")));
  EXPECT_THAT(Eval(R"(labels['app.kubernetes.io/name'])"),
              Is(Value::String("etcd")));
  EXPECT_THAT(Eval("$meta"), Is(Value::Int(1)));
  EXPECT_THAT(Eval("@timestamp"), Is(Value::Int(2)));
  EXPECT_THAT(Eval("a.in"), Is(Value::Int(3)));
  EXPECT_THAT(Eval("a.true.null"), Is(Value::Int(4)));
  EXPECT_THAT(Eval("a.0.5"), Is(Value::Int(5)));
  EXPECT_THAT(Eval("x_1 . y2"), Is(Value::Int(6)));
  EXPECT_THAT(Eval("nope"), IsMissing());
  EXPECT_THAT(Eval("event.nope"), IsMissing());
}

TEST_F(ExprTest, PathsAreAddedToFieldSetOnce) {
  std::unique_ptr<Expr> e =
      Compile(R"(a.b == 1 || a.b == 2 || has(a.b) || c["x.y"].d == 3)");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(fields_.size(), 2);
  EXPECT_GE(fields_.Find(FieldPath({"a", "b"})), 0);
  EXPECT_GE(fields_.Find(FieldPath({"c", "x.y", "d"})), 0);
  // A second expression reuses existing slots.
  std::unique_ptr<Expr> f = Compile("a.b + z");
  EXPECT_EQ(fields_.size(), 3);
  Set("a.b", Value::Int(2));
  Set("z", Value::Int(5));
  EXPECT_THAT(f->Eval(MakeEvent()), Is(Value::Int(7)));
  EXPECT_THAT(e->Eval(MakeEvent()), IsTrue());
}

TEST_F(ExprTest, FieldSetUnchangedWhenCompileFails) {
  std::vector<ExprError> errors;
  EXPECT_EQ(CompileExpr("a.b == 1 && c.foo()", &fields_, &errors), nullptr);
  EXPECT_EQ(fields_.size(), 0);
}

TEST_F(ExprTest, AsPathOnlyForBarePath) {
  EXPECT_EQ(Compile("a.b.0")->AsPath(), FieldPath({"a", "b", "0"}));
  EXPECT_EQ(Compile(R"(m["k.v"].x)")->AsPath(), FieldPath({"m", "k.v", "x"}));
  EXPECT_EQ(Compile("(a.b)")->AsPath(), FieldPath({"a", "b"}));
  EXPECT_EQ(Compile("a.b == 1")->AsPath(), std::nullopt);
  EXPECT_EQ(Compile("a.startsWith(\"x\")")->AsPath(), std::nullopt);
  EXPECT_EQ(Compile("has(a)")->AsPath(), std::nullopt);
  EXPECT_EQ(Compile("1")->AsPath(), std::nullopt);
}

TEST_F(ExprTest, TextIsTheSource) {
  EXPECT_EQ(Compile("  a  ==  1 ")->text(), "  a  ==  1 ");
}

TEST_F(ExprTest, EventWithFewerFieldsReadsMissing) {
  std::unique_ptr<Expr> e = Compile("a == 1");
  Event empty;  // no slots at all
  EXPECT_THAT(e->Eval(empty), IsMissing());
}

// --- static types ------------------------------------------------------------

TEST_F(ExprTest, StaticTypes) {
  EXPECT_EQ(TypeOf("a"), ExprType::kAny);
  EXPECT_EQ(TypeOf("a.b ?? 1"), ExprType::kAny);
  EXPECT_EQ(TypeOf("(a + 1) ?? b"), ExprType::kAny);
  EXPECT_EQ(TypeOf("b ?? (a + 1)"), ExprType::kAny);
  EXPECT_EQ(TypeOf("(a + 1) ?? \"x\""), ExprType::kAny);
  EXPECT_EQ(TypeOf("has(a) ?? (b == 1)"), ExprType::kBool);
  EXPECT_EQ(TypeOf("(a + 1) ?? (b - 2)"), ExprType::kNumber);
  EXPECT_EQ(TypeOf("1 ?? \"x\""), ExprType::kNumber);  // constant: 1
  EXPECT_EQ(TypeOf("a == 1"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a < 1"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a && b"), ExprType::kBool);
  EXPECT_EQ(TypeOf("!a"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a in [1]"), ExprType::kBool);
  EXPECT_EQ(TypeOf("has(a)"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a.startsWith(\"x\")"), ExprType::kBool);
  EXPECT_EQ(TypeOf("endsWith(a, \"x\")"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a.contains(b)"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a.matches(\"x\")"), ExprType::kBool);
  EXPECT_EQ(TypeOf("a + 1"), ExprType::kNumber);
  EXPECT_EQ(TypeOf("-a"), ExprType::kNumber);
  EXPECT_EQ(TypeOf("1.5"), ExprType::kNumber);
  EXPECT_EQ(TypeOf("\"x\""), ExprType::kString);
  EXPECT_EQ(TypeOf("null"), ExprType::kNull);
  EXPECT_EQ(TypeOf("true"), ExprType::kBool);
}

// --- logical operators ------------------------------------------------------

TEST_F(ExprTest, NotOperator) {
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  Set("n", Value::Int(1));
  Set("z", Value::Null());
  EXPECT_THAT(Eval("!t"), IsFalse());
  EXPECT_THAT(Eval("!f"), IsTrue());
  EXPECT_THAT(Eval("!!t"), IsTrue());
  EXPECT_THAT(Eval("!missing"), IsMissing());
  EXPECT_THAT(Eval("!n"), IsTypeError());
  EXPECT_THAT(Eval("!z"), IsTypeError());
}

// `&&`: false wins, then type error, then missing.
TEST_F(ExprTest, AndTruthTable) {
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  Set("s", Value::String("x"));
  EXPECT_THAT(Eval("t && t"), IsTrue());
  EXPECT_THAT(Eval("t && f"), IsFalse());
  EXPECT_THAT(Eval("f && t"), IsFalse());
  EXPECT_THAT(Eval("f && f"), IsFalse());
  EXPECT_THAT(Eval("m && f"), IsFalse());
  EXPECT_THAT(Eval("f && m"), IsFalse());
  EXPECT_THAT(Eval("m && t"), IsMissing());
  EXPECT_THAT(Eval("t && m"), IsMissing());
  EXPECT_THAT(Eval("m && m"), IsMissing());
  EXPECT_THAT(Eval("s && t"), IsTypeError());
  EXPECT_THAT(Eval("t && s"), IsTypeError());
  EXPECT_THAT(Eval("s && f"), IsFalse());
  EXPECT_THAT(Eval("f && s"), IsFalse());
  EXPECT_THAT(Eval("s && m"), IsTypeError());
  EXPECT_THAT(Eval("m && s"), IsTypeError());
  EXPECT_THAT(Eval("t && t && t && t"), IsTrue());
  EXPECT_THAT(Eval("t && m && t && f"), IsFalse());
}

// `||`: true wins, then type error, then missing.
TEST_F(ExprTest, OrTruthTable) {
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  Set("s", Value::String("x"));
  EXPECT_THAT(Eval("t || t"), IsTrue());
  EXPECT_THAT(Eval("t || f"), IsTrue());
  EXPECT_THAT(Eval("f || t"), IsTrue());
  EXPECT_THAT(Eval("f || f"), IsFalse());
  EXPECT_THAT(Eval("m || t"), IsTrue());
  EXPECT_THAT(Eval("t || m"), IsTrue());
  EXPECT_THAT(Eval("m || f"), IsMissing());
  EXPECT_THAT(Eval("f || m"), IsMissing());
  EXPECT_THAT(Eval("s || f"), IsTypeError());
  EXPECT_THAT(Eval("s || t"), IsTrue());
  EXPECT_THAT(Eval("t || s"), IsTrue());
  EXPECT_THAT(Eval("m || s"), IsTypeError());
  EXPECT_THAT(Eval("f || f || f || t"), IsTrue());
}

// --- comparison -------------------------------------------------------------

TEST_F(ExprTest, EqualityIsCanonicalAndNeverATypeError) {
  Set("i", Value::Int(1));
  Set("d", Value::Double(1.0));
  Set("h", Value::Double(1.5));
  Set("s", Value::String("1"));
  Set("b", Value::Bool(true));
  Set("z", Value::Null());
  Set("j", Value::Json("{\"a\":1}"));
  Set("k", Value::Json("{\"a\":1}"));
  EXPECT_THAT(Eval("i == d"), IsTrue());
  EXPECT_THAT(Eval("i == 1.0"), IsTrue());
  EXPECT_THAT(Eval("1 == 1.0"), IsTrue());
  EXPECT_THAT(Eval("i == h"), IsFalse());
  EXPECT_THAT(Eval("i == s"), IsFalse());
  EXPECT_THAT(Eval("i != s"), IsTrue());
  EXPECT_THAT(Eval("s == \"1\""), IsTrue());
  EXPECT_THAT(Eval("\"1\" == s"), IsTrue());
  EXPECT_THAT(Eval("s != \"1\""), IsFalse());
  EXPECT_THAT(Eval("i != \"1\""), IsTrue());  // a number is not a string
  EXPECT_THAT(Eval("\"1\" != i"), IsTrue());
  EXPECT_THAT(Eval("i == \"1\""), IsFalse());
  EXPECT_THAT(Eval("j != \"x\""), IsTrue());
  EXPECT_THAT(Eval("b == true"), IsTrue());
  EXPECT_THAT(Eval("b == 1"), IsFalse());
  EXPECT_THAT(Eval("z == null"), IsTrue());
  EXPECT_THAT(Eval("z == false"), IsFalse());
  EXPECT_THAT(Eval("z != null"), IsFalse());
  EXPECT_THAT(Eval("j == k"), IsTrue());
  EXPECT_THAT(Eval("j == \"{\\\"a\\\":1}\""), IsFalse());  // json != string
  EXPECT_THAT(Eval("m == 1"), IsMissing());
  EXPECT_THAT(Eval("1 != m"), IsMissing());
  EXPECT_THAT(Eval("m == null"), IsMissing());
  EXPECT_THAT(Eval("m == m"), IsMissing());
  EXPECT_THAT(Eval("\"a\" == 1"), IsFalse());
}

TEST_F(ExprTest, OrderingComparesNumbersOrStrings) {
  Set("i", Value::Int(2));
  Set("d", Value::Double(2.5));
  Set("s", Value::String("b"));
  Set("b", Value::Bool(true));
  Set("z", Value::Null());
  Set("big", Value::Int((int64_t{1} << 53) + 1));
  EXPECT_THAT(Eval("i < d"), IsTrue());
  EXPECT_THAT(Eval("i <= 2"), IsTrue());
  EXPECT_THAT(Eval("i <= 2.0"), IsTrue());
  EXPECT_THAT(Eval("i > 2"), IsFalse());
  EXPECT_THAT(Eval("i >= 2"), IsTrue());
  EXPECT_THAT(Eval("d > i"), IsTrue());
  EXPECT_THAT(Eval("3 > i"), IsTrue());
  EXPECT_THAT(Eval("3 < i"), IsFalse());
  // A constant on the left: the operator is mirrored, equality included.
  EXPECT_THAT(Eval("2 <= i"), IsTrue());
  EXPECT_THAT(Eval("2 >= i"), IsTrue());
  EXPECT_THAT(Eval("2 < i"), IsFalse());
  EXPECT_THAT(Eval("2 > i"), IsFalse());
  EXPECT_THAT(Eval("3 <= i"), IsFalse());
  EXPECT_THAT(Eval("1 >= i"), IsFalse());
  EXPECT_THAT(Eval("\"b\" <= s"), IsTrue());
  EXPECT_THAT(Eval("\"c\" <= s"), IsFalse());
  EXPECT_THAT(Eval("big > 9007199254740992.0"), IsTrue());  // exact
  EXPECT_THAT(Eval("s > \"a\""), IsTrue());
  EXPECT_THAT(Eval("s < \"ba\""), IsTrue());
  EXPECT_THAT(Eval("\"B\" < \"a\""), IsTrue());        // bytewise
  EXPECT_THAT(Eval("\"\\u00e9\" > \"z\""), IsTrue());  // bytes, unsigned
  EXPECT_THAT(Eval("s >= \"b\""), IsTrue());
  EXPECT_THAT(Eval("s <= \"b\""), IsTrue());
  EXPECT_THAT(Eval("s < i"), IsTypeError());
  EXPECT_THAT(Eval("i < s"), IsTypeError());
  EXPECT_THAT(Eval("b < i"), IsTypeError());
  EXPECT_THAT(Eval("z < i"), IsTypeError());
  EXPECT_THAT(Eval("b < b"), IsTypeError());
  EXPECT_THAT(Eval("m < 1"), IsMissing());
  EXPECT_THAT(Eval("m < s"), IsMissing());
  EXPECT_THAT(Eval("b < m"), IsMissing());  // missing before kinds
  // A type error in either operand wins over a missing one.
  EXPECT_THAT(Eval("m < -s"), IsTypeError());
  EXPECT_THAT(Eval("-s < m"), IsTypeError());
  EXPECT_THAT(Eval("m == -s"), IsTypeError());
  EXPECT_THAT(Eval("m.startsWith(-s ?? s)"), IsTypeError());
}

TEST_F(ExprTest, NanIsUnordered) {
  Set("x", Value::Double(std::numeric_limits<double>::quiet_NaN()));
  EXPECT_THAT(Eval("x < 1"), IsFalse());
  EXPECT_THAT(Eval("x >= 1"), IsFalse());
  EXPECT_THAT(Eval("x == x"), IsFalse());
  EXPECT_THAT(Eval("x != x"), IsTrue());
}

// --- arithmetic -------------------------------------------------------------

TEST_F(ExprTest, AdditionAndSubtraction) {
  Set("i", Value::Int(7));
  Set("d", Value::Double(0.5));
  Set("s", Value::String("x"));
  Set("max", Value::Int(kMax));
  Set("min", Value::Int(kMin));
  EXPECT_THAT(Eval("i + 1"), Is(Value::Int(8)));
  EXPECT_THAT(Eval("i - 10"), Is(Value::Int(-3)));
  EXPECT_THAT(Eval("i + d"), Is(Value::Double(7.5)));
  EXPECT_THAT(Eval("i - 1.0"), Is(Value::Double(6.0)));
  EXPECT_THAT(Eval("d + d"), Is(Value::Double(1.0)));
  EXPECT_THAT(Eval("max + 1"), IsTypeError());
  EXPECT_THAT(Eval("min - 1"), IsTypeError());
  EXPECT_THAT(Eval("max - 1"), Is(Value::Int(kMax - 1)));
  EXPECT_THAT(Eval("min + max"), Is(Value::Int(-1)));
  EXPECT_THAT(Eval("0 - min"), IsTypeError());
  EXPECT_THAT(Eval("max + 1.0"), Is(Value::Double(9223372036854775808.0)));
  EXPECT_THAT(Eval("s + 1"), IsTypeError());
  EXPECT_THAT(Eval("1 + s"), IsTypeError());
  EXPECT_THAT(Eval("m + 1"), IsMissing());
  EXPECT_THAT(Eval("s + m"), IsMissing());
  EXPECT_THAT(Eval("i + i + i - i"), Is(Value::Int(14)));
}

// A chain is the left-nested binary operators: a type error in an earlier
// step wins over a later missing operand, a later missing one does not.
TEST_F(ExprTest, AdditiveChainPropagation) {
  Set("s", Value::String("x"));
  Set("i", Value::Int(1));
  Set("max", Value::Int(kMax));
  EXPECT_THAT(Eval("s + i + m"), IsTypeError());  // (s + i) is an error
  EXPECT_THAT(Eval("s + m + i"), IsMissing());    // (s + m) is missing
  EXPECT_THAT(Eval("m + s + i"), IsMissing());
  EXPECT_THAT(Eval("max + i - i"), IsTypeError());  // overflow in step one
  EXPECT_THAT(Eval("max - i + i"), Is(Value::Int(kMax)));
}

TEST_F(ExprTest, UnaryMinus) {
  Set("i", Value::Int(5));
  Set("d", Value::Double(2.5));
  Set("s", Value::String("x"));
  Set("min", Value::Int(kMin));
  EXPECT_THAT(Eval("-i"), Is(Value::Int(-5)));
  EXPECT_THAT(Eval("--i"), Is(Value::Int(5)));
  EXPECT_THAT(Eval("-d"), Is(Value::Double(-2.5)));
  EXPECT_THAT(Eval("-s"), IsTypeError());
  EXPECT_THAT(Eval("-min"), IsTypeError());
  EXPECT_THAT(Eval("-m"), IsMissing());
  EXPECT_THAT(Eval("1 - -1"), Is(Value::Int(2)));
}

// --- in, ??, has
// --------------------------------------------------------------

TEST_F(ExprTest, InList) {
  Set("r", Value::String("leader"));
  Set("i", Value::Int(2));
  Set("other", Value::String("leader"));
  Set("s", Value::String("x"));
  EXPECT_THAT(Eval(R"(r in ["follower", "leader"])"), IsTrue());
  EXPECT_THAT(Eval(R"(r in ["follower", "candidate"])"), IsFalse());
  EXPECT_THAT(Eval("r in []"), IsFalse());
  EXPECT_THAT(Eval("i in [1, 2.0, 3]"), IsTrue());
  EXPECT_THAT(Eval("i in [\"2\"]"), IsFalse());
  EXPECT_THAT(Eval("m in [1, 2]"), IsMissing());
  EXPECT_THAT(Eval("m in []"), IsMissing());
  // Non-literal elements: a missing element just does not match.
  EXPECT_THAT(Eval("r in [nope, other]"), IsTrue());
  EXPECT_THAT(Eval("r in [nope]"), IsFalse());
  EXPECT_THAT(Eval("r in [i + 1, other]"), IsTrue());
  // A type error in an element, unless another element matches.
  EXPECT_THAT(Eval("r in [s + 1]"), IsTypeError());
  EXPECT_THAT(Eval("r in [s + 1, other]"), IsTrue());
  EXPECT_THAT(Eval("m in [s + 1]"), IsTypeError());
  EXPECT_THAT(Eval("(s + 1) in [1]"), IsTypeError());
  EXPECT_THAT(Eval("null in [1, null]"), IsTrue());
}

TEST_F(ExprTest, Coalesce) {
  Set("a", Value::Int(1));
  Set("z", Value::Null());
  Set("s", Value::String("x"));
  EXPECT_THAT(Eval("a ?? 2"), Is(Value::Int(1)));
  EXPECT_THAT(Eval("m ?? 2"), Is(Value::Int(2)));
  EXPECT_THAT(Eval("m ?? n ?? s"), Is(Value::String("x")));
  EXPECT_THAT(Eval("m ?? n"), IsMissing());
  EXPECT_THAT(Eval("z ?? 2"), Is(Value::Null()));  // null is present
  EXPECT_THAT(Eval("(s + 1) ?? 2"), IsTypeError());
  EXPECT_THAT(Eval("a ?? s + 1"), Is(Value::Int(1)));  // not evaluated
  EXPECT_THAT(Eval("(m ?? a) + 1"), Is(Value::Int(2)));
}

TEST_F(ExprTest, Has) {
  Set("a.b", Value::Int(0));
  Set("z", Value::Null());
  Set("f", Value::Bool(false));
  EXPECT_THAT(Eval("has(a.b)"), IsTrue());
  EXPECT_THAT(Eval("has(z)"), IsTrue());
  EXPECT_THAT(Eval("has(f)"), IsTrue());
  EXPECT_THAT(Eval("has(a.c)"), IsFalse());
  EXPECT_THAT(Eval("!has(a.c)"), IsTrue());
  EXPECT_THAT(Eval("has((a.b))"), IsTrue());
  EXPECT_THAT(Eval(R"(has(x["y z"]))"), IsFalse());
}

// --- string functions
// ---------------------------------------------------------

TEST_F(ExprTest, StringFunctionsBothForms) {
  Set("s", Value::String("StateLeader"));
  Set("p", Value::String("State"));
  Set("i", Value::Int(1));
  EXPECT_THAT(Eval(R"(s.startsWith("State"))"), IsTrue());
  EXPECT_THAT(Eval(R"(startsWith(s, "State"))"), IsTrue());
  EXPECT_THAT(Eval(R"(s.startsWith("Leader"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.endsWith("Leader"))"), IsTrue());
  EXPECT_THAT(Eval(R"(endsWith(s, "State"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.endsWith("r"))"), IsTrue());
  EXPECT_THAT(Eval(R"(s.endsWith("S"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.startsWith("t"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.endsWith("xStateLeader"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.startsWith("StateLeaderx"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.contains("teLe"))"), IsTrue());
  EXPECT_THAT(Eval(R"(contains(s, "x"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.contains(""))"), IsTrue());
  EXPECT_THAT(Eval("s.startsWith(p)"), IsTrue());
  EXPECT_THAT(Eval("p.startsWith(s)"), IsFalse());
  EXPECT_THAT(Eval(R"("abc".startsWith("ab"))"), IsTrue());
  EXPECT_THAT(Eval(R"(("a" ?? s).endsWith("a"))"), IsTrue());
  EXPECT_THAT(Eval(R"(s.startsWith("S") && s.endsWith("r"))"), IsTrue());
}

TEST_F(ExprTest, StringFunctionsMissingAndTypeErrors) {
  Set("s", Value::String("abc"));
  Set("i", Value::Int(1));
  Set("j", Value::Json("[1]"));
  EXPECT_THAT(Eval(R"(m.startsWith("a"))"), IsMissing());
  EXPECT_THAT(Eval("s.startsWith(m)"), IsMissing());
  EXPECT_THAT(Eval("contains(m, m)"), IsMissing());
  EXPECT_THAT(Eval(R"(i.startsWith("a"))"), IsTypeError());
  EXPECT_THAT(Eval(R"(j.contains("1"))"), IsTypeError());
  EXPECT_THAT(Eval("s.endsWith(i)"), IsTypeError());
  EXPECT_THAT(Eval("i.endsWith(m)"), IsMissing());
  EXPECT_THAT(Eval(R"(i.matches("a"))"), IsTypeError());
  EXPECT_THAT(Eval(R"(m.matches("a"))"), IsMissing());
}

TEST_F(ExprTest, MatchesIsUnanchoredRe2) {
  Set("v", Value::String("v1.22.3"));
  EXPECT_THAT(Eval(R"(v.matches("[0-9]+\\.[0-9]+"))"), IsTrue());
  EXPECT_THAT(Eval(R"(v.matches("^v[0-9.]+$"))"), IsTrue());
  EXPECT_THAT(Eval(R"(v.matches("^1"))"), IsFalse());
  EXPECT_THAT(Eval(R"(matches(v, "22"))"), IsTrue());
  EXPECT_THAT(Eval(R"(matches(v, "(?i)V1"))"), IsTrue());
  EXPECT_THAT(Eval(R"(v.matches(""))"), IsTrue());
  EXPECT_THAT(Eval(R"("x".matches("^x$"))"), IsTrue());
}

// --- precedence and associativity
// ----------------------------------------------

TEST_F(ExprTest, AndBindsTighterThanOr) {
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  // t || (f && f) is true; (t || f) && f would be false.
  EXPECT_THAT(Eval("t || f && f"), IsTrue());
  // (f && f) || t
  EXPECT_THAT(Eval("f && f || t"), IsTrue());
  EXPECT_THAT(Eval("(t || f) && f"), IsFalse());
}

TEST_F(ExprTest, CoalesceIsLowest) {
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  // m ?? (f || t): true. (m ?? f) || t would be true too, so use &&:
  // m ?? (t && f) is false, (m ?? t) && f is false; distinguish with m first
  // on the right: t ?? (m && f) is true, (t ?? m) && f is false.
  EXPECT_THAT(Eval("t ?? m && f"), IsTrue());
  EXPECT_THAT(Eval("(t ?? m) && f"), IsFalse());
  EXPECT_THAT(Eval("m ?? 1 + 2"), Is(Value::Int(3)));
  EXPECT_THAT(Eval("1 ?? 2 == 2"), Is(Value::Int(1)));
}

TEST_F(ExprTest, NotBindsLooserThanComparison) {
  Set("a", Value::Int(1));
  Set("t", Value::Bool(true));
  Set("f", Value::Bool(false));
  // !(a == 1); (!a) would be a type error.
  EXPECT_THAT(Eval("!a == 1"), IsFalse());
  EXPECT_THAT(Eval("!a == 2"), IsTrue());
  // (!t) && f, not !(t && f).
  EXPECT_THAT(Eval("!t && f"), IsFalse());
  EXPECT_THAT(Eval("!(t && f)"), IsTrue());
  EXPECT_THAT(Eval("!f || f"), IsTrue());
}

TEST_F(ExprTest, ArithmeticPrecedenceAndAssociativity) {
  Set("a", Value::Int(1));
  EXPECT_THAT(Eval("1 + 2 - 3 - 4"), Is(Value::Int(-4)));  // left to right
  EXPECT_THAT(Eval("10 - 3 - 2"), Is(Value::Int(5)));
  EXPECT_THAT(Eval("10 - (3 - 2)"), Is(Value::Int(9)));
  EXPECT_THAT(Eval("-a + 3"), Is(Value::Int(2)));  // (-a) + 3
  EXPECT_THAT(Eval("-(a + 3)"), Is(Value::Int(-4)));
  EXPECT_THAT(Eval("a + 1 == 2"), IsTrue());
  EXPECT_THAT(Eval("2 == a + 1"), IsTrue());
  EXPECT_THAT(Eval("a + 1 < a + 2"), IsTrue());
  EXPECT_THAT(Eval("a - 1 in [0]"), IsTrue());
  EXPECT_THAT(Eval("a == 1 && a + 1 == 2 || false"), IsTrue());
  EXPECT_THAT(Eval("(a == 1) == true"), IsTrue());
}

TEST_F(ExprTest, MethodBindsTighterThanUnary) {
  Set("s", Value::String("ab"));
  EXPECT_THAT(Eval(R"(!s.startsWith("a"))"), IsFalse());
  EXPECT_THAT(Eval(R"(s.startsWith("a") == true)"), IsTrue());
  EXPECT_THAT(Error(R"(s.startsWith("a").contains("x"))"),
              Err(0, "'contains' takes strings, got a boolean"));
}

// --- compile errors: offsets and messages
// -----------------------------------------

TEST_F(ExprTest, UnknownFunctionsSuggestTheRightOne) {
  EXPECT_THAT(Error("a.foo(1)"), Err(2, "unknown method 'foo'"));
  EXPECT_THAT(
      Error(R"(a.startswith("x"))"),
      Err(2, "unknown method 'startswith'; did you mean 'startsWith'?"));
  EXPECT_THAT(Error(R"(startswith(a, "x"))"),
              Err(0,
                  "unknown function 'startswith'; did you mean "
                  "'startsWith'?"));
  EXPECT_THAT(Error(R"(x && a.startWith("x"))"),
              Err(7, "did you mean 'startsWith'?"));
  EXPECT_THAT(Error(R"(a.endswith("x"))"), Err(2, "did you mean 'endsWith'?"));
  EXPECT_THAT(Error(R"(a.includes("x"))"), Err(2, "did you mean 'contains'?"));
  EXPECT_THAT(Error("exists(a)"), Err(0, "did you mean 'has'?"));
  EXPECT_THAT(Error(R"(a.match("x"))"), Err(2, "did you mean 'matches'?"));
  EXPECT_THAT(Error("size(a)"),
              Err(0,
                  "unknown function 'size'; the functions are has, "
                  "startsWith, endsWith, contains and matches"));
  EXPECT_THAT(Error("a.size()"),
              Err(2,
                  "unknown method 'size'; the methods are startsWith, "
                  "endsWith, contains and matches"));
}

TEST_F(ExprTest, ArityErrorsPointAtTheName) {
  EXPECT_THAT(Error("startsWith(a)"),
              Err(0, "'startsWith' takes 2 arguments, got 1"));
  EXPECT_THAT(Error(R"(x || contains(a, "b", "c"))"),
              Err(5, "'contains' takes 2 arguments, got 3"));
  EXPECT_THAT(Error("a.endsWith()"),
              Err(2,
                  "'endsWith' takes 1 argument when called as a method, "
                  "got 0"));
  EXPECT_THAT(Error(R"(a.matches("x", "y"))"),
              Err(2,
                  "'matches' takes 1 argument when called as a method, "
                  "got 2"));
  EXPECT_THAT(Error("has()"), Err(0, "'has' takes 1 argument, got 0"));
  EXPECT_THAT(Error("has(a, b)"), Err(0, "'has' takes 1 argument, got 2"));
}

TEST_F(ExprTest, HasTakesAPath) {
  EXPECT_THAT(Error("has(1)"), Err(4, "'has' takes a field path"));
  EXPECT_THAT(Error("has(a == 1)"), Err(4, "'has' takes a field path"));
  EXPECT_THAT(Error("has(a ?? b)"), Err(4, "'has' takes a field path"));
  EXPECT_THAT(Error("a.has(b)"), Err(2, "'has' is not a method"));
  EXPECT_THAT(Error("has"), Err(0, "'has' is a function: write has(path)"));
  EXPECT_THAT(Error("has.x == 1"), Err(0, "'has' is a function"));
}

TEST_F(ExprTest, OperandTypeErrors) {
  EXPECT_THAT(Error(R"("a" < 1)"),
              Err(4, "'<' cannot compare a string with a number"));
  EXPECT_THAT(Error(R"(1 >= "a")"),
              Err(2, "'>=' cannot compare a number with a string"));
  EXPECT_THAT(Error("a < true"),
              Err(4, "'<' takes numbers or strings, got a boolean"));
  EXPECT_THAT(Error("null > a"),
              Err(0, "'>' takes numbers or strings, got null"));
  EXPECT_THAT(Error("!3"), Err(1, "'!' takes a boolean, got a number"));
  EXPECT_THAT(Error("!\"x\""), Err(1, "'!' takes a boolean, got a string"));
  EXPECT_THAT(Error("!(a + 1)"), Err(1, "'!' takes a boolean, got a number"));
  EXPECT_THAT(Error(R"(1 + "x")"), Err(4, "'+' takes numbers, got a string"));
  EXPECT_THAT(Error(R"(a - 1 - "x")"), Err(8, "'-' takes numbers, got"));
  EXPECT_THAT(Error(R"(true + a)"), Err(0, "'+' takes numbers, got a boolean"));
  EXPECT_THAT(Error(R"(-"x")"),
              Err(1, "unary '-' takes a number, got a string"));
  EXPECT_THAT(Error(R"(a && "x")"),
              Err(5, "'&&' takes booleans, got a string"));
  EXPECT_THAT(Error(R"(1 || a)"), Err(0, "'||' takes booleans, got a number"));
  EXPECT_THAT(Error("a && (b + 1)"), Err(5, "'&&' takes booleans"));
  EXPECT_THAT(Error(R"(a.startsWith(1))"),
              Err(13, "'startsWith' takes strings, got a number"));
  EXPECT_THAT(Error(R"((a + 1).contains("x"))"),
              Err(0, "'contains' takes strings, got a number"));
  EXPECT_THAT(Error(R"(endsWith(true, a))"),
              Err(9, "'endsWith' takes strings, got a boolean"));
  EXPECT_THAT(Error(R"(1.matches("x"))"),
              Err(0, "'matches' takes strings, got a number"));
  // Equality never has type errors.
  EXPECT_NE(Compile(R"("a" == 1 || null != true)"), nullptr);
}

TEST_F(ExprTest, FoldedConstantsAreTypedByValue) {
  // (null ?? 1) is the constant null.
  EXPECT_THAT(Error("a + (null ?? 1)"), Err(4, "'+' takes numbers, got null"));
  EXPECT_NE(Compile("a + (m ?? 1)"), nullptr);
}

TEST_F(ExprTest, MatchesPatternMustBeAValidLiteral) {
  EXPECT_THAT(Error(R"(x.matches("(a"))"),
              Err(10, "invalid regular expression: missing )"));
  EXPECT_THAT(Error(R"(matches(x, "a**"))"),
              Err(11, "invalid regular expression: bad repetition operator"));
  EXPECT_THAT(Error(R"re(x.matches("(?<n>a)"))re"),
              Err(10, "invalid regular expression"));
  EXPECT_THAT(Error("x.matches(y)"),
              Err(10, "the pattern of 'matches' must be a string literal"));
  EXPECT_THAT(Error(R"(x.matches("a" ?? y))"),
              Err(10, "must be a string literal"));
  EXPECT_NE(Compile(R"(x.matches(("a+")))"), nullptr);
}

TEST_F(ExprTest, NumberLiteralErrors) {
  EXPECT_THAT(Error("9223372036854775808"),
              Err(0, "integer 9223372036854775808 is out of range for int64"));
  EXPECT_THAT(Error("a == -(9223372036854775808)"),
              Err(7, "out of range for int64"));
  EXPECT_THAT(Error("a == 99999999999999999999"),
              Err(5, "integer 99999999999999999999 is out of range"));
  EXPECT_THAT(Error("1e999"), Err(0, "out of range for a double"));
  EXPECT_THAT(Error("a == 1abc"), Err(5, "invalid number '1abc'"));
  EXPECT_THAT(Error("0x1F"), Err(0, "invalid number '0x1F'"));
  EXPECT_THAT(Error("1e"), Err(0, "invalid number '1e'"));
}

TEST_F(ExprTest, ConstantOverflowIsACompileError) {
  EXPECT_THAT(Error("a > 9223372036854775807 + 1"),
              Err(24, "integer overflow in this constant expression"));
  EXPECT_THAT(Error("1 + 2 + -9223372036854775808 - 4"),
              Err(29, "integer overflow"));
  EXPECT_THAT(Error("-(-9223372036854775808)"),
              Err(0, "integer overflow in this constant expression"));
  EXPECT_NE(Compile("9223372036854775807 + 1.0 > a"), nullptr);
}

TEST_F(ExprTest, StringLiteralErrors) {
  EXPECT_THAT(Error(R"(a == "abc)"), Err(5, "unterminated string"));
  EXPECT_THAT(Error(R"(a == 'abc)"), Err(5, "unterminated string"));
  EXPECT_THAT(Error(R"("abc\)"), Err(0, "unterminated string"));
  EXPECT_THAT(Error(R"("a\qb")"), Err(2, "invalid escape '\\q' in string"));
  EXPECT_THAT(Error(R"("a\/")"), Err(2, "invalid escape '\\/'"));
  EXPECT_THAT(Error("\"a\tb\""),
              Err(2,
                  "control character 0x09 in string; write it as an "
                  "escape"));
  EXPECT_THAT(Error("\"a\nb\""), Err(2, "control character 0x0a"));
  EXPECT_THAT(Error(R"("\u12")"), Err(1, "'\\u' must be followed by"));
  EXPECT_THAT(Error(R"("\uXYZW")"), Err(1, "'\\u' must be followed by"));
  EXPECT_THAT(Error(R"("x\ud800")"), Err(2, "high surrogate"));
  EXPECT_THAT(Error(R"("\ud800\u0041")"), Err(1, "high surrogate"));
  EXPECT_THAT(Error(R"("\udc00")"), Err(1, "lone low surrogate"));
  // Several bad escapes in one string are all reported.
  EXPECT_THAT(Errors(R"("\q\w")"),
              ElementsAre(Err(1, "'\\q'"), Err(3, "'\\w'")));
}

TEST_F(ExprTest, BadCharactersSuggestOperators) {
  EXPECT_THAT(Error("a = 1"), Err(2, "unexpected '='; use '==' to compare"));
  EXPECT_THAT(Error("a & b"), Err(2, "did you mean '&&'?"));
  EXPECT_THAT(Error("a | b"), Err(2, "did you mean '||'?"));
  EXPECT_THAT(
      Errors("a ? b : c"),
      ElementsAre(Err(2, "no conditional operator"), Err(6, "unexpected ':'")));
  EXPECT_THAT(Error("a # b"), Err(2, "unexpected '#'"));
  EXPECT_THAT(Error("a * 2"), Err(2, "unexpected '*'"));
  EXPECT_THAT(Error("a ### b"), Err(2, "unexpected '#'"));  // one error
  EXPECT_THAT(Error("\xc3\xa9t\xc3\xa9 == 1"),
              Err(0,
                  "non-ASCII byte 0xc3; a field name with such characters "
                  "must be quoted"));
  EXPECT_THAT(Error(std::string_view("a == \x01", 6)),
              Err(5, "control character 0x01"));
}

TEST_F(ExprTest, SyntaxErrors) {
  EXPECT_THAT(Error(""), Err(0, "empty expression"));
  EXPECT_THAT(Error("  \n "), Err(0, "empty expression"));
  EXPECT_THAT(Error("a +"),
              Err(3, "expected an operand after '+', got end of expression"));
  EXPECT_THAT(Error("a == )"),
              Err(5, "expected an operand after '==', got ')'"));
  EXPECT_THAT(Error("(a"),
              Err(2,
                  "expected ')' to close the '(' at offset 0, got end of "
                  "expression"));
  EXPECT_THAT(Error("a)"), Err(1, "unexpected ')' after the end"));
  EXPECT_THAT(Error("a b"), Err(2,
                                "unexpected 'b' after the end of the "
                                "expression; is an operator missing?"));
  EXPECT_THAT(Error("a and b"), Err(2, "unexpected 'and'"));
  EXPECT_THAT(Error("a and b"), Err(2, "use '&&'"));
  EXPECT_THAT(Error("a or b"), Err(2, "use '||'"));
  EXPECT_THAT(Error("not a"), Err(0, "use '!' for negation"));
  EXPECT_THAT(Error("a < b < c"), Err(6, "comparisons do not chain"));
  EXPECT_THAT(Error("a == b == c"), Err(7, "comparisons do not chain"));
  EXPECT_THAT(Error("a in [1] == true"), Err(9, "comparisons do not chain"));
  EXPECT_THAT(Error("(a < b < c)"), Err(7, "comparisons do not chain"));
  EXPECT_THAT(Error("a in b"), Err(5, "expected '[' after 'in'"));
  EXPECT_THAT(Error("a in [1, 2"), Err(10, "expected ',' or ']'"));
  EXPECT_THAT(Error("a in [1,]"), Err(8, "expected an operand after ','"));
  EXPECT_THAT(Error("[1, 2]"), Err(0, "a list is only allowed after 'in'"));
  EXPECT_THAT(Error("a[0]"), Err(2, "write .0 instead of [0]"));
  EXPECT_THAT(Error("a[b]"), Err(2, "expected a quoted field name after '['"));
  EXPECT_THAT(Error(R"(a["b")"), Err(5, "expected ']'"));
  EXPECT_THAT(Error("a."), Err(2, "expected a field name after '.'"));
  EXPECT_THAT(Error("a.(b)"), Err(2, "expected a field name after '.'"));
  EXPECT_THAT(Error("(a).b"), Err(4, "expected a method call such as"));
  EXPECT_THAT(Error("(a)."), Err(4, "expected a method name after '.'"));
  EXPECT_THAT(Error("a == !b"), Err(5, "'!' binds looser than comparisons"));
  EXPECT_THAT(Error("a.startsWith(\"x\" \"y\")"),
              Err(17, "expected ',' or ')', got a string"));
  EXPECT_THAT(Error("()"), Err(1, "expected an operand after '(', got ')'"));
  EXPECT_THAT(Error("a &&"), Err(4, "expected an operand after '&&'"));
}

// --- all errors in one pass
// ---------------------------------------------------

TEST_F(ExprTest, ReportsAllIndependentErrors) {
  //            0         1         2         3         4
  //            0123456789012345678901234567890123456789012345678
  EXPECT_THAT(
      Errors(R"(foo(a) && b.bar() && "x" < 1 && !3 && c + "y" > 0)"),
      ElementsAre(Err(0, "unknown function 'foo'"),
                  Err(12, "unknown method 'bar'"),
                  Err(25, "'<' cannot compare"), Err(33, "'!' takes a boolean"),
                  Err(42, "'+' takes numbers")));
}

TEST_F(ExprTest, ReportsErrorsInsideBadCalls) {
  EXPECT_THAT(Errors(R"(frob(1 + "x", a.bar()))"),
              ElementsAre(Err(0, "unknown function 'frob'"),
                          Err(9, "'+' takes numbers"),
                          Err(16, "unknown method 'bar'")));
  EXPECT_THAT(Errors("startsWith(!1)"),
              ElementsAre(Err(0, "takes 2 arguments"), Err(12, "'!' takes")));
}

TEST_F(ExprTest, LexicalAndCheckErrorsTogether) {
  EXPECT_THAT(
      Errors(R"(startsWith(a, "\q") && b.frob())"),
      ElementsAre(Err(15, "invalid escape"), Err(25, "unknown method 'frob'")));
}

TEST_F(ExprTest, RecoversFromSyntaxErrorsAtCommas) {
  // One syntax error per argument, and the check errors elsewhere.
  EXPECT_THAT(Errors(R"(contains(a +, b c) || x.nope() || y in [1 +, "z" 2])"),
              ElementsAre(Err(12, "expected an operand after '+', got ','"),
                          Err(16, "expected ',' or ')', got 'c'"),
                          Err(24, "unknown method 'nope'"),
                          Err(43, "expected an operand after '+', got ','"),
                          Err(49, "expected ',' or ']', got number 2")));
}

TEST_F(ExprTest, OneSyntaxErrorDoesNotCascade) {
  EXPECT_THAT(Errors("(a + (b * c)) - d"), SizeIs(1));
  EXPECT_THAT(Errors("a == == b"), SizeIs(1));
  EXPECT_THAT(Errors("\"abc"), SizeIs(1));
  EXPECT_THAT(Errors("a.startsWith(\"x) && b"), SizeIs(1));
}

TEST_F(ExprTest, ErrorsAreSortedByOffset) {
  std::vector<ExprError> errors = Errors("a.x() && b.y() && c.z()");
  ASSERT_THAT(errors, SizeIs(3));
  EXPECT_LT(errors[0].offset, errors[1].offset);
  EXPECT_LT(errors[1].offset, errors[2].offset);
}

// --- limits
// ----------------------------------------------------------------------

std::string Nested(std::string_view open, std::string_view inner,
                   std::string_view close, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.append(open);
  s.append(inner);
  for (int i = 0; i < n; ++i) s.append(close);
  return s;
}

TEST_F(ExprTest, ParenthesesUpToTheDepthLimit) {
  Set("a", Value::Int(3));
  EXPECT_THAT(Eval(Nested("(", "a", ")", kMaxExprDepth)), Is(Value::Int(3)));
  EXPECT_THAT(Error(Nested("(", "a", ")", kMaxExprDepth + 1)),
              Err(kMaxExprDepth, "expression nests more than 64 levels deep"));
}

TEST_F(ExprTest, UnaryOperatorsCountAsLevels) {
  EXPECT_THAT(Eval(Nested("!", "true", "", kMaxExprDepth)), IsTrue());
  EXPECT_THAT(Error(Nested("!", "true", "", kMaxExprDepth + 1)),
              Err(kMaxExprDepth, "nests more than 64 levels"));
  EXPECT_THAT(Eval(Nested("-", "(1)", "", kMaxExprDepth - 1)),
              Is(Value::Int(-1)));
  EXPECT_THAT(Error(Nested("-", "(1)", "", kMaxExprDepth + 1)),
              Err(kMaxExprDepth, "nests more than 64 levels"));
}

TEST_F(ExprTest, OperatorsAndCallsCountAsLevels) {
  Set("a", Value::Bool(true));
  // Each "(a && ...)" is two levels: the parenthesis and the operator.
  const int n = kMaxExprDepth / 2;
  EXPECT_THAT(Eval(Nested("(a && ", "a", ")", n)), IsTrue());
  const std::string deep = Nested("(a && ", "a", ")", n + 1);
  // Reported at the outermost operator, where the count passes the limit.
  EXPECT_THAT(Error(deep), Err(3, "nests more than 64"));
  // Calls: contains(contains(...)) is not well typed; use 'in' lists.
  EXPECT_THAT(Eval(Nested("a in [", "a", "]", kMaxExprDepth)), IsTrue());
  EXPECT_THAT(Error(Nested("a in [", "a", "]", kMaxExprDepth + 1)),
              Err(kMaxExprDepth * 6 + 5, "nests more than 64"));
  const std::string calls = Nested("startsWith(\"a\", ", "\"a\"", ")", 70);
  EXPECT_THAT(Errors(calls),
              ::testing::Contains(Err(64 * 16 + 10, "nests more than 64")));
}

TEST_F(ExprTest, DeepNestingIsACleanErrorNotACrash) {
  EXPECT_THAT(Error(Nested("(", "a", ")", 2000)),
              Err(kMaxExprDepth, "nests more than 64 levels"));
  EXPECT_THAT(Error(Nested("!", "a", "", 4000)), Err(kMaxExprDepth, "nests"));
  EXPECT_THAT(Error(Nested("-", "a", "", 4000)), Err(kMaxExprDepth, "nests"));
  EXPECT_THAT(Error(Nested("a.contains(", "a", ")", 300)),
              Err(kMaxExprDepth * 11 + 10, "nests"));
  EXPECT_THAT(Error(Nested("(", "", "", 4000)), Err(kMaxExprDepth, "nests"));
  // Over the length limit, the length is the one error.
  EXPECT_THAT(Error(Nested("(", "a", ")", 10000)),
              Err(kMaxExprBytes,
                  "expression is 20001 bytes long; the limit "
                  "is 4096 bytes"));
}

TEST_F(ExprTest, LengthLimit) {
  std::string ok = "a == \"";
  ok.append(kMaxExprBytes - ok.size() - 1, 'x');
  ok.push_back('"');
  ASSERT_EQ(ok.size(), kMaxExprBytes);
  EXPECT_NE(Compile(ok), nullptr);
  EXPECT_THAT(Error(ok + " "),
              Err(kMaxExprBytes, "expression is 4097 bytes long"));
}

TEST_F(ExprTest, LongChainsAreOneLevel) {
  Set("a", Value::Int(1));
  Set("b", Value::Bool(false));
  std::string sum = "a";
  while (sum.size() + 4 < kMaxExprBytes) sum.append(" + a");
  const int64_t terms = static_cast<int64_t>((sum.size() - 1) / 4 + 1);
  EXPECT_THAT(Eval(sum), Is(Value::Int(terms)));
  std::string ors = "b";
  while (ors.size() + 5 < kMaxExprBytes) ors.append(" || b");
  EXPECT_THAT(Eval(ors), IsFalse());
  std::string list = "a in [0";
  while (list.size() + 4 < kMaxExprBytes) list.append(", 0");
  list.append("]");
  EXPECT_THAT(Eval(list), IsFalse());
}

// --- evaluation properties
// ------------------------------------------------------------

TEST_F(ExprTest, EvalReturnsViewsIntoTheEvent) {
  std::string storage = "payload";
  std::unique_ptr<Expr> e = Compile("m ?? s");
  Set("s", Value::String(storage));
  const Event event = MakeEvent();
  const EvalResult r = e->Eval(event);
  ASSERT_THAT(r, Is(Value::String("payload")));
  EXPECT_EQ(r.value.str().data(), storage.data());
}

TEST_F(ExprTest, ConstantStringsOutliveCompileInput) {
  std::string text = R"(m ?? ("con" ?? "x"))";
  std::unique_ptr<Expr> e = Compile(text);
  text.assign(text.size(), '#');
  EXPECT_THAT(e->Eval(MakeEvent()), Is(Value::String("con")));
}

TEST_F(ExprTest, ConcurrentEvaluation) {
  std::unique_ptr<Expr> e =
      Compile(R"(a.matches("^x+y$") && b in [1, 2, 3] || a.contains("q"))");
  Set("a", Value::String("xxxy"));
  Set("b", Value::Int(2));
  const Event event = MakeEvent();
  std::vector<std::thread> threads;
  std::vector<int> hits(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const EvalResult r = e->Eval(event);
        if (r.status == EvalStatus::kOk && r.value.bool_value()) ++hits[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(hits, ElementsAre(2000, 2000, 2000, 2000));
}

}  // namespace
}  // namespace invariantd
