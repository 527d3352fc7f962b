// Policy: decides whether the trainer may train right now, and says why not.
//
// The trainer asks Decide() a few times a second, between steps, so a change
// of condition takes effect within a fraction of a second. Implementations
// must be thread-safe and cheap (no blocking I/O on the hot path; cache
// anything slow). Issue #4's resource policy (power, load, hours) composes
// further conditions behind this same interface.
#pragma once

#include <atomic>
#include <string>

namespace mycel::train {

struct PolicyDecision {
  bool allowed = true;
  std::string state;   // machine word when held: "paused", "on_battery", ...
  std::string reason;  // words for people: "paused by user"
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual PolicyDecision Decide() = 0;
};

// The user's pause switch (`mycel pause` / `mycel resume`).
class PausePolicy : public Policy {
 public:
  explicit PausePolicy(bool paused = false) : paused_(paused) {}
  void SetPaused(bool paused) { paused_.store(paused); }
  bool paused() const { return paused_.load(); }
  PolicyDecision Decide() override {
    if (paused_.load()) return {false, "paused", "paused by user"};
    return {};
  }

 private:
  std::atomic<bool> paused_;
};

}  // namespace mycel::train
