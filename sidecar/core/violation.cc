#include "sidecar/core/violation.h"

namespace invariantd {

std::string MakeViolationId(std::string_view rule, const Hash128& key,
                            std::string_view source, uint64_t offset) {
  TupleHasher h;
  h.AddBytes(rule);
  h.AddU64(key.lo);
  h.AddU64(key.hi);
  h.AddBytes(source);
  h.AddU64(offset);
  return h.Finish().Hex();
}

}  // namespace invariantd
