// Data a user controls, through the real myceld and mycel: the same files
// ingested twice are stored once, `mycel data` counts per label and per
// ingest, `mycel forget` deletes for good (across a restart, and from what
// the trainer holds in memory), `mycel reset` refuses while myceld runs, and
// `[model] personal_prior` weighs predictions by what the store holds.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

int64_t LabelCount(const Json& data, int64_t label) {
  const Json* labels = data.Find("labels");
  if (labels == nullptr) return -1;
  for (const Json& l : labels->array) {
    if (l.Num("label") == static_cast<double>(label)) return static_cast<int64_t>(l.Num("train") + l.Num("validation"));
  }
  return 0;
}

TEST(DataControlTest, IngestTwiceStoresOnceAndDataCountsPerLabelAndIngest) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  auto first = node.Mycel({"ingest", "--json", T10kImages(), T10kLabels()});
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  auto j1 = ParseJson(first.out);
  ASSERT_TRUE(j1.has_value()) << first.out;
  EXPECT_EQ(j1->Num("stored"), kT10kCount);
  EXPECT_EQ(j1->Num("duplicates"), 0);
  // The same files again, with a fresh key: nothing new is stored, and the
  // reply says why.
  auto second = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(second.exit_code, 0) << second.Describe();
  EXPECT_NE(second.out.find("stored 0 examples"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find(std::to_string(kT10kCount) + " already stored"), std::string::npos) << second.out;
  EXPECT_EQ(node.ExampleCount(), kT10kCount);

  auto data = node.MycelJson({"data"});
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(data->Num("examples_train") + data->Num("examples_val"), kT10kCount);
  int64_t total = 0;
  for (int label = 0; label < 10; ++label) {
    EXPECT_EQ(LabelCount(*data, label), 1000) << label;  // Fashion-MNIST's test set: 1000 per class
    total += LabelCount(*data, label);
  }
  EXPECT_EQ(total, kT10kCount);
  // One ingest holds every row (the second stored none, so it is not listed).
  const Json* ingests = data->Find("ingests");
  ASSERT_TRUE(ingests != nullptr);
  ASSERT_EQ(ingests->array.size(), 1u) << "ingests";
  EXPECT_EQ(ingests->array[0].Num("offered"), kT10kCount);
  EXPECT_NE(ingests->array[0].Str("source").find("t10k-images-idx3-ubyte.gz"), std::string::npos);
  EXPECT_EQ(ingests->array[0].Str("added").back(), 'Z');
  auto text = node.Mycel({"data"});
  EXPECT_NE(text.out.find("LABEL"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("t10k-labels-idx1-ubyte.gz"), std::string::npos) << text.out;
  EXPECT_EQ(node.daemon().Stop(), 0);
}

// Forget label 1 while the daemon trains on classes 0 and 1: the rows go at
// once and stay gone after a restart, and the trainer drops every row it
// held in memory (fresh queue and replay pool) and reloads exactly what is
// left, so nothing forgotten is trained on again.
TEST(DataControlTest, ForgottenExamplesAreGoneAndNeverTrainedOnAgain) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  ASSERT_EQ(node.Mycel({"ingest", "--labels", "0,1", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_EQ(node.ExampleCount(), 2000);
  ASSERT_TRUE(PollUntil([&] { return node.StatusNum("val_accuracy") >= 0.95; }, 120 * kLearningTimeScale))
      << node.daemon().LogSinceStart();

  // Refused: nothing to forget named, or two ways of saying it.
  EXPECT_EQ(node.Mycel({"forget"}).exit_code, 2);
  EXPECT_EQ(node.Mycel({"forget", "--all", "--label", "1"}).exit_code, 2);
  auto bad_time = node.Mycel({"forget", "--before", "yesterday"});
  EXPECT_EQ(bad_time.exit_code, 2);
  EXPECT_NE(bad_time.err.find("'yesterday' is not a time"), std::string::npos) << bad_time.Describe();
  EXPECT_EQ(node.ExampleCount(), 2000);

  auto forgot = node.Mycel({"forget", "--json", "--label", "1"});
  ASSERT_EQ(forgot.exit_code, 0) << forgot.Describe();
  auto fj = ParseJson(forgot.out);
  ASSERT_TRUE(fj.has_value()) << forgot.out;
  EXPECT_EQ(fj->Num("forgot_train") + fj->Num("forgot_validation"), 1000);
  EXPECT_EQ(node.ExampleCount(), 1000);
  auto data = node.MycelJson({"data"});
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(LabelCount(*data, 1), 0);
  EXPECT_EQ(LabelCount(*data, 0), 1000);

  // The trainer's working set is rebuilt from what is left: as many rows in
  // memory as the store's train split holds now, and it trains on.
  const auto left = static_cast<int64_t>(node.StatusNum("examples_train"));
  const std::string reloaded =
      "loaded " + std::to_string(left) + " new training examples (" + std::to_string(left) + " in memory)";
  EXPECT_NE(node.daemon().LogSinceStart().find("the store forgot examples: dropped the "), std::string::npos);
  EXPECT_TRUE(PollUntil([&] { return node.daemon().LogSinceStart().find(reloaded) != std::string::npos; }, 30))
      << reloaded << "\n" << node.daemon().LogSinceStart();
  const double steps = node.StatusNum("steps");
  ASSERT_TRUE(node.WaitForStepsAbove(steps + 200, 120 * kLearningTimeScale));

  // Gone across a restart too; forgetting what is gone forgets nothing.
  EXPECT_EQ(node.daemon().Stop(), 0);
  ASSERT_TRUE(node.daemon().Start());
  EXPECT_EQ(node.ExampleCount(), 1000);
  data = node.MycelJson({"data"});
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(LabelCount(*data, 1), 0);
  auto again = node.Mycel({"forget", "--label", "1"});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_NE(again.out.find("forgot 0 examples"), std::string::npos) << again.out;
  // Everything ingested before a date far ahead: all of it.
  auto all = node.Mycel({"forget", "--before", "2099-01-01"});
  ASSERT_EQ(all.exit_code, 0) << all.Describe();
  EXPECT_EQ(node.ExampleCount(), 0);
  EXPECT_TRUE(PollUntil([&] { return node.Status() && node.Status()->Str("state") == "waiting_for_data"; }, 30));

  // Reset refuses while myceld runs, and then starts the model afresh.
  auto refused = node.Mycel({"reset"});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("myceld is running"), std::string::npos) << refused.Describe();
  EXPECT_GT(node.StatusNum("steps"), 0);
  EXPECT_EQ(node.daemon().Stop(), 0);
  auto reset = node.Mycel({"reset"});
  ASSERT_EQ(reset.exit_code, 0) << reset.Describe();
  EXPECT_NE(reset.out.find("deleted "), std::string::npos) << reset.out;
  ASSERT_TRUE(node.daemon().Start());
  EXPECT_EQ(node.StatusNum("steps"), 0);  // a fresh model, not the checkpoint's
  EXPECT_EQ(node.daemon().Stop(), 0);
}

// Log-odds of class `a` against class `b` in `node`'s answer for t10k image 0
// (NaN if predict fails).
double LogOdds(const TestNode& node, int a, int b) {
  auto r = node.MycelJson({"predict", T10kImages(), T10kLabels(), "--index", "0", "--top", "10"});
  if (!r.has_value()) return std::nan("");
  double pa = -1, pb = -1;
  for (const Json& t : r->Find("top")->array) {
    if (t.Num("label") == a) pa = t.Num("probability");
    if (t.Num("label") == b) pb = t.Num("probability");
  }
  return pa > 0 && pb > 0 ? std::log(pa / pb) : std::nan("");
}

// [model] personal_prior through the real binaries. Two paused daemons of one
// seed hold the same weights; the one with the prior answers with the log of
// its stored class shares (add-one smoothed) added to the logits, and follows
// its store: an ingest of class 3 raises 3 against 0 by log(n3 + 1), and
// forgetting class 3 takes it back to the plain answer.
TEST(DataControlTest, PersonalPriorWeighsPredictionsByTheStoresClasses) {
  TempDir tmp;
  ConfigSpec with_prior;
  with_prior.extra_model = "personal_prior = true\n";
  TestNode plain(tmp.path(), "plain"), personal(tmp.path(), "personal", with_prior);
  for (TestNode* n : {&plain, &personal}) {
    ASSERT_TRUE(n->daemon().Start());
    ASSERT_EQ(n->Mycel({"pause"}).exit_code, 0);
  }
  EXPECT_NEAR(LogOdds(personal, 3, 0), LogOdds(plain, 3, 0), 1e-4) << "an empty store is a uniform prior";
  for (TestNode* n : {&plain, &personal}) {
    ASSERT_EQ(n->Mycel({"ingest", "--labels", "3", T10kImages(), T10kLabels()}).exit_code, 0);
  }
  auto data = personal.MycelJson({"data"});
  ASSERT_TRUE(data.has_value());
  double n3 = -1;
  for (const Json& l : data->Find("labels")->array) {
    if (l.Num("label") == 3) n3 = l.Num("train");
  }
  ASSERT_GT(n3, 500);
  const double plain_odds = LogOdds(plain, 3, 0);
  ASSERT_TRUE(std::isfinite(plain_odds));
  double shift = 0;
  EXPECT_TRUE(PollUntil([&] {
    shift = LogOdds(personal, 3, 0) - plain_odds;
    return std::abs(shift - std::log(n3 + 1)) < 1e-3;
  }, 30)) << "shift " << shift << ", want log(" << n3 << " + 1)\n" << personal.daemon().LogSinceStart();
  EXPECT_EQ(plain.StatusNum("steps"), 0) << "the two models must not have trained";
  EXPECT_EQ(personal.StatusNum("steps"), 0);

  // Turning the prior on is a [model] change: a reload says it waits for a
  // restart, and the running model keeps answering without it.
  const std::string cfg = ReadFileOrDie(plain.config_path());
  const size_t at = cfg.find("[model]\n");
  ASSERT_NE(at, std::string::npos) << cfg;
  WriteFileOrDie(plain.config_path(), cfg.substr(0, at) + "[model]\npersonal_prior = true\n" + cfg.substr(at + 8));
  CommandResult reload = plain.Mycel({"reload"});
  ASSERT_EQ(reload.exit_code, 0) << reload.Describe();
  EXPECT_NE(reload.out.find("changed but needs a restart: [model]"), std::string::npos) << reload.Describe();
  EXPECT_NEAR(LogOdds(plain, 3, 0), plain_odds, 1e-4) << "a reload half-applied the prior";

  ASSERT_EQ(personal.Mycel({"forget", "--label", "3"}).exit_code, 0);
  EXPECT_TRUE(PollUntil([&] {
    shift = LogOdds(personal, 3, 0) - plain_odds;
    return std::abs(shift) < 1e-3;
  }, 30)) << "after forgetting class 3 the shift is still " << shift;
  EXPECT_EQ(plain.daemon().Stop(), 0);
  EXPECT_EQ(personal.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
