// RELIABILITY.md R7, injection, against the real sidecar: event values
// built to forge records -- CR/LF with a fake record after them, ESC
// sequences, NUL, C1 controls, U+2028/U+2029 line separators and bidi
// overrides -- flow into a rule key, a message and a protocol-state gauge.
// Every place that text leaves the process must carry none of those bytes
// raw, and no forged line may appear as a record of its own:
//   stdout (violation JSON lines), stderr (structured logs), /metrics (label
//   values; promtool must accept the exposition), GET /v1/violations, and
//   `invariantd evidence query --format text`.
// The evidence keeps the value exactly: decoding the query's JSON gives back
// the bytes that were sent.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "re2/re2.h"
#include "tests/integration/child_process.h"

namespace invariantd {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

// The payload, as the JSON string escapes the service would log it with.
constexpr char kPayloadJson[] =
    "n1\\r\\n{\\\"level\\\":\\\"info\\\",\\\"msg\\\":\\\"FORGED\\\"}\\n"
    "\\u001b[31mred\\u001b]0;title\\u0007\\u0000nul\\u0085c1"
    "\\u2028ls\\u2029ps\\u202eevil\\u2066iso\\u009b2J\\u007fdel";

// Raw bytes that must not appear in any output: C0 controls other than the
// line feed that ends a record, DEL, and the UTF-8 encodings of C1
// controls, U+2028/U+2029 and the bidi controls.
std::string FirstRawControl(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      return absl::StrCat("byte 0x", absl::Hex(c), " at ", i);
    }
    if (c == 0xc2 && i + 1 < text.size()) {
      const auto d = static_cast<unsigned char>(text[i + 1]);
      if (d >= 0x80 && d <= 0x9f) return absl::StrCat("C1 control at ", i);
    }
    if (c == 0xe2 && i + 2 < text.size()) {
      const auto d = static_cast<unsigned char>(text[i + 1]);
      const auto e = static_cast<unsigned char>(text[i + 2]);
      if (d == 0x80 && e >= 0xa8 && e <= 0xae) {  // U+2028..U+202E
        return absl::StrCat("line separator or bidi control at ", i);
      }
      if (d == 0x81 && e >= 0xa6 && e <= 0xa9) {
        return absl::StrCat("bidi isolate at ", i);
      }
    }
  }
  return "";
}

class InjectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("invariantd-inject-", getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "logs");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Url(const std::string& path) const {
    return absl::StrCat("http://127.0.0.1:", port_, path);
  }
  fs::path dir_;
  int port_ = 0;
};

TEST_F(InjectionTest, NoOutputCarriesRawControlsAndEvidenceKeepsTheBytes) {
  const fs::path rules = dir_ / "rules.yaml";
  std::ofstream(rules) << R"(rules:
  - name: term
    kind: monotonic
    key: [node]
    field: term
    export_gauge: true
  - name: says
    kind: always
    key: [node]
    always: 'term < 100'
)";
  {
    std::ofstream log(dir_ / "logs" / "a.ndjson");
    log << "{\"node\":\"" << kPayloadJson << "\",\"term\":5}\n";
    log << "{\"node\":\"" << kPayloadJson << "\",\"term\":3}\n";
    log << "{\"node\":\"" << kPayloadJson << "\",\"term\":100}\n";
    // A line that is not valid UTF-8: rejected, and its log must be clean.
    log << "{\"node\":\"\xff\xfe\",\"term\":1}\n";
  }
  const std::string data = (dir_ / "data").string();
  Child c({INVARIANTD_BINARY, "run", "--rules", rules.string(), "--tail",
           (dir_ / "logs" / "*.ndjson").string(), "--listen", "127.0.0.1:0",
           "--data-dir", data});
  ASSERT_TRUE(c.WaitForPort(&port_)) << c.err();
  // Two violations: the regression (5 -> 3) and term 100.
  ASSERT_TRUE(c.WaitFor([&] { return Lines(c.out()) >= 2; })) << c.err();
  std::string metrics;
  ASSERT_TRUE(c.WaitFor([&] {
    metrics.clear();
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &metrics);
    return metrics.find("invariantd_protocol_state{") != std::string::npos &&
           metrics.find("reason=\"invalid_utf8\"") != std::string::npos;
  })) << c.err()
      << metrics;
  std::string violations;
  ASSERT_EQ(
      Shell(absl::StrCat("curl -sf ", Url("/v1/violations")), &violations), 0);
  c.Signal(SIGTERM);
  ASSERT_EQ(c.Wait(), 0) << c.err();
  std::string text;
  ASSERT_EQ(
      Shell(absl::StrCat(INVARIANTD_BINARY,
                         " evidence query --format text --data-dir ", data),
            &text),
      0)
      << text;

  // stdout: exactly the two violation records, each one JSON object.
  EXPECT_EQ(FirstRawControl(c.out()), "") << c.out();
  const std::vector<std::string> out_lines =
      absl::StrSplit(c.out(), '\n', absl::SkipEmpty());
  ASSERT_EQ(out_lines.size(), 2u) << c.out();
  for (const std::string& l : out_lines) {
    const Json j = Json::parse(l);
    EXPECT_TRUE(j.contains("rule")) << l;
  }
  // stderr: every line is one structured record; none is the forged one.
  EXPECT_EQ(FirstRawControl(c.err()), "") << c.err();
  const std::vector<std::string> err_lines =
      absl::StrSplit(c.err(), '\n', absl::SkipEmpty());
  for (const std::string& l : err_lines) {
    const Json j = Json::parse(l, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << l;
    EXPECT_NE(j.value("msg", ""), "FORGED") << l;
    EXPECT_TRUE(j.contains("level")) << l;
  }
  // /metrics: clean label values, and a valid exposition.
  EXPECT_EQ(FirstRawControl(metrics), "");
  if (fs::exists("/usr/bin/promtool")) {
    std::ofstream(dir_ / "metrics.txt") << metrics;
    std::string out;
    EXPECT_EQ(Shell(absl::StrCat("promtool check metrics < ",
                                 (dir_ / "metrics.txt").string()),
                    &out),
              0)
        << out;
  }
  // The query API: clean JSON that decodes to the exact bytes sent.
  EXPECT_EQ(FirstRawControl(violations), "");
  const Json page = Json::parse(violations);
  ASSERT_EQ(page["violations"].size(), 2u) << violations;
  const std::string sent =
      Json::parse(absl::StrCat("\"", kPayloadJson, "\"")).get<std::string>();
  // (The check itself sees every kind of byte the payload carries.)
  const std::vector<std::string> kinds = {
      "\r",           "\x1b",         std::string(1, '\0'), "\xc2\x85",
      "\xe2\x80\xa8", "\xe2\x80\xae", "\xe2\x81\xa6",       "\x7f"};
  for (const std::string& raw : kinds) {
    EXPECT_NE(FirstRawControl("ok" + raw), "");
    EXPECT_NE(sent.find(raw), std::string::npos);
  }
  for (const Json& v : page["violations"]) {
    EXPECT_EQ(v["key"]["node"].get<std::string>(), sent);
  }
  // The text CLI: one line per violation, nothing raw.
  EXPECT_EQ(FirstRawControl(text), "") << text;
  EXPECT_EQ(Lines(text), 2u) << text;
}

// Redaction rules (config `redact`): a secret in an event reaches no output
// -- stdout, the evidence (API and CLI), metric labels -- and each
// replacement is counted.
TEST_F(InjectionTest, RedactionRulesKeepSecretsOutOfEveryOutput) {
  const fs::path rules = dir_ / "rules.yaml";
  std::ofstream(rules) << R"(rules:
  - name: term
    kind: monotonic
    key: [node]
    field: term
    export_gauge: true
)";
  const fs::path config = dir_ / "config.yaml";
  std::ofstream(config) << R"(redact:
  - name: token
    pattern: 'tok-[0-9a-f]{8}'
)";
  {
    std::ofstream log(dir_ / "logs" / "a.ndjson");
    log << "{\"node\":\"n1 "
           "tok-deadbeef\",\"term\":5,\"auth\":\"tok-0badf00d\"}\n";
    log << "{\"node\":\"n1 "
           "tok-deadbeef\",\"term\":3,\"auth\":\"tok-0badf00d\"}\n";
  }
  const std::string data = (dir_ / "data").string();
  Child c({INVARIANTD_BINARY, "run", "--config", config.string(), "--rules",
           rules.string(), "--tail", (dir_ / "logs" / "*.ndjson").string(),
           "--listen", "127.0.0.1:0", "--data-dir", data});
  ASSERT_TRUE(c.WaitForPort(&port_)) << c.err();
  ASSERT_TRUE(c.WaitFor([&] { return Lines(c.out()) >= 1; })) << c.err();
  std::string metrics;
  ASSERT_TRUE(c.WaitFor([&] {
    metrics.clear();
    Shell(absl::StrCat("curl -sf ", Url("/metrics")), &metrics);
    return metrics.find("invariantd_redactions_total{rule=\"token\"}") !=
           std::string::npos;
  })) << metrics;
  std::string violations;
  ASSERT_EQ(
      Shell(absl::StrCat("curl -sf ", Url("/v1/violations")), &violations), 0);
  c.Signal(SIGTERM);
  ASSERT_EQ(c.Wait(), 0) << c.err();
  std::string text;
  ASSERT_EQ(
      Shell(absl::StrCat(INVARIANTD_BINARY,
                         " evidence query --format jsonl --data-dir ", data),
            &text),
      0)
      << text;
  for (const std::string& out : {c.out(), c.err(), metrics, violations, text}) {
    EXPECT_EQ(out.find("deadbeef"), std::string::npos) << out;
    EXPECT_EQ(out.find("0badf00d"), std::string::npos) << out;
  }
  EXPECT_THAT(c.out(), ::testing::HasSubstr("n1 [REDACTED:token]"));
  EXPECT_THAT(text, ::testing::HasSubstr("\\\"auth\\\":\\\"[REDACTED:token]"));
  EXPECT_THAT(metrics, ::testing::HasSubstr("key=\"n1 [REDACTED:token]\""));
  // Violation: key, witness (node and auth): 3 replacements at least; the
  // gauge label: 1.
  double n = 0;
  ASSERT_TRUE(RE2::PartialMatch(
      metrics, R"(invariantd_redactions_total\{rule="token"\} (\d+))", &n));
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace invariantd
