// Bad files fed to a running daemon: each is refused with a message that
// names the file and where it is wrong, nothing is stored, and the daemon
// keeps running and training.
#include <algorithm>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// Asserts that `mycel <args>` fails, that stderr is one line mentioning every
// string in `mentions`, and that the daemon neither stored anything nor
// stopped training.
void ExpectRefused(TestNode& node, const std::vector<std::string>& args, const std::vector<std::string>& mentions) {
  auto before = node.Status();
  ASSERT_TRUE(before);
  CommandResult r = node.Mycel(args);
  EXPECT_NE(r.exit_code, 0) << "accepted: " << r.Describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.Describe();
  for (const auto& m : mentions) {
    EXPECT_NE(r.err.find(m), std::string::npos) << "stderr should mention '" << m << "': " << r.Describe();
  }
  ASSERT_TRUE(node.daemon().Running()) << "myceld died:\n" << node.daemon().LogSinceStart();
  auto after = node.Status();
  ASSERT_TRUE(after) << "status fails after a refused ingest";
  EXPECT_EQ(after->Num("examples_train"), before->Num("examples_train"));
  EXPECT_EQ(after->Num("examples_val"), before->Num("examples_val"));
  EXPECT_TRUE(node.WaitForStepsAbove(after->Num("steps"), 60))
      << "stopped training after a refused ingest:\n" << node.daemon().LogSinceStart();
}

// One CSV row per t10k image: label, then 784 pixel values.
std::string CsvRows(int first, int count) {
  static const std::string images = GunzipFileOrDie(T10kImages());
  std::ostringstream os;
  for (int i = first; i < first + count; ++i) {
    os << T10kLabel(i);
    for (int p = 0; p < 784; ++p) os << "," << static_cast<int>(static_cast<unsigned char>(images[16 + i * 784 + p]));
    os << "\n";
  }
  return os.str();
}

// Deterministic ASCII prose for the char_lm daemon.
std::string SomeText(size_t bytes) {
  static const char* kWords[] = {"the", "mycel", "daemon", "learns", "from", "data", "on", "this", "device",
                                 "and", "keeps", "training", "while", "idle", "a", "network", "of", "nodes"};
  std::mt19937 rng(42);
  std::string text;
  while (text.size() < bytes) {
    text += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
    text += rng() % 9 == 0 ? ".\n" : " ";
  }
  return text;
}

// One MLP daemon with the t10k data, shared by the tests of this suite (ctest
// runs each test in its own process, so each then gets its own daemon).
class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir;
    node_ = new TestNode(tmp_->path(), "node");
    auto started = node_->daemon().Start();
    if (!started) {
      setup_error_ = started.message();
      return;
    }
    CommandResult r = node_->Mycel({"ingest", T10kImages(), T10kLabels()});
    if (r.exit_code != 0) {
      setup_error_ = "ingest of t10k failed: " + r.Describe();
      return;
    }
    if (!node_->WaitForStepsAbove(0, 90)) setup_error_ = "no training:\n" + node_->daemon().LogSinceStart();
  }
  static void TearDownTestSuite() {
    delete node_;  // kills the daemon
    node_ = nullptr;
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override {
    if (!setup_error_.empty()) GTEST_FAIL() << setup_error_;
    ASSERT_TRUE(node_->daemon().Running()) << "an earlier test killed the daemon";
  }
  static std::string Path(const std::string& name) { return tmp_->path() + "/" + name; }
  static std::string RawT10kImages() { return GunzipFileOrDie(T10kImages()); }

  static TempDir* tmp_;
  static TestNode* node_;
  static std::string setup_error_;
};

TempDir* BadInputTest::tmp_ = nullptr;
TestNode* BadInputTest::node_ = nullptr;
std::string BadInputTest::setup_error_;

TEST_F(BadInputTest, TruncatedIdx) {
  // 100 whole images and half of the 101st after the 16-byte header.
  const std::string path = Path("t10k-truncated-images-idx3-ubyte");
  WriteFileOrDie(path, RawT10kImages().substr(0, 16 + 784 * 100 + 392));
  ExpectRefused(*node_, {"ingest", path, T10kLabels()}, {path, "offset"});
}

TEST_F(BadInputTest, IdxWithBadMagic) {
  std::string raw = RawT10kImages();
  raw[0] = '\xff';
  raw[1] = '\xff';
  const std::string path = Path("t10k-badmagic-images-idx3-ubyte");
  WriteFileOrDie(path, raw);
  ExpectRefused(*node_, {"ingest", path, T10kLabels()}, {path, "magic"});
}

TEST_F(BadInputTest, ImageAndLabelCountsDiffer) {
  // A well-formed labels file of 9999 labels against 10000 images.
  std::string labels = GunzipFileOrDie(T10kLabels());
  labels.pop_back();
  labels[4] = 0, labels[5] = 0, labels[6] = '\x27', labels[7] = '\x0f';  // 9999, big-endian
  const std::string path = Path("t10k-9999-labels-idx1-ubyte");
  WriteFileOrDie(path, labels);
  ExpectRefused(*node_, {"ingest", T10kImages(), path}, {T10kImages(), path, "10000", "9999"});
}

TEST_F(BadInputTest, ValidCsvIsStored) {
  // The control for the two CSV cases below: the same rows, unbroken, ingest.
  const std::string path = Path("good.csv");
  WriteFileOrDie(path, CsvRows(0, 3));
  const int64_t before = node_->ExampleCount();
  CommandResult r = node_->Mycel({"ingest", path});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("stored 3 examples"), std::string::npos) << r.Describe();
  EXPECT_EQ(node_->ExampleCount(), before + 3);
}

TEST_F(BadInputTest, CsvRowOfWrongWidth) {
  std::string rows = CsvRows(0, 4);
  // Cut line 3 after its 100th field.
  size_t line3 = 0;
  for (int i = 0; i < 2; ++i) line3 = rows.find('\n', line3) + 1;
  size_t cut = line3;
  for (int i = 0; i < 100; ++i) cut = rows.find(',', cut) + 1;
  size_t eol = rows.find('\n', cut);
  rows.erase(cut - 1, eol - (cut - 1));
  const std::string path = Path("narrow.csv");
  WriteFileOrDie(path, rows);
  ExpectRefused(*node_, {"ingest", path}, {path + ":3"});
}

TEST_F(BadInputTest, CsvWithANonNumber) {
  std::string rows = CsvRows(0, 4);
  // Field 6 of line 2 becomes "abc" (line 1 stays numeric, so it is no header).
  size_t line2 = rows.find('\n') + 1;
  size_t field = line2;
  for (int i = 0; i < 5; ++i) field = rows.find(',', field) + 1;
  rows.replace(field, rows.find(',', field) - field, "abc");
  const std::string path = Path("nan.csv");
  WriteFileOrDie(path, rows);
  ExpectRefused(*node_, {"ingest", path}, {path + ":2", "abc"});
}

TEST_F(BadInputTest, EmptyFile) {
  const std::string path = Path("empty-images");
  WriteFileOrDie(path, "");
  ExpectRefused(*node_, {"ingest", path}, {path, "empty"});
}

TEST_F(BadInputTest, TextIntoAnImageModel) {
  const std::string path = Path("prose.txt");
  WriteFileOrDie(path, SomeText(4000));
  ExpectRefused(*node_, {"ingest", path}, {path});
}

// `mycel predict --text` answers with whatever bytes the model picks: greedy
// bytes of a young model need not form valid UTF-8, and the reply must still
// arrive.
void ExpectPromptCompletes(TestNode& node) {
  CommandResult r = node.Mycel({"predict", "--text", "the mycel ", "--generate", "8", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  if (r.exit_code != 0) return;
  auto pred = ParseJson(r.out);
  ASSERT_TRUE(pred) << r.out;
  EXPECT_EQ(pred->Num("continuation_bytes"), 8) << r.out;
  EXPECT_FALSE(pred->Str("continuation").empty()) << r.out;
  const Json* top = pred->Find("top");
  ASSERT_TRUE(top && top->type == Json::Type::kArray) << r.out;
  EXPECT_EQ(top->array.size(), 3u) << r.out;
}

// A char_lm daemon: valid UTF-8 ingests and trains; an invalid byte is refused
// with its offset.
TEST(CharLmInputTest, ValidTextTrainsAndInvalidUtf8IsRefusedWithItsOffset) {
  TempDir tmp;
  ConfigSpec spec;
  spec.model_kind = "char_lm";
  spec.context = 32;
  TestNode node(tmp.path(), "text", spec);
  ASSERT_TRUE(node.daemon().Start());
  auto st = node.Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->Str("state"), "waiting_for_data");
  {
    SCOPED_TRACE("untrained model (seed 7)");
    ExpectPromptCompletes(node);
  }

  const std::string good = tmp.path() + "/good.txt";
  const std::string text = SomeText(60000);
  WriteFileOrDie(good, text);
  CommandResult r = node.Mycel({"ingest", good, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto reply = ParseJson(r.out);
  ASSERT_TRUE(reply) << r.Describe();
  // Windows of context + 1 = 33 bytes with stride 32 (importers.h).
  EXPECT_EQ(reply->Num("stored"), static_cast<double>((text.size() - 1) / 32)) << r.out;
  ASSERT_TRUE(node.WaitForStepsAbove(0, 90)) << node.daemon().LogSinceStart();

  const size_t kBadOffset = 12345;
  std::string bad_text = text.substr(0, 20000);
  bad_text[kBadOffset] = '\xff';
  const std::string bad = tmp.path() + "/bad.txt";
  WriteFileOrDie(bad, bad_text);
  ExpectRefused(node, {"ingest", bad}, {bad, std::to_string(kBadOffset)});

  // Image data into a text model is refused too.
  ExpectRefused(node, {"ingest", T10kImages(), T10kLabels()}, {T10kImages()});

  ExpectPromptCompletes(node);

  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace mycel::it
