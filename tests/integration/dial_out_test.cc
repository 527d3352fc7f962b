// A laptop that cannot be called (behind NAT) still federates: it pulls from
// a neighbour that listens and hands its own deltas over on the same call.
// First with a node that does not listen at all; then with one in its own
// network namespace, which can reach its neighbour over a veth pair but
// cannot be reached, as a laptop behind NAT. Both pair the way the README
// says: `mycel peers add` on the laptop, `pending`/`accept` on the other.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "laptops.h"

namespace mycel::it {
namespace {

std::optional<Json> PeerNamed(const Laptop& l, const std::string& name) {
  auto peers = l.node->MycelJson({"peers"});
  const Json* p = peers ? PeerNamed(*peers, name) : nullptr;
  if (p == nullptr) return std::nullopt;
  return *p;
}

ConfigSpec NodeLines(const std::string& lines) {
  ConfigSpec spec;
  spec.extra_node = lines;
  return spec;
}

// `a` took at least one update from `b`'s side and `b` at least one of a's
// deltas (not only the first keyframe).
bool Took(const Laptop& a, const std::string& name_of_b) {
  auto p = PeerNamed(a, name_of_b);
  return p && p->Str("state") == "connected" && p->Num("keyframes_accepted") >= 1 && p->Num("deltas_accepted") >= 1;
}

// The pairing the README describes, with the laptop `nat` behind NAT:
// it pins `hub`, calls it and so becomes pending there, and `hub` accepts it.
void PairAndExchange(Laptop& hub, Laptop& nat, const std::string& hub_address) {
  ASSERT_EQ(hub.node->Mycel({"ingest", "--labels", "0,1,2,3,4", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_EQ(nat.node->Mycel({"ingest", "--labels", "5,6,7,8,9", T10kImages(), T10kLabels()}).exit_code, 0);
  CommandResult add = nat.node->Mycel({"peers", "add", "hub", hub.key, hub_address});
  ASSERT_EQ(add.exit_code, 0) << add.Describe();

  std::optional<Json> pending;
  ASSERT_TRUE(PollUntil(
      [&] {
        pending = hub.node->MycelJson({"peers", "pending"});
        return pending && pending->Find("pending") && !pending->Find("pending")->array.empty();
      },
      60))
      << nat.node->daemon().LogSinceStart();
  const Json& p = pending->Find("pending")->array[0];
  EXPECT_EQ(p.Str("key_fingerprint"), nat.fingerprint);
  EXPECT_EQ(p.Str("address"), "") << "an address that cannot be called";
  ASSERT_TRUE(p.Find("dials_in") && p.Find("dials_in")->boolean);
  EXPECT_NE(hub.node->Mycel({"peers", "pending"}).out.find("(dials out)"), std::string::npos);

  // No --address needed: it said it dials out.
  CommandResult accept = hub.node->Mycel({"peers", "accept", nat.fingerprint, "--name", "nat"});
  ASSERT_EQ(accept.exit_code, 0) << accept.Describe();
  EXPECT_NE(accept.out.find("as a neighbour that dials in"), std::string::npos) << accept.out;
  EXPECT_NE(ReadFileOrDie(hub.node->dir() + "/" + "hub.peers.d/nat.toml").find("dials_in = true"),
            std::string::npos);

  EXPECT_TRUE(PollUntil([&] { return Took(hub, "nat") && Took(nat, "hub"); }, 120))
      << "hub: " << hub.node->Mycel({"peers"}).out << "\nnat: " << nat.node->Mycel({"peers"}).out
      << "\nhub log:\n" << hub.node->daemon().LogSinceStart() << "\nnat log:\n" << nat.node->daemon().LogSinceStart();
  auto at_nat = PeerNamed(nat, "hub");
  ASSERT_TRUE(at_nat);
  EXPECT_GE(at_nat->Num("handed_over"), 1);
  EXPECT_EQ(at_nat->Num("hand_overs_refused"), 0);
  auto at_hub = PeerNamed(hub, "nat");
  ASSERT_TRUE(at_hub);
  EXPECT_TRUE(at_hub->Find("dials_in") && at_hub->Find("dials_in")->boolean);
  EXPECT_EQ(at_hub->Num("refused"), 0);
  EXPECT_NE(hub.node->Mycel({"peers"}).out.find("(dials in)"), std::string::npos);
  CommandResult doctor = hub.node->Mycel({"doctor"});
  EXPECT_NE(doctor.out.find("exchanging with (dials in)"), std::string::npos) << doctor.out;
}

TEST(DialOutTest, ALaptopThatDoesNotListenPairsAndExchangesBothWays) {
  TempDir tmp;
  Laptop hub = NewLaptop(tmp.path(), "hub");
  // No listen line: it is called by no one. dial_out lets it pair without a restart.
  Laptop nat = NewLaptop(tmp.path(), "nat", NodeLines("dial_out = true\n"), /*listen=*/false);
  ASSERT_TRUE(hub.node->daemon().Start());
  ASSERT_TRUE(nat.node->daemon().Start());
  PairAndExchange(hub, nat, "127.0.0.1:" + std::to_string(hub.port));
}

// Two nodes that cannot call each other cannot pair: a node without listen
// that pins a neighbour as dialling in is told so by `mycel doctor`.
TEST(DialOutTest, DoctorSaysANodeWithoutListenCannotTakeANeighbourThatDialsIn) {
  TempDir tmp;
  Laptop nat = NewLaptop(tmp.path(), "nat", NodeLines("dial_out = true\n"), /*listen=*/false);
  Laptop other = NewLaptop(tmp.path(), "other", NodeLines("dial_out = true\n"), /*listen=*/false);
  ASSERT_TRUE(nat.node->daemon().Start());
  CommandResult add = nat.node->Mycel({"peers", "add", "other", other.key, "--dials-in"});
  ASSERT_EQ(add.exit_code, 0) << add.Describe();
  CommandResult doctor = nat.node->Mycel({"doctor"});
  EXPECT_EQ(doctor.exit_code, 1) << doctor.Describe();
  EXPECT_NE(doctor.out.find("this node has no [node] listen, so it cannot call"), std::string::npos) << doctor.out;
  EXPECT_NE(nat.node->daemon().LogSinceStart().find("dials in, but this node has no [node] listen"),
            std::string::npos);
}

// Runs a shell command; true if it exits 0.
bool Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

// A network namespace joined to ours by a veth pair: we are 10.231.N.1, it
// is 10.231.N.2. It can call us; nothing it listens on is reachable from
// here, as behind NAT, because it listens on its own loopback only.
class Namespace {
 public:
  Namespace() {
    const int n = static_cast<int>(::getpid() % 200) + 10;
    name_ = "mycel-nat-" + std::to_string(::getpid());
    here_ = "mvh" + std::to_string(::getpid());
    there_ = "mvt" + std::to_string(::getpid());
    ours_ = "10.231." + std::to_string(n) + ".1";
    theirs_ = "10.231." + std::to_string(n) + ".2";
    ok_ = Sh("ip netns add " + name_) && Sh("ip link add " + here_ + " type veth peer name " + there_) &&
          Sh("ip link set " + there_ + " netns " + name_) && Sh("ip addr add " + ours_ + "/30 dev " + here_) &&
          Sh("ip link set " + here_ + " up") &&
          Sh("ip netns exec " + name_ + " ip addr add " + theirs_ + "/30 dev " + there_) &&
          Sh("ip netns exec " + name_ + " ip link set " + there_ + " up") &&
          Sh("ip netns exec " + name_ + " ip link set lo up");
  }
  ~Namespace() {
    Sh("ip link del " + here_);
    Sh("ip netns del " + name_);
  }
  bool ok() const { return ok_; }
  // iproute2's `ip`, by path (the harness execs without a PATH search).
  std::string ip() const { return Exists("/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"; }
  const std::string& name() const { return name_; }
  const std::string& ours() const { return ours_; }
  const std::string& theirs() const { return theirs_; }

 private:
  std::string name_, here_, there_, ours_, theirs_;
  bool ok_ = false;
};

// A TCP connection from here to host:port within 2 s.
bool CanConnect(const std::string& host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

TEST(DialOutTest, ALaptopInItsOwnNetworkNamespaceCannotBeReachedYetExchangesBothWays) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root (CI runs as root)";
  Namespace ns;
  ASSERT_TRUE(ns.ok()) << "could not set up namespace " << ns.name() << " with a veth pair (iproute2)";
  TempDir tmp;
  const int hub_port = FreePort(), nat_port = FreePort();
  Laptop hub = NewLaptop(tmp.path(), "hub", NodeLines("listen = \"" + ns.ours() + ":" + std::to_string(hub_port) + "\"\n"),
                         /*listen=*/false);
  // It listens (for its own LAN, say), but on an address no one outside reaches.
  Laptop nat = NewLaptop(tmp.path(), "nat",
                         NodeLines("listen = \"127.0.0.1:" + std::to_string(nat_port) + "\"\ndial_out = true\n"),
                         /*listen=*/false);
  nat.node->daemon().set_prefix({ns.ip(), "netns", "exec", ns.name()});
  ASSERT_TRUE(hub.node->daemon().Start());
  ASSERT_TRUE(nat.node->daemon().Start());
  EXPECT_FALSE(CanConnect(ns.theirs(), nat_port)) << "the laptop behind NAT is reachable";
  EXPECT_FALSE(CanConnect("127.0.0.1", nat_port)) << "the namespace's loopback is ours";
  PairAndExchange(hub, nat, ns.ours() + ":" + std::to_string(hub_port));
  nat.node->daemon().Stop();
}

}  // namespace
}  // namespace mycel::it
