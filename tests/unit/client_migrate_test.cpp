// The migration engine (src/client/migrate.hpp) against the scripted POP3
// server of client_fake_pop.hpp, into a real Maildir in a temporary
// directory: the UIDL map, the state file, resumption after a cut and the
// one-migration-per-Maildir lock, without sockets.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "client/migrate.hpp"
#include "client_fake_pop.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"
#include "temp_dir.hpp"

namespace apop::client {
namespace {

namespace fs = std::filesystem;
using test::FakePop;
using test::FakeTransport;

class MigrateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pop_.msgs = {{"uid-a", "Subject: a\n\nfirst\n"},
                 {"uid-b", "Subject: b\n\n.dotted line\n"},
                 {"uid-c", "Subject: c\n\nthird\n"}};
    opts_.user = "alice";
    opts_.password = test::kSecret;
    opts_.auth = AuthMech::apop;
    opts_.tls_mode = TlsMode::none;
  }

  Result<std::unique_ptr<Migration>> open() { return Migration::open(maildir_, source_); }

  // One whole run: open, one session, close (the lock is released).
  FetchSummary run(MigrationCounts* counts = nullptr) {
    auto m = open();
    EXPECT_TRUE(m) << m.error().message;
    if (!m) return {};
    FakeTransport t(pop_);
    FetchSummary s = (*m)->run(t, opts_);
    if (counts != nullptr) *counts = (*m)->counts(s);
    return s;
  }

  // Base names of the messages in new/.
  std::set<std::string> published() const {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(maildir_ / "new")) {
      out.emplace(store::maildir_base_name(e.path().filename().string()));
    }
    return out;
  }
  // The UIDLs pinned for the messages in new/.
  std::multiset<std::string> pinned_live() const {
    auto map = store::load_uidl_map(maildir_);
    EXPECT_TRUE(map);
    std::multiset<std::string> out;
    for (const auto& base : published()) {
      auto it = map->by_base.find(base);
      if (it != map->by_base.end()) out.insert(it->second);
    }
    return out;
  }
  bool sent(std::string_view prefix) const {
    return std::any_of(pop_.commands.begin(), pop_.commands.end(),
                       [&](const std::string& c) { return c.rfind(prefix, 0) == 0; });
  }

  ::apop::test::TempDir tmp_{"apop-migrate"};
  fs::path maildir_ = tmp_.path() / "Maildir";
  MigrationSource source_{"old.example", 110, "alice"};
  FakePop pop_;
  FetchOptions opts_;
};

const std::multiset<std::string> kAll = {"uid-a", "uid-b", "uid-c"};

TEST_F(MigrateTest, CopiesEveryMessageWithItsUidlAndNeverDeletes) {
  MigrationCounts n;
  opts_.keep = false;  // forced to keep by Migration::run
  auto s = run(&n);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.stored, 3u);
  EXPECT_EQ(n.copied, 3u);
  EXPECT_EQ(n.already_migrated, 0u);
  EXPECT_FALSE(sent("DELE"));
  EXPECT_EQ(pop_.live().size(), 3u);
  EXPECT_EQ(published().size(), 3u);
  EXPECT_EQ(pinned_live(), kAll);
  EXPECT_TRUE(fs::exists(maildir_ / "apop-migrate-old.example-110-alice.state"));
}

TEST_F(MigrateTest, ARerunCopiesNothing) {
  ASSERT_EQ(run().status, FetchStatus::ok);
  pop_.commands.clear();
  MigrationCounts n;
  auto s = run(&n);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(n.copied, 0u);
  EXPECT_EQ(n.already_migrated, 3u);
  EXPECT_FALSE(sent("RETR"));
  EXPECT_EQ(published().size(), 3u);
}

TEST_F(MigrateTest, ACutBeforeTheStateSaveDoesNotCopyTwice) {
  // Steps 1-3 done for every message, step 4 (the state file) lost: the map
  // entries with a live file are recognised.
  ASSERT_EQ(run().status, FetchStatus::ok);
  fs::remove(maildir_ / "apop-migrate-old.example-110-alice.state");
  auto m = open();
  ASSERT_TRUE(m) << m.error().message;
  FakeTransport t(pop_);
  auto s = (*m)->run(t, opts_);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ((*m)->already_present(), 3u);
  EXPECT_EQ((*m)->counts(s).copied, 0u);
  EXPECT_EQ((*m)->counts(s).already_migrated, 3u);
  EXPECT_EQ(published().size(), 3u);
}

TEST_F(MigrateTest, AMapEntryWithoutItsFileIsCopiedAgain) {
  // Cut between steps 2 and 3: the UIDL is pinned, no file in new/.
  ASSERT_EQ(run().status, FetchStatus::ok);
  fs::remove(maildir_ / "apop-migrate-old.example-110-alice.state");
  const std::string gone = *published().begin();
  for (const auto& e : fs::directory_iterator(maildir_ / "new")) {
    if (store::maildir_base_name(e.path().filename().string()) == gone) fs::remove(e.path());
  }
  MigrationCounts n;
  auto s = run(&n);
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(n.copied, 1u);
  EXPECT_EQ(published().size(), 3u);
  EXPECT_EQ(pinned_live(), kAll);
}

TEST_F(MigrateTest, DryRunCopiesNothing) {
  opts_.dry_run = true;
  auto s = run();
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.new_messages, 3u);
  EXPECT_FALSE(sent("RETR"));
  EXPECT_TRUE(published().empty());
}

TEST_F(MigrateTest, OneMigrationPerMaildirAtATime) {
  auto first = open();
  ASSERT_TRUE(first) << first.error().message;
  auto second = open();
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message.find("another apop migrate"), std::string::npos)
      << second.error().message;
  first = make_error(Errc::temporary, "closed");  // releases the lock
  EXPECT_TRUE(open());
}

TEST(MigrationSafeName, KeepsOnlyFileNameSafeCharacters) {
  EXPECT_EQ(migration_safe_name("alice@example.org"), "alice@example.org");
  EXPECT_EQ(migration_safe_name("../x y/z"), ".._x_y_z");
  EXPECT_EQ(migration_safe_name("a:b"), "a_b");
}

}  // namespace
}  // namespace apop::client
