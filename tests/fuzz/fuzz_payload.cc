// A Pull answer's payload as the puller splits and applies it: the header's
// claims checked (CheckPayloadBounds), the bytes split into deltas or a
// keyframe (DecodePayload), then applied to a mirror (Federation::Apply,
// which decodes each delta with the codec the header names). Contract: any
// bytes are either refused with a reason or applied, and never read outside
// the payload.
//
// Input: [flags][count: u16][codec][payload...].
#include <memory>
#include <string>
#include <vector>

#include "federation/federation.h"
#include "fuzz_common.h"
#include "peer/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mycel;
  fuzz::Input in(data, size);
  constexpr size_t kParams = 64;
  const uint8_t flags = in.Byte();
  const bool keyframe = flags & 1;
  const uint32_t count = in.U16();
  static const char* const kCodecs[] = {"dense_f32", "fp16", "int8", "sign", "topk:0.25+int8", "nope"};
  const char* codec = kCodecs[in.Byte() % 6];
  const std::string_view payload = in.Rest();

  if (!peer::CheckPayloadBounds(keyframe, count, payload.size(), kParams, uint64_t{1} << 31).ok()) return 0;
  federation::PullAnswerView view;
  view.epoch = 7;
  view.from_seq = keyframe ? 0 : 0;
  view.to_seq = keyframe ? 1 : count;
  view.keyframe = keyframe;
  view.codec = keyframe ? "dense_f32" : codec;
  if (!peer::DecodePayload(payload, keyframe, count, &view).ok()) return 0;
  if (!keyframe) MYCEL_FUZZ_CHECK(view.deltas.size() == count);
  for (std::string_view d : view.deltas) {
    MYCEL_FUZZ_CHECK(d.data() >= payload.data() && d.data() + d.size() <= payload.data() + payload.size());
  }
  auto fed = std::move(federation::Federation::Create({}, std::vector<float>(kParams, 0.0f), 1, 1)).value();
  (void)fed->Apply(0, view);
  std::vector<float> x(kParams, 0.0f);
  fed->Merge(x.data(), 1.0);
  return 0;
}
