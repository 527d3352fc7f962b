// The node's Prometheus metrics, rendered from the same replies `mycel
// status` and `mycel peers` show, so the two never disagree.
#pragma once

#include <string>

#include "control.pb.h"

namespace mycel {

// The training states a node can report; each is a series of
// mycel_training_state (1 for the current one, 0 for the others).
inline constexpr const char* kTrainingStates[] = {"starting",   "training",  "resting", "waiting_for_data",     "paused",
                                                  "on_battery", "system_busy", "outside_active_hours", "stopped"};

// `peers` may be empty (a node without neighbours).
std::string RenderMetrics(const control::StatusReply& status, const control::PeersReply& peers);

}  // namespace mycel
