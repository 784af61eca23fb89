// Property tests of the expression language.
//
// Differential: random expression trees over a few fields are rendered to
// text twice (fully parenthesized, and with the fewest parentheses the
// precedence rules allow), compiled, and evaluated on random events (values
// of every kind, including missing); the results must equal those of the
// deliberately simple reference evaluator below, written from the contract
// in rules/expr.h. The reference also predicts whether compilation fails
// (the static checks) and the static type.
//
// Robustness: arbitrary bytes and random token soups never crash the
// compiler; it returns an expression or at least one well-formed error.
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidcheck.h"
#include "rapidcheck/gtest.h"
#include "rules/expr.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// --- a random expression tree ------------------------------------------------

// Draws from `gen` at full size: rapidcheck scales numeric ranges with the
// test case's size, which would make most small cases a single leaf.
template <typename T>
T Pick(rc::Gen<T> gen) {
  return *rc::gen::resize(100, std::move(gen));
}

enum class K {
  kLit,
  kPath,
  kHas,
  kNot,
  kNeg,
  kAnd,
  kOr,
  kCoalesce,
  kCmp,
  kAdd,
  kSub,
  kIn,
  kStr,
  kMatches,
};
enum class Cmp { kEq, kNe, kLt, kLe, kGt, kGe };
enum class Str { kStartsWith, kEndsWith, kContains };

struct T {
  K k = K::kLit;
  Cmp cmp = Cmp::kEq;
  Str str = Str::kStartsWith;
  int pattern = 0;
  bool method = false;  // method syntax for kStr / kMatches
  Value lit;
  int field = 0;
  std::vector<std::shared_ptr<const T>> kids;
};
using TP = std::shared_ptr<const T>;

// Field paths as written in expressions (FieldPath::Parse accepts them too).
constexpr std::array<std::string_view, 5> kFields = {"a", "b", "c", "o.x",
                                                     "o[\"k.y\"]"};
using Env = std::array<Value, kFields.size()>;

const std::vector<std::string>& StringPool() {
  static const auto* pool = new std::vector<std::string>{
      "", "a", "ab", "b", "ba", "A", "\"q'\\", "\xc3\xa9", "a\nb", "xab"};
  return *pool;
}

struct Pattern {
  std::string_view re;
  bool (*match)(std::string_view);
};
const std::array<Pattern, 7> kPatterns = {{
    {"^a", [](std::string_view s) { return s.starts_with("a"); }},
    {"b$", [](std::string_view s) { return s.ends_with("b"); }},
    {"a|b",
     [](std::string_view s) {
       return s.find_first_of("ab") != std::string_view::npos;
     }},
    {"^$", [](std::string_view s) { return s.empty(); }},
    {"ab+",
     [](std::string_view s) { return s.find("ab") != std::string_view::npos; }},
    {"(?i)A",
     [](std::string_view s) {
       return s.find_first_of("aA") != std::string_view::npos;
     }},
    {"\\n",
     [](std::string_view s) { return s.find('\n') != std::string_view::npos; }},
}};

// A value of any kind; `in_event` adds missing and JSON, which literals
// cannot express.
Value DrawValue(bool in_event) {
  switch (Pick(rc::gen::inRange(0, in_event ? 9 : 7))) {
    case 0:
      return Value::Null();
    case 1:
      return Value::Bool(Pick(rc::gen::arbitrary<bool>()));
    case 2:
      return Value::Int(Pick(rc::gen::element(kMax, kMin, kMax - 1, kMin + 1,
                                              int64_t{1000000007})));
    case 3:
      return Value::Int(Pick(rc::gen::inRange<int64_t>(-3, 4)));
    case 4:
      return Value::Double(
          Pick(rc::gen::element<double>(0.5, -0.0, 0.0, 1.0, 2.0, -1.5, 1e308,
                                        -1e308, 9223372036854775808.0)));
    case 5:
    case 6: {
      const auto& pool = StringPool();
      return Value::String(
          pool[Pick(rc::gen::inRange<size_t>(0, pool.size()))]);
    }
    case 7:
      return Value::Missing();
    default:
      return Value::Json(
          Pick(rc::gen::element<std::string_view>("{\"k\":1}", "[1]")));
  }
}

// Which interior node kinds one test case draws from: a random subset, so
// that each case combines a few operators densely ("swarm testing").
std::vector<K> DrawOperatorSet() {
  static constexpr std::array<K, 12> kInterior = {
      K::kNot, K::kNeg, K::kAnd, K::kOr,  K::kCoalesce, K::kCmp,
      K::kAdd, K::kSub, K::kIn,  K::kStr, K::kMatches,  K::kCmp};
  std::vector<K> ops;
  for (K k : kInterior) {
    if (Pick(rc::gen::arbitrary<bool>())) ops.push_back(k);
  }
  if (ops.empty()) ops.push_back(Pick(rc::gen::elementOf(kInterior)));
  return ops;
}

// The static type a node of kind `k` produces (for kCoalesce: any).
ExprType Produces(K k) {
  switch (k) {
    case K::kNeg:
    case K::kAdd:
    case K::kSub:
      return ExprType::kNumber;
    case K::kCoalesce:
      return ExprType::kAny;
    default:
      return ExprType::kBool;
  }
}

Value DrawLiteral(ExprType want) {
  switch (want) {
    case ExprType::kBool:
      return Value::Bool(Pick(rc::gen::arbitrary<bool>()));
    case ExprType::kNumber:
      for (;;) {
        const Value v = DrawValue(false);
        if (v.is_number()) return v;
      }
    case ExprType::kString: {
      const auto& pool = StringPool();
      return Value::String(
          pool[Pick(rc::gen::inRange<size_t>(0, pool.size()))]);
    }
    default:
      return DrawValue(false);
  }
}

// A random tree that, mostly, statically has type `want` (kAny: any type),
// so that most trees pass the static checks and get evaluated; now and
// then it ignores `want`, to exercise the checks.
TP Draw(int depth, const std::vector<K>& ops, ExprType want) {
  auto t = std::make_shared<T>();
  if (Pick(rc::gen::inRange(0, 12)) == 0) want = ExprType::kAny;
  std::vector<K> fitting;
  for (K k : ops) {
    if (want == ExprType::kAny || Produces(k) == want || k == K::kCoalesce) {
      fitting.push_back(k);
    }
  }
  const bool leaf =
      depth <= 0 || fitting.empty() || Pick(rc::gen::inRange(0, 5)) == 0;
  if (leaf) {
    switch (Pick(rc::gen::inRange(0, 6))) {
      case 0:
      case 1:
        t->k = K::kLit;
        t->lit = DrawLiteral(want);
        break;
      case 2:
        if (want == ExprType::kBool || want == ExprType::kAny) {
          t->k = K::kHas;
          t->field = Pick(rc::gen::inRange<int>(0, kFields.size()));
          break;
        }
        [[fallthrough]];
      default:
        t->k = K::kPath;
        t->field = Pick(rc::gen::inRange<int>(0, kFields.size()));
        break;
    }
    return t;
  }
  t->k = Pick(rc::gen::elementOf(fitting));
  auto kid = [&](ExprType w) { t->kids.push_back(Draw(depth - 1, ops, w)); };
  switch (t->k) {
    case K::kNot:
      kid(ExprType::kBool);
      break;
    case K::kNeg:
      kid(ExprType::kNumber);
      break;
    case K::kAnd:
    case K::kOr:
      kid(ExprType::kBool);
      kid(ExprType::kBool);
      break;
    case K::kCoalesce:
      kid(want);
      kid(want);
      break;
    case K::kCmp: {
      t->cmp = static_cast<Cmp>(Pick(rc::gen::inRange(0, 6)));
      const ExprType w =
          t->cmp == Cmp::kEq || t->cmp == Cmp::kNe
              ? ExprType::kAny
              : Pick(rc::gen::element(ExprType::kNumber, ExprType::kString));
      kid(w);
      kid(w);
      break;
    }
    case K::kAdd:
    case K::kSub:
      kid(ExprType::kNumber);
      kid(ExprType::kNumber);
      break;
    case K::kIn: {
      const int n = Pick(rc::gen::inRange(0, 4));
      for (int i = 0; i <= n; ++i) kid(ExprType::kAny);
      break;
    }
    case K::kStr:
      t->str = static_cast<Str>(Pick(rc::gen::inRange(0, 3)));
      t->method = Pick(rc::gen::arbitrary<bool>());
      kid(ExprType::kString);
      kid(ExprType::kString);
      break;
    case K::kMatches:
      t->pattern = Pick(rc::gen::inRange<int>(0, kPatterns.size()));
      t->method = Pick(rc::gen::arbitrary<bool>());
      kid(ExprType::kString);
      break;
    default:
      break;
  }
  return t;
}

TP DrawTree() {
  const std::vector<K> ops = DrawOperatorSet();
  return Draw(Pick(rc::gen::inRange(0, 6)), ops,
              Pick(rc::gen::element(ExprType::kAny, ExprType::kBool,
                                    ExprType::kNumber)));
}

// --- rendering
// -------------------------------------------------------------------

std::string StringLiteral(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  out += "\"";
  return out;
}

std::string LitText(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kNull:
      return "null";
    case ValueKind::kBool:
      return v.bool_value() ? "true" : "false";
    case ValueKind::kInt:
      return std::to_string(v.int_value());
    case ValueKind::kDouble: {
      char buf[64];
      const auto res = std::to_chars(buf, buf + sizeof(buf), v.double_value());
      std::string s(buf, res.ptr);
      if (s.find_first_of(".e") == std::string::npos) s += ".0";
      return s;
    }
    case ValueKind::kString:
      return StringLiteral(v.str());
    default:
      return "?";
  }
}

bool NegativeLit(const Value& v) {
  return (v.is_int() && v.int_value() < 0) ||
         (v.is_double() && std::signbit(v.double_value()));
}

std::string_view CmpText(Cmp c) {
  static constexpr std::array<std::string_view, 6> kText = {"==", "!=", "<",
                                                            "<=", ">",  ">="};
  return kText[static_cast<size_t>(c)];
}
std::string_view StrName(Str s) {
  static constexpr std::array<std::string_view, 3> kText = {
      "startsWith", "endsWith", "contains"};
  return kText[static_cast<size_t>(s)];
}

std::string Call(const T& t, const std::string& a, const std::string& b) {
  const std::string name(t.k == K::kMatches ? "matches" : StrName(t.str));
  if (t.method) return absl::StrCat(a, ".", name, "(", b, ")");
  return absl::StrCat(name, "(", a, ", ", b, ")");
}

std::string PatternText(const T& t) {
  return StringLiteral(kPatterns[static_cast<size_t>(t.pattern)].re);
}

// Every operator in parentheses.
std::string Full(const T& t) {
  auto bin = [&](std::string_view op) {
    return absl::StrCat("(", Full(*t.kids[0]), " ", AV(op), " ",
                        Full(*t.kids[1]), ")");
  };
  switch (t.k) {
    case K::kLit:
      return NegativeLit(t.lit) ? absl::StrCat("(", LitText(t.lit), ")")
                                : LitText(t.lit);
    case K::kPath:
      return std::string(kFields[static_cast<size_t>(t.field)]);
    case K::kHas:
      return absl::StrCat("has(", AV(kFields[static_cast<size_t>(t.field)]),
                          ")");
    case K::kNot:
      return absl::StrCat("(!", Full(*t.kids[0]), ")");
    case K::kNeg:
      return absl::StrCat("(-", Full(*t.kids[0]), ")");
    case K::kAnd:
      return bin("&&");
    case K::kOr:
      return bin("||");
    case K::kCoalesce:
      return bin("??");
    case K::kCmp:
      return bin(CmpText(t.cmp));
    case K::kAdd:
      return bin("+");
    case K::kSub:
      return bin("-");
    case K::kIn: {
      std::string s = absl::StrCat("(", Full(*t.kids[0]), " in [");
      for (size_t i = 1; i < t.kids.size(); ++i) {
        absl::StrAppend(&s, i > 1 ? ", " : "", Full(*t.kids[i]));
      }
      return absl::StrCat(s, "])");
    }
    case K::kStr:
      return absl::StrCat("(", Call(t, Full(*t.kids[0]), Full(*t.kids[1])),
                          ")");
    case K::kMatches:
      return absl::StrCat("(", Call(t, Full(*t.kids[0]), PatternText(t)), ")");
  }
  return "?";
}

// Binding strength, loosest first (rules/expr.h grammar).
enum Prec {
  kPCoalesce = 1,
  kPOr,
  kPAnd,
  kPNot,
  kPRelation,
  kPAdditive,
  kPUnary,
  kPPostfix,
  kPPrimary,
};
struct Rendered {
  std::string text;
  int prec;
};

Rendered Min(const T& t);

// `t` rendered where an operand of at least `need` is required.
std::string Operand(const T& t, int need) {
  Rendered r = Min(t);
  return r.prec >= need ? r.text : absl::StrCat("(", r.text, ")");
}

// The fewest parentheses: left-associative chains without, a right operand
// of the same level with.
Rendered Min(const T& t) {
  auto bin = [&](std::string_view op, int prec, int left, int right) {
    return Rendered{absl::StrCat(Operand(*t.kids[0], left), " ", AV(op), " ",
                                 Operand(*t.kids[1], right)),
                    prec};
  };
  switch (t.k) {
    case K::kLit:
      return {LitText(t.lit), NegativeLit(t.lit) ? kPUnary : kPPrimary};
    case K::kPath:
    case K::kHas:
      return {Full(t), kPPrimary};
    case K::kNot:
      return {absl::StrCat("!", Operand(*t.kids[0], kPNot)), kPNot};
    case K::kNeg:
      return {absl::StrCat("-", Operand(*t.kids[0], kPUnary)), kPUnary};
    case K::kAnd:
      return bin("&&", kPAnd, kPAnd, kPNot);
    case K::kOr:
      return bin("||", kPOr, kPOr, kPAnd);
    case K::kCoalesce:
      return bin("??", kPCoalesce, kPCoalesce, kPOr);
    case K::kCmp:
      return bin(CmpText(t.cmp), kPRelation, kPAdditive, kPAdditive);
    case K::kAdd:
      return bin("+", kPAdditive, kPAdditive, kPUnary);
    case K::kSub:
      return bin("-", kPAdditive, kPAdditive, kPUnary);
    case K::kIn: {
      std::string s = absl::StrCat(Operand(*t.kids[0], kPAdditive), " in [");
      for (size_t i = 1; i < t.kids.size(); ++i) {
        absl::StrAppend(&s, i > 1 ? ", " : "", Operand(*t.kids[i], kPCoalesce));
      }
      return {absl::StrCat(s, "]"), kPRelation};
    }
    case K::kStr:
    case K::kMatches: {
      const std::string b =
          t.k == K::kMatches ? PatternText(t) : Operand(*t.kids[1], kPCoalesce);
      if (t.method) {
        return {Call(t, Operand(*t.kids[0], kPPostfix), b), kPPostfix};
      }
      return {Call(t, Operand(*t.kids[0], kPCoalesce), b), kPPrimary};
    }
  }
  return {"?", kPPrimary};
}

// --- the reference
// -----------------------------------------------------------------

struct R {
  EvalStatus s = EvalStatus::kOk;
  Value v;
};
R Ok(const Value& v) { return R{EvalStatus::kOk, v}; }
R Miss() { return R{EvalStatus::kMissing, Value()}; }
R Err() { return R{EvalStatus::kTypeError, Value()}; }
R B(bool b) { return Ok(Value::Bool(b)); }

bool IsErr(const R& r) { return r.s == EvalStatus::kTypeError; }
bool IsMiss(const R& r) { return r.s == EvalStatus::kMissing; }

R RefEval(const T& t, const Env& env);

// Binary operator on two operands: a type error in either wins, then a
// missing one, else `f` on the values.
template <typename F>
R Strict(const T& t, const Env& env, F f) {
  const R a = RefEval(*t.kids[0], env);
  const R b = RefEval(*t.kids[1], env);
  if (IsErr(a) || IsErr(b)) return Err();
  if (IsMiss(a) || IsMiss(b)) return Miss();
  return f(a.v, b.v);
}

R RefEval(const T& t, const Env& env) {
  switch (t.k) {
    case K::kLit:
      return Ok(t.lit);
    case K::kPath: {
      const Value& v = env[static_cast<size_t>(t.field)];
      return v.is_missing() ? Miss() : Ok(v);
    }
    case K::kHas:
      return B(!env[static_cast<size_t>(t.field)].is_missing());
    case K::kNot: {
      const R x = RefEval(*t.kids[0], env);
      if (x.s != EvalStatus::kOk) return x;
      return x.v.is_bool() ? B(!x.v.bool_value()) : Err();
    }
    case K::kNeg: {
      const R x = RefEval(*t.kids[0], env);
      if (x.s != EvalStatus::kOk) return x;
      if (x.v.is_int()) {
        return x.v.int_value() == kMin ? Err()
                                       : Ok(Value::Int(-x.v.int_value()));
      }
      if (x.v.is_double()) return Ok(Value::Double(-x.v.double_value()));
      return Err();
    }
    case K::kAnd:
    case K::kOr: {
      // The deciding value (false for &&, true for ||) wins, then an error
      // (a non-boolean is one), then missing.
      const bool decide = t.k == K::kOr;
      const R a = RefEval(*t.kids[0], env);
      const R b = RefEval(*t.kids[1], env);
      auto decides = [&](const R& r) {
        return r.s == EvalStatus::kOk && r.v.is_bool() &&
               r.v.bool_value() == decide;
      };
      auto error = [](const R& r) {
        return IsErr(r) || (r.s == EvalStatus::kOk && !r.v.is_bool());
      };
      if (decides(a) || decides(b)) return B(decide);
      if (error(a) || error(b)) return Err();
      if (IsMiss(a) || IsMiss(b)) return Miss();
      return B(!decide);
    }
    case K::kCoalesce: {
      const R a = RefEval(*t.kids[0], env);
      if (!IsMiss(a)) return a;
      return RefEval(*t.kids[1], env);
    }
    case K::kCmp:
      return Strict(t, env, [&](const Value& a, const Value& b) {
        if (t.cmp == Cmp::kEq) return B(a == b);
        if (t.cmp == Cmp::kNe) return B(!(a == b));
        int c;
        if (a.is_number() && b.is_number()) {
          const std::optional<int> r = Value::CompareNumbers(a, b);
          if (!r.has_value()) return B(false);
          c = *r;
        } else if (a.is_string() && b.is_string()) {
          c = a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
        } else {
          return Err();
        }
        switch (t.cmp) {
          case Cmp::kLt:
            return B(c < 0);
          case Cmp::kLe:
            return B(c <= 0);
          case Cmp::kGt:
            return B(c > 0);
          default:
            return B(c >= 0);
        }
      });
    case K::kAdd:
    case K::kSub:
      return Strict(t, env, [&](const Value& a, const Value& b) {
        if (!a.is_number() || !b.is_number()) return Err();
        const bool sub = t.k == K::kSub;
        if (a.is_int() && b.is_int()) {
          int64_t r;
          if (sub ? __builtin_sub_overflow(a.int_value(), b.int_value(), &r)
                  : __builtin_add_overflow(a.int_value(), b.int_value(), &r)) {
            return Err();
          }
          return Ok(Value::Int(r));
        }
        const double x = a.AsDouble();
        const double y = b.AsDouble();
        return Ok(Value::Double(sub ? x - y : x + y));
      });
    case K::kIn: {
      // x == e1 || x == e2 ..., except that a missing element is unequal.
      const R x = RefEval(*t.kids[0], env);
      bool match = false;
      bool error = IsErr(x);
      for (size_t i = 1; i < t.kids.size(); ++i) {
        const R e = RefEval(*t.kids[i], env);
        if (IsErr(e)) error = true;
        if (x.s == EvalStatus::kOk && e.s == EvalStatus::kOk && x.v == e.v) {
          match = true;
        }
      }
      if (IsErr(x)) return Err();
      if (match) return B(true);
      if (error) return Err();
      if (IsMiss(x)) return Miss();
      return B(false);
    }
    case K::kStr:
      return Strict(t, env, [&](const Value& a, const Value& b) {
        if (!a.is_string() || !b.is_string()) return Err();
        const std::string_view s = a.str();
        const std::string_view p = b.str();
        switch (t.str) {
          case Str::kStartsWith:
            return B(s.substr(0, p.size()) == p);
          case Str::kEndsWith:
            return B(s.size() >= p.size() &&
                     s.substr(s.size() - p.size()) == p);
          default:
            return B(s.find(p) != std::string_view::npos);
        }
      });
    case K::kMatches: {
      const R x = RefEval(*t.kids[0], env);
      if (x.s != EvalStatus::kOk) return x;
      if (!x.v.is_string()) return Err();
      return B(kPatterns[static_cast<size_t>(t.pattern)].match(x.v.str()));
    }
  }
  return Err();
}

ExprType TypeOfValue(const Value& v) {
  switch (v.kind()) {
    case ValueKind::kBool:
      return ExprType::kBool;
    case ValueKind::kInt:
    case ValueKind::kDouble:
      return ExprType::kNumber;
    case ValueKind::kString:
      return ExprType::kString;
    case ValueKind::kNull:
      return ExprType::kNull;
    default:
      return ExprType::kAny;
  }
}

bool PathFree(const T& t) {
  if (t.k == K::kPath || t.k == K::kHas) return false;
  return std::all_of(t.kids.begin(), t.kids.end(),
                     [](const TP& k) { return PathFree(*k); });
}

struct RefStatic {
  bool ok = true;
  ExprType type = ExprType::kAny;
};

bool Takes(ExprType have, ExprType want) {
  return have == ExprType::kAny || have == want;
}

// The static checks: operand types by the rules in rules/expr.h, where a
// subexpression without paths is typed by its value and is an error when
// its value is.
RefStatic RefCheck(const T& t) {
  std::vector<RefStatic> kids;
  bool ok = true;
  for (const TP& k : t.kids) {
    kids.push_back(RefCheck(*k));
    ok = ok && kids.back().ok;
  }
  auto all_take = [&](ExprType want) {
    return std::all_of(kids.begin(), kids.end(),
                       [&](const RefStatic& k) { return Takes(k.type, want); });
  };
  ExprType type = ExprType::kBool;
  switch (t.k) {
    case K::kLit:
      type = TypeOfValue(t.lit);
      break;
    case K::kPath:
      type = ExprType::kAny;
      break;
    case K::kHas:
      break;
    case K::kNot:
    case K::kAnd:
    case K::kOr:
      ok = ok && all_take(ExprType::kBool);
      break;
    case K::kNeg:
    case K::kAdd:
    case K::kSub:
      type = ExprType::kNumber;
      ok = ok && all_take(ExprType::kNumber);
      break;
    case K::kCoalesce:
      type = kids[0].type == kids[1].type ? kids[0].type : ExprType::kAny;
      break;
    case K::kCmp:
      if (t.cmp != Cmp::kEq && t.cmp != Cmp::kNe) {
        for (const RefStatic& k : kids) {
          ok = ok && (k.type == ExprType::kAny || k.type == ExprType::kNumber ||
                      k.type == ExprType::kString);
        }
        if (kids[0].type != ExprType::kAny && kids[1].type != ExprType::kAny &&
            kids[0].type != kids[1].type) {
          ok = false;
        }
      }
      break;
    case K::kIn:
      break;
    case K::kStr:
    case K::kMatches:
      ok = ok && all_take(ExprType::kString);
      break;
  }
  if (ok && PathFree(t)) {
    const R r = RefEval(t, Env{});
    if (IsErr(r)) {
      ok = false;
    } else {
      type = TypeOfValue(r.v);
    }
  }
  return RefStatic{ok, type};
}

// --- comparing
// --------------------------------------------------------------------

std::string Show(EvalStatus s, const Value& v) {
  switch (s) {
    case EvalStatus::kOk:
      return absl::StrCat(AV(ValueKindName(v.kind())), " ", v.ToJson());
    case EvalStatus::kMissing:
      return "missing";
    case EvalStatus::kTypeError:
      return "type error";
  }
  return "?";
}

bool Same(const EvalResult& got, const R& want) {
  if (got.status != want.s) return false;
  if (got.status != EvalStatus::kOk) return true;
  if (got.value.kind() != want.v.kind()) return false;
  if (got.value.is_double()) {
    const double x = got.value.double_value();
    const double y = want.v.double_value();
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    return x == y && std::signbit(x) == std::signbit(y);
  }
  return got.value == want.v;
}

Event MakeEvent(const FieldSet& fields, const Env& env) {
  Event event;
  event.Reset(fields.size());
  for (size_t f = 0; f < kFields.size(); ++f) {
    const absl::StatusOr<FieldPath> path = FieldPath::Parse(kFields[f]);
    RC_ASSERT(path.ok());
    const int slot = fields.Find(*path);
    if (slot >= 0) event.fields[static_cast<size_t>(slot)] = env[f];
  }
  return event;
}

void CheckAgainstReference(const T& t, const std::string& text) {
  RC_LOG() << "expression: " << text << "\n";
  const RefStatic want = RefCheck(t);
  FieldSet fields;
  std::vector<ExprError> errors;
  const std::unique_ptr<Expr> e = CompileExpr(text, &fields, &errors);
  for (const ExprError& err : errors) {
    RC_LOG() << "  error @" << err.offset << ": " << err.message << "\n";
  }
  RC_ASSERT((e != nullptr) == want.ok);
  if (e == nullptr) {
    RC_ASSERT(!errors.empty());
    return;
  }
  RC_ASSERT(errors.empty());
  RC_ASSERT(e->type() == want.type);
  RC_ASSERT(e->text() == text);
  for (int i = 0; i < 6; ++i) {
    Env env;
    for (Value& v : env) v = DrawValue(true);
    const EvalResult got = e->Eval(MakeEvent(fields, env));
    const R expected = RefEval(t, env);
    if (!Same(got, expected)) {
      for (size_t f = 0; f < kFields.size(); ++f) {
        RC_LOG() << "  " << kFields[f] << " = "
                 << (env[f].is_missing() ? "<missing>"
                                         : Show(EvalStatus::kOk, env[f]))
                 << "\n";
      }
      RC_LOG() << "  got " << Show(got.status, got.value) << ", want "
               << Show(expected.s, expected.v) << "\n";
      RC_FAIL("evaluation differs from the reference");
    }
  }
}

RC_GTEST_PROP(ExprPropertyTest, FullyParenthesizedMatchesReference, ()) {
  for (int i = 0; i < 10; ++i) {
    const TP t = DrawTree();
    CheckAgainstReference(*t, Full(*t));
  }
}

RC_GTEST_PROP(ExprPropertyTest, MinimallyParenthesizedMatchesReference, ()) {
  for (int i = 0; i < 10; ++i) {
    const TP t = DrawTree();
    CheckAgainstReference(*t, Min(*t).text);
  }
}

// --- robustness
// ----------------------------------------------------------------------

void CheckCompilesOrFailsCleanly(std::string_view text) {
  FieldSet fields;
  std::vector<ExprError> errors;
  const std::unique_ptr<Expr> e = CompileExpr(text, &fields, &errors);
  RC_ASSERT((e == nullptr) == !errors.empty());
  if (e == nullptr) {
    RC_ASSERT(fields.size() == 0);
    for (size_t i = 0; i < errors.size(); ++i) {
      RC_ASSERT(errors[i].offset <= text.size());
      RC_ASSERT(!errors[i].message.empty());
      if (i > 0) RC_ASSERT(errors[i - 1].offset <= errors[i].offset);
    }
    return;
  }
  RC_ASSERT(e->text() == text);
  Event event;
  event.Reset(fields.size());
  e->Eval(event);
  for (Value& v : event.fields) v = Value::String("x");
  e->Eval(event);
  for (Value& v : event.fields) v = Value::Int(kMax);
  e->Eval(event);
}

RC_GTEST_PROP(ExprPropertyTest, ArbitraryBytesNeverCrash,
              (const std::string& text)) {
  CheckCompilesOrFailsCleanly(text);
}

RC_GTEST_PROP(ExprPropertyTest, TokenSoupNeverCrashes, ()) {
  static const std::vector<std::string> kVocabulary = {
      "a",        "b.c",   "x[\"k\"]", "(",          ")",
      "[",        "]",     ",",        ".",          "!",
      "-",        "+",     "&&",       "||",         "??",
      "==",       "!=",    "<",        ">=",         "in",
      "has",      "has(",  "true",     "null",       "1",
      "2.5",      "1e3",   "\"s\"",    "'t'",        "\"(\"",
      "\"\\q\"",  "\"",    "\\",       "#",          "=",
      "&",        "foo(",  "matches(", ".contains(", "startsWith",
      "(((((",    ")))))", "!!!!!",    "---",        "9223372036854775808",
      "\xc3\xa9", " ",     "\n",       "\x01",       "a.0",
      "]]]",      "[[[",   "?"};
  const std::vector<std::string> tokens =
      *rc::gen::container<std::vector<std::string>>(
          rc::gen::elementOf(kVocabulary));
  const bool spaced = *rc::gen::arbitrary<bool>();
  std::string text;
  for (const std::string& t : tokens) {
    text += t;
    if (spaced) text += " ";
  }
  CheckCompilesOrFailsCleanly(text);
}

RC_GTEST_PROP(ExprPropertyTest, DeepNestingNeverCrashes, ()) {
  const int n = *rc::gen::inRange(0, 3000);
  const std::string open = *rc::gen::element<std::string>(
      "(", "!", "-", "a.contains(", "has(", "a in [", "(a && ", "x ?? (");
  std::string text;
  for (int i = 0; i < n; ++i) text += open;
  text += "a";
  const std::string close = *rc::gen::element<std::string>(")", "]", "");
  for (int i = 0; i < n; ++i) text += close;
  CheckCompilesOrFailsCleanly(text);
}

TEST(ExprPropertyTest, RendererSanity) {
  // The renderers themselves: a fixed tree, both spellings.
  auto lit = [](Value v) {
    auto t = std::make_shared<T>();
    t->lit = v;
    return t;
  };
  auto path = [](int f) {
    auto t = std::make_shared<T>();
    t->k = K::kPath;
    t->field = f;
    return t;
  };
  auto node = [](K k, std::vector<TP> kids) {
    auto t = std::make_shared<T>();
    t->k = k;
    t->kids = std::move(kids);
    return t;
  };
  const TP t = node(
      K::kOr, {node(K::kAnd, {path(0), node(K::kNot, {path(1)})}),
               node(K::kSub, {lit(Value::Int(1)),
                              node(K::kSub, {path(3), lit(Value::Int(-2))})})});
  EXPECT_EQ(Full(*t), "((a && (!b)) || (1 - (o.x - (-2))))");
  EXPECT_EQ(Min(*t).text, "a && !b || 1 - (o.x - -2)");
}

}  // namespace
}  // namespace invariantd
