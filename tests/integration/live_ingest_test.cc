// `mycel ingest -`: lines from a pipeline as they come. Each burst is stored
// before it is acknowledged, and lines show up in the daemon while the
// input is still open; a bad line is refused on its own, with its number
// and reason, and the good ones around it are kept.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// A CSV row for the 28x28 MLP: the label, then 784 pixels, one of them `mark`
// so that no two rows are the same example.
std::string Row(int label, int mark) {
  std::string row = std::to_string(label);
  for (int i = 0; i < 784; ++i) row += "," + std::to_string(i == mark % 784 ? 1 + mark / 784 : 0);
  return row + "\n";
}

TEST(LiveIngestTest, LinesAreStoredAsTheyComeAndBadOnesAreRefusedOneByOne) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  const std::string fifo = tmp.path() + "/events";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A pipeline's reader: `producer | mycel ingest -`, the producer being this test.
  auto reader = Process::Spawn({"/bin/sh", "-c",
                                "exec " + BinDir() + "/mycel -c " + node.config_path() + " ingest - --format csv < " +
                                    fifo},
                               tmp.path() + "/out", tmp.path() + "/err");
  ASSERT_TRUE(reader);
  const int w = ::open(fifo.c_str(), O_WRONLY);
  ASSERT_GE(w, 0);
  auto put = [&](const std::string& s) { ASSERT_EQ(::write(w, s.data(), s.size()), static_cast<ssize_t>(s.size())); };

  // Three rows, and the input stays open: they are stored all the same.
  put(Row(1, 1) + Row(2, 2) + Row(3, 3));
  ASSERT_TRUE(PollUntil([&] { return node.ExampleCount() == 3; }, 30)) << ReadFileOrDie(tmp.path() + "/err");

  // Bad lines among good ones: each refused alone, the others kept.
  put(Row(4, 4));                               // line 4
  put("5,1,2\n");                               // line 5: too few fields
  put(Row(6, 6));                               // line 6
  std::string nan_row = Row(7, 7);
  nan_row.replace(nan_row.find(',') + 1, 1, "x");
  put(nan_row);                                 // line 7: not a number
  put("\n");                                    // line 8: blank, nothing
  put(Row(42, 9));                              // line 9: no such class
  put(Row(8, 10).substr(0, Row(8, 10).size() - 1));  // line 10, last, without its newline
  ::close(w);
  auto code = reader->Wait(60);
  ASSERT_TRUE(code.has_value());
  const std::string out = ReadFileOrDie(tmp.path() + "/out"), err = ReadFileOrDie(tmp.path() + "/err");
  EXPECT_EQ(*code, 0) << out << err;
  EXPECT_NE(err.find("line 5 refused: "), std::string::npos) << err;
  EXPECT_NE(err.find("line 7 refused: "), std::string::npos) << err;
  EXPECT_NE(err.find("line 9 refused: "), std::string::npos) << err;
  EXPECT_EQ(err.find("line 8 refused"), std::string::npos) << err;
  EXPECT_EQ(err.find("line 10 refused"), std::string::npos) << err;
  EXPECT_NE(out.find("10 line(s): 6 example(s) stored, 3 line(s) refused"), std::string::npos) << out;
  EXPECT_EQ(node.ExampleCount(), 6);
}

TEST(LiveIngestTest, IdxIsNotALineFormat) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  CommandResult r = node.Mycel({"ingest", "-", "--format", "idx"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_NE(r.err.find("stdin takes csv or text lines"), std::string::npos) << r.Describe();
}

}  // namespace
}  // namespace mycel::it
