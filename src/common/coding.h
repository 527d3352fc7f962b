// Byte encodings shared by every on-disk and wire format: fixed-width
// little-endian integers and IEEE binary32 floats (leveldb's coding.h idea),
// standard base64, and the BLAKE2b digest of the checksummed files and model
// fingerprints.
//
// One home so that each format spells its bytes the same way: a file or a
// message written by one module and read by another must agree byte for byte.
// The integer and float helpers are inline (the federation codec moves
// millions of floats through them) and are a plain memcpy on a little-endian
// host; base64 and the digest wrap libsodium inside coding.cc, so no caller
// needs <sodium.h>. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"

namespace mycel {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "the encoded floats are IEEE-754 binary32");

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
inline constexpr bool kLittleEndianHost = false;
#else
inline constexpr bool kLittleEndianHost = true;
#endif

// Reverses the bytes of any trivially copyable value.
template <typename T>
T ByteSwap(T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  std::memcpy(&v, b, sizeof(T));
  return v;
}

// ------------------------------------------------------------ integers --
// Any integer type, little-endian, sizeof(T) bytes. `dst` / `src` need not be
// aligned.

template <typename T>
void EncodeFixed(char* dst, T v) {
  static_assert(std::is_integral_v<T>);
  if constexpr (!kLittleEndianHost) v = ByteSwap(v);
  std::memcpy(dst, &v, sizeof(T));
}

template <typename T>
T DecodeFixed(const char* src) {
  static_assert(std::is_integral_v<T>);
  T v;
  std::memcpy(&v, src, sizeof(T));
  if constexpr (!kLittleEndianHost) v = ByteSwap(v);
  return v;
}

template <typename T>
void PutFixed(std::string* dst, T v) {
  char b[sizeof(T)];
  EncodeFixed<T>(b, v);
  dst->append(b, sizeof(T));
}

inline void EncodeFixed32(char* dst, uint32_t v) { EncodeFixed<uint32_t>(dst, v); }
inline void EncodeFixed64(char* dst, uint64_t v) { EncodeFixed<uint64_t>(dst, v); }
inline uint32_t DecodeFixed32(const char* src) { return DecodeFixed<uint32_t>(src); }
inline uint64_t DecodeFixed64(const char* src) { return DecodeFixed<uint64_t>(src); }
inline void PutFixed32(std::string* dst, uint32_t v) { PutFixed<uint32_t>(dst, v); }
inline void PutFixed64(std::string* dst, uint64_t v) { PutFixed<uint64_t>(dst, v); }

// Reads a u64 from the front of `*in` and drops those 8 bytes; false (and
// `*in` untouched) if fewer than 8 remain.
inline bool GetFixed64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = DecodeFixed64(in->data());
  in->remove_prefix(8);
  return true;
}

// ------------------------------------------------------------- floats --
// IEEE binary32, little-endian: the bit pattern as a u32, so NaN payloads
// and signed zeros survive a round trip.

inline void EncodeFloat32(char* dst, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  EncodeFixed32(dst, u);
}

inline float DecodeFloat32(const char* src) {
  const uint32_t u = DecodeFixed32(src);
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

inline void PutFloat32(std::string* dst, float v) {
  char b[4];
  EncodeFloat32(b, v);
  dst->append(b, 4);
}

// Writes n floats to `dst` (4n bytes): one memcpy on a little-endian host.
inline void EncodeFloats(char* dst, const float* v, size_t n) {
  if constexpr (kLittleEndianHost) {
    if (n > 0) std::memcpy(dst, v, 4 * n);
  } else {
    for (size_t i = 0; i < n; ++i) EncodeFloat32(dst + 4 * i, v[i]);
  }
}

// Appends n floats (4n bytes).
inline void PutFloats(std::string* dst, const float* v, size_t n) {
  const size_t at = dst->size();
  dst->resize(at + 4 * n);
  EncodeFloats(dst->data() + at, v, n);
}

// Reads n floats from `src` (4n bytes) into `out`.
inline void DecodeFloats(const char* src, size_t n, float* out) {
  if constexpr (kLittleEndianHost) {
    if (n > 0) std::memcpy(out, src, 4 * n);
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = DecodeFloat32(src + 4 * i);
  }
}

// ------------------------------------------------------------- base64 --
// Standard base64 (RFC 4648 alphabet, '=' padding), as `mycel id` prints keys
// and the config files hold them.

std::string Base64Encode(std::string_view raw);
// Fails (InvalidArgument) on anything but the one canonical spelling of some
// bytes: whitespace, trailing junk, missing or extra padding, non-zero unused
// bits.
absl::StatusOr<std::string> Base64Decode(std::string_view b64);

// ------------------------------------------------------------- digest --
// BLAKE2b of `data` with an output of `bytes` bytes (16 to 64), unkeyed: the
// raw digest. The checksummed files use 32, model fingerprints 16; a
// different length is a different hash, not a prefix of a longer one.
std::string Blake2b(std::string_view data, size_t bytes);

}  // namespace mycel
