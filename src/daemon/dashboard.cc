#include "daemon/dashboard.h"

#include <google/protobuf/util/json_util.h>

#include <cstdlib>

#include "common/status.h"
#include "crypto/identity.h"
#include "daemon/dashboard_page.h"
#include "metrics/http_server.h"

namespace mycel {
namespace {

using metrics::HttpRequest;
using metrics::HttpResponse;

HttpResponse Text(int code, const std::string& body) {
  HttpResponse r;
  r.code = code;
  r.body = body + "\n";
  r.no_store = true;
  return r;
}

HttpResponse JsonReply(const std::string& body) {
  HttpResponse r;
  r.body = body;
  r.content_type = "application/json";
  r.no_store = true;
  return r;
}

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return "null";
  return out;
}

HttpResponse FromStatus(const absl::Status& s) {
  return Text(absl::IsInvalidArgument(s) || absl::IsNotFound(s) ? 400 : 503, std::string(s.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Dashboard>> Dashboard::Start(const std::string& listen, control::ControlHandler& node,
                                                            AcceptFn accept) {
  std::unique_ptr<Dashboard> d(new Dashboard());
  d->token_ = crypto::RandomHex(16);
  const std::string token = d->token_;
  const std::string page = kDashboardPage;
  auto handle = [&node, accept = std::move(accept), token, page](const HttpRequest& req) -> HttpResponse {
    const bool read = req.method == "GET" || req.method == "HEAD";
    if (req.path == "/" || req.path == "/api/state" || req.path == "/api/history") {
      if (!read) {
        HttpResponse r = Text(405, "GET only");
        r.allow = "GET, HEAD";
        return r;
      }
      if (req.path == "/") {
        HttpResponse r;
        r.body = page;
        r.content_type = "text/html; charset=utf-8";
        r.no_store = true;
        r.headers.push_back({"Content-Security-Policy",
                             "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"});
        return r;
      }
      if (req.path == "/api/state") {
        auto status = node.GetStatus();
        if (!status.ok()) return FromStatus(status.status());
        auto peers = node.GetPeers();
        return JsonReply("{\"status\":" + ToJson(*status) + ",\"peers\":" + (peers.ok() ? ToJson(*peers) : "null") +
                         "}");
      }
      control::HistoryRequest h;
      if (auto it = req.query.find("since"); it != req.query.end()) h.set_since_unix_s(std::atof(it->second.c_str()));
      h.set_limit(5000);
      auto history = node.GetHistory(h);
      if (!history.ok()) return FromStatus(history.status());
      return JsonReply(ToJson(*history));
    }
    if (req.path != "/api/pause" && req.path != "/api/resume" && req.path != "/api/accept") {
      return Text(404, "not found");
    }
    if (req.method != "POST") {
      HttpResponse r = Text(405, "POST only");
      r.allow = "POST";
      return r;
    }
    auto it = req.headers.find("x-mycel-token");
    if (it == req.headers.end() || !crypto::SameSecret(it->second, token)) {
      return Text(403, "a change needs this start's token (X-Mycel-Token), which the dashboard page carries");
    }
    if (req.path == "/api/accept") {
      auto who = req.query.find("who");
      if (who == req.query.end() || who->second.empty()) return Text(400, "accept needs ?who=KEY-FINGERPRINT");
      auto done = accept(who->second);
      if (!done.ok()) return FromStatus(done.status());
      return Text(200, *done);
    }
    auto paused = node.SetPaused(req.path == "/api/pause");
    if (!paused.ok()) return FromStatus(paused.status());
    return JsonReply(ToJson(*paused));
  };
  MYCEL_ASSIGN_OR_RETURN(d->http_, metrics::LoopbackHttpServer::Start(listen, "ui_listen", {"x-mycel-token"}, handle));
  return d;
}

Dashboard::~Dashboard() = default;

int Dashboard::port() const { return http_->port(); }

}  // namespace mycel
