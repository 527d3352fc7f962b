#include "metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include <microhttpd.h>

#include "common/logging.h"
#include "metrics/exposition.h"

namespace mycel::metrics {

bool IsLoopbackHost(std::string_view host) {
  // Strip ":port" (after the bracket for IPv6).
  std::string_view name = host;
  if (!name.empty() && name.front() == '[') {
    const size_t close = name.find(']');
    if (close == std::string_view::npos) return false;
    const std::string_view rest = name.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    name = name.substr(0, close + 1);
  } else if (const size_t colon = name.find(':'); colon != std::string_view::npos) {
    name = name.substr(0, colon);
  }
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!lower.empty() && lower.back() == '.') lower.pop_back();  // "localhost." is the same name
  return lower == "127.0.0.1" || lower == "localhost" || lower == "[::1]";
}

struct Handler {
  // libmicrohttpd's own errors go to our log, not raw to stderr.
  static void Log(void* /*cls*/, const char* fmt, va_list ap) {
    char buf[512];
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    std::string line(buf);
    while (!line.empty() && line.back() == '\n') line.pop_back();
    Logger("metrics")->warn("{}", line);
  }

  static MHD_Result Reply(MHD_Connection* connection, unsigned int code, const std::string& body,
                          const char* content_type) {
    MHD_Response* response =
        MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    MHD_Result r = MHD_queue_response(connection, code, response);
    MHD_destroy_response(response);
    return r;
  }

  static MHD_Result Access(void* cls, MHD_Connection* connection, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                           void** /*con_cls*/) {
    auto* server = static_cast<MetricsServer*>(cls);
    const bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    const bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get && !head) {
      *upload_data_size = 0;  // any body is ignored
      return Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n", "text/plain");
    }
    // A browser on a page of any site can be pointed at 127.0.0.1 by DNS
    // rebinding; it still sends the site's name as Host, so only loopback
    // names are answered. Non-browser scrapers send the address they used.
    const char* host = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (host != nullptr && !IsLoopbackHost(host)) {
      return Reply(connection, MHD_HTTP_FORBIDDEN,
                   "Host must be a loopback name (127.0.0.1, localhost or [::1]), not " + std::string(host) + "\n",
                   "text/plain");
    }
    if (std::strcmp(url, "/metrics") != 0) {
      return Reply(connection, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", "text/plain");
    }
    return Reply(connection, MHD_HTTP_OK, server->render_(), kContentType);
  }
};

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                   std::function<std::string()> render) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("metrics_listen: not host:port: " + listen);
  const std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    return absl::InvalidArgumentError("metrics_listen: bad port in " + listen);
  }
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("metrics_listen: bad port in " + listen);

  sockaddr_in v4{};
  sockaddr_in6 v6{};
  const sockaddr* addr = nullptr;
  unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
  if (host == "127.0.0.1" || host == "localhost") {
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(port));
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr = reinterpret_cast<const sockaddr*>(&v4);
  } else if (host == "[::1]") {
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(port));
    v6.sin6_addr = in6addr_loopback;
    addr = reinterpret_cast<const sockaddr*>(&v6);
    flags |= MHD_USE_IPv6;
  } else {
    return absl::InvalidArgumentError("metrics_listen: " + listen + " is not a loopback address");
  }

  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->render_ = std::move(render);
  server->daemon_ = MHD_start_daemon(flags, static_cast<uint16_t>(port), nullptr, nullptr, &Handler::Access,
                                     // The logger first: libmicrohttpd warns at every start otherwise.
                                     server.get(), MHD_OPTION_EXTERNAL_LOGGER, &Handler::Log, nullptr,
                                     MHD_OPTION_SOCK_ADDR, addr,
                                     MHD_OPTION_CONNECTION_LIMIT, 8u,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError("metrics_listen: cannot listen on " + listen +
                                  " (address in use, or not permitted)");
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : port;
  return server;
}

MetricsServer::~MetricsServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace mycel::metrics
