// libFuzzer: the expression compiler and evaluator. The input's first line
// is an expression, the rest are JSON events; the expression becomes an
// `always` rule (and, when it compiles, is evaluated on every event).
#include <string>
#include <string_view>

#include "rules/rule_set.h"
#include "sidecar/replayer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nl = in.find('\n');
  const std::string_view expr = in.substr(0, nl);
  const std::string_view events =
      nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  // A YAML block scalar carries the expression verbatim.
  std::string rules =
      "rules:\n  - name: f\n    kind: always\n    key: [k]\n    always: |-\n"
      "      ";
  rules.append(expr);
  rules.append("\n");
  invariantd::LoadResult loaded = invariantd::LoadRuleText(rules, "fuzz.yaml");
  if (!loaded.ok()) return 0;
  auto r =
      invariantd::Replayer::Create(loaded.rules, invariantd::ReplayerOptions{});
  if (!r.ok()) return 0;
  (void)(*r)->ProcessText(events, "fuzz", [](const invariantd::Violation&) {});
  return 0;
}
