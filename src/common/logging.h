// The one logging module: hands out named spdlog loggers ("train", "peer",
// "control", ...) that all write to stderr (journald picks it up).
// Thread-safe: loggers are created once under spdlog's registry lock.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#ifndef ABSL_USES_STD_STRING_VIEW
// Debian's abseil has its own string_view (Status::message() returns it);
// let log lines take it directly.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view s, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};
#endif

namespace mycel {

// Returns the logger named `name`, creating it on first use.
std::shared_ptr<spdlog::logger> Logger(const std::string& name);

// Sets the level of every mycel logger: "trace", "debug", "info", "warn", "error", "off".
absl::Status SetLogLevel(const std::string& level);

}  // namespace mycel
