// LAN discovery ([node] discover): DNS-SD through avahi-daemon (libavahi-client,
// which stays inside discovery.cc). The node announces itself as _mycel._tcp
// on its peer port, with its name, key and model fingerprint in TXT records,
// and browses for the others; each one found is handed to `found` (the
// pending list, Gossip::NoteDiscovered) and never pinned here.
//
// A DNS-SD record is not authenticated: anyone on the LAN can announce any
// key at any address. It is only a way not to copy keys by hand: the user
// accepts by fingerprint, and the handshake then proves the key as for any
// pinned neighbour. A record that contradicts itself (a key that is not the
// one its fingerprint names, bad base64, absurd lengths) is dropped.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "peer/gossip.h"

namespace mycel::peer {

inline constexpr char kServiceType[] = "_mycel._tcp";

struct DiscoveryOptions {
  std::string name;               // [node] name
  std::string public_key;         // raw 32 bytes: ours, announced, and never listed
  int port = 0;                   // the peer port we listen on
  std::string model_fingerprint;  // ours: tells whether a node found can exchange with us
};

// The TXT records announcing `o`: "v=1", "name=", "fp=" (the key's
// fingerprint), "pk=" (the key, base64), "model=" (model fingerprint).
std::vector<std::string> AnnouncementTxt(const DiscoveryOptions& o);

// Checks one resolved announcement (its TXT records as "key=value" strings,
// the host it resolved to and its port) and makes the pending peer it names,
// marked discovered; InvalidArgument saying what is wrong with it otherwise.
absl::StatusOr<PendingPeer> ParseAnnouncement(const std::vector<std::string>& txt, const std::string& host,
                                              int port, std::string_view our_model_fingerprint);

// What discovery is doing, for `mycel status` and `mycel doctor`.
struct DiscoveryState {
  bool announced = false;  // our record is up and we browse
  // "announced as 'alice (3f2a:9c01)' on port 7001; 2 nodes seen", or why
  // not ("avahi-daemon is not running; ...", "off: no D-Bus system bus ...").
  std::string said;
};

class Discovery {
 public:
  using FoundFn = std::function<void(PendingPeer)>;           // a node announced (not us)
  using LostFn = std::function<void(const std::string& key)>;  // its announcement went away
  // Announces and browses on avahi's own thread. Never fails: without a
  // D-Bus system bus or avahi-daemon it logs one warning saying which is
  // missing, and runs without (it starts once avahi-daemon appears, and
  // starts again after avahi-daemon restarts); State() then says why.
  static std::unique_ptr<Discovery> Start(const DiscoveryOptions& options, FoundFn found, LostFn lost);
  ~Discovery();  // withdraws the announcement
  // Thread-safe.
  DiscoveryState State() const;
  Discovery(const Discovery&) = delete;
  Discovery& operator=(const Discovery&) = delete;

  struct Impl;

 private:
  explicit Discovery(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mycel::peer
