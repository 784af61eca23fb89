// Rule loading: read (YAML) -> check (schema) -> compile (expressions and
// kinds). See rule_set.h for the file format.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "re2/re2.h"
#include "rules/rule_set.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/strings.h"
#include "yaml-cpp/yaml.h"

namespace invariantd {

std::string FormatDiagnostic(const Diagnostic& d) {
  std::string out = d.file;
  if (d.line > 0) absl::StrAppend(&out, ":", d.line, ":", d.column);
  absl::StrAppend(&out, ": error: ", d.message);
  if (!d.rule.empty()) absl::StrAppend(&out, " [rule '", d.rule, "']");
  if (!d.snippet.empty()) {
    absl::StrAppend(&out, "\n    ", d.snippet, "\n    ",
                    std::string(d.column > 0 ? d.column - 1 : 0, ' '), "^");
  }
  return out;
}

std::string DiagnosticJson(const Diagnostic& d) {
  return absl::StrCat("{\"file\":", JsonString(d.file), ",\"line\":", d.line,
                      ",\"column\":", d.column,
                      ",\"rule\":", JsonString(d.rule),
                      ",\"message\":", JsonString(d.message), "}");
}

namespace {

constexpr std::string_view kCommonFields[] = {
    "name",     "kind",          "when",        "key",
    "severity", "description",   "runbook",     "labels",
    "max_keys", "expected_keys", "on_overflow", "export_gauge"};
constexpr std::string_view kSeverities[] = {"critical", "error", "warning",
                                            "info"};
constexpr std::string_view kReservedLabels[] = {"alertname", "severity", "kind",
                                                "rule"};

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same =
          absl::ascii_tolower(a[i - 1]) == absl::ascii_tolower(b[j - 1]);
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (same ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean 'x'?)" when a candidate is close.
template <typename Range>
std::string Suggest(std::string_view word, const Range& candidates) {
  std::string_view best;
  size_t best_d = 3;
  for (std::string_view c : candidates) {
    const size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (best.empty()) return "";
  return absl::StrCat("; did you mean '", AV(best), "'?");
}

// One rule document being loaded.
struct Source {
  std::string name;
  std::vector<std::string> lines;
};

}  // namespace

class RuleLoader {
 public:
  explicit RuleLoader(const LoadLimits& limits) : limits_(limits) {}
  LoadResult Load(
      const std::vector<std::pair<std::string, std::string>>& documents) {
    set_ = std::unique_ptr<RuleSet>(new RuleSet());
    for (const auto& [name, text] : documents) {
      try {
        LoadDocument(name, text);
      } catch (const YAML::Exception& e) {
        // A conversion this loader did not anticipate: still a diagnostic,
        // never a crash.
        ErrorAt(e.mark, absl::StrCat("unexpected YAML content: ", e.msg));
      }
    }
    if (set_->rules_.empty() && diags_.empty()) {
      diags_.push_back(
          Diagnostic{documents.empty() ? "" : documents.front().first, 0, 0, "",
                     "no rules found", ""});
    }
    LoadResult result;
    result.diagnostics = std::move(diags_);
    if (result.diagnostics.empty()) {
      Finish();
      result.rules = std::move(set_);
    }
    return result;
  }

 private:
  // ---- locations ----
  void ErrorAt(const YAML::Mark& mark, std::string message) {
    Diagnostic d;
    d.file = src_->name;
    d.rule = rule_name_;
    d.message = std::move(message);
    if (mark.line >= 0) {
      d.line = mark.line + 1;
      d.column = mark.column + 1;
      if (static_cast<size_t>(mark.line) < src_->lines.size()) {
        d.snippet = src_->lines[mark.line];
      }
    }
    diags_.push_back(std::move(d));
  }
  void ErrorAt(const YAML::Node& node, std::string message) {
    ErrorAt(node.Mark(), std::move(message));
  }

  // A document marker ("---" or "..." at the start of a line, alone or
  // followed by a blank) after content starts another document: YAML
  // forbids such a line inside any scalar, so this needs no parsing.
  bool CheckOneDocument() {
    bool content = false, ended = false;
    for (size_t i = 0; i < src_->lines.size(); ++i) {
      std::string_view line = src_->lines[i];
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const bool marker =
          (absl::StartsWith(AV(line), "---") ||
           absl::StartsWith(AV(line), "...")) &&
          (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
      if (marker) {
        if (line[0] == '.') {
          ended = true;
          continue;
        }
        if (!content && !ended) continue;  // the first document's start
      } else {
        const std::string_view t = SV(absl::StripAsciiWhitespace(AV(line)));
        if (t.empty() || t[0] == '#' || (!content && t[0] == '%')) continue;
        if (!ended) {
          content = true;
          continue;
        }
      }
      Diagnostic d;
      d.file = src_->name;
      d.line = static_cast<int>(i + 1);
      d.column = 1;
      d.snippet = std::string(line);
      d.message =
          "a rule file holds one YAML document; put further rules in the "
          "same 'rules' list or in another file";
      diags_.push_back(std::move(d));
      return false;
    }
    return true;
  }

  // YAML's c-printable: tab, LF, CR, U+0020..U+007E, U+0085, U+00A0..U+D7FF,
  // U+E000..U+FFFD, U+10000..U+10FFFF, as valid UTF-8. Reports the first
  // other character (or invalid byte) and returns false.
  bool CheckPrintable(std::string_view text) {
    size_t line = 0, line_start = 0;
    for (size_t i = 0; i < text.size();) {
      char32_t cp = 0;
      const size_t n = DecodeUtf8(text, i, &cp);
      std::string what;
      if (n == 0) {
        what = absl::StrCat(
            "byte 0x",
            absl::Hex(static_cast<unsigned char>(text[i]), absl::kZeroPad2),
            " is not valid UTF-8");
      } else if (!(cp == '\t' || cp == '\n' || cp == '\r' ||
                   (cp >= 0x20 && cp <= 0x7e) || cp == 0x85 ||
                   (cp >= 0xa0 && cp <= 0xd7ff) ||
                   (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000)) {
        what = absl::StrCat("character U+",
                            absl::AsciiStrToUpper(absl::StrCat(absl::Hex(
                                static_cast<uint32_t>(cp), absl::kZeroPad4))),
                            " is not allowed");
      }
      if (!what.empty()) {
        Diagnostic d;
        d.file = src_->name;
        d.line = static_cast<int>(line + 1);
        d.column = static_cast<int>(i - line_start + 1);
        d.message = absl::StrCat(
            what,
            " in a rule file (YAML allows printable characters, tab and "
            "line breaks; write others as escapes in a double-quoted "
            "string)");
        diags_.push_back(std::move(d));
        return false;
      }
      if (cp == '\n') {
        ++line;
        line_start = i + 1;
      }
      i += n;
    }
    return true;
  }

  // Maps a byte offset inside a scalar's value to its source location by
  // walking the raw source: block scalars (| and >) line by line from the
  // block's indentation, quoted scalars through their escapes, plain
  // scalars across folded lines.
  YAML::Mark MarkInside(const YAML::Node& node, size_t offset) {
    YAML::Mark m = node.Mark();
    const auto& lines = src_->lines;
    if (m.line < 0 || static_cast<size_t>(m.line) >= lines.size()) return m;
    size_t li = static_cast<size_t>(m.line);
    size_t col = static_cast<size_t>(m.column);
    const char c = col < lines[li].size() ? lines[li][col] : '\0';
    auto at = [&](size_t line, size_t column) {
      YAML::Mark r = m;
      r.line = static_cast<int>(line);
      r.column = static_cast<int>(column);
      return r;
    };
    if (c == '|' || c == '>') {
      size_t indent = std::string::npos;
      size_t remaining = offset;
      for (size_t l = li + 1; l < lines.size(); ++l) {
        const size_t first = lines[l].find_first_not_of(' ');
        if (first == std::string::npos) {  // blank line inside the block
          if (remaining == 0) return at(l, 0);
          remaining -= 1;
          continue;
        }
        if (indent == std::string::npos) indent = first;
        if (first < indent) break;  // the block ended
        const size_t len = lines[l].size() - indent;
        if (remaining <= len) return at(l, indent + remaining);
        remaining -= len + 1;
      }
      return m;
    }
    if (c == '"' || c == '\'') {
      size_t produced = 0;
      ++col;
      while (li < lines.size()) {
        const std::string& l = lines[li];
        while (col < l.size()) {
          if (produced >= offset) return at(li, col);
          if (l[col] == c &&
              (c == '"' || col + 1 >= l.size() || l[col + 1] != '\'')) {
            return at(li, col);  // closing quote
          }
          size_t src = 1, out = 1;
          if (c == '\'' && l[col] == '\'') {
            src = 2;  // '' is one quote
          } else if (c == '"' && l[col] == '\\' && col + 1 < l.size()) {
            const char e = l[col + 1];
            const size_t digits = e == 'x'   ? 2
                                  : e == 'u' ? 4
                                  : e == 'U' ? 8
                                             : 0;
            src = 2 + digits;
            if (digits > 0) {
              const unsigned long cp =
                  std::strtoul(l.substr(col + 2, digits).c_str(), nullptr, 16);
              out = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            }
          }
          if (produced + out > offset) return at(li, col);
          produced += out;
          col += src;
        }
        ++produced;  // a line break folds to one space
        ++li;
        if (li < lines.size()) {
          const size_t first = lines[li].find_first_not_of(' ');
          col = first == std::string::npos ? 0 : first;
        }
      }
      return m;
    }
    // Plain scalar: continuation lines fold to one space each.
    size_t remaining = offset;
    while (li < lines.size()) {
      std::string_view l(lines[li]);
      const size_t comment = l.find(" #");
      if (comment != std::string_view::npos) l = l.substr(0, comment);
      const size_t last = l.find_last_not_of(' ');
      const size_t end = last == std::string_view::npos ? col : last + 1;
      const size_t len = end > col ? end - col : 0;
      if (remaining <= len) return at(li, col + remaining);
      remaining -= len + 1;
      ++li;
      if (li < lines.size()) {
        const size_t first = lines[li].find_first_not_of(' ');
        col = first == std::string::npos ? 0 : first;
      }
    }
    return m;
  }

  // ---- reading ----
  void LoadDocument(const std::string& name, const std::string& text) {
    source_ = Source{name, absl::StrSplit(text, '\n')};
    src_ = &source_;
    rule_name_.clear();
    set_->files_.push_back(name);
    if (text.size() > limits_.max_file_bytes) {
      diags_.push_back(Diagnostic{
          name, 0, 0, "",
          absl::StrCat("rule file is ", text.size(), " bytes; the limit is ",
                       limits_.max_file_bytes),
          ""});
      return;
    }
    // YAML allows printable characters, tab and line breaks only: others
    // are refused here, with their position.
    if (!CheckPrintable(text)) return;
    // One document. yaml-cpp 0.7's LoadAll never returns on some malformed
    // streams -- a lone ',' makes it add empty documents until memory runs
    // out (jbeder/yaml-cpp#1040; found by fuzz_rules) -- so the document is
    // read with Load, and a second one is found by its marker.
    if (!CheckOneDocument()) return;
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      ErrorAt(e.mark,
              absl::StrCat("invalid YAML: ", e.msg,
                           " (an expression containing '\?\?', ': ', '#', "
                           "'[' or '{' must be quoted)"));
      return;
    }
    if (!root.IsMap()) {
      ErrorAt(root, "a rule file is a mapping with a 'rules' list");
      return;
    }
    StringSet top_seen;
    for (const auto& kv : root) {
      const std::optional<std::string> name = KeyName(kv.first);
      if (!name || Duplicate(&top_seen, kv.first, *name)) continue;
      const std::string& k = *name;
      if (k != "rules" && k != "input" && k != "pack" && k != "description") {
        ErrorAt(kv.first, absl::StrCat("unknown top-level field '", k, "'",
                                       Suggest(k, std::vector<std::string_view>{
                                                      "rules", "input", "pack",
                                                      "description"})));
      }
    }
    if (root["input"]) LoadInput(root["input"]);
    const YAML::Node rules = root["rules"];
    if (!rules) {
      ErrorAt(root, "missing 'rules' (a list of rules)");
      return;
    }
    if (!rules.IsSequence()) {
      ErrorAt(rules, "'rules' must be a list");
      return;
    }
    for (const YAML::Node& r : rules) LoadRule(r);
    rule_name_.clear();
  }

  void LoadInput(const YAML::Node& in) {
    if (!in.IsMap()) {
      ErrorAt(in, "'input' must be a mapping (format, pattern, id)");
      return;
    }
    InputSpec spec;
    spec.file = src_->name;
    StringSet in_seen;
    for (const auto& kv : in) {
      const std::optional<std::string> name = KeyName(kv.first);
      if (!name || Duplicate(&in_seen, kv.first, *name)) continue;
      const std::string& k = *name;
      if (k == "format" || k == "pattern") {
        std::string v;
        if (!Scalar(kv.second, k, &v)) continue;
        (k == "format" ? spec.format : spec.pattern) = v;
      } else if (k == "id") {
        if (set_->event_id_ != nullptr) {
          ErrorAt(kv.first, "event 'id' is already declared by another file");
          continue;
        }
        set_->event_id_ = CompileAt(kv.second, /*boolean=*/false);
      } else {
        ErrorAt(kv.first,
                absl::StrCat("unknown field '", k, "' in 'input'",
                             Suggest(k, std::vector<std::string_view>{
                                            "format", "pattern", "id"})));
      }
    }
    if (spec.format.empty()) spec.format = "json";
    if (spec.format != "json" && spec.format != "logfmt" &&
        spec.format != "regex") {
      ErrorAt(in["format"], absl::StrCat("unknown input format '", spec.format,
                                         "'; expected json, logfmt or regex"));
    }
    if (spec.format == "regex" && spec.pattern.empty()) {
      ErrorAt(in, "format 'regex' needs a 'pattern'");
    }
    if (set_->input_ && (set_->input_->format != spec.format ||
                         set_->input_->pattern != spec.pattern)) {
      ErrorAt(in,
              absl::StrCat("conflicting 'input' with ", set_->input_->file));
      return;
    }
    set_->input_ = spec;
  }

  // The text of a mapping key; non-scalar keys (`[a]: 1`) are an error.
  std::optional<std::string> KeyName(const YAML::Node& k) {
    if (!k.IsScalar()) {
      ErrorAt(k, "a field name must be a plain string");
      return std::nullopt;
    }
    return k.Scalar();
  }

  // Reports a key seen twice in one mapping (yaml-cpp keeps the first
  // silently, which would hide the second).
  bool Duplicate(StringSet* seen, const YAML::Node& k,
                 const std::string& name) {
    if (seen->insert(name).second) return false;
    ErrorAt(k, absl::StrCat("duplicate field '", name, "'"));
    return true;
  }

  bool Scalar(const YAML::Node& n, std::string_view what, std::string* out) {
    if (!n.IsScalar()) {
      ErrorAt(n, absl::StrCat("'", AV(what), "' must be a string"));
      return false;
    }
    *out = n.Scalar();
    return true;
  }

  std::unique_ptr<Expr> CompileAt(const YAML::Node& n, bool boolean) {
    if (!n.IsScalar()) {
      ErrorAt(n, "expected an expression (a string)");
      return nullptr;
    }
    std::vector<ExprError> errors;
    std::unique_ptr<Expr> e =
        CompileExpr(n.Scalar(), &set_->fields_, &errors, limits_.expression);
    for (const ExprError& err : errors) {
      ErrorAt(MarkInside(n, err.offset), err.message);
    }
    if (e != nullptr && boolean && e->type() != ExprType::kBool &&
        e->type() != ExprType::kAny) {
      ErrorAt(n,
              "this condition can never be true or false: it is not a "
              "boolean expression");
      return nullptr;
    }
    return e;
  }

  // ---- checking and compiling one rule ----
  class Compiler : public KindCompiler {
   public:
    Compiler(RuleLoader* l, const YAML::Node& rule) : l_(l), rule_(rule) {}
    bool Has(std::string_view f) const override {
      return static_cast<bool>(rule_[std::string(f)]);
    }
    YAML::Node Get(std::string_view f) const { return rule_[std::string(f)]; }
    std::unique_ptr<Expr> Expression(std::string_view f, bool required,
                                     bool boolean) override {
      const YAML::Node n = Get(f);
      if (!n) {
        if (required) Missing(f);
        return nullptr;
      }
      return l_->CompileAt(n, boolean);
    }
    std::optional<bool> Bool(std::string_view f) override {
      const YAML::Node n = Get(f);
      if (!n) return std::nullopt;
      bool b;
      if (!n.IsScalar() || !YAML::convert<bool>::decode(n, b)) {
        l_->ErrorAt(n, absl::StrCat("'", AV(f), "' must be true or false"));
        return std::nullopt;
      }
      return b;
    }
    std::optional<int64_t> Int(std::string_view f, int64_t min,
                               int64_t max) override {
      const YAML::Node n = Get(f);
      if (!n) return std::nullopt;
      int64_t v;
      if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v) || v < min ||
          v > max) {
        l_->ErrorAt(n, absl::StrCat("'", AV(f), "' must be an integer from ",
                                    min, " to ", max));
        return std::nullopt;
      }
      return v;
    }
    std::optional<std::vector<std::string>> StringList(
        std::string_view f) override {
      const YAML::Node n = Get(f);
      if (!n) return std::nullopt;
      return List(n, f);
    }
    std::optional<std::vector<std::pair<std::string, std::vector<std::string>>>>
    StringListMap(std::string_view f) override {
      const YAML::Node n = Get(f);
      if (!n) return std::nullopt;
      if (!n.IsMap()) {
        l_->ErrorAt(n, absl::StrCat("'", AV(f),
                                    "' must be a mapping of state to a list "
                                    "of next states"));
        return std::nullopt;
      }
      std::vector<std::pair<std::string, std::vector<std::string>>> out;
      bool ok = true;
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) {
          l_->ErrorAt(kv.first, "a state name must be a string");
          ok = false;
          continue;
        }
        auto list = List(kv.second, f);
        if (!list) {
          ok = false;
          continue;
        }
        out.emplace_back(kv.first.Scalar(), std::move(*list));
      }
      if (!ok) return std::nullopt;
      return out;
    }
    void Error(std::string_view f, std::string message) override {
      if (!f.empty() && Has(f)) {
        l_->ErrorAt(Get(f), std::move(message));
      } else {
        l_->ErrorAt(rule_, std::move(message));
      }
    }
    void Missing(std::string_view f) {
      l_->ErrorAt(rule_, absl::StrCat("missing required field '", AV(f), "'"));
    }

   private:
    std::optional<std::vector<std::string>> List(const YAML::Node& n,
                                                 std::string_view f) {
      if (n.IsNull()) return std::vector<std::string>{};
      if (!n.IsSequence()) {
        l_->ErrorAt(n, absl::StrCat("'", AV(f), "' must be a list"));
        return std::nullopt;
      }
      std::vector<std::string> out;
      for (const YAML::Node& e : n) {
        if (!e.IsScalar()) {
          l_->ErrorAt(e,
                      absl::StrCat("items of '", AV(f), "' must be strings"));
          return std::nullopt;
        }
        out.push_back(e.Scalar());
      }
      return out;
    }

    RuleLoader* l_;
    const YAML::Node& rule_;
  };

  void LoadRule(const YAML::Node& node) {
    rule_name_.clear();
    if (!node.IsMap()) {
      ErrorAt(node, "a rule must be a mapping (name, kind, ...)");
      return;
    }
    Rule rule;
    rule.file = src_->name;
    rule.line = node.Mark().line + 1;
    const size_t errors_before = diags_.size();

    // name and kind first: later messages name the rule.
    if (const YAML::Node n = node["name"]; !n) {
      ErrorAt(node, "missing required field 'name'");
    } else if (Scalar(n, "name", &rule.name)) {
      rule_name_ = rule.name;
      static const LazyRE2 kName = {"[A-Za-z0-9_][A-Za-z0-9_.:-]*"};
      if (!RE2::FullMatch(rule.name, *kName)) {
        ErrorAt(n,
                "a rule name may use letters, digits, '_', '.', ':' and "
                "'-' (it becomes an alert name)");
      } else if (!names_.insert(rule.name).second) {
        ErrorAt(n, absl::StrCat("duplicate rule name '", rule.name, "'"));
      }
    }
    const KindSpec* spec = nullptr;
    if (const YAML::Node n = node["kind"]; !n) {
      ErrorAt(node, "missing required field 'kind'");
    } else if (Scalar(n, "kind", &rule.kind)) {
      spec = FindKind(rule.kind);
      if (spec == nullptr) {
        ErrorAt(n, absl::StrCat("unknown kind '", rule.kind, "'; kinds are ",
                                absl::StrJoin(KindNames(), ", "),
                                Suggest(rule.kind, KindNames())));
      }
    }

    // Unknown fields: typos must not silently disable a check.
    StringSet rule_seen;
    for (const auto& kv : node) {
      const std::optional<std::string> name = KeyName(kv.first);
      if (!name || Duplicate(&rule_seen, kv.first, *name)) continue;
      const std::string& f = *name;
      const bool common =
          std::find(std::begin(kCommonFields), std::end(kCommonFields), f) !=
          std::end(kCommonFields);
      const bool specific =
          spec != nullptr && std::find(spec->fields.begin(), spec->fields.end(),
                                       f) != spec->fields.end();
      if (!common && !specific) {
        std::vector<std::string_view> all(std::begin(kCommonFields),
                                          std::end(kCommonFields));
        if (spec)
          all.insert(all.end(), spec->fields.begin(), spec->fields.end());
        ErrorAt(kv.first,
                absl::StrCat(
                    "unknown field '", f, "'",
                    spec ? absl::StrCat(" for kind '", rule.kind, "'") : "",
                    Suggest(f, all)));
      }
    }

    if (const YAML::Node n = node["when"]) {
      rule.when = CompileAt(n, /*boolean=*/true);
    }
    LoadKey(node["key"], &rule);
    if (const YAML::Node n = node["severity"]) {
      if (Scalar(n, "severity", &rule.severity) &&
          std::find(std::begin(kSeverities), std::end(kSeverities),
                    rule.severity) == std::end(kSeverities)) {
        ErrorAt(n, absl::StrCat("unknown severity '", rule.severity,
                                "'; use critical, error, warning or info"));
      }
    }
    if (const YAML::Node n = node["description"]) {
      Scalar(n, "description", &rule.description);
    }
    if (const YAML::Node n = node["runbook"])
      Scalar(n, "runbook", &rule.runbook);
    LoadLabels(node["labels"], &rule);
    Compiler kc(this, node);
    if (auto v = kc.Int("max_keys", 1, 1'000'000'000)) rule.max_keys = *v;
    if (auto v = kc.Int("expected_keys", 0, 1'000'000'000)) {
      if (static_cast<size_t>(*v) > rule.max_keys) {
        ErrorAt(node["expected_keys"],
                absl::StrCat("expected_keys (", *v, ") is above max_keys (",
                             rule.max_keys, ")"));
      } else {
        rule.expected_keys = static_cast<size_t>(*v);
      }
    }
    if (const YAML::Node n = node["on_overflow"]) {
      std::string p;
      if (Scalar(n, "on_overflow", &p)) {
        if (p == "evict_oldest") {
          rule.overflow = OverflowPolicy::kEvictOldest;
        } else if (p == "reject_new") {
          rule.overflow = OverflowPolicy::kRejectNew;
        } else {
          ErrorAt(n, absl::StrCat("unknown on_overflow '", p,
                                  "'; use evict_oldest or reject_new"));
        }
      }
    }
    if (spec != nullptr) rule.config = spec->compile(kc);
    if (rule.expected_keys > 0 && rule.config != nullptr &&
        !rule.config->NeedsKey()) {
      ErrorAt(node["expected_keys"],
              absl::StrCat("expected_keys sizes a rule's state; '", rule.kind,
                           "' keeps none"));
    }
    if (auto g = kc.Bool("export_gauge")) {
      rule.export_gauge = *g;
      if (*g && rule.config != nullptr &&
          rule.config->GaugeField() == nullptr) {
        ErrorAt(node["export_gauge"],
                absl::StrCat("export_gauge needs a numeric field: only "
                             "monotonic and sequence rules have one, not '",
                             rule.kind, "'"));
      }
    }
    if (diags_.size() != errors_before || rule.config == nullptr) return;

    // The definition's digest leaves out expected_keys: a sizing hint, not
    // semantics; changing it keeps the rule's state (reload, restore).
    YAML::Node defining = YAML::Clone(node);
    defining.remove("expected_keys");
    YAML::Emitter canon;
    canon << defining;
    rule.digest = HashBytes(canon.c_str());
    set_->rules_.push_back(std::move(rule));
  }

  void LoadKey(const YAML::Node& n, Rule* rule) {
    if (!n || n.IsNull()) return;
    if (!n.IsSequence()) {
      ErrorAt(n, "'key' must be a list of field paths or {name: expression}");
      return;
    }
    StringSet seen;
    for (const YAML::Node& item : n) {
      KeyField kf;
      YAML::Node expr_node = item;
      if (item.IsMap() && item.size() == 1) {
        const std::optional<std::string> name = KeyName(item.begin()->first);
        if (!name) continue;
        kf.name = *name;
        expr_node = item.begin()->second;
      } else if (!item.IsScalar()) {
        ErrorAt(item, "a key item is a field path or {name: expression}");
        continue;
      }
      kf.expr = CompileAt(expr_node, /*boolean=*/false);
      if (!kf.expr) continue;
      if (kf.name.empty()) {
        auto path = kf.expr->AsPath();
        kf.name = path ? path->ToString() : kf.expr->text();
      }
      if (!seen.insert(kf.name).second) {
        ErrorAt(item, absl::StrCat("duplicate key field '", kf.name, "'"));
        continue;
      }
      rule->key.push_back(std::move(kf));
    }
  }

  void LoadLabels(const YAML::Node& n, Rule* rule) {
    if (!n) return;
    if (!n.IsMap()) {
      ErrorAt(n, "'labels' must be a mapping of label name to value");
      return;
    }
    static const LazyRE2 kLabel = {"[a-zA-Z_][a-zA-Z0-9_]*"};
    StringSet label_seen;
    for (const auto& kv : n) {
      const std::optional<std::string> name = KeyName(kv.first);
      if (!name || Duplicate(&label_seen, kv.first, *name)) continue;
      const std::string& k = *name;
      if (!RE2::FullMatch(k, *kLabel) || absl::StartsWith(k, "__")) {
        ErrorAt(kv.first, absl::StrCat("invalid label name '", k,
                                       "' (Prometheus label names match "
                                       "[a-zA-Z_][a-zA-Z0-9_]*)"));
        continue;
      }
      if (std::find(std::begin(kReservedLabels), std::end(kReservedLabels),
                    k) != std::end(kReservedLabels)) {
        ErrorAt(kv.first,
                absl::StrCat("label '", k, "' is set by invariantd itself"));
        continue;
      }
      std::string v;
      if (Scalar(kv.second, k, &v)) rule->labels.emplace_back(k, v);
    }
  }

  // Assigns key groups and the set digest once all rules compiled.
  void Finish() {
    StringMap<int> groups;
    TupleHasher digest;
    for (Rule& r : set_->rules_) {
      std::string sig;
      for (const KeyField& k : r.key)
        absl::StrAppend(&sig, k.expr->text(), "\x1f");
      auto [it, inserted] =
          groups.emplace(sig, static_cast<int>(groups.size()));
      r.key_group = it->second;
      digest.AddU64(r.digest.lo);
      digest.AddU64(r.digest.hi);
    }
    set_->key_groups_ = static_cast<int>(groups.size());
    set_->digest_ = digest.Finish();
  }

  const LoadLimits limits_;
  std::unique_ptr<RuleSet> set_;
  std::vector<Diagnostic> diags_;
  Source source_;  // the document being loaded
  const Source* src_ = &source_;
  std::string rule_name_;
  StringSet names_;
};

LoadResult LoadRuleText(std::string_view text, std::string_view name,
                        const LoadLimits& limits) {
  RuleLoader loader(limits);
  return loader.Load({{std::string(name), std::string(text)}});
}

LoadResult LoadRuleFiles(const std::vector<std::string>& paths,
                         const LoadLimits& limits) {
  namespace fs = std::filesystem;
  std::vector<std::pair<std::string, std::string>> docs;
  std::vector<Diagnostic> io_errors;
  auto read = [&](const std::string& path) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (!ec && size > limits.max_file_bytes) {
      io_errors.push_back(Diagnostic{
          path, 0, 0, "",
          absl::StrCat("rule file is ", size, " bytes; the limit is ",
                       limits.max_file_bytes),
          ""});
      return;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      io_errors.push_back(
          Diagnostic{path, 0, 0, "", "cannot read rule file", ""});
      return;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    docs.emplace_back(path, ss.str());
  };
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        const std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml") &&
            e.path().filename().string()[0] != '.') {
          files.push_back(e.path().string());
        }
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) {
        io_errors.push_back(Diagnostic{
            p, 0, 0, "", "directory contains no .yaml or .yml files", ""});
      }
      for (const auto& f : files) read(f);
    } else if (fs::exists(p, ec)) {
      read(p);
    } else {
      io_errors.push_back(Diagnostic{p, 0, 0, "", "no such file", ""});
    }
  }
  if (docs.empty() && !io_errors.empty()) {
    // Nothing could be read: those reasons, not also "no rules found".
    LoadResult r;
    r.diagnostics = std::move(io_errors);
    return r;
  }
  RuleLoader loader(limits);
  LoadResult r = loader.Load(docs);
  if (!io_errors.empty()) {
    io_errors.insert(io_errors.end(), r.diagnostics.begin(),
                     r.diagnostics.end());
    r.diagnostics = std::move(io_errors);
    r.rules = nullptr;
  }
  return r;
}

}  // namespace invariantd
