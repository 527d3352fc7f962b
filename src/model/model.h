// Model: the trainable network behind one of the built-in kinds or a user's
// TorchScript module, with the shared/local split of its parameters.
//
// Kinds (config [model] kind):
//   mlp         — flatten → Linear+ReLU per `hidden` width → Linear(classes)
//   cnn         — 2×(Conv3x3+ReLU+MaxPool2) (32, 64 channels) → Linear(hidden[0])+ReLU → Linear(classes);
//                 input_shape = {C, H, W}
//   char_lm     — byte Embedding(256, embedding) → GRU(hidden[0]) → Linear(256);
//                 predicts the next byte at every position
//   torchscript — a module scripted in PyTorch (`path`), forward(x: [B, *input_shape]) → logits [B, classes]
// Built-in kinds are native torch::nn modules (fastest to train: see the
// trainer benchmark); Export() writes every kind as TorchScript, so Python's
// torch.jit.load opens what the daemon trained.
//
// Parameters have stable dotted names ("fc0.weight"). Those starting with one
// of `local_layers` are local: they never leave the device. A prefix matches
// whole dotted components ("out" matches "out.weight", not "outer.bias"); one
// that matches no parameter is a Create() error. Fingerprint()
// hashes names, shapes and dtypes of the shared ones, so only models of the
// same architecture merge.
//
// libtorch exceptions stop here: every fallible call returns a Status. The
// hot-path tensor calls (Forward, Loss, Evaluate) return tensors instead: their
// inputs must match example_shape() (the data module guarantees it), and a
// mismatched one throws (c10::Error; std::runtime_error from the TorchScript
// interpreter), which the trainer treats as a bug.
// Thread-safety: a Model that is being trained or written has one user at a
// time (the trainer, under its model lock). One that nobody writes and that
// is in eval mode may run Forward from many threads at once under
// torch::NoGradGuard: the built-in kinds keep no state in their forward (no
// batch statistics, no embedding max_norm, dropout 0), which is how the
// trainer's inference copy serves predictions. A TorchScript module is as
// safe as its own forward (it must not write its attributes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

// The tensor type alone (at::Tensor, which torch::Tensor names): not
// <torch/torch.h>, which every includer would parse (nn, optim, data,
// serialize); the .cc files that build or run models include it themselves.
#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "data/example.h"
#include "model/options.h"

namespace mycel::model {

enum class Task { kClassify, kNextByte };

struct NamedTensor {
  std::string name;
  at::Tensor tensor;  // aliases the live parameter (no copy)
  bool shared = true;    // false: matched a local_layers prefix
};

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Builds the model from config; weights are initialised from options.seed
  // (identical on every node with the same config). torchscript loads `path`.
  static absl::StatusOr<std::unique_ptr<Model>> Create(const ModelOptions& options);

  const ModelOptions& options() const { return options_; }
  Task task() const { return task_; }
  const std::string& kind() const { return options_.kind; }
  // What an example must look like for this model (width = prod(input_shape), or context+1).
  data::ExampleShape example_shape() const;

  // Forward pass. Classify: x float [B, width] (flattened; reshaped inside) →
  // logits [B, classes]. NextByte: x int64 [B, T] → logits [B, T, 256].
  virtual at::Tensor Forward(const at::Tensor& x) = 0;
  // Cross-entropy loss of a batch. Classify: x [B, width], y int64 [B].
  // NextByte: tokens int64 [B, T+1] (y ignored; targets are tokens shifted by one).
  at::Tensor Loss(const at::Tensor& x, const at::Tensor& y);
  // The same loss per example, [B] (NextByte: the mean over its positions);
  // its mean is Loss. The balanced replay pool weighs rows by it.
  at::Tensor ExampleLosses(const at::Tensor& x, const at::Tensor& y);
  // Mean loss, correct predictions and count over a labelled set, without
  // gradients, in chunks of `chunk` rows. NextByte counts next-byte accuracy.
  // A classifier's x may be uint8 images, scaled by 1/255 chunk by chunk.
  // 256 rows bound the CNN's activations to ~25 MB per layer (1024 rows held
  // ~100 MB each, measured in tests/bench/memory_bench.sh).
  // A defined `logit_offset` ([classes] floats, classifiers only) is added to
  // every row's logits before the loss and the argmax (a class prior).
  struct EvalResult { double loss = 0; int64_t correct = 0; int64_t count = 0; };
  EvalResult Evaluate(const at::Tensor& x, const at::Tensor& y, int64_t chunk = 256,
                      const at::Tensor& logit_offset = {});

  virtual void SetTraining(bool training) = 0;
  virtual bool IsTraining() const = 0;  // a new Model is in training mode

  // All parameters in a stable order, aliasing the live tensors.
  const std::vector<NamedTensor>& parameters() const { return params_; }
  int64_t parameter_count() const;
  int64_t shared_parameter_count() const;
  // The shared parameters by layer, in parameters() order: each layer is the
  // run of shared tensors whose names agree up to the last dot ("fc0.weight"
  // and "fc0.bias" are layer "fc0"), with its number of values. The groups
  // federation trust is kept for.
  std::vector<std::pair<std::string, size_t>> SharedLayers() const;
  std::string Fingerprint() const;
  // What Fingerprint() hashes, readable: "kind mlp\n" then one line per
  // shared parameter, "name dtype shape" ("fc1.weight Float 128x784").
  // Sent beside the fingerprint, so a mismatch can say what differs.
  std::string Layout() const;

  // Writes the current weights as a TorchScript module to `path` (through a
  // temporary file and a rename). Built-in kinds export copies of the weights
  // under the same dotted names, a forward computing the same function (mlp and
  // cnn accept [B, *input_shape] or [B, width]), and the attributes
  // `mycel_kind` (str), `classes` (int) and `input_shape` (List[int]).
  virtual absl::Status Export(const std::string& path) = 0;

 protected:
  Model(const ModelOptions& options, Task task) : options_(options), task_(task) {}
  // Subclasses call this once their parameters exist.
  void SetParameters(std::vector<std::pair<std::string, at::Tensor>> named);

 private:
  ModelOptions options_;
  Task task_;
  std::vector<NamedTensor> params_;

  // The logits of a batch against their targets, rows aligned: Classify
  // [B, classes] and [B] (uint8 images scaled by 1/255); NextByte
  // [B*T, 256] and [B*T], each example's T positions in a run.
  struct Scored { at::Tensor logits, targets; };
  Scored Score(const at::Tensor& x, const at::Tensor& y);
};

// Serialises named tensors (any subset of the model's state) to bytes and
// back, in libtorch's archive format (dotted names as nested archives, the
// layout torch::save gives an nn::Module). Load checks names and shapes against
// `into` and copies values in place; a mismatch is an error naming the tensor.
absl::StatusOr<std::string> SaveTensors(const std::vector<NamedTensor>& tensors);
absl::Status LoadTensors(const std::string& bytes, const std::vector<NamedTensor>& into);

}  // namespace mycel::model
