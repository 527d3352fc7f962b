// The header of a pull answer (PullHeader), served down or handed over up:
// made from what the federation answers, and its claims checked on receipt
// before anything is allocated for them. Internal to peer/.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "federation/federation.h"
#include "peer.pb.h"
#include "peer/gossip.h"
#include "peer/payload.h"

namespace mycel::peer {

// The header of `shared`, whose payload is `payload`, for a model of
// `parameters` shared floats.
PullHeader MakeHeader(const GossipOptions& options, size_t parameters, const federation::SharedPullAnswer& shared,
                      const PayloadPieces& payload);

// A header's claims: same model (fingerprint_mismatch), same size
// (bad_shape), a payload within bounds (CheckPayloadBounds).
absl::Status CheckHeader(const GossipOptions& options, size_t parameters, const PullHeader& header);

// The answer a header describes, its deltas or keyframe not yet filled in.
federation::PullAnswerView AnswerView(const PullHeader& header);

// What differs between our Model::Layout() and a neighbour's, as ": their
// fc1.weight is Float 64x784, ours Float 128x784" (or the kind, or a
// parameter only one side has); "" when they sent none (an older build) or
// none is found (a layout cut at kMaxLayoutBytes). Their text is
// authenticated but not trusted: printable ASCII only, at most 200 bytes.
// `to_them`: worded for the neighbour that sent theirs (a refusal we send
// back): "your ... is ..., mine ...".
std::string LayoutDifference(const std::string& ours, const std::string& theirs_raw, bool to_them = false);

}  // namespace mycel::peer
