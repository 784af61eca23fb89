// EvidenceWriter: group commit of violations into the evidence store, and
// the gate that holds input acknowledgements until the evidence of
// everything evaluated before them is durable.
//
//   worker threads ──Submit(record)──► pending ──► writer thread:
//       one transaction per batch (every commit_interval, or at once when
//       max_batch records wait), then for each record that was new (not a
//       re-evaluation of a stored id): on_fresh(record, payload) -- e.g.
//       print it, count it, queue the page; then run the acknowledgements
//       that were waiting for this commit.
//
// WhenDurable(fn) runs fn once every record submitted before the call is
// committed: at once when nothing is pending.
//
// Rule-state checkpoints go to the state store (a separate database, so
// that a checkpoint of megabytes never holds an evidence commit up) on a
// second thread: SubmitCheckpoint(epoch, c) writes `c` once every record
// submitted before it is committed, and WhenCheckpointed(e, fn) runs fn
// once a checkpoint of an epoch larger than e is durable (the pipeline's
// records of epoch e are covered by it). A worker submits a record's
// violations before it acknowledges the record, so an input is never
// acknowledged before its evidence is on disk.
//
// A failed commit (disk full, I/O error) keeps the batch and retries with
// backoff; nothing waiting for it is acknowledged meanwhile, and Submit
// blocks once max_pending records wait (backpressure up to the sources).
// The failure is reported through on_error and healthy() is false until a
// commit succeeds.
#ifndef INVARIANTD_SIDECAR_EVIDENCE_WRITER_H_
#define INVARIANTD_SIDECAR_EVIDENCE_WRITER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "exporters/evidence/state_store.h"
#include "exporters/evidence/store.h"

namespace invariantd {

struct EvidenceWriterOptions {
  std::chrono::milliseconds commit_interval{2};
  size_t max_batch = 4096;
  size_t max_pending = 65536;
  // First retry delay after a failed commit; doubles up to max_backoff.
  std::chrono::milliseconds backoff{50};
  std::chrono::milliseconds max_backoff{5000};
  // Seconds each successful transaction took, from its first write to the
  // end of its fsync: an evidence batch (writer thread) and a batch of
  // rule-state checkpoints (state thread). Optional.
  std::function<void(double)> on_commit_seconds;
  std::function<void(double)> on_checkpoint_seconds;
};

struct EvidenceWriterStats {
  uint64_t submitted = 0;
  uint64_t stored = 0;      // new rows committed
  uint64_t duplicates = 0;  // ids already stored (re-evaluations)
  uint64_t commits = 0;
  uint64_t failures = 0;  // failed commit attempts
  uint64_t pending = 0;   // submitted, not yet committed
  uint64_t head_seq = 0;
  std::string head_hash;
  uint64_t checkpoints = 0;       // rule-state checkpoints committed
  uint64_t checkpoint_epoch = 0;  // the latest durable one
  std::string last_error;    // of the last failed commit, until one succeeds
  WalCheckpointerStats wal;  // the evidence store's background checkpoints
};

class EvidenceWriter {
 public:
  using FreshFn =
      std::function<void(const EvidenceRecord&, const std::string& payload)>;
  using ErrorFn = std::function<void(const absl::Status&)>;

  // `state` is where checkpoints go; without one, SubmitCheckpoint must
  // not be called.
  EvidenceWriter(std::unique_ptr<EvidenceStore> store,
                 EvidenceWriterOptions options, FreshFn on_fresh,
                 ErrorFn on_error, std::unique_ptr<StateStore> state = nullptr);
  ~EvidenceWriter();  // Stop()
  EvidenceWriter(const EvidenceWriter&) = delete;
  EvidenceWriter& operator=(const EvidenceWriter&) = delete;

  void Start();
  // Commits what is pending (retrying while it fails, until `deadline`),
  // runs the waiting acknowledgements that became durable, and joins the
  // thread. Returns false if records were left uncommitted.
  bool Stop(std::chrono::steady_clock::time_point deadline =
                std::chrono::steady_clock::time_point::max());

  // Shutdown is coming by `deadline`: from then on Submit no longer
  // blocks on a full backlog (the pipeline can drain and stop even while
  // the store cannot commit; what stays uncommitted is not acknowledged
  // and is evaluated again after the restart).
  void BeginShutdown(std::chrono::steady_clock::time_point deadline);

  // Queues a record; `payload` is handed back to on_fresh. Thread-safe;
  // blocks while max_pending records wait.
  void Submit(EvidenceRecord record, std::string payload);
  void WhenDurable(std::function<void()> fn);
  void SubmitCheckpoint(uint64_t epoch, StateCheckpoint checkpoint);
  void WhenCheckpointed(uint64_t epoch, std::function<void()> fn);

  EvidenceWriterStats Stats() const;
  bool healthy() const;
  // Checkpoints submitted and not yet committed (and, when `bytes` is set,
  // the size of their images).
  size_t UncommittedCheckpoints(uint64_t* bytes = nullptr) const;

 private:
  struct Item {
    EvidenceRecord record;
    std::string payload;
  };
  struct CheckpointItem {
    uint64_t epoch = 0;
    uint64_t after = 0;  // written once this many records are committed
    uint64_t bytes = 0;
    StateCheckpoint checkpoint;
  };
  void Run();
  void RunState();
  // The recovery of a failed commit (either thread), under mu_: counts and
  // reports it, then waits out the backoff (or until the stop deadline).
  // False when the deadline has passed.
  bool Failed(const absl::Status& status, std::chrono::milliseconds* backoff,
              std::condition_variable* cv, std::unique_lock<std::mutex>* l);

  std::unique_ptr<EvidenceStore> store_;  // writer thread only
  std::unique_ptr<StateStore> state_;     // state thread only
  const EvidenceWriterOptions options_;
  const FreshFn on_fresh_;
  const ErrorFn on_error_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // writer: something to do
  std::condition_variable space_cv_;  // submitters: room in pending
  std::condition_variable state_cv_;  // state thread: a checkpoint is due
  std::deque<CheckpointItem> checkpoints_ ABSL_GUARDED_BY(mu_);
  bool records_done_ ABSL_GUARDED_BY(mu_) = false;  // writer thread ended
  bool state_healthy_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<Item> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;  // tickets issued
  uint64_t committed_ ABSL_GUARDED_BY(mu_) = 0;  // tickets durable
  // Acknowledgements waiting for a ticket to be durable, in ticket order.
  std::deque<std::pair<uint64_t, std::function<void()>>> waiting_
      ABSL_GUARDED_BY(mu_);
  // Acknowledgements waiting for a checkpoint, by the epoch it must pass.
  std::map<uint64_t, std::vector<std::function<void()>>> ckpt_waiting_
      ABSL_GUARDED_BY(mu_);
  uint64_t durable_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  size_t checkpoints_pending_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t checkpoint_bytes_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point submit_deadline_ ABSL_GUARDED_BY(mu_) =
      std::chrono::steady_clock::time_point::max();
  std::chrono::steady_clock::time_point deadline_ ABSL_GUARDED_BY(mu_);
  EvidenceWriterStats stats_ ABSL_GUARDED_BY(mu_);
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  bool started_ = false;
  std::thread thread_;
  std::thread state_thread_;
};

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_EVIDENCE_WRITER_H_
