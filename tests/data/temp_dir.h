// Fresh temporary directories for the data tests, removed when the test
// process exits (each ctest case is its own process).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace mycel::data {

inline std::string TempDir() {
  struct Registry {
    std::vector<std::string> dirs;
    ~Registry() {
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  };
  static Registry registry;
  char tmpl[] = "/tmp/mycel-data-XXXXXX";
  char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  if (dir == nullptr) return "/nonexistent";
  registry.dirs.push_back(dir);
  return dir;
}

}  // namespace mycel::data
