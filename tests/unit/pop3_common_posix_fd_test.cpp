// common/posix_fd.hpp: EINTR retries, read_full and write_all (in unit_pop3:
// common is header-only and pop3 is the lowest module linking it).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <string>
#include <thread>

#include "common/posix_fd.hpp"

namespace apop {
namespace {

TEST(RetryEintr, RetriesOnlyEintr) {
  int calls = 0;
  const int r = retry_eintr([&] {
    if (++calls < 3) {
      errno = EINTR;
      return -1;
    }
    return 7;
  });
  EXPECT_EQ(r, 7);
  EXPECT_EQ(calls, 3);

  calls = 0;
  const long e = retry_eintr([&] {
    ++calls;
    errno = EIO;
    return -1L;
  });
  EXPECT_EQ(e, -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(calls, 1);
}

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    rd.reset(fds[0]);
    wr.reset(fds[1]);
  }
  UniqueFd rd, wr;
};

TEST(ReadFull, ShortReadsAreJoined) {
  Pipe p;
  // The writer sends in pieces: one read(2) returns less than asked.
  std::thread writer([&] {
    for (const char* piece : {"ab", "cde", "f"}) {
      ASSERT_TRUE(write_all(p.wr.get(), piece));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::string buf(6, '\0');
  EXPECT_EQ(read_full(p.rd.get(), buf), 6);
  EXPECT_EQ(buf, "abcdef");
  writer.join();
}

TEST(ReadFull, StopsAtEndOfFile) {
  Pipe p;
  ASSERT_TRUE(write_all(p.wr.get(), "xyz"));
  p.wr.reset();
  std::string buf(10, '\0');
  EXPECT_EQ(read_full(p.rd.get(), buf), 3);
  EXPECT_EQ(buf.substr(0, 3), "xyz");
  EXPECT_EQ(read_full(p.rd.get(), buf), 0);
}

TEST(ReadFull, ReportsErrors) {
  std::string buf(4, '\0');
  errno = 0;
  EXPECT_EQ(read_full(-1, buf), -1);
  EXPECT_EQ(errno, EBADF);
  char none = 0;
  EXPECT_EQ(read_full(-1, std::span<char>(&none, 0)), 0);  // nothing asked, nothing read
}

TEST(WriteAll, LargerThanThePipe) {
  Pipe p;
  const std::string data(1 << 20, 'q');  // far beyond a pipe's 64 KiB: short writes
  std::string got(data.size(), '\0');
  std::thread reader(
      [&] { EXPECT_EQ(read_full(p.rd.get(), got), static_cast<ssize_t>(got.size())); });
  EXPECT_TRUE(write_all(p.wr.get(), data));
  reader.join();
  EXPECT_EQ(got, data);
}

TEST(WriteAll, ReportsErrors) {
  Pipe p;
  p.rd.reset();
  std::signal(SIGPIPE, SIG_IGN);
  errno = 0;
  EXPECT_FALSE(write_all(p.wr.get(), "x"));
  EXPECT_EQ(errno, EPIPE);
}

// A signal handled without SA_RESTART interrupts a blocked read(2): read_full
// goes on reading.
TEST(ReadFull, SurvivesSignals) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: read(2) fails with EINTR
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  Pipe p;
  const pthread_t self = ::pthread_self();
  std::thread other([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::pthread_kill(self, SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_TRUE(write_all(p.wr.get(), "ok"));
  });
  std::string buf(2, '\0');
  EXPECT_EQ(read_full(p.rd.get(), buf), 2);
  EXPECT_EQ(buf, "ok");
  other.join();
  ::sigaction(SIGUSR1, &old, nullptr);
}

}  // namespace
}  // namespace apop
