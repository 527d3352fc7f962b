// What the peer module is told of the config: the one translation of
// [[peers]] and of [federation]'s gossip schedule into peer's own types
// (peer/gossip.h), used when the gossip is made and at every reload
// (SIGHUP). The config reader has checked the values (file:line errors);
// this only copies what peer needs.
#pragma once

#include <vector>

#include "config/config.h"
#include "peer/gossip.h"

namespace mycel {

// The pinned neighbours, in order (index = mirror index).
std::vector<peer::Neighbour> NeighboursOf(const std::vector<config::PeerOptions>& peers);

// round_interval_s, pull_timeout_s, max_backoff_s, trust_every and
// trust_examples. Whether trust probes run at all is [federation] trust,
// which the federation's own options carry (the trainer's federation).
peer::GossipSchedule GossipScheduleOf(const config::FederationSection& federation);

}  // namespace mycel
