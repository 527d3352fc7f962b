#include "common/coding.h"

#include <sodium.h>

#include "absl/strings/str_cat.h"

namespace mycel {

std::string Base64Encode(std::string_view raw) {
  std::string out(sodium_base64_ENCODED_LEN(raw.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(raw.data()),
                    raw.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(out.size() - 1);  // ENCODED_LEN counts the terminating NUL
  return out;
}

absl::StatusOr<std::string> Base64Decode(std::string_view b64) {
  std::string raw(b64.size() / 4 * 3 + 3, '\0');
  size_t len = 0;
  // No ignore set and no end pointer: whitespace, trailing junk and missing
  // padding all fail; libsodium also rejects non-zero unused trailing bits.
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(raw.data()), raw.size(), b64.data(),
                        b64.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid base64 (", b64.size(), " characters)"));
  }
  raw.resize(len);
  // Belt and braces: accept only the one canonical spelling of these bytes.
  if (Base64Encode(raw) != b64) {
    return absl::InvalidArgumentError(
        absl::StrCat("not canonical base64 (", b64.size(), " characters)"));
  }
  return raw;
}

std::string Blake2b(std::string_view data, size_t bytes) {
  // BLAKE2b gives the same digest with or without sodium_init (which only
  // picks a faster implementation); once, and thread-safe as a static.
  [[maybe_unused]] static const int sodium_ready = sodium_init();
  if (bytes < crypto_generichash_BYTES_MIN || bytes > crypto_generichash_BYTES_MAX) return "";
  std::string out(bytes, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(out.data()), bytes,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size(), nullptr, 0);
  return out;
}

}  // namespace mycel
