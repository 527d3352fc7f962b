// PullClient: the client side of gossip. Pulls from one neighbour
// (Pull(after = its mirror's cursor)), authenticates and opens the answer
// (crypto::ClientSession), checks its header's claims and the transfer rate,
// and applies it to the neighbour's mirror (Federation::Apply). A dial-out
// node calls Exchange instead and, when the neighbour asks in its header,
// hands its own deltas over on the same call. Internal to peer/; one thread
// (the round loop's) at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "crypto/session.h"
#include "peer.grpc.pb.h"
#include "peer/gossip.h"
#include "peer/gossip_state.h"
#include "peer/payload.h"

namespace mycel {
namespace federation { class Federation; }

namespace peer {

class PullClient {
 public:
  PullClient(const GossipOptions& options, const crypto::Identity& identity, federation::Federation& fed,
             GossipState& state);
  PullClient(const PullClient&) = delete;
  PullClient& operator=(const PullClient&) = delete;

  // Pulls from neighbour j of `r` (the roster in force) and applies the
  // answer to its mirror; what came and went is added to *pulled. Errors:
  // Unavailable when the neighbour cannot be reached; otherwise a refusal
  // (ours of its answer, or its of us) carrying its Refusal.
  absl::Status PullFrom(const Roster& r, int j, Pulled* pulled);

 private:
  struct Call;
  bool HandOver(const PullHeader& asked, crypto::ClientSession& session,
                grpc::ClientReaderWriter<ExchangeUp, PullChunk>* call, Pulled* pulled);
  absl::Status Receive(Call& call, int j, const std::function<bool(const PullHeader&)>& hand_over);
  absl::Status ReadHeader(Call& call, PullHeader* header);
  absl::Status ReadPayload(Call& call, const PullHeader& header, std::string* payload);

  const GossipOptions& options_;
  const crypto::Identity& identity_;
  federation::Federation& fed_;
  GossipState& state_;
  ReceiveBuffer rx_;  // pulled payloads land here
};

}  // namespace peer
}  // namespace mycel
