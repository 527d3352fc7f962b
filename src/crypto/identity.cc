#include "crypto/identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <sodium.h>

#include "absl/strings/str_cat.h"
#include "common/coding.h"
#include "common/file_util.h"
#include "common/logging.h"
#include "common/status.h"

namespace mycel::crypto {
namespace {

// identity.key: this 8-byte magic (the last character is the format version)
// followed by the 64-byte libsodium secret key (seed || public key).
constexpr char kMagic[] = "MYCELID1";
constexpr size_t kMagicLen = 8;
constexpr size_t kFileLen = kMagicLen + crypto_sign_SECRETKEYBYTES;
static_assert(sizeof(kMagic) == kMagicLen + 1);
static_assert(crypto_sign_PUBLICKEYBYTES == 32 && crypto_sign_SECRETKEYBYTES == 64);

// Fingerprint: the first 8 bytes of BLAKE2b-256(public key), printed in 4 groups of 4 hex digits.
constexpr size_t kFingerprintBytes = 8;

absl::Status InitSodium() {
  // sodium_init is itself thread-safe; the static makes it run once.
  static const int rc = sodium_init();
  if (rc < 0) return absl::InternalError("libsodium failed to initialize");
  return absl::OkStatus();
}

// sodium_malloc'ed buffer (guard pages, mlock'ed, wiped by sodium_free).
class SecureBuffer {
 public:
  explicit SecureBuffer(size_t size) : p_(static_cast<unsigned char*>(sodium_malloc(size))) {}
  ~SecureBuffer() { if (p_ != nullptr) sodium_free(p_); }
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;
  unsigned char* get() const { return p_; }
  unsigned char* release() { unsigned char* p = p_; p_ = nullptr; return p; }
 private:
  unsigned char* p_;
};


absl::Status ReadExactly(int fd, unsigned char* buf, size_t len, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::read(fd, buf + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read", path);
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, ": identity key file is truncated (", done,
                                              " bytes, expected ", len, ")"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const unsigned char* buf, size_t len, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::write(fd, buf + done, len - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write", path);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FsyncDir(const std::string& dir) {
  ScopedFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) return ErrnoStatus(errno, "open", dir);
  if (::fsync(dfd.get()) != 0) return ErrnoStatus(errno, "fsync", dir);
  return absl::OkStatus();
}

// Writes `sk` to `path` only if `path` does not exist: a temp file made by
// mkstemp (0600, O_EXCL) in the same directory, fsynced, then link()ed to
// `path`, which fails with EEXIST instead of replacing a key another process
// created meanwhile. AlreadyExists in that case.
absl::Status WriteNewKeyFile(const std::string& path, const unsigned char* sk) {
  SecureBuffer file(kFileLen);
  if (file.get() == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  std::memcpy(file.get(), kMagic, kMagicLen);
  std::memcpy(file.get() + kMagicLen, sk, crypto_sign_SECRETKEYBYTES);

  std::string tmpl = path + ".tmp-XXXXXX";
  int raw_fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  if (raw_fd < 0) return ErrnoStatus(errno, "create", tmpl);
  ScopedFd fd(raw_fd);
  const std::string tmp = tmpl;
  auto fail = [&](absl::Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd.get(), 0600) != 0) return fail(ErrnoStatus(errno, "chmod", tmp));
  if (absl::Status s = WriteAll(fd.get(), file.get(), kFileLen, tmp); !s.ok()) return fail(s);
  if (::fsync(fd.get()) != 0) return fail(ErrnoStatus(errno, "fsync", tmp));
  if (::link(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    if (err == EEXIST) {
      return fail(absl::AlreadyExistsError(absl::StrCat(path, " already exists")));
    }
    // Some file systems (FAT, some FUSE) have no hard links; fall back to
    // rename, which can only lose a race that no other process should run.
    if (err != EPERM && err != EOPNOTSUPP && err != ENOSYS) {
      return fail(ErrnoStatus(err, "link", path));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(ErrnoStatus(errno, "rename", path));
  } else {
    ::unlink(tmp.c_str());
  }
  return FsyncDir(DirName(path));
}

// Parses a key file read from `fd` into `sk`. Refuses a file others can
// access, one owned by someone else, and one of the wrong size or format.
absl::Status ReadKeyFile(int fd, const std::string& path, unsigned char* sk) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a regular file"));
  }
  const unsigned mode = st.st_mode & 07777;
  if ((mode & 077) != 0) {
    char octal[8];
    std::snprintf(octal, sizeof(octal), "%04o", mode);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is ", (mode & 044) != 0 ? "readable" : "accessible",
                     " by others (mode ", octal, "); chmod 600 it"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is owned by uid ", st.st_uid, ", not by this user (uid ", ::geteuid(), ")"));
  }
  if (static_cast<size_t>(st.st_size) != kFileLen) {
    return absl::DataLossError(absl::StrCat(path, " is not a mycel identity key (", st.st_size,
                                            " bytes, expected ", kFileLen, ")"));
  }
  SecureBuffer file(kFileLen);
  if (file.get() == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  MYCEL_RETURN_IF_ERROR(ReadExactly(fd, file.get(), kFileLen, path));
  if (std::memcmp(file.get(), kMagic, kMagicLen - 1) != 0) {
    return absl::DataLossError(absl::StrCat(path, " is not a mycel identity key (bad header)"));
  }
  if (file.get()[kMagicLen - 1] != static_cast<unsigned char>(kMagic[kMagicLen - 1])) {
    return absl::DataLossError(absl::StrCat(
        path, " has unsupported identity key format version '",
        std::string(reinterpret_cast<const char*>(file.get()), kMagicLen), "'"));
  }
  std::memcpy(sk, file.get() + kMagicLen, crypto_sign_SECRETKEYBYTES);

  // The secret key is seed || public key, and crypto_sign_ed25519_sk_to_pk
  // merely copies the second half; so re-derive the key pair from the seed and
  // compare, which catches a flipped bit in either half.
  SecureBuffer scratch(crypto_sign_SEEDBYTES + crypto_sign_SECRETKEYBYTES);
  if (scratch.get() == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  unsigned char* seed = scratch.get();
  unsigned char* derived_sk = scratch.get() + crypto_sign_SEEDBYTES;
  unsigned char derived_pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_seed(seed, sk);
  crypto_sign_seed_keypair(derived_pk, derived_sk, seed);
  unsigned char embedded_pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(embedded_pk, sk);
  if (sodium_memcmp(derived_pk, embedded_pk, sizeof(derived_pk)) != 0) {
    return absl::DataLossError(absl::StrCat(
        path, " is corrupt: its public key does not match its secret key"));
  }
  return absl::OkStatus();
}

}  // namespace

Identity::Identity() = default;

Identity::~Identity() {
  if (secret_key_ != nullptr) sodium_free(secret_key_);  // wipes before freeing
}

absl::StatusOr<std::unique_ptr<Identity>> Identity::Generate() {
  MYCEL_RETURN_IF_ERROR(InitSodium());
  SecureBuffer sk(crypto_sign_SECRETKEYBYTES);
  if (sk.get() == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_keypair(pk, sk.get());
  std::unique_ptr<Identity> id(new Identity());
  id->public_key_.assign(reinterpret_cast<const char*>(pk), sizeof(pk));
  id->secret_key_ = sk.release();
  sodium_mprotect_readonly(id->secret_key_);
  return id;
}

absl::StatusOr<std::unique_ptr<Identity>> Identity::LoadOrCreate(const std::string& path) {
  MYCEL_RETURN_IF_ERROR(InitSodium());
  // Two attempts: if another process creates the file between our failed
  // open and our link, the second pass loads its key.
  for (int attempt = 0; attempt < 2; ++attempt) {
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));  // a FIFO must not hang us
    if (fd.get() >= 0) {
      SecureBuffer sk(crypto_sign_SECRETKEYBYTES);
      if (sk.get() == nullptr) return absl::ResourceExhaustedError("sodium_malloc failed");
      MYCEL_RETURN_IF_ERROR(ReadKeyFile(fd.get(), path, sk.get()));
      std::unique_ptr<Identity> id(new Identity());
      id->public_key_.resize(crypto_sign_PUBLICKEYBYTES);
      crypto_sign_ed25519_sk_to_pk(reinterpret_cast<unsigned char*>(id->public_key_.data()),
                                   sk.get());
      id->secret_key_ = sk.release();
      sodium_mprotect_readonly(id->secret_key_);
      return id;
    }
    if (errno != ENOENT) return ErrnoStatus(errno, "open identity key", path);

    MYCEL_RETURN_IF_ERROR(Env::Default()->CreateDirs(DirName(path), 0700));
    MYCEL_ASSIGN_OR_RETURN(std::unique_ptr<Identity> id, Generate());
    absl::Status written = WriteNewKeyFile(path, id->secret_key_);
    if (absl::IsAlreadyExists(written)) continue;
    MYCEL_RETURN_IF_ERROR(Annotate(written, "writing identity key"));
    Logger("crypto")->info("created identity {} at {}", id->Fingerprint(), path);
    return id;
  }
  return absl::AbortedError(absl::StrCat(path, " appeared and vanished while creating it"));
}

std::string Identity::PublicKeyBase64() const { return Base64Encode(public_key_); }

std::string Identity::Fingerprint() const { return KeyFingerprint(public_key_); }

std::string Identity::Sign(std::string_view message) const {
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size(), secret_key_);
  return std::string(reinterpret_cast<const char*>(sig), sizeof(sig));
}

bool VerifySignature(std::string_view public_key, std::string_view message, std::string_view sig) {
  if (!InitSodium().ok()) return false;
  if (public_key.size() != crypto_sign_PUBLICKEYBYTES || sig.size() != crypto_sign_BYTES) {
    return false;
  }
  return crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig.data()),
                                     reinterpret_cast<const unsigned char*>(message.data()),
                                     message.size(),
                                     reinterpret_cast<const unsigned char*>(public_key.data())) == 0;
}

std::string KeyFingerprint(std::string_view public_key) {
  if (public_key.size() != crypto_sign_PUBLICKEYBYTES) {
    return absl::StrCat("invalid-key(", public_key.size(), " bytes)");
  }
  if (!InitSodium().ok()) return "";
  unsigned char h[crypto_generichash_BYTES];  // BLAKE2b-256
  crypto_generichash(h, sizeof(h), reinterpret_cast<const unsigned char*>(public_key.data()),
                     public_key.size(), nullptr, 0);
  std::string out;
  for (size_t i = 0; i < kFingerprintBytes; ++i) {
    if (i > 0 && i % 2 == 0) out.push_back(':');
    absl::StrAppend(&out, absl::Hex(h[i], absl::kZeroPad2));
  }
  return out;
}

std::string RandomHex(size_t bytes) {
  if (!InitSodium().ok()) return "";
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  std::string out;
  for (unsigned char c : raw) absl::StrAppend(&out, absl::Hex(c, absl::kZeroPad2));
  return out;
}

bool SameSecret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace mycel::crypto
