#include "sidecar/evidence_writer.h"

#include <algorithm>
#include <iterator>

namespace invariantd {

EvidenceWriter::EvidenceWriter(std::unique_ptr<EvidenceStore> store,
                               EvidenceWriterOptions options, FreshFn on_fresh,
                               ErrorFn on_error)
    : store_(std::move(store)),
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
  thread_ = std::thread([this] { Run(); });
}

bool EvidenceWriter::Stop(std::chrono::steady_clock::time_point deadline) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return pending_.empty();
    stop_ = true;
    deadline_ = deadline;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> l(mu_);
  space_cv_.notify_all();
  return pending_.empty();
}

void EvidenceWriter::Submit(EvidenceRecord record, std::string payload) {
  std::unique_lock<std::mutex> l(mu_);
  space_cv_.wait(
      l, [&] { return stop_ || pending_.size() < options_.max_pending; });
  pending_.push_back(Item{std::move(record), std::move(payload)});
  ++submitted_;
  ++stats_.submitted;
  if (pending_.size() == 1 || pending_.size() >= options_.max_batch) {
    work_cv_.notify_one();
  }
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
  return s;
}

bool EvidenceWriter::healthy() const {
  std::lock_guard<std::mutex> l(mu_);
  return healthy_;
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
    absl::StatusOr<size_t> added = store_->Append(&records);
    if (!added.ok()) {
      for (size_t i = 0; i < n; ++i) batch[i].record = std::move(records[i]);
      l.lock();
      // Back at the front, in order: nothing is skipped or reordered.
      pending_.insert(pending_.begin(), std::make_move_iterator(batch.begin()),
                      std::make_move_iterator(batch.end()));
      ++stats_.failures;
      stats_.last_error = std::string(added.status().message());
      healthy_ = false;
      l.unlock();
      on_error_(added.status());  // after the stats say so
      l.lock();
      if (stop_ && std::chrono::steady_clock::now() >= deadline_) break;
      space_cv_.notify_all();
      work_cv_.wait_for(l, backoff, [&] {
        return stop_ && std::chrono::steady_clock::now() >= deadline_;
      });
      backoff = std::min(backoff * 2, options_.max_backoff);
      continue;
    }
    backoff = options_.backoff;
    for (size_t i = 0; i < n; ++i) {
      if (records[i].seq != 0) on_fresh_(records[i], batch[i].payload);
    }
    l.lock();
    committed_ += n;
    ++stats_.commits;
    stats_.stored += *added;
    stats_.duplicates += n - *added;
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

}  // namespace invariantd
