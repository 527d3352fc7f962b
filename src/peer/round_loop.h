// RoundLoop: the gossip rounds of one node, aligned to the wall clock (see
// gossip.h for the schedule): open the trainer's local steps, publish, pull
// from every neighbour that is due (PullClient; one that does not answer
// backs off, GossipState::BookPull), wait for the hand-overs of those that
// dial in, probe trust, merge. Internal to peer/; Run() on one thread.
#pragma once

#include <cstdint>

#include "peer/gossip.h"
#include "peer/gossip_state.h"
#include "peer/pull_client.h"

namespace mycel {
namespace federation { class Federation; class SharedWeights; }

namespace peer {

class RoundLoop {
 public:
  RoundLoop(const GossipOptions& options, federation::Federation& fed, federation::SharedWeights& weights,
            GossipState& state, PullClient& client);
  RoundLoop(const RoundLoop&) = delete;
  RoundLoop& operator=(const RoundLoop&) = delete;

  // Runs rounds until state.stop is set (and state.cv notified).
  void Run();

 private:
  void OpenLocalSteps();
  void Publish();
  void PullAndMerge(double round_start);
  bool PullDue();
  void WaitForHandOvers(double round_start);
  void ProbeTrust();
  bool SleepUntil(double t);

  const GossipOptions& options_;
  federation::Federation& fed_;
  federation::SharedWeights& weights_;
  GossipState& state_;
  PullClient& client_;
};

}  // namespace peer
}  // namespace mycel
