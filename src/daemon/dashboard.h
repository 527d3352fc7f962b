// Dashboard: the local web page of [node] ui_listen. One page shows what the
// daemon is doing — state and reason, steps, rate and learning rate,
// accuracy and loss against time from the history (data/history.h), peers
// with trust, traffic, last exchange and refusals, pending peers with an
// accept button — and pauses or resumes it.
//
// Served by metrics::LoopbackHttpServer: loopback only, and a request whose
// Host is not a loopback name is refused (DNS rebinding). Requests that
// change anything are POSTs that must carry the token this start made
// (X-Mycel-Token: the page has it; another site's page cannot read it, and
// cannot send the header without a CORS preflight we never allow), so no
// other site can pause this daemon or pin a peer through the browser.
//
//   GET  /                  the page (the token in a <meta>)
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

  // `node` answers the reads and pause/resume; it must outlive the dashboard.
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
