// `mycel ingest` and `mycel eval`: labelled files up to the daemon, to store
// or to score; `mycel ingest -` streams lines from stdin.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "cli/progress_bar.h"
#include "crypto/identity.h"

namespace mycel::cli {
namespace {

// Bytes in `paths` together, for the upload's percentage; a file that cannot
// be read counts 0 here and fails later with the reader's message.
int64_t TotalFileSize(const std::vector<std::string>& paths) {
  int64_t total = 0;
  for (const auto& p : paths) {
    struct stat st;
    if (::stat(p.c_str(), &st) == 0) total += static_cast<int64_t>(st.st_size);
  }
  return total;
}

// Streams files as FileChunks of 1 MiB, well under gRPC's 4 MB message limit.
// `bar` (if set) shows the upload: bytes handed to gRPC so far, which its
// flow control keeps within a few chunks of what the daemon has received.
template <typename Writer>
void SendFiles(Writer* writer, const std::vector<std::string>& paths, const std::string& format,
               const std::vector<int64_t>& keep_labels = {}, const std::string& key = "",
               ProgressBar* bar = nullptr) {
  constexpr size_t kChunk = 1 << 20;
  const int64_t total = bar ? TotalFileSize(paths) : 0;
  int64_t sent = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    std::string bytes = ReadFileOrFail(paths[i], bar);
    size_t off = 0;
    do {
      mycel::control::FileChunk chunk;
      chunk.set_file_index(static_cast<uint32_t>(i));
      chunk.set_name(paths[i]);
      chunk.set_format(format);
      if (i == 0 && off == 0) {
        for (int64_t l : keep_labels) chunk.add_keep_labels(l);
        chunk.set_key(key);
      }
      chunk.set_data(bytes.substr(off, kChunk));
      if (!writer->Write(chunk)) return;  // the server ended the stream; Finish() says why
      sent += static_cast<int64_t>(chunk.data().size());
      if (bar) bar->Update("upload", sent, total, ProgressUnit::kBytes);
      off += kChunk;
    } while (off < bytes.size());
  }
}

// --labels 0,1: the labels to keep, or none for every label.
std::vector<int64_t> ParseLabels(const std::string& labels) {
  std::vector<int64_t> keep;
  if (labels.empty()) return keep;
  std::stringstream ss(labels);
  std::string field;
  while (std::getline(ss, field, ',')) {
    try {
      size_t used = 0;
      long long v = std::stoll(field, &used);
      if (used != field.size() || v < 0) throw std::invalid_argument(field);
      keep.push_back(v);
    } catch (const std::exception&) {
      Fail("--labels: '" + field + "' is not a label (a non-negative integer)", 2);
    }
  }
  return keep;
}

// `mycel ingest -`: lines from stdin as they come, for pipelines. Lines are
// sent in bursts (at most 1024 lines, or whatever has come 0.5 s after a
// burst's first line), each acknowledged once the daemon has stored its
// good lines; the next burst waits for that, so a slow store slows the
// reader instead of filling memory. Bad lines are refused one by one on
// stderr ("line 7: ..."); the rest are kept. Exit 0 at end of input (1 if
// the daemon failed; refused lines alone do not fail it).
class StdinIngest {
 public:
  StdinIngest(const Client& client, const std::string& format) {
    // The stream's own bursts are larger than ours: it sends when we flush.
    Client::CheckApi(client.api->OpenExampleStream(4096, &stream_, format.empty() ? "csv" : format));
  }

  int Run(bool json) {
    while (!eof_ || !pending_.empty()) {
      Read();
      CutLines();
      if (first_at_ >= 0 && (eof_ || NowS() - first_at_ >= kBurstWaitMs / 1000.0)) Flush();
      if (eof_ && pending_.empty()) break;
    }
    Flush();
    Client::CheckApi(stream_->Finish(nullptr));
    if (json) {
      PrintJson(Json{{"lines", lines_}, {"stored", stored_}, {"refused", refused_}});
    } else {
      std::printf("%lld line(s): %lld example(s) stored, %lld line(s) refused\n", static_cast<long long>(lines_),
                  static_cast<long long>(stored_), static_cast<long long>(refused_));
    }
    return 0;
  }

 private:
  static constexpr size_t kBurstLines = 1024;
  static constexpr size_t kBurstBytes = 1 << 20;
  static constexpr int kBurstWaitMs = 500;

  static double NowS() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }

  // Waits for input, no longer than the pending burst may, and appends it.
  void Read() {
    const int wait_ms =
        first_at_ < 0 ? -1 : std::max(0, kBurstWaitMs - static_cast<int>((NowS() - first_at_) * 1000));
    pollfd in{STDIN_FILENO, POLLIN, 0};
    const int ready = eof_ ? 0 : ::poll(&in, 1, wait_ms);
    if (ready < 0 && errno != EINTR) Fail(std::string("reading stdin: ") + std::strerror(errno));
    if (ready <= 0) return;
    char buf[64 << 10];
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno != EINTR && errno != EAGAIN) Fail(std::string("reading stdin: ") + std::strerror(errno));
    if (n == 0) eof_ = true;
    if (n > 0) pending_.append(buf, static_cast<size_t>(n));
  }

  // Whole lines into the burst (at end of input, the last one too).
  void CutLines() {
    size_t at = 0;
    for (size_t nl; (nl = pending_.find('\n', at)) != std::string::npos || (eof_ && at < pending_.size());) {
      if (nl == std::string::npos) nl = pending_.size();
      std::string line = pending_.substr(at, nl - at);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      at = nl + 1;
      if (first_at_ < 0) first_at_ = NowS();
      burst_bytes_ += line.size();
      burst_lines_++;
      Client::CheckApi(stream_->AddLine(std::move(line)));
      if (burst_lines_ >= kBurstLines || burst_bytes_ >= kBurstBytes) Flush();
    }
    pending_.erase(0, std::min(at, pending_.size()));
  }

  void Flush() {
    first_at_ = -1;
    if (burst_lines_ == 0) return;
    mycel::AddResult r;
    Client::CheckApi(stream_->Flush(&r));
    for (const auto& refusal : r.refused) {  // the stream numbers from 0, a reader from 1
      std::fprintf(stderr, "line %lld refused: %s\n", static_cast<long long>(refusal.index + 1),
                   refusal.reason.c_str());
    }
    lines_ += static_cast<int64_t>(burst_lines_);
    stored_ += r.stored;
    refused_ += static_cast<int64_t>(r.refused.size());
    burst_lines_ = burst_bytes_ = 0;
  }

  std::unique_ptr<mycel::ExampleStream> stream_;
  int64_t lines_ = 0, stored_ = 0, refused_ = 0;
  std::string pending_;  // bytes read and not yet cut into lines
  bool eof_ = false;
  size_t burst_lines_ = 0, burst_bytes_ = 0;
  double first_at_ = -1;  // monotonic s of the pending burst's first line
};

// One Ingest call: files up, progress down. `heard` is set once the daemon
// has said anything, i.e. it held every file; `reply` is set on DONE.
grpc::Status IngestOnce(const Client& client, const std::vector<std::string>& files, const std::string& format,
                        const std::vector<int64_t>& keep_labels, const std::string& key, ProgressBar* bar,
                        bool* heard, mycel::control::IngestReply* reply, bool* done) {
  auto ctx = client.Context(3600);
  auto stream = client.stub->Ingest(ctx.get());
  SendFiles(stream.get(), files, format, keep_labels, key, bar);
  stream->WritesDone();
  mycel::control::IngestProgress progress;
  while (stream->Read(&progress)) {
    *heard = true;
    switch (progress.phase()) {
      case mycel::control::IngestProgress::PARSING:
        bar->Update("parsing", 0, 0, ProgressUnit::kExamples);
        break;
      case mycel::control::IngestProgress::STORING:
        bar->Update("storing", progress.done(), progress.total(), ProgressUnit::kExamples);
        break;
      case mycel::control::IngestProgress::DONE:
        *reply = progress.reply();
        *done = true;
        break;
      default:
        break;  // a phase from a newer daemon: nothing to show
    }
  }
  return stream->Finish();
}

// An ingest that survives the daemon going away after it held the files: the
// call is repeated with the same idempotency key once the daemon is back
// (systemd restarts it), for up to `retry_s`, so a commit whose answer was
// lost is answered from the store instead of stored twice.
mycel::control::IngestReply Ingest(const Client& client, const std::vector<std::string>& files,
                                   const std::string& format, const std::vector<int64_t>& keep_labels,
                                   const std::string& key, double retry_s, ProgressBar* bar) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(retry_s);
  const auto fail_if_late = [&] {
    if (std::chrono::steady_clock::now() < give_up) return;
    Fail("myceld went away during the ingest and did not come back within " + Fixed(retry_s, 0) +
         " s; it may have stored the examples: mycel ingest --key " + key +
         " ... finishes it without storing anything twice");
  };
  for (int attempt = 0;; ++attempt) {
    bool heard = false, done = false;
    mycel::control::IngestReply reply;
    grpc::Status status = IngestOnce(client, files, format, keep_labels, key, bar, &heard, &reply, &done);
    bar->Clear();
    if (status.ok() && done) return reply;
    if (status.ok()) Fail("myceld ended the ingest without a result");
    // UNAVAILABLE before the daemon heard us: it is not running, or went away
    // while the files were on their way, which stores nothing; say so.
    const bool lost = status.error_code() == grpc::StatusCode::UNAVAILABLE && (heard || attempt > 0);
    if (!lost) client.Check(status);
    fail_if_late();
    std::fprintf(stderr, "myceld went away during the ingest (%s); retrying with key %s\n",
                 status.error_message().c_str(), key.c_str());
    while (!client.Answers()) {
      fail_if_late();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

void PrintIngestReply(const mycel::control::IngestReply& r, const std::string& key, bool json) {
  if (json) {
    PrintJson(Json{
        {"offered", r.offered()}, {"stored", r.stored()}, {"evicted", r.evicted()}, {"duplicates", r.duplicates()},
        {"train", r.train()}, {"validation", r.validation()}, {"examples_train", r.examples_train()},
        {"examples_val", r.examples_val()}, {"replayed", r.replayed()}, {"key", key},
    });
  } else if (r.replayed()) {
    std::printf("already stored by an earlier ingest with key %s (%lld examples then); nothing stored now; "
                "store holds %lld train, %lld validation\n",
                key.c_str(), static_cast<long long>(r.stored()), static_cast<long long>(r.examples_train()),
                static_cast<long long>(r.examples_val()));
  } else {
    // Scripts parse this line: the duplicates go after it, only when there are some.
    std::printf("stored %lld examples (%lld train, %lld validation, %lld evicted); store holds "
                "%lld train, %lld validation",
                static_cast<long long>(r.stored()), static_cast<long long>(r.train()),
                static_cast<long long>(r.validation()), static_cast<long long>(r.evicted()),
                static_cast<long long>(r.examples_train()), static_cast<long long>(r.examples_val()));
    if (r.duplicates() > 0) std::printf("; %lld already stored", static_cast<long long>(r.duplicates()));
    std::printf("\n");
  }
}

}  // namespace

void AddIngestCommand(CLI::App& app, IngestArgs* args) {
  auto* cmd = app.add_subcommand("ingest", "store examples from files");
  cmd->add_option("files", args->files,
                  "idx/idx.gz image+label files, CSV (label first) or UTF-8 text; - reads csv or text lines "
                  "from stdin as they come")
      ->required();
  cmd->add_option("--format", args->format, "idx | csv | text (guessed when omitted)")
      ->check(CLI::IsMember({"idx", "csv", "text"}));
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_flag("--no-progress", args->no_progress,
                "no progress bar (it is drawn on stderr only when that is a terminal, never with --json)");
  cmd->add_option("--labels", args->labels, "store only examples with these labels (e.g. --labels 0,1)");
  cmd->add_option("--key", args->key,
                  "idempotency key (1-128 of A-Z a-z 0-9 . _ : -): an ingest with a key the daemon has "
                  "stored before stores nothing again (default: a fresh random key)");
  cmd->add_option("--retry", args->retry_s,
                  "seconds to wait for a daemon that went away mid-ingest, then retry with the same key")
      ->check(CLI::Range(0.0, 86400.0));
}

int RunIngest(const Client& client, const IngestArgs& args) {
  const std::vector<int64_t> keep_labels = ParseLabels(args.labels);
  if (args.files == std::vector<std::string>{"-"}) {
    if (args.format == "idx") Fail("stdin takes csv or text lines, not idx", 2);
    return StdinIngest(client, args.format).Run(args.json);
  }
  ProgressBar bar(STDERR_FILENO, ProgressBar::ShouldDraw(STDERR_FILENO, args.json || args.no_progress));
  const std::string key = args.key.empty() ? mycel::crypto::RandomHex(16) : args.key;
  if (key.empty()) Fail("cannot draw a random ingest key (libsodium failed to start)");
  const mycel::control::IngestReply r =
      Ingest(client, args.files, args.format, keep_labels, key, args.retry_s, &bar);
  PrintIngestReply(r, key, args.json);
  return 0;
}

void AddEvalCommand(CLI::App& app, EvalArgs* args) {
  auto* cmd = app.add_subcommand("eval", "accuracy and loss on labelled data (not trained on)");
  cmd->add_option("files", args->files, "labelled data files")->required();
  cmd->add_option("--format", args->format, "idx | csv | text")->check(CLI::IsMember({"idx", "csv", "text"}));
  cmd->add_flag("--json", args->json, "print JSON");
}

int RunEval(const Client& client, const EvalArgs& args) {
  mycel::control::EvalReply r;
  auto ctx = client.Context(3600);
  auto writer = client.stub->Eval(ctx.get(), &r);
  SendFiles(writer.get(), args.files, args.format);
  writer->WritesDone();
  client.Check(writer->Finish());
  if (args.json) {
    PrintJson(Json{{"accuracy", r.accuracy()}, {"loss", r.loss()}, {"examples", r.examples()}});
  } else {
    std::printf("accuracy %s, loss %s on %lld examples\n", Fixed(r.accuracy(), 4).c_str(), Fixed(r.loss(), 4).c_str(),
                static_cast<long long>(r.examples()));
  }
  return 0;
}

}  // namespace mycel::cli
