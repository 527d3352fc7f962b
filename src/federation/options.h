// FederationOptions: how a node merges its neighbours' copies, and the one
// place their values are checked (CheckOptions). Plain data with no
// dependency, so the config reader can fill it without knowing Federation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/option_problem.h"

namespace mycel::federation {

// How a node merges: the one definition. `[federation]` in the config file
// reads into it (config::FederationSection derives from it), and its defaults
// are the product's: what a user gets without tuning (README, "Drift
// correction", "Compression"). Tests and tools that want plain gossip say so.
struct FederationOptions {
  std::string merge = "metropolis";   // metropolis | fedavg (weighted by samples trained)
  double mixing = 1.0;                // γ in (0, 1]: how far each merge moves toward the neighbours
  double drift_correction = 0.95;     // β in [0, 1); 0 = plain gossip
  std::string codec = "fp16";         // wire codec for published deltas (codec.h)
  int64_t max_log_bytes = 64 << 20;   // DeltaLog bound; older deltas fall out (readers get keyframes)
  double max_delta_norm = 1e4;        // L2 bound on one decoded delta; larger ones are refused
  double max_keyframe_norm = 1e6;     // L2 bound on a keyframe (whole public copy)
  // A mirror not refreshed by the last this-many merges (its neighbour asleep,
  // unreachable, refusing) takes no part in merges until a pull succeeds
  // again: with drift correction near 1, merging toward a frozen mirror round
  // after round would be integrated into c and amplified (up to 1/(1 − β)
  // times). 0 = mirrors always take part.
  int64_t max_stale_rounds = 3;
  // How the neighbours' copies are combined (README, "Robust merges"). Both
  // screening rules compare each distance ||m_j − x|| with a radius
  //   τ = max(clip_medians × the lower median of this merge's distances,
  //           clip_movements × our own movement per round, averaged),
  // so a neighbour far farther than most, or far farther than our own
  // training moves us, is an outlier; one that mimics us cannot shrink τ
  // below our own pace. A lone neighbour is held to our pace alone under
  // clip; reject leaves it in (nobody to compare it with).
  //   none          the weighted mean above;
  //   reject        an outlier sits this merge out, as a stale mirror does:
  //                 no pull, nothing taught to c;
  //   clip          self-centred clipping (ClippedGossip, He, Karimireddy &
  //                 Jaggi 2022): an outlier pulls by τ instead of its
  //                 distance, and teaches c nothing (c integrates what it
  //                 learns from, up to 1/(1 − β) times: measured on a
  //                 quadratic ring, a ×100 attacker ends 9271 from the optimum
  //                 with none, 4.8 with clip, 22390 if the clipped pull also
  //                 taught c). On real models its τ follows the distances the
  //                 attack itself inflates, and a ×100 attacker still wins
  //                 (mycel-sim: README), so reject is the one to use;
  //   trimmed_mean  coordinate-wise mean of {x, m_j} without the highest and
  //                 lowest value (unweighted);
  //   median        coordinate-wise median of {x, m_j} (unweighted).
  // The last two are there for comparison: on a sparse graph with non-IID
  // data they cost accuracy without attackers (README).
  // reject is the default: with a radius of 10 lower medians it left no
  // honest neighbour out and cost nothing without attackers, where 3 cost
  // up to 0.9 points on a ring of five with two classes each, and it still
  // holds a ×100 attacker (mycel-sim, README "Robust merges").
  std::string robust = "reject";
  double clip_medians = 10.0;         // reject/clip: τ ≥ this × the lower median of the distances
  double clip_movements = 3.0;        // reject/clip: τ ≥ this × our own movement per round
  // Per-neighbour trust learnt from our own validation data (Probe/Judge
  // below). Each neighbour j holds a trust t_jg in [0, 1] per parameter group
  // g (a layer: SetGroups), which scales its merge weight there: its term of
  // d becomes t_jg · w_j · (m_j − x) and it teaches c as much; when t_jg
  // falls, c forgets the same fraction of what j taught it in g (each
  // neighbour's part of c is kept while trust is on). A probe
  // measures, per neighbour and group, the validation loss of the merge with
  // that share at full weight against the merge without it; the relative
  // increase h = (L_with − L_without) / L_merged is its harm. A share hurts
  // when h exceeds
  //   τ_g = max(trust_tolerance, trust_medians × the lower median of the
  //             probed neighbours' harms in that group),
  // so a neighbour is judged against what the others cost in the same probe
  // (same batch, same moment), not against zero: on non-IID data every
  // honest share raises our own loss a little, and a minority of attackers
  // cannot raise the bar. With fewer than three neighbours probed there is no
  // majority to compare against, and τ_g is at least 1: a share must nearly
  // double the loss to count as hurting. A hurting share loses trust_penalty of trust (all of
  // it past 4τ); a harmless one regains trust_reward. Trust 0 is a
  // quarantine, left only by a probe where the share costs at most τ / 2.
  // Weighted merges only (none, reject, clip).
  bool trust = false;
  double trust_tolerance = 0.05;
  double trust_medians = 3.0;
  double trust_penalty = 0.5;
  double trust_reward = 0.1;
  double trust_smoothing = 0.3;       // weight of the newest probe in MirrorStats::harm (shown, not judged)
};


// Plain gossip: no drift correction (β = 0) and the exact dense_f32 codec,
// the algorithm as written, which tests check against hand computations.
FederationOptions PlainGossip();

// Every field equal (a reload that changes none keeps the running state).
bool operator==(const FederationOptions& a, const FederationOptions& b);
inline bool operator!=(const FederationOptions& a, const FederationOptions& b) { return !(a == b); }

// The first problem of `o` (keys in declaration order, then the rules that
// tie two keys), or nothing when Federation::Create will accept it. The config
// reader reports it as `file:line: [federation] mixing: ...`, Federation::Create
// as "federation.mixing: ...".
std::optional<OptionProblem> CheckOptions(const FederationOptions& o);

}  // namespace mycel::federation
