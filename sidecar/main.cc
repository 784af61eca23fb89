// invariantd: checks a service's event stream against the invariants its
// design promises, and reports every state the design calls impossible.
#include <iostream>

#include "CLI/CLI.hpp"
#include "sidecar/commands.h"

int main(int argc, char** argv) {
  using namespace invariantd;
  std::ios::sync_with_stdio(false);
  CLI::App app{"invariantd: online invariant checking for event streams"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(Version()));

  ReplayCommand replay;
  std::string out_format = "jsonl";
  auto* rp = app.add_subcommand(
      "replay", "Check recorded events (files or stdin) against rules");
  rp->add_option("--rules", replay.rules, "Rule file or directory (repeatable)")
      ->required()
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  rp->add_option("--format", out_format, "Output format")
      ->check(CLI::IsMember({"jsonl", "text"}));
  rp->add_option("--input-format", replay.input_format,
                 "Decode input as json, logfmt or regex (default: the rule "
                 "files' 'input', else json)")
      ->check(CLI::IsMember({"json", "jsonl", "ndjson", "logfmt", "regex"}));
  rp->add_option("--pattern", replay.pattern,
                 "RE2 pattern with named groups, for --input-format regex");
  rp->add_option("--max-line-bytes", replay.max_line_bytes,
                 "Longer records are skipped and counted")
      ->check(CLI::Range(size_t{64}, size_t{1} << 30));
  rp->add_option("--dedupe-window", replay.dedupe_window,
                 "Recent event identities remembered to skip redeliveries "
                 "(0 disables)")
      ->check(CLI::Range(size_t{0}, size_t{1} << 24));
  rp->add_flag("!--no-summary", replay.summary, "Do not print the summary");
  rp->add_option("files", replay.inputs, "Input files ('-' is stdin)");

  std::vector<std::string> validate_paths;
  bool validate_json = false;
  auto* vp = app.add_subcommand("validate", "Check rule files");
  vp->add_option("paths", validate_paths, "Rule files or directories")
      ->required();
  vp->add_flag("--json", validate_json, "Print diagnostics as JSON lines");

  std::vector<std::string> test_files;
  auto* tp = app.add_subcommand("test", "Run rule unit tests (YAML)");
  tp->add_option("files", test_files, "Test files")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  if (*rp) {
    replay.format =
        out_format == "text" ? OutputFormat::kText : OutputFormat::kJsonl;
    return RunReplay(replay, std::cout, std::cerr);
  }
  if (*vp)
    return RunValidate(validate_paths, validate_json, std::cout, std::cerr);
  if (*tp) return RunTest(test_files, std::cout);
  return kExitError;
}
