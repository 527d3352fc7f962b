// Internal to federation/: little-endian byte helpers shared by the codec and
// the snapshot format. Not part of the module's API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace mycel::federation::wire {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "the wire format is IEEE-754 binary32");

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
inline constexpr bool kLittleEndianHost = false;
#else
inline constexpr bool kLittleEndianHost = true;
#endif

template <typename T>
T ByteSwap(T v) {
  static_assert(std::is_trivially_copyable_v<T>);
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  for (size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
  std::memcpy(&v, b, sizeof(T));
  return v;
}

// Appends n floats as little-endian binary32.
inline void AppendFloats(std::string* out, const float* v, size_t n) {
  size_t at = out->size();
  out->resize(at + 4 * n);
  char* dst = out->data() + at;
  if constexpr (kLittleEndianHost) {
    if (n > 0) std::memcpy(dst, v, 4 * n);
  } else {
    for (size_t i = 0; i < n; ++i) {
      float s = ByteSwap(v[i]);
      std::memcpy(dst + 4 * i, &s, 4);
    }
  }
}

// Reads n little-endian binary32 values from src (4n bytes).
inline void ReadFloats(const char* src, size_t n, float* out) {
  if constexpr (kLittleEndianHost) {
    if (n > 0) std::memcpy(out, src, 4 * n);
  } else {
    for (size_t i = 0; i < n; ++i) {
      float s;
      std::memcpy(&s, src + 4 * i, 4);
      out[i] = ByteSwap(s);
    }
  }
}

template <typename T>
void AppendInt(std::string* out, T v) {
  static_assert(std::is_integral_v<T>);
  if constexpr (!kLittleEndianHost) v = ByteSwap(v);
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// A bounds-checked cursor over bytes: every read fails (returns false) rather
// than running past the end, so garbage input cannot crash a parser.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  bool Int(T* v) {
    static_assert(std::is_integral_v<T>);
    if (remaining() < sizeof(T)) return false;
    std::memcpy(v, bytes_.data() + pos_, sizeof(T));
    if constexpr (!kLittleEndianHost) *v = ByteSwap(*v);
    pos_ += sizeof(T);
    return true;
  }
  // n floats; refuses before allocating anything if n does not fit.
  bool Floats(size_t n, float* out) {
    if (n > remaining() / 4) return false;
    ReadFloats(bytes_.data() + pos_, n, out);
    pos_ += 4 * n;
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (n > remaining()) return false;
    *out = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

}  // namespace mycel::federation::wire
