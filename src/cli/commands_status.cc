// `mycel status`, `pause`, `resume` and `history`: what the daemon is doing,
// and what it did.
#include <chrono>
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "cli/when.h"

namespace mycel::cli {
namespace {

void PrintStatusJson(const mycel::control::StatusReply& r) {
  PrintJson(Json{
      {"node", r.node_name()}, {"version", r.version()}, {"power_source", r.power_source()},
      {"state", r.state()}, {"reason", r.reason()}, {"steps", r.steps()}, {"samples_trained", r.samples_trained()},
      {"examples_train", r.examples_train()}, {"examples_val", r.examples_val()},
      {"train_loss", r.train_loss()}, {"learning_rate", r.learning_rate()}, {"val_loss", r.val_loss()},
      {"val_accuracy", r.val_accuracy()}, {"eval_examples", r.eval_examples()},
      {"model_kind", r.model_kind()}, {"model_fingerprint", r.model_fingerprint()},
      {"parameters", r.parameters()}, {"shared_parameters", r.shared_parameters()},
      {"steps_per_s", r.steps_per_s()}, {"checkpoints_written", r.checkpoints_written()},
      {"last_checkpoint_step", r.last_checkpoint_step()}, {"uptime_s", r.uptime_s()},
      {"public_key", r.public_key()}, {"state_dir", r.state_dir()}, {"rounds", r.rounds()},
      {"bytes_sent", r.bytes_sent()}, {"bytes_received", r.bytes_received()}, {"peers", r.peers()},
      {"peers_connected", r.peers_connected()}, {"listen_port", r.listen_port()},
      {"metrics_url", r.metrics_url()}, {"ui_url", r.ui_url()},
      {"discovery", r.discovery()}, {"discovery_announced", r.discovery_announced()},
      {"validations_without_gain", r.validations_without_gain()}, {"best_val_loss", r.best_val_loss()},
      {"rest_s", r.rest_seconds()}, {"rests", r.rests()}, {"last_wake", r.last_wake()},
      {"drift_rollbacks", r.drift_rollbacks()}, {"last_rollback", r.last_rollback()},
  });
}

// The lines after the model's: training, data, losses and checkpoints.
void PrintTrainingText(const mycel::control::StatusReply& r) {
  if (r.state() == "training") {
    std::printf("steps       %lld (%s steps/s), %lld samples trained\n", static_cast<long long>(r.steps()),
                Fixed(r.steps_per_s(), 1).c_str(), static_cast<long long>(r.samples_trained()));
  } else {  // a rate is of a training daemon: paused or resting, it would be a stale figure
    std::printf("steps       %lld, %lld samples trained\n", static_cast<long long>(r.steps()),
                static_cast<long long>(r.samples_trained()));
  }
  std::printf("examples    %lld train, %lld validation\n", static_cast<long long>(r.examples_train()),
              static_cast<long long>(r.examples_val()));
  if (r.steps() > 0) {
    std::printf("train loss  %s (learning rate %s)\n", Fixed(r.train_loss(), 4).c_str(),
                Rate(r.learning_rate()).c_str());
  } else {
    std::printf("train loss  - (no step yet)\n");
  }
  if (r.eval_examples() > 0) {
    std::printf("validation  loss %s, accuracy %s (on %lld examples)\n", Fixed(r.val_loss(), 4).c_str(),
                Fixed(r.val_accuracy(), 4).c_str(), static_cast<long long>(r.eval_examples()));
  } else {
    std::printf("validation  - (no pass yet)\n");
  }
  if (r.last_checkpoint_step() >= 0) {
    std::printf("checkpoint  %lld written, last at step %lld\n", static_cast<long long>(r.checkpoints_written()),
                static_cast<long long>(r.last_checkpoint_step()));
  } else {
    std::printf("checkpoint  none yet\n");
  }
  if (r.drift_rollbacks() > 0) {
    std::printf("drift guard %lld rollback(s); last: %s\n", static_cast<long long>(r.drift_rollbacks()),
                r.last_rollback().c_str());
  }
}

void PrintStatusText(const mycel::control::StatusReply& r) {
  std::printf("node        %s (myceld %s)\n", r.node_name().c_str(), r.version().c_str());
  if (r.state() == "resting") {
    std::printf("state       %s (%s; next burst within %s s)\n", r.state().c_str(), r.reason().c_str(),
                Fixed(r.rest_seconds(), 0).c_str());
  } else {
    std::printf("state       %s (%s)\n", r.state().c_str(), r.reason().c_str());
  }
  std::printf("model       %s, %lld parameters (%lld shared)\n", r.model_kind().c_str(),
              static_cast<long long>(r.parameters()), static_cast<long long>(r.shared_parameters()));
  PrintTrainingText(r);
  if (r.peers() > 0) {
    std::printf("federation  %lld rounds, %d/%d neighbours connected, %s sent, %s received\n",
                static_cast<long long>(r.rounds()), r.peers_connected(), r.peers(), Bytes(r.bytes_sent()).c_str(),
                Bytes(r.bytes_received()).c_str());
  }
  if (!r.metrics_url().empty()) std::printf("metrics     %s\n", r.metrics_url().c_str());
  if (!r.ui_url().empty()) std::printf("dashboard   %s\n", r.ui_url().c_str());
  if (!r.discovery().empty()) std::printf("discovery   %s\n", r.discovery().c_str());
  std::printf("uptime      %s\n", Duration(r.uptime_s()).c_str());
}

void PrintHistoryJson(const mycel::control::HistoryReply& r) {
  Json passes = Json::array();
  for (const auto& p : r.passes()) {
    passes.push_back({
        {"time", FormatWhen(static_cast<int64_t>(p.unix_s() * 1000))}, {"unix_s", p.unix_s()},
        {"steps", p.steps()}, {"samples_trained", p.samples_trained()}, {"val_accuracy", p.val_accuracy()},
        {"val_loss", p.val_loss()}, {"train_loss", p.train_loss()}, {"learning_rate", p.learning_rate()},
        {"rounds", p.rounds()}, {"bytes_sent", p.bytes_sent()}, {"bytes_received", p.bytes_received()},
        {"state", p.state()},
    });
  }
  PrintJson(Json{{"passes", passes}});
}

}  // namespace

void AddStatusCommand(CLI::App& app, StatusArgs* args) {
  auto* cmd = app.add_subcommand("status", "what the daemon is doing and why");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_flag("--watch", args->watch, "refresh in place, like top (Ctrl-C to quit)");
  cmd->add_option("--interval", args->interval, "seconds between refreshes with --watch")
      ->check(CLI::Range(0.1, 3600.0));
}

int RunStatus(const Client& client, const StatusArgs& args) {
  for (bool first = true;; first = false) {
    mycel::control::StatusReply r;
    grpc::Status gs = client.stub->Status(client.Context(10).get(), {}, &r);
    if (!gs.ok() && args.watch && !first) {
      // The daemon went away while watched: a stop, most likely (its log says if it was a crash).
      std::printf("\nmyceld has stopped (%s no longer answers)\n", client.socket.c_str());
      return 0;
    }
    client.Check(gs);
    if (args.watch) std::printf("\x1b[H\x1b[2J");  // home + clear: redraw in place
    if (args.json) {
      PrintStatusJson(r);
    } else {
      PrintStatusText(r);
    }
    if (!args.watch) return 0;
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::duration<double>(args.interval));
  }
}

void AddPauseResumeCommands(CLI::App& app) {
  app.add_subcommand("pause", "stop training (survives a daemon restart)");
  app.add_subcommand("resume", "resume training");
}

int RunPause(const Client& client) {
  Client::CheckApi(client.api->Pause());
  std::printf("paused\n");
  return 0;
}

int RunResume(const Client& client) {
  Client::CheckApi(client.api->Resume());
  std::printf("resumed\n");
  return 0;
}

void AddHistoryCommand(CLI::App& app, HistoryArgs* args) {
  auto* cmd = app.add_subcommand("history", "accuracy and loss at every validation pass, with rounds and bytes");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_option("--since", args->since, "only passes since WHEN: 90m, 2d, 2026-12-04 or an RFC 3339 time");
}

// The daemon's validation passes, oldest first.
int RunHistory(const Client& client, const HistoryArgs& args) {
  mycel::control::HistoryRequest req;
  if (!args.since.empty()) {
    auto when = ParseWhen(args.since, NowUnixMs());
    if (!when.ok()) Fail("--since: " + std::string(when.status().message()), 2);
    req.set_since_unix_s(static_cast<double>(*when) / 1000);
  }
  mycel::control::HistoryReply r;
  client.Check(client.stub->History(client.Context(30).get(), req, &r));
  if (args.json) {
    PrintHistoryJson(r);
    return 0;
  }
  if (r.passes_size() == 0) {
    std::printf("no validation passes recorded%s (one is made every [training] eval_interval_s while training)\n",
                args.since.empty() ? "" : (" since " + args.since).c_str());
    return 0;
  }
  std::printf("%-24s %9s %9s %9s %9s %8s %7s %10s %10s  %s\n", "TIME", "STEPS", "ACCURACY", "VAL LOSS", "TRAIN",
              "LR", "ROUNDS", "SENT", "RECEIVED", "STATE");
  for (const auto& p : r.passes()) {
    std::printf("%-24s %9lld %9.4f %9.4f %9.4f %8.5f %7lld %10s %10s  %s\n",
                FormatWhen(static_cast<int64_t>(p.unix_s() * 1000)).c_str(), static_cast<long long>(p.steps()),
                p.val_accuracy(), p.val_loss(), p.train_loss(), p.learning_rate(), static_cast<long long>(p.rounds()),
                Bytes(p.bytes_sent()).c_str(), Bytes(p.bytes_received()).c_str(), p.state().c_str());
  }
  return 0;
}

}  // namespace mycel::cli
