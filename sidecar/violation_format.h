// How violations and run summaries are printed: `jsonl` (one JSON object per
// violation; the field names are a contract shared by replay, run and
// evidence queries) and `text` (one sanitized line per violation).
#ifndef INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_
#define INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_

#include <string>

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

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_VIOLATION_FORMAT_H_
