// Peer module tests: the Gossip server and round loop over the real gRPC wire
// (127.0.0.1, ports chosen by binding port 0), real libsodium sessions and
// real Federation objects.
//
// Server side: a Gossip node B answers pulls that the tests craft by hand
// with a raw Peer::Stub and crypto::ClientSession, as a real or a hostile
// client would; every refusal goes through the real handler.
// Client side: the real round loop of a node A pulls from an EVIL server
// implemented here, which runs the session protocol correctly but sends
// crafted content.
#include "peer/gossip.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "crypto/identity.h"
#include "crypto/session.h"
#include "federation/codec.h"
#include "federation/federation.h"
#include "federation/shared_weights.h"
#include "peer.grpc.pb.h"
#include "peer/payload.h"

namespace mycel::peer {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr size_t kSize = 1000;
constexpr char kFingerprint[] = "test-model-fp-0001";

// Hello wire offsets (see src/crypto/session.cc).
constexpr size_t kHVersion = 8;
constexpr size_t kHSender = 12;
constexpr size_t kHRecipient = 44;
constexpr size_t kHTimestamp = 76;
constexpr size_t kHNonce = 84;
constexpr size_t kHEph = 100;
constexpr size_t kHReqLen = 132;
constexpr size_t kHRequest = 136;
constexpr size_t kSigLen = 64;

int64_t Now() { return Clock::Real()->UnixSeconds(); }

std::unique_ptr<crypto::Identity> NewIdentity() {
  auto id = crypto::Identity::Generate();
  EXPECT_TRUE(id.ok()) << id.status();
  return std::move(id).value();
}

// A port nobody listens on: bound to pick a free one, then released.
std::string DeadAddress() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

template <class Pred>
bool WaitFor(Pred pred, double timeout_s = 10) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// Values are multiples of 1/128 below 4 in magnitude (with dyadic arguments),
// so x − x̂ and x̂ + (x − x̂) are exact in fp32 and a published public copy
// equals x bit for bit.
std::vector<float> Ramp(float base, float step) {
  std::vector<float> v(kSize);
  for (size_t i = 0; i < kSize; ++i) v[i] = base + step * static_cast<float>(i % 97);
  return v;
}

bool AllFinite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}

std::vector<float> FloatsOf(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

std::string BytesOf(const std::vector<float>& v) {
  std::string s(v.size() * sizeof(float), '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The trainer's shared parameters as the gossip reaches them
// (federation::SharedWeights): one vector, no model and no local steps.
// Before each call, `before_call` (if set) runs with the call's opens_round.
struct Shared : federation::SharedWeights {
  std::mutex mu;
  std::vector<float> x;
  int64_t samples = 0;
  int64_t calls = 0;
  std::function<void(bool opens_round)> before_call;

  int64_t shared_size() const override { return static_cast<int64_t>(x.size()); }
  std::vector<std::pair<std::string, size_t>> shared_layers() const override { return {{"all", x.size()}}; }
  absl::Status WithSharedParameters(Visit fn, bool opens_round, std::vector<float> drift) override {
    if (before_call) before_call(opens_round);
    std::lock_guard<std::mutex> lock(mu);
    // No local steps here and a learning rate of 1: a round's drift lands in
    // full when it opens.
    for (size_t k = 0; k < drift.size() && k < x.size(); ++k) x[k] += drift[k];
    if (fn) {
      std::vector<float> copy = x;
      if (fn(copy, samples, 1.0)) x = copy;
    }
    if (opens_round) ++calls;
    return absl::OkStatus();
  }
  // Nothing is held out here, as in a trainer before its first examples.
  absl::StatusOr<std::vector<double>> ProbeLosses(int64_t, size_t,
                                                  const std::function<void(size_t, float*)>&) override {
    return absl::FailedPreconditionError("probe: no validation examples yet");
  }
  std::vector<float> Get() {
    std::lock_guard<std::mutex> lock(mu);
    return x;
  }
  int64_t Calls() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
};

GossipSchedule FastOptions() {
  GossipSchedule o;
  o.round_interval_s = 0.02;
  o.pull_timeout_s = 0.5;
  o.max_backoff_s = 1.0;
  return o;
}

Neighbour PeerAt(const std::string& name, const std::string& address, const crypto::Identity& id) {
  Neighbour p;
  p.name = name;
  p.address = address;
  p.public_key = id.public_key();
  return p;
}

// One node: identity, federation state, shared vector, gossip.
struct Node {
  std::unique_ptr<crypto::Identity> id;
  std::unique_ptr<federation::Federation> fed;
  Shared shared;
  std::unique_ptr<Gossip> gossip;

  ~Node() {
    if (gossip) gossip->Stop();
  }
  int port() const { return gossip->Totals().listen_port; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port()); }
  PeerStatus peer(int j) const { return gossip->Peers().at(static_cast<size_t>(j)); }
};

std::unique_ptr<Node> MakeNode(const std::string& name, std::unique_ptr<crypto::Identity> id,
                               const std::vector<float>& initial, const std::vector<float>& x0,
                               const std::string& listen, const std::vector<Neighbour>& peers,
                               federation::FederationOptions fopts = federation::PlainGossip(),
                               GossipSchedule gopts = FastOptions(), bool start = true,
                               const std::function<void(GossipOptions&)>& edit = nullptr) {
  auto node = std::make_unique<Node>();
  node->id = std::move(id);
  auto fed = federation::Federation::Create(fopts, initial, static_cast<int>(peers.size()),
                                            static_cast<int32_t>(peers.size()));
  EXPECT_TRUE(fed.ok()) << fed.status();
  node->fed = std::move(fed).value();
  node->shared.x = x0;
  GossipOptions o;
  o.node_name = name;
  o.listen = listen;
  o.fingerprint = kFingerprint;
  o.schedule = gopts;
  o.peers = peers;
  if (edit) edit(o);
  auto g = Gossip::Create(o, *node->id, *node->fed, node->shared);
  EXPECT_TRUE(g.ok()) << g.status();
  node->gossip = std::move(g).value();
  if (!start) return node;
  absl::Status st = node->gossip->Start();
  EXPECT_TRUE(st.ok()) << st;
  if (!listen.empty()) {
    EXPECT_GT(node->port(), 0);
  }
  return node;
}

std::string Params(uint64_t epoch, uint64_t after, const std::string& fp = kFingerprint) {
  PullParams p;
  p.set_epoch(epoch);
  p.set_after_seq(after);
  p.set_fingerprint(fp);
  p.set_sender_name("test-client");
  return p.SerializeAsString();
}

std::unique_ptr<crypto::ClientSession> Begin(const crypto::Identity& me, const std::string& server_pk,
                                             const std::string& request, int64_t now = Now()) {
  auto s = crypto::ClientSession::Begin(me, server_pk, request, now);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

struct PullResult {
  std::vector<PullChunk> chunks;
  grpc::Status status;
};

PullResult RawPull(Peer::Stub& stub, const std::string& hello) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  PullRequest req;
  req.set_hello(hello);
  auto reader = stub.Pull(&ctx, req);
  PullResult r;
  PullChunk c;
  while (reader->Read(&c)) r.chunks.push_back(c);
  r.status = reader->Finish();
  return r;
}

// Opens a server's answer as a client would; fails the test on any error.
struct Opened {
  PullHeader header;
  std::string payload;
};

Opened OpenAnswer(crypto::ClientSession& session, const PullResult& r) {
  Opened o;
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_GE(r.chunks.size(), 2u);
  if (r.chunks.size() < 2) return o;
  auto header = session.AcceptReply(r.chunks[0].reply());
  EXPECT_TRUE(header.ok()) << header.status();
  if (!header.ok()) return o;
  EXPECT_TRUE(o.header.ParseFromString(*header));
  bool final = false;
  for (size_t i = 1; i < r.chunks.size(); ++i) {
    EXPECT_FALSE(final) << "chunk after FINAL";
    EXPECT_TRUE(r.chunks[i].reply().empty());
    auto plain = session.Open(r.chunks[i].sealed(), &final);
    EXPECT_TRUE(plain.ok()) << plain.status();
    if (!plain.ok()) return o;
    o.payload += *plain;
  }
  EXPECT_TRUE(session.Finish().ok());
  EXPECT_EQ(o.payload.size(), o.header.payload_bytes());
  return o;
}

// =========================================================================
// Server side
// =========================================================================

class GossipServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = NewIdentity();
    intruder_ = NewIdentity();
    initial_ = Ramp(0.0f, 0.0078125f);
    x_b_ = Ramp(1.0f, -0.015625f);
    // B pins A; A itself does not run here (its address is dead), so B's own
    // pulls fail quietly and never touch B's public copy.
    b_ = MakeNode("B", NewIdentity(), initial_, x_b_, "127.0.0.1:0", {PeerAt("A", DeadAddress(), *a_)});
    // After B's first round its public copy is x_b_ (dense codec: lossless),
    // and it stays so since B's x never changes (no mirror to merge with).
    ASSERT_TRUE(WaitFor([&] { return b_->gossip->Totals().rounds >= 1; }));
    ASSERT_EQ(b_->fed->public_copy(), x_b_);
    stub_ = Peer::NewStub(grpc::CreateChannel(b_->address(), grpc::InsecureChannelCredentials()));
  }

  std::string BPk() const { return b_->id->public_key(); }
  std::string GoodHello() { return GoodHelloFrom(*a_); }
  std::string GoodHelloFrom(const crypto::Identity& id) { return Begin(id, BPk(), Params(0, 0))->hello(); }

  // A well-formed pull from A is served, and its keyframe is B's public copy.
  void ExpectGoodPull() {
    auto session = Begin(*a_, BPk(), Params(0, 0));
    PullResult r = RawPull(*stub_, session->hello());
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    Opened o = OpenAnswer(*session, r);
    EXPECT_TRUE(o.header.keyframe());
    EXPECT_EQ(FloatsOf(o.payload), b_->fed->public_copy());
  }

  // `hello` is refused with `code` and a message starting with `reason`:
  // nothing is sent, nothing in B changes, and B still serves afterwards.
  void ExpectRefused(const std::string& hello, grpc::StatusCode code, const std::string& reason,
                     bool counted_unknown = true) {
    const auto before_totals = b_->gossip->Totals();
    const auto before_a = b_->peer(0);
    PullResult r = RawPull(*stub_, hello);
    EXPECT_EQ(r.status.error_code(), code) << r.status.error_message();
    EXPECT_THAT(r.status.error_message(), StartsWith(reason + ":"));
    EXPECT_TRUE(r.chunks.empty()) << "a refused pull got " << r.chunks.size() << " chunk(s)";
    const auto after_totals = b_->gossip->Totals();
    EXPECT_EQ(after_totals.refused_unknown, before_totals.refused_unknown + (counted_unknown ? 1 : 0));
    EXPECT_EQ(after_totals.bytes_sent, before_totals.bytes_sent);
    const auto after_a = b_->peer(0);
    EXPECT_EQ(after_a.served, before_a.served);
    EXPECT_EQ(after_a.bytes_sent, before_a.bytes_sent);
    EXPECT_EQ(b_->fed->public_copy(), x_b_);
    EXPECT_EQ(b_->shared.Get(), x_b_);
    ExpectGoodPull();
  }

  std::unique_ptr<crypto::Identity> a_, intruder_;
  std::vector<float> initial_, x_b_;
  std::unique_ptr<Node> b_;
  std::unique_ptr<Peer::Stub> stub_;
};

TEST_F(GossipServerTest, WellFormedPullIsAnsweredWithAKeyframeThenDeltas) {
  const auto before = b_->peer(0);
  auto session = Begin(*a_, BPk(), Params(0, 0));
  PullResult r = RawPull(*stub_, session->hello());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_FALSE(r.chunks.empty());
  EXPECT_FALSE(r.chunks[0].reply().empty());
  EXPECT_TRUE(r.chunks[0].sealed().empty());
  Opened o = OpenAnswer(*session, r);
  const PullHeader& h = o.header;
  EXPECT_TRUE(h.keyframe());
  EXPECT_EQ(h.fingerprint(), kFingerprint);
  EXPECT_EQ(h.parameters(), kSize);
  EXPECT_EQ(h.payload_bytes(), kSize * sizeof(float));
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.epoch(), b_->fed->epoch());
  EXPECT_NE(h.epoch(), 0u);
  EXPECT_GE(h.to_seq(), 1u);
  EXPECT_LE(h.to_seq(), b_->fed->seq());
  EXPECT_EQ(h.degree(), 1);
  EXPECT_EQ(FloatsOf(o.payload), x_b_);
  EXPECT_EQ(FloatsOf(o.payload), b_->fed->public_copy());

  // Served and counted for A.
  ASSERT_TRUE(WaitFor([&] { return b_->peer(0).served == before.served + 1; }));
  EXPECT_GT(b_->peer(0).bytes_sent, before.bytes_sent);
  EXPECT_GT(b_->gossip->Totals().bytes_sent, 0);

  // The answer applies to a real mirror; the next pull from (epoch, to_seq)
  // gets deltas that also apply and keep the mirror equal to B's public copy.
  auto mirror_fed = federation::Federation::Create({}, initial_, 1, 1);
  ASSERT_TRUE(mirror_fed.ok());
  federation::PullAnswer kf;
  kf.epoch = h.epoch();
  kf.to_seq = h.to_seq();
  kf.keyframe = true;
  kf.codec = h.codec();
  kf.degree = h.degree();
  kf.public_copy = FloatsOf(o.payload);
  ASSERT_TRUE((*mirror_fed)->Apply(0, kf).ok());

  // B publishes every 0.02 s. On a slow machine (a sanitizer build) several
  // rounds may pass before the next pull, and B then rightly answers with a
  // keyframe, since the dense deltas would outweigh it: apply it, move the
  // cursor, and pull again. Deltas must come within a few tries.
  uint64_t cursor = h.to_seq();
  std::unique_ptr<crypto::ClientSession> s2;
  Opened o2;
  for (int attempt = 0; attempt < 20; ++attempt) {
    ASSERT_TRUE(WaitFor([&] { return b_->fed->seq() > cursor; }));  // B published since
    s2 = Begin(*a_, BPk(), Params(h.epoch(), cursor));
    PullResult r2 = RawPull(*stub_, s2->hello());
    ASSERT_TRUE(r2.status.ok()) << r2.status.error_message();
    o2 = OpenAnswer(*s2, r2);
    if (!o2.header.keyframe()) break;
    federation::PullAnswer again = kf;
    again.to_seq = o2.header.to_seq();
    again.public_copy = FloatsOf(o2.payload);
    ASSERT_TRUE((*mirror_fed)->Apply(0, again).ok());
    cursor = o2.header.to_seq();
  }
  ASSERT_FALSE(o2.header.keyframe()) << "20 pulls in a row were answered with keyframes";
  EXPECT_EQ(o2.header.from_seq(), cursor);
  ASSERT_GE(o2.header.count(), 1u);
  EXPECT_EQ(o2.header.to_seq() - o2.header.from_seq(), o2.header.count());
  federation::PullAnswer deltas;
  deltas.epoch = o2.header.epoch();
  deltas.from_seq = o2.header.from_seq();
  deltas.to_seq = o2.header.to_seq();
  deltas.codec = o2.header.codec();
  deltas.degree = o2.header.degree();
  std::string_view in(o2.payload);
  for (uint32_t i = 0; i < o2.header.count(); ++i) {
    ASSERT_GE(in.size(), 8u);
    uint64_t len = 0;
    for (int k = 0; k < 8; ++k) len |= static_cast<uint64_t>(static_cast<unsigned char>(in[k])) << (8 * k);
    in.remove_prefix(8);
    ASSERT_LE(len, in.size());
    deltas.deltas.emplace_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  EXPECT_TRUE(in.empty());
  absl::Status applied = (*mirror_fed)->Apply(0, deltas);
  ASSERT_TRUE(applied.ok()) << applied;
  EXPECT_EQ((*mirror_fed)->mirror(0), b_->fed->public_copy());
}

TEST_F(GossipServerTest, UnpinnedKeyIsRefusedAndNothingIsSent) {
  auto session = Begin(*intruder_, BPk(), Params(0, 0));
  ExpectRefused(session->hello(), grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  // Not attributed to the pinned neighbour.
  EXPECT_EQ(b_->peer(0).refused, 0);
  EXPECT_TRUE(b_->peer(0).refusals.empty());
}

// Pairing, attacked: strangers are listed as pending only with a genuine
// Hello, at most kMaxPendingPeers of them (the least recently seen goes),
// and a flood of them is checked at a bounded rate. None is ever answered.
TEST_F(GossipServerTest, StrangersArePendingOnlyWhenGenuineBoundedInNumberAndNeverServed) {
  // One stranger: listed with its name, key and fingerprint; refused all the same.
  PullParams named;
  named.set_fingerprint(kFingerprint);
  named.set_sender_name("new laptop\n<b>");  // what a hostile name turns into
  ExpectRefused(Begin(*intruder_, BPk(), named.SerializeAsString())->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "unpinned_key");
  auto pending = b_->gossip->Pending();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].public_key, intruder_->public_key());
  EXPECT_EQ(pending[0].key_fingerprint, intruder_->Fingerprint());
  EXPECT_EQ(pending[0].name, "new_laptop__b_");
  EXPECT_TRUE(pending[0].same_model);
  EXPECT_EQ(pending[0].address, "");  // it said it does not listen (port 0)

  // A forged Hello naming someone else's key is not listed.
  auto other = NewIdentity();
  std::string forged = Begin(*intruder_, BPk(), Params(0, 0))->hello();
  forged.replace(kHSender, 32, other->public_key());
  ExpectRefused(forged, grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  for (const auto& p : b_->gossip->Pending()) EXPECT_NE(p.public_key, other->public_key());

  // Twenty-four strangers from one host, paced under its check rate (5/s):
  // the newest sixteen stay.
  std::vector<std::unique_ptr<crypto::Identity>> strangers;
  for (int i = 0; i < 24; ++i) {
    strangers.push_back(NewIdentity());
    PullResult r = RawPull(*stub_, Begin(*strangers.back(), BPk(), Params(0, 0))->hello());
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_TRUE(r.chunks.empty());
    std::this_thread::sleep_for(std::chrono::milliseconds(210));
  }
  pending = b_->gossip->Pending();
  ASSERT_EQ(pending.size(), kMaxPendingPeers);
  EXPECT_EQ(pending[0].public_key, strangers.back()->public_key());  // most recently seen first

  // A burst far above the rate: most go unchecked, counted as refusals all the same.
  const int64_t before = b_->gossip->Totals().refused_unknown;
  for (int i = 0; i < 200; ++i) {
    auto s = NewIdentity();
    (void)RawPull(*stub_, Begin(*s, BPk(), Params(0, 0))->hello());
  }
  EXPECT_EQ(b_->gossip->Totals().refused_unknown, before + 200);
  EXPECT_LE(b_->gossip->Pending().size(), kMaxPendingPeers);
  ExpectGoodPull();  // the pinned neighbour is served throughout
}

// What LAN discovery hands Gossip for a node announced at `address`.
PendingPeer Announced(const crypto::Identity& id, const std::string& address) {
  PendingPeer p;
  p.name = "lan";
  p.public_key = id.public_key();
  p.key_fingerprint = id.Fingerprint();
  p.address = address;
  return p;
}

TEST_F(GossipServerTest, DiscoveredNodesArePendingButNeverPinnedNeverPushOutACallerAndLeaveWhenGone) {
  auto announced = Announced;
  // A pinned key is not listed, whatever the LAN says of it.
  b_->gossip->NoteDiscovered(announced(*a_, "10.0.0.1:7000"), Now());
  EXPECT_TRUE(b_->gossip->Pending().empty());

  // A caller first, then a LAN full of announcements: the caller stays.
  ExpectRefused(GoodHelloFrom(*intruder_), grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  std::vector<std::unique_ptr<crypto::Identity>> lan;
  for (size_t i = 0; i < kMaxPendingPeers + 4; ++i) {
    lan.push_back(NewIdentity());
    b_->gossip->NoteDiscovered(announced(*lan.back(), "10.0.0." + std::to_string(i + 2) + ":7000"), Now());
  }
  auto pending = b_->gossip->Pending();
  ASSERT_EQ(pending.size(), kMaxPendingPeers);
  EXPECT_EQ(pending[0].public_key, lan.back()->public_key());
  EXPECT_TRUE(pending[0].discovered);
  EXPECT_EQ(pending[0].requests, 0);
  EXPECT_EQ(pending[0].address, "10.0.0." + std::to_string(kMaxPendingPeers + 5) + ":7000");
  auto caller = std::find_if(pending.begin(), pending.end(),
                             [&](const PendingPeer& p) { return p.public_key == intruder_->public_key(); });
  ASSERT_NE(caller, pending.end()) << "an announcement pushed out a caller";
  EXPECT_FALSE(caller->discovered);

  // The caller announced too: marked so; what it said in its signed Hello stays.
  b_->gossip->NoteDiscovered(announced(*intruder_, "10.9.9.9:1"), Now());
  for (const auto& p : b_->gossip->Pending()) {
    if (p.public_key != intruder_->public_key()) continue;
    EXPECT_TRUE(p.discovered);
    EXPECT_EQ(p.requests, 1);
    EXPECT_EQ(p.name, "test-client");
  }
  // Announcements withdrawn: one that never called leaves, the caller stays.
  b_->gossip->ForgetDiscovered(lan.back()->public_key());
  b_->gossip->ForgetDiscovered(intruder_->public_key());
  pending = b_->gossip->Pending();
  EXPECT_EQ(pending.size(), kMaxPendingPeers - 1);
  for (const auto& p : pending) {
    EXPECT_NE(p.public_key, lan.back()->public_key());
    if (p.public_key == intruder_->public_key()) {
      EXPECT_FALSE(p.discovered);
    }
  }
}

// The other way round: a caller arriving at a full list takes the oldest
// announcement's place, never an older caller's; and a caller whose Hello
// gives no address keeps the one its announcement gave.
TEST_F(GossipServerTest, ACallerPushesOutAnAnnouncementAndKeepsItsLanAddress) {
  ExpectRefused(GoodHelloFrom(*intruder_), grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  std::vector<std::unique_ptr<crypto::Identity>> lan;
  for (size_t i = 0; i + 1 < kMaxPendingPeers; ++i) {
    lan.push_back(NewIdentity());
    b_->gossip->NoteDiscovered(Announced(*lan.back(), "10.0.0." + std::to_string(i + 2) + ":7000"), Now());
  }
  ASSERT_EQ(b_->gossip->Pending().size(), kMaxPendingPeers);
  // The newest announcement calls, with a Hello that names no listen port.
  ExpectRefused(GoodHelloFrom(*lan.back()), grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  auto pending = b_->gossip->Pending();
  ASSERT_EQ(pending.size(), kMaxPendingPeers);
  EXPECT_EQ(pending[0].public_key, lan.back()->public_key());
  EXPECT_EQ(pending[0].requests, 1);
  EXPECT_TRUE(pending[0].discovered);
  EXPECT_EQ(pending[0].address, "10.0.0." + std::to_string(kMaxPendingPeers) + ":7000");

  // A stranger calls into the full list: the oldest announcement goes, and
  // the first caller, the least recently seen of all, stays.
  auto stranger = NewIdentity();
  ExpectRefused(GoodHelloFrom(*stranger), grpc::StatusCode::PERMISSION_DENIED, "unpinned_key");
  pending = b_->gossip->Pending();
  ASSERT_EQ(pending.size(), kMaxPendingPeers);
  EXPECT_EQ(pending[0].public_key, stranger->public_key());
  EXPECT_EQ(pending.back().public_key, intruder_->public_key()) << "a caller was pushed out for an announcement";
  for (const auto& p : pending) EXPECT_NE(p.public_key, lan.front()->public_key()) << "the oldest announcement stayed";
}

TEST_F(GossipServerTest, FlippedHelloBytesAreRefusedWithTheRightReason) {
  struct Case {
    const char* field;
    std::function<size_t(const std::string&)> offset;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"magic", [](const std::string&) { return size_t{0}; }, "malformed"},
      {"version", [](const std::string&) { return kHVersion; }, "wrong_version"},
      {"sender", [](const std::string&) { return kHSender + 3; }, "unpinned_key"},
      {"recipient", [](const std::string&) { return kHRecipient + 5; }, "wrong_recipient"},
      {"timestamp", [](const std::string&) { return kHTimestamp; }, "bad_signature"},  // 1 s off: fresh
      {"nonce", [](const std::string&) { return kHNonce + 7; }, "bad_signature"},
      {"ephemeral key", [](const std::string&) { return kHEph + 1; }, "bad_signature"},
      {"request length", [](const std::string&) { return kHReqLen; }, "malformed"},
      {"request", [](const std::string&) { return kHRequest + 2; }, "bad_signature"},
      {"signature", [](const std::string& h) { return h.size() - kSigLen + 10; }, "bad_signature"},
      {"last byte", [](const std::string& h) { return h.size() - 1; }, "bad_signature"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    const std::string good = GoodHello();
    std::string bad = good;
    size_t off = c.offset(bad);
    ASSERT_LT(off, bad.size());
    bad[off] = static_cast<char>(bad[off] ^ 0x01);
    ExpectRefused(bad, grpc::StatusCode::PERMISSION_DENIED, c.reason);
    // A refused forgery must not burn the genuine hello's nonce.
    PullResult r = RawPull(*stub_, good);
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  }
  EXPECT_EQ(b_->peer(0).refused, 0);
}

TEST_F(GossipServerTest, StaleHelloIsRefused) {
  ExpectRefused(Begin(*a_, BPk(), Params(0, 0), Now() - 3600)->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "stale");
  ExpectRefused(Begin(*a_, BPk(), Params(0, 0), Now() + 3600)->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "stale");
  // Within the window, and not from before the server started, is fine.
  auto s = Begin(*a_, BPk(), Params(0, 0), Now() - 1);
  OpenAnswer(*s, RawPull(*stub_, s->hello()));
}

// The replay cache starts empty with each run, so a Hello recorded before a
// restart would pass it: one dated before the server started (beyond a 2 s
// slack) is refused as replayed although this run never saw it.
TEST_F(GossipServerTest, HelloFromBeforeTheServerStartedIsRefusedAsReplayed) {
  ExpectRefused(Begin(*a_, BPk(), Params(0, 0), Now() - 30)->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "replayed");
  ExpectRefused(Begin(*a_, BPk(), Params(0, 0), Now() - 5)->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "replayed");
}

TEST_F(GossipServerTest, ReplayedHelloIsRefused) {
  auto session = Begin(*a_, BPk(), Params(0, 0));
  PullResult first = RawPull(*stub_, session->hello());
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  ASSERT_FALSE(first.chunks.empty());
  const int64_t served = b_->peer(0).served;
  ExpectRefused(session->hello(), grpc::StatusCode::PERMISSION_DENIED, "replayed");
  EXPECT_EQ(b_->peer(0).served, served + 1);  // only ExpectRefused's own good pull
}

TEST_F(GossipServerTest, HelloForAnotherServerIsRefused) {
  ExpectRefused(Begin(*a_, intruder_->public_key(), Params(0, 0))->hello(), grpc::StatusCode::PERMISSION_DENIED,
                "wrong_recipient");
}

TEST_F(GossipServerTest, GarbageAndEmptyHellosAreMalformed) {
  const std::string good = GoodHello();
  std::string huge_len = good;
  huge_len[kHReqLen + 2] = '\x7f';
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"empty", ""},
      {"short garbage", "hello, server"},
      {"garbage of a hello's size", std::string(good.size(), '\x5a')},
      {"magic, version, then zeros", std::string("MYHELLO1") + std::string("\x01\0\0\0", 4) + std::string(300, '\0')},
      {"truncated", good.substr(0, good.size() - 1)},
      {"trailing byte", good + "x"},
      {"too long for a hello", std::string(8000, 'A')},
      {"request length past the end", huge_len},
  };
  for (const auto& [what, hello] : cases) {
    SCOPED_TRACE(what);
    ExpectRefused(hello, grpc::StatusCode::PERMISSION_DENIED, "malformed");
  }
}

TEST_F(GossipServerTest, UnparseablePullParamsFromPinnedPeerAreMalformed) {
  auto session = Begin(*a_, BPk(), std::string("\x0a\xff\x01", 3));
  ExpectRefused(session->hello(), grpc::StatusCode::INVALID_ARGUMENT, "malformed", /*counted_unknown=*/false);
  EXPECT_EQ(b_->peer(0).refusals["malformed"], 1);
  EXPECT_EQ(b_->peer(0).refused, 1);
}

TEST_F(GossipServerTest, FingerprintMismatchIsRefusedAndCountedForThePeer) {
  auto session = Begin(*a_, BPk(), Params(0, 0, "some-other-model"));
  ExpectRefused(session->hello(), grpc::StatusCode::FAILED_PRECONDITION, "fingerprint_mismatch",
                /*counted_unknown=*/false);
  auto a = b_->peer(0);
  EXPECT_EQ(a.refusals["fingerprint_mismatch"], 1);
  EXPECT_EQ(a.refused, 1);
}

TEST_F(GossipServerTest, OversizedRequestIsCutOffAtItsLengthPrefixBeforeTheHandler) {
  const auto before = b_->gossip->Totals();
  std::string big = GoodHello();
  big.resize(1 << 20, 'A');  // a 1 MB "hello"
  PullResult r = RawPull(*stub_, big);
  // The listener's screen reads the message's length prefix and closes the
  // connection before gRPC buffers any of it (peer/h2_screen.h).
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  EXPECT_TRUE(r.chunks.empty());
  EXPECT_EQ(b_->gossip->Totals().connections_screened, before.connections_screened + 1);
  // The handler never ran: nothing counted, nothing sent.
  EXPECT_EQ(b_->gossip->Totals().refused_unknown, before.refused_unknown);
  EXPECT_EQ(b_->gossip->Totals().bytes_sent, before.bytes_sent);
  EXPECT_EQ(b_->peer(0).refused, 0);
  // The channel reconnects (its first call may still see the closed
  // transport) and an honest pull goes through.
  ASSERT_TRUE(WaitFor([&] { return RawPull(*stub_, GoodHello()).status.ok(); }));
  // Just under gRPC's bound but far over a hello's: refused cheaply as malformed.
  std::string mid = GoodHello();
  mid.resize(60 << 10, 'A');
  ExpectRefused(mid, grpc::StatusCode::PERMISSION_DENIED, "malformed");
}

TEST_F(GossipServerTest, RefusalsAreLoggedButEveryOneIsCounted) {
  for (int i = 0; i < 5; ++i) {
    PullResult r = RawPull(*stub_, Begin(*intruder_, BPk(), Params(0, 0))->hello());
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(b_->gossip->Totals().refused_unknown, 5);
  ExpectGoodPull();
}

// =========================================================================
// Client side: node A pulls from an evil server.
// =========================================================================

// What the evil server sends for one pull; filled honestly from its own
// Federation, then edited by the test's plan.
struct Craft {
  PullHeader header;
  std::string payload;                               // plaintext
  size_t chunk_bytes = 1 << 20;
  bool final_tag = true;                             // tag the last chunk FINAL
  std::function<void(std::string&)> edit_reply;      // signed Reply bytes
  std::function<void(std::vector<std::string>&)> edit_sealed;
  std::optional<grpc::Status> refuse;                // answer with this error instead
  std::optional<std::string> raw_header;             // signed as is instead of `header`
  int chunk_delay_ms = 0;                            // sleep before each sealed chunk
  int trailing_chunks = 0;                           // sealed chunks sent after the FINAL one
};

class EvilPeer final : public Peer::Service {
 public:
  using Plan = std::function<void(int call, const PullParams&, Craft&)>;

  EvilPeer(std::unique_ptr<crypto::Identity> me, std::string client_pk, const std::vector<float>& xhat)
      : me_(std::move(me)), pinned_{std::move(client_pk)} {
    fed_ = std::move(federation::Federation::Create({}, xhat, 1, 1)).value();
    std::vector<float> x = xhat;
    fed_->Publish(x.data(), 42);  // seq 1, public copy = xhat
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    EXPECT_GT(port_, 0);
  }
  ~EvilPeer() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    // Wait() has let every handler finish, but through gRPC's own locks; the
    // plan goes under mu_, which the handlers used, so that order is ours.
    std::lock_guard<std::mutex> lock(mu_);
    plan_ = nullptr;
  }

  void SetPlan(Plan plan) {
    std::lock_guard<std::mutex> lock(mu_);
    plan_ = std::move(plan);
  }
  int calls() const { return calls_.load(); }
  const crypto::Identity& id() const { return *me_; }
  federation::Federation& fed() { return *fed_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status Pull(grpc::ServerContext*, const PullRequest* req, grpc::ServerWriter<PullChunk>* writer) override {
    auto session = crypto::ServerSession::Accept(*me_, pinned_, replay_, req->hello(), Now());
    if (!session.ok()) return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, std::string(session.status().message()));
    PullParams params;
    if (!params.ParseFromString((*session)->hello().request)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "malformed: params");
    }
    federation::PullAnswer a = fed_->Answer(params.epoch(), params.after_seq());
    Craft c;
    if (a.keyframe) {
      c.payload = BytesOf(a.public_copy);
    } else {
      for (const auto& q : a.deltas) {
        PutU64(&c.payload, q.size());
        c.payload += q;
      }
    }
    PullHeader& h = c.header;
    h.set_epoch(a.epoch);
    h.set_from_seq(a.from_seq);
    h.set_to_seq(a.to_seq);
    h.set_keyframe(a.keyframe);
    h.set_codec(a.codec);
    h.set_fingerprint(kFingerprint);
    h.set_samples_trained(a.samples_trained);
    h.set_degree(a.degree);
    h.set_count(static_cast<uint32_t>(a.deltas.size()));
    h.set_payload_bytes(c.payload.size());
    h.set_parameters(fed_->size());
    int call = calls_.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (plan_) plan_(call, params, c);
    }
    if (c.refuse) return *c.refuse;
    auto reply = (*session)->Reply(c.raw_header ? *c.raw_header : c.header.SerializeAsString());
    if (!reply.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(reply.status().message()));
    std::string reply_bytes = *reply;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (c.edit_reply) c.edit_reply(reply_bytes);
    }
    std::vector<std::string> sealed;
    size_t off = 0;
    do {
      size_t n = std::min(c.chunk_bytes, c.payload.size() - off);
      bool last = off + n >= c.payload.size();
      sealed.push_back((*session)->Seal(std::string_view(c.payload).substr(off, n), last && c.final_tag));
      off += n;
    } while (off < c.payload.size());
    if (c.edit_sealed) c.edit_sealed(sealed);
    PullChunk first;
    first.set_reply(reply_bytes);
    if (!writer->Write(first)) return grpc::Status::CANCELLED;
    for (const auto& s : sealed) {
      if (c.chunk_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(c.chunk_delay_ms));
      PullChunk chunk;
      chunk.set_sealed(s);
      if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
    }
    for (int i = 0; i < c.trailing_chunks; ++i) {
      PullChunk chunk;
      chunk.set_sealed((*session)->Seal(std::string(1000, 'x'), false));
      if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
    }
    return grpc::Status::OK;
  }

 private:
  std::unique_ptr<crypto::Identity> me_;
  std::vector<std::string> pinned_;
  crypto::ReplayGuard replay_;
  std::unique_ptr<federation::Federation> fed_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex mu_;
  Plan plan_;
  std::atomic<int> calls_{0};
};

class GossipClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_id_ = NewIdentity();
    initial_ = Ramp(0.0f, 0.0078125f);
    x_a_ = Ramp(0.5f, 0.0078125f);
    evil_x_ = Ramp(-0.5f, 0.015625f);
    evil_ = std::make_unique<EvilPeer>(NewIdentity(), a_id_->public_key(), evil_x_);
  }
  void TearDown() override {
    a_.reset();  // stop pulling before the evil server goes away
    evil_.reset();
  }

  // Starts node A pinned to the evil server (evil's plan must be set first).
  void StartA(federation::FederationOptions fopts = federation::PlainGossip()) {
    a_ = MakeNode("A", std::move(a_id_), initial_, x_a_, "", {PeerAt("evil", evil_->address(), evil_->id())},
                  fopts);
  }

  // Waits until A has refused the evil server for `reason` at least `n` times.
  void WaitRefused(const std::string& reason, int64_t n = 1) {
    ASSERT_TRUE(WaitFor([&] {
      auto p = a_->peer(0);
      return p.refusals.count(reason) && p.refusals.at(reason) >= n;
    })) << "refusals: " << Describe(a_->peer(0));
  }

  static std::string Describe(const PeerStatus& p) {
    std::string s = "state=" + p.state + " last_error=" + p.last_error + " {";
    for (const auto& [k, v] : p.refusals) s += k + ":" + std::to_string(v) + " ";
    return s + "}";
  }

  // A refused everything from the evil server: nothing reached its model.
  void ExpectNothingReachedTheModel(const std::string& reason) {
    auto p = a_->peer(0);
    EXPECT_EQ(p.state, "rejected") << Describe(p);
    EXPECT_THAT(p.last_error, StartsWith(reason + ":"));
    EXPECT_GE(p.refused, 1);
    EXPECT_EQ(p.pulls_ok, 0);
    EXPECT_GE(p.pulls_failed, 1);
    EXPECT_EQ(p.keyframes_accepted, 0);
    EXPECT_EQ(p.deltas_accepted, 0);
    EXPECT_FALSE(a_->fed->mirror_stats(0).initialized);
    EXPECT_TRUE(a_->fed->mirror(0).empty());
    // Rounds still run (publish + merge), and x is untouched and finite.
    ASSERT_TRUE(WaitFor([&] { return a_->gossip->Totals().rounds >= 2; }));
    std::vector<float> x = a_->shared.Get();
    EXPECT_TRUE(AllFinite(x));
    EXPECT_EQ(x, x_a_);
    EXPECT_EQ(a_->fed->public_copy(), x_a_);
  }

  void RunRefusalCase(EvilPeer::Plan plan, const std::string& reason) {
    evil_->SetPlan(std::move(plan));
    StartA();
    WaitRefused(reason);
    ExpectNothingReachedTheModel(reason);
  }

  std::unique_ptr<crypto::Identity> a_id_;
  std::vector<float> initial_, x_a_, evil_x_;
  std::unique_ptr<EvilPeer> evil_;
  std::unique_ptr<Node> a_;
};

TEST_F(GossipClientTest, HonestServerKeyframeIsAcceptedAndMerged) {
  // Control for the cases below: the same evil server, unedited, is accepted.
  StartA();
  ASSERT_TRUE(WaitFor([&] { return a_->peer(0).keyframes_accepted >= 1; }));
  auto p = a_->peer(0);
  EXPECT_EQ(p.state, "connected");
  EXPECT_GE(p.pulls_ok, 1);
  EXPECT_EQ(p.refused, 0);
  EXPECT_GT(p.bytes_received, static_cast<int64_t>(kSize * sizeof(float)));
  EXPECT_EQ(a_->fed->mirror(0), evil_x_);
  EXPECT_EQ(p.samples_trained, 42);
  // Metropolis with one neighbour each: x moves halfway to the mirror.
  ASSERT_TRUE(WaitFor([&] {
    auto x = a_->shared.Get();
    for (size_t i = 0; i < kSize; ++i) {
      if (std::fabs(x[i] - evil_x_[i]) > 1e-3f) return false;
    }
    return true;
  }));
}

TEST_F(GossipClientTest, TamperedCiphertextIsRefused) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.edit_sealed = [](std::vector<std::string>& s) { s[0][s[0].size() / 2] ^= 0x04; };
      },
      "tampered");
}

TEST_F(GossipClientTest, ReorderedChunksAreRefused) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.chunk_bytes = 1000;
        c.edit_sealed = [](std::vector<std::string>& s) { std::swap(s[0], s[1]); };
      },
      "tampered");
}

TEST_F(GossipClientTest, WrongParameterCountIsBadShape) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.header.set_parameters(kSize + 1); }, "bad_shape");
}

TEST_F(GossipClientTest, KeyframeOfWrongByteSizeIsBadShape) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.payload.resize(c.payload.size() - 4);
        c.header.set_payload_bytes(c.payload.size());
      },
      "bad_shape");
}

TEST_F(GossipClientTest, HugeClaimedPayloadIsBadShape) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.header.set_payload_bytes(uint64_t{1} << 40); },
                 "bad_shape");
}

// Deltas that together outweigh a keyframe: an honest neighbour would have
// sent the keyframe, so the claim is refused before a byte is held for it.
TEST_F(GossipClientTest, DeltasClaimingMoreThanAKeyframeAreBadShapeBeforeTheyArrive) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.header.set_keyframe(false);
        c.header.set_count(2);
        c.header.set_payload_bytes(2 * (kSize * sizeof(float) + 12 + 8));
      },
      "bad_shape");
  EXPECT_THAT(a_->peer(0).last_error, HasSubstr("bytes for 2 deltas"));
}

// Chunks streamed after the FINAL one used to hold the pull until its
// deadline and still count as a success.
TEST_F(GossipClientTest, ChunksAfterTheFinalOneAreTrailingData) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.trailing_chunks = 5; }, "trailing_data");
}

// An answer still arriving at the pull's deadline is too slow, not a
// network failure: it is refused and backs off like any refusal.
TEST_F(GossipClientTest, AnAnswerUnfinishedAtTheDeadlineIsTooSlow) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.chunk_bytes = 256;
        c.chunk_delay_ms = 150;
      },
      "too_slow");
  EXPECT_THAT(a_->peer(0).last_error, HasSubstr("did not finish within pull_timeout_s"));
}

// Below the least transfer rate a dripping answer is cut long before the
// deadline, so one slow neighbour cannot stretch every round to it.
TEST_F(GossipClientTest, ADrippedAnswerIsCutAtTheLeastTransferRateBeforeTheDeadline) {
  evil_->SetPlan([](int, const PullParams&, Craft& c) {
    c.chunk_bytes = 256;
    c.chunk_delay_ms = 100;
  });
  GossipSchedule slow = FastOptions();
  slow.pull_timeout_s = 30;
  a_ = MakeNode("A", std::move(a_id_), initial_, x_a_, "", {PeerAt("evil", evil_->address(), evil_->id())}, {},
                slow, true, [](GossipOptions& o) {
                  o.min_transfer_grace_s = 0.3;
                  o.min_transfer_bytes_per_s = 16 << 10;
                });
  const auto start = std::chrono::steady_clock::now();
  WaitRefused("too_slow");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, 5.0) << "cut only after " << took << " s";
  EXPECT_THAT(a_->peer(0).last_error, HasSubstr("below the least transfer rate"));
  ExpectNothingReachedTheModel("too_slow");
}

TEST_F(GossipClientTest, PayloadLongerThanItsHeaderIsBadShape) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.payload += std::string(16, '\0'); }, "bad_shape");
}

TEST_F(GossipClientTest, NonFiniteKeyframeIsRefused) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        std::vector<float> v = FloatsOf(c.payload);
        v[17] = std::numeric_limits<float>::quiet_NaN();
        v[500] = std::numeric_limits<float>::infinity();
        c.payload = BytesOf(v);
      },
      "non_finite");
}

TEST_F(GossipClientTest, KeyframeBeyondTheNormBoundIsRefused) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        std::vector<float> v(kSize, 1e5f);  // norm ~3e6 > max_keyframe_norm 1e6
        c.payload = BytesOf(v);
      },
      "norm_bound");
}

TEST_F(GossipClientTest, ShortPayloadWithFinalIsTruncated) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.payload.resize(c.payload.size() / 2); }, "truncated");
}

TEST_F(GossipClientTest, MissingFinalChunkIsTruncated) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.final_tag = false; }, "truncated");
}

TEST_F(GossipClientTest, DroppedLastChunkIsTruncated) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.chunk_bytes = 1000;
        c.edit_sealed = [](std::vector<std::string>& s) { s.pop_back(); };
      },
      "truncated");
}

TEST_F(GossipClientTest, ReplySignedByAnotherIdentityIsRefused) {
  std::shared_ptr<crypto::Identity> other = NewIdentity();
  RunRefusalCase(
      [other](int, const PullParams&, Craft& c) {
        c.edit_reply = [other](std::string& r) {
          std::string body = r.substr(0, r.size() - kSigLen);
          r = body + other->Sign(body);
        };
      },
      "bad_signature");
}

TEST_F(GossipClientTest, GarbageReplyIsMalformed) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.edit_reply = [](std::string& r) { r = "no"; }; },
                 "malformed");
}

TEST_F(GossipClientTest, HeaderThatDoesNotParseIsMalformed) {
  // A correctly signed reply whose opaque header is not a PullHeader.
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) { c.raw_header = std::string("\x0a\xff\x01", 3); },
      "malformed");
}

TEST_F(GossipClientTest, FingerprintMismatchIsRefused) {
  RunRefusalCase([](int, const PullParams&, Craft& c) { c.header.set_fingerprint("another-model"); },
                 "fingerprint_mismatch");
}

TEST_F(GossipClientTest, RefusalByTheNeighbourIsCountedWithItsReason) {
  RunRefusalCase(
      [](int, const PullParams&, Craft& c) {
        c.refuse = grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "unpinned_key: request refused");
      },
      "unpinned_key");
}

TEST_F(GossipClientTest, ReplayedOldReplyIsRefused) {
  // First pull honest (keyframe accepted); then the server replays that
  // first reply (and its chunks) to every later hello.
  auto saved = std::make_shared<std::string>();
  evil_->SetPlan([saved](int call, const PullParams&, Craft& c) {
    if (call == 0) {
      c.edit_reply = [saved](std::string& r) { *saved = r; };
    } else {
      c.edit_reply = [saved](std::string& r) { r = *saved; };
    }
  });
  StartA();
  WaitRefused("replayed");
  auto p = a_->peer(0);
  EXPECT_EQ(p.keyframes_accepted, 1);
  EXPECT_EQ(p.state, "rejected");
  EXPECT_EQ(a_->fed->mirror(0), evil_x_);
  EXPECT_TRUE(AllFinite(a_->shared.Get()));
}

// Deltas, after one honest keyframe: the mirror keeps the keyframe and the
// bad deltas never reach it.
class GossipClientDeltaTest : public GossipClientTest {
 protected:
  // From the second pull on, answer with `make(after_seq)` deltas.
  void RunDeltaCase(std::function<void(const PullParams&, Craft&)> edit, const std::string& reason) {
    evil_->SetPlan([edit](int call, const PullParams& p, Craft& c) {
      if (call == 0) {
        EXPECT_TRUE(c.header.keyframe());
        return;
      }
      c.header.set_keyframe(false);
      c.header.set_from_seq(p.after_seq());
      c.header.set_to_seq(p.after_seq() + 1);
      c.header.set_codec("dense_f32");
      c.header.set_count(1);
      c.payload.clear();
      edit(p, c);
      c.header.set_payload_bytes(c.payload.size());
    });
    StartA();
    WaitRefused(reason);
    auto p = a_->peer(0);
    EXPECT_EQ(p.state, "rejected");
    EXPECT_EQ(p.keyframes_accepted, 1);
    EXPECT_EQ(p.deltas_accepted, 0);
    auto m = a_->fed->mirror_stats(0);
    EXPECT_TRUE(m.initialized);
    EXPECT_EQ(m.seq, 1u);
    EXPECT_EQ(a_->fed->mirror(0), evil_x_);
    std::vector<float> x = a_->shared.Get();
    ASSERT_TRUE(AllFinite(x));
    for (size_t i = 0; i < kSize; ++i) {
      // Merging only ever mixes x_a_ with the honest keyframe.
      ASSERT_LE(x[i], std::max(x_a_[i], evil_x_[i]) + 1e-4f) << i;
      ASSERT_GE(x[i], std::min(x_a_[i], evil_x_[i]) - 1e-4f) << i;
    }
  }

  // The same, in a child process (gtest death-test machinery, re-executed so
  // gRPC starts fresh): a daemon that aborts on a crafted reply must fail
  // this test, not kill the whole test binary.
  void RunDeltaCaseIsolated(std::function<void(const PullParams&, Craft&)> edit, const std::string& reason) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
          RunDeltaCase(edit, reason);
          std::fflush(nullptr);
          _exit(::testing::Test::HasFailure() ? 1 : 0);
        },
        ::testing::ExitedWithCode(0), "")
        << "node A crashed or misbehaved on a malformed reply (refusal expected: " << reason << ")";
  }

  static std::string Delta(const std::vector<float>& d) {
    auto codec = federation::MakeCodec("dense_f32");
    std::string q = (*codec)->Encode(d.data(), d.size());
    std::string out;
    PutU64(&out, q.size());
    return out + q;
  }
};

TEST_F(GossipClientDeltaTest, HonestDeltasAreAccepted) {
  // Control: the evil server publishes a real delta and serves it.
  std::vector<float> next = evil_x_;
  for (auto& v : next) v += 0.25f;
  StartA();
  ASSERT_TRUE(WaitFor([&] { return a_->peer(0).keyframes_accepted >= 1; }));
  evil_->fed().Publish(next.data(), 43);
  ASSERT_TRUE(WaitFor([&] { return a_->peer(0).deltas_accepted >= 1; }));
  EXPECT_EQ(a_->fed->mirror(0), evil_->fed().public_copy());
  EXPECT_EQ(a_->fed->mirror(0), next);
  EXPECT_EQ(a_->peer(0).state, "connected");
  EXPECT_EQ(a_->peer(0).refused, 0);
}

TEST_F(GossipClientDeltaTest, DeltaBeyondTheNormBoundIsRefused) {
  RunDeltaCase([](const PullParams&, Craft& c) { c.payload = Delta(std::vector<float>(kSize, 1e3f)); },
               "norm_bound");  // norm ~3.2e4 > max_delta_norm 1e4
}

TEST_F(GossipClientDeltaTest, NonFiniteDeltaIsRefused) {
  RunDeltaCase(
      [](const PullParams&, Craft& c) {
        std::vector<float> d(kSize, 0.0f);
        d[3] = std::numeric_limits<float>::quiet_NaN();
        c.payload = Delta(d);
      },
      "non_finite");
}

TEST_F(GossipClientDeltaTest, DeltaOfWrongSizeIsBadShape) {
  RunDeltaCase([](const PullParams&, Craft& c) { c.payload = Delta(std::vector<float>(kSize - 1, 0.1f)); },
               "bad_shape");
}

TEST_F(GossipClientDeltaTest, DeltaOverrunningThePayloadIsMalformed) {
  RunDeltaCaseIsolated(
      [](const PullParams&, Craft& c) {
        std::string d = Delta(std::vector<float>(kSize, 0.1f));
        d[0] = static_cast<char>(d[0] + 1);  // length prefix one past the end
        c.payload = d;
      },
      "malformed");
}

TEST_F(GossipClientDeltaTest, BytesAfterTheLastDeltaAreMalformed) {
  RunDeltaCaseIsolated([](const PullParams&, Craft& c) { c.payload = Delta(std::vector<float>(kSize, 0.1f)) + "junk"; },
               "malformed");
}

TEST_F(GossipClientDeltaTest, DeltaLabelledWithAnotherCodecIsRefused) {
  RunDeltaCase(
      [](const PullParams&, Craft& c) {
        c.header.set_codec("int8");
        c.payload = Delta(std::vector<float>(kSize, 0.1f));
      },
      "bad_shape");
}

TEST_F(GossipClientDeltaTest, DeltaWithAnUnknownCodecIsRefused) {
  RunDeltaCase(
      [](const PullParams&, Craft& c) {
        c.header.set_codec("zstd");
        c.payload = Delta(std::vector<float>(kSize, 0.1f));
      },
      "unknown_codec");
}

TEST_F(GossipClientDeltaTest, DeltaThatSkipsSequencesIsRefused) {
  RunDeltaCase(
      [](const PullParams& p, Craft& c) {
        c.header.set_from_seq(p.after_seq() + 5);
        c.header.set_to_seq(p.after_seq() + 6);
        c.payload = Delta(std::vector<float>(kSize, 0.1f));
      },
      "out_of_order");
}

size_t VmSizeBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::stoull(line.substr(7)) * 1024;
  }
  return 0;
}

// A pinned neighbour's header claims a huge payload (within the per-answer
// bounds: 100000 deltas of a 4000-parameter model, 1.6 GB) and then sends a
// few bytes. Correct: refused as truncated, memory following what arrives.
// Run in a child with the address space limited to what it uses + 512 MB,
// as on a small device: allocating the claim up front there is fatal.
// Returns whether node A refused the claim as truncated (and did not die).
bool PullFromNeighbourClaimingAHugePayload() {
  constexpr size_t kBig = 4000;
  auto a_id = NewIdentity();
  std::vector<float> initial(kBig, 0.25f), evil_x(kBig, -0.25f);
  auto evil = std::make_unique<EvilPeer>(NewIdentity(), a_id->public_key(), evil_x);
  evil->SetPlan([](int, const PullParams&, Craft& c) {
    c.header.set_keyframe(false);
    c.header.set_codec("dense_f32");
    c.header.set_count(100000);
    c.header.set_payload_bytes(uint64_t{100000} * (kBig * sizeof(float) + 64));
    c.payload = std::string(100, 'x');
  });
  mallopt(M_ARENA_MAX, 2);
  const rlim_t limit = VmSizeBytes() + (rlim_t{512} << 20);
  rlimit rl{limit, limit};
  setrlimit(RLIMIT_AS, &rl);
  auto a = MakeNode("A", std::move(a_id), initial, initial, "", {PeerAt("evil", evil->address(), evil->id())});
  // 1.6 GB of deltas outweigh a keyframe of 16 KB many times over: refused
  // from the header alone, before a byte is held for it (it used to pass the
  // header check and end "truncated" after the 100 bytes).
  return WaitFor([&] { return a->peer(0).refusals.count("bad_shape") > 0; });
}

TEST(GossipClientMemoryTest, ClaimedPayloadSizeIsNotAllocatedUpFront) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        bool refused = PullFromNeighbourClaimingAHugePayload();
        std::fflush(nullptr);
        _exit(refused && !::testing::Test::HasFailure() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "")
      << "node A died (or did not refuse) when a neighbour claimed a 1.6 GB payload and sent 100 bytes";
}

// =========================================================================
// Availability: a dead or silent neighbour never stalls the others.
// =========================================================================

class GossipAvailabilityTest : public ::testing::Test {
 protected:
  // Node A pinned to [bad, good]; good is a real Gossip node B.
  void StartNodes(const std::string& bad_address, GossipSchedule gopts = FastOptions()) {
    auto a_id = NewIdentity();
    auto b_id = NewIdentity();
    auto ghost = NewIdentity();
    initial_ = Ramp(0.0f, 0.0078125f);
    b_ = MakeNode("B", std::move(b_id), initial_, Ramp(1.0f, 0.0f), "127.0.0.1:0",
                  {PeerAt("A", DeadAddress(), *a_id)}, {}, gopts);
    auto bad = PeerAt("ghost", bad_address, *ghost);
    auto good = PeerAt("B", b_->address(), *b_->id);
    a_ = MakeNode("A", std::move(a_id), initial_, initial_, "", {bad, good}, {}, gopts);
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
  }
  std::vector<float> initial_;
  std::unique_ptr<Node> a_, b_;
};

TEST_F(GossipAvailabilityTest, UnreachableNeighbourBacksOffAndDoesNotStallTheOthers) {
  StartNodes(DeadAddress());
  // Record next_retry_s right after each failure: it must grow (exponential
  // backoff) up to the cap.
  std::vector<double> backoffs;
  int64_t seen_failures = 0;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = a_->peer(0);
        if (p.pulls_failed > seen_failures) {
          seen_failures = p.pulls_failed;
          backoffs.push_back(p.next_retry_s);
        }
        return seen_failures >= 5;
      },
      15));
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Without backoff five failures take five rounds (0.1 s); with it, at
  // least 0.04 + 0.08 + 0.16 + 0.32 s.
  EXPECT_GT(elapsed, 0.5) << "the dead neighbour is retried every round";
  auto ghost = a_->peer(0);
  EXPECT_EQ(ghost.state, "unreachable");
  EXPECT_THAT(ghost.last_error, StartsWith("unreachable"));
  EXPECT_EQ(ghost.pulls_ok, 0);
  EXPECT_EQ(ghost.refused, 0);  // unreachable is not a refusal
  EXPECT_TRUE(ghost.refusals.empty());
  ASSERT_GE(backoffs.size(), 4u);
  for (double b : backoffs) {
    EXPECT_GT(b, 0.0);
    EXPECT_LE(b, FastOptions().max_backoff_s + 1e-9);
  }
  EXPECT_GT(backoffs.back(), 4 * backoffs.front()) << "no exponential backoff";

  // Meanwhile, the good neighbour was pulled every round; many more pulls
  // than failures of the dead one.
  auto good = a_->peer(1);
  EXPECT_EQ(good.state, "connected");
  EXPECT_GT(good.pulls_ok, ghost.pulls_failed);
  int64_t ok_before = good.pulls_ok;
  ASSERT_TRUE(WaitFor([&] { return a_->peer(1).pulls_ok >= ok_before + 10; }, 5));
  EXPECT_EQ(a_->peer(1).pulls_failed, 0);
}

TEST_F(GossipAvailabilityTest, SilentNeighbourIsBoundedByThePullDeadline) {
  // A TCP listener that never accepts nor answers: connects, then nothing.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  auto gopts = FastOptions();
  gopts.pull_timeout_s = 0.3;
  StartNodes("127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), gopts);

  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return a_->peer(0).pulls_failed >= 2; }, 10));
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(elapsed, 5.0) << "pulls to a silent neighbour are not bounded by pull_timeout_s";
  EXPECT_EQ(a_->peer(0).state, "unreachable");
  int64_t ok_before = a_->peer(1).pulls_ok;
  ASSERT_TRUE(WaitFor([&] { return a_->peer(1).pulls_ok >= ok_before + 10; }, 8))
      << "the good neighbour stalled behind the silent one";
  EXPECT_EQ(a_->peer(1).state, "connected");
  a_.reset();
  close(fd);
}

// =========================================================================
// Two real nodes converge.
// =========================================================================

// The largest coordinate gap between two nodes' weights.
float MaxGap(Node& a, Node& b) {
  auto x = a.shared.Get(), y = b.shared.Get();
  float g = 0;
  for (size_t i = 0; i < kSize; ++i) g = std::max(g, std::fabs(x[i] - y[i]));
  return g;
}

// Two starts on either side of `initial` (its average), as after local training.
void DriftApart(const std::vector<float>& initial, std::vector<float>* a, std::vector<float>* b) {
  a->resize(kSize);
  b->resize(kSize);
  for (size_t i = 0; i < kSize; ++i) {
    const float d = 0.25f + 0.015625f * static_cast<float>(i % 13);
    (*a)[i] = initial[i] + d;
    (*b)[i] = initial[i] - d;
  }
}

TEST(GossipPairTest, TwoNodesConvergeTowardTheirAverage) {
  auto a_id = NewIdentity();
  auto b_id = NewIdentity();
  // Both start from the same weights (the average), then drift apart, as
  // after local training.
  std::vector<float> initial = Ramp(0.0f, 0.0078125f), xa0, xb0, avg = initial;
  DriftApart(initial, &xa0, &xb0);

  // Ports first (each pins the other's address), then both start together so
  // neither is a stale-only mirror of the other for long.
  const std::string a_addr = DeadAddress(), b_addr = DeadAddress();
  auto peer_a = PeerAt("A", a_addr, *a_id);
  auto peer_b = PeerAt("B", b_addr, *b_id);
  // Plain gossip: every merge is a convex mix, so the pair ends between its
  // starts whatever the order of rounds. Drift correction (the default, β =
  // 0.95) carries each merge's move into the next rounds like momentum; with
  // nothing to train it overshoots the average by up to 2x when one node's
  // rounds run ahead of the other's (seen on a loaded machine), which the
  // federation tests cover.
  // Rounds are held until both listen: a node whose first pull finds its
  // neighbour not yet up merges nothing while the neighbour merges its start,
  // and the pair then meets halfway between the average and that start
  // (seen under ASan, where starting a server takes longer than a round).
  std::atomic<bool> held{true};
  auto hold = [&held](GossipOptions& o) { o.hold_rounds = [&held] { return held.load(); }; };
  auto a = MakeNode("A", std::move(a_id), initial, xa0, a_addr, {peer_b}, federation::PlainGossip(), FastOptions(),
                    false, hold);
  auto b = MakeNode("B", std::move(b_id), initial, xb0, b_addr, {peer_a}, federation::PlainGossip(), FastOptions(),
                    false, hold);
  ASSERT_TRUE(a->gossip->Start().ok());
  ASSERT_TRUE(b->gossip->Start().ok());
  ASSERT_EQ(a->address(), a_addr);
  ASSERT_EQ(b->address(), b_addr);
  held = false;

  auto max_gap = [&] { return MaxGap(*a, *b); };
  ASSERT_TRUE(WaitFor([&] { return max_gap() < 1e-4f; }, 20)) << "gap " << max_gap();

  auto xa = a->shared.Get(), xb = b->shared.Get();
  ASSERT_TRUE(AllFinite(xa));
  ASSERT_TRUE(AllFinite(xb));
  // Toward the average: much closer to it than where either started.
  float start_dist = 0, end_dist = 0;
  for (size_t i = 0; i < kSize; ++i) {
    start_dist = std::max(start_dist, std::fabs(xa0[i] - avg[i]));
    end_dist = std::max(end_dist, std::fabs(xa[i] - avg[i]));
  }
  EXPECT_LT(end_dist, 0.5f * start_dist) << "consensus far from the average";

  // Aligned rounds with weight 1/2 reach the average in one merge; gossip
  // keeps going after it.
  ASSERT_TRUE(WaitFor([&] { return a->peer(0).pulls_ok >= 2 && b->peer(0).pulls_ok >= 2; }, 10));
  for (Node* n : {a.get(), b.get()}) {
    auto p = n->peer(0);
    EXPECT_EQ(p.state, "connected");
    EXPECT_GE(p.keyframes_accepted, 1);
    EXPECT_GE(p.pulls_ok, 2);
    EXPECT_EQ(p.refused, 0);
    EXPECT_GT(p.bytes_received, 0);
    EXPECT_GT(p.bytes_sent, 0);
    EXPECT_GT(p.served, 0);
    EXPECT_GT(p.last_success_unix, 0);
    EXPECT_EQ(p.key_fingerprint.empty(), false);
  }
  ASSERT_TRUE(WaitFor([&] { return a->peer(0).deltas_accepted >= 1 && b->peer(0).deltas_accepted >= 1; }));
  auto ta = a->gossip->Totals();
  EXPECT_GT(ta.bytes_sent, 0);
  EXPECT_GT(ta.bytes_received, 0);
  int64_t rounds = ta.rounds;
  ASSERT_TRUE(WaitFor([&] { return a->gossip->Totals().rounds >= rounds + 3; }));
  a->gossip->Stop();
  b->gossip->Stop();
  a->gossip->Stop();  // idempotent
}

// gRPC errors are not authenticated: whoever answers on the neighbour's
// address can put any words in them. A new word on every pull must not grow
// the per-reason counters: unknown words count as "error".
class InventiveRefuser final : public Peer::Service {
 public:
  InventiveRefuser() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~InventiveRefuser() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
  }
  grpc::Status Pull(grpc::ServerContext*, const PullRequest*, grpc::ServerWriter<PullChunk>*) override {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "made_up_" + std::to_string(calls_++) + ": go away");
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int calls() const { return calls_.load(); }

 private:
  int port_ = 0;
  std::atomic<int> calls_{0};
  std::unique_ptr<grpc::Server> server_;
};

TEST(GossipPairTest, UnknownRefusalWordsCountAsErrorSoCountersStayBounded) {
  InventiveRefuser refuser;
  auto stranger = NewIdentity();
  GossipSchedule fast = FastOptions();
  fast.max_backoff_s = 0.02;  // retry every round: many different words
  auto a = MakeNode("A", NewIdentity(), Ramp(0.0f, 0.0f), Ramp(1.0f, 0.0f), "",
                    {PeerAt("R", refuser.address(), *stranger)}, {}, fast);
  // Wait on A's own count: the refuser counts a call before A has booked its refusal.
  ASSERT_TRUE(WaitFor([&] {
    auto q = a->peer(0);
    return q.pulls_failed >= 5;
  }));
  EXPECT_GE(refuser.calls(), 5);
  PeerStatus p = a->peer(0);
  EXPECT_EQ(p.state, "rejected");
  std::string words;
  for (const auto& [reason, n] : p.refusals) words += reason + "=" + std::to_string(n) + " ";
  ASSERT_EQ(p.refusals.size(), 1u) << words;
  EXPECT_GE(p.refusals.at("error"), 5);
}

TEST(GossipPairTest, NeighbourThatDoesNotPinUsRefusesAndWeCountIt) {
  auto a_id = NewIdentity();
  auto b_id = NewIdentity();
  auto stranger = NewIdentity();
  const std::vector<float> initial = Ramp(0.0f, 0.0078125f);
  auto b = MakeNode("B", std::move(b_id), initial, initial, "127.0.0.1:0", {PeerAt("S", DeadAddress(), *stranger)});
  auto a = MakeNode("A", std::move(a_id), initial, Ramp(1.0f, 0.0f), "", {PeerAt("B", b->address(), *b->id)});
  ASSERT_TRUE(WaitFor([&] {
    auto p = a->peer(0);
    return p.refusals.count("unpinned_key") > 0;
  }));
  EXPECT_EQ(a->peer(0).state, "rejected");
  EXPECT_GE(b->gossip->Totals().refused_unknown, 1);
  EXPECT_FALSE(a->fed->mirror_stats(0).initialized);
  EXPECT_EQ(b->fed->public_copy(), initial);
}

}  // namespace

// ------------------------------------------------------------ reload (SIGHUP)

// A pulls from B, then its peer list is reloaded twice. B and C pin A at a
// dead address, so they never merge and serve fixed weights: their public
// copies stay x_b and x_c.
class GossipReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    initial_ = Ramp(0.0f, 0.0078125f);
    x_a_ = Ramp(0.5f, 0.0078125f);
    x_b_ = Ramp(1.0f, 0.015625f);
    x_c_ = Ramp(-1.0f, 0.0078125f);
    auto a_id = NewIdentity();
    const std::string a_addr = DeadAddress(), b_addr = DeadAddress(), c_addr = DeadAddress();
    auto b_id = NewIdentity(), c_id = NewIdentity();
    peer_a_ = PeerAt("A", a_addr, *a_id);
    peer_b_ = PeerAt("B", b_addr, *b_id);
    peer_c_ = PeerAt("C", c_addr, *c_id);
    Neighbour a_nowhere = peer_a_;
    a_nowhere.address = DeadAddress();
    b_ = MakeNode("B", std::move(b_id), initial_, x_b_, b_addr, {a_nowhere});
    c_ = MakeNode("C", std::move(c_id), initial_, x_c_, c_addr, {a_nowhere});
    a_ = MakeNode("A", std::move(a_id), initial_, x_a_, a_addr, {peer_b_});
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    c_.reset();
  }
  std::vector<std::string> Names() {
    std::vector<std::string> n;
    for (const auto& p : a_->gossip->Peers()) n.push_back(p.name);
    return n;
  }

  std::vector<float> initial_, x_a_, x_b_, x_c_;
  Neighbour peer_a_, peer_b_, peer_c_;
  std::unique_ptr<Node> a_, b_, c_;
};

TEST_F(GossipReloadTest, NewListTakesEffectAndKeptNeighboursKeepTheirMirror) {
  // Enough updates applied to B's mirror that a fresh mirror could not
  // catch up between the swap and the check below. (How many are keyframes
  // depends on load: a reader that misses a round of dense deltas gets one.)
  ASSERT_TRUE(WaitFor([&] {
    auto m = a_->fed->mirror_stats(0);
    return m.keyframes_applied + m.deltas_applied >= 40;
  }));
  ASSERT_EQ(a_->fed->mirror(0), x_b_);
  const int64_t b_pulls = a_->peer(0).pulls_ok;
  const int64_t b_keyframes = a_->peer(0).keyframes_accepted;
  const auto b_mirror = a_->fed->mirror_stats(0);

  // C joins in front of B.
  a_->gossip->SetPeers({peer_c_, peer_b_});
  ASSERT_TRUE(WaitFor([&] { return a_->gossip->Peers().size() == 2; }));
  // B's mirror was kept under its new index: its update counts went on from
  // where they were (a new mirror would start from zero).
  const auto kept = a_->fed->mirror_stats(1);
  EXPECT_GE(kept.keyframes_applied + kept.deltas_applied, b_mirror.keyframes_applied + b_mirror.deltas_applied);
  EXPECT_GE(kept.keyframes_applied, b_mirror.keyframes_applied);
  ASSERT_TRUE(WaitFor([&] {
    auto peers = a_->gossip->Peers();
    return peers[0].pulls_ok >= 1 && peers[1].pulls_ok > b_pulls;
  }));
  EXPECT_EQ(Names(), (std::vector<std::string>{"C", "B"}));
  EXPECT_EQ(a_->fed->mirror(0), x_c_);
  EXPECT_EQ(a_->fed->mirror(1), x_b_);
  // B's counters carried over too.
  EXPECT_GE(a_->peer(1).keyframes_accepted, b_keyframes);
  EXPECT_GE(a_->peer(1).pulls_ok, b_pulls);
  EXPECT_GE(a_->peer(0).keyframes_accepted, 1);
  EXPECT_EQ(a_->fed->Answer(0, 0).degree, 2);
  // Metropolis with both at degree <= 2: each weighs 1/3, and the model
  // settles at the mean of B and C (only A moves).
  ASSERT_TRUE(WaitFor([&] {
    auto x = a_->shared.Get();
    for (size_t i = 0; i < kSize; ++i) {
      if (std::fabs(x[i] - (x_b_[i] + x_c_[i]) / 2) > 1e-3f) return false;
    }
    return true;
  })) << "A did not move toward the mean of B and C";

  // B leaves: A stops pulling from it, and refuses B's pulls from now on.
  auto stub = Peer::NewStub(grpc::CreateChannel(a_->address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(RawPull(*stub, Begin(*b_->id, a_->id->public_key(), Params(0, 0))->hello()).status.ok());
  const int64_t refused_before = a_->gossip->Totals().refused_unknown;
  a_->gossip->SetPeers({peer_c_});
  ASSERT_TRUE(WaitFor([&] { return a_->gossip->Peers().size() == 1; }));
  EXPECT_EQ(Names(), (std::vector<std::string>{"C"}));
  EXPECT_EQ(a_->fed->mirror(0), x_c_);
  EXPECT_EQ(a_->fed->Answer(0, 0).degree, 1);
  PullResult r = RawPull(*stub, Begin(*b_->id, a_->id->public_key(), Params(0, 0))->hello());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(r.status.error_message(), StartsWith("unpinned_key:"));
  EXPECT_EQ(a_->gossip->Totals().refused_unknown, refused_before + 1);
}

TEST(GossipHoldTest, HeldRoundsNeitherTrainNorMergeButServingGoesOn) {
  std::atomic<bool> held{true};
  std::vector<float> initial = Ramp(0.0f, 0.0078125f), x_a = Ramp(0.5f, 0.0078125f),
                     x_b = Ramp(1.0f, 0.015625f);
  auto a_id = NewIdentity(), b_id = NewIdentity();
  const std::string a_addr = DeadAddress(), b_addr = DeadAddress();
  auto peer_a = PeerAt("A", a_addr, *a_id), peer_b = PeerAt("B", b_addr, *b_id);
  auto b = MakeNode("B", std::move(b_id), initial, x_b, b_addr, {peer_a}, {}, FastOptions(), false);
  auto a = MakeNode("A", std::move(a_id), initial, x_a, a_addr, {peer_b}, {}, FastOptions(), false);
  // A is held (training held by policy, with gossip_when_held = false).
  // Its gossip options are fixed at Create, so rebuild A's gossip with the hook.
  a->gossip.reset();
  GossipOptions o;
  o.node_name = "A";
  o.listen = a_addr;
  o.fingerprint = kFingerprint;
  o.schedule = FastOptions();
  o.peers = {peer_b};
  o.hold_rounds = [&] { return held.load(); };
  a->gossip = std::move(Gossip::Create(o, *a->id, *a->fed, a->shared)).value();
  ASSERT_TRUE(a->gossip->Start().ok());
  ASSERT_TRUE(b->gossip->Start().ok());

  // While held: no rounds, no local steps opened, no pulls, x untouched; B still pulls A.
  ASSERT_TRUE(WaitFor([&] { return a->gossip->Totals().rounds_held >= 5; }));
  ASSERT_TRUE(WaitFor([&] { return b->peer(0).pulls_ok >= 2; })) << "A stopped serving while held";
  EXPECT_EQ(a->gossip->Totals().rounds, 0);
  EXPECT_EQ(a->shared.Calls(), 0);
  EXPECT_EQ(a->peer(0).pulls_ok + a->peer(0).pulls_failed, 0);
  EXPECT_EQ(a->shared.Get(), x_a);

  // Released: rounds resume and A merges toward B.
  held = false;
  ASSERT_TRUE(WaitFor([&] { return a->gossip->Totals().rounds >= 2 && a->peer(0).pulls_ok >= 1; }));
  EXPECT_GT(a->shared.Calls(), 0);
  EXPECT_NE(a->shared.Get(), x_a);
}

// Rounds start on wall-clock boundaries. One that runs past the next boundary
// joins the round under way while its publish point is still ahead, and only
// beyond that skips to the next boundary, counting what it missed: a missed
// round leaves the neighbours a stale mirror of us.
class GossipOverrunTest : public ::testing::Test {
 protected:
  // A with no reachable neighbour, whose merges take `merge_s` seconds.
  std::unique_ptr<Node> StartWithSlowMerges(double period, double merge_s) {
    auto a_id = NewIdentity();
    auto stranger = NewIdentity();
    const std::vector<float> initial = Ramp(0.0f, 0.0f);
    auto a = MakeNode("A", std::move(a_id), initial, initial, "", {PeerAt("S", DeadAddress(), *stranger)}, {},
                      FastOptions(), false);
    a->gossip.reset();
    GossipOptions o;
    o.node_name = "A";
    o.fingerprint = kFingerprint;
    o.schedule = FastOptions();
    o.schedule.round_interval_s = period;
    o.peers = {PeerAt("S", DeadAddress(), *stranger)};
    auto closing_calls = std::make_shared<std::atomic<int64_t>>(0);
    a->shared.before_call = [closing_calls, merge_s](bool opens_round) {
      // Each round: open, publish, merge; every second closing call is a merge.
      if (!opens_round && ++*closing_calls % 2 == 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(merge_s));
      }
    };
    a->gossip = std::move(Gossip::Create(o, *a->id, *a->fed, a->shared)).value();
    EXPECT_TRUE(a->gossip->Start().ok());
    return a;
  }
};

TEST_F(GossipOverrunTest, ARoundThatEndsJustPastTheBoundaryJoinsTheNext) {
  // Merge at 0.05 s into a 0.1 s round, 0.06 s long: it ends ~0.01 s into
  // the next round, before that round's publish point (0.025 s).
  auto a = StartWithSlowMerges(0.1, 0.06);
  ASSERT_TRUE(WaitFor([&] { return a->gossip->Totals().rounds >= 12; }, 30));
  a->gossip->Stop();
  const GossipTotals t = a->gossip->Totals();
  // Skipping to the following boundary would miss one round per round.
  EXPECT_LT(t.rounds_missed * 2, t.rounds) << t.rounds_missed << " missed in " << t.rounds;
}

TEST_F(GossipOverrunTest, ARoundThatRunsLongSkipsAheadAndCountsWhatItMissed) {
  // 0.25 s merges in 0.1 s rounds: two boundaries pass during each.
  auto a = StartWithSlowMerges(0.1, 0.25);
  ASSERT_TRUE(WaitFor([&] { return a->gossip->Totals().rounds >= 4; }, 30));
  a->gossip->Stop();
  const GossipTotals t = a->gossip->Totals();
  EXPECT_GE(t.rounds_missed, 2 * (t.rounds - 1)) << t.rounds_missed << " missed in " << t.rounds;
}

// =========================================================================
// Dial-out: a node that cannot be called exchanges both ways on its calls.
// =========================================================================

Neighbour DialsIn(const std::string& name, const crypto::Identity& id) {
  Neighbour p = PeerAt(name, "", id);
  p.dials_in = true;
  return p;
}

TEST(GossipDialOutTest, ANodeThatDoesNotListenExchangesBothWays) {
  auto a_id = NewIdentity();
  auto b_id = NewIdentity();
  std::vector<float> initial = Ramp(0.0f, 0.0078125f), xa0, xb0;
  DriftApart(initial, &xa0, &xb0);
  // B listens and pins A as one that dials in; A listens nowhere.
  auto peer_a = DialsIn("A", *a_id);
  auto b = MakeNode("B", std::move(b_id), initial, xb0, "127.0.0.1:0", {peer_a});
  auto a = MakeNode("A", std::move(a_id), initial, xa0, "", {PeerAt("B", b->address(), *b->id)}, {}, FastOptions(),
                    true, [](GossipOptions& o) { o.dial_out = true; });
  EXPECT_EQ(a->gossip->Totals().listen_port, 0);
  auto max_gap = [&] { return MaxGap(*a, *b); };
  // Only both directions close the gap: B's side of it moves only by what A hands over.
  ASSERT_TRUE(WaitFor([&] { return max_gap() < 1e-4f; }, 20)) << "gap " << max_gap();
  ASSERT_TRUE(WaitFor([&] { return b->peer(0).deltas_accepted >= 1 && a->peer(0).deltas_accepted >= 1; }));
  const PeerStatus at_b = b->peer(0), at_a = a->peer(0);
  EXPECT_TRUE(at_b.dials_in);
  EXPECT_EQ(at_b.state, "connected");
  EXPECT_GE(at_b.keyframes_accepted, 1);
  EXPECT_GT(at_b.bytes_received, 0);
  EXPECT_GT(at_b.served, 0);
  EXPECT_EQ(at_b.refused, 0);
  EXPECT_GE(at_a.handed_over, 2);
  EXPECT_EQ(at_a.hand_overs_refused, 0);
  EXPECT_GT(at_a.bytes_sent, 0);
  EXPECT_EQ(at_a.state, "connected");
  // B's mirror of A follows A's own log.
  EXPECT_GT(b->fed->mirror_stats(0).epoch, 0u);
}

TEST(GossipDialOutTest, ANeighbourWithAnAddressIsNotAskedToHandOver) {
  auto a_id = NewIdentity();
  auto b_id = NewIdentity();
  std::vector<float> initial = Ramp(0.0f, 0.0078125f);
  // B pins A at an address (nobody there): B pulls A itself, so A's
  // Exchange is answered like a Pull.
  auto b = MakeNode("B", std::move(b_id), initial, initial, "127.0.0.1:0", {PeerAt("A", DeadAddress(), *a_id)});
  auto a = MakeNode("A", std::move(a_id), initial, initial, "", {PeerAt("B", b->address(), *b->id)}, {},
                    FastOptions(), true, [](GossipOptions& o) { o.dial_out = true; });
  // Many calls on one connection: each Exchange B ends without asking is
  // forgotten by B's screen too, so the connection is never cut as one
  // holding too many unfinished streams.
  ASSERT_TRUE(WaitFor([&] { return a->peer(0).pulls_ok >= 20; }, 20));
  EXPECT_EQ(a->peer(0).pulls_failed, 0) << a->peer(0).last_error;
  EXPECT_EQ(b->gossip->Totals().connections_screened, 0);
  EXPECT_EQ(a->peer(0).handed_over, 0);
  EXPECT_EQ(b->peer(0).keyframes_accepted + b->peer(0).deltas_accepted, 0);
}

// B pins A as dialling in; the test speaks for A on raw Exchange calls.
class GossipHandOverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = NewIdentity();
    initial_ = Ramp(0.0f, 0.0078125f);
    StartB(nullptr);
    // A's own log: one published round, so a hand-over carries a keyframe.
    a_fed_ = std::move(federation::Federation::Create({}, initial_, 1, 1)).value();
    std::vector<float> x = Ramp(0.5f, 0.001f);
    a_fed_->Publish(x.data(), 10);
  }

  // (Re)starts B with `edit` applied to its options.
  void StartB(const std::function<void(GossipOptions&)>& edit) {
    b_.reset();
    b_ = MakeNode("B", NewIdentity(), initial_, initial_, "127.0.0.1:0", {DialsIn("A", *a_)}, {}, FastOptions(), true,
                  edit);
    stub_ = Peer::NewStub(grpc::CreateChannel(b_->address(), grpc::InsecureChannelCredentials()));
  }

  using Call = grpc::ClientReaderWriter<ExchangeUp, PullChunk>;
  using Upload = std::function<void(crypto::ClientSession&, const PullHeader&, Call&)>;

  // One Exchange as A: the answer is opened (the test fails if it is not
  // whole), then `upload` sends what it likes and our half is closed.
  // deadline_s 0: the call has none.
  grpc::Status Exchange(const Upload& upload, double deadline_s = 5, PullHeader* asked = nullptr) {
    grpc::ClientContext ctx;
    if (deadline_s > 0) {
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000)));
    }
    auto session = Begin(*a_, b_->id->public_key(), Params(0, 0));
    auto call = stub_->Exchange(&ctx);
    ExchangeUp hello;
    hello.set_hello(session->hello());
    EXPECT_TRUE(call->Write(hello));
    PullChunk c;
    EXPECT_TRUE(call->Read(&c));
    auto header_bytes = session->AcceptReply(c.reply());
    EXPECT_TRUE(header_bytes.ok()) << header_bytes.status();
    PullHeader header;
    EXPECT_TRUE(header.ParseFromString(*header_bytes));
    bool final = false;
    while (!final && call->Read(&c)) EXPECT_TRUE(session->Open(c.sealed(), &final).ok());
    EXPECT_TRUE(final);
    if (asked) *asked = header;
    upload(*session, header, *call);
    call->WritesDone();
    EXPECT_FALSE(call->Read(&c)) << "B sent more after its answer";
    return call->Finish();
  }

  // A's honest hand-over of what B asked for; `edit` may spoil the header
  // or a sealed chunk (index 0: the header's) before it is sent.
  Upload HandOver(const std::function<void(PullHeader&)>& edit_header = nullptr,
                  const std::function<void(int, std::string&)>& edit_chunk = nullptr, bool extra_chunk = false) {
    return [this, edit_header, edit_chunk, extra_chunk](crypto::ClientSession& session, const PullHeader& asked,
                                                        Call& call) {
      EXPECT_TRUE(asked.hand_over());
      federation::SharedPullAnswer shared = a_fed_->AnswerShared(asked.want_epoch(), asked.want_after_seq());
      PayloadPieces payload(shared);
      PullHeader h;
      h.set_epoch(shared.answer.epoch);
      h.set_from_seq(shared.answer.from_seq);
      h.set_to_seq(shared.answer.to_seq);
      h.set_keyframe(shared.answer.keyframe);
      h.set_codec(shared.answer.codec);
      h.set_fingerprint(kFingerprint);
      h.set_samples_trained(shared.answer.samples_trained);
      h.set_degree(shared.answer.degree);
      h.set_count(static_cast<uint32_t>(shared.deltas.size()));
      h.set_payload_bytes(payload.size());
      h.set_parameters(kSize);
      if (edit_header) edit_header(h);
      ExchangeUp up;
      up.set_stream(*session.StartUpstream());
      session.SealUpTo(h.SerializeAsString(), false, up.mutable_sealed());
      if (edit_chunk) edit_chunk(0, *up.mutable_sealed());
      call.Write(up);
      up.clear_stream();
      int i = 1;
      SealPayload(payload, SealUp(session), up.mutable_sealed(), [&] {
        if (edit_chunk) edit_chunk(i++, *up.mutable_sealed());
        return call.Write(up);
      }, kUpChunkBytes);
      if (extra_chunk) call.Write(up);
    };
  }

  std::unique_ptr<crypto::Identity> a_;
  std::vector<float> initial_;
  std::unique_ptr<Node> b_;
  std::unique_ptr<Peer::Stub> stub_;
  std::unique_ptr<federation::Federation> a_fed_;
};

TEST_F(GossipHandOverTest, AnHonestHandOverIsAppliedToTheMirror) {
  grpc::Status st = Exchange(HandOver());
  ASSERT_TRUE(st.ok()) << st.error_message();
  const PeerStatus a = b_->peer(0);
  EXPECT_EQ(a.state, "connected");
  EXPECT_EQ(a.keyframes_accepted, 1);
  EXPECT_EQ(a.pulls_ok, 1);
  EXPECT_GT(a.bytes_received, int64_t{kSize * 4});
  EXPECT_EQ(b_->fed->mirror_stats(0).epoch, a_fed_->epoch());
}

TEST_F(GossipHandOverTest, ATamperedChunkIsRefusedAndTheMirrorStaysEmpty) {
  grpc::Status st = Exchange(HandOver(nullptr, [](int i, std::string& sealed) {
    if (i == 1) sealed[sealed.size() / 2] ^= 1;
  }));
  EXPECT_THAT(st.error_message(), StartsWith("tampered:"));
  EXPECT_EQ(b_->peer(0).refusals["tampered"], 1);
  EXPECT_EQ(b_->peer(0).state, "rejected");
  EXPECT_EQ(b_->fed->mirror_stats(0).epoch, 0u);
  // A later honest one is taken.
  ASSERT_TRUE(Exchange(HandOver()).ok());
  EXPECT_EQ(b_->peer(0).keyframes_accepted, 1);
}

TEST_F(GossipHandOverTest, AHeaderClaimingAnotherShapeIsBadShape) {
  grpc::Status st = Exchange(HandOver([](PullHeader& h) { h.set_parameters(kSize + 1); }));
  EXPECT_THAT(st.error_message(), StartsWith("bad_shape:"));
  st = Exchange(HandOver([](PullHeader& h) { h.set_payload_bytes(uint64_t{1} << 40); }));
  EXPECT_THAT(st.error_message(), StartsWith("bad_shape:"));
  EXPECT_EQ(b_->peer(0).refusals["bad_shape"], 2);
  EXPECT_EQ(b_->fed->mirror_stats(0).epoch, 0u);
}

TEST_F(GossipHandOverTest, AnotherModelsHandOverIsAFingerprintMismatch) {
  grpc::Status st = Exchange(HandOver([](PullHeader& h) { h.set_fingerprint("another-model"); }));
  EXPECT_THAT(st.error_message(), StartsWith("fingerprint_mismatch:"));
  EXPECT_EQ(b_->fed->mirror_stats(0).epoch, 0u);
}

TEST_F(GossipHandOverTest, ChunksAfterTheFinalOneAreTrailingData) {
  grpc::Status st = Exchange(HandOver(nullptr, nullptr, /*extra_chunk=*/true));
  EXPECT_THAT(st.error_message(), StartsWith("trailing_data:"));
  EXPECT_EQ(b_->fed->mirror_stats(0).epoch, 0u);
}

TEST_F(GossipHandOverTest, AHandOverThatStopsShortIsTruncated) {
  grpc::Status st = Exchange([](crypto::ClientSession& session, const PullHeader&, Call& call) {
    ExchangeUp up;
    up.set_stream(*session.StartUpstream());
    PullHeader h;
    h.set_fingerprint(kFingerprint);
    h.set_parameters(kSize);
    h.set_keyframe(true);
    h.set_payload_bytes(kSize * 4);
    session.SealUpTo(h.SerializeAsString(), false, up.mutable_sealed());
    call.Write(up);  // then nothing: our half closes without the payload
  });
  EXPECT_THAT(st.error_message(), StartsWith("truncated:"));
  EXPECT_EQ(b_->peer(0).refusals["truncated"], 1);
}

TEST_F(GossipHandOverTest, AStalledHandOverEndsAtTheCallsDeadlineAndServingGoesOn) {
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status st = Exchange([](crypto::ClientSession&, const PullHeader&, Call&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past the 1.5 s deadline
  }, 1.5);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(WaitFor([&] { return b_->peer(0).refusals["too_slow"] == 1; }, 5))
      << "the stalled hand-over still holds B's handler";
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 8);
  ASSERT_TRUE(Exchange(HandOver()).ok());
  EXPECT_EQ(b_->peer(0).keyframes_accepted, 1);
}

TEST_F(GossipHandOverTest, AHandOverOnACallWithoutADeadlineEndsAtMaxExchange) {
  StartB([](GossipOptions& o) { o.max_exchange_s = 1.5; });
  const auto t0 = std::chrono::steady_clock::now();
  PullHeader asked;
  grpc::Status st = Exchange([](crypto::ClientSession&, const PullHeader&, Call&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3000));
  }, /*deadline_s=*/0, &asked);
  EXPECT_TRUE(asked.hand_over());
  EXPECT_FALSE(st.ok());
  ASSERT_TRUE(WaitFor([&] { return b_->peer(0).refusals["too_slow"] == 1; }, 5));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 8);
  ASSERT_TRUE(Exchange(HandOver()).ok());
  EXPECT_EQ(b_->peer(0).keyframes_accepted, 1);
}

TEST_F(GossipHandOverTest, OneHandOverPerNeighbourAtATime) {
  StartB([](GossipOptions& o) { o.max_exchange_s = 3; });
  std::atomic<bool> first_asked{false};
  std::thread stalled([&] {
    PullHeader asked;
    Exchange([&](crypto::ClientSession&, const PullHeader& h, Call&) {
      first_asked = h.hand_over();
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    }, 5, &asked);
  });
  ASSERT_TRUE(WaitFor([&] { return first_asked.load(); }, 5));
  PullHeader second;
  EXPECT_TRUE(Exchange([](crypto::ClientSession&, const PullHeader&, Call&) {}, 5, &second).ok());
  EXPECT_FALSE(second.hand_over()) << "a second hand-over was asked while one was under way";
  stalled.join();
  // Once the first has ended, the next call is asked again.
  PullHeader third;
  EXPECT_TRUE(Exchange(HandOver(), 5, &third).ok());
  EXPECT_TRUE(third.hand_over());
}

// Anyone may open an Exchange and send nothing: a streaming handler starts
// before the first message. Few such calls are held at once, each only
// until hello_timeout_s, and pulls are served throughout.
TEST_F(GossipHandOverTest, ExchangesThatSendNoHelloAreCappedAndCutAndPullsGoOn) {
  StartB([](GossipOptions& o) { o.hello_timeout_s = 1; });
  const int64_t refused_before = b_->gossip->Totals().refused_unknown;
  struct Silent {
    std::unique_ptr<Peer::Stub> stub;
    grpc::ClientContext ctx;
    std::unique_ptr<Call> call;
  };
  // Three connections (a connection carries 4 streams at once), 4 calls each.
  std::vector<std::unique_ptr<Silent>> silent;
  for (int i = 0; i < 12; ++i) {
    silent.push_back(std::make_unique<Silent>());
    grpc::ChannelArguments args;
    args.SetInt("mycel.test.connection", i / 4);  // channels with other arguments share no connection
    silent.back()->stub = Peer::NewStub(grpc::CreateCustomChannel(b_->address(), grpc::InsecureChannelCredentials(), args));
    silent.back()->call = silent.back()->stub->Exchange(&silent.back()->ctx);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // A neighbour's pull is served at once.
  auto session = Begin(*a_, b_->id->public_key(), Params(0, 0));
  PullResult r = RawPull(*stub_, session->hello());
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  // Every silent call ends: refused at once past the cap, the others cut.
  int busy = 0, cut = 0;
  for (auto& s : silent) {
    PullChunk c;
    EXPECT_FALSE(s->call->Read(&c));
    grpc::Status st = s->call->Finish();
    if (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++busy;
    else ++cut;
  }
  EXPECT_EQ(cut, 4);
  EXPECT_EQ(busy, 8);
  // A cut is booked when the server's handler sees its own cancellation,
  // which may land after the caller has seen the call end.
  WaitFor([&] { return b_->gossip->Totals().refused_unknown >= refused_before + 4; }, 5);
  EXPECT_EQ(b_->gossip->Totals().refused_unknown, refused_before + 4);
}

}  // namespace mycel::peer
