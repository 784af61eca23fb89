#include "sidecar/commands.h"

#include "absl/strings/str_cat.h"
#include "sidecar/core/strings.h"
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
  LoadResult loaded = LoadRuleFiles(cmd.rules);
  if (!loaded.ok()) {
    PrintDiagnostics(loaded.diagnostics, false, err);
    err << loaded.diagnostics.size() << " error(s) in rule files\n";
    return kExitError;
  }
  ReplayerOptions opts;
  opts.max_line_bytes = cmd.max_line_bytes;
  opts.engine.dedupe_window = cmd.dedupe_window;
  if (cmd.max_state_bytes != 0) {
    opts.engine.budget = std::make_shared<MemoryBudget>(cmd.max_state_bytes);
  }
  if (!cmd.input_format.empty()) {
    auto f = ParseInputFormat(cmd.input_format);
    if (!f.ok()) {
      err << "invariantd replay: " << f.status().message() << "\n";
      return kExitError;
    }
    DecoderOptions d;
    d.format = *f;
    d.pattern = cmd.pattern;
    opts.decoder = d;
  }
  auto replayer = Replayer::Create(loaded.rules, opts);
  if (!replayer.ok()) {
    err << "invariantd replay: " << replayer.status().message() << "\n";
    return kExitError;
  }
  auto sink = [&](const Violation& v) {
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
                std::ostream& out, std::ostream& err) {
  LoadResult loaded = LoadRuleFiles(paths);
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
