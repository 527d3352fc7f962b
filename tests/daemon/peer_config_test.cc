// The one translation of the config into peer's types (daemon/peer_config.h):
// what myceld hands the gossip at start and at every reload.
#include "daemon/peer_config.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/coding.h"
#include "config/config.h"

namespace mycel {
namespace {

// Two valid 32-byte keys in base64.
constexpr char kKeyA[] = "6VRhGa8X9FJHSqqe+tjGMEyYTcWjvWk5tBxiKxnFQgo=";
constexpr char kKeyB[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

config::Config Parse(const std::string& toml) {
  absl::StatusOr<config::Config> c = config::ParseConfig(toml, "test.toml");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.value_or(config::Config{});
}

// peer's defaults are written apart from the config's (the config reader sits
// below peer and cannot see them); a Gossip made without a config must still
// run on the schedule a user gets without tuning.
TEST(PeerConfig, ScheduleDefaultsAreTheConfigs) {
  const peer::GossipSchedule from_config = GossipScheduleOf(Parse("").federation);
  const peer::GossipSchedule defaults;
  EXPECT_EQ(from_config.round_interval_s, defaults.round_interval_s);
  EXPECT_EQ(from_config.pull_timeout_s, defaults.pull_timeout_s);
  EXPECT_EQ(from_config.max_backoff_s, defaults.max_backoff_s);
  EXPECT_EQ(from_config.trust_every, defaults.trust_every);
  EXPECT_EQ(from_config.trust_examples, defaults.trust_examples);
}

TEST(PeerConfig, ScheduleCarriesEveryKey) {
  const peer::GossipSchedule s = GossipScheduleOf(
      Parse("[federation]\nround_interval_s = 2.5\npull_timeout_s = 1.5\nmax_backoff_s = 7\ntrust_every = 3\n"
            "trust_examples = 64\n")
          .federation);
  EXPECT_EQ(s.round_interval_s, 2.5);
  EXPECT_EQ(s.pull_timeout_s, 1.5);
  EXPECT_EQ(s.max_backoff_s, 7);
  EXPECT_EQ(s.trust_every, 3);
  EXPECT_EQ(s.trust_examples, 64);
}

TEST(PeerConfig, NeighboursInOrderWithRawKeys) {
  const config::Config c = Parse(std::string("[[peers]]\nname = \"bob\"\naddress = \"10.0.0.2:7420\"\npublic_key = \"") +
                                 kKeyA + "\"\n\n[[peers]]\nname = \"carol\"\ndials_in = true\npublic_key = \"" +
                                 kKeyB + "\"\n");
  const std::vector<peer::Neighbour> n = NeighboursOf(c.peers);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n[0].name, "bob");
  EXPECT_EQ(n[0].address, "10.0.0.2:7420");
  EXPECT_FALSE(n[0].dials_in);
  EXPECT_EQ(n[0].public_key, Base64Decode(kKeyA).value());
  EXPECT_EQ(n[0].public_key.size(), 32u);
  EXPECT_EQ(n[1].name, "carol");
  EXPECT_EQ(n[1].address, "");
  EXPECT_TRUE(n[1].dials_in);
  EXPECT_EQ(n[1].public_key, Base64Decode(kKeyB).value());
  EXPECT_TRUE(NeighboursOf({}).empty());
}

}  // namespace
}  // namespace mycel
