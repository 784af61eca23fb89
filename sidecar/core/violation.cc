#include "sidecar/core/violation.h"

namespace invariantd {

std::string MakeViolationId(std::string_view rule, const Hash128& key,
                            const Position& position) {
  TupleHasher h;
  h.AddBytes(rule);
  h.AddU64(key.lo);
  h.AddU64(key.hi);
  h.AddBytes(position.source);
  h.AddU64(position.stream);
  h.AddU64(position.offset);
  h.AddU64(position.line);
  return h.Finish().Hex();
}

}  // namespace invariantd
