// The live pipeline against the single-threaded replayer: for any stream
// and any number of workers, the same violations (same ids) come out, every
// record is acknowledged exactly once, and bounds hold.
#include "sidecar/pipeline.h"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"
#include "sidecar/replayer.h"

namespace invariantd {
namespace {

class CountingAcker : public Acker {
 public:
  void Processed(uint64_t seq) override {
    std::lock_guard<std::mutex> l(mu_);
    ++acks_[seq];
  }
  std::map<uint64_t, int> acks() const {
    std::lock_guard<std::mutex> l(mu_);
    return acks_;
  }

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, int> acks_;
};

const char kRules[] = R"yaml(input: {format: json}
rules:
  - {name: mono, kind: monotonic, key: [k], field: v}
  - {name: seq, kind: sequence, key: [k], field: s}
  - {name: agree, kind: agreement, key: [g], field: leader}
  - {name: always, kind: always, key: [k], always: "v < 100"}
  - {name: meta, kind: unique, key: ["$kafka.key"], field: u}
)yaml";

std::shared_ptr<const RuleSet> Rules() {
  LoadResult r = LoadRuleText(kRules, "pipeline.yaml");
  EXPECT_TRUE(r.ok());
  return r.rules;
}

std::set<std::string> RunReplayer(const std::vector<std::string>& lines) {
  auto r = Replayer::Create(Rules(), ReplayerOptions{});
  EXPECT_TRUE(r.ok());
  std::string text;
  for (const auto& l : lines) absl::StrAppend(&text, l, "\n");
  std::set<std::string> ids;
  EXPECT_TRUE((*r)->ProcessText(text, "s",
                                [&](const Violation& v) { ids.insert(v.id); })
                  .ok());
  return ids;
}

struct PipelineRun {
  std::set<std::string> ids;
  size_t violations = 0;
  std::map<uint64_t, int> acks;
  PipelineStats stats;
};

PipelineRun RunPipeline(const std::vector<std::string>& lines, int workers) {
  PipelineOptions o;
  o.workers = workers;
  o.queue_capacity = 64;  // small: exercises blocking admission
  o.worker_queue_capacity = 8;
  std::mutex mu;
  PipelineRun run;
  auto p = Pipeline::Create(Rules(), o, [&](const Violation& v) {
    std::lock_guard<std::mutex> l(mu);
    run.ids.insert(v.id);
    ++run.violations;
  });
  EXPECT_TRUE(p.ok());
  CountingAcker acker;
  (*p)->Start();
  uint64_t line = 0;
  uint64_t offset = 0;
  for (const std::string& l : lines) {
    Record r;
    r.source = "s";
    r.line = ++line;
    r.offset = offset;
    offset += l.size() + 1;
    r.bytes = l;
    r.length = l.size();
    r.acker = &acker;
    r.ack_seq = line;
    EXPECT_TRUE((*p)->Push(std::move(r)));
  }
  (*p)->Stop();
  run.acks = acker.acks();
  run.stats = (*p)->Stats();
  return run;
}

// The queues' ring against std::deque, after every step: pushes and pops
// in any order, so growth happens with the contents wrapped around.
RC_GTEST_PROP(RingProperty, BehavesAsADeque, ()) {
  const auto ops = *rc::gen::container<std::vector<int>>(
      rc::gen::inRange(0, 3));  // 0, 1: push; 2: pop
  Ring<std::string> ring;
  std::deque<std::string> model;
  int next = 0;
  for (int op : ops) {
    if (op < 2) {
      std::string s = absl::StrCat("item-with-a-heap-buffer-", next++);
      model.push_back(s);
      ring.push_back(std::move(s));
    } else if (!model.empty()) {
      RC_ASSERT(ring.front() == model.front());
      ring.pop_front();
      model.pop_front();
    }
    RC_ASSERT(ring.size() == model.size());
    RC_ASSERT(ring.empty() == model.empty());
    if (!model.empty()) RC_ASSERT(ring.front() == model.front());
  }
  while (!model.empty()) {
    RC_ASSERT(ring.front() == model.front());
    ring.pop_front();
    model.pop_front();
  }
  RC_ASSERT(ring.empty());
}

// Finished records go back to the sources with their buffers, boundedly:
// at most 4096 records and 4 MiB of buffers are kept, none with a line
// buffer over 16 KiB.
TEST(PipelineTest, FinishedRecordsAreRecycledBoundedly) {
  PipelineOptions o;
  o.workers = 1;
  auto p = Pipeline::Create(Rules(), o, [](const Violation&) {});
  ASSERT_TRUE(p.ok());
  CountingAcker acker;
  (*p)->Start();
  const std::string line =
      absl::StrCat(R"({"k":1,"v":2,"pad":")", std::string(1000, 'x'), R"("})");
  const std::string huge = absl::StrCat(R"({"k":1,"v":3,"pad":")",
                                        std::string(20 << 10, 'x'), R"("})");
  for (uint64_t i = 1; i <= 6000; ++i) {
    Record r;
    r.source = "a-source-name-longer-than-sso";
    r.line = i;
    r.bytes = i % 1000 == 0 ? huge : line;
    r.length = r.bytes.size();
    r.acker = &acker;
    r.ack_seq = i;
    ASSERT_TRUE((*p)->Push(std::move(r)));
  }
  (*p)->Stop();
  EXPECT_EQ(acker.acks().size(), 6000u);
  std::vector<Record> shells;
  const size_t n = (*p)->TakeRecycled(&shells, 1000000);
  EXPECT_EQ(n, shells.size());
  EXPECT_GT(n, 1000u);
  EXPECT_LE(n, 4096u);
  size_t with_buffers = 0;
  size_t bytes = 0;
  for (const Record& r : shells) {
    EXPECT_LE(r.bytes.capacity(), size_t{16} << 10);
    if (r.bytes.capacity() >= line.size()) ++with_buffers;
    bytes += r.bytes.capacity() + r.source.capacity();
  }
  EXPECT_GT(with_buffers, 1000u);
  EXPECT_LE(bytes, size_t{4} << 20);
  EXPECT_EQ((*p)->TakeRecycled(&shells, 1000000), 0u);  // handed out once
}

rc::Gen<std::string> GenLine() {
  return rc::gen::apply(
      [](int k, int v, int s, int g, int leader, int kind) {
        if (kind == 0) return std::string("{not json");
        return absl::StrCat("{\"k\":", k, ",\"v\":", v, ",\"s\":", s,
                            ",\"g\":", g, ",\"leader\":", leader,
                            ",\"u\":", v % 3, "}");
      },
      rc::gen::inRange(0, 5), rc::gen::inRange(0, 120), rc::gen::inRange(0, 8),
      rc::gen::inRange(0, 3), rc::gen::inRange(0, 3), rc::gen::inRange(0, 20));
}

RC_GTEST_PROP(PipelineProperty, SameViolationsAsReplayForAnyWorkerCount, ()) {
  const auto lines = *rc::gen::container<std::vector<std::string>>(GenLine());
  const int workers = *rc::gen::inRange(1, 4);
  const std::set<std::string> want = RunReplayer(lines);
  const PipelineRun got = RunPipeline(lines, workers);
  RC_ASSERT(got.ids == want);
  RC_ASSERT(got.violations == want.size());  // none reported twice
  // Every record acknowledged exactly once, rejected ones included.
  RC_ASSERT(got.acks.size() == lines.size());
  for (const auto& [seq, n] : got.acks) RC_ASSERT(n == 1);
}

TEST(PipelineTest, RedeliveredRecordsAreSkippedAndAcked) {
  const std::vector<std::string> lines = {
      "{\"k\":1,\"v\":5}", "{\"k\":1,\"v\":5}", "{\"k\":1,\"v\":4}"};
  const PipelineRun run = RunPipeline(lines, 2);
  EXPECT_EQ(run.stats.redelivered, 1u);
  EXPECT_EQ(run.violations, 1u);
  EXPECT_EQ(run.acks.size(), 3u);
}

TEST(PipelineTest, SourceMetadataIsAvailableAsFields) {
  PipelineOptions o;
  std::vector<Violation> got;
  std::mutex mu;
  auto p = Pipeline::Create(Rules(), o, [&](const Violation& v) {
    std::lock_guard<std::mutex> l(mu);
    got.push_back(v);
  });
  ASSERT_TRUE(p.ok());
  (*p)->Start();
  for (int i = 0; i < 2; ++i) {
    Record r;
    r.source = "kafka:t/0";
    r.offset = static_cast<uint64_t>(i);
    r.bytes = absl::StrCat("{\"u\":\"same\",\"n\":", i, "}");
    r.meta = {{"$kafka.key", "tenant-1"}};
    ASSERT_TRUE((*p)->Push(std::move(r)));
  }
  (*p)->Stop();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].rule, "meta");
  EXPECT_EQ(got[0].key[0].second.ToText(), "tenant-1");
  EXPECT_EQ(got[0].source, "kafka:t/0");
  EXPECT_EQ(got[0].offset, 1u);
}

TEST(PipelineTest, FullAdmissionQueueRefusesBatchesWholly) {
  PipelineOptions o;
  o.queue_capacity = 4;
  auto p = Pipeline::Create(Rules(), o, [](const Violation&) {});
  ASSERT_TRUE(p.ok());
  // Not started: nothing drains the queue.
  std::vector<Record> batch(3);
  EXPECT_TRUE((*p)->TryPushBatch(&batch));
  EXPECT_TRUE(batch.empty());
  batch.resize(2);
  EXPECT_FALSE((*p)->TryPushBatch(&batch));  // 3 + 2 > 4
  EXPECT_EQ(batch.size(), 2u);               // nothing taken
  EXPECT_EQ((*p)->Stats().queue_depth, 3u);
  (*p)->Start();
  (*p)->Stop();
  EXPECT_EQ((*p)->Stats().queue_depth, 0u);
}

TEST(PipelineTest, ManyProducersOneStreamEachKeepPerKeyOrder) {
  // Four sources each own a key; their own order must be preserved.
  PipelineOptions o;
  o.workers = 2;
  o.queue_capacity = 32;
  std::atomic<int> violations{0};
  auto p =
      Pipeline::Create(Rules(), o, [&](const Violation&) { violations++; });
  ASSERT_TRUE(p.ok());
  (*p)->Start();
  std::vector<std::thread> producers;
  for (int k = 0; k < 4; ++k) {
    producers.emplace_back([&, k] {
      for (int i = 0; i < 2000; ++i) {
        Record r;
        r.source = absl::StrCat("src", k);
        r.line = static_cast<uint64_t>(i + 1);
        r.bytes = absl::StrCat("{\"k\":", k, ",\"s\":", i, "}");
        ASSERT_TRUE((*p)->Push(std::move(r)));
      }
    });
  }
  for (auto& t : producers) t.join();
  (*p)->Stop();
  EXPECT_EQ(violations.load(), 0);  // any reordering would be a gap/repeat
  EXPECT_EQ((*p)->Stats().events, 8000u);
  uint64_t evaluated = 0;
  for (const RuleSnapshot& r : (*p)->Rules()) {
    if (r.name == "seq") evaluated = r.counters.evaluated;
  }
  EXPECT_EQ(evaluated, 8000u);
}

}  // namespace
}  // namespace invariantd

namespace invariantd {
namespace {

std::shared_ptr<const RuleSet> RulesFrom(const std::string& yaml) {
  LoadResult r = LoadRuleText(yaml, "reload.yaml");
  for (const auto& d : r.diagnostics) ADD_FAILURE() << FormatDiagnostic(d);
  return r.rules;
}

TEST(PipelineReloadTest, UnchangedRulesKeepStateChangedRulesStartFresh) {
  std::mutex mu;
  std::vector<std::string> got;  // "rule@line"
  PipelineOptions o;
  o.workers = 2;
  auto p = Pipeline::Create(
      RulesFrom("rules:\n"
                "  - {name: keep, kind: monotonic, key: [k], field: v}\n"
                "  - {name: change, kind: monotonic, key: [k], field: v}\n"),
      o, [&](const Violation& v) {
        std::lock_guard<std::mutex> l(mu);
        got.push_back(absl::StrCat(v.rule, "@", v.line));
      });
  ASSERT_TRUE(p.ok());
  (*p)->Start();
  CountingAcker acker;
  auto push = [&](uint64_t line, int v) {
    Record r;
    r.source = "s";
    r.line = line;
    r.bytes = absl::StrCat("{\"k\":1,\"v\":", v, ",\"w\":", v, "}");
    r.acker = &acker;
    r.ack_seq = line;
    ASSERT_TRUE((*p)->Push(std::move(r)));
  };
  push(1, 5);
  // Reload applies to records dispatched after it: wait until line 1 has
  // been evaluated under the old rules.
  for (int i = 0; i < 3000 && acker.acks().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(acker.acks().size(), 1u);
  // `change` now reads another field: its state must not carry over;
  // `added` is new. The FieldSet changes too (new path `w`).
  auto result = (*p)->Reload(
      RulesFrom("rules:\n"
                "  - {name: keep, kind: monotonic, key: [k], field: v}\n"
                "  - {name: change, kind: monotonic, key: [k], field: w}\n"
                "  - {name: added, kind: monotonic, key: [k], field: v}\n"));
  ASSERT_TRUE(result.ok());
  EXPECT_THAT(result->carried, ::testing::ElementsAre("keep"));
  EXPECT_THAT(result->fresh, ::testing::ElementsAre("change", "added"));
  push(2, 4);  // regresses against the state `keep` kept
  (*p)->Stop();
  EXPECT_THAT(got, ::testing::ElementsAre("keep@2"));
  for (const RuleSnapshot& r : (*p)->Rules()) {
    if (r.name == "keep") {
      EXPECT_EQ(r.counters.evaluated, 2u);
    }
    if (r.name == "added") {
      EXPECT_EQ(r.counters.evaluated, 1u);
    }
  }
}

// One memory budget for every rule on every worker: a flood of distinct
// keys fills it, after which each rule's overflow policy decides; every key
// is tracked, evicted or rejected (counted exactly), the budget holds, and
// the keys still tracked are still checked.
// expected_keys is reserved by the workers that hold the keys, each for
// its share; the dispatcher's engine (which holds none) reserves nothing.
TEST(PipelineBudgetTest, ExpectedKeysAreReservedOnceAcrossTheWorkers) {
  auto budget = std::make_shared<MemoryBudget>(size_t{1} << 30);
  PipelineOptions o;
  o.workers = 2;
  o.engine.budget = budget;
  auto p = Pipeline::Create(
      RulesFrom("rules:\n"
                "  - {name: sized, kind: monotonic, key: [k], field: v,\n"
                "     expected_keys: 100000}\n"),
      o, [](const Violation&) {});
  ASSERT_TRUE(p.ok());
  // Two shares of 50,000 keys (plus headroom) at 40 bytes a slot and 7/8
  // load: about 4.7 MB. With the dispatcher's engine sized as well: 9.2 MB.
  const size_t slots = 2 * (50'000 + 4 * 224) * 8 / 7;
  EXPECT_GE(budget->used(), slots * 40);
  EXPECT_LT(budget->used(), slots * 40 + (size_t{1} << 20));
}

TEST(PipelineBudgetTest, AFloodOfKeysStaysInTheBudgetAndIsCountedExactly) {
  auto budget = std::make_shared<MemoryBudget>(size_t{1} << 20);
  std::mutex mu;
  std::vector<std::string> got;  // "rule@line"
  PipelineOptions o;
  o.workers = 2;
  o.engine.budget = budget;
  {
    auto p = Pipeline::Create(
        RulesFrom("rules:\n"
                  "  - {name: evict, kind: monotonic, key: [k], field: v}\n"
                  "  - {name: reject, kind: monotonic, key: [k], field: v,\n"
                  "     on_overflow: reject_new}\n"
                  "  - {name: agree, kind: agreement, key: [k], field: v}\n"),
        o, [&](const Violation& v) {
          std::lock_guard<std::mutex> l(mu);
          got.push_back(absl::StrCat(v.rule, "@", v.line));
        });
    ASSERT_TRUE(p.ok());
    (*p)->Start();
    CountingAcker acker;
    uint64_t line = 0;
    auto push = [&](uint64_t k, int v) {
      Record r;
      r.source = "s";
      r.line = ++line;
      r.bytes = absl::StrCat("{\"k\":", k, ",\"v\":", v, "}");
      r.acker = &acker;
      r.ack_seq = line;
      ASSERT_TRUE((*p)->Push(std::move(r)));
    };
    constexpr uint64_t kKeys = 200'000;
    for (uint64_t k = 0; k < kKeys; ++k) push(k, 5);
    push(0, 4);          // the first key: `reject` still tracks it
    push(kKeys - 1, 4);  // the newest: `evict` still tracks it
    (*p)->Stop();
    EXPECT_LE(budget->used(), budget->limit());
    EXPECT_GT(budget->refusals(), 0u);
    for (const RuleSnapshot& r : (*p)->Rules()) {
      SCOPED_TRACE(r.name);
      // Each rule also met one of the last two keys as a new key again:
      // `reject` refused kKeys - 1 twice; the others had evicted key 0.
      EXPECT_EQ(r.table.keys + r.table.evicted + r.table.rejected, kKeys + 1);
      EXPECT_GT(r.table.budget_refusals, 0u);
      EXPECT_LE(r.table.budget_refusals, r.table.evicted + r.table.rejected);
      EXPECT_GT(r.table.keys, 1000u);
      if (r.name == "reject") {
        EXPECT_EQ(r.table.evicted, 0u);
      }
    }
    std::lock_guard<std::mutex> l(mu);
    EXPECT_THAT(got,
                ::testing::IsSupersetOf({absl::StrCat("reject@", kKeys + 1),
                                         absl::StrCat("evict@", kKeys + 2),
                                         absl::StrCat("agree@", kKeys + 2)}));
  }
  EXPECT_EQ(budget->used(), 0u);  // released with the pipeline
}

}  // namespace
}  // namespace invariantd
