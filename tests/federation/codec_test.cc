#include "federation/codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mycel::federation {
namespace {

std::unique_ptr<Codec> Dense() {
  auto c = MakeCodec("dense_f32");
  EXPECT_TRUE(c.ok());
  return std::move(c).value();
}

bool StartsWith(absl::string_view s, const char* prefix) {
  return s.substr(0, std::strlen(prefix)) == prefix;
}

TEST(DenseF32, RoundTripIsBitExact) {
  auto codec = Dense();
  EXPECT_STREQ(codec->name(), "dense_f32");
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -3.5f, 0.1f, 1e-40f /* subnormal */,
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::lowest(),
                          std::numeric_limits<float>::min()};
  std::string q = codec->Encode(v.data(), v.size());
  std::vector<float> out(v.size(), 42.0f);
  ASSERT_TRUE(codec->Decode(q, v.size(), out.data()).ok());
  ASSERT_EQ(0, std::memcmp(v.data(), out.data(), 4 * v.size()));  // keeps -0 and subnormals
}

TEST(DenseF32, WireIsLittleEndianBinary32AfterACountedHeader) {
  auto codec = Dense();
  float one = 1.0f;
  std::string q = codec->Encode(&one, 1);
  ASSERT_EQ(q.size(), 4u + 8u + 4u);
  EXPECT_EQ(q.substr(0, 4), "DF32");
  EXPECT_EQ(q.substr(4, 8), std::string("\x01\0\0\0\0\0\0\0", 8));  // u64 count = 1
  EXPECT_EQ(q.substr(12), std::string("\x00\x00\x80\x3f", 4));    // 1.0f
}

TEST(DenseF32, EmptyRoundTrips) {
  auto codec = Dense();
  std::string q = codec->Encode(nullptr, 0);
  EXPECT_TRUE(codec->Decode(q, 0, nullptr).ok());
}

TEST(DenseF32, RefusesWrongSize) {
  auto codec = Dense();
  std::vector<float> v = {1, 2, 3, 4};
  std::string q = codec->Encode(v.data(), v.size());
  std::vector<float> out(8);
  for (size_t n : {0u, 3u, 5u, 8u}) {
    auto st = codec->Decode(q, n, out.data());
    ASSERT_FALSE(st.ok()) << n;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(StartsWith(st.message(), "bad_shape")) << st.message();
  }
  // Right count in the header, wrong number of bytes after it.
  EXPECT_FALSE(codec->Decode(q.substr(0, q.size() - 1), 4, out.data()).ok());
  EXPECT_FALSE(codec->Decode(q + std::string(4, '\0'), 4, out.data()).ok());
  // A 5-value payload whose header claims 4.
  std::vector<float> five = {1, 2, 3, 4, 5};
  std::string q5 = codec->Encode(five.data(), 5);
  std::string forged = q.substr(0, 12) + q5.substr(12);
  EXPECT_FALSE(codec->Decode(forged, 4, out.data()).ok());
  // Not a dense payload at all; too short for a header.
  std::string wrong_magic = q;
  wrong_magic[0] = 'X';
  EXPECT_FALSE(codec->Decode(wrong_magic, 4, out.data()).ok());
  EXPECT_FALSE(codec->Decode("DF3", 0, out.data()).ok());
  EXPECT_FALSE(codec->Decode("", 0, out.data()).ok());
}

TEST(DenseF32, RefusesNanAndInf) {
  auto codec = Dense();
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> v = {1, 2, bad, 4};
    std::string q = codec->Encode(v.data(), v.size());
    std::vector<float> out(4);
    auto st = codec->Decode(q, 4, out.data());
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(StartsWith(st.message(), "non_finite")) << st.message();
  }
}

TEST(MakeCodec, UnknownNameIsNotFound) {
  auto c = MakeCodec("top_k");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mycel::federation
