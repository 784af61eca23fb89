// The shipped invariant kinds. One file each; see rules/kind.h.
#ifndef INVARIANTD_RULES_KINDS_KINDS_H_
#define INVARIANTD_RULES_KINDS_KINDS_H_

#include "rules/kind.h"

namespace invariantd {

KindSpec MonotonicKindSpec();
KindSpec AgreementKindSpec();
KindSpec UniqueKindSpec();
KindSpec TransitionKindSpec();
KindSpec SequenceKindSpec();
KindSpec AlwaysKindSpec();

// Shared by kinds whose state is one field's value.
inline ObserveStatus ExtractField(const Expr& field, const ObserveInput& in,
                                  Value* v) {
  return EvalValue(field, *in.event, v);
}

}  // namespace invariantd

#endif  // INVARIANTD_RULES_KINDS_KINDS_H_
