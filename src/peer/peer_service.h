// PeerService: the server side of gossip, the Peer gRPC service. A Pull (or
// a dial-out neighbour's Exchange) is verified cheapest-first
// (crypto::ServerSession), then answered from the federation's log or with a
// keyframe, sealed in chunks. An unpinned but genuine caller is listed as a
// pending peer (pairing). On an Exchange from a neighbour pinned with
// dials_in = true, the answer's header asks for its own deltas, which it
// hands over on the same call; they are checked and applied to our mirror
// of it as a pulled answer is. Every refusal of a caller is counted in the
// shared GossipState. Internal to peer/; thread-safe (gRPC's threads).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
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

class CallWatch;
class PeerListener;

class PeerService : public Peer::Service {
 public:
  PeerService(const GossipOptions& options, const crypto::Identity& identity, federation::Federation& fed,
              GossipState& state);
  ~PeerService() override;
  PeerService(const PeerService&) = delete;
  PeerService& operator=(const PeerService&) = delete;

  // The listener that accepts this service's calls: it knows who called
  // (pairing). Set before the server starts; outlives the calls.
  void SetListener(const PeerListener* listener) { listener_ = listener; }

  grpc::Status Pull(grpc::ServerContext* ctx, const PullRequest* req, grpc::ServerWriter<PullChunk>* writer) override;
  grpc::Status Exchange(grpc::ServerContext* ctx, grpc::ServerReaderWriter<PullChunk, ExchangeUp>* stream) override;

 private:
  using WriteFn = std::function<bool(const PullChunk&)>;
  using ReadUpFn = std::function<bool(ExchangeUp*)>;

  grpc::Status Serve(grpc::ServerContext* ctx, const std::string& hello, const WriteFn& write,
                     const ReadUpFn& read_up);
  grpc::Status Admit(grpc::ServerContext* ctx, const std::string& hello, int64_t now,
                     std::unique_ptr<crypto::ServerSession>* session, PullParams* params);
  bool AskHandOver(const std::string& sender, PullHeader* header);
  grpc::Status SendAnswer(crypto::ServerSession& session, const PullHeader& header, const PayloadPieces& payload,
                          const WriteFn& write, int64_t* sent);
  void BookServed(const std::string& sender, int64_t sent, int64_t hello_timestamp, int64_t now);
  grpc::Status TakeHandOver(grpc::ServerContext* ctx, crypto::ServerSession& session, const ReadUpFn& read_up,
                            const std::string& sender);
  absl::Status ReceiveHandOver(grpc::ServerContext* ctx, crypto::ServerSession& session, const ReadUpFn& read,
                               const std::string& sender, Pulled* got);
  void NotePending(const std::string& grpc_peer, const std::string& hello, int64_t now);

  const GossipOptions& options_;
  const crypto::Identity& identity_;
  federation::Federation& fed_;
  GossipState& state_;
  crypto::ReplayGuard replay_;
  const PeerListener* listener_ = nullptr;

  // Unpinned Hellos each calling host may still have checked (a token
  // bucket per host, so a flood from one cannot starve the others); at most
  // kPairingHosts hosts, the least recently heard forgotten. Guarded by state_.mu.
  struct PairingBucket {
    double tokens = kPairingChecksPerHost;
    double refilled_at = 0;  // monotonic s
  };
  std::map<std::string, PairingBucket> pairing_buckets_;
  double pairing_logged_at_ = -1e9;        // guarded by state_.mu: one "asks to pair" line a second at most

  std::set<std::string> handing_over_;     // guarded by state_.mu: keys whose hand-over is under way
  std::atomic<int> awaiting_hello_{0};     // Exchange calls whose Hello has not come
  std::unique_ptr<CallWatch> watchdog_;    // cancels Exchange calls that overstay
};

}  // namespace peer
}  // namespace mycel
