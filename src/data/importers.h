// Importers: turn the bytes of user files into Examples, or say exactly what
// is wrong and where. Pure functions of their input; thread-safe.
//
// Formats:
//   idx  — IDX files as MNIST/Fashion-MNIST ship them (magic 0x0803 images,
//          0x0801 labels), optionally gzip-compressed (.gz, detected by magic).
//          Images and labels are paired; count and shape are checked.
//   csv  — one example per line: label, then `width` numeric features.
//          An optional header line (first field not a number) is skipped.
//   text — UTF-8 text, cut into windows of `width` bytes (context + 1) with
//          stride width-1, so every byte is predicted exactly once.
// Errors are InvalidArgument naming the file and the line (csv), byte offset
// (text, idx) or the mismatch ("train-images.gz: 60000 images but
// labels.gz: 59999 labels").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/example.h"

namespace mycel::data {

enum class Format { kAuto, kIdx, kCsv, kText };

struct NamedBlob {
  std::string name;   // file name as the user gave it, used in messages
  std::string bytes;  // raw file content (may be gzip-compressed)
};

// "idx" | "csv" | "text" | "" (auto) → Format; anything else is an error.
absl::StatusOr<Format> ParseFormat(const std::string& name);

// Guesses one file's format from its name and first bytes.
Format GuessFormat(const NamedBlob& file);

// Parses all files (idx files are paired images+labels by magic, in the order
// given) into examples that fit `shape`. Any bad file fails the whole call.
// `unlabelled`: idx images given without any labels file are taken alone,
// each with label -1 (inputs to predict, not examples to store).
absl::StatusOr<std::vector<Example>> ImportFiles(const std::vector<NamedBlob>& files, Format format,
                                                 const ExampleShape& shape, bool unlabelled = false);

// Decompresses gzip data if it starts with the gzip magic, else returns it as is.
// Errors name the file; output is capped at 4 GiB (a zip bomb is refused).
absl::StatusOr<std::string> MaybeGunzip(const std::string& bytes, const std::string& name);

namespace internal {
// MaybeGunzip with a caller-chosen output cap (tests use a small one).
absl::StatusOr<std::string> GunzipLimited(const std::string& bytes, const std::string& name,
                                          uint64_t max_bytes);
}  // namespace internal

}  // namespace mycel::data
