// Evidence queries shared by the HTTP API (GET /v1/violations) and the
// `invariantd evidence` commands.
#ifndef INVARIANTD_SIDECAR_EVIDENCE_QUERY_H_
#define INVARIANTD_SIDECAR_EVIDENCE_QUERY_H_

#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "exporters/evidence/store.h"

namespace invariantd {

inline constexpr size_t kMaxEvidencePage = 1000;

// A time bound: RFC 3339 ("2026-11-22T07:00:00Z", fractional seconds and
// offsets allowed) or milliseconds since the Unix epoch.
absl::StatusOr<int64_t> ParseTimeBound(std::string_view text);

// Parameters (name, value), already URL-decoded: rule, key (repeatable,
// "field=value"), since, until, limit (1..1000, default 100), cursor (from
// a previous page). Unknown names are errors.
absl::StatusOr<EvidenceQuery> ParseEvidenceQuery(
    const std::vector<std::pair<std::string, std::string>>& params);

// {"violations":[EvidenceJson...],"next_cursor":"<seq>"|null}: a cursor
// when the page is full (there may be more).
std::string EvidencePageJson(const std::vector<EvidenceRecord>& page,
                             size_t limit);

// `invariantd evidence verify|query|show`: read-only, usable while the
// daemon runs. Exit codes: 0 (verify: chain intact; show: found), 1
// (verify: chain broken; show: no such id), 2 (error).
struct EvidenceCommand {
  std::string action;  // verify, query, show
  std::string data_dir = "./data";
  bool json = false;             // verify: JSON report
  std::string format = "jsonl";  // query/show: jsonl | text
  std::vector<std::pair<std::string, std::string>> params;  // query
  std::string id;                                           // show
};
int RunEvidence(const EvidenceCommand& cmd, std::ostream& out,
                std::ostream& err);

// The store's path in a data directory.
std::string EvidencePath(const std::string& data_dir);
// The rule-state checkpoints' path in a data directory.
std::string StatePath(const std::string& data_dir);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_EVIDENCE_QUERY_H_
