// How violations and run summaries are printed: `jsonl` (one JSON object per
// violation; the field names are a contract shared by replay, run and
// evidence queries) and `text` (one sanitized line per violation).
#ifndef INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_
#define INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "exporters/evidence/store.h"
#include "sidecar/core/violation.h"

namespace invariantd {

enum class OutputFormat { kJsonl, kText };

// One JSON object, no trailing newline. Fields: id, rule, kind, severity,
// reason, key (object: key name -> value), source, line, offset, observed,
// previous, previous_line, message, description, runbook, labels.
std::string ViolationJson(const Violation& v);

// "source:line: severity rule (kind/reason) key{...}: message" with every
// input-derived part sanitized.
std::string ViolationText(const Violation& v);

// The evidence record of `v` (key values as text for queries, typed JSON
// for the record), judged by the rule set with `ruleset_digest`.
EvidenceRecord ViolationEvidence(const Violation& v,
                                 std::string_view ruleset_digest,
                                 std::string_view version,
                                 int64_t detected_unix_ms);

// One stored violation as JSON (no trailing newline): the fields of
// ViolationJson that the store keeps (id, rule, kind, severity, reason,
// key, source, line, offset, observed, previous, previous_line, message),
// then the evidence fields: seq, stream, witness (text; invalid UTF-8
// replaced), witness_base64 (the exact bytes), ruleset_digest, version,
// detected_at (RFC 3339, informative), prev_hash, hash.
std::string EvidenceJson(const EvidenceRecord& r);

// "seq id source:line: severity rule (kind/reason) key{...}: message",
// sanitized.
std::string EvidenceText(const EvidenceRecord& r);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_
