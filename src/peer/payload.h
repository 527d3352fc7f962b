// Payload of one Pull answer: the bytes sealed after the Reply, in chunks.
// Shared by the gossip service and client (peer_service.cc, pull_client.cc)
// and tests/bench/exchange_bench.cc, so the benchmark runs exactly the
// daemon's code.
//
//   keyframe: size() floats, raw (the bytes as a std::vector<float> holds them)
//   deltas:   count × (u64 little-endian length, encoded delta)
//
// Neither side builds the payload as a copy: the sender seals slices of the
// federation's log entries (or its keyframe) directly, the receiver opens each
// chunk straight into one buffer reserved once, and the deltas are applied
// from views into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "federation/federation.h"

namespace mycel {
namespace crypto {
class ClientSession;
class ServerSession;
}  // namespace crypto

namespace peer {

inline constexpr size_t kChunkBytes = 1 << 20;  // sealed payload piece, well under gRPC's 4 MB limit

// The sender's view of a payload: pieces pointing into `answer` (which must
// outlive this object) plus the length prefixes.
class PayloadPieces {
 public:
  explicit PayloadPieces(const federation::SharedPullAnswer& answer);
  PayloadPieces(const PayloadPieces&) = delete;
  PayloadPieces& operator=(const PayloadPieces&) = delete;

  size_t size() const { return size_; }
  // Bytes [off, off + n) (off + n ≤ size()): a view straight into the answer
  // when they lie within one piece, else gathered into *scratch.
  std::string_view Slice(size_t off, size_t n, std::string* scratch) const;
  // The whole payload, contiguous (tests).
  std::string ToString() const;

 private:
  std::vector<char> prefixes_;            // 8 bytes per delta
  std::vector<std::string_view> pieces_;  // in order
  std::vector<size_t> starts_;            // offset of each piece
  size_t size_ = 0;
};

// One direction's sealing (ServerSession::SealTo down, ClientSession::SealUpTo
// up) and opening (ClientSession::OpenAppend, ServerSession::OpenUpAppend).
using SealFn = std::function<void(std::string_view plaintext, bool final, std::string* out)>;
using OpenFn = std::function<absl::Status(std::string_view sealed, std::string* out, bool* final)>;
SealFn SealDown(crypto::ServerSession& session);
SealFn SealUp(crypto::ClientSession& session);
OpenFn OpenDown(crypto::ClientSession& session);
OpenFn OpenUp(crypto::ServerSession& session);

// A hand-over travels in smaller chunks: each is one gRPC message to the
// peer port, whose screen and server take at most 64 KiB a message.
inline constexpr size_t kUpChunkBytes = 48 << 10;

// Seals `payload` in chunks of `chunk_bytes` (always at least one, the last
// one FINAL) into *sealed, calling emit() after each chunk; *sealed is
// reused, so point it at the outgoing message's field. Returns false as soon
// as emit() does (the receiver went away).
bool SealPayload(const PayloadPieces& payload, const SealFn& seal, std::string* sealed,
                 const std::function<bool()>& emit, size_t chunk_bytes = kChunkBytes);

// Checks a Reply header's claims before anything is allocated for them: a
// keyframe is exactly `parameters` floats; a delta is never larger than dense
// fp32 plus its codec header and our length prefix, and the deltas of one
// answer never outweigh a keyframe (plus kDeltasOverKeyframeBytes and the
// prefixes): whatever a neighbour claims, one pull costs at most about one
// model's worth of bytes. "bad_shape" otherwise.
absl::Status CheckPayloadBounds(bool keyframe, uint64_t count, uint64_t payload_bytes,
                                size_t parameters, uint64_t max_answer_bytes);

// Opens one sealed chunk onto the end of *payload (a ReceiveBuffer's).
// Errors: the session's ("tampered", ...); "bad_shape" if the payload
// would grow past `payload_bytes` (the chunk is still authenticated first, so
// a forged chunk reads as tampered).
absl::Status OpenChunk(const OpenFn& open, std::string_view sealed, uint64_t payload_bytes,
                       std::string* payload, bool* final);

// The client's payload buffer, kept between pulls. A payload opened into
// fresh memory takes a page fault per 4 KiB page (a 10M-parameter model:
// ~10k faults, ~20 ms a pull); reused memory takes none. The cost is memory:
// up to `keep_bytes` (one dense delta of the model: the usual answer) stays
// allocated between pulls; a buffer that had to grow past it for a rarer,
// bigger answer is released when that pull is done. Single-threaded.
class ReceiveBuffer {
 public:
  explicit ReceiveBuffer(size_t keep_bytes) : keep_bytes_(keep_bytes) {}
  ReceiveBuffer(const ReceiveBuffer&) = delete;
  ReceiveBuffer& operator=(const ReceiveBuffer&) = delete;

  // One pull's use of the buffer: empty, with room for `payload_bytes` up to
  // keep_bytes (bound them first: CheckPayloadBounds); a larger payload grows
  // the buffer as its chunks arrive, so a header's claim allocates nothing.
  class Use {
   public:
    Use(ReceiveBuffer& b, uint64_t payload_bytes);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    std::string& payload() { return b_.buf_; }

   private:
    ReceiveBuffer& b_;
  };

 private:
  std::string buf_;
  size_t keep_bytes_;
};

// The keep_bytes for a model of `parameters` floats: one dense delta with its
// codec header and length prefix.
size_t ReceiveBufferKeepBytes(size_t parameters);

// Splits a received payload (its size already checked against the header)
// into out->deltas / out->public_copy_bytes, as views into `payload`.
// "malformed" if the deltas do not tile it exactly.
absl::Status DecodePayload(std::string_view payload, bool keyframe, uint32_t count,
                           federation::PullAnswerView* out);

}  // namespace peer
}  // namespace mycel
