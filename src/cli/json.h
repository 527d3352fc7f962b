// `mycel ... --json`: the documents are nlohmann::ordered_json, printed on
// one line the way mycel always printed them, which scripts and the
// integration tests read.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace mycel::cli {

// Keys come out in the order they are set.
using Json = nlohmann::ordered_json;

// Replaces each byte that is not part of a well-formed UTF-8 sequence with
// U+FFFD, so JSON output stays valid whatever a young char_lm generates.
std::string ValidUtf8(const std::string& in);

// `doc` on one line, without spaces: every string made valid UTF-8 by
// ValidUtf8, every double with ten significant digits ("%.10g": 0.9876543211,
// 1, 1e-05, 1e+10), NaN and infinities as null.
std::string JsonLine(const Json& doc);

// JsonLine(doc) and a newline on stdout.
void PrintJson(const Json& doc);

}  // namespace mycel::cli
