// ModelOptions: what model::Model::Create builds, owned by the model module
// and defined once, with its defaults. The config reader's `[model]` section
// is this struct (config::Config::model); tests, mycel-sim and embedders
// fill it directly. Plain data on the standard library alone: this header is
// its own CMake target (mycel_model_options, INTERFACE), which the config
// library and the CLI may see without compiling or linking libtorch.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

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

}  // namespace mycel::model
