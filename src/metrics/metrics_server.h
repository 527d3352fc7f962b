// MetricsServer: the optional Prometheus endpoint, `GET /metrics` over HTTP
// on a loopback address ([node] metrics_listen), served by libmicrohttpd
// from a thread of its own. Every scrape calls `render` for the text.
//
// Loopback only: the config refuses other addresses, and Start checks again,
// so what the metrics tell about this laptop never leaves it.
// Other paths get 404, other methods 405; a handful of connections at a
// time, each with a short timeout, so a stuck scraper costs nothing.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct MHD_Daemon;

namespace mycel::metrics {

// Whether an HTTP Host header names the loopback interface: 127.0.0.1,
// localhost or [::1], with or without a port. Requests naming anything else
// are refused (403), which stops DNS rebinding from a browser.
bool IsLoopbackHost(std::string_view host);

class MetricsServer {
 public:
  // `listen`: "127.0.0.1:PORT", "localhost:PORT" or "[::1]:PORT"; port 0
  // picks a free one (port() tells which). `render` is called on the
  // server's thread and must be thread-safe.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              std::function<std::string()> render);
  ~MetricsServer();  // stops serving; in-flight scrapes finish first
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::function<std::string()> render_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;

  friend struct Handler;
};

}  // namespace mycel::metrics
