// Model base: option validation, the factory, the shared/local split, loss and
// evaluation, fingerprint, and tensor (de)serialisation. The networks
// themselves live in networks.cc.
#include "model/model.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/coding.h"
#include "common/status.h"
#include "model/builtin_models.h"

namespace mycel::model {
namespace {

namespace F = torch::nn::functional;

constexpr int64_t kByteVocab = 256;

std::string ShapeString(c10::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// `prefix` matches whole dotted components of `name`.
bool MatchesLayer(const std::string& name, const std::string& prefix) {
  if (prefix.empty() || name.compare(0, prefix.size(), prefix) != 0) return false;
  return name.size() == prefix.size() || prefix.back() == '.' || name[prefix.size()] == '.';
}

// Puts a Model in eval mode for a scope and restores its previous mode.
class EvalModeScope {
 public:
  explicit EvalModeScope(Model& model) : model_(model), was_training_(model.IsTraining()) {
    model_.SetTraining(false);
  }
  ~EvalModeScope() { model_.SetTraining(was_training_); }
  EvalModeScope(const EvalModeScope&) = delete;
  EvalModeScope& operator=(const EvalModeScope&) = delete;

 private:
  Model& model_;
  bool was_training_;
};

std::string ErrorText(const c10::Error& e) { return e.what_without_backtrace(); }

// Splits "a.b.c" into components; empty components are an error.
absl::StatusOr<std::vector<std::string>> NameComponents(const std::string& name) {
  std::vector<std::string> parts = absl::StrSplit(name, '.');
  for (const std::string& p : parts) {
    if (p.empty()) return absl::InvalidArgumentError(absl::StrCat("bad tensor name '", name, "'"));
  }
  return parts;
}

// The dotted names as a tree, written as nested archives: the layout
// torch::save uses for an nn::Module, so Python's torch.jit.load of the
// bytes shows the same dotted names.
struct ArchiveNode {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, ArchiveNode> children;

  void WriteTo(torch::serialize::OutputArchive& archive) const {
    for (const auto& [key, tensor] : tensors) archive.write(key, tensor.detach());
    for (const auto& [key, child] : children) {
      torch::serialize::OutputArchive nested;
      child.WriteTo(nested);
      archive.write(key, nested);
    }
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Create(const ModelOptions& options) {
  if (std::optional<OptionProblem> bad = CheckOptions(options)) {
    return absl::InvalidArgumentError(absl::StrCat("model.", bad->key, ": ", bad->why));
  }
  std::unique_ptr<Model> model;
  try {
    if (options.kind == "mlp") {
      model = internal::CreateMlp(options);
    } else if (options.kind == "cnn") {
      model = internal::CreateCnn(options);
    } else if (options.kind == "char_lm") {
      model = internal::CreateCharLm(options);
    } else {
      MYCEL_ASSIGN_OR_RETURN(model, internal::CreateTorchScript(options));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("building ", options.kind, " model: ", ErrorText(e)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("building ", options.kind, " model: ", e.what()));
  }
  for (const std::string& prefix : options.local_layers) {
    const auto& params = model->parameters();
    if (std::none_of(params.begin(), params.end(),
                     [&](const NamedTensor& p) { return MatchesLayer(p.name, prefix); })) {
      std::vector<std::string> names;
      for (const NamedTensor& p : params) names.push_back(p.name);
      return absl::InvalidArgumentError(absl::StrCat("model.local_layers: '", prefix,
                                                     "' matches no parameter of this ", options.kind,
                                                     " model (parameters: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  return model;
}

data::ExampleShape Model::example_shape() const {
  data::ExampleShape shape;
  if (task_ == Task::kNextByte) {
    shape.text = true;
    shape.width = options_.context + 1;
    shape.classes = kByteVocab;
  } else {
    shape.text = false;
    shape.width = 1;
    for (int64_t d : options_.input_shape) shape.width *= d;
    shape.classes = options_.classes;
  }
  return shape;
}

Model::Scored Model::Score(const torch::Tensor& x, const torch::Tensor& y) {
  if (task_ == Task::kClassify) {
    const torch::Tensor images = x.scalar_type() == torch::kByte ? x.to(torch::kFloat).div_(255.0f) : x;
    return {Forward(images), y.to(torch::kLong)};
  }
  const torch::Tensor tokens = x.to(torch::kLong);
  const int64_t steps = tokens.size(1) - 1;
  return {Forward(tokens.narrow(1, 0, steps)).reshape({-1, kByteVocab}), tokens.narrow(1, 1, steps).reshape({-1})};
}

torch::Tensor Model::Loss(const torch::Tensor& x, const torch::Tensor& y) {
  const Scored s = Score(x, y);
  return F::cross_entropy(s.logits, s.targets);
}

torch::Tensor Model::ExampleLosses(const torch::Tensor& x, const torch::Tensor& y) {
  const Scored s = Score(x, y);
  // Every example has as many positions, so the row means average to Loss.
  return F::cross_entropy(s.logits, s.targets, F::CrossEntropyFuncOptions().reduction(torch::kNone))
      .reshape({x.size(0), -1})
      .mean(1);
}

Model::EvalResult Model::Evaluate(const torch::Tensor& x, const torch::Tensor& y, int64_t chunk,
                                  const torch::Tensor& logit_offset) {
  EvalResult result;
  if (!x.defined() || x.size(0) == 0) return result;
  chunk = std::max<int64_t>(chunk, 1);
  torch::NoGradGuard no_grad;
  EvalModeScope eval_mode(*this);
  double loss_sum = 0;
  const auto sum = F::CrossEntropyFuncOptions().reduction(torch::kSum);
  for (int64_t start = 0; start < x.size(0); start += chunk) {
    const int64_t rows = std::min(chunk, x.size(0) - start);
    Scored scored = Score(x.narrow(0, start, rows), task_ == Task::kClassify ? y.narrow(0, start, rows) : y);
    torch::Tensor& logits = scored.logits;
    const torch::Tensor& targets = scored.targets;
    if (logit_offset.defined()) logits = logits + logit_offset;
    loss_sum += F::cross_entropy(logits, targets, sum).item<double>();
    result.correct += logits.argmax(1).eq(targets).sum().item<int64_t>();
    result.count += targets.size(0);
  }
  result.loss = result.count > 0 ? loss_sum / static_cast<double>(result.count) : 0.0;
  return result;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const NamedTensor& p : params_) n += p.tensor.numel();
  return n;
}

int64_t Model::shared_parameter_count() const {
  int64_t n = 0;
  for (const NamedTensor& p : params_) {
    if (p.shared) n += p.tensor.numel();
  }
  return n;
}

std::vector<std::pair<std::string, size_t>> Model::SharedLayers() const {
  std::vector<std::pair<std::string, size_t>> layers;
  for (const NamedTensor& p : params_) {
    if (!p.shared) continue;
    const size_t dot = p.name.rfind('.');
    std::string layer = dot == std::string::npos ? p.name : p.name.substr(0, dot);
    if (layers.empty() || layers.back().first != layer) layers.emplace_back(std::move(layer), 0);
    layers.back().second += static_cast<size_t>(p.tensor.numel());
  }
  return layers;
}

std::string Model::Layout() const {
  std::ostringstream text;
  text << "kind " << options_.kind << "\n";
  for (const NamedTensor& p : params_) {
    if (!p.shared) continue;
    text << p.name << " " << c10::toString(p.tensor.scalar_type()) << " "
         << ShapeString(p.tensor.sizes()) << "\n";
  }
  return text.str();
}

std::string Model::Fingerprint() const {
  // Everything that decides whether two models' shared weights line up, and
  // nothing about their values.
  const std::string s = "mycel-model-v1\n" + Layout();
  // BLAKE2b-128 as lowercase hex: peers compare these strings, so both the
  // hash and its spelling are part of the protocol.
  return absl::BytesToHexString(Blake2b(s, 16));
}

void Model::SetParameters(std::vector<std::pair<std::string, torch::Tensor>> named) {
  params_.clear();
  params_.reserve(named.size());
  for (auto& [name, tensor] : named) {
    const bool local = std::any_of(options_.local_layers.begin(), options_.local_layers.end(),
                                   [&](const std::string& prefix) { return MatchesLayer(name, prefix); });
    params_.push_back(NamedTensor{std::move(name), std::move(tensor), !local});
  }
}

absl::StatusOr<std::string> SaveTensors(const std::vector<NamedTensor>& tensors) {
  ArchiveNode root;
  for (const NamedTensor& t : tensors) {
    MYCEL_ASSIGN_OR_RETURN(std::vector<std::string> parts, NameComponents(t.name));
    if (!t.tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' is undefined"));
    }
    ArchiveNode* node = &root;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (node->tensors.count(parts[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor name '", t.name, "' nests under another tensor's name"));
      }
      node = &node->children[parts[i]];
    }
    if (node->children.count(parts.back()) || !node->tensors.emplace(parts.back(), t.tensor).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", t.name, "' is repeated or nests another tensor's name"));
    }
  }
  try {
    torch::serialize::OutputArchive archive;
    root.WriteTo(archive);
    std::ostringstream out;
    archive.save_to(out);
    return out.str();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("serialising tensors: ", ErrorText(e)));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serialising tensors: ", e.what()));
  }
}

absl::Status LoadTensors(const std::string& bytes, const std::vector<NamedTensor>& into) {
  // Read and check everything first, so a bad archive changes nothing.
  std::vector<torch::Tensor> loaded(into.size());
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size());
    for (size_t i = 0; i < into.size(); ++i) {
      const NamedTensor& dst = into[i];
      MYCEL_ASSIGN_OR_RETURN(std::vector<std::string> parts, NameComponents(dst.name));
      const auto missing = [&] {
        return absl::NotFoundError(absl::StrCat("tensor '", dst.name, "' is missing from the bytes"));
      };
      torch::Tensor src;
      if (parts.size() == 1) {
        if (!archive.try_read(parts[0], src)) return missing();
      } else {
        torch::serialize::InputArchive node;
        if (!archive.try_read(parts[0], node)) return missing();
        for (size_t j = 1; j + 1 < parts.size(); ++j) {
          torch::serialize::InputArchive next;
          if (!node.try_read(parts[j], next)) return missing();
          node = std::move(next);
        }
        if (!node.try_read(parts.back(), src)) return missing();
      }
      if (!src.sizes().equals(dst.tensor.sizes())) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", dst.name, "' has shape ",
                                                       ShapeString(src.sizes()), " in the bytes but ",
                                                       ShapeString(dst.tensor.sizes()), " here"));
      }
      if (src.scalar_type() != dst.tensor.scalar_type()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", dst.name, "' has dtype ", c10::toString(src.scalar_type()),
            " in the bytes but ", c10::toString(dst.tensor.scalar_type()), " here"));
      }
      loaded[i] = std::move(src);
    }
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < into.size(); ++i) into[i].tensor.copy_(loaded[i]);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("reading tensors: ", ErrorText(e)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("reading tensors: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace mycel::model
