// Pairing two laptops that know nothing of each other, as the README says:
// `mycel id` on one, `mycel peers add` on the other, then `mycel peers
// pending` and `accept` on the first; both exchange without a restart and
// without anyone editing a config file. And the refusals around it.
#include <sys/stat.h>

#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "laptops.h"

namespace mycel::it {
namespace {

// Both have accepted at least one update from the other.
bool Exchanged(const Laptop& a, const std::string& name_of_b) {
  auto peers = a.node->MycelJson({"peers"});
  const Json* p = peers ? PeerNamed(*peers, name_of_b) : nullptr;
  return p != nullptr && p->Str("state") == "connected" && p->Num("deltas_accepted") + p->Num("keyframes_accepted") > 0;
}

TEST(PairingTest, TwoStrangersPairWithIdAddPendingAndAcceptAndExchange) {
  TempDir tmp;
  Laptop alice = NewLaptop(tmp.path(), "alice");
  Laptop bob = NewLaptop(tmp.path(), "bob");
  ASSERT_FALSE(alice.key.empty());
  ASSERT_FALSE(bob.key.empty());
  ASSERT_TRUE(alice.node->daemon().Start());
  ASSERT_TRUE(bob.node->daemon().Start());
  ASSERT_EQ(alice.node->Mycel({"ingest", "--labels", "0,1,2,3,4", T10kImages(), T10kLabels()}).exit_code, 0);
  ASSERT_EQ(bob.node->Mycel({"ingest", "--labels", "5,6,7,8,9", T10kImages(), T10kLabels()}).exit_code, 0);

  // Alice pins Bob with what Bob's `mycel id` printed.
  CommandResult add = alice.node->Mycel({"peers", "add", "bob", bob.key, "127.0.0.1:" + std::to_string(bob.port)});
  ASSERT_EQ(add.exit_code, 0) << add.Describe();
  EXPECT_NE(add.out.find("pinned bob (" + bob.fingerprint + ")"), std::string::npos) << add.out;
  const std::string dropin = tmp.path() + "/alice.peers.d/bob.toml";
  EXPECT_TRUE(Exists(dropin));
  EXPECT_EQ(ReadFileOrDie(alice.node->config_path()).find("[[peers]]"), std::string::npos)
      << "the hand-written config was rewritten";

  // `mycel doctor` on Alice says what is missing: Bob has not pinned her.
  CommandResult doctor;
  EXPECT_TRUE(PollUntil(
      [&] {
        doctor = alice.node->Mycel({"doctor"});
        return doctor.out.find("FIX  peer bob") != std::string::npos &&
               doctor.out.find("it has not pinned this node") != std::string::npos;
      },
      60))
      << doctor.Describe();
  EXPECT_EQ(doctor.exit_code, 1) << doctor.Describe();

  // Alice now calls Bob, who does not know her: she is pending there, under
  // her name, her fingerprint and the port she listens on.
  std::optional<Json> pending;
  ASSERT_TRUE(PollUntil(
      [&] {
        pending = bob.node->MycelJson({"peers", "pending"});
        return pending && pending->Find("pending") && !pending->Find("pending")->array.empty();
      },
      60))
      << bob.node->daemon().LogSinceStart();
  const Json& p = pending->Find("pending")->array[0];
  EXPECT_EQ(p.Str("name"), "alice");
  EXPECT_EQ(p.Str("key_fingerprint"), alice.fingerprint);
  EXPECT_EQ(p.Str("public_key"), alice.key);
  EXPECT_EQ(p.Str("address"), "127.0.0.1:" + std::to_string(alice.port));
  EXPECT_TRUE(p.Find("same_model") && p.Find("same_model")->boolean);
  CommandResult table = bob.node->Mycel({"peers", "pending"});
  EXPECT_NE(table.out.find(alice.fingerprint), std::string::npos) << table.out;
  EXPECT_NE(bob.node->Mycel({"peers"}).out.find("1 pending peer(s) asked to pair"), std::string::npos);

  // Bob accepts her by fingerprint; both exchange, no restart.
  CommandResult accept = bob.node->Mycel({"peers", "accept", alice.fingerprint});
  ASSERT_EQ(accept.exit_code, 0) << accept.Describe();
  EXPECT_NE(accept.out.find("pinned alice"), std::string::npos) << accept.out;
  EXPECT_TRUE(PollUntil([&] { return Exchanged(alice, "bob") && Exchanged(bob, "alice"); }, 90))
      << "alice: " << alice.node->Mycel({"peers"}).out << "\nbob: " << bob.node->Mycel({"peers"}).out;
  // Now every check passes, her clock measured from his pulls of her.
  EXPECT_TRUE(PollUntil(
      [&] {
        doctor = alice.node->Mycel({"doctor"});
        return doctor.exit_code == 0 && doctor.out.find("peer bob clock") != std::string::npos;
      },
      60))
      << doctor.Describe();
  for (const char* line : {"OK   config", "OK   disk", "OK   daemon", "OK   version", "OK   power",
                           "OK   peer bob ", "OK   peer bob clock"}) {
    EXPECT_NE(doctor.out.find(line), std::string::npos) << line << " missing: " << doctor.out;
  }
  auto after = bob.node->MycelJson({"peers", "pending"});
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->Find("pending")->array.empty()) << "a pinned peer is still listed as pending";
  EXPECT_GT(alice.node->StatusNum("rounds"), 0);

  // Refusals: the node's own key, a key or a name pinned already, nonsense.
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::string addr = "127.0.0.1:" + std::to_string(FreePort());
  const std::string carol_key = NewLaptop(tmp.path(), "carol").key;
  const std::vector<Case> refused = {
      {{"peers", "add", "me", alice.key, addr}, "that is this node's own key"},
      {{"peers", "add", "bob2", bob.key, addr}, "that key is already pinned as 'bob' at " + dropin},
      {{"peers", "add", "bob", carol_key, addr}, "'bob' is already pinned at " + dropin},
      {{"peers", "add", "x", "not-a-key", addr}, "expected the 44-character public key"},
      {{"peers", "add", "x/y", bob.key, addr}, "use 1-64 of"},
      {{"peers", "add", "x", bob.key, "nowhere"}, "expected host:port"},
      {{"peers", "accept", "nobody"}, "no pending peer named or fingerprinted 'nobody'"},
      {{"peers", "remove", "nobody"}, "no pinned peer named 'nobody'"},
      {{"peers", "add", "zed", carol_key, addr}, "zed.toml exists already"},
  };
  // A hand-written drop-in named like the peer to add: never overwritten.
  WriteFileOrDie(tmp.path() + "/alice.peers.d/zed.toml", "[[peers]]\nname = \"zelda\"\naddress = \"" + addr +
                                                             "\"\npublic_key = \"" +
                                                             NewLaptop(tmp.path(), "dave").key + "\"\n");
  for (const Case& c : refused) {
    CommandResult r = alice.node->Mycel(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_NE(r.err.find(c.says), std::string::npos) << "expected '" << c.says << "': " << r.Describe();
  }
  // A hand-pinned peer is the user's to remove: mycel does not rewrite their file.
  WriteFileOrDie(alice.node->config_path(), ReadFileOrDie(alice.node->config_path()) +
                                                "\n[[peers]]\nname = \"carol\"\naddress = \"" + addr +
                                                "\"\npublic_key = \"" + carol_key + "\"\n");
  CommandResult reload = alice.node->Mycel({"reload"});
  ASSERT_EQ(reload.exit_code, 0) << reload.Describe();
  EXPECT_NE(reload.out.find("3 neighbour(s) pinned"), std::string::npos) << reload.out;  // bob, zelda, carol
  CommandResult hand = alice.node->Mycel({"peers", "remove", "carol"});
  EXPECT_EQ(hand.exit_code, 2) << hand.Describe();
  EXPECT_NE(hand.err.find("which mycel does not rewrite"), std::string::npos) << hand.Describe();

  // A config that pins the node's own key is refused at reload; the running one stays.
  const std::string good = ReadFileOrDie(alice.node->config_path());
  WriteFileOrDie(alice.node->config_path(), good + "\n[[peers]]\nname = \"self\"\naddress = \"" + addr +
                                                "\"\npublic_key = \"" + alice.key + "\"\n");
  reload = alice.node->Mycel({"reload"});
  EXPECT_NE(reload.exit_code, 0) << reload.Describe();
  EXPECT_NE(reload.err.find("has this node's own key"), std::string::npos) << reload.Describe();
  WriteFileOrDie(alice.node->config_path(), good);

  // Removing bob: gone from the list from the next round on.
  CommandResult removed = alice.node->Mycel({"peers", "remove", "bob"});
  ASSERT_EQ(removed.exit_code, 0) << removed.Describe();
  EXPECT_FALSE(Exists(dropin));
  std::optional<Json> peers;
  EXPECT_TRUE(PollUntil(
      [&] {
        peers = alice.node->MycelJson({"peers"});
        return peers && PeerNamed(*peers, "bob") == nullptr && PeerNamed(*peers, "carol") != nullptr;
      },
      30))
      << alice.node->Mycel({"peers"}).out;
  EXPECT_TRUE(alice.node->daemon().Running());
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
  EXPECT_EQ(bob.node->daemon().Stop(), 0);
}

// Two nodes whose models differ are refused both ways, and the refusal says
// which layer differs rather than two bare hashes.
TEST(PairingTest, APeerWithAnotherModelIsRefusedSayingWhichLayerDiffers) {
  TempDir tmp;
  Laptop alice = NewLaptop(tmp.path(), "alice");
  ConfigSpec narrow;
  narrow.extra_model = "hidden = [16]\n";
  Laptop bob = NewLaptop(tmp.path(), "bob", narrow);
  ASSERT_TRUE(alice.node->daemon().Start());
  ASSERT_TRUE(bob.node->daemon().Start());
  ASSERT_EQ(alice.node->Mycel({"peers", "add", "bob", bob.key, "127.0.0.1:" + std::to_string(bob.port)}).exit_code, 0);
  // Bob lists her, and says her model is not his.
  std::optional<Json> pending;
  ASSERT_TRUE(PollUntil(
      [&] {
        pending = bob.node->MycelJson({"peers", "pending"});
        return pending && pending->Find("pending") && !pending->Find("pending")->array.empty();
      },
      60));
  EXPECT_FALSE(pending->Find("pending")->array[0].Find("same_model")->boolean);
  EXPECT_NE(bob.node->Mycel({"peers", "pending"}).out.find("DIFFERENT"), std::string::npos);
  // Bob already has an "alice" (another key, pinned by hand): hers gets a number.
  WriteFileOrDie(bob.node->config_path(), ReadFileOrDie(bob.node->config_path()) +
                                              "\n[[peers]]\nname = \"alice\"\naddress = \"127.0.0.1:" +
                                              std::to_string(FreePort()) + "\"\npublic_key = \"" +
                                              NewLaptop(tmp.path(), "other-alice").key + "\"\n");
  ASSERT_EQ(bob.node->Mycel({"reload"}).exit_code, 0);
  CommandResult accept = bob.node->Mycel({"peers", "accept", "alice"});
  ASSERT_EQ(accept.exit_code, 0) << accept.Describe();
  EXPECT_NE(accept.out.find("pinned alice-2 (" + alice.fingerprint + ")"), std::string::npos) << accept.out;

  // Each refuses the other's answers, naming the layer and both shapes.
  for (Laptop* l : {&alice, &bob}) {
    const std::string other = l == &alice ? "bob" : "alice-2";
    std::string error;
    EXPECT_TRUE(PollUntil(
        [&] {
          auto peers = l->node->MycelJson({"peers"});
          const Json* p = peers ? PeerNamed(*peers, other) : nullptr;
          error = p != nullptr ? p->Str("last_error") : "";
          return error.find("fingerprint_mismatch") != std::string::npos;
        },
        60))
        << l->node->Mycel({"peers"}).out;
    // Seen by this node ("their ..., ours ...") or told by the other ("your ..., mine ...").
    const std::string other_shape = l == &alice ? "[16, 784]" : "[128, 784]";
    const std::string own_shape = l == &alice ? "[128, 784]" : "[16, 784]";
    EXPECT_TRUE(error.find(": their fc0.weight is Float " + other_shape + ", ours Float " + own_shape) !=
                    std::string::npos ||
                error.find(": your fc0.weight is Float " + own_shape + ", mine Float " + other_shape) !=
                    std::string::npos)
        << error;
    EXPECT_EQ(l->node->StatusNum("rounds") > 0, true);
  }
  EXPECT_EQ(alice.node->daemon().Stop(), 0);
  EXPECT_EQ(bob.node->daemon().Stop(), 0);
}

// A node that listens but pins no one trains as a node alone does: rounds
// are skipped and its training is not paced by them.
TEST(PairingTest, AListeningNodeWithoutNeighboursTrainsUnpaced) {
  TempDir tmp;
  // Resting is another reason to stop stepping (an instrumented build, slower
  // per step, converged and rested near 1,800 steps): off, so only pacing could.
  ConfigSpec spec;
  spec.extra_training = "rest = false\n";
  Laptop solo = NewLaptop(tmp.path(), "solo", spec);
  ASSERT_TRUE(solo.node->daemon().Start());
  ASSERT_EQ(solo.node->Mycel({"ingest", T10kImages(), T10kLabels()}).exit_code, 0);
  // Paced, it would stop after its first 40 local steps: no round opens more.
  ASSERT_TRUE(solo.node->WaitForStepsAbove(2000, 120)) << solo.node->daemon().LogSinceStart();
  auto st = solo.node->Status();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->Num("rounds"), 0);
  EXPECT_NE(st->Str("reason"), "waiting for the next merge round");
  EXPECT_EQ(solo.node->daemon().Stop(), 0);
}

}  // namespace
}  // namespace mycel::it
