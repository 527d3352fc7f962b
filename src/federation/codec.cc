#include "federation/codec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

// SSE2 is baseline on x86-64. It is used only where GCC's vectorisation of
// the portable loop (always compiled, and used for tails) is poor; both give
// the same bytes. -DMYCEL_CODEC_PORTABLE builds the portable code alone, to
// test it on x86.
#if defined(__SSE2__) && !defined(MYCEL_CODEC_PORTABLE)
#define MYCEL_CODEC_SSE2 1
#include <emmintrin.h>
#else
#define MYCEL_CODEC_SSE2 0
#endif

#include "absl/strings/str_cat.h"
#include "common/coding.h"
#include "common/refusal.h"
#include "federation/wire.h"

// Wire formats. Every payload starts with a 4-byte magic and the value count n
// as u64; all integers and floats are little-endian, floats IEEE binary32.
//
//   dense_f32  "DF32" u64 n | n × f32
//   fp16       "FP16" u64 n | n × u16 binary16
//   int8       "INT8" u64 n | u32 block (256) | ⌈n/256⌉ × f32 scale | n × i8
//   sign       "SIGN" u64 n | u32 block (256) | ⌈n/256⌉ × f32 scale | ⌈n/8⌉ bytes
//              of sign bits (value i is bit i%8 of byte i/8, set = negative;
//              the unused bits of the last byte are zero)
//   topk:F[+c] "TOPK" u64 n | u64 k | u8 value coding | u8 index coding | u32 block
//              | values | indices
//     value coding  0 f32, 1 fp16, 2 int8, 3 sign (block 256 for int8 and
//                   sign, else 0): the section is laid out as the value part
//                   of that codec's own payload (after its u32 block), for m values
//     index coding  0 delta: m = k, then k LEB128 varints, the first index,
//                     then each index minus the one before (sorted, so ≥ 1)
//                   1 bitmap: m = k, then ⌈n/8⌉ bytes, bit i%8 of byte i/8
//                     set for each kept index (exactly k set, none ≥ n)
//                   2 all: m = n, the values of all n positions (zeros where
//                     not kept), no index section; not with sign (0 has no sign code)
//     The encoder picks whichever index coding is smallest (ties: delta,
//     then bitmap): delta for small F, bitmap above F ≈ 1/8, all when k is
//     so close to n that indices cost more than the zeros they spare; the
//     last keeps every payload within 4n + kMaxCodecOverheadBytes.
//     k must be exactly max(1, ⌈F·n⌉) for the receiver's F (0 when n = 0).

namespace mycel::federation {
namespace {

// Values per scale for int8 and sign: the block size the issue asked for. A
// scale costs 4 bytes, 1.6% of an int8 block; smaller blocks would track
// magnitudes more closely at a higher cost.
constexpr uint32_t kBlock = 256;

constexpr char kDenseMagic[4] = {'D', 'F', '3', '2'};
constexpr char kFp16Magic[4] = {'F', 'P', '1', '6'};
constexpr char kInt8Magic[4] = {'I', 'N', 'T', '8'};
constexpr char kSignMagic[4] = {'S', 'I', 'G', 'N'};
constexpr char kTopKMagic[4] = {'T', 'O', 'P', 'K'};

constexpr int32_t kInfBits = 0x7f800000;  // |v| bit patterns at or above are Inf/NaN
// int8 sends a block whose largest |v| is below 2^-100 as zeros (scale 0),
// so 127 / max stays finite (and max / 127 a normal float); what is not sent
// stays in x − x̂, and a weight difference of 1e-30 is noise anyway.
constexpr int32_t kInt8TinyBits = (127 - 100) << 23;
// The largest int8 scale whose ±128 × scale is finite: keeps decoded values
// finite without a check per value. The encoder exceeds it only for a block
// holding |v| > 127/128 of FLT_MAX (3.37e38), refused then like an Inf.
constexpr float kInt8MaxScale = std::numeric_limits<float>::max() / 128.0f;

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// |v| as its bit pattern: orders like |v| for every float, NaN above Inf.
inline int32_t MagnitudeKey(float f) { return static_cast<int32_t>(Bits(f) & 0x7fffffffu); }

size_t CeilDiv(size_t a, size_t b) { return a / b + (a % b != 0); }

// Branch-free so the scan vectorises (an int: GCC does not vectorise a bool
// reduction); NaN and ±Inf both fail x − x == 0.
bool AllFinite(const float* v, size_t n) {
  int ok = 1;
  for (size_t i = 0; i < n; ++i) ok &= (v[i] - v[i] == 0.0f);
  return ok != 0;
}

// Copies m little-endian floats from src to out and checks them in the same
// pass: one read and one write instead of a memcpy and a second read (dense
// decode of 10M values: 1.8x a memcpy before, 1.2x now).
bool CopyFinite(const char* src, size_t m, float* out) {
  if constexpr (!kLittleEndianHost) {
    DecodeFloats(src, m, out);
    return AllFinite(out, m);
  }
  int ok = 1;
  for (size_t i = 0; i < m; ++i) {
    float x;
    std::memcpy(&x, src + 4 * i, 4);
    out[i] = x;
    ok &= (x - x == 0.0f);
  }
  return ok != 0;
}

// Index of the first non-finite value; called only once AllFinite failed.
size_t FirstNonFinite(const float* v, size_t n) {
  size_t i = 0;
  while (i < n && std::isfinite(v[i])) ++i;
  return i;
}

// ------------------------------------------------------------ binary16 --

// All ones where `c` holds, else zero: selects written as masks, which GCC
// vectorises where it leaves a ?: as a branch.
inline uint32_t Mask(bool c) { return 0u - static_cast<uint32_t>(c); }
inline uint32_t Select(uint32_t mask, uint32_t a, uint32_t b) { return (a & mask) | (b & ~mask); }

// Round to nearest even, branch-free so loops over it vectorise (after F.
// Giesen, "float_to_half_fast3_rtne", public domain). Finite values that
// would round past 65504 saturate to it: one outlier must not poison a
// neighbour's mirror with Inf. Inf stays Inf and NaN stays NaN, so Decode
// refuses them.
inline uint32_t FloatToHalf(float f) {
  const uint32_t x = Bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t a = static_cast<int32_t>(x & 0x7fffffffu);
  // Normal range: rebias the exponent (127 → 15) and round the 13 dropped
  // mantissa bits to nearest even (0xfff plus the kept LSB).
  int32_t normal = (a - ((127 - 15) << 23) + 0xfff + ((a >> 13) & 1)) >> 13;
  normal = normal < 0x7bff ? normal : 0x7bff;
  // Below 2^-14 (binary16 subnormals): adding 0.5 puts the binary16 LSB at
  // the float's, so the FPU rounds to nearest even for us.
  const uint32_t sub = Bits(FromBits(static_cast<uint32_t>(a)) + 0.5f) - Bits(0.5f);
  const uint32_t special = Select(Mask(a > kInfBits), 0x7e00u, 0x7c00u);
  uint32_t h = Select(Mask(a < (113 << 23)), sub, static_cast<uint32_t>(normal));
  h = Select(Mask(a >= kInfBits), special, h);
  return h | sign;
}

// Exact (every binary16 is a float). Inf/NaN map to Inf/NaN; callers check
// the exponent.
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int32_t a = h & 0x7fff;
  const uint32_t normal = (static_cast<uint32_t>(a) << 13) + ((127 - 15) << 23);
  const uint32_t sub = Bits(static_cast<float>(a) * 0x1p-24f);  // a · 2^-24, exact
  const uint32_t infnan = (static_cast<uint32_t>(a) << 13) + ((255 - 31) << 23);
  uint32_t o = Select(Mask(a < 0x400), sub, normal);
  o = Select(Mask(a >= 0x7c00), infnan, o);
  return FromBits(o | sign);
}

// ------------------------------------------------------- value sections --
// The value part of a payload, shared by the dense codecs and top-k: m values
// in one of four codings.

enum class ValueCoding : uint8_t { kF32 = 0, kF16 = 1, kInt8 = 2, kSign = 3 };

const char* ValueCodingName(ValueCoding c) {
  switch (c) {
    case ValueCoding::kF32: return "f32";
    case ValueCoding::kF16: return "fp16";
    case ValueCoding::kInt8: return "int8";
    case ValueCoding::kSign: return "sign";
  }
  return "?";
}

bool Blocked(ValueCoding c) { return c == ValueCoding::kInt8 || c == ValueCoding::kSign; }

size_t ValueBytes(ValueCoding c, size_t m) {
  switch (c) {
    case ValueCoding::kF32: return 4 * m;
    case ValueCoding::kF16: return 2 * m;
    case ValueCoding::kInt8: return 4 * CeilDiv(m, kBlock) + m;
    case ValueCoding::kSign: return 4 * CeilDiv(m, kBlock) + CeilDiv(m, 8);
  }
  return 0;
}

void EncodeF16(const float* v, size_t m, char* dst) {
  // Through small arrays: the conversion vectorises in 32-bit lanes, and
  // narrowing to 16 bits once afterwards is cheaper than GCC's narrowing of
  // every intermediate when it sees a uint16_t result (1.15x in cache).
  uint32_t wide[kBlock];
  uint16_t h[kBlock];
  for (size_t at = 0; at < m; at += kBlock) {
    const size_t len = std::min<size_t>(kBlock, m - at);
    const float* src = v + at;
    for (size_t i = 0; i < len; ++i) wide[i] = FloatToHalf(src[i]);
    for (size_t i = 0; i < len; ++i) h[i] = static_cast<uint16_t>(wide[i]);
    if constexpr (!kLittleEndianHost) {
      for (size_t i = 0; i < len; ++i) h[i] = ByteSwap(h[i]);
    }
    std::memcpy(dst + 2 * at, h, 2 * len);
  }
}

absl::Status DecodeF16(const char* src, size_t m, float* out, const char* what) {
  uint16_t h[kBlock];
  int ok = 1;
  for (size_t at = 0; at < m; at += kBlock) {
    const size_t len = std::min<size_t>(kBlock, m - at);
    std::memcpy(h, src + 2 * at, 2 * len);
    if constexpr (!kLittleEndianHost) {
      for (size_t i = 0; i < len; ++i) h[i] = ByteSwap(h[i]);
    }
    float* o = out + at;
    for (size_t i = 0; i < len; ++i) {
      ok &= (h[i] & 0x7c00) != 0x7c00;
      o[i] = HalfToFloat(h[i]);
    }
  }
  if (!ok) {
    size_t i = FirstNonFinite(out, m);
    return Refuse(Refusal::kNonFinite, what, " value ", i, " is ", out[i]);
  }
  return absl::OkStatus();
}

// One int8 block: returns its scale and writes q[0..len).
float QuantizeInt8(const float* v, size_t len, int8_t* q) {
  int32_t mx = 0;  // integer max of |v| bits: vectorises, and NaN wins
  size_t i0 = 0;
#if MYCEL_CODEC_SSE2
  {
    // maxps and a separate Inf/NaN flag: a third fewer instructions than
    // GCC's emulated integer max (SSE2 has no pmaxsd); int8 3% faster at 10M values.
    const __m128 abs_mask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    const __m128i finite_max = _mm_set1_epi32(0x7f7fffff);
    __m128 m0 = _mm_setzero_ps(), m1 = _mm_setzero_ps();
    __m128i bad = _mm_setzero_si128();
    for (; i0 + 8 <= len; i0 += 8) {
      const __m128 a = _mm_and_ps(_mm_loadu_ps(v + i0), abs_mask);
      const __m128 b = _mm_and_ps(_mm_loadu_ps(v + i0 + 4), abs_mask);
      m0 = _mm_max_ps(m0, a);
      m1 = _mm_max_ps(m1, b);
      bad = _mm_or_si128(bad, _mm_or_si128(_mm_cmpgt_epi32(_mm_castps_si128(a), finite_max),
                                           _mm_cmpgt_epi32(_mm_castps_si128(b), finite_max)));
    }
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, _mm_max_ps(m0, m1));
    for (float l : lanes) mx = std::max(mx, MagnitudeKey(l));
    if (_mm_movemask_epi8(bad) != 0) mx = kInfBits;
  }
#endif
  for (size_t i = i0; i < len; ++i) {
    const int32_t a = MagnitudeKey(v[i]);
    mx = a > mx ? a : mx;
  }
  if (mx >= kInfBits || mx < kInt8TinyBits) {
    std::memset(q, 0, len);
    // A NaN scale makes Decode refuse the payload: the input was not finite.
    return mx >= kInfBits ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
  }
  const float max_abs = FromBits(static_cast<uint32_t>(mx));
  const float inv = 127.0f / max_abs;
  // |v · inv| ≤ 127 · (1 + 2^-24)² < 127.5, so the rounded value fits without
  // clamping, and both paths round to nearest even (the default rounding mode).
  size_t i = 0;
#if MYCEL_CODEC_SSE2
  // cvtps2dq rounds, and the saturating packs narrow 16 values in three
  // instructions (they never saturate here); GCC narrows with shuffles.
  // int8 encode: 1.3x faster in cache (100k values).
  const __m128 inv4 = _mm_set1_ps(inv);
  for (; i + 16 <= len; i += 16) {
    const __m128i a = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(v + i), inv4));
    const __m128i b = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(v + i + 4), inv4));
    const __m128i c = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(v + i + 8), inv4));
    const __m128i d = _mm_cvtps_epi32(_mm_mul_ps(_mm_loadu_ps(v + i + 12), inv4));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i),
                     _mm_packs_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d)));
  }
#endif
  // Adding and subtracting 1.5 · 2^23 rounds to nearest even (the sum's ULP
  // is 1) in two vectorisable adds; SSE2 has no round instruction.
  constexpr float kRound = 12582912.0f;
  for (; i < len; ++i) {
    const float r = (v[i] * inv + kRound) - kRound;
    q[i] = static_cast<int8_t>(static_cast<int32_t>(r));
  }
  return max_abs / 127.0f;
}

void EncodeInt8(const float* v, size_t m, char* dst) {
  const size_t blocks = CeilDiv(m, kBlock);
  int8_t* q = reinterpret_cast<int8_t*>(dst + 4 * blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t at = b * kBlock, len = std::min<size_t>(kBlock, m - at);
    EncodeFloat32(dst + 4 * b, QuantizeInt8(v + at, len, q + at));
  }
}

absl::Status DecodeInt8(const char* src, size_t m, float* out, const char* what) {
  const size_t blocks = CeilDiv(m, kBlock);
  const int8_t* q = reinterpret_cast<const int8_t*>(src + 4 * blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const float s = DecodeFloat32(src + 4 * b);
    if (!(std::fabs(s) <= kInt8MaxScale)) {  // NaN fails too
      return Refuse(Refusal::kNonFinite, what, " scale of block ", b, " is ", s,
                    std::isfinite(s) ? " (±128 × it overflows)" : "");
    }
    const size_t at = b * kBlock, len = std::min<size_t>(kBlock, m - at);
    const int8_t* qb = q + at;
    float* o = out + at;
    for (size_t i = 0; i < len; ++i) o[i] = static_cast<float>(qb[i]) * s;
  }
  return absl::OkStatus();
}

// The sign bits of v[0..8·bytes) (value i → bit i%8 of byte i/8).
void PackSigns(const float* v, size_t bytes, uint8_t* dst) {
  size_t j = 0;
#if MYCEL_CODEC_SSE2
  // GCC does not turn the portable loop into movmskps; same bits either way.
  for (; j + 2 <= bytes; j += 2) {
    const int lo = _mm_movemask_ps(_mm_loadu_ps(v + 8 * j)) | (_mm_movemask_ps(_mm_loadu_ps(v + 8 * j + 4)) << 4);
    const int hi =
        _mm_movemask_ps(_mm_loadu_ps(v + 8 * j + 8)) | (_mm_movemask_ps(_mm_loadu_ps(v + 8 * j + 12)) << 4);
    dst[j] = static_cast<uint8_t>(lo);
    dst[j + 1] = static_cast<uint8_t>(hi);
  }
#endif
  for (; j < bytes; ++j) {
    uint32_t b = 0;
    for (int t = 0; t < 8; ++t) b |= (Bits(v[8 * j + t]) >> 31) << t;
    dst[j] = static_cast<uint8_t>(b);
  }
}

void EncodeSign(const float* v, size_t m, char* dst) {
  const size_t blocks = CeilDiv(m, kBlock);
  uint8_t* bits = reinterpret_cast<uint8_t*>(dst + 4 * blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t at = b * kBlock, len = std::min<size_t>(kBlock, m - at);
    const float* x = v + at;
    // Mean |v| with eight running sums (a fixed order, so the scale does not
    // depend on the compiler; GCC vectorises the eight lanes). NaN and Inf
    // carry into the scale, which Decode then refuses (as it does a sum
    // that overflows: a block averaging above FLT_MAX / 256).
    float acc[8] = {};
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
      for (int t = 0; t < 8; ++t) acc[t] += std::fabs(x[i + t]);
    }
    for (; i < len; ++i) acc[i % 8] += std::fabs(x[i]);
    const float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    EncodeFloat32(dst + 4 * b, sum / static_cast<float>(len));
    const size_t full = len / 8;
    PackSigns(x, full, bits + at / 8);
    if (len % 8 != 0) {  // the last, partial byte; its unused bits stay zero
      uint32_t byte = 0;
      for (size_t t = 0; t < len % 8; ++t) byte |= (Bits(x[8 * full + t]) >> 31) << t;
      bits[at / 8 + full] = static_cast<uint8_t>(byte);
    }
  }
}

// Per sign byte, the eight sign-bit masks it stands for (8 KiB): turns
// unpacking into an XOR that vectorises (SSE2 has no per-lane shift).
struct SignMasks {
  uint32_t of[256][8];
};
constexpr SignMasks MakeSignMasks() {
  SignMasks t{};
  for (uint32_t b = 0; b < 256; ++b) {
    for (uint32_t j = 0; j < 8; ++j) t.of[b][j] = ((b >> j) & 1u) << 31;
  }
  return t;
}
constexpr SignMasks kSignMasks = MakeSignMasks();

absl::Status DecodeSign(const char* src, size_t m, float* out, const char* what) {
  const size_t blocks = CeilDiv(m, kBlock);
  const uint8_t* bits = reinterpret_cast<const uint8_t*>(src + 4 * blocks);
  if (m % 8 != 0 && (bits[m / 8] >> (m % 8)) != 0) {
    return Refuse(Refusal::kBadShape, what, " padding bits of the last sign byte are set");
  }
  for (size_t b = 0; b < blocks; ++b) {
    const float s = DecodeFloat32(src + 4 * b);
    if (!std::isfinite(s)) return Refuse(Refusal::kNonFinite, what, " scale of block ", b, " is ", s);
    const uint32_t sb = Bits(s);
    const size_t at = b * kBlock, len = std::min<size_t>(kBlock, m - at);
    const uint8_t* bb = bits + at / 8;
    float* o = out + at;
    // Flip the scale's sign bit where the value's is set: ±scale exactly.
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
      const uint32_t* m8 = kSignMasks.of[bb[i / 8]];
      for (size_t t = 0; t < 8; ++t) o[i + t] = FromBits(sb ^ m8[t]);
    }
    for (; i < len; ++i) o[i] = FromBits(sb ^ (((bb[i / 8] >> (i % 8)) & 1u) << 31));
  }
  return absl::OkStatus();
}

void EncodeValues(ValueCoding c, const float* v, size_t m, char* dst) {
  switch (c) {
    case ValueCoding::kF32:
      EncodeFloats(dst, v, m);
      return;
    case ValueCoding::kF16: return EncodeF16(v, m, dst);
    case ValueCoding::kInt8: return EncodeInt8(v, m, dst);
    case ValueCoding::kSign: return EncodeSign(v, m, dst);
  }
}

// `src` holds ValueBytes(c, m) bytes (checked by the caller).
absl::Status DecodeValues(ValueCoding c, const char* src, size_t m, float* out, const char* what) {
  switch (c) {
    case ValueCoding::kF32:
      if (!CopyFinite(src, m, out)) {  // the offending index is searched for only on failure
        size_t i = FirstNonFinite(out, m);
        return Refuse(Refusal::kNonFinite, what, " value ", i, " is ", out[i]);
      }
      return absl::OkStatus();
    case ValueCoding::kF16: return DecodeF16(src, m, out, what);
    case ValueCoding::kInt8: return DecodeInt8(src, m, out, what);
    case ValueCoding::kSign: return DecodeSign(src, m, out, what);
  }
  return Refuse(Refusal::kBadShape, what, " unknown value coding");
}

// Little-endian stores into a buffer already sized for them.
class Writer {
 public:
  explicit Writer(char* p) : p_(p) {}
  template <typename T>
  void Int(T v) {
    EncodeFixed<T>(p_, v);
    p_ += sizeof(T);
  }
  void Bytes(const char* b, size_t n) {
    std::memcpy(p_, b, n);
    p_ += n;
  }
  char* Skip(size_t n) {
    char* at = p_;
    p_ += n;
    return at;
  }

 private:
  char* p_;
};

// ---------------------------------------------------------- whole-vector --
// dense_f32, fp16, int8, sign: a header, then the value section for all n.

struct DenseFormat {
  ValueCoding coding;
  const char* magic;  // 4 bytes
  const char* name;
};
constexpr DenseFormat kDenseF32{ValueCoding::kF32, kDenseMagic, "dense_f32"};
constexpr DenseFormat kFp16{ValueCoding::kF16, kFp16Magic, "fp16"};
constexpr DenseFormat kInt8{ValueCoding::kInt8, kInt8Magic, "int8"};
constexpr DenseFormat kSign{ValueCoding::kSign, kSignMagic, "sign"};

class DenseCodec final : public Codec {
 public:
  explicit DenseCodec(const DenseFormat& f) : f_(f) {}
  const char* name() const override { return f_.name; }

  void EncodeInto(const float* values, size_t n, std::string* out) const override {
    const size_t header = HeaderBytes();
    out->resize(header + ValueBytes(f_.coding, n));
    Writer w(out->data());
    w.Bytes(f_.magic, 4);
    w.Int<uint64_t>(n);
    if (Blocked(f_.coding)) w.Int<uint32_t>(kBlock);
    EncodeValues(f_.coding, values, n, out->data() + header);
  }

  absl::Status Decode(std::string_view bytes, size_t n, float* out) const override {
    if (bytes.size() < 12 || std::memcmp(bytes.data(), f_.magic, 4) != 0) {
      return Refuse(Refusal::kBadShape, "not a ", f_.name, " payload (", bytes.size(), " bytes)");
    }
    wire::Reader r(bytes.substr(4));
    uint64_t count = 0;
    r.Int(&count);
    if (count != n) {
      return Refuse(Refusal::kBadShape, f_.name, " payload holds ", count, " values, expected ", n);
    }
    if (Blocked(f_.coding)) {
      uint32_t block = 0;
      if (!r.Int(&block)) return Refuse(Refusal::kBadShape, f_.name, " payload truncated in its header");
      if (block != kBlock) return Refuse(Refusal::kBadShape, f_.name, " block of ", block, ", expected ", kBlock);
    }
    const size_t want = ValueBytes(f_.coding, n);
    if (r.remaining() != want) {
      return Refuse(Refusal::kBadShape, f_.name, " payload of ", n, " values has ", r.remaining(),
                    " data bytes, expected ", want);
    }
    return DecodeValues(f_.coding, bytes.data() + HeaderBytes(), n, out, f_.name);
  }

 private:
  size_t HeaderBytes() const { return 12 + (Blocked(f_.coding) ? 4 : 0); }
  const DenseFormat& f_;
};

// ----------------------------------------------------------------- top-k --

enum class IndexCoding : uint8_t { kDelta = 0, kBitmap = 1, kAll = 2 };
constexpr size_t kTopKHeader = 4 + 8 + 8 + 1 + 1 + 4;

// LEB128 length: 7 bits a byte.
size_t VarintBytes(uint64_t x) {
  const int bits = 64 - __builtin_clzll(x | 1);
  return static_cast<size_t>((bits + 6) / 7);
}

// The k largest |v[i]|, ranked by their bit patterns (the same order as the
// magnitudes, NaN above Inf, so a NaN is always sent and then refused), ties
// to the lower index. nth_element by |v| took 52 ms on 10M values, 8.5x a
// memcpy of them. For F ≤ 1/16 this takes about 1.5x (F = 0.01), little more
// than one read of v:
//   1. a threshold `lo` that a little more than k keys reach, estimated from
//      a sample;
//   2. one scan collects the values with key ≥ lo (index and bits);
//   3. the k largest of those, ranked exactly.
// Larger F (SelectByHistogram) takes three passes and more writes: 8x a
// memcpy at F = 0.1, 13x at F = 0.5 (encode, 10M values).

constexpr int kHistShift = 20;  // buckets by the top 11 bits of |v|: exponent and 3 mantissa bits
constexpr size_t kHistBuckets = size_t{1} << (31 - kHistShift);

// Values with key ≥ lo, in index order.
struct Candidates {
  // Uninitialised: only what the scan writes is read (zeroing them would be
  // a pass over up to 4k + 1024 entries).
  std::unique_ptr<size_t[]> index;
  std::unique_ptr<uint32_t[]> bits;  // of the value (sign included)
  size_t size = 0;
};

// Collects every i with key(v[i]) ≥ lo into *c; false (and *c incomplete)
// once more than `cap` would be needed. Groups of 16 are tested with one
// vectorised compare, so the many values below `lo` cost a fraction of a
// cycle each; a group holding hits walks its hit mask.
bool CollectAtLeast(const float* v, size_t n, int32_t lo, size_t cap, Candidates* c) {
  c->index.reset(new size_t[cap + 16]);  // room for a whole group past the check
  c->bits.reset(new uint32_t[cap + 16]);
  size_t* index = c->index.get();
  uint32_t* bits = c->bits.get();
  size_t m = 0;
  auto take = [&](size_t i, uint32_t hits) {
    while (hits != 0) {
      const size_t at = i + static_cast<size_t>(__builtin_ctz(hits));
      hits &= hits - 1;
      index[m] = at;
      bits[m++] = Bits(v[at]);
    }
  };
  size_t i = 0;
#if MYCEL_CODEC_SSE2
  // The hit mask straight from movmskps; GCC builds it a compare at a time
  // (~60 cycles a group, and a sixth of the groups hold a hit at F = 0.01).
  const __m128i abs_mask = _mm_set1_epi32(0x7fffffff);
  const __m128i below = _mm_set1_epi32(lo - 1);  // key > lo − 1 ⇔ key ≥ lo (lo ≥ 0)
  for (; i + 16 <= n; i += 16) {
    __m128i hit[4];
    for (int t = 0; t < 4; ++t) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i + 4 * t));
      hit[t] = _mm_cmpgt_epi32(_mm_and_si128(x, abs_mask), below);
    }
    const __m128i any = _mm_or_si128(_mm_or_si128(hit[0], hit[1]), _mm_or_si128(hit[2], hit[3]));
    if (_mm_movemask_epi8(any) == 0) continue;
    if (m > cap) return false;
    uint32_t hits = 0;
    for (int t = 0; t < 4; ++t) hits |= static_cast<uint32_t>(_mm_movemask_ps(_mm_castsi128_ps(hit[t]))) << (4 * t);
    take(i, hits);
  }
#endif
  for (; i + 16 <= n; i += 16) {
    int any = 0;
    for (size_t t = 0; t < 16; ++t) any |= MagnitudeKey(v[i + t]) >= lo;
    if (!any) continue;
    if (m > cap) return false;
    uint32_t hits = 0;
    for (uint32_t t = 0; t < 16; ++t) hits |= static_cast<uint32_t>(MagnitudeKey(v[i + t]) >= lo) << t;
    take(i, hits);
  }
  if (m > cap) return false;
  uint32_t hits = 0;
  for (uint32_t t = 0; i + t < n; ++t) hits |= static_cast<uint32_t>(MagnitudeKey(v[i + t]) >= lo) << t;
  take(i, hits);
  c->size = m;
  return m <= cap;
}

inline int32_t KeyOfBits(uint32_t bits) { return static_cast<int32_t>(bits & 0x7fffffffu); }

// The key T of the need-th largest candidate (1 ≤ need ≤ c.size), by radix
// selection: a histogram of the top 11 bits of the keys finds T's bucket, a
// histogram of the next 11 bits of the keys in it finds T's sub-bucket, and
// nth_element ranks the few keys left (nth_element over all candidates
// took 1 ms at 120k).
int32_t KthLargestKey(const Candidates& c, size_t need) {
  const uint32_t* bits = c.bits.get();
  std::vector<uint32_t> hist(kHistBuckets, 0);
  // The bucket of the need-th largest; *above: how many fall in higher ones.
  auto find = [&](size_t* above) {
    size_t bucket = kHistBuckets;
    for (;;) {
      --bucket;
      if (*above + hist[bucket] >= need) return bucket;
      *above += hist[bucket];
    }
  };
  for (size_t j = 0; j < c.size; ++j) ++hist[KeyOfBits(bits[j]) >> kHistShift];
  size_t above = 0;
  const size_t top = find(&above);
  std::vector<int32_t> in_top;
  in_top.reserve(hist[top]);
  for (size_t j = 0; j < c.size; ++j) {
    const int32_t key = KeyOfBits(bits[j]);
    if (static_cast<size_t>(key >> kHistShift) == top) in_top.push_back(key);
  }
  constexpr int kSubShift = kHistShift - 11;
  std::fill(hist.begin(), hist.end(), 0u);
  for (int32_t key : in_top) ++hist[(key >> kSubShift) & (kHistBuckets - 1)];
  const size_t sub = find(&above);
  std::vector<int32_t> in_sub;
  in_sub.reserve(hist[sub]);
  for (int32_t key : in_top) {
    if (static_cast<size_t>((key >> kSubShift) & (kHistBuckets - 1)) == sub) in_sub.push_back(key);
  }
  const size_t rank = need - above - 1;
  std::nth_element(in_sub.begin(), in_sub.begin() + rank, in_sub.end(), std::greater<int32_t>());
  return in_sub[rank];
}

// The k largest of the candidates (k ≤ c.size), ties to the lower index, in
// index order: their indices into kept[0..k), their values into picked[0..k).
void KeepLargest(const Candidates& c, size_t k, size_t* kept, float* picked) {
  const uint32_t* bits = c.bits.get();
  const int32_t t_key = KthLargestKey(c, k);
  size_t greater = 0;
  for (size_t j = 0; j < c.size; ++j) greater += KeyOfBits(bits[j]) > t_key;
  size_t equal_left = k - greater;  // the first ones equal to T
  size_t out = 0;
  for (size_t j = 0; j < c.size; ++j) {
    const int32_t key = KeyOfBits(bits[j]);
    const bool equal = key == t_key;
    if (key > t_key || (equal && equal_left > 0)) {
      equal_left -= equal;
      kept[out] = c.index[j];
      picked[out++] = FromBits(bits[j]);
    }
  }
}

// The exact threshold: the lowest key of the bucket holding the k-th largest
// (a histogram of all n keys), and how many keys reach it.
std::pair<int32_t, size_t> HistogramThreshold(const float* v, size_t n, size_t k) {
  // Four interleaved histograms: consecutive values often share a bucket,
  // and one would make each increment wait for the previous one's store.
  // uint32 counts, flushed to 64 bits every 2^30 values.
  std::vector<uint64_t> hist(kHistBuckets, 0);
  std::vector<uint32_t> h4(4 * kHistBuckets);
  uint32_t* h0 = h4.data();
  uint32_t* h1 = h0 + kHistBuckets;
  uint32_t* h2 = h1 + kHistBuckets;
  uint32_t* h3 = h2 + kHistBuckets;
  constexpr size_t kFlush = size_t{1} << 30;
  for (size_t start = 0; start < n; start += kFlush) {
    const size_t end = std::min(n, start + kFlush);
    std::fill(h4.begin(), h4.end(), 0u);
    size_t i = start;
    for (; i + 4 <= end; i += 4) {
      ++h0[MagnitudeKey(v[i]) >> kHistShift];
      ++h1[MagnitudeKey(v[i + 1]) >> kHistShift];
      ++h2[MagnitudeKey(v[i + 2]) >> kHistShift];
      ++h3[MagnitudeKey(v[i + 3]) >> kHistShift];
    }
    for (; i < end; ++i) ++h0[MagnitudeKey(v[i]) >> kHistShift];
    for (size_t b = 0; b < kHistBuckets; ++b) hist[b] += uint64_t{h0[b]} + h1[b] + h2[b] + h3[b];
  }
  size_t bucket = kHistBuckets;
  uint64_t reach = 0;
  do {
    --bucket;
    reach += hist[bucket];
  } while (reach < k);
  return {static_cast<int32_t>(bucket << kHistShift), static_cast<size_t>(reach)};
}

// Large F (or a sample that misled): the k largest in three passes and no
// candidate list (which would hold most of v): the histogram's bucket for
// the k-th largest, the exact key T within it, then every value above T and
// the first ones equal to it. The last pass is branch-free: at F = 0.5
// whether a value is kept is a coin toss, and a branch per value made the
// selection 1.7x slower. Writes kept[0..k] and picked[0..k] (one past k:
// see below).
void SelectByHistogram(const float* v, size_t n, size_t k, size_t* kept, float* picked) {
  const auto [lo, reach] = HistogramThreshold(v, n, k);
  std::vector<int32_t> bucket;
  for (size_t i = 0; i < n; ++i) {
    const int32_t key = MagnitudeKey(v[i]);
    // In [lo, lo + bucket width): rare, so the branch predicts well.
    if (static_cast<uint32_t>(key - lo) < (uint32_t{1} << kHistShift)) bucket.push_back(key);
  }
  const size_t need = k - (reach - bucket.size());  // from the bucket: 1 ≤ need ≤ its size
  std::nth_element(bucket.begin(), bucket.begin() + (need - 1), bucket.end(), std::greater<int32_t>());
  const int32_t t_key = bucket[need - 1];
  size_t greater = 0, equal = 0;
  for (int32_t key : bucket) {
    greater += key > t_key;
    equal += key == t_key;
  }
  size_t equal_left = need - greater;  // the first ones equal to T
  size_t out = 0;
  if (equal_left == equal) {  // every value equal to T is kept (no tie at the cut): key ≥ T
    for (size_t i = 0; i < n; ++i) {
      kept[out] = i;  // written always, kept only if counted: slot k takes the rest
      picked[out] = v[i];
      out += MagnitudeKey(v[i]) >= t_key;
    }
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t key = MagnitudeKey(v[i]);
    const size_t tie = (key == t_key) & (equal_left != 0);
    equal_left -= tie;
    kept[out] = i;
    picked[out] = v[i];
    out += static_cast<size_t>(key > t_key) | tie;
  }
}

// Indices (ascending) and values of the k largest. For F ≤ 1/16 a sample
// of 1/64 of the keys (at most 32768) estimates a threshold that k/n plus
// four standard deviations of the estimate reach; if the sample misled
// (fewer than k reach it, or more than 4k), the histogram gives it exactly
// at the cost of two more passes.
void SelectTopK(const float* v, size_t n, size_t k, std::vector<size_t>* kept, std::vector<float>* picked) {
  kept->resize(k + 1);  // SelectByHistogram's spare slot
  picked->resize(k + 1);
  if (k >= n) {
    kept->resize(n);
    picked->resize(n);
    for (size_t i = 0; i < n; ++i) (*kept)[i] = i;
    std::copy(v, v + n, picked->begin());
    return;
  }
  // Below 2^16 values the histogram's passes are cheap; above F = 1/16 the
  // sample's threshold would collect a large part of v.
  if (k > 0 && n >= (size_t{1} << 16) && k <= n / 16) {
    const size_t samples = std::min<size_t>(32768, n / 64);
    const size_t stride = n / samples;
    std::vector<int32_t> keys(samples);
    // One value from each stride, at an offset that varies (a multiplicative
    // hash) so a period in the data cannot line up with the stride.
    for (size_t j = 0; j < samples; ++j) keys[j] = MagnitudeKey(v[j * stride + (j * 2654435761u) % stride]);
    const double expected = static_cast<double>(k) * samples / n;
    const size_t rank = static_cast<size_t>(expected + 4 * std::sqrt(expected) + 4);
    if (rank < samples) {
      std::nth_element(keys.begin(), keys.begin() + rank, keys.end(), std::greater<int32_t>());
      Candidates c;
      if (CollectAtLeast(v, n, keys[rank], 4 * k + 1024, &c) && c.size >= k) {
        KeepLargest(c, k, kept->data(), picked->data());
        kept->resize(k);
        picked->resize(k);
        return;
      }
    }
  }
  SelectByHistogram(v, n, k, kept->data(), picked->data());
  kept->resize(k);
  picked->resize(k);
}

// TopKCodec::Decode of IndexCoding::kDelta: [p, end) is exactly k LEB128
// varints, the first index and then the gaps between ascending indices;
// picked[j] goes to the j-th index, zeros everywhere else. `what` names the
// codec in refusals.
//
// The hot loop of a sparse decode. Kept out of line: inlined into Decode (or
// as a member, with `this` held in a register), gcc 12 keeps more of the loop's
// state in registers a memset call clobbers and saves and reloads them around
// every gap's zero fill, which made delta decodes measurably slower.
__attribute__((noinline)) absl::Status ScatterDeltas(const uint8_t* p, const uint8_t* end, const float* picked,
                                                     uint64_t k, size_t n, float* out, const char* what) {
  // Delta indices are sparse: one pass over out, the zeros before each kept
  // index and then its value (indices ascend), rather than zeroing out and
  // coming back to scatter.
  size_t filled = 0;
  auto put = [&](size_t i, float value) {
    std::fill(out + filled, out + i, 0.0f);
    out[i] = value;
    filled = i + 1;
  };
  size_t prev = 0;
  for (size_t j = 0; j < k; ++j) {
    uint64_t x = 0;
    for (int shift = 0;; shift += 7) {
      if (p == end) return Refuse(Refusal::kBadShape, what, " payload ends inside index ", j);
      const uint64_t b = *p++;
      if (shift == 63 && b > 1) return Refuse(Refusal::kBadIndex, what, " index ", j, " overflows 64 bits");
      x |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    if (j > 0 && x == 0) return Refuse(Refusal::kBadIndex, what, " index ", prev, " repeated");
    if (x >= n - (j == 0 ? 0 : prev)) {  // prev + x ≥ n, without overflow (prev < n)
      return Refuse(Refusal::kBadIndex, what, " index ", j, " is out of range (", n, " values)");
    }
    prev = (j == 0 ? 0 : prev) + static_cast<size_t>(x);
    put(prev, picked[j]);
  }
  if (p != end) return Refuse(Refusal::kBadShape, what, " payload has ", end - p, " trailing bytes");
  std::fill(out + filled, out + n, 0.0f);
  return absl::OkStatus();
}

class TopKCodec final : public Codec {
 public:
  // F = ppb / 10^9.
  TopKCodec(std::string name, uint32_t ppb, ValueCoding values)
      : name_(std::move(name)), ppb_(ppb), values_(values) {}

  const char* name() const override { return name_.c_str(); }

  // max(1, ⌈F·n⌉), at most n. Integer arithmetic, so every node agrees.
  size_t K(size_t n) const {
    if (n == 0) return 0;
    const unsigned __int128 num = static_cast<unsigned __int128>(ppb_) * n + (kBillion - 1);
    const size_t k = static_cast<size_t>(num / kBillion);
    return std::min(n, std::max<size_t>(1, k));
  }

  void EncodeInto(const float* values, size_t n, std::string* out) const override {
    const size_t k = K(n);
    if (k == n && n > 0 && values_ != ValueCoding::kSign) {
      // Everything kept: all values, no indices (smaller than any index coding).
      out->resize(kTopKHeader + ValueBytes(values_, n));
      WriteHeader(n, k, IndexCoding::kAll, out->data());
      EncodeValues(values_, values, n, out->data() + kTopKHeader);
      return;
    }
    std::vector<size_t> kept;
    std::vector<float> picked;
    SelectTopK(values, n, k, &kept, &picked);
    const size_t bitmap_bytes = CeilDiv(n, 8);
    // Each delta takes at least a byte: above n/8 indices a bitmap is smaller.
    size_t delta_bytes = k;
    if (k <= bitmap_bytes) {
      delta_bytes = 0;
      for (size_t j = 0; j < k; ++j) delta_bytes += VarintBytes(j == 0 ? kept[0] : kept[j] - kept[j - 1]);
    }
    IndexCoding coding = delta_bytes <= bitmap_bytes ? IndexCoding::kDelta : IndexCoding::kBitmap;
    size_t body = ValueBytes(values_, k) + std::min(delta_bytes, bitmap_bytes);
    if (values_ != ValueCoding::kSign && ValueBytes(values_, n) < body) {
      coding = IndexCoding::kAll;
      body = ValueBytes(values_, n);
    }
    out->resize(kTopKHeader + body);
    Writer w(WriteHeader(n, k, coding, out->data()));
    if (coding == IndexCoding::kAll) {
      std::vector<float> sparse(n, 0.0f);
      for (size_t j = 0; j < k; ++j) sparse[kept[j]] = picked[j];
      EncodeValues(values_, sparse.data(), n, w.Skip(ValueBytes(values_, n)));
      return;
    }
    EncodeValues(values_, picked.data(), k, w.Skip(ValueBytes(values_, k)));
    if (coding == IndexCoding::kBitmap) {
      uint8_t* bitmap = reinterpret_cast<uint8_t*>(w.Skip(bitmap_bytes));
      std::memset(bitmap, 0, bitmap_bytes);
      // A byte at a time in a register (indices ascend): or-ing into memory
      // would chain every update to the previous one's store.
      size_t byte = 0;
      uint32_t bits = 0;
      for (size_t i : kept) {
        if (i / 8 != byte) {
          bitmap[byte] = static_cast<uint8_t>(bits);
          byte = i / 8;
          bits = 0;
        }
        bits |= 1u << (i % 8);
      }
      if (k > 0) bitmap[byte] = static_cast<uint8_t>(bits);
      return;
    }
    uint8_t* p = reinterpret_cast<uint8_t*>(w.Skip(delta_bytes));
    for (size_t j = 0; j < k; ++j) {
      uint64_t x = j == 0 ? kept[0] : kept[j] - kept[j - 1];
      while (x >= 0x80) {
        *p++ = static_cast<uint8_t>(x | 0x80);
        x >>= 7;
      }
      *p++ = static_cast<uint8_t>(x);
    }
  }

  absl::Status Decode(std::string_view bytes, size_t n, float* out) const override {
    Header h;
    absl::Status st = ParseHeader(bytes, n, &h);
    if (!st.ok()) return st;
    if (h.coding == IndexCoding::kAll) return DecodeAll(h, n, out);
    const char* what = name_.c_str();
    const size_t body_bytes = h.body.size();
    const size_t value_bytes = ValueBytes(values_, h.k);
    // Each delta index takes at least one byte.
    const size_t min_index_bytes = h.coding == IndexCoding::kBitmap ? CeilDiv(n, 8) : h.k;
    if (body_bytes < value_bytes || body_bytes - value_bytes < min_index_bytes ||
        (h.coding == IndexCoding::kBitmap && body_bytes - value_bytes != min_index_bytes)) {
      return Refuse(Refusal::kBadShape, what, " payload of ", h.k, " kept values has ", body_bytes,
                    " data bytes, expected ", h.coding == IndexCoding::kBitmap ? "" : "at least ",
                    value_bytes + min_index_bytes);
    }
    // k ≤ n and the bytes hold k values: now k floats may be allocated.
    std::vector<float> picked(h.k);
    st = DecodeValues(values_, h.body.data(), h.k, picked.data(), what);
    if (!st.ok()) return st;
    const uint8_t* p = reinterpret_cast<const uint8_t*>(h.body.data() + value_bytes);
    const uint8_t* end = reinterpret_cast<const uint8_t*>(h.body.data() + body_bytes);
    if (h.coding == IndexCoding::kBitmap) return ScatterBitmap(p, end, picked.data(), h.k, n, out);
    return ScatterDeltas(p, end, picked.data(), h.k, n, out, what);
  }

 private:
  static constexpr uint64_t kBillion = 1000000000;

  // Writes the kTopKHeader bytes; returns where the body starts.
  char* WriteHeader(size_t n, size_t k, IndexCoding coding, char* dst) const {
    Writer w(dst);
    w.Bytes(kTopKMagic, 4);
    w.Int<uint64_t>(n);
    w.Int<uint64_t>(k);
    w.Int<uint8_t>(static_cast<uint8_t>(values_));
    w.Int<uint8_t>(static_cast<uint8_t>(coding));
    w.Int<uint32_t>(Blocked(values_) ? kBlock : 0);
    return dst + kTopKHeader;
  }

  // A payload's header once ParseHeader has checked it against this codec.
  struct Header {
    uint64_t k = 0;  // kept values, K(n)
    IndexCoding coding = IndexCoding::kDelta;
    std::string_view body;  // the bytes after the kTopKHeader ones
  };

  // Reads the kTopKHeader bytes WriteHeader writes and refuses any field that
  // is not what this codec writes for n values.
  absl::Status ParseHeader(std::string_view bytes, size_t n, Header* h) const {
    const char* what = name_.c_str();
    if (bytes.size() < kTopKHeader || std::memcmp(bytes.data(), kTopKMagic, 4) != 0) {
      return Refuse(Refusal::kBadShape, "not a ", what, " payload (", bytes.size(), " bytes)");
    }
    wire::Reader r(bytes.substr(4));
    uint64_t count = 0, k = 0;
    uint8_t value_coding = 0, index_coding = 0;
    uint32_t block = 0;
    r.Int(&count);
    r.Int(&k);
    r.Int(&value_coding);
    r.Int(&index_coding);
    r.Int(&block);
    if (count != n) return Refuse(Refusal::kBadShape, what, " payload holds ", count, " values, expected ", n);
    if (k > n) return Refuse(Refusal::kBadShape, what, " payload keeps k = ", k, " of n = ", n, " values");
    if (k != K(n)) return Refuse(Refusal::kBadShape, what, " payload keeps ", k, " of ", n, " values, expected ", K(n));
    if (value_coding != static_cast<uint8_t>(values_)) {
      return Refuse(Refusal::kBadShape, what, " payload has value coding ", value_coding, ", expected ",
                    static_cast<int>(values_), " (", ValueCodingName(values_), ")");
    }
    if (block != (Blocked(values_) ? kBlock : 0)) {
      return Refuse(Refusal::kBadShape, what, " block of ", block);
    }
    if (index_coding > static_cast<uint8_t>(IndexCoding::kAll) ||
        (index_coding == static_cast<uint8_t>(IndexCoding::kAll) && values_ == ValueCoding::kSign)) {
      return Refuse(Refusal::kBadShape, what, " payload has index coding ", index_coding);
    }
    h->k = k;
    h->coding = static_cast<IndexCoding>(index_coding);
    h->body = bytes.substr(kTopKHeader);
    return absl::OkStatus();
  }

  // IndexCoding::kAll: all n values, of which still no more than k may be
  // non-zero.
  absl::Status DecodeAll(const Header& h, size_t n, float* out) const {
    const char* what = name_.c_str();
    if (h.body.size() != ValueBytes(values_, n)) {
      return Refuse(Refusal::kBadShape, what, " payload of all ", n, " values has ", h.body.size(),
                    " data bytes, expected ", ValueBytes(values_, n));
    }
    absl::Status st = DecodeValues(values_, h.body.data(), n, out, what);
    if (!st.ok()) return st;
    size_t nonzero = 0;
    for (size_t i = 0; i < n; ++i) nonzero += out[i] != 0.0f;
    if (nonzero > h.k) {
      return Refuse(Refusal::kBadShape, what, " payload sets ", nonzero, " values, more than k = ", h.k);
    }
    return absl::OkStatus();
  }

  // IndexCoding::kBitmap: [p, end) is an n-bit bitmap that must mark exactly
  // k indices; picked[j] goes to the j-th marked one, zeros everywhere else.
  absl::Status ScatterBitmap(const uint8_t* p, const uint8_t* end, const float* picked, uint64_t k, size_t n,
                             float* out) const {
    const char* what = name_.c_str();
    // Bitmaps are chosen for dense indices: zero everything, then scatter.
    if (n > 0) std::memset(out, 0, n * sizeof(float));
    size_t j = 0;
    for (size_t byte = 0; p + byte < end; ++byte) {
      uint32_t bits = p[byte];
      while (bits != 0) {
        const size_t i = 8 * byte + static_cast<size_t>(__builtin_ctz(bits));
        bits &= bits - 1;
        if (i >= n) return Refuse(Refusal::kBadIndex, what, " bitmap marks index ", i, " of ", n);
        if (j == k) return Refuse(Refusal::kBadShape, what, " bitmap marks more than k = ", k, " indices");
        out[i] = picked[j++];
      }
    }
    if (j != k) return Refuse(Refusal::kBadShape, what, " bitmap marks ", j, " indices, expected ", k);
    return absl::OkStatus();
  }



  std::string name_;
  uint32_t ppb_;  // F in parts per billion, 1..10^9
  ValueCoding values_;
};

// ----------------------------------------------------------------- names --

constexpr char kKnown[] =
    "known: dense_f32, fp16, int8, sign, topk:F, topk:F+fp16, topk:F+int8, topk:F+sign; "
    "F a decimal in (0, 1], e.g. topk:0.01";

// F as parts per billion and its canonical spelling: plain decimal digits
// with at most one point, no sign or exponent, at most 9 decimal places once
// trailing zeros are dropped, in (0, 1].
absl::Status ParseFraction(const std::string& s, uint32_t* ppb, std::string* canonical) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec topk:", s, ": ", why, " (topk:F keeps a fraction in (0, 1] of the values, e.g. topk:0.01)"));
  };
  const size_t point = s.find('.');
  std::string int_part = s.substr(0, point);
  std::string frac = point == std::string::npos ? "" : s.substr(point + 1);
  auto digits = [](const std::string& d) {
    return std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if ((int_part.empty() && frac.empty()) || !digits(int_part) || !digits(frac)) return bad("not a number");
  int_part.erase(0, std::min(int_part.find_first_not_of('0'), int_part.size()));
  frac.erase(std::min(frac.find_last_not_of('0') + 1, frac.size()));
  if (!int_part.empty() && (int_part != "1" || !frac.empty())) return bad("F is more than 1");
  if (frac.size() > 9) return bad("more than 9 decimal places");
  uint32_t value = int_part == "1" ? 1000000000u : 0u;
  uint32_t scale = 100000000;
  for (char c : frac) {
    value += static_cast<uint32_t>(c - '0') * scale;
    scale /= 10;
  }
  if (value == 0) return bad("F must be more than 0");
  *ppb = value;
  *canonical = value == 1000000000u ? "1" : "0." + frac;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Codec>> MakeCodec(const std::string& name) {
  for (const DenseFormat* f : {&kDenseF32, &kFp16, &kInt8, &kSign}) {
    if (name == f->name) return std::unique_ptr<Codec>(new DenseCodec(*f));
  }
  if (name == "topk" || name.rfind("topk:", 0) == 0) {
    if (name == "topk") {
      return absl::InvalidArgumentError("codec topk needs a fraction: topk:F, F in (0, 1], e.g. topk:0.01");
    }
    const size_t plus = name.find('+');
    const std::string fraction = name.substr(5, plus == std::string::npos ? std::string::npos : plus - 5);
    const std::string suffix = plus == std::string::npos ? "" : name.substr(plus + 1);
    ValueCoding values = ValueCoding::kF32;
    if (suffix == "fp16") {
      values = ValueCoding::kF16;
    } else if (suffix == "int8") {
      values = ValueCoding::kInt8;
    } else if (suffix == "sign") {
      values = ValueCoding::kSign;
    } else if (plus != std::string::npos) {
      return absl::NotFoundError(
          absl::StrCat("unknown codec \"", name, "\": no value coding \"", suffix, "\" (", kKnown, ")"));
    }
    uint32_t ppb = 0;
    std::string canonical;
    absl::Status st = ParseFraction(fraction, &ppb, &canonical);
    if (!st.ok()) return st;
    std::string full = "topk:" + canonical;
    if (plus != std::string::npos) full += "+" + suffix;
    return std::unique_ptr<Codec>(new TopKCodec(std::move(full), ppb, values));
  }
  return absl::NotFoundError(absl::StrCat("unknown codec \"", name, "\" (", kKnown, ")"));
}

}  // namespace mycel::federation
