// The real mycel-sim binary on Fashion-MNIST: its JSON, its refusals, and an
// attack that plain gossip loses to and clip survives.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "../integration/harness.h"

namespace mycel::it {
namespace {

// The number after "key": in a flat JSON text (the sim writes no nesting
// before per_node), or NaN.
double Field(const std::string& json, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  const size_t at = json.find(needle);
  if (at == std::string::npos) return std::nan("");
  return std::strtod(json.c_str() + at + needle.size(), nullptr);
}

struct SimRun {
  CommandResult cmd;
  std::string json;
};

SimRun Sim(const TempDir& dir, std::vector<std::string> args) {
  const std::string out = dir.path() + "/sim.json";
  std::remove(out.c_str());
  std::vector<std::string> argv = {BinDir() + "/mycel-sim", "--json", out};
  argv.insert(argv.end(), args.begin(), args.end());
  SimRun r;
  r.cmd = RunCommand(argv, dir.path(), 300);
  r.json = test::ReadFileToString(out);
  return r;
}

TEST(MycelSim, WritesEveryDocumentedFieldAndLearns) {
  TempDir dir;
  SimRun r = Sim(dir, {"--nodes", "6", "--topology", "ring", "--split", "iid", "--rounds", "10"});
  ASSERT_EQ(r.cmd.exit_code, 0) << r.cmd.Describe();
  for (const char* key : {"honest_accuracy_min", "honest_accuracy_mean", "rounds", "seconds",
                          "bytes_per_node_per_round", "seconds_per_round"}) {
    EXPECT_FALSE(std::isnan(Field(r.json, key))) << key << " missing in " << r.json.substr(0, 400);
  }
  EXPECT_EQ(Field(r.json, "rounds"), 10);
  EXPECT_NE(r.json.find("\"per_node\":[{\"node\":0,"), std::string::npos);
  EXPECT_NE(r.json.find("{\"node\":5,"), std::string::npos);
  EXPECT_EQ(r.json.find("{\"node\":6,"), std::string::npos);
  // 400 local steps on IID data: far above chance (10%) on the whole test set.
  EXPECT_GT(Field(r.json, "honest_accuracy_min"), 0.6) << r.json.substr(0, 400);
  EXPECT_GT(Field(r.json, "bytes_per_node_per_round"), 0);
  EXPECT_NE(r.cmd.out.find("honest accuracy min"), std::string::npos) << r.cmd.Describe();
}

TEST(MycelSim, RefusesBadArgumentsByName) {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string says;
  } cases[] = {
      {{"--attackers", "0.2", "--attack", "bribe"}, "unknown attack"},
      {{"--attackers", "0.2", "--attack", "alie:0"}, "unknown attack"},
      {{"--attackers", "0.2", "--attack", "alie:z"}, "unknown attack"},
      {{"--topology", "regular:3"}, "topology regular:3"},
      {{"--split", "dirichlet:0"}, "unknown split"},
      {{"--trust", "maybe"}, "--trust"},
      {{"--attackers", "1.5", "--attack", "signflip"}, "--attackers"},
      {{"--config", "/nonexistent/mycel.toml"}, "/nonexistent/mycel.toml"},
      {{"--missed-pulls", "1"}, "--missed-pulls"},
      {{"--missed-pulls", "-0.1"}, "--missed-pulls"},
  };
  for (const Case& c : cases) {
    // The base run, with each option the case names replaced by its value.
    std::vector<std::pair<std::string, std::string>> opts = {
        {"--nodes", "5"}, {"--topology", "ring"}, {"--split", "iid"}, {"--rounds", "1"}};
    for (size_t i = 0; i + 1 < c.args.size(); i += 2) {
      bool replaced = false;
      for (auto& [k, v] : opts) {
        if (k == c.args[i]) v = c.args[i + 1], replaced = true;
      }
      if (!replaced) opts.emplace_back(c.args[i], c.args[i + 1]);
    }
    std::vector<std::string> args;
    for (const auto& [k, v] : opts) args.insert(args.end(), {k, v});
    SimRun r = Sim(dir, args);
    EXPECT_EQ(r.cmd.exit_code, 2) << r.cmd.Describe();
    EXPECT_NE(r.cmd.err.find(c.says), std::string::npos) << "expected '" << c.says << "': " << r.cmd.Describe();
    EXPECT_TRUE(r.json.empty()) << "no result is written for a refused run";
  }
}

// Two classes a node, each node alone (--topology none): on the whole test
// set a node knows only its two classes (at most 20%), on its own
// distribution it does well; a ring of the same nodes knows more classes.
TEST(MycelSim, NodesAloneAreJudgedOnTheirOwnDistribution) {
  TempDir dir;
  auto run = [&](const std::string& topology) {
    SimRun r = Sim(dir, {"--nodes", "5", "--topology", topology, "--split", "classes:2", "--rounds", "10"});
    EXPECT_EQ(r.cmd.exit_code, 0) << r.cmd.Describe();
    return r;
  };
  SimRun alone = run("none");
  EXPECT_EQ(Field(alone.json, "bytes_per_node_per_round"), 0) << "alone, nothing is pulled";
  EXPECT_LE(Field(alone.json, "honest_accuracy_mean"), 0.2 + 1e-9);
  EXPECT_GT(Field(alone.json, "honest_own_accuracy_mean"), 0.8) << alone.json.substr(0, 600);
  EXPECT_NE(alone.json.find("\"own_accuracy_prior\":"), std::string::npos);
  SimRun ring = run("ring");
  EXPECT_GT(Field(ring.json, "honest_accuracy_mean"), Field(alone.json, "honest_accuracy_mean") + 0.05);
}

// Every pull missed: nodes learn alone, so nothing crosses the ring.
TEST(MycelSim, MissedPullsAreNotPulled) {
  TempDir dir;
  const std::vector<std::string> base = {"--nodes", "4", "--topology", "ring", "--split", "iid", "--rounds", "3"};
  std::vector<std::string> most = base;
  most.insert(most.end(), {"--missed-pulls", "0.999"});
  SimRun none = Sim(dir, most);
  ASSERT_EQ(none.cmd.exit_code, 0) << none.cmd.Describe();
  SimRun all = Sim(dir, base);
  ASSERT_EQ(all.cmd.exit_code, 0) << all.cmd.Describe();
  EXPECT_LT(Field(none.json, "bytes_per_node_per_round"), Field(all.json, "bytes_per_node_per_round") / 50);
}

// Two of eight nodes publish their neighbourhood's mean plus 100 times their
// own displacement from it. Plain gossip is dragged far below what the same
// run learns without attackers; reject keeps every honest node within a few
// points of it.
TEST(MycelSim, ScaledAttackersBreakPlainGossipAndRejectHoldsThem) {
  TempDir dir;
  const std::vector<std::string> base = {"--nodes", "8", "--topology", "regular:4", "--split", "iid",
                                         "--rounds", "30", "--seed", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    SimRun r = Sim(dir, a);
    EXPECT_EQ(r.cmd.exit_code, 0) << r.cmd.Describe();
    return Field(r.json, "honest_accuracy_min");
  };
  const double clean = with({});
  const double none = with({"--attackers", "0.25", "--attack", "scale:100", "--robust", "none"});
  const double reject = with({"--attackers", "0.25", "--attack", "scale:100", "--robust", "reject"});
  EXPECT_GT(clean, 0.75);
  EXPECT_LT(none, clean - 0.2) << "the attack must be real";
  EXPECT_GT(reject, clean - 0.03) << "reject must hold every honest node near the clean run (none: " << none << ")";
}

// alie:Z moves the attackers' copies Z standard deviations against the
// neighbourhood's progress: a larger Z is a louder attack, and costs plain
// gossip more than the default z = 1.
TEST(MycelSim, AlieTakesItsDeviationFromTheAttackName) {
  TempDir dir;
  auto with = [&](const std::string& attack) {
    SimRun r = Sim(dir, {"--nodes", "8", "--topology", "regular:4", "--split", "iid", "--rounds", "30", "--seed",
                         "1", "--attackers", "0.25", "--attack", attack, "--robust", "none"});
    EXPECT_EQ(r.cmd.exit_code, 0) << r.cmd.Describe();
    return Field(r.json, "honest_accuracy_min");
  };
  const double quiet = with("alie");
  const double loud = with("alie:16");
  EXPECT_LT(loud, quiet - 0.1) << "alie " << quiet << ", alie:16 " << loud;
}

}  // namespace
}  // namespace mycel::it
