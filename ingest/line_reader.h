// LineReader: splits a byte stream (a file descriptor) into lines, in bounded
// memory, with positions.
//
// - Each line is returned without its '\n' (and without a trailing '\r').
// - Line numbers are 1-based; `offset` is the byte offset of the line's first
//   byte from the start of the stream.
// - A line longer than `max_line_bytes` is not buffered: the reader skips to
//   its newline and returns it with `too_long = true` (text empty), so the
//   stream stays synchronized and memory stays bounded whatever the input.
// - A final line without a newline is returned with `no_newline = true`
//   (replay treats it as complete; a tailer waits for more).
// - Every returned `text` has kLinePadding readable bytes after its end.
//
// Thread-safety: single-threaded. The returned text is valid until the next
// call to Next().
#ifndef INVARIANTD_INGEST_LINE_READER_H_
#define INVARIANTD_INGEST_LINE_READER_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace invariantd {

struct LineReaderOptions {
  size_t max_line_bytes = 1 << 20;  // 1 MiB
  size_t read_chunk_bytes = 1 << 20;
};

struct Line {
  std::string_view text;
  uint64_t number = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // bytes of the line on disk, excluding the newline
  bool too_long = false;
  bool no_newline = false;
};

class LineReader {
 public:
  // `fd` is not owned and must stay open while the reader is used.
  LineReader(int fd, LineReaderOptions options = {});

  // The next line, nullopt at end of stream, or an I/O error (the errno
  // text). EINTR is retried. End of stream is sticky: once read(2) has
  // returned 0, later calls return nullopt without reading again. After an
  // error the reader may be called again (it resumes where it was).
  absl::StatusOr<std::optional<Line>> Next();

 private:
  // Reads at most `n` bytes into `dst`; 0 means end of stream.
  absl::StatusOr<size_t> Read(char* dst, size_t n);
  // Makes room for one chunk after end_ (compacting, then growing).
  void MakeRoom();
  // Consumes the line [begin_, end); buf_[end] is its '\n' unless
  // `no_newline`.
  Line TakeLine(size_t end, bool no_newline);
  // Continues skipping an over-long line (skipped_ bytes so far).
  absl::StatusOr<std::optional<Line>> SkipLongLine();

  int fd_;
  LineReaderOptions options_;
  // [0, capacity) holds data, followed by kLinePadding bytes of padding.
  std::vector<char> buf_;
  size_t begin_ = 0;  // first unconsumed byte in buf_
  size_t end_ = 0;    // one past the last valid byte in buf_
  size_t scan_ = 0;   // [begin_, scan_) is known to hold no '\n'
  bool eof_ = false;
  bool skipping_ = false;  // inside an over-long line
  uint64_t skipped_ = 0;   // bytes of that line seen so far
  uint64_t next_number_ = 1;
  uint64_t next_offset_ = 0;  // stream offset of buf_[begin_]
};

}  // namespace invariantd

#endif  // INVARIANTD_INGEST_LINE_READER_H_
