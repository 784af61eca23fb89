// Shared setup of the libFuzzer targets (tests/fuzz/fuzz_*.cc): a rule set
// with a rule of every stateful kind over fields at several depths, in a
// given input format, driven through the replayer as the daemon drives a
// tailed file (decode, redelivery check, keys, every rule). The targets
// look for crashes, leaks, undefined behaviour and slow inputs (ASan,
// UBSan and libFuzzer's -timeout); results are not compared.
#ifndef INVARIANTD_TESTS_FUZZ_FUZZ_COMMON_H_
#define INVARIANTD_TESTS_FUZZ_FUZZ_COMMON_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "rules/rule_set.h"
#include "sidecar/replayer.h"

namespace invariantd::fuzz {

// `input` is the rule file's `input:` mapping, e.g. "{format: logfmt}".
inline std::string RulesFor(std::string_view input) {
  return std::string("input: ") + std::string(input) + R"yaml(
rules:
  - {name: mono, kind: monotonic, key: [node, a.b], field: term}
  - {name: strict, kind: monotonic, key: [node], field: commit + 1, strict: true}
  - {name: seq, kind: sequence, key: [node], field: index}
  - {name: agree, kind: agreement, key: [index], field: entry.hash, max_distinct: 2}
  - {name: uniq, kind: unique, key: [node], field: id, window_count: 64}
  - name: trans
    kind: transition
    key: [node]
    field: role
    transitions: {follower: [candidate], candidate: [leader, follower], leader: [follower]}
    initial: [follower]
  - name: always
    kind: always
    key: [node]
    always: 'commit <= last || (role == "leader" && !(term > 3)) || msg.startsWith("x") || matches(msg, "^a+b?$")'
    when: 'has(term)'
)yaml";
}

// A replayer over RulesFor(input); aborts when the rules do not load (a
// bug in the target, not a finding).
inline std::unique_ptr<Replayer> MakeReplayer(std::string_view input) {
  LoadResult loaded = LoadRuleText(RulesFor(input), "fuzz.yaml");
  if (!loaded.ok()) std::abort();
  auto r = Replayer::Create(loaded.rules, ReplayerOptions{});
  if (!r.ok()) std::abort();
  return *std::move(r);
}

inline void Replay(Replayer* r, const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)r->ProcessText(text, "fuzz", [](const Violation&) {});
}

}  // namespace invariantd::fuzz

#endif  // INVARIANTD_TESTS_FUZZ_FUZZ_COMMON_H_
