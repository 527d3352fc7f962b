// Integration-test harness: runs the real myceld and mycel binaries.
//
// A TestNode is one daemon's world in a temp directory: a generated TOML
// config, a state directory and a log file that collects the daemon's stderr
// across restarts. Daemon starts myceld with fork/exec and waits until its
// control socket accepts; RunCommand/TestNode::Mycel run the CLI and capture its exit
// code, stdout and stderr separately. Every child process is owned by an
// object whose destructor SIGKILLs and reaps it, so a failing test leaves no
// stray daemons behind.
//
// Single-threaded: each test drives its processes from the test thread.
// Helpers that can fail return ::testing::AssertionResult or std::optional so
// a test says what went wrong, with the daemon's log when it matters.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::it {

// ------------------------------------------------------------ files and paths

// Directory of myceld and mycel: $MYCEL_BIN_DIR if set, else the build's.
std::string BinDir();
// Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/<name>.
std::string FashionMnist(const std::string& name);
inline std::string T10kImages() { return FashionMnist("t10k-images-idx3-ubyte.gz"); }
inline std::string T10kLabels() { return FashionMnist("t10k-labels-idx1-ubyte.gz"); }
inline std::string TrainImages() { return FashionMnist("train-images-idx3-ubyte.gz"); }
inline std::string TrainLabels() { return FashionMnist("train-labels-idx1-ubyte.gz"); }

std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, std::string_view bytes);
// Decompresses a .gz file with zlib (plain files come back unchanged).
std::string GunzipFileOrDie(const std::string& path);
bool Exists(const std::string& path);
// Permission bits (st_mode & 07777), or -1 if the path does not exist.
int FileMode(const std::string& path);
using test::ListDir;

// A fresh directory under $TMPDIR (or /tmp), mycel-it-XXXXXX, removed with
// its contents on destruction unless $MYCEL_IT_KEEP is set (for post-mortems).
class TempDir : public test::TempDir {
 public:
  TempDir() : test::TempDir("mycel-it") {}
};

// test::WaitFor at a daemon's pace: calls `done` every `interval_s` until it
// returns true or `timeout_s` passes.
inline bool PollUntil(const std::function<bool()>& done, double timeout_s, double interval_s = 0.2) {
  return test::WaitFor(done, timeout_s, interval_s);
}

// A sanitized build (scripts/test.sh --sanitize=...) trains several times
// slower, so a test that waits for the daemons to *learn* something within a
// wall-clock budget multiplies that budget by this (set in
// tests/CMakeLists.txt); what it requires of the result stays the same.
inline constexpr double kLearningTimeScale = MYCEL_LEARNING_TIME_SCALE;
void SleepSeconds(double s);

// ------------------------------------------------------------------ processes

// A child process started with fork/exec, stdout and stderr redirected to
// files (appended to, so a restarted daemon keeps one log). Killed with
// SIGKILL and reaped on destruction if still running.
class Process {
 public:
  // Returns nullptr (and adds a test failure) if fork fails. An exec failure
  // shows as exit code 127 with a message in the stderr file.
  static std::unique_ptr<Process> Spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
                                        const std::string& stderr_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // True until the child has been reaped.
  bool Running();
  // Waits up to timeout_s; returns the exit code (128 + signal number if it
  // was killed by a signal), or nullopt if it is still running.
  std::optional<int> Wait(double timeout_s);
  // Sends `sig` if the child has not been reaped yet.
  void Signal(int sig);
  // SIGKILL and reap; returns the wait status code as Wait() does.
  int Kill();
  std::optional<int> exit_code() const { return exit_code_; }

 private:
  explicit Process(pid_t pid) : pid_(pid) {}
  bool Reap(bool block);

  pid_t pid_;
  std::optional<int> exit_code_;
};

struct CommandResult {
  int exit_code = -1;   // 128 + signal if killed; -1 if it timed out (then killed)
  std::string out;
  std::string err;
  // "exit N, stdout: ..., stderr: ..." for assertion messages.
  std::string Describe() const;
};

// Runs argv to completion (killing it after timeout_s). `scratch_dir` holds
// the capture files.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir, double timeout_s = 120);

// -------------------------------------------------------------------- network

// A loopback TCP port that was free a moment ago (bound to 0, read back, closed).
int FreePort();

struct HttpReply {
  int status = 0;     // 0: no connection or no HTTP reply
  std::string head;   // status line and headers
  std::string body;
};
// One HTTP/1.0 request to 127.0.0.1:port over a plain socket.
HttpReply HttpRequest(int port, const std::string& method, const std::string& path);

// ---------------------------------------------------------------------- JSON

// Just enough JSON for `mycel ... --json`: objects, arrays, strings, numbers,
// true/false/null. Objects keep key order.
struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;

  // Member `key` of an object, or nullptr.
  const Json* Find(const std::string& key) const;
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  // Number member; NaN if absent, null or not a number.
  double Num(const std::string& key) const;
  // String member; "" if absent or not a string.
  std::string Str(const std::string& key) const;
};

// Parses one JSON value (surrounding whitespace allowed); nullopt on any error.
std::optional<Json> ParseJson(std::string_view text);

// --------------------------------------------------------------------- daemon

// Knobs of the generated config; everything else is the daemon's default.
struct ConfigSpec {
  std::string model_kind = "mlp";
  int64_t context = 32;                 // char_lm only
  double checkpoint_interval_s = 60;
  double eval_interval_s = 1;           // fast feedback for val_accuracy polls
  int64_t max_eval_examples = 1000;     // keeps the periodic evaluation cheap
  // Rest (on, as by default) after as many seconds without a gain as a
  // user's daemon: 30 passes at eval_interval_s 1 are the default 6 at 5 s.
  int64_t rest_patience = 30;
  std::string extra_training;           // appended verbatim to [training]
  std::string extra_node;               // appended verbatim to [node]
  std::string extra_model;              // appended verbatim to [model]
};

// myceld on one config; the log file collects stderr of every start.
class Daemon {
 public:
  Daemon(std::string config_path, std::string state_dir, std::string log_path);
  ~Daemon();  // SIGKILLs a daemon still running
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Starts myceld and waits until <state_dir>/control.sock accepts. On
  // failure (exit or timeout) the message carries the log of this start.
  ::testing::AssertionResult Start(double timeout_s = 90);
  bool Running() { return process_ && process_->Running(); }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  void Signal(int sig);
  // Exit code as Process::Wait, nullopt on timeout.
  std::optional<int> WaitExit(double timeout_s);
  // SIGTERM and wait; returns the exit code (nullopt on timeout).
  std::optional<int> Stop(double timeout_s = 60);
  // kill -9 and reap.
  void Crash();

  // Runs myceld under this command (e.g. `ip netns exec NS`), which must
  // exec it, so the pid stays the daemon's.
  void set_prefix(std::vector<std::string> prefix) { prefix_ = std::move(prefix); }

  // Everything logged since the last Start().
  std::string LogSinceStart() const;
  std::string Log() const;
  const std::string& log_path() const { return log_path_; }
  std::string socket_path() const { return state_dir_ + "/control.sock"; }

 private:
  std::string config_path_, state_dir_, log_path_;
  std::vector<std::string> prefix_;
  size_t log_offset_ = 0;
  std::unique_ptr<Process> process_;
};

// One node under test: <dir>/<name>.toml, <dir>/<name>-state, <dir>/<name>.log.
class TestNode {
 public:
  TestNode(const std::string& dir, const std::string& name, const ConfigSpec& spec = {});

  const std::string& dir() const { return dir_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& state_dir() const { return state_dir_; }
  Daemon& daemon() { return daemon_; }

  // `mycel -c <config> args...`.
  CommandResult Mycel(const std::vector<std::string>& args, double timeout_s = 180) const;
  // The same, in the background; output goes to the two files.
  std::unique_ptr<Process> SpawnMycel(const std::vector<std::string>& args, const std::string& out_path,
                                      const std::string& err_path) const;
  // `mycel status --json`, parsed; nullopt (after a test failure naming the
  // output) if the command fails or prints something else.
  std::optional<Json> Status() const;
  // `mycel ARGS... --json` parsed as an object; a failure or anything else
  // printed fails the test (ADD_FAILURE) and gives nullopt.
  std::optional<Json> MycelJson(std::vector<std::string> args) const;
  // Status field shortcuts; NaN when status fails.
  double StatusNum(const std::string& key) const;
  // examples_train + examples_val; -1 when status fails.
  int64_t ExampleCount() const;
  // Polls status until steps > `than` (true) or timeout_s passes.
  bool WaitForStepsAbove(double than, double timeout_s);

 private:
  std::string dir_, name_, config_path_, state_dir_;
  Daemon daemon_;
};

std::string ConfigToml(const std::string& name, const std::string& state_dir, const ConfigSpec& spec);

// Fashion-MNIST t10k: number of images and the first label (class of image 0).
constexpr int64_t kT10kCount = 10000;
constexpr int64_t kTrainCount = 60000;
// Label of t10k example i, read from the label file.
int T10kLabel(int64_t i);

}  // namespace mycel::it
