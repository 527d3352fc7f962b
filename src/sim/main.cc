// mycel-sim: many federated nodes in one process (sim/sim.h).
//   mycel-sim --nodes 16 --topology regular:4 --split dirichlet:0.3 --rounds 300
//             --attackers 0.2 --attack scale:100 --robust clip --json out.json
#include <cstdio>
#include <fstream>
#include <string>

#include <CLI/CLI.hpp>

#include "config/config.h"
#include "sim/sim.h"

#ifndef MYCEL_SOURCE_DIR
#define MYCEL_SOURCE_DIR "."
#endif

int main(int argc, char** argv) {
  mycel::sim::SimOptions o;
  std::string config_path = std::string(MYCEL_SOURCE_DIR) + "/configs/federation.toml";
  std::string json_path, trust = "off";
  CLI::App app{"mycel-sim: many mycel nodes in one process, on the real federation and model code"};
  app.add_option("--nodes", o.nodes, "number of nodes")->required();
  app.add_option("--topology", o.topology, "ring | torus | regular:D | smallworld:D:P | none (every node alone)")->required();
  app.add_option("--split", o.split, "iid | dirichlet:A | classes:K")->required();
  app.add_option("--rounds", o.rounds, "gossip rounds")->required();
  app.add_option("--attackers", o.attackers, "fraction of nodes that attack, in [0, 1)");
  app.add_option("--attack", o.attack, "none | signflip | scale:X | alie | alie:Z | labelflip | backdoor");
  app.add_option("--robust", o.robust, "none | reject | clip | trimmed_mean | median (honest nodes)")
      ->check(CLI::IsMember({"none", "reject", "clip", "trimmed_mean", "median"}));
  app.add_option("--trust", trust, "on | off: per-neighbour trust from local validation (honest nodes)")->check(CLI::IsMember({"on", "off"}));
  app.add_option("--churn", o.churn, "fraction of nodes offline at any time, in [0, 1)");
  app.add_option("--missed-pulls", o.missed_pulls, "share of pulls that fail at random (Wi-Fi), in [0, 1)");
  app.add_option("--codec", o.codec, "wire codec (default: the config's)");
  app.add_option("--local-steps", o.local_steps, "steps per round (default: the config's)");
  app.add_option("--seed", o.seed, "seed of graph, split, attackers and sampling");
  app.add_option("--eval-every", o.eval_every, "rounds between accuracy curve points (default rounds/20)");
  app.add_option("--threads", o.threads, "worker threads (default 2)");
  app.add_option("--clip-medians", o.clip_medians, "clip radius: at least this × the lower median distance");
  app.add_option("--clip-movements", o.clip_movements, "clip radius: at least this × our own movement a round");
  app.add_option("--trust-medians", o.trust_medians, "trust: a share hurts past this × the probe's lower median harm");
  app.add_option("--data-dir", o.data_dir, "Fashion-MNIST idx.gz files");
  app.add_option("--config", config_path, "[model], [training] and [federation] from this file")
      ->capture_default_str();
  app.add_option("--json", json_path, "write the result here")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version exit 0; every refused argument is a usage error (2), as the run's own checks are.
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  o.trust = trust == "on";

  auto cfg = mycel::config::LoadConfig(config_path);
  if (!cfg.ok()) {
    std::fprintf(stderr, "mycel-sim: %s\n", std::string(cfg.status().message()).c_str());
    return 2;
  }
  o.config = *cfg;
  if (o.codec.empty()) o.codec = o.config.federation.codec;
  auto result = mycel::sim::Run(o);
  if (!result.ok()) {
    std::fprintf(stderr, "mycel-sim: %s\n", std::string(result.status().message()).c_str());
    return 2;
  }
  const std::string json = mycel::sim::ToJson(o, *result);
  std::ofstream out(json_path, std::ios::trunc);
  out << json << "\n";
  if (!out.flush()) {
    std::fprintf(stderr, "mycel-sim: cannot write %s\n", json_path.c_str());
    return 1;
  }
  std::printf("mycel-sim: %d nodes (%d attacking: %s), %s, %s, robust %s, %d rounds in %.1f s (%.3f s a round): "
              "honest accuracy min %.4f mean %.4f (on their own distributions min %.4f mean %.4f), "
              "%.1f%% of honest merges clipped, %.1f KiB pulled per node per round",
              o.nodes, result->attackers, o.attack.c_str(), o.topology.c_str(), o.split.c_str(), o.robust.c_str(),
              result->rounds, result->seconds, result->seconds_per_round, result->honest_accuracy_min,
              result->honest_accuracy_mean, result->honest_own_accuracy_min, result->honest_own_accuracy_mean,
              100 * result->honest_clipped_share, result->bytes_per_node_per_round / 1024.0);
  if (result->backdoor_success >= 0) std::printf(", backdoor success %.4f", result->backdoor_success);
  if (o.trust && result->attackers > 0) {
    std::printf(", trust in attackers %.2f (%.0f%% quarantined), in honest neighbours %.2f (%.0f%% quarantined), "
                "probes %.1f%% of training time",
                result->trust_of_attackers, 100 * result->attackers_quarantined, result->trust_of_honest,
                100 * result->honest_quarantined, 100 * result->trust_probe_share);
  } else if (o.trust) {
    std::printf(", trust in neighbours %.2f (%.0f%% quarantined), probes %.1f%% of training time",
                result->trust_of_honest, 100 * result->honest_quarantined, 100 * result->trust_probe_share);
  }
  std::printf("\n");
  return 0;
}
