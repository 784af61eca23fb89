#include "sidecar/http_server.h"

#include <civetweb.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "exporters/prometheus/metrics.h"
#include "sidecar/core/json_text.h"
#include "sidecar/core/sanitize.h"
#include "sidecar/core/strings.h"

namespace invariantd {
namespace {

void InitCivetwebOnce() {
  static std::once_flag once;
  std::call_once(once, [] { mg_init_library(0); });
}

// Set while a handler sends its own error through civetweb, which then
// calls http_error for it too.
thread_local bool sending_own_error = false;

int LogMessage(const mg_connection*, const char* message) {
  std::string text = SanitizeText(message == nullptr ? "" : message, 512);
  std::fprintf(stderr, "invariantd: http: %s\n", text.c_str());
  return 1;  // logged here; civetweb logs nothing itself
}

std::string_view OrEmpty(const char* s) {
  return s == nullptr ? std::string_view() : std::string_view(s);
}

bool HasLineBreak(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos ||
         s.find('\0') != std::string_view::npos;
}

// Headers the server writes itself.
bool IsReservedHeader(std::string_view name) {
  for (std::string_view reserved :
       {"content-length", "connection", "transfer-encoding", "date"}) {
    if (absl::EqualsIgnoreCase(AV(name), AV(reserved))) return true;
  }
  return false;
}

}  // namespace

HttpResponse JsonError(int status, std::string_view error) {
  HttpResponse r;
  r.status = status;
  r.body = absl::StrCat("{\"error\":", JsonString(error), "}");
  return r;
}

HttpResponse AuthError(const AuthDecision& d) {
  HttpResponse r;
  r.status = d.status;
  if (d.status == 401) {
    r.headers.emplace_back("WWW-Authenticate",
                           d.reason == "missing"
                               ? std::string("Bearer")
                               : std::string("Bearer error=\"invalid_token\""));
  }
  r.body = absl::StrCat(
      "{\"error\":", JsonString(d.status == 401 ? "unauthorized" : "forbidden"),
      ",\"reason\":", JsonString(d.reason), "}");
  return r;
}

HttpServer::HttpServer() = default;

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(std::string method, std::string path,
                        HttpHandler handler) {
  if (started_.load()) {
    std::fprintf(stderr, "HttpServer::Handle called after Start\n");
    std::abort();
  }
  routes_.push_back({std::move(method), std::move(path), std::move(handler)});
}

void HttpServer::AddStopHook(std::function<void()> hook) {
  if (started_.load()) {
    std::fprintf(stderr, "HttpServer::AddStopHook called after Start\n");
    std::abort();
  }
  stop_hooks_.push_back(std::move(hook));
}

absl::Status HttpServer::Start(Options options) {
  if (started_.load()) {
    return absl::FailedPreconditionError("HTTP server already started");
  }
  if (options.threads < 1 || options.max_connections < 1 ||
      options.max_header_bytes < 1024 || options.request_timeout_ms < 1) {
    return absl::InvalidArgumentError(
        "HTTP server: threads and max_connections must be >= 1, "
        "max_header_bytes >= 1024, request_timeout_ms >= 1");
  }
  if (options.listen.empty() ||
      options.listen.find_first_of(",\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP server: bad listen address \"",
                     SanitizeText(options.listen, 256), "\""));
  }
  options_ = std::move(options);
  InitCivetwebOnce();

  const std::string threads = absl::StrCat(options_.threads);
  const std::string header_bytes = absl::StrCat(options_.max_header_bytes);
  const std::string queue = absl::StrCat(options_.max_connections);
  const std::string timeout = absl::StrCat(options_.request_timeout_ms);
  const char* config[] = {"listening_ports",
                          options_.listen.c_str(),
                          "num_threads",
                          threads.c_str(),
                          "max_request_size",
                          header_bytes.c_str(),
                          "connection_queue",
                          queue.c_str(),
                          "request_timeout_ms",
                          timeout.c_str(),
                          "enable_keep_alive",
                          options_.keep_alive ? "yes" : "no",
                          "keep_alive_timeout_ms",
                          "5000",
                          "enable_directory_listing",
                          "no",
                          "access_control_allow_origin",
                          "",
                          "access_control_allow_methods",
                          "",
                          "access_control_allow_headers",
                          "",
                          "enable_auth_domain_check",
                          "no",
                          "decode_query_string",
                          "no",
                          nullptr};

  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  // Requests civetweb refuses itself (malformed, headers too large): counted
  // like every other response; its own error page is sent.
  callbacks.http_error = [](mg_connection* conn, int status,
                            const char*) -> int {
    auto* self =
        static_cast<HttpServer*>(mg_get_user_data(mg_get_context(conn)));
    if (self != nullptr && !sending_own_error && self->options_.on_response) {
      self->options_.on_response(status);
    }
    return 1;
  };
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = this;
  init.configuration_options = config;
  char error_text[256] = {};
  unsigned error_code = 0;
  mg_error_data error{};
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);

  // Set before starting: worker threads read routes_ and options_ without a
  // lock, and Handle() refuses changes from now on.
  started_.store(true);
  ctx_ = mg_start2(&init, &error);
  if (ctx_ == nullptr) {
    started_.store(false);
    return absl::UnavailableError(absl::StrCat(
        "HTTP server: cannot listen on ", SanitizeText(options_.listen, 256),
        ": ", SanitizeText(error_text, 256)));
  }
  mg_set_request_handler(ctx_, "/", &HttpServer::OnRequest, this);

  mg_server_port ports[4] = {};
  int n = mg_get_server_ports(ctx_, 4, ports);
  port_ = n > 0 ? ports[0].port : 0;
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (ctx_ == nullptr) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  for (auto& hook : stop_hooks_) hook();
  {
    // civetweb refuses to write once its stop flag is set: let the requests
    // in progress (released by the hooks) write their responses first.
    std::unique_lock<std::mutex> l(mu_);
    idle_cv_.wait_for(l, std::chrono::milliseconds(options_.stop_grace_ms),
                      [&] { return in_flight_ == 0; });
  }
  // mg_stop waits for civetweb's accept loop, which polls with a 2 s
  // quantum; connecting to the listener wakes it as soon as the stop flag is
  // set.
  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;
  std::thread stopper([&, ctx = ctx_] {
    mg_stop(ctx);
    std::lock_guard<std::mutex> l(done_mu);
    done = true;
    done_cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> l(done_mu);
    while (!done_cv.wait_for(l, std::chrono::milliseconds(20),
                             [&] { return done; })) {
      l.unlock();
      WakeListener();
      l.lock();
    }
  }
  stopper.join();
  ctx_ = nullptr;
  port_ = 0;
  started_.store(false);
  std::lock_guard<std::mutex> l(mu_);
  stopping_ = false;
}

void HttpServer::WakeListener() const {
  // host:port, [v6]:port or port alone; a wildcard host is reached on
  // loopback.
  std::string_view listen = options_.listen;
  std::string host = "127.0.0.1";
  size_t colon = listen.rfind(':');
  if (!listen.empty() && listen.front() == '[') {
    size_t close = listen.find(']');
    host = std::string(listen.substr(1, close == std::string_view::npos
                                            ? std::string_view::npos
                                            : close - 1));
    if (host == "::") host = "::1";
  } else if (colon != std::string_view::npos) {
    host = std::string(listen.substr(0, colon));
    if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = absl::StrCat(port_);
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return;
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    (void)connect(fd, res->ai_addr, res->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(res);
}

int HttpServer::OnRequest(mg_connection* conn, void* self) {
  return static_cast<HttpServer*>(self)->Serve(conn);
}

int HttpServer::Serve(mg_connection* conn) {
  const mg_request_info* ri = mg_get_request_info(conn);
  const std::string_view method = OrEmpty(ri->request_method);
  const std::string_view path = OrEmpty(ri->local_uri);
  const bool head = method == "HEAD";

  bool stopping;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping = stopping_;
    if (!stopping) ++in_flight_;
  }
  if (stopping) {
    HttpResponse r = JsonError(503, "stopping");
    r.headers.emplace_back("Retry-After", "1");
    Write(conn, head, r);
    if (options_.on_response) options_.on_response(503);
    return 503;
  }
  absl::Cleanup done = [this] {
    std::lock_guard<std::mutex> l(mu_);
    if (--in_flight_ == 0) idle_cv_.notify_all();
  };

  auto finish = [&](const HttpResponse& response) {
    Write(conn, head, response);
    if (options_.on_response) options_.on_response(response.status);
    return response.status;
  };
  // Answers 413 and closes the connection, so the rest of the body is never
  // read (see the header).
  auto too_large = [&]() {
    std::string message =
        absl::StrCat("{\"error\":\"body_too_large\",\"max_body_bytes\":",
                     options_.max_body_bytes, "}");
    sending_own_error = true;  // counted here, not by http_error
    mg_send_http_error(conn, 413, "%s", message.c_str());
    sending_own_error = false;
    if (options_.on_response) options_.on_response(413);
    return 413;
  };

  const Route* route = nullptr;
  std::vector<std::string> allowed;
  for (const Route& r : routes_) {
    // "/a/b/*" matches every path below /a/b/.
    const bool prefix = r.path.size() >= 2 && r.path.ends_with("/*");
    if (prefix ? !path.starts_with(
                     std::string_view(r.path).substr(0, r.path.size() - 1))
               : r.path != path) {
      continue;
    }
    if (r.method == "*" || r.method == method) {
      route = &r;
      break;
    }
    allowed.push_back(r.method);
  }
  if (route == nullptr) {
    if (allowed.empty()) return finish(JsonError(404, "not_found"));
    HttpResponse r = JsonError(405, "method_not_allowed");
    r.headers.emplace_back("Allow", absl::StrJoin(allowed, ", "));
    return finish(r);
  }

  const size_t max = options_.max_body_bytes;
  if (ri->content_length > 0 &&
      static_cast<unsigned long long>(ri->content_length) > max) {
    return too_large();
  }
  std::string body;
  if (ri->content_length > 0) {
    body.resize(static_cast<size_t>(ri->content_length));
  }
  size_t have = 0;
  while (have <= max) {
    if (have == body.size()) {
      // Unknown length (chunked): grow, up to max + 1.
      body.resize(std::min(max + 1, std::max<size_t>(body.size() * 2, 16384)));
    }
    int n = mg_read(conn, body.data() + have, body.size() - have);
    if (n < 0) {
      return finish(JsonError(400, "body_read_failed"));
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  if (have > max) return too_large();
  body.resize(have);

  HttpRequestView request;
  request.method = method;
  request.path = path;
  request.authorization = OrEmpty(mg_get_header(conn, "Authorization"));
  request.content_type = OrEmpty(mg_get_header(conn, "Content-Type"));
  request.query = OrEmpty(ri->query_string);
  request.body = body;

  HttpResponse response;
  try {
    response = route->handler(request);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "invariantd: http: handler for %s failed: %s\n",
                 SanitizeText(path, 256).c_str(),
                 SanitizeText(e.what(), 512).c_str());
    response = JsonError(500, "internal_error");
  } catch (...) {
    response = JsonError(500, "internal_error");
  }
  if (response.status < 100 || response.status > 599) {
    response = JsonError(500, "internal_error");
  }
  return finish(response);
}

void HttpServer::Write(mg_connection* conn, bool head,
                       const HttpResponse& response) {
  mg_response_header_start(conn, response.status);
  bool has_content_type = false;
  for (const auto& [name, value] : response.headers) {
    if (name.empty() || HasLineBreak(name) || HasLineBreak(value) ||
        name.find(':') != std::string::npos || IsReservedHeader(name)) {
      continue;
    }
    if (absl::EqualsIgnoreCase(AV(name), "content-type")) {
      has_content_type = true;
    }
    mg_response_header_add(conn, name.c_str(), value.c_str(),
                           static_cast<int>(value.size()));
  }
  if (!has_content_type) {
    mg_response_header_add(conn, "Content-Type", "application/json", -1);
  }
  mg_response_header_add(conn, "Cache-Control", "no-store", -1);
  mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
  const std::string length = absl::StrCat(response.body.size());
  mg_response_header_add(conn, "Content-Length", length.c_str(),
                         static_cast<int>(length.size()));
  mg_response_header_send(conn);
  if (!head && !response.body.empty()) {
    mg_write(conn, response.body.data(), response.body.size());
  }
}

std::vector<std::pair<std::string, std::string>> ParseQueryString(
    std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  auto decode = [](std::string_view in) {
    std::string buf(in.size() + 1, '\0');
    const int n = mg_url_decode(in.data(), static_cast<int>(in.size()),
                                buf.data(), static_cast<int>(buf.size()),
                                /*is_form_url_encoded=*/1);
    buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return buf;
  };
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view()
                                          : query.substr(amp + 1);
    if (part.empty()) continue;
    const size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      out.emplace_back(decode(part), std::string());
    } else {
      out.emplace_back(decode(part.substr(0, eq)), decode(part.substr(eq + 1)));
    }
  }
  return out;
}

void RegisterIngestRoute(HttpServer* server, HttpIngest* ingest) {
  server->Handle("*", "/v1/events", [ingest](const HttpRequestView& request) {
    return ingest->Handle(request);
  });
  server->AddStopHook([ingest] { ingest->Shutdown(); });
}

void RegisterMetricsRoute(HttpServer* server, const Metrics* metrics) {
  server->Handle("GET", "/metrics", [metrics](const HttpRequestView&) {
    HttpResponse r;
    r.status = 200;
    r.headers.emplace_back("Content-Type", std::string(Metrics::kContentType));
    r.body = metrics->Exposition();
    return r;
  });
}

void RegisterHealthRoutes(HttpServer* server,
                          std::function<Readiness()> readiness) {
  server->Handle("GET", "/healthz", [](const HttpRequestView&) {
    return HttpResponse{200, {}, "{\"status\":\"ok\"}"};
  });
  server->Handle(
      "GET", "/readyz",
      [readiness = std::move(readiness)](const HttpRequestView&) {
        Readiness ready = readiness ? readiness() : Readiness{true, {}};
        std::string body = absl::StrCat(
            "{\"ready\":", ready.ready ? "true" : "false", ",\"reasons\":[");
        for (size_t i = 0; i < ready.reasons.size(); ++i) {
          if (i > 0) body.push_back(',');
          AppendJsonString(ready.reasons[i], &body);
        }
        body.append("]}");
        return HttpResponse{ready.ready ? 200 : 503, {}, std::move(body)};
      });
}

}  // namespace invariantd
