// Clock seam: production code reads time through a Clock so tests can inject
// a fake one. Implementations must be thread-safe.
#pragma once

#include <cstdint>

namespace mycel {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time in seconds, for intervals and uptime.
  virtual double MonotonicSeconds() const = 0;
  // Wall-clock time in Unix seconds, for timestamps shown to people and peers.
  virtual int64_t UnixSeconds() const = 0;

  // The process-wide real clock; never null, never destroyed.
  static Clock* Real();
};

}  // namespace mycel
