// agreement: per key, events carry at most `max_distinct` (default 1)
// distinct values of a field: "one leader per term", "the entry at a
// committed index is the same on every replica". Reason: "disagreement".
// Each conflicting value is reported once (it joins the remembered set, up
// to max_distinct + kExtraRemembered values; past that every further
// conflicting event is reported).
//
// Values are remembered by their canonical 128-bit hash (equal values hash
// equal: 1 and 1.0 agree), so a key costs the same whether the value is a
// node id or a 1 MiB ledger entry. Only the first value is kept as a
// preview for messages and evidence, cut at kPreviewBytes.
#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "rules/kinds/kinds.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

constexpr size_t kExtraRemembered = 8;
constexpr size_t kPreviewBytes = 120;

Hash128 ValueHash(const Value& v) {
  thread_local TupleHasher h;  // keeps its buffer: no allocation per event
  h.Clear();
  h.Add(v);
  return h.Finish();
}

// The value itself, or for long text its first kPreviewBytes and a marker.
OwnedValue Preview(const Value& v) {
  if ((v.is_string() || v.is_json()) && v.str().size() > kPreviewBytes) {
    size_t cut = kPreviewBytes;
    while (cut > 0 &&
           (static_cast<unsigned char>(v.str()[cut]) & 0xC0) == 0x80) {
      --cut;  // do not split a UTF-8 sequence
    }
    const std::string text = absl::StrCat(AV(v.str().substr(0, cut)), "...[+",
                                          v.str().size() - cut, " bytes]");
    return OwnedValue(Value::String(text));
  }
  return OwnedValue(v);
}

struct Agreement {
  struct Config : KeyedKindConfig<Agreement> {
    std::unique_ptr<Expr> field;
    size_t max_distinct = 1;
  };
  struct Seen {
    Hash128 hash;
    uint64_t line = 0;
  };
  struct State {
    OwnedValue first;  // preview of the first value seen
    absl::InlinedVector<Seen, 1> seen;
  };

  static ObserveStatus Extract(const Config& c, const ObserveInput& in,
                               Value* v) {
    return ExtractField(*c.field, in, v);
  }
  static constexpr bool kTableKeyIsRuleKey = true;
  static Hash128 TableKey(const Config&, const ObserveInput& in, const Value&) {
    return in.key;
  }
  static ObserveStatus Step(const Config& c, State& s, bool, const Value& v,
                            const ObserveInput& in,
                            std::optional<Finding>* out) {
    const Hash128 h = ValueHash(v);
    for (const Seen& seen : s.seen) {
      if (seen.hash == h) return ObserveStatus::kOk;
    }
    const uint64_t line = in.event->position.line;
    if (s.seen.empty()) s.first = Preview(v);
    if (s.seen.size() >= c.max_distinct) {
      Finding f;
      f.reason = "disagreement";
      f.observed = v;
      f.previous = s.first;
      f.previous_line = s.seen.front().line;
      f.message = absl::StrCat(
          c.field->text(), " is ", Preview(v).ToText(), " but was already ",
          s.first.ToText(),
          c.max_distinct == 1 ? std::string(" for this key")
                              : absl::StrCat(" (", s.seen.size(),
                                             " distinct values seen, at most ",
                                             c.max_distinct, " allowed)"));
      *out = std::move(f);
      if (s.seen.size() >= c.max_distinct + kExtraRemembered) {
        return ObserveStatus::kOk;
      }
    }
    s.seen.push_back(Seen{h, line});
    return ObserveStatus::kOk;
  }
  static void Encode(const State& s, std::string* out) {
    PutValue(out, s.first.view());
    PutU64(out, s.seen.size());
    for (const Seen& seen : s.seen) {
      PutHash(out, seen.hash);
      PutU64(out, seen.line);
    }
  }
  static bool Decode(std::string_view* in, State* s) {
    uint64_t n = 0;
    if (!GetValue(in, &s->first) || !GetU64(in, &n) || n > in->size() / 24) {
      return false;
    }
    s->seen.resize(n);
    for (Seen& seen : s->seen) {
      if (!GetHash(in, &seen.hash) || !GetU64(in, &seen.line)) return false;
    }
    return true;
  }
  static size_t HeapBytes(const State& s) {
    size_t n = s.seen.capacity() > 1 ? s.seen.capacity() * sizeof(Seen) : 0;
    const Value v = s.first.view();
    if ((v.is_string() || v.is_json()) && v.str().size() > 15) {
      n += v.str().size() + 1;
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
