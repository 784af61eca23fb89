// Violation: what a rule reports when the stream shows an impossible state.
//
// Everything here is owned (copied out of the event), so a Violation can be
// queued, stored and printed after the event is gone. Its `id` is a stable
// function of (rule, key, input position): re-evaluating the same input
// yields the same id, which is how outputs deduplicate after a replay.
#ifndef INVARIANTD_CORE_VIOLATION_H_
#define INVARIANTD_CORE_VIOLATION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/core/event.h"
#include "sidecar/core/hash.h"
#include "sidecar/core/value.h"

namespace invariantd {

struct Violation {
  std::string id;        // 32 hex digits, see MakeViolationId
  std::string rule;      // rule name
  std::string kind;      // invariant kind: monotonic, agreement, ...
  std::string severity;  // critical, error, warning, info
  std::string reason;    // kind-specific: regressed, gap, repeat, ...
  std::string message;   // one human sentence (unsanitized)
  // Key fields in rule order: (key name, value).
  std::vector<std::pair<std::string, OwnedValue>> key;
  std::string source;
  uint64_t line = 0;
  uint64_t offset = 0;
  uint64_t stream = 0;         // Position::stream (file: device and inode)
  OwnedValue observed;         // the value that contradicts the state
  OwnedValue previous;         // the state it contradicts (missing if none)
  uint64_t previous_line = 0;  // line that established `previous`, 0 if unknown
  std::string witness;         // raw bytes of the offending event

  // Rule metadata carried for outputs.
  std::string description;
  std::string runbook;
  std::vector<std::pair<std::string, std::string>> labels;
};

// id = XXH3-128 over (rule name, key hash, source, stream, offset, line),
// as hex: a function of the rule, the key and the input position only.
std::string MakeViolationId(std::string_view rule, const Hash128& key,
                            const Position& position);

}  // namespace invariantd

#endif  // INVARIANTD_CORE_VIOLATION_H_
