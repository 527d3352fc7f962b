// ControlServer: the daemon's local control API (proto/control.proto) served
// over gRPC on a Unix domain socket in the state directory, mode 0600, so only
// the owning user can reach it.
//
// The server decodes requests (reassembling streamed files) and forwards them
// to a ControlHandler (the daemon's ControlService, which calls its Node);
// absl::Status results are converted to grpc::Status here and only here,
// code for code. gRPC's headers stay in the .cc: callers see plain structs
// and the generated message types.
//
// Thread-safety: the handler is called from gRPC's thread pool, concurrently.
// Shutdown() stops accepting RPCs and waits (bounded) for running ones.
//
// Ingest streams progress back: the handler reports through an
// IngestProgressFn, which sends at most every kIngestProgressInterval (and at
// each change of phase) and tells the handler to stop when the client is gone.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "control.pb.h"

namespace mycel::control {

struct UploadedFile {
  std::string name;
  std::string bytes;
};

// What an ingest is doing: `phase` PARSING, or STORING `done` of `total`
// examples. Called by the handler on the RPC's thread; returns false when the
// client has gone away, and the handler then stops and stores nothing.
using IngestProgressFn =
    std::function<bool(mycel::control::IngestProgress::Phase phase, int64_t done, int64_t total)>;

// The least time between two progress messages of one phase: a terminal
// redraw rate that looks live without flooding a slow client.
constexpr double kIngestProgressInterval = 0.1;

// What an Ingest asks beyond its files, read from its first chunk.
struct IngestOptions {
  std::string format;                // idx | csv | text | "" (guess)
  std::vector<int64_t> keep_labels;  // store only examples with these labels (empty: all)
  std::string key;                   // idempotency key (empty: none)
};

class ControlHandler {
 public:
  virtual ~ControlHandler() = default;
  virtual absl::StatusOr<mycel::control::StatusReply> GetStatus() = 0;
  virtual absl::StatusOr<mycel::control::PauseReply> SetPaused(bool paused) = 0;
  // All or nothing; `progress` (never empty) hears of each phase.
  virtual absl::StatusOr<mycel::control::IngestReply> Ingest(std::vector<UploadedFile> files,
                                                             const IngestOptions& options,
                                                             const IngestProgressFn& progress) = 0;
  virtual absl::StatusOr<mycel::control::EvalReply> Eval(std::vector<UploadedFile> files,
                                                         const std::string& format) = 0;
  // `files`: the request's inline FileChunks reassembled (empty if none).
  virtual absl::StatusOr<mycel::control::PredictReply> Predict(
      const mycel::control::PredictRequest& request, std::vector<UploadedFile> files) = 0;
  // The current model as TorchScript bytes.
  virtual absl::StatusOr<std::string> Export() = 0;
  virtual absl::StatusOr<mycel::control::PeersReply> GetPeers() = 0;
  virtual absl::StatusOr<mycel::control::DataReply> GetData(const mycel::control::DataRequest& request) = 0;
  // Deletes what the request names, durably, before answering.
  virtual absl::StatusOr<mycel::control::ForgetReply> Forget(const mycel::control::ForgetRequest& request) = 0;
  // Re-reads the config as SIGHUP does; an invalid one is an error, the old one stays.
  virtual absl::StatusOr<mycel::control::ReloadReply> Reload() = 0;
  virtual absl::StatusOr<mycel::control::HistoryReply> GetHistory(const mycel::control::HistoryRequest& request) = 0;
  // One burst of `mycel ingest -`: bad lines refused one by one, the good
  // ones stored in one transaction before it returns.
  virtual absl::StatusOr<mycel::control::BurstAck> AddExamples(const mycel::control::ExampleBurst& burst) = 0;
};

struct ControlServerOptions {
  std::string socket_path;                       // created mode 0600; a stale one is replaced
  int64_t max_upload_bytes = int64_t{4} << 30;   // per Ingest/Eval stream, all files together
  // Ingests held in memory at once; one more is refused (RESOURCE_EXHAUSTED)
  // before any of its bytes are read. The store takes one writer at a time
  // anyway, so a second concurrent upload would only wait holding memory.
  int max_concurrent_ingests = 1;
};

class ControlServer {
 public:
  static absl::StatusOr<std::unique_ptr<ControlServer>> Start(const ControlServerOptions& options,
                                                              ControlHandler& handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void Shutdown();

  struct Impl;

 private:
  explicit ControlServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mycel::control
