// `invariantd run --check-config` (the real binary): what a start would
// refuse is refused, all at once, with exit status 2; what it would accept
// is printed without a token; nothing is written.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/child_process.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct CheckRun {
  int status;
  std::string out, err;
};

CheckRun CheckConfig(std::vector<std::string> args) {
  args.insert(args.begin(), {INVARIANTD_BINARY, "run"});
  args.push_back("--check-config");
  Child c(args);
  const int status = c.Wait();
  return {status, c.out(), c.err()};
}

std::string Write(const TempDir& dir, const std::string& name,
                  const std::string& content) {
  const std::string path = dir.File(name);
  std::ofstream(path) << content;
  return path;
}

TEST(CheckConfigTest, AcceptsAValidConfigurationAndWritesNothing) {
  TempDir dir;
  const std::string data = dir.File("data");
  CheckRun r =
      CheckConfig({"--rules", Src("rules/packs/etcd-raft.yaml"), "--data-dir",
                   data, "--tail", dir.File("*.ndjson")});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ok: invariantd run would start"));
  EXPECT_THAT(r.out, HasSubstr("rules: 6 rules in 1 file(s)"));
  EXPECT_THAT(r.out, HasSubstr("listen: 127.0.0.1:9464"));
  EXPECT_THAT(r.out, HasSubstr("tokens: ingest open, query open"));
  EXPECT_FALSE(std::filesystem::exists(data));
}

TEST(CheckConfigTest, OffLoopbackWithoutTokensIsRefusedLikeAStart) {
  TempDir dir;
  CheckRun r = CheckConfig({"--rules", Src("rules/packs/etcd-raft.yaml"),
                            "--listen", "0.0.0.0:9464"});
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("not loopback"));
  EXPECT_THAT(r.err, HasSubstr("--ingest-token-file"));
  EXPECT_THAT(r.err, HasSubstr("--query-token-file"));
  EXPECT_THAT(r.out, Not(HasSubstr("ok:")));
}

TEST(CheckConfigTest, TokensAreReadButNeverPrinted) {
  TempDir dir;
  const std::string ingest = Write(dir, "ingest", "secret-ingest-token\n");
  const std::string query = Write(dir, "query", "secret-query-token\n");
  CheckRun r =
      CheckConfig({"--rules", Src("rules/packs"), "--listen", "0.0.0.0:9464",
                   "--ingest-token-file", ingest, "--query-token-file", query,
                   "--alertmanager", "http://alertmanager:9093"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tokens: ingest required, query required"));
  EXPECT_THAT(r.out, HasSubstr("paging: alertmanager/alertmanager:9093"));
  EXPECT_THAT(r.out + r.err, Not(HasSubstr("secret-")));
}

TEST(CheckConfigTest, EveryProblemIsListedAtOnce) {
  TempDir dir;
  const std::string bad_rules = Write(dir, "bad.yaml",
                                      "rules:\n"
                                      "  - name: r\n"
                                      "    kind: monotonic\n");
  const std::string empty_tokens = Write(dir, "tokens", "# none\n");
  CheckRun r =
      CheckConfig({"--rules", bad_rules, "--ingest-token-file", empty_tokens,
                   "--webhook-secret-file", dir.File("absent.key")});
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("bad.yaml:"));              // the rule file
  EXPECT_THAT(r.err, HasSubstr("holds no token"));         // the token file
  EXPECT_THAT(r.err, HasSubstr("without a webhook URL"));  // the config
  EXPECT_THAT(r.err, HasSubstr("invariantd run would not start"));
}

TEST(CheckConfigTest, ConfigFileErrorsAreReported) {
  TempDir dir;
  const std::string config =
      Write(dir, "config.yaml", "rules: [x]\nlisten: 0.0.0.0:9464\nbogus: 1\n");
  CheckRun r = CheckConfig({"--config", config});
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown key 'bogus'"));
}

}  // namespace
}  // namespace invariantd
