// The public API (include/mycel/client.h and its C ABI, mycel.h) against a
// real myceld: examples in (one call, a stream, bad ones refused one by one),
// predictions out, status, pause/resume, watching state changes, and what a
// caller sees when the daemon is not there or goes away.
#include <signal.h>

#include <atomic>
#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "mycel/client.h"
#include "mycel/mycel.h"

namespace mycel::it {
namespace {

constexpr int kWidth = 784;

// A distinct 28x28 input: pixel `mark % 784` lit, so no two are the same example.
std::vector<float> Pixels(int mark) {
  std::vector<float> v(kWidth, 0.0f);
  v[mark % kWidth] = 0.25f + 0.5f * static_cast<float>(mark / kWidth % 2);
  v[(mark * 7 + 3) % kWidth] = 1.0f;
  return v;
}

// Starts the node's daemon and opens a client on its config; nullptr (after a
// test failure) if either fails.
std::unique_ptr<Client> StartAndOpen(TestNode& node) {
  ::testing::AssertionResult started = node.daemon().Start();
  if (!started) {
    ADD_FAILURE() << started.message();
    return nullptr;
  }
  ClientOptions options;
  options.config_path = node.config_path();
  std::unique_ptr<Client> client;
  Status s = Client::Open(options, &client);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return client;
}

TEST(ClientApiTest, ExamplesInBadOnesRefusedOneByOnePredictionsOut) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  auto client = StartAndOpen(node);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->socket_path(), node.daemon().socket_path());

  std::vector<Example> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(Example::Labelled(i % 10, Pixels(i)));
  batch[3] = Example::Labelled(3, std::vector<float>(10, 0.0f));  // wrong width
  batch[5].label = 10;                                              // no such class
  batch[7].values[100] = std::nanf("");                             // not finite
  batch[8] = Example::Text("some text");                            // a classifier takes no text
  AddResult result;
  Status s = client->AddExamples(batch, &result);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(result.stored, 6);
  ASSERT_EQ(result.refused.size(), 4u);
  EXPECT_EQ(result.refused[0].index, 3);
  EXPECT_NE(result.refused[0].reason.find("has 10 values but the model takes 784"), std::string::npos)
      << result.refused[0].reason;
  EXPECT_EQ(result.refused[1].index, 5);
  EXPECT_NE(result.refused[1].reason.find("label 10 is outside [0, 10)"), std::string::npos);
  EXPECT_EQ(result.refused[2].index, 7);
  EXPECT_NE(result.refused[2].reason.find("not finite"), std::string::npos);
  EXPECT_EQ(result.refused[3].index, 8);
  EXPECT_EQ(result.examples_train + result.examples_val, 6);
  EXPECT_EQ(node.ExampleCount(), 6);  // committed before the call returned

  // The same examples again are duplicates, not new rows.
  batch.erase(batch.begin() + 3, batch.begin() + 9);
  ASSERT_TRUE(client->AddExamples(batch, &result).ok());
  EXPECT_EQ(result.stored, 0);
  EXPECT_EQ(result.duplicates, 4);

  std::vector<Prediction> top;
  s = client->Predict(Pixels(1), 3, &top);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(top.size(), 3u);
  double sum = 0;
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_GE(top[i].label, 0);
    EXPECT_LT(top[i].label, 10);
    EXPECT_GE(top[i].probability, 0.0);
    if (i > 0) {
      EXPECT_GE(top[i - 1].probability, top[i].probability);
    }
    sum += top[i].probability;
  }
  EXPECT_LE(sum, 1.0 + 1e-6);
  s = client->Predict(std::vector<float>(5, 0.0f), 3, &top);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("5 values but the model takes 784"), std::string::npos) << s.message();
  s = client->PredictText("hello", 3, 0, &top, nullptr);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
}

// Pixels scaled to [0, 1] as the daemon scales them (k / 255.0f) are the
// same rows an idx file of those images stores: kept as uint8, and found
// already stored.
TEST(ClientApiTest, ImagesScaledToOneAreStoredAsTheIdxFileStoresThem) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  auto client = StartAndOpen(node);
  ASSERT_TRUE(client);
  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string images = GunzipFileOrDie(T10kImages());
  std::vector<Example> batch;
  for (int i = 0; i < 3; ++i) {
    std::vector<float> v(kWidth);
    for (int j = 0; j < kWidth; ++j) v[j] = static_cast<uint8_t>(images[16 + i * kWidth + j]) / 255.0f;
    batch.push_back(Example::Labelled(T10kLabel(i), std::move(v)));
  }
  batch.push_back(batch[0]);
  batch.back().values[0] = 0.3f;  // not k / 255: a new float32 row
  AddResult result;
  ASSERT_TRUE(client->AddExamples(batch, &result).ok());
  EXPECT_EQ(result.duplicates, 3);
  EXPECT_EQ(result.stored, 1);
  EXPECT_EQ(node.ExampleCount(), kT10kCount + 1);
}

TEST(ClientApiTest, AStreamCommitsEachBurstAndNumbersRefusalsFromItsStart) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  auto client = StartAndOpen(node);
  ASSERT_TRUE(client);
  std::unique_ptr<ExampleStream> stream;
  ASSERT_TRUE(client->OpenExampleStream(1000, &stream).ok());
  constexpr int kCount = 2500;
  for (int i = 0; i < kCount; ++i) {
    Example e = Example::Labelled(i % 10, Pixels(i));
    if (i == 1234) e.label = -1;
    Status s = stream->Add(std::move(e));
    ASSERT_TRUE(s.ok()) << s.ToString();
    // Two bursts of 1000 went out; the first was acknowledged, so it is in the store.
    if (i == 1999) {
      EXPECT_GE(node.ExampleCount(), 1000);
    }
  }
  // Flush waits for every burst sent: all but the refused one are stored.
  ASSERT_TRUE(stream->Flush().ok());
  EXPECT_EQ(node.ExampleCount(), kCount - 1);
  AddResult total;
  Status s = stream->Finish(&total);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(total.stored, kCount - 1);
  ASSERT_EQ(total.refused.size(), 1u);
  EXPECT_EQ(total.refused[0].index, 1234);
  EXPECT_EQ(node.ExampleCount(), kCount - 1);
  EXPECT_EQ(stream->Add(Example::Labelled(0, Pixels(0))).code(), Status::Code::kFailedPrecondition);

  Status bad = client->OpenExampleStream(0, &stream);
  EXPECT_EQ(bad.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad.message().find("burst_size must be in [1, 4096]"), std::string::npos) << bad.message();
}

TEST(ClientApiTest, WatchSeesPauseAndResumeAndTheDaemonGoingAway) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  auto client = StartAndOpen(node);
  ASSERT_TRUE(client);
  DaemonStatus status;
  ASSERT_TRUE(client->GetStatus(&status).ok());
  EXPECT_EQ(status.node_name, "node");
  EXPECT_EQ(status.model_kind, "mlp");
  EXPECT_EQ(status.state, "waiting_for_data");

  std::vector<std::string> seen;
  std::atomic<bool> watching{false};
  Status watch_end;
  std::thread watcher([&] {
    watch_end = client->Watch(
        [&](const DaemonStatus& st) {
          seen.push_back(st.state);
          watching = true;
          return true;  // until the daemon goes away
        },
        120);
  });
  ASSERT_TRUE(PollUntil([&] { return watching.load(); }, 30));
  ASSERT_TRUE(client->Pause().ok());
  ASSERT_TRUE(PollUntil([&] { return client->GetStatus(&status).ok() && status.state == "paused"; }, 30));
  SleepSeconds(0.5);  // a Watch polls every 100 ms
  ASSERT_TRUE(client->Resume().ok());
  ASSERT_TRUE(PollUntil([&] { return client->GetStatus(&status).ok() && status.state != "paused"; }, 30));
  SleepSeconds(0.5);
  ASSERT_EQ(node.daemon().Stop(), 0);
  watcher.join();
  EXPECT_EQ(watch_end.code(), Status::Code::kUnavailable) << watch_end.ToString();
  ASSERT_GE(seen.size(), 3u);
  EXPECT_EQ(seen[0], "waiting_for_data");
  EXPECT_NE(std::find(seen.begin(), seen.end(), "paused"), seen.end());
  EXPECT_NE(seen.back(), "paused");
  for (size_t i = 1; i < seen.size(); ++i) {
    // Only changes are sent (a state or its reason): no two equal in a row for one reason.
    if (seen[i] == seen[i - 1]) {
      EXPECT_NE(seen[i], "paused");
    }
  }

  // Gone: the next call says the daemon is not running, where it looked.
  Status s = client->GetStatus(&status);
  EXPECT_EQ(s.code(), Status::Code::kUnavailable);
  EXPECT_NE(s.message().find("myceld is not running"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find(node.daemon().socket_path()), std::string::npos) << s.message();
}

TEST(ClientApiTest, OpenRefusesABadConfigAndAnAbsurdTimeout) {
  TempDir tmp;
  WriteFileOrDie(tmp.path() + "/bad.toml", "[node\nname = 1\n");
  ClientOptions options;
  options.config_path = tmp.path() + "/bad.toml";
  std::unique_ptr<Client> client;
  Status s = Client::Open(options, &client);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("bad.toml"), std::string::npos) << s.message();
  options.config_path = tmp.path() + "/missing.toml";
  s = Client::Open(options, &client);
  EXPECT_EQ(s.code(), Status::Code::kNotFound) << s.ToString();
  options = ClientOptions();
  options.socket_path = tmp.path() + "/control.sock";
  options.timeout_s = std::nan("");
  EXPECT_EQ(Client::Open(options, &client).code(), Status::Code::kInvalidArgument);
}

// ----------------------------------------------------------------- the C ABI

int CountUntilPaused(const mycel_daemon_status* st, void* user) {
  auto* states = static_cast<std::vector<std::string>*>(user);
  states->push_back(st->state);
  return std::string(st->state) == "paused" ? 0 : 1;
}

TEST(ClientApiTest, TheCAbiDoesWhatTheCppClientDoes) {
  TempDir tmp;
  TestNode node(tmp.path(), "node");
  mycel_client* c = nullptr;
  // Not running yet: open succeeds (lazily), the first call says why not.
  ASSERT_EQ(mycel_open(node.daemon().socket_path().c_str(), nullptr, &c), MYCEL_OK) << mycel_open_error();
  mycel_daemon_status st;
  EXPECT_EQ(mycel_status_get(c, &st), MYCEL_UNAVAILABLE);
  EXPECT_NE(std::string(mycel_last_error(c)).find("myceld is not running"), std::string::npos) << mycel_last_error(c);
  ASSERT_TRUE(node.daemon().Start());

  std::vector<float> values;
  std::vector<int64_t> labels;
  for (int i = 0; i < 20; ++i) {
    std::vector<float> p = Pixels(i);
    values.insert(values.end(), p.begin(), p.end());
    labels.push_back(i % 10);
  }
  labels[4] = 99;
  int64_t stored = -1, refused = -1;
  ASSERT_EQ(mycel_add_examples(c, values.data(), labels.data(), 20, kWidth, &stored, &refused), MYCEL_OK)
      << mycel_last_error(c);
  EXPECT_EQ(stored, 19);
  EXPECT_EQ(refused, 1);
  EXPECT_STREQ(mycel_last_error(c), "");
  EXPECT_EQ(node.ExampleCount(), 19);

  mycel_prediction top[4];
  size_t n = 0;
  ASSERT_EQ(mycel_predict(c, values.data(), kWidth, top, 4, &n), MYCEL_OK) << mycel_last_error(c);
  ASSERT_EQ(n, 4u);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_GE(top[i].label, 0);
    EXPECT_LT(top[i].label, 10);
    ASSERT_NE(top[i].name, nullptr);
  }
  EXPECT_EQ(mycel_predict(c, values.data(), 3, top, 4, &n), MYCEL_INVALID_ARGUMENT);
  EXPECT_NE(std::string(mycel_last_error(c)).find("3 values"), std::string::npos) << mycel_last_error(c);
  EXPECT_EQ(mycel_predict(c, nullptr, kWidth, top, 4, &n), MYCEL_INVALID_ARGUMENT);
  EXPECT_EQ(mycel_add_text(c, "text for a classifier", &stored, &refused), MYCEL_OK);
  EXPECT_EQ(refused, 1);

  std::vector<std::string> states;
  std::thread pauser([&] {
    SleepSeconds(0.5);
    (void)mycel_pause(c);
  });
  EXPECT_EQ(mycel_watch(c, CountUntilPaused, &states, 60), MYCEL_OK) << mycel_last_error(c);
  pauser.join();
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back(), "paused");
  ASSERT_EQ(mycel_status_get(c, &st), MYCEL_OK);
  EXPECT_STREQ(st.state, "paused");
  EXPECT_EQ(st.examples_train + st.examples_val, 19);
  ASSERT_EQ(mycel_resume(c), MYCEL_OK);
  mycel_close(c);
  mycel_close(nullptr);

  EXPECT_EQ(mycel_open(nullptr, (tmp.path() + "/missing.toml").c_str(), &c), MYCEL_NOT_FOUND);
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(std::string(mycel_open_error()).find("missing.toml"), std::string::npos) << mycel_open_error();
}

}  // namespace
}  // namespace mycel::it
