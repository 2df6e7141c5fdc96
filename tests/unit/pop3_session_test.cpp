#include <gtest/gtest.h>

#include <openssl/hmac.h>

#include "auth/base64.hpp"
#include "auth/challenge.hpp"
#include "pop3/crlf.hpp"
#include "pop3_support.hpp"

namespace apop::test {
namespace {

using pop3::State;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

TEST(Session, GreetingCarriesTimestamp) {
  Harness h;
  EXPECT_EQ(h.session->greeting(), "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
}

TEST(Session, ApopLoginWithRfcStyleDigest) {
  Harness h;
  h.mail.add_message("alice", "Subject: a\n\nhello\n");
  std::string r = h.cmd(h.apop_line());
  EXPECT_EQ(r, "+OK Logged in, 1 message (21 octets)\r\n");
  EXPECT_EQ(h.session->state(), State::transaction);
  ASSERT_EQ(h.sink.entries.size(), 1u);
  EXPECT_EQ(h.sink.entries[0].mech, "APOP");
  EXPECT_EQ(h.sink.entries[0].result, pop3::LoginResult::ok);
}

TEST(Session, ApopAcceptsUppercaseDigest) {
  Harness h;
  std::string line = h.apop_line();
  for (std::size_t i = line.rfind(' ') + 1; i < line.size(); ++i) {
    if (line[i] >= 'a' && line[i] <= 'f') line[i] = static_cast<char>(line[i] - 32);
  }
  EXPECT_TRUE(starts_with(h.cmd(line), "+OK"));
}

TEST(Session, UnknownUserAndWrongSecretGetIdenticalReplies) {
  Harness h;
  std::string unknown = h.cmd(h.apop_line("mallory", kSecret));
  std::string wrong = h.cmd(h.apop_line("alice", "not-the-secret"));
  EXPECT_EQ(unknown, wrong);
  EXPECT_EQ(unknown, "-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_EQ(h.session->state(), State::authorization);
  h.cmd("USER mallory");
  EXPECT_EQ(h.cmd("PASS x"),
            "-ERR [AUTH] Authentication failed.\r\n"
            "-ERR Too many authentication failures, closing connection\r\n");
  EXPECT_TRUE(h.closed);
}

TEST(Session, ClosesAfterConfiguredFailures) {
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.max_auth_failures = 1;
  Harness h(cfg);
  std::string r = h.cmd(h.apop_line("alice", "bad-bad-bad-bad"));
  EXPECT_NE(r.find("closing connection"), std::string::npos);
  EXPECT_TRUE(h.closed);
}

TEST(Session, UserDoesNotRevealExistence) {
  Harness h;
  EXPECT_EQ(h.cmd("USER alice"), h.cmd("USER nosuchuser"));
}

TEST(Session, UserPassOnSecureConnection) {
  Harness h;
  EXPECT_EQ(h.cmd("USER alice"), "+OK Send your password\r\n");
  EXPECT_TRUE(starts_with(h.cmd(std::string("PASS ") + kSecret), "+OK Logged in"));
  EXPECT_EQ(h.sink.entries.at(0).mech, "USER");
}

TEST(Session, PassWithSpacesUsesRestOfLine) {
  Harness h;
  ASSERT_TRUE(h.creds.add("carol", "with some spaces inside").ok());
  h.cmd("USER carol");
  EXPECT_TRUE(starts_with(h.cmd("PASS with some spaces inside"), "+OK"));
}

TEST(Session, PlaintextRefusedOnInsecureConnection) {
  pop3::SessionConfig cfg;
  cfg.secure = false;
  Harness h(cfg);
  const char* refusal =
      "-ERR [AUTH] Plaintext authentication disallowed on non-secure connection\r\n";
  EXPECT_EQ(h.cmd("USER alice"), refusal);
  EXPECT_EQ(h.cmd(std::string("PASS ") + kSecret), refusal);
  std::string capa = h.cmd("CAPA");
  EXPECT_EQ(capa.find("USER\r\n"), std::string::npos);
  EXPECT_TRUE(starts_with(h.cmd(h.apop_line()), "+OK"));  // APOP works anywhere
}

TEST(Session, AllowPlaintextAuthOverride) {
  pop3::SessionConfig cfg;
  cfg.allow_plaintext_auth = true;
  Harness h(cfg);
  EXPECT_NE(h.cmd("CAPA").find("USER\r\n"), std::string::npos);
  h.cmd("USER alice");
  EXPECT_TRUE(starts_with(h.cmd(std::string("PASS ") + kSecret), "+OK"));
}

TEST(Session, CapaListsCapabilities) {
  Harness h;
  EXPECT_EQ(h.cmd("CAPA"),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\n"
            "SASL SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN\r\nRESP-CODES\r\n"
            "AUTH-RESP-CODE\r\nPIPELINING\r\nLOGIN-DELAY 0\r\nEXPIRE NEVER\r\n"
            "IMPLEMENTATION apop\r\n.\r\n");
  h.login();
  std::string after = h.cmd("CAPA");
  EXPECT_EQ(after.find("USER\r\n"), std::string::npos);
  EXPECT_NE(after.find("PIPELINING"), std::string::npos);
}

TEST(Session, ImplementationCanBeTurnedOff) {
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.implementation.clear();
  Harness h(cfg);
  EXPECT_EQ(h.cmd("CAPA").find("IMPLEMENTATION"), std::string::npos);
}

TEST(Session, WrongStateCommandsAreRefused) {
  Harness h;
  EXPECT_TRUE(starts_with(h.cmd("STAT"), "-ERR"));
  EXPECT_TRUE(starts_with(h.cmd("RETR 1"), "-ERR"));
  h.login();
  EXPECT_TRUE(starts_with(h.cmd(h.apop_line()), "-ERR"));
  EXPECT_TRUE(starts_with(h.cmd("USER alice"), "-ERR"));
  EXPECT_TRUE(starts_with(h.cmd("PASS x"), "-ERR"));
}

TEST(Session, StatListUidlRetrTop) {
  Harness h;
  h.mail.add_message("alice", "Subject: one\n\nline1\n.dot\nline3\n");
  h.mail.add_message("alice", "Subject: two\r\nX: y\r\n\r\nbody\r\n");
  h.login();
  const std::uint64_t s1 = pop3::crlf_size("Subject: one\n\nline1\n.dot\nline3\n");
  EXPECT_EQ(s1, 36u);
  EXPECT_EQ(h.cmd("STAT"), "+OK 2 " + std::to_string(s1 + 28) + "\r\n");
  EXPECT_EQ(h.cmd("LIST"), "+OK 2 messages (64 octets)\r\n1 36\r\n2 28\r\n.\r\n");
  EXPECT_EQ(h.cmd("LIST 2"), "+OK 2 28\r\n");
  std::string uidl = h.cmd("UIDL");
  EXPECT_TRUE(starts_with(uidl, "+OK"));
  EXPECT_NE(uidl.find("\r\n1 "), std::string::npos);
  EXPECT_EQ(h.cmd("RETR 1"),
            "+OK 36 octets\r\nSubject: one\r\n\r\nline1\r\n..dot\r\nline3\r\n.\r\n");
  EXPECT_EQ(h.cmd("TOP 1 0"), "+OK Top of message follows\r\nSubject: one\r\n\r\n.\r\n");
  EXPECT_EQ(h.cmd("TOP 1 2"),
            "+OK Top of message follows\r\nSubject: one\r\n\r\nline1\r\n..dot\r\n.\r\n");
  EXPECT_EQ(h.cmd("TOP 2 99"),
            "+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nbody\r\n.\r\n");
  // Regression (hostile-input suite): line counts beyond 32 bits mean the
  // whole message (as Dovecot); beyond 64 bits they are refused.
  const std::string whole_two =
      "+OK Top of message follows\r\nSubject: two\r\nX: y\r\n\r\nbody\r\n.\r\n";
  EXPECT_EQ(h.cmd("TOP 2 4294967296"), whole_two);
  EXPECT_EQ(h.cmd("TOP 2 18446744073709551615"), whole_two);
  EXPECT_EQ(h.cmd("TOP 2 18446744073709551616"), "-ERR Invalid number of lines\r\n");
  EXPECT_EQ(h.cmd("LIST 00000000000000000000002"), "+OK 2 28\r\n");
}

TEST(Session, RetrSizeMatchesOctetsSent) {
  Harness h;
  std::string raw = "A: b\n\nx\n\ny\r\nz";  // mixed endings, no final newline
  h.mail.add_message("alice", raw);
  h.login();
  std::string r = h.cmd("RETR 1");
  // Strip "+OK N octets\r\n" and the terminator; unstuff (no dots here).
  std::size_t first = r.find("\r\n") + 2;
  std::string body = r.substr(first, r.size() - first - 3);
  EXPECT_EQ(body, "A: b\r\n\r\nx\r\n\r\ny\r\nz\r\n");
  EXPECT_EQ(pop3::crlf_size(raw) + 2, body.size());  // +2: the added final CRLF
}

TEST(Session, DeleRsetAndQuitCommit) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  h.mail.add_message("alice", "b\n");
  h.mail.add_message("alice", "c\n");
  h.login();
  EXPECT_EQ(h.cmd("DELE 2"), "+OK Message deleted\r\n");
  EXPECT_EQ(h.cmd("DELE 2"), "-ERR Message is deleted\r\n");
  EXPECT_EQ(h.cmd("RETR 2"), "-ERR Message is deleted\r\n");
  EXPECT_EQ(h.cmd("LIST 2"), "-ERR Message is deleted\r\n");
  EXPECT_EQ(h.cmd("TOP 2 0"), "-ERR Message is deleted\r\n");
  EXPECT_EQ(h.cmd("UIDL 2"), "-ERR Message is deleted\r\n");
  EXPECT_EQ(h.cmd("STAT"), "+OK 2 6\r\n");
  EXPECT_EQ(h.cmd("LIST"), "+OK 2 messages (6 octets)\r\n1 3\r\n3 3\r\n.\r\n");
  EXPECT_EQ(h.cmd("RSET"), "+OK Maildrop has 3 messages (9 octets)\r\n");
  EXPECT_EQ(h.cmd("DELE 1"), "+OK Message deleted\r\n");
  EXPECT_EQ(h.mail.messages("alice").size(), 3u);  // nothing removed before QUIT
  EXPECT_EQ(h.cmd("QUIT"), "+OK Logging out (2 messages left)\r\n");
  EXPECT_TRUE(h.closed);
  EXPECT_EQ(h.mail.messages("alice"), (std::vector<std::string>{"b\n", "c\n"}));
  EXPECT_FALSE(h.mail.locked("alice"));
}

TEST(Session, BlockingStepsAreLoginsAndQuitInTransaction) {
  // The network layer runs these steps off its event loop.
  Harness h;
  h.mail.add_message("alice", std::string(200 * 1024, 'x') + "\n");
  EXPECT_FALSE(h.session->blocking_step_next());  // nothing buffered
  std::string out;
  // Commands without a credential check or a maildrop to open: inline.
  for (const char* line : {"CAPA\r\n", "USER alice\r\n"}) {
    h.session->feed(line);
    EXPECT_FALSE(h.session->blocking_step_next()) << line;
    while (h.session->next(out) != pop3::Next::need_input) {
    }
  }
  // Slow hashes (PASS, AUTH) and APOP (not inline_apop here): the pool.
  for (const char* line : {"PASS x\r\n", "pass x\r\n", "AUTH PLAIN\r\n", "APOP a b\r\n"}) {
    Harness other;
    other.session->feed(line);
    EXPECT_TRUE(other.session->blocking_step_next()) << line;
  }
  h.login();
  for (const char* line : {"STAT\r\n", "NOOP\r\n", "QUITE\r\n", "QUI\r\n"}) {
    h.session->feed(line);
    EXPECT_FALSE(h.session->blocking_step_next()) << line;
    while (h.session->next(out) != pop3::Next::need_input) {
    }
  }
  // RETR output pending: the next step streams the body, even with QUIT queued.
  h.session->feed("RETR 1\r\nquit\r\n");
  EXPECT_FALSE(h.session->blocking_step_next());
  EXPECT_EQ(h.session->next(out), pop3::Next::output);  // the +OK and the first chunk
  EXPECT_FALSE(h.session->blocking_step_next());
  while (out.size() < 5 || out.substr(out.size() - 5) != "\r\n.\r\n") {
    EXPECT_FALSE(h.session->blocking_step_next());
    ASSERT_EQ(h.session->next(out), pop3::Next::output);
  }
  // QUIT with nothing to remove: no UPDATE work, inline.
  EXPECT_FALSE(h.session->blocking_step_next());
  EXPECT_EQ(h.session->next(out), pop3::Next::close);  // the queued quit
}

TEST(Session, QuitRunsOffTheLoopOnlyWhenUpdateRemovesMessages) {
  for (const bool dele : {false, true}) {
    Harness h;
    h.mail.add_message("alice", "a\n");
    h.login();
    if (dele) h.cmd("DELE 1");
    h.session->feed("QUIT\r\n");
    EXPECT_EQ(h.session->blocking_step_next(), dele);
  }
  // An EXPIRE policy: delivery times and unlinks at QUIT.
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.expire_days = 7;
  Harness h(cfg);
  h.login();
  h.session->feed("QUIT\r\n");
  EXPECT_TRUE(h.session->blocking_step_next());
}

TEST(Session, InlineApopWhenTheOpenerDoesNotWait) {
  // inline_apop: APOP runs inline when the opener opens without waiting;
  // PASS and SASL steps still go to the pool.
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.inline_apop = true;
  Harness h(cfg);
  h.session->feed(h.apop_line() + "\r\n");
  EXPECT_FALSE(h.session->blocking_step_next());
  std::string out;
  while (h.session->next(out) != pop3::Next::need_input) {
  }
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");

  Harness p(cfg);
  p.session->feed("USER alice\r\nPASS x\r\n");
  EXPECT_FALSE(p.session->blocking_step_next());
  ASSERT_EQ(p.session->next(out), pop3::Next::output);  // USER
  EXPECT_TRUE(p.session->blocking_step_next());         // PASS: a slow hash

  Harness s(cfg);
  s.session->feed("AUTH PLAIN\r\n");
  EXPECT_TRUE(s.session->blocking_step_next());
  while (s.session->next(out) != pop3::Next::need_input) {
  }
  s.session->feed("AGFsaWNlAHg=\r\n");  // the response to the "+ " challenge
  EXPECT_TRUE(s.session->blocking_step_next());
}

TEST(Session, InlineApopOpensAMaildropThatMayWaitInASecondStep) {
  // inline_apop: the credentials are checked inline; only after they are
  // correct is the opener asked, and a maildrop that may wait (a big
  // Maildir, an mbox lock) is opened in a step of its own, off the loop.
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.inline_apop = true;
  Harness h(cfg);
  h.mail.add_message("alice", "a\n");
  struct Opener final : pop3::MaildropOpener {
    Opener(store::MemoryStore& m, bool w) : inner(m), waits(w) {}
    Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& u) override {
      ++opened;
      return inner.open(u);
    }
    bool opens_without_waiting(const pop3::MailboxAddress&) override {
      ++asked;
      return !waits;
    }
    store::MemoryStore& inner;
    bool waits;
    int asked = 0;
    int opened = 0;
  };
  for (const char* user : {"alice", "nobody"}) {
    Opener o(h.mail, true);
    pop3::Session s(cfg, h.auth, o, kTimestamp, &h.sink);
    s.feed(h.apop_line(user, "wrong-secret-here") + "\r\n");
    EXPECT_FALSE(s.blocking_step_next()) << user;
    std::string out;
    EXPECT_EQ(s.next(out), pop3::Next::output);
    EXPECT_EQ(out.substr(0, 11), "-ERR [AUTH]") << user;
    EXPECT_EQ(o.asked, 0) << user;  // no file system call for a failed login
    EXPECT_FALSE(s.blocking_step_next());
  }
  for (const bool waits : {true, false}) {
    Opener o(h.mail, waits);
    pop3::Session s(cfg, h.auth, o, kTimestamp, &h.sink);
    s.feed(h.apop_line() + "\r\nSTAT\r\n");
    EXPECT_FALSE(s.blocking_step_next());
    std::string out;
    EXPECT_EQ(s.next(out), pop3::Next::output);
    EXPECT_EQ(o.asked, 1);
    if (waits) {
      EXPECT_EQ(out, "");  // nothing yet: the open is the next step
      EXPECT_EQ(o.opened, 0);
      EXPECT_TRUE(s.blocking_step_next());
      EXPECT_EQ(s.next(out), pop3::Next::output);
    }
    EXPECT_EQ(o.opened, 1);
    EXPECT_EQ(out.substr(0, 13), "+OK Logged in") << waits;
    EXPECT_EQ(s.state(), pop3::State::transaction);
    EXPECT_FALSE(s.blocking_step_next());  // the pipelined STAT: inline
    out.clear();
    EXPECT_EQ(s.next(out), pop3::Next::output);
    EXPECT_EQ(out, "+OK 1 3\r\n");
  }
  // PASS runs off the loop already: its open is not split (nor asked about).
  Opener o(h.mail, true);
  pop3::Session s(cfg, h.auth, o, kTimestamp, &h.sink);
  std::string out;
  s.feed("USER alice\r\n");
  EXPECT_EQ(s.next(out), pop3::Next::output);
  s.feed(std::string("PASS ") + kSecret + "\r\n");
  EXPECT_TRUE(s.blocking_step_next());
  out.clear();
  EXPECT_EQ(s.next(out), pop3::Next::output);
  EXPECT_EQ(out.substr(0, 13), "+OK Logged in");
  EXPECT_EQ(o.asked, 0);
  EXPECT_EQ(o.opened, 1);
}

TEST(Session, DroppedConnectionRemovesNothing) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  h.login();
  h.cmd("DELE 1");
  h.session->abort();
  EXPECT_EQ(h.mail.messages("alice").size(), 1u);
  EXPECT_FALSE(h.mail.locked("alice"));
  h.session.reset();
}

TEST(Session, DestroyingSessionReleasesLock) {
  Harness h;
  h.login();
  EXPECT_TRUE(h.mail.locked("alice"));
  h.session.reset();
  EXPECT_FALSE(h.mail.locked("alice"));
}

TEST(Session, SecondSessionGetsInUse) {
  Harness h;
  h.login();
  auto second = h.make_session();
  std::string r = h.drive(*second, h.apop_line() + "\r\n");
  EXPECT_EQ(r, "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
  EXPECT_EQ(second->state(), State::authorization);
  EXPECT_EQ(h.sink.entries.back().result, pop3::LoginResult::in_use);
  h.cmd("QUIT");
  EXPECT_TRUE(starts_with(h.drive(*second, h.apop_line() + "\r\n"), "+OK"));
}

TEST(Session, QuitInAuthorization) {
  Harness h;
  EXPECT_EQ(h.cmd("QUIT"), "+OK Logging out\r\n");
  EXPECT_TRUE(h.closed);
}

TEST(Session, CommitFailureIsReported) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  h.mail.fail_commit_after(1);
  h.login();
  h.cmd("DELE 1");
  EXPECT_EQ(h.cmd("QUIT"), "-ERR [SYS/TEMP] Some deleted messages were not removed\r\n");
  EXPECT_TRUE(h.closed);
}

TEST(Session, OpenFailureIsSysTemp) {
  Harness h;
  h.mail.fail_open_after(1);
  EXPECT_EQ(h.cmd(h.apop_line()), "-ERR [SYS/TEMP] Cannot open mailbox, try again later\r\n");
  EXPECT_EQ(h.session->state(), State::authorization);
}

TEST(Session, ReadFailureMidBodyClosesConnection) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  h.mail.fail_read_after(1);
  h.login();
  std::string r = h.cmd("RETR 1");
  EXPECT_TRUE(h.closed);
  EXPECT_EQ(r.find("\r\n.\r\n"), std::string::npos);  // never a false end of message
}

TEST(Session, StrictMessageNumbers) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  h.login();
  for (const char* arg :
       {"0", "+1", "1x", "-1", " 1x", "4294967297", "18446744073709551617", "0x1", "1.0", "１"}) {
    std::string r = h.cmd(std::string("LIST ") + arg);
    EXPECT_TRUE(starts_with(r, "-ERR")) << arg << " -> " << r;
  }
  EXPECT_EQ(h.cmd("LIST 2"), "-ERR No such message\r\n");
  EXPECT_EQ(h.cmd("LIST 1"), "+OK 1 3\r\n");
}

TEST(Session, PipelinedCommandsAnsweredInOrder) {
  Harness h;
  h.mail.add_message("alice", "a\n");
  std::string out = h.send(h.apop_line() + "\r\nSTAT\r\nNOOP\r\nLIST 1\r\nQUIT\r\nSTAT\r\n");
  EXPECT_EQ(out,
            "+OK Logged in, 1 message (3 octets)\r\n+OK 1 3\r\n+OK\r\n+OK 1 3\r\n"
            "+OK Logging out (1 message left)\r\n");
  EXPECT_TRUE(h.closed);
}

TEST(Session, CommandSplitAcrossFeeds) {
  Harness h;
  EXPECT_EQ(h.send("NO"), "");
  EXPECT_EQ(h.send("OP\r"), "");
  EXPECT_TRUE(starts_with(h.send("\n"), "-ERR"));  // NOOP before login is a wrong-state error
  EXPECT_EQ(h.send("CA"), "");
  EXPECT_TRUE(starts_with(h.send("PA\r\n"), "+OK Capability"));
}

TEST(Session, OverlongLineRejectedWholeTailNeverExecuted) {
  Harness h;
  h.login();
  // 251 x + " " makes QUIT start past octet 255: it must not run.
  std::string line = std::string(251, 'x') + " QUIT\r\n";
  EXPECT_EQ(h.send(line), "-ERR Line too long\r\n");
  EXPECT_FALSE(h.closed);
  // A huge line fed in pieces, without CRLF for a long time.
  std::string big(100000, 'A');
  EXPECT_EQ(h.send(big), "");
  EXPECT_EQ(h.send(big + "QUIT\r\n"), "-ERR Line too long\r\n");
  EXPECT_FALSE(h.closed);
  EXPECT_EQ(h.cmd("NOOP"), "+OK\r\n");
}

TEST(Session, LineOfExactly255OctetsIsAccepted) {
  Harness h;
  std::string line = "NOOP" + std::string(249, ' ');  // 253 + CRLF = 255
  EXPECT_EQ(h.send(line + "\r\n"), "-ERR Not logged in\r\n");
  EXPECT_EQ(h.send(line + " \r\n"), "-ERR Line too long\r\n");
}

TEST(Session, NulAndBareCrRejected) {
  Harness h;
  EXPECT_EQ(h.send(std::string("CAPA\0x\r\n", 8)), "-ERR Invalid character in command\r\n");
  EXPECT_EQ(h.send("CA\rPA\r\n"), "-ERR Invalid character in command\r\n");
}

TEST(Session, ArgumentLongerThan40Rejected) {
  Harness h;
  EXPECT_EQ(h.cmd("USER " + std::string(41, 'a')), "-ERR Argument too long\r\n");
  EXPECT_EQ(h.cmd("USER " + std::string(40, 'a')), "+OK Send your password\r\n");
}

TEST(Session, TooManyBadCommandsClose) {
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.max_bad_commands = 3;
  Harness h(cfg);
  h.cmd("FOO");
  h.cmd("BAR");
  EXPECT_FALSE(h.closed);
  EXPECT_EQ(h.cmd("BAZ"), "-ERR Too many bad commands, closing connection\r\n");
  EXPECT_TRUE(h.closed);
}

TEST(Session, KeywordsAreCaseInsensitive) {
  Harness h;
  EXPECT_TRUE(starts_with(h.cmd("capa"), "+OK"));
  h.login();
  EXPECT_TRUE(starts_with(h.cmd("sTaT"), "+OK"));
}

TEST(Session, LargeListingIsProducedInBoundedChunks) {
  Harness h;
  for (int i = 0; i < 20000; ++i) h.mail.add_message("alice", "x\n");
  h.login();
  h.session->feed("UIDL\r\n");
  std::string out;
  std::size_t max_step = 0, steps = 0;
  for (;;) {
    std::size_t before = out.size();
    pop3::Next n = h.session->next(out);
    max_step = std::max(max_step, out.size() - before);
    ++steps;
    if (n != pop3::Next::output) break;
  }
  EXPECT_GT(steps, 3u);
  EXPECT_LE(max_step, limits::kBodyChunk + 200);
  EXPECT_TRUE(out.ends_with("\r\n.\r\n"));
  EXPECT_NE(out.find("\r\n20000 "), std::string::npos);
}

TEST(Session, LargeBodyIsProducedInBoundedChunks) {
  Harness h;
  std::string big = "S: x\n\n";
  while (big.size() < 1000000) big += "line of body text\n";
  h.mail.add_message("alice", big);
  h.login();
  h.session->feed("RETR 1\r\n");
  std::string out;
  std::size_t total = 0, max_step = 0;
  for (;;) {
    out.clear();
    pop3::Next n = h.session->next(out);
    total += out.size();
    max_step = std::max(max_step, out.size());
    if (n != pop3::Next::output) break;
  }
  EXPECT_LE(max_step, 2 * limits::kBodyChunk + 100);
  EXPECT_GT(total, pop3::crlf_size(big));
}

}  // namespace
}  // namespace apop::test

namespace apop::test {
namespace {

pop3::SessionConfig stls_config() {
  pop3::SessionConfig c;  // not secure: a plain listener on a non-loopback address
  c.stls_available = true;
  return c;
}

TEST(SessionStls, OfferedInCapaOnlyBeforeTls) {
  Harness h(stls_config());
  std::string capa = h.cmd("CAPA");
  EXPECT_NE(capa.find("STLS\r\n"), std::string::npos);
  EXPECT_EQ(capa.find("USER\r\n"), std::string::npos);  // not secure yet
  h.session->feed("STLS\r\n");
  std::string out;
  EXPECT_EQ(h.session->next(out), pop3::Next::start_tls);
  EXPECT_EQ(out, "+OK Begin TLS negotiation now\r\n");
  h.session->tls_started();
  std::string after = h.cmd("CAPA");
  EXPECT_EQ(after.find("STLS\r\n"), std::string::npos);
  EXPECT_NE(after.find("USER\r\n"), std::string::npos);  // TLS makes it secure
  EXPECT_EQ(h.cmd("STLS"), "-ERR TLS is already active\r\n");
}

TEST(SessionStls, PipelinedCommandsAfterStlsAreNeverExecuted) {
  Harness h(stls_config());
  h.session->feed("STLS\r\nQUIT\r\nCAPA\r\n");
  std::string out;
  EXPECT_EQ(h.session->next(out), pop3::Next::start_tls);
  h.session->tls_started();
  // Nothing of "QUIT\r\nCAPA\r\n" is answered or run.
  EXPECT_EQ(h.session->next(out), pop3::Next::need_input);
  EXPECT_EQ(out, "+OK Begin TLS negotiation now\r\n");
  EXPECT_EQ(h.session->state(), pop3::State::authorization);
  // The greeting's timestamp stays valid after STLS (curl, mutt rely on it).
  EXPECT_TRUE(h.cmd(h.apop_line()).starts_with("+OK Logged in"));
}

TEST(SessionStls, RefusedWhenUnavailableOrAfterLogin) {
  Harness h;  // stls_available = false
  EXPECT_EQ(h.cmd("STLS"), "-ERR TLS is not available\r\n");
  Harness t(stls_config());
  t.login();
  EXPECT_EQ(t.cmd("STLS"), "-ERR Already logged in\r\n");
}

}  // namespace
}  // namespace apop::test

namespace apop::test {
namespace {

TEST(SessionApopRequiresTls, NoTimestampWhereApopIsImpossible) {
  pop3::SessionConfig cfg = Harness::secure_config();  // loopback-secure is not TLS
  cfg.md5_challenge_requires_tls = true;
  Harness h(cfg);
  EXPECT_EQ(h.session->greeting(), "+OK POP3 server ready\r\n");
  EXPECT_EQ(h.cmd(h.apop_line()), "-ERR [AUTH] APOP requires TLS: use STLS first\r\n");
  EXPECT_EQ(h.cmd(h.apop_line("nobody")), "-ERR [AUTH] APOP requires TLS: use STLS first\r\n");
  EXPECT_TRUE(h.sink.entries.empty());  // nothing was verified
}

TEST(SessionApopRequiresTls, WorksAfterStls) {
  pop3::SessionConfig cfg;
  cfg.md5_challenge_requires_tls = true;
  cfg.stls_available = true;
  Harness h(cfg);
  EXPECT_NE(h.session->greeting().find(kTimestamp), std::string::npos);  // usable after STLS
  EXPECT_TRUE(h.cmd(h.apop_line()).starts_with("-ERR [AUTH] APOP requires TLS"));
  h.session->feed("STLS\r\n");
  std::string out;
  EXPECT_EQ(h.session->next(out), pop3::Next::start_tls);
  h.session->tls_started();
  EXPECT_TRUE(h.cmd(h.apop_line()).starts_with("+OK Logged in"));
}

// Issue 17 item 6: the policy covers CRAM-MD5, the other MD5
// challenge-response over the same plaintext-equivalent secret: not listed
// before TLS, refused before TLS (the same reply for everyone, nothing looked
// up), listed and working after STLS.
TEST(SessionApopRequiresTls, CoversCramMd5) {
  pop3::SessionConfig cfg = Harness::secure_config();  // loopback-secure: PLAIN allowed
  cfg.md5_challenge_requires_tls = true;
  cfg.stls_available = true;
  Harness h(cfg);
  auth::ChallengeGenerator challenges("test.example");
  auth::StoreAuthenticator with_cram(h.creds, &challenges);
  pop3::Session s(cfg, with_cram, h.mail, kTimestamp, &h.sink);
  auto cmd = [&](std::string_view line) { return h.drive(s, std::string(line) + "\r\n"); };
  const std::string capa = cmd("CAPA");
  EXPECT_NE(capa.find("SASL SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN\r\n"), std::string::npos) << capa;
  EXPECT_EQ(capa.find("CRAM-MD5"), std::string::npos) << capa;
  EXPECT_EQ(cmd("AUTH").find("CRAM-MD5"), std::string::npos);
  EXPECT_EQ(cmd("AUTH CRAM-MD5"), "-ERR [AUTH] CRAM-MD5 requires TLS: use STLS first\r\n");
  EXPECT_EQ(cmd("AUTH cram-md5"), "-ERR [AUTH] CRAM-MD5 requires TLS: use STLS first\r\n");
  EXPECT_TRUE(h.sink.entries.empty());  // nothing was verified
  s.feed("STLS\r\n");
  std::string out;
  EXPECT_EQ(s.next(out), pop3::Next::start_tls);
  s.tls_started();
  EXPECT_NE(cmd("CAPA").find("SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN\r\n"),
            std::string::npos);
  const std::string c = cmd("AUTH CRAM-MD5");
  ASSERT_TRUE(c.starts_with("+ ")) << c;
  const auto challenge = auth::base64_decode_strict(c.substr(2, c.size() - 4));
  ASSERT_TRUE(challenge.has_value());
  unsigned char mac[16];
  unsigned len = 0;
  HMAC(EVP_md5(), kSecret, static_cast<int>(std::string_view(kSecret).size()),
       reinterpret_cast<const unsigned char*>(challenge->data()), challenge->size(), mac, &len);
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 15];
  }
  EXPECT_TRUE(cmd(auth::base64_encode("alice " + hex)).starts_with("+OK Logged in"));
}

// Without the policy CRAM-MD5 stays usable in the clear (the default).
TEST(SessionApopRequiresTls, CramMd5OfferedWithoutThePolicy) {
  pop3::SessionConfig cfg;  // not secure, no TLS
  Harness h(cfg);
  auth::ChallengeGenerator challenges("test.example");
  auth::StoreAuthenticator with_cram(h.creds, &challenges);
  pop3::Session s(cfg, with_cram, h.mail, kTimestamp, &h.sink);
  EXPECT_NE(h.drive(s, "CAPA\r\n").find("SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5\r\n"),
            std::string::npos);
  EXPECT_TRUE(h.drive(s, "AUTH CRAM-MD5\r\n").starts_with("+ "));
}

}  // namespace
}  // namespace apop::test

namespace apop::test {
namespace {

// Regression: the failure reason handed to the EventSink once pointed into a
// destroyed temporary (a string_view bound to a ?: result).
TEST(Session, PolicyRefusalReachesTheEventSinkIntact) {
  Harness h;
  auth::Policy p;
  p.mechanisms = auth::kMechUser;
  ASSERT_TRUE(h.creds.set_policy("alice", p).ok());
  EXPECT_EQ(h.cmd(h.apop_line()), "-ERR [AUTH] Authentication failed.\r\n");
  ASSERT_EQ(h.sink.entries.size(), 1u);
  EXPECT_EQ(h.sink.entries[0].failure, apop::pop3::AuthFailure::policy_mechanism);
  EXPECT_FALSE(h.sink.entries[0].tls);
  h.cmd("USER alice");
  EXPECT_EQ(h.cmd(std::string("PASS ") + kSecret).substr(0, 3), "+OK");
  ASSERT_EQ(h.sink.entries.size(), 2u);
  EXPECT_EQ(h.sink.entries[1].credential, "password");
  EXPECT_EQ(h.sink.entries[1].failure, apop::pop3::AuthFailure::none);
}

TEST(Session, WrongCredentialsReasonIsCredentials) {
  Harness h;
  h.cmd(h.apop_line("alice", "wrong-secret-here"));
  ASSERT_EQ(h.sink.entries.size(), 1u);
  EXPECT_EQ(h.sink.entries[0].failure, apop::pop3::AuthFailure::credentials);
}

TEST(Session, NoTimestampWhenApopDisabled) {
  pop3::SessionConfig cfg = Harness::secure_config();
  cfg.apop_enabled = false;
  Harness h(cfg);
  EXPECT_EQ(h.session->greeting(), "+OK POP3 server ready\r\n");
  EXPECT_EQ(h.cmd(h.apop_line()), "-ERR [AUTH] APOP is not available on this server\r\n");
}

}  // namespace
}  // namespace apop::test

namespace apop::test {
namespace {

// The login seam: the mail location comes with the login result and goes to
// the opener with the user (no second lookup, no memo between the two).
TEST(Session, TheLoginsMailLocationReachesTheOpener) {
  Harness h;
  ASSERT_TRUE(h.creds.set_mail_location("alice", std::string("mbox:/var/mail/alice")).ok());
  h.mail.add_message("alice", "a\n");
  struct Opener final : pop3::MaildropOpener {
    explicit Opener(store::MemoryStore& m) : inner(m) {}
    Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override {
      seen.emplace_back(std::string(where.user) + "@" + std::string(where.location));
      return inner.open(where);
    }
    store::MemoryStore& inner;
    std::vector<std::string> seen;
  } o(h.mail);
  for (const char* mech : {"APOP", "USER", "AUTH"}) {
    pop3::Session s(Harness::secure_config(), h.auth, o, kTimestamp);
    std::string out;
    if (std::string_view(mech) == "APOP") {
      out = h.drive(s, h.apop_line() + "\r\n");
    } else if (std::string_view(mech) == "USER") {
      out = h.drive(s, std::string("USER alice\r\nPASS ") + kSecret + "\r\n");
    } else {
      out = h.drive(
          s, "AUTH PLAIN " + auth::base64_encode(std::string("\0alice\0", 7) + kSecret) + "\r\n");
    }
    EXPECT_NE(out.find("+OK Logged in"), std::string::npos) << mech << ": " << out;
    ASSERT_FALSE(o.seen.empty()) << mech;
    EXPECT_EQ(o.seen.back(), "alice@mbox:/var/mail/alice") << mech;
  }
  // An account without its own location: empty (the server's default).
  ASSERT_TRUE(h.creds.set_mail_location("alice", std::nullopt).ok());
  pop3::Session s(Harness::secure_config(), h.auth, o, kTimestamp);
  h.drive(s, h.apop_line() + "\r\n");
  EXPECT_EQ(o.seen.back(), "alice@");
}

// blocking_step_next() takes the next line from the input and looks it up
// once; next() runs that staged command. Bytes pipelined after STLS are
// dropped even when the driver staged the STLS line first.
TEST(Session, StagedCommandsRunOnceAndStlsDropsWhatFollows) {
  pop3::SessionConfig cfg;
  cfg.secure = false;
  cfg.stls_available = true;
  cfg.allow_plaintext_auth = true;
  Harness h(cfg);
  h.session->feed("NOOP\r\nSTLS\r\nUSER evil\r\n");
  EXPECT_FALSE(h.session->blocking_step_next());  // NOOP staged (TRANSACTION only)
  EXPECT_FALSE(h.session->blocking_step_next());  // still NOOP: staged once, not twice
  std::string out;
  EXPECT_EQ(h.session->next(out), pop3::Next::output);
  EXPECT_EQ(out, "-ERR Not logged in\r\n");
  out.clear();
  EXPECT_FALSE(h.session->blocking_step_next());  // STLS
  EXPECT_EQ(h.session->next(out), pop3::Next::start_tls);
  EXPECT_EQ(out, "+OK Begin TLS negotiation now\r\n");
  h.session->tls_started();
  EXPECT_FALSE(h.session->input_pending());
  EXPECT_FALSE(h.session->blocking_step_next());
  out.clear();
  EXPECT_EQ(h.session->next(out), pop3::Next::need_input);
  EXPECT_EQ(out, "");
  // A SASL response line is staged as such and may block.
  h.session->feed("AUTH PLAIN\r\n");
  EXPECT_TRUE(h.session->blocking_step_next());
  EXPECT_EQ(h.session->next(out), pop3::Next::output);
  EXPECT_EQ(out, "+ \r\n");
  h.session->feed("*\r\n");
  EXPECT_TRUE(h.session->blocking_step_next());
  out.clear();
  EXPECT_EQ(h.session->next(out), pop3::Next::output);
  EXPECT_EQ(out, "-ERR Authentication cancelled\r\n");
}

}  // namespace
}  // namespace apop::test
