#include "data/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/coding.h"
#include "common/logging.h"
#include "common/status.h"

// Memory policy (capacity C, pool share P = C/2):
//  * Refresh appends new store rows to the fresh queue while pool + fresh < C.
//    When memory is full it makes room by evicting a uniformly random replay
//    row, but only while the pool holds more than P rows; otherwise it stops
//    and leaves the rest in the store for the next Refresh (backpressure: no
//    row is skipped untrained).
//  * A trained fresh row joins the pool if there is no memory pressure (the
//    last Refresh loaded everything the store had) or the pool is below P;
//    otherwise Algorithm R decides (replace a random pool row with probability
//    pool/seen, else drop), which frees one slot for fresh data.
// So without memory pressure everything is kept, and under sustained pressure
// the pool settles at about P rows, a uniform sample of everything trained
// (uniform thinning of a uniform sample stays uniform).
// The balanced pool keeps the same sizes; only which row goes differs: a row
// of the most-represented class, or, for a trained row whose class already
// holds the largest share, Algorithm R within its class. So each class settles
// at an equal share of P, a uniform sample of that class's rows.

namespace mycel::data {
namespace {

// Rows are read from the store in chunks of this many.
constexpr int64_t kRefreshChunk = 4096;
// The consumed prefix of the fresh queue is compacted once it is at least this
// long and at least as long as the unconsumed rest (amortised O(1) per row).
constexpr int64_t kCompactMinRows = 1024;

// u8 → float, exactly v / 255.0f. The fixed 16-wide inner loop with
// __restrict is what GCC vectorises at -O2 (its "very cheap" cost model takes
// no loop with a runtime trip count or alias check); the plain loop cost
// ~3x more per batch (measured: 49 us vs ~15 us CPU for 64 x 784).
void U8RowToFloat(const uint8_t* __restrict src, float* __restrict dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int k = 0; k < 16; ++k) dst[i + k] = static_cast<float>(src[i + k]) / 255.0f;
  }
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]) / 255.0f;
}

// How much a balanced pool wants to replay a row: its last loss plus how much
// that rose since the loss before. A row never trained on outranks all.
float ReplayScore(float last, float prev) {
  if (std::isnan(last)) return std::numeric_limits<float>::infinity();
  if (std::isnan(prev)) return last;
  return last + std::max(0.0f, last - prev);
}

}  // namespace

Sampler::Sampler(const SamplerOptions& options)
    : options_(options), row_bytes_(options.shape.width), rng_(options.seed) {
  options_.capacity = std::max<int64_t>(1, options_.capacity);
  options_.replay_fraction = std::clamp(options_.replay_fraction, 0.0, 1.0);
  balanced_ = options_.pool == ReplayPool::kBalanced;
  if (balanced_) {
    const int64_t classes = options_.shape.text ? 1 : std::max<int64_t>(1, options_.shape.classes);
    class_rows_.resize(static_cast<size_t>(classes));
    class_seen_.assign(static_cast<size_t>(classes), 0);
    class_fresh_.assign(static_cast<size_t>(classes), 0);
    batch_classes_.assign(static_cast<size_t>(classes), 0);
  }
}

int64_t Sampler::ClassOf(int64_t label) const {
  if (options_.shape.text) return 0;  // a text row's label means nothing
  return std::clamp<int64_t>(label, 0, static_cast<int64_t>(class_rows_.size()) - 1);
}

int64_t Sampler::pool_rows_of(int64_t label) const {
  if (balanced_) return static_cast<int64_t>(class_rows_[static_cast<size_t>(ClassOf(label))].size());
  return std::count(pool_labels_.begin(), pool_labels_.end(), label);
}

int64_t Sampler::size() const { return pool_size() + fresh(); }

void Sampler::PromoteToF32() {
  CompactFresh();
  auto convert = [](std::vector<uint8_t>& rows) {
    std::vector<uint8_t> out(rows.size() * 4);
    float* f = reinterpret_cast<float*>(out.data());  // operator new aligns for float
    for (size_t i = 0; i < rows.size(); ++i) f[i] = static_cast<float>(rows[i]) / 255.0f;
    rows.swap(out);
  };
  convert(fresh_rows_);
  convert(pool_rows_);
  f32_ = true;
  row_bytes_ = 4 * options_.shape.width;
}

void Sampler::Append(const Example& e) {
  const int64_t width = options_.shape.width;
  if (e.dtype == DType::kF32 && !f32_) PromoteToF32();
  size_t at = fresh_rows_.size();
  fresh_rows_.resize(at + static_cast<size_t>(row_bytes_));
  uint8_t* dst = fresh_rows_.data() + at;
  if (!f32_) {
    std::memcpy(dst, e.data.data(), static_cast<size_t>(width));
  } else if (e.dtype == DType::kF32) {
    for (int64_t i = 0; i < width; ++i) {
      float v = DecodeFloat32(e.data.data() + 4 * i);
      std::memcpy(dst + 4 * i, &v, 4);
    }
  } else {
    for (int64_t i = 0; i < width; ++i) {
      float v = static_cast<float>(static_cast<uint8_t>(e.data[static_cast<size_t>(i)])) / 255.0f;
      std::memcpy(dst + 4 * i, &v, 4);
    }
  }
  fresh_labels_.push_back(e.label);
  if (balanced_) class_fresh_[static_cast<size_t>(ClassOf(e.label))]++;
}

void Sampler::CompactFresh() {
  if (fresh_head_ == 0) return;
  fresh_rows_.erase(fresh_rows_.begin(), fresh_rows_.begin() + fresh_head_ * row_bytes_);
  fresh_labels_.erase(fresh_labels_.begin(), fresh_labels_.begin() + fresh_head_);
  fresh_head_ = 0;
}

void Sampler::EvictPoolRow() {
  if (balanced_) {
    const auto& rows = class_rows_[static_cast<size_t>(LargestClass())];
    const auto n = static_cast<int64_t>(rows.size());
    PoolRemove(rows[static_cast<size_t>(std::uniform_int_distribution<int64_t>(0, n - 1)(rng_))]);
    return;
  }
  PoolRemove(std::uniform_int_distribution<int64_t>(0, pool_size() - 1)(rng_));
}

int64_t Sampler::LargestClass() {
  // Ties at random, so no class is always the first to go.
  const auto classes = static_cast<int64_t>(class_rows_.size());
  const int64_t start = std::uniform_int_distribution<int64_t>(0, classes - 1)(rng_);
  int64_t best = start;
  for (int64_t k = 1; k < classes; ++k) {
    const int64_t c = (start + k) % classes;
    if (class_rows_[static_cast<size_t>(c)].size() > class_rows_[static_cast<size_t>(best)].size()) best = c;
  }
  return best;
}

void Sampler::PoolPush(const uint8_t* src, int64_t label) {
  const int64_t row = pool_size();
  pool_rows_.insert(pool_rows_.end(), src, src + row_bytes_);
  pool_labels_.push_back(label);
  if (!balanced_) return;
  auto& rows = class_rows_[static_cast<size_t>(ClassOf(label))];
  row_slot_.push_back(static_cast<int64_t>(rows.size()));
  rows.push_back(row);
  loss_last_.push_back(std::numeric_limits<float>::quiet_NaN());
  loss_prev_.push_back(std::numeric_limits<float>::quiet_NaN());
}

void Sampler::PoolRemove(int64_t row) {
  const int64_t last = pool_size() - 1;
  if (balanced_) {
    // Out of its class's list (swap-remove there too).
    auto& rows = class_rows_[static_cast<size_t>(ClassOf(pool_labels_[static_cast<size_t>(row)]))];
    const int64_t slot = row_slot_[static_cast<size_t>(row)];
    rows[static_cast<size_t>(slot)] = rows.back();
    row_slot_[static_cast<size_t>(rows.back())] = slot;
    rows.pop_back();
    // The batch's rows follow the move, so reported losses land on them.
    for (int64_t& p : pick_pool_) {
      if (p == row) {
        p = -1;
      } else if (p == last) {
        p = row;
      }
    }
  }
  if (row != last) {
    std::memcpy(&pool_rows_[row * row_bytes_], &pool_rows_[last * row_bytes_], static_cast<size_t>(row_bytes_));
    pool_labels_[static_cast<size_t>(row)] = pool_labels_[static_cast<size_t>(last)];
    if (balanced_) {
      const auto r = static_cast<size_t>(row), l = static_cast<size_t>(last);
      row_slot_[r] = row_slot_[l];
      class_rows_[static_cast<size_t>(ClassOf(pool_labels_[r]))][static_cast<size_t>(row_slot_[r])] = row;
      loss_last_[r] = loss_last_[l];
      loss_prev_[r] = loss_prev_[l];
    }
  }
  pool_rows_.resize(static_cast<size_t>(last * row_bytes_));
  pool_labels_.pop_back();
  if (balanced_) {
    row_slot_.pop_back();
    loss_last_.pop_back();
    loss_prev_.pop_back();
  }
}

absl::StatusOr<int64_t> Sampler::Refresh(ExampleStore& store) {
  const int64_t capacity = options_.capacity;
  const int64_t pool_share = capacity / 2;
  if (fresh_head_ > 0 && fresh_head_ >= fresh()) CompactFresh();
  int64_t loaded = 0, skipped = 0;
  bool full = false;
  while (!full) {
    MYCEL_ASSIGN_OR_RETURN(std::vector<StoredExample> rows,
                           store.ReadSince(Split::kTrain, last_id_, kRefreshChunk));
    for (const StoredExample& row : rows) {
      if (!Fits(row.example, options_.shape)) {
        ++skipped;
        last_id_ = row.id;
        continue;
      }
      if (size() >= capacity) {
        pressure_ = true;
        if (pool_size() <= pool_share) {
          full = true;  // the rest stays in the store until training makes room
          break;
        }
        EvictPoolRow();
      }
      Append(row.example);
      last_id_ = row.id;
      ++loaded;
    }
    if (static_cast<int64_t>(rows.size()) < kRefreshChunk) {
      if (size() < capacity) pressure_ = false;  // drained the store with room to spare
      break;
    }
  }
  if (skipped > 0) {
    Logger("data")->warn("sampler: skipped {} stored examples that do not fit the model "
                         "(width {}, {} classes, text={})",
                         skipped, options_.shape.width, options_.shape.classes, options_.shape.text);
  }
  return loaded;
}

bool Sampler::Pick(int64_t batch) {
  picked_fresh_ = 0;
  if (batch <= 0 || size() == 0) return false;
  picks_.clear();
  picks_.reserve(static_cast<size_t>(batch));  // allocates on the first call only
  const int64_t pool = pool_size();
  int64_t want_fresh =
      pool == 0 ? batch : std::llround(static_cast<double>(batch) * (1.0 - options_.replay_fraction));
  // At least one fresh row while any wait, so new data always enters
  // training (and then the replay pool), even at replay_fraction = 1.
  want_fresh = std::clamp<int64_t>(want_fresh, 1, batch);
  if (balanced_) {
    std::fill(batch_classes_.begin(), batch_classes_.end(), 0);
    pick_pool_.clear();
  }
  const int64_t n_fresh = balanced_ ? PickFresh(batch, want_fresh) : std::min(want_fresh, fresh());
  for (int64_t i = 0; i < n_fresh; ++i) picks_.emplace_back(true, fresh_head_ + i);
  if (pool > 0 && balanced_) {
    // Each replay row goes to a class with the fewest rows in the batch so
    // far (ties at random), so the batch holds every class about equally.
    const auto classes = static_cast<int64_t>(class_rows_.size());
    for (int64_t i = n_fresh; i < batch; ++i) {
      const int64_t start = std::uniform_int_distribution<int64_t>(0, classes - 1)(rng_);
      int64_t best = -1;
      for (int64_t k = 0; k < classes; ++k) {
        const int64_t c = (start + k) % classes;
        if (class_rows_[static_cast<size_t>(c)].empty()) continue;
        if (best < 0 || batch_classes_[static_cast<size_t>(c)] < batch_classes_[static_cast<size_t>(best)]) best = c;
      }
      batch_classes_[static_cast<size_t>(best)]++;
      picks_.emplace_back(false, DrawReplayRow(best));
    }
  } else if (pool > 0) {
    std::uniform_int_distribution<int64_t> dist(0, pool - 1);
    for (int64_t i = n_fresh; i < batch; ++i) picks_.emplace_back(false, dist(rng_));
  } else {
    // No replay yet: repeat this batch's fresh rows (n_fresh > 0 since size() > 0).
    std::uniform_int_distribution<int64_t> dist(0, n_fresh - 1);
    for (int64_t i = n_fresh; i < batch; ++i) picks_.emplace_back(true, fresh_head_ + dist(rng_));
  }
  if (balanced_) {
    for (const auto& [is_fresh, row] : picks_) pick_pool_.push_back(is_fresh ? -1 : row);  // fresh: set by Retire
  }
  picked_fresh_ = n_fresh;
  return true;
}

int64_t Sampler::PickFresh(int64_t batch, int64_t want) {
  // A class's fair share of the batch: batch / classes held (in the pool or
  // waiting). Fresh rows are taken oldest first and stop at the first whose
  // class has its share, so a new class's rows never crowd out the others;
  // the rows left wait for the next batch, none is skipped.
  int64_t held = 0;
  for (size_t c = 0; c < class_rows_.size(); ++c) held += !class_rows_[c].empty() || class_fresh_[c] > 0;
  const int64_t share = (batch + std::max<int64_t>(1, held) - 1) / std::max<int64_t>(1, held);
  const int64_t n = std::min(want, fresh());
  int64_t taken = 0;
  for (; taken < n; ++taken) {
    auto& count = batch_classes_[static_cast<size_t>(ClassOf(fresh_labels_[static_cast<size_t>(fresh_head_ + taken)]))];
    if (taken > 0 && count >= share) break;
    ++count;
  }
  return taken;
}

int64_t Sampler::DrawReplayRow(int64_t cls) {
  const auto& rows = class_rows_[static_cast<size_t>(cls)];
  std::uniform_int_distribution<size_t> dist(0, rows.size() - 1);
  const int64_t a = rows[dist(rng_)], b = rows[dist(rng_)];
  auto score = [&](int64_t r) {
    return ReplayScore(loss_last_[static_cast<size_t>(r)], loss_prev_[static_cast<size_t>(r)]);
  };
  return score(a) >= score(b) ? a : b;
}

void Sampler::ReportLosses(const float* losses, int64_t batch) {
  if (!balanced_) return;
  const int64_t n = std::min<int64_t>(batch, static_cast<int64_t>(pick_pool_.size()));
  for (int64_t b = 0; b < n; ++b) {
    const int64_t row = pick_pool_[static_cast<size_t>(b)];
    if (row < 0 || row >= pool_size() || !std::isfinite(losses[b])) continue;
    loss_prev_[static_cast<size_t>(row)] = loss_last_[static_cast<size_t>(row)];
    loss_last_[static_cast<size_t>(row)] = losses[b];
  }
}

const uint8_t* Sampler::RowPtr(bool fresh, int64_t row) const {
  return (fresh ? fresh_rows_.data() : pool_rows_.data()) + row * row_bytes_;
}

void Sampler::Retire(int64_t fresh_count) {
  const int64_t capacity = options_.capacity;
  const int64_t pool_share = capacity / 2;
  for (int64_t i = 0; i < fresh_count; ++i) {
    const uint8_t* src = RowPtr(true, fresh_head_);
    const int64_t label = fresh_labels_[fresh_head_];
    ++pool_seen_;
    const int64_t pool = pool_size();
    if (balanced_) {
      RetireBalanced(src, label, fresh_head_, !pressure_ || pool < pool_share);
    } else if (!pressure_ || pool < pool_share) {
      PoolPush(src, label);
    } else {
      // Algorithm R: keep the pool a uniform sample of every trained row.
      int64_t j = std::uniform_int_distribution<int64_t>(0, pool_seen_ - 1)(rng_);
      if (j < pool) {
        std::memcpy(&pool_rows_[j * row_bytes_], src, static_cast<size_t>(row_bytes_));
        pool_labels_[j] = label;
      }
    }
    ++fresh_head_;
  }
  const int64_t total = static_cast<int64_t>(fresh_labels_.size());
  if (fresh_head_ == total) {
    // Give the queue's memory back: after a large ingest it held every row,
    // and a cleared vector would keep those pages resident beside the pool.
    std::vector<uint8_t>().swap(fresh_rows_);
    std::vector<int64_t>().swap(fresh_labels_);
    fresh_head_ = 0;
  } else if (fresh_head_ >= kCompactMinRows && fresh_head_ >= total - fresh_head_) {
    CompactFresh();
  }
}

void Sampler::RetireBalanced(const uint8_t* src, int64_t label, int64_t fresh_row, bool room) {
  const auto cls = static_cast<size_t>(ClassOf(label));
  class_fresh_[cls]--;
  class_seen_[cls]++;
  bool keep = room;
  if (!room) {
    const auto& own = class_rows_[cls];
    const auto largest = static_cast<size_t>(LargestClass());
    if (own.size() < class_rows_[largest].size()) {
      EvictPoolRow();  // from the largest class: this one is below its share
      keep = true;
    } else {
      // Algorithm R within the class: its rows stay a uniform sample of it.
      const int64_t j = std::uniform_int_distribution<int64_t>(0, class_seen_[cls] - 1)(rng_);
      if (j < static_cast<int64_t>(own.size())) {
        PoolRemove(own[static_cast<size_t>(j)]);
        keep = true;
      }
    }
  }
  if (keep) PoolPush(src, label);
  const int64_t to = keep ? pool_size() - 1 : -1;
  for (size_t b = 0; b < picks_.size(); ++b) {
    if (picks_[b].first && picks_[b].second == fresh_row) pick_pool_[b] = to;
  }
}

bool Sampler::NextBatch(int64_t batch, float* x, int64_t* y) {
  if (!Pick(batch)) return false;
  const int64_t width = options_.shape.width;
  for (int64_t b = 0; b < batch; ++b) {
    const auto& [fresh, row] = picks_[static_cast<size_t>(b)];
    const uint8_t* src = RowPtr(fresh, row);
    float* dst = x + b * width;
    if (f32_) {
      std::memcpy(dst, src, static_cast<size_t>(row_bytes_));
    } else {
      U8RowToFloat(src, dst, width);
    }
    y[b] = fresh ? fresh_labels_[static_cast<size_t>(row)] : pool_labels_[static_cast<size_t>(row)];
  }
  Retire(picked_fresh_);
  return true;
}

bool Sampler::NextTokenBatch(int64_t batch, int64_t* tokens) {
  if (f32_) return false;  // text rows are bytes; a float store cannot be a text store
  if (!Pick(batch)) return false;
  const int64_t width = options_.shape.width;
  for (int64_t b = 0; b < batch; ++b) {
    const auto& [fresh, row] = picks_[static_cast<size_t>(b)];
    const uint8_t* src = RowPtr(fresh, row);
    int64_t* dst = tokens + b * width;
    for (int64_t i = 0; i < width; ++i) dst[i] = src[i];
  }
  Retire(picked_fresh_);
  return true;
}

}  // namespace mycel::data
