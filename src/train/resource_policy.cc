#include "train/resource_policy.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#ifdef __APPLE__
#include <CoreFoundation/CoreFoundation.h>
#include <IOKit/ps/IOPSKeys.h>
#include <IOKit/ps/IOPowerSources.h>
#endif

#include "common/logging.h"

namespace mycel::train {
namespace {

// How long a power or load reading is reused: conditions change within seconds.
constexpr double kReadingTtlS = 1.0;

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Jiffies from /proc/stat's first line: total and idle (idle + iowait).
bool ReadCpuTotals(uint64_t* total, uint64_t* idle) {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[10] = {};
  if (!(in >> cpu) || cpu != "cpu") return false;
  for (auto& x : v) in >> x;
  *total = 0;
  for (auto x : v) *total += x;
  *idle = v[3] + v[4];
  return true;
}

// This process's CPU jiffies (utime + stime), from /proc/self/stat.
uint64_t ReadSelfJiffies() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return utime + stime;
}

}  // namespace

PowerSource ReadPowerSource(const std::string& dir) {
#ifdef __APPLE__
  (void)dir;
  CFTypeRef info = IOPSCopyPowerSourcesInfo();
  if (!info) return PowerSource::kMains;
  CFStringRef type = IOPSGetProvidingPowerSourceType(info);
  bool battery = type && CFStringCompare(type, CFSTR(kIOPMBatteryPowerKey), 0) == kCFCompareEqualTo;
  CFRelease(info);
  return battery ? PowerSource::kBattery : PowerSource::kMains;
#else
  DIR* d = ::opendir(dir.c_str());
  if (!d) return PowerSource::kMains;  // no power_supply class: a desktop or a VM
  bool adapter_online = false, battery_present = false;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string base = dir + "/" + name;
    std::string type = ReadSmallFile(base + "/type");
    if (type == "Mains" || type == "USB" || type == "USB_C" || type == "USB_PD") {
      if (ReadSmallFile(base + "/online") == "1") adapter_online = true;
    } else if (type == "Battery") {
      std::string present = ReadSmallFile(base + "/present");
      if (present.empty() || present == "1") battery_present = true;
    }
  }
  ::closedir(d);
  return adapter_online || !battery_present ? PowerSource::kMains : PowerSource::kBattery;
#endif
}

absl::StatusOr<std::pair<int, int>> ParseActiveHours(const std::string& spec) {
  std::optional<std::pair<int, int>> window = ActiveHoursWindow(spec);
  if (!window) return absl::InvalidArgumentError("active_hours must be \"HH:MM-HH:MM\" (got \"" + spec + "\")");
  return *window;
}

ResourcePolicy::ResourcePolicy(const ResourcePolicyOptions& options, PausePolicy& pause, Clock* clock)
    : pause_(pause), clock_(clock) {
  Reconfigure(options);
}

void ResourcePolicy::Reconfigure(const ResourcePolicyOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  options_ = options;
  hours_.reset();
  if (!options.active_hours.empty()) {
    auto parsed = ParseActiveHours(options.active_hours);
    if (parsed.ok()) hours_ = *parsed;  // config validated it; a bad value means "always"
  }
  power_read_at_ = busy_read_at_ = -1e9;  // read afresh under the new options
}

bool ResourcePolicy::MachineBusyLocked(double now) {
  if (now - busy_read_at_ < kReadingTtlS) return busy_;
  uint64_t total, idle;
  uint64_t self = ReadSelfJiffies();
  if (!ReadCpuTotals(&total, &idle)) return false;
  if (busy_read_at_ > -1e8 && total > last_total_) {
    double d_total = static_cast<double>(total - last_total_);
    double d_busy = d_total - static_cast<double>(idle - last_idle_);
    double d_others = d_busy - static_cast<double>(self - last_self_);
    busy_ = d_others / d_total > options_.busy_fraction;
  }
  last_total_ = total;
  last_idle_ = idle;
  last_self_ = self;
  busy_read_at_ = now;
  return busy_;
}

PolicyDecision ResourcePolicy::DecideLocked() {
  if (PolicyDecision d = pause_.Decide(); !d.allowed) return d;
  const double now = clock_->MonotonicSeconds();
  if (options_.pause_on_battery) {
    if (now - power_read_at_ >= kReadingTtlS) {
      power_ = ReadPowerSource(options_.power_supply_dir);
      power_read_at_ = now;
    }
    if (power_ == PowerSource::kBattery) return {false, "on_battery", "on battery"};
  }
  if (hours_) {
    std::time_t t = static_cast<std::time_t>(clock_->UnixSeconds());
    std::tm local{};
    ::localtime_r(&t, &local);
    int minute = local.tm_hour * 60 + local.tm_min;
    auto [start, end] = *hours_;
    bool inside = start <= end ? (minute >= start && minute < end) : (minute >= start || minute < end);
    if (!inside) return {false, "outside_active_hours", "outside active hours (" + options_.active_hours + ")"};
  }
  if (options_.idle_only && MachineBusyLocked(now)) return {false, "system_busy", "system busy"};
  return {};
}

PowerSource ResourcePolicy::power() {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dir = options_.power_supply_dir;
  }
  return ReadPowerSource(dir);
}

PolicyDecision ResourcePolicy::Decide() {
  std::lock_guard<std::mutex> lock(mu_);
  PolicyDecision d = DecideLocked();
  const std::string reason = d.allowed ? "" : d.reason;
  if (reason != last_reason_) {
    if (reason.empty()) Logger("policy")->info("training allowed again (was: {})", last_reason_);
    else Logger("policy")->info("training held: {}", reason);
    last_reason_ = reason;
  }
  return d;
}

}  // namespace mycel::train
