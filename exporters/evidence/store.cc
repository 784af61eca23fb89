#include "exporters/evidence/store.h"

#include <openssl/evp.h>
#include <sqlite3.h>

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "exporters/sqlite.h"
#include "exporters/wal_checkpointer.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

constexpr int kApplicationId = 0x494e5644;  // "INVD"
constexpr int kFormatVersion = 1;
// WAL pages (4 KiB) that start a checkpoint: 2 MiB, half of SQLite's
// default, so that each copy into the database file stays short.
constexpr int kCheckpointFrames = 512;
const std::string kZeroHash(64, '0');

using sqlite_internal::Exec;
using sqlite_internal::InTransaction;
using sqlite_internal::SqlError;
using sqlite_internal::Stmt;
using sqlite_internal::StmtCache;

void AppendField(std::string* out, std::string_view bytes) {
  uint64_t n = bytes.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out->append(len, 8);
  out->append(bytes);
}

constexpr char kColumns[] =
    "seq, id, rule, kind, severity, reason, message, key_json, observed_json, "
    "previous_json, source, stream, line, \"offset\", previous_line, witness, "
    "ruleset_digest, version, detected_ms, prev_hash, hash";

EvidenceRecord ReadRow(const Stmt& s) {
  EvidenceRecord r;
  r.seq = s.U(0);
  r.id = s.Text(1);
  r.rule = s.Text(2);
  r.kind = s.Text(3);
  r.severity = s.Text(4);
  r.reason = s.Text(5);
  r.message = s.Text(6);
  r.key_json = s.Text(7);
  r.observed_json = s.Text(8);
  r.previous_json = s.Text(9);
  r.source = s.Text(10);
  r.stream = s.U(11);
  r.line = s.U(12);
  r.offset = s.U(13);
  r.previous_line = s.U(14);
  r.witness = s.Text(15);
  r.ruleset_digest = s.Text(16);
  r.version = s.Text(17);
  r.detected_unix_ms = s.Int(18);
  r.prev_hash = s.Text(19);
  r.hash = s.Text(20);
  return r;
}

}  // namespace

std::string EvidenceHash(const EvidenceRecord& r,
                         std::string_view prev_hash_hex) {
  std::string content = "invariantd-evidence-v1";
  // A malformed previous hash (a damaged row) hashes as zeros: the chain
  // breaks there, which Verify reports.
  const bool hex = prev_hash_hex.size() == 64 &&
                   prev_hash_hex.find_first_not_of("0123456789abcdef") ==
                       std::string_view::npos;
  const std::string prev =
      hex ? absl::HexStringToBytes(AV(prev_hash_hex)) : std::string(32, '\0');
  content.append(prev);
  for (std::string_view f :
       {std::string_view(r.id), std::string_view(r.rule),
        std::string_view(r.kind), std::string_view(r.severity),
        std::string_view(r.reason), std::string_view(r.message),
        std::string_view(r.key_json), std::string_view(r.observed_json),
        std::string_view(r.previous_json), std::string_view(r.source)}) {
    AppendField(&content, f);
  }
  for (uint64_t v : {r.stream, r.line, r.offset, r.previous_line}) {
    AppendField(&content, absl::StrCat(v));
  }
  AppendField(&content, r.witness);
  AppendField(&content, r.ruleset_digest);
  AppendField(&content, r.version);
  AppendField(&content, absl::StrCat(r.detected_unix_ms));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(content.data(), content.size(), digest, &len, EVP_sha256(),
             nullptr);
  return absl::BytesToHexString(
      AV(std::string_view(reinterpret_cast<const char*>(digest), len)));
}

EvidenceStore::EvidenceStore(sqlite3* db, bool read_only)
    : db_(db),
      cache_(std::make_unique<StmtCache>(db)),
      read_only_(read_only),
      head_hash_(kZeroHash) {}

EvidenceStore::~EvidenceStore() {
  checkpointer_.reset();  // before the connection it hooks
  cache_.reset();         // its statements, before the connection
  sqlite3_close_v2(db_);
}

WalCheckpointerStats EvidenceStore::wal_stats() const {
  return checkpointer_ ? checkpointer_->Stats() : WalCheckpointerStats{};
}

void EvidenceStore::WaitForWalCheckpointsForTest() const {
  if (checkpointer_) checkpointer_->WaitIdleForTest();
}

absl::StatusOr<std::unique_ptr<EvidenceStore>> EvidenceStore::Open(
    const std::string& path, bool read_only, int busy_timeout_ms,
    bool check_pages) {
  auto db = sqlite_internal::OpenDatabase(path, read_only, busy_timeout_ms,
                                          "evidence store");
  if (!db.ok()) return db.status();
  std::unique_ptr<EvidenceStore> store(new EvidenceStore(*db, read_only));
  store->check_ = check_pages && !read_only;
  if (absl::Status s = store->Init(); !s.ok()) {
    return absl::Status(
        s.code(), absl::StrCat("evidence store ", path, ": ", s.message()));
  }
  if (!read_only) {
    auto c = WalCheckpointer::Start(store->db_, path, kCheckpointFrames);
    if (!c.ok()) {
      return absl::Status(
          c.status().code(),
          absl::StrCat("evidence store ", path, ": ", c.status().message()));
    }
    store->checkpointer_ = std::move(*c);
  }
  return store;
}

absl::Status EvidenceStore::Init() {
  int64_t app_id = 0;
  if (absl::Status s = sqlite_internal::CheckHeader(
          db_, kApplicationId, kFormatVersion, "evidence store",
          "point it elsewhere", &app_id);
      !s.ok()) {
    return s;
  }
  if (app_id == 0) {
    if (read_only_) {
      return absl::NotFoundError("no evidence store here (empty database)");
    }
    {
      Stmt s(db_, "SELECT count(*) FROM sqlite_schema");
      if (!s.status().ok() || s.Step() != SQLITE_ROW) {
        return SqlError(db_, "reading the schema");
      }
      if (s.Int(0) != 0) {
        return absl::FailedPreconditionError(
            "not an invariantd evidence store (a database with other "
            "tables)");
      }
    }
    if (absl::Status s = Exec(db_, "PRAGMA journal_mode=WAL"); !s.ok()) {
      return s;
    }
    absl::Status s = InTransaction(db_, [&] {
      for (const char* sql : {
               "CREATE TABLE evidence("
               " seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
               " rule TEXT NOT NULL, kind TEXT NOT NULL,"
               " severity TEXT NOT NULL, reason TEXT NOT NULL,"
               " message TEXT NOT NULL, key_json TEXT NOT NULL,"
               " observed_json TEXT NOT NULL, previous_json TEXT NOT NULL,"
               " source TEXT NOT NULL, stream INTEGER NOT NULL,"
               " line INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
               " previous_line INTEGER NOT NULL, witness BLOB NOT NULL,"
               " ruleset_digest TEXT NOT NULL, version TEXT NOT NULL,"
               " detected_ms INTEGER NOT NULL, prev_hash TEXT NOT NULL,"
               " hash TEXT NOT NULL)",
               "CREATE INDEX evidence_rule ON evidence(rule, seq)",
               "CREATE INDEX evidence_time ON evidence(detected_ms)",
               // Derived index of the key fields for queries (not chained:
               // key_json, which is, holds the same).
               "CREATE TABLE evidence_key(seq INTEGER NOT NULL,"
               " name TEXT NOT NULL, value TEXT NOT NULL,"
               " PRIMARY KEY(seq, name)) WITHOUT ROWID",
               "CREATE INDEX evidence_key_value ON evidence_key(name, value,"
               " seq)",
               "CREATE TABLE chain(one INTEGER PRIMARY KEY CHECK(one = 1),"
               " anchor_seq INTEGER NOT NULL, anchor_hash TEXT NOT NULL,"
               " head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL)",
           }) {
        if (absl::Status e = Exec(db_, sql); !e.ok()) return e;
      }
      Stmt ins(db_, "INSERT INTO chain VALUES(1, 0, ?1, 0, ?1)");
      ins.Bind(1, kZeroHash);
      if (ins.Step() != SQLITE_DONE) return SqlError(db_, "chain");
      if (absl::Status e = Exec(
              db_,
              absl::StrCat("PRAGMA application_id=", kApplicationId).c_str());
          !e.ok()) {
        return e;
      }
      return Exec(db_,
                  absl::StrCat("PRAGMA user_version=", kFormatVersion).c_str());
    });
    if (!s.ok()) return s;
  }
  if (!read_only_) {
    // A structural check of every page (b-trees, free lists), so that a
    // torn or truncated file is refused at start rather than failing at
    // the first commit that touches the damage. Content edits are the hash
    // chain's (Verify) and the state images' checksums' to find. It reads
    // the whole file: done when the daemon starts, not on every open.
    if (check_) {
      if (absl::Status s = sqlite_internal::QuickCheck(db_); !s.ok()) return s;
    }
    if (absl::Status s = Exec(db_, "PRAGMA synchronous=FULL"); !s.ok()) {
      return s;
    }
  }
  return LoadHead();
}

absl::Status EvidenceStore::LoadHead() {
  Stmt s(db_, "SELECT head_seq, head_hash FROM chain WHERE one = 1");
  if (!s.status().ok()) return SqlError(db_, "reading the chain head");
  const int rc = s.Step();
  if (rc != SQLITE_ROW) {
    if (rc == SQLITE_DONE) {
      return absl::DataLossError("the chain head is missing");
    }
    return SqlError(db_, "reading the chain head");
  }
  head_seq_ = s.U(0);
  head_hash_ = s.Text(1);
  return absl::OkStatus();
}

absl::StatusOr<size_t> EvidenceStore::Append(
    std::vector<EvidenceRecord>* records, const TxnFn& extra) {
  if (read_only_) return absl::FailedPreconditionError("opened read-only");
  if (records->empty() && !extra) return 0;
  size_t added = 0;
  uint64_t seq = head_seq_;
  std::string hash = head_hash_;
  static const std::string* const kInsert = new std::string(
      absl::StrCat("INSERT INTO evidence(", kColumns,
                   ") VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,"
                   "?12,?13,?14,?15,?16,?17,?18,?19,?20,?21)"));
  StmtCache* cache = cache_.get();
  absl::Status s = InTransaction(cache, [&]() -> absl::Status {
    Stmt exists(cache, "SELECT 1 FROM evidence WHERE id = ?1");
    Stmt ins(cache, *kInsert);
    Stmt key(cache, "INSERT OR REPLACE INTO evidence_key VALUES(?1, ?2, ?3)");
    Stmt head(cache, "UPDATE chain SET head_seq = ?1, head_hash = ?2");
    for (Stmt* st : {&exists, &ins, &key, &head}) {
      if (!st->status().ok()) return st->status();
    }
    for (EvidenceRecord& r : *records) {
      exists.Bind(1, r.id);
      const int rc = exists.Step();
      exists.Reset();
      if (rc == SQLITE_ROW) continue;  // already stored: a re-evaluation
      if (rc != SQLITE_DONE) return SqlError(db_, "looking up an id");
      r.seq = ++seq;
      r.prev_hash = hash;
      r.hash = EvidenceHash(r, hash);
      hash = r.hash;
      ins.BindU(1, r.seq);
      ins.Bind(2, r.id);
      ins.Bind(3, r.rule);
      ins.Bind(4, r.kind);
      ins.Bind(5, r.severity);
      ins.Bind(6, r.reason);
      ins.Bind(7, r.message);
      ins.Bind(8, r.key_json);
      ins.Bind(9, r.observed_json);
      ins.Bind(10, r.previous_json);
      ins.Bind(11, r.source);
      ins.BindU(12, r.stream);
      ins.BindU(13, r.line);
      ins.BindU(14, r.offset);
      ins.BindU(15, r.previous_line);
      ins.BindBlob(16, r.witness);
      ins.Bind(17, r.ruleset_digest);
      ins.Bind(18, r.version);
      ins.Bind(19, r.detected_unix_ms);
      ins.Bind(20, r.prev_hash);
      ins.Bind(21, r.hash);
      if (ins.Step() != SQLITE_DONE) return SqlError(db_, "inserting");
      ins.Reset();
      for (const auto& [name, value] : r.key) {
        key.BindU(1, r.seq);
        key.Bind(2, name);
        key.Bind(3, value);
        if (key.Step() != SQLITE_DONE) return SqlError(db_, "indexing keys");
        key.Reset();
      }
      ++added;
    }
    if (added > 0) {
      head.BindU(1, seq);
      head.Bind(2, hash);
      if (head.Step() != SQLITE_DONE) return SqlError(db_, "moving the head");
    }
    std::vector<const EvidenceRecord*> fresh;
    fresh.reserve(added);
    for (const EvidenceRecord& r : *records) {
      if (r.seq != 0) fresh.push_back(&r);
    }
    for (const TxnFn& hook : hooks_) {
      if (absl::Status hs = hook(cache, fresh); !hs.ok()) return hs;
    }
    if (extra) return extra(cache, fresh);
    return absl::OkStatus();
  });
  if (!s.ok()) {
    for (EvidenceRecord& r : *records) r.seq = 0;
    return s;
  }
  head_seq_ = seq;
  head_hash_ = hash;
  return added;
}

absl::StatusOr<std::optional<EvidenceRecord>> EvidenceStore::Get(
    std::string_view id) {
  Stmt s(db_,
         absl::StrCat("SELECT ", kColumns, " FROM evidence WHERE id = ?1"));
  if (!s.status().ok()) return SqlError(db_, "query");
  s.Bind(1, id);
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<EvidenceRecord>();
  if (rc != SQLITE_ROW) return SqlError(db_, "query");
  return std::optional<EvidenceRecord>(ReadRow(s));
}

absl::StatusOr<std::vector<EvidenceRecord>> EvidenceStore::Find(
    const EvidenceQuery& q) {
  std::string sql =
      absl::StrCat("SELECT ", kColumns, " FROM evidence e WHERE seq > ?1");
  int next = 2;
  if (!q.rule.empty()) absl::StrAppend(&sql, " AND rule = ?", next++);
  if (q.since_unix_ms != 0) {
    absl::StrAppend(&sql, " AND detected_ms >= ?", next++);
  }
  if (q.until_unix_ms != 0) {
    absl::StrAppend(&sql, " AND detected_ms < ?", next++);
  }
  for (size_t i = 0; i < q.key.size(); ++i) {
    absl::StrAppend(&sql,
                    " AND EXISTS(SELECT 1 FROM evidence_key k WHERE k.seq = "
                    "e.seq AND k.name = ?",
                    next, " AND k.value = ?", next + 1, ")");
    next += 2;
  }
  absl::StrAppend(&sql, " ORDER BY seq LIMIT ?", next);
  Stmt s(db_, sql);
  if (!s.status().ok()) return SqlError(db_, "query");
  int i = 1;
  s.BindU(i++, q.after_seq);
  if (!q.rule.empty()) s.Bind(i++, q.rule);
  if (q.since_unix_ms != 0) s.Bind(i++, q.since_unix_ms);
  if (q.until_unix_ms != 0) s.Bind(i++, q.until_unix_ms);
  for (const auto& [name, value] : q.key) {
    s.Bind(i++, name);
    s.Bind(i++, value);
  }
  s.Bind(i, static_cast<int64_t>(q.limit));
  std::vector<EvidenceRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadRow(s));
  if (rc != SQLITE_DONE) return SqlError(db_, "query");
  return out;
}

absl::StatusOr<EvidenceVerify> EvidenceStore::Verify() {
  EvidenceVerify v;
  // One read transaction: a consistent snapshot while a writer appends.
  if (absl::Status s = Exec(db_, "BEGIN"); !s.ok()) return s;
  auto done = [&](EvidenceVerify result) -> absl::StatusOr<EvidenceVerify> {
    Exec(db_, "COMMIT").IgnoreError();
    return result;
  };
  uint64_t head_seq = 0;
  std::string head_hash;
  std::string hash;
  {
    Stmt c(db_,
           "SELECT anchor_seq, anchor_hash, head_seq, head_hash FROM chain "
           "WHERE one = 1");
    if (!c.status().ok() || c.Step() != SQLITE_ROW) {
      Exec(db_, "COMMIT").IgnoreError();
      return absl::DataLossError(absl::StrCat(
          "the chain table is unreadable or missing: ", sqlite3_errmsg(db_)));
    }
    v.anchor_seq = c.U(0);
    hash = c.Text(1);
    head_seq = c.U(2);
    head_hash = c.Text(3);
  }
  Stmt s(db_, absl::StrCat("SELECT ", kColumns, " FROM evidence ORDER BY seq"));
  if (!s.status().ok()) {
    Exec(db_, "COMMIT").IgnoreError();
    return SqlError(db_, "reading evidence");
  }
  uint64_t expect = v.anchor_seq + 1;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    const EvidenceRecord r = ReadRow(s);
    if (r.seq != expect) {
      v.bad_seq = expect;
      v.problem = r.seq < expect
                      ? absl::StrCat("row ", r.seq,
                                     " is at or before the "
                                     "chain's anchor ",
                                     v.anchor_seq)
                      : absl::StrCat("rows ", expect, "..", r.seq - 1,
                                     " are missing (deleted)");
      return done(v);
    }
    if (r.prev_hash != hash) {
      v.bad_seq = r.seq;
      v.bad_id = r.id;
      v.problem =
          "its prev_hash does not match the previous row's hash "
          "(rows deleted, reordered or edited)";
      return done(v);
    }
    const std::string computed = EvidenceHash(r, hash);
    if (computed != r.hash) {
      v.bad_seq = r.seq;
      v.bad_id = r.id;
      v.problem = "its content does not match its hash (the row was edited)";
      return done(v);
    }
    hash = r.hash;
    ++v.records;
    ++expect;
  }
  if (rc != SQLITE_DONE) {
    v.bad_seq = expect;
    v.problem = absl::StrCat("the database is damaged: ", sqlite3_errmsg(db_));
    return done(v);
  }
  if (expect - 1 != head_seq || hash != head_hash) {
    v.bad_seq = expect - 1 < head_seq ? expect : head_seq;
    v.problem = absl::StrCat("the chain ends at row ", expect - 1,
                             " but its recorded head is row ", head_seq,
                             " (newest rows deleted, or the head edited)");
    return done(v);
  }
  v.ok = true;
  v.head_seq = head_seq;
  v.head_hash = head_hash;
  return done(v);
}

absl::StatusOr<EvidencePrune> EvidenceStore::Prune(int64_t before_unix_ms,
                                                   uint64_t max_bytes) {
  if (read_only_) return absl::FailedPreconditionError("opened read-only");
  EvidencePrune result;
  absl::Status s = InTransaction(db_, [&]() -> absl::Status {
    uint64_t cut = 0;  // prune rows with seq <= cut
    if (before_unix_ms != 0) {
      // The oldest prefix (in seq order) detected before the cut-off: the
      // chain stays one contiguous run whatever the clocks did.
      Stmt st(db_,
              "SELECT coalesce(min(seq), (SELECT coalesce(max(seq), 0) + 1 "
              "FROM evidence)) FROM evidence WHERE detected_ms >= ?1");
      st.Bind(1, before_unix_ms);
      if (st.Step() != SQLITE_ROW) return SqlError(db_, "pruning");
      cut = st.U(0) - 1;
    }
    if (max_bytes != 0) {
      Stmt st(db_,
              "SELECT seq, length(witness) + length(message) + "
              "length(key_json) + length(observed_json) + "
              "length(previous_json) + length(source) + 200 FROM evidence "
              "ORDER BY seq DESC");
      uint64_t total = 0;
      int rc;
      while ((rc = st.Step()) == SQLITE_ROW) {
        total += st.U(1);
        if (total > max_bytes) {
          cut = std::max(cut, st.U(0));
          break;
        }
      }
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return SqlError(db_, "pruning");
      }
    }
    if (cut == 0) return absl::OkStatus();
    Stmt last(db_,
              "SELECT seq, hash FROM evidence WHERE seq <= ?1 "
              "ORDER BY seq DESC LIMIT 1");
    last.BindU(1, cut);
    if (last.Step() != SQLITE_ROW) return absl::OkStatus();  // pruned before
    const uint64_t anchor = last.U(0);
    const std::string anchor_hash = last.Text(1);
    Stmt count(db_, "SELECT count(*) FROM evidence WHERE seq <= ?1");
    count.BindU(1, anchor);
    if (count.Step() != SQLITE_ROW) return SqlError(db_, "pruning");
    result.pruned = count.U(0);
    Stmt del(db_, "DELETE FROM evidence WHERE seq <= ?1");
    del.BindU(1, anchor);
    if (del.Step() != SQLITE_DONE) return SqlError(db_, "pruning");
    Stmt delk(db_, "DELETE FROM evidence_key WHERE seq <= ?1");
    delk.BindU(1, anchor);
    if (delk.Step() != SQLITE_DONE) return SqlError(db_, "pruning");
    Stmt chain(db_, "UPDATE chain SET anchor_seq = ?1, anchor_hash = ?2");
    chain.BindU(1, anchor);
    chain.Bind(2, anchor_hash);
    if (chain.Step() != SQLITE_DONE) return SqlError(db_, "pruning");
    result.anchor_seq = anchor;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return result;
}

}  // namespace invariantd
