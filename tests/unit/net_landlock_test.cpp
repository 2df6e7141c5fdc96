// net/landlock: a worker's file restriction, applied in forked children (it
// cannot be undone). Under the rules a child does a worker's file work --
// Maildir delivery and expunge by rename across directories, an mbox
// dotlock, reading its configuration -- and cannot open anything else: not
// the data directory's secret.key beside the mail tree, not a file it may
// only read for writing, not from a thread started afterwards either.
#include "net/landlock.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.hpp"

namespace apop::net {
namespace {

namespace fs = std::filesystem;

// Runs `body` in a child restricted to `rules`; the child's exit status:
// 100 when the restriction failed, 101 when the kernel has none, else
// body()'s.
int restricted(const std::vector<FsRule>& rules, const std::function<int()>& body,
               std::vector<std::string>* skipped = nullptr) {
  std::fflush(nullptr);
  int pipefd[2];
  if (::pipe(pipefd) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::vector<std::string> skip;
    auto r = restrict_filesystem(rules, &skip);
    for (const auto& s : skip) {
      (void)!::write(pipefd[1], s.data(), s.size());
      (void)!::write(pipefd[1], "\n", 1);
    }
    ::close(pipefd[1]);
    if (!r) ::_exit(100);
    if (!*r) ::_exit(101);
    ::_exit(body());
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[256];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, n);
  ::close(pipefd[0]);
  if (skipped != nullptr) {
    for (std::size_t pos = 0, nl; (nl = out.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      skipped->push_back(out.substr(pos, nl - pos));
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

// errno of open(path, flags), 0 when it opened.
int open_errno(const fs::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

class Landlock : public ::testing::Test {
 protected:
  void SetUp() override {
    if (landlock_abi() < 2) GTEST_SKIP() << "this kernel has no usable Landlock (ABI 2)";
    data_ = tmp_.path() / "data";
    mail_ = data_ / "mail";
    for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(mail_ / "alice" / sub);
    fs::create_directories(data_ / "locks");
    test::spit(data_ / "secret.key", "0123456789abcdef");
    test::spit(data_ / "users.sqlite", "SQLite format 3");
    test::spit(tmp_.path() / "apop.toml", "workers = 2\n");
    test::spit(mail_ / "alice" / "new" / "1.host", "Subject: a\r\n\r\nbody\r\n");
  }

  std::vector<FsRule> worker_rules() const {
    return {{mail_.string(), true},
            {(data_ / "locks").string(), true},
            {(tmp_.path() / "apop.toml").string(), false}};
  }

  test::TempDir tmp_{"apop-landlock"};
  fs::path data_, mail_;
};

TEST_F(Landlock, WorkerKeepsItsMailWorkAndLosesTheDataDirectory) {
  const int code = restricted(worker_rules(), [&] {
    // Its own work: a Maildir delivery (tmp -> new), a POP3 read and
    // expunge (new -> cur, unlink), a listing, a dotlock, the config.
    const fs::path tmpf = mail_ / "alice" / "tmp" / "2.host";
    if (open_errno(tmpf, O_WRONLY | O_CREAT | O_EXCL) != 0) return 1;
    if (::rename(tmpf.c_str(), (mail_ / "alice" / "new" / "2.host").c_str()) != 0) return 2;
    if (open_errno(mail_ / "alice" / "new" / "1.host", O_RDONLY) != 0) return 3;
    if (::rename((mail_ / "alice" / "new" / "1.host").c_str(),
                 (mail_ / "alice" / "cur" / "1.host:2,S").c_str()) != 0) {
      return 4;
    }
    if (::unlink((mail_ / "alice" / "cur" / "1.host:2,S").c_str()) != 0) return 5;
    if (open_errno(mail_ / "alice" / "new", O_RDONLY | O_DIRECTORY) != 0) return 6;
    if (open_errno(data_ / "locks" / "alice.lock", O_WRONLY | O_CREAT | O_EXCL) != 0) return 7;
    if (open_errno(tmp_.path() / "apop.toml", O_RDONLY) != 0) return 8;
    // What it must not reach.
    if (open_errno(data_ / "secret.key", O_RDONLY) != EACCES) return 20;
    if (open_errno(data_ / "users.sqlite", O_RDWR) != EACCES) return 21;
    if (open_errno(data_ / "planted", O_WRONLY | O_CREAT) != EACCES) return 22;
    if (open_errno(data_, O_RDONLY | O_DIRECTORY) != EACCES) return 23;
    if (open_errno(tmp_.path() / "apop.toml", O_WRONLY) != EACCES) return 24;
    if (open_errno("/etc/passwd", O_RDONLY) != EACCES) return 25;
    // Nor may it move mail out of the tree to where it could read it later.
    if (::rename((mail_ / "alice" / "new" / "2.host").c_str(), (data_ / "2.host").c_str()) == 0) {
      return 26;
    }
    return 0;
  });
  EXPECT_EQ(code, 0);
  EXPECT_TRUE(fs::exists(mail_ / "alice" / "new" / "2.host"));
  EXPECT_FALSE(fs::exists(data_ / "planted"));
}

TEST_F(Landlock, ThreadsStartedLaterAreBoundToo) {
  const int code = restricted(worker_rules(), [&] {
    int seen = -1;
    std::thread t([&] { seen = open_errno(data_ / "secret.key", O_RDONLY); });
    t.join();
    return seen == EACCES ? 0 : 1;
  });
  EXPECT_EQ(code, 0);
}

TEST_F(Landlock, MissingPathsAreSkippedAndNamed) {
  std::vector<FsRule> rules = worker_rules();
  rules.push_back({(tmp_.path() / "no-such-dir").string(), true});
  std::vector<std::string> skipped;
  const int code = restricted(
      rules, [&] { return open_errno(data_ / "secret.key", O_RDONLY) == EACCES ? 0 : 1; },
      &skipped);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0], (tmp_.path() / "no-such-dir").string());
}

TEST_F(Landlock, NoRulesMeansNoFiles) {
  const int code = restricted({}, [&] {
    return open_errno(mail_ / "alice" / "new" / "1.host", O_RDONLY) == EACCES ? 0 : 1;
  });
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace apop::net
