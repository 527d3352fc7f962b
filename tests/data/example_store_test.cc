#include "data/example_store.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_util.h"
#include "data/importers.h"
#include "data/repair.h"

namespace mycel::data {
namespace {

// A 784-byte example whose first three bytes encode `i`, so every i is distinct
// content and can be recovered from the stored bytes.
Example MakeExample(int64_t i, int64_t width = 784) {
  Example e;
  e.label = i % 10;
  e.dtype = DType::kU8;
  e.data.assign(static_cast<size_t>(width), static_cast<char>(i * 7));
  e.data[0] = static_cast<char>(i & 0xff);
  e.data[1] = static_cast<char>((i >> 8) & 0xff);
  e.data[2] = static_cast<char>((i >> 16) & 0xff);
  return e;
}

int64_t IndexOf(const Example& e) {
  auto b = [&](int k) { return static_cast<int64_t>(static_cast<uint8_t>(e.data[k])); };
  return b(0) | b(1) << 8 | b(2) << 16;
}

std::vector<Example> MakeRange(int64_t from, int64_t to, int64_t width = 784) {
  std::vector<Example> v;
  for (int64_t i = from; i < to; ++i) v.push_back(MakeExample(i, width));
  return v;
}

std::vector<StoredExample> ReadAllRows(ExampleStore& store, Split split) {
  auto rows = store.ReadSince(split, 0, 1 << 30);
  EXPECT_TRUE(rows.ok()) << rows.status();
  return rows.ok() ? *rows : std::vector<StoredExample>{};
}

std::unique_ptr<ExampleStore> OpenOrDie(const ExampleStoreOptions& o) {
  auto s = ExampleStore::Open(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

TEST(ExampleStore, PersistsAcrossReopenWithMonotonicIds) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/examples.db";
  o.validation_fraction = 0.2;
  int64_t last_id = 0;
  {
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    auto r = store->Add(MakeRange(0, 300));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->offered, 300);
    EXPECT_EQ(r->stored, 300);
    EXPECT_EQ(r->evicted, 0);
    EXPECT_EQ(r->train + r->validation, 300);
    EXPECT_EQ(store->Count(Split::kTrain), r->train);
    EXPECT_EQ(store->Count(Split::kValidation), r->validation);
    EXPECT_GT(r->validation, 0);
    for (const auto& row : ReadAllRows(*store, Split::kTrain)) last_id = std::max(last_id, row.id);
    for (const auto& row : ReadAllRows(*store, Split::kValidation)) last_id = std::max(last_id, row.id);
  }
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 300);
  std::set<int64_t> seen;
  for (Split split : {Split::kTrain, Split::kValidation}) {
    int64_t prev = 0;
    for (const auto& row : ReadAllRows(*store, split)) {
      EXPECT_GT(row.id, prev);
      prev = row.id;
      int64_t i = IndexOf(row.example);
      EXPECT_EQ(row.example.data, MakeExample(i).data);
      EXPECT_EQ(row.example.label, i % 10);
      EXPECT_EQ(ExampleStore::SplitOf(row.example, 0.2), split);
      seen.insert(i);
    }
  }
  EXPECT_EQ(seen.size(), 300u);
  // New rows after reopen get larger ids than anything stored before.
  ASSERT_TRUE(store->Add(MakeRange(300, 310)).ok());
  auto newer = store->ReadSince(Split::kTrain, last_id, 100);
  ASSERT_TRUE(newer.ok());
  auto newer_v = store->ReadSince(Split::kValidation, last_id, 100);
  ASSERT_TRUE(newer_v.ok());
  EXPECT_EQ(newer->size() + newer_v->size(), 10u);
  for (const auto& row : *newer) EXPECT_GE(IndexOf(row.example), 300);
}

TEST(ExampleStore, ReadSincePagesInIdOrder) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/examples.db";
  o.validation_fraction = 0;
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Add(MakeRange(0, 250)).ok());
  EXPECT_EQ(store->Count(Split::kValidation), 0);
  std::vector<int64_t> order;
  int64_t after = 0;
  while (true) {
    auto page = store->ReadSince(Split::kTrain, after, 64);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    EXPECT_LE(page->size(), 64u);
    for (const auto& row : *page) order.push_back(IndexOf(row.example));
    after = page->back().id;
  }
  ASSERT_EQ(order.size(), 250u);
  for (int64_t i = 0; i < 250; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(store->ReadSince(Split::kTrain, 0, -1).ok());
}

TEST(ExampleStore, SplitIsAPureFunctionOfContentWithTheRightFraction) {
  std::string dir = test::MakeTempDir();
  std::vector<Example> examples = MakeRange(0, 10000, 16);
  std::set<int64_t> validation[2];
  for (int k = 0; k < 2; ++k) {
    ExampleStoreOptions o;
    o.path = dir + "/s" + std::to_string(k) + ".db";
    o.seed = 100 + k;  // the RNG seed must not matter
    o.validation_fraction = 0.1;
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    // Different insertion orders, too.
    std::vector<Example> v = examples;
    if (k == 1) std::reverse(v.begin(), v.end());
    auto r = store->Add(v);
    ASSERT_TRUE(r.ok());
    for (const auto& row : ReadAllRows(*store, Split::kValidation)) validation[k].insert(IndexOf(row.example));
    EXPECT_EQ(static_cast<int64_t>(validation[k].size()), r->validation);
  }
  EXPECT_EQ(validation[0], validation[1]);
  double fraction = validation[0].size() / 10000.0;
  EXPECT_NEAR(fraction, 0.1, 0.02);
  // A label change alone moves some examples: the label is part of the hash.
  int moved = 0;
  for (const auto& e : examples) {
    Example relabeled = e;
    relabeled.label = (e.label + 1) % 10;
    moved += ExampleStore::SplitOf(e, 0.5) != ExampleStore::SplitOf(relabeled, 0.5);
  }
  EXPECT_GT(moved, 3000);
  // Fractions at the ends.
  for (const auto& e : examples) {
    ASSERT_EQ(ExampleStore::SplitOf(e, 0.0), Split::kTrain);
  }
  int at_half = 0;
  for (const auto& e : examples) at_half += ExampleStore::SplitOf(e, 0.5) == Split::kValidation;
  EXPECT_NEAR(at_half / 10000.0, 0.5, 0.02);
}

TEST(ExampleStore, ReservoirBoundsTheStoreAndKeepsAUniformSample) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/r.db";
  o.max_examples = 1000;
  o.validation_fraction = 0.1;
  o.seed = 7;
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  int64_t stored = 0, evicted = 0;
  for (int64_t from = 0; from < 5000; from += 500) {
    auto r = store->Add(MakeRange(from, from + 500, 32));
    ASSERT_TRUE(r.ok()) << r.status();
    stored += r->stored;
    evicted += r->evicted;
    EXPECT_LE(store->Count(Split::kTrain) + store->Count(Split::kValidation), 1000);
  }
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 1000);
  EXPECT_EQ(stored - evicted, 1000);
  // Algorithm R keeps every offered example with probability 1000/5000; the
  // kept set splits evenly over the five fifths of the stream (sd ~ 13).
  int fifths[5] = {};
  std::set<int64_t> kept;
  for (Split split : {Split::kTrain, Split::kValidation}) {
    for (const auto& row : ReadAllRows(*store, split)) {
      int64_t i = IndexOf(row.example);
      EXPECT_TRUE(kept.insert(i).second) << "duplicate " << i;
      fifths[i / 1000]++;
      // Eviction keeps splits as hashed.
      EXPECT_EQ(ExampleStore::SplitOf(row.example, 0.1), split);
    }
  }
  for (int f = 0; f < 5; ++f) {
    EXPECT_GT(fifths[f], 140) << "fifth " << f;
    EXPECT_LT(fifths[f], 260) << "fifth " << f;
  }
  EXPECT_NEAR(store->Count(Split::kValidation) / 1000.0, 0.1, 0.04);

  // The count of offered examples survives a restart: the next 5000 enter with
  // probability 1000/n for n = 5001..10000, about 1000 ln 2 = 693 of them
  // (a store that forgot would take about 1000 ln 6 = 1792).
  store.reset();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  auto r = store->Add(MakeRange(5000, 10000, 32));
  ASSERT_TRUE(r.ok());
  EXPECT_GT(r->stored, 560);
  EXPECT_LT(r->stored, 830);
  EXPECT_EQ(r->stored, r->evicted);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 1000);
}

TEST(ExampleStore, SmallerMaxOnReopenTrims) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/t.db";
  {
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Add(MakeRange(0, 500, 8)).ok());
  }
  o.max_examples = 200;
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 200);
  EXPECT_EQ(ReadAllRows(*store, Split::kTrain).size() + ReadAllRows(*store, Split::kValidation).size(), 200u);
}

TEST(ExampleStore, AddsSixtyThousandFashionMnistExamples) {
  std::string dir = "/usr/share/datasets/fashion-mnist/";
  std::vector<NamedBlob> files = {{"train-images-idx3-ubyte.gz", test::ReadFileToString(dir + "train-images-idx3-ubyte.gz")},
                                  {"train-labels-idx1-ubyte.gz", test::ReadFileToString(dir + "train-labels-idx1-ubyte.gz")}};
  if (files[0].bytes.empty()) GTEST_SKIP() << "Fashion-MNIST not installed";
  auto examples = ImportFiles(files, Format::kAuto, ExampleShape{});
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 60000u);
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/f.db";
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  // Speed is not checked here (tests check correctness, and a sanitized
  // build runs this several times slower).
  auto r = store->Add(*examples);
  ASSERT_TRUE(r.ok()) << r.status();
  // Fashion-MNIST has a few exact duplicate images; they still count as rows.
  EXPECT_EQ(r->stored, 60000);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 60000);
  EXPECT_EQ(ReadAllRows(*store, Split::kTrain).size() + ReadAllRows(*store, Split::kValidation).size(), 60000u);
}

// A new store at `o.path` holding examples 0..99.
std::unique_ptr<ExampleStore> OpenWithFirstHundred(const ExampleStoreOptions& o) {
  auto store = OpenOrDie(o);
  if (store) {
    EXPECT_TRUE(store->Add(MakeRange(0, 100)).ok());
  }
  return store;
}

// After a failed Add: the store (from OpenWithFirstHundred) still holds
// examples 0..99 and nothing else, takes 100..199, and a reopen finds 0..199.
void ExpectFirstHundredOnlyAndStillWorking(std::unique_ptr<ExampleStore>& store, const ExampleStoreOptions& o) {
  ASSERT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 100);
  EXPECT_EQ(ReadAllRows(*store, Split::kTrain).size(), static_cast<size_t>(store->Count(Split::kTrain)));
  auto again = store->Add(MakeRange(100, 200));
  ASSERT_TRUE(again.ok()) << again.status();
  store.reset();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 200);
  std::set<int64_t> ids;
  for (Split s : {Split::kTrain, Split::kValidation}) {
    for (const auto& row : ReadAllRows(*store, s)) ids.insert(IndexOf(row.example));
  }
  EXPECT_EQ(ids.size(), 200u);
  EXPECT_EQ(*ids.rbegin(), 199);
}

// A real failure half-way through a transaction: RLIMIT_FSIZE makes the WAL
// write fail (EFBIG) like a full disk would.
TEST(ExampleStore, FailedAddLeavesNothingBehind) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/a.db";
  auto store = OpenWithFirstHundred(o);
  ASSERT_TRUE(store);

  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old_limit;
  small.rlim_cur = 1 << 20;  // the next Add needs ~4 MB of WAL
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto r = store->Add(MakeRange(100, 5100));
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ::signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(o.path), std::string::npos) << r.status();
  ExpectFirstHundredOnlyAndStillWorking(store, o);
}

// Rows another connection sees: what a crash at this moment would leave.
int64_t CommittedRows(const std::string& path) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM examples", -1, &s, nullptr) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW) {
      n = sqlite3_column_int64(s, 0);
    }
    sqlite3_finalize(s);
  }
  sqlite3_close_v2(db);
  return n;
}

struct ProgressCall {
  int64_t done, total, committed;
};

// Adds `examples`, recording every progress call and, at each, how many rows
// another connection could see.
std::vector<ProgressCall> AddRecordingProgress(ExampleStore& store, const std::string& path,
                                               const std::vector<Example>& examples) {
  std::vector<ProgressCall> calls;
  auto r = store.Add(examples, [&](int64_t done, int64_t total) {
    calls.push_back({done, total, CommittedRows(path)});
    return true;
  });
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) {
    EXPECT_EQ(r->offered, static_cast<int64_t>(examples.size()));
  }
  return calls;
}

// Progress counts rise in steps of kAddProgressEvery to the total, always
// about rows still inside the transaction: nobody else sees them until the
// commit, so a progress bar never means a partial ingest.
TEST(ExampleStore, AddReportsProgressInRisingCountsEndingAtTheTotalBeforeTheCommit) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/p.db";
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Add(MakeRange(0, 100)).ok());
  const int64_t n = 5 * kAddProgressEvery + 321;
  std::vector<ProgressCall> calls = AddRecordingProgress(*store, o.path, MakeRange(100, 100 + n));
  ASSERT_EQ(calls.size(), 6u);
  for (size_t i = 0; i < calls.size(); ++i) {
    SCOPED_TRACE("call " + std::to_string(i));
    EXPECT_EQ(calls[i].total, n);
    EXPECT_EQ(calls[i].done, i + 1 < calls.size() ? static_cast<int64_t>(i + 1) * kAddProgressEvery : n);
    EXPECT_EQ(calls[i].committed, 100) << "progress reported rows another reader could already see";
  }
  EXPECT_EQ(CommittedRows(o.path), 100 + n);

  // The same when the reservoir is full and examples are skipped or evict:
  // progress counts examples offered, not rows written.
  o.path = test::MakeTempDir() + "/full.db";
  o.max_examples = 1500;
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Add(MakeRange(0, 1500, 32)).ok());
  calls = AddRecordingProgress(*store, o.path, MakeRange(1500, 4500, 32));
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0].done, kAddProgressEvery);
  EXPECT_EQ(calls[1].done, 2 * kAddProgressEvery);
  EXPECT_EQ(calls[2].done, 3000);
  EXPECT_EQ(calls[2].total, 3000);
}

// Count answers while an Add holds the store (mycel status during an ingest,
// or while the idle-priority trainer reads rows on a busy laptop) and counts
// committed rows only: before, it waited for the whole transaction.
TEST(ExampleStore, CountAnswersDuringAnAddAndCountsOnlyCommittedRows) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/count.db";
  o.validation_fraction = 0;
  auto store = OpenWithFirstHundred(o);
  ASSERT_TRUE(store);
  const int64_t n = 3 * kAddProgressEvery;
  int answered = 0, calls = 0;
  // Futures outlive the Add: one still waiting for the store's lock is only
  // joined after the Add has let go of it, so a broken Count fails, not hangs.
  std::vector<std::future<int64_t>> counts;
  auto r = store->Add(MakeRange(100, 100 + n), [&](int64_t, int64_t) {
    ++calls;
    counts.push_back(std::async(std::launch::async, [&] { return store->Count(Split::kTrain); }));
    if (counts.back().wait_for(std::chrono::seconds(5)) == std::future_status::ready) {
      EXPECT_EQ(counts.back().get(), 100) << "Count saw rows of an Add that has not committed";
      ++answered;
    }
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(answered, calls) << "Count waited for the Add's transaction";
  EXPECT_EQ(store->Count(Split::kTrain), 100 + n);
  // A failed Add publishes nothing.
  auto cancelled = store->Add(MakeRange(100 + n, 100 + 2 * n), [](int64_t, int64_t) { return false; });
  EXPECT_FALSE(cancelled.ok());
  EXPECT_EQ(store->Count(Split::kTrain), 100 + n);
}

// A progress callback that says stop (the client went away) rolls the Add
// back: nothing of it is stored, now or after a reopen, and the store works on.
// Stopping at a report in the middle, or at the last one just before the
// commit.
TEST(ExampleStore, CancelledAddStoresNothing) {
  for (int64_t stop_at : {2 * kAddProgressEvery, int64_t{2500}}) {
    SCOPED_TRACE("stop at " + std::to_string(stop_at));
    ExampleStoreOptions o;
    o.path = test::MakeTempDir() + "/c.db";
    auto store = OpenWithFirstHundred(o);
    ASSERT_TRUE(store);
    int64_t last = 0;
    auto r = store->Add(MakeRange(100, 2600), [&](int64_t done, int64_t) {
      last = done;
      return done < stop_at;
    });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
    EXPECT_EQ(last, stop_at) << "called again after it said stop";
    EXPECT_EQ(CommittedRows(o.path), 100);
    ExpectFirstHundredOnlyAndStillWorking(store, o);
  }
}

TEST(ExampleStore, RejectsInvalidExamplesWithoutStoringAny) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/v.db";
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  std::vector<Example> v = MakeRange(0, 10);
  Example bad;
  bad.dtype = DType::kF32;
  bad.data = "abcde";  // not a whole number of floats
  v.push_back(bad);
  auto r = store->Add(v);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 0);
}

TEST(ExampleStore, GarbageFileIsRejectedAndLeftUntouched) {
  std::string dir = test::MakeTempDir();
  std::string path = dir + "/garbage.db";
  std::string bytes;
  std::mt19937 rng(3);
  for (int i = 0; i < 8192; ++i) bytes.push_back(static_cast<char>(rng()));
  test::WriteStringToFile(path, bytes);
  ExampleStoreOptions o;
  o.path = path;
  auto store = ExampleStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
  EXPECT_EQ(test::ReadFileToString(path), bytes);
  EXPECT_EQ(test::ListDir(dir).size(), 1u);

  // A file with the SQLite header but garbage after it.
  std::string fake = std::string("SQLite format 3\0", 16) + bytes;
  test::WriteStringToFile(path, fake);
  store = ExampleStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
  EXPECT_EQ(test::ReadFileToString(path), fake);
}

TEST(ExampleStore, ForeignSqliteDatabaseIsRejectedAndLeftUntouched) {
  std::string path = test::MakeTempDir() + "/foreign.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES('mine');", nullptr,
                           nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  std::string before = test::ReadFileToString(path);
  ExampleStoreOptions o;
  o.path = path;
  auto store = ExampleStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find(path), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find("not a mycel example store"), std::string::npos);
  EXPECT_EQ(test::ReadFileToString(path), before);  // still rollback-journal mode, no tables added
}

TEST(ExampleStore, MissingDirectoryIsAnErrorNamingThePath) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/no/such/dir/x.db";
  auto store = ExampleStore::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(o.path), std::string::npos) << store.status();
}

TEST(ExampleStore, OptionsAreValidated) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/o.db";
  o.validation_fraction = 0.95;
  EXPECT_FALSE(ExampleStore::Open(o).ok());
  o.validation_fraction = 0.1;
  o.max_examples = 0;
  EXPECT_FALSE(ExampleStore::Open(o).ok());
}

TEST(ExampleStore, MetaRoundTripsAndPersists) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/m.db";
  std::string binary("a\0b\xff", 4);
  {
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    auto missing = store->GetMeta("paused");
    ASSERT_TRUE(missing.ok());
    EXPECT_FALSE(missing->has_value());
    ASSERT_TRUE(store->SetMeta("paused", "1").ok());
    ASSERT_TRUE(store->SetMeta("paused", "0").ok());
    ASSERT_TRUE(store->SetMeta("blob", binary).ok());
    ASSERT_TRUE(store->SetMeta("empty", "").ok());
    EXPECT_FALSE(store->SetMeta("_store.seen", "0").ok());  // reserved for the store itself
  }
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->GetMeta("paused")->value(), "0");
  EXPECT_EQ(store->GetMeta("blob")->value(), binary);
  ASSERT_TRUE(store->GetMeta("empty")->has_value());
  EXPECT_EQ(store->GetMeta("empty")->value(), "");
}

// An ingest whose acknowledgement was lost (the daemon killed after the
// commit) is retried with its key: the retry stores nothing and answers the
// first result, across a reopen too.
TEST(ExampleStore, AnAddRetriedWithItsKeyStoresNothingTwice) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/k.db";
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  auto first = store->Add(MakeRange(0, 300), nullptr, "ingest-1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->replayed);
  EXPECT_EQ(first->stored, 300);
  auto found = store->FindIngest("ingest-1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->stored, 300);
  EXPECT_EQ((*found)->train + (*found)->validation, 300);

  store.reset();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  auto retry = store->Add(MakeRange(0, 300), nullptr, "ingest-1");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->replayed);
  EXPECT_EQ(retry->stored, 300);
  EXPECT_EQ(retry->train, first->train);
  EXPECT_EQ(CommittedRows(o.path), 300);
  // A new key stores again; without a key, equal content is still stored once.
  ASSERT_TRUE(store->Add(MakeRange(300, 310), nullptr, "ingest-2").ok());
  ASSERT_TRUE(store->Add(MakeRange(310, 320)).ok());
  auto twice = store->Add(MakeRange(310, 320));
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(twice->duplicates, 10);
  EXPECT_EQ(twice->stored, 0);
  EXPECT_EQ(CommittedRows(o.path), 320);
  auto none = store->FindIngest("never-used");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// The key commits with the rows or not at all: a cancelled Add leaves the
// key unused, so its retry stores.
TEST(ExampleStore, AFailedAddDoesNotSpendItsKey) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/kc.db";
  auto store = OpenWithFirstHundred(o);
  ASSERT_TRUE(store);
  auto cancelled = store->Add(MakeRange(100, 2600), [](int64_t done, int64_t total) { return done < total; },
                              "k");
  ASSERT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
  auto found = store->FindIngest("k");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  auto retry = store->Add(MakeRange(100, 2600), nullptr, "k");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_FALSE(retry->replayed);
  EXPECT_EQ(CommittedRows(o.path), 2600);
}

TEST(ExampleStore, IngestKeysAreBoundedAndValidated) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/kb.db";
  o.ingest_keys_kept = 3;
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(store->Add(MakeRange(i, i + 1), nullptr, "key-" + std::to_string(i)).ok());
  }
  for (int i = 0; i < 5; ++i) {
    auto found = store->FindIngest("key-" + std::to_string(i));
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(found->has_value(), i >= 2) << "key-" << i << ": only the newest 3 are kept";
  }
  for (const std::string& bad : {std::string(), std::string(129, 'a'), std::string("a b"), std::string("k\n"),
                                std::string("k\0x", 3), std::string("ключ")}) {
    auto r = store->Add(MakeRange(10, 11), nullptr, bad.empty() ? std::string(1, '\x01') : bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << "key of " << bad.size() << " bytes";
    EXPECT_EQ(store->FindIngest(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(CommittedRows(o.path), 5);
  o.ingest_keys_kept = 0;
  EXPECT_EQ(ExampleStore::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

// A store as an older mycel wrote it: version 1 (rows and meta only) or 2
// (plus the ingest keys), with `rows` examples, the first `dupes` of them
// stored twice, as that version allowed.
void WriteOldStore(const std::string& path, int version, int64_t rows, int64_t dupes) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string sql =
      "PRAGMA journal_mode=WAL; PRAGMA application_id=1297695564; "
      "CREATE TABLE examples(id INTEGER PRIMARY KEY AUTOINCREMENT, split INTEGER NOT NULL, slot INTEGER NOT NULL, "
      "label INTEGER NOT NULL, dtype INTEGER NOT NULL, data BLOB NOT NULL);"
      "CREATE INDEX examples_split_id ON examples(split, id);"
      "CREATE UNIQUE INDEX examples_split_slot ON examples(split, slot);"
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;";
  if (version >= 2) {
    sql += "CREATE TABLE ingests(seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, offered INTEGER "
           "NOT NULL, stored INTEGER NOT NULL, evicted INTEGER NOT NULL, train INTEGER NOT NULL, validation INTEGER "
           "NOT NULL); INSERT INTO ingests(key, offered, stored, evicted, train, validation) "
           "VALUES('old-key', 1, 1, 0, 1, 0);";
  }
  sql += "PRAGMA user_version=" + std::to_string(version) + ";";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_stmt* ins = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "INSERT INTO examples(split, slot, label, dtype, data) VALUES(?1, ?2, ?3, 0, ?4)",
                               -1, &ins, nullptr),
            SQLITE_OK);
  int64_t slots[2] = {0, 0};
  for (int64_t i = 0; i < rows + dupes; ++i) {
    const Example e = MakeExample(i < rows ? i : i - rows);
    const int split = static_cast<int>(ExampleStore::SplitOf(e, 0.1));
    sqlite3_bind_int(ins, 1, split);
    sqlite3_bind_int64(ins, 2, slots[split]++);
    sqlite3_bind_int64(ins, 3, e.label);
    sqlite3_bind_blob(ins, 4, e.data.data(), static_cast<int>(e.data.size()), SQLITE_TRANSIENT);
    ASSERT_EQ(sqlite3_step(ins), SQLITE_DONE);
    sqlite3_reset(ins);
  }
  sqlite3_finalize(ins);
  sqlite3_close(db);
}

// Stores from before ingest keys (version 1) and before deduplication
// (version 2) open, keep every row (old duplicates included: an upgrade
// removes nothing), and from then on refuse to store what they already hold.
TEST(ExampleStore, OlderStoresAreUpgradedInPlaceAndDeduplicateFromThenOn) {
  for (int version : {1, 2}) {
    SCOPED_TRACE("version " + std::to_string(version));
    ExampleStoreOptions o;
    o.path = test::MakeTempDir() + "/v" + std::to_string(version) + ".db";
    WriteOldStore(o.path, version, 50, 5);
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 55);
    auto old = store->Add(MakeRange(40, 60), nullptr, "after-upgrade");
    ASSERT_TRUE(old.ok()) << old.status();
    EXPECT_EQ(old->duplicates, 10);  // 40..49 were stored by the old version
    EXPECT_EQ(old->stored, 10);
    auto again = store->Add(MakeRange(50, 60), nullptr, "after-upgrade");
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_TRUE(again->replayed);
    EXPECT_EQ(again->duplicates, 10);
    EXPECT_EQ(CommittedRows(o.path), 65);
    if (version == 2) {
      auto kept = store->FindIngest("old-key");
      ASSERT_TRUE(kept.ok() && kept->has_value());
    }
    auto summary = store->Summarize(10);
    ASSERT_TRUE(summary.ok()) << summary.status();
    ASSERT_EQ(summary->ingests.size(), 2u);
    EXPECT_EQ(summary->ingests[1].source, "stored before this version of mycel");
    EXPECT_EQ(summary->ingests[1].train + summary->ingests[1].validation, 55);
    EXPECT_EQ(summary->ingests[0].train + summary->ingests[0].validation, 10);
    // A reopen does not upgrade twice.
    store.reset();
    store = OpenOrDie(o);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Summarize(10)->ingests.size(), 2u);
  }
}

// The same file ingested twice (the 107,794 rows from Fashion-MNIST's
// 60,000) is stored once; an example equal in bytes but with another label is
// another example.
TEST(ExampleStore, TheSameExamplesIngestedTwiceAreStoredOnce) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/dedupe.db";
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  auto first = store->Add(MakeRange(0, 500), nullptr, "", "train.gz");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->stored, 500);
  EXPECT_EQ(first->duplicates, 0);
  std::vector<Example> batch = MakeRange(400, 600);
  batch.push_back(MakeExample(7));  // twice in one Add, and stored before
  batch.push_back(MakeExample(550));  // twice within this Add only
  Example relabelled = MakeExample(3);
  relabelled.label = 9;
  batch.push_back(relabelled);
  auto second = store->Add(batch, nullptr, "", "train.gz again");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->duplicates, 100 + 2);
  EXPECT_EQ(second->stored, 100 + 1);
  EXPECT_EQ(CommittedRows(o.path), 601);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 601);
  auto summary = store->Summarize(10);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->ingests.size(), 2u);
  EXPECT_EQ(summary->ingests[0].source, "train.gz again");  // newest first
  EXPECT_EQ(summary->ingests[0].offered, 203);
  EXPECT_EQ(summary->ingests[0].duplicates, 102);
  EXPECT_EQ(summary->ingests[0].train + summary->ingests[0].validation, 101);
  EXPECT_LT(summary->ingests[1].id, summary->ingests[0].id);
  EXPECT_LE(summary->ingests[1].added_unix_ms, summary->ingests[0].added_unix_ms);
  int64_t total = 0, nines = 0;
  for (const auto& l : summary->labels) {
    total += l.train + l.validation;
    if (l.label == 9) nines = l.train + l.validation;
  }
  EXPECT_EQ(total, 601);
  EXPECT_EQ(nines, 60 + 1);  // 9, 19, ..., 599 and the relabelled 3
}

// Forget by label, by ingest, by time and all: the rows are gone from the
// file (the bytes too), slots stay dense (eviction still works), counts and
// generation follow, and a reopen sees the same.
TEST(ExampleStore, ForgetDeletesTheRowsAndTheirBytes) {
  ExampleStoreOptions o;
  o.path = test::MakeTempDir() + "/forget.db";
  o.max_examples = 1000;
  auto store = OpenOrDie(o);
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Add(MakeRange(0, 300), nullptr, "", "a").ok());
  ASSERT_TRUE(store->Add(MakeRange(300, 600), nullptr, "", "b").ok());
  EXPECT_EQ(store->generation(), 0);
  EXPECT_EQ(store->Forget(ForgetFilter{}).status().code(), absl::StatusCode::kInvalidArgument);

  ForgetFilter threes;
  threes.label = 3;
  auto r = store->Forget(threes);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->train + r->validation, 60);
  EXPECT_EQ(store->generation(), 1);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 540);
  for (Split split : {Split::kTrain, Split::kValidation}) {
    for (const auto& row : ReadAllRows(*store, split)) EXPECT_NE(row.example.label, 3);
  }
  // Their bytes are overwritten, not only unlinked (the WAL is truncated too).
  const Example gone = MakeExample(303);
  for (const char* suffix : {"", "-wal"}) {
    EXPECT_EQ(test::ReadFileToString(o.path + suffix).find(gone.data), std::string::npos) << suffix;
  }
  EXPECT_NE(test::ReadFileToString(o.path).find(MakeExample(304).data), std::string::npos);  // the check can see rows

  // Nothing matches: nothing removed, no new generation.
  r = store->Forget(threes);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->train + r->validation, 0);
  EXPECT_EQ(store->generation(), 1);

  // One ingest, combined with a label.
  auto summary = store->Summarize(10);
  ASSERT_TRUE(summary.ok());
  ASSERT_EQ(summary->ingests.size(), 2u);
  ForgetFilter b_fours;
  b_fours.ingest = summary->ingests[0].id;  // "b"
  b_fours.label = 4;
  r = store->Forget(b_fours);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->train + r->validation, 30);
  // By time: everything ingested before now.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // c commits in a later millisecond than a and b
  ASSERT_TRUE(store->Add(MakeRange(600, 700), nullptr, "", "c").ok());
  const int64_t c_time = store->Summarize(1)->ingests[0].added_unix_ms;
  ForgetFilter before_c;
  before_c.before_unix_ms = c_time;
  r = store->Forget(before_c);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->train + r->validation, 540 - 30);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 100);
  summary = store->Summarize(10);
  ASSERT_EQ(summary->ingests.size(), 1u);  // a and b are gone with their rows
  EXPECT_EQ(summary->ingests[0].source, "c");

  // Forgotten examples may be stored again; a full store still evicts (dense slots).
  ASSERT_TRUE(store->Add(MakeRange(0, 1200)).ok());
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 1000);
  store.reset();
  store = OpenOrDie(o);  // Init checks that slots are dense
  ASSERT_TRUE(store);
  ForgetFilter all;
  all.all = true;
  r = store->Forget(all);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->train + r->validation, 1000);
  EXPECT_EQ(CommittedRows(o.path), 0);
  EXPECT_TRUE(store->Summarize(10)->ingests.empty());
  // The reservoir does not hold new examples back for the forgotten ones.
  auto fresh = store->Add(MakeRange(5000, 5900));
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->stored, 900);
}

}  // namespace
}  // namespace mycel::data

namespace mycel::data {
namespace {

// `mycel repair` carries the idempotency keys over: an ingest the old store
// had committed, retried after the repair, is a replay and stores nothing.
TEST(SalvageStore, CarriesIngestKeysSoARetryAfterARepairIsAReplay) {
  const std::string dir = test::MakeTempDir();
  ExampleStoreOptions o;
  o.path = dir + "/examples.db";
  AddResult first;
  {
    auto store = OpenOrDie(o);
    ASSERT_TRUE(store);
    auto r = store->Add(MakeRange(0, 200), nullptr, "ingest-1");
    ASSERT_TRUE(r.ok()) << r.status();
    first = *r;
    ASSERT_TRUE(store->Add(MakeRange(200, 300), nullptr, "ingest-2").ok());
    ASSERT_TRUE(store->Add(MakeRange(300, 310)).ok());  // no key
  }
  ExampleStoreOptions into = o;
  into.path = dir + "/salvaged.db";
  auto salvaged = SalvageStore(o.path, into);
  ASSERT_TRUE(salvaged.ok()) << salvaged.status();
  EXPECT_EQ(salvaged->salvaged, 310);
  EXPECT_EQ(salvaged->ingest_keys, 2);

  auto store = OpenOrDie(into);
  ASSERT_TRUE(store);
  auto known = store->FindIngest("ingest-1");
  ASSERT_TRUE(known.ok()) << known.status();
  ASSERT_TRUE(known->has_value());
  EXPECT_EQ((*known)->offered, first.offered);
  EXPECT_EQ((*known)->stored, first.stored);
  EXPECT_EQ((*known)->train, first.train);
  auto retry = store->Add(MakeRange(0, 200), nullptr, "ingest-1");
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_TRUE(retry->replayed);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 310);
  // A key the old store never saw still stores.
  auto fresh = store->Add(MakeRange(310, 320), nullptr, "ingest-3");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->replayed);
  EXPECT_EQ(store->Count(Split::kTrain) + store->Count(Split::kValidation), 320);
  // Remembering a key twice changes nothing.
  ASSERT_TRUE(store->RememberIngest("ingest-1", AddResult{}).ok());
  EXPECT_EQ((*store->FindIngest("ingest-1"))->offered, first.offered);
  EXPECT_FALSE(store->RememberIngest("bad key!", AddResult{}).ok());
}

}  // namespace
}  // namespace mycel::data
