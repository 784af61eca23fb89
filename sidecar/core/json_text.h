// JSON text helpers shared by every module that writes JSON, and the UTF-8
// primitives behind them and behind the sanitizer.
//
// Parsing JSON is simdjson's job (ingest/); this header only *writes* JSON
// string literals, which every output path needs and which must be exactly
// right: quotes, backslashes, C0 controls and DEL escaped, and every code
// point in IsInvisibleControl (C1 controls, U+2028/U+2029, bidi controls)
// written as \uXXXX -- the same set SanitizeText neutralizes -- so no JSON
// output can carry a raw line separator or a text-reordering control; invalid
// UTF-8 is replaced by U+FFFD so the output is always valid UTF-8.
#ifndef INVARIANTD_CORE_JSON_TEXT_H_
#define INVARIANTD_CORE_JSON_TEXT_H_

#include <string>
#include <string_view>

namespace invariantd {

// Appends `s` as a quoted JSON string literal to `out`.
void AppendJsonString(std::string_view s, std::string* out);

// Returns `s` as a quoted JSON string literal.
std::string JsonString(std::string_view s);

// Length in bytes of the valid UTF-8 sequence starting at s[i], or 0 when the
// bytes there are not valid UTF-8 (overlong forms, surrogates and code points
// above U+10FFFF are invalid). `cp` receives the code point when valid.
size_t DecodeUtf8(std::string_view s, size_t i, char32_t* cp);

// True when all of `s` is valid UTF-8.
bool IsValidUtf8(std::string_view s);

// C1 controls, line/paragraph separators and bidi controls: invisible code
// points that can forge or reorder text in a log viewer or terminal.
bool IsInvisibleControl(char32_t cp);

// Appends the UTF-8 encoding of code point `cp` (<= U+10FFFF).
void AppendUtf8(char32_t cp, std::string* out);

// The 4 hex digits at s[i..i+4) as a number (a UTF-16 code unit of a
// `\uXXXX` escape), or -1 when they are not there.
int ParseHex4(std::string_view s, size_t i);

}  // namespace invariantd

#endif  // INVARIANTD_CORE_JSON_TEXT_H_
