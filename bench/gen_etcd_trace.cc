// gen_etcd_trace: writes a large synthetic trace in etcd raft's trace format
// (the format of ../shared/corpora/etcd-raft/) for benchmarks.
//
// Many independent clusters (3 or 5 nodes each) run a simplified but valid
// raft: elections raise the term, exactly one leader per term, commit never
// passes the log, applied never passes commit. Node ids are globally unique
// ("c17-n2") and each cluster owns a disjoint term range, so the whole
// stream is clean for rules/packs/etcd-raft.yaml; `--faults N` injects N
// term regressions (each caught by exactly one rule) at known lines, which
// are listed on stderr.
//
//   gen_etcd_trace --events 10000000 --clusters 200000 --nodes 5
//                  [--zipf 0.99] [--faults 10] [--seed 1] > trace.ndjson
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace {

struct Node {
  int64_t term = 1;
  int64_t commit = 0;
  int64_t log = 0;
  int64_t applied = 0;
  int role = 0;  // 0 follower, 1 candidate, 2 leader
  int64_t last_emitted_term = 0;
  int last_role = 0;  // role on the node's last emitted event
};

struct Cluster {
  std::vector<Node> nodes;
  int leader = 0;
  int64_t term = 1;
  int64_t log = 0;
};

const char* kRoles[] = {"StateFollower", "StateCandidate", "StateLeader"};

// Zipf(s) over [0, n) by inverse CDF on a precomputed table.
class Zipf {
 public:
  Zipf(size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      sum += 1.0 / std::pow(static_cast<double>(i + 1), s);
      cdf_[i] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  size_t operator()(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return static_cast<size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) -
                               cdf_.begin());
  }

 private:
  std::vector<double> cdf_;
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t events = 1'000'000;
  size_t clusters = 1000;
  int nodes = 5;
  double zipf = 0;
  uint64_t faults = 0;
  uint64_t seed = 1;
  CLI::App app{"Synthetic etcd raft trace generator"};
  app.add_option("--events", events, "Events to write");
  app.add_option("--clusters", clusters, "Independent clusters")
      ->check(CLI::PositiveNumber);
  app.add_option("--nodes", nodes, "Nodes per cluster")
      ->check(CLI::Range(3, 9));
  app.add_option("--zipf", zipf, "Cluster skew (0 = uniform, e.g. 0.99)");
  app.add_option("--faults", faults, "Term regressions to inject");
  app.add_option("--seed", seed, "Random seed");
  CLI11_PARSE(app, argc, argv);

  std::mt19937_64 rng(seed);
  std::vector<Cluster> cs(clusters);
  for (Cluster& c : cs) c.nodes.resize(static_cast<size_t>(nodes));
  for (Cluster& c : cs) c.nodes[0].role = c.nodes[0].last_role = 2;
  std::unique_ptr<Zipf> z;
  if (zipf > 0) z = std::make_unique<Zipf>(clusters, zipf);
  const uint64_t fault_every = faults > 0 ? events / (faults + 1) : 0;
  uint64_t next_fault = fault_every;

  std::string buf;
  buf.reserve(1 << 22);
  double ts = 1719889274.0;
  uint64_t line = 0;
  auto emit = [&](size_t ci, int ni, const char* name, int64_t term_delta) {
    Cluster& c = cs[ci];
    Node& n = c.nodes[static_cast<size_t>(ni)];
    ++line;
    // Terms of cluster ci live in [ci * 2^32, (ci + 1) * 2^32).
    const int64_t term =
        static_cast<int64_t>(ci) * (int64_t{1} << 32) + n.term + term_delta;
    ts += 0.000017;
    absl::StrAppend(
        &buf, "{\"level\":\"debug\",\"ts\":", absl::StrFormat("%.6f", ts),
        ",\"caller\":\"rafttest/trace_logger.go:42\",\"msg\":\"trace\","
        "\"tag\":\"trace\",\"event\":{\"name\":\"",
        name, "\",\"nid\":\"c", ci, "-n", ni, "\",\"state\":{\"term\":", term,
        ",\"vote\":\"c", ci, "-n", c.leader, "\",\"commit\":", n.commit,
        "},\"role\":\"", kRoles[n.role], "\",\"log\":", n.log,
        ",\"applied\":", n.applied, ",\"conf\":[[\"1\",\"2\",\"3\"],[]]}}\n");
    if (buf.size() > (1 << 22) - 1024) {
      std::fwrite(buf.data(), 1, buf.size(), stdout);
      buf.clear();
    }
  };
  while (line < events) {
    const size_t ci = z ? (*z)(rng) : rng() % clusters;
    Cluster& c = cs[ci];
    const uint64_t r = rng();
    const int ni = static_cast<int>((r >> 8) % static_cast<uint64_t>(nodes));
    Node& n = c.nodes[static_cast<size_t>(ni)];
    if ((r & 0xff) == 0 && ni != c.leader && n.last_role == 0 &&
        events - line >= 2) {
      // Election: this follower campaigns (Candidate, next term) and wins.
      c.nodes[static_cast<size_t>(c.leader)].role = 0;
      ++c.term;
      n.term = c.term;
      n.role = 1;
      emit(ci, ni, "BecomeCandidate", 0);
      c.leader = ni;
      n.role = 2;
      emit(ci, ni, "BecomeLeader", 0);
      n.last_emitted_term = n.term;
      n.last_role = 2;
      continue;
    }
    const char* name;
    if (ni == c.leader) {
      ++c.log;
      n.log = c.log;
      n.commit = std::max(n.commit, c.log - 1);
      n.applied = std::max(n.applied, n.commit - 1);
      name = "Replicate";
    } else {
      // A follower catches up to the leader's term and (part of) its log.
      n.term = c.term;
      n.role = 0;
      n.log = std::max(n.log, c.log - static_cast<int64_t>(r >> 60));
      n.commit = std::max(
          n.commit,
          std::min(n.log, c.nodes[static_cast<size_t>(c.leader)].commit));
      n.applied = std::max(n.applied, n.commit - 1);
      name = "ReceiveAppendEntriesRequest";
    }
    int64_t delta = 0;
    if (fault_every != 0 && line + 1 >= next_fault && n.role == 0 &&
        n.term > 1 && n.last_emitted_term == n.term) {
      delta = -1;  // injected: a follower's term goes backwards on this line
      std::fprintf(stderr, "fault line=%llu nid=c%zu-n%d\n",
                   static_cast<unsigned long long>(line + 1), ci, ni);
      next_fault += fault_every;
    }
    emit(ci, ni, name, delta);
    n.last_emitted_term = n.term;
    n.last_role = n.role;
  }
  std::fwrite(buf.data(), 1, buf.size(), stdout);
  return 0;
}
