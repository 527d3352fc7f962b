#include "common/logging.h"

#include <chrono>
#include <mutex>
#include <vector>

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace mycel {
namespace {
std::mutex g_mu;
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_flush_on_info = false;  // once a log file is set

// Every logger writes to all of these: stderr, and the log file once set.
std::vector<spdlog::sink_ptr>& Sinks() {
  static auto* sinks = new std::vector<spdlog::sink_ptr>{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  return *sinks;
}
}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, Sinks().begin(), Sinks().end());
  logger->set_level(g_level);
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ [%n] %v");
  if (g_flush_on_info) logger->flush_on(spdlog::level::info);
  spdlog::register_logger(logger);
  return logger;
}

absl::Status LogToFile(const std::string& path, int64_t max_bytes, int64_t max_files) {
  spdlog::sink_ptr sink;
  try {
    sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(path, static_cast<size_t>(max_bytes),
                                                                  static_cast<size_t>(max_files));
  } catch (const spdlog::spdlog_ex& e) {
    return absl::UnavailableError("log_file " + path + ": " + e.what());
  }
  std::lock_guard<std::mutex> lock(g_mu);
  Sinks().push_back(sink);
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) {
    l->sinks().push_back(sink);
    l->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%L%$ [%n] %v");  // applies to the new sink too
  });
  // The file is buffered: info and above reach it at once (a daemon logs a
  // few lines a minute), debug and trace within a second.
  g_flush_on_info = true;
  spdlog::apply_all([](std::shared_ptr<spdlog::logger> l) { l->flush_on(spdlog::level::info); });
  spdlog::flush_every(std::chrono::seconds(1));
  return absl::OkStatus();
}

absl::Status SetLogLevel(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("unknown log level '" + level +
                                      "' (trace, debug, info, warn, error, off)");
  }
  std::lock_guard<std::mutex> lock(g_mu);
  g_level = parsed;
  spdlog::apply_all([parsed](std::shared_ptr<spdlog::logger> l) { l->set_level(parsed); });
  return absl::OkStatus();
}

}  // namespace mycel
