#include "common/coding.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/escaping.h"

namespace mycel {
namespace {

std::string Hex(const std::string& bytes) { return absl::BytesToHexString(bytes); }

// The byte-at-a-time loops every format used before coding.h: the encodings
// must stay byte-identical to them, or old files and peers stop reading.
std::string ReferenceLE(uint64_t v, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

TEST(CodingTest, FixedWidthKnownVectors) {
  std::string s;
  PutFixed32(&s, 0x04030201u);
  EXPECT_EQ(Hex(s), "01020304");
  s.clear();
  PutFixed64(&s, 0x0807060504030201ull);
  EXPECT_EQ(Hex(s), "0102030405060708");
  s.clear();
  PutFixed<int32_t>(&s, -2);
  EXPECT_EQ(Hex(s), "feffffff");
  s.clear();
  PutFixed<uint8_t>(&s, 0xab);
  PutFixed<int16_t>(&s, 0x1234);
  EXPECT_EQ(Hex(s), "ab3412");

  char b[8];
  EncodeFixed32(b, 0xdeadbeefu);
  EXPECT_EQ(Hex(std::string(b, 4)), "efbeadde");
  EncodeFixed64(b, 1);
  EXPECT_EQ(Hex(std::string(b, 8)), "0100000000000000");
}

TEST(CodingTest, FixedWidthRoundTripsAndMatchesTheByteLoops) {
  std::mt19937_64 rng(7);
  std::vector<uint64_t> values = {0, 1, 0xff, 0x100, 0xffffffffull, 0x100000000ull,
                                  std::numeric_limits<uint64_t>::max()};
  for (int i = 0; i < 1000; ++i) values.push_back(rng());
  for (uint64_t v : values) {
    std::string s32, s64;
    PutFixed32(&s32, static_cast<uint32_t>(v));
    PutFixed64(&s64, v);
    ASSERT_EQ(s32, ReferenceLE(v, 4)) << v;
    ASSERT_EQ(s64, ReferenceLE(v, 8)) << v;
    EXPECT_EQ(DecodeFixed32(s32.data()), static_cast<uint32_t>(v));
    EXPECT_EQ(DecodeFixed64(s64.data()), v);
    EXPECT_EQ(DecodeFixed<int64_t>(s64.data()), static_cast<int64_t>(v));
  }
  // Unaligned reads and writes.
  char buf[16] = {};
  EncodeFixed64(buf + 3, 0x1122334455667788ull);
  EXPECT_EQ(DecodeFixed64(buf + 3), 0x1122334455667788ull);
  EXPECT_EQ(DecodeFixed32(buf + 3), 0x55667788u);
}

TEST(CodingTest, GetFixed64ConsumesOrLeavesTruncatedInputAlone) {
  std::string s;
  PutFixed64(&s, 42);
  PutFixed64(&s, 7);
  s += "tail";
  std::string_view in = s;
  uint64_t v = 0;
  ASSERT_TRUE(GetFixed64(&in, &v));
  EXPECT_EQ(v, 42u);
  ASSERT_TRUE(GetFixed64(&in, &v));
  EXPECT_EQ(v, 7u);
  EXPECT_EQ(in, "tail");
  v = 99;
  EXPECT_FALSE(GetFixed64(&in, &v));  // 4 bytes left
  EXPECT_EQ(in, "tail");
  EXPECT_EQ(v, 99u);
  std::string_view seven = std::string_view(s).substr(0, 7);
  EXPECT_FALSE(GetFixed64(&seven, &v));
  EXPECT_EQ(seven.size(), 7u);
  std::string_view empty;
  EXPECT_FALSE(GetFixed64(&empty, &v));
}

TEST(CodingTest, FloatsAreLittleEndianBinary32) {
  std::string s;
  PutFloat32(&s, 1.0f);
  PutFloat32(&s, -0.0f);
  PutFloat32(&s, -2.5f);
  EXPECT_EQ(Hex(s), "0000803f00000080000020c0");
  EXPECT_EQ(DecodeFloat32(s.data()), 1.0f);
  EXPECT_TRUE(std::signbit(DecodeFloat32(s.data() + 4)));
  EXPECT_EQ(DecodeFloat32(s.data() + 8), -2.5f);

  // The bit pattern survives, NaN payloads included.
  const uint32_t nan_bits = 0x7fc01234u;
  float nan;
  std::memcpy(&nan, &nan_bits, 4);
  char b[4];
  EncodeFloat32(b, nan);
  EXPECT_EQ(DecodeFixed32(b), nan_bits);
  const float back = DecodeFloat32(b);
  uint32_t back_bits;
  std::memcpy(&back_bits, &back, 4);
  EXPECT_EQ(back_bits, nan_bits);
}

TEST(CodingTest, BulkFloatsMatchOneAtATime) {
  std::vector<float> v = {0.0f, 1.0f, -1.5f, 3.25e-30f, std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::denorm_min(), 123456.789f};
  std::string one, bulk = "x";  // appends after what is there
  for (float f : v) PutFloat32(&one, f);
  PutFloats(&bulk, v.data(), v.size());
  EXPECT_EQ(bulk, "x" + one);

  std::string enc(4 * v.size(), '\0');
  EncodeFloats(enc.data(), v.data(), v.size());
  EXPECT_EQ(enc, one);

  std::vector<float> out(v.size());
  DecodeFloats(one.data(), v.size(), out.data());
  EXPECT_EQ(out, v);
  PutFloats(&bulk, nullptr, 0);  // n = 0 touches nothing
  DecodeFloats(nullptr, 0, nullptr);
  EXPECT_EQ(bulk.size(), 1 + 4 * v.size());
}

TEST(CodingTest, Base64RoundTripsAndMatchesKnownVectors) {
  // RFC 4648 section 10 test vectors.
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [raw, b64] : vectors) {
    EXPECT_EQ(Base64Encode(raw), b64);
    auto back = Base64Decode(b64);
    ASSERT_TRUE(back.ok()) << b64;
    EXPECT_EQ(*back, raw);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(*Base64Decode(Base64Encode(all)), all);
  // The standard alphabet: '+' and '/', not the URL-safe '-' and '_'.
  EXPECT_EQ(Base64Encode("\xfb\xff"), "+/8=");
  // A 32-byte key is the 44 characters `mycel id` prints.
  EXPECT_EQ(Base64Encode(std::string(32, '\0')).size(), 44u);
}

TEST(CodingTest, Base64RejectsMalformedInput) {
  for (const char* bad : {
           "Zg",          // missing padding
           "Zg=",         // short padding
           "Zm8",         // missing padding
           "Zg===",       // extra padding
           "Zm9v=",       // padding where none belongs
           "Zm9v\n",      // trailing newline
           " Zm9v",       // leading space
           "Zm 9v",       // inner space
           "Zm9vYg==x",   // junk after padding
           "Zm9vYg==Zg==",
           "Zm9v!A==",    // not in the alphabet
           "Zm9v-_==",    // URL-safe alphabet
           "Zh==",        // non-zero unused bits (non-canonical "f")
           "Z",
           "=",
           "====",
       }) {
    auto decoded = Base64Decode(bad);
    EXPECT_FALSE(decoded.ok()) << "'" << bad << "'";
    if (!decoded.ok()) {
      EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  // Truncating a valid encoding anywhere but at a 4-character boundary fails.
  const std::string b64 = Base64Encode("truncate me, please");
  for (size_t n = 1; n < b64.size(); ++n) {
    if (n % 4 != 0) {
      EXPECT_FALSE(Base64Decode(b64.substr(0, n)).ok()) << n;
    }
  }
}

TEST(CodingTest, Blake2bKnownVectors) {
  // BLAKE2b with the digest length as a parameter (RFC 7693), as libsodium's
  // crypto_generichash and Python's hashlib.blake2b(digest_size=...) compute it.
  EXPECT_EQ(Hex(Blake2b("", 32)), "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
  EXPECT_EQ(Hex(Blake2b("abc", 32)), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  EXPECT_EQ(Hex(Blake2b("abc", 16)), "cf4ab791c62b8d2b2109c90275287816");
  EXPECT_EQ(Hex(Blake2b("abc", 64)),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
            "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923");
  // Outside BLAKE2b's 16..64 bytes there is no digest.
  EXPECT_EQ(Blake2b("abc", 15), "");
  EXPECT_EQ(Blake2b("abc", 65), "");
}

}  // namespace
}  // namespace mycel
