// The pieces every `mycel` command shares: failing with one line, JSON output,
// the connection to the daemon, and how numbers, sizes and times are
// printed, so that each command prints them the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "cli/json.h"
#include "config/config.h"
#include "control.grpc.pb.h"
#include "mycel/client.h"

namespace mycel::cli {

class ProgressBar;

// Prints "mycel: <message>" on stderr and exits with `code`: 1 for a failure,
// 2 for usage or config errors.
[[noreturn]] void Fail(const std::string& message, int code = 1);

// The daemon, reached two ways over one socket: `api`, the public client
// (include/mycel/client.h) that applications use, for what it offers
// (pause, resume, streams of examples, and the words for a daemon that does
// not answer); `stub`, the generated control stub, for the administration
// the public API leaves out (peers, data, forget, export, files).
struct Client {
  std::string socket;
  std::unique_ptr<mycel::Client> api;
  std::unique_ptr<mycel::control::Control::Stub> stub;

  explicit Client(const std::string& socket_path);

  void Check(const grpc::Status& s) const;
  static void CheckApi(const mycel::Status& s);

  // Whether the daemon answers now.
  bool Answers() const;
  // gRPC says only "unavailable"; the public client tells a daemon that is
  // not running from a socket this user may not open.
  std::string WhyUnreachable() const;

  std::unique_ptr<grpc::ClientContext> Context(int seconds) const;
};

// The config at `path` (--config or $MYCEL_CONFIG), or the default file, or
// the defaults when there is no default file; fails with exit 2 otherwise.
mycel::config::Config LoadConfigOrFail(const std::string& path);
// The control socket: --socket when given, else the config's.
std::string SocketPath(const mycel::config::Config& config, const std::string& socket_override);

// Fails (after erasing `bar`'s line, if any) when `path` cannot be read.
std::string ReadFileOrFail(const std::string& path, ProgressBar* bar = nullptr);

// `v` with `digits` decimals; "-" for NaN or infinity.
std::string Fixed(double v, int digits);
// A learning rate: three significant digits, whatever its scale (0.1, 0.00123, 1e-06).
std::string Rate(double v);
// Seconds as 1h02m03s.
std::string Duration(double s);
// A size in B, KiB, MiB or GiB, with no more than four digits before the point.
std::string Bytes(int64_t b);
int64_t NowUnixMs();

// What a person reads in the peers table for a failed pull: the cause in a
// few words, not gRPC's whole chain ("unreachable: failed to connect to all
// addresses; last error: UNKNOWN: ipv4:...: Failed to connect to remote host:
// Connection refused"). `mycel peers --json` keeps the full message.
std::string ShortReason(const std::string& message);

// Where a neighbour is, as the tables show it.
std::string PeerWhere(const mycel::control::PeerInfo& p);

}  // namespace mycel::cli
