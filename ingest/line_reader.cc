#include "ingest/line_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "sidecar/core/event.h"

namespace invariantd {
namespace {

// Texts that do not point into the buffer (over-long lines) point here, so
// that they too have kLinePadding readable bytes after them.
constexpr char kEmptyPadded[kLinePadding] = {};

size_t SaturatingAdd(size_t a, size_t b) {
  return a > std::numeric_limits<size_t>::max() - b
             ? std::numeric_limits<size_t>::max()
             : a + b;
}

}  // namespace

LineReader::LineReader(int fd, LineReaderOptions options)
    : fd_(fd), options_(options) {
  if (options_.read_chunk_bytes == 0) options_.read_chunk_bytes = 1;
}

absl::StatusOr<size_t> LineReader::Read(char* dst, size_t n) {
  while (true) {
    const ssize_t r = ::read(fd_, dst, n);
    if (r >= 0) return static_cast<size_t>(r);
    if (errno != EINTR) return absl::ErrnoToStatus(errno, "read");
  }
}

void LineReader::MakeRoom() {
  const size_t chunk = options_.read_chunk_bytes;
  const size_t capacity = buf_.empty() ? 0 : buf_.size() - kLinePadding;
  if (capacity - end_ >= chunk) return;
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    scan_ -= begin_;
    begin_ = 0;
    if (capacity - end_ >= chunk) return;
  }
  // Here end_ (the pending partial line) is at most max_line_bytes: longer
  // lines are skipped, not buffered. So the buffer never exceeds
  // max_line_bytes + chunk (plus padding), whatever the input.
  const size_t limit = SaturatingAdd(options_.max_line_bytes, chunk);
  const size_t doubled = capacity > limit / 2 ? limit : capacity * 2;
  const size_t wanted = std::max(end_ + chunk, doubled);
  buf_.resize(wanted + kLinePadding);
}

Line LineReader::TakeLine(size_t end, bool no_newline) {
  Line line;
  line.number = next_number_++;
  line.offset = next_offset_;
  line.length = end - begin_;
  line.no_newline = no_newline;
  if (line.length > options_.max_line_bytes) {
    line.too_long = true;
    line.text = std::string_view(kEmptyPadded, 0);
  } else {
    size_t text_end = end;
    if (text_end > begin_ && buf_[text_end - 1] == '\r') --text_end;
    line.text = std::string_view(buf_.data() + begin_, text_end - begin_);
  }
  const size_t consumed = no_newline ? end - begin_ : end - begin_ + 1;
  begin_ += consumed;
  next_offset_ += consumed;
  scan_ = begin_;
  if (begin_ == end_) begin_ = end_ = scan_ = 0;  // spares a compaction
  return line;
}

absl::StatusOr<std::optional<Line>> LineReader::SkipLongLine() {
  // The buffer holds nothing of the over-long line: only its length counts.
  bool newline_found = false;
  while (!eof_ && !newline_found) {
    MakeRoom();
    absl::StatusOr<size_t> n = Read(buf_.data(), options_.read_chunk_bytes);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      eof_ = true;
      continue;
    }
    const void* newline = std::memchr(buf_.data(), '\n', *n);
    if (newline == nullptr) {
      skipped_ += *n;
      continue;
    }
    const size_t at =
        static_cast<size_t>(static_cast<const char*>(newline) - buf_.data());
    skipped_ += at;
    begin_ = at + 1;
    end_ = *n;
    scan_ = begin_;
    newline_found = true;
  }
  Line line;
  line.text = std::string_view(kEmptyPadded, 0);
  line.number = next_number_++;
  line.offset = next_offset_;
  line.length = skipped_;
  line.too_long = true;
  line.no_newline = !newline_found;
  next_offset_ += skipped_ + (line.no_newline ? 0 : 1);
  skipping_ = false;
  skipped_ = 0;
  if (begin_ == end_) begin_ = end_ = scan_ = 0;
  return line;
}

absl::StatusOr<std::optional<Line>> LineReader::Next() {
  if (skipping_) return SkipLongLine();
  while (true) {
    if (scan_ < end_) {
      const void* newline =
          std::memchr(buf_.data() + scan_, '\n', end_ - scan_);
      if (newline != nullptr) {
        return TakeLine(static_cast<size_t>(static_cast<const char*>(newline) -
                                            buf_.data()),
                        /*no_newline=*/false);
      }
      scan_ = end_;
    }
    const size_t pending = end_ - begin_;
    if (pending > options_.max_line_bytes) {
      skipping_ = true;
      skipped_ = pending;
      begin_ = end_ = scan_ = 0;
      return SkipLongLine();
    }
    if (eof_) {
      if (pending == 0) return std::nullopt;
      return TakeLine(end_, /*no_newline=*/true);
    }
    MakeRoom();
    absl::StatusOr<size_t> n =
        Read(buf_.data() + end_, options_.read_chunk_bytes);
    if (!n.ok()) return n.status();
    if (*n == 0) eof_ = true;
    end_ += *n;
  }
}

}  // namespace invariantd
