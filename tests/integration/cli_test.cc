// What a newcomer meets first: the command line's usage errors, the README's
// "Using it" lines run as written (MYCEL_CONFIG, configs/demo.toml without
// the demo script's variable, options after the command), and the status
// a daemon shows before it has trained.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/version.h"
#include "harness.h"

namespace mycel::it {
namespace {

std::string Mycel() { return BinDir() + "/mycel"; }
std::string Myceld() { return BinDir() + "/myceld"; }

size_t Lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

TEST(CliTest, UsageErrorsAreOneLineWithTheNearestCommandAndExitTwo) {
  TempDir tmp;
  CommandResult v = RunCommand({Mycel(), "--version"}, tmp.path());
  EXPECT_EQ(v.exit_code, 0) << v.Describe();
  EXPECT_EQ(v.out, std::string("mycel ") + kVersion + "\n");
  v = RunCommand({Myceld(), "--version"}, tmp.path());
  EXPECT_EQ(v.exit_code, 0) << v.Describe();
  EXPECT_EQ(v.out, std::string("myceld ") + kVersion + "\n");

  // `mycel help` and `mycel help COMMAND` are help, not an error.
  CommandResult h = RunCommand({Mycel(), "help"}, tmp.path());
  EXPECT_EQ(h.exit_code, 0) << h.Describe();
  EXPECT_NE(h.out.find("Usage: mycel"), std::string::npos) << h.Describe();
  EXPECT_NE(h.out.find("status"), std::string::npos) << h.Describe();
  h = RunCommand({Mycel(), "help", "ingest"}, tmp.path());
  EXPECT_EQ(h.exit_code, 0) << h.Describe();
  EXPECT_NE(h.out.find("--labels"), std::string::npos) << h.Describe();

  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"stauts"}, "unknown command 'stauts'; did you mean 'status'?"},
      {{"peer"}, "did you mean 'peers'?"},
      {{"pred"}, "did you mean 'predict'?"},
      {{"--config", "x.toml", "ingset", "f.csv"}, "unknown command 'ingset'; did you mean 'ingest'?"},
      {{"help", "stauts"}, "unknown command 'stauts'; did you mean 'status'?"},
      {{"zzzzzz"}, "unknown command 'zzzzzz' (`mycel --help` lists the commands)"},
      {{}, "a command is required: status, pause"},
      {{"status", "--bogus"}, "--bogus"},
      {{"--config"}, "--config"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {Mycel()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = RunCommand(argv, tmp.path());
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_EQ(Lines(r.err), 1u) << "not one line: " << r.Describe();
    EXPECT_EQ(r.err.rfind("mycel: ", 0), 0u) << r.Describe();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << "expected '" << c.says << "': " << r.Describe();
    EXPECT_TRUE(r.out.empty()) << r.Describe();
  }
  CommandResult d = RunCommand({Myceld(), "--bogus"}, tmp.path());
  EXPECT_EQ(d.exit_code, 2) << d.Describe();
  EXPECT_EQ(Lines(d.err), 1u) << d.Describe();
  EXPECT_NE(d.err.find("--bogus"), std::string::npos) << d.Describe();
}

// The README's "Using it", line for line: MYCEL_CONFIG names the config for
// both binaries, configs/demo.toml runs without the demo script's
// MYCEL_DEMO_STATE, and options may follow the command.
TEST(CliTest, TheReadmeLinesWorkAsWrittenWithMycelConfig) {
  TempDir tmp;
  const std::string home = tmp.path() + "/home";
  ASSERT_EQ(::mkdir(home.c_str(), 0700), 0);
  const std::string config = std::string(MYCEL_SOURCE_DIR) + "/configs/demo.toml";
  // `env` sets the user's environment: a HOME of the test's own, no demo variable.
  auto env = [&](std::vector<std::string> argv, bool with_mycel_config = true) {
    std::vector<std::string> full = {"/usr/bin/env", "-u", "MYCEL_DEMO_STATE", "-u", "XDG_STATE_HOME",
                                     "-u", "XDG_CONFIG_HOME", "-u", "MYCEL_CONFIG", "HOME=" + home};
    if (with_mycel_config) full.push_back("MYCEL_CONFIG=" + config);
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
  };
  const std::string state = home + "/.local/state/mycel-demo";
  auto daemon = Process::Spawn(env({Myceld()}), tmp.path() + "/d.out", tmp.path() + "/d.log");
  ASSERT_TRUE(daemon);
  ASSERT_TRUE(PollUntil([&] { return Exists(state + "/control.sock") || !daemon->Running(); }, 60))
      << ReadFileOrDie(tmp.path() + "/d.log");
  ASSERT_TRUE(daemon->Running()) << ReadFileOrDie(tmp.path() + "/d.log");

  // No --config anywhere: MYCEL_CONFIG finds the daemon's socket.
  CommandResult r;
  ASSERT_TRUE(PollUntil([&] { return (r = RunCommand(env({Mycel(), "status"}), tmp.path())).exit_code == 0; }, 30))
      << r.Describe();
  // Before any data: placeholders, not figures of nothing.
  EXPECT_NE(r.out.find(std::string("(myceld ") + kVersion + ")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("train loss  - (no step yet)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpoint  none yet"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("-1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("steps/s"), std::string::npos) << "a rate while waiting for data: " << r.out;

  // Options after the command, as a user types them.
  r = RunCommand(env({Mycel(), "status", "--json", "--config", config}, /*with_mycel_config=*/false), tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto j = ParseJson(r.out);
  ASSERT_TRUE(j) << r.out;
  EXPECT_EQ(j->Str("version"), kVersion);
  EXPECT_EQ(j->Str("state_dir"), state);

  // `mycel id` names the same key the daemon uses.
  r = RunCommand(env({Mycel(), "id"}), tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out.substr(0, r.out.find('\n')), j->Str("public_key"));

  // `mycel predict` takes idx images without their labels file.
  r = RunCommand(env({Mycel(), "predict", T10kImages(), "--index", "3", "--json"}), tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto pj = ParseJson(r.out);
  ASSERT_TRUE(pj) << r.out;
  ASSERT_NE(pj->Find("top"), nullptr) << r.out;
  EXPECT_EQ(pj->Find("top")->array.size(), 3u) << r.out;
  EXPECT_FALSE(pj->Has("true_label")) << r.out;
  // configs/demo.toml names Fashion-MNIST's classes: predict prints them.
  const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  for (const Json& top : pj->Find("top")->array) {
    EXPECT_EQ(top.Str("name"), names.at(static_cast<size_t>(top.Num("label")))) << r.out;
  }
  r = RunCommand(env({Mycel(), "predict", T10kImages(), "--index", "3"}), tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find(names.at(static_cast<size_t>(pj->Find("top")->array[0].Num("label")))), std::string::npos)
      << r.out;

  // `mycel export --out DIR` writes DIR/model.pt.
  const std::string out_dir = tmp.path() + "/exports";
  ASSERT_EQ(::mkdir(out_dir.c_str(), 0700), 0);
  r = RunCommand(env({Mycel(), "export", "--out", out_dir}), tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find(out_dir + "/model.pt"), std::string::npos) << r.out;
  EXPECT_TRUE(Exists(out_dir + "/model.pt"));

  // `status --watch` says the daemon stopped, not an RPC code, when it does.
  auto watch = Process::Spawn(env({Mycel(), "status", "--watch", "--interval", "0.2"}), tmp.path() + "/w.out",
                              tmp.path() + "/w.err");
  ASSERT_TRUE(watch);
  SleepSeconds(1);
  daemon->Signal(SIGTERM);
  auto code = daemon->Wait(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  auto watch_code = watch->Wait(30);
  ASSERT_TRUE(watch_code.has_value()) << "--watch went on after the daemon stopped";
  EXPECT_EQ(*watch_code, 0);
  // `mycel doctor` without a daemon: one line says so and what to do.
  r = RunCommand(env({Mycel(), "doctor"}), tmp.path());
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.out.find("FIX  daemon         myceld is not running"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("OK   config"), std::string::npos) << r.out;
  const std::string watched = ReadFileOrDie(tmp.path() + "/w.out");
  EXPECT_NE(watched.find("myceld has stopped"), std::string::npos) << watched;
  EXPECT_EQ(watched.find("CANCELLED"), std::string::npos) << watched;
}

// A neighbour that is not there: the peers table says why in a few words,
// and --json keeps gRPC's whole message for whoever debugs it.
TEST(CliTest, PeersTableGivesAShortReasonAndJsonTheFullOne) {
  TempDir tmp;
  TestNode other(tmp.path(), "other");
  CommandResult id = other.Mycel({"id"});
  ASSERT_EQ(id.exit_code, 0) << id.Describe();
  const std::string key = id.out.substr(0, id.out.find('\n'));
  ConfigSpec spec;
  spec.extra_node = "listen = \"127.0.0.1:" + std::to_string(FreePort()) + "\"\n";
  TestNode node(tmp.path(), "node", spec);
  WriteFileOrDie(node.config_path(), ReadFileOrDie(node.config_path()) + "\n[[peers]]\nname = \"other\"\n" +
                                         "address = \"127.0.0.1:" + std::to_string(FreePort()) + "\"\n" +
                                         "public_key = \"" + key + "\"\n");
  ASSERT_TRUE(node.daemon().Start());
  std::optional<Json> peers;
  ASSERT_TRUE(PollUntil(
      [&] {
        peers = node.MycelJson({"peers"});
        const Json* list = peers ? peers->Find("peers") : nullptr;
        return list != nullptr && list->array.size() == 1 && list->array[0].Str("state") == "unreachable";
      },
      60))
      << node.daemon().LogSinceStart();
  const std::string full = peers->Find("peers")->array[0].Str("last_error");
  EXPECT_NE(full.find("Connection refused"), std::string::npos) << full;  // gRPC's own words, all of them
  CommandResult table = node.Mycel({"peers"});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_NE(table.out.find("connection refused (is myceld running there, with listen set?)"), std::string::npos)
      << table.out;
  EXPECT_EQ(table.out.find("ipv4:"), std::string::npos) << "gRPC's chain in the table: " << table.out;
  EXPECT_EQ(node.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
