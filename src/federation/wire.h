// Internal to federation/: the bounds-checked reader shared by the codec and
// the snapshot format. The byte encodings themselves are common/coding.h's.
// Not part of the module's API.
#pragma once

#include <cstddef>
#include <string_view>
#include <type_traits>

#include "common/coding.h"

namespace mycel::federation::wire {

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
    *v = DecodeFixed<T>(bytes_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  // n floats; refuses before allocating anything if n does not fit.
  bool Floats(size_t n, float* out) {
    if (n > remaining() / 4) return false;
    DecodeFloats(bytes_.data() + pos_, n, out);
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
