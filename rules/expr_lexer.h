// Lexer of the rule expression language (see rules/expr.h for the grammar).
//
// Internal to rules/expr*.cc. Lex() turns the whole text into tokens in one
// pass and reports every lexical error it finds (bad characters, bad escapes,
// out-of-range numbers); a token that could not be lexed becomes kError so
// the parser can skip it without reporting a second error for it.
#ifndef INVARIANTD_RULES_EXPR_LEXER_H_
#define INVARIANTD_RULES_EXPR_LEXER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "rules/expr.h"

namespace invariantd::expr_internal {

enum class Tok : uint8_t {
  kEnd,      // end of text (always the last token)
  kError,    // a lexical error, already reported
  kInt,      // digits; int_value holds the magnitude (at most 2^63)
  kFloat,    // digits with a fraction and/or exponent; double_value
  kString,   // quoted string; str holds the decoded bytes
  kIdent,    // identifier that is not a keyword
  kSegment,  // identifier characters right after '.': a field or method name
  kTrue,
  kFalse,
  kNull,
  kIn,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kDot,
  kNot,       // !
  kAnd,       // &&
  kOr,        // ||
  kCoalesce,  // ??
  kEq,        // ==
  kNe,        // !=
  kLt,
  kLe,
  kGt,
  kGe,
  kPlus,
  kMinus,
};

struct Token {
  Tok kind = Tok::kEnd;
  size_t offset = 0;      // byte offset of the token's first byte
  std::string_view text;  // the token's source bytes
  uint64_t int_value = 0;
  double double_value = 0;
  std::string str;
};

// 2^63: the magnitude of INT64_MIN, valid only right after a unary minus.
inline constexpr uint64_t kInt64MinMagnitude = uint64_t{1} << 63;

// Lexes all of `text`. Appends lexical errors to `errors`. The result always
// ends with a kEnd token whose offset is text.size().
std::vector<Token> Lex(std::string_view text, std::vector<ExprError>* errors);

// How a token is named in messages: "')'", "'foo'", "a string", "end of
// expression".
std::string DescribeToken(const Token& token);

// True for [A-Za-z0-9_$@].
bool IsIdentChar(char c);

}  // namespace invariantd::expr_internal

#endif  // INVARIANTD_RULES_EXPR_LEXER_H_
