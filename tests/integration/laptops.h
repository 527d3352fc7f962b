// Laptops for the pairing tests (pairing_test.cc, dial_out_test.cc): a node
// with rounds at loopback pace whose `mycel id` has been read.
#pragma once

#include <memory>
#include <string>

#include "harness.h"

namespace mycel::it {

struct Laptop {
  std::unique_ptr<TestNode> node;
  int port = 0;  // its peer port (0: it does not listen on loopback)
  std::string key, fingerprint;
};

// A node that pins no one. With `listen`, it listens on 127.0.0.1 at a free
// port; spec.extra_node comes after that line.
Laptop NewLaptop(const std::string& dir, const std::string& name, ConfigSpec spec = {}, bool listen = true);

// The entry called `name` in `mycel peers --json` output, or null.
const Json* PeerNamed(const Json& peers, const std::string& name);

}  // namespace mycel::it
