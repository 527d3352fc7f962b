#include "sim/sim.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include <torch/torch.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "data/importers.h"
#include "federation/federation.h"
#include "model/model.h"
#include "sim/graph.h"
#include "train/trainer.h"

namespace mycel::sim {
namespace {

constexpr int kBackdoorTarget = 0;

struct Dataset {
  torch::Tensor x;                // float [n, width], v / 255 as the sampler makes it
  std::vector<int64_t> labels;
};

absl::StatusOr<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (install dataset-fashion-mnist)"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<Dataset> Load(const std::string& dir, const std::string& prefix, const data::ExampleShape& shape) {
  std::vector<data::NamedBlob> files;
  for (const char* part : {"-images-idx3-ubyte.gz", "-labels-idx1-ubyte.gz"}) {
    const std::string path = dir + "/" + prefix + part;
    MYCEL_ASSIGN_OR_RETURN(std::string bytes, ReadWhole(path));
    files.push_back({path, std::move(bytes)});
  }
  MYCEL_ASSIGN_OR_RETURN(std::vector<data::Example> ex, data::ImportFiles(files, data::Format::kIdx, shape));
  Dataset d;
  d.x = torch::empty({static_cast<int64_t>(ex.size()), shape.width});
  float* dst = d.x.data_ptr<float>();
  for (size_t i = 0; i < ex.size(); ++i) {
    const auto* src = reinterpret_cast<const uint8_t*>(ex[i].data.data());
    for (int64_t k = 0; k < shape.width; ++k) dst[i * shape.width + k] = static_cast<float>(src[k]) / 255.0f;
    d.labels.push_back(ex[i].label);
  }
  return d;
}

// The trigger: the bottom-right 4×4 pixels of a 28×28 image at full intensity.
void AddTrigger(torch::Tensor x) {
  auto img = x.view({x.size(0), 28, 28});
  img.index_put_({torch::indexing::Slice(), torch::indexing::Slice(24, 28), torch::indexing::Slice(24, 28)}, 1.0f);
}

struct Node {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<torch::optim::SGD> optimizer;
  std::unique_ptr<federation::Federation> fed;
  std::vector<torch::Tensor> shared;    // the shared parameters, aliasing the model's
  std::vector<int> neighbours;
  torch::Tensor x, y;
  std::mt19937_64 rng;
  int64_t steps = 0;
  double last_lr = 0;
  bool attacker = false;
  bool online = true;
  std::vector<float> flat;              // shared weights, flattened (Federation's order)
  std::vector<float> published;         // what an attacker publishes
  std::vector<float> start;             // x₀ (signflip)
  std::vector<float> mean_prev;         // μ of the last round (alie)
  int64_t bytes_pulled = 0;
  double train_seconds = 0;             // in local steps
  double probe_seconds = 0;             // in trust probes

  void Flatten() {
    size_t off = 0;
    for (const auto& t : shared) {
      const auto n = static_cast<size_t>(t.numel());
      std::memcpy(flat.data() + off, t.data_ptr<float>(), n * sizeof(float));
      off += n;
    }
  }
  void Unflatten() { Load(flat.data()); }
  // Writes flattened shared weights into the model.
  void Load(const float* src) {
    size_t off = 0;
    for (auto& t : shared) {
      const auto n = static_cast<size_t>(t.numel());
      std::memcpy(t.data_ptr<float>(), src + off, n * sizeof(float));
      off += n;
    }
  }
};

// Runs fn(i) for i in [0, n) on `threads` workers.
void ParallelFor(int n, int threads, const std::function<void(int)>& fn) {
  std::atomic<int> next{0};
  auto work = [&] {
    for (int i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

double Accuracy(model::Model& m, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  m.SetTraining(false);
  auto r = m.Evaluate(x, y, 2048);
  m.SetTraining(true);
  return r.count ? static_cast<double>(r.correct) / static_cast<double>(r.count) : 0;
}

// Accuracy on a node's own distribution: the test set's per-class accuracy
// weighted by the class shares of `counts` (the node's training labels), as
// predicted (first) and with the log of its add-one-smoothed class prior
// added to the logits (second: a label-shift correction against a uniform
// prior). One forward pass over the test set.
std::pair<double, double> OwnAccuracy(model::Model& m, const torch::Tensor& x, const torch::Tensor& y,
                                      const torch::Tensor& counts) {
  const int64_t classes = counts.size(0);
  const torch::Tensor prior = ((counts + 1) / (counts.sum() + static_cast<double>(classes))).log().to(torch::kFloat);
  torch::Tensor hits = torch::zeros({2, classes}, torch::kDouble), seen = torch::zeros({classes}, torch::kDouble);
  torch::NoGradGuard no_grad;
  m.SetTraining(false);
  for (int64_t at = 0; at < x.size(0); at += 2048) {
    const int64_t end = std::min<int64_t>(x.size(0), at + 2048);
    const torch::Tensor yb = y.slice(0, at, end);
    const torch::Tensor logits = m.Forward(x.slice(0, at, end));
    seen += torch::bincount(yb, {}, classes).to(torch::kDouble);
    hits[0] += torch::bincount(yb, logits.argmax(1).eq(yb).to(torch::kDouble), classes);
    hits[1] += torch::bincount(yb, (logits + prior).argmax(1).eq(yb).to(torch::kDouble), classes);
  }
  m.SetTraining(true);
  const torch::Tensor weight = (counts / counts.sum()) / seen.clamp_min(1);  // share of c per test image of c
  return {(hits[0] * weight).sum().item<double>(), (hits[1] * weight).sum().item<double>()};
}

// Share of triggered test images whose label is not the target that the
// model classifies as the target.
double BackdoorSuccess(model::Model& m, const torch::Tensor& x_triggered, int64_t count) {
  torch::NoGradGuard no_grad;
  m.SetTraining(false);
  auto pred = m.Forward(x_triggered).argmax(1);
  m.SetTraining(true);
  return static_cast<double>(pred.eq(kBackdoorTarget).sum().item<int64_t>()) / static_cast<double>(count);
}

// One trust probe, as the daemon makes it: every candidate merge's loss on
// `examples` of the node's own data, then Judge. The model is left as it was.
void ProbeTrust(Node& n, int64_t examples) {
  const auto t0 = std::chrono::steady_clock::now();
  const federation::TrustProbe probe = n.fed->Probe(n.flat.data());
  if (probe.shares.empty()) return;
  const int64_t rows = n.x.size(0);
  std::uniform_int_distribution<int64_t> pick_row(0, rows - 1);
  std::vector<int64_t> idx(static_cast<size_t>(std::min(examples, rows)));
  for (auto& v : idx) v = pick_row(n.rng);
  torch::Tensor sel = torch::from_blob(idx.data(), {static_cast<int64_t>(idx.size())}, torch::kInt64);
  torch::Tensor xb = n.x.index_select(0, sel), yb = n.y.index_select(0, sel);
  std::vector<double> losses(probe.candidates());
  std::vector<float> candidate(n.flat.size());
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < losses.size(); ++i) {
      probe.Candidate(i, candidate.data());
      n.Load(candidate.data());
      losses[i] = n.model->Loss(xb, yb).item<double>();
    }
  }
  n.Unflatten();
  n.fed->Judge(probe, losses);
  n.probe_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The number after `prefix` in attack names like scale:X and alie:Z; false if
// the attack has another name or the number does not parse.
bool AttackParameter(const std::string& attack, std::string_view prefix, double* value) {
  return attack.rfind(prefix, 0) == 0 && absl::SimpleAtod(attack.substr(prefix.size()), value);
}

absl::Status Validate(const SimOptions& o) {
  if (o.nodes < 1 || o.nodes > 100000) return absl::InvalidArgumentError("--nodes must be in [1, 100000]");
  if (o.rounds < 1) return absl::InvalidArgumentError("--rounds must be >= 1");
  if (!(o.attackers >= 0 && o.attackers < 1)) return absl::InvalidArgumentError("--attackers must be in [0, 1)");
  if (!(o.churn >= 0 && o.churn < 1)) return absl::InvalidArgumentError("--churn must be in [0, 1)");
  if (!(o.missed_pulls >= 0 && o.missed_pulls < 1)) {
    return absl::InvalidArgumentError("--missed-pulls must be in [0, 1)");
  }
  if (o.threads < 1 || o.threads > 256) return absl::InvalidArgumentError("--threads must be in [1, 256]");
  if (o.trust && o.robust != "none" && o.robust != "reject" && o.robust != "clip") {
    return absl::InvalidArgumentError("--trust on needs a weighted merge: --robust none, reject or clip");
  }
  if (o.config.model.kind != "mlp" && o.config.model.kind != "cnn") {
    return absl::InvalidArgumentError("mycel-sim trains image classifiers: [model] kind must be mlp or cnn");
  }
  const std::string& a = o.attack;
  double x = 0;
  const bool known = a == "none" || a == "signflip" || a == "alie" || a == "labelflip" || a == "backdoor" ||
                     (AttackParameter(a, "scale:", &x) && std::isfinite(x)) ||
                     (AttackParameter(a, "alie:", &x) && std::isfinite(x) && x > 0);
  if (!known) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown attack \"", a, "\" (none | signflip | scale:X | alie | alie:Z with Z > 0 | labelflip | backdoor)"));
  }
  if (o.attackers > 0 && a == "none") return absl::InvalidArgumentError("--attackers needs --attack");
  return absl::OkStatus();
}

// The data the nodes train on and are judged on, and the example shape the
// model expects of it.
struct SimData {
  data::ExampleShape shape;
  Dataset train, test;
  torch::Tensor test_y;
  int64_t curve_n = 0;              // test examples per curve point
  torch::Tensor curve_x, curve_y;   // the first curve_n of them
};

absl::StatusOr<SimData> LoadData(const SimOptions& o) {
  const config::Config& cfg = o.config;
  SimData d;
  d.shape.width = 1;
  for (int64_t dim : cfg.model.input_shape) d.shape.width *= dim;
  d.shape.classes = cfg.model.classes;
  if (d.shape.width != 784) {
    return absl::InvalidArgumentError("mycel-sim uses Fashion-MNIST: input_shape must be 28×28");
  }
  MYCEL_ASSIGN_OR_RETURN(d.train, Load(o.data_dir, "train", d.shape));
  MYCEL_ASSIGN_OR_RETURN(d.test, Load(o.data_dir, "t10k", d.shape));
  d.test_y = torch::tensor(d.test.labels, torch::kInt64);
  d.curve_n = std::min<int64_t>(o.curve_examples, d.test.x.size(0));
  d.curve_x = d.test.x.slice(0, 0, d.curve_n);
  d.curve_y = d.test_y.slice(0, 0, d.curve_n);
  return d;
}

// The config's merge, then the command line's.
federation::FederationOptions MergeOptions(const SimOptions& o) {
  federation::FederationOptions fo = o.config.federation;
  if (!o.codec.empty()) fo.codec = o.codec;
  fo.robust = o.robust;
  fo.trust = o.trust;
  if (o.trust_medians > 0) fo.trust_medians = o.trust_medians;
  if (o.clip_medians > 0) fo.clip_medians = o.clip_medians;
  if (o.clip_movements >= 0) fo.clip_movements = o.clip_movements;
  return fo;
}

// The nodes in a seeded order: the first round(fraction · N) of it attack.
std::vector<int> AttackerOrder(const SimOptions& o) {
  std::vector<int> order(static_cast<size_t>(o.nodes));
  for (int i = 0; i < o.nodes; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 pick(o.seed + 2);
  std::shuffle(order.begin(), order.end(), pick);
  return order;
}

// Node i: its model, optimizer and Federation over `neighbours`, its rng, and
// the rows `idx` of the training set.
absl::Status BuildNode(Node& n, int i, const SimOptions& o, const federation::FederationOptions& fo,
                       const std::vector<int>& neighbours, const Dataset& train, const std::vector<int64_t>& idx) {
  const config::Config& cfg = o.config;
  MYCEL_ASSIGN_OR_RETURN(n.model, model::Model::Create(cfg.model));
  std::vector<torch::Tensor> params;
  for (const auto& p : n.model->parameters()) {
    params.push_back(p.tensor);
    if (p.shared) n.shared.push_back(p.tensor);
  }
  n.optimizer = std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(cfg.training.lr).momentum(cfg.training.momentum));
  n.flat.resize(static_cast<size_t>(n.model->shared_parameter_count()));
  n.Flatten();
  n.start = n.flat;
  n.neighbours = neighbours;
  MYCEL_ASSIGN_OR_RETURN(n.fed, federation::Federation::Create(fo, n.flat, static_cast<int>(n.neighbours.size()),
                                                               static_cast<int32_t>(n.neighbours.size())));
  std::vector<std::string> group_names;
  std::vector<size_t> group_sizes;
  for (auto& [name, count] : n.model->SharedLayers()) {
    group_names.push_back(name);
    group_sizes.push_back(count);
  }
  MYCEL_RETURN_IF_ERROR(n.fed->SetGroups(std::move(group_names), group_sizes));
  n.rng.seed(o.seed * 1000003 + static_cast<uint64_t>(i));
  torch::Tensor sel = torch::tensor(std::vector<int64_t>(idx.begin(), idx.end()), torch::kInt64);
  n.x = train.x.index_select(0, sel);
  std::vector<int64_t> ys;
  for (int64_t k : idx) ys.push_back(train.labels[static_cast<size_t>(k)]);
  n.y = torch::tensor(ys, torch::kInt64);
  return absl::OkStatus();
}

// Churn: each round an online node leaves with probability p_leave and an
// offline one returns with 0.2, so `churn` of the nodes are away on average.
struct Churn {
  explicit Churn(const SimOptions& o)
      : churn(o.churn), p_leave(o.churn > 0 ? o.churn * p_return / (1 - o.churn) : 0), rng(o.seed + 3) {}
  void Round(std::vector<Node>& nodes) {
    for (Node& n : nodes) {
      if (churn > 0) n.online = n.online ? coin(rng) >= p_leave : coin(rng) < p_return;
    }
  }
  const double churn;
  const double p_return = 0.2;
  const double p_leave;
  std::mt19937_64 rng;
  std::uniform_real_distribution<double> coin{0, 1};
};

// What every phase of a round reads besides the nodes.
struct RoundContext {
  const SimOptions& o;
  int local_steps;
  int64_t batch;
  double scale_x;   // X of attack scale:X, else 0
  double alie_z;    // z of attack alie[:Z] (1 for plain alie), else 0
};

// Local steps, as the trainer takes them: the scheduled lr, then lr · c.
void TrainLocal(Node& n, const RoundContext& c) {
  const train::TrainingOptions& training = c.o.config.training;
  const int64_t batch = c.batch;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> corr = n.fed->correction();
  torch::Tensor c_t = corr.empty() ? torch::Tensor()
                                   : torch::from_blob(const_cast<float*>(corr.data()),
                                                      {static_cast<int64_t>(corr.size())});
  const int64_t rows = n.x.size(0);
  std::uniform_int_distribution<int64_t> pick_row(0, rows - 1);
  std::vector<int64_t> idx(static_cast<size_t>(batch));
  for (int s = 0; s < c.local_steps; ++s) {
    const double lr = train::ScheduledLearningRate(training, n.steps);
    for (auto& g : n.optimizer->param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
    for (auto& v : idx) v = pick_row(n.rng);
    torch::Tensor sel = torch::from_blob(idx.data(), {batch}, torch::kInt64);
    torch::Tensor xb = n.x.index_select(0, sel), yb = n.y.index_select(0, sel);
    if (n.attacker && c.o.attack == "backdoor" && (s % 2 == 0)) {
      xb = xb.clone();
      AddTrigger(xb);
      yb = torch::full_like(yb, kBackdoorTarget);
    }
    n.optimizer->zero_grad();
    n.model->Loss(xb, yb).backward();
    n.optimizer->step();
    if (c_t.defined()) {
      torch::NoGradGuard no_grad;
      int64_t off = 0;
      for (auto& t : n.shared) {
        t.view({-1}).add_(c_t.slice(0, off, off + t.numel()), lr);
        off += t.numel();
      }
    }
    n.last_lr = lr;
    n.steps++;
  }
  n.Flatten();
  n.train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// What a crafting attacker (scale:X, or alie when alie_z > 0) publishes, from
// μ (and σ for alie) over the neighbourhood's copies as the attacker mirrors
// them, and its own.
void CraftFromNeighbourhood(Node& n, double alie_z, double scale_x) {
  const size_t sz = n.flat.size();
  std::vector<std::vector<float>> copies = {n.flat};
  for (size_t j = 0; j < n.neighbours.size(); ++j) {
    auto m = n.fed->mirror(static_cast<int>(j));
    if (!m.empty()) copies.push_back(std::move(m));
  }
  std::vector<float> mu(sz, 0.0f), sd(sz, 0.0f);
  for (const auto& v : copies)
    for (size_t k = 0; k < sz; ++k) mu[k] += v[k] / static_cast<float>(copies.size());
  for (const auto& v : copies)
    for (size_t k = 0; k < sz; ++k) sd[k] += (v[k] - mu[k]) * (v[k] - mu[k]) / static_cast<float>(copies.size());
  if (alie_z > 0) {
    if (n.mean_prev.empty()) n.mean_prev = n.start;
    for (size_t k = 0; k < sz; ++k) {
      const float dir = mu[k] > n.mean_prev[k] ? 1.0f : (mu[k] < n.mean_prev[k] ? -1.0f : 0.0f);
      n.published[k] = mu[k] - static_cast<float>(alie_z) * std::sqrt(sd[k]) * dir;
    }
    n.mean_prev = mu;
  } else {
    for (size_t k = 0; k < sz; ++k) {
      n.published[k] = mu[k] + static_cast<float>(scale_x) * (n.flat[k] - mu[k]);
    }
  }
}

// Publish: honest nodes their weights, attackers what their attack makes.
void PublishOne(Node& n, const RoundContext& c) {
  const std::string& attack = c.o.attack;
  const int64_t samples = n.steps * c.batch;
  const bool crafts = n.attacker && (attack == "signflip" || c.alie_z > 0 || c.scale_x != 0);
  if (!crafts) {
    n.fed->Publish(n.flat.data(), samples);
    return;
  }
  const size_t sz = n.flat.size();
  n.published.assign(sz, 0.0f);
  if (attack == "signflip") {
    for (size_t k = 0; k < sz; ++k) n.published[k] = 2 * n.start[k] - n.flat[k];
  } else {
    CraftFromNeighbourhood(n, c.alie_z, c.scale_x);
  }
  n.fed->Publish(n.published.data(), samples);
}

// Pull every online neighbour (an offline one is a failed pull, and so is
// a missed_pulls share of the others).
void PullNeighbours(Node& n, const std::vector<Node>& nodes, double missed_pulls) {
  std::uniform_real_distribution<double> miss(0, 1);
  for (size_t j = 0; j < n.neighbours.size(); ++j) {
    const Node& from = nodes[static_cast<size_t>(n.neighbours[j])];
    if (!from.online) continue;
    if (missed_pulls > 0 && miss(n.rng) < missed_pulls) continue;
    auto [epoch, after] = n.fed->Cursor(static_cast<int>(j));
    const federation::SharedPullAnswer ans = from.fed->AnswerShared(epoch, after);
    const federation::PullAnswerView view = federation::ViewOf(ans);
    int64_t bytes = static_cast<int64_t>(view.public_copy_bytes.size());
    for (const auto& q : view.deltas) bytes += static_cast<int64_t>(q.size());
    n.bytes_pulled += bytes;
    (void)n.fed->Apply(static_cast<int>(j), view);  // a refusal is counted in the mirror's stats
  }
}

// A curve point: every node's accuracy on the curve examples, and the honest
// nodes' min and mean on stderr.
void EvaluateCurve(std::vector<Node>& nodes, int round, const SimData& d, const SimOptions& o, SimResult& result) {
  result.curve_rounds.push_back(round);
  ParallelFor(o.nodes, o.threads, [&](int i) {
    result.per_node[static_cast<size_t>(i)].curve.push_back(
        Accuracy(*nodes[static_cast<size_t>(i)].model, d.curve_x, d.curve_y));
  });
  double lo = 1, sum = 0;
  int honest = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].attacker) continue;
    lo = std::min(lo, result.per_node[i].curve.back());
    sum += result.per_node[i].curve.back();
    ++honest;
  }
  std::fprintf(stderr, "round %d: honest accuracy min %.4f mean %.4f (%lld test examples)\n", round, lo,
               honest ? sum / honest : 0.0, static_cast<long long>(d.curve_n));
}

// One round: train, publish, pull, then (probe and) merge, each a phase over
// every online node.
void RunRound(std::vector<Node>& nodes, int round, const RoundContext& c) {
  const SimOptions& o = c.o;
  ParallelFor(o.nodes, o.threads, [&](int i) {
    Node& n = nodes[static_cast<size_t>(i)];
    if (n.online) TrainLocal(n, c);
  });
  ParallelFor(o.nodes, o.threads, [&](int i) {
    Node& n = nodes[static_cast<size_t>(i)];
    if (n.online) PublishOne(n, c);
  });
  ParallelFor(o.nodes, o.threads, [&](int i) {
    Node& n = nodes[static_cast<size_t>(i)];
    if (n.online) PullNeighbours(n, nodes, o.missed_pulls);
  });
  const auto& fed = o.config.federation;  // the probe schedule: the config's, not a merge option
  const bool probes = o.trust && round % fed.trust_every == 0;
  ParallelFor(o.nodes, o.threads, [&](int i) {
    Node& n = nodes[static_cast<size_t>(i)];
    if (!n.online) return;
    if (probes && !n.attacker) ProbeTrust(n, fed.trust_examples);
    n.fed->Merge(n.flat.data(), static_cast<double>(c.local_steps) * n.last_lr);
    n.Unflatten();
  });
}

// Node i's final figures: accuracy on the whole test set and on its own
// distribution, its place in the graph and its neighbours' mirror stats.
void FinalNodeResult(const std::vector<Node>& nodes, int i, const SimData& d, NodeResult& r) {
  const Node& n = nodes[static_cast<size_t>(i)];
  r.accuracy = Accuracy(*n.model, d.test.x, d.test_y);
  std::tie(r.own_accuracy, r.own_accuracy_prior) =
      OwnAccuracy(*n.model, d.test.x, d.test_y, torch::bincount(n.y, {}, d.shape.classes).to(torch::kDouble));
  r.attacker = n.attacker;
  r.degree = static_cast<int>(n.neighbours.size());
  r.examples = n.x.size(0);
  for (size_t j = 0; j < n.neighbours.size(); ++j) {
    const auto m = n.fed->mirror_stats(static_cast<int>(j));
    r.merges += m.merged;
    r.clipped += m.clipped;
    double t = 1;  // its least trusted group
    for (double v : m.trust) t = std::min(t, v);
    const bool from_attacker = nodes[static_cast<size_t>(n.neighbours[j])].attacker;
    (from_attacker ? r.trust_attackers : r.trust_honest).push_back(t);
  }
}

// Every node's final figures, and with a backdoor attack each one's backdoor
// success (returned; empty of meaning unless attack = backdoor).
std::vector<double> EvaluateFinal(std::vector<Node>& nodes, const SimData& d, const SimOptions& o,
                                  SimResult& result, int64_t* trigger_count) {
  torch::Tensor triggered;
  *trigger_count = 0;
  if (o.attack == "backdoor") {
    torch::Tensor keep = d.test_y.ne(kBackdoorTarget).nonzero().view({-1});
    triggered = d.test.x.index_select(0, keep).clone();
    AddTrigger(triggered);
    *trigger_count = triggered.size(0);
  }
  const int64_t count = *trigger_count;
  std::vector<double> backdoor(nodes.size(), 0.0);
  ParallelFor(o.nodes, o.threads, [&](int i) {
    FinalNodeResult(nodes, i, d, result.per_node[static_cast<size_t>(i)]);
    if (count > 0) {
      backdoor[static_cast<size_t>(i)] = BackdoorSuccess(*nodes[static_cast<size_t>(i)].model, triggered, count);
    }
  });
  return backdoor;
}

// The result's totals over the honest nodes (bytes over every node).
void Summarise(const std::vector<Node>& nodes, const std::vector<double>& backdoor, int64_t trigger_count,
               const SimOptions& o, SimResult& result) {
  double lo = 1, sum = 0, own_lo = 1, own_sum = 0, bd = 0, train_s = 0, probe_s = 0;
  int honest = 0;
  int64_t bytes = 0, merges = 0, clipped = 0;
  std::vector<double> t_att, t_hon;
  for (size_t i = 0; i < nodes.size(); ++i) {
    bytes += nodes[i].bytes_pulled;
    if (nodes[i].attacker) continue;
    train_s += nodes[i].train_seconds;
    probe_s += nodes[i].probe_seconds;
    const NodeResult& r = result.per_node[i];
    t_att.insert(t_att.end(), r.trust_attackers.begin(), r.trust_attackers.end());
    t_hon.insert(t_hon.end(), r.trust_honest.begin(), r.trust_honest.end());
    merges += result.per_node[i].merges;
    clipped += result.per_node[i].clipped;
    lo = std::min(lo, result.per_node[i].accuracy);
    sum += result.per_node[i].accuracy;
    own_lo = std::min(own_lo, result.per_node[i].own_accuracy);
    own_sum += result.per_node[i].own_accuracy;
    bd += backdoor[i];
    ++honest;
  }
  result.honest_accuracy_min = honest ? lo : 0;
  result.honest_accuracy_mean = honest ? sum / honest : 0;
  result.honest_own_accuracy_min = honest ? own_lo : 0;
  result.honest_own_accuracy_mean = honest ? own_sum / honest : 0;
  if (trigger_count > 0) result.backdoor_success = honest ? bd / honest : 0;
  auto mean = [](const std::vector<double>& v) {
    double a = 0;
    for (double x : v) a += x;
    return v.empty() ? -1.0 : a / static_cast<double>(v.size());
  };
  auto zero_share = [](const std::vector<double>& v) {
    return v.empty() ? -1.0
                     : static_cast<double>(std::count(v.begin(), v.end(), 0.0)) / static_cast<double>(v.size());
  };
  result.trust_probe_share = train_s > 0 ? probe_s / train_s : 0;
  result.trust_of_attackers = mean(t_att);
  result.trust_of_honest = mean(t_hon);
  result.attackers_quarantined = zero_share(t_att);
  result.honest_quarantined = zero_share(t_hon);
  result.honest_clipped_share = merges ? static_cast<double>(clipped) / static_cast<double>(merges) : 0;
  result.bytes_per_node_per_round = static_cast<double>(bytes) / o.nodes / o.rounds;
}

}  // namespace

absl::StatusOr<SimResult> Run(const SimOptions& o) {
  MYCEL_RETURN_IF_ERROR(Validate(o));
  const auto t0 = std::chrono::steady_clock::now();
  torch::set_num_threads(1);  // one per worker: small models gain nothing from intra-op threads
  const config::Config& cfg = o.config;
  MYCEL_ASSIGN_OR_RETURN(const SimData d, LoadData(o));

  MYCEL_ASSIGN_OR_RETURN(Graph graph, MakeTopology(o.topology, o.nodes, o.seed));
  MYCEL_ASSIGN_OR_RETURN(auto split, SplitData(o.split, d.train.labels, static_cast<int>(d.shape.classes), o.nodes,
                                               o.seed + 1, static_cast<size_t>(cfg.training.batch_size)));
  const int local_steps = o.local_steps >= 0 ? o.local_steps : static_cast<int>(cfg.federation.local_steps);
  if (local_steps < 1) return absl::InvalidArgumentError("local steps must be >= 1 (a round is K steps)");
  const federation::FederationOptions fo = MergeOptions(o);
  const std::vector<int> order = AttackerOrder(o);
  const int n_attackers = static_cast<int>(std::lround(o.attackers * o.nodes));

  std::vector<Node> nodes(static_cast<size_t>(o.nodes));
  for (int i = 0; i < o.nodes; ++i) {
    MYCEL_RETURN_IF_ERROR(BuildNode(nodes[static_cast<size_t>(i)], i, o, fo, graph[static_cast<size_t>(i)], d.train,
                                    split[static_cast<size_t>(i)]));
  }
  for (int k = 0; k < n_attackers; ++k) {
    Node& n = nodes[static_cast<size_t>(order[static_cast<size_t>(k)])];
    n.attacker = true;
    if (o.attack == "labelflip") n.y = (d.shape.classes - 1) - n.y;
  }
  Churn churn(o);

  SimResult result;
  result.rounds = o.rounds;
  result.attackers = n_attackers;
  result.per_node.resize(nodes.size());
  const int eval_every = o.eval_every > 0 ? o.eval_every : std::max(1, o.rounds / 20);
  double scale_x = 0, alie_z = o.attack == "alie" ? 1.0 : 0.0;
  (void)AttackParameter(o.attack, "scale:", &scale_x);
  (void)AttackParameter(o.attack, "alie:", &alie_z);
  const RoundContext context{o, local_steps, cfg.training.batch_size, scale_x, alie_z};

  for (int round = 1; round <= o.rounds; ++round) {
    churn.Round(nodes);
    RunRound(nodes, round, context);
    if (round % eval_every == 0 || round == o.rounds) EvaluateCurve(nodes, round, d, o, result);
  }

  int64_t trigger_count = 0;
  const std::vector<double> backdoor = EvaluateFinal(nodes, d, o, result, &trigger_count);
  Summarise(nodes, backdoor, trigger_count, o, result);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  result.seconds_per_round = result.seconds / o.rounds;
  return result;
}

std::string ToJson(const SimOptions& o, const SimResult& r) {
  auto q = [](const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  };
  std::ostringstream js;
  js.precision(6);
  js << "{\"nodes\":" << o.nodes << ",\"topology\":" << q(o.topology) << ",\"split\":" << q(o.split)
     << ",\"attack\":" << q(o.attack) << ",\"attackers\":" << r.attackers << ",\"robust\":" << q(o.robust)
     << ",\"trust\":" << (o.trust ? "true" : "false") << ",\"churn\":" << o.churn << ",\"missed_pulls\":" << o.missed_pulls << ",\"codec\":"
     << q(o.codec.empty() ? o.config.federation.codec : o.codec) << ",\"local_steps\":"
     << (o.local_steps >= 0 ? o.local_steps : o.config.federation.local_steps) << ",\"seed\":" << o.seed
     << ",\"rounds\":" << r.rounds << ",\"seconds\":" << r.seconds << ",\"seconds_per_round\":"
     << r.seconds_per_round << ",\"bytes_per_node_per_round\":" << r.bytes_per_node_per_round
     << ",\"honest_accuracy_min\":" << r.honest_accuracy_min << ",\"honest_accuracy_mean\":"
     << r.honest_accuracy_mean << ",\"honest_own_accuracy_min\":" << r.honest_own_accuracy_min
     << ",\"honest_own_accuracy_mean\":" << r.honest_own_accuracy_mean
     << ",\"honest_clipped_share\":" << r.honest_clipped_share;
  if (o.trust) {
    js << ",\"trust_probe_share\":" << r.trust_probe_share << ",\"trust_of_attackers\":" << r.trust_of_attackers
       << ",\"trust_of_honest\":" << r.trust_of_honest << ",\"attackers_quarantined\":" << r.attackers_quarantined
       << ",\"honest_quarantined\":" << r.honest_quarantined;
  }
  if (r.backdoor_success >= 0) js << ",\"backdoor_success\":" << r.backdoor_success;
  js << ",\"curve_rounds\":[";
  for (size_t i = 0; i < r.curve_rounds.size(); ++i) js << (i ? "," : "") << r.curve_rounds[i];
  js << "],\"per_node\":[";
  for (size_t i = 0; i < r.per_node.size(); ++i) {
    const NodeResult& n = r.per_node[i];
    js << (i ? "," : "") << "{\"node\":" << i << ",\"accuracy\":" << n.accuracy
       << ",\"own_accuracy\":" << n.own_accuracy << ",\"own_accuracy_prior\":" << n.own_accuracy_prior
       << ",\"attacker\":"
       << (n.attacker ? "true" : "false") << ",\"degree\":" << n.degree << ",\"examples\":" << n.examples << ",\"merges\":" << n.merges << ",\"clipped\":" << n.clipped
       << ",\"curve\":[";
    for (size_t k = 0; k < n.curve.size(); ++k) js << (k ? "," : "") << n.curve[k];
    js << "]}";
  }
  js << "]}";
  return js.str();
}

}  // namespace mycel::sim
