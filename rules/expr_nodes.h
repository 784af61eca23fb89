// Evaluation nodes of a compiled expression. Internal to rules/expr*.cc.
//
// A compiled expression is an immutable tree of Nodes built by the compiler
// (rules/expr.cc) after all checks passed. Eval is const, never allocates
// (RE2 may, internally, the first time a pattern meets new input) and is
// safe to call from many threads at once. Common shapes get fused nodes so
// that `event.role == "StateLeader"` is a single virtual call.
//
// The semantics (see rules/expr.h) are implemented once, in the Apply*
// functions, and shared by the generic and the fused nodes and by constant
// folding. Rules for combining operand outcomes:
//   - a type error in any operand makes the result a type error, except that
//     `&&` is false if any operand is false, `||` true if any is true, `??`
//     stops at its first present operand, and `in` is true on a match;
//   - otherwise, a missing operand makes the result missing (`has` and `in`
//     list elements excepted);
//   - otherwise the operator applies, and operand kinds it does not take are
//     a type error.
#ifndef INVARIANTD_RULES_EXPR_NODES_H_
#define INVARIANTD_RULES_EXPR_NODES_H_

#include <memory>
#include <vector>

#include "re2/re2.h"
#include "rules/expr.h"
#include "rules/expr_ast.h"

namespace invariantd::expr_internal {

enum class StrFn : uint8_t { kStartsWith, kEndsWith, kContains };

class Node {
 public:
  virtual ~Node() = default;
  virtual EvalResult Eval(const Event& event) const = 0;
  // Replaces compile-local slot numbers with FieldSet slots:
  // slot := slots[slot].
  virtual void RemapSlots(const std::vector<int>& slots) = 0;
  // The value of a constant node, else null.
  virtual const Value* constant() const { return nullptr; }
  // The slot of a bare path node, else -1.
  virtual int path_slot() const { return -1; }
};

using NodePtr = std::unique_ptr<Node>;

// Operator semantics on two present values.
EvalResult ApplyCompare(CmpOp op, const Value& a, const Value& b);
EvalResult ApplyAdd(const Value& a, const Value& b, bool minus);
EvalResult ApplyNeg(const Value& a);
EvalResult ApplyStrFn(StrFn fn, const Value& a, const Value& b);

// Constructors; each may return a fused node for a common shape.
NodePtr MakeConst(const Value& v);
NodePtr MakePath(int slot);
NodePtr MakeHas(int slot);
NodePtr MakeNot(NodePtr x);
NodePtr MakeNeg(NodePtr x);
NodePtr MakeAnd(std::vector<NodePtr> kids);
NodePtr MakeOr(std::vector<NodePtr> kids);
NodePtr MakeCoalesce(std::vector<NodePtr> kids);
NodePtr MakeAdditive(std::vector<NodePtr> kids, std::vector<bool> minus);
NodePtr MakeCompare(CmpOp op, NodePtr a, NodePtr b);
NodePtr MakeIn(NodePtr x, std::vector<NodePtr> list);
NodePtr MakeStrFn(StrFn fn, NodePtr a, NodePtr b);
NodePtr MakeMatches(NodePtr a, std::unique_ptr<const RE2> re);

}  // namespace invariantd::expr_internal

#endif  // INVARIANTD_RULES_EXPR_NODES_H_
