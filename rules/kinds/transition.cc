// transition: a state field moves only along declared edges, per key.
//
//   transitions: {Follower: [Candidate, PreCandidate], ...}   # the graph
//   initial: [Follower]      # optional: allowed first states of a key
//   terminal: [Done]         # optional: no event may follow these
//   allow_self: true         # staying in the same state (default true)
//
// Every state named anywhere is part of the model; a value outside it is a
// violation too (the design does not know that state). Reasons:
// "illegal_transition", "illegal_initial", "after_terminal",
// "unknown_state". After a finding the state follows the observed value
// (except for unknown states), so one bad edge is reported once.
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rules/kinds/kinds.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

struct Transition {
  struct Config : KeyedKindConfig<Transition> {
    std::unique_ptr<Expr> field;
    std::vector<std::string> names;       // state index -> name
    StringMap<uint32_t> index;            // name -> state index
    std::vector<std::vector<bool>> edge;  // edge[from][to]
    std::vector<bool> initial;            // empty: any
    std::vector<bool> terminal;
    bool allow_self = true;
  };
  static constexpr uint32_t kNone = UINT32_MAX;  // no known state yet
  struct State {
    uint32_t current = 0;
    uint64_t line = 0;
  };

  static ObserveStatus Extract(const Config& c, const ObserveInput& in,
                               Value* v) {
    return ExtractField(*c.field, in, v);
  }
  static constexpr bool kTableKeyIsRuleKey = true;
  static Hash128 TableKey(const Config&, const ObserveInput& in, const Value&) {
    return in.key;
  }
  static std::string_view Text(const Value& v, std::string* buf) {
    if (v.is_string()) return v.str();
    *buf = v.ToText();
    return *buf;
  }

  static ObserveStatus Step(const Config& c, State& s, bool is_new,
                            const Value& v, const ObserveInput& in,
                            std::optional<Finding>* out) {
    std::string buf;
    const std::string_view name = Text(v, &buf);
    if (s.current == kNone) is_new = true;
    const uint64_t line = in.event->position.line;
    // Most events repeat the key's current state (a node that stays
    // follower): one compare with its name instead of hashing the text.
    uint32_t to = kNone;
    if (s.current < c.names.size() && c.names[s.current] == name) {
      to = s.current;
    } else if (auto it = c.index.find(name); it != c.index.end()) {
      to = it->second;
    }
    auto finding = [&](std::string reason, std::string message) {
      Finding f;
      f.reason = std::move(reason);
      f.observed = v;
      if (!is_new) {
        f.previous = OwnedValue(Value::String(c.names[s.current]));
        f.previous_line = s.line;
      }
      f.message = std::move(message);
      *out = std::move(f);
    };
    if (to == kNone) {
      finding("unknown_state",
              absl::StrCat(c.field->text(), " is ", AV(name),
                           ", which is not a state of this rule (states: ",
                           absl::StrJoin(c.names, ", "), ")"));
      if (is_new) s = State{kNone, 0};  // keep the key; no known state yet
      return ObserveStatus::kOk;
    }
    if (is_new) {
      if (!c.initial.empty() && !c.initial[to]) {
        finding("illegal_initial",
                absl::StrCat(c.field->text(), " starts in ", AV(name),
                             ", which is not an initial state"));
      }
    } else {
      const uint32_t from = s.current;
      if (!c.terminal.empty() && c.terminal[from]) {
        finding("after_terminal",
                absl::StrCat("event after terminal state ", c.names[from], " (",
                             c.field->text(), " is ", AV(name), ")"));
        return ObserveStatus::kOk;  // stays terminal
      }
      const bool ok = from == to ? c.allow_self : c.edge[from][to];
      if (!ok) {
        finding("illegal_transition",
                absl::StrCat(c.field->text(), " moved from ", c.names[from],
                             " to ", AV(name),
                             ", which the transition graph does not allow"));
      }
    }
    // A self-transition keeps the line that entered the state.
    if (is_new || s.current != to) s = State{to, line};
    return ObserveStatus::kOk;
  }
  static size_t HeapBytes(const State&) { return 0; }
};

std::unique_ptr<KindConfig> Compile(KindCompiler& kc) {
  auto c = std::make_unique<Transition::Config>();
  c->field = kc.Expression("field", /*required=*/true, /*boolean=*/false);
  c->allow_self = kc.Bool("allow_self").value_or(true);
  auto add = [&](const std::string& name) {
    auto [it, inserted] =
        c->index.emplace(name, static_cast<uint32_t>(c->names.size()));
    if (inserted) c->names.push_back(name);
    return it->second;
  };
  std::optional<std::vector<std::string>> declared = kc.StringList("states");
  if (declared) {
    for (const std::string& s : *declared) add(s);
  }
  auto graph = kc.StringListMap("transitions");
  if (!graph) {
    if (!kc.Has("transitions")) {
      kc.Error("", "a transition rule needs 'transitions'");
    }
    return nullptr;
  }
  auto check_declared = [&](std::string_view field, const std::string& s) {
    if (declared && !c->index.contains(s)) {
      kc.Error(field,
               absl::StrCat("state '", s, "' is not listed in 'states'"));
      return false;
    }
    return true;
  };
  for (const auto& [from, tos] : *graph) {
    if (!check_declared("transitions", from)) continue;
    add(from);
    for (const std::string& to : tos) {
      if (check_declared("transitions", to)) add(to);
    }
  }
  const size_t n = c->names.size();
  c->edge.assign(n, std::vector<bool>(n, false));
  for (const auto& [from, tos] : *graph) {
    if (!c->index.contains(from)) continue;
    for (const std::string& to : tos) {
      if (!c->index.contains(to)) continue;
      c->edge[c->index[from]][c->index[to]] = true;
    }
  }
  auto mark = [&](std::string_view field, std::vector<bool>* set) {
    auto list = kc.StringList(field);
    if (!list) return;
    set->assign(n, false);
    for (const std::string& s : *list) {
      auto it = c->index.find(s);
      if (it == c->index.end()) {
        kc.Error(field, absl::StrCat("state '", s,
                                     "' does not appear in 'transitions'",
                                     declared ? " or 'states'" : ""));
        continue;
      }
      (*set)[it->second] = true;
    }
  };
  mark("initial", &c->initial);
  mark("terminal", &c->terminal);
  if (!c->field) return nullptr;
  return c;
}

}  // namespace

KindSpec TransitionKindSpec() {
  return KindSpec{
      "transition",
      {"field", "transitions", "states", "initial", "terminal", "allow_self"},
      Compile};
}

}  // namespace invariantd
