// History: what the daemon measured at each validation pass, kept in SQLite
// (<state_dir>/history.db) for `mycel history` and the dashboard's plot.
//
// One row per validation pass: the time, the step, accuracy and losses, the
// learning rate, and the gossip rounds and bytes so far. At most kMaxRows
// rows are kept (the oldest go), a few MB. The history is a record, not
// state: a damaged file (not a database, or failing its quick_check) is
// moved aside (named in the log) and a new one started; other errors (a
// full disk, permissions) leave the file alone, and a failed write is
// logged and skipped; the daemon never stops for it.
//
// Thread-safe: one connection behind a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

struct sqlite3;

namespace mycel::data {

struct HistoryEntry {
  double unix_s = 0;
  int64_t steps = 0;
  int64_t samples_trained = 0;
  double val_accuracy = 0;
  double val_loss = 0;
  double train_loss = 0;   // NaN before the first step
  double learning_rate = 0;
  int64_t rounds = 0;      // gossip rounds since the daemon started
  int64_t bytes_sent = 0;  // gossip bytes since the daemon started
  int64_t bytes_received = 0;
  std::string state;       // the trainer's state then (training, resting, ...)
};

class History {
 public:
  static constexpr int64_t kMaxRows = 100000;

  // Opens or creates `path`. A damaged file is renamed to
  // `path`.corrupt-<unix time> and a new one created; `*moved` (if given)
  // says where it went ("" if nothing was moved). Other errors are returned
  // (Unavailable) and the file is left alone.
  // `max_rows`: rows kept (the oldest beyond it are deleted every
  // max(1, max_rows / 100) inserts).
  static absl::StatusOr<std::unique_ptr<History>> Open(const std::string& path, std::string* moved = nullptr,
                                                       int64_t max_rows = kMaxRows);
  ~History();
  History(const History&) = delete;
  History& operator=(const History&) = delete;

  absl::Status Record(const HistoryEntry& e);
  // Entries at or after `since_unix_s`, oldest first; at most `limit`, the
  // newest ones when there are more.
  absl::StatusOr<std::vector<HistoryEntry>> Since(double since_unix_s, int64_t limit) const;

 private:
  History() = default;
  absl::Status Exec(const char* sql) const;
  // Deletes the oldest rows beyond max_rows_.
  absl::Status Trim();
  mutable std::mutex mu_;
  sqlite3* db_ = nullptr;
  int64_t max_rows_ = kMaxRows;
  int64_t inserts_ = 0;
};

}  // namespace mycel::data
