#include "sidecar/core/thread_priority.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/kernel_slices.h"

namespace invariantd {
namespace {

std::string NameOf(pthread_t t) {
  char buf[64] = {};
  EXPECT_EQ(pthread_getname_np(t, buf, sizeof buf), 0);
  return buf;
}

TEST(ThreadNameTest, NamesTheCallingThreadOnly) {
  const std::string main_before = NameOf(pthread_self());
  std::string seen;
  std::thread t([&] {
    EXPECT_TRUE(NameThisThread("inv-test"));
    seen = NameOf(pthread_self());
  });
  t.join();
  EXPECT_EQ(seen, "inv-test");
  EXPECT_EQ(NameOf(pthread_self()), main_before);
}

TEST(ThreadNameTest, LongNamesAreCutToTheKernelsFifteenBytes) {
  std::string seen;
  std::thread t([&] {
    EXPECT_TRUE(NameThisThread("inv-worker-0123456789"));
    seen = NameOf(pthread_self());
  });
  t.join();
  EXPECT_EQ(seen, "inv-worker-0123");
}

TEST(ThreadPriorityTest, LowersOnlyTheCallingThread) {
  const int before = getpriority(PRIO_PROCESS, 0);
  int lowered = 0;
  std::thread t([&] {
    ASSERT_TRUE(LowerThisThreadPriority());
    lowered = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  });
  t.join();
  EXPECT_EQ(lowered, kBackgroundNice);
  EXPECT_EQ(getpriority(PRIO_PROCESS, 0), before);
}

// The slice and nice value the kernel reports for the calling thread.
struct Sched {
  uint64_t runtime_ns = 0;
  int nice = 0;
};
Sched SchedOfThisThread() {
  return Sched{SchedulerSliceNs(),
               getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()))};
}

TEST(ViolationPathSliceTest, ThreadsOnThePathGetTheSliceAndKeepTheirNice) {
  SetViolationPathSlice(250);
  bool joined = false;
  Sched before;
  Sched after;
  std::thread t([&] {
    ASSERT_TRUE(LowerThisThreadPriority());
    before = SchedOfThisThread();
    joined = JoinViolationPath();
    after = SchedOfThisThread();
  });
  t.join();
  SetViolationPathSlice(0);
  EXPECT_EQ(after.nice, kBackgroundNice);  // sched_setattr kept it
  if (KernelTakesSlices()) {
    EXPECT_TRUE(joined);
    EXPECT_EQ(after.runtime_ns, 250'000u);
    EXPECT_NE(before.runtime_ns, 250'000u);
  } else {
    EXPECT_FALSE(joined);  // accepted and ignored: reported as not taken
    EXPECT_EQ(after.runtime_ns, before.runtime_ns);
  }
  EXPECT_EQ(ViolationPathSliceTakes(), false);  // the slice is 0 now
}

TEST(ViolationPathSliceTest, ZeroLeavesTheKernelsDefault) {
  SetViolationPathSlice(0);
  Sched before;
  Sched after;
  bool joined = true;
  std::thread t([&] {
    before = SchedOfThisThread();
    joined = JoinViolationPath();
    after = SchedOfThisThread();
  });
  t.join();
  EXPECT_FALSE(joined);
  EXPECT_EQ(after.runtime_ns, before.runtime_ns);
  SetViolationPathSlice(-5);  // clamped to 0
  EXPECT_EQ(ViolationPathSlice(), 0);
}

}  // namespace
}  // namespace invariantd
