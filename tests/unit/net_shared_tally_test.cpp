#include "net/shared_tally.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/conn_limits.hpp"

namespace apop::net {
namespace {

using T = SharedTally::Table;

TEST(SharedTally, SumsTheRowsOfEveryWorkerAndForgetsADeadOne) {
  auto t = SharedTally::create(3);
  ASSERT_TRUE(t.ok());
  auto& tally = **t;
  tally.set_worker(0);
  tally.add(T::per_address, "192.0.2.7", 1);
  tally.add(T::per_address, "192.0.2.7", 1);
  tally.set_worker(2);
  tally.add(T::per_address, "192.0.2.7", 1);
  tally.add(T::per_user, "alice", 1);
  EXPECT_EQ(tally.count(T::per_address, "192.0.2.7"), 3u);
  EXPECT_EQ(tally.count(T::per_address, "192.0.2.8"), 0u);
  EXPECT_EQ(tally.count(T::per_user, "alice"), 1u);
  EXPECT_EQ(tally.count(T::per_user, "192.0.2.7"), 0u);  // tables are apart
  tally.reset_worker(0);
  EXPECT_EQ(tally.count(T::per_address, "192.0.2.7"), 1u);
  tally.add(T::per_address, "192.0.2.7", -1);
  EXPECT_EQ(tally.count(T::per_address, "192.0.2.7"), 0u);
}

// Two worker processes: the per-address and total limits count both.
TEST(SharedTally, ConnectionLimitsHoldAcrossProcesses) {
  auto t = SharedTally::create(2);
  ASSERT_TRUE(t.ok());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    (*t)->set_worker(1);
    ConnectionLimits mine;
    mine.share(t->get());
    const bool ok = mine.admit("192.0.2.7", 10, 3) == ConnectionLimits::Verdict::ok &&
                    mine.admit("192.0.2.7", 10, 3) == ConnectionLimits::Verdict::ok;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  (*t)->set_worker(0);
  ConnectionLimits limits;
  limits.share(t->get());
  // Worker 1 holds two connections from the address: one more is allowed.
  EXPECT_EQ(limits.admit("192.0.2.7", 10, 3), ConnectionLimits::Verdict::ok);
  EXPECT_EQ(limits.admit("192.0.2.7", 10, 3), ConnectionLimits::Verdict::per_address);
  EXPECT_EQ(limits.admit("192.0.2.9", 4, 3), ConnectionLimits::Verdict::ok);
  EXPECT_EQ(limits.admit("192.0.2.10", 4, 3), ConnectionLimits::Verdict::total);
  // Worker 1 died: the master forgets its row.
  (*t)->reset_worker(1);
  EXPECT_EQ(limits.admit("192.0.2.7", 10, 3), ConnectionLimits::Verdict::ok);
  limits.release("192.0.2.7");
  limits.release("192.0.2.7");
  EXPECT_EQ((*t)->count(T::per_address, "192.0.2.7"), 0u);
}

TEST(SharedTally, UserSessionsHoldAcrossWorkers) {
  auto t = SharedTally::create(2);
  ASSERT_TRUE(t.ok());
  (*t)->set_worker(1);
  (*t)->add(T::per_user, "alice", 1);  // a session on the other worker
  (*t)->set_worker(0);
  UserSessions sessions;
  sessions.share(t->get());
  EXPECT_TRUE(sessions.acquire("alice", 2));
  EXPECT_FALSE(sessions.acquire("alice", 2));
  EXPECT_EQ(sessions.count("alice"), 1u);  // this worker's own
  sessions.release("alice");
  EXPECT_EQ((*t)->count(T::per_user, "alice"), 1u);
}

}  // namespace
}  // namespace apop::net
