#include "ingest/line_reader.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/decoder.h"
#include "rapidcheck/gtest.h"
#include "sidecar/core/event.h"
#include "tests/ingest/ingest_test_util.h"

namespace invariantd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An owned copy of a Line, comparable.
struct OwnedLine {
  std::string text;
  uint64_t number = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool too_long = false;
  bool no_newline = false;
  friend bool operator==(const OwnedLine&, const OwnedLine&) = default;
  friend std::ostream& operator<<(std::ostream& os, const OwnedLine& l) {
    return os << "{#" << l.number << " @" << l.offset << " len=" << l.length
              << (l.too_long ? " too_long" : "")
              << (l.no_newline ? " no_newline" : "") << " \"" << l.text
              << "\"}";
  }
};

OwnedLine L(std::string text, uint64_t number, uint64_t offset, uint64_t length,
            bool too_long = false, bool no_newline = false) {
  return OwnedLine{std::move(text), number,   offset,
                   length,          too_long, no_newline};
}

// An unlinked temporary file holding `data`, positioned at its start.
class TempFile {
 public:
  explicit TempFile(std::string_view data = {}) : file_(std::tmpfile()) {
    if (file_ == nullptr) return;
    if (!data.empty()) {
      std::fwrite(data.data(), 1, data.size(), file_);
    }
    std::fflush(file_);
    ::lseek(fd(), 0, SEEK_SET);
  }
  ~TempFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  bool ok() const { return file_ != nullptr; }
  int fd() const { return ::fileno(file_); }

 private:
  FILE* file_;
};

volatile unsigned padding_sink = 0;

// Reads every line. Touches the kLinePadding bytes after each text so that
// ASan catches missing padding.
std::vector<OwnedLine> ReadAll(int fd, LineReaderOptions options,
                               std::string* error = nullptr) {
  LineReader reader(fd, options);
  std::vector<OwnedLine> out;
  while (true) {
    auto next = reader.Next();
    if (!next.ok()) {
      if (error != nullptr) *error = std::string(next.status().message());
      break;
    }
    if (!next->has_value()) break;
    const Line& l = **next;
    unsigned sum = 0;
    for (size_t i = 0; i < kLinePadding; ++i) {
      sum += static_cast<unsigned char>(l.text.data()[l.text.size() + i]);
    }
    padding_sink = sum;
    out.push_back(OwnedLine{std::string(l.text), l.number, l.offset, l.length,
                            l.too_long, l.no_newline});
  }
  return out;
}

std::vector<OwnedLine> ReadString(std::string_view data,
                                  LineReaderOptions options = {}) {
  TempFile f(data);
  EXPECT_TRUE(f.ok());
  return ReadAll(f.fd(), options);
}

// The obvious specification, for comparison.
std::vector<OwnedLine> ReferenceSplit(const std::string& data,
                                      size_t max_line) {
  std::vector<OwnedLine> out;
  size_t start = 0;
  uint64_t number = 1;
  while (start < data.size()) {
    const size_t nl = data.find('\n', start);
    const bool no_newline = nl == std::string::npos;
    const size_t end = no_newline ? data.size() : nl;
    OwnedLine l;
    l.number = number++;
    l.offset = start;
    l.length = end - start;
    l.no_newline = no_newline;
    l.too_long = l.length > max_line;
    if (!l.too_long) {
      l.text = data.substr(start, end - start);
      if (!l.text.empty() && l.text.back() == '\r') l.text.pop_back();
    }
    out.push_back(l);
    start = no_newline ? data.size() : nl + 1;
  }
  return out;
}

TEST(LineReaderTest, SplitsLinesWithNumbersOffsetsAndLengths) {
  EXPECT_THAT(ReadString("alpha\nbe\n\ngamma\n"),
              ElementsAre(L("alpha", 1, 0, 5), L("be", 2, 6, 2), L("", 3, 9, 0),
                          L("gamma", 4, 10, 5)));
}

TEST(LineReaderTest, EmptyStream) {
  TempFile f("");
  LineReader reader(f.fd());
  auto next = reader.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  // End of stream is sticky.
  next = reader.Next();
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
}

TEST(LineReaderTest, StripsCarriageReturnButCountsIt) {
  EXPECT_THAT(ReadString("a\r\n\r\nb\rc\r\nlast\r"),
              ElementsAre(L("a", 1, 0, 2), L("", 2, 3, 1), L("b\rc", 3, 5, 4),
                          L("last", 4, 10, 5, false, /*no_newline=*/true)));
}

TEST(LineReaderTest, FinalLineWithoutNewline) {
  EXPECT_THAT(ReadString("one\ntwo"),
              ElementsAre(L("one", 1, 0, 3),
                          L("two", 2, 4, 3, false, /*no_newline=*/true)));
  EXPECT_THAT(ReadString("\n"), ElementsAre(L("", 1, 0, 0)));
}

TEST(LineReaderTest, MaxLineBoundaryIsIndependentOfChunking) {
  const std::string data = "12345\n123456\n1234\r\n12345\r\nxy";
  for (size_t chunk : {1, 2, 3, 5, 6, 7, 64}) {
    EXPECT_THAT(
        ReadString(data, {.max_line_bytes = 5, .read_chunk_bytes = chunk}),
        ElementsAre(L("12345", 1, 0, 5), L("", 2, 6, 6, true),
                    L("1234", 3, 13, 5), L("", 4, 19, 6, true),
                    L("xy", 5, 26, 2, false, true)))
        << "chunk " << chunk;
  }
}

TEST(LineReaderTest, SkipsLongLinesAndStaysInSync) {
  const std::string data = absl::StrCat("short\n", std::string(1000, 'x'),
                                        "\n{\"a\":1}\n", std::string(300, 'y'));
  for (size_t chunk : {1, 7, 64, 4096}) {
    EXPECT_THAT(
        ReadString(data, {.max_line_bytes = 16, .read_chunk_bytes = chunk}),
        ElementsAre(L("short", 1, 0, 5), L("", 2, 6, 1000, true),
                    L("{\"a\":1}", 3, 1007, 7),
                    L("", 4, 1015, 300, true, true)))
        << "chunk " << chunk;
  }
}

TEST(LineReaderTest, ZeroMaxLineAllowsOnlyEmptyLines) {
  EXPECT_THAT(
      ReadString("\nx\n\n", {.max_line_bytes = 0, .read_chunk_bytes = 2}),
      ElementsAre(L("", 1, 0, 0), L("", 2, 1, 1, true), L("", 3, 3, 0)));
}

TEST(LineReaderTest, ReportsReadErrorsWithErrnoText) {
  const int dir = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  LineReader reader(dir);
  auto next = reader.Next();
  ::close(dir);
  ASSERT_FALSE(next.ok());
  EXPECT_THAT(std::string(next.status().message()),
              HasSubstr(std::strerror(EISDIR)));
}

TEST(LineReaderTest, PipeWithShortReadsAndAMultiMegabyteLine) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const std::string huge(8 << 20, 'z');
  std::thread writer([&] {
    const std::string data =
        absl::StrCat("first\n", huge, "\n{\"term\":7}\nlast");
    size_t at = 0;
    size_t piece = 1;
    while (at < data.size()) {
      const size_t n = std::min(piece, data.size() - at);
      const ssize_t w = ::write(fds[1], data.data() + at, n);
      if (w <= 0) break;
      at += static_cast<size_t>(w);
      piece = piece * 3 % 70001 + 1;  // varied write sizes
    }
    ::close(fds[1]);
  });
  const std::vector<OwnedLine> lines =
      ReadAll(fds[0], {.max_line_bytes = 1024, .read_chunk_bytes = 4096});
  writer.join();
  ::close(fds[0]);
  const uint64_t after_huge = 6 + huge.size() + 1;
  EXPECT_THAT(lines,
              ElementsAre(L("first", 1, 0, 5), L("", 2, 6, huge.size(), true),
                          L("{\"term\":7}", 3, after_huge, 10),
                          L("last", 4, after_huge + 11, 4, false, true)));
}

long MaxRssKib() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

TEST(LineReaderTest, GigabyteLineDoesNotGrowMemory) {
  // A sparse file: 1 GiB of zeros (no newline), then two short lines. With
  // the default options the reader must stay near max_line + chunk.
  TempFile f;
  ASSERT_TRUE(f.ok());
  const off_t gib = off_t{1} << 30;
  ASSERT_EQ(::ftruncate(f.fd(), gib), 0);
  const std::string tail = "\n{\"a\":1}\n";
  ASSERT_EQ(::pwrite(f.fd(), tail.data(), tail.size(), gib),
            static_cast<ssize_t>(tail.size()));
  ASSERT_EQ(::lseek(f.fd(), 0, SEEK_SET), 0);

  const long before = MaxRssKib();
  LineReader reader(f.fd());
  auto first = reader.Next();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_TRUE((*first)->too_long);
  EXPECT_EQ((*first)->number, 1u);
  EXPECT_EQ((*first)->offset, 0u);
  EXPECT_EQ((*first)->length, static_cast<uint64_t>(gib));
  EXPECT_TRUE((*first)->text.empty());
  auto second = reader.Next();
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ((*second)->number, 2u);
  EXPECT_EQ((*second)->offset, static_cast<uint64_t>(gib) + 1);
  EXPECT_EQ((*second)->text, "{\"a\":1}");
  EXPECT_FALSE((*second)->too_long);

  // The line decodes straight out of the reader's buffer.
  FieldSet fields;
  fields.Add(*FieldPath::Parse("a"));
  auto decoder = MakeDecoder(DecoderOptions{}, fields);
  ASSERT_TRUE(decoder.ok());
  Event event;
  event.Reset(fields.size());
  std::string_view reason;
  ASSERT_TRUE((*decoder)->Decode((*second)->text, &event, &reason).ok());
  EXPECT_TRUE(event.fields[0].is_int());

  auto end = reader.Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
  // Buffering the line would have raised the high-water mark by ~1 GiB.
  EXPECT_LT(MaxRssKib() - before, 64 * 1024);
}

RC_GTEST_PROP(LineReaderProperty, MatchesReferenceSplitForAnyChunking, ()) {
  const std::string data =
      *rc::gen::container<std::string>(rc::gen::weightedElement<char>(
          {{8, 'a'}, {2, ' '}, {1, '\r'}, {3, '\n'}, {1, '{'}}));
  const size_t chunk = *rc::gen::inRange<size_t>(1, 40);
  const size_t max_line = *rc::gen::inRange<size_t>(0, 30);
  TempFile f(data);
  RC_ASSERT(f.ok());
  const std::vector<OwnedLine> actual =
      ReadAll(f.fd(), {.max_line_bytes = max_line, .read_chunk_bytes = chunk});
  const std::vector<OwnedLine> expected = ReferenceSplit(data, max_line);
  RC_ASSERT(actual == expected);
}

}  // namespace
}  // namespace invariantd
