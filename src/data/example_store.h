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
struct sqlite3_stmt;

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
  int64_t duplicates = 0;  // of those, already stored (same label, dtype and bytes): not stored again
  int64_t stored = 0;      // rows inserted (offered minus duplicates and those the reservoir skipped)
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

// Longest `source` an Add records; longer ones are cut.
constexpr size_t kMaxSourceBytes = 256;

// What Forget removes: rows matching every criterion given (at least one, or
// `all`). Times are Unix milliseconds of the Add that stored the row.
struct ForgetFilter {
  bool all = false;
  std::optional<int64_t> label;           // rows of this label
  std::optional<int64_t> before_unix_ms;  // rows added strictly before this time
  std::optional<int64_t> ingest;          // rows of this ingest (IngestInfo::id)
};

struct ForgetResult {
  int64_t train = 0;       // rows removed from the train split
  int64_t validation = 0;  // ... and from the validation split
};

// Rows per label, now.
struct LabelCount {
  int64_t label = -1;  // -1: text (char_lm) windows
  int64_t train = 0;
  int64_t validation = 0;
};

// One Add that still has rows in the store. An ingest's rows leave by
// reservoir eviction or Forget; once none is left it is no longer listed.
struct IngestInfo {
  int64_t id = 0;             // increasing: later ingests have larger ids
  int64_t added_unix_ms = 0;  // when it committed
  std::string source;         // what the caller named it (file names), may be ""
  int64_t offered = 0;        // examples it was given
  int64_t duplicates = 0;     // of those, already stored at the time
  int64_t train = 0;          // of its rows, still stored now
  int64_t validation = 0;
};

struct DataSummary {
  std::vector<LabelCount> labels;    // ascending label
  std::vector<IngestInfo> ingests;   // newest first, at most the limit asked for
  int64_t ingests_total = 0;         // ingests with rows stored (listed or not)
};

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
  // An example equal to a stored one (label, dtype and bytes) is counted in
  // `duplicates` and not stored again, nor offered to the reservoir. The Add
  // is recorded as an ingest named `source` (see Summarize).
  absl::StatusOr<AddResult> Add(const std::vector<Example>& examples, const AddProgressFn& progress = nullptr,
                                const std::string& key = "", const std::string& source = "");

  // Removes the rows `filter` matches, in one transaction, with SQLite's
  // secure_delete on and the WAL checkpointed and truncated afterwards, so
  // the removed bytes are overwritten in the file, not only unlinked. The
  // reservoir count drops by the rows removed. Bumps generation(): readers
  // holding rows (the Sampler) must reload. Idempotency keys stay: a retried
  // ingest of forgotten data is still a replay and stores nothing.
  absl::StatusOr<ForgetResult> Forget(const ForgetFilter& filter);
  // Incremented by every Forget that removed a row; starts at 0 per process.
  int64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Rows per label and the newest `max_ingests` ingests with rows left.
  absl::StatusOr<DataSummary> Summarize(int64_t max_ingests);
  // Rows per label and split, in label order (Summarize's `labels`).
  absl::StatusOr<std::vector<LabelCount>> CountLabels();
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
  // Init's steps, in order.
  absl::Status Identify(bool* fresh, int64_t* user_version);  // a new file, or a mycel store we can read
  absl::Status EnableWal();                             // WAL journal, synchronous=FULL
  absl::Status PrepareStatements();                     // fills stmts_
  absl::Status LoadCounts();                            // count_, checking slots are dense
  absl::Status LoadSeen();                              // seen_ from meta, and seeds rng_ from it
  absl::Status TrimToMaxExamples();                     // evicts down to a lowered max_examples
  absl::Status QueryInt(const char* sql, int64_t* out); // the first column of the first row
  // Runs `sql` (no parameters) and calls `row` for each result row.
  absl::Status QueryRows(const char* sql, const std::function<void(sqlite3_stmt*)>& row);
  absl::StatusOr<std::vector<LabelCount>> CountLabelsLocked();
  absl::Status Evict(int split);                        // removes a uniformly random row of `split`
  absl::Status InsertRow(const Example& example, int split, uint64_t digest, int64_t ingest);
  absl::StatusOr<bool> StoredLocked(const Example& example, uint64_t digest);  // an equal row exists
  // Add's steps, inside its transaction. The batches row for `offered` examples
  // from `source` (its id); then its count of duplicates, once they are known.
  absl::StatusOr<int64_t> AddBatchLocked(const std::string& source, int64_t offered);
  absl::Status FinishBatchLocked(int64_t batch, int64_t duplicates);
  // Stores one example of batch `batch` unless an equal row exists or the
  // reservoir turns it away (evicting a row when it lets it in); counts what it
  // did in *result.
  absl::Status AddOneLocked(const Example& example, int64_t batch, AddResult* result);
  absl::Status Upgrade(int64_t from_version);           // to kSchemaVersion, in one transaction
  absl::Status RenumberSlots(int split);                // dense slots again after a Forget
  absl::Status SaveSeenLocked();                        // persists seen_ (inside a transaction)
  // BEGIN IMMEDIATE, body, COMMIT; on any failure a rollback that also puts
  // seen_ and count_ back as they were. Holds mu_.
  absl::Status TransactLocked(const std::function<absl::Status()>& body);
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
  std::atomic<int64_t> generation_{0};
};

}  // namespace mycel::data
