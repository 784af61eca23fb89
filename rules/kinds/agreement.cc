// agreement: per key, events carry at most `max_distinct` (default 1)
// distinct values of a field: "one leader per term", "the entry at a
// committed index is the same on every replica". Reason: "disagreement".
// Each conflicting value is reported once (it joins the remembered set, up
// to max_distinct + kExtraRemembered values; past that every further
// conflicting event is reported).
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"

namespace invariantd {
namespace {

constexpr size_t kExtraRemembered = 8;

struct Agreement {
  struct Config : KindConfig {
    std::unique_ptr<Expr> field;
    size_t max_distinct = 1;
    std::unique_ptr<RuleState> NewState(size_t max_keys,
                                        OverflowPolicy p) const override {
      return std::make_unique<KeyedRuleState<Agreement>>(this, max_keys, p);
    }
  };
  struct Seen {
    OwnedValue value;
    uint64_t line = 0;
  };
  struct State {
    absl::InlinedVector<Seen, 1> seen;
  };

  static ObserveStatus Extract(const Config& c, const ObserveInput& in,
                               Value* v) {
    return ExtractField(*c.field, in, v);
  }
  static constexpr bool kTableKeyIsRuleKey = true;
  static Hash128 TableKey(const Config&, const ObserveInput& in,
                          const Value&) {
    return in.key;
  }
  static ObserveStatus Step(const Config& c, State& s, bool,
                            const Value& v, const ObserveInput& in,
                            std::optional<Finding>* out) {
    for (const Seen& seen : s.seen) {
      if (seen.value.view() == v) return ObserveStatus::kOk;
    }
    const uint64_t line = in.event->position.line;
    if (s.seen.size() >= c.max_distinct) {
      Finding f;
      f.reason = "disagreement";
      f.observed = v;
      f.previous = s.seen.front().value;
      f.previous_line = s.seen.front().line;
      f.message = absl::StrCat(
          c.field->text(), " is ", v.ToText(), " but was already ",
          s.seen.front().value.ToText(),
          c.max_distinct == 1
              ? std::string(" for this key")
              : absl::StrCat(" (", s.seen.size(), " distinct values seen, at most ",
                             c.max_distinct, " allowed)"));
      *out = std::move(f);
      if (s.seen.size() >= c.max_distinct + kExtraRemembered) {
        return ObserveStatus::kOk;
      }
    }
    s.seen.push_back(Seen{OwnedValue(v), line});
    return ObserveStatus::kOk;
  }
  static size_t HeapBytes(const State& s) {
    size_t n = s.seen.capacity() > 1 ? s.seen.capacity() * sizeof(Seen) : 0;
    for (const Seen& seen : s.seen) {
      const Value v = seen.value.view();
      if ((v.is_string() || v.is_json()) && v.str().size() > 15) {
        n += v.str().size() + 1;
      }
    }
    return n;
  }
};

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<Agreement::Config>();
  c->field = kc.Expression("field", /*required=*/true, /*boolean=*/false);
  c->max_distinct =
      static_cast<size_t>(kc.Int("max_distinct", 1, 1000).value_or(1));
  if (!c->field) return nullptr;
  return c;
}

}  // namespace

KindSpec AgreementKindSpec() {
  return KindSpec{"agreement", {"field", "max_distinct"}, Compile};
}

}  // namespace invariantd
