// The config parser on arbitrary text: a user's hand-edited TOML. Contract
// (config/config.h): it is accepted with every value in range, or refused
// with one message that names where.
#include <string>

#include "config/config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = mycel::config::ParseConfig(text, "/fuzz/mycel.toml");
  if (!config.ok()) {
    MYCEL_FUZZ_CHECK(config.status().message().find("/fuzz/mycel.toml") != std::string_view::npos);
    return 0;
  }
  MYCEL_FUZZ_CHECK(config->federation.round_interval_s >= 0.01 && config->federation.round_interval_s <= 3.2e7);
  return 0;
}
