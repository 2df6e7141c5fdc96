// Tests for store/memory.hpp: the in-memory maildrop twin.
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/memory.hpp"

namespace apop::store {
namespace {

std::string read_all(pop3::ByteSource& src) {
  std::string out;
  char buf[3];
  for (;;) {
    auto r = src.read(buf);
    EXPECT_TRUE(r.ok());
    if (!r.ok() || *r == 0) return out;
    out.append(buf, *r);
  }
}

std::unique_ptr<pop3::Maildrop> must_open(MemoryStore& store, std::string_view user) {
  auto r = store.open(user);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (!r.ok()) return nullptr;
  return std::move(r).value();
}

TEST(MemoryStore, ListsSizesUidlsAndContent) {
  MemoryStore store;
  store.add_message("alice", "a\nb\n");
  store.add_message("alice", "c\r\nd");
  store.add_message("alice", "");
  store.add_message("bob", "other\n");
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 3u);
  EXPECT_EQ(drop->messages()[0].size, 6u);
  EXPECT_EQ(drop->messages()[1].size, 4u);
  EXPECT_EQ(drop->messages()[2].size, 0u);
  EXPECT_EQ(drop->messages()[0].uidl, "m1");
  EXPECT_EQ(drop->messages()[1].uidl, "m2");
  EXPECT_EQ(drop->messages()[2].uidl, "m3");
  auto src = drop->open(1);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(read_all(*src.value()), "c\r\nd");
  auto bad = drop->open(3);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::invalid);
}

TEST(MemoryStore, UnknownUserHasEmptyMaildrop) {
  MemoryStore store;
  EXPECT_TRUE(store.messages("nobody").empty());
  auto drop = must_open(store, "nobody");
  ASSERT_TRUE(drop);
  EXPECT_TRUE(drop->messages().empty());
}

TEST(MemoryStore, LockIsExclusiveAndReleasedOnDestruction) {
  MemoryStore store;
  EXPECT_FALSE(store.locked("alice"));
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  EXPECT_TRUE(store.locked("alice"));
  EXPECT_FALSE(store.locked("bob"));
  auto second = store.open("alice");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::in_use);
  auto bob = must_open(store, "bob");
  EXPECT_TRUE(bob);
  drop.reset();
  EXPECT_FALSE(store.locked("alice"));
  EXPECT_TRUE(must_open(store, "alice"));
}

TEST(MemoryStore, CommitDeletesOnlyChosenAndUidlsStayStable) {
  MemoryStore store;
  for (const char* m : {"m0\n", "m1\n", "m2\n", "m3\n"}) store.add_message("alice", m);
  {
    auto drop = must_open(store, "alice");
    ASSERT_TRUE(drop);
    const std::size_t del[] = {0, 2};
    ASSERT_TRUE(drop->commit(del).ok());
  }
  EXPECT_EQ(store.messages("alice"), (std::vector<std::string>{"m1\n", "m3\n"}));
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 2u);
  EXPECT_EQ(drop->messages()[0].uidl, "m2");
  EXPECT_EQ(drop->messages()[1].uidl, "m4");
  const std::size_t bad[] = {5};
  auto r = drop->commit(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_EQ(store.messages("alice").size(), 2u);
}

TEST(MemoryStore, SnapshotExcludesMessagesAddedDuringSession) {
  MemoryStore store;
  store.add_message("alice", "old\n");
  {
    auto drop = must_open(store, "alice");
    ASSERT_TRUE(drop);
    store.add_message("alice", "new\n");
    EXPECT_EQ(drop->messages().size(), 1u);
    const std::size_t del[] = {0};
    ASSERT_TRUE(drop->commit(del).ok());
  }
  EXPECT_EQ(store.messages("alice"), std::vector<std::string>{"new\n"});
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  ASSERT_EQ(drop->messages().size(), 1u);
  EXPECT_EQ(drop->messages()[0].uidl, "m2");
}

TEST(MemoryStore, FailOpenAfter) {
  MemoryStore store;
  store.fail_open_after(2);
  EXPECT_TRUE(must_open(store, "alice"));  // 1st: ok (and released again)
  auto r = store.open("alice");            // 2nd: fails
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_FALSE(store.locked("alice"));
  EXPECT_TRUE(must_open(store, "alice"));  // one-shot
  store.fail_open_after(1);
  store.fail_open_after(0);  // disarmed
  EXPECT_TRUE(must_open(store, "alice"));
}

TEST(MemoryStore, FailCommitAfter) {
  MemoryStore store;
  store.add_message("alice", "x\n");
  store.fail_commit_after(1);
  {
    auto drop = must_open(store, "alice");
    ASSERT_TRUE(drop);
    const std::size_t del[] = {0};
    auto r = drop->commit(del);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::temporary);
  }
  EXPECT_EQ(store.messages("alice").size(), 1u);
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  const std::size_t del[] = {0};
  EXPECT_TRUE(drop->commit(del).ok());
  EXPECT_TRUE(store.messages("alice").empty());
}

TEST(MemoryStore, FailReadAfter) {
  MemoryStore store;
  store.add_message("alice", "abcdef");
  auto drop = must_open(store, "alice");
  ASSERT_TRUE(drop);
  store.fail_read_after(2);
  auto src = drop->open(0);
  ASSERT_TRUE(src.ok());
  char buf[4];
  auto r1 = src.value()->read(buf);
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(*r1, 4u);
  auto r2 = src.value()->read(buf);
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code, Errc::temporary);
  auto r3 = src.value()->read(buf);  // one-shot: continues where it was
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(std::string(buf, *r3), "ef");
}

TEST(MemoryStore, MaildropMayOutliveStore) {
  std::unique_ptr<pop3::Maildrop> drop;
  {
    MemoryStore store;
    store.add_message("alice", "x\n");
    drop = must_open(store, "alice");
  }
  ASSERT_TRUE(drop);
  auto src = drop->open(0);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ(read_all(*src.value()), "x\n");
  const std::size_t del[] = {0};
  EXPECT_TRUE(drop->commit(del).ok());
}

TEST(MemoryStore, ConcurrentOpensOnlyOneWins) {
  MemoryStore store;
  std::vector<std::unique_ptr<pop3::Maildrop>> held(8);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < held.size(); ++i) {
    threads.emplace_back([&, i] {
      auto r = store.open("alice");
      if (r.ok()) held[i] = std::move(r).value();
    });
  }
  for (auto& t : threads) t.join();
  int winners = 0;
  for (const auto& h : held) winners += h ? 1 : 0;
  EXPECT_EQ(winners, 1);
}

}  // namespace
}  // namespace apop::store
