// Exposition: writes the Prometheus text format (version 0.0.4) — families
// with their # HELP and # TYPE lines, samples with escaped label values.
//
//   Exposition e;
//   e.Family("mycel_training_steps_total", "counter", "Training steps taken.");
//   e.Sample(1234);
//   e.Family("mycel_peer_up", "gauge", "1 while the last pull from the neighbour succeeded.");
//   e.Sample(1, {{"peer", "alice"}});
//   std::string text = e.Take();
//
// Names follow Prometheus conventions: mycel_ prefix, base units (seconds,
// bytes), counters end in _total. Not thread-safe; one per scrape.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mycel::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  // Starts a family; its samples follow. `type`: "counter" or "gauge".
  void Family(std::string_view name, std::string_view type, std::string_view help);
  // One sample of the current family. NaN and ±Inf are written as Prometheus
  // spells them; integers up to 2^53 exactly.
  void Sample(double value, const Labels& labels = {});
  // The text so far; the exposition is empty afterwards.
  std::string Take();

 private:
  std::string name_;
  std::string out_;
};

// Content-Type of the format Exposition writes.
inline constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace mycel::metrics
