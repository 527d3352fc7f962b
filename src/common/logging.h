// The one logging module: hands out named spdlog loggers ("train", "peer",
// "control", ...) that all write to stderr and, once LogToFile is called, to
// a rotating file as well. When stderr is the journal (JOURNAL_STREAM names
// it), its lines start with their syslog priority ("<4>" for a warning) and
// no timestamp, so `journalctl -p warning` finds them.
// Thread-safe: loggers are created once under spdlog's registry lock.
#pragma once

#include <cstdint>
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

// Also writes every logger's lines to `path`, rotated past `max_bytes` with
// `max_files` older files kept (myceld.log: myceld.1.log, myceld.2.log, ...);
// creates the directory.
// Call before other threads log (the daemon does, at start).
absl::Status LogToFile(const std::string& path, int64_t max_bytes, int64_t max_files);

// Sets the level of every mycel logger: "trace", "debug", "info", "warn", "error", "off".
absl::Status SetLogLevel(const std::string& level);

}  // namespace mycel
