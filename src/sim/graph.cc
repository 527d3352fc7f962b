#include "sim/graph.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mycel::sim {
namespace {

Graph FromEdges(int n, const std::set<std::pair<int, int>>& edges) {
  Graph g(static_cast<size_t>(n));
  for (const auto& [a, b] : edges) {
    g[static_cast<size_t>(a)].push_back(b);
    g[static_cast<size_t>(b)].push_back(a);
  }
  for (auto& adj : g) std::sort(adj.begin(), adj.end());
  return g;
}

void AddEdge(std::set<std::pair<int, int>>* edges, int a, int b) {
  if (a != b) edges->insert({std::min(a, b), std::max(a, b)});
}

// Pairing model: n·d half-edges shuffled and paired, redrawn on a loop or a
// double edge (fine for the small d a laptop pins).
absl::StatusOr<Graph> RandomRegular(int n, int d, std::mt19937_64& rng) {
  if (d < 1 || d >= n || (static_cast<int64_t>(n) * d) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("topology regular:", d, ": needs 1 <= D < nodes and nodes × D even (nodes ", n, ")"));
  }
  std::vector<int> stubs;
  for (int i = 0; i < n; ++i) stubs.insert(stubs.end(), static_cast<size_t>(d), i);
  for (int attempt = 0; attempt < 100000; ++attempt) {
    std::shuffle(stubs.begin(), stubs.end(), rng);
    std::set<std::pair<int, int>> edges;
    bool simple = true;
    for (size_t k = 0; k + 1 < stubs.size() && simple; k += 2) {
      const int a = stubs[k], b = stubs[k + 1];
      simple = a != b && edges.insert({std::min(a, b), std::max(a, b)}).second;
    }
    if (!simple) continue;
    Graph g = FromEdges(n, edges);
    if (Connected(g)) return g;
  }
  return absl::InternalError(absl::StrCat("topology regular:", d, ": no simple connected graph drawn"));
}

}  // namespace

bool Connected(const Graph& g) {
  if (g.empty()) return true;
  std::vector<bool> seen(g.size(), false);
  std::vector<int> stack = {0};
  seen[0] = true;
  size_t count = 1;
  while (!stack.empty()) {
    const int v = stack.back();
    stack.pop_back();
    for (int w : g[static_cast<size_t>(v)]) {
      if (!seen[static_cast<size_t>(w)]) {
        seen[static_cast<size_t>(w)] = true;
        ++count;
        stack.push_back(w);
      }
    }
  }
  return count == g.size();
}

absl::StatusOr<Graph> MakeTopology(const std::string& spec, int n, uint64_t seed) {
  if (n < 1) return absl::InvalidArgumentError(absl::StrCat("nodes must be >= 1, got ", n));
  std::mt19937_64 rng(seed);
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  std::set<std::pair<int, int>> edges;
  if (n == 1) return Graph(1);
  if (parts[0] == "none" && parts.size() == 1) return Graph(static_cast<size_t>(n));  // every node alone
  if (parts[0] == "ring" && parts.size() == 1) {
    for (int i = 0; i < n; ++i) AddEdge(&edges, i, (i + 1) % n);
    return FromEdges(n, edges);
  }
  if (parts[0] == "torus" && parts.size() == 1) {
    int rows = static_cast<int>(std::sqrt(static_cast<double>(n)));
    while (rows > 1 && n % rows != 0) --rows;
    const int cols = n / rows;
    if (rows < 3 || cols < 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("topology torus: nodes must be rows × cols with both >= 3 (got ", n, ")"));
    }
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) {
        const int i = r * cols + c;
        AddEdge(&edges, i, r * cols + (c + 1) % cols);
        AddEdge(&edges, i, ((r + 1) % rows) * cols + c);
      }
    }
    return FromEdges(n, edges);
  }
  int d = 0;
  if (parts[0] == "regular" && parts.size() == 2 && absl::SimpleAtoi(parts[1], &d)) {
    return RandomRegular(n, d, rng);
  }
  double p = 0;
  if (parts[0] == "smallworld" && parts.size() == 3 && absl::SimpleAtoi(parts[1], &d) &&
      absl::SimpleAtod(parts[2], &p)) {
    if (d < 2 || d % 2 != 0 || d >= n || !(p >= 0 && p <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "topology ", spec, ": needs an even D with 2 <= D < nodes and 0 <= P <= 1 (nodes ", n, ")"));
    }
    std::uniform_real_distribution<double> coin(0, 1);
    std::uniform_int_distribution<int> any(0, n - 1);
    for (int attempt = 0; attempt < 1000; ++attempt) {
      edges.clear();
      for (int i = 0; i < n; ++i) {
        for (int k = 1; k <= d / 2; ++k) AddEdge(&edges, i, (i + k) % n);
      }
      // Rewire each lattice edge (i, i+k) to (i, random) with probability P.
      for (int i = 0; i < n; ++i) {
        for (int k = 1; k <= d / 2; ++k) {
          const int j = (i + k) % n;
          if (coin(rng) >= p) continue;
          const int to = any(rng);
          const std::pair<int, int> e{std::min(i, to), std::max(i, to)};
          if (to == i || edges.count(e)) continue;
          edges.erase({std::min(i, j), std::max(i, j)});
          edges.insert(e);
        }
      }
      Graph g = FromEdges(n, edges);
      if (Connected(g)) return g;
    }
    return absl::InternalError(absl::StrCat("topology ", spec, ": no connected graph drawn"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown topology \"", spec, "\" (ring | torus | regular:D | smallworld:D:P)"));
}

absl::StatusOr<std::vector<std::vector<int64_t>>> SplitData(const std::string& spec,
                                                             const std::vector<int64_t>& labels, int classes,
                                                             int n, uint64_t seed, size_t min_per_node) {
  if (n < 1 || classes < 1) return absl::InvalidArgumentError("split: nodes and classes must be >= 1");
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(classes));
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= classes) {
      return absl::InvalidArgumentError(absl::StrCat("split: label ", labels[i], " out of [0, ", classes, ")"));
    }
    by_class[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
  }
  for (auto& c : by_class) std::shuffle(c.begin(), c.end(), rng);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(n));
  const std::vector<std::string> parts = absl::StrSplit(spec, ':');
  int k = 0;
  double alpha = 0;
  if (parts[0] == "iid" && parts.size() == 1) {
    std::vector<int64_t> all(labels.size());
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (size_t i = 0; i < all.size(); ++i) out[i % static_cast<size_t>(n)].push_back(all[i]);
  } else if (parts[0] == "classes" && parts.size() == 2 && absl::SimpleAtoi(parts[1], &k)) {
    if (k < 1 || k > classes) {
      return absl::InvalidArgumentError(absl::StrCat("split classes:", k, ": K must be in [1, ", classes, "]"));
    }
    std::vector<std::vector<int>> holders(static_cast<size_t>(classes));
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < k; ++j) holders[static_cast<size_t>((i * k + j) % classes)].push_back(i);
    }
    for (int c = 0; c < classes; ++c) {
      const auto& h = holders[static_cast<size_t>(c)];
      if (h.empty()) continue;  // fewer nodes than classes: nobody holds this one
      const auto& ex = by_class[static_cast<size_t>(c)];
      for (size_t i = 0; i < ex.size(); ++i) out[static_cast<size_t>(h[i % h.size()])].push_back(ex[i]);
    }
  } else if (parts[0] == "dirichlet" && parts.size() == 2 && absl::SimpleAtod(parts[1], &alpha) && alpha > 0) {
    std::gamma_distribution<double> gamma(alpha, 1.0);
    for (int c = 0; c < classes; ++c) {
      std::vector<double> share(static_cast<size_t>(n));
      double sum = 0;
      for (double& s : share) sum += (s = gamma(rng));
      const auto& ex = by_class[static_cast<size_t>(c)];
      double acc = 0;
      size_t begin = 0;
      for (int i = 0; i < n; ++i) {
        acc += sum > 0 ? share[static_cast<size_t>(i)] / sum : 1.0 / n;
        const size_t end = i == n - 1 ? ex.size() : std::min(ex.size(), static_cast<size_t>(acc * ex.size()));
        for (size_t e = begin; e < end; ++e) out[static_cast<size_t>(i)].push_back(ex[e]);
        begin = std::max(begin, end);
      }
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown split \"", spec, "\" (iid | dirichlet:A with A > 0 | classes:K)"));
  }
  // Top up nodes left nearly empty from the largest ones, so every node can
  // fill a batch (Dirichlet with a small A leaves some with a handful).
  if (labels.size() >= min_per_node * static_cast<size_t>(n)) {
    for (auto& node : out) {
      while (node.size() < min_per_node) {
        auto largest = std::max_element(out.begin(), out.end(),
                                        [](const auto& a, const auto& b) { return a.size() < b.size(); });
        node.push_back(largest->back());
        largest->pop_back();
      }
    }
  }
  for (auto& node : out) std::sort(node.begin(), node.end());
  return out;
}

}  // namespace mycel::sim
