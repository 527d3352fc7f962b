// myceld: the mycel daemon. Runs in the foreground, logs to stderr (and to
// [node] log_file, rotated, when set).
//
// Signals only wake the main thread: they are blocked before any thread
// starts and collected with sigwait. The first SIGTERM/SIGINT starts the
// orderly shutdown (stop RPCs, stop the trainer between steps, final
// checkpoint) and exits 0; a second one exits at once.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#ifdef MYCEL_HAVE_SD_NOTIFY
#include <systemd/sd-daemon.h>
#endif

#include "common/fd_limit.h"
#include "common/logging.h"
#include "common/version.h"
#include "config/config.h"
#include "daemon/node.h"

namespace {

// Tells the service manager (systemd, Type=notify) where the daemon stands:
// "READY=1" once it serves, "RELOADING=1" around a reload, "STOPPING=1" at
// shutdown. A no-op without NOTIFY_SOCKET, or off Linux.
void Notify(const std::string& state) {
#ifdef MYCEL_HAVE_SD_NOTIFY
  (void)sd_notify(0, state.c_str());
#else
  (void)state;
#endif
}

// Exit codes: 2 when the config or the state directory needs the user (a bad
// value, a checkpoint of another model, a corrupt store, a second daemon on
// the same state dir): restarting cannot fix those, and the systemd unit's
// RestartPreventExitStatus=2 stops it looping. 1 for what a retry may fix
// (a busy port, a transient I/O error).
int ExitCodeFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return 2;
    default:
      return 1;
  }
}

// Process-wide settings, made before any thread starts so every thread
// inherits them: the umask, the allocator's threshold, and the signals the
// main thread collects with sigwait (`signals` is filled with them).
void SetUpProcess(sigset_t* signals) {
  // Everything the daemon writes (examples, checkpoints, exports) is private
  // to the user: the training data never leaves the machine, nor this account.
  umask(0077);
#ifdef __GLIBC__
  // Blocks of 16 MiB or more (a CNN's activations, a validation chunk)
  // get their own mapping, given back when freed. glibc would otherwise raise
  // its threshold after the first such free and keep every later one in the
  // heap, resident for good (tests/bench/memory_bench.sh measured it).
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
#endif
  sigemptyset(signals);
  sigaddset(signals, SIGTERM);
  sigaddset(signals, SIGINT);
  sigaddset(signals, SIGHUP);
  sigaddset(signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, signals, nullptr);
  // A client that disconnects mid-stream must not kill the daemon.
  signal(SIGPIPE, SIG_IGN);
}

// The config (the defaults when the default path has none), its log level
// and log file applied. An error is printed; the caller exits 2.
absl::StatusOr<mycel::config::Config> LoadConfigAndLogging(std::string config_path) {
  absl::StatusOr<mycel::config::Config> config;
  if (config_path.empty()) {
    config_path = mycel::config::DefaultConfigPath();
    config = mycel::config::LoadConfig(config_path);
    if (!config.ok() && absl::IsNotFound(config.status())) {
      mycel::Logger("myceld")->info("no config at {}: using defaults", config_path);
      config = mycel::config::DefaultConfig();
    }
  } else {
    config = mycel::config::LoadConfig(config_path);
  }
  absl::Status s = config.status();
  if (s.ok()) s = mycel::SetLogLevel(config->node.log_level);
  if (s.ok() && !config->node.log_file.empty()) {
    // Before any other thread starts: loggers gain the file sink here.
    s = mycel::LogToFile(config->node.log_file, config->node.log_max_bytes, config->node.log_max_files);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "myceld: %s\n", std::string(s.message()).c_str());
    return s;
  }
  return config;
}

// Descriptors: the soft limit (1024 by default on Linux) is what a flood
// of idle connections exhausted; the hard limit is the most we
// may use. The peer listener keeps its connections to a quarter of it.
void RaiseDescriptorLimit() {
  auto log = mycel::Logger("myceld");
  if (auto fds = mycel::RaiseFdLimit(); fds.ok()) {
    log->info("descriptor limit {} (was {}, hard {})", fds->soft, fds->soft_before,
              fds->hard == UINT64_MAX ? std::string("unlimited") : std::to_string(fds->hard));
  } else {
    log->warn("descriptor limit not raised: {}", fds.status().message());
  }
}

// The main thread's loop once the node serves: SIGHUP reloads, the first
// SIGTERM/SIGINT starts the shutdown on its own thread (which raises SIGUSR1
// when done), a second one exits at once. Returns once the shutdown is done.
void ServeSignals(mycel::Node& node, const sigset_t& signals) {
  auto log = mycel::Logger("myceld");
  std::thread shutdown_thread;
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1 && shutdown_thread.joinable()) break;  // shutdown finished
    if (sig == SIGHUP && shutdown_thread.joinable()) {
      log->info("SIGHUP during shutdown: ignored");
      continue;
    }
    if (sig == SIGHUP) {
      // Reload: a config that does not validate is refused and the old one stays.
      Notify("RELOADING=1");
      auto reloaded = node.Reload();
      if (!reloaded.ok()) log->error("SIGHUP: reload refused, the running config stays: {}", reloaded.status().message());
      Notify("READY=1");
      continue;
    }
    if (sig == SIGTERM || sig == SIGINT) {
      if (shutdown_thread.joinable()) {
        log->warn("second signal: exiting now without a final checkpoint");
        _exit(1);
      }
      log->info("received {}: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      Notify("STOPPING=1");
      mycel::Node* n = &node;
      shutdown_thread = std::thread([n] {
        (void)n->Shutdown();
        kill(getpid(), SIGUSR1);
      });
    }
  }
  shutdown_thread.join();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"myceld: on-device federated continual-learning daemon", "myceld"};
  std::string config_path;
  app.add_option("-c,--config", config_path,
                 "config file (default: $MYCEL_CONFIG, else $XDG_CONFIG_HOME/mycel/mycel.toml)")
      ->envname("MYCEL_CONFIG");
  app.set_version_flag("--version", std::string("myceld ") + mycel::kVersion);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "myceld: %s (`myceld --help` lists the options)\n", e.what());
    return 2;  // a usage error, like a config error: restarting does not fix it
  }
  sigset_t signals;
  SetUpProcess(&signals);
  auto config = LoadConfigAndLogging(config_path);
  if (!config.ok()) return 2;
  RaiseDescriptorLimit();

  auto node = mycel::Node::Create(*config);
  if (!node.ok()) {
    std::fprintf(stderr, "myceld: %s\n", std::string(node.status().message()).c_str());
    return ExitCodeFor(node.status());
  }
  if (auto s = (*node)->Start(); !s.ok()) {
    std::fprintf(stderr, "myceld: %s\n", std::string(s.message()).c_str());
    return ExitCodeFor(s);
  }
  Notify("READY=1\nSTATUS=serving on " + config->SocketPath());
  ServeSignals(**node, signals);
  node->reset();
  mycel::Logger("myceld")->info("bye");
  return 0;
}
