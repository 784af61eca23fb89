// End-to-end tests of the real `invariantd` binary: exit statuses, the
// jsonl contract, summaries, stdin, sanitization of hostile input, bounded
// memory on a long stream, validate and test.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/temp_dir.h"

extern char** environ;

namespace invariantd {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

struct Result {
  int status = -1;
  std::string out;
  std::string err;
  long max_rss_kb = 0;
};

std::string ReadAll(int fd) {
  std::string s;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, n);
  return s;
}

// Produces stdin in chunks: appends the next chunk, false when done.
using ChunkSource = std::function<bool(std::string*)>;

// Runs the binary with `args`, feeding stdin from `source` on a writer
// thread (so large inputs stream and are never held whole), and collects
// stdout, stderr, the exit status and the child's peak RSS. (The peak RSS
// of a posix_spawn child includes the parent's pages at spawn time, which
// is one more reason not to build big inputs in memory.)
Result Invariantd(const std::vector<std::string>& args,
                  const ChunkSource& source) {
  int in[2], out[2], err[2];
  EXPECT_EQ(pipe(in), 0);
  EXPECT_EQ(pipe(out), 0);
  EXPECT_EQ(pipe(err), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) {
    posix_spawn_file_actions_addclose(&fa, fd);
  }
  std::vector<std::string> argv_s = {INVARIANTD_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  EXPECT_EQ(
      posix_spawn(&pid, INVARIANTD_BINARY, &fa, nullptr, argv.data(), environ),
      0);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  std::thread writer([&] {
    std::string chunk;
    bool more = true;
    while (more) {
      chunk.clear();
      more = source(&chunk);
      size_t done = 0;
      while (done < chunk.size()) {
        const ssize_t n =
            write(in[1], chunk.data() + done, chunk.size() - done);
        if (n <= 0) {
          more = false;
          break;
        }
        done += static_cast<size_t>(n);
      }
    }
    close(in[1]);
  });
  Result r;
  std::thread err_reader([&] { r.err = ReadAll(err[0]); });
  r.out = ReadAll(out[0]);
  err_reader.join();
  writer.join();
  close(out[0]);
  close(err[0]);
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.max_rss_kb = ru.ru_maxrss;
  return r;
}

Result Invariantd(const std::vector<std::string>& args,
                  const std::string& input = "") {
  return Invariantd(args, [&input](std::string* chunk) {
    *chunk = input;
    return false;
  });
}

std::string Src(const std::string& p) {
  return absl::StrCat(INVARIANTD_SOURCE_DIR, "/", p);
}

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> v = absl::StrSplit(s, '\n', absl::SkipEmpty());
  return v;
}

TEST(CliTest, ReplayReportsTheSampleFaultsAsJsonLines) {
  const Result r =
      Invariantd({"replay", "--rules", Src("rules/packs/etcd-raft.yaml"),
                  Src("rules/packs/samples/etcd-raft-faults.ndjson")});
  EXPECT_EQ(r.status, 1) << r.err;
  const auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  for (const std::string& l : lines) {
    const Json j = Json::parse(l);
    for (const char* f :
         {"id", "rule", "kind", "severity", "key", "source", "line", "offset",
          "observed", "previous", "message"}) {
      EXPECT_TRUE(j.contains(f)) << f << " missing in " << l;
    }
    EXPECT_EQ(j["id"].get<std::string>().size(), 32u);
    EXPECT_TRUE(j["key"].is_object());
  }
  const Json first = Json::parse(lines[0]);
  EXPECT_EQ(first["rule"], "etcd-raft-term-never-regresses");
  EXPECT_EQ(first["kind"], "monotonic");
  EXPECT_EQ(first["line"], 102);
  EXPECT_EQ(first["observed"], 1);
  EXPECT_EQ(first["previous"], 2);
  EXPECT_EQ(first["key"]["event.nid"], "1");
  EXPECT_THAT(r.err, HasSubstr("4 violations"));
  EXPECT_THAT(r.err, HasSubstr("rule etcd-raft-term-never-regresses"));
}

TEST(CliTest, ViolationIdsAreDeterministic) {
  const std::vector<std::string> args = {
      "replay", "--no-summary", "--rules", Src("rules/packs/etcd-raft.yaml"),
      Src("rules/packs/samples/etcd-raft-faults.ndjson")};
  const Result a = Invariantd(args);
  const Result b = Invariantd(args);
  ASSERT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  EXPECT_TRUE(a.err.empty()) << a.err;
}

TEST(CliTest, CleanCorpusExitsZero) {
  const Result r =
      Invariantd({"replay", "--rules", Src("rules/packs/etcd-raft.yaml"),
                  Src("../shared/corpora/etcd-raft/trace-3node.ndjson")});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  EXPECT_THAT(r.err, HasSubstr("386 records"));
}

TEST(CliTest, StdinAndTextFormat) {
  const Result r =
      Invariantd({"replay", "--format", "text", "--rules",
                  Src("rules/packs/etcd-raft.yaml"), "-"},
                 "{\"event\":{\"nid\":\"1\",\"state\":{\"term\":5}}}\n"
                 "{\"event\":{\"nid\":\"1\",\"state\":{\"term\":4}}}\n");
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.out, HasSubstr("-:2: critical etcd-raft-term-never-regresses"));
}

TEST(CliTest, BadRulesExitTwoWithLocatedDiagnostics) {
  char path[] = "/tmp/invariantd-cli-XXXXXX.yaml";
  const int fd = mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  const std::string bad =
      "rules:\n  - name: x\n    kind: monotonic\n    field: a <\n"
      "    strct: true\n";
  ASSERT_EQ(write(fd, bad.data(), bad.size()),
            static_cast<ssize_t>(bad.size()));
  close(fd);
  const Result r = Invariantd({"replay", "--rules", path, "-"}, "");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat(path,
                                            ":5:5: error: unknown "
                                            "field 'strct'")));
  EXPECT_THAT(r.err, HasSubstr(absl::StrCat(path, ":4:")));
  const Result v = Invariantd({"validate", path});
  EXPECT_EQ(v.status, 2);
  EXPECT_THAT(v.err, HasSubstr("2 error(s)"));
  const Result j = Invariantd({"validate", "--json", path});
  EXPECT_EQ(j.status, 2);
  for (const std::string& l : Lines(j.out)) {
    EXPECT_TRUE(Json::parse(l).contains("column")) << l;
  }
  unlink(path);
  EXPECT_EQ(Invariantd({"validate", Src("rules/packs")}).status, 0);
  EXPECT_EQ(Invariantd({"replay"}).status, 2);  // usage: --rules required
}

TEST(CliTest, MissingInputFileIsAnInputError) {
  const Result r =
      Invariantd({"replay", "--rules", Src("rules/packs/etcd-raft.yaml"),
                  "/nonexistent/trace.ndjson"});
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot open /nonexistent/trace.ndjson"));
}

// Control characters, ANSI escapes, line separators and bidi overrides in
// event data never reach stdout raw, in either format.
TEST(CliTest, HostileFieldValuesAreNeutralizedInEveryFormat) {
  const std::string evil =
      "n\\r\\nFORGED 1 critical\\u001b[31m\\u2028\\u202e\\u0000\\u0085";
  const std::string input =
      absl::StrCat("{\"event\":{\"nid\":\"", evil,
                   "\",\"state\":{\"term\":5}}}\n{\"event\":{\"nid\":\"", evil,
                   "\",\"state\":{\"term\":1}}}\n");
  for (const char* format : {"jsonl", "text"}) {
    const Result r = Invariantd({"replay", "--format", format, "--rules",
                                 Src("rules/packs/etcd-raft.yaml"), "-"},
                                input);
    EXPECT_EQ(r.status, 1) << format;
    ASSERT_EQ(Lines(r.out).size(), 1u) << format << ": " << r.out;
    for (unsigned char c : r.out.substr(0, r.out.size() - 1)) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f)
          << format << ": raw byte " << static_cast<int>(c);
    }
  }
}

TEST(CliTest, MalformedAndOversizedRecordsAreSkippedNotFatal) {
  std::string input = "{\"event\":{\"nid\":\"1\",\"state\":{\"term\":5}}}\n";
  absl::StrAppend(&input, "{not json\n", std::string(300000, 'x'), "\n",
                  "\xff\xfe\n",
                  "{\"event\":{\"nid\":\"1\",\"state\":{\"term\":3}}}\n");
  const Result r = Invariantd({"replay", "--max-line-bytes", "4096", "--rules",
                               Src("rules/packs/etcd-raft.yaml"), "-"},
                              input);
  EXPECT_EQ(r.status, 1);
  const auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(Json::parse(lines[0])["line"], 5);
  EXPECT_THAT(r.err, HasSubstr("-:2: skipped (invalid_json)"));
  EXPECT_THAT(r.err, HasSubstr("-:3: skipped (line_too_long)"));
  EXPECT_THAT(r.err, HasSubstr("-:4: skipped (invalid_utf8)"));
  EXPECT_THAT(r.err, HasSubstr("invalid_json=1"));
}

// `replay --config` judges as the daemon with that configuration would:
// its rules, its redaction, its input limits; flags still override it.
TEST(CliTest, ReplayWithTheDaemonsConfigurationJudgesAsTheDaemon) {
  TempDir dir;
  const std::string events =
      "{\"event\":{\"nid\":\"secret-42\",\"state\":{\"term\":5}}}\n"
      "{\"event\":{\"nid\":\"secret-42\",\"state\":{\"term\":4}}}\n";
  const std::string config = dir.File("invariantd.yaml");
  {
    std::ofstream c(config);
    c << "rules: [" << Src("rules/packs/etcd-raft.yaml") << "]\n"
      << "redact:\n"
      << "  - {name: node, pattern: 'secret-[0-9]+', replacement: NODE}\n";
  }
  // Without --config the node id is printed as it is.
  Result r = Invariantd(
      {"replay", "--rules", Src("rules/packs/etcd-raft.yaml"), "-"}, events);
  EXPECT_EQ(r.status, 1);
  EXPECT_THAT(r.out, HasSubstr("secret-42"));
  // With it: the config's rules (no --rules), and its redaction.
  r = Invariantd({"replay", "--config", config, "-"}, events);
  EXPECT_EQ(r.status, 1) << r.err;
  ASSERT_EQ(Lines(r.out).size(), 1u);
  EXPECT_EQ(r.out.find("secret-42"), std::string::npos) << r.out;
  EXPECT_EQ(Json::parse(r.out)["key"]["event.nid"], "NODE");

  // The daemon's input limits: nesting of 3 is too deep for max_depth 2.
  const std::string shallow = dir.File("shallow.yaml");
  {
    std::ofstream c(shallow);
    c << "rules: [" << Src("rules/packs/etcd-raft.yaml") << "]\n"
      << "input: {max_depth: 2, dedupe_window: 0}\n";
  }
  r = Invariantd({"replay", "--config", shallow, "-"}, events);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("-:1: skipped (too_deep)"));

  // Flags override the file: its 64-byte line limit skips both lines,
  // --max-line-bytes lets them through; --rules replaces its rules.
  const std::string short_lines = dir.File("short.yaml");
  {
    std::ofstream c(short_lines);
    c << "rules: [" << Src("rules/packs/k8s-audit.yaml") << "]\n"
      << "input: {max_line_bytes: 64}\n";
  }
  const std::string padded =
      "{\"event\":{\"nid\":\"n1\",\"state\":{\"term\":5}},\"pad\":\"" +
      std::string(40, 'x') + "\"}\n" +
      "{\"event\":{\"nid\":\"n1\",\"state\":{\"term\":4}},\"pad\":\"" +
      std::string(40, 'x') + "\"}\n";
  r = Invariantd({"replay", "--config", short_lines, "--rules",
                  Src("rules/packs/etcd-raft.yaml"), "-"},
                 padded);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("-:2: skipped (line_too_long)"));
  r = Invariantd({"replay", "--config", short_lines, "--max-line-bytes", "4096",
                  "--rules", Src("rules/packs/etcd-raft.yaml"), "-"},
                 padded);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(Json::parse(r.out)["rule"], "etcd-raft-term-never-regresses");

  // No rules anywhere, and a bad configuration: usage errors with reasons.
  const std::string norules = dir.File("norules.yaml");
  { std::ofstream(norules) << "workers: 1\n"; }
  r = Invariantd({"replay", "--config", norules, "-"}, events);
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("no rules"));
  const std::string bad = dir.File("bad.yaml");
  { std::ofstream(bad) << "input: {max_depht: 2}\n"; }
  r = Invariantd({"replay", "--config", bad, "--rules",
                  Src("rules/packs/etcd-raft.yaml"), "-"},
                 events);
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr(bad + ":1:9: unknown key 'max_depht'"));

  // validate --config checks the rules against the daemon's rule limits.
  const std::string tight = dir.File("tight.yaml");
  { std::ofstream(tight) << "rule_limits: {max_file_bytes: 1024}\n"; }
  r = Invariantd({"validate", Src("rules/packs/etcd-raft.yaml")}, "");
  EXPECT_EQ(r.status, 0) << r.err;
  r = Invariantd(
      {"validate", "--config", tight, Src("rules/packs/etcd-raft.yaml")}, "");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("the limit is 1024")) << r.err;
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INVARIANTD_ASAN 1
#endif
#endif
#if !defined(__SANITIZE_ADDRESS__) && !defined(INVARIANTD_ASAN)
// Memory grows with tracked keys, not with events: 400k events over 50 keys
// (~100 MB of input) stream through in about 12 MiB (release build).
TEST(CliTest, LongStreamRunsInBoundedMemory) {
  int i = 0;
  const std::string pad(140, 'p');
  const Result r = Invariantd(
      {"replay", "--no-summary", "--rules", Src("rules/packs/etcd-raft.yaml"),
       "-"},
      [&](std::string* chunk) {
        for (int k = 0; k < 1000 && i < 400000; ++k, ++i) {
          absl::StrAppend(chunk, "{\"event\":{\"nid\":\"", i % 50,
                          "\",\"state\":{\"term\":", i / 50,
                          ",\"commit\":", i / 50,
                          "},\"role\":\"StateFollower\",\"log\":", i / 50,
                          "},\"pad\":\"", pad, "\"}\n");
        }
        return i < 400000;
      });
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_LT(r.max_rss_kb, 32 * 1024) << "peak RSS " << r.max_rss_kb << " KiB";
}
#endif

TEST(CliTest, RuleTestCommandPassesAndFailsWithADiff) {
  const Result ok =
      Invariantd({"test", Src("rules/packs/tests/etcd-raft.test.yaml"),
                  Src("rules/packs/tests/ccf-raft.test.yaml"),
                  Src("rules/packs/tests/k8s-audit.test.yaml")});
  EXPECT_EQ(ok.status, 0) << ok.out;
  EXPECT_THAT(ok.out, HasSubstr("14 passed, 0 failed"));

  char path[] = "/tmp/invariantd-ruletest-XXXXXX.yaml";
  const int fd = mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  const std::string t =
      "rules:\n  - {name: m, kind: monotonic, key: [k], field: v}\n"
      "tests:\n  - name: wrong expectation\n    events: |\n"
      "      {\"k\": 1, \"v\": 2}\n      {\"k\": 1, \"v\": 1}\n"
      "    expect:\n      - {rule: m, line: 1}\n";
  ASSERT_EQ(write(fd, t.data(), t.size()), static_cast<ssize_t>(t.size()));
  close(fd);
  const Result bad = Invariantd({"test", path});
  unlink(path);
  EXPECT_EQ(bad.status, 1);
  EXPECT_THAT(bad.out, HasSubstr("- missing:    rule m at line 1"));
  EXPECT_THAT(bad.out, HasSubstr("+ unexpected: rule m at line 2"));
  EXPECT_THAT(bad.out, HasSubstr("0 passed, 1 failed"));
}

}  // namespace
}  // namespace invariantd
