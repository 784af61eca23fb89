// The rule expression language: a small, CEL-flavoured subset used by
// `when`, `always`, `key`, `field` and `id`.
//
// Grammar (EBNF; whitespace between tokens is ignored):
//
//   expr       = coalesce ;
//   coalesce   = or { "??" or } ;                 (* first present value *)
//   or         = and { "||" and } ;
//   and        = unary_not { "&&" unary_not } ;
//   unary_not  = "!" unary_not | relation ;
//   relation   = additive [ rel_op additive | "in" list ] ;
//   rel_op     = "==" | "!=" | "<" | "<=" | ">" | ">=" ;
//   additive   = unary { ( "+" | "-" ) unary } ;
//   unary      = "-" unary | postfix ;
//   postfix    = primary { "." method "(" [ args ] ")" } ;
//   method     = "startsWith" | "endsWith" | "contains" | "matches" ;
//   primary    = literal | path | call | "(" expr ")" ;
//   call       = ( "has" | "startsWith" | "endsWith" | "contains"
//               | "matches" ) "(" [ args ] ")" ;
//   args       = expr { "," expr } ;
//   list       = "[" [ expr { "," expr } ] "]" ;
//   path       = ident { "." ( ident | digits ) | "[" string "]" } ;
//   literal    = int | float | string | "true" | "false" | "null" ;
//   string     = '"' chars '"' | "'" chars "'" ;
//                (* escapes: \" \' \\ \n \t \r \uXXXX *)
//
// A path is an event field (FieldPath syntax). `x.startsWith("a")` and
// `startsWith(x, "a")` are the same; `has(path)` takes a path only.
// `matches` takes an RE2 pattern that must be a string literal; it is
// compiled once, at rule compile time (RE2: linear time, no backtracking).
//
// Semantics (three-valued: a value, *missing*, or a type error):
//   - A path absent from the event is missing. Missing propagates through
//     operators and functions, so a rule reading an absent field does not
//     apply to that event (the engine counts it). `has(p)` is true/false,
//     never missing. `a ?? b` is a when a is present, else b.
//   - `&&` is false if either side is false, else missing if either side is
//     missing, else true; `||` dually. `!missing` is missing.
//   - `==`/`!=` compare canonically (1 == 1.0; values of different kinds are
//     unequal, never an error). `< <= > >=` compare numbers, or two strings
//     bytewise; anything else is a type error. `+ -` take numbers (int + int
//     is int, with overflow a type error; otherwise double).
//   - `x in [a, b]` is x == a || x == b without the missing rules for list
//     elements (list elements are usually literals).
//   - String functions take strings; other kinds are a type error.
// Details, where the rules above leave a choice:
//   - A type error in an operand wins over a missing one (`m < -s` is a
//     type error when s is a string), except where `&&`, `||`, `??` and
//     `in` are decided first (by a false, a true, a present value, a match).
//     A chain `a + b - c` is the left-nested binary operators.
//   - `null` is a present value: `null ?? 1` is null.
//   - `in`: a missing x is missing; a missing element never matches; a type
//     error in an element is the result unless another element matches.
//   - NaN is unordered: every `< <= > >=` with it is false.
//   - `matches` searches (RE2::PartialMatch, as in CEL); anchor with ^ and $.
//   - Numbers are decimal; -9223372036854775808 is written as a negative
//     literal. Subexpressions without paths are folded at compile time, so
//     constant integer overflow is a compile error.
//   - Nesting: each parenthesis, call, list, unary operator and binary
//     operator adds a level; a chain `a && b && c` is one level.
//
// Static checks at compile time: literal operand kinds (e.g. `"a" < 1`,
// `!3`, `1 + "x"`), function names and arity, `has` argument, `matches`
// pattern validity, and that a boolean context (`when`, `always`) does not
// receive an expression that can only be a number, string or null.
//
// Limits: at most ExprLimits::max_bytes of text (default kMaxExprBytes) and
// max_depth nesting levels (default kMaxExprDepth)
// (parenthesis, operators and calls all count); beyond them compilation
// fails with a diagnostic, never a stack overflow.
//
// Phases: CompileExpr builds an immutable Expr; Eval is const and safe to
// call concurrently from many threads. The FieldSet passed to CompileExpr
// must be the one whose slots the evaluated Events use.
#ifndef INVARIANTD_RULES_EXPR_H_
#define INVARIANTD_RULES_EXPR_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sidecar/core/event.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/value.h"

namespace invariantd {

inline constexpr size_t kMaxExprBytes = 4096;
inline constexpr int kMaxExprDepth = 64;
// The largest depth a configuration may allow: evaluation and compilation
// recurse once per level, and this keeps them far from the stack's end.
inline constexpr int kMaxExprDepthLimit = 256;

// Limits on one expression (config `rule_limits`, docs/configuration.md).
struct ExprLimits {
  size_t max_bytes = kMaxExprBytes;
  int max_depth = kMaxExprDepth;  // 1..kMaxExprDepthLimit
};

// One compile error: `offset` is the byte offset inside the expression text
// where the problem is (the rule loader maps it to file:line:column).
struct ExprError {
  size_t offset = 0;
  std::string message;
};

// What an expression may statically produce.
enum class ExprType { kAny, kBool, kNumber, kString, kNull };

// Outcome of one evaluation.
enum class EvalStatus { kOk, kMissing, kTypeError };

struct EvalResult {
  EvalStatus status = EvalStatus::kOk;
  Value value;  // meaningful when status == kOk
};

class Expr {
 public:
  virtual ~Expr() = default;

  // Evaluates against `event` (its fields indexed by the compile FieldSet).
  // The returned Value may point into the event; never allocates.
  virtual EvalResult Eval(const Event& event) const = 0;

  // Statically known result type (kAny when it depends on field values).
  virtual ExprType type() const = 0;

  // When the whole expression is a single field path, that path; used to
  // name key fields and for messages.
  virtual std::optional<FieldPath> AsPath() const = 0;

  // The source text it was compiled from.
  virtual const std::string& text() const = 0;
};

// Compiles `text`. Every path it references is added to `fields`. On
// failure returns nullptr, leaves `fields` unchanged, and appends *all*
// errors found to `errors` (at least one), ordered by offset.
std::unique_ptr<Expr> CompileExpr(std::string_view text, FieldSet* fields,
                                  std::vector<ExprError>* errors,
                                  const ExprLimits& limits = {});

}  // namespace invariantd

#endif  // INVARIANTD_RULES_EXPR_H_
