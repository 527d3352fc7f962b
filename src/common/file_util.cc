#include "common/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common/coding.h"
#include "common/status.h"

namespace mycel {

absl::Status ErrnoStatus(int err, std::string_view op, std::string_view path) {
  std::string msg = std::string(op) + " " + std::string(path) + ": " + std::strerror(err);
  switch (err) {
    case ENOENT: return absl::NotFoundError(msg);
    // A read-only file system (a unit's sandbox, a state_dir outside its
    // ReadWritePaths=) is no more transient than a directory's mode.
    case EACCES: case EPERM: case EROFS: return absl::PermissionDeniedError(msg);
    case ENOSPC: case EDQUOT: return absl::ResourceExhaustedError(msg);
    case EEXIST: return absl::AlreadyExistsError(msg);
    default: return absl::InternalError(msg);
  }
}

ScopedFd::~ScopedFd() {
  if (fd_ >= 0) ::close(fd_);
}

std::string DirName(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

Env* Env::Default() {
  static Env* env = new Env();
  return env;
}

absl::StatusOr<std::string> Env::ReadFile(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus(errno, "open", path);
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::Status Env::WriteFileAtomically(const std::string& path, std::string_view data) {
  std::random_device rd;
  std::string tmp = absl::StrCat(path, ".tmp-", rd() % 1000000);
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.get() < 0) return ErrnoStatus(errno, "create", tmp);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd.get(), p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::unlink(tmp.c_str());
      return ErrnoStatus(err, "write", tmp);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "fsync", tmp);
  }
  ::close(fd.release());
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus(err, "rename", tmp);
  }
  std::string dir = DirName(path);
  ScopedFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) return ErrnoStatus(errno, "open", dir);
  if (::fsync(dfd.get()) != 0) return ErrnoStatus(errno, "fsync", dir);
  return absl::OkStatus();
}

absl::Status Env::RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return ErrnoStatus(errno, "unlink", path);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> Env::ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir", dir);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
  }
  ::closedir(d);
  return names;
}

absl::Status Env::CreateDirs(const std::string& dir, int mode) {
  if (dir.empty()) return absl::InvalidArgumentError("empty directory path");
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    bool last = pos == std::string::npos;
    if (::mkdir(partial.c_str(), last ? mode : 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, "mkdir", partial);
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return ErrnoStatus(errno, "stat", dir);
  if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError(dir + " is not a directory");
  return absl::OkStatus();
}

namespace {
constexpr size_t kHashLen = 32;  // BLAKE2b-256
constexpr size_t kHeaderLen = 8 + 8 + kHashLen;
}  // namespace

std::string FrameChecksummed(std::string_view magic8, std::string_view payload) {
  std::string out;
  out.reserve(kHeaderLen + payload.size());
  out.append(magic8.substr(0, 8));
  out.resize(8, '\0');
  PutFixed64(&out, payload.size());
  out.append(Blake2b(payload, kHashLen));
  out.append(payload);
  return out;
}

absl::StatusOr<std::string> UnframeChecksummed(std::string_view magic8, std::string_view framed,
                                               std::string_view what) {
  if (framed.size() < kHeaderLen) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": truncated (", framed.size(), " bytes)"));
  }
  std::string magic(magic8.substr(0, 8));
  magic.resize(8, '\0');
  if (framed.substr(0, 8) != magic) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": bad magic"));
  }
  uint64_t len = DecodeFixed64(framed.data() + 8);
  if (len != framed.size() - kHeaderLen) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": length ", framed.size() - kHeaderLen,
                                            " does not match header ", len));
  }
  std::string_view payload = framed.substr(kHeaderLen);
  // A checksum, not a secret: a plain comparison is enough.
  if (Blake2b(payload, kHashLen) != framed.substr(16, kHashLen)) {
    return absl::DataLossError(absl::StrCat(std::string(what), ": checksum mismatch"));
  }
  return std::string(payload);
}

std::string ExpandPath(const std::string& path) {
  std::string in = path;
  if (!in.empty() && in[0] == '~') {
    const char* home = std::getenv("HOME");
    in = std::string(home ? home : "") + in.substr(1);
  }
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '$') { out.push_back(in[i]); continue; }
    size_t start = i + 1;
    bool braced = start < in.size() && in[start] == '{';
    if (braced) ++start;
    size_t end = start;
    while (end < in.size() && (std::isalnum(static_cast<unsigned char>(in[end])) || in[end] == '_')) ++end;
    std::string var = in.substr(start, end - start);
    const char* val = std::getenv(var.c_str());
    if (braced && in.compare(end, 2, ":-") == 0) {
      // ${VAR:-default}: the default runs to the matching brace.
      size_t close = end + 2;
      for (int depth = 1; close < in.size(); ++close) {
        if (in[close] == '{') ++depth;
        if (in[close] == '}' && --depth == 0) break;
      }
      out += val != nullptr && val[0] != '\0' ? std::string(val) : ExpandPath(in.substr(end + 2, close - end - 2));
      i = close;
      continue;
    }
    if (val) out += val;
    i = braced && end < in.size() && in[end] == '}' ? end : end - 1;
  }
  return out;
}

}  // namespace mycel
