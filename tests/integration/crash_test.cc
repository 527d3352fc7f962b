// kill -9 at random moments: the daemon always comes back, with every stored
// example, from a checkpoint at least as new as the last one it reported, and
// with no torn files. An ingest cut short by a crash is all or nothing.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <regex>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// Step of the newest "checkpoint N written (...) at step S" line, or -1.
int64_t LastCheckpointStep(const std::string& log) {
  static const std::regex re(R"(checkpoint \d+ written \([a-z]+\) at step (\d+))");
  int64_t step = -1;
  for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) {
    step = std::max<int64_t>(step, std::stoll((*it)[1]));
  }
  return step;
}

// Step of the "resumed from <path> at step S" line, or -1.
int64_t ResumedStep(const std::string& log) {
  static const std::regex re(R"(resumed from \S+ at step (\d+))");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return -1;
  return std::stoll(m[1]);
}

std::vector<std::string> Matching(const std::string& dir, const std::function<bool(const std::string&)>& pred) {
  std::vector<std::string> names;
  for (const auto& n : ListDir(dir)) {
    if (pred(n)) names.push_back(n);
  }
  return names;
}

bool IsCheckpoint(const std::string& n) {
  return n.rfind("ckpt-", 0) == 0 && n.size() > 4 && n.compare(n.size() - 4, 4, ".bin") == 0;
}
bool IsTemp(const std::string& n) { return n.find(".tmp-") != std::string::npos; }

uint32_t Seed() {
  uint32_t seed = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* env = std::getenv("MYCEL_IT_SEED")) seed = static_cast<uint32_t>(std::stoul(env));
  std::printf("[   SEED   ] MYCEL_IT_SEED=%u\n", seed);
  return seed;
}

class CrashTest : public ::testing::Test {
 protected:
  CrashTest() {
    ConfigSpec spec;
    // Checkpoints all the time, so kills land before, during and after writes.
    spec.checkpoint_interval_s = 0.2;
    // Room for t10k plus a few train sets without reservoir eviction, so
    // counts are exact.
    spec.extra_training = "max_examples = 400000\n";
    node_ = std::make_unique<TestNode>(tmp_.path(), "node", spec);
  }
  std::string CheckpointDir() const { return node_->state_dir() + "/checkpoints"; }

  TempDir tmp_;
  std::unique_ptr<TestNode> node_;
};

TEST_F(CrashTest, KillNineAtRandomMomentsLosesNothingCheckpointed) {
  std::mt19937 rng(Seed());
  TestNode& node = *node_;
  ASSERT_TRUE(node.daemon().Start());
  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const int64_t count = node.ExampleCount();
  ASSERT_EQ(count, kT10kCount);

  int64_t confirmed_step = -1;  // newest checkpoint step a log line has confirmed
  int resumed_rounds = 0;
  for (int round = 0; round < 15; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    SleepSeconds(std::uniform_real_distribution<double>(0.2, 1.5)(rng));
    node.daemon().Crash();
    confirmed_step = std::max(confirmed_step, LastCheckpointStep(node.daemon().LogSinceStart()));
    const bool had_checkpoint = !Matching(CheckpointDir(), IsCheckpoint).empty();
    const std::vector<std::string> stale = Matching(CheckpointDir(), IsTemp);

    ASSERT_TRUE(node.daemon().Start());
    const std::string log = node.daemon().LogSinceStart();
    EXPECT_EQ(log.find("skipping"), std::string::npos) << "a torn or corrupt checkpoint:\n" << log;
    if (had_checkpoint) {
      ++resumed_rounds;
      const int64_t resumed = ResumedStep(log);
      EXPECT_GE(resumed, 0) << "checkpoints exist but no 'resumed from ... at step' line:\n" << log;
      EXPECT_GE(resumed, confirmed_step) << "resumed from an older checkpoint than the last one written:\n" << log;
    }
    auto st = node.Status();
    ASSERT_TRUE(st) << log;
    EXPECT_EQ(static_cast<int64_t>(st->Num("examples_train") + st->Num("examples_val")), count);
    EXPECT_GE(st->Num("steps"), std::max<int64_t>(0, confirmed_step)) << "steps went backwards";
    for (const auto& name : stale) {
      EXPECT_FALSE(Exists(CheckpointDir() + "/" + name)) << "stale temp file " << name << " survived a start";
    }
    // A save has at most keep + 1 = 3 files between its rename and its cleanup.
    std::vector<std::string> ckpts;
    EXPECT_TRUE(PollUntil(
        [&] {
          ckpts = Matching(CheckpointDir(), IsCheckpoint);
          return ckpts.size() <= 2;
        },
        10))
        << ckpts.size() << " checkpoint files";
  }
  std::printf("[   INFO   ] %d of 15 restarts resumed from a checkpoint; newest confirmed step %lld\n",
              resumed_rounds, static_cast<long long>(confirmed_step));
  EXPECT_GT(resumed_rounds, 0) << "no round ever had a checkpoint to resume from";
  // Still alive and learning after all that.
  const double steps = node.StatusNum("steps");
  EXPECT_TRUE(node.WaitForStepsAbove(steps, 60)) << node.daemon().LogSinceStart();
  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << node.daemon().LogSinceStart();
}

// kill -9 while `mycel ingest` of the 60000-image train set waits for its
// answer, then restart the daemon as systemd would. The ingest ends up stored
// exactly once: mycel retries with the ingest's key when the daemon held the
// files, and a user who re-runs a failed ingest with the key it printed gets
// nothing twice, even when the first call committed and only its answer died.
TEST_F(CrashTest, KillNineDuringAnIngestStoresItExactlyOnce) {
  std::mt19937 rng(Seed());
  TestNode& node = *node_;
  ASSERT_TRUE(node.daemon().Start());
  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  int landed = 0, retried = 0;
  double max_delay = 3.0;
  for (int attempt = 0; attempt < 5 && (landed < 2 || retried < 1); ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    // The store drops byte-identical examples, which would hide a second
    // store of the same files. Forget the train set first, so only the key
    // stands between a retry and storing it twice.
    if (attempt > 0) {
      CommandResult forgot = node.Mycel({"forget", "--before", "2099-01-01"});
      ASSERT_EQ(forgot.exit_code, 0) << forgot.Describe();
      CommandResult base = node.Mycel({"ingest", T10kImages(), T10kLabels()});
      ASSERT_EQ(base.exit_code, 0) << base.Describe();
    }
    const int64_t old_count = node.ExampleCount();
    ASSERT_EQ(old_count, kT10kCount);
    const std::string key = "crash-test-" + std::to_string(attempt);
    const std::string out = tmp_.path() + "/ingest-" + std::to_string(attempt) + ".out";
    const std::string err = tmp_.path() + "/ingest-" + std::to_string(attempt) + ".err";
    auto ingest = node.SpawnMycel({"ingest", "--key", key, "--retry", "120", TrainImages(), TrainLabels()}, out, err);
    ASSERT_TRUE(ingest);
    SleepSeconds(std::uniform_real_distribution<double>(0.1, max_delay)(rng));
    const bool mid_ingest = ingest->Running();
    node.daemon().Crash();
    ASSERT_TRUE(node.daemon().Start());
    auto cli_code = ingest->Wait(150);
    ASSERT_TRUE(cli_code.has_value()) << "mycel ingest hung after the daemon came back";
    const std::string said = ReadFileOrDie(out) + ReadFileOrDie(err);
    if (mid_ingest) {
      ++landed;
    } else {
      max_delay = std::max(0.3, max_delay / 2);
    }
    if (said.find("retrying with key " + key) != std::string::npos) ++retried;
    const int64_t now = node.ExampleCount();
    if (*cli_code == 0) {
      EXPECT_EQ(now, old_count + kTrainCount) << "acknowledged, but not stored exactly once; mycel said: " << said;
    } else {
      EXPECT_EQ(now, old_count) << "mycel failed, yet the store changed; mycel said: " << said;
      EXPECT_NE(said.find("myceld"), std::string::npos) << said;
    }
    // The user's path after any outcome: the same command again, same key.
    CommandResult again = node.Mycel({"ingest", "--key", key, TrainImages(), TrainLabels()});
    ASSERT_EQ(again.exit_code, 0) << again.Describe();
    EXPECT_EQ(node.ExampleCount(), old_count + kTrainCount) << again.Describe();
    if (*cli_code == 0) {
      EXPECT_NE(again.out.find("already stored by an earlier ingest with key " + key), std::string::npos)
          << again.out;
    }
  }
  std::printf("[   INFO   ] %d kill(s) landed during an ingest, %d retried by mycel\n", landed, retried);
  EXPECT_GT(landed, 0) << "never managed to kill the daemon during an ingest";
  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << node.daemon().LogSinceStart();
}

// A store with damaged pages stops the start with exit 2 and a pointer to
// `mycel repair`, which salvages what SQLite can read into a new store,
// keeps the damaged file and lets the daemon start on the rest.
TEST(RepairTest, ADamagedStoreIsSalvagedAndTheDamagedFileKept) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  CommandResult running = node.Mycel({"repair"});
  EXPECT_EQ(running.exit_code, 1) << running.Describe();
  EXPECT_NE(running.err.find("myceld is running"), std::string::npos) << running.Describe();
  ASSERT_EQ(node.daemon().Stop(60), std::optional<int>(0));
  CommandResult clean = node.Mycel({"repair"});
  EXPECT_EQ(clean.exit_code, 0) << clean.Describe();
  EXPECT_NE(clean.out.find("opens cleanly (10000 examples)"), std::string::npos) << clean.Describe();

  // Garbage over a tenth of the file's pages, from 40% of the way in.
  const std::string store = node.state_dir() + "/examples.db";
  std::string bytes = ReadFileOrDie(store);
  ASSERT_GT(bytes.size(), 4u << 20);
  std::mt19937 rng(5);
  const size_t from = bytes.size() * 4 / 10 / 4096 * 4096, to = bytes.size() / 2 / 4096 * 4096;
  for (size_t i = from; i < to; ++i) bytes[i] = static_cast<char>(rng());
  WriteFileOrDie(store, bytes);

  ::testing::AssertionResult up = node.daemon().Start(60);
  ASSERT_FALSE(up) << "myceld started on a damaged store";
  EXPECT_EQ(node.daemon().WaitExit(10), std::optional<int>(2));
  EXPECT_NE(node.daemon().LogSinceStart().find("mycel repair"), std::string::npos) << node.daemon().LogSinceStart();

  CommandResult repaired = node.Mycel({"repair"});
  ASSERT_EQ(repaired.exit_code, 0) << repaired.Describe();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(repaired.out, m, std::regex(R"(salvaged (\d+) examples)"))) << repaired.out;
  const int64_t salvaged = std::stoll(m[1]);
  EXPECT_GT(salvaged, kT10kCount / 2) << "a tenth of the pages cost more than half the rows";
  EXPECT_LT(salvaged, kT10kCount) << "rows on garbage pages cannot have been read";
  int kept = 0;
  for (const auto& n : ListDir(node.state_dir())) {
    if (n.rfind("examples.db.damaged-", 0) == 0 && n.find("-wal") == std::string::npos &&
        n.find("-shm") == std::string::npos) {
      ++kept;
      EXPECT_EQ(ReadFileOrDie(node.state_dir() + "/" + n), bytes) << "the damaged store was changed";
    }
  }
  EXPECT_EQ(kept, 1);

  ASSERT_TRUE(node.daemon().Start());
  EXPECT_EQ(node.ExampleCount(), salvaged);
  EXPECT_TRUE(node.WaitForStepsAbove(node.StatusNum("steps"), 60)) << node.daemon().LogSinceStart();
  ASSERT_EQ(node.daemon().Stop(60), std::optional<int>(0));

  // A repair killed between its two renames: the salvaged store waits as
  // .repair-tmp and examples.db is gone. myceld must not start on a new empty
  // store; a second `mycel repair` finishes the job.
  ASSERT_EQ(std::rename(store.c_str(), (store + ".repair-tmp").c_str()), 0);
  ASSERT_FALSE(node.daemon().Start(60)) << "myceld started without its store";
  EXPECT_EQ(node.daemon().WaitExit(10), std::optional<int>(2));
  EXPECT_NE(node.daemon().LogSinceStart().find("a `mycel repair` was interrupted"), std::string::npos)
      << node.daemon().LogSinceStart();
  EXPECT_FALSE(Exists(store)) << "the refused start created a store";
  CommandResult finish = node.Mycel({"repair"});
  ASSERT_EQ(finish.exit_code, 0) << finish.Describe();
  EXPECT_NE(finish.out.find("finished an interrupted repair"), std::string::npos) << finish.Describe();
  ASSERT_TRUE(node.daemon().Start());
  EXPECT_EQ(node.ExampleCount(), salvaged);
  EXPECT_EQ(node.daemon().Stop(60), std::optional<int>(0));
}

}  // namespace
}  // namespace mycel::it
