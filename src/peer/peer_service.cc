#include "peer/peer_service.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/logging.h"
#include "common/refusal.h"
#include "common/status.h"
#include "crypto/identity.h"
#include "federation/federation.h"
#include "peer/pull_header.h"
#include "peer/server_limits.h"

namespace mycel::peer {
namespace {

// Hellos are fresh within ±2 minutes of our clock (crypto::ReplayGuard), and
// none dated before this process started is taken: the replay cache of an
// earlier run is gone, so such a Hello may be a recorded one. The slack
// forgives a neighbour's clock running a little behind; a restart by the
// service manager takes longer than it (RestartSec=5).
constexpr int64_t kReplayWindowS = 120;
constexpr int64_t kReplayFloorSlackS = 2;
// Exchange calls waiting for their Hello, at most: a streaming handler
// starts before any message has come, so an unauthenticated caller could
// otherwise hold server threads by opening calls and sending nothing.
constexpr int kMaxAwaitingHello = 4;

}  // namespace

// Cancels server calls that overstay: one thread, woken every 100 ms while
// any call is watched. A call is watched from its handler's start to its
// end (Guard), so a context is never touched after its handler returned.
class CallWatch {
 public:
  CallWatch() : thread_([this] { Run(); }) {}
  ~CallWatch() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  class Guard {
   public:
    Guard(CallWatch& w, grpc::ServerContext* ctx, double within_s) : w_(w), ctx_(ctx) { Extend(within_s); }
    ~Guard() {
      std::lock_guard<std::mutex> lock(w_.mu_);
      w_.until_.erase(ctx_);
    }
    // The call must now be over within `within_s` from now.
    void Extend(double within_s) {
      {
        std::lock_guard<std::mutex> lock(w_.mu_);
        w_.until_[ctx_] = Clock::Real()->MonotonicSeconds() + within_s;
      }
      w_.cv_.notify_all();
    }

   private:
    CallWatch& w_;
    grpc::ServerContext* ctx_;
  };

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (until_.empty()) {
        cv_.wait(lock, [this] { return stop_ || !until_.empty(); });
        continue;
      }
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      const double now = Clock::Real()->MonotonicSeconds();
      for (auto it = until_.begin(); it != until_.end();) {
        if (it->second > now) {
          ++it;
          continue;
        }
        it->first->TryCancel();  // its blocked Read or Write returns false
        it = until_.erase(it);
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<grpc::ServerContext*, double> until_;  // call → monotonic s it must be over by
  bool stop_ = false;
  std::thread thread_;
};

PeerService::PeerService(const GossipOptions& options, const crypto::Identity& identity, federation::Federation& fed,
                         GossipState& state)
    : options_(options),
      identity_(identity),
      fed_(fed),
      state_(state),
      replay_(kReplayWindowS, Clock::Real()->UnixSeconds() - kReplayFloorSlackS),
      watchdog_(std::make_unique<CallWatch>()) {}

PeerService::~PeerService() = default;

grpc::Status PeerService::Pull(grpc::ServerContext* ctx, const PullRequest* req,
                               grpc::ServerWriter<PullChunk>* writer) {
  return Serve(ctx, req->hello(), [writer](const PullChunk& c) { return writer->Write(c); }, nullptr);
}

grpc::Status PeerService::Exchange(grpc::ServerContext* ctx,
                                   grpc::ServerReaderWriter<PullChunk, ExchangeUp>* stream) {
  // Until its Hello the caller is nobody: few such calls at once, each
  // cancelled if the Hello is not in within hello_timeout_s; then the whole
  // call within max_exchange_s, whatever deadline the caller set.
  if (awaiting_hello_.fetch_add(1) >= kMaxAwaitingHello) {
    awaiting_hello_.fetch_sub(1);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy: too many calls waiting for their hello");
  }
  CallWatch::Guard watch(*watchdog_, ctx, options_.hello_timeout_s);
  ExchangeUp first;
  const bool got = stream->Read(&first);
  awaiting_hello_.fetch_sub(1);
  if (!got) {
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.CountRefusal(-1, Refusal::kTooSlow,
                        "an Exchange sent no hello within " + std::to_string(options_.hello_timeout_s) + " s");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too_slow: no hello");
  }
  watch.Extend(options_.max_exchange_s);
  return Serve(ctx, first.hello(), [stream](const PullChunk& c) { return stream->Write(c); },
               [stream](ExchangeUp* up) { return stream->Read(up); });
}

// Answers one Hello, writing with `write`. `read_up` (an Exchange's) reads
// the caller's hand-over when we asked for one; null for a Pull.
grpc::Status PeerService::Serve(grpc::ServerContext* ctx, const std::string& hello, const WriteFn& write,
                                const ReadUpFn& read_up) {
  const int64_t now = Clock::Real()->UnixSeconds();
  std::unique_ptr<crypto::ServerSession> session;
  PullParams params;
  if (grpc::Status admitted = Admit(ctx, hello, now, &session, &params); !admitted.ok()) return admitted;
  // Booked by key: the roster may change while we answer.
  const std::string sender = session->hello().sender_pk;
  // The deltas stay shared with the log; the payload is sealed from them in place.
  federation::SharedPullAnswer shared = fed_.AnswerShared(params.epoch(), params.after_seq());
  PayloadPieces payload(shared);
  PullHeader header = MakeHeader(options_, fed_.size(), shared, payload);
  const bool hand_over = read_up && AskHandOver(sender, &header);
  // Whatever happens below, the neighbour may hand over again afterwards.
  struct HandOverSlot {
    PeerService* service;
    const std::string* sender;
    bool held;
    ~HandOverSlot() {
      if (!held) return;
      std::lock_guard<std::mutex> lock(service->state_.mu);
      service->handing_over_.erase(*sender);
    }
  } slot{this, &sender, hand_over};
  int64_t sent = 0;
  if (grpc::Status answered = SendAnswer(*session, header, payload, write, &sent); !answered.ok()) return answered;
  BookServed(sender, sent, session->hello().timestamp, now);
  if (!hand_over) return grpc::Status::OK;
  return TakeHandOver(ctx, *session, read_up, sender);
}

// The caller's Hello verified (cheapest first) and its pull parameters
// checked against our model, into *session and *params; else the refusal,
// counted, as the call's status.
grpc::Status PeerService::Admit(grpc::ServerContext* ctx, const std::string& hello, int64_t now,
                                std::unique_ptr<crypto::ServerSession>* session, PullParams* params) {
  const std::shared_ptr<const Roster> pinned = state_.PinnedRoster();
  auto accepted = crypto::ServerSession::Accept(identity_, pinned->pinned, replay_, hello, now);
  if (!accepted.ok()) {
    const Refusal reason = RefusalOf(accepted.status());
    if (reason == Refusal::kUnpinnedKey) NotePending(ctx->peer(), hello, now);
    // A refused Hello is not authenticated: attribute it to a pinned peer
    // only for the record; it never changes that peer's state.
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.CountRefusal(-1, reason, std::string(accepted.status().message()));
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(RefusalName(reason)) + ": request refused");
  }
  *session = std::move(*accepted);
  const std::string& sender = (*session)->hello().sender_pk;
  if (!params->ParseFromString((*session)->hello().request)) {
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.CountRefusal(state_.PeerIndexLocked(sender), Refusal::kMalformed, "pull parameters do not parse");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed: pull parameters do not parse");
  }
  if (params->fingerprint() != options_.fingerprint) {
    std::lock_guard<std::mutex> lock(state_.mu);
    state_.CountRefusal(state_.PeerIndexLocked(sender), Refusal::kFingerprintMismatch,
                        "their model " + params->fingerprint() + " is not ours " + options_.fingerprint +
                            LayoutDifference(options_.layout, params->layout()));
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "fingerprint_mismatch: your model " + params->fingerprint() + " is not mine " +
                            options_.fingerprint + LayoutDifference(options_.layout, params->layout(), true));
  }
  return grpc::Status::OK;
}

// A neighbour we cannot call hands its own deltas over on this call, from
// where our mirror of it stands: asks for them in *header. One hand-over per
// neighbour at a time, so a hostile one holds one server thread at most
// (for max_exchange_s); true if asked (the slot is then taken).
bool PeerService::AskHandOver(const std::string& sender, PullHeader* header) {
  std::lock_guard<std::mutex> lock(state_.mu);
  const int j = state_.PeerIndexLocked(sender);
  if (j < 0 || !state_.roster->peers[j].dials_in || !handing_over_.insert(sender).second) return false;
  auto [epoch, after] = fed_.Cursor(j);
  header->set_hand_over(true);
  header->set_want_epoch(epoch);
  header->set_want_after_seq(after);
  return true;
}

// The Reply (sealing `header`), then the payload in sealed chunks; *sent
// counts the bytes written.
grpc::Status PeerService::SendAnswer(crypto::ServerSession& session, const PullHeader& header,
                                     const PayloadPieces& payload, const WriteFn& write, int64_t* sent) {
  auto reply = session.Reply(header.SerializeAsString());
  if (!reply.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(reply.status().message()));
  PullChunk first;
  first.set_reply(*reply);
  *sent += first.ByteSizeLong();
  if (!write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  PullChunk chunk;  // reused: its sealed buffer is allocated once
  const bool delivered = SealPayload(payload, SealDown(session), chunk.mutable_sealed(), [&] {
    *sent += chunk.ByteSizeLong();
    return write(chunk);
  });
  if (!delivered) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
  return grpc::Status::OK;
}

// An answer delivered: bytes and the caller's clock, if it is a neighbour.
void PeerService::BookServed(const std::string& sender, int64_t sent, int64_t hello_timestamp, int64_t now) {
  std::lock_guard<std::mutex> lock(state_.mu);
  state_.totals.bytes_sent += sent;
  if (int peer = state_.PeerIndexLocked(sender); peer >= 0) {
    PeerStatus& ps = state_.status[peer];
    ps.bytes_sent += sent;
    ps.served++;
    // Our clock minus theirs when they sent the Hello (plus the trip): `mycel doctor`.
    ps.clock_skew_s = static_cast<double>(now - hello_timestamp);
    ps.clock_skew_known = true;
  }
}

// The hand-over we asked for, received, applied and booked like a pull of
// that neighbour; the call's status tells it whether we took it.
grpc::Status PeerService::TakeHandOver(grpc::ServerContext* ctx, crypto::ServerSession& session,
                                       const ReadUpFn& read_up, const std::string& sender) {
  Pulled got;
  absl::Status s = ReceiveHandOver(ctx, session, read_up, sender, &got);
  std::lock_guard<std::mutex> lock(state_.mu);
  state_.totals.bytes_received += got.bytes;
  const int j = state_.PeerIndexLocked(sender);
  if (j < 0) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unpinned_key: you were dropped meanwhile");
  state_.BookPull(j, got, s);
  if (s.ok()) return grpc::Status::OK;
  // The reason word first, as every refusal: the neighbour counts it.
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
}

// A neighbour's hand-over on its Exchange (we asked in our header):
// the client→server stream, verified like a pulled answer (header bounds,
// rate, FINAL, nothing after it) and applied to our mirror of it.
absl::Status PeerService::ReceiveHandOver(grpc::ServerContext* ctx, crypto::ServerSession& session,
                                          const ReadUpFn& read, const std::string& sender, Pulled* got) {
  const double began = Clock::Real()->MonotonicSeconds();
  ExchangeUp up;
  auto ended = [&](const char* what) {
    if (ctx->IsCancelled()) {
      return Refuse(Refusal::kTooSlow, std::string(what) + ": the call ended at its deadline or max_exchange_s (" +
                                           std::to_string(got->bytes) + " bytes)");
    }
    return Refuse(Refusal::kTruncated, what);
  };
  if (!read(&up)) return ended("no hand-over came");
  got->bytes += up.ByteSizeLong();
  MYCEL_RETURN_IF_ERROR(session.AcceptUpstream(up.stream()));
  std::string header_bytes;
  bool final = false;
  if (up.sealed().size() > crypto::kMaxHeaderBytes + crypto::kSealOverheadBytes) {
    return Refuse(Refusal::kMalformed, "hand-over header of " + std::to_string(up.sealed().size()) + " bytes");
  }
  MYCEL_RETURN_IF_ERROR(session.OpenUpAppend(up.sealed(), &header_bytes, &final));
  PullHeader header;
  if (final || !header.ParseFromString(header_bytes)) {
    return Refuse(Refusal::kMalformed, "hand-over header does not parse");
  }
  MYCEL_RETURN_IF_ERROR(CheckHeader(options_, fed_.size(), header));
  std::string payload;  // bounded by CheckHeader; grows with what arrives
  payload.reserve(std::min<uint64_t>(header.payload_bytes(), ReceiveBufferKeepBytes(fed_.size())));
  const OpenFn open = OpenUp(session);
  while (!final && read(&up)) {
    got->bytes += up.ByteSizeLong();
    const double elapsed = Clock::Real()->MonotonicSeconds() - began;
    if (elapsed > options_.min_transfer_grace_s &&
        static_cast<double>(got->bytes) < options_.min_transfer_bytes_per_s * elapsed) {
      return Refuse(Refusal::kTooSlow, "hand-over below the least transfer rate: " + std::to_string(got->bytes) +
                                           " bytes in " + std::to_string(elapsed) + " s");
    }
    MYCEL_RETURN_IF_ERROR(OpenChunk(open, up.sealed(), header.payload_bytes(), &payload, &final));
  }
  if (!final) return ended("the hand-over ended before its final chunk");
  if (read(&up)) return Refuse(Refusal::kTrailingData, "hand-over chunks after the final one");
  if (payload.size() != header.payload_bytes()) {
    return Refuse(Refusal::kTruncated, "hand-over shorter than its header says");
  }
  federation::PullAnswerView answer = AnswerView(header);
  MYCEL_RETURN_IF_ERROR(DecodePayload(payload, header.keyframe(), header.count(), &answer));
  std::lock_guard<std::mutex> lock(state_.mu);  // the roster's indices hold still while we apply
  const int j = state_.PeerIndexLocked(sender);
  if (j < 0) return Refuse(Refusal::kUnpinnedKey, "dropped from the peer list during its hand-over");
  MYCEL_RETURN_IF_ERROR(fed_.Apply(j, answer));
  got->keyframe = answer.keyframe;
  got->deltas = answer.keyframe ? 0 : static_cast<int64_t>(answer.deltas.size());
  return absl::OkStatus();
}

// Pairing: lists an unpinned caller as a pending peer if its Hello is
// genuine (ServerSession::IdentifyUnpinned), within the rate the token
// bucket allows. `grpc_peer` is gRPC's "ipv4:1.2.3.4:5678" of the caller.
void PeerService::NotePending(const std::string& grpc_peer, const std::string& hello, int64_t now) {
  // gRPC sees only our listener's relay ("fd:N"); the listener knows who called.
  const std::string host = listener_->CallerHost(grpc_peer);
  {
    std::lock_guard<std::mutex> lock(state_.mu);
    const double t = Clock::Real()->MonotonicSeconds();
    if (pairing_buckets_.size() >= kPairingHosts && pairing_buckets_.count(host) == 0) {
      auto oldest = std::min_element(pairing_buckets_.begin(), pairing_buckets_.end(), [](const auto& a, const auto& b) {
        return a.second.refilled_at < b.second.refilled_at;
      });
      pairing_buckets_.erase(oldest);
    }
    PairingBucket& b = pairing_buckets_[host];
    if (b.refilled_at == 0) b.refilled_at = t;
    b.tokens = std::min(kPairingChecksPerHost, b.tokens + (t - b.refilled_at) * kPairingChecksPerHost / 2);
    b.refilled_at = t;
    if (b.tokens < 1) return;
    b.tokens -= 1;
  }
  auto who = crypto::ServerSession::IdentifyUnpinned(identity_, replay_.window_s(), hello, now);
  if (!who.ok()) return;
  PullParams params;
  if (!params.ParseFromString(who->request)) return;
  PendingPeer p;
  p.public_key = who->sender_pk;
  p.key_fingerprint = crypto::KeyFingerprint(p.public_key);
  p.name = SanitisedPeerName(params.sender_name());
  p.hello_timestamp = who->timestamp;
  p.dials_in = params.dial_out();
  if (!host.empty() && !p.dials_in && params.listen_port() > 0 && params.listen_port() < 65536) {
    p.address = host + ":" + std::to_string(params.listen_port());
  }
  p.same_model = params.fingerprint() == options_.fingerprint;
  std::lock_guard<std::mutex> lock(state_.mu);
  if (PendingPeer* known = state_.FindPendingLocked(p.public_key)) {
    // A Hello no newer than the last one is a copy (IdentifyUnpinned keeps no
    // replay cache): it may not move the peer to the copier's address.
    if (p.hello_timestamp <= known->hello_timestamp) {
      p.address = known->address;
      p.hello_timestamp = known->hello_timestamp;
    }
    // A caller that gives no address of its own keeps the one its LAN
    // announcement gave.
    if (p.address.empty() && !p.dials_in) p.address = known->address;
    p.first_seen_unix = known->first_seen_unix;
    p.requests = known->requests;
    p.discovered = known->discovered;
    state_.pending_peers.erase(state_.pending_peers.begin() + (known - state_.pending_peers.data()));
  } else {
    p.first_seen_unix = now;
    const double t = Clock::Real()->MonotonicSeconds();
    if (t - pairing_logged_at_ >= 1) {
      pairing_logged_at_ = t;
      Logger("peer")->info("pending peer '{}' ({}) at {} asks to pair: `mycel peers accept {}` pins it", p.name,
                           p.key_fingerprint, p.address.empty() ? "an address it does not give" : p.address,
                           p.key_fingerprint);
    }
  }
  p.last_seen_unix = now;
  p.requests++;
  state_.PushPendingLocked(std::move(p));
}

}  // namespace mycel::peer
