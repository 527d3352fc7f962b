#include "common/file_util.h"

#include <cerrno>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "common/status.h"
#include "common/test_util.h"

namespace mycel {
namespace {

TEST(FileUtil, AtomicWriteReplacesAndLeavesNoTemp) {
  std::string dir = test::MakeTempDir();
  std::string path = dir + "/f";
  ASSERT_TRUE(Env::Default()->WriteFileAtomically(path, "one").ok());
  ASSERT_TRUE(Env::Default()->WriteFileAtomically(path, "two").ok());
  EXPECT_EQ(*Env::Default()->ReadFile(path), "two");
  auto names = Env::Default()->ListDir(dir);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names->size(), 1u);
}

TEST(FileUtil, ChecksumDetectsEveryFlippedByteAndTruncation) {
  std::string framed = FrameChecksummed("MYCELTST", "payload bytes");
  auto ok = UnframeChecksummed("MYCELTST", framed, "t");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, "payload bytes");
  for (size_t i = 0; i < framed.size(); ++i) {
    std::string bad = framed;
    bad[i] ^= 0x01;
    EXPECT_FALSE(UnframeChecksummed("MYCELTST", bad, "t").ok()) << "byte " << i;
  }
  auto trunc = UnframeChecksummed("MYCELTST", framed.substr(0, framed.size() - 1), "ckpt-7");
  ASSERT_FALSE(trunc.ok());
  EXPECT_EQ(trunc.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(trunc.status().message().find("ckpt-7"), std::string::npos);
}

// The on-disk bytes themselves (checkpoints and state files written by older
// builds must still read): magic, u64 little-endian length, BLAKE2b-256.
TEST(FileUtil, FramedBytesAreStable) {
  EXPECT_EQ(absl::BytesToHexString(FrameChecksummed("MYCELTST", "abc")),
            "4d5943454c545354"
            "0300000000000000"
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
            "616263");
  // A short magic is NUL-padded to 8 bytes.
  EXPECT_EQ(absl::BytesToHexString(FrameChecksummed("AB", "")),
            "4142000000000000"
            "0000000000000000"
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

TEST(FileUtil, MissingFileIsNotFoundNamingPath) {
  auto r = Env::Default()->ReadFile("/nonexistent/mycel/x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/mycel/x"), std::string::npos);
}

// What no retry fixes (the daemon exits 2 on these, and its unit does not
// restart it): a mode, and a read-only file system such as a unit's sandbox.
TEST(FileUtil, ErrnoNeedingTheUserIsPermissionDenied) {
  for (int err : {EACCES, EPERM, EROFS}) {
    EXPECT_EQ(ErrnoStatus(err, "mkdir", "/s").code(), absl::StatusCode::kPermissionDenied) << err;
  }
  EXPECT_EQ(ErrnoStatus(EIO, "mkdir", "/s").code(), absl::StatusCode::kInternal);
}

TEST(FileUtil, ExpandPathExpandsVariablesAndHome) {
  ::setenv("MYCEL_TEST_VAR", "/abc", 1);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(ExpandPath("$MYCEL_TEST_VAR/x"), "/abc/x");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_VAR}y"), "/abcy");
  EXPECT_EQ(ExpandPath("~/s"), "/home/u/s");
}

TEST(FileUtil, ExpandPathTakesADefaultForAnUnsetOrEmptyVariable) {
  ::setenv("MYCEL_TEST_VAR", "/abc", 1);
  ::setenv("HOME", "/home/u", 1);
  ::unsetenv("MYCEL_TEST_UNSET");
  ::setenv("MYCEL_TEST_EMPTY", "", 1);
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_VAR:-/d}/x"), "/abc/x");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_UNSET:-/d}/x"), "/d/x");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_EMPTY:-/d}/x"), "/d/x");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_UNSET:-$HOME/.local/state/demo}"), "/home/u/.local/state/demo");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_UNSET:-${MYCEL_TEST_VAR}/n}"), "/abc/n");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_UNSET:-}z"), "z");
  EXPECT_EQ(ExpandPath("${MYCEL_TEST_UNSET:-/open"), "/open");  // no closing brace: the rest is the default
}

}  // namespace
}  // namespace mycel
