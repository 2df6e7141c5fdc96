// Tests for store/mbox.hpp and store/mail_location.hpp: parsing, quoting,
// sizes, UIDLs, the rewrite at QUIT, locks, concurrent appends, simulated
// crashes, delivery, and the per-user location.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/mail_location.hpp"
#include "store/mbox.hpp"
#include "temp_dir.hpp"

namespace apop::store {
namespace {

namespace fs = std::filesystem;
using TempDir = ::apop::test::TempDir;
using namespace std::chrono_literals;

using ::apop::test::slurp;
using ::apop::test::spit;

int content_fd(const std::string& content) {
  const int fd = ::memfd_create("apop-test", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (::write(fd, content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    std::abort();
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

std::string msg(const std::string& from, const std::string& subject, const std::string& body,
                const std::string& extra = "") {
  return "From " + from + " Thu Jan  2 10:00:00 2025\n" + extra + "From: " + from +
         "\nSubject: " + subject + "\nMessage-ID: <" + subject + "@example.org>\n\n" + body + "\n";
}

std::string body_of(pop3::Maildrop& md, std::size_t i) {
  auto src = md.open(i);
  EXPECT_TRUE(src.ok());
  if (!src.ok()) return {};
  std::string out;
  char buf[7];  // small, to exercise many reads
  for (;;) {
    auto n = (*src)->read(std::span<char>(buf, sizeof buf));
    EXPECT_TRUE(n.ok()) << n.error().message;
    if (!n.ok() || *n == 0) break;
    out.append(buf, *n);
  }
  return out;
}

struct MboxStore : ::testing::Test {
  TempDir tmp{"apop-mbox"};
  fs::path file = tmp.path() / "alice";
  MboxOptions opts() {
    MboxOptions o;
    o.session_lock_dir = tmp.path() / "locks";
    o.lock.lock_timeout = 300ms;
    return o;
  }
};

// --- parsing -----------------------------------------------------------------

TEST(MboxParse, SplitsAtFromAfterEmptyLineOnly) {
  const std::string data =
      "From a Thu Jan  2 10:00:00 2025\nSubject: 1\n\nbody\nFrom here is not a start\n>From "
      "quoted\n\nFrom b Thu Jan  2 10:00:01 2025\nSubject: 2\n\nsecond\n\n";
  auto spans = parse_mbox(data);
  ASSERT_TRUE(spans.ok());
  ASSERT_EQ(spans->size(), 2u);
  const auto& s0 = (*spans)[0];
  EXPECT_EQ(data.substr(s0.body, s0.end - s0.body),
            "Subject: 1\n\nbody\nFrom here is not a start\n>From quoted\n");
  EXPECT_EQ(s0.next, (*spans)[1].start);
  EXPECT_EQ(s0.end + 1, s0.next);
  const auto& s1 = (*spans)[1];
  EXPECT_EQ(data.substr(s1.body, s1.end - s1.body), "Subject: 2\n\nsecond\n");
  EXPECT_EQ(s1.next, data.size());
}

TEST(MboxParse, EdgeCases) {
  EXPECT_TRUE(parse_mbox("").value().empty());
  EXPECT_TRUE(parse_mbox("\n\n\n").value().empty());
  auto bad = parse_mbox("Subject: no envelope\n\nbody\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::invalid);
  EXPECT_FALSE(parse_mbox("\nFrom").ok());  // "From" without the space

  // Leading empty lines are skipped; a last message without a separator
  // keeps all its bytes; a From line without LF is an empty message.
  const std::string data = "\n\nFrom a x\nA\n\nFrom b y\nB";
  auto spans = parse_mbox(data);
  ASSERT_TRUE(spans.ok());
  ASSERT_EQ(spans->size(), 2u);
  EXPECT_EQ((*spans)[0].start, 2u);
  EXPECT_EQ(data.substr((*spans)[1].body, (*spans)[1].end - (*spans)[1].body), "B");
  auto only = parse_mbox("From a x");
  ASSERT_TRUE(only.ok());
  ASSERT_EQ(only->size(), 1u);
  EXPECT_EQ((*only)[0].body, (*only)[0].end);

  // An empty message between two others.
  const std::string e = "From a x\n\nFrom b y\nB\n";
  auto es = parse_mbox(e);
  ASSERT_TRUE(es.ok());
  ASSERT_EQ(es->size(), 2u);
  EXPECT_EQ((*es)[0].body, (*es)[0].end);
}

TEST(MboxParse, FactsSizeXuidlAndHeaderUidl) {
  const std::string data = msg("a@x", "one", "hi", "X-UIDL: 1f2e3d\n") + "\n" +
                           msg("b@x", "two", "x", "X-UIDL: has space\n") + "\n" +
                           msg("c@x", "three", "y", "X-UIDL: " + std::string(71, 'a') + "\n");
  auto spans = parse_mbox(data).value();
  ASSERT_EQ(spans.size(), 3u);
  auto f0 = mbox_message_facts(data, spans[0]);
  EXPECT_EQ(f0.x_uidl, "1f2e3d");
  EXPECT_EQ(f0.size, pop3::crlf_size(data.substr(spans[0].body, spans[0].end - spans[0].body)));
  EXPECT_EQ(mbox_message_facts(data, spans[1]).x_uidl, "");  // blank inside: invalid
  EXPECT_EQ(mbox_message_facts(data, spans[2]).x_uidl, "");  // 71 chars: too long
  EXPECT_EQ(f0.header_uidl.size(), 41u);
  EXPECT_EQ(f0.header_uidl[0], 'M');
  // asctime date of the From line, local time.
  std::tm tm{};
  tm.tm_year = 125;
  tm.tm_mon = 0;
  tm.tm_mday = 2;
  tm.tm_hour = 10;
  tm.tm_isdst = -1;
  EXPECT_EQ(f0.delivered, static_cast<std::int64_t>(std::mktime(&tm)));
}

TEST(MboxParse, HeaderUidlIgnoresStatusHeadersAndBody) {
  const std::string a = msg("a@x", "s", "body one");
  const std::string b =
      "From a@x Thu Jan  2 10:00:00 2025\nStatus: RO\nX-Status: A\n" + a.substr(a.find('\n') + 1);
  auto sa = parse_mbox(a).value();
  auto sb = parse_mbox(b).value();
  EXPECT_EQ(mbox_message_facts(a, sa[0]).header_uidl, mbox_message_facts(b, sb[0]).header_uidl);
  const std::string c = "From a@x Thu Jan  2 10:00:00 2025\nSubject: other\n\nbody one\n";
  auto sc = parse_mbox(c).value();
  EXPECT_NE(mbox_message_facts(a, sa[0]).header_uidl, mbox_message_facts(c, sc[0]).header_uidl);
}

TEST(MboxParse, HeaderValue) {
  EXPECT_EQ(mbox_header_value("x-uidl:  abc \r\nB: c\n\nX-UIDL: no\n", "X-UIDL"), "abc");
  EXPECT_EQ(mbox_header_value("A: b\n\nX-UIDL: body\n", "X-UIDL"), std::nullopt);
  EXPECT_EQ(mbox_header_value("A: b\n folded\nC: d\n", "a"), "b\n folded");
  EXPECT_EQ(mbox_header_value("not a header\nX-UIDL: a\n", "X-UIDL"), std::nullopt);
}

// --- serving -----------------------------------------------------------------

TEST_F(MboxStore, MissingFileIsEmpty) {
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok()) << md.error().message;
  EXPECT_TRUE((*md)->messages().empty());
}

TEST_F(MboxStore, NotAnMboxIsTemporaryError) {
  spit(file, "garbage\n");
  auto md = open_mbox(file, opts());
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.error().code, Errc::temporary);
}

TEST_F(MboxStore, ListsSizesUidlsAndRetrievesExactBytes) {
  const std::string m1 = msg("a@x", "one", "line\r\nwith crlf\n>From quoted\nbare\rcr");
  const std::string m2 = msg("b@x", "two", "second", "X-UIDL: qpopper-uid-2\n");
  spit(file, m1 + "\n" + m2 + "\n");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok()) << md.error().message;
  auto list = (*md)->messages();
  ASSERT_EQ(list.size(), 2u);
  const std::string b1 = body_of(**md, 0);
  EXPECT_EQ(b1, m1.substr(m1.find('\n') + 1));
  EXPECT_NE(b1.find(">From quoted\n"), std::string::npos);  // never unquoted
  EXPECT_EQ(list[0].size, pop3::crlf_size(b1));
  EXPECT_EQ(list[1].uidl, "qpopper-uid-2");
  EXPECT_EQ(list[0].uidl[0], 'M');
  EXPECT_NE(list[0].delivered, 0);
}

TEST_F(MboxStore, DuplicateUidlsAreMadeUnique) {
  const std::string same = msg("a@x", "same", "x");
  spit(file, same + "\n" + same + "\n" + msg("b@x", "b", "y", "X-UIDL: u1\n") + "\n" +
                 msg("c@x", "c", "z", "X-UIDL: u1\n") + "\n");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  std::set<std::string> uidls;
  for (const auto& m : (*md)->messages()) uidls.insert(m.uidl);
  EXPECT_EQ(uidls.size(), 4u);
  EXPECT_EQ((*md)->messages()[2].uidl, "u1");
  EXPECT_EQ((*md)->messages()[3].uidl[0], 'M');
}

TEST_F(MboxStore, SecondSessionIsInUse) {
  spit(file, msg("a@x", "1", "x"));
  auto first = open_mbox(file, opts());
  ASSERT_TRUE(first.ok());
  auto second = open_mbox(file, opts());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::in_use);
  first->reset();
  EXPECT_TRUE(open_mbox(file, opts()).ok());
}

TEST_F(MboxStore, DeleteRewritesKeepingOthersUidlsModeAndAppendedMail) {
  const std::string m1 = msg("a@x", "one", "1");
  const std::string m2 = msg("b@x", "two", "2");
  const std::string m3 = msg("c@x", "three", "3");
  spit(file, m1 + "\n" + m2 + "\n" + m3 + "\n");
  ::chmod(file.c_str(), 0660);
  std::vector<std::string> before;
  {
    auto md = open_mbox(file, opts());
    ASSERT_TRUE(md.ok());
    for (const auto& m : (*md)->messages()) before.push_back(m.uidl);
    // An MTA appends during the session (it takes the locks; none are held).
    const std::string late = msg("d@x", "late", "4");
    auto lock_fd = ::open(file.c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(lock_fd, 0);
    {
      auto lk = MboxLock::acquire(file, lock_fd, true, opts().lock);
      ASSERT_TRUE(lk.ok()) << lk.error().message;
      ASSERT_EQ(::write(lock_fd, late.data(), late.size()), static_cast<ssize_t>(late.size()));
      ASSERT_EQ(::write(lock_fd, "\n", 1), 1);
    }
    ::close(lock_fd);
    const std::size_t del[] = {0};
    ASSERT_TRUE((*md)->commit(del).ok());
  }
  EXPECT_EQ(slurp(file), m2 + "\n" + m3 + "\n" + msg("d@x", "late", "4") + "\n");
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_FALSE(fs::exists(tmp.path() / ".alice.apop-new"));
  EXPECT_FALSE(fs::exists(tmp.path() / "alice.lock"));
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  ASSERT_EQ((*md)->messages().size(), 3u);
  EXPECT_EQ((*md)->messages()[0].uidl, before[1]);
  EXPECT_EQ((*md)->messages()[1].uidl, before[2]);
}

TEST_F(MboxStore, DeleteAllLeavesEmptyFile) {
  spit(file, msg("a@x", "1", "x") + "\n" + msg("b@x", "2", "y") + "\n");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  const std::size_t del[] = {0, 1};
  ASSERT_TRUE((*md)->commit(del).ok());
  EXPECT_EQ(slurp(file), "");
}

TEST_F(MboxStore, DeletesByIdentityWhenAnotherProgramRewroteTheFile) {
  const std::string m1 = msg("a@x", "one", "1");
  const std::string m2 = msg("b@x", "two", "2");
  const std::string m3 = msg("c@x", "three", "3");
  spit(file, m1 + "\n" + m2 + "\n" + m3 + "\n");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  // A mail reader deletes message 1 meanwhile.
  spit(file, m2 + "\n" + m3 + "\n");
  const std::size_t del[] = {2};  // POP3 message 3 = m3
  ASSERT_TRUE((*md)->commit(del).ok());
  EXPECT_EQ(slurp(file), m2 + "\n");
}

TEST_F(MboxStore, RetrFailsInsteadOfSendingChangedBytes) {
  const std::string m1 = msg("a@x", "one", "original");
  spit(file, m1 + "\n");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  // Same length, other bytes (rewritten in place by another program).
  std::string changed = m1;
  changed.replace(changed.find("original"), 8, "CHANGED!");
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f << changed;
  }
  auto src = (*md)->open(0);
  ASSERT_TRUE(src.ok());
  char buf[4096];
  Result<std::size_t> n = std::size_t{0};
  do {
    n = (*src)->read(std::span<char>(buf, sizeof buf));
  } while (n.ok() && *n > 0);
  EXPECT_FALSE(n.ok());
}

TEST_F(MboxStore, CrashesDuringRewriteLeaveTheOldFile) {
  const std::string content =
      msg("a@x", "one", "1") + "\n" + msg("b@x", "two", "2") + "\n" + msg("c@x", "3", "3") + "\n";
  for (const char* stage : {"write", "fsync", "rename"}) {
    SCOPED_TRACE(stage);
    spit(file, content);
    auto o = opts();
    o.fail_at = [stage](std::string_view s) { return s == stage; };
    auto md = open_mbox(file, o);
    ASSERT_TRUE(md.ok());
    const std::size_t del[] = {1};
    EXPECT_FALSE((*md)->commit(del).ok());
    md->reset();
    EXPECT_EQ(slurp(file), content);
    EXPECT_FALSE(fs::exists(tmp.path() / ".alice.apop-new"));
    EXPECT_FALSE(fs::exists(tmp.path() / "alice.lock"));
  }
  // A named leftover (a crash between link and rename) is replaced next time.
  spit(tmp.path() / ".alice.apop-new", "leftover");
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  const std::size_t del[] = {1};
  ASSERT_TRUE((*md)->commit(del).ok());
  EXPECT_EQ(slurp(file), msg("a@x", "one", "1") + "\n" + msg("c@x", "3", "3") + "\n");
  EXPECT_FALSE(fs::exists(tmp.path() / ".alice.apop-new"));
}

// --- locks -------------------------------------------------------------------

TEST_F(MboxStore, LiveDotlockMeansInUse) {
  spit(file, msg("a@x", "1", "x"));
  spit(tmp.path() / "alice.lock", std::to_string(::getpid()) + "\n");  // a live owner
  const auto t0 = std::chrono::steady_clock::now();
  auto md = open_mbox(file, opts());
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.error().code, Errc::in_use);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_TRUE(fs::exists(tmp.path() / "alice.lock"));  // not ours: left alone
}

// Issue 17 item 5: the dotlock's private file is created with O_EXCL. A hard
// link or symlink planted under its name (in a directory others can write,
// such as /var/mail) must not truncate or overwrite the file it points to;
// the lock is taken under the next private name.
TEST_F(MboxStore, PlantedLinksUnderThePrivateDotlockNameAreNotWritten) {
  spit(file, msg("a@x", "1", "x"));
  const fs::path victim = tmp.path() / "victim";
  const std::string precious = "precious content\n";
  spit(victim, precious);
  const std::string dot = file.string() + ".lock";
  const long pid = ::getpid();
  // The names a lock tries first, and the name apop used before (without N).
  const std::string hard = dotlock_private_name(dot, pid, 0);
  const std::string sym = dotlock_private_name(dot, pid, 1);
  const std::string legacy = dot + "." + std::to_string(pid) + ".apop";
  ASSERT_EQ(::link(victim.c_str(), hard.c_str()), 0);
  ASSERT_EQ(::symlink(victim.c_str(), sym.c_str()), 0);
  ASSERT_EQ(::link(victim.c_str(), legacy.c_str()), 0);

  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd);
  {
    auto lk = MboxLock::acquire(file, fd.get(), true, opts().lock);
    ASSERT_TRUE(lk.ok()) << lk.error().message;
    EXPECT_EQ(slurp(dot), std::to_string(pid) + "\n");  // the dotlock is ours
    EXPECT_EQ(slurp(victim), precious);
  }
  EXPECT_FALSE(fs::exists(dot));  // released
  EXPECT_EQ(slurp(victim), precious);
  // The planted names are someone else's: left alone.
  EXPECT_TRUE(fs::exists(hard));
  EXPECT_TRUE(fs::is_symlink(sym));
  struct stat st {};
  ASSERT_EQ(::stat(victim.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 3u);
}

TEST_F(MboxStore, EveryPrivateDotlockNameTakenIsAClearError) {
  spit(file, msg("a@x", "1", "x"));
  const fs::path victim = tmp.path() / "victim";
  spit(victim, "precious\n");
  const std::string dot = file.string() + ".lock";
  for (unsigned n = 0; n < kDotlockPrivateNames; ++n) {
    ASSERT_EQ(::link(victim.c_str(), dotlock_private_name(dot, ::getpid(), n).c_str()), 0);
  }
  UniqueFd fd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd);
  auto lk = MboxLock::acquire(file, fd.get(), true, opts().lock);
  ASSERT_FALSE(lk.ok());
  EXPECT_EQ(lk.error().code, Errc::temporary);
  EXPECT_NE(lk.error().message.find("private dotlock file"), std::string::npos)
      << lk.error().message;
  EXPECT_EQ(slurp(victim), "precious\n");
  EXPECT_FALSE(fs::exists(dot));
}

TEST_F(MboxStore, StaleDotlocksAreRemoved) {
  spit(file, msg("a@x", "1", "x"));
  // Old (procmail/Postfix: by age).
  const fs::path lock = tmp.path() / "alice.lock";
  spit(lock, "");
  timeval old[2] = {{std::time(nullptr) - 1000, 0}, {std::time(nullptr) - 1000, 0}};
  ASSERT_EQ(::utimes(lock.c_str(), old), 0);
  {
    auto md = open_mbox(file, opts());
    EXPECT_TRUE(md.ok()) << md.error().message;
  }
  // Fresh, but naming a process that is gone (liblockfile's check).
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  spit(lock, std::to_string(child) + "\n");
  auto md = open_mbox(file, opts());
  EXPECT_TRUE(md.ok()) << md.error().message;
}

TEST_F(MboxStore, FcntlLockOfAnotherProcessMeansInUse) {
  spit(file, msg("a@x", "1", "x"));
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    // What procmail/mutt do: a POSIX write lock on the whole file.
    const int fd = ::open(file.c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || ::fcntl(fd, F_SETLK, &fl) != 0) ::_exit(1);
    (void)!::write(ready[1], "x", 1);
    char c;
    (void)!::read(done[0], &c, 1);
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  auto md = open_mbox(file, opts());
  ASSERT_FALSE(md.ok());
  EXPECT_EQ(md.error().code, Errc::in_use);
  EXPECT_FALSE(fs::exists(tmp.path() / "alice.lock"));  // our dotlock went with the failure
  (void)!::write(done[1], "x", 1);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(open_mbox(file, opts()).ok());
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
}

TEST_F(MboxStore, CommitUnderForeignLockDeletesNothing) {
  const std::string content = msg("a@x", "1", "x") + "\n" + msg("b@x", "2", "y") + "\n";
  spit(file, content);
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  spit(tmp.path() / "alice.lock", std::to_string(::getpid()) + "\n");
  const std::size_t del[] = {0};
  auto r = (*md)->commit(del);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(slurp(file), content);
}

// --- delivery ----------------------------------------------------------------

TEST_F(MboxStore, DeliverQuotesAndSeparates) {
  spit(file, "From old x\nSubject: old\n\nno final newline");
  MboxDeliverOptions o;
  o.sender = "bob@example.org";
  const int fd = content_fd("Subject: new\n\nFrom the start\n>From already\nlast");
  ASSERT_TRUE(mbox_deliver(file, fd, o).ok());
  ::close(fd);
  const std::string s = slurp(file);
  EXPECT_TRUE(
      s.starts_with("From old x\nSubject: old\n\nno final newline\n\nFrom bob@example.org "))
      << s;
  EXPECT_TRUE(s.ends_with("\nSubject: new\n\n>From the start\n>From already\nlast\n\n")) << s;
  auto md = open_mbox(file, opts());
  ASSERT_TRUE(md.ok());
  ASSERT_EQ((*md)->messages().size(), 2u);
  EXPECT_EQ(body_of(**md, 1), "Subject: new\n\n>From the start\n>From already\nlast\n");
}

TEST_F(MboxStore, DeliverKeepsTheMessagesOwnEnvelopeAndCutsBackOnFailure) {
  MboxDeliverOptions o;
  const int fd = content_fd("From alice@x Mon Jan  6 09:00:00 2025\nSubject: a\n\nA\n");
  ASSERT_TRUE(mbox_deliver(file, fd, o).ok());
  ::close(fd);
  const std::string first = slurp(file);
  EXPECT_EQ(first, "From alice@x Mon Jan  6 09:00:00 2025\nSubject: a\n\nA\n\n");
  o.fail_after_write = true;
  const int fd2 = content_fd("Subject: b\n\nB\n");
  auto r = mbox_deliver(file, fd2, o);
  ::close(fd2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(slurp(file), first);
  o.fail_after_write = false;
  o.max_size = 4;
  const int fd3 = content_fd("Subject: too big\n");
  auto big = mbox_deliver(file, fd3, o);
  ::close(fd3);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, Errc::invalid);
  EXPECT_EQ(slurp(file), first);
}

TEST_F(MboxStore, DeliverAppendsToTheFileRenamedOverTheOneItOpened) {
  // A POP3 rewrite renames a new file over the mbox while a delivery waits
  // for the lock: the message must go into the new file, not the unlinked
  // old one.
  spit(file, "From a x\nA\n\n");
  const fs::path lock = tmp.path() / "alice.lock";
  spit(lock, std::to_string(::getpid()) + "\n");
  MboxDeliverOptions o;
  o.lock.lock_timeout = 10s;
  const int fd = content_fd("Subject: c\n\nC\n");
  Result<void> r;
  std::thread t([&] { r = mbox_deliver(file, fd, o); });
  std::this_thread::sleep_for(200ms);  // it has opened the old file and waits
  spit(tmp.path() / "new", "From b y\nB\n\n");
  ASSERT_EQ(::rename((tmp.path() / "new").c_str(), file.c_str()), 0);
  ASSERT_EQ(::unlink(lock.c_str()), 0);
  t.join();
  ::close(fd);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const std::string s = slurp(file);
  EXPECT_TRUE(s.starts_with("From b y\nB\n\nFrom MAILER-DAEMON ")) << s;
  EXPECT_TRUE(s.ends_with("\nSubject: c\n\nC\n\n")) << s;
}

TEST_F(MboxStore, DeliverWaitsForTheLockThenTimesOut) {
  spit(tmp.path() / "alice.lock", std::to_string(::getpid()) + "\n");
  MboxDeliverOptions o;
  o.lock.lock_timeout = 200ms;
  const int fd = content_fd("Subject: x\n\nx\n");
  auto r = mbox_deliver(file, fd, o);
  ::close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::temporary);
}

// --- mail location -------------------------------------------------------------

TEST(MailLocation, ParseAndExpand) {
  auto def = parse_mail_location(kDefaultMailLocation, true);
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(def->format, MailLocation::Format::maildir);
  EXPECT_EQ(expand_mail_location(*def, "bob", "/srv/apop").value(), "/srv/apop/mail/bob");
  auto mb = parse_mail_location("mbox:/var/mail/%u", true);
  ASSERT_TRUE(mb.ok());
  EXPECT_EQ(mb->format, MailLocation::Format::mbox);
  EXPECT_EQ(format_mail_location(*mb), "mbox:/var/mail/%u");
  EXPECT_EQ(expand_mail_location(*mb, "bob", "/d").value(), "/var/mail/bob");
  EXPECT_EQ(expand_mail_location(parse_mail_location("mbox:/x/100%%/%u", true).value(), "a", "/d")
                .value(),
            "/x/100%/a");
  EXPECT_FALSE(expand_mail_location(*mb, "../etc", "/d").ok());
  EXPECT_FALSE(expand_mail_location(*mb, "a/b", "/d").ok());
  for (const char* bad :
       {"mbox", "imap:/x/%u", "mbox:", "mbox:/var/mail/%n", "mbox:/x/%", "mbox:/var/mail/shared"}) {
    auto r = parse_mail_location(bad, true);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, Errc::invalid);
    }
  }
  EXPECT_TRUE(parse_mail_location("mbox:/var/mail/shared", false).ok());
}

TEST_F(MboxStore, LocationOpenerChoosesPerUser) {
  spit(tmp.path() / "carol.mbox", msg("a@x", "1", "x"));
  LocationOpener opener(parse_mail_location("maildir:%d/mail/%u", true).value(), tmp.path(), opts(),
                        [&](std::string_view user) -> Result<std::optional<std::string>> {
                          if (user == "carol") return std::optional<std::string>("mbox:%d/%u.mbox");
                          if (user == "broken") return make_error(Errc::temporary, "db down");
                          return std::optional<std::string>{};
                        });
  auto carol = opener.open("carol");
  ASSERT_TRUE(carol.ok()) << carol.error().message;
  EXPECT_EQ((*carol)->messages().size(), 1u);
  auto dave = opener.open("dave");
  ASSERT_TRUE(dave.ok()) << dave.error().message;
  EXPECT_TRUE(fs::is_directory(tmp.path() / "mail" / "dave" / "cur"));
  auto broken = opener.open("broken");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.error().code, Errc::temporary);
}

TEST_F(MboxStore, LocationOpenerTakesTheLocationTheLoginReturned) {
  // The login seam: the session passes the account's own location (from the
  // login result) with the user; the opener then asks no lookup at all.
  spit(tmp.path() / "carol.mbox", msg("a@x", "1", "x"));
  int lookups = 0;
  LocationOpener opener(parse_mail_location("maildir:%d/mail/%u", true).value(), tmp.path(), opts(),
                        [&](std::string_view) -> Result<std::optional<std::string>> {
                          ++lookups;
                          return std::optional<std::string>{};
                        });
  const pop3::MailboxAddress carol{"carol", "mbox:%d/%u.mbox"};
  EXPECT_FALSE(opener.opens_without_waiting(carol));  // an mbox may wait for its lock
  auto md = opener.open(carol);
  ASSERT_TRUE(md.ok()) << md.error().message;
  EXPECT_EQ((*md)->messages().size(), 1u);
  EXPECT_EQ(lookups, 0);
  // A bad location from the store fails as temporary, like a lookup error.
  auto bad = opener.open(pop3::MailboxAddress{"carol", "nosuchformat:/x"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::temporary);
  // Without one: the lookup (delivery has no login), then the default.
  auto dave = opener.open("dave");
  ASSERT_TRUE(dave.ok()) << dave.error().message;
  EXPECT_EQ(lookups, 1);
  EXPECT_TRUE(fs::is_directory(tmp.path() / "mail" / "dave" / "cur"));
}

TEST_F(MboxStore, OnlyMaildirsOpenWithoutWaiting) {
  // An mbox may wait for its lock: the server keeps such logins off its
  // event loop (Session::blocking_step_next).
  LocationOpener per_user(parse_mail_location("maildir:%d/mail/%u", true).value(), tmp.path(),
                          opts(), [&](std::string_view user) -> Result<std::optional<std::string>> {
                            if (user == "carol") return std::optional<std::string>("mbox:%d/%u");
                            return std::optional<std::string>{};
                          });
  EXPECT_FALSE(per_user.opens_without_waiting("carol"));
  EXPECT_TRUE(per_user.opens_without_waiting("dave"));
  LocationOpener mbox(parse_mail_location("mbox:%d/%u.mbox", true).value(), tmp.path(), opts());
  EXPECT_FALSE(mbox.opens_without_waiting("dave"));
  LocationOpener maildir(parse_mail_location("maildir:%d/mail/%u", true).value(), tmp.path(),
                         opts());
  EXPECT_TRUE(maildir.opens_without_waiting("dave"));
}

TEST_F(MboxStore, BigMaildirDoesNotOpenOnTheEventLoop) {
  // Listing a big Maildir takes long enough to stall every other session:
  // its logins go to the pool like an mbox's (regression: after APOP went
  // inline, a 100,000-message first login ran on the event loop).
  LocationOpener maildir(parse_mail_location("maildir:%d/mail/%u", true).value(), tmp.path(),
                         opts());
  const fs::path cur = tmp.path() / "mail" / "erin" / "cur";
  fs::create_directories(cur);
  fs::create_directories(tmp.path() / "mail" / "erin" / "new");
  fs::create_directories(tmp.path() / "mail" / "erin" / "tmp");
  EXPECT_TRUE(maildir.opens_without_waiting("erin"));
  EXPECT_TRUE(maildir_opens_quickly(tmp.path() / "mail" / "erin"));
  // Entries until cur/ outgrows the limit (directory sizes grow by blocks on
  // ext4, by 20 bytes an entry on tmpfs).
  const auto dir_bytes = [&cur] {
    struct stat st {};
    return ::stat(cur.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  };
  for (int i = 0; dir_bytes() <= kQuickMaildirDirBytes && i < 100'000; ++i) {
    std::ofstream(cur / ("1700000000.M" + std::to_string(i) + "P1.host.example.org,S=10,W=10:2,"));
  }
  EXPECT_FALSE(maildir.opens_without_waiting("erin"));
  EXPECT_FALSE(maildir_opens_quickly(tmp.path() / "mail" / "erin"));
  // An unknown or missing Maildir: open() creates it or fails at once.
  EXPECT_TRUE(maildir.opens_without_waiting("frank"));
}

}  // namespace
}  // namespace apop::store
