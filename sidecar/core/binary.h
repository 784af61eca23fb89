// Little-endian binary encoding for checkpoints of rule state: appenders
// to a std::string, and readers that consume a std::string_view and fail
// (return false, leaving the view unspecified) on truncated input. Values
// (core/value.h) encode as a kind byte and their payload.
//
// Thread-safety: plain functions over caller-owned buffers.
#ifndef INVARIANTD_CORE_BINARY_H_
#define INVARIANTD_CORE_BINARY_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sidecar/core/hash.h"
#include "sidecar/core/value.h"

namespace invariantd {

// Bytes held as a list of pieces (read as their concatenation), so that a
// large buffer is moved in, not copied: checkpoint images hold megabytes
// of change logs, and they are built on the evaluation threads.
class Pieces {
 public:
  Pieces() = default;
  Pieces(std::string bytes) {  // NOLINT: implicit, a one-piece image
    if (!bytes.empty()) list_.push_back(std::move(bytes));
  }
  Pieces(const char* bytes) : Pieces(std::string(bytes)) {}  // NOLINT

  // The piece appends go to.
  std::string* tail() {
    if (list_.empty() || adopted_) {
      list_.emplace_back();
      adopted_ = false;
    }
    return &list_.back();
  }
  // Moves `bytes` in as a piece of its own (appends after it start anew).
  void Adopt(std::string&& bytes) {
    if (bytes.empty()) return;
    list_.push_back(std::move(bytes));
    adopted_ = true;
  }
  size_t size() const {
    size_t n = 0;
    for (const std::string& p : list_) n += p.size();
    return n;
  }
  const std::vector<std::string>& pieces() const { return list_; }
  std::string* piece(size_t i) { return &list_[i]; }
  std::string Join() const {
    std::string out;
    out.reserve(size());
    for (const std::string& p : list_) out.append(p);
    return out;
  }

 private:
  std::vector<std::string> list_;
  bool adopted_ = false;  // the last piece was moved in: do not append
};

// Little-endian bytes of `v` at `p` (one store on a little-endian CPU).
inline void StoreU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline void StoreHash(char* p, const Hash128& h) {
  StoreU64(p, h.lo);
  StoreU64(p + 8, h.hi);
}

inline void PutU64(std::string* out, uint64_t v) {
  char b[8];
  StoreU64(b, v);
  out->append(b, 8);
}

inline void PutU8(std::string* out, uint8_t v) {
  out->push_back(static_cast<char>(v));
}

inline void PutBytes(std::string* out, std::string_view bytes) {
  PutU64(out, bytes.size());
  out->append(bytes);
}

inline void PutHash(std::string* out, const Hash128& h) {
  char b[16];
  StoreHash(b, h);
  out->append(b, 16);
}

// A trivially copyable object as its bytes (same build only: checkpoints
// record the layout they were written with and are refused otherwise).
template <typename T>
void PutRaw(std::string* out, const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

inline bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i) {
    r |= uint64_t{static_cast<unsigned char>((*in)[i])} << (8 * i);
  }
  in->remove_prefix(8);
  *v = r;
  return true;
}

inline bool GetU8(std::string_view* in, uint8_t* v) {
  if (in->empty()) return false;
  *v = static_cast<uint8_t>((*in)[0]);
  in->remove_prefix(1);
  return true;
}

inline bool GetBytes(std::string_view* in, std::string_view* bytes) {
  uint64_t n = 0;
  if (!GetU64(in, &n) || in->size() < n) return false;
  *bytes = in->substr(0, n);
  in->remove_prefix(n);
  return true;
}

inline bool GetHash(std::string_view* in, Hash128* h) {
  return GetU64(in, &h->lo) && GetU64(in, &h->hi);
}

template <typename T>
bool GetRaw(std::string_view* in, T* v) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (in->size() < sizeof(T)) return false;
  std::memcpy(static_cast<void*>(v), in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}

// kind byte; then int64/double bits/bool as 8 bytes, or the text.
void PutValue(std::string* out, const Value& v);
bool GetValue(std::string_view* in, OwnedValue* v);

}  // namespace invariantd

#endif  // INVARIANTD_CORE_BINARY_H_
