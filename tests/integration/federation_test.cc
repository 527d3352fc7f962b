// Federation end to end: real myceld processes on loopback ports, pinned by
// the keys `mycel id` prints, each holding two of Fashion-MNIST's ten classes.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// [model], [training] and [federation] of configs/federation.toml: the
// measured settings the demo uses too.
std::string SharedSections() {
  std::string all = ReadFileOrDie(std::string(MYCEL_SOURCE_DIR) + "/configs/federation.toml");
  return all.substr(all.find("\n[model]\n") + 1);
}

struct FedNode {
  std::unique_ptr<TestNode> node;
  std::string name;
  int port = 0;
  std::string key;
};

class Federation {
 public:
  explicit Federation(const std::string& dir) : dir_(dir) {}

  FedNode& Add(const std::string& name) {
    FedNode n;
    n.name = name;
    n.node = std::make_unique<TestNode>(dir_, name);
    n.port = FreePort();
    auto id = n.node->Mycel({"id"});
    EXPECT_EQ(id.exit_code, 0) << id.Describe();
    n.key = id.out.substr(0, id.out.find('\n'));
    nodes_.push_back(std::move(n));
    return nodes_.back();
  }

  // Writes node i's config pinning `peers` (indices); `unpinned_keys` adds
  // entries whose key is not the neighbour's real one.
  void WriteConfig(size_t i, const std::vector<size_t>& peers) {
    FedNode& n = nodes_[i];
    std::string toml = "[node]\nname = \"" + n.name + "\"\nstate_dir = \"" + n.node->state_dir() +
                       "\"\nlisten = \"127.0.0.1:" + std::to_string(n.port) + "\"\nlog_level = \"info\"\n\n" +
                       SharedSections() + "\n";
    for (size_t j : peers) {
      toml += "[[peers]]\nname = \"" + nodes_[j].name + "\"\naddress = \"127.0.0.1:" +
              std::to_string(nodes_[j].port) + "\"\npublic_key = \"" + nodes_[j].key + "\"\n\n";
    }
    WriteFileOrDie(n.node->config_path(), toml);
  }

  FedNode& operator[](size_t i) { return nodes_[i]; }
  size_t size() const { return nodes_.size(); }

 private:
  std::string dir_;
  std::vector<FedNode> nodes_;
};

double TestAccuracy(const TestNode& node) {
  auto r = node.Mycel({"eval", "--json", T10kImages(), T10kLabels()});
  if (r.exit_code != 0) return -1;
  auto j = ParseJson(r.out);
  return j ? j->Num("accuracy") : -1;
}

void Ingest(const TestNode& node, const std::string& labels) {
  auto r = node.Mycel({"ingest", "--labels", labels, TrainImages(), TrainLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("stored 12000 examples"), std::string::npos) << r.out;
}

// "round:accuracy " for a trajectory.
std::string RoundAndAccuracy(double round, double accuracy) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.0f:%.3f ", round, accuracy);
  return buf;
}

TEST(FederationTest, RingOfFiveLearnsAllTenClassesWhileANodeAloneCannot) {
  TempDir tmp;
  Federation fed(tmp.path());
  constexpr size_t kRing = 5;
  for (size_t i = 0; i < kRing; ++i) fed.Add("node" + std::to_string(i));
  FedNode& alone = fed.Add("alone");
  for (size_t i = 0; i < kRing; ++i) fed.WriteConfig(i, {(i + kRing - 1) % kRing, (i + 1) % kRing});
  fed.WriteConfig(kRing, {});

  // A laptop alone with two classes: it learns them, but nothing else.
  ASSERT_TRUE(alone.node->daemon().Start());
  Ingest(*alone.node, "0,1");
  ASSERT_TRUE(alone.node->WaitForStepsAbove(3000, 120));
  double alone_acc = TestAccuracy(*alone.node);
  EXPECT_GT(alone_acc, 0.15);  // it did learn its two classes (chance is 0.1)
  EXPECT_LT(alone_acc, 0.25);
  EXPECT_EQ(alone.node->daemon().Stop(), 0);

  for (size_t i = 0; i < kRing; ++i) ASSERT_TRUE(fed[i].node->daemon().Start());
  for (size_t i = 0; i < kRing; ++i) {
    Ingest(*fed[i].node, std::to_string(2 * i) + "," + std::to_string(2 * i + 1));
  }

  // Mid-run, node 2 stops and comes back: it resumes from its final
  // checkpoint and catches up from its neighbours.
  ASSERT_TRUE(PollUntil([&] { return fed[2].node->StatusNum("rounds") > 100; }, 120, 1));
  EXPECT_EQ(fed[2].node->daemon().Stop(), 0);
  SleepSeconds(3);
  ASSERT_TRUE(fed[2].node->daemon().Start());
  EXPECT_NE(fed[2].node->daemon().LogSinceStart().find("resumed from"), std::string::npos);

  // Each poll's worst node, with node 0's rounds: a failure shows whether the
  // ring stalled early or was still climbing when time ran out.
  std::vector<double> acc(kRing, 0);
  std::string trajectory;
  bool all_good = PollUntil(
      [&] {
        bool ok = true;
        double worst = 1;
        for (size_t i = 0; i < kRing; ++i) {
          acc[i] = TestAccuracy(*fed[i].node);
          ok = ok && acc[i] >= 0.70;
          worst = std::min(worst, acc[i]);
        }
        trajectory += RoundAndAccuracy(fed[0].node->StatusNum("rounds"), worst);
        return ok;
      },
      480 * kLearningTimeScale, 10);
  std::string summary;
  for (size_t i = 0; i < kRing; ++i) {
    summary += fed[i].name + "=" + std::to_string(acc[i]) + " ";
    if (!all_good) {
      auto st = fed[i].node->Status();
      if (st) summary += "(" + st->Str("state") + ": " + st->Str("reason") + ", steps " +
                         std::to_string(static_cast<int64_t>(st->Num("steps"))) + ") ";
    }
  }
  EXPECT_TRUE(all_good) << "accuracy on all ten classes: " << summary << "\nworst node by node0's round: " << trajectory;
  std::printf("worst node by node0's round: %s\n", trajectory.c_str());

  // What `mycel peers` and `mycel status` say of a healthy ring.
  auto peers = fed[0].node->Mycel({"peers", "--json"});
  ASSERT_EQ(peers.exit_code, 0) << peers.Describe();
  auto pj = ParseJson(peers.out);
  ASSERT_TRUE(pj.has_value()) << peers.out;
  const Json* list = pj->Find("peers");
  ASSERT_NE(list, nullptr);
  ASSERT_EQ(list->array.size(), 2u);
  for (const Json& p : list->array) {
    EXPECT_EQ(p.Str("state"), "connected") << peers.out;
    EXPECT_GT(p.Num("deltas_accepted") + p.Num("keyframes_accepted"), 50) << peers.out;
    EXPECT_GT(p.Num("bytes_received"), 0);
    EXPECT_GT(p.Num("seq_applied"), 0);
    // A 64-bit random epoch, as a string: a JSON number would lose its low bits in jq or JavaScript.
    const Json* epoch = p.Find("epoch");
    ASSERT_NE(epoch, nullptr);
    EXPECT_EQ(epoch->type, Json::Type::kString) << peers.out;
    EXPECT_TRUE(std::regex_match(epoch->string, std::regex("[1-9][0-9]*"))) << peers.out;
  }
  auto st = fed[0].node->Status();
  ASSERT_TRUE(st.has_value());
  EXPECT_GT(st->Num("rounds"), 100);
  EXPECT_GT(st->Num("bytes_sent"), 0);
  EXPECT_GT(st->Num("bytes_received"), 0);

  for (size_t i = 0; i < kRing; ++i) EXPECT_EQ(fed[i].node->daemon().Stop(), 0);
}

// `mycel peers --json` of a node, parsed; the test fails if it does not parse.
std::optional<Json> Peers(const TestNode& node) { return node.MycelJson({"peers"}); }

TEST(FederationTest, AnIntruderWithAnUnpinnedKeyGetsNothingAndChangesNothing) {
  TempDir tmp;
  Federation fed(tmp.path());
  fed.Add("a");
  fed.Add("b");
  fed.Add("intruder");
  fed.WriteConfig(0, {1});
  fed.WriteConfig(1, {0});
  fed.WriteConfig(2, {0});  // the intruder pins a, but a does not pin it
  // Paused, a runs no rounds of its own, so nothing but a caller could change
  // its weights. (With rounds on, a paused pair keeps merging toward each
  // other for minutes: the lossy codec's residual and the correction fade by
  // ulps, and no fixed wait makes two evaluations agree.)
  TestNode& a = *fed[0].node;
  WriteFileOrDie(a.config_path(), ReadFileOrDie(a.config_path()) + "\n[policy]\ngossip_when_held = false\n");
  for (size_t i = 0; i < 2; ++i) ASSERT_TRUE(fed[i].node->daemon().Start());
  Ingest(a, "0,1");
  Ingest(*fed[1].node, "2,3");
  ASSERT_TRUE(PollUntil([&] { return a.StatusNum("rounds") > 20; }, 120, 0.5));
  ASSERT_EQ(a.Mycel({"pause"}).exit_code, 0);
  auto held = [&] {
    auto pj = Peers(a);
    return pj ? pj->Num("rounds_held") : 0.0;
  };
  ASSERT_TRUE(PollUntil([&] { return held() > 1; }, 30, 0.2));  // the round under way has ended
  const double rounds = a.StatusNum("rounds");
  const double held0 = held();
  auto before = a.Mycel({"eval", "--json", T10kImages(), T10kLabels()});
  ASSERT_EQ(before.exit_code, 0) << before.Describe();

  ASSERT_TRUE(fed[2].node->daemon().Start());
  ASSERT_TRUE(PollUntil([&] {
    auto r = fed[2].node->Mycel({"peers", "--json"});
    return r.out.find("unpinned_key") != std::string::npos;
  }, 60, 0.5)) << fed[2].node->Mycel({"peers"}).out;

  auto ip = ParseJson(fed[2].node->Mycel({"peers", "--json"}).out);
  ASSERT_TRUE(ip.has_value());
  const Json& to_a = ip->Find("peers")->array.at(0);
  EXPECT_EQ(to_a.Str("state"), "rejected");
  EXPECT_EQ(to_a.Num("keyframes_accepted"), 0);
  EXPECT_EQ(to_a.Num("deltas_accepted"), 0);
  EXPECT_EQ(to_a.Num("seq_applied"), 0);

  auto ap = ParseJson(fed[0].node->Mycel({"peers", "--json"}).out);
  ASSERT_TRUE(ap.has_value());
  EXPECT_GT(ap->Num("refused_unknown"), 0);
  EXPECT_EQ(ap->Find("peers")->array.size(), 1u);  // only b is a neighbour
  auto after = a.Mycel({"eval", "--json", T10kImages(), T10kLabels()});
  EXPECT_EQ(before.out, after.out);  // same weights, to the last digit
  EXPECT_EQ(a.StatusNum("rounds"), rounds);  // and a ran no round that could explain a change
  // The scheduler keeps skipping rounds while held. How many it skipped
  // while the intruder knocked depends on the machine's pace, so wait for a
  // few more rather than count them at one instant.
  EXPECT_TRUE(PollUntil([&] { return held() > held0 + 3; }, 30, 0.2)) << held();
  EXPECT_EQ(a.StatusNum("rounds"), rounds);
  EXPECT_NE(fed[0].node->daemon().Log().find("unpinned_key"), std::string::npos);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fed[i].node->daemon().Stop(), 0);
}

// The state `node` reports for neighbour `name`, or "" if it is not listed.
std::string PeerState(const TestNode& node, const std::string& name) {
  auto pj = Peers(node);
  if (!pj || !pj->Find("peers")) return "";
  for (const Json& p : pj->Find("peers")->array) {
    if (p.Str("name") == name) return p.Str("state");
  }
  return "";
}

TEST(FederationTest, SighupReloadsThePeerListKeepingWhatWasLearnt) {
  TempDir tmp;
  Federation fed(tmp.path());
  fed.Add("a");
  fed.Add("b");
  fed.Add("c");
  fed.WriteConfig(0, {1});     // a pins b only
  fed.WriteConfig(1, {0});
  fed.WriteConfig(2, {0});     // c pins a, which does not pin it yet
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(fed[i].node->daemon().Start());
  TestNode& a = *fed[0].node;
  ASSERT_TRUE(PollUntil([&] { return PeerState(a, "b") == "connected"; }, 60, 0.5));
  ASSERT_TRUE(PollUntil([&] { return PeerState(*fed[2].node, "a") == "rejected"; }, 60, 0.5));
  const double rounds = a.StatusNum("rounds");
  auto before = Peers(a);
  ASSERT_TRUE(before.has_value());
  const double b_keyframes = before->Find("peers")->array.at(0).Num("keyframes_accepted");
  EXPECT_GE(b_keyframes, 1);

  // a now pins c too (in front of b): no restart.
  fed.WriteConfig(0, {2, 1});
  a.daemon().Signal(SIGHUP);
  ASSERT_TRUE(PollUntil([&] { return PeerState(a, "c") == "connected"; }, 60, 0.5)) << a.daemon().LogSinceStart();
  ASSERT_TRUE(PollUntil([&] { return PeerState(*fed[2].node, "a") == "connected"; }, 60, 0.5))
      << fed[2].node->Mycel({"peers"}).out;
  auto after = Peers(a);
  ASSERT_TRUE(after.has_value());
  const auto& list = after->Find("peers")->array;
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].Str("name"), "c");
  EXPECT_EQ(list[1].Str("name"), "b");
  // b kept its counters, and (the log line below) its mirror. How many
  // keyframes it sends depends on load: a reader that misses a round of dense
  // deltas gets one, so the count is not the evidence.
  EXPECT_GE(list[1].Num("keyframes_accepted"), b_keyframes);
  EXPECT_EQ(list[1].Str("state"), "connected");
  EXPECT_TRUE(a.daemon().Running());
  EXPECT_GT(a.StatusNum("rounds"), rounds);  // the same process went on
  EXPECT_NE(a.daemon().LogSinceStart().find("peer list reloaded: 2 neighbour(s), 1 kept"), std::string::npos)
      << a.daemon().LogSinceStart();

  // b is dropped: a refuses it from then on.
  fed.WriteConfig(0, {2});
  a.daemon().Signal(SIGHUP);
  ASSERT_TRUE(PollUntil([&] { return Peers(a)->Find("peers")->array.size() == 1; }, 30, 0.5));
  ASSERT_TRUE(PollUntil([&] {
    auto r = fed[1].node->Mycel({"peers", "--json"});
    return r.out.find("unpinned_key") != std::string::npos;
  }, 60, 0.5)) << fed[1].node->Mycel({"peers"}).out;
  EXPECT_EQ(PeerState(a, "c"), "connected");

  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(fed[i].node->daemon().Stop(), 0);
}

TEST(FederationTest, HeldNodeWithGossipWhenHeldOffSkipsRoundsButStillServes) {
  TempDir tmp;
  Federation fed(tmp.path());
  fed.Add("a");
  fed.Add("b");
  fed.WriteConfig(0, {1});
  fed.WriteConfig(1, {0});
  TestNode& a = *fed[0].node;
  TestNode& b = *fed[1].node;
  WriteFileOrDie(a.config_path(), ReadFileOrDie(a.config_path()) + "\n[policy]\ngossip_when_held = false\n");
  for (size_t i = 0; i < 2; ++i) ASSERT_TRUE(fed[i].node->daemon().Start());
  auto num = [](const TestNode& n, const std::string& key) {
    auto pj = Peers(n);
    return pj ? pj->Num(key) : std::nan("");
  };
  ASSERT_TRUE(PollUntil([&] { return num(a, "rounds") > 5; }, 60, 0.2));
  EXPECT_EQ(num(a, "rounds_held"), 0);  // waiting for data is not a hold

  // Paused by the user: a's rounds stop, its held rounds count, and b keeps pulling from it.
  ASSERT_EQ(a.Mycel({"pause"}).exit_code, 0);
  ASSERT_TRUE(PollUntil([&] { return num(a, "rounds_held") > 0; }, 30, 0.2));
  const double rounds = num(a, "rounds");
  const double b_pulls = Peers(b)->Find("peers")->array.at(0).Num("pulls_ok");
  ASSERT_TRUE(PollUntil([&] { return num(a, "rounds_held") > 20; }, 30, 0.2));
  EXPECT_LE(num(a, "rounds"), rounds + 1);  // at most the round already under way
  auto bp = Peers(b);
  ASSERT_TRUE(bp.has_value());
  EXPECT_GT(bp->Find("peers")->array.at(0).Num("pulls_ok"), b_pulls + 5) << "a stopped serving while held";
  EXPECT_EQ(bp->Find("peers")->array.at(0).Str("state"), "connected");

  // Resumed: rounds go on.
  ASSERT_EQ(a.Mycel({"resume"}).exit_code, 0);
  EXPECT_TRUE(PollUntil([&] { return num(a, "rounds") > rounds + 10; }, 30, 0.2));
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(fed[i].node->daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
