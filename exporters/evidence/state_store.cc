#include "exporters/evidence/state_store.h"

#include <sqlite3.h>
#include <xxhash.h>

#include <string_view>

#include "absl/strings/str_cat.h"
#include "exporters/sqlite.h"

namespace invariantd {
namespace {

using sqlite_internal::Exec;
using sqlite_internal::InTransaction;
using sqlite_internal::SqlError;
using sqlite_internal::Stmt;

constexpr int kApplicationId = 0x494e5653;  // "INVS"
constexpr int kFormatVersion = 1;

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    const std::string& path, bool read_only, int busy_timeout_ms,
    bool check_pages) {
  auto db = sqlite_internal::OpenDatabase(path, read_only, busy_timeout_ms,
                                          "state store");
  if (!db.ok()) return db.status();
  std::unique_ptr<StateStore> store(new StateStore(*db));
  if (absl::Status s = store->Init(read_only, check_pages && !read_only);
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("state store ", path, ": ", s.message()));
  }
  return store;
}

StateStore::~StateStore() { sqlite3_close_v2(db_); }

absl::Status StateStore::Init(bool read_only, bool check_pages) {
  int64_t app_id = 0;
  if (absl::Status s = sqlite_internal::CheckHeader(
          db_, kApplicationId, kFormatVersion, "state store",
          "move the file aside", &app_id);
      !s.ok()) {
    return s;
  }
  if (read_only) {
    if (app_id == 0) return absl::NotFoundError("no state store here");
    return absl::OkStatus();
  }
  if (check_pages) {
    if (absl::Status s = sqlite_internal::QuickCheck(db_); !s.ok()) return s;
  }
  if (app_id == 0) {
    {
      Stmt s(db_, "SELECT count(*) FROM sqlite_schema");
      if (!s.status().ok() || s.Step() != SQLITE_ROW) {
        return SqlError(db_, "reading the schema");
      }
      if (s.Int(0) != 0) {
        return absl::FailedPreconditionError(
            "not an invariantd state store (a database with other tables)");
      }
    }
    // Large pages: the rows are blobs of kilobytes to megabytes.
    if (absl::Status e = Exec(db_, "PRAGMA page_size=65536"); !e.ok()) {
      return e;
    }
    if (absl::Status e = Exec(db_, "PRAGMA journal_mode=WAL"); !e.ok()) {
      return e;
    }
    absl::Status st = InTransaction(db_, [&] {
      for (const char* sql : {
               "CREATE TABLE state_image("
               " seq INTEGER NOT NULL, part INTEGER NOT NULL,"
               " chunk INTEGER NOT NULL, full INTEGER NOT NULL,"
               " data BLOB NOT NULL, checksum INTEGER NOT NULL,"
               " PRIMARY KEY(seq, part, chunk))",
               "CREATE TABLE state_meta("
               " one INTEGER PRIMARY KEY CHECK(one = 1),"
               " workers INTEGER NOT NULL, ruleset_digest TEXT NOT NULL)",
               "CREATE TABLE state_position("
               " stream TEXT PRIMARY KEY, last_offset INTEGER NOT NULL)",
           }) {
        if (absl::Status e = Exec(db_, sql); !e.ok()) return e;
      }
      if (absl::Status e = Exec(
              db_,
              absl::StrCat("PRAGMA application_id=", kApplicationId).c_str());
          !e.ok()) {
        return e;
      }
      return Exec(db_,
                  absl::StrCat("PRAGMA user_version=", kFormatVersion).c_str());
    });
    if (!st.ok()) return st;
  }
  // Checkpoint the WAL into the database every 4 MiB (64 pages of 64 KiB;
  // SQLite's default of 1000 pages would be 64 MiB): each copy then stays
  // small, and so does the burst of writes an fsync elsewhere on the same
  // filesystem may have to wait for.
  // secure_delete=FAST: Debian's SQLite is built to overwrite deleted
  // content with zeros, which turned each pruning of old checkpoints into
  // a write of every freed page (measured: a 54 MiB commit of 250 ms that
  // held the disk while the evidence store waited to commit a violation).
  // FAST still clears deleted rows within the pages that remain in use.
  for (const char* sql :
       {"PRAGMA synchronous=FULL", "PRAGMA wal_autocheckpoint=64",
        "PRAGMA journal_size_limit=16777216", "PRAGMA secure_delete=FAST"}) {
    if (absl::Status e = Exec(db_, sql); !e.ok()) return e;
  }
  return absl::OkStatus();
}

absl::Status StateStore::Write(
    const std::vector<const StateCheckpoint*>& checkpoints,
    size_t chunk_bytes) {
  return InTransaction(db_, [&] {
    for (const StateCheckpoint* c : checkpoints) {
      if (absl::Status s = WriteOne(*c, chunk_bytes); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
}

absl::Status StateStore::WriteOne(const StateCheckpoint& c,
                                  size_t chunk_bytes) {
  sqlite3* db = db_;
  if (c.full) {
    for (const char* sql : {"DELETE FROM state_image", "DELETE FROM state_meta",
                            "DELETE FROM state_position"}) {
      if (absl::Status e = Exec(db, sql); !e.ok()) return e;
    }
    Stmt meta(db, "INSERT INTO state_meta VALUES(1, ?1, ?2)");
    if (!meta.status().ok()) return meta.status();
    meta.Bind(1, int64_t{c.workers});
    meta.Bind(2, c.ruleset_digest);
    if (meta.Step() != SQLITE_DONE) return SqlError(db, "writing state meta");
  }
  uint64_t seq = 1;
  {
    Stmt next(db, "SELECT IFNULL(MAX(seq), 0) + 1 FROM state_image");
    if (!next.status().ok() || next.Step() != SQLITE_ROW) {
      return SqlError(db, "numbering the state image");
    }
    seq = next.U(0);
  }
  // An image is stored in chunks of at most chunk_bytes (SQLite's blob
  // limit is 1e9 bytes).
  Stmt ins(db, "INSERT INTO state_image VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
  if (!ins.status().ok()) return ins.status();
  for (size_t part = 0; part < c.parts.size(); ++part) {
    // Each piece in one or more chunks; an empty part as one empty chunk.
    size_t chunk = 0;
    auto put = [&](std::string_view piece) {
      ins.BindU(1, seq);
      ins.BindU(2, part);
      ins.BindU(3, chunk++);
      // The `full` column holds the checkpoint's keep: 1 for an image that
      // is complete by itself (older stores: 0 for a change image).
      ins.BindU(4, c.full ? 1 : c.keep);
      ins.BindBlob(4 + 1, piece);
      ins.BindU(6, XXH3_64bits(piece.data(), piece.size()));
      if (ins.Step() != SQLITE_DONE) return SqlError(db, "writing rule state");
      ins.Reset();
      return absl::OkStatus();
    };
    for (const std::string& data : c.parts[part].pieces()) {
      for (size_t at = 0; at < data.size();) {
        const std::string_view piece =
            std::string_view(data).substr(at, chunk_bytes);
        at += piece.size();
        if (absl::Status s = put(piece); !s.ok()) return s;
      }
    }
    if (chunk == 0) {
      if (absl::Status s = put(std::string_view()); !s.ok()) return s;
    }
  }
  if (!c.full && c.keep != 0 && seq > c.keep) {
    Stmt prune(db, "DELETE FROM state_image WHERE seq <= ?1");
    if (!prune.status().ok()) return prune.status();
    prune.BindU(1, seq - c.keep);
    if (prune.Step() != SQLITE_DONE) {
      return SqlError(db, "pruning older rule state");
    }
  }
  // Positions: replaced as a whole (streams that ended are dropped).
  if (absl::Status e = Exec(db, "DELETE FROM state_position"); !e.ok()) {
    return e;
  }
  Stmt pos(db, "INSERT INTO state_position VALUES(?1, ?2)");
  if (!pos.status().ok()) return pos.status();
  for (const auto& [stream, offset] : c.positions) {
    pos.Bind(1, stream);
    pos.BindU(2, offset);
    if (pos.Step() != SQLITE_DONE) return SqlError(db, "writing positions");
    pos.Reset();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StoredState>> StateStore::Load() {
  StoredState out;
  {
    Stmt meta(db_, "SELECT workers, ruleset_digest FROM state_meta");
    if (!meta.status().ok()) return SqlError(db_, "reading state meta");
    const int rc = meta.Step();
    if (rc == SQLITE_DONE) return std::optional<StoredState>();
    if (rc != SQLITE_ROW) return SqlError(db_, "reading state meta");
    out.workers = static_cast<int>(meta.Int(0));
    out.ruleset_digest = meta.Text(1);
  }
  out.parts.resize(static_cast<size_t>(out.workers) + 1);
  // The newest checkpoint says how many a restore applies (its keep);
  // 0 (stores of an older version): all since the full one.
  uint64_t from = 0, keep = 0;
  {
    Stmt newest(db_,
                "SELECT seq, full FROM state_image ORDER BY seq DESC LIMIT 1");
    if (!newest.status().ok()) return SqlError(db_, "reading rule state");
    const int rc = newest.Step();
    if (rc == SQLITE_ROW) {
      keep = newest.U(1);
      if (keep != 0) from = newest.U(0) >= keep ? newest.U(0) - keep + 1 : 0;
    } else if (rc != SQLITE_DONE) {
      return SqlError(db_, "reading rule state");
    }
  }
  Stmt img(db_,
           "SELECT seq, part, chunk, full, data, checksum FROM state_image"
           " WHERE seq >= ?1 ORDER BY seq, part, chunk");
  if (!img.status().ok()) return SqlError(db_, "reading rule state");
  img.BindU(1, from);
  bool first = true;
  int rc;
  uint64_t last_seq = 0, last_part = 0, last_chunk = 0;
  while ((rc = img.Step()) == SQLITE_ROW) {
    const uint64_t seq = img.U(0);
    const uint64_t part = img.U(1);
    const uint64_t chunk = img.U(2);
    if (keep != 0 &&
        (first ? seq != from : seq != last_seq && seq != last_seq + 1)) {
      return absl::DataLossError(absl::StrCat(
          "the rule state misses checkpoint ", first ? from : last_seq + 1,
          " of the ", keep, " it needs"));
    }
    if (first || seq != last_seq) ++out.checkpoints;
    std::string data = img.Text(4);
    if (XXH3_64bits(data.data(), data.size()) != img.U(5)) {
      return absl::DataLossError(absl::StrCat("rule state image ", seq,
                                              " part ", part, " chunk ", chunk,
                                              " fails its checksum"));
    }
    if (part >= out.parts.size()) {
      return absl::DataLossError(absl::StrCat("rule state image ", seq,
                                              " has an unknown part ", part));
    }
    if (first && keep == 0 && img.Int(3) == 0) {
      return absl::DataLossError(
          "the rule state starts with a change image, not a full one");
    }
    const bool continues = !first && seq == last_seq && part == last_part &&
                           chunk > 0 && chunk == last_chunk + 1;
    if (chunk > 0 && !continues) {
      return absl::DataLossError(absl::StrCat(
          "rule state image ", seq, " part ", part, " misses a chunk"));
    }
    first = false;
    out.bytes += data.size();
    if (continues) {
      out.parts[part].back().append(data);
    } else {
      ++out.images;
      out.parts[part].push_back(std::move(data));
    }
    last_seq = seq;
    last_part = part;
    last_chunk = chunk;
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "reading rule state");
  Stmt pos(db_, "SELECT stream, last_offset FROM state_position");
  if (!pos.status().ok()) return SqlError(db_, "reading positions");
  while ((rc = pos.Step()) == SQLITE_ROW) {
    out.positions.emplace_back(pos.Text(0), pos.U(1));
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "reading positions");
  return std::optional<StoredState>(std::move(out));
}

}  // namespace invariantd
