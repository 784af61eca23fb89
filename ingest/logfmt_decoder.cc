// logfmt decoder.
//
// Grammar (close to go-logfmt, a little more lenient):
//   line   = sep* (pair (sep+ pair)*)? sep*     sep = ' ' | '\t'
//   pair   = key | key '=' | key '=' value
//   key    = one or more bytes other than sep, '=' and '"'
//   value  = '"' quoted '"' | bare
//   bare   = bytes other than sep and '"' ('=' is allowed: `url=/a?b=c`)
//   quoted = bytes other than '"' and '\', or escapes \" \\ \/ \n \t \r \b
//            \f \uXXXX (UTF-16, surrogate pairs combined)
// A bare key is `true`; `key=` is the empty string. A quoted value is always
// a string; a bare value is typed by its spelling (TypeByText). A closing
// quote must be followed by a separator or the end of the line. A repeated
// key: the last occurrence wins.
//
// Malformed records (a '"' in a key or bare value, `=value` without a key,
// an unterminated quote, a bad escape) are rejected as invalid_logfmt with
// the column of the offending byte; escapes are checked even in values no
// rule reads.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "ingest/decoder.h"
#include "ingest/decoder_internal.h"
#include "sidecar/core/event.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace ingest_internal {
namespace {

bool IsSep(char c) { return c == ' ' || c == '\t'; }

class LogfmtDecoder final : public Decoder {
 public:
  LogfmtDecoder(const FieldSet& fields, const DecoderLimits& limits)
      : fields_(fields), limits_(limits) {}

  absl::Status Decode(std::string_view line, Event* event,
                      std::string_view* reason) override;

 private:
  // Unescapes the content of a quoted value (`content`, which starts at
  // line offset `at`). Appends to `out` unless it is null (validation only).
  // On a bad escape returns false and sets `*column`.
  static bool Unescape(std::string_view content, size_t at, std::string* out,
                       size_t* column);

  const FieldSet& fields_;
  const DecoderLimits limits_;
  // Unescaped strings of the current record. Reserved to the line's size
  // before its first use in a Decode, which bounds everything appended to
  // it (unescaping never grows text), so views into it stay valid.
  std::string arena_;
};

bool LogfmtDecoder::Unescape(std::string_view content, size_t at,
                             std::string* out, size_t* column) {
  size_t j = 0;
  while (j < content.size()) {
    const char c = content[j];
    if (c != '\\') {
      if (out != nullptr) out->push_back(c);
      ++j;
      continue;
    }
    // The scanner never ends content with a lone backslash.
    const char e = content[j + 1];
    char plain = 0;
    switch (e) {
      case '"':
      case '\\':
      case '/':
        plain = e;
        break;
      case 'n':
        plain = '\n';
        break;
      case 't':
        plain = '\t';
        break;
      case 'r':
        plain = '\r';
        break;
      case 'b':
        plain = '\b';
        break;
      case 'f':
        plain = '\f';
        break;
      case 'u': {
        int32_t unit = ParseHex4(content, j + 2);
        if (unit < 0) {
          *column = at + j + 1;
          return false;
        }
        size_t consumed = 6;
        char32_t cp = static_cast<char32_t>(unit);
        if (unit >= 0xDC00 && unit <= 0xDFFF) {
          *column = at + j + 1;  // a low surrogate without a high one
          return false;
        }
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          const int32_t low = j + 7 < content.size() &&
                                      content[j + 6] == '\\' &&
                                      content[j + 7] == 'u'
                                  ? ParseHex4(content, j + 8)
                                  : -1;
          if (low < 0xDC00 || low > 0xDFFF) {
            *column = at + j + 1;  // a high surrogate without a low one
            return false;
          }
          cp = 0x10000 + ((static_cast<char32_t>(unit) - 0xD800) << 10) +
               (static_cast<char32_t>(low) - 0xDC00);
          consumed = 12;
        }
        if (out != nullptr) AppendUtf8(cp, out);
        j += consumed;
        continue;
      }
      default:
        *column = at + j + 1;
        return false;
    }
    if (out != nullptr) out->push_back(plain);
    j += 2;
  }
  return true;
}

absl::Status LogfmtDecoder::Decode(std::string_view line, Event* event,
                                   std::string_view* reason) {
  if (IsBlank(line)) return Reject(reject::kEmptyLine, "empty line", 0, reason);
  if (!IsValidUtf8Fast(line)) return InvalidUtf8Error(line, reason);
  const int slots = fields_.size();
  if (event->fields.size() != static_cast<size_t>(slots)) event->Reset(slots);
  arena_.clear();

  const size_t n = line.size();
  size_t i = 0;
  size_t pairs = 0;
  while (true) {
    while (i < n && IsSep(line[i])) ++i;
    if (i >= n) break;
    const size_t key_start = i;
    if (++pairs > limits_.max_fields) {
      return Reject(reject::kTooManyFields,
                    absl::StrCat("more than ", limits_.max_fields, " fields"),
                    i + 1, reason);
    }
    while (i < n && !IsSep(line[i]) && line[i] != '=' && line[i] != '"') ++i;
    if (i < n && line[i] == '"') {
      return Reject(reject::kInvalidLogfmt, "invalid logfmt: '\"' in a key",
                    i + 1, reason);
    }
    if (i == key_start) {
      return Reject(reject::kInvalidLogfmt, "invalid logfmt: '=' without a key",
                    i + 1, reason);
    }
    const int slot = fields_.FindDotted(line.substr(key_start, i - key_start));
    Value value = Value::Bool(true);
    if (i < n && line[i] == '=') {
      ++i;
      if (i < n && line[i] == '"') {
        const size_t quote = i++;
        const size_t start = i;
        bool escaped = false;
        while (i < n && line[i] != '"') {
          if (line[i] == '\\') {
            escaped = true;
            i += 2;
          } else {
            ++i;
          }
        }
        if (i >= n) {
          return Reject(reject::kInvalidLogfmt,
                        "invalid logfmt: unterminated quoted value", quote + 1,
                        reason);
        }
        const std::string_view content = line.substr(start, i - start);
        if (absl::Status st =
                CheckStringSize(content.size(), start, limits_, reason);
            !st.ok()) {
          return st;
        }
        ++i;  // the closing quote
        if (i < n && !IsSep(line[i])) {
          return Reject(reject::kInvalidLogfmt,
                        "invalid logfmt: expected a space after a quoted "
                        "value",
                        i + 1, reason);
        }
        if (!escaped) {
          value = Value::String(content);
        } else {
          std::string* out = nullptr;
          if (slot >= 0) {
            if (arena_.empty() && arena_.capacity() < n) arena_.reserve(n);
            out = &arena_;
          }
          const size_t at = arena_.size();
          size_t column = 0;
          if (!Unescape(content, start, out, &column)) {
            return Reject(reject::kInvalidLogfmt,
                          "invalid logfmt: bad escape in a quoted value",
                          column, reason);
          }
          value = Value::String(
              std::string_view(arena_.data() + at, arena_.size() - at));
        }
      } else {
        const size_t start = i;
        while (i < n && !IsSep(line[i])) {
          if (line[i] == '"') {
            return Reject(reject::kInvalidLogfmt,
                          "invalid logfmt: '\"' in an unquoted value", i + 1,
                          reason);
          }
          ++i;
        }
        if (absl::Status st =
                CheckStringSize(i - start, start, limits_, reason);
            !st.ok()) {
          return st;
        }
        if (slot >= 0) value = TypeByText(line.substr(start, i - start));
      }
    }
    if (slot >= 0) event->fields[static_cast<size_t>(slot)] = value;
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Decoder> MakeLogfmtDecoder(const FieldSet& fields,
                                           const DecoderLimits& limits) {
  return std::make_unique<LogfmtDecoder>(fields, limits);
}

}  // namespace ingest_internal
}  // namespace invariantd
