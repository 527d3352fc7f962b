#include "data/repair.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace mycel::data {
namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Db = std::unique_ptr<sqlite3, DbCloser>;
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// One integer from `sql`, or `fallback` if SQLite cannot produce it.
int64_t ScalarOr(sqlite3* db, const char* sql, int64_t fallback) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) return fallback;
  Stmt s(raw);
  if (sqlite3_step(s.get()) != SQLITE_ROW || sqlite3_column_type(s.get(), 0) == SQLITE_NULL) return fallback;
  return sqlite3_column_int64(s.get(), 0);
}

constexpr size_t kBatch = 4096;  // examples per Add into the new store

// The idempotency keys SQLite can still read, oldest first. A store from
// before keys existed (schema 1) has no table: nothing to carry. A damaged
// page ends the walk; the keys read so far are kept.
absl::Status CarryIngestKeys(sqlite3* db, ExampleStore& store, SalvageResult* result) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT key, offered, stored, evicted, train, validation FROM ingests ORDER BY seq", -1,
                         &raw, nullptr) != SQLITE_OK) {
    return absl::OkStatus();
  }
  Stmt read(raw);
  while (sqlite3_step(read.get()) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(read.get(), 0);
    if (text == nullptr) continue;
    AddResult r;
    r.offered = sqlite3_column_int64(read.get(), 1);
    r.stored = sqlite3_column_int64(read.get(), 2);
    r.evicted = sqlite3_column_int64(read.get(), 3);
    r.train = sqlite3_column_int64(read.get(), 4);
    r.validation = sqlite3_column_int64(read.get(), 5);
    const std::string key(reinterpret_cast<const char*>(text));
    absl::Status s = store.RememberIngest(key, r);
    if (absl::IsInvalidArgument(s)) continue;  // a damaged key: not one a client could retry with
    MYCEL_RETURN_IF_ERROR(s);
    ++result->ingest_keys;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SalvageResult> SalvageStore(const std::string& damaged, const ExampleStoreOptions& into) {
  struct stat st;
  if (::stat(into.path.c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(into.path, ": exists; the repair writes a new store only"));
  }
  sqlite3* raw_db = nullptr;
  int rc = sqlite3_open_v2(damaged.c_str(), &raw_db, SQLITE_OPEN_READONLY, nullptr);
  Db db(raw_db);
  if (rc != SQLITE_OK) {
    return absl::FailedPreconditionError(
        absl::StrCat(damaged, ": SQLite cannot open it at all (", sqlite3_errstr(rc), "); nothing to salvage"));
  }
  SalvageResult result;
  // The AUTOINCREMENT counter survives where the table's last page may not.
  result.highest_id = std::max(ScalarOr(db.get(), "SELECT seq FROM sqlite_sequence WHERE name = 'examples'", 0),
                               ScalarOr(db.get(), "SELECT max(id) FROM examples", 0));
  result.paused = ScalarOr(db.get(), "SELECT value = '1' FROM meta WHERE key = 'paused'", 0) == 1;

  MYCEL_ASSIGN_OR_RETURN(auto store, ExampleStore::Open(into));
  sqlite3_stmt* raw = nullptr;
  rc = sqlite3_prepare_v2(db.get(), "SELECT id, label, dtype, data FROM examples WHERE id >= ?1 ORDER BY id", -1,
                          &raw, nullptr);
  Stmt read(raw);
  if (rc != SQLITE_OK) {
    return absl::DataLossError(absl::StrCat(damaged, ": the examples table cannot be read (",
                                            sqlite3_errmsg(db.get()), "); nothing to salvage"));
  }
  std::vector<Example> batch;
  auto flush = [&]() -> absl::Status {
    if (batch.empty()) return absl::OkStatus();
    MYCEL_ASSIGN_OR_RETURN(AddResult added, store->Add(batch));
    result.salvaged += added.stored;
    batch.clear();
    return absl::OkStatus();
  };
  int64_t next = 0;
  while (next <= result.highest_id || result.highest_id == 0) {
    sqlite3_reset(read.get());
    sqlite3_bind_int64(read.get(), 1, next);
    bool any = false;
    while ((rc = sqlite3_step(read.get())) == SQLITE_ROW) {
      any = true;
      next = sqlite3_column_int64(read.get(), 0) + 1;
      int dtype = sqlite3_column_int(read.get(), 2);
      if (dtype != static_cast<int>(DType::kU8) && dtype != static_cast<int>(DType::kF32)) continue;
      Example e;
      e.label = sqlite3_column_int64(read.get(), 1);
      e.dtype = static_cast<DType>(dtype);
      const void* blob = sqlite3_column_blob(read.get(), 3);
      int bytes = sqlite3_column_bytes(read.get(), 3);
      if (blob == nullptr || bytes <= 0) continue;
      if (e.dtype == DType::kF32 && bytes % 4 != 0) continue;
      e.data.assign(static_cast<const char*>(blob), static_cast<size_t>(bytes));
      batch.push_back(std::move(e));
      if (batch.size() >= kBatch) MYCEL_RETURN_IF_ERROR(flush());
    }
    if (rc == SQLITE_DONE) break;  // read to the end
    // A damaged page: skip the id the cursor could not get past.
    ++result.unreadable;
    if (!any) ++next;
    if (result.highest_id == 0 && result.unreadable > (int64_t{1} << 24)) break;
  }
  MYCEL_RETURN_IF_ERROR(flush());
  if (result.paused) MYCEL_RETURN_IF_ERROR(store->SetMeta("paused", "1"));
  MYCEL_RETURN_IF_ERROR(CarryIngestKeys(db.get(), *store, &result));
  return result;
}

}  // namespace mycel::data
