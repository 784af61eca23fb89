// Checks of the rendered Kubernetes manifests (deploy/kubernetes), run by
// scripts/check-deploy, which renders every kustomization with `kubectl
// kustomize` into $INVARIANTD_DEPLOY_RENDERED/<name>.yaml first.
//
// Every workload's every container: restricted pod security and resources.
// Every invariantd container: probes on /healthz and /readyz at its
// listener, its arguments accepted by `invariantd run --check-config` with
// the pod's volumes laid out in a temporary directory (rules from the
// generated ConfigMap, dummy tokens for the Secret's items), its rules
// accepted by `invariantd validate`. The Service, ServiceMonitor and
// NetworkPolicy meet the pods and the port. The PrometheusRule passes
// `promtool check rules` and its unit tests, uses only metrics documented
// in docs/configuration.md, and has a runbook entry per alert in
// docs/operations.md, where every metric has one too.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "re2/re2.h"
#include "tests/integration/child_process.h"
#include "tests/temp_dir.h"
#include "yaml-cpp/yaml.h"

namespace invariantd {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Rendered {
  std::string name;  // the kustomization's directory name
  std::vector<YAML::Node> docs;
};

// Every rendered kustomization; fails the test when there is none.
std::vector<Rendered> LoadRendered() {
  std::vector<Rendered> out;
  const char* dir = std::getenv("INVARIANTD_DEPLOY_RENDERED");
  if (dir == nullptr) {
    ADD_FAILURE() << "INVARIANTD_DEPLOY_RENDERED is not set: run "
                     "scripts/check-deploy, which renders the manifests";
    return out;
  }
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    Rendered r;
    r.name = e.path().stem().string();
    for (const YAML::Node& d : YAML::LoadAllFromFile(e.path().string())) {
      if (d.IsMap()) r.docs.push_back(d);
    }
    out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const Rendered& a, const Rendered& b) {
    return a.name < b.name;
  });
  EXPECT_GE(out.size(), 2u) << "expected the base and at least one overlay";
  return out;
}

// The node at `path` under `n`, or a null node when any step is missing
// (yaml-cpp throws when a missing key is indexed further).
YAML::Node At(const YAML::Node& n, std::initializer_list<const char*> path) {
  YAML::Node cur = n;
  for (const char* k : path) {
    if (!cur || !cur.IsMap()) return YAML::Node();
    const YAML::Node next = cur[k];
    if (!next) return YAML::Node();
    cur.reset(next);  // rebinds; operator= would write into the document
  }
  return cur;
}

// Whether `n` is there and not null.
bool Has(const YAML::Node& n) { return n && !n.IsNull(); }

std::string Str(const YAML::Node& n) {
  return n && n.IsScalar() ? n.Scalar() : std::string();
}

bool IsTrue(const YAML::Node& n) { return Str(n) == "true"; }

std::string Where(const Rendered& r, const YAML::Node& doc) {
  return absl::StrCat(r.name, ": ", Str(doc["kind"]), "/",
                      Str(At(doc, {"metadata", "name"})));
}

// The pod template spec of a workload, or a null node.
YAML::Node PodTemplate(const YAML::Node& doc) {
  const std::string kind = Str(doc["kind"]);
  if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" ||
      kind == "ReplicaSet" || kind == "Job") {
    return At(doc, {"spec", "template"});
  }
  if (kind == "CronJob")
    return At(doc, {"spec", "jobTemplate", "spec", "template"});
  return YAML::Node();
}

std::vector<YAML::Node> Containers(const YAML::Node& pod_spec) {
  std::vector<YAML::Node> out;
  for (const char* list : {"initContainers", "containers"}) {
    for (const YAML::Node& c : pod_spec[list]) out.push_back(c);
  }
  return out;
}

const YAML::Node* Find(const std::vector<YAML::Node>& docs,
                       std::string_view kind, std::string_view name) {
  for (const YAML::Node& d : docs) {
    if (Str(d["kind"]) == kind && Str(At(d, {"metadata", "name"})) == name)
      return &d;
  }
  return nullptr;
}

// Whether every label of `selector` (matchLabels or a plain map) is in
// `labels`.
bool Selects(const YAML::Node& selector, const YAML::Node& labels) {
  if (!selector || !selector.IsMap() || selector.size() == 0) return false;
  for (const auto& kv : selector) {
    if (Str(labels[kv.first.Scalar()]) != Str(kv.second)) return false;
  }
  return true;
}

// The port of a `--listen=HOST:PORT` argument, or 0.
int ListenPort(const YAML::Node& container) {
  for (const YAML::Node& a : container["args"]) {
    std::string port;
    if (RE2::FullMatch(Str(a), R"(--listen=.*:(\d+))", &port)) {
      int p = 0;
      return absl::SimpleAtoi(port, &p) ? p : 0;
    }
  }
  return 0;
}

// A probe's or Service's port: a number, or the name of a container port.
int ResolvePort(const YAML::Node& port, const YAML::Node& container) {
  int p = 0;
  if (absl::SimpleAtoi(Str(port), &p)) return p;
  for (const YAML::Node& cp : container["ports"]) {
    if (Str(cp["name"]) == Str(port)) {
      return absl::SimpleAtoi(Str(cp["containerPort"]), &p) ? p : 0;
    }
  }
  return 0;
}

struct Workload {
  const Rendered* rendered;
  YAML::Node doc;
  YAML::Node pod;  // template: metadata + spec
};

std::vector<Workload> Workloads(const std::vector<Rendered>& all) {
  std::vector<Workload> out;
  for (const Rendered& r : all) {
    for (const YAML::Node& d : r.docs) {
      if (YAML::Node t = PodTemplate(d); Has(t)) out.push_back({&r, d, t});
    }
  }
  return out;
}

TEST(ManifestsTest, EveryContainerIsRestrictedAndHasResources) {
  const std::vector<Rendered> all = LoadRendered();
  const std::vector<Workload> workloads = Workloads(all);
  EXPECT_FALSE(workloads.empty());
  for (const Workload& w : workloads) {
    const YAML::Node spec = w.pod["spec"];
    const YAML::Node pod_sc = spec["securityContext"];
    for (const char* host : {"hostNetwork", "hostPID", "hostIPC"}) {
      EXPECT_FALSE(IsTrue(spec[host])) << Where(*w.rendered, w.doc) << host;
    }
    for (const YAML::Node& c : Containers(spec)) {
      const std::string where = absl::StrCat(Where(*w.rendered, w.doc),
                                             " container ", Str(c["name"]));
      const YAML::Node sc = c["securityContext"];
      EXPECT_TRUE(IsTrue(sc["runAsNonRoot"]) ||
                  (!sc["runAsNonRoot"] && IsTrue(pod_sc["runAsNonRoot"])))
          << where << ": runAsNonRoot";
      EXPECT_NE(Str(sc["runAsUser"]), "0") << where << ": runAsUser 0";
      EXPECT_EQ(Str(sc["allowPrivilegeEscalation"]), "false")
          << where << ": allowPrivilegeEscalation";
      EXPECT_FALSE(IsTrue(sc["privileged"])) << where << ": privileged";
      EXPECT_TRUE(IsTrue(sc["readOnlyRootFilesystem"]))
          << where << ": readOnlyRootFilesystem";
      bool drops_all = false;
      for (const YAML::Node& d : At(sc, {"capabilities", "drop"})) {
        drops_all |= Str(d) == "ALL";
      }
      EXPECT_TRUE(drops_all) << where << ": capabilities.drop [ALL]";
      EXPECT_FALSE(At(sc, {"capabilities", "add"}) &&
                   At(sc, {"capabilities", "add"}).size() > 0)
          << where << ": capabilities.add";
      const std::string seccomp =
          sc["seccompProfile"] ? Str(At(sc, {"seccompProfile", "type"}))
                               : Str(At(pod_sc, {"seccompProfile", "type"}));
      EXPECT_EQ(seccomp, "RuntimeDefault") << where << ": seccompProfile";
      const YAML::Node res = c["resources"];
      EXPECT_TRUE(Has(At(res, {"requests", "cpu"})))
          << where << ": requests.cpu";
      EXPECT_TRUE(Has(At(res, {"requests", "memory"})))
          << where << ": requests.memory";
      EXPECT_TRUE(Has(At(res, {"limits", "memory"})))
          << where << ": limits.memory";
    }
  }
}

// The invariantd containers of every kustomization (at least one each).
struct Sidecar {
  const Workload* workload;
  YAML::Node container;
};

std::vector<Sidecar> Sidecars(const std::vector<Rendered>& all,
                              const std::vector<Workload>& workloads) {
  std::vector<Sidecar> out;
  for (const Rendered& r : all) {
    size_t found = 0;
    for (const Workload& w : workloads) {
      if (w.rendered != &r) continue;
      for (const YAML::Node& c : At(w.pod, {"spec", "containers"})) {
        if (Str(c["name"]) == "invariantd") {
          out.push_back({&w, c});
          ++found;
        }
      }
    }
    EXPECT_GT(found, 0u) << r.name << ": no invariantd container";
  }
  return out;
}

// A Kubernetes memory quantity in bytes (plain, Ki/Mi/Gi), 0 if unparsed.
uint64_t MemoryBytes(const std::string& q) {
  uint64_t n = 0;
  std::string unit;
  if (!RE2::FullMatch(q, R"((\d+)(Ki|Mi|Gi)?)", &n, &unit)) return 0;
  const uint64_t scale = unit == "Ki"   ? uint64_t{1} << 10
                         : unit == "Mi" ? uint64_t{1} << 20
                         : unit == "Gi" ? uint64_t{1} << 30
                                        : 1;
  return n * scale;
}

// Every sidecar has a state memory budget that fits in its memory limit
// with room for the rest of the process (docs/configuration.md, State
// memory budget): a flood of keys is then counted lost coverage, never an
// OOM kill.
TEST(ManifestsTest, TheStateBudgetFitsTheMemoryLimit) {
  const std::vector<Rendered> all = LoadRendered();
  const std::vector<Workload> workloads = Workloads(all);
  for (const Sidecar& s : Sidecars(all, workloads)) {
    const std::string where = Where(*s.workload->rendered, s.workload->doc);
    uint64_t budget = 0;
    for (const YAML::Node& a : s.container["args"]) {
      RE2::FullMatch(Str(a), R"(--max-state-bytes=(\d+))", &budget);
    }
    EXPECT_GT(budget, 0u) << where << ": no --max-state-bytes=N argument";
    const uint64_t limit =
        MemoryBytes(Str(At(s.container, {"resources", "limits", "memory"})));
    EXPECT_GE(limit, budget + (uint64_t{256} << 20))
        << where << ": limits.memory must be at least the budget + 256Mi";
  }
}

TEST(ManifestsTest, ProbesAndPortsMeetTheListener) {
  const std::vector<Rendered> all = LoadRendered();
  const std::vector<Workload> workloads = Workloads(all);
  for (const Sidecar& s : Sidecars(all, workloads)) {
    const std::string where = Where(*s.workload->rendered, s.workload->doc);
    const int listen = ListenPort(s.container);
    ASSERT_GT(listen, 0) << where << ": no --listen=HOST:PORT argument";
    EXPECT_EQ(ResolvePort(At(s.container["ports"][0], {"containerPort"}),
                          s.container),
              listen)
        << where;
    for (const auto& [probe, path] :
         std::vector<std::pair<std::string, std::string>>{
             {"livenessProbe", "/healthz"},
             {"readinessProbe", "/readyz"},
             {"startupProbe", "/healthz"}}) {
      const YAML::Node get = At(s.container, {probe.c_str(), "httpGet"});
      ASSERT_TRUE(Has(get)) << where << ": no " << probe;
      EXPECT_EQ(Str(get["path"]), path) << where << " " << probe;
      EXPECT_EQ(ResolvePort(get["port"], s.container), listen)
          << where << " " << probe;
    }
    const YAML::Node labels = At(s.workload->pod, {"metadata", "labels"});
    const std::vector<YAML::Node>& docs = s.workload->rendered->docs;
    // The Service selects the pod and targets the listener; the
    // ServiceMonitor selects the Service and scrapes a port of it.
    bool service = false, monitor = false, policy = false;
    for (const YAML::Node& d : docs) {
      const std::string kind = Str(d["kind"]);
      if (kind == "Service" && Selects(At(d, {"spec", "selector"}), labels)) {
        for (const YAML::Node& p : At(d, {"spec", "ports"})) {
          if (ResolvePort(p["targetPort"], s.container) != listen) continue;
          service = true;
          for (const YAML::Node& m : docs) {
            if (Str(m["kind"]) != "ServiceMonitor" ||
                !Selects(At(m, {"spec", "selector", "matchLabels"}),
                         At(d, {"metadata", "labels"}))) {
              continue;
            }
            for (const YAML::Node& e : At(m, {"spec", "endpoints"})) {
              monitor |= Str(e["port"]) == Str(p["name"]) &&
                         Str(e["path"]) == "/metrics";
            }
          }
        }
      }
      // A NetworkPolicy selects the pod and admits the listener's port
      // from named peers only (never from everywhere).
      if (kind == "NetworkPolicy" &&
          Selects(At(d, {"spec", "podSelector", "matchLabels"}), labels)) {
        for (const YAML::Node& rule : At(d, {"spec", "ingress"})) {
          bool port = false;
          for (const YAML::Node& p : rule["ports"]) {
            port |= ResolvePort(p["port"], s.container) == listen;
          }
          if (!port) continue;
          policy = true;
          EXPECT_TRUE(rule["from"] && rule["from"].size() > 0)
              << where << ": the listener is open to every pod";
        }
      }
    }
    EXPECT_TRUE(service) << where << ": no Service selects it at the listener";
    EXPECT_TRUE(monitor) << where << ": no ServiceMonitor scrapes /metrics";
    EXPECT_TRUE(policy) << where << ": no NetworkPolicy admits its listener";
  }
}

// Lays the pod's volumes out under `root` as the sidecar would see them;
// returns mount path -> local path.
std::map<std::string, std::string> LayOutVolumes(const Sidecar& s,
                                                 const std::string& root,
                                                 std::string* problems) {
  std::map<std::string, std::string> mounts;
  const YAML::Node spec = s.workload->pod["spec"];
  const std::vector<YAML::Node>& docs = s.workload->rendered->docs;
  int i = 0;
  for (const YAML::Node& m : s.container["volumeMounts"]) {
    const std::string name = Str(m["name"]);
    const std::string local = absl::StrCat(root, "/v", i++);
    fs::create_directories(local);
    mounts[Str(m["mountPath"])] = local;
    YAML::Node volume;
    for (const YAML::Node& v : spec["volumes"]) {
      if (Str(v["name"]) == name) volume.reset(v);
    }
    bool claim = false;
    for (const YAML::Node& t :
         At(s.workload->doc, {"spec", "volumeClaimTemplates"})) {
      claim |= Str(At(t, {"metadata", "name"})) == name;
    }
    if (!Has(volume) && claim) continue;  // a StatefulSet's PVC: an empty dir
    if (!Has(volume)) {
      absl::StrAppend(problems, "volume ", name, " is not defined\n");
      continue;
    }
    if (YAML::Node cm = volume["configMap"]) {
      const YAML::Node* map = Find(docs, "ConfigMap", Str(cm["name"]));
      if (map == nullptr) {
        absl::StrAppend(problems, "ConfigMap ", Str(cm["name"]),
                        " is not in the rendered output\n");
        continue;
      }
      for (const auto& kv : (*map)["data"]) {
        std::ofstream(local + "/" + kv.first.Scalar()) << kv.second.Scalar();
      }
    } else if (YAML::Node secret = volume["secret"]) {
      // Secrets are not in git: the items name the files; each gets a
      // dummy token.
      if (!secret["items"] || secret["items"].size() == 0) {
        absl::StrAppend(problems, "secret volume ", name,
                        " lists no items (the files the sidecar reads)\n");
      }
      for (const YAML::Node& item : secret["items"]) {
        std::ofstream(local + "/" + Str(item["path"]))
            << "deploy-check-" << Str(item["key"]) << "\n";
      }
    }
  }
  return mounts;
}

TEST(ManifestsTest, SidecarArgumentsAndRulesAreAccepted) {
  const std::vector<Rendered> all = LoadRendered();
  const std::vector<Workload> workloads = Workloads(all);
  for (const Sidecar& s : Sidecars(all, workloads)) {
    const std::string where = Where(*s.workload->rendered, s.workload->doc);
    TempDir dir;
    std::string problems;
    const std::map<std::string, std::string> mounts =
        LayOutVolumes(s, dir.path(), &problems);
    EXPECT_EQ(problems, "") << where;
    // Paths under a mount point the local layout; longest mount first.
    std::vector<std::pair<std::string, std::string>> by_length(mounts.begin(),
                                                               mounts.end());
    std::sort(by_length.begin(), by_length.end(),
              [](auto& a, auto& b) { return a.first.size() > b.first.size(); });
    std::vector<std::string> args = {INVARIANTD_BINARY};
    std::vector<std::string> rule_dirs;
    for (const YAML::Node& a : s.container["args"]) {
      std::string arg = Str(a);
      const size_t eq = arg.find('=');
      const size_t at = eq == std::string::npos ? 0 : eq + 1;
      for (const auto& [mount, local] : by_length) {
        if (arg.compare(at, mount.size(), mount) == 0) {
          arg = arg.substr(0, at) + local + arg.substr(at + mount.size());
          break;
        }
      }
      if (absl::StartsWith(arg, "--rules=")) rule_dirs.push_back(arg.substr(8));
      args.push_back(arg);
    }
    ASSERT_GE(args.size(), 2u) << where;
    EXPECT_EQ(args[1], "run") << where;
    args.push_back("--check-config");
    Child check(args);
    const int status = check.Wait();
    EXPECT_EQ(status, 0) << where << ": invariantd run --check-config:\n"
                         << check.err();
    EXPECT_THAT(check.out(), HasSubstr("ok: invariantd run would start"));
    EXPECT_THAT(check.out(),
                HasSubstr("tokens: ingest required, query required"))
        << where;
    EXPECT_THAT(check.out() + check.err(),
                ::testing::Not(HasSubstr("deploy-check-")))
        << where << ": a token was printed";

    ASSERT_FALSE(rule_dirs.empty()) << where << ": no --rules=PATH argument";
    std::vector<std::string> validate = {INVARIANTD_BINARY, "validate"};
    validate.insert(validate.end(), rule_dirs.begin(), rule_dirs.end());
    Child v(validate);
    EXPECT_EQ(v.Wait(), 0) << where << ": invariantd validate:\n" << v.err();
  }
}

TEST(ManifestsTest, CopiesOfShippedPacksAreIdentical) {
  for (const Rendered& r : LoadRendered()) {
    for (const YAML::Node& d : r.docs) {
      if (Str(d["kind"]) != "ConfigMap") continue;
      for (const auto& kv : d["data"]) {
        const std::string pack = Src("rules/packs/" + kv.first.Scalar());
        if (!fs::exists(pack)) continue;
        EXPECT_EQ(kv.second.Scalar(), ReadText(pack))
            << Where(r, d) << ": " << kv.first.Scalar()
            << " differs from rules/packs; copy it again";
      }
    }
  }
}

// Metric names in backquotes in the first column of a markdown table.
std::set<std::string> DocumentedMetrics(const std::string& doc) {
  std::set<std::string> out;
  re2::StringPiece in(doc);
  std::string name;
  static const LazyRE2 kRow = {R"((?m)^\| `(invariantd_[a-z_]+)` \|)"};
  while (RE2::FindAndConsume(&in, *kRow, &name)) out.insert(name);
  return out;
}

TEST(ManifestsTest, PrometheusRulePassesPromtoolAndMatchesTheDocs) {
  const std::set<std::string> metrics =
      DocumentedMetrics(ReadText(Src("docs/configuration.md")));
  ASSERT_GT(metrics.size(), 20u);
  const std::string operations = ReadText(Src("docs/operations.md"));
  for (const std::string& m : metrics) {
    EXPECT_THAT(operations, HasSubstr("`" + m + "`"))
        << "docs/operations.md has no entry for the metric " << m;
  }
  const std::string unit_tests = Src(
      "deploy/kubernetes/components/sidecar/tests/prometheusrule.test.yaml");
  const YAML::Node tests = YAML::LoadFile(unit_tests);
  std::set<std::string> tested;
  for (const YAML::Node& t : tests["tests"]) {
    for (const YAML::Node& a : t["alert_rule_test"]) {
      if (a["exp_alerts"].size() > 0) tested.insert(Str(a["alertname"]));
    }
  }
  size_t rules_seen = 0;
  for (const Rendered& r : LoadRendered()) {
    for (const YAML::Node& d : r.docs) {
      if (Str(d["kind"]) != "PrometheusRule") continue;
      ++rules_seen;
      TempDir dir;
      {
        YAML::Emitter e;
        e << d["spec"];
        std::ofstream(dir.File("invariantd.rules.yaml")) << e.c_str() << "\n";
      }
      fs::copy_file(unit_tests, dir.File("test.yaml"));
      std::string out;
      EXPECT_EQ(Shell("cd " + dir.path() +
                          " && promtool check rules invariantd.rules.yaml",
                      &out),
                0)
          << Where(r, d) << ":\n"
          << out;
      out.clear();
      EXPECT_EQ(
          Shell("cd " + dir.path() + " && promtool test rules test.yaml", &out),
          0)
          << Where(r, d) << ":\n"
          << out;
      for (const YAML::Node& g : At(d, {"spec", "groups"})) {
        for (const YAML::Node& rule : g["rules"]) {
          const std::string alert = Str(rule["alert"]);
          const std::string expr_text = Str(rule["expr"]);
          re2::StringPiece expr(expr_text);
          std::string name;
          static const LazyRE2 kMetric = {R"((invariantd_[a-z_]+))"};
          while (RE2::FindAndConsume(&expr, *kMetric, &name)) {
            EXPECT_TRUE(metrics.count(name))
                << alert << " uses " << name
                << ", which docs/configuration.md does not list";
          }
          if (alert.empty()) continue;
          EXPECT_TRUE(tested.count(alert))
              << alert << " has no firing case in " << unit_tests;
          EXPECT_THAT(operations, HasSubstr("### " + alert))
              << "docs/operations.md has no runbook entry for " << alert;
          EXPECT_EQ(Str(At(rule, {"annotations", "runbook_url"})),
                    "docs/operations.md#" + absl::AsciiStrToLower(alert))
              << alert;
        }
      }
    }
  }
  EXPECT_GT(rules_seen, 0u) << "no PrometheusRule in any rendered output";
}

}  // namespace
}  // namespace invariantd
