#include "daemon/node_metrics.h"

#include "metrics/exposition.h"

namespace mycel {

namespace {

// A family of one unlabelled sample.
void One(metrics::Exposition& e, const char* name, const char* type, const char* help, double v) {
  e.Family(name, type, help);
  e.Sample(v);
}

// What the node is and how its training goes (mycel_info ... mycel_uptime_seconds).
void RenderTraining(const control::StatusReply& s, metrics::Exposition& e) {
  auto one = [&e](const char* name, const char* type, const char* help, double v) { One(e, name, type, help, v); };
  e.Family("mycel_info", "gauge", "Constant 1, labelled with what this node is.");
  e.Sample(1, {{"node", s.node_name()}, {"model", s.model_kind()}, {"version", s.version()}});
  e.Family("mycel_training_state", "gauge", "1 for the state training is in now, 0 for the others.");
  bool known = false;
  for (const char* state : kTrainingStates) {
    known |= s.state() == state;
    e.Sample(s.state() == state ? 1 : 0, {{"state", state}});
  }
  if (!known) e.Sample(1, {{"state", s.state()}});
  one("mycel_training_steps_total", "counter", "Training steps taken.", static_cast<double>(s.steps()));
  one("mycel_training_samples_total", "counter", "Examples trained on, counting repeats.",
      static_cast<double>(s.samples_trained()));
  one("mycel_training_steps_per_second", "gauge", "Recent training rate.", s.steps_per_s());
  one("mycel_training_rests_total", "counter", "Times training went to rest (converged) since start.",
      static_cast<double>(s.rests()));
  one("mycel_training_drift_rollbacks_total", "counter",
      "Times the drift guard rolled the model back to its good checkpoint since start.",
      static_cast<double>(s.drift_rollbacks()));
  one("mycel_training_rest_seconds", "gauge", "Length of the rest under way; 0 when not resting.", s.rest_seconds());
  one("mycel_train_loss", "gauge", "Moving average of the training loss (NaN before the first step).",
      s.train_loss());
  one("mycel_validation_loss", "gauge", "Loss of the last validation pass (NaN before the first).", s.val_loss());
  one("mycel_validation_accuracy_ratio", "gauge", "Accuracy of the last validation pass, 0 to 1.",
      s.val_accuracy());
  one("mycel_learning_rate", "gauge", "Learning rate of the last step.", s.learning_rate());
  e.Family("mycel_examples", "gauge", "Examples in the store, by split.");
  e.Sample(static_cast<double>(s.examples_train()), {{"split", "train"}});
  e.Sample(static_cast<double>(s.examples_val()), {{"split", "validation"}});
  e.Family("mycel_model_parameters", "gauge", "Model parameters; shared ones are exchanged with neighbours.");
  e.Sample(static_cast<double>(s.parameters()), {{"kind", "all"}});
  e.Sample(static_cast<double>(s.shared_parameters()), {{"kind", "shared"}});
  one("mycel_checkpoints_written_total", "counter", "Checkpoints written since start.",
      static_cast<double>(s.checkpoints_written()));
  one("mycel_uptime_seconds", "gauge", "Seconds since the daemon started.", s.uptime_s());
}

// The neighbourhood's totals (mycel_peers ... mycel_trust_probe_seconds_total).
void RenderGossip(const control::StatusReply& s, const control::PeersReply& p, metrics::Exposition& e) {
  auto one = [&e](const char* name, const char* type, const char* help, double v) { One(e, name, type, help, v); };
  one("mycel_peers", "gauge", "Pinned neighbours.", s.peers());
  one("mycel_peers_connected", "gauge", "Neighbours whose last pull succeeded.", s.peers_connected());
  one("mycel_gossip_rounds_total", "counter", "Gossip rounds completed (publish, pull, merge).",
      static_cast<double>(p.rounds()));
  one("mycel_gossip_rounds_held_total", "counter", "Gossip rounds skipped while training was held.",
      static_cast<double>(p.rounds_held()));
  one("mycel_gossip_rounds_missed_total", "counter",
      "Round boundaries passed while the previous round still ran (round_interval_s too short).",
      static_cast<double>(p.rounds_missed()));
  one("mycel_gossip_sent_bytes_total", "counter", "Bytes served to neighbours.", static_cast<double>(p.bytes_sent()));
  one("mycel_gossip_received_bytes_total", "counter", "Bytes pulled from neighbours.",
      static_cast<double>(p.bytes_received()));
  one("mycel_gossip_refused_unauthenticated_total", "counter",
      "Requests refused before any pinned key was authenticated.", static_cast<double>(p.refused_unknown()));
  one("mycel_gossip_connections_shed_total", "counter",
      "Peer-port connections closed at once because the connection cap was reached.",
      static_cast<double>(p.connections_shed()));
  one("mycel_gossip_connections_screened_total", "counter",
      "Peer-port connections closed before authentication for what they sent, or for sending nothing.",
      static_cast<double>(p.connections_screened()));
  one("mycel_trust_probes_total", "counter", "Trust probes of the neighbours' shares on validation data.",
      static_cast<double>(p.trust_probes()));
  one("mycel_trust_probe_seconds_total", "counter", "Wall time spent in trust probes.", p.trust_probe_seconds());
}

// The mycel_peer_* families, one sample per neighbour (and per result,
// reason or layer).
void RenderPeers(const control::PeersReply& p, metrics::Exposition& e) {
  auto per_peer = [&](const char* name, const char* type, const char* help, auto value) {
    e.Family(name, type, help);
    for (const auto& peer : p.peers()) e.Sample(static_cast<double>(value(peer)), {{"peer", peer.name()}});
  };
  using Peer = control::PeerInfo;
  per_peer("mycel_peer_up", "gauge", "1 while the last pull from the neighbour succeeded.",
           [](const Peer& q) { return q.state() == "connected" ? 1 : 0; });
  e.Family("mycel_peer_pulls_total", "counter", "Pulls from the neighbour, by result.");
  for (const auto& peer : p.peers()) {
    e.Sample(static_cast<double>(peer.pulls_ok()), {{"peer", peer.name()}, {"result", "ok"}});
    e.Sample(static_cast<double>(peer.pulls_failed()), {{"peer", peer.name()}, {"result", "failed"}});
  }
  per_peer("mycel_peer_served_total", "counter", "Pulls of ours the neighbour was served.",
           [](const Peer& q) { return q.served(); });
  per_peer("mycel_peer_sent_bytes_total", "counter", "Bytes served to the neighbour.",
           [](const Peer& q) { return q.bytes_sent(); });
  per_peer("mycel_peer_received_bytes_total", "counter", "Bytes pulled from the neighbour.",
           [](const Peer& q) { return q.bytes_received(); });
  per_peer("mycel_peer_deltas_accepted_total", "counter", "Deltas from the neighbour applied to its mirror.",
           [](const Peer& q) { return q.deltas_accepted(); });
  per_peer("mycel_peer_keyframes_accepted_total", "counter", "Keyframes from the neighbour applied to its mirror.",
           [](const Peer& q) { return q.keyframes_accepted(); });
  per_peer("mycel_peer_samples_trained", "gauge", "Examples the neighbour says it has trained on.",
           [](const Peer& q) { return q.samples_trained(); });
  e.Family("mycel_peer_refusals_total", "counter",
           "Requests or updates of the neighbour refused, by reason (a fixed vocabulary).");
  for (const auto& peer : p.peers()) {
    for (const auto& [reason, count] : peer.refusals()) {
      e.Sample(static_cast<double>(count), {{"peer", peer.name()}, {"reason", reason}});
    }
  }
  if (p.trust()) {
    e.Family("mycel_peer_trust", "gauge", "Trust in the neighbour per layer, in [0, 1] (0: quarantined).");
    for (const auto& peer : p.peers()) {
      for (const auto& t : peer.trust()) e.Sample(t.trust(), {{"peer", peer.name()}, {"layer", t.layer()}});
    }
    per_peer("mycel_peer_quarantined", "gauge", "1 while the neighbour is quarantined in some layer.",
             [](const Peer& q) { return q.quarantine().empty() ? 0 : 1; });
    per_peer("mycel_peer_hurt_probes_total", "counter", "Trust probes in which a share of the neighbour hurt.",
             [](const Peer& q) { return q.hurt_probes(); });
  }
}

}  // namespace

std::string RenderMetrics(const control::StatusReply& s, const control::PeersReply& p) {
  metrics::Exposition e;
  RenderTraining(s, e);
  RenderGossip(s, p, e);
  if (p.peers_size() > 0) RenderPeers(p, e);
  return e.Take();
}

}  // namespace mycel
