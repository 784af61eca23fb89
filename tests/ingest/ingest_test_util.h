// Helpers shared by the ingest tests.
#ifndef INVARIANTD_TESTS_INGEST_INGEST_TEST_UTIL_H_
#define INVARIANTD_TESTS_INGEST_INGEST_TEST_UTIL_H_

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "ingest/decoder.h"
#include "sidecar/core/event.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/value.h"

namespace invariantd {
namespace testing_util {

// Path of a file under the shared corpora, next to the project.
inline std::string CorpusPath(std::string_view relative) {
  return std::string(INVARIANTD_SOURCE_DIR "/../shared/corpora/") +
         std::string(relative);
}

// A private copy of `text` followed by kLinePadding bytes, as LineReader
// hands lines to decoders. Under ASan, reads past the padding are caught.
class PaddedLine {
 public:
  PaddedLine() = default;
  explicit PaddedLine(std::string_view text)
      : buf_(new char[text.size() + kLinePadding]()), size_(text.size()) {
    if (!text.empty()) std::memcpy(buf_.get(), text.data(), text.size());
  }
  std::string_view view() const {
    return std::string_view(buf_ ? buf_.get() : kEmpty, size_);
  }

 private:
  static constexpr char kEmpty[kLinePadding] = {};
  std::unique_ptr<char[]> buf_;
  size_t size_ = 0;
};

// A decoder over a FieldSet of the given paths, plus an Event to decode into.
class DecoderHarness {
 public:
  static absl::StatusOr<std::unique_ptr<DecoderHarness>> Make(
      DecoderOptions options, const std::vector<std::string>& paths) {
    auto h = std::unique_ptr<DecoderHarness>(new DecoderHarness());
    for (const std::string& p : paths) {
      absl::StatusOr<FieldPath> path = FieldPath::Parse(p);
      if (!path.ok()) return path.status();
      h->fields_->Add(*path);
    }
    absl::StatusOr<std::unique_ptr<Decoder>> d =
        MakeDecoder(options, *h->fields_);
    if (!d.ok()) return d.status();
    h->decoder_ = std::move(*d);
    return h;
  }

  // Decodes a padded copy of `line`. The copy lives until the next Decode.
  absl::Status Decode(std::string_view line) {
    line_ = PaddedLine(line);
    return DecodeInPlace(line_.view());
  }
  // Decodes `line` as is (the caller guarantees the padding).
  absl::Status DecodeInPlace(std::string_view line) {
    event_.Reset(fields_->size());
    reason_ = "unset";
    return decoder_->Decode(line, &event_, &reason_);
  }

  // The decoded value of `path` (which must be one of the harness's paths).
  Value Get(std::string_view path) const {
    absl::StatusOr<FieldPath> p = FieldPath::Parse(path);
    if (!p.ok()) return Value::Missing();
    const int slot = fields_->Find(*p);
    if (slot < 0) return Value::Missing();
    return event_.fields[static_cast<size_t>(slot)];
  }
  std::string_view reason() const { return reason_; }
  const Event& event() const { return event_; }
  const FieldSet& fields() const { return *fields_; }

 private:
  DecoderHarness() : fields_(std::make_unique<FieldSet>()) {}

  std::unique_ptr<FieldSet> fields_;
  std::unique_ptr<Decoder> decoder_;
  Event event_;
  std::string_view reason_;
  PaddedLine line_;
};

// Value matchers; a mismatch explains itself with the value's kind and JSON.
MATCHER(IsMissing, "is missing") {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_missing();
}
MATCHER(IsNull, "is null") {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_null();
}
MATCHER_P(IsBool, b, "is bool " + ::testing::PrintToString(b)) {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_bool() && arg.bool_value() == b;
}
MATCHER_P(IsInt, i, "is int " + ::testing::PrintToString(i)) {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_int() && arg.int_value() == static_cast<int64_t>(i);
}
MATCHER_P(IsDouble, d, "is double " + ::testing::PrintToString(d)) {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_double() && arg.double_value() == static_cast<double>(d);
}
MATCHER_P(IsString, s, "is string " + ::testing::PrintToString(s)) {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_string() && arg.str() == std::string_view(s);
}
MATCHER_P(IsJson, s, "is raw JSON " + ::testing::PrintToString(s)) {
  *result_listener << "which is " << ValueKindName(arg.kind()) << " "
                   << arg.ToJson();
  return arg.is_json() && arg.str() == std::string_view(s);
}

// Status matchers that look at the code and the message.
MATCHER_P(IsInvalidArgumentWith, text,
          "is InvalidArgument containing " + ::testing::PrintToString(text)) {
  *result_listener << "which is " << arg.ToString();
  return arg.code() == absl::StatusCode::kInvalidArgument &&
         std::string_view(arg.message().data(), arg.message().size())
                 .find(std::string_view(text)) != std::string_view::npos;
}

inline DecoderOptions JsonOptions(int max_depth = 64) {
  DecoderOptions o;
  o.format = InputFormat::kJson;
  o.limits.max_depth = max_depth;
  return o;
}
inline DecoderOptions LogfmtOptions() {
  DecoderOptions o;
  o.format = InputFormat::kLogfmt;
  return o;
}
inline DecoderOptions RegexOptions(std::string pattern) {
  DecoderOptions o;
  o.format = InputFormat::kRegex;
  o.pattern = std::move(pattern);
  return o;
}

}  // namespace testing_util
}  // namespace invariantd

#endif  // INVARIANTD_TESTS_INGEST_INGEST_TEST_UTIL_H_
