#include "ingest/file/tailer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/record.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAreArray;

constexpr auto kTimeout = std::chrono::seconds(30);
constexpr auto kForever = std::chrono::hours(1);

// A sink holding at most `capacity` records not yet Release()d; Push blocks
// while it is full and returns false once Close()d.
class TestSink : public RecordSink {
 public:
  static size_t SaturatingAdd(size_t a, size_t b) {
    return a > std::numeric_limits<size_t>::max() - b
               ? std::numeric_limits<size_t>::max()
               : a + b;
  }

  explicit TestSink(size_t capacity = std::numeric_limits<size_t>::max())
      : capacity_(capacity) {}

  bool Push(Record record) override {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] {
      return closed_ || records_.size() < SaturatingAdd(released_, capacity_);
    });
    if (closed_) return false;
    records_.push_back(std::move(record));
    cv_.notify_all();
    return true;
  }
  bool TryPushBatch(std::vector<Record>*) override { return false; }

  // From now on TakeRecycled hands out shells full of stale data, as a
  // sink that reuses records does: the tailer must overwrite all of it.
  void GiveDirtyShells() {
    std::lock_guard<std::mutex> l(mu_);
    dirty_ = true;
  }
  size_t TakeRecycled(std::vector<Record>* out, size_t max) override {
    std::lock_guard<std::mutex> l(mu_);
    if (!dirty_) return 0;
    for (size_t i = 0; i < max; ++i) {
      Record r;
      r.source = std::string(100, 's');
      r.kind = 2;
      r.line = 99;
      r.offset = 77;
      r.stream = 5;
      r.bytes = std::string(500, 'b');
      r.too_long = i % 2 == 0;
      r.length = 12345;
      r.meta = {{"key", "stale"}};
      r.acker = reinterpret_cast<Acker*>(uintptr_t{0x10});
      r.ack_seq = 42;
      out->push_back(std::move(r));
    }
    shells_given_ += max;
    return max;
  }
  size_t shells_given() const {
    std::lock_guard<std::mutex> l(mu_);
    return shells_given_;
  }

  // Waits until at least n records have been admitted.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, kTimeout, [&] { return records_.size() >= n; });
  }
  // Frees room for n more records.
  void Release(size_t n) {
    std::lock_guard<std::mutex> l(mu_);
    released_ += n;
    cv_.notify_all();
  }
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
    cv_.notify_all();
  }
  std::vector<Record> records() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_;
  }
  size_t size() const {
    std::lock_guard<std::mutex> l(mu_);
    return records_.size();
  }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
  size_t released_ = 0;
  bool closed_ = false;
  bool dirty_ = false;
  size_t shells_given_ = 0;
};

// Polls `cond` until it holds or the (generous) deadline passes.
bool Eventually(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return cond();
}

// What a test checks of a Record.
struct Got {
  std::string source;
  uint64_t line = 0;
  uint64_t offset = 0;
  std::string bytes;
  bool too_long = false;
  uint64_t length = 0;
  friend bool operator==(const Got&, const Got&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Got& g) {
    return os << "{" << g.source << ":" << g.line << " @" << g.offset << " \""
              << g.bytes << "\"" << (g.too_long ? " too_long" : "")
              << " len=" << g.length << "}";
  }
};

Got G(const std::string& source, uint64_t line, uint64_t offset,
      const std::string& bytes) {
  return Got{source, line, offset, bytes, false, bytes.size()};
}

std::vector<Got> Gots(const std::vector<Record>& records) {
  std::vector<Got> out;
  for (const Record& r : records) {
    out.push_back(
        Got{r.source, r.line, r.offset, r.bytes, r.too_long, r.length});
  }
  return out;
}

std::vector<Got> OfSource(const std::vector<Got>& all,
                          const std::string& source) {
  std::vector<Got> out;
  for (const Got& g : all) {
    if (g.source == source) out.push_back(g);
  }
  return out;
}

void Append(const std::string& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::write(fd, data.data(), data.size()),
            static_cast<ssize_t>(data.size()));
  ::close(fd);
}

void WriteAt(const std::string& path, uint64_t offset, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(data.size()));
  ::close(fd);
}

struct Notices {
  mutable std::mutex mu;
  std::vector<std::tuple<std::string, std::string, std::string>> seen;

  FileTailer::NoticeFn Fn() {
    return [this](std::string_view event, std::string_view path,
                  std::string_view detail) {
      std::lock_guard<std::mutex> l(mu);
      seen.emplace_back(std::string(event), std::string(path),
                        std::string(detail));
    };
  }
  bool Has(std::string_view event, std::string_view path) const {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& [e, p, d] : seen) {
      if (e == event && p == path) return true;
    }
    return false;
  }
  size_t Count(std::string_view event) const {
    std::lock_guard<std::mutex> l(mu);
    size_t n = 0;
    for (const auto& [e, p, d] : seen) n += e == event;
    return n;
  }
};

// How new data and files are noticed: inotify alone (the poll interval is
// an hour), or polling alone.
struct Mode {
  bool inotify;
  std::chrono::milliseconds poll;
  friend std::ostream& operator<<(std::ostream& os, const Mode& m) {
    return os << (m.inotify ? "inotify" : "polling") << ", poll every "
              << m.poll.count() << " ms";
  }
};

class TailerTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir();
    if (!tmpl.empty() && tmpl.back() == '/') tmpl.pop_back();
    tmpl += "/tailer_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string P(std::string_view name) const {
    return absl::StrCat(AV(dir_), "/", AV(name));
  }
  TailerOptions Options(std::vector<std::string> globs) const {
    TailerOptions o;
    o.globs = std::move(globs);
    o.use_inotify = GetParam().inotify;
    o.poll_interval = GetParam().poll;
    o.rotated_grace = std::chrono::milliseconds(0);
    return o;
  }

  std::string dir_;
  Notices notices_;
};

// The (non-parameterized) tests use polling with a short interval.
class TailerBasicTest : public TailerTest {};

TEST_P(TailerTest, ReadsExistingFilesFromTheStartWithPositions) {
  Append(P("a.log"), "one\r\n\ntwo\n");
  Append(P("b.log"), "b1\n");
  Append(P("c.txt"), "not matched\n");
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(4));
  tailer.Stop();
  const std::vector<Record> records = sink.records();
  EXPECT_THAT(Gots(records), ElementsAre(Got{P("a.log"), 1, 0, "one", false, 4},
                                         Got{P("a.log"), 2, 5, "", false, 0},
                                         G(P("a.log"), 3, 6, "two"),
                                         G(P("b.log"), 1, 0, "b1")));
  std::vector<uint64_t> seqs;
  for (const Record& r : records) {
    EXPECT_EQ(r.acker, &tailer);
    EXPECT_THAT(r.meta, IsEmpty());
    seqs.push_back(r.ack_seq);
  }
  EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end());
  EXPECT_TRUE(notices_.Has("opened", P("a.log")));
  const TailStats stats = tailer.Stats();
  EXPECT_EQ(stats.lines, 4u);
  EXPECT_EQ(stats.files_open, 0u);  // stopped
}

TEST_P(TailerTest, DiscoversManyNewFilesWhileRunning) {
  TestSink sink;
  FileTailer tailer(Options({P("*.log"), P("sub*/*.log")}), &sink,
                    notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  std::vector<Got> want;
  for (int i = 0; i < 30; ++i) {
    const std::string name = absl::StrCat("f", i, ".log");
    Append(P(name), absl::StrCat("x", i, "\ny", i, "\n"));
    want.push_back(G(P(name), 1, 0, absl::StrCat("x", i)));
    want.push_back(G(P(name), 2, 3 + (i >= 10), absl::StrCat("y", i)));
  }
  // A new directory matched by the second pattern, and a file in it.
  std::filesystem::create_directory(P("sub1"));
  Append(P("sub1/deep.log"), "deep\n");
  want.push_back(G(P("sub1/deep.log"), 1, 0, "deep"));
  ASSERT_TRUE(sink.WaitFor(want.size())) << sink.size();
  // Growth of a known file.
  Append(P("f0.log"), "z0\n");
  want.push_back(G(P("f0.log"), 3, 6, "z0"));
  ASSERT_TRUE(sink.WaitFor(want.size())) << sink.size();
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()), UnorderedElementsAreArray(want));
  EXPECT_EQ(tailer.Stats().lines, want.size());
}

TEST_P(TailerTest, WaitsForTheNewlineOfAPartialLine) {
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("a.log"), "first\nsec");
  ASSERT_TRUE(sink.WaitFor(1));
  // The tailer has seen "sec" (it counts as behind) but not delivered it.
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 3; }));
  EXPECT_EQ(sink.size(), 1u);
  Append(P("a.log"), "ond");
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 6; }));
  Append(P("a.log"), "\nthird\n");
  ASSERT_TRUE(sink.WaitFor(3));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 0; }));
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()), ElementsAre(G(P("a.log"), 1, 0, "first"),
                                                G(P("a.log"), 2, 6, "second"),
                                                G(P("a.log"), 3, 13, "third")));
}

TEST_P(TailerTest, SkipsTooLongLinesWithoutLosingSync) {
  TailerOptions options = Options({P("*.log")});
  options.max_line_bytes = 16;
  TestSink sink;
  FileTailer tailer(options, &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  const std::string long1(100, 'x');
  Append(P("a.log"), absl::StrCat("ok\n", long1, "\nafter\n"));
  ASSERT_TRUE(sink.WaitFor(3));
  // An over-long line that arrives in pieces, seen unfinished in between.
  Append(P("a.log"), std::string(40, 'y'));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 40; }));
  Append(P("a.log"), std::string(30, 'y'));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 70; }));
  Append(P("a.log"), "yy\nend\n");
  ASSERT_TRUE(sink.WaitFor(5));
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()),
              ElementsAre(G(P("a.log"), 1, 0, "ok"),
                          Got{P("a.log"), 2, 3, "", true, 100},
                          G(P("a.log"), 3, 104, "after"),
                          Got{P("a.log"), 4, 110, "", true, 72},
                          G(P("a.log"), 5, 183, "end")));
  EXPECT_EQ(tailer.Stats().too_long, 2u);
}

// Records built in recycled shells carry nothing of their previous use.
TEST_P(TailerTest, RecycledRecordsAreBuiltFromScratch) {
  TailerOptions options = Options({P("*.log")});
  options.max_line_bytes = 16;
  TestSink sink;
  sink.GiveDirtyShells();
  FileTailer tailer(options, &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("a.log"), absl::StrCat("ok\n", std::string(100, 'x'), "\n\nend\n"));
  ASSERT_TRUE(sink.WaitFor(4));
  tailer.Stop();
  EXPECT_GT(sink.shells_given(), 0u);
  const std::vector<Record> records = sink.records();
  EXPECT_THAT(Gots(records), ElementsAre(G(P("a.log"), 1, 0, "ok"),
                                         Got{P("a.log"), 2, 3, "", true, 100},
                                         G(P("a.log"), 3, 104, ""),
                                         G(P("a.log"), 4, 105, "end")));
  for (const Record& r : records) {
    EXPECT_EQ(r.kind, 0);
    EXPECT_EQ(r.acker, &tailer);
    EXPECT_NE(r.ack_seq, 42u);
    EXPECT_NE(r.stream, 5u);
    EXPECT_THAT(r.meta, IsEmpty());
  }
}

TEST_P(TailerTest, RotationByRenameAndCreateLosesAndRepeatsNothing) {
  TestSink sink;
  FileTailer tailer(Options({P("app.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("app.log"), "o1\no2\n");
  ASSERT_TRUE(sink.WaitFor(2));
  // The writer's last lines, the rename, the new file -- in one go, so the
  // tailer may see any intermediate state.
  Append(P("app.log"), "o3\no4\n");
  std::filesystem::rename(P("app.log"), P("app.log.1"));
  Append(P("app.log"), "n1\nn2\n");
  ASSERT_TRUE(sink.WaitFor(6)) << sink.size();
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().files_open == 1; }));
  Append(P("app.log"), "n3\n");
  ASSERT_TRUE(sink.WaitFor(7));
  tailer.Stop();
  // In order: the old file to its end, then the new one from 0.
  EXPECT_THAT(
      Gots(sink.records()),
      ElementsAre(G(P("app.log"), 1, 0, "o1"), G(P("app.log"), 2, 3, "o2"),
                  G(P("app.log"), 3, 6, "o3"), G(P("app.log"), 4, 9, "o4"),
                  G(P("app.log"), 1, 0, "n1"), G(P("app.log"), 2, 3, "n2"),
                  G(P("app.log"), 3, 6, "n3")));
  EXPECT_EQ(tailer.Stats().rotations, 1u);
  EXPECT_TRUE(notices_.Has("rotated", P("app.log")));
}

TEST_P(TailerTest, KeepsReadingARotatedFileDuringTheGrace) {
  TailerOptions options = Options({P("app.log")});
  options.rotated_grace = kForever;
  TestSink sink;
  FileTailer tailer(options, &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("app.log"), "o1\n");
  ASSERT_TRUE(sink.WaitFor(1));
  std::filesystem::rename(P("app.log"), P("app.log.1"));
  Append(P("app.log"), "n1\n");
  ASSERT_TRUE(sink.WaitFor(2));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().rotations == 1; }));
  // The writer had not reopened yet: a late line in the old file, with an
  // unterminated one behind it.
  Append(P("app.log.1"), "o2\no3");
  ASSERT_TRUE(sink.WaitFor(3));
  EXPECT_EQ(tailer.Stats().files_open, 2u);
  tailer.Stop();
  const std::vector<Got> got = Gots(sink.records());
  EXPECT_THAT(got, UnorderedElementsAreArray({G(P("app.log"), 1, 0, "o1"),
                                              G(P("app.log"), 1, 0, "n1"),
                                              G(P("app.log"), 2, 3, "o2")}));
}

TEST_P(TailerTest, DeliversTheLastLineOfAClosedRotatedFile) {
  TestSink sink;
  FileTailer tailer(Options({P("app.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("app.log"), "o1\no2");
  ASSERT_TRUE(sink.WaitFor(1));
  std::filesystem::rename(P("app.log"), P("app.log.1"));
  Append(P("app.log"), "n1\n");
  ASSERT_TRUE(sink.WaitFor(3));
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()), ElementsAre(G(P("app.log"), 1, 0, "o1"),
                                                G(P("app.log"), 2, 3, "o2"),
                                                G(P("app.log"), 1, 0, "n1")));
}

TEST_P(TailerTest, CopytruncateRestartsAtZero) {
  TestSink sink;
  FileTailer tailer(Options({P("app.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("app.log"), "line-1\nline-2\nline-3\n");
  ASSERT_TRUE(sink.WaitFor(3));
  std::filesystem::copy_file(P("app.log"), P("app.log.1"));
  std::filesystem::resize_file(P("app.log"), 0);
  Append(P("app.log"), "n1\nn2\n");
  ASSERT_TRUE(sink.WaitFor(5)) << sink.size();
  tailer.Stop();
  EXPECT_THAT(
      Gots(sink.records()),
      ElementsAre(G(P("app.log"), 1, 0, "line-1"),
                  G(P("app.log"), 2, 7, "line-2"),
                  G(P("app.log"), 3, 14, "line-3"), G(P("app.log"), 1, 0, "n1"),
                  G(P("app.log"), 2, 3, "n2")));
  EXPECT_EQ(tailer.Stats().truncations, 1u);
  EXPECT_TRUE(notices_.Has("truncated", P("app.log")));
}

TEST_P(TailerTest, ContentRewrittenInPlaceRestartsAtZero) {
  TestSink sink;
  FileTailer tailer(Options({P("app.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("app.log"), "aaaa\n");
  ASSERT_TRUE(sink.WaitFor(1));
  // The read pass is over once the first bytes are fingerprinted.
  ASSERT_TRUE(Eventually([&] {
    return tailer.CommittedPositions().at(0).fingerprint_bytes == 5;
  }));
  // Never shorter than what was read, but the first bytes changed.
  WriteAt(P("app.log"), 0, "bbbb\ncc\n");
  ASSERT_TRUE(sink.WaitFor(3)) << sink.size();
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()), ElementsAre(G(P("app.log"), 1, 0, "aaaa"),
                                                G(P("app.log"), 1, 0, "bbbb"),
                                                G(P("app.log"), 2, 5, "cc")));
  EXPECT_EQ(tailer.Stats().truncations, 1u);
}

TEST_P(TailerTest, DeletedFileIsReadToItsEndThenClosed) {
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("a.log"), "a1\n");
  Append(P("keep.log"), "k1\n");
  ASSERT_TRUE(sink.WaitFor(2));
  Append(P("a.log"), "a2\na3\n");
  std::filesystem::remove(P("a.log"));
  ASSERT_TRUE(sink.WaitFor(4));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().files_open == 1; }));
  EXPECT_EQ(tailer.Stats().vanished, 1u);
  EXPECT_TRUE(notices_.Has("vanished", P("a.log")));
  tailer.Stop();
  EXPECT_THAT(OfSource(Gots(sink.records()), P("a.log")),
              ElementsAre(G(P("a.log"), 1, 0, "a1"), G(P("a.log"), 2, 3, "a2"),
                          G(P("a.log"), 3, 6, "a3")));
}

TEST_P(TailerTest, DeletedFileStillWrittenThroughItsDescriptor) {
  TailerOptions options = Options({P("*.log")});
  options.rotated_grace = kForever;
  TestSink sink;
  FileTailer tailer(options, &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  const int writer =
      ::open(P("a.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(::write(writer, "a1\n", 3), 3);
  ASSERT_TRUE(sink.WaitFor(1));
  std::filesystem::remove(P("a.log"));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().vanished == 1; }));
  ASSERT_EQ(::write(writer, "a2\n", 3), 3);
  ::close(writer);
  Append(P("b.log"), "b1\n");  // wakes an inotify-only tailer up
  ASSERT_TRUE(sink.WaitFor(3));
  tailer.Stop();
  EXPECT_THAT(
      OfSource(Gots(sink.records()), P("a.log")),
      ElementsAre(G(P("a.log"), 1, 0, "a1"), G(P("a.log"), 2, 3, "a2")));
}

INSTANTIATE_TEST_SUITE_P(Modes, TailerTest,
                         ::testing::Values(Mode{true, kForever},
                                           Mode{false,
                                                std::chrono::milliseconds(10)}),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           return std::string(info.param.inotify ? "Inotify"
                                                                 : "Polling");
                         });

INSTANTIATE_TEST_SUITE_P(Polling, TailerBasicTest,
                         ::testing::Values(Mode{
                             false, std::chrono::milliseconds(10)}));

void AckAll(FileTailer& tailer, const std::vector<Record>& records) {
  for (const Record& r : records) tailer.Processed(r.ack_seq);
}

TEST_P(TailerBasicTest, CommittedPositionsAdvanceInOrderPerFile) {
  Append(P("a.log"), "a1\na2\na3\n");
  Append(P("b.log"), "b1\n");
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(4));
  const std::vector<Record> r = sink.records();
  auto position = [&](const std::string& path) {
    for (const TailPosition& p : tailer.CommittedPositions()) {
      if (p.path == path) return std::make_pair(p.offset, p.line);
    }
    return std::make_pair(~uint64_t{0}, ~uint64_t{0});
  };
  EXPECT_EQ(position(P("a.log")), std::make_pair(uint64_t{0}, uint64_t{0}));
  tailer.Processed(r[1].ack_seq);  // a2 before a1: no progress
  EXPECT_EQ(position(P("a.log")), std::make_pair(uint64_t{0}, uint64_t{0}));
  tailer.Processed(r[3].ack_seq);  // b1: another file moves on its own
  EXPECT_EQ(position(P("b.log")), std::make_pair(uint64_t{3}, uint64_t{1}));
  tailer.Processed(r[0].ack_seq);  // a1: now a1 and a2
  EXPECT_EQ(position(P("a.log")), std::make_pair(uint64_t{6}, uint64_t{2}));
  tailer.Processed(r[2].ack_seq);
  EXPECT_EQ(position(P("a.log")), std::make_pair(uint64_t{9}, uint64_t{3}));
  tailer.Processed(r[2].ack_seq);  // a duplicate ack changes nothing
  tailer.Processed(12345);         // nor does an unknown one
  EXPECT_EQ(position(P("a.log")), std::make_pair(uint64_t{9}, uint64_t{3}));
  tailer.Stop();
  // Still valid after Stop, with the files' identities.
  const std::vector<TailPosition> positions = tailer.CommittedPositions();
  ASSERT_THAT(positions, SizeIs(2));
  struct stat st;
  ASSERT_EQ(::stat(P("a.log").c_str(), &st), 0);
  EXPECT_EQ(positions[0].dev, st.st_dev);
  EXPECT_EQ(positions[0].ino, st.st_ino);
  EXPECT_EQ(positions[0].fingerprint_bytes, 9u);
}

TEST_P(TailerBasicTest, RestartDeliversExactlyTheUnackedAndNewLines) {
  Append(P("a.log"), "l1\nl2\nl3\nl4\nl5\n");
  std::vector<TailPosition> positions;
  {
    TestSink sink;
    FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(5));
    const std::vector<Record> r = sink.records();
    tailer.Processed(r[0].ack_seq);
    tailer.Processed(r[1].ack_seq);
    tailer.Processed(r[3].ack_seq);  // l3 unacked: l4 is re-delivered
    positions = tailer.CommittedPositions();
    tailer.Stop();
  }
  ASSERT_THAT(positions, SizeIs(1));
  EXPECT_EQ(positions[0].offset, 6u);
  EXPECT_EQ(positions[0].line, 2u);
  Append(P("a.log"), "l6\nl7\n");
  {
    TestSink sink;
    FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
    tailer.Restore(positions);
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(5));
    AckAll(tailer, sink.records());
    ASSERT_TRUE(Eventually(
        [&] { return tailer.CommittedPositions().at(0).offset == 21; }));
    positions = tailer.CommittedPositions();
    tailer.Stop();
    EXPECT_THAT(
        Gots(sink.records()),
        ElementsAre(G(P("a.log"), 3, 6, "l3"), G(P("a.log"), 4, 9, "l4"),
                    G(P("a.log"), 5, 12, "l5"), G(P("a.log"), 6, 15, "l6"),
                    G(P("a.log"), 7, 18, "l7")));
  }
  // Everything acked: a third run delivers only what is new.
  Append(P("a.log"), "l8\n");
  {
    TestSink sink;
    FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
    tailer.Restore(positions);
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(1));
    Append(P("b.log"), "marker\n");  // read after a.log has been read
    ASSERT_TRUE(sink.WaitFor(2));
    tailer.Stop();
    EXPECT_THAT(OfSource(Gots(sink.records()), P("a.log")),
                ElementsAre(G(P("a.log"), 8, 21, "l8")));
  }
}

TEST_P(TailerBasicTest, RestoreFindsARotatedFileByInode) {
  Append(P("app.log"), "o1\no2\n");
  std::vector<TailPosition> positions;
  {
    TestSink sink;
    FileTailer tailer(Options({P("app.log*")}), &sink, notices_.Fn());
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(2));
    AckAll(tailer, sink.records());
    positions = tailer.CommittedPositions();
    tailer.Stop();
  }
  // While down: a line more, rotation, a new file.
  Append(P("app.log"), "o3\n");
  std::filesystem::rename(P("app.log"), P("app.log.1"));
  Append(P("app.log"), "n1\n");
  TestSink sink;
  FileTailer tailer(Options({P("app.log*")}), &sink, notices_.Fn());
  tailer.Restore(positions);
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(2));
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()),
              UnorderedElementsAreArray({G(P("app.log.1"), 3, 6, "o3"),
                                         G(P("app.log"), 1, 0, "n1")}));
  EXPECT_EQ(notices_.Count("vanished"), 0u);
}

TEST_P(TailerBasicTest, RestoreOfAFileThatIsGone) {
  Append(P("old.log"), "x\n");
  std::vector<TailPosition> positions;
  {
    TestSink sink;
    FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(1));
    AckAll(tailer, sink.records());
    positions = tailer.CommittedPositions();
    tailer.Stop();
  }
  // old.log stays open (same inode cannot be reused) but leaves the glob.
  std::filesystem::rename(P("old.log"), P("old.gone"));
  Append(P("new.log"), "n1\n");
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  tailer.Restore(positions);
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(1));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().vanished == 1; }));
  tailer.Stop();
  EXPECT_TRUE(notices_.Has("vanished", P("old.log")));
  EXPECT_THAT(Gots(sink.records()), ElementsAre(G(P("new.log"), 1, 0, "n1")));
  const std::vector<TailPosition> now = tailer.CommittedPositions();
  ASSERT_THAT(now, SizeIs(1));
  EXPECT_EQ(now[0].path, P("new.log"));
}

TEST_P(TailerBasicTest, RestoreOfATruncatedOrRewrittenFileStartsAtZero) {
  Append(P("short.log"), "s1\ns2\ns3\n");
  Append(P("rewritten.log"), "r1\n");
  std::vector<TailPosition> positions;
  {
    TestSink sink;
    FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
    ASSERT_TRUE(tailer.Start().ok());
    ASSERT_TRUE(sink.WaitFor(4));
    AckAll(tailer, sink.records());
    ASSERT_TRUE(Eventually([&] {
      uint64_t sum = 0;
      for (const TailPosition& p : tailer.CommittedPositions()) {
        if (p.fingerprint_bytes != p.offset) return false;
        sum += p.offset;
      }
      return sum == 12;
    }));
    positions = tailer.CommittedPositions();
    tailer.Stop();
  }
  // Same inodes: one shorter than the saved offset, one longer but with
  // different content (as after an inode reuse or a rewrite).
  std::filesystem::resize_file(P("short.log"), 0);
  Append(P("short.log"), "t1\n");
  WriteAt(P("rewritten.log"), 0, "q1\nq2\n");
  TestSink sink;
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  tailer.Restore(positions);
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(3));
  tailer.Stop();
  EXPECT_THAT(Gots(sink.records()),
              UnorderedElementsAreArray({G(P("short.log"), 1, 0, "t1"),
                                         G(P("rewritten.log"), 1, 0, "q1"),
                                         G(P("rewritten.log"), 2, 3, "q2")}));
  EXPECT_EQ(tailer.Stats().truncations, 2u);
}

TEST_P(TailerBasicTest, StopIsPromptWhenIdleWithALongPollInterval) {
  TailerOptions options = Options({P("*.log")});
  options.poll_interval = kForever;
  TestSink sink;
  FileTailer tailer(options, &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  Append(P("a.log"), "late\n");  // never seen: no inotify, no poll
  const auto start = std::chrono::steady_clock::now();
  tailer.Stop();
  tailer.Stop();  // idempotent
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_P(TailerBasicTest, StopWhilePushBlocksAndBackpressure) {
  std::string data;
  for (int i = 1; i <= 100; ++i) absl::StrAppend(&data, "line-", i, "\n");
  Append(P("a.log"), data);
  TestSink sink(/*capacity=*/2);
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(2));
  // Reading waits for room: nothing more is admitted, the file is behind.
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind > 0; }));
  EXPECT_EQ(sink.size(), 2u);
  sink.Release(1);
  ASSERT_TRUE(sink.WaitFor(3));
  AckAll(tailer, sink.records());
  // The pipeline stops: the blocked Push returns false, Stop returns.
  sink.Close();
  const auto start = std::chrono::steady_clock::now();
  tailer.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(sink.size(), 3u);
  EXPECT_EQ(tailer.Stats().lines, 3u);
  const std::vector<TailPosition> positions = tailer.CommittedPositions();
  ASSERT_THAT(positions, SizeIs(1));
  EXPECT_EQ(positions[0].line, 3u);
  EXPECT_EQ(positions[0].offset, 21u);
}

TEST_P(TailerBasicTest, BytesBehindFallsToZero) {
  std::string data;
  for (int i = 0; i < 10; ++i) data += "123456789\n";
  Append(P("a.log"), data);
  TestSink sink(/*capacity=*/1);
  FileTailer tailer(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(tailer.Start().ok());
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(tailer.Stats().bytes_behind, 100u);
  EXPECT_EQ(tailer.Stats().files_open, 1u);
  sink.Release(100);
  ASSERT_TRUE(sink.WaitFor(10));
  ASSERT_TRUE(Eventually([&] { return tailer.Stats().bytes_behind == 0; }));
  tailer.Stop();
}

TEST_P(TailerBasicTest, StartValidatesOptions) {
  TestSink sink;
  FileTailer no_globs(TailerOptions{}, &sink, notices_.Fn());
  EXPECT_EQ(no_globs.Start().code(), absl::StatusCode::kInvalidArgument);
  TailerOptions bad = Options({P("*.log"), ""});
  bad.max_line_bytes = 0;
  FileTailer bad_tailer(bad, &sink, notices_.Fn());
  const absl::Status s = bad_tailer.Start();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(SV(s.message())),
              ::testing::HasSubstr("max_line_bytes"));
  FileTailer twice(Options({P("*.log")}), &sink, notices_.Fn());
  ASSERT_TRUE(twice.Start().ok());
  EXPECT_EQ(twice.Start().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace invariantd
