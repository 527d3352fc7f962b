// Refusal: why an update or a request from a neighbour was refused, as one
// value from a fixed vocabulary, carried on the absl::Status from where the
// refusal happens (crypto::Session, federation's Apply and codecs, peer) to
// where it is counted (peer::Gossip), without reading it back from the text.
//
// The names are stable words: per-neighbour counters in `mycel peers`, the
// `reason` label of the refusal metric, log lines and error messages
// ("unpinned_key: sender ... is not pinned") all use them. Header-only so
// that the modules beside each other on common (crypto, federation) share it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace mycel {

enum class Refusal : uint8_t {
  kError = 0,  // no refusal of ours: any other failure, or a word we do not know
  // crypto::Session
  kMalformed,
  kWrongRecipient,
  kUnpinnedKey,
  kStale,
  kBadSignature,
  kReplayed,
  kTampered,
  kTruncated,
  kWrongVersion,
  // peer
  kFingerprintMismatch,
  kBadShape,
  kTrailingData,
  kTooSlow,
  // federation::Federation::Apply and the codecs
  kNonFinite,
  kNormBound,
  kOutOfOrder,
  kUnknownCodec,
  kBadIndex,
  kBadEpoch,
  kBadSeq,
  kBadCounts,
  kBadPeer,
};
inline constexpr int kRefusalCount = static_cast<int>(Refusal::kBadPeer) + 1;

inline constexpr std::string_view RefusalName(Refusal r) {
  switch (r) {
    case Refusal::kError: return "error";
    case Refusal::kMalformed: return "malformed";
    case Refusal::kWrongRecipient: return "wrong_recipient";
    case Refusal::kUnpinnedKey: return "unpinned_key";
    case Refusal::kStale: return "stale";
    case Refusal::kBadSignature: return "bad_signature";
    case Refusal::kReplayed: return "replayed";
    case Refusal::kTampered: return "tampered";
    case Refusal::kTruncated: return "truncated";
    case Refusal::kWrongVersion: return "wrong_version";
    case Refusal::kFingerprintMismatch: return "fingerprint_mismatch";
    case Refusal::kBadShape: return "bad_shape";
    case Refusal::kTrailingData: return "trailing_data";
    case Refusal::kTooSlow: return "too_slow";
    case Refusal::kNonFinite: return "non_finite";
    case Refusal::kNormBound: return "norm_bound";
    case Refusal::kOutOfOrder: return "out_of_order";
    case Refusal::kUnknownCodec: return "unknown_codec";
    case Refusal::kBadIndex: return "bad_index";
    case Refusal::kBadEpoch: return "bad_epoch";
    case Refusal::kBadSeq: return "bad_seq";
    case Refusal::kBadCounts: return "bad_counts";
    case Refusal::kBadPeer: return "bad_peer";
  }
  return "error";
}

// The payload key the refusal rides under (one byte: the enum's value).
inline constexpr char kRefusalPayloadUrl[] = "mycel.refusal";

// `s` with refusal `r` attached (its message unchanged). OK stays OK.
inline absl::Status WithRefusal(absl::Status s, Refusal r) {
  if (!s.ok()) s.SetPayload(kRefusalPayloadUrl, absl::Cord(std::string(1, static_cast<char>(r))));
  return s;
}

// The refusal `s` carries; kError if it carries none (or is OK).
inline Refusal RefusalOf(const absl::Status& s) {
  const auto p = s.GetPayload(kRefusalPayloadUrl);  // absl::optional<absl::Cord>
  if (!p || p->size() != 1) return Refusal::kError;
  const auto v = static_cast<unsigned char>(std::string(*p)[0]);
  return v < kRefusalCount ? static_cast<Refusal>(v) : Refusal::kError;
}

// The refusal named `word`, kError for any other word. Only for words that
// came over the wire (a neighbour's refusal of us is text in a gRPC status);
// our own refusals carry their value.
inline Refusal RefusalNamed(std::string_view word) {
  for (int i = 1; i < kRefusalCount; ++i) {
    if (RefusalName(static_cast<Refusal>(i)) == word) return static_cast<Refusal>(i);
  }
  return Refusal::kError;
}

// A refusal: `code`, message "<name>: <parts...>", and `r` attached.
template <typename... Parts>
absl::Status Refuse(absl::StatusCode code, Refusal r, const Parts&... parts) {
  const std::string_view name = RefusalName(r);
  return WithRefusal(absl::Status(code, absl::StrCat(std::string(name), ": ", parts...)), r);
}

// The same as InvalidArgument, the code most refusals have.
template <typename... Parts>
absl::Status Refuse(Refusal r, const Parts&... parts) {
  return Refuse(absl::StatusCode::kInvalidArgument, r, parts...);
}

}  // namespace mycel
