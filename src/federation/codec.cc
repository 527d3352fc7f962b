#include "federation/codec.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "federation/wire.h"

namespace mycel::federation {
namespace {

// dense_f32 payload: "DF32", u64 count (little-endian), count × binary32 LE.
// The count makes a payload self-describing: a reader expecting a different
// model size is told so instead of reading a coincidentally sized blob.
constexpr char kDenseMagic[4] = {'D', 'F', '3', '2'};
constexpr size_t kDenseHeader = sizeof(kDenseMagic) + sizeof(uint64_t);

// Branch-free so the scan vectorises (an int: GCC does not vectorise a bool
// reduction); NaN and ±Inf both fail x − x == 0.
bool AllFinite(const float* v, size_t n) {
  int ok = 1;
  for (size_t i = 0; i < n; ++i) ok &= (v[i] - v[i] == 0.0f);
  return ok != 0;
}

class DenseF32Codec final : public Codec {
 public:
  const char* name() const override { return "dense_f32"; }

  std::string Encode(const float* values, size_t n) const override {
    std::string out;
    out.reserve(kDenseHeader + 4 * n);
    out.append(kDenseMagic, sizeof(kDenseMagic));
    wire::AppendInt<uint64_t>(&out, n);
    wire::AppendFloats(&out, values, n);
    return out;
  }

  absl::Status Decode(std::string_view bytes, size_t n, float* out) const override {
    if (bytes.size() < kDenseHeader ||
        std::memcmp(bytes.data(), kDenseMagic, sizeof(kDenseMagic)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad_shape: not a dense_f32 payload (", bytes.size(), " bytes)"));
    }
    wire::Reader r(bytes.substr(sizeof(kDenseMagic)));
    uint64_t count = 0;
    r.Int(&count);
    if (count != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad_shape: dense_f32 payload holds ", count, " values, expected ", n));
    }
    if (r.remaining() != 4 * n) {
      return absl::InvalidArgumentError(absl::StrCat("bad_shape: dense_f32 payload of ", n,
                                                     " values has ", r.remaining(),
                                                     " data bytes, expected ", 4 * n));
    }
    r.Floats(n, out);
    if (!AllFinite(out, n)) {  // the offending index is searched for only on failure
      for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(out[i])) {
          return absl::InvalidArgumentError(
              absl::StrCat("non_finite: dense_f32 value ", i, " is ", out[i]));
        }
      }
    }
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Codec>> MakeCodec(const std::string& name) {
  if (name == "dense_f32") return std::unique_ptr<Codec>(new DenseF32Codec());
  return absl::NotFoundError(absl::StrCat("unknown codec \"", name, "\" (known: dense_f32)"));
}

}  // namespace mycel::federation
