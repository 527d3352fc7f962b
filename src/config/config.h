// Typed configuration, parsed from TOML (toml++ stays inside config.cc).
//
// One Options struct per section, with in-class defaults and one comment per
// field. LoadConfig() rejects an unknown key, a wrong type or a bad value with
// an InvalidArgument status whose message names the file, the line and the key:
//   "/etc/mycel.toml:12: [training] lr: must be > 0 (got -1)"
// Plain structs: copyable, thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "federation/options.h"
#include "model/options.h"
#include "train/options.h"

namespace mycel::config {

struct NodeOptions {
  std::string name = "mycel";          // shown to peers and in logs
  std::string state_dir;               // default: $XDG_STATE_HOME/mycel (~/.local/state/mycel)
  std::string listen;                  // peer address "host:port" (port 0: any free port); empty: no peer server
  // This node cannot be called by its neighbours (behind NAT): it exchanges
  // both ways on the calls it makes (peer::Gossip). Implied when listen is "".
  bool dial_out = false;
  std::string log_level = "info";      // trace, debug, info, warn, error, off
  std::string log_file;                // also log here, rotated; "" = stderr only
  int64_t log_max_bytes = 10 << 20;    // rotate log_file past this size
  int64_t log_max_files = 3;           // rotated files kept besides log_file
  std::string metrics_listen;          // Prometheus endpoint, loopback "127.0.0.1:port"; "" = off
  std::string ui_listen;               // dashboard page, loopback "127.0.0.1:port"; "" = off
  // LAN discovery (DNS-SD through avahi-daemon): announce this node's name,
  // key and listen port as _mycel._tcp, and list the nodes announced on the
  // LAN as pending peers. Pins nothing by itself. Needs listen, not dial_out.
  bool discover = false;
};

// [model] is model::ModelOptions and [training] train::TrainingOptions: the
// modules own them, their fields and their defaults (model/options.h,
// train/options.h); this reader fills them key by key and checks what
// a file adds (file:line errors).

// [federation]: how this node merges (federation::FederationOptions, the one
// definition: its defaults and its checks live there) and the gossip around
// the merges, which the daemon and the peer module schedule.
struct FederationSection : federation::FederationOptions {
  double round_interval_s = 10.0;      // seconds between gossip rounds (publish, pull, merge); fractions allowed
  int64_t local_steps = 40;            // training steps between two merges; 0 = unpaced (measured: README, "Pacing")
  int64_t trust_every = 5;             // rounds between two trust probes ([federation] trust)
  int64_t trust_examples = 256;        // held-out examples a probe evaluates on
  double pull_timeout_s = 5;           // deadline of one pull from a neighbour
  double max_backoff_s = 30;           // retry delay cap for an unreachable neighbour
};

// [policy]: when this node trains (train::ResourcePolicyOptions; the key
// on_battery = "pause" | "continue" reads into pause_on_battery, and
// busy_fraction has no key), how much of the machine it takes
// (train::CpuOptions), both defined once in train/options.h, and whether it
// gossips while training is held.
struct PolicySection : train::ResourcePolicyOptions, train::CpuOptions {
  bool gossip_when_held = true;        // serve, pull and merge while training is held; false: serve only
};

struct PeerOptions {
  std::string name;                    // label used in logs and `mycel peers`
  std::string address;                 // "host:port"; "" when it dials in
  bool dials_in = false;               // it cannot be called: it hands its deltas over when it calls us
  std::string public_key;              // raw 32-byte Ed25519 public key (decoded from base64)
  std::string public_key_b64;          // as written in the config
  std::string where;                   // "file:line" of its [[peers]] table
};

struct Config {
  std::string path;                    // file it was read from ("" for defaults)
  NodeOptions node;
  mycel::model::ModelOptions model;
  mycel::train::TrainingOptions training;
  FederationSection federation;
  PolicySection policy;
  std::vector<PeerOptions> peers;

  // Derived paths inside state_dir.
  std::string SocketPath() const;      // <state_dir>/control.sock
  std::string HistoryPath() const;     // <state_dir>/history.db
  std::string StorePath() const;       // <state_dir>/examples.db
  std::string CheckpointDir() const;   // <state_dir>/checkpoints
  std::string IdentityPath() const;    // <state_dir>/identity.key
};

// $XDG_CONFIG_HOME/mycel/mycel.toml (or ~/.config/mycel/mycel.toml).
std::string DefaultConfigPath();
// $XDG_STATE_HOME/mycel (or ~/.local/state/mycel).
std::string DefaultStateDir();

// Parses TOML text; `source` names it in errors (usually the file path).
// Relative state_dir and model.path are resolved against the file's directory.
absl::StatusOr<Config> ParseConfig(std::string_view toml, const std::string& source);
// Reads and parses a file, then the peers drop-in directory beside it
// (PeersDropInDir): every *.toml there, in name order, may hold [[peers]]
// tables and nothing else; they add to the file's own, and a name or key
// used twice anywhere is an error naming both places. NotFound if the file
// does not exist.
absl::StatusOr<Config> LoadConfig(const std::string& path);
// The directory of peers that `mycel peers add/accept/remove` manage, one
// file each, so the user's hand-edited config and its comments are never
// rewritten: "<dir>/<stem>.peers.d" for "<dir>/<stem>.toml"
// (~/.config/mycel/mycel.peers.d for the default config).
std::string PeersDropInDir(const std::string& config_path);
// Pins a neighbour for `mycel peers add/accept` and the dashboard's accept
// button: writes PeersDropInDir(config.path)/NAME.toml and checks it by
// loading the whole config again (the file is removed if that fails).
// `address` "" pins one that dials in (dials_in = true); `how` names the
// command in the file's comment. Returns the file written. InvalidArgument,
// one line saying what, for: no config file, a bad name (1-64 of
// A-Za-z0-9._-, it names the file), address or key, `own_key`, a name or
// key pinned already, an existing file.
absl::StatusOr<std::string> PinPeer(const Config& config, const std::string& name, const std::string& key_b64,
                                    const std::string& address, const std::string& own_key, const std::string& how);
// A name no pinned peer has and no drop-in file holds: `base`, else
// base-2, base-3, ...
std::string FreePeerName(const Config& config, const std::string& base);
// Defaults with no file at all (state_dir = DefaultStateDir()).
Config DefaultConfig();

}  // namespace mycel::config
