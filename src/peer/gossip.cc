#include "peer/gossip.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/clock.h"
#include "common/logging.h"
#include "common/refusal.h"
#include "common/status.h"
#include "crypto/identity.h"
#include "crypto/session.h"
#include "federation/federation.h"
#include "peer.grpc.pb.h"
#include "peer/payload.h"
#include "peer/server_limits.h"

namespace mycel::peer {
namespace {

constexpr int kMaxRequestMessage = 64 << 10; // a Pull request is a Hello of a few KB
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
// The payload format, its chunking and its bounds: peer/payload.h.

// A neighbour's refusal of our call, as it worded it: its status message
// starts with its reason word ("unpinned_key: ..."). That text is all the
// wire carries (and gRPC statuses are not authenticated), so the word is
// looked up in the fixed vocabulary, an unknown one counting as "error",
// and the per-reason counters stay bounded.
absl::Status NeighbourRefusal(const std::string& message) {
  return WithRefusal(absl::PermissionDeniedError(message), RefusalNamed(message.substr(0, message.find(':'))));
}

// A caller's name as shown to the user: at most 64 characters of
// [A-Za-z0-9._-], others replaced by '_' ("" → "unnamed").
std::string SanitisedName(const std::string& raw) {
  std::string out;
  for (char c : raw.substr(0, 64)) {
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ? c : '_');
  }
  return out.empty() ? "unnamed" : out;
}

// What differs between our Model::Layout() and a neighbour's, as ": their
// fc1.weight is Float 64x784, ours Float 128x784" (or the kind, or a
// parameter only one side has); "" when they sent none (an older build) or
// none is found (a layout cut at kMaxLayoutBytes). Their text is
// authenticated but not trusted: printable ASCII only, at most 200 bytes.
// `to_them`: worded for the neighbour that sent theirs (a refusal we send
// back): "your ... is ..., mine ...".
std::string LayoutDifference(const std::string& ours, const std::string& theirs_raw, bool to_them = false) {
  const std::string their = to_them ? "your" : "their", our = to_them ? "mine" : "ours";
  const std::string they = to_them ? "you" : "they", we = to_them ? "I" : "we";
  if (theirs_raw.empty()) return "";
  std::string theirs = theirs_raw;
  for (char& c : theirs) {
    if (c != '\n' && (c < 0x20 || c > 0x7e)) c = '?';
  }
  auto parse = [](const std::string& text) {
    std::vector<std::pair<std::string, std::string>> out;  // name → "dtype shape", in order
    size_t at = 0;
    while (at < text.size()) {
      size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(at, end - at);
      at = end + 1;
      const size_t sp = line.find(' ');
      if (sp != std::string::npos) out.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
    return out;
  };
  const auto a = parse(ours), b = parse(theirs);
  const std::map<std::string, std::string> am(a.begin(), a.end()), bm(b.begin(), b.end());
  std::string what;
  for (const auto& [name, v] : a) {
    auto it = bm.find(name);
    if (it == bm.end()) {
      if (name != "kind") what = ": " + they + " have no " + name + " (" + our + " " + v + ")";
    } else if (it->second != v) {
      what = name == "kind" ? ": " + their + " model is " + it->second + ", " + our + " " + v
                            : ": " + their + " " + name + " is " + it->second + ", " + our + " " + v;
    }
    if (!what.empty()) break;
  }
  for (size_t i = 0; what.empty() && i < b.size(); ++i) {
    if (am.count(b[i].first) == 0) what = ": " + they + " have " + b[i].first + " (" + b[i].second + "), " + we + " do not";
  }
  return what.substr(0, 200);
}

// The pinned neighbours, as one immutable value: the server reads the one in
// force without holding a lock across a pull, and SetPeers swaps in another.
struct Roster {
  std::vector<config::PeerOptions> peers;          // index = mirror index
  std::vector<std::string> pinned;                 // raw keys, same index
  std::vector<std::shared_ptr<Peer::Stub>> stubs;  // same index
};

std::shared_ptr<const Roster> MakeRoster(const std::vector<config::PeerOptions>& peers) {
  auto r = std::make_shared<Roster>();
  r->peers = peers;
  for (const auto& p : peers) {
    r->pinned.push_back(p.public_key);
    if (p.dials_in) {  // never called
      r->stubs.push_back(nullptr);
      continue;
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(8 << 20);
    // Reconnect attempts follow our own backoff; keep gRPC's short so a
    // neighbour that comes back is seen at the next due round.
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    r->stubs.push_back(Peer::NewStub(grpc::CreateCustomChannel(p.address, grpc::InsecureChannelCredentials(), args)));
  }
  return r;
}

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Where a neighbour is, for log lines.
std::string Where(const PeerStatus& ps) { return ps.dials_in ? "dials in" : ps.address; }

PeerStatus NewPeerStatus(const config::PeerOptions& p) {
  PeerStatus ps;
  ps.name = p.name;
  ps.address = p.address;
  ps.dials_in = p.dials_in;
  ps.key_fingerprint = crypto::KeyFingerprint(p.public_key);
  return ps;
}

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

}  // namespace

struct Gossip::Impl : public Peer::Service {
  Impl(const GossipOptions& o, const crypto::Identity& id, federation::Federation& f, SharedParametersFn w)
      : options(o),
        identity(id),
        fed(f),
        with_shared(std::move(w)),
        replay(kReplayWindowS, Clock::Real()->UnixSeconds() - kReplayFloorSlackS),
        rx(ReceiveBufferKeepBytes(f.size())) {}

  const GossipOptions options;
  const crypto::Identity& identity;
  federation::Federation& fed;
  SharedParametersFn with_shared;
  crypto::ReplayGuard replay;
  ReceiveBuffer rx;                                      // pulled payloads land here; loop thread only

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false;                                     // guarded by mu
  // Written by the loop thread only (between rounds), under mu; it may read
  // it without. Indices into status, next_try, failures and the
  // federation's mirrors all follow it.
  std::shared_ptr<const Roster> roster;
  std::shared_ptr<const Roster> pending;                 // SetPeers' list, not yet in force; guarded by mu
  std::vector<PeerStatus> status;                        // guarded by mu
  std::vector<double> next_try;                          // guarded by mu (monotonic s)
  std::vector<int> failures;                             // guarded by mu
  std::vector<double> last_exchange;                     // guarded by mu: wall s of its last good pull or hand-over
  std::set<std::pair<std::string, std::string>> logged;  // (who, reason) already logged; guarded by mu
  GossipTotals totals;                                   // guarded by mu
  std::vector<PendingPeer> pending_peers;                // guarded by mu; most recently seen first
  // Unpinned Hellos each calling host may still have checked (a token
  // bucket per host, so a flood from one cannot starve the others); at most
  // kPairingHosts hosts, the least recently heard forgotten. Guarded by mu.
  struct PairingBucket {
    double tokens = kPairingChecksPerHost;
    double refilled_at = 0;  // monotonic s
  };
  std::map<std::string, PairingBucket> pairing_buckets;
  double pairing_logged_at = -1e9;                       // guarded by mu: one "asks to pair" line a second at most

  std::set<std::string> handing_over;                    // guarded by mu: keys whose hand-over is under way
  std::atomic<int> awaiting_hello{0};                    // Exchange calls whose Hello has not come
  CallWatch watchdog;                                    // cancels Exchange calls that overstay

  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<PeerListener> listener;  // accepts for server, within PeerServerLimits
  std::thread loop;
  bool started = false, stopped = false;

  // The keys a caller is authenticated against: SetPeers' list as soon as it
  // is given (a dropped neighbour is refused at once), else the one in force.
  std::shared_ptr<const Roster> PinnedRoster() const {
    std::lock_guard<std::mutex> lock(mu);
    return pending ? pending : roster;
  }

  // The index of the neighbour with this key in the roster in force, or -1. Caller holds mu.
  int PeerIndexLocked(std::string_view key) const {
    for (size_t i = 0; i < roster->pinned.size(); ++i) {
      if (roster->pinned[i] == key) return static_cast<int>(i);
    }
    return -1;
  }

  // Puts SetPeers' list in force: loop thread, between rounds, so the
  // federation's mirror indices change together with ours. A neighbour kept
  // (same key) keeps its counters and its mirror.
  void ApplyPendingRoster() {
    std::lock_guard<std::mutex> lock(mu);
    if (!pending) return;
    std::shared_ptr<const Roster> next = std::move(pending);
    pending.reset();
    std::vector<PeerStatus> next_status;
    std::vector<double> next_try_;
    std::vector<int> next_failures;
    std::vector<double> next_exchange;
    for (const auto& p : next->peers) {
      int old = PeerIndexLocked(p.public_key);
      PeerStatus ps = old >= 0 ? status[old] : NewPeerStatus(p);
      const bool moved = old >= 0 && ps.address != p.address;
      ps.name = p.name;
      ps.address = p.address;
      ps.dials_in = p.dials_in;
      if (moved) ps.state = "never";
      next_status.push_back(std::move(ps));
      next_try_.push_back(old >= 0 && !moved ? next_try[old] : 0);
      next_failures.push_back(old >= 0 && !moved ? failures[old] : 0);
      next_exchange.push_back(old >= 0 && !moved ? last_exchange[old] : 0);
    }
    const int kept = fed.SetPeers(next->pinned);
    Logger("peer")->info("peer list reloaded: {} neighbour(s), {} kept with their mirror, {} new, {} dropped",
                         next->peers.size(), kept, next->peers.size() - kept, roster->peers.size() - kept);
    roster = std::move(next);
    // A caller pinned now is no longer pending.
    pending_peers.erase(std::remove_if(pending_peers.begin(), pending_peers.end(),
                                       [&](const PendingPeer& q) { return PeerIndexLocked(q.public_key) >= 0; }),
                        pending_peers.end());
    status = std::move(next_status);
    next_try = std::move(next_try_);
    failures = std::move(next_failures);
    last_exchange = std::move(next_exchange);
  }

  // Counts a refusal and logs it the first time per (who, reason). Caller holds mu.
  void CountRefusal(int peer, Refusal refusal, const std::string& detail) {
    const std::string reason(RefusalName(refusal));
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

  // Pairing: lists an unpinned caller as a pending peer if its Hello is
  // genuine (ServerSession::IdentifyUnpinned), within the rate the token
  // bucket allows. `grpc_peer` is gRPC's "ipv4:1.2.3.4:5678" of the caller.
  void NotePending(const std::string& grpc_peer, const std::string& hello, int64_t now) {
    // gRPC sees only our listener's relay ("fd:N"); the listener knows who called.
    const std::string host = listener->CallerHost(grpc_peer);
    {
      std::lock_guard<std::mutex> lock(mu);
      const double t = Clock::Real()->MonotonicSeconds();
      if (pairing_buckets.size() >= kPairingHosts && pairing_buckets.count(host) == 0) {
        auto oldest = std::min_element(pairing_buckets.begin(), pairing_buckets.end(), [](const auto& a, const auto& b) {
          return a.second.refilled_at < b.second.refilled_at;
        });
        pairing_buckets.erase(oldest);
      }
      PairingBucket& b = pairing_buckets[host];
      if (b.refilled_at == 0) b.refilled_at = t;
      b.tokens = std::min(kPairingChecksPerHost, b.tokens + (t - b.refilled_at) * kPairingChecksPerHost / 2);
      b.refilled_at = t;
      if (b.tokens < 1) return;
      b.tokens -= 1;
    }
    auto who = crypto::ServerSession::IdentifyUnpinned(identity, replay.window_s(), hello, now);
    if (!who.ok()) return;
    PullParams params;
    if (!params.ParseFromString(who->request)) return;
    PendingPeer p;
    p.public_key = who->sender_pk;
    p.key_fingerprint = crypto::KeyFingerprint(p.public_key);
    p.name = SanitisedName(params.sender_name());
    p.hello_timestamp = who->timestamp;
    p.dials_in = params.dial_out();
    if (!host.empty() && !p.dials_in && params.listen_port() > 0 && params.listen_port() < 65536) {
      p.address = host + ":" + std::to_string(params.listen_port());
    }
    p.same_model = params.fingerprint() == options.fingerprint;
    std::lock_guard<std::mutex> lock(mu);
    auto it = std::find_if(pending_peers.begin(), pending_peers.end(),
                           [&](const PendingPeer& q) { return q.public_key == p.public_key; });
    if (it != pending_peers.end()) {
      // A Hello no newer than the last one is a copy (IdentifyUnpinned keeps no
      // replay cache): it may not move the peer to the copier's address.
      if (p.hello_timestamp <= it->hello_timestamp) {
        p.address = it->address;
        p.hello_timestamp = it->hello_timestamp;
      }
      p.first_seen_unix = it->first_seen_unix;
      p.requests = it->requests;
      pending_peers.erase(it);
    } else {
      p.first_seen_unix = now;
      const double t = Clock::Real()->MonotonicSeconds();
      if (t - pairing_logged_at >= 1) {
        pairing_logged_at = t;
        Logger("peer")->info("pending peer '{}' ({}) at {} asks to pair: `mycel peers accept {}` pins it", p.name,
                             p.key_fingerprint, p.address.empty() ? "an address it does not give" : p.address,
                             p.key_fingerprint);
      }
    }
    p.last_seen_unix = now;
    p.requests++;
    pending_peers.insert(pending_peers.begin(), std::move(p));
    if (pending_peers.size() > kMaxPendingPeers) pending_peers.pop_back();
  }

  // What one pull brought in (or one hand-over, ours or a neighbour's).
  // Booked together with its outcome under one lock (BookPull), so a status
  // snapshot never shows half a pull.
  struct Pulled {
    int64_t bytes = 0;   // received
    int64_t sent = 0;    // our hand-over, if any
    bool keyframe = false;
    int64_t deltas = 0;
  };

  // ---- server ----
  grpc::Status Pull(grpc::ServerContext* ctx, const PullRequest* req, grpc::ServerWriter<PullChunk>* writer) override {
    return Serve(ctx, req->hello(), [writer](const PullChunk& c) { return writer->Write(c); }, nullptr);
  }

  grpc::Status Exchange(grpc::ServerContext* ctx, grpc::ServerReaderWriter<PullChunk, ExchangeUp>* stream) override {
    // Until its Hello the caller is nobody: few such calls at once, each
    // cancelled if the Hello is not in within hello_timeout_s; then the whole
    // call within max_exchange_s, whatever deadline the caller set.
    if (awaiting_hello.fetch_add(1) >= kMaxAwaitingHello) {
      awaiting_hello.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "busy: too many calls waiting for their hello");
    }
    CallWatch::Guard watch(watchdog, ctx, options.hello_timeout_s);
    ExchangeUp first;
    const bool got = stream->Read(&first);
    awaiting_hello.fetch_sub(1);
    if (!got) {
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(-1, Refusal::kTooSlow, "an Exchange sent no hello within " + std::to_string(options.hello_timeout_s) + " s");
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "too_slow: no hello");
    }
    watch.Extend(options.max_exchange_s);
    return Serve(ctx, first.hello(), [stream](const PullChunk& c) { return stream->Write(c); },
                 [stream](ExchangeUp* up) { return stream->Read(up); });
  }

  // Answers one Hello, writing with `write`. `read_up` (an Exchange's) reads
  // the caller's hand-over when we asked for one; null for a Pull.
  grpc::Status Serve(grpc::ServerContext* ctx, const std::string& hello,
                     const std::function<bool(const PullChunk&)>& write,
                     const std::function<bool(ExchangeUp*)>& read_up) {
    int64_t now = Clock::Real()->UnixSeconds();
    const std::shared_ptr<const Roster> pinned = PinnedRoster();
    auto session = crypto::ServerSession::Accept(identity, pinned->pinned, replay, hello, now);
    if (!session.ok()) {
      const Refusal reason = RefusalOf(session.status());
      if (reason == Refusal::kUnpinnedKey) NotePending(ctx->peer(), hello, now);
      // A refused Hello is not authenticated: attribute it to a pinned peer
      // only for the record; it never changes that peer's state.
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(-1, reason, std::string(session.status().message()));
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(RefusalName(reason)) + ": request refused");
    }
    // Booked by key: the roster may change while we answer.
    const std::string sender = (*session)->hello().sender_pk;
    PullParams params;
    if (!params.ParseFromString((*session)->hello().request)) {
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(PeerIndexLocked(sender), Refusal::kMalformed, "pull parameters do not parse");
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed: pull parameters do not parse");
    }
    if (params.fingerprint() != options.fingerprint) {
      std::lock_guard<std::mutex> lock(mu);
      CountRefusal(PeerIndexLocked(sender), Refusal::kFingerprintMismatch,
                   "their model " + params.fingerprint() + " is not ours " + options.fingerprint +
                       LayoutDifference(options.layout, params.layout()));
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "fingerprint_mismatch: your model " + params.fingerprint() + " is not mine " +
                              options.fingerprint + LayoutDifference(options.layout, params.layout(), true));
    }
    // The deltas stay shared with the log; the payload is sealed from them in place.
    federation::SharedPullAnswer shared = fed.AnswerShared(params.epoch(), params.after_seq());
    PayloadPieces payload(shared);
    PullHeader header = MakeHeader(shared, payload);
    // A neighbour we cannot call hands its own deltas over on this call, from
    // where our mirror of it stands; one hand-over per neighbour at a time,
    // so a hostile one holds one server thread at most (for max_exchange_s).
    if (read_up) {
      std::lock_guard<std::mutex> lock(mu);
      const int j = PeerIndexLocked(sender);
      if (j >= 0 && roster->peers[j].dials_in && handing_over.insert(sender).second) {
        auto [epoch, after] = fed.Cursor(j);
        header.set_hand_over(true);
        header.set_want_epoch(epoch);
        header.set_want_after_seq(after);
      }
    }
    // Whatever happens below, the neighbour may hand over again afterwards.
    struct HandOverSlot {
      Impl* impl;
      const std::string* sender;
      bool held;
      ~HandOverSlot() {
        if (!held) return;
        std::lock_guard<std::mutex> lock(impl->mu);
        impl->handing_over.erase(*sender);
      }
    } slot{this, &sender, header.hand_over()};
    auto reply = (*session)->Reply(header.SerializeAsString());
    if (!reply.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(reply.status().message()));
    int64_t sent = 0;
    PullChunk first;
    first.set_reply(*reply);
    sent += first.ByteSizeLong();
    if (!write(first)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    PullChunk chunk;  // reused: its sealed buffer is allocated once
    const bool delivered = SealPayload(payload, SealDown(**session), chunk.mutable_sealed(), [&] {
      sent += chunk.ByteSizeLong();
      return write(chunk);
    });
    if (!delivered) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    {
      std::lock_guard<std::mutex> lock(mu);
      totals.bytes_sent += sent;
      if (int peer = PeerIndexLocked(sender); peer >= 0) {
        status[peer].bytes_sent += sent;
        status[peer].served++;
        // Our clock minus theirs when they sent the Hello (plus the trip): `mycel doctor`.
        status[peer].clock_skew_s = static_cast<double>(now - (*session)->hello().timestamp);
        status[peer].clock_skew_known = true;
      }
    }
    if (!header.hand_over()) return grpc::Status::OK;
    Pulled got;
    absl::Status s = ReceiveHandOver(ctx, **session, read_up, sender, &got);
    std::lock_guard<std::mutex> lock(mu);
    totals.bytes_received += got.bytes;
    const int j = PeerIndexLocked(sender);
    if (j < 0) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unpinned_key: you were dropped meanwhile");
    BookPull(j, got, s);
    if (s.ok()) return grpc::Status::OK;
    // The reason word first, as every refusal: the neighbour counts it.
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
  }

  // The header of an answer, served (down) or handed over (up).
  PullHeader MakeHeader(const federation::SharedPullAnswer& shared, const PayloadPieces& payload) const {
    const federation::PullAnswer& answer = shared.answer;
    PullHeader header;
    header.set_epoch(answer.epoch);
    header.set_from_seq(answer.from_seq);
    header.set_to_seq(answer.to_seq);
    header.set_keyframe(answer.keyframe);
    header.set_codec(answer.codec);
    header.set_fingerprint(options.fingerprint);
    header.set_layout(options.layout);
    header.set_samples_trained(answer.samples_trained);
    header.set_degree(answer.degree);
    header.set_count(static_cast<uint32_t>(shared.deltas.size()));
    header.set_payload_bytes(payload.size());
    header.set_parameters(fed.size());
    return header;
  }

  // A header's claims, checked before anything is allocated for them: same
  // model, same size, a payload within bounds.
  absl::Status CheckHeader(const PullHeader& header) const {
    if (header.fingerprint() != options.fingerprint) {
      return Refuse(Refusal::kFingerprintMismatch, "their model " + header.fingerprint() + " is not ours" +
                                                LayoutDifference(options.layout, header.layout()));
    }
    if (header.parameters() != fed.size()) {
      return Refuse(Refusal::kBadShape, std::to_string(header.parameters()) + " parameters, expected " +
                                     std::to_string(fed.size()));
    }
    return CheckPayloadBounds(header.keyframe(), header.count(), header.payload_bytes(), fed.size(),
                              static_cast<uint64_t>(options.max_answer_bytes));
  }

  // Books one pull's outcome for neighbour j (ours of it, or its hand-over
  // to us): counters, state, backoff. Caller holds mu.
  void BookPull(int j, const Pulled& pulled, const absl::Status& s) {
    PeerStatus& ps = status[j];
    ps.bytes_received += pulled.bytes;
    ps.bytes_sent += pulled.sent;
    if (s.ok()) {
      if (pulled.keyframe) ps.keyframes_accepted++;
      ps.deltas_accepted += pulled.deltas;
      if (ps.state != "connected") Logger("peer")->info("{} ({}) connected", ps.name, Where(ps));
      ps.state = "connected";
      ps.last_error.clear();
      ps.last_success_unix = Clock::Real()->UnixSeconds();
      last_exchange[j] = WallSeconds();
      ps.pulls_ok++;
      failures[j] = 0;
      next_try[j] = 0;
      cv.notify_all();  // a round may be waiting for this hand-over
      return;
    }
    ps.pulls_failed++;
    failures[j]++;
    ps.last_error = std::string(s.message());
    if (absl::IsUnavailable(s)) {
      if (ps.state != "unreachable") Logger("peer")->info("{} ({}) unreachable: {}", ps.name, Where(ps), s.message());
      ps.state = "unreachable";
    } else {
      ps.state = "rejected";
      CountRefusal(j, RefusalOf(s), std::string(s.message()));
    }
    // Exponential backoff from one round interval up to max_backoff_s.
    double backoff = std::min(options.federation.max_backoff_s,
                              options.federation.round_interval_s * std::pow(2.0, std::min(failures[j], 20)));
    next_try[j] = Clock::Real()->MonotonicSeconds() + backoff;
  }

  // A neighbour's hand-over on its Exchange (we asked in our header):
  // the client→server stream, verified like a pulled answer (header bounds,
  // rate, FINAL, nothing after it) and applied to our mirror of it.
  absl::Status ReceiveHandOver(grpc::ServerContext* ctx, crypto::ServerSession& session,
                               const std::function<bool(ExchangeUp*)>& read, const std::string& sender,
                               Pulled* got) {
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
    if (final || !header.ParseFromString(header_bytes)) return Refuse(Refusal::kMalformed, "hand-over header does not parse");
    MYCEL_RETURN_IF_ERROR(CheckHeader(header));
    std::string payload;  // bounded by CheckHeader; grows with what arrives
    payload.reserve(std::min<uint64_t>(header.payload_bytes(), ReceiveBufferKeepBytes(fed.size())));
    const OpenFn open = OpenUp(session);
    while (!final && read(&up)) {
      got->bytes += up.ByteSizeLong();
      const double elapsed = Clock::Real()->MonotonicSeconds() - began;
      if (elapsed > options.min_transfer_grace_s &&
          static_cast<double>(got->bytes) < options.min_transfer_bytes_per_s * elapsed) {
        return Refuse(Refusal::kTooSlow, "hand-over below the least transfer rate: " + std::to_string(got->bytes) +
                                      " bytes in " + std::to_string(elapsed) + " s");
      }
      MYCEL_RETURN_IF_ERROR(OpenChunk(open, up.sealed(), header.payload_bytes(), &payload, &final));
    }
    if (!final) return ended("the hand-over ended before its final chunk");
    if (read(&up)) return Refuse(Refusal::kTrailingData, "hand-over chunks after the final one");
    if (payload.size() != header.payload_bytes()) return Refuse(Refusal::kTruncated, "hand-over shorter than its header says");
    federation::PullAnswerView answer = AnswerView(header);
    MYCEL_RETURN_IF_ERROR(DecodePayload(payload, header.keyframe(), header.count(), &answer));
    std::lock_guard<std::mutex> lock(mu);  // the roster's indices hold still while we apply
    const int j = PeerIndexLocked(sender);
    if (j < 0) return Refuse(Refusal::kUnpinnedKey, "dropped from the peer list during its hand-over");
    MYCEL_RETURN_IF_ERROR(fed.Apply(j, answer));
    got->keyframe = answer.keyframe;
    got->deltas = answer.keyframe ? 0 : static_cast<int64_t>(answer.deltas.size());
    return absl::OkStatus();
  }

  static federation::PullAnswerView AnswerView(const PullHeader& header) {
    federation::PullAnswerView answer;
    answer.epoch = header.epoch();
    answer.from_seq = header.from_seq();
    answer.to_seq = header.to_seq();
    answer.keyframe = header.keyframe();
    answer.codec = header.codec();
    answer.samples_trained = header.samples_trained();
    answer.degree = header.degree();
    return answer;
  }

  // ---- client ----
  // Pulls from neighbour j and applies the answer to its mirror. A dial-out
  // node calls Exchange instead of Pull and, when the neighbour asks in its
  // header, hands its own deltas over on the same call.
  absl::Status PullFrom(const Roster& r, int j, Pulled* pulled) {
    const auto& peer = r.peers[j];
    auto [epoch, after] = fed.Cursor(j);
    PullParams params;
    params.set_epoch(epoch);
    params.set_after_seq(after);
    params.set_fingerprint(options.fingerprint);
    params.set_layout(options.layout);
    params.set_sender_name(options.node_name);
    params.set_dial_out(options.dial_out);
    {
      std::lock_guard<std::mutex> lock(mu);
      params.set_listen_port(static_cast<uint32_t>(totals.listen_port));
    }
    MYCEL_ASSIGN_OR_RETURN(auto session, crypto::ClientSession::Begin(identity, peer.public_key,
                                                                      params.SerializeAsString(),
                                                                      Clock::Real()->UnixSeconds()));
    grpc::ClientContext ctx;
    const double began = Clock::Real()->MonotonicSeconds();
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(options.federation.pull_timeout_s * 1000)));
    if (!options.dial_out) {
      PullRequest req;
      req.set_hello(session->hello());
      auto reader = r.stubs[j]->Pull(&ctx, req);
      return Receive(ctx, *session, began, j, pulled, [&](PullChunk* c) { return reader->Read(c); },
                     [&] { return reader->Finish(); }, nullptr);
    }
    auto call = r.stubs[j]->Exchange(&ctx);
    ExchangeUp up;
    up.set_hello(session->hello());
    call->Write(up);  // a failure shows in the first Read
    return Receive(ctx, *session, began, j, pulled, [&](PullChunk* c) { return call->Read(c); },
                   [&] { return call->Finish(); },
                   [&](const PullHeader& asked) { return HandOver(asked, *session, call.get(), pulled); });
  }

  // Our deltas after (asked.want_epoch, asked.want_after_seq), sealed up the
  // Exchange, then our half of the call closed. False if the neighbour went away.
  bool HandOver(const PullHeader& asked, crypto::ClientSession& session,
                grpc::ClientReaderWriter<ExchangeUp, PullChunk>* call, Pulled* pulled) {
    federation::SharedPullAnswer shared = fed.AnswerShared(asked.want_epoch(), asked.want_after_seq());
    PayloadPieces payload(shared);
    auto stream = session.StartUpstream();
    if (!stream.ok()) return false;
    ExchangeUp up;
    up.set_stream(*stream);
    session.SealUpTo(MakeHeader(shared, payload).SerializeAsString(), /*final=*/false, up.mutable_sealed());
    pulled->sent += up.ByteSizeLong();
    if (!call->Write(up)) return false;
    up.clear_stream();
    const bool delivered = SealPayload(payload, SealUp(session), up.mutable_sealed(), [&] {
      pulled->sent += up.ByteSizeLong();
      return call->Write(up);
    }, kUpChunkBytes);
    return call->WritesDone() && delivered;
  }

  // Reads an answer (`read` and `finish` over the call), checks and applies
  // it. `hand_over` (Exchange only) runs after the answer's FINAL chunk when
  // the header asks for our deltas; the call's status then says whether the
  // neighbour took them.
  absl::Status Receive(grpc::ClientContext& ctx, crypto::ClientSession& session, double began, int j,
                       Pulled* pulled, const std::function<bool(PullChunk*)>& read,
                       const std::function<grpc::Status()>& finish,
                       const std::function<bool(const PullHeader&)>& hand_over) {
    PullChunk chunk;
    int64_t& received = pulled->bytes;
    auto fail = [&](absl::Status s) {
      ctx.TryCancel();
      finish();
      return s;
    };
    if (!read(&chunk)) {
      grpc::Status gs = finish();
      if (gs.error_code() == grpc::StatusCode::UNAVAILABLE || gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return absl::UnavailableError("unreachable: " + gs.error_message());
      }
      return NeighbourRefusal(gs.error_message() + ": refused by the neighbour");
    }
    received += chunk.ByteSizeLong();
    auto header_bytes = session.AcceptReply(chunk.reply());
    if (!header_bytes.ok()) return fail(header_bytes.status());
    PullHeader header;
    if (!header.ParseFromString(*header_bytes)) return fail(Refuse(Refusal::kMalformed, "reply header does not parse"));
    // Bound what we accept before allocating anything for it.
    if (auto s = CheckHeader(header); !s.ok()) return fail(s);
    // Every chunk is opened straight into this one buffer, reused across pulls.
    ReceiveBuffer::Use rx_use(rx, header.payload_bytes());
    std::string& payload = rx_use.payload();
    bool final = false;
    auto too_slow = [&](const char* what) {
      const double elapsed = Clock::Real()->MonotonicSeconds() - began;
      return Refuse(Refusal::kTooSlow, std::string(what) + ": " + std::to_string(received) + " bytes in " +
                                    std::to_string(elapsed) + " s");
    };
    const OpenFn open = OpenDown(session);
    while (!final && read(&chunk)) {
      received += chunk.ByteSizeLong();
      const double elapsed = Clock::Real()->MonotonicSeconds() - began;
      if (elapsed > options.min_transfer_grace_s &&
          static_cast<double>(received) < options.min_transfer_bytes_per_s * elapsed) {
        return fail(too_slow("below the least transfer rate"));
      }
      if (auto s = OpenChunk(open, chunk.sealed(), header.payload_bytes(), &payload, &final); !s.ok()) {
        return fail(s);
      }
    }
    if (!final) {
      // The stream ended before the FINAL chunk: the deadline, or the
      // neighbour gave up. finish() here is the only call's end.
      grpc::Status gs = finish();
      if (gs.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return too_slow("the answer did not finish within pull_timeout_s");
      }
      absl::Status s = session.Finish();  // "truncated", in the session's own words
      return s.ok() ? Refuse(Refusal::kTruncated, "the answer ended before its final chunk") : s;
    }
    // Our half, if asked, before the neighbour ends the call.
    const bool handed = hand_over && header.hand_over() && hand_over(header);
    // Nothing may follow the FINAL chunk: a neighbour that streams on would
    // hold the pull until its deadline and still count as a success.
    if (read(&chunk)) {
      received += chunk.ByteSizeLong();
      return fail(Refuse(Refusal::kTrailingData, "chunks after the final one"));
    }
    if (auto s = session.Finish(); !s.ok()) return fail(s);
    if (payload.size() != header.payload_bytes()) return fail(Refuse(Refusal::kTruncated, "payload shorter than its header says"));
    // Applied from views into the payload: nothing is copied out first.
    federation::PullAnswerView answer = AnswerView(header);
    // Before finish(): fail() finishes the call itself (finishing twice aborts in gRPC).
    if (auto s = DecodePayload(payload, header.keyframe(), header.count(), &answer); !s.ok()) return fail(s);
    // The stream has ended (the read above said so): the status is here.
    if (grpc::Status gs = finish(); !gs.ok()) {
      if (!header.hand_over()) return Refuse(Refusal::kTruncated, "the answer ended with " + gs.error_message());
      // The answer is whole; only our hand-over was refused. Take the answer
      // and say why they did not take ours.
      NoteHandOverRefused(j, handed ? gs.error_message() : "our hand-over did not reach them: " + gs.error_message());
    } else if (handed) {
      std::lock_guard<std::mutex> lock(mu);
      status[j].handed_over++;
    }
    MYCEL_RETURN_IF_ERROR(fed.Apply(j, answer));
    pulled->keyframe = answer.keyframe;
    pulled->deltas = answer.keyframe ? 0 : static_cast<int64_t>(answer.deltas.size());
    return absl::OkStatus();
  }

  // The neighbour refused what we handed over (it counts why on its side).
  void NoteHandOverRefused(int j, const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    PeerStatus& ps = status[j];
    ps.hand_overs_refused++;
    ps.last_hand_over_error = why.substr(0, 300);
    if (logged.insert({ps.name, "hand_over"}).second) {
      Logger("peer")->warn("{} refused our deltas: {} (further ones counted in `mycel peers`)", ps.name, why);
    }
  }

  void OpenLocalSteps() {
    // The drift correction rides along: the trainer spreads it over the
    // round's local steps (Trainer::WithSharedParameters).
    absl::Status s = with_shared(nullptr, /*opens_round=*/true, fed.correction());
    if (!s.ok()) Logger("peer")->error("opening local steps failed: {}", s.message());
  }

  void Publish() {
    absl::Status s = with_shared(
        [this](std::vector<float>& x, int64_t samples, double) {
          fed.Publish(x.data(), samples);
          return false;  // publishing reads x, never changes it
        },
        /*opens_round=*/false, {});
    if (!s.ok()) Logger("peer")->error("publish failed: {}", s.message());
  }

  void PullAndMerge(double round_start) {
    const double now = Clock::Real()->MonotonicSeconds();
    for (size_t j = 0; j < roster->peers.size(); ++j) {
      if (roster->peers[j].dials_in) continue;  // it hands over on its own calls
      {
        std::lock_guard<std::mutex> lock(mu);
        if (stop) return;
        if (now < next_try[j]) continue;
      }
      Pulled pulled;
      absl::Status s = PullFrom(*roster, static_cast<int>(j), &pulled);
      std::lock_guard<std::mutex> lock(mu);
      totals.bytes_received += pulled.bytes;
      totals.bytes_sent += pulled.sent;
      BookPull(static_cast<int>(j), pulled, s);
    }
    WaitForHandOvers(round_start);
    if (options.federation.trust && options.probe_losses) {
      int64_t round;
      {
        std::lock_guard<std::mutex> lock(mu);
        round = totals.rounds;
      }
      if (round % options.federation.trust_every == 0) ProbeTrust();
    }
    absl::Status merged = with_shared(
        [this](std::vector<float>& x, int64_t, double round_lr) {
          // The correction learns per unit of the learning rate this round's
          // steps summed to; the next round's steps multiply it back by theirs.
          fed.Merge(x.data(), round_lr);
          return true;
        },
        /*opens_round=*/false, {});
    std::lock_guard<std::mutex> lock(mu);
    if (!merged.ok()) {
      Logger("peer")->error("round {}: merge failed: {}", totals.rounds, merged.message());
      return;
    }
    totals.rounds++;
  }

  // Waits, before the merge, for this round's hand-over from each neighbour
  // that dials in and was heard within the last few rounds (it publishes at
  // T/4 and calls at T/2, as we pull), until 0.8·T at most: without it the
  // merge would race its call and take its deltas a round late.
  void WaitForHandOvers(double round_start) {
    const double period = options.federation.round_interval_s;
    const double published = round_start + period / 4, recent = round_start - 3 * period;
    auto until = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::duration<double>(round_start + 0.8 * period)));
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_until(lock, until, [&] {
      if (stop) return true;
      for (size_t j = 0; j < roster->peers.size(); ++j) {
        if (roster->peers[j].dials_in && last_exchange[j] > recent && last_exchange[j] < published) return false;
      }
      return true;
    });
  }

  // A trust probe between publish and merge: the local steps are closed, so
  // the weights copied here are the ones the merge will see.
  void ProbeTrust() {
    const double t0 = Clock::Real()->MonotonicSeconds();
    std::vector<float> x;
    absl::Status copied = with_shared(
        [&x](std::vector<float>& shared, int64_t, double) {
          x = shared;
          return false;
        },
        /*opens_round=*/false, {});
    if (!copied.ok() || x.size() != fed.size()) return;
    const federation::TrustProbe probe = fed.Probe(x.data());
    if (probe.shares.empty()) return;
    absl::StatusOr<std::vector<double>> losses =
        options.probe_losses(probe.candidates(), [&probe](size_t i, float* out) { probe.Candidate(i, out); });
    if (!losses.ok()) {
      // No held-out examples yet is the usual reason: nothing to judge by.
      Logger("peer")->debug("trust probe skipped: {}", losses.status().message());
      return;
    }
    fed.Judge(probe, *losses);
    std::lock_guard<std::mutex> lock(mu);
    totals.trust_probes++;
    totals.trust_probe_seconds += Clock::Real()->MonotonicSeconds() - t0;
  }

  // Sleeps until wall-clock time `t` (seconds since the epoch); false if stopping.
  bool SleepUntil(double t) {
    auto when = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(t)));
    std::unique_lock<std::mutex> lock(mu);
    return !cv.wait_until(lock, when, [this] { return stop; });
  }

  void Loop() {
    const double period = options.federation.round_interval_s;
    int64_t last = -1;  // index of the last round begun (round k starts at k·period)
    for (;;) {
      // The next round: the one under way if its publish point is still
      // ahead (a round that ran a little long then costs nothing; joining
      // late only shortens the local steps), else the next boundary. A slow
      // round skips ahead rather than bursting, and says so in rounds_missed:
      // every missed round leaves the neighbours a stale mirror of us.
      const double now = WallSeconds();
      const auto current = static_cast<int64_t>(std::floor(now / period));
      const bool before_publish = now < (static_cast<double>(current) + 0.25) * period;
      const int64_t k = (current > last && before_publish) ? current : current + 1;
      if (last >= 0 && k > last + 1) {
        std::lock_guard<std::mutex> lock(mu);
        totals.rounds_missed += k - last - 1;
      }
      last = k;
      const double start = static_cast<double>(k) * period;
      if (!SleepUntil(start)) return;
      ApplyPendingRoster();
      if (roster->peers.empty()) continue;  // no neighbour: nothing to publish to or pull from
      if (options.hold_rounds && options.hold_rounds()) {
        std::lock_guard<std::mutex> lock(mu);
        totals.rounds_held++;
        continue;
      }
      OpenLocalSteps();
      if (!SleepUntil(start + period / 4)) return;
      Publish();
      if (!SleepUntil(start + period / 2)) return;
      PullAndMerge(start);
    }
  }
};

Gossip::Gossip(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Gossip::~Gossip() { Stop(); }

absl::StatusOr<std::unique_ptr<Gossip>> Gossip::Create(const GossipOptions& options,
                                                       const crypto::Identity& identity,
                                                       federation::Federation& federation,
                                                       SharedParametersFn with_shared) {
  GossipOptions o = options;
  if (o.layout.size() > kMaxLayoutBytes) o.layout.resize(kMaxLayoutBytes);
  auto impl = std::make_unique<Impl>(o, identity, federation, std::move(with_shared));
  impl->roster = MakeRoster(options.peers);
  federation.SetPeers(impl->roster->pinned);  // index = mirror index: names them in order
  for (const auto& p : options.peers) {
    impl->status.push_back(NewPeerStatus(p));
    impl->next_try.push_back(0);
    impl->failures.push_back(0);
    impl->last_exchange.push_back(0);
  }
  return std::unique_ptr<Gossip>(new Gossip(std::move(impl)));
}

absl::Status Gossip::Start() {
  Impl* impl = impl_.get();
  if (impl->started) return absl::OkStatus();
  if (!impl->options.listen.empty()) {
    grpc::ServerBuilder builder;
    // Transport encryption is our own (crypto::Session): the payload is sealed
    // end to end and every exchange is authenticated by pinned keys.
    // PeerListener, not AddListeningPort: gRPC 1.51's listener has no
    // connection cap and stops for good on EMFILE (peer/server_limits.h).
    const PeerServerLimits limits;
    MYCEL_ASSIGN_OR_RETURN(impl->listener, PeerListener::Bind(impl->options.listen, limits));
    const int port = impl->listener->port();
    builder.RegisterService(impl);
    builder.SetMaxReceiveMessageSize(kMaxRequestMessage);
    ApplyPeerServerLimits(limits, &builder);
    impl->server = builder.BuildAndStart();
    if (!impl->server || port == 0) {
      return absl::UnavailableError("cannot listen for peers on " + impl->options.listen);
    }
    impl->listener->Start(impl->server.get());
    std::lock_guard<std::mutex> lock(impl->mu);
    impl->totals.listen_port = port;
    Logger("peer")->info("peer service listening on {} (port {}), {} pinned neighbour(s)", impl->options.listen,
                         port, impl->options.peers.size());
  }
  impl->started = true;
  impl->loop = std::thread([impl] { impl->Loop(); });
  return absl::OkStatus();
}

void Gossip::SetPeers(const std::vector<config::PeerOptions>& peers) {
  std::shared_ptr<const Roster> next = MakeRoster(peers);  // channels are made here, not on the loop
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->pending = std::move(next);
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
  if (impl->listener) impl->listener->StopAccepting();  // no new connections while the server drains
  if (impl->server) {
    impl->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    impl->server->Wait();
  }
  if (impl->listener) impl->listener->Stop();  // then the relays of the calls that drained
}

std::vector<PendingPeer> Gossip::Pending() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->pending_peers;
}

std::vector<PeerStatus> Gossip::Peers() const {
  std::vector<PeerStatus> out;
  // Under mu (then the federation's lock, the order ApplyPendingRoster takes
  // too), so a reload between the two cannot pair one neighbour's counters
  // with another's mirror.
  std::lock_guard<std::mutex> lock(impl_->mu);
  out = impl_->status;
  double now = Clock::Real()->MonotonicSeconds();
  for (size_t j = 0; j < out.size(); ++j) out[j].next_retry_s = std::max(0.0, impl_->next_try[j] - now);
  const std::vector<std::string> layers = impl_->fed.group_names();
  for (size_t j = 0; j < out.size(); ++j) {
    auto m = impl_->fed.mirror_stats(static_cast<int>(j));
    out[j].trust.clear();
    for (size_t g = 0; g < m.trust.size() && g < layers.size(); ++g) {
      out[j].trust.push_back({layers[g], m.trust[g], g < m.harm.size() ? m.harm[g] : 0.0});
    }
    out[j].trust_probes = m.trust_probes;
    out[j].hurt_probes = m.hurt_probes;
    out[j].quarantine = m.quarantine;
    out[j].epoch = m.epoch;
    out[j].seq_applied = m.seq;
    out[j].samples_trained = m.samples_trained;
    out[j].merges = m.merged;
    out[j].clipped = m.clipped;
    out[j].last_distance = m.last_distance;
    out[j].last_radius = m.last_radius;
    // Updates the federation refused after decryption (shape, norm, ...).
    if (m.refused > 0 && !m.last_refusal.empty() && out[j].last_error.empty()) out[j].last_error = m.last_refusal;
  }
  return out;
}

GossipTotals Gossip::Totals() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  GossipTotals t = impl_->totals;
  if (impl_->listener) {
    t.connections_shed = impl_->listener->shed();
    t.connections_screened = impl_->listener->screened();
  }
  return t;
}

}  // namespace mycel::peer
