// Points in time on mycel's command line (`mycel forget --before WHEN`) and
// in its output (`mycel data`): parsed and printed in one place, so what the
// CLI prints is what it accepts back.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace mycel::cli {

// Unix milliseconds of `text`, which is one of:
//   - an RFC 3339 time: 2026-12-04T17:30:00Z, 2026-12-04T18:30:00.250+01:00;
//   - a date, meaning its midnight UTC: 2026-12-04;
//   - an age before `now_unix_ms`: a positive whole number and a unit, s, m,
//     h, d or w ("90m", "30d").
// Anything else, or a time before 1970 or after 9999, is an error that
// quotes the text and shows the three forms.
absl::StatusOr<int64_t> ParseWhen(const std::string& text, int64_t now_unix_ms);

// RFC 3339 in UTC with milliseconds (2026-12-04T17:30:00.250Z); ParseWhen
// reads it back to the same millisecond.
std::string FormatWhen(int64_t unix_ms);

}  // namespace mycel::cli
