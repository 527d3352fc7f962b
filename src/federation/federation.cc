#include "federation/federation.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "federation/wire.h"

namespace mycel::federation {
namespace {

// A neighbour's mirror: what mirror_stats() reports, plus the weights.
struct Mirror : MirrorStats {
  std::string key;       // the neighbour's public key; "" for anonymous peers
  std::vector<float> m;  // empty until initialized, then size() values
};

struct LogEntry {
  uint64_t seq;
  // Immutable once published; shared with answers in flight (AnswerShared).
  std::shared_ptr<const std::string> q;
};

uint64_t RandomEpoch(uint64_t avoid) {
  std::random_device rd;
  for (;;) {
    uint64_t e = (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
    if (e != 0 && e != avoid) return e;
  }
}

// The mirrors for neighbours `keys`, in that order: each takes the old mirror
// of the same key if there is one (counted in *kept), else starts empty.
// Anonymous mirrors (peers never named, or a version 1 snapshot) of the same
// count are named by position first: that is the order they were made in.
std::vector<Mirror> RekeyMirrors(std::vector<Mirror> old, const std::vector<std::string>& keys, int* kept) {
  if (old.size() == keys.size() &&
      std::all_of(old.begin(), old.end(), [](const Mirror& m) { return m.key.empty(); })) {
    for (size_t j = 0; j < keys.size(); ++j) old[j].key = keys[j];
  }
  std::vector<Mirror> out(keys.size());
  *kept = 0;
  for (size_t j = 0; j < keys.size(); ++j) {
    auto it = std::find_if(old.begin(), old.end(), [&](const Mirror& m) { return !m.key.empty() && m.key == keys[j]; });
    if (it != old.end()) {
      out[j] = std::move(*it);
      it->key.clear();  // a key listed twice gets its mirror once
      ++*kept;
    }
    out[j].key = keys[j];
  }
  return out;
}

bool AllFinite(const float* v, size_t n) {
  // Branch-free so the loop vectorises; NaN and ±Inf both fail x - x == 0.
  int ok = 1;  // an int, not a bool: GCC vectorises only the former
  for (size_t i = 0; i < n; ++i) ok &= (v[i] - v[i] == 0.0f);
  return ok != 0;
}

double L2Norm(const float* v, size_t n) {
  // Independent accumulators: one serial double sum is bound by the add
  // latency; eight let the adds overlap (and vectorise in pairs). Only the
  // summation order differs from a single sum, far below the bounds' scale.
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = 0; k < 8; ++k) s[k] += static_cast<double>(v[i + k]) * v[i + k];
  }
  for (; i < n; ++i) s[0] += static_cast<double>(v[i]) * v[i];
  return std::sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
}

// a[k] += d[k]: the mirror update, alias-free so it vectorises.
void AddInto(float* __restrict a, const float* __restrict d, size_t n) {
  for (size_t k = 0; k < n; ++k) a[k] += d[k];
}

// d[k] += c * (m[k] - x[k]) — the inner loop of Merge, kept alias-free so it vectorises.
void AddScaledDifference(float* __restrict d, const float* __restrict m,
                         const float* __restrict x, float c, size_t n) {
  for (size_t k = 0; k < n; ++k) d[k] += c * (m[k] - x[k]);
}

// ||a − b||, in double like L2Norm.
double Distance(const float* a, const float* b, size_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = 0; k < 8; ++k) {
      const double v = static_cast<double>(a[i + k]) - b[i + k];
      s[k] += v * v;
    }
  }
  for (; i < n; ++i) {
    const double v = static_cast<double>(a[i]) - b[i];
    s[0] += v * v;
  }
  return std::sqrt(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
}

// robust = median | trimmed_mean: x[k] += γ (agg_k − x[k]), agg_k the median
// of {x[k], m_j[k]}, or their mean without the lowest and highest value (with
// fewer than three values, the plain mean); c learns from the move, as with
// the weighted mean. Unweighted, as these rules are.
void MergeCoordinatewise(float* x, size_t size, const std::vector<const float*>& mirrors, bool median,
                         float mixing, float* c, float beta, float inv_scale) {
  const size_t v = mirrors.size() + 1;
  std::vector<float> vals(v);
  for (size_t k = 0; k < size; ++k) {
    vals[0] = x[k];
    for (size_t j = 0; j < mirrors.size(); ++j) vals[j + 1] = mirrors[j][k];
    std::sort(vals.begin(), vals.end());
    float agg;
    if (median) {
      agg = v % 2 ? vals[v / 2] : 0.5f * (vals[v / 2 - 1] + vals[v / 2]);
    } else {
      const size_t trim = v >= 3 ? 1 : 0;
      double sum = 0;
      for (size_t i = trim; i < v - trim; ++i) sum += vals[i];
      agg = static_cast<float>(sum / static_cast<double>(v - 2 * trim));
    }
    const float d = mixing * (agg - x[k]);
    x[k] += d;
    if (c) c[k] = beta * (c[k] + inv_scale * d);
  }
}

// Snapshot format (all integers little-endian):
//   "MYCELFED" u32 version u64 size u64 epoch u64 seq u8 clean i64 samples_trained
//   size × f32 x̂
//   u32 codec_name_len, codec_name
//   u64 log_count, log_count × (u64 seq, u64 len, len bytes)
//   u32 mirror_count, mirror_count × (u8 initialized, u64 epoch, u64 seq,
//       i64 samples_trained, i32 degree, i64 deltas_applied, i64 keyframes_applied,
//       i64 refused, u32 len + last_refusal, u32 len + key (version 2 on),
//       [size × f32 m if initialized])
//   u8 has_correction, [size × f32 c if has_correction]   (version 3 on)
// No trailing bytes. The checkpointer adds the checksum around it.
// Version 1 had no keys; its mirrors are matched by position. Before version
// 3 there was no drift correction; it restores as zero. Version 3 kept c in
// weight units (added whole at publish); version 4 keeps it per unit of
// learning rate, so a version 3 correction restores as zero too: it rebuilds
// within a few dozen rounds.
constexpr char kSnapshotMagic[8] = {'M', 'Y', 'C', 'E', 'L', 'F', 'E', 'D'};
constexpr uint32_t kSnapshotVersion = 4;
constexpr uint32_t kMaxKeyBytes = 256;

}  // namespace

// Codecs neighbours used, by name, so a node decodes whatever each sends.
// Bounded: a name is a parameter space (topk:F), and a neighbour cycling
// through names must not grow memory; the oldest entry makes room.
constexpr size_t kMaxDecoders = 8;

struct Federation::State {
  std::unique_ptr<Codec> codec;                                  // ours, for publishing
  std::deque<std::pair<std::string, std::unique_ptr<Codec>>> decoders;  // neighbours', most recent last

  // The codec a neighbour named, or nullptr with *why set ("unknown_codec: ...").
  const Codec* Decoder(const std::string& name, std::string* why) {
    if (name == codec->name()) return codec.get();
    for (const auto& [n, c] : decoders) {
      if (n == name) return c.get();
    }
    absl::StatusOr<std::unique_ptr<Codec>> made = MakeCodec(name);
    if (!made.ok()) {
      *why = absl::StrCat("unknown_codec: ", made.status().message());
      return nullptr;
    }
    if (decoders.size() >= kMaxDecoders) decoders.pop_front();
    decoders.emplace_back(name, std::move(*made));
    return decoders.back().second.get();
  }
  std::vector<float> xhat;
  uint64_t epoch = 0;
  uint64_t seq = 0;
  std::deque<LogEntry> log;  // contiguous seqs ending at `seq` (or empty)
  int64_t log_bytes = 0;
  std::vector<Mirror> mirrors;
  int64_t samples_trained = 0;  // ours, as of the last Publish
  int32_t degree = 0;           // ours, from the config
  std::vector<float> correction;  // c: size() values while β > 0, else empty
  // robust = clip: x as the last merge left it, and the average of how far
  // x moved between a merge and the next publish (our training's pace).
  std::vector<float> last_merged;
  double movement = 0;
  // Scratch buffers reused across calls so a round does not allocate size() floats.
  std::vector<float> scratch_a;
  std::vector<float> scratch_b;

  // Keeps at most `max_bytes` of deltas, and never more than a keyframe
  // weighs (plus one codec header): a reader who missed more is answered with
  // a keyframe anyway (AnswerShared), so older deltas would only fill memory
  // and every checkpoint.
  void TrimLog(int64_t max_bytes) {
    const int64_t useful = static_cast<int64_t>(xhat.size() * sizeof(float)) + kDeltasOverKeyframeBytes;
    max_bytes = std::min(max_bytes, useful);
    while (!log.empty() && log_bytes > max_bytes) {
      log_bytes -= static_cast<int64_t>(log.front().q->size());
      log.pop_front();
    }
  }
};

Federation::Federation(const FederationOptions& options, size_t size, int num_peers,
                       int32_t degree)
    : options_(options), size_(size), state_(std::make_unique<State>()) {
  state_->mirrors.resize(static_cast<size_t>(num_peers));
  state_->degree = degree;
}

Federation::~Federation() = default;

absl::StatusOr<std::unique_ptr<Federation>> Federation::Create(const FederationOptions& options,
                                                               std::vector<float> initial,
                                                               int num_peers, int32_t degree) {
  if (options.merge != "metropolis" && options.merge != "fedavg") {
    return absl::InvalidArgumentError(absl::StrCat(
        "federation.merge: unknown strategy \"", options.merge, "\" (metropolis | fedavg)"));
  }
  if (!(options.mixing > 0.0 && options.mixing <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("federation.mixing: must be in (0, 1], got ", options.mixing));
  }
  if (!(options.drift_correction >= 0.0 && options.drift_correction < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "federation.drift_correction: must be in [0, 1), got ", options.drift_correction));
  }
  if (options.robust != "none" && options.robust != "reject" && options.robust != "clip" &&
      options.robust != "trimmed_mean" && options.robust != "median") {
    return absl::InvalidArgumentError(absl::StrCat("federation.robust: unknown rule \"", options.robust,
                                                   "\" (none | reject | clip | trimmed_mean | median)"));
  }
  if (!(options.clip_medians >= 1) || !(options.clip_movements >= 0) || !std::isfinite(options.clip_medians) ||
      !std::isfinite(options.clip_movements)) {
    return absl::InvalidArgumentError("federation: clip_medians must be >= 1 and clip_movements >= 0");
  }
  if (options.max_stale_rounds < 0) {
    return absl::InvalidArgumentError("federation.max_stale_rounds: must be >= 0");
  }
  if (options.max_log_bytes < 0) {
    return absl::InvalidArgumentError("federation.max_log_bytes: must be >= 0");
  }
  if (!(options.max_delta_norm > 0) || !(options.max_keyframe_norm > 0)) {
    return absl::InvalidArgumentError("federation: norm bounds must be > 0");
  }
  if (num_peers < 0 || degree < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("federation: bad num_peers ", num_peers, " / degree ", degree));
  }
  if (!AllFinite(initial.data(), initial.size())) {
    return absl::InvalidArgumentError("federation: initial weights hold NaN/Inf");
  }
  MYCEL_ASSIGN_OR_RETURN(std::unique_ptr<Codec> codec, MakeCodec(options.codec));
  std::unique_ptr<Federation> f(new Federation(options, initial.size(), num_peers, degree));
  f->state_->codec = std::move(codec);
  f->state_->xhat = std::move(initial);
  f->state_->epoch = RandomEpoch(0);
  if (options.drift_correction > 0) f->state_->correction.assign(f->size_, 0.0f);
  return f;
}

void Federation::Publish(const float* x, int64_t samples_trained) {
  std::lock_guard<std::mutex> lock(mu_);
  State& s = *state_;
  s.samples_trained = std::max<int64_t>(0, samples_trained);
  s.scratch_a.resize(size_);
  s.scratch_b.resize(size_);
  float* diff = s.scratch_a.data();
  if (s.last_merged.size() == size_) {
    // How far our own training moved x since the last merge: clip's floor.
    // A round that trained nothing (held) says nothing about the pace.
    const float* lm = s.last_merged.data();
    for (size_t k = 0; k < size_; ++k) diff[k] = x[k] - lm[k];
    const double moved = L2Norm(diff, size_);
    if (moved > 0 && std::isfinite(moved)) {
      s.movement = s.movement > 0 ? 0.9 * s.movement + 0.1 * moved : moved;
    }
  }
  const float* xh = s.xhat.data();
  for (size_t k = 0; k < size_; ++k) diff[k] = x[k] - xh[k];
  std::string q = s.codec->Encode(diff, size_);
  // Move x̂ by exactly what a neighbour reconstructs, so lossy codecs stay
  // consistent: the unsent residual stays in x − x̂ for the next round.
  absl::Status st = s.codec->Decode(q, size_, s.scratch_b.data());
  if (!st.ok()) {
    // Only a non-finite x gets here; publishing it would poison every neighbour.
    Logger("federation")->error("publish skipped at seq {}: {}", s.seq, st.message());
    return;
  }
  float* xhm = s.xhat.data();
  const float* dec = s.scratch_b.data();
  for (size_t k = 0; k < size_; ++k) xhm[k] += dec[k];
  if (s.seq >= kMaxSeq) {
    // Never reached by rounds (2^62), only by a restored seq at the limit:
    // a new epoch, whose readers take a keyframe, instead of a seq past it.
    s.epoch = RandomEpoch(s.epoch);
    s.seq = 0;
    s.log.clear();
    s.log_bytes = 0;
  }
  ++s.seq;
  s.log_bytes += static_cast<int64_t>(q.size());
  s.log.push_back(LogEntry{s.seq, std::make_shared<const std::string>(std::move(q))});
  s.TrimLog(options_.max_log_bytes);
}

int Federation::Merge(float* x, double step_scale) {
  std::lock_guard<std::mutex> lock(mu_);
  State& s = *state_;
  const float beta = static_cast<float>(options_.drift_correction);
  // No local steps this round (held, busy): nothing for c to learn from the
  // move, which is pure consensus; it fades. A scale that is not a finite
  // positive number counts as none.
  const bool learn = step_scale > 0 && std::isfinite(step_scale);
  const float inv_scale = learn ? static_cast<float>(1.0 / step_scale) : 0.0f;
  std::vector<Mirror*> parts;
  for (Mirror& m : s.mirrors) {
    const bool fresh = options_.max_stale_rounds <= 0 || m.stale_rounds < options_.max_stale_rounds;
    if (m.initialized && fresh) parts.push_back(&m);
    m.stale_rounds++;  // until the next successful Apply
  }
  if (parts.empty()) {
    for (float& c : s.correction) c *= beta;  // nothing to correct for: fade to plain SGD
    if (options_.robust == "clip" || options_.robust == "reject") s.last_merged.assign(x, x + size_);
    return 0;
  }
  // Our degree as configured, but never below the number of mirrors taking
  // part, so the neighbour weights can never sum past 1.
  const int64_t deg_i = std::max<int64_t>(s.degree, static_cast<int64_t>(parts.size()));
  std::vector<float> coeff(parts.size());
  if (options_.merge == "fedavg") {
    double denom = static_cast<double>(s.samples_trained);
    for (const Mirror* m : parts) denom += static_cast<double>(m->samples_trained);
    for (size_t j = 0; j < parts.size(); ++j) {
      double w = denom > 0 ? static_cast<double>(parts[j]->samples_trained) / denom
                           : 1.0 / static_cast<double>(deg_i + 1);
      coeff[j] = static_cast<float>(options_.mixing * w);
    }
  } else {  // metropolis (Create validated the name)
    for (size_t j = 0; j < parts.size(); ++j) {
      int64_t deg_j = std::max<int64_t>(1, parts[j]->degree);
      const double deg = static_cast<double>(std::max(deg_i, deg_j));
      double w = 1.0 / (1 + deg);
      // With drift correction, at most 2 / (3 · max degree): every node then
      // keeps at least 1/3 of its own weights, so the mixing matrix's
      // eigenvalues stay above −1/3 (Gershgorin), the condition under which
      // D² converges (Tang et al. 2018). Unchanged up to degree 2 (a ring);
      // on degree 4 it is 1/6 instead of 1/5. Measured (mycel-sim, 16 nodes,
      // random 4-regular, Dirichlet(0.3), 500 rounds): plain Metropolis with
      // β = 0.99 oscillated and ended at 76.8% (β = 0.9: 37.9%).
      if (s.correction.size() == size_ && size_ > 0) w = std::min(w, 2.0 / (3.0 * deg));
      coeff[j] = static_cast<float>(options_.mixing * w);
    }
  }
  for (Mirror* m : parts) m->merged++;
  const bool corrected = !s.correction.empty();
  if (options_.robust == "trimmed_mean" || options_.robust == "median") {
    std::vector<const float*> ms;
    for (const Mirror* m : parts) ms.push_back(m->m.data());
    MergeCoordinatewise(x, size_, ms, options_.robust == "median", static_cast<float>(options_.mixing),
                        corrected ? s.correction.data() : nullptr, beta, inv_scale);
    return static_cast<int>(parts.size());
  }
  // robust = reject | clip: a neighbour farther than τ (federation.h) sits
  // this merge out, or pulls by τ only. `coeff` is its weight in d; `teach`
  // its weight in what c learns from, zero once past τ.
  std::vector<float> teach(coeff);
  const bool reject = options_.robust == "reject";
  if (options_.robust == "clip" || reject) {
    std::vector<double> dist(parts.size());
    for (size_t j = 0; j < parts.size(); ++j) dist[j] = Distance(parts[j]->m.data(), x, size_);
    std::vector<double> sorted(dist);
    std::sort(sorted.begin(), sorted.end());
    double tau = options_.clip_movements * s.movement;
    if (sorted.size() >= 2) tau = std::max(tau, options_.clip_medians * sorted[(sorted.size() - 1) / 2]);
    for (size_t j = 0; j < parts.size(); ++j) {
      Mirror* m = parts[j];
      m->last_distance = dist[j];
      m->last_radius = tau;
      if (tau > 0 && dist[j] > tau) {
        coeff[j] = reject ? 0.0f : static_cast<float>(coeff[j] * (tau / dist[j]));
        teach[j] = 0.0f;
        m->clipped++;
      }
    }
  }
  // d = γ Σ_j w_j (m_j − x): each neighbour's public copy against our own
  // weights, not against our public copy x̂ as CHOCO-SGD writes it. With an
  // exact codec the two are the same (x̂ = x right after publishing); with a
  // lossy one x − x̂ holds what the codec has not sent yet, and merging
  // against x̂ pulls every node by the difference of those residuals.
  // Measured (PyTorch simulation, five-node ring, two classes per node, 40
  // local steps, drift correction 0.95, round 500): topk:0.1 against x̂
  // diverges at γ = 1 and reaches 58–70% at γ = 0.5; against x it reaches
  // 79–81% at γ = 1 (dense: 82–84%), and int8 matches dense.
  // Blocked so x stays in cache while every mirror streams through once; the
  // block of d is summed before x moves, so every mirror sees the same x.
  const bool split = teach != coeff;  // c learns from another sum than d
  constexpr size_t kBlock = 4096;
  float d[kBlock];  // this block of d, then x += d, and with drift correction c = β(c + d/η)
  float dc[kBlock];  // what c learns from when it differs from d
  for (size_t b = 0; b < size_; b += kBlock) {
    const size_t n = std::min(kBlock, size_ - b);
    std::fill(d, d + n, 0.0f);
    if (split && corrected) std::fill(dc, dc + n, 0.0f);
    for (size_t j = 0; j < parts.size(); ++j) {
      AddScaledDifference(d, parts[j]->m.data() + b, x + b, coeff[j], n);
      if (split && corrected && teach[j] != 0.0f) {
        AddScaledDifference(dc, parts[j]->m.data() + b, x + b, teach[j], n);
      }
    }
    AddInto(x + b, d, n);
    if (corrected) {
      const float* learnt = split ? dc : d;
      float* c = s.correction.data() + b;
      for (size_t k = 0; k < n; ++k) c[k] = beta * (c[k] + inv_scale * learnt[k]);
    }
  }
  if (options_.robust == "clip" || reject) s.last_merged.assign(x, x + size_);
  return static_cast<int>(parts.size());
}

PullAnswer Federation::Answer(uint64_t epoch, uint64_t after_seq) const {
  SharedPullAnswer shared = AnswerShared(epoch, after_seq);
  PullAnswer a = std::move(shared.answer);
  a.deltas.reserve(shared.deltas.size());
  for (const auto& q : shared.deltas) a.deltas.push_back(*q);
  return a;
}

SharedPullAnswer Federation::AnswerShared(uint64_t epoch, uint64_t after_seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  const State& s = *state_;
  SharedPullAnswer out;
  PullAnswer& a = out.answer;
  a.epoch = s.epoch;
  a.samples_trained = s.samples_trained;
  a.degree = s.degree;
  a.to_seq = s.seq;
  if (epoch == s.epoch && after_seq <= s.seq) {
    if (after_seq == s.seq) {
      a.from_seq = s.seq;
      a.codec = s.codec->name();
      return out;
    }
    if (!s.log.empty() && s.log.front().seq <= after_seq + 1) {
      size_t first = static_cast<size_t>(after_seq + 1 - s.log.front().seq);
      // A reader far behind is cheaper to serve with one keyframe than with
      // every delta since (dense deltas: each is as big as a keyframe).
      size_t delta_bytes = 0;
      for (size_t i = first; i < s.log.size(); ++i) delta_bytes += s.log[i].q->size();
      if (delta_bytes <= s.xhat.size() * sizeof(float) + kDeltasOverKeyframeBytes) {
        a.from_seq = after_seq;
        a.codec = s.codec->name();
        out.deltas.reserve(s.log.size() - first);
        for (size_t i = first; i < s.log.size(); ++i) out.deltas.push_back(s.log[i].q);
        return out;
      }
    }
  }
  // Another epoch, a reader who fell off the log or so far behind that the
  // deltas outweigh a keyframe, or one claiming a seq we never published: all of x̂.
  a.keyframe = true;
  a.from_seq = 0;
  a.codec = "dense_f32";
  a.public_copy = s.xhat;
  return out;
}

namespace {
// Every field of `answer` but its deltas, as a view aliasing it.
PullAnswerView HeaderView(const PullAnswer& answer) {
  PullAnswerView view;
  view.epoch = answer.epoch;
  view.from_seq = answer.from_seq;
  view.to_seq = answer.to_seq;
  view.keyframe = answer.keyframe;
  view.codec = answer.codec;
  view.samples_trained = answer.samples_trained;
  view.degree = answer.degree;
  if (answer.keyframe) {
    view.public_copy_bytes = std::string_view(
        reinterpret_cast<const char*>(answer.public_copy.data()), answer.public_copy.size() * sizeof(float));
  }
  return view;
}
}  // namespace

PullAnswerView ViewOf(const SharedPullAnswer& shared) {
  PullAnswerView view = HeaderView(shared.answer);
  view.deltas.reserve(shared.deltas.size());
  for (const auto& q : shared.deltas) view.deltas.emplace_back(*q);
  return view;
}

absl::Status Federation::Apply(int peer, const PullAnswer& answer) {
  PullAnswerView view = HeaderView(answer);
  view.deltas.reserve(answer.deltas.size());
  for (const std::string& q : answer.deltas) view.deltas.emplace_back(q);
  return Apply(peer, view);
}

absl::Status Federation::Apply(int peer, const PullAnswerView& answer) {
  std::lock_guard<std::mutex> lock(mu_);
  State& s = *state_;
  if (peer < 0 || static_cast<size_t>(peer) >= s.mirrors.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad_peer: peer ", peer, " out of range [0, ", s.mirrors.size(), ")"));
  }
  Mirror& mir = s.mirrors[static_cast<size_t>(peer)];
  auto refuse = [&](const std::string& why) {
    ++mir.refused;
    mir.last_refusal = why;
    Logger("federation")
        ->warn("refused update from peer {} (epoch {:x}, seq {}..{}): {}", peer, answer.epoch,
               answer.from_seq, answer.to_seq, why);
    return absl::InvalidArgumentError(why);
  };

  if (answer.epoch == 0) return refuse("bad_epoch: epoch 0");
  if (answer.to_seq > kMaxSeq) return refuse(absl::StrCat("bad_seq: sequence ", answer.to_seq, " past 2^62"));
  if (answer.samples_trained < 0 || answer.degree < 0) {
    return refuse(absl::StrCat("bad_counts: samples_trained ", answer.samples_trained,
                               ", degree ", answer.degree));
  }

  if (answer.keyframe) {
    // Within one epoch a stream only moves forward: an older keyframe is a replay.
    if (mir.initialized && answer.epoch == mir.epoch && answer.to_seq < mir.seq) {
      return refuse(absl::StrCat("out_of_order: keyframe at seq ", answer.to_seq,
                                 ", mirror is already at ", mir.seq));
    }
    const std::string_view bytes = answer.public_copy_bytes;
    if (bytes.size() != size_ * sizeof(float)) {
      return refuse(bytes.size() % sizeof(float) == 0
                        ? absl::StrCat("bad_shape: keyframe has ", bytes.size() / sizeof(float),
                                       " values, expected ", size_)
                        : absl::StrCat("bad_shape: keyframe has ", bytes.size(),
                                       " bytes, expected ", size_ * sizeof(float)));
    }
    // Validate a copy, then swap it in: the mirror's old buffer becomes the
    // scratch, so nothing is allocated once the mirror exists.
    std::vector<float>& p = s.scratch_a;
    p.resize(size_);
    if (size_ > 0) std::memcpy(p.data(), bytes.data(), bytes.size());
    if (!AllFinite(p.data(), p.size())) return refuse("non_finite: keyframe holds NaN/Inf");
    double norm = L2Norm(p.data(), p.size());
    if (norm > options_.max_keyframe_norm) {
      return refuse(absl::StrCat("norm_bound: keyframe norm ", norm, " > ",
                                 options_.max_keyframe_norm));
    }
    mir.m.swap(p);
    mir.stale_rounds = 0;
    mir.initialized = true;
    mir.epoch = answer.epoch;
    mir.seq = answer.to_seq;
    mir.samples_trained = answer.samples_trained;
    mir.degree = answer.degree;
    ++mir.keyframes_applied;
    return absl::OkStatus();
  }

  std::string why;
  const Codec* decoder = answer.deltas.empty() ? s.codec.get() : s.Decoder(answer.codec, &why);
  if (decoder == nullptr) return refuse(why);
  if (!mir.initialized || answer.epoch != mir.epoch || answer.from_seq != mir.seq) {
    return refuse(absl::StrCat("out_of_order: deltas after (", absl::Hex(answer.epoch), ", ",
                               answer.from_seq, "), mirror is at (", absl::Hex(mir.epoch), ", ",
                               mir.seq, ")"));
  }
  if (answer.to_seq < answer.from_seq ||
      answer.to_seq - answer.from_seq != static_cast<uint64_t>(answer.deltas.size())) {
    return refuse(absl::StrCat("bad_seq: ", answer.deltas.size(), " deltas for (",
                               answer.from_seq, ", ", answer.to_seq, "]"));
  }
  // Each delta is decoded and checked (codec, finite, norm) before it counts.
  std::vector<float>& dec = s.scratch_b;
  auto decode = [&](size_t i) -> absl::Status {
    absl::Status st = decoder->Decode(answer.deltas[i], size_, dec.data());
    if (!st.ok()) {
      return refuse(absl::StrCat(std::string(st.message()), " (delta seq ",
                                 answer.from_seq + i + 1, ")"));
    }
    double norm = L2Norm(dec.data(), size_);
    if (norm > options_.max_delta_norm) {
      return refuse(absl::StrCat("norm_bound: delta seq ", answer.from_seq + i + 1, " norm ",
                                 norm, " > ", options_.max_delta_norm));
    }
    return absl::OkStatus();
  };
  // Deltas are added in the same order and with the same float additions the
  // publisher used for x̂, so the mirror matches it bit for bit.
  if (answer.deltas.size() == 1) {
    // The common case: once the only delta has passed, add it in place.
    dec.resize(size_);
    MYCEL_RETURN_IF_ERROR(decode(0));
    AddInto(mir.m.data(), dec.data(), size_);
  } else if (!answer.deltas.empty()) {
    // Accumulate into a scratch copy; commit only when every delta passed.
    std::vector<float>& acc = s.scratch_a;
    acc = mir.m;
    dec.resize(size_);
    for (size_t i = 0; i < answer.deltas.size(); ++i) {
      MYCEL_RETURN_IF_ERROR(decode(i));
      AddInto(acc.data(), dec.data(), size_);
    }
    mir.m.swap(acc);
  }
  mir.seq = answer.to_seq;
  mir.samples_trained = answer.samples_trained;
  mir.degree = answer.degree;
  mir.deltas_applied += static_cast<int64_t>(answer.deltas.size());
  mir.stale_rounds = 0;  // up to date, even when there was nothing new
  return absl::OkStatus();
}

int Federation::SetPeers(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  int kept = 0;
  state_->mirrors = RekeyMirrors(std::move(state_->mirrors), keys, &kept);
  state_->degree = static_cast<int32_t>(keys.size());
  return kept;
}

std::pair<uint64_t, uint64_t> Federation::Cursor(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (peer < 0 || static_cast<size_t>(peer) >= state_->mirrors.size()) return {0, 0};
  const Mirror& m = state_->mirrors[static_cast<size_t>(peer)];
  if (!m.initialized) return {0, 0};
  return {m.epoch, m.seq};
}

MirrorStats Federation::mirror_stats(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (peer < 0 || static_cast<size_t>(peer) >= state_->mirrors.size()) return MirrorStats();
  return static_cast<const MirrorStats&>(state_->mirrors[static_cast<size_t>(peer)]);
}

std::vector<float> Federation::mirror(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (peer < 0 || static_cast<size_t>(peer) >= state_->mirrors.size()) return {};
  return state_->mirrors[static_cast<size_t>(peer)].m;
}

uint64_t Federation::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_->epoch;
}

uint64_t Federation::seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_->seq;
}

std::vector<float> Federation::public_copy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_->xhat;
}

std::vector<float> Federation::correction() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_->correction;
}

std::string Federation::Serialize(bool clean) const {
  std::lock_guard<std::mutex> lock(mu_);
  const State& s = *state_;
  std::string out;
  size_t mirror_floats = 0;
  for (const Mirror& m : s.mirrors) mirror_floats += m.m.size();
  out.reserve(64 + 4 * (size_ + mirror_floats) + static_cast<size_t>(s.log_bytes) +
              24 * s.log.size() + 128 * s.mirrors.size());
  out.append(kSnapshotMagic, sizeof(kSnapshotMagic));
  wire::AppendInt<uint32_t>(&out, kSnapshotVersion);
  wire::AppendInt<uint64_t>(&out, size_);
  wire::AppendInt<uint64_t>(&out, s.epoch);
  wire::AppendInt<uint64_t>(&out, s.seq);
  wire::AppendInt<uint8_t>(&out, clean ? 1 : 0);
  wire::AppendInt<int64_t>(&out, s.samples_trained);
  wire::AppendFloats(&out, s.xhat.data(), size_);
  std::string codec = s.codec->name();
  wire::AppendInt<uint32_t>(&out, static_cast<uint32_t>(codec.size()));
  out += codec;
  wire::AppendInt<uint64_t>(&out, s.log.size());
  for (const LogEntry& e : s.log) {
    wire::AppendInt<uint64_t>(&out, e.seq);
    wire::AppendInt<uint64_t>(&out, e.q->size());
    out += *e.q;
  }
  wire::AppendInt<uint32_t>(&out, static_cast<uint32_t>(s.mirrors.size()));
  for (const Mirror& m : s.mirrors) {
    wire::AppendInt<uint8_t>(&out, m.initialized ? 1 : 0);
    wire::AppendInt<uint64_t>(&out, m.epoch);
    wire::AppendInt<uint64_t>(&out, m.seq);
    wire::AppendInt<int64_t>(&out, m.samples_trained);
    wire::AppendInt<int32_t>(&out, m.degree);
    wire::AppendInt<int64_t>(&out, m.deltas_applied);
    wire::AppendInt<int64_t>(&out, m.keyframes_applied);
    wire::AppendInt<int64_t>(&out, m.refused);
    wire::AppendInt<uint32_t>(&out, static_cast<uint32_t>(m.last_refusal.size()));
    out += m.last_refusal;
    wire::AppendInt<uint32_t>(&out, static_cast<uint32_t>(m.key.size()));
    out += m.key;
    if (m.initialized) wire::AppendFloats(&out, m.m.data(), size_);
  }
  wire::AppendInt<uint8_t>(&out, s.correction.empty() ? 0 : 1);
  if (!s.correction.empty()) wire::AppendFloats(&out, s.correction.data(), size_);
  return out;
}

absl::Status Federation::Restore(std::string_view bytes) {
  auto corrupt = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat("federation snapshot: ", what));
  };
  // size() floats into v, checking the bytes are there before allocating.
  auto read_vector = [this](wire::Reader& r, std::vector<float>* v) {
    if (r.remaining() / 4 < size_) return false;
    v->resize(size_);
    return r.Floats(size_, v->data()) && AllFinite(v->data(), size_);
  };

  std::vector<std::string> keys;  // the peers as configured; Restore never changes them
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Mirror& m : state_->mirrors) keys.push_back(m.key);
  }

  wire::Reader r(bytes);
  std::string_view magic;
  if (!r.Bytes(sizeof(kSnapshotMagic), &magic) ||
      std::memcmp(magic.data(), kSnapshotMagic, sizeof(kSnapshotMagic)) != 0) {
    return corrupt("bad magic");
  }
  uint32_t version = 0;
  uint64_t size = 0, epoch = 0, seq = 0;
  uint8_t clean = 0;
  int64_t samples = 0;
  if (!r.Int(&version)) return corrupt("truncated header");
  if (version < 1 || version > kSnapshotVersion) {
    return corrupt(absl::StrCat("unsupported version ", version, " (want 1 to ", kSnapshotVersion, ")"));
  }
  if (!r.Int(&size) || !r.Int(&epoch) || !r.Int(&seq) || !r.Int(&clean) || !r.Int(&samples)) {
    return corrupt("truncated header");
  }
  if (size != size_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "federation snapshot: holds ", size, " shared parameters, the model has ", size_));
  }
  if (epoch == 0 || clean > 1 || samples < 0) return corrupt("bad header fields");
  // Publishing increments seq: one near 2^64 would wrap to 0 and leave a log
  // (and every snapshot after it) out of order.
  if (seq > kMaxSeq) return corrupt(absl::StrCat("sequence ", seq, " past 2^62"));

  auto fresh = std::make_unique<State>();
  MYCEL_ASSIGN_OR_RETURN(fresh->codec, MakeCodec(options_.codec));
  fresh->epoch = epoch;
  fresh->seq = seq;
  fresh->samples_trained = samples;
  if (!read_vector(r, &fresh->xhat)) return corrupt("truncated or non-finite public copy");

  uint32_t codec_len = 0;
  std::string_view codec_name;
  if (!r.Int(&codec_len) || !r.Bytes(codec_len, &codec_name)) return corrupt("truncated codec");
  if (codec_len == 0 || codec_len > 64 ||
      !std::all_of(codec_name.begin(), codec_name.end(),
                   [](char c) {
                     return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ':' || c == '.' ||
                            c == '+';
                   })) {
    return corrupt("bad codec name");
  }
  uint64_t log_count = 0;
  if (!r.Int(&log_count)) return corrupt("truncated log");
  for (uint64_t i = 0; i < log_count; ++i) {
    uint64_t eseq = 0, len = 0;
    std::string_view q;
    if (!r.Int(&eseq) || !r.Int(&len) || !r.Bytes(len, &q)) return corrupt("truncated log entry");
    // The log is contiguous and ends at seq.
    if (eseq != seq - (log_count - 1 - i) || eseq == 0 || eseq > seq) {
      return corrupt(absl::StrCat("log entry seq ", eseq, " out of place"));
    }
    fresh->log.push_back(LogEntry{eseq, std::make_shared<const std::string>(q)});
    fresh->log_bytes += static_cast<int64_t>(len);
  }

  uint32_t mirror_count = 0;
  if (!r.Int(&mirror_count)) return corrupt("truncated mirrors");
  std::vector<Mirror> mirrors;
  for (uint32_t i = 0; i < mirror_count; ++i) {
    Mirror m;
    uint8_t init = 0;
    uint32_t why_len = 0, key_len = 0;
    std::string_view why, key;
    if (!r.Int(&init) || !r.Int(&m.epoch) || !r.Int(&m.seq) || !r.Int(&m.samples_trained) ||
        !r.Int(&m.degree) || !r.Int(&m.deltas_applied) || !r.Int(&m.keyframes_applied) ||
        !r.Int(&m.refused) || !r.Int(&why_len) || !r.Bytes(why_len, &why) ||
        (version >= 2 && (!r.Int(&key_len) || key_len > kMaxKeyBytes || !r.Bytes(key_len, &key)))) {
      return corrupt(absl::StrCat("truncated mirror ", i));
    }
    if (init > 1 || m.seq > kMaxSeq || m.samples_trained < 0 || m.degree < 0 || m.deltas_applied < 0 ||
        m.keyframes_applied < 0 || m.refused < 0 || (init == 1 && m.epoch == 0)) {
      return corrupt(absl::StrCat("bad fields in mirror ", i));
    }
    m.initialized = init == 1;
    m.last_refusal = std::string(why);
    m.key = std::string(key);
    if (m.initialized && !read_vector(r, &m.m)) {
      return corrupt(absl::StrCat("truncated or non-finite mirror ", i));
    }
    mirrors.push_back(std::move(m));
  }
  uint8_t has_correction = 0;
  if (version >= 3) {
    if (!r.Int(&has_correction) || has_correction > 1) return corrupt("truncated or bad drift correction flag");
    if (has_correction == 1 && !read_vector(r, &fresh->correction)) {
      return corrupt("truncated or non-finite drift correction");
    }
  }
  // The correction follows the options, not the snapshot: β switched on
  // starts from zero, switched off drops what was saved; a version 3 one was
  // in other units.
  if (options_.drift_correction == 0 || version < 4) fresh->correction.clear();
  if (options_.drift_correction > 0 && fresh->correction.empty()) {
    fresh->correction.assign(size_, 0.0f);
  }
  if (r.remaining() != 0) return corrupt(absl::StrCat(r.remaining(), " trailing bytes"));

  auto log = Logger("federation");
  if (codec_name != fresh->codec->name()) {
    log->info("restore: log was encoded with {}, now {}; dropping {} deltas (readers get keyframes)",
              std::string(codec_name), fresh->codec->name(), fresh->log.size());
    fresh->log.clear();
    fresh->log_bytes = 0;
  }
  if (!clean) {
    fresh->epoch = RandomEpoch(epoch);
    fresh->log.clear();
    fresh->log_bytes = 0;
    log->info("restore: snapshot at seq {} was not a clean shutdown; new epoch {:x} (was {:x}), "
              "neighbours will take a keyframe",
              seq, fresh->epoch, epoch);
  }
  fresh->TrimLog(options_.max_log_bytes);

  // Mirrors follow their neighbour's key, so peers added, removed or
  // reordered since the snapshot keep what was learnt of them; anonymous
  // peers (no keys) are matched by position when the count is unchanged.
  const bool keyed = std::all_of(keys.begin(), keys.end(), [](const std::string& k) { return !k.empty(); });
  int kept = 0;
  if (keyed) {
    fresh->mirrors = RekeyMirrors(std::move(mirrors), keys, &kept);
  } else if (mirrors.size() == keys.size()) {
    fresh->mirrors = std::move(mirrors);
    kept = static_cast<int>(keys.size());
  } else {
    fresh->mirrors.assign(keys.size(), Mirror{});
  }
  if (kept != static_cast<int>(keys.size()) || mirror_count != keys.size()) {
    log->info("restore: snapshot has {} mirrors, config has {} peers; {} kept, the rest start empty",
              mirror_count, keys.size(), kept);
  }
  std::lock_guard<std::mutex> lock(mu_);
  fresh->degree = state_->degree;
  state_ = std::move(fresh);
  return absl::OkStatus();
}

}  // namespace mycel::federation
