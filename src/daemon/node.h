// Node: one mycel daemon, wired. Owns start and stop order.
//
// Create() takes the state directory's lock (one daemon per state dir),
// loads or creates the identity, opens the example store, the checkpointer
// and the trainer (which keeps the federation's state, when the node takes
// part in one, and resumes both weights and that state from the newest valid
// checkpoint), then Start() starts the trainer,
// the peering layer and the control API. Shutdown() runs the one order: stop
// accepting control RPCs, stop gossip rounds and the peer server, stop the
// trainer between two steps and write a final checkpoint, close the store.
// Members are declared in dependency order so destruction runs in reverse.
//
// Thread-safety: the request methods (GetStatus through AddExamples,
// AcceptPending) are called concurrently by the control server's and the
// dashboard's threads; they touch the model only through the Trainer.
//
// Node speaks in its own types and those of the modules below it: the
// control API's generated messages are translated in ControlService
// (daemon/control_service.h), so this header pulls in no generated code.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "config/config.h"
#include "data/example_store.h"
#include "data/history.h"
#include "data/importers.h"
#include "peer/discovery.h"
#include "peer/gossip.h"
#include "train/trainer.h"

namespace mycel {
namespace crypto { class Identity; }
namespace train { class Checkpointer; class PausePolicy; class ResourcePolicy; }
namespace metrics { class MetricsServer; }
namespace control { class ControlServer; }
class ControlService;
class Dashboard;

class Node {
 public:
  // How many examples the store holds, read after the call's own change.
  struct StoredCounts {
    int64_t train = 0;
    int64_t validation = 0;
  };

  // What `mycel status` shows.
  struct StatusSnapshot {
    train::TrainerStats trainer;
    StoredCounts stored;
    double uptime_s = 0;
    std::string node_name;
    std::string public_key;     // base64
    std::string version;
    std::string power_source;   // "battery" | "mains"
    std::string state_dir;
    std::string metrics_url;    // "" without an endpoint
    std::string ui_url;         // with the token; "" without a dashboard
    std::optional<peer::DiscoveryState> discovery;  // set when [node] discover is on
    // Set when the node takes part in peering.
    struct Peering {
      peer::GossipTotals totals;
      int32_t peers = 0;        // pinned, the list in force
      int32_t peers_connected = 0;
    };
    std::optional<Peering> peering;
  };

  enum class IngestPhase { kParsing, kStoring };
  // As control::IngestProgressFn: false when the client is gone (stop, store nothing).
  using IngestProgressFn = std::function<bool(IngestPhase phase, int64_t done, int64_t total)>;
  struct IngestRequest {
    std::string format;                // idx | csv | text | "" (guess)
    std::vector<int64_t> keep_labels;  // store only these labels (empty: all)
    std::string key;                   // idempotency key (empty: none)
  };
  struct IngestResult {
    data::AddResult added;
    StoredCounts stored;
  };

  struct PredictRequest {
    std::string text;            // a prompt (char_lm); wins over the rest
    int32_t generate = 0;        // char_lm continuation length, in [0, 10000]
    int32_t top_k = 0;           // 0: 3
    std::string format;          // of `files`
    int64_t index = 0;           // the example of `files` to predict
    std::vector<float> values;   // one example, when there are no files
  };
  struct PredictResult {
    struct Class {
      int64_t label = 0;
      double probability = 0;
      std::string name;          // [model] class_names[label], or ""
    };
    std::vector<Class> top;
    std::string continuation;
    int64_t true_label = -1;     // the file's label when predicting from a file
  };

  struct PeersSnapshot {
    std::vector<peer::PendingPeer> pending;
    peer::GossipTotals totals;
    std::vector<peer::PeerStatus> peers;
    bool trust = false;          // [federation] trust
  };

  struct DataSnapshot {
    data::DataSummary summary;
    StoredCounts stored;
  };

  struct ForgetResult {
    data::ForgetResult forgot;
    StoredCounts stored;
  };

  struct ReloadResult {
    int32_t peers = 0;           // pinned after the reload (0 without peering)
    std::string applied;         // what it applied, as logged
    std::string needs_restart;   // what changed but needs a restart ("" = nothing)
  };

  // One burst of `mycel ingest -` or of the public client. The views point
  // into the caller's request and must outlive the call.
  struct BurstExample {
    int64_t label = 0;
    absl::Span<const float> values;
    std::string_view text;
  };
  struct ExampleBurst {
    std::string format;                   // of `lines`: csv | text
    int64_t first_line = 0;               // the stream's number of lines[0] or examples[0]
    std::vector<std::string_view> lines;
    std::vector<BurstExample> examples;
  };
  struct LineRefusal {
    int64_t line = 0;
    std::string reason;
  };
  struct BurstResult {
    data::AddResult added;                // all zero when no line was good
    StoredCounts stored;
    std::vector<LineRefusal> refused;
  };

  static absl::StatusOr<std::unique_ptr<Node>> Create(const config::Config& config);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  absl::Status Start();
  // Idempotent; returns the final checkpoint's status.
  absl::Status Shutdown();

  StatusSnapshot GetStatus();
  // Persists the pause, then holds or resumes training; returns the state now.
  absl::StatusOr<std::string> SetPaused(bool paused);
  // All or nothing; `progress` (never empty) hears of each phase. The files
  // are freed once parsed, before the store is written.
  absl::StatusOr<IngestResult> Ingest(std::vector<data::NamedBlob> files, const IngestRequest& request,
                                      const IngestProgressFn& progress);
  absl::StatusOr<train::EvalResult> Eval(std::vector<data::NamedBlob> files, const std::string& format);
  absl::StatusOr<PredictResult> Predict(const PredictRequest& request, std::vector<data::NamedBlob> files);
  // The current model as TorchScript bytes.
  absl::StatusOr<std::string> Export();
  // nullopt for a node that takes no peers.
  std::optional<PeersSnapshot> GetPeers();
  // The newest `max_ingests` ingests (0: 100).
  absl::StatusOr<DataSnapshot> GetData(int32_t max_ingests);
  // Deletes what the filter names, durably, before returning.
  absl::StatusOr<ForgetResult> Forget(const data::ForgetFilter& filter);
  // SIGHUP and `mycel reload`: re-reads the config file the daemon started
  // from and applies its [policy], log level and [[peers]] without a
  // restart; what needs one is said in the log and the result. A config
  // that does not load, or pins this node's own key, is an error and the
  // running one stays.
  absl::StatusOr<ReloadResult> Reload();
  // Validation passes at or after `since_unix_s`, at most `limit` (0: 10000), the newest.
  absl::StatusOr<std::vector<data::HistoryEntry>> GetHistory(double since_unix_s, int64_t limit);
  // Bad lines refused one by one, the good ones stored in one transaction
  // before it returns.
  absl::StatusOr<BurstResult> AddExamples(const ExampleBurst& burst);

  // The dashboard's accept button: pins the pending peer with this key
  // fingerprint as `mycel peers accept` does (a drop-in file, then a
  // reload). Says what it did.
  absl::StatusOr<std::string> AcceptPending(const std::string& fingerprint);

 private:
  explicit Node(const config::Config& config);
  // Create's steps, in order.
  // Takes <state_dir>/myceld.lock: one daemon per state dir.
  absl::Status LockStateDir();
  // The example store (refusing a half-done repair) and the pause it keeps.
  absl::Status OpenStore();
  // The history of validation passes; without one the daemon still runs.
  void OpenHistory();
  // The trainer, with a federation when the node takes part in peering.
  absl::Status CreateTrainer();
  // The peering layer, over the trainer's federation and shared weights.
  absl::Status CreateGossip();
  // Start's optional endpoints: a failure is logged and the daemon trains on.
  void StartMetrics();
  void StartDashboard();
  void StartDiscovery();
  // A peer with this node's own key is an error naming where it is pinned.
  absl::Status CheckPeers(const std::vector<config::PeerOptions>& peers) const;
  // Applies a loaded, checked config (Reload).
  ReloadResult Apply(const config::Config& config);
  StoredCounts Stored() const;
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
  std::unique_ptr<train::Trainer> trainer_;
  std::unique_ptr<peer::Gossip> gossip_;
  // [node] discover (its State() says why when it cannot). Shutdown drops it
  // while a control RPC may still be reading it: guarded by discovery_mu_.
  std::mutex discovery_mu_;
  std::unique_ptr<peer::Discovery> discovery_;
  std::unique_ptr<ControlService> control_service_;     // the proto adapter the servers below call
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
