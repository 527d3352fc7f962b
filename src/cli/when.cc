#include "cli/when.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace mycel::cli {
namespace {

constexpr int64_t kMsPerDay = 86400000;
constexpr int64_t kLatestMs = int64_t{253402300799} * 1000 + 999;  // 9999-12-31T23:59:59.999Z

absl::Status Refuse(const std::string& text, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a time (", why,
                                                 "); give 2026-12-04, 2026-12-04T17:30:00Z or an age such as 30d"));
}

absl::StatusOr<int64_t> ParseAge(const std::string& text, int64_t now_unix_ms) {
  int64_t unit_ms;
  switch (text.back()) {
    case 's': unit_ms = 1000; break;
    case 'm': unit_ms = 60 * 1000; break;
    case 'h': unit_ms = 3600 * 1000; break;
    case 'd': unit_ms = kMsPerDay; break;
    case 'w': unit_ms = 7 * kMsPerDay; break;
    default: return Refuse(text, "an age ends in s, m, h, d or w");
  }
  int64_t n = 0;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return Refuse(text, "an age is a whole number and a unit");
    n = n * 10 + (text[i] - '0');
    if (n > now_unix_ms / unit_ms) return Refuse(text, "that age reaches back before 1970");
  }
  if (n == 0) return Refuse(text, "an age must be positive");
  return now_unix_ms - n * unit_ms;
}

}  // namespace

absl::StatusOr<int64_t> ParseWhen(const std::string& text, int64_t now_unix_ms) {
  if (text.empty()) return Refuse(text, "it is empty");
  if (!std::isdigit(static_cast<unsigned char>(text[0]))) return Refuse(text, "it starts with no digit");
  if (text.size() < 10 || text[4] != '-') return ParseAge(text, now_unix_ms);
  absl::Time t;
  std::string err;
  const bool date_only = text.size() == 10;
  if (!absl::ParseTime(date_only ? "%Y-%m-%d" : absl::RFC3339_full, text, absl::UTCTimeZone(), &t, &err)) {
    return Refuse(text, date_only ? "a date is YYYY-MM-DD" : "a time is RFC 3339, YYYY-MM-DDTHH:MM:SS and Z or +HH:MM");
  }
  const int64_t ms = absl::ToUnixMillis(t);
  if (ms < 0) return Refuse(text, "before 1970");
  if (ms > kLatestMs) return Refuse(text, "after 9999");
  return ms;
}

std::string FormatWhen(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(std::max<int64_t>(0, unix_ms)),
                          absl::UTCTimeZone());
}

}  // namespace mycel::cli
