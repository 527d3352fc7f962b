// ResourcePolicy: when a laptop lets the daemon train (DESIGN.md, "Being a
// good laptop citizen"). Composes, in this order, the user's pause switch,
// the power source (on battery: pause, unless configured to continue), the
// active-hours window and, with idle_only, whether the machine is otherwise
// idle (/proc/stat CPU counters minus this process's own use). Each reason
// change is logged once. Slow readings (sysfs, /proc) are cached for a second
// so Decide() stays cheap when the trainer asks between steps.
//
// Power state on Linux comes from power_supply_dir (default
// /sys/class/power_supply; tests point it at a fake tree): mains when an AC
// ("Mains") or USB adapter is online, or when there is no battery at all.
// macOS reads IOKit power sources behind the same function.
//
// Thread-safe: Decide() and Reconfigure() may be called from any thread.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "train/options.h"
#include "train/policy.h"

namespace mycel::train {

enum class PowerSource { kMains, kBattery };

// Reads the power source from a Linux power_supply tree (or IOKit on macOS).
PowerSource ReadPowerSource(const std::string& power_supply_dir);

// Parses "HH:MM-HH:MM" into minutes since midnight [start, end)
// (ActiveHoursWindow, with an error that quotes the value).
absl::StatusOr<std::pair<int, int>> ParseActiveHours(const std::string& spec);

class ResourcePolicy : public Policy {
 public:
  ResourcePolicy(const ResourcePolicyOptions& options, PausePolicy& pause, Clock* clock = Clock::Real());
  PolicyDecision Decide() override;
  // Takes new options (SIGHUP reload); the next Decide() uses them.
  void Reconfigure(const ResourcePolicyOptions& options);
  // The power source read now (`mycel status`, `mycel doctor`), whatever
  // on_battery says.
  PowerSource power();

 private:
  PolicyDecision DecideLocked();
  bool MachineBusyLocked(double now);

  PausePolicy& pause_;
  Clock* clock_;
  std::mutex mu_;
  ResourcePolicyOptions options_;              // guarded by mu_
  std::optional<std::pair<int, int>> hours_;   // guarded by mu_
  double power_read_at_ = -1e9;                // guarded by mu_
  PowerSource power_ = PowerSource::kMains;    // guarded by mu_
  double busy_read_at_ = -1e9;                 // guarded by mu_
  bool busy_ = false;                          // guarded by mu_
  uint64_t last_total_ = 0, last_idle_ = 0, last_self_ = 0;  // /proc counters, guarded by mu_
  std::string last_reason_;                    // guarded by mu_: logged once per change
};

}  // namespace mycel::train
