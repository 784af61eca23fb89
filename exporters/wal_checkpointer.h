// WalCheckpointer: moves the WAL checkpoints of one SQLite database off
// the thread that commits to it.
//
// By default SQLite checkpoints inside a commit: the commit that takes the
// WAL over its threshold also copies the WAL into the database file and
// fsyncs that file. That file grows as rows are appended, so its fsync
// needs a journal commit of the file system, which waits for whatever else
// is being written there (on ext4 in ordered mode: the data of other files
// too). Measured on the evidence store under a 245k events/s tailed load:
// single commits of 20-110 ms, against 0.2-0.5 ms for an fsync of data
// that only overwrites blocks the WAL already has.
//
// With a checkpointer the committing connection's own checkpoints are off
// (wal_autocheckpoint=0). A hook on that connection notices when the WAL
// holds `frames` frames and wakes a thread that checkpoints from a second
// connection (PASSIVE: it never blocks the writer; SQLite lets a checkpoint
// and a write transaction run at once in WAL mode). Once a checkpoint has
// copied every frame, the writer's next transaction starts the WAL over
// from its beginning, so commits keep overwriting the same blocks.
//
// A checkpoint that cannot finish (a reader holds an older snapshot, or an
// I/O error) is retried at the next commit; until one finishes the WAL
// grows, as it would with SQLite's own checkpoints.
#ifndef INVARIANTD_EXPORTERS_WAL_CHECKPOINTER_H_
#define INVARIANTD_EXPORTERS_WAL_CHECKPOINTER_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

struct sqlite3;

namespace invariantd {

struct WalCheckpointerStats {
  uint64_t checkpoints = 0;  // checkpoint calls that copied every frame
  uint64_t partial = 0;      // calls that left frames (readers, busy, I/O)
  uint64_t errors = 0;       // calls that failed (I/O error)
};

class WalCheckpointer {
 public:
  // Takes over the checkpoints of `writer` (an open connection in WAL mode
  // to the database at `path`) until destroyed: it must be destroyed
  // before `writer` is closed. `frames`: WAL frames (pages) that wake the
  // thread.
  static absl::StatusOr<std::unique_ptr<WalCheckpointer>> Start(
      sqlite3* writer, const std::string& path, int frames);
  // Stops the thread and gives the writer its own checkpoints back.
  ~WalCheckpointer();
  WalCheckpointer(const WalCheckpointer&) = delete;
  WalCheckpointer& operator=(const WalCheckpointer&) = delete;

  WalCheckpointerStats Stats() const;
  // Blocks until no checkpoint is wanted or running (tests: after commits
  // that crossed the threshold, the checkpoint they asked for has run).
  void WaitIdleForTest();

 private:
  WalCheckpointer(sqlite3* writer, sqlite3* own, int frames);
  static int Hook(void* self, sqlite3* db, const char* name, int frames);
  void Run();

  sqlite3* const writer_;
  sqlite3* const own_;
  const int frames_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  WalCheckpointerStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_WAL_CHECKPOINTER_H_
