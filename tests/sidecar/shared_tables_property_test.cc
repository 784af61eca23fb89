// Rules of one key share a table (rules/shared_key_table.h). Against the
// reference -- the same rules, each with a table of its own -- a shared
// engine must report the same violations after every event, the same
// counters and key counts per rule (and, when every rule sees every key,
// the same evictions), and write checkpoint images that restore into
// either layout.
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"
#include "rules/engine.h"
#include "rules/memory_budget.h"
#include "sidecar/core/binary.h"
#include "sidecar/core/field_path.h"

namespace invariantd {
namespace {

// Each rule of the pool; a case takes a subset. key [k] for most (they
// share), [k, j] for one (a table of its own, or shared with nothing),
// and two kinds that never share (agreement, unique) next to them.
const char* const kPool[] = {
    "{name: mono, kind: monotonic, key: [k], field: v",
    "{name: strict, kind: monotonic, key: [k], field: w, strict: true",
    "{name: seq, kind: sequence, key: [k], field: v",
    ("{name: trans, kind: transition, key: [k], field: s, "
     "transitions: {S0: [S1], S1: [S2], S2: [S0]}"),
    "{name: pair, kind: monotonic, key: [k, j], field: w",
    "{name: agree, kind: agreement, key: [k], field: s, max_distinct: 2",
    "{name: uniq, kind: unique, key: [k], field: w, window_count: 5",
    "{name: mono2, kind: monotonic, key: [k], field: w",
    "{name: seq2, kind: sequence, key: [k], field: w",
};

using Seen = std::tuple<std::string, std::string, uint64_t, uint64_t,
                        std::string>;  // rule, reason, line, previous, text

struct Stream {
  std::shared_ptr<const RuleSet> rules;
  int fk, fj, fv, fw, fs;
  uint64_t line = 0;
  Event e;
  std::string raw;

  // One event into every engine; what each reported.
  std::vector<std::vector<Seen>> Feed(const std::vector<Engine*>& engines,
                                      int k, int j, int v, int w, int s,
                                      uint8_t present) {
    e.Reset(rules->fields().size());
    // A field no chosen rule reads has no slot (-1).
    auto set = [&](int at, bool on, Value value) {
      if (on && at >= 0) e.fields[at] = value;
    };
    set(fk, true, Value::Int(k));
    set(fj, present & 1, Value::Int(j));
    set(fv, present & 2, Value::Int(v));
    set(fw, present & 4, Value::Int(w));
    set(fs, present & 8, Value::String(s == 0 ? "S0" : s == 1 ? "S1" : "S2"));
    raw = absl::StrCat(++line);
    e.raw = raw;
    e.position.line = line;
    std::vector<std::vector<Seen>> out;
    for (Engine* engine : engines) {
      std::vector<Violation> vs;
      engine->Process(e, &vs);
      auto& o = out.emplace_back();
      for (const Violation& x : vs) {
        o.emplace_back(x.rule, x.reason, x.line, x.previous_line, x.message);
      }
    }
    return out;
  }
};

void ExpectSameStats(const Engine& a, const Engine& b, bool evictions) {
  const std::vector<RuleStats> x = a.Stats(), y = b.Stats();
  RC_ASSERT(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const RuleCounters &c = x[i].counters, &d = y[i].counters;
    RC_ASSERT(std::make_tuple(c.evaluated, c.filtered, c.skipped_missing,
                              c.skipped_type, c.rejected, c.redelivered,
                              c.violations) ==
              std::make_tuple(d.evaluated, d.filtered, d.skipped_missing,
                              d.skipped_type, d.rejected, d.redelivered,
                              d.violations));
    RC_ASSERT(x[i].table.keys == y[i].table.keys);
    if (evictions) RC_ASSERT(x[i].table.evicted == y[i].table.evicted);
  }
}

RC_GTEST_PROP(SharedTablesProperty, SameVerdictsAsTablesOfTheirOwn, ()) {
  // Which rules, and their common bound. A small max_keys evicts (or
  // rejects); evictions match the reference only while every rule sees
  // every key, so cases with absent fields keep the bound out of reach.
  std::vector<int> chosen;
  for (int i = 0; i < static_cast<int>(std::size(kPool)); ++i) {
    if (*rc::gen::arbitrary<bool>()) chosen.push_back(i);
  }
  RC_PRE(!chosen.empty());
  const bool all_fields = *rc::gen::arbitrary<bool>();
  const bool small = all_fields && *rc::gen::arbitrary<bool>();
  const bool reject = *rc::gen::arbitrary<bool>();
  const size_t max_keys = small ? *rc::gen::inRange<size_t>(1, 40) : 100000;
  std::string text = "input: {format: json}\nrules:\n";
  for (int i : chosen) {
    absl::StrAppend(&text, "  - ", kPool[i], ", max_keys: ", max_keys,
                    reject ? ", on_overflow: reject_new" : "", "}\n");
  }
  LoadResult loaded = LoadRuleText(text, "shared.yaml");
  RC_ASSERT(loaded.ok());
  Stream st;
  st.rules = loaded.rules;
  const FieldSet& f = st.rules->fields();
  auto field = [&](const char* name) {
    return f.Find(*FieldPath::Parse(name));
  };
  st.fk = field("k");
  st.fj = field("j");
  st.fv = field("v");
  st.fw = field("w");
  st.fs = field("s");

  EngineOptions own;
  own.dedupe_window = 0;
  own.share_tables = false;
  EngineOptions shared = own;
  shared.share_tables = true;
  Engine reference(st.rules, own);
  Engine engine(st.rules, shared);
  // Checkpoint images of both, taken at the same moments.
  engine.TrackChanges();
  reference.TrackChanges();
  std::vector<std::string> images[2];  // [0]: shared, [1]: own tables
  auto save = [&](bool full) {
    ImageSpec spec;
    spec.full = full;
    for (int layout = 0; layout < 2; ++layout) {
      Pieces p;
      (layout == 0 ? engine : reference).SaveState(spec, &p);
      images[layout].push_back(p.Join());
    }
  };
  save(true);

  auto random_event = [&](const std::vector<Engine*>& engines) {
    const int k = *rc::gen::inRange(0, 60);
    const int j = *rc::gen::inRange(0, 3);
    const int v = *rc::gen::inRange(0, 6);
    const int w = *rc::gen::inRange(0, 6);
    const int s = *rc::gen::inRange(0, 3);
    const uint8_t present = all_fields ? 15 : *rc::gen::inRange<uint8_t>(0, 16);
    return st.Feed(engines, k, j, v, w, s, present);
  };
  const int steps = *rc::gen::inRange(1, 300);
  for (int i = 0; i < steps; ++i) {
    const auto seen = random_event({&reference, &engine});
    RC_ASSERT(seen[0] == seen[1]);
    if (*rc::gen::inRange(0, 20) == 0) save(false);
  }
  ExpectSameStats(reference, engine, /*evictions=*/true);
  save(false);

  // The images of either layout restore into either layout, which then
  // agree with the live engine on what follows (not when keys were
  // evicted: which key goes next depends on the table's slot order, which
  // a restore rebuilds).
  for (int from = 0; from < 2; ++from) {
    for (bool share : {false, true}) {
      Engine restored(st.rules, share ? shared : own);
      std::vector<std::string> skipped, discarded;
      for (const std::string& image : images[from]) {
        RC_ASSERT(restored.RestoreState(image, &skipped, &discarded).ok());
      }
      RC_ASSERT(skipped.empty());
      RC_ASSERT(discarded.empty());
      // The restore holds the keys the live engine holds, at the bound
      // too, and evicts nothing on the way (RestoreEntries). `unique`
      // forgets expired values lazily, at its own moments: its count of
      // remembered values is not compared.
      const std::vector<RuleStats> a = engine.Stats(), b = restored.Stats();
      for (size_t i = 0; i < a.size(); ++i) {
        if (a[i].rule->kind == "unique") continue;
        RC_ASSERT(a[i].table.keys == b[i].table.keys);
        RC_ASSERT(b[i].table.evicted == 0u);
        RC_ASSERT(b[i].table.rejected == 0u);
      }
      if (small) continue;
      Engine live_copy(st.rules, shared);  // the live engine goes on too
      for (const std::string& image : images[0]) {
        RC_ASSERT(live_copy.RestoreState(image, &skipped, &discarded).ok());
      }
      for (int i = 0; i < 50; ++i) {
        const auto seen = random_event({&live_copy, &restored});
        RC_ASSERT(seen[0] == seen[1]);
      }
    }
  }
}

// A rule that changes on reload starts empty; the rules it shared a table
// with keep their state, and the changed rule's keys leave that table.
TEST(SharedTablesTest, ReloadKeepsTheUnchangedMembersOfATable) {
  const std::string before =
      "rules:\n"
      "  - {name: a, kind: monotonic, key: [k], field: v, max_keys: 110}\n"
      "  - {name: b, kind: monotonic, key: [k], field: w, max_keys: 110}\n"
      "  - {name: c, kind: sequence, key: [k], field: v, max_keys: 110}\n";
  const std::string after =
      "rules:\n"
      "  - {name: a, kind: monotonic, key: [k], field: v, max_keys: 110}\n"
      "  - {name: b, kind: monotonic, key: [k], field: w, max_keys: 110,"
      " strict: true}\n"
      "  - {name: c, kind: sequence, key: [k], field: v, max_keys: 110}\n";
  LoadResult r1 = LoadRuleText(before, "t.yaml");
  LoadResult r2 = LoadRuleText(after, "t.yaml");
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(r2.ok());
  const FieldSet& f = r1.rules->fields();
  const int fk = f.Find(*FieldPath::Parse("k"));
  const int fv = f.Find(*FieldPath::Parse("v"));
  const int fw = f.Find(*FieldPath::Parse("w"));
  auto old_engine = std::make_unique<Engine>(r1.rules);
  Event e;
  std::string raw;
  uint64_t line = 0;
  std::vector<Violation> out;
  auto event = [&](Engine* engine, int k, int v, int w) {
    e.Reset(f.size());
    e.fields[fk] = Value::Int(k);
    if (v >= 0) e.fields[fv] = Value::Int(v);
    if (w >= 0) e.fields[fw] = Value::Int(w);
    raw = absl::StrCat(++line);  // distinct: not redeliveries
    e.raw = raw;
    out.clear();
    engine->Process(e, &out);
  };
  // a and c hold keys 0-99, b keys 100-109: the shared table is full.
  for (int k = 0; k < 100; ++k) event(old_engine.get(), k, 5, -1);
  for (int k = 100; k < 110; ++k) event(old_engine.get(), k, -1, 5);
  ASSERT_NE(old_engine->Stats()[0].table.keys, 0u);
  Engine next(r2.rules);
  const std::vector<std::string> carried = next.TakeStateFrom(*old_engine);
  old_engine.reset();
  EXPECT_EQ(carried, (std::vector<std::string>{"a", "c"}));
  const std::vector<RuleStats> s = next.Stats();
  EXPECT_EQ(s[0].table.keys, 100u);
  EXPECT_EQ(s[1].table.keys, 0u);
  EXPECT_EQ(s[2].table.keys, 100u);
  EXPECT_EQ(s[1].table.evicted, 0u);
  // The carried state still judges: v regressing is found by a and c.
  event(&next, 3, 4, -1);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].rule, "a");
  EXPECT_EQ(out[1].rule, "c");
  // b's keys left the table a and c kept: ten new keys fit without an
  // eviction (with b's still there the table would be full).
  for (int k = 200; k < 210; ++k) event(&next, k, 1, -1);
  EXPECT_EQ(next.Stats()[0].table.keys, 110u);
  EXPECT_EQ(next.Stats()[0].table.evicted, 0u);
  event(&next, 210, 1, -1);  // and the next one evicts
  EXPECT_EQ(next.Stats()[0].table.evicted, 1u);
}

// Memory after a reload: the table planned for the new engine is dropped
// when its members' states are carried over (it was sized for
// expected_keys and charged to the budget), the changed rule gets a table
// of its own, and the rules' reported bytes add up to what the budget holds.
TEST(SharedTablesTest, ReloadLeavesNoTableBehindInTheBudget) {
  auto rules = [](const char* b_extra) {
    LoadResult r = LoadRuleText(
        absl::StrCat("rules:\n"
                     "  - {name: a, kind: monotonic, key: [k], field: v,"
                     " expected_keys: 20000}\n"
                     "  - {name: b, kind: monotonic, key: [k], field: w,"
                     " expected_keys: 20000",
                     b_extra,
                     "}\n"
                     "  - {name: c, kind: sequence, key: [k], field: v,"
                     " expected_keys: 20000}\n"),
        "t.yaml");
    EXPECT_TRUE(r.ok());
    return r.rules;
  };
  auto budget = std::make_shared<MemoryBudget>(size_t{1} << 30);
  EngineOptions o;
  o.budget = budget;
  auto reported = [](const Engine& e) {
    size_t sum = 0;
    for (const RuleStats& s : e.Stats()) sum += s.table.bytes;
    return sum;
  };
  // The budget charges each table in whole chunks.
  auto charged_for = [&](size_t bytes, size_t tables) {
    return budget->used() >= bytes &&
           budget->used() - bytes < tables * MemoryBudget::kChunk;
  };
  auto old_engine = std::make_unique<Engine>(rules(""), o);
  const size_t one_table = reported(*old_engine);
  EXPECT_TRUE(charged_for(one_table, 1)) << budget->used();
  EXPECT_GT(one_table, 20000u * 80);  // one 80-byte slot per expected key
  Engine next(rules(", strict: true"), o);
  EXPECT_EQ(next.TakeStateFrom(*old_engine),
            (std::vector<std::string>{"a", "c"}));
  old_engine.reset();
  // a and c in the table they had; b alone in one of 40-byte slots.
  const std::vector<RuleStats> s = next.Stats();
  EXPECT_EQ(s[0].table.bytes + s[2].table.bytes, one_table);
  EXPECT_LT(s[1].table.bytes, one_table * 6 / 10);
  EXPECT_TRUE(charged_for(reported(next), 2)) << budget->used();
}

}  // namespace
}  // namespace invariantd
