#include "daemon/node.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmath>
#include <random>

#include "common/clock.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"
#include "crypto/identity.h"
#include "data/example_store.h"
#include "data/importers.h"
#include "train/checkpointer.h"
#include "train/policy.h"
#include "train/trainer.h"

namespace mycel {
namespace {
constexpr char kPausedKey[] = "paused";

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
  MYCEL_ASSIGN_OR_RETURN(node->store_, data::ExampleStore::Open(so));

  MYCEL_ASSIGN_OR_RETURN(auto paused, node->store_->GetMeta(kPausedKey));
  node->pause_ = std::make_unique<train::PausePolicy>(paused && *paused == "1");

  train::CheckpointerOptions co;
  co.dir = config.CheckpointDir();
  MYCEL_ASSIGN_OR_RETURN(node->checkpointer_, train::Checkpointer::Open(co));

  train::TrainerOptions to;
  to.model = config.model;
  to.training = config.training;
  MYCEL_ASSIGN_OR_RETURN(node->trainer_,
                         train::Trainer::Create(to, *node->store_, *node->checkpointer_, *node->pause_));
  return node;
}

absl::Status Node::Start() {
  trainer_->Start();
  control::ControlServerOptions co;
  co.socket_path = config_.SocketPath();
  MYCEL_ASSIGN_OR_RETURN(control_, control::ControlServer::Start(co, *this));
  auto stats = trainer_->Stats();
  Logger("node")->info("myceld running: {} model, {} parameters, {} examples stored{}", stats.model_kind,
                       stats.parameters, store_->Count(data::Split::kTrain) + store_->Count(data::Split::kValidation),
                       pause_->paused() ? ", paused by user" : "");
  return absl::OkStatus();
}

absl::Status Node::Shutdown() {
  if (shut_down_) return absl::OkStatus();
  shut_down_ = true;
  Logger("node")->info("shutting down");
  if (control_) control_->Shutdown();            // 1. no new RPCs
  absl::Status s = trainer_ ? trainer_->Stop()   // 2. trainer stops between steps, final checkpoint
                            : absl::OkStatus();
  control_.reset();
  trainer_.reset();
  store_.reset();                                // 3. close the store
  Logger("node")->info("shutdown complete{}", s.ok() ? "" : std::string(": ") + std::string(s.message()));
  return s;
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
  r.set_val_loss(st.val_loss);
  r.set_val_accuracy(st.val_accuracy);
  r.set_model_kind(st.model_kind);
  r.set_parameters(st.parameters);
  r.set_shared_parameters(st.shared_parameters);
  r.set_uptime_s(Clock::Real()->MonotonicSeconds() - started_at_);
  r.set_node_name(config_.node.name);
  r.set_public_key(identity_->PublicKeyBase64());
  r.set_steps_per_s(st.steps_per_s);
  r.set_checkpoints_written(st.checkpoints_written);
  r.set_last_checkpoint_step(st.last_checkpoint_step);
  r.set_eval_examples(st.eval_examples);
  r.set_state_dir(config_.node.state_dir);
  return r;
}

absl::StatusOr<control::PauseReply> Node::SetPaused(bool paused) {
  // Persist first: a pause must survive a restart until resumed.
  MYCEL_RETURN_IF_ERROR(store_->SetMeta(kPausedKey, paused ? "1" : "0"));
  pause_->SetPaused(paused);
  trainer_->Wake();
  Logger("node")->info("{} by user", paused ? "paused" : "resumed");
  control::PauseReply r;
  r.set_state(paused ? "paused" : "training");
  return r;
}

absl::StatusOr<control::IngestReply> Node::Ingest(const std::vector<control::UploadedFile>& files,
                                                  const std::string& format) {
  MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(format));
  auto examples = data::ImportFiles(ToBlobs(files), fmt, trainer_->example_shape());
  if (!examples.ok()) {
    Logger("control")->warn("ingest refused: {}", examples.status().message());
    return examples.status();
  }
  auto added = store_->Add(*examples);
  if (!added.ok()) {
    Logger("control")->error("ingest failed, nothing stored: {}", added.status().message());
    return added.status();
  }
  trainer_->Wake();
  control::IngestReply r;
  r.set_offered(added->offered);
  r.set_stored(added->stored);
  r.set_evicted(added->evicted);
  r.set_train(added->train);
  r.set_validation(added->validation);
  r.set_examples_train(store_->Count(data::Split::kTrain));
  r.set_examples_val(store_->Count(data::Split::kValidation));
  Logger("control")->info("ingested {} examples from {} file(s): {} train, {} validation, {} evicted",
                          added->stored, files.size(), added->train, added->validation, added->evicted);
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

absl::StatusOr<control::PredictReply> Node::Predict(const control::PredictRequest& request) {
  control::PredictReply r;
  r.set_true_label(-1);
  int top_k = request.top_k() > 0 ? request.top_k() : 3;
  auto add_top = [&r](const std::vector<std::pair<int64_t, double>>& top) {
    for (const auto& [label, p] : top) {
      auto* pred = r.add_top();
      pred->set_label(label);
      pred->set_probability(p);
    }
  };
  if (!request.text().empty()) {
    MYCEL_ASSIGN_OR_RETURN(auto out, trainer_->PredictText(request.text(), top_k, request.generate()));
    add_top(out.first);
    r.set_continuation(out.second);
    return r;
  }
  data::Example example;
  if (request.files_size() > 0) {
    std::vector<control::UploadedFile> files;
    for (const auto& f : request.files()) {
      if (f.file_index() >= files.size()) files.resize(f.file_index() + 1);
      files[f.file_index()].name = f.name();
      files[f.file_index()].bytes += f.data();
    }
    MYCEL_ASSIGN_OR_RETURN(auto fmt, data::ParseFormat(request.files(0).format()));
    MYCEL_ASSIGN_OR_RETURN(auto examples, data::ImportFiles(ToBlobs(files), fmt, trainer_->example_shape()));
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
