// The CLI's subcommands as plain functions, so tests can call them without a
// process. Each returns the process exit status: 0 success / no violation,
// 1 violations found (replay) or tests failed (test), 2 usage,
// configuration or input error.
#ifndef INVARIANTD_SIDECAR_COMMANDS_H_
#define INVARIANTD_SIDECAR_COMMANDS_H_

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

#include "sidecar/violation_format.h"

namespace invariantd {

inline constexpr int kExitOk = 0;
inline constexpr int kExitViolations = 1;
inline constexpr int kExitError = 2;

struct ReplayCommand {
  std::vector<std::string> rules;   // empty: the config's `rules`
  std::vector<std::string> inputs;  // "-" is stdin
  OutputFormat format = OutputFormat::kJsonl;
  std::string input_format;  // empty: the config's, else the rule set's `input`
  std::string pattern;       // for --input-format regex
  size_t max_line_bytes = 1 << 20;
  size_t dedupe_window = 1 << 16;
  uint64_t max_state_bytes = 0;  // memory budget of the rules' state; 0: none
  bool summary = true;
  // `invariantd run`'s configuration file: replay then judges as the
  // daemon would -- its rules (unless --rules), rule limits, input
  // format and limits, dedupe window, state budget and redaction. The
  // flags below say which of the fields above were given on the command
  // line; those override the file.
  std::string config;
  bool max_line_bytes_set = false;
  bool dedupe_window_set = false;
  bool max_state_bytes_set = false;
};

int RunReplay(const ReplayCommand& cmd, std::ostream& out, std::ostream& err);

// `validate PATH...`: json=true prints diagnostics as JSON lines. With
// `config_path` (invariantd run's configuration), its rule_limits apply
// instead of the defaults.
int RunValidate(const std::vector<std::string>& paths, bool json,
                std::ostream& out, std::ostream& err,
                const std::string& config_path = "");

int RunTest(const std::vector<std::string>& files, std::ostream& out);

std::string_view Version();

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_COMMANDS_H_
