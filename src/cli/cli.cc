// The shared pieces of cli.h.
#include "cli/cli.h"

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "cli/progress_bar.h"
#include "common/file_util.h"

namespace mycel::cli {

void Fail(const std::string& message, int code) {
  std::fprintf(stderr, "mycel: %s\n", message.c_str());
  std::exit(code);
}

Client::Client(const std::string& socket_path) : socket(socket_path) {
  mycel::ClientOptions options;
  options.socket_path = socket;
  CheckApi(mycel::Client::Open(options, &api));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  stub = mycel::control::Control::NewStub(
      grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args));
}

void Client::Check(const grpc::Status& s) const {
  if (s.ok()) return;
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) Fail(WhyUnreachable());
  Fail(s.error_message());
}

void Client::CheckApi(const mycel::Status& s) {
  if (!s.ok()) Fail(s.message());
}

bool Client::Answers() const {
  mycel::DaemonStatus st;
  return api->GetStatus(&st).ok();
}

std::string Client::WhyUnreachable() const {
  mycel::DaemonStatus st;
  mycel::Status s = api->GetStatus(&st);
  return s.ok() ? "myceld did not answer on " + socket + " (it answers now: try again)" : s.message();
}

std::unique_ptr<grpc::ClientContext> Client::Context(int seconds) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

mycel::config::Config LoadConfigOrFail(const std::string& path) {
  absl::StatusOr<mycel::config::Config> config;
  if (path.empty()) {
    config = mycel::config::LoadConfig(mycel::config::DefaultConfigPath());
    if (!config.ok() && absl::IsNotFound(config.status())) config = mycel::config::DefaultConfig();
  } else {
    config = mycel::config::LoadConfig(path);
  }
  if (!config.ok()) Fail(std::string(config.status().message()), 2);
  return *std::move(config);
}

std::string SocketPath(const mycel::config::Config& config, const std::string& socket_override) {
  return socket_override.empty() ? config.SocketPath() : socket_override;
}

std::string ReadFileOrFail(const std::string& path, ProgressBar* bar) {
  auto bytes = mycel::Env::Default()->ReadFile(path);
  if (!bytes.ok()) {
    if (bar) bar->Clear();
    Fail(std::string(bytes.status().message()));
  }
  return *bytes;
}

std::string Fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string Rate(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

std::string Duration(double s) {
  int64_t t = static_cast<int64_t>(s);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%lldh%02lldm%02llds", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

std::string Bytes(int64_t b) {
  char buf[64];
  if (b < 10 * 1024) std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(b));
  else if (b < 10 * 1024 * 1024) std::snprintf(buf, sizeof(buf), "%.1f KiB", b / 1024.0);
  else if (b < int64_t{10} * 1024 * 1024 * 1024) std::snprintf(buf, sizeof(buf), "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof(buf), "%.1f GiB", b / 1073741824.0);
  return buf;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ShortReason(const std::string& message) {
  std::string lower = message;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const std::pair<const char*, const char*> kCauses[] = {
      {"connection refused", "connection refused (is myceld running there, with listen set?)"},
      {"deadline exceeded", "timed out"},
      {"timed out", "timed out"},
      {"no route to host", "no route to host"},
      {"network is unreachable", "network unreachable"},
      {"dns resolution failed", "host name not found"},
      {"name or service not known", "host name not found"},
      {"connection reset", "connection reset"},
  };
  for (const auto& [needle, said] : kCauses) {
    if (lower.find(needle) != std::string::npos) return said;
  }
  constexpr size_t kMax = 60;
  return message.size() <= kMax ? message : message.substr(0, kMax - 3) + "...";
}

std::string PeerWhere(const mycel::control::PeerInfo& p) { return p.dials_in() ? "(dials in)" : p.address(); }

}  // namespace mycel::cli
