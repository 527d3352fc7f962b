// Node identity: one long-term Ed25519 key pair per node (libsodium).
//
// The secret key lives in sodium_malloc'ed memory, wiped and freed with the
// Identity. On disk: <state_dir>/identity.key, mode 0600, holding the 8-byte
// header "MYCELID1" (the last character is the format version) and the 64-byte
// libsodium secret key (seed || public key). A new key is published with
// link(), so a key that exists is never overwritten, even by a racing process.
// Loading refuses (never repairs) a file that group/others can access, that
// another user owns, or whose size, header or key pair is inconsistent.
// Thread-safe after construction (immutable).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/coding.h"

namespace mycel::crypto {

class Identity {
 public:
  ~Identity();
  Identity(const Identity&) = delete;
  Identity& operator=(const Identity&) = delete;

  // Loads the key at `path`, or creates a new one (and its directory) if the
  // file does not exist. A file of the wrong size or mode is an error naming it.
  static absl::StatusOr<std::unique_ptr<Identity>> LoadOrCreate(const std::string& path);
  // A fresh in-memory identity (tests, intruders in tests).
  static absl::StatusOr<std::unique_ptr<Identity>> Generate();

  const std::string& public_key() const { return public_key_; }  // 32 raw bytes
  std::string PublicKeyBase64() const;
  // Short printable fingerprint of the public key ("ab12:cd34:..."), for logs and `mycel peers`.
  std::string Fingerprint() const;
  // Detached Ed25519 signature (64 bytes) over `message`.
  std::string Sign(std::string_view message) const;

 private:
  Identity();
  unsigned char* secret_key_ = nullptr;  // sodium_malloc'ed, crypto_sign_SECRETKEYBYTES
  std::string public_key_;
};

// Verifies a detached signature made by Identity::Sign.
bool VerifySignature(std::string_view public_key, std::string_view message, std::string_view sig);
// Fingerprint of any 32-byte public key, same format as Identity::Fingerprint.
std::string KeyFingerprint(std::string_view public_key);
// `bytes` random bytes from libsodium's CSPRNG as lowercase hex, e.g. an
// ingest's idempotency key; empty if libsodium cannot start.
std::string RandomHex(size_t bytes);
// Whether two secrets (tokens, not keys) are equal, in time that does not
// depend on where they differ (sodium_memcmp); false if the lengths differ.
bool SameSecret(std::string_view a, std::string_view b);

}  // namespace mycel::crypto
