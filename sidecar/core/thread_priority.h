// Scheduling priority and names of the daemon's threads.
#ifndef INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
#define INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_

#include <string_view>

namespace invariantd {

// The nice value of threads whose work is not on the path from an input
// line to a durable violation (rule-state checkpoints, WAL checkpoints).
// On two cores the daemon's tailer, dispatcher, worker and evidence writer
// share them with these threads; at nice 10 a background thread that is
// runnable yields its core to any of them at once, instead of holding it
// for up to a scheduler slice. Measured at half of saturation: detection
// p99 5-8 ms instead of 5-56 ms (docs/benchmarks.md).
inline constexpr int kBackgroundNice = 10;

// Lowers the calling thread's priority to kBackgroundNice. Best effort:
// returns false where the platform cannot (the thread runs on unchanged).
bool LowerThisThreadPriority();

// Names the calling thread (what `top -H`, `ps -L`, perf and gdb show),
// cut to the kernel's 15 bytes. Every long-lived thread of the daemon is
// named "inv-<role>" (docs/operations.md lists them). Best effort, like
// the priority.
bool NameThisThread(std::string_view name);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
