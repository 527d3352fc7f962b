// File-system seam and durable file helpers.
//
// Env wraps the few file operations whose failure matters for durability
// (leveldb's Env idea): production uses Env::Default(); tests subclass it to
// inject faults such as a full disk. All methods are thread-safe.
//
// Checksummed files: an 8-byte magic, the payload length, a BLAKE2b-256 of the
// payload (common/coding.h), then the payload. A torn or bit-flipped file is
// detected on read and reported as DataLoss, never returned as data.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mycel {

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  virtual absl::StatusOr<std::string> ReadFile(const std::string& path);
  // Writes to `path.tmp-XXXX` in the same directory, fsyncs it, renames it over
  // `path` and fsyncs the directory. On failure `path` is untouched.
  virtual absl::Status WriteFileAtomically(const std::string& path, std::string_view data);
  virtual absl::Status RemoveFile(const std::string& path);
  // File names (not paths) in `dir`, unsorted.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir);
  // Creates `dir` and parents; the last component gets `mode`.
  virtual absl::Status CreateDirs(const std::string& dir, int mode);
};

// Owns a file descriptor and closes it on destruction.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd();
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }
  int release() { int fd = fd_; fd_ = -1; return fd; }

 private:
  int fd_;
};

// The directory part of `path`: "." without a slash, "/" for a top-level name.
std::string DirName(const std::string& path);

// Frames `payload` with magic, length and checksum.
std::string FrameChecksummed(std::string_view magic8, std::string_view payload);
// Verifies a framed buffer and returns the payload; DataLoss names `what` on a bad checksum.
absl::StatusOr<std::string> UnframeChecksummed(std::string_view magic8, std::string_view framed,
                                               std::string_view what);

// Expands a leading "~" and $VAR / ${VAR} references; ${VAR:-default}
// gives `default` (itself expanded) when VAR is unset or empty, as in sh.
std::string ExpandPath(const std::string& path);

}  // namespace mycel
