// `mycel ingest`'s progress bar, end to end: the real mycel on a real
// pseudo-terminal (forkpty, as a terminal window runs it) against a real
// myceld. On a terminal it draws an upload and a storing bar that rise to
// 100% and leave the screen holding only the summary; anywhere else (a pipe,
// --json, --no-progress) not one byte of it appears. Ctrl-C while the daemon
// stores cancels the ingest: nothing is stored.
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

struct PtyResult {
  int exit_code = -1;  // 128 + signal if killed; -1 if it timed out (then killed)
  std::string output;  // everything written to the terminal, as the terminal got it
};

// Runs argv with stdin, stdout and stderr on a fresh 120x40 pseudo-terminal
// and collects what it writes. `on_output` sees the output so far after each
// read, with the terminal's master side to type into.
PtyResult RunOnPty(const std::vector<std::string>& argv, double timeout_s,
                   const std::function<void(const std::string&, int master)>& on_output = nullptr) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  struct winsize ws {};
  ws.ws_col = 120;
  ws.ws_row = 40;
  PtyResult r;
  int master = -1;
  const pid_t parent = ::getpid();
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, &ws);
  if (pid < 0) {
    ADD_FAILURE() << "forkpty: " << std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  bool timed_out = false;
  for (;;) {
    if (std::chrono::steady_clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    struct pollfd p {master, POLLIN, 0};
    int n = ::poll(&p, 1, 100);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[4096];
    ssize_t got = ::read(master, buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EIO: every slave side is closed, the child is gone
    r.output.append(buf, static_cast<size_t>(got));
    if (on_output) on_output(r.output, master);
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    ADD_FAILURE() << argv[0] << " did not finish on the terminal within " << timeout_s << " s; output:\n"
                  << r.output;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::close(master);
  if (!timed_out) r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// What the terminal shows at the end: '\r' returns to the line's start, '\n'
// starts a new line, other bytes overwrite; trailing blanks and empty lines
// dropped.
std::vector<std::string> Screen(const std::string& output) {
  std::vector<std::string> lines(1);
  size_t col = 0;
  for (char c : output) {
    if (c == '\r') {
      col = 0;
    } else if (c == '\n') {
      lines.emplace_back();
      col = 0;
    } else {
      std::string& line = lines.back();
      if (line.size() <= col) line.resize(col + 1, ' ');
      line[col++] = c;
    }
  }
  std::vector<std::string> shown;
  for (auto& line : lines) {
    line.erase(line.find_last_not_of(' ') + 1);
    if (!line.empty()) shown.push_back(line);
  }
  return shown;
}

// One drawn frame of the bar: "storing  [####------]  40%  24000/60000 examples  52.3k/s".
struct Frame {
  std::string phase;
  int percent = -1;  // -1: no percent (parsing)
  std::string text;
};

std::vector<Frame> Frames(const std::string& output) {
  static const std::regex re(R"(^(upload|parsing|storing)\b(?:\s+(?:\[[#-]+\]\s+)?(\d+)%)?)");
  std::vector<Frame> frames;
  size_t start = 0;
  while (start < output.size()) {
    size_t end = output.find_first_of("\r\n", start);
    if (end == std::string::npos) end = output.size();
    std::string piece = output.substr(start, end - start);
    piece.erase(piece.find_last_not_of(' ') + 1);  // padding over a longer previous frame
    std::smatch m;
    if (std::regex_search(piece, m, re)) {
      frames.push_back({m[1], m[2].matched ? std::stoi(m[2]) : -1, piece});
    }
    start = end + 1;
  }
  return frames;
}

std::string Show(const std::vector<Frame>& frames) {
  std::string s;
  for (const auto& f : frames) s += "  " + f.text + "\n";
  return s;
}

// The summary line, as scripts read it (unchanged by this feature); byte-
// identical examples skipped by the store are counted after it, if any.
const std::regex kSummary(
    R"(stored (\d+) examples \(\d+ train, \d+ validation, \d+ evicted\); store holds \d+ train, \d+ validation)"
    R"((; (\d+) already stored)?)");

class IngestProgressTest : public ::testing::Test {
 protected:
  IngestProgressTest() {
    ConfigSpec spec;
    // A bounded store, so storing Fashion-MNIST's 60000 also evicts, as it
    // does for a user whose store is full: the long phase worth a bar.
    spec.extra_training = "max_examples = 20000\n";
    node_ = std::make_unique<TestNode>(tmp_.path(), "node", spec);
  }
  std::vector<std::string> MycelArgv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {BinDir() + "/mycel", "-c", node_->config_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  TempDir tmp_;
  std::unique_ptr<TestNode> node_;
};

TEST_F(IngestProgressTest, TerminalShowsUploadAndStoringBarsRisingTo100PercentThenOnlyTheSummary) {
  ASSERT_TRUE(node_->daemon().Start());
  PtyResult r = RunOnPty(MycelArgv({"ingest", TrainImages(), TrainLabels()}), 180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<Frame> frames = Frames(r.output);
  std::vector<const Frame*> upload, storing;
  std::string order;  // phases in the order drawn, each once
  for (const auto& f : frames) {
    if (order.empty() || order.back() != f.phase[0]) order += f.phase[0];
    if (f.phase == "upload") upload.push_back(&f);
    if (f.phase == "storing") storing.push_back(&f);
  }
  EXPECT_EQ(order, "ups") << "upload, parsing, storing, each once:\n" << Show(frames);
  ASSERT_FALSE(upload.empty()) << r.output;
  ASSERT_FALSE(storing.empty()) << r.output;
  for (const auto* phase : {&upload, &storing}) {
    for (size_t i = 1; i < phase->size(); ++i) {
      EXPECT_GE((*phase)[i]->percent, (*phase)[i - 1]->percent) << "a bar went backwards:\n" << Show(frames);
    }
    EXPECT_EQ(phase->back()->percent, 100) << Show(frames);
  }
  // Honest progress while the daemon stores: counts from inside its
  // transaction, not a jump from nothing to done.
  int below_100 = 0;
  for (const auto* f : storing) below_100 += f->percent < 100;
  EXPECT_GE(below_100, 2) << "storing showed no progress before it was done:\n" << Show(frames);
  EXPECT_NE(storing.back()->text.find("60000/60000 examples"), std::string::npos) << Show(frames);
  EXPECT_TRUE(std::regex_search(storing.back()->text, std::regex(R"(\d(\.\d)?k?/s$)")))
      << "no rate on the last storing frame:\n" << Show(frames);
  EXPECT_NE(upload.back()->text.find("MiB"), std::string::npos) << Show(frames);
  for (const auto& f : frames) EXPECT_LT(f.text.size(), 120u) << "wider than the terminal: " << f.text;

  // The bar is erased before the summary: the screen holds the summary alone.
  const std::vector<std::string> screen = Screen(r.output);
  ASSERT_EQ(screen.size(), 1u) << "screen:\n" << ::testing::PrintToString(screen);
  std::smatch m;
  ASSERT_TRUE(std::regex_match(screen[0], m, kSummary)) << screen[0];
  EXPECT_GT(std::stoll(m[1]), 0);
  EXPECT_EQ(node_->ExampleCount(), 20000);
}

// Output that is not a terminal is what it always was, byte for byte; on a
// terminal, --json and --no-progress draw nothing either.
TEST_F(IngestProgressTest, NoProgressBytesOffATerminalOrWithJsonOrNoProgress) {
  ASSERT_TRUE(node_->daemon().Start());
  CommandResult piped = node_->Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(piped.exit_code, 0) << piped.Describe();
  EXPECT_EQ(piped.err, "") << piped.Describe();
  ASSERT_FALSE(piped.out.empty());
  EXPECT_EQ(piped.out.back(), '\n');
  std::smatch pm;
  const std::string piped_line = piped.out.substr(0, piped.out.size() - 1);
  ASSERT_TRUE(std::regex_match(piped_line, pm, kSummary)) << piped.out;
  EXPECT_FALSE(pm[2].matched) << "a first ingest has nothing already stored: " << piped.out;
  EXPECT_EQ(piped.out.find('\r'), std::string::npos) << piped.Describe();

  // The terminal turns each "\n" into "\r\n" (ONLCR); anything else is the bar.
  PtyResult json = RunOnPty(MycelArgv({"ingest", T10kImages(), T10kLabels(), "--json"}), 120);
  ASSERT_EQ(json.exit_code, 0) << json.output;
  ASSERT_GE(json.output.size(), 2u);
  EXPECT_EQ(json.output.substr(json.output.size() - 2), "\r\n") << json.output;
  const std::string json_text = json.output.substr(0, json.output.size() - 2);
  EXPECT_EQ(json_text.find_first_of("\r\n"), std::string::npos) << "more than the JSON line: " << json.output;
  auto parsed = ParseJson(json_text);
  ASSERT_TRUE(parsed) << json.output;
  EXPECT_EQ(parsed->Num("offered"), static_cast<double>(kT10kCount));
  EXPECT_EQ(parsed->Num("duplicates"), static_cast<double>(kT10kCount)) << "the same files twice";
  EXPECT_EQ(parsed->Num("stored"), 0.0) << json.output;

  PtyResult quiet = RunOnPty(MycelArgv({"ingest", "--no-progress", T10kImages(), T10kLabels()}), 120);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.output;
  ASSERT_GE(quiet.output.size(), 2u);
  EXPECT_EQ(quiet.output.substr(quiet.output.size() - 2), "\r\n") << quiet.output;
  std::smatch qm;
  const std::string quiet_line = quiet.output.substr(0, quiet.output.size() - 2);
  ASSERT_TRUE(std::regex_match(quiet_line, qm, kSummary)) << quiet.output;
  EXPECT_EQ(qm[1].str(), "0") << quiet.output;
  EXPECT_EQ(qm[3].str(), std::to_string(kT10kCount)) << quiet.output;
}

// The same ingest key twice, across a restart: the second call stores
// nothing and says so; a malformed key is refused before anything is stored.
TEST_F(IngestProgressTest, AnIngestKeySeenBeforeStoresNothingAgain) {
  ASSERT_TRUE(node_->daemon().Start());
  CommandResult first = node_->Mycel({"ingest", "--json", "--key", "t10k-once", T10kImages(), T10kLabels()});
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  auto j = ParseJson(first.out);
  ASSERT_TRUE(j) << first.out;
  EXPECT_EQ(j->Num("stored"), static_cast<double>(kT10kCount));
  EXPECT_EQ(j->Str("key"), "t10k-once");
  ASSERT_TRUE(j->Find("replayed"));
  EXPECT_FALSE(j->Find("replayed")->boolean);
  const int64_t count = node_->ExampleCount();
  ASSERT_TRUE(node_->daemon().Stop(60).has_value());
  ASSERT_TRUE(node_->daemon().Start());
  CommandResult again = node_->Mycel({"ingest", "--key", "t10k-once", T10kImages(), T10kLabels()});
  ASSERT_EQ(again.exit_code, 0) << again.Describe();
  EXPECT_NE(again.out.find("already stored by an earlier ingest with key t10k-once (10000 examples then)"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(node_->ExampleCount(), count);
  // Without --key every call draws a fresh key, so a deliberate re-ingest stores.
  CommandResult fresh = node_->Mycel({"ingest", "--json", T10kImages(), T10kLabels()});
  ASSERT_EQ(fresh.exit_code, 0) << fresh.Describe();
  auto fj = ParseJson(fresh.out);
  ASSERT_TRUE(fj) << fresh.out;
  EXPECT_EQ(fj->Str("key").size(), 32u) << fresh.out;
  EXPECT_FALSE(fj->Find("replayed")->boolean);
  const int64_t after_fresh = node_->ExampleCount();
  CommandResult bad = node_->Mycel({"ingest", "--key", "no spaces", T10kImages(), T10kLabels()});
  EXPECT_EQ(bad.exit_code, 1) << bad.Describe();
  EXPECT_NE(bad.err.find("ingest key"), std::string::npos) << bad.Describe();
  EXPECT_EQ(node_->ExampleCount(), after_fresh);
}

// A refused file on a terminal: the bar is erased and the error is the one
// line it always was.
TEST_F(IngestProgressTest, ErrorOnATerminalReplacesTheBarWithTheSameMessage) {
  ASSERT_TRUE(node_->daemon().Start());
  const std::string bad = tmp_.path() + "/bad-images.gz";
  WriteFileOrDie(bad, ReadFileOrDie(T10kImages()).substr(0, 5000));  // a truncated gzip stream
  CommandResult piped = node_->Mycel({"ingest", bad, T10kLabels()});
  ASSERT_NE(piped.exit_code, 0) << piped.Describe();
  PtyResult r = RunOnPty(MycelArgv({"ingest", bad, T10kLabels()}), 120);
  EXPECT_EQ(r.exit_code, piped.exit_code) << r.output;
  const std::vector<std::string> screen = Screen(r.output);
  ASSERT_EQ(screen.size(), 1u) << ::testing::PrintToString(screen);
  EXPECT_EQ(screen[0] + "\n", piped.err);
  EXPECT_EQ(node_->ExampleCount(), 0);
}

// Ctrl-C while the daemon stores (typed into the terminal, so the line
// discipline signals mycel as it would for a user) cancels the ingest: the
// daemon rolls its transaction back and says so, nothing is stored, and it
// carries on.
TEST_F(IngestProgressTest, CtrlCWhileStoringStoresNothing) {
  ASSERT_TRUE(node_->daemon().Start());
  CommandResult first = node_->Mycel({"ingest", T10kImages(), T10kLabels()});
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  ASSERT_EQ(node_->ExampleCount(), kT10kCount);

  // The ^C must land before the store finishes; a try where it did not only
  // changes the baseline, so allow a few.
  int landed = 0;
  for (int attempt = 0; attempt < 4 && landed == 0; ++attempt) {
    SCOPED_TRACE("attempt " + std::to_string(attempt));
    const int64_t before = node_->ExampleCount();
    bool typed = false;
    PtyResult r = RunOnPty(MycelArgv({"ingest", TrainImages(), TrainLabels()}), 180,
                           [&](const std::string& out, int master) {
                             if (!typed && out.find("storing") != std::string::npos) {
                               typed = ::write(master, "\x03", 1) == 1;
                             }
                           });
    ASSERT_TRUE(typed) << "never saw the storing phase:\n" << r.output;
    if (r.exit_code == 0) continue;  // it finished first
    EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.output;
    ++landed;
    EXPECT_TRUE(PollUntil(
        [&] { return node_->daemon().LogSinceStart().find("ingest cancelled by the client") != std::string::npos; },
        30))
        << node_->daemon().LogSinceStart();
    EXPECT_EQ(node_->ExampleCount(), before) << "a cancelled ingest stored something";
  }
  EXPECT_EQ(landed, 1) << "the ingest always finished before Ctrl-C";
  ASSERT_TRUE(node_->daemon().Running()) << node_->daemon().LogSinceStart();
  CommandResult again = node_->Mycel({"ingest", T10kImages(), T10kLabels()});
  EXPECT_EQ(again.exit_code, 0) << again.Describe();
}

}  // namespace
}  // namespace mycel::it
