// Sampler: the in-memory working set the trainer draws batches from.
//
// It mirrors the store's train split in RAM (bounded by `capacity` rows) as
// flat row-major arrays, so a training step never touches SQLite. New rows go
// to a fresh queue; each batch takes round(batch * (1 - replay_fraction))
// fresh rows (oldest first) and fills the rest by replay from rows already
// trained on, so the model keeps learning new data without forgetting old.
// Trained fresh rows join the replay pool. When the store holds more than
// `capacity` rows, Refresh loads only what fits (the rest is loaded by later
// calls, so every row is still trained once as fresh) and the pool keeps about
// half of the capacity.
//
// Two replay pools (SamplerOptions::pool):
//  * kUniform: replay rows are drawn uniformly from the pool; when it is full
//    a trained fresh row replaces a random row (reservoir sampling), so the
//    pool stays an unbiased sample of everything trained.
//  * kBalanced: the pool keeps an equal share per class (when it is full the
//    row evicted is from the most-represented class, and a row of a class
//    already at the largest share replaces one of its own class by reservoir
//    sampling), and each batch is filled class by class: fresh rows (oldest
//    first) up to a class's fair share of the batch, batch / classes held,
//    then replay rows for the classes with the fewest rows in the batch, so
//    while a new class's fresh rows arrive the batch still holds every class
//    seen. Within a class, a replay row is the one of two drawn at random
//    with the higher score, its last loss plus how much that loss rose since
//    the one before: rows the model is forgetting come back about twice as
//    often as the class's average. Losses come from ReportLosses.
//
// Not thread-safe: owned and used by the trainer thread only. Refresh() reads
// the store (which is itself thread-safe).
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "data/example_store.h"

namespace mycel::data {

enum class ReplayPool { kUniform, kBalanced };

struct SamplerOptions {
  ExampleShape shape;            // width of every row
  int64_t capacity = 200000;     // rows held in memory at most
  double replay_fraction = 0.5;  // share of a batch drawn from the replay pool
  ReplayPool pool = ReplayPool::kUniform;
  uint64_t seed = 1;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Loads train rows added to `store` since the last call. Returns rows loaded.
  absl::StatusOr<int64_t> Refresh(ExampleStore& store);

  // Rows available to sample (fresh + replay).
  int64_t size() const;
  int64_t fresh() const { return static_cast<int64_t>(fresh_labels_.size()) - fresh_head_; }

  // Fills one batch of `batch` rows. Images/CSV: `x` gets batch*width floats
  // (u8 scaled by 1/255), `y` gets batch labels. Text: `tokens` gets
  // batch*width byte values. Returns false if there is nothing to sample.
  bool NextBatch(int64_t batch, float* x, int64_t* y);
  bool NextTokenBatch(int64_t batch, int64_t* tokens);

  // Whether ReportLosses is used (the balanced pool weighs rows by loss).
  bool wants_losses() const { return balanced_; }
  // The loss of each row of the batch the last NextBatch/NextTokenBatch
  // filled, in its order (`batch` values). Rows of it that have since left
  // memory are skipped. A no-op for the uniform pool.
  void ReportLosses(const float* losses, int64_t batch);

  // Pool rows of class `label` (for tests and status).
  int64_t pool_rows_of(int64_t label) const;

 private:
  // Picks the row sources of one batch into picks_ (fresh rows first) and
  // sets picked_fresh_.
  bool Pick(int64_t batch);
  void Retire(int64_t fresh_count);  // moves consumed fresh rows to the replay pool
  const uint8_t* RowPtr(bool fresh, int64_t row) const;
  void Append(const Example& e);      // to the fresh queue, in the current row format
  void PromoteToF32();                // converts every held row to float32, once
  void CompactFresh();                // drops the consumed prefix of the fresh queue
  void EvictPoolRow();                // removes a replay row (see the class comment)
  int64_t pool_size() const { return static_cast<int64_t>(pool_labels_.size()); }
  // Balanced pool only.
  int64_t ClassOf(int64_t label) const;  // index into the per-class arrays
  int64_t LargestClass();                // the most-represented class (ties at random)
  void PoolPush(const uint8_t* src, int64_t label);
  void PoolRemove(int64_t row);       // swap-remove; keeps picks_ pointing at the right rows
  // Takes up to `want` fresh rows, each class up to its share of `batch`;
  // counts them per class into batch_classes_. Returns how many.
  int64_t PickFresh(int64_t batch, int64_t want);
  int64_t DrawReplayRow(int64_t cls);  // the higher-scored of two random rows of `cls`
  // Moves trained fresh row `fresh_row` into the pool (`room`: without
  // evicting) or drops it, and points the batch's picks of it at where it went.
  void RetireBalanced(const uint8_t* src, int64_t label, int64_t fresh_row, bool room);

  SamplerOptions options_;
  int64_t row_bytes_ = 0;       // bytes per row (width, or 4*width for f32)
  bool f32_ = false;            // rows stored as float32 (CSV) rather than u8
  int64_t last_id_ = 0;         // newest store id loaded
  std::vector<uint8_t> fresh_rows_;
  std::vector<int64_t> fresh_labels_;
  int64_t fresh_head_ = 0;      // index of the oldest untrained fresh row
  std::vector<uint8_t> pool_rows_;
  std::vector<int64_t> pool_labels_;
  int64_t pool_seen_ = 0;       // rows ever offered to the pool (reservoir count)
  std::vector<std::pair<bool, int64_t>> picks_;  // (fresh?, row) for the current batch
  int64_t picked_fresh_ = 0;    // fresh rows consumed by the current batch
  bool pressure_ = false;       // the last Refresh found more rows than fit in capacity
  // Balanced pool: per class (labels, or one class for text), the pool rows
  // of the class, rows ever offered to the pool and fresh rows waiting; per
  // pool row, its place in its class's list and its last two losses (NaN
  // until reported). pick_pool_[b] is the pool row batch row b now is, or -1.
  bool balanced_ = false;
  std::vector<std::vector<int64_t>> class_rows_;
  std::vector<int64_t> class_seen_;
  std::vector<int64_t> class_fresh_;
  std::vector<int64_t> row_slot_;
  std::vector<float> loss_last_;
  std::vector<float> loss_prev_;
  std::vector<int64_t> pick_pool_;
  std::vector<int64_t> batch_classes_;  // scratch: rows per class in the batch being picked
  std::mt19937_64 rng_;
};

}  // namespace mycel::data
