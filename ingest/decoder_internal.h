// Private to ingest/: the per-format decoder factories and the helpers the
// text formats share. Not part of the module's interface.
#ifndef INVARIANTD_INGEST_DECODER_INTERNAL_H_
#define INVARIANTD_INGEST_DECODER_INTERNAL_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/decoder.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/value.h"

namespace invariantd {
namespace ingest_internal {

std::unique_ptr<Decoder> MakeJsonDecoder(const FieldSet& fields,
                                         const DecoderLimits& limits);
std::unique_ptr<Decoder> MakeLogfmtDecoder(const FieldSet& fields,
                                           const DecoderLimits& limits);
absl::StatusOr<std::unique_ptr<Decoder>> MakeRegexDecoder(
    const std::string& pattern, const FieldSet& fields,
    const DecoderLimits& limits);

// True when `line` is empty or holds only spaces, tabs, '\r' and '\n'.
bool IsBlank(std::string_view line);

// True when all of `s` is valid UTF-8 (simdjson's SIMD validator; defined in
// json_decoder.cc so that simdjson stays in one file).
bool IsValidUtf8Fast(std::string_view s);

// Builds the kInvalidUtf8 rejection for `line`, naming the column (1-based)
// of the first invalid byte.
absl::Status InvalidUtf8Error(std::string_view line, std::string_view* reason);

// Sets `*reason` and returns InvalidArgument("<what> at column <column>");
// `column` is 1-based, 0 when unknown (then no column is named).
absl::Status Reject(std::string_view reason_code, std::string_view what,
                    size_t column, std::string_view* reason);

// Types the text of a logfmt value or a regex capture by its spelling:
// `true`/`false` -> bool, `null` -> null, a JSON-grammar integer -> int (a
// double when it overflows int64), a JSON-grammar decimal or exponent form
// -> double, anything else (including "", "+1", "01", ".5", "1.", "inf")
// -> string. The returned Value views `text`.
Value TypeByText(std::string_view text);

// The rejection of a string value of `size` bytes starting at 0-based
// `offset` of the line, when it is over the limit (else OK).
absl::Status CheckStringSize(size_t size, size_t offset,
                             const DecoderLimits& limits,
                             std::string_view* reason);
// Checks the limits; an error names the limit and its value.
absl::Status ValidateLimits(const DecoderLimits& limits);

}  // namespace ingest_internal
}  // namespace invariantd

#endif  // INVARIANTD_INGEST_DECODER_INTERNAL_H_
