// Checkpointer: durable, checksummed snapshots of the trainer's state.
//
// A checkpoint is an opaque payload (the trainer decides what goes in) framed
// with a magic, its length and a BLAKE2b checksum, written atomically: temp
// file in the same directory, fsync, rename, fsync of the directory. Files are
// named ckpt-<seq>.bin with seq increasing; the newest `keep` are kept. On
// Open, leftover temp files from a crash are removed; LoadNewest() returns the
// newest checkpoint whose checksum verifies, skipping (and logging) torn or
// corrupt ones. A failed Save (say, a full disk) leaves every earlier
// checkpoint in place.
//
// Not thread-safe: one owner (the trainer thread) at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/file_util.h"

namespace mycel::train {

struct CheckpointerOptions {
  std::string dir;              // created (mode 0700) if missing
  int keep = 2;                 // newest valid checkpoints kept
  Env* env = Env::Default();    // file-system seam (fault injection in tests)
};

class Checkpointer {
 public:
  struct Loaded {
    uint64_t seq = 0;
    std::string path;
    std::string payload;
  };

  static absl::StatusOr<std::unique_ptr<Checkpointer>> Open(const CheckpointerOptions& options);
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Writes a new checkpoint, then removes all but the newest `keep`.
  absl::Status Save(std::string_view payload);
  // The newest checkpoint that verifies, or nullopt if there is none.
  absl::StatusOr<std::optional<Loaded>> LoadNewest();
  // The last good checkpoint (the trainer's drift guard): one file, good.bin,
  // beside the numbered ones, framed and written atomically like them but
  // never rotated, and never what LoadNewest() restores. LoadGood() returns
  // nullopt if there is none and DataLoss if it does not verify.
  absl::Status SaveGood(std::string_view payload);
  absl::StatusOr<std::optional<Loaded>> LoadGood();

  uint64_t last_seq() const { return last_seq_; }
  const std::string& dir() const { return options_.dir; }

 private:
  explicit Checkpointer(const CheckpointerOptions& options) : options_(options) {}
  // Sequence numbers of ckpt-*.bin files present, ascending.
  absl::StatusOr<std::vector<uint64_t>> ListSeqs();
  std::string PathOf(uint64_t seq) const;

  CheckpointerOptions options_;
  uint64_t last_seq_ = 0;
};

// A payload made of named sections (length-prefixed), so later layers (the
// federation's public copy and mirrors) add sections without a format break.
class Sections {
 public:
  void Put(const std::string& name, std::string bytes);
  const std::string* Get(const std::string& name) const;
  std::string Encode() const;
  static absl::StatusOr<Sections> Decode(std::string_view bytes);

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace mycel::train
