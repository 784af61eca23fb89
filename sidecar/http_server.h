// The process's one HTTP server (civetweb is used only in http_server.cc).
//
// Routes are registered by the composition root before Start(): an exact
// path and a method ("*" matches any method, so a handler that answers 405
// itself -- HttpIngest -- sees every method). The server
//   - refuses a body whose Content-Length is over max_body_bytes with 413
//     without reading it, and stops reading a body without Content-Length
//     (chunked) after max_body_bytes + 1 bytes; in both cases the connection
//     is closed, so the rest is never read (civetweb's default error page is
//     used there, text/plain, because that is the only civetweb path that
//     closes the connection instead of draining the body);
//   - refuses request headers over max_header_bytes (civetweb's
//     max_request_size);
//   - answers 404 for an unknown path and 405 (with Allow) for a known path
//     with another method; 500 when a handler throws;
//   - copies the Authorization and Content-Type headers and the raw query
//     string into the HttpRequestView, and writes the handler's status,
//     headers (CR/LF are dropped from names and values) and body;
//   - serves no files and sends no CORS headers.
//
// Handlers run on civetweb's worker threads (Options::threads of them), so
// they must be thread-safe; at most `threads` requests run at once and
// further connections wait in a queue of `max_connections`.
//
// Stop() answers new requests 503, runs the stop hooks (e.g.
// HttpIngest::Shutdown, which releases requests waiting for
// `wait=processed`), waits up to stop_grace_ms for the requests in progress
// to write their responses, then stops civetweb (waking its accept loop so
// that this takes milliseconds rather than civetweb's 2 s poll quantum).
#ifndef INVARIANTD_SIDECAR_HTTP_SERVER_H_
#define INVARIANTD_SIDECAR_HTTP_SERVER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "ingest/http/http_ingest.h"
#include "sidecar/core/auth.h"

struct mg_context;
struct mg_connection;

namespace invariantd {

class Metrics;

// A response with `status` and the body {"error": error}.
HttpResponse JsonError(int status, std::string_view error);
// 401 (with WWW-Authenticate) or 403 for a refused bearer token:
// {"error":"unauthorized"|"forbidden","reason":"missing"|"invalid"|...}.
HttpResponse AuthError(const AuthDecision& d);

// The parameters of a query string ("a=1&b=x%20y"), URL-decoded, in order.
std::vector<std::pair<std::string, std::string>> ParseQueryString(
    std::string_view query);

using HttpHandler = std::function<HttpResponse(const HttpRequestView&)>;

class HttpServer {
 public:
  struct Options {
    // host:port; port 0 picks a free port (see port()).
    std::string listen = "127.0.0.1:9464";
    int threads = 4;
    size_t max_body_bytes = 8 << 20;
    size_t max_header_bytes = 16 << 10;
    // Accepted connections waiting for a free worker thread.
    int max_connections = 64;
    // Per-read timeout for a request's headers and body.
    int request_timeout_ms = 10000;
    bool keep_alive = true;
    // Stop() waits this long for requests in progress to write their
    // responses (after the stop hooks ran) before closing connections.
    int stop_grace_ms = 5000;
    // Called after every response with its status (e.g. Metrics::HttpRequest),
    // also for requests refused by the HTTP layer itself before any handler
    // (e.g. 400 for a request line or headers over max_header_bytes).
    std::function<void(int status)> on_response;
  };

  HttpServer();
  ~HttpServer();  // Stop()

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Registers `handler` for requests to exactly `path` with `method` ("*":
  // any); a path ending in "/*" matches every path below it (the handler
  // reads HttpRequestView::path). Only before Start(); a later call crashes.
  void Handle(std::string method, std::string path, HttpHandler handler);

  // Runs `hook` at the start of Stop(). Only before Start().
  void AddStopHook(std::function<void()> hook);

  // Binds and starts the worker threads. Fails (and leaves the server
  // stopped) when the address cannot be bound or an option is invalid.
  absl::Status Start(Options options);

  // Stops accepting, waits for requests in progress. Idempotent.
  void Stop();

  // The bound port (the actual one when listening on port 0); 0 when not
  // started.
  int port() const { return port_; }

 private:
  struct Route {
    std::string method;
    std::string path;
    HttpHandler handler;
  };

  static int OnRequest(mg_connection* conn, void* self);
  int Serve(mg_connection* conn);
  void Write(mg_connection* conn, bool head, const HttpResponse& response);
  // Connects to the listening socket once, so civetweb's accept loop wakes
  // up and sees the stop flag. Best effort.
  void WakeListener() const;

  Options options_;
  std::vector<Route> routes_;
  std::vector<std::function<void()>> stop_hooks_;
  mg_context* ctx_ = nullptr;
  std::atomic<bool> started_{false};
  int port_ = 0;

  std::mutex mu_;
  std::condition_variable idle_cv_;  // in_flight_ dropped to 0
  int in_flight_ = 0;                // guarded by mu_
  bool stopping_ = false;            // guarded by mu_
};

// --- the routes the composition root registers ---

// POST /v1/events -> ingest->Handle (every method is routed to it, so it
// answers 405 and counts it), and Shutdown() on Stop(). `ingest` must outlive
// the server.
void RegisterIngestRoute(HttpServer* server, HttpIngest* ingest);

// GET /metrics -> metrics->Exposition(), `text/plain; version=0.0.4`.
void RegisterMetricsRoute(HttpServer* server, const Metrics* metrics);

struct Readiness {
  bool ready = false;
  std::vector<std::string> reasons;  // why not ready (or notes when ready)
};

// GET /healthz -> 200 {"status":"ok"} while the process serves requests.
// GET /readyz -> 200 {"ready":true,...} or 503 {"ready":false,"reasons":[...]}
// from `readiness` (called per request, on a server thread).
void RegisterHealthRoutes(HttpServer* server,
                          std::function<Readiness()> readiness);

}  // namespace invariantd

#endif  // INVARIANTD_SIDECAR_HTTP_SERVER_H_
