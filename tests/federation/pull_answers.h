// PullAnswers as a neighbour's Federation would send them, for the
// federation tests.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "federation/federation.h"

namespace mycel::federation {

// A dense keyframe: the neighbour's whole public copy `v` at sequence 1 of `epoch`.
inline PullAnswer Keyframe(std::vector<float> v, int64_t samples, int32_t degree, uint64_t epoch = 7) {
  PullAnswer a;
  a.epoch = epoch;
  a.to_seq = 1;
  a.keyframe = true;
  a.codec = "dense_f32";
  a.public_copy = std::move(v);
  a.samples_trained = samples;
  a.degree = degree;
  return a;
}

}  // namespace mycel::federation
