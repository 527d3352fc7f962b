#include "common/fd_limit.h"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace mycel {
namespace {

uint64_t ToU64(rlim_t v) { return v == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(v); }

}  // namespace

absl::StatusOr<FdLimit> RaiseFdLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return ErrnoStatus(errno, "getrlimit", "RLIMIT_NOFILE");
  FdLimit out;
  out.soft_before = ToU64(rl.rlim_cur);
  out.hard = ToU64(rl.rlim_max);
  rlim_t target = rl.rlim_max;
#ifdef __APPLE__
  // setrlimit refuses a soft limit above OPEN_MAX (10240) on macOS, even
  // when the hard limit reads "unlimited".
  target = std::min<rlim_t>(target, OPEN_MAX);
#endif
  if (rl.rlim_cur != RLIM_INFINITY && (target == RLIM_INFINITY || rl.rlim_cur < target)) {
    rlimit raised = rl;
    raised.rlim_cur = target;
    if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      return ErrnoStatus(errno, "setrlimit",
                         "RLIMIT_NOFILE " + std::to_string(out.soft_before) + " -> " + std::to_string(ToU64(target)));
    }
    rl = raised;
  }
  out.soft = ToU64(rl.rlim_cur);
  return out;
}

}  // namespace mycel
