// Codec: the swappable wire stage between a weight difference and bytes.
//
// With CHOCO-SGD public copies a publisher encodes q = Q(x − x̂), decodes its
// own q and adds it to x̂; every neighbour decodes the same q and adds it to
// its mirror of x̂. What a lossy codec drops stays in x − x̂ and goes out in a
// later round (error feedback), so codecs keep no state: Decode is a pure
// function of the bytes, and gives the same floats bit for bit on every node.
//
// Codecs, by name (the [federation] codec value; the name also travels in
// every Pull reply and a receiver builds its decoder from it):
//   dense_f32     fp32 per value, exact.
//   fp16          IEEE binary16 per value, round to nearest even; finite
//                 values beyond ±65504 saturate to ±65504 (never Inf).
//   int8          int8 per value, one fp32 scale (max |v| / 127) per block of
//                 256 values; error ≤ half a step (scale / 2) per value. A
//                 block whose max |v| is below 2^-100 is sent as zeros.
//   sign          one bit per value (its sign bit, so −0 reads as negative),
//                 one fp32 scale (mean |v|) per block of 256; decodes to
//                 ±scale (scaled sign as in EF-SignSGD).
//   topk:F        the k = max(1, ⌈F·n⌉) largest |v| (ties: the lower index),
//                 fp32, zeros elsewhere. F is a decimal in (0, 1] with at most
//                 9 decimal places, e.g. topk:0.01.
//   topk:F+fp16, topk:F+int8, topk:F+sign
//                 the same k values coded as by fp16, int8 or sign.
// MakeCodec canonicalises the name ("topk:0.010" → "topk:0.01", "topk:1.0" →
// "topk:1"); name() returns the canonical form (≤ 32 characters of
// [a-z0-9_:.+]), so a config and a header naming the same codec compare equal.
// Wire formats: codec.cc.
//
// Failures: Encode never fails. Non-finite input encodes to a payload that
// Decode refuses (non_finite), which is how a publisher learns its x was not
// finite. Decode is total: for any bytes it either fills out[0..n) with finite
// floats or returns InvalidArgument whose message starts with one reason word
// and ": " — "bad_shape" (wrong magic, count, length, block size, trailing
// bytes, a top-k k other than max(1, ⌈F·n⌉) for this codec's F), "bad_index"
// (a top-k index out of range or repeated) or "non_finite" (a NaN/Inf scale
// or value), the same Refusal carried on the status (common/refusal.h) — and
// leaves out unspecified. It reads only inside `bytes` and allocates at most
// n floats, and only once the bytes are known to hold what they claim.
//
// Cost (10M values, one core, against a memcpy of their fp32 bytes: see
// tests/bench/exchange_bench.cc): encode + decode of int8, sign and
// topk:0.01 run at 0.5-0.6x memcpy's bandwidth; top-k's encode allocates
// O(k) scratch for F ≤ 1/16 and O(n) above, where it is several times slower.
//
// Threads: codecs are immutable after MakeCodec; any thread may call any
// method concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace mycel::federation {

// Every codec's payload for n values is at most 4·n + this many bytes (a
// dense_f32 payload plus header; top-k falls back to sending all n values
// when that is smaller than values plus indices), so a receiver can bound a
// delta by the model size before reading it. Largest actual: 28 (topk:F+sign
// of one value).
inline constexpr size_t kMaxCodecOverheadBytes = 32;

class Codec {
 public:
  virtual ~Codec() = default;
  // The canonical name, as MakeCodec was asked for it; valid while the codec lives.
  virtual const char* name() const = 0;
  // Encodes `n` values into *out, replacing its contents (its capacity is
  // reused, so a caller encoding every round into the same string does not
  // touch fresh memory).
  virtual void EncodeInto(const float* values, size_t n, std::string* out) const = 0;
  // Encodes `n` values.
  std::string Encode(const float* values, size_t n) const {
    std::string out;
    EncodeInto(values, n, &out);
    return out;
  }
  // Decodes into out[0..n) (overwrites). Refuses a malformed payload or one
  // holding NaN/Inf (InvalidArgument, "reason: why", see above); out is then
  // unspecified.
  virtual absl::Status Decode(std::string_view bytes, size_t n, float* out) const = 0;
};

// The codec named `name` (see above). NotFound for an unknown name (the
// message lists the known ones); InvalidArgument for a bad parameter
// (topk:0, topk:1.5, topk:abc).
absl::StatusOr<std::unique_ptr<Codec>> MakeCodec(const std::string& name);

}  // namespace mycel::federation
