// What a DNS-SD announcement must say to be listed as a pending peer
// (peer/discovery.h): anything contradictory or absurd is dropped. The
// announcing and browsing themselves run against a real avahi-daemon in
// tests/integration/discovery_test.cc.
#include "peer/discovery.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/coding.h"
#include "crypto/identity.h"

namespace mycel::peer {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<crypto::Identity> NewIdentity() {
  auto id = crypto::Identity::Generate();
  EXPECT_TRUE(id.ok()) << id.status();
  return std::move(id).value();
}

class DiscoveryTest : public ::testing::Test {
 protected:
  DiscoveryTest() : id_(NewIdentity()), other_(NewIdentity()) {
    options_.name = "alice";
    options_.public_key = id_->public_key();
    options_.port = 7000;
    options_.model_fingerprint = "0123456789abcdef0123456789abcdef";
  }
  // Our announcement with entry `key` replaced (or added) by `entry`.
  std::vector<std::string> With(const std::string& key, const std::string& entry) {
    std::vector<std::string> txt;
    bool replaced = false;
    for (const std::string& e : AnnouncementTxt(options_)) {
      if (e.rfind(key + "=", 0) == 0) {
        if (!replaced) txt.push_back(entry);
        replaced = true;
      } else {
        txt.push_back(e);
      }
    }
    if (!replaced) txt.push_back(entry);
    return txt;
  }
  void ExpectDropped(const std::vector<std::string>& txt, const std::string& why, const std::string& host = "10.0.0.2",
                     int port = 7000) {
    auto p = ParseAnnouncement(txt, host, port, options_.model_fingerprint);
    ASSERT_FALSE(p.ok()) << "listed " << p->name;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(why));
  }

  std::unique_ptr<crypto::Identity> id_, other_;
  DiscoveryOptions options_;
};

TEST_F(DiscoveryTest, OwnAnnouncementParsesBackToThePendingPeerItNames) {
  auto p = ParseAnnouncement(AnnouncementTxt(options_), "10.0.0.2", 7000, options_.model_fingerprint);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->name, "alice");
  EXPECT_EQ(p->public_key, id_->public_key());
  EXPECT_EQ(p->key_fingerprint, id_->Fingerprint());
  EXPECT_EQ(p->address, "10.0.0.2:7000");
  EXPECT_TRUE(p->same_model);
  EXPECT_TRUE(p->discovered);
  EXPECT_EQ(p->requests, 0);
  auto v6 = ParseAnnouncement(AnnouncementTxt(options_), "fd00::2", 7000, "another model");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->address, "[fd00::2]:7000");
  EXPECT_FALSE(v6->same_model);
  // A hostile name is shown sanitised, as a caller's is.
  auto named = ParseAnnouncement(With("name", "name=<b>x</b>"), "10.0.0.2", 7000, "");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->name, "_b_x__b_");
}

TEST_F(DiscoveryTest, RecordsThatLieOrAreAbsurdAreDropped) {
  ExpectDropped(With("pk", "pk=" + Base64Encode(other_->public_key())), "for a key whose fingerprint is");
  ExpectDropped(With("fp", "fp=" + other_->Fingerprint()), "for a key whose fingerprint is");
  ExpectDropped(With("fp", "fp="), "for a key whose fingerprint is");
  ExpectDropped(With("pk", "pk=" + std::string(43, '!') + "="), "not base64");
  ExpectDropped(With("pk", "pk=" + Base64Encode(std::string(33, 'k'))), "a key of 33 bytes");
  ExpectDropped(With("pk", "pk=" + Base64Encode(id_->public_key()) + "A"), "a key of 45");
  ExpectDropped(With("pk", "pk="), "a key of 0");
  ExpectDropped(With("name", "name=" + std::string(65, 'n')), "a name of 65 bytes");
  ExpectDropped(With("name", "name="), "a name of 0 bytes");
  ExpectDropped(With("v", "v=2"), "version '2'");
  ExpectDropped(With("v", "x=1"), "version ''");
  ExpectDropped(With("zz", "pk=" + Base64Encode(other_->public_key())), "given twice");
  ExpectDropped(With("zz", "zz=" + std::string(300, 'z')), "a TXT entry of 303 bytes");
  std::vector<std::string> many = AnnouncementTxt(options_);
  for (int i = 0; many.size() <= 16; ++i) many.push_back("x" + std::to_string(i) + "=1");
  ExpectDropped(many, "17 TXT entries");
  ExpectDropped(AnnouncementTxt(options_), "port 0", "10.0.0.2", 0);
  ExpectDropped(AnnouncementTxt(options_), "port 70000", "10.0.0.2", 70000);
  ExpectDropped(AnnouncementTxt(options_), "address ''", "", 7000);
}

}  // namespace
}  // namespace mycel::peer
