#include "metrics/metrics_server.h"

#include "metrics/exposition.h"

namespace mycel::metrics {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                   std::function<std::string()> render) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  auto http = LoopbackHttpServer::Start(listen, "metrics_listen", {}, [render = std::move(render)](const HttpRequest& req) {
    HttpResponse r;
    if (req.method != "GET" && req.method != "HEAD") {
      r.code = 405;
      r.allow = "GET, HEAD";
      r.body = "only GET /metrics\n";
    } else if (req.path != "/metrics") {
      r.code = 404;
      r.body = "not found: try /metrics\n";
    } else {
      r.body = render();
      r.content_type = kContentType;
    }
    return r;
  });
  if (!http.ok()) return http.status();
  server->http_ = std::move(http).value();
  return server;
}

MetricsServer::~MetricsServer() = default;

int MetricsServer::port() const { return http_->port(); }

}  // namespace mycel::metrics
