// mycel-sim: many nodes in one process on the real federation, codec, merge
// and model code, with a virtual round clock instead of gRPC and crypto.
// Each round every online node trains its local steps (the trainer's
// learning-rate schedule, the drift correction added after every step, as
// Trainer does), publishes through its Federation, pulls every online
// neighbour's answer (AnswerShared → Apply, the bytes a pull would carry) and
// merges. Attackers are ordinary nodes that publish something else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"

namespace mycel::sim {

struct SimOptions {
  int nodes = 16;
  std::string topology = "ring";    // graph.h
  std::string split = "iid";        // graph.h
  int rounds = 100;
  double attackers = 0;             // fraction of nodes that attack, in [0, 1)
  // none | signflip | scale:X | alie | alie:Z | labelflip | backdoor
  //   signflip   publishes its own learning reversed: 2·x₀ − x (x₀ the start)
  //   scale:X    publishes μ + X·(x − μ), μ the mean of its neighbours' copies
  //   alie       publishes μ − z·σ·sign(μ − μ_prev) per coordinate over its
  //              neighbourhood, z = 1 ("A little is enough", Baruch et al. 2019);
  //              alie:Z the same with z = Z > 0
  //   labelflip  trains on labels C − 1 − y and publishes honestly
  //   backdoor   trains half its batches with a 4×4 trigger in the corner
  //              relabelled 0 and publishes honestly
  std::string attack = "none";
  std::string robust = "none";      // [federation] robust for every honest node
  bool trust = false;               // [federation] trust for every honest node (probes on its own data)
  double churn = 0;                 // stationary fraction of nodes offline, in [0, 1)
  double missed_pulls = 0;          // share of pulls between online nodes that fail, in [0, 1)
  std::string codec;                // "" = the config's
  int local_steps = -1;             // -1 = the config's
  uint64_t seed = 1;
  int eval_every = 0;               // rounds between curve points (0: rounds / 20)
  int curve_examples = 1000;        // test examples per curve point (the final figure uses all)
  double clip_medians = 0;          // 0 = FederationOptions' default (tuning)
  double clip_movements = -1;       // < 0 = FederationOptions' default (tuning)
  double trust_medians = 0;         // 0 = FederationOptions' default (tuning)
  int threads = 2;                  // worker threads, one torch thread each
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  config::Config config;            // [model], [training], [federation] defaults
};

struct NodeResult {
  double accuracy = 0;   // on the whole test set, at the end
  // On the node's own distribution: the test set's per-class accuracy
  // weighted by the share of each class in the node's training data (what
  // its user would see; personalisation is judged on it).
  double own_accuracy = 0;
  double own_accuracy_prior = 0;  // the same, with the node's class prior added to the logits
  bool attacker = false;
  int degree = 0;
  int64_t examples = 0;
  int64_t merges = 0;    // neighbour copies merged, summed over its neighbours
  int64_t clipped = 0;   // of those, cut by robust = clip
  std::vector<double> curve;  // accuracy at each curve round, on curve_examples
  // With trust: its trust at the end (least trusted group) in each neighbour
  // that attacks, and in each honest one.
  std::vector<double> trust_attackers, trust_honest;
};

struct SimResult {
  double honest_accuracy_min = 0;
  double honest_accuracy_mean = 0;
  double honest_own_accuracy_min = 0;   // NodeResult::own_accuracy over honest nodes
  double honest_own_accuracy_mean = 0;
  double backdoor_success = -1;     // mean over honest nodes; -1 unless attack = backdoor
  int rounds = 0;
  double seconds = 0;
  double seconds_per_round = 0;
  double bytes_per_node_per_round = 0;  // pulled answers' payload, mean over nodes and rounds
  int attackers = 0;
  double honest_clipped_share = 0;      // of honest nodes' neighbour merges, the share clip cut
  // With trust (-1: no such edge): honest nodes' mean trust at the end in
  // attacking and in honest neighbours (each neighbour's least trusted
  // group), the shares of those edges quarantined, and the time honest nodes
  // spent probing as a share of the time they spent training.
  double trust_of_attackers = -1, trust_of_honest = -1;
  double attackers_quarantined = -1, honest_quarantined = -1;
  double trust_probe_share = 0;
  std::vector<int> curve_rounds;
  std::vector<NodeResult> per_node;
};

absl::StatusOr<SimResult> Run(const SimOptions& options);

// The result as one JSON object (the fields the README lists).
std::string ToJson(const SimOptions& options, const SimResult& result);

}  // namespace mycel::sim
