// Codec: the swappable wire stage between a weight difference and bytes.
// Dense fp32 now; fp16, int8 with per-block scales, top-k with index coding
// plug in behind the same interface. With public copies (CHOCO) compression
// error is fed back automatically, so lossy codecs stay convergent.
// Codecs are stateless and thread-safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mycel::federation {

class Codec {
 public:
  virtual ~Codec() = default;
  virtual const char* name() const = 0;
  // Encodes `n` values.
  virtual std::string Encode(const float* values, size_t n) const = 0;
  // Decodes into out[0..n) (overwrites). Refuses (InvalidArgument, saying
  // why) a payload of the wrong size or holding NaN/Inf; out is then unspecified.
  virtual absl::Status Decode(std::string_view bytes, size_t n, float* out) const = 0;
};

// "dense_f32" (little-endian IEEE-754). NotFound for an unknown name.
absl::StatusOr<std::unique_ptr<Codec>> MakeCodec(const std::string& name);

}  // namespace mycel::federation
