// App: the composition root of `invariantd run`. Wires the services up in
// order and stops them in reverse:
//
//   start: rules -> data dir -> metrics -> pipeline (+ violation output)
//          -> HTTP server (ingest, /metrics, /healthz, /readyz)
//          -> sources (file tail, Kafka) -> housekeeping thread
//   stop:  sources -> HTTP server -> pipeline drain (every admitted record
//          evaluated and acknowledged) -> final position checkpoint
//
// Thread-safety: Start/Stop/Run from the main thread; RequestStop is
// async-signal-agnostic (call it from the signal-waiting thread).
#ifndef INVARIANTD_SIDECAR_APP_H_
#define INVARIANTD_SIDECAR_APP_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "sidecar/config.h"

namespace invariantd {

class App {
 public:
  explicit App(RunConfig config);
  ~App();

  // Starts every service; on error, stops what was started and returns it.
  absl::Status Start();
  // Blocks until RequestStop, then stops everything. Returns the exit code.
  int Run();
  void RequestStop();
  // Recompiles the rule files and swaps the new rule set in (state of
  // unchanged rules carries over). An invalid rule file keeps the running
  // rules; every diagnostic is logged and a reload failure counted.
  // Thread-safe; serialized.
  bool Reload(std::string_view why);
  // The HTTP port actually bound (useful with port 0).
  int port() const;

 private:
  struct Services;
  void Housekeeping();
  // A fingerprint of the rule files (paths, sizes, modification times):
  // when it changes, the rules are reloaded.
  std::string RulesFingerprint() const;
  void Checkpoint();
  // Applies the evidence retention (age and size) with its own connection.
  void PruneEvidence();
  std::chrono::steady_clock::time_point last_prune_;
  void StopAll();

  RunConfig config_;
  std::unique_ptr<Services> s_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_requested_ = false;
  std::thread housekeeping_;
  std::mutex reload_mu_;
  std::string rules_fingerprint_;
};

// `invariantd run`: blocks signals, starts the App, waits for SIGTERM or
// SIGINT (stop) and SIGHUP, and returns the exit status.
int RunDaemon(const RunConfig& config);

// `invariantd run --check-config`: checks what a start checks before it
// touches the data directory or the network -- the configuration, every
// rule file, the token files and the off-loopback token requirement, the
// paging sinks and the webhook secret file -- and prints what would run
// (never a token) on `out`. Returns 0, or 2 with every problem on `err`.
// Writes nothing, so it can run against a read-only or absent data_dir.
int CheckRunConfig(const RunConfig& config, std::ostream& out,
                   std::ostream& err);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_APP_H_
