// How `mycel --json` prints: scripts and the integration tests read these
// lines, and they stayed byte for byte what the CLI's own writer printed
// before it built its documents with nlohmann.
#include "cli/json.h"

#include <cmath>

#include <gtest/gtest.h>

namespace mycel::cli {
namespace {

TEST(Json, KeysInTheOrderSetWithoutSpaces) {
  Json doc{{"state", "training"}, {"steps", 42}, {"alive", true}, {"a", nullptr}};
  doc["list"] = Json::array({Json{{"x", 1}}, Json{{"y", 2}}});
  doc["empty_list"] = Json::array();
  doc["empty_map"] = Json::object();
  EXPECT_EQ(JsonLine(doc),
            R"({"state":"training","steps":42,"alive":true,"a":null,"list":[{"x":1},{"y":2}],)"
            R"("empty_list":[],"empty_map":{}})");
}

TEST(Json, DoublesWithTenSignificantDigits) {
  const auto one = [](double v) { return JsonLine(Json{{"v", v}}); };
  EXPECT_EQ(one(1.0), R"({"v":1})");
  EXPECT_EQ(one(0.0), R"({"v":0})");
  EXPECT_EQ(one(-0.0), R"({"v":-0})");
  EXPECT_EQ(one(0.1), R"({"v":0.1})");
  EXPECT_EQ(one(0.98765432109876), R"({"v":0.9876543211})");
  EXPECT_EQ(one(7.718344863), R"({"v":7.718344863})");  // nlohmann alone: 7.7183448629999996
  EXPECT_EQ(one(1796342400.25), R"({"v":1796342400})");  // a time in unix seconds
  EXPECT_EQ(one(1e10), R"({"v":1e+10})");
  EXPECT_EQ(one(1e-5), R"({"v":1e-05})");
  EXPECT_EQ(one(-2.5e-7), R"({"v":-2.5e-07})");
  EXPECT_EQ(one(NAN), R"({"v":null})");
  EXPECT_EQ(one(INFINITY), R"({"v":null})");
}

TEST(Json, IntegersWhole) {
  EXPECT_EQ(JsonLine(Json{{"v", int64_t{9007199254740993}}}), R"({"v":9007199254740993})");
  EXPECT_EQ(JsonLine(Json{{"v", int64_t{-1}}}), R"({"v":-1})");
}

TEST(Json, StringsEscapedAndMadeValidUtf8) {
  EXPECT_EQ(JsonLine(Json{{"s", "a\"b\\c\nd\te\rf\x01g"}}), R"({"s":"a\"b\\c\nd\te\rf\u0001g"})");
  EXPECT_EQ(JsonLine(Json{{"s", "caf\xc3\xa9 \xe2\x82\xac"}}), "{\"s\":\"caf\xc3\xa9 \xe2\x82\xac\"}");
  // Each byte it cannot read is one U+FFFD, a cut sequence too.
  EXPECT_EQ(JsonLine(Json{{"s", "a\xff" "b\xe2\x82"}}), "{\"s\":\"a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\"}");
  EXPECT_EQ(JsonLine(Json{{"k\xc0", 1}}), "{\"k\xef\xbf\xbd\":1}");
  EXPECT_EQ(ValidUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate is not UTF-8
}

}  // namespace
}  // namespace mycel::cli
