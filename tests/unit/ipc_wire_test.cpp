#include "ipc/wire.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace apop::ipc {
namespace {

std::string encoded(const Request& r, std::uint32_t id = 7) {
  std::string out;
  EXPECT_TRUE(encode_request(id, r, out).ok());
  return out;
}
std::string encoded(const Reply& r, std::uint32_t id = 7) {
  std::string out;
  EXPECT_TRUE(encode_reply(id, r, out).ok());
  return out;
}

pop3::AuthResult full_result() {
  pop3::AuthResult a;
  a.ok = true;
  a.credential = "device:phone";
  a.failure = pop3::AuthFailure::none;
  a.delay = std::chrono::milliseconds(1234);
  a.limits.login_delay = 300;
  a.limits.expire_days = pop3::kExpireNever;
  a.limits.last_login = -5;  // any i64 survives
  a.mail_location = "mbox:/var/mail/alice";
  return a;
}

void expect_same(const pop3::AuthResult& a, const pop3::AuthResult& b) {
  EXPECT_EQ(a.ok, b.ok);
  EXPECT_EQ(a.credential, b.credential);
  EXPECT_EQ(a.failure, b.failure);
  EXPECT_EQ(a.delay, b.delay);
  EXPECT_EQ(a.limits, b.limits);
  EXPECT_EQ(a.mail_location, b.mail_location);
}

// One of each request, with every optional both ways.
std::vector<Request> sample_requests() {
  return {
      Hello{kProtocolVersion, 3},
      VerifyApop{"alice", "<1.2@host>", "c4c9334bac560ecc979e58001b3e22fb", true, "192.0.2.7"},
      VerifyPlain{"alice", "pass word", false, "2001:db8:1:2::/64"},
      SaslStart{9, "SCRAM-SHA-256", std::string_view("biwsbj1h"), true, ""},
      SaslStart{10, "PLAIN", std::nullopt, false, "x"},
      SaslStart{11, "PLAIN", std::string_view(), false, "x"},  // "=": an empty initial response
      SaslStep{9, std::string_view("cmVzcG9uc2U=")},
      SaslStep{9, std::nullopt},
      SaslEnd{9},
      RecordLogin{"alice", 1'700'000'000},
      Mechanisms{},
      LockMaildrop{"alice"},
      UnlockMaildrop{"alice"},
      LockMaildrop{""},
  };
}

std::vector<Reply> sample_replies() {
  pop3::AuthResult fail;
  fail.failure = pop3::AuthFailure::throttled;
  fail.delay = std::chrono::milliseconds(15000);
  return {
      Ack{},
      full_result(),
      fail,
      pop3::SaslReply::challenge("cj1ub25jZSxzPXNhbHQsaT00MDk2"),
      pop3::SaslReply::malformed(),
      pop3::SaslReply::done("alice", full_result()),
      MechanismList{{{"SCRAM-SHA-256", false}, {"PLAIN", true}}},
      MechanismList{},
      ErrorReply{ErrorCode::malformed},
      ErrorReply{ErrorCode::refused},
      ErrorReply{ErrorCode::rate_limited},
      LockStatus{LockOutcome::locked},
      LockStatus{LockOutcome::in_use},
      LockStatus{LockOutcome::temporary},
  };
}

TEST(IpcWire, HeaderLayout) {
  const std::string m = encoded(Request{Mechanisms{}}, 0x01020304);
  EXPECT_EQ(m, std::string("\x02\x08\x00\x00\x01\x02\x03\x04", 8));
}

TEST(IpcWire, EveryRequestRoundTrips) {
  for (const Request& r : sample_requests()) {
    const std::string m = encoded(r, 42);
    auto d = decode_request(m);
    ASSERT_TRUE(d.ok()) << static_cast<int>(request_type(r));
    EXPECT_EQ(d->id, 42u);
    ASSERT_EQ(d->body.index(), r.index());
    // Re-encoding the decoded views gives the same bytes: every field survived.
    EXPECT_EQ(encoded(d->body, 42), m);
  }
  // The views point into the packet: keep it.
  const std::string apop = encoded(Request{VerifyApop{"u", "<t@h>", "d", true, "a"}});
  auto d = decode_request(apop);
  ASSERT_TRUE(d.ok());
  const auto& v = std::get<VerifyApop>(d->body);
  EXPECT_EQ(v.user, "u");
  EXPECT_EQ(v.timestamp, "<t@h>");
  EXPECT_EQ(v.digest, "d");
  EXPECT_TRUE(v.tls);
  EXPECT_EQ(v.address, "a");
  const std::string start =
      encoded(Request{SaslStart{11, "PLAIN", std::string_view(), false, "x"}});
  auto s = decode_request(start);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(std::get<SaslStart>(s->body).initial.has_value());
  EXPECT_TRUE(std::get<SaslStart>(s->body).initial->empty());
}

TEST(IpcWire, EveryReplyRoundTrips) {
  for (const Reply& r : sample_replies()) {
    const std::string m = encoded(r, 0xFFFFFFFF);
    auto d = decode_reply(m);
    ASSERT_TRUE(d.ok()) << static_cast<int>(reply_type(r));
    EXPECT_EQ(d->id, 0xFFFFFFFFu);
    ASSERT_EQ(d->body.index(), r.index());
    EXPECT_EQ(encoded(d->body, 0xFFFFFFFF), m);
  }
  auto d = decode_reply(encoded(Reply{pop3::SaslReply::done("alice", full_result())}));
  ASSERT_TRUE(d.ok());
  const auto& s = std::get<pop3::SaslReply>(d->body);
  EXPECT_EQ(s.kind, pop3::SaslReply::Kind::done);
  EXPECT_EQ(s.user, "alice");
  expect_same(s.result, full_result());
  auto l = decode_reply(encoded(Reply{MechanismList{{{"SCRAM-SHA-256", false}, {"PLAIN", true}}}}));
  ASSERT_TRUE(l.ok());
  const auto& mechs = std::get<MechanismList>(l->body).mechanisms;
  ASSERT_EQ(mechs.size(), 2u);
  EXPECT_EQ(mechs[1].name, "PLAIN");
  EXPECT_TRUE(mechs[1].plaintext);
  EXPECT_FALSE(mechs[0].plaintext);
}

TEST(IpcWire, DecodersRefuseEveryTruncationAndTrailingByte) {
  for (const Request& r : sample_requests()) {
    const std::string m = encoded(r);
    for (std::size_t n = 0; n < m.size(); ++n)
      EXPECT_FALSE(decode_request(m.substr(0, n)).ok()) << n;
    EXPECT_FALSE(decode_request(m + '\0').ok());
    EXPECT_FALSE(decode_reply(m).ok());  // a request is no reply
  }
  for (const Reply& r : sample_replies()) {
    const std::string m = encoded(r);
    for (std::size_t n = 0; n < m.size(); ++n) EXPECT_FALSE(decode_reply(m.substr(0, n)).ok()) << n;
    EXPECT_FALSE(decode_reply(m + 'x').ok());
    EXPECT_FALSE(decode_request(m).ok());
  }
}

TEST(IpcWire, DecodersRefuseAnotherVersionFlagsAndUnknownTypes) {
  std::string m = encoded(Request{Mechanisms{}});
  ASSERT_TRUE(decode_request(m).ok());
  for (char v : {'\0', '\1', '\3', '\xff'}) {
    std::string bad = m;
    bad[0] = v;
    EXPECT_FALSE(decode_request(bad).ok());
  }
  std::string flags = m;
  flags[3] = 1;
  EXPECT_FALSE(decode_request(flags).ok());
  for (int t : {0, 11, 0x80, 0x81, 0x86, 0x87, 0xff}) {
    std::string bad = m;
    bad[1] = static_cast<char>(t);
    EXPECT_FALSE(decode_request(bad).ok()) << t;
  }
  std::string ack = encoded(Reply{Ack{}});
  ASSERT_TRUE(decode_reply(ack).ok());
  for (int t : {0, 1, 8, 9, 10, 0x80, 0x87, 0xff}) {
    std::string bad = ack;
    bad[1] = static_cast<char>(t);
    EXPECT_FALSE(decode_reply(bad).ok()) << t;
  }
  ack[0] = 1;  // the version before quotas
  EXPECT_FALSE(decode_reply(ack).ok());
  // hello names the version in its body too.
  std::string hello = encoded(Request{Hello{1, 1}});
  EXPECT_FALSE(decode_request(hello).ok());
}

TEST(IpcWire, DecodersRefuseBadEnumsAndBools) {
  // AuthResult: ok bool is the first body byte; the failure follows the credential.
  pop3::AuthResult a;
  a.failure = pop3::AuthFailure::temporary;
  std::string m = encoded(Reply{a});
  ASSERT_TRUE(decode_reply(m).ok());
  std::string bad_bool = m;
  bad_bool[kHeaderSize] = 2;
  EXPECT_FALSE(decode_reply(bad_bool).ok());
  std::string bad_failure = m;
  const std::size_t failure_at = kHeaderSize + 1 + 2;  // ok, empty credential
  ASSERT_EQ(bad_failure[failure_at], static_cast<char>(pop3::AuthFailure::temporary));
  bad_failure[failure_at] = static_cast<char>(static_cast<int>(pop3::AuthFailure::temporary) + 1);
  EXPECT_FALSE(decode_reply(bad_failure).ok());
  // SASL kind.
  std::string s = encoded(Reply{pop3::SaslReply::malformed()});
  s[kHeaderSize] = 3;
  EXPECT_FALSE(decode_reply(s).ok());
  // Error codes 0 and 4.
  for (char c : {'\0', '\4'}) {
    std::string e = encoded(Reply{ErrorReply{ErrorCode::refused}});
    e[kHeaderSize] = c;
    EXPECT_FALSE(decode_reply(e).ok());
  }
  // Lock outcomes 0 and 4.
  for (char c : {'\0', '\4'}) {
    std::string l = encoded(Reply{LockStatus{LockOutcome::in_use}});
    l[kHeaderSize] = c;
    EXPECT_FALSE(decode_reply(l).ok());
  }
  // tls flag of verify_plain, an optional's presence byte.
  std::string p = encoded(Request{VerifyPlain{"u", "p", true, ""}});
  p[p.size() - 3] = 7;  // tls byte before the empty address
  EXPECT_FALSE(decode_request(p).ok());
  std::string st = encoded(Request{SaslStep{1, std::nullopt}});
  st.back() = 2;
  EXPECT_FALSE(decode_request(st).ok());
  // Mechanism names: RFC 4422 characters, not empty.
  EXPECT_FALSE(
      decode_request(encoded(Request{SaslStart{1, "plain", std::nullopt, false, ""}})).ok());
  EXPECT_FALSE(decode_request(encoded(Request{SaslStart{1, "", std::nullopt, false, ""}})).ok());
  EXPECT_FALSE(decode_reply(encoded(Reply{MechanismList{{{"SCRAM SHA", false}}}})).ok());
}

TEST(IpcWire, FieldsOverTheirBoundsAreRefusedBothWays) {
  const std::string long_user(kMaxUser + 1, 'u');
  std::string out;
  EXPECT_FALSE(encode_request(1, VerifyPlain{long_user, "p", false, ""}, out).ok());
  EXPECT_FALSE(encode_request(1, LockMaildrop{long_user}, out).ok());
  EXPECT_FALSE(encode_request(1, UnlockMaildrop{long_user}, out).ok());
  EXPECT_FALSE(
      encode_request(1, VerifyPlain{"u", std::string(kMaxProof + 1, 'p'), false, ""}, out).ok());
  EXPECT_FALSE(
      encode_request(1, VerifyApop{"u", std::string(kMaxTimestamp + 1, 't'), "d", false, ""}, out)
          .ok());
  EXPECT_FALSE(
      encode_request(1, VerifyApop{"u", "t", "d", false, std::string(kMaxAddress + 1, 'a')}, out)
          .ok());
  EXPECT_FALSE(
      encode_request(1, SaslStart{1, "ABCDEFGHIJKLMNOPQRSTU", std::nullopt, false, ""}, out).ok());
  pop3::AuthResult r;
  r.mail_location = std::string(kMaxMailLocation + 1, '/');
  EXPECT_FALSE(encode_reply(1, r, out).ok());
  EXPECT_FALSE(
      encode_reply(1, pop3::SaslReply::challenge(std::string(kMaxChallenge + 1, 'A')), out).ok());
  MechanismList many;
  many.mechanisms.assign(kMaxMechanisms + 1, pop3::SaslMechanism{"PLAIN", true});
  EXPECT_FALSE(encode_reply(1, many, out).ok());
  // At the bound: fine, and the largest reply stays under the message cap.
  pop3::AuthResult big;
  big.credential = std::string(kMaxCredential, 'c');
  big.mail_location = std::string(kMaxMailLocation, '/');
  pop3::SaslReply biggest = pop3::SaslReply::challenge(std::string(kMaxChallenge, 'A'));
  biggest.user = std::string(kMaxUser, 'u');
  biggest.result = big;
  ASSERT_TRUE(encode_reply(1, biggest, out).ok());
  EXPECT_LE(out.size(), limits::kMaxIpcMessage);
  ASSERT_TRUE(decode_reply(out).ok());

  // A decoder refuses a length over the field's bound even when the bytes are there.
  std::string m = encoded(Request{VerifyPlain{std::string(kMaxUser, 'u'), "p", false, ""}});
  ASSERT_TRUE(decode_request(m).ok());
  m.insert(kHeaderSize + 2, "u");
  m[kHeaderSize + 1] = static_cast<char>(kMaxUser + 1 - 256);  // u16 length: 0x0100
  m[kHeaderSize] = 1;
  EXPECT_FALSE(decode_request(m).ok());
  const std::string max_user(kMaxUser, 'u');  // the requests' views point here
  for (const Request& r : {Request{LockMaildrop{max_user}}, Request{UnlockMaildrop{max_user}}}) {
    std::string l = encoded(r);
    ASSERT_TRUE(decode_request(l).ok());
    l.insert(kHeaderSize + 2, "u");
    l[kHeaderSize] = 1;  // u16 length 0x0100 = kMaxUser + 1
    l[kHeaderSize + 1] = 0;
    EXPECT_FALSE(decode_request(l).ok());
  }
  // A length beyond the packet.
  std::string lie = encoded(Request{RecordLogin{"alice", 1}});
  lie[kHeaderSize + 1] = 100;
  EXPECT_FALSE(decode_request(lie).ok());
  // A packet over the cap, whatever it holds.
  std::string huge = encoded(Request{Mechanisms{}}) + std::string(limits::kMaxIpcMessage, '\0');
  EXPECT_FALSE(decode_request(huge).ok());
  EXPECT_FALSE(peek_request_id(huge).has_value());
}

TEST(IpcWire, LockMessagesLayout) {
  // lock_maildrop: header type 9, the user as u16 length and bytes.
  EXPECT_EQ(encoded(Request{LockMaildrop{"bob"}}, 5),
            std::string("\x02\x09\x00\x00\x00\x00\x00\x05\x00\x03"
                        "bob",
                        13));
  EXPECT_EQ(encoded(Request{UnlockMaildrop{"bob"}}, 5)[1], '\x0a');
  // lock_status: type 0x86, one outcome byte.
  EXPECT_EQ(encoded(Reply{LockStatus{LockOutcome::in_use}}, 5),
            std::string("\x02\x86\x00\x00\x00\x00\x00\x05\x02", 9));
  const std::string unlock = encoded(Request{UnlockMaildrop{"bob"}});  // the views point here
  auto d = decode_request(unlock);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(std::get<UnlockMaildrop>(d->body).user, "bob");
}

TEST(IpcWire, PeekRequestIdNeedsOnlyTheHeader) {
  std::string m = encoded(Request{VerifyPlain{"u", "p", false, ""}}, 99);
  EXPECT_EQ(peek_request_id(m.substr(0, kHeaderSize)), 99u);
  EXPECT_FALSE(peek_request_id(m.substr(0, kHeaderSize - 1)).has_value());
}

TEST(IpcWire, WipeZeroesTheBytes) {
  std::string s = "a password";
  const char* p = s.data();
  const std::size_t n = s.size();
  wipe(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.data(), p);  // the same buffer, now zeroes
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(p[i], '\0');
}

}  // namespace
}  // namespace apop::ipc
