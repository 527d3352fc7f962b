#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace mycel::it {

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// True once something listens on the Unix socket at `path`.
bool SocketAccepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    ::close(fd);
    return false;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

std::string Tail(const std::string& s, size_t n) { return s.size() <= n ? s : "..." + s.substr(s.size() - n); }

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6f", v);  // always has a '.', so TOML reads a float
  return buf;
}

}  // namespace

// ------------------------------------------------------------ files and paths

std::string BinDir() {
  if (const char* env = std::getenv("MYCEL_BIN_DIR"); env && *env) return env;
  return MYCEL_BIN_DIR;
}

std::string FashionMnist(const std::string& name) { return "/usr/share/datasets/fashion-mnist/" + name; }

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "harness: cannot read %s: %s\n", path.c_str(), std::strerror(errno));
    std::abort();
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFileOrDie(const std::string& path, std::string_view bytes) {
  if (!test::WriteStringToFile(path, bytes)) {
    std::fprintf(stderr, "harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

std::string GunzipFileOrDie(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) {
    std::fprintf(stderr, "harness: gzopen %s failed\n", path.c_str());
    std::abort();
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      std::fprintf(stderr, "harness: gzread %s failed\n", path.c_str());
      std::abort();
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

int FileMode(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

void SleepSeconds(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

// ------------------------------------------------------------------ processes

std::unique_ptr<Process> Process::Spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
                                        const std::string& stderr_path) {
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls (the test binary may have threads).
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const std::string exec_failed = "harness: cannot exec " + argv.at(0) + "\n";
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return nullptr;
  }
  if (pid == 0) {
    // If the test binary dies, its daemons die with it: no strays.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int out = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out < 0 || err < 0 || null_in < 0) ::_exit(127);
    ::dup2(null_in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(args[0], args.data());
    (void)!::write(2, exec_failed.data(), exec_failed.size());
    ::_exit(127);
  }
  return std::unique_ptr<Process>(new Process(pid));
}

Process::~Process() {
  if (!exit_code_) Kill();
}

bool Process::Reap(bool block) {
  if (exit_code_) return true;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exit_code_ = DecodeWaitStatus(status);
    return true;
  }
  if (r < 0) {  // ECHILD: not ours any more; treat as gone
    exit_code_ = -1;
    return true;
  }
  return false;
}

bool Process::Running() { return !Reap(false); }

std::optional<int> Process::Wait(double timeout_s) {
  const double deadline = Now() + timeout_s;
  while (!Reap(false)) {
    if (Now() >= deadline) return std::nullopt;
    SleepSeconds(0.02);
  }
  return exit_code_;
}

void Process::Signal(int sig) {
  if (!exit_code_) ::kill(pid_, sig);
}

int Process::Kill() {
  if (!exit_code_) {
    ::kill(pid_, SIGKILL);
    Reap(true);
  }
  return *exit_code_;
}

std::string CommandResult::Describe() const {
  std::ostringstream os;
  os << "exit " << exit_code << "\n--- stdout ---\n" << Tail(out, 4000) << "\n--- stderr ---\n" << Tail(err, 4000);
  return os.str();
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir, double timeout_s) {
  static std::atomic<int> counter{0};
  std::string base = scratch_dir + "/cmd-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::string out_path = base + ".out", err_path = base + ".err";
  CommandResult r;
  {
    auto p = Process::Spawn(argv, out_path, err_path);
    if (!p) return r;
    auto code = p->Wait(timeout_s);
    if (code) {
      r.exit_code = *code;
    } else {
      p->Kill();
      r.exit_code = -1;
      ADD_FAILURE() << argv[0] << " did not finish within " << timeout_s << " s";
    }
  }
  if (Exists(out_path)) r.out = ReadFileOrDie(out_path);
  if (Exists(err_path)) r.err = ReadFileOrDie(err_path);
  ::unlink(out_path.c_str());
  ::unlink(err_path.c_str());
  return r;
}

// ---------------------------------------------------------------------- JSON

const Json* Json::Find(const std::string& key) const {
  if (type != Type::kObject) return nullptr;
  for (const auto& [k, v] : object) {
    if (k == key) return &v;
  }
  return nullptr;
}

double Json::Num(const std::string& key) const {
  const Json* v = Find(key);
  return v && v->type == Type::kNumber ? v->number : std::nan("");
}

std::string Json::Str(const std::string& key) const {
  const Json* v = Find(key);
  return v && v->type == Type::kString ? v->string : std::string();
}

namespace {

class JsonParser {
 public:
  explicit JsonParser(std::string_view s) : s_(s) {}

  std::optional<Json> ParseDocument() {
    Json v;
    if (!Value(&v, 0)) return std::nullopt;
    SkipSpace();
    if (i_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool Value(Json* v, int depth) {
    if (depth > 32) return false;
    SkipSpace();
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '{') return Object(v, depth);
    if (c == '[') return Array(v, depth);
    if (c == '"') {
      v->type = Json::Type::kString;
      return String(&v->string);
    }
    if (Literal("null")) { v->type = Json::Type::kNull; return true; }
    if (Literal("true")) { v->type = Json::Type::kBool; v->boolean = true; return true; }
    if (Literal("false")) { v->type = Json::Type::kBool; v->boolean = false; return true; }
    return Number(v);
  }
  bool Number(Json* v) {
    size_t start = i_;
    while (i_ < s_.size() && std::strchr("+-0123456789.eE", s_[i_]) != nullptr) ++i_;
    if (i_ == start) return false;
    std::string text(s_.substr(start, i_ - start));
    char* end = nullptr;
    v->number = std::strtod(text.c_str(), &end);
    v->type = Json::Type::kNumber;
    return end == text.c_str() + text.size();
  }
  bool String(std::string* out) {
    ++i_;  // opening quote
    while (i_ < s_.size()) {
      char c = s_[i_++];
      if (c == '"') return true;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'n': out->push_back('\n'); break;
        case 't': out->push_back('\t'); break;
        case 'r': out->push_back('\r'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'u': {
          if (i_ + 4 > s_.size()) return false;
          unsigned cp = static_cast<unsigned>(std::stoul(std::string(s_.substr(i_, 4)), nullptr, 16));
          i_ += 4;
          // The CLI only escapes control characters; anything wider is kept as UTF-8.
          if (cp < 0x80) {
            out->push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
          } else {
            out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
            out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
          }
          break;
        }
        default: return false;
      }
    }
    return false;
  }
  bool Array(Json* v, int depth) {
    v->type = Json::Type::kArray;
    ++i_;
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == ']') { ++i_; return true; }
    for (;;) {
      Json item;
      if (!Value(&item, depth + 1)) return false;
      v->array.push_back(std::move(item));
      SkipSpace();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == ',') { ++i_; continue; }
      if (s_[i_] == ']') { ++i_; return true; }
      return false;
    }
  }
  bool Object(Json* v, int depth) {
    v->type = Json::Type::kObject;
    ++i_;
    SkipSpace();
    if (i_ < s_.size() && s_[i_] == '}') { ++i_; return true; }
    for (;;) {
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != '"') return false;
      std::string key;
      if (!String(&key)) return false;
      SkipSpace();
      if (i_ >= s_.size() || s_[i_] != ':') return false;
      ++i_;
      Json item;
      if (!Value(&item, depth + 1)) return false;
      v->object.emplace_back(std::move(key), std::move(item));
      SkipSpace();
      if (i_ >= s_.size()) return false;
      if (s_[i_] == ',') { ++i_; continue; }
      if (s_[i_] == '}') { ++i_; return true; }
      return false;
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

std::optional<Json> ParseJson(std::string_view text) {
  try {
    return JsonParser(text).ParseDocument();
  } catch (const std::exception&) {  // std::stoul on a bad \u escape
    return std::nullopt;
  }
}

// --------------------------------------------------------------------- daemon

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

HttpReply HttpRequest(int port, const std::string& method, const std::string& path) {
  HttpReply r;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return r;
  }
  const std::string req = method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  std::string all;
  char buf[8192];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) all.append(buf, static_cast<size_t>(n));
  ::close(fd);
  const auto split = all.find("\r\n\r\n");
  if (split == std::string::npos || all.compare(0, 5, "HTTP/") != 0 || split < 12) return r;
  r.head = all.substr(0, split);
  r.body = all.substr(split + 4);
  r.status = std::atoi(r.head.substr(9, 3).c_str());
  return r;
}

std::string ConfigToml(const std::string& name, const std::string& state_dir, const ConfigSpec& spec) {
  std::ostringstream os;
  os << "# generated by the mycel integration tests\n"
     << "[node]\n"
     << "name = \"" << name << "\"\n"
     << "state_dir = \"" << state_dir << "\"\n"
     << "log_level = \"info\"\n"
     << spec.extra_node << "\n"
     << "[model]\n"
     << "kind = \"" << spec.model_kind << "\"\n"
     << "seed = 7\n"
     << spec.extra_model;
  if (spec.model_kind == "char_lm") os << "context = " << spec.context << "\n";
  os << "\n[training]\n"
     // Momentum as in configs/demo.toml: Fashion-MNIST passes 60% within a few hundred steps.
     << "momentum = 0.9\n"
     << "checkpoint_interval_s = " << FormatDouble(spec.checkpoint_interval_s) << "\n"
     << "eval_interval_s = " << FormatDouble(spec.eval_interval_s) << "\n"
     << "max_eval_examples = " << spec.max_eval_examples << "\n"
     << "rest_patience = " << spec.rest_patience << "\n"
     << spec.extra_training;
  return os.str();
}

Daemon::Daemon(std::string config_path, std::string state_dir, std::string log_path)
    : config_path_(std::move(config_path)), state_dir_(std::move(state_dir)), log_path_(std::move(log_path)) {}

Daemon::~Daemon() {
  if (process_ && process_->Running()) process_->Kill();
}

::testing::AssertionResult Daemon::Start(double timeout_s) {
  if (process_ && process_->Running()) return ::testing::AssertionFailure() << "myceld is already running";
  log_offset_ = Exists(log_path_) ? ReadFileOrDie(log_path_).size() : 0;
  std::vector<std::string> argv = prefix_;
  for (const std::string& a : {BinDir() + "/myceld", std::string("-c"), config_path_}) argv.push_back(a);
  process_ = Process::Spawn(argv, log_path_, log_path_);
  if (!process_) return ::testing::AssertionFailure() << "cannot spawn myceld";
  const std::string sock = socket_path();
  const double deadline = Now() + timeout_s;
  for (;;) {
    if (!process_->Running()) {
      return ::testing::AssertionFailure() << "myceld exited with code " << *process_->exit_code()
                                           << " before its socket accepted; log:\n" << Tail(LogSinceStart(), 8000);
    }
    if (SocketAccepts(sock)) return ::testing::AssertionSuccess();
    if (Now() >= deadline) {
      process_->Kill();
      return ::testing::AssertionFailure() << sock << " did not accept within " << timeout_s
                                           << " s; log:\n" << Tail(LogSinceStart(), 8000);
    }
    SleepSeconds(0.05);
  }
}

void Daemon::Signal(int sig) {
  if (process_) process_->Signal(sig);
}

std::optional<int> Daemon::WaitExit(double timeout_s) {
  if (!process_) return std::nullopt;
  return process_->Wait(timeout_s);
}

std::optional<int> Daemon::Stop(double timeout_s) {
  Signal(SIGTERM);
  return WaitExit(timeout_s);
}

void Daemon::Crash() {
  if (process_) process_->Kill();
}

std::string Daemon::Log() const { return Exists(log_path_) ? ReadFileOrDie(log_path_) : std::string(); }

std::string Daemon::LogSinceStart() const {
  std::string log = Log();
  return log_offset_ <= log.size() ? log.substr(log_offset_) : log;
}

TestNode::TestNode(const std::string& dir, const std::string& name, const ConfigSpec& spec)
    : dir_(dir),
      name_(name),
      config_path_(dir + "/" + name + ".toml"),
      state_dir_(dir + "/" + name + "-state"),
      daemon_(config_path_, state_dir_, dir + "/" + name + ".log") {
  WriteFileOrDie(config_path_, ConfigToml(name, state_dir_, spec));
}

CommandResult TestNode::Mycel(const std::vector<std::string>& args, double timeout_s) const {
  std::vector<std::string> argv = {BinDir() + "/mycel", "-c", config_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, dir_, timeout_s);
}

std::unique_ptr<Process> TestNode::SpawnMycel(const std::vector<std::string>& args, const std::string& out_path,
                                              const std::string& err_path) const {
  std::vector<std::string> argv = {BinDir() + "/mycel", "-c", config_path_};
  argv.insert(argv.end(), args.begin(), args.end());
  return Process::Spawn(argv, out_path, err_path);
}

std::optional<Json> TestNode::MycelJson(std::vector<std::string> args) const {
  const std::string what = "mycel " + args.front() + " --json";
  args.push_back("--json");
  CommandResult r = Mycel(args, 60);
  if (r.exit_code != 0) {
    ADD_FAILURE() << what << " failed: " << r.Describe();
    return std::nullopt;
  }
  auto j = ParseJson(r.out);
  if (!j || j->type != Json::Type::kObject) {
    ADD_FAILURE() << what << " printed no JSON object: " << r.Describe();
    return std::nullopt;
  }
  return j;
}

std::optional<Json> TestNode::Status() const { return MycelJson({"status"}); }

double TestNode::StatusNum(const std::string& key) const {
  auto s = Status();
  return s ? s->Num(key) : std::nan("");
}

int64_t TestNode::ExampleCount() const {
  auto s = Status();
  if (!s) return -1;
  return static_cast<int64_t>(s->Num("examples_train") + s->Num("examples_val"));
}

bool TestNode::WaitForStepsAbove(double than, double timeout_s) {
  return PollUntil([&] { return StatusNum("steps") > than; }, timeout_s, 0.3);
}

int T10kLabel(int64_t i) {
  static const std::string labels = GunzipFileOrDie(T10kLabels());
  return static_cast<unsigned char>(labels.at(8 + static_cast<size_t>(i)));
}

}  // namespace mycel::it
