// `mycel predict` and `mycel export`: the model's answers, and the model.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "cli/commands.h"
#include "common/file_util.h"

namespace mycel::cli {
namespace {

// The request for `args`: exactly one input, files, values or a prompt.
mycel::control::PredictRequest PredictRequestOrFail(const PredictArgs& args) {
  mycel::control::PredictRequest req;
  req.set_top_k(args.top_k);
  req.set_generate(args.generate);
  req.set_index(args.index);
  int inputs = (!args.text.empty()) + (!args.values.empty()) + (!args.files.empty());
  if (inputs != 1) Fail("predict takes exactly one input: FILE..., --values or --text", 2);
  if (!args.text.empty()) req.set_text(args.text);
  if (!args.values.empty()) {
    std::stringstream ss(args.values);
    std::string field;
    while (std::getline(ss, field, ',')) {
      try {
        size_t used = 0;
        float v = std::stof(field, &used);
        if (used != field.size()) throw std::invalid_argument(field);
        req.add_values(v);
      } catch (const std::exception&) {
        Fail("--values: '" + field + "' is not a number", 2);
      }
    }
  }
  for (size_t i = 0; i < args.files.size(); ++i) {
    auto* f = req.add_files();
    f->set_file_index(static_cast<uint32_t>(i));
    f->set_name(args.files[i]);
    f->set_format(args.format);
    f->set_data(ReadFileOrFail(args.files[i]));
  }
  return req;
}

void PrintPredictJson(const mycel::control::PredictReply& r, const PredictArgs& args) {
  Json top = Json::array();
  for (const auto& t : r.top()) {
    Json one{{"label", t.label()}, {"probability", t.probability()}};
    if (!t.name().empty()) one["name"] = t.name();
    top.push_back(std::move(one));
  }
  Json doc{{"top", std::move(top)}};
  if (!args.text.empty()) {
    // Raw bytes may not be UTF-8: the string replaces such bytes with U+FFFD.
    doc["continuation"] = r.continuation();
    doc["continuation_bytes"] = static_cast<int64_t>(r.continuation().size());
  }
  if (r.true_label() >= 0) doc["true_label"] = r.true_label();
  PrintJson(doc);
}

void PrintPredictText(const mycel::control::PredictReply& r, const PredictArgs& args) {
  for (const auto& p : r.top()) {
    if (!args.text.empty()) {
      unsigned char c = static_cast<unsigned char>(p.label());
      std::string shown = c == '\n'                 ? "\\n"
                          : c == ' '                ? "' '"
                          : c < 0x20 || c >= 0x7f ? "0x" + std::to_string(c)
                                                    : std::string(1, c);
      std::printf("%-6s %.4f\n", shown.c_str(), p.probability());
    } else {
      std::printf("class %-4lld %.4f%s%s\n", static_cast<long long>(p.label()), p.probability(),
                  p.name().empty() ? "" : "  ", p.name().c_str());
    }
  }
  if (r.true_label() >= 0) std::printf("true label %lld\n", static_cast<long long>(r.true_label()));
  if (!r.continuation().empty()) std::printf("%s%s\n", args.text.c_str(), r.continuation().c_str());
}

}  // namespace

void AddPredictCommand(CLI::App& app, PredictArgs* args) {
  auto* cmd = app.add_subcommand("predict", "class probabilities for an input, or next characters for a prompt");
  cmd->add_option("files", args->files, "labelled data file(s) holding the input (see --index)");
  cmd->add_option("--index", args->index, "which example of the file(s)");
  cmd->add_option("--values", args->values, "comma-separated input values (classifiers)");
  cmd->add_option("--text", args->text, "prompt (char_lm)");
  cmd->add_option("--top", args->top_k, "how many candidates")->check(CLI::Range(1, 256));
  cmd->add_option("--generate", args->generate, "char_lm: greedy continuation length")->check(CLI::Range(0, 10000));
  cmd->add_option("--format", args->format, "idx | csv")->check(CLI::IsMember({"idx", "csv", "text"}));
  cmd->add_flag("--json", args->json, "print JSON");
}

int RunPredict(const Client& client, const PredictArgs& args) {
  const mycel::control::PredictRequest req = PredictRequestOrFail(args);
  mycel::control::PredictReply r;
  client.Check(client.stub->Predict(client.Context(60).get(), req, &r));
  if (args.json) {
    PrintPredictJson(r, args);
  } else {
    PrintPredictText(r, args);
  }
  return 0;
}

void AddExportCommand(CLI::App& app, ExportArgs* args) {
  auto* cmd = app.add_subcommand("export", "write the model as TorchScript (torch.jit.load opens it)");
  cmd->add_option("--out", args->out_path, "output file, or a directory to write model.pt into")->required();
}

int RunExport(const Client& client, const ExportArgs& args) {
  auto ctx = client.Context(600);
  auto reader = client.stub->Export(ctx.get(), {});
  std::string bytes;
  mycel::control::ExportChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  client.Check(reader->Finish());
  std::string out_path = args.out_path;
  std::error_code ec;
  if (std::filesystem::is_directory(out_path, ec)) out_path = (std::filesystem::path(out_path) / "model.pt").string();
  auto s = mycel::Env::Default()->WriteFileAtomically(out_path, bytes);
  if (!s.ok()) Fail("export: cannot write " + out_path + ": " + std::string(s.message()));
  std::printf("wrote %s (%zu bytes, TorchScript)\n", out_path.c_str(), bytes.size());
  return 0;
}

}  // namespace mycel::cli
