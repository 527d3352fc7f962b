#include "train/checkpointer.h"

#include <sys/stat.h>

#include <fstream>

#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::train {
namespace {

// A disk that fills up: every write fails with ENOSPC while `full` is set.
class FullDiskEnv : public Env {
 public:
  bool full = false;
  absl::Status WriteFileAtomically(const std::string& path, std::string_view data) override {
    if (full) return absl::ResourceExhaustedError("write " + path + ": No space left on device");
    return Env::WriteFileAtomically(path, data);
  }
};

TEST(Checkpointer, KeepsNewestTwoAndLoadsNewest) {
  CheckpointerOptions o;
  o.dir = test::MakeTempDir() + "/ckpt";
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE((*c)->Save("payload " + std::to_string(i)).ok());
  auto names = Env::Default()->ListDir(o.dir);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 2u);
  auto loaded = (*c)->LoadNewest();
  ASSERT_TRUE(loaded.ok());
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->payload, "payload 5");
  EXPECT_EQ((*loaded)->seq, 5u);
}

TEST(Checkpointer, ReopenContinuesSequence) {
  CheckpointerOptions o;
  o.dir = test::MakeTempDir();
  {
    auto c = Checkpointer::Open(o);
    ASSERT_TRUE((*c)->Save("a").ok());
    ASSERT_TRUE((*c)->Save("b").ok());
  }
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Save("c").ok());
  EXPECT_EQ((*(*c)->LoadNewest())->payload, "c");
}

TEST(Checkpointer, CorruptNewestFallsBackToPrevious) {
  CheckpointerOptions o;
  o.dir = test::MakeTempDir();
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE((*c)->Save("good old").ok());
  ASSERT_TRUE((*c)->Save("good new").ok());
  auto newest = (*(*c)->LoadNewest())->path;
  {
    // Flip a byte in the payload of the newest file.
    std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-2, std::ios::end);
    f.put('X');
  }
  auto loaded = (*c)->LoadNewest();
  ASSERT_TRUE(loaded.ok());
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->payload, "good old");
  // A truncated newest is skipped the same way.
  ::truncate(newest.c_str(), 10);
  EXPECT_EQ((*(*c)->LoadNewest())->payload, "good old");
}

TEST(Checkpointer, FullDiskKeepsEarlierCheckpoints) {
  FullDiskEnv env;
  CheckpointerOptions o;
  o.dir = test::MakeTempDir();
  o.env = &env;
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE((*c)->Save("before the disk filled").ok());
  env.full = true;
  absl::Status s = (*c)->Save("lost");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("No space left"), std::string::npos);
  env.full = false;
  EXPECT_EQ((*(*c)->LoadNewest())->payload, "before the disk filled");
  ASSERT_TRUE((*c)->Save("after").ok());
  EXPECT_EQ((*(*c)->LoadNewest())->payload, "after");
}

TEST(Checkpointer, OpenRemovesStaleTempFiles) {
  std::string dir = test::MakeTempDir();
  std::ofstream(dir + "/ckpt-000000000003.bin.tmp-1234") << "torn";
  CheckpointerOptions o;
  o.dir = dir;
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(Env::Default()->ListDir(dir)->empty());
  EXPECT_FALSE((*(*c)->LoadNewest()).has_value());
}

// File names a daemon never writes must not stop it: a sequence that does not
// fit 64 bits used to abort every start (uncaught std::out_of_range), and
// 2^64 − 1 made the next sequence wrap to 0, so each new checkpoint was deleted
// as the oldest right after it was written.
TEST(Checkpointer, HostileNamesAreIgnoredAndNewCheckpointsSurvive) {
  CheckpointerOptions o;
  o.dir = test::MakeTempDir() + "/ckpt";
  ASSERT_TRUE(Env::Default()->CreateDirs(o.dir, 0700).ok());
  for (const char* name : {"ckpt-99999999999999999999999.bin", "ckpt-18446744073709551615.bin",
                           "ckpt-1000000000000000.bin", "ckpt-12x.bin"}) {
    std::ofstream(o.dir + "/" + name) << "not a checkpoint";
  }
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Save("first").ok());
  ASSERT_TRUE((*c)->Save("second").ok());
  auto loaded = (*c)->LoadNewest();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->payload, "second");
  EXPECT_EQ((*loaded)->seq, 2u);
  auto names = Env::Default()->ListDir(o.dir);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 6u);  // the four strangers untouched, and our two
}

TEST(Checkpointer, GoodCheckpointIsKeptApartFromTheNumberedOnes) {
  CheckpointerOptions o;
  o.dir = test::MakeTempDir() + "/ckpt";
  auto c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok()) << c.status();
  auto none = (*c)->LoadGood();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE((*c)->SaveGood("good one").ok());
  ASSERT_TRUE((*c)->SaveGood("good two").ok());  // replaces, atomically
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE((*c)->Save("numbered " + std::to_string(i)).ok());
  // Rotation never removes it, and restarts never restore it.
  auto newest = (*c)->LoadNewest();
  ASSERT_TRUE(newest.ok() && newest->has_value());
  EXPECT_EQ((*newest)->payload, "numbered 4");
  c = Checkpointer::Open(o);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->last_seq(), 4u);
  auto good = (*c)->LoadGood();
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_TRUE(good->has_value());
  EXPECT_EQ((*good)->payload, "good two");

  // A flipped byte is refused with the file's name, not loaded.
  const std::string path = o.dir + "/good.bin";
  auto bytes = Env::Default()->ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  (*bytes)[bytes->size() - 1] ^= 0x40;
  ASSERT_TRUE(Env::Default()->WriteFileAtomically(path, *bytes).ok());
  auto corrupt = (*c)->LoadGood();
  ASSERT_FALSE(corrupt.ok());
  EXPECT_NE(corrupt.status().message().find("good.bin"), std::string::npos) << corrupt.status();
}

TEST(Sections, RoundTripAndTruncation) {
  Sections s;
  s.Put("meta", "steps=3");
  s.Put("params", std::string("\0\1\2", 3));
  auto encoded = s.Encode();
  auto decoded = Sections::Decode(encoded);
  ASSERT_TRUE(decoded.ok());
  ASSERT_NE(decoded->Get("params"), nullptr);
  EXPECT_EQ(*decoded->Get("params"), std::string("\0\1\2", 3));
  EXPECT_EQ(*decoded->Get("meta"), "steps=3");
  EXPECT_EQ(decoded->Get("nope"), nullptr);
  for (size_t cut = 0; cut < encoded.size(); ++cut) {
    EXPECT_FALSE(Sections::Decode(encoded.substr(0, cut)).ok()) << cut;
  }
}

}  // namespace
}  // namespace mycel::train
