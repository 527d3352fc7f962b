#include "common/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <mutex>
#include <vector>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace mycel {
namespace {
std::mutex g_mu;
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_flush_on_info = false;  // once a log file is set
constexpr char kPattern[] = "%Y-%m-%d %H:%M:%S.%e %^%L%$ [%n] %v";

// Every logger writes to all of these: stderr, and the log file once set.
std::vector<spdlog::sink_ptr>& Sinks() {
  static auto* sinks = new std::vector<spdlog::sink_ptr>{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  return *sinks;
}

// "<N>", the syslog priority of the line's level, which journald reads off
// the start of each line of a service's stderr (sd-daemon(3)).
class JournalPriority : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    int priority = 6;  // info
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: priority = 7; break;
      case spdlog::level::warn: priority = 4; break;
      case spdlog::level::err: priority = 3; break;
      case spdlog::level::critical: priority = 2; break;
      default: break;
    }
    const char text[4] = {'<', static_cast<char>('0' + priority), '>', '\0'};
    dest.append(text, text + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JournalPriority>(); }
};

// Whether stderr is the journal: systemd sets JOURNAL_STREAM to its
// "device:inode" (systemd.exec(5)).
bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st;
  if (stream == nullptr || ::fstat(STDERR_FILENO, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  return std::sscanf(stream, "%llu:%llu", &dev, &ino) == 2 && dev == static_cast<unsigned long long>(st.st_dev) &&
         ino == static_cast<unsigned long long>(st.st_ino);
}

// The pattern on every sink; on the journal, stderr lines carry their
// priority instead of a timestamp (journald keeps its own). Caller holds g_mu.
void ApplyPattern(spdlog::logger& l) {
  l.set_pattern(kPattern);
  static const bool journal = StderrIsJournal();
  if (!journal) return;
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<JournalPriority>('*').set_pattern("%*%L [%n] %v");
  Sinks().front()->set_formatter(std::move(formatter));
}
}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, Sinks().begin(), Sinks().end());
  logger->set_level(g_level);
  ApplyPattern(*logger);
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
    ApplyPattern(*l);  // applies to the new sink too
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
