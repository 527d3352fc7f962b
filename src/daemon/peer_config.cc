#include "daemon/peer_config.h"

#include <utility>

namespace mycel {

std::vector<peer::Neighbour> NeighboursOf(const std::vector<config::PeerOptions>& peers) {
  std::vector<peer::Neighbour> out;
  out.reserve(peers.size());
  for (const config::PeerOptions& p : peers) {
    peer::Neighbour n;
    n.name = p.name;
    n.address = p.address;
    n.dials_in = p.dials_in;
    n.public_key = p.public_key;
    out.push_back(std::move(n));
  }
  return out;
}

peer::GossipSchedule GossipScheduleOf(const config::FederationSection& federation) {
  peer::GossipSchedule s;
  s.round_interval_s = federation.round_interval_s;
  s.pull_timeout_s = federation.pull_timeout_s;
  s.max_backoff_s = federation.max_backoff_s;
  s.trust_every = federation.trust_every;
  s.trust_examples = federation.trust_examples;
  return s;
}

}  // namespace mycel
