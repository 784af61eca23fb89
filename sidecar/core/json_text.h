// JSON text helpers shared by every module that writes JSON.
//
// Parsing JSON is simdjson's job (ingest/); this header only *writes* JSON
// string literals, which every output path needs and which must be exactly
// right: quotes, backslashes and all control characters escaped, the line
// and paragraph separators U+2028/U+2029 escaped (they break JavaScript and
// some log viewers), and invalid UTF-8 replaced by U+FFFD so that the output
// is always valid UTF-8.
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

}  // namespace invariantd

#endif  // INVARIANTD_CORE_JSON_TEXT_H_
