// Every wire codec's Decode on arbitrary bytes, and its Encode on arbitrary
// floats. Contract (federation/codec.h): Decode either fills out[0..n) with
// finite floats or refuses with a reason word; what Encode made from finite
// values decodes, to finite values.
//
// Input: [codec][n: u16][payload...]; the payload is decoded as is, and also
// read as floats and encoded, then decoded.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "federation/codec.h"
#include "fuzz_common.h"

namespace {

const char* const kCodecs[] = {"dense_f32", "fp16", "int8", "sign", "topk:0.1", "topk:0.5",
                               "topk:1", "topk:0.01+fp16", "topk:0.25+int8", "topk:0.3+sign"};

bool Reason(const absl::Status& s) {
  const std::string m(s.message());
  return m.rfind("bad_shape: ", 0) == 0 || m.rfind("bad_index: ", 0) == 0 || m.rfind("non_finite: ", 0) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using mycel::fuzz::Input;
  Input in(data, size);
  static std::vector<std::unique_ptr<mycel::federation::Codec>> codecs = [] {
    std::vector<std::unique_ptr<mycel::federation::Codec>> v;
    for (const char* name : kCodecs) v.push_back(std::move(mycel::federation::MakeCodec(name)).value());
    return v;
  }();
  const auto& codec = *codecs[in.Byte() % codecs.size()];
  const size_t n = in.U16() % 4097;
  const std::string_view payload = in.Rest();

  std::vector<float> out(n);
  absl::Status s = codec.Decode(payload, n, out.data());
  if (s.ok()) {
    for (float f : out) MYCEL_FUZZ_CHECK(std::isfinite(f));
  } else {
    MYCEL_FUZZ_CHECK(Reason(s));
  }

  // The same bytes as floats, encoded and decoded. Non-finite values are made
  // finite, and huge ones smaller: a sign block averaging above FLT_MAX / 256
  // overflows its scale and is refused by design (codec.cc), and a delta
  // that large is far past any norm bound.
  std::vector<float> values(payload.size() / sizeof(float));
  if (!values.empty()) std::memcpy(values.data(), payload.data(), values.size() * sizeof(float));
  for (float& f : values) {
    if (!std::isfinite(f)) f = 1.0f;
    if (std::fabs(f) > 1e30f) f = std::copysign(1e30f, f);
  }
  const std::string encoded = codec.Encode(values.data(), values.size());
  std::vector<float> back(values.size());
  s = codec.Decode(encoded, values.size(), back.data());
  MYCEL_FUZZ_CHECK(s.ok());
  for (float f : back) MYCEL_FUZZ_CHECK(std::isfinite(f));
  return 0;
}
