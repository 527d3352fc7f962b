// The laptop-citizen policy on the real daemon: a fake power_supply tree
// flips between mains and battery; SIGHUP reloads the policy, and a bad new
// config is refused while the old one stays in force.
#include <signal.h>
#include <sys/stat.h>

#include <string>

#include <gtest/gtest.h>

#include "harness.h"

namespace mycel::it {
namespace {

void WritePower(const std::string& dir, bool on_mains) {
  ::mkdir((dir + "/AC").c_str(), 0755);
  ::mkdir((dir + "/BAT0").c_str(), 0755);
  WriteFileOrDie(dir + "/AC/type", "Mains\n");
  WriteFileOrDie(dir + "/AC/online", on_mains ? "1\n" : "0\n");
  WriteFileOrDie(dir + "/BAT0/type", "Battery\n");
  WriteFileOrDie(dir + "/BAT0/present", "1\n");
}

bool WaitForState(const TestNode& node, const std::string& state, const std::string& reason, double timeout_s) {
  return PollUntil([&] {
    auto st = node.Status();
    return st && st->Str("state") == state && (reason.empty() || st->Str("reason") == reason);
  }, timeout_s);
}

TEST(PolicyTest, BatteryHoldsTrainingAndSighupReloadsThePolicy) {
  TempDir tmp;
  const std::string power = tmp.path() + "/power_supply";
  ::mkdir(power.c_str(), 0755);
  WritePower(power, /*on_mains=*/true);
  TestNode node(tmp.path(), "laptop");
  const std::string base = ReadFileOrDie(node.config_path());
  auto write_config = [&](const std::string& policy) {
    WriteFileOrDie(node.config_path(), base + "\n[policy]\npower_supply_dir = \"" + power + "\"\n" + policy);
  };
  write_config("");
  ASSERT_TRUE(node.daemon().Start());
  ASSERT_EQ(node.Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_TRUE(node.WaitForStepsAbove(50, 90));

  // Unplugged: training stops within seconds and status says why.
  WritePower(power, /*on_mains=*/false);
  ASSERT_TRUE(WaitForState(node, "on_battery", "on battery", 10)) << node.Mycel({"status"}).out;
  const double held = node.StatusNum("steps");
  SleepSeconds(1.5);
  EXPECT_EQ(node.StatusNum("steps"), held) << "trained on battery";
  EXPECT_NE(node.daemon().LogSinceStart().find("training held: on battery"), std::string::npos);

  // Plugged back in: training resumes.
  WritePower(power, /*on_mains=*/true);
  ASSERT_TRUE(WaitForState(node, "training", "", 10));
  EXPECT_TRUE(node.WaitForStepsAbove(held, 30));

  // On battery again, then the user allows it: SIGHUP applies the new policy.
  WritePower(power, /*on_mains=*/false);
  ASSERT_TRUE(WaitForState(node, "on_battery", "", 10));
  write_config("on_battery = \"continue\"\n");
  node.daemon().Signal(SIGHUP);
  ASSERT_TRUE(WaitForState(node, "training", "", 10)) << node.daemon().LogSinceStart();
  const double steps = node.StatusNum("steps");
  EXPECT_TRUE(node.WaitForStepsAbove(steps, 30)) << "not training on battery after reload";

  // A bad new config is refused, the daemon keeps running the old one.
  WriteFileOrDie(node.config_path(), base + "\n[policy]\non_battery = \"sometimes\"\n");
  node.daemon().Signal(SIGHUP);
  ASSERT_TRUE(PollUntil([&] { return node.daemon().LogSinceStart().find("reload refused") != std::string::npos; }, 10));
  EXPECT_NE(node.daemon().LogSinceStart().find("on_battery"), std::string::npos);
  EXPECT_TRUE(node.daemon().Running());
  // The CLI refuses the bad file too; ask by socket instead.
  CommandResult r = RunCommand({BinDir() + "/mycel", "--socket", node.daemon().socket_path(), "status", "--json"},
                               tmp.path());
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto st = ParseJson(r.out);
  ASSERT_TRUE(st.has_value()) << r.out;
  EXPECT_EQ(st->Str("state"), "training") << "the old policy (continue on battery) stays in force";

  EXPECT_EQ(node.daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
