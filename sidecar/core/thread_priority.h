// Scheduling priority of background threads.
#ifndef INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
#define INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_

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

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
