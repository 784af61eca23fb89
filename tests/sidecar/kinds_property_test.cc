// Differential property tests: every invariant kind, driven through the
// real decoder and engine, against a deliberately simple reference model
// written here with std::map. Sequences are adversarial: few keys (many
// collisions), values at int64 extremes, missing fields, wrong types,
// exact redeliveries and different events with the same idempotency value.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rapidcheck/gtest.h"
#include "rules/rule_set.h"
#include "sidecar/replayer.h"

namespace invariantd {
namespace {

// One generated event: key k, value v (absent when nullopt), a second
// numeric field w, a state name s, and an explicit event id.
struct GenEvent {
  int k = 0;
  std::optional<int64_t> v;
  bool v_is_string = false;
  int64_t w = 0;
  int s = 0;
  int id = 0;
};

const int64_t kExtremes[] = {INT64_MIN, INT64_MIN + 1, -1,       0,
                             1,         INT64_MAX - 1, INT64_MAX};

rc::Gen<GenEvent> GenEvents() {
  return rc::gen::apply(
      [](int k, int vsel, int64_t small, int ext, bool str, int64_t w, int s,
         int id) {
        GenEvent e;
        e.k = k;
        if (vsel == 0) {
          e.v = std::nullopt;
        } else if (vsel == 1) {
          e.v = kExtremes[ext];
        } else {
          e.v = small;
        }
        e.v_is_string = str && vsel != 0;
        e.w = w;
        e.s = s;
        e.id = id;
        return e;
      },
      rc::gen::inRange(0, 3), rc::gen::inRange(0, 8),
      rc::gen::inRange<int64_t>(-3, 6), rc::gen::inRange(0, 7),
      rc::gen::weightedElement<bool>({{1, true}, {9, false}}),
      rc::gen::inRange<int64_t>(-3, 6), rc::gen::inRange(0, 4),
      rc::gen::inRange(0, 12));
}

std::string Line(const GenEvent& e) {
  std::string out = absl::StrCat("{\"id\":", e.id, ",\"k\":\"k", e.k, "\"");
  if (e.v) {
    if (e.v_is_string) {
      absl::StrAppend(&out, ",\"v\":\"", *e.v, "\"");
    } else {
      absl::StrAppend(&out, ",\"v\":", *e.v);
    }
  }
  absl::StrAppend(&out, ",\"w\":", e.w, ",\"s\":\"S", e.s, "\"}");
  return out;
}

using Found = std::tuple<uint64_t, std::string>;  // (line, reason)

std::vector<Found> RunEngine(const std::string& rule_yaml,
                             const std::vector<GenEvent>& events,
                             size_t dedupe_window) {
  LoadResult loaded = LoadRuleText(rule_yaml, "property.yaml");
  if (!loaded.ok()) {
    for (const auto& d : loaded.diagnostics) {
      RC_FAIL(FormatDiagnostic(d));
    }
  }
  ReplayerOptions opts;
  opts.engine.dedupe_window = dedupe_window;
  auto r = Replayer::Create(loaded.rules, opts);
  RC_ASSERT(r.ok());
  std::string text;
  for (const GenEvent& e : events) absl::StrAppend(&text, Line(e), "\n");
  std::vector<Found> got;
  RC_ASSERT((*r)->ProcessText(text, "gen",
                              [&](const Violation& v) {
                                got.emplace_back(v.line, v.reason);
                              })
                .ok());
  return got;
}

// Events whose `id` was seen before (with dedupe on) never reach rules.
// The reference models receive only what the engine would evaluate.
struct Delivered {
  uint64_t line;
  const GenEvent* e;
};
std::vector<Delivered> Deliver(const std::vector<GenEvent>& events,
                               bool dedupe) {
  std::vector<Delivered> out;
  std::set<int> seen;
  for (size_t i = 0; i < events.size(); ++i) {
    if (dedupe && !seen.insert(events[i].id).second) continue;
    out.push_back(Delivered{i + 1, &events[i]});
  }
  return out;
}

const char kHeader[] = "input: {format: json, id: id}\nrules:\n";

RC_GTEST_PROP(KindsProperty, MonotonicMatchesReference, (bool strict)) {
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  const std::string yaml = absl::StrCat(
      kHeader, "  - {name: m, kind: monotonic, key: [k], field: v, strict: ",
      strict ? "true" : "false", "}\n");
  std::vector<Found> want;
  std::map<int, int64_t> last;
  for (const Delivered& d : Deliver(events, true)) {
    const GenEvent& e = *d.e;
    if (!e.v || e.v_is_string) continue;  // missing / type error: skipped
    auto it = last.find(e.k);
    if (it != last.end()) {
      if (*e.v < it->second) want.emplace_back(d.line, "regressed");
      if (strict && *e.v == it->second) {
        want.emplace_back(d.line, "not_increasing");
      }
    }
    last[e.k] = *e.v;
  }
  RC_ASSERT(RunEngine(yaml, events, 1 << 16) == want);
}

RC_GTEST_PROP(KindsProperty, AgreementMatchesReference, ()) {
  const int max_distinct = *rc::gen::inRange(1, 4);
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  const std::string yaml = absl::StrCat(
      kHeader, "  - {name: a, kind: agreement, key: [k], field: v, ",
      "max_distinct: ", max_distinct, "}\n");
  std::vector<Found> want;
  std::map<int, std::vector<std::string>> seen;
  for (const Delivered& d : Deliver(events, true)) {
    const GenEvent& e = *d.e;
    if (!e.v) continue;
    // A string "5" and a number 5 are different values.
    const std::string val = absl::StrCat(e.v_is_string ? "s" : "n", *e.v);
    auto& s = seen[e.k];
    if (std::find(s.begin(), s.end(), val) != s.end()) continue;
    if (static_cast<int>(s.size()) >= max_distinct) {
      want.emplace_back(d.line, "disagreement");
      if (static_cast<int>(s.size()) >= max_distinct + 8) continue;
    }
    s.push_back(val);
  }
  RC_ASSERT(RunEngine(yaml, events, 1 << 16) == want);
}

RC_GTEST_PROP(KindsProperty, SequenceMatchesReference, ()) {
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  const std::string yaml = absl::StrCat(
      kHeader, "  - {name: s, kind: sequence, key: [k], field: v}\n");
  std::vector<Found> want;
  std::map<int, int64_t> last;
  for (const Delivered& d : Deliver(events, true)) {
    const GenEvent& e = *d.e;
    if (!e.v || e.v_is_string) continue;
    auto it = last.find(e.k);
    if (it == last.end()) {
      last[e.k] = *e.v;
      continue;
    }
    const int64_t prev = it->second;
    if (prev != INT64_MAX && *e.v == prev + 1) {
      it->second = *e.v;
    } else if (*e.v > prev) {
      want.emplace_back(d.line, "gap");
      it->second = *e.v;
    } else {
      want.emplace_back(d.line, "repeat");
    }
  }
  RC_ASSERT(RunEngine(yaml, events, 1 << 16) == want);
}

RC_GTEST_PROP(KindsProperty, TransitionMatchesReference, (bool allow_self)) {
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  // S0 -> S1 -> S2 -> S0, S1 -> S3 (terminal). Initial: S0 or S1.
  const std::string yaml = absl::StrCat(
      kHeader,
      "  - name: t\n    kind: transition\n    key: [k]\n    field: s\n"
      "    transitions: {S0: [S1], S1: [S2, S3], S2: [S0]}\n"
      "    initial: [S0, S1]\n    terminal: [S3]\n    allow_self: ",
      allow_self ? "true" : "false", "\n");
  const std::set<std::pair<int, int>> edges = {{0, 1}, {1, 2}, {1, 3}, {2, 0}};
  std::vector<Found> want;
  std::map<int, int> state;
  for (const Delivered& d : Deliver(events, true)) {
    const GenEvent& e = *d.e;
    auto it = state.find(e.k);
    if (it == state.end()) {
      if (e.s != 0 && e.s != 1) want.emplace_back(d.line, "illegal_initial");
      state[e.k] = e.s;
      continue;
    }
    if (it->second == 3) {
      want.emplace_back(d.line, "after_terminal");
      continue;
    }
    const bool ok =
        it->second == e.s ? allow_self : edges.count({it->second, e.s}) > 0;
    if (!ok) want.emplace_back(d.line, "illegal_transition");
    it->second = e.s;
  }
  RC_ASSERT(RunEngine(yaml, events, 1 << 16) == want);
}

RC_GTEST_PROP(KindsProperty, UniqueMatchesReference, ()) {
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  // Dedupe window off: redeliveries reach the rule, which must recognise
  // them by identity (the `id` field) and not report them.
  const std::string yaml = absl::StrCat(
      kHeader, "  - {name: u, kind: unique, key: [k], field: v}\n");
  std::vector<Found> want;
  std::map<std::pair<int, std::string>, int> first_id;
  for (const Delivered& d : Deliver(events, false)) {
    const GenEvent& e = *d.e;
    if (!e.v) continue;
    const std::string val = absl::StrCat(e.v_is_string ? "s" : "n", *e.v);
    auto [it, inserted] = first_id.emplace(std::make_pair(e.k, val), e.id);
    if (!inserted && it->second != e.id) {
      want.emplace_back(d.line, "duplicate");
    }
  }
  RC_ASSERT(RunEngine(yaml, events, 0) == want);
}

RC_GTEST_PROP(KindsProperty, UniqueCountWindowForgets, ()) {
  const int window = *rc::gen::inRange(1, 6);
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  const std::string yaml =
      absl::StrCat(kHeader, "  - {name: u, kind: unique, key: [k], field: v, ",
                   "window_count: ", window, "}\n");
  std::vector<Found> want;
  // value -> (id, ordinal when first seen)
  std::map<std::pair<int, std::string>, std::pair<int, int64_t>> first;
  int64_t ordinal = 0;
  for (const Delivered& d : Deliver(events, false)) {
    const GenEvent& e = *d.e;
    if (!e.v) continue;
    ++ordinal;
    const auto key =
        std::make_pair(e.k, absl::StrCat(e.v_is_string ? "s" : "n", *e.v));
    auto it = first.find(key);
    if (it == first.end() || ordinal - it->second.second > window) {
      first[key] = {e.id, ordinal};
    } else if (it->second.first != e.id) {
      want.emplace_back(d.line, "duplicate");
    }
  }
  RC_ASSERT(RunEngine(yaml, events, 0) == want);
}

RC_GTEST_PROP(KindsProperty, AlwaysMatchesReference, ()) {
  const auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  const std::string yaml = absl::StrCat(
      kHeader, "  - {name: al, kind: always, key: [k], always: \"v <= w\"}\n");
  std::vector<Found> want;
  for (const Delivered& d : Deliver(events, true)) {
    const GenEvent& e = *d.e;
    if (!e.v || e.v_is_string) continue;  // missing / type error
    if (!(*e.v <= e.w)) want.emplace_back(d.line, "violated");
  }
  RC_ASSERT(RunEngine(yaml, events, 1 << 16) == want);
}

// Replay resistance: re-feeding any prefix of the stream again (at-least-
// once delivery) changes no outcome when identities are remembered.
RC_GTEST_PROP(KindsProperty, RedeliveryChangesNothing, ()) {
  auto events = *rc::gen::container<std::vector<GenEvent>>(GenEvents());
  for (size_t i = 0; i < events.size(); ++i) events[i].id = static_cast<int>(i);
  const std::string yaml =
      absl::StrCat(kHeader,
                   "  - {name: m, kind: monotonic, key: [k], field: v}\n"
                   "  - {name: q, kind: sequence, key: [k], field: w}\n"
                   "  - {name: u, kind: unique, key: [k], field: v}\n");
  const auto once = RunEngine(yaml, events, 1 << 16);
  const size_t cut = *rc::gen::inRange<size_t>(0, events.size() + 1);
  std::vector<GenEvent> twice = events;
  twice.insert(twice.begin() + static_cast<long>(cut), events.begin(),
               events.begin() + static_cast<long>(cut));
  auto again = RunEngine(yaml, twice, 1 << 16);
  // Lines after the redelivered block shift by `cut`.
  for (auto& [line, reason] : again) {
    RC_ASSERT(line <= cut || line > 2 * cut);
    if (line > 2 * cut) line -= cut;
  }
  RC_ASSERT(again == once);
}

}  // namespace
}  // namespace invariantd
