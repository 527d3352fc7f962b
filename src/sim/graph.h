// Graphs and data splits for mycel-sim: who neighbours whom, and which
// training examples each simulated node holds. Pure logic, no torch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mycel::sim {

// Undirected, simple: graph[i] lists i's neighbours, ascending, never i.
using Graph = std::vector<std::vector<int>>;

// spec: "ring" | "torus" | "regular:D" | "smallworld:D:P" (Watts–Strogatz:
// a ring lattice of degree D, even, each edge rewired with probability P) |
// "none" (no edges: every node learns alone, the baseline a federation must
// beat).
// Random graphs are drawn from `seed` until connected. `n` ≥ 1; one node has
// no neighbours.
absl::StatusOr<Graph> MakeTopology(const std::string& spec, int n, uint64_t seed);

bool Connected(const Graph& g);

// spec: "iid" | "dirichlet:A" (per class, shares over nodes ~ Dirichlet(A))
// | "classes:K" (node i holds classes iK … iK+K−1, mod `classes`, each
// class dealt evenly among the nodes holding it). Returns, per node, indices
// into `labels`. Every node gets at least `min_per_node` examples (taken from
// the largest nodes) when there are enough to go round.
absl::StatusOr<std::vector<std::vector<int64_t>>> SplitData(const std::string& spec,
                                                             const std::vector<int64_t>& labels, int classes,
                                                             int n, uint64_t seed, size_t min_per_node = 32);

}  // namespace mycel::sim
