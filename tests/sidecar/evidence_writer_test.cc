#include "sidecar/evidence_writer.h"

#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

namespace fs = std::filesystem;

EvidenceRecord Rec(int i) {
  // Move-assigned strings: GCC 12 reports a false -Wrestrict on
  // assignments of short literals here.
  EvidenceRecord r;
  r.id = absl::StrCat("id-", i);
  r.rule = std::string("r");
  r.kind = std::string("monotonic");
  r.severity = std::string("critical");
  r.key_json = std::string("{}");
  r.observed_json = std::string("null");
  r.previous_json = std::string("null");
  r.source = std::string("s");
  r.line = static_cast<uint64_t>(i);
  r.witness = absl::StrCat("event ", i);
  return r;
}

// A second connection holding the database's write lock, so that the
// writer's commits fail (SQLITE_BUSY) until Release(). Closed on scope exit,
// also when an assertion returns early.
class WriteLockHolder {
 public:
  explicit WriteLockHolder(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr),
              SQLITE_OK);
  }
  ~WriteLockHolder() { Release(); }
  void Release() {
    if (db_ == nullptr) return;
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  sqlite3* db_ = nullptr;
};

// Collects what on_fresh and on_error saw.
struct Observed {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> fresh;  // payloads, in commit order
  std::vector<absl::Status> errors;
  std::vector<double> commit_seconds;      // on_commit_seconds
  std::vector<double> checkpoint_seconds;  // on_checkpoint_seconds
};

std::unique_ptr<EvidenceWriter> MakeWriter(const std::string& path,
                                           Observed* seen,
                                           int busy_timeout_ms = 5000) {
  auto store = EvidenceStore::Open(path, false, busy_timeout_ms);
  EXPECT_TRUE(store.ok()) << store.status();
  EvidenceWriterOptions o;
  o.backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  o.on_commit_seconds = [seen](double sec) {
    std::lock_guard<std::mutex> l(seen->mu);
    seen->commit_seconds.push_back(sec);
  };
  o.on_checkpoint_seconds = [seen](double sec) {
    std::lock_guard<std::mutex> l(seen->mu);
    seen->checkpoint_seconds.push_back(sec);
  };
  // The rule-state checkpoints in their own database next to it.
  auto state = StateStore::Open(path + ".state", false, busy_timeout_ms);
  EXPECT_TRUE(state.ok()) << state.status();
  return std::make_unique<EvidenceWriter>(
      *std::move(store), o,
      [seen](const EvidenceRecord&, const std::string& payload) {
        std::lock_guard<std::mutex> l(seen->mu);
        seen->fresh.push_back(payload);
      },
      [seen](const absl::Status& st) {
        std::lock_guard<std::mutex> l(seen->mu);
        seen->errors.push_back(st);
        seen->cv.notify_all();
      },
      *std::move(state));
}

TEST(EvidenceWriterTest, AcksRunOnlyAfterEarlierRecordsAreDurable) {
  TempDir dir;
  Observed seen;
  auto w = MakeWriter(dir.File("e.db"), &seen);
  // Nothing pending: the acknowledgement runs at once, in the caller.
  bool immediate = false;
  w->WhenDurable([&] { immediate = true; });
  EXPECT_TRUE(immediate);

  // Before Start nothing commits: an ack after a submission waits.
  w->Submit(Rec(1), "one");
  std::promise<uint64_t> acked;
  std::atomic<bool> ran{false};
  const std::string path = dir.File("e.db");
  w->WhenDurable([&] {
    ran = true;
    // The record submitted before is readable from another connection.
    auto reader = EvidenceStore::Open(path, /*read_only=*/true);
    acked.set_value(reader.ok() ? (*reader)->head_seq() : 0);
  });
  auto future = acked.get_future();
  EXPECT_FALSE(ran.load());  // no writer thread yet: it cannot have run
  w->Start();
  EXPECT_EQ(future.get(), 1u);
  ASSERT_TRUE(w->Stop());
  std::lock_guard<std::mutex> l(seen.mu);
  EXPECT_EQ(seen.fresh, std::vector<std::string>{"one"});
}

TEST(EvidenceWriterTest, ConcurrentSubmittersLoseAndDoubleNothing) {
  TempDir dir;
  Observed seen;
  auto w = MakeWriter(dir.File("e.db"), &seen);
  w->Start();
  constexpr int kThreads = 4;
  constexpr int kEach = 500;
  std::atomic<int> acks{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        // Every id twice: the second is a re-evaluation.
        const int id = t * kEach + i;
        w->Submit(Rec(id), absl::StrCat(id));
        w->Submit(Rec(id), absl::StrCat(id));
        w->WhenDurable([&] { acks.fetch_add(1); });
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(w->Stop());
  EXPECT_EQ(acks.load(), kThreads * kEach);
  const EvidenceWriterStats s = w->Stats();
  EXPECT_EQ(s.stored, uint64_t{kThreads * kEach});
  EXPECT_EQ(s.duplicates, uint64_t{kThreads * kEach});
  EXPECT_EQ(s.pending, 0u);
  // Group commit: far fewer transactions than records.
  EXPECT_LT(s.commits, s.submitted);
  std::lock_guard<std::mutex> l(seen.mu);
  EXPECT_EQ(seen.fresh.size(), size_t{kThreads * kEach});
  auto store = EvidenceStore::Open(dir.File("e.db"), true);
  ASSERT_TRUE(store.ok());
  auto v = (*store)->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records, uint64_t{kThreads * kEach});
}

// While the store cannot commit (another connection holds the write lock),
// nothing waiting on the commit is acknowledged and the writer reports
// unhealthy; once the lock is released everything commits, in order.
TEST(EvidenceWriterTest, FailedCommitsHoldAcksAndRetry) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto w = MakeWriter(path, &seen, /*busy_timeout_ms=*/1);
  WriteLockHolder blocker(path);  // destroyed before w: never a hang
  w->Start();
  std::atomic<bool> acked{false};
  w->Submit(Rec(1), "one");
  w->Submit(Rec(2), "two");
  w->WhenDurable([&] { acked = true; });
  {
    // Until the writer has failed (and retried) at least twice.
    std::unique_lock<std::mutex> l(seen.mu);
    ASSERT_TRUE(seen.cv.wait_for(l, std::chrono::seconds(60),
                                 [&] { return seen.errors.size() >= 2; }));
  }
  ASSERT_GE(w->Stats().failures, 2u);
  EXPECT_FALSE(w->healthy());
  EXPECT_FALSE(acked.load());
  EXPECT_FALSE(w->Stats().last_error.empty());
  blocker.Release();
  ASSERT_TRUE(w->Stop());
  EXPECT_TRUE(acked.load());
  EXPECT_TRUE(w->healthy());
  std::lock_guard<std::mutex> l(seen.mu);
  EXPECT_EQ(seen.fresh, (std::vector<std::string>{"one", "two"}));
  EXPECT_FALSE(seen.errors.empty());
  // Only the commits that succeeded are timed, each once.
  EXPECT_EQ(seen.commit_seconds.size(), w->Stats().commits);
  EXPECT_GE(seen.commit_seconds.size(), 1u);
  for (double sec : seen.commit_seconds) EXPECT_GE(sec, 0.0);
}

// Stop with a deadline while commits keep failing: the records stay
// uncommitted and their acknowledgements never run.
TEST(EvidenceWriterTest, StopGivesUpAtTheDeadlineWithoutAcking) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto w = MakeWriter(path, &seen, /*busy_timeout_ms=*/1);
  WriteLockHolder blocker(path);
  w->Start();
  bool acked = false;
  w->Submit(Rec(1), "one");
  w->WhenDurable([&] { acked = true; });
  EXPECT_FALSE(w->Stop(std::chrono::steady_clock::now() +
                       std::chrono::milliseconds(50)));
  EXPECT_FALSE(acked);
  EXPECT_EQ(w->Stats().pending, 1u);
}

// Records of epoch e are acknowledged only once a checkpoint of a larger
// epoch is committed; the checkpoint commits only after the records
// submitted before it (its own database, written by its own thread).
TEST(EvidenceWriterTest, CheckpointGateWaitsForTheCoveringCheckpoint) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto w = MakeWriter(path, &seen);
  w->Start();
  std::atomic<int> acked_epoch1{0};
  std::promise<bool> epoch0;
  // When checkpoint 1 is durable, the record before it must be too.
  w->WhenCheckpointed(0, [&] {
    auto reader = EvidenceStore::Open(path, /*read_only=*/true);
    epoch0.set_value(reader.ok() && (*reader)->head_seq() == 1);
  });
  w->WhenCheckpointed(1, [&] { ++acked_epoch1; });
  w->Submit(Rec(1), "one");
  StateCheckpoint c;
  c.full = true;
  c.workers = 1;
  c.parts = {"window-1", "worker-1"};
  w->SubmitCheckpoint(1, c);
  auto f = epoch0.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(f.get());
  EXPECT_EQ(acked_epoch1.load(), 0);  // needs checkpoint 2
  EXPECT_EQ(w->Stats().checkpoint_epoch, 1u);
  c.full = false;
  c.keep = 2;
  c.parts = {"window-2", "worker-2"};
  w->SubmitCheckpoint(2, c);
  ASSERT_TRUE(w->Stop());
  EXPECT_EQ(acked_epoch1.load(), 1);
  EXPECT_EQ(w->Stats().checkpoints, 2u);
  EXPECT_EQ(w->UncommittedCheckpoints(), 0u);
  {
    // One timing per state transaction (both checkpoints may share one).
    std::lock_guard<std::mutex> l(seen.mu);
    EXPECT_GE(seen.checkpoint_seconds.size(), 1u);
    EXPECT_LE(seen.checkpoint_seconds.size(), 2u);
    EXPECT_EQ(seen.commit_seconds.size(), w->Stats().commits);
  }
  // Both images are stored, the full one first.
  auto state = StateStore::Open(path + ".state");
  ASSERT_TRUE(state.ok());
  auto st = (*state)->Load();
  ASSERT_TRUE(st.ok() && st->has_value());
  EXPECT_EQ((*st)->parts[1],
            (std::vector<std::string>{"worker-1", "worker-2"}));
}

// A checkpoint waits for the records submitted before it: while their
// commits fail, it is not written (and nothing is acknowledged), even
// though its own store is fine; it counts as uncommitted, with its bytes.
TEST(EvidenceWriterTest, CheckpointWaitsForTheRecordsBeforeIt) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto w = MakeWriter(path, &seen, /*busy_timeout_ms=*/1);
  WriteLockHolder blocker(path);
  w->Start();
  w->Submit(Rec(1), "one");
  StateCheckpoint c;
  c.full = true;
  c.workers = 1;
  c.parts = {"window", "worker"};
  w->SubmitCheckpoint(1, c);
  std::atomic<bool> acked{false};
  w->WhenCheckpointed(0, [&] { acked = true; });
  {
    std::unique_lock<std::mutex> l(seen.mu);
    ASSERT_TRUE(seen.cv.wait_for(l, std::chrono::seconds(60),
                                 [&] { return seen.errors.size() >= 2; }));
  }
  uint64_t bytes = 0;
  EXPECT_EQ(w->UncommittedCheckpoints(&bytes), 1u);
  EXPECT_EQ(bytes, 12u);
  EXPECT_FALSE(acked.load());
  EXPECT_EQ(w->Stats().checkpoints, 0u);
  blocker.Release();  // the evidence store recovers: both commit, in order
  ASSERT_TRUE(w->Stop());
  EXPECT_TRUE(acked.load());
  EXPECT_EQ(w->Stats().checkpoints, 1u);
}

// With the backlog full and commits failing, Submit blocks (backpressure)
// until shutdown begins; then it returns, so the pipeline can drain and
// stop, and nothing of it is acknowledged.
TEST(EvidenceWriterTest, ShutdownReleasesSubmittersBlockedOnAFailingStore) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto store = EvidenceStore::Open(path, false, /*busy_timeout_ms=*/1);
  ASSERT_TRUE(store.ok());
  EvidenceWriterOptions o;
  o.max_pending = 1;
  o.backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  EvidenceWriter w(
      *std::move(store), o, [](const EvidenceRecord&, const std::string&) {},
      [](const absl::Status&) {});
  WriteLockHolder blocker(path);
  w.Start();
  w.Submit(Rec(1), "one");
  std::promise<void> returned;
  std::thread submitter([&] {
    w.Submit(Rec(2), "two");  // blocks: the backlog is full
    w.Submit(Rec(3), "three");
    returned.set_value();
  });
  auto done = returned.get_future();
  EXPECT_EQ(done.wait_for(std::chrono::milliseconds(100)),
            std::future_status::timeout);
  w.BeginShutdown(std::chrono::steady_clock::now());
  EXPECT_EQ(done.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  submitter.join();
  bool acked = false;
  w.WhenDurable([&] { acked = true; });
  EXPECT_FALSE(
      w.Stop(std::chrono::steady_clock::now() + std::chrono::milliseconds(20)));
  EXPECT_FALSE(acked);
}

// RELIABILITY.md R10, disk full: SQLite's own SQLITE_FULL (the database
// capped with max_page_count, the same error path as a full filesystem).
// Neither the records' nor a checkpoint's acknowledgements run, the error
// is surfaced, and the writer stays unhealthy until a commit succeeds.
TEST(EvidenceWriterTest, DiskFullHoldsEveryAckAndSaysWhy) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto store = EvidenceStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ(sqlite3_exec((*store)->db(), "PRAGMA max_page_count = 12", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  EvidenceWriterOptions o;
  o.backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  auto state = StateStore::Open(path + ".state");
  ASSERT_TRUE(state.ok()) << state.status();
  EvidenceWriter w(
      *std::move(store), o, [](const EvidenceRecord&, const std::string&) {},
      [&seen](const absl::Status& st) {
        std::lock_guard<std::mutex> l(seen.mu);
        seen.errors.push_back(st);
        seen.cv.notify_all();
      },
      *std::move(state));
  w.Start();
  std::atomic<bool> record_acked{false};
  std::atomic<bool> checkpoint_acked{false};
  EvidenceRecord big = Rec(1);
  big.witness.assign(256 << 10, 'w');  // more than the 12 pages allowed
  w.Submit(std::move(big), "big");
  w.WhenDurable([&] { record_acked = true; });
  StateCheckpoint c;
  c.full = true;
  c.workers = 1;
  c.parts = {"window", "worker"};
  w.SubmitCheckpoint(1, std::move(c));
  w.WhenCheckpointed(0, [&] { checkpoint_acked = true; });
  {
    std::unique_lock<std::mutex> l(seen.mu);
    ASSERT_TRUE(seen.cv.wait_for(l, std::chrono::seconds(60),
                                 [&] { return seen.errors.size() >= 2; }));
    EXPECT_NE(seen.errors[0].message().find("full"), std::string::npos)
        << seen.errors[0];
  }
  EXPECT_FALSE(w.healthy());
  EXPECT_NE(w.Stats().last_error.find("full"), std::string::npos);
  EXPECT_FALSE(
      w.Stop(std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
  EXPECT_FALSE(record_acked.load());
  EXPECT_FALSE(checkpoint_acked.load());
  EXPECT_EQ(w.Stats().checkpoints, 0u);
}

// R10 for the state store: its disk is full while the evidence store's is
// not. The records commit and are counted, but no checkpoint does, so no
// input is acknowledged; the error is surfaced and the writer unhealthy.
TEST(EvidenceWriterTest, StateStoreFullHoldsTheCheckpointAcks) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  Observed seen;
  auto store = EvidenceStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto state = StateStore::Open(path + ".state");
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(sqlite3_exec((*state)->db(), "PRAGMA max_page_count = 8", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  EvidenceWriterOptions o;
  o.backoff = std::chrono::milliseconds(5);
  o.max_backoff = std::chrono::milliseconds(20);
  EvidenceWriter w(
      *std::move(store), o, [](const EvidenceRecord&, const std::string&) {},
      [&seen](const absl::Status& st) {
        std::lock_guard<std::mutex> l(seen.mu);
        seen.errors.push_back(st);
        seen.cv.notify_all();
      },
      *std::move(state));
  w.Start();
  w.Submit(Rec(1), "one");
  std::promise<void> durable;
  w.WhenDurable([&] { durable.set_value(); });
  StateCheckpoint c;
  c.full = true;
  c.workers = 1;
  c.parts = {"window", std::string(1 << 20, 's')};  // more than 8 pages
  w.SubmitCheckpoint(1, std::move(c));
  std::atomic<bool> acked{false};
  w.WhenCheckpointed(0, [&] { acked = true; });
  ASSERT_EQ(durable.get_future().wait_for(std::chrono::seconds(60)),
            std::future_status::ready);  // the evidence is fine
  {
    std::unique_lock<std::mutex> l(seen.mu);
    ASSERT_TRUE(seen.cv.wait_for(l, std::chrono::seconds(60),
                                 [&] { return seen.errors.size() >= 2; }));
    EXPECT_NE(seen.errors[0].message().find("full"), std::string::npos)
        << seen.errors[0];
  }
  EXPECT_FALSE(w.healthy());
  EXPECT_EQ(w.Stats().stored, 1u);
  EXPECT_FALSE(
      w.Stop(std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
  EXPECT_FALSE(acked.load());
  EXPECT_EQ(w.Stats().checkpoints, 0u);
}

}  // namespace
}  // namespace invariantd
