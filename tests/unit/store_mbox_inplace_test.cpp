// Tests for the in-place rewrite of mbox files (store/mbox.hpp: MboxRewrite,
// MboxJournal, recover_mbox): the journal format, recovery from every crash
// point, and the result of in-place deletions (first, middle, last, all,
// ">From " lines, concurrent appends, times).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/posix_fd.hpp"
#include "store/mbox.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

// Root-only cases skip for a developer who is not root; CI runs the suite as
// root, so there (CI set, as GitHub Actions does) not being root is a
// failure: nothing is skipped silently in CI.
bool in_ci() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  const std::string v(ci);
  return !v.empty() && v != "0" && v != "false" && v != "no";
}

namespace fs = std::filesystem;
using TempDir = ::apop::test::TempDir;
using namespace std::chrono_literals;

using ::apop::test::slurp;
using ::apop::test::spit;

std::string msg(const std::string& from, const std::string& subject, const std::string& body) {
  return "From " + from + " Thu Jan  2 10:00:00 2025\nFrom: " + from + "\nSubject: " + subject +
         "\nMessage-ID: <" + subject + "@example.org>\n\n" + body + "\n";
}

struct InPlace : ::testing::Test {
  TempDir tmp{"apop-mbox-ip"};
  fs::path file = tmp.path() / "alice";
  fs::path journal = tmp.path() / ".alice.apop-journal";
  std::vector<std::string> msgs;
  std::string content;

  void SetUp() override {
    for (int i = 0; i < 5; ++i) {
      // Bodies of a few chunks (kBodyChunk) so moves take several steps; a
      // quoted ">From " line in each.
      msgs.push_back(msg("s" + std::to_string(i) + "@x", "m" + std::to_string(i),
                         ">From quoted line " + std::to_string(i) + "\n" +
                             std::string(40000 + i * 7000, static_cast<char>('a' + i))));
    }
    content = join({0, 1, 2, 3, 4});
    spit(file, content);
    ::chmod(file.c_str(), 0660);
  }
  std::string join(const std::vector<int>& which) const {
    std::string s;
    for (int i : which) s += msgs[static_cast<std::size_t>(i)] + "\n";
    return s;
  }
  MboxOptions opts(MboxRewrite how = MboxRewrite::in_place) const {
    MboxOptions o;
    o.session_lock_dir = tmp.path() / "locks";
    o.journal_dir = tmp.path() / "journals";
    o.lock.lock_timeout = 300ms;
    o.rewrite = how;
    return o;
  }
  Result<void> remove(std::vector<std::size_t> del, const MboxOptions& o) {
    auto md = open_mbox(file, o);
    if (!md) return md.error();
    return (*md)->commit(del);
  }
  std::size_t count() {
    auto md = open_mbox(file, opts());
    EXPECT_TRUE(md.ok());
    return md.ok() ? (*md)->messages().size() : 0;
  }
};

// --- journal format ------------------------------------------------------------

TEST(MboxJournalFormat, RoundTripsAndRejectsDamage) {
  MboxJournal j;
  j.dev = 2049;
  j.ino = 123456789;
  j.size = 20;
  j.offset = 8;
  j.new_size = 11;
  j.path = "/var/mail/alice";
  j.region = std::string("From x\n\0bc\nFrom", 16).substr(0, 12);
  const std::string enc = encode_mbox_journal(j);
  auto dec = decode_mbox_journal(enc);
  ASSERT_TRUE(dec.ok()) << dec.error().message;
  EXPECT_EQ(dec->dev, j.dev);
  EXPECT_EQ(dec->ino, j.ino);
  EXPECT_EQ(dec->size, j.size);
  EXPECT_EQ(dec->offset, j.offset);
  EXPECT_EQ(dec->new_size, j.new_size);
  EXPECT_EQ(dec->path, j.path);
  EXPECT_EQ(dec->region, j.region);
  // Every truncation (a crash while writing it) is invalid.
  for (std::size_t n = 0; n < enc.size(); ++n) {
    EXPECT_FALSE(decode_mbox_journal(enc.substr(0, n)).ok()) << n;
  }
  // Every single flipped byte too.
  for (std::size_t i = 0; i < enc.size(); ++i) {
    std::string bad = enc;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_FALSE(decode_mbox_journal(bad).ok()) << i;
  }
  // Inconsistent sizes, even with a right checksum.
  MboxJournal k = j;
  k.new_size = k.size;
  EXPECT_FALSE(decode_mbox_journal(encode_mbox_journal(k)).ok());
  k = j;
  k.region += "x";
  EXPECT_FALSE(decode_mbox_journal(encode_mbox_journal(k)).ok());
}

TEST(MboxRewriteSetting, Parses) {
  EXPECT_EQ(parse_mbox_rewrite("auto"), MboxRewrite::automatic);
  EXPECT_EQ(parse_mbox_rewrite("rename"), MboxRewrite::rename);
  EXPECT_EQ(parse_mbox_rewrite("in-place"), MboxRewrite::in_place);
  EXPECT_EQ(parse_mbox_rewrite("inplace"), std::nullopt);
  EXPECT_EQ(parse_mbox_rewrite(""), std::nullopt);
}

// --- in-place deletions ------------------------------------------------------------

TEST_F(InPlace, DeletesFirstMiddleLastAndAllKeepingInodeModeAndQuoting) {
  struct stat before {};
  ASSERT_EQ(::stat(file.c_str(), &before), 0);
  ASSERT_TRUE(remove({0}, opts()).ok());
  EXPECT_EQ(slurp(file), join({1, 2, 3, 4}));
  ASSERT_TRUE(remove({1}, opts()).ok());  // msgs[2]
  EXPECT_EQ(slurp(file), join({1, 3, 4}));
  ASSERT_TRUE(remove({2}, opts()).ok());  // the last
  EXPECT_EQ(slurp(file), join({1, 3}));
  EXPECT_NE(slurp(file).find(">From quoted line 3\n"), std::string::npos);
  ASSERT_TRUE(remove({0, 1}, opts()).ok());
  EXPECT_EQ(slurp(file), "");
  struct stat after {};
  ASSERT_EQ(::stat(file.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);  // in place, not renamed
  EXPECT_EQ(after.st_mode & 07777, 0660u);
  EXPECT_FALSE(fs::exists(journal));
  EXPECT_FALSE(fs::exists(tmp.path() / "alice.lock"));
  EXPECT_FALSE(fs::exists(tmp.path() / "journals"));  // the mbox directory was writable
}

TEST_F(InPlace, SeveralGapsAndLeadingEmptyLines) {
  spit(file, "\n\n" + content);
  ASSERT_TRUE(remove({1, 3}, opts()).ok());
  EXPECT_EQ(slurp(file), "\n\n" + join({0, 2, 4}));
}

TEST_F(InPlace, KeepsMailAppendedDuringTheSessionAndTheTimes) {
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  const std::string late = msg("late@x", "late", "From the MTA\n") + "\n";
  {
    UniqueFd afd(::open(file.c_str(), O_WRONLY | O_APPEND));
    ASSERT_TRUE(afd);
    auto lk = MboxLock::acquire(file, afd.get(), true, opts().lock);
    ASSERT_TRUE(lk.ok()) << lk.error().message;
    ASSERT_TRUE(write_all(afd.get(), late));
  }
  // New mail: mtime after atime (what mutt and biff look at).
  const struct timespec times[2] = {{1000, 0}, {2000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, file.c_str(), times, 0), 0);
  const std::size_t del[] = {0, 2};
  ASSERT_TRUE((*md)->commit(del).ok());
  md->reset();
  struct stat st {};  // before reading it (which may update atime)
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(slurp(file), join({1, 3, 4}) + late);
}

TEST_F(InPlace, RenamePathKeepsTheTimesToo) {
  auto md = open_mbox(file, opts(MboxRewrite::rename));
  ASSERT_TRUE(md.ok());
  // Set after the login read the file (a read may update atime itself).
  const struct timespec times[2] = {{1000, 0}, {2000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, file.c_str(), times, 0), 0);
  const std::size_t del[] = {0};
  ASSERT_TRUE((*md)->commit(del).ok());
  md->reset();
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_atim.tv_sec, 1000);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(slurp(file), join({1, 2, 3, 4}));
}

TEST_F(InPlace, JournalGoesToTheStateDirectoryWhenTheMboxDirectoryIsNotOurs) {
  if (::geteuid() != 0) {
    if (in_ci()) FAIL() << "needs root (CI is set: a failure, not a skip)";
    GTEST_SKIP() << "needs root to create a file owned by another user";
  }
  // A foreign file where our journal would go (anyone can create one in a
  // 1777 /var/mail): neither trusted nor used nor removed.
  spit(journal, "not ours");
  ASSERT_EQ(::chown(journal.c_str(), 65534, 65534), 0);
  auto o = opts();
  o.fail_at = [](std::string_view s) { return s == "moved"; };
  EXPECT_FALSE(remove({1}, o).ok());
  EXPECT_EQ(slurp(journal), "not ours");
  ASSERT_TRUE(fs::exists(tmp.path() / "journals"));
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(tmp.path() / "journals")) {
    ++n;
    EXPECT_TRUE(e.path().filename().string().ends_with(".journal"));
  }
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(count(), 5u);  // recovered from the state directory
  EXPECT_EQ(slurp(file), content);
  EXPECT_TRUE(fs::is_empty(tmp.path() / "journals"));
  EXPECT_EQ(slurp(journal), "not ours");
}

TEST_F(InPlace, AutoChoosesRenameWhenPermittedAndAnyPathOnRequest) {
  struct stat before {};
  ASSERT_EQ(::stat(file.c_str(), &before), 0);
  ASSERT_TRUE(remove({0}, opts(MboxRewrite::automatic)).ok());
  struct stat after {};
  ASSERT_EQ(::stat(file.c_str(), &after), 0);
  // We own the file (or are root): renamed, so a new inode.
  EXPECT_NE(after.st_ino, before.st_ino);
  ASSERT_TRUE(remove({0}, opts(MboxRewrite::in_place)).ok());
  struct stat again {};
  ASSERT_EQ(::stat(file.c_str(), &again), 0);
  EXPECT_EQ(again.st_ino, after.st_ino);
  EXPECT_EQ(slurp(file), join({2, 3, 4}));
}

// --- crashes and recovery ------------------------------------------------------------

// A crash at each stage, then (optionally) an MTA appending before the next
// login: the next login sees the old or the new state, plus the appended mail.
TEST_F(InPlace, EveryCrashPointRecoversToOldOrNewPlusAppendedMail) {
  struct Case {
    const char* stage;
    bool old_state;  // what the next login must see
  };
  const Case cases[] = {{"journal-partial", true},
                        {"journal", true},
                        {"move", true},
                        {"moved", true},
                        {"truncated", false}};
  const std::string late = msg("late@x", "late", "after the crash\n") + "\n";
  for (const bool append : {false, true}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(c.stage) + (append ? " +append" : ""));
      spit(file, content);
      auto o = opts();
      o.fail_at = [&c](std::string_view s) { return s == c.stage; };
      EXPECT_FALSE(remove({0, 3}, o).ok());
      EXPECT_TRUE(fs::exists(journal));
      if (append) {
        // An MTA after the crash (the dead server's locks are gone).
        UniqueFd afd(::open(file.c_str(), O_WRONLY | O_APPEND));
        ASSERT_TRUE(afd);
        auto lk = MboxLock::acquire(file, afd.get(), true, opts().lock);
        ASSERT_TRUE(lk.ok());
        ASSERT_TRUE(write_all(afd.get(), late));
      }
      auto md = open_mbox(file, opts());
      ASSERT_TRUE(md.ok()) << md.error().message;
      const std::string want = (c.old_state ? content : join({1, 2, 4})) + (append ? late : "");
      EXPECT_EQ((*md)->messages().size(), (c.old_state ? 5u : 3u) + (append ? 1u : 0u));
      md->reset();
      EXPECT_EQ(slurp(file), want);
      EXPECT_FALSE(fs::exists(journal));
      // And the deletions work afterwards.
      ASSERT_TRUE(remove({0}, opts()).ok());
    }
  }
}

TEST_F(InPlace, QuitRecoversBeforeItsOwnRewrite) {
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  // Meanwhile another server (its own session locks) dies in an in-place
  // rewrite of the same file.
  auto o = opts();
  o.session_lock_dir = tmp.path() / "other-locks";
  o.fail_at = [](std::string_view s) { return s == "move"; };
  EXPECT_FALSE(remove({2}, o).ok());
  ASSERT_TRUE(fs::exists(journal));
  // QUIT first undoes that, then deletes by identity.
  const std::size_t del[] = {4};
  ASSERT_TRUE((*md)->commit(del).ok());
  md->reset();
  EXPECT_FALSE(fs::exists(journal));
  EXPECT_EQ(slurp(file), join({0, 1, 2, 3}));
}

TEST_F(InPlace, RecoveryDiscardsBadJournalsWithoutTouchingTheMbox) {
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  MboxJournal j;
  j.dev = static_cast<std::uint64_t>(st.st_dev);
  j.ino = static_cast<std::uint64_t>(st.st_ino);
  j.size = content.size();
  j.offset = msgs[0].size() + 1;
  j.new_size = j.offset + 5;
  j.path = file.string();
  j.region = std::string(j.size - j.offset, 'Z');  // would overwrite the mbox if trusted
  const std::string good = encode_mbox_journal(j);
  std::string corrupt = good;
  corrupt[good.size() / 2] ^= 0x20;
  MboxJournal other = j;
  other.ino += 1;  // the journal of a file that is gone
  const std::vector<std::pair<const char*, std::string>> bad = {
      {"truncated", good.substr(0, good.size() - 7)},
      {"corrupted", corrupt},
      {"other inode", encode_mbox_journal(other)},
      {"empty", ""},
  };
  for (const auto& [what, text] : bad) {
    SCOPED_TRACE(what);
    spit(journal, text);
    ::chmod(journal.c_str(), 0600);
    EXPECT_EQ(count(), 5u);
    EXPECT_EQ(slurp(file), content);
    EXPECT_FALSE(fs::exists(journal));
  }
  // The same journal, valid: it is trusted (the mbox is not truncated: the
  // mark at new_size must be NUL for an undo).
  {
    UniqueFd fd(::open(file.c_str(), O_RDWR));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::pwrite(fd.get(), "\0", 1, static_cast<off_t>(j.new_size)), 1);
  }
  spit(journal, good);
  auto md = open_mbox(file, opts());
  EXPECT_FALSE(fs::exists(journal));
  EXPECT_EQ(slurp(file), content.substr(0, j.offset) + j.region);
  // A valid journal that does not fit the file (shorter than the original,
  // not at new_size): left alone, and the login fails instead of guessing.
  md = Result<std::unique_ptr<pop3::Maildrop>>(make_error(Errc::invalid, "x"));
  spit(file, content);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  j.ino = static_cast<std::uint64_t>(st.st_ino);
  j.dev = static_cast<std::uint64_t>(st.st_dev);
  j.size = content.size() + 100;
  j.region = std::string(j.size - j.offset, 'Z');
  {
    UniqueFd fd(::open(file.c_str(), O_RDWR));
    ASSERT_EQ(::pwrite(fd.get(), "\0", 1, static_cast<off_t>(j.new_size)), 1);
  }
  const std::string marked = slurp(file);
  spit(journal, encode_mbox_journal(j));
  auto refused = open_mbox(file, opts());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("left for the administrator"), std::string::npos);
  EXPECT_TRUE(fs::exists(journal));
  EXPECT_EQ(slurp(file), marked);
}

TEST_F(InPlace, ReadOnlyMboxIsAClearErrorAndNothingChanges) {
  // Legitimate skip: the non-root twin of the case above (CI, as root, runs
  // that one); root writes a 0440 file regardless of its mode.
  if (::geteuid() == 0) GTEST_SKIP() << "root can write a 0440 file";
  ::chmod(file.c_str(), 0440);
  auto r = remove({0}, opts());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("nothing deleted"), std::string::npos);
  EXPECT_EQ(slurp(file), content);
}

}  // namespace
}  // namespace apop::store
