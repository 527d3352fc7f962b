#include "peer/gossip.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "federation/federation.h"
#include "peer/gossip_state.h"
#include "peer/peer_service.h"
#include "peer/pull_client.h"
#include "peer/round_loop.h"
#include "peer/server_limits.h"

namespace mycel::peer {
namespace {

constexpr int kMaxRequestMessage = 64 << 10; // a Pull request is a Hello of a few KB

}  // namespace

// The parts of one Gossip, wired together: they share `state`.
struct Gossip::Impl {
  Impl(const GossipOptions& o, const crypto::Identity& identity, federation::Federation& fed,
       federation::SharedWeights& weights)
      : options(o),
        state(options, fed),
        service(options, identity, fed, state),
        client(options, identity, fed, state),
        rounds(options, fed, weights, state, client) {}

  const GossipOptions options;
  GossipState state;
  PeerService service;  // serves neighbours (gRPC's threads)
  PullClient client;    // pulls from them (the loop thread)
  RoundLoop rounds;     // the loop thread's rounds
  // Declared after the service, so destroyed before it.
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<PeerListener> listener;  // accepts for server, within PeerServerLimits
  std::thread loop;
  bool started = false, stopped = false;
  double discovered_logged_at = -1;  // monotonic s; guarded by state.mu
};

Gossip::Gossip(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gossip::~Gossip() { Stop(); }

absl::StatusOr<std::unique_ptr<Gossip>> Gossip::Create(const GossipOptions& options,
                                                       const crypto::Identity& identity,
                                                       federation::Federation& federation,
                                                       federation::SharedWeights& weights) {
  GossipOptions o = options;
  if (o.layout.size() > kMaxLayoutBytes) o.layout.resize(kMaxLayoutBytes);
  auto impl = std::make_unique<Impl>(o, identity, federation, weights);
  return std::unique_ptr<Gossip>(new Gossip(std::move(impl)));
}

absl::Status Gossip::Start() {
  Impl* impl = impl_.get();
  if (impl->started) return absl::OkStatus();
  if (!impl->options.listen.empty()) {
    grpc::ServerBuilder builder;
    // Transport encryption is our own (crypto::Session): the payload is sealed
    // end to end and every exchange is authenticated by pinned keys.
    // PeerListener, not AddListeningPort: gRPC 1.51's listener has no
    // connection cap and stops for good on EMFILE (peer/server_limits.h).
    const PeerServerLimits limits;
    MYCEL_ASSIGN_OR_RETURN(impl->listener, PeerListener::Bind(impl->options.listen, limits));
    const int port = impl->listener->port();
    impl->service.SetListener(impl->listener.get());
    builder.RegisterService(&impl->service);
    builder.SetMaxReceiveMessageSize(kMaxRequestMessage);
    ApplyPeerServerLimits(limits, &builder);
    impl->server = builder.BuildAndStart();
    if (!impl->server || port == 0) {
      return absl::UnavailableError("cannot listen for peers on " + impl->options.listen);
    }
    impl->listener->Start(impl->server.get());
    std::lock_guard<std::mutex> lock(impl->state.mu);
    impl->state.totals.listen_port = port;
    Logger("peer")->info("peer service listening on {} (port {}), {} pinned neighbour(s)", impl->options.listen,
                         port, impl->options.peers.size());
  }
  impl->started = true;
  impl->loop = std::thread([impl] { impl->rounds.Run(); });
  return absl::OkStatus();
}

void Gossip::SetPeers(const std::vector<Neighbour>& peers) {
  std::shared_ptr<const Roster> next = MakeRoster(peers);  // channels are made here, not on the loop
  std::lock_guard<std::mutex> lock(impl_->state.mu);
  impl_->state.pending = std::move(next);
}

void Gossip::Stop() {
  Impl* impl = impl_.get();
  if (!impl || impl->stopped) return;
  impl->stopped = true;
  {
    std::lock_guard<std::mutex> lock(impl->state.mu);
    impl->state.stop = true;
  }
  impl->state.cv.notify_all();
  if (impl->loop.joinable()) impl->loop.join();
  if (impl->listener) impl->listener->StopAccepting();  // no new connections while the server drains
  if (impl->server) {
    impl->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    impl->server->Wait();
  }
  if (impl->listener) impl->listener->Stop();  // then the relays of the calls that drained
}

std::vector<PendingPeer> Gossip::Pending() const {
  std::lock_guard<std::mutex> lock(impl_->state.mu);
  return impl_->state.pending_peers;
}

std::string SanitisedPeerName(const std::string& raw) {
  std::string out;
  for (char c : raw.substr(0, 64)) {
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_');
  }
  return out.empty() ? "unnamed" : out;
}

void Gossip::NoteDiscovered(PendingPeer p, int64_t now) {
  GossipState& s = impl_->state;
  std::lock_guard<std::mutex> lock(s.mu);
  const Roster& pinned = *(s.pending ? s.pending : s.roster);
  if (std::find(pinned.pinned.begin(), pinned.pinned.end(), p.public_key) != pinned.pinned.end()) return;
  if (PendingPeer* known = s.FindPendingLocked(p.public_key)) {
    known->discovered = true;
    if (known->requests > 0) {
      // It called too: its Hello was signed, this record is not. Keep what
      // it said, but an address where it gave none.
      if (known->address.empty() && !known->dials_in) known->address = p.address;
      return;
    }
    known->name = p.name;
    known->address = p.address;
    known->same_model = p.same_model;
    known->last_seen_unix = now;
    return;
  }
  p.discovered = true;
  p.requests = 0;
  p.first_seen_unix = p.last_seen_unix = now;
  const double t = Clock::Real()->MonotonicSeconds();
  if (t - impl_->discovered_logged_at >= 1) {  // a LAN of announcements is one line a second
    impl_->discovered_logged_at = t;
    Logger("peer")->info("node '{}' ({}) announced at {} on the LAN: `mycel peers accept {}` pins it", p.name,
                         p.key_fingerprint, p.address, p.key_fingerprint);
  }
  s.PushPendingLocked(std::move(p));
}

void Gossip::ForgetDiscovered(const std::string& public_key) {
  GossipState& s = impl_->state;
  std::lock_guard<std::mutex> lock(s.mu);
  PendingPeer* known = s.FindPendingLocked(public_key);
  if (known == nullptr) return;
  if (known->requests == 0) {
    s.pending_peers.erase(s.pending_peers.begin() + (known - s.pending_peers.data()));
  } else {
    known->discovered = false;
  }
}

std::vector<PeerStatus> Gossip::Peers() const {
  std::vector<PeerStatus> out;
  // Under mu (then the federation's lock, the order ApplyPendingRoster takes
  // too), so a reload between the two cannot pair one neighbour's counters
  // with another's mirror.
  const GossipState& state = impl_->state;
  std::lock_guard<std::mutex> lock(state.mu);
  out = state.status;
  double now = Clock::Real()->MonotonicSeconds();
  for (size_t j = 0; j < out.size(); ++j) out[j].next_retry_s = std::max(0.0, state.next_try[j] - now);
  const std::vector<std::string> layers = state.fed.group_names();
  for (size_t j = 0; j < out.size(); ++j) {
    auto m = state.fed.mirror_stats(static_cast<int>(j));
    out[j].trust.clear();
    for (size_t g = 0; g < m.trust.size() && g < layers.size(); ++g) {
      out[j].trust.push_back({layers[g], m.trust[g], g < m.harm.size() ? m.harm[g] : 0.0});
    }
    out[j].trust_probes = m.trust_probes;
    out[j].hurt_probes = m.hurt_probes;
    out[j].quarantine = m.quarantine;
    out[j].epoch = m.epoch;
    out[j].seq_applied = m.seq;
    out[j].samples_trained = m.samples_trained;
    out[j].merges = m.merged;
    out[j].clipped = m.clipped;
    out[j].last_distance = m.last_distance;
    out[j].last_radius = m.last_radius;
    // Updates the federation refused after decryption (shape, norm, ...).
    if (m.refused > 0 && !m.last_refusal.empty() && out[j].last_error.empty()) out[j].last_error = m.last_refusal;
  }
  return out;
}

GossipTotals Gossip::Totals() const {
  std::lock_guard<std::mutex> lock(impl_->state.mu);
  GossipTotals t = impl_->state.totals;
  if (impl_->listener) {
    t.connections_shed = impl_->listener->shed();
    t.connections_screened = impl_->listener->screened();
  }
  return t;
}

}  // namespace mycel::peer
