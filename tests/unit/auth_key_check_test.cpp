// The key check value (issue 17 item 7): a credential store opened with
// another key than the one its secrets are sealed with refuses before it
// changes anything; a store opened without a key (`apop deliver`) reads
// nothing secret; SecretBox::load never creates the key file.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <array>
#include <filesystem>
#include <string>

#include "auth/secret_box.hpp"
#include "auth/sqlite_credential_store.hpp"
#include "temp_dir.hpp"

namespace apop::auth {
namespace {

namespace fs = std::filesystem;
using ::apop::test::slurp;
using ::apop::test::TempDir;

SecretBox box_of(unsigned char fill) {
  std::array<unsigned char, 32> k{};
  k.fill(fill);
  return SecretBox::from_key(k);
}

// One integer from the database, read past the store ("" table: -1).
long long scalar(const fs::path& db, const char* sql) {
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return -1;
  sqlite3_stmt* st = nullptr;
  long long v = -1;
  if (sqlite3_prepare_v2(raw, sql, -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(raw);
  return v;
}

void raw_exec(const fs::path& db, const char* sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(h);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// A database as apop before schema version 5 left it: no key check value.
void back_to_version_4(const fs::path& db) {
  raw_exec(db, "DROP TABLE key_check; PRAGMA user_version = 4;");
}

TEST(AuthKeyCheck, SealedCheckOpensOnlyWithItsKey) {
  SecretBox a = box_of(1), b = box_of(2);
  auto sealed = a.seal_key_check();
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(a.opens_key_check(*sealed));
  EXPECT_FALSE(b.opens_key_check(*sealed));
  EXPECT_FALSE(a.opens_key_check("garbage"));
  // The value PostgreSQL databases already hold: the same constant and aad.
  auto opened = a.open(*sealed, "\x01key-check");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "apop secret.key check");
}

TEST(AuthKeyCheck, LoadNeverCreatesAndNamesTheFile) {
  TempDir dir;
  const fs::path key = dir.path() / "secret.key";
  auto missing = SecretBox::load(key);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_FALSE(fs::exists(key));
  auto created = SecretBox::open_or_create(key);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->key_file(), key.string());
  auto loaded = SecretBox::load(key);
  ASSERT_TRUE(loaded.ok());
  auto sealed = created->seal_key_check();
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(loaded->opens_key_check(*sealed));
  // The mismatch message names the key file and the database.
  auto e = loaded->key_mismatch("/x/users.sqlite");
  EXPECT_EQ(e.code, Errc::permanent);
  EXPECT_NE(e.message.find("key file " + key.string()), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("/x/users.sqlite"), std::string::npos) << e.message;
}

TEST(AuthKeyCheck, AnotherKeyIsRefusedAndTheDatabaseIsUnchanged) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  {
    auto s = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-secret-1").ok());
  }
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM key_check"), 1);
  const std::string before = slurp(db);
  auto other = SqliteCredentialStore::open(db, box_of(10));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, Errc::permanent);
  EXPECT_NE(other.error().message.find(db.string()), std::string::npos) << other.error().message;
  EXPECT_NE(other.error().message.find("not the key"), std::string::npos);
  EXPECT_EQ(slurp(db), before);
  auto right = SqliteCredentialStore::open(db, box_of(9));
  ASSERT_TRUE(right.ok()) << right.error().message;
  EXPECT_EQ((*right)->account("alice")->password.value_or(""), "alice-secret-1");
}

TEST(AuthKeyCheck, OldDatabaseGetsTheCheckOnlyFromTheKeyThatOpensItsSecrets) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  {
    auto s = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-secret-1").ok());
  }
  back_to_version_4(db);
  const std::string before = slurp(db);
  // A wrong key: refused, and the upgrade is rolled back with it.
  auto wrong = SqliteCredentialStore::open(db, box_of(10));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, Errc::permanent);
  EXPECT_EQ(scalar(db, "PRAGMA user_version"), 4);
  EXPECT_EQ(slurp(db), before);
  // The right key: upgraded, the check written.
  {
    auto right = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(right.ok()) << right.error().message;
  }
  EXPECT_EQ(scalar(db, "PRAGMA user_version"), 6);
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM key_check"), 1);
  EXPECT_FALSE(SqliteCredentialStore::open(db, box_of(10)).ok());
}

TEST(AuthKeyCheck, OldDatabaseWithOnlyDeviceSecretsIsCheckedToo) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  {
    auto s = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-secret-1").ok());
    ASSERT_TRUE((*s)->add_device_secret("alice", "phone", "phone-secret-123").ok());
  }
  back_to_version_4(db);
  raw_exec(db, "UPDATE users SET sealed_password = NULL");  // device-secrets-only
  EXPECT_FALSE(SqliteCredentialStore::open(db, box_of(10)).ok());
  EXPECT_EQ(scalar(db, "PRAGMA user_version"), 4);
  EXPECT_TRUE(SqliteCredentialStore::open(db, box_of(9)).ok());
}

TEST(AuthKeyCheck, OldDatabaseWithoutSecretsTakesAnyKey) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  { ASSERT_TRUE(SqliteCredentialStore::open(db, box_of(9)).ok()); }
  back_to_version_4(db);
  { ASSERT_TRUE(SqliteCredentialStore::open(db, box_of(10)).ok()); }
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM key_check"), 1);
  EXPECT_FALSE(SqliteCredentialStore::open(db, box_of(9)).ok());  // now sealed with 10
}

TEST(AuthKeyCheck, WithoutAKeyOnlyWhatNeedsNoSecretWorks) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  {
    auto s = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-secret-1").ok());
    ASSERT_TRUE((*s)->set_mail_location("alice", std::string("mbox:/var/mail/%u")).ok());
  }
  back_to_version_4(db);
  auto s = SqliteCredentialStore::open(db, SecretBox::without_key());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE((*s)->has_user("alice").value());
  EXPECT_FALSE((*s)->has_user("bob").value());
  EXPECT_EQ((*s)->mail_location("alice").value(), "mbox:/var/mail/%u");
  auto a = (*s)->account("alice");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code, Errc::permanent);
  EXPECT_FALSE((*s)->add("bob", "bob-secret-22").ok());
  s->reset();
  // No check value was written without the key; the right key writes it.
  EXPECT_EQ(scalar(db, "SELECT count(*) FROM key_check"), 0);
  EXPECT_FALSE(SqliteCredentialStore::open(db, box_of(10)).ok());
  EXPECT_TRUE(SqliteCredentialStore::open(db, box_of(9)).ok());
}

TEST(AuthKeyCheck, HoldsSealedSecretsReadsWithoutChanging) {
  TempDir dir;
  const fs::path db = dir.path() / "users.sqlite";
  EXPECT_FALSE(SqliteCredentialStore::holds_sealed_secrets(db).value());
  EXPECT_FALSE(fs::exists(db));  // not created
  { ASSERT_TRUE(SqliteCredentialStore::open(db, SecretBox::without_key()).ok()); }
  EXPECT_FALSE(SqliteCredentialStore::holds_sealed_secrets(db).value());  // nothing sealed
  { ASSERT_TRUE(SqliteCredentialStore::open(db, box_of(9)).ok()); }
  EXPECT_TRUE(SqliteCredentialStore::holds_sealed_secrets(db).value());  // the check value
  back_to_version_4(db);
  EXPECT_FALSE(SqliteCredentialStore::holds_sealed_secrets(db).value());
  {
    auto s = SqliteCredentialStore::open(db, box_of(9));
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-secret-1").ok());
  }
  back_to_version_4(db);
  EXPECT_TRUE(SqliteCredentialStore::holds_sealed_secrets(db).value());  // a password copy
}

}  // namespace
}  // namespace apop::auth
