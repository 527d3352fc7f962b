// Per-neighbour trust (FederationOptions::trust): probes, judgement per
// parameter group, quarantine and recovery, and its place in snapshots. The
// validation loss here is a quadratic around a known optimum, so which share
// helps and which hurts is known exactly.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "federation/federation.h"
#include "pull_answers.h"

namespace mycel::federation {
namespace {

const std::string kKeys[3] = {"neighbour-key-0", "neighbour-key-1", "neighbour-key-2"};

// A node with three neighbours, four weights in two layers ("a": 0–1, "b": 2–3).
struct Trio {
  std::unique_ptr<Federation> fed;
  uint64_t epoch = 10;

  explicit Trio(FederationOptions o = Trusting()) {
    auto f = Federation::Create(o, {0, 0, 0, 0}, 3, 3);
    EXPECT_TRUE(f.ok()) << f.status();
    fed = std::move(f).value();
    fed->SetPeers({kKeys[0], kKeys[1], kKeys[2]});
    EXPECT_TRUE(fed->SetGroups({"a", "b"}, {2, 2}).ok());
  }
  static FederationOptions Trusting() {
    FederationOptions o = PlainGossip();
    o.trust = true;
    return o;
  }
  // Neighbour j now publishes `v` (a keyframe of a new epoch each time).
  void Show(int j, std::vector<float> v) {
    ASSERT_TRUE(fed->Apply(j, Keyframe(std::move(v), 100, 3, ++epoch)).ok());
  }
  // Three rounds in which neighbours 0 and 1 publish near opt = 1 and
  // neighbour 2 publishes `third`, each probed at x = 0.8 (defined below).
  void ThreeRounds(const std::vector<float>& third);
};

// The validation loss: 1 + ||v − opt||².
double Loss(const float* v, const std::vector<float>& opt) {
  double l = 1;
  for (size_t k = 0; k < opt.size(); ++k) l += (v[k] - opt[k]) * (v[k] - opt[k]);
  return l;
}

// One probe at x, judged by Loss.
void ProbeOnce(Federation& fed, const std::vector<float>& x, const std::vector<float>& opt) {
  TrustProbe p = fed.Probe(x.data());
  std::vector<double> losses;
  std::vector<float> c(x.size());
  for (size_t i = 0; i < p.candidates(); ++i) {
    p.Candidate(i, c.data());
    losses.push_back(Loss(c.data(), opt));
  }
  fed.Judge(p, losses);
}

const std::vector<float> kOpt = {1, 1, 1, 1};
const std::vector<float> kX = {0.8f, 0.8f, 0.8f, 0.8f};

void Trio::ThreeRounds(const std::vector<float>& third) {
  for (int round = 0; round < 3; ++round) {
    Show(0, {1.1f, 0.9f, 1.0f, 1.1f});
    Show(1, {0.9f, 1.1f, 1.1f, 0.9f});
    Show(2, third);
    ProbeOnce(*fed, kX, kOpt);
  }
}

TEST(Trust, ProbeCandidatesAreTheMergeWithAndWithoutEachShare) {
  Trio t;
  t.Show(0, {1, 1, 1, 1});
  t.Show(1, {2, 2, 2, 2});
  t.Show(2, {-4, 4, -4, 4});
  const std::vector<float> x = {0.5f, 0.5f, 0.5f, 0.5f};
  TrustProbe p = t.fed->Probe(x.data());
  ASSERT_EQ(p.shares.size(), 6u);  // 3 neighbours × 2 layers
  ASSERT_EQ(p.candidates(), 7u);
  // `merged` is what Merge makes of x (β = 0: nothing else moves it).
  std::vector<float> merged = x;
  t.fed->Merge(merged.data());
  std::vector<float> c(4);
  p.Candidate(0, c.data());
  for (size_t k = 0; k < 4; ++k) EXPECT_FLOAT_EQ(c[k], merged[k]);
  // Fully trusted: candidate k + 1 is the merge without share k, in its layer only.
  for (size_t s = 0; s < p.shares.size(); ++s) {
    const auto& sh = p.shares[s];
    p.Candidate(s + 1, c.data());
    const auto m = t.fed->mirror(sh.peer);
    for (size_t k = 0; k < 4; ++k) {
      const bool in_layer = k >= sh.offset && k < sh.offset + sh.delta.size();
      // Metropolis with degree 3: w = 1/4.
      const float expect = in_layer ? merged[k] - 0.25f * (m[k] - x[k]) : merged[k];
      EXPECT_NEAR(c[k], expect, 1e-6) << "share " << s << " value " << k;
    }
  }
}

TEST(Trust, AHarmfulNeighbourIsQuarantinedAndLeftOutOfTheMerge) {
  Trio t;
  const std::vector<float> opt = {1, 1, 1, 1};
  const std::vector<float> x = {0.8f, 0.8f, 0.8f, 0.8f};
  t.ThreeRounds({-20, 20, -20, 20});  // far off in both layers
  for (int j : {0, 1}) {
    const MirrorStats m = t.fed->mirror_stats(j);
    ASSERT_EQ(m.trust.size(), 2u);
    EXPECT_EQ(m.trust[0], 1.0) << j;
    EXPECT_EQ(m.trust[1], 1.0) << j;
    EXPECT_TRUE(m.quarantine.empty()) << m.quarantine;
    EXPECT_EQ(m.hurt_probes, 0);
  }
  const MirrorStats bad = t.fed->mirror_stats(2);
  EXPECT_EQ(bad.trust[0], 0.0);
  EXPECT_EQ(bad.trust[1], 0.0);
  EXPECT_EQ(bad.trust_probes, 3);
  EXPECT_EQ(bad.hurt_probes, 3);
  EXPECT_NE(bad.quarantine.find("raised validation loss"), std::string::npos) << bad.quarantine;
  // The merge now takes only the honest two (each at 1/4).
  std::vector<float> merged = x;
  t.fed->Merge(merged.data());
  const std::vector<float> honest_only = {0.8f + 0.25f * (0.3f + 0.1f), 0.8f + 0.25f * (0.1f + 0.3f),
                                          0.8f + 0.25f * (0.2f + 0.3f), 0.8f + 0.25f * (0.3f + 0.1f)};
  for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(merged[k], honest_only[k], 1e-5) << k;
}

TEST(Trust, AQuarantinedNeighbourTakesBackWhatItTaughtTheDriftCorrection) {
  // Two nodes merge the same rounds; on `t` neighbour 2 publishes poison and
  // is trusted for five merges before probes quarantine it, on `twin` it
  // never publishes. Once quarantined its pull must be gone from c too, not
  // only from d: c integrates each merge for about 1 / (1 − β) rounds.
  FederationOptions o = Trio::Trusting();
  o.drift_correction = 0.9;
  Trio t(o), twin(o);
  for (int round = 0; round < 5; ++round) {
    for (Trio* f : {&t, &twin}) {
      f->Show(0, {1.1f, 0.9f, 1.0f, 1.1f});
      f->Show(1, {0.9f, 1.1f, 1.1f, 0.9f});
    }
    t.Show(2, {-20, 20, -20, 20});
    std::vector<float> x = kX, y = kX;
    t.fed->Merge(x.data());
    twin.fed->Merge(y.data());
  }
  const std::vector<float> poisoned = t.fed->correction(), clean = twin.fed->correction();
  ASSERT_EQ(poisoned.size(), 4u);
  EXPECT_GT(std::abs(poisoned[0] - clean[0]), 1.0f);  // it taught c its pull
  t.ThreeRounds({-20, 20, -20, 20});
  ASSERT_EQ(t.fed->mirror_stats(2).trust, (std::vector<double>{0.0, 0.0}));
  const std::vector<float> after = t.fed->correction();
  for (size_t k = 0; k < 4; ++k) EXPECT_NEAR(after[k], clean[k], 1e-4) << k;
  // The honest two keep what they taught, and the next merges teach c as
  // the twin's do.
  std::vector<float> x = kX, y = kX;
  t.fed->Merge(x.data());
  twin.fed->Merge(y.data());
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_NEAR(t.fed->correction()[k], twin.fed->correction()[k], 1e-4) << k;
    EXPECT_NEAR(x[k], y[k], 1e-5) << k;
  }
}

TEST(Trust, IsKeptPerLayer) {
  Trio t;
  const std::vector<float> opt = {1, 1, 1, 1};
  const std::vector<float> x = {0.8f, 0.8f, 0.8f, 0.8f};
  t.ThreeRounds({1.0f, 1.0f, -30, 30});  // good in layer a, poison in layer b
  const MirrorStats m = t.fed->mirror_stats(2);
  EXPECT_EQ(m.trust[0], 1.0);
  EXPECT_EQ(m.trust[1], 0.0);
  EXPECT_EQ(m.quarantine.rfind("b: ", 0), 0u) << m.quarantine;
  std::vector<float> merged = x;
  t.fed->Merge(merged.data());
  EXPECT_NEAR(merged[0], 0.8f + 0.25f * (0.3f + 0.1f + 0.2f), 1e-5);  // layer a: all three
  EXPECT_NEAR(merged[2], 0.8f + 0.25f * (0.2f + 0.3f), 1e-5);         // layer b: the honest two
}

TEST(Trust, AQuarantinedNeighbourThatHelpsAgainIsTrustedAgain) {
  Trio t;
  const std::vector<float> opt = {1, 1, 1, 1};
  const std::vector<float> x = {0.8f, 0.8f, 0.8f, 0.8f};
  auto honest = [&] {
    t.Show(0, {1.1f, 0.9f, 1.0f, 1.1f});
    t.Show(1, {0.9f, 1.1f, 1.1f, 0.9f});
  };
  for (int round = 0; round < 2; ++round) {
    honest();
    t.Show(2, {-20, 20, -20, 20});
    ProbeOnce(*t.fed, x, opt);
  }
  ASSERT_FALSE(t.fed->mirror_stats(2).quarantine.empty());
  int probes = 0;
  while (t.fed->mirror_stats(2).trust[0] < 1.0 && probes < 100) {
    honest();
    t.Show(2, {1, 1, 1, 1});  // now sends the optimum: its share helps most
    ProbeOnce(*t.fed, x, opt);
    ++probes;
  }
  const MirrorStats m = t.fed->mirror_stats(2);
  EXPECT_EQ(m.trust[0], 1.0);
  EXPECT_EQ(m.trust[1], 1.0);
  EXPECT_TRUE(m.quarantine.empty()) << m.quarantine;
  // Regained step by step (trust_reward per probe), not at once.
  EXPECT_GE(probes, 5);
}

TEST(Trust, NonFiniteLossesCountAsTheWorstHarmOrVoidTheProbe) {
  Trio t;
  t.Show(0, {1, 1, 1, 1});
  t.Show(1, {1, 1, 1, 1});
  t.Show(2, {1, 1, 1, 1});
  const std::vector<float> x = {0, 0, 0, 0};
  TrustProbe p = t.fed->Probe(x.data());
  ASSERT_EQ(p.candidates(), 7u);
  std::vector<double> losses(7, 2.0);
  losses[0] = std::numeric_limits<double>::quiet_NaN();  // the merge itself: nothing to judge by
  t.fed->Judge(p, losses);
  EXPECT_EQ(t.fed->mirror_stats(0).trust_probes, 0);
  losses.assign(7, 2.0);
  // Taking out neighbour 0's layer-a share broke the model: its share holds
  // us up. The other candidates cost what the merge costs: no harm.
  losses[1] = std::numeric_limits<double>::infinity();
  t.fed->Judge(p, losses);
  EXPECT_EQ(t.fed->mirror_stats(0).trust[0], 1.0);
  EXPECT_EQ(t.fed->mirror_stats(0).hurt_probes, 0);
  // Judge with the wrong number of losses changes nothing.
  t.fed->Judge(p, std::vector<double>(3, 1.0));
  EXPECT_EQ(t.fed->mirror_stats(0).trust_probes, 1);
}

TEST(Trust, OffMeansNoProbeAndFullWeights) {
  Trio t(PlainGossip());
  t.Show(0, {1, 1, 1, 1});
  const std::vector<float> x = {0, 0, 0, 0};
  EXPECT_TRUE(t.fed->Probe(x.data()).shares.empty());
  EXPECT_EQ(t.fed->Probe(x.data()).candidates(), 0u);
}

TEST(Trust, CreateAndSetGroupsRefuseWhatCannotWork) {
  FederationOptions o = PlainGossip();
  o.trust = true;
  o.robust = "median";
  auto f = Federation::Create(o, {0, 0}, 1, 1);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("weighted merges"), std::string::npos) << f.status();
  o.robust = "reject";
  o.trust_tolerance = 0;
  EXPECT_FALSE(Federation::Create(o, {0, 0}, 1, 1).ok());
  o.trust_tolerance = 0.05;
  o.trust_penalty = 1.5;
  EXPECT_FALSE(Federation::Create(o, {0, 0}, 1, 1).ok());
  o.trust_penalty = 0.5;
  auto ok = Federation::Create(o, {0, 0, 0}, 1, 1);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_FALSE((*ok)->SetGroups({"a", "b"}, {1, 1}).ok());      // 2 of 3 values
  EXPECT_FALSE((*ok)->SetGroups({"a", "b"}, {3, 0}).ok());      // an empty group
  EXPECT_FALSE((*ok)->SetGroups({"a"}, {1, 2}).ok());           // names and sizes differ
  EXPECT_TRUE((*ok)->SetGroups({"a", "b"}, {1, 2}).ok());
  EXPECT_EQ((*ok)->group_names(), (std::vector<std::string>{"a", "b"}));
}

TEST(Trust, SurvivesARestartAndAVersionFourSnapshotLoadsFullyTrusted) {
  Trio t;
  const std::vector<float> opt = {1, 1, 1, 1};
  const std::vector<float> x = {0.8f, 0.8f, 0.8f, 0.8f};
  t.ThreeRounds({-20, 20, -20, 20});
  const std::string snap = t.fed->Serialize(/*clean=*/true);
  Trio back;
  ASSERT_TRUE(back.fed->Restore(snap).ok());
  const MirrorStats m = back.fed->mirror_stats(2);
  ASSERT_EQ(m.trust.size(), 2u);
  EXPECT_EQ(m.trust[0], 0.0);
  EXPECT_EQ(m.hurt_probes, 3);
  EXPECT_EQ(m.quarantine, t.fed->mirror_stats(2).quarantine);
  EXPECT_EQ(m.harm, t.fed->mirror_stats(2).harm);

  // The same state as version 4 wrote it: no trust record after each key.
  Trio fresh;
  std::string v4 = fresh.fed->Serialize(true);  // three uninitialized, never-probed mirrors
  ASSERT_EQ(v4[8], 5);
  v4[8] = 4;
  for (const std::string& key : kKeys) {
    const size_t at = v4.find(key);
    ASSERT_NE(at, std::string::npos);
    // u32 groups (0), i64 trust_probes, i64 hurt_probes, u32 quarantine length: 24 zero bytes.
    ASSERT_EQ(v4.substr(at + key.size(), 24), std::string(24, '\0'));
    v4.erase(at + key.size(), 24);
  }
  ASSERT_TRUE(back.fed->Restore(v4).ok());
  EXPECT_TRUE(back.fed->mirror_stats(2).trust.empty());  // fully trusted
  EXPECT_TRUE(back.fed->mirror_stats(2).quarantine.empty());
  // A trust outside [0, 1] is a corrupt snapshot, refused without change.
  std::string bad = snap;
  const size_t at = bad.find(kKeys[2]) + kKeys[2].size() + 4;  // the first trust value of mirror 2
  const double two = 2.0;
  std::memcpy(&bad[at], &two, sizeof two);
  Trio other;
  const absl::Status s = other.fed->Restore(bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("trust"), std::string::npos) << s;
}

}  // namespace
}  // namespace mycel::federation
