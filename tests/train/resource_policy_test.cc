#include "train/resource_policy.h"

#include <sys/stat.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::train {
namespace {

// A fake /sys/class/power_supply: one directory per supply with type/online/present.
class FakePowerSupply {
 public:
  FakePowerSupply() : dir_(test::MakeTempDir()) {}
  void Add(const std::string& name, const std::string& type, const std::string& key, const std::string& value) {
    ::mkdir((dir_ + "/" + name).c_str(), 0755);
    std::ofstream(dir_ + "/" + name + "/type") << type << "\n";
    Set(name, key, value);
  }
  void Set(const std::string& name, const std::string& key, const std::string& value) {
    std::ofstream(dir_ + "/" + name + "/" + key) << value << "\n";
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

class FakeClock : public Clock {
 public:
  double mono = 1000;
  int64_t unix_s = 0;
  double MonotonicSeconds() const override { return mono; }
  int64_t UnixSeconds() const override { return unix_s; }
};

TEST(PowerSource, LaptopOnMainsThenBatteryThenMains) {
  FakePowerSupply ps;
  ps.Add("AC", "Mains", "online", "1");
  ps.Add("BAT0", "Battery", "present", "1");
  EXPECT_EQ(ReadPowerSource(ps.dir()), PowerSource::kMains);
  ps.Set("AC", "online", "0");
  EXPECT_EQ(ReadPowerSource(ps.dir()), PowerSource::kBattery);
  ps.Set("AC", "online", "1");
  EXPECT_EQ(ReadPowerSource(ps.dir()), PowerSource::kMains);
}

TEST(PowerSource, UsbAdapterOrNoBatteryIsMains) {
  FakePowerSupply usb;
  usb.Add("BAT1", "Battery", "present", "1");
  usb.Add("ucsi-source-psy", "USB", "online", "1");
  EXPECT_EQ(ReadPowerSource(usb.dir()), PowerSource::kMains);
  usb.Set("ucsi-source-psy", "online", "0");
  EXPECT_EQ(ReadPowerSource(usb.dir()), PowerSource::kBattery);

  FakePowerSupply desktop;  // a UPS or nothing: no battery at all
  EXPECT_EQ(ReadPowerSource(desktop.dir()), PowerSource::kMains);
  EXPECT_EQ(ReadPowerSource("/nonexistent/power_supply"), PowerSource::kMains);
}

TEST(ResourcePolicy, BatteryHoldsTrainingUnlessConfiguredToContinue) {
  FakePowerSupply ps;
  ps.Add("AC", "Mains", "online", "0");
  ps.Add("BAT0", "Battery", "present", "1");
  PausePolicy pause;
  FakeClock clock;
  ResourcePolicyOptions o;
  o.power_supply_dir = ps.dir();
  ResourcePolicy policy(o, pause, &clock);
  PolicyDecision d = policy.Decide();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.state, "on_battery");
  EXPECT_EQ(d.reason, "on battery");

  // Back on mains: allowed once the cached reading expires (one second).
  ps.Set("AC", "online", "1");
  clock.mono += 1.5;
  EXPECT_TRUE(policy.Decide().allowed);

  // The user's pause wins over everything.
  pause.SetPaused(true);
  EXPECT_EQ(policy.Decide().reason, "paused by user");
  pause.SetPaused(false);

  ps.Set("AC", "online", "0");
  o.pause_on_battery = false;
  policy.Reconfigure(o);
  EXPECT_TRUE(policy.Decide().allowed) << "on_battery = continue";
}

TEST(ResourcePolicy, ActiveHoursIncludingAWindowAcrossMidnight) {
  ::setenv("TZ", "UTC", 1);
  ::tzset();
  PausePolicy pause;
  FakeClock clock;
  ResourcePolicyOptions o;
  o.power_supply_dir = "/nonexistent";  // mains
  o.active_hours = "09:00-17:30";
  ResourcePolicy policy(o, pause, &clock);
  auto at = [&](int h, int m) {
    clock.unix_s = 86400 * 20000 + h * 3600 + m * 60;
    return policy.Decide();
  };
  EXPECT_TRUE(at(9, 0).allowed);
  EXPECT_TRUE(at(17, 29).allowed);
  PolicyDecision d = at(17, 30);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.state, "outside_active_hours");
  EXPECT_NE(d.reason.find("outside active hours"), std::string::npos);
  EXPECT_FALSE(at(3, 0).allowed);

  o.active_hours = "22:00-06:00";  // nights only
  policy.Reconfigure(o);
  EXPECT_TRUE(at(23, 0).allowed);
  EXPECT_TRUE(at(5, 59).allowed);
  EXPECT_FALSE(at(12, 0).allowed);
}

// One parser for the config reader and the policy (train::ActiveHoursWindow):
// a window may end at 24:00 but not start there.
TEST(ResourcePolicy, ParseActiveHoursRejectsMalformed) {
  EXPECT_TRUE(ParseActiveHours("00:00-24:00").ok());
  EXPECT_TRUE(ParseActiveHours("22:30-06:00").ok());
  for (const char* bad : {"9-17", "09:00", "09:60-10:00", "25:00-26:00", "09:00-17:00x", "", "24:00-08:00",
                          "08:00-24:30"}) {
    EXPECT_FALSE(ParseActiveHours(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace mycel::train
