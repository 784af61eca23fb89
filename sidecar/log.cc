#include "sidecar/log.h"

#include <unistd.h>

#include <atomic>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "sidecar/core/json_text.h"

namespace invariantd {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_mu;
std::string* g_test_sink = nullptr;

std::string_view LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool ParseLogLevel(std::string_view name, LogLevel* out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning,
                     LogLevel::kError}) {
    if (LevelName(l) == name) {
      *out = l;
      return true;
    }
  }
  return false;
}

void Log(LogLevel level, std::string_view msg,
         std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) < g_level.load()) return;
  std::string line = "{\"ts\":\"";
  line += absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                           absl::UTCTimeZone());
  line += "\",\"level\":\"";
  line += LevelName(level);
  line += "\",\"msg\":";
  AppendJsonString(msg, &line);
  for (const auto& [k, v] : fields) {
    line += ',';
    AppendJsonString(k, &line);
    line += ':';
    AppendJsonString(v, &line);
  }
  line += "}\n";
  std::lock_guard<std::mutex> l(g_mu);
  if (g_test_sink != nullptr) {
    g_test_sink->append(line);
    return;
  }
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n =
        ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

void SetLogSinkForTest(std::string* sink) {
  std::lock_guard<std::mutex> l(g_mu);
  g_test_sink = sink;
}

}  // namespace invariantd
