// ModelOptions: what model::Model::Create builds, owned by the model module
// and defined once, with its defaults. The config reader's `[model]` section
// is this struct (config::Config::model); tests, mycel-sim and embedders
// fill it directly. CheckOptions is their one check, for both. Plain data on
// the standard library (and common/option_problem.h): this header is its own
// CMake target (mycel_model_options, INTERFACE), which the config library
// and the CLI may see without compiling or linking libtorch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/option_problem.h"

namespace mycel::model {

struct ModelOptions {
  std::string kind = "mlp";                    // mlp | cnn | char_lm | torchscript
  std::vector<int64_t> input_shape = {1, 28, 28};  // per-example shape (mlp, cnn, torchscript)
  int64_t classes = 10;                        // output classes (mlp, cnn, torchscript)
  std::vector<int64_t> hidden = {128};         // hidden widths: mlp layers, cnn fc, char_lm GRU size (first)
  uint64_t seed = 1;                           // initial-weights seed; one federation shares it
  std::string path;                            // torchscript: the scripted module file
  std::vector<std::string> local_layers;       // parameter-name prefixes that never leave the device
  std::vector<std::string> class_names;        // names `mycel predict` prints, one per class ([] = numbers)
  // Predictions (and `mycel eval`) add the log of this node's own class
  // shares, add-one smoothed, to the logits: the shared model's answer,
  // re-weighted by what this laptop sees (label-shift correction; README,
  // "Your own classes first"). Classifiers only. Training is unchanged.
  bool personal_prior = false;
  int64_t context = 64;                        // char_lm: characters of context per example
  int64_t embedding = 32;                      // char_lm: byte embedding width
};

// Every field equal. The daemon builds the model, its prior and its local
// layers once, so a reload that changes any of them waits for a restart.
inline bool operator==(const ModelOptions& a, const ModelOptions& b) {
  auto tie = [](const ModelOptions& o) {
    return std::tie(o.kind, o.input_shape, o.classes, o.hidden, o.seed, o.path, o.local_layers, o.class_names,
                    o.personal_prior, o.context, o.embedding);
  };
  return tie(a) == tie(b);
}
inline bool operator!=(const ModelOptions& a, const ModelOptions& b) { return !(a == b); }


namespace options_internal {

inline std::string Shape(const std::vector<int64_t>& values) {
  std::string s = "[";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

// A list of sizes: not empty, every value positive.
inline std::optional<OptionProblem> Sizes(const std::string& key, const std::vector<int64_t>& values) {
  if (values.empty()) return OptionProblem{key, "must not be empty"};
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] <= 0) {
      return OptionProblem{key + "[" + std::to_string(i) + "]", "must be > 0 (got " + std::to_string(values[i]) + ")"};
    }
  }
  return std::nullopt;
}

inline std::optional<OptionProblem> Names(const std::string& key, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty()) return OptionProblem{key + "[" + std::to_string(i) + "]", "must not be empty"};
  }
  return std::nullopt;
}

}  // namespace options_internal

// What is wrong with `o`: its key as the config file spells it ("hidden",
// or "input_shape[1]" for one value of a list) and why, e.g. {"classes",
// "must be >= 2 (got 1)"}; keys in declaration order, then the rules that tie
// two keys; nothing when Model::Create can build it (a torchscript file is
// opened only there). The one check of these options: Model::Create reports
// "model.KEY: why", the config reader "file:line: [model] KEY: why".
inline std::optional<OptionProblem> CheckOptions(const ModelOptions& o) {
  using options_internal::Shape;
  const bool cnn = o.kind == "cnn", char_lm = o.kind == "char_lm";
  if (o.kind != "mlp" && !cnn && !char_lm && o.kind != "torchscript") {
    return OptionProblem{"kind", "must be one of mlp, cnn, char_lm, torchscript (got '" + o.kind + "')"};
  }
  if (auto bad = options_internal::Sizes("input_shape", o.input_shape)) return bad;
  if (o.classes < 2) return OptionProblem{"classes", "must be >= 2 (got " + std::to_string(o.classes) + ")"};
  if (auto bad = options_internal::Sizes("hidden", o.hidden)) return bad;
  if (o.kind == "torchscript" && o.path.empty()) {
    return OptionProblem{"path", "required when kind = \"torchscript\" (the scripted module file)"};
  }
  if (auto bad = options_internal::Names("local_layers", o.local_layers)) return bad;
  if (auto bad = options_internal::Names("class_names", o.class_names)) return bad;
  if (o.personal_prior && char_lm) {
    return OptionProblem{"personal_prior", "only for classifiers (a char_lm predicts bytes, not classes)"};
  }
  if (o.context < 2 || o.context > 4096) {
    return OptionProblem{"context", "must be in [2, 4096] (got " + std::to_string(o.context) + ")"};
  }
  if (o.embedding <= 0) return OptionProblem{"embedding", "must be > 0 (got " + std::to_string(o.embedding) + ")"};
  // Rules that tie two keys.
  if (!o.class_names.empty() && static_cast<int64_t>(o.class_names.size()) != o.classes) {
    return OptionProblem{"class_names", std::to_string(o.class_names.size()) + " names for " +
                                            std::to_string(o.classes) + " classes (one per class, in label order)"};
  }
  if (cnn && o.input_shape.size() != 3) {
    return OptionProblem{"input_shape", "cnn needs {channels, height, width}, got " + Shape(o.input_shape)};
  }
  if (cnn && (o.input_shape[1] % 4 != 0 || o.input_shape[2] % 4 != 0)) {
    return OptionProblem{"input_shape",
                         "cnn needs height and width divisible by 4 (two 2x2 max-pools), got " + Shape(o.input_shape)};
  }
  if ((cnn || char_lm) && o.hidden.size() != 1) {
    return OptionProblem{"hidden", o.kind + " takes exactly one width (" +
                                       (cnn ? "its fully connected layer" : "the GRU size") + "), got " +
                                       Shape(o.hidden)};
  }
  return std::nullopt;
}

}  // namespace mycel::model
