#include "auth/challenge.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

namespace apop::auth {
namespace {

TEST(AuthChallenge, ThousandDistinctValidChallenges) {
  ChallengeGenerator gen("mail.example.org");
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string c = gen.next();
    EXPECT_TRUE(is_valid_msg_id(c)) << c;
    EXPECT_TRUE(seen.insert(c).second) << "repeated: " << c;
  }
  EXPECT_EQ(seen.size(), 1000u);
}

// A forked child (each network worker is one) names its own pid and never
// hands out the random bytes its parent had drawn in advance.
TEST(AuthChallenge, ForkedChildNamesItsPidAndDrawsItsOwnBytes) {
  ChallengeGenerator gen("host");
  const std::string before = gen.next();  // fills the parent's block
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string c = gen.next();
    const bool ok = ::write(fds[1], c.data(), c.size()) == static_cast<ssize_t>(c.size());
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  char buf[512];
  const ssize_t n = ::read(fds[0], buf, sizeof buf);
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_GT(n, 0);
  const std::string from_child(buf, static_cast<std::size_t>(n));
  const std::string after = gen.next();
  EXPECT_NE(from_child.find("." + std::to_string(child) + "@"), std::string::npos) << from_child;
  EXPECT_NE(after.find("." + std::to_string(::getpid()) + "@"), std::string::npos) << after;
  // The random part (32 hex digits after '<') differs from what the parent
  // handed out next.
  EXPECT_NE(from_child.substr(1, 32), after.substr(1, 32));
  EXPECT_NE(from_child.substr(1, 32), before.substr(1, 32));
}

TEST(AuthChallenge, Shape) {
  ChallengeGenerator gen("pop.example.net");
  std::string c = gen.next();
  ASSERT_EQ(c.front(), '<');
  ASSERT_EQ(c.back(), '>');
  std::size_t dot = c.find('.');
  ASSERT_NE(dot, std::string::npos);
  std::string hex = c.substr(1, dot - 1);
  EXPECT_GE(hex.size(), 33u);  // 32 random hex digits + counter
  for (char ch : hex) EXPECT_TRUE((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')) << ch;
  std::size_t at = c.find('@');
  EXPECT_EQ(c.substr(dot + 1, at - dot - 1), std::to_string(::getpid()));
  EXPECT_EQ(c.substr(at + 1, c.size() - at - 2), "pop.example.net");
}

TEST(AuthChallenge, ConcurrentGeneratorsNeverRepeat) {
  ChallengeGenerator a("h");
  ChallengeGenerator b("h");
  std::vector<std::string> out[4];
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) out[t].push_back((t % 2 ? a : b).next());
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::string> all;
  for (auto& v : out) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 2000u);
}

TEST(AuthChallenge, HostnameSanitised) {
  EXPECT_EQ(ChallengeGenerator("mail.example.org").hostname(), "mail.example.org");
  EXPECT_EQ(ChallengeGenerator("").hostname(), "localhost");
  EXPECT_EQ(ChallengeGenerator("...").hostname(), "localhost");
  EXPECT_EQ(ChallengeGenerator("<>@ \r\n").hostname(), "localhost");
  EXPECT_EQ(ChallengeGenerator(".a..b.").hostname(), "a.b");
  EXPECT_EQ(ChallengeGenerator("ho st@evil>.com\r\n").hostname(), "hostevil.com");
  EXPECT_EQ(ChallengeGenerator("h\xc3\xa9te-1.example").hostname(), "hte-1.example");
  ChallengeGenerator huge(std::string(1000, 'a'));
  EXPECT_TRUE(is_valid_msg_id(huge.next()));
  ChallengeGenerator dots(std::string(300, 'a') + "." + std::string(300, 'b'));
  EXPECT_TRUE(is_valid_msg_id(dots.next()));
  for (const char* h : {"", "..", "a..b", "-x-", "x.", "\t", "[1.2.3.4]"}) {
    ChallengeGenerator g(h);
    EXPECT_TRUE(is_valid_msg_id(g.next())) << h;
  }
}

TEST(AuthChallenge, ValidMsgIds) {
  for (const char* s : {
           "<1896.697170952@dbc.mtview.ca.us>",
           "<a@b>",
           "<a.b.c@d.e.f>",
           "<!#$%&'*+-/=?^_`{|}~@x>",
           "<x@[127.0.0.1]>",
           "<x@[]>",
           "<x@[IPv6:::1]>",
           "<0123456789abcdef@localhost>",
       }) {
    EXPECT_TRUE(is_valid_msg_id(s)) << s;
  }
  // Exactly 256 octets is fine.
  std::string max = "<" + std::string(256 - 4, 'a') + "@b>";
  ASSERT_EQ(max.size(), 256u);
  EXPECT_TRUE(is_valid_msg_id(max));
}

TEST(AuthChallenge, InvalidMsgIds) {
  for (std::string_view s : {
           std::string_view(""),
           std::string_view("<>"),
           std::string_view("<@>"),
           std::string_view("a@b"),             // no brackets
           std::string_view("<a@b"),            // no closing
           std::string_view("a@b>"),            // no opening
           std::string_view("<ab>"),            // missing @
           std::string_view("<a@b@c>"),         // two @
           std::string_view("<@b>"),            // empty local
           std::string_view("<a@>"),            // empty domain
           std::string_view("<a b@c>"),         // space
           std::string_view("< a@b>"),          // leading space
           std::string_view("<a@b >"),          // trailing space
           std::string_view("<a\t@b>"),         // control
           std::string_view("<a\r\n@b>"),       // CRLF
           std::string_view("<a\0@b>", 6),      // NUL
           std::string_view("<a\x7f@b>"),       // DEL
           std::string_view("<a\xc3\xa9@b>"),   // 8-bit
           std::string_view("<.a@b>"),          // leading dot
           std::string_view("<a.@b>"),          // trailing dot
           std::string_view("<a..b@c>"),        // double dot
           std::string_view("<a@.b>"),          // domain leading dot
           std::string_view("<a@b.>"),          // domain trailing dot
           std::string_view("<a@b..c>"),        // domain double dot
           std::string_view("<a<b@c>"),         // nested <
           std::string_view("<<a@b>>"),         // nested brackets
           std::string_view("<a@b>c>"),         // > inside
           std::string_view("<\"a\"@b>"),       // quoted-string local part
           std::string_view("<\"a b\"@c>"),     // quoted-string with space
           std::string_view("<a(comment)@b>"),  // comment
           std::string_view("<a@[1.2.3.4>"),    // unterminated literal
           std::string_view("<a@[1[2]>"),       // '[' in literal
           std::string_view("<a@[1\\]2]>"),     // backslash in literal
           std::string_view("<a@[1]2]>"),       // ']' in literal
           std::string_view("<a@x[1]>"),        // literal not whole domain
           std::string_view("<[1.2.3.4]@b>"),   // literal as local part
           std::string_view("<a,b@c>"),         // ',' not atext
           std::string_view("<a;b@c>"),         // ';' not atext
           std::string_view("<a:b@c>"),         // ':' not atext
           std::string_view("<a\\b@c>"),        // backslash
       }) {
    EXPECT_FALSE(is_valid_msg_id(s)) << s;
  }
  std::string overlong = "<" + std::string(257 - 4, 'a') + "@b>";
  ASSERT_EQ(overlong.size(), 257u);
  EXPECT_FALSE(is_valid_msg_id(overlong));
  EXPECT_FALSE(is_valid_msg_id("<" + std::string(5000, 'a') + "@b>"));
}

TEST(AuthChallenge, FindTimestamp) {
  auto t = find_timestamp("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<1896.697170952@dbc.mtview.ca.us>");

  t = find_timestamp("+OK <first@a> then <second@b> trailing text");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<second@b>");

  t = find_timestamp("+OK hello<x@y>");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<x@y>");

  // Nesting is passed through to the validator, which refuses it.
  t = find_timestamp("+OK ready <evil<x@y>");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<evil<x@y>");
  EXPECT_FALSE(is_valid_msg_id(*t));

  // A crafted token with a space is returned whole and refused.
  t = find_timestamp("+OK <a b@c>");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "<a b@c>");
  EXPECT_FALSE(is_valid_msg_id(*t));

  EXPECT_FALSE(find_timestamp("+OK POP3 server ready").has_value());
  EXPECT_FALSE(find_timestamp("+OK > <").has_value());
  EXPECT_FALSE(find_timestamp("-ERR <a@b>").has_value());
  EXPECT_FALSE(find_timestamp("").has_value());

  // The returned view points into the input.
  std::string line = "+OK x <ts@h>";
  t = find_timestamp(line);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->data(), line.data() + 6);
}

}  // namespace
}  // namespace apop::auth
