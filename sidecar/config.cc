#include "sidecar/config.h"

#include <functional>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "re2/re2.h"
#include "sidecar/core/strings.h"
#include "yaml-cpp/yaml.h"

namespace invariantd {
namespace {

// `url` for a message: userinfo ("user:password@") and whatever follows the
// host (path, query, fragment: they may hold a token) become "***".
std::string RedactUrl(std::string_view url) {
  std::string out;
  if (const size_t p = url.find("://"); p != std::string_view::npos) {
    out.append(url.substr(0, p + 3));
    url.remove_prefix(p + 3);
  }
  const size_t end = url.find_first_of("/?#");
  std::string_view host = url.substr(0, end);
  if (const size_t at = host.rfind('@'); at != std::string_view::npos) {
    out += "***@";
    host.remove_prefix(at + 1);
  }
  out.append(host);
  if (end != std::string_view::npos && url.size() > end + 1) out += "/***";
  if (end != std::string_view::npos && url.size() == end + 1) out += url[end];
  return out;
}

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  void Error(const YAML::Node& n, const std::string& msg) {
    const YAML::Mark m = n.Mark();
    errors_.push_back(
        absl::StrCat(file_, ":", m.line + 1, ":", m.column + 1, ": ", msg));
  }

  using Handler = std::function<void(const YAML::Node&)>;

  // Dispatches each key of mapping `n` to its handler; unknown keys and
  // duplicates are errors.
  void Map(const YAML::Node& n, std::string_view where,
           const std::map<std::string, Handler>& handlers) {
    if (!n.IsMap()) {
      Error(n, absl::StrCat(AV(where), " must be a mapping"));
      return;
    }
    std::map<std::string, bool> seen;
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) {
        Error(kv.first, "a key must be a plain string");
        continue;
      }
      const std::string k = kv.first.Scalar();
      if (seen[k]) {
        Error(kv.first, absl::StrCat("duplicate key '", k, "'"));
        continue;
      }
      seen[k] = true;
      auto it = handlers.find(k);
      if (it == handlers.end()) {
        std::vector<std::string> names;
        for (const auto& [name, h] : handlers) names.push_back(name);
        Error(kv.first,
              absl::StrCat("unknown key '", k, "' in ", AV(where),
                           " (known: ", absl::StrJoin(names, ", "), ")"));
        continue;
      }
      it->second(kv.second);
    }
  }

  Handler String(std::string* out) {
    return [this, out](const YAML::Node& n) {
      if (!n.IsScalar()) return Error(n, "expected a string");
      *out = n.Scalar();
    };
  }
  Handler Strings(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& n) {
      if (n.IsScalar()) {
        out->assign(1, n.Scalar());
        return;
      }
      if (!n.IsSequence()) return Error(n, "expected a list of strings");
      out->clear();
      for (const YAML::Node& e : n) {
        if (!e.IsScalar()) return Error(e, "expected a string");
        out->push_back(e.Scalar());
      }
    };
  }
  Handler Bool(bool* out) {
    return [this, out](const YAML::Node& n) {
      if (!n.IsScalar() || !YAML::convert<bool>::decode(n, *out)) {
        Error(n, "expected true or false");
      }
    };
  }
  template <typename T>
  Handler Int(T* out, long long min, long long max) {
    return [this, out, min, max](const YAML::Node& n) {
      long long v;
      if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v) || v < min ||
          v > max) {
        return Error(
            n, absl::StrCat("expected an integer from ", min, " to ", max));
      }
      *out = static_cast<T>(v);
    };
  }
  Handler StringMap(std::map<std::string, std::string>* out) {
    return [this, out](const YAML::Node& n) {
      if (!n.IsMap()) return Error(n, "expected a mapping of strings");
      for (const auto& kv : n) {
        if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
          Error(kv.first, "expected string keys and values");
          continue;
        }
        (*out)[kv.first.Scalar()] = kv.second.Scalar();
      }
    };
  }

  // `redact`: a list of {name, pattern, replacement}; each rule is checked
  // as the Redactor will build it, errors at the rule's position.
  Handler RedactRules(std::vector<RedactRule>* out) {
    return [this, out](const YAML::Node& n) {
      if (!n.IsSequence()) return Error(n, "expected a list of rules");
      out->clear();
      for (const YAML::Node& e : n) {
        RedactRule rule;
        const size_t before = errors_.size();
        Map(e, "a redact rule",
            {{"name", String(&rule.name)},
             {"pattern", String(&rule.pattern)},
             {"replacement", String(&rule.replacement)}});
        if (errors_.size() != before) continue;
        if (rule.name.empty() || rule.pattern.empty()) {
          Error(e, "a redact rule needs a name and a pattern");
          continue;
        }
        std::vector<RedactRule> all = *out;
        all.push_back(rule);
        if (auto r = Redactor::Create(all); !r.ok()) {
          Error(e, std::string(r.status().message()));
          continue;
        }
        out->push_back(std::move(rule));
      }
    };
  }

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string file_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::Status LoadRunConfig(const std::string& path, RunConfig* c) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read file"));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ":", e.mark.line + 1, ":", e.mark.column + 1, ": ", e.msg));
  }
  Reader r(path);
  if (root.IsNull()) return absl::OkStatus();  // empty file: defaults
  r.Map(
      root, "the configuration",
      {{"rules", r.Strings(&c->rules)},
       {"listen", r.String(&c->listen)},
       {"data_dir", r.String(&c->data_dir)},
       {"workers", r.Int(&c->workers, 1, 64)},
       {"stdout", r.Bool(&c->stdout_violations)},
       {"log_level", r.String(&c->log_level)},
       {"queue_capacity", r.Int(&c->queue_capacity, 16, 1 << 24)},
       {"scheduler_slice_us", r.Int(&c->scheduler_slice_us, 0, 100000)},
       {"shutdown_timeout_ms", r.Int(&c->shutdown_timeout_ms, 0, 600000)},
       {"checkpoint_interval_ms",
        r.Int(&c->checkpoint_interval_ms, 10, 600000)},
       {"input",
        [&](const YAML::Node& n) {
          r.Map(
              n, "input",
              {{"format", r.String(&c->input_format)},
               {"pattern", r.String(&c->pattern)},
               {"max_line_bytes", r.Int(&c->max_line_bytes, 64, 1LL << 30)},
               {"max_depth", r.Int(&c->max_depth, 1, 1024)},
               {"max_fields", r.Int(&c->max_fields, 1, 1 << 24)},
               {"max_string_bytes", r.Int(&c->max_string_bytes, 16, 1LL << 30)},
               {"dedupe_window", r.Int(&c->dedupe_window, 0, 1 << 24)}});
        }},
       {"redact", r.RedactRules(&c->redact)},
       {"rule_limits",
        [&](const YAML::Node& n) {
          r.Map(n, "rule_limits",
                {{"max_file_bytes",
                  r.Int(&c->rule_limits.max_file_bytes, 1024, 1LL << 30)},
                 {"max_expression_bytes",
                  r.Int(&c->rule_limits.expression.max_bytes, 16, 1 << 20)},
                 {"max_expression_depth",
                  r.Int(&c->rule_limits.expression.max_depth, 1,
                        kMaxExprDepthLimit)}});
        }},
       {"metrics",
        [&](const YAML::Node& n) {
          r.Map(n, "metrics",
                {{"max_protocol_series",
                  r.Int(&c->metrics_max_protocol_series, 0, 1 << 20)}});
        }},
       {"state",
        [&](const YAML::Node& n) {
          r.Map(n, "state",
                {{"max_bytes", r.Int(&c->state_max_bytes, 0, 1LL << 50)}});
        }},
       {"tail",
        [&](const YAML::Node& n) {
          r.Map(n, "tail",
                {{"paths", r.Strings(&c->tail)},
                 {"poll_interval_ms",
                  r.Int(&c->tail_poll_interval_ms, 10, 60000)}});
        }},
       {"http",
        [&](const YAML::Node& n) {
          r.Map(
              n, "http",
              {{"ingest", r.Bool(&c->http_ingest)},
               {"auth_token_file", r.String(&c->auth_token_file)},
               {"ingest_token_file", r.String(&c->ingest_token_file)},
               {"query_token_file", r.String(&c->query_token_file)},
               {"allow_unauthenticated", r.Bool(&c->allow_unauthenticated)},
               {"max_body_bytes",
                r.Int(&c->http_max_body_bytes, 1024, 1LL << 30)},
               {"max_header_bytes",
                r.Int(&c->http_max_header_bytes, 1024, 1 << 20)},
               {"threads", r.Int(&c->http_threads, 1, 256)},
               {"max_queued_connections", r.Int(&c->http_max_queued, 1, 65536)},
               {"request_timeout_ms",
                r.Int(&c->http_request_timeout_ms, 100, 600000)},
               {"max_events", r.Int(&c->http_max_events, 1, 1 << 24)}});
        }},
       {"evidence",
        [&](const YAML::Node& n) {
          r.Map(n, "evidence",
                {{"enabled", r.Bool(&c->evidence)},
                 {"retention_hours",
                  r.Int(&c->evidence_retention_hours, 0, 24 * 365 * 100)},
                 {"max_bytes", r.Int(&c->evidence_max_bytes, 0, 1LL << 50)},
                 {"commit_interval_ms",
                  r.Int(&c->evidence_commit_interval_ms, 0, 10000)},
                 {"state_interval_ms",
                  r.Int(&c->evidence_state_interval_ms, 1, 60000)}});
        }},
       {"alerting",
        [&](const YAML::Node& n) {
          r.Map(
              n, "alerting",
              {{"alertmanagers", r.Strings(&c->alertmanagers)},
               {"webhook",
                [&](const YAML::Node& w) {
                  r.Map(w, "alerting.webhook",
                        {{"url", r.String(&c->webhook_url)},
                         {"secret_file", r.String(&c->webhook_secret_file)}});
                }},
               {"external_url", r.String(&c->alert_external_url)},
               {"resend_interval_seconds",
                r.Int(&c->alert_resend_interval_seconds, 1, 86400)},
               {"hold_seconds", r.Int(&c->alert_hold_seconds, 1, 86400 * 365)},
               {"timeout_ms", r.Int(&c->alert_timeout_ms, 100, 600000)},
               {"backoff_initial_ms",
                r.Int(&c->alert_backoff_initial_ms, 10, 3600000)},
               {"backoff_max_ms",
                r.Int(&c->alert_backoff_max_ms, 10, 86400000)},
               {"max_batch", r.Int(&c->alert_max_batch, 1, 10000)},
               {"max_labels", r.Int(&c->alert_max_labels, 4, 256)}});
        }},
       {"kafka", [&](const YAML::Node& n) {
          r.Map(n, "kafka",
                {{"brokers", r.String(&c->kafka_brokers)},
                 {"topics", r.Strings(&c->kafka_topics)},
                 {"group", r.String(&c->kafka_group)},
                 {"config", r.StringMap(&c->kafka_config)}});
        }}});
  if (!r.errors().empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(r.errors(), "\n"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRunConfig(const RunConfig& c) {
  std::vector<std::string> errors;
  if (c.rules.empty()) errors.push_back("no rules: give --rules or 'rules'");
  static const LazyRE2 kListen = {R"((\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5}))"};
  int port = 0;
  if (!RE2::FullMatch(c.listen, *kListen, static_cast<void*>(nullptr), &port) ||
      port > 65535) {
    errors.push_back(
        absl::StrCat("listen address '", c.listen, "' is not HOST:PORT"));
  }
  if (c.workers < 1 || c.workers > 64) {
    errors.push_back("workers must be from 1 to 64");
  }
  if (!c.kafka_topics.empty() && c.kafka_brokers.empty()) {
    errors.push_back("kafka topics given without kafka brokers");
  }
  if (!c.kafka_brokers.empty() && c.kafka_topics.empty()) {
    errors.push_back("kafka brokers given without a topic");
  }
  static const LazyRE2 kHttpUrl = {R"(https?://[^\s/?#]+(/[^\s]*)?)"};
  // Sink URLs may carry credentials (user:password@, a token in the path
  // or query): the messages show them redacted.
  for (const std::string& u : c.alertmanagers) {
    if (!RE2::FullMatch(u, *kHttpUrl)) {
      errors.push_back(absl::StrCat("alertmanager URL '", RedactUrl(u),
                                    "' is not an http(s) URL"));
    }
  }
  if (!c.webhook_url.empty() && !RE2::FullMatch(c.webhook_url, *kHttpUrl)) {
    errors.push_back(absl::StrCat("webhook URL '", RedactUrl(c.webhook_url),
                                  "' is not an http(s) URL"));
  }
  if (!c.webhook_secret_file.empty() && c.webhook_url.empty()) {
    errors.push_back("a webhook secret file is given without a webhook URL");
  }
  if (!c.alert_external_url.empty() &&
      !RE2::FullMatch(c.alert_external_url, *kHttpUrl)) {
    errors.push_back(absl::StrCat("alerting external_url '",
                                  RedactUrl(c.alert_external_url),
                                  "' is not an http(s) URL"));
  }
  if ((!c.alertmanagers.empty() || !c.webhook_url.empty()) && !c.evidence) {
    errors.push_back(
        "alerting needs the evidence store (its outbox lives there): drop "
        "--no-evidence / evidence.enabled: false, or configure no sink");
  }
  if (c.alert_backoff_max_ms < c.alert_backoff_initial_ms) {
    errors.push_back("alerting backoff_max_ms is below backoff_initial_ms");
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return absl::OkStatus();
}

}  // namespace invariantd
