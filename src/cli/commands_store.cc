// `mycel data` and `mycel forget`: what the example store holds, and
// deleting from it.
#include <cstdint>
#include <cstdio>

#include "cli/commands.h"
#include "cli/when.h"

namespace mycel::cli {
namespace {

void PrintDataJson(const mycel::control::DataReply& r) {
  Json labels = Json::array(), ingests = Json::array();
  for (const auto& l : r.labels()) {
    labels.push_back({{"label", l.label()}, {"train", l.train()}, {"validation", l.validation()}});
  }
  for (const auto& g : r.ingests()) {
    ingests.push_back({
        {"id", g.id()}, {"added", FormatWhen(g.added_unix_ms())}, {"added_unix_ms", g.added_unix_ms()},
        {"source", g.source()}, {"offered", g.offered()}, {"duplicates", g.duplicates()}, {"train", g.train()},
        {"validation", g.validation()},
    });
  }
  PrintJson(Json{
      {"examples_train", r.examples_train()}, {"examples_val", r.examples_val()}, {"labels", std::move(labels)},
      {"ingests", std::move(ingests)}, {"ingests_total", r.ingests_total()},
  });
}

void PrintDataText(const mycel::control::DataReply& r) {
  std::printf("%lld train, %lld validation examples\n", static_cast<long long>(r.examples_train()),
              static_cast<long long>(r.examples_val()));
  if (r.labels_size() > 0) {
    std::printf("\n%-8s %10s %10s\n", "LABEL", "TRAIN", "VALIDATION");
    for (const auto& l : r.labels()) {
      std::printf("%-8s %10lld %10lld\n", l.label() < 0 ? "text" : std::to_string(l.label()).c_str(),
                  static_cast<long long>(l.train()), static_cast<long long>(l.validation()));
    }
  }
  if (r.ingests_size() > 0) {
    std::printf("\n%-6s %-24s %9s %10s %9s %9s  %s\n", "INGEST", "ADDED (UTC)", "OFFERED", "DUPLICATES", "TRAIN",
                "VALID", "SOURCE");
    for (const auto& g : r.ingests()) {
      std::printf("%-6lld %-24s %9lld %10lld %9lld %9lld  %s\n", static_cast<long long>(g.id()),
                  FormatWhen(g.added_unix_ms()).c_str(), static_cast<long long>(g.offered()),
                  static_cast<long long>(g.duplicates()), static_cast<long long>(g.train()),
                  static_cast<long long>(g.validation()), g.source().c_str());
    }
    if (r.ingests_total() > r.ingests_size()) {
      std::printf("(%lld older ingests not shown; --ingests N shows more)\n",
                  static_cast<long long>(r.ingests_total() - r.ingests_size()));
    }
  }
}

}  // namespace

void AddDataCommand(CLI::App& app, DataArgs* args) {
  auto* cmd = app.add_subcommand("data", "stored examples per label and per ingest");
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_option("--ingests", args->max_ingests, "newest ingests listed")->check(CLI::Range(1, 100000));
}

int RunData(const Client& client, const DataArgs& args) {
  mycel::control::DataRequest req;
  req.set_max_ingests(args.max_ingests);
  mycel::control::DataReply r;
  client.Check(client.stub->Data(client.Context(60).get(), req, &r));
  if (args.json) {
    PrintDataJson(r);
  } else {
    PrintDataText(r);
  }
  return 0;
}

void AddForgetCommand(CLI::App& app, ForgetArgs* args) {
  auto* cmd =
      app.add_subcommand("forget", "delete stored examples for good (criteria combine: --label 3 --before 30d)");
  cmd->add_flag("--all", args->all, "every example");
  cmd->add_option("--label", args->label, "examples of this label")->check(CLI::Range(int64_t{0}, INT64_MAX));
  cmd->add_option("--before", args->before,
                  "examples ingested before a time: 2026-12-04, 2026-12-04T17:30:00Z or an age (30d, 12h)");
  cmd->add_option("--ingest", args->ingest, "examples of one ingest (its id in `mycel data`)")
      ->check(CLI::Range(int64_t{1}, INT64_MAX));
  cmd->add_flag("--json", args->json, "print JSON");
}

// Deletes examples from the store and the trainer's memory.
int RunForget(const Client& client, const ForgetArgs& args) {
  mycel::control::ForgetRequest req;
  const bool some = args.label >= 0 || !args.before.empty() || args.ingest > 0;
  if (args.all == some) Fail("forget takes --all, or one or more of --label, --before and --ingest", 2);
  req.set_all(args.all);
  if (args.label >= 0) req.set_label(args.label);
  if (args.ingest > 0) req.set_ingest(args.ingest);
  if (!args.before.empty()) {
    auto when = ParseWhen(args.before, NowUnixMs());
    if (!when.ok()) Fail("--before: " + std::string(when.status().message()), 2);
    req.set_before_unix_ms(*when);
  }
  mycel::control::ForgetReply r;
  client.Check(client.stub->Forget(client.Context(600).get(), req, &r));
  if (args.json) {
    PrintJson(Json{
        {"forgot_train", r.train()}, {"forgot_validation", r.validation()},
        {"examples_train", r.examples_train()}, {"examples_val", r.examples_val()},
    });
  } else {
    std::printf("forgot %lld examples (%lld train, %lld validation); store holds %lld train, %lld validation\n"
                "the model keeps what it learnt from them; `mycel reset` (daemon stopped) starts it afresh\n",
                static_cast<long long>(r.train() + r.validation()), static_cast<long long>(r.train()),
                static_cast<long long>(r.validation()), static_cast<long long>(r.examples_train()),
                static_cast<long long>(r.examples_val()));
  }
  return 0;
}

}  // namespace mycel::cli
