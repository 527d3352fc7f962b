// The peer port's HTTP/2 screen (peer/h2_screen.h) over whatever a client
// might send. Contract: never reads outside the bytes it is given, never
// holds more unfinished streams than its limit, and its verdict does not
// depend on how the bytes were split into reads (a frame may arrive a byte
// at a time): the same bytes fed whole and in the input's chunk sizes end
// with the same reason, or both with none. Fed as the server's frames
// (FeedServer), the bytes only ever free streams, whatever the split.
//
// Input: [chunk seed][bytes...]. The seeds start with a real client preface
// and frames, so the fuzzer begins past the preface check.
#include <algorithm>
#include <string_view>

#include "fuzz_common.h"
#include "peer/h2_screen.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mycel;
  fuzz::Input in(data, size);
  uint32_t seed = in.Byte() | 1u;
  const std::string_view bytes = in.Rest();
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  peer::H2ScreenLimits limits;
  limits.reset_burst = 4;
  limits.resets_per_second = 0;  // time plays no part: both runs see the same clock
  peer::H2ClientScreen whole(limits), split(limits);
  const std::string_view a = whole.Feed(p, bytes.size(), 0);
  std::string_view b;
  for (size_t off = 0; off < bytes.size() && b.empty();) {
    seed = seed * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(bytes.size() - off, 1 + (seed >> 16) % 64);
    b = split.Feed(p + off, n, 0);
    off += n;
    MYCEL_FUZZ_CHECK(split.unfinished_streams() <= limits.max_unfinished_streams);
  }
  MYCEL_FUZZ_CHECK(a == b);
  MYCEL_FUZZ_CHECK(whole.unfinished_streams() <= limits.max_unfinished_streams);
  // The same bytes as the server's frames, whole and split: they only ever
  // make the screen forget streams, never add one, and the split does not
  // change which.
  const int before = whole.unfinished_streams();
  whole.FeedServer(p, bytes.size());
  for (size_t off = 0; off < bytes.size();) {
    seed = seed * 1103515245u + 12345u;
    const size_t n = std::min<size_t>(bytes.size() - off, 1 + (seed >> 16) % 64);
    split.FeedServer(p + off, n);
    off += n;
  }
  MYCEL_FUZZ_CHECK(whole.unfinished_streams() <= before);
  if (a.empty()) MYCEL_FUZZ_CHECK(whole.unfinished_streams() == split.unfinished_streams());
  return 0;
}
