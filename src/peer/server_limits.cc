#include "peer/server_limits.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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
int AcceptNonBlocking(int listen_fd) {
#ifdef __linux__
  return ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
  int fd = ::accept(listen_fd, nullptr, nullptr);
  if (fd >= 0) {
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return fd;
#endif
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
    cap = static_cast<int>(std::min<rlim_t>(static_cast<rlim_t>(cap), rl.rlim_cur / limits.fd_share_divisor));
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

PeerListener::PeerListener(std::vector<int> listen_fds, int port, int wake_read, int wake_write,
                           const PeerServerLimits& limits)
    : limits_(limits), listen_fds_(std::move(listen_fds)), port_(port), wake_read_(wake_read),
      wake_write_(wake_write) {
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

PeerListener::~PeerListener() {
  Stop();
  CloseQuietly(wake_read_);
  CloseQuietly(wake_write_);
  CloseQuietly(reserve_fd_);
}

void PeerListener::Start(grpc::Server* server) {
  if (thread_.joinable() || stop_.load()) return;
  server_ = server;
  Logger("peer")->info("peer port {}: at most {} connection(s) ({} configured, RLIMIT_NOFILE/{})", port_,
                       PeerConnectionCap(limits_), limits_.max_connections, limits_.fd_share_divisor);
  thread_ = std::thread([this] { AcceptLoop(); });
}

void PeerListener::Stop() {
  if (stop_.exchange(true)) return;
  char byte = 0;
  (void)!::write(wake_write_, &byte, 1);
  if (thread_.joinable()) thread_.join();
  for (int fd : listen_fds_) ::close(fd);
  listen_fds_.clear();
}

int PeerListener::LiveConnections() {
  std::lock_guard<std::mutex> lock(mu_);
  SweepLocked();
  return static_cast<int>(tracked_.size());
}

void PeerListener::SweepLocked() {
  tracked_.erase(std::remove_if(tracked_.begin(), tracked_.end(),
                                [](const Tracked& t) {
                                  struct stat st {};
                                  return ::fstat(t.fd, &st) != 0 || static_cast<uint64_t>(st.st_ino) != t.ino ||
                                         static_cast<uint64_t>(st.st_dev) != t.dev;
                                }),
                 tracked_.end());
}

bool PeerListener::WarnDue() {
  auto now = std::chrono::steady_clock::now();
  if (now - last_warn_ < std::chrono::duration<double>(kWarnIntervalS)) return false;
  last_warn_ = now;
  return true;
}

void PeerListener::AcceptLoop() {
  std::vector<pollfd> pfds;
  for (int fd : listen_fds_) pfds.push_back({fd, POLLIN, 0});
  pfds.push_back({wake_read_, POLLIN, 0});
  while (!stop_.load()) {
    for (auto& p : pfds) p.revents = 0;
    int n = ::poll(pfds.data(), pfds.size(), -1);
    if (n < 0) {
      if (errno != EINTR) ::usleep(kAcceptErrorPauseMs * 1000);
      continue;
    }
    if (stop_.load()) break;
    for (size_t i = 0; i + 1 < pfds.size(); ++i) {
      if (pfds[i].revents & POLLIN) AcceptReady(pfds[i].fd);
    }
  }
}

// Drains the backlog of one listening socket: each connection is handed to
// the server, or closed at once past the cap. Never stops listening.
void PeerListener::AcceptReady(int listen_fd) {
  for (int i = 0; i < 1024 && !stop_.load(); ++i) {  // then poll again, so one socket cannot starve Stop
    int fd = AcceptNonBlocking(listen_fd);
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
                               std::strerror(err), LiveConnections());
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
    struct stat st {};
    bool admit = ::fstat(fd, &st) == 0;
    int live = 0;
    const int cap = PeerConnectionCap(limits_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // A number just returned by accept was free: any entry still holding
      // it is a connection gRPC has closed.
      tracked_.erase(std::remove_if(tracked_.begin(), tracked_.end(), [fd](const Tracked& t) { return t.fd == fd; }),
                     tracked_.end());
      if (admit && static_cast<int>(tracked_.size()) >= cap) SweepLocked();
      live = static_cast<int>(tracked_.size());
      admit = admit && live < cap;
      if (admit) {
        tracked_.push_back({fd, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)});
      }
    }
    if (!admit) {
      ::close(fd);
      if (shed_.fetch_add(1) == 0 || WarnDue()) {
        Logger("peer")->warn("peer port {}: {} connections open, the cap: closing new ones ({} so far)", port_,
                             live, shed_.load());
      }
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // as gRPC does on its own sockets
    grpc::AddInsecureChannelFromFd(server_, fd);  // the server owns fd from here
  }
}

}  // namespace mycel::peer
