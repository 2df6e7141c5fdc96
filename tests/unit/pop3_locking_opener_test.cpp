// LockingOpener: the shared lock before the inner open, [IN-USE] and
// [SYS/TEMP] from its answers, released after the inner maildrop.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pop3/maildrop_locks.hpp"
#include "store/memory.hpp"

namespace apop::pop3 {
namespace {

// Records every call; `answer` says what the next try_lock returns.
class RecordingLocks final : public MaildropLocks {
 public:
  explicit RecordingLocks(std::vector<std::string>& log) : log_(log) {}
  Result<bool> try_lock(std::string_view user) override {
    log_.push_back("lock " + std::string(user));
    return answer;
  }
  void release(std::string_view user) override { log_.push_back("release " + std::string(user)); }
  Result<bool> answer = true;

 private:
  std::vector<std::string>& log_;
};

// The inner opener, logging when its maildrop (the local lock) goes.
class LoggingOpener final : public MaildropOpener {
 public:
  LoggingOpener(store::MemoryStore& store, std::vector<std::string>& log)
      : store_(store), log_(log) {}
  Result<std::unique_ptr<Maildrop>> open(const MailboxAddress& where) override {
    log_.push_back("open " + std::string(where.user) + " at " + std::string(where.location));
    return store_.open(where);
  }

 private:
  store::MemoryStore& store_;
  std::vector<std::string>& log_;
};

TEST(LockingOpener, LocksFirstAndReleasesAfterTheLocalLock) {
  std::vector<std::string> log;
  store::MemoryStore disk;
  disk.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  LoggingOpener inner(disk, log);
  RecordingLocks locks(log);
  LockingOpener opener(locks, inner);
  EXPECT_FALSE(opener.opens_without_waiting(MailboxAddress("alice")));  // a round trip
  {
    auto md = opener.open(MailboxAddress("alice", "maildir:/x"));
    ASSERT_TRUE(md.ok()) << md.error().message;
    EXPECT_EQ((*md)->messages().size(), 1u);
    EXPECT_TRUE(disk.locked("alice"));
    EXPECT_EQ(log.size(), 2u);  // held for the session
  }
  EXPECT_FALSE(disk.locked("alice"));
  const std::vector<std::string> want = {"lock alice", "open alice at maildir:/x", "release alice"};
  EXPECT_EQ(log, want);
}

TEST(LockingOpener, HeldElsewhereIsInUseAndUnreachableIsTemporary) {
  std::vector<std::string> log;
  store::MemoryStore disk;
  disk.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  LoggingOpener inner(disk, log);
  RecordingLocks locks(log);
  LockingOpener opener(locks, inner);
  locks.answer = false;
  auto busy = opener.open(MailboxAddress("alice"));
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code, Errc::in_use);
  locks.answer = make_error(Errc::temporary, "database down");
  auto down = opener.open(MailboxAddress("alice"));
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, Errc::temporary);
  EXPECT_NE(down.error().message.find("database down"), std::string::npos);
  // Neither opened the maildrop nor has anything to give back.
  const std::vector<std::string> want = {"lock alice", "lock alice"};
  EXPECT_EQ(log, want);
}

TEST(LockingOpener, AFailedInnerOpenGivesTheLockBack) {
  std::vector<std::string> log;
  store::MemoryStore disk;
  disk.add_message("alice", "Subject: x\r\n\r\nx\r\n");
  LoggingOpener inner(disk, log);
  RecordingLocks locks(log);
  LockingOpener opener(locks, inner);
  auto first = opener.open(MailboxAddress("alice"));
  ASSERT_TRUE(first.ok());
  // A second session of this server: the shared lock stacks, the local one refuses.
  auto second = opener.open(MailboxAddress("alice"));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::in_use);
  const std::vector<std::string> want = {"lock alice", "open alice at ", "lock alice",
                                         "open alice at ", "release alice"};
  EXPECT_EQ(log, want);
}

}  // namespace
}  // namespace apop::pop3
