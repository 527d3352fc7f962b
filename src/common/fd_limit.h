// The process's descriptor limit (RLIMIT_NOFILE).
//
// Every peer connection, outgoing pull, control client, checkpoint and the
// example store's files take one descriptor; Linux's default soft limit is
// 1024 (and 256 on macOS) while the hard limit is usually far higher
// (systemd: 524288). RaiseFdLimit lifts the soft limit to the hard one once,
// at start-up, before any thread is made; the peer listener then keeps its
// connections to a share of whatever limit is in force (peer/server_limits.h).
// Thread-safe (plain system calls), but meant for main().
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace mycel {

struct FdLimit {
  uint64_t soft_before = 0;
  uint64_t soft = 0;   // in force after the call
  uint64_t hard = 0;   // UINT64_MAX: unlimited
};

// Raises the soft RLIMIT_NOFILE to the hard limit (on macOS also to
// OPEN_MAX, the most setrlimit accepts there). A failure leaves the limit
// as it was and returns the errno, naming the figures.
absl::StatusOr<FdLimit> RaiseFdLimit();

}  // namespace mycel
