// Unit tests for the I/O-free client helpers (src/client/protocol.hpp):
// status lines, APOP challenge validation (CVE-2007-1558), CAPA, strict
// STAT/LIST/UIDL parsing (CVE-2005-2335 class), the body decoder and the
// mechanism choice.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "auth/challenge.hpp"
#include "client/protocol.hpp"
#include "common/limits.hpp"

namespace apop::client {
namespace {

TEST(ClientReply, ParsesOkErrAndResponseCodes) {
  auto ok = parse_reply("+OK 2 320");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->ok);
  EXPECT_EQ(ok->text, "2 320");
  auto bare = parse_reply("+OK");
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->ok);
  EXPECT_EQ(bare->text, "");
  auto err = parse_reply("-ERR [SYS/TEMP] try later");
  ASSERT_TRUE(err);
  EXPECT_FALSE(err->ok);
  EXPECT_EQ(err->code, "SYS/TEMP");
  EXPECT_EQ(err->text, "try later");
  auto auth = parse_reply("-ERR [AUTH]");
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth->code, "AUTH");
}

TEST(ClientReply, RefusesNonStatusLines) {
  for (const char* l : {"", "+OKAY", "+ok", "-ERROR x", "+ abc", "OK", " +OK", "*OK"}) {
    EXPECT_FALSE(parse_reply(l)) << l;
  }
}

TEST(ClientReply, Continuations) {
  EXPECT_TRUE(is_continuation("+ "));
  EXPECT_TRUE(is_continuation("+"));
  EXPECT_FALSE(is_continuation("+OK"));
  auto c = parse_continuation("+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+");
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, "<1896.697170952@postoffice.reston.mci.net>");
  auto empty = parse_continuation("+");
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, "");
  EXPECT_FALSE(parse_continuation("+ not base64!"));
  EXPECT_FALSE(parse_continuation("+ YQ"));  // missing padding
}

// --- APOP challenges -------------------------------------------------------

TEST(ClientChallenge, AcceptsValidMsgIds) {
  const std::vector<std::string> good = {
      "<1896.697170952@dbc.mtview.ca.us>",  // RFC 1939 §7
      "<a@b>",
      "<x@[192.0.2.1]>",  // domain literal
      "<x@[IPv6:2001:db8::1]>",
      "<6f0c9a.4711@mail.example.org>",
      "<!#$%&'*+-/=?^_`{|}~@example.org>",
      "<" + std::string(250, 'a') + "@b.c>",  // 256 octets exactly
  };
  for (const auto& s : good) {
    EXPECT_EQ(challenge_problem(s), "") << s;
    EXPECT_TRUE(auth::is_valid_msg_id(s)) << s;
  }
  EXPECT_EQ(good.back().size(), limits::kMaxTimestamp);
}

TEST(ClientChallenge, RefusesAtLeastTwentyKindsOfBadChallenge) {
  const std::vector<std::string> bad = {
      std::string("<1896.697\x80@host>"),     // 8-bit octet
      std::string("<1896.697\xff@host>"),     // 8-bit octet
      std::string("<1896\x01.697@host>"),     // control character
      std::string("<1896\x7f.697@host>"),     // DEL
      std::string("<1896.697@ho\0st>", 16),   // NUL
      "<1896.697\r@host>",                    // CR
      "<1896.697\n@host>",                    // LF
      "<1896.697\tx@host>",                   // TAB
      "<1896.697170952dbc.mtview.ca.us>",     // missing @
      "1896.697170952@dbc.mtview.ca.us",      // missing brackets
      "<1896.697170952@dbc.mtview.ca.us",     // missing >
      "1896.697170952@dbc.mtview.ca.us>",     // missing <
      "<" + std::string(251, 'a') + "@b.c>",  // 257 octets: overlong
      "<>",                                   // empty
      "",                                     // nothing
      "<1896 697@host>",                      // space
      "<<1896.697@host>",                     // nested <
      "<1896.697@host>>",                     // nested >
      "<a<b@host>",                           // < inside
      "<\"quoted\"@host>",                    // quoted-string local part
      "<\"a b\"@host>",                       // quoted with space
      "<1896.697.@host>",                     // trailing dot in local part
      "<.1896.697@host>",                     // leading dot
      "<1896..697@host>",                     // double dot
      "<1896.697@host.>",                     // trailing dot in domain
      "<1896.697@host..example>",             // double dot in domain
      "<@host>",                              // empty local part
      "<1896.697@>",                          // empty domain
      "<a@b@c>",                              // two @
      "<a(comment)@host>",                    // comment / CFWS
      "<a@[1.2.3.4>",                         // unclosed literal
      "<a@[1.2[3].4]>",                       // '[' inside literal
      "<a@[a\\b]>",                           // backslash in literal (not dtext)
      "<a,b@host>",                           // ',' is not atext
      "<a@host:110>",                         // ':' is not atext
      "<a;b@host>",                           // ';'
  };
  EXPECT_GE(bad.size(), 20u);
  for (const auto& s : bad) {
    std::string why = challenge_problem(s);
    EXPECT_NE(why, "") << "accepted: " << s;
    EXPECT_FALSE(is_valid_challenge(s)) << s;
    EXPECT_FALSE(auth::is_valid_msg_id(s)) << s;
  }
}

TEST(ClientChallenge, ReasonsAreSpecific) {
  EXPECT_NE(challenge_problem("<a@b\x80>").find("0x80"), std::string::npos);
  EXPECT_NE(challenge_problem("<ab>").find("'@'"), std::string::npos);
  EXPECT_NE(challenge_problem("<" + std::string(300, 'a') + "@b>").find("256"), std::string::npos);
  EXPECT_NE(challenge_problem("<a b@c>").find("white space"), std::string::npos);
}

// The offending octet is named in upper-case hex, white space apart.
TEST(ClientChallenge, OctetRendering) {
  EXPECT_EQ(challenge_problem("<a\x7f@b>"),
            "timestamp contains octet 0x7F (only printable ASCII 0x21-0x7E allowed)");
  EXPECT_EQ(challenge_problem("<a\xfe@b>"),
            "timestamp contains octet 0xFE (only printable ASCII 0x21-0x7E allowed)");
  EXPECT_EQ(challenge_problem("<a\tb@c>"), "timestamp contains white space (0x09)");
}

TEST(ClientChallenge, ExtractFromGreeting) {
  auto c = extract_challenge("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>");
  EXPECT_EQ(c.status, Challenge::Status::valid);
  EXPECT_EQ(c.value, "<1896.697170952@dbc.mtview.ca.us>");

  EXPECT_EQ(extract_challenge("+OK Dovecot ready.").status, Challenge::Status::absent);
  EXPECT_EQ(extract_challenge("-ERR go away <a@b>").status, Challenge::Status::absent);

  auto nested = extract_challenge("+OK ready <<a@b>");
  EXPECT_EQ(nested.status, Challenge::Status::invalid);
  auto spaced = extract_challenge("+OK ready <a b@c>");
  EXPECT_EQ(spaced.status, Challenge::Status::invalid);
  auto nobrackets = extract_challenge("+OK ready 1896.697170952@dbc.mtview.ca.us");
  EXPECT_EQ(nobrackets.status, Challenge::Status::invalid);
  EXPECT_NE(nobrackets.reason.find("missing"), std::string::npos);
  auto open = extract_challenge("+OK ready <1896.697170952@dbc");
  EXPECT_EQ(open.status, Challenge::Status::invalid);
  auto eight = extract_challenge("+OK ready <a\xe9@b>");
  EXPECT_EQ(eight.status, Challenge::Status::invalid);
}

TEST(ClientChallenge, ApopDigestRfc1939) {
  EXPECT_EQ(apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb");
}

// --- CAPA ------------------------------------------------------------------

TEST(ClientCapa, ParsesKnownCapabilities) {
  auto c =
      parse_capa({"TOP", "USER", "UIDL", "STLS", "PIPELINING", "RESP-CODES",
                  "SASL scram-sha-256 CRAM-MD5 PLAIN", "IMPLEMENTATION apop 0.1", "X-FOO bar"});
  EXPECT_TRUE(c.received);
  EXPECT_TRUE(c.top && c.user && c.uidl && c.stls && c.pipelining && c.resp_codes);
  EXPECT_TRUE(c.has_sasl("SCRAM-SHA-256"));
  EXPECT_TRUE(c.has_sasl("cram-md5"));
  EXPECT_FALSE(c.has_sasl("LOGIN"));
  EXPECT_EQ(c.implementation, "apop 0.1");
  EXPECT_EQ(c.lines.size(), 9u);
  auto none = parse_capa({});
  EXPECT_TRUE(none.received);
  EXPECT_FALSE(none.stls || none.user || none.pipelining);
}

// One parser for fetch and probe (issue 18): what the probe reads (LOGIN-DELAY,
// EXPIRE, AUTH-RESP-CODE, IMPLEMENTATION as sent) is parsed for fetch too.
TEST(ClientCapa, SharedParserReadsPolicyTagsAndTolerantSpacing) {
  auto c = parse_capa({"  stls", "SASL  plain   PLAIN cram-md5 ", "LOGIN-DELAY 900 USER",
                       "expire NEVER", "AUTH-RESP-CODE", "IMPLEMENTATION   x\x1b[2J y"});
  EXPECT_TRUE(c.stls);
  EXPECT_EQ(c.sasl, (std::vector<std::string>{"PLAIN", "CRAM-MD5"}));
  EXPECT_TRUE(c.auth_resp_code);
  ASSERT_TRUE(c.login_delay && c.expire && c.implementation);
  EXPECT_EQ(*c.login_delay, "900 USER");
  EXPECT_EQ(*c.expire, "NEVER");
  EXPECT_EQ(*c.implementation, "x\x1b[2J y");  // as sent: escaped by whoever prints it
  EXPECT_FALSE(parse_capa({"TOP"}).implementation);
}

TEST(ClientCapa, BoundsLinesAndMechanisms) {
  std::vector<std::string> many(limits::kMaxCapaLines + 5, "X-FOO");
  many.push_back("STLS");
  auto c = parse_capa(many);
  EXPECT_EQ(c.lines.size(), limits::kMaxCapaLines);
  EXPECT_FALSE(c.stls);
  auto few = parse_capa({"TOP", "UIDL", "STLS"}, 2);
  EXPECT_EQ(few.lines.size(), 2u);
  EXPECT_TRUE(few.uidl);
  EXPECT_FALSE(few.stls);
  std::string sasl = "SASL";
  for (std::size_t i = 0; i < limits::kMaxCapaSaslMechanisms + 10; ++i) {
    sasl += " X-M" + std::to_string(i);
  }
  auto m = parse_capa({sasl});
  EXPECT_EQ(m.sasl.size(), limits::kMaxCapaSaslMechanisms);
  EXPECT_EQ(m.sasl.front(), "X-M0");
}

// --- numbers, STAT, LIST, UIDL --------------------------------------------

TEST(ClientNumbers, StrictDecimal) {
  EXPECT_EQ(parse_number("0").value(), 0u);
  EXPECT_EQ(parse_number("18446744073709551615").value(), UINT64_MAX);
  for (const char* s : {"", "-1", "+1", " 1", "1 ", "0x10", "1e3", "18446744073709551616",
                        "99999999999999999999999", "١"}) {
    EXPECT_FALSE(parse_number(s)) << s;
  }
}

// The message names the first problem a left-to-right reading meets.
TEST(ClientNumbers, ErrorMessages) {
  EXPECT_EQ(parse_number("").error().message, "empty number");
  EXPECT_EQ(parse_number("12x").error().message, "not a decimal number: \"12x\"");
  EXPECT_EQ(parse_number("x99999999999999999999").error().message,
            "not a decimal number: \"x99999999999999999999\"");
  EXPECT_EQ(parse_number("99999999999999999999").error().message,
            "number overflows 64 bits: \"99999999999999999999\"");
  EXPECT_EQ(parse_number("99999999999999999999x").error().message,
            "number overflows 64 bits: \"99999999999999999999x\"");
}

TEST(ClientStat, ParsesAndRefuses) {
  auto s = parse_stat("2 320");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->count, 2u);
  EXPECT_EQ(s->octets, 320u);
  EXPECT_TRUE(parse_stat("2 320 extra text"));
  for (const char* bad :
       {"", "2", "2  320", "-2 320", "2 -320", "a b", "2 99999999999999999999999", "1000001 5"}) {
    EXPECT_FALSE(parse_stat(bad)) << bad;
  }
}

TEST(ClientList, ParsesAndRefusesGarbage) {
  auto l = parse_list({"1 120", "3 200 extra"}, 3);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->size(), 2u);
  EXPECT_EQ(l->at(3), 200u);
  EXPECT_FALSE(parse_list({"0 10"}, 3));                    // number 0
  EXPECT_FALSE(parse_list({"4 10"}, 3));                    // out of range
  EXPECT_FALSE(parse_list({"1 10", "1 20"}, 3));            // duplicate
  EXPECT_FALSE(parse_list({"1 99999999999999999999"}, 3));  // size overflow
  EXPECT_FALSE(parse_list({"18446744073709551617 1"}, 3));  // number overflow
  EXPECT_FALSE(parse_list({"1"}, 3));                       // no size
  EXPECT_FALSE(parse_list({"1 -5"}, 3));                    // sign
  EXPECT_FALSE(parse_list({"1 10", "2 10"}, 1));            // more lines than STAT
  EXPECT_FALSE(parse_list({"x 10"}, 3));                    // garbage
}

TEST(ClientUidl, ParsesAndRefusesGarbage) {
  auto u = parse_uidl({"1 whqtswO00WBw418f9t5JxYwZ", "2 QhdPYR:00WBw1Ph7x7"}, 2);
  ASSERT_TRUE(u);
  EXPECT_EQ(u->at(2), "QhdPYR:00WBw1Ph7x7");
  EXPECT_TRUE(parse_uidl({"1 " + std::string(70, 'x')}, 1));
  EXPECT_FALSE(parse_uidl({"1 " + std::string(71, 'x')}, 1));  // overlong uid (CVE-2005-2335)
  EXPECT_FALSE(parse_uidl({"1 " + std::string(5000, 'x')}, 1));
  EXPECT_FALSE(parse_uidl({"1 a b"}, 1));                        // space in uid
  EXPECT_FALSE(parse_uidl({"1 "}, 1));                           // empty uid
  EXPECT_FALSE(parse_uidl({std::string("1 a\x80")}, 1));         // 8-bit
  EXPECT_FALSE(parse_uidl({std::string("1 a\x01")}, 1));         // control
  EXPECT_FALSE(parse_uidl({"2 abc"}, 1));                        // out of range
  EXPECT_FALSE(parse_uidl({"0 abc"}, 1));                        // zero
  EXPECT_FALSE(parse_uidl({"1 abc", "2 abc"}, 2));               // duplicate uid
  EXPECT_FALSE(parse_uidl({"1 abc", "1 abd"}, 2));               // duplicate number
  EXPECT_FALSE(parse_uidl({"99999999999999999999999 abc"}, 2));  // overflow
  EXPECT_FALSE(parse_uidl({"1abc"}, 2));                         // no separator
}

// Issue 17 item 9: what a client keeps of one listing is bounded (messages,
// octets per line, octets of unique-ids in total), and the errors say which
// limit was hit.
TEST(ClientListing, StatAboveTheConfiguredLimitIsRefused) {
  EXPECT_TRUE(parse_stat("1000 5", 1000));
  auto s = parse_stat("1001 5", 1000);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("limit of 1000"), std::string::npos) << s.error().message;
  EXPECT_FALSE(parse_stat("1000000 5", 999'999));
  EXPECT_TRUE(parse_stat("1000000 5"));  // the default
  EXPECT_FALSE(parse_stat(std::to_string(limits::kMaxFetchListing + 1) + " 5"));
}

TEST(ClientListing, UidlLinesLongerThanRfc1939AllowsAreRefusedAtOnce) {
  UidlParser p(1'000'000);
  ASSERT_TRUE(p.feed("1 " + std::string(limits::kMaxUidl, 'u')));
  // A 500-octet line (within RFC 2449's 512) is refused by its length, before
  // anything of it is kept.
  auto f = p.feed("2 " + std::string(498, 'x'));
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("at most " + std::to_string(limits::kMaxUidlListingLine)),
            std::string::npos)
      << f.error().message;
  EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(p.bytes(), limits::kMaxUidl);
  EXPECT_EQ(limits::kMaxUidlListingLine, 91u);
  // The message reaches `apop fetch --json` and terminals: printable ASCII
  // only, whatever the line held (regression: fuzz_client_reply found a
  // UTF-8 section sign in it).
  auto g = p.feed("3 " + std::string(200, '\xb1'));
  ASSERT_FALSE(g);
  for (const char c : g.error().message) {
    EXPECT_TRUE(c >= 0x20 && c < 0x7f) << g.error().message;
  }
}

TEST(ClientListing, UidlOctetsInTotalAreBounded) {
  const std::uint64_t max = 1000;
  UidlParser p(1'000'000, max);
  std::uint64_t n = 0;
  Result<void> f;
  do {
    ++n;
    f = p.feed(std::to_string(n) + " " + std::to_string(n) + std::string(60, 'u'));
  } while (f && n < 1000);
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("limit of 1000 octets"), std::string::npos) << f.error().message;
  EXPECT_LE(p.bytes(), max);
  EXPECT_LT(n, 20u);  // stopped as soon as the limit was crossed
}

TEST(ClientListing, UidlListingLookups) {
  UidlParser p(5);
  for (const char* l : {"3 ccc", "1 a",
                        "5 "
                        "eeeee",
                        "2 bb"})
    ASSERT_TRUE(p.feed(l)) << l;
  auto u = p.finish();
  ASSERT_TRUE(u);
  ASSERT_EQ(u->size(), 4u);
  EXPECT_EQ(u->msg(0), 1u);  // message-number order
  EXPECT_EQ(u->uid(3), "eeeee");
  EXPECT_EQ(u->find(3), "ccc");
  EXPECT_EQ(u->find(4), "");
  EXPECT_TRUE(u->contains_uid("bb"));
  EXPECT_FALSE(u->contains_uid("b"));
  EXPECT_EQ(u->bytes(), 11u);
  // Repeated unique-ids are found by finish().
  UidlParser dup(3);
  ASSERT_TRUE(dup.feed("1 x"));
  ASSERT_TRUE(dup.feed("3 x"));
  EXPECT_FALSE(dup.finish());
}

TEST(ClientListing, UidlListingAcrossStorageBlocks) {
  const std::uint64_t n = 40'000;  // 40000 x 70 octets: the ids span three 1 MiB blocks
  UidlParser p(n);
  auto uid = [](std::uint64_t i) {
    std::string s = std::to_string(i * 7919);
    return s + std::string(limits::kMaxUidl - s.size(), 'u');
  };
  for (std::uint64_t i = n; i >= 1; --i) ASSERT_TRUE(p.feed(std::to_string(i) + " " + uid(i)));
  auto u = p.finish();
  ASSERT_TRUE(u);
  ASSERT_EQ(u->size(), n);
  for (std::uint64_t i = 1; i <= n; ++i) {
    ASSERT_EQ(u->find(i), uid(i)) << i;
    ASSERT_TRUE(u->contains_uid(uid(i))) << i;
  }
  EXPECT_EQ(u->bytes(), n * limits::kMaxUidl);
}

TEST(ClientListing, MoreLinesThanAnnouncedAreRefusedAtTheFirstExtraLine) {
  UidlParser u(2);
  ASSERT_TRUE(u.feed("1 a"));
  ASSERT_TRUE(u.feed("2 b"));
  EXPECT_FALSE(u.feed("3 c"));
  ListParser l(2);
  ASSERT_TRUE(l.feed("1 10 and whatever follows"));
  ASSERT_TRUE(l.feed("2 20"));
  EXPECT_FALSE(l.feed("1 10"));
  ASSERT_EQ(l.sizes().size(), 2u);
  EXPECT_EQ(l.sizes().front(), (std::pair<std::uint64_t, std::uint64_t>{1, 10}));
}

// --- multi-line bodies ---------------------------------------------------

TEST(ClientBody, UnstuffsAndTerminates) {
  BodyDecoder d(1000);
  for (std::string_view l : {"Subject: x", "", "..leading dot", ".", "after"}) {
    auto r = d.feed(l);
    ASSERT_TRUE(r);
    if (*r) break;
  }
  EXPECT_TRUE(d.done());
  EXPECT_EQ(d.text(), "Subject: x\n\n.leading dot\n");
  EXPECT_EQ(d.wire_octets(), 12u + 2u + 14u);
  EXPECT_FALSE(d.feed("more"));  // after the terminator
}

TEST(ClientBody, BoundedSize) {
  BodyDecoder d(10);
  ASSERT_TRUE(d.feed("12345678"));
  EXPECT_FALSE(d.feed("abc"));
}

TEST(ClientBody, SizeConsistency) {
  BodyDecoder d(1000);
  ASSERT_TRUE(d.feed("abc"));
  ASSERT_TRUE(d.feed("de"));
  ASSERT_TRUE(d.feed("."));
  // LF form 7, CRLF form 9.
  EXPECT_TRUE(size_consistent(9, d));
  EXPECT_TRUE(size_consistent(7, d));
  EXPECT_FALSE(size_consistent(3, d));     // server sent much more than announced
  EXPECT_FALSE(size_consistent(5000, d));  // much less than announced
}

// --- mechanism choice ----------------------------------------------------

AuthContext ctx(bool tls, const char* greeting, std::vector<std::string> capa, bool allow = false) {
  AuthContext c;
  c.tls = tls;
  c.challenge = extract_challenge(greeting);
  c.caps = parse_capa(capa);
  c.allow_plaintext = allow;
  return c;
}

AuthMech pick(AuthMech m, const AuthContext& c) {
  auto r = choose_auth(m, c);
  EXPECT_TRUE(r) << r.error().message;
  return r ? r.value() : AuthMech::automatic;
}

TEST(ClientAuthChoice, AutoOrder) {
  const char* apop = "+OK <1.2@h>";
  const char* plain = "+OK ready";
  EXPECT_EQ(pick(AuthMech::automatic, ctx(false, apop, {"SASL PLAIN CRAM-MD5 SCRAM-SHA-256"})),
            AuthMech::scram_sha_256);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(true, apop, {"SASL PLAIN CRAM-MD5"})), AuthMech::apop);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(false, apop, {"SASL PLAIN CRAM-MD5"})),
            AuthMech::cram_md5);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(true, plain, {"SASL PLAIN"})), AuthMech::plain);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(false, apop, {"SASL PLAIN", "USER"})), AuthMech::apop);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(true, plain, {"USER"})), AuthMech::user);
  EXPECT_EQ(pick(AuthMech::automatic, ctx(false, plain, {"USER"}, true)), AuthMech::user);
}

TEST(ClientAuthChoice, NeverPlaintextWithoutTls) {
  auto r = choose_auth(AuthMech::automatic, ctx(false, "+OK ready", {"SASL PLAIN LOGIN", "USER"}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permanent);
  for (AuthMech m : {AuthMech::plain, AuthMech::login, AuthMech::user}) {
    auto e = choose_auth(m, ctx(false, "+OK ready", {"SASL PLAIN LOGIN", "USER"}));
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().code, Errc::permanent);
    EXPECT_TRUE(choose_auth(m, ctx(true, "+OK ready", {"SASL PLAIN LOGIN", "USER"})));
    EXPECT_TRUE(choose_auth(m, ctx(false, "+OK ready", {"SASL PLAIN LOGIN", "USER"}, true)));
  }
}

TEST(ClientAuthChoice, BadChallengeIsASecurityRefusal) {
  auto r = choose_auth(AuthMech::apop, ctx(false, "+OK <a b@c>", {}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::permanent);
  auto absent = choose_auth(AuthMech::apop, ctx(false, "+OK hello", {}));
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, Errc::not_found);
  // auto with nothing else usable: the bad challenge is the reason.
  auto a = choose_auth(AuthMech::automatic, ctx(false, "+OK <<x@y>", {}));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Errc::permanent);
  EXPECT_NE(a.error().message.find("challenge"), std::string::npos);
  // auto skips a bad challenge when something strong is offered.
  EXPECT_EQ(pick(AuthMech::automatic, ctx(false, "+OK <<x@y>", {"SASL SCRAM-SHA-256"})),
            AuthMech::scram_sha_256);
}

TEST(ClientAuthChoice, NotOffered) {
  auto r = choose_auth(AuthMech::scram_sha_256, ctx(true, "+OK", {"SASL PLAIN"}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::not_found);
  EXPECT_EQ(parse_auth_mech("SCRAM-SHA-256"), AuthMech::scram_sha_256);
  EXPECT_EQ(parse_auth_mech("auto"), AuthMech::automatic);
  EXPECT_FALSE(parse_auth_mech("gssapi"));
}

TEST(ClientDowngrade, DetectsLostFeatures) {
  Offer full{true, true, true};
  EXPECT_EQ(downgrade(full, full), "");
  EXPECT_EQ(downgrade(Offer{}, full), "");
  EXPECT_NE(downgrade(full, Offer{false, true, true}).find("TLS"), std::string::npos);
  EXPECT_NE(downgrade(full, Offer{true, false, true}).find("APOP"), std::string::npos);
  EXPECT_NE(downgrade(full, Offer{true, true, false}).find("SCRAM"), std::string::npos);
  Challenge valid = extract_challenge("+OK <a@b>");
  Offer o = make_offer(true, valid, parse_capa({"SASL SCRAM-SHA-256"}));
  EXPECT_EQ(o, full);
}

}  // namespace
}  // namespace apop::client
