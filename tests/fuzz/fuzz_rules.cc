// libFuzzer: the rule-file loader -- YAML, the rule schema, every kind's
// options, and the expression compiler for every expression in the file.
#include <string_view>

#include "rules/rule_set.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  invariantd::LoadResult r = invariantd::LoadRuleText(
      std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  return 0;
}
