// FileTailer: follows the files matched by a set of glob(3) patterns and
// delivers their complete lines, in order per file, as owned Records to a
// RecordSink, surviving rotation, truncation, deletion and restarts.
//
// User guide
// ----------
//   FileTailer tailer(options, &sink, notice);
//   tailer.Restore(last_checkpoint);      // optional, before Start
//   RETURN_IF_ERROR(tailer.Start());      // one reader thread
//   ... the pipeline calls record.acker->Processed(record.ack_seq) ...
//   checkpoint(tailer.CommittedPositions());
//   tailer.Stop();
//
// Records. For each line: `source` = the path as the glob matched it when the
// file was opened; `line` = 1-based line number within the file (continuing
// from a restored position's line count); `offset` = byte offset of the
// line's first byte; `bytes` = the line without its '\n' and without a
// trailing '\r'. A line longer than `max_line_bytes` is skipped without being
// buffered and delivered with `too_long = true`, empty `bytes` and its
// `length`; the stream stays synchronized (the splitting is LineReader's).
// `meta` is empty. `acker` = the tailer; `ack_seq` = a tailer-wide sequence
// number mapped internally to (file, end offset, line).
//
// Lines are delivered only when complete: a last line without '\n' is held
// back until its newline arrives. (Exception: when a rotated-away or deleted
// file is finally closed, its unterminated last line is delivered as is,
// since nothing can ever complete it.)
//
// Discovery. Every `poll_interval` the globs are expanded again (new files
// are found, rotations and deletions detected) and every open file is
// checked for growth with fstat(2). With `use_inotify`, the directories the
// patterns can match are also watched (IN_CREATE, IN_MOVED_TO, IN_MODIFY,
// ...) so that new data and new files are seen at once; inotify is only an
// optimization, the polling alone is correct. Files found after start, and
// files present at the first start without a saved position, are read from
// offset 0.
//
// Identity. A file is its (dev, ino), not its path.
//   - Rotation by rename + create: the old file is kept open and read by its
//     descriptor to its end; in each round, files that left the glob are read
//     before the files that are still matched, so the tail of the old file
//     is delivered before the head of the new one (which starts at offset 0).
//     The old file is closed once it has not grown for `rotated_grace`
//     (counted in `rotations`, notice "rotated"). A file renamed to a name
//     the glob still matches (e.g. glob "app.log*") simply continues.
//   - Deletion while open: read to its end through the descriptor, then
//     closed after `rotated_grace` (counted in `vanished`, notice
//     "vanished").
//   - copytruncate: a file whose size drops below what was read (same
//     inode), or whose first bytes changed, is read again from offset 0 and
//     line 1 (counted in `truncations`, notice "truncated").
//   - Restore(): saved positions are matched by (dev, ino) among the current
//     glob matches, whatever the file's current name. A match is resumed
//     only if the file is still at least as long as the saved offset and its
//     first `fingerprint_bytes` bytes still hash to `fingerprint` (which
//     catches inode reuse and truncate-then-rewrite while we were down);
//     otherwise it is read from 0 (counted as a truncation). A saved
//     position whose inode is not among the matches is dropped (notice
//     "vanished", counted in `vanished`).
//
// Known limits (documented, not fixable by a tailer):
//   - copytruncate: lines written between the copy and the truncate are in
//     neither file when we read them if they were not read before the
//     truncate; and after a truncate, bytes written up to the old read
//     offset before we notice are indistinguishable from old data unless the
//     file's first bytes changed. Prefer rename+create rotation.
//   - Rotation while down: a file rotated to a name the glob does not match
//     is not found again; lines appended to it after the last checkpoint are
//     lost. Use a glob that also matches the rotated names (and beware that
//     at first start such files are read from offset 0).
//   - Rotated/deleted files are closed after `rotated_grace` without growth;
//     a writer that keeps writing to the old file after that loses lines.
//   - After a truncation, positions (source, line, offset) repeat those of
//     the file's previous content.
//   - One tailer thread reads all files; a file with a large backlog is read
//     in slices (a few MiB) so the others are not starved.
//
// Memory: bounded by the number of open files, one read buffer
// (max_line_bytes + 64 KiB) and the records in flight (bounded by the sink).
//
// Lifetime: the sink and the tailer must outlive every record in flight
// (Processed() is called on the tailer).
//
// Thread-safety: Restore() must be called before Start(). Start() and Stop()
// from one controlling thread. CommittedPositions(), Stats() and Processed()
// may be called from any thread at any time. `notice` is called from the
// tailer thread only (and must not call back into the tailer's Stop()).
// Stop() sets a stop flag checked between lines and wakes the thread; if the
// thread is blocked in sink->Push(), Stop() returns when Push returns, which
// is why the pipeline's sink must return false from Push once it stops.
#ifndef INVARIANTD_INGEST_FILE_TAILER_H_
#define INVARIANTD_INGEST_FILE_TAILER_H_

#include <atomic>
#include <chrono>
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
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "ingest/record.h"

namespace invariantd {

// Where to resume reading one file. This is what the sidecar checkpoints.
struct TailPosition {
  std::string path;  // informational: the file's path when last seen
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t offset = 0;  // next unread byte (the start of a line)
  uint64_t line = 0;    // lines consumed before offset
  // Hash (stable, XXH3) of the file's first `fingerprint_bytes` bytes; 0
  // bytes means "not checked".
  uint64_t fingerprint_bytes = 0;
  uint64_t fingerprint = 0;

  friend bool operator==(const TailPosition&, const TailPosition&) = default;
};

// The `stream` of a file's records (Record::stream): its (device, inode).
inline uint64_t FileStreamId(uint64_t dev, uint64_t ino) {
  return (dev * 0x9E3779B97F4A7C15ULL) ^ ino;
}

struct TailerOptions {
  std::vector<std::string> globs;
  // Period of glob expansion and growth checks (the correctness guarantee).
  std::chrono::milliseconds poll_interval{200};
  size_t max_line_bytes = 1 << 20;
  // Watch directories with inotify to react at once (an optimization).
  bool use_inotify = true;
  // A rotated-away or deleted file is closed once it has not grown for this
  // long (0: as soon as it has been read to its end).
  std::chrono::milliseconds rotated_grace{5000};
};

struct TailStats {
  uint64_t files_open = 0;
  uint64_t rotations = 0;
  uint64_t truncations = 0;
  uint64_t vanished = 0;
  uint64_t bytes_behind = 0;  // sum over open files of size - read offset
  uint64_t lines = 0;         // records delivered (including too_long)
  uint64_t too_long = 0;
};

class FileTailer : public Acker {
 public:
  // event: "opened", "rotated", "truncated", "vanished", "error"; detail is
  // human-readable. `sink` must outlive the tailer.
  using NoticeFn = std::function<void(
      std::string_view event, std::string_view path, std::string_view detail)>;

  FileTailer(TailerOptions options, RecordSink* sink, NoticeFn notice);
  ~FileTailer() override;  // Stop()s
  FileTailer(const FileTailer&) = delete;
  FileTailer& operator=(const FileTailer&) = delete;

  // Positions to resume from (see "Identity" above). Before Start().
  void Restore(const std::vector<TailPosition>& saved);
  // Validates the options and starts the reader thread. InvalidArgument for
  // bad options, FailedPrecondition if already started.
  absl::Status Start();
  // Stops and joins the reader thread; idempotent. Open files are closed;
  // CommittedPositions() stays valid afterwards.
  void Stop();

  // For each file, the position after the last line the pipeline has acked
  // with all earlier lines of that file also acked. Sorted by path.
  std::vector<TailPosition> CommittedPositions() const;
  TailStats Stats() const;
  void Processed(uint64_t ack_seq) override;
  void ProcessedBatch(const uint64_t* ack_seqs, size_t n) override;

 private:
  struct OpenFile;  // reader-thread state of one open file (tailer.cc)
  // ack_seq = file id << kSeqBits | the line's sequence number in its file.
  static constexpr int kSeqBits = 40;
  static constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
  struct InFlight {
    uint64_t seq = 0;         // per file, consecutive
    uint64_t end_offset = 0;  // offset after the line
    uint64_t line = 0;        // the line's number
    bool done = false;
  };
  // Per-file state shared with Processed()/CommittedPositions()/Stats().
  struct Tracked {
    TailPosition committed;          // path, dev, ino, fingerprint, position
    std::deque<InFlight> in_flight;  // consecutive seq
    uint64_t next_seq = 1;           // never reset: stale acks stay below
    bool open = true;
    // Closed for good (rotated away or deleted): forgotten once all acked.
    bool retired = false;
    uint64_t behind = 0;  // size - read offset at the last check
  };
  using FileKey = std::pair<uint64_t, uint64_t>;  // (dev, ino)
  enum class PassResult { kEnd, kBudget, kStopped };

  void Run();
  // Expands the globs, opens new files, detaches files that left them;
  // with `first`, drops the saved positions no match has. False if some
  // expansion failed (nothing was detached or dropped).
  bool Discover(bool first);
  // Reads every open file (detached ones first); true if some file has more
  // to read right away.
  bool ReadAll();
  // Reads `f`; sets *close when a detached file is finished.
  bool ReadFile(OpenFile& f, bool* close);
  // Reads `f` from its position and delivers what it read.
  PassResult Pass(OpenFile& f, bool final);
  PassResult ReadLines(OpenFile& f, bool final);
  // Registers the lines in batch_ as in flight and pushes them to the sink;
  // false if the sink is stopping.
  bool Flush(OpenFile& f);
  // Moves a file's committed position over its leading acked lines.
  void Settle(uint64_t file_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t NewFileId();
  void Restart(OpenFile& f, std::string_view why);
  void UpdateFingerprint(OpenFile& f);
  void CloseFile(OpenFile& f, bool forget);
  // Watches the directories the globs can match; true if one was added.
  bool UpdateWatches();
  // Drains the inotify queue; true if a directory changed (not only data).
  bool DrainInotify();
  void Notice(std::string_view event, std::string_view path,
              std::string_view detail);
  // Notices an error for `path` once until ClearError(path).
  void NoticeErrorOnce(const std::string& path, std::string_view detail);
  void ClearError(const std::string& path);

  const TailerOptions options_;
  RecordSink* const sink_;
  const NoticeFn notice_;

  std::atomic<bool> stop_{false};
  std::atomic<bool> started_{false};
  bool sink_closed_ = false;  // reader thread only
  int wake_fd_ = -1;          // eventfd: Stop() wakes the reader
  int inotify_fd_ = -1;
  int inotify_errno_ = 0;  // why inotify is unavailable (noticed by Run)
  std::thread thread_;
  std::mutex stop_mu_;  // serializes Stop()

  // Reader-thread state.
  std::vector<std::unique_ptr<OpenFile>> files_;
  std::vector<Record> batch_;        // read, not yet delivered
  std::vector<Record> shells_;       // recycled by the sink, to build in
  std::vector<uint64_t> batch_end_;  // offset after each line of batch_
  absl::flat_hash_map<int, std::string> watch_paths_;  // wd -> dir
  absl::flat_hash_set<std::string> watched_dirs_;
  absl::flat_hash_set<std::string> errored_;  // paths with a noticed error

  mutable std::mutex mu_;
  // Saved positions not yet matched to an open file.
  std::map<FileKey, TailPosition> saved_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Tracked> tracked_ ABSL_GUARDED_BY(mu_);
  uint64_t next_file_id_ ABSL_GUARDED_BY(mu_) = 1;
  TailStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_FILE_TAILER_H_
