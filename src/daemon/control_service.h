// ControlService: the control API's adapter. It implements the
// control::ControlHandler the ControlServer calls (control/control_server.h)
// by translating each request's generated message into Node's own types,
// calling the Node, and translating the result back. Every check and every
// error message is the Node's; this layer only copies fields, so the proto
// stays out of daemon/node.h. The dashboard's JSON and the Prometheus text
// are rendered from the same replies, so they and the CLI never disagree.
//
// Thread-safety: as the Node's; called concurrently from the control
// server's, the dashboard's and the metrics endpoint's threads.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "control/control_server.h"

namespace mycel {
class Node;

class ControlService : public control::ControlHandler {
 public:
  // `node` must outlive the service.
  explicit ControlService(Node& node) : node_(node) {}

  absl::StatusOr<control::StatusReply> GetStatus() override;
  absl::StatusOr<control::PauseReply> SetPaused(bool paused) override;
  absl::StatusOr<control::IngestReply> Ingest(std::vector<control::UploadedFile> files,
                                              const control::IngestOptions& options,
                                              const control::IngestProgressFn& progress) override;
  absl::StatusOr<control::EvalReply> Eval(std::vector<control::UploadedFile> files,
                                          const std::string& format) override;
  absl::StatusOr<control::PredictReply> Predict(const control::PredictRequest& request,
                                                std::vector<control::UploadedFile> files) override;
  absl::StatusOr<std::string> Export() override;
  absl::StatusOr<control::PeersReply> GetPeers() override;
  absl::StatusOr<control::DataReply> GetData(const control::DataRequest& request) override;
  absl::StatusOr<control::ForgetReply> Forget(const control::ForgetRequest& request) override;
  absl::StatusOr<control::ReloadReply> Reload() override;
  absl::StatusOr<control::HistoryReply> GetHistory(const control::HistoryRequest& request) override;
  absl::StatusOr<control::BurstAck> AddExamples(const control::ExampleBurst& burst) override;

  // The Prometheus text of GET /metrics (daemon/node_metrics.h).
  std::string MetricsText();

 private:
  Node& node_;
};

}  // namespace mycel
