#include "daemon/node.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <random>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/coding.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/version.h"
#include "control/control_server.h"
#include "crypto/identity.h"
#include "daemon/control_service.h"
#include "daemon/dashboard.h"
#include "daemon/peer_config.h"
#include "data/example_store.h"
#include "data/history.h"
#include "data/importers.h"
#include "metrics/metrics_server.h"
#include "peer/discovery.h"
#include "peer/gossip.h"
#include "train/checkpointer.h"
#include "train/policy.h"
#include "train/resource_policy.h"
#include "train/trainer.h"

namespace mycel {

namespace {
constexpr char kPausedKey[] = "paused";

bool SameFederation(const config::FederationSection& a, const config::FederationSection& b) {
  auto schedule = [](const config::FederationSection& o) {
    return std::tie(o.round_interval_s, o.local_steps, o.trust_every, o.trust_examples, o.pull_timeout_s,
                    o.max_backoff_s);
  };
  return static_cast<const federation::FederationOptions&>(a) == b && schedule(a) == schedule(b);
}

// Frees what `files` holds: an upload may be gigabytes, and the store is
// written after it is parsed.
void Release(std::vector<data::NamedBlob>& files) { std::vector<data::NamedBlob>().swap(files); }

}  // namespace

Node::Node(const config::Config& config) : config_(config) {}

Node::~Node() {
  (void)Shutdown();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const config::Config& config) {
  std::unique_ptr<Node> node(new Node(config));
  node->started_at_ = Clock::Real()->MonotonicSeconds();
  MYCEL_RETURN_IF_ERROR(node->LockStateDir());
  MYCEL_ASSIGN_OR_RETURN(node->identity_, crypto::Identity::LoadOrCreate(config.IdentityPath()));
  Logger("node")->info("node '{}' identity {} ({})", config.node.name, node->identity_->PublicKeyBase64(),
                       node->identity_->Fingerprint());
  MYCEL_RETURN_IF_ERROR(node->OpenStore());
  train::CheckpointerOptions co;
  co.dir = config.CheckpointDir();
  MYCEL_ASSIGN_OR_RETURN(node->checkpointer_, train::Checkpointer::Open(co));
  MYCEL_RETURN_IF_ERROR(node->CheckPeers(config.peers));
  node->OpenHistory();
  MYCEL_RETURN_IF_ERROR(node->CreateTrainer());
  if (node->trainer_->federation()) MYCEL_RETURN_IF_ERROR(node->CreateGossip());
  return node;
}

absl::Status Node::LockStateDir() {
  const std::string& dir = config_.node.state_dir;
  MYCEL_RETURN_IF_ERROR(Env::Default()->CreateDirs(dir, 0700));
  std::string lock_path = dir + "/myceld.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return ErrnoStatus(errno, "open", lock_path);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError("another myceld is already running on state dir " + dir);
  }
  return absl::OkStatus();
}

absl::Status Node::OpenStore() {
  data::ExampleStoreOptions so;
  so.path = config_.StorePath();
  so.max_examples = config_.training.max_examples;
  so.validation_fraction = config_.training.validation_fraction;
  so.seed = config_.model.seed ^ std::random_device{}();
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
  MYCEL_ASSIGN_OR_RETURN(store_, std::move(store));
  MYCEL_ASSIGN_OR_RETURN(auto paused, store_->GetMeta(kPausedKey));
  pause_ = std::make_unique<train::PausePolicy>(paused && *paused == "1");
  policy_ = std::make_unique<train::ResourcePolicy>(config_.policy, *pause_);
  return absl::OkStatus();
}

void Node::OpenHistory() {
  // The history is a record: a damaged one is moved aside, and without one
  // the daemon still runs (`mycel history` then says why).
  std::string moved;
  auto history = data::History::Open(config_.HistoryPath(), &moved);
  if (!moved.empty()) Logger("node")->warn("history was unreadable, moved to {}; a new one starts", moved);
  if (history.ok()) {
    history_ = std::move(history).value();
  } else {
    Logger("node")->error("no history of validation passes: {}", history.status().message());
  }
}

absl::Status Node::CreateTrainer() {
  train::TrainerOptions to;
  to.model = config_.model;
  to.training = config_.training;
  to.cpu = config_.policy;
  // A node that listens, or dials out, takes part even before its first
  // neighbour is pinned (pairing adds one at a reload); it paces its
  // training only once it has one.
  if (!config_.peers.empty() || !config_.node.listen.empty() || config_.node.dial_out) {
    train::TrainerFederation& f = to.federation.emplace();
    f.options = config_.federation;  // the [federation] section's base, read and checked once
    for (const auto& p : config_.peers) f.peer_keys.push_back(p.public_key);
    to.local_steps = config_.peers.empty() ? 0 : config_.federation.local_steps;
  }
  MYCEL_ASSIGN_OR_RETURN(trainer_, train::Trainer::Create(to, *store_, *checkpointer_, *policy_));
  return absl::OkStatus();
}

absl::Status Node::CreateGossip() {
  peer::GossipOptions go;
  go.node_name = config_.node.name;
  go.listen = config_.node.listen;
  go.dial_out = config_.node.dial_out || config_.node.listen.empty();
  go.fingerprint = trainer_->Stats().fingerprint;
  go.layout = trainer_->Stats().model_layout;
  go.schedule = GossipScheduleOf(config_.federation);
  go.peers = NeighboursOf(config_.peers);
  // While training is held, rounds go on unless [policy] gossip_when_held = false.
  gossip_when_held_ = config_.policy.gossip_when_held;
  go.hold_rounds = [this] { return !gossip_when_held_.load() && !policy_->Decide().allowed; };
  // The trainer keeps the federation's state and is the weights it publishes
  // and merges; the gossip only reaches both.
  MYCEL_ASSIGN_OR_RETURN(gossip_, peer::Gossip::Create(go, *identity_, *trainer_->federation(), *trainer_));
  return absl::OkStatus();
}

absl::Status Node::Start() {
  trainer_->Start();
  if (gossip_) MYCEL_RETURN_IF_ERROR(gossip_->Start());
  StartDiscovery();
  control_service_ = std::make_unique<ControlService>(*this);
  StartMetrics();
  StartDashboard();
  if (history_) history_thread_ = std::thread([this] { RecordHistory(); });
  // The control socket last: once it accepts, every endpoint is up (or its
  // failure logged), so `mycel status` right after start shows the
  // dashboard's address, and a test or script that waits for the socket
  // reads a complete start.
  control::ControlServerOptions co;
  co.socket_path = config_.SocketPath();
  MYCEL_ASSIGN_OR_RETURN(control_, control::ControlServer::Start(co, *control_service_));
  auto stats = trainer_->Stats();
  Logger("node")->info("myceld running: {} model, {} parameters, {} examples stored{}", stats.model_kind,
                       stats.parameters, store_->Count(data::Split::kTrain) + store_->Count(data::Split::kValidation),
                       pause_->paused() ? ", paused by user" : "");
  return absl::OkStatus();
}

void Node::StartMetrics() {
  if (config_.node.metrics_listen.empty()) return;
  // Optional: a taken port is logged, and the daemon goes on training.
  ControlService* service = control_service_.get();
  auto metrics = metrics::MetricsServer::Start(config_.node.metrics_listen, [service] { return service->MetricsText(); });
  if (metrics.ok()) {
    metrics_port_ = (*metrics)->port();  // scrapes may already read it: an atomic
    metrics_ = std::move(metrics).value();
    Logger("node")->info("metrics on {}", MetricsUrl());
  } else {
    Logger("node")->error("no metrics endpoint: {}", metrics.status().message());
  }
}

void Node::StartDiscovery() {
  if (!config_.node.discover || !gossip_) return;
  // Optional as well: without avahi-daemon it warns and the daemon runs on.
  peer::DiscoveryOptions o;
  o.name = config_.node.name;
  o.public_key = identity_->public_key();
  o.port = gossip_->Totals().listen_port;
  o.model_fingerprint = trainer_->Stats().fingerprint;
  peer::Gossip* gossip = gossip_.get();
  std::lock_guard<std::mutex> lock(discovery_mu_);
  discovery_ = peer::Discovery::Start(
      o, [gossip](peer::PendingPeer p) { gossip->NoteDiscovered(std::move(p), static_cast<int64_t>(std::time(nullptr))); },
      [gossip](const std::string& key) { gossip->ForgetDiscovered(key); });
}

void Node::StartDashboard() {
  if (config_.node.ui_listen.empty()) return;
  // Optional too: without it the daemon trains on.
  auto ui = Dashboard::Start(config_.node.ui_listen, *control_service_,
                             [this](const std::string& fp) { return AcceptPending(fp); });
  if (ui.ok()) {
    ui_port_ = (*ui)->port();
    dashboard_ = std::move(ui).value();
    Logger("node")->info("dashboard on {} (`mycel status` prints its address with the token to change things)",
                         UiUrl(/*with_token=*/false));
  } else {
    Logger("node")->error("no dashboard: {}", ui.status().message());
  }
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

absl::StatusOr<Node::ReloadResult> Node::Reload() {
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

Node::ReloadResult Node::Apply(const config::Config& config) {
  ReloadResult reply;
  policy_->Reconfigure(config.policy);
  trainer_->SetMaxCpuPercent(config.policy.max_cpu_percent);
  trainer_->SetThreads(config.policy.threads);
  gossip_when_held_ = config.policy.gossip_when_held;
  trainer_->Wake("reload");
  (void)SetLogLevel(config.node.log_level);
  std::string applied = "[policy], log_level";
  if (gossip_) {
    gossip_->SetPeers(NeighboursOf(config.peers));  // from the next round on
    trainer_->SetLocalSteps(config.peers.empty() ? 0 : config_.federation.local_steps);
    applied += ", [[peers]] (" + std::to_string(config.peers.size()) + ")";
    reply.peers = static_cast<int32_t>(config.peers.size());
  }
  // What a running daemon cannot change: said, not silently ignored.
  std::vector<std::string> restart;
  if (!gossip_ && !config.peers.empty()) {
    restart.push_back("the first [[peers]] of a node started without any, without [node] listen and without "
                      "[node] dial_out");
  }
  if (config.node.listen != config_.node.listen) restart.push_back("[node] listen");
  if (config.node.dial_out != config_.node.dial_out) restart.push_back("[node] dial_out");
  if (config.node.discover != config_.node.discover) restart.push_back("[node] discover");
  if (config.node.state_dir != config_.node.state_dir) restart.push_back("[node] state_dir");
  if (config.node.metrics_listen != config_.node.metrics_listen) restart.push_back("[node] metrics_listen");
  if (config.node.log_file != config_.node.log_file) restart.push_back("[node] log_file");
  if (config.node.log_max_bytes != config_.node.log_max_bytes ||
      config.node.log_max_files != config_.node.log_max_files) {
    restart.push_back("[node] log_max_bytes/log_max_files");
  }
  if (config.node.name != config_.node.name) restart.push_back("[node] name");
  if (config.training != config_.training) restart.push_back("[training]");
  if (!SameFederation(config.federation, config_.federation)) restart.push_back("[federation]");
  if (config.model != config_.model) restart.push_back("[model]");
  reply.applied = applied;
  if (restart.empty()) {
    Logger("node")->info("reload: applied {}", applied);
  } else {
    std::string list;
    for (const auto& r : restart) list += (list.empty() ? "" : ", ") + r;
    reply.needs_restart = list;
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
  {
    // Announcement withdrawn, nothing more found. Dropped outside the lock:
    // stopping avahi's thread waits for its callbacks, which do not take it.
    std::unique_ptr<peer::Discovery> discovery;
    {
      std::lock_guard<std::mutex> lock(discovery_mu_);
      discovery = std::move(discovery_);
    }
  }
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

absl::StatusOr<std::vector<data::HistoryEntry>> Node::GetHistory(double since_unix_s, int64_t limit) {
  if (!history_) return absl::UnavailableError("this daemon keeps no history: see its log at start");
  const int64_t rows = limit > 0 ? std::min<int64_t>(limit, data::History::kMaxRows) : 10000;
  return history_->Since(since_unix_s, rows);
}

Node::StoredCounts Node::Stored() const {
  return {store_->Count(data::Split::kTrain), store_->Count(data::Split::kValidation)};
}

Node::StatusSnapshot Node::GetStatus() {
  StatusSnapshot r;
  r.trainer = trainer_->Stats();
  r.stored = Stored();
  r.uptime_s = Clock::Real()->MonotonicSeconds() - started_at_;
  r.node_name = config_.node.name;
  r.public_key = identity_->PublicKeyBase64();
  r.version = kVersion;
  r.power_source = policy_->power() == train::PowerSource::kBattery ? "battery" : "mains";
  r.state_dir = config_.node.state_dir;
  r.metrics_url = MetricsUrl();
  r.ui_url = UiUrl();
  {
    std::lock_guard<std::mutex> lock(discovery_mu_);
    if (discovery_) r.discovery = discovery_->State();
  }
  if (gossip_) {
    StatusSnapshot::Peering& p = r.peering.emplace();
    p.totals = gossip_->Totals();
    auto peers = gossip_->Peers();  // the list in force (SIGHUP may change it)
    int connected = 0;
    for (const auto& peer : peers) connected += peer.state == "connected";
    p.peers = static_cast<int32_t>(peers.size());
    p.peers_connected = connected;
  }
  return r;
}

absl::StatusOr<std::string> Node::SetPaused(bool paused) {
  // Persist first: a pause must survive a restart until resumed.
  MYCEL_RETURN_IF_ERROR(store_->SetMeta(kPausedKey, paused ? "1" : "0"));
  pause_->SetPaused(paused);
  trainer_->Wake(paused ? "pause" : "resume");
  Logger("node")->info("{} by user", paused ? "paused" : "resumed");
  return std::string(paused ? "paused" : "training");
}

absl::StatusOr<Node::IngestResult> Node::Ingest(std::vector<data::NamedBlob> files, const IngestRequest& request,
                                                const IngestProgressFn& progress) {
  MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(request.format));
  const std::vector<int64_t>& keep_labels = request.keep_labels;
  const absl::Status cancelled = absl::CancelledError("ingest cancelled by the client; nothing stored");
  if (!request.key.empty()) {
    // A retry of an ingest that committed: answer without parsing again.
    MYCEL_ASSIGN_OR_RETURN(std::optional<data::AddResult> earlier, store_->FindIngest(request.key));
    if (earlier.has_value()) {
      Logger("control")->info("ingest {} committed before ({} examples stored then); nothing stored now",
                              request.key, earlier->stored);
      return IngestResult{*earlier, Stored()};
    }
  }
  if (!progress(IngestPhase::kParsing, 0, 0)) return cancelled;
  const double parse_start = Clock::Real()->MonotonicSeconds();
  const size_t file_count = files.size();
  std::string source;
  for (const auto& f : files) absl::StrAppend(&source, source.empty() ? "" : " ", f.name);
  auto examples = data::ImportFiles(files, fmt, trainer_->example_shape());
  Release(files);
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
  auto added = store_->Add(
      *examples, [&progress](int64_t done, int64_t total) { return progress(IngestPhase::kStoring, done, total); },
      request.key, source);
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
  IngestResult r{*added, Stored()};
  Logger("control")->info(
      "ingested {} examples from {} file(s): {} train, {} validation, {} evicted, {} already stored (parse {:.2f} s, "
      "store {:.2f} s)",
      added->stored, file_count, added->train, added->validation, added->evicted, added->duplicates,
      store_start - parse_start, store_end - store_start);
  return r;
}

namespace {

void RefuseLine(Node::BurstResult* result, int64_t number, std::string why) {
  result->refused.push_back({number, why.substr(0, 300)});
}

// A burst's lines, each parsed on its own so one bad line costs only itself.
absl::Status ParseLines(const Node::ExampleBurst& burst, const data::ExampleShape& shape,
                        std::vector<data::Example>* good, Node::BurstResult* result) {
  MYCEL_ASSIGN_OR_RETURN(data::Format fmt, data::ParseFormat(burst.format));
  if (fmt != data::Format::kCsv && fmt != data::Format::kText) {
    return absl::InvalidArgumentError("lines are csv or text, not '" + burst.format + "'");
  }
  for (size_t i = 0; i < burst.lines.size(); ++i) {
    const int64_t number = burst.first_line + static_cast<int64_t>(i);
    const std::string_view line = burst.lines[i];
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines carry nothing
    const std::string name = "line " + std::to_string(number);
    auto examples = data::ImportFiles({data::NamedBlob{name, std::string(line) + "\n"}}, fmt, shape);
    if (!examples.ok()) {
      // The importer names the blob ("line 7:1: ..."); the refusal carries the number already.
      std::string why(examples.status().message());
      for (const std::string& prefix : {name + ":1: ", name + ": "}) {
        if (why.rfind(prefix, 0) == 0) {
          why.erase(0, prefix.size());
          break;
        }
      }
      RefuseLine(result, number, std::move(why));
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
data::Example PackValues(const Node::BurstExample& in) {
  data::Example e;
  e.label = in.label;
  e.dtype = data::DType::kU8;
  e.data.resize(in.values.size());
  for (size_t j = 0; j < in.values.size(); ++j) {
    const float v = in.values[j];
    const long k = std::lrint(v * 255.0f);
    if (k < 0 || k > 255 || static_cast<float>(k) / 255.0f != v) {
      e.dtype = data::DType::kF32;
      e.data.assign(reinterpret_cast<const char*>(in.values.data()), in.values.size() * sizeof(float));
      return e;
    }
    e.data[j] = static_cast<char>(static_cast<uint8_t>(k));
  }
  return e;
}

// A burst's examples from the public client: a classifier's are checked
// here (width, label, finite values) and stored without a text round trip
// (PackValues); a char_lm's text goes through the text importer, as a line.
void ParseExamples(const Node::ExampleBurst& burst, const data::ExampleShape& shape,
                   std::vector<data::Example>* good, Node::BurstResult* result) {
  for (size_t i = 0; i < burst.examples.size(); ++i) {
    const int64_t number = burst.first_line + static_cast<int64_t>(i);
    const Node::BurstExample& in = burst.examples[i];
    if (shape.text) {
      if (!in.values.empty()) {
        RefuseLine(result, number, "the model is a char_lm: an example is text, not values");
        continue;
      }
      auto windows = data::ImportFiles({data::NamedBlob{"example", std::string(in.text)}}, data::Format::kText, shape);
      if (!windows.ok()) {
        std::string why(windows.status().message());
        if (why.rfind("example: ", 0) == 0) why.erase(0, 9);
        RefuseLine(result, number, std::move(why));
        continue;
      }
      for (data::Example& e : *windows) good->push_back(std::move(e));
      continue;
    }
    const int64_t width = static_cast<int64_t>(in.values.size());
    if (!in.text.empty()) {
      RefuseLine(result, number, "the model is a classifier: an example is values and a label, not text");
    } else if (width != shape.width) {
      RefuseLine(result, number, "has " + std::to_string(width) + " values but the model takes " +
                                     std::to_string(shape.width));
    } else if (in.label < 0 || in.label >= shape.classes) {
      RefuseLine(result, number, "label " + std::to_string(in.label) + " is outside [0, " +
                                     std::to_string(shape.classes) + ")");
    } else if (!std::all_of(in.values.begin(), in.values.end(), [](float v) { return std::isfinite(v); })) {
      RefuseLine(result, number, "a value is not finite (NaN or infinite)");
    } else {
      good->push_back(PackValues(in));
    }
  }
}

}  // namespace

absl::StatusOr<Node::BurstResult> Node::AddExamples(const ExampleBurst& burst) {
  constexpr size_t kMaxBurst = 4096;
  const size_t n = burst.lines.size() + burst.examples.size();
  if (n > kMaxBurst) {
    return absl::InvalidArgumentError("a burst holds at most " + std::to_string(kMaxBurst) + " lines or examples, not " +
                                      std::to_string(n));
  }
  if (!burst.lines.empty() && !burst.examples.empty()) {
    return absl::InvalidArgumentError("a burst holds lines or examples, not both");
  }
  const data::ExampleShape shape = trainer_->example_shape();
  std::vector<data::Example> good;
  BurstResult result;
  if (!burst.examples.empty()) {
    ParseExamples(burst, shape, &good, &result);
  } else {
    MYCEL_RETURN_IF_ERROR(ParseLines(burst, shape, &good, &result));
  }
  if (good.empty()) {
    result.stored = Stored();
    return result;
  }
  auto added = store_->Add(good, nullptr, "", !burst.examples.empty() ? "api" : "stdin");
  if (!added.ok()) {
    Logger("control")->error("burst of {} examples not stored: {}", n, added.status().message());
    return added.status();
  }
  trainer_->Wake("ingest");
  result.added = *added;
  result.stored = Stored();
  Logger("control")->debug("burst of {}: {} stored, {} refused", n, added->stored, result.refused.size());
  return result;
}

absl::StatusOr<Node::DataSnapshot> Node::GetData(int32_t max_ingests) {
  constexpr int kDefaultIngests = 100;
  if (max_ingests < 0) return absl::InvalidArgumentError("max_ingests must be >= 0");
  MYCEL_ASSIGN_OR_RETURN(data::DataSummary summary, store_->Summarize(max_ingests == 0 ? kDefaultIngests : max_ingests));
  return DataSnapshot{std::move(summary), Stored()};
}

absl::StatusOr<Node::ForgetResult> Node::Forget(const data::ForgetFilter& filter) {
  auto forgot = store_->Forget(filter);
  if (!forgot.ok()) {
    Logger("control")->error("forget failed, nothing deleted: {}", forgot.status().message());
    return forgot.status();
  }
  trainer_->DropForgottenRows();  // before the answer: nothing forgotten is trained on after it
  Logger("control")->info("forgot {} examples ({} train, {} validation) at the user's request",
                          forgot->train + forgot->validation, forgot->train, forgot->validation);
  return ForgetResult{*forgot, Stored()};
}

absl::StatusOr<train::EvalResult> Node::Eval(std::vector<data::NamedBlob> files, const std::string& format) {
  MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(format));
  auto examples = data::ImportFiles(files, fmt, trainer_->example_shape());
  Release(files);
  if (!examples.ok()) return examples.status();
  return trainer_->Evaluate(*examples);
}

absl::StatusOr<Node::PredictResult> Node::Predict(const PredictRequest& request, std::vector<data::NamedBlob> files) {
  // The CLI's own bound: a greedy continuation runs on the trainer thread,
  // so an absurd length would hold training for as long as it takes.
  constexpr int kMaxGenerate = 10000;
  if (request.generate < 0 || request.generate > kMaxGenerate) {
    return absl::InvalidArgumentError("predict: generate must be in [0, " + std::to_string(kMaxGenerate) +
                                      "], got " + std::to_string(request.generate));
  }
  PredictResult r;
  int top_k = request.top_k > 0 ? request.top_k : 3;
  const std::vector<std::string>& names = config_.model.class_names;
  auto add_top = [&r, &names](const std::vector<std::pair<int64_t, double>>& top) {
    for (const auto& [label, p] : top) {
      PredictResult::Class c{label, p, ""};
      if (label >= 0 && label < static_cast<int64_t>(names.size())) c.name = names[label];
      r.top.push_back(std::move(c));
    }
  };
  if (!request.text.empty()) {
    MYCEL_ASSIGN_OR_RETURN(auto out, trainer_->PredictText(request.text, top_k, request.generate));
    add_top(out.first);
    r.continuation = std::move(out.second);
    return r;
  }
  data::Example example;
  if (!files.empty()) {
    MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(request.format));
    MYCEL_ASSIGN_OR_RETURN(auto examples,
                           data::ImportFiles(files, fmt, trainer_->example_shape(), /*unlabelled=*/true));
    if (request.index < 0 || request.index >= static_cast<int64_t>(examples.size())) {
      return absl::OutOfRangeError("index " + std::to_string(request.index) + " is outside [0, " +
                                   std::to_string(examples.size()) + ")");
    }
    example = examples[request.index];
    r.true_label = example.label;
  } else if (!request.values.empty()) {
    example.dtype = data::DType::kF32;
    example.data.assign(reinterpret_cast<const char*>(request.values.data()), request.values.size() * sizeof(float));
  } else {
    return absl::InvalidArgumentError("predict needs an input: a file, values or text");
  }
  MYCEL_ASSIGN_OR_RETURN(auto top, trainer_->Classify(example, top_k));
  add_top(top);
  return r;
}

std::optional<Node::PeersSnapshot> Node::GetPeers() {
  if (!gossip_) return std::nullopt;
  PeersSnapshot r;
  r.pending = gossip_->Pending();
  r.totals = gossip_->Totals();
  r.trust = config_.federation.trust;
  r.peers = gossip_->Peers();
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
