// StateStore: the rule-state checkpoints (sidecar/pipeline) in their own
// SQLite database next to the evidence store (data-dir/state.db).
//
// Its own file, so that writing a checkpoint (megabytes at high rates)
// never holds up an evidence commit: SQLite has one writer per database,
// and violations must reach the evidence store within milliseconds. The
// order that matters -- a checkpoint becomes durable only after the
// evidence of everything evaluated before it -- is kept by the writer
// (sidecar/evidence_writer), which commits a checkpoint only once that
// evidence is committed.
//
// Layout: state_image(seq, part, chunk, full, data, checksum) -- one row
// per chunk of each part of each checkpoint, with an XXH3 checksum; the
// `full` column holds the checkpoint's keep (1: complete by itself) --
// state_meta (workers and rule-set digest of the last full checkpoint) and
// state_position (the last evaluated offset per stream, replaced whole).
#ifndef INVARIANTD_EXPORTERS_EVIDENCE_STATE_STORE_H_
#define INVARIANTD_EXPORTERS_EVIDENCE_STATE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sidecar/core/binary.h"

struct sqlite3;

namespace invariantd {

// One rule-state checkpoint (sidecar/pipeline): the engines' images --
// part 0 the dispatcher's (redelivery window), parts 1..workers the
// workers' -- and the last evaluated position of every stream.
struct StateCheckpoint {
  bool full = false;  // replaces everything stored before
  // How many checkpoints, this one included, a restore applies: the older
  // ones are deleted with it. 0: every one since the last full one.
  uint64_t keep = 0;
  int workers = 0;
  std::string ruleset_digest;
  std::vector<Pieces> parts;
  std::vector<std::pair<std::string, uint64_t>> positions;
};

// What Load returns: per part, the images to apply in order (a full
// one, or the first of a complete round of slices, then the rest).
struct StoredState {
  int workers = 0;
  std::string ruleset_digest;
  std::vector<std::vector<std::string>> parts;
  std::vector<std::pair<std::string, uint64_t>> positions;
  uint64_t checkpoints = 0;  // how many, each with an image per part
  uint64_t images = 0;
  uint64_t bytes = 0;
};

class StateStore {
 public:
  static constexpr size_t kChunkBytes = size_t{64} << 20;

  // Opens (creating it unless read_only) the state database at `path`. A
  // file that is another application's database or a newer format is
  // refused; `check_pages` runs SQLite's structural check first (PRAGMA
  // quick_check), refusing a torn or truncated file with DataLoss.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      const std::string& path, bool read_only = false,
      int busy_timeout_ms = 5000, bool check_pages = false);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Writes checkpoints, in order, in one transaction. A full checkpoint
  // replaces the stored state; any other is added after it, and the ones a
  // restore no longer needs (beyond its keep) are deleted. Images are
  // stored in rows of at most `chunk_bytes`, each with a checksum.
  absl::Status Write(const std::vector<const StateCheckpoint*>& checkpoints,
                     size_t chunk_bytes = kChunkBytes);
  absl::Status Write(const StateCheckpoint& c,
                     size_t chunk_bytes = kChunkBytes) {
    return Write(std::vector<const StateCheckpoint*>{&c}, chunk_bytes);
  }
  // The stored checkpoint (nullopt when there is none). DataLoss when an
  // image fails its checksum, a chunk or a checkpoint the newest one needs
  // is missing, or (older stores) the sequence does not start with a full
  // image.
  absl::StatusOr<std::optional<StoredState>> Load();

  // The connection (tests damage it on purpose). One thread at a time.
  sqlite3* db() const { return db_; }

 private:
  explicit StateStore(sqlite3* db) : db_(db) {}
  absl::Status Init(bool read_only, bool check_pages);
  absl::Status WriteOne(const StateCheckpoint& c, size_t chunk_bytes);

  sqlite3* db_;
};

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_EVIDENCE_STATE_STORE_H_
