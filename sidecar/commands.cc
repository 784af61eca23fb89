#include "sidecar/commands.h"

#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "sidecar/config.h"
#include "sidecar/core/strings.h"
#include "sidecar/redactor.h"
#include "sidecar/replayer.h"
#include "sidecar/rule_test.h"

namespace invariantd {

std::string_view Version() { return INVARIANTD_VERSION; }

namespace {

void PrintDiagnostics(const std::vector<Diagnostic>& diags, bool json,
                      std::ostream& out) {
  for (const Diagnostic& d : diags) {
    out << (json ? DiagnosticJson(d) : FormatDiagnostic(d)) << "\n";
  }
}

}  // namespace

int RunReplay(const ReplayCommand& cmd, std::ostream& out, std::ostream& err) {
  // Without --config: the command line's values (and their defaults).
  RunConfig config;
  const bool with_config = !cmd.config.empty();
  if (with_config) {
    if (absl::Status st = LoadRunConfig(cmd.config, &config); !st.ok()) {
      err << "invariantd replay: " << st.message() << "\n";
      return kExitError;
    }
  }
  const std::vector<std::string>& rule_paths =
      cmd.rules.empty() ? config.rules : cmd.rules;
  if (rule_paths.empty()) {
    err << "invariantd replay: no rules: give --rules, or a --config that "
           "names them\n";
    return kExitError;
  }
  LoadResult loaded = with_config
                          ? LoadRuleFiles(rule_paths, config.rule_limits)
                          : LoadRuleFiles(rule_paths);
  if (!loaded.ok()) {
    PrintDiagnostics(loaded.diagnostics, false, err);
    err << loaded.diagnostics.size() << " error(s) in rule files\n";
    return kExitError;
  }
  ReplayerOptions opts;
  opts.max_line_bytes = with_config && !cmd.max_line_bytes_set
                            ? config.max_line_bytes
                            : cmd.max_line_bytes;
  opts.engine.dedupe_window = with_config && !cmd.dedupe_window_set
                                  ? config.dedupe_window
                                  : cmd.dedupe_window;
  const uint64_t max_state_bytes = with_config && !cmd.max_state_bytes_set
                                       ? config.state_max_bytes
                                       : cmd.max_state_bytes;
  if (max_state_bytes != 0) {
    opts.engine.budget = std::make_shared<MemoryBudget>(max_state_bytes);
  }
  if (with_config) {
    opts.limits.max_depth = config.max_depth;
    opts.limits.max_fields = config.max_fields;
    opts.limits.max_string_bytes = config.max_string_bytes;
  }
  const std::string& input_format =
      cmd.input_format.empty() ? config.input_format : cmd.input_format;
  if (!input_format.empty()) {
    auto f = ParseInputFormat(input_format);
    if (!f.ok()) {
      err << "invariantd replay: " << f.status().message() << "\n";
      return kExitError;
    }
    DecoderOptions d;
    d.format = *f;
    d.pattern = cmd.pattern.empty() ? config.pattern : cmd.pattern;
    opts.decoder = d;
  }
  // The daemon's redaction, before anything is printed.
  std::unique_ptr<Redactor> redactor;
  if (!config.redact.empty()) {
    auto r = Redactor::Create(config.redact);
    if (!r.ok()) {
      err << "invariantd replay: " << r.status().message() << "\n";
      return kExitError;
    }
    redactor = *std::move(r);
  }
  auto replayer = Replayer::Create(loaded.rules, opts);
  if (!replayer.ok()) {
    err << "invariantd replay: " << replayer.status().message() << "\n";
    return kExitError;
  }
  auto sink = [&](const Violation& raw) {
    std::optional<Violation> redacted;
    if (redactor) {
      redacted = raw;
      redactor->Apply(&*redacted);
    }
    const Violation& v = redacted.has_value() ? *redacted : raw;
    out << (cmd.format == OutputFormat::kJsonl ? ViolationJson(v)
                                               : ViolationText(v))
        << "\n";
  };
  bool input_error = false;
  std::vector<std::string> inputs = cmd.inputs;
  if (inputs.empty()) inputs.push_back("-");
  for (const std::string& path : inputs) {
    const absl::Status st = (*replayer)->ProcessPath(path, sink);
    if (!st.ok()) {
      err << "invariantd replay: " << st.message() << "\n";
      input_error = true;
    }
  }
  out.flush();
  if (cmd.summary) (*replayer)->WriteSummary(err);
  if (input_error) return kExitError;
  return (*replayer)->stats().violations > 0 ? kExitViolations : kExitOk;
}

int RunValidate(const std::vector<std::string>& paths, bool json,
                std::ostream& out, std::ostream& err,
                const std::string& config_path) {
  // With the daemon's configuration: its rule limits apply.
  RunConfig config;
  if (!config_path.empty()) {
    if (absl::Status st = LoadRunConfig(config_path, &config); !st.ok()) {
      err << "invariantd validate: " << st.message() << "\n";
      return kExitError;
    }
  }
  LoadResult loaded = LoadRuleFiles(paths, config.rule_limits);
  if (!loaded.ok()) {
    PrintDiagnostics(loaded.diagnostics, json, json ? out : err);
    if (!json) err << loaded.diagnostics.size() << " error(s)\n";
    return kExitError;
  }
  if (!json) {
    out << "ok: " << loaded.rules->rules().size() << " rules in "
        << loaded.rules->files().size() << " file(s), rule set digest "
        << loaded.rules->digest().Hex() << "\n";
  }
  return kExitOk;
}

int RunTest(const std::vector<std::string>& files, std::ostream& out) {
  const RuleTestResult r = RunRuleTestFiles(files, out);
  if (r.errors > 0) return kExitError;
  return r.failed > 0 ? kExitViolations : kExitOk;
}

}  // namespace invariantd
