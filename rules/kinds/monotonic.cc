// monotonic: a numeric field never decreases per key (strict: always
// increases). Reasons: "regressed" (smaller), "not_increasing" (equal, with
// strict). After a finding the state follows the observed value, so one
// regression is reported once, not on every later event.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

struct Monotonic {
  struct Config : KeyedKindConfig<Monotonic> {
    std::unique_ptr<Expr> field;
    bool strict = false;
    const Expr* GaugeField() const override { return field.get(); }
  };
  // 16 bytes: the last value (int64 or double bits) and the line that set it
  // (first reached it; 56 bits) with the number kind in the top byte.
  struct State {
    uint64_t bits = 0;
    uint64_t line_and_tag = 0;
  };
  static constexpr uint64_t kDoubleTag = uint64_t{1} << 63;

  static Value Load(const State& s) {
    if (s.line_and_tag & kDoubleTag) {
      double d;
      std::memcpy(&d, &s.bits, 8);
      return Value::Double(d);
    }
    return Value::Int(static_cast<int64_t>(s.bits));
  }
  static void Store(State& s, const Value& v, uint64_t line) {
    uint64_t tag = 0;
    if (v.is_int()) {
      s.bits = static_cast<uint64_t>(v.int_value());
    } else {
      const double d = v.double_value();
      std::memcpy(&s.bits, &d, 8);
      tag = kDoubleTag;
    }
    s.line_and_tag = (line & ((uint64_t{1} << 56) - 1)) | tag;
  }
  static uint64_t Line(const State& s) {
    return s.line_and_tag & ((uint64_t{1} << 56) - 1);
  }

  static ObserveStatus Extract(const Config& c, const ObserveInput& in,
                               Value* v) {
    const ObserveStatus st = ExtractField(*c.field, in, v);
    if (st == ObserveStatus::kOk &&
        (!v->is_number() ||
         (v->is_double() && std::isnan(v->double_value())))) {
      return ObserveStatus::kTypeError;  // NaN orders with nothing
    }
    return st;
  }
  static constexpr bool kTableKeyIsRuleKey = true;
  static Hash128 TableKey(const Config&, const ObserveInput& in, const Value&) {
    return in.key;
  }
  static ObserveStatus Step(const Config& c, State& s, bool is_new,
                            const Value& v, const ObserveInput& in,
                            std::optional<Finding>* out) {
    const uint64_t line = in.event->position.line;
    if (!is_new) {
      const Value prev = Load(s);
      const std::optional<int> cmp = Value::CompareNumbers(v, prev);
      if (!cmp.has_value()) return ObserveStatus::kTypeError;  // NaN
      // An equal value leaves the state -- and the line that set it -- as
      // it was (most events of a key repeat its value; an unchanged state
      // also costs nothing in a checkpoint).
      if (*cmp == 0 && !c.strict) return ObserveStatus::kOk;
      if (*cmp < 0 || (c.strict && *cmp == 0)) {
        Finding f;
        f.reason = *cmp < 0 ? "regressed" : "not_increasing";
        f.observed = v;
        f.previous = OwnedValue(prev);
        f.previous_line = Line(s);
        f.message = absl::StrCat(
            c.field->text(),
            *cmp < 0 ? " regressed from " : " did not increase from ",
            prev.ToText(), " to ", v.ToText());
        *out = std::move(f);
      }
    }
    Store(s, v, line);
    return ObserveStatus::kOk;
  }
  static size_t HeapBytes(const State&) { return 0; }
};

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<Monotonic::Config>();
  c->field = kc.Expression("field", /*required=*/true, /*boolean=*/false);
  c->strict = kc.Bool("strict").value_or(false);
  if (!c->field) return nullptr;
  return c;
}

}  // namespace

KindSpec MonotonicKindSpec() {
  return KindSpec{"monotonic", {"field", "strict"}, Compile};
}

}  // namespace invariantd
