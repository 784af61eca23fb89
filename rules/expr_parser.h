// Recursive-descent parser of the rule expression language (grammar in
// rules/expr.h). Internal to rules/expr*.cc.
//
// Error handling: the first syntax error puts the parser in panic mode, in
// which further syntax errors are not reported until it re-synchronizes at a
// ',' or closing bracket of an argument list, list or parenthesis; so
// independent mistakes in different arguments are all reported, cascades of
// one mistake are not. Nesting deeper than the limit stops the parse
// (one error), so recursion depth is bounded whatever the input.
#ifndef INVARIANTD_RULES_EXPR_PARSER_H_
#define INVARIANTD_RULES_EXPR_PARSER_H_

#include <vector>

#include "rules/expr.h"
#include "rules/expr_ast.h"
#include "rules/expr_lexer.h"

namespace invariantd::expr_internal {

// Parses `tokens` (from Lex, ending with kEnd). Never returns null: parts
// that could not be parsed are kError nodes, and errors are appended to
// `errors`.
// Nesting deeper than `max_depth` (at most kMaxExprDepthLimit) stops it.
AstPtr Parse(const std::vector<Token>& tokens, std::vector<ExprError>* errors,
             int max_depth = kMaxExprDepth);

}  // namespace invariantd::expr_internal

#endif  // INVARIANTD_RULES_EXPR_PARSER_H_
