#include "rules/expr_nodes.h"

#include <algorithm>
#include <utility>

namespace invariantd::expr_internal {
namespace {

inline EvalResult Ok(const Value& v) { return EvalResult{EvalStatus::kOk, v}; }
inline EvalResult Missing() {
  return EvalResult{EvalStatus::kMissing, Value()};
}
inline EvalResult TypeError() {
  return EvalResult{EvalStatus::kTypeError, Value()};
}
inline EvalResult Bool(bool b) { return Ok(Value::Bool(b)); }
inline EvalResult Status(EvalStatus s) { return EvalResult{s, Value()}; }

// The worse of two outcomes: kTypeError over kMissing over kOk.
inline EvalStatus Worst(EvalStatus a, EvalStatus b) {
  return static_cast<int>(a) > static_cast<int>(b) ? a : b;
}
static_assert(static_cast<int>(EvalStatus::kOk) <
                  static_cast<int>(EvalStatus::kMissing) &&
              static_cast<int>(EvalStatus::kMissing) <
                  static_cast<int>(EvalStatus::kTypeError));

constexpr Value kMissingValue{};

inline const Value& Field(const Event& event, int slot) {
  const auto i = static_cast<size_t>(slot);
  return i < event.fields.size() ? event.fields[i] : kMissingValue;
}

inline void Remap(const std::vector<int>& slots, int* slot) {
  *slot = slots[static_cast<size_t>(*slot)];
}

void RemapAll(const std::vector<NodePtr>& kids, const std::vector<int>& slots) {
  for (const NodePtr& k : kids) k->RemapSlots(slots);
}

CmpOp Flip(CmpOp op) {
  switch (op) {
    case CmpOp::kLt:
      return CmpOp::kGt;
    case CmpOp::kLe:
      return CmpOp::kGe;
    case CmpOp::kGt:
      return CmpOp::kLt;
    case CmpOp::kGe:
      return CmpOp::kLe;
    default:
      return op;  // == and != are symmetric
  }
}

class ConstNode final : public Node {
 public:
  explicit ConstNode(const Value& v) : v_(v) {}
  EvalResult Eval(const Event&) const override { return Ok(v_); }
  void RemapSlots(const std::vector<int>&) override {}
  const Value* constant() const override { return &v_; }

 private:
  Value v_;
};

class PathNode final : public Node {
 public:
  explicit PathNode(int slot) : slot_(slot) {}
  EvalResult Eval(const Event& event) const override {
    const Value& v = Field(event, slot_);
    return v.is_missing() ? Missing() : Ok(v);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    Remap(slots, &slot_);
  }
  int path_slot() const override { return slot_; }

 private:
  int slot_;
};

class HasNode final : public Node {
 public:
  explicit HasNode(int slot) : slot_(slot) {}
  EvalResult Eval(const Event& event) const override {
    return Bool(!Field(event, slot_).is_missing());
  }
  void RemapSlots(const std::vector<int>& slots) override {
    Remap(slots, &slot_);
  }

 private:
  int slot_;
};

class NotNode final : public Node {
 public:
  explicit NotNode(NodePtr x) : x_(std::move(x)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult r = x_->Eval(event);
    if (r.status != EvalStatus::kOk) return r;
    if (!r.value.is_bool()) return TypeError();
    return Bool(!r.value.bool_value());
  }
  void RemapSlots(const std::vector<int>& slots) override {
    x_->RemapSlots(slots);
  }

 private:
  NodePtr x_;
};

class NegNode final : public Node {
 public:
  explicit NegNode(NodePtr x) : x_(std::move(x)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult r = x_->Eval(event);
    if (r.status != EvalStatus::kOk) return r;
    return ApplyNeg(r.value);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    x_->RemapSlots(slots);
  }

 private:
  NodePtr x_;
};

// `&&` (kAnd = true) or `||` over any number of operands: the deciding
// value (false for &&, true for ||) wins over everything, then a type error
// (a non-boolean operand is one), then missing.
template <bool kAnd>
class LogicNode final : public Node {
 public:
  explicit LogicNode(std::vector<NodePtr> kids) : kids_(std::move(kids)) {}
  EvalResult Eval(const Event& event) const override {
    EvalStatus worst = EvalStatus::kOk;
    for (const NodePtr& k : kids_) {
      const EvalResult r = k->Eval(event);
      if (r.status == EvalStatus::kOk) {
        if (!r.value.is_bool()) {
          worst = EvalStatus::kTypeError;
        } else if (r.value.bool_value() != kAnd) {
          return Bool(!kAnd);
        }
      } else {
        worst = Worst(worst, r.status);
      }
    }
    return worst == EvalStatus::kOk ? Bool(kAnd) : Status(worst);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    RemapAll(kids_, slots);
  }

 private:
  std::vector<NodePtr> kids_;
};

class CoalesceNode final : public Node {
 public:
  explicit CoalesceNode(std::vector<NodePtr> kids) : kids_(std::move(kids)) {}
  EvalResult Eval(const Event& event) const override {
    for (const NodePtr& k : kids_) {
      const EvalResult r = k->Eval(event);
      if (r.status != EvalStatus::kMissing) return r;
    }
    return Missing();
  }
  void RemapSlots(const std::vector<int>& slots) override {
    RemapAll(kids_, slots);
  }

 private:
  std::vector<NodePtr> kids_;
};

// a (+|-) b (+|-) c ..., evaluated exactly like the left-nested binary
// operators it stands for.
class AdditiveNode final : public Node {
 public:
  AdditiveNode(std::vector<NodePtr> kids, std::vector<bool> minus)
      : kids_(std::move(kids)), minus_(std::move(minus)) {}
  EvalResult Eval(const Event& event) const override {
    EvalResult acc = kids_[0]->Eval(event);
    if (acc.status == EvalStatus::kTypeError) return acc;
    for (size_t i = 1; i < kids_.size(); ++i) {
      const EvalResult r = kids_[i]->Eval(event);
      if (r.status == EvalStatus::kTypeError) return r;
      if (acc.status == EvalStatus::kMissing ||
          r.status == EvalStatus::kMissing) {
        acc = Missing();
        continue;
      }
      acc = ApplyAdd(acc.value, r.value, minus_[i - 1]);
      if (acc.status == EvalStatus::kTypeError) return acc;
    }
    return acc;
  }
  void RemapSlots(const std::vector<int>& slots) override {
    RemapAll(kids_, slots);
  }

 private:
  std::vector<NodePtr> kids_;
  std::vector<bool> minus_;
};

class CompareNode final : public Node {
 public:
  CompareNode(CmpOp op, NodePtr a, NodePtr b)
      : op_(op), a_(std::move(a)), b_(std::move(b)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult a = a_->Eval(event);
    if (a.status == EvalStatus::kTypeError) return a;
    const EvalResult b = b_->Eval(event);
    const EvalStatus s = Worst(a.status, b.status);
    if (s != EvalStatus::kOk) return Status(s);
    return ApplyCompare(op_, a.value, b.value);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    a_->RemapSlots(slots);
    b_->RemapSlots(slots);
  }

 private:
  CmpOp op_;
  NodePtr a_;
  NodePtr b_;
};

// path <op> constant.
class PathConstCompareNode final : public Node {
 public:
  PathConstCompareNode(CmpOp op, int slot, const Value& c)
      : op_(op), slot_(slot), c_(c) {}
  EvalResult Eval(const Event& event) const override {
    const Value& v = Field(event, slot_);
    if (v.is_missing()) return Missing();
    return ApplyCompare(op_, v, c_);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    Remap(slots, &slot_);
  }

 private:
  CmpOp op_;
  int slot_;
  Value c_;
};

// path == "string" (or !=): the most common `when`.
class PathStringEqNode final : public Node {
 public:
  PathStringEqNode(bool negate, int slot, std::string_view s)
      : negate_(negate), slot_(slot), s_(s) {}
  EvalResult Eval(const Event& event) const override {
    const Value& v = Field(event, slot_);
    if (v.is_missing()) return Missing();
    return Bool((v.is_string() && v.str() == s_) != negate_);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    Remap(slots, &slot_);
  }

 private:
  bool negate_;
  int slot_;
  std::string_view s_;
};

class InNode final : public Node {
 public:
  InNode(NodePtr x, std::vector<NodePtr> list)
      : x_(std::move(x)), list_(std::move(list)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult x = x_->Eval(event);
    if (x.status == EvalStatus::kTypeError) return x;
    bool error = false;
    for (const NodePtr& k : list_) {
      const EvalResult r = k->Eval(event);
      if (r.status == EvalStatus::kTypeError) {
        error = true;
      } else if (r.status == EvalStatus::kOk && x.status == EvalStatus::kOk &&
                 r.value == x.value) {
        return Bool(true);
      }
    }
    if (error) return TypeError();
    if (x.status == EvalStatus::kMissing) return Missing();
    return Bool(false);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    x_->RemapSlots(slots);
    RemapAll(list_, slots);
  }

 private:
  NodePtr x_;
  std::vector<NodePtr> list_;
};

// x in [constants]: no element can be missing or an error.
class InConstNode final : public Node {
 public:
  InConstNode(NodePtr x, std::vector<Value> list)
      : x_(std::move(x)), list_(std::move(list)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult x = x_->Eval(event);
    if (x.status != EvalStatus::kOk) return x;
    for (const Value& v : list_) {
      if (v == x.value) return Bool(true);
    }
    return Bool(false);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    x_->RemapSlots(slots);
  }

 private:
  NodePtr x_;
  std::vector<Value> list_;
};

class StrFnNode final : public Node {
 public:
  StrFnNode(StrFn fn, NodePtr a, NodePtr b)
      : fn_(fn), a_(std::move(a)), b_(std::move(b)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult a = a_->Eval(event);
    if (a.status == EvalStatus::kTypeError) return a;
    const EvalResult b = b_->Eval(event);
    const EvalStatus s = Worst(a.status, b.status);
    if (s != EvalStatus::kOk) return Status(s);
    return ApplyStrFn(fn_, a.value, b.value);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    a_->RemapSlots(slots);
    b_->RemapSlots(slots);
  }

 private:
  StrFn fn_;
  NodePtr a_;
  NodePtr b_;
};

// x.startsWith("literal") and friends.
class StrFnConstNode final : public Node {
 public:
  StrFnConstNode(StrFn fn, NodePtr a, const Value& b)
      : fn_(fn), a_(std::move(a)), b_(b) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult a = a_->Eval(event);
    if (a.status != EvalStatus::kOk) return a;
    return ApplyStrFn(fn_, a.value, b_);
  }
  void RemapSlots(const std::vector<int>& slots) override {
    a_->RemapSlots(slots);
  }

 private:
  StrFn fn_;
  NodePtr a_;
  Value b_;
};

class MatchesNode final : public Node {
 public:
  MatchesNode(NodePtr a, std::unique_ptr<const RE2> re)
      : a_(std::move(a)), re_(std::move(re)) {}
  EvalResult Eval(const Event& event) const override {
    const EvalResult a = a_->Eval(event);
    if (a.status != EvalStatus::kOk) return a;
    if (!a.value.is_string()) return TypeError();
    const std::string_view s = a.value.str();
    return Bool(RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *re_));
  }
  void RemapSlots(const std::vector<int>& slots) override {
    a_->RemapSlots(slots);
  }

 private:
  NodePtr a_;
  std::unique_ptr<const RE2> re_;
};

}  // namespace

EvalResult ApplyCompare(CmpOp op, const Value& a, const Value& b) {
  int c;
  switch (op) {
    case CmpOp::kEq:
      return Bool(a == b);
    case CmpOp::kNe:
      return Bool(!(a == b));
    default:
      break;
  }
  if (a.is_number() && b.is_number()) {
    const std::optional<int> r = Value::CompareNumbers(a, b);
    if (!r.has_value()) return Bool(false);  // NaN is unordered
    c = *r;
  } else if (a.is_string() && b.is_string()) {
    c = a.str().compare(b.str());  // bytewise (char_traits<char> is unsigned)
  } else {
    return TypeError();
  }
  switch (op) {
    case CmpOp::kLt:
      return Bool(c < 0);
    case CmpOp::kLe:
      return Bool(c <= 0);
    case CmpOp::kGt:
      return Bool(c > 0);
    default:
      return Bool(c >= 0);
  }
}

EvalResult ApplyAdd(const Value& a, const Value& b, bool minus) {
  if (!a.is_number() || !b.is_number()) return TypeError();
  if (a.is_int() && b.is_int()) {
    int64_t r;
    const bool overflow =
        minus ? __builtin_sub_overflow(a.int_value(), b.int_value(), &r)
              : __builtin_add_overflow(a.int_value(), b.int_value(), &r);
    if (overflow) return TypeError();
    return Ok(Value::Int(r));
  }
  const double x = a.AsDouble();
  const double y = b.AsDouble();
  return Ok(Value::Double(minus ? x - y : x + y));
}

EvalResult ApplyNeg(const Value& a) {
  if (a.is_int()) {
    if (a.int_value() == INT64_MIN) return TypeError();
    return Ok(Value::Int(-a.int_value()));
  }
  if (a.is_double()) return Ok(Value::Double(-a.double_value()));
  return TypeError();
}

EvalResult ApplyStrFn(StrFn fn, const Value& a, const Value& b) {
  if (!a.is_string() || !b.is_string()) return TypeError();
  const std::string_view s = a.str();
  const std::string_view t = b.str();
  switch (fn) {
    case StrFn::kStartsWith:
      return Bool(s.starts_with(t));
    case StrFn::kEndsWith:
      return Bool(s.ends_with(t));
    case StrFn::kContains:
      return Bool(s.find(t) != std::string_view::npos);
  }
  return TypeError();
}

NodePtr MakeConst(const Value& v) { return std::make_unique<ConstNode>(v); }
NodePtr MakePath(int slot) { return std::make_unique<PathNode>(slot); }
NodePtr MakeHas(int slot) { return std::make_unique<HasNode>(slot); }
NodePtr MakeNot(NodePtr x) { return std::make_unique<NotNode>(std::move(x)); }
NodePtr MakeNeg(NodePtr x) { return std::make_unique<NegNode>(std::move(x)); }

NodePtr MakeAnd(std::vector<NodePtr> kids) {
  return std::make_unique<LogicNode<true>>(std::move(kids));
}
NodePtr MakeOr(std::vector<NodePtr> kids) {
  return std::make_unique<LogicNode<false>>(std::move(kids));
}
NodePtr MakeCoalesce(std::vector<NodePtr> kids) {
  return std::make_unique<CoalesceNode>(std::move(kids));
}
NodePtr MakeAdditive(std::vector<NodePtr> kids, std::vector<bool> minus) {
  return std::make_unique<AdditiveNode>(std::move(kids), std::move(minus));
}

NodePtr MakeCompare(CmpOp op, NodePtr a, NodePtr b) {
  if (b->path_slot() >= 0 && a->constant() != nullptr) {
    std::swap(a, b);
    op = Flip(op);
  }
  if (a->path_slot() >= 0 && b->constant() != nullptr) {
    const Value& c = *b->constant();
    if ((op == CmpOp::kEq || op == CmpOp::kNe) && c.is_string()) {
      return std::make_unique<PathStringEqNode>(op == CmpOp::kNe,
                                                a->path_slot(), c.str());
    }
    return std::make_unique<PathConstCompareNode>(op, a->path_slot(), c);
  }
  return std::make_unique<CompareNode>(op, std::move(a), std::move(b));
}

NodePtr MakeIn(NodePtr x, std::vector<NodePtr> list) {
  const bool all_const =
      std::all_of(list.begin(), list.end(),
                  [](const NodePtr& k) { return k->constant() != nullptr; });
  if (all_const) {
    std::vector<Value> values;
    values.reserve(list.size());
    for (const NodePtr& k : list) values.push_back(*k->constant());
    return std::make_unique<InConstNode>(std::move(x), std::move(values));
  }
  return std::make_unique<InNode>(std::move(x), std::move(list));
}

NodePtr MakeStrFn(StrFn fn, NodePtr a, NodePtr b) {
  if (b->constant() != nullptr && b->constant()->is_string()) {
    return std::make_unique<StrFnConstNode>(fn, std::move(a), *b->constant());
  }
  return std::make_unique<StrFnNode>(fn, std::move(a), std::move(b));
}

NodePtr MakeMatches(NodePtr a, std::unique_ptr<const RE2> re) {
  return std::make_unique<MatchesNode>(std::move(a), std::move(re));
}

}  // namespace invariantd::expr_internal
