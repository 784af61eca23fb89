// checkpoint_bench: what one rule-state checkpoint costs the thread that
// takes it, i.e. how long it holds up the events behind it (issue 3's
// latency tail; sidecar/pipeline takes one every 100 ms).
//
//   BM_DispatcherImage/N  the dispatcher's part: the N event identities its
//                         redelivery window took in since the last image
//                         (N = events per checkpoint interval; 41,500 at
//                         415k events/s)
//   BM_WorkerImage/N/P/A  a worker's part with the etcd-raft pack over 250k
//                         node keys: the changes of N events, plus a slice
//                         of P% of the rolling base (0: changes only),
//                         scanned when the image is taken (A = 0) or copied
//                         ahead between batches of 64 events (A = 1), as
//                         the daemon's workers do
//
//   build/bench/checkpoint_bench
//
// docs/benchmarks.md records the results.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "rules/engine.h"
#include "rules/rule_set.h"
#include "sidecar/core/binary.h"
#include "sidecar/core/field_path.h"

namespace invariantd {
namespace {

constexpr int64_t kNodes = 250000;

// The etcd-raft pack, or null after marking the benchmark failed.
std::shared_ptr<const RuleSet> LoadPack(benchmark::State& state) {
  LoadResult loaded = LoadRuleFiles({"rules/packs/etcd-raft.yaml"});
  if (!loaded.ok()) {
    state.SkipWithError(
        "cannot load rules/packs/etcd-raft.yaml (run from the repository "
        "root)");
    return nullptr;
  }
  return loaded.rules;
}

// Events of the etcd trace shape, as the decoder leaves them.
class Events {
 public:
  explicit Events(const FieldSet& fields) : fields_(fields) {
    auto slot = [&](const char* path) {
      return fields.Find(*FieldPath::Parse(path));
    };
    name_ = slot("name");
    nid_ = slot("event.nid");
    term_ = slot("event.state.term");
    commit_ = slot("event.state.commit");
    role_ = slot("event.role");
    log_ = slot("event.log");
  }
  // Event number `i`: node i mod kNodes, commit index rising with i.
  const Event& Make(int64_t i) {
    e_.Reset(fields_.size());
    raw_ = absl::StrCat("{\"n\":", i, "}");
    e_.raw = raw_;
    e_.position.line = static_cast<uint64_t>(i);
    auto set = [&](int s, Value v) {
      if (s >= 0) e_.fields[s] = v;
    };
    nid_text_ = absl::StrCat(i % kNodes);
    set(name_, Value::String("Receive"));
    set(nid_, Value::String(nid_text_));
    set(term_, Value::Int(3));
    set(commit_, Value::Int(i / kNodes + 1));
    set(role_, Value::String("StateFollower"));
    set(log_, Value::Int(i / kNodes + 5));
    return e_;
  }

 private:
  const FieldSet& fields_;
  int name_, nid_, term_, commit_, role_, log_;
  Event e_;
  std::string raw_, nid_text_;
};

void BM_DispatcherImage(benchmark::State& state) {
  const int64_t per_interval = state.range(0);
  const std::shared_ptr<const RuleSet> rules = LoadPack(state);
  if (rules == nullptr) return;
  EngineOptions opts;  // the default window: 65,536 identities
  Engine engine(rules, opts);
  engine.TrackChanges();
  Events events(rules->fields());
  PreparedEvent p = engine.NewPrepared();
  int64_t i = 0;
  ImageSpec spec;
  spec.slice = true;
  spec.first = 1;
  spec.last = 0;  // empty slice: the dispatcher's rule states are empty
  uint64_t bytes = 0;
  std::vector<Pieces> images;
  for (auto _ : state) {
    state.PauseTiming();
    for (int64_t k = 0; k < per_interval; ++k, ++i) {
      const Event& e = events.Make(i);
      engine.Prepare(e, &p);
      engine.IsRedelivery(p.identity);
    }
    images.clear();
    Pieces& image = images.emplace_back();
    state.ResumeTiming();
    engine.SaveState(spec, &image);
  }
  if (!images.empty()) bytes = images.back().size();
  state.counters["image_bytes"] = static_cast<double>(bytes);
}

void BM_WorkerImage(benchmark::State& state) {
  const int64_t per_interval = state.range(0);
  const std::shared_ptr<const RuleSet> rules = LoadPack(state);
  if (rules == nullptr) return;
  EngineOptions opts;
  opts.dedupe_window = 0;  // the dispatcher's job
  Engine engine(rules, opts);
  Events events(rules->fields());
  std::vector<Violation> out;
  int64_t i = 0;
  for (; i < 2 * kNodes; ++i) engine.Process(events.Make(i), &out);
  engine.TrackChanges();
  // Percent of the hash space in each image's slice (0: changes only).
  const uint64_t percent = static_cast<uint64_t>(state.range(1));
  const uint64_t width = UINT64_MAX / 100 * percent;
  // 1: the slice is copied between batches of 64 events, as the daemon's
  // workers do (Engine::CaptureSlice, 2,048 slots a step); 0: scanned when
  // the image is taken.
  const bool ahead = state.range(2) != 0;
  uint64_t sweep = 0;
  auto next_spec = [&] {
    ImageSpec spec;
    spec.slice = width > 0;
    if (spec.slice) {
      spec.first = sweep;
      spec.last = UINT64_MAX - sweep < width ? UINT64_MAX : sweep + width - 1;
      sweep = spec.last == UINT64_MAX ? 0 : spec.last + 1;
    }
    return spec;
  };
  ImageSpec spec = next_spec();
  if (ahead) engine.BeginSlice(spec);
  uint64_t bytes = 0;
  std::vector<Pieces> images;
  for (auto _ : state) {
    state.PauseTiming();
    bool copied = !ahead;
    for (int64_t k = 0; k < per_interval; ++k, ++i) {
      engine.Process(events.Make(i), &out);
      if (!copied && k % 64 == 63) copied = engine.CaptureSlice(2048);
    }
    out.clear();
    // The image is freed by the state writer's thread, not the worker's.
    images.clear();
    Pieces& image = images.emplace_back();
    state.ResumeTiming();
    engine.SaveState(spec, &image);
    state.PauseTiming();
    spec = next_spec();
    if (ahead) engine.BeginSlice(spec);
    state.ResumeTiming();
  }
  if (!images.empty()) bytes = images.back().size();
  state.counters["image_bytes"] = static_cast<double>(bytes);
}

// Fixed iteration counts: the events between two images (untimed) cost
// far more than the image, and would otherwise set the run's length.
BENCHMARK(BM_DispatcherImage)
    ->Arg(4150)
    ->Arg(41500)
    ->Iterations(100)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_WorkerImage)
    ->ArgsProduct({{41500}, {0, 2}, {0, 1}})
    ->Iterations(100)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace invariantd

BENCHMARK_MAIN();
