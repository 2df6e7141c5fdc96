// probe: CAPA parsing, timestamp entropy estimates and grading on synthetic
// observations (no network).
#include "client/probe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "auth/challenge.hpp"

namespace apop::client::probe {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;

std::vector<std::string> ours(std::size_t n) {
  auth::ChallengeGenerator gen("mail.example.org");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back("+OK apop ready " + gen.next());
  return out;
}

// RFC 1939's example style: <pid.clock@host>, a forking server.
std::vector<std::string> pid_clock(std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back("+OK POP3 server ready <" + std::to_string(1896 + 3 * i) + "." +
                  std::to_string(697170952 + 2 * i) + "@dbc.mtview.ca.us>");
  }
  return out;
}

// Dovecot 2.3: <pid-hex.counter.clock-hex.base64(16 random octets)@host>.
std::vector<std::string> dovecot_like(std::size_t n) {
  static const char* kB64[] = {
      "0qwa6tPmO0efXi+DlWt41g==", "jG+lJyPam2w33N/YQoy96A==", "ygyEwmLQhOjY7UHQaBVEig==",
      "Qk3vXz9a1Lq0cT7uYw2n8A==", "b7Hk2pQ0sVx9Wm4eRt1c5g==", "Zp8aQ3fL0kT6yHn2Vb9w1A==",
      "c2Rf9Lk0Pz7Qw3Ex1Tv8jg==", "M9xKq2Wb7Ns0Ld4Hf6Ye3A=="};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < n; ++i) {
    char clock[16];
    std::snprintf(clock, sizeof clock, "%x", 0x6b04257fu + 3u * static_cast<unsigned>(i));
    out.push_back("+OK Dovecot (Debian) ready. <631b." + std::to_string(i + 1) + "." + clock + "." +
                  kB64[i % 8] + "@vm>");
  }
  return out;
}

Capabilities capa(std::vector<std::string> lines) { return parse_capa(lines); }

TlsObservation good_tls(std::vector<std::string> caps) {
  TlsObservation t;
  t.attempted = true;
  t.ok = true;
  t.info.active = true;
  t.info.protocol = "TLSv1.3";
  t.info.cipher = "TLS_AES_256_GCM_SHA384";
  t.info.verified = true;
  t.info.hostname_match = true;
  t.info.not_after = kNow + 90 * 86400;
  t.capa = parse_capa(caps);
  return t;
}

// The best configuration: STLS, no plaintext before TLS, APOP only on the
// implicit-TLS port, SCRAM offered, good certificates.
ProbeInput best() {
  ProbeInput in;
  in.host = "mail.example.org";
  in.port = 110;
  in.reachable = true;
  in.now = kNow;
  in.greetings.assign(8, "+OK apop ready");
  in.capa = capa(
      {"TOP", "UIDL", "STLS", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL SCRAM-SHA-256"});
  in.stls_reply = "+OK Begin TLS negotiation";
  in.stls = good_tls({"TOP", "UIDL", "USER", "SASL SCRAM-SHA-256 PLAIN LOGIN"});
  in.tls_port = 995;
  in.tls_reachable = true;
  in.tls_greetings = ours(8);
  in.implicit_tls = good_tls({"TOP", "UIDL", "USER", "SASL SCRAM-SHA-256 PLAIN LOGIN"});
  return in;
}

bool has(const Report& r, const std::string& id) {
  return std::any_of(r.findings.begin(), r.findings.end(),
                     [&](const Finding& f) { return f.id == id; });
}

// ---------------------------------------------------------------------------

TEST(ProbeCapa, ParsesTagsCaseInsensitivelyWithArguments) {
  auto c = capa({"top", "UIDL", "stls", "User", "SASL plain SCRAM-SHA-256 cram-md5",
                 "IMPLEMENTATION Dovecot 2.3", "LOGIN-DELAY 900", "EXPIRE NEVER", "RESP-CODES",
                 "AUTH-RESP-CODE", "PIPELINING"});
  EXPECT_TRUE(c.received);
  EXPECT_TRUE(c.top && c.uidl && c.stls && c.user && c.resp_codes && c.auth_resp_code &&
              c.pipelining);
  EXPECT_EQ(c.sasl, (std::vector<std::string>{"PLAIN", "SCRAM-SHA-256", "CRAM-MD5"}));
  EXPECT_TRUE(c.has_sasl("scram-sha-256"));
  EXPECT_FALSE(c.has_sasl("LOGIN"));
  ASSERT_TRUE(c.implementation);
  EXPECT_EQ(*c.implementation, "Dovecot 2.3");
  EXPECT_EQ(*c.login_delay, "900");
  EXPECT_EQ(*c.expire, "NEVER");
}

TEST(ProbeCapa, KeepsAtMostItsOwnLineBound) {
  std::vector<std::string> many(kMaxCapaLines + 1, "X-FOO");
  many.back() = "STLS";
  auto c = capa(many);
  EXPECT_EQ(c.lines.size(), kMaxCapaLines);
  EXPECT_FALSE(c.stls);
}

TEST(ProbeCapa, EmptyAndUnknownLines) {
  auto c = capa({"", "X-FOO bar", "SASL"});
  EXPECT_TRUE(c.sasl.empty());
  EXPECT_FALSE(c.user || c.stls);
  EXPECT_EQ(c.lines.size(), 3u);
  EXPECT_FALSE(c.implementation);
}

// ---------------------------------------------------------------------------

TEST(ProbeEntropy, OurOwnTimestampsEstimateAtLeast100Bits) {
  auto a = analyze_timestamps(ours(12));
  ASSERT_EQ(a.timestamps.size(), 12u);
  EXPECT_EQ(a.invalid, 0u);
  EXPECT_FALSE(a.repeats);
  EXPECT_GE(a.entropy_bits, 100.0);
  EXPECT_FALSE(a.predictable);
  EXPECT_FALSE(a.weak);
  ASSERT_EQ(a.fields.size(), 2u);  // HEX . PID
  EXPECT_EQ(a.fields[0].kind, FieldKind::random);
  EXPECT_EQ(a.fields[1].kind, FieldKind::constant);  // one process, one pid
}

TEST(ProbeEntropy, PidClockSequenceIsPredictable) {
  auto a = analyze_timestamps(pid_clock(8));
  EXPECT_EQ(a.invalid, 0u);
  EXPECT_FALSE(a.repeats);
  ASSERT_EQ(a.fields.size(), 2u);
  EXPECT_EQ(a.fields[0].kind, FieldKind::counter);
  EXPECT_EQ(a.fields[1].kind, FieldKind::counter);
  EXPECT_LT(a.entropy_bits, 8.0);  // log2(4) + log2(3)
  EXPECT_TRUE(a.predictable);
}

TEST(ProbeEntropy, ConstantPidAndClockWithSmallSteps) {
  std::vector<std::string> g;
  for (int i = 0; i < 10; ++i)
    g.push_back("+OK ready <4711." + std::to_string(1700000000 + i * 17) + "@host>");
  auto a = analyze_timestamps(g);
  EXPECT_EQ(a.fields[0].kind, FieldKind::constant);
  EXPECT_EQ(a.fields[0].bits, 0.0);
  EXPECT_EQ(a.fields[1].kind, FieldKind::counter);
  EXPECT_NEAR(a.fields[1].bits, std::log2(18.0), 1e-9);
  EXPECT_TRUE(a.predictable);
}

TEST(ProbeEntropy, DovecotStyleHasPredictablePartsButRandomTail) {
  auto a = analyze_timestamps(dovecot_like(8));
  EXPECT_EQ(a.invalid, 0u);
  ASSERT_EQ(a.fields.size(), 4u);
  EXPECT_EQ(a.fields[0].kind, FieldKind::constant);  // pid
  EXPECT_EQ(a.fields[1].kind, FieldKind::counter);   // connection counter
  EXPECT_EQ(a.fields[2].kind, FieldKind::counter);   // clock
  EXPECT_EQ(a.fields[3].kind, FieldKind::random);    // 16 random octets, base64
  EXPECT_GE(a.fields[3].bits, 100.0);
  EXPECT_FALSE(a.predictable);
}

TEST(ProbeEntropy, RepeatedTimestampIsZeroBits) {
  std::vector<std::string> g(6, "+OK hi <deadbeef.42@host>");
  auto a = analyze_timestamps(g);
  EXPECT_TRUE(a.repeats);
  EXPECT_EQ(a.distinct, 1u);
  EXPECT_EQ(a.entropy_bits, 0.0);
  EXPECT_TRUE(a.predictable);
}

TEST(ProbeEntropy, RandomNonMonotonicNumbersAreNumeric) {
  std::vector<std::string> g = {"+OK <90210.1@h>", "+OK <123.1@h>", "+OK <77777.1@h>",
                                "+OK <5000.1@h>"};
  auto a = analyze_timestamps(g);
  EXPECT_EQ(a.fields[0].kind, FieldKind::numeric);
  EXPECT_NEAR(a.fields[0].bits, std::log2(90210.0 - 123.0 + 1.0), 1e-9);
}

TEST(ProbeEntropy, FieldEstimateCharacterClasses) {
  // 32 hex digits do not fit 64 bits: a string, every position varies.
  auto hex =
      estimate_field({"a1b2c3d4e5f60718a1b2c3d4e5f60718", "0f1e2d3c4b5a69790f1e2d3c4b5a6979"});
  EXPECT_EQ(hex.kind, FieldKind::random);
  EXPECT_NEAR(hex.bits, 32 * 4.0, 1e-9);
  auto b64 = estimate_field({"ab+/", "cd+Z"});
  EXPECT_EQ(b64.kind, FieldKind::random);
  EXPECT_NEAR(b64.bits, 3 * 6.0, 1e-9);  // '+' at position 2 never varies
  auto single = estimate_field({"deadbeefcafe"});
  EXPECT_EQ(single.kind, FieldKind::random);  // one sample: no trend, no spread
  EXPECT_NEAR(single.bits, 12 * 4.0, 1e-9);
}

TEST(ProbeEntropy, TwoSamplesDoNotClaimATrend) {
  auto f = estimate_field({"100", "200"});
  EXPECT_EQ(f.kind, FieldKind::numeric);
}

TEST(ProbeEntropy, NoTimestamp) {
  auto a = analyze_timestamps({"+OK POP3 ready", "+OK POP3 ready"});
  EXPECT_FALSE(a.offered());
  EXPECT_EQ(a.greetings, 2u);
}

TEST(ProbeEntropy, VaryingFieldCountsFallBackToWholeLocalPart) {
  auto a = analyze_timestamps({"+OK <a.b@h>", "+OK <abc@h>", "+OK <x.y.z@h>"});
  EXPECT_FALSE(a.uniform_structure);
  EXPECT_EQ(a.fields.size(), 1u);
}

// Issue 17 item 12: a connection counter (or pid, or clock) is not entropy.
// <1234.N@host>, N counting connections: ~1 bit, a predictable verdict (as a
// '.'-field of its own it already was; the next tests cover a counter next
// to letters, which was counted per character).
TEST(ProbeEntropy, ConnectionCounterFieldIsPredictable) {
  for (int start : {1, 7, 95, 99999995}) {
    std::vector<std::string> g;
    for (int i = 0; i < 8; ++i)
      g.push_back("+OK ready <1234." + std::to_string(start + i) + "@host.example>");
    auto a = analyze_timestamps(g);
    EXPECT_LE(a.entropy_bits, 1.0) << start;
    EXPECT_TRUE(a.predictable) << start;
  }
}

// The same counter written next to letters ("c99999995" .. "c100000002"):
// counted as 9 changing characters x log2(62) = 53 bits before, 1 bit now.
TEST(ProbeEntropy, CounterNextToLettersIsNotCountedPerCharacter) {
  std::vector<std::string> g;
  for (int i = 0; i < 8; ++i)
    g.push_back("+OK ready <1234.c" + std::to_string(99999995 + i) + "@host.example>");
  auto a = analyze_timestamps(g);
  EXPECT_LE(a.entropy_bits, 1.0);
  EXPECT_TRUE(a.predictable);
  ASSERT_EQ(a.fields.size(), 2u);
  EXPECT_EQ(a.fields[1].kind, FieldKind::counter);
}

// A pid and a microsecond clock in one field with letters: the pid is
// constant, the clock a counter (log2 of its largest step, ~21.7 bits), not
// 7+ changing characters x log2(62) (~48 bits, "weak" before).
TEST(ProbeEntropy, PidAndClockInsideOneFieldArePredictable) {
  std::vector<std::string> g;
  for (int i = 0; i < 8; ++i) {
    g.push_back("+OK <p4711t" + std::to_string(1701916500123456LL + 3456789LL * i) +
                "@host.example>");
  }
  auto a = analyze_timestamps(g);
  EXPECT_LT(a.entropy_bits, 22.0);  // log2(1 + 3456789) ~ 21.7
  EXPECT_TRUE(a.predictable);
}

// apop serve's own timestamps (random hex + counter . pid) still pass, and
// so does Dovecot's random base64 tail.
TEST(ProbeEntropy, RandomTimestampsStillPassWithTheRunSplit) {
  for (std::size_t n : {2u, 3u, 8u, 32u, 64u}) {
    auto a = analyze_timestamps(ours(n));
    EXPECT_GE(a.entropy_bits, 100.0) << n;
    EXPECT_FALSE(a.predictable);
    EXPECT_FALSE(a.weak);
  }
  auto d = analyze_timestamps(dovecot_like(8));
  EXPECT_GE(d.entropy_bits, 100.0);
}

// ---------------------------------------------------------------------------

TEST(ProbeGrade, BestConfigurationIsA) {
  auto r = analyze(best());
  EXPECT_EQ(r.grade, 'A') << to_text(r);
  EXPECT_TRUE(r.tls_available);
  EXPECT_FALSE(r.apop_in_clear);
  EXPECT_TRUE(r.apop_in_tls);
  EXPECT_TRUE(r.plaintext_before_tls.empty());
  EXPECT_FALSE(has(r, "no-scram"));
}

TEST(ProbeGrade, NoScramIsANoteOnly) {
  auto in = best();
  in.capa = capa({"STLS"});
  in.stls.capa = capa({"USER"});
  in.implicit_tls.capa = capa({"USER"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'A');
  EXPECT_TRUE(has(r, "no-scram"));
  EXPECT_TRUE(std::any_of(
      r.recommendations.begin(), r.recommendations.end(),
      [](const std::string& s) { return s.find("SCRAM-SHA-256") != std::string::npos; }));
}

TEST(ProbeGrade, ApopBeforeStlsIsANote) {
  auto in = best();
  in.greetings = ours(8);
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'A');
  EXPECT_TRUE(has(r, "apop-before-stls"));
  EXPECT_TRUE(std::any_of(
      r.recommendations.begin(), r.recommendations.end(),
      [](const std::string& s) { return s.find("apop-requires-tls") != std::string::npos; }));
}

// TLS only on the implicit port: APOP on the plain port is APOP in the clear.
ProbeInput implicit_only() {
  auto in = best();
  in.capa = capa({"TOP", "UIDL", "SASL SCRAM-SHA-256"});
  in.stls_reply.reset();
  in.stls = {};
  return in;
}

TEST(ProbeGrade, ApopOnPortWithoutStlsIsB) {
  auto in = implicit_only();
  in.greetings = ours(8);
  auto r = analyze(in);
  EXPECT_TRUE(r.tls_available);
  EXPECT_EQ(r.grade, 'B');
  EXPECT_TRUE(has(r, "apop-outside-tls"));
}

TEST(ProbeGrade, CramMd5WithoutStlsIsBAndBeforeStlsANote) {
  auto in = implicit_only();
  in.capa = capa({"SASL SCRAM-SHA-256 CRAM-MD5"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'B');
  EXPECT_TRUE(has(r, "cram-md5-outside-tls"));
  in = best();
  in.capa = capa({"STLS", "SASL SCRAM-SHA-256 CRAM-MD5"});
  r = analyze(in);
  EXPECT_EQ(r.grade, 'A');
  EXPECT_TRUE(has(r, "cram-md5-before-stls"));
}

TEST(ProbeGrade, PlaintextBeforeTlsWithStlsIsC) {
  auto in = best();
  in.capa = capa({"STLS", "USER", "SASL PLAIN LOGIN SCRAM-SHA-256"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'C');
  EXPECT_EQ(r.plaintext_before_tls, (std::vector<std::string>{"USER", "AUTH PLAIN", "AUTH LOGIN"}));
  EXPECT_TRUE(has(r, "plaintext-login-before-tls"));
}

// Issue 20: a bearer token is as replayable as a password.
TEST(ProbeGrade, OAuthMechanismsBeforeTlsArePlaintextLogins) {
  auto in = best();
  in.capa = capa({"STLS", "SASL SCRAM-SHA-256 XOAUTH2 OAUTHBEARER"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'C');
  EXPECT_EQ(r.plaintext_before_tls, (std::vector<std::string>{"AUTH XOAUTH2", "AUTH OAUTHBEARER"}));
  EXPECT_TRUE(has(r, "plaintext-login-before-tls"));
}

bool recommends(const Report& r, const std::string& text) {
  return std::any_of(r.recommendations.begin(), r.recommendations.end(),
                     [&](const std::string& s) { return s.find(text) != std::string::npos; });
}

// Issue 17 item 12: over loopback, apop serve (and Dovecot) count the
// connection as secure and offer USER/PLAIN; the advice names that cause
// first, not a flag (--allow-plaintext-auth) that may well not be set.
bool first_recommendation_names(const Report& r, const std::string& id, const std::string& a,
                                const std::string& b) {
  for (const auto& f : r.findings) {
    if (f.id != id) continue;
    const auto pa = f.recommendation.find(a), pb = f.recommendation.find(b);
    return pa != std::string::npos && (pb == std::string::npos || pa < pb);
  }
  return false;
}

TEST(ProbeGrade, PlaintextOverLoopbackNamesLoopbackAsTheCause) {
  auto in = best();
  in.host = "127.0.0.1";
  in.loopback = true;
  in.capa = capa({"STLS", "USER", "SASL PLAIN SCRAM-SHA-256"});
  auto r = analyze(in);
  ASSERT_TRUE(has(r, "plaintext-login-before-tls")) << to_text(r);
  EXPECT_EQ(r.grade, 'C');  // a loopback probe cannot tell loopback-only offers apart
  EXPECT_TRUE(recommends(r, "another host"));
  EXPECT_TRUE(recommends(r, "--no-secure-loopback"));
  EXPECT_TRUE(first_recommendation_names(r, "plaintext-login-before-tls", "loopback",
                                         "--allow-plaintext-auth"))
      << to_text(r);
  EXPECT_NE(to_text(r).find("connected over loopback"), std::string::npos) << to_text(r);
  // Without any TLS over loopback (apop serve's defaults probed from
  // 127.0.0.1): the same cause is named.
  in.stls = {};
  in.capa = capa({"USER", "UIDL"});
  in.tls_port.reset();
  in.implicit_tls = {};
  r = analyze(in);
  ASSERT_TRUE(has(r, "plaintext-login-no-tls"));
  EXPECT_TRUE(
      first_recommendation_names(r, "plaintext-login-no-tls", "loopback", "--allow-plaintext-auth"))
      << to_text(r);
  EXPECT_NE(to_text(r).find("connected over loopback"), std::string::npos);
}

TEST(ProbeGrade, PlaintextFromElsewhereNamesTheServerPolicy) {
  auto in = best();
  in.capa = capa({"STLS", "USER", "SASL PLAIN SCRAM-SHA-256"});
  auto r = analyze(in);
  EXPECT_TRUE(has(r, "plaintext-login-before-tls"));
  EXPECT_EQ(r.grade, 'C');
  EXPECT_TRUE(recommends(r, "disable_plaintext_auth"));
  EXPECT_TRUE(recommends(r, "--allow-plaintext-auth"));
  EXPECT_FALSE(recommends(r, "loopback client).") && recommends(r, "another host"));
  EXPECT_EQ(to_text(r).find("connected over loopback"), std::string::npos);
  EXPECT_NE(to_text(r).find("non-loopback client"), std::string::npos);
}

// Issue 17 item 6: CRAM-MD5 before TLS is the same class of risk as APOP
// before TLS (an offline-crackable MD5 challenge-response over a
// plaintext-equivalent secret), with the same grade and the same policy.
TEST(ProbeGrade, CramMd5BeforeTlsIsReportedLikeApop) {
  // Before working STLS: a note (as apop-before-stls), naming the policy.
  auto in = best();
  in.capa = capa({"STLS", "SASL SCRAM-SHA-256 CRAM-MD5"});
  auto r = analyze(in);
  EXPECT_TRUE(has(r, "cram-md5-before-stls"));
  EXPECT_EQ(r.grade, 'A');
  EXPECT_TRUE(recommends(r, "--md5-challenge-requires-tls"));
  auto apop = best();
  apop.greetings = ours(8);
  auto ra = analyze(apop);
  EXPECT_TRUE(has(ra, "apop-before-stls"));
  EXPECT_TRUE(recommends(ra, "--md5-challenge-requires-tls"));

  // On a port without STLS (TLS elsewhere): B for both.
  in = implicit_only();
  in.capa = capa({"SASL SCRAM-SHA-256 CRAM-MD5"});
  r = analyze(in);
  EXPECT_EQ(r.grade, 'B');
  EXPECT_TRUE(has(r, "cram-md5-outside-tls"));
  EXPECT_TRUE(recommends(r, "--md5-challenge-requires-tls"));
  for (const auto& f : r.findings) {
    if (f.id == "cram-md5-outside-tls") {
      EXPECT_NE(f.message.find("offline"), std::string::npos);
      EXPECT_NE(f.message.find("plaintext-equivalent"), std::string::npos);
    }
  }

  // Without any TLS: a note for CRAM-MD5 as for APOP (apop-in-clear).
  ProbeInput none;
  none.host = "mail.example.org";
  none.reachable = true;
  none.now = kNow;
  none.greetings.assign(8, "+OK ready");
  none.capa = capa({"SASL CRAM-MD5"});
  r = analyze(none);
  EXPECT_TRUE(has(r, "cram-md5-in-clear"));
  EXPECT_TRUE(recommends(r, "--md5-challenge-requires-tls"));
}

TEST(ProbeGrade, PlaintextWithoutAnyTlsIsD) {
  ProbeInput in;
  in.host = "127.0.0.1";
  in.reachable = true;
  in.now = kNow;
  in.greetings = ours(8);
  in.capa = capa({"TOP", "UIDL", "USER", "RESP-CODES"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'D');
  EXPECT_TRUE(has(r, "plaintext-login-no-tls"));
  EXPECT_FALSE(r.tls_available);
}

TEST(ProbeGrade, ApopOnlyWithoutTlsIsC) {
  ProbeInput in;
  in.host = "127.0.0.1";
  in.reachable = true;
  in.greetings = ours(8);
  in.capa = capa({"TOP", "UIDL", "SASL SCRAM-SHA-256"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'C');
  EXPECT_TRUE(has(r, "no-tls"));
  EXPECT_TRUE(has(r, "apop-in-clear"));
}

TEST(ProbeGrade, RepeatedTimestampIsF) {
  auto in = best();
  in.tls_greetings.assign(8, "+OK ready <1234.5678@host>");
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'F');
  EXPECT_TRUE(has(r, "apop-timestamp-repeats"));
  EXPECT_EQ(r.findings.front().severity, Severity::critical);  // most severe first
}

TEST(ProbeGrade, SameTimestampOnBothPortsIsF) {
  auto in = best();
  in.greetings = {in.tls_greetings[3]};
  EXPECT_EQ(analyze(in).grade, 'F');
}

TEST(ProbeGrade, PredictableTimestampIsD) {
  auto in = best();
  in.tls_greetings = pid_clock(8);
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'D');
  EXPECT_TRUE(has(r, "apop-timestamp-predictable"));
}

TEST(ProbeGrade, WeakTimestampIsC) {
  auto in = best();
  in.tls_greetings.clear();
  // 10 hex digits vary: 40 bits.
  const char* kVals[] = {"1a2b3c4d5e", "f9e8d7c6b5", "0123456789", "abcdefabcd",
                         "5e4d3c2b1a", "9a8b7c6d5e", "c0ffee1234", "77aa55bb33"};
  for (auto* v : kVals) in.tls_greetings.push_back(std::string("+OK <x") + v + "@h>");
  auto r = analyze(in);
  EXPECT_TRUE(r.apop_tls.weak) << r.apop_tls.entropy_bits;
  EXPECT_EQ(r.grade, 'C');
}

TEST(ProbeGrade, InvalidTimestampIsC) {
  auto in = best();
  in.tls_greetings.clear();
  for (int i = 0; i < 8; ++i) {
    in.tls_greetings.push_back("+OK <" + std::string(32, static_cast<char>('a' + i)) + " " +
                               std::to_string(i) + "@host>");
  }
  auto r = analyze(in);
  EXPECT_GT(r.apop_tls.invalid, 0u);
  EXPECT_TRUE(has(r, "apop-timestamp-invalid"));
  EXPECT_GE(r.grade, 'C');
}

TEST(ProbeGrade, MissingAtIsInvalid) {
  auto a = analyze_timestamps({"+OK <abcdef0123456789>"});
  EXPECT_EQ(a.invalid, 1u);
}

TEST(ProbeGrade, UnverifiedCertificateIsCUnlessInsecureOk) {
  auto in = best();
  in.implicit_tls.info.verified = false;
  in.implicit_tls.info.verify_error = "self-signed certificate";
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'C');
  EXPECT_TRUE(has(r, "tls-certificate-unverified"));
  in.insecure_ok = true;
  EXPECT_EQ(analyze(in).grade, 'A');
}

TEST(ProbeGrade, HostnameMismatchIsC) {
  auto in = best();
  in.stls.info.hostname_match = false;
  EXPECT_EQ(analyze(in).grade, 'C');
}

TEST(ProbeGrade, ExpiredCertificateIsDAndExpiringSoonIsB) {
  auto in = best();
  in.stls.info.not_after = kNow - 10;
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'D');
  EXPECT_TRUE(has(r, "tls-certificate-expired"));
  in.stls.info.not_after = kNow + 5 * 86400;
  r = analyze(in);
  EXPECT_EQ(r.grade, 'B');
  EXPECT_TRUE(has(r, "tls-certificate-expiring"));
  EXPECT_TRUE(
      std::any_of(r.recommendations.begin(), r.recommendations.end(),
                  [](const std::string& s) { return s.find("Renew") != std::string::npos; }));
}

TEST(ProbeGrade, OldTlsIsD) {
  auto in = best();
  in.implicit_tls.info.protocol = "TLSv1.1";
  EXPECT_EQ(analyze(in).grade, 'D');
}

TEST(ProbeGrade, StlsInjectionIsDAndDoesNotCountAsTls) {
  auto in = best();
  in.stls.injection = true;
  in.stls.ok = false;
  in.tls_port.reset();
  in.tls_greetings.clear();
  in.implicit_tls = {};
  auto r = analyze(in);
  EXPECT_TRUE(has(r, "stls-injection"));
  EXPECT_FALSE(r.tls_available);
  EXPECT_EQ(r.grade, 'D');
}

TEST(ProbeGrade, BrokenStlsIsC) {
  auto in = best();
  in.stls.ok = false;
  in.stls.error = "TLS handshake failed";
  EXPECT_EQ(analyze(in).grade, 'C');
}

TEST(ProbeGrade, NonOkGreetingIsF) {
  auto in = best();
  in.greetings = {"-ERR go away"};
  EXPECT_EQ(analyze(in).grade, 'F');
}

TEST(ProbeGrade, NoCapaIsNotedAndNotGradedAsPlaintext) {
  auto in = best();
  in.capa = Capabilities{};
  auto r = analyze(in);
  EXPECT_TRUE(has(r, "capa-missing"));
  EXPECT_TRUE(r.plaintext_before_tls.empty());
}

TEST(ProbeGrade, ImplementationIsDisclosedAsNote) {
  auto in = best();
  in.implicit_tls.capa = capa({"SASL SCRAM-SHA-256", "IMPLEMENTATION apop 0.1.0"});
  auto r = analyze(in);
  EXPECT_EQ(r.grade, 'A');
  EXPECT_TRUE(has(r, "implementation-disclosed"));
}

// ---------------------------------------------------------------------------

TEST(ProbeRender, JsonHasGradeAtTopLevelAndAllSections) {
  auto in = best();
  in.greetings = pid_clock(8);
  auto r = analyze(in);
  auto j = nlohmann::json::parse(to_json(r));
  EXPECT_EQ(j["grade"], std::string(1, r.grade));
  EXPECT_EQ(j["grade"], "D");
  EXPECT_TRUE(j["apop"]["in_clear"].get<bool>());
  EXPECT_TRUE(j["apop"]["plain"]["predictable"].get<bool>());
  EXPECT_EQ(j["apop"]["plain"]["fields"].size(), 2u);
  EXPECT_EQ(j["stls"]["protocol"], "TLSv1.3");
  EXPECT_EQ(j["stls"]["days_left"], 90);
  EXPECT_EQ(j["implicit_tls"]["port"], 995);
  EXPECT_TRUE(j["capabilities"]["stls"].get<bool>());
  EXPECT_FALSE(j["findings"].empty());
  EXPECT_FALSE(j["recommendations"].empty());
}

TEST(ProbeRender, TextEndsWithGrade) {
  auto r = analyze(best());
  auto t = to_text(r);
  EXPECT_NE(t.find("grade: A\n"), std::string::npos) << t;
  EXPECT_NE(t.find("TLSv1.3"), std::string::npos);
}

// Found while writing fuzz_probe's invariants: a greeting or CAPA line with invalid UTF-8 made
// to_json() throw (nlohmann's strict dump), aborting `apop probe --json`, and
// to_text() copied escape sequences from the server to the terminal.
TEST(ProbeRender, HostileBytesAreSafeInJsonAndText) {
  auto in = best();
  in.greetings = {"+OK \xff\xfe\x1b[2J ready <1.2@h\x80>", "+OK \xc3\x28 <1.3@h>"};
  in.capa = capa({"SASL \xe2\x82", "IMPLEMENTATION \x1b]0;owned\x07"});
  in.stls.info.subject = std::string("CN=\0\x9b", 5);
  auto r = analyze(in);
  std::string json;
  ASSERT_NO_THROW(json = to_json(r));
  auto j = nlohmann::json::parse(json);
  EXPECT_EQ(j["grade"], std::string(1, r.grade));
  const std::string t = to_text(r);
  for (char c : t) {
    const auto u = static_cast<unsigned char>(c);
    EXPECT_TRUE(c == '\n' || (u >= 0x20 && u < 0x7f)) << "byte " << int(u) << " in\n" << t;
  }
  EXPECT_NE(t.find("\\x1b[2J"), std::string::npos) << t;
}

}  // namespace
}  // namespace apop::client::probe
