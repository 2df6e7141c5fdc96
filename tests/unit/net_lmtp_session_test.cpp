#include "net/lmtp_session.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace apop::net {
namespace {

// The in-memory twin of the store: accounts, what each received, and
// fault injection (a lookup or a delivery failing for one user).
class MemoryDelivery final : public LmtpDelivery {
 public:
  std::set<std::string> users{"alice", "bob"};
  std::set<std::string> lookup_fails;                      // recipient() -> temporary
  std::set<std::string> deliver_fails;                     // deliver() -> Errc::temporary
  std::set<std::string> over_quota;                        // recipient() -> over_quota
  std::set<std::string> full_at_data;                      // deliver() -> Errc::over_quota
  std::map<std::string, std::vector<std::string>> traces;  // deliver()'s trace, per user
  std::map<std::string, std::vector<std::string>> stored;
  std::string last_sender;

  std::map<std::string, std::uint64_t> room;  // recipient() -> over_quota above this size
  LmtpRecipient recipient(std::string_view user, std::uint64_t size) override {
    const std::string u(user);
    if (auto it = room.find(u); it != room.end() && size > it->second) {
      return LmtpRecipient::over_quota;
    }
    if (lookup_fails.count(u) != 0) return LmtpRecipient::temporary;
    if (users.count(u) == 0) return LmtpRecipient::unknown;
    if (over_quota.count(u) != 0) return LmtpRecipient::over_quota;
    return LmtpRecipient::ok;
  }
  Result<void> deliver(std::string_view user, std::string_view sender, std::string_view trace,
                       std::string_view message) override {
    if (deliver_fails.count(std::string(user)) != 0) {
      return make_error(Errc::temporary, "disk full");
    }
    if (full_at_data.count(std::string(user)) != 0) {
      return make_error(Errc::over_quota, "mailbox full");
    }
    last_sender = std::string(sender);
    traces[std::string(user)].emplace_back(trace);
    stored[std::string(user)].emplace_back(message);
    return {};
  }
};

class LmtpSessionTest : public ::testing::Test {
 protected:
  MemoryDelivery store;
  LmtpConfig config;
  std::unique_ptr<LmtpSession> session;

  void SetUp() override {
    config.hostname = "mx.example";
    config.max_message_size = 1000;
    config.max_recipients = 3;
  }
  LmtpSession& s() {
    if (!session) session = std::make_unique<LmtpSession>(config, store);
    return *session;
  }
  std::string feed(std::string_view in) { return s().feed(in); }
  void lhlo() { ASSERT_NE(feed("LHLO client\r\n").find("250 SIZE "), std::string::npos); }
};

TEST_F(LmtpSessionTest, GreetingAndLhloExtensions) {
  EXPECT_EQ(s().greeting(), "220 mx.example LMTP ready\r\n");
  EXPECT_EQ(feed("LHLO client.example\r\n"),
            "250-mx.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
            "250-CHUNKING\r\n250 SIZE 1000\r\n");
  EXPECT_EQ(feed("LHLO\r\n"), "501 5.5.4 LHLO needs a host name\r\n");
}

TEST_F(LmtpSessionTest, HeloAndEhloAreRefusedWith500) {
  EXPECT_EQ(feed("HELO x\r\n"), "500 5.5.1 This is LMTP: use LHLO (RFC 2033)\r\n");
  EXPECT_EQ(feed("EHLO x\r\n"), "500 5.5.1 This is LMTP: use LHLO (RFC 2033)\r\n");
}

TEST_F(LmtpSessionTest, LhloRequiredBeforeMail) {
  EXPECT_EQ(feed("MAIL FROM:<a@b>\r\n"), "503 5.5.1 LHLO first\r\n");
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"), "503 5.5.1 MAIL first\r\n");
  EXPECT_EQ(feed("DATA\r\n"), "503 5.5.1 MAIL first\r\n");
}

TEST_F(LmtpSessionTest, OneReplyPerRecipientAfterData) {
  lhlo();
  EXPECT_EQ(feed("MAIL FROM:<s@example.org>\r\n"), "250 2.1.0 Sender OK\r\n");
  EXPECT_EQ(feed("RCPT TO:<alice@example.com>\r\n"), "250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(feed("RCPT TO:<nobody@example.com>\r\n"), "550 5.1.1 No such user\r\n");
  EXPECT_EQ(feed("RCPT TO:<bob@example.com>\r\n"), "250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(feed("DATA\r\n"), "354 Send the message, end with <CRLF>.<CRLF>\r\n");
  EXPECT_EQ(feed("Subject: x\r\n\r\nhi\r\n.\r\n"),
            "250 2.0.0 Delivered to alice\r\n250 2.0.0 Delivered to bob\r\n");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"Subject: x\n\nhi\n"});
  EXPECT_EQ(store.stored["bob"], std::vector<std::string>{"Subject: x\n\nhi\n"});
  EXPECT_EQ(store.last_sender, "s@example.org");
  // The transaction is over: a new MAIL is accepted.
  EXPECT_EQ(feed("MAIL FROM:<>\r\n"), "250 2.1.0 Sender OK\r\n");
}

// RFC 5321 §4.4: the final delivery adds Return-Path and Received, each copy
// naming only its own recipient; a hostile LHLO name cannot add a header.
TEST_F(LmtpSessionTest, TraceHeadersPerRecipient) {
  config.clock = [] { return std::int64_t{1796680200}; };  // Mon, 07 Dec 2026 21:50:00
  EXPECT_NE(feed("LHLO mx.relay.example(x);\rBcc: y\r\n").find("250 SIZE"), std::string::npos);
  feed(
      "MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<bob@b.example>\r\n"
      "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
  ASSERT_EQ(store.traces["alice"].size(), 1u);
  EXPECT_EQ(store.traces["alice"][0],
            "Return-Path: <s@example.org>\n"
            "Received: from mx.relay.example?x???Bcc:\n"
            "\tby mx.example with LMTP\n"
            "\tfor <alice@example.com>; Mon, 07 Dec 2026 21:50:00 +0000\n");
  EXPECT_NE(store.traces["bob"][0].find("\tfor <bob@b.example>; "), std::string::npos);
  EXPECT_EQ(store.traces["bob"][0].find("alice"), std::string::npos);
  // 8-bit bytes in a path (no SMTPUTF8): ASCII in the header.
  feed("MAIL FROM:<s\xc3\xa9@x>\r\nRCPT TO:<alice@\xc3\xa9.example>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(store.traces["alice"].size(), 2u);
  EXPECT_EQ(store.traces["alice"][1].rfind("Return-Path: <s??@x>\n", 0), 0u);
  EXPECT_NE(store.traces["alice"][1].find("\tfor <alice@??.example>; "), std::string::npos);
  // The null reverse-path.
  feed("MAIL FROM:<>\r\nRCPT TO:<alice@x>\r\nDATA\r\nx\r\n.\r\n");
  ASSERT_EQ(store.traces["alice"].size(), 3u);
  EXPECT_EQ(store.traces["alice"][2].rfind("Return-Path: <>\n", 0), 0u);
}

TEST_F(LmtpSessionTest, PipelinedTransactionAnsweredInOrderInOneOutput) {
  EXPECT_EQ(feed("LHLO c\r\nMAIL FROM:<s@x> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<alice@x>\r\n"
                 "RCPT TO:<ghost@x>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\nNOOP\r\n"),
            "250-mx.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
            "250-CHUNKING\r\n250 SIZE 1000\r\n250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "550 5.1.1 No such user\r\n354 Send the message, end with <CRLF>.<CRLF>\r\n"
            "250 2.0.0 Delivered to alice\r\n221 2.0.0 Bye\r\n");
  EXPECT_TRUE(s().closed());
  EXPECT_EQ(feed("NOOP\r\n"), "");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"body\n"});
}

TEST_F(LmtpSessionTest, ByteAtATime) {
  const std::string in = "LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\na\r\n.\r\n";
  std::string out;
  for (char c : in) out += feed(std::string_view(&c, 1));
  EXPECT_NE(out.find("250 2.0.0 Delivered to alice\r\n"), std::string::npos);
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"a\n"});
}

TEST_F(LmtpSessionTest, StoreFailureIs451ForThatRecipientOnly) {
  store.deliver_fails.insert("bob");
  lhlo();
  EXPECT_EQ(
      feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n").substr(0, 6),
      "250 2.");
  EXPECT_EQ(feed("m\r\n.\r\n"),
            "250 2.0.0 Delivered to alice\r\n"
            "451 4.3.0 Cannot store the message now, try again later\r\n");
  EXPECT_EQ(store.stored.count("bob"), 0u);
}

TEST_F(LmtpSessionTest, LookupFailureIs451AndOverQuota552Or452) {
  store.lookup_fails.insert("alice");
  store.over_quota.insert("bob");
  lhlo();
  feed("MAIL FROM:<s@x>\r\n");
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"),
            "451 4.3.0 Cannot look the recipient up now, try again later\r\n");
  EXPECT_EQ(feed("RCPT TO:<bob@x>\r\n"), "552 5.2.2 Mailbox full\r\n");
  EXPECT_EQ(feed("DATA\r\n"), "503 5.5.1 No valid recipients\r\n");

  config.over_quota_temporary = true;
  session.reset();
  lhlo();
  feed("MAIL FROM:<s@x>\r\n");
  EXPECT_EQ(feed("RCPT TO:<bob@x>\r\n"), "452 4.2.2 Mailbox full\r\n");
}

TEST_F(LmtpSessionTest, MailSizeReachesTheQuotaCheckAtRcpt) {
  store.room["alice"] = 500;
  lhlo();
  feed("MAIL FROM:<s@x> SIZE=600\r\n");
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"), "552 5.2.2 Mailbox full\r\n");
  EXPECT_EQ(feed("RCPT TO:<bob@x>\r\n"), "250 2.1.5 Recipient OK\r\n");
  feed("RSET\r\n");
  feed("MAIL FROM:<s@x> SIZE=400\r\n");
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"), "250 2.1.5 Recipient OK\r\n");
  feed("RSET\r\n");
  feed("MAIL FROM:<s@x>\r\n");  // no SIZE=: 0, checked again after DATA
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"), "250 2.1.5 Recipient OK\r\n");
}

TEST_F(LmtpSessionTest, OverQuotaAfterDataIsPerRecipient552Or452) {
  store.full_at_data.insert("bob");
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n");
  EXPECT_EQ(feed("hi\r\n.\r\n"), "250 2.0.0 Delivered to alice\r\n552 5.2.2 Mailbox full\r\n");
  EXPECT_EQ(store.stored["alice"].size(), 1u);
  EXPECT_EQ(store.stored.count("bob"), 0u);

  config.over_quota_temporary = true;
  session.reset();
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<bob@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
  EXPECT_EQ(feed("hi\r\n.\r\n"), "452 4.2.2 Mailbox full\r\n250 2.0.0 Delivered to alice\r\n");
}

TEST_F(LmtpSessionTest, BareLfCrAndDotUnstuffing) {
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
  // A bare LF ends a line too; a bare CR is kept; a leading dot is removed;
  // ".." alone is a line with one dot; ".\n" ends the message.
  EXPECT_EQ(feed("a\nb\rc\r\n..d\r\n..\r\n.\n"), "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"a\nb\rc\n.d\n.\n"});
}

TEST_F(LmtpSessionTest, DotInsideALineDoesNotEndTheMessage) {
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
  EXPECT_EQ(feed("x.\r\n .\r\n"), "");
  EXPECT_EQ(feed(".\r\n"), "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"x.\n .\n"});
}

TEST_F(LmtpSessionTest, OversizeMessageIs552PerRecipientAndNotStored) {
  lhlo();
  EXPECT_EQ(feed("MAIL FROM:<s@x> SIZE=1001\r\n"),
            "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n");
  const std::string line(99, 'x');
  std::string out;
  for (int i = 0; i < 20; ++i) out += feed(line + "\r\n");
  EXPECT_EQ(out, "");
  EXPECT_EQ(feed(".\r\n"), "552 5.3.4 Message too big\r\n552 5.3.4 Message too big\r\n");
  EXPECT_TRUE(store.stored.empty());
  // Exactly at the limit is accepted (1000 bytes stored: 10 lines of 99 + LF).
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
  for (int i = 0; i < 10; ++i) feed(line + "\r\n");
  EXPECT_EQ(feed(".\r\n"), "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"].at(0).size(), 1000u);
}

TEST_F(LmtpSessionTest, LongUnterminatedDataLineIsTakenInPieces) {
  config.max_message_size = 10 * limits::kLmtpDataChunk;
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nDATA\r\n");
  const std::string piece(limits::kLmtpDataChunk + 1, 'y');
  feed("." + piece);  // leading dot removed even when the line is split
  feed(piece + "\r");
  EXPECT_EQ(feed("\n.\r\n"), "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"].at(0), piece + piece + "\n");
}

TEST_F(LmtpSessionTest, OversizeCommandLineIs500AndDiscarded) {
  lhlo();
  const std::string big(limits::kMaxLmtpCommandLine + 10, 'A');
  EXPECT_EQ(feed(big), "");
  EXPECT_EQ(feed(big + "\r\nNOOP\r\n"), "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n");
}

TEST_F(LmtpSessionTest, RsetEndsTheTransaction) {
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\n");
  EXPECT_EQ(feed("RSET\r\n"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(feed("DATA\r\n"), "503 5.5.1 MAIL first\r\n");
  EXPECT_EQ(feed("MAIL FROM:<s@x>\r\n"), "250 2.1.0 Sender OK\r\n");
  EXPECT_EQ(feed("MAIL FROM:<s@x>\r\n"), "503 5.5.1 Nested MAIL command\r\n");
}

TEST_F(LmtpSessionTest, SyntaxErrors) {
  lhlo();
  EXPECT_EQ(feed("MAIL s@x\r\n"), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  EXPECT_EQ(feed("MAIL FROM:s@x\r\n"), "501 5.1.7 Bad sender address\r\n");
  EXPECT_EQ(feed("MAIL FROM:<s@x> FOO=1\r\n"), "555 5.5.4 Unsupported MAIL parameter\r\n");
  EXPECT_EQ(feed("MAIL FROM:<s@x> SIZE=abc\r\n"), "501 5.5.4 Bad SIZE parameter\r\n");
  EXPECT_EQ(feed("MAIL FROM:<" + std::string(300, 'a') + ">\r\n"),
            "501 5.1.7 Bad sender address\r\n");
  EXPECT_EQ(feed("MAIL FROM:<s@x>\r\n"), "250 2.1.0 Sender OK\r\n");
  EXPECT_EQ(feed("RCPT TO:<>\r\n"), "501 5.1.3 Bad recipient address\r\n");
  EXPECT_EQ(feed("RCPT TO:<a b@x>\r\n"), "501 5.1.3 Bad recipient address\r\n");
  EXPECT_EQ(feed("DATA now\r\n"), "501 5.5.4 DATA takes no argument\r\n");
  EXPECT_EQ(feed("WHAT\r\n"), "500 5.5.2 Unknown command\r\n");
}

// RFC 3030 with RFC 2033 §4.2: MAIL, RCPT and BDAT LAST with the message in
// one pipelined write, one output: one reply per command, then one per
// accepted recipient; the octets are neither dot-unstuffed nor terminated.
TEST_F(LmtpSessionTest, BdatLastPipelinedInOneRoundTrip) {
  const std::string msg = "Subject: b\r\n\r\n.leading dot kept\r\n.\r\nend";
  EXPECT_EQ(feed("LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<ghost@x>\r\n"
                 "RCPT TO:<bob@x>\r\nBDAT " +
                 std::to_string(msg.size()) + " LAST\r\n" + msg + "NOOP\r\n"),
            "250-mx.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
            "250-CHUNKING\r\n250 SIZE 1000\r\n250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
            "550 5.1.1 No such user\r\n250 2.1.5 Recipient OK\r\n"
            "250 2.0.0 Delivered to alice\r\n250 2.0.0 Delivered to bob\r\n250 2.0.0 OK\r\n");
  const std::string stored = "Subject: b\n\n.leading dot kept\n.\nend";
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{stored});
  EXPECT_EQ(store.stored["bob"], std::vector<std::string>{stored});
  EXPECT_EQ(store.traces["alice"].size(), 1u);
  // The transaction is over.
  EXPECT_EQ(feed("MAIL FROM:<>\r\n"), "250 2.1.0 Sender OK\r\n");
}

// Several chunks, split anywhere (a byte at a time too), CRLF cut between
// chunks, a bare CR kept, BDAT 0 LAST ending the message.
TEST_F(LmtpSessionTest, BdatChunksAndCrlfAcrossChunks) {
  const std::string in =
      "LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nBDAT 4\r\na\rb\rBDAT 3\r\n\nc\r"
      "BDAT 0 LAST\r\n";
  for (std::size_t step : {in.size(), std::size_t{1}, std::size_t{5}}) {
    store.stored.clear();
    session.reset();
    std::string out;
    for (std::size_t pos = 0; pos < in.size(); pos += step) out += feed(in.substr(pos, step));
    EXPECT_NE(out.find("250 2.0.0 Chunk received\r\n250 2.0.0 Chunk received\r\n"
                       "250 2.0.0 Delivered to alice\r\n"),
              std::string::npos)
        << out;
    EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"a\rb\nc\r"}) << step;
  }
}

// A refused BDAT's octets are read and dropped, never taken for commands.
TEST_F(LmtpSessionTest, RefusedBdatSwallowsItsOctets) {
  EXPECT_EQ(feed("BDAT 12\r\nQUIT\r\nQUIT\r\n"), "503 5.5.1 LHLO first\r\n");
  EXPECT_FALSE(s().closed());
  EXPECT_EQ(feed("MAIL FROM:<s@x>\r\n"), "503 5.5.1 LHLO first\r\n");  // still unhelloed
  lhlo();
  EXPECT_EQ(feed("BDAT 6 LAST\r\nRSET\r\n"), "503 5.5.1 MAIL first\r\n");
  // No valid recipient: refused, the transaction ends.
  EXPECT_EQ(feed("MAIL FROM:<s@x>\r\nRCPT TO:<ghost@x>\r\nBDAT 6 LAST\r\nQUIT\r\n"),
            "250 2.1.0 Sender OK\r\n550 5.1.1 No such user\r\n"
            "503 5.5.1 No valid recipients\r\n");
  EXPECT_FALSE(s().closed());
  EXPECT_EQ(feed("RCPT TO:<alice@x>\r\n"), "503 5.5.1 MAIL first\r\n");
  EXPECT_EQ(feed("BDAT 4 FIRST\r\nQUIT"), "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
  EXPECT_TRUE(store.stored.empty());
  // DATA and BDAT do not mix; no RCPT after a chunk.
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nBDAT 1\r\nx");
  EXPECT_EQ(feed("DATA\r\n"), "503 5.5.1 DATA after BDAT (RFC 3030)\r\n");
  EXPECT_EQ(feed("RCPT TO:<bob@x>\r\n"), "503 5.5.1 RCPT after BDAT\r\n");
  EXPECT_EQ(feed("BDAT 1 LAST\r\ny"), "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{"xy"});
  // A size that does not parse: the chunk's end is unknown, the session ends.
  EXPECT_EQ(feed("BDAT ten\r\nRCPT TO:<x>\r\n"), "421 4.5.4 Bad BDAT chunk size, closing\r\n");
  EXPECT_TRUE(s().closed());
}

TEST_F(LmtpSessionTest, BdatOversizeIs552PerRecipientAndRsetDropsChunks) {
  lhlo();
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<bob@x>\r\n");
  EXPECT_EQ(feed("BDAT 600\r\n" + std::string(600, 'x')), "250 2.0.0 Chunk received\r\n");
  EXPECT_EQ(feed("BDAT 401 LAST\r\n" + std::string(401, 'x')),
            "552 5.3.4 Message too big\r\n552 5.3.4 Message too big\r\n");
  EXPECT_TRUE(store.stored.empty());
  // RSET between chunks forgets them.
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\nBDAT 3\r\nold");
  EXPECT_EQ(feed("RSET\r\n"), "250 2.0.0 OK\r\n");
  feed("MAIL FROM:<s@x>\r\nRCPT TO:<alice@x>\r\n");
  EXPECT_EQ(feed("BDAT 1000 LAST\r\n" + std::string(1000, 'z')),
            "250 2.0.0 Delivered to alice\r\n");
  EXPECT_EQ(store.stored["alice"], std::vector<std::string>{std::string(1000, 'z')});
}

TEST_F(LmtpSessionTest, TooManyRecipientsIs452) {
  store.users = {"a", "b", "c", "d"};
  lhlo();
  feed("MAIL FROM:<s@x>\r\n");
  EXPECT_EQ(feed("RCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\n"),
            "250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n250 2.1.5 Recipient OK\r\n");
  EXPECT_EQ(feed("RCPT TO:<d@x>\r\n"), "452 4.5.3 Too many recipients\r\n");
}

TEST_F(LmtpSessionTest, TooManyBadCommandsCloses) {
  std::string out;
  for (unsigned i = 0; i < limits::kLmtpMaxBadCommands; ++i) out += feed("XYZZY\r\n");
  EXPECT_NE(out.find("421 4.7.0 Too many bad commands, closing\r\n"), std::string::npos);
  EXPECT_TRUE(s().closed());
}

}  // namespace
}  // namespace apop::net
