// The one sanitizer for untrusted text on its way to a human or a parser.
//
// Every path where input-derived text leaves the process in *text* form
// (terminal output, log lines, alert labels, metric labels) passes through
// SanitizeText. It makes the text inert and visible:
//   - C0 controls (incl. CR, LF, TAB, NUL, ESC), DEL and C1 controls become
//     visible escapes (\n, \r, \t, \x1b, \u0085 ...), so no input can start
//     a new log line or drive a terminal;
//   - U+2028/U+2029 and bidi controls (U+202A..U+202E, U+2066..U+2069,
//     U+200E/U+200F, U+061C) become \uXXXX;
//   - invalid UTF-8 bytes become \xNN;
//   - a backslash becomes \\ so that escapes are unambiguous;
//   - output longer than `max_bytes` is cut at a character boundary and ends
//     with "...[+N bytes]" so truncation is never silent.
// JSON outputs use AppendJsonString (json_text.h), which escapes the same
// set (IsInvisibleControl); evidence keeps the raw bytes.
#ifndef INVARIANTD_CORE_SANITIZE_H_
#define INVARIANTD_CORE_SANITIZE_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace invariantd {

inline constexpr size_t kDefaultSanitizeMaxBytes = 4096;

std::string SanitizeText(std::string_view in,
                         size_t max_bytes = kDefaultSanitizeMaxBytes);

}  // namespace invariantd

#endif  // INVARIANTD_CORE_SANITIZE_H_
