#include "sidecar/evidence_writer.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "sidecar/core/thread_priority.h"

namespace invariantd {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t)
      .count();
}

}  // namespace

EvidenceWriter::EvidenceWriter(std::unique_ptr<EvidenceStore> store,
                               EvidenceWriterOptions options, FreshFn on_fresh,
                               ErrorFn on_error,
                               std::unique_ptr<StateStore> state)
    : store_(std::move(store)),
      state_(std::move(state)),
      options_(options),
      on_fresh_(std::move(on_fresh)),
      on_error_(std::move(on_error)) {
  stats_.head_seq = store_->head_seq();
  stats_.head_hash = store_->head_hash();
}

EvidenceWriter::~EvidenceWriter() { Stop(); }

void EvidenceWriter::Start() {
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] {
    NameThisThread("inv-evidence");
    JoinViolationPath();  // sidecar/core/thread_priority.h
    Run();
  });
  if (state_)
    state_thread_ = std::thread([this] {
      NameThisThread("inv-state");
      RunState();
    });
}

bool EvidenceWriter::Stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return pending_.empty() && checkpoints_.empty();
    stop_ = true;
    deadline_ = deadline;
  }
  work_cv_.notify_all();
  state_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    records_done_ = true;
  }
  state_cv_.notify_all();
  if (state_thread_.joinable()) state_thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  space_cv_.notify_all();
  return pending_.empty() && checkpoints_.empty();
}

void EvidenceWriter::BeginShutdown(
    std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> l(mu_);
    submit_deadline_ = deadline;
  }
  space_cv_.notify_all();
}

void EvidenceWriter::Submit(EvidenceRecord record, std::string payload) {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_ && pending_.size() >= options_.max_pending &&
         std::chrono::steady_clock::now() < submit_deadline_) {
    if (submit_deadline_ == std::chrono::steady_clock::time_point::max()) {
      space_cv_.wait(l);
    } else {
      space_cv_.wait_until(l, submit_deadline_);
    }
  }
  Item item;
  item.record = std::move(record);
  item.payload = std::move(payload);
  pending_.push_back(std::move(item));
  ++submitted_;
  ++stats_.submitted;
  if (pending_.size() == 1 || pending_.size() >= options_.max_batch) {
    work_cv_.notify_one();
  }
}

void EvidenceWriter::SubmitCheckpoint(uint64_t epoch,
                                      StateCheckpoint checkpoint) {
  if (!state_) std::abort();  // a writer without a state store (see ctor)
  std::lock_guard<std::mutex> l(mu_);
  // Not bounded by max_pending: one per checkpoint interval, and holding
  // it back would hold back every acknowledgement.
  CheckpointItem item;
  item.epoch = epoch;
  item.after = submitted_;
  for (const Pieces& p : checkpoint.parts) item.bytes += p.size();
  item.checkpoint = std::move(checkpoint);
  checkpoint_bytes_pending_ += item.bytes;
  checkpoints_.push_back(std::move(item));
  ++checkpoints_pending_;
  state_cv_.notify_one();
}

size_t EvidenceWriter::UncommittedCheckpoints(uint64_t* bytes) const {
  std::lock_guard<std::mutex> l(mu_);
  if (bytes != nullptr) *bytes = checkpoint_bytes_pending_;
  return checkpoints_pending_;
}

void EvidenceWriter::WhenCheckpointed(uint64_t epoch,
                                      std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (durable_epoch_ <= epoch) {
      ckpt_waiting_[epoch].push_back(std::move(fn));
      return;
    }
  }
  fn();
}

void EvidenceWriter::WhenDurable(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (committed_ != submitted_) {
      waiting_.emplace_back(submitted_, std::move(fn));
      return;
    }
  }
  fn();
}

EvidenceWriterStats EvidenceWriter::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  EvidenceWriterStats s = stats_;
  s.pending = submitted_ - committed_;
  s.wal = store_->wal_stats();  // thread-safe (its own lock)
  return s;
}

bool EvidenceWriter::healthy() const {
  std::lock_guard<std::mutex> l(mu_);
  return healthy_ && state_healthy_;
}

bool EvidenceWriter::Failed(const absl::Status& status,
                            std::chrono::milliseconds* backoff,
                            std::condition_variable* cv,
                            std::unique_lock<std::mutex>* l) {
  ++stats_.failures;
  stats_.last_error = std::string(status.message());
  l->unlock();
  on_error_(status);  // after the stats say so
  l->lock();
  if (stop_ && std::chrono::steady_clock::now() >= deadline_) return false;
  space_cv_.notify_all();
  // Until the next retry, or the stop deadline when it comes first.
  auto until = std::chrono::steady_clock::now() + *backoff;
  if (stop_) until = std::min(until, deadline_);
  cv->wait_until(*l, until, [&] {
    return stop_ && std::chrono::steady_clock::now() >= deadline_;
  });
  *backoff = std::min(*backoff * 2, options_.max_backoff);
  return true;
}

void EvidenceWriter::Run() {
  std::vector<Item> batch;
  std::vector<EvidenceRecord> records;
  std::vector<std::function<void()>> ready;
  auto backoff = options_.backoff;
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    work_cv_.wait(l, [&] { return stop_ || !pending_.empty(); });
    if (pending_.empty()) break;  // stopping, and all committed
    if (options_.commit_interval.count() > 0 && !stop_ &&
        pending_.size() < options_.max_batch) {
      // Group commit: let more records arrive for one fsync.
      work_cv_.wait_for(l, options_.commit_interval, [&] {
        return stop_ || pending_.size() >= options_.max_batch;
      });
    }
    const size_t n = std::min(pending_.size(), options_.max_batch);
    batch.assign(std::make_move_iterator(pending_.begin()),
                 std::make_move_iterator(pending_.begin() +
                                         static_cast<std::ptrdiff_t>(n)));
    pending_.erase(pending_.begin(),
                   pending_.begin() + static_cast<std::ptrdiff_t>(n));
    l.unlock();

    records.clear();
    for (Item& item : batch) records.push_back(std::move(item.record));
    const auto began = std::chrono::steady_clock::now();
    absl::StatusOr<size_t> added = store_->Append(&records);
    if (added.ok() && options_.on_commit_seconds) {
      options_.on_commit_seconds(SecondsSince(began));
    }
    if (!added.ok()) {
      for (size_t i = 0; i < n; ++i) batch[i].record = std::move(records[i]);
      l.lock();
      // Back at the front, in order: nothing is skipped or reordered.
      pending_.insert(pending_.begin(), std::make_move_iterator(batch.begin()),
                      std::make_move_iterator(batch.end()));
      healthy_ = false;
      if (!Failed(added.status(), &backoff, &work_cv_, &l)) break;
      continue;
    }
    backoff = options_.backoff;
    for (size_t i = 0; i < n; ++i) {
      if (records[i].seq != 0) on_fresh_(records[i], batch[i].payload);
    }
    l.lock();
    committed_ += n;
    state_cv_.notify_one();  // a checkpoint may be due now
    ++stats_.commits;
    stats_.stored += *added;
    stats_.duplicates += records.size() - *added;
    stats_.head_seq = store_->head_seq();
    stats_.head_hash = store_->head_hash();
    stats_.last_error.clear();
    healthy_ = true;
    while (!waiting_.empty() && waiting_.front().first <= committed_) {
      ready.push_back(std::move(waiting_.front().second));
      waiting_.pop_front();
    }
    space_cv_.notify_all();
    if (!ready.empty()) {
      l.unlock();
      for (auto& fn : ready) fn();
      ready.clear();
      l.lock();
    }
  }
}

void EvidenceWriter::RunState() {
  // Off the path of a violation to its commit: lets the evidence writer
  // and the workers have the cores first (sidecar/core/thread_priority.h).
  LowerThisThreadPriority();
  std::vector<CheckpointItem> batch;
  std::vector<const StateCheckpoint*> write;
  std::vector<std::function<void()>> ready;
  auto backoff = options_.backoff;
  std::unique_lock<std::mutex> l(mu_);
  auto due = [&] {
    return !checkpoints_.empty() && checkpoints_.front().after <= committed_;
  };
  while (true) {
    // Due once the records submitted before it are committed. Stopping:
    // ends when none is left, or none can become due (the records before
    // it were not committed by the deadline).
    state_cv_.wait(l, [&] {
      return due() || (stop_ && (checkpoints_.empty() || records_done_));
    });
    if (!due()) break;
    // Every due checkpoint, in one transaction.
    batch.clear();
    while (due()) {
      batch.push_back(std::move(checkpoints_.front()));
      checkpoints_.pop_front();
    }
    l.unlock();
    write.clear();
    for (const CheckpointItem& c : batch) write.push_back(&c.checkpoint);
    const auto began = std::chrono::steady_clock::now();
    const absl::Status st = state_->Write(write);
    if (st.ok() && options_.on_checkpoint_seconds) {
      options_.on_checkpoint_seconds(SecondsSince(began));
    }
    l.lock();
    if (!st.ok()) {
      checkpoints_.insert(checkpoints_.begin(),
                          std::make_move_iterator(batch.begin()),
                          std::make_move_iterator(batch.end()));
      state_healthy_ = false;
      if (!Failed(st, &backoff, &state_cv_, &l)) break;
      continue;
    }
    backoff = options_.backoff;
    state_healthy_ = true;
    stats_.checkpoints += batch.size();
    checkpoints_pending_ -= batch.size();
    for (const CheckpointItem& c : batch) checkpoint_bytes_pending_ -= c.bytes;
    durable_epoch_ = std::max(durable_epoch_, batch.back().epoch);
    stats_.checkpoint_epoch = durable_epoch_;
    while (!ckpt_waiting_.empty() &&
           ckpt_waiting_.begin()->first < durable_epoch_) {
      for (auto& fn : ckpt_waiting_.begin()->second) {
        ready.push_back(std::move(fn));
      }
      ckpt_waiting_.erase(ckpt_waiting_.begin());
    }
    if (!ready.empty()) {
      l.unlock();
      for (auto& fn : ready) fn();
      ready.clear();
      l.lock();
    }
  }
}

}  // namespace invariantd
