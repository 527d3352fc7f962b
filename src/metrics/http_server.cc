#include "metrics/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <vector>

#include <microhttpd.h>

#include "common/logging.h"

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

struct HttpHandler {
  // libmicrohttpd's own errors go to our log, not raw to stderr.
  static void Log(void* /*cls*/, const char* fmt, va_list ap) {
    char buf[512];
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    std::string line(buf);
    while (!line.empty() && line.back() == '\n') line.pop_back();
    Logger("http")->warn("{}", line);
  }

  static MHD_Result Reply(MHD_Connection* connection, const HttpResponse& r) {
    MHD_Response* response =
        MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
    if (!r.allow.empty()) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, r.allow.c_str());
    if (r.no_store) MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (const auto& [name, value] : r.headers) MHD_add_response_header(response, name.c_str(), value.c_str());
    // No other site may frame the page, sniff its types or read its referrer.
    MHD_add_response_header(response, "X-Frame-Options", "DENY");
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(response, "Referrer-Policy", "no-referrer");
    MHD_Result result = MHD_queue_response(connection, static_cast<unsigned int>(r.code), response);
    MHD_destroy_response(response);
    return result;
  }

  static MHD_Result Query(void* cls, MHD_ValueKind, const char* key, const char* value) {
    (*static_cast<std::map<std::string, std::string>*>(cls))[key] = value ? value : "";
    return MHD_YES;
  }

  static MHD_Result Access(void* cls, MHD_Connection* connection, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                           void** /*con_cls*/) {
    auto* server = static_cast<LoopbackHttpServer*>(cls);
    *upload_data_size = 0;  // bodies are never read
    const char* host = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (host != nullptr && !IsLoopbackHost(host)) {
      HttpResponse r;
      r.code = MHD_HTTP_FORBIDDEN;
      r.body = "Host must be a loopback name (127.0.0.1, localhost or [::1]), not " + std::string(host) + "\n";
      return Reply(connection, r);
    }
    HttpRequest req;
    req.method = method;
    req.path = url;
    MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &Query, &req.query);
    for (const std::string& name : server->headers_) {
      if (const char* v = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, name.c_str())) {
        req.headers[name] = v;
      }
    }
    return Reply(connection, server->handle_(req));
  }
};

absl::StatusOr<std::unique_ptr<LoopbackHttpServer>> LoopbackHttpServer::Start(const std::string& listen,
                                                                               const std::string& what,
                                                                               std::vector<std::string> headers,
                                                                               Handler handle) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError(what + ": not host:port: " + listen);
  const std::string host = listen.substr(0, colon);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(what + ": bad port in " + listen);
  }
  if (port < 0 || port > 65535) return absl::InvalidArgumentError(what + ": bad port in " + listen);

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
    return absl::InvalidArgumentError(what + ": " + listen + " is not a loopback address");
  }

  std::unique_ptr<LoopbackHttpServer> server(new LoopbackHttpServer());
  server->handle_ = std::move(handle);
  server->headers_ = std::move(headers);
  server->daemon_ = MHD_start_daemon(flags, static_cast<uint16_t>(port), nullptr, nullptr, &HttpHandler::Access,
                                     // The logger first: libmicrohttpd warns at every start otherwise.
                                     server.get(), MHD_OPTION_EXTERNAL_LOGGER, &HttpHandler::Log, nullptr,
                                     MHD_OPTION_SOCK_ADDR, addr,
                                     MHD_OPTION_CONNECTION_LIMIT, 8u,
                                     MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    return absl::UnavailableError(what + ": cannot listen on " + listen + " (address in use, or not permitted)");
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : port;
  return server;
}

LoopbackHttpServer::~LoopbackHttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace mycel::metrics
