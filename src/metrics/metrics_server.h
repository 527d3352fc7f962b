// MetricsServer: the optional Prometheus endpoint, `GET /metrics` over HTTP
// on a loopback address ([node] metrics_listen), served by libmicrohttpd
// from a thread of its own. Every scrape calls `render` for the text.
//
// Loopback only: the config refuses other addresses, and Start checks again,
// so what the metrics tell about this laptop never leaves it.
// Other paths get 404, other methods 405 (metrics/http_server.h serves it).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "metrics/http_server.h"

namespace mycel::metrics {

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

  int port() const;

 private:
  MetricsServer() = default;
  std::unique_ptr<LoopbackHttpServer> http_;
};

}  // namespace mycel::metrics
