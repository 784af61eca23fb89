// Small SQLite helpers shared by the evidence store, the rule-state store
// and the alerting outbox (internal header).
#ifndef INVARIANTD_EXPORTERS_SQLITE_H_
#define INVARIANTD_EXPORTERS_SQLITE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace sqlite_internal {

// Statements compiled once per connection and reused, for the SQL of a hot
// path: compiling the evidence INSERT of 21 columns costs more CPU than
// running it, and an evidence commit is on the path of every violation.
// One cache per connection, used only by the thread that uses the
// connection; destroy it before closing the connection.
class StmtCache {
 public:
  explicit StmtCache(sqlite3* db) : db_(db) {}
  ~StmtCache() {
    for (auto& [sql, entry] : entries_) sqlite3_finalize(entry->stmt);
  }
  StmtCache(const StmtCache&) = delete;
  StmtCache& operator=(const StmtCache&) = delete;

  size_t size() const { return entries_.size(); }
  sqlite3* db() const { return db_; }
  // Statements compiled so far (tests: a reused one is not compiled again).
  uint64_t compiled() const { return compiled_; }

 private:
  friend class Stmt;
  struct Entry {
    sqlite3_stmt* stmt = nullptr;
    bool in_use = false;
  };
  // The cached statement of `sql`, compiled on first use; null when it is
  // in use already (the caller compiles its own) or does not compile.
  Entry* Borrow(std::string_view sql, int* rc) {
    auto it = entries_.find(sql);
    if (it == entries_.end()) {
      sqlite3_stmt* stmt = nullptr;
      *rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                               SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (*rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return nullptr;
      }
      ++compiled_;
      it = entries_
               .emplace(std::string(sql),
                        std::make_unique<Entry>(Entry{stmt, false}))
               .first;
    }
    Entry* e = it->second.get();
    if (e->in_use) return nullptr;
    e->in_use = true;
    return e;
  }

  sqlite3* db_;
  // Boxed: a borrower holds its Entry* while other SQL is added, and the
  // map moves its values when it grows.
  StringMap<std::unique_ptr<Entry>> entries_;
  uint64_t compiled_ = 0;
};

class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()),
                             &stmt_, nullptr);
  }
  // Borrows `sql` from `cache` (compiled once per connection); reset and
  // handed back when this goes. A statement already borrowed (nested use of
  // the same SQL) is compiled anew for this one.
  Stmt(StmtCache* cache, std::string_view sql) : db_(cache->db_) {
    borrowed_ = cache->Borrow(sql, &rc_);
    if (borrowed_ != nullptr) {
      stmt_ = borrowed_->stmt;
    } else if (rc_ == SQLITE_OK) {
      rc_ = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()),
                               &stmt_, nullptr);
    }
  }
  ~Stmt() { Finalize(); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    const std::string text =
        absl::StrCat("sqlite prepare: ", sqlite3_errmsg(db_));
    if (rc_ == SQLITE_BUSY || rc_ == SQLITE_LOCKED) {
      return absl::UnavailableError(text);
    }
    return absl::InternalError(text);
  }
  void Bind(int i, std::string_view text) {
    sqlite3_bind_text64(stmt_, i, text.data(),
                        static_cast<sqlite3_uint64>(text.size()),
                        SQLITE_TRANSIENT, SQLITE_UTF8);
  }
  void BindBlob(int i, std::string_view bytes) {
    // A null pointer would bind NULL, not an empty blob.
    sqlite3_bind_blob64(stmt_, i, bytes.data() != nullptr ? bytes.data() : "",
                        static_cast<sqlite3_uint64>(bytes.size()),
                        SQLITE_TRANSIENT);
  }
  void BindU(int i, uint64_t v) {
    sqlite3_bind_int64(stmt_, i, static_cast<int64_t>(v));  // bit pattern
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  // A borrowed statement goes back to its cache, reset, for the next use.
  void Finalize() {
    if (borrowed_ != nullptr) {
      Reset();
      borrowed_->in_use = false;
      borrowed_ = nullptr;
    } else {
      sqlite3_finalize(stmt_);
    }
    stmt_ = nullptr;
  }
  std::string Text(int col) const {
    const auto* p =
        reinterpret_cast<const char*>(sqlite3_column_blob(stmt_, col));
    const int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string()
                        : std::string(p, static_cast<size_t>(n));
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  uint64_t U(int col) const { return static_cast<uint64_t>(Int(col)); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  StmtCache::Entry* borrowed_ = nullptr;
  int rc_ = SQLITE_OK;
};

inline absl::Status SqlError(sqlite3* db, std::string_view what) {
  const int code = sqlite3_errcode(db);
  const std::string text = absl::StrCat(AV(what), ": ", sqlite3_errmsg(db));
  switch (code) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(text);
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(text);
    case SQLITE_READONLY:
      return absl::FailedPreconditionError(text);
    default:
      return absl::InternalError(text);
  }
}

inline absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    sqlite3_free(err);
    return SqlError(db, sql);
  }
  return absl::OkStatus();
}

// Runs `body` in one IMMEDIATE transaction (the write lock is taken at
// BEGIN, waiting up to the busy timeout); rolls back if it fails.
template <typename F>
absl::Status InTransaction(sqlite3* db, F&& body) {
  if (absl::Status s = Exec(db, "BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status s = body();
  if (s.ok()) s = Exec(db, "COMMIT");
  if (!s.ok()) Exec(db, "ROLLBACK").IgnoreError();
  return s;
}

// InTransaction with BEGIN and COMMIT from `cache` (for a transaction run
// many times a second on one connection).
template <typename F>
absl::Status InTransaction(StmtCache* cache, F&& body) {
  auto run = [&](const char* sql) {
    Stmt st(cache, sql);
    if (!st.status().ok()) return st.status();
    const int rc = st.Step();
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return absl::OkStatus();
    return SqlError(cache->db(), sql);
  };
  if (absl::Status s = run("BEGIN IMMEDIATE"); !s.ok()) return s;
  absl::Status s = body();
  if (s.ok()) s = run("COMMIT");
  if (!s.ok()) run("ROLLBACK").IgnoreError();
  return s;
}

// Opens the database at `path` (created unless read_only; one thread at a
// time) with a busy timeout. `what` names it in the error ("evidence store").
inline absl::StatusOr<sqlite3*> OpenDatabase(const std::string& path,
                                             bool read_only,
                                             int busy_timeout_ms,
                                             std::string_view what) {
  sqlite3* db = nullptr;
  const int flags = (read_only ? SQLITE_OPEN_READONLY
                               : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    const std::string msg =
        db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return absl::UnavailableError(
        absl::StrCat(AV(what), " ", path, ": cannot open: ", msg));
  }
  sqlite3_busy_timeout(db, busy_timeout_ms);
  return db;
}

// Reads the header (page 1: a file that is not SQLite, or whose first page
// is damaged, fails here) and checks that the database is either new
// (application id 0, returned in *found) or one of ours of a version this
// build reads. `advice` ends the message for a newer format.
inline absl::Status CheckHeader(sqlite3* db, int64_t application_id,
                                int64_t format_version, std::string_view what,
                                std::string_view advice, int64_t* found) {
  int64_t version = 0;
  {
    Stmt s(db, "PRAGMA application_id");
    if (!s.status().ok() || s.Step() != SQLITE_ROW) {
      return SqlError(db, "not a readable SQLite database");
    }
    *found = s.Int(0);
  }
  {
    Stmt s(db, "PRAGMA user_version");
    if (!s.status().ok() || s.Step() != SQLITE_ROW) {
      return SqlError(db, "reading the format version");
    }
    version = s.Int(0);
  }
  if (*found != 0 && *found != application_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "not an invariantd ", AV(what), " (another application's database)"));
  }
  if (version > format_version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "format version ", version, " is newer than this invariantd reads (",
        format_version, "); upgrade invariantd or ", AV(advice)));
  }
  return absl::OkStatus();
}

// SQLite's structural check of every page (PRAGMA quick_check: b-trees,
// free lists; reads the whole file). DataLoss when it finds damage.
inline absl::Status QuickCheck(sqlite3* db) {
  std::string result;
  {
    Stmt s(db, "PRAGMA quick_check(1)");
    if (!s.status().ok() || s.Step() != SQLITE_ROW) {
      return SqlError(db, "checking the database");
    }
    result = s.Text(0);
  }
  if (result != "ok") {
    return absl::DataLossError(
        absl::StrCat("the database is damaged (", result, ")"));
  }
  return absl::OkStatus();
}

}  // namespace sqlite_internal
}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_SQLITE_H_
