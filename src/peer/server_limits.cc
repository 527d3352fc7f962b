#include "peer/server_limits.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/server_posix.h>

#include "absl/strings/numbers.h"
#include "common/logging.h"
#include "common/status.h"

namespace mycel::peer {
namespace {

// Sleep after an accept error before polling again: poll reports the backlog
// readable at once, so without it an EMFILE would spin a core.
constexpr int kAcceptErrorPauseMs = 100;
// At most one warning per this many seconds per listener: a flood must not
// become a log flood too.
constexpr double kWarnIntervalS = 10;

void CloseQuietly(int fd) {
  if (fd >= 0) ::close(fd);
}

absl::StatusOr<std::pair<std::string, std::string>> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError("peer listen address has no port: " + address);
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return std::make_pair(host, address.substr(colon + 1));
}

int BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

void SetPort(sockaddr* sa, int port) {
  if (sa->sa_family == AF_INET) reinterpret_cast<sockaddr_in*>(sa)->sin_port = htons(port);
  if (sa->sa_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(sa)->sin6_port = htons(port);
}

// Non-blocking, close-on-exec: accept4 on Linux, accept + fcntl elsewhere
// (macOS has no accept4).
int AcceptNonBlocking(int listen_fd, sockaddr_storage* from = nullptr) {
  socklen_t len = sizeof(sockaddr_storage);
  sockaddr* addr = reinterpret_cast<sockaddr*>(from);
#ifdef __linux__
  return ::accept4(listen_fd, addr, from != nullptr ? &len : nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
  int fd = ::accept(listen_fd, addr, from != nullptr ? &len : nullptr);
  if (fd >= 0) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return fd;
#endif
}

// "1.2.3.4" or "[::1]" for an accepted peer; "" for another family.
std::string HostOf(const sockaddr_storage& from) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (from.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(from).sin_addr, buf, sizeof(buf));
    return buf;
  }
  if (from.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(from).sin6_addr, buf, sizeof(buf));
    return std::string("[") + buf + "]";
  }
  return "";
}

bool MakePipe(int fds[2]) {
  if (::pipe(fds) != 0) return false;
  for (int i = 0; i < 2; ++i) {
    ::fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    ::fcntl(fds[i], F_SETFL, ::fcntl(fds[i], F_GETFL) | O_NONBLOCK);
  }
  return true;
}

}  // namespace

void ApplyPeerServerLimits(const PeerServerLimits& limits, grpc::ServerBuilder* builder) {
  grpc::ResourceQuota quota("mycel-peer");
  quota.Resize(static_cast<size_t>(limits.memory_quota_bytes));
  quota.SetMaxThreads(limits.max_threads);
  builder->SetResourceQuota(quota);  // the builder keeps its own reference
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, limits.stream_lookahead_bytes);
  // BDP probing grows windows toward the link's bandwidth-delay product (up
  // to MBs per stream); a Pull request needs one small window.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, limits.max_connection_idle_ms);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, limits.max_connection_age_ms);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, limits.max_connection_age_grace_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, limits.keepalive_time_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, limits.keepalive_timeout_ms);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              limits.min_recv_ping_interval_ms);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, limits.max_frame_size);
  builder->AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, limits.max_metadata_bytes);
  // Connections PeerListener hands over skip gRPC's handshaker; this bounds
  // any that come through a listening port all the same.
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, limits.max_connection_idle_ms);
}

int PeerConnectionCap(const PeerServerLimits& limits) {
  int cap = limits.max_connections;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && limits.fd_share_divisor > 0) {
    const rlim_t per_connection = 3;  // the client's socket and the pair to the server
    cap = static_cast<int>(
        std::min<rlim_t>(static_cast<rlim_t>(cap), rl.rlim_cur / limits.fd_share_divisor / per_connection));
  }
  return std::max(cap, 1);
}

absl::StatusOr<std::unique_ptr<PeerListener>> PeerListener::Bind(const std::string& address,
                                                                 const PeerServerLimits& limits) {
  MYCEL_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(address));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string& host = host_port.first;
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), host_port.second.c_str(), &hints, &res);
      rc != 0) {
    return absl::InvalidArgumentError("peer listen address " + address + ": " + ::gai_strerror(rc));
  }
  int count = 0;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) ++count;
  std::vector<int> fds;
  int port = 0;
  absl::Status failure = absl::OkStatus();
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      failure = ErrnoStatus(errno, "socket", address);
      continue;
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
      // One wildcard address: serve IPv4 too, as gRPC's "[::]:port" does.
      // Several (e.g. "localhost"): each family has its own socket.
      int v6only = count > 1 ? 1 : 0;
      ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
    }
    if (port != 0) SetPort(ai->ai_addr, port);  // port 0: every family on the port the first got
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      failure = ErrnoStatus(errno, "bind/listen", address);
      ::close(fd);
      continue;
    }
    port = BoundPort(fd);
    fds.push_back(fd);
  }
  ::freeaddrinfo(res);
  if (fds.empty()) {
    return failure.ok() ? absl::UnavailableError("cannot listen for peers on " + address) : failure;
  }
  int wake[2];
  if (!MakePipe(wake)) {
    absl::Status s = ErrnoStatus(errno, "pipe", address);
    for (int fd : fds) ::close(fd);
    return s;
  }
  return std::unique_ptr<PeerListener>(new PeerListener(std::move(fds), port, wake[0], wake[1], limits));
}

// One side of a relayed connection, or (conn == nullptr) a listening socket
// or the wake pipe: what epoll hands back.
struct PeerListener::Endpoint {
  Conn* conn = nullptr;
  int side = 0;  // 0: the client's TCP socket; 1: our end of the pair gRPC holds the other end of
  int fd = -1;
  bool registered = false;
  uint32_t events = 0;
};

struct PeerListener::Conn {
  explicit Conn(const H2ScreenLimits& limits) : screen(limits) {}
  size_t Pending(int side) const { return out[side].size() - out_off[side]; }

  Endpoint ends[2];
  std::vector<uint8_t> out[2];  // bytes waiting to be written to ends[i]
  size_t out_off[2] = {0, 0};
  bool eof[2] = {false, false};  // ends[i] will send no more
  bool shut_server_write = false;
  bool closed = false;
  H2ClientScreen screen;
  double accepted_at = 0;
  double close_by = 0;  // > 0: the server has closed; the client gets until then to take the rest
  int server_fd = -1;   // the end handed to gRPC (its "fd:N" peer), a key of hosts_
};

namespace {

double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// After the server closed its side, how long a client that does not read
// may hold the connection for the bytes still buffered for it.
constexpr double kDrainAfterServerCloseS = 10;

}  // namespace

PeerListener::PeerListener(std::vector<int> listen_fds, int port, int wake_read, int wake_write,
                           const PeerServerLimits& limits)
    : limits_(limits), listen_fds_(std::move(listen_fds)), port_(port), wake_read_(wake_read),
      wake_write_(wake_write) {
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

PeerListener::~PeerListener() {
  Stop();
  CloseListeners();
  CloseQuietly(wake_read_);
  CloseQuietly(wake_write_);
  CloseQuietly(reserve_fd_);
  CloseQuietly(epoll_fd_);
}

void PeerListener::Start(grpc::Server* server) {
  if (thread_.joinable() || stop_.load()) return;
  server_ = server;
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    Logger("peer")->error("peer port {}: epoll_create1: {}; not accepting", port_, std::strerror(errno));
    return;
  }
  auto add = [this](int fd) {
    listen_endpoints_.push_back(std::make_unique<Endpoint>());
    Endpoint* e = listen_endpoints_.back().get();
    e->fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = e;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  };
  for (int fd : listen_fds_) add(fd);
  add(wake_read_);
  Logger("peer")->info("peer port {}: at most {} connection(s) ({} configured, RLIMIT_NOFILE/{}/3)", port_,
                       PeerConnectionCap(limits_), limits_.max_connections, limits_.fd_share_divisor);
  thread_ = std::thread([this] { Loop(); });
}

void PeerListener::StopAccepting() {
  if (!thread_.joinable()) {
    CloseListeners();
    return;
  }
  stop_accepting_ = true;
  char byte = 0;
  (void)!::write(wake_write_, &byte, 1);
}

void PeerListener::Stop() {
  if (stop_.exchange(true)) return;
  char byte = 0;
  (void)!::write(wake_write_, &byte, 1);
  if (thread_.joinable()) thread_.join();
  for (auto& c : conns_) Close(c.get(), {});
  conns_.clear();
  CloseListeners();
}

void PeerListener::CloseListeners() {
  for (int fd : listen_fds_) ::close(fd);  // close() takes it out of the epoll set too
  listen_fds_.clear();
}

bool PeerListener::WarnDue() {
  auto now = std::chrono::steady_clock::now();
  if (now - last_warn_ < std::chrono::duration<double>(kWarnIntervalS)) return false;
  last_warn_ = now;
  return true;
}

void PeerListener::Loop() {
  epoll_event evs[64];
  while (!stop_.load()) {
    const int n = ::epoll_wait(epoll_fd_, evs, 64, 500);
    if (stop_.load()) break;
    if (n < 0 && errno != EINTR) ::usleep(kAcceptErrorPauseMs * 1000);
    if (stop_accepting_.load() && !listen_fds_.empty()) CloseListeners();
    for (int i = 0; i < n; ++i) {
      auto* e = static_cast<Endpoint*>(evs[i].data.ptr);
      if (e->conn != nullptr) {
        if (!e->conn->closed) OnEvent(e, evs[i].events);
      } else if (e->fd == wake_read_) {
        char buf[64];
        while (::read(wake_read_, buf, sizeof(buf)) > 0) {
        }
      } else if (!stop_accepting_.load() &&
                 std::find(listen_fds_.begin(), listen_fds_.end(), e->fd) != listen_fds_.end()) {
        AcceptReady(e->fd);
      }
    }
    if (std::chrono::steady_clock::now() - last_sweep_ >= std::chrono::milliseconds(500)) Sweep();
    // Freed only here: a closed connection's endpoints may still be in this batch.
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(), [](const auto& c) { return c->closed; }), conns_.end());
  }
}

void PeerListener::Sweep() {
  last_sweep_ = std::chrono::steady_clock::now();
  const double now = MonotonicSeconds();
  for (auto& c : conns_) {
    if (c->closed) continue;
    if (!c->screen.preface_done() && now - c->accepted_at > limits_.preface_timeout_ms / 1000.0) {
      Close(c.get(), "no HTTP/2 preface");
    } else if (c->close_by > 0 && now > c->close_by) {
      Close(c.get(), {});
    }
  }
}

std::string PeerListener::CallerHost(const std::string& grpc_peer) const {
  if (grpc_peer.rfind("fd:", 0) != 0) return "";
  int fd = -1;
  if (!absl::SimpleAtoi(grpc_peer.substr(3), &fd)) return "";
  std::lock_guard<std::mutex> lock(hosts_mu_);
  auto it = hosts_.find(fd);
  return it == hosts_.end() ? "" : it->second.second;
}

void PeerListener::Close(Conn* c, std::string_view why) {
  if (c->closed) return;
  c->closed = true;
  {
    std::lock_guard<std::mutex> lock(hosts_mu_);
    // gRPC may have closed its end already and the number gone to a newer connection: erase only ours.
    if (auto it = hosts_.find(c->server_fd); it != hosts_.end() && it->second.first == c) hosts_.erase(it);
  }
  live_.fetch_sub(1);
  // Counted before the client can see the close.
  const int64_t n = why.empty() ? 0 : screened_.fetch_add(1) + 1;
  for (Endpoint& e : c->ends) CloseQuietly(e.fd);  // close() takes it out of the epoll set too
  if (n > 0 && (n == 1 || WarnDue())) {
    Logger("peer")->warn("peer port {}: closed a connection: {} ({} so far)", port_, why, n);
  }
}

void PeerListener::Watch(Conn* c, int side) {
  Endpoint& e = c->ends[side];
  uint32_t want = 0;
  if (!c->eof[side] && c->Pending(1 - side) < static_cast<size_t>(limits_.relay_buffer_bytes)) {
    want |= EPOLLIN | EPOLLRDHUP;
  }
  if (c->Pending(side) > 0) want |= EPOLLOUT;
  if (want == 0) {
    if (e.registered) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, e.fd, nullptr);
    e.registered = false;
    e.events = 0;
    return;
  }
  if (e.registered && want == e.events) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.ptr = &e;
  if (::epoll_ctl(epoll_fd_, e.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, e.fd, &ev) != 0) {
    Close(c, {});
    return;
  }
  e.registered = true;
  e.events = want;
}

void PeerListener::OnEvent(Endpoint* e, uint32_t events) {
  Conn* c = e->conn;
  const int side = e->side;
  if (events & EPOLLERR) {
    Close(c, {});
    return;
  }
  const size_t cap = static_cast<size_t>(limits_.relay_buffer_bytes);
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && !c->eof[side]) {
    std::vector<uint8_t>& to = c->out[1 - side];
    while (c->Pending(1 - side) < cap) {
      const size_t room = std::min<size_t>(cap - c->Pending(1 - side), 16 << 10);
      const size_t at = to.size();
      to.resize(at + room);
      const ssize_t n = ::read(e->fd, to.data() + at, room);
      to.resize(at + static_cast<size_t>(std::max<ssize_t>(n, 0)));
      if (n > 0) {
        if (side == 0) {
          const std::string_view refused = c->screen.Feed(to.data() + at, static_cast<size_t>(n), MonotonicSeconds());
          if (!refused.empty()) {
            Close(c, refused);
            return;
          }
        } else {
          c->screen.FeedServer(to.data() + at, static_cast<size_t>(n));
        }
        continue;
      }
      if (n == 0) {
        c->eof[side] = true;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      Close(c, {});
      return;
    }
    // Hung up while its bytes cannot be taken (the other side is not
    // reading): nothing more will come; waiting would spin.
    if ((events & EPOLLHUP) && !c->eof[side] && c->Pending(1 - side) >= cap) {
      Close(c, {});
      return;
    }
  }
  Relay(c);
}

// Writes what each side has waiting, passes a client's end of stream on, and
// closes the connection once the server is done with it.
void PeerListener::Relay(Conn* c) {
  for (int side = 0; side < 2; ++side) {
    std::vector<uint8_t>& buf = c->out[side];
    while (c->Pending(side) > 0) {
      const ssize_t n = ::send(c->ends[side].fd, buf.data() + c->out_off[side], c->Pending(side), MSG_NOSIGNAL);
      if (n > 0) {
        c->out_off[side] += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      Close(c, {});  // EPIPE, ECONNRESET: that side is gone
      return;
    }
    if (c->out_off[side] == buf.size()) {
      buf.clear();
      c->out_off[side] = 0;
    } else if (c->out_off[side] >= buf.size() / 2) {
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(c->out_off[side]));
      c->out_off[side] = 0;
    }
  }
  if (c->eof[0] && c->Pending(1) == 0 && !c->shut_server_write) {
    ::shutdown(c->ends[1].fd, SHUT_WR);  // the server reads end of stream and closes the transport
    c->shut_server_write = true;
  }
  if (c->eof[1]) {
    if (c->Pending(0) == 0 || c->eof[0]) {
      Close(c, {});
      return;
    }
    if (c->close_by == 0) c->close_by = MonotonicSeconds() + kDrainAfterServerCloseS;
  }
  Watch(c, 0);
  if (!c->closed) Watch(c, 1);
}

// Drains the backlog of one listening socket: each connection is relayed to
// the server, or closed at once past the cap. Never stops listening.
void PeerListener::AcceptReady(int listen_fd) {
  for (int i = 0; i < 1024 && !stop_.load(); ++i) {  // then poll again, so one socket cannot starve the rest
    sockaddr_storage from{};
    int fd = AcceptNonBlocking(listen_fd, &from);
    if (fd < 0) {
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EMFILE || err == ENFILE) {
        // Out of descriptors because of something else in the process (our
        // cap keeps peers well below the limit). The classic remedy: give
        // up the spare descriptor, accept and close one connection so its
        // client hears at once rather than hangs, take the spare back.
        if (WarnDue()) {
          Logger("peer")->warn("peer port {}: accept: {} ({} peer connection(s) open); backing off", port_,
                               std::strerror(err), live_.load());
        }
        if (reserve_fd_ >= 0) {
          ::close(reserve_fd_);
          CloseQuietly(AcceptNonBlocking(listen_fd));
          reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
      } else if (WarnDue()) {
        Logger("peer")->warn("peer port {}: accept: {}; backing off", port_, std::strerror(err));
      }
      ::usleep(kAcceptErrorPauseMs * 1000);
      return;
    }
    const int live = live_.load();
    if (live >= PeerConnectionCap(limits_)) {
      ::close(fd);
      if (shed_.fetch_add(1) == 0 || WarnDue()) {
        Logger("peer")->warn("peer port {}: {} connections open, the cap: closing new ones ({} so far)", port_,
                             live, shed_.load());
      }
      continue;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
      const int err = errno;
      ::close(fd);
      if (WarnDue()) Logger("peer")->warn("peer port {}: socketpair: {}; backing off", port_, std::strerror(err));
      ::usleep(kAcceptErrorPauseMs * 1000);
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // as gRPC does on its own sockets
    auto conn = std::make_unique<Conn>(limits_.screen);
    Conn* c = conn.get();
    c->accepted_at = MonotonicSeconds();
    c->ends[0] = Endpoint{c, 0, fd};
    c->ends[1] = Endpoint{c, 1, pair[0]};
    c->server_fd = pair[1];
    {
      std::lock_guard<std::mutex> lock(hosts_mu_);
      hosts_[pair[1]] = {c, HostOf(from)};
    }
    conns_.push_back(std::move(conn));
    live_.fetch_add(1);
    grpc::AddInsecureChannelFromFd(server_, pair[1]);  // the server owns pair[1] from here
    Watch(c, 0);
    if (!c->closed) Watch(c, 1);
  }
}

}  // namespace mycel::peer
