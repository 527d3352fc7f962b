// bare_torch: the floor that memory_bench measures myceld against. A bare
// libtorch program that trains the daemon's built-in model (mlp 784-128-10,
// or cnn 32/64 channels → 128 → 10, as src/model/networks.cc builds them)
// with SGD at batch 64 on one intra-op thread, on as many 28×28 uint8 images
// as the daemon holds, kept as uint8 like the daemon's sampler keeps them.
// Nothing else: no store, no RPC, no validation, no checkpoints.
//
//   bare_torch mlp|cnn ROWS SECONDS
//
// Prints "ready" once its data is in memory, then "steps N" when it ends.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: bare_torch mlp|cnn ROWS SECONDS\n");
    return 2;
  }
  const std::string kind = argv[1];
  const int64_t rows = std::atoll(argv[2]);
  const double seconds = std::atof(argv[3]);
  if ((kind != "mlp" && kind != "cnn") || rows <= 0 || seconds <= 0) {
    std::fprintf(stderr, "bare_torch: bad arguments\n");
    return 2;
  }
  torch::manual_seed(1);
  torch::set_num_threads(1);
  torch::nn::Sequential net;
  if (kind == "mlp") {
    net = torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(784, 128), torch::nn::ReLU(),
                                torch::nn::Linear(128, 10));
  } else {
    net = torch::nn::Sequential(
        torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)), torch::nn::ReLU(),
        torch::nn::MaxPool2d(2), torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)),
        torch::nn::ReLU(), torch::nn::MaxPool2d(2), torch::nn::Flatten(), torch::nn::Linear(64 * 7 * 7, 128),
        torch::nn::ReLU(), torch::nn::Linear(128, 10));
  }
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05));
  const auto images = torch::randint(0, 256, {rows, 1, 28, 28}, torch::kUInt8);
  const auto labels = torch::randint(0, 10, {rows}, torch::kInt64);
  std::printf("ready\n");
  std::fflush(stdout);
  const auto start = std::chrono::steady_clock::now();
  int64_t steps = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    const auto idx = torch::randint(0, rows, {64}, torch::kInt64);
    const auto x = images.index_select(0, idx).to(torch::kFloat32).div_(255.0);
    const auto y = labels.index_select(0, idx);
    opt.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    ++steps;
  }
  std::printf("steps %lld\n", static_cast<long long>(steps));
  return 0;
}
