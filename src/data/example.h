// The unit of training data. Plain value type, no third-party headers.
#pragma once

#include <cstdint>
#include <string>

namespace mycel::data {

// How an example's bytes are to be read.
enum class DType : uint8_t {
  kU8 = 0,   // one byte per value: image pixels (scaled by 1/255 for training) or text bytes
  kF32 = 1,  // little-endian float32 per value (CSV features)
};

enum class Split : uint8_t { kTrain = 0, kValidation = 1 };

struct Example {
  int64_t label = -1;        // class index; -1 for text (the target is the next byte)
  DType dtype = DType::kU8;
  std::string data;          // width values of dtype, packed
  int64_t width() const { return dtype == DType::kU8 ? static_cast<int64_t>(data.size())
                                                     : static_cast<int64_t>(data.size() / 4); }
};

// An example as stored, with its row id (monotonic: later ingests have larger ids).
struct StoredExample {
  int64_t id = 0;
  Example example;
};

// What an example must look like to fit the configured model.
struct ExampleShape {
  bool text = false;      // char_lm: examples are windows of context+1 bytes
  int64_t width = 784;    // values per example (images/CSV), or context+1 for text
  int64_t classes = 10;   // labels must be in [0, classes) when !text
};

// Whether `e` can be fed to a model of `shape`: its width, dtype and label.
// Rows stored under another [model] (a changed `classes` or input shape)
// fail this and are skipped wherever stored rows meet the model.
inline bool Fits(const Example& e, const ExampleShape& shape) {
  const auto bytes = static_cast<int64_t>(e.data.size());
  if (shape.text) return e.dtype == DType::kU8 && bytes == shape.width;
  if (e.label < 0 || e.label >= shape.classes) return false;
  if (e.dtype == DType::kU8) return bytes == shape.width;
  if (e.dtype == DType::kF32) return bytes == 4 * shape.width;
  return false;
}

}  // namespace mycel::data
