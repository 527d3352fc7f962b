#include "crypto/session.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <sodium.h>

#include "absl/strings/str_cat.h"
#include "common/coding.h"
#include "common/refusal.h"
#include "common/status.h"

// Wire formats (all integers little-endian):
//
//   Hello = "MYHELLO1" | version u32 | sender pk 32 | recipient pk 32 |
//           timestamp i64 | nonce 16 | client ephemeral X25519 pk 32 |
//           request length u32 (≤ kMaxRequestBytes) | request |
//           Ed25519 signature 64 by the sender over everything before it
//
//   Reply = "MYREPLY1" | BLAKE2b-256(Hello) 32 | server ephemeral X25519 pk 32 |
//           secretstream header 24 | header length u32 (≤ kMaxHeaderBytes) |
//           header | Ed25519 signature 64 by the recipient over everything before it
//
// The two magics also separate the signing domains: a Hello signature can
// never verify as a Reply signature and vice versa.
//
// Key derivation. crypto_kx over the two ephemeral key pairs gives the
// server→client key kx_s2c = BLAKE2b-512(X25519(e_c, e_s) || e_c_pk || e_s_pk)[32..64]
// (the server's tx, the client's rx). The payload key binds it to the
// transcript and both long-term identities:
//
//   key = BLAKE2b-256(key = kx_s2c,
//                     msg = "mycel/session/v1/s2c" | BLAKE2b-256(Hello) | server eph pk)
//
// hash(Hello) covers version, both identities, timestamp, nonce, the client
// ephemeral key and the request. The rest of the Reply (its header, the
// secretstream header and the server's signature) cannot go into the key,
// since the secretstream header is produced from the key; it is bound instead
// by using BLAKE2b-256(whole Reply) as associated data of every chunk. Only
// the holders of the ephemeral secret keys can compute key, and both are
// erased as soon as it is derived (forward secrecy).
//
// The client→server direction (dial-out: a node that cannot be called hands
// its own payload over on the exchange it opened) has its own key, from the
// other half of the same crypto_kx output, bound to the whole Reply:
//
//   up key = BLAKE2b-256(key = kx_c2s, msg = "mycel/session/v1/c2s" | BLAKE2b-256(Reply))
//
// The client sends that stream's 24-byte secretstream header first, then
// chunks sealed exactly as the server's, with hash(Reply) as associated data.
// Distinct keys per direction mean a chunk of one direction never opens in
// the other.

namespace mycel::crypto {
namespace {

constexpr char kHelloMagic[] = "MYHELLO1";
constexpr char kReplyMagic[] = "MYREPLY1";
constexpr size_t kMagicLen = 8;
constexpr size_t kPkLen = 32;
constexpr size_t kNonceLen = 16;
constexpr size_t kHashLen = crypto_generichash_BYTES;  // 32: BLAKE2b-256
constexpr size_t kSigLen = crypto_sign_BYTES;
constexpr size_t kStreamHeaderLen = crypto_secretstream_xchacha20poly1305_HEADERBYTES;
constexpr char kKdfLabel[] = "mycel/session/v1/s2c";
constexpr char kUpKdfLabel[] = "mycel/session/v1/c2s";

static_assert(sizeof(kHelloMagic) == kMagicLen + 1 && sizeof(kReplyMagic) == kMagicLen + 1);
static_assert(crypto_kx_PUBLICKEYBYTES == kPkLen && crypto_sign_PUBLICKEYBYTES == kPkLen);
static_assert(crypto_kx_SESSIONKEYBYTES == crypto_secretstream_xchacha20poly1305_KEYBYTES);
static_assert(kSealOverheadBytes == crypto_secretstream_xchacha20poly1305_ABYTES);
static_assert(crypto_generichash_KEYBYTES_MIN <= crypto_kx_SESSIONKEYBYTES &&
              crypto_kx_SESSIONKEYBYTES <= crypto_generichash_KEYBYTES_MAX);

// Hello field offsets.
constexpr size_t kHVersion = kMagicLen;
constexpr size_t kHSender = kHVersion + 4;
constexpr size_t kHRecipient = kHSender + kPkLen;
constexpr size_t kHTimestamp = kHRecipient + kPkLen;
constexpr size_t kHNonce = kHTimestamp + 8;
constexpr size_t kHEph = kHNonce + kNonceLen;
constexpr size_t kHReqLen = kHEph + kPkLen;
constexpr size_t kHFixed = kHReqLen + 4;  // 136
constexpr size_t kHelloMin = kHFixed + kSigLen;
constexpr size_t kHelloMax = kHelloMin + kMaxRequestBytes;

// Reply field offsets.
constexpr size_t kRHelloHash = kMagicLen;
constexpr size_t kREph = kRHelloHash + kHashLen;
constexpr size_t kRStream = kREph + kPkLen;
constexpr size_t kRHdrLen = kRStream + kStreamHeaderLen;
constexpr size_t kRFixed = kRHdrLen + 4;  // 100
constexpr size_t kReplyMin = kRFixed + kSigLen;
constexpr size_t kReplyMax = kReplyMin + kMaxHeaderBytes;

absl::Status InitSodium() {
  static const int rc = sodium_init();
  if (rc < 0) return absl::InternalError("libsodium failed to initialize");
  return absl::OkStatus();
}

const unsigned char* U(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
unsigned char* U(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

std::string Hash(std::string_view data) {
  std::string h(kHashLen, '\0');
  crypto_generichash(U(h), h.size(), U(data), data.size(), nullptr, 0);
  return h;
}

// |a − b| ≤ window without signed overflow, for any int64 values.
bool WithinWindow(int64_t a, int64_t b, int64_t window) {
  const uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  const uint64_t diff = a >= b ? ua - ub : ub - ua;
  return window >= 0 && diff <= static_cast<uint64_t>(window);
}

// The payload key (see the comment at the top), written to `key`.
void DeriveKey(const unsigned char* kx_s2c, std::string_view hello_hash,
               std::string_view server_eph_pk, unsigned char* key) {
  std::string msg(kKdfLabel, sizeof(kKdfLabel) - 1);
  msg.append(hello_hash.data(), hello_hash.size());
  msg.append(server_eph_pk.data(), server_eph_pk.size());
  crypto_generichash(key, crypto_secretstream_xchacha20poly1305_KEYBYTES, U(msg), msg.size(),
                     kx_s2c, crypto_kx_SESSIONKEYBYTES);
}

// The client→server key (see the top), written to `key`.
void DeriveUpKey(const unsigned char* kx_c2s, std::string_view reply_hash, unsigned char* key) {
  std::string msg(kUpKdfLabel, sizeof(kUpKdfLabel) - 1);
  msg.append(reply_hash.data(), reply_hash.size());
  crypto_generichash(key, crypto_secretstream_xchacha20poly1305_KEYBYTES, U(msg), msg.size(),
                     kx_c2s, crypto_kx_SESSIONKEYBYTES);
}

// One sodium_malloc'ed block holding every secret of a session (guard pages,
// mlock'ed where allowed, wiped by sodium_free). All members are byte arrays,
// so sodium_malloc's unaligned placement is fine.
struct SecretBlock {
  unsigned char eph_sk[crypto_kx_SECRETKEYBYTES];
  unsigned char kx_rx[crypto_kx_SESSIONKEYBYTES];
  unsigned char kx_tx[crypto_kx_SESSIONKEYBYTES];
  unsigned char key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
  crypto_secretstream_xchacha20poly1305_state state;     // server→client
  unsigned char up_key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
  crypto_secretstream_xchacha20poly1305_state up_state;  // client→server
};
static_assert(alignof(SecretBlock) == 1);

struct SessionSecrets {
  SessionSecrets() : b(static_cast<SecretBlock*>(sodium_malloc(sizeof(SecretBlock)))) {
    if (b != nullptr) sodium_memzero(b, sizeof(SecretBlock));
  }
  ~SessionSecrets() {
    if (b != nullptr) sodium_free(b);  // wipes before freeing
  }
  SessionSecrets(const SessionSecrets&) = delete;
  SessionSecrets& operator=(const SessionSecrets&) = delete;
  // Erases everything but the stream state.
  void WipeKeys() {
    sodium_memzero(b->eph_sk, sizeof(b->eph_sk));
    sodium_memzero(b->kx_rx, sizeof(b->kx_rx));
    sodium_memzero(b->kx_tx, sizeof(b->kx_tx));
    sodium_memzero(b->key, sizeof(b->key));
  }
  SecretBlock* b;
};

// Seals one chunk with `state` (a push stream) into *out; see ServerSession::SealTo.
void PushChunk(crypto_secretstream_xchacha20poly1305_state* state, const std::string& ad,
               std::string_view plaintext, bool final, std::string* out) {
  out->resize(plaintext.size() + crypto_secretstream_xchacha20poly1305_ABYTES);
  unsigned long long out_len = 0;
  crypto_secretstream_xchacha20poly1305_push(
      state, U(*out), &out_len, U(plaintext), plaintext.size(), U(ad), ad.size(),
      final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
            : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
  out->resize(static_cast<size_t>(out_len));
  if (final) sodium_memzero(state, sizeof(*state));
}

// Opens one chunk of `state` (a pull stream) onto the end of *out; see
// ClientSession::OpenAppend.
absl::Status PullChunk(crypto_secretstream_xchacha20poly1305_state* state, const std::string& ad,
                       std::string_view sealed, std::string* out, bool* final, StreamFlags* f) {
  if (final != nullptr) *final = false;
  if (!f->started) return absl::FailedPreconditionError("Open before the stream began");
  if (f->finished) return absl::FailedPreconditionError("Open after the final chunk");
  if (f->failed) return absl::FailedPreconditionError("Open after a chunk failed to open");
  if (sealed.size() < crypto_secretstream_xchacha20poly1305_ABYTES) {
    f->failed = true;
    return Refuse(absl::StatusCode::kDataLoss, Refusal::kTampered,
                  absl::StrCat("chunk of ", sealed.size(), " bytes is too short"));
  }
  const size_t at = out->size();
  // Grows by exactly the plaintext length: a caller that reserved the whole
  // payload up front never reallocates here.
  out->resize(at + sealed.size() - crypto_secretstream_xchacha20poly1305_ABYTES);
  unsigned long long plain_len = 0;
  unsigned char tag = 0;
  if (crypto_secretstream_xchacha20poly1305_pull(state, reinterpret_cast<unsigned char*>(out->data() + at),
                                                 &plain_len, &tag, U(sealed), sealed.size(), U(ad),
                                                 ad.size()) != 0) {
    f->failed = true;
    out->resize(at);
    return Refuse(absl::StatusCode::kDataLoss, Refusal::kTampered,
                  "chunk failed authentication (modified, reordered or foreign)");
  }
  if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE &&
      tag != crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    f->failed = true;
    // Authenticated but unusable: do not leave its plaintext behind.
    sodium_memzero(out->data() + at, out->size() - at);
    out->resize(at);
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  absl::StrCat("unexpected chunk tag ", static_cast<int>(tag)));
  }
  out->resize(at + static_cast<size_t>(plain_len));
  if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
    f->finished = true;
    if (final != nullptr) *final = true;
    sodium_memzero(state, sizeof(*state));
  }
  return absl::OkStatus();
}

absl::Status Truncated() {
  return Refuse(absl::StatusCode::kDataLoss, Refusal::kTruncated,
                "payload ended without its final chunk");
}

}  // namespace

struct ClientSession::Secrets : SessionSecrets {};
struct ServerSession::Secrets : SessionSecrets {};

// ---------------------------------------------------------------------------

size_t ReplayGuard::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_.size();
}

void ReplayGuard::PurgeLocked(int64_t now) {
  for (auto it = seen_.begin(); it != seen_.end();) {
    // Only entries in the past and outside the window: a Hello carrying that
    // timestamp is refused as stale before the map is consulted. (If the clock
    // steps back by more than the window, a purged Hello could be accepted
    // again; its sender's signature and nonce still bind it, and the payload
    // stays sealed to the original client's ephemeral key.)
    if (it->second < now && !WithinWindow(it->second, now, window_s_)) {
      it = seen_.erase(it);
    } else {
      ++it;
    }
  }
  last_purge_now_ = now;
  purged_once_ = true;
  next_purge_size_ = std::max<size_t>(1024, 2 * seen_.size());
}

absl::Status ReplayGuard::Check(std::string_view sender_pk, std::string_view nonce,
                                int64_t timestamp, int64_t now) {
  if (!WithinWindow(timestamp, now, window_s_)) {
    return Refuse(absl::StatusCode::kFailedPrecondition, Refusal::kStale,
                  absl::StrCat("timestamp ", timestamp, " is more than ", window_s_, "s from now (",
                               now, ")"));
  }
  if (timestamp < not_before_) {
    return Refuse(absl::StatusCode::kAlreadyExists, Refusal::kReplayed,
                  absl::StrCat("timestamp ", timestamp, " is from before this daemon started (",
                               not_before_, "): only an earlier run can have accepted it"));
  }
  std::string key;
  key.reserve(sender_pk.size() + nonce.size());
  key.append(sender_pk.data(), sender_pk.size());
  key.append(nonce.data(), nonce.size());

  std::lock_guard<std::mutex> lock(mu_);
  // Amortised O(1): a full scan when the map has doubled since the last one,
  // or when a whole window has passed (so an idle-ish guard also shrinks).
  if (seen_.size() >= next_purge_size_ || !purged_once_ ||
      !WithinWindow(last_purge_now_, now, window_s_)) {
    PurgeLocked(now);
  }
  if (!seen_.emplace(std::move(key), timestamp).second) {
    return Refuse(absl::StatusCode::kAlreadyExists, Refusal::kReplayed,
                  "this hello (sender, nonce) was already accepted");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------

ClientSession::ClientSession() = default;
ClientSession::~ClientSession() = default;

absl::StatusOr<std::unique_ptr<ClientSession>> ClientSession::Begin(const Identity& me,
                                                                    std::string_view server_pk,
                                                                    std::string_view request,
                                                                    int64_t now) {
  MYCEL_RETURN_IF_ERROR(InitSodium());
  if (server_pk.size() != kPkLen) {
    return absl::InvalidArgumentError(
        absl::StrCat("server public key has ", server_pk.size(), " bytes, expected ", kPkLen));
  }
  if (request.size() > kMaxRequestBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request of ", request.size(),
                                                   " bytes exceeds ", kMaxRequestBytes));
  }
  std::unique_ptr<ClientSession> s(new ClientSession());
  s->secrets_ = std::make_unique<Secrets>();
  if (s->secrets_->b == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  unsigned char eph_pk[crypto_kx_PUBLICKEYBYTES];
  crypto_kx_keypair(eph_pk, s->secrets_->b->eph_sk);
  unsigned char nonce[kNonceLen];
  randombytes_buf(nonce, sizeof(nonce));

  std::string& h = s->hello_;
  h.reserve(kHelloMin + request.size());
  h.append(kHelloMagic, kMagicLen);
  PutFixed32(&h, kSessionVersion);
  h.append(me.public_key());
  h.append(server_pk.data(), server_pk.size());
  PutFixed64(&h, static_cast<uint64_t>(now));
  h.append(reinterpret_cast<const char*>(nonce), sizeof(nonce));
  h.append(reinterpret_cast<const char*>(eph_pk), sizeof(eph_pk));
  PutFixed32(&h, static_cast<uint32_t>(request.size()));
  h.append(request.data(), request.size());
  h.append(me.Sign(h));

  s->server_pk_.assign(server_pk.data(), server_pk.size());
  s->hello_hash_ = Hash(h);
  return s;
}

absl::StatusOr<std::string> ClientSession::AcceptReply(std::string_view reply) {
  if (down_.started || secrets_ == nullptr) {
    return absl::FailedPreconditionError("AcceptReply called twice");
  }
  // Parse: fixed sizes and a bounded length, checked before anything else.
  if (reply.size() < kReplyMin || reply.size() > kReplyMax) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  absl::StrCat("reply of ", reply.size(), " bytes"));
  }
  if (std::memcmp(reply.data(), kReplyMagic, kMagicLen - 1) != 0) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed, "reply has a bad magic");
  }
  if (reply[kMagicLen - 1] != kReplyMagic[kMagicLen - 1]) {
    return Refuse(absl::StatusCode::kFailedPrecondition, Refusal::kWrongVersion,
                  absl::StrCat("reply format '", std::string(reply.substr(0, kMagicLen)), "'"));
  }
  const uint32_t header_len = DecodeFixed32(reply.data() + kRHdrLen);
  if (header_len > kMaxHeaderBytes || reply.size() != kReplyMin + header_len) {
    return Refuse(
        absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
        absl::StrCat("reply of ", reply.size(), " bytes claims a header of ", header_len));
  }
  // A reply to some other Hello (an old one replayed, or a mix-up).
  if (sodium_memcmp(reply.data() + kRHelloHash, hello_hash_.data(), kHashLen) != 0) {
    return Refuse(absl::StatusCode::kPermissionDenied, Refusal::kReplayed,
                  "reply answers a different hello");
  }
  const std::string_view signed_part = reply.substr(0, reply.size() - kSigLen);
  if (!VerifySignature(server_pk_, signed_part, reply.substr(reply.size() - kSigLen))) {
    return Refuse(absl::StatusCode::kUnauthenticated, Refusal::kBadSignature,
                  absl::StrCat("reply is not signed by server ", KeyFingerprint(server_pk_)));
  }

  SecretBlock* b = secrets_->b;
  const std::string_view client_eph_pk = std::string_view(hello_).substr(kHEph, kPkLen);
  const std::string_view server_eph_pk = reply.substr(kREph, kPkLen);
  const int kx = crypto_kx_client_session_keys(b->kx_rx, b->kx_tx, U(client_eph_pk), b->eph_sk,
                                               U(server_eph_pk));
  if (kx != 0) {
    secrets_->WipeKeys();
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  "server ephemeral key is invalid");
  }
  DeriveKey(b->kx_rx, hello_hash_, server_eph_pk, b->key);
  const int init = crypto_secretstream_xchacha20poly1305_init_pull(
      &b->state, U(reply.substr(kRStream, kStreamHeaderLen)), b->key);
  reply_hash_ = Hash(reply);
  DeriveUpKey(b->kx_tx, reply_hash_, b->up_key);
  secrets_->WipeKeys();  // ephemeral secret and session keys: only the stream state and up key remain
  if (init != 0) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  "invalid secretstream header");
  }
  down_.started = true;
  return std::string(reply.substr(kRFixed, header_len));
}

absl::StatusOr<std::string> ClientSession::Open(std::string_view sealed, bool* final) {
  std::string plain;
  MYCEL_RETURN_IF_ERROR(OpenAppend(sealed, &plain, final));
  return plain;
}

absl::Status ClientSession::OpenAppend(std::string_view sealed, std::string* out, bool* final) {
  return PullChunk(&secrets_->b->state, reply_hash_, sealed, out, final, &down_);
}

absl::Status ClientSession::Finish() const { return down_.finished ? absl::OkStatus() : Truncated(); }

absl::StatusOr<std::string> ClientSession::StartUpstream() {
  if (!down_.started || up_started_) return absl::FailedPreconditionError("StartUpstream before AcceptReply, or twice");
  SecretBlock* b = secrets_->b;
  unsigned char stream_header[kStreamHeaderLen];
  crypto_secretstream_xchacha20poly1305_init_push(&b->up_state, stream_header, b->up_key);
  sodium_memzero(b->up_key, sizeof(b->up_key));
  up_started_ = true;
  return std::string(reinterpret_cast<const char*>(stream_header), sizeof(stream_header));
}

void ClientSession::SealUpTo(std::string_view plaintext, bool final, std::string* out) {
  out->clear();
  if (!up_started_ || up_sealed_final_) return;
  PushChunk(&secrets_->b->up_state, reply_hash_, plaintext, final, out);
  up_sealed_final_ = final;
}

// ---------------------------------------------------------------------------

ServerSession::ServerSession() = default;
ServerSession::~ServerSession() = default;

namespace {

// Steps 1-5 of a Hello's verification, cheapest first (see the header):
// parse, recipient, pinned (skipped when `pinned` is null), fresh, signed.
struct CheckedHello {
  std::string_view sender, nonce, client_eph_pk;
  int64_t timestamp = 0;
  uint32_t request_len = 0;
};

absl::StatusOr<CheckedHello> CheckHello(const Identity& me, const std::vector<std::string>* pinned,
                                        int64_t window_s, std::string_view hello, int64_t now) {
  MYCEL_RETURN_IF_ERROR(InitSodium());
  // 1. Parse: fixed sizes and a bounded length, nothing allocated.
  if (hello.size() < kHelloMin || hello.size() > kHelloMax) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  absl::StrCat("hello of ", hello.size(), " bytes"));
  }
  if (std::memcmp(hello.data(), kHelloMagic, kMagicLen) != 0) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed, "hello has a bad magic");
  }
  const uint32_t version = DecodeFixed32(hello.data() + kHVersion);
  if (version != kSessionVersion) {
    return Refuse(absl::StatusCode::kFailedPrecondition, Refusal::kWrongVersion,
                  absl::StrCat("hello version ", version, ", this node speaks ", kSessionVersion));
  }
  const uint32_t request_len = DecodeFixed32(hello.data() + kHReqLen);
  if (request_len > kMaxRequestBytes || hello.size() != kHelloMin + request_len) {
    return Refuse(
        absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
        absl::StrCat("hello of ", hello.size(), " bytes claims a request of ", request_len));
  }
  const std::string_view sender = hello.substr(kHSender, kPkLen);
  const std::string_view recipient = hello.substr(kHRecipient, kPkLen);
  const int64_t timestamp = static_cast<int64_t>(DecodeFixed64(hello.data() + kHTimestamp));
  const std::string_view nonce = hello.substr(kHNonce, kNonceLen);
  const std::string_view client_eph_pk = hello.substr(kHEph, kPkLen);

  // 2. Meant for me.
  if (recipient != me.public_key()) {
    return Refuse(absl::StatusCode::kPermissionDenied, Refusal::kWrongRecipient,
                  absl::StrCat("hello is addressed to ", KeyFingerprint(recipient)));
  }
  // 3. From a pinned key.
  const bool is_pinned =
      pinned == nullptr || std::find(pinned->begin(), pinned->end(), sender) != pinned->end();
  if (!is_pinned) {
    return Refuse(absl::StatusCode::kPermissionDenied, Refusal::kUnpinnedKey,
                  absl::StrCat("sender ", KeyFingerprint(sender), " is not pinned"));
  }
  // 4. Fresh.
  if (!WithinWindow(timestamp, now, window_s)) {
    return Refuse(absl::StatusCode::kFailedPrecondition, Refusal::kStale,
                  absl::StrCat("hello timestamp ", timestamp, " is more than ", window_s,
                               "s from now (", now, ")"));
  }
  // 5. Signed by the sender.
  if (!VerifySignature(sender, hello.substr(0, hello.size() - kSigLen),
                       hello.substr(hello.size() - kSigLen))) {
    return Refuse(absl::StatusCode::kUnauthenticated, Refusal::kBadSignature,
                  absl::StrCat("hello is not signed by ", KeyFingerprint(sender)));
  }
  return CheckedHello{sender, nonce, client_eph_pk, timestamp, request_len};
}

}  // namespace

absl::StatusOr<VerifiedHello> ServerSession::IdentifyUnpinned(const Identity& me, int64_t window_s,
                                                               std::string_view hello, int64_t now) {
  MYCEL_ASSIGN_OR_RETURN(CheckedHello h, CheckHello(me, nullptr, window_s, hello, now));
  VerifiedHello v;
  v.sender_pk.assign(h.sender.data(), h.sender.size());
  v.timestamp = h.timestamp;
  v.request.assign(hello.data() + kHFixed, h.request_len);
  return v;
}

absl::StatusOr<std::unique_ptr<ServerSession>> ServerSession::Accept(
    const Identity& me, const std::vector<std::string>& pinned, ReplayGuard& replay,
    std::string_view hello, int64_t now) {
  MYCEL_ASSIGN_OR_RETURN(CheckedHello h, CheckHello(me, &pinned, replay.window_s(), hello, now));
  const std::string_view sender = h.sender, nonce = h.nonce, client_eph_pk = h.client_eph_pk;
  const int64_t timestamp = h.timestamp;
  const uint32_t request_len = h.request_len;
  // 6. Not seen before.
  MYCEL_RETURN_IF_ERROR(replay.Check(sender, nonce, timestamp, now));

  // Authenticated: only now spend an ephemeral key pair and a DH.
  std::unique_ptr<ServerSession> s(new ServerSession());
  s->secrets_ = std::make_unique<Secrets>();
  if (s->secrets_->b == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  SecretBlock* b = s->secrets_->b;
  unsigned char eph_pk[crypto_kx_PUBLICKEYBYTES];
  crypto_kx_keypair(eph_pk, b->eph_sk);
  if (crypto_kx_server_session_keys(b->kx_rx, b->kx_tx, eph_pk, b->eph_sk, U(client_eph_pk)) != 0) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  "client ephemeral key is invalid");
  }
  s->eph_pk_.assign(reinterpret_cast<const char*>(eph_pk), sizeof(eph_pk));
  s->hello_hash_ = Hash(hello);
  DeriveKey(b->kx_tx, s->hello_hash_, s->eph_pk_, b->key);
  // The ephemeral secret and the send kx key are no longer needed; the
  // receive one stays until Reply, which binds the up key to the Reply.
  sodium_memzero(b->eph_sk, sizeof(b->eph_sk));
  sodium_memzero(b->kx_tx, sizeof(b->kx_tx));

  s->verified_.sender_pk.assign(sender.data(), sender.size());
  s->verified_.timestamp = timestamp;
  s->verified_.request.assign(hello.data() + kHFixed, request_len);
  // Keep the identity for Reply's signature: Reply is a method without `me`.
  s->me_ = &me;
  return s;
}

absl::StatusOr<std::string> ServerSession::Reply(std::string_view header) {
  if (stream_started_ || secrets_ == nullptr) {
    return absl::FailedPreconditionError("Reply called twice");
  }
  if (header.size() > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply header of ", header.size(), " bytes exceeds ", kMaxHeaderBytes));
  }
  SecretBlock* b = secrets_->b;
  unsigned char stream_header[kStreamHeaderLen];
  crypto_secretstream_xchacha20poly1305_init_push(&b->state, stream_header, b->key);
  sodium_memzero(b->key, sizeof(b->key));  // the stream state holds its own subkey

  std::string r;
  r.reserve(kReplyMin + header.size());
  r.append(kReplyMagic, kMagicLen);
  r.append(hello_hash_);
  r.append(eph_pk_);
  r.append(reinterpret_cast<const char*>(stream_header), sizeof(stream_header));
  PutFixed32(&r, static_cast<uint32_t>(header.size()));
  r.append(header.data(), header.size());
  r.append(me_->Sign(r));
  reply_hash_ = Hash(r);
  DeriveUpKey(b->kx_rx, reply_hash_, b->up_key);
  sodium_memzero(b->kx_rx, sizeof(b->kx_rx));
  stream_started_ = true;
  return r;
}

std::string ServerSession::Seal(std::string_view plaintext, bool final) {
  std::string out;
  SealTo(plaintext, final, &out);
  return out;
}

void ServerSession::SealTo(std::string_view plaintext, bool final, std::string* out) {
  out->clear();
  if (!stream_started_ || sealed_final_) return;
  PushChunk(&secrets_->b->state, reply_hash_, plaintext, final, out);
  sealed_final_ = final;
}

absl::Status ServerSession::AcceptUpstream(std::string_view stream_header) {
  if (!stream_started_ || up_.started) return absl::FailedPreconditionError("AcceptUpstream before Reply, or twice");
  if (stream_header.size() != kStreamHeaderLen) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  absl::StrCat("upstream header of ", stream_header.size(), " bytes"));
  }
  SecretBlock* b = secrets_->b;
  const int init = crypto_secretstream_xchacha20poly1305_init_pull(&b->up_state, U(stream_header), b->up_key);
  sodium_memzero(b->up_key, sizeof(b->up_key));
  if (init != 0) {
    return Refuse(absl::StatusCode::kInvalidArgument, Refusal::kMalformed,
                  "invalid upstream secretstream header");
  }
  up_.started = true;
  return absl::OkStatus();
}

absl::Status ServerSession::OpenUpAppend(std::string_view sealed, std::string* out, bool* final) {
  return PullChunk(&secrets_->b->up_state, reply_hash_, sealed, out, final, &up_);
}

absl::Status ServerSession::FinishUp() const { return up_.finished ? absl::OkStatus() : Truncated(); }

}  // namespace mycel::crypto
