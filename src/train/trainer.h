// Trainer: the thread that owns the live model and keeps training it.
//
// Between two steps it runs posted work (evaluation, export, checkpoint),
// asks the Policy whether it may train, refreshes its Sampler from the
// ExampleStore when data arrived, trains one batch, evaluates on the held-out
// split every eval_interval_s and checkpoints every checkpoint_interval_s.
// The live model's weights are read and written under one lock (the model
// lock): by this thread's steps, validation passes, checkpoints and posted
// work, and by merges (WithSharedParameters) and trust probes (ProbeLosses)
// on their callers' threads. Predictions read a copy instead (below).
//
// Create() restores the newest valid checkpoint (weights, optimizer state,
// counters); a checkpoint of a different model (fingerprint) is an error, so
// a config change never silently discards what a user's model learned.
// Stop() finishes the current step and writes a final checkpoint.
//
// Thread-safety: all public methods may be called from any thread. Evaluate,
// Export, CheckpointNow and DropForgottenRows block until the trainer thread
// has run them between two steps (or run inline, under the model lock, before
// Start / after Stop), so they wait for the step, validation pass, checkpoint
// or merge under way. Classify and PredictText do not wait for any of these:
// they run on the calling thread, any number at once, against an inference
// copy of the model that they read without a lock. The copy is an eval-mode
// snapshot of the weights, published read-copy-update: never written while a
// prediction can hold it, replaced whole by the next publish, so an answer
// comes from one consistent set of weights, never from a mix of two. Publishes
// hold the model lock. The copy answers from Create on (the restored weights)
// and follows training steps at most every 20 ms, and everything else at
// once: a merge that writes weights, a drift guard rollback, and the trainer
// holding, resting, waiting or stopping with steps not yet published. A trust
// probe's candidate weights are never published. It costs the weights'
// memory twice over (the published copy and a spare the next publish
// refills), and once more for each copy a slow prediction still holds.
//
// Resting ([training] rest): after rest_patience validation passes without a
// gain in validation loss the trainer stops training (state "resting") and
// tries a short burst of steps after rests that double from rest_patience ·
// eval_interval_s up to rest_max_s, leaving the rest when a burst gains. An
// ingest or a policy change (Wake) or a merge that moves the shared weights
// by more than kRestWakeShift of their norm ends it at once and resets the
// backoff. Merge rounds go on while it rests; once smaller merges have moved
// the weights that far together, the trainer validates the merged model and
// wakes if its loss rose by more than kRestWakeRise over the rest's lowest
// (neighbours that train on pull the model away from this node's data).
//
// Drift guard ([training] drift_guard_drop, drift_guard_window): the model
// at a new best validation accuracy is kept as the good checkpoint
// (Checkpointer::SaveGood, at most one write every kGoodCheckpointPeriodS).
// When accuracy stays more than drift_guard_drop below that best for
// drift_guard_window passes, the trainer reloads the good checkpoint's
// weights and optimizer state, has the federation forget its drift
// correction (Federation::ResetCorrection) and carries on; the counters and
// the federation's sequence, mirrors and public copy go forward, so the next
// publish sends neighbours the way back as an ordinary delta rather than a
// forked stream. A drop that returns within a few windows of a rollback was
// not drift the rollback could undo (new data, the federation moving the
// model): it becomes the new reference instead of looping. The best resets
// when the held-out set changes, as accuracies on two sets do not compare.
// This header is torch-free: the model lives behind a pimpl.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "data/example.h"
#include "data/example_store.h"
#include "federation/options.h"
#include "federation/shared_weights.h"
#include "model/options.h"
#include "train/checkpointer.h"
#include "train/options.h"
#include "train/policy.h"

namespace mycel::federation { class Federation; }

namespace mycel::train {

// The federation a node takes part in. The trainer keeps its state (a
// federation::Federation: public copy, log, mirrors, correction, trust) and
// checkpoints it atomically with the weights, in the checkpoint's
// "federation" section: made at Create from the model's initial shared
// weights, restored with the newest checkpoint, saved in every checkpoint
// (the good one excepted), its drift correction forgotten when the drift
// guard rolls the weights back.
struct TrainerFederation {
  federation::FederationOptions options;  // [federation] (checked by the config reader)
  std::vector<std::string> peer_keys;     // the pinned neighbours' raw public keys, in mirror order
};

struct TrainerOptions {
  mycel::model::ModelOptions model;
  TrainingOptions training;
  bool lowest_priority = true;   // nice 19 + SCHED_IDLE on the trainer thread
  bool restore = true;           // load the newest checkpoint in Create
  // Pacing: at most this many steps between two WithSharedParameters calls
  // (merge rounds); 0 = unpaced. Nodes whose data differ drift apart if they
  // train thousands of steps between merges.
  int64_t local_steps = 0;
  std::optional<TrainerFederation> federation;  // none: a node that takes part in no federation
  CpuOptions cpu;                // duty-cycle cap and libtorch threads ([policy])
};

struct TrainerStats {
  std::string state = "starting";   // training | resting | paused | waiting_for_data | starting | stopped | ...
  std::string reason = "starting";
  int64_t steps = 0;
  int64_t samples_trained = 0;
  int64_t rounds = 0;               // WithSharedParameters calls (merge rounds)
  double learning_rate = 0;         // of the last step (changes with [training] lr_decay_steps)
  double train_loss = 0;            // NaN until the first step
  double val_loss = 0;              // NaN until the first validation pass
  double val_accuracy = 0;          // NaN until the first validation pass
  int64_t eval_examples = 0;
  int64_t validations = 0;          // validation passes since start (the history records each)
  double steps_per_s = 0;
  int64_t checkpoints_written = 0;
  int64_t validations_without_gain = 0;  // since the best validation loss (resting)
  // What rests are measured against: the best validation loss since the
  // validation set last changed (ingest, forget) or a merge moved the model.
  double best_val_loss = 0;         // NaN until the first validation pass
  double rest_s = 0;                // length of the rest under way; 0 when not resting
  int64_t rests = 0;                // times the trainer went to rest since start
  std::string last_wake;            // why the last rest ended ("" = none yet)
  int64_t drift_rollbacks = 0;      // drift guard rollbacks since start
  std::string last_rollback;        // what the last one did ("" = none)
  int64_t last_checkpoint_step = -1;
  int64_t parameters = 0;
  int64_t shared_parameters = 0;
  std::string model_kind;
  std::string fingerprint;
  std::string model_layout;         // Model::Layout(): what the fingerprint hashes
};

// The learning rate of step `step` under [training]: cosine decay from lr to
// lr_final over lr_decay_steps, then lr_final (lr_decay_steps = 0: lr).
// The trainer's schedule, shared with mycel-sim.
double ScheduledLearningRate(const TrainingOptions& t, int64_t step);

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
  int64_t examples = 0;
};

// The federation's view of the trainer is federation::SharedWeights (the
// gossip rounds publish, merge and probe through it); the rest is the daemon's.
class Trainer : public federation::SharedWeights {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainerOptions& options,
                                                         data::ExampleStore& store,
                                                         Checkpointer& checkpointer,
                                                         Policy& policy,
                                                         Clock* clock = Clock::Real());
  ~Trainer() override;  // Stop()s if still running
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  void Start();
  // Stops between two steps, then writes a final checkpoint. Idempotent.
  absl::Status Stop();

  TrainerStats Stats() const;
  data::ExampleShape example_shape() const;
  // Tells the trainer that examples were added or the policy changed; ends a
  // rest (`why` is logged and kept as TrainerStats::last_wake: "ingest",
  // "resume", ...).
  void Wake(const std::string& why = "woken");
  // Paces training at `steps` a merge round from now on (0: unpaced), as
  // TrainerOptions::local_steps does at the start: a node whose first
  // neighbour is pinned at a reload starts pacing, one whose last is removed
  // stops.
  void SetLocalSteps(int64_t steps);
  // After ExampleStore::Forget: returns once no forgotten row is held in
  // memory (so none is trained on, validated on or replayed again), then
  // wakes the trainer to reload what is left.
  void DropForgottenRows();
  // Changes the duty-cycle cap (SIGHUP reload).
  void SetMaxCpuPercent(double percent);
  // Changes the training threads, from the next step on (SIGHUP reload).
  void SetThreads(int threads);

  absl::StatusOr<EvalResult> Evaluate(const std::vector<data::Example>& examples);
  // Top-k (label, probability) for one example. Classify and PredictText run
  // on the calling thread against the inference copy (see Thread-safety).
  absl::StatusOr<std::vector<std::pair<int64_t, double>>> Classify(const data::Example& example,
                                                                   int top_k);
  // char_lm: top-k next bytes after `prompt`, and a greedy continuation of `generate` bytes.
  absl::StatusOr<std::pair<std::vector<std::pair<int64_t, double>>, std::string>> PredictText(
      const std::string& prompt, int top_k, int generate);
  absl::Status Export(const std::string& path);

  // federation::SharedWeights. WithSharedParameters runs fn on the calling
  // thread, holding the model lock for at most one step's wait (a
  // prediction meanwhile answers from the copy last published); the learning
  // rate it hands fn is local_steps · the last step's lr (unpaced, the
  // steps' sum), and predictions answer from what fn wrote back once it
  // returns. A round's drift is a rate per unit of learning rate, as a
  // gradient is: after each of the round's local steps (every step when
  // unpaced) the shared weights move by lr · drift, so a correction steers
  // every step rather than jolting the model once (with K local steps a
  // node would otherwise spend the round drifting toward its own data before
  // the correction pulls it back). A round that trains fewer steps applies
  // less of it, and one that trains none (held, busy) none: the correction
  // is for gradient steps, and round_lr = 0 tells the merge none were taken.
  // A drift of another size than shared_size() is refused.
  absl::Status WithSharedParameters(Visit fn, bool opens_round = false, std::vector<float> drift = {}) override;
  // ProbeLosses evaluates each candidate in eval mode, under the model lock
  // like WithSharedParameters, on one random batch; a probe's candidates
  // never reach predictions.
  absl::StatusOr<std::vector<double>> ProbeLosses(int64_t examples, size_t count,
                                                  const std::function<void(size_t, float*)>& make) override;
  int64_t shared_size() const override;
  // Model::SharedLayers.
  std::vector<std::pair<std::string, size_t>> shared_layers() const override;
  // The federation's state (TrainerFederation), or null without one. Made at
  // Create, it lives as long as the trainer; it locks internally.
  federation::Federation* federation() const;
  absl::Status CheckpointNow();

  // Benchmark hook: trains `steps` batches on the calling thread (Start() not called).
  absl::Status TrainStepsForBenchmark(int64_t steps);

  struct Impl;

 private:
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mycel::train
