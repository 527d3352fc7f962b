#include "data/sampler.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::data {
namespace {

constexpr int64_t kWidth = 8;

// Row i: bytes 0..2 encode i, the rest a pattern; label i % 10.
Example Row(int64_t i) {
  Example e;
  e.label = i % 10;
  e.data.assign(kWidth, static_cast<char>(200));
  e.data[0] = static_cast<char>(i & 0xff);
  e.data[1] = static_cast<char>((i >> 8) & 0xff);
  e.data[2] = static_cast<char>((i >> 16) & 0xff);
  return e;
}

// Recovers i from the floats of a u8 row (scaled by 1/255).
int64_t IndexOfFloats(const float* x) {
  auto b = [&](int k) { return static_cast<int64_t>(std::lround(x[k] * 255.0f)); };
  return b(0) | b(1) << 8 | b(2) << 16;
}

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ExampleStoreOptions o;
    o.path = test::MakeTempDir() + "/s.db";
    o.validation_fraction = 0;  // every row is a train row
    auto s = ExampleStore::Open(o);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(s).value();
  }
  void AddRows(int64_t from, int64_t to) {
    std::vector<Example> v;
    for (int64_t i = from; i < to; ++i) v.push_back(Row(i));
    ASSERT_TRUE(store_->Add(v).ok());
  }
  static SamplerOptions Options(int64_t capacity = 100000, double replay = 0.5) {
    SamplerOptions o;
    o.shape.width = kWidth;
    o.shape.classes = 10;
    o.capacity = capacity;
    o.replay_fraction = replay;
    o.seed = 11;
    return o;
  }
  // Draws one batch and returns the row indices, checking labels against them.
  std::vector<int64_t> Draw(Sampler& s, int64_t batch) {
    std::vector<float> x(batch * kWidth);
    std::vector<int64_t> y(batch);
    EXPECT_TRUE(s.NextBatch(batch, x.data(), y.data()));
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < batch; ++b) {
      int64_t i = IndexOfFloats(&x[b * kWidth]);
      EXPECT_EQ(y[b], i % 10);
      EXPECT_FLOAT_EQ(x[b * kWidth + 5], 200.0f / 255.0f);
      ids.push_back(i);
    }
    return ids;
  }
  // Rows from..to-1 with the labels `label_of(i)` gives (byte 3 holds the
  // label too, so a drawn row's label can be checked against its bytes).
  template <typename LabelOf>
  void AddLabelled(int64_t from, int64_t to, LabelOf label_of) {
    std::vector<Example> v;
    for (int64_t i = from; i < to; ++i) {
      Example e = Row(i);
      e.label = label_of(i);
      e.data[3] = static_cast<char>(e.label);
      v.push_back(e);
    }
    ASSERT_TRUE(store_->Add(v).ok());
  }
  // Draws one batch of labelled rows: (index, label) per row, in batch order.
  static std::vector<std::pair<int64_t, int64_t>> DrawLabelled(Sampler& s, int64_t batch) {
    std::vector<float> x(batch * kWidth);
    std::vector<int64_t> y(batch);
    EXPECT_TRUE(s.NextBatch(batch, x.data(), y.data()));
    std::vector<std::pair<int64_t, int64_t>> rows;
    for (int64_t b = 0; b < batch; ++b) {
      EXPECT_EQ(y[b], std::lround(x[b * kWidth + 3] * 255.0f));
      rows.emplace_back(IndexOfFloats(&x[b * kWidth]), y[b]);
    }
    return rows;
  }
  // The trainer's loop until every stored row was loaded and trained fresh.
  static void TrainThrough(Sampler& s, ExampleStore& store, int64_t batch) {
    for (int step = 0; step < 100000; ++step) {
      ASSERT_TRUE(s.Refresh(store).ok());
      if (s.fresh() == 0) return;
      DrawLabelled(s, batch);
    }
    FAIL() << "fresh rows never drained";
  }
  // `steps` batches, loading more rows whenever the fresh ones run out. While
  // the store holds more than fits, the sampler is under memory pressure.
  static void TrainSteps(Sampler& s, ExampleStore& store, int64_t batch, int steps) {
    for (int step = 0; step < steps; ++step) {
      if (s.fresh() == 0) {
        ASSERT_TRUE(s.Refresh(store).ok());
      }
      DrawLabelled(s, batch);
    }
  }
  static SamplerOptions Balanced(int64_t capacity, double replay) {
    SamplerOptions o = Options(capacity, replay);
    o.pool = ReplayPool::kBalanced;
    return o;
  }
  std::unique_ptr<ExampleStore> store_;
};

TEST_F(SamplerTest, FreshRowsFirstInOrderThenMixedWithReplay) {
  AddRows(0, 100);
  Sampler s(Options());
  auto loaded = s.Refresh(*store_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(*loaded, 100);
  EXPECT_EQ(s.fresh(), 100);
  EXPECT_EQ(s.size(), 100);

  // Empty pool: the whole first batch is fresh, oldest first.
  auto first = Draw(s, 10);
  for (int64_t b = 0; b < 10; ++b) EXPECT_EQ(first[b], b);
  EXPECT_EQ(s.fresh(), 90);

  // Then half fresh (in order), half replay from rows already trained.
  int64_t next_fresh = 10;
  while (s.fresh() > 0) {
    std::set<int64_t> trained;
    for (int64_t i = 0; i < next_fresh; ++i) trained.insert(i);
    auto ids = Draw(s, 10);
    for (int64_t b = 0; b < 5; ++b) EXPECT_EQ(ids[b], next_fresh + b);
    for (int64_t b = 5; b < 10; ++b) EXPECT_TRUE(trained.count(ids[b])) << ids[b] << " not trained yet";
    next_fresh += 5;
  }
  EXPECT_EQ(next_fresh, 100);
  EXPECT_EQ(s.size(), 100);
  // Nothing fresh left: all replay, spread over the whole pool.
  std::set<int64_t> replayed;
  for (int k = 0; k < 100; ++k) {
    for (int64_t i : Draw(s, 10)) {
      EXPECT_LT(i, 100);
      replayed.insert(i);
    }
  }
  EXPECT_GT(replayed.size(), 95u);

  // New rows arrive: they are picked up and come first again.
  AddRows(100, 103);
  ASSERT_EQ(*s.Refresh(*store_), 3);
  ASSERT_EQ(*s.Refresh(*store_), 0);  // nothing new
  auto ids = Draw(s, 10);
  EXPECT_EQ(ids[0], 100);
  EXPECT_EQ(ids[1], 101);
  EXPECT_EQ(ids[2], 102);
  for (int64_t b = 3; b < 10; ++b) EXPECT_LT(ids[b], 100);
}

TEST_F(SamplerTest, ReplayFractionControlsTheMix) {
  AddRows(0, 1000);
  SamplerOptions o = Options(100000, 0.75);
  Sampler s(o);
  ASSERT_TRUE(s.Refresh(*store_).ok());
  Draw(s, 8);  // fills the pool a little
  EXPECT_EQ(s.fresh(), 992);
  Draw(s, 8);  // round(8 * 0.25) = 2 fresh
  EXPECT_EQ(s.fresh(), 990);
  SamplerOptions none = Options(100000, 0.0);
  Sampler t(none);
  ASSERT_TRUE(t.Refresh(*store_).ok());
  Draw(t, 8);
  Draw(t, 8);
  EXPECT_EQ(t.fresh(), 984);  // no replay: all fresh
  // All replay still trains new data: one fresh row a batch, so every new
  // example eventually reaches the model and the pool.
  SamplerOptions all = Options(100000, 1.0);
  Sampler u(all);
  ASSERT_TRUE(u.Refresh(*store_).ok());
  Draw(u, 8);
  Draw(u, 8);
  Draw(u, 8);
  EXPECT_EQ(u.fresh(), 1000 - 8 - 1 - 1);
}

TEST_F(SamplerTest, SmallStoreRepeatsRowsAndEmptyReturnsFalse) {
  Sampler s(Options());
  std::vector<float> x(16 * kWidth);
  std::vector<int64_t> y(16);
  EXPECT_FALSE(s.NextBatch(16, x.data(), y.data()));
  AddRows(0, 3);
  ASSERT_TRUE(s.Refresh(*store_).ok());
  auto ids = Draw(s, 16);
  for (int64_t b = 0; b < 3; ++b) EXPECT_EQ(ids[b], b);
  for (int64_t i : ids) EXPECT_LT(i, 3);
  EXPECT_EQ(s.fresh(), 0);
  EXPECT_EQ(s.size(), 3);
  ids = Draw(s, 16);  // replay only
  for (int64_t i : ids) EXPECT_LT(i, 3);
}

TEST_F(SamplerTest, EveryRowIsTrainedOnceAsFreshUnderACapacityBound) {
  AddRows(0, 2000);
  const int64_t capacity = 100;
  Sampler s(Options(capacity, 0.5));
  std::map<int64_t, int> fresh_count;
  int64_t loaded = 0;
  // The trainer's loop: refresh, then train.
  for (int step = 0; step < 2000 && (loaded < 2000 || s.fresh() > 0); ++step) {
    auto r = s.Refresh(*store_);
    ASSERT_TRUE(r.ok());
    loaded += *r;
    ASSERT_LE(s.size(), capacity);
    int64_t before = s.fresh();
    auto ids = Draw(s, 10);
    int64_t consumed = before - s.fresh();
    for (int64_t b = 0; b < consumed; ++b) fresh_count[ids[b]]++;
    ASSERT_LE(s.size(), capacity);
  }
  EXPECT_EQ(loaded, 2000);
  ASSERT_EQ(fresh_count.size(), 2000u);
  for (const auto& [id, n] : fresh_count) ASSERT_EQ(n, 1) << id;
  // The pool keeps about half the memory and samples all of history.
  std::set<int64_t> replay;
  for (int k = 0; k < 200; ++k) {
    for (int64_t i : Draw(s, 10)) replay.insert(i);
  }
  EXPECT_GE(replay.size(), 40u);
  int early = 0;
  for (int64_t i : replay) early += i < 1000;
  EXPECT_GT(early, 5);  // not just the newest rows
}

TEST_F(SamplerTest, ConsumedFreshRowsAreReleased) {
  AddRows(0, 5000);
  Sampler s(Options(100000, 0.0));
  ASSERT_TRUE(s.Refresh(*store_).ok());
  for (int k = 0; k < 400; ++k) Draw(s, 10);
  EXPECT_EQ(s.fresh(), 1000);
  EXPECT_EQ(s.size(), 5000);
  // Draining completely must still work (and leave the pool intact).
  for (int k = 0; k < 100; ++k) Draw(s, 10);
  EXPECT_EQ(s.fresh(), 0);
  EXPECT_EQ(s.size(), 5000);
  AddRows(5000, 5010);
  ASSERT_EQ(*s.Refresh(*store_), 10);
  auto ids = Draw(s, 10);
  for (int64_t b = 0; b < 10; ++b) EXPECT_EQ(ids[b], 5000 + b);
}

TEST_F(SamplerTest, PromotesToFloatWhenAFloatRowArrives) {
  AddRows(0, 2);
  Example f;
  f.label = 7;
  f.dtype = DType::kF32;
  const float values[kWidth] = {-1.5f, 2.25f, 1e6f, 0.f, 3.f, 4.f, 5.f, 6.f};
  for (float v : values) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int k = 0; k < 4; ++k) f.data.push_back(static_cast<char>(bits >> (8 * k)));  // little-endian
  }
  ASSERT_TRUE(store_->Add({f}).ok());
  AddRows(2, 3);  // a u8 row after the promotion
  Sampler s(Options(100000, 0.5));
  ASSERT_EQ(*s.Refresh(*store_), 4);
  std::vector<float> x(4 * kWidth);
  std::vector<int64_t> y(4);
  ASSERT_TRUE(s.NextBatch(4, x.data(), y.data()));
  EXPECT_EQ(IndexOfFloats(&x[0]), 0);
  EXPECT_EQ(IndexOfFloats(&x[kWidth]), 1);
  EXPECT_FLOAT_EQ(x[kWidth + 7], 200.0f / 255.0f);
  for (int i = 0; i < kWidth; ++i) EXPECT_EQ(x[2 * kWidth + i], values[i]);
  EXPECT_EQ(y[2], 7);
  EXPECT_EQ(IndexOfFloats(&x[3 * kWidth]), 2);
  // A float store has no token batches.
  std::vector<int64_t> tokens(kWidth);
  EXPECT_FALSE(s.NextTokenBatch(1, tokens.data()));
}

TEST_F(SamplerTest, SkipsRowsThatDoNotFitTheModel) {
  AddRows(0, 5);
  Example wide = Row(99);
  wide.data += "xx";
  Example bad_label = Row(98);
  bad_label.label = 10;
  ASSERT_TRUE(store_->Add({wide, bad_label}).ok());
  AddRows(5, 7);
  Sampler s(Options());
  EXPECT_EQ(*s.Refresh(*store_), 7);
}

TEST_F(SamplerTest, BalancedPoolKeepsEqualClassSharesUnderASkewedStream) {
  // 90% class 0, the rest spread over classes 1-9, into a pool of about 100
  // rows. Fresh rows take at most a class's share of a batch, 50 / 10
  // classes, so a batch of 50 trains about 5.5 of them (10 for the uniform
  // pool's 5): 600 batches train about 3300 of the 4000 rows (3000), and
  // memory stays full throughout (about 35 rows of each rare class so far).
  AddLabelled(0, 4000, [](int64_t i) { return i % 10 == 0 ? 1 + (i / 10) % 9 : 0; });
  Sampler b(Balanced(200, 0.5));
  TrainSteps(b, *store_, 50, 600);
  int64_t lo = 1 << 30, hi = 0;
  for (int64_t c = 0; c < 10; ++c) {
    lo = std::min(lo, b.pool_rows_of(c));
    hi = std::max(hi, b.pool_rows_of(c));
  }
  EXPECT_GE(lo, 9);
  EXPECT_LE(hi - lo, 1) << "classes hold " << lo << " to " << hi << " rows";
  // The uniform pool mirrors the stream: class 0 takes most of it.
  Sampler u(Options(200, 0.5));
  TrainSteps(u, *store_, 10, 600);
  EXPECT_GT(u.pool_rows_of(0), 70);
  // Replay fills each batch class by class: fresh rows (mostly class 0) up to
  // a class's share of 20 / 10 classes, the rest from the others.
  std::map<int64_t, int> drawn;
  for (int k = 0; k < 100; ++k) {
    for (const auto& [id, label] : DrawLabelled(b, 20)) drawn[label]++;
  }
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(drawn[c], 200) << "class " << c;
}

TEST_F(SamplerTest, BalancedPoolReplaysHighLossRowsMoreOften) {
  // One class, so only the weighting within a class is at work. Rows 0-9
  // keep a high loss, the others a low one, reported after every batch as
  // the trainer does.
  AddLabelled(0, 100, [](int64_t) { return 4; });
  Sampler s(Balanced(100000, 0.5));
  ASSERT_TRUE(s.wants_losses());
  ASSERT_TRUE(s.Refresh(*store_).ok());
  int64_t hard = 0, total = 0;
  for (int k = 0; k < 600; ++k) {
    const bool fresh_left = s.fresh() > 0;
    auto rows = DrawLabelled(s, 10);
    std::vector<float> losses;
    for (const auto& [id, label] : rows) {
      losses.push_back(id < 10 ? 3.0f : 0.5f);
      if (!fresh_left) {
        hard += id < 10;
        total++;
      }
    }
    s.ReportLosses(losses.data(), static_cast<int64_t>(losses.size()));
  }
  ASSERT_GT(total, 4000);
  // Uniform replay would draw them 10% of the time; the better of two
  // random rows is one of them 1 - 0.9^2 = 19% of the time.
  const double share = static_cast<double>(hard) / static_cast<double>(total);
  EXPECT_GT(share, 0.15);
  EXPECT_LT(share, 0.24);
  // A uniform pool takes no losses.
  EXPECT_FALSE(Sampler(Options()).wants_losses());
}

TEST_F(SamplerTest, BalancedPoolGivesALateClassItsShareOfEachBatch) {
  // Classes 0-4 for a long while, then 100 rows of class 9.
  AddLabelled(0, 2000, [](int64_t i) { return i % 5; });
  Sampler b(Balanced(100000, 0.5));
  Sampler u(Options(100000, 0.5));
  TrainThrough(b, *store_, 60);
  TrainThrough(u, *store_, 60);
  AddLabelled(2000, 2100, [](int64_t) { return 9; });
  ASSERT_EQ(*b.Refresh(*store_), 100);
  ASSERT_EQ(*u.Refresh(*store_), 100);
  // While its rows are fresh they take their share of a batch (60 / 6
  // classes), not all of the fresh half, and every class is in each batch.
  for (int k = 0; k < 3; ++k) {
    std::map<int64_t, int> in_batch;
    for (const auto& [id, label] : DrawLabelled(b, 60)) in_batch[label]++;
    for (int64_t c : {0, 1, 2, 3, 4, 9}) EXPECT_EQ(in_batch[c], 10) << "class " << c << " batch " << k;
  }
  std::map<int64_t, int> uniform_batch;
  for (const auto& [id, label] : DrawLabelled(u, 60)) uniform_batch[label]++;
  EXPECT_EQ(uniform_batch[9], 30);
}

TEST_F(SamplerTest, BalancedPoolGivesALateClassItsShareOfMemory) {
  // Under memory pressure (a pool of about 100 rows) the stream holds
  // classes 0-4, then 100 rows of class 9, then classes 0-4 again; 700
  // batches train about 3500 of its 4000 rows.
  AddLabelled(0, 2000, [](int64_t i) { return i % 5; });
  AddLabelled(2000, 2100, [](int64_t) { return 9; });
  AddLabelled(2100, 4000, [](int64_t i) { return i % 5; });
  Sampler b(Balanced(200, 0.5));
  Sampler u(Options(200, 0.5));
  TrainSteps(b, *store_, 10, 700);
  TrainSteps(u, *store_, 10, 700);
  // An equal share, about 100 / 6 rows, kept after the class stopped coming;
  // a uniform pool keeps its share of the stream, about 100 * 100 / 3500.
  EXPECT_GE(b.pool_rows_of(9), 15);
  EXPECT_LE(u.pool_rows_of(9), 8);
}

TEST(Sampler, OnlyTrainRowsAreLoaded) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/v.db";
  o.validation_fraction = 0.5;
  auto store = ExampleStore::Open(o);
  ASSERT_TRUE(store.ok());
  std::vector<Example> v;
  for (int64_t i = 0; i < 400; ++i) v.push_back(Row(i));
  ASSERT_TRUE((*store)->Add(v).ok());
  SamplerOptions so;
  so.shape.width = kWidth;
  Sampler s(so);
  ASSERT_TRUE(s.Refresh(**store).ok());
  EXPECT_EQ(s.size(), (*store)->Count(Split::kTrain));
  EXPECT_LT(s.size(), 300);
  std::vector<float> x(s.size() * kWidth);
  std::vector<int64_t> y(s.size());
  ASSERT_TRUE(s.NextBatch(s.size(), x.data(), y.data()));
  for (int64_t b = 0; b < s.size(); ++b) {
    EXPECT_EQ(ExampleStore::SplitOf(Row(IndexOfFloats(&x[b * kWidth])), 0.5), Split::kTrain);
  }
}

TEST(Sampler, TokenBatchesAreUnsignedBytes) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/t.db";
  o.validation_fraction = 0;
  auto store = ExampleStore::Open(o);
  ASSERT_TRUE(store.ok());
  std::vector<Example> v(2);
  v[0].data = "h\xC3\xA9llo";  // "héllo": bytes 195 and 169 must not come out negative
  v[1].data = "world!";
  ASSERT_TRUE((*store)->Add(v).ok());
  SamplerOptions so;
  so.shape.text = true;
  so.shape.width = 6;
  Sampler s(so);
  ASSERT_EQ(*s.Refresh(**store), 2);
  std::vector<int64_t> tokens(12, -7);
  ASSERT_TRUE(s.NextTokenBatch(2, tokens.data()));
  std::vector<int64_t> want = {'h', 195, 169, 'l', 'l', 'o', 'w', 'o', 'r', 'l', 'd', '!'};
  EXPECT_EQ(tokens, want);
}

}  // namespace
}  // namespace mycel::data
