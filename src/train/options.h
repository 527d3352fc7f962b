// The train module's options, each defined once, with its defaults:
// TrainingOptions (how the trainer trains: the config reader's `[training]`
// section, config::Config::training; train::TrainerOptions carries it, and
// mycel-sim reads its learning-rate schedule), ResourcePolicyOptions (when
// it may train) and CpuOptions (how much of the machine it takes), which
// the config reader's `[policy]` section is made of. Plain data on the
// standard library alone: this header is its own CMake target
// (mycel_train_options, INTERFACE), which the config library and the CLI may
// see without compiling or linking libtorch.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

namespace mycel::train {

struct TrainingOptions {
  std::string optimizer = "sgd";       // sgd | adam
  double lr = 0.05;                    // learning rate (the initial one, with a decay)
  int64_t lr_decay_steps = 0;          // cosine decay from lr to lr_final over this many steps; 0 = constant lr
  double lr_final = 0.0;               // learning rate after the decay; training goes on at it (> 0 with a decay)
  double momentum = 0.0;               // sgd momentum
  int64_t batch_size = 64;             // examples per step
  double validation_fraction = 0.1;    // share of examples held out, chosen by content hash
  double replay_fraction = 0.5;        // share of each batch replayed from older examples
  std::string replay_pool = "uniform";  // uniform | balanced (by class, toward rising loss): data/sampler.h
  int64_t max_examples = 200000;       // store bound; reservoir eviction beyond it
  double checkpoint_interval_s = 60;   // seconds between periodic checkpoints
  double eval_interval_s = 5;          // seconds between validation passes
  int64_t max_eval_examples = 10000;   // validation examples used per pass
  bool rest = true;                    // rest when validation stops improving (train/trainer.h, "Resting")
  int64_t rest_patience = 6;           // validation passes without a gain before the trainer rests
  double rest_max_s = 600;             // longest rest between two short training bursts
  double drift_guard_drop = 0;         // roll back when validation accuracy stays this far below its best; 0 = off
  int64_t drift_guard_window = 3;      // validation passes it must stay there (train/trainer.h, "Drift guard")
};

// Every field equal. A running trainer keeps the options it was created
// with, so a reload that changes any of them waits for a restart.
inline bool operator==(const TrainingOptions& a, const TrainingOptions& b) {
  auto tie = [](const TrainingOptions& o) {
    return std::tie(o.optimizer, o.lr, o.lr_decay_steps, o.lr_final, o.momentum, o.batch_size, o.validation_fraction,
                    o.replay_fraction, o.replay_pool, o.max_examples, o.checkpoint_interval_s, o.eval_interval_s,
                    o.max_eval_examples, o.rest, o.rest_patience, o.rest_max_s, o.drift_guard_drop,
                    o.drift_guard_window);
  };
  return tie(a) == tie(b);
}
inline bool operator!=(const TrainingOptions& a, const TrainingOptions& b) { return !(a == b); }

// When ResourcePolicy lets the trainer train ([policy]).
struct ResourcePolicyOptions {
  bool pause_on_battery = true;        // [policy] on_battery = "pause" | "continue"
  bool idle_only = false;              // train only while the machine is otherwise idle (/proc/stat)
  double busy_fraction = 0.5;          // others' CPU share above which the machine is "busy" (no config key)
  std::string active_hours;            // "" (always) or "HH:MM-HH:MM", local time; may wrap midnight
  std::string power_supply_dir = "/sys/class/power_supply";  // where the power state is read (Linux)
};

// How much of the machine the training thread takes ([policy]; changed at a
// reload by Trainer::SetMaxCpuPercent and SetThreads).
struct CpuOptions {
  // Duty-cycle cap of the training thread, in (0, 100]: after each step it
  // sleeps long enough that its CPU time stays under this share of wall time.
  double max_cpu_percent = 100;
  int threads = 1;                     // libtorch intra-op threads for training
};

// The window of an active_hours value, "HH:MM-HH:MM", in minutes since
// midnight [start, end): start 00:00 to 23:59, end 00:00 to 24:00; nothing
// when malformed. The one check of the format (the config reader's and
// ResourcePolicy's).
inline std::optional<std::pair<int, int>> ActiveHoursWindow(const std::string& spec) {
  int h1, m1, h2, m2;
  char tail;
  if (std::sscanf(spec.c_str(), "%d:%d-%d:%d%c", &h1, &m1, &h2, &m2, &tail) != 4 || h1 < 0 || h1 > 23 ||
      h2 < 0 || h2 > 24 || m1 < 0 || m1 > 59 || m2 < 0 || m2 > 59 || (h2 == 24 && m2 != 0)) {
    return std::nullopt;
  }
  return std::make_pair(h1 * 60 + m1, h2 * 60 + m2);
}

}  // namespace mycel::train
