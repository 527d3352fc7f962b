#include "common/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel {
namespace {

using ::testing::HasSubstr;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// One process-wide sink list: this test adds the file sink once.
TEST(LoggingTest, LogFileGetsEveryLoggerAndRotatesWithinItsBound) {
  const std::string dir = test::MakeTempDir();
  const std::string path = dir + "/logs/myceld.log";  // the directory is created

  auto before = Logger("before-file");  // exists before the file is set
  ASSERT_TRUE(LogToFile(path, 4096, 2).ok());
  auto after = Logger("after-file");
  before->info("first line from an old logger");
  after->warn("a line from a new logger");
  // No flush: info and above reach the file at once.
  std::string text = test::ReadFileToString(path);
  EXPECT_THAT(text, HasSubstr("[before-file] first line from an old logger"));
  EXPECT_THAT(text, HasSubstr("W [after-file] a line from a new logger"));

  // 100 KB of lines: rotated into myceld.1.log and myceld.2.log, never a third.
  for (int i = 0; i < 1000; ++i) after->info("line {} {}", i, std::string(80, 'x'));
  EXPECT_TRUE(Exists(dir + "/logs/myceld.1.log"));
  EXPECT_TRUE(Exists(dir + "/logs/myceld.2.log"));
  EXPECT_FALSE(Exists(dir + "/logs/myceld.3.log"));
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LE(st.st_size, 4096);
  EXPECT_THAT(test::ReadFileToString(path), HasSubstr("line 999 "));

  // A file where the directory should be: a clear error naming the path.
  std::ofstream(dir + "/plain") << "x";
  absl::Status s = LogToFile(dir + "/plain/myceld.log", 4096, 2);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir + "/plain/myceld.log"));
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace mycel
