// Per-account fetch state: UIDLs seen and the last offer (downgrade detection).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "client/account_state.hpp"
#include "temp_dir.hpp"

namespace apop::client {
namespace {

namespace fs = std::filesystem;

using TempDir = ::apop::test::TempDir;

using ::apop::test::slurp;
using ::apop::test::spit;

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0xFFFF;
  return st.st_mode & 07777;
}

// Sets an environment variable for the scope of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(AccountState, MissingFileIsEmpty) {
  TempDir t;
  auto s = AccountState::load(t.path() / "nope" / "state");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->has_offer());
  EXPECT_FALSE(s->seen("a"));
  EXPECT_FALSE(fs::exists(t.path() / "nope"));  // loading creates nothing
}

TEST(AccountState, RoundTripExactFormatModesAndNoLeftovers) {
  TempDir t;
  const fs::path dir = t.path() / "x" / "y";
  const fs::path file = dir / "acct.state";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  s->mark_seen("b-2");
  s->mark_seen("a-1");
  s->mark_seen("a-1");
  s->mark_seen(std::string(70, '~'));
  s->set_offer(Offer{true, true, false});
  ::umask(022);
  ASSERT_TRUE(s->save());
  EXPECT_EQ(slurp(file),
            "apop-fetch-state 1\noffer tls=1 apop=1 scram=0\nuidl a-1\nuidl b-2\nuidl " +
                std::string(70, '~') + "\n");
  EXPECT_EQ(mode_of(file), 0600u);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(t.path() / "x"), 0700u);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary file left behind

  auto back = AccountState::load(file);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_TRUE(back->has_offer());
  EXPECT_EQ(back->last_offer(), (Offer{true, true, false}));
  EXPECT_TRUE(back->seen("a-1"));
  EXPECT_TRUE(back->seen("b-2"));
  EXPECT_TRUE(back->seen(std::string(70, '~')));
  EXPECT_FALSE(back->seen("c-3"));

  // Overwrite: replaced atomically, offer updated.
  back->set_offer(Offer{false, false, true});
  back->mark_seen("c-3");
  ASSERT_TRUE(back->save());
  auto third = AccountState::load(file);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->last_offer(), (Offer{false, false, true}));
  EXPECT_TRUE(third->seen("c-3"));
  EXPECT_TRUE(third->seen("a-1"));
}

TEST(AccountState, NoOfferLineMeansNoOffer) {
  TempDir t;
  const fs::path file = t.path() / "s";
  spit(file, "apop-fetch-state 1\nuidl x\n");
  auto s = AccountState::load(file);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_FALSE(s->has_offer());
  EXPECT_TRUE(s->seen("x"));
  ASSERT_TRUE(s->save());
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl x\n");
}

TEST(AccountState, InvalidUidlsAreNotRecorded) {
  TempDir t;
  const fs::path file = t.path() / "s";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  for (const std::string& bad :
       {std::string(""), std::string(71, 'a'), std::string("a b"), std::string("a\nuidl injected"),
        std::string("\x7f"), std::string("caf\xc3\xa9")}) {
    s->mark_seen(bad);
    EXPECT_FALSE(s->seen(bad));
  }
  ASSERT_TRUE(s->save());
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\n");
  EXPECT_TRUE(AccountState::load(file));
}

TEST(AccountState, RetainOnly) {
  AccountState s;
  for (const char* u : {"a", "b", "c", "d"}) s.mark_seen(u);
  s.retain_only({"b", "d", "zzz"});
  EXPECT_FALSE(s.seen("a"));
  EXPECT_TRUE(s.seen("b"));
  EXPECT_FALSE(s.seen("c"));
  EXPECT_TRUE(s.seen("d"));
  EXPECT_FALSE(s.seen("zzz"));  // only drops, never adds
  s.retain_only({});
  EXPECT_FALSE(s.seen("b"));
}

TEST(AccountState, CorruptFilesArePermanentWithLineNumber) {
  TempDir t;
  const fs::path file = t.path() / "s";
  const struct {
    std::string text;
    int line;
  } cases[] = {
      {"", 1},
      {"garbage\n", 1},
      {"apop-fetch-state 2\n", 1},
      {"apop-fetch-state 1", 1},  // truncated: no newline
      {"APOP-FETCH-STATE 1\n", 1},
      {"apop-fetch-state 1\nuidl ok\ngarbage", 3},  // torn, but not a uidl line
      {"apop-fetch-state 1\noffer tls=1", 2},
      {"apop-fetch-state 1\nuidl ok\nuidl a b", 3},  // not a valid UIDL so far
      {"apop-fetch-state 1\nuidl ok\nuidl " + std::string(71, 'a'), 3},
      {"apop-fetch-state 1\nuidl ok\nuidl caf\xc3", 3},
      {"apop-fetch-state 1\nuidl ok\nuidlx", 3},
      {"apop-fetch-state 1\nuidl ok\n uidl", 3},
      {"uidl", 1},  // no complete header line
      {"apop-fetch-state 1\nuidl \n", 2},
      {"apop-fetch-state 1\nuidl a b\n", 2},
      {"apop-fetch-state 1\nuidl " + std::string(71, 'a') + "\n", 2},
      {"apop-fetch-state 1\nuidl a\x01\n", 2},
      {"apop-fetch-state 1\nuidl ok\nuidl caf\xc3\xa9\n", 3},
      {"apop-fetch-state 1\nuidl a\r\n", 2},
      {"apop-fetch-state 1\n\n", 2},
      {"apop-fetch-state 1\nseen x\n", 2},
      {"apop-fetch-state 1\noffer tls=2 apop=1 scram=0\n", 2},
      {"apop-fetch-state 1\noffer tls=1 apop=1\n", 2},
      {"apop-fetch-state 1\noffer apop=1 tls=1 scram=0\n", 2},
      {"apop-fetch-state 1\noffer tls=1 apop=1 scram=0 \n", 2},
      {"apop-fetch-state 1\noffer tls=1 apop=1 scram=0\noffer tls=0 apop=0 scram=0\n", 3},
      {"apop-fetch-state 1\napop-fetch-state 1\n", 2},
  };
  for (const auto& c : cases) {
    spit(file, c.text);
    auto s = AccountState::load(file);
    ASSERT_FALSE(s) << c.text;
    EXPECT_EQ(s.error().code, Errc::permanent) << c.text;
    EXPECT_NE(s.error().message.find(file.string() + ":" + std::to_string(c.line) + ":"),
              std::string::npos)
        << c.text << " -> " << s.error().message;
  }
}

ino_t inode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

TEST(AccountState, RecordSeenAppendsOneLineEach) {
  TempDir t;
  const fs::path file = t.path() / "d" / "s";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  s->mark_seen("old");
  s->set_offer(Offer{true, false, true});
  ASSERT_TRUE(s->save());
  const ino_t saved = inode_of(file);
  for (const char* u : {"z-3", "a-1", "m-2"}) ASSERT_TRUE(s->record_seen(u));
  // Appended in call order (a full save would sort them), to the same file.
  const std::string expected =
      "apop-fetch-state 1\noffer tls=1 apop=0 scram=1\nuidl old\nuidl z-3\nuidl a-1\nuidl m-2\n";
  EXPECT_EQ(slurp(file), expected);
  EXPECT_EQ(inode_of(file), saved);
  // Already seen (in the file or appended) and invalid UIDLs append nothing.
  for (const std::string& u : {std::string("old"), std::string("a-1"), std::string("a b"),
                               std::string(""), std::string(71, 'x')}) {
    ASSERT_TRUE(s->record_seen(u)) << u;
  }
  EXPECT_EQ(slurp(file), expected);
  EXPECT_FALSE(s->seen("a b"));
  EXPECT_TRUE(s->seen("m-2"));

  auto back = AccountState::load(file);
  ASSERT_TRUE(back) << back.error().message;
  for (const char* u : {"old", "z-3", "a-1", "m-2"}) EXPECT_TRUE(back->seen(u)) << u;
  EXPECT_EQ(back->last_offer(), (Offer{true, false, true}));
  // The next full save compacts (sorted, one line each) into a new file.
  ASSERT_TRUE(s->save());
  EXPECT_NE(inode_of(file), saved);
  EXPECT_EQ(slurp(file),
            "apop-fetch-state 1\noffer tls=1 apop=0 scram=1\nuidl a-1\nuidl m-2\nuidl old\nuidl "
            "z-3\n");
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(t.path() / "d")) ++entries;
  EXPECT_EQ(entries, 1u);  // no temporary file left behind
}

TEST(AccountState, RecordSeenWithoutSaveWritesTheWholeFile) {
  TempDir t;
  const fs::path file = t.path() / "d" / "s";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->record_seen("b"));  // no save() yet: a full save, directories made
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl b\n");
  ASSERT_TRUE(s->record_seen("a"));  // then appends
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl b\nuidl a\n");
  // A moved-to object keeps appending to the same file.
  AccountState moved = std::move(*s);
  ASSERT_TRUE(moved.record_seen("c"));
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl b\nuidl a\nuidl c\n");
}

// The old code rewrote the whole file per message: O(N^2) bytes for a first
// --keep fetch of N messages. Each record_seen now writes one line to the
// same file (a rewrite renames a new inode into place).
TEST(AccountState, RecordSeenIsLinearNotARewrite) {
  TempDir t;
  const fs::path file = t.path() / "s";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->save());
  const ino_t inode = inode_of(file);
  std::uintmax_t expected_size = std::string_view("apop-fetch-state 1\n").size();
  for (int i = 0; i < 500; ++i) {
    const std::string u = "uid-" + std::to_string(i);
    ASSERT_TRUE(s->record_seen(u));
    expected_size += 5 + u.size() + 1;
    if (i % 100 == 0) {
      EXPECT_EQ(inode_of(file), inode) << i;
      EXPECT_EQ(fs::file_size(file), expected_size) << i;
    }
  }
  EXPECT_EQ(inode_of(file), inode);
  EXPECT_EQ(fs::file_size(file), expected_size);
  auto back = AccountState::load(file);
  ASSERT_TRUE(back) << back.error().message;
  for (int i = 0; i < 500; ++i) EXPECT_TRUE(back->seen("uid-" + std::to_string(i)));
}

TEST(AccountState, TornLastUidlLineIsIgnoredThenRewrittenAway) {
  TempDir t;
  const fs::path file = t.path() / "s";
  const std::string head = "apop-fetch-state 1\noffer tls=1 apop=1 scram=0\nuidl ok\n";
  for (const std::string& tail :
       {std::string("u"), std::string("ui"), std::string("uidl"), std::string("uidl "),
        std::string("uidl abc"), std::string("uidl ") + std::string(70, '~')}) {
    spit(file, head + tail);
    auto s = AccountState::load(file);
    ASSERT_TRUE(s) << tail << ": " << s.error().message;
    EXPECT_TRUE(s->seen("ok")) << tail;
    EXPECT_FALSE(s->seen("abc")) << tail;  // not recorded: fetched once more
    EXPECT_FALSE(s->seen(std::string(70, '~'))) << tail;
    EXPECT_TRUE(s->has_offer());
    // The session's first save rewrites the torn tail away; appends follow it.
    ASSERT_TRUE(s->save());
    EXPECT_EQ(slurp(file), head);
    ASSERT_TRUE(s->record_seen("abc"));
    ASSERT_TRUE(s->record_seen("def"));
    EXPECT_EQ(slurp(file), head + "uidl abc\nuidl def\n");
    auto back = AccountState::load(file);
    ASSERT_TRUE(back) << back.error().message;
    for (const char* u : {"ok", "abc", "def"}) EXPECT_TRUE(back->seen(u)) << u;
  }
  // Without a save(), record_seen never appends after a torn tail: it saves.
  spit(file, head + "uidl ab");
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->record_seen("xyz"));
  EXPECT_EQ(slurp(file), head + "uidl xyz\n");
}

// A failed (here short) append drops the descriptor: the next record_seen
// saves the whole file, cleanly, and nothing recorded is lost.
TEST(AccountState, FailedAppendIsTemporaryAndTheNextRecordRewrites) {
  TempDir t;
  const fs::path file = t.path() / "s";
  auto s = AccountState::load(file);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->save());
  ASSERT_TRUE(s->record_seen("first"));
  const std::uintmax_t size = fs::file_size(file);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = static_cast<rlim_t>(size + 4);  // room for "uidl" only
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  auto r = s->record_seen("second");
  auto r2 = s->record_seen("third");  // no descriptor: a full save, beyond the limit too
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
  std::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code, Errc::temporary);
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl first\nuidl");  // torn by the short write
  {
    auto torn = AccountState::load(file);  // what a crash now would read
    ASSERT_TRUE(torn) << torn.error().message;
    EXPECT_TRUE(torn->seen("first"));
    EXPECT_FALSE(torn->seen("second"));
  }
  ASSERT_TRUE(s->record_seen("fourth"));  // a full save, not an append after the torn line
  EXPECT_EQ(slurp(file), "apop-fetch-state 1\nuidl first\nuidl fourth\nuidl second\nuidl third\n");
  ASSERT_TRUE(s->record_seen("fifth"));  // and appends again
  auto back = AccountState::load(file);
  ASSERT_TRUE(back) << back.error().message;
  for (const char* u : {"first", "second", "third", "fourth", "fifth"}) EXPECT_TRUE(back->seen(u));
}

TEST(AccountState, DirectoryInsteadOfFileIsAnError) {
  TempDir t;
  fs::create_directory(t.path() / "s");
  auto s = AccountState::load(t.path() / "s");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::permanent);
}

TEST(AccountState, SaveFailuresAreErrorsAndKeepTheOldFile) {
  TempDir t;
  AccountState empty;  // no path
  auto r = empty.save();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);

  // A parent path component that is a file.
  auto s = AccountState::load(t.path() / "file" / "sub" / "state");
  ASSERT_TRUE(s);
  spit(t.path() / "file", "x");  // appears after the load
  s->mark_seen("a");
  r = s->save();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);

  // The target is a directory: rename fails, no temporary file is left.
  const fs::path dir = t.path() / "d";
  fs::create_directories(dir / "state" / "inner");
  AccountState s2;
  {
    auto loaded = AccountState::load(dir / "other");
    ASSERT_TRUE(loaded);
    s2 = std::move(loaded).value();
  }
  ASSERT_TRUE(s2.save());  // dir/other
  const std::string before = slurp(dir / "other");
  spit(dir / "other", "apop-fetch-state 1\nuidl keep\n");
  fs::rename(dir / "other", dir / "other.bak");
  fs::create_directories(dir / "other" / "inner");
  r = s2.save();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 3u);  // state/, other/, other.bak: no temporary file
  EXPECT_EQ(before, "apop-fetch-state 1\n");
}

TEST(AccountState, DefaultPathUsesXdgStateHome) {
  ScopedEnv xdg("XDG_STATE_HOME", "/xdg/state");
  EXPECT_EQ(AccountState::default_path("alice", "Pop.Example.ORG", 995),
            fs::path("/xdg/state/apop/alice@pop.example.org_995.state"));
}

TEST(AccountState, DefaultPathFallsBackToHome) {
  ScopedEnv home("HOME", "/home/al");
  for (const char* x : {static_cast<const char*>(nullptr), "", "relative/dir"}) {
    ScopedEnv xdg("XDG_STATE_HOME", x);
    EXPECT_EQ(AccountState::default_path("alice", "h", 110),
              fs::path("/home/al/.local/state/apop/alice@h_110.state"));
  }
}

TEST(AccountState, DefaultPathEncodesUnsafeCharactersAndBoundsLength) {
  ScopedEnv xdg("XDG_STATE_HOME", "/s");
  EXPECT_EQ(AccountState::default_path("a/b@c", "[::1]", 110),
            fs::path("/s/apop/a%2Fb%40c@%5B%3A%3A1%5D_110.state"));
  EXPECT_EQ(AccountState::default_path("..", "h", 1), fs::path("/s/apop/%2E.@h_1.state"));
  const auto a = AccountState::default_path(std::string(300, 'u'), "h", 110);
  const auto b = AccountState::default_path(std::string(299, 'u') + "v", "h", 110);
  EXPECT_NE(a, b);
  EXPECT_LT(a.filename().string().size(), 255u);
  EXPECT_EQ(a.parent_path(), fs::path("/s/apop"));
  // Distinct accounts never share a file.
  EXPECT_NE(AccountState::default_path("a", "h", 110), AccountState::default_path("a", "h", 995));
  EXPECT_NE(AccountState::default_path("a_b", "h", 1), AccountState::default_path("a", "b_h", 1));
}

}  // namespace
}  // namespace apop::client
