// EvidenceStore: the durable, tamper-evident record of every violation.
//
// One SQLite database (WAL mode, synchronous=FULL: a commit is on disk when
// Append returns) holding one row per violation, keyed by its deterministic
// id, so re-evaluating the same input after a crash inserts nothing twice.
//
// Hash chain. Rows are numbered by `seq` (1, 2, 3, ... in commit order) and
// each row stores
//     hash = SHA-256("invariantd-evidence-v1" || prev_hash || content)
// where prev_hash is the previous row's hash (32 zero bytes before the
// first) and content is every stored field of the row, each as an 8-byte
// little-endian length followed by its bytes, in the order of
// EvidenceRecord's fields (integers as decimal text). Editing a field,
// deleting a row, or reordering rows breaks the chain at the first
// affected row, which Verify() names. The chain's head (last seq and hash)
// is kept in the `chain` table; deleting the newest rows is detected
// against it, and against a copy of the head kept outside the store (the
// daemon logs the head and exports it as a metric).
//
// Retention. Prune() deletes the oldest rows by age or total size and
// records the last pruned row's seq and hash as the chain's anchor, so the
// remaining chain still verifies from there.
//
// Concurrency: one writer per database (the daemon); any number of readers
// (Open with read_only, e.g. `invariantd evidence query` while the daemon
// runs): WAL lets them read the last committed state without blocking the
// writer. An EvidenceStore object is used by one thread at a time.
#ifndef INVARIANTD_EXPORTERS_EVIDENCE_STORE_H_
#define INVARIANTD_EXPORTERS_EVIDENCE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "exporters/wal_checkpointer.h"

struct sqlite3;

namespace invariantd {
namespace sqlite_internal {
class StmtCache;
}  // namespace sqlite_internal

// One violation as stored. Text fields are stored as given (the raw
// witness bytes exactly); outputs sanitize what they show.
struct EvidenceRecord {
  std::string id;  // deterministic violation id (32 hex digits)
  std::string rule;
  std::string kind;
  std::string severity;
  std::string reason;
  std::string message;
  // Key fields in rule order: (name, value as text). `key_json` is the
  // same as a JSON object, with typed values.
  std::vector<std::pair<std::string, std::string>> key;
  std::string key_json;
  std::string observed_json;  // JSON value (null when absent)
  std::string previous_json;
  // Input position: file path / "kafka:topic/partition" / "http".
  std::string source;
  uint64_t stream = 0;  // file: (device, inode) mix; 0 otherwise
  uint64_t line = 0;
  uint64_t offset = 0;  // file: byte offset; kafka: offset; http: batch id
  uint64_t previous_line = 0;
  std::string witness;           // raw bytes of the offending event
  std::string ruleset_digest;    // digest of the rule set that judged it
  std::string version;           // invariantd version
  int64_t detected_unix_ms = 0;  // informative only: never used to order

  // Set by the store.
  uint64_t seq = 0;
  std::string prev_hash;  // hex
  std::string hash;       // hex
};

struct EvidenceQuery {
  std::string rule;                                      // "" = any
  std::vector<std::pair<std::string, std::string>> key;  // all must match
  int64_t since_unix_ms = 0;                             // 0 = unbounded
  int64_t until_unix_ms = 0;                             // 0 = unbounded
  uint64_t after_seq = 0;  // cursor: rows with a larger seq
  size_t limit = 100;
};

struct EvidenceVerify {
  bool ok = false;
  uint64_t records = 0;     // rows checked
  uint64_t bad_seq = 0;     // first row that breaks the chain (0: none)
  std::string bad_id;       // its id, when the row exists
  std::string problem;      // what is wrong, for a human
  uint64_t head_seq = 0;    // the verified head
  std::string head_hash;    // hex
  uint64_t anchor_seq = 0;  // rows up to here were pruned
};

struct EvidencePrune {
  uint64_t pruned = 0;      // rows deleted
  uint64_t anchor_seq = 0;  // the chain now starts after this row
};

class EvidenceStore {
 public:
  // Opens (creating it unless read_only) the database at `path`. A file
  // that is not an invariantd evidence store, a newer format, or a damaged
  // database is refused with a message that says which.
  // `busy_timeout_ms`: how long a statement waits for another connection's
  // lock before failing (SQLITE_BUSY: Unavailable).
  // `check_pages` (writable only): first run SQLite's structural check of
  // every page (PRAGMA quick_check; reads the whole file), refusing a torn
  // or truncated database with DataLoss -- what the daemon does at start.
  static absl::StatusOr<std::unique_ptr<EvidenceStore>> Open(
      const std::string& path, bool read_only = false,
      int busy_timeout_ms = 5000, bool check_pages = false);
  ~EvidenceStore();
  EvidenceStore(const EvidenceStore&) = delete;
  EvidenceStore& operator=(const EvidenceStore&) = delete;

  // Work that commits atomically with the evidence: it runs inside
  // Append's transaction, after the new rows are inserted and before
  // COMMIT. `fresh` are the records that were new (not stored before). An
  // error rolls the whole transaction back: Append fails, nothing of it is
  // stored. `cache` is the store's statement cache for its connection
  // (`cache->db()`): work that runs on every commit borrows its statements
  // from it (sqlite.h), so they are compiled once, not on the path of every
  // violation.
  using TxnFn = std::function<absl::Status(
      sqlite_internal::StmtCache* cache,
      const std::vector<const EvidenceRecord*>& fresh)>;

  // Runs on every Append from now on (e.g. the alert outbox rows of the
  // new violations). Not thread-safe: install before the writer starts.
  void AddTxnHook(TxnFn hook) { hooks_.push_back(std::move(hook)); }

  // Appends, in one transaction, the records whose id is not stored yet,
  // chaining them in order; sets seq/prev_hash/hash on those and returns
  // how many were new (the others are left unchanged: already stored).
  // The hooks, then `extra` (when set; e.g. a rule-state checkpoint), run
  // in the same transaction. With no records, only they run (a transaction
  // is still committed when `extra` is set).
  absl::StatusOr<size_t> Append(std::vector<EvidenceRecord>* records,
                                const TxnFn& extra = nullptr);

  // The connection, for owners of other tables in the same database (to
  // create their schema, and in hooks). Used by one thread at a time, like
  // the store.
  sqlite3* db() const { return db_; }

  absl::StatusOr<std::optional<EvidenceRecord>> Get(std::string_view id);
  // Rows matching `q`, in seq order, at most q.limit.
  absl::StatusOr<std::vector<EvidenceRecord>> Find(const EvidenceQuery& q);
  // Walks the whole chain.
  absl::StatusOr<EvidenceVerify> Verify();
  // Deletes the oldest rows detected before `before_unix_ms` (0: no age
  // limit) and then, while the rows' stored bytes exceed `max_bytes` (0: no
  // size limit), the oldest ones; keeps the chain verifiable.
  absl::StatusOr<EvidencePrune> Prune(int64_t before_unix_ms,
                                      uint64_t max_bytes);

  // The background WAL checkpoints (zeros for a read-only store). Safe to
  // call from any thread, unlike the rest of the store.
  WalCheckpointerStats wal_stats() const;
  // Returns once no background checkpoint is wanted or running (tests).
  void WaitForWalCheckpointsForTest() const;

  // Last committed row (0 and the zero hash when empty).
  uint64_t head_seq() const { return head_seq_; }
  const std::string& head_hash() const { return head_hash_; }

 private:
  explicit EvidenceStore(sqlite3* db, bool read_only);
  absl::Status Init();
  absl::Status LoadHead();

  sqlite3* db_;
  // Append's statements, compiled once (sqlite.h).
  std::unique_ptr<sqlite_internal::StmtCache> cache_;
  // Writable stores: checkpoints the WAL on its own thread, so that no
  // Append waits for the database file's fsync (wal_checkpointer.h).
  std::unique_ptr<WalCheckpointer> checkpointer_;
  bool read_only_;
  bool check_ = false;
  std::vector<TxnFn> hooks_;
  uint64_t head_seq_ = 0;
  std::string head_hash_;  // hex
};

// The chain hash of `r` after `prev_hash_hex` (see the file comment).
std::string EvidenceHash(const EvidenceRecord& r,
                         std::string_view prev_hash_hex);

}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_EVIDENCE_STORE_H_
