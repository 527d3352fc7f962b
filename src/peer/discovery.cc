#include "peer/discovery.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/coding.h"
#include "common/logging.h"
#include "crypto/identity.h"

#if MYCEL_HAVE_AVAHI
#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <avahi-common/thread-watch.h>
#endif

namespace mycel::peer {

namespace {

// A record has a handful of entries; DNS caps each at 255 bytes.
constexpr size_t kMaxTxtEntries = 16;
constexpr size_t kMaxTxtEntryBytes = 255;
constexpr size_t kMaxNameBytes = 64;
constexpr size_t kKeyBase64Chars = 44;  // 32 bytes

absl::Status Bad(std::string what) { return absl::InvalidArgumentError(std::move(what)); }

}  // namespace

// What State() reports, set from avahi's thread (or Start) and read from any.
class DiscoveryStateBox {
 public:
  void Say(bool announced, std::string said) {
    std::lock_guard<std::mutex> lock(mu_);
    state_.announced = announced;
    state_.said = std::move(said);
  }
  void SetNodesSeen(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    nodes_seen_ = n;
  }
  DiscoveryState Get() const {
    std::lock_guard<std::mutex> lock(mu_);
    DiscoveryState s = state_;
    if (s.announced) s.said += absl::StrCat("; ", nodes_seen_, nodes_seen_ == 1 ? " node" : " nodes", " seen");
    return s;
  }

 private:
  mutable std::mutex mu_;
  DiscoveryState state_{false, "starting"};
  size_t nodes_seen_ = 0;
};

std::vector<std::string> AnnouncementTxt(const DiscoveryOptions& o) {
  return {"v=1", "name=" + o.name, "fp=" + crypto::KeyFingerprint(o.public_key), "pk=" + Base64Encode(o.public_key),
          "model=" + o.model_fingerprint};
}

absl::StatusOr<PendingPeer> ParseAnnouncement(const std::vector<std::string>& txt, const std::string& host,
                                              int port, std::string_view our_model_fingerprint) {
  if (txt.size() > kMaxTxtEntries) return Bad(absl::StrCat(txt.size(), " TXT entries (at most ", kMaxTxtEntries, ")"));
  std::map<std::string, std::string> kv;
  for (const std::string& entry : txt) {
    if (entry.size() > kMaxTxtEntryBytes) return Bad(absl::StrCat("a TXT entry of ", entry.size(), " bytes"));
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;  // a flag (RFC 6763 6.4): none is ours
    if (!kv.emplace(entry.substr(0, eq), entry.substr(eq + 1)).second) {
      return Bad("TXT key '" + entry.substr(0, eq) + "' given twice");
    }
  }
  auto get = [&](const char* key) { auto it = kv.find(key); return it == kv.end() ? std::string() : it->second; };
  if (get("v") != "1") return Bad("version '" + get("v") + "' (this node speaks v=1)");
  const std::string name = get("name");
  if (name.empty() || name.size() > kMaxNameBytes) return Bad(absl::StrCat("a name of ", name.size(), " bytes"));
  const std::string pk = get("pk");
  if (pk.size() != kKeyBase64Chars) return Bad(absl::StrCat("a key of ", pk.size(), " base64 characters"));
  auto key = Base64Decode(pk);
  if (!key.ok()) return Bad("a key that is not base64: " + std::string(key.status().message()));
  if (key->size() != 32) return Bad(absl::StrCat("a key of ", key->size(), " bytes"));
  const std::string fp = crypto::KeyFingerprint(*key);
  if (get("fp") != fp) return Bad("fingerprint '" + get("fp") + "' for a key whose fingerprint is " + fp);
  if (host.empty() || port <= 0 || port > 65535) return Bad(absl::StrCat("address '", host, "' port ", port));
  PendingPeer p;
  p.name = SanitisedPeerName(name);
  p.public_key = std::move(key).value();
  p.key_fingerprint = fp;
  p.address = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  p.same_model = !our_model_fingerprint.empty() && get("model") == our_model_fingerprint;
  p.discovered = true;
  return p;
}

#if MYCEL_HAVE_AVAHI

// Everything below runs on avahi's poll thread (callbacks), except Start and
// the destructor, which hold the poll's lock or stop it first.
struct Discovery::Impl {
  DiscoveryOptions options;
  FoundFn found;
  LostFn lost;
  std::string service_name;  // ours; changed on a name collision
  AvahiThreadedPoll* poll = nullptr;
  AvahiClient* client = nullptr;
  AvahiEntryGroup* group = nullptr;
  AvahiServiceBrowser* browser = nullptr;
  bool warned_no_daemon = false;
  // (service name, interface, protocol) → the key its record named, to
  // forget it when it goes.
  std::map<std::tuple<std::string, int, int>, std::string> seen;
  DiscoveryStateBox state;

  void CountSeen() {
    std::set<std::string> keys;
    for (const auto& [where, key] : seen) keys.insert(key);
    state.SetNodesSeen(keys.size());
  }

  ~Impl() {
    if (poll) avahi_threaded_poll_stop(poll);
    if (client) avahi_client_free(client);  // frees the group, the browser and resolvers
    if (poll) avahi_threaded_poll_free(poll);
  }

  bool NewClient(int* error) {
    group = nullptr;
    browser = nullptr;
    client = avahi_client_new(avahi_threaded_poll_get(poll), AVAHI_CLIENT_NO_FAIL, &Impl::OnClient, this, error);
    return client != nullptr;
  }

  void Announce(AvahiClient* c) {
    if (!group) group = avahi_entry_group_new(c, &Impl::OnGroup, this);
    if (!group) {
      Warn(std::string("cannot announce: ") + avahi_strerror(avahi_client_errno(c)));
      return;
    }
    if (!avahi_entry_group_is_empty(group)) return;
    AvahiStringList* txt = nullptr;
    for (const std::string& entry : AnnouncementTxt(options)) txt = avahi_string_list_add(txt, entry.c_str());
    int r = avahi_entry_group_add_service_strlst(group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, AvahiPublishFlags(0),
                                                 service_name.c_str(), kServiceType, nullptr, nullptr,
                                                 static_cast<uint16_t>(options.port), txt);
    avahi_string_list_free(txt);
    if (r == AVAHI_ERR_COLLISION) return Rename(c);
    if (r >= 0) r = avahi_entry_group_commit(group);
    if (r < 0) Warn("cannot announce '" + service_name + "': " + avahi_strerror(r));
  }

  // A warning that also becomes the state.
  void Warn(const std::string& what) {
    Logger("peer")->warn("LAN discovery: {}", what);
    state.Say(false, what);
  }

  void Rename(AvahiClient* c) {
    char* next = avahi_alternative_service_name(service_name.c_str());
    Logger("peer")->info("LAN discovery: the name '{}' is taken on the LAN, announcing as '{}'", service_name, next);
    service_name = next;
    avahi_free(next);
    avahi_entry_group_reset(group);
    Announce(c);
  }

  void Browse(AvahiClient* c) {
    if (browser) return;
    browser = avahi_service_browser_new(c, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, kServiceType, nullptr,
                                        AvahiLookupFlags(0), &Impl::OnBrowse, this);
    if (!browser) Warn(std::string("cannot browse: ") + avahi_strerror(avahi_client_errno(c)));
  }

  static void OnClient(AvahiClient* c, AvahiClientState state, void* userdata) {
    Impl* self = static_cast<Impl*>(userdata);
    switch (state) {
      case AVAHI_CLIENT_S_RUNNING:
        if (self->warned_no_daemon) Logger("peer")->info("LAN discovery: avahi-daemon is up");
        self->warned_no_daemon = false;
        self->Announce(c);
        self->Browse(c);
        break;
      case AVAHI_CLIENT_S_COLLISION:
      case AVAHI_CLIENT_S_REGISTERING:
        // The host name changes: announce again once it runs.
        if (self->group) avahi_entry_group_reset(self->group);
        break;
      case AVAHI_CLIENT_CONNECTING:
        if (!self->warned_no_daemon) {
          Logger("peer")->warn("LAN discovery: avahi-daemon is not running; no discovery until it starts");
          self->warned_no_daemon = true;
        }
        self->state.Say(false, "avahi-daemon is not running; no discovery until it starts");
        break;
      case AVAHI_CLIENT_FAILURE: {
        const int error = avahi_client_errno(c);
        if (error != AVAHI_ERR_DISCONNECTED) {
          self->Warn(std::string("stopped: ") + avahi_strerror(error));
          break;
        }
        // avahi-daemon (or the bus) went away: wait for it to come back.
        avahi_client_free(c);
        self->client = nullptr;
        self->seen.clear();
        self->CountSeen();
        self->state.Say(false, "avahi-daemon went away; no discovery until it is back");
        int e = 0;
        if (!self->NewClient(&e)) {
          self->Warn(std::string("stopped: the D-Bus system bus went away (") + avahi_strerror(e) + ")");
        }
        break;
      }
    }
  }

  static void OnGroup(AvahiEntryGroup* g, AvahiEntryGroupState state, void* userdata) {
    Impl* self = static_cast<Impl*>(userdata);
    if (state == AVAHI_ENTRY_GROUP_ESTABLISHED) {
      Logger("peer")->info("LAN discovery: announced as '{}' ({}) on port {}", self->service_name, kServiceType,
                           self->options.port);
      self->state.Say(true, absl::StrCat("announced as '", self->service_name, "' (", kServiceType, ") on port ",
                                         self->options.port));
    } else if (state == AVAHI_ENTRY_GROUP_COLLISION) {
      self->group = g;
      self->Rename(avahi_entry_group_get_client(g));
    } else if (state == AVAHI_ENTRY_GROUP_FAILURE) {
      self->Warn(std::string("the announcement failed: ") +
                 avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))));
    }
  }

  static void OnBrowse(AvahiServiceBrowser* b, AvahiIfIndex iface, AvahiProtocol protocol, AvahiBrowserEvent event,
                       const char* name, const char* type, const char* domain, AvahiLookupResultFlags flags,
                       void* userdata) {
    Impl* self = static_cast<Impl*>(userdata);
    AvahiClient* c = avahi_service_browser_get_client(b);
    if (event == AVAHI_BROWSER_NEW) {
      // IPv4 addresses only: an IPv6 link-local one needs a scope a peer address cannot say.
      if (!avahi_service_resolver_new(c, iface, protocol, name, type, domain, AVAHI_PROTO_INET, AvahiLookupFlags(0),
                                      &Impl::OnResolve, self)) {
        Logger("peer")->debug("LAN discovery: cannot resolve '{}': {}", name, avahi_strerror(avahi_client_errno(c)));
      }
    } else if (event == AVAHI_BROWSER_REMOVE) {
      auto it = self->seen.find({name, iface, protocol});
      if (it == self->seen.end()) return;
      const std::string key = it->second;
      self->seen.erase(it);
      self->CountSeen();
      for (const auto& [where, k] : self->seen) {
        if (k == key) return;  // still announced elsewhere
      }
      self->lost(key);
    } else if (event == AVAHI_BROWSER_FAILURE) {
      self->Warn(std::string("browsing failed: ") + avahi_strerror(avahi_client_errno(c)));
    }
  }

  static void OnResolve(AvahiServiceResolver* r, AvahiIfIndex iface, AvahiProtocol protocol,
                        AvahiResolverEvent event, const char* name, const char* type, const char* domain,
                        const char* host_name, const AvahiAddress* a, uint16_t port, AvahiStringList* txt,
                        AvahiLookupResultFlags flags, void* userdata) {
    Impl* self = static_cast<Impl*>(userdata);
    if (event == AVAHI_RESOLVER_FOUND && a) {
      std::vector<std::string> entries;
      size_t count = 0;
      for (AvahiStringList* t = txt; t; t = avahi_string_list_get_next(t)) {
        if (++count > kMaxTxtEntries + 1) break;  // enough to refuse it
        entries.emplace_back(reinterpret_cast<const char*>(avahi_string_list_get_text(t)),
                             avahi_string_list_get_size(t));
      }
      char host[AVAHI_ADDRESS_STR_MAX];
      avahi_address_snprint(host, sizeof(host), a);
      auto p = ParseAnnouncement(entries, host, port, self->options.model_fingerprint);
      if (!p.ok()) {
        Logger("peer")->debug("LAN discovery: ignoring the record '{}' at {}:{}: {}", name, host, port,
                              p.status().message());
      } else if (p->public_key != self->options.public_key) {
        self->seen[{name, iface, protocol}] = p->public_key;
        self->CountSeen();
        self->found(std::move(p).value());
      }
    } else if (event == AVAHI_RESOLVER_FAILURE) {
      Logger("peer")->debug("LAN discovery: cannot resolve '{}': {}", name,
                            avahi_strerror(avahi_client_errno(avahi_service_resolver_get_client(r))));
    }
    avahi_service_resolver_free(r);
  }
};

std::unique_ptr<Discovery> Discovery::Start(const DiscoveryOptions& options, FoundFn found, LostFn lost) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->found = std::move(found);
  impl->lost = std::move(lost);
  impl->service_name = options.name + " (" + crypto::KeyFingerprint(options.public_key).substr(0, 9) + ")";
  // Off for good: one warning, and the reason kept for State().
  auto off = [&impl](const std::string& why) {
    Logger("peer")->warn("LAN discovery off: {}", why);
    impl->state.Say(false, "off: " + why);
    return std::unique_ptr<Discovery>(new Discovery(std::move(impl)));
  };
  impl->poll = avahi_threaded_poll_new();
  if (!impl->poll) return off("cannot make avahi's poll thread");
  int error = 0;
  if (!impl->NewClient(&error)) {
    const char* bus = std::getenv("DBUS_SYSTEM_BUS_ADDRESS");
    return off(absl::StrCat("no D-Bus system bus at ", bus && *bus ? bus : "unix:path=/run/dbus/system_bus_socket",
                            ", so no avahi-daemon to reach",
                            error == AVAHI_ERR_NO_DAEMON ? "" : std::string(" (") + avahi_strerror(error) + ")"));
  }
  if (avahi_threaded_poll_start(impl->poll) < 0) return off("cannot start avahi's poll thread");
  return std::unique_ptr<Discovery>(new Discovery(std::move(impl)));
}

#else  // no libavahi-client at build time

struct Discovery::Impl {
  DiscoveryStateBox state;
};

std::unique_ptr<Discovery> Discovery::Start(const DiscoveryOptions&, FoundFn, LostFn) {
  Logger("peer")->warn("LAN discovery off: this myceld was built without libavahi-client");
  auto impl = std::make_unique<Impl>();
  impl->state.Say(false, "off: this myceld was built without libavahi-client");
  return std::unique_ptr<Discovery>(new Discovery(std::move(impl)));
}

#endif

// Both builds' Impl keep the state in `state`.
DiscoveryState Discovery::State() const { return impl_->state.Get(); }

Discovery::Discovery(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Discovery::~Discovery() = default;

}  // namespace mycel::peer
