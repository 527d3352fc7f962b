// Helpers every test binary shares: scratch directories, whole-file reads and
// writes, directory listings, and waiting for a condition. Header-only, so a test target needs no
// extra library; include it as "common/test_util.h" (tests/ is on the include
// path of every test target).
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace mycel::test {

// A fresh directory under $TMPDIR (or /tmp) named `<prefix>-XXXXXX`, removed
// with its contents on destruction unless $MYCEL_IT_KEEP is set (for
// post-mortems). Aborts if it cannot be made: no test can go on without it.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "mycel-test") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + std::string(prefix) + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::fprintf(stderr, "test: mkdtemp %s: %s\n", tmpl.c_str(), std::strerror(errno));
      std::abort();
    }
    path_ = tmpl;
  }
  ~TempDir() {
    if (std::getenv("MYCEL_IT_KEEP")) {
      std::fprintf(stderr, "test: keeping %s\n", path_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// The path of a fresh TempDir that lives until the test process exits (each
// ctest case is its own process): for fixtures and helpers that only need a
// path, not an owner.
inline std::string MakeTempDir(std::string_view prefix = "mycel-test") {
  static std::vector<std::unique_ptr<TempDir>> dirs;
  dirs.push_back(std::make_unique<TempDir>(prefix));
  return dirs.back()->path();
}

// The whole file as bytes; empty if it cannot be read.
inline std::string ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Replaces `path` with `bytes`; false if it could not be written.
inline bool WriteStringToFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  return out.good();
}

// Entry names of a directory (no "." / ".."), unsorted; empty if it does not
// exist.
inline std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  return names;
}

// Calls `done` every `interval_s` until it returns true (true) or `timeout_s`
// passes (false); the last call is at or after the deadline. Sleeps between
// calls: a busy-waiting test would starve the threads or the daemon (which
// trains at SCHED_IDLE) that it waits for.
template <typename Pred>
bool WaitFor(Pred done, double timeout_s, double interval_s = 0.05) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
  }
}

}  // namespace mycel::test
