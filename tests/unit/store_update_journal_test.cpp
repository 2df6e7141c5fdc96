// Tests for store/update_journal.hpp (the all-or-nothing UPDATE commit of a
// Maildir maildrop) and the tmp/ cleanup of MaildirOpener::open: the journal
// format, recovery of a commit cut at every point (hand-made journals, and a
// child process killed with SIGKILL at random moments), damaged journals.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/posix_fd.hpp"
#include "store/maildir.hpp"
#include "store/update_journal.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

std::set<std::string> list_dir(const fs::path& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.insert(e.path().filename());
  return names;
}

void write_file(const fs::path& p, const std::string& content) {
  std::ofstream out(p, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << p;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// --- format ------------------------------------------------------------------

TEST(UpdateJournalFormat, RoundTrip) {
  UpdateJournal j;
  j.remove = {"1.M1P1Q1.host,S=3,W=4:2,", "2.M2P2Q2.host:2,S", "odd name with spaces"};
  j.keep = {"2.M2P2Q2.host:2,T"};
  const std::string data = encode_update_journal(j);
  EXPECT_EQ(data.substr(0, 14), "apop-update 1\n");
  EXPECT_EQ(data.substr(data.size() - 2), "E\0"s);
  auto back = parse_update_journal(data);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->remove, j.remove);
  EXPECT_EQ(back->keep, j.keep);

  auto empty = parse_update_journal(encode_update_journal({}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->remove.empty() && empty->keep.empty());
}

TEST(UpdateJournalFormat, RejectsEverythingElse) {
  UpdateJournal j;
  j.remove = {"a:2,", "b:2,"};
  const std::string good = encode_update_journal(j);
  // Every strict prefix is a truncated journal (a crash mid-write must never
  // look like a commit).
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(parse_update_journal(good.substr(0, n)).ok()) << n;
  }
  const std::string header = "apop-update 1\n";
  for (const std::string& bad : {
           "apop-update 2\n"s + "E\0"s,  // unknown version
           header + "Xa\0E\0"s,          // unknown record type
           header + "D\0E\0"s,           // empty name
           header + "D.\0E\0"s,          // "."
           header + "D..\0E\0"s,         // ".."
           header + "Dcur/a\0E\0"s,      // a path, not a name
           header + "Da\0E\0x"s,         // bytes after the end
           header + "Da\0E\0E\0"s,       // two ends
           header + "Da"s,               // no NUL
       }) {
    EXPECT_FALSE(parse_update_journal(bad).ok()) << bad;
  }
}

// --- on disk -----------------------------------------------------------------

class UpdateJournalTest : public ::testing::Test {
 protected:
  fs::path root() const { return tmp_.path() / "mail"; }
  fs::path box() const { return root() / "alice"; }
  void SetUp() override { ASSERT_TRUE(ensure_maildir(box()).ok()); }

  // Delivers n messages and moves them to cur/ (by one open); returns their
  // cur/ names in delivery order.
  std::vector<std::string> fill(int n) {
    std::vector<std::string> names;
    for (int i = 0; i < n; ++i) {
      const std::string body = "message " + std::to_string(i) + "\n";
      const int fd = ::memfd_create("apop-test", MFD_CLOEXEC);
      EXPECT_TRUE(write_all(fd, body));
      ::lseek(fd, 0, SEEK_SET);
      DeliverOptions opts;
      opts.hostname = "host.example";
      auto r = deliver(box(), fd, opts);
      ::close(fd);
      EXPECT_TRUE(r.ok());
      if (r.ok()) names.push_back(*r + ":2,");
    }
    auto drop = MaildirOpener(root()).open("alice");
    EXPECT_TRUE(drop.ok());
    return names;
  }

  // The messages an open (which recovers first) sees, as their bodies.
  std::set<std::string> visible() {
    auto drop = MaildirOpener(root()).open("alice");
    EXPECT_TRUE(drop.ok()) << (drop.ok() ? "" : drop.error().message);
    std::set<std::string> out;
    if (!drop.ok()) return out;
    for (std::size_t i = 0; i < drop.value()->messages().size(); ++i) {
      auto src = drop.value()->open(i);
      EXPECT_TRUE(src.ok());
      if (!src.ok()) continue;
      std::string text;
      char buf[256];
      for (;;) {
        auto n = src.value()->read(buf);
        if (!n.ok() || *n == 0) break;
        text.append(buf, *n);
      }
      out.insert(text);
    }
    return out;
  }

  static std::set<std::string> bodies(std::initializer_list<int> which) {
    std::set<std::string> out;
    for (int i : which) out.insert("message " + std::to_string(i) + "\n");
    return out;
  }

  void write_journal(const UpdateJournal& j) {
    write_file(box() / std::string(kUpdateJournalFile), encode_update_journal(j));
  }

  test::TempDir tmp_;
};

TEST_F(UpdateJournalTest, CommitLeavesNoJournal) {
  fill(3);
  {
    auto drop = MaildirOpener(root()).open("alice");
    ASSERT_TRUE(drop.ok());
    const std::size_t del[] = {1};
    ASSERT_TRUE(drop.value()->commit(del).ok());
    const auto files = list_dir(box());
    EXPECT_EQ(files.count(std::string(kUpdateJournalFile)), 0u);
    EXPECT_EQ(files.count(std::string(kUpdateJournalTmp)), 0u);
  }
  EXPECT_EQ(visible(), bodies({0, 2}));
}

TEST_F(UpdateJournalTest, WriteCommitsAtomicallyAndParses) {
  UpdateJournal j;
  j.remove = {"x:2,"};
  UniqueFd dir(::open(box().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir);
  ASSERT_TRUE(write_update_journal(dir.get(), j).ok());
  EXPECT_FALSE(fs::exists(box() / std::string(kUpdateJournalTmp)));
  auto back = parse_update_journal(read_file(box() / std::string(kUpdateJournalFile)));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->remove, j.remove);
  ASSERT_TRUE(remove_update_journal(dir.get()).ok());
  EXPECT_FALSE(fs::exists(box() / std::string(kUpdateJournalFile)));
}

TEST_F(UpdateJournalTest, CrashAfterCommitPointIsFinishedAtNextOpen) {
  const auto names = fill(5);
  // Killed after the journal was committed and message 1 was unlinked,
  // before messages 3 and 4 were.
  UpdateJournal j;
  j.remove = {names[1], names[3], names[4]};
  write_journal(j);
  fs::remove(box() / "cur" / names[1]);
  EXPECT_EQ(visible(), bodies({0, 2}));
  EXPECT_FALSE(fs::exists(box() / std::string(kUpdateJournalFile)));
  // Finished once: the next open finds nothing more to do.
  EXPECT_EQ(visible(), bodies({0, 2}));
}

TEST_F(UpdateJournalTest, RecoveredCommitMakesTheQuotaRecalculate) {
  // A crash after the commit point also cut the commit's maildirsize line
  // (store/quota.hpp): the file is removed, so the next check recounts.
  const auto names = fill(3);
  write_file(box() / "maildirsize", "1000S\n30 3\n");
  UpdateJournal j;
  j.remove = {names[0]};
  write_journal(j);
  EXPECT_EQ(visible(), bodies({1, 2}));
  EXPECT_FALSE(fs::exists(box() / "maildirsize"));
  // Without a journal to finish it stays.
  write_file(box() / "maildirsize", "1000S\n20 2\n");
  EXPECT_EQ(visible(), bodies({1, 2}));
  EXPECT_TRUE(fs::exists(box() / "maildirsize"));
}

TEST_F(UpdateJournalTest, CrashBeforeFirstUnlinkIsFinishedToo) {
  const auto names = fill(3);
  UpdateJournal j;
  j.remove = {names[0], names[2]};
  write_journal(j);
  EXPECT_EQ(visible(), bodies({1}));
}

TEST_F(UpdateJournalTest, CrashBeforeCommitPointKeepsOldState) {
  const auto names = fill(3);
  UpdateJournal j;
  j.remove = {names[0], names[1]};
  // A complete journal that was never renamed into place, and a torn one.
  write_file(box() / std::string(kUpdateJournalTmp), encode_update_journal(j));
  EXPECT_EQ(visible(), bodies({0, 1, 2}));
  EXPECT_FALSE(fs::exists(box() / std::string(kUpdateJournalTmp)));
  const std::string full = encode_update_journal(j);
  write_file(box() / std::string(kUpdateJournalTmp), full.substr(0, full.size() / 2));
  EXPECT_EQ(visible(), bodies({0, 1, 2}));
}

TEST_F(UpdateJournalTest, RecoveryFollowsRenamesButNotKeptTwins) {
  const auto names = fill(3);
  // names[0] was renamed (flag added by another client) after the crash.
  // names[1] has a twin with the same base name that the session kept.
  const std::string base1 = names[1].substr(0, names[1].find(':'));
  const std::string twin = base1 + ":2,T";
  write_file(box() / "cur" / twin, "twin\n");
  UpdateJournal j;
  j.remove = {names[0], names[1]};
  j.keep = {twin};
  write_journal(j);
  const std::string base0 = names[0].substr(0, names[0].find(':'));
  fs::rename(box() / "cur" / names[0], box() / "cur" / (base0 + ":2,S"));
  fs::remove(box() / "cur" / names[1]);  // unlinked before the crash
  auto seen = visible();
  EXPECT_EQ(seen, (std::set<std::string>{"message 2\n", "twin\n"}));
}

TEST_F(UpdateJournalTest, DamagedJournalRemovesNothingAndIsKeptAside) {
  const auto names = fill(2);
  UpdateJournal j;
  j.remove = {names[0]};
  std::string data = encode_update_journal(j);
  data.resize(data.size() - 2);  // no end record
  write_file(box() / std::string(kUpdateJournalFile), data);
  EXPECT_EQ(visible(), bodies({0, 1}));
  EXPECT_FALSE(fs::exists(box() / std::string(kUpdateJournalFile)));
  EXPECT_EQ(read_file(box() / std::string(kUpdateJournalDamaged)), data);
}

TEST_F(UpdateJournalTest, JournalThatCannotBeWrittenRemovesNothing) {
  fill(3);
  // A directory where the .tmp journal goes: creating it fails (EISDIR),
  // even for root.
  fs::create_directory(box() / std::string(kUpdateJournalTmp));
  {
    auto drop = MaildirOpener(root()).open("alice");
    ASSERT_FALSE(drop.ok());  // the leftover cannot be unlinked either
    EXPECT_EQ(drop.error().code, Errc::temporary);
  }
  // With the leftover check passed (directory created after the open), the
  // commit fails before removing anything.
  fs::remove(box() / std::string(kUpdateJournalTmp));
  {
    auto drop = MaildirOpener(root()).open("alice");
    ASSERT_TRUE(drop.ok());
    fs::create_directory(box() / std::string(kUpdateJournalTmp));
    const std::size_t del[] = {0, 2};
    auto r = drop.value()->commit(del);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::temporary);
    EXPECT_EQ(list_dir(box() / "cur").size(), 3u);
    fs::remove(box() / std::string(kUpdateJournalTmp));
  }
  EXPECT_EQ(visible(), bodies({0, 1, 2}));
}

// A child process commits a random subset and is killed with SIGKILL at a
// random moment; the next open must show exactly the old or the new state.
TEST_F(UpdateJournalTest, KilledCommitIsAllOrNothing) {
  std::mt19937 rng(20261123);
  constexpr int kMessages = 60;
  fill(kMessages);
  // Message numbers still there, in open order (= delivery order).
  std::vector<int> alive;
  for (int i = 0; i < kMessages; ++i) alive.push_back(i);
  auto bodies_of = [](const std::vector<int>& v) {
    std::set<std::string> out;
    for (int i : v) out.insert("message " + std::to_string(i) + "\n");
    return out;
  };
  int old_seen = 0, new_seen = 0;
  for (int iter = 0; iter < 40 && alive.size() > 1; ++iter) {
    std::vector<std::size_t> del;  // about a third of what is left
    std::vector<int> after;
    for (std::size_t i = 0; i < alive.size(); ++i) {
      if (rng() % 3 == 0) {
        del.push_back(i);
      } else {
        after.push_back(alive[i]);
      }
    }
    if (del.empty()) continue;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto drop = MaildirOpener(root()).open("alice");
      if (!drop.ok()) ::_exit(2);
      ::_exit(drop.value()->commit(del).ok() ? 0 : 1);
    }
    const long delay_us = static_cast<long>(rng() % 3000);
    timespec ts{0, delay_us * 1000};
    ::nanosleep(&ts, nullptr);
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed";
    }
    const auto seen = visible();
    if (seen == bodies_of(alive)) {
      ++old_seen;
    } else {
      ASSERT_EQ(seen, bodies_of(after))
          << "iteration " << iter << ": neither the old nor the new state";
      ++new_seen;
      alive = after;
    }
  }
  // Which outcome a delay gives depends on the machine: informative only.
  RecordProperty("old_state", old_seen);
  RecordProperty("new_state", new_seen);
}

// --- tmp/ cleanup ------------------------------------------------------------

TEST_F(UpdateJournalTest, TmpLeftoversOlderThan36HoursAreRemoved) {
  write_file(box() / "tmp" / "123.M1P99Q1.host", "half a message");
  const auto now = static_cast<std::int64_t>(::time(nullptr));
  const std::int64_t age =
      std::chrono::duration_cast<std::chrono::seconds>(limits::kMaildirTmpMaxAge).count();
  EXPECT_EQ(clean_maildir_tmp(box(), now), 0u);
  EXPECT_EQ(clean_maildir_tmp(box(), now + age - 60), 0u);
  EXPECT_EQ(list_dir(box() / "tmp").size(), 1u);
  EXPECT_EQ(clean_maildir_tmp(box(), now + age + 60), 1u);
  EXPECT_TRUE(list_dir(box() / "tmp").empty());
  // A fresh leftover survives an open (a delivery may be writing it).
  write_file(box() / "tmp" / "124.M1P99Q2.host", "being written");
  visible();
  EXPECT_EQ(list_dir(box() / "tmp").size(), 1u);
}

}  // namespace
}  // namespace apop::store
