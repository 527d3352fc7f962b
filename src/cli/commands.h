// The `mycel` commands, one Run<Cmd> each. Add<Cmd>Command adds the command
// and its options to the app, bound to a <Cmd>Args that main() keeps and
// hands to Run<Cmd> once the command line is parsed. main.cc adds them in
// the order `mycel --help` lists them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "config/config.h"

namespace mycel::cli {

// ---- status, pause, resume, history (commands_status.cc) ----

struct StatusArgs {
  bool json = false;
  bool watch = false;
  double interval = 1.0;  // seconds between refreshes with --watch
};
void AddStatusCommand(CLI::App& app, StatusArgs* args);
int RunStatus(const Client& client, const StatusArgs& args);

void AddPauseResumeCommands(CLI::App& app);
int RunPause(const Client& client);
int RunResume(const Client& client);

struct HistoryArgs {
  bool json = false;
  std::string since;  // "": every pass
};
void AddHistoryCommand(CLI::App& app, HistoryArgs* args);
int RunHistory(const Client& client, const HistoryArgs& args);

// ---- doctor (commands_doctor.cc) ----

void AddDoctorCommand(CLI::App& app);
// Makes its own Client: a daemon that does not answer is one of its findings.
int RunDoctor(const mycel::config::Config& config, const std::string& socket);

// ---- ingest, eval: files up (commands_ingest.cc) ----

struct IngestArgs {
  std::vector<std::string> files;  // {"-"}: lines from stdin
  std::string format;              // "": guessed
  bool json = false;
  bool no_progress = false;
  std::string labels;  // "": every label
  std::string key;     // "": a fresh random key
  double retry_s = 60;
};
void AddIngestCommand(CLI::App& app, IngestArgs* args);
int RunIngest(const Client& client, const IngestArgs& args);

struct EvalArgs {
  std::vector<std::string> files;
  std::string format;
  bool json = false;
};
void AddEvalCommand(CLI::App& app, EvalArgs* args);
int RunEval(const Client& client, const EvalArgs& args);

// ---- predict, export: the model out (commands_model.cc) ----

struct PredictArgs {
  std::vector<std::string> files;
  std::string format;
  int64_t index = 0;
  std::string values;
  std::string text;
  int top_k = 3;
  int generate = 0;
  bool json = false;
};
void AddPredictCommand(CLI::App& app, PredictArgs* args);
int RunPredict(const Client& client, const PredictArgs& args);

struct ExportArgs {
  std::string out_path;
};
void AddExportCommand(CLI::App& app, ExportArgs* args);
int RunExport(const Client& client, const ExportArgs& args);

// ---- data, forget: what the store holds (commands_store.cc) ----

struct DataArgs {
  bool json = false;
  int max_ingests = 20;
};
void AddDataCommand(CLI::App& app, DataArgs* args);
int RunData(const Client& client, const DataArgs& args);

struct ForgetArgs {
  bool all = false;
  int64_t label = -1;   // < 0: not given
  std::string before;   // "": not given
  int64_t ingest = 0;   // 0: not given
  bool json = false;
};
void AddForgetCommand(CLI::App& app, ForgetArgs* args);
int RunForget(const Client& client, const ForgetArgs& args);

// ---- peers and pairing, reload (commands_peers.cc) ----

// One struct for `mycel peers` and its subcommands: `--json` of `peers` and
// of `peers pending` set the same flag, so either place works.
struct PeersArgs {
  bool json = false;
  std::string name;     // add: NAME; accept: NAME or KEY-FINGERPRINT; remove: NAME
  std::string key;      // add
  std::string address;  // add, accept
  bool dials_in = false;
  std::string accept_name;  // accept --name
};
void AddPeersCommand(CLI::App& app, PeersArgs* args);
// `action` is the subcommand of `peers` given: "" (the table), pending, add,
// accept or remove.
int RunPeers(const mycel::config::Config& config, const Client& client, const PeersArgs& args,
             const std::string& action);

void AddReloadCommand(CLI::App& app);
int RunReload(const Client& client);

// ---- id, repair, reset: no daemon needed (commands_maintenance.cc) ----

struct IdArgs {
  bool json = false;
};
void AddIdCommand(CLI::App& app, IdArgs* args);
int RunId(const mycel::config::Config& config, const IdArgs& args);

struct RepairArgs {
  bool force = false;
};
void AddRepairCommand(CLI::App& app, RepairArgs* args);
int RunRepair(const mycel::config::Config& config, const RepairArgs& args);

void AddResetCommand(CLI::App& app);
int RunReset(const mycel::config::Config& config);

}  // namespace mycel::cli
