// key_memory_bench: bytes per tracked key of each stateful kind, measured
// through the real engine (rule state tables, as the summary reports them),
// at growing key counts. Google Benchmark reports `bytes_per_key` as a
// counter; docs/benchmarks.md records the results.
//
//   build/bench/key_memory_bench --benchmark_counters_tabular=true
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "rules/engine.h"
#include "rules/rule_set.h"

namespace invariantd {
namespace {

const char* const kRules[] = {
    "{name: r, kind: monotonic, key: [k], field: v, max_keys: 20000000}",
    "{name: r, kind: sequence, key: [k], field: v, max_keys: 20000000}",
    "{name: r, kind: transition, key: [k], field: s, max_keys: 20000000, "
    "transitions: {A: [B], B: [A]}}",
    "{name: r, kind: agreement, key: [k], field: v, max_keys: 20000000}",
    "{name: r, kind: unique, key: [], field: k, max_keys: 20000000}",
};

void BM_BytesPerKey(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const int64_t keys = state.range(1);
  LoadResult loaded =
      LoadRuleText(absl::StrCat("rules:\n  - ", kRules[kind], "\n"), "bench");
  if (!loaded.ok()) {
    state.SkipWithError(FormatDiagnostic(loaded.diagnostics[0]).c_str());
    return;
  }
  const FieldSet& fields = loaded.rules->fields();
  const int k = fields.Find(*FieldPath::Parse("k"));
  const int v = fields.Find(*FieldPath::Parse("v"));
  const int s = fields.Find(*FieldPath::Parse("s"));
  size_t bytes = 0;
  size_t growing = 0;
  for (auto _ : state) {
    EngineOptions opts;
    opts.dedupe_window = 0;
    Engine engine(loaded.rules, opts);
    Event e;
    std::vector<Violation> out;
    std::string raw;
    auto pass = [&] {
      for (int64_t i = 0; i < keys; ++i) {
        e.Reset(fields.size());
        e.fields[k] = Value::Int(i);
        if (v >= 0) e.fields[v] = Value::Int(1);
        if (s >= 0) e.fields[s] = Value::String("A");
        raw = absl::StrCat(i);
        e.raw = raw;
        engine.Process(e, &out);
      }
    };
    pass();
    // Right after the inserts a growth may be in progress (both arrays
    // held); a second pass over the same keys finishes it.
    growing = engine.Stats()[0].table.bytes;
    pass();
    bytes = engine.Stats()[0].table.bytes;
    benchmark::DoNotOptimize(bytes);
  }
  state.SetLabel(loaded.rules->rules()[0].kind);
  state.counters["keys"] = static_cast<double>(keys);
  state.counters["bytes_per_key"] =
      static_cast<double>(bytes) / static_cast<double>(keys);
  state.counters["bytes_per_key_growing"] =
      static_cast<double>(growing) / static_cast<double>(keys);
}

BENCHMARK(BM_BytesPerKey)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1000, 100000, 1000000, 10000000}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace invariantd

BENCHMARK_MAIN();
