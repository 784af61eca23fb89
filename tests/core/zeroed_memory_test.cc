#include "sidecar/core/zeroed_memory.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "gtest/gtest.h"

namespace invariantd {
namespace {

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(ZeroedMemoryTest, SmallBlocksAreZeroAndAlignedAsAsked) {
  for (size_t align : {size_t{16}, size_t{32}, size_t{64}}) {
    ZeroedMemory m(1000, align);
    ASSERT_NE(m.data(), nullptr);
    EXPECT_EQ(m.size(), 1000u);
    EXPECT_FALSE(m.mapped());
    EXPECT_EQ(Address(m.data()) % align, 0u) << align;
    EXPECT_TRUE(AllZero(m.data(), m.size()));
  }
}

// Freed heap memory is reused dirty: what comes back must be zero anyway.
TEST(ZeroedMemoryTest, ReusedHeapMemoryIsZeroed) {
  for (size_t align : {size_t{16}, size_t{64}}) {
    for (int round = 0; round < 3; ++round) {
      ZeroedMemory m(4096, align);
      ASSERT_TRUE(AllZero(m.data(), m.size())) << align << " " << round;
      std::memset(m.data(), 0x5a, m.size());
    }
  }
}

TEST(ZeroedMemoryTest, LargeBlocksAreMappedHugePageAlignedAndZero) {
  const size_t bytes = ZeroedMemory::kHugeBlockBytes + 12345;
  ZeroedMemory m(bytes, 64);
  ASSERT_NE(m.data(), nullptr);
  EXPECT_TRUE(m.mapped());
  EXPECT_EQ(Address(m.data()) % ZeroedMemory::kHugePage, 0u);
  EXPECT_TRUE(AllZero(m.data(), bytes));
  // Writable to the last byte; discarded pages read as zeros again.
  std::memset(m.data(), 0xab, bytes);
  m.DiscardPages(0, ZeroedMemory::kHugePage);
  EXPECT_TRUE(AllZero(m.data(), ZeroedMemory::kHugePage));
  EXPECT_EQ(static_cast<unsigned char*>(m.data())[ZeroedMemory::kHugePage],
            0xab);
  EXPECT_EQ(static_cast<unsigned char*>(m.data())[bytes - 1], 0xab);
}

TEST(ZeroedMemoryTest, MovesHandOverTheBlock) {
  ZeroedMemory a(ZeroedMemory::kHugeBlockBytes);
  void* p = a.data();
  ZeroedMemory b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.size(), 0u);       // NOLINT(bugprone-use-after-move)
  ZeroedMemory c(100);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_TRUE(c.mapped());
  c.Release();
  EXPECT_EQ(c.data(), nullptr);
  EXPECT_EQ(c.size(), 0u);
}

struct alignas(32) Quad {
  uint64_t v[4];
};

TEST(ZeroedArrayTest, ElementsStartZeroAndKeepTheirAlignment) {
  ZeroedArray<Quad> small(10);
  ZeroedArray<Quad> large(ZeroedMemory::kHugeBlockBytes / sizeof(Quad) + 1);
  for (ZeroedArray<Quad>* a : {&small, &large}) {
    ASSERT_FALSE(a->empty());
    EXPECT_EQ(Address(&(*a)[0]) % alignof(Quad), 0u);
    EXPECT_EQ((*a)[a->size() - 1].v[3], 0u);
    (*a)[a->size() - 1].v[3] = 7;
    EXPECT_EQ((*a)[a->size() - 1].v[3], 7u);
  }
  ZeroedArray<Quad> none;
  EXPECT_TRUE(none.empty());
  none = std::move(small);
  EXPECT_EQ(none.size(), 10u);
  EXPECT_EQ(none[9].v[3], 7u);
}

}  // namespace
}  // namespace invariantd
