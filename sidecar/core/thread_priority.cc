#include "sidecar/core/thread_priority.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace invariantd {
namespace {

std::atomic<int> path_slice_us{0};

#if defined(__linux__)
// struct sched_attr of the sched_setattr(2) system call (glibc 2.36 has no
// wrapper or declaration).
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
};
constexpr uint32_t kSchedOther = 0;
#endif

}  // namespace

bool LowerThisThreadPriority() {
#if defined(__linux__)
  // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value
  // only (threads are scheduled as tasks). Raising the nice value needs no
  // privilege.
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  return ::setpriority(PRIO_PROCESS, tid, kBackgroundNice) == 0;
#else
  return false;
#endif
}

bool NameThisThread(std::string_view name) {
#if defined(__linux__)
  // The kernel keeps 16 bytes with the terminator; longer names fail.
  const std::string cut(name.substr(0, std::min<size_t>(name.size(), 15)));
  return ::pthread_setname_np(::pthread_self(), cut.c_str()) == 0;
#else
  return false;
#endif
}

void SetViolationPathSlice(int microseconds) {
  path_slice_us.store(std::max(microseconds, 0), std::memory_order_relaxed);
}

int ViolationPathSlice() {
  return path_slice_us.load(std::memory_order_relaxed);
}

bool JoinViolationPath() {
  const int us = ViolationPathSlice();
  if (us <= 0) return false;
#if defined(__linux__) && defined(SYS_sched_setattr) && \
    defined(SYS_sched_getattr)
  SchedAttr attr;
  std::memset(&attr, 0, sizeof attr);
  // Read first: sched_setattr sets the nice value too, which must stay.
  if (::syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0 ||
      attr.sched_policy != kSchedOther) {
    return false;
  }
  const uint64_t want = static_cast<uint64_t>(us) * 1000;
  attr.size = sizeof attr;
  attr.sched_flags = 0;
  attr.sched_runtime = want;
  if (::syscall(SYS_sched_setattr, 0, &attr, 0) != 0) return false;
  // Kernels before 6.12 accept the call and ignore the runtime of a
  // SCHED_OTHER task; 6.12+ report the slice back, kept within 0.1-100 ms.
  return SchedulerSliceNs() == std::clamp<uint64_t>(want, 100'000, 100'000'000);
#else
  return false;
#endif
}

uint64_t SchedulerSliceNs(int tid) {
#if defined(__linux__) && defined(SYS_sched_getattr)
  SchedAttr attr;
  std::memset(&attr, 0, sizeof attr);
  if (::syscall(SYS_sched_getattr, tid, &attr, sizeof attr, 0) != 0) return 0;
  return attr.sched_runtime;
#else
  return 0;
#endif
}

bool ViolationPathSliceTakes() {
  bool took = false;
  std::thread([&took] { took = JoinViolationPath(); }).join();
  return took;
}

}  // namespace invariantd
