#include "peer/payload.h"

#include <algorithm>
#include <cstring>

#include "common/coding.h"
#include "common/refusal.h"
#include "crypto/session.h"

namespace mycel::peer {
namespace {

constexpr uint32_t kMaxDeltasPerAnswer = 100000;
// A delta is never larger than dense fp32 plus its codec header and our
// length prefix.
constexpr uint64_t kDeltaOverhead = 64;

}  // namespace

PayloadPieces::PayloadPieces(const federation::SharedPullAnswer& shared) {
  const federation::PullAnswer& a = shared.answer;
  auto add = [this](std::string_view piece) {
    if (piece.empty()) return;
    starts_.push_back(size_);
    pieces_.push_back(piece);
    size_ += piece.size();
  };
  if (a.keyframe) {
    add(std::string_view(reinterpret_cast<const char*>(a.public_copy.data()),
                         a.public_copy.size() * sizeof(float)));
    return;
  }
  // Sized up front: the pieces point into it.
  prefixes_.resize(8 * shared.deltas.size());
  for (size_t i = 0; i < shared.deltas.size(); ++i) {
    const std::string& q = *shared.deltas[i];
    char* p = prefixes_.data() + 8 * i;
    EncodeFixed64(p, q.size());
    add(std::string_view(p, 8));
    add(q);
  }
}

std::string_view PayloadPieces::Slice(size_t off, size_t n, std::string* scratch) const {
  if (n == 0) return std::string_view();
  // The piece holding `off`: the last one starting at or before it.
  size_t i = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), off) - starts_.begin()) - 1;
  size_t in = off - starts_[i];
  if (in + n <= pieces_[i].size()) return pieces_[i].substr(in, n);
  scratch->clear();
  while (scratch->size() < n) {
    size_t take = std::min(n - scratch->size(), pieces_[i].size() - in);
    scratch->append(pieces_[i].data() + in, take);
    ++i;
    in = 0;
  }
  return *scratch;
}

std::string PayloadPieces::ToString() const {
  std::string out;
  out.reserve(size_);
  for (std::string_view p : pieces_) out.append(p.data(), p.size());
  return out;
}

SealFn SealDown(crypto::ServerSession& session) {
  return [&session](std::string_view p, bool final, std::string* out) { session.SealTo(p, final, out); };
}
SealFn SealUp(crypto::ClientSession& session) {
  return [&session](std::string_view p, bool final, std::string* out) { session.SealUpTo(p, final, out); };
}
OpenFn OpenDown(crypto::ClientSession& session) {
  return [&session](std::string_view s, std::string* out, bool* final) { return session.OpenAppend(s, out, final); };
}
OpenFn OpenUp(crypto::ServerSession& session) {
  return [&session](std::string_view s, std::string* out, bool* final) { return session.OpenUpAppend(s, out, final); };
}

bool SealPayload(const PayloadPieces& payload, const SealFn& seal, std::string* sealed,
                 const std::function<bool()>& emit, size_t chunk_bytes) {
  std::string gather;  // only for chunks that straddle pieces
  size_t off = 0;
  do {
    const size_t n = std::min(chunk_bytes, payload.size() - off);
    const bool last = off + n >= payload.size();
    seal(payload.Slice(off, n, &gather), last, sealed);
    if (!emit()) return false;
    off += n;
  } while (off < payload.size());
  return true;
}

absl::Status CheckPayloadBounds(bool keyframe, uint64_t count, uint64_t payload_bytes,
                                size_t parameters, uint64_t max_answer_bytes) {
  const uint64_t dense = parameters * sizeof(float);
  // Deltas: each no larger than dense plus its header, and all together no
  // more than a keyframe plus its slack and our length prefixes (an honest
  // neighbour sends the keyframe instead, Federation::AnswerShared).
  const uint64_t limit =
      keyframe ? dense
               : std::min<uint64_t>(count * (dense + kDeltaOverhead),
                                    dense + federation::kDeltasOverKeyframeBytes + count * sizeof(uint64_t));
  if (count > kMaxDeltasPerAnswer || payload_bytes > limit || payload_bytes > max_answer_bytes ||
      (keyframe && payload_bytes != dense)) {
    return Refuse(Refusal::kBadShape, "payload of " + std::to_string(payload_bytes) + " bytes for " +
                                      std::to_string(count) + " deltas");
  }
  return absl::OkStatus();
}

absl::Status OpenChunk(const OpenFn& open, std::string_view sealed, uint64_t payload_bytes,
                       std::string* payload, bool* final) {
  const uint64_t plain = sealed.size() >= crypto::kSealOverheadBytes
                             ? sealed.size() - crypto::kSealOverheadBytes
                             : 0;
  if (payload->size() + plain > payload_bytes) {
    // Too long for the header: authenticate it on the side (one chunk at
    // most) so the reason is the same as before the payload was assembled in
    // place — "tampered" for a forged chunk, else "bad_shape".
    std::string aside;
    if (absl::Status opened = open(sealed, &aside, final); !opened.ok()) return opened;
    return Refuse(Refusal::kBadShape, "payload longer than its header says");
  }
  return open(sealed, payload, final);
}

ReceiveBuffer::Use::Use(ReceiveBuffer& b, uint64_t payload_bytes) : b_(b) {
  b_.buf_.clear();
  // Room for the usual answer up front; beyond that the buffer grows with
  // what actually arrives, never with what a header merely claims.
  b_.buf_.reserve(static_cast<size_t>(std::min<uint64_t>(payload_bytes, b_.keep_bytes_)));
}

ReceiveBuffer::Use::~Use() {
  b_.buf_.clear();
  if (b_.buf_.capacity() > b_.keep_bytes_) std::string().swap(b_.buf_);
}

size_t ReceiveBufferKeepBytes(size_t parameters) {
  return parameters * sizeof(float) + kDeltaOverhead;
}

absl::Status DecodePayload(std::string_view payload, bool keyframe, uint32_t count,
                           federation::PullAnswerView* out) {
  out->deltas.clear();
  out->public_copy_bytes = std::string_view();
  if (keyframe) {
    out->public_copy_bytes = payload;
    return absl::OkStatus();
  }
  out->deltas.reserve(count);
  std::string_view in = payload;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t len;
    if (!GetFixed64(&in, &len) || len > in.size()) {
      return Refuse(Refusal::kMalformed, "delta " + std::to_string(i) + " overruns the payload");
    }
    out->deltas.push_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  if (!in.empty()) return Refuse(Refusal::kMalformed, "bytes after the last delta");
  return absl::OkStatus();
}

}  // namespace mycel::peer
