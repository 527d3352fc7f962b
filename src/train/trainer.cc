#include "train/trainer.h"

#include <malloc.h>
#include <sched.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <mutex>
#include <sstream>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "common/logging.h"
#include "common/status.h"
#include "data/sampler.h"
#include "federation/federation.h"
#include "model/model.h"

namespace mycel::train {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// How often the loop re-reads the policy and the store; a condition change is
// acted on within this many seconds (DESIGN: "decisions change within seconds").
constexpr double kPolicyPeriodS = 0.2;
constexpr double kRefreshPeriodS = 1.0;
// Loss shown in `mycel status`: exponential moving average over ~50 steps.
constexpr double kLossEmaAlpha = 0.02;
// Resting: a validation pass gains when its loss is below the best by this
// share; a rest burst trains this many steps; a merge that moves the shared
// weights by more than this share of their L2 norm ends a rest. Smaller merges
// add up: once those since the last look moved the weights by that share, a
// resting trainer validates the merged model, and wakes if its loss rose by
// more than kRestWakeRise over the lowest seen in the rest. Neighbours that
// keep training pull the shared model toward their own data; a resting node
// whose classes only it teaches would otherwise watch them fade, a merge too
// small to count at a time (three of a five-node ring rested at 57-61%).
constexpr double kRestMinGain = 0.002;
constexpr int64_t kRestBurstSteps = 64;
constexpr double kRestWakeShift = 1e-3;
constexpr double kRestWakeRise = 0.02;
// Drift guard: at most one good-checkpoint write this often (a new best every
// pass while a model learns would otherwise write one every eval_interval_s);
// a drop that comes back within this many windows of a rollback is accepted.
constexpr double kGoodCheckpointPeriodS = 30;
constexpr int64_t kGuardRecentWindows = 4;
// Predictions read a copy of the weights that follows training steps at most
// this often (any other change of the weights at once): a copy after every
// step would cost about as much as a small model's step, and an answer 20 ms
// behind the live model is one no caller can tell from a current one.
constexpr double kPublishPeriodS = 0.02;

double ThreadCpuSeconds() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

void LowerThreadPriority() {
  // The user's own work always wins: nice 19 for the thread, then SCHED_IDLE
  // (Linux applies both per thread). Failure is harmless; log it at debug.
  pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, tid, 19) != 0) {
    Logger("train")->debug("setpriority(19) failed: {}", std::strerror(errno));
  }
#ifdef SCHED_IDLE
  struct sched_param sp {};
  sp.sched_priority = 0;
  if (::sched_setscheduler(0, SCHED_IDLE, &sp) != 0) {
    Logger("train")->debug("SCHED_IDLE failed: {}", std::strerror(errno));
  }
#endif
}

std::string MetaLine(const std::string& key, const std::string& value) { return key + "=" + value + "\n"; }

std::string MetaValue(const std::string& meta, const std::string& key) {
  std::istringstream in(meta);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos && line.substr(0, eq) == key) return line.substr(eq + 1);
  }
  return "";
}

// The inference copy: a second Model of the same config, in eval mode from
// its creation on, holding a snapshot of the live weights. Published
// read-copy-update (Trainer::Impl::inference): once published it is never
// written, so any number of predictions run its forward at once without a
// lock, while the trainer steps, validates, checkpoints or merges on the live
// model. A forward of a native kind reads its weights and nothing else
// (networks.cc: no buffers, the GRU's flat weights are only read, dropout 0);
// a user's TorchScript module is reentrant as long as its forward writes no
// attribute of its own.
struct Inference {
  std::unique_ptr<model::Model> model;
};

}  // namespace

struct Trainer::Impl {
  Impl(const TrainerOptions& o, data::ExampleStore& s, Checkpointer& c, Policy& p, Clock* cl)
      : options(o), store(s), checkpointer(c), policy(p), clock(cl) {}

  // ---- construction-time state (immutable after Create) ----
  TrainerOptions options;
  data::ExampleStore& store;
  Checkpointer& checkpointer;
  Policy& policy;
  Clock* clock;
  std::unique_ptr<model::Model> model;          // the live model; its weights under model_mu
  std::unique_ptr<federation::Federation> fed;  // with TrainerOptions::federation; locks internally
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<data::Sampler> sampler;       // trainer thread only
  data::SamplerOptions sampler_options;
  int64_t sampler_generation = 0;               // store.generation() the sampler's rows are from
  data::ExampleShape shape;

  // ---- trainer-thread state ----
  torch::Tensor x_batch, y_batch;               // reused every step
  torch::Tensor val_x, val_y;
  int64_t val_count_loaded = -1;
  double loss_ema = kNaN;
  double last_eval_time = 0, last_ckpt_time = 0, last_refresh_time = -1e9, last_policy_time = -1e9;
  double rate_window_start = 0;
  int64_t rate_window_steps = 0;
  PolicyDecision decision;
  std::atomic<int64_t> steps_since_round{0};
  // This round's drift (WithSharedParameters), lr · drift after each local
  // step, and the learning rate those steps summed to; guarded by model_mu,
  // like the weights they move.
  std::vector<float> round_drift;
  bool round_open = false;                      // between a round's opening and its first closing call
  int64_t round_steps = 0;                      // local steps of the round under way
  double round_lr = 0;                          // their learning rates, summed
  double round_last_lr = 0;                     // the last one's
  // Resting (trainer thread, but for the flags guarded by mu below).
  double best_val_loss = std::numeric_limits<double>::infinity();
  int64_t no_gain = 0;                          // validation passes since the best
  bool resting = false;
  double rest_s = 0;                            // the rest under way
  double rest_until = 0;                        // monotonic time the next burst starts
  int64_t burst_left = 0;                       // steps left of the burst under way
  double rest_ref_loss = 0;                     // lowest validation loss seen in the rest under way
  bool rest_check_pending = false;              // merges moved the model: validate when the interval allows
  std::vector<float> merged_since;              // model_mu: what merges moved since the last look
  int64_t last_ckpt_steps = -1, last_ckpt_rounds = -1;
  // Drift guard (trainer thread).
  double guard_best = -std::numeric_limits<double>::infinity();  // best accuracy on this held-out set
  int64_t guard_below = 0;                      // consecutive passes more than the drop below it
  bool guard_good_pending = false;              // a best not yet saved as the good checkpoint
  double guard_good_time = -1e9;                // when the good checkpoint was last written
  double guard_good_acc = -1;                   // and the accuracy it was written at
  bool guard_good_failed = false;               // the last write failed: wait a period
  int64_t guard_since_rollback = -1;            // validation passes since the last rollback; -1 = none
  std::atomic<double> max_cpu_percent{100};
  std::atomic<int64_t> local_steps{0};          // TrainerOptions::local_steps, or SetLocalSteps's
  std::atomic<int> threads_wanted{1};
  int threads_set = 0;  // trainer thread only
  int64_t shared_numel = 0;
  // Held while the model's weights are read or written: for each step on the
  // trainer thread, for each posted task, and by WithSharedParameters, which
  // runs on the caller's (normal-priority) thread so a merge round is never
  // queued behind a starved SCHED_IDLE trainer. Order: model_mu, then mu.
  // Predictions never take it: they read the inference copy below.
  std::mutex model_mu;

  // ---- inference copy (read-copy-update) ----
  // The published copy, for Classify and PredictText on their callers'
  // threads: read with std::atomic_load, replaced with std::atomic_exchange,
  // never written while published. A prediction holds the copy it loaded
  // until it returns, so a publish never changes weights under a forward and
  // a forward never sees half of two publishes. Set by Init: never null after.
  std::shared_ptr<const Inference> inference;
  // The rest is guarded by model_mu, which every publish holds: publishes are
  // serialised and copy weights no step, merge or load is writing.
  // The copy the last publish retired, refilled by the next one once no
  // prediction still holds it (double buffering: two copies at rest, more only
  // while a slow prediction holds a retired one).
  std::shared_ptr<Inference> inference_spare;
  bool weights_dirty = false;                   // the live weights changed since the last publish
  double last_publish_time = -1e9;              // monotonic; steps publish once kPublishPeriodS passed
  bool publish_failed = false;                  // the last publish failed (logged once until one succeeds)
  // [model] personal_prior: log of this node's class shares in its training
  // rows, add-one smoothed ([classes] floats), added to the logits of every
  // prediction and `mycel eval`. Replaced (atomic_store) when the store's
  // rows change, read with atomic_load on the callers' threads; null while
  // off or not counted yet.
  std::shared_ptr<const torch::Tensor> log_prior;

  // ---- shared state ----
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;      // guarded by mu
  bool stop_requested = false;                  // guarded by mu
  bool data_dirty = true;                       // guarded by mu
  bool round_opened = false;                    // guarded by mu: a merge opened new local steps
  std::string wake_reason;                      // guarded by mu: why a rest must end ("" = it need not)
  bool wake_resets_best = false;                // guarded by mu: new data or a moving merge: another reference
  bool rest_check_due = false;                  // guarded by mu: small merges added up to kRestWakeShift
  TrainerStats stats;                           // guarded by mu
  std::thread thread;
  bool running = false;                         // guarded by mu
  bool stopped = false;                         // guarded by mu

  absl::Status Init();
  absl::Status Restore();
  // The federation's state from the initial shared weights, before Restore.
  absl::Status CreateFederation();
  // `federation`: with the federation's section (a rollback does not use it).
  absl::StatusOr<std::string> EncodeCheckpoint(bool final, bool federation = true);
  absl::Status WriteCheckpoint(const char* why, bool final = false);
  // Weights (and the optimizer's state, if it loads) from a decoded checkpoint.
  absl::Status LoadModelSections(const Sections& sections, const std::string& path);
  // After a validation pass (accuracy acc): keeps the good checkpoint, rolls back to it.
  void DriftGuard(double acc, double now);
  void RollBack(double acc);
  void CopyShared(std::vector<float>* out);
  // A new inference copy (Model::Create of the same config, in eval mode).
  absl::StatusOr<std::shared_ptr<Inference>> NewInference() const;
  // Copies the live weights into the spare inference copy (or a new one if a
  // prediction still holds the spare) and publishes it; model_mu held.
  absl::Status PublishInference();
  // Publishes when the weights changed since the last publish: with `force`
  // at once, else once kPublishPeriodS passed (after a training step). A
  // failure is logged and retried at the next call; predictions keep the
  // last published weights meanwhile. model_mu held.
  void MaybePublish(bool force);
  double LearningRate(int64_t step) const;
  // What the merge learns the drift correction per unit of: the learning
  // rate a full round of local steps sums to (K · the last step's lr), once
  // the round trained at all; 0 if it took no step. Not the sum of the steps
  // actually taken: a round cut short by a busy CPU moves the model less but
  // its merge still closes the whole gap to the neighbours, and dividing that
  // by one or two steps' lr blew c up 20-40x; the next full round then
  // applied it 40 times (measured: five daemons on two cores diverged to a
  // train loss of 360). Unpaced (local_steps = 0) the sum is the round.
  double RoundScale() const {
    if (round_steps == 0) return 0;
    const int64_t k = local_steps.load();
    if (k <= 0) return round_lr;
    return static_cast<double>(k) * round_last_lr;
  }
  void ApplyLearningRate(double lr);
  void WriteShared(const std::vector<float>& in);
  // Shared weights += scale · in (flattened as CopyShared); model_mu held.
  void AddShared(const std::vector<float>& in, float scale);

  // The trainer thread's loop; each pass runs the phases below in this order.
  void Loop();
  // Posted wake-ups under mu: false once a stop was requested; else takes
  // data_dirty as *force_refresh and ends a rest a wake reason asks to end.
  bool TakeWakeUps(bool* force_refresh);
  // SetThreads's count, applied between two steps.
  void ApplyThreadCount();
  // Merges added up while resting: a look at the model when the interval allows.
  void MaybeRestCheck(double now);
  void MaybeAskPolicy(double now);
  // Why the trainer takes no step now as (state, reason); empty if it trains.
  std::pair<std::string, std::string> IdleStateAndReason(double now) const;
  // Publishes, reports the idle state, checkpoints what merges changed and waits for a wake-up.
  void Idle(double now, const std::string& idle_state, const std::string& idle_reason);
  // One step, the validation ending a rest's burst, and the CPU cap's pause.
  void TrainOneStep(double now);
  // After a step: the step rate, a due validation pass and a due checkpoint.
  void AfterStep(double now);
  void Step();
  void MaybeRefresh(double now, bool force);
  // The store forgot rows: drops every row held in memory (train and
  // validation) so none is trained on again; the next refresh reloads what
  // is left. Holds model_mu.
  void DropForgottenRows();
  // `rest_check`: a look at a resting model that merges moved (RestCheck),
  // not the end of a burst or an ordinary pass (AfterValidation).
  void ValidationPass(bool rest_check = false);
  // After a validation pass (loss r): counts gains, starts or lengthens a rest.
  void AfterValidation(double loss, double now);
  void EndRest(const std::string& why, bool reset_backoff);
  // After a rest check's validation pass (loss r): wakes when r rose.
  void RestCheck(double loss);
  void SetState(const std::string& state, const std::string& reason);
  // Runs fn on the trainer thread (or inline when it is not running) and returns its result.
  template <typename T>
  T RunOnTrainer(std::function<T()> fn);
  void DrainTasks();
  EvalResult EvaluateTensors(const torch::Tensor& x, const torch::Tensor& y,
                             const torch::Tensor& logit_offset = {});
  // Recounts the store's training labels into log_prior (personal_prior only).
  void UpdatePrior();
  // Examples as (x, y). Images come as float32 scaled by 1/255, or with
  // `keep_u8` as the uint8 they are stored as (a quarter of the memory; what
  // Model::Evaluate accepts) when every example is uint8.
  std::pair<torch::Tensor, torch::Tensor> ToTensors(const std::vector<data::Example>& examples,
                                                    bool keep_u8 = false);
};

absl::Status Trainer::Impl::Init() {
  try {
    torch::set_num_threads(options.cpu.threads);
    MYCEL_ASSIGN_OR_RETURN(model, model::Model::Create(options.model));
    shape = model->example_shape();
    std::vector<torch::Tensor> params;
    for (const auto& p : model->parameters()) params.push_back(p.tensor);
    const auto& t = options.training;
    if (t.optimizer == "adam") {
      optimizer = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(t.lr));
    } else if (t.optimizer == "sgd") {
      optimizer = std::make_unique<torch::optim::SGD>(
          params, torch::optim::SGDOptions(t.lr).momentum(t.momentum));
    } else {
      return absl::InvalidArgumentError("unknown optimizer '" + t.optimizer + "'");
    }
    data::SamplerOptions so;
    so.shape = shape;
    so.capacity = t.max_examples;
    so.replay_fraction = t.replay_fraction;
    so.pool = t.replay_pool == "balanced" ? data::ReplayPool::kBalanced : data::ReplayPool::kUniform;
    so.seed = options.model.seed;
    sampler_options = so;
    sampler = std::make_unique<data::Sampler>(so);
    sampler_generation = store.generation();
    if (shape.text) {
      x_batch = torch::empty({t.batch_size, shape.width}, torch::kLong);
    } else {
      x_batch = torch::empty({t.batch_size, shape.width}, torch::kFloat);
      y_batch = torch::empty({t.batch_size}, torch::kLong);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("trainer: libtorch: ") + e.what_without_backtrace());
  }
  max_cpu_percent = options.cpu.max_cpu_percent;
  local_steps = options.local_steps;
  threads_wanted = options.cpu.threads;
  stats.model_kind = options.model.kind;
  stats.parameters = model->parameter_count();
  stats.shared_parameters = model->shared_parameter_count();
  stats.fingerprint = model->Fingerprint();
  stats.model_layout = model->Layout();
  stats.train_loss = stats.val_loss = stats.val_accuracy = stats.best_val_loss = kNaN;
  for (const auto& p : model->parameters()) {
    if (p.shared) shared_numel += p.tensor.numel();
  }
  if (options.federation) MYCEL_RETURN_IF_ERROR(CreateFederation());
  if (options.restore) MYCEL_RETURN_IF_ERROR(Restore());
  if (fed) {
    // Trust is kept per layer of the shared model. After Restore: trust
    // restored for another grouping starts over.
    std::vector<std::string> names;
    std::vector<size_t> sizes;
    for (auto& [name, size] : model->SharedLayers()) {
      names.push_back(name);
      sizes.push_back(size);
    }
    MYCEL_RETURN_IF_ERROR(fed->SetGroups(std::move(names), sizes));
  }
  {
    // Predictions answer from here on: before Start, and after Stop.
    std::lock_guard<std::mutex> model_lock(model_mu);
    MYCEL_RETURN_IF_ERROR(Annotate(PublishInference(), "trainer: the inference copy"));
  }
  if (options.model.personal_prior && !shape.text) UpdatePrior();
  last_ckpt_steps = stats.steps;  // what is on disk already (or nothing to save yet)
  last_ckpt_rounds = stats.rounds;
  double now = clock->MonotonicSeconds();
  last_eval_time = now - options.training.eval_interval_s;  // evaluate soon after data appears
  last_ckpt_time = now;
  rate_window_start = now;
  return absl::OkStatus();
}

absl::Status Trainer::Impl::CreateFederation() {
  const TrainerFederation& f = *options.federation;
  std::vector<float> initial;
  CopyShared(&initial);
  const int n = static_cast<int>(f.peer_keys.size());
  MYCEL_ASSIGN_OR_RETURN(fed, federation::Federation::Create(f.options, std::move(initial), n, n));
  fed->SetPeers(f.peer_keys);  // before Restore: a snapshot's mirrors follow their neighbour's key
  return absl::OkStatus();
}

void Trainer::Impl::CopyShared(std::vector<float>* out) {
  out->resize(shared_numel);
  float* dst = out->data();
  for (const auto& p : model->parameters()) {
    if (!p.shared) continue;
    auto t = p.tensor.detach().contiguous();
    std::memcpy(dst, t.data_ptr<float>(), t.numel() * sizeof(float));
    dst += t.numel();
  }
}

void Trainer::Impl::AddShared(const std::vector<float>& in, float scale) {
  torch::NoGradGuard no_grad;
  const float* src = in.data();
  for (const auto& p : model->parameters()) {
    if (!p.shared) continue;
    auto view = torch::from_blob(const_cast<float*>(src), p.tensor.sizes(), torch::kFloat);
    p.tensor.add_(view, scale);
    src += p.tensor.numel();
  }
}

void Trainer::Impl::WriteShared(const std::vector<float>& in) {
  torch::NoGradGuard no_grad;
  const float* src = in.data();
  for (const auto& p : model->parameters()) {
    if (!p.shared) continue;
    auto view = torch::from_blob(const_cast<float*>(src), p.tensor.sizes(), torch::kFloat);
    p.tensor.copy_(view);
    src += p.tensor.numel();
  }
}

absl::StatusOr<std::shared_ptr<Inference>> Trainer::Impl::NewInference() const {
  MYCEL_ASSIGN_OR_RETURN(std::unique_ptr<model::Model> copy, model::Model::Create(options.model));
  // The same config builds the same layout, but a torchscript kind reloads
  // its file, which may have been replaced since Create: copy_ would
  // broadcast a tensor of another shape rather than fail.
  const auto& live = model->parameters();
  const auto& mine = copy->parameters();
  bool same = live.size() == mine.size();
  for (size_t i = 0; same && i < live.size(); ++i) {
    same = live[i].name == mine[i].name && live[i].tensor.sizes() == mine[i].tensor.sizes() &&
           live[i].tensor.dtype() == mine[i].tensor.dtype();
  }
  if (!same) {
    return absl::FailedPreconditionError(absl::StrCat("the ", options.model.kind,
                                                      " model built again has another layout than the live one",
                                                      options.model.path.empty() ? "" : " (was model.path replaced?)"));
  }
  copy->SetTraining(false);  // once: predictions never change the mode
  auto inference = std::make_shared<Inference>();
  inference->model = std::move(copy);
  return inference;
}

absl::Status Trainer::Impl::PublishInference() {
  std::shared_ptr<Inference> next = std::move(inference_spare);
  // Predictions acquire only the published copy, so once the spare was
  // retired its count can only fall; at 1 no prediction holds it any more.
  // use_count() is a relaxed load: the fence orders the forwards' reads,
  // released as they dropped the copy, before the writes below.
  if (next && next.use_count() == 1) {
// ThreadSanitizer does not model fences (GCC warns under -fsanitize=thread);
// what this one orders, libtorch's reads and writes of the weights, it does
// not see either, libtorch not being instrumented.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
    std::atomic_thread_fence(std::memory_order_acquire);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  } else {
    next.reset();  // a prediction still reads it: it is freed when that one returns
    MYCEL_ASSIGN_OR_RETURN(next, NewInference());
  }
  try {
    torch::NoGradGuard no_grad;
    const auto& live = model->parameters();
    const auto& mine = next->model->parameters();
    for (size_t i = 0; i < live.size(); ++i) mine[i].tensor.copy_(live[i].tensor);
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("copying the weights: ") + e.what_without_backtrace());
  }
  std::shared_ptr<const Inference> retired =
      std::atomic_exchange(&inference, std::shared_ptr<const Inference>(std::move(next)));
  // Created non-const here, so writing it again once retired is allowed.
  inference_spare = std::const_pointer_cast<Inference>(std::move(retired));
  weights_dirty = false;
  last_publish_time = clock->MonotonicSeconds();
  return absl::OkStatus();
}

void Trainer::Impl::MaybePublish(bool force) {
  if (!weights_dirty) return;
  const double now = clock->MonotonicSeconds();
  if (!force && now - last_publish_time < kPublishPeriodS) return;
  absl::Status s = PublishInference();
  if (s.ok()) {
    if (publish_failed) Logger("train")->info("predictions follow the model again");
    publish_failed = false;
    return;
  }
  if (!publish_failed) {
    Logger("train")->error("predictions keep the weights of the last publish: {}", s.message());
  }
  publish_failed = true;
  last_publish_time = now;  // after a step, retry once a period passed, not at every step
}

absl::StatusOr<std::string> Trainer::Impl::EncodeCheckpoint(bool final, bool federation) {
  Sections sections;
  std::string meta;
  meta += MetaLine("version", "1");
  meta += MetaLine("kind", options.model.kind);
  meta += MetaLine("fingerprint", model->Fingerprint());
  meta += MetaLine("steps", std::to_string(stats.steps));
  meta += MetaLine("samples_trained", std::to_string(stats.samples_trained));
  auto params = model::SaveTensors(model->parameters());
  // A checkpoint without weights would be worse than none: fail it instead.
  if (!params.ok()) return Annotate(params.status(), "serializing weights");
  sections.Put("params", *std::move(params));
  std::ostringstream os;
  torch::serialize::OutputArchive archive;
  optimizer->save(archive);
  archive.save_to(os);
  sections.Put("optimizer", os.str());
  if (fed && federation) sections.Put("federation", fed->Serialize(final));
  meta += MetaLine("rounds", std::to_string(stats.rounds));
  meta += MetaLine("val_accuracy", std::to_string(stats.val_accuracy));
  sections.Put("meta", meta);
  return sections.Encode();
}

absl::Status Trainer::Impl::Restore() {
  MYCEL_ASSIGN_OR_RETURN(auto loaded, checkpointer.LoadNewest());
  if (!loaded) {
    Logger("train")->info("no checkpoint in {}: starting from seed {}", checkpointer.dir(),
                          options.model.seed);
    return absl::OkStatus();
  }
  MYCEL_ASSIGN_OR_RETURN(auto sections, Sections::Decode(loaded->payload));
  const std::string* meta = sections.Get("meta");
  const std::string* params = sections.Get("params");
  if (!meta || !params) return absl::DataLossError(loaded->path + ": missing sections");
  std::string fp = MetaValue(*meta, "fingerprint");
  if (fp != model->Fingerprint() || MetaValue(*meta, "kind") != options.model.kind) {
    return absl::FailedPreconditionError(
        loaded->path + " holds a " + MetaValue(*meta, "kind") + " model (fingerprint " + fp +
        ") but the config describes a " + options.model.kind + " model (fingerprint " +
        model->Fingerprint() + "); restore the [model] config, or run `mycel reset` (with myceld stopped) to "
        "start the new model afresh: it deletes the checkpoints and keeps the examples");
  }
  MYCEL_RETURN_IF_ERROR(LoadModelSections(sections, loaded->path));
  stats.steps = std::stoll("0" + MetaValue(*meta, "steps"));
  stats.samples_trained = std::stoll("0" + MetaValue(*meta, "samples_trained"));
  stats.rounds = std::stoll("0" + MetaValue(*meta, "rounds"));
  if (fed) {
    if (const std::string* bytes = sections.Get("federation"); bytes && !bytes->empty()) {
      MYCEL_RETURN_IF_ERROR(Annotate(fed->Restore(*bytes), loaded->path));
    }
  }
  stats.last_checkpoint_step = stats.steps;
  Logger("train")->info("resumed from {} at step {} ({} samples trained)", loaded->path, stats.steps,
                        stats.samples_trained);
  return absl::OkStatus();
}

absl::Status Trainer::Impl::LoadModelSections(const Sections& sections, const std::string& path) {
  const std::string* params = sections.Get("params");
  if (!params) return absl::DataLossError(path + ": missing sections");
  weights_dirty = true;  // even a load that fails may have written some tensors
  MYCEL_RETURN_IF_ERROR(Annotate(model::LoadTensors(*params, model->parameters()), path));
  if (const std::string* opt = sections.Get("optimizer"); opt && !opt->empty()) {
    try {
      std::istringstream is(*opt);
      torch::serialize::InputArchive archive;
      archive.load_from(is);
      optimizer->load(archive);
    } catch (const c10::Error& e) {
      // Weights are what matters; a fresh optimizer state only costs a few steps.
      Logger("train")->warn("{}: optimizer state not restored: {}", path, e.what_without_backtrace());
    }
  }
  return absl::OkStatus();
}

absl::Status Trainer::Impl::WriteCheckpoint(const char* why, bool final) {
  std::string payload;
  absl::Status s;
  try {
    auto encoded = EncodeCheckpoint(final);
    if (encoded.ok()) payload = *std::move(encoded);
    else s = Annotate(encoded.status(), "encoding checkpoint");
  } catch (const c10::Error& e) {
    s = absl::InternalError(std::string("encoding checkpoint: ") + e.what_without_backtrace());
  }
  if (s.ok()) s = checkpointer.Save(payload);
  std::lock_guard<std::mutex> lock(mu);
  if (s.ok()) {
    stats.checkpoints_written++;
    stats.last_checkpoint_step = stats.steps;
    last_ckpt_steps = stats.steps;
    last_ckpt_rounds = stats.rounds;
    Logger("train")->info("checkpoint {} written ({}) at step {}, {} bytes", checkpointer.last_seq(),
                          why, stats.steps, payload.size());
  } else {
    // Earlier checkpoints stay; training goes on and the next interval retries.
    Logger("train")->error("checkpoint failed ({}): {}", why, s.message());
  }
  return s;
}

void Trainer::Impl::SetState(const std::string& state, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu);
  if (stats.state == state && stats.reason == reason) return;
  // Pacing flips the reason twice a round while the state stays "training":
  // shown in status, not logged.
  if (stats.state != state) Logger("train")->info("state {} -> {} ({})", stats.state, state, reason);
  stats.state = state;
  stats.reason = reason;
}

void Trainer::Impl::DropForgottenRows() {
  Logger("train")->info("the store forgot examples: dropped the {} held in memory, reloading what is left",
                        sampler->size());
  sampler = std::make_unique<data::Sampler>(sampler_options);
  sampler_generation = store.generation();
  val_x = torch::Tensor();
  val_y = torch::Tensor();
  val_count_loaded = -1;
  best_val_loss = std::numeric_limits<double>::infinity();  // another validation set
  guard_best = -std::numeric_limits<double>::infinity();
  guard_good_acc = -1;
  guard_below = 0;
  last_refresh_time = -1e9;
}

// An ingest and a reload of the working set free far more than they keep
// (decoded files, row vectors, the store's reads); glibc holds freed heap
// pages in its arenas unless asked, and they would stay in the RSS.
static void ReleaseFreedMemory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

void Trainer::Impl::UpdatePrior() {
  auto counts = store.CountLabels();
  if (!counts.ok()) {
    Logger("train")->error("counting labels for personal_prior: {}", counts.status().message());
    return;
  }
  // Add-one smoothing: a class this node never saw keeps a small share
  // instead of -inf, so the shared model can still name it when sure enough.
  std::vector<double> n(static_cast<size_t>(shape.classes), 1.0);
  for (const data::LabelCount& c : *counts) {
    if (c.label >= 0 && c.label < shape.classes) n[static_cast<size_t>(c.label)] += static_cast<double>(c.train);
  }
  const torch::Tensor shares = torch::tensor(n, torch::kDouble);
  const torch::Tensor prior = (shares / shares.sum()).log().to(torch::kFloat);
  std::atomic_store(&log_prior, std::shared_ptr<const torch::Tensor>(std::make_shared<torch::Tensor>(prior)));
}

void Trainer::Impl::MaybeRefresh(double now, bool force) {
  if (store.generation() != sampler_generation) {
    std::lock_guard<std::mutex> model_lock(model_mu);
    DropForgottenRows();
    force = true;
  }
  if (!force && now - last_refresh_time < kRefreshPeriodS) return;
  last_refresh_time = now;
  auto loaded = sampler->Refresh(store);
  if (!loaded.ok()) {
    Logger("train")->error("reading new examples: {}", loaded.status().message());
  } else if (*loaded > 0) {
    Logger("train")->info("loaded {} new training examples ({} in memory)", *loaded, sampler->size());
  }
  bool trim = loaded.ok() && *loaded > 0;
  if (options.model.personal_prior && !shape.text && (trim || force)) UpdatePrior();
  int64_t val_count = store.Count(data::Split::kValidation);
  if (val_count != val_count_loaded) {
    auto rows = store.ReadSince(data::Split::kValidation, 0, options.training.max_eval_examples);
    if (rows.ok()) {
      std::vector<data::Example> examples;
      examples.reserve(rows->size());
      int64_t skipped = 0;
      for (auto& r : *rows) {
        if (data::Fits(r.example, shape)) {
          examples.push_back(std::move(r.example));
        } else {
          ++skipped;
        }
      }
      if (skipped > 0) {
        Logger("train")->warn("validation: skipped {} of {} stored examples that do not fit the model ({} values, "
                              "labels in [0, {})); they were stored under another [model]",
                              skipped, rows->size(), shape.width, shape.classes);
      }
      auto [x, y] = ToTensors(examples, /*keep_u8=*/true);
      std::lock_guard<std::mutex> model_lock(model_mu);  // ProbeLosses reads them from another thread
      val_x = x;
      val_y = y;
      val_count_loaded = val_count;
      guard_best = -std::numeric_limits<double>::infinity();  // accuracies on two sets do not compare
      guard_good_acc = -1;
      guard_below = 0;
      trim = true;
    }
  }
  if (trim) ReleaseFreedMemory();
}

std::pair<torch::Tensor, torch::Tensor> Trainer::Impl::ToTensors(
    const std::vector<data::Example>& examples, bool keep_u8) {
  const int64_t n = static_cast<int64_t>(examples.size());
  const int64_t w = shape.width;
  if (shape.text) {
    auto tokens = torch::empty({n, w}, torch::kLong);
    int64_t* t = tokens.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const auto& d = examples[i].data;
      for (int64_t j = 0; j < w; ++j) t[i * w + j] = static_cast<uint8_t>(d[j]);
    }
    return {tokens, torch::Tensor()};
  }
  auto y = torch::empty({n}, torch::kLong);
  int64_t* yp = y.data_ptr<int64_t>();
  const bool all_u8 = std::all_of(examples.begin(), examples.end(),
                                  [](const data::Example& e) { return e.dtype == data::DType::kU8; });
  if (keep_u8 && all_u8) {
    auto x = torch::empty({n, w}, torch::kByte);
    uint8_t* xp = x.data_ptr<uint8_t>();
    for (int64_t i = 0; i < n; ++i) {
      yp[i] = examples[i].label;
      std::memcpy(xp + i * w, examples[i].data.data(), w);
    }
    return {x, y};
  }
  auto x = torch::empty({n, w}, torch::kFloat);
  float* xp = x.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& e = examples[i];
    yp[i] = e.label;
    if (e.dtype == data::DType::kU8) {
      for (int64_t j = 0; j < w; ++j) xp[i * w + j] = static_cast<uint8_t>(e.data[j]) / 255.0f;
    } else {
      std::memcpy(xp + i * w, e.data.data(), w * sizeof(float));
    }
  }
  return {x, y};
}

EvalResult Trainer::Impl::EvaluateTensors(const torch::Tensor& x, const torch::Tensor& y,
                                          const torch::Tensor& logit_offset) {
  auto r = model->Evaluate(x, y, /*chunk=*/256, logit_offset);
  EvalResult out;
  out.examples = shape.text ? x.size(0) : r.count;
  out.loss = r.loss;
  out.accuracy = r.count > 0 ? static_cast<double>(r.correct) / r.count : kNaN;
  return out;
}

void Trainer::Impl::ValidationPass(bool rest_check) {
  if (!val_x.defined() || val_x.size(0) == 0) return;
  EvalResult r = EvaluateTensors(val_x, val_y);
  // What other threads freed since (an ingest's decoded files, a peer's
  // payloads) goes back to the system every pass, not only on a reload.
  ReleaseFreedMemory();
  {
    std::lock_guard<std::mutex> lock(mu);
    stats.val_loss = r.loss;
    stats.val_accuracy = r.accuracy;
    stats.eval_examples = val_x.size(0);
    stats.validations++;
    Logger("train")->info("step {}: train loss {:.4f}, validation loss {:.4f}, accuracy {:.4f} on {}",
                          stats.steps, stats.train_loss, r.loss, r.accuracy, stats.eval_examples);
  }
  const double now = clock->MonotonicSeconds();
  if (rest_check) {
    RestCheck(r.loss);
  } else {
    AfterValidation(r.loss, now);
  }
  DriftGuard(r.accuracy, now);
}

void Trainer::Impl::DriftGuard(double acc, double now) {
  const auto& t = options.training;
  if (t.drift_guard_drop <= 0 || !std::isfinite(acc)) return;
  if (guard_since_rollback >= 0) guard_since_rollback++;
  if (acc >= guard_best) {
    guard_best = acc;
    guard_good_pending = true;
  }
  guard_below = acc < guard_best - t.drift_guard_drop ? guard_below + 1 : 0;
  // Keep the best as the good checkpoint: at once if it gained more than half
  // the drop on the one kept (so a rollback lands within half the drop of the
  // best), else at most once a period, at a pass within a point of the best.
  const bool gained = acc > guard_good_acc + t.drift_guard_drop / 2;
  const bool due = (gained && !guard_good_failed) || now - guard_good_time >= kGoodCheckpointPeriodS;
  if (guard_good_pending && acc >= guard_best - 0.01 && due) {
    absl::Status s;
    try {
      auto encoded = EncodeCheckpoint(/*final=*/false, /*federation=*/false);
      s = encoded.ok() ? checkpointer.SaveGood(*encoded) : encoded.status();
    } catch (const c10::Error& e) {
      s = absl::InternalError(e.what_without_backtrace());
    }
    guard_good_time = now;
    guard_good_failed = !s.ok();  // a failure (full disk) retries after the period, not every pass
    if (s.ok()) {
      guard_good_pending = false;
      guard_good_acc = acc;
    } else {
      Logger("train")->error("drift guard: writing the good checkpoint failed: {}", s.message());
    }
  }
  if (guard_below < t.drift_guard_window) return;
  guard_below = 0;
  if (guard_since_rollback >= 0 && guard_since_rollback <= kGuardRecentWindows * t.drift_guard_window) {
    Logger("train")->warn(
        "drift guard: validation accuracy fell to {:.1f}% again within {} validations of rolling back; "
        "taking it as the new reference (new data or the federation moved the model, not drift a rollback undoes)",
        100 * acc, guard_since_rollback);
    guard_best = acc;
    guard_good_pending = true;
    guard_since_rollback = -1;
    return;
  }
  RollBack(acc);
}

void Trainer::Impl::RollBack(double acc) {
  const auto& t = options.training;
  auto fail = [&](const absl::Status& s) {
    Logger("train")->error("drift guard: validation accuracy {:.1f}% stayed more than {:.1f} points below its "
                           "best {:.1f}%, but rolling back failed: {}",
                           100 * acc, 100 * t.drift_guard_drop, 100 * guard_best, s.message());
    guard_best = acc;  // nothing to go back to: carry on from here
  };
  auto good = checkpointer.LoadGood();
  if (!good.ok()) return fail(good.status());
  if (!*good) return fail(absl::NotFoundError("no good checkpoint was written"));
  auto sections = Sections::Decode((*good)->payload);
  if (!sections.ok()) return fail(Annotate(sections.status(), (*good)->path));
  const std::string* meta = sections->Get("meta");
  if (!meta || MetaValue(*meta, "fingerprint") != model->Fingerprint()) {
    return fail(absl::FailedPreconditionError((*good)->path + " holds another model"));
  }
  absl::Status s;
  try {
    s = LoadModelSections(*sections, (*good)->path);
  } catch (const c10::Error& e) {
    s = absl::InternalError(e.what_without_backtrace());
  }
  if (!s.ok()) return fail(s);
  MaybePublish(/*force=*/true);  // predictions leave the drifted weights now too
  round_drift.clear();  // this round's share of the correction the rollback forgets
  if (fed) fed->ResetCorrection();
  const std::string step = MetaValue(*meta, "steps");
  const double good_acc = std::strtod(MetaValue(*meta, "val_accuracy").c_str(), nullptr);
  std::string what = absl::StrCat("validation accuracy ", absl::StrFormat("%.1f", 100 * acc), "% stayed more than ",
                                  absl::StrFormat("%.1f", 100 * t.drift_guard_drop), " points below its best ",
                                  absl::StrFormat("%.1f", 100 * guard_best), "% for ", t.drift_guard_window,
                                  " validations; rolled back to the good checkpoint of step ", step, " (",
                                  absl::StrFormat("%.1f", 100 * good_acc), "%)");
  Logger("train")->warn("drift guard: {}", what);
  guard_since_rollback = 0;
  guard_good_acc = good_acc;
  std::lock_guard<std::mutex> lock(mu);
  stats.drift_rollbacks++;
  stats.last_rollback = what;
}

void Trainer::Impl::AfterValidation(double loss, double now) {
  const auto& t = options.training;
  const bool gain = std::isfinite(loss) && loss < best_val_loss * (1 - kRestMinGain);
  if (std::isfinite(loss) && loss < best_val_loss) best_val_loss = loss;
  no_gain = gain ? 0 : no_gain + 1;
  if (resting && gain) {
    EndRest("a rest burst lowered the validation loss", /*reset_backoff=*/false);
  } else if (resting) {
    rest_s = std::min(t.rest_max_s, 2 * rest_s);  // the burst did not help: rest longer
    rest_until = now + rest_s;
    if (std::isfinite(loss)) rest_ref_loss = std::min(rest_ref_loss, loss);
  } else if (t.rest && no_gain >= t.rest_patience) {
    resting = true;
    rest_ref_loss = std::isfinite(loss) ? loss : best_val_loss;
    // A rest after a wake-up that did not help starts where the last left off.
    if (rest_s <= 0) rest_s = std::min(t.rest_max_s, static_cast<double>(t.rest_patience) * t.eval_interval_s);
    rest_until = now + rest_s;
    std::lock_guard<std::mutex> lock(mu);
    stats.rests++;
    Logger("train")->info("resting: no gain in {} validations (best loss {:.4f}); next burst in {:.0f} s", no_gain,
                          best_val_loss, rest_s);
  }
  std::lock_guard<std::mutex> lock(mu);
  stats.validations_without_gain = no_gain;
  stats.best_val_loss = std::isfinite(best_val_loss) ? best_val_loss : kNaN;
  stats.rest_s = resting ? rest_s : 0;
}

void Trainer::Impl::RestCheck(double loss) {
  if (!resting || !std::isfinite(loss)) return;
  if (loss <= rest_ref_loss * (1 + kRestWakeRise)) {
    rest_ref_loss = std::min(rest_ref_loss, loss);
    return;
  }
  EndRest(absl::StrFormat("merges raised the validation loss from %.4f to %.4f", rest_ref_loss, loss),
          /*reset_backoff=*/true);
  best_val_loss = loss;  // the merged model is the reference now, as after a moving merge
}

void Trainer::Impl::EndRest(const std::string& why, bool reset_backoff) {
  const bool was_resting = resting;
  if (resting) Logger("train")->info("rest ends: {}", why);
  resting = false;
  burst_left = 0;
  no_gain = 0;
  if (reset_backoff) rest_s = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (was_resting) stats.last_wake = why;
  stats.validations_without_gain = 0;
  stats.rest_s = 0;
}

// Cosine decay from lr to lr_final over lr_decay_steps, then lr_final: the
// early steps move fast, the late ones settle (measured on the five-node ring,
// README "Pacing": a constant 0.01 left the worst node swinging between 60
// and 77%; with drift correction configs/federation.toml decays 0.1 → 0.001
// over 10000 steps, README "Drift correction").
double Trainer::Impl::LearningRate(int64_t step) const { return ScheduledLearningRate(options.training, step); }

double ScheduledLearningRate(const TrainingOptions& t, int64_t step) {
  if (t.lr_decay_steps <= 0) return t.lr;
  const double frac = std::min<double>(1.0, static_cast<double>(step) / static_cast<double>(t.lr_decay_steps));
  return t.lr_final + (t.lr - t.lr_final) * 0.5 * (1.0 + std::cos(M_PI * frac));
}

void Trainer::Impl::ApplyLearningRate(double lr) {
  for (auto& group : optimizer->param_groups()) {
    if (auto* sgd = dynamic_cast<torch::optim::SGDOptions*>(&group.options())) sgd->lr(lr);
    if (auto* adam = dynamic_cast<torch::optim::AdamOptions*>(&group.options())) adam->lr(lr);
  }
}

void Trainer::Impl::Step() {
  std::lock_guard<std::mutex> model_lock(model_mu);
  const int64_t batch = options.training.batch_size;
  const double lr = LearningRate(stats.steps);
  if (options.training.lr_decay_steps > 0) ApplyLearningRate(lr);
  bool ok = shape.text ? sampler->NextTokenBatch(batch, x_batch.data_ptr<int64_t>())
                       : sampler->NextBatch(batch, x_batch.data_ptr<float>(), y_batch.data_ptr<int64_t>());
  if (!ok) return;
  optimizer->zero_grad();
  // A pool that weighs rows by loss gets each row's, at no extra forward.
  torch::Tensor each = sampler->wants_losses() ? model->ExampleLosses(x_batch, y_batch) : torch::Tensor();
  torch::Tensor loss = each.defined() ? each.mean() : model->Loss(x_batch, y_batch);
  loss.backward();
  optimizer->step();
  if (each.defined()) {
    const torch::Tensor l = each.detach().to(torch::kFloat).contiguous();
    sampler->ReportLosses(l.data_ptr<float>(), l.numel());
  }
  // The round's local steps: paced, its budget of them (a step past it, as
  // in a benchmark, is not one); unpaced, every step until the round closes.
  if (const int64_t k = local_steps.load(); round_open && (k == 0 || round_steps < k)) {
    if (!round_drift.empty()) AddShared(round_drift, static_cast<float>(lr));
    round_steps++;
    round_lr += lr;
    round_last_lr = lr;
  }
  weights_dirty = true;
  MaybePublish(/*force=*/false);
  double l = loss.item<double>();
  loss_ema = std::isnan(loss_ema) ? l : (1 - kLossEmaAlpha) * loss_ema + kLossEmaAlpha * l;
  rate_window_steps++;
  steps_since_round++;
  std::lock_guard<std::mutex> lock(mu);
  stats.steps++;
  stats.samples_trained += batch;
  stats.train_loss = loss_ema;
  stats.learning_rate = lr;
}

void Trainer::Impl::DrainTasks() {
  std::deque<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(mu);
    work.swap(tasks);
  }
  for (auto& fn : work) {
    std::lock_guard<std::mutex> model_lock(model_mu);
    fn();
  }
}

bool Trainer::Impl::TakeWakeUps(bool* force_refresh) {
  std::string wake;
  bool reset_best = false;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (stop_requested) return false;
    *force_refresh = data_dirty;
    data_dirty = false;
    wake.swap(wake_reason);
    reset_best = wake_resets_best;
    wake_resets_best = false;
    rest_check_pending = rest_check_pending || rest_check_due;
    rest_check_due = false;
  }
  if (reset_best) best_val_loss = std::numeric_limits<double>::infinity();  // another validation set or model
  if (!wake.empty()) EndRest(wake, /*reset_backoff=*/true);
  return true;
}

void Trainer::Impl::ApplyThreadCount() {
  if (const int t = threads_wanted.load(); t != threads_set) {
    torch::set_num_threads(t);  // between two steps, on the thread that trains
    threads_set = t;
  }
}

void Trainer::Impl::MaybeRestCheck(double now) {
  // (Only when training is allowed: on battery or paused, a rest's checks wait too.)
  if (rest_check_pending && decision.allowed &&
      (!resting || now - last_eval_time >= options.training.eval_interval_s)) {
    // Merges added up while resting: has the shared model left this node's data behind?
    std::lock_guard<std::mutex> model_lock(model_mu);
    std::fill(merged_since.begin(), merged_since.end(), 0.0f);
    if (resting) {
      ValidationPass(/*rest_check=*/true);
      last_eval_time = now;
    }
    rest_check_pending = false;
  }
}

void Trainer::Impl::MaybeAskPolicy(double now) {
  if (now - last_policy_time >= kPolicyPeriodS) {
    decision = policy.Decide();
    last_policy_time = now;
  }
}

std::pair<std::string, std::string> Trainer::Impl::IdleStateAndReason(double now) const {
  if (!decision.allowed) return {decision.state, decision.reason};
  if (sampler->size() == 0) return {"waiting_for_data", "waiting for data"};
  if (resting && burst_left == 0 && now < rest_until) {
    return {"resting", "converged: no gain in " + std::to_string(no_gain) + " validations"};
  }
  if (const int64_t k = local_steps.load(); k > 0 && steps_since_round >= k) {
    // Paced: this round's local steps are done; the next merge opens more.
    return {"training", "waiting for the next merge round"};
  }
  return {};
}

void Trainer::Impl::Idle(double now, const std::string& idle_state, const std::string& idle_reason) {
  {
    // Idle: no step publishes the last steps' weights until training
    // resumes, so publish them now, before the state says idle (a caller
    // that sees it idle gets answers from the weights it holds).
    std::lock_guard<std::mutex> model_lock(model_mu);
    MaybePublish(/*force=*/true);
  }
  SetState(idle_state, idle_reason);
  if (now - last_ckpt_time >= options.training.checkpoint_interval_s) {
    // Held or resting, merges may still move the model: checkpoint what changed, not an unchanged one.
    std::lock_guard<std::mutex> model_lock(model_mu);
    bool changed;
    {
      std::lock_guard<std::mutex> lock(mu);
      changed = stats.steps != last_ckpt_steps || stats.rounds != last_ckpt_rounds;
    }
    if (changed) (void)WriteCheckpoint("periodic");
    last_ckpt_time = now;
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::milliseconds(200),
              [&] { return stop_requested || data_dirty || round_opened || !tasks.empty(); });
  round_opened = false;
  if (idle_reason != "waiting for the next merge round") {
    last_policy_time = -1e9;  // re-ask the policy after any wake-up
  }
}

void Trainer::Impl::TrainOneStep(double now) {
  SetState("training", resting ? "a short burst while resting" : "training");
  const double cpu_before = ThreadCpuSeconds();
  Step();
  if (resting && burst_left > 0 && --burst_left == 0) {
    std::lock_guard<std::mutex> model_lock(model_mu);
    ValidationPass();  // did the burst gain? (AfterValidation)
    last_eval_time = now;
  }
  if (const double cap = max_cpu_percent.load(); cap < 100) {
    // Duty cycle: idle (cpu / cap − cpu) after each step so the thread's CPU
    // share stays at `cap` percent, whatever the step costs.
    const double cpu = ThreadCpuSeconds() - cpu_before;
    const double rest = cpu * (100.0 / cap - 1.0);
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::duration<double>(rest), [&] { return stop_requested || !tasks.empty(); });
  }
}

void Trainer::Impl::AfterStep(double now) {
  if (now - rate_window_start >= 2.0) {
    std::lock_guard<std::mutex> lock(mu);
    stats.steps_per_s = rate_window_steps / (now - rate_window_start);
    rate_window_start = now;
    rate_window_steps = 0;
  }
  if (!resting && now - last_eval_time >= options.training.eval_interval_s) {  // a burst validates at its end
    std::lock_guard<std::mutex> model_lock(model_mu);
    ValidationPass();
    last_eval_time = now;
  }
  if (now - last_ckpt_time >= options.training.checkpoint_interval_s) {
    std::lock_guard<std::mutex> model_lock(model_mu);
    (void)WriteCheckpoint("periodic");
    last_ckpt_time = now;
  }
}

void Trainer::Impl::Loop() {
  if (options.lowest_priority) LowerThreadPriority();
  for (;;) {
    DrainTasks();
    bool force_refresh;
    if (!TakeWakeUps(&force_refresh)) break;
    ApplyThreadCount();
    double now = clock->MonotonicSeconds();
    MaybeRefresh(now, force_refresh);
    MaybeRestCheck(now);
    MaybeAskPolicy(now);
    const auto [idle_state, idle_reason] = IdleStateAndReason(now);
    if (resting && burst_left == 0 && now >= rest_until && idle_state.empty()) burst_left = kRestBurstSteps;
    if (!idle_state.empty()) {
      Idle(now, idle_state, idle_reason);
      continue;
    }
    TrainOneStep(now);
    AfterStep(now);
  }
}

template <typename T>
T Trainer::Impl::RunOnTrainer(std::function<T()> fn) {
  std::unique_lock<std::mutex> lock(mu);
  if (!running || stop_requested) {
    lock.unlock();
    std::lock_guard<std::mutex> model_lock(model_mu);
    return fn();
  }
  auto task = std::make_shared<std::packaged_task<T()>>(std::move(fn));
  std::future<T> result = task->get_future();
  tasks.emplace_back([task] { (*task)(); });
  lock.unlock();
  cv.notify_all();
  return result.get();
}

// ---------------------------------------------------------------------------

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Trainer::~Trainer() { (void)Stop(); }

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainerOptions& options,
                                                         data::ExampleStore& store,
                                                         Checkpointer& checkpointer, Policy& policy,
                                                         Clock* clock) {
  auto impl = std::make_unique<Impl>(options, store, checkpointer, policy, clock);
  MYCEL_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

void Trainer::Start() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->running || impl_->stopped) return;
  impl_->running = true;
  impl_->thread = std::thread([this] { impl_->Loop(); });
}

absl::Status Trainer::Stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopped) return absl::OkStatus();
    impl_->stopped = true;
    impl_->stop_requested = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->running = false;
  }
  impl_->DrainTasks();  // anyone still waiting gets an answer
  impl_->SetState("stopped", "stopped");
  std::lock_guard<std::mutex> model_lock(impl_->model_mu);
  impl_->MaybePublish(/*force=*/true);  // the last steps' weights, which predictions answer from hereafter
  return impl_->WriteCheckpoint("shutdown", /*final=*/true);
}

TrainerStats Trainer::Stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

data::ExampleShape Trainer::example_shape() const { return impl_->shape; }

void Trainer::SetThreads(int threads) { impl_->threads_wanted = std::max(1, threads); }

void Trainer::SetLocalSteps(int64_t steps) {
  impl_->local_steps = std::max<int64_t>(0, steps);
  impl_->cv.notify_all();
}

void Trainer::SetMaxCpuPercent(double percent) {
  impl_->max_cpu_percent = percent;
  impl_->cv.notify_all();
}

void Trainer::Wake(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->data_dirty = true;
    impl_->wake_reason = why;
    impl_->wake_resets_best = impl_->wake_resets_best || why == "ingest";
  }
  impl_->cv.notify_all();
}

absl::StatusOr<EvalResult> Trainer::Evaluate(const std::vector<data::Example>& examples) {
  if (examples.empty()) return absl::InvalidArgumentError("no examples to evaluate");
  Impl* impl = impl_.get();
  for (size_t i = 0; i < examples.size(); ++i) {
    if (!data::Fits(examples[i], impl->shape)) {
      return absl::InvalidArgumentError(
          "example " + std::to_string(i) + " does not fit the model: label " + std::to_string(examples[i].label) +
          " with " + std::to_string(examples[i].width()) + " values; the model takes " +
          std::to_string(impl->shape.width) + " values and labels in [0, " + std::to_string(impl->shape.classes) + ")");
    }
  }
  return impl->RunOnTrainer<absl::StatusOr<EvalResult>>([impl, &examples]() -> absl::StatusOr<EvalResult> {
    try {
      auto [x, y] = impl->ToTensors(examples, /*keep_u8=*/true);
      // What predictions answer: with this node's prior when it is on.
      const std::shared_ptr<const torch::Tensor> prior = std::atomic_load(&impl->log_prior);
      return impl->EvaluateTensors(x, y, prior ? *prior : torch::Tensor());
    } catch (const c10::Error& e) {
      return absl::InternalError(std::string("evaluate: ") + e.what_without_backtrace());
    }
  });
}

namespace {
std::vector<std::pair<int64_t, double>> TopK(const torch::Tensor& probs, int k) {
  k = std::max(1, std::min<int>(k, static_cast<int>(probs.size(0))));
  auto top = probs.topk(k);
  auto values = std::get<0>(top), indices = std::get<1>(top);
  std::vector<std::pair<int64_t, double>> out;
  for (int i = 0; i < k; ++i) out.emplace_back(indices[i].item<int64_t>(), values[i].item<double>());
  return out;
}
}  // namespace

absl::StatusOr<std::vector<std::pair<int64_t, double>>> Trainer::Classify(const data::Example& example,
                                                                           int top_k) {
  Impl* impl = impl_.get();
  if (impl->shape.text) return absl::FailedPreconditionError("the model is a char_lm: predict takes --text");
  if (example.width() != impl->shape.width) {
    return absl::InvalidArgumentError("input has " + std::to_string(example.width()) +
                                      " values but the model takes " + std::to_string(impl->shape.width));
  }
  // On this thread, against the published copy (Impl::inference): no lock, so
  // no wait for a step, a validation pass, a checkpoint or a merge. The copy
  // stays ours until we return, whatever is published meanwhile.
  const std::shared_ptr<const Inference> inference = std::atomic_load(&impl->inference);
  try {
    torch::NoGradGuard no_grad;
    auto [x, y] = impl->ToTensors({example});
    torch::Tensor logits = inference->model->Forward(x);
    if (const std::shared_ptr<const torch::Tensor> prior = std::atomic_load(&impl->log_prior)) {
      logits = logits + *prior;
    }
    auto probs = torch::softmax(logits, 1)[0];
    return TopK(probs, top_k);
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("predict: ") + e.what_without_backtrace());
  }
}

absl::StatusOr<std::pair<std::vector<std::pair<int64_t, double>>, std::string>> Trainer::PredictText(
    const std::string& prompt, int top_k, int generate) {
  Impl* impl = impl_.get();
  if (!impl->shape.text) return absl::FailedPreconditionError("the model is a classifier: predict takes an input file");
  if (prompt.empty()) return absl::InvalidArgumentError("empty prompt");
  // As Classify: on this thread, every byte of the continuation from the one copy loaded here.
  const std::shared_ptr<const Inference> inference = std::atomic_load(&impl->inference);
  try {
    torch::NoGradGuard no_grad;
    model::Model& m = *inference->model;
    const int64_t context = impl->shape.width - 1;
    std::string text = prompt;
    auto next_probs = [&]() {
      std::string window = text.size() > static_cast<size_t>(context) ? text.substr(text.size() - context) : text;
      auto tokens = torch::empty({1, static_cast<int64_t>(window.size())}, torch::kLong);
      for (size_t i = 0; i < window.size(); ++i) tokens[0][i] = static_cast<int64_t>(static_cast<uint8_t>(window[i]));
      auto logits = m.Forward(tokens);
      return torch::softmax(logits[0][logits.size(1) - 1], 0);
    };
    auto top = TopK(next_probs(), top_k);
    std::string continuation;
    for (int i = 0; i < generate; ++i) {
      char c = static_cast<char>(next_probs().argmax().item<int64_t>());
      continuation.push_back(c);
      text.push_back(c);
    }
    return std::make_pair(top, continuation);
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("predict: ") + e.what_without_backtrace());
  }
}

absl::Status Trainer::Export(const std::string& path) {
  Impl* impl = impl_.get();
  return impl->RunOnTrainer<absl::Status>([impl, &path] { return impl->model->Export(path); });
}

absl::Status Trainer::WithSharedParameters(Visit fn, bool opens_round, std::vector<float> drift) {
  Impl* impl = impl_.get();
  if (!drift.empty() && (!opens_round || static_cast<int64_t>(drift.size()) != impl->shared_numel)) {
    return absl::InvalidArgumentError(absl::StrCat("drift of ", drift.size(), " values for ", impl->shared_numel,
                                                   " shared parameters", opens_round ? "" : " outside a round's opening"));
  }
  bool notify = false;  // a rest must end
  try {
    std::lock_guard<std::mutex> model_lock(impl->model_mu);  // waits for at most one step
    if (fn) {
      std::vector<float> shared;
      impl->CopyShared(&shared);
      int64_t samples;
      {
        std::lock_guard<std::mutex> lock(impl->mu);
        samples = impl->stats.samples_trained;
      }
      std::vector<float> before = shared;
      if (fn(shared, samples, impl->RoundScale())) {
        impl->WriteShared(shared);
        impl->weights_dirty = true;
        impl->MaybePublish(/*force=*/true);  // predictions see the merge at once
        // A merge that moved the model ends a rest: there is something new to learn from.
        // This merge's move, and the merges' since the last look together, in one pass.
        impl->merged_since.resize(shared.size(), 0.0f);
        double moved = 0, norm = 0, together = 0;
        for (size_t k = 0; k < shared.size(); ++k) {
          const float d = shared[k] - before[k];
          moved += static_cast<double>(d) * d;
          norm += static_cast<double>(before[k]) * before[k];
          impl->merged_since[k] += d;
          together += static_cast<double>(impl->merged_since[k]) * impl->merged_since[k];
        }
        const double shift = std::sqrt(moved / std::max(norm, 1e-30));
        if (shift > kRestWakeShift) {
          std::fill(impl->merged_since.begin(), impl->merged_since.end(), 0.0f);
          std::lock_guard<std::mutex> lock(impl->mu);
          impl->wake_reason = absl::StrCat("a merge moved the shared weights by ", shift * 100, "%");
          // The best loss was of a model the merge replaced: measured against
          // it, a non-IID node whose own-data best came from training alone
          // never gains again and rests at whatever its neighbours agree on.
          impl->wake_resets_best = true;
          notify = true;
        } else if (std::sqrt(together / std::max(norm, 1e-30)) > kRestWakeShift) {
          std::lock_guard<std::mutex> lock(impl->mu);
          impl->rest_check_due = true;
        }
      }
    }
    if (opens_round) {
      impl->round_drift = std::move(drift);
      impl->round_open = true;
      impl->round_steps = 0;
      impl->round_lr = 0;
    } else {
      impl->round_open = false;  // round_lr stays for the merge that follows the publish
    }
    if (!opens_round) {
      // Publish and merge close the round's local steps: the model rests
      // merged until the next round opens, whenever the trainer got its CPU.
      impl->steps_since_round = impl->local_steps.load();
      if (notify) impl->cv.notify_all();
      return absl::OkStatus();
    }
    impl->steps_since_round = 0;
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->stats.rounds++;
      impl->round_opened = true;
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("merge: ") + e.what_without_backtrace());
  }
  impl->cv.notify_all();  // the next local steps may start
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> Trainer::ProbeLosses(int64_t examples, size_t count,
                                                         const std::function<void(size_t, float*)>& make) {
  Impl* impl = impl_.get();
  if (examples < 1) return absl::InvalidArgumentError("probe: needs at least one example");
  try {
    std::lock_guard<std::mutex> model_lock(impl->model_mu);  // waits for at most one step
    if (!impl->val_x.defined() || impl->val_x.size(0) == 0) {
      return absl::FailedPreconditionError("probe: no validation examples yet");
    }
    // A fresh random batch of the held-out examples each probe, the same
    // one for every candidate (the comparison is paired).
    const int64_t n = std::min<int64_t>(examples, impl->val_x.size(0));
    torch::Tensor pick = torch::randperm(impl->val_x.size(0), torch::kLong).slice(0, 0, n);
    torch::Tensor x = impl->val_x.index_select(0, pick);
    torch::Tensor y = impl->val_y.defined() ? impl->val_y.index_select(0, pick) : torch::Tensor();
    std::vector<float> own, candidate(static_cast<size_t>(impl->shared_numel));
    impl->CopyShared(&own);
    std::vector<double> losses(count);
    // The candidates pass through the live model under model_mu, which every
    // publish of the inference copy holds, so no prediction ever sees one.
    // The model's own weights (bit for bit: nothing to publish) and mode go
    // back however this returns, a throwing make or Evaluate too: a candidate
    // left in the model would be trained on, checkpointed and published.
    struct PutBack {
      Impl* impl;
      const std::vector<float>& own;
      bool training;
      ~PutBack() {
        try {
          impl->WriteShared(own);
        } catch (const c10::Error& e) {
          Logger("train")->error("probe: putting the model's weights back: {}", e.what_without_backtrace());
        }
        impl->model->SetTraining(training);
      }
    } put_back{impl, own, impl->model->IsTraining()};
    impl->model->SetTraining(false);
    for (size_t i = 0; i < count; ++i) {
      make(i, candidate.data());
      impl->WriteShared(candidate);
      losses[i] = impl->model->Evaluate(x, y).loss;
    }
    return losses;
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string("probe: ") + e.what_without_backtrace());
  }
}

int64_t Trainer::shared_size() const { return impl_->shared_numel; }

std::vector<std::pair<std::string, size_t>> Trainer::shared_layers() const {
  return impl_->model->SharedLayers();  // the layout never changes after Create
}

federation::Federation* Trainer::federation() const { return impl_->fed.get(); }

void Trainer::DropForgottenRows() {
  Impl* impl = impl_.get();
  impl->RunOnTrainer<bool>([impl] {
    if (impl->store.generation() != impl->sampler_generation) impl->DropForgottenRows();
    return true;
  });
  Wake("forget");
}

absl::Status Trainer::CheckpointNow() {
  Impl* impl = impl_.get();
  return impl->RunOnTrainer<absl::Status>([impl] { return impl->WriteCheckpoint("requested"); });
}

absl::Status Trainer::TrainStepsForBenchmark(int64_t steps) {
  Impl* impl = impl_.get();
  impl->MaybeRefresh(impl->clock->MonotonicSeconds(), true);
  if (impl->sampler->size() == 0) return absl::FailedPreconditionError("no examples in the store");
  for (int64_t i = 0; i < steps; ++i) impl->Step();
  std::lock_guard<std::mutex> model_lock(impl->model_mu);
  impl->MaybePublish(/*force=*/true);  // predictions see every step the call took
  return absl::OkStatus();
}

}  // namespace mycel::train
