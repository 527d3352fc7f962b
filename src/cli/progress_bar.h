// ProgressBar: one status line on a terminal, redrawn in place, for a long
// `mycel` command:
//
//   upload   [#########---------------]  38%  11.2/29.5 MiB  96.0 MiB/s
//   storing  [##################------]  76%  45600/60000 examples  52.3k/s
//
// The caller decides whether to draw (Enabled(): stderr is a terminal and the
// user asked for neither --json nor --no-progress); a disabled bar writes
// nothing, so output to pipes and files stays byte for byte what it was.
// Lines are redrawn with '\r' and padded with spaces, never escape
// sequences, so any terminal (even TERM=dumb) shows them right, and they are
// cut to the terminal's width so they never wrap. Clear() erases the line:
// call it before anything else is printed to the terminal.
//
// Single-threaded: the CLI's main thread owns it. It writes straight to the
// file descriptor (stderr is unbuffered anyway).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mycel::cli {

enum class ProgressUnit { kBytes, kExamples };

// One frame of the bar, without '\r' or padding: `done` of `total` units of
// `phase`, `seconds` into the phase. total <= 0: the amount is unknown (no
// bar, no percent). The percent is rounded down, so 100% means done. The
// result fits in `columns - 1` characters.
std::string FormatProgressLine(const std::string& phase, int64_t done, int64_t total, ProgressUnit unit,
                               double seconds, int columns);

class ProgressBar {
 public:
  // Draws on `fd` if `enabled`; otherwise every call does nothing.
  ProgressBar(int fd, bool enabled);
  ~ProgressBar();  // Clear()
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // True when a bar belongs on `fd`: a terminal, and not `suppressed`.
  static bool ShouldDraw(int fd, bool suppressed);

  // Shows `done` of `total` units of `phase`. A new phase restarts the rate
  // clock. Redraws at most every kMinRedraw, except at a new phase and when
  // done == total, so the last frame of a phase is always seen.
  void Update(const std::string& phase, int64_t done, int64_t total, ProgressUnit unit);
  // Erases the line; the cursor is left at its start. Idempotent.
  void Clear();

 private:
  using SteadyClock = std::chrono::steady_clock;
  // 20 redraws a second look smooth and cost nothing.
  static constexpr std::chrono::milliseconds kMinRedraw{50};

  void Write(const std::string& bytes);

  const int fd_;
  const bool enabled_;
  std::string phase_;
  SteadyClock::time_point phase_start_{};
  SteadyClock::time_point last_draw_{};
  size_t drawn_ = 0;  // characters on the line now
};

}  // namespace mycel::cli
