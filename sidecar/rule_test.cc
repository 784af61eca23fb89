#include "sidecar/rule_test.h"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/replayer.h"
#include "yaml-cpp/yaml.h"

namespace invariantd {
namespace {

namespace fs = std::filesystem;

struct Expectation {
  std::string rule;
  std::optional<uint64_t> line;
  std::optional<std::vector<std::pair<std::string, std::string>>> key;
  std::optional<std::string> reason;
  std::string Describe() const {
    std::string s = absl::StrCat("rule ", rule);
    if (line) absl::StrAppend(&s, " at line ", *line);
    if (key) {
      absl::StrAppend(&s, " key {");
      for (size_t i = 0; i < key->size(); ++i) {
        absl::StrAppend(&s, i ? ", " : "", (*key)[i].first, ": ",
                        (*key)[i].second);
      }
      absl::StrAppend(&s, "}");
    }
    if (reason) absl::StrAppend(&s, " reason ", *reason);
    return s;
  }
  int Constraints() const {
    return (line ? 1 : 0) + (key ? 1 : 0) + (reason ? 1 : 0);
  }
  bool Matches(const Violation& v) const {
    if (v.rule != rule) return false;
    if (line && v.line != *line) return false;
    if (reason && v.reason != *reason) return false;
    if (key) {
      for (const auto& [name, text] : *key) {
        bool found = false;
        for (const auto& [vname, value] : v.key) {
          if (vname == name && value.ToText() == text) found = true;
        }
        if (!found) return false;
      }
    }
    return true;
  }
};

std::string DescribeViolation(const Violation& v) {
  std::string key;
  for (const auto& [name, value] : v.key) {
    absl::StrAppend(&key, key.empty() ? "" : ", ", name, ": ", value.ToText());
  }
  return SanitizeText(absl::StrCat("rule ", v.rule, " at line ", v.line,
                                   " key {", key, "} reason ", v.reason, ": ",
                                   v.message));
}

class FileRunner {
 public:
  FileRunner(const std::string& file, std::ostream& out)
      : file_(file), dir_(fs::path(file).parent_path()), out_(out) {}

  void Run(RuleTestResult* result) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(file_);
    } catch (const YAML::Exception& e) {
      out_ << file_ << ":" << e.mark.line + 1 << ":" << e.mark.column + 1
           << ": error: " << e.msg << "\n";
      ++result->errors;
      return;
    }
    if (!root.IsMap() || !(root["rule_files"] || root["rules"]) ||
        !root["tests"] || !root["tests"].IsSequence()) {
      out_ << file_
           << ": error: a test file needs 'rule_files' (or inline 'rules') "
              "and a 'tests' list\n";
      ++result->errors;
      return;
    }
    LoadResult loaded;
    if (root["rule_files"]) {
      std::vector<std::string> rule_files;
      for (const YAML::Node& n : root["rule_files"]) {
        rule_files.push_back(Resolve(n.as<std::string>()));
      }
      loaded = LoadRuleFiles(rule_files);
    } else {
      // Inline rules (and optional input): re-emitted as a rule document.
      YAML::Node doc;
      doc["rules"] = root["rules"];
      if (root["input"]) doc["input"] = root["input"];
      YAML::Emitter emitter;
      emitter << doc;
      loaded = LoadRuleText(emitter.c_str(), file_ + " (inline rules)");
    }
    if (!loaded.ok()) {
      for (const Diagnostic& d : loaded.diagnostics) {
        out_ << FormatDiagnostic(d) << "\n";
      }
      ++result->errors;
      return;
    }
    for (const YAML::Node& t : root["tests"]) {
      if (RunTest(t, loaded.rules)) {
        ++result->passed;
      } else {
        ++result->failed;
      }
    }
  }

 private:
  std::string Resolve(const std::string& p) const {
    if (fs::path(p).is_absolute()) return p;
    return (dir_ / p).lexically_normal().string();
  }

  bool Fail(const std::string& name, const YAML::Node& at,
            const std::string& msg) {
    out_ << "FAIL " << file_ << ":" << at.Mark().line + 1 << " " << name << ": "
         << msg << "\n";
    return false;
  }

  bool RunTest(const YAML::Node& t, std::shared_ptr<const RuleSet> rules) {
    const std::string name =
        t["name"] ? t["name"].as<std::string>()
                  : absl::StrCat("test at line ", t.Mark().line + 1);
    auto replayer = Replayer::Create(rules, ReplayerOptions{});
    if (!replayer.ok()) {
      return Fail(name, t, std::string(replayer.status().message()));
    }
    std::vector<Violation> got;
    auto sink = [&](const Violation& v) { got.push_back(v); };
    const std::string source =
        t["source"] ? t["source"].as<std::string>() : "events";
    absl::Status st;
    if (t["events_file"]) {
      st = (*replayer)->ProcessPath(Resolve(t["events_file"].as<std::string>()),
                                    sink);
    } else if (t["events"]) {
      std::string text;
      const YAML::Node ev = t["events"];
      if (ev.IsSequence()) {
        for (const YAML::Node& e : ev) {
          if (!e.IsScalar()) {
            return Fail(name, e,
                        "each item of 'events' must be a string holding one "
                        "record (quote JSON lines: '{\"a\": 1}')");
          }
          absl::StrAppend(&text, e.Scalar(), "\n");
        }
      } else if (!ev.IsScalar()) {
        return Fail(name, ev,
                    "'events' must be a block of records (events: |) or a "
                    "list of strings");
      } else {
        text = ev.Scalar();
      }
      st = (*replayer)->ProcessText(text, source, sink);
    } else {
      return Fail(name, t, "a test needs 'events' or 'events_file'");
    }
    if (!st.ok()) return Fail(name, t, std::string(st.message()));

    std::vector<Expectation> want;
    if (t["expect"]) {
      for (const YAML::Node& e : t["expect"]) {
        Expectation x;
        if (!e["rule"]) return Fail(name, e, "an expectation needs 'rule'");
        x.rule = e["rule"].as<std::string>();
        if (e["line"]) x.line = e["line"].as<uint64_t>();
        if (e["reason"]) x.reason = e["reason"].as<std::string>();
        if (e["key"]) {
          x.key.emplace();
          for (const auto& kv : e["key"]) {
            x.key->emplace_back(kv.first.as<std::string>(),
                                kv.second.as<std::string>());
          }
        }
        want.push_back(std::move(x));
      }
    }
    // Multiset match: each expectation consumes one violation. The most
    // specific expectations choose first, so a vaguer one cannot take the
    // only violation a precise one could match.
    std::stable_sort(want.begin(), want.end(),
                     [](const Expectation& a, const Expectation& b) {
                       return a.Constraints() > b.Constraints();
                     });
    std::vector<bool> used(got.size(), false);
    std::vector<std::string> missing;
    for (const Expectation& x : want) {
      bool hit = false;
      for (size_t i = 0; i < got.size() && !hit; ++i) {
        if (!used[i] && x.Matches(got[i])) used[i] = hit = true;
      }
      if (!hit) missing.push_back(x.Describe());
    }
    std::vector<std::string> unexpected;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!used[i]) unexpected.push_back(DescribeViolation(got[i]));
    }
    if (missing.empty() && unexpected.empty()) {
      out_ << "PASS " << file_ << " " << name << "\n";
      return true;
    }
    out_ << "FAIL " << file_ << ":" << t.Mark().line + 1 << " " << name << "\n";
    for (const auto& m : missing) out_ << "  - missing:    " << m << "\n";
    for (const auto& u : unexpected) out_ << "  + unexpected: " << u << "\n";
    for (const auto& r : (*replayer)->reject_messages()) {
      out_ << "    note: " << r << "\n";
    }
    return false;
  }

  std::string file_;
  fs::path dir_;
  std::ostream& out_;
};

}  // namespace

RuleTestResult RunRuleTestFiles(const std::vector<std::string>& files,
                                std::ostream& out) {
  RuleTestResult result;
  for (const std::string& f : files) {
    try {
      FileRunner(f, out).Run(&result);
    } catch (const YAML::Exception& e) {
      out << f << ":" << e.mark.line + 1 << ":" << e.mark.column + 1
          << ": error: " << e.msg << "\n";
      ++result.errors;
    }
  }
  out << result.passed << " passed, " << result.failed << " failed";
  if (result.errors > 0) out << ", " << result.errors << " errors";
  out << "\n";
  return result;
}

}  // namespace invariantd
