#include "rules/expr_parser.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sidecar/core/strings.h"

namespace invariantd::expr_internal {
namespace {

bool IsRelOp(Tok k) {
  return k == Tok::kEq || k == Tok::kNe || k == Tok::kLt || k == Tok::kLe ||
         k == Tok::kGt || k == Tok::kGe;
}

CmpOp ToCmpOp(Tok k) {
  switch (k) {
    case Tok::kEq:
      return CmpOp::kEq;
    case Tok::kNe:
      return CmpOp::kNe;
    case Tok::kLt:
      return CmpOp::kLt;
    case Tok::kLe:
      return CmpOp::kLe;
    case Tok::kGt:
      return CmpOp::kGt;
    default:
      return CmpOp::kGe;
  }
}

// A hint for words people write out of habit from other languages.
std::string WordHint(const Token& t) {
  if (t.kind != Tok::kIdent && t.kind != Tok::kSegment) return "";
  if (t.text == "and" || t.text == "AND") return "; use '&&'";
  if (t.text == "or" || t.text == "OR") return "; use '||'";
  if (t.text == "not" || t.text == "NOT") return "; use '!'";
  return "";
}

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, std::vector<ExprError>* errors,
         int max_depth)
      : tokens_(tokens), errors_(errors), max_depth_(max_depth) {}

  AstPtr ParseAll() {
    if (Peek().kind == Tok::kEnd) {
      Report(0, "empty expression");
      return MakeError(0);
    }
    AstPtr e = ParseCoalesce();
    if (!fatal_ && Peek().kind != Tok::kEnd) {
      const Token& t = Peek();
      if (t.kind == Tok::kError) return e;
      std::string msg = absl::StrCat("unexpected ", DescribeToken(t),
                                     " after the end of the expression");
      if (std::string hint = WordHint(t); !hint.empty()) {
        absl::StrAppend(&msg, hint);
      } else if (t.kind != Tok::kRParen && t.kind != Tok::kRBracket) {
        absl::StrAppend(&msg, "; is an operator missing?");
      }
      Syntax(t.offset, std::move(msg));
    }
    return e;
  }

 private:
  // Counts one nesting level for the lifetime of the guard; past
  // kMaxExprDepth the parse stops (fatal_).
  class DepthGuard {
   public:
    DepthGuard(Parser* p, size_t at) : p_(p) {
      if (++p_->depth_ > p_->max_depth_) p_->TooDeep(at);
    }
    ~DepthGuard() { --p_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser* p_;
  };

  const Token& Peek(size_t k = 0) const {
    return tokens_[std::min(pos_ + k, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (t.kind != Tok::kEnd) ++pos_;
    return t;
  }

  void Report(size_t at, std::string message) {
    errors_->push_back(ExprError{at, std::move(message)});
  }
  // A syntax error: reported unless one is already being recovered from.
  void Syntax(size_t at, std::string message) {
    if (panic_ || fatal_) return;
    Report(at, std::move(message));
    panic_ = true;
  }
  // "expected <what>, got <token>" at the current token. A kError token
  // was reported by the lexer already.
  void Expected(std::string_view what) {
    const Token& t = Peek();
    if (t.kind == Tok::kError) {
      panic_ = true;
      return;
    }
    Syntax(t.offset, absl::StrCat("expected ", AV(what), ", got ",
                                  DescribeToken(t), WordHint(t)));
  }
  void TooDeep(size_t at) {
    if (!depth_reported_) {
      depth_reported_ = true;
      Report(at, absl::StrCat("expression nests more than ", max_depth_,
                              " levels deep (parentheses, operators and "
                              "calls); split or simplify it"));
    }
    fatal_ = true;
  }

  AstPtr MakeError(size_t at) {
    auto n = std::make_unique<Ast>();
    n->kind = AstKind::kError;
    n->start = at;
    n->at = at;
    return n;
  }
  AstPtr MakeNode(AstKind kind, size_t start, size_t at) {
    auto n = std::make_unique<Ast>();
    n->kind = kind;
    n->start = start;
    n->at = at;
    return n;
  }
  // Sets the depth of an interior node from its kids.
  void Finish(Ast* n) {
    int d = 0;
    for (const AstPtr& k : n->kids) d = std::max(d, k->depth);
    n->depth = d + 1;
    if (n->depth > max_depth_ && !depth_reported_) {
      depth_reported_ = true;
      Report(n->at, absl::StrCat("expression nests more than ", max_depth_,
                                 " levels deep (parentheses, operators and "
                                 "calls); split or simplify it"));
    }
  }

  // Skips to the `close` token, or to a ',' at the same nesting when
  // `stop_at_comma`; stops early at an unmatched closer or the end.
  void SkipTo(Tok close, bool stop_at_comma) {
    int nest = 0;
    while (true) {
      const Tok k = Peek().kind;
      if (k == Tok::kEnd) return;
      if (nest == 0 && (k == close || (stop_at_comma && k == Tok::kComma))) {
        return;
      }
      if (k == Tok::kLParen || k == Tok::kLBracket) {
        ++nest;
      } else if (k == Tok::kRParen || k == Tok::kRBracket) {
        if (nest == 0) return;
        --nest;
      }
      Next();
    }
  }

  // expr { sep expr } close; the opening token is consumed already.
  void ParseSeq(Tok close, std::vector<AstPtr>* out) {
    const char* expected = close == Tok::kRParen ? "',' or ')'" : "',' or ']'";
    if (Peek().kind == close) {
      Next();
      return;
    }
    while (!fatal_) {
      out->push_back(ParseCoalesce());
      if (fatal_) return;
      if (Peek().kind != Tok::kComma && Peek().kind != close) {
        Expected(expected);
        SkipTo(close, /*stop_at_comma=*/true);
      }
      if (Peek().kind == Tok::kComma) {
        Next();
        panic_ = false;
        continue;
      }
      if (Peek().kind == close) {
        Next();
        panic_ = false;
      }
      return;
    }
  }

  using Level = AstPtr (Parser::*)();

  // sub { op sub }: one n-ary node for the whole chain.
  AstPtr ParseChain(AstKind kind, Tok op, Level sub) {
    AstPtr first = (this->*sub)();
    if (fatal_ || Peek().kind != op) return first;
    AstPtr n = MakeNode(kind, first->start, Peek().offset);
    n->kids.push_back(std::move(first));
    while (!fatal_ && Peek().kind == op) {
      n->op_at.push_back(Next().offset);
      n->kids.push_back((this->*sub)());
    }
    Finish(n.get());
    return n;
  }

  AstPtr ParseCoalesce() {
    return ParseChain(AstKind::kCoalesce, Tok::kCoalesce, &Parser::ParseOr);
  }
  AstPtr ParseOr() {
    return ParseChain(AstKind::kOr, Tok::kOr, &Parser::ParseAnd);
  }
  AstPtr ParseAnd() {
    return ParseChain(AstKind::kAnd, Tok::kAnd, &Parser::ParseNot);
  }

  AstPtr ParseNot() {
    if (fatal_) return MakeError(Peek().offset);
    if (Peek().kind != Tok::kNot) return ParseRelation();
    const size_t at = Next().offset;
    DepthGuard guard(this, at);
    if (fatal_) return MakeError(at);
    AstPtr n = MakeNode(AstKind::kNot, at, at);
    n->kids.push_back(ParseNot());
    Finish(n.get());
    return n;
  }

  AstPtr ParseRelation() {
    AstPtr n = ParseRelationOnce();
    if (!fatal_ && (IsRelOp(Peek().kind) || Peek().kind == Tok::kIn) &&
        (n->kind == AstKind::kCompare || n->kind == AstKind::kIn) &&
        !n->parenthesized) {
      Syntax(Peek().offset,
             absl::StrCat("comparisons do not chain: combine them with '&&' "
                          "(a < b && b < c), or add parentheses"));
    }
    return n;
  }

  AstPtr ParseRelationOnce() {
    AstPtr left = ParseAdditive();
    if (fatal_) return left;
    const Tok k = Peek().kind;
    if (IsRelOp(k)) {
      const size_t at = Next().offset;
      AstPtr n = MakeNode(AstKind::kCompare, left->start, at);
      n->cmp = ToCmpOp(k);
      n->kids.push_back(std::move(left));
      n->kids.push_back(ParseAdditive());
      Finish(n.get());
      return n;
    }
    if (k == Tok::kIn) {
      const size_t at = Next().offset;
      AstPtr n = MakeNode(AstKind::kIn, left->start, at);
      n->kids.push_back(std::move(left));
      if (Peek().kind != Tok::kLBracket) {
        Expected("'[' after 'in' ('in' takes a list such as [\"a\", \"b\"])");
        n->kids.push_back(MakeError(Peek().offset));
        Finish(n.get());
        return n;
      }
      const size_t lb = Next().offset;
      DepthGuard guard(this, lb);
      if (!fatal_) ParseSeq(Tok::kRBracket, &n->kids);
      Finish(n.get());
      return n;
    }
    return left;
  }

  AstPtr ParseAdditive() {
    AstPtr first = ParseUnary();
    if (fatal_) return first;
    Tok k = Peek().kind;
    if (k != Tok::kPlus && k != Tok::kMinus) return first;
    AstPtr n = MakeNode(AstKind::kAdditive, first->start, Peek().offset);
    n->kids.push_back(std::move(first));
    while (!fatal_ && (k == Tok::kPlus || k == Tok::kMinus)) {
      n->op_at.push_back(Next().offset);
      n->minus.push_back(k == Tok::kMinus);
      n->kids.push_back(ParseUnary());
      k = Peek().kind;
    }
    Finish(n.get());
    return n;
  }

  AstPtr ParseUnary() {
    if (fatal_) return MakeError(Peek().offset);
    if (Peek().kind != Tok::kMinus) return ParsePostfix();
    const size_t at = Next().offset;
    DepthGuard guard(this, at);
    if (fatal_) return MakeError(at);
    AstPtr operand = ParseUnary();
    // Negative literals are literals; this is also the only way to write
    // INT64_MIN, whose magnitude is out of range on its own.
    if (!operand->parenthesized) {
      switch (operand->kind) {
        case AstKind::kBigInt:
          operand->kind = AstKind::kInt;
          operand->int_value = INT64_MIN;
          operand->start = operand->at = at;
          return operand;
        case AstKind::kInt:
          if (operand->int_value == INT64_MIN) break;  // overflows: a Neg node
          operand->int_value = -operand->int_value;
          operand->start = operand->at = at;
          return operand;
        case AstKind::kDouble:
          operand->double_value = -operand->double_value;
          operand->start = operand->at = at;
          return operand;
        default:
          break;
      }
    }
    AstPtr n = MakeNode(AstKind::kNeg, at, at);
    n->kids.push_back(std::move(operand));
    Finish(n.get());
    return n;
  }

  AstPtr ParsePostfix() {
    AstPtr recv = ParsePrimary();
    while (!fatal_ && Peek().kind == Tok::kDot) {
      Next();
      if (Peek().kind == Tok::kSegment && Peek(1).kind == Tok::kLParen) {
        const Token& name = Next();
        recv = ParseCall(name, std::move(recv));
        continue;
      }
      if (Peek().kind == Tok::kSegment) {
        Syntax(Peek().offset,
               absl::StrCat("expected a method call such as "
                            ".contains(\"x\") after '.', got ",
                            DescribeToken(Peek()),
                            "; only event field paths have fields"));
      } else {
        Expected("a method name after '.'");
      }
      break;
    }
    return recv;
  }

  AstPtr Literal(AstKind kind) {
    const Token& t = Next();
    AstPtr n = MakeNode(kind, t.offset, t.offset);
    switch (kind) {
      case AstKind::kInt:
        n->int_value = static_cast<int64_t>(t.int_value);
        break;
      case AstKind::kDouble:
        n->double_value = t.double_value;
        break;
      case AstKind::kString:
        n->str = t.str;
        break;
      case AstKind::kBool:
        n->bool_value = t.kind == Tok::kTrue;
        break;
      default:
        break;
    }
    return n;
  }

  AstPtr ParsePrimary() {
    const Token& t = Peek();
    if (fatal_) return MakeError(t.offset);
    switch (t.kind) {
      case Tok::kInt:
        return Literal(t.int_value >= kInt64MinMagnitude ? AstKind::kBigInt
                                                         : AstKind::kInt);
      case Tok::kFloat:
        return Literal(AstKind::kDouble);
      case Tok::kString:
        return Literal(AstKind::kString);
      case Tok::kTrue:
      case Tok::kFalse:
        return Literal(AstKind::kBool);
      case Tok::kNull:
        return Literal(AstKind::kNull);
      case Tok::kLParen:
        return ParseParen();
      case Tok::kIdent:
        if (Peek(1).kind == Tok::kLParen) {
          const Token& name = Next();
          return ParseCall(name, nullptr);
        }
        if (t.text == "has") {
          Syntax(t.offset, "'has' is a function: write has(path)");
          Next();
          return MakeError(t.offset);
        }
        if (t.text == "not" &&
            (Peek(1).kind == Tok::kIdent || Peek(1).kind == Tok::kLParen)) {
          Syntax(t.offset, "unexpected 'not'; use '!' for negation");
          Next();
          return MakeError(t.offset);
        }
        return ParsePath();
      case Tok::kError:
        Next();
        panic_ = true;
        return MakeError(t.offset);
      case Tok::kNot:
        Syntax(t.offset,
               "'!' binds looser than comparisons and arithmetic; put the "
               "negation in parentheses: (!x)");
        return MakeError(t.offset);
      case Tok::kLBracket:
        Syntax(t.offset,
               "a list is only allowed after 'in': x in [\"a\", \"b\"]");
        return MakeError(t.offset);
      default: {
        std::string what = "an operand";
        if (pos_ > 0) {
          const Token& prev = tokens_[pos_ - 1];
          if (prev.kind != Tok::kError) {
            what = absl::StrCat("an operand after ", DescribeToken(prev));
          }
        }
        Expected(what);
        return MakeError(t.offset);
      }
    }
  }

  AstPtr ParseParen() {
    const size_t open = Next().offset;
    DepthGuard guard(this, open);
    if (fatal_) return MakeError(open);
    AstPtr inner = ParseCoalesce();
    if (fatal_) return inner;
    if (Peek().kind != Tok::kRParen) {
      Expected(absl::StrCat("')' to close the '(' at offset ", open));
      SkipTo(Tok::kRParen, /*stop_at_comma=*/false);
    }
    if (Peek().kind == Tok::kRParen) {
      Next();
      panic_ = false;
    }
    inner->parenthesized = true;
    inner->start = open;
    inner->depth += 1;
    if (inner->depth > kMaxExprDepth) TooDeep(open);
    return inner;
  }

  // name '(' args ')', with the receiver as first argument for a method.
  // The current token is '('.
  AstPtr ParseCall(const Token& name, AstPtr receiver) {
    const size_t open = Next().offset;
    DepthGuard guard(this, open);
    if (fatal_) return MakeError(name.offset);
    AstPtr n = MakeNode(AstKind::kCall,
                        receiver ? receiver->start : name.offset, name.offset);
    n->str = std::string(name.text);
    n->method = receiver != nullptr;
    if (receiver) n->kids.push_back(std::move(receiver));
    ParseSeq(Tok::kRParen, &n->kids);
    Finish(n.get());
    return n;
  }

  // ident { "." segment | "[" string "]" }, stopping before ".name(".
  AstPtr ParsePath() {
    const Token& first = Next();
    AstPtr n = MakeNode(AstKind::kPath, first.offset, first.offset);
    n->segments.emplace_back(first.text);
    while (true) {
      if (Peek().kind == Tok::kDot) {
        if (Peek(1).kind == Tok::kSegment) {
          if (Peek(2).kind == Tok::kLParen) break;  // a method call
          Next();
          n->segments.emplace_back(Next().text);
          continue;
        }
        Next();
        Expected("a field name after '.'");
        break;
      }
      if (Peek().kind == Tok::kLBracket) {
        Next();
        if (Peek().kind == Tok::kString) {
          n->segments.push_back(Next().str);
          if (Peek().kind == Tok::kRBracket) {
            Next();
            continue;
          }
          Expected("']' after the quoted field name");
          break;
        }
        if (Peek().kind == Tok::kInt) {
          Syntax(Peek().offset,
                 absl::StrCat("array elements are read as a path segment: "
                              "write .",
                              AV(Peek().text), " instead of [", AV(Peek().text),
                              "]"));
        } else {
          Expected("a quoted field name after '[', e.g. labels[\"app\"]");
        }
        SkipTo(Tok::kRBracket, /*stop_at_comma=*/false);
        if (Peek().kind == Tok::kRBracket) {
          Next();
          panic_ = false;
        }
        break;
      }
      break;
    }
    return n;
  }

  const std::vector<Token>& tokens_;
  std::vector<ExprError>* errors_;
  size_t pos_ = 0;
  int depth_ = 0;
  const int max_depth_;
  bool panic_ = false;
  bool fatal_ = false;
  bool depth_reported_ = false;
};

}  // namespace

AstPtr Parse(const std::vector<Token>& tokens, std::vector<ExprError>* errors,
             int max_depth) {
  return Parser(tokens, errors, max_depth).ParseAll();
}

}  // namespace invariantd::expr_internal
