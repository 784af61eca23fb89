#include "exporters/wal_checkpointer.h"

#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "exporters/sqlite.h"
#include "sidecar/core/thread_priority.h"

namespace invariantd {

absl::StatusOr<std::unique_ptr<WalCheckpointer>> WalCheckpointer::Start(
    sqlite3* writer, const std::string& path, int frames) {
  // Its own connection: a checkpoint must not use the writer's, which
  // another thread commits on. It takes no busy timeout: a PASSIVE
  // checkpoint never waits, and one that finds the database busy is simply
  // retried at the next commit.
  absl::StatusOr<sqlite3*> own = sqlite_internal::OpenDatabase(
      path, /*read_only=*/false, /*busy_timeout_ms=*/0, "WAL checkpointer");
  if (!own.ok()) return own.status();
  if (absl::Status s = sqlite_internal::Exec(*own, "PRAGMA synchronous=FULL");
      !s.ok()) {
    sqlite3_close_v2(*own);
    return s;
  }
  std::unique_ptr<WalCheckpointer> c(
      new WalCheckpointer(writer, *own, std::max(frames, 1)));
  // Replaces the writer's autocheckpoint (itself a WAL hook).
  sqlite3_wal_hook(writer, &WalCheckpointer::Hook, c.get());
  c->thread_ = std::thread([p = c.get()] { p->Run(); });
  return c;
}

WalCheckpointer::WalCheckpointer(sqlite3* writer, sqlite3* own, int frames)
    : writer_(writer), own_(own), frames_(frames) {}

WalCheckpointer::~WalCheckpointer() {
  // The writer's thread is not committing now (the owner destroys this
  // before closing it), so the hook can be swapped back safely.
  sqlite3_wal_autocheckpoint(writer_, 1000);  // SQLite's default
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  sqlite3_close_v2(own_);
}

int WalCheckpointer::Hook(void* self, sqlite3* /*db*/, const char* /*name*/,
                          int frames) {
  auto* c = static_cast<WalCheckpointer*>(self);
  if (frames < c->frames_) return SQLITE_OK;
  bool wake = false;
  {
    std::lock_guard<std::mutex> l(c->mu_);
    wake = !c->wanted_;
    c->wanted_ = true;
  }
  if (wake) c->cv_.notify_one();
  return SQLITE_OK;
}

void WalCheckpointer::Run() {
  NameThisThread("inv-walckpt");
  LowerThisThreadPriority();  // never ahead of the commits it serves
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || wanted_; });
    if (stop_) return;
    wanted_ = false;
    running_ = true;
    l.unlock();
    int log = 0;
    int done = 0;
    const int rc = sqlite3_wal_checkpoint_v2(
        own_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    l.lock();
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      ++stats_.errors;
    } else if (rc == SQLITE_OK && done == log) {
      ++stats_.checkpoints;
    } else {
      ++stats_.partial;
    }
    running_ = false;
    cv_.notify_all();
  }
}

WalCheckpointerStats WalCheckpointer::Stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void WalCheckpointer::WaitIdleForTest() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return stop_ || (!wanted_ && !running_); });
}

}  // namespace invariantd
