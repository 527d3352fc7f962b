// Federation: the gossip state of one node, after CHOCO-SGD (Koloskova, Stich,
// Jaggi, ICML 2019) — pure logic, no sockets, no torch. Vectors are the
// model's shared parameters flattened in Model::parameters() order, fp32.
//
//   x̂      public copy of our own shared weights: exactly what neighbours can
//          reconstruct from the deltas we published.
//   log    our published deltas (seq, q), bounded in bytes; a reader that
//          fell behind gets a keyframe (all of x̂) instead.
//   m_j    mirror of neighbour j's public copy, advanced by what we pull.
//
// Publish (each round, the model between two steps): q = Q(x − x̂);
//                                       x̂ += Q⁻¹(q); log q.
// Merge (each round, likewise):         d = γ · Σ_j w_j · (m_j − x); x += d;
//                                       c = β · (c + d / η)
// η is the learning rate a round's K local steps sum to (K · lr), so c
// is a rate per unit of learning rate, as a gradient is: the trainer adds
// lr · c after each local step (Trainer::WithSharedParameters), which over a
// round is what the merges moved us by, at today's learning rate; a round
// without steps (held) neither applies c nor learns from its merge. Spread over
// the steps the correction steers every step, as gradient tracking with local
// steps does (K-GT, SCAFFOLD), instead of arriving once after K steps spent
// drifting toward local data; in learning-rate units it shrinks as the
// learning rate decays instead of keeping a size learnt at a higher one.
//   weights: "metropolis" w_j = 1 / (1 + max(deg_i, deg_j));
//            "fedavg"     w_j = n_j / (n_i + Σ_k n_k), n = samples trained
//   (uniform 1/(deg+1) while nobody has trained). Only mirrors that hold
//   something and were refreshed within max_stale_rounds merges take part.
// Drift correction c (β = drift_correction; β = 0: plain gossip, c stays 0):
// with β = 1 and one local step this is D² (Tang et al., ICML 2018),
// x_{t+1} = W(2x_t − x_{t−1} − α(g_t − g_{t−1})): c carries what the merges
// moved us by, so each node's bias toward its own data cancels out and every
// node heads for the minimum of the federation's loss rather than a blend of
// local minima. β = 1 is exact only for perfectly synchronous, symmetric
// merges; one stale or missed mirror is integrated into c forever and the
// federation diverges (measured: 10% missed pulls on a ring), so β < 1 makes
// c forget such errors. With no mirror taking part c just decays: an isolated
// node is plain SGD. Measured (README, "Drift correction").
// Epochs: a node's (epoch, seq) names a point in its delta stream. A node that
// restarts from a checkpoint that was not its final one starts a new random
// epoch, so neighbours take a keyframe instead of deltas that no longer
// match what they mirror.
//
// Everything received is validated before use: codec, sizes, finite values,
// a norm bound; a refused update changes nothing and says why.
// Thread-safe: every public method locks an internal mutex; Publish/Merge are
// O(parameters) and run while the trainer is between steps.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "federation/codec.h"
#include "federation/options.h"

namespace mycel::federation {

// One trust probe (Federation::Probe): the merge the node would make now,
// and each probed neighbour's share of it in each parameter group. The caller
// evaluates the validation loss of every candidate, in order, and hands the
// losses to Judge. Candidate 0 is `merged`; candidate k + 1 moves share k
// (linear in the loss along it, so one evaluation per share): a share mostly
// in `merged` (trust ≥ 1/2) is taken out, one mostly out is put in whole.
struct TrustProbe {
  struct Share {
    int peer = 0;
    int group = 0;
    size_t offset = 0;            // the group's first parameter
    float trust = 1;              // the fraction of the share in `merged`
    std::vector<float> delta;     // w_j (m_j − x) over the group, before trust
  };
  std::vector<float> merged;      // x + d as Merge would leave it (trust applied, before c)
  std::vector<Share> shares;
  size_t candidates() const { return shares.empty() ? 0 : 1 + shares.size(); }
  // Writes candidate `i` (size() values) into `out`.
  void Candidate(size_t i, float* out) const;
};


// Bytes the deltas of one answer may weigh beyond a keyframe (x̂ as fp32)
// and still be sent as deltas: one codec header (dense_f32: 12 bytes). A
// reader further behind gets the keyframe, so a whole answer is bounded by
// the model's size, which is what a puller holds a neighbour to.
inline constexpr int64_t kDeltasOverKeyframeBytes = 64;

// Sequence numbers stay below this (a round a millisecond for 146 million
// years): a snapshot or an answer claiming more is refused, so seq + 1 never
// wraps.
inline constexpr uint64_t kMaxSeq = uint64_t{1} << 62;

// What a node answers to "everything after (epoch, seq)".
struct PullAnswer {
  uint64_t epoch = 0;
  uint64_t from_seq = 0;              // deltas cover (from_seq, to_seq]; keyframe: from_seq = 0
  uint64_t to_seq = 0;
  bool keyframe = false;
  std::string codec;                  // codec of `deltas` (the publisher's); keyframes are dense_f32
  std::vector<std::string> deltas;    // encoded q's, in order (when !keyframe)
  std::vector<float> public_copy;     // x̂ at to_seq (when keyframe)
  int64_t samples_trained = 0;        // n for fedavg weights
  int32_t degree = 0;                 // neighbours pinned, for Metropolis weights
};

// Answer() without copying the deltas: each is shared with our log (a
// published delta never changes; it stays alive while a reader holds it, even
// after it falls out of the log). `answer` carries every other field, its
// `deltas` stay empty; a keyframe is in answer.public_copy as with Answer().
struct SharedPullAnswer {
  PullAnswer answer;
  std::vector<std::shared_ptr<const std::string>> deltas;  // encoded q's, in order
};

// A neighbour's answer as views into the caller's buffers, so a received
// payload is applied without first copying it into a PullAnswer. Same fields
// and meaning as PullAnswer; the viewed bytes need only outlive Apply().
struct PullAnswerView {
  uint64_t epoch = 0;
  uint64_t from_seq = 0;
  uint64_t to_seq = 0;
  bool keyframe = false;
  std::string codec;
  std::vector<std::string_view> deltas;   // encoded q's, in order (when !keyframe)
  // When keyframe: x̂ as size() raw floats, the bytes exactly as a
  // std::vector<float> holds them (no alignment needed).
  std::string_view public_copy_bytes;
  int64_t samples_trained = 0;
  int32_t degree = 0;
};

// `shared` as a view for Apply(), aliasing its buffers (which must outlive
// the view): how an in-process reader (mycel-sim) takes a neighbour's answer.
PullAnswerView ViewOf(const SharedPullAnswer& shared);

struct MirrorStats {
  bool initialized = false;
  uint64_t epoch = 0;
  uint64_t seq = 0;                   // last applied
  int64_t samples_trained = 0;
  int32_t degree = 0;
  int64_t deltas_applied = 0;
  int64_t keyframes_applied = 0;
  int64_t refused = 0;
  std::string last_refusal;
  int64_t stale_rounds = 0;           // merges since the mirror was last refreshed (not persisted)
  int64_t merged = 0;                 // merges this mirror took part in since start (not persisted)
  int64_t clipped = 0;                // of those, merges where it was past τ (reject, clip; not persisted)
  double last_distance = 0;           // ||m_j − x|| at the last merge it took part in
  double last_radius = 0;             // τ of that merge (0: no screening)
  // Trust (FederationOptions::trust), per parameter group; empty until the
  // first probe (= full trust). Persisted.
  std::vector<double> trust;
  std::vector<double> harm;           // average h per group (trust_smoothing; persisted)
  std::vector<double> last_harm;      // h of the last probe, per group
  int64_t trust_probes = 0;           // probes it took part in
  int64_t hurt_probes = 0;            // of those, probes where a share of it hurt
  std::string quarantine;             // why trust is 0 somewhere ("" = not quarantined)
};

class Federation {
 public:
  // `initial` = the shared weights every node of the federation starts from
  // (same model.seed): x̂ and every mirror start unset; x̂ starts at `initial`.
  static absl::StatusOr<std::unique_ptr<Federation>> Create(const FederationOptions& options,
                                                            std::vector<float> initial,
                                                            int num_peers, int32_t degree);
  ~Federation();
  Federation(const Federation&) = delete;
  Federation& operator=(const Federation&) = delete;

  size_t size() const { return size_; }
  // As given to Create; they never change.
  const FederationOptions& options() const { return options_; }

  // q = Q(x − x̂), x̂ += Q⁻¹(q), appended as seq+1. `x` has size() values
  // and already holds this round's drift correction (the trainer added it).
  void Publish(const float* x, int64_t samples_trained);
  // d = γ Σ_j w_j (m_j − x); x += d; c = β (c + d / step_scale), with
  // step_scale the learning rate a full round of local steps sums to, K · lr
  // (1: c in weight units), whether or not the CPU let all K run; a round without local steps (step_scale ≤ 0) only fades c:
  // c = β c. Returns how many mirrors took part.
  int Merge(float* x, double step_scale = 1.0);
  // A copy of the drift correction c (empty while β = 0), per unit of
  // learning rate: the trainer adds lr · c after each local step.
  std::vector<float> correction() const;
  // Sets c to zero (the trainer's drift guard rolled the weights back, so
  // what the merges since taught the correction no longer applies).
  void ResetCorrection();

  // Names the parameter groups trust is kept for (layers) and their sizes in
  // the flattened order; the sizes must sum to size(). Until called there is
  // one group, "all". Call before the first probe; trust restored from a
  // snapshot with another grouping starts over at 1.
  absl::Status SetGroups(std::vector<std::string> names, const std::vector<size_t>& sizes);
  std::vector<std::string> group_names() const;
  // Trust probe at x (our weights, between publish and merge; see
  // FederationOptions::trust): the merge Merge(x) would make and each taking
  // part neighbour's share per group. Changes nothing. Empty when trust is off
  // or no mirror would take part.
  TrustProbe Probe(const float* x) const;
  // Updates the probed neighbours' trust from losses[i], the validation loss
  // of probe.Candidate(i). A non-finite loss with a share counts as the worst
  // harm; a non-finite loss of `merged` voids the probe.
  void Judge(const TrustProbe& probe, const std::vector<double>& losses);

  // Our answer to a neighbour who has (epoch, after_seq): deltas if our log
  // holds them, else a keyframe. epoch 0 = "nothing yet".
  PullAnswer Answer(uint64_t epoch, uint64_t after_seq) const;
  // The same answer, with the deltas shared with the log instead of copied.
  SharedPullAnswer AnswerShared(uint64_t epoch, uint64_t after_seq) const;
  // Applies a neighbour's answer to mirror `peer`; on error nothing changes.
  // Deltas are decoded with the codec the answer names, whatever ours is.
  absl::Status Apply(int peer, const PullAnswer& answer);
  // The same from views (no copy of the payload needed first).
  absl::Status Apply(int peer, const PullAnswerView& answer);
  // Names the neighbours by public key, in the order their indices follow from
  // now on, and sets our degree to their count: a neighbour kept (same key)
  // keeps its mirror under its new index, a new one starts empty, one no
  // longer listed is forgotten. Until called, peers are anonymous and
  // Restore matches mirrors by position; naming as many anonymous peers as
  // there are keeps their mirrors in order. Returns how many mirrors were kept.
  // Call between rounds: indices given before it no longer hold after it.
  int SetPeers(const std::vector<std::string>& keys);
  // What to ask neighbour `peer` for next: (epoch, after_seq).
  std::pair<uint64_t, uint64_t> Cursor(int peer) const;

  MirrorStats mirror_stats(int peer) const;
  // A copy of mirror m_peer (empty while uninitialized or out of range): for
  // tests and diagnostics, O(size()).
  std::vector<float> mirror(int peer) const;
  uint64_t epoch() const;
  uint64_t seq() const;
  std::vector<float> public_copy() const;

  // Persisted in the trainer's checkpoint. `clean` marks the final checkpoint
  // of an orderly shutdown; Restore of a non-clean one starts a new epoch.
  std::string Serialize(bool clean) const;
  absl::Status Restore(std::string_view bytes);

 private:
  Federation(const FederationOptions& options, size_t size, int num_peers, int32_t degree);
  // ... implementation-defined members (mutex, x̂, log, mirrors, codec)
  struct State;
  struct MergePlan;
  // Who takes part in a merge at x and with what weights (screening included),
  // under mu_. `record`: count the merge in the mirrors' stats (Merge does,
  // Probe does not).
  MergePlan PlanMerge(const float* x, bool record) const;
  FederationOptions options_;
  size_t size_;
  mutable std::mutex mu_;
  std::unique_ptr<State> state_;   // guarded by mu_
};

}  // namespace mycel::federation
