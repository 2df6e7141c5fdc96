// Destinations of `apop fetch`: Maildir, mbox (mboxrd) and MDA.
#include "client/destination.hpp"
#include "temp_dir.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace apop::client {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using TempDir = ::apop::test::TempDir;

using ::apop::test::slurp;
using ::apop::test::spit;

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Destination> open_ok(const std::string& spec, const DestinationOptions& o = {}) {
  auto d = open_destination(spec, o);
  if (!d) ADD_FAILURE() << spec << ": " << d.error().message;
  return d ? std::move(d).value() : nullptr;
}

MessageMeta meta(std::string from = "sender@example.org", std::int64_t at = 1735812000) {
  MessageMeta m;
  m.uidl = "uid-1";
  m.envelope_from = std::move(from);
  m.received_at = at;  // Thu Jan  2 10:00:00 2025 UTC
  return m;
}

const std::string kMsg =
    "From: Sender <sender@example.org>\nSubject: hello\n\nline one\n.dot line\nlast\n";

// Runs fn in a child process and returns its exit status (fn's return value).
template <typename Fn>
int in_child(Fn fn) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

// ---------------------------------------------------------------------------
// Specs

TEST(DestinationSpec, BadSpecsAreInvalid) {
  TempDir t;
  for (const std::string& spec : std::vector<std::string>{
           "", "maildir", "Maildir:/tmp/x", "imap:x", "maildir:", "mbox:", "mda:", "mda:   ",
           "mbox:" + (t.path() / "no" / "such" / "dir" / "mbox").string(),
           "mbox:" + t.path().string(), "mbox:" + t.path().string() + "/",
           std::string("maildir:/tmp/a\0b", 16)}) {
    auto d = open_destination(spec);
    ASSERT_FALSE(d) << spec;
    EXPECT_EQ(d.error().code, Errc::invalid) << spec;
    EXPECT_FALSE(d.error().message.empty());
  }
}

TEST(DestinationSpec, MaildirPathThatIsAFileIsAnError) {
  TempDir t;
  spit(t.path() / "file", "x");
  auto d = open_destination("maildir:" + (t.path() / "file").string());
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().code, Errc::ok);
}

TEST(DestinationSpec, DescribeAndHomeExpansion) {
  TempDir t;
  const char* old = std::getenv("HOME");
  const std::string saved = old ? old : "";
  ::setenv("HOME", t.path().c_str(), 1);
  auto d = open_ok("maildir:~/Mail");
  if (old) ::setenv("HOME", saved.c_str(), 1);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->describe(), "maildir:" + (t.path() / "Mail").string());
  EXPECT_TRUE(fs::is_directory(t.path() / "Mail" / "new"));
  auto m = open_ok("mda:cat >/dev/null");
  EXPECT_EQ(m->describe(), "mda:cat >/dev/null");
}

// ---------------------------------------------------------------------------
// Maildir

TEST(MaildirDestination, CreatesLayoutAndStoresByteForByte) {
  TempDir t;
  const fs::path md = t.path() / "a" / "b" / "Maildir";
  DestinationOptions o;
  o.hostname = "host/with:odd,chars";
  auto d = open_ok("maildir:" + md.string(), o);
  ASSERT_TRUE(d);
  for (const char* sub : {"cur", "new", "tmp"}) EXPECT_TRUE(fs::is_directory(md / sub)) << sub;

  const std::string starts_with_from = "From someone Thu Jan  2 10:00:00 2025\nSubject: x\n\nbody";
  ASSERT_TRUE(d->store(kMsg, meta()));
  ASSERT_TRUE(d->store(starts_with_from, meta()));
  ASSERT_TRUE(d->store("", meta()));

  const auto names = names_in(md / "new");
  ASSERT_EQ(names.size(), 3u);
  EXPECT_TRUE(names_in(md / "tmp").empty());
  EXPECT_TRUE(names_in(md / "cur").empty());
  const std::regex rx(
      R"(^(\d+)\.M(\d+)P(\d+)Q(\d+)\.host\\057with\\072odd\\054chars,S=(\d+),W=(\d+)$)");
  std::multiset<std::string> contents;
  for (const auto& n : names) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(n, m, rx)) << n;
    EXPECT_EQ(std::stoi(m[3]), ::getpid());
    const std::string body = slurp(md / "new" / n);
    contents.insert(body);
    EXPECT_EQ(std::stoull(m[5]), body.size()) << n;
    EXPECT_EQ(std::stoull(m[6]), body.size() + std::count(body.begin(), body.end(), '\n')) << n;
    struct stat st {};
    ASSERT_EQ(::stat((md / "new" / n).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  EXPECT_EQ(contents, (std::multiset<std::string>{kMsg, starts_with_from, ""}));
}

TEST(MaildirDestination, PublishHookSeesTheFinalNameBeforeTheLinkAndCanVeto) {
  TempDir t;
  const fs::path md = t.path() / "Maildir";
  DestinationOptions o;
  o.hostname = "h";
  std::vector<std::string> seen;
  bool veto = false;
  std::size_t published = 0;  // files in new/ before this store
  o.before_publish = [&](std::string_view base, const MessageMeta& m) -> Result<void> {
    // Durable in tmp/, not yet visible in new/.
    EXPECT_EQ(names_in(md / "new").size(), published);
    EXPECT_EQ(names_in(md / "tmp").size(), 1u);
    seen.push_back(std::string(base) + " " + m.uidl);
    if (veto) return make_error(Errc::temporary, "map not writable");
    return {};
  };
  auto d = open_ok("maildir:" + md.string(), o);
  ASSERT_TRUE(d);
  MessageMeta m = meta();
  m.uidl = "UID-1";
  ASSERT_TRUE(d->store(kMsg, m));
  auto names = names_in(md / "new");
  ASSERT_EQ(names.size(), 1u);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], *names.begin() + " UID-1");
  published = 1;
  veto = true;
  auto r = d->store(kMsg, m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(names_in(md / "new").size(), 1u);  // nothing published
  EXPECT_TRUE(names_in(md / "tmp").empty());   // nor left behind
}

TEST(MaildirDestination, NewDirectoryGoneIsTemporaryAndLeavesNoTmpFile) {
  TempDir t;
  const fs::path md = t.path() / "Maildir";
  auto d = open_ok("maildir:" + md.string());
  ASSERT_TRUE(d);
  fs::remove(md / "new");
  spit(md / "new", "not a directory");
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_TRUE(names_in(md / "tmp").empty());
}

TEST(MaildirDestination, WriteErrorLeavesNothingVisible) {
  TempDir t;
  const fs::path md = t.path() / "Maildir";
  auto d = open_ok("maildir:" + md.string());
  ASSERT_TRUE(d);
  // A file size limit makes write() fail with EFBIG part way through.
  const int rc = in_child([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    auto r = d->store(std::string(100000, 'x'), meta());
    if (r) return 1;
    return r.error().code == Errc::temporary ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(names_in(md / "new").empty());
  EXPECT_TRUE(names_in(md / "tmp").empty());
}

// ---------------------------------------------------------------------------
// mbox

TEST(MboxDestination, FromLineQuotingAndSeparator) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  auto d = open_ok("mbox:" + mbox.string());
  ASSERT_TRUE(d);
  EXPECT_FALSE(fs::exists(mbox));  // created on first store
  const std::string msg =
      "From the start\n"
      "Subject: q\n"
      "\n"
      "From here\n"
      ">From there\n"
      ">>From everywhere\n"
      "From\n"
      "Fromage\n"
      " From indented\n"
      "from lower\n"
      ">From\n"
      "last line without newline";
  ASSERT_TRUE(d->store(msg, meta()));
  const std::string expected =
      "From sender@example.org Thu Jan  2 10:00:00 2025\n"
      ">From the start\n"
      "Subject: q\n"
      "\n"
      ">From here\n"
      ">>From there\n"
      ">>>From everywhere\n"
      "From\n"
      "Fromage\n"
      " From indented\n"
      "from lower\n"
      ">From\n"
      "last line without newline\n"
      "\n";
  EXPECT_EQ(slurp(mbox), expected);
  struct stat st {};
  ASSERT_EQ(::stat(mbox.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(t.path() / "mbox.lock"));

  // Second message: envelope with blanks, empty envelope, a date in December.
  ASSERT_TRUE(d->store("A: b\n\nx\n", meta("a b\tc", 1734567890)));
  ASSERT_TRUE(d->store("C: d\n\ny\n", meta("", 1734567890)));
  EXPECT_EQ(slurp(mbox), expected +
                             "From a_b_c Thu Dec 19 00:24:50 2024\nA: b\n\nx\n\n"
                             "From MAILER-DAEMON Thu Dec 19 00:24:50 2024\nC: d\n\ny\n\n");
}

TEST(MboxDestination, RepairsMissingSeparatorOfExistingFile) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  for (const auto& [existing, glue] : std::vector<std::pair<std::string, std::string>>{
           {"From a Thu Jan  1 00:00:00 1970\nno newline", "\n\n"},
           {"From a Thu Jan  1 00:00:00 1970\none newline\n", "\n"},
           {"From a Thu Jan  1 00:00:00 1970\nblank line\n\n", ""},
           {"\n", ""}}) {
    spit(mbox, existing);
    auto d = open_ok("mbox:" + mbox.string());
    ASSERT_TRUE(d);
    ASSERT_TRUE(d->store("S: x\n\nb\n", meta()));
    EXPECT_EQ(slurp(mbox),
              existing + glue + "From sender@example.org Thu Jan  2 10:00:00 2025\nS: x\n\nb\n\n");
  }
}

TEST(MboxDestination, FreshDotlockTimesOutAsTemporary) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  spit(mbox, "");
  // A live owner (this process): the lock is respected until the timeout.
  spit(t.path() / "mbox.lock", std::to_string(::getpid()) + "\n");
  DestinationOptions o;
  o.lock_timeout = 300ms;
  auto d = open_ok("mbox:" + mbox.string(), o);
  ASSERT_TRUE(d);
  const auto start = std::chrono::steady_clock::now();
  auto r = d->store(kMsg, meta());
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 5s);
  EXPECT_EQ(slurp(mbox), "");
  EXPECT_TRUE(fs::exists(t.path() / "mbox.lock"));  // not ours: left alone
}

// A store into an mbox whose dotlock holds `content` and was last written
// `age` seconds ago: the lock is broken, the message stored, and no lock
// file (ours or the private one it is linked from) is left.
void expect_dotlock_broken(const std::string& content, std::time_t age) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  const fs::path lock = t.path() / "mbox.lock";
  spit(lock, content);
  timeval when[2] = {{std::time(nullptr) - age, 0}, {std::time(nullptr) - age, 0}};
  ASSERT_EQ(::utimes(lock.c_str(), when), 0);
  DestinationOptions o;
  o.lock_timeout = 2s;
  o.dotlock_stale = 300s;
  auto d = open_ok("mbox:" + mbox.string(), o);
  ASSERT_TRUE(d);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(d->store(kMsg, meta()));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // not waited out
  EXPECT_FALSE(fs::exists(lock));
  EXPECT_NE(slurp(mbox).find("line one"), std::string::npos);
  for (const auto& e : fs::directory_iterator(t.path())) {
    EXPECT_EQ(e.path().filename().string().find(".apop"), std::string::npos) << e.path();
  }
}

TEST(MboxDestination, StaleDotlockIsBroken) {
  // Older than dotlock_stale, whatever it names (here this live process).
  expect_dotlock_broken(std::to_string(::getpid()) + "\n", 3600);
}

TEST(MboxDestination, FreshDotlockOfADeadProcessIsBrokenAtOnce) {
  // As the server's mbox locking (store::MboxLock): a dotlock naming a PID
  // that no longer exists is left over by a crash and does not make every
  // fetch wait for dotlock_stale.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ASSERT_GT(dead, 0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  expect_dotlock_broken(std::to_string(dead) + "\n", 0);
}

TEST(MboxDestination, FcntlLockHeldByAnotherProcessTimesOut) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  spit(mbox, "");
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(mbox.c_str(), O_RDWR);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || ::fcntl(fd, F_SETLKW, &fl) != 0) ::_exit(1);
    (void)::write(ready[1], "x", 1);
    char c;
    (void)::read(done[0], &c, 1);
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  DestinationOptions o;
  o.lock_timeout = 300ms;
  auto d = open_ok("mbox:" + mbox.string(), o);
  auto r = d->store(kMsg, meta());
  (void)::write(done[1], "x", 1);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_EQ(slurp(mbox), "");
  EXPECT_FALSE(fs::exists(t.path() / "mbox.lock"));  // ours, removed again
  // Free again: works.
  EXPECT_TRUE(d->store(kMsg, meta()));
  for (int fd : {ready[0], ready[1], done[0], done[1]}) ::close(fd);
}

TEST(MboxDestination, ConcurrentAppendsFromTwoProcessesStayWhole) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  constexpr int kPerChild = 40;
  std::vector<pid_t> kids;
  for (int child = 0; child < 2; ++child) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      DestinationOptions o;
      o.lock_timeout = 30s;
      auto d = open_destination("mbox:" + mbox.string(), o);
      if (!d) ::_exit(1);
      for (int i = 0; i < kPerChild; ++i) {
        // Large enough that one write() could interleave without locks.
        std::string body = "Subject: c" + std::to_string(child) + " m" + std::to_string(i) + "\n\n";
        for (int l = 0; l < 2000; ++l) {
          body += "child " + std::to_string(child) + " message " + std::to_string(i) + " line " +
                  std::to_string(l) + "\n";
        }
        if (!d.value()->store(body, meta())) ::_exit(2);
      }
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t pid : kids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
  }
  // Parse: every message starts with a From line after a blank line.
  const std::string all = slurp(mbox);
  std::vector<std::string> msgs;
  std::size_t pos = 0;
  const std::string sep = "From sender@example.org Thu Jan  2 10:00:00 2025\n";
  ASSERT_EQ(all.compare(0, sep.size(), sep), 0);
  while (pos < all.size()) {
    const std::size_t next = all.find("\n\n" + sep, pos);
    const std::size_t end = next == std::string::npos ? all.size() : next + 2;
    msgs.push_back(all.substr(pos + sep.size(), end - pos - sep.size()));
    pos = end;
  }
  ASSERT_EQ(msgs.size(), 2u * kPerChild);
  std::set<std::string> subjects;
  for (const auto& m : msgs) {
    const std::string subject = m.substr(0, m.find('\n'));
    subjects.insert(subject);
    const int child = subject[10] - '0';
    const int i = std::stoi(subject.substr(13));
    std::string expected = subject + "\n\n";
    for (int l = 0; l < 2000; ++l) {
      expected += "child " + std::to_string(child) + " message " + std::to_string(i) + " line " +
                  std::to_string(l) + "\n";
    }
    ASSERT_EQ(m, expected + "\n") << subject;
  }
  EXPECT_EQ(subjects.size(), 2u * kPerChild);
}

TEST(MboxDestination, WriteErrorTruncatesBackToOriginalSize) {
  TempDir t;
  const fs::path mbox = t.path() / "mbox";
  const std::string existing = "From a Thu Jan  1 00:00:00 1970\nold message\n\n";
  spit(mbox, existing);
  auto d = open_ok("mbox:" + mbox.string());
  ASSERT_TRUE(d);
  const int rc = in_child([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit rl{8192, 8192};
    ::setrlimit(RLIMIT_FSIZE, &rl);
    auto r = d->store(std::string(100000, 'y') + "\n", meta());
    if (r) return 1;
    return r.error().code == Errc::temporary ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(slurp(mbox), existing);
  EXPECT_FALSE(fs::exists(t.path() / "mbox.lock"));
}

// ---------------------------------------------------------------------------
// MDA

TEST(MdaDestination, ExitZeroStoresMessageWithEnvironment) {
  TempDir t;
  const fs::path out = t.path() / "out";
  const fs::path env = t.path() / "env";
  auto d = open_ok("mda:cat > '" + out.string() +
                   "'; printf '%s|%s' \"$APOP_UIDL\" \"$SENDER\" > '" + env.string() + "'");
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->store(kMsg, meta()));
  EXPECT_EQ(slurp(out), kMsg);
  EXPECT_EQ(slurp(env), "uid-1|sender@example.org");
  // An unsafe sender is not exported; SENDER from our environment is not leaked.
  ::setenv("SENDER", "inherited", 1);
  ASSERT_TRUE(d->store("x\n", meta("a;rm -rf /")));
  ::unsetenv("SENDER");
  EXPECT_EQ(slurp(env), "uid-1|");
}

TEST(MdaDestination, LargeMessageThroughPipe) {
  TempDir t;
  const fs::path out = t.path() / "out";
  std::string big;
  for (int i = 0; i < 100000; ++i) big += "line " + std::to_string(i) + "\n";
  auto d = open_ok("mda:sleep 0.2; cat > '" + out.string() + "'");
  ASSERT_TRUE(d->store(big, meta()));
  EXPECT_EQ(slurp(out), big);
}

TEST(MdaDestination, ExitStatusesMapToErrors) {
  const struct {
    const char* cmd;
    Errc code;
  } cases[] = {
      {"cat >/dev/null; exit 75", Errc::temporary},  // EX_TEMPFAIL
      {"cat >/dev/null; exit 71", Errc::temporary},  // EX_OSERR
      {"cat >/dev/null; exit 1", Errc::permanent},
      {"cat >/dev/null; exit 67", Errc::permanent},  // EX_NOUSER
      {"cat >/dev/null; kill -9 $$", Errc::temporary},
      {"/nonexistent/mda", Errc::permanent},  // sh: 127
  };
  for (const auto& c : cases) {
    auto d = open_ok(std::string("mda:") + c.cmd);
    ASSERT_TRUE(d);
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r) << c.cmd;
    EXPECT_EQ(r.error().code, c.code) << c.cmd << ": " << r.error().message;
  }
}

TEST(MdaDestination, CommandThatDoesNotReadIsNotStoredAndNoSigpipe) {
  // Larger than any pipe buffer: the write fails with EPIPE. That must
  // neither kill us (SIGPIPE) nor count as stored, even with exit 0.
  const std::string big(4 * 1024 * 1024, 'z');
  for (const char* cmd : {"exit 0", "head -c 10 >/dev/null", "exec 0<&-; sleep 0.1"}) {
    auto d = open_ok(std::string("mda:") + cmd);
    ASSERT_TRUE(d);
    auto r = d->store(big, meta());
    ASSERT_FALSE(r) << cmd;
    EXPECT_EQ(r.error().code, Errc::temporary) << cmd;
  }
  sigset_t mask, pending;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  EXPECT_FALSE(sigismember(&mask, SIGPIPE));
  sigpending(&pending);
  EXPECT_FALSE(sigismember(&pending, SIGPIPE));
  // Non-reading but failing: the exit status wins (permanent).
  auto d = open_ok("mda:exit 1");
  auto r = d->store(big, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permanent);
}

TEST(MdaDestination, HungCommandIsKilledAfterTimeout) {
  DestinationOptions o;
  o.mda_timeout = 400ms;
  TempDir t;
  const fs::path marker = t.path() / "marker";
  // The background sleep is in the MDA's process group: it dies too.
  auto d = open_ok("mda:(sleep 2; touch '" + marker.string() + "') & cat >/dev/null; sleep 30", o);
  ASSERT_TRUE(d);
  const auto start = std::chrono::steady_clock::now();
  auto r = d->store(kMsg, meta());
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_GE(took, 350ms);
  EXPECT_LT(took, 5s);
  // And one that never reads a message larger than the pipe buffer.
  auto d2 = open_ok("mda:sleep 30", o);
  auto r2 = d2->store(std::string(1 << 20, 'q'), meta());
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code, Errc::temporary);
  ::sleep(2);
  EXPECT_FALSE(fs::exists(marker));
}

TEST(MdaDestination, StdoutOfTheMdaGoesToStderr) {
  TempDir t;
  const fs::path out = t.path() / "stdout";
  const fs::path err = t.path() / "stderr";
  const int rc = in_child([&] {
    const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(o, 1);
    ::dup2(e, 2);
    auto d = open_destination("mda:cat >/dev/null; echo to-stdout; echo to-stderr >&2");
    if (!d) return 1;
    return d.value()->store(kMsg, meta()) ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(slurp(out), "");
  EXPECT_EQ(slurp(err), "to-stdout\nto-stderr\n");
}

}  // namespace
}  // namespace apop::client
