// RFC 2449 LOGIN-DELAY / EXPIRE per account in both CredentialStores, the
// last-login record, and the SQLite schema upgrade to version 3.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "auth/authenticator.hpp"
#include "auth/digest.hpp"
#include "auth/memory_credential_store.hpp"
#include "auth/secret_box.hpp"
#include "auth/sqlite_credential_store.hpp"
#include "common/limits.hpp"
#include "temp_dir.hpp"

namespace apop::auth {
namespace {

namespace fs = std::filesystem;

using TempDir = ::apop::test::TempDir;

SecretBox test_box() {
  std::array<unsigned char, 32> k{};
  k.fill(7);
  return SecretBox::from_key(k);
}

struct Factory {
  const char* name;
  std::function<std::unique_ptr<CredentialStore>(const fs::path&)> make;
};

class LoginLimitsContract : public ::testing::TestWithParam<Factory> {
 protected:
  void SetUp() override {
    store_ = GetParam().make(dir_.path());
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->add("alice", "alice-long-secret").ok());
    ASSERT_TRUE(store_->add("bob", "bobs-long-secret").ok());
  }
  TempDir dir_;
  std::unique_ptr<CredentialStore> store_;
};

TEST_P(LoginLimitsContract, NewAccountsFollowTheServerDefaults) {
  auto p = store_->policy("alice");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->login_delay);
  EXPECT_FALSE(p->expire_days);
  auto a = store_->account("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->login_delay);
  EXPECT_FALSE(a->expire_days);
  EXPECT_FALSE(a->last_login);
}

TEST_P(LoginLimitsContract, PolicyRoundTripsAndKeepsTheOtherFields) {
  Policy p;
  p.login_delay = 900;
  p.expire_days = kExpireNever;
  p.require_tls = true;
  ASSERT_TRUE(store_->set_policy("alice", p).ok());
  auto back = store_->policy("alice");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, p);
  auto a = store_->account("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->login_delay, std::optional<std::uint32_t>(900));
  EXPECT_EQ(a->expire_days, std::optional<std::int64_t>(kExpireNever));
  EXPECT_TRUE(a->policy.require_tls);
  auto users = store_->list();
  ASSERT_TRUE(users.ok());
  EXPECT_EQ((*users)[0].policy, p);
  EXPECT_FALSE((*users)[1].policy.login_delay);  // bob is untouched

  p.login_delay.reset();
  p.expire_days = 0;
  ASSERT_TRUE(store_->set_policy("alice", p).ok());
  EXPECT_EQ(store_->policy("alice").value(), p);
}

TEST_P(LoginLimitsContract, OutOfRangeValuesAreRefused) {
  Policy p;
  p.login_delay = limits::kMaxLoginDelay + 1;
  EXPECT_EQ(store_->set_policy("alice", p).error().code, Errc::invalid);
  p.login_delay.reset();
  p.expire_days = -2;
  EXPECT_EQ(store_->set_policy("alice", p).error().code, Errc::invalid);
  p.expire_days = limits::kMaxExpireDays + 1;
  EXPECT_EQ(store_->set_policy("alice", p).error().code, Errc::invalid);
  p.expire_days = limits::kMaxExpireDays;
  EXPECT_TRUE(store_->set_policy("alice", p).ok());
}

TEST_P(LoginLimitsContract, TheDefaultsAreServeSettingsNotStoredOnes) {
  Policy d;
  d.login_delay = 60;
  EXPECT_EQ(store_->set_default_policy(d).error().code, Errc::invalid);
  d.login_delay.reset();
  d.expire_days = 3;
  EXPECT_EQ(store_->set_default_policy(d).error().code, Errc::invalid);
  EXPECT_FALSE(store_->default_policy()->expire_days);
}

TEST_P(LoginLimitsContract, RecordLoginIsReportedByAccountAndList) {
  ASSERT_TRUE(store_->record_login("alice", 1'700'000'123).ok());
  auto a = store_->account("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->last_login, std::optional<std::int64_t>(1'700'000'123));
  EXPECT_FALSE(store_->account("bob")->last_login);
  auto users = store_->list();
  ASSERT_TRUE(users.ok());
  EXPECT_EQ((*users)[0].last_login, std::optional<std::int64_t>(1'700'000'123));
  ASSERT_TRUE(store_->record_login("alice", 1'700'000'200).ok());
  EXPECT_EQ(store_->account("alice")->last_login, std::optional<std::int64_t>(1'700'000'200));
  EXPECT_EQ(store_->record_login("nobody", 1).error().code, Errc::not_found);
}

TEST_P(LoginLimitsContract, TheAuthenticatorReportsTheLimitsAndRecordsLogins) {
  Policy p;
  p.login_delay = 30;
  p.expire_days = 7;
  ASSERT_TRUE(store_->set_policy("alice", p).ok());
  StoreAuthenticator auth(*store_);
  const std::string ts = "<1.2@host>";
  auto ok = auth.verify_apop("alice", ts, md5_hex(ts + "alice-long-secret"), {});
  ASSERT_TRUE(ok.ok);
  EXPECT_EQ(ok.limits.login_delay, std::optional<std::uint32_t>(30));
  EXPECT_EQ(ok.limits.expire_days, std::optional<std::int64_t>(7));
  EXPECT_FALSE(ok.limits.last_login);
  auth.record_login("alice", 4242);
  auto again = auth.verify_plain("alice", "alice-long-secret", {});
  ASSERT_TRUE(again.ok);
  EXPECT_EQ(again.limits.last_login, std::optional<std::int64_t>(4242));
  // A failure reports nothing of the account.
  auto bad = auth.verify_plain("alice", "wrong-secret-here", {});
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.limits, pop3::LoginLimits{});
}

INSTANTIATE_TEST_SUITE_P(
    Impl, LoginLimitsContract,
    ::testing::Values(Factory{"Memory",
                              [](const fs::path&) -> std::unique_ptr<CredentialStore> {
                                return std::make_unique<MemoryCredentialStore>();
                              }},
                      Factory{"Sqlite",
                              [](const fs::path& dir) -> std::unique_ptr<CredentialStore> {
                                auto r = SqliteCredentialStore::open(dir / "users.db", test_box());
                                if (!r.ok()) {
                                  ADD_FAILURE() << r.error().message;
                                  return nullptr;
                                }
                                return std::move(r).value();
                              }}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- SQLite ------------------------------------------------------------------

int user_version(const fs::path& db) {
  sqlite3* raw = nullptr;
  if (sqlite3_open(db.c_str(), &raw) != SQLITE_OK) return -1;
  sqlite3_stmt* st = nullptr;
  int v = -1;
  if (sqlite3_prepare_v2(raw, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  sqlite3_close(raw);
  return v;
}

TEST(AuthSqliteLoginLimits, PersistAcrossReopen) {
  TempDir dir;
  const fs::path db = dir.path() / "users.db";
  {
    auto s = SqliteCredentialStore::open(db, test_box());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-long-secret").ok());
    Policy p;
    p.login_delay = 120;
    p.expire_days = 14;
    ASSERT_TRUE((*s)->set_policy("alice", p).ok());
    ASSERT_TRUE((*s)->record_login("alice", 99).ok());
  }
  EXPECT_EQ(user_version(db), 6);
  auto s = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(s.ok());
  auto a = (*s)->account("alice");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->login_delay, std::optional<std::uint32_t>(120));
  EXPECT_EQ(a->expire_days, std::optional<std::int64_t>(14));
  EXPECT_EQ(a->last_login, std::optional<std::int64_t>(99));
}

// A version 2 database as apop wrote it before LOGIN-DELAY/EXPIRE.
TEST(AuthSqliteLoginLimits, UpgradesVersion2Databases) {
  TempDir dir;
  const fs::path db = dir.path() / "users.db";
  SecretBox box = test_box();
  auto derived = derive_password("v2-password-long");
  ASSERT_TRUE(derived.ok());
  auto sealed = box.seal("v2-password-long", "alice");
  ASSERT_TRUE(sealed.ok());
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(db.c_str(), &raw), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(raw,
                           "CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL,"
                           " created INTEGER NOT NULL, updated INTEGER NOT NULL,"
                           " password_hash TEXT NOT NULL, scram_sha256 TEXT NOT NULL,"
                           " scram_sha1 TEXT NOT NULL, sealed_password BLOB, mechanisms TEXT,"
                           " device_secrets_only INTEGER, apop_requires_tls INTEGER,"
                           " require_tls INTEGER);"
                           "CREATE TABLE device_secrets (user TEXT NOT NULL REFERENCES"
                           " users(name) ON DELETE CASCADE, name TEXT NOT NULL,"
                           " sealed BLOB NOT NULL, created INTEGER NOT NULL,"
                           " PRIMARY KEY (user, name));"
                           "CREATE TABLE policy_defaults (id INTEGER PRIMARY KEY CHECK (id = 1),"
                           " mechanisms TEXT, device_secrets_only INTEGER,"
                           " apop_requires_tls INTEGER, require_tls INTEGER);"
                           "INSERT INTO policy_defaults (id) VALUES (1);"
                           "PRAGMA user_version = 2;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(raw,
                                 "INSERT INTO users (name, created, updated, password_hash,"
                                 " scram_sha256, scram_sha1, sealed_password, require_tls)"
                                 " VALUES ('alice', 1700000000, 1700000001, ?1, ?2, ?3, ?4, 1)",
                                 -1, &st, nullptr),
              SQLITE_OK);
    const std::string v256 = encode_verifier(derived->scram_sha256);
    const std::string v1 = encode_verifier(derived->scram_sha1);
    sqlite3_bind_text(st, 1, derived->hash.data(), static_cast<int>(derived->hash.size()),
                      SQLITE_STATIC);
    sqlite3_bind_text(st, 2, v256.data(), static_cast<int>(v256.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 3, v1.data(), static_cast<int>(v1.size()), SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, sealed->data(), static_cast<int>(sealed->size()), SQLITE_STATIC);
    ASSERT_EQ(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(raw);
  }
  auto s = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(user_version(db), 6);  // upgraded through 3 to the current schema
  auto a = (*s)->account("alice");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->password.value_or(""), "v2-password-long");  // the rest survived
  EXPECT_TRUE(a->policy.require_tls);
  EXPECT_FALSE(a->login_delay);
  EXPECT_FALSE(a->expire_days);
  EXPECT_FALSE(a->last_login);
  Policy p = (*s)->policy("alice").value();
  p.login_delay = 300;
  ASSERT_TRUE((*s)->set_policy("alice", p).ok());
  ASSERT_TRUE((*s)->record_login("alice", 1234).ok());
  EXPECT_EQ((*s)->account("alice")->login_delay, std::optional<std::uint32_t>(300));
  EXPECT_EQ((*s)->list()->at(0).created, 1700000000);
  // Opening again does not migrate twice.
  s = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ((*s)->account("alice")->last_login, std::optional<std::int64_t>(1234));
}

TEST(AuthSqliteLoginLimits, WriteBehindReportsAtOnceAndWritesLater) {
  TempDir dir;
  const fs::path db = dir.path() / "users.db";
  {
    auto s = SqliteCredentialStore::open(db, test_box());
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->add("alice", "alice-long-secret").ok());
    ASSERT_TRUE((*s)->add("bob", "bobs-long-secret").ok());
    ASSERT_TRUE((*s)->record_login("bob", 50).ok());
    // A long interval: nothing is written unless flushed.
    ASSERT_TRUE((*s)->defer_login_records(std::chrono::hours(1)).ok());
    ASSERT_TRUE((*s)->record_login("alice", 1000).ok());
    ASSERT_TRUE((*s)->record_login("nobody", 1000).ok());  // noted, never written
    // This store reports it at once (LOGIN-DELAY across sessions)...
    EXPECT_EQ((*s)->account("alice")->last_login, std::optional<std::int64_t>(1000));
    EXPECT_EQ((*s)->list()->at(0).last_login, std::optional<std::int64_t>(1000));
    EXPECT_EQ((*s)->account("bob")->last_login, std::optional<std::int64_t>(50));
    // ...another connection only once written.
    auto other = SqliteCredentialStore::open(db, test_box());
    ASSERT_TRUE(other.ok());
    EXPECT_FALSE((*other)->account("alice")->last_login);
    ASSERT_TRUE((*s)->flush_login_records().ok());
    EXPECT_EQ((*other)->account("alice")->last_login, std::optional<std::int64_t>(1000));
    // The latest noted time wins, even when the clock went back.
    ASSERT_TRUE((*s)->record_login("alice", 900).ok());
    EXPECT_EQ((*s)->account("alice")->last_login, std::optional<std::int64_t>(900));
    ASSERT_TRUE((*s)->record_login("bob", 2000).ok());
  }  // the destructor writes what is left
  auto s = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->account("alice")->last_login, std::optional<std::int64_t>(900));
  EXPECT_EQ((*s)->account("bob")->last_login, std::optional<std::int64_t>(2000));
}

TEST(AuthSqliteLoginLimits, WriteBehindThreadWritesWithinTheInterval) {
  TempDir dir;
  const fs::path db = dir.path() / "users.db";
  auto s = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->add("alice", "alice-long-secret").ok());
  ASSERT_TRUE((*s)->defer_login_records(std::chrono::milliseconds(20)).ok());
  ASSERT_TRUE((*s)->record_login("alice", 4242).ok());
  auto other = SqliteCredentialStore::open(db, test_box());
  ASSERT_TRUE(other.ok());
  std::optional<std::int64_t> seen;
  for (int i = 0; i < 500 && !seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    seen = (*other)->account("alice")->last_login;
  }
  EXPECT_EQ(seen, std::optional<std::int64_t>(4242));
}

}  // namespace
}  // namespace apop::auth
