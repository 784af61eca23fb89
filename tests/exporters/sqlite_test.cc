// The SQLite helpers of exporters/sqlite.h: the per-connection statement
// cache and the transaction it runs.
#include "exporters/sqlite.h"

#include <sqlite3.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace invariantd {
namespace {

using sqlite_internal::Exec;
using sqlite_internal::InTransaction;
using sqlite_internal::Stmt;
using sqlite_internal::StmtCache;

class StmtCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(sqlite3_open(":memory:", &db_), SQLITE_OK);
    ASSERT_TRUE(
        Exec(db_, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)").ok());
    cache_ = std::make_unique<StmtCache>(db_);
  }
  void TearDown() override {
    cache_.reset();
    sqlite3_close_v2(db_);
  }
  int64_t Count() {
    Stmt s(db_, "SELECT count(*) FROM t");
    EXPECT_EQ(s.Step(), SQLITE_ROW);
    return s.Int(0);
  }

  sqlite3* db_ = nullptr;
  std::unique_ptr<StmtCache> cache_;
};

TEST_F(StmtCacheTest, AStatementIsCompiledOnceAndComesBackReset) {
  for (int i = 1; i <= 5; ++i) {
    Stmt ins(cache_.get(), "INSERT INTO t(k, v) VALUES(?1, ?2)");
    ASSERT_TRUE(ins.status().ok());
    ins.Bind(1, int64_t{i});
    ins.Bind(2, "x");
    ASSERT_EQ(ins.Step(), SQLITE_DONE);
  }
  EXPECT_EQ(Count(), 5);
  EXPECT_EQ(cache_->compiled(), 1u);
  EXPECT_EQ(cache_->size(), 1u);
  // Handed back mid-row (stepped once, not finished): the next borrower
  // starts from the first row, with no binding left over.
  {
    Stmt sel(cache_.get(), "SELECT k FROM t WHERE k >= ?1 ORDER BY k");
    sel.Bind(1, int64_t{2});
    ASSERT_EQ(sel.Step(), SQLITE_ROW);
    EXPECT_EQ(sel.Int(0), 2);
  }
  {
    Stmt sel(cache_.get(), "SELECT k FROM t WHERE k >= ?1 ORDER BY k");
    ASSERT_EQ(sel.Step(), SQLITE_DONE);  // ?1 is NULL: no row
  }
  EXPECT_EQ(cache_->compiled(), 2u);
}

// As in an evidence commit: statements stay borrowed while others are
// compiled and added to the cache for the first time.
TEST_F(StmtCacheTest, AStatementHeldWhileOthersAreAddedComesBack) {
  {
    Stmt held(cache_.get(), "SELECT 1");
    ASSERT_TRUE(held.status().ok());
    for (int i = 0; i < 40; ++i) {
      Stmt other(cache_.get(), absl::StrCat("SELECT ", i + 2));
      ASSERT_TRUE(other.status().ok());
    }
    ASSERT_EQ(held.Step(), SQLITE_ROW);
    EXPECT_EQ(held.Int(0), 1);
  }
  const uint64_t compiled = cache_->compiled();
  EXPECT_EQ(compiled, 41u);
  for (int i = 0; i < 3; ++i) {
    Stmt again(cache_.get(), "SELECT 1");
    ASSERT_EQ(again.Step(), SQLITE_ROW);
  }
  EXPECT_EQ(cache_->compiled(), compiled);  // handed back, reused
}

TEST_F(StmtCacheTest, NestedUseOfTheSameSqlGetsItsOwnStatement) {
  ASSERT_TRUE(Exec(db_, "INSERT INTO t VALUES(1, 'a'), (2, 'b')").ok());
  const char* sql = "SELECT v FROM t WHERE k = ?1";
  Stmt outer(cache_.get(), sql);
  outer.Bind(1, int64_t{1});
  ASSERT_EQ(outer.Step(), SQLITE_ROW);
  {
    Stmt inner(cache_.get(), sql);  // the cached one is busy with `outer`
    ASSERT_TRUE(inner.status().ok());
    inner.Bind(1, int64_t{2});
    ASSERT_EQ(inner.Step(), SQLITE_ROW);
    EXPECT_EQ(inner.Text(0), "b");
  }
  EXPECT_EQ(outer.Text(0), "a");  // untouched by the inner one
  EXPECT_EQ(cache_->compiled(), 1u);
}

TEST_F(StmtCacheTest, SqlThatDoesNotCompileIsAnErrorAndNotCached) {
  Stmt bad(cache_.get(), "INSERT INTO missing VALUES(1)");
  EXPECT_FALSE(bad.status().ok());
  EXPECT_NE(std::string(bad.status().message()).find("no such table"),
            std::string::npos)
      << bad.status();
  EXPECT_EQ(cache_->size(), 0u);
}

TEST_F(StmtCacheTest, CachedTransactionCommitsAndRollsBack) {
  ASSERT_TRUE(InTransaction(cache_.get(), [&] {
                Stmt ins(cache_.get(), "INSERT INTO t(k, v) VALUES(1, 'a')");
                EXPECT_EQ(ins.Step(), SQLITE_DONE);
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(Count(), 1);
  // A failing body (a duplicate key) rolls back what it wrote before.
  absl::Status st = InTransaction(cache_.get(), [&]() -> absl::Status {
    Stmt ins(cache_.get(), "INSERT INTO t(k, v) VALUES(?1, 'b')");
    ins.Bind(1, int64_t{2});
    if (ins.Step() != SQLITE_DONE) return absl::InternalError("first");
    ins.Reset();
    ins.Bind(1, int64_t{1});
    if (ins.Step() != SQLITE_DONE) {
      return sqlite_internal::SqlError(db_, "second");
    }
    return absl::OkStatus();
  });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(Count(), 1);
  EXPECT_TRUE(sqlite3_get_autocommit(db_));  // no transaction left open
  // The cache still works after the failure (the statements were reset).
  ASSERT_TRUE(InTransaction(cache_.get(), [&] {
                Stmt ins(cache_.get(), "INSERT INTO t(k, v) VALUES(?1, 'b')");
                ins.Bind(1, int64_t{3});
                EXPECT_EQ(ins.Step(), SQLITE_DONE);
                return absl::OkStatus();
              }).ok());
  EXPECT_EQ(Count(), 2);
}

}  // namespace
}  // namespace invariantd
