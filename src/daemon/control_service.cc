#include "daemon/control_service.h"

#include <utility>

#include "common/coding.h"
#include "common/status.h"
#include "crypto/identity.h"
#include "daemon/node.h"
#include "daemon/node_metrics.h"

namespace mycel {

namespace {

// Moves, not copies: an upload may be gigabytes.
std::vector<data::NamedBlob> ToBlobs(std::vector<control::UploadedFile> files) {
  std::vector<data::NamedBlob> blobs;
  blobs.reserve(files.size());
  for (auto& f : files) blobs.push_back({std::move(f.name), std::move(f.bytes)});
  return blobs;
}

control::IngestReply ReplyOf(const data::AddResult& added, const Node::StoredCounts& stored) {
  control::IngestReply r;
  r.set_offered(added.offered);
  r.set_stored(added.stored);
  r.set_evicted(added.evicted);
  r.set_train(added.train);
  r.set_validation(added.validation);
  r.set_replayed(added.replayed);
  r.set_duplicates(added.duplicates);
  r.set_examples_train(stored.train);
  r.set_examples_val(stored.validation);
  return r;
}

void SetPending(const peer::PendingPeer& p, control::PendingPeer* q) {
  q->set_name(p.name);
  q->set_public_key(Base64Encode(p.public_key));
  q->set_key_fingerprint(p.key_fingerprint);
  q->set_address(p.address);
  q->set_first_seen_unix(p.first_seen_unix);
  q->set_last_seen_unix(p.last_seen_unix);
  q->set_requests(p.requests);
  q->set_same_model(p.same_model);
  q->set_dials_in(p.dials_in);
  q->set_discovered(p.discovered);
}

void SetTotals(const peer::GossipTotals& totals, control::PeersReply* r) {
  r->set_rounds(totals.rounds);
  r->set_bytes_sent(totals.bytes_sent);
  r->set_bytes_received(totals.bytes_received);
  r->set_refused_unknown(totals.refused_unknown);
  r->set_rounds_held(totals.rounds_held);
  r->set_rounds_missed(totals.rounds_missed);
  r->set_connections_shed(totals.connections_shed);
  r->set_connections_screened(totals.connections_screened);
  r->set_trust_probes(totals.trust_probes);
  r->set_trust_probe_seconds(totals.trust_probe_seconds);
  r->set_listen_port(totals.listen_port);
}

void SetPeer(const peer::PeerStatus& p, control::PeerInfo* info) {
  info->set_name(p.name);
  info->set_address(p.address);
  info->set_key_fingerprint(p.key_fingerprint);
  info->set_state(p.state);
  info->set_last_error(p.last_error);
  info->set_last_success_unix(p.last_success_unix);
  info->set_epoch(p.epoch);
  info->set_seq_applied(p.seq_applied);
  info->set_samples_trained(p.samples_trained);
  info->set_bytes_sent(p.bytes_sent);
  info->set_bytes_received(p.bytes_received);
  info->set_pulls_ok(p.pulls_ok);
  info->set_pulls_failed(p.pulls_failed);
  info->set_served(p.served);
  info->set_deltas_accepted(p.deltas_accepted);
  info->set_keyframes_accepted(p.keyframes_accepted);
  info->set_refused(p.refused);
  for (const auto& [reason, n] : p.refusals) (*info->mutable_refusals())[reason] = n;
  info->set_next_retry_s(p.next_retry_s);
  info->set_merges(p.merges);
  info->set_clipped(p.clipped);
  info->set_last_distance(p.last_distance);
  info->set_last_radius(p.last_radius);
  for (const auto& t : p.trust) {
    auto* lt = info->add_trust();
    lt->set_layer(t.layer);
    lt->set_trust(t.trust);
    lt->set_harm(t.harm);
  }
  info->set_trust_probes(p.trust_probes);
  info->set_hurt_probes(p.hurt_probes);
  info->set_quarantine(p.quarantine);
  info->set_clock_skew_s(p.clock_skew_s);
  info->set_clock_skew_known(p.clock_skew_known);
  info->set_dials_in(p.dials_in);
  info->set_handed_over(p.handed_over);
  info->set_hand_overs_refused(p.hand_overs_refused);
  info->set_last_hand_over_error(p.last_hand_over_error);
}

}  // namespace

absl::StatusOr<control::StatusReply> ControlService::GetStatus() {
  const Node::StatusSnapshot s = node_.GetStatus();
  const train::TrainerStats& st = s.trainer;
  control::StatusReply r;
  r.set_state(st.state);
  r.set_reason(st.reason);
  r.set_steps(st.steps);
  r.set_samples_trained(st.samples_trained);
  r.set_examples_train(s.stored.train);
  r.set_examples_val(s.stored.validation);
  r.set_train_loss(st.train_loss);
  r.set_learning_rate(st.learning_rate);
  r.set_val_loss(st.val_loss);
  r.set_val_accuracy(st.val_accuracy);
  r.set_model_kind(st.model_kind);
  r.set_model_fingerprint(st.fingerprint);
  r.set_parameters(st.parameters);
  r.set_shared_parameters(st.shared_parameters);
  r.set_uptime_s(s.uptime_s);
  r.set_node_name(s.node_name);
  r.set_public_key(s.public_key);
  r.set_steps_per_s(st.steps_per_s);
  r.set_validations_without_gain(st.validations_without_gain);
  r.set_best_val_loss(st.best_val_loss);
  r.set_rest_seconds(st.rest_s);
  r.set_rests(st.rests);
  r.set_last_wake(st.last_wake);
  r.set_version(s.version);
  r.set_power_source(s.power_source);
  r.set_drift_rollbacks(st.drift_rollbacks);
  r.set_last_rollback(st.last_rollback);
  r.set_checkpoints_written(st.checkpoints_written);
  r.set_last_checkpoint_step(st.last_checkpoint_step);
  r.set_eval_examples(st.eval_examples);
  r.set_state_dir(s.state_dir);
  r.set_metrics_url(s.metrics_url);
  r.set_ui_url(s.ui_url);
  if (s.discovery) {
    r.set_discovery(s.discovery->said);
    r.set_discovery_announced(s.discovery->announced);
  }
  if (s.peering) {
    r.set_rounds(s.peering->totals.rounds);
    r.set_bytes_sent(s.peering->totals.bytes_sent);
    r.set_bytes_received(s.peering->totals.bytes_received);
    r.set_listen_port(s.peering->totals.listen_port);
    r.set_peers(s.peering->peers);
    r.set_peers_connected(s.peering->peers_connected);
  }
  return r;
}

absl::StatusOr<control::PauseReply> ControlService::SetPaused(bool paused) {
  MYCEL_ASSIGN_OR_RETURN(std::string state, node_.SetPaused(paused));
  control::PauseReply r;
  r.set_state(state);
  return r;
}

absl::StatusOr<control::IngestReply> ControlService::Ingest(std::vector<control::UploadedFile> files,
                                                            const control::IngestOptions& options,
                                                            const control::IngestProgressFn& progress) {
  Node::IngestRequest request;
  request.format = options.format;
  request.keep_labels = options.keep_labels;
  request.key = options.key;
  auto phased = [&progress](Node::IngestPhase phase, int64_t done, int64_t total) {
    return progress(phase == Node::IngestPhase::kParsing ? control::IngestProgress::PARSING
                                                         : control::IngestProgress::STORING,
                    done, total);
  };
  MYCEL_ASSIGN_OR_RETURN(Node::IngestResult result, node_.Ingest(ToBlobs(std::move(files)), request, phased));
  return ReplyOf(result.added, result.stored);
}

absl::StatusOr<control::EvalReply> ControlService::Eval(std::vector<control::UploadedFile> files,
                                                        const std::string& format) {
  MYCEL_ASSIGN_OR_RETURN(train::EvalResult result, node_.Eval(ToBlobs(std::move(files)), format));
  control::EvalReply r;
  r.set_accuracy(result.accuracy);
  r.set_loss(result.loss);
  r.set_examples(result.examples);
  return r;
}

absl::StatusOr<control::PredictReply> ControlService::Predict(const control::PredictRequest& request,
                                                              std::vector<control::UploadedFile> files) {
  Node::PredictRequest in;
  in.text = request.text();
  in.generate = request.generate();
  in.top_k = request.top_k();
  if (request.files_size() > 0) in.format = request.files(0).format();
  in.index = request.index();
  in.values.assign(request.values().begin(), request.values().end());
  MYCEL_ASSIGN_OR_RETURN(Node::PredictResult out, node_.Predict(in, ToBlobs(std::move(files))));
  control::PredictReply r;
  for (const Node::PredictResult::Class& c : out.top) {
    control::Prediction* p = r.add_top();
    p->set_label(c.label);
    p->set_probability(c.probability);
    p->set_name(c.name);
  }
  r.set_continuation(out.continuation);
  r.set_true_label(out.true_label);
  return r;
}

absl::StatusOr<std::string> ControlService::Export() { return node_.Export(); }

absl::StatusOr<control::PeersReply> ControlService::GetPeers() {
  control::PeersReply r;
  const std::optional<Node::PeersSnapshot> s = node_.GetPeers();
  if (!s) return r;
  for (const peer::PendingPeer& p : s->pending) SetPending(p, r.add_pending());
  SetTotals(s->totals, &r);
  r.set_trust(s->trust);
  for (const peer::PeerStatus& p : s->peers) SetPeer(p, r.add_peers());
  return r;
}

absl::StatusOr<control::DataReply> ControlService::GetData(const control::DataRequest& request) {
  MYCEL_ASSIGN_OR_RETURN(Node::DataSnapshot s, node_.GetData(request.max_ingests()));
  control::DataReply r;
  for (const auto& c : s.summary.labels) {
    auto* l = r.add_labels();
    l->set_label(c.label);
    l->set_train(c.train);
    l->set_validation(c.validation);
  }
  for (const auto& i : s.summary.ingests) {
    auto* g = r.add_ingests();
    g->set_id(i.id);
    g->set_added_unix_ms(i.added_unix_ms);
    g->set_source(i.source);
    g->set_offered(i.offered);
    g->set_duplicates(i.duplicates);
    g->set_train(i.train);
    g->set_validation(i.validation);
  }
  r.set_ingests_total(s.summary.ingests_total);
  r.set_examples_train(s.stored.train);
  r.set_examples_val(s.stored.validation);
  return r;
}

absl::StatusOr<control::ForgetReply> ControlService::Forget(const control::ForgetRequest& request) {
  data::ForgetFilter filter;
  filter.all = request.all();
  if (request.has_label()) filter.label = request.label();
  if (request.has_before_unix_ms()) filter.before_unix_ms = request.before_unix_ms();
  if (request.has_ingest()) filter.ingest = request.ingest();
  MYCEL_ASSIGN_OR_RETURN(Node::ForgetResult result, node_.Forget(filter));
  control::ForgetReply r;
  r.set_train(result.forgot.train);
  r.set_validation(result.forgot.validation);
  r.set_examples_train(result.stored.train);
  r.set_examples_val(result.stored.validation);
  return r;
}

absl::StatusOr<control::ReloadReply> ControlService::Reload() {
  MYCEL_ASSIGN_OR_RETURN(Node::ReloadResult result, node_.Reload());
  control::ReloadReply r;
  r.set_peers(result.peers);
  r.set_applied(result.applied);
  r.set_needs_restart(result.needs_restart);
  return r;
}

absl::StatusOr<control::HistoryReply> ControlService::GetHistory(const control::HistoryRequest& request) {
  MYCEL_ASSIGN_OR_RETURN(std::vector<data::HistoryEntry> passes,
                         node_.GetHistory(request.since_unix_s(), request.limit()));
  control::HistoryReply r;
  for (const data::HistoryEntry& e : passes) {
    control::HistoryPass* p = r.add_passes();
    p->set_unix_s(e.unix_s);
    p->set_steps(e.steps);
    p->set_samples_trained(e.samples_trained);
    p->set_val_accuracy(e.val_accuracy);
    p->set_val_loss(e.val_loss);
    p->set_train_loss(e.train_loss);
    p->set_learning_rate(e.learning_rate);
    p->set_rounds(e.rounds);
    p->set_bytes_sent(e.bytes_sent);
    p->set_bytes_received(e.bytes_received);
    p->set_state(e.state);
  }
  return r;
}

absl::StatusOr<control::BurstAck> ControlService::AddExamples(const control::ExampleBurst& burst) {
  // Views into `burst`, which outlives the call: no example's values are copied here.
  Node::ExampleBurst in;
  in.format = burst.format();
  in.first_line = burst.first_line();
  in.lines.assign(burst.lines().begin(), burst.lines().end());
  in.examples.reserve(static_cast<size_t>(burst.examples_size()));
  for (const control::Example& e : burst.examples()) {
    in.examples.push_back({e.label(), absl::MakeConstSpan(e.values().data(), e.values_size()), e.text()});
  }
  MYCEL_ASSIGN_OR_RETURN(Node::BurstResult result, node_.AddExamples(in));
  control::BurstAck ack;
  for (const Node::LineRefusal& refusal : result.refused) {
    control::LineRefusal* r = ack.add_refused();
    r->set_line(refusal.line);
    r->set_reason(refusal.reason);
  }
  *ack.mutable_stored() = ReplyOf(result.added, result.stored);
  return ack;
}

std::string ControlService::MetricsText() {
  auto status = GetStatus();
  auto peers = GetPeers();
  if (!status.ok() || !peers.ok()) return "";
  return RenderMetrics(*status, *peers);
}

}  // namespace mycel
