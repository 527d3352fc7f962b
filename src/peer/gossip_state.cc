#include "peer/gossip_state.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/logging.h"
#include "crypto/identity.h"
#include "federation/federation.h"

namespace mycel::peer {
namespace {

// Where a neighbour is, for log lines.
std::string Where(const PeerStatus& ps) { return ps.dials_in ? "dials in" : ps.address; }

PeerStatus NewPeerStatus(const Neighbour& p) {
  PeerStatus ps;
  ps.name = p.name;
  ps.address = p.address;
  ps.dials_in = p.dials_in;
  ps.key_fingerprint = crypto::KeyFingerprint(p.public_key);
  return ps;
}

}  // namespace

std::shared_ptr<const Roster> MakeRoster(const std::vector<Neighbour>& peers) {
  auto r = std::make_shared<Roster>();
  r->peers = peers;
  for (const auto& p : peers) {
    r->pinned.push_back(p.public_key);
    if (p.dials_in) {  // never called
      r->stubs.push_back(nullptr);
      continue;
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(8 << 20);
    // Reconnect attempts follow our own backoff; keep gRPC's short so a
    // neighbour that comes back is seen at the next due round.
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    r->stubs.push_back(Peer::NewStub(grpc::CreateCustomChannel(p.address, grpc::InsecureChannelCredentials(), args)));
  }
  return r;
}

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

GossipState::GossipState(const GossipOptions& o, federation::Federation& f) : options(o), fed(f) {
  roster = MakeRoster(options.peers);
  fed.SetPeers(roster->pinned);  // index = mirror index: names them in order
  for (const auto& p : options.peers) {
    status.push_back(NewPeerStatus(p));
    next_try.push_back(0);
    failures.push_back(0);
    last_exchange.push_back(0);
  }
}

std::shared_ptr<const Roster> GossipState::PinnedRoster() const {
  std::lock_guard<std::mutex> lock(mu);
  return pending ? pending : roster;
}

int GossipState::PeerIndexLocked(std::string_view key) const {
  for (size_t i = 0; i < roster->pinned.size(); ++i) {
    if (roster->pinned[i] == key) return static_cast<int>(i);
  }
  return -1;
}

void GossipState::ApplyPendingRoster() {
  std::lock_guard<std::mutex> lock(mu);
  if (!pending) return;
  std::shared_ptr<const Roster> next = std::move(pending);
  pending.reset();
  std::vector<PeerStatus> next_status;
  std::vector<double> next_try_;
  std::vector<int> next_failures;
  std::vector<double> next_exchange;
  for (const auto& p : next->peers) {
    int old = PeerIndexLocked(p.public_key);
    PeerStatus ps = old >= 0 ? status[old] : NewPeerStatus(p);
    const bool moved = old >= 0 && ps.address != p.address;
    ps.name = p.name;
    ps.address = p.address;
    ps.dials_in = p.dials_in;
    if (moved) ps.state = "never";
    next_status.push_back(std::move(ps));
    next_try_.push_back(old >= 0 && !moved ? next_try[old] : 0);
    next_failures.push_back(old >= 0 && !moved ? failures[old] : 0);
    next_exchange.push_back(old >= 0 && !moved ? last_exchange[old] : 0);
  }
  const int kept = fed.SetPeers(next->pinned);
  Logger("peer")->info("peer list reloaded: {} neighbour(s), {} kept with their mirror, {} new, {} dropped",
                       next->peers.size(), kept, next->peers.size() - kept, roster->peers.size() - kept);
  roster = std::move(next);
  // A caller pinned now is no longer pending.
  pending_peers.erase(std::remove_if(pending_peers.begin(), pending_peers.end(),
                                     [&](const PendingPeer& q) { return PeerIndexLocked(q.public_key) >= 0; }),
                      pending_peers.end());
  status = std::move(next_status);
  next_try = std::move(next_try_);
  failures = std::move(next_failures);
  last_exchange = std::move(next_exchange);
}

void GossipState::CountRefusal(int peer, Refusal reason, const std::string& detail) {
  const std::string name(RefusalName(reason));
  std::string who = peer >= 0 ? status[peer].name : "unknown caller";
  if (peer >= 0) {
    status[peer].refused++;
    status[peer].refusals[name]++;
  } else {
    totals.refused_unknown++;
  }
  if (logged.insert({who, name}).second) {
    Logger("peer")->warn("refused {} from {}: {} (further ones counted in `mycel peers`)", name, who, detail);
  }
}

void GossipState::BookPull(int j, const Pulled& pulled, const absl::Status& s) {
  PeerStatus& ps = status[j];
  ps.bytes_received += pulled.bytes;
  ps.bytes_sent += pulled.sent;
  if (s.ok()) {
    if (pulled.keyframe) ps.keyframes_accepted++;
    ps.deltas_accepted += pulled.deltas;
    if (ps.state != "connected") Logger("peer")->info("{} ({}) connected", ps.name, Where(ps));
    ps.state = "connected";
    ps.last_error.clear();
    ps.last_success_unix = Clock::Real()->UnixSeconds();
    last_exchange[j] = WallSeconds();
    ps.pulls_ok++;
    failures[j] = 0;
    next_try[j] = 0;
    cv.notify_all();  // a round may be waiting for this hand-over
    return;
  }
  ps.pulls_failed++;
  failures[j]++;
  ps.last_error = std::string(s.message());
  if (absl::IsUnavailable(s)) {
    if (ps.state != "unreachable") Logger("peer")->info("{} ({}) unreachable: {}", ps.name, Where(ps), s.message());
    ps.state = "unreachable";
  } else {
    ps.state = "rejected";
    CountRefusal(j, RefusalOf(s), std::string(s.message()));
  }
  // Exponential backoff from one round interval up to max_backoff_s.
  double backoff = std::min(options.schedule.max_backoff_s,
                            options.schedule.round_interval_s * std::pow(2.0, std::min(failures[j], 20)));
  next_try[j] = Clock::Real()->MonotonicSeconds() + backoff;
}

void GossipState::NoteHandOverRefused(int j, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu);
  PeerStatus& ps = status[j];
  ps.hand_overs_refused++;
  ps.last_hand_over_error = why.substr(0, 300);
  if (logged.insert({ps.name, "hand_over"}).second) {
    Logger("peer")->warn("{} refused our deltas: {} (further ones counted in `mycel peers`)", ps.name, why);
  }
}

PendingPeer* GossipState::FindPendingLocked(std::string_view key) {
  auto it = std::find_if(pending_peers.begin(), pending_peers.end(),
                         [&](const PendingPeer& q) { return q.public_key == key; });
  return it == pending_peers.end() ? nullptr : &*it;
}

void GossipState::PushPendingLocked(PendingPeer p) {
  pending_peers.insert(pending_peers.begin(), std::move(p));
  if (pending_peers.size() <= kMaxPendingPeers) return;
  auto announced = std::find_if(pending_peers.rbegin(), pending_peers.rend(),
                                [](const PendingPeer& q) { return q.requests == 0; });
  if (announced != pending_peers.rend()) {
    pending_peers.erase(std::next(announced).base());
  } else {
    pending_peers.pop_back();
  }
}

}  // namespace mycel::peer
