#include "sidecar/app.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporters/prometheus/metrics.h"
#include "ingest/file/tailer.h"
#include "ingest/http/http_ingest.h"
#include "ingest/kafka/kafka_source.h"
#include "nlohmann/json.hpp"
#include "sidecar/checkpoint_file.h"
#include "sidecar/commands.h"
#include "sidecar/core/strings.h"
#include "sidecar/http_server.h"
#include "sidecar/log.h"
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
  std::mutex out_mu;  // whole lines on stdout
  std::string positions_path;
  std::atomic<int64_t> last_checkpoint_ns{0};
  std::atomic<bool> data_dir_ok{true};
  std::atomic<bool> kafka_ok{true};
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

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  auto content = ReadFileIfExists(path);
  if (!content.ok()) return content.status();
  if (!content->has_value()) {
    return absl::NotFoundError(
        absl::StrCat("auth token file ", path, " does not exist"));
  }
  std::string token(absl::StripAsciiWhitespace(**content));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth token file ", path, " is empty"));
  }
  return token;
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
  LogLevel level;
  if (!ParseLogLevel(config_.log_level, &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown log_level '", config_.log_level,
                     "'; use debug, info, warning or error"));
  }
  SetLogLevel(level);
  if (absl::Status st = ValidateRunConfig(config_); !st.ok()) return st;

  // Rules.
  LoadResult loaded = LoadRuleFiles(config_.rules);
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
  s_->metrics = std::make_unique<Metrics>(std::string(Version()));

  // Pipeline and the violation output.
  PipelineOptions popts;
  popts.workers = config_.workers;
  popts.queue_capacity = config_.queue_capacity;
  popts.max_line_bytes = config_.max_line_bytes;
  popts.engine.dedupe_window = config_.dedupe_window;
  Metrics* metrics = s_->metrics.get();
  popts.on_eval_latency = [metrics](double s) { metrics->RuleEvalLatency(s); };
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
  Services* s = s_.get();
  const bool to_stdout = config_.stdout_violations;
  auto pipeline =
      Pipeline::Create(s_->rules, popts, [s, to_stdout](const Violation& v) {
        s->metrics->RuleViolation(v.rule, v.severity);
        if (to_stdout) {
          const std::string line = ViolationJson(v) + "\n";
          std::lock_guard<std::mutex> l(s->out_mu);
          WriteAll(STDOUT_FILENO, line);
        }
      });
  if (!pipeline.ok()) return pipeline.status();
  s_->pipeline = *std::move(pipeline);
  s_->pipeline->Start();

  // HTTP: ingest, metrics, health.
  HttpIngestOptions hopts;
  hopts.max_body_bytes = config_.http_max_body_bytes;
  hopts.max_line_bytes = config_.max_line_bytes;
  hopts.max_events = config_.http_max_events;
  if (!config_.auth_token_file.empty()) {
    auto token = ReadToken(config_.auth_token_file);
    if (!token.ok()) return token.status();
    hopts.token = *token;
  }
  s_->http_ingest = std::make_unique<HttpIngest>(hopts, s_->pipeline.get());
  s_->http = std::make_unique<HttpServer>();
  if (config_.http_ingest) {
    s_->http->Handle("POST", "/v1/events", [s](const HttpRequestView& r) {
      HttpResponse resp = s->http_ingest->Handle(r);
      s->metrics->HttpRequest(resp.status);
      if (resp.status == 429) {
        s->metrics->AdmissionRejected("queue_full");
      }
      return resp;
    });
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
    HttpResponse r;
    r.status = problems.empty() ? 200 : 503;
    r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    r.body =
        problems.empty()
            ? absl::StrCat("ready: ", rules->rules().size(), " rules loaded\n")
            : absl::StrCat("not ready: ", absl::StrJoin(problems, "; "), "\n");
    return r;
  });
  HttpServer::Options sopts;
  sopts.listen = config_.listen;
  sopts.max_body_bytes = config_.http_max_body_bytes;
  if (absl::Status st = s_->http->Start(sopts); !st.ok()) return st;
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
        [](std::string_view event, std::string_view path,
           std::string_view detail) {
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
        [s](std::string_view event, std::string_view detail) {
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
       {"kafka_topics", absl::StrJoin(config_.kafka_topics, ",")}});
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
  LoadResult loaded = LoadRuleFiles(config_.rules);
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
        m.SourceRejected("http", "v1/events", "unauthenticated_" + reason,
                         s_->Delta("http-unauth/" + reason, n));
      }
    }
    for (const RuleSnapshot& r : s_->pipeline->Rules()) {
      m.RuleKeys(r.name, static_cast<double>(r.table.keys));
      m.RuleOverflow(r.name, "evicted", r.table.evicted);
      m.RuleOverflow(r.name, "rejected", r.table.rejected);
      m.RuleSkipped(r.name, "missing_field", r.counters.skipped_missing);
      m.RuleSkipped(r.name, "type_error", r.counters.skipped_type);
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
    s_->pipeline->Stop();
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
  s_->http.reset();
  s_->http_ingest.reset();
  s_->pipeline.reset();
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
