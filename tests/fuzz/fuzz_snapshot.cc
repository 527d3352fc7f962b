// Federation::Restore on arbitrary bytes: the federation part of every
// checkpoint, read back at each start. Contract (federation/federation.h): a
// snapshot that does not parse, or does not fit this federation, is refused
// and changes nothing; an accepted one leaves a federation that serves, merges
// and serializes again.
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "federation/federation.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using mycel::federation::Federation;
  using mycel::federation::FederationOptions;
  FederationOptions o = mycel::federation::PlainGossip();
  o.drift_correction = 0.9;
  o.codec = "int8";
  auto fed = std::move(Federation::Create(o, std::vector<float>(64, 0.5f), 2, 2)).value();
  const std::string before = fed->Serialize(true);
  const absl::Status s = fed->Restore(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s.ok()) {
    MYCEL_FUZZ_CHECK(fed->Serialize(true) == before);  // a refused snapshot changes nothing
    return 0;
  }
  // Restored: it still works end to end.
  std::vector<float> x(64, 0.25f);
  fed->Publish(x.data(), 1);
  fed->Merge(x.data(), 1.0);
  (void)fed->Answer(0, 0);
  const std::string again = fed->Serialize(true);
  auto other = std::move(Federation::Create(o, std::vector<float>(64, 0.5f), 2, 2)).value();
  const absl::Status reread = other->Restore(again);
  if (!reread.ok()) std::fprintf(stderr, "re-reading our own snapshot: %s\n", std::string(reread.message()).c_str());
  MYCEL_FUZZ_CHECK(reread.ok());  // what we write, we read
  return 0;
}
