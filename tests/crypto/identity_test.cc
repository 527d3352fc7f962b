#include "crypto/identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/file_util.h"
#include "common/test_util.h"

namespace mycel::crypto {
namespace {

using ::testing::HasSubstr;

void WriteBytes(const std::string& path, const std::string& data, mode_t mode) {
  ::unlink(path.c_str());
  ASSERT_TRUE(test::WriteStringToFile(path, data)) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(IdentityTest, CreateThenLoadGivesTheSameKey) {
  const std::string dir = test::MakeTempDir() + "/state/nested";  // parents are created
  const std::string path = dir + "/identity.key";
  auto created = Identity::LoadOrCreate(path);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_EQ((*created)->public_key().size(), 32u);

  EXPECT_EQ(ModeOf(path), 0600u);
  EXPECT_EQ(ModeOf(dir), 0700u);
  const std::string bytes = test::ReadFileToString(path);
  ASSERT_EQ(bytes.size(), 72u);
  EXPECT_EQ(bytes.substr(0, 8), "MYCELID1");
  EXPECT_EQ(bytes.substr(40), (*created)->public_key());  // sk = seed || pk

  auto loaded = Identity::LoadOrCreate(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->public_key(), (*created)->public_key());
  EXPECT_EQ(test::ReadFileToString(path), bytes);  // loading did not rewrite the file

  // The loaded secret key is the created one: its signatures verify under the same key.
  const std::string sig = (*loaded)->Sign("hello");
  EXPECT_TRUE(VerifySignature((*created)->public_key(), "hello", sig));
  EXPECT_EQ(sig, (*created)->Sign("hello"));  // Ed25519 is deterministic

  // No temp files left behind.
  auto names = Env::Default()->ListDir(dir);
  ASSERT_TRUE(names.ok());
  EXPECT_THAT(*names, ::testing::ElementsAre("identity.key"));
}

TEST(IdentityTest, SecondLoadOrCreateDoesNotOverwrite) {
  const std::string path = test::MakeTempDir() + "/identity.key";
  auto first = Identity::LoadOrCreate(path);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string bytes = test::ReadFileToString(path);
  for (int i = 0; i < 3; ++i) {
    auto again = Identity::LoadOrCreate(path);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ((*again)->public_key(), (*first)->public_key());
  }
  EXPECT_EQ(test::ReadFileToString(path), bytes);
}

TEST(IdentityTest, ConcurrentCreatorsAgreeOnOneKey) {
  const std::string path = test::MakeTempDir() + "/identity.key";
  constexpr int kThreads = 8;
  std::vector<std::string> keys(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto id = Identity::LoadOrCreate(path);
      if (id.ok()) keys[i] = (*id)->public_key();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(keys[i].size(), 32u);
    EXPECT_EQ(keys[i], keys[0]) << "thread " << i;
  }
  EXPECT_EQ(test::ReadFileToString(path).substr(40), keys[0]);
}

TEST(IdentityTest, DistinctIdentitiesHaveDistinctKeys) {
  auto a = Identity::Generate();
  auto b = Identity::Generate();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->public_key(), (*b)->public_key());
  EXPECT_NE((*a)->Fingerprint(), (*b)->Fingerprint());
}

TEST(IdentityTest, RefusesKeyFileOthersCanAccess) {
  const std::string path = test::MakeTempDir() + "/identity.key";
  ASSERT_TRUE(Identity::LoadOrCreate(path).ok());
  const std::string bytes = test::ReadFileToString(path);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto r = Identity::LoadOrCreate(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(r.status()), HasSubstr(path + " is readable by others (mode 0644); chmod 600 it"));
  // Refused, not silently fixed or replaced.
  EXPECT_EQ(ModeOf(path), 0644u);
  EXPECT_EQ(test::ReadFileToString(path), bytes);

  ASSERT_EQ(::chmod(path.c_str(), 0620), 0);  // group-writable is as bad
  r = Identity::LoadOrCreate(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()), HasSubstr("(mode 0620)"));

  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);  // read-only for the owner is fine
  EXPECT_TRUE(Identity::LoadOrCreate(path).ok());
}

TEST(IdentityTest, RefusesTruncatedOrGarbageFilesNamingThem) {
  const std::string dir = test::MakeTempDir();
  const std::string good_path = dir + "/good.key";
  ASSERT_TRUE(Identity::LoadOrCreate(good_path).ok());
  const std::string good = test::ReadFileToString(good_path);
  const std::string path = dir + "/identity.key";

  struct Bad {
    std::string bytes;
    std::string fragment;
  };
  std::string other_version = good;
  other_version[7] = '2';
  std::string flipped_seed = good;
  flipped_seed[8 + 5] ^= 0x01;
  std::string flipped_pk = good;
  flipped_pk[8 + 40] ^= 0x80;
  const Bad cases[] = {
      {"", "0 bytes, expected 72"},
      {good.substr(0, 71), "71 bytes, expected 72"},
      {good + "x", "73 bytes, expected 72"},
      {std::string(72, 'A'), "bad header"},
      {other_version, "unsupported identity key format version 'MYCELID2'"},
      {flipped_seed, "does not match"},
      {flipped_pk, "does not match"},
  };
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.fragment);
    WriteBytes(path, bad.bytes, 0600);
    auto r = Identity::LoadOrCreate(path);
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(Message(r.status()), HasSubstr(path));
    EXPECT_THAT(Message(r.status()), HasSubstr(bad.fragment));
    EXPECT_EQ(test::ReadFileToString(path), bad.bytes);  // never replaced by a fresh key
  }
}

TEST(IdentityTest, RefusesADirectoryInPlaceOfTheKey) {
  const std::string path = test::MakeTempDir() + "/identity.key";
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  auto r = Identity::LoadOrCreate(path);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(Message(r.status()), HasSubstr(path));
}

TEST(IdentityTest, SignAndVerify) {
  auto a = Identity::Generate();
  auto b = Identity::Generate();
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string msg = "delta seq 17 for peer bob";
  const std::string sig = (*a)->Sign(msg);
  ASSERT_EQ(sig.size(), 64u);
  EXPECT_TRUE(VerifySignature((*a)->public_key(), msg, sig));
  EXPECT_TRUE(VerifySignature((*a)->public_key(), "", (*a)->Sign("")));

  EXPECT_FALSE(VerifySignature((*b)->public_key(), msg, sig));  // other key
  for (size_t bit : {0u, 7u, 8u * 31, 8u * 63 + 7}) {
    std::string bad_sig = sig;
    bad_sig[bit / 8] ^= static_cast<char>(1 << (bit % 8));
    EXPECT_FALSE(VerifySignature((*a)->public_key(), msg, bad_sig)) << "sig bit " << bit;
  }
  std::string bad_msg = msg;
  bad_msg[3] ^= 0x01;
  EXPECT_FALSE(VerifySignature((*a)->public_key(), bad_msg, sig));
  EXPECT_FALSE(VerifySignature((*a)->public_key(), msg + "x", sig));
  EXPECT_FALSE(VerifySignature((*a)->public_key().substr(0, 31), msg, sig));
  EXPECT_FALSE(VerifySignature((*a)->public_key(), msg, sig.substr(0, 63)));
  EXPECT_FALSE(VerifySignature((*a)->public_key(), msg, sig + "x"));
}

// Base64 itself is common/coding.h's (tests/common/coding_test.cc); here only
// that a public key goes through it as `mycel id` prints it.
TEST(Base64Test, PublicKeyRoundTrips) {
  auto id = Identity::Generate();
  ASSERT_TRUE(id.ok());
  const std::string b64 = (*id)->PublicKeyBase64();
  EXPECT_EQ(b64.size(), 44u);
  EXPECT_EQ(*Base64Decode(b64), (*id)->public_key());
}

TEST(FingerprintTest, FormatAndStability) {
  const std::string key(32, '\0');
  const std::string fp = KeyFingerprint(key);
  ASSERT_EQ(fp.size(), 19u) << fp;  // "xxxx:xxxx:xxxx:xxxx"
  for (size_t i = 0; i < fp.size(); ++i) {
    if (i % 5 == 4) {
      EXPECT_EQ(fp[i], ':') << fp;
    } else {
      EXPECT_TRUE(std::isdigit(fp[i]) || (fp[i] >= 'a' && fp[i] <= 'f')) << fp;
    }
  }
  // BLAKE2b-256 of 32 zero bytes starts 89eb0d6a8a691dae...: pinned so the
  // format never changes silently (users compare fingerprints by eye).
  EXPECT_EQ(fp, "89eb:0d6a:8a69:1dae");

  auto id = Identity::Generate();
  ASSERT_TRUE(id.ok());
  EXPECT_EQ((*id)->Fingerprint(), KeyFingerprint((*id)->public_key()));
  EXPECT_EQ((*id)->Fingerprint(), (*id)->Fingerprint());
  std::string other = (*id)->public_key();
  other[31] ^= 0x01;
  EXPECT_NE(KeyFingerprint(other), (*id)->Fingerprint());
  EXPECT_THAT(KeyFingerprint("short"), HasSubstr("invalid"));
}

}  // namespace
}  // namespace mycel::crypto

namespace mycel::crypto {
namespace {
TEST(SameSecretTest, EqualOnlyForTheSameBytesAndLength) {
  EXPECT_TRUE(SameSecret("0123abcd", "0123abcd"));
  EXPECT_FALSE(SameSecret("0123abcd", "0123abce"));
  EXPECT_FALSE(SameSecret("0123abcd", "0123abc"));
  EXPECT_FALSE(SameSecret("", "x"));
  EXPECT_TRUE(SameSecret("", ""));
}
}  // namespace
}  // namespace mycel::crypto
