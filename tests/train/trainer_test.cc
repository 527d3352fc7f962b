#include "train/trainer.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <chrono>
#include <ctime>
#include <cmath>
#include <functional>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/file_util.h"
#include "common/test_util.h"
#include "data/importers.h"
#include "federation/federation.h"

namespace mycel::train {
namespace {

const char kDataDir[] = "/usr/share/datasets/fashion-mnist";

std::vector<data::Example> LoadT10k(const data::ExampleShape& shape) {
  std::vector<data::NamedBlob> files = {
      {"t10k-images", *Env::Default()->ReadFile(std::string(kDataDir) + "/t10k-images-idx3-ubyte.gz")},
      {"t10k-labels", *Env::Default()->ReadFile(std::string(kDataDir) + "/t10k-labels-idx1-ubyte.gz")}};
  auto examples = data::ImportFiles(files, data::Format::kIdx, shape);
  EXPECT_TRUE(examples.ok()) << examples.status();
  return *examples;
}

struct Fixture {
  std::string dir = test::MakeTempDir();
  std::unique_ptr<data::ExampleStore> store;
  std::unique_ptr<Checkpointer> ckpt;
  PausePolicy pause;
  TrainerOptions options;

  Fixture() {
    options.model.kind = "mlp";
    options.model.hidden = {32};
    options.training.lr = 0.05;
    options.training.momentum = 0.9;
    options.training.eval_interval_s = 0.2;
    options.training.checkpoint_interval_s = 3600;
    options.lowest_priority = false;
    Reopen();
  }
  void Reopen() {
    ckpt.reset();
    store.reset();
    data::ExampleStoreOptions so;
    so.path = dir + "/examples.db";
    store = *data::ExampleStore::Open(so);
    CheckpointerOptions co;
    co.dir = dir + "/checkpoints";
    ckpt = *Checkpointer::Open(co);
  }
  std::unique_ptr<Trainer> MakeTrainer() {
    auto t = Trainer::Create(options, *store, *ckpt, pause);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(t).value() : nullptr;
  }
};

// A federation with one neighbour (any key: nothing here authenticates it).
TrainerFederation OneNeighbour() {
  TrainerFederation f;
  f.peer_keys = {std::string(32, 'n')};
  return f;
}

// The trainer's shared weights, copied.
std::vector<float> SharedOf(Trainer& trainer) {
  std::vector<float> x;
  EXPECT_TRUE(trainer.WithSharedParameters([&x](std::vector<float>& w, int64_t, double) {
    x = w;
    return false;
  }).ok());
  return x;
}

// The trainer federation's neighbour publishes `x`: a real federation's
// keyframe lands in our mirror of it, as a pull would apply it.
void NeighbourPublishes(Trainer& trainer, const std::vector<float>& x) {
  auto other = federation::Federation::Create(federation::PlainGossip(), std::vector<float>(x.size(), 0.0f), 1, 1);
  ASSERT_TRUE(other.ok()) << other.status();
  (*other)->Publish(x.data(), 1000);
  ASSERT_TRUE(trainer.federation()->Apply(0, (*other)->Answer(0, 0)).ok());
}

bool AllZero(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return f == 0.0f; });
}

TEST(Trainer, WaitsForDataThenLearnsAndPauses) {
  Fixture f;
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  trainer->Start();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().state == "waiting_for_data"; }, 5));
  EXPECT_EQ(trainer->Stats().steps, 0);

  auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(examples).ok());
  trainer->Wake();
  // Ten classes: chance is 0.1; a working trainer passes 0.7 within seconds.
  ASSERT_TRUE(test::WaitFor([&] {
    auto s = trainer->Stats();
    return s.steps > 500 && s.val_accuracy > 0.7;
  }, 120)) << "steps " << trainer->Stats().steps << " acc " << trainer->Stats().val_accuracy;
  EXPECT_EQ(trainer->Stats().state, "training");
  EXPECT_LT(trainer->Stats().train_loss, 1.0);

  f.pause.SetPaused(true);
  trainer->Wake();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().state == "paused"; }, 5));
  int64_t frozen = trainer->Stats().steps;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(trainer->Stats().steps, frozen);
  EXPECT_EQ(trainer->Stats().reason, "paused by user");
  f.pause.SetPaused(false);
  trainer->Wake();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > frozen; }, 5));
}

TEST(Trainer, StopCheckpointsAndRestartResumesExactly) {
  Fixture f;
  auto trainer = f.MakeTrainer();
  auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(examples).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(300).ok());
  std::vector<data::Example> probe(examples.begin(), examples.begin() + 500);
  auto before = trainer->Evaluate(probe);
  ASSERT_TRUE(before.ok());
  int64_t steps = trainer->Stats().steps;
  EXPECT_EQ(steps, 300);
  ASSERT_TRUE(trainer->Stop().ok());
  trainer.reset();

  f.Reopen();
  auto again = f.MakeTrainer();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->Stats().steps, steps);
  auto after = again->Evaluate(probe);
  ASSERT_TRUE(after.ok());
  EXPECT_DOUBLE_EQ(after->loss, before->loss);
  EXPECT_DOUBLE_EQ(after->accuracy, before->accuracy);

  // A fresh model (no checkpoint) is measurably different: the restore did something.
  TrainerOptions fresh = f.options;
  fresh.restore = false;
  auto untrained = Trainer::Create(fresh, *f.store, *f.ckpt, f.pause);
  ASSERT_TRUE(untrained.ok());
  EXPECT_GT((*untrained)->Evaluate(probe)->loss, after->loss + 0.3);
}

// The federation's state rides in the trainer's checkpoints: our stream's
// epoch and sequence, and the mirror of a neighbour (by key), survive an
// orderly restart; after one that was not (no final checkpoint), a new epoch.
TEST(Trainer, KeepsTheFederationsStateInItsCheckpoints) {
  Fixture f;
  f.options.federation = OneNeighbour();
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  federation::Federation* fed = trainer->federation();
  ASSERT_NE(fed, nullptr);
  EXPECT_EQ(fed->group_names().size(), trainer->shared_layers().size());  // trust is kept per layer
  std::vector<float> x = SharedOf(*trainer);
  for (float& v : x) v += 1.0f / 64;
  ASSERT_TRUE(trainer->WithSharedParameters([&](std::vector<float>&, int64_t n, double) {
    fed->Publish(x.data(), n);
    return false;
  }).ok());
  NeighbourPublishes(*trainer, std::vector<float>(x.size(), 0.25f));
  const uint64_t epoch = fed->epoch();
  const std::vector<float> public_copy = fed->public_copy();
  ASSERT_EQ(fed->seq(), 1u);
  ASSERT_TRUE(trainer->Stop().ok());
  trainer.reset();

  f.Reopen();
  auto again = f.MakeTrainer();
  ASSERT_NE(again, nullptr);
  federation::Federation* back = again->federation();
  EXPECT_EQ(back->epoch(), epoch);
  EXPECT_EQ(back->seq(), 1u);
  EXPECT_EQ(back->public_copy(), public_copy);
  EXPECT_EQ(back->mirror(0), std::vector<float>(x.size(), 0.25f));
  EXPECT_EQ(back->group_names().size(), again->shared_layers().size());

  // A checkpoint written while running (not the final one) restores to a new epoch.
  ASSERT_TRUE(again->CheckpointNow().ok());
  auto third = Trainer::Create(f.options, *f.store, *f.ckpt, f.pause);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_NE((*third)->federation()->epoch(), epoch);
  EXPECT_EQ((*third)->federation()->mirror(0), std::vector<float>(x.size(), 0.25f));
  ASSERT_TRUE((*third)->Stop().ok());
  ASSERT_TRUE(again->Stop().ok());

  // Without a federation, there is none, whatever the checkpoint holds.
  f.options.federation.reset();
  f.Reopen();
  auto alone = f.MakeTrainer();
  ASSERT_NE(alone, nullptr);
  EXPECT_EQ(alone->federation(), nullptr);
}

TEST(Trainer, RefusesCheckpointOfAnotherModel) {
  Fixture f;
  {
    auto trainer = f.MakeTrainer();
    ASSERT_TRUE(trainer->Stop().ok());
  }
  f.options.model.hidden = {64};
  auto t = Trainer::Create(f.options, *f.store, *f.ckpt, f.pause);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(t.status().message().find("fingerprint"), std::string::npos) << t.status();
}

// PredictText's answer: the next byte's top-k and the greedy continuation.
using TextPrediction = std::pair<std::vector<std::pair<int64_t, double>>, std::string>;

// A char_lm trained 400 steps on one repeated sentence with `replay_pool`;
// returns its prediction after "the cat sat on the m".
void CharLmOnOneSentence(const std::string& replay_pool,
                         TextPrediction* predicted) {
  Fixture f;
  f.options.model.kind = "char_lm";
  f.options.model.context = 16;
  f.options.model.hidden = {64};
  f.options.training.optimizer = "adam";
  f.options.training.lr = 0.01;
  f.options.training.replay_pool = replay_pool;
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat. ";
  auto examples = data::ImportFiles({{"cat.txt", text}}, data::Format::kText, trainer->example_shape());
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_TRUE(f.store->Add(*examples).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(400).ok());
  auto out = trainer->PredictText("the cat sat on the m", 3, 4);
  ASSERT_TRUE(out.ok()) << out.status();
  *predicted = *out;
}

TEST(Trainer, CharLmPredictsRepeatedText) {
  TextPrediction out;
  CharLmOnOneSentence("uniform", &out);
  ASSERT_FALSE(out.first.empty());
  EXPECT_EQ(out.first.front().first, 'a');
  EXPECT_GT(out.first.front().second, 0.5);
  EXPECT_EQ(out.second, "at. ");
}

// The balanced replay pool takes each example's loss from the training step
// (a classifier's and a text model's): both still learn through it.
TEST(Trainer, LearnsThroughTheBalancedReplayPool) {
  Fixture f;
  f.options.training.replay_pool = "balanced";
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(examples).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(600).ok());
  std::vector<data::Example> probe(examples.begin(), examples.begin() + 2000);
  auto r = trainer->Evaluate(probe);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->accuracy, 0.7);  // ten classes: chance is 0.1

  TextPrediction out;
  CharLmOnOneSentence("balanced", &out);
  EXPECT_EQ(out.second, "at. ");
}

// The duty-cycle cap, measured on the real training thread over a few seconds.
TEST(Trainer, CpuCapHoldsTheTrainingThreadUnderItsShare) {
  Fixture f;
  f.options.cpu.max_cpu_percent = 25;
  f.options.model.hidden = {256};  // steps of a few hundred microseconds
  auto trainer = f.MakeTrainer();
  ASSERT_TRUE(f.store->Add(LoadT10k(trainer->example_shape())).ok());
  trainer->Start();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > 50; }, 60));
  auto cpu = [] {
    struct timespec ts {};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
  };
  const double cpu0 = cpu();
  const int64_t steps0 = trainer->Stats().steps;
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  const double share = (cpu() - cpu0) / wall;
  EXPECT_GT(trainer->Stats().steps, steps0) << "capped, not stopped";
  // 25% of one core, plus tolerance for evaluation passes and this thread.
  EXPECT_LT(share, 0.35) << "CPU share " << share;
  EXPECT_GT(share, 0.05) << "CPU share " << share;
}

TEST(Trainer, LearningRateDecaysToItsFloorAndStaysThere) {
  Fixture f;
  f.options.training.lr = 0.1;
  f.options.training.lr_final = 0.002;
  f.options.training.lr_decay_steps = 200;
  auto trainer = f.MakeTrainer();
  ASSERT_TRUE(f.store->Add(LoadT10k(trainer->example_shape())).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(1).ok());
  EXPECT_DOUBLE_EQ(trainer->Stats().learning_rate, 0.1);  // step 0: the initial rate
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(100).ok());
  EXPECT_NEAR(trainer->Stats().learning_rate, 0.051, 1e-9);  // step 100 of 200: half way (cosine)
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(200).ok());
  EXPECT_DOUBLE_EQ(trainer->Stats().learning_rate, 0.002);  // past the decay: the floor, still learning
}

// A round's drift (the federation's correction, per unit of learning rate)
// lands as lr · drift after each of the round's K local steps, never more than
// K of them; a round that trains fewer applies less, and every round that
// trained tells the merge a full round's learning rate (K · lr). Watched through the output bias of one
// class: at a learning rate of 1e-6 the gradient steps move nothing visible, a
// drift of 1e6 moves class 3's bias by 1 a step, and raising that bias by b
// raises log(p3 / p0) by exactly b.
TEST(Trainer, ADriftIsSpreadOverTheRoundsLocalSteps) {
  Fixture f;
  f.options.training.lr = 1e-6;
  f.options.training.momentum = 0;
  f.options.local_steps = 4;
  auto trainer = f.MakeTrainer();
  const auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(std::vector<data::Example>(examples.begin(), examples.begin() + 500)).ok());
  const int64_t n = trainer->shared_size();
  ASSERT_GT(n, 10);
  std::vector<float> drift(static_cast<size_t>(n), 0.0f);
  drift[static_cast<size_t>(n - 10 + 3)] = 1e6f;  // the last parameter is the output bias
  auto log_odds = [&] {
    auto top = trainer->Classify(examples[0], 10);
    EXPECT_TRUE(top.ok()) << top.status();
    double p0 = 0, p3 = 0;
    for (const auto& [label, p] : *top) {
      if (label == 0) p0 = p;
      if (label == 3) p3 = p;
    }
    return std::log(p3 / p0);
  };
  double round_lr = -1;
  auto close_round = [&] {
    return trainer->WithSharedParameters([&](std::vector<float>&, int64_t, double lr) {
      round_lr = lr;
      return false;
    });
  };
  const double base = log_odds();
  constexpr double kTol = 1e-3;

  ASSERT_TRUE(trainer->WithSharedParameters(nullptr, /*opens_round=*/true, drift).ok());
  EXPECT_NEAR(log_odds() - base, 0.0, kTol);   // nothing before the first step
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(1).ok());
  EXPECT_NEAR(log_odds() - base, 1.0, kTol);   // one step's
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(3).ok());
  EXPECT_NEAR(log_odds() - base, 4.0, kTol);   // all four
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(3).ok());
  EXPECT_NEAR(log_odds() - base, 4.0, kTol);   // never more than the round's steps
  ASSERT_TRUE(close_round().ok());
  EXPECT_NEAR(log_odds() - base, 4.0, kTol);   // closing adds nothing
  EXPECT_NEAR(round_lr, 4e-6, 1e-12);          // K = 4 steps at lr 1e-6

  // A round that trained one step applies one step's, but the merge still
  // learns at a full round's scale (K · lr): its move closes the whole gap to
  // the neighbours, and one step's lr would blow the correction up K times.
  ASSERT_TRUE(trainer->WithSharedParameters(nullptr, true, drift).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(1).ok());
  ASSERT_TRUE(close_round().ok());
  EXPECT_NEAR(log_odds() - base, 5.0, kTol);
  EXPECT_NEAR(round_lr, 4e-6, 1e-12);

  // A round that never trained (held, busy) applies none of it.
  ASSERT_TRUE(trainer->WithSharedParameters(nullptr, true, drift).ok());
  ASSERT_TRUE(close_round().ok());
  EXPECT_NEAR(log_odds() - base, 5.0, kTol);
  EXPECT_EQ(round_lr, 0.0);

  // A drift of the wrong size is refused, and changes nothing.
  EXPECT_FALSE(trainer->WithSharedParameters(nullptr, true, std::vector<float>(3, 1.0f)).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(1).ok());
  EXPECT_NEAR(log_odds() - base, 5.0, kTol);
}

// Zero weights: every hidden unit is dead and, without momentum, no gradient
// reaches the weights again, so the model stays at chance until something
// restores it. A merge with a broken neighbour could do this.
void ZeroWeights(Trainer& trainer) {
  ASSERT_TRUE(trainer.WithSharedParameters([](std::vector<float>& w, int64_t, double) {
    std::fill(w.begin(), w.end(), 0.0f);
    return true;
  }).ok());
}

// A trainer without momentum (see ZeroWeights) with the guard at `drop`,
// started on t10k and trained past 75% validation accuracy.
std::unique_ptr<Trainer> GuardedAndTrained(Fixture& f, double drop, int64_t window) {
  f.options.training.momentum = 0;
  f.options.training.lr = 0.1;
  f.options.training.drift_guard_drop = drop;
  f.options.training.drift_guard_window = window;
  f.options.training.rest = false;
  auto trainer = f.MakeTrainer();
  if (!trainer) return nullptr;
  EXPECT_TRUE(f.store->Add(LoadT10k(trainer->example_shape())).ok());
  trainer->Wake();
  trainer->Start();
  EXPECT_TRUE(test::WaitFor([&] { return trainer->Stats().val_accuracy > 0.75; }, 120))
      << "acc " << trainer->Stats().val_accuracy;
  return trainer;
}

TEST(Trainer, DriftGuardRollsBackToTheGoodCheckpointOnce) {
  Fixture f;
  f.options.federation = OneNeighbour();
  auto trainer = GuardedAndTrained(f, 0.10, 3);
  ASSERT_NE(trainer, nullptr);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // a few more passes at the top
  ASSERT_TRUE(Env::Default()->ReadFile(f.dir + "/checkpoints/good.bin").ok()) << "no good checkpoint kept";
  // A round with a neighbour close by: its merge teaches the drift correction.
  std::vector<float> near = SharedOf(*trainer);
  for (float& v : near) v += 1.0f / 128;
  NeighbourPublishes(*trainer, near);
  federation::Federation& fed = *trainer->federation();
  ASSERT_TRUE(trainer->WithSharedParameters(nullptr, /*opens_round=*/true).ok());
  const int64_t opened_at = trainer->Stats().steps;
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > opened_at + 5; }, 10));
  ASSERT_TRUE(trainer->WithSharedParameters([&fed](std::vector<float>& x, int64_t, double round_lr) {
    return fed.Merge(x.data(), round_lr) == 1;
  }).ok());
  ASSERT_FALSE(AllZero(fed.correction())) << "the merge taught the correction nothing";
  const double before = trainer->Stats().val_accuracy;
  const int64_t steps_before = trainer->Stats().steps;

  ZeroWeights(*trainer);
  // The model cannot recover by itself, so only the guard brings it back.
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().drift_rollbacks >= 1; }, 30))
      << "acc " << trainer->Stats().val_accuracy;
  // What the merges since the good checkpoint taught the correction is gone with them.
  EXPECT_TRUE(AllZero(fed.correction()));
  const auto st = trainer->Stats();
  EXPECT_NE(st.last_rollback.find("rolled back to the good checkpoint of step"), std::string::npos) << st.last_rollback;
  EXPECT_NE(st.last_rollback.find("for 3 validations"), std::string::npos) << st.last_rollback;
  EXPECT_GE(st.steps, steps_before);  // counters go forward
  // Back to within half the drop of the best, for good: no second rollback.
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().val_accuracy >= before - 0.05 - 0.02; }, 10))
      << "acc " << trainer->Stats().val_accuracy << " before " << before;
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(trainer->Stats().drift_rollbacks, 1);
  EXPECT_GT(trainer->Stats().val_accuracy, 0.65);
  ASSERT_TRUE(trainer->Stop().ok());
}

TEST(Trainer, DriftGuardTakesADropThatReturnsAsTheNewReference) {
  Fixture f;
  auto trainer = GuardedAndTrained(f, 0.10, 2);
  ASSERT_NE(trainer, nullptr);
  ZeroWeights(*trainer);
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().drift_rollbacks == 1; }, 30));
  // Whatever moves it keeps moving it (a broken neighbour every round): one
  // more rollback would only loop, so the guard takes the new level.
  std::atomic<bool> stop{false};
  std::thread hostile([&] {
    while (!stop) {
      ZeroWeights(*trainer);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(6));  // ≥ 4 windows of 0.2 s passes, many times over
  stop = true;
  hostile.join();
  EXPECT_EQ(trainer->Stats().drift_rollbacks, 1);
  EXPECT_LT(trainer->Stats().val_accuracy, 0.5);
  ASSERT_TRUE(trainer->Stop().ok());
}

TEST(Trainer, DriftGuardOffLeavesADriftedModelAlone) {
  Fixture f;
  auto trainer = GuardedAndTrained(f, 0, 3);
  ASSERT_NE(trainer, nullptr);
  ZeroWeights(*trainer);
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(trainer->Stats().drift_rollbacks, 0);
  EXPECT_LT(trainer->Stats().val_accuracy, 0.5);  // the same drift as above, and nothing undid it
  EXPECT_FALSE(Env::Default()->ReadFile(f.dir + "/checkpoints/good.bin").ok());
  ASSERT_TRUE(trainer->Stop().ok());
}

TEST(Trainer, DriftGuardStaysQuietThroughOrdinaryTraining) {
  // Momentum 0.9 and a high rate: the validation accuracy of a pass every
  // 0.2 s on 1000 held-out examples jitters by points from pass to pass.
  Fixture f;
  f.options.training.lr = 0.1;
  f.options.training.momentum = 0.9;
  f.options.training.drift_guard_drop = 0.10;
  f.options.training.drift_guard_window = 3;
  f.options.training.rest = false;
  auto trainer = f.MakeTrainer();
  ASSERT_TRUE(f.store->Add(LoadT10k(trainer->example_shape())).ok());
  trainer->Wake();
  trainer->Start();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > 3000; }, 180));
  std::this_thread::sleep_for(std::chrono::seconds(10));  // ~50 passes
  EXPECT_EQ(trainer->Stats().drift_rollbacks, 0) << trainer->Stats().last_rollback;
  EXPECT_GT(trainer->Stats().val_accuracy, 0.7);
  ASSERT_TRUE(trainer->Stop().ok());
}

// A merge that moves the model starts the rest policy afresh: rests are
// measured against the best loss of the merged model, not of the one it
// replaced. Against the old best, a non-IID node whose own-data optimum came
// from training alone never gains again once its neighbours pull it away, and
// rests for good wherever the federation happens to be (the five-node ring
// froze at 63% that way). A merge too small to wake it changes nothing.
// Resting, or in one of a rest's short bursts (state "training").
bool Resting(const TrainerStats& s) {
  return s.state == "resting" || s.reason == "a short burst while resting";
}

// A trainer on t10k whose rate decays to almost nothing, started: after a
// merge the loss stays where the merge put it, so the reference the rest
// policy keeps is plain to see. Callers wait for it to rest.
std::unique_ptr<Trainer> SlowingTrainer(Fixture& f) {
  f.options.training.rest_patience = 3;
  f.options.training.rest_max_s = 60;
  f.options.training.lr_decay_steps = 2000;
  f.options.training.lr_final = 1e-6;
  auto trainer = f.MakeTrainer();
  if (trainer == nullptr || !f.store->Add(LoadT10k(trainer->example_shape())).ok()) return nullptr;
  trainer->Wake();
  trainer->Start();
  return trainer;
}

// Waits for the trainer to rest; a failure says where it stands.
::testing::AssertionResult RestsWithin(Trainer& trainer, double seconds) {
  if (test::WaitFor([&] { return trainer.Stats().state == "resting"; }, seconds)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "not resting: " << trainer.Stats().state << ": " << trainer.Stats().reason;
}

TEST(Trainer, AMovingMergeIsANewReferenceForResting) {
  Fixture f;
  auto trainer = SlowingTrainer(f);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(RestsWithin(*trainer, 120));
  const double best = trainer->Stats().best_val_loss;
  ASSERT_TRUE(std::isfinite(best));
  EXPECT_LE(best, trainer->Stats().val_loss + 1e-9);
  EXPECT_GT(trainer->Stats().val_accuracy, 0.7);

  // A shift under the wake threshold: it rests on, against the same best.
  ASSERT_TRUE(trainer->WithSharedParameters([](std::vector<float>& w, int64_t, double) {
    for (float& v : w) v *= 1.0f + 1e-5f;
    return true;
  }).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // three validation intervals
  EXPECT_TRUE(Resting(trainer->Stats())) << trainer->Stats().state << ": " << trainer->Stats().reason;
  // A burst in that window may lower the best, by less than a gain (0.2%).
  EXPECT_LE(trainer->Stats().best_val_loss, best);
  EXPECT_GT(trainer->Stats().best_val_loss, best * (1 - 0.002));

  // A merge that moves every weight most of the way to zero: the logits
  // flatten and the loss rises several-fold. It wakes the trainer, the loss
  // of the merged model becomes the reference, and it rests again from there.
  const int64_t rests = trainer->Stats().rests;
  ASSERT_TRUE(trainer->WithSharedParameters([](std::vector<float>& w, int64_t, double) {
    for (float& v : w) v *= 0.3f;
    return true;
  }).ok());
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().val_loss > 1.5 * best; }, 10))
      << "no validation of the merged model: val_loss " << trainer->Stats().val_loss;
  EXPECT_TRUE(test::WaitFor([&] { return trainer->Stats().best_val_loss > 1.5 * best; }, 10))
      << "rests still measured against the replaced model's best " << best << ": best_val_loss "
      << trainer->Stats().best_val_loss << ", val_loss " << trainer->Stats().val_loss;
  EXPECT_TRUE(test::WaitFor([&] { return trainer->Stats().rests > rests; }, 30))
      << trainer->Stats().state << ": " << trainer->Stats().reason;
  EXPECT_TRUE(Resting(trainer->Stats())) << trainer->Stats().state << ": " << trainer->Stats().reason;
  ASSERT_TRUE(trainer->Stop().ok());
}

// Merges each too small to wake a resting trainer add up: neighbours that
// keep training pull the shared model away from what only this node teaches.
// Once they moved the weights far enough together, the trainer looks at the
// merged model and wakes because its validation loss rose. Before, it rested
// on while each merge stayed under the threshold (three of a five-node ring
// rested at 57-61% that way).
TEST(Trainer, SmallMergesThatAddUpAndRaiseTheLossEndARest) {
  Fixture f;
  auto trainer = SlowingTrainer(f);
  ASSERT_NE(trainer, nullptr);
  ASSERT_TRUE(RestsWithin(*trainer, 120));
  const int64_t rests = trainer->Stats().rests;
  const double best = trainer->Stats().best_val_loss;

  // 2000 merges, each shrinking the weights by 0.05% (half the wake
  // threshold), to 37% together: the logits flatten and the loss rises.
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(trainer->WithSharedParameters([](std::vector<float>& w, int64_t, double) {
      for (float& v : w) v *= 1.0f - 5e-4f;
      return true;
    }).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(test::WaitFor([&] { return trainer->Stats().last_wake.find("merges raised") != std::string::npos; }, 30))
      << "never woke: " << trainer->Stats().state << ": " << trainer->Stats().reason << ", last wake \""
      << trainer->Stats().last_wake << "\", val_loss " << trainer->Stats().val_loss << " against a best of " << best;
  EXPECT_TRUE(test::WaitFor([&] { return trainer->Stats().rests > rests; }, 30))
      << "never woke: " << trainer->Stats().state << ": " << trainer->Stats().reason << ", val_loss "
      << trainer->Stats().val_loss << " against a best of " << best;
  EXPECT_GT(trainer->Stats().best_val_loss, best);  // the merged model is the reference now
  ASSERT_TRUE(trainer->Stop().ok());
}

TEST(Trainer, ClassifyRejectsWrongWidth) {
  Fixture f;
  auto trainer = f.MakeTrainer();
  data::Example e;
  e.data = std::string(10, '\0');
  auto r = trainer->Classify(e, 3);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("784"), std::string::npos);
}

// ---- predictions: the inference copy ----

using TopList = std::vector<std::pair<int64_t, double>>;

// All ten classes at 1/10 each: what a model whose shared weights are all
// zero (every one is shared: no local_layers) answers for any input.
::testing::AssertionResult Uniform(const TopList& top) {
  if (top.size() != 10) return ::testing::AssertionFailure() << top.size() << " classes, not 10";
  for (const auto& [label, p] : top) {
    if (std::abs(p - 0.1) > 1e-5) return ::testing::AssertionFailure() << "class " << label << " at " << p;
  }
  return ::testing::AssertionSuccess();
}

// A top-10 answer of the ten-class model is a distribution: ten distinct
// labels in range, probabilities in [0, 1], descending, summing to 1.
::testing::AssertionResult ValidDistribution(const TopList& top) {
  if (top.size() != 10) return ::testing::AssertionFailure() << top.size() << " classes, not 10";
  std::vector<bool> seen(10, false);
  double sum = 0;
  for (size_t i = 0; i < top.size(); ++i) {
    const auto [label, p] = top[i];
    if (label < 0 || label >= 10 || seen[label]) return ::testing::AssertionFailure() << "label " << label;
    seen[label] = true;
    if (!(p >= 0 && p <= 1)) return ::testing::AssertionFailure() << "class " << label << " at " << p;
    if (i > 0 && p > top[i - 1].second) return ::testing::AssertionFailure() << "not in descending order";
    sum += p;
  }
  if (std::abs(sum - 1) > 1e-4) return ::testing::AssertionFailure() << "probabilities sum to " << sum;
  return ::testing::AssertionSuccess();
}

// The same answer, to float rounding: one set of weights, maybe in two copies.
::testing::AssertionResult SameAnswer(const TopList& a, const TopList& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << a.size() << " classes against " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first || std::abs(a[i].second - b[i].second) > 1e-6) {
      return ::testing::AssertionFailure() << "rank " << i << ": class " << a[i].first << " at " << a[i].second
                                           << " against class " << b[i].first << " at " << b[i].second;
    }
  }
  return ::testing::AssertionSuccess();
}

TopList ClassifyAll(Trainer& trainer, const data::Example& example) {
  auto top = trainer.Classify(example, 10);
  EXPECT_TRUE(top.ok()) << top.status();
  return top.ok() ? *top : TopList{};
}

// Mean cross-entropy of the answers of Classify (the inference copy) on
// `examples`: what Evaluate (the live model) says when the copy holds the
// live weights.
double ClassifyLoss(Trainer& trainer, const std::vector<data::Example>& examples) {
  double sum = 0;
  for (const auto& e : examples) {
    for (const auto& [label, p] : ClassifyAll(trainer, e)) {
      if (label == e.label) sum -= std::log(p);
    }
  }
  return sum / static_cast<double>(examples.size());
}

// Runs `predict` on this thread while another thread is inside
// WithSharedParameters, holding the model lock in a callback that waits
// (up to a minute) until `predict` has returned. Succeeds when `predict`
// returned while the callback still blocked: a prediction that took the
// model lock or waited for the trainer thread returns only once the callback
// gives up, and then this fails.
::testing::AssertionResult ReturnsDuringABlockedMerge(Trainer& trainer, const std::function<void()>& predict) {
  constexpr double kBlockS = 60;
  std::atomic<bool> inside{false}, predicted{false}, left{false}, gave_up{false};
  std::thread merger([&] {
    auto s = trainer.WithSharedParameters([&](std::vector<float>&, int64_t, double) {
      inside = true;
      if (!test::WaitFor([&] { return predicted.load(); }, kBlockS)) gave_up = true;
      left = true;
      return false;
    });
    EXPECT_TRUE(s.ok()) << s;
  });
  if (!test::WaitFor([&] { return inside.load(); }, kBlockS)) {
    predicted = true;
    merger.join();
    return ::testing::AssertionFailure() << "the merge's callback never ran";
  }
  predict();
  const bool during = !left.load();
  predicted = true;
  merger.join();
  if (during && !gave_up) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "the prediction returned only after the merge's callback "
                                       << (gave_up ? "gave up waiting for it" : "returned");
}

// A trainer of f's, trained on t10k (into *examples) and started: nullptr
// (after a test failure) unless it has taken a step.
std::unique_ptr<Trainer> StartTrainingOnT10k(Fixture& f, std::vector<data::Example>* examples) {
  auto trainer = f.MakeTrainer();
  if (!trainer) return nullptr;
  *examples = LoadT10k(trainer->example_shape());
  if (!f.store->Add(*examples).ok()) {
    ADD_FAILURE() << "storing t10k failed";
    return nullptr;
  }
  trainer->Wake();
  trainer->Start();
  if (!test::WaitFor([&] { return trainer->Stats().steps > 0; }, 60)) {
    ADD_FAILURE() << "the trainer took no step in 60 s";
    return nullptr;
  }
  return trainer;
}

// [model] personal_prior: predictions and Evaluate add the log of the node's
// own (add-one smoothed) class shares to the logits; training is unchanged.
TEST(Trainer, PersonalPriorReweighsPredictionsByTheNodesOwnClasses) {
  Fixture f;
  const std::vector<data::Example> t10k = LoadT10k(data::ExampleShape{});
  std::vector<data::Example> mine, threes;
  for (const data::Example& e : t10k) {
    if (e.label == 3 && mine.size() < 600) mine.push_back(e);
    else if (e.label == 3 && threes.size() < 200) threes.push_back(e);
    else if (e.label == 7 && mine.size() >= 600 && mine.size() < 660) mine.push_back(e);
  }
  ASSERT_EQ(mine.size(), 660u);
  ASSERT_TRUE(f.store->Add(mine).ok());
  auto counts = f.store->CountLabels();
  ASSERT_TRUE(counts.ok()) << counts.status();
  std::vector<double> n(10, 0);
  for (const data::LabelCount& c : *counts) n[static_cast<size_t>(c.label)] = static_cast<double>(c.train);
  ASSERT_GT(n[3], 400);
  ASSERT_GT(n[7], 30);

  f.options.restore = false;
  auto plain = f.MakeTrainer();  // the same seed: the same initial weights
  f.options.model.personal_prior = true;
  auto personal = f.MakeTrainer();
  ASSERT_TRUE(plain && personal);

  // Each answer is the plain one times the prior, renormalised: the log-odds
  // of two classes move by the log of their smoothed count ratio.
  auto as_map = [](const TopList& top) {
    std::vector<double> p(10, 0);
    for (const auto& [label, q] : top) p[static_cast<size_t>(label)] = q;
    return p;
  };
  for (size_t i = 0; i < 3; ++i) {
    const std::vector<double> a = as_map(ClassifyAll(*plain, t10k[i]));
    const std::vector<double> b = as_map(ClassifyAll(*personal, t10k[i]));
    for (int j : {0, 7}) {
      const double shift = std::log(b[3] / b[j]) - std::log(a[3] / a[j]);
      EXPECT_NEAR(shift, std::log((n[3] + 1) / (n[j] + 1)), 1e-3) << "example " << i << ", class " << j;
    }
  }
  // `mycel eval` measures what predictions answer: on this node's own class
  // the prior outweighs an untrained model's logits.
  auto with = personal->Evaluate(threes);
  auto without = plain->Evaluate(threes);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_DOUBLE_EQ(with->accuracy, 1.0);
  EXPECT_LT(without->accuracy, 0.9);
}

TEST(Trainer, ClassifyDoesNotWaitForTheModelLock) {
  Fixture f;
  std::vector<data::Example> examples;
  auto trainer = StartTrainingOnT10k(f, &examples);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<TopList> top;
  EXPECT_TRUE(ReturnsDuringABlockedMerge(*trainer, [&] { top = trainer->Classify(examples[0], 3); }));
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(top->size(), 3u);
  ASSERT_TRUE(trainer->Stop().ok());
}

// A char_lm small enough to answer in a blink (context 16, GRU 64).
std::unique_ptr<Trainer> MakeSmallCharLm(Fixture& f) {
  f.options.model.kind = "char_lm";
  f.options.model.context = 16;
  f.options.model.hidden = {64};
  return f.MakeTrainer();
}

TEST(Trainer, PredictTextDoesNotWaitForTheModelLock) {
  Fixture f;
  auto trainer = MakeSmallCharLm(f);
  ASSERT_NE(trainer, nullptr);
  absl::StatusOr<std::pair<TopList, std::string>> out;
  EXPECT_TRUE(ReturnsDuringABlockedMerge(*trainer, [&] { out = trainer->PredictText("the cat", 3, 4); }));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->first.size(), 3u);
  EXPECT_EQ(out->second.size(), 4u);
}

// The copy answers before Start, follows a merge at once, holds the live
// weights whenever the trainer is idle, and after Stop the final ones (those
// of the shutdown checkpoint, which a restored trainer answers from).
TEST(Trainer, ClassifyFollowsTheModelAndAnswersAfterStop) {
  Fixture f;
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  const auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(examples).ok());
  const std::vector<data::Example> probe(examples.begin(), examples.begin() + 200);
  const TopList seeded = ClassifyAll(*trainer, examples[0]);
  EXPECT_FALSE(Uniform(seeded));
  // Merges, with no trainer thread: all zero, then the seeded weights again.
  std::vector<float> kept;
  ASSERT_TRUE(trainer->WithSharedParameters([&](std::vector<float>& w, int64_t, double) {
    kept = w;
    std::fill(w.begin(), w.end(), 0.0f);
    return true;
  }).ok());
  EXPECT_TRUE(Uniform(ClassifyAll(*trainer, examples[0])));
  ASSERT_TRUE(trainer->WithSharedParameters([&](std::vector<float>& w, int64_t, double) {
    w = kept;
    return true;
  }).ok());
  EXPECT_TRUE(SameAnswer(ClassifyAll(*trainer, examples[0]), seeded));
  // Train, then hold it.
  trainer->Wake();
  trainer->Start();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > 300; }, 60));
  f.pause.SetPaused(true);
  trainer->Wake();
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().state == "paused"; }, 10));
  auto live = trainer->Evaluate(probe);
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_NEAR(ClassifyLoss(*trainer, probe), live->loss, 1e-4);  // the copy holds what the live model does
  EXPECT_FALSE(SameAnswer(ClassifyAll(*trainer, examples[0]), seeded));  // which the steps moved

  // Train on, stop in the middle of it: the last steps reach the copy too.
  f.pause.SetPaused(false);
  trainer->Wake();
  const int64_t steps = trainer->Stats().steps;
  ASSERT_TRUE(test::WaitFor([&] { return trainer->Stats().steps > steps + 300; }, 60));
  ASSERT_TRUE(trainer->Stop().ok());
  live = trainer->Evaluate(probe);  // inline now: the live model
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_NEAR(ClassifyLoss(*trainer, probe), live->loss, 1e-4);
  const TopList last = ClassifyAll(*trainer, examples[1]);
  ASSERT_TRUE(ValidDistribution(last));
  auto restored = f.MakeTrainer();  // from the shutdown checkpoint
  ASSERT_NE(restored, nullptr);
  EXPECT_TRUE(SameAnswer(ClassifyAll(*restored, examples[1]), last));
  // A merge after Stop still reaches the copy.
  ZeroWeights(*trainer);
  EXPECT_TRUE(Uniform(ClassifyAll(*trainer, examples[1])));
}

// A trust probe loads candidate weights into the live model under the model
// lock: a prediction meanwhile answers from the model's own weights, never a
// candidate's, and the model's own come back even when a candidate throws.
TEST(Trainer, ProbeCandidatesNeverReachPredictions) {
  Fixture f;
  auto trainer = f.MakeTrainer();
  ASSERT_NE(trainer, nullptr);
  const auto examples = LoadT10k(trainer->example_shape());
  ASSERT_TRUE(f.store->Add(examples).ok());
  ASSERT_TRUE(trainer->TrainStepsForBenchmark(50).ok());  // loads the held-out split too
  const std::vector<data::Example> probe(examples.begin(), examples.begin() + 200);
  const TopList own = ClassifyAll(*trainer, examples[0]);
  ASSERT_FALSE(Uniform(own));
  const double own_loss = trainer->Evaluate(probe)->loss;
  const size_t n = static_cast<size_t>(trainer->shared_size());

  // make(1) runs with candidate 0 (all zero: uniform answers) in the model,
  // under the model lock. A caller's prediction on another thread must
  // answer while the probe still holds the lock: make waits for it (up to a
  // minute) before the probe goes on.
  std::future<absl::StatusOr<TopList>> during;
  bool answered = false;
  auto losses = trainer->ProbeLosses(100, 2, [&](size_t i, float* out) {
    std::fill(out, out + n, 0.0f);
    if (i != 1) return;
    during = std::async(std::launch::async, [&] { return trainer->Classify(examples[0], 10); });
    answered = during.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  });
  ASSERT_TRUE(losses.ok()) << losses.status();
  EXPECT_TRUE(answered) << "the prediction waited for the probe";
  ASSERT_TRUE(during.valid());
  auto top = during.get();
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_FALSE(Uniform(*top)) << "a prediction saw a candidate";
  EXPECT_TRUE(SameAnswer(*top, own));

  // A candidate that throws: the probe fails, the model keeps its own weights.
  EXPECT_THROW((void)trainer->ProbeLosses(100, 2, [&](size_t i, float* out) {
    if (i == 1) throw std::runtime_error("no such neighbour");
    std::fill(out, out + n, 0.0f);
  }), std::runtime_error);
  EXPECT_DOUBLE_EQ(trainer->Evaluate(probe)->loss, own_loss);
  ASSERT_TRUE(trainer->WithSharedParameters([](std::vector<float>&, int64_t, double) { return true; }).ok());
  EXPECT_TRUE(SameAnswer(ClassifyAll(*trainer, examples[0]), own));  // what the merge published: its own
}

std::string Printable(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (std::isprint(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Merges switch the weights between three known sets as fast as they can
// while callers generate text: all zero (uniform bytes: top 1/256 each, a
// continuation of NUL bytes), the seeded ones and half of them (three, so
// that each buffer of a double-buffered copy changes from one publish of it
// to the next). A continuation of 64 bytes takes 65 forwards, over which many
// publishes go by: every answer is still one of the three, never a mix (a
// copy written while a prediction held it would give some other answer).
TEST(Trainer, PredictionsNeverMixTwoPublishes) {
  Fixture f;
  auto trainer = MakeSmallCharLm(f);
  ASSERT_NE(trainer, nullptr);
  using Answer = std::pair<TopList, std::string>;
  auto predict = [&]() -> Answer {
    auto out = trainer->PredictText("the cat sat on the m", 5, 64);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : Answer{};
  };
  auto zero = [](const Answer& a) {
    bool flat = a.first.size() == 5;
    for (const auto& [byte, p] : a.first) flat = flat && std::abs(p - 1.0 / 256) < 1e-6;
    return flat && a.second == std::string(64, '\0');
  };
  auto same = [](const Answer& a, const Answer& b) { return SameAnswer(a.first, b.first) && a.second == b.second; };
  std::vector<float> seeded_w;
  const std::vector<std::function<void(std::vector<float>&)>> sets = {
      [](std::vector<float>& w) { std::fill(w.begin(), w.end(), 0.0f); },
      [&](std::vector<float>& w) { w = seeded_w; },
      [&](std::vector<float>& w) {
        w = seeded_w;
        for (float& v : w) v *= 0.5f;
      }};
  auto merge = [&](size_t set) {
    return trainer->WithSharedParameters([&](std::vector<float>& w, int64_t, double) {
      if (seeded_w.empty()) seeded_w = w;
      sets[set](w);
      return true;
    }).ok();
  };
  ASSERT_TRUE(merge(1));
  const Answer seeded = predict();
  ASSERT_TRUE(merge(2));
  const Answer halved = predict();
  ASSERT_FALSE(zero(seeded));
  ASSERT_FALSE(zero(halved));
  ASSERT_FALSE(same(seeded, halved));

  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> answers{0}, mixed{0};
  std::vector<std::string> problem(kThreads);  // each thread's first, written by it alone
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      while (!stop) {
        const Answer a = predict();
        answers++;
        if (zero(a) || same(a, seeded) || same(a, halved)) continue;
        mixed++;
        if (problem[t].empty()) problem[t] = "continuation \"" + Printable(a.second) + "\"; ";
      }
    });
  }
  int64_t merges = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((merges < 1500 || answers < 200) && std::chrono::steady_clock::now() < deadline) {
    const bool ok = merge(static_cast<size_t>(merges % 3));
    EXPECT_TRUE(ok);
    if (!ok) break;
    merges++;
  }
  stop = true;
  for (auto& c : callers) c.join();
  // Both within seconds here; a sanitized build manages a fraction in the
  // 30 s, still with many publishes during each prediction.
  EXPECT_GE(merges, 300);
  EXPECT_GE(answers, 100);
  EXPECT_EQ(mixed, 0) << "of " << answers << ": " << problem[0] << problem[1] << problem[2] << problem[3];
}

// Many callers predict at once while the trainer trains, merges write the
// weights and trust probes load candidates: every answer is a distribution,
// none a candidate's (all-zero: uniform), and the answers move with the model
// (publishes happen while copies are being read). Meant for TSan/ASan runs too.
TEST(Trainer, ConcurrentPredictionsWhileTrainingAndMerging) {
  Fixture f;
  std::vector<data::Example> examples;
  auto trainer = StartTrainingOnT10k(f, &examples);
  ASSERT_NE(trainer, nullptr);
  const int64_t steps = trainer->Stats().steps;
  const size_t n = static_cast<size_t>(trainer->shared_size());
  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> answers{0}, invalid{0}, uniform{0}, moved{0}, merges{0}, probes{0};
  std::vector<std::string> problem(kThreads);  // each thread's first, written by it alone
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      const data::Example& e = examples[static_cast<size_t>(t)];
      const TopList first = ClassifyAll(*trainer, e);
      while (!stop) {
        auto top = trainer->Classify(e, 10);
        answers++;
        auto valid = top.ok() ? ValidDistribution(*top) : ::testing::AssertionFailure() << top.status();
        if (!valid) {
          invalid++;
          if (problem[t].empty()) problem[t] = valid.message();
          continue;
        }
        if (Uniform(*top)) uniform++;
        if (!SameAnswer(*top, first)) moved++;
      }
    });
  }
  // Merges that scale the weights up and down in turn (the model stays where
  // training takes it); every tenth round a probe of two all-zero candidates.
  std::thread merger([&] {
    for (int64_t k = 0; !stop; ++k) {
      const float scale = k % 2 == 0 ? 1.001f : 1.0f / 1.001f;
      EXPECT_TRUE(trainer->WithSharedParameters([&](std::vector<float>& w, int64_t, double) {
        for (float& v : w) v *= scale;
        return true;
      }).ok());
      merges++;
      if (k % 10 == 0) {
        auto losses = trainer->ProbeLosses(50, 2, [&](size_t, float* out) { std::fill(out, out + n, 0.0f); });
        if (losses.ok()) probes++;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  const bool enough = test::WaitFor([&] {
    return trainer->Stats().steps > steps + 300 && answers > 2000 && merges > 200 && probes > 10;
  }, 120);
  stop = true;
  merger.join();
  for (auto& c : callers) c.join();
  EXPECT_TRUE(enough) << "steps " << trainer->Stats().steps - steps << ", answers " << answers << ", merges "
                      << merges << ", probes " << probes;
  EXPECT_EQ(invalid, 0) << problem[0] << problem[1] << problem[2] << problem[3];
  EXPECT_EQ(uniform, 0) << "predictions saw a probe's candidate";
  EXPECT_GT(moved, 0) << "the answers never followed the model";
  ASSERT_TRUE(trainer->Stop().ok());
  EXPECT_TRUE(ValidDistribution(ClassifyAll(*trainer, examples[0])));
}

}  // namespace
}  // namespace mycel::train
