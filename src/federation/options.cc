#include "federation/options.h"

#include <cmath>
#include <string_view>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "federation/codec.h"

namespace mycel::federation {
namespace {

// Comparisons are written so that NaN fails every rule.
std::optional<OptionProblem> In(std::string_view key, double v, double lo, bool lo_open, double hi, bool hi_open) {
  const bool ok = (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  if (ok) return std::nullopt;
  return OptionProblem{std::string(key), absl::StrCat("must be in ", lo_open ? "(" : "[", lo, ", ", hi,
                                                      hi_open ? ")" : "]", " (got ", v, ")")};
}

std::optional<OptionProblem> Positive(std::string_view key, double v) {
  if (std::isfinite(v) && v > 0) return std::nullopt;
  return OptionProblem{std::string(key), absl::StrCat(std::isfinite(v) ? "must be > 0" : "must be a finite number > 0",
                                                      " (got ", v, ")")};
}

std::optional<OptionProblem> OneOf(std::string_view key, const std::string& v,
                                   std::initializer_list<std::string_view> allowed) {
  for (std::string_view a : allowed) {
    if (v == a) return std::nullopt;
  }
  std::string list;
  for (std::string_view a : allowed) {
    if (!list.empty()) list += ", ";
    list += a;
  }
  return OptionProblem{std::string(key), absl::StrCat("must be one of ", list, " (got '", v, "')")};
}

bool Weighted(const std::string& robust) { return robust == "none" || robust == "reject" || robust == "clip"; }

}  // namespace

FederationOptions PlainGossip() {
  FederationOptions o;
  o.drift_correction = 0;
  o.codec = "dense_f32";
  o.robust = "none";
  return o;
}

bool operator==(const FederationOptions& a, const FederationOptions& b) {
  auto all = [](const FederationOptions& o) {
    return std::tie(o.merge, o.mixing, o.drift_correction, o.codec, o.max_log_bytes, o.max_delta_norm,
                    o.max_keyframe_norm, o.max_stale_rounds, o.robust, o.clip_medians, o.clip_movements, o.trust,
                    o.trust_tolerance, o.trust_medians, o.trust_penalty, o.trust_reward, o.trust_smoothing);
  };
  return all(a) == all(b);
}

std::optional<OptionProblem> CheckOptions(const FederationOptions& o) {
  constexpr double kInf = HUGE_VAL;
  if (auto p = OneOf("merge", o.merge, {"metropolis", "fedavg"})) return p;
  // γ = 0 would never merge: say so rather than print an interval.
  if (o.mixing <= 0) return OptionProblem{"mixing", absl::StrCat("must be > 0 (got ", o.mixing, ")")};
  if (auto p = In("mixing", o.mixing, 0, true, 1, false)) return p;
  if (auto p = In("drift_correction", o.drift_correction, 0, false, 1, true)) return p;
  if (absl::StatusOr<std::unique_ptr<Codec>> codec = MakeCodec(o.codec); !codec.ok()) {
    return OptionProblem{"codec", std::string(codec.status().message())};
  }
  if (o.max_log_bytes < 0) return OptionProblem{"max_log_bytes", absl::StrCat("must be >= 0 (got ", o.max_log_bytes, ")")};
  if (auto p = Positive("max_delta_norm", o.max_delta_norm)) return p;
  if (auto p = Positive("max_keyframe_norm", o.max_keyframe_norm)) return p;
  if (o.max_stale_rounds < 0 || o.max_stale_rounds > 1000000) {
    return OptionProblem{"max_stale_rounds", absl::StrCat("must be in [0, 1000000] (got ", o.max_stale_rounds, ")")};
  }
  if (auto p = OneOf("robust", o.robust, {"none", "reject", "clip", "trimmed_mean", "median"})) return p;
  if (auto p = In("clip_medians", o.clip_medians, 1, false, kInf, true)) return p;
  if (auto p = In("clip_movements", o.clip_movements, 0, false, kInf, true)) return p;
  if (auto p = In("trust_tolerance", o.trust_tolerance, 0.001, false, 10, false)) return p;
  if (auto p = In("trust_medians", o.trust_medians, 1, false, kInf, true)) return p;
  if (auto p = In("trust_penalty", o.trust_penalty, 0, true, 1, false)) return p;
  if (auto p = In("trust_reward", o.trust_reward, 0, true, 1, false)) return p;
  if (auto p = In("trust_smoothing", o.trust_smoothing, 0, true, 1, false)) return p;
  if (o.trust && !Weighted(o.robust)) {
    return OptionProblem{"trust", absl::StrCat("works only with weighted merges (robust = none | reject | clip), robust is \"",
                                               o.robust, "\"")};
  }
  return std::nullopt;
}

}  // namespace mycel::federation
