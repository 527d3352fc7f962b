// mycel: the command-line tool for myceld. Talks to the daemon over its
// control socket (gRPC on a Unix socket in the state directory); `id` works
// without a daemon. Exit 0 on success; otherwise a one-line message on stderr
// and exit 1 (2 for usage or config errors).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include "absl/strings/str_join.h"
#include <grpcpp/grpcpp.h>

#include "cli/progress_bar.h"
#include "cli/when.h"
#include "common/file_util.h"
#include "common/version.h"
#include "config/config.h"
#include "control.grpc.pb.h"
#include "crypto/identity.h"
#include "data/example_store.h"
#include "mycel/client.h"
#include "data/repair.h"

namespace {

using mycel::control::Control;

[[noreturn]] void Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "mycel: %s\n", message.c_str());
  std::exit(code);
}

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

// Replaces each byte that is not part of a well-formed UTF-8 sequence with
// U+FFFD, so JSON output stays valid whatever a young char_lm generates.
std::string ValidUtf8(const std::string& in) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 && c >= 0xc2 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e && c <= 0xf4 ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(in[i + k]) >> 6) == 0x2;
    if (ok && len == 3) {
      unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
    }
    if (ok && len == 4) {
      unsigned char c1 = static_cast<unsigned char>(in[i + 1]);
      ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xef\xbf\xbd";
      i += 1;
    }
  }
  return out;
}

// Minimal JSON object writer: numbers, strings, NaN as null.
class Json {
 public:
  Json& Str(const std::string& k, const std::string& v) { Key(k); out_ += Quote(v); return *this; }
  Json& Int(const std::string& k, int64_t v) { Key(k); out_ += std::to_string(v); return *this; }
  Json& Bool(const std::string& k, bool v) { Key(k); out_ += v ? "true" : "false"; return *this; }
  Json& Num(const std::string& k, double v) {
    Key(k);
    if (!std::isfinite(v)) { out_ += "null"; return *this; }
    std::ostringstream os;
    os.precision(10);
    os << v;
    out_ += os.str();
    return *this;
  }
  Json& Raw(const std::string& k, const std::string& raw) { Key(k); out_ += raw; return *this; }
  std::string Done() const { return "{" + out_ + "}"; }
  static std::string Quote(const std::string& raw) {
    std::string s = ValidUtf8(raw);
    std::string q = "\"";
    for (unsigned char c : s) {
      switch (c) {
        case '"': q += "\\\""; break;
        case '\\': q += "\\\\"; break;
        case '\n': q += "\\n"; break;
        case '\t': q += "\\t"; break;
        case '\r': q += "\\r"; break;
        default:
          if (c < 0x20) { char buf[8]; std::snprintf(buf, sizeof(buf), "\\u%04x", c); q += buf; }
          else q.push_back(static_cast<char>(c));
      }
    }
    return q + "\"";
  }
 private:
  void Key(const std::string& k) { if (!out_.empty()) out_ += ","; out_ += Quote(k) + ":"; }
  std::string out_;
};

// The daemon, reached two ways over one socket: `api`, the public client
// (include/mycel/client.h) that applications use, for what it offers
// (pause, resume, streams of examples, and the words for a daemon that does
// not answer); `stub`, the generated control stub, for the administration
// the public API leaves out (peers, data, forget, export, files).
struct Client {
  std::string socket;
  std::unique_ptr<mycel::Client> api;
  std::unique_ptr<Control::Stub> stub;

  explicit Client(const std::string& socket_path) : socket(socket_path) {
    mycel::ClientOptions options;
    options.socket_path = socket;
    CheckApi(mycel::Client::Open(options, &api));
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    stub = Control::NewStub(
        grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args));
  }

  void Check(const grpc::Status& s) const {
    if (s.ok()) return;
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) Fail(WhyUnreachable());
    Fail(s.error_message());
  }
  static void CheckApi(const mycel::Status& s) {
    if (!s.ok()) Fail(s.message());
  }

  // Whether the daemon answers now.
  bool Answers() const {
    mycel::DaemonStatus st;
    return api->GetStatus(&st).ok();
  }
  // gRPC says only "unavailable"; the public client tells a daemon that is
  // not running from a socket this user may not open.
  std::string WhyUnreachable() const {
    mycel::DaemonStatus st;
    mycel::Status s = api->GetStatus(&st);
    return s.ok() ? "myceld did not answer on " + socket + " (it answers now: try again)" : s.message();
  }

  std::unique_ptr<grpc::ClientContext> Context(int seconds) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }
};

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

// Fails (after erasing `bar`'s line, if any) when `path` cannot be read.
std::string ReadFileOrFail(const std::string& path, mycel::cli::ProgressBar* bar = nullptr) {
  auto bytes = mycel::Env::Default()->ReadFile(path);
  if (!bytes.ok()) {
    if (bar) bar->Clear();
    Fail(std::string(bytes.status().message()));
  }
  return *bytes;
}

// Streams files as FileChunks of 1 MiB, well under gRPC's 4 MB message limit.
// `bar` (if set) shows the upload: bytes handed to gRPC so far, which its
// flow control keeps within a few chunks of what the daemon has received.
template <typename Writer>
void SendFiles(Writer* writer, const std::vector<std::string>& paths, const std::string& format,
               const std::vector<int64_t>& keep_labels = {}, const std::string& key = "",
               mycel::cli::ProgressBar* bar = nullptr) {
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
      if (bar) bar->Update("upload", sent, total, mycel::cli::ProgressUnit::kBytes);
      off += kChunk;
    } while (off < bytes.size());
  }
}

std::string Fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

// What a person reads in the peers table for a failed pull: the cause in a
// few words, not gRPC's whole chain ("unreachable: failed to connect to all
// addresses; last error: UNKNOWN: ipv4:...: Failed to connect to remote host:
// Connection refused"). `mycel peers --json` keeps the full message.
std::string ShortReason(const std::string& message) {
  std::string lower = message;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::pair<const char*, const char*> kCauses[] = {
      {"connection refused", "connection refused (is myceld running there, with listen set?)"},
      {"deadline exceeded", "timed out"},
      {"timed out", "timed out"},
      {"no route to host", "no route to host"},
      {"network is unreachable", "network unreachable"},
      {"dns resolution failed", "host name not found"},
      {"name or service not known", "host name not found"},
      {"connection reset", "connection reset"},
  };
  for (const auto& [needle, said] : kCauses) {
    if (lower.find(needle) != std::string::npos) return said;
  }
  constexpr size_t kMax = 60;
  return message.size() <= kMax ? message : message.substr(0, kMax - 3) + "...";
}

// A learning rate: three significant digits, whatever its scale (0.1, 0.00123, 1e-06).
std::string Rate(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

// One Ingest call: files up, progress down. `heard` is set once the daemon
// has said anything, i.e. it held every file; `reply` is set on DONE.
grpc::Status IngestOnce(const Client& client, const std::vector<std::string>& files, const std::string& format,
                        const std::vector<int64_t>& keep_labels, const std::string& key,
                        mycel::cli::ProgressBar* bar, bool* heard, mycel::control::IngestReply* reply, bool* done) {
  using mycel::cli::ProgressUnit;
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
// `mycel ingest -`: lines from stdin as they come, for pipelines. Lines are
// sent in bursts (at most 1024 lines, or whatever has come 0.5 s after a
// burst's first line), each acknowledged once the daemon has stored its
// good lines; the next burst waits for that, so a slow store slows the
// reader instead of filling memory. Bad lines are refused one by one on
// stderr ("line 7: ..."); the rest are kept. Exit 0 at end of input (1 if
// the daemon failed; refused lines alone do not fail it).
int IngestStdin(const Client& client, const std::string& format, bool json) {
  constexpr size_t kBurstLines = 1024;
  constexpr size_t kBurstBytes = 1 << 20;
  constexpr int kBurstWaitMs = 500;
  // The stream's own bursts are larger than ours: it sends when we flush.
  std::unique_ptr<mycel::ExampleStream> stream;
  Client::CheckApi(client.api->OpenExampleStream(4096, &stream, format.empty() ? "csv" : format));
  int64_t lines = 0, stored = 0, refused = 0;
  std::string pending;  // bytes read and not yet cut into lines
  bool eof = false;
  size_t burst_lines = 0, burst_bytes = 0;
  auto flush = [&]() {
    if (burst_lines == 0) return;
    mycel::AddResult r;
    Client::CheckApi(stream->Flush(&r));
    for (const auto& refusal : r.refused) {  // the stream numbers from 0, a reader from 1
      std::fprintf(stderr, "line %lld refused: %s\n", static_cast<long long>(refusal.index + 1),
                   refusal.reason.c_str());
    }
    lines += static_cast<int64_t>(burst_lines);
    stored += r.stored;
    refused += static_cast<int64_t>(r.refused.size());
    burst_lines = burst_bytes = 0;
  };
  double first_at = -1;  // monotonic s of the pending burst's first line
  auto now_s = [] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  while (!eof || !pending.empty()) {
    const int wait_ms = first_at < 0 ? -1 : std::max(0, kBurstWaitMs - static_cast<int>((now_s() - first_at) * 1000));
    pollfd in{STDIN_FILENO, POLLIN, 0};
    const int ready = eof ? 0 : ::poll(&in, 1, wait_ms);
    if (ready < 0 && errno != EINTR) Fail(std::string("reading stdin: ") + std::strerror(errno));
    if (ready > 0) {
      char buf[64 << 10];
      const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n < 0 && errno != EINTR && errno != EAGAIN) Fail(std::string("reading stdin: ") + std::strerror(errno));
      if (n == 0) eof = true;
      if (n > 0) pending.append(buf, static_cast<size_t>(n));
    }
    // Whole lines into the burst (at end of input, the last one too).
    size_t at = 0;
    for (size_t nl; (nl = pending.find('\n', at)) != std::string::npos || (eof && at < pending.size());) {
      if (nl == std::string::npos) nl = pending.size();
      std::string line = pending.substr(at, nl - at);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      at = nl + 1;
      if (first_at < 0) first_at = now_s();
      burst_bytes += line.size();
      burst_lines++;
      Client::CheckApi(stream->AddLine(std::move(line)));
      if (burst_lines >= kBurstLines || burst_bytes >= kBurstBytes) {
        flush();
        first_at = -1;
      }
    }
    pending.erase(0, std::min(at, pending.size()));
    if (first_at >= 0 && (eof || now_s() - first_at >= kBurstWaitMs / 1000.0)) {
      flush();
      first_at = -1;
    }
    if (eof && pending.empty()) break;
  }
  flush();
  Client::CheckApi(stream->Finish(nullptr));
  if (json) {
    std::printf("%s\n", Json().Int("lines", lines).Int("stored", stored).Int("refused", refused).Done().c_str());
  } else {
    std::printf("%lld line(s): %lld example(s) stored, %lld line(s) refused\n", static_cast<long long>(lines),
                static_cast<long long>(stored), static_cast<long long>(refused));
  }
  return 0;
}

mycel::control::IngestReply Ingest(const Client& client, const std::vector<std::string>& files,
                                   const std::string& format, const std::vector<int64_t>& keep_labels,
                                   const std::string& key, double retry_s, mycel::cli::ProgressBar* bar) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(retry_s);
  for (int attempt = 0;; ++attempt) {
    bool heard = false, done = false;
    mycel::control::IngestReply reply;
    grpc::Status status = IngestOnce(client, files, format, keep_labels, key, bar, &heard, &reply, &done);
    if (status.ok() && done) {
      bar->Clear();
      return reply;
    }
    bar->Clear();
    if (status.ok()) Fail("myceld ended the ingest without a result");
    // UNAVAILABLE before the daemon heard us: it is not running, or went away
    // while the files were on their way, which stores nothing; say so.
    const bool lost = status.error_code() == grpc::StatusCode::UNAVAILABLE && (heard || attempt > 0);
    if (!lost) client.Check(status);
    const std::string again = "mycel ingest --key " + key + " ... finishes it without storing anything twice";
    if (std::chrono::steady_clock::now() >= give_up) {
      Fail("myceld went away during the ingest and did not come back within " + Fixed(retry_s, 0) +
           " s; it may have stored the examples: " + again);
    }
    std::fprintf(stderr, "myceld went away during the ingest (%s); retrying with key %s\n",
                 status.error_message().c_str(), key.c_str());
    while (!client.Answers()) {
      if (std::chrono::steady_clock::now() >= give_up) {
        Fail("myceld went away during the ingest and did not come back within " + Fixed(retry_s, 0) +
             " s; it may have stored the examples: " + again);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}


// `mycel repair`: with myceld stopped (its lock is taken for the duration),
// copies what SQLite can read of the store into <store>.repair-tmp, moves the
// damaged file (and its -wal/-shm) to <store>.damaged-<UTC time>, and puts
// the new store in its place.
// Holds <state_dir>/myceld.lock, as myceld does while it runs, or fails
// saying the daemon must be stopped first for `what`.
int LockStateDirOrFail(const mycel::config::Config& config, const std::string& what) {
  const std::string lock_path = config.node.state_dir + "/myceld.lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) Fail("cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    Fail("myceld is running on " + config.node.state_dir + "; stop it before " + what +
         " (systemctl --user stop myceld)");
  }
  return lock;
}

int Repair(const mycel::config::Config& config, bool force) {
  const std::string store = config.StorePath();
  (void)LockStateDirOrFail(config, "a repair");
  struct stat st;
  const std::string salvaged_path = store + ".repair-tmp";
  if (::stat(store.c_str(), &st) != 0 && ::stat(salvaged_path.c_str(), &st) == 0) {
    // An earlier repair moved the damaged store aside, then was killed
    // before the salvaged one took its place: finish it, if it opens.
    mycel::data::ExampleStoreOptions check;
    check.path = salvaged_path;
    check.max_examples = config.training.max_examples;
    check.validation_fraction = config.training.validation_fraction;
    if (!mycel::data::ExampleStore::Open(check).ok()) {
      Fail(salvaged_path + " is not a whole store (a repair was killed while writing it); move it away and run "
           "`mycel repair` on the damaged copy (examples.db.damaged-*) by renaming it to " + store);
    }
    if (std::rename(salvaged_path.c_str(), store.c_str()) != 0) {
      Fail("cannot put " + salvaged_path + " in place: " + std::strerror(errno));
    }
    std::printf("finished an interrupted repair: %s is in place\n", store.c_str());
    return 0;
  }
  if (::stat(store.c_str(), &st) != 0) Fail("no example store at " + store + "; nothing to repair");
  mycel::data::ExampleStoreOptions options;
  options.max_examples = config.training.max_examples;
  options.validation_fraction = config.training.validation_fraction;
  options.path = store;
  {
    auto healthy = mycel::data::ExampleStore::Open(options);
    if (healthy.ok() && !force) {
      std::printf("%s opens cleanly (%lld examples); nothing to repair (--force rebuilds it anyway)\n",
                  store.c_str(),
                  static_cast<long long>((*healthy)->Count(mycel::data::Split::kTrain) +
                                         (*healthy)->Count(mycel::data::Split::kValidation)));
      return 0;
    }
    if (!healthy.ok()) std::fprintf(stderr, "%s\n", std::string(healthy.status().message()).c_str());
  }
  options.path = store + ".repair-tmp";
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((options.path + suffix).c_str());
  auto salvaged = mycel::data::SalvageStore(store, options);
  if (!salvaged.ok()) {
    for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((options.path + suffix).c_str());
    Fail("repair failed, " + store + " left as it was: " + std::string(salvaged.status().message()));
  }
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
  const std::string kept = store + ".damaged-" + when;
  // The damaged file's WAL belongs to it: left beside the new store, SQLite
  // would replay it into the wrong database.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = store + suffix;
    if (::access(from.c_str(), F_OK) == 0 && std::rename(from.c_str(), (kept + suffix).c_str()) != 0) {
      Fail("cannot move " + from + " aside: " + std::strerror(errno) + "; the salvaged store is at " +
           options.path);
    }
  }
  if (std::rename(options.path.c_str(), store.c_str()) != 0) {
    Fail("cannot put the salvaged store in place: " + std::string(std::strerror(errno)) + "; it is at " +
         options.path + ", the damaged one at " + kept);
  }
  std::printf("salvaged %lld examples (highest id %lld, %lld unreadable ids skipped) and %lld ingest keys into "
              "%s; the damaged store is kept as %s\n",
              static_cast<long long>(salvaged->salvaged), static_cast<long long>(salvaged->highest_id),
              static_cast<long long>(salvaged->unreadable), static_cast<long long>(salvaged->ingest_keys),
              store.c_str(), kept.c_str());
  return 0;
}

std::string Duration(double s) {
  int64_t t = static_cast<int64_t>(s);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%lldh%02lldm%02llds", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

std::string Bytes(int64_t b) {
  char buf[64];
  if (b < 10 * 1024) std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(b));
  else if (b < 10 * 1024 * 1024) std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  else if (b < int64_t{10} * 1024 * 1024 * 1024) std::snprintf(buf, sizeof(buf), "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof(buf), "%.1f GiB", b / 1073741824.0);
  return buf;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// `mycel data`: what the store holds, per label and per ingest.
int Data(Client& client, int max_ingests, bool json) {
  mycel::control::DataRequest req;
  req.set_max_ingests(max_ingests);
  mycel::control::DataReply r;
  client.Check(client.stub->Data(client.Context(60).get(), req, &r));
  if (json) {
    std::string labels = "[", ingests = "[";
    for (const auto& l : r.labels()) {
      labels += (labels.size() > 1 ? "," : "") +
                Json().Int("label", l.label()).Int("train", l.train()).Int("validation", l.validation()).Done();
    }
    for (const auto& g : r.ingests()) {
      ingests += (ingests.size() > 1 ? "," : "") + Json()
                                                       .Int("id", g.id())
                                                       .Str("added", mycel::cli::FormatWhen(g.added_unix_ms()))
                                                       .Int("added_unix_ms", g.added_unix_ms())
                                                       .Str("source", g.source())
                                                       .Int("offered", g.offered())
                                                       .Int("duplicates", g.duplicates())
                                                       .Int("train", g.train())
                                                       .Int("validation", g.validation())
                                                       .Done();
    }
    std::printf("%s\n", Json()
                            .Int("examples_train", r.examples_train())
                            .Int("examples_val", r.examples_val())
                            .Raw("labels", labels + "]")
                            .Raw("ingests", ingests + "]")
                            .Int("ingests_total", r.ingests_total())
                            .Done()
                            .c_str());
    return 0;
  }
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
                  mycel::cli::FormatWhen(g.added_unix_ms()).c_str(), static_cast<long long>(g.offered()),
                  static_cast<long long>(g.duplicates()), static_cast<long long>(g.train()),
                  static_cast<long long>(g.validation()), g.source().c_str());
    }
    if (r.ingests_total() > r.ingests_size()) {
      std::printf("(%lld older ingests not shown; --ingests N shows more)\n",
                  static_cast<long long>(r.ingests_total() - r.ingests_size()));
    }
  }
  return 0;
}

struct ForgetArgs {
  bool all = false;
  int64_t label = -1;   // < 0: not given
  std::string before;   // "": not given
  int64_t ingest = 0;   // 0: not given
};

// `mycel forget`: deletes examples from the store and the trainer's memory.
int Forget(Client& client, const ForgetArgs& a, bool json) {
  mycel::control::ForgetRequest req;
  const bool some = a.label >= 0 || !a.before.empty() || a.ingest > 0;
  if (a.all == some) Fail("forget takes --all, or one or more of --label, --before and --ingest", 2);
  req.set_all(a.all);
  if (a.label >= 0) req.set_label(a.label);
  if (a.ingest > 0) req.set_ingest(a.ingest);
  if (!a.before.empty()) {
    auto when = mycel::cli::ParseWhen(a.before, NowUnixMs());
    if (!when.ok()) Fail("--before: " + std::string(when.status().message()), 2);
    req.set_before_unix_ms(*when);
  }
  mycel::control::ForgetReply r;
  client.Check(client.stub->Forget(client.Context(600).get(), req, &r));
  if (json) {
    std::printf("%s\n", Json()
                            .Int("forgot_train", r.train())
                            .Int("forgot_validation", r.validation())
                            .Int("examples_train", r.examples_train())
                            .Int("examples_val", r.examples_val())
                            .Done()
                            .c_str());
  } else {
    std::printf("forgot %lld examples (%lld train, %lld validation); store holds %lld train, %lld validation\n"
                "the model keeps what it learnt from them; `mycel reset` (daemon stopped) starts it afresh\n",
                static_cast<long long>(r.train() + r.validation()), static_cast<long long>(r.train()),
                static_cast<long long>(r.validation()), static_cast<long long>(r.examples_train()),
                static_cast<long long>(r.examples_val()));
  }
  return 0;
}

// `mycel reset`: the model starts afresh at the next start. Deletes every
// checkpoint (the numbered ones, the drift guard's good one and leftovers of
// an interrupted write), which hold the weights, optimizer and federation
// state; the examples, identity and config stay.
int Reset(const mycel::config::Config& config) {
  const int lock = LockStateDirOrFail(config, "a reset");
  const std::string dir = config.CheckpointDir();
  std::error_code ec;
  int removed = 0;
  if (std::filesystem::exists(dir, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("ckpt-", 0) != 0 && name.rfind("good.bin", 0) != 0) continue;
      if (!std::filesystem::remove(entry.path(), ec)) {
        Fail("cannot delete " + entry.path().string() + ": " + ec.message() + "; " + std::to_string(removed) +
             " checkpoint file(s) deleted before it");
      }
      ++removed;
    }
    if (ec) Fail("cannot list " + dir + ": " + ec.message());
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // the deletions survive a crash
      ::close(dfd);
    }
  }
  ::close(lock);
  std::printf("deleted %d checkpoint file(s) in %s; myceld starts from a fresh model next time (the examples "
              "stay: `mycel forget --all` deletes them)\n",
              removed, dir.c_str());
  return 0;
}

// ---- pairing: `mycel peers pending|add|accept|remove`, `mycel reload` ----
//
// Pinned peers that the CLI manages live one file each in the config's
// drop-in directory (config::PeersDropInDir), so the user's own TOML and its
// comments are never rewritten; the daemon is then asked to reload.

// Asks the daemon to re-read its config. A daemon that is not running is not
// an error here: it reads the config when it starts.
bool ReloadDaemon(const Client& client, mycel::control::ReloadReply* reply, std::string* error) {
  grpc::Status s = client.stub->Reload(client.Context(30).get(), {}, reply);
  if (s.ok()) return true;
  *error = s.error_code() == grpc::StatusCode::UNAVAILABLE ? "" : s.error_message();
  return false;
}

int Reload(const Client& client) {
  mycel::control::ReloadReply r;
  std::string error;
  if (!ReloadDaemon(client, &r, &error)) Fail(error.empty() ? client.WhyUnreachable() : error);
  std::printf("reloaded: applied %s; %d neighbour(s) pinned\n", r.applied().c_str(), r.peers());
  if (!r.needs_restart().empty()) std::printf("changed but needs a restart: %s\n", r.needs_restart().c_str());
  return 0;
}

// `mycel history`: the daemon's validation passes, oldest first.
int History(const Client& client, const std::string& since, bool json) {
  mycel::control::HistoryRequest req;
  if (!since.empty()) {
    auto when = mycel::cli::ParseWhen(since, NowUnixMs());
    if (!when.ok()) Fail("--since: " + std::string(when.status().message()), 2);
    req.set_since_unix_s(static_cast<double>(*when) / 1000);
  }
  mycel::control::HistoryReply r;
  client.Check(client.stub->History(client.Context(30).get(), req, &r));
  if (json) {
    std::string list = "[";
    for (int i = 0; i < r.passes_size(); ++i) {
      const auto& p = r.passes(i);
      list += (i ? "," : "") + Json().Str("time", mycel::cli::FormatWhen(static_cast<int64_t>(p.unix_s() * 1000)))
                                   .Num("unix_s", p.unix_s()).Int("steps", p.steps())
                                   .Int("samples_trained", p.samples_trained()).Num("val_accuracy", p.val_accuracy())
                                   .Num("val_loss", p.val_loss()).Num("train_loss", p.train_loss())
                                   .Num("learning_rate", p.learning_rate()).Int("rounds", p.rounds())
                                   .Int("bytes_sent", p.bytes_sent()).Int("bytes_received", p.bytes_received())
                                   .Str("state", p.state()).Done();
    }
    std::printf("%s\n", Json().Raw("passes", list + "]").Done().c_str());
    return 0;
  }
  if (r.passes_size() == 0) {
    std::printf("no validation passes recorded%s (one is made every [training] eval_interval_s while training)\n",
                since.empty() ? "" : (" since " + since).c_str());
    return 0;
  }
  std::printf("%-24s %9s %9s %9s %9s %8s %7s %10s %10s  %s\n", "TIME", "STEPS", "ACCURACY", "VAL LOSS", "TRAIN",
              "LR", "ROUNDS", "SENT", "RECEIVED", "STATE");
  for (const auto& p : r.passes()) {
    std::printf("%-24s %9lld %9.4f %9.4f %9.4f %8.5f %7lld %10s %10s  %s\n",
                mycel::cli::FormatWhen(static_cast<int64_t>(p.unix_s() * 1000)).c_str(),
                static_cast<long long>(p.steps()), p.val_accuracy(), p.val_loss(), p.train_loss(), p.learning_rate(),
                static_cast<long long>(p.rounds()), Bytes(p.bytes_sent()).c_str(), Bytes(p.bytes_received()).c_str(),
                p.state().c_str());
  }
  return 0;
}

// The config file peers are pinned beside; fails if there is none.
std::string ConfigFileOrFail(const mycel::config::Config& config) {
  if (config.path.empty()) {
    Fail("no config file (" + mycel::config::DefaultConfigPath() +
             " does not exist): pinned peers live beside one; create it with [node] listen = \"0.0.0.0:7000\"",
         2);
  }
  return config.path;
}

// Where a neighbour is, as the tables show it.
std::string PeerWhere(const mycel::control::PeerInfo& p) { return p.dials_in() ? "(dials in)" : p.address(); }

// Pins NAME (KEY, base64 as `mycel id` prints it) at ADDRESS, or as a
// neighbour that dials in when ADDRESS is "": one drop-in file
// (config::PinPeer), then a reload.
int PinPeer(const mycel::config::Config& config, const Client& client, const std::string& name,
            const std::string& key_b64, const std::string& address, const std::string& how) {
  auto me = mycel::crypto::Identity::LoadOrCreate(config.IdentityPath());
  if (!me.ok()) Fail(std::string(me.status().message()));
  auto pinned = mycel::config::PinPeer(config, name, key_b64, address, (*me)->public_key(), how);
  if (!pinned.ok()) Fail(std::string(pinned.status().message()), absl::IsInvalidArgument(pinned.status()) ? 2 : 1);
  const std::string& file = *pinned;
  auto key = mycel::crypto::Base64Decode(key_b64);
  const std::string at = address.empty() ? "as a neighbour that dials in" : "at " + address;
  const std::string fingerprint = mycel::crypto::KeyFingerprint(*key);
  mycel::control::ReloadReply r;
  std::string error;
  if (ReloadDaemon(client, &r, &error)) {
    if (r.peers() > static_cast<int>(config.peers.size())) {
      std::printf("pinned %s (%s) %s; myceld %s from the next round\n", name.c_str(), fingerprint.c_str(),
                  at.c_str(), address.empty() ? "takes its deltas when it calls" : "pulls from it");
    } else {
      // The daemon read another config, or cannot take peers without a restart.
      std::printf("pinned %s (%s) %s in %s, but the running myceld did not take it%s: restart myceld%s\n",
                  name.c_str(), fingerprint.c_str(), at.c_str(), file.c_str(),
                  r.needs_restart().empty() ? "" : (" (" + r.needs_restart() + ")").c_str(),
                  r.needs_restart().empty() ? ", or check it runs with this config" : "");
    }
  } else if (error.empty()) {
    std::printf("pinned %s (%s) %s; myceld is not running and exchanges with it when it starts\n", name.c_str(),
                fingerprint.c_str(), at.c_str());
  } else {
    ::unlink(file.c_str());
    Fail("the daemon refused the new peer list, so " + name + " is not pinned: " + error);
  }
  return 0;
}

mycel::control::PeersReply PeersOrFail(const Client& client) {
  mycel::control::PeersReply r;
  client.Check(client.stub->Peers(client.Context(10).get(), {}, &r));
  return r;
}

int PeersPending(const Client& client, bool json) {
  const mycel::control::PeersReply r = PeersOrFail(client);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (json) {
    std::string list = "[";
    for (int i = 0; i < r.pending_size(); ++i) {
      const auto& p = r.pending(i);
      list += (i ? "," : "") + Json().Str("name", p.name()).Str("public_key", p.public_key())
                                   .Str("key_fingerprint", p.key_fingerprint()).Str("address", p.address())
                                   .Int("first_seen_unix", p.first_seen_unix())
                                   .Int("last_seen_unix", p.last_seen_unix()).Int("requests", p.requests())
                                   .Bool("same_model", p.same_model()).Bool("dials_in", p.dials_in()).Done();
    }
    std::printf("%s\n", Json().Raw("pending", list + "]").Done().c_str());
    return 0;
  }
  if (r.pending_size() == 0) {
    std::printf("no pending peers (a node that pins this one's key and calls it is listed here)\n");
    return 0;
  }
  std::printf("%-16s %-19s %-22s %-10s %8s  %s\n", "NAME", "KEY", "ADDRESS", "LAST", "REQUESTS", "MODEL");
  for (const auto& p : r.pending()) {
    std::printf("%-16s %-19s %-22s %-10s %8lld  %s\n", p.name().c_str(), p.key_fingerprint().c_str(),
                p.dials_in() ? "(dials out)" : p.address().empty() ? "(does not listen)" : p.address().c_str(),
                (std::to_string(now - p.last_seen_unix()) + "s ago").c_str(), static_cast<long long>(p.requests()),
                p.same_model() ? "same" : "DIFFERENT: it cannot exchange with this node");
  }
  std::printf("`mycel peers accept NAME|KEY-FINGERPRINT` pins one (check the fingerprint with its owner: `mycel id`)\n");
  return 0;
}

int PeersAccept(const mycel::config::Config& config, const Client& client, const std::string& who,
                std::string address, std::string name, bool dials_in) {
  const mycel::control::PeersReply r = PeersOrFail(client);
  std::vector<const mycel::control::PendingPeer*> found;
  for (const auto& p : r.pending()) {
    if (p.name() == who || p.key_fingerprint() == who) found.push_back(&p);
  }
  if (found.empty()) Fail("no pending peer named or fingerprinted '" + who + "' (`mycel peers pending` lists them)", 2);
  if (found.size() > 1) {
    std::string fps;
    for (const auto* p : found) fps += (fps.empty() ? "" : ", ") + p->key_fingerprint();
    Fail(std::to_string(found.size()) + " pending peers are called '" + who + "' (" + fps +
             "): accept one by its fingerprint",
         2);
  }
  const auto& p = *found.front();
  // A caller that cannot be called (dial_out) is pinned as one that dials in.
  if (address.empty() && !dials_in && !p.dials_in()) address = p.address();
  if (address.empty() && !dials_in && !p.dials_in()) {
    Fail("'" + p.name() + "' does not say where it listens: give --address HOST:PORT, or --dials-in if it "
         "cannot be called (behind NAT) and calls this node",
         2);
  }
  // Callers name themselves, and two laptops left at the default are both
  // "mycel": a name already pinned gets a number unless --name says otherwise.
  if (name.empty()) name = mycel::config::FreePeerName(config, p.name());
  return PinPeer(config, client, name, p.public_key(), address, "accept");
}

int PeersRemove(const mycel::config::Config& config, const Client& client, const std::string& name) {
  const std::string config_path = ConfigFileOrFail(config);
  const std::string dir = mycel::config::PeersDropInDir(config_path);
  for (const auto& p : config.peers) {
    if (p.name != name) continue;
    const std::string file = p.where.substr(0, p.where.rfind(':'));
    if (file.rfind(dir + "/", 0) != 0) {
      Fail("'" + name + "' is pinned at " + p.where +
               ", which mycel does not rewrite: delete that [[peers]] table, then `mycel reload`",
           2);
    }
    if (::unlink(file.c_str()) != 0) Fail("cannot remove " + file + ": " + std::strerror(errno));
    mycel::control::ReloadReply r;
    std::string error;
    if (!ReloadDaemon(client, &r, &error) && !error.empty()) Fail("removed " + file + ", but the reload failed: " + error);
    std::printf("unpinned %s (%s)\n", name.c_str(), mycel::crypto::KeyFingerprint(p.public_key).c_str());
    return 0;
  }
  Fail("no pinned peer named '" + name + "'", 2);
}

// ---- `mycel doctor`: one line per check, OK or what to do ----

struct Doctor {
  int problems = 0;
  void Line(bool ok, const std::string& what, const std::string& said) {
    problems += !ok;
    std::printf("%-4s %-14s %s\n", ok ? "OK" : "FIX", what.c_str(), said.c_str());
  }
};

int RunDoctor(const mycel::config::Config& config, const std::string& socket) {
  Doctor d;
  d.Line(true, "config",
         (config.path.empty() ? "none (" + mycel::config::DefaultConfigPath() + " does not exist): defaults"
                              : config.path) +
             "; " + std::to_string(config.peers.size()) + " peer(s) pinned" +
             (config.node.listen.empty() ? ", not listening (others cannot pull from this node)"
                                         : ", listening on " + config.node.listen));
  // Two nodes that cannot call each other never meet.
  for (const auto& p : config.peers) {
    if (p.dials_in && config.node.listen.empty()) {
      d.Line(false, "peer " + p.name, "it dials in (" + p.where + "), but this node has no [node] listen, so it "
                                      "cannot call: set listen, or pin it with an address and let this node call it");
    }
  }
  // Free disk where the examples and checkpoints live.
  // (Of the nearest directory that exists: myceld creates the state dir at its first start.)
  std::filesystem::path where(config.node.state_dir);
  struct statvfs fs;
  while (::statvfs(where.c_str(), &fs) != 0 && where.has_parent_path() && where != where.parent_path()) {
    where = where.parent_path();
  }
  if (::statvfs(where.c_str(), &fs) == 0) {
    const double free_bytes = static_cast<double>(fs.f_bavail) * fs.f_frsize;
    const double share = fs.f_blocks > 0 ? static_cast<double>(fs.f_bavail) / fs.f_blocks : 0;
    const bool ok = free_bytes >= 1e9 && share >= 0.05;
    d.Line(ok, "disk", Bytes(static_cast<int64_t>(free_bytes)) + " free in " + where.string() + " (" +
                           Fixed(100 * share, 0) + "%)" +
                           (ok ? "" : ": below 1 GB or 5%; a full disk stops checkpoints (nothing stored is lost)"));
  } else {
    d.Line(false, "disk", config.node.state_dir + ": " + std::strerror(errno) + " (myceld creates it at its first start)");
  }
  Client client(socket);
  mycel::control::StatusReply st;
  grpc::Status gs = client.stub->Status(client.Context(10).get(), {}, &st);
  if (!gs.ok()) {
    d.Line(false, "daemon",
           (gs.error_code() == grpc::StatusCode::UNAVAILABLE ? client.WhyUnreachable() : gs.error_message()) +
               ": start it (`myceld`, or `systemctl --user start myceld`)");
    return d.problems == 0 ? 0 : 1;
  }
  d.Line(true, "daemon", "myceld " + st.version() + " answers on " + socket + "; " + st.state() + " (" +
                             st.reason() + ")");
  d.Line(st.version() == mycel::kVersion, "version",
         st.version() == mycel::kVersion
             ? std::string("mycel and myceld are both ") + mycel::kVersion
             : std::string("mycel ") + mycel::kVersion + " but myceld " + st.version() + ": restart myceld");
  const bool battery = st.power_source() == "battery";
  d.Line(true, "power", st.power_source() + (battery && config.policy.on_battery == "pause" ? ": training waits for mains"
                                                                                       : ""));
  mycel::control::PeersReply peers;
  if (!client.stub->Peers(client.Context(10).get(), {}, &peers).ok()) return d.problems == 0 ? 0 : 1;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  // Rounds publish at T/4 and merge at T/2: clocks further apart than T/4
  // merge a neighbour's previous round; past 120 s, Hellos are refused.
  const double tolerance = std::min(120.0, config.federation.round_interval_s / 4);
  for (const auto& p : peers.peers()) {
    const std::string what = "peer " + p.name();
    if (p.dials_in() && config.node.listen.empty()) {
      continue;  // said above, from the config
    } else if (p.dials_in() && p.state() == "never") {
      d.Line(false, what, "it dials in and has not called yet: check that it runs, pins this node's key and has "
                          "[node] dial_out = true");
    } else if (p.state() == "connected") {
      d.Line(true, what, "exchanging with " + PeerWhere(p) + ", last " +
                             std::to_string(now - p.last_success_unix()) + "s ago");
    } else if (p.state() == "never") {
      d.Line(false, what, "no exchange yet with " + PeerWhere(p) + " (the first round may not have come)");
    } else if (p.state() == "unreachable") {
      d.Line(false, what, "cannot reach " + p.address() + ": " + ShortReason(p.last_error()));
    } else {
      std::string advice = p.last_error();
      if (advice.find("unpinned_key") != std::string::npos) {
        advice = "it has not pinned this node: on it, `mycel peers accept` this node's fingerprint (`mycel id`)";
      } else if (advice.find("stale") != std::string::npos) {
        advice = "its clock and this one are more than 120 s apart: turn on NTP (timedatectl set-ntp true)";
      }
      d.Line(false, what, "refused: " + advice);
    }
    if (p.clock_skew_known()) {
      const double skew = p.clock_skew_s();
      const bool ok = std::fabs(skew) <= std::max(1.0, tolerance);  // 1 s: the Hello's resolution
      d.Line(ok, what + " clock",
             Fixed(std::fabs(skew), 0) + " s apart" +
                 (ok ? "" : ": rounds need them within " + Fixed(tolerance, 1) +
                                " s (round_interval_s / 4); turn on NTP on both (timedatectl set-ntp true)"));
    }
  }
  if (peers.pending_size() > 0) {
    d.Line(false, "pending", std::to_string(peers.pending_size()) +
                                 " caller(s) asked to pair: `mycel peers pending`, then accept or ignore them");
  }
  return d.problems == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
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

  bool json = false;
  auto* status_cmd = app.add_subcommand("status", "what the daemon is doing and why");
  status_cmd->add_flag("--json", json, "print JSON");
  bool watch = false;
  double watch_interval = 1.0;
  status_cmd->add_flag("--watch", watch, "refresh in place, like top (Ctrl-C to quit)");
  status_cmd->add_option("--interval", watch_interval, "seconds between refreshes with --watch")
      ->check(CLI::Range(0.1, 3600.0));

  app.add_subcommand("pause", "stop training (survives a daemon restart)");
  app.add_subcommand("resume", "resume training");

  std::vector<std::string> files;
  std::string format;
  auto* ingest_cmd = app.add_subcommand("ingest", "store examples from files");
  ingest_cmd->add_option("files", files,
                         "idx/idx.gz image+label files, CSV (label first) or UTF-8 text; - reads csv or text lines "
                         "from stdin as they come")->required();
  ingest_cmd->add_option("--format", format, "idx | csv | text (guessed when omitted)")
      ->check(CLI::IsMember({"idx", "csv", "text"}));
  ingest_cmd->add_flag("--json", json, "print JSON");
  bool no_progress = false;
  ingest_cmd->add_flag("--no-progress", no_progress,
                       "no progress bar (it is drawn on stderr only when that is a terminal, never with --json)");
  std::string labels_arg;
  ingest_cmd->add_option("--labels", labels_arg, "store only examples with these labels (e.g. --labels 0,1)");
  std::string ingest_key;
  ingest_cmd->add_option("--key", ingest_key,
                         "idempotency key (1-128 of A-Z a-z 0-9 . _ : -): an ingest with a key the daemon has "
                         "stored before stores nothing again (default: a fresh random key)");
  double ingest_retry_s = 60;
  ingest_cmd->add_option("--retry", ingest_retry_s,
                         "seconds to wait for a daemon that went away mid-ingest, then retry with the same key")
      ->check(CLI::Range(0.0, 86400.0));

  auto* eval_cmd = app.add_subcommand("eval", "accuracy and loss on labelled data (not trained on)");
  eval_cmd->add_option("files", files, "labelled data files")->required();
  eval_cmd->add_option("--format", format, "idx | csv | text")->check(CLI::IsMember({"idx", "csv", "text"}));
  eval_cmd->add_flag("--json", json, "print JSON");

  std::string text, values;
  int64_t index = 0;
  int top_k = 3, generate = 0;
  auto* predict_cmd = app.add_subcommand("predict", "class probabilities for an input, or next characters for a prompt");
  predict_cmd->add_option("files", files, "labelled data file(s) holding the input (see --index)");
  predict_cmd->add_option("--index", index, "which example of the file(s)");
  predict_cmd->add_option("--values", values, "comma-separated input values (classifiers)");
  predict_cmd->add_option("--text", text, "prompt (char_lm)");
  predict_cmd->add_option("--top", top_k, "how many candidates")->check(CLI::Range(1, 256));
  predict_cmd->add_option("--generate", generate, "char_lm: greedy continuation length")->check(CLI::Range(0, 10000));
  predict_cmd->add_option("--format", format, "idx | csv")->check(CLI::IsMember({"idx", "csv", "text"}));
  predict_cmd->add_flag("--json", json, "print JSON");

  std::string out_path;
  auto* export_cmd = app.add_subcommand("export", "write the model as TorchScript (torch.jit.load opens it)");
  export_cmd->add_option("--out", out_path, "output file, or a directory to write model.pt into")->required();

  auto* id_cmd = app.add_subcommand(
      "id", "print this node's public key and its fingerprint, as logs and `mycel peers` show it (no daemon needed)");
  id_cmd->add_flag("--json", json, "print JSON");

  bool repair_force = false;
  auto* repair_cmd = app.add_subcommand(
      "repair", "salvage a damaged example store into a new one, keeping the old file (myceld must be stopped)");
  repair_cmd->add_flag("--force", repair_force, "rebuild even a store that opens cleanly");

  auto* peers_cmd = app.add_subcommand("peers", "pinned neighbours: state, last exchange, sequence, traffic, refusals");
  peers_cmd->add_flag("--json", json, "print JSON");
  peers_cmd->require_subcommand(0, 1);
  auto* pending_cmd = peers_cmd->add_subcommand("pending", "callers not pinned yet that asked to pair, newest first");
  pending_cmd->add_flag("--json", json, "print JSON");
  std::string peer_name, peer_key, peer_address;
  bool dials_in = false;
  auto* add_cmd = peers_cmd->add_subcommand(
      "add", "pin a neighbour: NAME KEY HOST:PORT, or NAME KEY --dials-in (KEY as its `mycel id` prints it)");
  add_cmd->add_option("name", peer_name, "what to call it (1-64 of A-Z a-z 0-9 . _ -)")->required();
  add_cmd->add_option("key", peer_key, "its public key (base64)")->required();
  add_cmd->add_option("address", peer_address, "where it listens, host:port");
  add_cmd->add_flag("--dials-in", dials_in, "it cannot be called (behind NAT): it calls this node and hands its deltas over");
  auto* accept_cmd = peers_cmd->add_subcommand("accept", "pin a pending peer, by its name or key fingerprint");
  accept_cmd->add_option("who", peer_name, "NAME or KEY-FINGERPRINT from `mycel peers pending`")->required();
  accept_cmd->add_option("--address", peer_address, "where it listens, host:port (default: the one it gave)");
  accept_cmd->add_flag("--dials-in", dials_in, "it cannot be called: it calls this node (default for one that says so)");
  std::string accept_name;
  accept_cmd->add_option("--name", accept_name, "what to call it (default: the name it gave, numbered if taken)");
  auto* remove_cmd = peers_cmd->add_subcommand("remove", "unpin a neighbour that `mycel peers add/accept` pinned");
  remove_cmd->add_option("name", peer_name, "its name in `mycel peers`")->required();
  app.add_subcommand("reload", "re-read the config and its peers directory, as SIGHUP does");
  std::string history_since;
  auto* history_cmd = app.add_subcommand("history", "accuracy and loss at every validation pass, with rounds and bytes");
  history_cmd->add_flag("--json", json, "print JSON");
  history_cmd->add_option("--since", history_since, "only passes since WHEN: 90m, 2d, 2026-12-04 or an RFC 3339 time");
  app.add_subcommand("doctor", "check the config, the daemon, disk, power, each peer and its clock: OK or what to do");

  int max_ingests = 20;
  auto* data_cmd = app.add_subcommand("data", "stored examples per label and per ingest");
  data_cmd->add_flag("--json", json, "print JSON");
  data_cmd->add_option("--ingests", max_ingests, "newest ingests listed")->check(CLI::Range(1, 100000));

  ForgetArgs forget;
  auto* forget_cmd = app.add_subcommand(
      "forget", "delete stored examples for good (criteria combine: --label 3 --before 30d)");
  forget_cmd->add_flag("--all", forget.all, "every example");
  forget_cmd->add_option("--label", forget.label, "examples of this label")->check(CLI::Range(int64_t{0}, INT64_MAX));
  forget_cmd->add_option("--before", forget.before,
                         "examples ingested before a time: 2026-12-04, 2026-12-04T17:30:00Z or an age (30d, 12h)");
  forget_cmd->add_option("--ingest", forget.ingest, "examples of one ingest (its id in `mycel data`)")
      ->check(CLI::Range(int64_t{1}, INT64_MAX));
  forget_cmd->add_flag("--json", json, "print JSON");

  app.add_subcommand("reset", "start the model afresh: delete its checkpoints, keep the examples (myceld must be stopped)");

  ParseOrExit(app, argc, argv);

  absl::StatusOr<mycel::config::Config> config;
  if (config_path.empty()) {
    config = mycel::config::LoadConfig(mycel::config::DefaultConfigPath());
    if (!config.ok() && absl::IsNotFound(config.status())) config = mycel::config::DefaultConfig();
  } else {
    config = mycel::config::LoadConfig(config_path);
  }
  if (!config.ok()) Fail(std::string(config.status().message()), 2);

  const std::string cmd = app.get_subcommands().front()->get_name();
  if (cmd == "id") {
    auto id = mycel::crypto::Identity::LoadOrCreate(config->IdentityPath());
    if (!id.ok()) Fail(std::string(id.status().message()));
    if (json) {
      std::printf("%s\n", Json().Str("public_key", (*id)->PublicKeyBase64()).Str("fingerprint", (*id)->Fingerprint())
                              .Done().c_str());
    } else {
      // The key alone on the first line: scripts take it with `head -n1`.
      std::printf("%s\nfingerprint %s\n", (*id)->PublicKeyBase64().c_str(), (*id)->Fingerprint().c_str());
    }
    return 0;
  }

  if (cmd == "repair") return Repair(*config, repair_force);
  if (cmd == "doctor") return RunDoctor(*config, socket_override.empty() ? config->SocketPath() : socket_override);
  if (cmd == "reset") return Reset(*config);

  Client client(socket_override.empty() ? config->SocketPath() : socket_override);

  if (cmd == "status") {
    for (bool first = true;; first = false) {
    mycel::control::StatusReply r;
    grpc::Status gs = client.stub->Status(client.Context(10).get(), {}, &r);
    if (!gs.ok() && watch && !first) {
      // The daemon went away while watched: a stop, most likely (its log says if it was a crash).
      std::printf("\nmyceld has stopped (%s no longer answers)\n", client.socket.c_str());
      return 0;
    }
    client.Check(gs);
    if (watch) std::printf("\x1b[H\x1b[2J");  // home + clear: redraw in place
    if (json) {
      std::printf("%s\n", Json()
                              .Str("node", r.node_name()).Str("version", r.version())
                              .Str("power_source", r.power_source())
                              .Str("state", r.state()).Str("reason", r.reason())
                              .Int("steps", r.steps()).Int("samples_trained", r.samples_trained())
                              .Int("examples_train", r.examples_train()).Int("examples_val", r.examples_val())
                              .Num("train_loss", r.train_loss()).Num("learning_rate", r.learning_rate())
                              .Num("val_loss", r.val_loss())
                              .Num("val_accuracy", r.val_accuracy()).Int("eval_examples", r.eval_examples())
                              .Str("model_kind", r.model_kind()).Str("model_fingerprint", r.model_fingerprint())
                              .Int("parameters", r.parameters())
                              .Int("shared_parameters", r.shared_parameters())
                              .Num("steps_per_s", r.steps_per_s())
                              .Int("checkpoints_written", r.checkpoints_written())
                              .Int("last_checkpoint_step", r.last_checkpoint_step())
                              .Num("uptime_s", r.uptime_s()).Str("public_key", r.public_key())
                              .Str("state_dir", r.state_dir())
                              .Int("rounds", r.rounds()).Int("bytes_sent", r.bytes_sent())
                              .Int("bytes_received", r.bytes_received()).Int("peers", r.peers())
                              .Int("peers_connected", r.peers_connected()).Int("listen_port", r.listen_port())
                              .Str("metrics_url", r.metrics_url()).Str("ui_url", r.ui_url())
                              .Int("validations_without_gain", r.validations_without_gain())
                              .Num("best_val_loss", r.best_val_loss())
                              .Num("rest_s", r.rest_seconds()).Int("rests", r.rests())
                              .Str("last_wake", r.last_wake())
                              .Int("drift_rollbacks", r.drift_rollbacks())
                              .Str("last_rollback", r.last_rollback())
                              .Done().c_str());
    } else {
      std::printf("node        %s (myceld %s)\n", r.node_name().c_str(), r.version().c_str());
      if (r.state() == "resting") {
        std::printf("state       %s (%s; next burst within %s s)\n", r.state().c_str(), r.reason().c_str(),
                    Fixed(r.rest_seconds(), 0).c_str());
      } else {
        std::printf("state       %s (%s)\n", r.state().c_str(), r.reason().c_str());
      }
      std::printf("model       %s, %lld parameters (%lld shared)\n", r.model_kind().c_str(),
                  static_cast<long long>(r.parameters()), static_cast<long long>(r.shared_parameters()));
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
      if (r.peers() > 0) {
        std::printf("federation  %lld rounds, %d/%d neighbours connected, %s sent, %s received\n",
                    static_cast<long long>(r.rounds()), r.peers_connected(), r.peers(),
                    Bytes(r.bytes_sent()).c_str(), Bytes(r.bytes_received()).c_str());
      }
      if (!r.metrics_url().empty()) std::printf("metrics     %s\n", r.metrics_url().c_str());
      if (!r.ui_url().empty()) std::printf("dashboard   %s\n", r.ui_url().c_str());
      std::printf("uptime      %s\n", Duration(r.uptime_s()).c_str());
    }
    if (!watch) return 0;
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::duration<double>(watch_interval));
    }
  }

  if (cmd == "data") return Data(client, max_ingests, json);
  if (cmd == "forget") return Forget(client, forget, json);

  if (cmd == "pause" || cmd == "resume") {
    Client::CheckApi(cmd == "pause" ? client.api->Pause() : client.api->Resume());
    std::printf("%s\n", cmd == "pause" ? "paused" : "resumed");
    return 0;
  }

  std::vector<int64_t> keep_labels;
  if (!labels_arg.empty()) {
    std::stringstream ss(labels_arg);
    std::string field;
    while (std::getline(ss, field, ',')) {
      try {
        size_t used = 0;
        long long v = std::stoll(field, &used);
        if (used != field.size() || v < 0) throw std::invalid_argument(field);
        keep_labels.push_back(v);
      } catch (const std::exception&) {
        Fail("--labels: '" + field + "' is not a label (a non-negative integer)", 2);
      }
    }
  }

  if (cmd == "ingest" || cmd == "eval") {
    if (cmd == "ingest" && files == std::vector<std::string>{"-"}) {
      if (format == "idx") Fail("stdin takes csv or text lines, not idx", 2);
      return IngestStdin(client, format, json);
    }
    if (cmd == "ingest") {
      using mycel::cli::ProgressBar;
      ProgressBar bar(STDERR_FILENO, ProgressBar::ShouldDraw(STDERR_FILENO, json || no_progress));
      const std::string key = ingest_key.empty() ? mycel::crypto::RandomHex(16) : ingest_key;
      if (key.empty()) Fail("cannot draw a random ingest key (libsodium failed to start)");
      mycel::control::IngestReply r = Ingest(client, files, format, keep_labels, key, ingest_retry_s, &bar);
      if (json) {
        std::printf("%s\n", Json().Int("offered", r.offered()).Int("stored", r.stored()).Int("evicted", r.evicted())
                                .Int("duplicates", r.duplicates())
                                .Int("train", r.train()).Int("validation", r.validation())
                                .Int("examples_train", r.examples_train()).Int("examples_val", r.examples_val())
                                .Bool("replayed", r.replayed()).Str("key", key).Done().c_str());
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
    } else {
      mycel::control::EvalReply r;
      auto ctx = client.Context(3600);
      auto writer = client.stub->Eval(ctx.get(), &r);
      SendFiles(writer.get(), files, format);
      writer->WritesDone();
      client.Check(writer->Finish());
      if (json) {
        std::printf("%s\n", Json().Num("accuracy", r.accuracy()).Num("loss", r.loss()).Int("examples", r.examples()).Done().c_str());
      } else {
        std::printf("accuracy %s, loss %s on %lld examples\n", Fixed(r.accuracy(), 4).c_str(),
                    Fixed(r.loss(), 4).c_str(), static_cast<long long>(r.examples()));
      }
    }
    return 0;
  }

  if (cmd == "predict") {
    mycel::control::PredictRequest req;
    req.set_top_k(top_k);
    req.set_generate(generate);
    req.set_index(index);
    int inputs = (!text.empty()) + (!values.empty()) + (!files.empty());
    if (inputs != 1) Fail("predict takes exactly one input: FILE..., --values or --text", 2);
    if (!text.empty()) req.set_text(text);
    if (!values.empty()) {
      std::stringstream ss(values);
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
    for (size_t i = 0; i < files.size(); ++i) {
      auto* f = req.add_files();
      f->set_file_index(static_cast<uint32_t>(i));
      f->set_name(files[i]);
      f->set_format(format);
      f->set_data(ReadFileOrFail(files[i]));
    }
    mycel::control::PredictReply r;
    client.Check(client.stub->Predict(client.Context(60).get(), req, &r));
    if (json) {
      std::string top = "[";
      for (int i = 0; i < r.top_size(); ++i) {
        if (i) top += ",";
        Json one;
        one.Int("label", r.top(i).label()).Num("probability", r.top(i).probability());
        if (!r.top(i).name().empty()) one.Str("name", r.top(i).name());
        top += one.Done();
      }
      top += "]";
      Json j;
      j.Raw("top", top);
      if (!text.empty()) {
        // Raw bytes may not be UTF-8: the string replaces such bytes with U+FFFD.
        j.Str("continuation", r.continuation()).Int("continuation_bytes", static_cast<int64_t>(r.continuation().size()));
      }
      if (r.true_label() >= 0) j.Int("true_label", r.true_label());
      std::printf("%s\n", j.Done().c_str());
    } else {
      for (const auto& p : r.top()) {
        if (!text.empty()) {
          unsigned char c = static_cast<unsigned char>(p.label());
          std::string shown = c == '\n' ? "\\n" : c == ' ' ? "' '" : c < 0x20 || c >= 0x7f ? "0x" + std::to_string(c) : std::string(1, c);
          std::printf("%-6s %.4f\n", shown.c_str(), p.probability());
        } else {
          std::printf("class %-4lld %.4f%s%s\n", static_cast<long long>(p.label()), p.probability(),
                      p.name().empty() ? "" : "  ", p.name().c_str());
        }
      }
      if (r.true_label() >= 0) std::printf("true label %lld\n", static_cast<long long>(r.true_label()));
      if (!r.continuation().empty()) std::printf("%s%s\n", text.c_str(), r.continuation().c_str());
    }
    return 0;
  }

  if (cmd == "reload") return Reload(client);
  if (history_cmd->parsed()) return History(client, history_since, json);
  if (pending_cmd->parsed()) return PeersPending(client, json);
  if (add_cmd->parsed()) {
    if (peer_address.empty() == !dials_in) {
      Fail(dials_in ? "give HOST:PORT or --dials-in, not both"
                    : "give where it listens (HOST:PORT), or --dials-in if it cannot be called and calls this node",
           2);
    }
    return PinPeer(*config, client, peer_name, peer_key, peer_address, "add");
  }
  if (accept_cmd->parsed()) {
    if (dials_in && !peer_address.empty()) Fail("give --address or --dials-in, not both", 2);
    return PeersAccept(*config, client, peer_name, peer_address, accept_name, dials_in);
  }
  if (remove_cmd->parsed()) return PeersRemove(*config, client, peer_name);
  if (cmd == "peers") {
    mycel::control::PeersReply r;
    client.Check(client.stub->Peers(client.Context(10).get(), {}, &r));
    if (json) {
      std::string peers = "[";
      for (int i = 0; i < r.peers_size(); ++i) {
        const auto& p = r.peers(i);
        std::string refusals = "{";
        bool first = true;
        for (const auto& [reason, n] : p.refusals()) {
          refusals += (first ? "" : ",") + Json::Quote(reason) + ":" + std::to_string(n);
          first = false;
        }
        refusals += "}";
        std::string trust = "[";
        for (int k = 0; k < p.trust_size(); ++k) {
          trust += (k ? "," : "") + Json().Str("layer", p.trust(k).layer()).Num("trust", p.trust(k).trust())
                                        .Num("harm", p.trust(k).harm()).Done();
        }
        trust += "]";
        if (i) peers += ",";
        peers += Json().Str("name", p.name()).Str("address", p.address()).Str("key_fingerprint", p.key_fingerprint())
                     .Str("state", p.state()).Str("last_error", p.last_error())
                     .Int("last_success_unix", p.last_success_unix()).Str("epoch", std::to_string(p.epoch()))  // 64 random bits: a JSON number would round
                     .Int("seq_applied", static_cast<int64_t>(p.seq_applied()))
                     .Int("samples_trained", p.samples_trained()).Int("bytes_sent", p.bytes_sent())
                     .Int("bytes_received", p.bytes_received()).Int("pulls_ok", p.pulls_ok())
                     .Int("pulls_failed", p.pulls_failed()).Int("served", p.served())
                     .Int("deltas_accepted", p.deltas_accepted()).Int("keyframes_accepted", p.keyframes_accepted())
                     .Int("refused", p.refused()).Raw("refusals", refusals).Num("next_retry_s", p.next_retry_s())
                     .Int("merges", p.merges()).Int("clipped", p.clipped()).Num("last_distance", p.last_distance())
                     .Num("last_radius", p.last_radius()).Raw("trust", trust)
                     .Int("trust_probes", p.trust_probes()).Int("hurt_probes", p.hurt_probes())
                     .Str("quarantine", p.quarantine())
                     .Num("clock_skew_s", p.clock_skew_known() ? p.clock_skew_s() : NAN)
                     .Bool("dials_in", p.dials_in()).Int("handed_over", p.handed_over())
                     .Int("hand_overs_refused", p.hand_overs_refused())
                     .Str("last_hand_over_error", p.last_hand_over_error())
                     .Done();
      }
      peers += "]";
      std::printf("%s\n", Json().Raw("peers", peers).Int("rounds", r.rounds()).Int("bytes_sent", r.bytes_sent())
                              .Int("bytes_received", r.bytes_received()).Int("refused_unknown", r.refused_unknown())
                              .Int("listen_port", r.listen_port()).Int("rounds_held", r.rounds_held())
                              .Int("rounds_missed", r.rounds_missed()).Int("connections_shed", r.connections_shed())
                              .Int("connections_screened", r.connections_screened())
                              .Raw("trust", r.trust() ? "true" : "false").Int("trust_probes", r.trust_probes())
                              .Num("trust_probe_seconds", r.trust_probe_seconds()).Done().c_str());
      return 0;
    }
    if (r.peers_size() == 0) {
      std::printf("no neighbours pinned (`mycel peers add NAME KEY HOST:PORT`, or [[peers]] in the config)\n");
      if (r.pending_size() > 0) {
        std::printf("%d pending peer(s) asked to pair: `mycel peers pending`\n", r.pending_size());
      }
      return 0;
    }
    std::printf("%-12s %-22s %-19s %-12s %-9s %8s %10s %10s %8s %7s  %s\n", "NAME", "ADDRESS", "KEY", "STATE",
                "LAST", "SEQ", "SENT", "RECEIVED", "ACCEPTED", "REFUSED", "REASONS");
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    for (const auto& p : r.peers()) {
      std::string last = p.last_success_unix() ? std::to_string(now - p.last_success_unix()) + "s ago" : "never";
      std::string reasons;
      for (const auto& [reason, n] : p.refusals()) reasons += (reasons.empty() ? "" : ", ") + reason + "=" + std::to_string(n);
      if (!p.last_error().empty() && p.state() != "connected") {
        reasons += (reasons.empty() ? "" : "; ") + ShortReason(p.last_error());
      }
      if (p.clipped() > 0) {
        // robust = reject/clip screened this neighbour out: how often, and how far it was last time.
        char clip[128];
        std::snprintf(clip, sizeof clip, "outlier in %lld of %lld merges (last: distance %.3g, radius %.3g)",
                      static_cast<long long>(p.clipped()), static_cast<long long>(p.merges()), p.last_distance(),
                      p.last_radius());
        reasons += (reasons.empty() ? "" : "; ") + std::string(clip);
      }
      if (!p.quarantine().empty()) {
        reasons += (reasons.empty() ? "" : "; ") + std::string("QUARANTINED: ") + p.quarantine();
      }
      if (p.hand_overs_refused() > 0) {
        reasons += (reasons.empty() ? "" : "; ") + std::string("it refused our deltas ") +
                   std::to_string(p.hand_overs_refused()) + "x: " + ShortReason(p.last_hand_over_error());
      }
      std::printf("%-12s %-22s %-19s %-12s %-9s %8llu %10s %10s %8lld %7lld  %s\n", p.name().c_str(),
                  PeerWhere(p).c_str(), p.key_fingerprint().c_str(), p.state().c_str(), last.c_str(),
                  static_cast<unsigned long long>(p.seq_applied()), Bytes(p.bytes_sent()).c_str(),
                  Bytes(p.bytes_received()).c_str(),
                  static_cast<long long>(p.deltas_accepted() + p.keyframes_accepted()),
                  static_cast<long long>(p.refused()), reasons.c_str());
    }
    if (r.trust()) {
      // Per-layer trust learnt from this node's own validation data.
      for (const auto& p : r.peers()) {
        if (p.trust_size() == 0) {
          std::printf("trust %-12s not probed yet\n", p.name().c_str());
          continue;
        }
        std::string layers;
        for (const auto& t : p.trust()) {
          char one[96];
          std::snprintf(one, sizeof one, "%s%s %.2f (harm %+.1f%%)", layers.empty() ? "" : ", ", t.layer().c_str(),
                        t.trust(), 100 * t.harm());
          layers += one;
        }
        std::printf("trust %-12s %s; hurt in %lld of %lld probes\n", p.name().c_str(), layers.c_str(),
                    static_cast<long long>(p.hurt_probes()), static_cast<long long>(p.trust_probes()));
      }
    }
    std::printf("%lld rounds; %s sent, %s received; %lld requests refused from unknown callers\n",
                static_cast<long long>(r.rounds()), Bytes(r.bytes_sent()).c_str(), Bytes(r.bytes_received()).c_str(),
                static_cast<long long>(r.refused_unknown()));
    if (r.pending_size() > 0) {
      std::printf("%d pending peer(s) asked to pair: `mycel peers pending`\n", r.pending_size());
    }
    if (r.connections_shed() + r.connections_screened() > 0) {
      // Someone floods or probes the peer port (the daemon's log says how).
      std::printf("peer port: %lld connection(s) closed at the cap, %lld closed for what they sent\n",
                  static_cast<long long>(r.connections_shed()), static_cast<long long>(r.connections_screened()));
    }
    if (r.rounds_missed() > 0) {
      // A few are normal on a busy machine; many mean rounds come faster than this machine can run them.
      const bool many = r.rounds_missed() * 10 > r.rounds();
      std::printf("%lld rounds missed because the previous round still ran%s\n",
                  static_cast<long long>(r.rounds_missed()),
                  many ? ": round_interval_s is too short for this machine" : "");
    }
    return 0;
  }

  if (cmd == "export") {
    auto ctx = client.Context(600);
    auto reader = client.stub->Export(ctx.get(), {});
    std::string bytes;
    mycel::control::ExportChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    client.Check(reader->Finish());
    std::error_code ec;
    if (std::filesystem::is_directory(out_path, ec)) out_path = (std::filesystem::path(out_path) / "model.pt").string();
    auto s = mycel::Env::Default()->WriteFileAtomically(out_path, bytes);
    if (!s.ok()) Fail("export: cannot write " + out_path + ": " + std::string(s.message()));
    std::printf("wrote %s (%zu bytes, TorchScript)\n", out_path.c_str(), bytes.size());
    return 0;
  }
  return 0;
}
