// Control module tests: the real ControlServer on a real Unix socket, called
// through the generated stub over real gRPC. The handler on the other side of
// the ControlHandler seam is scripted here, so the tests can report progress
// at a known pace and see what the server does with it: how often it reaches
// the client, and whether a client that goes away stops the handler.
#include "control/control_server.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/test_util.h"
#include "control.grpc.pb.h"

namespace mycel::control {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Ingest runs the script with the server's progress function; everything
// else is unimplemented. A test sets the script while the server runs and
// reads what Predict saw after its call returns; the RPC orders both, but
// through gRPC's own locks, which ThreadSanitizer cannot see, so both sides
// also take mu_.
class ScriptedHandler : public ControlHandler {
 public:
  using Script = std::function<absl::StatusOr<IngestReply>(const IngestProgressFn&)>;

  void SetScript(Script script) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = std::move(script);
  }
  std::vector<UploadedFile> predict_files() const {
    std::lock_guard<std::mutex> lock(mu_);
    return predict_files_;
  }

  absl::StatusOr<IngestReply> Ingest(std::vector<UploadedFile> files, const IngestOptions&,
                                     const IngestProgressFn& progress) override {
    files_received = static_cast<int>(files.size());
    Script script;
    {
      std::lock_guard<std::mutex> lock(mu_);
      script = script_;
    }
    return script(progress);
  }
  absl::StatusOr<StatusReply> GetStatus() override { return absl::UnimplementedError("status"); }
  absl::StatusOr<PauseReply> SetPaused(bool) override { return absl::UnimplementedError("pause"); }
  absl::StatusOr<EvalReply> Eval(std::vector<UploadedFile>, const std::string&) override {
    return absl::UnimplementedError("eval");
  }
  absl::StatusOr<PredictReply> Predict(const PredictRequest&, std::vector<UploadedFile> files) override {
    std::lock_guard<std::mutex> lock(mu_);
    predict_files_ = std::move(files);
    return PredictReply();
  }
  absl::StatusOr<std::string> Export() override { return absl::UnimplementedError("export"); }
  absl::StatusOr<PeersReply> GetPeers() override { return absl::UnimplementedError("peers"); }
  absl::StatusOr<DataReply> GetData(const DataRequest&) override { return absl::UnimplementedError("data"); }
  absl::StatusOr<ForgetReply> Forget(const ForgetRequest&) override { return absl::UnimplementedError("forget"); }
  absl::StatusOr<mycel::control::ReloadReply> Reload() override { return absl::UnimplementedError("reload"); }
  absl::StatusOr<mycel::control::HistoryReply> GetHistory(const mycel::control::HistoryRequest&) override {
    return absl::UnimplementedError("history");
  }
  absl::StatusOr<mycel::control::BurstAck> AddExamples(const mycel::control::ExampleBurst&) override {
    return absl::UnimplementedError("add examples");
  }

  std::atomic<int> files_received{0};

 private:
  mutable std::mutex mu_;
  Script script_;
  std::vector<UploadedFile> predict_files_;
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<test::TempDir>();
    ControlServerOptions options;
    options.socket_path = dir_->path() + "/control.sock";
    auto server = ControlServer::Start(options, handler_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    stub_ = Control::NewStub(grpc::CreateChannel("unix:" + options.socket_path, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_.reset();
    dir_.reset();
  }

  // Starts an Ingest of one small file and closes the sending side.
  std::unique_ptr<grpc::ClientReaderWriter<FileChunk, IngestProgress>> StartIngest(grpc::ClientContext* ctx) {
    auto stream = stub_->Ingest(ctx);
    FileChunk chunk;
    chunk.set_name("a.csv");
    chunk.set_data("1,2,3\n");
    // A stream the server refuses at once (a second concurrent ingest) may
    // be closed before these land; Finish() then says why, and the tests
    // check that, not the writes.
    stream->Write(chunk);
    stream->WritesDone();
    return stream;
  }

  std::unique_ptr<test::TempDir> dir_;
  ScriptedHandler handler_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<Control::Stub> stub_;
};

// A handler reporting 400 times in ~1.2 s reaches the client as a dozen or so
// messages: parsing once, storing at most every 100 ms with counts that rise
// to the total, then the result.
TEST_F(ControlServerTest, IngestStreamsThrottledProgressThenTheResult) {
  constexpr int64_t kTotal = 400;
  handler_.SetScript([](const IngestProgressFn& progress) -> absl::StatusOr<IngestReply> {
    if (!progress(IngestProgress::PARSING, 0, 0)) return absl::CancelledError("parsing");
    for (int64_t done = 1; done <= kTotal; ++done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      if (!progress(IngestProgress::STORING, done, kTotal)) return absl::CancelledError("storing");
    }
    IngestReply reply;
    reply.set_stored(kTotal);
    reply.set_examples_train(kTotal - 40);
    return reply;
  });
  grpc::ClientContext ctx;
  const Clock::time_point start = Clock::now();
  auto stream = StartIngest(&ctx);
  std::vector<IngestProgress> messages;
  IngestProgress m;
  while (stream->Read(&m)) messages.push_back(m);
  const double seconds = SecondsSince(start);
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(handler_.files_received, 1);

  ASSERT_GE(messages.size(), 3u);
  EXPECT_EQ(messages.front().phase(), IngestProgress::PARSING);
  EXPECT_EQ(messages.back().phase(), IngestProgress::DONE);
  EXPECT_EQ(messages.back().reply().stored(), kTotal);
  EXPECT_EQ(messages.back().reply().examples_train(), kTotal - 40);
  std::vector<int64_t> storing;
  for (size_t i = 1; i + 1 < messages.size(); ++i) {
    EXPECT_EQ(messages[i].phase(), IngestProgress::STORING) << "message " << i;
    EXPECT_EQ(messages[i].total(), kTotal);
    storing.push_back(messages[i].done());
  }
  ASSERT_FALSE(storing.empty());
  for (size_t i = 1; i < storing.size(); ++i) EXPECT_GT(storing[i], storing[i - 1]);
  EXPECT_EQ(storing.back(), kTotal) << "the last report of a phase must get through";
  // Throttled: one message per 100 ms plus the forced last one (and slack
  // for the first); live: not just the first and the last.
  EXPECT_LE(storing.size(), static_cast<size_t>(seconds / kIngestProgressInterval) + 2) << seconds << " s";
  EXPECT_GE(storing.size(), 4u) << seconds << " s";
}

// A handler's error reaches the client as the RPC status, message intact,
// after whatever progress came before it, and without a DONE.
TEST_F(ControlServerTest, IngestErrorArrivesAsTheStatusWithItsMessage) {
  handler_.SetScript([](const IngestProgressFn& progress) -> absl::StatusOr<IngestReply> {
    progress(IngestProgress::PARSING, 0, 0);
    return absl::InvalidArgumentError("a.csv:1: expected 785 fields, got 3");
  });
  grpc::ClientContext ctx;
  auto stream = StartIngest(&ctx);
  IngestProgress m;
  while (stream->Read(&m)) EXPECT_NE(m.phase(), IngestProgress::DONE);
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "a.csv:1: expected 785 fields, got 3");
}

// A client that cancels (or dies) mid-store makes the progress function say
// stop, so the handler can roll back instead of committing for nobody.
TEST_F(ControlServerTest, ClientThatGoesAwayStopsTheHandler) {
  std::atomic<bool> told_to_stop{false};
  std::atomic<int64_t> reports_after_cancel{0};
  std::atomic<bool> cancelled{false};
  handler_.SetScript([&](const IngestProgressFn& progress) -> absl::StatusOr<IngestReply> {
    progress(IngestProgress::PARSING, 0, 0);
    const Clock::time_point start = Clock::now();
    for (int64_t done = 1; SecondsSince(start) < 20; ++done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (cancelled) ++reports_after_cancel;
      if (!progress(IngestProgress::STORING, done, 1 << 30)) {
        told_to_stop = true;
        return absl::CancelledError("stopped");
      }
    }
    return IngestReply();
  });
  grpc::ClientContext ctx;
  auto stream = StartIngest(&ctx);
  IngestProgress m;
  bool saw_storing = false;
  while (!saw_storing && stream->Read(&m)) saw_storing = m.phase() == IngestProgress::STORING;
  ASSERT_TRUE(saw_storing);
  const Clock::time_point cancel_time = Clock::now();
  cancelled = true;
  ctx.TryCancel();
  stream->Finish();
  while (!told_to_stop && SecondsSince(cancel_time) < 10) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(told_to_stop) << "the handler kept going for 10 s after the client cancelled";
  std::printf("handler stopped %.3f s and %lld reports after the client cancelled\n", SecondsSince(cancel_time),
              static_cast<long long>(reports_after_cancel.load()));
  // The server waits for the handler on shutdown; it must be done by now.
  server_.reset();
}

// A file_index is the client's label, not a size: 0xFFFFFFFF once crashed the
// daemon by resizing a vector to it (the index wrapped to 0 after + 1).
// Chunks of one index are joined in order; indices number files by first use.
TEST_F(ControlServerTest, PredictFileIndicesAreLabelsNotSizes) {
  PredictRequest req;
  auto add = [&req](uint32_t index, const std::string& name, const std::string& data) {
    FileChunk* c = req.add_files();
    c->set_file_index(index);
    c->set_name(name);
    c->set_data(data);
  };
  add(0xFFFFFFFFu, "images", "ab");
  add(7, "labels", "xy");
  add(0xFFFFFFFFu, "images", "cd");
  grpc::ClientContext ctx;
  PredictReply reply;
  grpc::Status status = stub_->Predict(&ctx, req, &reply);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const std::vector<UploadedFile> files = handler_.predict_files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].name, "images");
  EXPECT_EQ(files[0].bytes, "abcd");
  EXPECT_EQ(files[1].name, "labels");
  EXPECT_EQ(files[1].bytes, "xy");

  PredictRequest many;
  for (uint32_t i = 0; i < 1025; ++i) {
    FileChunk* c = many.add_files();
    c->set_file_index(i * 4000000u);
  }
  grpc::ClientContext ctx2;
  status = stub_->Predict(&ctx2, many, &reply);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "more than 1024 files in one request");
}

// One ingest at a time: a second stream is refused before its bytes are
// buffered, with a message that says what to do; once the first is done, the
// next one goes through.
TEST_F(ControlServerTest, ASecondConcurrentIngestIsRefusedUntilTheFirstEnds) {
  std::atomic<bool> release{false};
  std::atomic<int> calls{0};
  handler_.SetScript([&](const IngestProgressFn& progress) -> absl::StatusOr<IngestReply> {
    ++calls;
    progress(IngestProgress::PARSING, 0, 0);
    const Clock::time_point start = Clock::now();
    while (!release && SecondsSince(start) < 20) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return IngestReply();
  });
  grpc::ClientContext first_ctx;
  auto first = StartIngest(&first_ctx);
  IngestProgress m;
  ASSERT_TRUE(first->Read(&m));  // the first is inside the handler now
  EXPECT_EQ(m.phase(), IngestProgress::PARSING);

  grpc::ClientContext second_ctx;
  auto second = StartIngest(&second_ctx);
  while (second->Read(&m)) {
  }
  grpc::Status status = second->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(status.error_message(), "another ingest is running (at most 1 at a time); retry when it has finished");
  EXPECT_EQ(calls.load(), 1);

  release = true;
  while (first->Read(&m)) {
  }
  EXPECT_TRUE(first->Finish().ok());
  grpc::ClientContext third_ctx;
  auto third = StartIngest(&third_ctx);
  while (third->Read(&m)) {
  }
  EXPECT_TRUE(third->Finish().ok());
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace mycel::control
