// Tests for model/: real libtorch, real TorchScript files, and (when Debian's
// python3-torch is there) the real torch.jit.load in Python.
#include "model/model.h"

#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include "common/test_util.h"

namespace mycel::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kFixture = std::string(MYCEL_SOURCE_DIR) + "/tests/fixtures/tiny_classifier.pt";

ModelOptions Mlp(std::vector<int64_t> input_shape, std::vector<int64_t> hidden, int64_t classes) {
  ModelOptions o;
  o.kind = "mlp";
  o.input_shape = std::move(input_shape);
  o.hidden = std::move(hidden);
  o.classes = classes;
  return o;
}

ModelOptions Cnn(std::vector<int64_t> input_shape, int64_t hidden, int64_t classes) {
  ModelOptions o = Mlp(std::move(input_shape), {hidden}, classes);
  o.kind = "cnn";
  return o;
}

ModelOptions CharLm(int64_t embedding, int64_t hidden, int64_t context) {
  ModelOptions o;
  o.kind = "char_lm";
  o.embedding = embedding;
  o.hidden = {hidden};
  o.context = context;
  return o;
}

ModelOptions TorchScript() {
  ModelOptions o;
  o.kind = "torchscript";
  o.path = kFixture;
  o.input_shape = {1, 28, 28};
  o.classes = 10;
  return o;
}

std::unique_ptr<Model> MustCreate(const ModelOptions& o) {
  auto m = Model::Create(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(m).value() : nullptr;
}

std::vector<std::string> Names(const Model& m) {
  std::vector<std::string> names;
  for (const NamedTensor& p : m.parameters()) names.push_back(p.name);
  return names;
}

using test::TempDir;

// Random input of the model's example shape: floats for classifiers, bytes for text.
torch::Tensor RandomInput(const Model& m, int64_t batch) {
  if (m.task() == Task::kNextByte) return torch::randint(0, 256, {batch, m.options().context}, torch::kLong);
  return torch::rand({batch, m.example_shape().width});
}

// Mini-batch SGD (or Adam) on (x, y); returns the mean loss of the last 20 steps.
double Train(Model& m, const torch::Tensor& x, const torch::Tensor& y, int steps, double lr,
             bool adam = false, int64_t batch = 32) {
  std::vector<torch::Tensor> params;
  for (const NamedTensor& p : m.parameters()) params.push_back(p.tensor);
  std::unique_ptr<torch::optim::Optimizer> opt;
  if (adam) {
    opt = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(lr));
  } else {
    opt = std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(lr));
  }
  m.SetTraining(true);
  double tail = 0;
  for (int step = 0; step < steps; ++step) {
    torch::Tensor idx = torch::randint(0, x.size(0), {batch}, torch::kLong);
    torch::Tensor loss = m.Loss(x.index_select(0, idx), y.defined() ? y.index_select(0, idx) : y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    if (step >= steps - 20) tail += loss.item<double>() / 20;
  }
  return tail;
}

// Points scattered around one random prototype per class: linearly separable.
std::pair<torch::Tensor, torch::Tensor> Blobs(int64_t n, int64_t width, int64_t classes) {
  torch::Tensor protos = torch::randn({classes, width});
  torch::Tensor y = torch::randint(0, classes, {n}, torch::kLong);
  torch::Tensor x = protos.index_select(0, y) + 0.5 * torch::randn({n, width});
  return {x, y};
}

// ---------------------------------------------------------------------------

TEST(ModelTest, SameSeedSameWeightsOtherSeedOtherWeights) {
  for (ModelOptions o : {Mlp({12}, {16, 8}, 3), Cnn({1, 8, 8}, 16, 3), CharLm(8, 16, 8)}) {
    SCOPED_TRACE(o.kind);
    o.seed = 7;
    auto a = MustCreate(o);
    torch::manual_seed(12345);  // the global generator must not matter
    auto b = MustCreate(o);
    o.seed = 8;
    auto c = MustCreate(o);
    ASSERT_TRUE(a && b && c);
    ASSERT_EQ(a->parameters().size(), b->parameters().size());
    bool any_differs = false;
    for (size_t i = 0; i < a->parameters().size(); ++i) {
      EXPECT_TRUE(torch::equal(a->parameters()[i].tensor, b->parameters()[i].tensor))
          << a->parameters()[i].name;
      any_differs |= !torch::equal(a->parameters()[i].tensor, c->parameters()[i].tensor);
    }
    EXPECT_TRUE(any_differs);
    EXPECT_EQ(a->Fingerprint(), c->Fingerprint());
  }
}

TEST(ModelTest, ParameterNamesAreStableAndDotted) {
  auto mlp = MustCreate(Mlp({1, 28, 28}, {128, 64}, 10));
  EXPECT_THAT(Names(*mlp), ElementsAre("fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias", "out.weight", "out.bias"));
  auto cnn = MustCreate(Cnn({1, 28, 28}, 32, 10));
  EXPECT_THAT(Names(*cnn), ElementsAre("conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias", "fc0.weight",
                                       "fc0.bias", "out.weight", "out.bias"));
  EXPECT_EQ(cnn->parameters()[4].tensor.sizes(), (std::vector<int64_t>{32, 64 * 7 * 7}));
  auto lm = MustCreate(CharLm(16, 32, 8));
  EXPECT_THAT(Names(*lm), ElementsAre("embed.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0",
                                      "gru.bias_hh_l0", "head.weight", "head.bias"));
  EXPECT_EQ(lm->task(), Task::kNextByte);
  EXPECT_TRUE(lm->example_shape().text);
  EXPECT_EQ(lm->example_shape().width, 9);
  EXPECT_EQ(mlp->example_shape().width, 784);
  EXPECT_EQ(mlp->example_shape().classes, 10);
}

TEST(ModelTest, ParameterCountsAndLocalLayers) {
  ModelOptions o = Mlp({1, 28, 28}, {128}, 10);
  auto all_shared = MustCreate(o);
  EXPECT_EQ(all_shared->parameter_count(), 101770);  // 784*128+128 + 128*10+10
  EXPECT_EQ(all_shared->shared_parameter_count(), 101770);

  o.local_layers = {"out"};
  auto m = MustCreate(o);
  EXPECT_EQ(m->parameter_count(), 101770);
  EXPECT_EQ(m->shared_parameter_count(), 101770 - 1290);
  for (const NamedTensor& p : m->parameters()) {
    EXPECT_EQ(p.shared, p.name.rfind("out.", 0) != 0) << p.name;
  }
  EXPECT_NE(m->Fingerprint(), all_shared->Fingerprint());

  // Prefixes match whole dotted components: "fc" is not "fc0".
  o.local_layers = {"fc"};
  auto bad = Model::Create(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'fc'"));
  o.local_layers = {"fc0.bias"};
  auto one = MustCreate(o);
  EXPECT_EQ(one->shared_parameter_count(), 101770 - 128);
}

TEST(ModelTest, FingerprintFollowsArchitectureNotWeights) {
  auto a = MustCreate(Mlp({1, 28, 28}, {128}, 10));
  const std::string before = a->Fingerprint();
  EXPECT_EQ(before.size(), 32u);
  {
    torch::NoGradGuard no_grad;
    for (const NamedTensor& p : a->parameters()) p.tensor.fill_(0.25);
  }
  EXPECT_EQ(a->Fingerprint(), before);
  EXPECT_NE(MustCreate(Mlp({1, 28, 28}, {64}, 10))->Fingerprint(), before);
  EXPECT_NE(MustCreate(Mlp({1, 28, 28}, {128}, 9))->Fingerprint(), before);
  // The context length shapes no parameter: those models merge.
  EXPECT_EQ(MustCreate(CharLm(8, 16, 8))->Fingerprint(), MustCreate(CharLm(8, 16, 32))->Fingerprint());
}

// The fingerprint is BLAKE2b-128 of "mycel-model-v1\n" + Layout(), as
// lowercase hex: peers and state directories written by older builds compare
// it, so these bytes must never change.
TEST(ModelTest, FingerprintIsStable) {
  auto m = MustCreate(Mlp({1, 28, 28}, {128}, 10));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->Layout(),
            "kind mlp\n"
            "fc0.weight Float [128, 784]\n"
            "fc0.bias Float [128]\n"
            "out.weight Float [10, 128]\n"
            "out.bias Float [10]\n");
  EXPECT_EQ(m->Fingerprint(), "a2047385c2dbd299c2f224c0ad117c76");
}

TEST(ModelTest, BadOptionsAreNamed) {
  struct Case {
    ModelOptions options;
    std::string needle;
  };
  std::vector<Case> cases;
  {
    auto o = Mlp({}, {8}, 3);
    cases.push_back({o, "model.input_shape"});
    o = Mlp({4, 0}, {8}, 3);
    cases.push_back({o, "model.input_shape"});
    o = Mlp({4}, {8}, 1);
    cases.push_back({o, "model.classes"});
    o = Mlp({4}, {8, -2}, 3);
    cases.push_back({o, "model.hidden"});
    o = Cnn({28, 28}, 8, 3);
    cases.push_back({o, "model.input_shape"});
    o = Cnn({1, 30, 28}, 8, 3);
    cases.push_back({o, "divisible by 4"});
    o = Cnn({1, 28, 28}, 8, 3);
    o.hidden = {};
    cases.push_back({o, "model.hidden"});
    o = CharLm(0, 8, 8);
    cases.push_back({o, "model.embedding"});
    o = CharLm(8, 8, 0);
    cases.push_back({o, "model.context"});
    o = Mlp({4}, {8}, 3);
    o.kind = "transformer";
    cases.push_back({o, "'transformer'"});
    o = Mlp({4}, {8}, 3);
    o.local_layers = {"nope"};
    cases.push_back({o, "'nope'"});
    o = TorchScript();
    o.path = "/nonexistent/dir/model.pt";
    cases.push_back({o, "/nonexistent/dir/model.pt"});
    o = TorchScript();
    o.path = "";
    cases.push_back({o, "model.path"});
    o = TorchScript();
    o.classes = 5;  // the fixture has 10 outputs
    cases.push_back({o, "model.classes"});
    o = TorchScript();
    o.input_shape = {3, 28, 28};  // the fixture reshapes to [B, 1, 28, 28]
    cases.push_back({o, "model.input_shape"});
    o = TorchScript();
    o.local_layers = {"body.1"};  // ReLU: no parameters
    cases.push_back({o, "'body.1'"});
  }
  TempDir dir;
  const std::string garbage = dir / "garbage.pt";
  std::ofstream(garbage) << "this is not a zip archive";
  {
    auto o = TorchScript();
    o.path = garbage;
    cases.push_back({o, garbage});
  }
  for (const Case& c : cases) {
    auto m = Model::Create(c.options);
    ASSERT_FALSE(m.ok()) << c.needle;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(c.needle)) << m.status();
  }
}

// CheckOptions is the one check of the options: the config reader reports
// its problems at their line, Create as "model.KEY: why". So Create refuses
// what a config file could not say either.
TEST(ModelTest, CreateRefusesWhatCheckOptionsRefuses) {
  struct Case {
    ModelOptions options;
    std::string key;
  };
  std::vector<Case> cases;
  {
    auto o = Mlp({4}, {8}, 3);
    o.class_names = {"a", "b"};
    cases.push_back({o, "class_names"});
    o = Mlp({4}, {8}, 3);
    o.class_names = {"a", "", "c"};
    cases.push_back({o, "class_names[1]"});
    o = CharLm(8, 8, 8);
    o.personal_prior = true;
    cases.push_back({o, "personal_prior"});
    o = CharLm(8, 8, 8);
    o.context = 1;
    cases.push_back({o, "context"});
    o = Mlp({4}, {}, 3);
    cases.push_back({o, "hidden"});
    o = Mlp({4, -1}, {8}, 3);
    cases.push_back({o, "input_shape[1]"});
    o = Mlp({4}, {8}, 3);
    o.local_layers = {""};
    cases.push_back({o, "local_layers[0]"});
  }
  for (const Case& c : cases) {
    std::optional<OptionProblem> problem = CheckOptions(c.options);
    ASSERT_TRUE(problem.has_value()) << c.key;
    EXPECT_EQ(problem->key, c.key);
    auto m = Model::Create(c.options);
    ASSERT_FALSE(m.ok()) << c.key;
    EXPECT_EQ(std::string(m.status().message()), "model." + problem->key + ": " + problem->why);
  }
  EXPECT_FALSE(CheckOptions(ModelOptions{}).has_value());
}

TEST(ModelTest, MlpLearnsSeparableBlobs) {
  torch::manual_seed(1);
  auto [x, y] = Blobs(512, 20, 4);
  auto m = MustCreate(Mlp({20}, {32}, 4));
  const auto before = m->Evaluate(x, y);
  EXPECT_EQ(before.count, 512);
  const double tail = Train(*m, x, y, 300, 0.1);
  const auto after = m->Evaluate(x, y, /*chunk=*/100);
  EXPECT_LT(after.loss, 0.25 * before.loss) << "before " << before.loss << " tail " << tail;
  EXPECT_GT(after.correct, 0.95 * 512);
}

TEST(ModelTest, CnnLearnsWhichHalfIsBright) {
  torch::manual_seed(2);
  const int64_t n = 256;
  torch::Tensor y = torch::randint(0, 2, {n}, torch::kLong);
  torch::Tensor img = 0.3 * torch::rand({n, 1, 8, 8});
  img.index_put_({y == 0, torch::indexing::Slice(), torch::indexing::Slice(), torch::indexing::Slice(0, 4)}, 1.0);
  img.index_put_({y == 1, torch::indexing::Slice(), torch::indexing::Slice(), torch::indexing::Slice(4, 8)}, 1.0);
  torch::Tensor x = img.reshape({n, 64});
  auto m = MustCreate(Cnn({1, 8, 8}, 16, 2));
  const auto before = m->Evaluate(x, y);
  Train(*m, x, y, 200, 0.05);
  const auto after = m->Evaluate(x, y);
  EXPECT_LT(after.loss, 0.25 * before.loss) << "before " << before.loss;
  EXPECT_EQ(after.correct, n);
}

TEST(ModelTest, CharLmLearnsARepeatedString) {
  torch::manual_seed(3);
  const std::string text = [] {
    std::string s;
    while (s.size() < 2000) s += "hello mycel! ";
    return s;
  }();
  const int64_t context = 16;
  auto m = MustCreate(CharLm(16, 64, context));
  // Windows of context+1 bytes at every offset.
  const int64_t n = static_cast<int64_t>(text.size()) - context;
  torch::Tensor all = torch::empty({n, context + 1}, torch::kLong);
  auto acc = all.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t <= context; ++t) acc[i][t] = static_cast<unsigned char>(text[i + t]);
  }
  const auto before = m->Evaluate(all, torch::Tensor(), 128);
  EXPECT_EQ(before.count, n * context);  // per token
  EXPECT_NEAR(before.loss, std::log(256.0), 1.5);
  Train(*m, all, torch::Tensor(), 300, 0.01, /*adam=*/true);
  const auto after = m->Evaluate(all, torch::Tensor(), 128);
  EXPECT_LT(after.loss, 0.5) << "before " << before.loss;
  EXPECT_GT(after.correct, 0.85 * after.count);
}

TEST(ModelTest, EvaluateRestoresModeAndIgnoresChunking) {
  torch::manual_seed(4);
  auto m = MustCreate(CharLm(8, 16, 8));
  torch::Tensor tokens = torch::randint(0, 256, {10, 9}, torch::kLong);
  m->SetTraining(true);
  const auto whole = m->Evaluate(tokens, torch::Tensor());
  EXPECT_TRUE(m->IsTraining());
  m->SetTraining(false);
  const auto chunked = m->Evaluate(tokens, torch::Tensor(), 3);
  EXPECT_FALSE(m->IsTraining());
  EXPECT_EQ(whole.count, 80);
  EXPECT_EQ(chunked.count, 80);
  EXPECT_EQ(whole.correct, chunked.correct);
  EXPECT_NEAR(whole.loss, chunked.loss, 1e-5);
  // The loss of a batch is the per-token mean Evaluate reports.
  EXPECT_NEAR(m->Loss(tokens, torch::Tensor()).item<double>(), whole.loss, 1e-5);
}

// ExampleLosses is the batch loss per example: its mean is Loss, and an
// example's entry is its loss alone (a text window's: its positions' mean).
TEST(ModelTest, ExampleLossesAreTheBatchLossPerExample) {
  torch::manual_seed(5);
  auto lm = MustCreate(CharLm(8, 16, 8));
  lm->SetTraining(false);
  torch::Tensor tokens = torch::randint(0, 256, {6, 9}, torch::kLong);
  torch::Tensor each = lm->ExampleLosses(tokens, torch::Tensor());
  ASSERT_EQ(each.sizes(), torch::IntArrayRef({6}));
  EXPECT_NEAR(each.mean().item<double>(), lm->Loss(tokens, torch::Tensor()).item<double>(), 1e-5);
  EXPECT_NEAR(each[2].item<double>(), lm->Loss(tokens.narrow(0, 2, 1), torch::Tensor()).item<double>(), 1e-5);
  auto mlp = MustCreate(Mlp({4}, {8}, 3));
  torch::Tensor x = torch::rand({5, 4});
  torch::Tensor y = torch::tensor({0, 1, 2, 1, 0}, torch::kLong);
  each = mlp->ExampleLosses(x, y);
  ASSERT_EQ(each.sizes(), torch::IntArrayRef({5}));
  EXPECT_NEAR(each.mean().item<double>(), mlp->Loss(x, y).item<double>(), 1e-5);
  EXPECT_NEAR(each[3].item<double>(), mlp->Loss(x.narrow(0, 3, 1), y.narrow(0, 3, 1)).item<double>(), 1e-5);
}

// The trainer keeps held-out images as uint8; evaluated, they must count as
// the float32 images the model trains on (scaled by 1/255), not as raw bytes.
TEST(ModelTest, EvaluatesUint8ImagesAsTheirScaledFloats) {
  torch::manual_seed(6);
  auto m = MustCreate(Mlp({1, 28, 28}, {16}, 10));
  torch::Tensor u8 = torch::randint(0, 256, {40, 784}, torch::kByte);
  torch::Tensor y = torch::randint(0, 10, {40}, torch::kLong);
  const auto as_float = m->Evaluate(u8.to(torch::kFloat) / 255.0f, y);
  const auto as_u8 = m->Evaluate(u8, y, 7);
  const auto raw = m->Evaluate(u8.to(torch::kFloat), y);
  EXPECT_EQ(as_u8.count, 40);
  EXPECT_EQ(as_u8.correct, as_float.correct);
  EXPECT_NEAR(as_u8.loss, as_float.loss, 1e-5);
  EXPECT_GT(std::abs(raw.loss - as_float.loss), 1e-3);  // the scaling is visible in the loss
}

TEST(ModelTest, TorchScriptFixtureLoadsTrainsAndKeepsHeadLocal) {
  ModelOptions o = TorchScript();
  o.local_layers = {"head"};
  auto m = MustCreate(o);
  ASSERT_TRUE(m);
  EXPECT_THAT(Names(*m), ElementsAre("body.0.weight", "body.0.bias", "head.weight", "head.bias"));
  EXPECT_EQ(m->parameter_count(), 8 * 9 + 8 + 10 * 392 + 10);
  EXPECT_EQ(m->shared_parameter_count(), 8 * 9 + 8);
  for (const NamedTensor& p : m->parameters()) EXPECT_TRUE(p.tensor.requires_grad()) << p.name;
  EXPECT_TRUE(m->IsTraining());

  torch::manual_seed(5);
  auto [x, y] = Blobs(512, 784, 10);
  x = x.abs();
  const auto before = m->Evaluate(x, y);
  Train(*m, x, y, 200, 0.05);
  const auto after = m->Evaluate(x, y);
  EXPECT_LT(after.loss, 0.25 * before.loss) << "before " << before.loss;
  EXPECT_GT(after.correct, 0.9 * 512);
}

// ---------------------------------------------------------------------------
// Export

std::vector<ModelOptions> ExportCases() {
  ModelOptions mlp = Mlp({1, 28, 28}, {32, 16}, 10);
  mlp.class_names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  return {mlp, Cnn({1, 12, 8}, 16, 5), CharLm(8, 24, 12), TorchScript()};
}

// One SGD step so the export must carry trained weights, not initial ones.
void Nudge(Model& m) {
  torch::manual_seed(6);
  torch::Tensor x = RandomInput(m, 8);
  torch::Tensor y = m.task() == Task::kNextByte ? torch::Tensor() : torch::randint(0, m.options().classes, {8});
  if (m.task() == Task::kNextByte) x = torch::randint(0, 256, {8, m.options().context + 1}, torch::kLong);
  Train(m, x, y, 1, 0.5, false, 8);
  m.SetTraining(false);
}

TEST(ModelTest, ExportIsExactInCpp) {
  TempDir dir;
  for (const ModelOptions& o : ExportCases()) {
    SCOPED_TRACE(o.kind);
    auto m = MustCreate(o);
    ASSERT_TRUE(m);
    Nudge(*m);
    const std::string path = dir / (o.kind + ".pt");
    ASSERT_TRUE(m->Export(path).ok());
    torch::jit::Module loaded = torch::jit::load(path);
    loaded.eval();
    torch::NoGradGuard no_grad;
    torch::Tensor x = RandomInput(*m, 5);
    torch::Tensor expected = m->Forward(x);
    if (m->task() == Task::kClassify) {
      std::vector<int64_t> shape{5};
      shape.insert(shape.end(), o.input_shape.begin(), o.input_shape.end());
      torch::Tensor got = loaded.forward({x.reshape(shape)}).toTensor();
      EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5));
      EXPECT_EQ(got.sizes(), (std::vector<int64_t>{5, o.classes}));
      if (o.kind != "torchscript") {
        EXPECT_TRUE(torch::allclose(loaded.forward({x}).toTensor(), expected, 1e-5, 1e-5));  // flat input
      }
    } else {
      torch::Tensor got = loaded.forward({x}).toTensor();
      EXPECT_EQ(got.sizes(), (std::vector<int64_t>{5, o.context, 256}));
      EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-5));
    }
    if (o.kind != "torchscript") {
      EXPECT_EQ(loaded.attr("mycel_kind").toStringRef(), o.kind);
      // Its contract travels with it: input scaling, output, class names.
      const std::string input = loaded.attr("mycel_input").toStringRef();
      EXPECT_NE(input.find(m->task() == Task::kClassify ? "divided by 255" : "byte values"), std::string::npos);
      EXPECT_EQ(loaded.attr("mycel_output").toStringRef().rfind("logits", 0), 0u);
      const c10::List<c10::IValue> class_names = loaded.attr("class_names").toList();
      ASSERT_EQ(class_names.size(), o.class_names.size());
      for (size_t i = 0; i < class_names.size(); ++i) {
        EXPECT_EQ(class_names.get(i).toStringRef(), o.class_names[i]);
      }
      // The exported module holds copies: training on does not change it.
      std::vector<std::string> names;
      for (const auto& p : loaded.named_parameters()) names.push_back(p.name);
      EXPECT_EQ(names, Names(*m));
    }
  }
}

// The python3 that has torch (Debian's lives in /usr/bin; a pyenv shim may come first on PATH).
std::string PythonWithTorch() {
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    const std::string cmd = std::string(candidate) + " -c 'import torch' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return candidate;
  }
  return "";
}

// Arguments: groups of (model.pt, x.pt, expected.pt, kind, comma-separated names).
constexpr char kPythonCheck[] = R"(
import sys, torch
args = sys.argv[1:]
for i in range(0, len(args), 5):
    model_path, x_path, expected_path, kind, names = args[i:i + 5]
    m = torch.jit.load(model_path)
    m.train()
    m.eval()
    x = torch.load(x_path)
    expected = torch.load(expected_path)
    with torch.no_grad():
        got = m(x)
    print(kind, "max abs diff", (got - expected).abs().max().item())
    assert got.shape == expected.shape, (kind, got.shape, expected.shape)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), kind
    if kind != "torchscript":
        assert m.mycel_kind == kind, m.mycel_kind
        assert ",".join(n for n, _ in m.named_parameters()) == names, kind
print("all match")
)";

TEST(ModelTest, ExportOpensInPythonWithTheSameOutputs) {
  const std::string python = PythonWithTorch();
  if (python.empty()) GTEST_SKIP() << "no python3 with torch";
  TempDir dir;
  const std::string script = dir / "check.py";
  std::ofstream(script) << kPythonCheck;
  std::string cmd = python + " " + script;
  for (const ModelOptions& o : ExportCases()) {
    SCOPED_TRACE(o.kind);
    auto m = MustCreate(o);
    ASSERT_TRUE(m);
    Nudge(*m);
    const std::string model_path = dir / (o.kind + ".pt");
    ASSERT_TRUE(m->Export(model_path).ok());
    torch::Tensor x = RandomInput(*m, 4);
    if (m->task() == Task::kClassify) {
      std::vector<int64_t> shape{4};
      shape.insert(shape.end(), o.input_shape.begin(), o.input_shape.end());
      x = x.reshape(shape);  // Python users pass images, not rows
    }
    torch::Tensor expected;
    {
      torch::NoGradGuard no_grad;
      expected = m->Forward(x);
    }
    cmd += " " + model_path;
    for (const auto& [name, tensor] : {std::pair{"_x.pt", x}, std::pair{"_expected.pt", expected}}) {
      // pickle_save writes the format Python's torch.load reads.
      const std::vector<char> bytes = torch::pickle_save(tensor);
      const std::string path = dir / (o.kind + name);
      std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      cmd += " " + path;
    }
    std::string names;
    for (const std::string& n : Names(*m)) names += (names.empty() ? "" : ",") + n;
    cmd += " " + o.kind + " " + names;
  }
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe)) output += buf;
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << output;
  EXPECT_THAT(output, HasSubstr("all match"));
  std::cout << output;
}

TEST(ModelTest, ExportToUnwritablePathIsAnError) {
  auto m = MustCreate(Mlp({4}, {8}, 3));
  absl::Status s = m->Export("/nonexistent/dir/model.pt");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent/dir/model.pt"));
}

// ---------------------------------------------------------------------------
// SaveTensors / LoadTensors

TEST(ModelTest, TensorsRoundTripInPlace) {
  for (ModelOptions o : {Mlp({6}, {5}, 3), CharLm(4, 6, 4), TorchScript()}) {
    SCOPED_TRACE(o.kind);
    o.seed = 1;
    auto a = MustCreate(o);
    o.seed = 2;
    auto b = MustCreate(o);
    ASSERT_TRUE(a && b);
    auto bytes = SaveTensors(a->parameters());
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    std::vector<const void*> ptrs;
    for (const NamedTensor& p : b->parameters()) ptrs.push_back(p.tensor.data_ptr());
    ASSERT_TRUE(LoadTensors(*bytes, b->parameters()).ok());
    for (size_t i = 0; i < a->parameters().size(); ++i) {
      EXPECT_TRUE(torch::equal(a->parameters()[i].tensor, b->parameters()[i].tensor));
      EXPECT_EQ(b->parameters()[i].tensor.data_ptr(), ptrs[i]);  // copied into the live tensor
      EXPECT_TRUE(b->parameters()[i].tensor.requires_grad());
    }
  }
}

TEST(ModelTest, LoadTensorsSubsetAndMismatches) {
  auto a = MustCreate(Mlp({6}, {5}, 3));
  auto b = MustCreate([] { auto o = Mlp({6}, {5}, 3); o.seed = 9; return o; }());
  // Only the output layer travels; loading it into the full set names what is missing.
  std::vector<NamedTensor> out_only(a->parameters().end() - 2, a->parameters().end());
  auto out_bytes = SaveTensors(out_only);
  ASSERT_TRUE(out_bytes.ok());
  std::vector<NamedTensor> b_out(b->parameters().end() - 2, b->parameters().end());
  ASSERT_TRUE(LoadTensors(*out_bytes, b_out).ok());
  EXPECT_TRUE(torch::equal(b_out[0].tensor, out_only[0].tensor));
  absl::Status missing = LoadTensors(*out_bytes, b->parameters());
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  EXPECT_THAT(std::string(missing.message()), HasSubstr("fc0.weight"));

  // Another architecture: the shape error names the tensor; nothing is changed.
  auto wide = MustCreate(Mlp({6}, {7}, 3));
  auto wide_bytes = SaveTensors(wide->parameters());
  ASSERT_TRUE(wide_bytes.ok());
  torch::Tensor before = b->parameters()[0].tensor.clone();
  torch::Tensor out_before = b->parameters()[2].tensor.clone();
  absl::Status shape = LoadTensors(*wide_bytes, b->parameters());
  EXPECT_FALSE(shape.ok());
  EXPECT_THAT(std::string(shape.message()), HasSubstr("'fc0.weight' has shape [7, 6]"));
  EXPECT_TRUE(torch::equal(b->parameters()[0].tensor, before));
  EXPECT_TRUE(torch::equal(b->parameters()[2].tensor, out_before));

  // Garbage and truncated bytes are errors, not crashes.
  for (const std::string& junk : {std::string("definitely not a torch archive"), std::string(),
                                  out_bytes->substr(0, out_bytes->size() / 2)}) {
    absl::Status s = LoadTensors(junk, b->parameters());
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("reading tensors"));
  }

  // Names that cannot be laid out as a tree are refused.
  std::vector<NamedTensor> clash = {{"a", torch::zeros({1})}, {"a.b", torch::zeros({1})}};
  EXPECT_FALSE(SaveTensors(clash).ok());
  std::vector<NamedTensor> empty_part = {{"a..b", torch::zeros({1})}};
  EXPECT_FALSE(SaveTensors(empty_part).ok());
}

}  // namespace
}  // namespace mycel::model
