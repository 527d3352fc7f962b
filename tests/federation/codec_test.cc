#include "federation/codec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
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


// ------------------------------------------------------------ lossy codecs --

// Every codec, and top-k in each index coding (F = 0.01: delta varints,
// 0.5: bitmap, 0.95: all values).
const char* const kCodecs[] = {"dense_f32",      "fp16",           "int8",          "sign",
                               "topk:0.01",      "topk:0.01+fp16", "topk:0.01+int8", "topk:0.01+sign",
                               "topk:0.5",       "topk:0.5+int8",  "topk:0.5+sign",  "topk:0.95",
                               "topk:0.95+fp16", "topk:0.95+int8", "topk:1",         "topk:1+sign"};

std::unique_ptr<Codec> Make(const std::string& name) {
  auto c = MakeCodec(name);
  EXPECT_TRUE(c.ok()) << name << ": " << c.status();
  return std::move(c).value();
}

// The reason word a peer counts: the message up to the first ':'.
std::string Reason(const absl::Status& st) {
  std::string m(st.message());
  return m.substr(0, m.find(':'));
}

bool Finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Gaussian values whose scale changes every 256 (1e-6 to 1e3), so int8 and
// sign blocks differ in magnitude as layers of a model do.
std::vector<float> RandomValues(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_real_distribution<float> e(-6.0f, 3.0f);
  std::vector<float> v(n);
  float scale = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 256 == 0) scale = std::pow(10.0f, e(rng));
    v[i] = g(rng) * scale;
  }
  return v;
}

std::vector<float> RoundTrip(const Codec& c, const std::vector<float>& v) {
  std::string q = c.Encode(v.data(), v.size());
  std::vector<float> out(v.size(), 42.0f);
  absl::Status st = c.Decode(q, v.size(), out.data());
  EXPECT_TRUE(st.ok()) << c.name() << ": " << st;
  return out;
}

// Little-endian pieces for hand-made payloads.
template <typename T>
void Put(std::string* s, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) s->push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}
void PutFloat(std::string* s, float f) { Put<uint32_t>(s, BitsOf(f)); }

// ------------------------------------------------------------------ names --

TEST(CodecNames, CanonicalNamesAreShortAndStable) {
  const std::pair<const char*, const char*> cases[] = {
      {"dense_f32", "dense_f32"},         {"fp16", "fp16"},
      {"int8", "int8"},                   {"sign", "sign"},
      {"topk:0.01", "topk:0.01"},         {"topk:0.010", "topk:0.01"},
      {"topk:00.0100", "topk:0.01"},      {"topk:.5", "topk:0.5"},
      {"topk:1", "topk:1"},               {"topk:1.000", "topk:1"},
      {"topk:1.", "topk:1"},              {"topk:0.000000001", "topk:0.000000001"},
      {"topk:0.25000+fp16", "topk:0.25+fp16"}, {"topk:0.010+int8", "topk:0.01+int8"},
      {"topk:0.123456789+sign", "topk:0.123456789+sign"},
  };
  for (const auto& [given, canonical] : cases) {
    auto c = MakeCodec(given);
    ASSERT_TRUE(c.ok()) << given << ": " << c.status();
    const std::string name = (*c)->name();
    EXPECT_EQ(name, canonical) << given;
    EXPECT_LE(name.size(), 32u);
    EXPECT_TRUE(std::all_of(name.begin(), name.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == ':' || ch == '.' ||
             ch == '+';
    })) << name;
    // The canonical name names the same codec.
    auto again = MakeCodec(name);
    ASSERT_TRUE(again.ok());
    EXPECT_STREQ((*again)->name(), name.c_str());
  }
}

TEST(CodecNames, BadFractionIsInvalidArgument) {
  for (const char* name : {"topk", "topk:", "topk:0", "topk:0.0", "topk:.", "topk:1.5", "topk:2", "topk:10",
                           "topk:1.0000000001", "topk:abc", "topk:0.5.5", "topk:-0.1", "topk:1e-2",
                           "topk: 0.1", "topk:0.0000000001", "topk:abc+int8"}) {
    auto c = MakeCodec(name);
    ASSERT_FALSE(c.ok()) << name;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << name << ": " << c.status();
  }
}

TEST(CodecNames, UnknownNameIsNotFoundAndListsTheKnown) {
  for (const char* name : {"", "top_k", "int16", "DENSE_F32", "fp32", "topk:0.01+int16", "topk:0.01+", "topkk:0.1"}) {
    auto c = MakeCodec(name);
    ASSERT_FALSE(c.ok()) << name;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound) << name << ": " << c.status();
    EXPECT_NE(std::string(c.status().message()).find("topk:F+int8"), std::string::npos) << c.status();
  }
}

// ------------------------------------------------------------------- fp16 --

// Every finite binary16 decodes to its exact value, and that value encodes
// back to the same 16 bits.
TEST(CodecFp16, EveryFiniteHalfRoundTripsExactly) {
  std::vector<uint16_t> halves;
  std::vector<float> want;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint32_t e = (h >> 10) & 31, m = h & 1023;
    if (e == 31) continue;
    const double mag = e == 0 ? std::ldexp(static_cast<double>(m), -24) : std::ldexp(1024.0 + m, static_cast<int>(e) - 25);
    halves.push_back(static_cast<uint16_t>(h));
    want.push_back(static_cast<float>((h & 0x8000) ? -mag : mag));
  }
  std::string payload("FP16");
  Put<uint64_t>(&payload, halves.size());
  for (uint16_t h : halves) Put<uint16_t>(&payload, h);
  auto codec = Make("fp16");
  std::vector<float> out(halves.size());
  ASSERT_TRUE(codec->Decode(payload, out.size(), out.data()).ok());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(BitsOf(out[i]), BitsOf(want[i])) << std::hex << halves[i];
  EXPECT_EQ(codec->Encode(want.data(), want.size()), payload);
}

TEST(CodecFp16, RoundsToNearestEvenAndSaturates) {
  const float kMax = 65504.0f;
  const std::pair<float, float> cases[] = {
      {1.0f + 0x1p-11f, 1.0f},                      // halfway: to the even 1.0
      {1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-9f},        // halfway: to the even 1 + 2^-9
      {1.0f + 0x1p-11f + 0x1p-20f, 1.0f + 0x1p-10f},  // above halfway: up
      {0x1p-25f, 0.0f},                             // half the smallest subnormal: to even 0
      {3 * 0x1p-26f, 0x1p-24f},                     // 0.75 of it: up
      {0x1p-14f - 0x1p-26f, 0x1p-14f},              // rounds up into the normals
      {-1e-30f, -0.0f},
      {65519.0f, kMax},                             // below halfway to 2^16: 65504
      {65520.0f, kMax},                             // would round to Inf: saturates
      {1e6f, kMax},
      {-1e6f, -kMax},
      {std::numeric_limits<float>::max(), kMax},
  };
  auto codec = Make("fp16");
  for (const auto& [in, want] : cases) {
    std::vector<float> out = RoundTrip(*codec, {in});
    EXPECT_EQ(BitsOf(out[0]), BitsOf(want)) << in << " -> " << out[0] << ", want " << want;
  }
}

TEST(CodecFp16, RelativeErrorIsHalfAnUlp) {
  auto codec = Make("fp16");
  std::vector<float> v = RandomValues(5000, 1);
  std::vector<float> out = RoundTrip(*codec, v);
  for (size_t i = 0; i < v.size(); ++i) {
    // binary16 has 11 significant bits; below 2^-14 the step is 2^-24.
    const double bound = std::max(std::fabs(v[i]) * 0x1p-11, 0x1p-25);
    ASSERT_LE(std::fabs(static_cast<double>(out[i]) - v[i]), bound) << i << ": " << v[i];
  }
}

// ------------------------------------------------------------------- int8 --

TEST(CodecInt8, ErrorIsAtMostHalfAStepPerBlock) {
  auto codec = Make("int8");
  const size_t n = 256 * 9 + 77;  // a partial last block
  std::vector<float> v = RandomValues(n, 2);
  for (size_t i = 256; i < 512; ++i) v[i] = 0.0f;    // an all-zero block
  for (size_t i = 512; i < 768; ++i) v[i] *= 1e-33f;  // below 2^-100: sent as zeros
  std::vector<float> out = RoundTrip(*codec, v);
  for (size_t b = 0; b * 256 < n; ++b) {
    const size_t lo = b * 256, hi = std::min(n, lo + 256);
    float max_abs = 0;
    for (size_t i = lo; i < hi; ++i) max_abs = std::max(max_abs, std::fabs(v[i]));
    if (max_abs < 0x1p-100f) {
      for (size_t i = lo; i < hi; ++i) ASSERT_EQ(out[i], 0.0f) << i;
      continue;
    }
    const double step = max_abs / 127.0;
    for (size_t i = lo; i < hi; ++i) {
      // Half a step, plus the float rounding of scale, 1/scale and q · scale.
      ASSERT_LE(std::fabs(static_cast<double>(out[i]) - v[i]), 0.5 * step + 1e-6 * max_abs)
          << "block " << b << " value " << i << ": " << v[i] << " -> " << out[i];
    }
  }
}

// ------------------------------------------------------------------- sign --

TEST(CodecSign, DecodesToSignTimesBlockMeanMagnitude) {
  auto codec = Make("sign");
  const size_t n = 256 * 5 + 13;
  std::vector<float> v = RandomValues(n, 3);
  v[7] = -0.0f;  // the sign bit decides: −0 reads as negative
  v[8] = 0.0f;
  std::vector<float> out = RoundTrip(*codec, v);
  for (size_t lo = 0; lo < n; lo += 256) {
    const size_t hi = std::min(n, lo + 256);
    double sum = 0;
    for (size_t i = lo; i < hi; ++i) sum += std::fabs(v[i]);
    const double mean = sum / static_cast<double>(hi - lo);
    for (size_t i = lo; i < hi; ++i) {
      ASSERT_NEAR(std::fabs(out[i]), mean, 1e-6 * mean) << i;
      ASSERT_EQ(std::signbit(out[i]), std::signbit(v[i])) << i;
      ASSERT_EQ(BitsOf(std::fabs(out[i])), BitsOf(std::fabs(out[lo]))) << i;  // one scale per block
    }
  }
}

// ------------------------------------------------------------------ top-k --

// The k largest |v| in ascending index order, ties to the lower index.
std::vector<size_t> BruteTopK(const std::vector<float>& v, size_t k) {
  std::vector<size_t> idx(v.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Checks that `codec` (fp32 values) decodes v to exactly its top k.
void ExpectExactTopK(const char* name, const std::vector<float>& v, size_t k) {
  SCOPED_TRACE(testing::Message() << name << " n=" << v.size() << " k=" << k);
  auto codec = Make(name);
  std::string q = codec->Encode(v.data(), v.size());
  uint64_t k_field = 0;
  std::memcpy(&k_field, q.data() + 12, 8);
  EXPECT_EQ(k_field, k);
  std::vector<float> out(v.size(), 42.0f);
  ASSERT_TRUE(codec->Decode(q, v.size(), out.data()).ok());
  std::vector<bool> kept(v.size(), false);
  for (size_t i : BruteTopK(v, k)) kept[i] = true;
  for (size_t i = 0; i < v.size(); ++i) {
    ASSERT_EQ(BitsOf(out[i]), kept[i] ? BitsOf(v[i]) : 0u) << i << ": " << v[i] << " -> " << out[i];
  }
}

TEST(CodecTopK, KeepsExactlyTheKLargestMagnitudes) {
  std::vector<float> v = RandomValues(5000, 4);
  ExpectExactTopK("topk:0.01", v, 50);
  ExpectExactTopK("topk:0.001", v, 5);
  ExpectExactTopK("topk:0.0001", v, 1);          // ⌈0.5⌉
  ExpectExactTopK("topk:0.000000001", v, 1);     // max(1, ...)
  ExpectExactTopK("topk:0.3", v, 1500);           // bitmap indices
  ExpectExactTopK("topk:0.99", v, 4950);          // all values
  ExpectExactTopK("topk:1", v, 5000);             // k = n
  v.resize(1001);
  ExpectExactTopK("topk:0.01", v, 11);  // ⌈10.01⌉
  v.resize(1);
  ExpectExactTopK("topk:0.01", v, 1);
  // Gaussian values at one scale: the k-th largest sits in a crowded bucket.
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g(0.0f, 1e-3f);
  std::vector<float> w(100000);
  for (float& x : w) x = g(rng);
  ExpectExactTopK("topk:0.01", w, 1000);
  ExpectExactTopK("topk:0.2", w, 20000);
}

TEST(CodecTopK, TiesGoToTheLowerIndex) {
  // Magnitudes 1, 2, 3 only, signs alternating: ties everywhere.
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(1 + (i * 7) % 3) * (i % 2 ? -1.0f : 1.0f);
  ExpectExactTopK("topk:0.1", v, 100);  // among the 3s
  ExpectExactTopK("topk:0.5", v, 500);  // every 3 and the first 2s
  // One value repeated: the first k.
  std::vector<float> same(10000, -0.5f);
  ExpectExactTopK("topk:0.01", same, 100);
  // Values that share their top bits (one histogram bucket) and differ below.
  std::vector<float> close(20000);
  for (size_t i = 0; i < close.size(); ++i) close[i] = 1.0f + static_cast<float>((i * 7919) % 5003) * 1e-7f;
  ExpectExactTopK("topk:0.01", close, 200);
  // Above 2^16 values top-k estimates its threshold from a sample; where the
  // sample misleads it falls back to the exact histogram. All one value: the
  // threshold reaches everything.
  std::vector<float> flat(200000, 0.25f);
  ExpectExactTopK("topk:0.01", flat, 2000);
  // Mostly zeros, 3000 values above them: the sample sees too few to place k.
  std::vector<float> sparse(200000, 0.0f);
  for (size_t i = 0; i < 3000; ++i) sparse[(i * 7919) % sparse.size()] = 1.0f + static_cast<float>(i % 37);
  ExpectExactTopK("topk:0.01", sparse, 2000);
  ExpectExactTopK("topk:0.05", sparse, 10000);  // k above the non-zeros: the first zeros fill it
}

TEST(CodecTopK, CompositionsQuantiseTheKeptValuesOnly) {
  std::vector<float> v = RandomValues(4000, 6);
  const std::pair<const char*, size_t> cases[] = {
      {"topk:0.01+int8", 40}, {"topk:0.01+fp16", 40}, {"topk:0.01+sign", 40}, {"topk:0.5+int8", 2000},
      {"topk:0.95+int8", 3800}};
  for (const auto& [name, k] : cases) {
    SCOPED_TRACE(name);
    auto codec = Make(name);
    std::vector<float> out = RoundTrip(*codec, v);
    std::vector<size_t> top = BruteTopK(v, k);
    std::vector<bool> kept(v.size(), false);
    for (size_t i : top) kept[i] = true;
    float max_kept = 0;
    for (size_t i : top) max_kept = std::max(max_kept, std::fabs(v[i]));
    for (size_t i = 0; i < v.size(); ++i) {
      if (!kept[i]) {
        ASSERT_EQ(BitsOf(out[i]), 0u) << i;
      } else if (std::string(name).find("sign") != std::string::npos) {
        ASSERT_EQ(std::signbit(out[i]), std::signbit(v[i])) << i;
      } else {
        // int8 over blocks of the kept values (max ≤ max_kept), or fp16.
        ASSERT_LE(std::fabs(out[i] - v[i]), std::max(0.5 * max_kept / 127 * (1 + 1e-5), std::fabs(v[i]) * 0x1p-11))
            << i;
      }
    }
  }
}

TEST(CodecTopK, PicksTheSmallestIndexCoding) {
  std::vector<float> v = RandomValues(4000, 7);
  const std::pair<const char*, int> cases[] = {
      {"topk:0.01", 0}, {"topk:0.1+int8", 0}, {"topk:0.3", 1},      {"topk:0.5+sign", 1},
      {"topk:1+sign", 1}, {"topk:0.99", 2},    {"topk:0.9+int8", 2}, {"topk:1+fp16", 2}};
  for (const auto& [name, coding] : cases) {
    std::string q = Make(name)->Encode(v.data(), v.size());
    EXPECT_EQ(static_cast<int>(q[21]), coding) << name;
  }
}

// ---------------------------------------------------------- error feedback --

// As Federation::Publish does: r = x − x̂, q = Encode(r), x̂ += Decode(q).
struct PublicCopy {
  explicit PublicCopy(const Codec& c, size_t n) : codec(c), xhat(n, 0.0f) {}
  // One round; returns the decoded delta.
  std::vector<float> Round(const std::vector<float>& x) {
    std::vector<float> r(x.size()), d(x.size());
    for (size_t i = 0; i < x.size(); ++i) r[i] = x[i] - xhat[i];
    std::string q = codec.Encode(r.data(), r.size());
    EXPECT_TRUE(codec.Decode(q, d.size(), d.data()).ok());
    for (size_t i = 0; i < x.size(); ++i) xhat[i] += d[i];
    return d;
  }
  double RelativeError(const std::vector<float>& x) const {
    double e = 0, s = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      e += (static_cast<double>(x[i]) - xhat[i]) * (static_cast<double>(x[i]) - xhat[i]);
      s += static_cast<double>(x[i]) * x[i];
    }
    return std::sqrt(e / s);
  }
  const Codec& codec;
  std::vector<float> xhat;
};

TEST(CodecErrorFeedback, SentPlusResidualIsTheInput) {
  for (const char* name : kCodecs) {
    SCOPED_TRACE(name);
    auto codec = Make(name);
    std::vector<float> x = RandomValues(3000, 8);
    PublicCopy pc(*codec, x.size());
    for (int round = 0; round < 4; ++round) {
      std::vector<float> before = pc.xhat;
      std::vector<float> d = pc.Round(x);
      for (size_t i = 0; i < x.size(); ++i) {
        const double r = x[i] - before[i], r_after = x[i] - pc.xhat[i];
        // Each of the three float operations rounds once.
        const double tol = 0x1p-23 * (std::fabs(x[i]) + std::fabs(before[i]) + std::fabs(pc.xhat[i])) + 1e-37;
        ASSERT_NEAR(d[i] + r_after, r, tol) << "round " << round << " value " << i;
      }
      x = RandomValues(3000, 9 + round);  // the trainer moved
    }
  }
}

// With x fixed, x̂ approaches x: each round sends part of what is left.
// Bounds: measured on this x (in comments), with a margin.
TEST(CodecErrorFeedback, PublicCopyConvergesToAFixedX) {
  const size_t n = 2000;  // topk:0.01 keeps 20: ⌈n/k⌉ = 100 rounds send every value once
  struct Case {
    const char* name;
    int rounds;
    double bound;  // ||x − x̂|| / ||x|| after `rounds`
  };
  const Case cases[] = {
      {"dense_f32", 1, 0.0},
      {"fp16", 3, 1e-8},              // measured 9.6e-10: 2^-11 per round, then fp16's subnormal floor
      {"int8", 3, 1e-6},              // measured 1.2e-7: 1/254 of the block max per round
      {"sign", 200, 3e-2},            // measured 9.9e-3 (0.63 after one round): scaled sign contracts slowly
      {"topk:0.01", 100, 1e-7},       // measured 0: every value sent once, exactly
      {"topk:0.01+fp16", 100, 2e-6},  // measured 2.0e-7
      {"topk:0.01+int8", 150, 3e-7},  // measured 3.0e-8
      {"topk:0.01+sign", 150, 5e-6},  // measured 5.0e-7
      {"topk:0.5+sign", 200, 3e-2},   // measured 1.1e-2
  };
  const std::vector<float> x = RandomValues(n, 10);
  for (const Case& c : cases) {
    auto codec = Make(c.name);
    PublicCopy pc(*codec, n);
    double first = 0;
    for (int r = 0; r < c.rounds; ++r) {
      pc.Round(x);
      if (r == 0) first = pc.RelativeError(x);
    }
    const double last = pc.RelativeError(x);
    EXPECT_LE(last, c.bound) << c.name << " after " << c.rounds << " rounds (first round " << first << ")";
    if (c.rounds > 1) {
      EXPECT_LT(last, first) << c.name;
    }
  }
}

TEST(CodecErrorFeedback, NonFiniteInputEncodesToARefusedPayload) {
  for (const char* name : kCodecs) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      auto codec = Make(name);
      std::vector<float> v = RandomValues(1000, 11);
      v[517] = bad;
      std::string q = codec->Encode(v.data(), v.size());
      std::vector<float> out(v.size());
      absl::Status st = codec->Decode(q, v.size(), out.data());
      ASSERT_FALSE(st.ok()) << name << " " << bad;
      EXPECT_EQ(Reason(st), "non_finite") << name << ": " << st;
    }
  }
}

TEST(CodecErrorFeedback, EncodingIsDeterministicAndEmptyRoundTrips) {
  std::vector<float> v = RandomValues(3000, 12);
  for (const char* name : kCodecs) {
    auto codec = Make(name);
    EXPECT_EQ(codec->Encode(v.data(), v.size()), Make(name)->Encode(v.data(), v.size())) << name;
    std::string q = codec->Encode(nullptr, 0);
    EXPECT_TRUE(codec->Decode(q, 0, nullptr).ok()) << name;
    // EncodeInto reuses a bigger string.
    std::string reused(100000, 'x');
    codec->EncodeInto(v.data(), v.size(), &reused);
    EXPECT_EQ(reused, codec->Encode(v.data(), v.size())) << name;
  }
}

// ------------------------------------------------------------------ golden --

// Reproducible on every platform: splitmix64, not std distributions (whose
// output is implementation-defined). Magnitudes 2^-16 to 2^7, with zeros,
// −0, ties and fp16 edge cases mixed in.
std::vector<float> PortableValues(size_t n) {
  std::vector<float> v(n);
  uint64_t state = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    const float u = static_cast<float>(static_cast<int32_t>(z >> 40) - (1 << 23)) * 0x1p-23f;  // [-1, 1)
    v[i] = std::ldexp(u, static_cast<int>((z >> 8) % 24) - 16);
  }
  const float specials[] = {0.0f, -0.0f, 0.5f, -0.5f, 0.5f, 65504.0f, 65520.0f, 1e-7f, -3e-8f, 1.0f + 0x1p-11f};
  for (size_t j = 0; j < sizeof(specials) / sizeof(specials[0]) && 7 * j < n; ++j) v[7 * j] = specials[j];
  return v;
}

uint64_t Fnv1a(const void* data, size_t size, uint64_t h = 0xcbf29ce484222325u) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3u;
  return h;
}

// The bytes each codec sends, and the floats they decode to, are pinned:
// a change to either is a wire format change (every node must agree). The
// SSE2 paths and the portable ones (-DMYCEL_CODEC_PORTABLE) must both match.
TEST(CodecGolden, PayloadsAndDecodedValuesArePinned) {
  const std::pair<const char*, uint64_t> golden[] = {
      {"dense_f32", 0x351f148d99ffb041u},      {"fp16", 0xc7b29b846a67c915u},
      {"int8", 0xeae3bbbb80cb9d10u},           {"sign", 0x44a3d43cb893b54bu},
      {"topk:0.01", 0xa6bce49b037f62cau},      {"topk:0.01+fp16", 0xc91c1cf8b57adcd3u},
      {"topk:0.01+int8", 0xf30acef5eeeb3c02u}, {"topk:0.01+sign", 0x4a1969ea4b3859dcu},
      {"topk:0.5+int8", 0xe1fe69ab499b9ab7u},  {"topk:0.99", 0x09ab50f06673b7dau},
  };
  const std::vector<float> v = PortableValues(70001);  // past the 2^16 where top-k starts sampling
  for (const auto& [name, want] : golden) {
    auto codec = Make(name);
    const std::string q = codec->Encode(v.data(), v.size());
    std::vector<float> out(v.size());
    ASSERT_TRUE(codec->Decode(q, v.size(), out.data()).ok()) << name;
    const uint64_t got = Fnv1a(out.data(), 4 * out.size(), Fnv1a(q.data(), q.size()));
    EXPECT_EQ(got, want) << name << ": 0x" << std::hex << got;
  }
}

// ------------------------------------------------------------------- sizes --

TEST(CodecSize, PayloadsAreAsSmallAsTheFormatSays) {
  const size_t n = 100000, blocks = 391;  // ⌈n / 256⌉
  std::vector<float> v = RandomValues(n, 13);
  EXPECT_EQ(Make("fp16")->Encode(v.data(), n).size(), 12 + 2 * n);
  EXPECT_EQ(Make("int8")->Encode(v.data(), n).size(), 16 + 4 * blocks + n);
  EXPECT_EQ(Make("sign")->Encode(v.data(), n).size(), 16 + 4 * blocks + n / 8);
  // k = 1000: 4 KB of values, about a byte per index (gaps average 100).
  const size_t topk = Make("topk:0.01")->Encode(v.data(), n).size();
  EXPECT_LT(topk, 26 + 4000 + 2000u);
  // 1000 int8 values with 4 scales, and the same indices.
  const size_t topk_int8 = Make("topk:0.01+int8")->Encode(v.data(), n).size();
  EXPECT_LT(topk_int8, 26 + 16 + 1000 + 2000u);
  EXPECT_LT(topk_int8, n / 25);
}

TEST(CodecSize, NoPayloadExceedsDenseByMoreThanTheOverheadBound) {
  size_t worst = 0;
  for (const char* name : kCodecs) {
    auto codec = Make(name);
    for (size_t n : {0, 1, 2, 3, 7, 8, 9, 31, 64, 100, 255, 256, 257, 300, 511, 1000, 4097}) {
      std::vector<float> v = RandomValues(n, 14 + n);
      const size_t size = codec->Encode(v.data(), n).size();
      ASSERT_LE(size, 4 * n + kMaxCodecOverheadBytes) << name << " n=" << n;
      if (size > 4 * n) worst = std::max(worst, size - 4 * n);
    }
  }
  EXPECT_EQ(worst, 28u);  // as codec.h says: topk:F+sign of one value
}

// --------------------------------------------------------------- malformed --

void ExpectRefused(const Codec& codec, std::string_view q, size_t n, const char* reason, const char* what) {
  std::vector<float> out(n + 1);
  absl::Status st = codec.Decode(q, n, out.data());
  ASSERT_FALSE(st.ok()) << codec.name() << ": " << what;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << codec.name() << ": " << what;
  EXPECT_EQ(Reason(st), reason) << codec.name() << ": " << what << ": " << st;
}

TEST(CodecMalformed, WrongLengthCountOrMagicIsBadShape) {
  const size_t n = 600;
  std::vector<float> v = RandomValues(n, 15);
  for (const char* name : kCodecs) {
    auto codec = Make(name);
    std::string q = codec->Encode(v.data(), n);
    ExpectRefused(*codec, q.substr(0, q.size() - 1), n, "bad_shape", "truncated by a byte");
    ExpectRefused(*codec, q + '\0', n, "bad_shape", "extended by a byte");
    ExpectRefused(*codec, q.substr(0, 11), n, "bad_shape", "cut inside the header");
    ExpectRefused(*codec, "", n, "bad_shape", "empty");
    ExpectRefused(*codec, q, n - 1, "bad_shape", "count > n");
    ExpectRefused(*codec, q, n + 1, "bad_shape", "count < n");
    std::string forged = q;
    forged[4] = static_cast<char>(forged[4] + 1);  // count field n + 1
    ExpectRefused(*codec, forged, n, "bad_shape", "count field ≠ n");
    std::string magic = q;
    magic[0] = 'X';
    ExpectRefused(*codec, magic, n, "bad_shape", "unknown magic");
  }
  // Another codec's payload, or top-k's for another F or value coding.
  const std::pair<const char*, const char*> foreign[] = {
      {"int8", "fp16"}, {"sign", "int8"}, {"fp16", "dense_f32"}, {"topk:0.01", "dense_f32"},
      {"topk:0.02", "topk:0.01"}, {"topk:0.01+int8", "topk:0.01"}, {"topk:0.01", "topk:0.01+fp16"}};
  for (const auto& [from, to] : foreign) {
    ExpectRefused(*Make(to), Make(from)->Encode(v.data(), n), n, "bad_shape", from);
  }
}

TEST(CodecMalformed, NonFiniteScaleOrValueIsNonFinite) {
  const size_t n = 600;
  std::vector<float> v = RandomValues(n, 16);
  // Where the first scale (or fp32 / fp16 value) sits.
  const std::pair<const char*, size_t> at[] = {{"int8", 16},           {"sign", 16},
                                               {"topk:0.01+int8", 26}, {"topk:0.01+sign", 26},
                                               {"topk:0.5+int8", 26},  {"topk:0.95+int8", 26},
                                               {"topk:0.01", 26 + 4},  {"topk:0.95", 26 + 8},
                                               {"dense_f32", 12 + 8}};
  for (const auto& [name, offset] : at) {
    auto codec = Make(name);
    const std::string q = codec->Encode(v.data(), n);
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      std::string forged = q;
      const uint32_t b = BitsOf(bad);
      std::memcpy(forged.data() + offset, &b, 4);
      ExpectRefused(*codec, forged, n, "non_finite", name);
    }
  }
  // An int8 scale so large that ±128 × it would overflow.
  auto int8 = Make("int8");
  std::string q = int8->Encode(v.data(), n);
  const float huge = std::numeric_limits<float>::max();
  std::memcpy(q.data() + 16, &huge, 4);
  ExpectRefused(*int8, q, n, "non_finite", "huge scale");
  // fp16 Inf and NaN.
  auto fp16 = Make("fp16");
  for (uint16_t bad : {0x7c00, 0xfc00, 0x7e00, 0x7c01}) {
    std::string p = fp16->Encode(v.data(), n);
    std::memcpy(p.data() + 12 + 2 * 300, &bad, 2);
    ExpectRefused(*fp16, p, n, "non_finite", "fp16 special");
  }
}

// A hand-made topk:0.3 payload for n = 10 (k = 3).
std::string TopK10(uint64_t k, uint8_t value_coding, uint8_t index_coding, uint32_t block,
                   const std::vector<float>& values, const std::string& indices) {
  std::string p("TOPK");
  Put<uint64_t>(&p, 10);
  Put<uint64_t>(&p, k);
  Put<uint8_t>(&p, value_coding);
  Put<uint8_t>(&p, index_coding);
  Put<uint32_t>(&p, block);
  for (float f : values) PutFloat(&p, f);
  return p + indices;
}

TEST(CodecMalformed, TopKIndicesAndCounts) {
  auto codec = Make("topk:0.3");
  const std::vector<float> vals = {1, 2, 3};
  // Indices 1, 4, 9 as delta varints, and as a bitmap.
  const std::string delta("\x01\x03\x05", 3), bitmap("\x12\x02", 2);
  for (const std::string& p : {TopK10(3, 0, 0, 0, vals, delta), TopK10(3, 0, 1, 0, vals, bitmap)}) {
    std::vector<float> out(10, 42.0f);
    ASSERT_TRUE(codec->Decode(p, 10, out.data()).ok());
    EXPECT_EQ(out, (std::vector<float>{0, 1, 0, 0, 2, 0, 0, 0, 0, 3}));
  }
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const struct {
    std::string payload;
    const char* reason;
    const char* what;
  } cases[] = {
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03\x06", 3)), "bad_index", "last index 10 of 10"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x0a\x01\x01", 3)), "bad_index", "first index 10 of 10"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x00\x05", 3)), "bad_index", "repeated index"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12)), "bad_index",
       "a gap of 2^64 − 1"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 12)), "bad_index",
       "a varint past 64 bits"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03\x85", 3)), "bad_shape", "a varint cut short"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03\x05\x01", 4)), "bad_shape", "a trailing byte"},
      {TopK10(3, 0, 0, 0, vals, std::string("\x01\x03", 2)), "bad_shape", "two indices for three values"},
      {TopK10(11, 0, 0, 0, vals, delta), "bad_shape", "k > n"},
      {TopK10(0, 0, 0, 0, {}, ""), "bad_shape", "k = 0"},
      {TopK10(2, 0, 0, 0, {1, 2}, std::string("\x01\x03", 2)), "bad_shape", "k ≠ ⌈0.3 · 10⌉"},
      {TopK10(3, 0, 0, 0, {1, nan, 3}, delta), "non_finite", "NaN value"},
      {TopK10(3, 0, 0, 0, {1, 2, -inf}, delta), "non_finite", "−Inf value"},
      {TopK10(3, 2, 0, 256, vals, delta), "bad_shape", "int8 values for an fp32 codec"},
      {TopK10(3, 0, 0, 256, vals, delta), "bad_shape", "a block size for fp32"},
      {TopK10(3, 0, 3, 0, vals, delta), "bad_shape", "unknown index coding"},
      {TopK10(3, 0, 1, 0, vals, std::string("\x13\x02", 2)), "bad_shape", "bitmap with 4 indices"},
      {TopK10(3, 0, 1, 0, vals, std::string("\x12\x00", 2)), "bad_shape", "bitmap with 2 indices"},
      {TopK10(3, 0, 1, 0, vals, std::string("\x12\x04", 2)), "bad_index", "bitmap padding bit (index 10)"},
      {TopK10(3, 0, 1, 0, vals, std::string("\x12", 1)), "bad_shape", "bitmap cut short"},
      {TopK10(3, 0, 2, 0, {1, 2, 3, 0, 0, 0, 0, 0, 0}, ""), "bad_shape", "all values, one missing"},
  };
  for (const auto& c : cases) ExpectRefused(*codec, c.payload, 10, c.reason, c.what);
  // All values: no more than k of them may be non-zero.
  auto all = Make("topk:0.9");  // k = 9 of 10
  std::string p9("TOPK");
  Put<uint64_t>(&p9, 10);
  Put<uint64_t>(&p9, 9);
  Put<uint8_t>(&p9, 0);
  Put<uint8_t>(&p9, 2);
  Put<uint32_t>(&p9, 0);
  for (int i = 0; i < 9; ++i) PutFloat(&p9, 1.0f);
  std::string p10 = p9;
  PutFloat(&p9, 0.0f);
  PutFloat(&p10, 1.0f);
  std::vector<float> out(10);
  EXPECT_TRUE(all->Decode(p9, 10, out.data()).ok());
  ExpectRefused(*all, p10, 10, "bad_shape", "all values, ten non-zero");
  // Sign values cannot be sent for all positions (0 has no sign code).
  auto sign = Make("topk:0.3+sign");
  std::string p("TOPK");
  Put<uint64_t>(&p, 10);
  Put<uint64_t>(&p, 3);
  Put<uint8_t>(&p, 3);
  Put<uint8_t>(&p, 2);
  Put<uint32_t>(&p, 256);
  PutFloat(&p, 1.0f);
  p += std::string(2, '\0');
  ExpectRefused(*sign, p, 10, "bad_shape", "sign values for all positions");
}

TEST(CodecMalformed, SignPaddingBitsAreBadShape) {
  auto codec = Make("sign");
  std::vector<float> v = RandomValues(13, 17);
  std::string q = codec->Encode(v.data(), v.size());
  q.back() = static_cast<char>(q.back() | 0x80);  // bit 15: past the 13 values
  ExpectRefused(*codec, q, 13, "bad_shape", "padding bit");
  q = codec->Encode(v.data(), v.size());
  q[12] = 1;  // block size 257
  ExpectRefused(*codec, q, 13, "bad_shape", "block size");
}

// A cheap fuzz loop: mutated, truncated and extended payloads never crash and
// either decode to finite values or are refused with a known reason.
TEST(CodecFuzz, MutatedPayloadsAreRefusedOrDecodeFinite) {
  std::mt19937_64 rng(18);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  int refused = 0, decoded = 0;
  for (const char* name : kCodecs) {
    auto codec = Make(name);
    for (size_t n : {1, 9, 700}) {
      std::vector<float> v = RandomValues(n, 19 + n);
      const std::string q = codec->Encode(v.data(), n);
      for (int trial = 0; trial < 300; ++trial) {
        std::string m = q;
        switch (trial % 5) {
          case 0:  // a few random bytes
          case 1:
            for (int j = 1 + pick(3); j > 0; --j) m[pick(m.size())] = static_cast<char>(rng());
            break;
          case 2:  // one header or near-header byte
            m[pick(std::min<size_t>(m.size(), 40))] = static_cast<char>(rng());
            break;
          case 3:
            m.resize(pick(m.size()));
            break;
          case 4:
            for (int j = 1 + pick(8); j > 0; --j) m.push_back(static_cast<char>(rng()));
            break;
        }
        std::vector<float> out(n, 42.0f);
        absl::Status st = codec->Decode(m, n, out.data());
        if (st.ok()) {
          ++decoded;
          ASSERT_TRUE(Finite(out)) << name << " trial " << trial;
        } else {
          ++refused;
          ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
          const std::string r = Reason(st);
          ASSERT_TRUE(r == "bad_shape" || r == "bad_index" || r == "non_finite") << name << ": " << st;
        }
      }
    }
  }
  EXPECT_GT(refused, 1000);
  EXPECT_GT(decoded, 100);  // value bytes changed in place still decode
}

}  // namespace
}  // namespace mycel::federation
