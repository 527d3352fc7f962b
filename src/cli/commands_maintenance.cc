// `mycel id`, `mycel repair` and `mycel reset`: the node's files, without a
// daemon (repair and reset need it stopped, and take its lock to be sure).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "cli/commands.h"
#include "crypto/identity.h"
#include "data/example_store.h"
#include "data/repair.h"

namespace mycel::cli {
namespace {

// Holds <state_dir>/myceld.lock, as myceld does while it runs, or fails
// saying the daemon must be stopped first for `what`.
int LockStateDirOrFail(const mycel::config::Config& config, const std::string& what) {
  const std::string lock_path = config.node.state_dir + "/myceld.lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) Fail("cannot open " + lock_path + ": " + std::strerror(errno));
  if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    Fail("myceld is running on " + config.node.state_dir + "; stop it before " + what +
         " (systemctl --user stop myceld)");
  }
  return lock;
}

mycel::data::ExampleStoreOptions StoreOptions(const mycel::config::Config& config, const std::string& path) {
  mycel::data::ExampleStoreOptions options;
  options.path = path;
  options.max_examples = config.training.max_examples;
  options.validation_fraction = config.training.validation_fraction;
  return options;
}

// An earlier repair moved the damaged store aside, then was killed before
// the salvaged one took its place: finish it, if it opens.
int FinishInterruptedRepair(const mycel::config::Config& config, const std::string& store,
                            const std::string& salvaged_path) {
  if (!mycel::data::ExampleStore::Open(StoreOptions(config, salvaged_path)).ok()) {
    Fail(salvaged_path + " is not a whole store (a repair was killed while writing it); move it away and run "
         "`mycel repair` on the damaged copy (examples.db.damaged-*) by renaming it to " + store);
  }
  if (std::rename(salvaged_path.c_str(), store.c_str()) != 0) {
    Fail("cannot put " + salvaged_path + " in place: " + std::strerror(errno));
  }
  std::printf("finished an interrupted repair: %s is in place\n", store.c_str());
  return 0;
}

// Moves the damaged store (and its -wal/-shm) to <store>.damaged-<UTC time>
// and puts the salvaged one at `salvaged_path` in its place; returns where
// the damaged one went.
std::string SwapInSalvaged(const std::string& store, const std::string& salvaged_path) {
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
  const std::string kept = store + ".damaged-" + when;
  // The damaged file's WAL belongs to it: left beside the new store, SQLite
  // would replay it into the wrong database.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string from = store + suffix;
    if (::access(from.c_str(), F_OK) == 0 && std::rename(from.c_str(), (kept + suffix).c_str()) != 0) {
      Fail("cannot move " + from + " aside: " + std::strerror(errno) + "; the salvaged store is at " +
           salvaged_path);
    }
  }
  if (std::rename(salvaged_path.c_str(), store.c_str()) != 0) {
    Fail("cannot put the salvaged store in place: " + std::string(std::strerror(errno)) + "; it is at " +
         salvaged_path + ", the damaged one at " + kept);
  }
  return kept;
}

}  // namespace

void AddIdCommand(CLI::App& app, IdArgs* args) {
  auto* cmd = app.add_subcommand(
      "id", "print this node's public key and its fingerprint, as logs and `mycel peers` show it (no daemon needed)");
  cmd->add_flag("--json", args->json, "print JSON");
}

int RunId(const mycel::config::Config& config, const IdArgs& args) {
  auto id = mycel::crypto::Identity::LoadOrCreate(config.IdentityPath());
  if (!id.ok()) Fail(std::string(id.status().message()));
  if (args.json) {
    PrintJson(Json{{"public_key", (*id)->PublicKeyBase64()}, {"fingerprint", (*id)->Fingerprint()}});
  } else {
    // The key alone on the first line: scripts take it with `head -n1`.
    std::printf("%s\nfingerprint %s\n", (*id)->PublicKeyBase64().c_str(), (*id)->Fingerprint().c_str());
  }
  return 0;
}

void AddRepairCommand(CLI::App& app, RepairArgs* args) {
  auto* cmd = app.add_subcommand(
      "repair", "salvage a damaged example store into a new one, keeping the old file (myceld must be stopped)");
  cmd->add_flag("--force", args->force, "rebuild even a store that opens cleanly");
}

// With myceld stopped (its lock is taken for the duration), copies what
// SQLite can read of the store into <store>.repair-tmp, moves the damaged
// file (and its -wal/-shm) to <store>.damaged-<UTC time>, and puts the new
// store in its place.
int RunRepair(const mycel::config::Config& config, const RepairArgs& args) {
  const std::string store = config.StorePath();
  (void)LockStateDirOrFail(config, "a repair");
  struct stat st;
  const std::string salvaged_path = store + ".repair-tmp";
  if (::stat(store.c_str(), &st) != 0 && ::stat(salvaged_path.c_str(), &st) == 0) {
    return FinishInterruptedRepair(config, store, salvaged_path);
  }
  if (::stat(store.c_str(), &st) != 0) Fail("no example store at " + store + "; nothing to repair");
  {
    auto healthy = mycel::data::ExampleStore::Open(StoreOptions(config, store));
    if (healthy.ok() && !args.force) {
      std::printf("%s opens cleanly (%lld examples); nothing to repair (--force rebuilds it anyway)\n",
                  store.c_str(),
                  static_cast<long long>((*healthy)->Count(mycel::data::Split::kTrain) +
                                         (*healthy)->Count(mycel::data::Split::kValidation)));
      return 0;
    }
    if (!healthy.ok()) std::fprintf(stderr, "%s\n", std::string(healthy.status().message()).c_str());
  }
  const mycel::data::ExampleStoreOptions options = StoreOptions(config, salvaged_path);
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((salvaged_path + suffix).c_str());
  auto salvaged = mycel::data::SalvageStore(store, options);
  if (!salvaged.ok()) {
    for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((salvaged_path + suffix).c_str());
    Fail("repair failed, " + store + " left as it was: " + std::string(salvaged.status().message()));
  }
  const std::string kept = SwapInSalvaged(store, salvaged_path);
  std::printf("salvaged %lld examples (highest id %lld, %lld unreadable ids skipped) and %lld ingest keys into "
              "%s; the damaged store is kept as %s\n",
              static_cast<long long>(salvaged->salvaged), static_cast<long long>(salvaged->highest_id),
              static_cast<long long>(salvaged->unreadable), static_cast<long long>(salvaged->ingest_keys),
              store.c_str(), kept.c_str());
  return 0;
}

void AddResetCommand(CLI::App& app) {
  app.add_subcommand("reset", "start the model afresh: delete its checkpoints, keep the examples (myceld must be stopped)");
}

// The model starts afresh at the next start. Deletes every checkpoint (the
// numbered ones, the drift guard's good one and leftovers of an interrupted
// write), which hold the weights, optimizer and federation state; the
// examples, identity and config stay.
int RunReset(const mycel::config::Config& config) {
  const int lock = LockStateDirOrFail(config, "a reset");
  const std::string dir = config.CheckpointDir();
  std::error_code ec;
  int removed = 0;
  if (std::filesystem::exists(dir, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("ckpt-", 0) != 0 && name.rfind("good.bin", 0) != 0) continue;
      if (!std::filesystem::remove(entry.path(), ec)) {
        Fail("cannot delete " + entry.path().string() + ": " + ec.message() + "; " + std::to_string(removed) +
             " checkpoint file(s) deleted before it");
      }
      ++removed;
    }
    if (ec) Fail("cannot list " + dir + ": " + ec.message());
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // the deletions survive a crash
      ::close(dfd);
    }
  }
  ::close(lock);
  std::printf("deleted %d checkpoint file(s) in %s; myceld starts from a fresh model next time (the examples "
              "stay: `mycel forget --all` deletes them)\n",
              removed, dir.c_str());
  return 0;
}

}  // namespace mycel::cli
