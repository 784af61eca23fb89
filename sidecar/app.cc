#include "sidecar/app.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporters/prometheus/metrics.h"
#include "ingest/file/tailer.h"
#include "ingest/http/http_ingest.h"
#include "ingest/kafka/kafka_source.h"
#include "nlohmann/json.hpp"
#include "sidecar/checkpoint_file.h"
#include "sidecar/commands.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"
#include "sidecar/core/thread_priority.h"
#include "sidecar/evidence_query.h"
#include "sidecar/evidence_writer.h"
#include "sidecar/http_server.h"
#include "sidecar/log.h"
#include "sidecar/paging.h"
#include "sidecar/pipeline.h"
#include "sidecar/violation_format.h"

namespace invariantd {

using Json = nlohmann::json;

struct App::Services {
  std::shared_ptr<const RuleSet> rules;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<Pipeline> pipeline;
  std::unique_ptr<HttpIngest> http_ingest;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<FileTailer> tailer;
  std::unique_ptr<KafkaSource> kafka;
  std::unique_ptr<EvidenceWriter> evidence;  // null when disabled
  std::unique_ptr<Pager> pager;              // null when paging is off
  std::string evidence_path;
  std::optional<StoredState> stored_state;  // until the pipeline takes it
  std::string state_problem;  // why the rule state was not restored
  // A read-only connection for the query API, opened on first use.
  std::mutex evidence_read_mu;
  std::unique_ptr<EvidenceStore> evidence_reader;
  std::mutex out_mu;  // whole lines on stdout
  std::string positions_path;
  std::atomic<int64_t> last_checkpoint_ns{0};
  std::atomic<bool> data_dir_ok{true};
  std::atomic<bool> kafka_ok{true};
  std::shared_ptr<MemoryBudget> state_budget;  // null: none configured
  std::unique_ptr<Redactor> redactor;          // null: no `redact` rules
  // Previous totals, to turn cumulative stats into counter increments.
  std::map<std::string, uint64_t> last;
  uint64_t Delta(const std::string& name, uint64_t total) {
    uint64_t& prev = last[name];
    const uint64_t d = total >= prev ? total - prev : 0;
    prev = total;
    return d;
  }
};

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// The tokens of a token file (one per line; see ParseTokenFile). The
// message names the file, never a token.
absl::StatusOr<std::vector<std::string>> ReadTokens(const std::string& path) {
  auto content = ReadFileIfExists(path);
  if (!content.ok()) return content.status();
  if (!content->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("token file ", path, " does not exist"));
  }
  std::vector<std::string> tokens = ParseTokenFile(**content);
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, " holds no token"));
  }
  for (const std::string& t : tokens) {
    for (const char c : t) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
        return absl::InvalidArgumentError(
            absl::StrCat("token file ", path,
                         ": a token contains a blank or control character"));
      }
    }
  }
  return tokens;
}

// Whether `listen` (HOST:PORT) is a loopback address: only local processes
// can then reach the listener.
bool IsLoopbackListen(std::string_view listen) {
  std::string_view host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" ||
         absl::StartsWith(AV(host), "127.");
}

// The bearer tokens by scope (least authority: auth_token_file for both,
// ingest_token_file and query_token_file for one each), and the refusal to
// listen off loopback while a scope that is on has no token. `open_scopes`
// lists the scopes left open off loopback because allow_unauthenticated
// accepts it. Used by App::Start and by CheckRunConfig alike.
struct AuthSetup {
  std::shared_ptr<TokenAuth> auth;
  std::vector<std::string> open_scopes;
};

absl::StatusOr<AuthSetup> SetUpAuth(const RunConfig& config, bool evidence) {
  AuthSetup out;
  out.auth = std::make_shared<TokenAuth>();
  for (const auto& [path, scopes] :
       std::vector<std::pair<std::string, std::vector<AuthScope>>>{
           {config.auth_token_file, {AuthScope::kIngest, AuthScope::kQuery}},
           {config.ingest_token_file, {AuthScope::kIngest}},
           {config.query_token_file, {AuthScope::kQuery}}}) {
    if (path.empty()) continue;
    auto tokens = ReadTokens(path);
    if (!tokens.ok()) return tokens.status();
    for (AuthScope scope : scopes) {
      for (const std::string& t : *tokens) out.auth->Add(scope, t);
    }
  }
  // Off loopback, whoever reaches the port could push events or read the
  // evidence: refused unless tokens guard both, or the operator says so.
  std::vector<std::string> open_scopes;
  if (config.http_ingest && !out.auth->Required(AuthScope::kIngest)) {
    open_scopes.push_back("ingest (--ingest-token-file)");
  }
  if (evidence && !out.auth->Required(AuthScope::kQuery)) {
    open_scopes.push_back("evidence queries (--query-token-file)");
  }
  if (!IsLoopbackListen(config.listen) && !open_scopes.empty()) {
    if (!config.allow_unauthenticated) {
      return absl::FailedPreconditionError(absl::StrCat(
          "listening on ", config.listen,
          " (not loopback) without a token for ",
          absl::StrJoin(open_scopes, " and "),
          ": set the token files, or http.allow_unauthenticated: true "
          "(--allow-unauthenticated) to accept it"));
    }
    out.open_scopes = std::move(open_scopes);
  }
  return out;
}

std::string PositionsToJson(const std::vector<TailPosition>& positions) {
  Json arr = Json::array();
  for (const TailPosition& p : positions) {
    arr.push_back({{"path", p.path},
                   {"dev", p.dev},
                   {"ino", p.ino},
                   {"offset", p.offset},
                   {"line", p.line}});
  }
  return Json{{"version", 1}, {"positions", arr}}.dump(2) + "\n";
}

absl::StatusOr<std::vector<TailPosition>> PositionsFromJson(
    const std::string& text, const std::string& path) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("positions") ||
      !j["positions"].is_array()) {
    return absl::DataLossError(absl::StrCat(
        path,
        " is not a valid positions file; move it away to start the "
        "tailer from the beginning of every file"));
  }
  std::vector<TailPosition> out;
  for (const Json& p : j["positions"]) {
    TailPosition t;
    t.path = p.value("path", "");
    t.dev = p.value("dev", uint64_t{0});
    t.ino = p.value("ino", uint64_t{0});
    t.offset = p.value("offset", uint64_t{0});
    t.line = p.value("line", uint64_t{0});
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

App::App(RunConfig config)
    : config_(std::move(config)), s_(std::make_unique<Services>()) {}

App::~App() { StopAll(); }

int App::port() const { return s_->http ? s_->http->port() : 0; }

absl::Status App::Start() {
  // Before any thread of the path starts (sidecar/core/thread_priority.h).
  SetViolationPathSlice(config_.scheduler_slice_us);
  LogLevel level;
  if (!ParseLogLevel(config_.log_level, &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log_level '", config_.log_level,
                     "'; use debug, info, warning or error"));
  }
  SetLogLevel(level);
  if (absl::Status st = ValidateRunConfig(config_); !st.ok()) return st;

  // Rules.
  LoadResult loaded = LoadRuleFiles(config_.rules, config_.rule_limits);
  if (!loaded.ok()) {
    std::vector<std::string> lines;
    for (const Diagnostic& d : loaded.diagnostics) {
      lines.push_back(FormatDiagnostic(d));
    }
    return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
  }
  s_->rules = loaded.rules;
  rules_fingerprint_ = RulesFingerprint();
  Log(LogLevel::kInfo, "rules loaded",
      {{"rules", absl::StrCat(s_->rules->rules().size())},
       {"files", absl::StrCat(s_->rules->files().size())},
       {"digest", s_->rules->digest().Hex()}});

  // Data dir.
  if (absl::Status st = EnsureWritableDir(config_.data_dir); !st.ok()) {
    return st;
  }
  s_->positions_path = config_.data_dir + "/tail-positions.json";

  // Metrics.
  s_->metrics = std::make_unique<Metrics>(std::string(Version()),
                                          config_.metrics_max_protocol_series);
  Services* s = s_.get();
  const bool to_stdout = config_.stdout_violations;

  // Evidence store: every violation is committed before the input that
  // produced it is acknowledged; only new ones (not re-evaluations of a
  // stored id) are printed and counted.
  if (config_.evidence) {
    s_->evidence_path = EvidencePath(config_.data_dir);
    auto store = EvidenceStore::Open(s_->evidence_path, /*read_only=*/false,
                                     /*busy_timeout_ms=*/5000,
                                     /*check_pages=*/true);
    if (!store.ok()) {
      return absl::Status(
          store.status().code(),
          absl::StrCat(store.status().message(),
                       ". The file is left as it is: inspect it with "
                       "`invariantd evidence verify --data-dir ",
                       config_.data_dir,
                       "`, then move it aside to start a new store "
                       "(docs/evidence.md, \"Damaged store\")"));
    }
    Log(LogLevel::kInfo, "evidence store opened",
        {{"path", s_->evidence_path},
         {"head_seq", absl::StrCat((*store)->head_seq())},
         {"head_hash", (*store)->head_hash()}});
    // The rule-state checkpoint, in its own database. A damaged one is not
    // fatal: the rules start empty (lost coverage, logged and exported),
    // the evidence is untouched, and the next full checkpoint replaces it.
    // A file that cannot be opened at all (another application's, a newer
    // format) is refused like a damaged evidence store.
    const std::string state_path = StatePath(config_.data_dir);
    auto state = StateStore::Open(state_path, /*read_only=*/false,
                                  /*busy_timeout_ms=*/5000,
                                  /*check_pages=*/true);
    if (!state.ok() && state.status().code() == absl::StatusCode::kDataLoss) {
      // A torn or truncated state database: the state is derived data, so
      // it is moved aside (kept for a look) and the rules start empty, as
      // for a damaged image inside it.
      const std::string aside = absl::StrCat(state_path, ".damaged-",
                                             absl::ToUnixSeconds(absl::Now()));
      for (const char* suffix : {"", "-wal", "-shm"}) {
        std::error_code ec;
        std::filesystem::rename(state_path + suffix, aside + suffix, ec);
      }
      s_->state_problem = absl::StrCat(
          "the rule-state database was damaged (", state.status().message(),
          "); it was moved to ", aside, " and the rules start empty");
      Log(LogLevel::kError, "rule state not restored",
          {{"error", s_->state_problem}});
      state = StateStore::Open(state_path, /*read_only=*/false,
                               /*busy_timeout_ms=*/5000);
    }
    if (!state.ok()) {
      return absl::Status(
          state.status().code(),
          absl::StrCat(state.status().message(),
                       ". The file is left as it is; move it aside to start "
                       "with empty rule state (docs/evidence.md, \"Damaged "
                       "store\")"));
    }
    auto stored = (*state)->Load();
    if (!s_->state_problem.empty()) {
      // Already said why the rules start empty.
    } else if (!stored.ok()) {
      s_->state_problem = absl::StrCat(
          "the rule-state checkpoint is damaged (", stored.status().message(),
          "); the rules start empty and the next checkpoint replaces it");
      Log(LogLevel::kError, "rule state not restored",
          {{"error", s_->state_problem}});
    } else if (stored->has_value()) {
      s_->stored_state = std::move(**stored);
    }
    if (PagingEnabled(config_)) {
      // The outbox rows of new violations commit with their evidence.
      auto pager = InstallPaging(config_, store->get(), s_->evidence_path, [s] {
        return s->pipeline ? s->pipeline->rules() : s->rules;
      });
      if (!pager.ok()) return pager.status();
      s_->pager = *std::move(pager);
    }
    EvidenceWriterOptions eopts;
    eopts.commit_interval =
        std::chrono::milliseconds(config_.evidence_commit_interval_ms);
    eopts.on_commit_seconds = [metrics = s_->metrics.get()](double sec) {
      metrics->EvidenceCommitLatency(sec);
    };
    eopts.on_checkpoint_seconds = [metrics = s_->metrics.get()](double sec) {
      metrics->StateCheckpointLatency(sec);
    };
    s_->evidence = std::make_unique<EvidenceWriter>(
        *std::move(store), eopts,
        [s, to_stdout](const EvidenceRecord& r, const std::string& line) {
          s->metrics->RuleViolation(r.rule, r.severity);
          if (s->pager) s->pager->Notify();
          if (to_stdout) {
            std::lock_guard<std::mutex> l(s->out_mu);
            WriteAll(STDOUT_FILENO, line);
          }
        },
        [](const absl::Status& st) {
          Log(LogLevel::kError,
              "evidence commit failed: holding acknowledgements and retrying",
              {{"error", std::string(st.message())}});
        },
        *std::move(state));
    s_->evidence->Start();
    PruneEvidence();
  }

  // Pipeline and the violation output.
  PipelineOptions popts;
  popts.workers = config_.workers;
  popts.queue_capacity = config_.queue_capacity;
  popts.max_line_bytes = config_.max_line_bytes;
  popts.input_limits.max_depth = config_.max_depth;
  popts.input_limits.max_fields = config_.max_fields;
  popts.input_limits.max_string_bytes = config_.max_string_bytes;
  popts.engine.dedupe_window = config_.dedupe_window;
  if (config_.state_max_bytes != 0) {
    s_->state_budget = std::make_shared<MemoryBudget>(config_.state_max_bytes);
    popts.engine.budget = s_->state_budget;
  }
  if (!config_.redact.empty()) {
    auto redactor = Redactor::Create(config_.redact);
    if (!redactor.ok()) return redactor.status();
    s_->redactor = *std::move(redactor);
    s_->metrics->SetLabelRedaction(
        [r = s_->redactor.get()](std::string* text) { r->Apply(text); });
  }
  Metrics* metrics = s_->metrics.get();
  popts.on_eval_latency = [metrics](double s) { metrics->RuleEvalLatency(s); };
  popts.on_checkpoint_pause = [metrics](double s) {
    metrics->StateCheckpointPause(s);
  };
  popts.engine.on_gauge = [metrics](std::string_view rule, std::string_view key,
                                    double value) {
    metrics->ProtocolState(rule, key, value);
  };
  if (!config_.input_format.empty()) {
    auto f = ParseInputFormat(config_.input_format);
    if (!f.ok()) return f.status();
    DecoderOptions d;
    d.format = *f;
    d.pattern = config_.pattern;
    popts.decoder = d;
  }
  if (s_->evidence) {
    // Inputs are acknowledged once the checkpoint covering them -- rule
    // state, positions and all evidence before it, in one transaction --
    // is durable.
    popts.ack_gate = [s](uint64_t epoch, std::function<void()> ack) {
      s->evidence->WhenCheckpointed(epoch, std::move(ack));
    };
    popts.on_checkpoint = [s](uint64_t epoch, StateCheckpoint c) {
      s->evidence->SubmitCheckpoint(epoch, std::move(c));
    };
    popts.checkpoint_interval =
        std::chrono::milliseconds(config_.evidence_state_interval_ms);
    popts.uncommitted_checkpoints = [s] {
      PipelineOptions::Uncommitted u;
      u.checkpoints = s->evidence->UncommittedCheckpoints(&u.bytes);
      return u;
    };
  }
  auto pipeline =
      Pipeline::Create(s_->rules, popts, [s, to_stdout](const Violation& raw) {
        // Redaction first: nothing below sees what it removes.
        std::optional<Violation> redacted;
        if (s->redactor) {
          redacted = raw;
          s->redactor->Apply(&*redacted);
        }
        const Violation& v = redacted.has_value() ? *redacted : raw;
        if (s->evidence) {
          const int64_t now_ms = absl::ToUnixMillis(absl::Now());
          s->evidence->Submit(
              ViolationEvidence(v, s->pipeline->rules()->digest().Hex(),
                                Version(), now_ms),
              to_stdout ? ViolationJson(v) + "\n" : std::string());
          return;
        }
        s->metrics->RuleViolation(v.rule, v.severity);
        if (to_stdout) {
          const std::string line = ViolationJson(v) + "\n";
          std::lock_guard<std::mutex> l(s->out_mu);
          WriteAll(STDOUT_FILENO, line);
        }
      });
  if (!pipeline.ok()) return pipeline.status();
  s_->pipeline = *std::move(pipeline);
  if (s_->stored_state.has_value()) {
    const Pipeline::RestoreReport rep =
        s_->pipeline->Restore(*s_->stored_state);
    if (rep.restored) {
      Log(LogLevel::kInfo, "rule state restored",
          {{"images", absl::StrCat(s_->stored_state->images)},
           {"bytes", absl::StrCat(s_->stored_state->bytes)},
           {"positions", absl::StrCat(rep.positions)},
           {"skipped_rules", absl::StrJoin(rep.skipped, ",")},
           {"discarded_rules", absl::StrJoin(rep.discarded, ",")}});
      if (!rep.discarded.empty()) {
        s_->state_problem =
            absl::StrCat("rule state unreadable, started empty: ",
                         absl::StrJoin(rep.discarded, ","));
      }
    } else {
      s_->state_problem = rep.problem;
      Log(LogLevel::kError, "rule state not restored",
          {{"error", rep.problem}});
    }
    s_->metrics->StateRestored(rep.restored && rep.discarded.empty());
    s_->stored_state.reset();  // the images can be large
  }
  s_->pipeline->Start();

  // HTTP: ingest, metrics, health.
  HttpIngestOptions hopts;
  hopts.max_body_bytes = config_.http_max_body_bytes;
  hopts.max_line_bytes = config_.max_line_bytes;
  hopts.max_events = config_.http_max_events;
  hopts.durable_acks = s_->evidence != nullptr;
  auto auth_setup = SetUpAuth(config_, s_->evidence != nullptr);
  if (!auth_setup.ok()) return auth_setup.status();
  if (!auth_setup->open_scopes.empty()) {
    Log(LogLevel::kWarning, "listening without authentication",
        {{"listen", config_.listen},
         {"open", absl::StrJoin(auth_setup->open_scopes, ", ")}});
  }
  std::shared_ptr<TokenAuth> auth = auth_setup->auth;
  hopts.auth = auth;
  s_->http_ingest = std::make_unique<HttpIngest>(hopts, s_->pipeline.get());
  s_->http = std::make_unique<HttpServer>();
  if (config_.http_ingest) {
    s_->http->Handle("POST", "/v1/events", [s](const HttpRequestView& r) {
      HttpResponse resp = s->http_ingest->Handle(r);
      if (resp.status == 429) {
        s->metrics->AdmissionRejected("queue_full");
      }
      return resp;
    });
  }
  if (s_->evidence) {
    // Evidence queries and alert actions: the query scope.
    auto authorize = [auth, s](const HttpRequestView& r) {
      const AuthDecision d = auth->Check(AuthScope::kQuery, r.authorization);
      if (!d.allowed()) s->metrics->HttpUnauthorized("query", d.reason);
      return d;
    };
    auto with_reader = [s](auto&& fn) -> HttpResponse {
      std::lock_guard<std::mutex> l(s->evidence_read_mu);
      if (!s->evidence_reader) {
        auto r = EvidenceStore::Open(s->evidence_path, /*read_only=*/true);
        if (!r.ok()) return JsonError(503, "evidence_unavailable");
        s->evidence_reader = *std::move(r);
      }
      return fn(*s->evidence_reader);
    };
    s_->http->Handle("GET", "/v1/violations", [=](const HttpRequestView& r) {
      if (auto d = authorize(r); !d.allowed()) return AuthError(d);
      auto q = ParseEvidenceQuery(ParseQueryString(r.query));
      if (!q.ok()) {
        HttpResponse bad = JsonError(400, "bad_query");
        bad.body =
            absl::StrCat("{\"error\":\"bad_query\",\"detail\":",
                         Json(std::string(q.status().message())).dump(), "}");
        return bad;
      }
      return with_reader([&](EvidenceStore& store) {
        auto page = store.Find(*q);
        if (!page.ok()) return JsonError(500, "evidence_query_failed");
        HttpResponse ok;
        ok.body = EvidencePageJson(*page, q->limit);
        return ok;
      });
    });
    s_->http->Handle("GET", "/v1/violations/*", [=](const HttpRequestView& r) {
      if (auto d = authorize(r); !d.allowed()) return AuthError(d);
      const std::string id(r.path.substr(r.path.rfind('/') + 1));
      return with_reader([&](EvidenceStore& store) {
        auto rec = store.Get(id);
        if (!rec.ok()) return JsonError(500, "evidence_query_failed");
        if (!rec->has_value()) return JsonError(404, "no_such_violation");
        HttpResponse ok;
        ok.body = EvidenceJson(**rec);
        return ok;
      });
    });
    if (s_->pager) {
      RegisterAlertRoutes(s_->http.get(), s_->evidence_path, s_->pager.get(),
                          authorize);
    }
  }
  s_->http->Handle("GET", "/metrics", [s](const HttpRequestView&) {
    HttpResponse r;
    r.headers.emplace_back("Content-Type", std::string(Metrics::kContentType));
    r.body = s->metrics->Exposition();
    return r;
  });
  s_->http->Handle("GET", "/healthz", [](const HttpRequestView&) {
    HttpResponse r;
    r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    r.body = "ok\n";
    return r;
  });
  s_->http->Handle("GET", "/readyz", [s](const HttpRequestView&) {
    const auto rules = s->pipeline->rules();
    std::vector<std::string> problems;
    if (!s->data_dir_ok) problems.push_back("data dir not writable");
    if (!s->kafka_ok) problems.push_back("kafka source unhealthy");
    if (s->evidence && !s->evidence->healthy()) {
      problems.push_back(
          absl::StrCat("evidence store failing (",
                       SanitizeText(s->evidence->Stats().last_error, 200),
                       "): inputs are not acknowledged"));
    }
    HttpResponse r;
    r.status = problems.empty() ? 200 : 503;
    r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    r.body =
        problems.empty()
            ? absl::StrCat("ready: ", rules->rules().size(), " rules loaded\n")
            : absl::StrCat("not ready: ", absl::StrJoin(problems, "; "), "\n");
    // Rule state lost at start: the sidecar checks, with lost coverage.
    if (!s->state_problem.empty()) {
      absl::StrAppend(&r.body, "state: ", SanitizeText(s->state_problem, 400),
                      "\n");
    }
    // Lost coverage (keys evicted or refused at max_keys or at the memory
    // budget) does not make the sidecar unready either: it goes on
    // checking every key it tracks.
    std::vector<std::string> lost;
    for (const RuleSnapshot& rs : s->pipeline->Rules()) {
      if (rs.table.evicted == 0 && rs.table.rejected == 0) continue;
      std::string line = absl::StrCat(rs.name, " (evicted ", rs.table.evicted,
                                      ", rejected ", rs.table.rejected);
      if (rs.table.budget_refusals > 0) {
        absl::StrAppend(&line, "; ", rs.table.budget_refusals,
                        " at the memory budget");
      }
      lost.push_back(line + ")");
    }
    if (!lost.empty()) {
      absl::StrAppend(&r.body, "coverage: lost on ", absl::StrJoin(lost, ", "),
                      "\n");
    }
    if (s->state_budget) {
      absl::StrAppend(&r.body, "state memory: ", s->state_budget->used(),
                      " of ", s->state_budget->limit(), " bytes\n");
    }
    // Paging trouble does not make the sidecar unready (checking goes on
    // and pages wait in the outbox); it is reported here and in metrics.
    if (s->pager) {
      const std::string detail = s->pager->HealthDetail();
      absl::StrAppend(&r.body, "alerting: ", detail.empty() ? "ok" : detail,
                      "\n");
    }
    return r;
  });
  HttpServer::Options sopts;
  sopts.listen = config_.listen;
  sopts.max_body_bytes = config_.http_max_body_bytes;
  sopts.max_header_bytes = config_.http_max_header_bytes;
  sopts.threads = config_.http_threads;
  sopts.max_connections = config_.http_max_queued;
  sopts.request_timeout_ms = config_.http_request_timeout_ms;
  sopts.on_response = [metrics = s_->metrics.get()](int status) {
    metrics->HttpRequest(status);
  };
  if (absl::Status st = s_->http->Start(sopts); !st.ok()) return st;
  if (s_->pager) {
    s_->pager->SetExternalUrl(
        config_.alert_external_url.empty()
            ? DefaultExternalUrl(config_.listen, s_->http->port())
            : config_.alert_external_url);
    s_->pager->Start();
  }
  Log(LogLevel::kInfo, "listening",
      {{"address", config_.listen},
       {"port", absl::StrCat(s_->http->port())},
       {"metrics", absl::StrCat("http://", config_.listen, "/metrics")}});

  // Sources.
  if (!config_.tail.empty()) {
    TailerOptions topts;
    topts.globs = config_.tail;
    topts.poll_interval =
        std::chrono::milliseconds(config_.tail_poll_interval_ms);
    topts.max_line_bytes = config_.max_line_bytes;
    s_->tailer = std::make_unique<FileTailer>(
        topts, s_->pipeline.get(),
        [s](std::string_view event, std::string_view path,
            std::string_view detail) {
          // A file truncated or replaced under its saved position: its
          // records are new, not to be skipped against the checkpoint.
          struct stat st;
          if (event == "truncated" &&
              ::stat(std::string(path).c_str(), &st) == 0) {
            s->pipeline->ForgetPosition(
                FileStreamId(static_cast<uint64_t>(st.st_dev),
                             static_cast<uint64_t>(st.st_ino)));
          }
          Log(LogLevel::kInfo, "tail",
              {{"event", std::string(event)},
               {"path", std::string(path)},
               {"detail", std::string(detail)}});
        });
    auto saved = ReadFileIfExists(s_->positions_path);
    if (!saved.ok()) return saved.status();
    if (saved->has_value()) {
      auto positions = PositionsFromJson(**saved, s_->positions_path);
      if (!positions.ok()) return positions.status();
      s_->tailer->Restore(*positions);
      Log(LogLevel::kInfo, "tail positions restored",
          {{"files", absl::StrCat(positions->size())}});
    }
    if (absl::Status st = s_->tailer->Start(); !st.ok()) return st;
  }
  if (!config_.kafka_brokers.empty()) {
    KafkaOptions kopts;
    kopts.brokers = config_.kafka_brokers;
    kopts.topics = config_.kafka_topics;
    kopts.group_id = config_.kafka_group;
    kopts.config = config_.kafka_config;
    s_->kafka = std::make_unique<KafkaSource>(
        kopts, s_->pipeline.get(),
        [](std::string_view event, std::string_view detail) {
          Log(LogLevel::kWarning, "kafka",
              {{"event", std::string(event)}, {"detail", std::string(detail)}});
        });
    if (absl::Status st = s_->kafka->Start(); !st.ok()) return st;
  }
  s_->last_checkpoint_ns = NowNs();
  housekeeping_ = std::thread([this] { Housekeeping(); });
  Log(LogLevel::kInfo, "started",
      {{"workers", absl::StrCat(config_.workers)},
       {"tail", absl::StrJoin(config_.tail, ",")},
       {"kafka_topics", absl::StrJoin(config_.kafka_topics, ",")},
       {"scheduler_slice_us",
        config_.scheduler_slice_us > 0 && ViolationPathSliceTakes()
            ? absl::StrCat(config_.scheduler_slice_us)
            : "kernel default"}});
  return absl::OkStatus();
}

void App::Checkpoint() {
  if (!s_->tailer) {
    s_->last_checkpoint_ns = NowNs();
    return;
  }
  const absl::Status st = WriteFileAtomically(
      s_->positions_path, PositionsToJson(s_->tailer->CommittedPositions()));
  if (st.ok()) {
    s_->last_checkpoint_ns = NowNs();
    s_->data_dir_ok = true;
  } else {
    s_->data_dir_ok = false;
    Log(LogLevel::kError, "checkpoint failed",
        {{"error", std::string(st.message())}});
  }
}

void App::PruneEvidence() {
  last_prune_ = std::chrono::steady_clock::now();
  if (config_.evidence_retention_hours == 0 &&
      config_.evidence_max_bytes == 0) {
    return;
  }
  auto store = EvidenceStore::Open(s_->evidence_path);
  if (!store.ok()) {
    Log(LogLevel::kError, "evidence retention skipped",
        {{"error", std::string(store.status().message())}});
    return;
  }
  const int64_t before =
      config_.evidence_retention_hours == 0
          ? 0
          : absl::ToUnixMillis(absl::Now() -
                               absl::Hours(config_.evidence_retention_hours));
  auto pruned = (*store)->Prune(before, config_.evidence_max_bytes);
  if (!pruned.ok()) {
    Log(LogLevel::kError, "evidence retention failed",
        {{"error", std::string(pruned.status().message())}});
  } else if (pruned->pruned > 0) {
    Log(LogLevel::kInfo, "evidence pruned",
        {{"records", absl::StrCat(pruned->pruned)},
         {"anchor_seq", absl::StrCat(pruned->anchor_seq)}});
  }
}

std::string App::RulesFingerprint() const {
  namespace fs = std::filesystem;
  std::string fp;
  auto add = [&](const fs::path& p) {
    std::error_code ec;
    const auto size = fs::file_size(p, ec);
    const auto mtime = fs::last_write_time(p, ec);
    absl::StrAppend(&fp, p.string(), ":", ec ? 0 : size, ":",
                    ec ? 0 : mtime.time_since_epoch().count(), ";");
  };
  for (const std::string& r : config_.rules) {
    std::error_code ec;
    if (fs::is_directory(r, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(r, ec)) files.push_back(e);
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add(f);
    } else {
      add(r);
    }
  }
  return fp;
}

bool App::Reload(std::string_view why) {
  std::lock_guard<std::mutex> guard(reload_mu_);
  rules_fingerprint_ = RulesFingerprint();
  LoadResult loaded = LoadRuleFiles(config_.rules, config_.rule_limits);
  if (!loaded.ok()) {
    for (const Diagnostic& d : loaded.diagnostics) {
      Log(LogLevel::kError, "rule reload: invalid rule file",
          {{"diagnostic", FormatDiagnostic(d)}});
    }
    Log(LogLevel::kError, "rule reload failed: keeping the running rules",
        {{"trigger", std::string(why)},
         {"errors", absl::StrCat(loaded.diagnostics.size())}});
    s_->metrics->Reload(false);
    return false;
  }
  auto result = s_->pipeline->Reload(loaded.rules);
  if (!result.ok()) {
    Log(LogLevel::kError, "rule reload failed: keeping the running rules",
        {{"trigger", std::string(why)},
         {"error", std::string(result.status().message())}});
    s_->metrics->Reload(false);
    return false;
  }
  Log(LogLevel::kInfo, "rules reloaded",
      {{"trigger", std::string(why)},
       {"digest", loaded.rules->digest().Hex()},
       {"kept_state", absl::StrJoin(result->carried, ",")},
       {"fresh_state", absl::StrJoin(result->fresh, ",")}});
  s_->metrics->Reload(true);
  return true;
}

void App::Housekeeping() {
  NameThisThread("inv-housekeep");
  LowerThisThreadPriority();  // metrics, positions file, reload checks
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_requested_) {
    cv_.wait_for(l, std::chrono::milliseconds(config_.checkpoint_interval_ms));
    if (stop_requested_) break;
    l.unlock();
    Checkpoint();
    if (RulesFingerprint() != rules_fingerprint_) Reload("rule files changed");
    Metrics& m = *s_->metrics;
    const PipelineStats ps = s_->pipeline->Stats();
    m.QueueDepth("admission", static_cast<double>(ps.queue_depth));
    // Per source kind; the source label names the configured source.
    auto source_name = [&](const std::string& kind) -> std::string {
      if (kind == "file") return "tail";
      if (kind == "kafka") return config_.kafka_group;
      return "v1/events";
    };
    for (const auto& [kind, n] : ps.events_by_kind) {
      m.SourceEvents(kind, source_name(kind), s_->Delta("events/" + kind, n));
    }
    for (const auto& [kind, n] : ps.redelivered_by_kind) {
      m.SourceRedelivered(kind, source_name(kind),
                          s_->Delta("redelivered/" + kind, n));
    }
    for (const auto& [kr, n] : ps.rejected_by_kind) {
      m.SourceRejected(kr.first, source_name(kr.first), kr.second,
                       s_->Delta("rejected/" + kr.first + "/" + kr.second, n));
    }
    if (s_->http_ingest) {
      const HttpIngestStats hs = s_->http_ingest->Stats();
      for (const auto& [reason, n] : hs.lines_rejected) {
        m.SourceRejected("http", "v1/events", reason,
                         s_->Delta("http-rejected/" + reason, n));
      }
      for (const auto& [reason, n] : hs.unauthenticated) {
        const uint64_t d = s_->Delta("http-unauth/" + reason, n);
        m.SourceRejected("http", "v1/events", "unauthenticated_" + reason, d);
        m.HttpUnauthorized("ingest", reason, d);
      }
    }
    for (const RuleSnapshot& r : s_->pipeline->Rules()) {
      m.RuleKeys(r.name, static_cast<double>(r.table.keys));
      m.RuleOverflow(r.name, "evicted", r.table.evicted);
      m.RuleOverflow(r.name, "rejected", r.table.rejected);
      m.RuleState(r.name, static_cast<double>(r.table.bytes),
                  r.table.budget_refusals);
      m.RuleSkipped(r.name, "missing_field", r.counters.skipped_missing);
      m.RuleSkipped(r.name, "type_error", r.counters.skipped_type);
    }
    if (s_->redactor) {
      for (const auto& [name, n] : s_->redactor->Counts()) {
        m.Redactions(name, n);
      }
    }
    if (s_->state_budget) {
      m.StateBudget(static_cast<double>(s_->state_budget->limit()),
                    static_cast<double>(s_->state_budget->used()));
    }
    if (s_->tailer) {
      const TailStats ts = s_->tailer->Stats();
      m.SourceLagBytes("file", "tail", static_cast<double>(ts.bytes_behind));
      m.SourceRejected("file", "tail", "line_too_long",
                       s_->Delta("tail-too-long", ts.too_long));
    }
    if (s_->kafka) {
      const KafkaStats ks = s_->kafka->Stats();
      if (ks.lag >= 0) {
        m.KafkaLag(config_.kafka_group, -1, static_cast<double>(ks.lag));
      }
      s_->kafka_ok = ks.assigned_partitions > 0 || ks.errors == 0;
    }
    m.CheckpointAge(static_cast<double>(NowNs() - s_->last_checkpoint_ns) /
                    1e9);
    if (s_->pager) ReportPagerMetrics(*s_->pager, &m);
    if (s_->evidence) {
      const EvidenceWriterStats es = s_->evidence->Stats();
      m.Evidence(es.stored, es.duplicates, es.failures,
                 static_cast<double>(es.pending),
                 static_cast<double>(es.head_seq));
      m.EvidenceWalCheckpoints(es.wal.checkpoints, es.wal.partial,
                               es.wal.errors);
      const PipelineStats ps = s_->pipeline->Stats();
      m.StateCheckpoints(ps.full_checkpoints,
                         ps.checkpoints - ps.full_checkpoints,
                         ps.checkpoint_bytes);
      if (std::chrono::steady_clock::now() - last_prune_ >
          std::chrono::hours(1)) {
        PruneEvidence();
      }
    }
    l.lock();
  }
}

void App::RequestStop() {
  std::lock_guard<std::mutex> l(mu_);
  stop_requested_ = true;
  cv_.notify_all();
}

int App::Run() {
  {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return stop_requested_; });
  }
  StopAll();
  return kExitOk;
}

void App::StopAll() {
  RequestStop();
  if (housekeeping_.joinable()) housekeeping_.join();
  if (!s_) return;
  // Reverse order: sources stop producing, the HTTP server stops taking
  // requests, the pipeline drains what was admitted, then the final
  // checkpoint records positions that cover everything evaluated.
  if (s_->kafka) s_->kafka->Stop();
  if (s_->http_ingest) s_->http_ingest->Shutdown();
  if (s_->http) s_->http->Stop();
  if (s_->pipeline) {
    if (s_->tailer) {
      // The tailer may be blocked pushing into a full queue: the pipeline
      // keeps draining while the tailer stops.
      s_->tailer->Stop();
    }
    if (s_->evidence) {
      // A store that cannot commit must not keep the drain from ending.
      s_->evidence->BeginShutdown(
          std::chrono::steady_clock::now() +
          std::chrono::milliseconds(config_.shutdown_timeout_ms));
    }
    s_->pipeline->Stop();
    if (s_->evidence) {
      // Commits what the drain produced and releases the acknowledgements
      // waiting for it; what cannot be committed in time stays
      // unacknowledged and is evaluated again after the restart.
      const bool all = s_->evidence->Stop(
          std::chrono::steady_clock::now() +
          std::chrono::milliseconds(config_.shutdown_timeout_ms));
      const EvidenceWriterStats es = s_->evidence->Stats();
      Log(all ? LogLevel::kInfo : LogLevel::kError,
          all ? "evidence committed" : "evidence left uncommitted",
          {{"head_seq", absl::StrCat(es.head_seq)},
           {"head_hash", es.head_hash},
           {"pending", absl::StrCat(es.pending)}});
    }
    if (s_->pager) {
      // After the writer: its last commits' pages are queued. What is not
      // delivered now stays in the outbox for the next start.
      s_->pager->Stop(std::chrono::steady_clock::now() +
                      std::chrono::milliseconds(config_.shutdown_timeout_ms));
    }
    if (s_->tailer) {
      Checkpoint();
      Log(LogLevel::kInfo, "final checkpoint written",
          {{"path", s_->positions_path}});
    }
    const PipelineStats ps = s_->pipeline->Stats();
    Log(LogLevel::kInfo, "stopped",
        {{"records", absl::StrCat(ps.records)},
         {"events", absl::StrCat(ps.events)},
         {"violations", absl::StrCat(ps.violations)}});
  }
  s_->kafka.reset();
  s_->tailer.reset();
  s_->evidence.reset();
  s_->pager.reset();
  s_->http.reset();
  s_->http_ingest.reset();
  s_->pipeline.reset();
}

int CheckRunConfig(const RunConfig& config, std::ostream& out,
                   std::ostream& err) {
  std::vector<std::string> errors;
  LogLevel level;
  if (!ParseLogLevel(config.log_level, &level)) {
    errors.push_back(absl::StrCat("unknown log_level '", config.log_level,
                                  "'; use debug, info, warning or error"));
  }
  if (absl::Status st = ValidateRunConfig(config); !st.ok()) {
    errors.emplace_back(st.message());
  }
  LoadResult loaded;
  if (!config.rules.empty()) {
    loaded = LoadRuleFiles(config.rules, config.rule_limits);
    for (const Diagnostic& d : loaded.diagnostics) {
      errors.push_back(FormatDiagnostic(d));
    }
    if (!loaded.ok() && loaded.diagnostics.empty()) {
      errors.push_back("the rule files could not be loaded");
    }
  }
  auto auth = SetUpAuth(config, config.evidence);
  if (!auth.ok()) errors.emplace_back(auth.status().message());
  absl::StatusOr<PagerOptions> paging = PagerOptionsFromConfig(config);
  if (!paging.ok()) errors.emplace_back(paging.status().message());
  if (!errors.empty()) {
    for (const std::string& e : errors) err << e << "\n";
    err << errors.size() << " error(s): invariantd run would not start\n";
    return kExitError;
  }
  std::vector<std::string> sinks;
  for (const AlertSink& s : paging->sinks) sinks.push_back(s.name);
  out << "ok: invariantd run would start with\n"
      << "  rules: " << loaded.rules->rules().size() << " rules in "
      << loaded.rules->files().size() << " file(s), rule set digest "
      << loaded.rules->digest().Hex() << "\n"
      << "  listen: " << config.listen << "\n"
      << "  data_dir: " << config.data_dir << "\n"
      << "  tail: "
      << (config.tail.empty() ? "none" : absl::StrJoin(config.tail, " "))
      << "\n"
      << "  http ingest: " << (config.http_ingest ? "on" : "off") << "\n"
      << "  kafka: "
      << (config.kafka_brokers.empty()
              ? std::string("none")
              : absl::StrCat(config.kafka_brokers, " topics ",
                             absl::StrJoin(config.kafka_topics, ","), " group ",
                             config.kafka_group))
      << "\n"
      << "  tokens: ingest "
      << (auth->auth->Required(AuthScope::kIngest) ? "required" : "open")
      << ", query "
      << (auth->auth->Required(AuthScope::kQuery) ? "required" : "open") << "\n"
      << "  evidence: " << (config.evidence ? "on" : "off") << "\n"
      << "  paging: " << (sinks.empty() ? "off" : absl::StrJoin(sinks, " "))
      << "\n"
      << "  workers: " << config.workers << ", log_level: " << config.log_level
      << "\n";
  return kExitOk;
}

int RunDaemon(const RunConfig& config) {
  // Signals are taken synchronously by this thread; every thread started
  // later inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  App app(config);
  if (absl::Status st = app.Start(); !st.ok()) {
    Log(LogLevel::kError, "cannot start",
        {{"error", std::string(st.message())}});
    return kExitError;
  }
  std::thread signals([&] {
    NameThisThread("inv-signals");
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGHUP) {
        app.Reload("SIGHUP");
        continue;
      }
      Log(LogLevel::kInfo, "stopping", {{"signal", strsignal(sig)}});
      app.RequestStop();
      return;
    }
  });
  const int code = app.Run();
  // Wake the signal thread if it is still waiting (stop came from elsewhere).
  ::kill(::getpid(), SIGTERM);
  signals.join();
  return code;
}

}  // namespace invariantd
