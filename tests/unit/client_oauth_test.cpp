// OAuth2 in the client (issue 20): the XOAUTH2 and OAUTHBEARER (RFC 7628)
// initial responses byte for byte, the error JSON decoder against hostile
// input, the choice of mechanism, and the whole exchange (success, the
// failure dance, the token never in the trace) against a scripted server.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "auth/base64.hpp"
#include "client/fetch.hpp"
#include "client/protocol.hpp"
#include "client_fake_pop.hpp"

namespace apop::client {
namespace {

using namespace std::string_literals;

std::string b64(std::string_view s) { return auth::base64_encode(s); }

TEST(ClientOAuth, OAuthBearerInitialResponseBytes) {
  EXPECT_EQ(oauthbearer_response("alice@example.com", "tok.en-1", "pop.example.com", 995),
            "n,a=alice@example.com,\x01host=pop.example.com\x01port=995\x01"
            "auth=Bearer tok.en-1\x01\x01"s);
  // RFC 7628 §4.1's example shape, host and port left out when unknown.
  EXPECT_EQ(
      oauthbearer_response("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "", 0),
      "n,a=user@example.com,\x01"
      "auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"s);
  // RFC 5801 §4: ',' and '=' in the authzid are escaped.
  EXPECT_EQ(oauthbearer_response("a,b=c", "t", "h", 110),
            "n,a=a=2Cb=3Dc,\x01host=h\x01port=110\x01"
            "auth=Bearer t\x01\x01"s);
}

TEST(ClientOAuth, XOAuth2InitialResponseBytes) {
  // Google's documented example: base64 of exactly these bytes.
  const std::string r =
      xoauth2_response("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
  EXPECT_EQ(r,
            "user=someuser@example.com\x01"
            "auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"s);
  EXPECT_EQ(b64(r),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQm"
            "hkSFJoZG1semRHRXVZMjl0Q2cBAQ==");
}

TEST(ClientOAuth, MechanismNames) {
  EXPECT_EQ(parse_auth_mech("XOAUTH2"), AuthMech::xoauth2);
  EXPECT_EQ(parse_auth_mech("oauthbearer"), AuthMech::oauthbearer);
  EXPECT_EQ(auth_mech_name(AuthMech::oauthbearer), "oauthbearer");
  EXPECT_EQ(auth_mech_name(AuthMech::xoauth2), "xoauth2");
  for (AuthMech m : kAllAuthMechs) EXPECT_EQ(parse_auth_mech(auth_mech_name(m)), m);
  auto caps = parse_capa({"SASL xoauth2 OAuthBearer PLAIN"});
  EXPECT_TRUE(caps.has_sasl("XOAUTH2"));
  EXPECT_TRUE(caps.has_sasl("OAUTHBEARER"));
}

TEST(ClientOAuth, ChoiceNeverAutomaticAndOnlyInsideTls) {
  AuthContext ctx;
  ctx.caps = parse_capa({"SASL XOAUTH2 OAUTHBEARER"});
  ctx.tls = true;
  // A token is not a password: auto does not pick the OAuth mechanisms.
  auto a = choose_auth(AuthMech::automatic, ctx);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Errc::not_found);
  EXPECT_NE(a.error().message.find("--auth oauthbearer"), std::string::npos) << a.error().message;
  EXPECT_EQ(choose_auth(AuthMech::oauthbearer, ctx).value(), AuthMech::oauthbearer);
  EXPECT_EQ(choose_auth(AuthMech::xoauth2, ctx).value(), AuthMech::xoauth2);

  ctx.tls = false;
  auto clear = choose_auth(AuthMech::oauthbearer, ctx);
  ASSERT_FALSE(clear);
  EXPECT_EQ(clear.error().code, Errc::permanent);
  EXPECT_NE(clear.error().message.find("bearer token"), std::string::npos);
  ctx.allow_plaintext = true;
  EXPECT_TRUE(choose_auth(AuthMech::xoauth2, ctx));

  ctx.caps = parse_capa({"SASL PLAIN"});
  ctx.tls = true;
  auto missing = choose_auth(AuthMech::oauthbearer, ctx);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_EQ(choose_auth(AuthMech::automatic, ctx).value(), AuthMech::plain);
}

TEST(ClientOAuth, DecodesGoodErrors) {
  auto e = decode_oauth_error(b64(
      R"({"status":"invalid_token","scope":"mail","openid-configuration":"https://idp.example/.well-known/openid-configuration"})"));
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->status, "invalid_token");
  EXPECT_EQ(e->scope, "mail");
  EXPECT_EQ(e->describe(),
            "invalid_token (scope: mail; openid-configuration: "
            "https://idp.example/.well-known/openid-configuration)");
  // Google sends the HTTP status as a string, some servers as a number.
  auto g = decode_oauth_error(
      b64(R"({"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})"));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->describe(), "401 (scope: https://mail.google.com/)");
  auto n = decode_oauth_error(b64(R"({"status":401})"));
  ASSERT_TRUE(n);
  EXPECT_EQ(n->describe(), "401");
  // Control characters and 8-bit octets (valid UTF-8) are escaped.
  auto c = decode_oauth_error(b64("{\"status\":\"bad\\u001b[2J\xc3\xa9\"}"));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, "bad\\x1b[2J\\xc3\\xa9");
  // A long field is cut.
  auto l = decode_oauth_error(b64(R"({"status":")" + std::string(1000, 'x') + R"("})"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->status, std::string(limits::kMaxOAuthErrorField, 'x') + "...");
}

TEST(ClientOAuth, RefusesBadErrors) {
  const std::vector<std::string> bad = {
      R"({"status":"invalid_token")",                   // truncated
      R"({"status":"invalid_tok)",                      // truncated in a string
      "",                                               // empty
      "invalid_token",                                  // not JSON
      "<html>401</html>",                               // not JSON
      R"(["invalid_token"])",                           // not an object
      R"("invalid_token")",                             // not an object
      R"({"scope":"mail"})",                            // no status
      R"({"status":null})",                             // status not a string
      R"({"status":""})",                               // empty status
      R"({"status":{"a":1}})",                          // status an object
      "{\"status\":\"\xff\xfe\"}",                      // not UTF-8
      "{\"status\":\"\xc3\"}",                          // truncated UTF-8
      "{\"status\":\"a\"}\x00garbage"s,                 // trailing bytes
      std::string(2000, '[') + std::string(2000, ']'),  // deep nesting (within the size limit)
  };
  for (const auto& j : bad) {
    auto e = decode_oauth_error(b64(j));
    EXPECT_FALSE(e) << j.substr(0, 60);
    if (!e) {
      EXPECT_EQ(e.error().code, Errc::invalid);
    }
  }
  EXPECT_FALSE(decode_oauth_error("not base64!"));
  EXPECT_FALSE(decode_oauth_error("eyJzdGF0dXMiOiJ4In0"));  // unpadded
  // Huge: beyond kMaxOAuthErrorJson decoded octets, refused before parsing.
  const std::string huge =
      R"({"status":"x","pad":")" + std::string(limits::kMaxOAuthErrorJson, 'p') + R"("})";
  auto h = decode_oauth_error(b64(huge));
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("longer"), std::string::npos);
  auto h2 = decode_oauth_error(std::string(1 << 20, 'A'));
  EXPECT_FALSE(h2);
}

// ---- whole sessions against the scripted server ------------------------------

constexpr const char* kToken = "eyJhbGciOiJIUzI1NiJ9.secret-token-payload.sig";

class OAuthFetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("apop-oauth-" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    pop_.greeting = "+OK ready";
    pop_.capa_tls = {"UIDL", "SASL PLAIN XOAUTH2 OAUTHBEARER"};
    pop_.msgs = {{"uid-a", "Subject: a\n\nfirst\n"}};
    opts_.user = "alice";
    opts_.password = kToken;
    opts_.host = "pop.example.com";
    opts_.port = 995;
    opts_.trace = [this](std::string_view l) { trace_.emplace_back(l); };
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  FetchSummary run() {
    test::FakeTransport t(pop_);
    t.set_implicit_tls();
    auto st = AccountState::load(dir_ / "state");
    EXPECT_TRUE(st);
    return run_session(t, dest_, *st, opts_);
  }
  void expect_token_hidden() {
    for (const auto& l : trace_) {
      EXPECT_EQ(l.find("secret-token"), std::string::npos) << l;
      EXPECT_EQ(l.find(b64(xoauth2_response("alice", kToken)).substr(8, 20)), std::string::npos)
          << l;
    }
  }
  // A server accepting `token`, or rejecting it with `json` (the error
  // challenge), recording the exchange in `seen_`.
  void serve(std::string json = {}) {
    pop_.hook = [this, json](const std::string& line) -> std::string {
      if (stage_ == 0 && line.rfind("AUTH ", 0) == 0 && line.find("OAUTH") != std::string::npos) {
        seen_.push_back(line);
        const auto sp = line.find(' ', 5);
        if (sp == std::string::npos) {
          stage_ = 1;
          return "+ \r\n";
        }
        return respond(line.substr(sp + 1), json);
      }
      if (stage_ == 1) return respond(line, json);
      if (stage_ == 2) {
        seen_.push_back(line);
        stage_ = 3;
        return "-ERR [AUTH] Authentication failed.\r\n";
      }
      return {};
    };
  }
  std::string respond(const std::string& b64_ir, const std::string& json) {
    seen_.push_back(b64_ir);
    auto ir = auth::base64_decode_strict(b64_ir);
    decoded_ = ir ? *ir : "<bad base64>";
    if (json.empty()) {
      stage_ = 3;
      return "+OK Logged in.\r\n";
    }
    stage_ = 2;
    return "+ " + b64(json) + "\r\n";
  }

  std::filesystem::path dir_;
  test::FakePop pop_;
  FetchOptions opts_;
  struct Dest final : Destination {
    Result<void> store(std::string_view m, const MessageMeta&) override {
      stored.emplace_back(m);
      return {};
    }
    std::string describe() const override { return "memory:"; }
    std::vector<std::string> stored;
  } dest_;
  std::vector<std::string> trace_;
  std::vector<std::string> seen_;
  std::string decoded_;
  int stage_ = 0;
};

TEST_F(OAuthFetchTest, OAuthBearerShortTokenInitialResponseInline) {
  opts_.auth = AuthMech::oauthbearer;
  serve();
  auto s = run();
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "oauthbearer");
  EXPECT_EQ(dest_.stored.size(), 1u);
  ASSERT_EQ(seen_.size(), 2u);
  EXPECT_EQ(seen_[0].rfind("AUTH OAUTHBEARER ", 0), 0u);  // one command line
  EXPECT_EQ(decoded_, oauthbearer_response("alice", kToken, "pop.example.com", 995));
  expect_token_hidden();
  bool hidden_shown = false;
  for (const auto& l : trace_) hidden_shown |= l == "C: AUTH OAUTHBEARER <hidden>";
  EXPECT_TRUE(hidden_shown);
}

TEST_F(OAuthFetchTest, LongTokenGoesAfterTheEmptyChallenge) {
  const std::string token = "secret-token-" + std::string(1500, 'z');
  opts_.password = token;
  opts_.auth = AuthMech::xoauth2;
  serve();
  auto s = run();
  ASSERT_EQ(s.status, FetchStatus::ok) << s.error;
  EXPECT_EQ(s.auth, "xoauth2");
  ASSERT_GE(seen_.size(), 2u);
  EXPECT_EQ(seen_[0], "AUTH XOAUTH2");
  EXPECT_EQ(decoded_, xoauth2_response("alice", token));
  expect_token_hidden();
}

TEST_F(OAuthFetchTest, RejectedTokenOAuthBearerDanceAndDecodedError) {
  opts_.auth = AuthMech::oauthbearer;
  serve(R"({"status":"invalid_token","schemes":"bearer","scope":"mail"})");
  auto s = run();
  EXPECT_EQ(s.status, FetchStatus::auth_failed);
  EXPECT_EQ(s.error.rfind("token rejected: invalid_token (scope: mail)", 0), 0u) << s.error;
  EXPECT_EQ(s.error.find("eyJ"), std::string::npos) << s.error;  // not shown as base64
  ASSERT_EQ(seen_.size(), 3u);
  EXPECT_EQ(seen_[2], "AQ==");  // RFC 7628 §3.2.3
  EXPECT_TRUE(dest_.stored.empty());
  EXPECT_FALSE(std::any_of(pop_.commands.begin(), pop_.commands.end(),
                           [](const std::string& c) { return c == "STAT"; }));
  expect_token_hidden();
}

TEST_F(OAuthFetchTest, RejectedTokenXOAuth2AnswersWithAnEmptyLine) {
  opts_.auth = AuthMech::xoauth2;
  serve(R"({"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})");
  auto s = run();
  EXPECT_EQ(s.status, FetchStatus::auth_failed);
  EXPECT_NE(s.error.find("token rejected: 401 (scope: https://mail.google.com/)"),
            std::string::npos)
      << s.error;
  ASSERT_EQ(seen_.size(), 3u);
  EXPECT_EQ(seen_[2], "");
  expect_token_hidden();
}

TEST_F(OAuthFetchTest, UnreadableErrorIsStillAnAuthFailure) {
  opts_.auth = AuthMech::oauthbearer;
  serve("\xff not json");
  auto s = run();
  EXPECT_EQ(s.status, FetchStatus::auth_failed);
  EXPECT_NE(s.error.find("unreadable"), std::string::npos) << s.error;
  for (unsigned char c : s.error) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << s.error;
}

TEST_F(OAuthFetchTest, RefusedWithoutTlsNothingSent) {
  opts_.auth = AuthMech::oauthbearer;
  opts_.tls_mode = TlsMode::none;
  pop_.capa = {"UIDL", "SASL XOAUTH2 OAUTHBEARER"};
  serve();
  test::FakeTransport t(pop_);
  auto st = AccountState::load(dir_ / "state");
  ASSERT_TRUE(st);
  auto s = run_session(t, dest_, *st, opts_);
  EXPECT_EQ(s.status, FetchStatus::security) << s.error;
  EXPECT_TRUE(seen_.empty());
}

TEST_F(OAuthFetchTest, TokenWithSeparatorRefused) {
  opts_.auth = AuthMech::oauthbearer;
  opts_.password = "abc\x01host=evil";
  serve();
  auto s = run();
  EXPECT_EQ(s.status, FetchStatus::error);
  EXPECT_TRUE(seen_.empty());
}

}  // namespace
}  // namespace apop::client
