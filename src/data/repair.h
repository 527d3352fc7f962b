// SalvageStore: `mycel repair`'s engine. Copies every example SQLite can
// still read out of a damaged store into a new one, and leaves the damaged
// file as it was. Rows are read in id order; a read that fails (a corrupt
// page) skips to the next id, so one bad page costs only the rows on it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "data/example_store.h"

namespace mycel::data {

struct SalvageResult {
  int64_t salvaged = 0;      // examples copied into the new store
  int64_t highest_id = 0;    // the damaged store's highest example id (0: unknown)
  int64_t unreadable = 0;    // ids at which a read failed (each skipped)
  bool paused = false;       // the pause flag, carried over when readable
};

// Reads `damaged` (opened read-only, never written) and writes what it can
// into a new store at `into.path`, which must not exist. Idempotency keys are
// not carried over: the new store starts remembering from the repair.
absl::StatusOr<SalvageResult> SalvageStore(const std::string& damaged, const ExampleStoreOptions& into);

}  // namespace mycel::data
