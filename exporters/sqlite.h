// Small SQLite helpers shared by the evidence store, the rule-state store
// and the alerting outbox (internal header).
#ifndef INVARIANTD_EXPORTERS_SQLITE_H_
#define INVARIANTD_EXPORTERS_SQLITE_H_

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace sqlite_internal {

class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()),
                             &stmt_, nullptr);
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
  void Finalize() {
    sqlite3_finalize(stmt_);
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

}  // namespace sqlite_internal
}  // namespace invariantd

#endif  // INVARIANTD_EXPORTERS_SQLITE_H_
