#include "exporters/wal_checkpointer.h"

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "exporters/sqlite.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using sqlite_internal::Exec;
using sqlite_internal::Stmt;

// A WAL-mode database with one table, written by `writer`.
class WalCheckpointerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("db.sqlite");
    ASSERT_EQ(sqlite3_open(path_.c_str(), &writer_), SQLITE_OK);
    ASSERT_TRUE(Exec(writer_, "PRAGMA journal_mode=WAL").ok());
    ASSERT_TRUE(Exec(writer_, "PRAGMA synchronous=FULL").ok());
    ASSERT_TRUE(
        Exec(writer_, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)").ok());
  }
  void TearDown() override { sqlite3_close_v2(writer_); }

  // One transaction of `rows` rows of 1 KiB: about rows/4 pages.
  void Commit(int rows) {
    ASSERT_TRUE(Exec(writer_, "BEGIN IMMEDIATE").ok());
    Stmt ins(writer_, "INSERT INTO t(v) VALUES(zeroblob(1024))");
    for (int i = 0; i < rows; ++i) {
      ASSERT_EQ(ins.Step(), SQLITE_DONE);
      ins.Reset();
    }
    ins.Finalize();
    ASSERT_TRUE(Exec(writer_, "COMMIT").ok());
  }
  uintmax_t WalBytes() const {
    std::error_code ec;
    const uintmax_t n = std::filesystem::file_size(path_ + "-wal", ec);
    return ec ? 0 : n;
  }
  int64_t Rows(sqlite3* db) {
    Stmt s(db, "SELECT count(*) FROM t");
    EXPECT_EQ(s.Step(), SQLITE_ROW);
    return s.Int(0);
  }

  TempDir dir_;
  std::string path_;
  sqlite3* writer_ = nullptr;
};

// The writer's commits no longer checkpoint: with a threshold no commit
// reaches (nothing wakes the thread), nothing is copied into the database
// file, though the WAL grows far past SQLite's default threshold of 1000
// pages.
TEST_F(WalCheckpointerTest, TheWritersCommitsNoLongerCheckpoint) {
  auto c = WalCheckpointer::Start(writer_, path_, 1 << 30);
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < 40; ++i) Commit(200);  // ~2000 pages of 4 KiB
  EXPECT_GT(WalBytes(), uintmax_t{1000} * 4096);
  EXPECT_LT(std::filesystem::file_size(path_), uintmax_t{64} * 1024);
  EXPECT_EQ((*c)->Stats().checkpoints, 0u);
}

// With the thread at work, the WAL is copied into the database and starts
// over: its file stays near the threshold however much is written, and
// every row is in the database file.
TEST_F(WalCheckpointerTest, CheckpointsOnItsThreadAndTheWalStartsOver) {
  constexpr int kFrames = 64;
  auto c = WalCheckpointer::Start(writer_, path_, kFrames);
  ASSERT_TRUE(c.ok()) << c.status();
  uintmax_t largest = 0;
  for (int round = 0; round < 30; ++round) {
    Commit(100);  // ~25 pages
    Commit(100);
    Commit(100);  // past 64 frames: the hook has woken the thread
    (*c)->WaitIdleForTest();
    largest = std::max(largest, WalBytes());
  }
  const WalCheckpointerStats st = (*c)->Stats();
  EXPECT_GE(st.checkpoints, 30u);
  EXPECT_EQ(st.errors, 0u);
  // Three commits of ~25 pages and a restart: never the 90 rounds' worth
  // (~2200 pages) a WAL that is not reset would hold.
  EXPECT_LT(largest, uintmax_t{200} * 4200);
  EXPECT_EQ(Rows(writer_), 9000);

  // Everything is in the main file: a copy of it alone, without the WAL,
  // has every row.
  c->reset();
  const std::string copy = dir_.File("copy.sqlite");
  std::filesystem::copy_file(path_, copy);
  sqlite3* reader = nullptr;
  ASSERT_EQ(
      sqlite3_open_v2(copy.c_str(), &reader, SQLITE_OPEN_READONLY, nullptr),
      SQLITE_OK);
  EXPECT_EQ(Rows(reader), 9000);
  sqlite3_close_v2(reader);
}

// A reader that holds an old snapshot keeps the checkpoint from finishing;
// that is counted as partial, and the next checkpoint after the reader is
// gone finishes.
TEST_F(WalCheckpointerTest, AReaderHoldingASnapshotMakesItPartial) {
  auto c = WalCheckpointer::Start(writer_, path_, 1);  // after every commit
  ASSERT_TRUE(c.ok()) << c.status();
  Commit(10);
  (*c)->WaitIdleForTest();
  EXPECT_EQ((*c)->Stats().checkpoints, 1u);
  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &reader), SQLITE_OK);
  ASSERT_TRUE(Exec(reader, "BEGIN").ok());
  EXPECT_EQ(Rows(reader), 10);  // the snapshot is taken here
  Commit(10);
  (*c)->WaitIdleForTest();
  EXPECT_GE((*c)->Stats().partial, 1u);
  const uint64_t before = (*c)->Stats().checkpoints;
  ASSERT_TRUE(Exec(reader, "COMMIT").ok());
  sqlite3_close_v2(reader);
  Commit(1);
  (*c)->WaitIdleForTest();
  EXPECT_GT((*c)->Stats().checkpoints, before);
}

// Destroying it gives the writer SQLite's own checkpoints back.
TEST_F(WalCheckpointerTest, AfterItIsGoneTheWriterCheckpointsAgain) {
  {
    auto c = WalCheckpointer::Start(writer_, path_, 1 << 30);
    ASSERT_TRUE(c.ok()) << c.status();
    Commit(100);
  }
  const uintmax_t wal = WalBytes();
  for (int i = 0; i < 30; ++i) Commit(200);  // ~1500 pages
  // SQLite's automatic checkpoint (at 1000 pages) reset the WAL, which
  // then holds at most ~1000 pages plus one commit.
  EXPECT_LT(WalBytes(), uintmax_t{1100} * 4200);
  EXPECT_GT(WalBytes(), wal / 2);  // still in use, not deleted
}

}  // namespace
}  // namespace invariantd
