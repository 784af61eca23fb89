// Syntax tree of the rule expression language: what the parser produces and
// the compiler (rules/expr.cc) checks and lowers to evaluation nodes.
// Internal to rules/expr*.cc.
#ifndef INVARIANTD_RULES_EXPR_AST_H_
#define INVARIANTD_RULES_EXPR_AST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace invariantd::expr_internal {

enum class CmpOp : uint8_t { kEq, kNe, kLt, kLe, kGt, kGe };

enum class AstKind : uint8_t {
  kError,  // a syntax error, already reported
  kNull,   // literals ...
  kBool,
  kInt,
  kBigInt,  // 9223372036854775808 not preceded by '-': out of range
  kDouble,
  kString,
  kPath,
  kNot,
  kNeg,
  kAnd,       // n-ary: kids[0] && kids[1] && ...
  kOr,        // n-ary
  kCoalesce,  // n-ary
  kCompare,   // kids[0] cmp kids[1]
  kAdditive,  // n-ary: kids[0] (+|-) kids[1] (+|-) ...; see `minus`
  kIn,        // kids[0] in [kids[1], ...]
  kCall,      // name(kids...) or kids[0].name(kids[1...]) when `method`
};

struct Ast {
  AstKind kind = AstKind::kError;
  size_t start = 0;  // first byte, including an enclosing '('
  size_t at = 0;     // byte to blame in messages: operator, name, literal
  int depth = 0;     // nesting levels (leaves are 0)
  bool parenthesized = false;
  bool method = false;  // kCall written as receiver.name(args)
  CmpOp cmp = CmpOp::kEq;
  bool bool_value = false;
  int64_t int_value = 0;
  double double_value = 0;
  std::string str;                    // kString: decoded text; kCall: name
  std::vector<std::string> segments;  // kPath
  std::vector<std::unique_ptr<Ast>> kids;
  std::vector<size_t> op_at;  // n-ary kinds: offset of each operator
  std::vector<bool> minus;    // kAdditive: operator i is '-'
};

using AstPtr = std::unique_ptr<Ast>;

}  // namespace invariantd::expr_internal

#endif  // INVARIANTD_RULES_EXPR_AST_H_
