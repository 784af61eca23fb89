// Rule-state checkpoints against a run that never crashed.
//
// A pipeline evaluates a generated stream and writes checkpoints (a full
// image, then changes plus rolling slices of the keys) through the real
// state store, which keeps only what a restore needs. A "crash" keeps only
// the checkpoints up to a random one, as if the later ones had never been
// committed. A new pipeline restores them, and its source resumes from an
// earlier position (sources save their positions lazily), so it re-reads
// records the restored state already holds; it runs on for a while,
// checkpointing into the same store, and crashes too; a third one restores
// that and runs to the end. What each life reported between its restore
// point and the next crash's must together equal exactly what the first
// one reports on the whole stream (and so what the single-threaded
// replayer does: pipeline_test): nothing lost, nothing reported twice. The
// stream hits every stateful kind and the redelivery window.
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "exporters/evidence/state_store.h"
#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"
#include "rules/engine.h"
#include "sidecar/core/binary.h"
#include "sidecar/core/field_path.h"
#include "sidecar/core/hash.h"
#include "sidecar/pipeline.h"
#include "tests/temp_dir.h"

namespace invariantd {
namespace {

// Few keys: states collide; repeated ids exercise the redelivery window.
// (Not eviction: which key an approximate-LRU table evicts depends on its
// slot layout, which a restored table does not share, so a rule at its
// max_keys may drop different keys after a restart; see docs/semantics.md.)
const char kRules[] = R"yaml(input: {format: json, id: id}
rules:
  - {name: mono, kind: monotonic, key: [k], field: v}
  - {name: second, kind: monotonic, key: [k], field: w}
  - {name: seq, kind: sequence, key: [k], field: v}
  - {name: agree, kind: agreement, key: [k], field: s, max_distinct: 2}
  - {name: uniq, kind: unique, key: [k], field: w, window_count: 5}
  - name: trans
    kind: transition
    key: [k]
    field: s
    transitions: {S0: [S1], S1: [S2, S3], S2: [S0]}
    initial: [S0, S1]
    terminal: [S3]
  - {name: always, kind: always, key: [k], always: "v <= w"}
)yaml";

std::shared_ptr<const RuleSet> Rules() {
  LoadResult r = LoadRuleText(kRules, "checkpoint.yaml");
  EXPECT_TRUE(r.ok());
  return r.rules;
}

std::string GenLine(int k, int v, int w, int s, int id) {
  return absl::StrCat("{\"id\":", id, ",\"k\":\"k", k, "\",\"v\":", v,
                      ",\"w\":", w, ",\"s\":\"S", s, "\"}");
}

using Found = std::tuple<uint64_t, std::string, std::string>;  // line, rule,
                                                               // reason

class NullAcker : public Acker {
 public:
  void Processed(uint64_t) override {}
};

struct Life {
  std::mutex mu;
  std::condition_variable cv;  // a checkpoint arrived
  std::vector<Found> found;
  std::vector<std::pair<uint64_t, StateCheckpoint>> checkpoints;
};

std::unique_ptr<Pipeline> MakePipeline(int workers, Life* run,
                                       size_t dedupe_window = 1 << 16,
                                       double slice_fraction = 0) {
  PipelineOptions o;
  o.workers = workers;
  o.slice_fraction = slice_fraction;
  o.engine.dedupe_window = dedupe_window;
  o.queue_capacity = 64;
  o.worker_queue_capacity = 16;
  o.checkpoint_interval = std::chrono::milliseconds(0);  // after every batch
  o.on_checkpoint = [run](uint64_t epoch, StateCheckpoint c) {
    std::lock_guard<std::mutex> l(run->mu);
    run->checkpoints.emplace_back(epoch, std::move(c));
    run->cv.notify_all();
  };
  auto p = Pipeline::Create(Rules(), o, [run](const Violation& v) {
    std::lock_guard<std::mutex> l(run->mu);
    run->found.emplace_back(v.line, v.rule, v.reason);
  });
  EXPECT_TRUE(p.ok());
  return *std::move(p);
}

void Feed(Pipeline* p, const std::vector<std::string>& lines, size_t from,
          size_t chunk, Acker* acker, size_t to = SIZE_MAX) {
  to = std::min(to, lines.size());
  for (size_t i = from; i < to;) {
    std::vector<Record> batch;
    for (size_t n = 0; n < chunk && i < to; ++n, ++i) {
      Record r;
      r.source = "f";
      r.kind = 0;
      r.stream = 7;
      r.line = i + 1;
      r.offset = i + 1;
      r.bytes = lines[i];
      r.acker = acker;
      batch.push_back(std::move(r));
    }
    p->PushAll(&batch);
  }
}

RC_GTEST_PROP(CheckpointProperty, RestoreAfterACrashLosesAndDoublesNothing,
              ()) {
  const int workers = *rc::gen::inRange(1, 4);
  // Off, smaller than the stream, or all of it.
  const size_t window = *rc::gen::element<size_t>(0, 3, 1 << 16);
  const auto gen = *rc::gen::container<std::vector<std::tuple<int, int, int>>>(
      rc::gen::tuple(rc::gen::inRange(0, 4), rc::gen::inRange(0, 6),
                     rc::gen::inRange(0, 16)));
  std::vector<std::string> lines;
  for (size_t i = 0; i < gen.size(); ++i) {
    const auto& [k, v, x] = gen[i];
    // Every 16th event repeats an earlier id (a redelivery).
    const int id =
        (x == 0 && i > 0) ? static_cast<int>(i / 2) : static_cast<int>(i);
    lines.push_back(GenLine(k, v, (x + v) % 6, x % 4, id));
  }
  RC_PRE(!lines.empty());

  // Slices of a fixed share of the keys, or sized by the pipeline (here
  // the whole state at once: it is small).
  const double slices = *rc::gen::element(0.0, 0.5, 0.3, 0.1);
  // First life: runs to the end, checkpointing as it goes.
  NullAcker acker;
  Life first;
  {
    auto p = MakePipeline(workers, &first, window, slices);
    p->Start();
    Feed(p.get(), lines, 0, *rc::gen::inRange<size_t>(1, 9), &acker);
    p->Stop();
  }
  RC_ASSERT(!first.checkpoints.empty());
  std::sort(first.checkpoints.begin(), first.checkpoints.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < first.checkpoints.size(); ++i) {
    RC_ASSERT(first.checkpoints[i].first == i + 1);  // epochs 1, 2, ...
  }
  RC_ASSERT(first.checkpoints.front().second.full);
  // Reference: the first life itself ran to the end without a crash (the
  // pipeline equals the replayer: pipeline_test; here the sharding of
  // max_keys over workers must be the same on both sides).
  const std::vector<Found> want = first.found;

  TempDir dir;
  auto store = StateStore::Open(dir.path() + "/state.db");
  RC_ASSERT(store.ok());
  // A crash after the first `n` checkpoints of a life reached the store;
  // returns the cut: the last record evaluated before the last of them.
  auto crash = [&](const Life& life, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      RC_ASSERT((*store)->Write(life.checkpoints[i].second).ok());
    }
    auto stored = (*store)->Load();
    RC_ASSERT(stored.ok());
    RC_ASSERT(stored->has_value());
    uint64_t cut = 0;
    for (const auto& [stream, offset] : (*stored)->positions) {
      RC_ASSERT(stream == "file:7");
      cut = offset;
    }
    return std::make_pair(cut, **std::move(stored));
  };
  const size_t last1 =
      *rc::gen::inRange<size_t>(1, first.checkpoints.size() + 1);
  auto [cut1, stored1] = crash(first, last1);

  // Second life: restores, and its source resumes somewhere at or before
  // the cut (it may have saved its position long before). It stops at a
  // random later point and crashes after some of its own checkpoints.
  Life second;
  const size_t stop2 = *rc::gen::inRange<size_t>(cut1, lines.size() + 1);
  {
    auto p = MakePipeline(workers, &second, window, slices);
    const Pipeline::RestoreReport rep = p->Restore(stored1);
    RC_ASSERT(rep.restored);
    RC_ASSERT(rep.skipped.empty());
    RC_ASSERT(rep.discarded.empty());
    p->Start();
    const size_t resume = *rc::gen::inRange<size_t>(0, cut1 + 1);
    Feed(p.get(), lines, resume, *rc::gen::inRange<size_t>(1, 9), &acker,
         stop2);
    p->Stop();
  }
  std::sort(second.checkpoints.begin(), second.checkpoints.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  uint64_t cut2 = cut1;
  StoredState stored2 = stored1;
  if (!second.checkpoints.empty()) {
    RC_ASSERT(!second.checkpoints.front().second.full);  // continues the base
    const size_t last2 =
        *rc::gen::inRange<size_t>(1, second.checkpoints.size() + 1);
    std::tie(cut2, stored2) = crash(second, last2);
  }

  // Third life: restores what the second one left and runs to the end.
  Life third;
  {
    auto p = MakePipeline(workers, &third, window, slices);
    const Pipeline::RestoreReport rep = p->Restore(stored2);
    RC_ASSERT(rep.restored);
    p->Start();
    const size_t resume = *rc::gen::inRange<size_t>(0, cut2 + 1);
    Feed(p.get(), lines, resume, *rc::gen::inRange<size_t>(1, 9), &acker);
    p->Stop();
  }

  std::vector<Found> got;
  for (const Found& f : first.found) {
    if (std::get<0>(f) <= cut1) got.push_back(f);
  }
  for (const Found& f : second.found) {
    RC_ASSERT(std::get<0>(f) > cut1);  // nothing reported twice
    if (std::get<0>(f) <= cut2) got.push_back(f);
  }
  for (const Found& f : third.found) {
    RC_ASSERT(std::get<0>(f) > cut2);
    got.push_back(f);
  }
  std::sort(got.begin(), got.end());
  std::vector<Found> sorted_want = want;
  std::sort(sorted_want.begin(), sorted_want.end());
  if (got != sorted_want) {
    auto dump = [](const std::vector<Found>& v) {
      std::string s;
      for (const auto& [line, rule, reason] : v) {
        absl::StrAppend(&s, line, ":", rule, ":", reason, " ");
      }
      return s;
    };
    std::string stream;
    for (const auto& l : lines) absl::StrAppend(&stream, l, "\n");
    RC_FAIL(absl::StrCat(
        "cuts ", cut1, ", ", cut2, " of ", lines.size(), "; checkpoint ", last1,
        " of ", first.checkpoints.size(), ", slices ", slices,
        "\ngot:  ", dump(got), "\nwant: ", dump(sorted_want), "\n", stream));
  }
}

// The keys each rule of `names` holds in `engine`, read from a full image
// (an engine image: tag, full flag, section count, then per stateful rule
// its name, digest and image; a rule image: tag, full flag, then entries of
// key, present flag and state). The rules named must have states of
// `state_bytes` bytes (trivially copyable).
std::map<std::string, std::set<std::pair<uint64_t, uint64_t>>> KeysOf(
    Engine* engine, const std::set<std::string>& names, size_t state_bytes) {
  Pieces p;
  ImageSpec full;
  full.full = true;
  engine->SaveState(full, &p);
  const std::string image = p.Join();
  std::string_view in = image;
  uint64_t tag = 0, sections = 0;
  uint8_t flag = 0;
  std::map<std::string, std::set<std::pair<uint64_t, uint64_t>>> keys;
  if (!GetU64(&in, &tag) || !GetU8(&in, &flag) || !GetU64(&in, &sections)) {
    ADD_FAILURE() << "not an engine image";
    return keys;
  }
  for (uint64_t i = 0; i < sections; ++i) {
    std::string_view name, rule;
    Hash128 digest;
    if (!GetBytes(&in, &name) || !GetHash(&in, &digest) ||
        !GetBytes(&in, &rule)) {
      ADD_FAILURE() << "truncated section";
      return keys;
    }
    if (names.count(std::string(name)) == 0) continue;
    auto& set = keys[std::string(name)];
    if (!GetU64(&rule, &tag) || !GetU8(&rule, &flag)) {
      ADD_FAILURE() << "truncated rule image";
      return keys;
    }
    while (!rule.empty()) {
      Hash128 key;
      uint8_t present = 0;
      if (!GetHash(&rule, &key) || !GetU8(&rule, &present) || present != 1 ||
          rule.size() < state_bytes) {
        ADD_FAILURE() << "bad entry in the image of " << name;
        return keys;
      }
      rule.remove_prefix(state_bytes);
      set.emplace(key.lo, key.hi);
    }
  }
  return keys;
}

// Slices copied ahead of their checkpoint (Engine::BeginSlice and
// CaptureSlice, a few slots at a time) while events keep changing, adding
// and evicting keys: restoring the full image and every image after it
// gives an engine that holds the same keys and judges whatever comes next
// on them exactly as the live one does. Some checkpoints get a different
// range than the one copied (it is dropped and scanned then), some none at
// all, and the copying may be unfinished at the checkpoint; or the slices
// tile the hash space in rounds and the restore starts, from empty, at the
// first checkpoint of the last complete round. (The
// continuation stays on keys both engines hold: which key a table at its
// max_keys evicts depends on its slot layout, which a restored table does
// not share; see docs/semantics.md.)
RC_GTEST_PROP(CheckpointProperty, SlicesCopiedAheadRestoreTheLiveState, ()) {
  const char kSliceRules[] = R"yaml(rules:
  - {name: mono, kind: monotonic, key: [k], field: v, max_keys: 150}
  - {name: agree, kind: agreement, key: [k], field: s}
  - {name: uniq, kind: unique, key: [k], field: v, window_count: 3}
  - name: trans
    kind: transition
    key: [k]
    field: s
    max_keys: 150
    transitions: {S0: [S1], S1: [S2], S2: [S0]}
)yaml";
  LoadResult loaded = LoadRuleText(kSliceRules, "slices.yaml");
  RC_ASSERT(loaded.ok());
  const std::shared_ptr<const RuleSet> rules = loaded.rules;
  const FieldSet& fields = rules->fields();
  const int fk = fields.Find(*FieldPath::Parse("k"));
  const int fv = fields.Find(*FieldPath::Parse("v"));
  const int fs = fields.Find(*FieldPath::Parse("s"));
  EngineOptions opts;
  opts.dedupe_window = 0;  // identities have their own test below
  Engine live(rules, opts);
  live.TrackChanges();
  std::vector<std::string> images;
  auto save = [&](const ImageSpec& spec) {
    Pieces p;
    live.SaveState(spec, &p);
    images.push_back(p.Join());
  };
  ImageSpec full;
  full.full = true;
  save(full);

  Event e;
  std::string raw;
  uint64_t line = 0;
  std::vector<Violation> out;
  auto event = [&](Engine* engine, int k, int v, int s) {
    e.Reset(fields.size());
    e.fields[fk] = Value::Int(k);
    e.fields[fv] = Value::Int(v);
    e.fields[fs] = Value::String(s == 0 ? "S0" : s == 1 ? "S1" : "S2");
    raw = absl::StrCat(++line);
    e.raw = raw;
    e.position.line = line;
    engine->Process(e, &out);
  };
  // Rounds: the slices tile the hash space as the pipeline's do, every
  // checkpoint writes the planned one, and the restore starts from empty
  // at the first checkpoint of the last complete round (as after a crash),
  // not from the full image.
  const bool rounds = *rc::gen::arbitrary<bool>();
  uint64_t sweep = 0;
  size_t round_began = 0, restore_from = 0;
  auto range = [&] {
    ImageSpec spec;
    spec.slice = true;
    if (rounds) {
      spec.first = sweep;
      const uint64_t width = *rc::gen::inRange<uint64_t>(1, 6) << 61;
      spec.last = UINT64_MAX - sweep < width ? UINT64_MAX : sweep + width - 1;
      sweep = spec.last == UINT64_MAX ? 0 : spec.last + 1;
      return spec;
    }
    spec.first = *rc::gen::arbitrary<uint64_t>();
    spec.last =
        *rc::gen::oneOf(rc::gen::just(UINT64_MAX),
                        rc::gen::inRange<uint64_t>(spec.first, UINT64_MAX));
    return spec;
  };
  auto save_slice = [&](const ImageSpec& spec) {
    if (spec.slice && spec.first == 0) round_began = images.size();
    save(spec);
    if (spec.slice && spec.last == UINT64_MAX) restore_from = round_began;
  };
  ImageSpec next = range();
  live.BeginSlice(next);
  // Not scaled down by rapidcheck's size: rounds need a few dozen
  // checkpoints to complete.
  const int steps = *rc::gen::resize(100, rc::gen::inRange(20, 400));
  for (int i = 0; i < steps; ++i) {
    const int op = *rc::gen::resize(100, rc::gen::inRange(0, 10));
    if (op < 6) {  // an event: up to 200 keys, so max_keys evicts
      event(&live, *rc::gen::inRange(0, 200), *rc::gen::inRange(0, 8),
            *rc::gen::inRange(0, 3));
    } else if (op < 9) {  // a step of copying, of a few slots
      live.CaptureSlice(*rc::gen::inRange<size_t>(1, 16));
    } else {  // a checkpoint: the range copied, another one, or none
      const int which = rounds ? 2 : *rc::gen::inRange(0, 6);
      ImageSpec spec = next;
      if (which == 0) spec = range();
      if (which == 1) spec = ImageSpec{};
      save_slice(spec);
      next = range();
      live.BeginSlice(next);
    }
  }
  save_slice(next);

  Engine restored(rules, opts);
  std::vector<std::string> skipped, discarded;
  for (size_t i = restore_from; i < images.size(); ++i) {
    RC_ASSERT(restored.RestoreState(images[i], &skipped, &discarded).ok());
  }
  RC_TAG(rounds && restore_from > 0 ? "from a round" : "from the full image");
  RC_ASSERT(skipped.empty());
  RC_ASSERT(discarded.empty());
  const std::set<std::string> fixed = {"mono", "trans"};  // 16-byte states
  const auto keys = KeysOf(&live, fixed, 16);
  RC_ASSERT(KeysOf(&restored, fixed, 16) == keys);
  for (size_t i = 0; i < rules->rules().size(); ++i) {
    RC_ASSERT(restored.Stats()[i].table.keys == live.Stats()[i].table.keys);
  }
  // The same continuation on both, on the keys both rules hold.
  std::vector<int> held;
  for (int k = 0; k < 200; ++k) {
    TupleHasher h;
    h.Add(Value::Int(k));
    const Hash128 key = h.Finish();
    const std::pair<uint64_t, uint64_t> kk(key.lo, key.hi);
    if (keys.at("mono").count(kk) != 0 && keys.at("trans").count(kk) != 0) {
      held.push_back(k);
    }
  }
  RC_ASSERT(!held.empty());
  std::vector<std::tuple<int, int, int>> more;
  for (int k : held) more.emplace_back(k, 3, k % 3);
  const auto tail = *rc::gen::container<std::vector<std::tuple<int, int, int>>>(
      rc::gen::tuple(rc::gen::inRange<size_t>(0, held.size()),
                     rc::gen::inRange(0, 8), rc::gen::inRange(0, 3)));
  for (const auto& [i, v, s] : tail) more.emplace_back(held[i], v, s);
  auto judge = [&](Engine* engine) {
    const uint64_t from = line;
    std::vector<std::string> verdicts;
    for (const auto& [k, v, s] : more) {
      out.clear();
      event(engine, k, v, s);
      for (const Violation& x : out) {
        verdicts.push_back(absl::StrCat(line - from, " ", x.rule, " ", x.reason,
                                        " ", x.message, " ", x.previous_line));
      }
    }
    line = from;  // the other engine sees the same lines
    return verdicts;
  };
  const std::vector<std::string> want = judge(&live);
  RC_ASSERT(judge(&restored) == want);
}

// The redelivery window survives rolling checkpoints: the first slice of
// each round carries the whole window, so an identity taken in before the
// checkpoints a restore reads (here the very first event) is still known.
TEST(CheckpointTest, RedeliveryWindowSurvivesTheRollingBase) {
  TempDir dir;
  auto store = StateStore::Open(dir.path() + "/state.db");
  ASSERT_TRUE(store.ok());
  NullAcker acker;
  Life first;
  std::vector<std::string> lines;
  for (int i = 0; i < 12; ++i) lines.push_back(GenLine(i % 3, i, i, 0, i));
  {
    auto p = MakePipeline(1, &first, 1 << 16, /*slice_fraction=*/0.5);
    p->Start();
    // One record per batch: a checkpoint after each.
    for (size_t i = 0; i < lines.size(); ++i) {
      Feed(p.get(), lines, i, 1, &acker, i + 1);
      std::unique_lock<std::mutex> l(first.mu);
      ASSERT_TRUE(first.cv.wait_for(l, std::chrono::seconds(60), [&] {
        return first.checkpoints.size() > i;
      }));
    }
    p->Stop();
  }
  std::sort(first.checkpoints.begin(), first.checkpoints.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  ASSERT_GE(first.checkpoints.size(), 6u);
  for (const auto& [epoch, c] : first.checkpoints) {
    ASSERT_TRUE((*store)->Write(c).ok());
  }
  auto stored = (*store)->Load();
  ASSERT_TRUE(stored.ok() && stored->has_value());
  ASSERT_LT((*stored)->checkpoints, first.checkpoints.size());  // rolled on
  Life second;
  auto q = MakePipeline(1, &second, 1 << 16, 0.5);
  ASSERT_TRUE(q->Restore(**stored).restored);
  q->Start();
  // The first event again, at a new position (a producer's retry).
  std::vector<Record> batch(1);
  batch[0].source = "f";
  batch[0].stream = 8;
  batch[0].line = 1;
  batch[0].offset = 1;
  batch[0].bytes = lines[0];
  q->PushAll(&batch);
  q->Stop();
  EXPECT_EQ(q->Stats().redelivered, 1u);
}

// A checkpoint written by a different number of workers is not loaded
// (keys are sharded by worker): the report says why, and the rules start
// empty rather than with a wrong half of the state.
TEST(CheckpointTest, DifferentWorkerCountStartsEmptyWithAReason) {
  Life first;
  NullAcker acker;
  auto p = MakePipeline(2, &first);
  p->Start();
  Feed(p.get(), {GenLine(0, 5, 5, 0, 1), GenLine(1, 5, 5, 0, 2)}, 0, 1, &acker);
  p->Stop();
  ASSERT_FALSE(first.checkpoints.empty());
  StoredState st;
  st.workers = first.checkpoints[0].second.workers;
  st.parts.resize(static_cast<size_t>(st.workers) + 1);
  for (const auto& [epoch, c] : first.checkpoints) {
    for (size_t k = 0; k < c.parts.size(); ++k)
      st.parts[k].push_back(c.parts[k].Join());
  }
  Life second;
  auto q = MakePipeline(1, &second);
  const Pipeline::RestoreReport rep = q->Restore(st);
  EXPECT_FALSE(rep.restored);
  EXPECT_NE(rep.problem.find("2 workers"), std::string::npos) << rep.problem;
}

// Damaged images are refused as a whole, with the reason; the pipeline
// then runs on empty state instead of half of one.
TEST(CheckpointTest, MalformedImageIsRefused) {
  Life first;
  NullAcker acker;
  auto p = MakePipeline(1, &first);
  p->Start();
  Feed(p.get(), {GenLine(0, 5, 5, 0, 1), GenLine(0, 3, 5, 0, 2)}, 0, 1, &acker);
  p->Stop();
  ASSERT_FALSE(first.checkpoints.empty());
  StoredState st;
  st.workers = 1;
  st.parts.resize(2);
  for (const auto& [epoch, c] : first.checkpoints) {
    for (size_t k = 0; k < c.parts.size(); ++k)
      st.parts[k].push_back(c.parts[k].Join());
  }
  ASSERT_GT(st.parts[1][0].size(), 20u);
  st.parts[1][0].resize(st.parts[1][0].size() - 3);  // torn
  Life second;
  auto q = MakePipeline(1, &second);
  const Pipeline::RestoreReport rep = q->Restore(st);
  EXPECT_FALSE(rep.restored);
  EXPECT_NE(rep.problem.find("could not be read"), std::string::npos)
      << rep.problem;
  // It still works: a regression against nothing is no violation.
  q->Start();
  Feed(q.get(), {GenLine(0, 1, 5, 0, 3)}, 0, 1, &acker);
  q->Stop();
  for (const Found& f : second.found) EXPECT_NE(std::get<1>(f), "mono");
}

// The store refuses an image that fails its checksum (a flipped bit).
TEST(CheckpointTest, StoreDetectsAFlippedBitInAnImage) {
  TempDir dir;
  auto store = StateStore::Open(dir.path() + "/state.db");
  ASSERT_TRUE(store.ok());
  StateCheckpoint c;
  c.full = true;
  c.workers = 1;
  c.parts = {std::string(64, 'a'), std::string(64, 'b')};
  c.positions = {{"file:1", 10}};
  ASSERT_TRUE((*store)->Write(c).ok());
  auto ok = (*store)->Load();
  ASSERT_TRUE(ok.ok());
  ASSERT_TRUE(ok->has_value());
  EXPECT_EQ((*ok)->parts[1][0], std::string(64, 'b'));
  EXPECT_EQ((*ok)->positions.size(), 1u);
  ASSERT_EQ(sqlite3_exec((*store)->db(),
                         "UPDATE state_image SET data = "
                         "CAST(replace(CAST(data AS TEXT), 'bbb', 'bcb') AS "
                         "BLOB) WHERE part = 1",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto bad = (*store)->Load();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("checksum"), std::string::npos);
}

// Images larger than a row are split into chunks, and images held in
// several pieces are written piece after piece; both are joined on load,
// in order. A full checkpoint replaces everything before it.
TEST(CheckpointTest, StoreChunksLargeImagesAndKeepsTheLatestBase) {
  TempDir dir;
  auto store = StateStore::Open(dir.path() + "/state.db");
  ASSERT_TRUE(store.ok());
  auto write = [&](bool full, Pieces a, Pieces b) {
    StateCheckpoint c;
    c.full = full;
    c.workers = 1;
    c.parts = {std::move(a), std::move(b)};
    c.positions = {{"file:9", full ? 5u : 7u}};
    ASSERT_TRUE((*store)->Write(c, /*chunk_bytes=*/7).ok());
  };
  write(true, "old-base-window", "old-base-worker");
  write(true, "base-window-0123456789", "");
  Pieces worker("delta-worker-");
  worker.Adopt(std::string("abcdefghijklmnop"));
  worker.tail()->append("-end");
  write(false, "delta-window", std::move(worker));
  auto st = (*store)->Load();
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_TRUE(st->has_value());
  EXPECT_EQ((*st)->parts[0], (std::vector<std::string>{"base-window-0123456789",
                                                       "delta-window"}));
  EXPECT_EQ((*st)->parts[1], (std::vector<std::string>{
                                 "", "delta-worker-abcdefghijklmnop-end"}));
  EXPECT_EQ((*st)->positions,
            (std::vector<std::pair<std::string, uint64_t>>{{"file:9", 7}}));
  // A lost middle chunk is found.
  ASSERT_EQ(sqlite3_exec((*store)->db(),
                         "DELETE FROM state_image WHERE part = 1 AND chunk = 2",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto bad = (*store)->Load();
  EXPECT_FALSE(bad.ok());
}

// Rolling checkpoints: each says how many of the latest a restore needs
// (its keep); the store deletes the older ones with it, loads exactly
// those, and refuses a state that misses one of them.
TEST(CheckpointTest, StoreKeepsWhatTheNewestCheckpointNeeds) {
  TempDir dir;
  auto store = StateStore::Open(dir.path() + "/state.db");
  ASSERT_TRUE(store.ok());
  auto write = [&](bool full, uint64_t keep, std::string tag) {
    StateCheckpoint c;
    c.full = full;
    c.keep = keep;
    c.workers = 1;
    c.parts = {tag + "-w", tag};
    ASSERT_TRUE((*store)->Write(c).ok());
  };
  auto images = [&] {
    auto st = (*store)->Load();
    EXPECT_TRUE(st.ok()) << st.status();
    if (!st.ok() || !st->has_value()) return std::vector<std::string>{};
    EXPECT_EQ((*st)->checkpoints, (*st)->parts[1].size());
    return (*st)->parts[1];
  };
  write(true, 1, "full");
  write(false, 2, "a");
  write(false, 3, "b");
  EXPECT_EQ(images(), (std::vector<std::string>{"full", "a", "b"}));
  write(false, 2, "c");  // a round of slices ended with b: from b on
  EXPECT_EQ(images(), (std::vector<std::string>{"b", "c"}));
  write(false, 3, "d");
  EXPECT_EQ(images(), (std::vector<std::string>{"b", "c", "d"}));
  int64_t rows = 0;
  sqlite3_exec((*store)->db(),
               "SELECT count(*) FROM state_image WHERE part = 1",
               [](void* n, int, char** v, char**) {
                 *static_cast<int64_t*>(n) = std::stoll(v[0]);
                 return 0;
               },
               &rows, nullptr);
  EXPECT_EQ(rows, 3);  // the older ones are gone
  ASSERT_EQ(sqlite3_exec((*store)->db(),
                         "DELETE FROM state_image WHERE seq = (SELECT seq"
                         " FROM state_image WHERE CAST(data AS TEXT) = 'c')",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  auto bad = (*store)->Load();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("misses checkpoint"), std::string::npos)
      << bad.status();
}

// While the store has 4 checkpoints it cannot commit, the dispatcher stops
// taking records: the admission queue fills and refuses more (bounded
// memory, backpressure to the sources); once they commit, all flows again.
TEST(CheckpointTest, UncommittedCheckpointsHoldTheDispatcherBack) {
  std::atomic<size_t> uncommitted{4};
  Life life;
  PipelineOptions o;
  o.workers = 1;
  o.queue_capacity = 8;
  o.checkpoint_interval = std::chrono::milliseconds(0);
  o.on_checkpoint = [&](uint64_t epoch, StateCheckpoint c) {
    std::lock_guard<std::mutex> l(life.mu);
    life.checkpoints.emplace_back(epoch, std::move(c));
  };
  o.max_uncommitted_checkpoints = 4;
  o.uncommitted_checkpoints = [&] {
    return PipelineOptions::Uncommitted{uncommitted.load(), 0};
  };
  auto p = Pipeline::Create(Rules(), o, [](const Violation&) {});
  ASSERT_TRUE(p.ok());
  (*p)->Start();
  auto batch = [](int from, int n) {
    std::vector<Record> b;
    for (int i = from; i < from + n; ++i) {
      Record r;
      r.source = "f";
      r.stream = 7;
      r.line = static_cast<uint64_t>(i + 1);
      r.offset = static_cast<uint64_t>(i + 1);
      r.bytes = GenLine(0, i, i, 0, i);
      b.push_back(std::move(r));
    }
    return b;
  };
  auto full = batch(0, 8);
  ASSERT_TRUE((*p)->TryPushBatch(&full));  // fills the queue; not taken
  auto more = batch(8, 1);
  EXPECT_FALSE((*p)->TryPushBatch(&more));  // refused: backpressure
  {
    std::lock_guard<std::mutex> l(life.mu);
    EXPECT_TRUE(life.checkpoints.empty());
  }
  uncommitted = 0;  // the store recovers
  (*p)->Stop();
  EXPECT_EQ((*p)->Stats().events, 8u);
  std::lock_guard<std::mutex> l(life.mu);
  EXPECT_FALSE(life.checkpoints.empty());
}

// Every worker's pause to hand its state to a checkpoint is reported once
// per checkpoint (invariantd_state_checkpoint_pause_seconds).
TEST(CheckpointTest, EachWorkersPauseIsReportedOncePerCheckpoint) {
  Life life;
  std::vector<double> pauses;
  PipelineOptions o;
  o.workers = 2;
  o.checkpoint_interval = std::chrono::milliseconds(0);
  o.on_checkpoint = [&](uint64_t epoch, StateCheckpoint c) {
    std::lock_guard<std::mutex> l(life.mu);
    life.checkpoints.emplace_back(epoch, std::move(c));
  };
  o.on_checkpoint_pause = [&](double sec) {
    std::lock_guard<std::mutex> l(life.mu);
    pauses.push_back(sec);
  };
  auto p = Pipeline::Create(Rules(), o, [](const Violation&) {});
  ASSERT_TRUE(p.ok());
  (*p)->Start();
  for (int i = 0; i < 50; ++i) {
    Record r;
    r.source = "f";
    r.stream = 7;
    r.line = static_cast<uint64_t>(i + 1);
    r.offset = static_cast<uint64_t>(i + 1);
    r.bytes = GenLine(i % 5, i, i, 0, i);
    ASSERT_TRUE((*p)->Push(std::move(r)));
  }
  (*p)->Stop();
  std::lock_guard<std::mutex> l(life.mu);
  ASSERT_FALSE(life.checkpoints.empty());
  EXPECT_EQ(pauses.size(), 2 * life.checkpoints.size());
  for (double sec : pauses) EXPECT_GE(sec, 0.0);
}

}  // namespace
}  // namespace invariantd
