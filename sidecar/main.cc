// invariantd: checks a service's event stream against the invariants its
// design promises, and reports every state the design calls impossible.
#include <iostream>

#include "CLI/CLI.hpp"
#include "sidecar/app.h"
#include "sidecar/commands.h"
#include "sidecar/config.h"
#include "sidecar/evidence_query.h"
#include "sidecar/paging.h"

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
  rp->add_option("--config", replay.config,
                 "invariantd run's YAML configuration: judge as the daemon "
                 "would (its rules, limits, input, dedupe window, state "
                 "budget and redaction; flags override it)");
  rp->add_option("--rules", replay.rules,
                 "Rule file or directory (repeatable; required without "
                 "--config)")
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
  auto* rp_line = rp->add_option("--max-line-bytes", replay.max_line_bytes,
                                 "Longer records are skipped and counted")
                      ->check(CLI::Range(size_t{64}, size_t{1} << 30));
  auto* rp_window =
      rp->add_option("--dedupe-window", replay.dedupe_window,
                     "Recent event identities remembered to skip redeliveries "
                     "(0 disables)")
          ->check(CLI::Range(size_t{0}, size_t{1} << 24));
  auto* rp_state = rp->add_option(
      "--max-state-bytes", replay.max_state_bytes,
      "Memory budget for all rules' state (default: none); at it, "
      "each rule's on_overflow applies");
  rp->add_flag("!--no-summary", replay.summary, "Do not print the summary");
  rp->add_option("files", replay.inputs, "Input files ('-' is stdin)");

  std::vector<std::string> validate_paths;
  bool validate_json = false;
  auto* vp = app.add_subcommand("validate", "Check rule files");
  vp->add_option("paths", validate_paths, "Rule files or directories")
      ->required();
  vp->add_flag("--json", validate_json, "Print diagnostics as JSON lines");
  std::string validate_config;
  vp->add_option("--config", validate_config,
                 "invariantd run's YAML configuration: check against its "
                 "rule_limits");

  std::vector<std::string> test_files;
  auto* tp = app.add_subcommand("test", "Run rule unit tests (YAML)");
  tp->add_option("files", test_files, "Test files")->required();

  // evidence: read-only views of the store, while the daemon runs or not.
  EvidenceCommand ev;
  std::string ev_rule, ev_since, ev_until;
  std::vector<std::string> ev_keys;
  size_t ev_limit = 0;
  auto* evp = app.add_subcommand(
      "evidence", "Verify and query the evidence store (read-only)");
  evp->require_subcommand(1);
  auto* ev_verify = evp->add_subcommand(
      "verify", "Check the hash chain; exit 0 only if intact");
  auto* ev_query =
      evp->add_subcommand("query", "Print stored violations, oldest first");
  auto* ev_show = evp->add_subcommand("show", "Print one stored violation");
  for (CLI::App* sub : {ev_verify, ev_query, ev_show}) {
    sub->add_option("--data-dir", ev.data_dir, "State directory")
        ->capture_default_str();
  }
  ev_verify->add_flag("--json", ev.json, "Print the report as JSON");
  ev_query->add_option("--rule", ev_rule, "Only this rule");
  ev_query->add_option("--key", ev_keys, "field=value of the key (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  ev_query->add_option("--since", ev_since,
                       "Detected at or after (RFC 3339 or epoch ms)");
  ev_query->add_option("--until", ev_until,
                       "Detected before (RFC 3339 or epoch ms)");
  ev_query->add_option("--limit", ev_limit, "At most this many")
      ->check(CLI::Range(size_t{1}, kMaxEvidencePage));
  for (CLI::App* sub : {ev_query, ev_show}) {
    sub->add_option("--format", ev.format, "Output format")
        ->check(CLI::IsMember({"jsonl", "text"}));
  }
  ev_show->add_option("id", ev.id, "Violation id")->required();

  // alerts: the alerts the pager keeps, while the daemon runs or not.
  AlertsCommand al;
  auto* alp = app.add_subcommand(
      "alerts", "List alerts or resolve one (works while the daemon runs)");
  alp->require_subcommand(1);
  auto* al_list = alp->add_subcommand("list", "Print the firing alerts");
  auto* al_resolve = alp->add_subcommand(
      "resolve", "Resolve an alert now; the daemon sends the resolve");
  for (CLI::App* sub : {al_list, al_resolve}) {
    sub->add_option("--data-dir", al.data_dir, "State directory")
        ->capture_default_str();
  }
  al_list->add_flag("--all", al.all, "Resolved alerts too");
  al_list->add_option("--limit", al.limit, "At most this many")
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  al_list->add_option("--format", al.format, "Output format")
      ->check(CLI::IsMember({"jsonl", "text"}));
  al_resolve->add_option("fingerprint", al.fingerprint, "Alert fingerprint")
      ->required();

  // run: flags override the config file, which overrides the defaults.
  std::string run_config_path;
  RunConfig flags;
  std::vector<std::string> run_rules, run_tail, run_topics;
  bool no_stdout = false;
  bool no_evidence = false;
  auto* run = app.add_subcommand(
      "run", "Run the sidecar: tail files, accept HTTP pushes, consume Kafka");
  run->add_option("--config", run_config_path, "YAML configuration file");
  run->add_option("--rules", run_rules, "Rule file or directory (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  run->add_option("--tail", run_tail, "File glob to tail (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* listen = run->add_option("--listen", flags.listen,
                                 "HTTP address for ingest, metrics, health");
  auto* data_dir =
      run->add_option("--data-dir", flags.data_dir, "State directory");
  auto* brokers = run->add_option("--kafka-brokers", flags.kafka_brokers,
                                  "Kafka bootstrap servers");
  run->add_option("--kafka-topic", run_topics, "Kafka topic (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* group =
      run->add_option("--kafka-group", flags.kafka_group, "Consumer group");
  auto* token =
      run->add_option("--auth-token-file", flags.auth_token_file,
                      "Bearer tokens (one per line) for ingest and queries");
  auto* ingest_token =
      run->add_option("--ingest-token-file", flags.ingest_token_file,
                      "Bearer tokens (one per line) for ingest only");
  auto* query_token =
      run->add_option("--query-token-file", flags.query_token_file,
                      "Bearer tokens (one per line) for evidence queries only");
  bool allow_unauthenticated = false;
  run->add_flag("--allow-unauthenticated", allow_unauthenticated,
                "Listen off loopback even where a scope has no token");
  auto* workers = run->add_option("--workers", flags.workers,
                                  "Evaluation threads (keys are sharded)")
                      ->check(CLI::Range(1, 64));
  auto* log_level =
      run->add_option("--log-level", flags.log_level,
                      "debug|info|warning|error")
          ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  run->add_flag("--no-evidence", no_evidence,
                "Keep no evidence store (inputs are acknowledged once "
                "evaluated)");
  std::vector<std::string> run_alertmanagers;
  run->add_option("--alertmanager", run_alertmanagers,
                  "Alertmanager base URL to page (repeatable)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  auto* webhook = run->add_option("--webhook", flags.webhook_url,
                                  "Webhook URL to page (JSON POST)");
  auto* webhook_secret =
      run->add_option("--webhook-secret-file", flags.webhook_secret_file,
                      "File holding the webhook's HMAC-SHA256 key");
  auto* max_state = run->add_option(
      "--max-state-bytes", flags.state_max_bytes,
      "Memory budget for all rules' state (0: none; default 1 GiB)");
  run->add_flag("--no-stdout", no_stdout,
                "Do not print violations as JSON lines on stdout");
  bool check_config = false;
  run->add_flag("--check-config", check_config,
                "Check the configuration, rules and token files, print what "
                "would run, and exit (0 ok, 2 errors) without starting");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  if (*rp) {
    replay.format =
        out_format == "text" ? OutputFormat::kText : OutputFormat::kJsonl;
    replay.max_line_bytes_set = rp_line->count() > 0;
    replay.dedupe_window_set = rp_window->count() > 0;
    replay.max_state_bytes_set = rp_state->count() > 0;
    return RunReplay(replay, std::cout, std::cerr);
  }
  if (*vp)
    return RunValidate(validate_paths, validate_json, std::cout, std::cerr,
                       validate_config);
  if (*tp) return RunTest(test_files, std::cout);
  if (*evp) {
    ev.action = *ev_verify ? "verify" : *ev_query ? "query" : "show";
    if (!ev_rule.empty()) ev.params.emplace_back("rule", ev_rule);
    for (const std::string& k : ev_keys) ev.params.emplace_back("key", k);
    if (!ev_since.empty()) ev.params.emplace_back("since", ev_since);
    if (!ev_until.empty()) ev.params.emplace_back("until", ev_until);
    if (ev_limit != 0)
      ev.params.emplace_back("limit", std::to_string(ev_limit));
    return RunEvidence(ev, std::cout, std::cerr);
  }
  if (*alp) {
    al.action = *al_list ? "list" : "resolve";
    return RunAlerts(al, std::cout, std::cerr);
  }
  if (*run) {
    RunConfig config;
    if (!run_config_path.empty()) {
      const absl::Status st = LoadRunConfig(run_config_path, &config);
      if (!st.ok()) {
        std::cerr << st.message() << "\n";
        return kExitError;
      }
    }
    if (!run_rules.empty()) config.rules = run_rules;
    if (!run_tail.empty()) config.tail = run_tail;
    if (!run_topics.empty()) config.kafka_topics = run_topics;
    if (!run_alertmanagers.empty()) config.alertmanagers = run_alertmanagers;
    if (*webhook) config.webhook_url = flags.webhook_url;
    if (*webhook_secret) {
      config.webhook_secret_file = flags.webhook_secret_file;
    }
    if (*listen) config.listen = flags.listen;
    if (*data_dir) config.data_dir = flags.data_dir;
    if (*brokers) config.kafka_brokers = flags.kafka_brokers;
    if (*group) config.kafka_group = flags.kafka_group;
    if (*token) config.auth_token_file = flags.auth_token_file;
    if (*ingest_token) config.ingest_token_file = flags.ingest_token_file;
    if (*query_token) config.query_token_file = flags.query_token_file;
    if (allow_unauthenticated) config.allow_unauthenticated = true;
    if (*workers) config.workers = flags.workers;
    if (*max_state) config.state_max_bytes = flags.state_max_bytes;
    if (*log_level) config.log_level = flags.log_level;
    if (no_stdout) config.stdout_violations = false;
    if (no_evidence) config.evidence = false;
    if (check_config) return CheckRunConfig(config, std::cout, std::cerr);
    return RunDaemon(config);
  }
  return kExitError;
}
