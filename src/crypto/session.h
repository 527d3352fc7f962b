// Session: the authenticated key exchange and payload sealing of one peer
// exchange (a Pull), with forward secrecy — libsodium only, bytes in, bytes out.
//
// Shape (SIGMA-style, like Noise IK's goals): both sides make fresh X25519
// ephemeral key pairs per exchange; each side signs the transcript with its
// long-term Ed25519 identity; session keys come from the ephemeral DH
// (crypto_kx) bound to the transcript hash. A stolen identity key therefore
// does not decrypt recorded traffic.
//
//   client → server  Hello:  version | sender pk | recipient pk | unix time |
//                            16-byte random nonce | client ephemeral pk |
//                            `request` (opaque bytes the caller defines: epoch,
//                            after_seq, fingerprint, ...)      + client signature
//   server → client  Reply:  hash(Hello) | server ephemeral pk | `header`
//                            (opaque: sequence range, fingerprint, codec, ...)
//                                                             + server signature
//   then the payload, sealed with crypto_secretstream_xchacha20poly1305 under
//   the server→client key, each chunk with the Reply's hash as associated data
//   and the final chunk tagged FINAL (truncation is detected).
//   client → server  (dial-out only) the client's own payload, sealed the same
//                    way under a client→server key bound to the whole Reply.
//
// Verification order on the server is cheapest first, so an unauthenticated
// caller can make it do only cheap work: parse (fixed sizes, bounded lengths),
// recipient == me, sender pinned, timestamp within the window, then the
// signature, then the replay cache. No allocation proportional to what a
// caller claims.
//
// Secret material (ephemeral secret keys, session keys) lives in
// sodium_malloc'ed buffers, wiped on destruction. Objects are single-use and
// not thread-safe; ReplayGuard is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/refusal.h"
#include "crypto/identity.h"

namespace mycel::crypto {

inline constexpr uint32_t kSessionVersion = 1;
inline constexpr size_t kMaxRequestBytes = 4096;   // opaque request part of a Hello
inline constexpr size_t kMaxHeaderBytes = 4096;    // opaque header part of a Reply
inline constexpr size_t kSealOverheadBytes = 17;   // a sealed chunk = plaintext + this

// Parsed, verified Hello as the server sees it.
struct VerifiedHello {
  std::string sender_pk;   // 32 raw bytes, one of the pinned keys (IdentifyUnpinned: any)
  int64_t timestamp = 0;
  std::string request;     // the client's opaque request bytes
};

// Refusals (common/refusal.h) are one of kMalformed, kWrongRecipient,
// kUnpinnedKey, kStale, kBadSignature, kReplayed, kTampered, kTruncated and
// kWrongVersion, carried on the error (RefusalOf) and named first in its
// message ("unpinned_key: ..."); they are counted in `mycel peers`.

// Remembers (sender, nonce) pairs seen within the time window; refuses repeats.
// Memory is bounded: entries older than the window are dropped.
//
// The memory starts empty at each start of the process, so a Hello recorded
// in the last window of an earlier run would pass it. `not_before` (the
// process's start, in Unix seconds) closes that: a Hello dated before it is
// refused "replayed", since no run but an earlier one can have seen it. The
// cost is that a neighbour whose clock runs s seconds behind ours is refused
// for the first s seconds after we start (it backs off and retries).
class ReplayGuard {
 public:
  explicit ReplayGuard(int64_t window_s = 120, int64_t not_before = INT64_MIN)
      : window_s_(window_s), not_before_(not_before) {}
  // OK and remembers, or "stale"/"replayed".
  absl::Status Check(std::string_view sender_pk, std::string_view nonce, int64_t timestamp, int64_t now);
  int64_t window_s() const { return window_s_; }
  // Entries currently remembered (tests, metrics).
  size_t size() const;

 private:
  // Drops entries whose timestamp is older than now − window (a Hello carrying
  // one would be refused as stale anyway). Called with mu_ held.
  void PurgeLocked(int64_t now);

  int64_t window_s_;
  int64_t not_before_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, int64_t> seen_;  // sender||nonce → timestamp
  // Amortised purging: when the map reaches next_purge_size_ entries, or when
  // a window has passed since the last purge.
  size_t next_purge_size_ = 1024;
  int64_t last_purge_now_ = 0;
  bool purged_once_ = false;
};

// Where one direction's receiving stream is (internal to the sessions).
struct StreamFlags {
  bool started = false;
  bool finished = false;
  bool failed = false;  // a chunk failed to open: the stream is dead
};

class ClientSession {
 public:
  // Starts an exchange from `me` to the pinned `server_pk`.
  static absl::StatusOr<std::unique_ptr<ClientSession>> Begin(const Identity& me,
                                                              std::string_view server_pk,
                                                              std::string_view request,
                                                              int64_t now);
  ~ClientSession();
  // The signed Hello bytes to send.
  const std::string& hello() const { return hello_; }
  // Verifies the server's Reply (signed by server_pk over hash(Hello)) and
  // derives the receive key. Returns the server's opaque header.
  absl::StatusOr<std::string> AcceptReply(std::string_view reply);
  // Opens the next sealed chunk; `final` is set on the last one. Errors:
  // "tampered" (auth failure), "truncated" (stream ended without FINAL: call
  // Finish()).
  absl::StatusOr<std::string> Open(std::string_view sealed, bool* final);
  // Like Open, but decrypts straight into the tail of *out (appended; no
  // temporary). On error *out is restored to its size on entry (its capacity
  // may have grown by at most the chunk's length) and the stream is dead, as
  // with Open. Same errors as Open.
  absl::Status OpenAppend(std::string_view sealed, std::string* out, bool* final);
  // OK only if the FINAL chunk was opened.
  absl::Status Finish() const;

  // The client→server direction of the same exchange (dial-out: a node that
  // cannot be called hands its payload over on the call it opened). After
  // AcceptReply: StartUpstream returns the stream header the server takes
  // first (ServerSession::AcceptUpstream); SealUpTo then seals chunks as
  // ServerSession::SealTo does, the last one `final`. Misuse leaves *out
  // empty, which the server refuses as "tampered".
  absl::StatusOr<std::string> StartUpstream();
  void SealUpTo(std::string_view plaintext, bool final, std::string* out);

 private:
  ClientSession();
  struct Secrets;
  std::unique_ptr<Secrets> secrets_;
  std::string hello_;
  std::string server_pk_;
  std::string hello_hash_;
  std::string reply_hash_;
  StreamFlags down_;
  bool up_started_ = false;
  bool up_sealed_final_ = false;
};

class ServerSession {
 public:
  // Parses and verifies a Hello (cheapest checks first); `pinned` holds the
  // raw 32-byte keys allowed to call. Errors carry a refusal reason
  // `me` must outlive the session (Reply signs with it).
  static absl::StatusOr<std::unique_ptr<ServerSession>> Accept(const Identity& me,
                                                               const std::vector<std::string>& pinned,
                                                               ReplayGuard& replay,
                                                               std::string_view hello, int64_t now);
  // Who sent a Hello whose key is not pinned (pairing: a pending peer):
  // the same checks as Accept but the pinned one, so the sender is proven to
  // hold its key and to have addressed us within the window. No replay check
  // and no session: nothing is answered, only recorded.
  static absl::StatusOr<VerifiedHello> IdentifyUnpinned(const Identity& me, int64_t window_s,
                                                        std::string_view hello, int64_t now);
  ~ServerSession();
  const VerifiedHello& hello() const { return verified_; }
  // The signed Reply carrying the opaque `header`; also derives the send key.
  absl::StatusOr<std::string> Reply(std::string_view header);
  // Seals the next chunk of the payload (call Reply first); `final` on the last.
  // Misuse (before Reply, or after the final chunk) returns an empty string,
  // which the client refuses as "tampered".
  std::string Seal(std::string_view plaintext, bool final);
  // Like Seal, but writes the sealed chunk into *out (replacing its contents,
  // reusing its capacity), so a caller streaming many chunks allocates once.
  // `plaintext` must not overlap *out. Misuse leaves *out empty, as Seal.
  void SealTo(std::string_view plaintext, bool final, std::string* out);

  // The client→server direction (ClientSession::StartUpstream), after
  // Reply: AcceptUpstream takes the client's stream header ("malformed" if
  // it is not one), then OpenUpAppend / FinishUp work as the client's
  // OpenAppend / Finish, with the same errors.
  absl::Status AcceptUpstream(std::string_view stream_header);
  absl::Status OpenUpAppend(std::string_view sealed, std::string* out, bool* final);
  absl::Status FinishUp() const;

 private:
  ServerSession();
  struct Secrets;
  std::unique_ptr<Secrets> secrets_;
  VerifiedHello verified_;
  std::string hello_hash_;
  std::string reply_hash_;
  std::string eph_pk_;  // server ephemeral X25519 public key
  const Identity* me_ = nullptr;  // signs the Reply; must outlive the session
  bool stream_started_ = false;
  bool sealed_final_ = false;
  StreamFlags up_;
};

}  // namespace mycel::crypto
