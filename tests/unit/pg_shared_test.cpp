// The PostgreSQL pieces (src/pg). Tests that need a server run when
// APOP_TEST_PG_URL names an empty database they may fill (tests/interop/
// test_scaleout.py runs this binary against its private cluster); without
// it they are skipped. The others (an unreachable server, URL handling) run
// always.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "auth/secret_box.hpp"
#include "pg/shared.hpp"
#include "store/memory.hpp"

namespace apop::pg {
namespace {

auth::SecretBox test_box(unsigned char fill = 9) {
  std::array<unsigned char, 32> k{};
  k.fill(fill);
  return auth::SecretBox::from_key(k);
}

// Port 1 on loopback: connection refused at once.
constexpr const char* kDown = "postgresql://apop@127.0.0.1:1/apop?connect_timeout=2";

std::string test_url() {
  const char* u = std::getenv("APOP_TEST_PG_URL");
  return u ? u : "";
}

// Legitimate skip: these cases need a PostgreSQL server; the interop test
// test_scaleout.py runs this binary against its private cluster with the URL
// set (and fails under CI when it cannot start one).
#define NEED_PG()                                                                    \
  const std::string url = test_url();                                                \
  if (url.empty()) GTEST_SKIP() << "set APOP_TEST_PG_URL to run against PostgreSQL"; \
  wipe(url)

// Drops everything apop creates, so each test starts from an empty database.
void wipe(const std::string& url) {
  Pool pool(url, 1);
  auto lease = pool.acquire();
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  auto r = exec_script(lease->get(),
                       "DROP TABLE IF EXISTS device_secrets, users, policy_defaults, key_check,"
                       " auth_failures, auth_blocks, auth_good, schema_version CASCADE",
                       "wiping");
  ASSERT_TRUE(r.ok()) << r.error().message;
}

std::unique_ptr<PgCredentialStore> open_store(const std::string& url, unsigned char key = 9) {
  auto s = PgCredentialStore::open(std::make_shared<Pool>(url), test_box(key));
  if (!s.ok()) {
    ADD_FAILURE() << s.error().message;
    return nullptr;
  }
  return std::move(s).value();
}

// ---- without a server ------------------------------------------------------

TEST(PgUrl, SchemesAndRedaction) {
  EXPECT_TRUE(is_postgres_url("postgresql://db/apop"));
  EXPECT_TRUE(is_postgres_url("postgres://u@db/apop"));
  EXPECT_FALSE(is_postgres_url("/var/lib/apop/users.sqlite"));
  EXPECT_FALSE(is_postgres_url("mysql://db"));
  EXPECT_EQ(redact("postgresql://apop:s3cret@db:5432/apop"), "postgresql://apop:***@db:5432/apop");
  EXPECT_EQ(redact("postgresql://apop@db/apop?password=s3cret&sslmode=require"),
            "postgresql://apop@db/apop?password=***&sslmode=require");
  EXPECT_EQ(redact("postgresql://db/apop"), "postgresql://db/apop");
  EXPECT_EQ(redact("postgresql://[::1]:5432/apop"), "postgresql://[::1]:5432/apop");
}

TEST(PgDown, StoreOpenIsATemporaryError) {
  auto s = PgCredentialStore::open(std::make_shared<Pool>(kDown), test_box());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::temporary);
  EXPECT_NE(s.error().message.find("cannot connect"), std::string::npos);
}

TEST(PgDown, MalformedUrlIsInvalid) {
  Pool pool("postgresql://apop@127.0.0.1:1/apop?no_such_option=1");
  auto l = pool.acquire();
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code, Errc::invalid) << l.error().message;
  EXPECT_EQ(pool.open_connections(), 0u);  // a failed connect does not hold a slot
}

TEST(PgDown, LockOpenerSaysTemporaryNotInUse) {
  store::MemoryStore inner;
  inner.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  SharedLockOpener locks(kDown, inner);
  auto r = locks.open("alice");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_FALSE(inner.locked("alice"));
  EXPECT_EQ(locks.held(), 0u);
}

TEST(PgDown, MaildropLocksSayTemporary) {
  MaildropLocks locks(kDown);
  auto r = locks.try_lock("alice");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  locks.release("alice");  // not held: ignored
  EXPECT_EQ(locks.held(), 0u);
}

TEST(PgDown, TrackerFallsBackToMemoryAndStillBlocks) {
  auth::ThrottleConfig cfg;
  cfg.block_after = 3;
  PgFailureTracker t(std::make_shared<Pool>(kDown, 1), cfg);
  const auto now = auth::ThrottleClock::now();
  for (int i = 0; i < 3; ++i) t.record_failure("192.0.2.1", "alice", now);
  EXPECT_TRUE(t.status("192.0.2.1", "alice", now).blocked(now));
  EXPECT_GT(t.fallbacks(), 0u);
}

// ---- against a server (APOP_TEST_PG_URL) -------------------------------------

TEST(PgStore, ContractBasics) {
  NEED_PG();
  auto s = open_store(url);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->list()->empty());
  ASSERT_TRUE(s->add("alice", "alice-secret-1").ok());
  ASSERT_TRUE(s->add("bob", "bob secret with spaces").ok());
  ASSERT_TRUE(s->add("Carol.x+y@z", "c").ok());
  auto dup = s->add("alice", "other-secret");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, Errc::exists);
  EXPECT_EQ(dup.error().message.find("other-secret"), std::string::npos);
  EXPECT_EQ(s->add("a/b", "x").error().code, Errc::invalid);

  auto a = s->account("alice");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->password.value_or(""), "alice-secret-1");
  ASSERT_TRUE(s->set_password("alice", "alice-secret-2").ok());
  EXPECT_EQ(s->account("alice")->password.value_or(""), "alice-secret-2");
  EXPECT_EQ(s->account("ALICE").error().code, Errc::not_found);
  EXPECT_EQ(s->account("nobody").error().code, Errc::not_found);
  EXPECT_EQ(s->set_password("nobody", "x").error().code, Errc::not_found);

  auto l = s->list();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0].name, "Carol.x+y@z");  // bytewise order, as SQLite
  EXPECT_EQ((*l)[1].name, "alice");
  EXPECT_TRUE((*l)[1].has_password_copy);

  ASSERT_TRUE(s->remove("bob").ok());
  EXPECT_EQ(s->remove("bob").error().code, Errc::not_found);
  EXPECT_FALSE(s->has_user("bob").value());
  EXPECT_TRUE(s->has_user("alice").value());

  ASSERT_TRUE(s->record_login("alice", 1700000000).ok());
  EXPECT_EQ(s->account("alice")->last_login.value_or(0), 1700000000);
}

TEST(PgStore, DeviceSecretsAndPolicy) {
  NEED_PG();
  auto s = open_store(url);
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->add("alice", "alice-password-1").ok());
  EXPECT_EQ(s->add_device_secret("alice", "phone", "alice-password-1").error().code, Errc::invalid);
  ASSERT_TRUE(s->add_device_secret("alice", "phone", "phone-secret-1").ok());
  EXPECT_EQ(s->add_device_secret("alice", "phone", "x-secret").error().code, Errc::exists);
  EXPECT_EQ(s->add_device_secret("nobody", "phone", "x-secret").error().code, Errc::not_found);
  EXPECT_EQ(s->set_password("alice", "phone-secret-1").error().code, Errc::invalid);
  auto a = s->account("alice");
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->device_secrets.size(), 1u);
  EXPECT_EQ(a->device_secrets[0].secret, "phone-secret-1");
  EXPECT_EQ(s->device_secrets("alice")->size(), 1u);

  auth::Policy p;
  p.device_secrets_only = true;
  p.login_delay = 300;
  p.expire_days = 30;
  ASSERT_TRUE(s->set_policy("alice", p).ok());
  EXPECT_EQ(s->policy("alice").value(), p);
  a = s->account("alice");
  EXPECT_FALSE(a->password.has_value());  // the copy is gone
  EXPECT_FALSE(s->list().value()[0].has_password_copy);
  EXPECT_EQ(a->login_delay.value_or(0), 300u);

  auth::Policy d;
  d.mechanisms = auth::kMechApop | auth::kMechScramSha256;
  d.require_tls = true;
  ASSERT_TRUE(s->set_default_policy(d).ok());
  EXPECT_EQ(s->default_policy().value(), d);
  auth::Policy bad;
  bad.login_delay = 5;
  EXPECT_EQ(s->set_default_policy(bad).error().code, Errc::invalid);
  EXPECT_TRUE(s->account("alice")->policy.require_tls);

  ASSERT_TRUE(s->revoke_device_secret("alice", "phone").ok());
  EXPECT_EQ(s->revoke_device_secret("alice", "phone").error().code, Errc::not_found);
}

TEST(PgStore, SqlMetacharactersAreData) {
  NEED_PG();
  auto s = open_store(url);
  ASSERT_NE(s, nullptr);
  // User names cannot hold quotes (auth/username.hpp); secrets can.
  const std::string nasty = "secret'); DROP TABLE users; --\\x00$1";
  ASSERT_TRUE(s->add("o.brien", nasty).ok());
  EXPECT_EQ(s->account("o.brien")->password.value_or(""), nasty);
  ASSERT_TRUE(s->add_device_secret("o.brien", "x-1", "$2' OR '1'='1").ok());
  EXPECT_EQ(s->account("o.brien")->device_secrets.at(0).secret, "$2' OR '1'='1");
  EXPECT_EQ(s->account("o'brien").error().code, Errc::not_found);
  EXPECT_EQ(s->list()->size(), 1u);
}

TEST(PgStore, AnotherKeyIsRefused) {
  NEED_PG();
  { ASSERT_NE(open_store(url, 9), nullptr); }
  auto other = PgCredentialStore::open(std::make_shared<Pool>(url), test_box(7));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, Errc::permanent);
  EXPECT_NE(other.error().message.find("secret.key"), std::string::npos);
}

// Issue 17 item 7: the same key check as the SQLite store (auth::SecretBox),
// checked in the schema transaction; a store opened without a key (`apop
// deliver`) writes nothing; holds_sealed_secrets() tells whether a missing
// key file may be created.
TEST(PgStore, KeyCheckWithoutKeyAndWithoutCheckValue) {
  NEED_PG();
  auto pool = std::make_shared<Pool>(url);
  EXPECT_FALSE(PgCredentialStore::holds_sealed_secrets(*pool).value());  // no schema yet
  {
    auto keyless = PgCredentialStore::open(pool, auth::SecretBox::without_key());
    ASSERT_TRUE(keyless.ok()) << keyless.error().message;
  }
  EXPECT_FALSE(PgCredentialStore::holds_sealed_secrets(*pool).value());  // schema, nothing sealed
  {
    auto s = open_store(url, 9);
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(s->add("alice", "alice-secret-1").ok());
  }
  EXPECT_TRUE(PgCredentialStore::holds_sealed_secrets(*pool).value());
  // A check value lost (or never written): the stored secret decides.
  auto lease = pool->acquire();
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(exec_script(lease->get(), "DELETE FROM key_check", "dropping the check").ok());
  EXPECT_TRUE(PgCredentialStore::holds_sealed_secrets(*pool).value());  // the password copy
  auto wrong = PgCredentialStore::open(pool, test_box(7));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, Errc::permanent);
  auto keyless = PgCredentialStore::open(pool, auth::SecretBox::without_key());
  ASSERT_TRUE(keyless.ok());
  EXPECT_TRUE((*keyless)->has_user("alice").value());
  EXPECT_FALSE((*keyless)->account("alice").ok());
  auto count = [&] {
    auto r = exec(lease->get(), "SELECT count(*) FROM key_check", {}, "counting");
    return r.ok() ? r->integer(0, 0) : -1;
  };
  EXPECT_EQ(count(), 0);  // neither the wrong key nor no key wrote one
  ASSERT_NE(open_store(url, 9), nullptr);
  EXPECT_EQ(count(), 1);
  EXPECT_FALSE(PgCredentialStore::open(pool, test_box(7)).ok());
}

TEST(PgStore, UpgradesVersion1AndRefusesNewer) {
  NEED_PG();
  {
    // A version 1 database (accounts only, no mail_location) as an earlier
    // apop left it.
    auto s = open_store(url);
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(s->add("alice", "alice-secret-1").ok());
    auto lease = s->pool()->acquire();
    ASSERT_TRUE(lease.ok());
    ASSERT_TRUE(exec_script(lease->get(),
                            "DROP TABLE auth_failures, auth_blocks, auth_good;"
                            "ALTER TABLE users DROP COLUMN mail_location;"
                            "ALTER TABLE users DROP COLUMN quota_bytes;"
                            "ALTER TABLE users DROP COLUMN quota_messages;"
                            "UPDATE schema_version SET version = 1",
                            "downgrade")
                    .ok());
  }
  Pool pool(url, 1);
  EXPECT_EQ(schema_version(pool).value(), 1);
  auto s = open_store(url);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(schema_version(pool).value(), kSchemaVersion);
  EXPECT_EQ(s->account("alice")->password.value_or(""), "alice-secret-1");
  // Version 3's column: an account's own mail location.
  EXPECT_FALSE(s->mail_location("alice").value().has_value());
  ASSERT_TRUE(s->set_mail_location("alice", std::string("mbox:/var/mail/alice")).ok());
  EXPECT_EQ(s->mail_location("alice").value().value_or(""), "mbox:/var/mail/alice");
  EXPECT_EQ(s->list().value().at(0).mail_location.value_or(""), "mbox:/var/mail/alice");
  EXPECT_EQ(s->mail_location("nobody").error().code, Errc::not_found);
  // Version 4's columns: an account's own quota limits.
  EXPECT_EQ(s->quota("alice").value(), auth::AccountQuota{});
  ASSERT_TRUE(s->set_quota("alice", auth::AccountQuota{1000u, 0u}).ok());
  EXPECT_EQ(s->quota("alice").value(), (auth::AccountQuota{1000u, 0u}));
  EXPECT_EQ(s->account("alice")->quota, (auth::AccountQuota{1000u, 0u}));
  EXPECT_EQ(s->list().value().at(0).quota, (auth::AccountQuota{1000u, 0u}));
  EXPECT_EQ(s->quota("nobody").error().code, Errc::not_found);
  // Imported foreign hashes: stored, listed by scheme, no sealed copy.
  const std::string hash = "{SSHA256}EGYbNuZMfiT9YAWyBiAs4nOeCNpfnvAg0ALlAex9rEJOYUNsMTIzNA==";
  ASSERT_TRUE(s->import_foreign_hash("bob", hash, false).ok());
  EXPECT_EQ(s->import_foreign_hash("bob", hash, false).error().code, Errc::exists);
  ASSERT_TRUE(s->import_foreign_hash("bob", hash, true).ok());
  auto bob = s->account("bob");
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->password_hash, hash);
  EXPECT_FALSE(bob->password.has_value());
  EXPECT_EQ(s->list().value().at(1).foreign_scheme, "SSHA256");
  {
    auto lease = pool.acquire();
    ASSERT_TRUE(exec_script(lease->get(), "UPDATE schema_version SET version = 99", "up").ok());
  }
  auto newer = PgCredentialStore::open(std::make_shared<Pool>(url), test_box());
  ASSERT_FALSE(newer.ok());
  EXPECT_EQ(newer.error().code, Errc::permanent);
  EXPECT_NE(newer.error().message.find("newer"), std::string::npos);
}

TEST(PgStore, PoolIsThreadSafe) {
  NEED_PG();
  auto s = PgCredentialStore::open(std::make_shared<Pool>(url, 3), test_box());
  ASSERT_TRUE(s.ok());
  auto& store = **s;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        const std::string u = "u" + std::to_string(t) + "x" + std::to_string(i);
        if (!store.add(u, "secret-" + u).ok()) ++failures;
        auto a = store.account(u);
        if (!a.ok() || a->password.value_or("") != "secret-" + u) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store.list()->size(), 30u);
  EXPECT_LE(store.pool()->open_connections(), 3u);
}

TEST(PgTracker, TwoServersCountAsOne) {
  NEED_PG();
  ASSERT_NE(open_store(url), nullptr);  // the schema
  auth::ThrottleConfig cfg;
  cfg.block_after = 4;
  PgFailureTracker a(std::make_shared<Pool>(url, 2), cfg), b(std::make_shared<Pool>(url, 2), cfg);
  auto now = auth::ThrottleClock::now();
  for (int i = 0; i < 3; ++i) {
    auto s = (i % 2 ? a : b).record_failure("192.0.2.1", "Alice", now);
    EXPECT_EQ(s.address_failures, static_cast<unsigned>(i + 1));
    EXPECT_FALSE(s.blocked(now));
  }
  EXPECT_EQ(a.status("192.0.2.1", "alice", now).user_failures, 3u);  // case-insensitive
  auto s = a.record_failure("192.0.2.1", "alice", now);
  EXPECT_TRUE(s.blocked(now));
  EXPECT_TRUE(b.status("192.0.2.1", "bob", now).blocked(now));
  EXPECT_FALSE(b.status("192.0.2.2", "bob", now).blocked(now));
  // Not counted while blocked; the block ends on time and the count restarts.
  b.record_failure("192.0.2.1", "alice", now);
  const auto later = now + cfg.block_duration + std::chrono::seconds(1);
  auto after = b.status("192.0.2.1", "alice", later);
  EXPECT_FALSE(after.blocked(later));
  EXPECT_EQ(after.address_failures, 0u);
  // Failures age out of the window.
  EXPECT_EQ(a.status("", "alice", now + cfg.window + std::chrono::seconds(1)).user_failures, 0u);
  // Known-good pairs are shared too.
  a.record_success("192.0.2.9", "alice", now);
  EXPECT_TRUE(b.status("192.0.2.9", "ALICE", now).known_good);
  EXPECT_FALSE(b.status("192.0.2.8", "alice", now).known_good);
  EXPECT_EQ(a.fallbacks() + b.fallbacks(), 0u);
}

TEST(PgTracker, ConcurrentFailuresBlockExactlyOnce) {
  NEED_PG();
  ASSERT_NE(open_store(url), nullptr);
  auth::ThrottleConfig cfg;
  cfg.block_after = 10;
  auto pool = std::make_shared<Pool>(url, 4);
  PgFailureTracker t(pool, cfg);
  const auto now = auth::ThrottleClock::now();
  std::atomic<int> saw_block{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 5; ++k) {
        auto s = t.record_failure("198.51.100.1", "", now);
        if (s.blocked(now) && s.address_failures >= cfg.block_after) ++saw_block;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(saw_block.load(), 1);  // exactly one failure reached the block
  EXPECT_TRUE(t.status("198.51.100.1", "", now).blocked(now));
}

TEST(PgLocks, InUseAcrossServersAndReleasedOnClose) {
  NEED_PG();
  store::MemoryStore disk_a, disk_b;  // two servers' local locks
  disk_a.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  disk_b.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  auto a = std::make_unique<SharedLockOpener>(url, disk_a);
  SharedLockOpener b(url, disk_b);
  auto held = a->open("alice");
  ASSERT_TRUE(held.ok()) << held.error().message;
  auto second = b.open("alice");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::in_use);
  EXPECT_FALSE(disk_b.locked("alice"));  // refused before the local open
  EXPECT_TRUE(b.open("bob").ok());       // other users are not affected
  // The same server: the shared lock stacks, the local lock refuses.
  auto again = a->open("alice");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::in_use);
  EXPECT_EQ(a->held(), 1u);
  held.value().reset();  // session ends
  EXPECT_EQ(a->held(), 0u);
  auto now_b = b.open("alice");
  ASSERT_TRUE(now_b.ok()) << now_b.error().message;
  now_b.value().reset();
  a.reset();
  // A server that dies holding a lock (no destructor runs): its connection
  // closes and the lock goes with it.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    store::MemoryStore disk_c;
    disk_c.add_message("alice", "Subject: x\r\n\r\nx\r\n");
    SharedLockOpener c(url, disk_c);
    auto m = c.open("alice");
    ::_exit(m.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child could not lock";
  // The backend notices the closed connection at once; allow it a moment.
  Result<std::unique_ptr<pop3::Maildrop>> after = make_error(Errc::in_use, "not tried");
  for (int i = 0; i < 50 && !after.ok(); ++i) {
    after = b.open("alice");
    if (!after.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(after.ok()) << after.error().message;
}

// The lock part alone, as the auth process uses it for its workers: stacked
// per connection, released one by one, only what was taken.
TEST(PgLocks, MaildropLocksStackAndReleaseOneByOne) {
  NEED_PG();
  MaildropLocks mine(url), other(url);
  ASSERT_TRUE(mine.try_lock("alice").value());
  ASSERT_TRUE(mine.try_lock("alice").value());  // stacks (two workers of one server)
  EXPECT_EQ(mine.held(), 2u);
  auto elsewhere = other.try_lock("alice");
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.error().message;
  EXPECT_FALSE(*elsewhere);
  EXPECT_EQ(other.held(), 0u);
  other.release("alice");  // not held there: ignored, mine keeps it
  EXPECT_FALSE(other.try_lock("alice").value());
  mine.release("alice");
  EXPECT_FALSE(other.try_lock("alice").value());  // one still held
  mine.release("alice");
  EXPECT_EQ(mine.held(), 0u);
  EXPECT_TRUE(other.try_lock("alice").value());
  other.release("alice");
}

}  // namespace
}  // namespace apop::pg
