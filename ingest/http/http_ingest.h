// HTTP push ingest: the logic of `POST /v1/events`, independent of any HTTP
// library (sidecar/http_server.h adapts it to civetweb), so it can be unit
// tested and fuzzed on plain bytes.
//
// Request: a body of newline-delimited records (NDJSON). The body is split on
// '\n'; a final empty line is ignored and a trailing '\r' is stripped from
// each line. JSON is NOT decoded here: the pipeline's decoder does that and
// rejects bad JSON itself (counted there). Here a line is rejected, with its
// 1-based index and a reason, when it is
//   - longer than max_line_bytes                  "line_too_long"
//   - empty                                       "empty_line"
//   - not valid UTF-8                             "invalid_utf8"
// (the same reason codes as ingest/decoder.h's reject::).
//
// Whole-request outcomes:
//   405 method is not POST (with `Allow: POST`);
//   401 bearer token missing or wrong (with `WWW-Authenticate: Bearer`), 403
//       a token of the query scope (sidecar/core/auth.h); tokens are
//       compared in constant time;
//   415 Content-Type is not a JSON lines type (application/x-ndjson,
//       application/ndjson, application/jsonl, application/x-jsonlines,
//       application/jsonlines, application/json; parameters such as charset
//       are ignored). Required by default because a missing, text/plain or
//       form type makes a cross-site "simple request": a web page in a
//       browser on the same host could otherwise POST events without a CORS
//       preflight. Clients send e.g. `-H 'Content-Type: application/x-ndjson'`;
//   413 body over max_body_bytes, or more than max_events lines;
//   400 bad query parameters, or every line was rejected;
//   429 the pipeline's queue has no room for the whole batch (with
//       `Retry-After`); nothing of the batch was accepted -- retry it whole;
//   200 the accepted lines were admitted to the pipeline as ONE batch
//       (RecordSink::TryPushBatch: all or nothing);
//   202 `wait=processed` timed out: accepted but not yet known processed.
//
// Response body (JSON):
//   {"batch": <id>, "accepted": n, "rejected": m,
//    "rejections": [{"line": i, "reason": "..."}, ...],   // first 100
//    "ack": "accepted" | "processed"[, "timed_out": true]}
// or, for a whole-request error, {"error": "<reason>", ...}.
//
// Ack semantics (AckLevel): "accepted" means queued in the pipeline, not yet
// evaluated; a crash may lose it (the client must keep it to resend).
// "processed" (query `wait=processed`) means every accepted record of the
// batch was evaluated (or rejected by the decoder): Handle blocks until the
// pipeline has called Processed() for all of them, or until `timeout_ms`
// (default 10000, at most 60000) passes. "durable" (evidence committed) is a
// later level; the enum and the `wait=` parameter are built to take it.
//
// Batch ids (Record::offset of every record of a batch; Record::line is the
// line's 1-based index in the body, so (offset, line) names a record):
//   id = epoch << 40 | counter
// The counter starts at 1 and grows by one per batch within a process
// (wrapping after 2^40 batches). The epoch (24 bits) is
// HttpIngestOptions::epoch when set (e.g. a restart counter persisted by the
// checkpoint, which makes ids unique across restarts for certain) and
// otherwise random (std::random_device mixed with the start time), which
// makes a collision with an earlier run unlikely (1 in 2^24 per pair of
// runs) but not impossible. Ids exceed 2^53: clients
// in languages whose JSON numbers are doubles must parse them as big ints.
//
// Thread-safety: Handle, Processed, Stats and Shutdown may be called
// concurrently from any threads. Lifetime: the HttpIngest is the Acker of
// every record it admits, so it must outlive the pipeline's work on them.
#ifndef INVARIANTD_INGEST_HTTP_HTTP_INGEST_H_
#define INVARIANTD_INGEST_HTTP_HTTP_INGEST_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ingest/record.h"
#include "sidecar/core/auth.h"

namespace invariantd {

struct HttpIngestOptions {
  // Bearer tokens by scope (the ingest scope applies); when unset, `token`
  // alone (empty: no authentication).
  std::shared_ptr<const TokenAuth> auth;
  std::string token;
  size_t max_body_bytes = 8 << 20;
  size_t max_line_bytes = 1 << 20;
  size_t max_events = 10000;
  int retry_after_seconds = 1;
  // 415 unless the Content-Type is a JSON lines type (see above).
  bool require_json_content_type = true;
  // High 24 bits of batch ids (see above); random when unset.
  std::optional<uint32_t> epoch;
  // True when the pipeline acknowledges a record only once it is durable
  // (the sidecar with its evidence store): a "processed" answer then also
  // says "durable": true.
  bool durable_acks = false;
};

// A request as the HTTP layer saw it. All views must stay valid during
// Handle().
struct HttpRequestView {
  std::string_view method;
  std::string_view path;           // URL path, not decoded
  std::string_view authorization;  // the Authorization header's value
  std::string_view content_type;
  std::string_view query;  // after '?', not URL-decoded, may be empty
  std::string_view body;
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // JSON unless a Content-Type header says otherwise
};

// How far a batch got when the response was written. Ordered: a later level
// implies the earlier ones.
enum class AckLevel {
  kAccepted,   // admitted to the pipeline's queue
  kProcessed,  // every record evaluated (or rejected by the decoder)
  // kDurable: evidence and checkpoint committed (issue 4)
};
std::string_view AckLevelName(AckLevel level);

struct HttpIngestStats {
  std::map<int, uint64_t> requests_by_code;
  uint64_t batches = 0;         // batches admitted to the pipeline
  uint64_t lines_accepted = 0;  // records admitted
  std::map<std::string, uint64_t> lines_rejected;  // by reason
  // "missing" | "invalid" (401) | "wrong_scope" (403: a query token)
  std::map<std::string, uint64_t> unauthenticated;
  uint64_t throttled = 0;      // 429s (sink refused the batch)
  uint64_t processed = 0;      // Processed() callbacks received
  uint64_t wait_timeouts = 0;  // wait=processed requests that timed out
};

// Line reject reasons (shared with ingest/decoder.h's reject:: codes).
namespace http_reject {
inline constexpr std::string_view kLineTooLong = "line_too_long";
inline constexpr std::string_view kEmptyLine = "empty_line";
inline constexpr std::string_view kInvalidUtf8 = "invalid_utf8";
}  // namespace http_reject

class HttpIngest : public Acker {
 public:
  static constexpr size_t kMaxRejectionsListed = 100;
  static constexpr int kDefaultWaitMs = 10000;
  static constexpr int kMaxWaitMs = 60000;

  // `sink` is not owned and must outlive this object.
  HttpIngest(HttpIngestOptions options, RecordSink* sink);
  ~HttpIngest() override;

  HttpIngest(const HttpIngest&) = delete;
  HttpIngest& operator=(const HttpIngest&) = delete;

  HttpResponse Handle(const HttpRequestView& request);

  // Acker: `ack_seq` is the record's batch id.
  void Processed(uint64_t ack_seq) override;

  // Wakes every Handle() waiting for `wait=processed` (they answer 202 with
  // "timed_out") and makes later waits return at once. For shutdown.
  void Shutdown();

  HttpIngestStats Stats() const;

  const HttpIngestOptions& options() const { return options_; }

 private:
  HttpResponse Finish(HttpResponse response);
  uint64_t NextBatchId();

  const HttpIngestOptions options_;
  const TokenAuth auth_;
  RecordSink* const sink_;
  const uint64_t epoch_bits_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // signalled when a waited batch completes
  uint64_t next_counter_ = 1;
  bool shutdown_ = false;
  // Records not yet processed of the batches some Handle() is waiting on,
  // by batch id; bounded by the number of concurrent requests.
  std::map<uint64_t, uint64_t> waiting_;
  std::atomic<size_t> waiting_count_{0};  // waiting_.size(), read unlocked
  std::atomic<uint64_t> processed_{0};
  HttpIngestStats stats_;  // except `processed`
};

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_HTTP_HTTP_INGEST_H_
