// `apop fetch --config`: the configuration parser (client/fetch_config.hpp),
// the daemon's scheduler (client/poll_scheduler.hpp) and the password
// sources (client/password_source.hpp).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "client/fetch_config.hpp"
#include "client/password_source.hpp"
#include "client/poll_scheduler.hpp"
#include "client/publish_journal.hpp"

namespace apop::client {
namespace {

using namespace std::chrono_literals;

constexpr const char* kFull = R"(max_parallel = 8
state_dir = "/var/lib/apop-fetch"

[defaults]
poll_interval = "10m"
keep = true

[[account]]
name = "work"
url = "pop3s://alice@pop.example.com"
auth = "scram-sha-256"
tls = "implicit"
ca_file = "/etc/ssl/ca.pem"
password_file = "~/.config/apop/work.pass"
to = "maildir:~/Mail/work"
deliver_to = "alice@example.com"
on_reject = "bounce"
keep = false
max_message_size = "20M"
fetch_limit = 100
poll_interval = "90s"

[[account]]
name = "home.mail_2"
url = "pop3://bob@mail.example.net:1110"
password_command = ["mutt_oauth2.py", "~/home.tokens"]
to = "lmtp:unix:/run/dovecot/lmtp"
deliver_to = "bob"
)";

FetchConfig parse_ok(std::string_view text) {
  auto c = parse_fetch_config(text, "f.toml");
  EXPECT_TRUE(c) << c.error().message;
  return c ? std::move(*c) : FetchConfig{};
}

std::string parse_err(std::string_view text) {
  auto c = parse_fetch_config(text, "f.toml");
  EXPECT_FALSE(c) << text;
  return c ? std::string() : c.error().message;
}

constexpr const char* kMinimal = R"([[account]]
name = "a"
url = "pop3://u@h"
password_file = "p"
to = "maildir:/m"
)";

TEST(FetchConfig, EveryKey) {
  FetchConfig c = parse_ok(kFull);
  EXPECT_EQ(c.max_parallel, 8u);
  EXPECT_EQ(c.state_dir, "/var/lib/apop-fetch");
  ASSERT_EQ(c.accounts.size(), 2u);
  const AccountConfig& w = c.accounts[0];
  EXPECT_EQ(w.name, "work");
  EXPECT_EQ(w.url, "pop3s://alice@pop.example.com");
  EXPECT_EQ(w.auth, "scram-sha-256");
  EXPECT_EQ(w.tls, "implicit");
  EXPECT_EQ(w.ca_file, "/etc/ssl/ca.pem");
  EXPECT_EQ(w.password_file, "~/.config/apop/work.pass");
  EXPECT_TRUE(w.password_command.empty());
  EXPECT_EQ(w.to, "maildir:~/Mail/work");
  EXPECT_EQ(w.deliver_to, "alice@example.com");
  EXPECT_EQ(w.on_reject, DestinationOptions::OnReject::bounce);
  EXPECT_FALSE(w.keep);
  EXPECT_EQ(w.max_message_size, 20u * 1024 * 1024);
  EXPECT_EQ(w.fetch_limit, 100u);
  EXPECT_EQ(w.poll_interval, 90s);
  EXPECT_EQ(w.at, "f.toml:8");
  EXPECT_EQ(w.url_at, "f.toml:10:7: key url: ");
  const AccountConfig& h = c.accounts[1];
  EXPECT_EQ(h.name, "home.mail_2");
  EXPECT_EQ(h.password_command, (std::vector<std::string>{"mutt_oauth2.py", "~/home.tokens"}));
  EXPECT_TRUE(h.password_file.empty());
  EXPECT_TRUE(h.keep);               // from [defaults]
  EXPECT_EQ(h.poll_interval, 600s);  // from [defaults]
  EXPECT_EQ(h.auth, "auto");         // built-in default
  EXPECT_EQ(h.on_reject, DestinationOptions::OnReject::keep);
  EXPECT_EQ(h.max_message_size, 0u);
  EXPECT_EQ(h.fetch_limit, 0u);
}

TEST(FetchConfig, Defaults) {
  FetchConfig c = parse_ok(kMinimal);
  EXPECT_EQ(c.max_parallel, limits::kFetchMaxParallelDefault);
  EXPECT_TRUE(c.state_dir.empty());
  ASSERT_EQ(c.accounts.size(), 1u);
  EXPECT_EQ(c.accounts[0].poll_interval, limits::kFetchPollInterval);
  EXPECT_FALSE(c.accounts[0].keep);
  EXPECT_TRUE(c.accounts[0].tls.empty());
}

TEST(FetchConfig, AccountPasswordSourceReplacesTheDefaults) {
  FetchConfig c = parse_ok(R"([defaults]
password_command = ["helper"]
[[account]]
name = "a"
url = "pop3://u@h"
password_file = "p"
to = "maildir:/m"
[[account]]
name = "b"
url = "pop3://u@h"
to = "maildir:/m"
)");
  ASSERT_EQ(c.accounts.size(), 2u);
  EXPECT_EQ(c.accounts[0].password_file, "p");
  EXPECT_TRUE(c.accounts[0].password_command.empty());
  EXPECT_EQ(c.accounts[1].password_command, (std::vector<std::string>{"helper"}));
}

struct BadCase {
  const char* key_line;  // replaces the line "to = ..." of kMinimal's account
  const char* expect;    // in the message, after "f.toml:5:"
};

TEST(FetchConfig, BadValuesNameFileLineAndKey) {
  const BadCase cases[] = {
      {"to = \"imap:x\"", "key to: expected maildir:"},
      {"to = 5", "key to: expected a string"},
      {"auth = \"kerberos\"\nto = \"maildir:/m\"", "key auth: unknown mechanism"},
      {"tls = \"maybe\"\nto = \"maildir:/m\"", "key tls: must be auto, implicit"},
      {"keep = \"yes\"\nto = \"maildir:/m\"", "key keep: expected true or false"},
      {"on_reject = \"drop\"\nto = \"maildir:/m\"", "key on_reject: must be keep or bounce"},
      {"max_message_size = \"20X\"\nto = \"maildir:/m\"", "key max_message_size: expected"},
      {"max_message_size = 0\nto = \"maildir:/m\"", "key max_message_size: expected"},
      {"max_message_size = \"1G\"\nto = \"maildir:/m\"", "key max_message_size: expected"},
      {"fetch_limit = -1\nto = \"maildir:/m\"", "key fetch_limit: expected an integer"},
      {"fetch_limit = \"5\"\nto = \"maildir:/m\"", "key fetch_limit: expected an integer"},
      {"poll_interval = \"5 minutes\"\nto = \"maildir:/m\"", "key poll_interval: expected"},
      {"poll_interval = 0\nto = \"maildir:/m\"", "key poll_interval: expected"},
      {"poll_interval = \"8d\"\nto = \"maildir:/m\"", "key poll_interval: expected"},
      {"password_command = []\nto = \"maildir:/m\"", "key password_command: expected a non-empty"},
      {"password_command = \"helper --x\"\nto = \"maildir:/m\"", "key password_command: expected"},
      {"colour = \"blue\"\nto = \"maildir:/m\"", "key colour: unknown key"},
      {"ca_file = true\nto = \"maildir:/m\"", "key ca_file: expected a string"},
      {"deliver_to = 1\nto = \"maildir:/m\"", "key deliver_to: expected a string"},
  };
  for (const auto& bc : cases) {
    std::string text = kMinimal;
    text.replace(text.find("to = \"maildir:/m\""), std::string("to = \"maildir:/m\"").size(),
                 bc.key_line);
    const std::string err = parse_err(text);
    EXPECT_EQ(err.rfind("f.toml:5:", 0), 0u) << bc.key_line << " -> " << err;
    EXPECT_NE(err.find(bc.expect), std::string::npos) << bc.key_line << " -> " << err;
  }
}

TEST(FetchConfig, StructuralProblems) {
  EXPECT_NE(parse_err("").find("no [[account]]"), std::string::npos);
  EXPECT_NE(
      parse_err("max_parallel = 0\n" + std::string(kMinimal)).find("f.toml:1:16: key max_parallel"),
      std::string::npos);
  EXPECT_NE(parse_err("max_parallel = 65\n" + std::string(kMinimal)).find("key max_parallel"),
            std::string::npos);
  EXPECT_NE(parse_err("state_dir = \"\"\n" + std::string(kMinimal)).find("key state_dir"),
            std::string::npos);
  EXPECT_NE(parse_err("daemon = 300\n" + std::string(kMinimal))
                .find("f.toml:1:1: key daemon: unknown key"),
            std::string::npos);
  EXPECT_NE(parse_err("[account]\nname = \"a\"\n").find("key account: expected [[account]]"),
            std::string::npos);
  EXPECT_NE(parse_err("[defaults]\nname = \"x\"\n" + std::string(kMinimal))
                .find("f.toml:2:8: key name: an account's name cannot be a default"),
            std::string::npos);
  // TOML syntax error: file, line and column.
  EXPECT_EQ(parse_err("[[account]]\nname = \"a\nurl = 1\n").rfind("f.toml:2:", 0), 0u);
  // Missing required keys, reported at the [[account]] line; all of them.
  const std::string missing = parse_err("x = 1\n[[account]]\nkeep = true\n");
  EXPECT_NE(missing.find("f.toml:1:1: key x: unknown key"), std::string::npos) << missing;
  EXPECT_NE(missing.find("f.toml:2:1: key name: missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("f.toml:2:1: key url: missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("f.toml:2:1: key to: missing"), std::string::npos) << missing;
  EXPECT_NE(missing.find("f.toml:2:1: key password_file: missing"), std::string::npos) << missing;
}

TEST(FetchConfig, NamesUrlsAndPasswordSources) {
  std::string two = std::string(kMinimal) + kMinimal;
  EXPECT_NE(parse_err(two).find("f.toml:6:1: key name: \"a\" is the name of an earlier account"),
            std::string::npos);
  for (const char* bad : {"", ".hidden", "a/b", "a b", "é"}) {
    std::string text = kMinimal;
    text.replace(text.find("\"a\""), 3, std::string("\"") + bad + "\"");
    EXPECT_FALSE(parse_fetch_config(text, "f.toml")) << bad;
  }
  EXPECT_TRUE(valid_account_name(std::string(limits::kMaxFetchAccountName, 'x')));
  EXPECT_FALSE(valid_account_name(std::string(limits::kMaxFetchAccountName + 1, 'x')));
  for (const char* bad : {"http://u@h", "pop3://host", "u@h"}) {
    std::string text = kMinimal;
    text.replace(text.find("pop3://u@h"), 10, bad);
    EXPECT_NE(parse_err(text).find("f.toml:3:7: key url: expected pop3://"), std::string::npos)
        << bad;
  }
  std::string both = kMinimal;
  both += "password_command = [\"x\"]\n";
  EXPECT_NE(parse_err(both).find("not both"), std::string::npos);
  std::string lmtp = kMinimal;
  lmtp.replace(lmtp.find("maildir:/m"), 10, "lmtp:127.0.0.1:24");
  EXPECT_NE(parse_err(lmtp).find("key deliver_to: missing"), std::string::npos);
}

TEST(FetchConfig, ProblemsAreBounded) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "k" + std::to_string(i) + " = 1\n";
  const std::string err = parse_err(text);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 19);
  EXPECT_FALSE(parse_fetch_config(std::string(limits::kMaxFetchConfigBytes + 1, '#'), "f"));
}

TEST(FetchConfig, IntervalsAndSizes) {
  EXPECT_EQ(parse_interval("90"), 90s);
  EXPECT_EQ(parse_interval("90s"), 90s);
  EXPECT_EQ(parse_interval("5m"), 300s);
  EXPECT_EQ(parse_interval("2h"), 7200s);
  EXPECT_EQ(parse_interval("1d"), 86400s);
  for (const char* bad : {"", "m", "0", "0s", "-5m", "5 m", "5M", "1w", "1.5h", "99999999999d"})
    EXPECT_FALSE(parse_interval(bad)) << bad;
  EXPECT_EQ(parse_size("1000"), 1000u);
  EXPECT_EQ(parse_size("512K"), 512u * 1024);
  EXPECT_EQ(parse_size("20m"), 20u * 1024 * 1024);
  EXPECT_EQ(parse_size("1G"), 1024u * 1024 * 1024);
  for (const char* bad : {"", "K", "1.5M", "-1", "20MB", "99999999999999999999G"})
    EXPECT_FALSE(parse_size(bad)) << bad;
}

// ---- the scheduler ---------------------------------------------------------

using TP = PollScheduler::TimePoint;
const TP t0{};

TEST(PollScheduler, BackoffDoublesAndIsCapped) {
  using std::chrono::milliseconds;
  EXPECT_EQ(PollScheduler::delay(60s, 0, 0.5), milliseconds(60'000));
  EXPECT_EQ(PollScheduler::delay(60s, 1, 0.5), milliseconds(120'000));
  EXPECT_EQ(PollScheduler::delay(60s, 3, 0.5), milliseconds(480'000));
  EXPECT_EQ(PollScheduler::delay(60s, 10, 0.5), limits::kFetchBackoffCap);
  EXPECT_EQ(PollScheduler::delay(60s, 4'000'000'000u, 0.5), limits::kFetchBackoffCap);
  // An interval above the cap is never shortened by failures.
  EXPECT_EQ(PollScheduler::delay(86400s, 5, 0.5), milliseconds(86'400'000));
}

TEST(PollScheduler, JitterStaysWithinBounds) {
  const double j = limits::kFetchPollJitter;
  const auto lo = PollScheduler::delay(100s, 0, 0.0);
  const auto hi = PollScheduler::delay(100s, 0, 0.999999);
  EXPECT_EQ(lo.count(), static_cast<long>(100'000 * (1 - j)));
  EXPECT_LE(hi.count(), static_cast<long>(100'000 * (1 + j)));
  EXPECT_GT(hi.count(), static_cast<long>(100'000 * (1 + j)) - 2);
  for (double r = 0; r < 1; r += 0.01) {
    const auto d = PollScheduler::delay(300s, 2, r).count();
    EXPECT_GE(d, static_cast<long>(1'200'000 * (1 - j)));
    EXPECT_LE(d, static_cast<long>(1'200'000 * (1 + j)));
  }
}

TEST(PollScheduler, FailingAccountBacksOffWithoutDelayingOthers) {
  PollScheduler s(4, [] { return 0.5; });
  s.set_accounts({{"bad", 60s}, {"good", 60s}}, t0);
  auto first = s.start_due(t0);
  EXPECT_EQ(std::set<std::string>(first.begin(), first.end()),
            (std::set<std::string>{"bad", "good"}));
  EXPECT_EQ(s.running(), 2u);
  EXPECT_FALSE(s.next_due());  // both running: nothing waits
  TP now = t0 + 5s;
  s.finished("bad", false, now);
  s.finished("good", true, now);
  EXPECT_EQ(s.failures("bad"), 1u);
  EXPECT_EQ(s.due("bad"), now + 120s);
  EXPECT_EQ(s.due("good"), now + 60s);
  EXPECT_EQ(s.next_due(), now + 60s);
  EXPECT_TRUE(s.start_due(now + 59s).empty());
  EXPECT_EQ(s.start_due(now + 60s), (std::vector<std::string>{"good"}));
  s.finished("good", true, now + 61s);
  EXPECT_EQ(s.start_due(now + 120s), (std::vector<std::string>{"bad"}));
  s.finished("bad", false, now + 120s);
  EXPECT_EQ(s.failures("bad"), 2u);
  EXPECT_EQ(s.due("bad"), now + 120s + 240s);
  // Recovery resets the count.
  s.start_due(now + 360s);
  s.finished("bad", true, now + 360s);
  EXPECT_EQ(s.failures("bad"), 0u);
  EXPECT_EQ(s.due("bad"), now + 420s);
}

TEST(PollScheduler, MaxParallelBoundsTheRunningPolls) {
  PollScheduler s(2, [] { return 0.5; });
  s.set_accounts({{"a", 60s}, {"b", 60s}, {"c", 60s}, {"d", 60s}, {"e", 60s}}, t0);
  EXPECT_EQ(s.start_due(t0).size(), 2u);
  EXPECT_TRUE(s.start_due(t0).empty());
  EXPECT_FALSE(s.next_due());
  std::set<std::string> done;
  std::size_t polled = 2;
  TP now = t0;
  // Finish one at a time: each frees exactly one slot.
  while (polled < 5) {
    now += 1s;
    for (const auto& n : {"a", "b", "c", "d", "e"}) {
      if (!s.due(n) && done.insert(n).second) {
        s.finished(n, true, now);
        break;
      }
    }
    auto next = s.start_due(now);
    ASSERT_EQ(next.size(), 1u);
    ++polled;
    EXPECT_LE(s.running(), 2u);
  }
  s.set_max_parallel(10);
  EXPECT_TRUE(s.next_due());
}

TEST(PollScheduler, ReloadKeepsScheduleAddsAndRemoves) {
  PollScheduler s(4, [] { return 0.5; });
  s.set_accounts({{"a", 60s}, {"b", 60s}}, t0);
  s.start_due(t0);
  s.finished("a", false, t0);
  // b is still running when the configuration is reloaded without it.
  s.set_accounts({{"a", 30s}, {"c", 60s}}, t0 + 10s);
  EXPECT_EQ(s.failures("a"), 1u);
  EXPECT_EQ(s.due("a"), t0 + 120s);  // kept; the new interval applies from its next poll
  EXPECT_EQ(s.due("c"), t0 + 10s);   // new: due at once
  EXPECT_EQ(s.running(), 1u);        // b keeps its slot until it finishes
  s.finished("b", true, t0 + 11s);
  EXPECT_EQ(s.running(), 0u);
  EXPECT_FALSE(s.due("b"));
  EXPECT_EQ(s.start_due(t0 + 11s), (std::vector<std::string>{"c"}));
  s.finished("c", true, t0 + 12s);
  s.start_due(t0 + 120s);
  s.finished("a", true, t0 + 120s);
  EXPECT_EQ(s.due("a"), t0 + 150s);
}

TEST(PollScheduler, JitterComesFromTheRandomSource) {
  double r = 0.0;
  PollScheduler s(1, [&r] { return r; });
  s.set_accounts({{"a", 100s}}, t0);
  s.start_due(t0);
  s.finished("a", true, t0);
  EXPECT_EQ(s.due("a"), t0 + std::chrono::milliseconds(90'000));
  r = 0.75;
  s.start_due(t0 + 90s);
  s.finished("a", true, t0 + 90s);
  EXPECT_EQ(s.due("a"), t0 + 90s + std::chrono::milliseconds(105'000));
}

// ---- password sources ------------------------------------------------------

class PasswordSource : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("apop-pwsrc-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& text, mode_t mode) {
    const auto p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    ::chmod(p.c_str(), mode);
    return p.string();
  }
  std::filesystem::path dir_;
};

TEST_F(PasswordSource, FileFirstLine) {
  auto pw = read_password_file(file("p", "s3cret\r\nsecond\n", 0600));
  ASSERT_TRUE(pw) << pw.error().message;
  EXPECT_EQ(*pw, "s3cret");
  auto nonl = read_password_file(file("q", "token", 0400));
  ASSERT_TRUE(nonl) << nonl.error().message;
  EXPECT_EQ(*nonl, "token");
}

TEST_F(PasswordSource, FileRefusedWhenGroupOrOtherMayRead) {
  for (mode_t m : {0640, 0604, 0660, 0610}) {
    auto pw = read_password_file(file("p", "s3cret\n", m));
    ASSERT_FALSE(pw) << std::oct << m;
    EXPECT_NE(pw.error().message.find("too open"), std::string::npos) << pw.error().message;
    EXPECT_NE(pw.error().message.find("chmod 600"), std::string::npos);
    EXPECT_EQ(pw.error().message.find("s3cret"), std::string::npos);
  }
  EXPECT_FALSE(read_password_file(file("e", "\nx\n", 0600)));
  EXPECT_FALSE(read_password_file((dir_ / "missing").string()));
  EXPECT_FALSE(read_password_file(dir_.string()));
}

TEST_F(PasswordSource, FileTilde) {
  const char* old = std::getenv("HOME");
  const std::string saved = old ? old : "";
  ::setenv("HOME", dir_.c_str(), 1);
  file("pw", "t\n", 0600);
  auto pw = read_password_file("~/pw");
  if (old) ::setenv("HOME", saved.c_str(), 1);
  ASSERT_TRUE(pw) << pw.error().message;
  EXPECT_EQ(*pw, "t");
}

TEST_F(PasswordSource, CommandFirstLineWithoutShell) {
  auto pw = run_password_command({"printf", "tok$en; rm -rf /\\nsecond\\n"});
  ASSERT_TRUE(pw) << pw.error().message;
  EXPECT_EQ(*pw, "tok$en; rm -rf /");
  auto crlf = run_password_command({"printf", "abc\\r\\n"});
  ASSERT_TRUE(crlf);
  EXPECT_EQ(*crlf, "abc");
}

TEST_F(PasswordSource, CommandFailures) {
  auto st = run_password_command({"sh", "-c", "echo secret; exit 3"});
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("exit status 3"), std::string::npos) << st.error().message;
  EXPECT_EQ(st.error().message.find("secret"), std::string::npos);
  auto empty = run_password_command({"sh", "-c", "echo; echo x"});
  ASSERT_FALSE(empty);
  EXPECT_NE(empty.error().message.find("empty"), std::string::npos);
  auto missing = run_password_command({"/nonexistent/helper"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("cannot run"), std::string::npos)
      << missing.error().message;
  auto sig = run_password_command({"sh", "-c", "kill -9 $$"});
  ASSERT_FALSE(sig);
  EXPECT_NE(sig.error().message.find("signal 9"), std::string::npos);
  EXPECT_FALSE(run_password_command({}));
}

TEST_F(PasswordSource, CommandOutputAndTimeAreBounded) {
  CommandLimits small;
  small.max_output = 1000;
  auto big = run_password_command({"sh", "-c", "yes"}, small);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message.find("more than 1000"), std::string::npos);
  CommandLimits quick;
  quick.timeout = std::chrono::milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  // The grandchild keeps stdout open: the process group is killed.
  auto slow = run_password_command({"sh", "-c", "sleep 30 & sleep 30"}, quick);
  ASSERT_FALSE(slow);
  EXPECT_NE(slow.error().message.find("killed"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// ---- the publish journal (exactly once into a Maildir across a kill) -------

TEST_F(PasswordSource, PublishJournalRecoversAMessageThatReachedTheMaildir) {
  const auto md = dir_ / "Maildir";
  for (const char* sub : {"new", "cur", "tmp"}) std::filesystem::create_directories(md / sub);
  const PublishJournal journal(dir_ / "a.publish");
  auto st = AccountState::load(dir_ / "a.state");
  ASSERT_TRUE(st);
  MessageMeta meta;
  meta.uidl = "uid-1";
  // Killed after the link into new/, before the state was saved.
  ASSERT_TRUE(journal.record("123.M1P2.host", meta));
  std::ofstream(md / "new" / "123.M1P2.host,S=5,W=6") << "x";
  ASSERT_TRUE(journal.recover(*st, md));
  EXPECT_TRUE(st->seen("uid-1"));
  EXPECT_TRUE(AccountState::load(dir_ / "a.state")->seen("uid-1"));  // saved
  EXPECT_FALSE(std::filesystem::exists(dir_ / "a.publish"));
  // Moved to cur/ by a mail reader: still found.
  meta.uidl = "uid-2";
  ASSERT_TRUE(journal.record("124.M1P2.host", meta));
  std::ofstream(md / "cur" / "124.M1P2.host,S=5,W=6:2,S") << "x";
  ASSERT_TRUE(journal.recover(*st, md));
  EXPECT_TRUE(st->seen("uid-2"));
  // Killed before the link: not marked (it is fetched again, nothing lost).
  meta.uidl = "uid-3";
  ASSERT_TRUE(journal.record("125.M1P2.host", meta));
  std::ofstream(md / "new" / "1250.M1P2.host,S=5,W=6") << "x";  // a prefix is not a match
  ASSERT_TRUE(journal.recover(*st, md));
  EXPECT_FALSE(st->seen("uid-3"));
  // Garbage and a missing journal are nothing to do.
  std::ofstream(dir_ / "a.publish") << "no newline";
  EXPECT_TRUE(journal.recover(*st, md));
  EXPECT_TRUE(journal.recover(*st, md));
}

}  // namespace
}  // namespace apop::client
