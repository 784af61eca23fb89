#include "sidecar/core/thread_priority.h"

#include <algorithm>
#include <string>

#if defined(__linux__)
#include <pthread.h>
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

bool NameThisThread(std::string_view name) {
#if defined(__linux__)
  // The kernel keeps 16 bytes with the terminator; longer names fail.
  const std::string cut(name.substr(0, std::min<size_t>(name.size(), 15)));
  return ::pthread_setname_np(::pthread_self(), cut.c_str()) == 0;
#else
  return false;
#endif
}

}  // namespace invariantd
