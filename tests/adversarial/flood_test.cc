// Red-team tests of the peer port: an unauthenticated caller on
// loopback tries to exhaust the victim daemon's descriptors, and the test
// checks what must keep working — the control socket, checkpoints, and an
// honest neighbour's exchanges once the flood stops.
//
// The victim runs under `prlimit --nofile=256:256` so ten times its limit is
// a flood the test binary can hold (2560 sockets) in seconds; a review saw
// the same failure at 1024 with 1500 connections and at 256 with 300.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

constexpr int kVictimFdLimit = 256;
constexpr int kFloodConnections = 10 * kVictimFdLimit;
constexpr double kFloodSeconds = 10;
// Issue 13: "within 5 s after the flood an honest neighbour exchanges again".
constexpr double kRecoverySeconds = 5;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Raises this process's soft descriptor limit to its hard one; returns it.
rlim_t RaiseOwnFdLimit() {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

// Idle TCP connections to 127.0.0.1:port that send nothing. Connections the
// server closes are noticed by Reap() and opened again by TopUp(), as a
// determined attacker would. Every socket closes with RST (SO_LINGER 0) so
// the flood leaves no TIME_WAIT entries to crowd out the honest neighbour's
// ports afterwards.
class IdleFlood {
 public:
  explicit IdleFlood(int port) : port_(port) {}
  ~IdleFlood() { CloseAll(); }
  IdleFlood(const IdleFlood&) = delete;
  IdleFlood& operator=(const IdleFlood&) = delete;

  // Opens up to `max_new` connections, never holding more than `target`.
  void TopUp(int target, int max_new) {
    for (int i = 0; i < max_new && static_cast<int>(fds_.size()) < target; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) return;  // our own limit: RaiseOwnFdLimit made room, so this is the kernel's
      linger lg{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(port_);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 && errno != EINPROGRESS) {
        ::close(fd);
        ++failed_connects_;
        continue;
      }
      fds_.push_back(fd);
      ++opened_;
    }
    peak_ = std::max(peak_, static_cast<int>(fds_.size()));
  }

  // Drops connections the server has closed; reads and discards whatever the
  // server sent (its HTTP/2 SETTINGS), which keeps us idle all the same.
  void Reap() {
    std::vector<pollfd> p;
    for (int fd : fds_) p.push_back({fd, POLLIN, 0});
    if (p.empty() || ::poll(p.data(), p.size(), 0) <= 0) return;
    std::vector<int> keep;
    char buf[4096];
    for (const pollfd& q : p) {
      bool dead = (q.revents & (POLLERR | POLLHUP)) != 0;
      if (!dead && (q.revents & POLLIN)) {
        ssize_t n = ::recv(q.fd, buf, sizeof(buf), MSG_DONTWAIT);
        dead = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      }
      if (dead) {
        ::close(q.fd);
        ++closed_by_server_;
      } else {
        keep.push_back(q.fd);
      }
    }
    fds_ = std::move(keep);
  }

  void CloseAll() {
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

  std::string Describe() const {
    return "opened " + std::to_string(opened_) + ", peak held " + std::to_string(peak_) + ", closed by the server " +
           std::to_string(closed_by_server_) + ", failed connects " + std::to_string(failed_connects_);
  }

 private:
  int port_;
  std::vector<int> fds_;
  int opened_ = 0, peak_ = 0, closed_by_server_ = 0, failed_connects_ = 0;
};

// True if a fresh connection to the port gets the server's HTTP/2 SETTINGS
// frame (9-byte header) within timeout_s: gRPC is serving, not just the
// kernel's backlog accepting.
bool PeerPortSpeaksHttp2(int port, double timeout_s) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    pollfd p{fd, POLLIN, 0};
    char buf[64];
    ok = ::poll(&p, 1, static_cast<int>(timeout_s * 1000)) == 1 && ::recv(fd, buf, sizeof(buf), 0) >= 9;
  }
  ::close(fd);
  return ok;
}


// ------------------------------------------------------------ raw HTTP/2

// A minimal HTTP/2 client that speaks just enough to make a gRPC server hold
// memory: the preface, HEADERS of a Pull call, and DATA within the flow
// control windows the server grants (an attacker who overruns them is simply
// disconnected, so it obeys them). It answers SETTINGS and PINGs like a live
// client, so keepalive does not end it early.
class H2Conn {
 public:
  explicit H2Conn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    linger lg{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      Close();
      return;
    }
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    Send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    Frame(0x4, 0, 0, "");  // SETTINGS, none
  }
  ~H2Conn() { Close(); }
  H2Conn(const H2Conn&) = delete;
  H2Conn& operator=(const H2Conn&) = delete;
  bool alive() const { return fd_ >= 0; }

  // Opens a Pull stream and leaves it unfinished (no END_STREAM, no DATA).
  uint32_t OpenPull() {
    const uint32_t id = next_stream_;
    next_stream_ += 2;
    std::string h;
    h += '\x83';                                      // :method POST
    h += '\x86';                                      // :scheme http
    h += '\x04'; Str(&h, "/mycel.peer.Peer/Pull");    // :path, literal, indexed name 4
    h += '\x01'; Str(&h, "127.0.0.1");                // :authority
    h += '\x0f'; h += '\x10'; Str(&h, "application/grpc");  // content-type (static 31)
    h += '\x00'; Str(&h, "te"); Str(&h, "trailers");
    Frame(0x1, 0x4, id, h);                           // HEADERS, END_HEADERS
    windows_[id] = initial_window_;
    return id;
  }

  // Starts a gRPC message on `id` that claims `claimed` bytes.
  void StartMessage(uint32_t id, uint32_t claimed) {
    std::string prefix(5, '\0');
    for (int i = 0; i < 4; ++i) prefix[1 + i] = static_cast<char>((claimed >> (24 - 8 * i)) & 0xff);
    SendData(id, prefix);
  }

  // Sends as much of a never-ending message on `id` as the windows allow.
  // Returns the bytes sent.
  int64_t Pump(uint32_t id) {
    int64_t sent = 0;
    static const std::string kJunk(16384, 'x');
    for (int i = 0; i < 64 && alive(); ++i) {
      const int64_t n = std::min<int64_t>({16384, conn_window_, windows_[id]});
      if (n <= 0 || !SendData(id, kJunk.substr(0, n))) break;
      sent += n;
    }
    return sent;
  }

  // Reads what the server sent: windows, settings, pings, resets.
  void Read() {
    char buf[65536];
    while (alive()) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return Close();
      if (n < 0) break;
      in_.append(buf, n);
    }
    while (in_.size() >= 9) {
      const uint8_t* b = reinterpret_cast<const uint8_t*>(in_.data());
      const size_t len = (b[0] << 16) | (b[1] << 8) | b[2];
      if (in_.size() < 9 + len) break;
      const uint8_t type = b[3], flags = b[4];
      const uint32_t sid = ((b[5] & 0x7f) << 24) | (b[6] << 16) | (b[7] << 8) | b[8];
      const std::string payload = in_.substr(9, len);
      in_.erase(0, 9 + len);
      const uint8_t* p = reinterpret_cast<const uint8_t*>(payload.data());
      if (type == 0x4 && !(flags & 1)) {                 // SETTINGS
        for (size_t i = 0; i + 6 <= len; i += 6) {
          const int id = (p[i] << 8) | p[i + 1];
          const int64_t v = (int64_t{p[i + 2]} << 24) | (p[i + 3] << 16) | (p[i + 4] << 8) | p[i + 5];
          if (id == 0x4) {
            for (auto& w : windows_) w.second += v - initial_window_;
            initial_window_ = v;
          }
        }
        Frame(0x4, 0x1, 0, "");
      } else if (type == 0x8 && len == 4) {              // WINDOW_UPDATE
        const int64_t inc = ((p[0] & 0x7f) << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
        (sid == 0 ? conn_window_ : windows_[sid]) += inc;
      } else if (type == 0x6 && !(flags & 1)) {          // PING
        Frame(0x6, 0x1, 0, payload);
      } else if (type == 0x3) {                          // RST_STREAM
        windows_[sid] = -1;
      } else if (type == 0x7) {                          // GOAWAY
        return Close();
      }
    }
  }
  bool StreamReset(uint32_t id) { return windows_[id] < 0; }

 private:
  static void Str(std::string* out, const std::string& s) {
    *out += static_cast<char>(s.size());  // all ours are < 127 bytes: one-byte length, no Huffman
    *out += s;
  }
  bool SendData(uint32_t id, const std::string& data) {
    if (!Frame(0x0, 0, id, data)) return false;
    conn_window_ -= data.size();
    windows_[id] -= data.size();
    return true;
  }
  bool Frame(uint8_t type, uint8_t flags, uint32_t id, const std::string& payload) {
    std::string f(9, '\0');
    f[0] = static_cast<char>(payload.size() >> 16);
    f[1] = static_cast<char>(payload.size() >> 8);
    f[2] = static_cast<char>(payload.size());
    f[3] = static_cast<char>(type);
    f[4] = static_cast<char>(flags);
    for (int i = 0; i < 4; ++i) f[5 + i] = static_cast<char>(id >> (24 - 8 * i));
    return Send(f + payload);
  }
  // All or nothing; a frame the socket cannot take now is dropped with the
  // connection (the attacker opens no more than the kernel buffers).
  bool Send(const std::string& bytes) {
    size_t off = 0;
    for (int tries = 0; off < bytes.size() && alive() && tries < 1000; ++tries) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += n;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 10);
      } else {
        Close();
      }
    }
    if (off < bytes.size()) Close();
    return alive();
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  uint32_t next_stream_ = 1;
  int64_t initial_window_ = 65535, conn_window_ = 65535;
  std::map<uint32_t, int64_t> windows_;  // -1: reset by the server
  std::string in_;
};

// Resident set size of a process in bytes (Linux /proc), 0 if unknown.
int64_t RssBytes(pid_t pid) {
  std::string status;
  if (!Exists("/proc/" + std::to_string(pid) + "/status")) return 0;
  status = ReadFileOrDie("/proc/" + std::to_string(pid) + "/status");
  size_t at = status.find("VmRSS:");
  if (at == std::string::npos) return 0;
  return std::stoll(status.substr(at + 6)) * 1024;
}

struct Node {
  std::unique_ptr<TestNode> node;
  std::string name, key;
  int port = 0;
};

Node MakeNode(const std::string& dir, const std::string& name) {
  Node n;
  n.name = name;
  n.node = std::make_unique<TestNode>(dir, name);
  n.port = FreePort();
  auto id = n.node->Mycel({"id"});
  EXPECT_EQ(id.exit_code, 0) << id.Describe();
  n.key = id.out.substr(0, id.out.find('\n'));
  return n;
}

// A small federation config: checkpoints every second so the flood window
// holds several; the neighbour retries at least every second so "exchanges
// again within 5 s" measures the victim's listener, not our backoff.
void WriteConfig(const Node& n, const Node& peer) {
  std::string toml = "[node]\nname = \"" + n.name + "\"\nstate_dir = \"" + n.node->state_dir() +
                     "\"\nlisten = \"127.0.0.1:" + std::to_string(n.port) +
                     "\"\nlog_level = \"info\"\n\n"
                     "[model]\nkind = \"mlp\"\nhidden = [32]\nseed = 11\n\n"
                     "[training]\ncheckpoint_interval_s = 1\neval_interval_s = 5\nmax_eval_examples = 200\n\n"
                     "[federation]\nround_interval_s = 0.2\npull_timeout_s = 2\nmax_backoff_s = 1\n\n"
                     "[[peers]]\nname = \"" + peer.name + "\"\naddress = \"127.0.0.1:" + std::to_string(peer.port) +
                     "\"\npublic_key = \"" + peer.key + "\"\n";
  WriteFileOrDie(n.node->config_path(), toml);
}

// `mycel status --json` of a node, or nullopt; never a test failure (during
// the flood a failure is what the test counts).
std::optional<Json> TryStatus(const TestNode& node, double timeout_s) {
  auto r = node.Mycel({"status", "--json"}, timeout_s);
  if (r.exit_code != 0) return std::nullopt;
  return ParseJson(r.out);
}

// pulls_ok of `node`'s first neighbour; -1 when `mycel peers` fails.
double PullsOk(const TestNode& node) {
  auto r = node.Mycel({"peers", "--json"}, 20);
  if (r.exit_code != 0) return -1;
  auto j = ParseJson(r.out);
  if (!j || !j->Find("peers") || j->Find("peers")->array.empty()) return -1;
  return j->Find("peers")->array[0].Num("pulls_ok");
}

TEST(PeerFloodTest, IdleConnectionsAtTenTimesTheFdLimitLeaveControlCheckpointsAndNeighbourWorking) {
  const std::string prlimit = "/usr/bin/prlimit";
  if (!Exists(prlimit)) GTEST_SKIP() << "needs prlimit (util-linux)";
  if (RaiseOwnFdLimit() < static_cast<rlim_t>(kFloodConnections + 256)) {
    GTEST_SKIP() << "the test itself needs " << kFloodConnections + 256 << " descriptors";
  }
  TempDir tmp;
  Node victim = MakeNode(tmp.path(), "victim");
  Node honest = MakeNode(tmp.path(), "honest");
  WriteConfig(victim, honest);
  WriteConfig(honest, victim);

  // The victim under a 256-descriptor limit, soft and hard, so it cannot lift it.
  const std::string victim_log = tmp.path() + "/victim.log";
  auto victim_proc = Process::Spawn({prlimit, "--nofile=" + std::to_string(kVictimFdLimit) + ":" +
                                                  std::to_string(kVictimFdLimit),
                                     "--", BinDir() + "/myceld", "-c", victim.node->config_path()},
                                    victim_log, victim_log);
  ASSERT_NE(victim_proc, nullptr);
  ASSERT_TRUE(PollUntil([&] { return TryStatus(*victim.node, 10).has_value(); }, 90, 0.5))
      << ReadFileOrDie(victim_log);
  ASSERT_TRUE(honest.node->daemon().Start());
  for (const Node* n : {&victim, &honest}) {
    auto r = n->node->Mycel({"ingest", "--labels", "0,1", T10kImages(), T10kLabels()});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
  // Before: the neighbour pulls from the victim, and the victim checkpoints.
  ASSERT_TRUE(PollUntil([&] { return PullsOk(*honest.node.get()) > 0; }, 60, 0.5))
      << honest.node->Mycel({"peers"}).out << ReadFileOrDie(victim_log);
  ASSERT_TRUE(PollUntil([&] {
    auto s = TryStatus(*victim.node, 10);
    return s && s->Num("checkpoints_written") > 0;
  }, 60, 0.5)) << ReadFileOrDie(victim_log);

  // The neighbour goes away before the flood and comes back during it, so it
  // needs a new connection: one it already holds would go on working even
  // while the victim accepts nothing.
  ASSERT_EQ(honest.node->daemon().Stop(), 0);

  // The flood: 2560 idle connections, topped up as the server closes them.
  IdleFlood flood(victim.port);
  flood.TopUp(kFloodConnections, kFloodConnections);
  const double flood_start = Now();
  int status_ok = 0, status_failed = 0;
  double checkpoints_at_start = NAN, checkpoints_at_end = NAN;
  bool honest_started = false;
  do {
    auto s = TryStatus(*victim.node, 5);
    if (s) {
      ++status_ok;
      if (std::isnan(checkpoints_at_start)) checkpoints_at_start = s->Num("checkpoints_written");
      checkpoints_at_end = s->Num("checkpoints_written");
    } else {
      ++status_failed;
    }
    if (!honest_started) {
      honest_started = true;
      EXPECT_TRUE(honest.node->daemon().Start());
    }
    SleepSeconds(1);
    flood.Reap();
    flood.TopUp(kFloodConnections, 512);  // at most 512 a second: the loopback's port range must last
  } while (Now() - flood_start < kFloodSeconds);
  const std::string flood_summary = flood.Describe();
  flood.CloseAll();
  const double flood_end = Now();
  const double pulls_at_end = PullsOk(*honest.node);

  EXPECT_EQ(status_failed, 0) << "`mycel status` failed during the flood " << status_failed << " time(s) of "
                              << status_failed + status_ok << "; flood: " << flood_summary;
  EXPECT_GT(checkpoints_at_end, checkpoints_at_start)
      << "no checkpoint written during the flood; flood: " << flood_summary;

  // After: within 5 s the neighbour exchanges again and the port speaks HTTP/2.
  const bool pulled = PollUntil([&] { return PullsOk(*honest.node) > pulls_at_end; }, kRecoverySeconds, 0.25);
  const double recovered_after = Now() - flood_end;
  EXPECT_TRUE(pulled) << "no pull from the victim within " << kRecoverySeconds << " s of the flood's end ("
                      << Now() - flood_end << " s); pulls_ok stays " << pulls_at_end << "; flood: " << flood_summary
                      << "\n" << honest.node->Mycel({"peers"}).out;
  EXPECT_TRUE(PeerPortSpeaksHttp2(victim.port, 2)) << "the peer port does not serve after the flood";
  EXPECT_TRUE(TryStatus(*victim.node, 10).has_value()) << "`mycel status` fails after the flood";

  const std::string log = ReadFileOrDie(victim_log);
  EXPECT_EQ(log.find("Too many open files"), std::string::npos) << "the victim hit EMFILE:\n" << log.substr(0, 20000);
  EXPECT_EQ(log.find("checkpoint failed"), std::string::npos);
  victim_proc->Signal(SIGTERM);
  EXPECT_EQ(victim_proc->Wait(60), 0) << log.substr(log.size() > 20000 ? log.size() - 20000 : 0);
  EXPECT_EQ(honest.node->daemon().Stop(), 0);
  std::printf("flood: %s; status ok %d/%d; checkpoints %g -> %g; neighbour pulled %.1f s after\n", flood_summary.c_str(),
              status_ok, status_ok + status_failed, checkpoints_at_start, checkpoints_at_end, recovered_after);
}


// Issue 13: eight oversized Pull requests took RSS from 273 MB to 1.38 GB,
// and 50 connections × 400 unfinished streams to 2.0 GB. Both at once, held
// 10 s: the victim's RSS must stay within 64 MB of its baseline, and the
// peer port and control socket must serve afterwards. gRPC 1.51's own limits
// left +497 MiB of it (the stream cap is not enforced before the client ACKs
// our SETTINGS, and a message's claimed length is checked only once it is
// in); PeerListener's screen closes both kinds of connection (h2_screen.h).
TEST(PeerFloodTest, UnfinishedStreamsAndOversizedPullsKeepRssBounded) {
  if (RaiseOwnFdLimit() < 512) GTEST_SKIP() << "the test needs 512 descriptors";
  TempDir tmp;
  Node victim = MakeNode(tmp.path(), "victim");
  Node honest = MakeNode(tmp.path(), "honest");  // pinned, never started: the victim only serves
  WriteConfig(victim, honest);
#if defined(__SANITIZE_ADDRESS__)
  // ASan's quarantine keeps freed memory back from reuse (256 MiB by
  // default), so RSS would count it against mycel: the victim runs without.
  const char* asan = std::getenv("ASAN_OPTIONS");
  setenv("ASAN_OPTIONS", (std::string(asan ? asan : "") + ":quarantine_size_mb=0").c_str(), 1);
#endif
  ASSERT_TRUE(victim.node->daemon().Start());
  const pid_t pid = victim.node->daemon().pid();
  // Training paused: RSS then moves only with what callers make it hold.
  ASSERT_EQ(victim.node->Mycel({"pause"}).exit_code, 0);
  SleepSeconds(2);
  int64_t baseline = 0;
  for (int i = 0; i < 5; ++i, SleepSeconds(0.2)) baseline = std::max(baseline, RssBytes(pid));
  ASSERT_GT(baseline, 0);

  constexpr int kOversized = 8, kStreamConns = 50, kStreamsEach = 400;
  std::vector<std::unique_ptr<H2Conn>> big, many;
  std::vector<uint32_t> big_stream;
  for (int i = 0; i < kOversized; ++i) {
    big.push_back(std::make_unique<H2Conn>(victim.port));
    big_stream.push_back(big.back()->OpenPull());
    big.back()->StartMessage(big_stream.back(), 1u << 30);  // claims 1 GiB, far past the 64 KiB hello limit
  }
  for (int i = 0; i < kStreamConns; ++i) {
    many.push_back(std::make_unique<H2Conn>(victim.port));
    for (int j = 0; j < kStreamsEach && many.back()->alive(); ++j) many.back()->OpenPull();
  }
  int64_t peak = baseline, pushed = 0;
  const double start = Now();
  while (Now() - start < 10) {
    for (size_t i = 0; i < big.size(); ++i) {
      big[i]->Read();
      if (big[i]->alive() && !big[i]->StreamReset(big_stream[i])) pushed += big[i]->Pump(big_stream[i]);
    }
    for (auto& c : many) c->Read();
    peak = std::max(peak, RssBytes(pid));
    SleepSeconds(0.05);
  }
  int big_alive = 0, many_alive = 0;
  for (auto& c : big) big_alive += c->alive();
  for (auto& c : many) many_alive += c->alive();
  big.clear();
  many.clear();
  const int64_t kMiB = 1 << 20;
  std::printf("RSS baseline %lld MiB, peak %lld MiB; %lld MiB of oversized Pulls pushed; connections alive at the "
              "end: %d/%d oversized, %d/%d with unfinished streams\n",
              static_cast<long long>(baseline / kMiB), static_cast<long long>(peak / kMiB),
              static_cast<long long>(pushed / kMiB), big_alive, kOversized, many_alive, kStreamConns);
  EXPECT_LE(peak, baseline + 64 * kMiB) << "RSS grew from " << baseline / kMiB << " MiB to " << peak / kMiB
                                        << " MiB";
  EXPECT_TRUE(PeerPortSpeaksHttp2(victim.port, 2));
  EXPECT_TRUE(TryStatus(*victim.node, 10).has_value());
  // Every hostile connection was closed by the screen, and `mycel peers` says so.
  auto peers = victim.node->Mycel({"peers", "--json"}, 20);
  ASSERT_EQ(peers.exit_code, 0) << peers.Describe();
  auto j = ParseJson(peers.out);
  ASSERT_TRUE(j.has_value()) << peers.out;
  EXPECT_GE(j->Num("connections_screened"), kOversized + kStreamConns) << peers.out;
  EXPECT_EQ(victim.node->daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
