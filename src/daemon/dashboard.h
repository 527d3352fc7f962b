// Dashboard: the local web page of [node] ui_listen. One page shows what the
// daemon is doing — state and reason, steps, rate and learning rate,
// accuracy and loss against time from the history (data/history.h), peers
// with trust, traffic, last exchange and refusals, pending peers with an
// accept button — and pauses or resumes it.
//
// Served by metrics::LoopbackHttpServer: loopback only, and a request whose
// Host is not a loopback name is refused (DNS rebinding). Requests that
// change anything are POSTs that must carry the token this start made
// (X-Mycel-Token). The token is in no page: `mycel status` prints the
// address with it as the fragment (http://127.0.0.1:PORT/#TOKEN), and only
// the owner reaches the control socket, so another user of the machine can
// read the page but change nothing. Another site's page can neither learn
// the token nor send the header without a CORS preflight, never allowed.
//
//   GET  /                  the page (it takes the token from its address's fragment)
//   GET  /api/state         {"status": StatusReply, "peers": PeersReply} as JSON
//   GET  /api/history       HistoryReply as JSON (?since=UNIX_S)
//   POST /api/pause, /api/resume
//   POST /api/accept?who=KEY-FINGERPRINT
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "control/control_server.h"

namespace mycel {
namespace metrics { class LoopbackHttpServer; }

class Dashboard {
 public:
  // Pins the pending peer with this key fingerprint; says what it did.
  using AcceptFn = std::function<absl::StatusOr<std::string>(const std::string& fingerprint)>;

  // `node` (the node's ControlService) answers the reads and pause/resume;
  // it must outlive the dashboard.
  static absl::StatusOr<std::unique_ptr<Dashboard>> Start(const std::string& listen, control::ControlHandler& node,
                                                          AcceptFn accept);
  ~Dashboard();  // stops serving; requests in flight finish first
  Dashboard(const Dashboard&) = delete;
  Dashboard& operator=(const Dashboard&) = delete;

  int port() const;
  const std::string& token() const { return token_; }

 private:
  Dashboard() = default;
  std::string token_;
  std::unique_ptr<metrics::LoopbackHttpServer> http_;
};

}  // namespace mycel
