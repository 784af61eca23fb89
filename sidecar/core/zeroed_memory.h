// ZeroedMemory: a zero-filled block for large arrays read at random (rule
// key tables, the redelivery window).
//
// Blocks of at least kHugeBlockBytes come straight from the kernel: fresh
// zero pages, 2 MiB-aligned and advised for transparent huge pages before
// their first touch, so they fault in as huge pages (Linux with THP in
// "madvise" mode, Debian's default; elsewhere, or if refused, nothing
// changes). With 4 KiB pages a random lookup in a multi-megabyte array
// also misses the TLB; measured on `replay`, the redelivery window's 4 MiB
// of buckets cost a page walk per event before it was mapped this way.
// Smaller blocks are calloc'ed.
#ifndef INVARIANTD_SIDECAR_CORE_ZEROED_MEMORY_H_
#define INVARIANTD_SIDECAR_CORE_ZEROED_MEMORY_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace invariantd {

class ZeroedMemory {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;
  static constexpr size_t kHugeBlockBytes = 2 * kHugePage;

  ZeroedMemory() = default;
  // `align`: the alignment of data(), a power of two (at least 16 is
  // always given). Throws std::bad_alloc when the memory cannot be had.
  explicit ZeroedMemory(size_t bytes, size_t align = 16) : bytes_(bytes) {
    if (bytes == 0) return;
    if (bytes >= kHugeBlockBytes) {
      map_bytes_ = bytes + kHugePage;
      void* m = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw std::bad_alloc();
      map_base_ = m;
      const uintptr_t aligned =
          (reinterpret_cast<uintptr_t>(m) + kHugePage - 1) & ~(kHugePage - 1);
      data_ = reinterpret_cast<void*>(aligned);
      ::madvise(data_, bytes, MADV_HUGEPAGE);
    } else if (align <= 16) {
      data_ = std::calloc(1, bytes);
      if (data_ == nullptr) throw std::bad_alloc();
    } else {
      data_ = std::aligned_alloc(align, (bytes + align - 1) & ~(align - 1));
      if (data_ == nullptr) throw std::bad_alloc();
      std::memset(data_, 0, bytes);
    }
  }
  ZeroedMemory(ZeroedMemory&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        bytes_(std::exchange(o.bytes_, 0)),
        map_base_(std::exchange(o.map_base_, nullptr)),
        map_bytes_(std::exchange(o.map_bytes_, 0)) {}
  ZeroedMemory& operator=(ZeroedMemory&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      map_base_ = std::exchange(o.map_base_, nullptr);
      map_bytes_ = std::exchange(o.map_bytes_, 0);
    }
    return *this;
  }
  ZeroedMemory(const ZeroedMemory&) = delete;
  ZeroedMemory& operator=(const ZeroedMemory&) = delete;
  ~ZeroedMemory() { Release(); }

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  // True when the block is a private mapping: its whole pages can be handed
  // back with DiscardPages (they read as zeros again afterwards).
  bool mapped() const { return map_base_ != nullptr; }
  // Gives the kernel back the pages of [offset, offset + length), both
  // multiples of kHugePage, of a mapped() block.
  void DiscardPages(size_t offset, size_t length) {
    ::madvise(static_cast<char*>(data_) + offset, length, MADV_DONTNEED);
  }

  void Release() {
    if (data_ == nullptr) return;
    if (map_base_ != nullptr) {
      ::munmap(map_base_, map_bytes_);
    } else {
      std::free(data_);
    }
    data_ = nullptr;
    map_base_ = nullptr;
    bytes_ = map_bytes_ = 0;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  void* map_base_ = nullptr;  // null: calloc'ed
  size_t map_bytes_ = 0;
};

// A fixed-size array of trivially copyable and destructible T over
// ZeroedMemory: every element starts as all-zero bytes (which must be a
// valid, meaningful T). The elements are never constructed: calloc and
// aligned_alloc create such objects implicitly (C++20), and GCC and Clang
// treat fresh mmap'ed memory the same way.
template <typename T>
class ZeroedArray {
  static_assert(std::is_trivially_copyable_v<T> &&
                std::is_trivially_destructible_v<T>);
  static_assert(alignof(T) <= ZeroedMemory::kHugePage);

 public:
  ZeroedArray() = default;
  explicit ZeroedArray(size_t n) : mem_(Bytes(n), alignof(T)), n_(n) {}
  ZeroedArray(ZeroedArray&& o) noexcept
      : mem_(std::move(o.mem_)), n_(std::exchange(o.n_, 0)) {}
  ZeroedArray& operator=(ZeroedArray&& o) noexcept {
    mem_ = std::move(o.mem_);
    n_ = std::exchange(o.n_, 0);
    return *this;
  }

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T& operator[](size_t i) { return static_cast<T*>(mem_.data())[i]; }
  const T& operator[](size_t i) const {
    return static_cast<const T*>(mem_.data())[i];
  }

 private:
  static size_t Bytes(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    return n * sizeof(T);
  }

  ZeroedMemory mem_;
  size_t n_ = 0;
};

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_CORE_ZEROED_MEMORY_H_
