// Resting ([training] rest): a daemon that has learnt what its data hold
// stops training ("resting", with the reason), its step counter stands
// still but for short bursts, and an ingest or `mycel resume` wakes it at
// once. The CPU it saves is measured in tests/bench/rest_bench.sh.
#include <string>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// Rest bursts train this many steps (train/trainer.cc, kRestBurstSteps).
constexpr double kBurstSteps = 64;

std::string Describe(const std::optional<Json>& st) {
  if (!st) return "(no status)";
  return "state=" + st->Str("state") + " reason='" + st->Str("reason") + "' steps=" +
         std::to_string(st->Num("steps")) + " rest_s=" + std::to_string(st->Num("rest_s")) +
         " val_loss=" + std::to_string(st->Num("val_loss"));
}

bool WaitFor(const TestNode& node, double timeout_s, std::optional<Json>* st,
             const std::function<bool(const Json&)>& done) {
  return PollUntil(
      [&] {
        *st = node.Status();
        return *st && done(**st);
      },
      timeout_s, 0.2);
}

TEST(RestTest, ConvergedDaemonRestsStandsStillAndWakesOnResumeAndIngest) {
  TempDir tmp;
  ConfigSpec spec;  // eval_interval_s = 1: patience 4 is four seconds without a gain
  spec.rest_patience = 4;
  spec.extra_training = "rest_max_s = 60\n";
  TestNode node(tmp.path(), "node", spec);
  ASSERT_TRUE(node.daemon().Start());
  auto r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  // It learns, then rests, and says why.
  std::optional<Json> st;
  ASSERT_TRUE(WaitFor(node, 240 * kLearningTimeScale, &st, [](const Json& j) { return j.Str("state") == "resting"; }))
      << Describe(st) << "\n" << node.daemon().LogSinceStart();
  EXPECT_NE(st->Str("reason").find("converged: no gain in "), std::string::npos) << st->Str("reason");
  EXPECT_NE(st->Str("reason").find(" validations"), std::string::npos) << st->Str("reason");
  EXPECT_GE(st->Num("validations_without_gain"), 4);
  EXPECT_GE(st->Num("rests"), 1);
  EXPECT_GT(st->Num("val_accuracy"), 0.7) << "rested before it had learnt";
  auto text = node.Mycel({"status"});
  EXPECT_NE(text.out.find("resting (converged: no gain in"), std::string::npos) << text.out;

  // Bursts that do not gain make the rests longer: wait for one of 16 s or
  // more, then at most one burst falls in a 5 s window.
  ASSERT_TRUE(WaitFor(node, 120 * kLearningTimeScale, &st,
                      [](const Json& j) { return j.Str("state") == "resting" && j.Num("rest_s") >= 16; }))
      << Describe(st);
  const double before = st->Num("steps");
  SleepSeconds(5);
  const double after = node.StatusNum("steps");
  EXPECT_LE(after - before, kBurstSteps) << "trained while resting: " << before << " -> " << after;

  // `mycel resume` wakes it (it is not paused: resume is also how a user says "try again").
  r = node.Mycel({"resume"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(WaitFor(node, 10, &st, [](const Json& j) { return j.Str("state") == "training"; })) << Describe(st);
  EXPECT_EQ(st->Num("rest_s"), 0);
  EXPECT_EQ(st->Str("last_wake"), "resume") << Describe(st);

  // Back to rest, then an ingest of new data wakes it and it trains far
  // more than a burst's worth.
  ASSERT_TRUE(WaitFor(node, 120 * kLearningTimeScale, &st, [](const Json& j) { return j.Str("state") == "resting"; }))
      << Describe(st);
  const double rested_at = st->Num("steps");
  r = node.Mycel({"ingest", TrainImages(), TrainLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(WaitFor(node, 60 * kLearningTimeScale, &st,
                      [&](const Json& j) { return j.Num("steps") > rested_at + 10 * kBurstSteps; }))
      << Describe(st);
  EXPECT_NE(node.daemon().LogSinceStart().find("rest ends: ingest"), std::string::npos);
  EXPECT_EQ(node.daemon().Stop(), 0);
}

TEST(RestTest, WithRestOffItTrainsOn) {
  TempDir tmp;
  ConfigSpec spec;
  spec.rest_patience = 2;
  spec.extra_training = "rest = false\n";
  TestNode node(tmp.path(), "node", spec);
  ASSERT_TRUE(node.daemon().Start());
  auto r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  // Long past two validations without a gain, it still trains: never a rest.
  ASSERT_TRUE(node.WaitForStepsAbove(0, 60 * kLearningTimeScale));
  std::optional<Json> st;
  bool rested = WaitFor(node, 40, &st, [](const Json& j) { return j.Str("state") == "resting" || j.Num("rests") > 0; });
  EXPECT_FALSE(rested) << Describe(st);
  const double before = node.StatusNum("steps");
  SleepSeconds(3);
  EXPECT_GT(node.StatusNum("steps"), before + kBurstSteps);
  EXPECT_EQ(node.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
