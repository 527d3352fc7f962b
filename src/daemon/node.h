// Node: one mycel daemon, wired. Owns start and stop order.
//
// Create() takes the state directory's lock (one daemon per state dir),
// loads or creates the identity, opens the example store, the checkpointer,
// the federation state and the trainer (which resumes weights and federation
// state from the newest valid checkpoint), then Start() starts the trainer,
// the peering layer and the control API. Shutdown() runs the one order: stop
// accepting control RPCs, stop gossip rounds and the peer server, stop the
// trainer between two steps and write a final checkpoint, close the store. Members are declared in dependency order
// so destruction runs in reverse.
//
// Thread-safety: the ControlHandler methods are called concurrently by the
// control server; they touch the model only through the Trainer.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "config/config.h"
#include "control/control_server.h"

namespace mycel {
namespace crypto { class Identity; }
namespace data { class ExampleStore; class History; }
namespace train { class Checkpointer; class PausePolicy; class ResourcePolicy; class Trainer; }
namespace peer { class Gossip; }
namespace metrics { class MetricsServer; }
class Dashboard;
class FederationState;

class Node : public control::ControlHandler {
 public:
  static absl::StatusOr<std::unique_ptr<Node>> Create(const config::Config& config);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  absl::Status Start();
  // SIGHUP and `mycel reload` (ControlHandler::Reload): re-reads the config
  // file the daemon started from and applies its [policy], log level and
  // [[peers]] without a restart; what needs one is said in the log and the
  // reply. A config that does not load, or pins this node's own key, is an
  // error and the running one stays.
  // Idempotent; returns the final checkpoint's status.
  absl::Status Shutdown();

  // control::ControlHandler
  absl::StatusOr<control::StatusReply> GetStatus() override;
  absl::StatusOr<control::PauseReply> SetPaused(bool paused) override;
  absl::StatusOr<control::IngestReply> Ingest(const std::vector<control::UploadedFile>& files,
                                              const control::IngestOptions& options,
                                              const control::IngestProgressFn& progress) override;
  absl::StatusOr<control::EvalReply> Eval(const std::vector<control::UploadedFile>& files,
                                          const std::string& format) override;
  absl::StatusOr<control::PredictReply> Predict(const control::PredictRequest& request,
                                                const std::vector<control::UploadedFile>& files) override;
  absl::StatusOr<std::string> Export() override;
  absl::StatusOr<control::PeersReply> GetPeers() override;
  absl::StatusOr<control::DataReply> GetData(const control::DataRequest& request) override;
  absl::StatusOr<control::ForgetReply> Forget(const control::ForgetRequest& request) override;
  absl::StatusOr<control::ReloadReply> Reload() override;
  absl::StatusOr<control::HistoryReply> GetHistory(const control::HistoryRequest& request) override;
  absl::StatusOr<control::BurstAck> AddExamples(const control::ExampleBurst& burst) override;

  // The dashboard's accept button: pins the pending peer with this key
  // fingerprint as `mycel peers accept` does (a drop-in file, then a
  // reload). Says what it did.
  absl::StatusOr<std::string> AcceptPending(const std::string& fingerprint);

 private:
  explicit Node(const config::Config& config);
  // A peer with this node's own key is an error naming where it is pinned.
  absl::Status CheckPeers(const std::vector<config::PeerOptions>& peers) const;
  // Applies a loaded, checked config (Reload).
  control::ReloadReply Apply(const config::Config& config);
  // The Prometheus text of GET /metrics (metrics server thread).
  std::string MetricsText();
  // "http://127.0.0.1:PORT/metrics", or "" without an endpoint. Any thread.
  std::string MetricsUrl() const;
  // "http://127.0.0.1:PORT/#TOKEN" (the token only `with_token`), or ""
  // without a dashboard. Any thread once Start has returned.
  std::string UiUrl(bool with_token = true) const;
  // Records each validation pass the trainer makes into history_ (its own
  // thread, between Start and Shutdown: it polls the trainer's stats).
  void RecordHistory();

  config::Config config_;                                // as started; Reload applies changes elsewhere
  std::mutex reload_mu_;                                 // one reload at a time (SIGHUP, control RPC)
  double started_at_ = 0;
  int lock_fd_ = -1;                                    // flock on <state_dir>/myceld.lock
  std::unique_ptr<crypto::Identity> identity_;
  std::unique_ptr<data::ExampleStore> store_;
  std::unique_ptr<train::Checkpointer> checkpointer_;
  std::unique_ptr<train::PausePolicy> pause_;
  std::unique_ptr<train::ResourcePolicy> policy_;       // pause + power + hours + idle
  std::unique_ptr<FederationState> federation_;         // null without pinned peers
  std::unique_ptr<train::Trainer> trainer_;
  std::unique_ptr<peer::Gossip> gossip_;
  std::unique_ptr<control::ControlServer> control_;
  std::unique_ptr<metrics::MetricsServer> metrics_;
  std::atomic<int> metrics_port_{0};                     // bound port; 0 while there is no endpoint
  std::unique_ptr<Dashboard> dashboard_;                 // [node] ui_listen
  std::atomic<int> ui_port_{0};
  std::atomic<bool> gossip_when_held_{true};             // [policy], reloadable
  std::unique_ptr<data::History> history_;               // null if <state_dir>/history.db cannot be made
  std::thread history_thread_;
  std::mutex history_mu_;
  std::condition_variable history_cv_;
  bool history_stop_ = false;                            // guarded by history_mu_
  bool shut_down_ = false;
};

}  // namespace mycel
