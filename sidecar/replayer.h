// Replayer: reads records from files or streams, decodes them, and runs them
// through an Engine, handing violations to a sink. The single-threaded core
// of `invariantd replay` and `invariantd test`.
//
// Memory is bounded by the line cap and the rule state: input of any size
// streams through. A malformed record is skipped with a reason, counted,
// reported (the first few, with source:line), and the next record is read
// normally.
//
// Thread-safety: one thread. Lifetime: the RuleSet is shared-owned.
#ifndef INVARIANTD_SIDECAR_REPLAYER_H_
#define INVARIANTD_SIDECAR_REPLAYER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/decoder.h"
#include "ingest/line_reader.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace invariantd {

struct ReplayerOptions {
  // Overrides the rule set's `input` when set.
  std::optional<DecoderOptions> decoder;
  DecoderLimits limits;  // per record, whichever the format
  size_t max_line_bytes = 1 << 20;
  EngineOptions engine;
  // Rejected records reported individually (the rest are only counted).
  size_t max_reported_rejects = 20;
};

struct ReplayStats {
  uint64_t records = 0;  // lines read, including rejected ones
  uint64_t bytes = 0;
  std::map<std::string, uint64_t> rejected;  // by reason
  uint64_t violations = 0;
  uint64_t rejected_total() const {
    uint64_t n = 0;
    for (const auto& [r, c] : rejected) n += c;
    return n;
  }
};

using ViolationSink = std::function<void(const Violation&)>;

class Replayer {
 public:
  // Fails when the decoder cannot be built (bad regex, unknown format).
  static absl::StatusOr<std::unique_ptr<Replayer>> Create(
      std::shared_ptr<const RuleSet> rules, ReplayerOptions options);

  // Streams `fd` to its end. `source` names positions. I/O errors abort the
  // stream and are returned; bad records do not.
  absl::Status ProcessFd(int fd, std::string_view source,
                         const ViolationSink& sink);
  // Streams in-memory records through the same reader (via a memfd), so
  // tests and `invariantd test` exercise exactly the file path.
  absl::Status ProcessText(std::string_view text, std::string_view source,
                           const ViolationSink& sink);
  // Opens and streams a path ("-" is standard input).
  absl::Status ProcessPath(const std::string& path, const ViolationSink& sink);

  const ReplayStats& stats() const { return stats_; }
  const Engine& engine() const { return engine_; }
  // Messages about rejected records (sanitized, "source:line: reason: ...").
  const std::vector<std::string>& reject_messages() const {
    return reject_messages_;
  }
  // Human summary: events, rejects by reason, redelivered, per-rule counters.
  void WriteSummary(std::ostream& out) const;

 private:
  // One event in flight. Two slots alternate so that event N+1 is decoded
  // and prepared (its state prefetched) before event N is committed; each
  // slot owns a copy of its line and its own decoder, so N's values stay
  // valid meanwhile.
  struct Slot {
    std::unique_ptr<Decoder> decoder;
    std::string line;  // the record plus kLinePadding bytes
    Event event;
    PreparedEvent prepared;
  };

  Replayer(std::shared_ptr<const RuleSet> rules, ReplayerOptions options,
           std::unique_ptr<Decoder> a, std::unique_ptr<Decoder> b);
  void Reject(std::string_view source, uint64_t line, std::string_view reason,
              std::string_view detail);
  void CommitSlot(Slot& slot, const ViolationSink& sink);

  std::shared_ptr<const RuleSet> rules_;
  ReplayerOptions options_;
  Engine engine_;
  ReplayStats stats_;
  std::vector<std::string> reject_messages_;
  Slot slots_[2];
  std::vector<Violation> pending_;
};

// Decoder options declared by a rule set's `input`, or JSON by default.
absl::StatusOr<DecoderOptions> DecoderOptionsFor(const RuleSet& rules);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_REPLAYER_H_
