// The public client (include/mycel/client.h) over the generated gRPC stub.
// Everything gRPC, protobuf and absl stays in this file: the public header
// carries plain structs, and the shared library hides the rest.
#include "mycel/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <grpcpp/grpcpp.h>

#include "common/version.h"
#include "config/config.h"
#include "control.grpc.pb.h"

namespace mycel {

namespace {

constexpr int kMaxBurst = 4096;  // the daemon's bound (Node::AddExamples)

#define MYCEL_CLIENT_RETURN_IF_ERROR(expr) \
  do {                                     \
    Status _s = (expr);                    \
    if (!_s.ok()) return _s;               \
  } while (0)

const char* CodeName(Status::Code code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(sizeof(kNames) / sizeof(kNames[0])) ? kNames[i] : "UNKNOWN";
}

// errno of a connect to the Unix socket at `path` (0: it accepts).
int ConnectError(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  int err = 0;
  if (fd < 0 || path.size() >= sizeof(addr.sun_path)) {
    err = fd < 0 ? errno : ENAMETOOLONG;
  } else {
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) err = errno;
  }
  if (fd >= 0) ::close(fd);
  return err;
}

bool Answers(const std::string& path) { return ConnectError(path) == 0; }

// gRPC says only "unavailable"; a connect of our own tells a daemon that is
// not running from a socket this user may not open (the state directory and
// the socket are the daemon owner's alone, mode 0700/0600).
Status WhyUnreachable(const std::string& path) {
  const int err = ConnectError(path);
  if (err == EACCES || err == EPERM) {
    return Status(Status::Code::kPermissionDenied,
                  "permission denied on " + path +
                      ": the daemon's state directory belongs to another user; run as the daemon's user");
  }
  if (err == ENOENT) return Status(Status::Code::kUnavailable, "myceld is not running (no socket at " + path + ")");
  return Status(Status::Code::kUnavailable, "myceld is not running (no answer on " + path + ")");
}

Status FromGrpc(const grpc::Status& s, const std::string& socket) {
  if (s.ok()) return Status();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) return WhyUnreachable(socket);
  return Status(static_cast<Status::Code>(s.error_code()), s.error_message());
}

void ToStatus(const control::StatusReply& r, DaemonStatus* out) {
  out->state = r.state();
  out->reason = r.reason();
  out->node_name = r.node_name();
  out->version = r.version();
  out->model_kind = r.model_kind();
  out->steps = r.steps();
  out->samples_trained = r.samples_trained();
  out->examples_train = r.examples_train();
  out->examples_val = r.examples_val();
  out->steps_per_s = r.steps_per_s();
  out->train_loss = r.train_loss();
  out->val_loss = r.val_loss();
  out->val_accuracy = r.val_accuracy();
  out->rounds = r.rounds();
  out->bytes_sent = r.bytes_sent();
  out->bytes_received = r.bytes_received();
  out->peers = r.peers();
  out->peers_connected = r.peers_connected();
  out->uptime_s = r.uptime_s();
}

void ToPredictions(const control::PredictReply& r, std::vector<Prediction>* out) {
  out->clear();
  for (const auto& p : r.top()) out->push_back(Prediction{p.label(), p.probability(), p.name()});
}

void ToWire(const Example& in, control::Example* out) {
  out->set_label(in.label);
  out->mutable_values()->Add(in.values.begin(), in.values.end());
  out->set_text(in.text);
}

// Adds a burst's ack to `total`; refusals keep the daemon's numbering (the
// burst's first_line + position), which callers set to the stream's index.
void Accumulate(const control::BurstAck& ack, AddResult* total) {
  total->stored += ack.stored().stored();
  total->duplicates += ack.stored().duplicates();
  total->evicted += ack.stored().evicted();
  total->examples_train = ack.stored().examples_train();
  total->examples_val = ack.stored().examples_val();
  for (const auto& r : ack.refused()) total->refused.push_back(Refusal{r.line(), r.reason()});
}

std::string ResolveSocket(const ClientOptions& options, Status* status) {
  if (!options.socket_path.empty()) return options.socket_path;
  std::string path = options.config_path;
  if (path.empty()) {
    const char* env = std::getenv("MYCEL_CONFIG");
    path = env && *env ? env : config::DefaultConfigPath();
  }
  auto config = config::LoadConfig(path);
  // No config file where none was named: the daemon runs on its defaults too.
  if (!config.ok() && config.status().code() == absl::StatusCode::kNotFound && options.config_path.empty()) {
    config = config::DefaultConfig();
  }
  if (!config.ok()) {
    *status = Status(static_cast<Status::Code>(config.status().code()), std::string(config.status().message()));
    return "";
  }
  return config->SocketPath();
}

}  // namespace

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(CodeName(code_)) + ": " + message_;
}

const char* Version() { return kVersion; }

struct Client::Rep {
  std::string socket;
  double timeout_s = 30;
  std::unique_ptr<control::Control::Stub> stub;

  void Deadline(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  }
  Status Check(const grpc::Status& s) const { return FromGrpc(s, socket); }

  // One unary call. A channel that failed to connect fails its next calls
  // fast for a backoff; when the socket takes a connect now (the daemon
  // has started since), the call is made again, waiting for the channel.
  template <typename Request, typename Reply>
  Status Unary(grpc::Status (control::Control::Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
               const Request& request, Reply* reply) const {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Status s = (stub.get()->*method)(&ctx, request, reply);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE || !Answers(socket)) return Check(s);
    grpc::ClientContext again;
    Deadline(&again);
    again.set_wait_for_ready(true);
    return Check((stub.get()->*method)(&again, request, reply));
  }
  Status SetPaused(bool paused) const {
    control::PauseRequest req;
    req.set_paused(paused);
    control::PauseReply reply;
    return Unary(&control::Control::Stub::SetPaused, req, &reply);
  }
};

Client::Client(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
Client::~Client() = default;

Status Client::Open(const ClientOptions& options, std::unique_ptr<Client>* out) {
  if (!(options.timeout_s > 0) || !std::isfinite(options.timeout_s) || options.timeout_s > 86400) {
    return Status(Status::Code::kInvalidArgument,
                  "timeout_s must be in (0, 86400] seconds, got " + std::to_string(options.timeout_s));
  }
  Status status;
  std::string socket = ResolveSocket(options, &status);
  if (!status.ok()) return status;
  if (socket.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status(Status::Code::kInvalidArgument, "control socket path too long for a Unix socket: " + socket);
  }
  auto rep = std::make_unique<Rep>();
  rep->socket = socket;
  rep->timeout_s = options.timeout_s;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A daemon restarts in seconds: reconnect within a second, not gRPC's
  // default backoff of up to two minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  rep->stub = control::Control::NewStub(
      grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args));
  out->reset(new Client(std::move(rep)));
  return Status();
}

const std::string& Client::socket_path() const { return rep_->socket; }

Status Client::GetStatus(DaemonStatus* out) {
  control::StatusReply reply;
  Status s = rep_->Unary(&control::Control::Stub::Status, control::StatusRequest(), &reply);
  if (s.ok()) ToStatus(reply, out);
  return s;
}

Status Client::Pause() { return rep_->SetPaused(true); }
Status Client::Resume() { return rep_->SetPaused(false); }

Status Client::Predict(const std::vector<float>& values, int top_k, std::vector<Prediction>* out) {
  if (values.empty()) return Status(Status::Code::kInvalidArgument, "predict needs the input's values");
  control::PredictRequest req;
  req.mutable_values()->Add(values.begin(), values.end());
  req.set_top_k(top_k);
  control::PredictReply reply;
  Status s = rep_->Unary(&control::Control::Stub::Predict, req, &reply);
  if (s.ok()) ToPredictions(reply, out);
  return s;
}

Status Client::PredictText(const std::string& prompt, int top_k, int generate, std::vector<Prediction>* out,
                           std::string* continuation) {
  if (prompt.empty()) return Status(Status::Code::kInvalidArgument, "predict needs a prompt");
  control::PredictRequest req;
  req.set_text(prompt);
  req.set_top_k(top_k);
  req.set_generate(generate);
  control::PredictReply reply;
  Status s = rep_->Unary(&control::Control::Stub::Predict, req, &reply);
  if (!s.ok()) return s;
  ToPredictions(reply, out);
  if (continuation) *continuation = reply.continuation();
  return s;
}

Status Client::AddExamples(const std::vector<Example>& examples, AddResult* result) {
  std::unique_ptr<ExampleStream> stream;
  const int burst = static_cast<int>(std::max<size_t>(1, std::min<size_t>(examples.size(), kMaxBurst)));
  if (examples.size() > static_cast<size_t>(kMaxBurst)) {
    return Status(Status::Code::kInvalidArgument, "at most " + std::to_string(kMaxBurst) +
                                                      " examples per call, got " + std::to_string(examples.size()) +
                                                      "; use an ExampleStream");
  }
  Status s = OpenExampleStream(burst, &stream);
  if (!s.ok()) return s;
  for (const Example& e : examples) {
    s = stream->Add(e);
    if (!s.ok()) return s;
  }
  return stream->Finish(result);
}

// ---------------------------------------------------------------------------

struct ExampleStream::Rep {
  const Client::Rep* client = nullptr;
  int burst_size = 1000;
  std::string line_format;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<control::ExampleBurst, control::BurstAck>> call;
  control::ExampleBurst pending;
  int64_t next_index = 0;  // the stream's number for the next example or line added
  static constexpr int kInFlight = 2;
  int in_flight = 0;       // bursts written, not yet acknowledged
  AddResult total;
  AddResult since;         // since the last Flush(&since)
  Status failed;           // once not ok, the stream is over
  bool finished = false;

  int Pending() const { return pending.examples_size() + pending.lines_size(); }
  Status Usable() const {
    if (!finished) return Status();
    return failed.ok() ? Status(Status::Code::kFailedPrecondition, "the stream is finished") : failed;
  }
  // Sends the pending burst. At most kInFlight bursts go unacknowledged: the
  // daemon reads the next while it commits one (the commit's fsync would
  // otherwise leave both sides idle in turn), and the stream's memory stays
  // bounded by the window.
  Status Send() {
    if (Pending() == 0) return Status();
    if (pending.lines_size() > 0) pending.set_format(line_format);
    if (!call->Write(pending)) return End();
    in_flight++;
    pending.Clear();
    pending.set_first_line(next_index);
    return in_flight >= kInFlight ? ReadAck() : Status();
  }
  Status ReadAck() {
    control::BurstAck ack;
    if (!call->Read(&ack)) return End();
    in_flight--;
    Accumulate(ack, &total);
    Accumulate(ack, &since);
    return Status();
  }
  // Sends what is pending and waits until every burst is committed.
  Status Drain() {
    MYCEL_CLIENT_RETURN_IF_ERROR(Send());
    while (in_flight > 0) MYCEL_CLIENT_RETURN_IF_ERROR(ReadAck());
    return Status();
  }
  // Room for one more of a kind (lines or examples) in the pending burst.
  Status MakeRoom(bool line) {
    MYCEL_CLIENT_RETURN_IF_ERROR(Usable());
    const bool other = line ? pending.examples_size() > 0 : pending.lines_size() > 0;
    if (other || Pending() >= burst_size) return Send();
    return Status();
  }
  Status Added() {
    next_index++;
    return Pending() >= burst_size ? Send() : Status();
  }
  // The call broke: its status says why.
  Status End() {
    call->WritesDone();
    grpc::Status s = call->Finish();
    finished = true;
    failed = s.ok() ? Status(Status::Code::kInternal, "the daemon closed the stream early") : client->Check(s);
    return failed;
  }
};

ExampleStream::ExampleStream(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}

ExampleStream::~ExampleStream() {
  if (rep_ && !rep_->finished) (void)Finish(nullptr);
}

Status Client::OpenExampleStream(int burst_size, std::unique_ptr<ExampleStream>* out,
                                 const std::string& line_format) {
  if (burst_size < 1 || burst_size > kMaxBurst) {
    return Status(Status::Code::kInvalidArgument,
                  "burst_size must be in [1, " + std::to_string(kMaxBurst) + "], got " + std::to_string(burst_size));
  }
  auto rep = std::make_unique<ExampleStream::Rep>();
  rep->client = rep_.get();
  rep->burst_size = burst_size;
  rep->line_format = line_format;
  // No deadline: a stream may stay open for hours, and a burst's commit is
  // waited for as long as the store takes (that is the back-pressure). A
  // daemon that exits ends the call at once.
  // A channel still backing off from an earlier failure would fail the
  // stream at once: when the daemon is there now, wait for the channel.
  if (Answers(rep_->socket)) rep->ctx.set_wait_for_ready(true);
  rep->call = rep_->stub->AddExamples(&rep->ctx);
  rep->pending.set_first_line(0);
  out->reset(new ExampleStream(std::move(rep)));
  return Status();
}

Status ExampleStream::Add(Example example) {
  MYCEL_CLIENT_RETURN_IF_ERROR(rep_->MakeRoom(/*line=*/false));
  ToWire(example, rep_->pending.add_examples());
  return rep_->Added();
}

Status ExampleStream::AddLine(std::string line) {
  MYCEL_CLIENT_RETURN_IF_ERROR(rep_->MakeRoom(/*line=*/true));
  *rep_->pending.add_lines() = std::move(line);
  return rep_->Added();
}

Status ExampleStream::Flush(AddResult* since) {
  MYCEL_CLIENT_RETURN_IF_ERROR(rep_->Usable());
  Status s = rep_->Drain();
  if (s.ok() && since) {
    *since = std::move(rep_->since);
    rep_->since = AddResult();
  }
  return s;
}

Status ExampleStream::Finish(AddResult* total) {
  Rep* r = rep_.get();
  if (r->finished) return r->failed;
  Status s = r->Drain();
  if (!s.ok()) return s;
  r->call->WritesDone();
  grpc::Status end = r->call->Finish();
  r->finished = true;
  r->failed = r->client->Check(end);
  if (r->failed.ok() && total) *total = r->total;
  return r->failed;
}

// ---------------------------------------------------------------------------

Status Client::Watch(const std::function<bool(const DaemonStatus&)>& on_change, double timeout_s) {
  grpc::ClientContext ctx;
  if (timeout_s > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::microseconds(static_cast<int64_t>(std::min(timeout_s, 1e9) * 1e6)));
  }
  if (Answers(rep_->socket)) ctx.set_wait_for_ready(true);  // as for a stream of examples
  auto reader = rep_->stub->Watch(&ctx, control::WatchRequest());
  control::StatusReply reply;
  while (reader->Read(&reply)) {
    DaemonStatus status;
    ToStatus(reply, &status);
    if (!on_change(status)) {
      ctx.TryCancel();
      (void)reader->Finish();
      return Status();
    }
  }
  grpc::Status s = reader->Finish();
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && timeout_s > 0) return Status();
  // The daemon ended the stream: it is stopping.
  if (s.ok()) return Status(Status::Code::kUnavailable, "myceld stopped");
  return rep_->Check(s);
}

}  // namespace mycel
