// The shipped rule packs over the real corpora in ../shared/corpora: clean
// traces produce no violation (and every rule really evaluates events), and
// each fault injected into a copy is reported on exactly the mutated line by
// exactly the expected rules.
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "rules/rule_set.h"
#include "sidecar/replayer.h"

namespace invariantd {
namespace {

using Json = nlohmann::json;
using Hits = std::set<std::pair<uint64_t, std::string>>;  // (line, rule)

std::string Repo(const std::string& p) {
  return absl::StrCat(INVARIANTD_SOURCE_DIR, "/", p);
}
std::string Corpus(const std::string& p) {
  return absl::StrCat(INVARIANTD_SOURCE_DIR, "/../shared/corpora/", p);
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing corpus file " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> lines = absl::StrSplit(ss.str(), '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

struct PackRun {
  Hits hits;
  std::vector<std::pair<std::string, RuleCounters>> stats;  // by rule name
  uint64_t rejected = 0;
};

PackRun RunPack(const std::string& pack,
                const std::vector<std::string>& lines) {
  LoadResult loaded = LoadRuleFiles({Repo("rules/packs/" + pack)});
  EXPECT_TRUE(loaded.ok());
  PackRun run;
  if (!loaded.ok()) return run;
  auto r = Replayer::Create(loaded.rules, ReplayerOptions{});
  EXPECT_TRUE(r.ok());
  const std::string text = absl::StrJoin(lines, "\n") + "\n";
  EXPECT_TRUE((*r)->ProcessText(text, "corpus",
                                [&](const Violation& v) {
                                  run.hits.emplace(v.line, v.rule);
                                })
                  .ok());
  for (const RuleStats& s : (*r)->engine().Stats()) {
    run.stats.emplace_back(s.rule->name, s.counters);
  }
  run.rejected = (*r)->stats().rejected_total();
  return run;
}

// ---- clean corpora ----

struct CleanCase {
  std::string pack;
  std::vector<std::string> files;
};

class CleanCorpusTest : public ::testing::TestWithParam<CleanCase> {};

TEST_P(CleanCorpusTest, NoViolationsAndEveryRuleEvaluates) {
  const CleanCase& c = GetParam();
  std::map<std::string, uint64_t> evaluated;
  for (const std::string& f : c.files) {
    // Each file is its own cluster: a fresh engine per file.
    const PackRun run = RunPack(c.pack, ReadLines(Corpus(f)));
    EXPECT_TRUE(run.hits.empty())
        << f << ": first false positive at line " << run.hits.begin()->first
        << " by " << run.hits.begin()->second;
    EXPECT_EQ(run.rejected, 0u) << f;
    for (const auto& [name, counters] : run.stats) {
      evaluated[name] += counters.evaluated;
      EXPECT_EQ(counters.skipped_type, 0u) << f << " " << name;
    }
  }
  for (const auto& [rule, n] : evaluated) {
    EXPECT_GT(n, 0u) << rule << " never evaluated an event: it checks nothing";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Packs, CleanCorpusTest,
    ::testing::Values(
        CleanCase{
            "etcd-raft.yaml",
            {"etcd-raft/trace-3node.ndjson", "etcd-raft/trace-10node.ndjson"}},
        CleanCase{"ccf-raft.yaml",
                  {"ccf/check_quorum.ndjson", "ccf/election.ndjson",
                   "ccf/late_candidate.ndjson", "ccf/reconnect.ndjson",
                   "ccf/reconnect_node.ndjson", "ccf/replicate.ndjson",
                   "ccf/replicate2.ndjson"}},
        CleanCase{"k8s-audit.yaml", {"k8s-audit/audit2rbac-demo.log"}}));

// ---- mutations ----

// Finds the first line index (0-based, >= from) whose parsed JSON satisfies
// `pred` given the JSON of all lines; fails the test if none.
size_t FindLine(const std::vector<Json>& docs,
                const std::function<bool(size_t)>& pred, size_t from = 1) {
  for (size_t i = from; i < docs.size(); ++i) {
    if (pred(i)) return i;
  }
  ADD_FAILURE() << "no line fits the mutation's precondition";
  return 0;
}

std::vector<Json> Parse(const std::vector<std::string>& lines) {
  std::vector<Json> docs;
  for (const auto& l : lines) docs.push_back(Json::parse(l));
  return docs;
}

// Index of the previous / next line about the same etcd node, or npos.
size_t Prev(const std::vector<Json>& d, size_t i) {
  for (size_t j = i; j-- > 0;) {
    if (d[j]["event"]["nid"] == d[i]["event"]["nid"]) return j;
  }
  return std::string::npos;
}
size_t NextOf(const std::vector<Json>& d, size_t i) {
  for (size_t j = i + 1; j < d.size(); ++j) {
    if (d[j]["event"]["nid"] == d[i]["event"]["nid"]) return j;
  }
  return std::string::npos;
}

class EtcdMutationTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    lines_ = ReadLines(Corpus(GetParam()));
    docs_ = Parse(lines_);
  }
  // Applies `mutate` to line i, runs the pack, and checks the hits.
  void Expect(size_t i, const std::function<void(Json&)>& mutate,
              const std::vector<std::string>& rules) {
    std::vector<std::string> lines = lines_;
    Json doc = docs_[i];
    mutate(doc);
    lines[i] = doc.dump();
    Hits want;
    for (const auto& r : rules) want.emplace(i + 1, r);
    EXPECT_EQ(RunPack("etcd-raft.yaml", lines).hits, want)
        << "mutated line " << i + 1 << ": " << lines[i];
  }
  const Json& E(size_t i) const { return docs_[i]["event"]; }
  bool Follower(size_t i) const { return E(i)["role"] == "StateFollower"; }

  std::vector<std::string> lines_;
  std::vector<Json> docs_;
};

TEST_P(EtcdMutationTest, TermRegressionIsCaughtOnItsLine) {
  const size_t i = FindLine(docs_, [&](size_t i) {
    const size_t p = Prev(docs_, i);
    return Follower(i) && E(i)["state"]["term"] >= 2 &&
           p != std::string::npos &&
           E(p)["state"]["term"] == E(i)["state"]["term"];
  });
  Expect(i,
         [](Json& d) {
           d["event"]["state"]["term"] =
               d["event"]["state"]["term"].get<int>() - 1;
         },
         {"etcd-raft-term-never-regresses"});
}

TEST_P(EtcdMutationTest, CommitRegressionIsCaughtOnItsLine) {
  const size_t i = FindLine(docs_, [&](size_t i) {
    const size_t p = Prev(docs_, i);
    const int c = E(i)["state"]["commit"];
    return Follower(i) && c >= 2 && p != std::string::npos &&
           E(p)["state"]["commit"] == c &&
           (!E(i).contains("applied") || E(i)["applied"] <= c - 1);
  });
  Expect(i,
         [](Json& d) {
           d["event"]["state"]["commit"] =
               d["event"]["state"]["commit"].get<int>() - 1;
         },
         {"etcd-raft-commit-never-regresses"});
}

TEST_P(EtcdMutationTest, SecondLeaderInATermIsCaughtOnItsLine) {
  const size_t i = FindLine(docs_, [&](size_t i) {
    if (!Follower(i)) return false;
    const size_t p = Prev(docs_, i), n = NextOf(docs_, i);
    if (p == std::string::npos || !Follower(p)) return false;
    if (n != std::string::npos && !Follower(n)) return false;
    for (size_t j = 0; j < i; ++j) {  // someone else already leads this term
      if (E(j)["role"] == "StateLeader" &&
          E(j)["state"]["term"] == E(i)["state"]["term"] &&
          E(j)["nid"] != E(i)["nid"]) {
        return true;
      }
    }
    return false;
  });
  Expect(i, [](Json& d) { d["event"]["role"] = "StateLeader"; },
         {"etcd-raft-one-leader-per-term", "etcd-raft-role-transitions"});
}

TEST_P(EtcdMutationTest, CommitBeyondLogIsCaughtOnItsLine) {
  const size_t i = FindLine(docs_, [&](size_t i) {
    return E(i)["state"]["commit"] >= 1 && E(i)["log"] >= 1;
  });
  Expect(i,
         [](Json& d) {
           d["event"]["log"] = d["event"]["state"]["commit"].get<int>() - 1;
         },
         {"etcd-raft-commit-within-log"});
}

TEST_P(EtcdMutationTest, UnknownRoleIsCaughtOnItsLine) {
  const size_t i = FindLine(docs_, [&](size_t i) { return i > 20; });
  Expect(i, [](Json& d) { d["event"]["role"] = "StateObserver"; },
         {"etcd-raft-role-transitions"});
}

TEST_P(EtcdMutationTest, MalformedLineIsSkippedAndNothingElseChanges) {
  std::vector<std::string> lines = lines_;
  lines[5] = lines[5].substr(0, lines[5].size() / 2);  // torn JSON
  const PackRun run = RunPack("etcd-raft.yaml", lines);
  EXPECT_TRUE(run.hits.empty());
  EXPECT_EQ(run.rejected, 1u);
}

INSTANTIATE_TEST_SUITE_P(Traces, EtcdMutationTest,
                         ::testing::Values("etcd-raft/trace-3node.ndjson",
                                           "etcd-raft/trace-10node.ndjson"));

// CCF: the node id of a raft event in either format.
std::string CcfNode(const Json& d) {
  if (d["msg"].contains("node")) return d["msg"]["node"];
  return d["msg"]["state"]["node_id"];
}
bool CcfRaft(const Json& d) {
  return d["tag"] == "raft_trace" || (d["msg"].contains("event") &&
                                      d["msg"]["event"]["component"] == "raft");
}

class CcfMutationTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CcfMutationTest, ViewRegressionIsCaughtOnItsLine) {
  std::vector<std::string> lines = ReadLines(Corpus(GetParam()));
  const std::vector<Json> docs = Parse(lines);
  // A raft event in view >= 1 whose node's previous raft event had the same
  // view and that is not a leader event (so no second leader appears).
  const size_t i = FindLine(docs, [&](size_t i) {
    if (!CcfRaft(docs[i]) || docs[i]["msg"]["state"]["current_view"] < 1) {
      return false;
    }
    const Json& msg = docs[i]["msg"];
    const std::string role = msg.contains("leadership")
                                 ? msg["leadership"].get<std::string>()
                                 : msg["state"].value("leadership_state", "");
    if (role == "Leader") return false;
    for (size_t j = i; j-- > 0;) {
      if (CcfRaft(docs[j]) && CcfNode(docs[j]) == CcfNode(docs[i])) {
        return docs[j]["msg"]["state"]["current_view"] ==
               docs[i]["msg"]["state"]["current_view"];
      }
    }
    return false;
  });
  Json d = docs[i];
  d["msg"]["state"]["current_view"] =
      d["msg"]["state"]["current_view"].get<int>() - 1;
  lines[i] = d.dump();
  EXPECT_EQ(RunPack("ccf-raft.yaml", lines).hits,
            (Hits{{i + 1, "ccf-view-never-regresses"}}))
      << lines[i];
}

INSTANTIATE_TEST_SUITE_P(Traces, CcfMutationTest,
                         ::testing::Values("ccf/election.ndjson",
                                           "ccf/replicate2.ndjson",
                                           "ccf/check_quorum.ndjson",
                                           "ccf/late_candidate.ndjson"));

TEST(CcfLedgerMutationTest, DivergentEntryIsCaughtOnItsLine) {
  std::vector<std::string> lines = ReadLines(Corpus("ccf/election.ndjson"));
  const std::vector<Json> docs = Parse(lines);
  auto is_append = [&](size_t i) {
    const Json& m = docs[i]["msg"];
    return m.contains("event") && m["event"]["component"] == "ledger";
  };
  // The second append of an (index, term) that some node appended before.
  const size_t i = FindLine(docs, [&](size_t i) {
    if (!is_append(i)) return false;
    for (size_t j = 0; j < i; ++j) {
      if (is_append(j) && docs[j]["msg"]["index"] == docs[i]["msg"]["index"] &&
          docs[j]["msg"]["term"] == docs[i]["msg"]["term"]) {
        return true;
      }
    }
    return false;
  });
  Json d = docs[i];
  d["msg"]["data"] = "dGFtcGVyZWQ=";
  lines[i] = d.dump();
  EXPECT_EQ(RunPack("ccf-raft.yaml", lines).hits,
            (Hits{{i + 1, "ccf-ledger-entries-agree"}}));
}

TEST(K8sAuditMutationTest, StageAfterCompletionIsCaughtOnItsLine) {
  std::vector<std::string> lines =
      ReadLines(Corpus("k8s-audit/audit2rbac-demo.log"));
  const std::vector<Json> docs = Parse(lines);
  const size_t i = FindLine(
      docs, [&](size_t i) { return docs[i]["stage"] == "ResponseComplete"; },
      100);
  // A forged record for the same request, inserted right after completion.
  Json forged = docs[i];
  forged["stage"] = "ResponseStarted";
  forged["user"]["username"] = "mallory";
  lines.insert(lines.begin() + static_cast<long>(i) + 1, forged.dump());
  EXPECT_EQ(RunPack("k8s-audit.yaml", lines).hits,
            (Hits{{i + 2, "k8s-audit-stage-order"}}));
}

TEST(K8sAuditMutationTest, ExactRedeliveryIsNotAViolation) {
  std::vector<std::string> lines =
      ReadLines(Corpus("k8s-audit/audit2rbac-demo.log"));
  // Deliver the first 300 records twice (at-least-once delivery).
  std::vector<std::string> twice(lines.begin(), lines.begin() + 300);
  twice.insert(twice.end(), lines.begin(), lines.end());
  EXPECT_TRUE(RunPack("k8s-audit.yaml", twice).hits.empty());
}

}  // namespace
}  // namespace invariantd
