// Rule, RuleSet and loading: rule files (YAML) -> diagnostics -> an
// immutable, compiled RuleSet.
//
// Loading runs in three stages, each with its own tests: read (YAML parse,
// with parse errors located), check (schema: required and unknown fields,
// types, names, kinds), compile (expressions and kind configs). All
// problems of all files are reported in one pass; a RuleSet is produced only
// when there is none.
//
// A rule file:
//
//   input:                  # optional: how events are decoded
//     format: json          # json | logfmt | regex
//     pattern: '...'        # regex only: RE2 with named groups
//     id: expr              # optional event identity (default: raw bytes)
//   rules:
//     - name: term-never-regresses
//       kind: monotonic     # see rules/kinds/
//       when: expr          # optional filter
//       key: [event.nid]    # per-key scope: expressions, or {name: expr}
//       field: event.state.term
//       severity: critical  # critical | error | warning | info
//       description: ...
//       runbook: https://...
//       labels: {team: storage}
//       max_keys: 1000000
//       on_overflow: evict_oldest   # or reject_new
//       export_gauge: false         # monotonic/sequence: field as a gauge
//
// Thread-safety: a RuleSet is immutable after loading; share it through
// std::shared_ptr<const RuleSet> and use it from any thread.
#ifndef INVARIANTD_RULES_RULE_SET_H_
#define INVARIANTD_RULES_RULE_SET_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rules/diagnostic.h"
#include "rules/expr.h"
#include "rules/key_table.h"
#include "rules/kind.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/hash.h"

namespace invariantd {

inline constexpr size_t kDefaultMaxKeys = 1'000'000;
inline constexpr size_t kMaxRuleFileBytes = 4 << 20;

struct KeyField {
  std::string name;  // the path text, or the name given in {name: expr}
  std::unique_ptr<Expr> expr;
};

struct Rule {
  std::string name;
  std::string kind;
  std::string severity = "critical";
  std::string description;
  std::string runbook;
  std::vector<std::pair<std::string, std::string>> labels;
  std::unique_ptr<Expr> when;  // null: every event
  std::vector<KeyField> key;   // empty: one global key
  int key_group = 0;  // rules with identical key expressions share a group
  size_t max_keys = kDefaultMaxKeys;
  // Keys the state is sized for at its creation (0: it grows from empty).
  size_t expected_keys = 0;
  OverflowPolicy overflow = OverflowPolicy::kEvictOldest;
  // Publish the rule's field per key as a protocol-state gauge.
  bool export_gauge = false;
  std::unique_ptr<KindConfig> config;
  std::string file;
  int line = 0;
  Hash128 digest;  // of the rule's definition (name, kind and all fields)
};

// How a rule file asks events to be decoded (mapped to the decoder by the
// sidecar, which may override it from the command line).
struct InputSpec {
  std::string format;   // "json", "logfmt", "regex"
  std::string pattern;  // for regex
  std::string file;     // where it was declared
};

class RuleSet {
 public:
  const FieldSet& fields() const { return fields_; }
  const std::vector<Rule>& rules() const { return rules_; }
  int key_groups() const { return key_groups_; }
  // The `id` expression for event identity, or null for raw-bytes identity.
  const Expr* event_id() const { return event_id_.get(); }
  const std::optional<InputSpec>& input() const { return input_; }
  const std::vector<std::string>& files() const { return files_; }
  Hash128 digest() const { return digest_; }

 private:
  friend class RuleLoader;
  FieldSet fields_;
  std::vector<Rule> rules_;
  int key_groups_ = 0;
  std::unique_ptr<Expr> event_id_;
  std::optional<InputSpec> input_;
  std::vector<std::string> files_;
  Hash128 digest_;
};

struct LoadResult {
  std::shared_ptr<const RuleSet> rules;  // null when diagnostics is not empty
  std::vector<Diagnostic> diagnostics;
  bool ok() const { return rules != nullptr; }
};

// Limits on rule files (config `rule_limits`, docs/configuration.md); a
// file or expression over them is a diagnostic like any other error.
struct LoadLimits {
  size_t max_file_bytes = kMaxRuleFileBytes;
  ExprLimits expression;
};

// Loads rule files and directories (every *.yaml / *.yml inside, sorted by
// name, not recursive into hidden directories).
LoadResult LoadRuleFiles(const std::vector<std::string>& paths,
                         const LoadLimits& limits = {});

// Loads one rule document given as text; `name` is used in diagnostics.
LoadResult LoadRuleText(std::string_view text, std::string_view name,
                        const LoadLimits& limits = {});

}  // namespace invariantd

#endif  // INVARIANTD_RULES_RULE_SET_H_
