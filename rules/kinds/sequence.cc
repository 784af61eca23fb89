// sequence: a per-key counter advances by exactly one. Reasons: "gap" (it
// jumped ahead: events were lost; the state resyncs to the new value) and
// "repeat" (a value at or below the last one: a replay; the state keeps the
// highest value). The first value seen for a key is accepted as the start.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"

namespace invariantd {
namespace {

struct Sequence {
  struct Config : KeyedKindConfig<Sequence> {
    std::unique_ptr<Expr> field;
    const Expr* GaugeField() const override { return field.get(); }
  };
  struct State {
    int64_t last = 0;
    uint64_t line = 0;
  };

  static ObserveStatus Extract(const Config& c, const ObserveInput& in,
                               Value* v) {
    const ObserveStatus st = ExtractField(*c.field, in, v);
    if (st != ObserveStatus::kOk || v->is_int()) return st;
    // An integral double within int64 range counts (JSON writers often emit
    // 5.0); anything else is a type error. Range-checked before the cast.
    if (v->is_double()) {
      const double d = v->double_value();
      if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
          d == std::floor(d)) {
        *v = Value::Int(static_cast<int64_t>(d));
        return ObserveStatus::kOk;
      }
    }
    return ObserveStatus::kTypeError;
  }
  static constexpr bool kTableKeyIsRuleKey = true;
  static Hash128 TableKey(const Config&, const ObserveInput& in, const Value&) {
    return in.key;
  }
  static ObserveStatus Step(const Config& c, State& s, bool is_new,
                            const Value& v, const ObserveInput& in,
                            std::optional<Finding>* out) {
    const int64_t x = v.int_value();
    const uint64_t line = in.event->position.line;
    if (is_new) {
      s = State{x, line};
      return ObserveStatus::kOk;
    }
    if (s.last != INT64_MAX && x == s.last + 1) {
      s = State{x, line};
      return ObserveStatus::kOk;
    }
    Finding f;
    f.observed = v;
    f.previous = OwnedValue(Value::Int(s.last));
    f.previous_line = s.line;
    if (x > s.last) {
      f.reason = "gap";
      f.message = absl::StrCat(
          c.field->text(), " jumped from ", s.last, " to ", x, ": ",
          static_cast<uint64_t>(x) - static_cast<uint64_t>(s.last) - 1,
          " missing");
      s = State{x, line};
    } else {
      f.reason = "repeat";
      f.message =
          absl::StrCat(c.field->text(), " repeated ", x, " after ", s.last);
    }
    *out = std::move(f);
    return ObserveStatus::kOk;
  }
  static size_t HeapBytes(const State&) { return 0; }
};

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<Sequence::Config>();
  c->field = kc.Expression("field", /*required=*/true, /*boolean=*/false);
  if (!c->field) return nullptr;
  return c;
}

}  // namespace

KindSpec SequenceKindSpec() { return KindSpec{"sequence", {"field"}, Compile}; }

}  // namespace invariantd
