// `mycel peers` (the table), its pairing subcommands `pending`, `add`,
// `accept` and `remove`, and `mycel reload`.
//
// Pinned peers that the CLI manages live one file each in the config's
// drop-in directory (config::PeersDropInDir), so the user's own TOML and its
// comments are never rewritten; the daemon is then asked to reload.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "cli/commands.h"
#include "common/coding.h"
#include "crypto/identity.h"

namespace mycel::cli {
namespace {

// Asks the daemon to re-read its config. A daemon that is not running is not
// an error here: it reads the config when it starts.
bool ReloadDaemon(const Client& client, mycel::control::ReloadReply* reply, std::string* error) {
  grpc::Status s = client.stub->Reload(client.Context(30).get(), {}, reply);
  if (s.ok()) return true;
  *error = s.error_code() == grpc::StatusCode::UNAVAILABLE ? "" : s.error_message();
  return false;
}

// The config file peers are pinned beside; fails if there is none.
std::string ConfigFileOrFail(const mycel::config::Config& config) {
  if (config.path.empty()) {
    Fail("no config file (" + mycel::config::DefaultConfigPath() +
             " does not exist): pinned peers live beside one; create it with [node] listen = \"0.0.0.0:7000\"",
         2);
  }
  return config.path;
}

mycel::control::PeersReply PeersOrFail(const Client& client) {
  mycel::control::PeersReply r;
  client.Check(client.stub->Peers(client.Context(10).get(), {}, &r));
  return r;
}

// Pins NAME (KEY, base64 as `mycel id` prints it) at ADDRESS, or as a
// neighbour that dials in when ADDRESS is "": one drop-in file
// (config::PinPeer), then a reload.
int PinPeer(const mycel::config::Config& config, const Client& client, const std::string& name,
            const std::string& key_b64, const std::string& address, const std::string& how) {
  auto me = mycel::crypto::Identity::LoadOrCreate(config.IdentityPath());
  if (!me.ok()) Fail(std::string(me.status().message()));
  auto pinned = mycel::config::PinPeer(config, name, key_b64, address, (*me)->public_key(), how);
  if (!pinned.ok()) Fail(std::string(pinned.status().message()), absl::IsInvalidArgument(pinned.status()) ? 2 : 1);
  const std::string& file = *pinned;
  auto key = mycel::Base64Decode(key_b64);
  const std::string at = address.empty() ? "as a neighbour that dials in" : "at " + address;
  const std::string fingerprint = mycel::crypto::KeyFingerprint(*key);
  mycel::control::ReloadReply r;
  std::string error;
  if (ReloadDaemon(client, &r, &error)) {
    if (r.peers() > static_cast<int>(config.peers.size())) {
      std::printf("pinned %s (%s) %s; myceld %s from the next round\n", name.c_str(), fingerprint.c_str(),
                  at.c_str(), address.empty() ? "takes its deltas when it calls" : "pulls from it");
    } else {
      // The daemon read another config, or cannot take peers without a restart.
      std::printf("pinned %s (%s) %s in %s, but the running myceld did not take it%s: restart myceld%s\n",
                  name.c_str(), fingerprint.c_str(), at.c_str(), file.c_str(),
                  r.needs_restart().empty() ? "" : (" (" + r.needs_restart() + ")").c_str(),
                  r.needs_restart().empty() ? ", or check it runs with this config" : "");
    }
  } else if (error.empty()) {
    std::printf("pinned %s (%s) %s; myceld is not running and exchanges with it when it starts\n", name.c_str(),
                fingerprint.c_str(), at.c_str());
  } else {
    ::unlink(file.c_str());
    Fail("the daemon refused the new peer list, so " + name + " is not pinned: " + error);
  }
  return 0;
}

int PeersPending(const Client& client, bool json) {
  const mycel::control::PeersReply r = PeersOrFail(client);
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  if (json) {
    Json pending = Json::array();
    for (const auto& p : r.pending()) {
      pending.push_back({
          {"name", p.name()}, {"public_key", p.public_key()}, {"key_fingerprint", p.key_fingerprint()},
          {"address", p.address()}, {"first_seen_unix", p.first_seen_unix()},
          {"last_seen_unix", p.last_seen_unix()}, {"requests", p.requests()}, {"same_model", p.same_model()},
          {"dials_in", p.dials_in()}, {"discovered", p.discovered()},
      });
    }
    PrintJson(Json{{"pending", std::move(pending)}});
    return 0;
  }
  if (r.pending_size() == 0) {
    std::printf("no pending peers (a node that pins this one's key and calls it, or one announced on the LAN "
                "with [node] discover, is listed here)\n");
    return 0;
  }
  std::printf("%-16s %-19s %-22s %-6s %-10s %8s  %s\n", "NAME", "KEY", "ADDRESS", "SEEN", "LAST", "REQUESTS",
              "MODEL");
  for (const auto& p : r.pending()) {
    // "lan": announced on the LAN (DNS-SD), which proves nothing; "call": it called and signed its Hello.
    const char* seen = p.discovered() ? (p.requests() > 0 ? "lan+call" : "lan") : "call";
    std::printf("%-16s %-19s %-22s %-6s %-10s %8lld  %s\n", p.name().c_str(), p.key_fingerprint().c_str(),
                p.dials_in() ? "(dials out)" : p.address().empty() ? "(does not listen)" : p.address().c_str(), seen,
                (std::to_string(now - p.last_seen_unix()) + "s ago").c_str(), static_cast<long long>(p.requests()),
                p.same_model() ? "same" : "DIFFERENT: it cannot exchange with this node");
  }
  std::printf("`mycel peers accept NAME|KEY-FINGERPRINT` pins one (check the fingerprint with its owner: `mycel id`)\n");
  return 0;
}

int PeersAdd(const mycel::config::Config& config, const Client& client, const PeersArgs& args) {
  if (args.address.empty() == !args.dials_in) {
    Fail(args.dials_in ? "give HOST:PORT or --dials-in, not both"
                       : "give where it listens (HOST:PORT), or --dials-in if it cannot be called and calls this node",
         2);
  }
  return PinPeer(config, client, args.name, args.key, args.address, "add");
}

int PeersAccept(const mycel::config::Config& config, const Client& client, const PeersArgs& args) {
  if (args.dials_in && !args.address.empty()) Fail("give --address or --dials-in, not both", 2);
  const std::string& who = args.name;
  const mycel::control::PeersReply r = PeersOrFail(client);
  std::vector<const mycel::control::PendingPeer*> found;
  for (const auto& p : r.pending()) {
    if (p.name() == who || p.key_fingerprint() == who) found.push_back(&p);
  }
  if (found.empty()) Fail("no pending peer named or fingerprinted '" + who + "' (`mycel peers pending` lists them)", 2);
  if (found.size() > 1) {
    std::string fps;
    for (const auto* p : found) fps += (fps.empty() ? "" : ", ") + p->key_fingerprint();
    Fail(std::to_string(found.size()) + " pending peers are called '" + who + "' (" + fps +
             "): accept one by its fingerprint",
         2);
  }
  const auto& p = *found.front();
  // A caller that cannot be called (dial_out) is pinned as one that dials in.
  std::string address = args.address;
  if (address.empty() && !args.dials_in && !p.dials_in()) address = p.address();
  if (address.empty() && !args.dials_in && !p.dials_in()) {
    Fail("'" + p.name() + "' does not say where it listens: give --address HOST:PORT, or --dials-in if it "
         "cannot be called (behind NAT) and calls this node",
         2);
  }
  // Callers name themselves, and two laptops left at the default are both
  // "mycel": a name already pinned gets a number unless --name says otherwise.
  const std::string name = args.accept_name.empty() ? mycel::config::FreePeerName(config, p.name()) : args.accept_name;
  return PinPeer(config, client, name, p.public_key(), address, "accept");
}

int PeersRemove(const mycel::config::Config& config, const Client& client, const std::string& name) {
  const std::string config_path = ConfigFileOrFail(config);
  const std::string dir = mycel::config::PeersDropInDir(config_path);
  for (const auto& p : config.peers) {
    if (p.name != name) continue;
    const std::string file = p.where.substr(0, p.where.rfind(':'));
    if (file.rfind(dir + "/", 0) != 0) {
      Fail("'" + name + "' is pinned at " + p.where +
               ", which mycel does not rewrite: delete that [[peers]] table, then `mycel reload`",
           2);
    }
    if (::unlink(file.c_str()) != 0) Fail("cannot remove " + file + ": " + std::strerror(errno));
    mycel::control::ReloadReply r;
    std::string error;
    if (!ReloadDaemon(client, &r, &error) && !error.empty()) Fail("removed " + file + ", but the reload failed: " + error);
    std::printf("unpinned %s (%s)\n", name.c_str(), mycel::crypto::KeyFingerprint(p.public_key).c_str());
    return 0;
  }
  Fail("no pinned peer named '" + name + "'", 2);
}

Json PeerJson(const mycel::control::PeerInfo& p) {
  Json refusals = Json::object();
  for (const auto& [reason, n] : p.refusals()) refusals[reason] = n;
  Json trust = Json::array();
  for (const auto& t : p.trust()) trust.push_back({{"layer", t.layer()}, {"trust", t.trust()}, {"harm", t.harm()}});
  return Json{
      {"name", p.name()}, {"address", p.address()}, {"key_fingerprint", p.key_fingerprint()},
      {"state", p.state()}, {"last_error", p.last_error()}, {"last_success_unix", p.last_success_unix()},
      {"epoch", std::to_string(p.epoch())},  // 64 random bits: a JSON number would round
      {"seq_applied", static_cast<int64_t>(p.seq_applied())}, {"samples_trained", p.samples_trained()},
      {"bytes_sent", p.bytes_sent()}, {"bytes_received", p.bytes_received()}, {"pulls_ok", p.pulls_ok()},
      {"pulls_failed", p.pulls_failed()}, {"served", p.served()}, {"deltas_accepted", p.deltas_accepted()},
      {"keyframes_accepted", p.keyframes_accepted()}, {"refused", p.refused()}, {"refusals", std::move(refusals)},
      {"next_retry_s", p.next_retry_s()}, {"merges", p.merges()}, {"clipped", p.clipped()},
      {"last_distance", p.last_distance()}, {"last_radius", p.last_radius()}, {"trust", std::move(trust)},
      {"trust_probes", p.trust_probes()}, {"hurt_probes", p.hurt_probes()}, {"quarantine", p.quarantine()},
      {"clock_skew_s", p.clock_skew_known() ? p.clock_skew_s() : NAN}, {"dials_in", p.dials_in()},
      {"handed_over", p.handed_over()}, {"hand_overs_refused", p.hand_overs_refused()},
      {"last_hand_over_error", p.last_hand_over_error()},
  };
}

void PrintPeersJson(const mycel::control::PeersReply& r) {
  Json peers = Json::array();
  for (const auto& p : r.peers()) peers.push_back(PeerJson(p));
  PrintJson(Json{
      {"peers", std::move(peers)}, {"rounds", r.rounds()}, {"bytes_sent", r.bytes_sent()},
      {"bytes_received", r.bytes_received()}, {"refused_unknown", r.refused_unknown()},
      {"listen_port", r.listen_port()}, {"rounds_held", r.rounds_held()}, {"rounds_missed", r.rounds_missed()},
      {"connections_shed", r.connections_shed()}, {"connections_screened", r.connections_screened()},
      {"trust", r.trust()}, {"trust_probes", r.trust_probes()}, {"trust_probe_seconds", r.trust_probe_seconds()},
  });
}

// The REASONS column: refusals by reason, then what went wrong last.
std::string PeerReasons(const mycel::control::PeerInfo& p) {
  std::string reasons;
  for (const auto& [reason, n] : p.refusals()) reasons += (reasons.empty() ? "" : ", ") + reason + "=" + std::to_string(n);
  if (!p.last_error().empty() && p.state() != "connected") {
    reasons += (reasons.empty() ? "" : "; ") + ShortReason(p.last_error());
  }
  if (p.clipped() > 0) {
    // robust = reject/clip screened this neighbour out: how often, and how far it was last time.
    char clip[128];
    std::snprintf(clip, sizeof clip, "outlier in %lld of %lld merges (last: distance %.3g, radius %.3g)",
                  static_cast<long long>(p.clipped()), static_cast<long long>(p.merges()), p.last_distance(),
                  p.last_radius());
    reasons += (reasons.empty() ? "" : "; ") + std::string(clip);
  }
  if (!p.quarantine().empty()) {
    reasons += (reasons.empty() ? "" : "; ") + std::string("QUARANTINED: ") + p.quarantine();
  }
  if (p.hand_overs_refused() > 0) {
    reasons += (reasons.empty() ? "" : "; ") + std::string("it refused our deltas ") +
               std::to_string(p.hand_overs_refused()) + "x: " + ShortReason(p.last_hand_over_error());
  }
  return reasons;
}

// Per-layer trust learnt from this node's own validation data.
void PrintTrust(const mycel::control::PeersReply& r) {
  for (const auto& p : r.peers()) {
    if (p.trust_size() == 0) {
      std::printf("trust %-12s not probed yet\n", p.name().c_str());
      continue;
    }
    std::string layers;
    for (const auto& t : p.trust()) {
      char one[96];
      std::snprintf(one, sizeof one, "%s%s %.2f (harm %+.1f%%)", layers.empty() ? "" : ", ", t.layer().c_str(),
                    t.trust(), 100 * t.harm());
      layers += one;
    }
    std::printf("trust %-12s %s; hurt in %lld of %lld probes\n", p.name().c_str(), layers.c_str(),
                static_cast<long long>(p.hurt_probes()), static_cast<long long>(p.trust_probes()));
  }
}

// The lines under the table: totals, and what needs a look.
void PrintPeersFooter(const mycel::control::PeersReply& r) {
  std::printf("%lld rounds; %s sent, %s received; %lld requests refused from unknown callers\n",
              static_cast<long long>(r.rounds()), Bytes(r.bytes_sent()).c_str(), Bytes(r.bytes_received()).c_str(),
              static_cast<long long>(r.refused_unknown()));
  if (r.pending_size() > 0) {
    std::printf("%d pending peer(s) asked to pair: `mycel peers pending`\n", r.pending_size());
  }
  if (r.connections_shed() + r.connections_screened() > 0) {
    // Someone floods or probes the peer port (the daemon's log says how).
    std::printf("peer port: %lld connection(s) closed at the cap, %lld closed for what they sent\n",
                static_cast<long long>(r.connections_shed()), static_cast<long long>(r.connections_screened()));
  }
  if (r.rounds_missed() > 0) {
    // A few are normal on a busy machine; many mean rounds come faster than this machine can run them.
    const bool many = r.rounds_missed() * 10 > r.rounds();
    std::printf("%lld rounds missed because the previous round still ran%s\n",
                static_cast<long long>(r.rounds_missed()),
                many ? ": round_interval_s is too short for this machine" : "");
  }
}

void PrintPeersText(const mycel::control::PeersReply& r) {
  if (r.peers_size() == 0) {
    std::printf("no neighbours pinned (`mycel peers add NAME KEY HOST:PORT`, or [[peers]] in the config)\n");
    if (r.pending_size() > 0) {
      std::printf("%d pending peer(s) asked to pair: `mycel peers pending`\n", r.pending_size());
    }
    return;
  }
  std::printf("%-12s %-22s %-19s %-12s %-9s %8s %10s %10s %8s %7s  %s\n", "NAME", "ADDRESS", "KEY", "STATE",
              "LAST", "SEQ", "SENT", "RECEIVED", "ACCEPTED", "REFUSED", "REASONS");
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  for (const auto& p : r.peers()) {
    std::string last = p.last_success_unix() ? std::to_string(now - p.last_success_unix()) + "s ago" : "never";
    std::printf("%-12s %-22s %-19s %-12s %-9s %8llu %10s %10s %8lld %7lld  %s\n", p.name().c_str(),
                PeerWhere(p).c_str(), p.key_fingerprint().c_str(), p.state().c_str(), last.c_str(),
                static_cast<unsigned long long>(p.seq_applied()), Bytes(p.bytes_sent()).c_str(),
                Bytes(p.bytes_received()).c_str(), static_cast<long long>(p.deltas_accepted() + p.keyframes_accepted()),
                static_cast<long long>(p.refused()), PeerReasons(p).c_str());
  }
  if (r.trust()) PrintTrust(r);
  PrintPeersFooter(r);
}

}  // namespace

void AddPeersCommand(CLI::App& app, PeersArgs* args) {
  auto* peers = app.add_subcommand("peers", "pinned neighbours: state, last exchange, sequence, traffic, refusals");
  peers->add_flag("--json", args->json, "print JSON");
  peers->require_subcommand(0, 1);
  auto* pending = peers->add_subcommand("pending", "callers not pinned yet that asked to pair, and nodes announced on the LAN ([node] discover), newest first");
  pending->add_flag("--json", args->json, "print JSON");
  auto* add = peers->add_subcommand(
      "add", "pin a neighbour: NAME KEY HOST:PORT, or NAME KEY --dials-in (KEY as its `mycel id` prints it)");
  add->add_option("name", args->name, "what to call it (1-64 of A-Z a-z 0-9 . _ -)")->required();
  add->add_option("key", args->key, "its public key (base64)")->required();
  add->add_option("address", args->address, "where it listens, host:port");
  add->add_flag("--dials-in", args->dials_in,
                "it cannot be called (behind NAT): it calls this node and hands its deltas over");
  auto* accept = peers->add_subcommand("accept", "pin a pending peer, by its name or key fingerprint");
  accept->add_option("who", args->name, "NAME or KEY-FINGERPRINT from `mycel peers pending`")->required();
  accept->add_option("--address", args->address, "where it listens, host:port (default: the one it gave)");
  accept->add_flag("--dials-in", args->dials_in,
                   "it cannot be called: it calls this node (default for one that says so)");
  accept->add_option("--name", args->accept_name, "what to call it (default: the name it gave, numbered if taken)");
  auto* remove = peers->add_subcommand("remove", "unpin a neighbour that `mycel peers add/accept` pinned");
  remove->add_option("name", args->name, "its name in `mycel peers`")->required();
}

int RunPeers(const mycel::config::Config& config, const Client& client, const PeersArgs& args,
             const std::string& action) {
  if (action == "pending") return PeersPending(client, args.json);
  if (action == "add") return PeersAdd(config, client, args);
  if (action == "accept") return PeersAccept(config, client, args);
  if (action == "remove") return PeersRemove(config, client, args.name);
  const mycel::control::PeersReply r = PeersOrFail(client);
  if (args.json) {
    PrintPeersJson(r);
  } else {
    PrintPeersText(r);
  }
  return 0;
}

void AddReloadCommand(CLI::App& app) {
  app.add_subcommand("reload", "re-read the config and its peers directory, as SIGHUP does");
}

int RunReload(const Client& client) {
  mycel::control::ReloadReply r;
  std::string error;
  if (!ReloadDaemon(client, &r, &error)) Fail(error.empty() ? client.WhyUnreachable() : error);
  std::printf("reloaded: applied %s; %d neighbour(s) pinned\n", r.applied().c_str(), r.peers());
  if (!r.needs_restart().empty()) std::printf("changed but needs a restart: %s\n", r.needs_restart().c_str());
  return 0;
}

}  // namespace mycel::cli
