#include "data/history.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>

#include "absl/strings/str_cat.h"

namespace mycel::data {
namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS passes ("
    " unix_s REAL NOT NULL, steps INTEGER NOT NULL, samples_trained INTEGER NOT NULL,"
    " val_accuracy REAL, val_loss REAL, train_loss REAL, learning_rate REAL,"
    " rounds INTEGER NOT NULL, bytes_sent INTEGER NOT NULL, bytes_received INTEGER NOT NULL,"
    " state TEXT NOT NULL)";

// SQLite stores NaN as NULL; NULL reads back as NaN.
void BindReal(sqlite3_stmt* st, int i, double v) {
  if (std::isnan(v)) {
    sqlite3_bind_null(st, i);
  } else {
    sqlite3_bind_double(st, i, v);
  }
}
double ColumnReal(sqlite3_stmt* st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? std::numeric_limits<double>::quiet_NaN()
                                                   : sqlite3_column_double(st, i);
}

struct Stmt {
  sqlite3_stmt* st = nullptr;
  ~Stmt() { sqlite3_finalize(st); }
};

// DataLoss when the file is not a readable database (it may be moved
// aside); Unavailable for anything else (busy, full disk, permissions),
// which leaves the file alone.
absl::Status OpenAndCheck(const std::string& path, sqlite3** db) {
  auto fail = [&](int rc, const std::string& why) {
    const bool damaged = rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
    const std::string msg = absl::StrCat(path, ": ", why);
    return damaged ? absl::DataLossError(msg) : absl::UnavailableError(msg);
  };
  int rc = sqlite3_open_v2(path.c_str(), db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) return fail(rc, *db ? sqlite3_errmsg(*db) : "cannot open");
  sqlite3_busy_timeout(*db, 2000);
  char* err = nullptr;
  // quick_check reads every page: a damaged file is found here, not mid-run.
  std::string verdict;
  auto keep = [](void* out, int, char** values, char**) {
    *static_cast<std::string*>(out) = values[0] ? values[0] : "";
    return 0;
  };
  rc = sqlite3_exec(*db, "PRAGMA quick_check", keep, &verdict, &err);
  if (rc != SQLITE_OK || verdict != "ok") {
    std::string why = err ? err : verdict;
    sqlite3_free(err);
    return fail(rc == SQLITE_OK ? SQLITE_CORRUPT : rc, why);
  }
  // WAL with synchronous=NORMAL: a power loss may lose the last passes,
  // never the file.
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", kSchema}) {
    rc = sqlite3_exec(*db, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string why = err ? err : sql;
      sqlite3_free(err);
      return fail(rc, why);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<History>> History::Open(const std::string& path, std::string* moved,
                                                       int64_t max_rows) {
  if (moved) moved->clear();
  std::unique_ptr<History> h(new History());
  h->max_rows_ = std::max<int64_t>(1, max_rows);
  absl::Status s = OpenAndCheck(path, &h->db_);
  if (!s.ok() && !absl::IsDataLoss(s)) return s;  // not damage: the file stays as it is
  if (!s.ok()) {
    sqlite3_close(h->db_);
    h->db_ = nullptr;
    const std::string aside = absl::StrCat(path, ".corrupt-", static_cast<int64_t>(std::time(nullptr)));
    if (std::rename(path.c_str(), aside.c_str()) != 0) {
      return absl::DataLossError(absl::StrCat(s.message(), "; and it cannot be moved aside to ", aside));
    }
    if (moved) *moved = aside + " (" + std::string(s.message()) + ")";
    if (auto again = OpenAndCheck(path, &h->db_); !again.ok()) return again;
  }
  // Bounded across restarts too, not only every 1% of max_rows inserts.
  if (auto trimmed = h->Trim(); !trimmed.ok()) return trimmed;
  return h;
}

History::~History() { sqlite3_close(db_); }

absl::Status History::Exec(const char* sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : "error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("history: ", why));
  }
  return absl::OkStatus();
}

absl::Status History::Record(const HistoryEntry& e) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s;
  if (sqlite3_prepare_v2(db_,
                         "INSERT INTO passes VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)", -1, &s.st,
                         nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("history: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_double(s.st, 1, e.unix_s);
  sqlite3_bind_int64(s.st, 2, e.steps);
  sqlite3_bind_int64(s.st, 3, e.samples_trained);
  BindReal(s.st, 4, e.val_accuracy);
  BindReal(s.st, 5, e.val_loss);
  BindReal(s.st, 6, e.train_loss);
  BindReal(s.st, 7, e.learning_rate);
  sqlite3_bind_int64(s.st, 8, e.rounds);
  sqlite3_bind_int64(s.st, 9, e.bytes_sent);
  sqlite3_bind_int64(s.st, 10, e.bytes_received);
  sqlite3_bind_text(s.st, 11, e.state.c_str(), -1, SQLITE_TRANSIENT);
  if (sqlite3_step(s.st) != SQLITE_DONE) return absl::InternalError(absl::StrCat("history: ", sqlite3_errmsg(db_)));
  // Bounded: every 1% of max_rows inserts, the oldest beyond max_rows go.
  if (++inserts_ % std::max<int64_t>(1, max_rows_ / 100) == 0) return Trim();
  return absl::OkStatus();
}

absl::Status History::Trim() {
  return Exec(absl::StrCat("DELETE FROM passes WHERE rowid <= (SELECT MAX(rowid) FROM passes) - ", max_rows_).c_str());
}

absl::StatusOr<std::vector<HistoryEntry>> History::Since(double since_unix_s, int64_t limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s;
  // The newest `limit`, then put back in time order.
  if (sqlite3_prepare_v2(db_,
                         "SELECT * FROM (SELECT unix_s, steps, samples_trained, val_accuracy, val_loss, train_loss,"
                         " learning_rate, rounds, bytes_sent, bytes_received, state, rowid FROM passes"
                         " WHERE unix_s >= ?1 ORDER BY rowid DESC LIMIT ?2) ORDER BY rowid",
                         -1, &s.st, nullptr) != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("history: ", sqlite3_errmsg(db_)));
  }
  sqlite3_bind_double(s.st, 1, since_unix_s);
  sqlite3_bind_int64(s.st, 2, limit);
  std::vector<HistoryEntry> out;
  int rc;
  while ((rc = sqlite3_step(s.st)) == SQLITE_ROW) {
    HistoryEntry e;
    e.unix_s = sqlite3_column_double(s.st, 0);
    e.steps = sqlite3_column_int64(s.st, 1);
    e.samples_trained = sqlite3_column_int64(s.st, 2);
    e.val_accuracy = ColumnReal(s.st, 3);
    e.val_loss = ColumnReal(s.st, 4);
    e.train_loss = ColumnReal(s.st, 5);
    e.learning_rate = ColumnReal(s.st, 6);
    e.rounds = sqlite3_column_int64(s.st, 7);
    e.bytes_sent = sqlite3_column_int64(s.st, 8);
    e.bytes_received = sqlite3_column_int64(s.st, 9);
    const unsigned char* state = sqlite3_column_text(s.st, 10);
    e.state = state ? reinterpret_cast<const char*>(state) : "";
    out.push_back(std::move(e));
  }
  if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat("history: ", sqlite3_errmsg(db_)));
  return out;
}

}  // namespace mycel::data
