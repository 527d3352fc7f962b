#include "sim/graph.h"

#include <algorithm>
#include <numeric>
#include <set>

#include <gtest/gtest.h>

namespace mycel::sim {
namespace {

void ExpectSimpleUndirected(const Graph& g) {
  for (size_t i = 0; i < g.size(); ++i) {
    std::set<int> seen;
    for (int j : g[i]) {
      EXPECT_NE(j, static_cast<int>(i)) << "self loop at " << i;
      EXPECT_TRUE(seen.insert(j).second) << "double edge " << i << "-" << j;
      const auto& back = g[static_cast<size_t>(j)];
      EXPECT_TRUE(std::count(back.begin(), back.end(), static_cast<int>(i)) == 1) << i << "-" << j << " one way";
    }
  }
}

TEST(Topology, RingTorusAndRegularHaveTheirDegrees) {
  auto ring = MakeTopology("ring", 7, 1);
  ASSERT_TRUE(ring.ok()) << ring.status();
  for (const auto& adj : *ring) EXPECT_EQ(adj.size(), 2u);
  auto torus = MakeTopology("torus", 16, 1);
  ASSERT_TRUE(torus.ok()) << torus.status();
  for (const auto& adj : *torus) EXPECT_EQ(adj.size(), 4u);
  for (int n : {16, 64, 256}) {
    auto reg = MakeTopology("regular:4", n, 3);
    ASSERT_TRUE(reg.ok()) << reg.status();
    ExpectSimpleUndirected(*reg);
    EXPECT_TRUE(Connected(*reg));
    for (const auto& adj : *reg) EXPECT_EQ(adj.size(), 4u);
  }
  for (const Graph& g : {*ring, *torus}) {
    ExpectSimpleUndirected(g);
    EXPECT_TRUE(Connected(g));
  }
}

TEST(Topology, SmallWorldKeepsTheEdgeCountAndRewires) {
  auto lattice = MakeTopology("smallworld:4:0", 40, 1);
  auto rewired = MakeTopology("smallworld:4:0.3", 40, 1);
  ASSERT_TRUE(lattice.ok() && rewired.ok());
  auto edges = [](const Graph& g) {
    size_t e = 0;
    for (const auto& adj : g) e += adj.size();
    return e / 2;
  };
  EXPECT_EQ(edges(*lattice), 80u);
  EXPECT_EQ(edges(*rewired), 80u);
  EXPECT_TRUE(Connected(*rewired));
  ExpectSimpleUndirected(*rewired);
  EXPECT_NE(*lattice, *rewired);
  EXPECT_EQ(*rewired, *MakeTopology("smallworld:4:0.3", 40, 1)) << "the seed fixes the graph";
}

TEST(Topology, BadSpecsAreRefusedWithTheirName) {
  for (const char* spec : {"star", "regular:3", "regular:0", "regular:x", "torus", "smallworld:3:0.1",
                           "smallworld:4:2", "ring:2"}) {
    auto g = MakeTopology(spec, spec == std::string("regular:3") ? 9 : 10, 1);
    ASSERT_FALSE(g.ok()) << spec;
    EXPECT_NE(g.status().message().find("topology"), std::string::npos) << g.status();
  }
  EXPECT_FALSE(MakeTopology("ring", 0, 1).ok());
  auto one = MakeTopology("regular:4", 1, 1);  // one node: central, no neighbours
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE((*one)[0].empty());
}

TEST(Topology, NoneLeavesEveryNodeAlone) {
  auto g = MakeTopology("none", 7, 1);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->size(), 7u);
  for (const auto& adj : *g) EXPECT_TRUE(adj.empty());
  EXPECT_FALSE(MakeTopology("none:2", 7, 1).ok());
}

std::vector<int64_t> Labels(int per_class, int classes) {
  std::vector<int64_t> y;
  for (int c = 0; c < classes; ++c) y.insert(y.end(), static_cast<size_t>(per_class), c);
  return y;
}

// Every example goes to exactly one node.
void ExpectPartition(const std::vector<std::vector<int64_t>>& split, size_t total) {
  std::vector<int> count(total, 0);
  for (const auto& node : split)
    for (int64_t i : node) count[static_cast<size_t>(i)]++;
  for (size_t i = 0; i < total; ++i) ASSERT_EQ(count[i], 1) << "example " << i;
}

TEST(Split, ClassesKGivesEachNodeExactlyItsClasses) {
  const auto y = Labels(100, 10);
  auto split = SplitData("classes:2", y, 10, 5, 1);
  ASSERT_TRUE(split.ok()) << split.status();
  ExpectPartition(*split, y.size());
  for (int i = 0; i < 5; ++i) {
    std::set<int64_t> classes;
    for (int64_t k : (*split)[static_cast<size_t>(i)]) classes.insert(y[static_cast<size_t>(k)]);
    EXPECT_EQ(classes, (std::set<int64_t>{2 * i, 2 * i + 1})) << "node " << i;
  }
}

TEST(Split, IidIsBalancedAndDirichletIsSkewedButFillsABatch) {
  const auto y = Labels(600, 10);
  auto iid = SplitData("iid", y, 10, 8, 1);
  ASSERT_TRUE(iid.ok());
  ExpectPartition(*iid, y.size());
  for (const auto& node : *iid) EXPECT_EQ(node.size(), 750u);
  auto dir = SplitData("dirichlet:0.1", y, 10, 16, 1, 32);
  ASSERT_TRUE(dir.ok());
  ExpectPartition(*dir, y.size());
  size_t largest = 0;
  int skewed = 0;
  for (const auto& node : *dir) {
    EXPECT_GE(node.size(), 32u);
    largest = std::max(largest, node.size());
    std::vector<int> per(10, 0);
    for (int64_t k : node) per[static_cast<size_t>(y[static_cast<size_t>(k)])]++;
    if (*std::max_element(per.begin(), per.end()) * 2 > static_cast<int>(node.size())) ++skewed;
  }
  EXPECT_GT(largest, 2 * 6000u / 16) << "Dirichlet(0.1) is uneven";
  EXPECT_GE(skewed, 8) << "most nodes are dominated by one class";
}

TEST(Split, BadSpecsAreRefused) {
  const auto y = Labels(10, 10);
  for (const char* spec : {"dirichlet:0", "dirichlet:-1", "classes:0", "classes:11", "shards", "iid:2"}) {
    EXPECT_FALSE(SplitData(spec, y, 10, 4, 1).ok()) << spec;
  }
  EXPECT_FALSE(SplitData("iid", {0, 12}, 10, 2, 1).ok()) << "label out of range";
}

}  // namespace
}  // namespace mycel::sim
