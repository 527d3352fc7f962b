#include "crypto/session.h"

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace mycel::crypto {
namespace {

using ::testing::HasSubstr;

// The reason a session's error carries (common/refusal.h), by its name;
// "ok" for no error.
std::string RefusalReason(const absl::Status& status) {
  return status.ok() ? "ok" : std::string(RefusalName(RefusalOf(status)));
}

constexpr int64_t kNow = 1'700'000'000;
constexpr size_t kSigLen = 64;
// Offsets into the Hello / Reply wire formats (see session.cc).
constexpr size_t kHelloVersionOff = 8;
constexpr size_t kHelloEphOff = 8 + 4 + 32 + 32 + 8 + 16;
constexpr size_t kHelloRequestOff = kHelloEphOff + 32 + 4;
constexpr size_t kReplyHashOff = 8;
constexpr size_t kReplyEphOff = 8 + 32;
constexpr size_t kReplyHeaderOff = 8 + 32 + 32 + 24 + 4;

std::unique_ptr<Identity> NewIdentity() {
  auto id = Identity::Generate();
  EXPECT_TRUE(id.ok()) << id.status();
  return std::move(id).value();
}

std::string Flip(std::string s, size_t pos) {
  s[pos] = static_cast<char>(s[pos] ^ 0x01);
  return s;
}

class SessionTest : public ::testing::Test {
 protected:
  SessionTest()
      : client_(NewIdentity()), server_(NewIdentity()), other_(NewIdentity()),
        pinned_{client_->public_key()}, guard_(120) {}

  std::unique_ptr<ClientSession> Begin(std::string_view request = "epoch=7 after=12",
                                       int64_t now = kNow) {
    auto c = ClientSession::Begin(*client_, server_->public_key(), request, now);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(c).value();
  }

  absl::StatusOr<std::unique_ptr<ServerSession>> Accept(std::string_view hello,
                                                        int64_t now = kNow) {
    return ServerSession::Accept(*server_, pinned_, guard_, hello, now);
  }

  std::unique_ptr<Identity> client_, server_, other_;
  std::vector<std::string> pinned_;
  ReplayGuard guard_;
};

TEST_F(SessionTest, RoundTripMultiChunk) {
  auto c = Begin("request-bytes");
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->hello().sender_pk, client_->public_key());
  EXPECT_EQ((*s)->hello().timestamp, kNow);
  EXPECT_EQ((*s)->hello().request, "request-bytes");

  auto reply = (*s)->Reply("seq=13..20 fp=abcd");
  ASSERT_TRUE(reply.ok()) << reply.status();
  auto header = c->AcceptReply(*reply);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(*header, "seq=13..20 fp=abcd");

  std::vector<std::string> chunks = {"first chunk", std::string(100000, 'x'), "", "last"};
  std::vector<std::string> sealed;
  for (size_t i = 0; i < chunks.size(); ++i) {
    sealed.push_back((*s)->Seal(chunks[i], i + 1 == chunks.size()));
    // Ciphertext never contains the plaintext verbatim.
    if (chunks[i].size() > 4) {
      EXPECT_EQ(sealed.back().find(chunks[i]), std::string::npos);
    }
  }
  EXPECT_EQ((*s)->Seal("after final", false), "");  // misuse: nothing sealed

  EXPECT_FALSE(c->Finish().ok());
  for (size_t i = 0; i < sealed.size(); ++i) {
    bool final = true;
    auto plain = c->Open(sealed[i], &final);
    ASSERT_TRUE(plain.ok()) << i << ": " << plain.status();
    EXPECT_EQ(*plain, chunks[i]);
    EXPECT_EQ(final, i + 1 == chunks.size());
  }
  EXPECT_TRUE(c->Finish().ok());
  // Open after FINAL is an error (e.g. a chunk appended by an attacker).
  bool final = false;
  EXPECT_FALSE(c->Open(sealed[0], &final).ok());
}

TEST_F(SessionTest, EmptyRequestHeaderAndPayload) {
  auto c = Begin("");
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->hello().request, "");
  auto reply = (*s)->Reply("");
  ASSERT_TRUE(reply.ok());
  auto header = c->AcceptReply(*reply);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(*header, "");
  bool final = false;
  auto plain = c->Open((*s)->Seal("", true), &final);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, "");
  EXPECT_TRUE(final);
  EXPECT_TRUE(c->Finish().ok());
}

TEST_F(SessionTest, MisuseIsAnErrorNotACrash) {
  auto c = Begin();
  bool final = false;
  EXPECT_EQ(RefusalReason(c->Open("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &final).status()), "error");
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->Seal("before reply", false), "");
  ASSERT_TRUE((*s)->Reply("h").ok());
  EXPECT_FALSE((*s)->Reply("h").ok());
  EXPECT_FALSE((*s)->Reply(std::string(kMaxHeaderBytes + 1, 'h')).ok());
  EXPECT_FALSE(ClientSession::Begin(*client_, "short", "", kNow).ok());
  EXPECT_FALSE(
      ClientSession::Begin(*client_, server_->public_key(), std::string(kMaxRequestBytes + 1, 'r'), kNow)
          .ok());
  EXPECT_TRUE(
      ClientSession::Begin(*client_, server_->public_key(), std::string(kMaxRequestBytes, 'r'), kNow)
          .ok());
}

TEST_F(SessionTest, MaxSizeRequestAndHeader) {
  auto c = Begin(std::string(kMaxRequestBytes, 'r'));
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->hello().request.size(), kMaxRequestBytes);
  auto reply = (*s)->Reply(std::string(kMaxHeaderBytes, 'h'));
  ASSERT_TRUE(reply.ok());
  auto header = c->AcceptReply(*reply);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->size(), kMaxHeaderBytes);
}

TEST_F(SessionTest, UnpinnedSenderRefused) {
  auto c = ClientSession::Begin(*other_, server_->public_key(), "req", kNow);
  ASSERT_TRUE(c.ok());
  auto s = Accept((*c)->hello());
  EXPECT_EQ(RefusalReason(s.status()), "unpinned_key") << s.status();
  // No pinned keys at all.
  pinned_.clear();
  auto c2 = Begin();
  EXPECT_EQ(RefusalReason(Accept(c2->hello()).status()), "unpinned_key");
}

// Pairing: an unpinned caller is identified (to list it as a pending peer)
// only if the Hello is addressed to us, fresh and signed by the key it names.
TEST_F(SessionTest, UnpinnedSenderIsIdentifiedOnlyWhenItsHelloIsGenuine) {
  auto c = ClientSession::Begin(*other_, server_->public_key(), "pull of a newcomer", kNow);
  ASSERT_TRUE(c.ok());
  auto who = ServerSession::IdentifyUnpinned(*server_, 120, (*c)->hello(), kNow + 5);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->sender_pk, other_->public_key());
  EXPECT_EQ(who->timestamp, kNow);
  EXPECT_EQ(who->request, "pull of a newcomer");
  // Still refused as a session: identifying pins nothing.
  EXPECT_EQ(RefusalReason(Accept((*c)->hello()).status()), "unpinned_key");

  const std::string& hello = (*c)->hello();
  EXPECT_EQ(RefusalReason(ServerSession::IdentifyUnpinned(*server_, 120, Flip(hello, hello.size() - 3), kNow).status()),
            "bad_signature");
  EXPECT_EQ(RefusalReason(ServerSession::IdentifyUnpinned(*server_, 120, hello, kNow + 121).status()), "stale");
  EXPECT_EQ(RefusalReason(ServerSession::IdentifyUnpinned(*client_, 120, hello, kNow).status()), "wrong_recipient");
  EXPECT_EQ(RefusalReason(ServerSession::IdentifyUnpinned(*server_, 120, hello.substr(0, 40), kNow).status()),
            "malformed");
  // Someone else's key in the sender field, signed by the caller: not that key's owner.
  std::string claimed = hello;
  claimed.replace(8 + 4, 32, client_->public_key());
  EXPECT_EQ(RefusalReason(ServerSession::IdentifyUnpinned(*server_, 120, claimed, kNow).status()), "bad_signature");
}

TEST_F(SessionTest, WrongRecipientRefused) {
  // A Hello meant for another server, replayed to this one.
  auto c = ClientSession::Begin(*client_, other_->public_key(), "req", kNow);
  ASSERT_TRUE(c.ok());
  auto s = Accept((*c)->hello());
  EXPECT_EQ(RefusalReason(s.status()), "wrong_recipient") << s.status();
  // The intended server accepts it.
  ReplayGuard guard;
  EXPECT_TRUE(ServerSession::Accept(*other_, pinned_, guard, (*c)->hello(), kNow).ok());
}

TEST_F(SessionTest, StaleTimestampRefusedBothDirections) {
  auto old = Begin("r", kNow - 121);
  EXPECT_EQ(RefusalReason(Accept(old->hello()).status()), "stale");
  auto future = Begin("r", kNow + 121);
  EXPECT_EQ(RefusalReason(Accept(future->hello()).status()), "stale");
  // The window is inclusive.
  EXPECT_TRUE(Accept(Begin("r", kNow - 120)->hello()).ok());
  EXPECT_TRUE(Accept(Begin("r", kNow + 120)->hello()).ok());
  // Extreme timestamps must not overflow into "fresh".
  for (int64_t ts : {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                     int64_t{0}, int64_t{-1}}) {
    EXPECT_EQ(RefusalReason(Accept(Begin("r", ts)->hello()).status()), "stale") << ts;
  }
}

TEST_F(SessionTest, BadSignatureRefused) {
  auto c = Begin("some request");
  const std::string& hello = c->hello();
  // One byte of the request, of the client's ephemeral key, of the signature.
  for (size_t pos : {kHelloRequestOff + 3, kHelloEphOff + 5, hello.size() - kSigLen + 10,
                     hello.size() - 1}) {
    auto s = Accept(Flip(hello, pos));
    EXPECT_EQ(RefusalReason(s.status()), "bad_signature") << pos << " " << s.status();
  }
  // A signature by the right key over a different message.
  std::string forged = hello.substr(0, hello.size() - kSigLen) + client_->Sign("something else");
  EXPECT_EQ(RefusalReason(Accept(forged).status()), "bad_signature");
  // A pinned sender field with someone else's signature.
  std::string by_other = hello.substr(0, hello.size() - kSigLen) +
                         other_->Sign(hello.substr(0, hello.size() - kSigLen));
  EXPECT_EQ(RefusalReason(Accept(by_other).status()), "bad_signature");
  // Refused hellos do not burn the nonce: the genuine one is still accepted.
  EXPECT_TRUE(Accept(hello).ok());
}

TEST_F(SessionTest, ReplayedHelloRefused) {
  auto c = Begin();
  ASSERT_TRUE(Accept(c->hello()).ok());
  auto again = Accept(c->hello());
  EXPECT_EQ(RefusalReason(again.status()), "replayed") << again.status();
  // Later, within the window: still refused.
  EXPECT_EQ(RefusalReason(Accept(c->hello(), kNow + 100).status()), "replayed");
  // Later, outside the window: stale.
  EXPECT_EQ(RefusalReason(Accept(c->hello(), kNow + 1000).status()), "stale");
  // A fresh Hello between the same identities is fine.
  EXPECT_TRUE(Accept(Begin()->hello()).ok());
}

TEST_F(SessionTest, WrongVersionAndBadMagic) {
  auto c = Begin();
  EXPECT_EQ(RefusalReason(Accept(Flip(c->hello(), kHelloVersionOff)).status()), "wrong_version");
  EXPECT_EQ(RefusalReason(Accept(Flip(c->hello(), 0)).status()), "malformed");
  EXPECT_EQ(RefusalReason(Accept(Flip(c->hello(), 7)).status()), "malformed");
}

TEST_F(SessionTest, CheapChecksComeFirst) {
  // Unpinned sender AND wrong recipient: the recipient is checked first.
  auto c = ClientSession::Begin(*other_, other_->public_key(), "", kNow);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(RefusalReason(Accept((*c)->hello()).status()), "wrong_recipient");
  // Stale AND bad signature: staleness first.
  auto old = Begin("abc", kNow - 1000);
  EXPECT_EQ(RefusalReason(Accept(Flip(old->hello(), kHelloRequestOff)).status()), "stale");
  // Unpinned AND bad signature: pinning first.
  auto c2 = ClientSession::Begin(*other_, server_->public_key(), "abc", kNow);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(RefusalReason(Accept(Flip((*c2)->hello(), kHelloRequestOff)).status()), "unpinned_key");
}

TEST_F(SessionTest, TruncatedAndOversizedHelloRefused) {
  auto c = Begin("0123456789");
  const std::string& hello = c->hello();
  for (size_t n = 0; n < hello.size(); ++n) {
    auto s = Accept(hello.substr(0, n));
    ASSERT_FALSE(s.ok()) << n;
    EXPECT_EQ(RefusalReason(s.status()), "malformed") << n << " " << s.status();
  }
  EXPECT_EQ(RefusalReason(Accept(hello + "x").status()), "malformed");
  EXPECT_EQ(RefusalReason(Accept(std::string(1 << 20, '\0')).status()), "malformed");
  // A request length claiming more than kMaxRequestBytes, with that many bytes present.
  std::string big = hello.substr(0, kHelloRequestOff - 4);
  const uint32_t claimed = kMaxRequestBytes + 1;
  for (int i = 0; i < 4; ++i) big.push_back(static_cast<char>((claimed >> (8 * i)) & 0xff));
  big += std::string(claimed + kSigLen, 'r');
  EXPECT_EQ(RefusalReason(Accept(big).status()), "malformed");
  // Random garbage of many sizes, with a valid prefix or none.
  std::mt19937 rng(42);
  for (int i = 0; i < 300; ++i) {
    std::string junk(rng() % 400, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (i % 2 == 0) junk = hello.substr(0, rng() % hello.size()) + junk;
    EXPECT_FALSE(Accept(junk).ok());
  }
  // None of this hurt the genuine Hello.
  EXPECT_TRUE(Accept(hello).ok());
}

TEST_F(SessionTest, TruncatedReplyRefusedThenGenuineAccepted) {
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  auto reply = (*s)->Reply("header!");
  ASSERT_TRUE(reply.ok());
  for (size_t n = 0; n < reply->size(); ++n) {
    auto h = c->AcceptReply(reply->substr(0, n));
    ASSERT_FALSE(h.ok()) << n;
    EXPECT_EQ(RefusalReason(h.status()), "malformed") << n << " " << h.status();
  }
  EXPECT_EQ(RefusalReason(c->AcceptReply(*reply + "x").status()), "malformed");
  EXPECT_EQ(RefusalReason(c->AcceptReply(Flip(*reply, 7)).status()), "wrong_version");
  EXPECT_TRUE(c->AcceptReply(*reply).ok());
}

TEST_F(SessionTest, ReplyTamperingRefused) {
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  auto reply = (*s)->Reply("seq=1..5");
  ASSERT_TRUE(reply.ok());
  for (size_t pos : {kReplyEphOff + 1, kReplyHeaderOff + 2, reply->size() - 1}) {
    auto h = c->AcceptReply(Flip(*reply, pos));
    EXPECT_EQ(RefusalReason(h.status()), "bad_signature") << pos << " " << h.status();
  }
  // The hash of the Hello is checked too (refused before the signature).
  EXPECT_FALSE(c->AcceptReply(Flip(*reply, kReplyHashOff)).ok());
  EXPECT_TRUE(c->AcceptReply(*reply).ok());
}

TEST_F(SessionTest, ManInTheMiddleWithOwnIdentityRefused) {
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  auto reply = (*s)->Reply("header");
  ASSERT_TRUE(reply.ok());
  // Mallory (other_) swaps in her own ephemeral key and re-signs with her identity.
  std::string body = reply->substr(0, reply->size() - kSigLen);
  for (size_t i = 0; i < 32; ++i) body[kReplyEphOff + i] = static_cast<char>(0x40 + i);
  const std::string forged = body + other_->Sign(body);
  auto h = c->AcceptReply(forged);
  EXPECT_EQ(RefusalReason(h.status()), "bad_signature") << h.status();
  // Mallory as a full server, answering a Hello she relayed to herself, is
  // refused too: her ServerSession can't even accept a Hello meant for server_.
  ReplayGuard guard;
  EXPECT_EQ(RefusalReason(
                ServerSession::Accept(*other_, pinned_, guard, c->hello(), kNow).status()),
            "wrong_recipient");
}

TEST_F(SessionTest, ReplyForADifferentHelloRefused) {
  auto c1 = Begin("one");
  auto c2 = Begin("two");
  auto s2 = Accept(c2->hello());
  ASSERT_TRUE(s2.ok());
  auto reply2 = (*s2)->Reply("h2");
  ASSERT_TRUE(reply2.ok());
  auto h = c1->AcceptReply(*reply2);
  EXPECT_FALSE(h.ok());
  EXPECT_EQ(RefusalReason(h.status()), "replayed") << h.status();
  EXPECT_TRUE(c2->AcceptReply(*reply2).ok());
}

class PayloadTest : public SessionTest {
 protected:
  void SetUp() override {
    client_session_ = Begin();
    auto s = Accept(client_session_->hello());
    ASSERT_TRUE(s.ok()) << s.status();
    server_session_ = std::move(s).value();
    auto reply = server_session_->Reply("hdr");
    ASSERT_TRUE(reply.ok());
    ASSERT_TRUE(client_session_->AcceptReply(*reply).ok());
    for (int i = 0; i < 4; ++i) {
      sealed_.push_back(server_session_->Seal("chunk " + std::to_string(i), i == 3));
    }
  }
  std::unique_ptr<ClientSession> client_session_;
  std::unique_ptr<ServerSession> server_session_;
  std::vector<std::string> sealed_;
};

TEST_F(PayloadTest, TamperedChunkRefused) {
  bool final = false;
  ASSERT_TRUE(client_session_->Open(sealed_[0], &final).ok());
  auto bad = client_session_->Open(Flip(sealed_[1], sealed_[1].size() / 2), &final);
  EXPECT_EQ(RefusalReason(bad.status()), "tampered") << bad.status();
  EXPECT_FALSE(final);
  // The stream is dead after a failure, even for the genuine chunk.
  EXPECT_FALSE(client_session_->Open(sealed_[1], &final).ok());
  EXPECT_EQ(RefusalReason(client_session_->Finish()), "truncated");
}

TEST_F(PayloadTest, TooShortChunkRefused) {
  bool final = false;
  EXPECT_EQ(RefusalReason(client_session_->Open("", &final).status()), "tampered");
}

TEST_F(PayloadTest, DroppedFinalChunkIsTruncated) {
  bool final = true;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client_session_->Open(sealed_[i], &final).ok());
    EXPECT_FALSE(final);
  }
  absl::Status st = client_session_->Finish();
  EXPECT_EQ(RefusalReason(st), "truncated") << st;
}

TEST_F(PayloadTest, ReorderedChunksRefused) {
  bool final = false;
  ASSERT_TRUE(client_session_->Open(sealed_[0], &final).ok());
  auto out = client_session_->Open(sealed_[2], &final);
  EXPECT_EQ(RefusalReason(out.status()), "tampered") << out.status();
}

TEST_F(PayloadTest, DuplicatedChunkRefused) {
  bool final = false;
  ASSERT_TRUE(client_session_->Open(sealed_[0], &final).ok());
  EXPECT_EQ(RefusalReason(client_session_->Open(sealed_[0], &final).status()), "tampered");
}

// SealTo / OpenAppend: the buffer-reusing forms used on the peer path.
TEST_F(SessionTest, SealToOpenAppendRoundTrip) {
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok()) << s.status();
  auto reply = (*s)->Reply("hdr");
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(c->AcceptReply(*reply).ok());

  std::vector<std::string> chunks = {"first", std::string(300000, 'y'), "", "last chunk"};
  std::string sealed = "stale contents are replaced";
  std::string out = "prefix:";
  std::string expected = out;
  bool final = true;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const bool last = i + 1 == chunks.size();
    (*s)->SealTo(chunks[i], last, &sealed);
    EXPECT_EQ(sealed.size(), chunks[i].size() + 17);
    ASSERT_TRUE(c->OpenAppend(sealed, &out, &final).ok());
    EXPECT_EQ(final, last);
    expected += chunks[i];
    EXPECT_EQ(out, expected);
  }
  EXPECT_TRUE(c->Finish().ok());
  (*s)->SealTo("after final", false, &sealed);  // misuse: nothing sealed
  EXPECT_TRUE(sealed.empty());
  EXPECT_FALSE(c->OpenAppend((*s)->Seal("x", true), &out, &final).ok());
  EXPECT_EQ(out, expected);
}

TEST_F(SessionTest, SealToMatchesSealAcrossSessions) {
  // Seal and SealTo produce chunks the other form opens (same stream format).
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  auto reply = (*s)->Reply("");
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(c->AcceptReply(*reply).ok());
  std::string a;
  (*s)->SealTo("one", false, &a);
  const std::string b = (*s)->Seal("two", true);
  bool final = false;
  auto one = c->Open(a, &final);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, "one");
  std::string two;
  ASSERT_TRUE(c->OpenAppend(b, &two, &final).ok());
  EXPECT_EQ(two, "two");
  EXPECT_TRUE(final);
}

TEST_F(PayloadTest, OpenAppendTamperedLeavesOutputUntouched) {
  bool final = false;
  std::string out;
  out.reserve(1024);
  ASSERT_TRUE(client_session_->OpenAppend(sealed_[0], &out, &final).ok());
  EXPECT_EQ(out, "chunk 0");
  absl::Status bad = client_session_->OpenAppend(Flip(sealed_[1], sealed_[1].size() / 2), &out, &final);
  EXPECT_EQ(RefusalReason(bad), "tampered") << bad;
  EXPECT_FALSE(final);
  EXPECT_EQ(out, "chunk 0");  // nothing of the bad chunk was appended
  // The stream is dead after a failure, even for the genuine chunk.
  EXPECT_FALSE(client_session_->OpenAppend(sealed_[1], &out, &final).ok());
  EXPECT_EQ(out, "chunk 0");
  EXPECT_EQ(RefusalReason(client_session_->Finish()), "truncated");
}

TEST_F(PayloadTest, OpenAppendTooShortAndTruncated) {
  bool final = false;
  std::string out = "keep";
  EXPECT_EQ(RefusalReason(client_session_->OpenAppend("", &out, &final)), "tampered");
  EXPECT_EQ(RefusalReason(client_session_->OpenAppend(std::string(16, 'z'), &out, &final)),
            "error");  // the stream is already dead
  EXPECT_EQ(out, "keep");
}

TEST_F(PayloadTest, OpenAppendDroppedFinalChunkIsTruncated) {
  bool final = true;
  std::string out;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client_session_->OpenAppend(sealed_[i], &out, &final).ok());
    EXPECT_FALSE(final);
  }
  EXPECT_EQ(out, "chunk 0chunk 1chunk 2");
  absl::Status st = client_session_->Finish();
  EXPECT_EQ(RefusalReason(st), "truncated") << st;
  // A chunk cut short (its tag is gone) is refused, the output unchanged.
  std::string cut = sealed_[3].substr(0, sealed_[3].size() - 1);
  EXPECT_EQ(RefusalReason(client_session_->OpenAppend(cut, &out, &final)), "tampered");
  EXPECT_EQ(out, "chunk 0chunk 1chunk 2");
}

TEST_F(SessionTest, SessionsHaveIndependentKeys) {
  // Two exchanges between the same identities, same header and plaintext.
  struct Run {
    std::unique_ptr<ClientSession> c;
    std::unique_ptr<ServerSession> s;
    std::string reply;
  };
  std::vector<Run> runs;
  for (int i = 0; i < 2; ++i) {
    Run r;
    r.c = Begin("same");
    auto s = Accept(r.c->hello());
    ASSERT_TRUE(s.ok());
    r.s = std::move(s).value();
    auto reply = r.s->Reply("same");
    ASSERT_TRUE(reply.ok());
    r.reply = *reply;
    ASSERT_TRUE(r.c->AcceptReply(r.reply).ok());
    runs.push_back(std::move(r));
  }
  EXPECT_NE(runs[0].c->hello(), runs[1].c->hello());
  EXPECT_NE(runs[0].reply.substr(kReplyEphOff, 32), runs[1].reply.substr(kReplyEphOff, 32));
  const std::string plain(256, 'p');
  const std::string a = runs[0].s->Seal(plain, true);
  const std::string b = runs[1].s->Seal(plain, true);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_NE(a, b);
  // A chunk from one session does not open in the other.
  bool final = false;
  EXPECT_EQ(RefusalReason(runs[1].c->Open(a, &final).status()), "tampered");
  auto ok = runs[0].c->Open(a, &final);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, plain);
  EXPECT_TRUE(final);
}

// ---- the client→server direction (dial-out hand-overs) ----

struct Handshake {
  std::unique_ptr<ClientSession> c;
  std::unique_ptr<ServerSession> s;
};

TEST_F(SessionTest, UpstreamRoundTripsInChunksAfterTheDownstream) {
  auto c = Begin();
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  auto reply = (*s)->Reply("hdr");
  ASSERT_TRUE(reply.ok());
  ASSERT_TRUE(c->AcceptReply(*reply).ok());
  // Down first, as on the wire.
  bool final = false;
  ASSERT_TRUE(c->Open((*s)->Seal("down", true), &final).ok());
  auto header = c->StartUpstream();
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_TRUE((*s)->AcceptUpstream(*header).ok());
  std::string sealed, got;
  for (int i = 0; i < 3; ++i) {
    c->SealUpTo(std::string(100 + i, static_cast<char>('a' + i)), i == 2, &sealed);
    ASSERT_TRUE((*s)->OpenUpAppend(sealed, &got, &final).ok());
    EXPECT_EQ(final, i == 2);
  }
  EXPECT_EQ(got, std::string(100, 'a') + std::string(101, 'b') + std::string(102, 'c'));
  EXPECT_TRUE((*s)->FinishUp().ok());
  // After FINAL, nothing more is sealed.
  c->SealUpTo("more", true, &sealed);
  EXPECT_TRUE(sealed.empty());
}

TEST_F(SessionTest, UpstreamIsBoundToItsDirectionAndExchange) {
  std::vector<Handshake> runs;
  std::vector<std::string> headers;
  for (int i = 0; i < 2; ++i) {
    Handshake h;
    h.c = Begin("same");
    auto s = Accept(h.c->hello());
    ASSERT_TRUE(s.ok());
    h.s = std::move(s).value();
    auto reply = h.s->Reply("same");
    ASSERT_TRUE(reply.ok());
    ASSERT_TRUE(h.c->AcceptReply(*reply).ok());
    auto header = h.c->StartUpstream();
    ASSERT_TRUE(header.ok());
    headers.push_back(*header);
    runs.push_back(std::move(h));
  }
  std::string up0;
  runs[0].c->SealUpTo("payload", true, &up0);
  // Another exchange's server cannot open it, even given this stream's header.
  ASSERT_TRUE(runs[1].s->AcceptUpstream(headers[0]).ok());
  std::string got;
  bool final = false;
  EXPECT_EQ(RefusalReason(runs[1].s->OpenUpAppend(up0, &got, &final)), "tampered");
  EXPECT_TRUE(got.empty());
  // A chunk the server sealed downstream does not open upstream, in the same exchange.
  ASSERT_TRUE(runs[0].s->AcceptUpstream(headers[0]).ok());
  EXPECT_EQ(RefusalReason(runs[0].s->OpenUpAppend(runs[0].s->Seal("payload", true), &got, &final)), "tampered");
  // The stream is dead after that: never finished.
  EXPECT_EQ(RefusalReason(runs[0].s->FinishUp()), "truncated");
}

TEST_F(SessionTest, UpstreamMisuseIsAnErrorNotACrash) {
  auto c = Begin();
  EXPECT_FALSE(c->StartUpstream().ok()) << "before AcceptReply";
  std::string out = "x";
  c->SealUpTo("p", true, &out);
  EXPECT_TRUE(out.empty());
  auto s = Accept(c->hello());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)->AcceptUpstream(std::string(24, 'h')).ok()) << "before Reply";
  auto reply = (*s)->Reply("h");
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(RefusalReason((*s)->AcceptUpstream("short")), "malformed");
  bool final = false;
  std::string got;
  EXPECT_FALSE((*s)->OpenUpAppend("anything at all here", &got, &final).ok()) << "before AcceptUpstream";
  ASSERT_TRUE(c->AcceptReply(*reply).ok());
  auto header = c->StartUpstream();
  ASSERT_TRUE(header.ok());
  EXPECT_FALSE(c->StartUpstream().ok()) << "twice";
  ASSERT_TRUE((*s)->AcceptUpstream(*header).ok());
  std::string sealed;
  c->SealUpTo("first", false, &sealed);
  ASSERT_TRUE((*s)->OpenUpAppend(sealed, &got, &final).ok());
  EXPECT_EQ(RefusalReason((*s)->FinishUp()), "truncated");
}

TEST(RefusalReasonTest, CarriedAsAValueNotReadFromTheText) {
  for (Refusal r : {Refusal::kMalformed, Refusal::kWrongRecipient, Refusal::kUnpinnedKey, Refusal::kStale,
                    Refusal::kBadSignature, Refusal::kReplayed, Refusal::kTampered, Refusal::kTruncated,
                    Refusal::kWrongVersion}) {
    const absl::Status s = Refuse(absl::StatusCode::kPermissionDenied, r, "details");
    EXPECT_EQ(RefusalOf(s), r);
    EXPECT_EQ(s.message(), std::string(RefusalName(r)) + ": details");
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(RefusalOf(absl::Status(s)), r) << "survives a copy";
    EXPECT_EQ(RefusalNamed(RefusalName(r)), r);
    // The words alone are text, not a refusal of ours.
    EXPECT_EQ(RefusalReason(absl::PermissionDeniedError(std::string(RefusalName(r)) + ": details")), "error");
  }
  EXPECT_EQ(RefusalReason(absl::InternalError("disk: full")), "error");
  EXPECT_EQ(RefusalReason(absl::InternalError("stale")), "error");
  EXPECT_EQ(RefusalReason(absl::InternalError("")), "error");
  EXPECT_EQ(RefusalReason(absl::OkStatus()), "ok");
  EXPECT_EQ(RefusalOf(WithRefusal(absl::OkStatus(), Refusal::kStale)), Refusal::kError) << "OK carries none";
  EXPECT_EQ(RefusalNamed("disk"), Refusal::kError);
  EXPECT_EQ(RefusalNamed("error"), Refusal::kError);
  // Every name is distinct, so a name read off the wire maps back to one refusal.
  for (int i = 0; i < kRefusalCount; ++i) {
    EXPECT_EQ(RefusalNamed(RefusalName(static_cast<Refusal>(i))), static_cast<Refusal>(i)) << i;
  }
}

TEST(ReplayGuardTest, RefusesStaleAndRepeats) {
  ReplayGuard g(60);
  const std::string pk(32, 'k');
  EXPECT_TRUE(g.Check(pk, "nonce-0000000001", kNow, kNow).ok());
  EXPECT_EQ(RefusalReason(g.Check(pk, "nonce-0000000001", kNow, kNow)), "replayed");
  EXPECT_TRUE(g.Check(std::string(32, 'j'), "nonce-0000000001", kNow, kNow).ok());  // other sender
  EXPECT_EQ(RefusalReason(g.Check(pk, "nonce-0000000002", kNow - 61, kNow)), "stale");
  EXPECT_EQ(RefusalReason(g.Check(pk, "nonce-0000000003", kNow + 61, kNow)), "stale");
  EXPECT_EQ(g.size(), 2u);
}

// A guard of a run that started at kNow - 10 has an empty memory of what an
// earlier run accepted: a Hello dated before its start is refused, however
// fresh it is by the window; one dated at or after the start is taken once.
TEST(ReplayGuardTest, RefusesWhatOnlyAnEarlierRunCanHaveSeen) {
  ReplayGuard g(60, kNow - 10);
  const std::string pk(32, 'k');
  const absl::Status before = g.Check(pk, "nonce-0000000001", kNow - 11, kNow);
  EXPECT_EQ(RefusalReason(before), "replayed");
  EXPECT_NE(before.message().find("from before this daemon started"), std::string_view::npos) << before;
  EXPECT_TRUE(g.Check(pk, "nonce-0000000002", kNow - 10, kNow).ok());
  EXPECT_EQ(RefusalReason(g.Check(pk, "nonce-0000000002", kNow - 10, kNow)), "replayed");
  EXPECT_EQ(RefusalReason(g.Check(pk, "nonce-0000000003", kNow - 61, kNow)), "stale");  // the window first
  EXPECT_EQ(g.size(), 1u);
}

TEST(ReplayGuardTest, MemoryIsBounded) {
  ReplayGuard g(60);
  const std::string pk(32, 'k');
  auto nonce = [](int i) {
    std::string n(16, '\0');
    for (int b = 0; b < 4; ++b) n[b] = static_cast<char>((i >> (8 * b)) & 0xff);
    return n;
  };
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(g.Check(pk, nonce(i), kNow, kNow).ok());
  EXPECT_EQ(g.size(), 5000u);  // all still live: nothing purged
  // Live entries survive the size-triggered purges.
  EXPECT_EQ(RefusalReason(g.Check(pk, nonce(17), kNow, kNow + 30)), "replayed");
  // A window later, everything old goes at once.
  ASSERT_TRUE(g.Check(pk, nonce(999999), kNow + 61, kNow + 61).ok());
  EXPECT_EQ(g.size(), 1u);
  // Under a steady stream of fresh entries, size stays bounded by the live set.
  size_t max_size = 0;
  for (int t = 0; t < 600; ++t) {
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(g.Check(pk, nonce(t * 100 + i + 1'000'000), kNow + 100 + t, kNow + 100 + t).ok());
    }
    max_size = std::max(max_size, g.size());
  }
  EXPECT_LE(max_size, 2u * 61 * 20 + 1024);
}

TEST(ReplayGuardTest, ThreadSafeExactlyOneWins) {
  ReplayGuard g(60);
  const std::string pk(32, 'k');
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        std::string shared = "shared-" + std::to_string(i);
        shared.resize(16, '.');
        if (g.Check(pk, shared, kNow, kNow).ok()) wins.fetch_add(1);
        std::string own = "own-" + std::to_string(t) + "-" + std::to_string(i);
        own.resize(16, '.');
        EXPECT_TRUE(g.Check(pk, own, kNow, kNow).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), 500);
  EXPECT_EQ(g.size(), 500u + 8 * 500);
}

}  // namespace
}  // namespace mycel::crypto
