// always: a condition that must hold on every event the rule applies to
// ("commit index <= last log index"). Stateless: no per-key memory. The key,
// if any, names the offending entity in the violation. Reason: "violated".
// A condition that reads an absent field does not apply (counted as
// missing), it is not a violation.
#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"

namespace invariantd {
namespace {

struct AlwaysConfig : KindConfig {
  std::unique_ptr<Expr> condition;
  std::unique_ptr<Expr> observed;  // optional: what to show as observed
  std::unique_ptr<RuleState> NewState(size_t, OverflowPolicy) const override;
  bool NeedsKey() const override { return false; }
};

class AlwaysState final : public RuleState {
 public:
  explicit AlwaysState(const AlwaysConfig* c) : c_(c) {}

  ObserveStatus Observe(const ObserveInput& in,
                        std::optional<Finding>* out) override {
    const EvalResult r = c_->condition->Eval(*in.event);
    if (r.status == EvalStatus::kMissing) return ObserveStatus::kMissing;
    if (r.status == EvalStatus::kTypeError || !r.value.is_bool()) {
      return ObserveStatus::kTypeError;
    }
    if (r.value.bool_value()) return ObserveStatus::kOk;
    Finding f;
    f.reason = "violated";
    if (c_->observed != nullptr) {
      const EvalResult o = c_->observed->Eval(*in.event);
      if (o.status == EvalStatus::kOk) f.observed = o.value;
    } else {
      f.observed = Value::Bool(false);
    }
    f.message =
        absl::StrCat("condition does not hold: ", c_->condition->text());
    *out = std::move(f);
    return ObserveStatus::kOk;
  }

  TableStats Stats() const override { return TableStats{}; }

  void Rebind(const KindConfig* config) override {
    c_ = static_cast<const AlwaysConfig*>(config);
  }

 private:
  const AlwaysConfig* c_;
};

std::unique_ptr<RuleState> AlwaysConfig::NewState(size_t,
                                                  OverflowPolicy) const {
  return std::make_unique<AlwaysState>(this);
}

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<AlwaysConfig>();
  c->condition = kc.Expression("always", /*required=*/true, /*boolean=*/true);
  c->observed = kc.Expression("observed", /*required=*/false,
                              /*boolean=*/false);
  if (!c->condition) return nullptr;
  return c;
}

}  // namespace

KindSpec AlwaysKindSpec() {
  return KindSpec{"always", {"always", "observed"}, Compile};
}

}  // namespace invariantd
