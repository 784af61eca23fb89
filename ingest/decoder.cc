#include "ingest/decoder.h"

#include <charconv>
#include <cstdint>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "ingest/decoder_internal.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

constexpr int kMaxJsonDepth = 1024;

}  // namespace

absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name) {
  if (name == "json" || name == "jsonl" || name == "ndjson") {
    return InputFormat::kJson;
  }
  if (name == "logfmt") return InputFormat::kLogfmt;
  if (name == "regex") return InputFormat::kRegex;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown input format '", AV(name),
                   "' (expected json, jsonl, ndjson, logfmt or regex)"));
}

std::string_view InputFormatName(InputFormat format) {
  switch (format) {
    case InputFormat::kJson:
      return "json";
    case InputFormat::kLogfmt:
      return "logfmt";
    case InputFormat::kRegex:
      return "regex";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(
    const DecoderOptions& options, const FieldSet& fields) {
  if (absl::Status st = ingest_internal::ValidateLimits(options.limits);
      !st.ok()) {
    return st;
  }
  switch (options.format) {
    case InputFormat::kJson:
      // The upper bound keeps the decoder's recursion (which follows the
      // nesting) far from the stack's limits.
      return ingest_internal::MakeJsonDecoder(fields, options.limits);
    case InputFormat::kLogfmt:
      return ingest_internal::MakeLogfmtDecoder(fields, options.limits);
    case InputFormat::kRegex:
      return ingest_internal::MakeRegexDecoder(options.pattern, fields,
                                               options.limits);
  }
  return absl::InvalidArgumentError("unknown input format");
}

namespace ingest_internal {

absl::Status ValidateLimits(const DecoderLimits& limits) {
  // The upper bound keeps the JSON decoder's recursion (which follows the
  // nesting) far from the stack's limits.
  if (limits.max_depth < 1 || limits.max_depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_depth must be between 1 and ", kMaxJsonDepth,
                     ", got ", limits.max_depth));
  }
  if (limits.max_fields < 1) {
    return absl::InvalidArgumentError("max_fields must be at least 1");
  }
  if (limits.max_string_bytes < 1) {
    return absl::InvalidArgumentError("max_string_bytes must be at least 1");
  }
  return absl::OkStatus();
}

absl::Status CheckStringSize(size_t size, size_t offset,
                             const DecoderLimits& limits,
                             std::string_view* reason) {
  if (size <= limits.max_string_bytes) return absl::OkStatus();
  return Reject(reject::kStringTooLong,
                absl::StrCat("a string of ", size, " bytes (limit ",
                             limits.max_string_bytes, ")"),
                offset + 1, reason);
}

bool IsBlank(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  }
  return true;
}

absl::Status InvalidUtf8Error(std::string_view line, std::string_view* reason) {
  size_t i = 0;
  char32_t cp;
  while (i < line.size()) {
    const size_t len = DecodeUtf8(line, i, &cp);
    if (len == 0) break;
    i += len;
  }
  return Reject(reject::kInvalidUtf8, "invalid UTF-8",
                i < line.size() ? i + 1 : 0, reason);
}

absl::Status Reject(std::string_view reason_code, std::string_view what,
                    size_t column, std::string_view* reason) {
  if (reason != nullptr) *reason = reason_code;
  if (column == 0) return absl::InvalidArgumentError(AV(what));
  return absl::InvalidArgumentError(
      absl::StrCat(AV(what), " at column ", column));
}

namespace {

// Length of the longest prefix of `s` (from `i`) made of ASCII digits.
size_t Digits(std::string_view s, size_t i) {
  size_t j = i;
  while (j < s.size() && absl::ascii_isdigit(s[j])) ++j;
  return j - i;
}

}  // namespace

Value TypeByText(std::string_view text) {
  if (text.empty()) return Value::String(text);
  switch (text[0]) {
    case 't':
      if (text == "true") return Value::Bool(true);
      return Value::String(text);
    case 'f':
      if (text == "false") return Value::Bool(false);
      return Value::String(text);
    case 'n':
      if (text == "null") return Value::Null();
      return Value::String(text);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
      break;
    default:
      return Value::String(text);
  }
  // JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  size_t i = text[0] == '-' ? 1 : 0;
  const size_t int_digits = Digits(text, i);
  if (int_digits == 0) return Value::String(text);
  if (int_digits > 1 && text[i] == '0') return Value::String(text);
  i += int_digits;
  bool integral = true;
  if (i < text.size() && text[i] == '.') {
    const size_t frac = Digits(text, i + 1);
    if (frac == 0) return Value::String(text);
    i += 1 + frac;
    integral = false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '+' || text[i] == '-')) ++i;
    const size_t exp = Digits(text, i);
    if (exp == 0) return Value::String(text);
    i += exp;
    integral = false;
  }
  if (i != text.size()) return Value::String(text);
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (integral) {
    int64_t v = 0;
    const auto r = std::from_chars(first, last, v);
    if (r.ec == std::errc() && r.ptr == last) return Value::Int(v);
    // Out of int64 range: fall through to a double, like JSON's uint64.
  }
  double d = 0;
  const auto r = std::from_chars(first, last, d);
  if (r.ptr != last) return Value::String(text);
  // Outside double's range (1e999, 1e-999): keep the spelling as text.
  if (r.ec != std::errc()) return Value::String(text);
  return Value::Double(d);
}

}  // namespace ingest_internal
}  // namespace invariantd
