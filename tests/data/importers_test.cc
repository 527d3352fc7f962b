#include "data/importers.h"

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::data {
namespace {

using ::testing::HasSubstr;

const char kFashionDir[] = "/usr/share/datasets/fashion-mnist/";

std::string Gzip(const std::string& data) {
  z_stream zs;
  std::memset(&zs, 0, sizeof zs);
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(&out[0]);
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string BE32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                     static_cast<char>(v)};
}

// An idx images file of n images of rows x cols and an idx labels file.
std::string IdxImages(uint32_t n, uint32_t rows, uint32_t cols, const std::string& body) {
  return BE32(0x803) + BE32(n) + BE32(rows) + BE32(cols) + body;
}
std::string IdxLabels(const std::string& labels) {
  return BE32(0x801) + BE32(static_cast<uint32_t>(labels.size())) + labels;
}

ExampleShape Images(int64_t width, int64_t classes = 10) {
  ExampleShape s;
  s.width = width;
  s.classes = classes;
  return s;
}
ExampleShape Text(int64_t width) {
  ExampleShape s;
  s.text = true;
  s.width = width;
  return s;
}

std::string Message(const absl::StatusOr<std::vector<Example>>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

class FashionT10k : public ::testing::Test {
 protected:
  void SetUp() override {
    images_gz_ = test::ReadFileToString(std::string(kFashionDir) + "t10k-images-idx3-ubyte.gz");
    labels_gz_ = test::ReadFileToString(std::string(kFashionDir) + "t10k-labels-idx1-ubyte.gz");
    if (images_gz_.empty() || labels_gz_.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
    images_ = *MaybeGunzip(images_gz_, "images");
    labels_ = *MaybeGunzip(labels_gz_, "labels");
  }
  std::string images_gz_, labels_gz_, images_, labels_;
};

TEST_F(FashionT10k, RealFilesImportWithLabelsPaired) {
  ASSERT_EQ(images_.size(), 16u + 10000u * 784u);
  ASSERT_EQ(labels_.size(), 8u + 10000u);
  // Labels first: pairing is by magic, not by position.
  std::vector<NamedBlob> files = {{"t10k-labels-idx1-ubyte.gz", labels_gz_},
                                  {"t10k-images-idx3-ubyte.gz", images_gz_}};
  EXPECT_EQ(GuessFormat(files[0]), Format::kIdx);
  auto r = ImportFiles(files, Format::kAuto, Images(784));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 10000u);
  int counts[10] = {};
  for (size_t i = 0; i < r->size(); ++i) {
    const Example& e = (*r)[i];
    ASSERT_EQ(e.label, static_cast<uint8_t>(labels_[8 + i])) << i;
    ASSERT_EQ(e.dtype, DType::kU8);
    ASSERT_EQ(e.data, images_.substr(16 + i * 784, 784)) << i;
    counts[e.label]++;
  }
  for (int c : counts) EXPECT_EQ(c, 1000);  // Fashion-MNIST's test set is balanced
  // Uncompressed files work the same.
  auto raw = ImportFiles({{"i", images_}, {"l", labels_}}, Format::kIdx, Images(784));
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ((*raw)[1234].data, (*r)[1234].data);
}

TEST_F(FashionT10k, TruncatedImagesNameTheOffset) {
  std::string cut = images_.substr(0, 16 + 784 * 10 + 100);
  auto r = ImportFiles({{"imgs.gz", Gzip(cut)}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("imgs.gz: truncated at byte offset 7956: header says 10000 images of "
                                    "28x28"));
  EXPECT_THAT(Message(r), HasSubstr("only 7940 bytes"));
}

TEST_F(FashionT10k, MismatchedCountsAreNamed) {
  std::string hundred = IdxImages(100, 28, 28, images_.substr(16, 100 * 784));
  auto r = ImportFiles({{"imgs", hundred}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("imgs: 100 images but labels.gz: 10000 labels"));
  // An images file without labels.
  r = ImportFiles({{"imgs", hundred}}, Format::kIdx, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("imgs: IDX images file has no labels file"));
}

TEST_F(FashionT10k, ImagesAloneAreInputsWithoutLabelsWhenAskedFor) {
  // What `mycel predict images.gz --index 3` sends: no labels file.
  auto r = ImportFiles({{"imgs.gz", images_gz_}}, Format::kAuto, Images(784), /*unlabelled=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 10000u);
  EXPECT_EQ((*r)[3].label, -1);
  EXPECT_EQ((*r)[3].data, images_.substr(16 + 3 * 784, 784));
  // With a labels file, the labels still come along.
  r = ImportFiles({{"imgs.gz", images_gz_}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(784), true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE((*r)[3].label, 0);
  // A labels file alone is still an error.
  r = ImportFiles({{"labels.gz", labels_gz_}}, Format::kAuto, Images(784), true);
  EXPECT_THAT(Message(r), HasSubstr("labels file has no images file"));
}

TEST_F(FashionT10k, WrongImageSizeForTheModel) {
  auto r = ImportFiles({{"imgs.gz", images_gz_}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(100));
  EXPECT_THAT(Message(r), HasSubstr("imgs.gz: images are 28x28 = 784 values but the model takes 100"));
  r = ImportFiles({{"imgs.gz", images_gz_}, {"labels.gz", labels_gz_}}, Format::kAuto, Text(65));
  EXPECT_THAT(Message(r), HasSubstr("text model"));
  r = ImportFiles({{"imgs.gz", images_gz_}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(784, 5));
  EXPECT_THAT(Message(r), HasSubstr("labels.gz: label 9 at index 0 is outside [0, 5)"));
}

TEST_F(FashionT10k, CorruptAndTruncatedGzip) {
  std::string corrupt = images_gz_;
  for (size_t i = corrupt.size() / 2; i < corrupt.size() / 2 + 64; ++i) corrupt[i] ^= 0x5a;
  auto r = ImportFiles({{"imgs.gz", corrupt}, {"labels.gz", labels_gz_}}, Format::kAuto, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("imgs.gz: corrupt gzip data"));

  r = ImportFiles({{"imgs.gz", images_gz_.substr(0, images_gz_.size() / 2)}, {"labels.gz", labels_gz_}},
                  Format::kAuto, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("imgs.gz: truncated gzip data"));

  // The size cap.
  auto capped = internal::GunzipLimited(labels_gz_, "labels.gz", 5000);
  ASSERT_FALSE(capped.ok());
  EXPECT_THAT(std::string(capped.status().message()), HasSubstr("labels.gz: decompresses to more than 5000"));
  auto fits = internal::GunzipLimited(labels_gz_, "labels.gz", 10008);
  ASSERT_TRUE(fits.ok()) << fits.status();
  EXPECT_EQ(*fits, labels_);
}

TEST(Gzip, ConcatenatedMembersAndPassThrough) {
  auto r = MaybeGunzip(Gzip("hello ") + Gzip("world"), "two.gz");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hello world");
  EXPECT_EQ(*MaybeGunzip("plain", "p"), "plain");
  auto trailing = MaybeGunzip(Gzip("x") + "junk", "t.gz");
  ASSERT_FALSE(trailing.ok());
  EXPECT_THAT(std::string(trailing.status().message()), HasSubstr("t.gz: 4 bytes of trailing garbage"));
}

TEST(Idx, BadMagicAndUnsupportedTypes) {
  std::string labels = IdxLabels(std::string(2, '\1'));
  auto r = ImportFiles({{"weird.idx", "\x12\x34\x56\x78" + std::string(16, '\0')}, {"l", labels}},
                       Format::kIdx, Images(4));
  EXPECT_THAT(Message(r), HasSubstr("weird.idx: not an IDX file (magic 0x12345678"));
  // Type 0x0D (float32) is IDX but not supported.
  std::string f32 = BE32(0x00000D03) + BE32(2) + BE32(2) + BE32(2) + std::string(32, '\0');
  r = ImportFiles({{"f.idx", f32}, {"l", labels}}, Format::kAuto, Images(4));
  EXPECT_THAT(Message(r), HasSubstr("f.idx: IDX data type 0x0d is not supported"));
  // Trailing bytes after the data.
  r = ImportFiles({{"i", IdxImages(2, 2, 2, std::string(9, '\0'))}, {"l", labels}}, Format::kIdx, Images(4));
  EXPECT_THAT(Message(r), HasSubstr("i: 1 unexpected bytes after the data at byte offset 24"));
  // Truncated header.
  r = ImportFiles({{"i", BE32(0x803) + BE32(2)}, {"l", labels}}, Format::kIdx, Images(4));
  EXPECT_THAT(Message(r), HasSubstr("i: truncated at byte offset 8"));
}

TEST(Idx, GenericUbyteDimsAndLabelRange) {
  // A 2-d idx (N x features) is accepted too.
  std::string two_d = BE32(0x802) + BE32(3) + BE32(4) + std::string("abcdefghijkl");
  std::string labels = IdxLabels(std::string("\x01\x02\x03", 3));
  auto r = ImportFiles({{"x", two_d}, {"y", labels}}, Format::kIdx, Images(4));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[2].data, "ijkl");
  EXPECT_EQ((*r)[2].label, 3);

  std::string ten(10, '\0');
  ten[5] = 12;
  r = ImportFiles({{"x.idx", IdxImages(10, 2, 2, std::string(40, 'a'))}, {"labels.gz", Gzip(IdxLabels(ten))}},
                  Format::kAuto, Images(4));
  EXPECT_THAT(Message(r), HasSubstr("labels.gz: label 12 at index 5 is outside [0, 10)"));
}

TEST(Csv, ParsesFeaturesSkipsHeaderAndTrailingBlankLine) {
  std::string csv = "label,a,b,c\r\n2, 0.5,-1e3,+7\n0,1,2,3\n\n";
  auto r = ImportFiles({{"data.csv", csv}}, Format::kAuto, Images(3, 5));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  const Example& e = (*r)[0];
  EXPECT_EQ(e.label, 2);
  EXPECT_EQ(e.dtype, DType::kF32);
  ASSERT_EQ(e.data.size(), 12u);
  EXPECT_EQ(e.width(), 3);
  // Little-endian float32: 0.5f = 0x3f000000.
  EXPECT_EQ(e.data.substr(0, 4), std::string("\x00\x00\x00\x3f", 4));
  float v[3];
  std::memcpy(v, e.data.data(), 12);  // this test host is little-endian
  EXPECT_EQ(v[0], 0.5f);
  EXPECT_EQ(v[1], -1000.0f);
  EXPECT_EQ(v[2], 7.0f);
  EXPECT_EQ((*r)[1].label, 0);
  // A byte order mark does not turn the first data line into a "header".
  r = ImportFiles({{"bom.csv", "\xEF\xBB\xBF" "1,1,2,3\n4,5,6,7\n"}}, Format::kCsv, Images(3, 5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), 2u);
  // No header: the first line is data.
  r = ImportFiles({{"d.csv", "1,1,2,3"}}, Format::kCsv, Images(3, 5));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 1u);
}

TEST(Csv, ErrorsNameLineAndField) {
  ExampleShape shape = Images(784);
  std::string good = "3";
  for (int i = 0; i < 784; ++i) good += ",0";
  std::string lines;
  for (int i = 0; i < 16; ++i) lines += good + "\n";
  std::string short_line = good.substr(0, good.size() - 2);
  auto r = ImportFiles({{"file.csv", lines + short_line + "\n"}}, Format::kAuto, shape);
  EXPECT_THAT(Message(r), HasSubstr("file.csv:17: expected 785 fields (label + 784 features), got 784"));

  ExampleShape small = Images(5);
  r = ImportFiles({{"file.csv", "h1,h2\n1,1,2,3,4,5\n1,2,3,4,abc,6\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("file.csv:3: field 5 'abc' is not a number"));
  // Only the first line may be a header.
  r = ImportFiles({{"f.csv", "1,1,2,3,4,5\nlabel,a,b,c,d,e\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:2: field 1 'label' is not a number"));
  // Partial numbers are not numbers.
  r = ImportFiles({{"f.csv", "1,1,2,3,4,5x\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: field 6 '5x' is not a number"));
  r = ImportFiles({{"f.csv", "1,1,,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: field 3 '' is not a number"));
  r = ImportFiles({{"f.csv", "1,1,nan,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: field 3 'nan' is not a finite number"));
  r = ImportFiles({{"f.csv", "1,1,2,1e39,4,5\n"}}, Format::kCsv, small);  // beyond float32
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: field 4 '1e39' is outside the float32 range"));
  // Labels.
  r = ImportFiles({{"f.csv", "1,1,2,3,4,5\n10,1,2,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:2: label '10' is not a class index in [0, 10)"));
  r = ImportFiles({{"f.csv", "-1,1,2,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: label '-1'"));
  r = ImportFiles({{"f.csv", "1.5,1,2,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:1: label '1.5'"));
  // A blank line in the middle.
  r = ImportFiles({{"f.csv", "1,1,2,3,4,5\n\n1,1,2,3,4,5\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv:2: empty line"));
  // Only a header.
  r = ImportFiles({{"f.csv", "a,b,c\n"}}, Format::kCsv, small);
  EXPECT_THAT(Message(r), HasSubstr("f.csv: no examples"));
  // CSV into a text model.
  r = ImportFiles({{"f.csv", "1,1,2,3,4,5\n"}}, Format::kCsv, Text(6));
  EXPECT_THAT(Message(r), HasSubstr("f.csv: CSV data cannot train a text model"));
}

TEST(Text, InvalidUtf8OffsetsAreExact) {
  struct Case {
    std::string bytes;
    size_t offset;
  };
  const std::vector<Case> cases = {
      {"abc\xC3(defgh", 3},                        // lead byte without continuation
      {"ab\xC0\xAF" "defgh", 2},                   // overlong 2-byte '/'
      {"a\xE0\x80\xAF" "defgh", 1},                // overlong 3-byte
      {"hello\xED\xA0\x80" "xyz", 5},              // UTF-16 surrogate U+D800
      {"x\xF4\x90\x80\x80" "abcdef", 1},           // U+110000
      {"\xC3\xA9 ok \xE2\x82", 6},                 // truncated at the end, after a valid "é"
      {"\x80" "abcdefgh", 0},                      // stray continuation byte
      {"abcdefgh\xFF", 8},                         // never valid
      {"\xF0\x9F\x98\x80\xF0\x9F\x98" "abcd", 4},  // 😀 then a cut-off 4-byte sequence
  };
  for (const Case& c : cases) {
    auto r = ImportFiles({{"notes.txt", c.bytes}}, Format::kText, Text(4));
    EXPECT_THAT(Message(r), HasSubstr("notes.txt: invalid UTF-8 at byte offset " + std::to_string(c.offset)))
        << "case at " << c.offset;
  }
}

TEST(Text, ValidMultiByteTextIsAccepted) {
  // 2-, 3- and 4-byte sequences at the edges of their ranges.
  std::string text = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF \xEE\x80\x80 \xC2\x80 \xEF\xBF\xBF";
  auto r = ImportFiles({{"ok.txt", text}}, Format::kAuto, Text(4));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->empty());
}

TEST(Text, WindowsPredictEveryByteExactlyOnce) {
  const int64_t width = 17;
  // Mixed 1-, 2- and 3-byte characters, exactly 1 + 16 * 40 bytes.
  const std::vector<std::string> chars = {"G", "r", "\xC3\xBC", "\xC3\x9F", "e", " ", "\xE4\xB8\x96", "\n"};
  std::string text;
  for (size_t i = 0; text.size() + 3 <= 1 + 16 * 40; ++i) text += chars[i % chars.size()];
  while (text.size() < 1 + 16 * 40) text += ".";
  auto r = ImportFiles({{"book.md", text}}, Format::kAuto, Text(width));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 40u);
  std::vector<int> predicted(text.size(), 0);
  for (size_t k = 0; k < r->size(); ++k) {
    const Example& e = (*r)[k];
    EXPECT_EQ(e.label, -1);
    EXPECT_EQ(e.dtype, DType::kU8);
    ASSERT_EQ(e.data, text.substr(k * 16, 17)) << k;
    for (size_t j = 1; j < 17; ++j) predicted[k * 16 + j]++;
  }
  EXPECT_EQ(predicted[0], 0);
  for (size_t i = 1; i < text.size(); ++i) EXPECT_EQ(predicted[i], 1) << i;

  // A partial last window is dropped.
  r = ImportFiles({{"book.md", text + "abcde"}}, Format::kAuto, Text(width));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), 40u);
  // Exactly one window.
  r = ImportFiles({{"w.txt", "abc"}}, Format::kText, Text(3));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].data, "abc");
}

TEST(Text, TooShortAndWrongModel) {
  auto r = ImportFiles({{"tiny.txt", "abc"}}, Format::kText, Text(65));
  EXPECT_THAT(Message(r), HasSubstr("tiny.txt: text is too short: 3 bytes, the model needs at least 65"));
  r = ImportFiles({{"notes.txt", "some text to learn from"}}, Format::kAuto, Images(784));
  EXPECT_THAT(Message(r), HasSubstr("notes.txt: text data cannot train a model that takes 784 values"));
}

TEST(Import, EmptyFilesAreErrorsNamingThem) {
  for (Format f : {Format::kAuto, Format::kIdx, Format::kCsv, Format::kText}) {
    auto r = ImportFiles({{"empty.bin", ""}}, f, f == Format::kText ? Text(4) : Images(4));
    EXPECT_THAT(Message(r), HasSubstr("empty.bin: file is empty"));
  }
  // Empty once decompressed.
  auto r = ImportFiles({{"e.txt.gz", Gzip("")}}, Format::kAuto, Text(4));
  EXPECT_THAT(Message(r), HasSubstr("e.txt.gz: file is empty"));
  EXPECT_FALSE(ImportFiles({}, Format::kAuto, Images(4)).ok());
}

TEST(Import, GzippedTextAndCsvByName) {
  auto r = ImportFiles({{"n.txt.gz", Gzip("hello world")}}, Format::kAuto, Text(4));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].data, "hell");
  r = ImportFiles({{"d.csv.gz", Gzip("1,2\n")}}, Format::kAuto, Images(1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].label, 1);
}

TEST(Format, ParseAndGuess) {
  EXPECT_EQ(*ParseFormat(""), Format::kAuto);
  EXPECT_EQ(*ParseFormat("idx"), Format::kIdx);
  EXPECT_EQ(*ParseFormat("csv"), Format::kCsv);
  EXPECT_EQ(*ParseFormat("text"), Format::kText);
  auto bad = ParseFormat("parquet");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("parquet"));

  EXPECT_EQ(GuessFormat({"x.gz", Gzip("abc")}), Format::kIdx);
  EXPECT_EQ(GuessFormat({"x", IdxLabels("ab")}), Format::kIdx);
  EXPECT_EQ(GuessFormat({"x.CSV", "label,a\n1,2\n"}), Format::kCsv);
  EXPECT_EQ(GuessFormat({"x.csv.gz", Gzip("1,2\n")}), Format::kCsv);
  EXPECT_EQ(GuessFormat({"notes.txt", "1,2,3\n"}), Format::kText);  // the name says text
  EXPECT_EQ(GuessFormat({"README.md", "# hi"}), Format::kText);
  EXPECT_EQ(GuessFormat({"data", "label,x,y\n3,0.5,1\n"}), Format::kCsv);
  EXPECT_EQ(GuessFormat({"data", "Hello, world. Numbers 1, 2 and 3.\n"}), Format::kText);
  EXPECT_EQ(GuessFormat({"blob", std::string("\x01\xff\xfe\x00", 4)}), Format::kIdx);
}

}  // namespace
}  // namespace mycel::data
