#include "ingest/file/tailer.h"

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "ingest/line_reader.h"
#include "sidecar/core/event.h"
#include "sidecar/core/hash.h"
#include "sidecar/core/strings.h"
#include "sidecar/core/thread_priority.h"

namespace invariantd {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes at the head of a file whose hash identifies its content.
constexpr uint64_t kFingerprintBytes = 1024;
// read(2) size of the line reader.
constexpr size_t kReadChunk = 64 << 10;
// Bytes read from one file before the others get their turn.
constexpr uint64_t kSliceBytes = 4 << 20;
// Records handed to the pipeline at once (one lock, one wake-up).
constexpr size_t kBatchRecords = 256;

constexpr uint32_t kWatchMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM |
                                IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE |
                                IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

std::string ErrnoText(int err) { return std::strerror(err); }

// Hash of the first `n` bytes of `fd`; nullopt if it has fewer.
std::optional<uint64_t> Fingerprint(int fd, uint64_t n) {
  std::string buf(n, '\0');
  uint64_t got = 0;
  while (got < n) {
    const ssize_t r =
        ::pread(fd, buf.data() + got, n - got, static_cast<off_t>(got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    got += static_cast<uint64_t>(r);
  }
  return HashBytes(buf).lo;
}

// The directory part of a glob pattern ("." if none).
std::string DirPattern(const std::string& pattern) {
  const size_t slash = pattern.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return pattern.substr(0, slash);
}

bool HasGlobChars(std::string_view s) {
  return s.find_first_of("*?[") != std::string_view::npos;
}

// glob(3) matches; false on an error other than "no match".
bool Glob(const std::string& pattern, int flags,
          std::vector<std::string>* out) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), flags, nullptr, &g);
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out->emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  return rc == 0 || rc == GLOB_NOMATCH;
}

}  // namespace

struct FileTailer::OpenFile {
  uint64_t id = 0;
  std::string path;  // as matched when opened: the records' source
  int fd = -1;
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t offset = 0;      // start of the next undelivered line
  uint64_t line = 0;        // lines delivered before offset
  uint64_t skip_bytes = 0;  // unfinished over-long line: bytes seen so far
  uint64_t partial = 0;     // unfinished short line: bytes seen so far
  uint64_t fp_bytes = 0;
  uint64_t fp = 0;
  bool detached = false;  // no longer matched by the globs
  Clock::time_point last_growth;

  // Bytes of the file accounted for.
  uint64_t Seen() const { return offset + skip_bytes + partial; }
};

FileTailer::FileTailer(TailerOptions options, RecordSink* sink, NoticeFn notice)
    : options_(std::move(options)), sink_(sink), notice_(std::move(notice)) {}

FileTailer::~FileTailer() { Stop(); }

void FileTailer::Restore(const std::vector<TailPosition>& saved) {
  if (started_.load()) return;  // documented precondition: before Start
  std::lock_guard<std::mutex> l(mu_);
  for (const TailPosition& p : saved) saved_[FileKey(p.dev, p.ino)] = p;
}

absl::Status FileTailer::Start() {
  if (started_.exchange(true)) {
    return absl::FailedPreconditionError("file tailer already started");
  }
  std::string problems;
  if (options_.globs.empty()) problems += "no glob pattern; ";
  for (const std::string& g : options_.globs) {
    if (g.empty()) problems += "empty glob pattern; ";
  }
  if (options_.poll_interval.count() <= 0) {
    problems += "poll_interval must be positive; ";
  }
  if (options_.max_line_bytes == 0) problems += "max_line_bytes must be > 0; ";
  if (options_.rotated_grace.count() < 0) {
    problems += "rotated_grace must not be negative; ";
  }
  if (!problems.empty()) {
    started_.store(false);
    problems.resize(problems.size() - 2);
    return absl::InvalidArgumentError(AV(problems));
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    started_.store(false);
    return absl::ErrnoToStatus(errno, "eventfd");
  }
  if (options_.use_inotify) {
    inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0) inotify_errno_ = errno;
  }
  thread_ = std::thread([this] {
    NameThisThread("inv-tail");
    JoinViolationPath();  // sidecar/core/thread_priority.h
    Run();
  });
  return absl::OkStatus();
}

void FileTailer::Stop() {
  std::lock_guard<std::mutex> l(stop_mu_);
  stop_.store(true);
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  wake_fd_ = inotify_fd_ = -1;
}

std::vector<TailPosition> FileTailer::CommittedPositions() const {
  std::vector<TailPosition> out;
  {
    std::lock_guard<std::mutex> l(mu_);
    out.reserve(tracked_.size() + saved_.size());
    // A closed file's inode may have been reused by a file now open: the
    // open one wins.
    absl::flat_hash_set<FileKey> open_keys;
    for (const auto& [id, t] : tracked_) {
      if (!t.retired) open_keys.emplace(t.committed.dev, t.committed.ino);
    }
    for (const auto& [id, t] : tracked_) {
      if (t.retired &&
          open_keys.contains(FileKey(t.committed.dev, t.committed.ino))) {
        continue;
      }
      out.push_back(t.committed);
    }
    for (const auto& [key, p] : saved_) out.push_back(p);
  }
  std::sort(out.begin(), out.end(),
            [](const TailPosition& a, const TailPosition& b) {
              return std::tie(a.path, a.dev, a.ino, a.offset) <
                     std::tie(b.path, b.dev, b.ino, b.offset);
            });
  return out;
}

TailStats FileTailer::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  TailStats s = stats_;
  s.bytes_behind = 0;
  for (const auto& [id, t] : tracked_) {
    if (t.open) s.bytes_behind += t.behind;
  }
  return s;
}

void FileTailer::Processed(uint64_t ack_seq) { ProcessedBatch(&ack_seq, 1); }

void FileTailer::ProcessedBatch(const uint64_t* ack_seqs, size_t n) {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t id = 0;
  Tracked* tr = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t file_id = ack_seqs[i] >> kSeqBits;
    if (file_id != id || tr == nullptr) {
      if (tr != nullptr) Settle(id);
      id = file_id;
      auto t = tracked_.find(id);
      tr = t == tracked_.end() ? nullptr : &t->second;
      if (tr == nullptr) continue;
    }
    // Sequence numbers in in_flight are consecutive; one below its front
    // is a stale ack (the file was truncated since) or a duplicate.
    if (tr->in_flight.empty()) continue;
    const uint64_t local = ack_seqs[i] & kSeqMask;
    const uint64_t front = tr->in_flight.front().seq;
    if (local < front || local - front >= tr->in_flight.size()) continue;
    tr->in_flight[local - front].done = true;
  }
  if (tr != nullptr) Settle(id);
}

void FileTailer::Settle(uint64_t file_id) {
  auto t = tracked_.find(file_id);
  if (t == tracked_.end()) return;
  Tracked& tr = t->second;
  while (!tr.in_flight.empty() && tr.in_flight.front().done) {
    tr.committed.offset = tr.in_flight.front().end_offset;
    tr.committed.line = tr.in_flight.front().line;
    tr.in_flight.pop_front();
  }
  if (tr.retired && tr.in_flight.empty()) tracked_.erase(t);
}

uint64_t FileTailer::NewFileId() {
  std::lock_guard<std::mutex> l(mu_);
  // Ids live in the top bits of ack_seq; they wrap after 2^24 files, skipping
  // any still tracked.
  while (true) {
    const uint64_t id = next_file_id_;
    next_file_id_ = next_file_id_ + 1 == (uint64_t{1} << (64 - kSeqBits))
                        ? 1
                        : next_file_id_ + 1;
    if (!tracked_.contains(id)) return id;
  }
}

void FileTailer::Notice(std::string_view event, std::string_view path,
                        std::string_view detail) {
  if (notice_) notice_(event, path, detail);
}

void FileTailer::NoticeErrorOnce(const std::string& path,
                                 std::string_view detail) {
  if (errored_.insert(path).second) Notice("error", path, detail);
}

void FileTailer::ClearError(const std::string& path) { errored_.erase(path); }

void FileTailer::Run() {
  if (options_.use_inotify && inotify_fd_ < 0) {
    Notice("error", "",
           absl::StrCat("inotify unavailable (", ErrnoText(inotify_errno_),
                        "); polling only"));
  }
  bool first = true;
  bool full = true;
  Clock::time_point next_full = Clock::now();
  while (!stop_.load() && !sink_closed_) {
    if (full) {
      // Saved positions are resolved by the first complete expansion.
      if (Discover(first)) first = false;
      // Files created in a newly watched directory before its watch existed.
      if (UpdateWatches()) Discover(/*first=*/false);
      next_full = Clock::now() + options_.poll_interval;
    }
    const bool more = ReadAll();
    if (stop_.load() || sink_closed_) break;
    full = false;
    if (more) {
      if (inotify_fd_ >= 0 && DrainInotify()) full = true;
      if (Clock::now() >= next_full) full = true;
      continue;
    }
    // Sleep until the next poll, a detached file's grace ends, an inotify
    // event or Stop().
    Clock::time_point deadline = next_full;
    for (const auto& f : files_) {
      if (f->detached) {
        deadline = std::min(deadline, f->last_growth + options_.rotated_grace);
      }
    }
    const auto wait =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    const int timeout_ms = static_cast<int>(
        std::clamp<int64_t>(wait.count(), 0, std::numeric_limits<int>::max()));
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int rc = ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (rc > 0 && inotify_fd_ >= 0 && (fds[1].revents & POLLIN) != 0) {
      if (DrainInotify()) full = true;
    }
    if (Clock::now() >= next_full) full = true;
  }
  for (auto& f : files_) CloseFile(*f, /*forget=*/false);
  files_.clear();
}

bool FileTailer::Discover(bool first) {
  std::vector<std::string> paths;
  bool complete = true;  // every pattern expanded without error
  for (const std::string& pattern : options_.globs) {
    if (!Glob(pattern, 0, &paths)) {
      complete = false;
      NoticeErrorOnce(pattern, "glob failed; keeping the files already open");
    } else {
      ClearError(pattern);
    }
  }
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());

  absl::flat_hash_set<FileKey> matched;
  for (const std::string& path : paths) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) {
        complete = false;
        NoticeErrorOnce(path, absl::StrCat("stat: ", ErrnoText(errno)));
      }
      continue;
    }
    if (!S_ISREG(st.st_mode)) {
      NoticeErrorOnce(path, "not a regular file; ignored");
      continue;
    }
    FileKey key(st.st_dev, st.st_ino);
    matched.insert(key);
    auto known = std::find_if(files_.begin(), files_.end(), [&](auto& f) {
      return f->dev == key.first && f->ino == key.second;
    });
    if (known != files_.end()) {
      if ((*known)->detached) {
        (*known)->detached = false;
        Notice("opened", path, "matched by the globs again; continuing");
      }
      continue;
    }

    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
      NoticeErrorOnce(path, absl::StrCat("open: ", ErrnoText(errno)));
      continue;
    }
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      continue;
    }
    // The path may have been replaced between stat and open.
    key = FileKey(st.st_dev, st.st_ino);
    if (std::any_of(files_.begin(), files_.end(), [&](auto& f) {
          return f->dev == key.first && f->ino == key.second;
        })) {
      ::close(fd);
      continue;
    }
    matched.insert(key);
    ClearError(path);

    auto f = std::make_unique<OpenFile>();
    f->id = NewFileId();
    f->path = path;
    f->fd = fd;
    f->dev = key.first;
    f->ino = key.second;
    f->last_growth = Clock::now();

    std::optional<TailPosition> saved;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto s = saved_.find(key);
      if (s != saved_.end()) saved = s->second;
    }
    bool truncated = false;
    if (saved.has_value()) {
      const uint64_t size = static_cast<uint64_t>(st.st_size);
      bool same = size >= saved->offset;
      if (same && saved->fingerprint_bytes > 0) {
        same = Fingerprint(fd, saved->fingerprint_bytes) == saved->fingerprint;
      }
      if (same) {
        f->offset = saved->offset;
        f->line = saved->line;
        f->fp_bytes = saved->fingerprint_bytes;
        f->fp = saved->fingerprint;
        Notice("opened", path,
               absl::StrCat("resuming at offset ", f->offset, " after line ",
                            f->line));
      } else {
        truncated = true;
        Notice("truncated", path,
               absl::StrCat("shorter than, or different from, the saved "
                            "position (offset ",
                            saved->offset, "); reading from the start"));
      }
    } else {
      Notice("opened", path, "reading from offset 0");
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      saved_.erase(key);
      Tracked& t = tracked_[f->id];
      t.committed = TailPosition{path,    f->dev,      f->ino, f->offset,
                                 f->line, f->fp_bytes, f->fp};
      t.behind = static_cast<uint64_t>(st.st_size) -
                 std::min<uint64_t>(f->offset, st.st_size);
      ++stats_.files_open;
      if (truncated) ++stats_.truncations;
    }
    files_.push_back(std::move(f));
  }

  if (!complete) return false;  // an error is not a disappearance
  if (first) {
    std::vector<TailPosition> gone;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto it = saved_.begin(); it != saved_.end();) {
        if (matched.contains(it->first)) {
          ++it;
          continue;
        }
        gone.push_back(it->second);
        ++stats_.vanished;
        saved_.erase(it++);
      }
    }
    for (const TailPosition& p : gone) {
      Notice("vanished", p.path,
             absl::StrCat("saved file (inode ", p.ino,
                          ") is not among the glob matches; dropped"));
    }
  }
  for (auto& f : files_) {
    if (f->detached || matched.contains(FileKey(f->dev, f->ino))) continue;
    struct stat st;
    if (::stat(f->path.c_str(), &st) == 0 && st.st_dev == f->dev &&
        st.st_ino == f->ino) {
      continue;  // still there (raced with the glob)
    }
    f->detached = true;
    f->last_growth = Clock::now();
    const bool deleted = ::fstat(f->fd, &st) == 0 && st.st_nlink == 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      ++(deleted ? stats_.vanished : stats_.rotations);
    }
    if (deleted) {
      Notice("vanished", f->path, "deleted; reading it to its end");
    } else {
      Notice("rotated", f->path,
             "renamed or replaced; reading the old file to its end");
    }
  }
  return true;
}

bool FileTailer::ReadAll() {
  bool more = false;
  for (const bool detached : {true, false}) {
    for (auto& f : files_) {
      if (f->fd < 0 || f->detached != detached) continue;
      if (stop_.load() || sink_closed_) return false;
      bool close = false;
      if (ReadFile(*f, &close)) more = true;
      if (close) CloseFile(*f, /*forget=*/true);
    }
  }
  files_.erase(std::remove_if(files_.begin(), files_.end(),
                              [](auto& f) { return f->fd < 0; }),
               files_.end());
  return more;
}

bool FileTailer::ReadFile(OpenFile& f, bool* close) {
  struct stat st;
  if (::fstat(f.fd, &st) != 0) {
    NoticeErrorOnce(f.path, absl::StrCat("fstat: ", ErrnoText(errno)));
    return false;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < f.Seen()) {
    Restart(f, absl::StrCat("size ", size, " is below the read position ",
                            f.Seen(), " (copytruncate?); reading from 0"));
  } else if (size > f.Seen() && f.fp_bytes > 0 &&
             Fingerprint(f.fd, f.fp_bytes) != f.fp) {
    Restart(f, "the file's first bytes changed; reading from 0");
  }
  const bool grew = size > f.Seen();
  PassResult result = PassResult::kEnd;
  if (grew) {
    f.last_growth = Clock::now();
    result = Pass(f, /*final=*/false);
    UpdateFingerprint(f);
  }
  if (result == PassResult::kEnd && f.detached &&
      Clock::now() - f.last_growth >= options_.rotated_grace) {
    // Nothing can complete an unterminated last line any more.
    if (f.partial > 0 || f.skip_bytes > 0) result = Pass(f, /*final=*/true);
    if (result == PassResult::kEnd) *close = true;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    auto t = tracked_.find(f.id);
    if (t != tracked_.end()) {
      t->second.behind = size - std::min(size, f.offset);
    }
  }
  return result == PassResult::kBudget;
}

FileTailer::PassResult FileTailer::Pass(OpenFile& f, bool final) {
  const PassResult result = ReadLines(f, final);
  if (!Flush(f)) return PassResult::kStopped;
  return result;
}

FileTailer::PassResult FileTailer::ReadLines(OpenFile& f, bool final) {
  const uint64_t start = f.offset + f.skip_bytes;
  if (::lseek(f.fd, static_cast<off_t>(start), SEEK_SET) < 0) {
    NoticeErrorOnce(f.path, absl::StrCat("lseek: ", ErrnoText(errno)));
    return PassResult::kEnd;
  }
  LineReaderOptions ro;
  ro.max_line_bytes = options_.max_line_bytes;
  ro.read_chunk_bytes = kReadChunk;
  LineReader reader(f.fd, ro);
  f.partial = 0;
  uint64_t slice = 0;
  while (true) {
    if (stop_.load(std::memory_order_relaxed)) return PassResult::kStopped;
    absl::StatusOr<std::optional<Line>> next = reader.Next();
    if (!next.ok()) {
      NoticeErrorOnce(f.path, absl::StrCat("read: ", next.status().message()));
      return PassResult::kEnd;
    }
    if (!next->has_value()) return PassResult::kEnd;
    const Line& line = **next;
    // A shell the sink has finished with, when it has one: its buffers
    // take this line without an allocation.
    if (shells_.empty()) sink_->TakeRecycled(&shells_, kBatchRecords);
    Record r;
    if (!shells_.empty()) {
      r = std::move(shells_.back());
      shells_.pop_back();
      ClearForReuse(&r);
    }
    uint64_t consumed = 0;
    if (f.skip_bytes > 0) {
      // Continuation of an over-long line begun in an earlier pass.
      const uint64_t total = f.skip_bytes + line.length;
      if (line.no_newline && !final) {
        f.skip_bytes = total;
        return PassResult::kEnd;
      }
      r.too_long = true;
      r.length = total;
      consumed = total + (line.no_newline ? 0 : 1);
    } else {
      if (line.no_newline && !final) {
        (line.too_long ? f.skip_bytes : f.partial) = line.length;
        return PassResult::kEnd;
      }
      // Room for the decoder's padding, so the pipeline never reallocates.
      r.bytes.reserve(line.text.size() + kLinePadding);
      r.bytes.assign(line.text.data(), line.text.size());
      r.too_long = line.too_long;
      r.length = line.length;
      consumed = line.length + (line.no_newline ? 0 : 1);
    }
    r.source = f.path;
    r.stream = FileStreamId(f.dev, f.ino);  // this inode
    r.line = f.line + 1;
    r.offset = f.offset;
    f.offset += consumed;
    f.line += 1;
    f.skip_bytes = 0;
    batch_.push_back(std::move(r));
    batch_end_.push_back(f.offset);
    if (batch_.size() >= kBatchRecords && !Flush(f)) {
      return PassResult::kStopped;
    }
    slice += consumed;
    if (slice >= kSliceBytes) return PassResult::kBudget;
  }
}

bool FileTailer::Flush(OpenFile& f) {
  if (batch_.empty()) return true;
  const size_t n = batch_.size();
  uint64_t too_long = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    Tracked& t = tracked_[f.id];
    for (size_t i = 0; i < n; ++i) {
      Record& r = batch_[i];
      const uint64_t local = t.next_seq++;
      r.ack_seq = (f.id << kSeqBits) | local;
      r.acker = this;
      t.in_flight.push_back(InFlight{local, batch_end_[i], r.line, false});
      if (r.too_long) ++too_long;
    }
  }
  batch_end_.clear();
  // Records not admitted (the pipeline is stopping) stay registered: their
  // lines are never acknowledged, so the committed position stays before
  // them and a restart reads them again.
  const bool ok = sink_->PushAll(&batch_);
  const size_t admitted = n - batch_.size();
  batch_.clear();
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.lines += admitted;
    if (admitted == n) stats_.too_long += too_long;
  }
  if (!ok) sink_closed_ = true;
  return ok;
}

void FileTailer::Restart(OpenFile& f, std::string_view why) {
  Notice("truncated", f.path, why);
  f.offset = f.line = f.skip_bytes = f.partial = 0;
  f.fp_bytes = f.fp = 0;
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.truncations;
  Tracked& t = tracked_[f.id];
  t.committed.offset = t.committed.line = 0;
  t.committed.fingerprint_bytes = t.committed.fingerprint = 0;
  t.in_flight.clear();  // their acks no longer move the position
}

void FileTailer::UpdateFingerprint(OpenFile& f) {
  if (f.fp_bytes >= kFingerprintBytes || f.offset <= f.fp_bytes) return;
  const uint64_t n = std::min(f.offset, kFingerprintBytes);
  const std::optional<uint64_t> fp = Fingerprint(f.fd, n);
  if (!fp.has_value()) return;
  f.fp_bytes = n;
  f.fp = *fp;
  std::lock_guard<std::mutex> l(mu_);
  Tracked& t = tracked_[f.id];
  t.committed.fingerprint_bytes = n;
  t.committed.fingerprint = *fp;
}

void FileTailer::CloseFile(OpenFile& f, bool forget) {
  if (f.fd < 0) return;
  ::close(f.fd);
  f.fd = -1;
  std::lock_guard<std::mutex> l(mu_);
  --stats_.files_open;
  auto t = tracked_.find(f.id);
  if (t == tracked_.end()) return;
  t->second.open = false;
  t->second.behind = 0;
  if (forget) {
    t->second.retired = true;
    if (t->second.in_flight.empty()) tracked_.erase(t);
  }
}

bool FileTailer::UpdateWatches() {
  if (inotify_fd_ < 0) return false;
  bool added = false;
  std::vector<std::string> dirs;
  for (const std::string& pattern : options_.globs) {
    const std::string dir = DirPattern(pattern);
    if (!HasGlobChars(dir)) {
      dirs.push_back(dir);
    } else {
      Glob(dir, GLOB_ONLYDIR, &dirs);
    }
  }
  for (const std::string& dir : dirs) {
    if (watched_dirs_.contains(dir)) continue;
    const int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(), kWatchMask);
    if (wd < 0) {
      if (errno != ENOENT && errno != ENOTDIR) {
        NoticeErrorOnce(dir,
                        absl::StrCat("inotify_add_watch: ", ErrnoText(errno),
                                     "; this directory is polled"));
      }
      continue;
    }
    watched_dirs_.insert(dir);
    watch_paths_[wd] = dir;
    added = true;
  }
  return added;
}

bool FileTailer::DrainInotify() {
  alignas(inotify_event) char buf[16 * 1024];
  bool structural = false;
  while (true) {
    const ssize_t n = ::read(inotify_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t at = 0;
    while (at + sizeof(inotify_event) <= static_cast<size_t>(n)) {
      inotify_event ev;
      std::memcpy(&ev, buf + at, sizeof ev);
      at += sizeof ev + ev.len;
      if ((ev.mask & ~(IN_MODIFY | IN_CLOSE_WRITE | IN_ISDIR)) != 0) {
        structural = true;
      }
      if ((ev.mask & IN_IGNORED) != 0) {
        auto it = watch_paths_.find(ev.wd);
        if (it != watch_paths_.end()) {
          watched_dirs_.erase(it->second);
          watch_paths_.erase(it);
        }
      }
    }
  }
  return structural;
}

}  // namespace invariantd
