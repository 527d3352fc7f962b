#include "peer/gossip.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/logging.h"
#include "common/status.h"
#include "crypto/identity.h"
#include "crypto/session.h"
#include "federation/federation.h"
#include "peer.grpc.pb.h"

namespace mycel::peer {
namespace {

constexpr size_t kChunkBytes = 1 << 20;      // sealed payload piece, well under gRPC's 4 MB limit
constexpr int kMaxRequestMessage = 64 << 10; // a Pull request is a Hello of a few KB
constexpr uint32_t kMaxDeltasPerAnswer = 100000;

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<unsigned char>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  return true;
}

// Payload: keyframe = size floats (LE); deltas = count × (u64 length, bytes).
std::string EncodePayload(const federation::PullAnswer& a) {
  std::string out;
  if (a.keyframe) {
    out.resize(a.public_copy.size() * sizeof(float));
    std::memcpy(out.data(), a.public_copy.data(), out.size());
    return out;
  }
  for (const auto& q : a.deltas) {
    PutU64(&out, q.size());
    out += q;
  }
  return out;
}

absl::Status Refuse(const std::string& reason, const std::string& detail) {
  return absl::InvalidArgumentError(reason + ": " + detail);
}

std::string Reason(const absl::Status& s) {
  std::string msg(s.message());
  auto colon = msg.find(':');
  std::string word = colon == std::string::npos ? "" : msg.substr(0, colon);
  bool is_word = !word.empty() && word.find(' ') == std::string::npos;
  return is_word ? word : "error";
}

}  // namespace

struct Gossip::Impl : public Peer::Service {
  Impl(const GossipOptions& o, const crypto::Identity& id, federation::Federation& f, SharedParametersFn w)
      : options(o), identity(id), fed(f), with_shared(std::move(w)) {}

  const GossipOptions options;
  const crypto::Identity& identity;
  federation::Federation& fed;
  SharedParametersFn with_shared;
  crypto::ReplayGuard replay;
  std::vector<std::string> pinned;                       // raw keys, index = peer index
  std::vector<std::unique_ptr<Peer::Stub>> stubs;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false;                                     // guarded by mu
  std::vector<PeerStatus> status;                        // guarded by mu
  std::vector<double> next_try;                          // guarded by mu (monotonic s)
  std::vector<int> failures;                             // guarded by mu
  std::set<std::pair<std::string, std::string>> logged;  // (who, reason) already logged; guarded by mu
  GossipTotals totals;                                   // guarded by mu

  std::unique_ptr<grpc::Server> server;
  std::thread loop;
  bool started = false, stopped = false;

  int PeerIndex(std::string_view key) const {
    for (size_t i = 0; i < pinned.size(); ++i) {
      if (pinned[i] == key) return static_cast<int>(i);
    }
    return -1;
  }

  // Counts a refusal and logs it the first time per (who, reason). Caller holds mu.
  void CountRefusal(int peer, const std::string& reason, const std::string& detail) {
    std::string who = peer >= 0 ? status[peer].name : "unknown caller";
    if (peer >= 0) {
      status[peer].refused++;
      status[peer].refusals[reason]++;
    } else {
      totals.refused_unknown++;
    }
    if (logged.insert({who, reason}).second) {
      Logger("peer")->warn("refused {} from {}: {} (further ones counted in `mycel peers`)", reason, who, detail);
    }
  }

  // ---- server ----
  grpc::Status Pull(grpc::ServerContext* ctx, const PullRequest* req, grpc::ServerWriter<PullChunk>* writer) override {
    int64_t now = Clock::Real()->UnixSeconds();
    auto session = crypto::ServerSession::Accept(identity, pinned, replay, req->hello(), now);
    if (!session.ok()) {
      std::string reason = crypto::RefusalReason(session.status());
      // A refused Hello is not authenticated: attribute it to a pinned peer
      // only for the record; it never changes that peer's state.
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(-1, reason, std::string(session.status().message()));
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, reason + ": request refused");
    }
    int peer = PeerIndex((*session)->hello().sender_pk);
    PullParams params;
    if (!params.ParseFromString((*session)->hello().request)) {
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(peer, "malformed", "pull parameters do not parse");
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed: pull parameters do not parse");
    }
    if (params.fingerprint() != options.fingerprint) {
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(peer, "fingerprint_mismatch",
                   "their model " + params.fingerprint() + " is not ours " + options.fingerprint);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "fingerprint_mismatch: model " + params.fingerprint() + " is not " + options.fingerprint);
    }
    federation::PullAnswer answer = fed.Answer(params.epoch(), params.after_seq());
    std::string payload = EncodePayload(answer);
    PullHeader header;
    header.set_epoch(answer.epoch);
    header.set_from_seq(answer.from_seq);
    header.set_to_seq(answer.to_seq);
    header.set_keyframe(answer.keyframe);
    header.set_codec(answer.codec);
    header.set_fingerprint(options.fingerprint);
    header.set_samples_trained(answer.samples_trained);
    header.set_degree(answer.degree);
    header.set_count(static_cast<uint32_t>(answer.deltas.size()));
    header.set_payload_bytes(payload.size());
    header.set_parameters(fed.size());
    auto reply = (*session)->Reply(header.SerializeAsString());
    if (!reply.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(reply.status().message()));
    int64_t sent = 0;
    PullChunk first;
    first.set_reply(*reply);
    sent += first.ByteSizeLong();
    if (!writer->Write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    size_t off = 0;
    do {
      size_t n = std::min(kChunkBytes, payload.size() - off);
      bool last = off + n >= payload.size();
      PullChunk chunk;
      chunk.set_sealed((*session)->Seal(std::string_view(payload).substr(off, n), last));
      sent += chunk.ByteSizeLong();
      if (!writer->Write(chunk)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      off += n;
    } while (off < payload.size());
    std::lock_guard<std::mutex> lock(mu);
    totals.bytes_sent += sent;
    if (peer >= 0) {
      status[peer].bytes_sent += sent;
      status[peer].served++;
    }
    return grpc::Status::OK;
  }

  // ---- client ----
  absl::Status PullFrom(int j) {
    const auto& peer = options.peers[j];
    auto [epoch, after] = fed.Cursor(j);
    PullParams params;
    params.set_epoch(epoch);
    params.set_after_seq(after);
    params.set_fingerprint(options.fingerprint);
    params.set_sender_name(options.node_name);
    MYCEL_ASSIGN_OR_RETURN(auto session, crypto::ClientSession::Begin(identity, peer.public_key,
                                                                      params.SerializeAsString(),
                                                                      Clock::Real()->UnixSeconds()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(options.federation.pull_timeout_s * 1000)));
    PullRequest req;
    req.set_hello(session->hello());
    auto reader = stubs[j]->Pull(&ctx, req);
    PullChunk chunk;
    int64_t received = 0;
    auto fail = [&](absl::Status s) {
      ctx.TryCancel();
      reader->Finish();
      std::lock_guard<std::mutex> lock(mu);
      status[j].bytes_received += received;
      totals.bytes_received += received;
      return s;
    };
    if (!reader->Read(&chunk)) {
      grpc::Status gs = reader->Finish();
      if (gs.error_code() == grpc::StatusCode::UNAVAILABLE || gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return absl::UnavailableError("unreachable: " + gs.error_message());
      }
      // The neighbour's refusal starts with its reason word ("unpinned_key: ...").
      return absl::PermissionDeniedError(gs.error_message() + ": refused by the neighbour");
    }
    received += chunk.ByteSizeLong();
    auto header_bytes = session->AcceptReply(chunk.reply());
    if (!header_bytes.ok()) return fail(header_bytes.status());
    PullHeader header;
    if (!header.ParseFromString(*header_bytes)) return fail(Refuse("malformed", "reply header does not parse"));
    if (header.fingerprint() != options.fingerprint) {
      return fail(Refuse("fingerprint_mismatch", "their model " + header.fingerprint() + " is not ours"));
    }
    if (header.parameters() != fed.size()) {
      return fail(Refuse("bad_shape", std::to_string(header.parameters()) + " parameters, expected " +
                                          std::to_string(fed.size())));
    }
    // Bound what we accept before allocating anything for it.
    const uint64_t dense = fed.size() * sizeof(float);
    // A delta is never larger than dense fp32 plus its codec header and our
    // length prefix (kDeltaOverhead); a keyframe is exactly dense.
    constexpr uint64_t kDeltaOverhead = 64;
    uint64_t limit = header.keyframe() ? dense : header.count() * (dense + kDeltaOverhead);
    if (header.count() > kMaxDeltasPerAnswer || header.payload_bytes() > limit ||
        header.payload_bytes() > static_cast<uint64_t>(options.max_answer_bytes) ||
        (header.keyframe() && header.payload_bytes() != dense)) {
      return fail(Refuse("bad_shape", "payload of " + std::to_string(header.payload_bytes()) +
                                          " bytes for " + std::to_string(header.count()) + " deltas"));
    }
    std::string payload;
    payload.reserve(header.payload_bytes());
    bool final = false;
    while (!final && reader->Read(&chunk)) {
      received += chunk.ByteSizeLong();
      auto plain = session->Open(chunk.sealed(), &final);
      if (!plain.ok()) return fail(plain.status());
      if (payload.size() + plain->size() > header.payload_bytes()) {
        return fail(Refuse("bad_shape", "payload longer than its header says"));
      }
      payload += *plain;
    }
    if (auto s = session->Finish(); !s.ok()) return fail(s);
    if (payload.size() != header.payload_bytes()) return fail(Refuse("truncated", "payload shorter than its header says"));
    grpc::Status gs = reader->Finish();
    federation::PullAnswer answer;
    answer.epoch = header.epoch();
    answer.from_seq = header.from_seq();
    answer.to_seq = header.to_seq();
    answer.keyframe = header.keyframe();
    answer.codec = header.codec();
    answer.samples_trained = header.samples_trained();
    answer.degree = header.degree();
    if (answer.keyframe) {
      answer.public_copy.resize(fed.size());
      std::memcpy(answer.public_copy.data(), payload.data(), payload.size());
    } else {
      std::string_view in(payload);
      for (uint32_t i = 0; i < header.count(); ++i) {
        uint64_t len;
        if (!GetU64(&in, &len) || len > in.size()) {
          return fail(Refuse("malformed", "delta " + std::to_string(i) + " overruns the payload"));
        }
        answer.deltas.emplace_back(in.substr(0, len));
        in.remove_prefix(len);
      }
      if (!in.empty()) return fail(Refuse("malformed", "bytes after the last delta"));
    }
    absl::Status applied = fed.Apply(j, answer);
    std::lock_guard<std::mutex> lock(mu);
    status[j].bytes_received += received;
    totals.bytes_received += received;
    if (!applied.ok()) return applied;
    if (answer.keyframe) status[j].keyframes_accepted++;
    else status[j].deltas_accepted += static_cast<int64_t>(answer.deltas.size());
    (void)gs;
    return absl::OkStatus();
  }

  void Round() {
    const double now = Clock::Real()->MonotonicSeconds();
    for (size_t j = 0; j < options.peers.size(); ++j) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) return;
        if (now < next_try[j]) continue;
      }
      absl::Status s = PullFrom(static_cast<int>(j));
      std::lock_guard<std::mutex> lock(mu);
      PeerStatus& ps = status[j];
      if (s.ok()) {
        if (ps.state != "connected") Logger("peer")->info("{} ({}) connected", ps.name, ps.address);
        ps.state = "connected";
        ps.last_error.clear();
        ps.last_success_unix = Clock::Real()->UnixSeconds();
        ps.pulls_ok++;
        failures[j] = 0;
        next_try[j] = 0;
        continue;
      }
      ps.pulls_failed++;
      failures[j]++;
      std::string reason = absl::IsUnavailable(s) ? "unreachable" : Reason(s);
      ps.last_error = std::string(s.message());
      if (absl::IsUnavailable(s)) {
        if (ps.state != "unreachable") Logger("peer")->info("{} ({}) unreachable: {}", ps.name, ps.address, s.message());
        ps.state = "unreachable";
      } else {
        ps.state = "rejected";
        CountRefusal(static_cast<int>(j), reason, std::string(s.message()));
      }
      // Exponential backoff from one round interval up to max_backoff_s.
      double backoff = std::min(options.federation.max_backoff_s,
                                options.federation.round_interval_s * std::pow(2.0, std::min(failures[j], 20)));
      next_try[j] = now + backoff;
    }
    absl::Status merged = with_shared([this](std::vector<float>& x, int64_t samples) {
      fed.Publish(x.data(), samples);
      fed.Merge(x.data());
      return true;
    });
    std::lock_guard<std::mutex> lock(mu);
    if (!merged.ok()) {
      Logger("peer")->error("round {}: merge failed: {}", totals.rounds, merged.message());
      return;
    }
    totals.rounds++;
  }

  void Loop() {
    const auto period = std::chrono::duration<double>(options.federation.round_interval_s);
    auto next = std::chrono::steady_clock::now();
    for (;;) {
      next += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period);
      {
        std::unique_lock<std::mutex> lock(mu);
        if (cv.wait_until(lock, next, [this] { return stop; })) return;
      }
      Round();
      auto now = std::chrono::steady_clock::now();
      if (next < now) next = now;  // a slow round does not cause a burst of catch-up rounds
    }
  }
};

Gossip::Gossip(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gossip::~Gossip() { Stop(); }

absl::StatusOr<std::unique_ptr<Gossip>> Gossip::Create(const GossipOptions& options,
                                                       const crypto::Identity& identity,
                                                       federation::Federation& federation,
                                                       SharedParametersFn with_shared) {
  auto impl = std::make_unique<Impl>(options, identity, federation, std::move(with_shared));
  for (const auto& p : options.peers) {
    impl->pinned.push_back(p.public_key);
    PeerStatus ps;
    ps.name = p.name;
    ps.address = p.address;
    ps.key_fingerprint = crypto::KeyFingerprint(p.public_key);
    impl->status.push_back(ps);
    impl->next_try.push_back(0);
    impl->failures.push_back(0);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(8 << 20);
    // Reconnect attempts follow our own backoff; keep gRPC's short so a
    // neighbour that comes back is seen at the next due round.
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    impl->stubs.push_back(
        Peer::NewStub(grpc::CreateCustomChannel(p.address, grpc::InsecureChannelCredentials(), args)));
  }
  return std::unique_ptr<Gossip>(new Gossip(std::move(impl)));
}

absl::Status Gossip::Start() {
  Impl* impl = impl_.get();
  if (impl->started) return absl::OkStatus();
  if (!impl->options.listen.empty()) {
    grpc::ServerBuilder builder;
    int port = 0;
    // Transport encryption is our own (crypto::Session): the payload is sealed
    // end to end and every exchange is authenticated by pinned keys.
    builder.AddListeningPort(impl->options.listen, grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(impl);
    builder.SetMaxReceiveMessageSize(kMaxRequestMessage);
    impl->server = builder.BuildAndStart();
    if (!impl->server || port == 0) {
      return absl::UnavailableError("cannot listen for peers on " + impl->options.listen);
    }
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->totals.listen_port = port;
    Logger("peer")->info("peer service listening on {} (port {}), {} pinned neighbour(s)", impl->options.listen,
                         port, impl->options.peers.size());
  }
  impl->started = true;
  if (!impl->options.peers.empty()) impl->loop = std::thread([impl] { impl->Loop(); });
  return absl::OkStatus();
}

void Gossip::Stop() {
  Impl* impl = impl_.get();
  if (!impl || impl->stopped) return;
  impl->stopped = true;
  {
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->stop = true;
  }
  impl->cv.notify_all();
  if (impl->loop.joinable()) impl->loop.join();
  if (impl->server) {
    impl->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    impl->server->Wait();
  }
}

std::vector<PeerStatus> Gossip::Peers() const {
  std::vector<PeerStatus> out;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    out = impl_->status;
    double now = Clock::Real()->MonotonicSeconds();
    for (size_t j = 0; j < out.size(); ++j) out[j].next_retry_s = std::max(0.0, impl_->next_try[j] - now);
  }
  for (size_t j = 0; j < out.size(); ++j) {
    auto m = impl_->fed.mirror_stats(static_cast<int>(j));
    out[j].epoch = m.epoch;
    out[j].seq_applied = m.seq;
    out[j].samples_trained = m.samples_trained;
    // Updates the federation refused after decryption (shape, norm, ...).
    if (m.refused > 0 && !m.last_refusal.empty() && out[j].last_error.empty()) out[j].last_error = m.last_refusal;
  }
  return out;
}

GossipTotals Gossip::Totals() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->totals;
}

}  // namespace mycel::peer
