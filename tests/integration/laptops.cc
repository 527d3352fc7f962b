#include "laptops.h"

#include <regex>

#include <gtest/gtest.h>

namespace mycel::it {

Laptop NewLaptop(const std::string& dir, const std::string& name, ConfigSpec spec, bool listen) {
  Laptop l;
  if (listen) {
    l.port = FreePort();
    spec.extra_node = "listen = \"127.0.0.1:" + std::to_string(l.port) + "\"\n" + spec.extra_node;
  }
  l.node = std::make_unique<TestNode>(dir, name, spec);
  WriteFileOrDie(l.node->config_path(), ReadFileOrDie(l.node->config_path()) +
                                            "\n# pairing test: rounds at loopback pace\n[federation]\n"
                                            "round_interval_s = 0.5\n");
  CommandResult id = l.node->Mycel({"id"});
  EXPECT_EQ(id.exit_code, 0) << id.Describe();
  std::smatch m;
  EXPECT_TRUE(std::regex_match(id.out, m, std::regex("(\\S+)\\nfingerprint (\\S+)\\n"))) << id.out;
  if (m.size() == 3) {
    l.key = m[1];
    l.fingerprint = m[2];
  }
  return l;
}

const Json* PeerNamed(const Json& peers, const std::string& name) {
  const Json* list = peers.Find("peers");
  if (list == nullptr) return nullptr;
  for (const Json& p : list->array) {
    if (p.Str("name") == name) return &p;
  }
  return nullptr;
}

}  // namespace mycel::it
