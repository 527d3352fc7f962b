// LAN discovery ([node] discover), for real: this test process moves into
// network and mount namespaces of its own (loopback only, multicast on, a
// tmpfs over /run), starts a private D-Bus system bus and avahi-daemon there
// (allow-interfaces=lo, no IPv6, no reflector), then real myceld daemons
// that know nothing of each other. Nothing leaves loopback. Needs root;
// skipped, saying why, where the namespaces or avahi cannot be set up.
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "laptops.h"

namespace mycel::it {
namespace {

bool Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

ConfigSpec Discovering() {
  ConfigSpec spec;
  spec.extra_node = "discover = true\n";
  return spec;
}

class DiscoveryLanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = StartLan();
    if (!why.empty()) GTEST_SKIP() << "no private LAN with avahi-daemon: " << why;
  }

  // "" once avahi-daemon answers on the private bus; else why not.
  std::string StartLan() {
    if (::geteuid() != 0) return "needs root (network and mount namespaces, a system bus of its own)";
    for (const char* tool : {"/usr/bin/dbus-daemon", "/usr/sbin/avahi-daemon", "/usr/bin/avahi-publish",
                             "/usr/bin/avahi-browse"}) {
      if (::access(tool, X_OK) != 0) return std::string("no ") + tool + " (scripts/install-deps.sh installs it)";
    }
    if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) return std::string("unshare: ") + std::strerror(errno);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0) {
      return std::string("mount: ") + std::strerror(errno);
    }
    if (!Sh("ip link set lo up && ip link set lo multicast on")) return "cannot bring up lo with multicast";
    ::mkdir("/run/dbus", 0755);
    const std::string dir = tmp_.path();
    bus_ = Process::Spawn({"/usr/bin/dbus-daemon", "--system", "--nofork", "--nopidfile"}, dir + "/bus.out",
                          dir + "/bus.err");
    if (!bus_ || !PollUntil([] { return Exists("/run/dbus/system_bus_socket"); }, 20)) {
      return "dbus-daemon --system did not start: " + ReadFileOrDie(dir + "/bus.err");
    }
    return StartAvahi();
  }

  // avahi-daemon on loopback only, answering on the private bus; "" or why not.
  std::string StartAvahi() {
    const std::string dir = tmp_.path();
    WriteFileOrDie(dir + "/avahi-daemon.conf",
                   "[server]\nhost-name=mycel-lan-test\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=lo\n"
                   "enable-dbus=yes\n[wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\n"
                   "publish-workstation=no\n[reflector]\nenable-reflector=no\n");
    avahi_ = Process::Spawn({"/usr/sbin/avahi-daemon", "--file=" + dir + "/avahi-daemon.conf", "--no-chroot",
                             "--no-rlimits"},
                            dir + "/avahi.out", dir + "/avahi.err");
    if (!avahi_ || !PollUntil([&] { return avahi_->Running() && Sh("avahi-browse --terminate _mycel._tcp"); }, 30)) {
      return "avahi-daemon did not come up: " + ReadFileOrDie(dir + "/avahi.err");
    }
    return "";
  }

  // Keeps `avahi-publish -s NAME _mycel._tcp PORT TXT...` running.
  void Publish(const std::string& name, int port, const std::vector<std::string>& txt) {
    std::vector<std::string> argv = {"/usr/bin/avahi-publish", "-s", name, "_mycel._tcp", std::to_string(port)};
    argv.insert(argv.end(), txt.begin(), txt.end());
    publishers_.push_back(Process::Spawn(argv, tmp_.path() + "/publish.out", tmp_.path() + "/publish.err"));
  }

  static std::vector<Json> Pending(const Laptop& l) {
    auto j = l.node->MycelJson({"peers", "pending"});
    if (!j || !j->Find("pending")) return {};
    return j->Find("pending")->array;
  }

  static std::optional<Json> PendingWithKey(const Laptop& l, const std::string& fingerprint) {
    for (const Json& p : Pending(l)) {
      if (p.Str("key_fingerprint") == fingerprint) return p;
    }
    return std::nullopt;
  }

  static double PullsOk(const Laptop& l, const std::string& name) {
    auto peers = l.node->MycelJson({"peers"});
    const Json* p = peers ? PeerNamed(*peers, name) : nullptr;
    return p ? p->Num("pulls_ok") : 0;
  }

  TempDir tmp_;
  std::unique_ptr<Process> bus_, avahi_;
  std::vector<std::unique_ptr<Process>> publishers_;
};

TEST_F(DiscoveryLanTest, TwoStrangersFindEachOtherAcceptAndExchange) {
  Laptop alice = NewLaptop(tmp_.path(), "alice", Discovering());
  Laptop bob = NewLaptop(tmp_.path(), "bob", Discovering());
  ASSERT_TRUE(alice.node->daemon().Start());
  ASSERT_TRUE(bob.node->daemon().Start());
  ASSERT_EQ(alice.node->Mycel({"ingest", "--labels", "0,1,2,3,4", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_EQ(bob.node->Mycel({"ingest", "--labels", "5,6,7,8,9", T10kImages(), T10kLabels()}).exit_code, 0);

  // Neither pins nor calls the other: each is listed on the other's side
  // from its announcement alone, with its key and the port it listens on.
  for (auto [me, other] : {std::pair{&alice, &bob}, std::pair{&bob, &alice}}) {
    std::optional<Json> p;
    ASSERT_TRUE(PollUntil([&] { return (p = PendingWithKey(*me, other->fingerprint)).has_value(); }, 60))
        << me->node->daemon().LogSinceStart();
    EXPECT_EQ(p->Str("name"), other == &alice ? "alice" : "bob");
    EXPECT_EQ(p->Str("public_key"), other->key);
    EXPECT_EQ(p->Str("address"), "127.0.0.1:" + std::to_string(other->port));
    EXPECT_TRUE(p->Find("discovered") && p->Find("discovered")->boolean);
    EXPECT_TRUE(p->Find("same_model") && p->Find("same_model")->boolean);
    EXPECT_EQ(p->Num("requests"), 0);
    // Its own announcement is not listed; nothing was pinned by itself.
    EXPECT_FALSE(PendingWithKey(*me, me->fingerprint)) << "a node lists itself";
    auto peers = me->node->MycelJson({"peers"});
    ASSERT_TRUE(peers);
    EXPECT_EQ(PeerNamed(*peers, other == &alice ? "alice" : "bob"), nullptr) << "discovery pinned a peer";
  }
  CommandResult table = alice.node->Mycel({"peers", "pending"});
  EXPECT_NE(table.out.find(bob.fingerprint), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(" lan "), std::string::npos) << table.out;
  // Status and doctor say it is announced, under which name and port, and how many it sees.
  auto st = alice.node->Status();
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->Find("discovery_announced") && st->Find("discovery_announced")->boolean) << st->Str("discovery");
  EXPECT_EQ(st->Str("discovery"), "announced as 'alice (" + alice.fingerprint.substr(0, 9) + ")' (_mycel._tcp) on port " +
                                      std::to_string(alice.port) + "; 1 node seen");
  CommandResult doctor = alice.node->Mycel({"doctor"});
  EXPECT_NE(doctor.out.find("OK   LAN discovery  announced as 'alice"), std::string::npos) << doctor.out;

  // Accepted as any pending peer (one by fingerprint, one by name), the
  // handshake proves the keys and they exchange.
  CommandResult a = alice.node->Mycel({"peers", "accept", bob.fingerprint});
  ASSERT_EQ(a.exit_code, 0) << a.Describe();
  EXPECT_NE(a.out.find("pinned bob"), std::string::npos) << a.out;
  const std::string dropin = ReadFileOrDie(tmp_.path() + "/alice.peers.d/bob.toml");
  EXPECT_NE(dropin.find(bob.key), std::string::npos) << dropin;
  EXPECT_NE(dropin.find("127.0.0.1:" + std::to_string(bob.port)), std::string::npos) << dropin;
  CommandResult b = bob.node->Mycel({"peers", "accept", "alice"});
  ASSERT_EQ(b.exit_code, 0) << b.Describe();
  EXPECT_TRUE(PollUntil([&] { return PullsOk(alice, "bob") > 0 && PullsOk(bob, "alice") > 0; }, 90))
      << "alice: " << alice.node->Mycel({"peers"}).out << "\nbob: " << bob.node->Mycel({"peers"}).out;
  // Pinned keys leave the list, and their announcements do not bring them back.
  EXPECT_TRUE(PollUntil([&] { return Pending(alice).empty() && Pending(bob).empty(); }, 30))
      << alice.node->Mycel({"peers", "pending"}).out << bob.node->Mycel({"peers", "pending"}).out;
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
  EXPECT_EQ(bob.node->daemon().Stop(), 0);
}

TEST_F(DiscoveryLanTest, RecordsThatLieAreNeverListedAndAGoneOneLeaves) {
  Laptop alice = NewLaptop(tmp_.path(), "alice", Discovering());
  Laptop carol = NewLaptop(tmp_.path(), "carol");  // keys only: never started
  Laptop dave = NewLaptop(tmp_.path(), "dave");
  const std::string fp = "fp=" + carol.fingerprint;
  // A key that is not the one its fingerprint names; a key that is not
  // base64; an absurd name. And one honest record, to show the others were seen.
  Publish("liar-key", 7002, {"v=1", "name=liar-key", fp, "pk=" + dave.key});
  Publish("liar-b64", 7003, {"v=1", "name=liar-b64", fp, "pk=" + std::string(43, '!') + "="});
  Publish("liar-name", 7004, {"v=1", "name=" + std::string(200, 'n'), fp, "pk=" + carol.key});
  Publish("liar-twice", 7005, {"v=1", "name=liar-twice", fp, "pk=" + carol.key, "pk=" + dave.key});
  Publish("carol-record", 7001, {"v=1", "name=carol", fp, "pk=" + carol.key});
  ASSERT_TRUE(alice.node->daemon().Start());

  std::optional<Json> p;
  ASSERT_TRUE(PollUntil([&] { return (p = PendingWithKey(alice, carol.fingerprint)).has_value(); }, 60))
      << alice.node->daemon().LogSinceStart();
  EXPECT_EQ(p->Str("address"), "127.0.0.1:7001");
  EXPECT_EQ(p->Str("name"), "carol");
  EXPECT_FALSE(p->Find("same_model")->boolean) << "a record without a model fingerprint";
  SleepSeconds(3);  // the liars were browsed with it; give their resolution time too
  std::vector<Json> listed = Pending(alice);
  EXPECT_EQ(listed.size(), 1u);
  for (const Json& q : listed) {
    EXPECT_EQ(q.Str("address"), "127.0.0.1:7001") << q.Str("name") << " is listed";
    EXPECT_NE(q.Str("key_fingerprint"), dave.fingerprint);
  }
  // Its announcement withdrawn, a node that never called leaves the list.
  publishers_.back()->Kill();
  EXPECT_TRUE(PollUntil([&] { return !PendingWithKey(alice, carol.fingerprint); }, 30))
      << alice.node->Mycel({"peers", "pending"}).out;

  // avahi-daemon restarts: myceld says so once, waits, and discovers again;
  // meanwhile status says it is not announced, and why.
  auto announced = [&] {
    auto st = alice.node->Status();
    return st && st->Find("discovery_announced") && st->Find("discovery_announced")->boolean;
  };
  EXPECT_TRUE(announced());
  avahi_->Signal(SIGTERM);
  ASSERT_TRUE(avahi_->Wait(20));
  EXPECT_TRUE(PollUntil(
      [&] { return alice.node->daemon().LogSinceStart().find("avahi-daemon is not running") != std::string::npos; },
      30))
      << alice.node->daemon().LogSinceStart();
  EXPECT_FALSE(announced());
  EXPECT_NE(alice.node->Status()->Str("discovery").find("avahi-daemon"), std::string::npos)
      << alice.node->Status()->Str("discovery");
  ASSERT_EQ(StartAvahi(), "");
  Publish("carol-again", 7006, {"v=1", "name=carol", fp, "pk=" + carol.key});
  EXPECT_TRUE(PollUntil([&] { return (p = PendingWithKey(alice, carol.fingerprint)).has_value(); }, 60))
      << alice.node->daemon().LogSinceStart();
  if (p) EXPECT_EQ(p->Str("address"), "127.0.0.1:7006");
  EXPECT_TRUE(PollUntil(announced, 30)) << alice.node->Status()->Str("discovery");
  EXPECT_TRUE(alice.node->daemon().Running());
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
}

// No D-Bus system bus at all (as here, outside the namespace, or pointed at
// nothing): one warning naming it, and the daemon runs on without discovery.
TEST(DiscoveryWithoutAvahiTest, NoSystemBusIsOneWarningAndTheDaemonRuns) {
  TempDir tmp;
  Laptop alice = NewLaptop(tmp.path(), "alice", Discovering());
  // Never the machine's own bus: nothing is announced off this test.
  alice.node->daemon().set_prefix({"/usr/bin/env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + tmp.path() + "/no-bus"});
  ASSERT_TRUE(alice.node->daemon().Start());
  const std::string log = alice.node->daemon().LogSinceStart();
  EXPECT_NE(log.find("LAN discovery off: no D-Bus system bus"), std::string::npos) << log;
  EXPECT_EQ(log.find("LAN discovery off"), log.rfind("LAN discovery off")) << "warned more than once: " << log;
  CommandResult status = alice.node->Mycel({"status"});
  EXPECT_EQ(status.exit_code, 0) << status.Describe();
  // Status says discovery is off and why; doctor says what to do.
  const std::string why = "off: no D-Bus system bus at unix:path=" + tmp.path() + "/no-bus, so no avahi-daemon to reach";
  EXPECT_NE(status.out.find("discovery   " + why), std::string::npos) << status.out;
  auto st = alice.node->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->Str("discovery"), why);
  EXPECT_FALSE(st->Find("discovery_announced")->boolean);
  CommandResult doctor = alice.node->Mycel({"doctor"});
  EXPECT_EQ(doctor.exit_code, 1) << doctor.Describe();
  EXPECT_NE(doctor.out.find("FIX  LAN discovery  " + why + ": install and start avahi-daemon"), std::string::npos)
      << doctor.out;
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
}

// Without [node] discover, neither status nor doctor mentions it.
TEST(DiscoveryWithoutAvahiTest, OffByConfigIsNotMentioned) {
  TempDir tmp;
  Laptop alice = NewLaptop(tmp.path(), "alice");
  ASSERT_TRUE(alice.node->daemon().Start());
  auto st = alice.node->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->Str("discovery"), "");
  EXPECT_EQ(alice.node->Mycel({"status"}).out.find("discovery"), std::string::npos);
  EXPECT_EQ(alice.node->Mycel({"doctor"}).out.find("LAN discovery"), std::string::npos);
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
