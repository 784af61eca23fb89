#include "sidecar/redactor.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace invariantd {

absl::StatusOr<std::unique_ptr<Redactor>> Redactor::Create(
    const std::vector<RedactRule>& rules) {
  static const LazyRE2 kName = {R"([a-z0-9][a-z0-9_.-]*)"};
  std::vector<std::unique_ptr<Rule>> out;
  std::set<std::string> names;
  for (const RedactRule& r : rules) {
    if (!RE2::FullMatch(r.name, *kName) || r.name.size() > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("redact rule name '", r.name,
                       "' must be 1-64 of [a-z0-9_.-], starting with a "
                       "letter or digit"));
    }
    if (!names.insert(r.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("redact rule '", r.name, "' is defined twice"));
    }
    RE2::Options options;
    options.set_log_errors(false);
    auto re = std::make_unique<RE2>(r.pattern, options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "redact rule '", r.name, "': invalid RE2 pattern: ", re->error()));
    }
    // A pattern that matches the empty string would "replace" between
    // every two characters.
    if (RE2::FullMatch("", *re)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "redact rule '", r.name, "': the pattern matches the empty text"));
    }
    auto rule = std::make_unique<Rule>();
    rule->name = r.name;
    rule->rewrite = r.replacement.empty()
                        ? absl::StrCat("[REDACTED:", r.name, "]")
                        : r.replacement;
    std::string why;
    if (!re->CheckRewriteString(rule->rewrite, &why)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "redact rule '", r.name, "': invalid replacement: ", why));
    }
    rule->re = std::move(re);
    out.push_back(std::move(rule));
  }
  return std::unique_ptr<Redactor>(new Redactor(std::move(out)));
}

size_t Redactor::Apply(std::string* text) const {
  size_t total = 0;
  for (const auto& r : rules_) {
    const int n = RE2::GlobalReplace(text, *r->re, r->rewrite);
    if (n > 0) {
      r->count.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      total += static_cast<size_t>(n);
    }
  }
  return total;
}

size_t Redactor::ApplyValue(OwnedValue* v) const {
  const Value view = v->view();
  if (!view.is_string() && !view.is_json()) return 0;
  std::string text(view.str());
  const size_t n = Apply(&text);
  if (n > 0) *v = OwnedValue(Value::String(text));
  return n;
}

size_t Redactor::Apply(Violation* v) const {
  size_t n = Apply(&v->witness) + Apply(&v->message);
  for (auto& [name, value] : v->key) n += ApplyValue(&value);
  n += ApplyValue(&v->observed);
  n += ApplyValue(&v->previous);
  return n;
}

std::vector<std::pair<std::string, uint64_t>> Redactor::Counts() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& r : rules_) {
    out.emplace_back(r->name, r->count.load(std::memory_order_relaxed));
  }
  return out;
}

}  // namespace invariantd
