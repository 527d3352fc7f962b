// Sampler: the in-memory working set the trainer draws batches from.
//
// It mirrors the store's train split in RAM (bounded by `capacity` rows) as
// flat row-major arrays, so a training step never touches SQLite. New rows go
// to a fresh queue; each batch takes round(batch * (1 - replay_fraction))
// fresh rows (oldest first) and fills the rest by uniform replay from rows
// already trained on, so the model keeps learning new data without forgetting
// old. Trained fresh rows join the replay pool; when it is full they replace a
// random row (reservoir sampling), so the pool stays an unbiased sample.
// When the store holds more than `capacity` rows, Refresh loads only what fits
// (the rest is loaded by later calls, so every row is still trained once as
// fresh) and the pool keeps about half of the capacity.
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

struct SamplerOptions {
  ExampleShape shape;            // width of every row
  int64_t capacity = 200000;     // rows held in memory at most
  double replay_fraction = 0.5;  // share of a batch drawn from the replay pool
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

 private:
  // Picks the row sources of one batch into picks_ (fresh rows first) and
  // sets picked_fresh_.
  bool Pick(int64_t batch);
  void Retire(int64_t fresh_count);  // moves consumed fresh rows to the replay pool
  const uint8_t* RowPtr(bool fresh, int64_t row) const;
  void Append(const Example& e);      // to the fresh queue, in the current row format
  void PromoteToF32();                // converts every held row to float32, once
  void CompactFresh();                // drops the consumed prefix of the fresh queue
  void EvictPoolRow();                // removes a uniformly random replay row
  int64_t pool_size() const { return static_cast<int64_t>(pool_labels_.size()); }

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
  std::mt19937_64 rng_;
};

}  // namespace mycel::data
