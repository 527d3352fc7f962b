// H2ClientScreen: reads what a caller of the peer port sends, frame by frame,
// before gRPC does, and says when the connection must be closed.
//
// gRPC 1.51 (Debian 12) lets an unauthenticated client make it hold memory
// that its own limits do not bound (README, "Hostile peers"):
//   - MAX_CONCURRENT_STREAMS is enforced only once the client has ACKed our
//     SETTINGS, so a client that never does opens as many streams as it
//     likes (50 connections × 400 unfinished streams: +232 MiB);
//   - a message's 5-byte length prefix may claim up to 4 GiB, and gRPC
//     widens the stream window to it and checks the size only once the
//     message is in (8 such Pulls: +89 MiB before the quota reset them).
// The screen enforces both, plus a few bounds of the same kind, on the
// client's bytes alone: it parses HTTP/2 frame headers (9 bytes each), the
// gRPC message prefixes in DATA, and never HPACK. What an honest neighbour
// sends is small: a Pull is one HEADERS frame and one message of a few KB;
// an Exchange adds its hand-over in messages of at most 64 KiB.
//
// Pure logic over bytes, no sockets (PeerListener relays and calls it), so it
// is unit-tested and fuzzed on its own. Not thread-safe: one per connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string_view>

namespace mycel::peer {

struct H2ScreenLimits {
  // New streams a client may open before it ACKs our SETTINGS (which carry
  // MAX_CONCURRENT_STREAMS; from the ACK on, gRPC enforces that itself). Our
  // own client opens one Pull at connect; a client that never ACKs gets
  // no more than this.
  int max_streams_before_settings_ack = 4;
  // Streams the client has opened and not finished (END_STREAM or
  // RST_STREAM) at any time, ACK or not. An honest Pull finishes its request
  // in the frames that open it.
  int max_unfinished_streams = 8;
  // A gRPC message the client may send: the peer server's receive limit (a
  // Pull request is a Hello of a few KB; gossip.cc's kMaxRequestMessage).
  uint32_t max_message_bytes = 64 << 10;
  // A frame's payload: SETTINGS_MAX_FRAME_SIZE as we announce it (the RFC's
  // default and smallest allowed), so no client may exceed it anyway.
  uint32_t max_frame_bytes = 16 << 10;
  // HEADERS plus its CONTINUATION frames: a call's metadata is ~200 bytes
  // and gRPC refuses past 4 KiB decoded, but it buffers an unfinished block
  // (the 2024 CONTINUATION floods).
  uint32_t max_header_block_bytes = 16 << 10;
  // Streams the client resets (RST_STREAM), as a token bucket: opening and
  // cancelling streams in a loop (the 2023 "rapid reset") costs the server a
  // call each while never holding more than one open. An honest client
  // resets only a pull that overran its deadline. New streams themselves are
  // not rate-limited: benchmarks run rounds at 50 a second.
  double reset_burst = 32;
  double resets_per_second = 4;
};

class H2ClientScreen {
 public:
  explicit H2ClientScreen(const H2ScreenLimits& limits) : limits_(limits), tokens_(limits.reset_burst) {}

  // Screens the next `n` bytes the client sent (any split: a frame may
  // arrive a byte at a time). `now_s` is a monotonic time for the stream
  // rate. Returns "" while everything so far is acceptable; otherwise a
  // fixed reason ("bad_preface", "frame_too_large", "bad_padding",
  // "streams_before_settings_ack", "too_many_streams", "reset_rate",
  // "header_block_too_large", "message_too_large", "bad_stream"), and every
  // later call returns the same: the connection must be closed.
  std::string_view Feed(const uint8_t* data, size_t n, double now_s);

  // The server's bytes to the client, any split (frame headers only, the
  // payloads are skipped): a stream the server ends (RST_STREAM, or HEADERS
  // with END_STREAM: its trailers) is no longer the client's to finish. A
  // bidirectional call the server answers and ends while the client has not
  // half-closed (Exchange without a hand-over, or refused) would otherwise
  // stay unfinished here and, after max_unfinished_streams of them, cut an
  // honest connection.
  void FeedServer(const uint8_t* data, size_t n);

  // The 24-byte client preface has arrived (an HTTP/2 client, not an idle
  // or raw TCP one).
  bool preface_done() const { return state_ != State::kPreface; }
  bool settings_acked() const { return settings_acked_; }
  int unfinished_streams() const { return static_cast<int>(streams_.size()); }
  int64_t streams_opened() const { return streams_opened_; }

 private:
  enum class State { kPreface, kHeader, kPadLength, kPayload, kPadding };
  struct Stream {
    uint8_t prefix[5];
    int prefix_have = 0;
    uint32_t remaining = 0;  // bytes of the current message still to come
  };

  std::string_view Fail(std::string_view reason) { return failed_ = reason; }
  std::string_view OnHeader();
  std::string_view OnFrameEnd();
  std::string_view OnData(const uint8_t* p, size_t n);
  std::string_view OpenStream(uint32_t id);
  std::string_view OnReset();

  const H2ScreenLimits limits_;
  State state_ = State::kPreface;
  std::string_view failed_;
  size_t preface_have_ = 0;
  uint8_t header_[9];
  size_t header_have_ = 0;
  // The frame being read.
  uint32_t length_ = 0, stream_ = 0;
  uint8_t type_ = 0, flags_ = 0;
  uint32_t payload_left_ = 0;  // of the frame's data (padding excluded once known)
  uint32_t padding_left_ = 0;
  double now_s_ = 0;
  bool settings_acked_ = false;
  int before_ack_ = 0;
  int64_t streams_opened_ = 0;
  uint32_t last_stream_ = 0;         // highest stream id the client opened
  uint32_t header_block_ = 0;        // bytes of the open header block
  uint32_t continuation_of_ = 0;     // stream whose header block is open, 0 = none
  bool block_ends_stream_ = false;   // that block's HEADERS carried END_STREAM
  double tokens_;
  double tokens_at_ = -1;
  std::map<uint32_t, Stream> streams_;  // unfinished streams (≤ max_unfinished_streams)
  // FeedServer's place in the server's frames: a header being read, then
  // its payload skipped. The server's 9-byte frames start at byte 0.
  uint8_t server_header_[9];
  size_t server_header_have_ = 0;
  uint32_t server_skip_ = 0;
};

}  // namespace mycel::peer
