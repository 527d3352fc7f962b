// Bounds on what a caller of the peer port can make this process hold before
// it has authenticated: descriptors, memory, threads, streams and time.
//
// The peer port is open to the network and a caller proves who it is only
// inside its first message (crypto::ServerSession), so everything gRPC does
// before that — accepting a connection, reading HTTP/2 frames, buffering a
// request — must stay bounded by these limits, whoever calls.
//
// Two parts:
//   ApplyPeerServerLimits  sets channel arguments and a resource quota on a
//                          grpc::ServerBuilder (streams per connection,
//                          memory, threads, idle/age timeouts, HTTP/2 sizes).
//   PeerListener           accepts the TCP connections itself, at most
//                          max_connections (and a share of RLIMIT_NOFILE) at
//                          a time, and relays each to the server over a
//                          socket pair (grpc::AddInsecureChannelFromFd),
//                          screening the client's bytes on the way
//                          (H2ClientScreen: streams before the SETTINGS ACK,
//                          unfinished streams, claimed message sizes, header
//                          blocks, stream rate). gRPC 1.51 (Debian 12) has no
//                          connection cap, its own accept loop stops for good
//                          on the first EMFILE ("Failed accept4: Too many open
//                          files"; newer gRPC retries), and it enforces
//                          neither the stream cap before the ACK nor a
//                          message's size before reading it: idle-connection
//                          floods used to leave the peer port and the control
//                          socket deaf until a restart, and unfinished streams
//                          and oversized Pulls took RSS past 2 GB.
//                          PeerListener never reaches the descriptor limit,
//                          and on EMFILE from elsewhere it backs off and
//                          goes on.
//
// Threads: PeerListener runs one thread (accept and relay, one epoll) between
// Start() and Stop(); its methods are called from one thread (Gossip::Start/
// Stop), the counters from any. Failures are returned by Bind(); after that
// the listener logs and never gives up.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "peer/h2_screen.h"

namespace grpc {
class Server;
class ServerBuilder;
}  // namespace grpc

namespace mycel::peer {

struct PeerServerLimits {
  // Live TCP connections on the peer port; a connection past the cap is
  // accepted and closed at once. A node pins a handful of neighbours and each
  // holds one connection to us, so 256 is ample; with the per-connection
  // bounds below, 256 connections cost at most ~1000 streams.
  int max_connections = 256;
  // ... and never more than RLIMIT_NOFILE (soft, read at each accept) divided
  // by this and by the 3 descriptors a relayed connection takes (its socket
  // and a socket pair), so the other 3/4 stay for the control socket,
  // checkpoints, the example store, log files and outgoing pulls: at a 256
  // limit, 21 peer connections; myceld raises the soft limit to the hard one
  // at start.
  int fd_share_divisor = 4;
  // A connection that has not sent the 24-byte HTTP/2 client preface within
  // this long is closed: an honest client sends it with its first packet,
  // so an idle TCP connection gives its slot back in seconds rather than at
  // max_connection_idle_ms.
  int preface_timeout_ms = 10 * 1000;
  // Bytes buffered per direction per connection while the other side is not
  // ready (the kernel's socket buffers come on top): reply chunks stream
  // through it, they are not held whole.
  int relay_buffer_bytes = 64 << 10;
  // What a client may send before gRPC reads it (peer/h2_screen.h).
  H2ScreenLimits screen;
  // HTTP/2 streams one connection may have open. A neighbour runs one Pull at
  // a time; 4 leaves room for a retry overlapping a slow reply. gRPC's
  // default is unlimited: 50 connections × 400 unfinished streams reached
  // 2.0 GB RSS. gRPC 1.51 enforces it only once the client has ACKed our
  // SETTINGS; before that, the screen does (screen.max_streams_before_settings_ack).
  int max_concurrent_streams = 4;
  // Memory gRPC may account to this server: read buffers, per-call arenas,
  // flow-control windows. Past it gRPC shrinks windows and then closes the
  // biggest connections. A Pull request is ≤ 64 KiB and a reply chunk
  // ≤ 1 MiB (peer/payload.h), so honest traffic of a few neighbours needs a
  // few MB; eight oversized Pulls used to take RSS from 273 MB to 1.38 GB.
  int64_t memory_quota_bytes = int64_t{64} << 20;
  // Threads the sync server may run handlers on; a call past it is answered
  // RESOURCE_EXHAUSTED. Serving is a short crypto check plus a sealed copy
  // of the log, so a few threads serve many neighbours.
  int max_threads = 16;
  // Per-stream receive window announced before a message starts (BDP
  // probing is off): a Pull request (≤ 64 KiB) fits in one. It does not cap
  // a message that claims more: gRPC 1.51 widens the window to the claimed
  // length and checks the size only once the message is in (~22 MiB pushed
  // per connection before the memory quota reset it); the screen closes such
  // a connection at the message's length prefix.
  int stream_lookahead_bytes = 64 << 10;
  // A connection with no call for this long is closed (GOAWAY). It also
  // ends raw TCP connections that never speak HTTP/2. 30 s is well above a
  // round interval of seconds; a neighbour with longer rounds reconnects.
  int max_connection_idle_ms = 30 * 1000;
  // Any connection is closed after this long (plus the grace for calls in
  // flight), so no caller holds a slot forever by keeping it busy.
  int max_connection_age_ms = 5 * 60 * 1000;
  int max_connection_age_grace_ms = 10 * 1000;
  // Server pings after this much silence and closes the connection if no
  // answer comes within the timeout: a peer that vanished (laptop lid
  // closed) gives back its slot within ~a minute.
  int keepalive_time_ms = 40 * 1000;
  int keepalive_timeout_ms = 20 * 1000;
  // The least interval between a client's pings we tolerate (gRPC default
  // 5 min, which would refuse our own neighbours' keepalive if they set one).
  int min_recv_ping_interval_ms = 10 * 1000;
  // Largest HTTP/2 frame we accept: the RFC 7540 default, the smallest allowed.
  int max_frame_size = 16 << 10;
  // Request headers: a gRPC call sends ~200 bytes of metadata. gRPC's default
  // is 8 KiB; 4 KiB keeps a header flood small without refusing a proxy's
  // added headers.
  int max_metadata_bytes = 4 << 10;
};

// Applies `limits` (all but the connection cap, which PeerListener enforces)
// to `builder`. Call before BuildAndStart.
void ApplyPeerServerLimits(const PeerServerLimits& limits, grpc::ServerBuilder* builder);

// The connection cap in force: min(max_connections, RLIMIT_NOFILE soft /
// fd_share_divisor / 3), at least 1.
int PeerConnectionCap(const PeerServerLimits& limits);

// Accepts TCP connections on `address` ("host:port", port 0 = any) and
// relays each to a running grpc::Server, within the connection cap.
class PeerListener {
 public:
  // Binds and listens (every address `host` resolves to); does not accept yet.
  static absl::StatusOr<std::unique_ptr<PeerListener>> Bind(const std::string& address,
                                                            const PeerServerLimits& limits);
  ~PeerListener();  // Stop()
  PeerListener(const PeerListener&) = delete;
  PeerListener& operator=(const PeerListener&) = delete;

  // The port bound (the one the OS picked for port 0).
  int port() const { return port_; }
  // Starts the thread. `server` (built with no listening port) must outlive
  // Stop().
  void Start(grpc::Server* server);
  // Closes the listening sockets; connections already relayed go on (call
  // before the server's Shutdown, so its calls in flight can finish).
  void StopAccepting();
  // Stops the thread and closes every connection. Idempotent.
  void Stop();

  // The address a connection came from, for gRPC's peer string of it
  // ("fd:N": gRPC sees only our relay's end): "1.2.3.4" or "[::1]"; "" if
  // it is not one of ours or has closed. Thread-safe.
  std::string CallerHost(const std::string& grpc_peer) const;
  // Connections relayed now (accepted and not yet closed). Thread-safe.
  int LiveConnections() const { return live_.load(); }
  // Connections closed at once because the cap was reached, since Bind.
  int64_t shed() const { return shed_.load(); }
  // Connections closed by the screen or the preface timeout, since Bind.
  int64_t screened() const { return screened_.load(); }

 private:
  struct Conn;
  struct Endpoint;
  PeerListener(std::vector<int> listen_fds, int port, int wake_read, int wake_write, const PeerServerLimits& limits);
  void Loop();
  void AcceptReady(int listen_fd);
  void OnEvent(Endpoint* e, uint32_t events);
  void Relay(Conn* c);
  void Close(Conn* c, std::string_view why);
  void Watch(Conn* c, int side);
  void Sweep();
  void CloseListeners();
  bool WarnDue();

  const PeerServerLimits limits_;
  std::vector<int> listen_fds_;
  const int port_;
  int wake_read_, wake_write_;  // a pipe: StopAccepting/Stop wake the thread
  int epoll_fd_ = -1;
  int reserve_fd_ = -1;         // /dev/null, given up on EMFILE to drain one connection
  grpc::Server* server_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false}, stop_accepting_{false};
  std::atomic<int> live_{0};
  std::atomic<int64_t> shed_{0}, screened_{0};
  mutable std::mutex hosts_mu_;
  // Guarded by hosts_mu_: server_fd → (the connection, its caller's host).
  std::unordered_map<int, std::pair<const Conn*, std::string>> hosts_;
  // Thread only:
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<std::unique_ptr<Endpoint>> listen_endpoints_;
  std::chrono::steady_clock::time_point last_warn_, last_sweep_;
};

}  // namespace mycel::peer
