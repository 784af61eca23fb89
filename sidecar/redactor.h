// Redactor: optional redaction rules (config `redact`, docs/security.md)
// applied to what a violation carries out of the process -- the raw event
// (witness), the message, key values and the observed and previous values
// -- before it is stored as evidence, printed, paged or served, and to the
// key labels of protocol-state gauges.
//
// Each rule is an RE2 pattern; every match is replaced by the rule's
// replacement (default "[REDACTED:<name>]", RE2 rewrite syntax: \1 etc.),
// rules in configuration order. Every replacement is counted per rule.
// A raw-JSON value that a replacement changes becomes a string value, so
// that a pattern spanning quotes cannot make an output invalid JSON.
//
// With redaction on, the evidence holds the redacted bytes: the secret is
// not kept anywhere. Violation ids do not change (they depend on the rule,
// the key hash and the input position only).
//
// Thread-safety: Apply may be called from any thread.
#ifndef INVARIANTD_SIDECAR_REDACTOR_H_
#define INVARIANTD_SIDECAR_REDACTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "re2/re2.h"
#include "sidecar/core/violation.h"

namespace invariantd {

struct RedactRule {
  std::string name;         // [a-z0-9_.-]+, a metric label value
  std::string pattern;      // RE2
  std::string replacement;  // empty: "[REDACTED:<name>]"
};

class Redactor {
 public:
  // Errors (InvalidArgument) name the rule: a pattern RE2 refuses, a bad or
  // duplicate name, a replacement that refers to a group the pattern lacks.
  static absl::StatusOr<std::unique_ptr<Redactor>> Create(
      const std::vector<RedactRule>& rules);

  // Replaces every match in `*text`; returns how many were replaced.
  size_t Apply(std::string* text) const;
  // Redacts every text a violation carries; returns the replacements.
  size_t Apply(Violation* v) const;

  // Replacements so far, per rule name, in configuration order.
  std::vector<std::pair<std::string, uint64_t>> Counts() const;

 private:
  struct Rule {
    std::string name;
    std::unique_ptr<RE2> re;
    std::string rewrite;
    mutable std::atomic<uint64_t> count{0};
  };
  explicit Redactor(std::vector<std::unique_ptr<Rule>> rules)
      : rules_(std::move(rules)) {}
  size_t ApplyValue(OwnedValue* v) const;

  std::vector<std::unique_ptr<Rule>> rules_;
};

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_REDACTOR_H_
