#include "daemon/node.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/coding.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/version.h"
#include "crypto/identity.h"
#include "daemon/dashboard.h"
#include "daemon/node_metrics.h"
#include "data/example_store.h"
#include "data/history.h"
#include "data/importers.h"
#include "federation/federation.h"
#include "metrics/metrics_server.h"
#include "peer/gossip.h"
#include "train/checkpointer.h"
#include "train/policy.h"
#include "train/resource_policy.h"
#include "train/trainer.h"

namespace mycel {

// The federation's state, checkpointed atomically with the weights: the
// trainer calls Init with the model's initial shared weights, then Load
// during restore, and Save at every checkpoint.
class FederationState : public train::CheckpointParticipant {
 public:
  // The merge options are the [federation] section's base, read and checked once.
  FederationState(const config::Config& config) : options_(config.federation) {
    for (const auto& p : config.peers) peer_keys_.push_back(p.public_key);
  }
  absl::Status Init(std::vector<float> initial_shared) override {
    const int n = static_cast<int>(peer_keys_.size());
    MYCEL_ASSIGN_OR_RETURN(fed_, federation::Federation::Create(options_, std::move(initial_shared), n, n));
    fed_->SetPeers(peer_keys_);  // before Load: a snapshot's mirrors follow their neighbour's key
    return absl::OkStatus();
  }
  std::string Save(bool final) override { return fed_->Serialize(final); }
  absl::Status Load(const std::string& bytes) override { return fed_->Restore(bytes); }
  void RolledBack() override { fed_->ResetCorrection(); }
  federation::Federation& fed() { return *fed_; }

 private:
  federation::FederationOptions options_;
  std::vector<std::string> peer_keys_;
  std::unique_ptr<federation::Federation> fed_;
};

namespace {
constexpr char kPausedKey[] = "paused";

train::ResourcePolicyOptions ResourceOptions(const config::PolicyOptions& p) {
  train::ResourcePolicyOptions o;
  o.pause_on_battery = p.on_battery == "pause";
  o.idle_only = p.idle_only;
  o.active_hours = p.active_hours;
  o.power_supply_dir = p.power_supply_dir;
  return o;
}

bool SameTraining(const config::TrainingOptions& a, const config::TrainingOptions& b) {
  auto tie = [](const config::TrainingOptions& o) {
    return std::tie(o.optimizer, o.lr, o.lr_decay_steps, o.lr_final, o.momentum, o.batch_size, o.validation_fraction,
                    o.replay_fraction, o.max_examples, o.checkpoint_interval_s, o.eval_interval_s,
                    o.max_eval_examples, o.rest, o.rest_patience, o.rest_max_s, o.drift_guard_drop,
                    o.drift_guard_window);
  };
  return tie(a) == tie(b);
}

bool SameFederation(const config::FederationSection& a, const config::FederationSection& b) {
  auto schedule = [](const config::FederationSection& o) {
    return std::tie(o.round_interval_s, o.local_steps, o.trust_every, o.trust_examples, o.pull_timeout_s,
                    o.max_backoff_s);
  };
  return static_cast<const federation::FederationOptions&>(a) == b && schedule(a) == schedule(b);
}

std::vector<data::NamedBlob> ToBlobs(const std::vector<control::UploadedFile>& files) {
  std::vector<data::NamedBlob> blobs;
  blobs.reserve(files.size());
  for (const auto& f : files) blobs.push_back({f.name, f.bytes});
  return blobs;
}
}  // namespace

Node::Node(const config::Config& config) : config_(config) {}

Node::~Node() {
  (void)Shutdown();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const config::Config& config) {
  std::unique_ptr<Node> node(new Node(config));
  node->started_at_ = Clock::Real()->MonotonicSeconds();
  const std::string& dir = config.node.state_dir;
  MYCEL_RETURN_IF_ERROR(Env::Default()->CreateDirs(dir, 0700));

  std::string lock_path = dir + "/myceld.lock";
  node->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (node->lock_fd_ < 0) return ErrnoStatus(errno, "open", lock_path);
  if (::flock(node->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError("another myceld is already running on state dir " + dir);
  }

  MYCEL_ASSIGN_OR_RETURN(node->identity_, crypto::Identity::LoadOrCreate(config.IdentityPath()));
  Logger("node")->info("node '{}' identity {} ({})", config.node.name, node->identity_->PublicKeyBase64(),
                       node->identity_->Fingerprint());

  data::ExampleStoreOptions so;
  so.path = config.StorePath();
  so.max_examples = config.training.max_examples;
  so.validation_fraction = config.training.validation_fraction;
  so.seed = config.model.seed ^ std::random_device{}();
  if (::access(so.path.c_str(), F_OK) != 0 && ::access((so.path + ".repair-tmp").c_str(), F_OK) == 0) {
    // Killed between the repair's two renames: starting would create an
    // empty store while the salvaged one waits beside it.
    return absl::FailedPreconditionError(absl::StrCat(
        so.path, " is missing but ", so.path, ".repair-tmp exists: a `mycel repair` was interrupted; "
        "run `mycel repair` again to finish it"));
  }
  auto store = data::ExampleStore::Open(so);
  if (absl::IsDataLoss(store.status())) {
    return absl::DataLossError(absl::StrCat(store.status().message(),
                                            "; `mycel repair` salvages what can be read into a new store"));
  }
  MYCEL_ASSIGN_OR_RETURN(node->store_, std::move(store));

  MYCEL_ASSIGN_OR_RETURN(auto paused, node->store_->GetMeta(kPausedKey));
  node->pause_ = std::make_unique<train::PausePolicy>(paused && *paused == "1");
  node->policy_ = std::make_unique<train::ResourcePolicy>(ResourceOptions(config.policy), *node->pause_);

  train::CheckpointerOptions co;
  co.dir = config.CheckpointDir();
  MYCEL_ASSIGN_OR_RETURN(node->checkpointer_, train::Checkpointer::Open(co));

  train::TrainerOptions to;
  to.model = config.model;
  to.training = config.training;
  to.max_cpu_percent = config.policy.max_cpu_percent;
  to.threads = config.policy.threads;
  MYCEL_RETURN_IF_ERROR(node->CheckPeers(config.peers));
  // The history is a record: a damaged one is moved aside, and without one
  // the daemon still runs (`mycel history` then says why).
  {
    std::string moved;
    auto history = data::History::Open(config.HistoryPath(), &moved);
    if (!moved.empty()) Logger("node")->warn("history was unreadable, moved to {}; a new one starts", moved);
    if (history.ok()) {
      node->history_ = std::move(history).value();
    } else {
      Logger("node")->error("no history of validation passes: {}", history.status().message());
    }
  }
  // A node that listens, or dials out, takes part even before its first
  // neighbour is pinned (pairing adds one at a reload); it paces its
  // training only once it has one.
  if (!config.peers.empty() || !config.node.listen.empty() || config.node.dial_out) {
    node->federation_ = std::make_unique<FederationState>(config);
    to.participant = node->federation_.get();
    to.local_steps = config.peers.empty() ? 0 : config.federation.local_steps;
  }
  MYCEL_ASSIGN_OR_RETURN(node->trainer_,
                         train::Trainer::Create(to, *node->store_, *node->checkpointer_, *node->policy_));

  if (node->federation_) {
    // Trust is kept per layer of the shared model.
    std::vector<std::string> layer_names;
    std::vector<size_t> layer_sizes;
    for (auto& [name, size] : node->trainer_->shared_layers()) {
      layer_names.push_back(name);
      layer_sizes.push_back(size);
    }
    MYCEL_RETURN_IF_ERROR(node->federation_->fed().SetGroups(std::move(layer_names), layer_sizes));
    peer::GossipOptions go;
    go.node_name = config.node.name;
    go.listen = config.node.listen;
    go.dial_out = config.node.dial_out || config.node.listen.empty();
    go.fingerprint = node->trainer_->Stats().fingerprint;
    go.layout = node->trainer_->Stats().model_layout;
    go.federation = config.federation;
    go.peers = config.peers;
    // While training is held, rounds go on unless [policy] gossip_when_held = false.
    Node* self = node.get();
    self->gossip_when_held_ = config.policy.gossip_when_held;
    go.hold_rounds = [self] { return !self->gossip_when_held_.load() && !self->policy_->Decide().allowed; };
    train::Trainer* trainer = node->trainer_.get();
    const int64_t probe_examples = config.federation.trust_examples;
    go.probe_losses = [trainer, probe_examples](size_t count, const std::function<void(size_t, float*)>& make) {
      return trainer->ProbeLosses(probe_examples, count, make);
    };
    MYCEL_ASSIGN_OR_RETURN(
        node->gossip_,
        peer::Gossip::Create(go, *node->identity_, node->federation_->fed(),
                             [trainer](std::function<bool(std::vector<float>&, int64_t, double)> fn, bool opens_round,
                                        std::vector<float> drift) {
                               return trainer->WithSharedParameters(std::move(fn), opens_round, std::move(drift));
                             }));
  }
  return node;
}

absl::Status Node::Start() {
  trainer_->Start();
  if (gossip_) MYCEL_RETURN_IF_ERROR(gossip_->Start());
  if (!config_.node.metrics_listen.empty()) {
    // Optional: a taken port is logged, and the daemon goes on training.
    auto metrics = metrics::MetricsServer::Start(config_.node.metrics_listen, [this] { return MetricsText(); });
    if (metrics.ok()) {
      metrics_port_ = (*metrics)->port();  // scrapes may already read it: an atomic
      metrics_ = std::move(metrics).value();
      Logger("node")->info("metrics on {}", MetricsUrl());
    } else {
      Logger("node")->error("no metrics endpoint: {}", metrics.status().message());
    }
  }
  if (!config_.node.ui_listen.empty()) {
    // Optional too: without it the daemon trains on.
    auto ui = Dashboard::Start(config_.node.ui_listen, *this, [this](const std::string& fp) { return AcceptPending(fp); });
    if (ui.ok()) {
      ui_port_ = (*ui)->port();
      dashboard_ = std::move(ui).value();
      Logger("node")->info("dashboard on {} (`mycel status` prints its address with the token to change things)",
                           UiUrl(/*with_token=*/false));
    } else {
      Logger("node")->error("no dashboard: {}", ui.status().message());
    }
  }
  if (history_) history_thread_ = std::thread([this] { RecordHistory(); });
  // The control socket last: once it accepts, every endpoint is up (or its
  // failure logged), so `mycel status` right after start shows the
  // dashboard's address, and a test or script that waits for the socket
  // reads a complete start.
  control::ControlServerOptions co;
  co.socket_path = config_.SocketPath();
  MYCEL_ASSIGN_OR_RETURN(control_, control::ControlServer::Start(co, *this));
  auto stats = trainer_->Stats();
  Logger("node")->info("myceld running: {} model, {} parameters, {} examples stored{}", stats.model_kind,
                       stats.parameters, store_->Count(data::Split::kTrain) + store_->Count(data::Split::kValidation),
                       pause_->paused() ? ", paused by user" : "");
  return absl::OkStatus();
}

absl::Status Node::CheckPeers(const std::vector<config::PeerOptions>& peers) const {
  for (const auto& p : peers) {
    if (p.dials_in && config_.node.listen.empty()) {
      Logger("node")->warn("{}: [[peers]] '{}' dials in, but this node has no [node] listen: it can never call",
                           p.where, p.name);
    }
    if (p.public_key == identity_->public_key()) {
      return absl::InvalidArgumentError(p.where + ": [[peers]] '" + p.name + "' has this node's own key (" +
                                        identity_->Fingerprint() + "): a node is not its own neighbour");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<control::ReloadReply> Node::Reload() {
  std::lock_guard<std::mutex> lock(reload_mu_);
  // The file the daemon started from; with none, the default path, which may exist by now.
  const std::string path = config_.path.empty() ? config::DefaultConfigPath() : config_.path;
  absl::StatusOr<config::Config> fresh = config::LoadConfig(path);
  if (!fresh.ok() && absl::IsNotFound(fresh.status()) && config_.path.empty()) fresh = config::DefaultConfig();
  if (!fresh.ok()) return fresh.status();
  MYCEL_RETURN_IF_ERROR(CheckPeers(fresh->peers));
  Logger("node")->info("reloading {}", path);
  return Apply(*fresh);
}

control::ReloadReply Node::Apply(const config::Config& config) {
  control::ReloadReply reply;
  policy_->Reconfigure(ResourceOptions(config.policy));
  trainer_->SetMaxCpuPercent(config.policy.max_cpu_percent);
  trainer_->SetThreads(config.policy.threads);
  gossip_when_held_ = config.policy.gossip_when_held;
  trainer_->Wake("reload");
  (void)SetLogLevel(config.node.log_level);
  std::string applied = "[policy], log_level";
  if (gossip_) {
    gossip_->SetPeers(config.peers);  // from the next round on
    trainer_->SetLocalSteps(config.peers.empty() ? 0 : config_.federation.local_steps);
    applied += ", [[peers]] (" + std::to_string(config.peers.size()) + ")";
    reply.set_peers(static_cast<int32_t>(config.peers.size()));
  }
  // What a running daemon cannot change: said, not silently ignored.
  std::vector<std::string> restart;
  if (!gossip_ && !config.peers.empty()) {
    restart.push_back("the first [[peers]] of a node started without any, without [node] listen and without "
                      "[node] dial_out");
  }
  if (config.node.listen != config_.node.listen) restart.push_back("[node] listen");
  if (config.node.dial_out != config_.node.dial_out) restart.push_back("[node] dial_out");
  if (config.node.state_dir != config_.node.state_dir) restart.push_back("[node] state_dir");
  if (config.node.metrics_listen != config_.node.metrics_listen) restart.push_back("[node] metrics_listen");
  if (config.node.log_file != config_.node.log_file) restart.push_back("[node] log_file");
  if (config.node.log_max_bytes != config_.node.log_max_bytes ||
      config.node.log_max_files != config_.node.log_max_files) {
    restart.push_back("[node] log_max_bytes/log_max_files");
  }
  if (config.node.name != config_.node.name) restart.push_back("[node] name");
  if (!SameTraining(config.training, config_.training)) restart.push_back("[training]");
  if (!SameFederation(config.federation, config_.federation)) restart.push_back("[federation]");
  if (config.model.kind != config_.model.kind || config.model.hidden != config_.model.hidden ||
      config.model.seed != config_.model.seed || config.model.input_shape != config_.model.input_shape ||
      config.model.classes != config_.model.classes || config.model.path != config_.model.path) {
    restart.push_back("[model]");
  }
  reply.set_applied(applied);
  if (restart.empty()) {
    Logger("node")->info("reload: applied {}", applied);
  } else {
    std::string list;
    for (const auto& r : restart) list += (list.empty() ? "" : ", ") + r;
    reply.set_needs_restart(list);
    Logger("node")->warn("reload: applied {}; {} changed and take(s) effect at the next restart", applied, list);
  }
  return reply;
}

absl::Status Node::Shutdown() {
  if (shut_down_) return absl::OkStatus();
  shut_down_ = true;
  Logger("node")->info("shutting down");
  dashboard_.reset();                            // 0. no more pages, scrapes or history
  metrics_.reset();
  {
    std::lock_guard<std::mutex> lock(history_mu_);
    history_stop_ = true;
  }
  history_cv_.notify_all();
  if (history_thread_.joinable()) history_thread_.join();
  if (control_) control_->Shutdown();            // 1. no new control RPCs
  if (gossip_) gossip_->Stop();                  // 2. no more rounds; peer server stopped
  absl::Status s = trainer_ ? trainer_->Stop()   // 3. trainer stops between steps, final checkpoint
                            : absl::OkStatus();
  control_.reset();
  gossip_.reset();
  trainer_.reset();
  store_.reset();                                // 3. close the store
  Logger("node")->info("shutdown complete{}", s.ok() ? "" : std::string(": ") + std::string(s.message()));
  return s;
}

void Node::RecordHistory() {
  int64_t recorded = 0;  // validation passes recorded (the trainer counts from 0 at each start)
  bool warned = false;
  std::unique_lock<std::mutex> lock(history_mu_);
  while (!history_cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return history_stop_; })) {
    const train::TrainerStats st = trainer_->Stats();
    if (st.validations <= recorded) continue;
    recorded = st.validations;
    data::HistoryEntry e;
    e.unix_s = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    e.steps = st.steps;
    e.samples_trained = st.samples_trained;
    e.val_accuracy = st.val_accuracy;
    e.val_loss = st.val_loss;
    e.train_loss = st.train_loss;
    e.learning_rate = st.learning_rate;
    e.state = st.state;
    if (gossip_) {
      const peer::GossipTotals t = gossip_->Totals();
      e.rounds = t.rounds;
      e.bytes_sent = t.bytes_sent;
      e.bytes_received = t.bytes_received;
    }
    if (absl::Status s = history_->Record(e); !s.ok() && !warned) {
      warned = true;  // a full disk, say: logged once, training goes on
      Logger("node")->warn("validation pass not recorded in the history: {} (further failures not logged)",
                           s.message());
    }
  }
}

absl::StatusOr<control::HistoryReply> Node::GetHistory(const control::HistoryRequest& request) {
  if (!history_) return absl::UnavailableError("this daemon keeps no history: see its log at start");
  const int64_t limit = request.limit() > 0 ? std::min<int64_t>(request.limit(), data::History::kMaxRows) : 10000;
  MYCEL_ASSIGN_OR_RETURN(std::vector<data::HistoryEntry> passes, history_->Since(request.since_unix_s(), limit));
  control::HistoryReply r;
  for (const data::HistoryEntry& e : passes) {
    control::HistoryPass* p = r.add_passes();
    p->set_unix_s(e.unix_s);
    p->set_steps(e.steps);
    p->set_samples_trained(e.samples_trained);
    p->set_val_accuracy(e.val_accuracy);
    p->set_val_loss(e.val_loss);
    p->set_train_loss(e.train_loss);
    p->set_learning_rate(e.learning_rate);
    p->set_rounds(e.rounds);
    p->set_bytes_sent(e.bytes_sent);
    p->set_bytes_received(e.bytes_received);
    p->set_state(e.state);
  }
  return r;
}

absl::StatusOr<control::StatusReply> Node::GetStatus() {
  auto st = trainer_->Stats();
  control::StatusReply r;
  r.set_state(st.state);
  r.set_reason(st.reason);
  r.set_steps(st.steps);
  r.set_samples_trained(st.samples_trained);
  r.set_examples_train(store_->Count(data::Split::kTrain));
  r.set_examples_val(store_->Count(data::Split::kValidation));
  r.set_train_loss(st.train_loss);
  r.set_learning_rate(st.learning_rate);
  r.set_val_loss(st.val_loss);
  r.set_val_accuracy(st.val_accuracy);
  r.set_model_kind(st.model_kind);
  r.set_model_fingerprint(st.fingerprint);
  r.set_parameters(st.parameters);
  r.set_shared_parameters(st.shared_parameters);
  r.set_uptime_s(Clock::Real()->MonotonicSeconds() - started_at_);
  r.set_node_name(config_.node.name);
  r.set_public_key(identity_->PublicKeyBase64());
  r.set_steps_per_s(st.steps_per_s);
  r.set_validations_without_gain(st.validations_without_gain);
  r.set_best_val_loss(st.best_val_loss);
  r.set_rest_seconds(st.rest_s);
  r.set_rests(st.rests);
  r.set_last_wake(st.last_wake);
  r.set_version(kVersion);
  r.set_power_source(policy_->power() == train::PowerSource::kBattery ? "battery" : "mains");
  r.set_drift_rollbacks(st.drift_rollbacks);
  r.set_last_rollback(st.last_rollback);
  r.set_checkpoints_written(st.checkpoints_written);
  r.set_last_checkpoint_step(st.last_checkpoint_step);
  r.set_eval_examples(st.eval_examples);
  r.set_state_dir(config_.node.state_dir);
  r.set_metrics_url(MetricsUrl());
  r.set_ui_url(UiUrl());
  if (gossip_) {
    auto totals = gossip_->Totals();
    r.set_rounds(totals.rounds);
    r.set_bytes_sent(totals.bytes_sent);
    r.set_bytes_received(totals.bytes_received);
    r.set_listen_port(totals.listen_port);
    auto peers = gossip_->Peers();  // the list in force (SIGHUP may change it)
    int connected = 0;
    for (const auto& p : peers) connected += p.state == "connected";
    r.set_peers(static_cast<int32_t>(peers.size()));
    r.set_peers_connected(connected);
  }
  return r;
}

absl::StatusOr<control::PauseReply> Node::SetPaused(bool paused) {
  // Persist first: a pause must survive a restart until resumed.
  MYCEL_RETURN_IF_ERROR(store_->SetMeta(kPausedKey, paused ? "1" : "0"));
  pause_->SetPaused(paused);
  trainer_->Wake(paused ? "pause" : "resume");
  Logger("node")->info("{} by user", paused ? "paused" : "resumed");
  control::PauseReply r;
  r.set_state(paused ? "paused" : "training");
  return r;
}

namespace {

control::IngestReply ReplyOf(const data::AddResult& added, data::ExampleStore& store) {
  control::IngestReply r;
  r.set_offered(added.offered);
  r.set_stored(added.stored);
  r.set_evicted(added.evicted);
  r.set_train(added.train);
  r.set_validation(added.validation);
  r.set_replayed(added.replayed);
  r.set_duplicates(added.duplicates);
  r.set_examples_train(store.Count(data::Split::kTrain));
  r.set_examples_val(store.Count(data::Split::kValidation));
  return r;
}

}  // namespace

absl::StatusOr<control::IngestReply> Node::Ingest(const std::vector<control::UploadedFile>& files,
                                                  const control::IngestOptions& options,
                                                  const control::IngestProgressFn& progress) {
  MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(options.format));
  const std::vector<int64_t>& keep_labels = options.keep_labels;
  const absl::Status cancelled = absl::CancelledError("ingest cancelled by the client; nothing stored");
  if (!options.key.empty()) {
    // A retry of an ingest that committed: answer without parsing again.
    MYCEL_ASSIGN_OR_RETURN(std::optional<data::AddResult> earlier, store_->FindIngest(options.key));
    if (earlier.has_value()) {
      Logger("control")->info("ingest {} committed before ({} examples stored then); nothing stored now",
                              options.key, earlier->stored);
      return ReplyOf(*earlier, *store_);
    }
  }
  if (!progress(control::IngestProgress::PARSING, 0, 0)) return cancelled;
  const double parse_start = Clock::Real()->MonotonicSeconds();
  auto examples = data::ImportFiles(ToBlobs(files), fmt, trainer_->example_shape());
  if (!examples.ok()) {
    Logger("control")->warn("ingest refused: {}", examples.status().message());
    return examples.status();
  }
  if (!keep_labels.empty()) {
    std::vector<data::Example> kept;
    for (auto& e : *examples) {
      if (std::find(keep_labels.begin(), keep_labels.end(), e.label) != keep_labels.end()) kept.push_back(std::move(e));
    }
    examples->swap(kept);
    if (examples->empty()) return absl::InvalidArgumentError("no example has one of the --labels given");
  }
  const double store_start = Clock::Real()->MonotonicSeconds();
  std::string source;
  for (const auto& f : files) absl::StrAppend(&source, source.empty() ? "" : " ", f.name);
  auto added = store_->Add(
      *examples,
      [&progress](int64_t done, int64_t total) { return progress(control::IngestProgress::STORING, done, total); },
      options.key, source);
  if (absl::IsCancelled(added.status())) {
    Logger("control")->warn("ingest cancelled by the client, nothing stored ({})", added.status().message());
    return cancelled;
  }
  if (!added.ok()) {
    Logger("control")->error("ingest failed, nothing stored: {}", added.status().message());
    return added.status();
  }
  const double store_end = Clock::Real()->MonotonicSeconds();
  trainer_->Wake("ingest");
  control::IngestReply r = ReplyOf(*added, *store_);
  Logger("control")->info(
      "ingested {} examples from {} file(s): {} train, {} validation, {} evicted, {} already stored (parse {:.2f} s, "
      "store {:.2f} s)",
      added->stored, files.size(), added->train, added->validation, added->evicted, added->duplicates,
      store_start - parse_start, store_end - store_start);
  return r;
}

namespace {

void RefuseLine(control::BurstAck* ack, int64_t number, std::string why) {
  control::LineRefusal* r = ack->add_refused();
  r->set_line(number);
  r->set_reason(why.substr(0, 300));
}

// A burst's lines, each parsed on its own so one bad line costs only itself.
absl::Status ParseLines(const control::ExampleBurst& burst, const data::ExampleShape& shape,
                        std::vector<data::Example>* good, control::BurstAck* ack) {
  MYCEL_ASSIGN_OR_RETURN(data::Format fmt, data::ParseFormat(burst.format()));
  if (fmt != data::Format::kCsv && fmt != data::Format::kText) {
    return absl::InvalidArgumentError("lines are csv or text, not '" + burst.format() + "'");
  }
  for (int i = 0; i < burst.lines_size(); ++i) {
    const int64_t number = burst.first_line() + i;
    const std::string& line = burst.lines(i);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines carry nothing
    const std::string name = "line " + std::to_string(number);
    auto examples = data::ImportFiles({data::NamedBlob{name, line + "\n"}}, fmt, shape);
    if (!examples.ok()) {
      // The importer names the blob ("line 7:1: ..."); the refusal carries the number already.
      std::string why(examples.status().message());
      for (const std::string& prefix : {name + ":1: ", name + ": "}) {
        if (why.rfind(prefix, 0) == 0) {
          why.erase(0, prefix.size());
          break;
        }
      }
      RefuseLine(ack, number, std::move(why));
      continue;
    }
    for (data::Example& e : *examples) good->push_back(std::move(e));
  }
  return absl::OkStatus();
}

// An example's values as stored: pixels an application scaled to [0, 1]
// (each exactly k / 255.0f, which is how the sampler turns uint8 back into
// float) are kept as the uint8 k, a quarter of the bytes to hash, store and
// hold in memory, and the same row an idx file of that image stores; any
// other values stay float32.
data::Example PackValues(const control::Example& in) {
  data::Example e;
  e.label = in.label();
  e.dtype = data::DType::kU8;
  e.data.resize(static_cast<size_t>(in.values_size()));
  for (int j = 0; j < in.values_size(); ++j) {
    const float v = in.values(j);
    const long k = std::lrint(v * 255.0f);
    if (k < 0 || k > 255 || static_cast<float>(k) / 255.0f != v) {
      e.dtype = data::DType::kF32;
      e.data.assign(reinterpret_cast<const char*>(in.values().data()), in.values_size() * sizeof(float));
      return e;
    }
    e.data[static_cast<size_t>(j)] = static_cast<char>(static_cast<uint8_t>(k));
  }
  return e;
}

// A burst's examples from the public client: a classifier's are checked
// here (width, label, finite values) and stored without a text round trip
// (PackValues); a char_lm's text goes through the text importer, as a line.
void ParseExamples(const control::ExampleBurst& burst, const data::ExampleShape& shape,
                   std::vector<data::Example>* good, control::BurstAck* ack) {
  for (int i = 0; i < burst.examples_size(); ++i) {
    const int64_t number = burst.first_line() + i;
    const control::Example& in = burst.examples(i);
    if (shape.text) {
      if (in.values_size() > 0) {
        RefuseLine(ack, number, "the model is a char_lm: an example is text, not values");
        continue;
      }
      auto windows = data::ImportFiles({data::NamedBlob{"example", in.text()}}, data::Format::kText, shape);
      if (!windows.ok()) {
        std::string why(windows.status().message());
        if (why.rfind("example: ", 0) == 0) why.erase(0, 9);
        RefuseLine(ack, number, std::move(why));
        continue;
      }
      for (data::Example& e : *windows) good->push_back(std::move(e));
      continue;
    }
    if (!in.text().empty()) {
      RefuseLine(ack, number, "the model is a classifier: an example is values and a label, not text");
    } else if (in.values_size() != shape.width) {
      RefuseLine(ack, number, "has " + std::to_string(in.values_size()) + " values but the model takes " +
                              std::to_string(shape.width));
    } else if (in.label() < 0 || in.label() >= shape.classes) {
      RefuseLine(ack, number, "label " + std::to_string(in.label()) + " is outside [0, " +
                              std::to_string(shape.classes) + ")");
    } else if (!std::all_of(in.values().begin(), in.values().end(), [](float v) { return std::isfinite(v); })) {
      RefuseLine(ack, number, "a value is not finite (NaN or infinite)");
    } else {
      good->push_back(PackValues(in));
    }
  }
}

}  // namespace

absl::StatusOr<control::BurstAck> Node::AddExamples(const control::ExampleBurst& burst) {
  constexpr int kMaxBurst = 4096;
  if (burst.lines_size() + burst.examples_size() > kMaxBurst) {
    return absl::InvalidArgumentError("a burst holds at most " + std::to_string(kMaxBurst) + " lines or examples, not " +
                                      std::to_string(burst.lines_size() + burst.examples_size()));
  }
  if (burst.lines_size() > 0 && burst.examples_size() > 0) {
    return absl::InvalidArgumentError("a burst holds lines or examples, not both");
  }
  const data::ExampleShape shape = trainer_->example_shape();
  std::vector<data::Example> good;
  control::BurstAck ack;
  if (burst.examples_size() > 0) {
    ParseExamples(burst, shape, &good, &ack);
  } else {
    MYCEL_RETURN_IF_ERROR(ParseLines(burst, shape, &good, &ack));
  }
  if (good.empty()) {
    ack.mutable_stored()->set_examples_train(store_->Count(data::Split::kTrain));
    ack.mutable_stored()->set_examples_val(store_->Count(data::Split::kValidation));
    return ack;
  }
  const int n = burst.lines_size() + burst.examples_size();
  auto added = store_->Add(good, nullptr, "", burst.examples_size() > 0 ? "api" : "stdin");
  if (!added.ok()) {
    Logger("control")->error("burst of {} examples not stored: {}", n, added.status().message());
    return added.status();
  }
  trainer_->Wake("ingest");
  *ack.mutable_stored() = ReplyOf(*added, *store_);
  Logger("control")->debug("burst of {}: {} stored, {} refused", n, added->stored, ack.refused_size());
  return ack;
}

absl::StatusOr<control::DataReply> Node::GetData(const control::DataRequest& request) {
  constexpr int kDefaultIngests = 100;
  if (request.max_ingests() < 0) return absl::InvalidArgumentError("max_ingests must be >= 0");
  MYCEL_ASSIGN_OR_RETURN(data::DataSummary summary,
                         store_->Summarize(request.max_ingests() == 0 ? kDefaultIngests : request.max_ingests()));
  control::DataReply r;
  for (const auto& c : summary.labels) {
    auto* l = r.add_labels();
    l->set_label(c.label);
    l->set_train(c.train);
    l->set_validation(c.validation);
  }
  for (const auto& i : summary.ingests) {
    auto* g = r.add_ingests();
    g->set_id(i.id);
    g->set_added_unix_ms(i.added_unix_ms);
    g->set_source(i.source);
    g->set_offered(i.offered);
    g->set_duplicates(i.duplicates);
    g->set_train(i.train);
    g->set_validation(i.validation);
  }
  r.set_ingests_total(summary.ingests_total);
  r.set_examples_train(store_->Count(data::Split::kTrain));
  r.set_examples_val(store_->Count(data::Split::kValidation));
  return r;
}

absl::StatusOr<control::ForgetReply> Node::Forget(const control::ForgetRequest& request) {
  data::ForgetFilter filter;
  filter.all = request.all();
  if (request.has_label()) filter.label = request.label();
  if (request.has_before_unix_ms()) filter.before_unix_ms = request.before_unix_ms();
  if (request.has_ingest()) filter.ingest = request.ingest();
  auto forgot = store_->Forget(filter);
  if (!forgot.ok()) {
    Logger("control")->error("forget failed, nothing deleted: {}", forgot.status().message());
    return forgot.status();
  }
  trainer_->DropForgottenRows();  // before the answer: nothing forgotten is trained on after it
  Logger("control")->info("forgot {} examples ({} train, {} validation) at the user's request",
                          forgot->train + forgot->validation, forgot->train, forgot->validation);
  control::ForgetReply r;
  r.set_train(forgot->train);
  r.set_validation(forgot->validation);
  r.set_examples_train(store_->Count(data::Split::kTrain));
  r.set_examples_val(store_->Count(data::Split::kValidation));
  return r;
}

absl::StatusOr<control::EvalReply> Node::Eval(const std::vector<control::UploadedFile>& files,
                                              const std::string& format) {
  MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(format));
  MYCEL_ASSIGN_OR_RETURN(auto examples, data::ImportFiles(ToBlobs(files), fmt, trainer_->example_shape()));
  MYCEL_ASSIGN_OR_RETURN(auto result, trainer_->Evaluate(examples));
  control::EvalReply r;
  r.set_accuracy(result.accuracy);
  r.set_loss(result.loss);
  r.set_examples(result.examples);
  return r;
}

absl::StatusOr<control::PredictReply> Node::Predict(const control::PredictRequest& request,
                                                    const std::vector<control::UploadedFile>& files) {
  // The CLI's own bound: a greedy continuation runs on the trainer thread,
  // so an absurd length would hold training for as long as it takes.
  constexpr int kMaxGenerate = 10000;
  if (request.generate() < 0 || request.generate() > kMaxGenerate) {
    return absl::InvalidArgumentError("predict: generate must be in [0, " + std::to_string(kMaxGenerate) +
                                      "], got " + std::to_string(request.generate()));
  }
  control::PredictReply r;
  r.set_true_label(-1);
  int top_k = request.top_k() > 0 ? request.top_k() : 3;
  const std::vector<std::string>& names = config_.model.class_names;
  auto add_top = [&r, &names](const std::vector<std::pair<int64_t, double>>& top) {
    for (const auto& [label, p] : top) {
      auto* pred = r.add_top();
      pred->set_label(label);
      pred->set_probability(p);
      if (label >= 0 && label < static_cast<int64_t>(names.size())) pred->set_name(names[label]);
    }
  };
  if (!request.text().empty()) {
    MYCEL_ASSIGN_OR_RETURN(auto out, trainer_->PredictText(request.text(), top_k, request.generate()));
    add_top(out.first);
    r.set_continuation(out.second);
    return r;
  }
  data::Example example;
  if (!files.empty()) {
    MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(request.files(0).format()));
    MYCEL_ASSIGN_OR_RETURN(auto examples,
                           data::ImportFiles(ToBlobs(files), fmt, trainer_->example_shape(), /*unlabelled=*/true));
    if (request.index() < 0 || request.index() >= static_cast<int64_t>(examples.size())) {
      return absl::OutOfRangeError("index " + std::to_string(request.index()) + " is outside [0, " +
                                   std::to_string(examples.size()) + ")");
    }
    example = examples[request.index()];
    r.set_true_label(example.label);
  } else if (request.values_size() > 0) {
    example.dtype = data::DType::kF32;
    example.data.assign(reinterpret_cast<const char*>(request.values().data()),
                        request.values_size() * sizeof(float));
  } else {
    return absl::InvalidArgumentError("predict needs an input: a file, values or text");
  }
  MYCEL_ASSIGN_OR_RETURN(auto top, trainer_->Classify(example, top_k));
  add_top(top);
  return r;
}

absl::StatusOr<control::PeersReply> Node::GetPeers() {
  control::PeersReply r;
  if (!gossip_) return r;
  for (const peer::PendingPeer& p : gossip_->Pending()) {
    control::PendingPeer* q = r.add_pending();
    q->set_name(p.name);
    q->set_public_key(Base64Encode(p.public_key));
    q->set_key_fingerprint(p.key_fingerprint);
    q->set_address(p.address);
    q->set_first_seen_unix(p.first_seen_unix);
    q->set_last_seen_unix(p.last_seen_unix);
    q->set_requests(p.requests);
    q->set_same_model(p.same_model);
    q->set_dials_in(p.dials_in);
  }
  auto totals = gossip_->Totals();
  r.set_rounds(totals.rounds);
  r.set_bytes_sent(totals.bytes_sent);
  r.set_bytes_received(totals.bytes_received);
  r.set_refused_unknown(totals.refused_unknown);
  r.set_rounds_held(totals.rounds_held);
  r.set_rounds_missed(totals.rounds_missed);
  r.set_connections_shed(totals.connections_shed);
  r.set_connections_screened(totals.connections_screened);
  r.set_trust_probes(totals.trust_probes);
  r.set_trust_probe_seconds(totals.trust_probe_seconds);
  r.set_trust(config_.federation.trust);
  r.set_listen_port(totals.listen_port);
  for (const auto& p : gossip_->Peers()) {
    auto* info = r.add_peers();
    info->set_name(p.name);
    info->set_address(p.address);
    info->set_key_fingerprint(p.key_fingerprint);
    info->set_state(p.state);
    info->set_last_error(p.last_error);
    info->set_last_success_unix(p.last_success_unix);
    info->set_epoch(p.epoch);
    info->set_seq_applied(p.seq_applied);
    info->set_samples_trained(p.samples_trained);
    info->set_bytes_sent(p.bytes_sent);
    info->set_bytes_received(p.bytes_received);
    info->set_pulls_ok(p.pulls_ok);
    info->set_pulls_failed(p.pulls_failed);
    info->set_served(p.served);
    info->set_deltas_accepted(p.deltas_accepted);
    info->set_keyframes_accepted(p.keyframes_accepted);
    info->set_refused(p.refused);
    for (const auto& [reason, n] : p.refusals) (*info->mutable_refusals())[reason] = n;
    info->set_next_retry_s(p.next_retry_s);
    info->set_merges(p.merges);
    info->set_clipped(p.clipped);
    info->set_last_distance(p.last_distance);
    info->set_last_radius(p.last_radius);
    for (const auto& t : p.trust) {
      auto* lt = info->add_trust();
      lt->set_layer(t.layer);
      lt->set_trust(t.trust);
      lt->set_harm(t.harm);
    }
    info->set_trust_probes(p.trust_probes);
    info->set_hurt_probes(p.hurt_probes);
    info->set_quarantine(p.quarantine);
    info->set_clock_skew_s(p.clock_skew_s);
    info->set_clock_skew_known(p.clock_skew_known);
    info->set_dials_in(p.dials_in);
    info->set_handed_over(p.handed_over);
    info->set_hand_overs_refused(p.hand_overs_refused);
    info->set_last_hand_over_error(p.last_hand_over_error);
  }
  return r;
}

std::string Node::UiUrl(bool with_token) const {
  const int port = ui_port_.load();
  if (port == 0) return "";
  const std::string& listen = config_.node.ui_listen;
  return "http://" + listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port) + "/" +
         (with_token ? "#" + dashboard_->token() : "");
}

absl::StatusOr<std::string> Node::AcceptPending(const std::string& fingerprint) {
  if (!gossip_) return absl::FailedPreconditionError("this node takes no peers (no [node] listen or dial_out)");
  std::vector<peer::PendingPeer> found;
  for (const peer::PendingPeer& p : gossip_->Pending()) {
    if (p.key_fingerprint == fingerprint) found.push_back(p);
  }
  if (found.empty()) return absl::NotFoundError("no pending peer has the fingerprint " + fingerprint);
  const peer::PendingPeer& p = found.front();
  if (p.address.empty() && !p.dials_in) {
    return absl::InvalidArgumentError("'" + p.name + "' does not say where it listens: `mycel peers accept " +
                                      fingerprint + " --address HOST:PORT` (or --dials-in)");
  }
  // The config as it is on disk now (another accept may have come first).
  MYCEL_ASSIGN_OR_RETURN(config::Config current, config::LoadConfig(config_.path));
  const std::string name = config::FreePeerName(current, p.name);
  MYCEL_ASSIGN_OR_RETURN(std::string file, config::PinPeer(current, name, Base64Encode(p.public_key),
                                                           p.dials_in ? "" : p.address, identity_->public_key(),
                                                           "accept"));
  auto reloaded = Reload();
  if (!reloaded.ok()) {
    ::unlink(file.c_str());
    return reloaded.status();
  }
  Logger("node")->info("dashboard: pinned {} ({}) in {}", name, fingerprint, file);
  return "pinned " + name + " (" + fingerprint + ")" + (p.dials_in ? " as a neighbour that dials in" : " at " + p.address);
}

std::string Node::MetricsUrl() const {
  const int port = metrics_port_.load();
  if (port == 0) return "";
  const std::string& listen = config_.node.metrics_listen;
  return "http://" + listen.substr(0, listen.rfind(':')) + ":" + std::to_string(port) + "/metrics";
}

std::string Node::MetricsText() {
  auto status = GetStatus();
  auto peers = GetPeers();
  if (!status.ok() || !peers.ok()) return "";
  return RenderMetrics(*status, *peers);
}

absl::StatusOr<std::string> Node::Export() {
  std::string path = config_.node.state_dir + "/export.pt.tmp-" + std::to_string(std::random_device{}() % 1000000);
  absl::Status s = trainer_->Export(path);
  if (!s.ok()) {
    ::unlink(path.c_str());
    return s;
  }
  auto bytes = Env::Default()->ReadFile(path);
  ::unlink(path.c_str());
  return bytes;
}

}  // namespace mycel
