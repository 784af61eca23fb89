#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "exporters/evidence/state_store.h"
#include "exporters/evidence/store.h"
#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

namespace fs = std::filesystem;

EvidenceRecord Rec(int i, std::string rule = "term") {
  EvidenceRecord r;
  r.id = absl::StrCat("id-", i);
  r.rule = std::move(rule);
  r.kind = "monotonic";
  r.severity = "critical";
  r.reason = "regressed";
  r.message = absl::StrCat("term went from ", i + 1, " to ", i);
  r.key = {{"event.nid", absl::StrCat(i % 3)}};
  r.key_json = absl::StrCat("{\"event.nid\":", i % 3, "}");
  r.observed_json = absl::StrCat(i);
  r.previous_json = absl::StrCat(i + 1);
  r.source = "/var/log/raft.ndjson";
  r.stream = 0xfedcba9876543210ULL;  // above INT64_MAX: stored as bits
  r.line = static_cast<uint64_t>(i) + 10;
  r.offset = static_cast<uint64_t>(i) * 100;
  r.previous_line = static_cast<uint64_t>(i) + 9;
  r.witness = absl::StrCat("{\"raw\":\"\x1b[31m\r\n\", \"i\":", i, "}");
  r.witness.push_back('\0');  // raw bytes, NUL included
  r.ruleset_digest = "abc123";
  r.version = "0.1.0";
  r.detected_unix_ms = 1'700'000'000'000 + i * 1000;
  return r;
}

std::unique_ptr<EvidenceStore> MustOpen(const std::string& path,
                                        bool read_only = false) {
  auto s = EvidenceStore::Open(path, read_only);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

size_t MustAppend(EvidenceStore& store, std::vector<EvidenceRecord> recs) {
  auto n = store.Append(&recs);
  EXPECT_TRUE(n.ok()) << n.status();
  return n.ok() ? *n : 0;
}

// Runs SQL on the database behind the store's back (tampering).
void Tamper(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK)
      << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(EvidenceStoreTest, AppendsOnceAndChainsInOrder) {
  TempDir dir;
  auto store = MustOpen(dir.File("e.db"));
  std::vector<EvidenceRecord> recs = {Rec(1), Rec(2), Rec(3)};
  auto n = store->Append(&recs);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(recs[0].seq, 1u);
  EXPECT_EQ(recs[0].prev_hash, std::string(64, '0'));
  EXPECT_EQ(recs[1].prev_hash, recs[0].hash);
  EXPECT_EQ(recs[2].prev_hash, recs[1].hash);
  EXPECT_EQ(recs[1].hash, EvidenceHash(recs[1], recs[0].hash));
  EXPECT_EQ(store->head_seq(), 3u);
  EXPECT_EQ(store->head_hash(), recs[2].hash);
  // The same ids again (a re-evaluation after a crash) add nothing, in
  // the same transaction as a new one.
  EXPECT_EQ(MustAppend(*store, {Rec(2), Rec(4), Rec(1)}), 1u);
  EXPECT_EQ(store->head_seq(), 4u);
  auto v = store->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records, 4u);
}

// A transaction that fails (here: the work that commits with it) leaves
// nothing behind, and the store's reused statements work for the next one.
TEST(EvidenceStoreTest, AFailedAppendRollsBackAndTheNextOneCommits) {
  TempDir dir;
  auto store = MustOpen(dir.File("e.db"));
  EXPECT_EQ(MustAppend(*store, {Rec(1)}), 1u);
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<EvidenceRecord> recs = {Rec(2), Rec(3)};
    auto n = store->Append(&recs,
                           [](sqlite_internal::StmtCache*,
                              const std::vector<const EvidenceRecord*>& fresh) {
                             EXPECT_EQ(fresh.size(), 2u);
                             return absl::UnavailableError("disk full");
                           });
    ASSERT_FALSE(n.ok());
    EXPECT_EQ(recs[0].seq, 0u);
    EXPECT_EQ(store->head_seq(), 1u);
  }
  std::vector<EvidenceRecord> recs = {Rec(2), Rec(3)};
  auto n = store->Append(&recs);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(recs[0].seq, 2u);
  EXPECT_EQ(store->head_seq(), 3u);
  auto v = store->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records, 3u);
}

TEST(EvidenceStoreTest, StoresEveryFieldExactly) {
  TempDir dir;
  auto store = MustOpen(dir.File("e.db"));
  const EvidenceRecord in = Rec(7);
  MustAppend(*store, {in});
  auto got = store->Get("id-7");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  const EvidenceRecord& r = **got;
  EXPECT_EQ(r.witness, in.witness);  // control bytes and NUL preserved
  EXPECT_EQ(r.stream, in.stream);
  EXPECT_EQ(r.line, in.line);
  EXPECT_EQ(r.offset, in.offset);
  EXPECT_EQ(r.previous_line, in.previous_line);
  EXPECT_EQ(r.key_json, in.key_json);
  EXPECT_EQ(r.message, in.message);
  EXPECT_EQ(r.detected_unix_ms, in.detected_unix_ms);
  EXPECT_EQ(r.hash, EvidenceHash(r, r.prev_hash));
  auto missing = store->Get("nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
}

TEST(EvidenceStoreTest, FindsByRuleKeyTimeWithCursor) {
  TempDir dir;
  auto store = MustOpen(dir.File("e.db"));
  std::vector<EvidenceRecord> recs;
  for (int i = 0; i < 30; ++i) recs.push_back(Rec(i, i % 2 ? "odd" : "even"));
  MustAppend(*store, recs);

  EvidenceQuery q;
  q.rule = "odd";
  q.key = {{"event.nid", "1"}};
  q.limit = 2;
  std::vector<std::string> ids;
  while (true) {
    auto page = store->Find(q);
    ASSERT_TRUE(page.ok()) << page.status();
    if (page->empty()) break;
    for (const auto& r : *page) ids.push_back(r.id);
    q.after_seq = page->back().seq;
  }
  // odd i with i % 3 == 1: 1, 7, 13, 19, 25
  EXPECT_EQ(ids, (std::vector<std::string>{"id-1", "id-7", "id-13", "id-19",
                                           "id-25"}));
  EvidenceQuery t;
  t.since_unix_ms = Rec(10).detected_unix_ms;
  t.until_unix_ms = Rec(13).detected_unix_ms;
  auto window = store->Find(t);
  ASSERT_TRUE(window.ok());
  ASSERT_EQ(window->size(), 3u);
  EXPECT_EQ((*window)[0].id, "id-10");
  EXPECT_EQ((*window)[2].id, "id-12");
}

TEST(EvidenceStoreTest, ReopeningContinuesTheChain) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  std::string head;
  {
    auto store = MustOpen(path);
    MustAppend(*store, {Rec(1), Rec(2)});
    head = store->head_hash();
  }
  auto store = MustOpen(path);
  EXPECT_EQ(store->head_seq(), 2u);
  EXPECT_EQ(store->head_hash(), head);
  EXPECT_EQ(MustAppend(*store, {Rec(2), Rec(3)}), 1u);
  auto reader = MustOpen(path, /*read_only=*/true);
  auto v = reader->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records, 3u);
  std::vector<EvidenceRecord> more = {Rec(9)};
  EXPECT_EQ(reader->Append(&more).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// Every kind of tampering is detected, and the first bad row is named.
struct TamperCase {
  const char* name;
  const char* sql;
  uint64_t bad_seq;
};

class EvidenceTamperTest : public testing::TestWithParam<TamperCase> {};

TEST_P(EvidenceTamperTest, VerifyNamesTheFirstBadRow) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  {
    auto store = MustOpen(path);
    std::vector<EvidenceRecord> recs;
    for (int i = 1; i <= 6; ++i) recs.push_back(Rec(i));
    MustAppend(*store, recs);
    auto v = store->Verify();
    ASSERT_TRUE(v.ok() && v->ok);
  }
  Tamper(path, GetParam().sql);
  auto store = MustOpen(path, /*read_only=*/true);
  auto v = store->Verify();
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->bad_seq, GetParam().bad_seq) << v->problem;
  EXPECT_FALSE(v->problem.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Tampering, EvidenceTamperTest,
    testing::Values(
        TamperCase{"edit_message",
                   "UPDATE evidence SET message = 'nothing happened' "
                   "WHERE seq = 3",
                   3},
        TamperCase{"edit_witness",
                   "UPDATE evidence SET witness = x'00' WHERE seq = 4", 4},
        TamperCase{"edit_and_rehash_row",
                   // Recomputing one row's hash is not enough: the next
                   // row's prev_hash still names the old one.
                   "UPDATE evidence SET line = 99, hash = 'ff' WHERE seq = 2",
                   2},
        TamperCase{"delete_middle", "DELETE FROM evidence WHERE seq = 3", 3},
        TamperCase{"delete_newest", "DELETE FROM evidence WHERE seq = 6", 6},
        TamperCase{"delete_newest_and_move_head",
                   "DELETE FROM evidence WHERE seq = 6; UPDATE chain SET "
                   "head_seq = 5",
                   5},
        TamperCase{"swap_rows",
                   "UPDATE evidence SET seq = -2 WHERE seq = 2;"
                   "UPDATE evidence SET seq = 2 WHERE seq = 5;"
                   "UPDATE evidence SET seq = 5 WHERE seq = -2",
                   2},
        TamperCase{"edit_head", "UPDATE chain SET head_hash = 'ab'", 6}),
    [](const testing::TestParamInfo<TamperCase>& info) {
      return info.param.name;
    });

TEST(EvidenceStoreTest, PruningKeepsTheRestVerifiable) {
  TempDir dir;
  auto store = MustOpen(dir.File("e.db"));
  std::vector<EvidenceRecord> recs;
  for (int i = 0; i < 20; ++i) recs.push_back(Rec(i));
  MustAppend(*store, recs);
  auto p = store->Prune(Rec(5).detected_unix_ms, 0);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->pruned, 5u);
  EXPECT_EQ(p->anchor_seq, 5u);
  auto v = store->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records, 15u);
  EXPECT_EQ(v->anchor_seq, 5u);
  // By size: keep at most about 4 rows' worth.
  auto one = store->Get("id-19");
  ASSERT_TRUE(one.ok() && one->has_value());
  p = store->Prune(0, 4 * 400);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_GT(p->pruned, 0u);
  v = store->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->records + v->anchor_seq, 20u);
  EXPECT_LE(v->records, 5u);
  // Appending after a prune continues the chain.
  EXPECT_EQ(MustAppend(*store, {Rec(50)}), 1u);
  v = store->Verify();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok) << v->problem;
}

TEST(EvidenceStoreTest, RefusesWhatIsNotAnEvidenceStore) {
  TempDir dir;
  const std::string junk = dir.File("junk.db");
  std::ofstream(junk) << std::string(8192, 'x');
  auto s = EvidenceStore::Open(junk);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();

  const std::string other = dir.File("other.db");
  Tamper(other, "CREATE TABLE t(x)");
  s = EvidenceStore::Open(other);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition)
      << s.status();

  const std::string newer = dir.File("newer.db");
  MustOpen(newer);
  Tamper(newer, "PRAGMA user_version = 99");
  s = EvidenceStore::Open(newer);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("newer"), std::string::npos);

  s = EvidenceStore::Open(dir.File("absent.db"), /*read_only=*/true);
  EXPECT_FALSE(s.ok());
}

// Upgrades and rollbacks (docs/operations.md): a store written by a newer
// format is refused with a message that says so and what to do, and the
// file is left as it was; one of this format opens again.
TEST(EvidenceStoreTest, StoresOfANewerFormatAreRefusedAndLeftAsTheyAre) {
  TempDir dir;
  const std::string evidence = dir.File("evidence.db");
  MustAppend(*MustOpen(evidence), {Rec(1)});
  Tamper(evidence, "PRAGMA user_version = 2");
  auto e = EvidenceStore::Open(evidence);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(e.status().message().find(
                "format version 2 is newer than this invariantd reads (1); "
                "upgrade invariantd or point it elsewhere"),
            std::string::npos)
      << e.status();
  EXPECT_NE(e.status().message().find(evidence), std::string::npos);
  Tamper(evidence, "PRAGMA user_version = 1");
  auto again = EvidenceStore::Open(evidence, /*read_only=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->head_seq(), 1u);

  const std::string state = dir.File("state.db");
  ASSERT_TRUE(StateStore::Open(state).ok());
  Tamper(state, "PRAGMA user_version = 2");
  auto s = StateStore::Open(state);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find(
                "format version 2 is newer than this invariantd reads (1); "
                "upgrade invariantd or move the file aside"),
            std::string::npos)
      << s.status();
  Tamper(state, "PRAGMA user_version = 1");
  EXPECT_TRUE(StateStore::Open(state).ok());
}

// Damage to the file itself: opening or verifying reports it; nothing
// crashes and nothing is reported as intact.
TEST(EvidenceStoreTest, TruncatedOrBitFlippedFileIsReported) {
  for (int mode = 0; mode < 2; ++mode) {
    TempDir dir;
    const std::string path = dir.File("e.db");
    {
      auto store = MustOpen(path);
      std::vector<EvidenceRecord> recs;
      for (int i = 0; i < 200; ++i) recs.push_back(Rec(i));
      MustAppend(*store, recs);
    }
    Tamper(path, "PRAGMA wal_checkpoint(TRUNCATE)");
    const auto size = fs::file_size(path);
    if (mode == 0) {
      fs::resize_file(path, size / 2);
    } else {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      for (uint64_t at = 4096 + 4000; at < size; at += 4096) {
        f.seekg(static_cast<std::streamoff>(at));
        char c = 0;
        f.read(&c, 1);
        c = static_cast<char>(c ^ 0x5a);
        f.seekp(static_cast<std::streamoff>(at));
        f.write(&c, 1);
      }
    }
    auto store = EvidenceStore::Open(path, /*read_only=*/true);
    if (!store.ok()) continue;  // refused at open: reported
    auto v = (*store)->Verify();
    if (!v.ok()) continue;  // reported as an error
    EXPECT_FALSE(v->ok) << "mode " << mode;
    EXPECT_FALSE(v->problem.empty());
  }
}

// Random appends (with repeated ids) and prunes: after each step the chain
// verifies and holds exactly the distinct ids appended and not pruned (a
// pruned id is new again: deduplication covers what is retained).
RC_GTEST_PROP(EvidenceStoreProperty, ChainAlwaysVerifies, ()) {
  TempDir dir;
  auto opened = EvidenceStore::Open(dir.File("e.db"));
  RC_ASSERT(opened.ok());
  EvidenceStore& store = **opened;
  std::vector<int> order;  // retained ids in seq order
  std::set<int> present;
  const int steps = *rc::gen::inRange(1, 12);
  for (int step = 0; step < steps; ++step) {
    if (*rc::gen::inRange(0, 5) == 0) {
      auto p = store.Prune(0, *rc::gen::inRange<uint64_t>(1, 5000));
      RC_ASSERT(p.ok());
      RC_ASSERT(p->pruned <= order.size());
      for (uint64_t k = 0; k < p->pruned; ++k) present.erase(order[k]);
      order.erase(order.begin(),
                  order.begin() + static_cast<std::ptrdiff_t>(p->pruned));
    } else {
      const auto ids =
          *rc::gen::container<std::vector<int>>(rc::gen::inRange(0, 40));
      std::vector<EvidenceRecord> recs;
      size_t fresh = 0;
      for (int i : ids) {
        recs.push_back(Rec(i));
        if (present.insert(i).second) {
          order.push_back(i);
          ++fresh;
        }
      }
      auto n = store.Append(&recs);
      RC_ASSERT(n.ok());
      RC_ASSERT(*n == fresh);
    }
    auto v = store.Verify();
    RC_ASSERT(v.ok());
    RC_ASSERT(v->ok);
    RC_ASSERT(v->records == present.size());
  }
}

// A writable store checkpoints its WAL on its own thread (every 2 MiB of
// WAL): after ~10 MB of commits at least one complete checkpoint has run,
// none failed, and the database file holds the rows without the WAL.
TEST(EvidenceStoreTest, CheckpointsItsWalInTheBackground) {
  TempDir dir;
  const std::string path = dir.File("e.db");
  auto store = MustOpen(path);
  for (int batch = 0; batch < 10; ++batch) {
    std::vector<EvidenceRecord> recs;
    for (int i = 0; i < 1000; ++i) {
      recs.push_back(Rec(batch * 1000 + i));
      recs.back().witness.append(std::string(700, 'x'));
    }
    auto n = store->Append(&recs);
    ASSERT_TRUE(n.ok()) << n.status();
  }
  store->WaitForWalCheckpointsForTest();
  const WalCheckpointerStats st = store->wal_stats();
  EXPECT_GE(st.checkpoints, 1u);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_GT(fs::file_size(path), uintmax_t{4} << 20);  // copied in
  EXPECT_EQ(MustOpen(path, /*read_only=*/true)->wal_stats().checkpoints, 0u);
}

}  // namespace
}  // namespace invariantd
