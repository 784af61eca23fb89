// Scheduling priority and names of the daemon's threads.
#ifndef INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
#define INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_

#include <cstdint>
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
// named "inv-<role>" (docs/configuration.md lists them). Best effort, like
// the priority.
bool NameThisThread(std::string_view name);

// The scheduler time slice of the threads on the path from an input line
// to a durable violation (tailer, Kafka poller, dispatcher, workers,
// evidence writer). Linux's EEVDF scheduler (6.6+) gives every task a
// slice of 0.7 ms x (1 + log2 CPUs) -- 1.4 ms on two -- and, since 6.12,
// lets a task ask for a shorter one (sched_setattr's sched_runtime, no
// privilege needed). A task with a shorter slice gets an earlier virtual
// deadline, so when it wakes (a line arrived, a violation was handed on)
// it preempts a task running a long slice instead of waiting for the end
// of it. Measured beside two CPU-bound processes on two cores: detection
// p50 halved; on an idle machine no change (docs/benchmarks.md).
//
// SetViolationPathSlice sets the slice (microseconds; 0: the kernel's
// default) that JoinViolationPath applies to the calling thread; call it
// before the threads start. JoinViolationPath returns true when the kernel
// took the slice, false when it is 0 or the kernel ignored it (before
// 6.12, or not Linux): the thread then runs with the default slice.
inline constexpr int kDefaultViolationPathSliceUs = 100;
void SetViolationPathSlice(int microseconds);
int ViolationPathSlice();
bool JoinViolationPath();
// The scheduler slice (ns) the kernel reports for thread `tid` (0: the
// calling thread); 0 when it cannot be read (not Linux, no such thread).
uint64_t SchedulerSliceNs(int tid = 0);
// Whether a thread joining the path now gets the slice (asks the kernel
// from a short-lived thread of its own; for the start-up log).
bool ViolationPathSliceTakes();

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CORE_THREAD_PRIORITY_H_
