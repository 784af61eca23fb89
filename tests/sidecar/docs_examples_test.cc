// Every ```yaml block of docs/rules.md is checked: blocks with a `tests:`
// section run as `invariantd test` documents (and must all pass); the others
// must load as rule files without a diagnostic. Documentation that drifts
// from the code fails here.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "rules/rule_set.h"
#include "sidecar/rule_test.h"

namespace invariantd {
namespace {

std::vector<std::string> YamlBlocks(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::vector<std::string> blocks;
  std::string line, cur;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside && line == "```yaml") {
      inside = true;
      cur.clear();
    } else if (inside && line == "```") {
      inside = false;
      blocks.push_back(cur);
    } else if (inside) {
      cur += line + "\n";
    }
  }
  return blocks;
}

TEST(DocsExamplesTest, RulesReferenceExamplesLoadAndPass) {
  const auto blocks =
      YamlBlocks(std::string(INVARIANTD_SOURCE_DIR) + "/docs/rules.md");
  ASSERT_GE(blocks.size(), 8u);
  int runnable = 0;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i].find("\ntests:") != std::string::npos) {
      ++runnable;
      char path[] = "/tmp/invariantd-doc-XXXXXX";
      const int fd = mkstemp(path);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(write(fd, blocks[i].data(), blocks[i].size()),
                static_cast<ssize_t>(blocks[i].size()));
      close(fd);
      std::ostringstream report;
      const RuleTestResult r = RunRuleTestFiles({path}, report);
      unlink(path);
      EXPECT_EQ(r.errors, 0) << "block " << i << ":\n" << report.str();
      EXPECT_EQ(r.failed, 0) << "block " << i << ":\n" << report.str();
      EXPECT_GE(r.passed, 1) << "block " << i;
    } else {
      LoadResult lr = LoadRuleText(blocks[i], "docs/rules.md block");
      for (const auto& d : lr.diagnostics) {
        ADD_FAILURE() << "block " << i << ": " << FormatDiagnostic(d);
      }
    }
  }
  EXPECT_GE(runnable, 7);
}

}  // namespace
}  // namespace invariantd
