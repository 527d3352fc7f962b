// The times `mycel forget --before` takes and `mycel data` prints.
#include "cli/when.h"

#include <gtest/gtest.h>

namespace mycel::cli {
namespace {

constexpr int64_t kNow = 1796400000000;  // 2026-12-04T16:00:00Z

TEST(When, DatesTimesAndOffsets) {
  EXPECT_EQ(*ParseWhen("2026-12-04", kNow), 1796342400000);  // midnight UTC
  EXPECT_EQ(*ParseWhen("2026-12-04T16:00:00Z", kNow), kNow);
  EXPECT_EQ(*ParseWhen("2026-12-04T17:00:00+01:00", kNow), kNow);
  EXPECT_EQ(*ParseWhen("2026-12-04T15:00:00.250-01:00", kNow), kNow + 250);
  EXPECT_EQ(*ParseWhen("1970-01-01T00:00:00Z", kNow), 0);
}

TEST(When, AgesCountBackFromNow) {
  EXPECT_EQ(*ParseWhen("90s", kNow), kNow - 90000);
  EXPECT_EQ(*ParseWhen("15m", kNow), kNow - 15 * 60000);
  EXPECT_EQ(*ParseWhen("2h", kNow), kNow - 2 * 3600000);
  EXPECT_EQ(*ParseWhen("30d", kNow), kNow - int64_t{30} * 86400000);
  EXPECT_EQ(*ParseWhen("1w", kNow), kNow - int64_t{7} * 86400000);
}

TEST(When, WhatItPrintsItReadsBack) {
  for (int64_t ms : {int64_t{0}, kNow, kNow + 7, int64_t{253402300799999}}) {
    const std::string shown = FormatWhen(ms);
    auto back = ParseWhen(shown, kNow);
    ASSERT_TRUE(back.ok()) << shown << ": " << back.status();
    EXPECT_EQ(*back, ms) << shown;
  }
  EXPECT_EQ(FormatWhen(kNow + 250), "2026-12-04T16:00:00.250Z");
}

TEST(When, NonsenseIsRefusedQuotingIt) {
  for (const char* bad : {"", "yesterday", "-5d", "0d", "5", "5y", "d", "2026-13-01", "2026-02-30", "2026-12-04T25:00:00Z",
                          "2026-12-04T16:00:00", "2026-12-04T16:00:00Zjunk", "1969-12-31", "99999999999999999999d",
                          "60000w", "2026-12-04 "}) {
    auto r = ParseWhen(bad, kNow);
    EXPECT_FALSE(r.ok()) << "'" << bad << "' gave " << (r.ok() ? FormatWhen(*r) : "");
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos) << r.status();
    }
  }
}

}  // namespace
}  // namespace mycel::cli
