#include <gtest/gtest.h>

#include "pop3/body.hpp"
#include "pop3/command.hpp"
#include "pop3/crlf.hpp"
#include "pop3/line_reader.hpp"

namespace apop::pop3 {
namespace {

TEST(ParseNumber, Strict) {
  EXPECT_EQ(parse_number("1"), 1u);
  EXPECT_EQ(parse_number("4294967295"), 4294967295u);
  EXPECT_EQ(parse_number("007"), 7u);
  for (const char* bad : {"", "+1", "-1", "1x", "x1", " 1", "1 ", "4294967296", "4294967297",
                          "18446744073709551617", "99999999999999999999999", "0x10"}) {
    EXPECT_FALSE(parse_number(bad).has_value()) << bad;
  }
}

// Regression (hostile-input suite): leading zeros beyond ten digits were
// refused although the value is small ("LIST 000000000003"); Dovecot accepts them.
TEST(ParseNumber, LeadingZerosDoNotCount) {
  EXPECT_EQ(parse_number("0000000000000000000000000000000000000003"), 3u);
  EXPECT_EQ(parse_number("00000000004294967295"), 4294967295u);
  EXPECT_EQ(parse_number("0"), 0u);
  EXPECT_EQ(parse_number("000"), 0u);
  EXPECT_FALSE(parse_number("00000000004294967296").has_value());
  EXPECT_FALSE(parse_number("0000-1").has_value());
}

// Regression (hostile-input suite): "TOP 1 99999999999" was refused; a line
// count beyond 32 bits means the whole message (Dovecot takes 64 bits).
TEST(ParseCount, SixtyFourBits) {
  EXPECT_EQ(parse_count("4294967296"), 4294967296u);
  EXPECT_EQ(parse_count("99999999999"), 99999999999u);
  EXPECT_EQ(parse_count("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(parse_count("000018446744073709551615"), UINT64_MAX);
  for (const char* bad : {"", "+1", "-1", "1x", " 1", "18446744073709551616",
                          "18446744073709551620", "99999999999999999999", "0x10"}) {
    EXPECT_FALSE(parse_count(bad).has_value()) << bad;
  }
}

TEST(ParseCommand, SplitsKeywordAndArgs) {
  auto c = parse_command("TOP 1 10");
  EXPECT_EQ(c.keyword, "TOP");
  ASSERT_EQ(c.args.size(), 2u);
  EXPECT_EQ(c.args[0], "1");
  EXPECT_EQ(c.args[1], "10");
  auto p = parse_command("PASS a b  c");
  EXPECT_EQ(p.rest, "a b  c");
  auto extra = parse_command("LIST  1 ");
  ASSERT_EQ(extra.args.size(), 1u);
  EXPECT_EQ(extra.args[0], "1");
  EXPECT_TRUE(parse_command("NOOP").args.empty());
  EXPECT_TRUE(iequals("quit", "QUIT"));
  EXPECT_FALSE(iequals("quit", "QUI"));
}

TEST(LineReader, HasLineDoesNotConsume) {
  LineReader r;
  EXPECT_FALSE(r.has_line());
  r.feed("QUI");
  EXPECT_FALSE(r.has_line());
  r.feed("T\r\nNOOP\n");
  EXPECT_TRUE(r.has_line());
  EXPECT_EQ(r.pop()->text, "QUIT");
  EXPECT_TRUE(r.has_line());
  EXPECT_EQ(r.pop()->text, "NOOP");
  EXPECT_FALSE(r.has_line());
  // An overlong line is an item too (pop() reports it as too long).
  r.feed(std::string(300, 'a') + "\n");
  EXPECT_TRUE(r.has_line());
  EXPECT_EQ(r.pop()->kind, LineReader::Kind::too_long);
}

TEST(LineReader, SplitsLinesAcrossFeeds) {
  LineReader r;
  r.feed("STAT\r\nLI");
  auto a = r.pop();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->kind, LineReader::Kind::line);
  EXPECT_EQ(a->text, "STAT");
  EXPECT_FALSE(r.pop());
  r.feed("ST\nNOOP\r\n");
  EXPECT_EQ(r.pop()->text, "LIST");  // bare LF accepted as a line end
  EXPECT_EQ(r.pop()->text, "NOOP");
  EXPECT_FALSE(r.pop());
}

TEST(LineReader, OverlongDiscardedToLineEnd) {
  LineReader r;
  r.feed(std::string(300, 'a'));
  EXPECT_FALSE(r.pop());
  r.feed(std::string(300, 'b'));
  EXPECT_FALSE(r.pop());
  r.feed("QUIT\r\nNOOP\r\n");
  auto a = r.pop();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->kind, LineReader::Kind::too_long);
  auto b = r.pop();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->kind, LineReader::Kind::line);
  EXPECT_EQ(b->text, "NOOP");
}

TEST(LineReader, BadBytes) {
  LineReader r;
  r.feed(std::string("A\0B\r\nC\rD\r\nOK\r\n", 14));
  EXPECT_EQ(r.pop()->kind, LineReader::Kind::bad_byte);
  EXPECT_EQ(r.pop()->kind, LineReader::Kind::bad_byte);
  EXPECT_EQ(r.pop()->text, "OK");
}

TEST(LineReader, ClearDropsBufferedInput) {
  LineReader r;
  r.feed("QUIT\r\nPARTIAL");
  r.clear();
  EXPECT_FALSE(r.pop());
  EXPECT_FALSE(r.partial());
}

TEST(Crlf, Size) {
  EXPECT_EQ(crlf_size(""), 0u);
  EXPECT_EQ(crlf_size("a\n"), 3u);
  EXPECT_EQ(crlf_size("a\r\n"), 3u);
  EXPECT_EQ(crlf_size("a\rb"), 3u);
  CrlfSizer s;  // CR and LF split across chunks
  s.update("a\r");
  s.update("\nb\n");
  EXPECT_EQ(s.size(), 6u);
}

TEST(Body, DotStuffingAndTermination) {
  EXPECT_EQ(encode_body("", std::nullopt), ".\r\n");
  EXPECT_EQ(encode_body(".\n..\nx.\n", std::nullopt), "..\r\n...\r\nx.\r\n.\r\n");
  EXPECT_EQ(encode_body("no newline", std::nullopt), "no newline\r\n.\r\n");
  EXPECT_EQ(encode_body("a\r\nb\r\n", std::nullopt), "a\r\nb\r\n.\r\n");
  // Regression (hostile-input suite): a message ending in a bare CR lost it
  // ("x\r" was sent as the line "x"); it is kept, as every other bare CR, and
  // the line gets its CRLF (Dovecot sends the same octets).
  EXPECT_EQ(encode_body("S: a\n\nx\r", std::nullopt), "S: a\r\n\r\nx\r\r\n.\r\n");
  EXPECT_EQ(encode_body("x\r\r", std::nullopt), "x\r\r\r\n.\r\n");
  EXPECT_EQ(encode_body(".", std::nullopt), "..\r\n.\r\n");
}

TEST(Body, TopCountsBodyLines) {
  std::string m = "H: 1\nH2: 2\n\nb1\nb2\nb3\n";
  EXPECT_EQ(encode_body(m, 0), "H: 1\r\nH2: 2\r\n\r\n.\r\n");
  EXPECT_EQ(encode_body(m, 1), "H: 1\r\nH2: 2\r\n\r\nb1\r\n.\r\n");
  EXPECT_EQ(encode_body(m, 3), "H: 1\r\nH2: 2\r\n\r\nb1\r\nb2\r\nb3\r\n.\r\n");
  EXPECT_EQ(encode_body(m, 4000000000u), encode_body(m, std::nullopt));
  EXPECT_EQ(encode_body("H: only\n", 0), "H: only\r\n.\r\n");
  EXPECT_EQ(encode_body("H: x\r\n\r\n.b\r\n", 1), "H: x\r\n\r\n..b\r\n.\r\n");
}

TEST(Body, MatchesSizeForManyShapes) {
  // The octets sent (minus dot-stuffing, added final CRLF and terminator)
  // equal crlf_size for every mix of endings.
  for (std::string m : {"a\nb\n", "a\r\nb", "\n\n\n", "x\r\r\n", ".\n.\n", "abc"}) {
    std::string enc = encode_body(m, std::nullopt);
    std::string unstuffed;
    bool start = true;
    for (std::size_t i = 0; i + 3 <= enc.size() - 0 && i < enc.size() - 3; ++i) {
      if (start && enc[i] == '.') {
        start = false;
        continue;
      }
      start = enc[i] == '\n';
      unstuffed.push_back(enc[i]);
    }
    std::uint64_t expected = crlf_size(m);
    bool ends_in_newline = !m.empty() && m.back() == '\n';
    EXPECT_EQ(unstuffed.size(), expected + (ends_in_newline || m.empty() ? 0 : 2)) << m;
  }
}

}  // namespace
}  // namespace apop::pop3

namespace apop::pop3 {
namespace {

TEST(LineReaderHasLine, TracksCompleteLines) {
  LineReader r;
  EXPECT_FALSE(r.has_line());
  r.feed("NOOP");
  EXPECT_FALSE(r.has_line());
  r.feed("\r\nQU");
  EXPECT_TRUE(r.has_line());
  ASSERT_TRUE(r.pop().has_value());
  EXPECT_FALSE(r.has_line());
  r.feed("IT\r\n");
  EXPECT_TRUE(r.has_line());
  ASSERT_TRUE(r.pop().has_value());
  EXPECT_FALSE(r.has_line());
}

}  // namespace
}  // namespace apop::pop3
