// Pipeline: the live evaluation path of `invariantd run`.
//
//   sources ──Record──► [admission queue, bounded] ──► dispatcher thread
//      decode, redelivery check, filters and keys (Engine::Prepare)
//      ──► [one bounded queue per worker] ──► worker threads (1..N)
//      each worker owns the state of the keys that hash to it and
//      evaluates only those rules of the event (Engine::Evaluate)
//      ──► violations to the ViolationSink; the record is acknowledged to
//      its source when every worker it went to has finished with it.
//
// Per-key order is preserved: all events of one rule key go to the same
// worker, through FIFO queues, in input order. Bounded everywhere: a full
// admission queue blocks Push() (file tail waits) and fails TryPushBatch()
// (HTTP 429, Kafka pause); a full worker queue blocks the dispatcher, which
// in turn fills the admission queue.
//
// Thread-safety: Push/TryPushBatch from any number of source threads;
// Stats/RuleSnapshot from any thread; Start/Stop from the owner.
#ifndef INVARIANTD_SIDECAR_PIPELINE_H_
#define INVARIANTD_SIDECAR_PIPELINE_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "exporters/evidence/state_store.h"
#include "ingest/decoder.h"
#include "ingest/record.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace invariantd {

// A FIFO over a power-of-two ring that grows by doubling and never
// shrinks: once it has held its peak, pushing and popping allocate nothing
// (std::deque allocates a block every few records of ~150 bytes, and frees
// it on the popping thread). Popped slots keep moved-from items.
template <typename T>
class Ring {
 public:
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& front() { return slots_[head_]; }
  void push_back(T&& item) {
    if (size_ == slots_.size()) Grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(item);
    ++size_;
  }
  void pop_front() {
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
  }

 private:
  void Grow() {
    std::vector<T> bigger(std::max<size_t>(16, 2 * slots_.size()));
    for (size_t i = 0; i < size_; ++i) {
      bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    }
    slots_.swap(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

// A bounded FIFO with blocking and non-blocking admission. Thread-safe.
template <typename T>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) : capacity_(capacity) {}

  // Blocks while full; false once closed (the item is not taken).
  bool Push(T item) {
    std::unique_lock<std::mutex> l(mu_);
    not_full_.wait(l, [&] { return closed_ || items_.size() < capacity_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  // All of `batch` or nothing.
  bool TryPushAll(std::vector<T>* batch) {
    std::lock_guard<std::mutex> l(mu_);
    if (closed_ || items_.size() + batch->size() > capacity_) return false;
    for (T& t : *batch) items_.push_back(std::move(t));
    batch->clear();
    not_empty_.notify_one();
    return true;
  }
  // Pushes all of `items` in order, blocking while full (one lock and one
  // wake-up per chunk rather than per item); false once closed (the rest
  // are not taken and stay in `items`).
  bool PushAll(std::vector<T>* items) {
    size_t i = 0;
    std::unique_lock<std::mutex> l(mu_);
    while (i < items->size()) {
      not_full_.wait(l, [&] { return closed_ || items_.size() < capacity_; });
      if (closed_) {
        items->erase(items->begin(), items->begin() + i);
        return false;
      }
      while (i < items->size() && items_.size() < capacity_) {
        items_.push_back(std::move((*items)[i++]));
      }
      not_empty_.notify_one();
    }
    items->clear();
    return true;
  }
  // Moves up to `max` items into `out`; blocks while empty and open.
  // Returns false when closed and drained. `*drained` (optional) tells
  // whether the queue was left empty.
  bool PopBatch(std::vector<T>* out, size_t max, bool* drained = nullptr) {
    std::unique_lock<std::mutex> l(mu_);
    not_empty_.wait(l, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return false;
    const bool was_full = items_.size() >= capacity_;
    while (!items_.empty() && out->size() < max) {
      out->push_back(std::move(items_.front()));
      items_.pop_front();
    }
    if (drained != nullptr) *drained = items_.empty();
    // Pushers wait only while the queue is full.
    if (was_full) not_full_.notify_all();
    return true;
  }
  // PopBatch that gives up at `deadline`: true with nothing moved when it
  // passes first (*drained is then true).
  bool PopBatchUntil(std::vector<T>* out, size_t max,
                     std::chrono::steady_clock::time_point deadline,
                     bool* drained) {
    std::unique_lock<std::mutex> l(mu_);
    not_empty_.wait_until(l, deadline,
                          [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) {
      *drained = true;
      return !closed_;
    }
    const bool was_full = items_.size() >= capacity_;
    while (!items_.empty() && out->size() < max) {
      out->push_back(std::move(items_.front()));
      items_.pop_front();
    }
    *drained = items_.empty();
    if (was_full) not_full_.notify_all();
    return true;
  }
  // No more pushes; poppers drain what is queued, then see the end.
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }
  size_t size() const {
    std::lock_guard<std::mutex> l(mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }
  bool closed() const {
    std::lock_guard<std::mutex> l(mu_);
    return closed_;
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  Ring<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

struct PipelineOptions {
  int workers = 1;
  // Called with the evaluation time of one sampled event (every 64th per
  // worker), in seconds; from worker threads. Optional.
  std::function<void(double)> on_eval_latency;
  // Optional: seconds a worker stopped evaluating to hand its rule state
  // to a checkpoint (each worker, each checkpoint).
  std::function<void(double)> on_checkpoint_pause;
  size_t queue_capacity = 65536;        // admission queue, records
  size_t worker_queue_capacity = 4096;  // per worker, events
  size_t max_line_bytes = 1 << 20;
  // When set, the acknowledgements of evaluated records are handed to it
  // (as a closure that performs them) instead of being made at once,
  // together with the checkpoint epoch of the records: the sidecar runs
  // them once the checkpoint that covers them (the first one with a larger
  // epoch) is durable, with the evidence of everything evaluated before it.
  // Records rejected or skipped as redeliveries, which change no state and
  // produce no evidence, are acknowledged at once.
  std::function<void(uint64_t epoch, std::function<void()>)> ack_gate;
  // Rule-state checkpoints. When set, the dispatcher puts a checkpoint
  // marker into every worker's queue after the records it dispatched,
  // whenever the admission queue runs empty and at least every
  // checkpoint_interval while records flow (and once more on Stop). Each
  // worker, when it reaches the marker, appends an image of the rule state
  // it changed since the previous marker and of one slice of its keys (a
  // rolling base; see NextImageSpec); the last one hands the whole
  // checkpoint to on_checkpoint (on its thread), with its epoch (1, 2, ...;
  // it covers every record of a smaller epoch) and how many checkpoints a
  // restore needs (`keep`). The first checkpoint after Start without a
  // restored state, or after Reload, is full.
  std::function<void(uint64_t epoch, StateCheckpoint)> on_checkpoint;
  std::chrono::milliseconds checkpoint_interval{100};
  // The share of the hash space each checkpoint's slice covers: 0 sizes
  // slices by the rate of change (see NextImageSpec); tests fix it.
  double slice_fraction = 0;
  // Checkpoints handed over and not yet committed, and their bytes
  // (optional). While either is at its maximum the dispatcher holds back,
  // so that a store that cannot commit (disk full) stops evaluation and,
  // through the full admission queue, the sources: memory stays bounded.
  // Below that, a slow commit (a second-long stall of the disk) is
  // absorbed without stopping evaluation.
  struct Uncommitted {
    size_t checkpoints = 0;
    uint64_t bytes = 0;
  };
  std::function<Uncommitted()> uncommitted_checkpoints;
  size_t max_uncommitted_checkpoints = 32;
  uint64_t max_uncommitted_checkpoint_bytes = uint64_t{64} << 20;
  std::optional<DecoderOptions> decoder;  // default: the rule set's input
  DecoderLimits input_limits;             // per record, whichever the format
  EngineOptions engine;
};

struct PipelineStats {
  uint64_t records = 0;      // admitted
  uint64_t events = 0;       // decoded and checked
  uint64_t redelivered = 0;  // skipped as redeliveries
  uint64_t violations = 0;
  uint64_t checkpoints = 0;                  // handed to on_checkpoint
  uint64_t full_checkpoints = 0;             // of which full
  uint64_t checkpoint_bytes = 0;             // images written, in all
  std::map<std::string, uint64_t> rejected;  // by reason
  // The same counts by source kind ("file", "http", "kafka"):
  std::map<std::string, uint64_t> events_by_kind;
  std::map<std::pair<std::string, std::string>, uint64_t>
      rejected_by_kind;  // (kind, reason)
  std::map<std::string, uint64_t> redelivered_by_kind;
  size_t queue_depth = 0;
  size_t queue_capacity = 0;
};

// "file", "http" or "kafka", from a record's source name.
std::string_view SourceKind(std::string_view source);

// Counters and table sizes of one rule, summed over workers.
struct RuleSnapshot {
  std::string name;
  std::string kind;
  RuleCounters counters;
  TableStats table;
};

class Pipeline : public RecordSink {
 public:
  using ViolationFn = std::function<void(const Violation&)>;

  // `on_violation` is called from worker threads (concurrently when there
  // are several): it must be thread-safe.
  static absl::StatusOr<std::unique_ptr<Pipeline>> Create(
      std::shared_ptr<const RuleSet> rules, PipelineOptions options,
      ViolationFn on_violation);
  ~Pipeline() override;

  void Start();
  // Stops admitting, evaluates everything already admitted, acknowledges
  // it, and joins the threads. Idempotent.
  void Stop();

  bool Push(Record record) override;
  bool TryPushBatch(std::vector<Record>* batch) override;
  bool PushAll(std::vector<Record>* batch) override;
  size_t TakeRecycled(std::vector<Record>* out, size_t max) override;

  // Loads a stored rule-state checkpoint into the engines; before Start.
  // Streams resume after their stored positions: records of a file or
  // Kafka partition at or before the stored position are already in the
  // state and are skipped (counted as redelivered) once. State written by
  // a different number of workers, or that cannot be read, is not loaded:
  // the rules start empty, and the returned report says so. `report` lists
  // what was restored, skipped (rules removed or changed) and discarded.
  struct RestoreReport {
    bool restored = false;
    std::string problem;  // why the state was not (fully) restored
    std::vector<std::string> skipped;
    std::vector<std::string> discarded;
    size_t positions = 0;
  };
  RestoreReport Restore(const StoredState& state);
  // A file's content at its stored position is not what the checkpoint
  // saw (the tailer found it truncated or replaced): its records are no
  // longer skipped against the restored position. Thread-safe.
  void ForgetPosition(uint64_t stream);

  PipelineStats Stats() const;
  // Per-rule counters as last published by the workers (at most ~0.5 s
  // old while running; exact after Stop).
  std::vector<RuleSnapshot> Rules() const;
  std::shared_ptr<const RuleSet> rules() const;

  // Swaps in a new rule set at a point in the stream: every record is
  // evaluated exactly once, either entirely with the old rules (already
  // dispatched when Reload was called; Reload waits for them) or entirely
  // with the new ones (still queued, or admitted later). The state of rules
  // whose definition is unchanged carries over (keys, counters); new and
  // changed rules start fresh. Fails (and keeps the running rules) only if the
  // new rule set's decoder cannot be built.
  struct ReloadResult {
    std::vector<std::string> carried;  // rules whose state was kept
    std::vector<std::string> fresh;    // new or changed rules
  };
  absl::StatusOr<ReloadResult> Reload(std::shared_ptr<const RuleSet> rules);

 private:
  struct Work;
  struct Worker;
  struct Marker;

  Pipeline(std::shared_ptr<const RuleSet> rules, PipelineOptions options,
           ViolationFn on_violation);
  void DispatchLoop();
  // Decodes and routes one record; queues the work item for its workers
  // in `outbox` (by worker), handed over once per batch.
  void Dispatch(Record record, std::vector<std::vector<Work*>>* outbox);
  // Dispatcher-thread counters, published to stats_ when the admission
  // queue runs empty and at least every 100 ms under load.
  void PublishDispatchStats();
  void WorkerLoop(Worker* w);
  // One worker is done with `work`; the last one queues it in `done`.
  void Finish(Work* work, std::vector<Work*>* done);
  // Acknowledges the records of `done` (one call per run of the same
  // acker) and returns the work items to the pool.
  void Retire(std::vector<Work*>* done);
  Work* NewWork();  // from the pool (dispatcher thread)
  void Reject(const Record& record, std::string_view reason);
  // Checkpoints (dispatcher thread).
  void EmitMarker();
  ImageSpec NextImageSpec(std::chrono::steady_clock::time_point now,
                          double* fraction, uint64_t* keep);
  void NotePosition(const Record& r);
  bool AlreadyCheckpointed(const Record& r);
  // A worker reached `m`: adds its image; the last one hands it over.
  void SaveAtMarker(Worker* w, Marker* m);
  void PublishRules(Worker* w);

  absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoderFor(
      const RuleSet& rules) const;
  void DrainWorkers();

  mutable std::mutex rules_mu_;  // guards rules_ for readers off the path
  std::shared_ptr<const RuleSet> rules_ ABSL_GUARDED_BY(rules_mu_);
  PipelineOptions options_;
  ViolationFn on_violation_;
  // Held by the dispatcher while it processes a batch, and by Reload while
  // it swaps what follows.
  std::mutex dispatch_mu_;
  std::unique_ptr<Decoder> decoder_;  // dispatcher thread only
  std::unique_ptr<Engine> router_;    // dispatcher: Prepare + redelivery
  BoundedQueue<Record> admission_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::thread dispatcher_;
  bool started_ = false;
  bool stopped_ = false;
  std::atomic<bool> stopping_{false};

  // Work items are recycled: each keeps the capacity of its buffers, so the
  // steady state allocates nothing per event.
  std::mutex pool_mu_;
  std::vector<Work*> pool_ ABSL_GUARDED_BY(pool_mu_);
  std::vector<Work*> local_pool_;  // dispatcher thread only
  // Records the dispatcher has finished with, handed back to the sources
  // (TakeRecycled) in batches: at most kMaxRecycled records and
  // kMaxRecycledTotal bytes of buffers are kept, and no record whose line
  // buffer is over kMaxRecycledBytes.
  static constexpr size_t kMaxRecycled = 4096;
  static constexpr size_t kMaxRecycledBytes = 16 << 10;
  static constexpr size_t kMaxRecycledTotal = 4 << 20;
  std::mutex recycle_mu_;
  std::vector<Record> recycled_ ABSL_GUARDED_BY(recycle_mu_);
  size_t recycled_bytes_ ABSL_GUARDED_BY(recycle_mu_) = 0;
  std::vector<Record> recycle_out_;  // dispatcher thread only
  uint64_t generation_ = 0;          // of the rule set; bumped by Reload

  mutable std::mutex stats_mu_;
  PipelineStats stats_ ABSL_GUARDED_BY(stats_mu_);
  // Dispatcher-thread counters: by source kind (file, http, kafka), and
  // rejections by reason.
  struct DispatchCounters {
    uint64_t events[3] = {0, 0, 0};
    uint64_t redelivered[3] = {0, 0, 0};
    std::map<std::pair<std::string, std::string>, uint64_t> rejected;
  } dispatch_;
  std::chrono::steady_clock::time_point last_dispatch_publish_;
  std::atomic<uint64_t> records_{0};
  std::atomic<uint64_t> violations_{0};

  // Checkpoints. epoch_ is the epoch of records dispatched now; a marker
  // increments it. Dispatcher thread, except the atomics.
  uint64_t epoch_ = 0;
  uint64_t since_marker_ = 0;  // records sent to workers since the marker
  std::chrono::steady_clock::time_point last_marker_;
  bool force_full_ = true;
  // The spec of the next checkpoint, decided at the marker before it so
  // that the workers can copy its slice ahead (Engine::BeginSlice); none
  // when the next one will be full.
  struct PlannedImage {
    ImageSpec spec;
    double fraction = 0;
    uint64_t keep = 0;
  };
  std::optional<PlannedImage> planned_;
  // The rolling base (see NextImageSpec), in checkpoint numbers: the last
  // one emitted, the first one a restore needs, the first one of the round
  // of slices under way, and where in the hash space it has reached.
  int64_t ckpt_index_ = 0;
  int64_t window_start_ = 1;
  int64_t round_start_ = 1;
  uint64_t sweep_ = 0;
  double credit_ = 0;       // change bytes not yet matched by slices
  double state_bytes_ = 0;  // estimated size of a full image
  double measured_bytes_ = 0;
  double measured_fraction_ = 0;
  // Reported by the worker that completes a checkpoint, taken by the
  // dispatcher: change bytes, slice bytes and the hash fraction they
  // covered (fixed point).
  static constexpr double kFractionScale = 1e12;
  std::atomic<uint64_t> change_bytes_{0};
  std::atomic<uint64_t> reported_slice_bytes_{0};
  std::atomic<uint64_t> reported_fraction_{0};
  std::atomic<uint64_t> checkpoints_{0};
  std::atomic<uint64_t> full_checkpoints_{0};
  std::atomic<uint64_t> checkpoint_bytes_{0};
  // Last evaluated offset per stream ("file:<stream>" or the Kafka source);
  // std::map: the cached pointer stays valid as streams are added.
  std::map<std::string, uint64_t> positions_;
  uint64_t* last_position_ = nullptr;
  uint64_t last_stream_ = 0;
  std::string last_source_;
  // Restored positions not yet passed by their stream; checked by the
  // dispatcher while any are left, forgotten by ForgetPosition.
  std::mutex restored_mu_;
  std::map<std::string, uint64_t> restored_positions_
      ABSL_GUARDED_BY(restored_mu_);
  std::atomic<bool> has_restored_{false};
  // When each stream of positions_ last advanced: streams quiet for long
  // (rotated away, deleted) are dropped from checkpoints, so that a reused
  // inode is not mistaken for them.
  std::map<std::string, std::chrono::steady_clock::time_point> stream_seen_;
  // How long the workers took to write the last checkpoint's images (the
  // slowest): markers are spaced so that this stays a small share.
  std::atomic<int64_t> last_save_ns_{0};
};

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_PIPELINE_H_
