#include "cli/progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace mycel::cli {
namespace {

// The bar between the brackets: wide enough to move visibly at 1%, narrow
// enough to leave room for the numbers on an 80-column terminal.
constexpr int kBarMax = 30;
constexpr int kBarMin = 10;

std::string Printf(const char* format, double a, double b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, a, b);
  return buf;
}

// Binary prefixes as in the rest of the CLI (`mycel status`): the unit suits `scale`.
struct ByteUnit {
  double divisor;
  const char* name;
};
ByteUnit ByteUnitFor(double scale) {
  if (scale < 10 * 1024.0) return {1, "B"};
  if (scale < 10 * 1048576.0) return {1024.0, "KiB"};
  if (scale < 10 * 1073741824.0) return {1048576.0, "MiB"};
  return {1073741824.0, "GiB"};
}

std::string Amount(int64_t done, int64_t total, ProgressUnit unit) {
  if (unit == ProgressUnit::kExamples) {
    std::string s = std::to_string(done);
    if (total > 0) s += "/" + std::to_string(total);
    return s + " examples";
  }
  ByteUnit u = ByteUnitFor(static_cast<double>(std::max(done, total)));
  const char* format = u.divisor == 1 ? "%.0f" : "%.1f";
  std::string s = Printf(format, done / u.divisor);
  if (total > 0) s += "/" + Printf(format, total / u.divisor);
  return s + " " + u.name;
}

std::string Rate(int64_t done, double seconds, ProgressUnit unit) {
  // Below a fifth of a second the rate is mostly noise (and the first frame
  // would divide by almost zero).
  if (seconds < 0.2 || done <= 0) return "";
  double per_s = done / seconds;
  if (unit == ProgressUnit::kExamples) {
    if (per_s < 1e3) return Printf("%.0f/s", per_s);
    if (per_s < 1e6) return Printf("%.1fk/s", per_s / 1e3);
    return Printf("%.1fM/s", per_s / 1e6);
  }
  ByteUnit u = ByteUnitFor(per_s);
  return Printf(u.divisor == 1 ? "%.0f" : "%.1f", per_s / u.divisor) + " " + u.name + "/s";
}

int TerminalColumns(int fd) {
  struct winsize ws {};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;  // a terminal that does not say (e.g. a fresh pty): the classic width
}

}  // namespace

std::string FormatProgressLine(const std::string& phase, int64_t done, int64_t total, ProgressUnit unit,
                               double seconds, int columns) {
  std::string head = phase;
  head.resize(std::max<size_t>(head.size(), 8), ' ');
  std::string tail;
  if (total > 0) {
    const int64_t percent = std::clamp<int64_t>(done * 100 / total, 0, 100);
    tail = Printf("%3.0f%%", static_cast<double>(percent)) + "  " + Amount(done, total, unit);
  } else if (done > 0) {
    tail = Amount(done, 0, unit);
  }
  if (std::string rate = Rate(done, seconds, unit); !rate.empty()) tail += "  " + rate;

  const int room = columns - 1;
  std::string line = head;
  const int bar = std::min<int>(kBarMax, room - static_cast<int>(head.size() + tail.size()) - 3);
  if (total > 0 && bar >= kBarMin) {
    const int filled = static_cast<int>(std::clamp<int64_t>(done, 0, total) * bar / total);
    line += "[" + std::string(filled, '#') + std::string(bar - filled, '-') + "] ";
  }
  line += tail;
  if (static_cast<int>(line.size()) > room) line.resize(std::max(room, 0));
  return line;
}

ProgressBar::ProgressBar(int fd, bool enabled) : fd_(fd), enabled_(enabled) {}

ProgressBar::~ProgressBar() { Clear(); }

bool ProgressBar::ShouldDraw(int fd, bool suppressed) { return !suppressed && ::isatty(fd) == 1; }

void ProgressBar::Update(const std::string& phase, int64_t done, int64_t total, ProgressUnit unit) {
  if (!enabled_) return;
  const SteadyClock::time_point now = SteadyClock::now();
  const bool new_phase = phase != phase_;
  if (new_phase) {
    phase_ = phase;
    phase_start_ = now;
  } else if (done != total && now - last_draw_ < kMinRedraw) {
    return;
  }
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - phase_start_).count();
  std::string line = FormatProgressLine(phase, done, total, unit, seconds, TerminalColumns(fd_));
  const size_t width = line.size();
  // Pad over what a longer previous frame left behind.
  if (width < drawn_) line.append(drawn_ - width, ' ');
  Write("\r" + line);
  drawn_ = width;
}

void ProgressBar::Clear() {
  if (!enabled_ || drawn_ == 0) return;
  Write("\r" + std::string(drawn_, ' ') + "\r");
  drawn_ = 0;
}

void ProgressBar::Write(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd_, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a progress line is not worth failing the command over
    off += static_cast<size_t>(n);
  }
}

}  // namespace mycel::cli
