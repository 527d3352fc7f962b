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
  int64_t ingest_keys = 0;   // idempotency keys carried over
};

// Reads `damaged` (opened read-only, never written) and writes what it can
// into a new store at `into.path`, which must not exist. The idempotency keys
// SQLite can read are carried over (oldest first), so an ingest the damaged
// store had committed is still a replay when retried after the repair, even
// if some of its rows were on a lost page: a retry must never duplicate the
// rest.
absl::StatusOr<SalvageResult> SalvageStore(const std::string& damaged, const ExampleStoreOptions& into);

}  // namespace mycel::data
