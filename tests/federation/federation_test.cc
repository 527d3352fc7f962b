#include "federation/federation.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pull_answers.h"

namespace mycel::federation {
namespace {

std::unique_ptr<Federation> Make(std::vector<float> initial, int peers, int32_t degree,
                                 FederationOptions opts = PlainGossip()) {
  auto f = Federation::Create(opts, std::move(initial), peers, degree);
  EXPECT_TRUE(f.ok()) << f.status();
  return std::move(f).value();
}

// One pull as the peer module does it: ask `from` for everything after our
// cursor for mirror `peer`, apply what it answers.
absl::Status Pull(const Federation& from, Federation& to, int peer) {
  auto [epoch, after] = to.Cursor(peer);
  return to.Apply(peer, from.Answer(epoch, after));
}

std::vector<float> RandomVector(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// ---------------------------------------------------------------- creation

// One owner for the merge's options: the defaults a user gets are valid, and
// a bad value names the key the config file spells, both through CheckOptions
// (which the config reader maps to file:line) and through Create.
TEST(Federation, CheckOptionsNamesTheKeyAndCreateAgrees) {
  EXPECT_FALSE(CheckOptions(FederationOptions{}).has_value());
  EXPECT_FALSE(CheckOptions(PlainGossip()).has_value());
  EXPECT_GT(FederationOptions{}.drift_correction, 0);  // the product's default corrects drift
  struct Case {
    void (*spoil)(FederationOptions*);
    const char* key;
  };
  const Case cases[] = {
      {[](FederationOptions* o) { o->merge = "mean"; }, "merge"},
      {[](FederationOptions* o) { o->mixing = 0; }, "mixing"},
      {[](FederationOptions* o) { o->mixing = std::nan(""); }, "mixing"},
      {[](FederationOptions* o) { o->drift_correction = 1; }, "drift_correction"},
      {[](FederationOptions* o) { o->codec = "zip"; }, "codec"},
      {[](FederationOptions* o) { o->max_stale_rounds = -1; }, "max_stale_rounds"},
      {[](FederationOptions* o) { o->robust = "krum"; }, "robust"},
      {[](FederationOptions* o) { o->max_delta_norm = HUGE_VAL; }, "max_delta_norm"},
      {[](FederationOptions* o) { o->trust_tolerance = 0; }, "trust_tolerance"},
      {[](FederationOptions* o) { o->trust = true; o->robust = "median"; }, "trust"},
  };
  for (const Case& c : cases) {
    FederationOptions o;
    c.spoil(&o);
    std::optional<OptionProblem> p = CheckOptions(o);
    ASSERT_TRUE(p.has_value()) << c.key;
    EXPECT_EQ(p->key, c.key);
    auto f = Federation::Create(o, {0, 0}, 1, 1);
    ASSERT_FALSE(f.ok()) << c.key;
    EXPECT_EQ(f.status().message(), "federation." + p->key + ": " + p->why);
  }
}

TEST(Federation, CreateValidatesOptions) {
  FederationOptions o = PlainGossip();
  o.merge = "median";
  EXPECT_FALSE(Federation::Create(o, {1, 2}, 1, 1).ok());
  o = {};
  o.mixing = 0;
  EXPECT_FALSE(Federation::Create(o, {1, 2}, 1, 1).ok());
  o = {};
  o.codec = "int3";
  EXPECT_FALSE(Federation::Create(o, {1, 2}, 1, 1).ok());
  EXPECT_FALSE(Federation::Create({}, {1, NAN}, 1, 1).ok());
  auto f = Make({1, 2, 3}, 2, 2);
  EXPECT_EQ(f->size(), 3u);
  EXPECT_NE(f->epoch(), 0u);
  EXPECT_EQ(f->seq(), 0u);
  EXPECT_EQ(f->public_copy(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(f->Cursor(0), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_NE(Make({1}, 0, 0)->epoch(), f->epoch());  // random per node (2^-64 flake)
}

// ---------------------------------------------------------------- merge arithmetic

// Node with x̂ = [1, 2, 3], 10 samples trained, degree 3, three peers: peer 0
// mirrors [2, 0, 4] (degree 1, 30 samples), peer 1 mirrors [0, 6, 3] (degree 5,
// 60 samples), peer 2 never answered. Live weights x = [1.5, 2, 2] differ from
// x̂ (a lossy codec's unsent residual) so a merge against x̂ instead of x shows.
std::unique_ptr<Federation> HandNode(const FederationOptions& opts, int64_t n_self,
                                     int64_t n0, int64_t n1) {
  auto f = Make({0, 0, 0}, 3, 3, opts);
  std::vector<float> xhat = {1, 2, 3};
  f->Publish(xhat.data(), n_self);
  EXPECT_EQ(f->public_copy(), xhat);
  EXPECT_TRUE(f->Apply(0, Keyframe({2, 0, 4}, n0, 1)).ok());
  EXPECT_TRUE(f->Apply(1, Keyframe({0, 6, 3}, n1, 5)).ok());
  return f;
}

TEST(Merge, MetropolisMatchesHandComputation) {
  FederationOptions o = PlainGossip();
  o.merge = "metropolis";
  o.mixing = 0.5;
  auto f = HandNode(o, 10, 30, 60);
  std::vector<float> x = {1.5f, 2.0f, 2.0f};
  // w0 = 1/(1+max(3,1)) = 1/4, w1 = 1/(1+max(3,5)) = 1/6; m0−x = [½,−2,2], m1−x = [−3/2,4,1]
  // x += 0.5·(¼·[½,−2,2] + ⅙·[−3/2,4,1]) = [−1/16, 1/12, 1/3]
  EXPECT_EQ(f->Merge(x.data()), 2);  // the silent peer 2 takes no part
  EXPECT_NEAR(x[0], 1.5 - 1.0 / 16, 1e-6);
  EXPECT_NEAR(x[1], 2.0 + 1.0 / 12, 1e-6);
  EXPECT_NEAR(x[2], 2.0 + 1.0 / 3, 1e-6);
}

TEST(Merge, FedAvgMatchesHandComputation) {
  FederationOptions o = PlainGossip();
  o.merge = "fedavg";
  o.mixing = 0.5;
  auto f = HandNode(o, 10, 30, 60);
  std::vector<float> x = {1.5f, 2.0f, 2.0f};
  // w0 = 30/100, w1 = 60/100; x += 0.5·(0.3·[½,−2,2] + 0.6·[−3/2,4,1]) = [−0.375, 0.9, 0.6]
  EXPECT_EQ(f->Merge(x.data()), 2);
  EXPECT_NEAR(x[0], 1.125, 1e-6);
  EXPECT_NEAR(x[1], 2.9, 1e-6);
  EXPECT_NEAR(x[2], 2.6, 1e-6);
}

TEST(Merge, FedAvgIsUniformWhileNobodyTrained) {
  FederationOptions o = PlainGossip();
  o.merge = "fedavg";
  o.mixing = 0.5;
  auto f = HandNode(o, 0, 0, 0);
  std::vector<float> x = {1.5f, 2.0f, 2.0f};
  // w = 1/(3+1); x += 0.5·¼·([½,−2,2] + [−3/2,4,1]) = [−0.125, 0.25, 0.375]
  EXPECT_EQ(f->Merge(x.data()), 2);
  EXPECT_NEAR(x[0], 1.375, 1e-6);
  EXPECT_NEAR(x[1], 2.25, 1e-6);
  EXPECT_NEAR(x[2], 2.375, 1e-6);
}

TEST(Merge, MetropolisTreatsReportedDegreeZeroAsOne) {
  FederationOptions o = PlainGossip();
  o.mixing = 1.0;
  auto f = Make({0, 0}, 1, 0, o);  // we report degree 0 too: floor is the participant count
  ASSERT_TRUE(f->Apply(0, Keyframe({4, -2}, 0, 0)).ok());
  std::vector<float> x = {0, 0};
  EXPECT_EQ(f->Merge(x.data()), 1);
  // w = 1/(1+max(1,1)) = ½
  EXPECT_FLOAT_EQ(x[0], 2.0f);
  EXPECT_FLOAT_EQ(x[1], -1.0f);
}

TEST(Merge, GammaOneUniformLosslessIsNeighbourhoodAveraging) {
  FederationOptions o = PlainGossip();
  o.merge = "metropolis";
  o.mixing = 1.0;
  auto f = Make({0, 0, 0}, 2, 2, o);
  std::vector<float> x = {3, 6, 9};
  f->Publish(x.data(), 0);
  ASSERT_TRUE(f->Apply(0, Keyframe({0, 0, 3}, 0, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({6, 3, 0}, 0, 2)).ok());
  EXPECT_EQ(f->Merge(x.data()), 2);
  EXPECT_FLOAT_EQ(x[0], 3.0f);  // (3+0+6)/3
  EXPECT_FLOAT_EQ(x[1], 3.0f);  // (6+0+3)/3
  EXPECT_FLOAT_EQ(x[2], 4.0f);  // (9+3+0)/3
}

TEST(Merge, NothingMirroredChangesNothing) {
  auto f = Make({1, 2}, 2, 2);
  std::vector<float> x = {5, 6};
  EXPECT_EQ(f->Merge(x.data()), 0);
  EXPECT_EQ(x, (std::vector<float>{5, 6}));
}

// ---------------------------------------------------------------- publish / answer / apply

TEST(Gossip, MirrorTracksPublicCopyExactlyThroughDeltasAndKeyframes) {
  std::mt19937 rng(1);
  const size_t n = 7;
  FederationOptions small_log = PlainGossip();
  // One dense_f32 delta of 7 values is 12 + 28 = 40 bytes: the log holds one.
  small_log.max_log_bytes = 50;
  auto a = Make(std::vector<float>(n, 0.25f), 1, 1);
  auto b = Make(std::vector<float>(n, 0.25f), 1, 1);

  // First pull: nothing mirrored yet → keyframe of the initial weights.
  ASSERT_TRUE(Pull(*a, *b, 0).ok());
  EXPECT_EQ(b->mirror(0), a->public_copy());
  EXPECT_EQ(b->mirror_stats(0).keyframes_applied, 1);

  // A reader that keeps up gets one delta per round.
  for (int i = 0; i < 3; ++i) {
    auto x = RandomVector(rng, n);
    a->Publish(x.data(), 100 * (i + 1));
    PullAnswer one = a->Answer(a->epoch(), static_cast<uint64_t>(i));
    EXPECT_FALSE(one.keyframe);
    EXPECT_EQ(one.deltas.size(), 1u);
    ASSERT_TRUE(Pull(*a, *b, 0).ok());
  }
  EXPECT_EQ(a->seq(), 3u);
  // A reader three dense deltas behind is served one keyframe instead: the
  // same public copy for a third of the bytes.
  PullAnswer behind = a->Answer(a->epoch(), 0);
  EXPECT_TRUE(behind.keyframe);
  EXPECT_EQ(behind.public_copy, a->public_copy());
  EXPECT_EQ(b->mirror(0), a->public_copy());  // bit for bit
  PullAnswer ans;
  MirrorStats st = b->mirror_stats(0);
  EXPECT_EQ(st.deltas_applied, 3);
  EXPECT_EQ(st.keyframes_applied, 1);
  EXPECT_EQ(st.epoch, a->epoch());
  EXPECT_EQ(st.seq, 3u);
  EXPECT_EQ(st.samples_trained, 300);
  EXPECT_EQ(st.degree, 1);
  EXPECT_EQ(b->Cursor(0), (std::pair<uint64_t, uint64_t>{a->epoch(), 3}));

  // Up to date: an empty answer, not a keyframe.
  ans = a->Answer(a->epoch(), 3);
  EXPECT_FALSE(ans.keyframe);
  EXPECT_TRUE(ans.deltas.empty());
  EXPECT_EQ(ans.from_seq, 3u);
  EXPECT_EQ(ans.to_seq, 3u);
  ASSERT_TRUE(b->Apply(0, ans).ok());
  EXPECT_EQ(b->mirror_stats(0).deltas_applied, 3);

  // A reader claiming a seq we never published, or another epoch: keyframe.
  EXPECT_TRUE(a->Answer(a->epoch(), 4).keyframe);
  EXPECT_TRUE(a->Answer(a->epoch() + 1, 3).keyframe);
  EXPECT_TRUE(a->Answer(0, 0).keyframe);
  EXPECT_EQ(a->Answer(0, 0).public_copy, a->public_copy());

  // A node whose log holds only the newest delta.
  auto c = Make(std::vector<float>(n, 0.25f), 1, 1, small_log);
  auto d = Make(std::vector<float>(n, 0.25f), 1, 1);
  for (int i = 0; i < 3; ++i) {
    auto x = RandomVector(rng, n);
    c->Publish(x.data(), 0);
  }
  ASSERT_TRUE(Pull(*c, *d, 0).ok());  // keyframe at seq 3
  for (int i = 0; i < 2; ++i) {
    auto x = RandomVector(rng, n);
    c->Publish(x.data(), 0);
  }
  EXPECT_TRUE(c->Answer(c->epoch(), 3).keyframe);  // seq 4 fell out of the log
  ASSERT_TRUE(Pull(*c, *d, 0).ok());
  EXPECT_EQ(d->mirror(0), c->public_copy());
  EXPECT_EQ(d->mirror_stats(0).keyframes_applied, 2);
  EXPECT_EQ(d->mirror_stats(0).seq, 5u);
  auto x = RandomVector(rng, n);
  c->Publish(x.data(), 0);
  ans = c->Answer(c->epoch(), 5);  // exactly the one delta the log still holds
  EXPECT_FALSE(ans.keyframe);
  ASSERT_EQ(ans.deltas.size(), 1u);
  ASSERT_TRUE(d->Apply(0, ans).ok());
  EXPECT_EQ(d->mirror(0), c->public_copy());
  EXPECT_EQ(d->mirror_stats(0).deltas_applied, 1);
}

TEST(Gossip, ZeroLogBoundAlwaysServesKeyframes) {
  FederationOptions o = PlainGossip();
  o.max_log_bytes = 0;
  auto a = Make({1, 2}, 1, 1, o);
  auto b = Make({1, 2}, 1, 1);
  std::vector<float> x = {3, 4};
  a->Publish(x.data(), 0);
  ASSERT_TRUE(Pull(*a, *b, 0).ok());
  a->Publish(x.data(), 0);
  EXPECT_TRUE(a->Answer(a->epoch(), 1).keyframe);
  ASSERT_TRUE(Pull(*a, *b, 0).ok());
  EXPECT_EQ(b->mirror(0), a->public_copy());
}

// Fixture for refusals: b mirrors a at seq 2; `next` answers seq 3..4.
class Refusal : public ::testing::Test {
 protected:
  void SetUp() override {
    FederationOptions o = PlainGossip();
    o.max_delta_norm = 100;
    o.max_keyframe_norm = 1000;
    a_ = Make({0, 0, 0}, 1, 1, o);
    b_ = Make({0, 0, 0}, 1, 1, o);
    Step({1, 1, 1});
    Step({2, 2, 2});
    ASSERT_TRUE(Pull(*a_, *b_, 0).ok());
    before_ = b_->mirror(0);
    stats_before_ = b_->mirror_stats(0);
    Step({3, 3, 3});
    Step({4, 4, 4});
    next_ = a_->Answer(a_->epoch(), 2);
    ASSERT_EQ(next_.deltas.size(), 2u);
  }
  void Step(std::vector<float> x) { a_->Publish(x.data(), 5); }

  // The answer is refused for `reason`, counted, and the mirror is untouched.
  void ExpectRefused(const PullAnswer& ans, const std::string& reason) {
    absl::Status st = b_->Apply(0, ans);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(StartsWith(std::string(st.message()), reason)) << st.message();
    MirrorStats s = b_->mirror_stats(0);
    EXPECT_EQ(s.refused, stats_before_.refused + 1);
    EXPECT_TRUE(StartsWith(s.last_refusal, reason)) << s.last_refusal;
    EXPECT_EQ(s.epoch, stats_before_.epoch);
    EXPECT_EQ(s.seq, stats_before_.seq);
    EXPECT_EQ(s.samples_trained, stats_before_.samples_trained);
    EXPECT_EQ(s.degree, stats_before_.degree);
    EXPECT_EQ(s.deltas_applied, stats_before_.deltas_applied);
    EXPECT_EQ(s.keyframes_applied, stats_before_.keyframes_applied);
    EXPECT_EQ(b_->mirror(0), before_);
    stats_before_.refused = s.refused;
  }

  std::string Encode(std::vector<float> v) {
    return MakeCodec("dense_f32").value()->Encode(v.data(), v.size());
  }

  std::unique_ptr<Federation> a_, b_;
  std::vector<float> before_;
  MirrorStats stats_before_;
  PullAnswer next_;
};

TEST_F(Refusal, OutOfOrderDeltas) {
  PullAnswer stale = a_->Answer(a_->epoch(), 1);  // starts before our cursor
  ExpectRefused(stale, "out_of_order");
  PullAnswer ahead = next_;
  ahead.from_seq = 3;
  ahead.to_seq = 5;
  ExpectRefused(ahead, "out_of_order");
  PullAnswer other_epoch = next_;
  other_epoch.epoch ^= 1;
  ExpectRefused(other_epoch, "out_of_order");
  PullAnswer old_keyframe = a_->Answer(0, 0);
  old_keyframe.to_seq = 1;  // same epoch, behind the mirror: a replay
  ExpectRefused(old_keyframe, "out_of_order");
  // Deltas to a mirror that never had a keyframe.
  auto fresh = Make({0, 0, 0}, 1, 1);
  EXPECT_FALSE(fresh->Apply(0, next_).ok());
  EXPECT_FALSE(fresh->mirror_stats(0).initialized);
  EXPECT_TRUE(StartsWith(fresh->mirror_stats(0).last_refusal, "out_of_order"));
  // The right answer still applies afterwards.
  ASSERT_TRUE(b_->Apply(0, next_).ok());
  EXPECT_EQ(b_->mirror(0), a_->public_copy());
  // Replaying it is now out of order.
  stats_before_ = b_->mirror_stats(0);
  before_ = b_->mirror(0);
  ExpectRefused(next_, "out_of_order");
}

TEST_F(Refusal, SeqRangeThatDoesNotMatchTheDeltas) {
  PullAnswer bad = next_;
  bad.to_seq = 5;
  ExpectRefused(bad, "bad_seq");
  bad = next_;
  bad.deltas.pop_back();
  ExpectRefused(bad, "bad_seq");
}

TEST_F(Refusal, WrongSize) {
  PullAnswer bad = next_;
  bad.deltas[0] = Encode({1, 1, 1, 1});
  ExpectRefused(bad, "bad_shape");
  bad = next_;
  bad.deltas[1] = bad.deltas[1].substr(0, bad.deltas[1].size() - 2);
  ExpectRefused(bad, "bad_shape");
  ExpectRefused(Keyframe({1, 2}, 0, 1), "bad_shape");
  ExpectRefused(Keyframe({1, 2, 3, 4}, 0, 1), "bad_shape");
}

TEST_F(Refusal, NonFinite) {
  PullAnswer bad = next_;
  bad.deltas[1] = Encode({0, std::numeric_limits<float>::quiet_NaN(), 0});
  ExpectRefused(bad, "non_finite");  // and the valid first delta was not applied
  ExpectRefused(Keyframe({1, std::numeric_limits<float>::infinity(), 3}, 0, 1), "non_finite");
}

TEST_F(Refusal, NormBound) {
  PullAnswer bad = next_;
  bad.deltas[1] = Encode({0, 101, 0});  // > max_delta_norm = 100
  ExpectRefused(bad, "norm_bound");
  ExpectRefused(Keyframe({600, 600, 600}, 0, 1), "norm_bound");  // ≈ 1039 > 1000
  bad = next_;
  bad.deltas[1] = Encode({0, 99, 0});  // inside the bound: fine
  EXPECT_TRUE(b_->Apply(0, bad).ok());
}

TEST_F(Refusal, UnknownCodecBadEpochAndCounts) {
  PullAnswer bad = next_;
  bad.codec = "zip_block";
  ExpectRefused(bad, "unknown_codec");
  bad = next_;
  bad.codec = "int8";  // a codec we know, but the payload is dense_f32
  ExpectRefused(bad, "bad_shape");
  bad = next_;
  bad.epoch = 0;
  ExpectRefused(bad, "bad_epoch");
  ExpectRefused(Keyframe({1, 2, 3}, 0, 1, /*epoch=*/0), "bad_epoch");
  bad = next_;
  bad.samples_trained = -1;
  ExpectRefused(bad, "bad_counts");
  ExpectRefused(Keyframe({1, 2, 3}, 0, -2), "bad_counts");
}

TEST_F(Refusal, PeerOutOfRange) {
  EXPECT_FALSE(b_->Apply(1, next_).ok());
  EXPECT_FALSE(b_->Apply(-1, next_).ok());
  EXPECT_EQ(b_->mirror_stats(0).refused, 0);
}

// ---------------------------------------------------------------- convergence

// Five nodes on a ring, fixed different x, no training: Publish → pull from
// both ring neighbours → Merge (Metropolis, γ = 1). With CHOCO bookkeeping
// right, every x reaches the global average.
TEST(Gossip, RingConvergesToTheGlobalAverage) {
  const int kNodes = 5;
  const size_t n = 16;
  std::mt19937 rng(7);
  FederationOptions o = PlainGossip();
  o.merge = "metropolis";
  o.mixing = 1.0;
  std::vector<std::unique_ptr<Federation>> nodes;
  std::vector<std::vector<float>> x;
  std::vector<double> avg(n, 0.0);
  for (int i = 0; i < kNodes; ++i) {
    nodes.push_back(Make(std::vector<float>(n, 0.0f), 2, 2, o));
    x.push_back(RandomVector(rng, n, 3.0f));
    for (size_t k = 0; k < n; ++k) avg[k] += x[i][k] / kNodes;
  }
  auto left = [&](int i) { return (i + kNodes - 1) % kNodes; };
  auto right = [&](int i) { return (i + 1) % kNodes; };
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < kNodes; ++i) nodes[i]->Publish(x[i].data(), 0);
    for (int i = 0; i < kNodes; ++i) {
      ASSERT_TRUE(Pull(*nodes[left(i)], *nodes[i], 0).ok());
      ASSERT_TRUE(Pull(*nodes[right(i)], *nodes[i], 1).ok());
    }
    for (int i = 0; i < kNodes; ++i) ASSERT_EQ(nodes[i]->Merge(x[i].data()), 2);
  }
  for (int i = 0; i < kNodes; ++i) {
    for (size_t k = 0; k < n; ++k) EXPECT_NEAR(x[i][k], avg[k], 1e-4) << i << "," << k;
    // After the first keyframe every pull was a delta.
    EXPECT_EQ(nodes[i]->mirror_stats(0).keyframes_applied, 1);
    EXPECT_EQ(nodes[i]->mirror_stats(0).deltas_applied, 99);
  }
}

// ---------------------------------------------------------------- drift correction

FederationOptions Corrected(double beta) {
  FederationOptions o = PlainGossip();
  o.merge = "metropolis";
  o.mixing = 1.0;
  o.drift_correction = beta;
  return o;
}

TEST(DriftCorrection, CreateRefusesBetaOfOneOrMore) {
  EXPECT_FALSE(Federation::Create(Corrected(1.0), {1, 2}, 1, 1).ok());
  EXPECT_FALSE(Federation::Create(Corrected(-0.1), {1, 2}, 1, 1).ok());
  EXPECT_TRUE(Federation::Create(Corrected(0.99), {1, 2}, 1, 1).ok());
}

// What the trainer does with c over a round (Trainer::WithSharedParameters):
// adds all of it to x before the round's publish.
void AddCorrection(const Federation& f, std::vector<float>* x) {
  const std::vector<float> c = f.correction();
  for (size_t k = 0; k < c.size(); ++k) (*x)[k] += c[k];
}

// One neighbour (w = 1/(1+max(1,1)) = ½), β = ½, one parameter:
//   publish x = 1 (c = 0) → x stays 1; neighbour at 3: d = ½(3−1) = 1 → x = 2, c = ½(0+1) = ½
//   a step moves x to 2.5, plus c → 3; publish (x̂ = 3); neighbour at 4: d = ½(4−3) = ½
//   → x = 3.5, c = ½(½+½) = ½
TEST(DriftCorrection, MatchesHandComputation) {
  auto f = Make({0}, 1, 1, Corrected(0.5));
  std::vector<float> x = {1};
  AddCorrection(*f, &x);
  f->Publish(x.data(), 1);
  EXPECT_EQ(x, std::vector<float>{1});
  ASSERT_TRUE(f->Apply(0, Keyframe({3}, 1, 1)).ok());
  ASSERT_EQ(f->Merge(x.data()), 1);
  EXPECT_EQ(x, std::vector<float>{2});
  EXPECT_EQ(f->correction(), std::vector<float>{0.5f});
  x[0] = 2.5f;
  AddCorrection(*f, &x);
  f->Publish(x.data(), 2);
  EXPECT_EQ(x, std::vector<float>{3});
  EXPECT_EQ(f->public_copy(), std::vector<float>{3});  // neighbours see the corrected weights
  ASSERT_TRUE(f->Apply(0, Keyframe({4}, 2, 1, /*epoch=*/8)).ok());
  ASSERT_EQ(f->Merge(x.data()), 1);
  EXPECT_EQ(x, std::vector<float>{3.5f});
  EXPECT_EQ(f->correction(), std::vector<float>{0.5f});
}

TEST(DriftCorrection, OffLeavesNoCorrection) {
  auto f = Make({0, 0}, 1, 1, Corrected(0.0));
  std::vector<float> x = {1, 2};
  f->Publish(x.data(), 1);
  EXPECT_EQ(f->public_copy(), (std::vector<float>{1, 2}));
  ASSERT_TRUE(f->Apply(0, Keyframe({3, 2}, 1, 1)).ok());
  ASSERT_EQ(f->Merge(x.data()), 1);
  EXPECT_EQ(x, (std::vector<float>{2, 2}));
  EXPECT_TRUE(f->correction().empty());
}

// A neighbour that stops answering (asleep, gone) leaves a frozen mirror;
// after max_stale_rounds merges without a refresh it takes no part, and a
// successful pull, even one with nothing new, brings it back.
TEST(Merge, AMirrorNotRefreshedForMaxStaleRoundsTakesNoPart) {
  FederationOptions o = PlainGossip();
  o.max_stale_rounds = 2;
  auto a = Make({0}, 1, 1, o);
  auto b = Make({0}, 1, 1, o);
  std::vector<float> xb = {4};
  b->Publish(xb.data(), 1);
  ASSERT_TRUE(Pull(*b, *a, 0).ok());  // a keyframe: a's mirror of b is 4
  std::vector<float> x = {0};
  EXPECT_EQ(a->Merge(x.data()), 1);
  EXPECT_EQ(a->Merge(x.data()), 1);  // one merge without a refresh: still fresh enough
  EXPECT_EQ(a->Merge(x.data()), 0);  // two: it sits out
  const std::vector<float> before = x;
  EXPECT_EQ(a->Merge(x.data()), 0);
  EXPECT_EQ(x, before);
  ASSERT_TRUE(Pull(*b, *a, 0).ok());  // b answers again (nothing new)
  EXPECT_EQ(a->Merge(x.data()), 1);
}

// c is per unit of the learning rate the round's steps summed to; a round
// that took no steps (held) only fades it.
TEST(DriftCorrection, LearnsPerUnitOfLearningRateAndOnlyFadesWithoutSteps) {
  auto f = Make({0}, 1, 1, Corrected(0.5));
  std::vector<float> x = {1};
  f->Publish(x.data(), 1);
  ASSERT_TRUE(f->Apply(0, Keyframe({3}, 1, 1)).ok());
  ASSERT_EQ(f->Merge(x.data(), /*step_scale=*/0.25), 1);  // d = ½(3−1) = 1
  EXPECT_EQ(x, std::vector<float>{2});
  EXPECT_EQ(f->correction(), std::vector<float>{2.0f});  // ½(0 + 1/0.25)
  ASSERT_EQ(f->Merge(x.data(), /*step_scale=*/0), 1);    // no steps: d = ½(3−2) moves x, c only fades
  EXPECT_EQ(x, std::vector<float>{2.5f});
  EXPECT_EQ(f->correction(), std::vector<float>{1.0f});
}

TEST(DriftCorrection, WithoutNeighboursItFadesAndMergeChangesNothing) {
  auto f = Make({0}, 1, 1, Corrected(0.5));
  std::vector<float> x = {1};
  f->Publish(x.data(), 1);
  ASSERT_TRUE(f->Apply(0, Keyframe({3}, 1, 1)).ok());
  f->Merge(x.data());
  ASSERT_EQ(f->correction(), std::vector<float>{0.5f});
  f->SetPeers({});  // the only neighbour is gone
  x = {7};
  EXPECT_EQ(f->Merge(x.data()), 0);
  EXPECT_EQ(x, std::vector<float>{7});
  EXPECT_EQ(f->correction(), std::vector<float>{0.25f});
}

// Five nodes on a ring, node i minimising ½h_i‖x − a_i‖² by `local_steps`
// gradient steps per round (lr α), then publish, pull both neighbours, merge.
// The federation's minimum is Σh_i a_i / Σh_i. Plain gossip settles each node
// off it, pulled toward its own a_i by an amount that grows with α, with the
// local steps and with how different the a_i are; drift correction cancels
// most of that pull. `spread`: c is added c/K after each local step, as the
// trainer does; otherwise all of it after the K steps (one jolt per round).
// `curvatures`: h_i differ between nodes (else all 1). Then K steps taken
// without the correction drift toward a_i at a pace that saturates
// differently on each node (client drift), and a correction added only at the
// end of the round cannot undo that weighting. With 10% of pulls missed at
// random (asymmetric merges) β = 1 would integrate the errors without bound;
// β = 0.9 stays close to the minimum.
// `short_rate`: each node's round trains one step instead of `local_steps`
// with this probability (a busy CPU); the merge then learns c per unit of a
// full round's learning rate (`nominal`, as the trainer reports it) or of the
// one step actually taken.
double RingErrorAfter(double beta, double miss_rate, int rounds, int local_steps = 1, float lr = 0.2f,
                      bool spread = true, bool curvatures = false, const std::vector<std::string>& codecs = {},
                      double short_rate = 0, bool nominal = true) {
  const int kNodes = 5;
  const size_t n = 8;
  std::mt19937 rng(3);
  std::bernoulli_distribution miss(miss_rate), cut_short(short_rate);
  std::vector<int> steps_taken(5, local_steps);
  std::vector<std::unique_ptr<Federation>> nodes;
  std::vector<std::vector<float>> x, a;
  std::vector<double> target(n, 0.0);
  const float kCurvature[kNodes] = {0.25f, 1.0f, 2.0f, 0.5f, 1.5f};
  std::vector<float> h(kNodes, 1.0f);
  if (curvatures) h.assign(kCurvature, kCurvature + kNodes);
  double h_sum = 0;
  for (float v : h) h_sum += v;
  for (int i = 0; i < kNodes; ++i) {
    FederationOptions o = Corrected(beta);
    if (!codecs.empty()) o.codec = codecs[static_cast<size_t>(i) % codecs.size()];
    nodes.push_back(Make(std::vector<float>(n, 0.0f), 2, 2, o));
    x.emplace_back(n, 0.0f);
    a.push_back(RandomVector(rng, n, 5.0f));
    for (size_t k = 0; k < n; ++k) target[k] += h[i] * a[i][k] / h_sum;
  }
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < kNodes; ++i) {
      const std::vector<float> c = nodes[i]->correction();
      steps_taken[i] = short_rate > 0 && cut_short(rng) ? 1 : local_steps;
      for (int step = 0; step < steps_taken[i]; ++step) {
        for (size_t k = 0; k < n; ++k) {
          x[i][k] -= lr * h[i] * (x[i][k] - a[i][k]);
          if (spread && !c.empty()) x[i][k] += lr * c[k];  // as the trainer does: lr · c a step
        }
      }
      if (!spread) AddCorrection(*nodes[i], &x[i]);
      nodes[i]->Publish(x[i].data(), 0);
    }
    // Every pull succeeds, except once a blown-up correction has driven x to
    // non-finite values, which the neighbours then refuse (short rounds).
    for (int i = 0; i < kNodes; ++i) {
      if (!miss(rng)) {
        const absl::Status s = Pull(*nodes[(i + kNodes - 1) % kNodes], *nodes[i], 0);
        EXPECT_TRUE(s.ok() || short_rate > 0) << s;
      }
      if (!miss(rng)) {
        const absl::Status s = Pull(*nodes[(i + 1) % kNodes], *nodes[i], 1);
        EXPECT_TRUE(s.ok() || short_rate > 0) << s;
      }
    }
    // Spread, c is per unit of the learning rate a full round's steps sum to.
    for (int i = 0; i < kNodes; ++i) {
      nodes[i]->Merge(x[i].data(), !spread ? 1.0 : lr * (nominal ? local_steps : steps_taken[i]));
    }
  }
  double worst = 0;
  for (int i = 0; i < kNodes; ++i) {
    double d2 = 0;
    for (size_t k = 0; k < n; ++k) d2 += (x[i][k] - target[k]) * (x[i][k] - target[k]);
    worst = std::max(worst, std::sqrt(d2));
  }
  return worst;
}

TEST(DriftCorrection, RingOfDifferentLocalLossesSettlesNearTheGlobalMinimum) {
  const double plain = RingErrorAfter(0.0, 0.0, 400);
  const double corrected = RingErrorAfter(0.9, 0.0, 400);
  EXPECT_GT(plain, 1.0);  // the heterogeneity bias is real at this lr
  EXPECT_LT(corrected, plain / 5) << "plain " << plain;
}

TEST(DriftCorrection, KeepsItsGainWhenPullsAreMissed) {
  const double plain = RingErrorAfter(0.0, 0.1, 2000);
  const double corrected = RingErrorAfter(0.9, 0.1, 2000);
  EXPECT_TRUE(std::isfinite(corrected));
  EXPECT_LT(corrected, plain / 5) << "plain " << plain;
}

// Many local steps per round, nodes of different curvature: plain local steps
// settle each node most of the way to its own minimum. The correction added
// once per round removes the pull but not the client drift (measured: error
// ≈ 1.0 whatever β); spread over the steps it keeps every step near the
// federation's minimum (≈ 0.1 at β = 0.99, ≈ 0.9 at β = 0.9, whose leak
// leaves a tenth of the pull).
TEST(DriftCorrection, ManyLocalStepsStayNearTheGlobalMinimumWhenSpreadOverTheSteps) {
  for (int k : {10, 50}) {
    const float lr = 0.5f / static_cast<float>(k);  // the round's steps move x about as far at every K
    const double plain = RingErrorAfter(0.0, 0.0, 400, k, lr, true, /*curvatures=*/true);
    const double once = RingErrorAfter(0.99, 0.0, 400, k, lr, /*spread=*/false, true);
    const double spread = RingErrorAfter(0.99, 0.0, 400, k, lr, /*spread=*/true, true);
    const double leaky = RingErrorAfter(0.9, 0.0, 400, k, lr, /*spread=*/true, true);
    const double missed = RingErrorAfter(0.99, 0.1, 1000, k, lr, /*spread=*/true, true);
    EXPECT_GT(plain, 2.0) << "K " << k;
    EXPECT_LT(once, plain / 2) << "K " << k << " plain " << plain;
    EXPECT_LT(spread, once / 5) << "K " << k << " once per round " << once;
    EXPECT_LT(leaky, plain / 4) << "K " << k << " plain " << plain;
    EXPECT_TRUE(std::isfinite(missed));
    EXPECT_LT(missed, once / 5) << "K " << k << " with 10% of pulls missed";
  }
}

// Degree 4 with drift correction: 2 / (3 · 4) = 1/6 a neighbour, not
// Metropolis' 1/5, so we keep a third of our own weights.
TEST(DriftCorrection, CapsNeighbourWeightsSoEveryNodeKeepsAThirdOfItself) {
  for (double beta : {0.0, 0.5}) {
    auto f = Make({0}, 4, 4, Corrected(beta));
    for (int j = 0; j < 4; ++j) ASSERT_TRUE(f->Apply(j, Keyframe({1}, 1, 4)).ok());
    std::vector<float> x = {0};
    f->Merge(x.data());
    EXPECT_NEAR(x[0], beta > 0 ? 4.0 / 6 : 4.0 / 5, 1e-6) << "β " << beta;
  }
}

// The complete bipartite graph K4,4 (every node degree 4) under plain
// Metropolis weights has a mixing eigenvalue of (1 − 4)/5 = −0.6, below the
// −1/3 that D² needs; each node minimises ½‖x − a_i‖² with one step of
// lr 0.5 a round. With the capped weights the corrected federation settles
// near the global minimum (measured: 0.027; plain gossip 1.53); uncapped it
// ends 2.3e5 away.
TEST(DriftCorrection, SettlesOnADenseBipartiteGraphWhereUncappedWeightsDiverge) {
  auto error_after = [](double beta) {
    const int kNodes = 8, kSteps = 1;
    const size_t n = 4;
    const float lr = 0.5f;
    std::mt19937 rng(11);
    std::vector<std::unique_ptr<Federation>> nodes;
    std::vector<std::vector<float>> x, a;
    std::vector<double> target(n, 0.0);
    for (int i = 0; i < kNodes; ++i) {
      nodes.push_back(Make(std::vector<float>(n, 0.0f), 4, 4, Corrected(beta)));
      x.emplace_back(n, 0.0f);
      a.push_back(RandomVector(rng, n, 5.0f));
      for (size_t k = 0; k < n; ++k) target[k] += a[i][k] / kNodes;
    }
    for (int round = 0; round < 300; ++round) {
      for (int i = 0; i < kNodes; ++i) {
        const std::vector<float> c = nodes[i]->correction();
        for (int s = 0; s < kSteps; ++s) {
          for (size_t k = 0; k < n; ++k) x[i][k] += lr * (a[i][k] - x[i][k] + (c.empty() ? 0 : c[k]));
        }
        nodes[i]->Publish(x[i].data(), 0);
      }
      for (int i = 0; i < kNodes; ++i) {
        for (int j = 0; j < 4; ++j) {  // i's neighbours: the four nodes of the other side
          const int other = (i < 4 ? 4 : 0) + j;
          EXPECT_TRUE(Pull(*nodes[other], *nodes[i], j).ok());
        }
      }
      for (int i = 0; i < kNodes; ++i) nodes[i]->Merge(x[i].data(), lr * kSteps);
    }
    double worst = 0;
    for (int i = 0; i < kNodes; ++i) {
      double d2 = 0;
      for (size_t k = 0; k < n; ++k) d2 += (x[i][k] - target[k]) * (x[i][k] - target[k]);
      worst = std::max(worst, std::sqrt(d2));
    }
    return worst;
  };
  const double plain = error_after(0.0);
  const double corrected = error_after(0.99);
  EXPECT_GT(plain, 1.0);
  EXPECT_TRUE(std::isfinite(corrected));
  EXPECT_LT(corrected, plain / 5) << "plain " << plain;
}

// A busy laptop's round may train one step of its K. Its merge still closes
// the whole gap to the neighbours, so learning c per unit of that one step's
// learning rate inflates c K-fold, and the next full round applies it K
// times over (measured with the real daemons, five on two cores: train loss
// 0.1 → 360). Per unit of a full round's rate, short rounds cost little.
TEST(DriftCorrection, RoundsCutShortByABusyCpuDoNotBlowTheCorrectionUp) {
  const int k = 20;
  const float lr = 0.5f / static_cast<float>(k);
  const double clean = RingErrorAfter(0.99, 0.0, 600, k, lr, true, true);
  const double plain = RingErrorAfter(0.0, 0.0, 600, k, lr, true, true, {}, 0.3);
  const double nominal = RingErrorAfter(0.99, 0.0, 600, k, lr, true, true, {}, 0.3, /*nominal=*/true);
  const double actual = RingErrorAfter(0.99, 0.0, 600, k, lr, true, true, {}, 0.3, /*nominal=*/false);
  std::printf("worst error: clean %.3g, 30%% short rounds: plain %.3g, per full round %.3g, per step taken %.3g\n",
              clean, plain, nominal, actual);
  EXPECT_TRUE(std::isfinite(nominal));
  EXPECT_LT(nominal, plain / 4) << "clean " << clean;
  EXPECT_TRUE(!std::isfinite(actual) || actual > 10 * nominal) << "per step taken " << actual;
}

// Neighbours with different lossy codecs: each decodes what the other sends,
// error feedback (x − x̂) sends later what a codec left out, and the ring still
// settles near the federation's minimum, as with every node on dense fp32.
TEST(DriftCorrection, MixedLossyCodecsOnARingConvergeLikeDense) {
  const int k = 10;
  const float lr = 0.05f;
  const double plain = RingErrorAfter(0.0, 0.0, 600, k, lr, true, true);
  const double dense = RingErrorAfter(0.99, 0.0, 600, k, lr, true, true, {"dense_f32"});
  const double mixed =
      RingErrorAfter(0.99, 0.0, 600, k, lr, true, true, {"fp16", "int8", "topk:0.25+int8", "sign", "topk:0.5"});
  EXPECT_TRUE(std::isfinite(mixed));
  EXPECT_LT(dense, plain / 10) << "plain " << plain;
  EXPECT_LT(mixed, plain / 5) << "plain " << plain << ", dense " << dense;
}

// ---------------------------------------------------------------- robust merges

// The distances below are made for a radius of three lower medians (the
// product's default is wider: options.h).
constexpr double kTestMedians = 3.0;

FederationOptions Robust(const std::string& rule, double beta = 0.0) {
  FederationOptions o = Corrected(beta);
  o.robust = rule;
  o.clip_medians = kTestMedians;
  return o;
}

TEST(RobustMerge, CreateRefusesAnUnknownRule) {
  auto f = Federation::Create(Robust("krum"), {0}, 1, 1);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("federation.robust"), std::string::npos) << f.status();
  FederationOptions o = Robust("reject");
  o.clip_medians = 0.5;  // a radius below the median would screen out most honest neighbours
  EXPECT_FALSE(Federation::Create(o, {0}, 1, 1).ok());
}

// Two neighbours, Metropolis weights 1/3: the nearer one (distance 1) sets
// the radius (kTestMedians × 1), the farther one (distance 10) pulls by 2 instead of 10. With
// drift correction, c learns only from the neighbour that was not cut.
TEST(RobustMerge, ClipCutsTheFartherNeighbourToTheLowerMedianAndTeachesCNothingOfIt) {
  auto f = Make({0, 0}, 2, 2, Robust("clip", 0.5));
  ASSERT_TRUE(f->Apply(0, Keyframe({1, 0}, 1, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({0, 10}, 1, 2)).ok());
  std::vector<float> x = {0, 0};
  ASSERT_EQ(f->Merge(x.data()), 2);
  EXPECT_NEAR(x[0], 1.0 / 3, 1e-6);
  EXPECT_NEAR(x[1], kTestMedians / 3, 1e-6);  // 10 cut to 2, weight 1/3
  const std::vector<float> c = f->correction();
  EXPECT_NEAR(c[0], 0.5 / 3, 1e-6);  // β (0 + d_unclipped): only neighbour 0 teaches
  EXPECT_NEAR(c[1], 0.0, 1e-7);
  EXPECT_EQ(f->mirror_stats(0).clipped, 0);
  EXPECT_EQ(f->mirror_stats(1).clipped, 1);
  EXPECT_EQ(f->mirror_stats(1).merged, 1);
  EXPECT_NEAR(f->mirror_stats(1).last_distance, 10.0, 1e-6);
  EXPECT_NEAR(f->mirror_stats(1).last_radius, kTestMedians, 1e-6);
}

// The same two neighbours under reject: the outlier sits the merge out.
TEST(RobustMerge, RejectLeavesTheOutlierOutOfTheMergeAndOfC) {
  auto f = Make({0, 0}, 2, 2, Robust("reject", 0.5));
  ASSERT_TRUE(f->Apply(0, Keyframe({1, 0}, 1, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({0, 10}, 1, 2)).ok());
  std::vector<float> x = {0, 0};
  ASSERT_EQ(f->Merge(x.data()), 2);
  EXPECT_NEAR(x[0], 1.0 / 3, 1e-6);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_NEAR(f->correction()[0], 0.5 / 3, 1e-6);
  EXPECT_EQ(f->correction()[1], 0.0f);
  EXPECT_EQ(f->mirror_stats(1).clipped, 1);
  EXPECT_EQ(f->mirror_stats(0).clipped, 0);
}

TEST(RobustMerge, NoneIsThePlainWeightedMean) {
  auto f = Make({0, 0}, 2, 2, Robust("none"));
  ASSERT_TRUE(f->Apply(0, Keyframe({1, 0}, 1, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({0, 10}, 1, 2)).ok());
  std::vector<float> x = {0, 0};
  f->Merge(x.data());
  EXPECT_NEAR(x[0], 1.0 / 3, 1e-6);
  EXPECT_NEAR(x[1], 10.0 / 3, 1e-5);
  EXPECT_EQ(f->mirror_stats(1).clipped, 0);
}

// A neighbour that sends back our own weights (distance 0) would make the
// lower median 0 and cut every honest pull to nothing; the radius never
// drops below FederationOptions().clip_movements times how far our own training moves a round.
TEST(RobustMerge, AMimicCannotShrinkTheRadiusBelowOurOwnPace) {
  auto f = Make({0}, 2, 2, Robust("clip"));
  std::vector<float> x = {0};
  f->Merge(x.data());  // nothing mirrored yet: x unchanged, and the pace is measured from here
  x = {1};             // a round's training moved x by 1
  f->Publish(x.data(), 1);
  ASSERT_TRUE(f->Apply(0, Keyframe({1}, 1, 2)).ok());    // the mimic: exactly our x
  ASSERT_TRUE(f->Apply(1, Keyframe({3.5}, 1, 2)).ok());  // honest, 2.5 away: under 3 × 1
  f->Merge(x.data());
  EXPECT_NEAR(x[0], 1 + 2.5 / 3, 1e-6);
  EXPECT_EQ(f->mirror_stats(1).clipped, 0);
  EXPECT_NEAR(f->mirror_stats(1).last_radius, FederationOptions().clip_movements, 1e-6);
}

// One merge of a node whose training moved it by 1 with a lone neighbour
// 1000 away; returns x after it.
float MergeWithALoneFarNeighbour(Federation& f) {
  std::vector<float> x = {0};
  f.Merge(x.data());
  x = {1};
  f.Publish(x.data(), 1);
  EXPECT_TRUE(f.Apply(0, Keyframe({1001}, 1, 1)).ok());
  f.Merge(x.data());
  return x[0];
}

// A lone neighbour has no median to compare with: under clip our pace alone
// bounds it.
TEST(RobustMerge, ALoneNeighbourIsHeldToOurPace) {
  auto f = Make({0}, 1, 1, Robust("clip"));
  EXPECT_NEAR(MergeWithALoneFarNeighbour(*f), 1 + FederationOptions().clip_movements / 2, 1e-4);  // weight 1/2, cut to 3 × 1
  EXPECT_EQ(f->mirror_stats(0).clipped, 1);
}

// Under reject the same lone neighbour stays in: with nobody to compare it
// with, our pace is no yardstick (it is 0 while we rest, and a laptop that
// learnt alone for days sits far away), and leaving it out would cut the
// pair apart for good.
TEST(RobustMerge, RejectLeavesALoneNeighbourIn) {
  auto f = Make({0}, 1, 1, Robust("reject"));
  EXPECT_NEAR(MergeWithALoneFarNeighbour(*f), 1 + 1000.0 / 2, 1e-3);  // weight 1/2, the whole way
  EXPECT_EQ(f->mirror_stats(0).clipped, 0);
}

TEST(RobustMerge, MedianAndTrimmedMeanAreCoordinatewiseOverUsAndTheNeighbours) {
  // Per coordinate, us {0, 0} and neighbours {1, -50}, {2, 4}, {6, 8}, {100, -1}:
  // sorted {0, 1, 2, 6, 100} and {-50, -1, 0, 4, 8}.
  for (const std::string rule : {"median", "trimmed_mean"}) {
    auto f = Make({0, 0}, 4, 4, Robust(rule));
    ASSERT_TRUE(f->Apply(0, Keyframe({1, -50}, 1, 4)).ok());
    ASSERT_TRUE(f->Apply(1, Keyframe({2, 4}, 1, 4)).ok());
    ASSERT_TRUE(f->Apply(2, Keyframe({6, 8}, 1, 4)).ok());
    ASSERT_TRUE(f->Apply(3, Keyframe({100, -1}, 1, 4)).ok());
    std::vector<float> x = {0, 0};
    ASSERT_EQ(f->Merge(x.data()), 4);
    if (rule == "median") {
      EXPECT_NEAR(x[0], 2, 1e-6);
      EXPECT_NEAR(x[1], 0, 1e-6);
    } else {  // the lowest and highest dropped: mean of {1, 2, 6} and {-1, 0, 4}
      EXPECT_NEAR(x[0], 3, 1e-6);
      EXPECT_NEAR(x[1], 1, 1e-6);
    }
  }
  auto f = Make({0}, 2, 2, Robust("median"));
  ASSERT_TRUE(f->Apply(0, Keyframe({5}, 1, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({1000}, 1, 2)).ok());
  std::vector<float> x = {0};
  f->Merge(x.data());
  EXPECT_NEAR(x[0], 5, 1e-6);  // {0, 5, 1000}: one outlier moves the median nowhere
}

// The drift correction tracks the bias of a linear mixing; a median's move is
// not one, and c integrating it wrecked a 16-node federation (mycel-sim:
// 11.4% against 85.0%). Under the coordinate-wise rules c learns nothing and
// only fades, whatever the merge moves.
TEST(RobustMerge, CoordinatewiseRulesTeachTheCorrectionNothing) {
  for (const std::string rule : {"median", "trimmed_mean"}) {
    auto f = Make({0, 0}, 2, 2, Robust(rule, 0.99));
    std::vector<float> x = {0, 0};
    f->Merge(x.data(), 1.0);
    ASSERT_EQ(f->correction().size(), 2u) << rule;
    ASSERT_TRUE(f->Apply(0, Keyframe({4, -4}, 1, 2)).ok());
    ASSERT_TRUE(f->Apply(1, Keyframe({6, -6}, 1, 2)).ok());
    ASSERT_EQ(f->Merge(x.data(), 1.0), 2) << rule;
    EXPECT_GT(std::abs(x[0]), 1.0f) << rule << ": the merge moved x";
    for (float c : f->correction()) EXPECT_EQ(c, 0.0f) << rule;
  }
  // The weighted mean, same neighbours: c learns the move.
  auto f = Make({0, 0}, 2, 2, Robust("none", 0.99));
  std::vector<float> x = {0, 0};
  f->Merge(x.data(), 1.0);
  ASSERT_TRUE(f->Apply(0, Keyframe({4, -4}, 1, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe({6, -6}, 1, 2)).ok());
  f->Merge(x.data(), 1.0);
  EXPECT_GT(f->correction()[0], 0.5f);
}

// The quadratic ring of RingErrorAfter with node 0 replaced by an attacker
// that publishes, each round, the honest average pushed `scale` times its
// spread away from it (scaled deltas, as a compromised neighbour would).
// Honest nodes run 20 local steps with drift correction 0.99; the error is the
// worst honest node's distance to the honest nodes' own minimum.
double AttackedRingError(const std::string& robust, double scale, int rounds = 400) {
  const int kNodes = 5, kSteps = 20;
  const size_t n = 8;
  const float lr = 0.5f / kSteps;
  std::mt19937 rng(5);
  std::vector<std::unique_ptr<Federation>> nodes;
  std::vector<std::vector<float>> x, a;
  std::vector<double> target(n, 0.0);
  for (int i = 0; i < kNodes; ++i) {
    nodes.push_back(Make(std::vector<float>(n, 0.0f), 2, 2, Robust(robust, 0.99)));
    x.emplace_back(n, 0.0f);
    a.push_back(RandomVector(rng, n, 5.0f));
    if (i > 0) for (size_t k = 0; k < n; ++k) target[k] += a[i][k] / (kNodes - 1);
  }
  for (int round = 0; round < rounds; ++round) {
    for (int i = 1; i < kNodes; ++i) {
      const std::vector<float> c = nodes[i]->correction();
      for (int step = 0; step < kSteps; ++step) {
        for (size_t k = 0; k < n; ++k) x[i][k] += lr * (a[i][k] - x[i][k] + c[k]);
      }
    }
    if (scale > 0) {
      for (size_t k = 0; k < n; ++k) {
        const double mean = 0.5 * (x[1][k] + x[kNodes - 1][k]);
        x[0][k] = static_cast<float>(mean + scale * (x[1][k] - mean) + scale);
      }
    } else {
      x[0] = x[1];  // no attack: node 0 is a copy of an honest node's weights
    }
    for (int i = 0; i < kNodes; ++i) nodes[i]->Publish(x[i].data(), 0);
    for (int i = 1; i < kNodes; ++i) {
      EXPECT_TRUE(Pull(*nodes[(i + kNodes - 1) % kNodes], *nodes[i], 0).ok());
      EXPECT_TRUE(Pull(*nodes[(i + 1) % kNodes], *nodes[i], 1).ok());
    }
    for (int i = 1; i < kNodes; ++i) nodes[i]->Merge(x[i].data(), lr * kSteps);
  }
  double worst = 0;
  for (int i = 1; i < kNodes; ++i) {
    double d2 = 0;
    for (size_t k = 0; k < n; ++k) d2 += (x[i][k] - target[k]) * (x[i][k] - target[k]);
    worst = std::max(worst, std::sqrt(d2));
  }
  return worst;
}

// Measured: without an attack clip never cuts here (3.57 either way); under
// the ×100 attack plain gossip ends 9271 away, clip 4.76. Had the clipped
// pull taught c as well, c would integrate it every round and clip would end
// 22390 away, worse than no defence at all.
TEST(RobustMerge, ClipAndRejectBoundAScalingAttackerThatDragsPlainGossipAway) {
  const double honest_none = AttackedRingError("none", 0);
  const double honest_clip = AttackedRingError("clip", 0);
  const double attacked_none = AttackedRingError("none", 100);
  const double attacked_clip = AttackedRingError("clip", 100);
  const double honest_reject = AttackedRingError("reject", 0);
  const double attacked_reject = AttackedRingError("reject", 100);
  SCOPED_TRACE(::testing::Message() << "no attack: none " << honest_none << ", clip " << honest_clip
                                    << "; ×100: none " << attacked_none << ", clip " << attacked_clip);
  EXPECT_TRUE(std::isfinite(attacked_clip));
  EXPECT_GT(attacked_none, 50.0);  // the attack is real
  EXPECT_LT(attacked_clip, attacked_none / 10);
  EXPECT_LT(attacked_clip, 3 * honest_none + 1.0);
  EXPECT_LT(honest_clip, honest_none + 0.5);  // clipping costs little without an attacker
  EXPECT_LT(attacked_reject, 3 * honest_none + 1.0) << "reject " << attacked_reject;
  EXPECT_LT(honest_reject, honest_none + 0.5) << "reject " << honest_reject;
}

// ---------------------------------------------------------------- snapshots

class Snapshot : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(3);
    a_ = Make(std::vector<float>(kN, 0.5f), 2, 2);
    b_ = Make(std::vector<float>(kN, 0.5f), 2, 2);
    for (int i = 0; i < 3; ++i) {
      auto x = RandomVector(rng, kN);
      a_->Publish(x.data(), 10 * (i + 1));
      b_->Publish(x.data(), 1);
      ASSERT_TRUE(Pull(*a_, *b_, 1).ok());
    }
    PullAnswer junk = Keyframe({1, 2}, 0, 1);
    EXPECT_FALSE(b_->Apply(1, junk).ok());  // so a refusal is part of the state
  }
  static constexpr size_t kN = 5;
  std::unique_ptr<Federation> a_, b_;
};

TEST_F(Snapshot, CleanRoundTripKeepsEpochLogAndMirrors) {
  std::string bytes = a_->Serialize(/*clean=*/true);
  auto a2 = Make(std::vector<float>(kN, 0.5f), 2, 2);
  ASSERT_TRUE(a2->Restore(bytes).ok());
  EXPECT_EQ(a2->epoch(), a_->epoch());
  EXPECT_EQ(a2->seq(), 3u);
  EXPECT_EQ(a2->public_copy(), a_->public_copy());
  PullAnswer ans = a2->Answer(a_->epoch(), 1);
  ASSERT_FALSE(ans.keyframe);
  EXPECT_EQ(ans.deltas, a_->Answer(a_->epoch(), 1).deltas);
  EXPECT_EQ(ans.samples_trained, 30);
  // b's cursor still matches: an empty answer, no keyframe.
  ASSERT_TRUE(Pull(*a2, *b_, 1).ok());
  EXPECT_EQ(b_->mirror_stats(1).keyframes_applied, 1);

  // b's own snapshot carries its mirrors, counters and refusal.
  auto b2 = Make(std::vector<float>(kN, 0.5f), 2, 2);
  ASSERT_TRUE(b2->Restore(b_->Serialize(true)).ok());
  EXPECT_EQ(b2->mirror(1), b_->mirror(1));
  EXPECT_FALSE(b2->mirror_stats(0).initialized);
  MirrorStats s = b2->mirror_stats(1), t = b_->mirror_stats(1);
  EXPECT_EQ(s.epoch, t.epoch);
  EXPECT_EQ(s.seq, t.seq);
  EXPECT_EQ(s.samples_trained, 30);
  EXPECT_EQ(s.deltas_applied, t.deltas_applied);
  EXPECT_EQ(s.keyframes_applied, t.keyframes_applied);
  EXPECT_EQ(s.refused, 1);
  EXPECT_EQ(s.last_refusal, t.last_refusal);
  EXPECT_EQ(b2->Serialize(true), b_->Serialize(true));
  // Merge from the restored node equals merge from the original.
  std::vector<float> x1(kN, 1.0f), x2(kN, 1.0f);
  b_->Merge(x1.data());
  b2->Merge(x2.data());
  EXPECT_EQ(x1, x2);
}

TEST_F(Snapshot, UncleanRestoreStartsANewEpochAndNeighboursTakeAKeyframe) {
  std::string bytes = a_->Serialize(/*clean=*/false);
  auto a2 = Make(std::vector<float>(kN, 0.5f), 2, 2);
  ASSERT_TRUE(a2->Restore(bytes).ok());
  EXPECT_NE(a2->epoch(), a_->epoch());
  EXPECT_NE(a2->epoch(), 0u);
  EXPECT_EQ(a2->seq(), 3u);  // seq continues
  EXPECT_EQ(a2->public_copy(), a_->public_copy());
  EXPECT_TRUE(a2->Answer(a2->epoch(), 1).keyframe);  // log cleared
  EXPECT_TRUE(a2->Answer(a_->epoch(), 3).keyframe);  // old epoch
  ASSERT_TRUE(Pull(*a2, *b_, 1).ok());
  EXPECT_EQ(b_->mirror_stats(1).keyframes_applied, 2);
  EXPECT_EQ(b_->Cursor(1), (std::pair<uint64_t, uint64_t>{a2->epoch(), 3}));
  // And the stream carries on with deltas in the new epoch.
  std::vector<float> x(kN, 2.0f);
  a2->Publish(x.data(), 40);
  ASSERT_TRUE(Pull(*a2, *b_, 1).ok());
  EXPECT_EQ(b_->mirror(1), a2->public_copy());
  EXPECT_EQ(b_->mirror_stats(1).seq, 4u);
  EXPECT_EQ(b_->mirror_stats(1).keyframes_applied, 2);
}

TEST_F(Snapshot, PeerCountChangeStartsMirrorsEmpty) {
  auto b3 = Make(std::vector<float>(kN, 0.5f), 3, 3);
  ASSERT_TRUE(b3->Restore(b_->Serialize(true)).ok());
  EXPECT_EQ(b3->public_copy(), b_->public_copy());
  for (int p = 0; p < 3; ++p) EXPECT_FALSE(b3->mirror_stats(p).initialized);
  EXPECT_EQ(b3->Cursor(1), (std::pair<uint64_t, uint64_t>{0, 0}));
}

TEST_F(Snapshot, KeyedMirrorsFollowTheirNeighbourAcrossAPeerListChange) {
  // b names the neighbours it had (each keeps its mirror); the snapshot carries the keys.
  b_->SetPeers({"key-a", "key-c"});
  ASSERT_TRUE(b_->mirror_stats(1).initialized);
  const std::vector<float> mirror_c = b_->mirror(1);
  // Restarted with c first, a gone and d new: c's mirror follows c.
  auto b3 = Make(std::vector<float>(kN, 0.5f), 0, 0);
  b3->SetPeers({"key-c", "key-d"});
  ASSERT_TRUE(b3->Restore(b_->Serialize(true)).ok());
  EXPECT_EQ(b3->mirror(0), mirror_c);
  EXPECT_EQ(b3->mirror_stats(0).samples_trained, 30);
  EXPECT_EQ(b3->Cursor(0), b_->Cursor(1));
  EXPECT_FALSE(b3->mirror_stats(1).initialized);
  EXPECT_EQ(b3->Cursor(1), (std::pair<uint64_t, uint64_t>{0, 0}));
  // The next pull from c is deltas on top of the kept mirror, not a keyframe.
  std::vector<float> x(kN, 2.0f);
  a_->Publish(x.data(), 40);
  ASSERT_TRUE(Pull(*a_, *b3, 0).ok());
  EXPECT_EQ(b3->mirror(0), a_->public_copy());
  EXPECT_EQ(b3->mirror_stats(0).keyframes_applied, b_->mirror_stats(1).keyframes_applied);
}

TEST_F(Snapshot, AnonymousSnapshotIntoNamedPeersOfTheSameCountKeepsMirrorsByPosition) {
  // What an upgrade from a version 1 snapshot (no keys) looks like: the
  // daemon names its peers before restoring.
  auto b3 = Make(std::vector<float>(kN, 0.5f), 0, 0);
  b3->SetPeers({"key-a", "key-c"});
  ASSERT_TRUE(b3->Restore(b_->Serialize(true)).ok());
  EXPECT_EQ(b3->mirror(1), b_->mirror(1));
  EXPECT_EQ(b3->Cursor(1), b_->Cursor(1));
  // A different count: nothing to go by, the mirrors start empty.
  auto b4 = Make(std::vector<float>(kN, 0.5f), 0, 0);
  b4->SetPeers({"key-a", "key-c", "key-d"});
  ASSERT_TRUE(b4->Restore(b_->Serialize(true)).ok());
  for (int p = 0; p < 3; ++p) EXPECT_FALSE(b4->mirror_stats(p).initialized);
}

TEST(Federation, SetPeersKeepsMirrorsByKeyAndSetsTheDegree) {
  auto a = Make({1, 1}, 0, 0);
  auto b = Make({0, 0}, 0, 0);
  auto c = Make({0, 0}, 0, 0);
  a->SetPeers({"b", "c"});
  std::vector<float> xb{4, 4}, xc{8, 8};
  b->Publish(xb.data(), 1);
  c->Publish(xc.data(), 1);
  ASSERT_TRUE(Pull(*b, *a, 0).ok());
  ASSERT_TRUE(Pull(*c, *a, 1).ok());
  EXPECT_EQ(a->Answer(0, 0).degree, 2);

  // c moves to the front, b leaves, d joins.
  EXPECT_EQ(a->SetPeers({"c", "d"}), 1);
  EXPECT_EQ(a->mirror(0), xc);
  EXPECT_FALSE(a->mirror_stats(1).initialized);
  EXPECT_EQ(a->Answer(0, 0).degree, 2);
  // Only c takes part in a merge (Metropolis, both of degree <= 2: w = 1/3).
  std::vector<float> x{1, 1};
  a->Publish(x.data(), 1);
  EXPECT_EQ(a->Merge(x.data()), 1);
  EXPECT_FLOAT_EQ(x[0], 1.0f + (8.0f - 1.0f) / 3.0f);

  // Down to one neighbour: the degree follows.
  EXPECT_EQ(a->SetPeers({"d"}), 1);
  EXPECT_EQ(a->Answer(0, 0).degree, 1);
  EXPECT_EQ(a->SetPeers({}), 0);
  EXPECT_EQ(a->Merge(x.data()), 0);
}

TEST(DriftCorrectionSnapshot, CorrectionSurvivesARestartAndFollowsTheOptions) {
  auto f = Make({0, 0}, 1, 1, Corrected(0.5));
  std::vector<float> x = {1, 2};
  f->Publish(x.data(), 1);
  ASSERT_TRUE(f->Apply(0, Keyframe({3, 6}, 1, 1)).ok());
  f->Merge(x.data());
  const std::vector<float> c = f->correction();
  ASSERT_EQ(c, (std::vector<float>{0.5f, 1.0f}));
  const std::string bytes = f->Serialize(true);

  auto same = Make({0, 0}, 1, 1, Corrected(0.5));
  ASSERT_TRUE(same->Restore(bytes).ok());
  EXPECT_EQ(same->correction(), c);
  auto off = Make({0, 0}, 1, 1, Corrected(0.0));  // switched off: dropped
  ASSERT_TRUE(off->Restore(bytes).ok());
  EXPECT_TRUE(off->correction().empty());
  // Switched on over a snapshot without one (version 2, or taken with β = 0): zero.
  const std::string plain = off->Serialize(true);
  auto on = Make({0, 0}, 1, 1, Corrected(0.5));
  ASSERT_TRUE(on->Restore(plain).ok());
  EXPECT_EQ(on->correction(), (std::vector<float>{0, 0}));
  std::string v2 = plain.substr(0, plain.size() - 1);  // version 2 ended before the flag
  // ... and had no trust record (24 bytes for a never-probed mirror) before the mirror's 2 floats.
  ASSERT_EQ(v2.substr(v2.size() - 8 - 24, 24), std::string(24, '\0'));
  v2.erase(v2.size() - 8 - 24, 24);
  const uint32_t two = 2;
  std::memcpy(v2.data() + 8, &two, sizeof(two));
  auto old = Make({0, 0}, 1, 1, Corrected(0.5));
  ASSERT_TRUE(old->Restore(v2).ok());
  EXPECT_EQ(old->correction(), (std::vector<float>{0, 0}));
  EXPECT_EQ(old->mirror(0), (std::vector<float>{3, 6}));
  // A version 3 snapshot cut before its flag is refused.
  EXPECT_FALSE(same->Restore(plain.substr(0, plain.size() - 1)).ok());
  EXPECT_EQ(same->correction(), c);
}

TEST_F(Snapshot, SizeMismatchRefused) {
  auto other = Make(std::vector<float>(kN + 1, 0.5f), 2, 2);
  EXPECT_FALSE(other->Restore(a_->Serialize(true)).ok());
}

// Found by fuzz_snapshot: a snapshot at seq 2^64 − 1 was taken, the next
// publish wrapped seq to 0, and every snapshot written after that was
// refused as "log entry seq 0 out of place". Past 2^62 a seq is refused, in a
// snapshot (ours or a mirror's) and in a neighbour's answer.
TEST_F(Snapshot, ASequenceNumberThatWouldWrapIsRefused) {
  std::string bytes = b_->Serialize(true);
  // 8 bytes of magic, u32 version, u64 size, u64 epoch, then u64 seq (3).
  const size_t seq_at = 8 + 4 + 8 + 8;
  ASSERT_EQ(bytes.substr(seq_at, 8), std::string("\x03\x00\x00\x00\x00\x00\x00\x00", 8));
  for (size_t i = 0; i < 8; ++i) bytes[seq_at + i] = '\xff';
  auto victim = Make(std::vector<float>(kN, 0.5f), 2, 2);
  const absl::Status s = victim->Restore(bytes);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("past 2^62"), std::string::npos) << s;

  PullAnswer far = Keyframe(std::vector<float>(kN, 0.25f), 0, 1);
  far.to_seq = kMaxSeq + 1;
  EXPECT_EQ(victim->Apply(0, far).message().substr(0, 8), "bad_seq:");
  EXPECT_FALSE(victim->mirror_stats(0).initialized);

  // At the limit itself the snapshot is taken, and the next publish starts a
  // new epoch instead of passing it (fuzz_snapshot found the off-by-one): what
  // we write, we read again.
  std::string at_limit = Make(std::vector<float>(kN, 0.5f), 2, 2)->Serialize(true);  // no log to renumber
  ASSERT_EQ(at_limit.substr(seq_at, 8), std::string(8, '\0'));
  for (size_t i = 0; i < 8; ++i) at_limit[seq_at + i] = static_cast<char>((kMaxSeq >> (8 * i)) & 0xff);
  ASSERT_TRUE(victim->Restore(at_limit).ok());
  const uint64_t epoch = victim->epoch();
  std::vector<float> x(kN, 0.75f);
  victim->Publish(x.data(), 1);
  EXPECT_NE(victim->epoch(), epoch);
  EXPECT_EQ(victim->Answer(0, 0).to_seq, 1u);
  auto again = Make(std::vector<float>(kN, 0.5f), 2, 2);
  EXPECT_TRUE(again->Restore(victim->Serialize(true)).ok());
  EXPECT_EQ(again->public_copy(), victim->public_copy());
}

TEST_F(Snapshot, GarbageAndTruncationsRefusedWithoutCrashOrChange) {
  std::string bytes = b_->Serialize(true);
  auto victim = Make(std::vector<float>(kN, 0.5f), 2, 2);
  const uint64_t epoch = victim->epoch();
  const std::string pristine = victim->Serialize(true);
  for (size_t len = 0; len < bytes.size(); ++len) {
    ASSERT_FALSE(victim->Restore(std::string_view(bytes).substr(0, len)).ok()) << len;
  }
  ASSERT_FALSE(victim->Restore(bytes + "x").ok());
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(static_cast<size_t>(byte(rng)) * 3, '\0');
    for (char& c : junk) c = static_cast<char>(byte(rng));
    if (i % 2 == 0 && junk.size() >= 8) std::memcpy(junk.data(), "MYCELFED", 8);
    ASSERT_FALSE(victim->Restore(junk).ok());
  }
  EXPECT_EQ(victim->epoch(), epoch);
  EXPECT_EQ(victim->Serialize(true), pristine);
  // Flipped bytes: some still parse (a flipped float is a valid float), none crash.
  std::uniform_int_distribution<size_t> pos(0, bytes.size() - 1);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = bytes;
    for (int f = 0; f < 1 + i % 3; ++f) bad[pos(rng)] ^= static_cast<char>(1 + byte(rng) % 255);
    auto scratch = Make(std::vector<float>(kN, 0.5f), 2, 2);
    if (!scratch->Restore(bad).ok()) ++refused;
  }
  EXPECT_GT(refused, 0);
}

// ---------------------------------------------------------------- speed

TEST(MergeSpeed, TenMillionParametersTwoMirrors) {
  const size_t n = 10'000'000;
  FederationOptions o = PlainGossip();
  o.max_stale_rounds = 0;  // the same two keyframes merged six times
  auto f = Make(std::vector<float>(n, 0.0f), 2, 2, o);
  ASSERT_TRUE(f->Apply(0, Keyframe(std::vector<float>(n, 1.0f), 0, 2)).ok());
  ASSERT_TRUE(f->Apply(1, Keyframe(std::vector<float>(n, 2.0f), 0, 2)).ok());
  std::vector<float> x(n, 0.0f);
  f->Merge(x.data());  // warm
  auto t0 = std::chrono::steady_clock::now();
  const int kReps = 5;
  for (int i = 0; i < kReps; ++i) f->Merge(x.data());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count() / kReps;
  std::printf("merge of %zu parameters, 2 mirrors: %.1f ms\n", n, ms);
  EXPECT_NEAR(x[n - 1], 1.5 * (1 - 1.0 / 729), 1e-5);  // 6 merges toward (1 + 2 + x)/3: x_k = 1.5(1 − 3^−k)
  EXPECT_LT(ms, 1000.0);            // loose: the machine is shared; tens of ms expected
}

}  // namespace
}  // namespace mycel::federation
