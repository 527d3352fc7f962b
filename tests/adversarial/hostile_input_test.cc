// Red-team tests of what the owner's side can hand a live myceld: control
// requests with hostile fields, and a state directory left behind by another
// [model]. Each once crashed or aborted the daemon; now each gets an error
// that names what was wrong, and the daemon keeps running and training.
#include <unistd.h>

#include <string>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "control.grpc.pb.h"
#include "harness.h"

namespace mycel::it {
namespace {

std::unique_ptr<control::Control::Stub> ControlStub(TestNode& node) {
  return control::Control::NewStub(
      grpc::CreateChannel("unix:" + node.daemon().socket_path(), grpc::InsecureChannelCredentials()));
}

// Predict with a FileChunk.file_index of 0xFFFFFFFF once crashed the daemon
// with SIGSEGV (a vector resized to index + 1, which wrapped to 0); an
// absurd `generate` held the trainer thread for as long as it ran.
TEST(HostileControlTest, PredictWithAWrappingFileIndexOrAHugeGenerateIsAnErrorNotACrash) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  ASSERT_EQ(node.Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_TRUE(node.WaitForStepsAbove(0, 90));
  auto stub = ControlStub(node);

  // The two idx files under hostile indices: reassembled by first use, so
  // the prediction works as with the CLI's indices 0 and 1.
  control::PredictRequest req;
  const std::string images = ReadFileOrDie(T10kImages()), labels = ReadFileOrDie(T10kLabels());
  for (auto [index, name, bytes] : {std::tuple{0xFFFFFFFFu, "images.gz", &images},
                                    std::tuple{0x7FFFFFFFu, "labels.gz", &labels}}) {
    control::FileChunk* c = req.add_files();
    c->set_file_index(index);
    c->set_name(name);
    c->set_format("idx");
    c->set_data(*bytes);
  }
  req.set_index(3);
  control::PredictReply reply;
  grpc::ClientContext ctx;
  grpc::Status status = stub->Predict(&ctx, req, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << node.daemon().LogSinceStart();
  EXPECT_EQ(reply.true_label(), T10kLabel(3));
  EXPECT_EQ(reply.top_size(), 3);
  ASSERT_TRUE(node.daemon().Running());

  control::PredictRequest gen;
  gen.set_text("the mycel");
  gen.set_generate(2000000000);
  grpc::ClientContext ctx2;
  status = stub->Predict(&ctx2, gen, &reply);
  // An MLP takes no text either way; the bound is checked first.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "predict: generate must be in [0, 10000], got 2000000000");
  gen.set_generate(-1);
  grpc::ClientContext ctx3;
  EXPECT_EQ(stub->Predict(&ctx3, gen, &reply).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  ASSERT_TRUE(node.daemon().Running());
  EXPECT_TRUE(node.WaitForStepsAbove(node.StatusNum("steps"), 60)) << "training stopped";
  EXPECT_EQ(node.daemon().Stop(), 0);
}

// The store outlives a [model]: changing `classes` is refused while the old
// checkpoints are there (exit 2, what to do); moving them away, as that error
// advises, once aborted every start in the first validation pass (a label 6
// for a 5-class head). Rows that do not fit the model are skipped, with one
// line that says so, and the rest trains.
TEST(HostileStateTest, RowsStoredUnderAWiderModelAreSkippedNotFatal) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  ASSERT_EQ(node.Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_TRUE(node.WaitForStepsAbove(0, 90));
  ASSERT_EQ(node.daemon().Stop(), 0);

  std::string config = ReadFileOrDie(node.config_path());
  const std::string seed = "seed = 7\n";
  ASSERT_NE(config.find(seed), std::string::npos) << config;
  config.replace(config.find(seed), seed.size(), seed + "classes = 5\n");
  WriteFileOrDie(node.config_path(), config);
  // With the old checkpoints still there: exit 2 (the unit does not restart
  // on it) with one line that names the checkpoint and what to do.
  const std::string out = tmp.path() + "/refused.out", err = tmp.path() + "/refused.err";
  auto refused = Process::Spawn({BinDir() + "/myceld", "-c", node.config_path()}, out, err);
  ASSERT_TRUE(refused);
  auto code = refused->Wait(60);
  ASSERT_TRUE(code.has_value()) << "myceld ran on a checkpoint of another model";
  EXPECT_EQ(*code, 2);
  const std::string why = ReadFileOrDie(err);
  EXPECT_NE(why.find("/checkpoints/ckpt-"), std::string::npos) << why;
  EXPECT_NE(why.find("restore the [model] config, or run `mycel reset`"), std::string::npos) << why;

  // Doing what it says: `mycel reset` deletes the checkpoints, and the new model starts.
  const std::string checkpoints = node.state_dir() + "/checkpoints";
  ASSERT_FALSE(ListDir(checkpoints).empty());
  CommandResult reset = node.Mycel({"reset"});
  ASSERT_EQ(reset.exit_code, 0) << reset.Describe();
  for (const std::string& f : ListDir(checkpoints)) EXPECT_EQ(f.rfind("ckpt-", 0), std::string::npos) << f;

  ASSERT_TRUE(node.daemon().Start());
  EXPECT_TRUE(node.WaitForStepsAbove(0, 90)) << node.daemon().LogSinceStart();
  ASSERT_TRUE(PollUntil([&] { return node.daemon().LogSinceStart().find("do not fit the model") != std::string::npos; },
                        30))
      << node.daemon().LogSinceStart();
  auto st = node.Status();
  ASSERT_TRUE(st.has_value());
  EXPECT_GT(st->Num("examples_train"), 0);  // nothing was deleted: the rows stay for a model that fits them

  // Evaluating the ten-class test set on a five-class model: one line naming
  // the file and the first label that does not fit, not an internal error.
  CommandResult r = node.Mycel({"eval", T10kImages(), T10kLabels()});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.err.find(T10kLabels() + ": label 9 at index 0 is outside [0, 5)"), std::string::npos)
      << r.Describe();
  ASSERT_TRUE(node.daemon().Running()) << node.daemon().LogSinceStart();
  EXPECT_TRUE(node.WaitForStepsAbove(node.StatusNum("steps"), 60)) << "training stopped";
  EXPECT_EQ(node.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
