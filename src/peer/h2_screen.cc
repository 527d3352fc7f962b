#include "peer/h2_screen.h"

#include <algorithm>
#include <cstring>

namespace mycel::peer {
namespace {

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kPrefaceSize = sizeof(kPreface) - 1;  // 24

// Frame types and flags (RFC 9113 §6).
constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3, kSettings = 0x4, kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4, kPadded = 0x8;

}  // namespace

std::string_view H2ClientScreen::Feed(const uint8_t* data, size_t n, double now_s) {
  now_s_ = now_s;
  while (n > 0 && failed_.empty()) {
    switch (state_) {
      case State::kPreface: {
        const size_t take = std::min(n, kPrefaceSize - preface_have_);
        if (std::memcmp(data, kPreface + preface_have_, take) != 0) return Fail("bad_preface");
        preface_have_ += take;
        data += take, n -= take;
        if (preface_have_ == kPrefaceSize) state_ = State::kHeader;
        break;
      }
      case State::kHeader: {
        const size_t take = std::min(n, sizeof(header_) - header_have_);
        std::memcpy(header_ + header_have_, data, take);
        header_have_ += take;
        data += take, n -= take;
        if (header_have_ == sizeof(header_)) {
          header_have_ = 0;
          if (auto r = OnHeader(); !r.empty()) return r;
        }
        break;
      }
      case State::kPadLength: {
        const uint32_t pad = *data;
        ++data, --n;
        --payload_left_;
        if (pad > payload_left_) return Fail("bad_padding");
        padding_left_ = pad;
        payload_left_ -= pad;
        state_ = State::kPayload;
        if (payload_left_ == 0 && padding_left_ == 0) {
          if (auto r = OnFrameEnd(); !r.empty()) return r;
        } else if (payload_left_ == 0) {
          state_ = State::kPadding;
        }
        break;
      }
      case State::kPayload: {
        const uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, payload_left_));
        if (type_ == kData) {
          if (auto r = OnData(data, take); !r.empty()) return r;
        }
        payload_left_ -= take;
        data += take, n -= take;
        if (payload_left_ == 0) {
          if (padding_left_ > 0) {
            state_ = State::kPadding;
          } else if (auto r = OnFrameEnd(); !r.empty()) {
            return r;
          }
        }
        break;
      }
      case State::kPadding: {
        const uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, padding_left_));
        padding_left_ -= take;
        data += take, n -= take;
        if (padding_left_ == 0) {
          if (auto r = OnFrameEnd(); !r.empty()) return r;
        }
        break;
      }
    }
  }
  return failed_;
}

void H2ClientScreen::FeedServer(const uint8_t* data, size_t n) {
  while (n > 0) {
    if (server_skip_ > 0) {
      const uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, server_skip_));
      server_skip_ -= take;
      data += take, n -= take;
      continue;
    }
    const size_t take = std::min(n, sizeof(server_header_) - server_header_have_);
    std::memcpy(server_header_ + server_header_have_, data, take);
    server_header_have_ += take;
    data += take, n -= take;
    if (server_header_have_ < sizeof(server_header_)) break;
    server_header_have_ = 0;
    const uint8_t* h = server_header_;
    server_skip_ = (uint32_t{h[0]} << 16) | (uint32_t{h[1]} << 8) | h[2];
    const uint8_t type = h[3], flags = h[4];
    const uint32_t stream = ((uint32_t{h[5]} << 24) | (uint32_t{h[6]} << 16) | (uint32_t{h[7]} << 8) | h[8]) & 0x7fffffffu;
    if (stream != 0 && (type == kRstStream || (type == kHeaders && (flags & kEndStream)))) streams_.erase(stream);
  }
}

std::string_view H2ClientScreen::OnHeader() {
  length_ = (uint32_t{header_[0]} << 16) | (uint32_t{header_[1]} << 8) | header_[2];
  type_ = header_[3];
  flags_ = header_[4];
  stream_ = ((uint32_t{header_[5]} << 24) | (uint32_t{header_[6]} << 16) | (uint32_t{header_[7]} << 8) | header_[8]) &
            0x7fffffffu;
  if (length_ > limits_.max_frame_bytes) return Fail("frame_too_large");
  // A header block, once open, continues in CONTINUATION frames of its stream
  // and nothing else (RFC 9113 §6.10).
  if (continuation_of_ != 0 && (type_ != kContinuation || stream_ != continuation_of_)) return Fail("bad_stream");
  switch (type_) {
    case kHeaders: {
      if (stream_ == 0 || stream_ % 2 == 0) return Fail("bad_stream");  // clients open odd ids
      if (stream_ > last_stream_) {
        if (auto r = OpenStream(stream_); !r.empty()) return r;
      } else if (streams_.count(stream_) == 0) {
        return Fail("bad_stream");  // HEADERS on a stream the client already finished
      }
      header_block_ = length_;
      if (!(flags_ & kEndHeaders)) {
        continuation_of_ = stream_;
        block_ends_stream_ = (flags_ & kEndStream) != 0;
      }
      break;
    }
    case kContinuation:
      if (continuation_of_ == 0) return Fail("bad_stream");
      header_block_ += length_;
      break;
    case kRstStream:
      if (auto r = OnReset(); !r.empty()) return r;
      break;
    case kSettings:
      if (flags_ & kAck) settings_acked_ = true;
      break;
    case kData:
      if ((flags_ & kPadded) && length_ == 0) return Fail("bad_padding");
      break;
    default:
      break;
  }
  if ((type_ == kHeaders || type_ == kContinuation) && header_block_ > limits_.max_header_block_bytes) {
    return Fail("header_block_too_large");
  }
  payload_left_ = length_;
  padding_left_ = 0;
  if (length_ == 0) return OnFrameEnd();
  state_ = (type_ == kData && (flags_ & kPadded)) ? State::kPadLength : State::kPayload;
  return {};
}

std::string_view H2ClientScreen::OnFrameEnd() {
  state_ = State::kHeader;
  bool finishes = false;
  if (type_ == kData || type_ == kHeaders) finishes = (flags_ & kEndStream) != 0;
  if (type_ == kHeaders && !(flags_ & kEndHeaders)) finishes = false;  // at the block's end instead
  if ((type_ == kHeaders || type_ == kContinuation) && (flags_ & kEndHeaders) && continuation_of_ != 0) {
    continuation_of_ = 0;
    finishes = block_ends_stream_;
  }
  if (type_ == kRstStream) finishes = true;
  if (finishes) streams_.erase(stream_);
  return {};
}

std::string_view H2ClientScreen::OnData(const uint8_t* p, size_t n) {
  auto it = streams_.find(stream_);
  if (it == streams_.end()) return {};  // not an open stream of ours: gRPC refuses it (STREAM_CLOSED)
  Stream& s = it->second;
  while (n > 0) {
    if (s.remaining == 0) {
      const size_t take = std::min<size_t>(n, sizeof(s.prefix) - s.prefix_have);
      std::memcpy(s.prefix + s.prefix_have, p, take);
      s.prefix_have += static_cast<int>(take);
      p += take, n -= take;
      if (s.prefix_have == sizeof(s.prefix)) {
        // [compressed flag][length: u32 big-endian]
        const uint32_t len = (uint32_t{s.prefix[1]} << 24) | (uint32_t{s.prefix[2]} << 16) |
                             (uint32_t{s.prefix[3]} << 8) | s.prefix[4];
        if (len > limits_.max_message_bytes) return Fail("message_too_large");
        s.prefix_have = 0;
        s.remaining = len;
      }
    } else {
      const uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, s.remaining));
      s.remaining -= take;
      p += take, n -= take;
    }
  }
  return {};
}

std::string_view H2ClientScreen::OpenStream(uint32_t id) {
  last_stream_ = id;
  ++streams_opened_;
  if (!settings_acked_ && ++before_ack_ > limits_.max_streams_before_settings_ack) {
    return Fail("streams_before_settings_ack");
  }
  if (static_cast<int>(streams_.size()) >= limits_.max_unfinished_streams) return Fail("too_many_streams");
  streams_[id] = Stream{};
  return {};
}

std::string_view H2ClientScreen::OnReset() {
  if (tokens_at_ >= 0 && now_s_ > tokens_at_) {
    tokens_ = std::min(limits_.reset_burst, tokens_ + (now_s_ - tokens_at_) * limits_.resets_per_second);
  }
  tokens_at_ = now_s_;
  if (tokens_ < 1) return Fail("reset_rate");
  tokens_ -= 1;
  return {};
}

}  // namespace mycel::peer
