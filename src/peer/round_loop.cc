#include "peer/round_loop.h"

#include <chrono>
#include <cmath>
#include <mutex>
#include <vector>

#include "common/clock.h"
#include "common/logging.h"
#include "federation/federation.h"
#include "federation/shared_weights.h"

namespace mycel::peer {

RoundLoop::RoundLoop(const GossipOptions& options, federation::Federation& fed, federation::SharedWeights& weights,
                     GossipState& state, PullClient& client)
    : options_(options), fed_(fed), weights_(weights), state_(state), client_(client) {}

void RoundLoop::Run() {
  const double period = options_.schedule.round_interval_s;
  int64_t last = -1;  // index of the last round begun (round k starts at k·period)
  for (;;) {
    // The next round: the one under way if its publish point is still
    // ahead (a round that ran a little long then costs nothing; joining
    // late only shortens the local steps), else the next boundary. A slow
    // round skips ahead rather than bursting, and says so in rounds_missed:
    // every missed round leaves the neighbours a stale mirror of us.
    const double now = WallSeconds();
    const auto current = static_cast<int64_t>(std::floor(now / period));
    const bool before_publish = now < (static_cast<double>(current) + 0.25) * period;
    const int64_t k = (current > last && before_publish) ? current : current + 1;
    if (last >= 0 && k > last + 1) {
      std::lock_guard<std::mutex> lock(state_.mu);
      state_.totals.rounds_missed += k - last - 1;
    }
    last = k;
    const double start = static_cast<double>(k) * period;
    if (!SleepUntil(start)) return;
    state_.ApplyPendingRoster();
    if (state_.roster->peers.empty()) continue;  // no neighbour: nothing to publish to or pull from
    if (options_.hold_rounds && options_.hold_rounds()) {
      std::lock_guard<std::mutex> lock(state_.mu);
      state_.totals.rounds_held++;
      continue;
    }
    OpenLocalSteps();
    if (!SleepUntil(start + period / 4)) return;
    Publish();
    if (!SleepUntil(start + period / 2)) return;
    PullAndMerge(start);
  }
}

void RoundLoop::OpenLocalSteps() {
  // The drift correction rides along: the trainer spreads it over the
  // round's local steps (SharedWeights::WithSharedParameters).
  absl::Status s = weights_.WithSharedParameters(nullptr, /*opens_round=*/true, fed_.correction());
  if (!s.ok()) Logger("peer")->error("opening local steps failed: {}", s.message());
}

void RoundLoop::Publish() {
  absl::Status s = weights_.WithSharedParameters(
      [this](std::vector<float>& x, int64_t samples, double) {
        fed_.Publish(x.data(), samples);
        return false;  // publishing reads x, never changes it
      },
      /*opens_round=*/false, {});
  if (!s.ok()) Logger("peer")->error("publish failed: {}", s.message());
}

// The pulls of a round, then (unless stopping) the merge.
void RoundLoop::PullAndMerge(double round_start) {
  if (!PullDue()) return;
  WaitForHandOvers(round_start);
  if (fed_.options().trust) {
    int64_t round;
    {
      std::lock_guard<std::mutex> lock(state_.mu);
      round = state_.totals.rounds;
    }
    if (round % options_.schedule.trust_every == 0) ProbeTrust();
  }
  absl::Status merged = weights_.WithSharedParameters(
      [this](std::vector<float>& x, int64_t, double round_lr) {
        // The correction learns per unit of the learning rate this round's
        // steps summed to; the next round's steps multiply it back by theirs.
        fed_.Merge(x.data(), round_lr);
        return true;
      },
      /*opens_round=*/false, {});
  std::lock_guard<std::mutex> lock(state_.mu);
  if (!merged.ok()) {
    Logger("peer")->error("round {}: merge failed: {}", state_.totals.rounds, merged.message());
    return;
  }
  state_.totals.rounds++;
}

// Pulls from each neighbour we call whose backoff has passed, one after the
// other (each pull has a deadline); false if stopping.
bool RoundLoop::PullDue() {
  const double now = Clock::Real()->MonotonicSeconds();
  const Roster& roster = *state_.roster;  // the loop thread's own: it alone replaces it
  for (size_t j = 0; j < roster.peers.size(); ++j) {
    if (roster.peers[j].dials_in) continue;  // it hands over on its own calls
    {
      std::lock_guard<std::mutex> lock(state_.mu);
      if (state_.stop) return false;
      if (now < state_.next_try[j]) continue;
    }
    Pulled pulled;
    absl::Status s = client_.PullFrom(roster, static_cast<int>(j), &pulled);
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.totals.bytes_received += pulled.bytes;
    state_.totals.bytes_sent += pulled.sent;
    state_.BookPull(static_cast<int>(j), pulled, s);
  }
  return true;
}

// Waits, before the merge, for this round's hand-over from each neighbour
// that dials in and was heard within the last few rounds (it publishes at
// T/4 and calls at T/2, as we pull), until 0.8·T at most: without it the
// merge would race its call and take its deltas a round late.
void RoundLoop::WaitForHandOvers(double round_start) {
  const double period = options_.schedule.round_interval_s;
  const double published = round_start + period / 4, recent = round_start - 3 * period;
  auto until = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::duration<double>(round_start + 0.8 * period)));
  std::unique_lock<std::mutex> lock(state_.mu);
  state_.cv.wait_until(lock, until, [&] {
    if (state_.stop) return true;
    for (size_t j = 0; j < state_.roster->peers.size(); ++j) {
      const double heard = state_.last_exchange[j];
      if (state_.roster->peers[j].dials_in && heard > recent && heard < published) return false;
    }
    return true;
  });
}

// A trust probe between publish and merge: the local steps are closed, so
// the weights copied here are the ones the merge will see.
void RoundLoop::ProbeTrust() {
  const double t0 = Clock::Real()->MonotonicSeconds();
  std::vector<float> x;
  absl::Status copied = weights_.WithSharedParameters(
      [&x](std::vector<float>& shared, int64_t, double) {
        x = shared;
        return false;
      },
      /*opens_round=*/false, {});
  if (!copied.ok() || x.size() != fed_.size()) return;
  const federation::TrustProbe probe = fed_.Probe(x.data());
  if (probe.shares.empty()) return;
  absl::StatusOr<std::vector<double>> losses = weights_.ProbeLosses(
      options_.schedule.trust_examples, probe.candidates(), [&probe](size_t i, float* out) { probe.Candidate(i, out); });
  if (!losses.ok()) {
    // No held-out examples yet is the usual reason: nothing to judge by.
    Logger("peer")->debug("trust probe skipped: {}", losses.status().message());
    return;
  }
  fed_.Judge(probe, *losses);
  std::lock_guard<std::mutex> lock(state_.mu);
  state_.totals.trust_probes++;
  state_.totals.trust_probe_seconds += Clock::Real()->MonotonicSeconds() - t0;
}

// Sleeps until wall-clock time `t` (seconds since the epoch); false if stopping.
bool RoundLoop::SleepUntil(double t) {
  auto when = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(t)));
  std::unique_lock<std::mutex> lock(state_.mu);
  return !state_.cv.wait_until(lock, when, [this] { return state_.stop; });
}

}  // namespace mycel::peer
