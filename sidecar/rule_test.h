// `invariantd test`: unit tests for rules, written in YAML, in the spirit of
// `promtool test rules` and `vector test`.
//
//   rule_files: [../packs/etcd-raft.yaml]   # relative to this file
//   # or inline: `rules: [...]` (and optional `input:`), as in a rule file
//   tests:
//     - name: a term regression is caught where it happens
//       events: |                            # inline records, one per line
//         {"event": {...}}
//       # or: events_file: path/to/trace.ndjson (relative to this file)
//       # or: events: ['{"a":1}', '{"a":0}'] (a list of records)
//       source: node-1                       # optional source name
//       expect:                              # exactly these violations
//         - rule: term-never-regresses
//           line: 3
//           key: {event.nid: "1"}            # optional, compared as text
//           reason: regressed                # optional
//
// A test passes when the violations produced are exactly the expected ones
// (as a multiset, matching on the fields each expectation gives). On a
// mismatch the output lists what was missing and what was unexpected.
#ifndef INVARIANTD_SIDECAR_RULE_TEST_H_
#define INVARIANTD_SIDECAR_RULE_TEST_H_

#include <ostream>
#include <string>
#include <vector>

namespace invariantd {

struct RuleTestResult {
  int passed = 0;
  int failed = 0;
  int errors = 0;  // files that could not be loaded (bad YAML, bad rules)
};

// Runs every test in every file, writing a report to `out`.
RuleTestResult RunRuleTestFiles(const std::vector<std::string>& files,
                                std::ostream& out);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_RULE_TEST_H_
