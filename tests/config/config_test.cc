#include "config/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/test_util.h"

namespace mycel::config {
namespace {

using ::testing::HasSubstr;

// A valid 32-byte key in base64, and a second one.
constexpr char kKeyA[] = "6VRhGa8X9FJHSqqe+tjGMEyYTcWjvWk5tBxiKxnFQgo=";
constexpr char kKeyB[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

void WriteFile(const std::string& path, const std::string& text) {
  ASSERT_TRUE(test::WriteStringToFile(path, text)) << path;
}

// Sets an environment variable for the lifetime of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1); else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1); else ::unsetenv(name_.c_str());
  }
 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Writes `text` to a fresh mycel.toml and loads it.
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::MakeTempDir();
    path_ = dir_ + "/mycel.toml";
  }
  absl::StatusOr<Config> Load(const std::string& text) {
    WriteFile(path_, text);
    return LoadConfig(path_);
  }
  std::string dir_, path_;
};

void ExpectSameOptions(const Config& a, const Config& b) {
  EXPECT_EQ(a.node.name, b.node.name);
  EXPECT_EQ(a.node.state_dir, b.node.state_dir);
  EXPECT_EQ(a.node.listen, b.node.listen);
  EXPECT_EQ(a.node.log_level, b.node.log_level);
  EXPECT_EQ(a.node.discover, b.node.discover);
  EXPECT_EQ(a.model.kind, b.model.kind);
  EXPECT_EQ(a.model.input_shape, b.model.input_shape);
  EXPECT_EQ(a.model.classes, b.model.classes);
  EXPECT_EQ(a.model.hidden, b.model.hidden);
  EXPECT_EQ(a.model.seed, b.model.seed);
  EXPECT_EQ(a.model.path, b.model.path);
  EXPECT_EQ(a.model.local_layers, b.model.local_layers);
  EXPECT_EQ(a.model.context, b.model.context);
  EXPECT_EQ(a.model.embedding, b.model.embedding);
  EXPECT_EQ(a.training.optimizer, b.training.optimizer);
  EXPECT_EQ(a.training.lr, b.training.lr);
  EXPECT_EQ(a.training.lr_decay_steps, b.training.lr_decay_steps);
  EXPECT_EQ(a.training.lr_final, b.training.lr_final);
  EXPECT_EQ(a.training.momentum, b.training.momentum);
  EXPECT_EQ(a.training.batch_size, b.training.batch_size);
  EXPECT_EQ(a.training.validation_fraction, b.training.validation_fraction);
  EXPECT_EQ(a.training.replay_fraction, b.training.replay_fraction);
  EXPECT_EQ(a.training.replay_pool, b.training.replay_pool);
  EXPECT_EQ(a.training.max_examples, b.training.max_examples);
  EXPECT_EQ(a.training.checkpoint_interval_s, b.training.checkpoint_interval_s);
  EXPECT_EQ(a.training.eval_interval_s, b.training.eval_interval_s);
  EXPECT_EQ(a.training.max_eval_examples, b.training.max_eval_examples);
  EXPECT_EQ(a.training.rest, b.training.rest);
  EXPECT_EQ(a.training.rest_patience, b.training.rest_patience);
  EXPECT_EQ(a.training.rest_max_s, b.training.rest_max_s);
  EXPECT_EQ(a.training.drift_guard_drop, b.training.drift_guard_drop);
  EXPECT_EQ(a.training.drift_guard_window, b.training.drift_guard_window);
  EXPECT_EQ(a.policy.threads, b.policy.threads);
  EXPECT_EQ(a.policy.gossip_when_held, b.policy.gossip_when_held);
  EXPECT_EQ(a.node.log_file, b.node.log_file);
  EXPECT_EQ(a.node.log_max_bytes, b.node.log_max_bytes);
  EXPECT_EQ(a.node.log_max_files, b.node.log_max_files);
  EXPECT_EQ(a.node.metrics_listen, b.node.metrics_listen);
  EXPECT_EQ(a.federation.round_interval_s, b.federation.round_interval_s);
  EXPECT_EQ(a.federation.local_steps, b.federation.local_steps);
  EXPECT_EQ(a.federation.merge, b.federation.merge);
  EXPECT_EQ(a.federation.mixing, b.federation.mixing);
  EXPECT_EQ(a.federation.drift_correction, b.federation.drift_correction);
  EXPECT_EQ(a.federation.codec, b.federation.codec);
  EXPECT_EQ(a.federation.max_delta_norm, b.federation.max_delta_norm);
  EXPECT_EQ(a.federation.max_stale_rounds, b.federation.max_stale_rounds);
  EXPECT_EQ(a.federation.pull_timeout_s, b.federation.pull_timeout_s);
  EXPECT_EQ(a.federation.max_backoff_s, b.federation.max_backoff_s);
  EXPECT_EQ(a.policy.pause_on_battery, b.policy.pause_on_battery);
  EXPECT_EQ(a.policy.busy_fraction, b.policy.busy_fraction);
  EXPECT_EQ(a.policy.max_cpu_percent, b.policy.max_cpu_percent);
  EXPECT_EQ(a.policy.idle_only, b.policy.idle_only);
  EXPECT_EQ(a.policy.active_hours, b.policy.active_hours);
  EXPECT_EQ(a.policy.power_supply_dir, b.policy.power_supply_dir);
  ASSERT_EQ(a.peers.size(), b.peers.size());
}

TEST_F(ConfigFileTest, EmptyFileGivesDefaults) {
  auto c = Load("# nothing here\n");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectSameOptions(*c, DefaultConfig());
  EXPECT_EQ(c->path, path_);
  EXPECT_EQ(c->node.state_dir, DefaultStateDir());
  EXPECT_FALSE(c->node.state_dir.empty());
  // Spot-check the documented defaults themselves, not just self-consistency.
  EXPECT_EQ(c->model.kind, "mlp");
  EXPECT_EQ(c->training.lr, 0.05);
  EXPECT_EQ(c->training.batch_size, 64);
  EXPECT_TRUE(c->peers.empty());
}

TEST_F(ConfigFileTest, EmptySectionsGiveDefaults) {
  auto c = Load("[node]\n[model]\n[training]\n");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectSameOptions(*c, DefaultConfig());
}

TEST_F(ConfigFileTest, DiscoverIsOffByDefaultAndNeedsAListener) {
  EXPECT_FALSE(DefaultConfig().node.discover);
  auto c = Load("[node]\nlisten = \"0.0.0.0:7000\"\ndiscover = true\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->node.discover);
}

TEST_F(ConfigFileTest, ReadsEveryKey) {
  std::string ts = dir_ + "/m.pt";
  WriteFile(ts, "not really a module");
  auto c = Load(std::string(R"(
[node]
name = "bob's laptop"
state_dir = "/var/tmp/mycel-x"
listen = "[::1]:7420"
log_level = "debug"
log_file = "logs/myceld.log"
log_max_bytes = 4096
log_max_files = 100
metrics_listen = "127.0.0.1:9464"

[model]
kind = "torchscript"
input_shape = [3, 32, 32]
classes = 100
hidden = [256, 64]
seed = 42
path = "m.pt"
local_layers = ["head.", "norm"]
context = 128
embedding = 16

[training]
optimizer = "adam"
lr = 1
momentum = 0.9
batch_size = 32
validation_fraction = 0.0
replay_fraction = 1.0
replay_pool = "balanced"
max_examples = 100
checkpoint_interval_s = 30
eval_interval_s = 0.5
max_eval_examples = 1
rest = false
rest_patience = 3
rest_max_s = 120
drift_guard_drop = 0.25
drift_guard_window = 7

[policy]
threads = 256
gossip_when_held = false
on_battery = "continue"
active_hours = "22:00-24:00"

[[peers]]
name = "alice"
address = "alice.local:7420"
public_key = ")") + kKeyA + R"("

[[peers]]
name = "carol"
address = "10.0.0.3:1"
public_key = ")" + kKeyB + "\"\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.name, "bob's laptop");
  EXPECT_EQ(c->node.state_dir, "/var/tmp/mycel-x");
  EXPECT_EQ(c->node.listen, "[::1]:7420");
  EXPECT_EQ(c->node.log_level, "debug");
  EXPECT_EQ(c->model.kind, "torchscript");
  EXPECT_EQ(c->model.input_shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(c->model.classes, 100);
  EXPECT_EQ(c->model.hidden, (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(c->model.seed, 42u);
  EXPECT_EQ(c->model.path, ts);
  EXPECT_EQ(c->model.local_layers, (std::vector<std::string>{"head.", "norm"}));
  EXPECT_EQ(c->model.context, 128);
  EXPECT_EQ(c->model.embedding, 16);
  EXPECT_EQ(c->training.optimizer, "adam");
  EXPECT_EQ(c->training.lr, 1.0);  // an integer is accepted where a float is expected
  EXPECT_EQ(c->training.momentum, 0.9);
  EXPECT_EQ(c->training.batch_size, 32);
  EXPECT_EQ(c->training.validation_fraction, 0.0);
  EXPECT_EQ(c->training.replay_fraction, 1.0);
  EXPECT_EQ(c->training.replay_pool, "balanced");
  EXPECT_EQ(c->training.max_examples, 100);
  EXPECT_EQ(c->training.checkpoint_interval_s, 30.0);
  EXPECT_EQ(c->training.eval_interval_s, 0.5);
  EXPECT_EQ(c->training.max_eval_examples, 1);
  EXPECT_FALSE(c->training.rest);
  EXPECT_EQ(c->training.rest_patience, 3);
  EXPECT_EQ(c->training.rest_max_s, 120.0);
  EXPECT_EQ(c->training.drift_guard_drop, 0.25);
  EXPECT_EQ(c->training.drift_guard_window, 7);
  EXPECT_EQ(c->policy.threads, 256);
  EXPECT_FALSE(c->policy.gossip_when_held);
  EXPECT_FALSE(c->policy.pause_on_battery);  // on_battery = "continue"
  EXPECT_EQ(c->policy.active_hours, "22:00-24:00");
  EXPECT_EQ(c->policy.busy_fraction, 0.5);   // no key: train::ResourcePolicyOptions' default
  EXPECT_EQ(c->node.log_file, dir_ + "/logs/myceld.log");
  EXPECT_EQ(c->node.log_max_bytes, 4096);
  EXPECT_EQ(c->node.log_max_files, 100);
  EXPECT_EQ(c->node.metrics_listen, "127.0.0.1:9464");
  ASSERT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->peers[0].name, "alice");
  EXPECT_EQ(c->peers[0].address, "alice.local:7420");
  EXPECT_EQ(c->peers[0].public_key_b64, kKeyA);
  ASSERT_EQ(c->peers[0].public_key.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(c->peers[0].public_key[0]), 0xe9);  // '6V' → 0xe9
  EXPECT_EQ(c->peers[1].public_key, std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"
                                                "\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15"
                                                "\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f",
                                                32));
  EXPECT_EQ(c->SocketPath(), "/var/tmp/mycel-x/control.sock");
  EXPECT_EQ(c->StorePath(), "/var/tmp/mycel-x/examples.db");
  EXPECT_EQ(c->CheckpointDir(), "/var/tmp/mycel-x/checkpoints");
  EXPECT_EQ(c->IdentityPath(), "/var/tmp/mycel-x/identity.key");
}

// One bad setting per case: the message must name the file, the line and the key.
struct BadCase {
  std::string toml;      // the offending setting is always on `line`
  int line;
  std::string key;       // as it appears in the message, e.g. "[training] lr"
  std::string fragment;  // what is wrong
};

std::string PeerToml(const std::string& name, const std::string& address, const std::string& key) {
  return "[[peers]]\nname = \"" + name + "\"\naddress = \"" + address + "\"\npublic_key = \"" +
         key + "\"\n";
}

std::vector<BadCase> BadCases() {
  const std::string hdr = "# mycel\n\n";  // section header on line 3, first setting on line 4
  return {
      // [node]
      {hdr + "[node]\nname = \"\"\n", 4, "[node] name", "must not be empty"},
      {hdr + "[node]\nname = \"a\\tb\"\n", 4, "[node] name", "printable"},
      {hdr + "[node]\nlog_level = \"verbose\"\n", 4, "[node] log_level",
       "must be one of trace, debug, info, warn, error, off (got 'verbose')"},
      {hdr + "[node]\nlisten = \"nohost\"\n", 4, "[node] listen", "host:port"},
      {hdr + "[node]\nlisten = \":7000\"\n", 4, "[node] listen", "host:port"},
      {hdr + "[node]\nlisten = \"h:70000\"\n", 4, "[node] listen", "port must be in"},
      {hdr + "[node]\nlisten = \"h:x1\"\n", 4, "[node] listen", "host:port"},
      {hdr + "[node]\nlisten = \"::1:7000\"\n", 4, "[node] listen", "brackets"},
      {hdr + "[node]\nstate_dir = \"\"\n", 4, "[node] state_dir", "must not be empty"},
      {hdr + "[node]\nstate_dir = \"$MYCEL_SURELY_UNSET_VAR\"\n", 4, "[node] state_dir",
       "expands to an empty path"},
      // [model]
      {hdr + "[model]\nkind = \"rnn\"\n", 4, "[model] kind", "must be one of mlp, cnn, char_lm, torchscript"},
      {hdr + "[model]\ninput_shape = []\n", 4, "[model] input_shape", "must not be empty"},
      {hdr + "[model]\ninput_shape = [1, 0, 28]\n", 4, "[model] input_shape[1]", "must be > 0 (got 0)"},
      {hdr + "[model]\nclasses = 1\n", 4, "[model] classes", "must be >= 2 (got 1)"},
      {hdr + "[model]\nhidden = []\n", 4, "[model] hidden", "must not be empty"},
      {hdr + "[model]\nhidden = [128, -1]\n", 4, "[model] hidden[1]", "must be > 0 (got -1)"},
      {hdr + "[model]\nseed = -1\n", 4, "[model] seed", "must be >= 0"},
      {hdr + "[model]\ncontext = 1\n", 4, "[model] context", "must be in [2, 4096] (got 1)"},
      {hdr + "[model]\ncontext = 4097\n", 4, "[model] context", "must be in [2, 4096] (got 4097)"},
      {hdr + "[model]\nembedding = 0\n", 4, "[model] embedding", "must be > 0"},
      {hdr + "[model]\nlocal_layers = [\"head\", \"\"]\n", 4, "[model] local_layers[1]",
       "must not be empty"},
      {hdr + "[model]\nkind = \"torchscript\"\n", 4, "[model] path", "required when kind"},
      {hdr + "[model]\nkind = \"torchscript\"\npath = \"/nonexistent/m.pt\"\n", 5, "[model] path",
       "/nonexistent/m.pt"},
      // [training]
      {hdr + "[training]\noptimizer = \"rmsprop\"\n", 4, "[training] optimizer", "must be one of sgd, adam"},
      {hdr + "[training]\nlr = -0.1\n", 4, "[training] lr", "must be > 0 (got -0.1)"},
      {hdr + "[training]\nlr = 0\n", 4, "[training] lr", "must be > 0 (got 0)"},
      {hdr + "[training]\nlr = inf\n", 4, "[training] lr", "finite"},
      {hdr + "[training]\nlr = nan\n", 4, "[training] lr", "finite"},
      {hdr + "[training]\nmomentum = 1.0\n", 4, "[training] momentum", "must be in [0, 1) (got 1)"},
      {hdr + "[training]\nmomentum = -0.5\n", 4, "[training] momentum", "must be in [0, 1)"},
      {hdr + "[training]\nmomentum = nan\n", 4, "[training] momentum", "must be in [0, 1)"},
      {hdr + "[training]\nbatch_size = 0\n", 4, "[training] batch_size", "must be in [1, 65536] (got 0)"},
      {hdr + "[training]\nbatch_size = 65537\n", 4, "[training] batch_size", "(got 65537)"},
      {hdr + "[training]\nvalidation_fraction = 0.95\n", 4, "[training] validation_fraction",
       "must be in [0, 0.9] (got 0.95)"},
      {hdr + "[training]\nreplay_fraction = 1.5\n", 4, "[training] replay_fraction", "must be in [0, 1]"},
      {hdr + "[training]\nreplay_fraction = -0.1\n", 4, "[training] replay_fraction", "must be in [0, 1]"},
      {hdr + "[training]\nreplay_pool = \"fifo\"\n", 4, "[training] replay_pool", "must be one of uniform, balanced"},
      {hdr + "[training]\nmax_examples = 99\n", 4, "[training] max_examples", "must be >= 100 (got 99)"},
      {hdr + "[training]\ncheckpoint_interval_s = 0\n", 4, "[training] checkpoint_interval_s", "[0.01, 31536000]"},
      {hdr + "[training]\neval_interval_s = -1\n", 4, "[training] eval_interval_s", "(got -1)"},
      {hdr + "[training]\nmax_eval_examples = 0\n", 4, "[training] max_eval_examples", "must be >= 1"},
      {hdr + "[training]\nrest = 1\n", 4, "[training] rest", "true or false"},
      {hdr + "[training]\nrest_patience = 0\n", 4, "[training] rest_patience", "must be in [1, 1000000]"},
      {hdr + "[training]\nrest_max_s = 1e300\n", 4, "[training] rest_max_s", "[0.01, 31536000]"},
      {hdr + "[training]\ndrift_guard_drop = 1.5\n", 4, "[training] drift_guard_drop", "[0, 1]"},
      {hdr + "[training]\ndrift_guard_drop = nan\n", 4, "[training] drift_guard_drop", "[0, 1]"},
      {hdr + "[training]\ndrift_guard_window = 0\n", 4, "[training] drift_guard_window", "must be in [1, 1000000]"},
      {hdr + "[policy]\nthreads = 0\n", 4, "[policy] threads", "must be in [1, 256]"},
      {hdr + "[policy]\nthreads = 257\n", 4, "[policy] threads", "must be in [1, 256]"},
      {hdr + "[policy]\nthreads = 4294967297\n", 4, "[policy] threads", "must be in [1, 256]"},
      {hdr + "[training]\nthreads = 2\n", 4, "'threads'", "unknown key 'threads' in [training] (moved to [policy] threads)"},
      {hdr + "[policy]\ngossip_when_held = \"no\"\n", 4, "[policy] gossip_when_held", "true or false"},
      {hdr + "[node]\nmetrics_listen = \"0.0.0.0:9464\"\n", 4, "[node] metrics_listen", "loopback"},
      {hdr + "[node]\nmetrics_listen = \"192.168.1.2:9464\"\n", 4, "[node] metrics_listen", "loopback"},
      {hdr + "[node]\nmetrics_listen = \"127.0.0.1\"\n", 4, "[node] metrics_listen", "host:port"},
      {hdr + "[node]\nlog_max_bytes = 100\n", 4, "[node] log_max_bytes", "must be in"},
      {hdr + "[node]\nlog_max_files = 0\n", 4, "[node] log_max_files", "must be in [1, 100]"},
      {hdr + "[node]\nname = \"" + std::string(65, 'n') + "\"\n", 4, "[node] name", "at most 64 bytes (got 65)"},
      // [[peers]]: name on line 4, address on 5, public_key on 6.
      {hdr + PeerToml("", "a:1", kKeyA), 4, "[[peers]] #1 name", "must not be empty"},
      {hdr + PeerToml("a", "a", kKeyA), 5, "[[peers]] #1 address", "host:port"},
      {hdr + PeerToml("a", "a:0", kKeyA), 5, "[[peers]] #1 address", "port must be in [1, 65535]"},
      {hdr + PeerToml("a", "a:65536", kKeyA), 5, "[[peers]] #1 address", "port must be in [1, 65535]"},
      {hdr + PeerToml("a", "a:1", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="), 6,
       "[[peers]] #1 public_key", "decoded to 31 bytes"},
      {hdr + PeerToml("a", "a:1", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISI="), 6,
       "[[peers]] #1 public_key", "decoded to 35 bytes"},
      {hdr + PeerToml("a", "a:1", std::string(kKeyA) + "AAAA"), 6, "[[peers]] #1 public_key",
       "not valid base64"},  // data after the padding
      {hdr + PeerToml("a", "a:1", "not base64!"), 6, "[[peers]] #1 public_key", "not valid base64"},
      {hdr + PeerToml("a", "a:1", "6VRhGa8X9FJHSqqe+tjGMEyYTcWjvWk5tBxiKxnFQgo"), 6,
       "[[peers]] #1 public_key", "not valid base64"},  // padding missing
      {hdr + PeerToml("a", "a:1", std::string(kKeyA) + " "), 6, "[[peers]] #1 public_key",
       "not valid base64"},  // trailing junk
      {hdr + PeerToml("a", "a:1", "") , 6, "[[peers]] #1 public_key", "decoded to 0 bytes"},
      // Duplicates: the second peer (lines 8-11) is the one blamed.
      {hdr + PeerToml("a", "a:1", kKeyA) + "\n" + PeerToml("a", "b:1", kKeyB), 9,
       "[[peers]] #2 name", "'a' is already used by 'a' at "},
      {hdr + PeerToml("a", "a:1", kKeyA) + "\n" + PeerToml("b", "b:1", kKeyA), 11,
       "[[peers]] #2 public_key", "same key as 'a' at "},
      {hdr + "[[peers]]\nname = \"a\"\npublic_key = \"" + kKeyA + "\"\n", 3, "[[peers]] #1",
       "missing key 'address'"},
      {hdr + "[[peers]]\nname = \"a\"\naddress = \"a:1\"\ndials_in = true\npublic_key = \"" + kKeyA + "\"\n", 3,
       "[[peers]] #1", "'address' and 'dials_in = true' both given"},
      {hdr + "[[peers]]\nname = \"a\"\ndials_in = false\npublic_key = \"" + kKeyA + "\"\n", 3, "[[peers]] #1",
       "missing key 'address' (or 'dials_in = true'"},
      {hdr + "[[peers]]\nname = \"a\"\ndials_in = 1\npublic_key = \"" + kKeyA + "\"\n", 5,
       "[[peers]] #1 dials_in", "true or false"},
      {hdr + "[node]\ndial_out = \"yes\"\n", 4, "[node] dial_out", "true or false"},
      {hdr + "[node]\nui_listen = \"0.0.0.0:7071\"\n", 4, "[node] ui_listen", "loopback"},
      {hdr + "[node]\ndiscover = \"yes\"\n", 4, "[node] discover", "true or false"},
      {hdr + "[node]\ndiscover = true\n", 4, "[node] discover", "needs [node] listen"},
      {hdr + "[node]\nlisten = \"0.0.0.0:7000\"\ndial_out = true\ndiscover = true\n", 6, "[node] discover",
       "not with dial_out"},
      {hdr + "[node]\nui_listen = \"192.168.1.2:7071\"\n", 4, "[node] ui_listen", "loopback"},
      {hdr + "[model]\nclasses = 3\nclass_names = [\"a\", \"b\"]\n", 5, "[model] class_names",
       "2 names for 3 classes"},
      {hdr + "[model]\nkind = \"char_lm\"\npersonal_prior = true\n", 5, "[model] personal_prior",
       "only for classifiers"},
      {hdr + "[model]\npersonal_prior = \"yes\"\n", 4, "[model] personal_prior", "true or false"},
      // Unknown keys and sections.
      {hdr + "[training]\nlr = 0.1\nlrr = 0.1\n", 5, "'lrr'", "unknown key 'lrr' in [training]"},
      {hdr + "[node]\nnmae = \"x\"\n", 4, "'nmae'", "unknown key 'nmae' in [node]"},
      {hdr + "[[peers]]\nname = \"a\"\naddress = \"a:1\"\nkey = \"x\"\n", 6, "'key'",
       "unknown key 'key' in [[peers]] #1"},
      {hdr + "[training]\n[training.extra]\nx = 1\n", 4, "'extra'", "unknown key 'extra' in [training]"},
      {hdr + "[telemetry]\nrounds = 3\n", 3, "[telemetry]", "unknown section [telemetry]"},
      {hdr + "[[telemetry]]\nrounds = 3\n", 3, "[telemetry]", "unknown section [telemetry]"},
      {hdr + "[federation]\nrounds = 3\n", 4, "rounds", "unknown key 'rounds' in [federation]"},
      {hdr + "[federation]\nround_interval_s = 0\n", 4, "[federation] round_interval_s", "[0.01, 31536000]"},
      {hdr + "[federation]\nround_interval_s = 1e-300\n", 4, "[federation] round_interval_s", "[0.01, 31536000]"},
      {hdr + "[federation]\nround_interval_s = 1e300\n", 4, "[federation] round_interval_s", "(got 1e+300)"},
      {hdr + "[federation]\npull_timeout_s = 1e300\n", 4, "[federation] pull_timeout_s", "[0.01, 31536000]"},
      {hdr + "[federation]\nmax_backoff_s = nan\n", 4, "[federation] max_backoff_s", "[0.01, 31536000]"},
      {hdr + "[federation]\nlocal_steps = -1\n", 4, "[federation] local_steps", "must be in [0, 1000000]"},
      {hdr + "[federation]\nmerge = \"mean\"\n", 4, "[federation] merge", "metropolis"},
      {hdr + "[federation]\nmixing = 1.5\n", 4, "[federation] mixing", "1.5"},
      {hdr + "[federation]\nmixing = 0\n", 4, "[federation] mixing", "must be > 0"},
      {hdr + "[federation]\ndrift_correction = 1.0\n", 4, "[federation] drift_correction", "must be in [0, 1) (got 1)"},
      {hdr + "[federation]\ndrift_correction = -0.1\n", 4, "[federation] drift_correction", "-0.1"},
      {hdr + "[federation]\ncodec = \"zip\"\n", 4, "[federation] codec", "dense_f32, fp16, int8"},
      {hdr + "[federation]\nmax_stale_rounds = -1\n", 4, "[federation] max_stale_rounds", "must be in [0, 1000000]"},
      {hdr + "[federation]\ntrust = \"yes\"\n", 4, "[federation] trust", "true or false"},
      {hdr + "[federation]\ntrust_every = 0\n", 4, "[federation] trust_every", "must be in [1, 1000000]"},
      {hdr + "[federation]\ntrust_examples = 1000000\n", 4, "[federation] trust_examples", "[1, 65536]"},
      {hdr + "[federation]\ntrust_tolerance = 0\n", 4, "[federation] trust_tolerance", "[0.001, 10]"},
      {hdr + "[federation]\nrobust = \"median\"\ntrust = true\n", 5, "[federation] trust", "robust = none | reject | clip"},
      {hdr + "[federation]\ncodec = \"topk:0\"\n", 4, "[federation] codec", "fraction in (0, 1]"},
      {hdr + "[federation]\ncodec = \"topk:1.5\"\n", 4, "[federation] codec", "topk:1.5"},
      {hdr + "[federation]\ncodec = \"topk:abc\"\n", 4, "[federation] codec", "fraction"},
      {hdr + "[federation]\ncodec = \"topk:0.1+zip\"\n", 4, "[federation] codec", "topk:F+int8"},
      {hdr + "[federation]\nlocal_steps = 1.5\n", 4, "[federation] local_steps", "expected an integer"},
      {hdr + "[policy]\non_battery = \"sometimes\"\n", 4, "[policy] on_battery", "pause"},
      {hdr + "[training]\nlr_decay_steps = 100\n", 3, "[training] lr_final", "must be in (0, lr"},
      {hdr + "[training]\nlr = 0.01\nlr_decay_steps = 100\nlr_final = 0.1\n", 6, "[training] lr_final", "got 0.1"},
      {hdr + "[training]\nlr_decay_steps = -1\n", 4, "[training] lr_decay_steps", "must be in"},
      {hdr + "[policy]\nmax_cpu_percent = 0\n", 4, "[policy] max_cpu_percent", "must be > 0"},
      {hdr + "[policy]\nmax_cpu_percent = 150\n", 4, "[policy] max_cpu_percent", "150"},
      {hdr + "[policy]\nidle_only = 1\n", 4, "[policy] idle_only", "true or false"},
      {hdr + "[policy]\nactive_hours = \"9-17\"\n", 4, "[policy] active_hours", "HH:MM-HH:MM"},
      {hdr + "[policy]\nactive_hours = \"25:00-26:00\"\n", 4, "[policy] active_hours", "HH:MM-HH:MM"},
      {hdr + "[policy]\nactive_hours = \"24:00-08:00\"\n", 4, "[policy] active_hours", "HH:MM-HH:MM"},
      {hdr + "lr = 0.1\n", 3, "'lr'", "unknown top-level key 'lr'"},
      // Type errors.
      {hdr + "[training]\nbatch_size = \"64\"\n", 4, "[training] batch_size",
       "expected an integer, got a string"},
      {hdr + "[training]\nbatch_size = 64.0\n", 4, "[training] batch_size",
       "expected an integer, got a float"},
      {hdr + "[training]\nlr = \"0.1\"\n", 4, "[training] lr", "expected a number, got a string"},
      {hdr + "[training]\nlr = true\n", 4, "[training] lr", "expected a number, got a boolean"},
      {hdr + "[node]\nname = 5\n", 4, "[node] name", "expected a string, got an integer"},
      {hdr + "[model]\nhidden = 128\n", 4, "[model] hidden", "expected an array of integers, got an integer"},
      {hdr + "[model]\nhidden = [128, \"64\"]\n", 4, "[model] hidden[1]",
       "expected an integer, got a string"},
      {hdr + "[model]\ninput_shape = [1, 28.0, 28]\n", 4, "[model] input_shape[1]",
       "expected an integer, got a float"},
      {hdr + "[model]\nlocal_layers = [\"a\", 1]\n", 4, "[model] local_layers[1]",
       "expected a string, got an integer"},
      {hdr + "[model]\nlocal_layers = \"head\"\n", 4, "[model] local_layers",
       "expected an array of strings, got a string"},
      {hdr + "node = 5\n", 3, "[node]", "expected a table, got an integer"},
      {hdr + "[peers]\nname = \"a\"\n", 3, "peers", "expected an array of tables ([[peers]]), got a table"},
      // Syntax error: line of the problem, from toml++.
      {hdr + "[training]\nlr = \n", 4, "syntax error", ""},
  };
}

TEST_F(ConfigFileTest, EveryRuleRejectsWithFileLineAndKey) {
  for (const BadCase& bad : BadCases()) {
    SCOPED_TRACE(bad.toml);
    auto c = Load(bad.toml);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string msg(c.status().message());
    EXPECT_THAT(msg, HasSubstr(path_ + ":" + std::to_string(bad.line) + ":"));
    EXPECT_THAT(msg, HasSubstr(bad.key));
    EXPECT_THAT(msg, HasSubstr(bad.fragment));
  }
}

TEST_F(ConfigFileTest, MessagesReadAsDocumented) {
  auto c = Load("[training]\nbatch_size = 64\n\nlr = -0.1\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), path_ + ":4: [training] lr: must be > 0 (got -0.1)");
  c = Load("[training]\n\nbatch_size = \"x\"\n");
  EXPECT_EQ(c.status().message(),
            path_ + ":3: [training] batch_size: expected an integer, got a string");
  c = Load("# c\n\n\n\n\n[training]\nlrr = 1\n");
  EXPECT_EQ(c.status().message(), path_ + ":7: unknown key 'lrr' in [training]");
}

TEST_F(ConfigFileTest, ReportsTheFirstErrorInFileOrder) {
  // toml++ keeps keys sorted; "momentum" sorts after "batch_size" but comes first in the file.
  auto c = Load("[training]\nmomentum = 2\nbatch_size = 0\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(":2: [training] momentum"));
  c = Load("[training]\nlr = 1\n[model]\nkind = \"x\"\n[federation]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(":4: [model] kind"));
}

TEST_F(ConfigFileTest, RelativePathsResolveAgainstTheConfigDirectory) {
  ASSERT_EQ(::mkdir((dir_ + "/sub").c_str(), 0700), 0);
  const std::string path = dir_ + "/sub/mycel.toml";
  WriteFile(dir_ + "/m.pt", "x");
  WriteFile(path, "[node]\nstate_dir = \"state/\"\n[model]\nkind = \"torchscript\"\npath = \"../m.pt\"\n");
  auto c = LoadConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.state_dir, dir_ + "/sub/state");
  EXPECT_EQ(c->model.path, dir_ + "/m.pt");
  EXPECT_EQ(c->SocketPath(), dir_ + "/sub/state/control.sock");

  // ~ and $VARS are expanded first; the result is used as is when absolute.
  ScopedEnv home("HOME", dir_.c_str());
  ScopedEnv var("MYCEL_TEST_DIR", (dir_ + "/v").c_str());
  WriteFile(path, "[node]\nstate_dir = \"~/s\"\n");
  c = LoadConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.state_dir, dir_ + "/s");
  WriteFile(path, "[node]\nstate_dir = \"${MYCEL_TEST_DIR}/x\"\n");
  c = LoadConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.state_dir, dir_ + "/v/x");

  // A relative config path is made absolute, so relative settings come out absolute too.
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  WriteFile(path, "[node]\nstate_dir = \"st\"\n");
  c = LoadConfig("sub/mycel.toml");
  ASSERT_EQ(::chdir(cwd), 0);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.state_dir, dir_ + "/sub/st");
  EXPECT_EQ(c->path, dir_ + "/sub/mycel.toml");
}

TEST(ConfigTest, ParseConfigResolvesAgainstSourceDirectory) {
  auto c = ParseConfig("[node]\nstate_dir = \"s\"\n", "/etc/mycel/mycel.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->node.state_dir, "/etc/mycel/s");
  EXPECT_EQ(c->path, "/etc/mycel/mycel.toml");
  auto bad = ParseConfig("[node]\nname = 1\n", "/etc/mycel/mycel.toml");
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("/etc/mycel/mycel.toml:2: [node] name"));
}

TEST(ConfigTest, MissingFileIsNotFoundNamingIt) {
  std::string path = test::MakeTempDir() + "/absent.toml";
  auto c = LoadConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path));
}

TEST(ConfigTest, DirectoryOrUnreadableFileIsAnErrorNamingIt) {
  std::string dir = test::MakeTempDir();
  auto c = LoadConfig(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(dir));

  if (::geteuid() == 0) GTEST_SKIP() << "root reads mode-000 files";
  std::string path = dir + "/locked.toml";
  WriteFile(path, "[node]\n");
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  c = LoadConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path));
}

// [federation]'s merge keys have one set of defaults: federation's own.
TEST(ConfigTest, FederationDefaultsAreTheMergesOwn) {
  Config c;
  EXPECT_TRUE(static_cast<const federation::FederationOptions&>(c.federation) == federation::FederationOptions{});
}

TEST(ConfigTest, DefaultPathsFollowXdg) {
  {
    ScopedEnv state("XDG_STATE_HOME", "/xdg/state/");
    ScopedEnv conf("XDG_CONFIG_HOME", "/xdg/conf");
    EXPECT_EQ(DefaultStateDir(), "/xdg/state/mycel");
    EXPECT_EQ(DefaultConfigPath(), "/xdg/conf/mycel/mycel.toml");
    EXPECT_EQ(DefaultConfig().node.state_dir, "/xdg/state/mycel");
    EXPECT_EQ(DefaultConfig().IdentityPath(), "/xdg/state/mycel/identity.key");
    EXPECT_EQ(DefaultConfig().path, "");
  }
  {
    ScopedEnv home("HOME", "/home/u");
    ScopedEnv state("XDG_STATE_HOME", nullptr);
    ScopedEnv conf("XDG_CONFIG_HOME", "relative/ignored");  // XDG: relative values are invalid
    EXPECT_EQ(DefaultStateDir(), "/home/u/.local/state/mycel");
    EXPECT_EQ(DefaultConfigPath(), "/home/u/.config/mycel/mycel.toml");
  }
}

TEST(ConfigTest, PeersListMayBeEmpty) {
  auto c = ParseConfig("peers = []\n", "/x/mycel.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->peers.empty());
}

TEST(ConfigTest, ListenAcceptsNamesAddressesAndPortZero) {
  for (const char* listen : {"0.0.0.0:7420", "localhost:1", "[::]:7420", "my-host.lan:65535",
                             "127.0.0.1:0"}) {
    auto c = ParseConfig(std::string("[node]\nlisten = \"") + listen + "\"\n", "/x/mycel.toml");
    EXPECT_TRUE(c.ok()) << listen << ": " << c.status();
  }
}

const std::string kExample = MYCEL_SOURCE_DIR "/configs/mycel.example.toml";

TEST(ExampleConfigTest, ParsesAndEqualsDefaults) {
  auto c = LoadConfig(kExample);
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectSameOptions(*c, DefaultConfig());  // the example says it behaves like no config at all
}

TEST(ExampleConfigTest, MentionsEveryKey) {
  const std::string text = test::ReadFileToString(kExample);
  for (const char* key :
       {"name", "state_dir", "listen", "log_level", "kind", "input_shape", "classes", "hidden",
        "seed", "path", "local_layers", "context", "embedding", "optimizer", "lr", "momentum",
        "batch_size", "validation_fraction", "replay_fraction", "replay_pool", "max_examples",
        "checkpoint_interval_s", "eval_interval_s", "max_eval_examples", "threads", "address",
        "public_key", "round_interval_s", "local_steps", "merge", "mixing", "drift_correction", "codec", "max_delta_norm", "max_stale_rounds",
        "pull_timeout_s", "max_backoff_s", "on_battery", "max_cpu_percent", "idle_only", "active_hours",
        "power_supply_dir", "lr_decay_steps", "lr_final", "rest", "rest_patience", "rest_max_s", "drift_guard_drop", "drift_guard_window",
        "dial_out", "dials_in", "ui_listen", "metrics_listen", "discover"}) {
    const bool active = text.find("\n" + std::string(key) + " = ") != std::string::npos;
    const bool commented = text.find("\n# " + std::string(key) + " = ") != std::string::npos;
    EXPECT_TRUE(active || commented) << key << " is not in the example config";
  }
  for (const char* section : {"\n[node]\n", "\n[model]\n", "\n[training]\n", "\n[federation]\n",
                              "\n[policy]\n", "\n# [[peers]]\n"}) {
    EXPECT_THAT(text, HasSubstr(section));
  }
}

TEST(ExampleConfigTest, CommentedPeerExampleIsValid) {
  std::string text = test::ReadFileToString(kExample);
  auto at = text.find("# [[peers]]");
  ASSERT_NE(at, std::string::npos);
  std::string tail = text.substr(at);
  std::string uncommented;
  std::istringstream lines(tail);
  for (std::string line; std::getline(lines, line);) {
    uncommented += (line.rfind("# ", 0) == 0 ? line.substr(2) : line) + "\n";
  }
  auto c = ParseConfig(text.substr(0, at) + uncommented, kExample);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->peers[0].public_key.size(), 32u);
  EXPECT_FALSE(c->peers[0].dials_in);
  // The second one dials in: no address.
  EXPECT_TRUE(c->peers[1].dials_in);
  EXPECT_EQ(c->peers[1].address, "");
  EXPECT_EQ(c->peers[1].public_key.size(), 32u);
}

// Peers that `mycel peers add/accept` pinned live in <stem>.peers.d/, one
// file each: they add to the config's own, and a name or key used twice
// anywhere is refused naming both files and lines.
TEST_F(ConfigFileTest, PeersDropInsAddToTheConfigAndClashesNameBothPlaces) {
  EXPECT_EQ(PeersDropInDir(path_), dir_ + "/mycel.peers.d");
  const std::string drop = dir_ + "/mycel.peers.d";
  ASSERT_EQ(::mkdir(drop.c_str(), 0700), 0);
  WriteFile(drop + "/b.toml", PeerToml("b", "b.lan:7000", kKeyB));
  WriteFile(drop + "/notes.txt", "not toml, not read");
  // An editor's lock file (a dangling symlink) and a dangling *.toml: skipped, not fatal.
  ASSERT_EQ(::symlink("nowhere@1234", (drop + "/.#b.toml").c_str()), 0);
  ASSERT_EQ(::symlink("nowhere", (drop + "/dangling.toml").c_str()), 0);
  auto c = Load(PeerToml("a", "a.lan:7000", kKeyA));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->peers.size(), 2u);
  EXPECT_EQ(c->peers[0].name, "a");
  EXPECT_EQ(c->peers[0].where, path_ + ":1");
  EXPECT_EQ(c->peers[1].name, "b");
  EXPECT_EQ(c->peers[1].address, "b.lan:7000");
  EXPECT_EQ(c->peers[1].where, drop + "/b.toml:1");

  // The same key in a drop-in as in the config: refused, naming both.
  WriteFile(drop + "/c.toml", PeerToml("c", "c.lan:7000", kKeyA));
  auto clash = Load(PeerToml("a", "a.lan:7000", kKeyA));
  ASSERT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr(drop + "/c.toml:4: [[peers]] #1 public_key: same key as 'a' at " +
                                                  path_ + ":1"));
  ::unlink((drop + "/c.toml").c_str());
  // The same name.
  WriteFile(drop + "/c.toml", PeerToml("a", "c.lan:7000", "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
  clash = Load(PeerToml("a", "a.lan:7000", kKeyA));
  ASSERT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("c.toml:2: [[peers]] #1 name: 'a' is already used by 'a' at "));
  ::unlink((drop + "/c.toml").c_str());
  // Anything but [[peers]] in a drop-in is refused by name.
  WriteFile(drop + "/c.toml", "[training]\nlr = 1.0\n");
  clash = Load(PeerToml("a", "a.lan:7000", kKeyA));
  ASSERT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("c.toml:1: 'training' in a peers drop-in: only [[peers]]"));
  // A drop-in that is not TOML: file, line and column.
  WriteFile(drop + "/c.toml", "[[peers]\n");
  clash = Load(PeerToml("a", "a.lan:7000", kKeyA));
  ASSERT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("c.toml:1:"));
}

}  // namespace
}  // namespace mycel::config
