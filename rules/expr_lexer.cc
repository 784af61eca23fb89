#include "rules/expr_lexer.h"

#include <charconv>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/strings.h"

namespace invariantd::expr_internal {
namespace {

bool IsIdentStart(char c) {
  return absl::ascii_isalpha(c) || c == '_' || c == '$' || c == '@';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}
bool StartsToken(char c) {
  if (IsSpace(c) || IsIdentChar(c)) return true;
  switch (c) {
    case '"':
    case '\'':
    case '!':
    case '&':
    case '|':
    case '?':
    case '=':
    case '<':
    case '>':
    case '+':
    case '-':
    case '(':
    case ')':
    case '[':
    case ']':
    case ',':
    case '.':
      return true;
    default:
      return false;
  }
}

// A byte as it appears in a message: 'x' when printable ASCII.
std::string DescribeChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7F) return absl::StrCat("'", std::string(1, c), "'");
  if (u >= 0x80) return absl::StrFormat("non-ASCII byte 0x%02x", u);
  return absl::StrFormat("control character 0x%02x", u);
}

// Source text for a message, shortened when long (tokens are printable
// ASCII here: identifiers, digits, punctuation).
std::string Shorten(std::string_view s) {
  constexpr size_t kMax = 40;
  if (s.size() <= kMax) return std::string(s);
  return absl::StrCat(AV(s.substr(0, kMax)), "...");
}

class Lexer {
 public:
  Lexer(std::string_view text, std::vector<ExprError>* errors)
      : text_(text), errors_(errors) {}

  std::vector<Token> Run() {
    while (true) {
      while (i_ < text_.size() && IsSpace(text_[i_])) ++i_;
      if (i_ >= text_.size()) break;
      LexOne();
    }
    Token end;
    end.kind = Tok::kEnd;
    end.offset = text_.size();
    tokens_.push_back(std::move(end));
    return std::move(tokens_);
  }

 private:
  void Error(size_t offset, std::string message) {
    errors_->push_back(ExprError{offset, std::move(message)});
  }

  Token& Emit(Tok kind, size_t start, size_t end) {
    Token t;
    t.kind = kind;
    t.offset = start;
    t.text = text_.substr(start, end - start);
    tokens_.push_back(std::move(t));
    i_ = end;
    return tokens_.back();
  }

  bool At(size_t k, char c) const { return k < text_.size() && text_[k] == c; }

  void LexOne() {
    const size_t start = i_;
    const char c = text_[i_];
    const bool after_dot = !tokens_.empty() && tokens_.back().kind == Tok::kDot;
    if (after_dot && IsIdentChar(c)) {
      size_t j = i_;
      while (j < text_.size() && IsIdentChar(text_[j])) ++j;
      Emit(Tok::kSegment, start, j);
      return;
    }
    if (IsIdentStart(c)) {
      size_t j = i_;
      while (j < text_.size() && IsIdentChar(text_[j])) ++j;
      const std::string_view word = text_.substr(start, j - start);
      Tok kind = Tok::kIdent;
      if (word == "true") {
        kind = Tok::kTrue;
      } else if (word == "false") {
        kind = Tok::kFalse;
      } else if (word == "null") {
        kind = Tok::kNull;
      } else if (word == "in") {
        kind = Tok::kIn;
      }
      Emit(kind, start, j);
      return;
    }
    if (IsDigit(c)) {
      LexNumber();
      return;
    }
    if (c == '"' || c == '\'') {
      LexString();
      return;
    }
    switch (c) {
      case '(':
        Emit(Tok::kLParen, start, start + 1);
        return;
      case ')':
        Emit(Tok::kRParen, start, start + 1);
        return;
      case '[':
        Emit(Tok::kLBracket, start, start + 1);
        return;
      case ']':
        Emit(Tok::kRBracket, start, start + 1);
        return;
      case ',':
        Emit(Tok::kComma, start, start + 1);
        return;
      case '.':
        Emit(Tok::kDot, start, start + 1);
        return;
      case '+':
        Emit(Tok::kPlus, start, start + 1);
        return;
      case '-':
        Emit(Tok::kMinus, start, start + 1);
        return;
      case '!':
        if (At(start + 1, '=')) {
          Emit(Tok::kNe, start, start + 2);
        } else {
          Emit(Tok::kNot, start, start + 1);
        }
        return;
      case '<':
        if (At(start + 1, '=')) {
          Emit(Tok::kLe, start, start + 2);
        } else {
          Emit(Tok::kLt, start, start + 1);
        }
        return;
      case '>':
        if (At(start + 1, '=')) {
          Emit(Tok::kGe, start, start + 2);
        } else {
          Emit(Tok::kGt, start, start + 1);
        }
        return;
      case '=':
        if (At(start + 1, '=')) {
          Emit(Tok::kEq, start, start + 2);
        } else {
          Error(start, "unexpected '='; use '==' to compare");
          Emit(Tok::kError, start, start + 1);
        }
        return;
      case '&':
        if (At(start + 1, '&')) {
          Emit(Tok::kAnd, start, start + 2);
        } else {
          Error(start, "unexpected '&'; did you mean '&&'?");
          Emit(Tok::kError, start, start + 1);
        }
        return;
      case '|':
        if (At(start + 1, '|')) {
          Emit(Tok::kOr, start, start + 2);
        } else {
          Error(start, "unexpected '|'; did you mean '||'?");
          Emit(Tok::kError, start, start + 1);
        }
        return;
      case '?':
        if (At(start + 1, '?')) {
          Emit(Tok::kCoalesce, start, start + 2);
        } else {
          Error(start,
                "unexpected '?'; there is no conditional operator (did you "
                "mean '?"
                "?'?)");
          Emit(Tok::kError, start, start + 1);
        }
        return;
      default:
        break;
    }
    // A run of characters that cannot start a token: one error for the run.
    // A word with non-ASCII letters is one error too.
    const bool non_ascii = static_cast<unsigned char>(c) >= 0x80;
    size_t j = start;
    while (j < text_.size() &&
           (!StartsToken(text_[j]) || (non_ascii && IsIdentChar(text_[j])))) {
      ++j;
    }
    std::string message = absl::StrCat("unexpected ", DescribeChar(c));
    if (static_cast<unsigned char>(c) >= 0x80) {
      absl::StrAppend(&message,
                      "; a field name with such characters must be quoted, "
                      "e.g. parent[\"name\"]");
    }
    Error(start, std::move(message));
    Emit(Tok::kError, start, j);
  }

  void LexNumber() {
    const size_t start = i_;
    size_t j = i_;
    while (j < text_.size() && IsDigit(text_[j])) ++j;
    bool is_float = false;
    if (At(j, '.') && j + 1 < text_.size() && IsDigit(text_[j + 1])) {
      is_float = true;
      j += 1;
      while (j < text_.size() && IsDigit(text_[j])) ++j;
    }
    if (j < text_.size() && (text_[j] == 'e' || text_[j] == 'E')) {
      size_t k = j + 1;
      if (At(k, '+') || At(k, '-')) ++k;
      if (k < text_.size() && IsDigit(text_[k])) {
        is_float = true;
        j = k;
        while (j < text_.size() && IsDigit(text_[j])) ++j;
      }
    }
    if (j < text_.size() && IsIdentChar(text_[j])) {
      while (j < text_.size() && IsIdentChar(text_[j])) ++j;
      Error(start, absl::StrCat("invalid number '",
                                Shorten(text_.substr(start, j - start)),
                                "'; numbers are decimal, like 42, 1.5 or 1e3"));
      Emit(Tok::kError, start, j);
      return;
    }
    const std::string_view digits = text_.substr(start, j - start);
    if (is_float) {
      double d = 0;
      const auto res =
          std::from_chars(digits.data(), digits.data() + digits.size(), d);
      if (res.ec != std::errc() || res.ptr != digits.data() + digits.size()) {
        Error(start, absl::StrCat("number ", Shorten(digits),
                                  " is out of range for a double"));
        Emit(Tok::kError, start, j);
        return;
      }
      Emit(Tok::kFloat, start, j).double_value = d;
      return;
    }
    uint64_t v = 0;
    bool overflow = false;
    for (char d : digits) {
      const uint64_t digit = static_cast<uint64_t>(d - '0');
      if (v > (kInt64MinMagnitude - digit) / 10) {
        overflow = true;
        break;
      }
      v = v * 10 + digit;
    }
    if (overflow) {
      Error(start, absl::StrCat("integer ", Shorten(digits),
                                " is out of range for int64 (at most "
                                "9223372036854775807)"));
      Emit(Tok::kError, start, j);
      return;
    }
    Emit(Tok::kInt, start, j).int_value = v;
  }

  void LexString() {
    const size_t start = i_;
    const char quote = text_[i_];
    std::string out;
    std::vector<ExprError> local;
    size_t j = i_ + 1;
    bool terminated = false;
    while (j < text_.size()) {
      const char c = text_[j];
      if (c == quote) {
        terminated = true;
        ++j;
        break;
      }
      if (c == '\\') {
        if (j + 1 >= text_.size()) {
          ++j;
          break;
        }
        const char e = text_[j + 1];
        switch (e) {
          case '"':
          case '\'':
          case '\\':
            out.push_back(e);
            j += 2;
            continue;
          case 'n':
            out.push_back('\n');
            j += 2;
            continue;
          case 't':
            out.push_back('\t');
            j += 2;
            continue;
          case 'r':
            out.push_back('\r');
            j += 2;
            continue;
          case 'u':
            j = LexUnicodeEscape(j, &out, &local);
            continue;
          default:
            local.push_back(ExprError{
                j, absl::StrCat("invalid escape '\\", DescribeEscaped(e),
                                "' in string; the escapes are \\\" \\' \\\\ "
                                "\\n \\t \\r and \\uXXXX")});
            j += 2;
            continue;
        }
      }
      const auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u == 0x7F) {
        local.push_back(ExprError{
            j, absl::StrCat(DescribeChar(c),
                            " in string; write it as an escape such as \\n, "
                            "\\t or \\u0001")});
        ++j;
        continue;
      }
      out.push_back(c);
      ++j;
    }
    if (!terminated) {
      Error(start, absl::StrCat("unterminated string; add the closing ",
                                quote == '"' ? "'\"'" : "\"'\""));
      Emit(Tok::kError, start, text_.size());
      return;
    }
    for (ExprError& e : local) errors_->push_back(std::move(e));
    Emit(Tok::kString, start, j).str = std::move(out);
  }

  // The escaped character of an invalid escape, for the message.
  static std::string DescribeEscaped(char e) {
    const auto u = static_cast<unsigned char>(e);
    if (u >= 0x20 && u < 0x7F) return std::string(1, e);
    return absl::StrFormat("x%02x", u);
  }

  // Decodes \uXXXX (and a following low surrogate) at text_[j]; returns the
  // offset after it.
  size_t LexUnicodeEscape(size_t j, std::string* out,
                          std::vector<ExprError>* local) {
    const int hi = ParseHex4(text_, j + 2);
    if (hi < 0) {
      local->push_back(
          ExprError{j, "'\\u' must be followed by exactly 4 hex digits"});
      return j + 2;
    }
    if (hi >= 0xDC00 && hi <= 0xDFFF) {
      local->push_back(ExprError{
          j,
          "lone low surrogate in \\u escape; a low surrogate must follow "
          "a high surrogate (\\uD800-\\uDBFF)"});
      return j + 6;
    }
    if (hi >= 0xD800 && hi <= 0xDBFF) {
      const int lo =
          (At(j + 6, '\\') && At(j + 7, 'u')) ? ParseHex4(text_, j + 8) : -1;
      if (lo < 0xDC00 || lo > 0xDFFF) {
        local->push_back(
            ExprError{j,
                      "high surrogate in \\u escape must be followed by a low "
                      "surrogate \\uDC00-\\uDFFF"});
        return j + 6;
      }
      const uint32_t cp = 0x10000 +
                          ((static_cast<uint32_t>(hi) - 0xD800) << 10) +
                          (static_cast<uint32_t>(lo) - 0xDC00);
      AppendUtf8(cp, out);
      return j + 12;
    }
    AppendUtf8(static_cast<char32_t>(hi), out);
    return j + 6;
  }

  std::string_view text_;
  std::vector<ExprError>* errors_;
  std::vector<Token> tokens_;
  size_t i_ = 0;
};

}  // namespace

bool IsIdentChar(char c) {
  return absl::ascii_isalnum(c) || c == '_' || c == '$' || c == '@';
}

std::vector<Token> Lex(std::string_view text, std::vector<ExprError>* errors) {
  return Lexer(text, errors).Run();
}

std::string DescribeToken(const Token& token) {
  switch (token.kind) {
    case Tok::kEnd:
      return "end of expression";
    case Tok::kError:
      return "an invalid token";
    case Tok::kString:
      return "a string";
    case Tok::kInt:
    case Tok::kFloat:
      return absl::StrCat("number ", Shorten(token.text));
    default:
      return absl::StrCat("'", Shorten(token.text), "'");
  }
}

}  // namespace invariantd::expr_internal
