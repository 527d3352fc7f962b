// SharedWeights: what the gossip rounds need of the model whose shared
// parameters they publish and merge, and nothing more: read or write those
// parameters between two training steps (opening and closing the rounds'
// local steps), their size and layers, and the validation losses of
// candidate weights for trust probes. train::Trainer implements it over the
// live model; peer::Gossip uses it. Torch-free, so federation (and peer)
// stay pure of the trainer.
//
// Vectors are the shared parameters flattened in Model::parameters() order,
// fp32, as everywhere in federation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mycel::federation {

class SharedWeights {
 public:
  // fn(shared, samples_trained, round_lr): see WithSharedParameters.
  using Visit = std::function<bool(std::vector<float>& shared, int64_t samples_trained, double round_lr)>;

  virtual ~SharedWeights() = default;

  // How many shared parameters there are.
  virtual int64_t shared_size() const = 0;
  // The shared parameters by layer (name, size), in their flattened order:
  // the groups trust is kept for (Federation::SetGroups).
  virtual std::vector<std::pair<std::string, size_t>> shared_layers() const = 0;

  // Runs fn(shared, samples_trained, round_lr) between two training steps,
  // on the calling thread, with the shared parameters and the learning rate
  // a full round of local steps sums to (0 if the round under way took no
  // step); if fn returns true the values are written back. This is how
  // publishes and merges reach the weights. With `opens_round` it counts a
  // new round and opens its local-steps budget (fn may then be null: no
  // copy); without, it closes the budget until the next round opens.
  // `drift` (opening a round only; empty = none, else shared_size() values)
  // is the federation's drift correction per unit of learning rate, added
  // as lr · drift after each of the round's local steps.
  // train::Trainer::WithSharedParameters says what that costs and guards.
  virtual absl::Status WithSharedParameters(Visit fn, bool opens_round = false, std::vector<float> drift = {}) = 0;

  // Validation loss of `count` candidate shared-weight vectors (trust
  // probes): make(i, out) writes candidate i (shared_size() values) into
  // `out`; each is evaluated on the same batch of at most `examples`
  // held-out examples, and the weights are put back before it returns.
  // FailedPrecondition while nothing is held out.
  virtual absl::StatusOr<std::vector<double>> ProbeLosses(int64_t examples, size_t count,
                                                          const std::function<void(size_t, float*)>& make) = 0;
};

}  // namespace mycel::federation
