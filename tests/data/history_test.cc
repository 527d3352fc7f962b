// The validation-pass history (data/history.h): real SQLite files.
#include "data/history.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::data {
namespace {

HistoryEntry Pass(double t, int64_t steps, double acc) {
  HistoryEntry e;
  e.unix_s = t;
  e.steps = steps;
  e.samples_trained = steps * 32;
  e.val_accuracy = acc;
  e.val_loss = 1 - acc;
  e.train_loss = std::numeric_limits<double>::quiet_NaN();
  e.learning_rate = 0.01;
  e.rounds = steps / 10;
  e.bytes_sent = steps * 100;
  e.bytes_received = steps * 90;
  e.state = "training";
  return e;
}

TEST(HistoryTest, PassesComeBackInOrderAcrossAReopenWithNaNKept) {
  const std::string path = test::MakeTempDir() + "/history.db";
  {
    auto h = History::Open(path);
    ASSERT_TRUE(h.ok()) << h.status();
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*h)->Record(Pass(1000 + i, i * 10, 0.5 + 0.1 * i)).ok());
  }
  std::string moved;
  auto h = History::Open(path, &moved);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(moved, "");
  auto all = (*h)->Since(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].steps, 0);
  EXPECT_EQ((*all)[4].steps, 40);
  EXPECT_DOUBLE_EQ((*all)[4].val_accuracy, 0.9);
  EXPECT_EQ((*all)[4].bytes_received, 3600);
  EXPECT_EQ((*all)[4].state, "training");
  EXPECT_TRUE(std::isnan((*all)[0].train_loss));
  // Since: a time bound, then the newest `limit` of what is left, still oldest first.
  auto recent = (*h)->Since(1002, 100);
  ASSERT_TRUE(recent.ok());
  ASSERT_EQ(recent->size(), 3u);
  EXPECT_EQ(recent->front().steps, 20);
  auto newest = (*h)->Since(0, 2);
  ASSERT_TRUE(newest.ok());
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].steps, 30);
  EXPECT_EQ((*newest)[1].steps, 40);
}

TEST(HistoryTest, KeepsAtMostMaxRowsTheNewest) {
  auto h = History::Open(test::MakeTempDir() + "/history.db", nullptr, /*max_rows=*/200);
  ASSERT_TRUE(h.ok()) << h.status();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE((*h)->Record(Pass(i, i, 0.5)).ok());
  auto all = (*h)->Since(0, 100000);
  ASSERT_TRUE(all.ok());
  EXPECT_LE(all->size(), 202u);
  EXPECT_GE(all->size(), 200u);
  EXPECT_EQ(all->back().steps, 999);
}

TEST(HistoryTest, TheBoundHoldsAcrossReopens) {
  const std::string path = test::MakeTempDir() + "/history.db";
  // 40 passes a run, fewer than the 50 (1% of 5000) between trims while
  // running: only a trim at each open keeps the bound.
  for (int run = 0; run < 130; ++run) {
    auto h = History::Open(path, nullptr, /*max_rows=*/5000);
    ASSERT_TRUE(h.ok()) << h.status();
    for (int i = 0; i < 40; ++i) ASSERT_TRUE((*h)->Record(Pass(run * 100 + i, run * 100 + i, 0.5)).ok());
  }
  auto h = History::Open(path, nullptr, 5000);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)->Since(0, 100000)->size(), 5000u);
}

TEST(HistoryTest, AFileItCannotOpenIsLeftAloneNotMovedAside) {
  const std::string dir = test::MakeTempDir();
  // A directory where the file should be: not damage, an error.
  std::filesystem::create_directory(dir + "/history.db");
  std::string moved;
  auto h = History::Open(dir + "/history.db", &moved);
  EXPECT_FALSE(h.ok());
  EXPECT_EQ(moved, "");
  EXPECT_TRUE(std::filesystem::is_directory(dir + "/history.db"));
}

TEST(HistoryTest, AnUnreadableFileIsMovedAsideNamedAndANewOneStarts) {
  const std::string dir = test::MakeTempDir();
  const std::string path = dir + "/history.db";
  {
    std::ofstream f(path, std::ios::binary);
    f << "this is not an SQLite database, but it is somebody's file" << std::string(8192, 'x');
  }
  std::string moved;
  auto h = History::Open(path, &moved);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_NE(moved.find(path + ".corrupt-"), std::string::npos) << moved;
  ASSERT_TRUE((*h)->Record(Pass(1, 1, 0.5)).ok());
  EXPECT_EQ((*h)->Since(0, 10)->size(), 1u);
  // The old file is kept, byte for byte, where the message says.
  const std::string aside = moved.substr(0, moved.find(' '));
  std::ifstream kept(aside, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(kept)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.rfind("this is not an SQLite database", 0), 0u);
}

}  // namespace
}  // namespace mycel::data
