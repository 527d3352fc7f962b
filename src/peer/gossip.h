// Gossip: the peering layer of one node — the Peer gRPC server that answers
// neighbours' pulls, and the round loop that pulls from every pinned
// neighbour, then publishes and merges through the trainer.
//
// Rounds are aligned to the wall clock, in the order of D-PSGD/CHOCO-SGD
// (local steps, then gossip), with T = round_interval_s:
//   k·T        the trainer's local_steps budget opens; it trains.
//   k·T + T/4  Publish(x) through the model lock: q = Q(x − x̂), logged.
//   k·T + T/2  for each neighbour that is due: Pull(after = its mirror's
//              cursor), authenticate and open the reply (crypto::ClientSession),
//              validate and apply it to the mirror (Federation::Apply); then
//              Merge(x). The model rests merged until the next round, so what
//              `mycel eval`/`predict` see is the consensus model.
// On one machine, or on laptops whose clocks NTP keeps within milliseconds,
// every merge thus sees its neighbours' weights of the same round. Measured in
// the five-node-ring simulation (worst node, 2000 rounds): 75% with this
// order; 62–64% when mirrors are a round stale (random phases) or when the
// model rests after its local step instead of after the merge.
// A neighbour that does not answer is retried with exponential backoff
// (capped at max_backoff_s) and never stalls the others: each pull has a
// deadline.
// The weights are reached only through federation::SharedWeights (the
// trainer's), the federation's state is the Federation the caller owns
// (the trainer keeps it, checkpointed with the weights).
// Serving: a pull is verified cheapest-first (crypto::ServerSession), then
// answered from the federation's log or with a keyframe, sealed in chunks.
// Dial-out (a node behind NAT, GossipOptions::dial_out): it pulls with
// Exchange instead, and a neighbour that pins it with dials_in = true (and
// never calls it) asks it, in the answer's header, for its own deltas,
// which it hands over on the same call under the session's client→server
// key; they are checked and applied as a pulled answer is. That neighbour's
// round waits (until 0.8·T) for the hand-over before it merges.
//
// Every refusal (ours of a caller, or ours of a reply) is counted per
// neighbour and per reason (a Refusal, common/refusal.h), logged once per
// (neighbour, reason), and never reaches the model. Thread-safe:
// Peers()/Totals() from any thread.
//
// Gossip is the facade over its parts, internal to peer/: PeerService
// (peer_service.h, serving), PullClient (pull_client.h, pulling),
// RoundLoop (round_loop.h, the rounds and backoff), sharing a GossipState
// (gossip_state.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mycel {
namespace crypto { class Identity; }
namespace federation { class Federation; class SharedWeights; }

namespace peer {

// A pinned neighbour: what the peer module needs to know of it. The daemon
// translates the config's [[peers]] tables into these, at start and at every
// reload; their checks and file:line errors stay with the config reader.
struct Neighbour {
  std::string name;                        // label used in logs and `mycel peers`
  std::string address;                     // "host:port"; "" when it dials in
  bool dials_in = false;                   // it cannot be called: it hands its deltas over when it calls us
  std::string public_key;                  // raw 32-byte Ed25519 public key
};

// When rounds and pulls happen. The defaults are the product's, those of
// [federation] round_interval_s, pull_timeout_s, max_backoff_s, trust_every
// and trust_examples, so that a Gossip made without a config behaves as myceld's
// (the daemon's tests check the two agree).
struct GossipSchedule {
  double round_interval_s = 10.0;          // seconds between rounds (publish, pull, merge); fractions allowed
  double pull_timeout_s = 5;               // deadline of one pull from a neighbour
  double max_backoff_s = 30;               // retry delay cap for an unreachable neighbour
  // Trust probes, made only while the federation's options say trust
  // (FederationOptions::trust, the option's one owner): every trust_every
  // rounds, before the merge, the federation's candidate merges are
  // evaluated on trust_examples held-out examples
  // (SharedWeights::ProbeLosses) and judged. Without trust, no probes: every
  // neighbour stays fully trusted.
  int64_t trust_every = 5;                 // rounds between two trust probes
  int64_t trust_examples = 256;            // held-out examples a probe evaluates on
};

inline constexpr size_t kMaxLayoutBytes = 2048;  // of GossipOptions::layout on the wire (a Hello holds 4 KiB)

struct GossipOptions {
  std::string node_name;
  std::string listen;                      // "" = do not serve
  // Neighbours cannot call us (behind NAT, or not listening): pull with
  // Exchange, and hand our deltas over on it to a neighbour that asks
  // (one that pins us with dials_in = true).
  bool dial_out = false;
  std::string fingerprint;                 // of the shared model
  std::string layout;                      // what it hashes (Model::Layout), for mismatch messages;
                                           // sent cut to kMaxLayoutBytes
  GossipSchedule schedule;
  std::vector<Neighbour> peers;            // pinned neighbours, index = mirror index
  int64_t max_answer_bytes = int64_t{1} << 31;  // refuse replies claiming more
  // A pull must have averaged at least this many bytes a second by each
  // chunk that arrives later than min_transfer_grace_s after the call began,
  // else it is refused "too_slow" (and backs off like any refusal). A
  // neighbour that drips its answer would otherwise hold every round for
  // up to pull_timeout_s: measured, 1 s per chunk cut a node's rounds from
  // ~300 to 27 in 30 s. 16 KiB/s is well below a poor Wi-Fi or a tethered
  // phone (hundreds of KiB/s), and a compressed delta of the examples'
  // model is ~50 KiB.
  double min_transfer_bytes_per_s = 16 << 10;
  double min_transfer_grace_s = 2;
  // Serving an Exchange (a dial-out neighbour's call): its Hello must come
  // within hello_timeout_s of the call's start (a streaming handler runs
  // before any message; an unauthenticated caller may not hold it), and the
  // whole call, its hand-over included, must end within max_exchange_s,
  // whatever deadline the caller set. Past either, the call is cancelled.
  double hello_timeout_s = 5;
  double max_exchange_s = 120;
  // When set and true at a round's start, the round is skipped: no local
  // steps, publish, pull or merge. Serving neighbours goes on.
  std::function<bool()> hold_rounds;
};

struct PeerStatus {
  std::string name;
  std::string address;
  std::string key_fingerprint;
  bool dials_in = false;                   // it calls us and hands its deltas over (address "")
  std::string state = "never";             // never | connected | unreachable | rejected
  std::string last_error;
  int64_t last_success_unix = 0;
  uint64_t epoch = 0;
  uint64_t seq_applied = 0;
  int64_t samples_trained = 0;
  int64_t bytes_sent = 0;                  // served to this neighbour
  int64_t bytes_received = 0;              // pulled from it
  int64_t pulls_ok = 0;                    // pulls from it; for one that dials in, its hand-overs
  int64_t pulls_failed = 0;
  int64_t handed_over = 0;                 // our hand-overs it took (we dial out)
  int64_t hand_overs_refused = 0;          // ... and refused, the last one's reason below
  std::string last_hand_over_error;
  int64_t served = 0;
  int64_t deltas_accepted = 0;
  int64_t keyframes_accepted = 0;
  int64_t refused = 0;                     // updates or requests refused, all reasons
  std::map<std::string, int64_t> refusals; // reason → count
  double next_retry_s = 0;                 // seconds until the next attempt (backoff)
  int64_t merges = 0;                      // merges its copy took part in since start
  int64_t clipped = 0;                     // of those, past the radius (robust = "reject" or "clip")
  double last_distance = 0;                // ||m_j − x|| at its last merge
  double last_radius = 0;                  // the radius of that merge (0: not screening)
  // Trust ([federation] trust): per layer, its trust in [0, 1] and the average
  // harm of its share (relative validation-loss increase); empty before the
  // first probe. `quarantine` says why trust is 0 somewhere ("" = it is not).
  struct LayerTrust {
    std::string layer;
    double trust = 1;
    double harm = 0;
  };
  std::vector<LayerTrust> trust;
  // Our clock minus its clock, from the last Hello it sent us (1 s
  // resolution, the trip included); known once it has pulled from us.
  double clock_skew_s = 0;
  bool clock_skew_known = false;
  int64_t trust_probes = 0;
  int64_t hurt_probes = 0;                 // probes where a share of it hurt
  std::string quarantine;
};

// Pairing: an authenticated caller whose key is not pinned (it proved it
// holds the key, addressed us, and its clock is within the replay window),
// or a node announced on the LAN ([node] discover, peer/discovery.h), which
// proves nothing: accepting it pins a key that the handshake then checks.
// It is answered nothing; it is only listed, for `mycel peers accept`.
struct PendingPeer {
  std::string name;                        // its [node] name, as it sent it (sanitised)
  std::string public_key;                  // raw 32 bytes
  std::string key_fingerprint;
  std::string address;                     // caller's IP and the peer port it says it listens on; "" if none
  bool dials_in = false;                   // it says it cannot be called (dial_out): pin it with dials_in
  int64_t first_seen_unix = 0;
  int64_t last_seen_unix = 0;
  int64_t requests = 0;
  bool same_model = false;                 // its model fingerprint is ours
  int64_t hello_timestamp = 0;             // of the newest Hello seen from it
  bool discovered = false;                 // announced on the LAN (DNS-SD); requests = 0 if it never called
};

// A pending peer's name as shown to the user: at most 64 characters of
// [A-Za-z0-9._-], others replaced by '_' ("" → "unnamed").
std::string SanitisedPeerName(const std::string& raw);

// At most this many pending peers are kept (the least recently seen goes;
// a node only announced on the LAN goes before any caller).
// Each calling host may have kPairingChecksPerHost unpinned Hellos checked
// (a signature each) at once and half that a second after, so a flood of
// strangers costs little and one host's flood does not starve another's
// caller; kPairingHosts hosts are remembered.
inline constexpr size_t kMaxPendingPeers = 16;
inline constexpr double kPairingChecksPerHost = 10;
inline constexpr size_t kPairingHosts = 256;

struct GossipTotals {
  int64_t rounds = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  int64_t rounds_held = 0;                 // rounds skipped by hold_rounds
  int64_t rounds_missed = 0;               // round boundaries passed while the previous round still ran
  int64_t refused_unknown = 0;             // requests from keys that are not pinned, or unparseable
  int64_t connections_shed = 0;            // peer-port connections closed at once: the cap was reached
  int64_t connections_screened = 0;        // closed for what they sent, or for sending nothing (PeerListener)
  int64_t trust_probes = 0;                // trust probes made
  double trust_probe_seconds = 0;          // wall time they took, evaluation included
  int listen_port = 0;
};

class Gossip {
 public:
  // `federation` and `weights` outlive the Gossip.
  static absl::StatusOr<std::unique_ptr<Gossip>> Create(const GossipOptions& options,
                                                        const crypto::Identity& identity,
                                                        federation::Federation& federation,
                                                        federation::SharedWeights& weights);
  ~Gossip();
  Gossip(const Gossip&) = delete;
  Gossip& operator=(const Gossip&) = delete;

  // Starts the peer server (if listen is set) and the round loop. With no
  // neighbour pinned, rounds are skipped (nothing to publish to or pull
  // from) while the server lists callers as pending peers.
  absl::Status Start();
  // Replaces the pinned neighbours (SIGHUP): callers are authenticated
  // against the new list at once; pulls and merges follow it from the next
  // round on. A neighbour kept (same key) keeps its counters and its mirror,
  // under its new index; a new one starts from a keyframe. Thread-safe.
  void SetPeers(const std::vector<Neighbour>& peers);
  // Stops the round loop (after the current round), then the server. Idempotent.
  void Stop();

  std::vector<PeerStatus> Peers() const;
  GossipTotals Totals() const;
  // Callers waiting to be pinned, the most recently seen first.
  std::vector<PendingPeer> Pending() const;
  // LAN discovery: lists a node announced on the LAN as pending, unless its
  // key is pinned. What a caller said of itself (its address) comes first.
  // Thread-safe.
  void NoteDiscovered(PendingPeer p, int64_t now);
  // Its announcement is gone: a node that never called leaves the list.
  void ForgetDiscovered(const std::string& public_key);

  struct Impl;

 private:
  explicit Gossip(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peer
}  // namespace mycel
