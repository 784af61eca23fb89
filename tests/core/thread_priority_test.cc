#include "sidecar/core/thread_priority.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "gtest/gtest.h"

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

}  // namespace
}  // namespace invariantd
