// GossipState: what the peer service (peer_service.h), the pull client
// (pull_client.h) and the round loop (round_loop.h) of one Gossip share —
// the pinned neighbours, each one's status and backoff, the totals and the
// pending peers — under one mutex, with the bookkeeping of a pull's outcome
// and of a refusal. Internal to peer/.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/refusal.h"
#include "peer.grpc.pb.h"
#include "peer/gossip.h"

namespace mycel {
namespace federation { class Federation; }

namespace peer {

// The pinned neighbours, as one immutable value: the server reads the one in
// force without holding a lock across a pull, and SetPeers swaps in another.
struct Roster {
  std::vector<Neighbour> peers;                    // index = mirror index
  std::vector<std::string> pinned;                 // raw keys, same index
  std::vector<std::shared_ptr<Peer::Stub>> stubs;  // same index; null for one that dials in
};

// Makes the channels too, so call it off the round loop.
std::shared_ptr<const Roster> MakeRoster(const std::vector<Neighbour>& peers);

// Wall-clock seconds since the epoch.
double WallSeconds();

// What one pull brought in (or one hand-over, ours or a neighbour's).
// Booked together with its outcome under one lock (BookPull), so a status
// snapshot never shows half a pull.
struct Pulled {
  int64_t bytes = 0;   // received
  int64_t sent = 0;    // our hand-over, if any
  bool keyframe = false;
  int64_t deltas = 0;
};

struct GossipState {
  // Puts `options.peers` in force and names them to the federation, in order.
  GossipState(const GossipOptions& options, federation::Federation& fed);
  GossipState(const GossipState&) = delete;
  GossipState& operator=(const GossipState&) = delete;

  const GossipOptions& options;
  federation::Federation& fed;

  mutable std::mutex mu;
  std::condition_variable cv;                            // stop, and hand-overs a round waits for
  bool stop = false;                                     // guarded by mu
  // Written by the loop thread only (between rounds), under mu; it may read
  // it without. Indices into status, next_try, failures and the
  // federation's mirrors all follow it.
  std::shared_ptr<const Roster> roster;
  std::shared_ptr<const Roster> pending;                 // SetPeers' list, not yet in force; guarded by mu
  std::vector<PeerStatus> status;                        // guarded by mu
  std::vector<double> next_try;                          // guarded by mu (monotonic s)
  std::vector<int> failures;                             // guarded by mu
  std::vector<double> last_exchange;                     // guarded by mu: wall s of its last good pull or hand-over
  std::set<std::pair<std::string, std::string>> logged;  // (who, reason) already logged; guarded by mu
  GossipTotals totals;                                   // guarded by mu
  std::vector<PendingPeer> pending_peers;                // guarded by mu; most recently seen first

  // The keys a caller is authenticated against: SetPeers' list as soon as it
  // is given (a dropped neighbour is refused at once), else the one in force.
  std::shared_ptr<const Roster> PinnedRoster() const;
  // The index of the neighbour with this key in the roster in force, or -1. Caller holds mu.
  int PeerIndexLocked(std::string_view key) const;
  // Puts SetPeers' list in force: loop thread, between rounds, so the
  // federation's mirror indices change together with ours. A neighbour kept
  // (same key) keeps its counters and its mirror.
  void ApplyPendingRoster();
  // Counts a refusal of neighbour `peer` (-1: a caller that is not one) and
  // logs it the first time per (who, reason). Caller holds mu.
  void CountRefusal(int peer, Refusal reason, const std::string& detail);
  // Books one pull's outcome for neighbour j (ours of it, or its hand-over
  // to us): counters, state, backoff; a refusal is counted by the Refusal
  // `s` carries. Caller holds mu.
  void BookPull(int j, const Pulled& pulled, const absl::Status& s);
  // The neighbour refused what we handed over (it counts why on its side).
  void NoteHandOverRefused(int j, const std::string& why);
  // The pending peer with this key, or nullptr. Caller holds mu.
  PendingPeer* FindPendingLocked(std::string_view key);
  // Puts `p` first in pending_peers (most recently seen). Past
  // kMaxPendingPeers the least recently seen entry that never called goes
  // (an announcement costs nothing to make, so it never pushes out a
  // caller), else the least recently seen. Caller holds mu.
  void PushPendingLocked(PendingPeer p);
};

}  // namespace peer
}  // namespace mycel
