#include "ingest/http/http_ingest.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

constexpr int kCounterBits = 40;
constexpr uint64_t kCounterMask = (uint64_t{1} << kCounterBits) - 1;
constexpr uint32_t kEpochMask = (uint32_t{1} << 24) - 1;

uint64_t EpochBits(const std::optional<uint32_t>& configured) {
  uint64_t epoch;
  if (configured.has_value()) {
    epoch = *configured;
  } else {
    std::random_device rd;
    uint64_t r = (uint64_t{rd()} << 32) ^ rd();
    uint64_t t = static_cast<uint64_t>(
        std::chrono::system_clock::now().time_since_epoch().count());
    r ^= t * 0x9E3779B97F4A7C15ull;
    epoch = (r >> 17) ^ r;
  }
  return (epoch & kEpochMask) << kCounterBits;
}

bool IsJsonLinesType(std::string_view content_type) {
  std::string_view media = content_type.substr(0, content_type.find(';'));
  media = SV(absl::StripAsciiWhitespace(AV(media)));
  for (std::string_view ok : {"application/x-ndjson", "application/ndjson",
                              "application/jsonl", "application/x-jsonlines",
                              "application/jsonlines", "application/json"}) {
    if (absl::EqualsIgnoreCase(AV(media), AV(ok))) return true;
  }
  return false;
}

struct QueryOptions {
  AckLevel wait = AckLevel::kAccepted;
  int timeout_ms = HttpIngest::kDefaultWaitMs;
};

// Parses `wait=accepted|processed` and `timeout_ms=N`; other parameters are
// ignored. Returns an error reason, or empty.
std::string_view ParseQuery(std::string_view query, QueryOptions* out) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view()
                                          : query.substr(amp + 1);
    size_t eq = param.find('=');
    std::string_view key = param.substr(0, eq);
    std::string_view value = eq == std::string_view::npos
                                 ? std::string_view()
                                 : param.substr(eq + 1);
    if (key == "wait") {
      if (value == "accepted") {
        out->wait = AckLevel::kAccepted;
      } else if (value == "processed") {
        out->wait = AckLevel::kProcessed;
      } else {
        return "invalid_wait";
      }
    } else if (key == "timeout_ms") {
      uint64_t ms = 0;
      if (value.empty() ||
          !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
          !absl::SimpleAtoi(AV(value), &ms)) {
        return "invalid_timeout_ms";
      }
      out->timeout_ms = static_cast<int>(std::min<uint64_t>(
          ms, static_cast<uint64_t>(HttpIngest::kMaxWaitMs)));
    }
  }
  return {};
}

std::string ErrorBody(std::string_view error, std::string_view extra = {}) {
  std::string body = "{\"error\":";
  AppendJsonString(error, &body);
  body.append(extra);
  body.push_back('}');
  return body;
}

struct Rejection {
  uint64_t line;
  std::string_view reason;
};

void AppendCounts(size_t accepted, size_t rejected,
                  const std::vector<Rejection>& rejections, std::string* out) {
  absl::StrAppend(out, "\"accepted\":", accepted, ",\"rejected\":", rejected,
                  ",\"rejections\":[");
  size_t listed = std::min(rejections.size(), HttpIngest::kMaxRejectionsListed);
  for (size_t i = 0; i < listed; ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, "{\"line\":", rejections[i].line, ",\"reason\":");
    AppendJsonString(rejections[i].reason, out);
    out->push_back('}');
  }
  out->push_back(']');
  if (rejections.size() > listed) {
    absl::StrAppend(out, ",\"rejections_truncated\":true");
  }
}

}  // namespace

std::string_view AckLevelName(AckLevel level) {
  switch (level) {
    case AckLevel::kAccepted:
      return "accepted";
    case AckLevel::kProcessed:
      return "processed";
  }
  return "accepted";
}

namespace {
TokenAuth MakeAuth(const HttpIngestOptions& o) {
  if (o.auth) return *o.auth;
  TokenAuth a;
  a.Add(AuthScope::kIngest, o.token);
  return a;
}
}  // namespace

HttpIngest::HttpIngest(HttpIngestOptions options, RecordSink* sink)
    : options_(std::move(options)),
      auth_(MakeAuth(options_)),
      sink_(sink),
      epoch_bits_(EpochBits(options_.epoch)) {}

HttpIngest::~HttpIngest() { Shutdown(); }

uint64_t HttpIngest::NextBatchId() {
  // Called with mu_ held.
  uint64_t counter = next_counter_++ & kCounterMask;
  return epoch_bits_ | counter;
}

HttpResponse HttpIngest::Finish(HttpResponse response) {
  response.headers.emplace_back("Content-Type", "application/json");
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.requests_by_code[response.status];
  return response;
}

HttpResponse HttpIngest::Handle(const HttpRequestView& request) {
  if (request.method != "POST") {
    HttpResponse r{405, {{"Allow", "POST"}}, ErrorBody("method_not_allowed")};
    return Finish(std::move(r));
  }

  const AuthDecision auth =
      auth_.Check(AuthScope::kIngest, request.authorization);
  if (!auth.allowed()) {
    {
      std::lock_guard<std::mutex> l(mu_);
      ++stats_.unauthenticated[std::string(auth.reason)];
    }
    std::vector<std::pair<std::string, std::string>> headers;
    if (auth.status == 401) {
      headers.emplace_back("WWW-Authenticate",
                           auth.reason == "missing"
                               ? std::string("Bearer")
                               : std::string("Bearer error=\"invalid_token\""));
    }
    HttpResponse r{
        auth.status, std::move(headers),
        ErrorBody(auth.status == 401 ? "unauthenticated" : "forbidden",
                  absl::StrCat(",\"reason\":\"", AV(auth.reason), "\""))};
    return Finish(std::move(r));
  }

  if (options_.require_json_content_type &&
      !IsJsonLinesType(request.content_type)) {
    return Finish({415, {}, ErrorBody("unsupported_media_type")});
  }

  if (request.body.size() > options_.max_body_bytes) {
    return Finish(
        {413,
         {},
         ErrorBody("body_too_large", absl::StrCat(",\"max_body_bytes\":",
                                                  options_.max_body_bytes))});
  }

  QueryOptions query;
  std::string_view query_error = ParseQuery(request.query, &query);
  if (!query_error.empty()) {
    return Finish({400, {}, ErrorBody(query_error)});
  }

  std::string_view body = request.body;
  // A final empty line (the body ends with '\n') is not a line.
  size_t lines =
      static_cast<size_t>(std::count(body.begin(), body.end(), '\n'));
  if (!body.empty() && body.back() != '\n') ++lines;
  if (lines > options_.max_events) {
    return Finish(
        {413,
         {},
         ErrorBody("too_many_events",
                   absl::StrCat(",\"max_events\":", options_.max_events))});
  }
  if (lines == 0) return Finish({400, {}, ErrorBody("empty_body")});

  std::vector<Record> records;
  std::vector<Rejection> rejections;
  records.reserve(lines);
  uint64_t batch_id;
  {
    std::lock_guard<std::mutex> l(mu_);
    batch_id = NextBatchId();
  }
  size_t pos = 0;
  for (uint64_t number = 1; number <= lines; ++number) {
    size_t nl = body.find('\n', pos);
    size_t end = nl == std::string_view::npos ? body.size() : nl;
    std::string_view line = body.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::string_view reason;
    if (line.size() > options_.max_line_bytes) {
      reason = http_reject::kLineTooLong;
    } else if (line.empty()) {
      reason = http_reject::kEmptyLine;
    } else if (!IsValidUtf8(line)) {
      reason = http_reject::kInvalidUtf8;
    }
    if (!reason.empty()) {
      rejections.push_back({number, reason});
      continue;
    }
    Record& rec = records.emplace_back();
    rec.source = "http";
    rec.kind = 1;
    rec.line = number;
    rec.offset = batch_id;
    rec.bytes.assign(line);
    rec.length = line.size();
    rec.acker = this;
    rec.ack_seq = batch_id;
  }

  {
    std::lock_guard<std::mutex> l(mu_);
    for (const Rejection& r : rejections) {
      ++stats_.lines_rejected[std::string(r.reason)];
    }
  }

  const size_t accepted = records.size();
  if (accepted == 0) {
    std::string out = "{\"error\":\"no_valid_lines\",";
    AppendCounts(0, rejections.size(), rejections, &out);
    out.push_back('}');
    return Finish({400, {}, std::move(out)});
  }

  const bool wait = query.wait >= AckLevel::kProcessed;
  if (wait) {
    // Registered before the push: Processed() may run before TryPushBatch
    // returns.
    std::lock_guard<std::mutex> l(mu_);
    waiting_[batch_id] = accepted;
    waiting_count_.store(waiting_.size());
  }
  if (!sink_->TryPushBatch(&records)) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (wait) {
        waiting_.erase(batch_id);
        waiting_count_.store(waiting_.size());
      }
      ++stats_.throttled;
    }
    HttpResponse r{
        429,
        {{"Retry-After", absl::StrCat(options_.retry_after_seconds)}},
        ErrorBody("queue_full", absl::StrCat(",\"retry_after_seconds\":",
                                             options_.retry_after_seconds))};
    return Finish(std::move(r));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    ++stats_.batches;
    stats_.lines_accepted += accepted;
  }

  AckLevel ack = AckLevel::kAccepted;
  bool timed_out = false;
  if (wait) {
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(query.timeout_ms);
    std::unique_lock<std::mutex> l(mu_);
    auto it = waiting_.find(batch_id);
    bool done = cv_.wait_until(l, deadline, [&] {
      return it->second == 0 || shutdown_;
    }) && it->second == 0;
    waiting_.erase(it);
    waiting_count_.store(waiting_.size());
    if (done) {
      ack = AckLevel::kProcessed;
    } else {
      timed_out = true;
      ++stats_.wait_timeouts;
    }
  }

  std::string out = absl::StrCat("{\"batch\":", batch_id, ",");
  AppendCounts(accepted, rejections.size(), rejections, &out);
  absl::StrAppend(&out, ",\"ack\":\"", AV(AckLevelName(ack)), "\"");
  absl::StrAppend(
      &out, ",\"durable\":",
      ack == AckLevel::kProcessed && options_.durable_acks ? "true" : "false");
  if (timed_out) out.append(",\"timed_out\":true");
  out.push_back('}');
  return Finish({timed_out ? 202 : 200, {}, std::move(out)});
}

void HttpIngest::Processed(uint64_t ack_seq) {
  processed_.fetch_add(1, std::memory_order_relaxed);
  // waiting_count_ is stored under mu_ before the batch is pushed, so a
  // callback for a waited batch always sees it non-zero.
  if (waiting_count_.load() == 0) return;
  std::lock_guard<std::mutex> l(mu_);
  auto it = waiting_.find(ack_seq);
  if (it == waiting_.end() || it->second == 0) return;
  if (--it->second == 0) cv_.notify_all();
}

void HttpIngest::Shutdown() {
  std::lock_guard<std::mutex> l(mu_);
  shutdown_ = true;
  cv_.notify_all();
}

HttpIngestStats HttpIngest::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  HttpIngestStats s = stats_;
  s.processed = processed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace invariantd
