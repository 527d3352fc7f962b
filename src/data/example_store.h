// ExampleStore: the on-device example store, one SQLite file in WAL mode.
//
// An Add() is one transaction committed with synchronous=FULL: when it
// returns OK the examples survive a crash or power loss. Each example's split
// (train or validation) is a pure function of its content (a hash of label and
// bytes against validation_fraction), so the held-out set is deterministic and
// never trained on. max_examples bounds the whole store with reservoir
// sampling (Vitter's algorithm R over everything ever offered; a newcomer
// replaces a uniformly random row of its own split), so an endless stream
// neither fills the disk nor biases the store towards old data.
//
// Thread-safe: every method takes an internal mutex (one sqlite3 connection).
// A small key/value meta table holds daemon state such as the pause flag.
//
// A long Add reports its progress through a callback, which may also cancel
// it; a cancelled Add rolls back like a failed one, so it stores nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/example.h"

struct sqlite3;

namespace mycel::data {

// Idempotency keys remembered by default: hours of ingests at any sane rate,
// at ~100 bytes each.
constexpr int64_t kIngestKeysKept = 10000;

struct ExampleStoreOptions {
  std::string path;                   // SQLite file; created if missing
  int64_t max_examples = 200000;      // bound on stored examples (train + validation)
  double validation_fraction = 0.1;   // in [0, 0.9]
  uint64_t seed = 1;                  // reservoir RNG seed
  int64_t ingest_keys_kept = kIngestKeysKept;  // newest idempotency keys remembered, >= 1
};

struct AddResult {
  int64_t offered = 0;     // examples passed to Add
  int64_t stored = 0;      // rows inserted (offered minus those the reservoir skipped)
  int64_t evicted = 0;     // older rows removed to make room
  int64_t train = 0;       // of the stored, how many went to the train split
  int64_t validation = 0;  // ... and to the validation split
  bool replayed = false;   // the key was seen before: nothing stored now, the first Add's result
};

// An Add may carry an idempotency key: 1 to kMaxIngestKeyBytes characters of
// [A-Za-z0-9._:-]. The key commits in the Add's own transaction, so an Add
// retried after its acknowledgement was lost (the daemon killed right after
// the commit) stores nothing twice: it returns the first Add's result with
// `replayed` set. The newest options.ingest_keys_kept keys are remembered.
constexpr size_t kMaxIngestKeyBytes = 128;

// Called by Add with how many of its `total` examples are in its transaction
// so far (written, not yet committed): after every kAddProgressEvery examples
// and once with done == total just before the commit; never for an empty Add.
// Runs on Add's thread with the store's mutex held, so it must not call the
// store. Returning false cancels the Add: it rolls back and returns kCancelled.
using AddProgressFn = std::function<bool(int64_t done, int64_t total)>;

// Examples between two progress reports. Measured with Fashion-MNIST's 60k:
// 1000 take 6 ms into an empty store on an idle machine (17 ms with a build
// running) and ~20 ms into a full one, where each insert also evicts; well
// under the ~100 ms at which a progress display redraws.
constexpr int64_t kAddProgressEvery = 1000;

class ExampleStore {
 public:
  ~ExampleStore();
  ExampleStore(const ExampleStore&) = delete;
  ExampleStore& operator=(const ExampleStore&) = delete;

  // Opens or creates the store; a file that is not a mycel store (or is
  // corrupt) is an error naming the path, and the file is left as it was.
  static absl::StatusOr<std::unique_ptr<ExampleStore>> Open(const ExampleStoreOptions& options);

  // Stores `examples` atomically (all or none). `progress` may be empty.
  // `key` (may be empty: no key) makes the Add idempotent, see above.
  absl::StatusOr<AddResult> Add(const std::vector<Example>& examples, const AddProgressFn& progress = nullptr,
                                const std::string& key = "");
  // The result of the Add that committed `key`, if it is remembered.
  absl::StatusOr<std::optional<AddResult>> FindIngest(const std::string& key);
  // Remembers `key` as committed with `result` (as the newest key) without
  // storing anything: `mycel repair` carries a damaged store's keys over, so
  // a retry of an ingest the old store had committed is still a replay. A
  // key already remembered is left as it is.
  absl::Status RememberIngest(const std::string& key, const AddResult& result);

  // Committed rows of `split`. Never waits: it does not take the store's
  // lock, which a long Add holds for its whole transaction and the trainer
  // (at idle priority) holds while it reads rows, so `mycel status` answers
  // at once on a busy laptop; rows of an Add still in progress are not
  // counted until it commits.
  int64_t Count(Split split);
  // Rows of `split` with id > after_id, in id order, at most `limit` (>= 0).
  absl::StatusOr<std::vector<StoredExample>> ReadSince(Split split, int64_t after_id, int64_t limit);
  // Ids of rows removed by reservoir eviction are not reported; readers that
  // cache rows bound their caches themselves (see Sampler).

  // Durable small key/value state. Keys starting with "_store." are the
  // store's own; SetMeta refuses them.
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key);
  absl::Status SetMeta(const std::string& key, const std::string& value);

  // Which split an example belongs to (pure function of its content).
  static Split SplitOf(const Example& example, double validation_fraction);

 private:
  struct Statements;  // prepared statements, reused across calls (defined in the .cc)

  explicit ExampleStore(const ExampleStoreOptions& options);
  absl::Status Init();                                  // opens, checks or creates the schema
  absl::Status Evict(int split);                        // removes a uniformly random row of `split`
  absl::Status InsertRow(const Example& example, int split);
  absl::StatusOr<std::optional<AddResult>> FindIngestLocked(const std::string& key);
  absl::Status RecordIngestLocked(const std::string& key, const AddResult& result);
  absl::Status Exec(const char* sql);                   // one-shot statement without results
  absl::Status SqlError(int rc, const std::string& what) const;  // names the path and sqlite's message

  ExampleStoreOptions options_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;          // owned; closed by the destructor; guarded by mu_
  std::unique_ptr<Statements> stmts_;  // finalized before db_ is closed; guarded by mu_
  int64_t seen_ = 0;               // examples ever offered (persisted in meta), guarded by mu_
  int64_t count_[2] = {0, 0};      // rows per split (index = Split), guarded by mu_
  std::atomic<int64_t> committed_[2] = {0, 0};  // count_ as of the last commit; read without mu_
  void PublishCountsLocked();      // committed_ = count_, after a commit
  std::mt19937_64 rng_;            // guarded by mu_
};

}  // namespace mycel::data
