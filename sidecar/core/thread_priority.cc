#include "sidecar/core/thread_priority.h"

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace invariantd {

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

}  // namespace invariantd
