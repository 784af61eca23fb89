// Structured logs: one JSON object per line on stderr,
//   {"ts":"2026-11-22T04:40:00.123Z","level":"info","msg":"...","k":"v"}
// Every value is JSON-escaped with the project's escaper (controls, line
// separators and bidi overrides become \uXXXX), so input-derived text can
// never start a forged log line. Thread-safe; lines are written whole.
#ifndef INVARIANTD_SIDECAR_LOG_H_
#define INVARIANTD_SIDECAR_LOG_H_

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace invariantd {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

using LogField = std::pair<std::string_view, std::string>;

void SetLogLevel(LogLevel level);
// Parses debug|info|warning|error.
bool ParseLogLevel(std::string_view name, LogLevel* out);

void Log(LogLevel level, std::string_view msg,
         std::initializer_list<LogField> fields = {});

// Redirects log output (tests); nullptr restores stderr.
void SetLogSinkForTest(std::string* sink);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_LOG_H_
