// The importers on arbitrary files, as `mycel ingest`, `eval` and `predict`
// hand them to the daemon: idx pairs, CSV, text, gzip-compressed or not.
// Contract (data/importers.h): a bad file fails the whole call with a message
// naming it; what is accepted fits the shape.
//
// Input: [format][shape][split: u16][bytes...]: the bytes are one file, or
// two (idx images + labels) split at the given offset.
#include <string>
#include <vector>

#include "data/importers.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mycel::data;
  mycel::fuzz::Input in(data, size);
  static const Format kFormats[] = {Format::kAuto, Format::kIdx, Format::kCsv, Format::kText};
  const Format format = kFormats[in.Byte() % 4];
  ExampleShape shape;
  switch (in.Byte() % 3) {
    case 0: shape = {false, 4, 3}; break;      // 2x2 images, 3 classes
    case 1: shape = {false, 784, 10}; break;   // Fashion-MNIST
    default: shape = {true, 9, 256}; break;    // char_lm with an 8-byte context
  }
  const size_t split = in.U16();
  const std::string_view rest = in.Rest();
  std::vector<NamedBlob> files;
  if (split > 0 && split < rest.size()) {
    files.push_back({"images", std::string(rest.substr(0, split))});
    files.push_back({"labels", std::string(rest.substr(split))});
  } else {
    files.push_back({"file", std::string(rest)});
  }
  auto examples = ImportFiles(files, format, shape);
  if (!examples.ok()) {
    MYCEL_FUZZ_CHECK(!examples.status().message().empty());
    return 0;
  }
  for (const Example& e : *examples) MYCEL_FUZZ_CHECK(Fits(e, shape));
  return 0;
}
