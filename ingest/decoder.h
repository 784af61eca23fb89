// Decoders turn one input record (a line) into an Event's projected fields.
//
// Formats:
//   json    one JSON object per line (simdjson on-demand). Nested objects are
//           addressed by dotted paths, arrays by numeric segments.
//   logfmt  key=value pairs (`a=1 b="two words" c`); a bare key is `true`.
//           Dotted keys (`event.nid=1`) match the same dotted path.
//   regex   RE2 named captures (`(?P<term>\d+)`) become fields.
// logfmt and regex values are typed by their spelling: an unquoted integer
// becomes an int, a decimal a double, `true`/`false` a bool, `null` null;
// anything else (and anything quoted) a string.
//
// Only the fields in the FieldSet given at construction are extracted
// (projection); a decoder never materializes fields nobody reads.
//
// Thread-safety: a Decoder is single-threaded (it owns parser buffers).
// Lifetime: the FieldSet must outlive the decoder; Values written into the
// Event are valid until the next Decode call on the same decoder.
#ifndef INVARIANTD_INGEST_DECODER_H_
#define INVARIANTD_INGEST_DECODER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sidecar/core/event.h"
#include "sidecar/core/field_path.h"

namespace invariantd {

enum class InputFormat { kJson, kLogfmt, kRegex };

// Parses "json" (also "jsonl", "ndjson"), "logfmt", "regex".
absl::StatusOr<InputFormat> ParseInputFormat(std::string_view name);
std::string_view InputFormatName(InputFormat format);

// Limits on one record (config `input.*`, docs/configuration.md). A record
// over a limit is rejected with the limit's reason and counted; the stream
// goes on with the next record.
struct DecoderLimits {
  int max_depth = 64;  // JSON nesting of objects and arrays (1..1024)
  // Fields in a record: JSON object members at every depth (array elements
  // are not counted), logfmt pairs.
  size_t max_fields = 10000;
  // Bytes of one string value (a JSON key or string as written, escapes
  // included; a logfmt value; a regex capture).
  size_t max_string_bytes = 256 << 10;
};

struct DecoderOptions {
  InputFormat format = InputFormat::kJson;
  std::string pattern;  // RE2 syntax, required for kRegex
  DecoderLimits limits;
};

// Stable reason codes for rejected records; used as counter labels and in
// summaries. A rejected record never stops the stream.
namespace reject {
inline constexpr std::string_view kInvalidJson = "invalid_json";
inline constexpr std::string_view kInvalidUtf8 = "invalid_utf8";
inline constexpr std::string_view kNotAnObject = "not_an_object";
inline constexpr std::string_view kTooDeep = "too_deep";
inline constexpr std::string_view kTooManyFields = "too_many_fields";
inline constexpr std::string_view kStringTooLong = "string_too_long";
inline constexpr std::string_view kInvalidLogfmt = "invalid_logfmt";
inline constexpr std::string_view kNoMatch = "no_match";
inline constexpr std::string_view kLineTooLong = "line_too_long";
inline constexpr std::string_view kEmptyLine = "empty_line";
}  // namespace reject

class Decoder {
 public:
  virtual ~Decoder() = default;

  // Decodes `line` (no trailing newline; kLinePadding readable bytes after
  // its end) into `event->fields`, which the caller has Reset to the
  // FieldSet's size. On a malformed record returns InvalidArgument with a
  // human-readable message (column where known) and sets `*reason` to one of
  // the reject:: codes.
  virtual absl::Status Decode(std::string_view line, Event* event,
                              std::string_view* reason) = 0;
};

// Fails (InvalidArgument) on a bad regex pattern or a regex without named
// groups.
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(
    const DecoderOptions& options, const FieldSet& fields);

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_DECODER_H_
