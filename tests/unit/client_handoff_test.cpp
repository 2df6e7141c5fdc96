// The hand-off destinations of `apop fetch` (client/handoff.hpp) against a
// scripted SMTP/LMTP server, and their I/O-free parser (client/smtp_reply.hpp).
#include "client/handoff.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "client/destination.hpp"
#include "client/smtp_reply.hpp"
#include "client_fake_smtp.hpp"
#include "common/limits.hpp"
#include "temp_dir.hpp"

namespace apop::client {
namespace {

using namespace std::chrono_literals;
using test::FakeSmtp;
using TempDir = ::apop::test::TempDir;

// ---------------------------------------------------------------------------
// smtp_reply

TEST(SmtpReply, SingleAndMultiLine) {
  auto r = smtp::parse_reply("250 2.0.0 ok\r\n");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->code, 250);
  EXPECT_EQ(r->enhanced, "2.0.0");
  ASSERT_EQ(r->lines.size(), 1u);
  EXPECT_EQ(r->lines[0], "2.0.0 ok");

  std::size_t used = 0;
  auto m = smtp::parse_reply("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\nrest", &used);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->lines.size(), 3u);
  EXPECT_EQ(used, std::string("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n").size());
  auto x = smtp::parse_extensions(*m);
  EXPECT_TRUE(x.pipelining);
  EXPECT_TRUE(x.size);
  EXPECT_EQ(x.size_max, 100u);
  EXPECT_FALSE(x.eightbitmime);

  // "250" alone (no text) ends a reply; a bare LF is accepted.
  auto bare = smtp::parse_reply("250-a\n250\n");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->lines.size(), 2u);
}

TEST(SmtpReply, Malformed) {
  EXPECT_FALSE(smtp::parse_reply("25 short\r\n"));
  EXPECT_FALSE(smtp::parse_reply("abc text\r\n"));
  EXPECT_FALSE(smtp::parse_reply("650 out of range\r\n"));
  EXPECT_FALSE(smtp::parse_reply("260 second digit\r\n"));
  EXPECT_FALSE(smtp::parse_reply("250x no separator\r\n"));
  EXPECT_FALSE(smtp::parse_reply("250-one\r\n451 other code\r\n"));
  EXPECT_FALSE(smtp::parse_reply("250-incomplete\r\n"));
  const std::string big = "250 " + std::string(limits::kMaxSmtpReplyLine, 'x') + "\r\n";
  auto r = smtp::parse_reply(big);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("longer than"), std::string::npos);
  std::string many;
  for (std::size_t i = 0; i < limits::kMaxSmtpReplyLines + 1; ++i) many += "250-x\r\n";
  many += "250 end\r\n";
  EXPECT_FALSE(smtp::parse_reply(many));
}

TEST(SmtpReply, EnhancedCodes) {
  EXPECT_EQ(smtp::enhanced_code("5.1.1 no such user"), "5.1.1");
  EXPECT_EQ(smtp::enhanced_code("4.7.123"), "4.7.123");
  EXPECT_EQ(smtp::enhanced_code("3.1.1 bad class"), "");
  EXPECT_EQ(smtp::enhanced_code("5.1234.1 x"), "");
  EXPECT_EQ(smtp::enhanced_code("5.1.1x"), "");
  EXPECT_EQ(smtp::enhanced_code("5..1"), "");
  // The class must match the reply code's.
  auto r = smtp::parse_reply("550 2.0.0 odd\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->enhanced, "");
}

TEST(SmtpReply, ShownIsPrintable) {
  auto r = smtp::parse_reply("550-5.7.1 bad\x01\xff\r\n550 5.7.1 second line\r\n");
  ASSERT_TRUE(r);
  const std::string s = r->shown();
  EXPECT_EQ(s.rfind("550 5.7.1 bad", 0), 0u) << s;
  EXPECT_NE(s.find("second line"), std::string::npos);
  for (char c : s) EXPECT_TRUE(c >= 0x20 && c < 0x7f);
}

TEST(SmtpReply, DataEncoding) {
  EXPECT_EQ(smtp::data_encode("a\n.b\n..c\nd"), "a\r\n..b\r\n...c\r\nd\r\n.\r\n");
  EXPECT_EQ(smtp::data_encode("x\r\n.\r\n"), "x\r\n..\r\n.\r\n");
  EXPECT_EQ(smtp::data_encode(""), ".\r\n");
  std::uint64_t size = 0;
  EXPECT_EQ(smtp::data_encode("..\nx", &size), "...\r\nx\r\n.\r\n");
  EXPECT_EQ(size, 7u);
  // A CR that ends no line is data, not a line end (it once became an
  // extra empty line when it was the last octet; found by fuzz_smtp_reply).
  EXPECT_EQ(smtp::data_encode("a\n\r"), "a\r\n\r\r\n.\r\n");
  // BDAT's content: the same line ends, no stuffing, no terminator.
  EXPECT_EQ(smtp::chunk_encode("a\n.b\r\n..c\nd"), "a\r\n.b\r\n..c\r\nd\r\n");
  EXPECT_EQ(smtp::chunk_encode(""), "");
  EXPECT_EQ(smtp::chunk_encode("a\n\r"), "a\r\n\r\r\n");
  EXPECT_TRUE(smtp::has_8bit("caf\xc3\xa9"));
  EXPECT_FALSE(smtp::has_8bit("plain"));
}

TEST(SmtpReply, Paths) {
  EXPECT_EQ(smtp::reverse_path("alice@example.org"), "alice@example.org");
  EXPECT_EQ(smtp::reverse_path("MAILER-DAEMON"), "");
  EXPECT_EQ(smtp::reverse_path(""), "");
  EXPECT_EQ(smtp::reverse_path("a>\r\nRCPT TO:<evil@x"), "");
  EXPECT_EQ(smtp::reverse_path(std::string(300, 'a')), "");
  EXPECT_FALSE(smtp::valid_path_address("two words@x"));
}

// ---------------------------------------------------------------------------
// Specs

TEST(Handoff, Specs) {
  auto u = parse_handoff_target("lmtp", "unix:/run/dovecot/lmtp");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->unix_socket);
  EXPECT_EQ(u->describe(), "lmtp:unix:/run/dovecot/lmtp");
  auto t = parse_handoff_target("lmtp", "mail.example:24");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->host, "mail.example");
  EXPECT_EQ(t->port, 24);
  auto s = parse_handoff_target("smtp", "localhost");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->port, 25);
  auto v6 = parse_handoff_target("smtp", "[::1]:2525");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->describe(), "smtp:[::1]:2525");
  for (const char* bad : {"", "unix:", "host", "host:", "host:0", "host:65536", "host:2x", "::1:25",
                          "[::1", "[::1]x"}) {
    auto r = parse_handoff_target("lmtp", bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::invalid);
    }
  }
  EXPECT_FALSE(parse_handoff_target("lmtp", "unix:/" + std::string(200, 'x')));
}

TEST(Handoff, NeedsDeliverTo) {
  auto d = open_destination("lmtp:unix:/nonexistent/socket", DestinationOptions{});
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::invalid);
  EXPECT_NE(d.error().message.find("deliver-to"), std::string::npos) << d.error().message;
  DestinationOptions bad;
  bad.deliver_to = "x>\r\nDATA";
  auto e = open_destination("smtp:localhost:25", bad);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, Errc::invalid);
  // The plain open_destination(spec) knows the kinds too.
  auto f = open_destination("smtp:localhost");
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().code, Errc::invalid);
}

// ---------------------------------------------------------------------------
// Against the fake server

class HandoffTest : public ::testing::Test {
 protected:
  HandoffTest() : sock_((dir_.path() / "lmtp.sock").string()), server_(sock_) {}

  std::unique_ptr<Destination> open(DestinationOptions o = {}, const std::string& kind = "lmtp") {
    if (o.deliver_to.empty()) o.deliver_to = "bob@example.net";
    o.hostname = "client.example";
    if (o.smtp_command_timeout == limits::kSmtpCommandTimeout) o.smtp_command_timeout = 5s;
    if (o.smtp_final_dot_timeout == limits::kSmtpFinalDotTimeout) o.smtp_final_dot_timeout = 5s;
    auto d = open_destination(kind + ":unix:" + sock_, o);
    EXPECT_TRUE(d) << (d ? "" : d.error().message);
    return d ? std::move(*d) : nullptr;
  }
  static MessageMeta meta(const std::string& from = "alice@example.org") {
    MessageMeta m;
    m.envelope_from = from;
    m.uidl = "u1";
    return m;
  }
  std::vector<std::string> commands() {
    auto l = server_.lock();
    return server_.commands;
  }

  TempDir dir_;
  std::string sock_;
  FakeSmtp server_;
};

const char* kMsg = "Return-Path: <alice@example.org>\nSubject: hi\n\nline\n.dot line\n..two\nend\n";

TEST_F(HandoffTest, LmtpPipelinedStoresAndKeepsTheConnection) {
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d);
    EXPECT_EQ(d->describe(), "lmtp:unix:" + sock_);
    ASSERT_TRUE(d->store(kMsg, meta()));
    ASSERT_TRUE(d->store("Subject: 2\n\nsecond", meta("MAILER-DAEMON")));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 1);
  ASSERT_EQ(server_.messages.size(), 2u);
  EXPECT_EQ(server_.messages[0],
            "Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nline\r\n..dot line\r\n"
            "...two\r\nend\r\n");
  EXPECT_EQ(server_.messages[1], "Subject: 2\r\n\r\nsecond\r\n");
  const auto c = commands();
  ASSERT_EQ(c.size(), 8u);
  EXPECT_EQ(c[0], "LHLO client.example");
  EXPECT_EQ(c[1].rfind("MAIL FROM:<alice@example.org> SIZE=", 0), 0u) << c[1];
  EXPECT_EQ(c[2], "RCPT TO:<bob@example.net>");
  EXPECT_EQ(c[3], "DATA");
  EXPECT_EQ(c[4].rfind("MAIL FROM:<> SIZE=", 0), 0u) << c[4];
  EXPECT_EQ(c.back(), "QUIT");
  // MAIL, RCPT and DATA arrived in one write.
  bool pipelined = false;
  for (const auto& ch : server_.chunks) {
    pipelined = pipelined || (ch.find("MAIL FROM") != std::string::npos &&
                              ch.find("RCPT TO") != std::string::npos &&
                              ch.find("DATA\r\n") != std::string::npos);
  }
  EXPECT_TRUE(pipelined);
}

TEST_F(HandoffTest, WithoutPipeliningOneCommandAtATime) {
  server_.extensions = {"8BITMIME"};
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d->store("Subject: caf\xc3\xa9\n\nx\n", meta()));
  }
  server_.stop();
  for (const auto& ch : server_.chunks) {
    EXPECT_FALSE(ch.find("MAIL FROM") != std::string::npos &&
                 ch.find("RCPT TO") != std::string::npos)
        << ch;
  }
  const auto c = commands();
  ASSERT_GE(c.size(), 2u);
  // No SIZE offered: no SIZE=; 8-bit content and 8BITMIME: BODY=8BITMIME.
  EXPECT_EQ(c[1], "MAIL FROM:<alice@example.org> BODY=8BITMIME");
}

// RFC 3030 offered with PIPELINING: MAIL, RCPT, BDAT LAST and the message
// in one write (one round trip per message), not dot-stuffed.
TEST_F(HandoffTest, ChunkingSendsBdatLastInOneWrite) {
  server_.extensions.push_back("CHUNKING");
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d->store(kMsg, meta()));
    ASSERT_TRUE(d->store("Subject: 2\n\nsecond", meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 1);
  ASSERT_EQ(server_.messages.size(), 2u);
  const std::string first =
      "Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nline\r\n.dot line\r\n..two\r\n"
      "end\r\n";
  EXPECT_EQ(server_.messages[0], first);
  EXPECT_EQ(server_.messages[1], "Subject: 2\r\n\r\nsecond\r\n");
  const auto c = commands();
  ASSERT_EQ(c.size(), 8u);
  EXPECT_EQ(c[1], "MAIL FROM:<alice@example.org> SIZE=" + std::to_string(first.size()));
  EXPECT_EQ(c[2], "RCPT TO:<bob@example.net>");
  EXPECT_EQ(c[3], "BDAT " + std::to_string(first.size()) + " LAST");
  EXPECT_EQ(c.back(), "QUIT");
  bool one_write = false;
  for (const auto& ch : server_.chunks) {
    one_write = one_write || (ch.find("MAIL FROM") != std::string::npos &&
                              ch.find("BDAT ") != std::string::npos &&
                              ch.find("..two\r\nend\r\n") != std::string::npos);
  }
  EXPECT_TRUE(one_write);
}

TEST_F(HandoffTest, ChunkingRefusalsAreReportedAtTheirStage) {
  server_.extensions.push_back("CHUNKING");
  server_.rcpt_reply = [](int n) { return n == 0 ? "550 5.1.1 no such user" : "250 2.1.5 ok"; };
  server_.final_reply = [](int n) {
    return n == 1 ? "452 4.2.2 mailbox full" : "250 2.0.0 queued";
  };
  server_.start();
  {
    auto d = open();
    auto r = d->store("a\n", meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permanent);
    EXPECT_NE(r.error().message.find("at RCPT TO: 550 5.1.1"), std::string::npos)
        << r.error().message;
    auto t = d->store("b\n", meta());
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code, Errc::temporary);
    EXPECT_NE(t.error().message.find("at end of data: 452 4.2.2"), std::string::npos)
        << t.error().message;
    EXPECT_TRUE(d->store("c\n", meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 1);  // the refusals kept the connection
  // The fake records every complete message, refused at the end or not.
  EXPECT_EQ(server_.messages, (std::vector<std::string>{"b\r\n", "c\r\n"}));
}

TEST_F(HandoffTest, ChunkingWithoutPipeliningWaitsForEachReply) {
  server_.extensions = {"CHUNKING", "SIZE 1000"};
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d->store("x\n.y\n", meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.messages, std::vector<std::string>{"x\r\n.y\r\n"});
  for (const auto& ch : server_.chunks) {
    EXPECT_FALSE(ch.find("MAIL FROM") != std::string::npos &&
                 ch.find("RCPT TO") != std::string::npos)
        << ch;
  }
  EXPECT_EQ(commands()[3], "BDAT 7 LAST");
}

// A broken server accepting BDAT LAST after refusing RCPT: reported as the
// refusal (the message stays on the POP3 server), the connection dropped.
TEST_F(HandoffTest, ChunkAcceptedAfterRefusedRecipientIsTheRefusal) {
  server_.extensions.push_back("CHUNKING");
  server_.pretend_data_ok = true;
  server_.rcpt_reply = [](int n) { return n == 0 ? "451 4.3.0 later" : "250 2.1.5 ok"; };
  server_.start();
  {
    auto d = open();
    auto r = d->store("a\n", meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::temporary);
    EXPECT_NE(r.error().message.find("at RCPT TO"), std::string::npos) << r.error().message;
    EXPECT_TRUE(d->store("b\n", meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 2);
}

// `apop fetch --config`: a destination leaves its connection in the pool,
// the next one (another account, another recipient) takes it: one
// connection, one LHLO, QUIT only when the pool is drained.
TEST_F(HandoffTest, PoolCarriesTheConnectionToTheNextDestination) {
  server_.start();
  auto pool = std::make_shared<HandoffPool>();
  DestinationOptions o;
  o.pool = pool;
  {
    auto d = open(o);
    ASSERT_TRUE(d->store("Subject: 1\n\nx\n", meta()));
  }
  EXPECT_EQ(pool->idle(), 1u);
  o.deliver_to = "carol@example.net";
  {
    auto d = open(o);
    ASSERT_TRUE(d->store("Subject: 2\n\ny\n", meta()));
    EXPECT_EQ(pool->idle(), 0u);  // in use
  }
  EXPECT_EQ(pool->idle(), 1u);
  EXPECT_EQ(commands().back(), "DATA");  // no QUIT yet
  pool->drain();
  EXPECT_EQ(pool->idle(), 0u);
  server_.stop();
  EXPECT_EQ(server_.connections, 1);
  ASSERT_EQ(server_.messages.size(), 2u);
  const auto c = commands();
  EXPECT_EQ(std::count(c.begin(), c.end(), "LHLO client.example"), 1);
  EXPECT_NE(std::find(c.begin(), c.end(), "RCPT TO:<carol@example.net>"), c.end());
  EXPECT_EQ(c.back(), "QUIT");
}

// A pooled connection the server has closed meanwhile is not used: the next
// destination connects anew, nothing is lost.
TEST_F(HandoffTest, PooledConnectionClosedByTheServerIsReplaced) {
  server_.close_after = 0;  // the server hangs up after the first message
  server_.start();
  auto pool = std::make_shared<HandoffPool>();
  DestinationOptions o;
  o.pool = pool;
  {
    auto d = open(o);
    ASSERT_TRUE(d->store("Subject: 1\n\nx\n", meta()));
  }
  {
    auto d = open(o);
    ASSERT_TRUE(d->store("Subject: 2\n\ny\n", meta()));
  }
  pool->drain();
  server_.stop();
  EXPECT_EQ(server_.connections, 2);
  EXPECT_EQ(server_.messages.size(), 2u);
}

TEST_F(HandoffTest, SizeIsTheDataSize) {
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d->store("a\nb\n", meta()));
    // RFC 1870 §3: the doubled dot is not counted.
    ASSERT_TRUE(d->store(".x\n", meta()));
  }
  server_.stop();
  EXPECT_EQ(commands()[1], "MAIL FROM:<alice@example.org> SIZE=6");
  EXPECT_EQ(commands()[4], "MAIL FROM:<alice@example.org> SIZE=4");
}

TEST_F(HandoffTest, TransientFailureIsTemporaryAndResets) {
  server_.final_reply = [](int n) {
    return n == 0 ? std::string("452 4.2.2 mailbox full") : std::string("250 2.0.0 ok");
  };
  server_.start();
  {
    auto d = open();
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::temporary);
    EXPECT_NE(r.error().message.find("452 4.2.2 mailbox full"), std::string::npos)
        << r.error().message;
    EXPECT_TRUE(d->store(kMsg, meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 1);
  const auto c = commands();
  EXPECT_NE(std::find(c.begin(), c.end(), "RSET"), c.end());
}

TEST_F(HandoffTest, PermanentRecipientFailureIsKept) {
  server_.rcpt_reply = [](int) { return std::string("550 5.1.1 no such user"); };
  server_.start();
  {
    auto d = open();
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permanent);
    EXPECT_NE(r.error().message.find("RCPT TO"), std::string::npos) << r.error().message;
  }
  server_.stop();
  EXPECT_TRUE(server_.messages.empty());
  const auto c = commands();
  EXPECT_NE(std::find(c.begin(), c.end(), "RSET"), c.end());
}

TEST_F(HandoffTest, PermanentFailureWithoutPipelining) {
  server_.extensions = {};
  server_.mail_reply = [](int) { return std::string("553 5.1.8 bad sender"); };
  server_.start();
  {
    auto d = open();
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permanent);
  }
  server_.stop();
  const auto c = commands();
  // No RCPT after a refused MAIL.
  for (const auto& l : c) EXPECT_NE(l.rfind("RCPT", 0), 0u);
}

TEST_F(HandoffTest, MultiLineRejectionIsReported) {
  server_.final_reply = [](int) {
    return std::string("550-5.7.1 rejected by policy\r\n550 5.7.1 see https://example/policy");
  };
  server_.start();
  auto d = open();
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permanent);
  EXPECT_NE(r.error().message.find("550 5.7.1 rejected by policy / 5.7.1 see"), std::string::npos)
      << r.error().message;
}

TEST_F(HandoffTest, BounceSendsADsnToTheSender) {
  server_.final_reply = [](int n) {
    return n == 0 ? std::string("550 5.2.2 quota exceeded") : std::string("250 2.0.0 ok");
  };
  server_.start();
  {
    DestinationOptions o;
    o.on_reject = DestinationOptions::OnReject::bounce;
    auto d = open(o);
    auto r = d->store(kMsg, meta());
    EXPECT_TRUE(r) << r.error().message;
  }
  server_.stop();
  ASSERT_EQ(server_.messages.size(), 2u);
  const auto c = commands();
  EXPECT_NE(std::find_if(c.begin(), c.end(),
                         [](const std::string& l) { return l.rfind("MAIL FROM:<> ", 0) == 0; }),
            c.end());
  EXPECT_NE(std::find(c.begin(), c.end(), "RCPT TO:<alice@example.org>"), c.end());
  const std::string& dsn = server_.messages[1];
  EXPECT_NE(dsn.find("Content-Type: multipart/report; report-type=delivery-status"),
            std::string::npos);
  EXPECT_NE(dsn.find("From: Mail Delivery System <MAILER-DAEMON@client.example>"),
            std::string::npos);
  EXPECT_NE(dsn.find("Status: 5.2.2\r\n"), std::string::npos);
  EXPECT_NE(dsn.find("Diagnostic-Code: smtp; 550 5.2.2 quota exceeded"), std::string::npos);
  EXPECT_NE(dsn.find("Final-Recipient: rfc822; bob@example.net"), std::string::npos);
  EXPECT_NE(dsn.find("Content-Type: text/rfc822-headers\r\n\r\nReturn-Path: "
                     "<alice@example.org>\r\nSubject: hi\r\n"),
            std::string::npos);
  // Only the header, not the body.
  EXPECT_EQ(dsn.find(".dot line"), std::string::npos);
}

TEST_F(HandoffTest, NoBounceWithoutSender) {
  server_.final_reply = [](int) { return std::string("554 5.6.0 content rejected"); };
  server_.start();
  {
    DestinationOptions o;
    o.on_reject = DestinationOptions::OnReject::bounce;
    auto d = open(o);
    auto r = d->store(kMsg, meta("MAILER-DAEMON"));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permanent);
    EXPECT_NE(r.error().message.find("no envelope sender"), std::string::npos);
  }
  server_.stop();
  EXPECT_EQ(server_.messages.size(), 1u);
}

TEST_F(HandoffTest, FailedBounceKeepsTheMessage) {
  // Everything is refused, the bounce too.
  server_.final_reply = [](int) { return std::string("550 5.0.0 no"); };
  server_.start();
  DestinationOptions o;
  o.on_reject = DestinationOptions::OnReject::bounce;
  auto d = open(o);
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permanent);
  EXPECT_NE(r.error().message.find("bounce"), std::string::npos);
}

TEST_F(HandoffTest, TemporaryRejectionIsNotBounced) {
  server_.final_reply = [](int) { return std::string("451 4.3.0 try later"); };
  server_.start();
  {
    DestinationOptions o;
    o.on_reject = DestinationOptions::OnReject::bounce;
    auto d = open(o);
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::temporary);
  }
  server_.stop();
  EXPECT_EQ(server_.messages.size(), 1u);
}

TEST_F(HandoffTest, ServerClosingMidDataIsTemporaryThenReconnects) {
  server_.cut_in_data = 0;
  server_.start();
  {
    auto d = open();
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::temporary);
    EXPECT_TRUE(d->store(kMsg, meta()));
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 2);
  EXPECT_EQ(server_.messages.size(), 1u);
}

TEST_F(HandoffTest, ReconnectsWhenTheServerDroppedAnIdleConnection) {
  server_.close_after = 0;
  server_.start();
  {
    auto d = open();
    ASSERT_TRUE(d->store(kMsg, meta()));
    // Let the close arrive.
    std::this_thread::sleep_for(50ms);
    auto r = d->store(kMsg, meta());
    EXPECT_TRUE(r) << r.error().message;
  }
  server_.stop();
  EXPECT_EQ(server_.connections, 2);
  EXPECT_EQ(server_.messages.size(), 2u);
}

TEST_F(HandoffTest, DataAcceptedAfterRefusedRecipientDeliversNothing) {
  server_.rcpt_reply = [](int) { return std::string("550 5.1.1 unknown"); };
  server_.pretend_data_ok = true;
  server_.start();
  {
    auto d = open();
    auto r = d->store(kMsg, meta());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::permanent);
  }
  server_.stop();
  EXPECT_TRUE(server_.messages.empty());
}

TEST_F(HandoffTest, OversizedReplyLine) {
  server_.greeting = "220 " + std::string(limits::kMaxSmtpReplyLine + 10, 'x');
  server_.start();
  auto d = open();
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_NE(r.error().message.find("longer than"), std::string::npos) << r.error().message;
}

TEST_F(HandoffTest, GreetingRefused) {
  server_.greeting = "554 5.3.2 go away";
  server_.start();
  auto d = open();
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_NE(r.error().message.find("554"), std::string::npos);
}

TEST_F(HandoffTest, TimeoutIsTemporary) {
  server_.final_reply = [](int) { return std::string(); };  // never answers the final dot
  server_.start();
  DestinationOptions o;
  o.smtp_final_dot_timeout = 200ms;
  auto d = open(o);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  EXPECT_NE(r.error().message.find("timeout"), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
}

TEST_F(HandoffTest, NoServerIsTemporary) {
  DestinationOptions o;
  o.deliver_to = "bob@example.net";
  auto opened = open_destination("lmtp:unix:" + (dir_.path() / "none.sock").string(), o);
  ASSERT_TRUE(opened);
  auto& d = *opened;
  auto r = d->store(kMsg, meta());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::temporary);
  // The next message does not try again at once.
  auto again = d->store(kMsg, meta());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::temporary);
  EXPECT_NE(again.error().message.find("not retried"), std::string::npos) << again.error().message;
}

TEST(HandoffTcp, SmtpWithHeloFallback) {
  FakeSmtp server;
  server.lmtp = false;
  server.ehlo_refused = true;
  server.start();
  {
    DestinationOptions o;
    o.deliver_to = "bob@example.net";
    o.hostname = "client.example";
    auto d = open_destination("smtp:127.0.0.1:" + std::to_string(server.port), o);
    ASSERT_TRUE(d) << d.error().message;
    auto r = (*d)->store(kMsg, MessageMeta{"u", "alice@example.org", 0});
    EXPECT_TRUE(r) << r.error().message;
  }
  server.stop();
  ASSERT_GE(server.commands.size(), 3u);
  EXPECT_EQ(server.commands[0], "EHLO client.example");
  EXPECT_EQ(server.commands[1], "HELO client.example");
  EXPECT_EQ(server.commands[2], "MAIL FROM:<alice@example.org>");
  EXPECT_EQ(server.messages.size(), 1u);
}

TEST(Bounce, Structure) {
  smtp::Reply r;
  r.code = 550;
  r.lines = {"no such user"};
  BounceInfo info{
      "alice@example.org", "bob@example.net", "host.example", "lmtp:unix:/s", 0, "1.2.3"};
  std::string headers = "Subject: x\n";
  for (int i = 0; i < 10000; ++i) headers += "X-Filler: " + std::to_string(i) + "\n";
  const std::string dsn = build_bounce(headers + "\nbody\n", r, info);
  EXPECT_NE(dsn.find("Status: 5.0.0\n"), std::string::npos);
  EXPECT_NE(dsn.find("Date: Thu, 01 Jan 1970 00:00:00 +0000\n"), std::string::npos);
  EXPECT_NE(dsn.find("boundary=\"apop-bounce-1.2.3\""), std::string::npos);
  EXPECT_NE(dsn.find("\n--apop-bounce-1.2.3--\n"), std::string::npos);
  EXPECT_LT(dsn.size(), limits::kMaxBounceHeaders + 4096);
  EXPECT_EQ(dsn.find("body"), std::string::npos);
}

}  // namespace
}  // namespace apop::client
