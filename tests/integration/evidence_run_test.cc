// The evidence store through the real binary: `invariantd run` commits
// every violation before acknowledging its input; a restart that evaluates
// the same input again stores and prints nothing twice; the query API (curl)
// and `invariantd evidence query|show|verify` read the store while the
// daemon runs; tampering is detected by `evidence verify`.
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tests/integration/child_process.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
namespace fs = std::filesystem;

class EvidenceRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat(
               "invariantd-evidence-", getpid(), "-",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "logs");
    fs::copy_file(Src("rules/packs/samples/etcd-raft-faults.ndjson"),
                  dir_ / "logs" / "raft.ndjson");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Child> Start() {
    auto c = std::make_unique<Child>(std::vector<std::string>{
        INVARIANTD_BINARY, "run", "--rules", Src("rules/packs/etcd-raft.yaml"),
        "--tail", (dir_ / "logs" / "*.ndjson").string(), "--listen",
        "127.0.0.1:0", "--data-dir", Data()});
    EXPECT_TRUE(c->WaitForPort(&port_)) << c->err();
    return c;
  }
  std::string Data() const { return (dir_ / "data").string(); }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  int Cli(const std::string& args, std::string* out) {
    return Shell(absl::StrCat(INVARIANTD_BINARY, " evidence ", args), out);
  }

  fs::path dir_;
  int port_ = 0;
};

// The sample holds 4 violations (lines 102, 118 twice, 128).
constexpr size_t kSampleViolations = 4;

TEST_F(EvidenceRunTest, StoresOnceQueriesAndSurvivesReevaluation) {
  std::set<std::string> ids;
  {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] {
      return Lines(c->out()) >= kSampleViolations;
    })) << c->err();
    for (auto l : absl::StrSplit(c->out(), '\n', absl::SkipEmpty())) {
      ids.insert(Json::parse(l)["id"].get<std::string>());
    }
    ASSERT_EQ(ids.size(), kSampleViolations);

    // The API, while running: every id, paged with the cursor.
    std::set<std::string> listed;
    std::string cursor;
    for (int page = 0; page < 10; ++page) {
      std::string body;
      ASSERT_EQ(
          Shell(absl::StrCat("curl -sf '", Url("/v1/violations?limit=3"),
                             cursor.empty() ? "" : "&cursor=", cursor, "'"),
                &body),
          0)
          << body;
      const Json j = Json::parse(body);
      for (const Json& v : j["violations"]) {
        listed.insert(v["id"].get<std::string>());
        EXPECT_EQ(v["source"], (dir_ / "logs" / "raft.ndjson").string());
        EXPECT_FALSE(v["witness_base64"].get<std::string>().empty());
        EXPECT_EQ(v["hash"].get<std::string>().size(), 64u);
      }
      if (j["next_cursor"].is_null()) break;
      cursor = j["next_cursor"].get<std::string>();
    }
    EXPECT_EQ(listed, ids);

    // One record by id, a filter by key, and an unknown id.
    const std::string one = *ids.begin();
    std::string body;
    ASSERT_EQ(
        Shell(absl::StrCat("curl -sf ", Url("/v1/violations/" + one)), &body),
        0);
    EXPECT_EQ(Json::parse(body)["id"], one);
    body.clear();
    ASSERT_EQ(Shell(absl::StrCat("curl -sf '",
                                 Url("/v1/violations?rule=etcd-raft-term-"
                                     "never-regresses&key=event.nid%3D1"),
                                 "'"),
                    &body),
              0);
    const Json filtered = Json::parse(body)["violations"];
    ASSERT_EQ(filtered.size(), 1u) << body;
    EXPECT_EQ(filtered[0]["line"], 102);
    body.clear();
    EXPECT_EQ(Shell(absl::StrCat("curl -s -o /dev/null -w '%{http_code}' ",
                                 Url("/v1/violations/0000")),
                    &body),
              0);
    EXPECT_EQ(body, "404");
    body.clear();
    EXPECT_EQ(Shell(absl::StrCat("curl -s -w ' %{http_code}' '",
                                 Url("/v1/violations?since=yesterday"), "'"),
                    &body),
              0);
    EXPECT_THAT(body, HasSubstr("RFC 3339"));
    EXPECT_THAT(body, HasSubstr(" 400"));

    // The CLI reads the same store while the daemon runs.
    std::string out;
    ASSERT_EQ(Cli("verify --data-dir " + Data(), &out), 0) << out;
    EXPECT_THAT(out, HasSubstr("intact: 4 records"));
    out.clear();
    ASSERT_EQ(Cli("query --format jsonl --data-dir " + Data(), &out), 0);
    EXPECT_EQ(Lines(out), kSampleViolations) << out;
    out.clear();
    ASSERT_EQ(Cli(absl::StrCat("show --data-dir ", Data(), " ", one), &out), 0);
    EXPECT_EQ(Json::parse(out)["id"], one);
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0);
    EXPECT_THAT(c->err(), HasSubstr("\"evidence committed\""));
  }

  // Forget the tail positions: the restart reads the whole file again, and
  // skips every line as already in the rule-state checkpoint (whose stored
  // position is exact): nothing is evaluated, stored or printed twice.
  fs::remove(dir_ / "data" / "tail-positions.json");
  {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] {
      std::string m;
      Shell("curl -sf " + Url("/metrics"), &m);
      return m.find(
                 "invariantd_source_redelivered_total{kind=\"file\","
                 "source=\"tail\"} "
                 "140") != std::string::npos;
    })) << c->err();
    EXPECT_THAT(c->err(), HasSubstr("\"rule state restored\""));
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0);
    EXPECT_EQ(c->out(), "");
  }
  // Forget the rule state too: the whole file is evaluated again. Same ids,
  // so nothing is stored, printed or counted twice.
  fs::remove(dir_ / "data" / "tail-positions.json");
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "data" / "state.db").c_str(), &db),
              SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "DELETE FROM state_meta; DELETE FROM state_image;"
                           " DELETE FROM state_position",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] {
      std::string m;
      Shell("curl -sf " + Url("/metrics"), &m);
      return m.find(
                 "invariantd_evidence_records_total{result=\"duplicate\"} "
                 "4") != std::string::npos;
    })) << c->err();
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0);
    EXPECT_EQ(c->out(), "");
  }
  std::string out;
  ASSERT_EQ(Cli("verify --json --data-dir " + Data(), &out), 0) << out;
  const Json report = Json::parse(out);
  EXPECT_TRUE(report["ok"].get<bool>());
  EXPECT_EQ(report["records"], kSampleViolations);

  // Tampering: an edited message is found, by record.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "data" / "evidence.db").c_str(), &db),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "UPDATE evidence SET message = 'all good' "
                         "WHERE seq = 2",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  out.clear();
  EXPECT_EQ(Cli("verify --data-dir " + Data(), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("BROKEN at record 2"));
}

TEST_F(EvidenceRunTest, ADamagedStoreIsRefusedWithAClearMessage) {
  fs::create_directories(dir_ / "data");
  std::ofstream(dir_ / "data" / "evidence.db") << std::string(4096, 'x');
  Child c({INVARIANTD_BINARY, "run", "--rules",
           Src("rules/packs/etcd-raft.yaml"), "--tail",
           (dir_ / "logs" / "*.ndjson").string(), "--listen", "127.0.0.1:0",
           "--data-dir", Data()});
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_THAT(c.err(), HasSubstr("evidence.db"));
  EXPECT_THAT(c.err(), HasSubstr("move it aside"));
  // The file is left as it was, for the investigation.
  EXPECT_EQ(fs::file_size(dir_ / "data" / "evidence.db"), 4096u);
  std::string out;
  EXPECT_EQ(Cli("verify --data-dir " + Data(), &out), 2) << out;
}

// RELIABILITY.md R2: the store and the checkpoint torn, truncated or
// bit-flipped. Each case gets the documented behaviour, never a crash loop
// and never a silent loss.
class DamageTest : public EvidenceRunTest {
 protected:
  // Runs the daemon over the sample until its 4 violations are committed
  // and it has stopped cleanly (the WAL folded into the main file).
  void Populate() {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] {
      return Lines(c->out()) >= kSampleViolations;
    })) << c->err();
    c->Signal(SIGTERM);
    ASSERT_EQ(c->Wait(), 0) << c->err();
  }
  fs::path Db() const { return dir_ / "data" / "evidence.db"; }
  std::string ReadDb() const {
    std::ifstream in(Db(), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  void WriteDb(const std::string& bytes) const {
    std::ofstream(Db(), std::ios::binary | std::ios::trunc) << bytes;
  }
  std::string Metrics() const {
    std::string m;
    Shell("curl -sf " + Url("/metrics"), &m);
    return m;
  }
};

TEST_F(DamageTest, ATruncatedStoreIsRefusedAndLeftAsItIs) {
  Populate();
  std::string bytes = ReadDb();
  ASSERT_GT(bytes.size(), 8192u);
  bytes.resize(bytes.size() * 6 / 10);
  WriteDb(bytes);
  Child c({INVARIANTD_BINARY, "run", "--rules",
           Src("rules/packs/etcd-raft.yaml"), "--tail",
           (dir_ / "logs" / "*.ndjson").string(), "--listen", "127.0.0.1:0",
           "--data-dir", Data()});
  EXPECT_EQ(c.Wait(), 2);
  EXPECT_THAT(c.err(), HasSubstr("malformed"));
  EXPECT_THAT(c.err(), HasSubstr("move it aside"));
  EXPECT_EQ(fs::file_size(Db()), bytes.size());
}

TEST_F(DamageTest, AFlippedBitInARecordIsFoundByVerify) {
  Populate();
  std::string bytes = ReadDb();
  // A bit of a stored message: structurally the file is fine, the chain
  // is not.
  const size_t at = bytes.find("regressed from");
  ASSERT_NE(at, std::string::npos);
  bytes[at] ^= 0x01;
  WriteDb(bytes);
  std::string out;
  EXPECT_EQ(Cli("verify --data-dir " + Data(), &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("BROKEN at record"));
}

TEST_F(DamageTest, ADamagedStateImageStartsEmptyAndSaysSo) {
  Populate();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "data" / "state.db").c_str(), &db),
              SQLITE_OK);
    // Same length, other bytes: only the checksum can tell.
    ASSERT_EQ(sqlite3_exec(db,
                           "UPDATE state_image SET data = "
                           "zeroblob(length(data)) WHERE part = 1",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  {
    auto c = Start();
    ASSERT_TRUE(c->WaitFor([&] {
      return Metrics().find("invariantd_state_restored 0") != std::string::npos;
    })) << c->err();
    EXPECT_THAT(c->err(), HasSubstr("\"rule state not restored\""));
    EXPECT_THAT(c->err(), HasSubstr("checksum"));
    std::string ready;
    Shell("curl -s " + Url("/readyz"), &ready);
    EXPECT_THAT(ready, HasSubstr("ready: "));
    EXPECT_THAT(ready,
                HasSubstr("state: the rule-state checkpoint is damaged"));
    c->Signal(SIGTERM);
    EXPECT_EQ(c->Wait(), 0) << c->err();
  }
  // The next checkpoint replaced it: the following start restores again.
  auto c = Start();
  ASSERT_TRUE(c->WaitFor([&] {
    return Metrics().find("invariantd_state_restored 1") != std::string::npos;
  })) << c->err();
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0);
}

// The state database itself torn (truncated): it holds derived data, so it
// is moved aside for a look and the rules start empty, logged, exported and
// shown on /readyz; the evidence is untouched and the daemon runs.
TEST_F(DamageTest, ATornStateDatabaseIsMovedAsideAndTheRulesStartEmpty) {
  Populate();
  const fs::path state = dir_ / "data" / "state.db";
  ASSERT_TRUE(fs::exists(state));
  ASSERT_FALSE(fs::exists(dir_ / "data" / "state.db-wal"));  // closed cleanly
  const auto size = fs::file_size(state);
  ASSERT_GT(size, 2u * 65536u);
  fs::resize_file(state, size / 2 + 100);
  auto c = Start();
  ASSERT_TRUE(c->WaitFor([&] {
    return Metrics().find("invariantd_state_restored 0") != std::string::npos;
  })) << c->err();
  EXPECT_THAT(c->err(), HasSubstr("\"rule state not restored\""));
  EXPECT_THAT(c->err(), HasSubstr("moved to"));
  std::string ready;
  Shell("curl -s " + Url("/readyz"), &ready);
  EXPECT_THAT(ready, HasSubstr("state: the rule-state database was damaged"));
  size_t aside = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "data")) {
    if (e.path().filename().string().rfind("state.db.damaged-", 0) == 0) {
      ++aside;
    }
  }
  EXPECT_EQ(aside, 1u);
  c->Signal(SIGTERM);
  EXPECT_EQ(c->Wait(), 0) << c->err();
  std::string out;
  EXPECT_EQ(Cli("verify --data-dir " + Data(), &out), 0) << out;
}

}  // namespace
}  // namespace invariantd
