// The networks behind each kind: native torch::nn modules for mlp, cnn and
// char_lm (with a TorchScript twin written by Export), and the adapter around
// a user's TorchScript module.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/builtin_models.h"

namespace mycel::model::internal {
namespace {

constexpr int64_t kByteVocab = 256;

std::string ErrorText(const c10::Error& e) { return e.what_without_backtrace(); }

std::vector<std::pair<std::string, torch::Tensor>> NamedParameters(const torch::nn::Module& net) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : net.named_parameters(/*recurse=*/true)) named.emplace_back(item.key(), item.value());
  return named;
}

// Saves through a temporary file and a rename, so `path` is never half-written.
absl::Status SaveModule(const torch::jit::Module& module, const std::string& path) {
  const std::string tmp = path + ".tmp";
  try {
    module.save(tmp);
  } catch (const c10::Error& e) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("exporting model to '", path, "': ", ErrorText(e)));
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("exporting model to '", path, "': ", e.what()));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("exporting model: cannot rename onto '", path, "'"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Deterministic initialisation. Every node of a federation must start from the
// same weights, so they are drawn from a generator seeded with options.seed
// (never the global one, which other threads may be using). The distributions
// are PyTorch's defaults: U(±1/sqrt(fan_in)) for Linear and Conv2d (what
// kaiming_uniform(a=√5) reduces to), N(0, 1) for Embedding, U(±1/sqrt(hidden))
// for GRU.

void InitFanIn(const torch::Tensor& weight, const torch::Tensor& bias, at::Generator& gen) {
  const int64_t fan_in = weight.numel() / weight.size(0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound, gen);
  if (bias.defined()) bias.uniform_(-bound, bound, gen);
}

void InitLinear(torch::nn::Linear& layer, at::Generator& gen) { InitFanIn(layer->weight, layer->bias, gen); }
void InitConv(torch::nn::Conv2d& layer, at::Generator& gen) { InitFanIn(layer->weight, layer->bias, gen); }

// ---------------------------------------------------------------------------
// Export: a torch::jit::Module holding copies of the weights under the same
// dotted names (one submodule per layer) and a forward written in TorchScript
// with the same aten ops the native module calls, so outputs match exactly.

absl::Status ExportNative(const Model& model, const std::string& class_name, const std::string& source,
                          const std::string& path) {
  const ModelOptions& o = model.options();
  try {
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module root(c10::QualifiedName(absl::StrCat("mycel.", class_name)), cu);
    std::vector<std::pair<std::string, torch::jit::Module>> layers;
    for (const NamedTensor& p : model.parameters()) {
      const size_t dot = p.name.find('.');
      const std::string layer = p.name.substr(0, dot);
      const std::string leaf = p.name.substr(dot + 1);
      auto it = std::find_if(layers.begin(), layers.end(), [&](const auto& l) { return l.first == layer; });
      if (it == layers.end()) {
        torch::jit::Module m(c10::QualifiedName(absl::StrCat("mycel.", class_name, "_", layer)), cu);
        m.register_attribute("training", c10::BoolType::get(), false);
        it = layers.emplace(layers.end(), layer, std::move(m));
      }
      torch::Tensor copy = p.tensor.detach().clone();
      copy.set_requires_grad(true);
      it->second.register_parameter(leaf, copy, /*is_buffer=*/false);
    }
    for (auto& [name, m] : layers) root.register_module(name, m);
    // Python's train()/eval() look for `training` on every module.
    root.register_attribute("training", c10::BoolType::get(), false);
    root.register_attribute("mycel_kind", c10::StringType::get(), o.kind);
    const bool text = model.task() == Task::kNextByte;
    root.register_attribute("classes", c10::IntType::get(), text ? kByteVocab : o.classes);
    root.register_attribute("input_shape", c10::ListType::ofInts(),
                            c10::List<int64_t>(text ? std::vector<int64_t>{o.context} : o.input_shape));
    // What the module expects and returns, for whoever loads it without the README.
    root.register_attribute(
        "mycel_input", c10::StringType::get(),
        std::string(text ? "int64 byte values, shape [N, context]"
                         : "float32, shape [N, *input_shape] (or [N, prod(input_shape)]); images as mycel "
                           "trains on them: uint8 pixels divided by 255, in [0, 1]"));
    root.register_attribute("mycel_output", c10::StringType::get(),
                            std::string(text ? "logits, shape [N, context, 256]: softmax over the last axis"
                                             : "logits, shape [N, classes]: softmax for probabilities"));
    root.register_attribute("class_names", c10::ListType::ofStrings(), c10::List<std::string>(o.class_names));
    root.define(source);
    return SaveModule(root, path);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("exporting ", o.kind, " model to '", path, "': ", ErrorText(e)));
  }
}

// Shared by the native kinds: train/eval mode and parameter listing.
class NativeModel : public Model {
 public:
  void SetTraining(bool training) override { module_->train(training); }
  bool IsTraining() const override { return module_->is_training(); }

 protected:
  NativeModel(const ModelOptions& options, Task task, std::shared_ptr<torch::nn::Module> net)
      : Model(options, task), module_(std::move(net)) {
    SetParameters(NamedParameters(*module_));
  }

 private:
  std::shared_ptr<torch::nn::Module> module_;
};

// --- mlp --------------------------------------------------------------------

class MlpNet : public torch::nn::Module {
 public:
  MlpNet(const ModelOptions& o, at::Generator& gen) {
    int64_t width = 1;
    for (int64_t d : o.input_shape) width *= d;
    for (size_t i = 0; i < o.hidden.size(); ++i) {
      hidden_.push_back(register_module(absl::StrCat("fc", i), torch::nn::Linear(width, o.hidden[i])));
      width = o.hidden[i];
    }
    out_ = register_module("out", torch::nn::Linear(width, o.classes));
    torch::NoGradGuard no_grad;
    for (auto& layer : hidden_) InitLinear(layer, gen);
    InitLinear(out_, gen);
  }

  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = input.reshape({input.size(0), -1});
    for (auto& layer : hidden_) x = torch::relu(layer->forward(x));
    return out_->forward(x);
  }

 private:
  std::vector<torch::nn::Linear> hidden_;
  torch::nn::Linear out_{nullptr};
};

class MlpModel : public NativeModel {
 public:
  MlpModel(const ModelOptions& o, std::shared_ptr<MlpNet> net)
      : NativeModel(o, Task::kClassify, net), net_(std::move(net)) {}

  torch::Tensor Forward(const torch::Tensor& x) override { return net_->forward(x.to(torch::kFloat)); }

  absl::Status Export(const std::string& path) override {
    std::ostringstream src;
    src << "def forward(self, x):\n"
        << "    x = x.reshape([x.size(0), -1])\n";
    for (size_t i = 0; i < options().hidden.size(); ++i) {
      src << "    x = torch.relu(torch.linear(x, self.fc" << i << ".weight, self.fc" << i << ".bias))\n";
    }
    src << "    return torch.linear(x, self.out.weight, self.out.bias)\n";
    return ExportNative(*this, "Mlp", src.str(), path);
  }

 private:
  std::shared_ptr<MlpNet> net_;
};

// --- cnn --------------------------------------------------------------------

class CnnNet : public torch::nn::Module {
 public:
  CnnNet(const ModelOptions& o, at::Generator& gen)
      : shape_(o.input_shape),
        conv0_(register_module("conv0", torch::nn::Conv2d(torch::nn::Conv2dOptions(shape_[0], 32, 3).padding(1)))),
        conv1_(register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)))),
        fc0_(register_module("fc0", torch::nn::Linear(64 * (shape_[1] / 4) * (shape_[2] / 4), o.hidden[0]))),
        out_(register_module("out", torch::nn::Linear(o.hidden[0], o.classes))) {
    torch::NoGradGuard no_grad;
    InitConv(conv0_, gen);
    InitConv(conv1_, gen);
    InitLinear(fc0_, gen);
    InitLinear(out_, gen);
  }

  torch::Tensor forward(const torch::Tensor& input) {
    torch::Tensor x = input.reshape({input.size(0), shape_[0], shape_[1], shape_[2]});
    x = torch::max_pool2d(torch::relu(conv0_->forward(x)), {2, 2}, {2, 2});
    x = torch::max_pool2d(torch::relu(conv1_->forward(x)), {2, 2}, {2, 2});
    x = torch::relu(fc0_->forward(x.reshape({x.size(0), -1})));
    return out_->forward(x);
  }

 private:
  std::vector<int64_t> shape_;
  torch::nn::Conv2d conv0_, conv1_;
  torch::nn::Linear fc0_, out_;
};

class CnnModel : public NativeModel {
 public:
  CnnModel(const ModelOptions& o, std::shared_ptr<CnnNet> net)
      : NativeModel(o, Task::kClassify, net), net_(std::move(net)) {}

  torch::Tensor Forward(const torch::Tensor& x) override { return net_->forward(x.to(torch::kFloat)); }

  absl::Status Export(const std::string& path) override {
    const auto& s = options().input_shape;
    std::ostringstream src;
    src << "def forward(self, x):\n"
        << "    x = x.reshape([x.size(0), " << s[0] << ", " << s[1] << ", " << s[2] << "])\n";
    for (int i = 0; i < 2; ++i) {
      src << "    x = torch.conv2d(x, self.conv" << i << ".weight, self.conv" << i
          << ".bias, [1, 1], [1, 1], [1, 1], 1)\n"
          << "    x = torch.max_pool2d(torch.relu(x), [2, 2], [2, 2], [0, 0], [1, 1], False)\n";
    }
    src << "    x = torch.relu(torch.linear(x.reshape([x.size(0), -1]), self.fc0.weight, self.fc0.bias))\n"
        << "    return torch.linear(x, self.out.weight, self.out.bias)\n";
    return ExportNative(*this, "Cnn", src.str(), path);
  }

 private:
  std::shared_ptr<CnnNet> net_;
};

// --- char_lm ----------------------------------------------------------------

class CharLmNet : public torch::nn::Module {
 public:
  CharLmNet(const ModelOptions& o, at::Generator& gen)
      : embed_(register_module("embed", torch::nn::Embedding(kByteVocab, o.embedding))),
        gru_(register_module("gru",
                             torch::nn::GRU(torch::nn::GRUOptions(o.embedding, o.hidden[0]).batch_first(true)))),
        head_(register_module("head", torch::nn::Linear(o.hidden[0], kByteVocab))) {
    torch::NoGradGuard no_grad;
    embed_->weight.normal_(0.0, 1.0, gen);
    const double bound = 1.0 / std::sqrt(static_cast<double>(o.hidden[0]));
    for (auto& w : gru_->parameters()) w.uniform_(-bound, bound, gen);
    InitLinear(head_, gen);
  }

  torch::Tensor forward(const torch::Tensor& tokens) {
    torch::Tensor h = std::get<0>(gru_->forward(embed_->forward(tokens)));
    return head_->forward(h);
  }

 private:
  torch::nn::Embedding embed_;
  torch::nn::GRU gru_;
  torch::nn::Linear head_;
};

class CharLmModel : public NativeModel {
 public:
  CharLmModel(const ModelOptions& o, std::shared_ptr<CharLmNet> net)
      : NativeModel(o, Task::kNextByte, net), net_(std::move(net)) {}

  torch::Tensor Forward(const torch::Tensor& x) override { return net_->forward(x.to(torch::kLong)); }

  absl::Status Export(const std::string& path) override {
    // torch.gru with the arguments the native GRU passes: biases, 1 layer,
    // no dropout, unidirectional, batch_first; h0 = zeros as it makes them.
    std::ostringstream src;
    src << "def forward(self, x):\n"
        << "    e = torch.embedding(self.embed.weight, x)\n"
        << "    h0 = torch.zeros([1, x.size(0), " << options().hidden[0] << "], dtype=e.dtype)\n"
        << "    out, hn = torch.gru(e, h0, [self.gru.weight_ih_l0, self.gru.weight_hh_l0, "
           "self.gru.bias_ih_l0, self.gru.bias_hh_l0], True, 1, 0.0, False, False, True)\n"
        << "    return torch.linear(out, self.head.weight, self.head.bias)\n";
    return ExportNative(*this, "CharLm", src.str(), path);
  }

 private:
  std::shared_ptr<CharLmNet> net_;
};

// --- torchscript ------------------------------------------------------------

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(const ModelOptions& o, torch::jit::Module module)
      : Model(o, Task::kClassify), module_(std::move(module)) {
    batch_shape_.push_back(0);
    batch_shape_.insert(batch_shape_.end(), o.input_shape.begin(), o.input_shape.end());
    std::vector<std::pair<std::string, torch::Tensor>> named;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) {
      p.value.set_requires_grad(true);
      named.emplace_back(p.name, p.value);
    }
    SetParameters(std::move(named));
  }

  torch::Tensor Forward(const torch::Tensor& x) override {
    std::vector<int64_t> shape = batch_shape_;
    shape[0] = x.size(0);
    return module_.forward({x.to(torch::kFloat).reshape(shape)}).toTensor();
  }

  void SetTraining(bool training) override { module_.train(training); }
  bool IsTraining() const override { return module_.is_training(); }

  // The parameters were updated in place, so the module saves the current weights.
  absl::Status Export(const std::string& path) override { return SaveModule(module_, path); }

 private:
  torch::jit::Module module_;
  std::vector<int64_t> batch_shape_;
};

}  // namespace

std::unique_ptr<Model> CreateMlp(const ModelOptions& options) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  return std::make_unique<MlpModel>(options, std::make_shared<MlpNet>(options, gen));
}

std::unique_ptr<Model> CreateCnn(const ModelOptions& options) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  return std::make_unique<CnnModel>(options, std::make_shared<CnnNet>(options, gen));
}

std::unique_ptr<Model> CreateCharLm(const ModelOptions& options) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  return std::make_unique<CharLmModel>(options, std::make_shared<CharLmNet>(options, gen));
}

absl::StatusOr<std::unique_ptr<Model>> CreateTorchScript(const ModelOptions& options) {
  const std::string& path = options.path;
  if (!std::ifstream(path).good()) {
    return absl::NotFoundError(absl::StrCat("model.path: cannot open TorchScript module '", path, "'"));
  }
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.path: '", path, "' is not a loadable TorchScript module: ", ErrorText(e)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.path: '", path, "' is not a loadable TorchScript module: ", e.what()));
  }
  std::vector<int64_t> probe_shape{2};
  probe_shape.insert(probe_shape.end(), options.input_shape.begin(), options.input_shape.end());
  const std::string probe = absl::StrCat("[", absl::StrJoin(probe_shape, ", "), "]");
  try {
    if (module.parameters(/*recurse=*/true).size() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.path: TorchScript module '", path, "' has no parameters to train"));
    }
    // One forward on zeros proves the module fits input_shape and classes
    // now, rather than as an exception in the middle of training.
    torch::NoGradGuard no_grad;
    module.eval();
    const c10::IValue out = module.forward({torch::zeros(probe_shape)});
    module.train(true);
    if (!out.isTensor()) {
      return absl::InvalidArgumentError(absl::StrCat("model.path: forward of '", path,
                                                     "' returns ", out.tagKind(), ", not a tensor"));
    }
    const torch::Tensor logits = out.toTensor();
    if (logits.dim() != 2 || logits.size(0) != 2 || logits.size(1) != options.classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.path: forward of '", path, "' maps input ", probe, " to shape [",
          absl::StrJoin(logits.sizes(), ", "), "], expected [2, ", options.classes, "] (model.classes)"));
    }
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("model.path: forward of '", path, "' on input ", probe,
                                                   " (model.input_shape) failed: ", ErrorText(e)));
  } catch (const std::exception& e) {  // the interpreter rethrows op errors as std::runtime_error
    return absl::InvalidArgumentError(absl::StrCat("model.path: forward of '", path, "' on input ", probe,
                                                   " (model.input_shape) failed: ", e.what()));
  }
  return std::unique_ptr<Model>(std::make_unique<TorchScriptModel>(options, std::move(module)));
}

}  // namespace mycel::model::internal
