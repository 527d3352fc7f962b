#include "data/example_store.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace mycel::data {
namespace {

// PRAGMA application_id marks a SQLite file as a mycel store ("MYCL" in ASCII),
// so a foreign database is never mistaken for one (sqlite.org/fileformat.html,
// header offset 68). PRAGMA user_version holds the schema version.
constexpr int32_t kApplicationId = 0x4D59434C;
// Version 2 added the ingests table, version 3 each row's content digest and
// ingest (dedupe, `mycel data`, `mycel forget`); older stores are upgraded in
// place, a new one is created as version 1 and upgraded the same way.
constexpr int kSchemaVersion = 3;
// How long a write waits for another connection's lock before failing.
constexpr int kBusyTimeoutMs = 5000;
// Internal meta keys live under this prefix; SetMeta refuses it.
constexpr char kInternalPrefix[] = "_store.";
constexpr char kSeenKey[] = "_store.seen";

// `slot` numbers each split's rows densely 0..count-1 so that a uniformly
// random row is one index lookup away: eviction deletes a random slot and
// moves the last slot into the hole. Ids stay monotonic (AUTOINCREMENT).
constexpr char kSchema[] = R"sql(
CREATE TABLE examples(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  split INTEGER NOT NULL,
  slot INTEGER NOT NULL,
  label INTEGER NOT NULL,
  dtype INTEGER NOT NULL,
  data BLOB NOT NULL);
CREATE INDEX examples_split_id ON examples(split, id);
CREATE UNIQUE INDEX examples_split_slot ON examples(split, slot);
CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
)sql";
// Version 2's addition, created with the rest in a new store and added to a
// version-1 one: the idempotency keys of recent Adds, oldest first by seq.
constexpr char kIngestsTable[] = R"sql(
CREATE TABLE ingests(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  offered INTEGER NOT NULL,
  stored INTEGER NOT NULL,
  evicted INTEGER NOT NULL,
  train INTEGER NOT NULL,
  validation INTEGER NOT NULL);
)sql";
// Version 3's additions. digest is ContentHash (a lookup key: equality is
// decided on the bytes), ingest the batches row of the Add that stored it.
constexpr char kVersion3[] = R"sql(
ALTER TABLE examples ADD COLUMN digest INTEGER NOT NULL DEFAULT 0;
ALTER TABLE examples ADD COLUMN ingest INTEGER NOT NULL DEFAULT 0;
CREATE INDEX examples_digest ON examples(digest);
CREATE INDEX examples_ingest ON examples(ingest);
CREATE TABLE batches(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  added_ms INTEGER NOT NULL,
  source TEXT NOT NULL,
  offered INTEGER NOT NULL,
  duplicates INTEGER NOT NULL);
ALTER TABLE ingests ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
)sql";

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status CheckIngestKey(const std::string& key) {
  if (key.empty() || key.size() > kMaxIngestKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat("ingest key must be 1 to ", kMaxIngestKeyBytes,
                                                   " characters, got ", key.size()));
  }
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          "ingest key may hold only letters, digits and . _ : - (got a byte outside them)");
    }
  }
  return absl::OkStatus();
}

// Refuses, before anything is stored, an example Add could not store as given.
absl::Status CheckExamples(const std::vector<Example>& examples) {
  for (size_t i = 0; i < examples.size(); ++i) {
    const Example& e = examples[i];
    if (e.dtype != DType::kU8 && e.dtype != DType::kF32) {
      return absl::InvalidArgumentError(
          absl::StrCat("example ", i, ": unknown dtype ", static_cast<int>(e.dtype)));
    }
    if (e.dtype == DType::kF32 && e.data.size() % 4 != 0) {
      return absl::InvalidArgumentError(absl::StrCat("example ", i, ": float32 data of ", e.data.size(),
                                                     " bytes is not a multiple of 4"));
    }
  }
  return absl::OkStatus();
}

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

// Resets a statement on scope exit so it never holds a read snapshot or lock.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* s) : s_(s) {}
  ~ResetOnExit() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  sqlite3_stmt* s_;
};

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL: return absl::StatusCode::kResourceExhausted;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return absl::StatusCode::kUnavailable;
    case SQLITE_CORRUPT: return absl::StatusCode::kDataLoss;
    case SQLITE_NOTADB: return absl::StatusCode::kFailedPrecondition;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH: return absl::StatusCode::kPermissionDenied;
    case SQLITE_CANTOPEN: return absl::StatusCode::kNotFound;
    default: return absl::StatusCode::kInternal;
  }
}

// 64-bit FNV-1a (Fowler/Noll/Vo), then MurmurHash3's fmix64 finalizer so the
// high bits used below are well mixed. Persisted implicitly (a row's split
// never changes), so this function must never change.
uint64_t ContentHash(const Example& e) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint8_t b) {
    h ^= b;
    h *= 0x100000001b3ull;
  };
  uint64_t label = static_cast<uint64_t>(e.label);
  for (int i = 0; i < 8; ++i) mix(static_cast<uint8_t>(label >> (8 * i)));
  mix(static_cast<uint8_t>(e.dtype));
  for (char c : e.data) mix(static_cast<uint8_t>(c));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

}  // namespace

struct ExampleStore::Statements {
  Stmt insert;       // (split, slot, label, dtype, data, digest, ingest)
  Stmt find_digest;  // (digest) -> label, dtype, data
  Stmt add_batch;    // (added_ms, source, offered)
  Stmt finish_batch; // (id, duplicates)
  Stmt delete_slot;  // (split, slot)
  Stmt move_slot;    // (split, from_slot, to_slot)
  Stmt read_since;   // (split, after_id, limit)
  Stmt get_meta;     // (key)
  Stmt set_meta;     // (key, value)
  Stmt find_ingest;  // (key)
  Stmt add_ingest;   // (key, offered, stored, evicted, train, validation, duplicates)
  Stmt prune_ingests;  // (keep)
};

ExampleStore::ExampleStore(const ExampleStoreOptions& options)
    : options_(options), rng_(options.seed) {}

ExampleStore::~ExampleStore() {
  stmts_.reset();
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

absl::Status ExampleStore::SqlError(int rc, const std::string& what) const {
  const char* msg = db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
  return absl::Status(CodeFor(rc),
                      absl::StrCat(options_.path, ": ", what, ": ", msg, " (sqlite code ", rc, ")"));
}

absl::Status ExampleStore::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return absl::Status(CodeFor(rc), absl::StrCat(options_.path, ": ", sql, ": ", msg,
                                                " (sqlite code ", rc, ")"));
}

absl::StatusOr<std::unique_ptr<ExampleStore>> ExampleStore::Open(const ExampleStoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("example store: path is empty");
  if (options.max_examples < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("example store: max_examples must be >= 1, got ", options.max_examples));
  }
  if (options.ingest_keys_kept < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("example store: ingest_keys_kept must be >= 1, got ", options.ingest_keys_kept));
  }
  if (!(options.validation_fraction >= 0.0 && options.validation_fraction <= 0.9)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "example store: validation_fraction must be in [0, 0.9], got ", options.validation_fraction));
  }
  std::unique_ptr<ExampleStore> store(new ExampleStore(options));
  std::lock_guard<std::mutex> lock(store->mu_);
  MYCEL_RETURN_IF_ERROR(store->Init());
  return store;
}

namespace {

// A non-empty file at `path` must carry the SQLite header before SQLite
// touches it, so garbage is rejected without any chance of being "repaired".
// *exists: whether there is a file at all.
absl::Status CheckSqliteHeader(const std::string& path, bool* exists) {
  struct stat st;
  *exists = ::stat(path.c_str(), &st) == 0;
  if (!*exists && errno != ENOENT) return ErrnoStatus(errno, "stat", path);
  if (*exists && st.st_size > 0) {
    char header[16] = {};
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return ErrnoStatus(errno, "open", path);
    size_t n = std::fread(header, 1, sizeof header, f);
    std::fclose(f);
    if (n != sizeof header || std::memcmp(header, "SQLite format 3", 16) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": not a mycel example store (not a SQLite database)"));
    }
  }
  return absl::OkStatus();
}

// A failure to read a file's identity that says it is foreign or damaged,
// reworded to say so; other failures as they are.
absl::Status AnnotateForeign(const std::string& path, absl::Status s) {
  if (s.code() != absl::StatusCode::kFailedPrecondition && s.code() != absl::StatusCode::kDataLoss) {
    return s;
  }
  std::string detail(s.message());
  if (detail.rfind(path + ": ", 0) == 0) detail.erase(0, path.size() + 2);
  return absl::Status(s.code(), absl::StrCat(path, ": not a mycel example store or corrupt (", detail, ")"));
}

}  // namespace

absl::Status ExampleStore::Init() {
  const std::string& path = options_.path;
  bool exists = false;
  MYCEL_RETURN_IF_ERROR(CheckSqliteHeader(path, &exists));

  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (exists ? 0 : SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) return SqlError(rc, "cannot open example store");
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);

  // Identify the file before changing anything in it.
  bool fresh = false;
  int64_t user_version = 0;
  MYCEL_RETURN_IF_ERROR(Identify(&fresh, &user_version));
  MYCEL_RETURN_IF_ERROR(EnableWal());
  if (fresh || user_version < kSchemaVersion) {
    MYCEL_RETURN_IF_ERROR(Upgrade(fresh ? 0 : user_version));
    if (!fresh) Logger("data")->info("example store {}: upgraded to schema version {}", path, kSchemaVersion);
  }
  MYCEL_RETURN_IF_ERROR(PrepareStatements());
  MYCEL_RETURN_IF_ERROR(LoadCounts());
  MYCEL_RETURN_IF_ERROR(LoadSeen());
  MYCEL_RETURN_IF_ERROR(TrimToMaxExamples());
  PublishCountsLocked();
  return absl::OkStatus();
}

absl::Status ExampleStore::QueryInt(const char* sql, int64_t* out) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr);
  Stmt s(raw);
  if (rc != SQLITE_OK) return SqlError(rc, sql);
  rc = sqlite3_step(s.get());
  if (rc != SQLITE_ROW) return SqlError(rc, sql);
  *out = sqlite3_column_int64(s.get(), 0);
  return absl::OkStatus();
}

absl::Status ExampleStore::Identify(bool* fresh, int64_t* user_version) {
  const std::string& path = options_.path;
  int64_t app_id = 0, objects = 0;
  *user_version = 0;
  if (auto s = QueryInt("PRAGMA application_id", &app_id); !s.ok()) return AnnotateForeign(path, s);
  if (auto s = QueryInt("PRAGMA user_version", user_version); !s.ok()) return AnnotateForeign(path, s);
  if (auto s = QueryInt("SELECT count(*) FROM sqlite_master", &objects); !s.ok()) {
    return AnnotateForeign(path, s);
  }

  *fresh = objects == 0 && app_id == 0 && *user_version == 0;
  if (*fresh) return absl::OkStatus();
  if (app_id != kApplicationId) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": not a mycel example store (a SQLite database with ", objects,
        " schema objects and application_id ", app_id, "); refusing to modify it"));
  }
  if (*user_version > kSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": example store has schema version ", *user_version,
                     " but this mycel reads version ", kSchemaVersion, " (written by a newer mycel?)"));
  }
  if (*user_version < 1) {
    return absl::DataLossError(
        absl::StrCat(path, ": example store has no valid schema version (", *user_version, ")"));
  }
  return absl::OkStatus();
}

absl::Status ExampleStore::EnableWal() {
  // journal_mode=WAL is persistent in the file; synchronous is per connection.
  // WAL + FULL: a commit returns only after the WAL is fsynced (sqlite.org/wal.html).
  {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    Stmt s(raw);
    if (rc != SQLITE_OK) return SqlError(rc, "PRAGMA journal_mode=WAL");
    rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) return SqlError(rc, "PRAGMA journal_mode=WAL");
    std::string mode = reinterpret_cast<const char*>(sqlite3_column_text(s.get(), 0));
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat(options_.path, ": cannot switch the example store to WAL mode (got '", mode, "')"));
    }
  }
  return Exec("PRAGMA synchronous=FULL");
}

absl::Status ExampleStore::PrepareStatements() {
  auto prepare = [this](const char* sql, Stmt* out) -> absl::Status {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    out->reset(raw);
    if (rc != SQLITE_OK) return SqlError(rc, absl::StrCat("preparing '", sql, "'"));
    return absl::OkStatus();
  };
  stmts_ = std::make_unique<Statements>();
  MYCEL_RETURN_IF_ERROR(prepare(
      "INSERT INTO examples(split, slot, label, dtype, data, digest, ingest) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      &stmts_->insert));
  MYCEL_RETURN_IF_ERROR(prepare("SELECT label, dtype, data FROM examples WHERE digest = ?1", &stmts_->find_digest));
  MYCEL_RETURN_IF_ERROR(prepare("INSERT INTO batches(added_ms, source, offered, duplicates) VALUES(?1, ?2, ?3, 0)",
                                &stmts_->add_batch));
  MYCEL_RETURN_IF_ERROR(prepare("UPDATE batches SET duplicates = ?2 WHERE id = ?1", &stmts_->finish_batch));
  MYCEL_RETURN_IF_ERROR(
      prepare("DELETE FROM examples WHERE split = ?1 AND slot = ?2", &stmts_->delete_slot));
  MYCEL_RETURN_IF_ERROR(prepare("UPDATE examples SET slot = ?3 WHERE split = ?1 AND slot = ?2",
                                &stmts_->move_slot));
  MYCEL_RETURN_IF_ERROR(prepare(
      "SELECT id, label, dtype, data FROM examples WHERE split = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
      &stmts_->read_since));
  MYCEL_RETURN_IF_ERROR(prepare("SELECT value FROM meta WHERE key = ?1", &stmts_->get_meta));
  MYCEL_RETURN_IF_ERROR(
      prepare("INSERT OR REPLACE INTO meta(key, value) VALUES(?1, ?2)", &stmts_->set_meta));
  MYCEL_RETURN_IF_ERROR(prepare(
      "SELECT offered, stored, evicted, train, validation, duplicates FROM ingests WHERE key = ?1",
      &stmts_->find_ingest));
  MYCEL_RETURN_IF_ERROR(prepare(
      "INSERT INTO ingests(key, offered, stored, evicted, train, validation, duplicates) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
      &stmts_->add_ingest));
  return prepare("DELETE FROM ingests WHERE seq <= (SELECT max(seq) FROM ingests) - ?1", &stmts_->prune_ingests);
}

absl::Status ExampleStore::LoadCounts() {
  // Row counts per split; dense slots make max(slot) + 1 the count, and a
  // mismatch means the file was edited behind our back.
  for (int split = 0; split < 2; ++split) {
    int64_t n = 0, max_slot = 0;
    std::string q = absl::StrCat("SELECT count(*), coalesce(max(slot), -1) FROM examples WHERE split = ",
                                 split);
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_, q.c_str(), -1, &raw, nullptr);
    Stmt s(raw);
    if (rc != SQLITE_OK) return SqlError(rc, "counting examples");
    rc = sqlite3_step(s.get());
    if (rc != SQLITE_ROW) return SqlError(rc, "counting examples");
    n = sqlite3_column_int64(s.get(), 0);
    max_slot = sqlite3_column_int64(s.get(), 1);
    if (max_slot + 1 != n) {
      return absl::DataLossError(absl::StrCat(options_.path, ": example store is inconsistent: split ", split,
                                              " has ", n, " rows but slots up to ", max_slot));
    }
    count_[split] = n;
  }
  return absl::OkStatus();
}

absl::Status ExampleStore::LoadSeen() {
  {
    sqlite3_stmt* s = stmts_->get_meta.get();
    ResetOnExit reset(s);
    sqlite3_bind_text(s, 1, kSeenKey, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
      std::string v(reinterpret_cast<const char*>(sqlite3_column_blob(s, 0)),
                    static_cast<size_t>(sqlite3_column_bytes(s, 0)));
      seen_ = std::strtoll(v.c_str(), nullptr, 10);
    } else if (rc != SQLITE_DONE) {
      return SqlError(rc, "reading the reservoir count");
    }
  }
  seen_ = std::max(seen_, count_[0] + count_[1]);
  // Do not replay the same random stream after every restart.
  rng_.seed(options_.seed ^ (static_cast<uint64_t>(seen_) * 0x9e3779b97f4a7c15ull));
  return absl::OkStatus();
}

absl::Status ExampleStore::TrimToMaxExamples() {
  // A smaller max_examples than last time: trim uniformly, once.
  int64_t excess = count_[0] + count_[1] - options_.max_examples;
  if (excess <= 0) return absl::OkStatus();
  absl::Status s = TransactLocked([&]() -> absl::Status {
    for (int64_t i = 0; i < excess; ++i) {
      // Evict from splits in proportion to their size, as uniform eviction would.
      int64_t total = count_[0] + count_[1];
      int split = std::uniform_int_distribution<int64_t>(0, total - 1)(rng_) < count_[0] ? 0 : 1;
      MYCEL_RETURN_IF_ERROR(Evict(split));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return Annotate(s, "trimming the example store to max_examples");
  Logger("data")->info("example store {}: trimmed {} examples to honour max_examples={}", options_.path, excess,
                       options_.max_examples);
  return absl::OkStatus();
}

absl::Status ExampleStore::Upgrade(int64_t from_version) {
  absl::Status s = TransactLocked([&]() -> absl::Status {
    if (from_version < 1) MYCEL_RETURN_IF_ERROR(Exec(kSchema));
    if (from_version < 2) MYCEL_RETURN_IF_ERROR(Exec(kIngestsTable));
    if (from_version < 3) {
      MYCEL_RETURN_IF_ERROR(Exec(kVersion3));
      // Rows stored before version 3 get their digest, and one ingest that
      // says what it is; duplicates among them stay (nothing is removed on
      // an upgrade), later Adds are checked against them.
      if (from_version >= 1) {
        sqlite3_stmt* raw = nullptr;
        int rc = sqlite3_prepare_v2(db_, "SELECT count(*) FROM examples", -1, &raw, nullptr);
        Stmt count(raw);
        if (rc != SQLITE_OK || sqlite3_step(count.get()) != SQLITE_ROW) return SqlError(rc, "counting examples");
        const int64_t rows = sqlite3_column_int64(count.get(), 0);
        if (rows > 0) {
          std::string add = absl::StrCat(
              "INSERT INTO batches(added_ms, source, offered, duplicates) VALUES(", NowUnixMs(),
              ", 'stored before this version of mycel', ", rows, ", 0)");
          MYCEL_RETURN_IF_ERROR(Exec(add.c_str()));
          const int64_t ingest = sqlite3_last_insert_rowid(db_);
          rc = sqlite3_prepare_v2(db_, "SELECT id, label, dtype, data FROM examples", -1, &raw, nullptr);
          Stmt read(raw);
          if (rc != SQLITE_OK) return SqlError(rc, "reading examples to upgrade");
          rc = sqlite3_prepare_v2(db_, "UPDATE examples SET digest = ?2, ingest = ?3 WHERE id = ?1", -1, &raw,
                                  nullptr);
          Stmt update(raw);
          if (rc != SQLITE_OK) return SqlError(rc, "upgrading examples");
          while ((rc = sqlite3_step(read.get())) == SQLITE_ROW) {
            Example e;
            e.label = sqlite3_column_int64(read.get(), 1);
            e.dtype = static_cast<DType>(sqlite3_column_int(read.get(), 2));
            const int bytes = sqlite3_column_bytes(read.get(), 3);
            if (bytes > 0) {
              e.data.assign(static_cast<const char*>(sqlite3_column_blob(read.get(), 3)), static_cast<size_t>(bytes));
            }
            sqlite3_bind_int64(update.get(), 1, sqlite3_column_int64(read.get(), 0));
            sqlite3_bind_int64(update.get(), 2, static_cast<int64_t>(ContentHash(e)));
            sqlite3_bind_int64(update.get(), 3, ingest);
            const int urc = sqlite3_step(update.get());
            sqlite3_reset(update.get());
            if (urc != SQLITE_DONE) return SqlError(urc, "upgrading examples");
          }
          if (rc != SQLITE_DONE) return SqlError(rc, "reading examples to upgrade");
        }
      }
    }
    if (from_version < 1) MYCEL_RETURN_IF_ERROR(Exec(absl::StrCat("PRAGMA application_id=", kApplicationId).c_str()));
    return Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str());
  });
  if (!s.ok()) {
    return Annotate(s, from_version < 1 ? std::string("creating the example store schema")
                                        : absl::StrCat("upgrading the example store from schema version ",
                                                       from_version, " to ", kSchemaVersion));
  }
  return absl::OkStatus();
}

absl::Status ExampleStore::TransactLocked(const std::function<absl::Status()>& body) {
  const int64_t saved_seen = seen_;
  const int64_t saved_count[2] = {count_[0], count_[1]};
  MYCEL_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status s = body();
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) {
    // SQLite may already have rolled back on its own (e.g. after SQLITE_FULL).
    if (!sqlite3_get_autocommit(db_)) Exec("ROLLBACK").IgnoreError();
    seen_ = saved_seen;
    count_[0] = saved_count[0];
    count_[1] = saved_count[1];
  }
  return s;
}

void ExampleStore::PublishCountsLocked() {
  committed_[0].store(count_[0], std::memory_order_relaxed);
  committed_[1].store(count_[1], std::memory_order_relaxed);
}

Split ExampleStore::SplitOf(const Example& example, double validation_fraction) {
  // Top 53 bits → a double uniform in [0, 1).
  double u = static_cast<double>(ContentHash(example) >> 11) * 0x1.0p-53;
  return u < validation_fraction ? Split::kValidation : Split::kTrain;
}

absl::Status ExampleStore::Evict(int split) {
  int64_t n = count_[split];
  if (n <= 0) return absl::InternalError("example store: evicting from an empty split");
  int64_t victim = std::uniform_int_distribution<int64_t>(0, n - 1)(rng_);
  {
    sqlite3_stmt* s = stmts_->delete_slot.get();
    ResetOnExit reset(s);
    sqlite3_bind_int(s, 1, split);
    sqlite3_bind_int64(s, 2, victim);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return SqlError(rc, "evicting an example");
    if (sqlite3_changes(db_) != 1) {
      return absl::DataLossError(absl::StrCat(options_.path, ": example store is inconsistent: no row in slot ",
                                              victim, " of split ", split));
    }
  }
  if (victim != n - 1) {
    sqlite3_stmt* s = stmts_->move_slot.get();
    ResetOnExit reset(s);
    sqlite3_bind_int(s, 1, split);
    sqlite3_bind_int64(s, 2, n - 1);
    sqlite3_bind_int64(s, 3, victim);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return SqlError(rc, "evicting an example");
    if (sqlite3_changes(db_) != 1) {
      return absl::DataLossError(absl::StrCat(options_.path, ": example store is inconsistent: no row in slot ",
                                              n - 1, " of split ", split));
    }
  }
  count_[split] = n - 1;
  return absl::OkStatus();
}

absl::Status ExampleStore::InsertRow(const Example& example, int split, uint64_t digest, int64_t ingest) {
  sqlite3_stmt* s = stmts_->insert.get();
  ResetOnExit reset(s);
  sqlite3_bind_int(s, 1, split);
  sqlite3_bind_int64(s, 2, count_[split]);
  sqlite3_bind_int64(s, 3, example.label);
  sqlite3_bind_int(s, 4, static_cast<int>(example.dtype));
  sqlite3_bind_blob64(s, 5, example.data.data(), example.data.size(), SQLITE_STATIC);
  sqlite3_bind_int64(s, 6, static_cast<int64_t>(digest));
  sqlite3_bind_int64(s, 7, ingest);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, "storing an example");
  ++count_[split];
  return absl::OkStatus();
}

absl::StatusOr<bool> ExampleStore::StoredLocked(const Example& example, uint64_t digest) {
  sqlite3_stmt* s = stmts_->find_digest.get();
  ResetOnExit reset(s);
  sqlite3_bind_int64(s, 1, static_cast<int64_t>(digest));
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const auto bytes = static_cast<size_t>(sqlite3_column_bytes(s, 2));
    const void* blob = sqlite3_column_blob(s, 2);
    if (sqlite3_column_int64(s, 0) == example.label && sqlite3_column_int(s, 1) == static_cast<int>(example.dtype) &&
        bytes == example.data.size() && (bytes == 0 || std::memcmp(blob, example.data.data(), bytes) == 0)) {
      return true;
    }
  }
  if (rc != SQLITE_DONE) return SqlError(rc, "looking for an equal stored example");
  return false;
}

absl::Status ExampleStore::SaveSeenLocked() {
  std::string v = std::to_string(seen_);
  sqlite3_stmt* s = stmts_->set_meta.get();
  ResetOnExit reset(s);
  sqlite3_bind_text(s, 1, kSeenKey, -1, SQLITE_STATIC);
  sqlite3_bind_blob(s, 2, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, "recording the reservoir count");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<AddResult>> ExampleStore::FindIngestLocked(const std::string& key) {
  sqlite3_stmt* s = stmts_->find_ingest.get();
  ResetOnExit reset(s);
  sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<AddResult>();
  if (rc != SQLITE_ROW) return SqlError(rc, "looking up an ingest key");
  AddResult r;
  r.offered = sqlite3_column_int64(s, 0);
  r.stored = sqlite3_column_int64(s, 1);
  r.evicted = sqlite3_column_int64(s, 2);
  r.train = sqlite3_column_int64(s, 3);
  r.validation = sqlite3_column_int64(s, 4);
  r.duplicates = sqlite3_column_int64(s, 5);
  r.replayed = true;
  return std::optional<AddResult>(r);
}

absl::Status ExampleStore::RecordIngestLocked(const std::string& key, const AddResult& result) {
  {
    sqlite3_stmt* s = stmts_->add_ingest.get();
    ResetOnExit reset(s);
    sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, result.offered);
    sqlite3_bind_int64(s, 3, result.stored);
    sqlite3_bind_int64(s, 4, result.evicted);
    sqlite3_bind_int64(s, 5, result.train);
    sqlite3_bind_int64(s, 6, result.validation);
    sqlite3_bind_int64(s, 7, result.duplicates);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE) return SqlError(rc, "recording the ingest key");
  }
  sqlite3_stmt* s = stmts_->prune_ingests.get();
  ResetOnExit reset(s);
  sqlite3_bind_int64(s, 1, options_.ingest_keys_kept);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, "forgetting old ingest keys");
  return absl::OkStatus();
}

absl::Status ExampleStore::RememberIngest(const std::string& key, const AddResult& result) {
  MYCEL_RETURN_IF_ERROR(CheckIngestKey(key));
  std::lock_guard<std::mutex> lock(mu_);
  MYCEL_ASSIGN_OR_RETURN(std::optional<AddResult> known, FindIngestLocked(key));
  if (known) return absl::OkStatus();
  return TransactLocked([&] { return RecordIngestLocked(key, result); });
}

absl::StatusOr<std::optional<AddResult>> ExampleStore::FindIngest(const std::string& key) {
  MYCEL_RETURN_IF_ERROR(CheckIngestKey(key));
  std::lock_guard<std::mutex> lock(mu_);
  return FindIngestLocked(key);
}

absl::StatusOr<int64_t> ExampleStore::AddBatchLocked(const std::string& source, int64_t offered) {
  sqlite3_stmt* s = stmts_->add_batch.get();
  ResetOnExit reset(s);
  const std::string name = source.substr(0, kMaxSourceBytes);
  sqlite3_bind_int64(s, 1, NowUnixMs());
  sqlite3_bind_text(s, 2, name.data(), static_cast<int>(name.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, offered);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, "recording the ingest");
  return sqlite3_last_insert_rowid(db_);
}

absl::Status ExampleStore::FinishBatchLocked(int64_t batch, int64_t duplicates) {
  sqlite3_stmt* s = stmts_->finish_batch.get();
  ResetOnExit reset(s);
  sqlite3_bind_int64(s, 1, batch);
  sqlite3_bind_int64(s, 2, duplicates);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, "recording the ingest");
  return absl::OkStatus();
}

absl::Status ExampleStore::AddOneLocked(const Example& e, int64_t batch, AddResult* result) {
  const uint64_t digest = ContentHash(e);
  MYCEL_ASSIGN_OR_RETURN(bool stored, StoredLocked(e, digest));
  if (stored) {
    ++result->duplicates;
    return absl::OkStatus();
  }
  ++seen_;
  int split = static_cast<int>(SplitOf(e, options_.validation_fraction));
  if (count_[0] + count_[1] >= options_.max_examples) {
    // Algorithm R (Vitter 1985): the seen_-th item enters with probability max/seen_.
    int64_t j = std::uniform_int_distribution<int64_t>(0, seen_ - 1)(rng_);
    if (j >= options_.max_examples) return absl::OkStatus();
    // Replace within the incoming split so the train/validation balance stays as hashed.
    MYCEL_RETURN_IF_ERROR(Evict(count_[split] > 0 ? split : 1 - split));
    ++result->evicted;
  }
  MYCEL_RETURN_IF_ERROR(InsertRow(e, split, digest, batch));
  ++result->stored;
  ++(split == 0 ? result->train : result->validation);
  return absl::OkStatus();
}

absl::StatusOr<AddResult> ExampleStore::Add(const std::vector<Example>& examples,
                                            const AddProgressFn& progress, const std::string& key,
                                            const std::string& source) {
  if (!key.empty()) MYCEL_RETURN_IF_ERROR(CheckIngestKey(key));
  AddResult result;
  result.offered = static_cast<int64_t>(examples.size());
  if (examples.empty() && key.empty()) return result;
  MYCEL_RETURN_IF_ERROR(CheckExamples(examples));

  std::lock_guard<std::mutex> lock(mu_);
  if (!key.empty()) {
    MYCEL_ASSIGN_OR_RETURN(std::optional<AddResult> earlier, FindIngestLocked(key));
    if (earlier.has_value()) return *earlier;
  }
  absl::Status s = TransactLocked([&]() -> absl::Status {
    const int64_t total = static_cast<int64_t>(examples.size());
    int64_t ingest = 0;
    if (total > 0) {
      MYCEL_ASSIGN_OR_RETURN(ingest, AddBatchLocked(source, total));
    }
    for (int64_t done = 0; done < total; ++done) {
      if (progress && done > 0 && done % kAddProgressEvery == 0 && !progress(done, total)) {
        return absl::CancelledError(absl::StrCat("cancelled after ", done, " of ", total, " examples"));
      }
      MYCEL_RETURN_IF_ERROR(AddOneLocked(examples[static_cast<size_t>(done)], ingest, &result));
    }
    if (ingest != 0 && result.duplicates > 0) MYCEL_RETURN_IF_ERROR(FinishBatchLocked(ingest, result.duplicates));
    MYCEL_RETURN_IF_ERROR(SaveSeenLocked());
    if (!key.empty()) MYCEL_RETURN_IF_ERROR(RecordIngestLocked(key, result));
    if (progress && total > 0 && !progress(total, total)) {
      return absl::CancelledError(absl::StrCat("cancelled after all ", total, " examples, before the commit"));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return Annotate(s, absl::StrCat("adding ", examples.size(), " examples"));
  PublishCountsLocked();
  return result;
}

absl::Status ExampleStore::RenumberSlots(int split) {
  // Slots [0, n) must be taken again: rows above n move into the holes below.
  const int64_t n = count_[split];
  std::vector<bool> taken(static_cast<size_t>(n), false);
  std::vector<int64_t> movers;  // ids of rows at slot >= n
  {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_, "SELECT id, slot FROM examples WHERE split = ?1", -1, &raw, nullptr);
    Stmt s(raw);
    if (rc != SQLITE_OK) return SqlError(rc, "renumbering examples");
    sqlite3_bind_int(s.get(), 1, split);
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      const int64_t slot = sqlite3_column_int64(s.get(), 1);
      if (slot >= 0 && slot < n) {
        taken[static_cast<size_t>(slot)] = true;
      } else {
        movers.push_back(sqlite3_column_int64(s.get(), 0));
      }
    }
    if (rc != SQLITE_DONE) return SqlError(rc, "renumbering examples");
  }
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, "UPDATE examples SET slot = ?2 WHERE id = ?1", -1, &raw, nullptr);
  Stmt move(raw);
  if (rc != SQLITE_OK) return SqlError(rc, "renumbering examples");
  size_t next = 0;
  for (int64_t hole = 0; hole < n; ++hole) {
    if (taken[static_cast<size_t>(hole)]) continue;
    if (next >= movers.size()) {
      return absl::DataLossError(absl::StrCat(options_.path, ": example store is inconsistent: split ", split,
                                              " has a hole at slot ", hole, " and no row to fill it"));
    }
    sqlite3_bind_int64(move.get(), 1, movers[next++]);
    sqlite3_bind_int64(move.get(), 2, hole);
    rc = sqlite3_step(move.get());
    sqlite3_reset(move.get());
    if (rc != SQLITE_DONE) return SqlError(rc, "renumbering examples");
  }
  return absl::OkStatus();
}

absl::StatusOr<ForgetResult> ExampleStore::Forget(const ForgetFilter& filter) {
  if (!filter.all && !filter.label && !filter.before_unix_ms && !filter.ingest) {
    return absl::InvalidArgumentError("forget: say what to forget (all, a label, a time or an ingest)");
  }
  std::string where = "1";
  if (!filter.all) {
    if (filter.label) absl::StrAppend(&where, " AND label = ", *filter.label);
    if (filter.before_unix_ms) {
      absl::StrAppend(&where, " AND ingest IN (SELECT id FROM batches WHERE added_ms < ", *filter.before_unix_ms, ")");
    }
    if (filter.ingest) absl::StrAppend(&where, " AND ingest = ", *filter.ingest);
  }
  std::lock_guard<std::mutex> lock(mu_);
  ForgetResult result;
  // secure_delete overwrites freed pages with zeros; the WAL still holds the
  // old pages until a checkpoint copies the new ones back and truncates it.
  MYCEL_RETURN_IF_ERROR(Exec("PRAGMA secure_delete=ON"));
  absl::Status s = TransactLocked([&]() -> absl::Status {
    for (int split = 0; split < 2; ++split) {
      const std::string del = absl::StrCat("DELETE FROM examples WHERE split = ", split, " AND ", where);
      MYCEL_RETURN_IF_ERROR(Exec(del.c_str()));
      const int64_t removed = sqlite3_changes64(db_);
      (split == 0 ? result.train : result.validation) = removed;
      count_[split] -= removed;
      if (removed > 0) MYCEL_RETURN_IF_ERROR(RenumberSlots(split));
    }
    MYCEL_RETURN_IF_ERROR(Exec("DELETE FROM batches WHERE id NOT IN (SELECT DISTINCT ingest FROM examples)"));
    // Forgotten rows count as never offered, so the reservoir does not hold
    // the next examples back on their account.
    seen_ = std::max(count_[0] + count_[1], seen_ - result.train - result.validation);
    return SaveSeenLocked();
  });
  if (!s.ok()) {
    Exec("PRAGMA secure_delete=OFF").IgnoreError();
    return Annotate(s, "forgetting examples");
  }
  PublishCountsLocked();
  if (result.train + result.validation > 0) generation_.fetch_add(1, std::memory_order_acq_rel);
  absl::Status wiped = Exec("PRAGMA wal_checkpoint(TRUNCATE)");
  Exec("PRAGMA secure_delete=OFF").IgnoreError();
  if (!wiped.ok()) {
    // Committed all the same; the next checkpoint overwrites the old pages.
    Logger("data")->warn("forgot {} examples; the write-ahead log is not truncated yet: {}",
                         result.train + result.validation, wiped.message());
  }
  return result;
}

absl::Status ExampleStore::QueryRows(const char* sql, const std::function<void(sqlite3_stmt*)>& row) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr);
  Stmt s(raw);
  if (rc != SQLITE_OK) return SqlError(rc, "summarizing the store");
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) row(s.get());
  if (rc != SQLITE_DONE) return SqlError(rc, "summarizing the store");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LabelCount>> ExampleStore::CountLabelsLocked() {
  std::vector<LabelCount> out;
  MYCEL_RETURN_IF_ERROR(QueryRows("SELECT label, sum(split = 0), sum(split = 1) FROM examples GROUP BY label ORDER BY label",
                                  [&](sqlite3_stmt* s) {
                                    LabelCount c;
                                    c.label = sqlite3_column_int64(s, 0);
                                    c.train = sqlite3_column_int64(s, 1);
                                    c.validation = sqlite3_column_int64(s, 2);
                                    out.push_back(c);
                                  }));
  return out;
}

absl::StatusOr<std::vector<LabelCount>> ExampleStore::CountLabels() {
  std::lock_guard<std::mutex> lock(mu_);
  return CountLabelsLocked();
}

absl::StatusOr<DataSummary> ExampleStore::Summarize(int64_t max_ingests) {
  DataSummary out;
  std::lock_guard<std::mutex> lock(mu_);
  auto query = [this](const char* sql, const std::function<void(sqlite3_stmt*)>& row) { return QueryRows(sql, row); };
  MYCEL_ASSIGN_OR_RETURN(out.labels, CountLabelsLocked());
  MYCEL_RETURN_IF_ERROR(query(
      "SELECT b.id, b.added_ms, b.source, b.offered, b.duplicates, sum(e.split = 0), sum(e.split = 1) "
      "FROM batches b JOIN examples e ON e.ingest = b.id GROUP BY b.id ORDER BY b.id DESC",
      [&](sqlite3_stmt* s) {
        ++out.ingests_total;
        if (static_cast<int64_t>(out.ingests.size()) >= max_ingests) return;
        IngestInfo i;
        i.id = sqlite3_column_int64(s, 0);
        i.added_unix_ms = sqlite3_column_int64(s, 1);
        const unsigned char* text = sqlite3_column_text(s, 2);
        if (text != nullptr) i.source = reinterpret_cast<const char*>(text);
        i.offered = sqlite3_column_int64(s, 3);
        i.duplicates = sqlite3_column_int64(s, 4);
        i.train = sqlite3_column_int64(s, 5);
        i.validation = sqlite3_column_int64(s, 6);
        out.ingests.push_back(std::move(i));
      }));
  return out;
}

int64_t ExampleStore::Count(Split split) {
  return committed_[static_cast<int>(split)].load(std::memory_order_relaxed);
}

absl::StatusOr<std::vector<StoredExample>> ExampleStore::ReadSince(Split split, int64_t after_id,
                                                                    int64_t limit) {
  if (limit < 0) return absl::InvalidArgumentError(absl::StrCat("ReadSince: negative limit ", limit));
  std::vector<StoredExample> out;
  if (limit == 0) return out;
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* s = stmts_->read_since.get();
  ResetOnExit reset(s);
  sqlite3_bind_int(s, 1, static_cast<int>(split));
  sqlite3_bind_int64(s, 2, after_id);
  sqlite3_bind_int64(s, 3, limit);
  out.reserve(static_cast<size_t>(std::min<int64_t>(limit, 4096)));
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    StoredExample row;
    row.id = sqlite3_column_int64(s, 0);
    row.example.label = sqlite3_column_int64(s, 1);
    int dtype = sqlite3_column_int(s, 2);
    if (dtype != static_cast<int>(DType::kU8) && dtype != static_cast<int>(DType::kF32)) {
      return absl::DataLossError(
          absl::StrCat(options_.path, ": example ", row.id, " has unknown dtype ", dtype));
    }
    row.example.dtype = static_cast<DType>(dtype);
    const void* blob = sqlite3_column_blob(s, 3);
    int bytes = sqlite3_column_bytes(s, 3);
    if (bytes > 0) row.example.data.assign(static_cast<const char*>(blob), static_cast<size_t>(bytes));
    out.push_back(std::move(row));
  }
  if (rc != SQLITE_DONE) return SqlError(rc, "reading examples");
  return out;
}

absl::StatusOr<std::optional<std::string>> ExampleStore::GetMeta(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* s = stmts_->get_meta.get();
  ResetOnExit reset(s);
  sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return SqlError(rc, absl::StrCat("reading meta '", key, "'"));
  const void* blob = sqlite3_column_blob(s, 0);
  int bytes = sqlite3_column_bytes(s, 0);
  std::string v;
  if (bytes > 0) v.assign(static_cast<const char*>(blob), static_cast<size_t>(bytes));
  return std::optional<std::string>(std::move(v));
}

absl::Status ExampleStore::SetMeta(const std::string& key, const std::string& value) {
  if (key.rfind(kInternalPrefix, 0) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("meta key '", key, "' uses the reserved prefix '", kInternalPrefix, "'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  sqlite3_stmt* s = stmts_->set_meta.get();
  ResetOnExit reset(s);
  sqlite3_bind_text(s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  sqlite3_bind_blob(s, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE) return SqlError(rc, absl::StrCat("writing meta '", key, "'"));
  return absl::OkStatus();
}

}  // namespace mycel::data
