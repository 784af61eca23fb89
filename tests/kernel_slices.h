// Whether the running kernel keeps a SCHED_OTHER task's custom scheduler
// slice (sched_setattr's sched_runtime): Linux 6.12 and later. Tests of
// sidecar/core/thread_priority.h expect the slice to be taken only there.
#ifndef INVARIANTD_TESTS_KERNEL_SLICES_H_
#define INVARIANTD_TESTS_KERNEL_SLICES_H_

#include <sys/utsname.h>

#include <cstdio>

namespace invariantd {

inline bool KernelTakesSlices() {
  utsname u{};
  int major = 0;
  int minor = 0;
  return uname(&u) == 0 &&
         std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
         (major > 6 || (major == 6 && minor >= 12));
}

}  // namespace invariantd

#endif  // INVARIANTD_TESTS_KERNEL_SLICES_H_
