// evidence_commit_bench: the CPU of one evidence commit
// (EvidenceStore::Append: one transaction with the violation row, its key
// index rows and the chain head), the work the evidence writer does for
// every violation before it may print or page it. The store lives in
// --dir (default /dev/shm: RAM, so fsync costs nothing and the time is the
// commit's own work; pass a disk directory to include the fsync).
//
//   build/bench/evidence_commit_bench [--benchmark_filter=...] [--dir D]
//
// Arguments: records per commit (1: a violation at a time, as at a steady
// trickle; 64: a burst), and whether the alert outbox hook runs in the
// commit (1: as in the daemon with paging configured: the alert upsert and
// one outbox row per sink, here Alertmanager and a webhook).
// docs/benchmarks.md records the results.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "exporters/alerting/outbox.h"
#include "exporters/evidence/store.h"

namespace invariantd {
namespace {

std::string g_dir = "/dev/shm";

EvidenceRecord Record(uint64_t n) {
  EvidenceRecord r;
  char id[33];
  std::snprintf(id, sizeof(id), "%032llx",
                static_cast<unsigned long long>(n) * 0x9e3779b97f4a7c15ULL);
  r.id = id;
  r.rule = "etcd-raft-term-never-regresses";
  r.kind = "monotonic";
  r.severity = "critical";
  r.reason = "decreased";
  r.message = "event.state.term went from 7 to 6";
  const std::string node = std::to_string(n % 1000);
  r.key.emplace_back("event.nid", node);
  r.key_json = absl::StrCat("{\"event.nid\":", node, "}");
  r.observed_json = absl::StrCat(6);
  r.previous_json = absl::StrCat(7);
  r.source = "/var/log/etcd/raft.ndjson";
  r.stream = 42;
  r.line = n;
  r.offset = n * 300;
  r.previous_line = n - 1;
  r.witness = std::string(300, 'x');
  r.ruleset_digest = std::string(32, 'a');
  r.version = "0.1.0";
  r.detected_unix_ms = 1700000000000;
  return r;
}

void BM_EvidenceCommit(benchmark::State& state) {
  const auto per_commit = static_cast<size_t>(state.range(0));
  const std::string path =
      absl::StrCat(g_dir, "/evidence_commit_bench.", getpid(), ".db");
  auto store = EvidenceStore::Open(path);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  if (state.range(1) != 0) {
    if (absl::Status s = CreateAlertingSchema((*store)->db()); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
    OutboxOptions o;
    o.sinks = {"alertmanager", "webhook"};
    o.sinks_without_payload = {"alertmanager"};
    o.violation_json = [](const EvidenceRecord& r) {
      return absl::StrCat("{\"id\":\"", r.id, "\",\"rule\":\"", r.rule, "\"}");
    };
    (*store)->AddTxnHook(OutboxHook(std::move(o)));
  }
  uint64_t n = 0;
  std::vector<EvidenceRecord> batch;
  for (auto _ : state) {
    batch.clear();
    for (size_t i = 0; i < per_commit; ++i) batch.push_back(Record(++n));
    auto added = (*store)->Append(&batch);
    if (!added.ok() || *added != per_commit) {
      state.SkipWithError("append failed");
      break;
    }
  }
  state.counters["records_per_s"] =
      benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
  store->reset();
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::remove(absl::StrCat(path, suffix).c_str());
  }
}

BENCHMARK(BM_EvidenceCommit)
    ->ArgNames({"records", "outbox"})
    ->ArgsProduct({{1, 64}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace invariantd

int main(int argc, char** argv) {
  // --dir D (ours), the rest to Google Benchmark.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      invariantd::g_dir = argv[++i];
    } else if (std::strncmp(argv[i], "--dir=", 6) == 0) {
      invariantd::g_dir = argv[i] + 6;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
