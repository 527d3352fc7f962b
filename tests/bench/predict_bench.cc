// predict_bench: what an application on the laptop gets from the public API
// (include/mycel/client.h) while the daemon trains at full speed.
//
// For each model (mlp, cnn) it starts a real myceld ([training] rest = false,
// so it never stops training), then:
//  1. streams Fashion-MNIST's training images in through an ExampleStream in
//     bursts of 1,000, each committed before its acknowledgement: the live
//     ingest rate, examples/s;
//  2. measures training throughput alone (steps/s from the daemon's status);
//  3. sends Predict at 100 and then 1,000 requests/s, paced open-loop (a
//     request's latency runs from when it was due, so a stall counts against
//     every request it delays), recording p50/p95/p99/p99.9 and the steps/s
//     meanwhile;
//  4. side by side, in this process, the bare libtorch forward of the same
//     network on one input at the same pace, while the daemon still trains:
//     the floor the API's latency is compared with.
//
//   predict_bench [--smoke] [--seconds S] [--models mlp,cnn]
//
// Prints one line per figure; the README quotes them.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../integration/harness.h"
#include "model/model.h"
#include "mycel/client.h"

namespace {

using Clock = std::chrono::steady_clock;
using mycel::it::TestNode;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Latencies {
  std::vector<double> ms;
  int errors = 0;
  double At(double q) const {
    if (ms.empty()) return 0;
    std::vector<double> s = ms;
    const size_t i = std::min(s.size() - 1, static_cast<size_t>(q * static_cast<double>(s.size())));
    std::nth_element(s.begin(), s.begin() + static_cast<long>(i), s.end());
    return s[i];
  }
  std::string Describe() const {
    char buf[160];
    std::snprintf(buf, sizeof buf, "p50 %.3f ms, p95 %.3f ms, p99 %.3f ms, p99.9 %.3f ms (%zu requests, %d errors)",
                  At(0.5), At(0.95), At(0.99), At(0.999), ms.size(), errors);
    return buf;
  }
};

// Calls `one` at `rate` per second for `seconds`, open-loop: the latency of
// request i is measured from its due time, t0 + i / rate.
Latencies Paced(double rate, double seconds, const std::function<bool()>& one) {
  Latencies out;
  const auto t0 = Clock::now();
  const auto period = std::chrono::duration<double>(1.0 / rate);
  for (int64_t i = 0;; ++i) {
    const auto due = t0 + std::chrono::duration_cast<Clock::duration>(period * static_cast<double>(i));
    if (Seconds(t0, due) >= seconds) break;
    std::this_thread::sleep_until(due);
    if (!one()) out.errors++;
    out.ms.push_back(Seconds(due, Clock::now()) * 1e3);
  }
  return out;
}

// Fashion-MNIST training images as 784 floats in [0, 1], with labels.
std::vector<mycel::Example> TrainingExamples(int64_t count) {
  const std::string images = mycel::it::GunzipFileOrDie(mycel::it::TrainImages());
  const std::string labels = mycel::it::GunzipFileOrDie(mycel::it::TrainLabels());
  std::vector<mycel::Example> out;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<float> v(784);
    for (int j = 0; j < 784; ++j) v[j] = static_cast<uint8_t>(images[16 + i * 784 + j]) / 255.0f;
    out.push_back(mycel::Example::Labelled(static_cast<uint8_t>(labels[8 + i]), std::move(v)));
  }
  return out;
}

// Steps the daemon trains per second over `seconds` (while `load` runs, if any).
double StepsPerSecond(mycel::Client& client, double seconds, const std::function<void()>& load = nullptr) {
  mycel::DaemonStatus a, b;
  if (!client.GetStatus(&a).ok()) return 0;
  const auto t0 = Clock::now();
  if (load) {
    load();
  } else {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
  const double dt = Seconds(t0, Clock::now());
  if (!client.GetStatus(&b).ok()) return 0;
  return static_cast<double>(b.steps - a.steps) / dt;
}

int RunModel(const std::string& kind, double seconds, int64_t examples) {
  mycel::it::TempDir tmp;
  mycel::it::ConfigSpec spec;
  spec.model_kind = kind;
  spec.extra_training = "rest = false\n";
  TestNode node(tmp.path(), kind, spec);
  if (auto started = node.daemon().Start(); !started) {
    std::fprintf(stderr, "predict_bench: myceld did not start: %s\n", started.message());
    return 1;
  }
  mycel::ClientOptions options;
  options.config_path = node.config_path();
  std::unique_ptr<mycel::Client> client;
  mycel::Status s = mycel::Client::Open(options, &client);
  if (!s.ok()) return std::fprintf(stderr, "predict_bench: %s\n", s.ToString().c_str()), 1;

  // 1. Live ingest through the API.
  std::vector<mycel::Example> data = TrainingExamples(examples);
  const std::vector<float> probe = data[0].values;
  std::unique_ptr<mycel::ExampleStream> stream;
  s = client->OpenExampleStream(1000, &stream);
  const auto t_in = Clock::now();
  for (size_t i = 0; s.ok() && i < data.size(); ++i) s = stream->Add(std::move(data[i]));
  mycel::AddResult total;
  if (s.ok()) s = stream->Finish(&total);
  const double in_s = Seconds(t_in, Clock::now());
  if (!s.ok()) return std::fprintf(stderr, "predict_bench: ingest: %s\n", s.ToString().c_str()), 1;
  std::printf("ingest %s: %.0f examples/s acknowledged through the API (%lld stored in bursts of 1000, %.2f s)\n",
              kind.c_str(), static_cast<double>(total.stored) / in_s, static_cast<long long>(total.stored), in_s);

  // Training under way before anything is timed.
  mycel::DaemonStatus st;
  for (int i = 0; i < 600 && (!client->GetStatus(&st).ok() || st.steps < 50); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  // The bare forward of the same network, in this process.
  mycel::model::ModelOptions mo;
  mo.kind = kind;
  auto bare = mycel::model::Model::Create(mo);
  if (!bare.ok()) return std::fprintf(stderr, "predict_bench: %s\n", bare.status().ToString().c_str()), 1;
  (*bare)->SetTraining(false);
  torch::Tensor x = torch::from_blob(const_cast<float*>(probe.data()), {1, 784}, torch::kFloat).clone();
  auto bare_forward = [&] {
    torch::NoGradGuard no_grad;
    return torch::softmax((*bare)->Forward(x), 1).size(1) == 10;
  };

  const double alone = StepsPerSecond(*client, seconds);
  std::printf("train %s alone: %.1f steps/s\n", kind.c_str(), alone);
  for (double rate : {100.0, 1000.0}) {
    Latencies api;
    const double loaded = StepsPerSecond(*client, seconds, [&] {
      api = Paced(rate, seconds, [&] {
        std::vector<mycel::Prediction> top;
        return client->Predict(probe, 3, &top).ok() && top.size() == 3;
      });
    });
    Latencies floor;
    StepsPerSecond(*client, seconds, [&] { floor = Paced(rate, seconds, bare_forward); });
    std::printf("predict %s @%.0f/s: api %s\n", kind.c_str(), rate, api.Describe().c_str());
    std::printf("predict %s @%.0f/s: bare forward %s\n", kind.c_str(), rate, floor.Describe().c_str());
    std::printf("predict %s @%.0f/s: api/bare p99 ratio %.2f; training under this load %.1f steps/s, %.2f of alone\n",
                kind.c_str(), rate, api.At(0.99) / std::max(1e-6, floor.At(0.99)), loaded,
                alone > 0 ? loaded / alone : 0.0);
    if (api.errors > 0) return std::fprintf(stderr, "predict_bench: %d predictions failed\n", api.errors), 1;
  }
  node.daemon().Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 10;
  int64_t examples = 60000;
  std::string models = "mlp,cnn";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--smoke") {
      seconds = 1;
      examples = 3000;
      models = "mlp";
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (a == "--models" && i + 1 < argc) {
      models = argv[++i];
    } else {
      std::fprintf(stderr, "usage: predict_bench [--smoke] [--seconds S] [--models mlp,cnn]\n");
      return 2;
    }
  }
  torch::set_num_threads(1);  // the bare forward: one input, one thread, as a prediction RPC gets
  std::stringstream list(models);
  for (std::string kind; std::getline(list, kind, ',');) {
    if (int rc = RunModel(kind, seconds, examples); rc != 0) return rc;
  }
  return 0;
}
