#include <vector>

#include "rules/kinds/kinds.h"

namespace invariantd {
namespace {

const std::vector<KindSpec>& Registry() {
  static const auto* kinds = new std::vector<KindSpec>{
      MonotonicKindSpec(),  AgreementKindSpec(), UniqueKindSpec(),
      TransitionKindSpec(), SequenceKindSpec(),  AlwaysKindSpec(),
  };
  return *kinds;
}

}  // namespace

const KindSpec* FindKind(std::string_view name) {
  for (const KindSpec& k : Registry()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

std::vector<std::string> KindNames() {
  std::vector<std::string> names;
  for (const KindSpec& k : Registry()) names.emplace_back(k.name);
  return names;
}

}  // namespace invariantd
