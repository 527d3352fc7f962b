// The daemon's life as a user sees it: start, learn Fashion-MNIST, pause,
// restart, resume, evaluate, predict, export, stop; the CLI without a daemon;
// refused configs; one daemon per state directory.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

// Step of the "checkpoint N written (shutdown) at step S" line, or -1.
int64_t ShutdownCheckpointStep(const std::string& log) {
  static const std::regex re(R"(checkpoint \d+ written \(shutdown\) at step (\d+))");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return -1;
  return std::stoll(m[1]);
}

std::string StatusLine(const std::optional<Json>& st) {
  if (!st) return "(no status)";
  std::ostringstream os;
  os << "state=" << st->Str("state") << " reason='" << st->Str("reason") << "' steps=" << st->Num("steps")
     << " val_accuracy=" << st->Num("val_accuracy") << " examples=" << st->Num("examples_train") << "+"
     << st->Num("examples_val");
  return os.str();
}

// Polls until status reports `state`; leaves the last status in *st.
bool WaitForState(const TestNode& node, const std::string& state, double timeout_s, std::optional<Json>* st) {
  return PollUntil(
      [&] {
        *st = node.Status();
        return *st && (*st)->Str("state") == state;
      },
      timeout_s, 0.2);
}

// The harness's own JSON reader, on the shapes the CLI prints.
TEST(HarnessTest, ParsesCliJson) {
  auto j = ParseJson(R"({"state":"paused","reason":"paused by user","steps":12,"val_loss":null,)"
                     R"("x":-1.5e-3,"top":[{"label":9,"probability":0.75}],"s":"a\"b\n\u0001"})");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->Str("state"), "paused");
  EXPECT_EQ(j->Num("steps"), 12);
  EXPECT_TRUE(std::isnan(j->Num("val_loss")));
  EXPECT_EQ(j->Num("x"), -1.5e-3);
  EXPECT_EQ(j->Find("top")->array.at(0).Num("probability"), 0.75);
  EXPECT_EQ(j->Str("s"), std::string("a\"b\n\x01"));
  EXPECT_FALSE(ParseJson("{\"a\":1"));
  EXPECT_FALSE(ParseJson("{\"a\":1} x"));
  EXPECT_FALSE(ParseJson(""));
}

class DaemonTest : public ::testing::Test {
 protected:
  TempDir tmp_;
};

TEST_F(DaemonTest, LearnsPausesSurvivesRestartEvaluatesPredictsExports) {
  TestNode node(tmp_.path(), "node");
  ASSERT_TRUE(node.daemon().Start());

  // No data yet: it waits, and says so in every field a user scripts against.
  std::optional<Json> st;
  ASSERT_TRUE(WaitForState(node, "waiting_for_data", 30, &st)) << StatusLine(st);
  for (const char* key : {"state", "reason", "steps", "examples_train", "examples_val", "train_loss", "val_loss",
                          "val_accuracy", "parameters"}) {
    EXPECT_TRUE(st->Has(key)) << "status --json lacks '" << key << "'";
  }
  // MLP 784 -> 128 -> 10: 784*128 + 128 + 128*10 + 10.
  EXPECT_EQ(st->Num("parameters"), 101770);
  EXPECT_EQ(st->Num("steps"), 0);
  EXPECT_EQ(st->Num("examples_train") + st->Num("examples_val"), 0);
  EXPECT_FALSE(st->Str("reason").empty());

  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("stored 10000 examples"), std::string::npos) << r.Describe();
  EXPECT_EQ(node.ExampleCount(), kT10kCount);

  // It learns: Fashion-MNIST passes 60% held-out accuracy within a few hundred steps.
  ASSERT_TRUE(PollUntil(
      [&] {
        st = node.Status();
        return st && st->Num("steps") > 0 && st->Num("val_accuracy") > 0.6;
      },
      120, 0.5))
      << StatusLine(st) << "\nlog:\n" << node.daemon().LogSinceStart();
  EXPECT_EQ(st->Str("state"), "training");
  EXPECT_TRUE(std::isfinite(st->Num("train_loss")));
  EXPECT_TRUE(std::isfinite(st->Num("val_loss")));

  // Pause: the trainer stops between two steps and says why.
  r = node.Mycel({"pause"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(WaitForState(node, "paused", 15, &st)) << StatusLine(st);
  EXPECT_EQ(st->Str("reason"), "paused by user");
  const double frozen = st->Num("steps");
  SleepSeconds(1.0);
  EXPECT_EQ(node.StatusNum("steps"), frozen) << "steps moved while paused";

  // Restart while paused: SIGTERM exits 0 after a final checkpoint.
  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value()) << "myceld did not exit within 60 s of SIGTERM";
  EXPECT_EQ(*code, 0) << node.daemon().LogSinceStart();
  const std::string shutdown_log = node.daemon().LogSinceStart();
  EXPECT_EQ(ShutdownCheckpointStep(shutdown_log), static_cast<int64_t>(frozen))
      << "no shutdown checkpoint at the paused step in the log:\n" << shutdown_log;

  ASSERT_TRUE(node.daemon().Start());
  ASSERT_TRUE(WaitForState(node, "paused", 30, &st)) << "the pause did not survive a restart: " << StatusLine(st);
  EXPECT_EQ(st->Str("reason"), "paused by user");
  EXPECT_EQ(st->Num("steps"), frozen) << "restored a different step count";
  EXPECT_EQ(st->Num("examples_train") + st->Num("examples_val"), kT10kCount);
  SleepSeconds(0.5);
  EXPECT_EQ(node.StatusNum("steps"), frozen) << "trained while still paused after restart";

  r = node.Mycel({"resume"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(node.WaitForStepsAbove(frozen, 60)) << "no training after resume:\n" << node.daemon().LogSinceStart();

  // Evaluate on the whole t10k pair.
  r = node.Mycel({"eval", T10kImages(), T10kLabels(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto eval = ParseJson(r.out);
  ASSERT_TRUE(eval && eval->type == Json::Type::kObject) << r.Describe();
  EXPECT_GT(eval->Num("accuracy"), 0.6);
  EXPECT_EQ(eval->Num("examples"), kT10kCount);
  EXPECT_TRUE(std::isfinite(eval->Num("loss")) && eval->Num("loss") > 0) << r.out;

  // Hold the weights still so predictions and the export see the same model.
  ASSERT_EQ(node.Mycel({"pause"}).exit_code, 0);
  ASSERT_TRUE(PollUntil([&] { return node.Status()->Str("state") == "paused"; }, 30));

  // Predict single images: probabilities, and the true label from the file.
  std::vector<int> predicted;
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE("predict --index " + std::to_string(i));
    r = node.Mycel({"predict", T10kImages(), T10kLabels(), "--index", std::to_string(i), "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    auto p = ParseJson(r.out);
    ASSERT_TRUE(p && p->type == Json::Type::kObject) << r.Describe();
    const Json* top = p->Find("top");
    ASSERT_TRUE(top && top->type == Json::Type::kArray && !top->array.empty()) << r.out;
    EXPECT_EQ(top->array.size(), 3u) << "default --top is 3: " << r.out;
    double sum = 0, prev = 2;
    for (const Json& t : top->array) {
      double prob = t.Num("probability");
      double label = t.Num("label");
      EXPECT_GE(prob, 0) << r.out;
      EXPECT_LE(prob, prev) << "top is not sorted: " << r.out;
      EXPECT_TRUE(label >= 0 && label < 10) << r.out;
      prev = prob;
      sum += prob;
    }
    EXPECT_LE(sum, 1 + 1e-6) << r.out;
    EXPECT_EQ(p->Num("true_label"), T10kLabel(i)) << r.out;
    predicted.push_back(static_cast<int>(top->array[0].Num("label")));
  }
  r = node.Mycel({"predict", T10kImages(), T10kLabels(), "--index", "10000"});
  EXPECT_NE(r.exit_code, 0) << "index past the end accepted: " << r.Describe();

  // Export TorchScript: a zip archive that torch.jit.load opens.
  const std::string pt = tmp_.path() + "/x.pt";
  r = node.Mycel({"export", "--out", pt});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(Exists(pt));
  const std::string bytes = ReadFileOrDie(pt);
  EXPECT_GT(bytes.size(), 101770u * 4) << "smaller than the float32 weights";
  EXPECT_EQ(bytes.substr(0, 4), std::string("PK\x03\x04", 4)) << "TorchScript files are zip archives";
  // Debian's python3-torch (installed by scripts/install-deps.sh) lives under
  // /usr/bin/python3; a python3 earlier on PATH may lack it.
  std::string python;
  for (std::string candidate : {"/usr/bin/python3", "python3"}) {
    if (RunCommand({"/usr/bin/env", candidate, "-c", "import torch"}, tmp_.path(), 120).exit_code == 0) {
      python = candidate;
      break;
    }
  }
  ASSERT_FALSE(python.empty()) << "no python3 with torch: scripts/install-deps.sh installs python3-torch";
  {
    const std::string script = tmp_.path() + "/check_export.py";
    WriteFileOrDie(script, R"(import gzip, sys, torch
m = torch.jit.load(sys.argv[1]).eval()
imgs = gzip.open(sys.argv[2]).read()[16:]
labs = gzip.open(sys.argv[3]).read()[8:]
n = 200
x = torch.frombuffer(bytearray(imgs[:n * 784]), dtype=torch.uint8).float().div(255).reshape(n, 1, 28, 28)
with torch.no_grad():
    pred = m(x).argmax(1).tolist()
print(" ".join(str(p) for p in pred[:5]))
print(sum(int(p == labs[i]) for i, p in enumerate(pred)) / n)
)");
    CommandResult py = RunCommand({"/usr/bin/env", python, script, pt, T10kImages(), T10kLabels()}, tmp_.path(), 300);
    ASSERT_EQ(py.exit_code, 0) << py.Describe();
    std::istringstream lines(py.out);
    std::vector<int> py_pred(5);
    double py_accuracy = 0;
    for (int& v : py_pred) lines >> v;
    lines >> py_accuracy;
    // The export computes exactly the daemon's function.
    EXPECT_EQ(py_pred, predicted) << "the exported model disagrees with the daemon: " << py.out;
    EXPECT_GT(py_accuracy, 0.6) << py.out;
  }

  code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value()) << "myceld did not exit within 60 s of SIGTERM";
  EXPECT_EQ(*code, 0) << node.daemon().LogSinceStart();
}

TEST_F(DaemonTest, RestartRestoresTheSameWeights) {
  TestNode node(tmp_.path(), "node");
  ASSERT_TRUE(node.daemon().Start());
  CommandResult r = node.Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_TRUE(node.WaitForStepsAbove(200, 90)) << node.daemon().LogSinceStart();
  // Paused, so the weights cannot move between the two evaluations.
  ASSERT_EQ(node.Mycel({"pause"}).exit_code, 0);
  std::optional<Json> st;
  ASSERT_TRUE(WaitForState(node, "paused", 15, &st)) << StatusLine(st);
  const double steps = st->Num("steps");

  r = node.Mycel({"eval", T10kImages(), T10kLabels(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto before = ParseJson(r.out);
  ASSERT_TRUE(before) << r.out;

  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << node.daemon().LogSinceStart();
  ASSERT_TRUE(node.daemon().Start());
  EXPECT_NE(node.daemon().LogSinceStart().find("resumed from"), std::string::npos) << node.daemon().LogSinceStart();
  EXPECT_EQ(node.StatusNum("steps"), steps);

  r = node.Mycel({"eval", T10kImages(), T10kLabels(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto after = ParseJson(r.out);
  ASSERT_TRUE(after) << r.out;
  // Same weights, same data, same code: bit-identical numbers (printed with 10 digits).
  EXPECT_EQ(after->Num("loss"), before->Num("loss"));
  EXPECT_EQ(after->Num("accuracy"), before->Num("accuracy"));
  EXPECT_EQ(after->Num("examples"), kT10kCount);
}

TEST_F(DaemonTest, CliWithoutDaemonAndIdentityFiles) {
  TestNode node(tmp_.path(), "node");

  CommandResult r = node.Mycel({"status"});
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.Describe();
  EXPECT_NE(r.err.find(node.daemon().socket_path()), std::string::npos) << "does not name the socket: " << r.Describe();
  EXPECT_TRUE(r.out.empty()) << r.Describe();

  // `mycel id` needs no daemon: a 32-byte Ed25519 key is 44 base64
  // characters, alone on the first line, then the fingerprint the logs and
  // `mycel peers` show.
  CommandResult id1 = node.Mycel({"id"});
  ASSERT_EQ(id1.exit_code, 0) << id1.Describe();
  std::smatch m;
  ASSERT_TRUE(std::regex_match(id1.out, m, std::regex("([A-Za-z0-9+/]{43}=)\nfingerprint ([0-9a-f:]+)\n")))
      << "'" << id1.out << "'";
  const std::string key = m[1];
  const std::string fingerprint = m[2];
  auto idj = node.MycelJson({"id"});
  ASSERT_TRUE(idj);
  EXPECT_EQ(idj->Str("public_key"), key);
  EXPECT_EQ(idj->Str("fingerprint"), fingerprint);
  CommandResult id2 = node.Mycel({"id"});
  ASSERT_EQ(id2.exit_code, 0) << id2.Describe();
  EXPECT_EQ(id2.out, id1.out) << "identity changed between two calls";
  EXPECT_EQ(FileMode(node.state_dir() + "/identity.key"), 0600);

  ASSERT_TRUE(node.daemon().Start());
  auto st = node.Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->Str("public_key"), key) << "the daemon uses another identity than `mycel id`";
  EXPECT_NE(node.daemon().LogSinceStart().find("identity " + key + " (" + fingerprint + ")"), std::string::npos)
      << "the daemon logs another fingerprint than `mycel id`: " << node.daemon().LogSinceStart();
  EXPECT_EQ(FileMode(node.daemon().socket_path()), 0600);
  EXPECT_EQ(FileMode(node.state_dir() + "/identity.key"), 0600);
  CommandResult id3 = node.Mycel({"id"});
  EXPECT_EQ(id3.out, id1.out);

  // A plain `mycel status` is for people: it names the state.
  r = node.Mycel({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("state"), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.Describe();

  auto code = node.daemon().Stop(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

// Another local user reaching for the socket is told it is not theirs, not
// that the daemon is down (gRPC calls both "unavailable"); with no daemon the
// message names the missing socket.
TEST_F(DaemonTest, ClientSaysPermissionDeniedToAnotherUserAndNotRunningWithoutADaemon) {
  TestNode node(tmp_.path(), "node");
  const std::string sock = node.daemon().socket_path();
  // No config to read: the socket alone says where the daemon is.
  const std::string no_config = "XDG_CONFIG_HOME=/nonexistent/mycel-test";
  CommandResult none = RunCommand({"/usr/bin/env", no_config, BinDir() + "/mycel", "--socket", sock, "status"},
                                  tmp_.path());
  EXPECT_EQ(none.exit_code, 1) << none.Describe();
  EXPECT_EQ(none.err, "mycel: myceld is not running (no socket at " + sock + ")\n");

  ASSERT_TRUE(node.daemon().Start());
  if (geteuid() != 0 || !Exists("/usr/bin/setpriv")) GTEST_SKIP() << "needs root and setpriv to act as another user";
  CommandResult other = RunCommand({"/usr/bin/env", no_config, "/usr/bin/setpriv", "--reuid=65534",
                                    "--regid=65534", "--clear-groups", BinDir() + "/mycel", "--socket", sock, "status"},
                                   tmp_.path());
  EXPECT_EQ(other.exit_code, 1) << other.Describe();
  EXPECT_EQ(other.err, "mycel: permission denied on " + sock +
                           ": the daemon's state directory belongs to another user; run as the daemon's user\n")
      << other.Describe();
  EXPECT_TRUE(node.Status().has_value());  // the owner still gets through
  EXPECT_EQ(node.daemon().Stop(), 0);
}

// Under systemd (Type=notify): the service manager hears READY=1 once the
// control socket answers, RELOADING=1 and READY=1 around a SIGHUP reload,
// STOPPING=1 at SIGTERM; with stderr on the journal (JOURNAL_STREAM names
// it) every log line starts with its syslog priority.
TEST_F(DaemonTest, ServiceManagerHearsReadyReloadStopAndJournalLinesCarryPriorities) {
  TestNode node(tmp_.path(), "unit");
  const std::string notify_path = tmp_.path() + "/notify.sock";
  const int notify = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  ASSERT_GE(notify, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(notify_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, notify_path.c_str(), notify_path.size() + 1);
  ASSERT_EQ(::bind(notify, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  std::string heard;
  auto hear = [&](const std::string& what, double timeout_s) {
    return PollUntil(
        [&] {
          char buf[4096];
          for (ssize_t n; (n = ::recv(notify, buf, sizeof(buf), 0)) > 0;) heard.append(buf, n).push_back('|');
          return heard.find(what) != std::string::npos;
        },
        timeout_s, 0.05);
  };
  // stderr as the journal: the file's device and inode in JOURNAL_STREAM.
  const std::string err_path = tmp_.path() + "/journal.err";
  WriteFileOrDie(err_path, "");
  struct stat st;
  ASSERT_EQ(::stat(err_path.c_str(), &st), 0);
  const std::string stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  auto daemon = Process::Spawn({"/usr/bin/env", "NOTIFY_SOCKET=" + notify_path, "JOURNAL_STREAM=" + stream,
                                BinDir() + "/myceld", "-c", node.config_path()},
                               tmp_.path() + "/journal.out", err_path);
  ASSERT_TRUE(daemon);
  ASSERT_TRUE(hear("READY=1", 60)) << "heard: " << heard << "\nlog: " << ReadFileOrDie(err_path);
  CommandResult r = node.Mycel({"status"});
  EXPECT_EQ(r.exit_code, 0) << "READY=1 before the control socket answered: " << r.Describe();

  heard.clear();
  daemon->Signal(SIGHUP);
  ASSERT_TRUE(hear("READY=1", 30)) << "heard: " << heard;
  EXPECT_LT(heard.find("RELOADING=1"), heard.find("READY=1")) << heard;

  daemon->Signal(SIGTERM);
  EXPECT_TRUE(hear("STOPPING=1", 30)) << "heard: " << heard;
  auto code = daemon->Wait(60);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  ::close(notify);

  // Every line of the journal carries a priority: <6> info, <4> warning.
  const std::string log = ReadFileOrDie(err_path);
  std::istringstream lines(log);
  int info = 0;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(std::regex_search(line, std::regex("^<[0-7]>[TDIWEC] \\[[a-z]+\\] "))) << line;
    info += line.rfind("<6>I [", 0) == 0;
  }
  EXPECT_GT(info, 3) << log;
  EXPECT_NE(log.find("<6>I [myceld] received SIGTERM"), std::string::npos) << log;
}

TEST_F(DaemonTest, SecondDaemonOnTheSameStateDirRefusesToStart) {
  TestNode node(tmp_.path(), "node");
  ASSERT_TRUE(node.daemon().Start());

  const std::string out = tmp_.path() + "/second.out", err = tmp_.path() + "/second.err";
  auto second = Process::Spawn({BinDir() + "/myceld", "-c", node.config_path()}, out, err);
  ASSERT_TRUE(second);
  auto code = second->Wait(60);
  ASSERT_TRUE(code.has_value()) << "a second myceld on the same state dir kept running";
  EXPECT_NE(*code, 0);
  const std::string second_err = ReadFileOrDie(err);
  EXPECT_NE(second_err.find("another myceld"), std::string::npos) << second_err;

  // The first daemon is untouched: its socket still answers.
  EXPECT_TRUE(node.daemon().Running());
  auto st = node.Status();
  EXPECT_TRUE(st) << "the refused second daemon broke the first one's socket";

  auto stopped = node.daemon().Stop(60);
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(*stopped, 0);
}

// ------------------------------------------------------------------ bad config

struct BadConfigCase {
  const char* name;
  const char* section;  // lines 5.. of the file: "[section]" then the bad line
  const char* line;     // the offending line, line 6 of the file
  const char* key;      // what the message must name
};

void PrintTo(const BadConfigCase& c, std::ostream* os) { *os << c.name; }

class BadConfigTest : public ::testing::TestWithParam<BadConfigCase> {
 protected:
  TempDir tmp_;
};

TEST_P(BadConfigTest, DaemonAndCliRefuseNamingFileLineAndKey) {
  const BadConfigCase& c = GetParam();
  const std::string state_dir = tmp_.path() + "/state";
  const std::string config = tmp_.path() + "/bad.toml";
  WriteFileOrDie(config, std::string("[node]\n"                      // 1
                                     "name = \"bad\"\n"              // 2
                                     "state_dir = \"") + state_dir + "\"\n"  // 3
                             "\n"                                     // 4
                             "[" + c.section + "]\n"                  // 5
                             + c.line + "\n");                        // 6
  const std::string out = tmp_.path() + "/myceld.out", err = tmp_.path() + "/myceld.err";
  auto daemon = Process::Spawn({BinDir() + "/myceld", "-c", config}, out, err);
  ASSERT_TRUE(daemon);
  // A config error is found before libtorch does any work: well under 10 s.
  auto code = daemon->Wait(10);
  ASSERT_TRUE(code.has_value()) << "myceld kept running with a bad config";
  EXPECT_EQ(*code, 2);
  const std::string message = ReadFileOrDie(err);
  EXPECT_NE(message.find(config + ":6"), std::string::npos) << "does not name file:line: " << message;
  EXPECT_NE(message.find(c.key), std::string::npos) << "does not name the key: " << message;
  EXPECT_FALSE(Exists(state_dir + "/control.sock"));

  CommandResult cli = RunCommand({BinDir() + "/mycel", "-c", config, "status"}, tmp_.path(), 30);
  EXPECT_EQ(cli.exit_code, 2) << cli.Describe();
  EXPECT_NE(cli.err.find(config + ":6"), std::string::npos) << cli.Describe();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(BadConfigCase{"UnknownKey", "training", "learning_rate = 0.1", "learning_rate"},
                      BadConfigCase{"WrongType", "training", "lr = \"fast\"", "lr"},
                      BadConfigCase{"BadValue", "training", "batch_size = 0", "batch_size"},
                      BadConfigCase{"BadModelKind", "model", "kind = \"transformer\"", "kind"}),
    [](const ::testing::TestParamInfo<BadConfigCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace mycel::it
