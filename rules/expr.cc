// CompileExpr: lex -> parse -> check and lower to evaluation nodes.
//
// The checker walks the syntax tree once, reporting every static problem it
// finds (a subtree with an error still has its other parts checked), and
// folds constant subtrees (no paths) to one constant, which also catches
// constant integer overflow at compile time.
#include "rules/expr.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"
#include "rules/expr_ast.h"
#include "rules/expr_lexer.h"
#include "rules/expr_nodes.h"
#include "rules/expr_parser.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

using expr_internal::Ast;
using expr_internal::AstKind;
using expr_internal::CmpOp;
using expr_internal::NodePtr;
using expr_internal::StrFn;

std::string_view TypeName(ExprType t) {
  switch (t) {
    case ExprType::kAny:
      return "any value";
    case ExprType::kBool:
      return "a boolean";
    case ExprType::kNumber:
      return "a number";
    case ExprType::kString:
      return "a string";
    case ExprType::kNull:
      return "null";
  }
  return "?";
}

ExprType TypeOf(const Value& v) {
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

std::string_view CmpOpText(CmpOp op) {
  switch (op) {
    case CmpOp::kEq:
      return "==";
    case CmpOp::kNe:
      return "!=";
    case CmpOp::kLt:
      return "<";
    case CmpOp::kLe:
      return "<=";
    case CmpOp::kGt:
      return ">";
    case CmpOp::kGe:
      return ">=";
  }
  return "?";
}

enum class Fn { kHas, kStartsWith, kEndsWith, kContains, kMatches };
struct FnInfo {
  std::string_view name;
  Fn fn;
  int arity;
};
constexpr std::array<FnInfo, 5> kFunctions = {{
    {"has", Fn::kHas, 1},
    {"startsWith", Fn::kStartsWith, 2},
    {"endsWith", Fn::kEndsWith, 2},
    {"contains", Fn::kContains, 2},
    {"matches", Fn::kMatches, 2},
}};

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min(
          {row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "; did you mean 'x'?" or a list of the functions.
std::string SuggestFunction(std::string_view name, bool method) {
  static constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
      {"exists", "has"},           {"defined", "has"},
      {"includes", "contains"},    {"regex", "matches"},
      {"hasPrefix", "startsWith"}, {"hasSuffix", "endsWith"},
      {"beginsWith", "startsWith"}};
  for (const auto& [alias, fn] : kAliases) {
    if (absl::EqualsIgnoreCase(AV(alias), AV(name))) {
      return absl::StrCat("; did you mean '", AV(fn), "'?");
    }
  }
  std::string_view best;
  size_t best_distance = 3;
  for (const FnInfo& f : kFunctions) {
    if (absl::EqualsIgnoreCase(AV(f.name), AV(name))) {
      return absl::StrCat("; did you mean '", AV(f.name), "'?");
    }
    const size_t d = EditDistance(absl::AsciiStrToLower(AV(f.name)),
                                  absl::AsciiStrToLower(AV(name)));
    if (d < best_distance && d < name.size()) {
      best_distance = d;
      best = f.name;
    }
  }
  if (!best.empty()) return absl::StrCat("; did you mean '", AV(best), "'?");
  return method ? "; the methods are startsWith, endsWith, contains and "
                  "matches"
                : "; the functions are has, startsWith, endsWith, contains "
                  "and matches";
}

// A checked, lowered subtree. A null node means the subtree had errors
// (reported); `type` is still what it would produce, so that its parent
// does not report a follow-on error.
struct Built {
  NodePtr node;
  ExprType type = ExprType::kAny;

  bool ok() const { return node != nullptr; }
  const Value* constant() const { return node ? node->constant() : nullptr; }
};

Built Poison(ExprType type) { return Built{nullptr, type}; }

bool Allows(ExprType have, ExprType want) {
  return have == ExprType::kAny || have == want;
}

class Compiler {
 public:
  explicit Compiler(std::vector<ExprError>* errors) : errors_(errors) {}

  Built Build(const Ast& a) {
    switch (a.kind) {
      case AstKind::kError:
        return Poison(ExprType::kAny);
      case AstKind::kNull:
        return Const(Value::Null());
      case AstKind::kBool:
        return Const(Value::Bool(a.bool_value));
      case AstKind::kInt:
        return Const(Value::Int(a.int_value));
      case AstKind::kBigInt:
        Error(a.at,
              "integer 9223372036854775808 is out of range for int64 (the "
              "largest is 9223372036854775807)");
        return Poison(ExprType::kNumber);
      case AstKind::kDouble:
        return Const(Value::Double(a.double_value));
      case AstKind::kString:
        strings.push_back(std::make_unique<std::string>(a.str));
        return Const(Value::String(*strings.back()));
      case AstKind::kPath:
        return Built{expr_internal::MakePath(Slot(a.segments)), ExprType::kAny};
      case AstKind::kNot:
        return BuildNot(a);
      case AstKind::kNeg:
        return BuildNeg(a);
      case AstKind::kAnd:
      case AstKind::kOr:
        return BuildLogic(a);
      case AstKind::kCoalesce:
        return BuildCoalesce(a);
      case AstKind::kCompare:
        return BuildCompare(a);
      case AstKind::kAdditive:
        return BuildAdditive(a);
      case AstKind::kIn:
        return BuildIn(a);
      case AstKind::kCall:
        return BuildCall(a);
    }
    return Poison(ExprType::kAny);
  }

  // Paths by compile-local slot.
  std::vector<FieldPath> paths;
  // Storage of every string constant the nodes point to.
  std::vector<std::unique_ptr<std::string>> strings;

 private:
  void Error(size_t at, std::string message) {
    errors_->push_back(ExprError{at, std::move(message)});
  }

  int Slot(const std::vector<std::string>& segments) {
    FieldPath path(segments);
    auto [it, inserted] =
        index_.try_emplace(path, static_cast<int>(paths.size()));
    if (inserted) paths.push_back(std::move(path));
    return it->second;
  }

  Built Const(const Value& v) {
    return Built{expr_internal::MakeConst(v), TypeOf(v)};
  }

  std::vector<Built> BuildKids(const Ast& a, size_t from = 0) {
    std::vector<Built> out;
    out.reserve(a.kids.size());
    for (size_t i = from; i < a.kids.size(); ++i) {
      out.push_back(Build(*a.kids[i]));
    }
    return out;
  }

  static bool AllOk(const std::vector<Built>& kids) {
    return std::all_of(kids.begin(), kids.end(),
                       [](const Built& b) { return b.ok(); });
  }
  static bool AllConst(const std::vector<Built>& kids) {
    return std::all_of(kids.begin(), kids.end(),
                       [](const Built& b) { return b.constant() != nullptr; });
  }
  static std::vector<NodePtr> Nodes(std::vector<Built>* kids) {
    std::vector<NodePtr> out;
    out.reserve(kids->size());
    for (Built& b : *kids) out.push_back(std::move(b.node));
    return out;
  }

  // Wraps a new node; a node over constants only is evaluated now.
  Built Finish(const Ast& a, NodePtr node, ExprType type, bool all_const) {
    if (!all_const) return Built{std::move(node), type};
    const EvalResult r = node->Eval(Event{});
    if (r.status == EvalStatus::kOk) return Const(r.value);
    if (r.status == EvalStatus::kTypeError) {
      Error(a.at, a.kind == AstKind::kNeg
                      ? "integer overflow in this constant expression"
                      : "this constant expression is always a type error");
      return Poison(type);
    }
    return Built{std::move(node), type};
  }

  Built BuildNot(const Ast& a) {
    Built x = Build(*a.kids[0]);
    if (x.ok() && !Allows(x.type, ExprType::kBool)) {
      Error(a.kids[0]->start,
            absl::StrCat("'!' takes a boolean, got ", AV(TypeName(x.type))));
      return Poison(ExprType::kBool);
    }
    if (!x.ok()) return Poison(ExprType::kBool);
    const bool c = x.constant() != nullptr;
    return Finish(a, expr_internal::MakeNot(std::move(x.node)), ExprType::kBool,
                  c);
  }

  Built BuildNeg(const Ast& a) {
    Built x = Build(*a.kids[0]);
    if (x.ok() && !Allows(x.type, ExprType::kNumber)) {
      Error(a.kids[0]->start, absl::StrCat("unary '-' takes a number, got ",
                                           AV(TypeName(x.type))));
      return Poison(ExprType::kNumber);
    }
    if (!x.ok()) return Poison(ExprType::kNumber);
    const bool c = x.constant() != nullptr;
    return Finish(a, expr_internal::MakeNeg(std::move(x.node)),
                  ExprType::kNumber, c);
  }

  Built BuildLogic(const Ast& a) {
    const bool is_and = a.kind == AstKind::kAnd;
    std::vector<Built> kids = BuildKids(a);
    bool bad = false;
    for (size_t i = 0; i < kids.size(); ++i) {
      if (kids[i].ok() && !Allows(kids[i].type, ExprType::kBool)) {
        Error(a.kids[i]->start,
              absl::StrCat("'", is_and ? "&&" : "||", "' takes booleans, got ",
                           AV(TypeName(kids[i].type))));
        bad = true;
      }
    }
    if (bad || !AllOk(kids)) return Poison(ExprType::kBool);
    const bool c = AllConst(kids);
    NodePtr n = is_and ? expr_internal::MakeAnd(Nodes(&kids))
                       : expr_internal::MakeOr(Nodes(&kids));
    return Finish(a, std::move(n), ExprType::kBool, c);
  }

  // A chain is the left-nested binary operators, so a leading run of
  // constants is a constant subexpression: it folds to its first operand
  // (a constant is never missing), exactly as (c0 ?? c1) ?? x would.
  Built BuildCoalesce(const Ast& a) {
    std::vector<Built> kids = BuildKids(a);
    if (!AllOk(kids)) return Poison(ExprType::kAny);
    size_t lead = 0;
    while (lead < kids.size() && kids[lead].constant() != nullptr) ++lead;
    if (lead == kids.size()) return Const(*kids[0].constant());
    if (lead > 1) {
      kids.erase(kids.begin() + 1,
                 kids.begin() + static_cast<std::ptrdiff_t>(lead));
    }
    ExprType type = kids[0].type;
    for (const Built& k : kids) {
      if (k.type != type) type = ExprType::kAny;
    }
    return Built{expr_internal::MakeCoalesce(Nodes(&kids)), type};
  }

  Built BuildCompare(const Ast& a) {
    std::vector<Built> kids = BuildKids(a);
    bool bad = false;
    if (a.cmp != CmpOp::kEq && a.cmp != CmpOp::kNe) {
      for (size_t i = 0; i < 2; ++i) {
        const ExprType t = kids[i].type;
        if (kids[i].ok() && t != ExprType::kAny && t != ExprType::kNumber &&
            t != ExprType::kString) {
          Error(a.kids[i]->start,
                absl::StrCat("'", AV(CmpOpText(a.cmp)),
                             "' takes numbers or strings, got ",
                             AV(TypeName(t))));
          bad = true;
        }
      }
      const ExprType l = kids[0].type;
      const ExprType r = kids[1].type;
      if (!bad && kids[0].ok() && kids[1].ok() && l != ExprType::kAny &&
          r != ExprType::kAny && l != r) {
        Error(a.at, absl::StrCat("'", AV(CmpOpText(a.cmp)), "' cannot compare ",
                                 AV(TypeName(l)), " with ", AV(TypeName(r)),
                                 "; compare two numbers or two strings"));
        bad = true;
      }
    }
    if (bad || !AllOk(kids)) return Poison(ExprType::kBool);
    const bool c = AllConst(kids);
    return Finish(a,
                  expr_internal::MakeCompare(a.cmp, std::move(kids[0].node),
                                             std::move(kids[1].node)),
                  ExprType::kBool, c);
  }

  Built BuildAdditive(const Ast& a) {
    std::vector<Built> kids = BuildKids(a);
    bool bad = false;
    for (size_t i = 0; i < kids.size(); ++i) {
      if (kids[i].ok() && !Allows(kids[i].type, ExprType::kNumber)) {
        const bool minus = a.minus[i == 0 ? 0 : i - 1];
        Error(a.kids[i]->start,
              absl::StrCat("'", minus ? "-" : "+", "' takes numbers, got ",
                           AV(TypeName(kids[i].type))));
        bad = true;
      }
    }
    if (bad || !AllOk(kids)) return Poison(ExprType::kNumber);
    std::vector<bool> minus = a.minus;
    if (kids[0].constant() != nullptr) {
      // Fold the leading constants, a constant subexpression of the
      // left-nested chain; blame the operator that overflows.
      EvalResult acc{EvalStatus::kOk, *kids[0].constant()};
      size_t i = 1;
      for (; i < kids.size() && kids[i].constant() != nullptr; ++i) {
        acc = expr_internal::ApplyAdd(acc.value, *kids[i].constant(),
                                      a.minus[i - 1]);
        if (acc.status != EvalStatus::kOk) {
          Error(a.op_at[i - 1], "integer overflow in this constant expression");
          return Poison(ExprType::kNumber);
        }
      }
      if (i == kids.size()) return Const(acc.value);
      if (i > 1) {
        kids.erase(kids.begin() + 1,
                   kids.begin() + static_cast<std::ptrdiff_t>(i));
        minus.erase(minus.begin(),
                    minus.begin() + static_cast<std::ptrdiff_t>(i - 1));
        kids[0] = Const(acc.value);
      }
    }
    return Built{expr_internal::MakeAdditive(Nodes(&kids), std::move(minus)),
                 ExprType::kNumber};
  }

  Built BuildIn(const Ast& a) {
    std::vector<Built> kids = BuildKids(a);
    if (!AllOk(kids)) return Poison(ExprType::kBool);
    const bool c = AllConst(kids);
    NodePtr x = std::move(kids[0].node);
    std::vector<NodePtr> list;
    for (size_t i = 1; i < kids.size(); ++i) {
      list.push_back(std::move(kids[i].node));
    }
    return Finish(a, expr_internal::MakeIn(std::move(x), std::move(list)),
                  ExprType::kBool, c);
  }

  Built BuildCall(const Ast& a) {
    const FnInfo* fn = nullptr;
    for (const FnInfo& f : kFunctions) {
      if (f.name == a.str) fn = &f;
    }
    if (fn == nullptr) {
      BuildKids(a);  // for the errors inside
      Error(a.at,
            absl::StrCat(a.method ? "unknown method '" : "unknown function '",
                         a.str, "'", SuggestFunction(a.str, a.method)));
      return Poison(ExprType::kAny);
    }
    if (fn->fn == Fn::kHas && a.method) {
      BuildKids(a);
      Error(a.at, "'has' is not a method: write has(path)");
      return Poison(ExprType::kBool);
    }
    const int got = static_cast<int>(a.kids.size());
    if (got != fn->arity) {
      BuildKids(a);
      if (a.method) {
        Error(a.at, absl::StrCat("'", a.str, "' takes ", fn->arity - 1,
                                 " argument", fn->arity - 1 == 1 ? "" : "s",
                                 " when called as a method, got ", got - 1));
      } else {
        Error(a.at, absl::StrCat("'", a.str, "' takes ", fn->arity, " argument",
                                 fn->arity == 1 ? "" : "s", ", got ", got));
      }
      return Poison(ExprType::kBool);
    }
    switch (fn->fn) {
      case Fn::kHas:
        return BuildHas(a);
      case Fn::kMatches:
        return BuildMatches(a);
      case Fn::kStartsWith:
        return BuildStrFn(a, StrFn::kStartsWith);
      case Fn::kEndsWith:
        return BuildStrFn(a, StrFn::kEndsWith);
      case Fn::kContains:
        return BuildStrFn(a, StrFn::kContains);
    }
    return Poison(ExprType::kBool);
  }

  Built BuildHas(const Ast& a) {
    const Ast& p = *a.kids[0];
    if (p.kind == AstKind::kPath) {
      return Built{expr_internal::MakeHas(Slot(p.segments)), ExprType::kBool};
    }
    if (p.kind != AstKind::kError) {
      Build(p);
      Error(p.start, "'has' takes a field path, e.g. has(event.state.term)");
    }
    return Poison(ExprType::kBool);
  }

  // Reports a string-function argument of the wrong static type.
  bool CheckStringArg(const Ast& call, size_t i, const Built& b) {
    if (!b.ok() || Allows(b.type, ExprType::kString)) return true;
    Error(call.kids[i]->start,
          absl::StrCat("'", call.str, "' takes strings, got ",
                       AV(TypeName(b.type))));
    return false;
  }

  Built BuildStrFn(const Ast& a, StrFn fn) {
    std::vector<Built> kids = BuildKids(a);
    bool good = true;
    for (size_t i = 0; i < 2; ++i) good &= CheckStringArg(a, i, kids[i]);
    if (!good || !AllOk(kids)) return Poison(ExprType::kBool);
    const bool c = AllConst(kids);
    return Finish(a,
                  expr_internal::MakeStrFn(fn, std::move(kids[0].node),
                                           std::move(kids[1].node)),
                  ExprType::kBool, c);
  }

  Built BuildMatches(const Ast& a) {
    Built subject = Build(*a.kids[0]);
    bool good = CheckStringArg(a, 0, subject);
    const Ast& p = *a.kids[1];
    std::unique_ptr<RE2> re;
    if (p.kind == AstKind::kString) {
      RE2::Options options;
      options.set_log_errors(false);
      re = std::make_unique<RE2>(re2::StringPiece(p.str.data(), p.str.size()),
                                 options);
      if (!re->ok()) {
        Error(p.at, absl::StrCat("invalid regular expression: ", re->error()));
        good = false;
      }
    } else if (p.kind != AstKind::kError) {
      Build(p);
      Error(p.start,
            "the pattern of 'matches' must be a string literal, e.g. "
            "x.matches(\"^v[0-9]+$\")");
      good = false;
    } else {
      good = false;
    }
    if (!good || !subject.ok()) return Poison(ExprType::kBool);
    const bool c = subject.constant() != nullptr;
    return Finish(
        a, expr_internal::MakeMatches(std::move(subject.node), std::move(re)),
        ExprType::kBool, c);
  }

  std::vector<ExprError>* errors_;
  absl::flat_hash_map<FieldPath, int> index_;
};

class CompiledExpr final : public Expr {
 public:
  CompiledExpr(std::string text, ExprType type, std::optional<FieldPath> path,
               std::vector<std::unique_ptr<std::string>> strings, NodePtr root)
      : text_(std::move(text)),
        type_(type),
        path_(std::move(path)),
        strings_(std::move(strings)),
        root_(std::move(root)) {}

  EvalResult Eval(const Event& event) const override {
    return root_->Eval(event);
  }
  ExprType type() const override { return type_; }
  std::optional<FieldPath> AsPath() const override { return path_; }
  const std::string& text() const override { return text_; }

 private:
  std::string text_;
  ExprType type_;
  std::optional<FieldPath> path_;
  // Owns the bytes string constants in root_ point to; heap strings so their
  // addresses never change.
  std::vector<std::unique_ptr<std::string>> strings_;
  NodePtr root_;
};

}  // namespace

std::unique_ptr<Expr> CompileExpr(std::string_view text, FieldSet* fields,
                                  std::vector<ExprError>* errors,
                                  const ExprLimits& limits) {
  if (text.size() > limits.max_bytes) {
    errors->push_back(
        ExprError{limits.max_bytes, absl::StrCat("expression is ", text.size(),
                                                 " bytes long; the limit is ",
                                                 limits.max_bytes, " bytes")});
    return nullptr;
  }
  const int max_depth = std::clamp(limits.max_depth, 1, kMaxExprDepthLimit);
  std::vector<ExprError> found;
  const std::vector<expr_internal::Token> tokens =
      expr_internal::Lex(text, &found);
  const expr_internal::AstPtr ast =
      expr_internal::Parse(tokens, &found, max_depth);
  Compiler compiler(&found);
  Built root = compiler.Build(*ast);
  if (!found.empty() || !root.ok()) {
    if (found.empty()) found.push_back(ExprError{0, "invalid expression"});
    std::stable_sort(found.begin(), found.end(),
                     [](const ExprError& a, const ExprError& b) {
                       return a.offset < b.offset;
                     });
    found.erase(std::unique(found.begin(), found.end(),
                            [](const ExprError& a, const ExprError& b) {
                              return a.offset == b.offset &&
                                     a.message == b.message;
                            }),
                found.end());
    for (ExprError& e : found) errors->push_back(std::move(e));
    return nullptr;
  }
  std::vector<int> slots;
  slots.reserve(compiler.paths.size());
  for (const FieldPath& p : compiler.paths) slots.push_back(fields->Add(p));
  root.node->RemapSlots(slots);
  std::optional<FieldPath> path;
  if (ast->kind == AstKind::kPath) path = FieldPath(ast->segments);
  return std::make_unique<CompiledExpr>(
      std::string(text), root.type, std::move(path),
      std::move(compiler.strings), std::move(root.node));
}

}  // namespace invariantd
