#include "control/control_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include "absl/cleanup/cleanup.h"

#include "common/clock.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"
#include "control.grpc.pb.h"

namespace mycel::control {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code space one to one.
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Reassembles files sent as FileChunks, in a stream (Eval, Ingest) or inline
// (Predict). A chunk's file_index is the client's name for its file, any
// uint32: files are numbered in order of first appearance, never by the index
// itself, so a hostile index cannot size anything.
class FileAssembler {
 public:
  FileAssembler(int64_t max_bytes, std::vector<UploadedFile>* files) : max_bytes_(max_bytes), files_(files) {}

  absl::Status Add(const FileChunk& chunk) {
    auto it = index_of_.find(chunk.file_index());
    if (it == index_of_.end()) {
      if (index_of_.size() >= kMaxFiles) {
        return absl::InvalidArgumentError("more than " + std::to_string(kMaxFiles) + " files in one request");
      }
      it = index_of_.emplace(chunk.file_index(), files_->size()).first;
      files_->push_back(UploadedFile{chunk.name(), {}});
    }
    total_ += static_cast<int64_t>(chunk.data().size());
    if (total_ > max_bytes_) {
      return absl::ResourceExhaustedError("upload larger than " + std::to_string(max_bytes_) + " bytes");
    }
    (*files_)[it->second].bytes += chunk.data();
    return absl::OkStatus();
  }

  absl::Status Finish() const {
    return files_->empty() ? absl::InvalidArgumentError("no files sent") : absl::OkStatus();
  }

 private:
  static constexpr size_t kMaxFiles = 1024;
  const int64_t max_bytes_;
  std::vector<UploadedFile>* files_;
  int64_t total_ = 0;
  std::map<uint32_t, size_t> index_of_;
};

// `options` takes the first chunk's format, labels and key.
template <typename Reader>
absl::Status ReadFiles(Reader* reader, int64_t max_bytes, std::vector<UploadedFile>* files, IngestOptions* options) {
  FileChunk chunk;
  FileAssembler assembler(max_bytes, files);
  bool first = true;
  while (reader->Read(&chunk)) {
    if (first) {
      options->format = chunk.format();
      options->keep_labels.assign(chunk.keep_labels().begin(), chunk.keep_labels().end());
      options->key = chunk.key();
      first = false;
    }
    MYCEL_RETURN_IF_ERROR(assembler.Add(chunk));
  }
  return assembler.Finish();
}

// Sends an Ingest's progress to its client: each change of phase, the last
// report of a phase (done == total, so a display can end at 100%), and
// otherwise at most every kIngestProgressInterval. Says false once the client
// is gone, which cancels the ingest.
class IngestProgressSender {
 public:
  IngestProgressSender(grpc::ServerContext* context, grpc::ServerReaderWriter<IngestProgress, FileChunk>* stream)
      : context_(context), stream_(stream) {}

  bool Send(IngestProgress::Phase phase, int64_t done, int64_t total) {
    if (context_->IsCancelled()) return false;
    const double now = Clock::Real()->MonotonicSeconds();
    if (phase == last_phase_ && done != total && now - last_sent_ < kIngestProgressInterval) return true;
    IngestProgress message;
    message.set_phase(phase);
    message.set_done(done);
    message.set_total(total);
    if (!stream_->Write(message)) return false;
    last_phase_ = phase;
    last_sent_ = now;
    return true;
  }

 private:
  grpc::ServerContext* context_;
  grpc::ServerReaderWriter<IngestProgress, FileChunk>* stream_;
  IngestProgress::Phase last_phase_ = IngestProgress::PHASE_UNSPECIFIED;
  double last_sent_ = 0;
};

class Service final : public Control::Service {
 public:
  Service(ControlHandler& handler, const ControlServerOptions& options)
      : handler_(handler), options_(options) {}

  grpc::Status Status(grpc::ServerContext*, const StatusRequest*, StatusReply* reply) override {
    auto r = handler_.GetStatus();
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status SetPaused(grpc::ServerContext*, const PauseRequest* req, PauseReply* reply) override {
    auto r = handler_.SetPaused(req->paused());
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Ingest(grpc::ServerContext* context,
                      grpc::ServerReaderWriter<IngestProgress, FileChunk>* stream) override {
    if (ingests_running_.fetch_add(1) >= options_.max_concurrent_ingests) {
      ingests_running_.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "another ingest is running (at most " + std::to_string(options_.max_concurrent_ingests) +
                              " at a time); retry when it has finished");
    }
    absl::Cleanup done = [this] { ingests_running_.fetch_sub(1); };
    std::vector<UploadedFile> files;
    IngestOptions ingest;
    const double started = Clock::Real()->MonotonicSeconds();
    absl::Status s = ReadFiles(stream, options_.max_upload_bytes, &files, &ingest);
    if (!s.ok()) return ToGrpc(s);
    int64_t bytes = 0;
    for (const auto& f : files) bytes += static_cast<int64_t>(f.bytes.size());
    Logger("control")->debug("ingest: received {} bytes in {} file(s) in {:.3f} s", bytes, files.size(),
                             Clock::Real()->MonotonicSeconds() - started);
    IngestProgressSender sender(context, stream);
    auto r = handler_.Ingest(std::move(files), ingest,
                             [&sender](IngestProgress::Phase phase, int64_t done, int64_t total) {
                               return sender.Send(phase, done, total);
                             });
    if (!r.ok()) return ToGrpc(r.status());
    IngestProgress last;
    last.set_phase(IngestProgress::DONE);
    *last.mutable_reply() = std::move(r).value();
    // Committed: whether the client is still there to hear it changes nothing.
    stream->Write(last);
    return grpc::Status::OK;
  }

  grpc::Status Eval(grpc::ServerContext*, grpc::ServerReader<FileChunk>* reader, EvalReply* reply) override {
    std::vector<UploadedFile> files;
    IngestOptions read;  // Eval uses only the format
    absl::Status s = ReadFiles(reader, options_.max_upload_bytes, &files, &read);
    if (!s.ok()) return ToGrpc(s);
    auto r = handler_.Eval(std::move(files), read.format);
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Predict(grpc::ServerContext*, const PredictRequest* req, PredictReply* reply) override {
    std::vector<UploadedFile> files;
    if (req->files_size() > 0) {
      FileAssembler assembler(options_.max_upload_bytes, &files);
      for (const FileChunk& chunk : req->files()) {
        absl::Status s = assembler.Add(chunk);
        if (!s.ok()) return ToGrpc(s);
      }
    }
    auto r = handler_.Predict(*req, std::move(files));
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Peers(grpc::ServerContext*, const PeersRequest*, PeersReply* reply) override {
    auto r = handler_.GetPeers();
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Data(grpc::ServerContext*, const DataRequest* req, DataReply* reply) override {
    auto r = handler_.GetData(*req);
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Forget(grpc::ServerContext*, const ForgetRequest* req, ForgetReply* reply) override {
    auto r = handler_.Forget(*req);
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Reload(grpc::ServerContext*, const ReloadRequest*, ReloadReply* reply) override {
    auto r = handler_.Reload();
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status AddExamples(grpc::ServerContext*, grpc::ServerReaderWriter<BurstAck, ExampleBurst>* stream) override {
    ExampleBurst burst;
    std::string format;
    while (stream->Read(&burst)) {
      if (burst.lines_size() > 0) {  // the first burst of lines names their format for the stream
        if (format.empty()) format = burst.format().empty() ? "csv" : burst.format();
        burst.set_format(format);
      }
      auto r = handler_.AddExamples(burst);
      if (!r.ok()) return ToGrpc(r.status());
      // Committed: a client that went away has lost only the ack.
      if (!stream->Write(*r)) return grpc::Status::OK;
    }
    return grpc::Status::OK;
  }

  // Polls the handler's status (cheap: counters under a lock) and sends it
  // when the state or reason changed. A watcher holds one of the server's 16
  // threads, so at most kMaxWatchers watch at once.
  grpc::Status Watch(grpc::ServerContext* context, const WatchRequest*,
                     grpc::ServerWriter<StatusReply>* writer) override {
    constexpr int kMaxWatchers = 8;
    if (watchers_.fetch_add(1) >= kMaxWatchers) {
      watchers_.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "at most " + std::to_string(kMaxWatchers) + " clients watch at once");
    }
    absl::Cleanup release = [this] { watchers_.fetch_sub(1); };
    std::string last_state, last_reason;
    bool first = true;
    while (!context->IsCancelled() && !stopping_.load()) {
      auto r = handler_.GetStatus();
      if (!r.ok()) return ToGrpc(r.status());
      if (first || r->state() != last_state || r->reason() != last_reason) {
        last_state = r->state();
        last_reason = r->reason();
        first = false;
        if (!writer->Write(*r)) return grpc::Status::OK;  // the client went away
      }
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::milliseconds(kWatchPollMs), [this] { return stopping_.load(); });
    }
    return grpc::Status::OK;
  }

  // Ends every Watch at once, so a shutdown does not wait for them.
  void StopWatches() {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      stopping_ = true;
    }
    stop_cv_.notify_all();
  }

  grpc::Status History(grpc::ServerContext*, const HistoryRequest* req, HistoryReply* reply) override {
    auto r = handler_.GetHistory(*req);
    if (!r.ok()) return ToGrpc(r.status());
    *reply = std::move(r).value();
    return grpc::Status::OK;
  }

  grpc::Status Export(grpc::ServerContext*, const ExportRequest*,
                      grpc::ServerWriter<ExportChunk>* writer) override {
    auto r = handler_.Export();
    if (!r.ok()) return ToGrpc(r.status());
    const std::string& bytes = *r;
    constexpr size_t kChunk = 1 << 20;  // well under gRPC's 4 MB message limit
    for (size_t off = 0; off < bytes.size(); off += kChunk) {
      ExportChunk chunk;
      chunk.set_data(bytes.substr(off, kChunk));
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    return grpc::Status::OK;
  }

 private:
  ControlHandler& handler_;
  ControlServerOptions options_;
  std::atomic<int> ingests_running_{0};
  // How often a Watch looks at the status: a state change reaches a watcher within this.
  static constexpr int kWatchPollMs = 100;
  std::atomic<int> watchers_{0};
  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
};

// Bounds on the control server. Only the owner can reach the socket (0600),
// so these are not a defence against strangers but a fence against a
// runaway script of the user's own: the daemon must keep training and
// checkpointing whatever a client does.
void ApplyControlServerLimits(grpc::ServerBuilder* builder) {
  grpc::ResourceQuota quota("mycel-control");
  // Room for a few 64 MiB Predict messages (the receive limit) and ingest
  // chunks in flight; past it gRPC shrinks windows and reclaims.
  quota.Resize(size_t{256} << 20);
  // `mycel` makes one call at a time; a dashboard polls status and peers.
  // A call past 16 concurrent ones gets RESOURCE_EXHAUSTED, not a thread.
  quota.SetMaxThreads(16);
  builder->SetResourceQuota(quota);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 16);
  // A client left connected without calls is let go after 10 minutes; the
  // CLI connects per command, and a channel reconnects by itself.
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 10 * 60 * 1000);
  builder->AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 16 << 10);
}

}  // namespace

struct ControlServer::Impl {
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  std::string socket_path;
  bool shut_down = false;
};

ControlServer::ControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ControlServer::~ControlServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Start(const ControlServerOptions& options,
                                                                    ControlHandler& handler) {
  if (options.socket_path.size() >= 104) {
    return absl::InvalidArgumentError("control socket path too long for a Unix socket (" +
                                      std::to_string(options.socket_path.size()) +
                                      " bytes, max 103): " + options.socket_path);
  }
  // The caller holds the state directory's lock, so a socket file here is stale.
  ::unlink(options.socket_path.c_str());
  auto impl = std::make_unique<Impl>();
  impl->socket_path = options.socket_path;
  impl->service = std::make_unique<Service>(handler, options);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + options.socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(impl->service.get());
  builder.SetMaxReceiveMessageSize(64 << 20);  // Predict carries a small file inline
  ApplyControlServerLimits(&builder);
  // Restrict the socket from the moment it exists; chmod below is the guarantee.
  mode_t old_umask = ::umask(0077);
  impl->server = builder.BuildAndStart();
  ::umask(old_umask);
  if (!impl->server) {
    return absl::UnavailableError("cannot listen on control socket " + options.socket_path);
  }
  if (::chmod(options.socket_path.c_str(), 0600) != 0) {
    return ErrnoStatus(errno, "chmod", options.socket_path);
  }
  Logger("control")->info("control API listening on {}", options.socket_path);
  return std::unique_ptr<ControlServer>(new ControlServer(std::move(impl)));
}

void ControlServer::Shutdown() {
  if (!impl_ || impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->service->StopWatches();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  impl_->server->Wait();
  ::unlink(impl_->socket_path.c_str());
  Logger("control")->info("control API stopped");
}

}  // namespace mycel::control
