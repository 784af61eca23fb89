// KafkaSource: consumes Kafka topics as a consumer-group member and hands
// the messages to a RecordSink, committing offsets only for what the
// pipeline has processed. The only place librdkafka is used.
//
// Quick guide
//
//   KafkaOptions o;
//   o.brokers = "kafka-0:9092,kafka-1:9092";
//   o.topics = {"audit"};                 // or "^audit-.*" (regex)
//   o.config["security.protocol"] = "ssl";  // any librdkafka property
//   KafkaSource src(o, &pipeline, [](std::string_view ev,
//                                    std::string_view detail) { ... });
//   if (absl::Status s = src.Start(); !s.ok()) { /* config error */ }
//   ...
//   src.Stop();  // before the pipeline stops calling Processed(); the
//                // source must outlive every Processed() call anyway.
//
// Records. One Record per Kafka message:
//   source = "kafka:<topic>/<partition>", offset = the Kafka offset, line = 0,
//   bytes = the message value (empty for a null value), length = its size;
//   a value over `max_record_bytes` is delivered with too_long = true and
//   empty bytes (the pipeline counts and skips it, its offset is committed
//   like any other once processed). meta, in this order:
//     $kafka.topic, $kafka.partition (decimal), $kafka.offset (decimal),
//     $kafka.key (only when the message has a key; raw bytes),
//     $kafka.headers.<name> (one per header, in header order; a null header
//     value is ""). acker = this; ack_seq names (partition assignment,
//   offset) and is opaque.
//
// Offsets (at least once). The consumer runs with enable.auto.commit=true
// and enable.auto.offset.store=false: an offset is *stored* (and then
// committed by librdkafka's auto-commit timer, on rebalance, and on Stop)
// only when the pipeline has called Processed() for every record of that
// partition up to it. Completions may come out of order; the stored offset
// is the in-order watermark (offset N+1 once all delivered records <= N of
// the partition are processed). After a restart or a rebalance, records
// that were delivered but not yet processed are delivered again (the engine
// recognises redeliveries by position); processed-and-committed records
// are not. With no committed offset the group starts at the earliest
// offset (auto.offset.reset=earliest unless config says otherwise).
//
// Backpressure. Messages are handed over in batches of at most `batch`
// records with RecordSink::TryPushBatch (so `batch` must not exceed the
// sink's capacity). When the sink is full, every partition with records
// waiting is paused (rd_kafka_pause_partitions), the waiting records are
// kept, and the batch is retried (1 ms backoff doubling up to
// poll_timeout) while the poll loop keeps serving rebalances, heartbeats
// and errors. Once everything waiting is admitted, the paused partitions
// are resumed; librdkafka resumes each at the message after the last one
// it handed out, so nothing is skipped or read twice. What is kept while
// the sink is full is bounded by what librdkafka had already handed out
// before the pause (at most `batch` per poll plus in-flight messages).
//
// Rebalances. Eager and cooperative (partition.assignment.strategy=
// cooperative-sticky) protocols are both handled. On revoke, the processed
// watermark of each revoked partition is stored and committed
// synchronously before the partition is given up (a coordinator that
// rejects commits during an eager rebalance -- librdkafka's mock cluster
// does, Kafka brokers do not -- makes it fail: "commit_failed", and the new
// owner reads those records again); waiting (not yet
// admitted) records of revoked partitions are dropped, and delivered but
// unprocessed ones lose their pending state (their late Processed() calls
// are ignored): the new owner reads them again. Lost partitions (session
// timeout) are given up without committing.
//
// Notices. `notice(event, detail)` is called from the poll thread only;
// `detail` is already sanitized (sidecar/core/sanitize.h). Events:
//   "assigned", "revoked"  partitions, e.g. "audit/0,audit/1"
//   "paused", "resumed"    partitions paused/resumed for backpressure
//   "error"                a librdkafka error (counted in Stats().errors),
//                          e.g. an unknown topic or an unreachable broker
//   "committed"            offsets committed (auto-commit, rebalance, Stop),
//                          e.g. "audit/0@1200,audit/1@977": every record
//                          below is processed and will not be read again
//                          by this group
//   "commit_failed"        a commit or an offset store failed (also counted
//                          as an error); the records are read again by the
//                          next owner
//   "log"                  librdkafka log lines at warning level or worse
// Errors never stop the source: librdkafka keeps retrying.
//
// Stop() does not wait for the pipeline: records delivered but not yet
// processed when it commits are read again after the next start.
//
// Known librdkafka issue: before 2.3, destroying a cooperative-sticky
// consumer that joined the group but never received an assignment hits an
// assertion in the sticky assignor (confluentinc/librdkafka#4312).
//
// Thread-safety: Processed() and Stats() from any thread; Start()/Stop()
// from the owner. One poll thread owns the consumer handle.
#ifndef INVARIANTD_INGEST_KAFKA_KAFKA_SOURCE_H_
#define INVARIANTD_INGEST_KAFKA_KAFKA_SOURCE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "ingest/record.h"

// librdkafka's handle types, kept out of this header.
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_message_s rd_kafka_message_t;
typedef struct rd_kafka_topic_partition_list_s rd_kafka_topic_partition_list_t;

namespace invariantd {

struct KafkaOptions {
  std::string brokers;              // bootstrap.servers
  std::vector<std::string> topics;  // names, or regexes starting with '^'
  std::string group_id = "invariantd";
  // Extra librdkafka properties (security, timeouts, client.id, ...).
  // enable.auto.commit and enable.auto.offset.store are managed here and
  // rejected; bootstrap.servers and group.id come from the fields above.
  std::map<std::string, std::string> config;
  size_t batch = 500;  // records per TryPushBatch; <= the sink's capacity
  std::chrono::milliseconds poll_timeout{100};
  size_t max_record_bytes = 1 << 20;  // larger values arrive as too_long
};

struct KafkaStats {
  uint64_t records = 0;              // admitted by the sink
  uint64_t processed = 0;            // Processed() calls that counted
  uint64_t assigned_partitions = 0;  // now
  uint64_t paused_partitions = 0;    // now, for backpressure
  uint64_t pauses = 0;               // partition pauses, cumulative
  uint64_t resumes = 0;              // partition resumes, cumulative
  uint64_t buffered = 0;             // records waiting for sink room, now
  uint64_t max_buffered = 0;         // high-water mark of `buffered`
  uint64_t rebalances = 0;           // assign and revoke events
  uint64_t revoked_dropped = 0;      // waiting records dropped on revoke
  uint64_t errors = 0;
  uint64_t polls = 0;  // poll-loop iterations (liveness)
  // Sum over assigned partitions of (high watermark - processed position),
  // refreshed about once a second; -1 when unknown (e.g. before the first
  // fetch, or a non-empty partition that delivered nothing since it was
  // assigned).
  int64_t lag = -1;
};

class KafkaSource : public Acker {
 public:
  using NoticeFn =
      std::function<void(std::string_view event, std::string_view detail)>;

  KafkaSource(KafkaOptions options, RecordSink* sink, NoticeFn notice);
  ~KafkaSource() override;  // Stop()s
  KafkaSource(const KafkaSource&) = delete;
  KafkaSource& operator=(const KafkaSource&) = delete;

  // Creates and validates the consumer (a bad property or value gives
  // InvalidArgument with librdkafka's message), subscribes and starts the
  // poll thread. Call once.
  absl::Status Start();
  // Stops polling, stores the processed watermarks, commits them
  // synchronously, closes the consumer (leaving the group: its partitions
  // go to the other members) and joins the poll thread. Idempotent.
  void Stop();

  // The pipeline has finished with the record `ack_seq`. Thread-safe.
  // Unknown, repeated or stale (revoked partition) sequence numbers are
  // ignored.
  void Processed(uint64_t ack_seq) override;

  KafkaStats Stats() const;

 private:
  struct Part;
  struct Pending {
    int64_t offset;
    bool done;
  };

  void PollLoop();
  void Shutdown();
  void HandleMessage(rd_kafka_message_t* msg);
  bool Deliver();
  void PauseWaiting();
  void ResumeAll();
  void FlushStores(const std::vector<Part*>* only, bool commit_sync);
  void UpdateLag();
  void OnCommit(int err, const rd_kafka_topic_partition_list_t* offsets);
  void OnRebalance(int err, rd_kafka_topic_partition_list_t* partitions);
  void Assign(rd_kafka_topic_partition_list_t* partitions);
  void Revoke(rd_kafka_topic_partition_list_t* partitions, bool lost);
  void DropPart(Part* part);
  Part* FindPart(std::string_view topic, int32_t partition);
  void Notice(std::string_view event, std::string_view detail);
  void Error(std::string_view event, std::string_view detail);

  static void RebalanceCb(rd_kafka_t* rk, int err,
                          rd_kafka_topic_partition_list_t* partitions,
                          void* opaque);
  static void ErrorCb(rd_kafka_t* rk, int err, const char* reason,
                      void* opaque);
  static void LogCb(const rd_kafka_t* rk, int level, const char* fac,
                    const char* buf);

  const KafkaOptions options_;
  RecordSink* const sink_;
  const NoticeFn notice_;

  rd_kafka_t* rk_ = nullptr;  // poll thread only once started
  std::thread thread_;
  std::atomic<std::thread::id> poll_thread_{};  // for LogCb
  std::atomic<bool> stop_{false};
  bool started_ = false;  // owner thread
  bool stopped_ = false;  // owner thread

  // --- poll thread only ---
  // (topic, partition) -> Part, for the current assignment.
  struct TpLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return std::string_view(a.first) < std::string_view(b.first) ||
             (std::string_view(a.first) == std::string_view(b.first) &&
              a.second < b.second);
    }
  };
  std::map<std::pair<std::string, int32_t>, Part*, TpLess> by_tp_;
  std::deque<Record> waiting_;        // taken from librdkafka, not yet admitted
  std::vector<Part*> waiting_parts_;  // scratch
  uint32_t next_slot_ = 1;
  std::chrono::steady_clock::time_point next_lag_update_{};

  // --- shared with Processed() ---
  mutable std::mutex mu_;
  // slot -> Part, owning. A slot names one assignment of one partition.
  absl::flat_hash_map<uint32_t, std::unique_ptr<Part>> parts_
      ABSL_GUARDED_BY(mu_);
  std::vector<uint32_t> dirty_ ABSL_GUARDED_BY(mu_);  // watermark moved

  // --- stats ---
  std::atomic<uint64_t> records_{0}, processed_{0}, assigned_{0}, paused_{0},
      pauses_{0}, resumes_{0}, buffered_{0}, max_buffered_{0}, rebalances_{0},
      revoked_dropped_{0}, errors_{0}, polls_{0};
  std::atomic<int64_t> lag_{-1};
};

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_KAFKA_KAFKA_SOURCE_H_
