// Regex decoder: RE2 named capture groups become fields.
//
// - The pattern is searched for anywhere in the line (RE2 UNANCHORED, like
//   RE2::PartialMatch); anchor it with ^...$ to demand a whole-line match.
//   No match -> no_match.
// - A group's name is looked up as a flat field key (FieldSet::FindDotted),
//   so `(?P<term>\d+)` fills the path `term`. RE2 group names are word
//   characters only, so a regex can fill only single-segment paths. Groups
//   whose name no rule reads are not extracted.
// - A group that does not participate in the match leaves its field missing;
//   one that matched the empty string gives "". When several groups share a
//   name (`(?P<id>\d+)|id=(?P<id>\w+)`), the first (leftmost) group that
//   participated gives the value.
// - Captured text is typed by its spelling (TypeByText) and viewed in place
//   in the line.
#include <re2/re2.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ingest/decoder.h"
#include "ingest/decoder_internal.h"
#include "sidecar/core/event.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace ingest_internal {
namespace {

class RegexDecoder final : public Decoder {
 public:
  struct Capture {
    int group;  // RE2 submatch index (>= 1)
    int slot;
  };

  RegexDecoder(std::unique_ptr<RE2> re, std::vector<Capture> captures,
               int slots, const DecoderLimits& limits)
      : re_(std::move(re)),
        captures_(std::move(captures)),
        slots_(slots),
        limits_(limits) {
    int groups = 0;
    for (const Capture& c : captures_) groups = std::max(groups, c.group);
    // Without any captured field, ask for no submatch at all (faster).
    submatches_.resize(captures_.empty() ? 0 : static_cast<size_t>(groups) + 1);
  }

  absl::Status Decode(std::string_view line, Event* event,
                      std::string_view* reason) override {
    if (IsBlank(line)) {
      return Reject(reject::kEmptyLine, "empty line", 0, reason);
    }
    if (!IsValidUtf8Fast(line)) return InvalidUtf8Error(line, reason);
    if (event->fields.size() != static_cast<size_t>(slots_)) {
      event->Reset(slots_);
    }
    const re2::StringPiece text(line.data(), line.size());
    if (!re_->Match(text, 0, text.size(), RE2::UNANCHORED, submatches_.data(),
                    static_cast<int>(submatches_.size()))) {
      return Reject(reject::kNoMatch, "line does not match the pattern", 0,
                    reason);
    }
    for (const Capture& c : captures_) {
      const re2::StringPiece& m = submatches_[static_cast<size_t>(c.group)];
      if (m.data() == nullptr) continue;  // did not participate
      if (absl::Status st = CheckStringSize(
              m.size(), static_cast<size_t>(m.data() - line.data()), limits_,
              reason);
          !st.ok()) {
        return st;
      }
      Value& field = event->fields[static_cast<size_t>(c.slot)];
      if (!field.is_missing()) continue;  // an earlier same-named group won
      field = TypeByText(std::string_view(m.data(), m.size()));
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<RE2> re_;
  std::vector<Capture> captures_;
  int slots_;
  const DecoderLimits limits_;
  std::vector<re2::StringPiece> submatches_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeRegexDecoder(
    const std::string& pattern, const FieldSet& fields,
    const DecoderLimits& limits) {
  if (pattern.empty()) {
    return absl::InvalidArgumentError(
        "the regex input format needs a pattern with named groups, e.g. "
        "(?P<term>\\d+)");
  }
  RE2::Options options;
  options.set_log_errors(false);
  auto re = std::make_unique<RE2>(pattern, options);
  if (!re->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid regex pattern '", pattern, "': ", re->error()));
  }
  const std::map<std::string, int>& groups = re->NamedCapturingGroups();
  if (groups.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("regex pattern '", pattern,
                     "' has no named groups; name what to extract with "
                     "(?P<field>...)"));
  }
  // By group index, so that of several groups sharing a name (alternatives)
  // the first one that participated wins.
  std::vector<RegexDecoder::Capture> captures;
  for (const auto& [group, name] : re->CapturingGroupNames()) {
    const int slot = fields.FindDotted(name);
    if (slot >= 0) captures.push_back({group, slot});
  }
  return std::make_unique<RegexDecoder>(std::move(re), std::move(captures),
                                        fields.size(), limits);
}

}  // namespace ingest_internal
}  // namespace invariantd
