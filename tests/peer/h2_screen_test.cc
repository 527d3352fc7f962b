// H2ClientScreen over hand-built HTTP/2 byte streams: what an honest gRPC
// client sends passes, fed whole or a byte at a time; each hostile pattern is
// refused with its reason.
#include "peer/h2_screen.h"

#include <string>

#include <gtest/gtest.h>

namespace mycel::peer {
namespace {

constexpr uint8_t kData = 0, kHeaders = 1, kRst = 3, kSettings = 4, kPing = 6, kWindowUpdate = 8, kContinuation = 9;
constexpr uint8_t kEndStream = 1, kAck = 1, kEndHeaders = 4, kPadded = 8;

std::string Preface() { return "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"; }

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string f;
  const uint32_t n = static_cast<uint32_t>(payload.size());
  f += static_cast<char>(n >> 16);
  f += static_cast<char>(n >> 8);
  f += static_cast<char>(n);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  f += static_cast<char>(stream >> 24);
  f += static_cast<char>(stream >> 16);
  f += static_cast<char>(stream >> 8);
  f += static_cast<char>(stream);
  return f + payload;
}

// A gRPC message: [compressed = 0][length: u32 BE][body], the length claimed.
std::string Message(uint32_t claimed, size_t body) {
  std::string m(1, '\0');
  for (int s = 24; s >= 0; s -= 8) m += static_cast<char>(claimed >> s);
  return m + std::string(body, 'm');
}

// One Pull as a gRPC client sends it: HEADERS (HPACK bytes are opaque to the
// screen), then the request message with END_STREAM.
std::string Pull(uint32_t stream, size_t hello = 300) {
  return Frame(kHeaders, kEndHeaders, stream, std::string(120, 'h')) +
         Frame(kData, kEndStream, stream, Message(static_cast<uint32_t>(hello), hello));
}

std::string ClientStart() { return Preface() + Frame(kSettings, 0, 0, std::string(12, '\0')); }

std::string_view FeedAll(H2ClientScreen& s, const std::string& bytes, double now = 0) {
  return s.Feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), now);
}

std::string_view FeedByteByByte(H2ClientScreen& s, const std::string& bytes) {
  std::string_view r;
  for (char c : bytes) {
    const uint8_t b = static_cast<uint8_t>(c);
    r = s.Feed(&b, 1, 0);
    if (!r.empty()) break;
  }
  return r;
}

TEST(H2ClientScreen, AnHonestClientPassesWholeAndAByteAtATime) {
  std::string stream = ClientStart() + Pull(1) + Frame(kSettings, kAck, 0, "") +
                       Frame(kWindowUpdate, 0, 0, std::string(4, '\x01')) + Frame(kPing, 0, 0, std::string(8, 'p'));
  for (uint32_t id = 3; id < 400; id += 2) stream += Pull(id, 4000);  // many rounds on one connection
  H2ClientScreen whole({}), bytes({});
  EXPECT_EQ(FeedAll(whole, stream), "");
  EXPECT_EQ(FeedByteByByte(bytes, stream), "");
  for (const H2ClientScreen* s : {&whole, &bytes}) {
    EXPECT_TRUE(s->preface_done());
    EXPECT_TRUE(s->settings_acked());
    EXPECT_EQ(s->unfinished_streams(), 0);
    EXPECT_EQ(s->streams_opened(), 200);
  }
}

TEST(H2ClientScreen, WhatIsNotAnHttp2ClientIsRefusedAtTheFirstWrongByte) {
  H2ClientScreen s({});
  EXPECT_EQ(FeedAll(s, "GET / HTTP/1.1\r\n"), "bad_preface");
  EXPECT_FALSE(s.preface_done());
  EXPECT_EQ(FeedAll(s, Preface()), "bad_preface");  // refused for good
  H2ClientScreen partial({});
  EXPECT_EQ(FeedAll(partial, "PRI * HT"), "");
  EXPECT_FALSE(partial.preface_done());
}

TEST(H2ClientScreen, StreamsBeforeTheSettingsAckAreCapped) {
  H2ScreenLimits limits;
  limits.max_streams_before_settings_ack = 4;
  H2ClientScreen s(limits);
  std::string bytes = ClientStart();
  for (uint32_t id = 1; id <= 7; id += 2) bytes += Pull(id);  // 4 finished streams, no ACK
  EXPECT_EQ(FeedAll(s, bytes), "");
  EXPECT_EQ(FeedAll(s, Pull(9)), "streams_before_settings_ack");

  // After the ACK, gRPC enforces MAX_CONCURRENT_STREAMS itself: finished
  // streams go on without limit.
  H2ClientScreen acked(limits);
  bytes = ClientStart() + Pull(1) + Frame(kSettings, kAck, 0, "");
  for (uint32_t id = 3; id <= 41; id += 2) bytes += Pull(id);
  EXPECT_EQ(FeedAll(acked, bytes), "");
}

TEST(H2ClientScreen, UnfinishedStreamsAreCappedAndFinishingOneMakesRoom) {
  H2ScreenLimits limits;
  limits.max_unfinished_streams = 3;
  H2ClientScreen s(limits);
  std::string bytes = ClientStart() + Frame(kSettings, kAck, 0, "");
  for (uint32_t id = 1; id <= 5; id += 2) bytes += Frame(kHeaders, kEndHeaders, id, "h");  // opened, never finished
  EXPECT_EQ(FeedAll(s, bytes), "");
  EXPECT_EQ(s.unfinished_streams(), 3);
  // A reset and an END_STREAM each give a slot back.
  EXPECT_EQ(FeedAll(s, Frame(kRst, 0, 1, std::string(4, '\0')) + Frame(kData, kEndStream, 3, "")), "");
  EXPECT_EQ(s.unfinished_streams(), 1);
  EXPECT_EQ(FeedAll(s, Frame(kHeaders, kEndHeaders, 7, "h") + Frame(kHeaders, kEndHeaders, 9, "h")), "");
  EXPECT_EQ(FeedAll(s, Frame(kHeaders, kEndHeaders, 11, "h")), "too_many_streams");
}

// An Exchange the server ends (trailers, then RST_STREAM) while the client
// never half-closed: the server's frames free the slot, fed in any split.
TEST(H2ClientScreen, StreamsTheServerEndsAreForgotten) {
  H2ScreenLimits limits;
  limits.max_unfinished_streams = 2;
  H2ClientScreen s(limits);
  EXPECT_EQ(FeedAll(s, ClientStart() + Frame(kSettings, kAck, 0, "")), "");
  auto server = [&](const std::string& bytes, bool byte_by_byte) {
    if (!byte_by_byte) return s.FeedServer(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    for (char c : bytes) {
      const uint8_t b = static_cast<uint8_t>(c);
      s.FeedServer(&b, 1);
    }
  };
  // The server's SETTINGS, then per call its answer and its trailers.
  server(Frame(kSettings, 0, 0, std::string(18, '\0')), false);
  for (uint32_t id = 1; id < 40; id += 2) {
    const std::string call = Frame(kHeaders, kEndHeaders, id, "h") + Frame(kData, 0, id, Message(300, 300));
    ASSERT_EQ(FeedAll(s, call), "") << "call " << id;
    const std::string answer = Frame(kHeaders, kEndHeaders, id, std::string(40, 'r')) +
                               Frame(kData, 0, id, std::string(5000, 'd'));
    // Half the calls end with trailers alone, half with trailers and a reset.
    std::string end = Frame(kHeaders, kEndHeaders | kEndStream, id, std::string(20, 't'));
    if (id % 4 == 1) end += Frame(kRst, 0, id, std::string(4, '\0'));
    server(answer + end, id % 3 == 0);
    EXPECT_EQ(s.unfinished_streams(), 0) << "call " << id;
  }
  // The server's answer alone (no END_STREAM) frees nothing.
  ASSERT_EQ(FeedAll(s, Frame(kHeaders, kEndHeaders, 41, "h")), "");
  server(Frame(kHeaders, kEndHeaders, 41, "r") + Frame(kData, 0, 41, "d"), false);
  EXPECT_EQ(s.unfinished_streams(), 1);
}

TEST(H2ClientScreen, AMessageClaimingMoreThanTheLimitIsRefusedAtItsPrefix) {
  H2ScreenLimits limits;
  limits.max_message_bytes = 64 << 10;
  H2ClientScreen ok(limits);
  EXPECT_EQ(FeedAll(ok, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") +
                            Frame(kData, 0, 1, Message(64 << 10, 8000))), "");
  H2ClientScreen big(limits);
  // Only the 5-byte prefix is needed: the claim is refused before any body.
  EXPECT_EQ(FeedAll(big, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") +
                             Frame(kData, 0, 1, Message((64 << 10) + 1, 0))), "message_too_large");
  // The prefix split across two padded DATA frames, the claim 1 GiB.
  H2ClientScreen split(limits);
  const std::string msg = Message(1u << 30, 0);
  std::string pad1 = std::string(1, '\x03') + msg.substr(0, 2) + "ppp";
  std::string pad2 = std::string(1, '\x00') + msg.substr(2);
  EXPECT_EQ(FeedAll(split, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") + Frame(kData, kPadded, 1, pad1)), "");
  EXPECT_EQ(FeedAll(split, Frame(kData, kPadded, 1, pad2)), "message_too_large");
  // A second message on the same stream is checked too.
  H2ClientScreen second(limits);
  EXPECT_EQ(FeedAll(second, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") +
                                Frame(kData, 0, 1, Message(10, 10) + Message(1u << 20, 0))),
            "message_too_large");
}

TEST(H2ClientScreen, FramesPaddingAndHeaderBlocksAreBounded) {
  H2ScreenLimits limits;
  H2ClientScreen big(limits);
  EXPECT_EQ(FeedAll(big, ClientStart() + Frame(kPing, 0, 0, std::string(limits.max_frame_bytes + 1, 'x'))),
            "frame_too_large");
  H2ClientScreen pad(limits);
  EXPECT_EQ(FeedAll(pad, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") +
                             Frame(kData, kPadded, 1, std::string(1, '\x09') + "abc")),
            "bad_padding");
  H2ClientScreen empty_padded(limits);
  EXPECT_EQ(FeedAll(empty_padded, ClientStart() + Frame(kHeaders, kEndHeaders, 1, "h") + Frame(kData, kPadded, 1, "")),
            "bad_padding");
  // A header block that never ends: CONTINUATION after CONTINUATION.
  std::string bytes = ClientStart() + Frame(kHeaders, 0, 1, std::string(4096, 'h'));
  H2ClientScreen cont(limits);
  std::string_view r = FeedAll(cont, bytes);
  for (int i = 0; i < 10 && r.empty(); ++i) r = FeedAll(cont, Frame(kContinuation, 0, 1, std::string(4096, 'c')));
  EXPECT_EQ(r, "header_block_too_large");
  // Anything but CONTINUATION of its stream inside an open block.
  H2ClientScreen mixed(limits);
  EXPECT_EQ(FeedAll(mixed, bytes + Frame(kPing, 0, 0, std::string(8, 'p'))), "bad_stream");
  // A block ended by CONTINUATION with END_STREAM on its HEADERS finishes the stream.
  H2ClientScreen fine(limits);
  EXPECT_EQ(FeedAll(fine, ClientStart() + Frame(kHeaders, kEndStream, 1, "h") +
                              Frame(kContinuation, kEndHeaders, 1, "c")), "");
  EXPECT_EQ(fine.unfinished_streams(), 0);
}

TEST(H2ClientScreen, StreamIdsMustBeClientIdsAndNotReused) {
  H2ClientScreen even({});
  EXPECT_EQ(FeedAll(even, ClientStart() + Frame(kHeaders, kEndHeaders, 2, "h")), "bad_stream");
  H2ClientScreen zero({});
  EXPECT_EQ(FeedAll(zero, ClientStart() + Frame(kHeaders, kEndHeaders, 0, "h")), "bad_stream");
  H2ClientScreen reused({});
  EXPECT_EQ(FeedAll(reused, ClientStart() + Pull(1) + Frame(kHeaders, kEndHeaders, 1, "h")), "bad_stream");
}

TEST(H2ClientScreen, ResetsInALoopAreRefusedAndAFewAreNot) {
  H2ScreenLimits limits;
  limits.reset_burst = 8;
  limits.resets_per_second = 2;
  H2ClientScreen s(limits);
  ASSERT_EQ(FeedAll(s, ClientStart() + Frame(kSettings, kAck, 0, ""), 0), "");
  uint32_t id = 1;
  auto open_and_reset = [&](double now) {
    std::string b = Frame(kHeaders, kEndHeaders, id, "h") + Frame(kRst, 0, id, std::string(4, '\x08'));
    id += 2;
    return FeedAll(s, b, now);
  };
  for (int i = 0; i < 8; ++i) ASSERT_EQ(open_and_reset(0), "") << i;  // the burst
  EXPECT_EQ(open_and_reset(0), "reset_rate");
  // At the refill rate it would have gone on: 2 a second.
  H2ClientScreen slow(limits);
  ASSERT_EQ(FeedAll(slow, ClientStart() + Frame(kSettings, kAck, 0, ""), 0), "");
  id = 1;
  for (int i = 0; i < 100; ++i) {
    std::string b = Frame(kHeaders, kEndHeaders, id, "h") + Frame(kRst, 0, id, std::string(4, '\x08'));
    id += 2;
    ASSERT_EQ(FeedAll(slow, b, i * 0.5), "") << i;
  }
}

}  // namespace
}  // namespace mycel::peer
