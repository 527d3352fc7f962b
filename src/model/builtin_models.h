// Internal to model/: factories for the native kinds (mlp, cnn, char_lm) and
// the TorchScript adapter. Model::Create validates options and calls these;
// they assume valid options and may throw c10::Error, which Create catches.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "model/model.h"

namespace mycel::model::internal {

std::unique_ptr<Model> CreateMlp(const ModelOptions& options);
std::unique_ptr<Model> CreateCnn(const ModelOptions& options);
std::unique_ptr<Model> CreateCharLm(const ModelOptions& options);
// Loads options.path and checks that forward maps [2, *input_shape] to
// [2, classes]; errors name the path.
absl::StatusOr<std::unique_ptr<Model>> CreateTorchScript(const ModelOptions& options);

}  // namespace mycel::model::internal
