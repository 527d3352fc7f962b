// The crash campaign: kill -9 one of two pinned neighbours at random moments
// of ingest, training, checkpointing and gossip, MYCEL_CRASH_KILLS times
// (tests/bench/crash_campaign.sh N), and check after every restart that
//   - the daemon comes up;
//   - every acknowledged example is in the store exactly once (the real
//     SQLite file is read: rows = distinct rows = examples acknowledged);
//   - a checkpoint that exists loads (no "skipping", a "resumed from" line);
//   - the neighbours exchange again.
// An ingest the kill interrupted is finished as a user would: mycel retries
// with its key by itself, and a failed mycel is re-run with the same --key.
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "../integration/harness.h"

namespace mycel::it {
namespace {

constexpr int kRowsPerIngest = 100;

// 100 CSV rows no other ingest shares: the first two features encode the
// ingest and the row.
std::string UniqueCsv(int ingest) {
  std::string csv;
  for (int row = 0; row < kRowsPerIngest; ++row) {
    csv += std::to_string(row % 10) + "," + std::to_string(ingest) + "," + std::to_string(row);
    for (int f = 2; f < 784; ++f) csv += ",0";
    csv += "\n";
  }
  return csv;
}

// Rows and distinct rows in the store file, read by SQLite itself.
std::pair<int64_t, int64_t> RowsAndDistinct(const std::string& path) {
  sqlite3* db = nullptr;
  std::pair<int64_t, int64_t> out{-1, -1};
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*), count(DISTINCT data) FROM examples", -1, &s, nullptr) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
      out = {sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1)};
    }
    sqlite3_finalize(s);
  }
  sqlite3_close_v2(db);
  return out;
}

double PullsFrom(const TestNode& node) {
  CommandResult r = node.Mycel({"peers", "--json"}, 20);
  if (r.exit_code != 0) return -1;
  auto j = ParseJson(r.out);
  if (!j || !j->Find("peers") || j->Find("peers")->array.empty()) return -1;
  return j->Find("peers")->array.at(0).Num("pulls_ok");
}

TEST(CrashCampaign, KillNineAtRandomMomentsLosesAndDuplicatesNothing) {
  const int kills = std::getenv("MYCEL_CRASH_KILLS") ? std::atoi(std::getenv("MYCEL_CRASH_KILLS")) : 10;
  ASSERT_GT(kills, 0);
  uint32_t seed = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* env = std::getenv("MYCEL_IT_SEED")) seed = static_cast<uint32_t>(std::stoul(env));
  std::printf("[   SEED   ] MYCEL_IT_SEED=%u\n", seed);
  std::mt19937 rng(seed);

  TempDir tmp;
  ConfigSpec spec;
  spec.checkpoint_interval_s = 0.2;  // kills land before, during and after checkpoint writes
  spec.extra_training = "max_examples = 1000000\n";
  TestNode a(tmp.path(), "a", spec), b(tmp.path(), "b", spec);
  const int port_a = FreePort(), port_b = FreePort();
  auto key_of = [](const TestNode& n) {
    CommandResult id = n.Mycel({"id"});
    EXPECT_EQ(id.exit_code, 0) << id.Describe();
    return id.out.substr(0, id.out.find('\n'));
  };
  const std::string key_a = key_of(a), key_b = key_of(b);
  auto write = [&](const TestNode& n, const std::string& name, int port, const std::string& peer, int peer_port,
                   const std::string& peer_key) {
    ConfigSpec s = spec;
    s.extra_node = "listen = \"127.0.0.1:" + std::to_string(port) + "\"\n";
    WriteFileOrDie(n.config_path(), ConfigToml(name, n.state_dir(), s) +
                                        "\n[federation]\nround_interval_s = 0.5\n\n[[peers]]\nname = \"" + peer +
                                        "\"\naddress = \"127.0.0.1:" + std::to_string(peer_port) +
                                        "\"\npublic_key = \"" + peer_key + "\"\n");
  };
  write(a, "a", port_a, "b", port_b, key_b);
  write(b, "b", port_b, "a", port_a, key_a);
  ASSERT_TRUE(b.daemon().Start());
  ASSERT_TRUE(a.daemon().Start());
  const std::string store = a.state_dir() + "/examples.db";
  const std::string ckpt_dir = a.state_dir() + "/checkpoints";

  int64_t acknowledged = 0;
  int restarts = 0, mid_ingest = 0, retried_by_mycel = 0, rerun_by_user = 0, resumed = 0, exchanged = 0;
  int lost_or_duplicated = 0, unloadable = 0;
  for (int k = 0; k < kills; ++k) {
    SCOPED_TRACE("kill " + std::to_string(k));
    std::unique_ptr<Process> ingest;
    const std::string key = "campaign-" + std::to_string(k);
    const std::string csv = tmp.path() + "/ingest-" + std::to_string(k) + ".csv";
    const std::string out = tmp.path() + "/ingest-" + std::to_string(k) + ".log";
    const bool with_ingest = std::bernoulli_distribution(0.5)(rng);
    if (with_ingest) {
      WriteFileOrDie(csv, UniqueCsv(k));
      ingest = a.SpawnMycel({"ingest", "--key", key, "--retry", "60", csv}, out, out);
      ASSERT_TRUE(ingest);
    }
    SleepSeconds(std::uniform_real_distribution<double>(with_ingest ? 0.0 : 0.1, with_ingest ? 0.6 : 1.5)(rng));
    if (ingest && ingest->Running()) ++mid_ingest;
    const bool had_checkpoint = [&] {
      for (const auto& n : ListDir(ckpt_dir)) {
        if (n.rfind("ckpt-", 0) == 0 && n.find(".tmp-") == std::string::npos) return true;
      }
      return false;
    }();
    a.daemon().Crash();
    ::testing::AssertionResult up = a.daemon().Start();
    ASSERT_TRUE(up) << "restart " << k << " failed";
    ++restarts;
    const std::string log = a.daemon().LogSinceStart();
    if (log.find("skipping") != std::string::npos) ++unloadable;
    EXPECT_EQ(log.find("skipping"), std::string::npos) << "a torn or corrupt checkpoint:\n" << log;
    if (had_checkpoint) {
      if (log.find("resumed from") != std::string::npos) ++resumed; else ++unloadable;
    }
    if (ingest) {
      auto code = ingest->Wait(90);
      ASSERT_TRUE(code.has_value()) << "mycel ingest hung";
      if (ReadFileOrDie(out).find("retrying with key") != std::string::npos) ++retried_by_mycel;
      if (*code != 0) {
        ++rerun_by_user;
        CommandResult again = a.Mycel({"ingest", "--key", key, csv});
        ASSERT_EQ(again.exit_code, 0) << again.Describe();
      }
      acknowledged += kRowsPerIngest;
    }
    auto [rows, distinct] = RowsAndDistinct(store);
    if (rows != acknowledged || distinct != acknowledged) ++lost_or_duplicated;
    EXPECT_EQ(rows, acknowledged) << "rows in " << store;
    EXPECT_EQ(distinct, acknowledged) << "distinct rows in " << store;
    EXPECT_EQ(a.ExampleCount(), acknowledged);
    // Counters restart with the process: one good pull is an exchange again.
    if (PollUntil([&] { return PullsFrom(a) >= 1; }, 30, 0.25)) ++exchanged;
    else ADD_FAILURE() << "a never pulled from b again after restart " << k << ":\n" << a.daemon().LogSinceStart();
  }
  std::printf("crash campaign: %d kills, %d restarts (%.0f%%), %d mid-ingest (%d retried by mycel, %d re-run "
              "with --key), %lld acknowledged examples, %d lost or duplicated, %d resumed from a checkpoint, %d "
              "unloadable checkpoints, %d of %d exchanged again\n",
              kills, restarts, 100.0 * restarts / kills, mid_ingest, retried_by_mycel, rerun_by_user,
              static_cast<long long>(acknowledged), lost_or_duplicated, resumed, unloadable, exchanged, kills);
  // b backs off from a while a is down, so give it the same time a gets.
  EXPECT_TRUE(PollUntil([&] { return PullsFrom(b) >= 1; }, 30, 0.25)) << "b never pulled from a";
  EXPECT_EQ(a.daemon().Stop(60), std::optional<int>(0));
  EXPECT_EQ(b.daemon().Stop(60), std::optional<int>(0));
}

}  // namespace
}  // namespace mycel::it
