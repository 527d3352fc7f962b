// mycel: the command-line tool for myceld. Talks to the daemon over its
// control socket (gRPC on a Unix socket in the state directory); `id` works
// without a daemon. Exit 0 on success; otherwise a one-line message on stderr
// and exit 1 (2 for usage or config errors).
//
// Each command lives in a commands_*.cc (commands.h lists them); this file
// builds the command line from them, parses it and runs the one given.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_join.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "common/version.h"
#include "config/config.h"

namespace mycel::cli {
namespace {

// Edit distance (insert, delete, substitute, swap of two neighbours).
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// Parses the command line. --help and --version print and exit 0, as does
// `mycel help [COMMAND]`; anything else wrong prints one line that says what
// (with the nearest command for a mistyped one) and exits 2.
void ParseOrExit(CLI::App& app, int argc, char** argv) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
  // The first word that is not an option or an option's value is the command.
  std::string command;
  int at = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "-c" || arg == "--config" || arg == "--socket") {
      ++i;
      continue;
    }
    if (arg.empty() || arg[0] == '-') continue;
    command = arg;
    at = i;
    break;
  }
  if (command == "help") {
    const std::string topic = at + 1 < argc ? argv[at + 1] : "";
    if (topic.empty()) {
      std::printf("%s", app.help().c_str());
      std::exit(0);
    }
    if (std::find(names.begin(), names.end(), topic) != names.end()) {
      std::printf("%s", app.get_subcommand(topic)->help().c_str());
      std::exit(0);
    }
    command = topic;  // `mycel help stauts`: say so as for `mycel stauts`
  }
  if (!command.empty() && std::find(names.begin(), names.end(), command) == names.end()) {
    // A command the word begins, else the nearest within two slips.
    std::string nearest;
    for (const std::string& n : names) {
      if (nearest.empty() && command.size() >= 2 && n.rfind(command, 0) == 0) nearest = n;
    }
    size_t best = 3;
    for (const std::string& n : names) {
      if (const size_t d = Distance(command, n); nearest.empty() && d < best) {
        best = d;
        nearest = n;
      }
    }
    Fail("unknown command '" + command + "'" + (nearest.empty() ? "" : "; did you mean '" + nearest + "'?") +
             " (`mycel --help` lists the commands)",
         2);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    std::exit(app.exit(e));
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
    if (command.empty() && what.find("subcommand") != std::string::npos) {
      Fail("a command is required: " + absl::StrJoin(names, ", ") + " (`mycel --help` says what each does)", 2);
    }
    Fail(what + " (`mycel " + command + (command.empty() ? "" : " ") + "--help` lists the options)", 2);
  }
}

// What each command was given, bound to its options by Add<Cmd>Command.
struct CommandArgs {
  StatusArgs status;
  IngestArgs ingest;
  EvalArgs eval;
  PredictArgs predict;
  ExportArgs export_;
  IdArgs id;
  RepairArgs repair;
  PeersArgs peers;
  HistoryArgs history;
  DataArgs data;
  ForgetArgs forget;
};

// The commands, in the order `mycel --help` lists them.
void AddCommands(CLI::App& app, CommandArgs* args) {
  AddStatusCommand(app, &args->status);
  AddPauseResumeCommands(app);
  AddIngestCommand(app, &args->ingest);
  AddEvalCommand(app, &args->eval);
  AddPredictCommand(app, &args->predict);
  AddExportCommand(app, &args->export_);
  AddIdCommand(app, &args->id);
  AddRepairCommand(app, &args->repair);
  AddPeersCommand(app, &args->peers);
  AddReloadCommand(app);
  AddHistoryCommand(app, &args->history);
  AddDoctorCommand(app);
  AddDataCommand(app, &args->data);
  AddForgetCommand(app, &args->forget);
  AddResetCommand(app);
}

// Runs the command that `app` parsed. id, repair, doctor and reset need no
// daemon (doctor reaches it itself); every other command is a call to it.
int Run(const CLI::App& app, const CommandArgs& args, const mycel::config::Config& config,
        const std::string& socket) {
  const CLI::App* command = app.get_subcommands().front();
  const std::string cmd = command->get_name();
  if (cmd == "id") return RunId(config, args.id);
  if (cmd == "repair") return RunRepair(config, args.repair);
  if (cmd == "doctor") return RunDoctor(config, socket);
  if (cmd == "reset") return RunReset(config);

  Client client(socket);
  if (cmd == "status") return RunStatus(client, args.status);
  if (cmd == "pause") return RunPause(client);
  if (cmd == "resume") return RunResume(client);
  if (cmd == "history") return RunHistory(client, args.history);
  if (cmd == "ingest") return RunIngest(client, args.ingest);
  if (cmd == "eval") return RunEval(client, args.eval);
  if (cmd == "predict") return RunPredict(client, args.predict);
  if (cmd == "export") return RunExport(client, args.export_);
  if (cmd == "data") return RunData(client, args.data);
  if (cmd == "forget") return RunForget(client, args.forget);
  if (cmd == "reload") return RunReload(client);
  if (cmd == "peers") {
    const auto actions = command->get_subcommands();
    return RunPeers(config, client, args.peers, actions.empty() ? "" : actions.front()->get_name());
  }
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"mycel: inspect, pause, feed, evaluate and query the myceld daemon", "mycel"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mycel ") + mycel::kVersion);
  // `mycel status --config X` as well as `mycel --config X status`: every
  // subcommand (added below, which inherits this) hands options it does not
  // know to the app.
  app.fallthrough();
  std::string config_path, socket_override;
  app.add_option("-c,--config", config_path,
                 "config file (default: $MYCEL_CONFIG, else $XDG_CONFIG_HOME/mycel/mycel.toml)")
      ->envname("MYCEL_CONFIG");
  app.add_option("--socket", socket_override, "control socket path (default: <state_dir>/control.sock)");
  CommandArgs args;
  AddCommands(app, &args);

  ParseOrExit(app, argc, argv);
  const mycel::config::Config config = LoadConfigOrFail(config_path);
  return Run(app, args, config, SocketPath(config, socket_override));
}

}  // namespace
}  // namespace mycel::cli

int main(int argc, char** argv) { return mycel::cli::Main(argc, argv); }
