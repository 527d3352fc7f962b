// trainer_bench: training throughput of the daemon's Trainer against a bare
// libtorch loop over preloaded tensors (same model, batch, optimizer and
// threads), and against the same loop in PyTorch when a python3 with torch
// is found. Machines are shared and noisy, so the contenders run in
// interleaved rounds in one process and the result is a ratio of medians.
//
// Contenders (each round runs every one for --seconds, order rotated per round):
//   bare          Model::Create + SGD; each step: randint indices, index_select
//                 from [N, 784] float tensors, zero_grad, cross_entropy, backward, step.
//   trainer       Trainer::TrainStepsForBenchmark on a real ExampleStore, steady
//                 state (fresh rows all trained: every batch is uniform replay,
//                 like the bare loop).
//   trainer-mix   the same with fresh rows available, so each batch is the
//                 default mix (batch*(1-replay_fraction) fresh + replay). A trainer
//                 is recreated (untimed) whenever its fresh rows run out.
//   trainer-loop  the daemon's own trainer thread (Start()), resumed and paused
//                 through its Policy; rate from Stats().samples_trained.
//   python        tests/bench/trainer_bench.py --serve (bare loop in PyTorch).
//
//   build-bench/bin/trainer_bench [--seconds 2] [--rounds 5] [--threads 1] [--batch 64]
//                                 [--no-python] [--pieces] [--only A,B] [--smoke]
// Last line: "trainer/bare ratio: 0.97 (trainer 185k samples/s, bare 191k ...)".
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "common/logging.h"
#include "common/test_util.h"
#include "common/status.h"
#include "data/example_store.h"
#include "data/importers.h"
#include "data/sampler.h"
#include "model/model.h"
#include "train/checkpointer.h"
#include "train/policy.h"
#include "train/trainer.h"

#ifndef MYCEL_SOURCE_DIR
#define MYCEL_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using namespace mycel;

namespace {

// ---------------------------------------------------------------- options --

struct Args {
  double seconds = 2.0;   // per round per contender
  int rounds = 5;
  double warmup = 1.0;    // untimed seconds per contender before the rounds
  int threads = 1;
  int64_t batch = 64;
  double lr = 0.05;       // configs/demo.toml
  double momentum = 0.9;  // configs/demo.toml
  double replay_fraction = 0.5;  // config default
  bool python = true;
  bool variants = true;   // trainer-mix and trainer-loop
  bool smoke = false;
  bool pieces = false;    // also time the parts of a step separately
  std::vector<std::string> only;  // run just these contenders (profiling)
  int64_t limit = 0;      // examples used (0: all)
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string python_bin;  // "" → $MYCEL_PYTHON, python3, /usr/bin/python3
  std::string python_script = MYCEL_SOURCE_DIR "/tests/bench/trainer_bench.py";
};

void Usage() {
  std::cout <<
      "usage: trainer_bench [options]\n"
      "  --seconds S      seconds per timed round per contender (default 2)\n"
      "  --rounds N       timed rounds (default 5)\n"
      "  --warmup S       untimed warm-up seconds per contender (default 1)\n"
      "  --threads N      libtorch intra-op threads (default 1)\n"
      "  --batch N        batch size (default 64)\n"
      "  --lr X --momentum X --replay-fraction X   SGD/trainer options (0.05, 0.9, 0.5)\n"
      "  --limit N        use only the first N examples\n"
      "  --data-dir DIR   Fashion-MNIST idx files (default /usr/share/datasets/fashion-mnist)\n"
      "  --no-python      skip the PyTorch loop\n"
      "  --python BIN     interpreter with torch (default: $MYCEL_PYTHON, python3, /usr/bin/python3)\n"
      "  --python-script PATH\n"
      "  --no-variants    only bare, trainer (and python)\n"
      "  --only A,B       run only these contenders (bare, trainer, trainer-mix, trainer-loop,\n"
      "                   python), e.g. under perf; no ratio line without bare and trainer\n"
      "  --pieces         also time the parts of a step (sampling vs compute) separately\n"
      "  --smoke          a very short run (ctest trainer_bench_smoke)\n";
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "trainer_bench: " << k << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--seconds") a->seconds = std::stod(val());
    else if (k == "--rounds") a->rounds = std::stoi(val());
    else if (k == "--warmup") a->warmup = std::stod(val());
    else if (k == "--threads") a->threads = std::stoi(val());
    else if (k == "--batch") a->batch = std::stoll(val());
    else if (k == "--lr") a->lr = std::stod(val());
    else if (k == "--momentum") a->momentum = std::stod(val());
    else if (k == "--replay-fraction") a->replay_fraction = std::stod(val());
    else if (k == "--limit") a->limit = std::stoll(val());
    else if (k == "--data-dir") a->data_dir = val();
    else if (k == "--no-python") a->python = false;
    else if (k == "--python") a->python_bin = val();
    else if (k == "--python-script") a->python_script = val();
    else if (k == "--no-variants") a->variants = false;
    else if (k == "--smoke") a->smoke = true;
    else if (k == "--pieces") a->pieces = true;
    else if (k == "--only") {
      std::istringstream in(val());
      for (std::string name; std::getline(in, name, ',');) a->only.push_back(name);
    }
    else if (k == "--help" || k == "-h") { Usage(); std::exit(0); }
    else {
      std::cerr << "trainer_bench: unknown option " << k << "\n";
      Usage();
      return false;
    }
  }
  if (a->smoke) {
    a->seconds = 0.05;
    a->rounds = 2;
    a->warmup = 0.05;
    if (a->limit == 0) a->limit = 4000;
  }
  if (a->seconds <= 0 || a->rounds < 1 || a->threads < 1 || a->batch < 1) {
    std::cerr << "trainer_bench: --seconds, --rounds, --threads and --batch must be positive\n";
    return false;
  }
  return true;
}

// ------------------------------------------------------------------ clock --

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double ProcessCpu() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Round {
  double samples = 0, wall = 0, cpu = 0;
  double rate() const { return wall > 0 ? samples / wall : 0; }
  double cpu_rate() const { return cpu > 0 ? samples / cpu : 0; }  // per CPU-second
};

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string Kilo(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fk", rate / 1000);
  return buf;
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// BLAS libraries mapped into this process (a reference-BLAS machine is ~16x slower).
std::vector<std::string> MappedBlas() {
  std::vector<std::string> libs;
  std::istringstream maps(test::ReadFileToString("/proc/self/maps"));
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    std::string lower = path;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if ((lower.find("blas") != std::string::npos || lower.find("lapack") != std::string::npos ||
         lower.find("mkl") != std::string::npos) &&
        std::find(libs.begin(), libs.end(), path) == libs.end()) {
      libs.push_back(path);
    }
  }
  return libs;
}

// ------------------------------------------------------------------- data --

struct Dataset {
  std::vector<data::Example> examples;
  std::string source;
};

absl::StatusOr<Dataset> LoadDataset(const Args& args) {
  Dataset ds;
  const std::string images = args.data_dir + "/train-images-idx3-ubyte.gz";
  const std::string labels = args.data_dir + "/train-labels-idx1-ubyte.gz";
  data::ExampleShape shape;  // width 784, 10 classes
  if (fs::exists(images) && fs::exists(labels)) {
    std::vector<data::NamedBlob> files = {{images, test::ReadFileToString(images)}, {labels, test::ReadFileToString(labels)}};
    auto ex = data::ImportFiles(files, data::Format::kIdx, shape);
    if (!ex.ok()) return ex.status();
    ds.examples = std::move(*ex);
    ds.source = images;
  } else {
    // Throughput does not depend on pixel values; keep the bench usable anywhere.
    const int64_t n = args.limit > 0 ? args.limit : 60000;
    std::mt19937 rng(1);
    ds.examples.resize(static_cast<size_t>(n));
    for (auto& e : ds.examples) {
      e.label = static_cast<int64_t>(rng() % 10);
      e.data.resize(static_cast<size_t>(shape.width));
      for (auto& c : e.data) c = static_cast<char>(rng() & 0xff);
    }
    ds.source = "synthetic (" + images + " not found)";
  }
  if (args.limit > 0 && static_cast<int64_t>(ds.examples.size()) > args.limit) {
    ds.examples.resize(static_cast<size_t>(args.limit));
  }
  return ds;
}

// ------------------------------------------------------------- contenders --

struct Contender {
  std::string name;
  std::function<Round(double seconds)> run;
  std::vector<Round> rounds;
  double median_rate() const {
    std::vector<double> r;
    for (const auto& x : rounds) r.push_back(x.rate());
    return Median(r);
  }
  double median_cpu_rate() const {
    std::vector<double> r;
    for (const auto& x : rounds) r.push_back(x.cpu_rate());
    return Median(r);
  }
};

// The bare libtorch loop over preloaded tensors.
class BareLoop {
 public:
  BareLoop(std::unique_ptr<model::Model> model, torch::Tensor x, torch::Tensor y, const Args& args)
      : model_(std::move(model)), x_(std::move(x)), y_(std::move(y)), batch_(args.batch) {
    std::vector<torch::Tensor> params;
    for (const auto& p : model_->parameters()) params.push_back(p.tensor);
    opt_ = std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(args.lr).momentum(args.momentum));
  }

  Round Run(double seconds) {
    namespace F = torch::nn::functional;
    const int64_t n = x_.size(0);
    Round r;
    const double c0 = ProcessCpu(), t0 = Now(), deadline = t0 + seconds;
    int64_t steps = 0;
    double t = t0;
    do {
      torch::Tensor idx = torch::randint(n, {batch_}, torch::kLong);
      torch::Tensor xb = x_.index_select(0, idx);
      torch::Tensor yb = y_.index_select(0, idx);
      opt_->zero_grad();
      torch::Tensor loss = F::cross_entropy(model_->Forward(xb), yb);
      loss.backward();
      opt_->step();
      ++steps;
      t = Now();
    } while (t < deadline);
    r.wall = t - t0;
    r.cpu = ProcessCpu() - c0;
    r.samples = static_cast<double>(steps * batch_);
    return r;
  }

 private:
  std::unique_ptr<model::Model> model_;
  torch::Tensor x_, y_;
  int64_t batch_;
  std::unique_ptr<torch::optim::SGD> opt_;
};

// A Trainer driven through TrainStepsForBenchmark on the calling thread.
class BenchTrainer {
 public:
  // `fresh_budget`: when > 0, steps a trainer may run before its fresh rows
  // run out; a new trainer is then created (untimed) so every timed batch is
  // the fresh+replay mix. 0: one trainer forever (steady state: replay only).
  // `drain_steps`: untimed steps after creation that use up the fresh rows
  // (steady state only).
  BenchTrainer(train::TrainerOptions options, data::ExampleStore& store, std::string dir,
               int64_t fresh_budget, int64_t drain_steps)
      : options_(std::move(options)), store_(store), dir_(std::move(dir)),
        fresh_budget_(fresh_budget), drain_steps_(drain_steps) {}

  absl::Status Init() {
    MYCEL_RETURN_IF_ERROR(Recreate());
    return trainer_->TrainStepsForBenchmark(drain_steps_);
  }

  Round Run(double seconds) {
    Round r;
    double wall = 0, cpu = 0;
    int64_t steps = 0;
    while (wall < seconds) {
      int64_t k = chunk_;
      if (fresh_budget_ > 0) {
        if (left_ < 1) {
          absl::Status s = Recreate();  // untimed
          if (!s.ok()) Die("recreating trainer: " + std::string(s.message()));
        }
        k = std::min(k, left_);
      }
      const double c0 = ProcessCpu(), t0 = Now();
      absl::Status s = trainer_->TrainStepsForBenchmark(k);
      const double dt = Now() - t0;
      cpu += ProcessCpu() - c0;
      if (!s.ok()) Die("TrainStepsForBenchmark: " + std::string(s.message()));
      wall += dt;
      steps += k;
      left_ -= k;
      // Calls of ~0.25 s: the per-call store refresh is then about as rare as
      // the daemon's (once a second), and the clock check is negligible.
      if (dt > 0) chunk_ = std::clamp<int64_t>(static_cast<int64_t>(k * 0.25 / dt), 1, 1 << 20);
    }
    r.wall = wall;
    r.cpu = cpu;
    r.samples = static_cast<double>(steps * options_.training.batch_size);
    return r;
  }

  train::TrainerStats Stats() const { return trainer_->Stats(); }

 private:
  [[noreturn]] static void Die(const std::string& what) {
    std::cerr << "trainer_bench: " << what << "\n";
    std::exit(1);
  }

  absl::Status Recreate() {
    trainer_.reset();  // writes its shutdown checkpoint
    checkpointer_.reset();
    train::CheckpointerOptions co;
    co.dir = dir_;
    auto ck = train::Checkpointer::Open(co);
    if (!ck.ok()) return ck.status();
    checkpointer_ = std::move(*ck);
    auto t = train::Trainer::Create(options_, store_, *checkpointer_, policy_);
    if (!t.ok()) return t.status();
    trainer_ = std::move(*t);
    // Loads every store row into the sampler now, outside the timed calls.
    absl::Status s = trainer_->TrainStepsForBenchmark(0);
    if (!s.ok()) return s;
    left_ = fresh_budget_;
    return absl::OkStatus();
  }

  train::TrainerOptions options_;
  data::ExampleStore& store_;
  std::string dir_;
  int64_t fresh_budget_;
  int64_t drain_steps_;
  int64_t left_ = 0;
  int64_t chunk_ = 16;
  train::PausePolicy policy_;
  std::unique_ptr<train::Checkpointer> checkpointer_;
  std::unique_ptr<train::Trainer> trainer_;
};

// The daemon's trainer thread, resumed for a round and paused between rounds.
class LoopTrainer {
 public:
  LoopTrainer(train::TrainerOptions options, data::ExampleStore& store, std::string dir,
              int64_t drain_steps)
      : options_(std::move(options)), store_(store), dir_(std::move(dir)),
        drain_steps_(drain_steps), policy_(/*paused=*/true) {}

  // Starts the thread and lets it train (untimed) until its fresh rows are used up.
  absl::Status Init() {
    train::CheckpointerOptions co;
    co.dir = dir_;
    auto ck = train::Checkpointer::Open(co);
    if (!ck.ok()) return ck.status();
    checkpointer_ = std::move(*ck);
    auto t = train::Trainer::Create(options_, store_, *checkpointer_, policy_);
    if (!t.ok()) return t.status();
    trainer_ = std::move(*t);
    trainer_->Start();
    policy_.SetPaused(false);
    trainer_->Wake();
    const double give_up = Now() + 300;
    while (trainer_->Stats().steps < drain_steps_ && Now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Pause(give_up);
    return absl::OkStatus();
  }

  Round Run(double seconds) {
    policy_.SetPaused(false);
    trainer_->Wake();
    // Wait for the thread to be training (the first resume also loads the store).
    const double give_up = Now() + 120;
    int64_t s0 = trainer_->Stats().samples_trained;
    while (trainer_->Stats().samples_trained == s0 && Now() < give_up) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    s0 = trainer_->Stats().samples_trained;
    const double c0 = ProcessCpu(), t0 = Now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const int64_t s1 = trainer_->Stats().samples_trained;
    Round r;
    r.wall = Now() - t0;
    r.cpu = ProcessCpu() - c0;
    r.samples = static_cast<double>(s1 - s0);
    Pause(give_up);
    return r;
  }

  void Stop() {
    if (trainer_) (void)trainer_->Stop();
  }

 private:
  void Pause(double give_up) {
    policy_.SetPaused(true);
    trainer_->Wake();
    // The loop re-reads the policy within 0.2 s; wait so the next contender runs alone.
    while (trainer_->Stats().state == "training" && Now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  train::TrainerOptions options_;
  data::ExampleStore& store_;
  std::string dir_;
  int64_t drain_steps_;
  train::PausePolicy policy_;
  std::unique_ptr<train::Checkpointer> checkpointer_;
  std::unique_ptr<train::Trainer> trainer_;
};

// trainer_bench.py --serve as a child process: "run S" → "result SAMPLES WALL CPU".
class PythonWorker {
 public:
  ~PythonWorker() { Close(); }

  // Starts the worker; returns an empty string on success or why not.
  std::string Start(const std::string& python, const std::vector<std::string>& args) {
    int in_pipe[2], out_pipe[2];
    if (pipe(in_pipe) != 0 || pipe(out_pipe) != 0) return "pipe failed";
    pid_ = fork();
    if (pid_ < 0) return "fork failed";
    if (pid_ == 0) {
      dup2(in_pipe[0], 0);
      dup2(out_pipe[1], 1);
      close(in_pipe[0]); close(in_pipe[1]); close(out_pipe[0]); close(out_pipe[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(python.c_str()));
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    to_ = fdopen(in_pipe[1], "w");
    from_ = fdopen(out_pipe[0], "r");
    std::string line = ReadLine();
    if (line.rfind("ready ", 0) != 0) {
      Close();
      return "worker did not start (" + (line.empty() ? std::string("no output") : line) + ")";
    }
    banner_ = line.substr(6);
    return "";
  }

  std::optional<Round> Run(double seconds) {
    if (!to_) return std::nullopt;
    std::fprintf(to_, "run %.6f\n", seconds);
    std::fflush(to_);
    std::istringstream in(ReadLine());
    std::string word;
    Round r;
    if (!(in >> word >> r.samples >> r.wall >> r.cpu) || word != "result") return std::nullopt;
    return r;
  }

  const std::string& banner() const { return banner_; }

  void Close() {
    if (to_) {
      std::fputs("quit\n", to_);
      std::fclose(to_);
      to_ = nullptr;
    }
    if (from_) {
      std::fclose(from_);
      from_ = nullptr;
    }
    if (pid_ > 0) {
      int status;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

 private:
  std::string ReadLine() {
    std::string line;
    int c;
    while (from_ && (c = std::fgetc(from_)) != EOF && c != '\n') line.push_back(static_cast<char>(c));
    return line;
  }

  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::string banner_;
};

std::string FindPython(const Args& args, std::vector<std::string>* tried) {
  std::vector<std::string> candidates;
  if (!args.python_bin.empty()) {
    candidates.push_back(args.python_bin);
  } else {
    if (const char* env = std::getenv("MYCEL_PYTHON"); env && *env) candidates.push_back(env);
    // A pyenv/venv python3 first on PATH often lacks the distribution's python3-torch.
    candidates.push_back("python3");
    candidates.push_back("/usr/bin/python3");
  }
  for (const auto& c : candidates) {
    tried->push_back(c);
    std::string cmd = "'" + c + "' -c 'import torch' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return c;
  }
  return "";
}

// Microseconds per call of fn, over about `seconds`.
double TimePerCall(double seconds, const std::function<void()>& fn) {
  int64_t calls = 0;
  const double t0 = Now();
  double t = t0;
  do {
    for (int i = 0; i < 16; ++i) fn();
    calls += 16;
    t = Now();
  } while (t - t0 < seconds);
  return (t - t0) / calls * 1e6;
}

// The parts of one step, timed one at a time on this thread: what the trainer
// does (Sampler::NextBatch into reused tensors, then Loss/backward/step/item)
// against what the bare loop does (randint + index_select, then the same compute).
void TimePieces(const Args& args, const train::TrainerOptions& topt, data::ExampleStore& store,
                const torch::Tensor& x, const torch::Tensor& y, int64_t drain_steps) {
  namespace F = torch::nn::functional;
  const double s = std::max(0.05, args.seconds / 2);
  const int64_t b = args.batch;
  data::SamplerOptions so;
  so.shape = data::ExampleShape{};
  so.capacity = topt.training.max_examples;
  so.replay_fraction = topt.training.replay_fraction;
  so.seed = topt.model.seed;
  data::Sampler sampler(so);
  if (!sampler.Refresh(store).ok()) return;
  torch::Tensor xb = torch::empty({b, 784}, torch::kFloat), yb = torch::empty({b}, torch::kLong);
  float* xp = xb.data_ptr<float>();
  int64_t* yp = yb.data_ptr<int64_t>();
  for (int64_t i = 0; i < drain_steps; ++i) sampler.NextBatch(b, xp, yp);
  const double t_sampler = TimePerCall(s, [&] { sampler.NextBatch(b, xp, yp); });
  const int64_t n = x.size(0);
  const double t_index = TimePerCall(s, [&] {
    torch::Tensor idx = torch::randint(n, {b}, torch::kLong);
    torch::Tensor a = x.index_select(0, idx), c = y.index_select(0, idx);
  });
  auto m = model::Model::Create(topt.model);
  if (!m.ok()) return;
  std::vector<torch::Tensor> params;
  for (const auto& p : (*m)->parameters()) params.push_back(p.tensor);
  torch::optim::SGD opt(params, torch::optim::SGDOptions(args.lr).momentum(args.momentum));
  torch::Tensor loss;
  const double t_forward = TimePerCall(s, [&] {
    opt.zero_grad();
    loss = (*m)->Loss(xb, yb);
  });
  const double t_compute = TimePerCall(s, [&] {
    opt.zero_grad();
    loss = (*m)->Loss(xb, yb);
    loss.backward();
    opt.step();
  });
  const double t_item = TimePerCall(s, [&] { (void)loss.item<double>(); });
  std::mutex mu;
  const double t_mutex = TimePerCall(s, [&] { std::lock_guard<std::mutex> l(mu); });
  std::printf("\npieces (us per batch of %lld, one at a time):\n", static_cast<long long>(b));
  std::printf("  trainer sampling  Sampler::NextBatch (replay, u8 -> float)   %8.1f\n", t_sampler);
  std::printf("  bare sampling     randint + 2x index_select                  %8.1f\n", t_index);
  std::printf("  zero_grad + forward + loss                                   %8.1f\n", t_forward);
  std::printf("  compute           zero_grad + Loss + backward + SGD step     %8.1f\n", t_compute);
  std::printf("  loss.item + one uncontended mutex (trainer only)             %8.1f\n", t_item + t_mutex);
  std::printf("  => trainer step ~%.1f us (%.0f samples/s), bare step ~%.1f us (%.0f samples/s)\n",
              t_sampler + t_compute + t_item + t_mutex, b * 1e6 / (t_sampler + t_compute + t_item + t_mutex),
              t_index + t_compute, b * 1e6 / (t_index + t_compute));
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Args args;
  if (!ParseArgs(argc, argv, &args)) return 2;
  (void)SetLogLevel("warn");
  torch::set_num_threads(args.threads);

  // ---- data ----
  auto ds = LoadDataset(args);
  if (!ds.ok()) {
    std::cerr << "trainer_bench: loading data: " << ds.status().message() << "\n";
    return 1;
  }
  const int64_t n = static_cast<int64_t>(ds->examples.size());

  const test::TempDir tmp_dir("trainer_bench");
  const std::string tmp = tmp_dir.path();

  train::TrainerOptions topt;
  topt.model.kind = "mlp";
  topt.model.input_shape = {1, 28, 28};
  topt.model.classes = 10;
  topt.model.hidden = {128};
  topt.model.seed = 7;
  topt.training.optimizer = "sgd";
  topt.training.lr = args.lr;
  topt.training.momentum = args.momentum;
  topt.training.batch_size = args.batch;
  topt.training.replay_fraction = args.replay_fraction;
  topt.cpu.threads = args.threads;
  topt.training.checkpoint_interval_s = 1e9;
  topt.training.eval_interval_s = 1e9;
  topt.lowest_priority = false;
  topt.restore = false;

  data::ExampleStoreOptions so;
  so.path = tmp + "/examples.db";
  so.max_examples = topt.training.max_examples;
  so.validation_fraction = topt.training.validation_fraction;
  auto store = data::ExampleStore::Open(so);
  if (!store.ok()) {
    std::cerr << "trainer_bench: " << store.status().message() << "\n";
    return 1;
  }
  auto added = (*store)->Add(ds->examples);
  if (!added.ok()) {
    std::cerr << "trainer_bench: storing examples: " << added.status().message() << "\n";
    return 1;
  }
  const int64_t train_rows = (*store)->Count(data::Split::kTrain);

  // ---- bare loop: same model (Model::Create), all examples preloaded as float tensors ----
  auto bare_model = model::Model::Create(topt.model);
  if (!bare_model.ok()) {
    std::cerr << "trainer_bench: " << bare_model.status().message() << "\n";
    return 1;
  }
  torch::Tensor x = torch::empty({n, 784}, torch::kFloat);
  torch::Tensor y = torch::empty({n}, torch::kLong);
  {
    float* xp = x.data_ptr<float>();
    int64_t* yp = y.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const auto& e = ds->examples[static_cast<size_t>(i)];
      yp[i] = e.label;
      for (int64_t j = 0; j < 784; ++j) xp[i * 784 + j] = static_cast<uint8_t>(e.data[j]) / 255.0f;
    }
  }
  ds->examples.clear();
  ds->examples.shrink_to_fit();
  BareLoop bare(std::move(*bare_model), x, y, args);

  std::vector<Contender> contenders;
  contenders.push_back({"bare", [&](double s) { return bare.Run(s); }, {}});

  const int64_t fresh_per_batch =
      std::llround(static_cast<double>(args.batch) * (1.0 - args.replay_fraction));
  // Steps after which every fresh row has been trained once (then batches are pure replay).
  const int64_t drain_steps =
      fresh_per_batch > 0 ? (train_rows + fresh_per_batch - 1) / fresh_per_batch + 1 : 1;
  BenchTrainer trainer(topt, **store, tmp + "/ckpt-trainer", 0, drain_steps);
  if (auto s = trainer.Init(); !s.ok()) {
    std::cerr << "trainer_bench: creating trainer: " << s.message() << "\n";
    return 1;
  }
  contenders.push_back({"trainer", [&](double s) { return trainer.Run(s); }, {}});

  std::unique_ptr<BenchTrainer> mix;
  std::unique_ptr<LoopTrainer> loop;
  auto wanted = [&](const char* name) {
    return args.only.empty() || std::find(args.only.begin(), args.only.end(), name) != args.only.end();
  };
  if (!wanted("python")) args.python = false;
  if (args.variants) {
    if (fresh_per_batch > 0 && wanted("trainer-mix")) {
      mix = std::make_unique<BenchTrainer>(topt, **store, tmp + "/ckpt-mix",
                                           std::max<int64_t>(1, train_rows / fresh_per_batch - 1), 0);
      if (auto s = mix->Init(); !s.ok()) {
        std::cerr << "trainer_bench: creating trainer: " << s.message() << "\n";
        return 1;
      }
      contenders.push_back({"trainer-mix", [&](double s) { return mix->Run(s); }, {}});
    }
    if (wanted("trainer-loop")) {
      loop = std::make_unique<LoopTrainer>(topt, **store, tmp + "/ckpt-loop", drain_steps);
      if (auto s = loop->Init(); !s.ok()) {
        std::cerr << "trainer_bench: creating trainer: " << s.message() << "\n";
        return 1;
      }
      contenders.push_back({"trainer-loop", [&](double s) { return loop->Run(s); }, {}});
    }
  }

  // ---- python ----
  PythonWorker py;
  std::string python_note = "skipped (--no-python)";
  if (args.python) {
    std::vector<std::string> tried;
    std::string bin = FindPython(args, &tried);
    if (bin.empty()) {
      python_note = "skipped (no python3 with torch; tried";
      for (const auto& t : tried) python_note += " " + t;
      python_note += "; set MYCEL_PYTHON or install python3-torch)";
    } else if (!fs::exists(args.python_script)) {
      python_note = "skipped (" + args.python_script + " not found)";
    } else {
      std::vector<std::string> pargs = {
          args.python_script, "--serve", "--threads", std::to_string(args.threads),
          "--batch", std::to_string(args.batch), "--lr", std::to_string(args.lr),
          "--momentum", std::to_string(args.momentum), "--data-dir", args.data_dir,
          "--limit", std::to_string(args.limit)};
      if (ds->source.rfind("synthetic", 0) == 0) pargs.push_back("--synthetic");
      std::string err = py.Start(bin, pargs);
      if (!err.empty()) {
        python_note = "skipped (" + bin + ": " + err + ")";
      } else {
        python_note = bin + " " + args.python_script + " (" + py.banner() + ")";
        contenders.push_back({"python", [&](double s) {
                                auto r = py.Run(s);
                                if (!r) {
                                  std::cerr << "trainer_bench: python worker failed\n";
                                  std::exit(1);
                                }
                                return *r;
                              }, {}});
      }
    }
  }

  if (!args.only.empty()) {
    std::vector<Contender> kept;
    for (auto& c : contenders) {
      if (std::find(args.only.begin(), args.only.end(), c.name) != args.only.end()) kept.push_back(c);
    }
    contenders.swap(kept);
    if (contenders.empty()) {
      std::cerr << "trainer_bench: --only matched no contender\n";
      return 2;
    }
  }

  // ---- header ----
  std::cout << "trainer_bench: mlp 784-128-10, batch " << args.batch << ", " << args.threads
            << " thread(s) (torch reports " << torch::get_num_threads() << "), SGD lr " << args.lr
            << " momentum " << args.momentum << ", replay_fraction " << args.replay_fraction << "\n";
  std::cout << "data: " << n << " examples from " << ds->source << " (" << train_rows
            << " in the store's train split)\n";
  auto blas = MappedBlas();
  bool openblas = false;
  for (const auto& b : blas) openblas |= b.find("openblas") != std::string::npos;
  std::cout << "BLAS: " << (openblas ? "OpenBLAS" : "NOT OpenBLAS (reference BLAS is ~16x slower)")
            << " —";
  if (blas.empty()) std::cout << " no *blas* library mapped";
  for (const auto& b : blas) std::cout << " " << b;
  std::cout << "\n";
  std::cout << "python: " << python_note << "\n";
  std::cout << "load average at start: " << Trim(test::ReadFileToString("/proc/loadavg")) << " ("
            << std::thread::hardware_concurrency() << " cpus)\n";
  std::cout << "rounds: " << args.rounds << " x " << args.seconds << " s per contender, interleaved, after "
            << args.warmup << " s warm-up each\n"
            << std::flush;

  // ---- warm-up, then interleaved rounds (the starting contender rotates) ----
  for (auto& c : contenders) c.run(args.warmup);
  const size_t k = contenders.size();
  for (int r = 0; r < args.rounds; ++r) {
    for (size_t i = 0; i < k; ++i) {
      Contender& c = contenders[(r + i) % k];
      c.rounds.push_back(c.run(args.seconds));
    }
  }
  if (loop) loop->Stop();
  py.Close();
  if (args.pieces) TimePieces(args, topt, **store, x, y, drain_steps);

  // ---- report ----
  const Contender* bare_c = nullptr;
  for (const auto& c : contenders) {
    if (c.name == "bare") bare_c = &c;
  }
  const double bare_rate = bare_c ? bare_c->median_rate() : NAN;
  // per cpu-s: samples per CPU-second this process got; on a loaded machine it
  // discounts the scheduler's share (cpu/wall < 1), not cache interference.
  const double bare_cpu_rate = bare_c ? bare_c->median_cpu_rate() : NAN;
  std::printf("\n%-14s %10s %10s %10s %8s %8s %16s %10s %8s\n", "contender", "median/s", "min/s",
              "max/s", "cpu/wall", "vs bare", "round ratios", "per cpu-s", "vs bare");
  for (const auto& c : contenders) {
    std::vector<double> rates, util, paired;
    for (size_t i = 0; i < c.rounds.size(); ++i) {
      rates.push_back(c.rounds[i].rate());
      util.push_back(c.rounds[i].wall > 0 ? c.rounds[i].cpu / c.rounds[i].wall : 0);
      if (bare_c) paired.push_back(c.rounds[i].rate() / bare_c->rounds[i].rate());
    }
    const double med = Median(rates);
    char range[48] = "";
    if (bare_c && &c != bare_c) {
      std::snprintf(range, sizeof range, "%.2f..%.2f", *std::min_element(paired.begin(), paired.end()),
                    *std::max_element(paired.begin(), paired.end()));
    }
    std::printf("%-14s %10.0f %10.0f %10.0f %8.2f %8.2f %16s %10.0f %8.2f\n", c.name.c_str(), med,
                *std::min_element(rates.begin(), rates.end()),
                *std::max_element(rates.begin(), rates.end()), Median(util), med / bare_rate, range,
                c.median_cpu_rate(), c.median_cpu_rate() / bare_cpu_rate);
  }
  std::cout << "load average at end: " << Trim(test::ReadFileToString("/proc/loadavg")) << "\n";

  auto rate_of = [&](const std::string& name) -> double {
    for (const auto& c : contenders) {
      if (c.name == name) return c.median_rate();
    }
    return NAN;
  };
  const double trainer_rate = rate_of("trainer");
  if (!bare_c || std::isnan(trainer_rate)) {
    std::cout << "(no ratio line: --only left out bare or trainer)" << std::endl;
    return 0;
  }
  std::ostringstream line;
  char ratio[32];
  auto fmt_ratio = [&](double r) {
    std::snprintf(ratio, sizeof ratio, "%.2f", r);
    return std::string(ratio);
  };
  line << "trainer/bare ratio: " << fmt_ratio(trainer_rate / bare_rate) << " (trainer "
       << Kilo(trainer_rate) << " samples/s, bare " << Kilo(bare_rate) << " samples/s";
  if (double r = rate_of("trainer-mix"); !std::isnan(r)) line << ", trainer-mix/bare " << fmt_ratio(r / bare_rate);
  if (double r = rate_of("trainer-loop"); !std::isnan(r)) line << ", trainer-loop/bare " << fmt_ratio(r / bare_rate);
  if (double r = rate_of("python"); !std::isnan(r)) {
    line << ", python " << Kilo(r) << " samples/s, python/bare " << fmt_ratio(r / bare_rate);
  }
  line << ")";
  std::cout << line.str() << std::endl;
  return 0;
}
