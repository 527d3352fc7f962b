// LoopbackHttpServer: a small HTTP server on a loopback address, served by
// libmicrohttpd from a thread of its own. The metrics endpoint
// ([node] metrics_listen) and the dashboard ([node] ui_listen) are both one.
//
// Loopback only: Start refuses other addresses, and a request whose Host
// header names anything but a loopback name is answered 403 before the
// handler sees it (a page of another site pointed at 127.0.0.1 by DNS
// rebinding still sends its own name). A handful of connections at a time,
// each with a short timeout, so a stuck client costs nothing. Request bodies
// are never read: what a request says is in its method, path, query and
// headers.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

struct MHD_Daemon;

namespace mycel::metrics {

// Whether an HTTP Host header names the loopback interface: 127.0.0.1,
// localhost or [::1], with or without a port.
bool IsLoopbackHost(std::string_view host);

struct HttpRequest {
  std::string method;                        // GET, HEAD, POST, ...
  std::string path;                          // without the query
  std::map<std::string, std::string> query;  // decoded ?k=v pairs
  std::map<std::string, std::string> headers;  // the ones the handler asks for, by lower-case name
};

struct HttpResponse {
  int code = 200;
  std::string body;
  std::string content_type = "text/plain; charset=utf-8";
  std::string allow;                         // the Allow header of a 405
  bool no_store = false;                     // Cache-Control: no-store
  std::vector<std::pair<std::string, std::string>> headers;  // any others
};

class LoopbackHttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // `listen`: "127.0.0.1:PORT", "localhost:PORT" or "[::1]:PORT"; port 0
  // picks a free one (port() tells which). `what` names the option in
  // errors ("metrics_listen"). `headers`: the request headers the handler
  // reads (lower case). `handle` runs on the server's thread and must be
  // thread-safe.
  static absl::StatusOr<std::unique_ptr<LoopbackHttpServer>> Start(const std::string& listen, const std::string& what,
                                                                   std::vector<std::string> headers, Handler handle);
  ~LoopbackHttpServer();  // stops serving; requests in flight finish first
  LoopbackHttpServer(const LoopbackHttpServer&) = delete;
  LoopbackHttpServer& operator=(const LoopbackHttpServer&) = delete;

  int port() const { return port_; }

 private:
  LoopbackHttpServer() = default;
  Handler handle_;
  std::vector<std::string> headers_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  friend struct HttpHandler;
};

}  // namespace mycel::metrics
