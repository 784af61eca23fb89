// Diagnostics for rule files: every problem with file:line:column, the rule
// it belongs to, and the source line with a caret, all collected in one pass.
#ifndef INVARIANTD_RULES_DIAGNOSTIC_H_
#define INVARIANTD_RULES_DIAGNOSTIC_H_

#include <string>
#include <vector>

namespace invariantd {

struct Diagnostic {
  std::string file;
  int line = 0;      // 1-based; 0 when the problem is the file as a whole
  int column = 0;    // 1-based
  std::string rule;  // rule name, when inside a rule
  std::string message;
  std::string snippet;  // the source line, when known
};

// "file:line:col: error: message [rule 'r']\n    snippet\n    ^"
std::string FormatDiagnostic(const Diagnostic& d);
// JSON object with file, line, column, rule, message.
std::string DiagnosticJson(const Diagnostic& d);

}  // namespace invariantd

#endif  // INVARIANTD_RULES_DIAGNOSTIC_H_
