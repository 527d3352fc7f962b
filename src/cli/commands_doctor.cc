// `mycel doctor`: one line per check, OK or what to do.
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "cli/commands.h"
#include "common/version.h"

namespace mycel::cli {
namespace {

struct Doctor {
  int problems = 0;
  void Line(bool ok, const std::string& what, const std::string& said) {
    problems += !ok;
    std::printf("%-4s %-14s %s\n", ok ? "OK" : "FIX", what.c_str(), said.c_str());
  }
  int ExitCode() const { return problems == 0 ? 0 : 1; }
};

void CheckConfig(const mycel::config::Config& config, Doctor* d) {
  d->Line(true, "config",
          (config.path.empty() ? "none (" + mycel::config::DefaultConfigPath() + " does not exist): defaults"
                               : config.path) +
              "; " + std::to_string(config.peers.size()) + " peer(s) pinned" +
              (config.node.listen.empty() ? ", not listening (others cannot pull from this node)"
                                          : ", listening on " + config.node.listen));
  // Two nodes that cannot call each other never meet.
  for (const auto& p : config.peers) {
    if (p.dials_in && config.node.listen.empty()) {
      d->Line(false, "peer " + p.name, "it dials in (" + p.where + "), but this node has no [node] listen, so it "
                                       "cannot call: set listen, or pin it with an address and let this node call it");
    }
  }
}

// Free disk where the examples and checkpoints live.
void CheckDisk(const mycel::config::Config& config, Doctor* d) {
  // (Of the nearest directory that exists: myceld creates the state dir at its first start.)
  std::filesystem::path where(config.node.state_dir);
  struct statvfs fs;
  while (::statvfs(where.c_str(), &fs) != 0 && where.has_parent_path() && where != where.parent_path()) {
    where = where.parent_path();
  }
  if (::statvfs(where.c_str(), &fs) == 0) {
    const double free_bytes = static_cast<double>(fs.f_bavail) * fs.f_frsize;
    const double share = fs.f_blocks > 0 ? static_cast<double>(fs.f_bavail) / fs.f_blocks : 0;
    const bool ok = free_bytes >= 1e9 && share >= 0.05;
    d->Line(ok, "disk", Bytes(static_cast<int64_t>(free_bytes)) + " free in " + where.string() + " (" +
                            Fixed(100 * share, 0) + "%)" +
                            (ok ? "" : ": below 1 GB or 5%; a full disk stops checkpoints (nothing stored is lost)"));
  } else {
    d->Line(false, "disk",
            config.node.state_dir + ": " + std::strerror(errno) + " (myceld creates it at its first start)");
  }
}

// What the peers table says of one neighbour, as a check.
void CheckPeerState(const mycel::control::PeerInfo& p, int64_t now, Doctor* d) {
  const std::string what = "peer " + p.name();
  if (p.dials_in() && p.state() == "never") {
    d->Line(false, what, "it dials in and has not called yet: check that it runs, pins this node's key and has "
                         "[node] dial_out = true");
  } else if (p.state() == "connected") {
    d->Line(true, what, "exchanging with " + PeerWhere(p) + ", last " +
                            std::to_string(now - p.last_success_unix()) + "s ago");
  } else if (p.state() == "never") {
    d->Line(false, what, "no exchange yet with " + PeerWhere(p) + " (the first round may not have come)");
  } else if (p.state() == "unreachable") {
    d->Line(false, what, "cannot reach " + p.address() + ": " + ShortReason(p.last_error()));
  } else {
    std::string advice = p.last_error();
    if (advice.find("unpinned_key") != std::string::npos) {
      advice = "it has not pinned this node: on it, `mycel peers accept` this node's fingerprint (`mycel id`)";
    } else if (advice.find("stale") != std::string::npos) {
      advice = "its clock and this one are more than 120 s apart: turn on NTP (timedatectl set-ntp true)";
    }
    d->Line(false, what, "refused: " + advice);
  }
}

void CheckPeers(const mycel::config::Config& config, const mycel::control::PeersReply& peers, Doctor* d) {
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  // Rounds publish at T/4 and merge at T/2: clocks further apart than T/4
  // merge a neighbour's previous round; past 120 s, Hellos are refused.
  const double tolerance = std::min(120.0, config.federation.round_interval_s / 4);
  for (const auto& p : peers.peers()) {
    if (p.dials_in() && config.node.listen.empty()) continue;  // said above, from the config
    CheckPeerState(p, now, d);
    if (p.clock_skew_known()) {
      const double skew = p.clock_skew_s();
      const bool ok = std::fabs(skew) <= std::max(1.0, tolerance);  // 1 s: the Hello's resolution
      d->Line(ok, "peer " + p.name() + " clock",
              Fixed(std::fabs(skew), 0) + " s apart" +
                  (ok ? "" : ": rounds need them within " + Fixed(tolerance, 1) +
                                 " s (round_interval_s / 4); turn on NTP on both (timedatectl set-ntp true)"));
    }
  }
  if (peers.pending_size() > 0) {
    d->Line(false, "pending", std::to_string(peers.pending_size()) +
                                  " caller(s) asked to pair: `mycel peers pending`, then accept or ignore them");
  }
}

}  // namespace

void AddDoctorCommand(CLI::App& app) {
  app.add_subcommand("doctor", "check the config, the daemon, disk, power, each peer and its clock: OK or what to do");
}

int RunDoctor(const mycel::config::Config& config, const std::string& socket) {
  Doctor d;
  CheckConfig(config, &d);
  CheckDisk(config, &d);
  Client client(socket);
  mycel::control::StatusReply st;
  grpc::Status gs = client.stub->Status(client.Context(10).get(), {}, &st);
  if (!gs.ok()) {
    d.Line(false, "daemon",
           (gs.error_code() == grpc::StatusCode::UNAVAILABLE ? client.WhyUnreachable() : gs.error_message()) +
               ": start it (`myceld`, or `systemctl --user start myceld`)");
    return d.ExitCode();
  }
  d.Line(true, "daemon", "myceld " + st.version() + " answers on " + socket + "; " + st.state() + " (" +
                             st.reason() + ")");
  d.Line(st.version() == mycel::kVersion, "version",
         st.version() == mycel::kVersion
             ? std::string("mycel and myceld are both ") + mycel::kVersion
             : std::string("mycel ") + mycel::kVersion + " but myceld " + st.version() + ": restart myceld");
  const bool battery = st.power_source() == "battery";
  d.Line(true, "power",
         st.power_source() + (battery && config.policy.pause_on_battery ? ": training waits for mains" : ""));
  if (!st.discovery().empty()) {  // [node] discover is on
    d.Line(st.discovery_announced(), "LAN discovery",
           st.discovery() + (st.discovery_announced()
                                 ? ""
                                 : ": install and start avahi-daemon (apt install avahi-daemon; systemctl enable "
                                   "--now avahi-daemon), or set [node] discover = false"));
  }
  mycel::control::PeersReply peers;
  if (!client.stub->Peers(client.Context(10).get(), {}, &peers).ok()) return d.ExitCode();
  CheckPeers(config, peers, &d);
  return d.ExitCode();
}

}  // namespace mycel::cli
