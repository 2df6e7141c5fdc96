// auth/sqlite_db.hpp: the typed bind of the SQLite store, its statement
// helpers and column reads, over an in-memory database.
#include "auth/sqlite_db.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace apop::auth::sqlite {
namespace {

// `bind` refuses temporaries that own their bytes (SQLite keeps a pointer).
// Qualified: ADL would find std::bind for a std:: argument.
template <class A>
concept BindsOne = requires(sqlite3_stmt* s, A&& a) {
  sqlite::bind(s, std::forward<A>(a));
};
static_assert(BindsOne<std::string&>);
static_assert(BindsOne<const std::string&>);
static_assert(BindsOne<std::string_view>);
static_assert(BindsOne<const char*>);
static_assert(BindsOne<Blob>);
static_assert(BindsOne<std::int64_t>);
static_assert(BindsOne<std::optional<std::int64_t>>);
static_assert(BindsOne<const std::optional<std::string>&>);
static_assert(!BindsOne<std::string>);
static_assert(!BindsOne<std::optional<std::string>>);

class SqliteDb : public ::testing::Test {
 protected:
  void SetUp() override {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(":memory:", &raw), SQLITE_OK);
    db_.reset(raw);
    sqlite3_extended_result_codes(raw, 1);  // as the store's connections
  }
  sqlite3* db() { return db_.get(); }

 private:
  struct Close {
    void operator()(sqlite3* db) const { sqlite3_close(db); }
  };
  std::unique_ptr<sqlite3, Close> db_;
};

TEST_F(SqliteDb, BindsEachTypeInOrder) {
  Stmt st;
  const std::string text = "alice";
  const std::string bytes("\0\x01\xff", 3);
  const std::optional<std::string> no_text;
  const std::optional<Blob> blob = Blob{bytes};
  const int rc = prepare(db(),
                         "SELECT typeof(?1), ?1, typeof(?2), ?2, typeof(?3), ?3, typeof(?4), ?4,"
                         " typeof(?5), ?5, typeof(?6), typeof(?7), typeof(?8), ?8, typeof(?9), ?9,"
                         " typeof(?10), ?10",
                         st, text, Blob{bytes}, std::int64_t{1} << 40, true, false, std::nullopt,
                         no_text, blob, std::optional<bool>{true}, std::uint32_t{4000000000u});
  ASSERT_EQ(rc, SQLITE_OK) << sqlite3_errmsg(db());
  ASSERT_EQ(sqlite3_step(st.get()), SQLITE_ROW);
  const Row row{st.get()};
  EXPECT_EQ(row.text(0), "text");
  EXPECT_EQ(row.text(1), "alice");
  EXPECT_EQ(row.text(2), "blob");
  EXPECT_EQ(row.blob(3), bytes);
  EXPECT_EQ(row.text(4), "integer");
  EXPECT_EQ(row.integer(5), std::int64_t{1} << 40);
  EXPECT_EQ(row.text(6), "integer");
  EXPECT_EQ(row.opt_boolean(7), true);
  EXPECT_EQ(row.text(8), "integer");
  EXPECT_EQ(row.opt_boolean(9), false);
  EXPECT_EQ(row.text(10), "null");
  EXPECT_EQ(row.text(11), "null");
  EXPECT_EQ(row.text(12), "blob");
  EXPECT_EQ(row.blob(13), bytes);
  EXPECT_EQ(row.text(14), "integer");
  EXPECT_EQ(row.integer(15), 1);
  EXPECT_EQ(row.text(16), "integer");
  EXPECT_EQ(row.opt_integer(17), 4000000000);
}

TEST_F(SqliteDb, ReturnsTheFirstErrorAndBindsNothingAfterIt) {
  Stmt st;
  ASSERT_EQ(prepare(db(), "SELECT ?1, ?2", st), SQLITE_OK);
  // Three values for two parameters: SQLITE_RANGE at the third.
  EXPECT_EQ(bind(st.get(), std::int64_t{1}, std::int64_t{2}, std::int64_t{3}), SQLITE_RANGE);
  ASSERT_EQ(sqlite3_step(st.get()), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(st.get(), 0), 1);
  EXPECT_EQ(sqlite3_column_int64(st.get(), 1), 2);
  // A statement that does not prepare: its error, and run() says so too.
  Stmt bad;
  EXPECT_EQ(prepare(db(), "SELEKT ?1", bad, std::int64_t{1}), SQLITE_ERROR);
  EXPECT_EQ(run(db(), "SELEKT 1"), SQLITE_ERROR);
  const Error e = db_error(db(), SQLITE_ERROR, "testing");
  EXPECT_EQ(e.code, Errc::permanent);
  EXPECT_EQ(e.message.rfind("credential database: testing: ", 0), 0u) << e.message;
  EXPECT_EQ(classify(SQLITE_BUSY), Errc::temporary);
  EXPECT_EQ(classify(SQLITE_CONSTRAINT_PRIMARYKEY), Errc::temporary);
  EXPECT_EQ(classify(SQLITE_NOTADB), Errc::permanent);
}

TEST_F(SqliteDb, RunStepsToTheEndAndTransactionsRollBackUnlessCommitted) {
  ASSERT_TRUE(exec(db(), "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").ok());
  const std::string key = "a";
  EXPECT_EQ(run(db(), "INSERT INTO t VALUES (?1, ?2)", key, 1), SQLITE_DONE);
  EXPECT_EQ(run(db(), "INSERT INTO t VALUES (?1, ?2)", key, 2), SQLITE_CONSTRAINT_PRIMARYKEY);
  {
    Transaction tx(db());
    ASSERT_TRUE(tx.begin().ok());
    EXPECT_EQ(run(db(), "UPDATE t SET v = ?2 WHERE k = ?1", key, 5), SQLITE_DONE);
    EXPECT_EQ(sqlite3_changes(db()), 1);
  }  // rolled back
  {
    Transaction tx(db());
    ASSERT_TRUE(tx.begin().ok());
    EXPECT_EQ(run(db(), "UPDATE t SET v = ?2 WHERE k = ?1", key, 7), SQLITE_DONE);
    ASSERT_TRUE(tx.commit().ok());
  }
  Stmt st;
  ASSERT_EQ(prepare(db(), "SELECT v FROM t WHERE k = ?1", st, std::string_view("a")), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st.get()), SQLITE_ROW);
  EXPECT_EQ(Row{st.get()}.integer(0), 7);
}

}  // namespace
}  // namespace apop::auth::sqlite
