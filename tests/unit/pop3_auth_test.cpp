// RFC 5034 AUTH in the core, with a scripted mechanism (the real mechanisms
// are tested in auth_sasl_*).
#include <gtest/gtest.h>

#include "pop3/session.hpp"
#include "store/memory.hpp"

namespace apop::pop3 {
namespace {

// "X-TEST": expects initial response "aGk=" (or none, then challenges "Zm9v"),
// then the response "YmFy" -> success as alice; "bWFs" -> malformed; else failure.
class ScriptedSasl final : public SaslSession {
 public:
  explicit ScriptedSasl(std::vector<std::optional<std::string>>* seen) : seen_(seen) {}
  SaslReply step(std::optional<std::string_view> r) override {
    seen_->push_back(r ? std::optional<std::string>(std::string(*r)) : std::nullopt);
    if (!r || *r == "aGk=" || r->empty()) return SaslReply::challenge("Zm9v");
    if (*r == "YmFy") {
      AuthResult ok;
      ok.ok = true;
      ok.credential = "password";
      return SaslReply::done("alice", std::move(ok));
    }
    if (*r == "bWFs") return SaslReply::malformed();
    AuthResult failed;
    failed.failure = AuthFailure::credentials;
    return SaslReply::done("alice", std::move(failed));
  }

 private:
  std::vector<std::optional<std::string>>* seen_;
};

class SaslAuth final : public Authenticator {
 public:
  AuthResult verify_apop(std::string_view, std::string_view, std::string_view,
                         const AuthContext&) override {
    return {};
  }
  AuthResult verify_plain(std::string_view, std::string_view, const AuthContext&) override {
    return {};
  }
  std::vector<SaslMechanism> sasl_mechanisms() const override {
    return {{"X-TEST", false}, {"X-PLAIN", true}};
  }
  std::unique_ptr<SaslSession> start_sasl(std::string_view mech, const AuthContext&) override {
    if (mech != "X-TEST" && mech != "X-PLAIN") return nullptr;
    return std::make_unique<ScriptedSasl>(&seen);
  }
  std::vector<std::optional<std::string>> seen;
};

struct AuthHarness {
  explicit AuthHarness(bool secure) {
    SessionConfig cfg;
    cfg.secure = secure;
    session = std::make_unique<Session>(cfg, auth, mail, "<1.2@h>");
  }
  std::string cmd(std::string_view line) {
    session->feed(std::string(line) + "\r\n");
    std::string out;
    while (session->next(out) == Next::output) {
    }
    return out;
  }
  SaslAuth auth;
  store::MemoryStore mail;
  std::unique_ptr<Session> session;
};

TEST(SessionAuth, CapaAndListShowUsableMechanisms) {
  AuthHarness insecure(false);
  EXPECT_NE(insecure.cmd("CAPA").find("SASL X-TEST\r\n"), std::string::npos);
  EXPECT_EQ(insecure.cmd("AUTH"), "+OK Supported mechanisms follow\r\nX-TEST\r\n.\r\n");
  AuthHarness secure(true);
  EXPECT_NE(secure.cmd("CAPA").find("SASL X-TEST X-PLAIN\r\n"), std::string::npos);
}

TEST(SessionAuth, PlaintextMechanismRefusedOnInsecureConnection) {
  AuthHarness h(false);
  EXPECT_EQ(h.cmd("AUTH X-PLAIN"),
            "-ERR [AUTH] Plaintext authentication disallowed on non-secure connection\r\n");
  EXPECT_TRUE(h.auth.seen.empty());
}

TEST(SessionAuth, ChallengeResponseSuccess) {
  AuthHarness h(true);
  EXPECT_EQ(h.cmd("AUTH x-test"), "+ Zm9v\r\n");  // mechanism names are case-insensitive
  EXPECT_EQ(h.cmd("YmFy"), "+OK Logged in, 0 messages (0 octets)\r\n");
  EXPECT_EQ(h.session->state(), State::transaction);
  EXPECT_EQ(h.session->user(), "alice");
  ASSERT_EQ(h.auth.seen.size(), 2u);
  EXPECT_FALSE(h.auth.seen[0].has_value());  // no initial response
}

TEST(SessionAuth, InitialResponseAndEquals) {
  AuthHarness h(true);
  EXPECT_EQ(h.cmd("AUTH X-TEST ="), "+ Zm9v\r\n");
  ASSERT_EQ(h.auth.seen.size(), 1u);
  EXPECT_EQ(h.auth.seen[0], std::optional<std::string>(""));  // "=" is an empty response
  EXPECT_EQ(h.cmd("*"), "-ERR Authentication cancelled\r\n");
  EXPECT_EQ(h.session->state(), State::authorization);
  // After a cancel, lines are commands again.
  EXPECT_TRUE(h.cmd("CAPA").starts_with("+OK"));
}

TEST(SessionAuth, FailureIsAuthErrorAndCounts) {
  AuthHarness h(true);
  h.cmd("AUTH X-TEST");
  EXPECT_EQ(h.cmd("d3Jvbmc="), "-ERR [AUTH] Authentication failed.\r\n");
  h.cmd("AUTH X-TEST");
  h.cmd("d3Jvbmc=");
  h.cmd("AUTH X-TEST");
  EXPECT_NE(h.cmd("d3Jvbmc=").find("closing connection"), std::string::npos);
}

TEST(SessionAuth, MalformedResponseAndUnknownMechanism) {
  AuthHarness h(true);
  h.cmd("AUTH X-TEST");
  EXPECT_EQ(h.cmd("bWFs"), "-ERR Invalid SASL response\r\n");
  EXPECT_EQ(h.cmd("AUTH NOPE"), "-ERR Unsupported authentication mechanism\r\n");
  EXPECT_TRUE(h.cmd("AUTH X-TEST a b").starts_with("-ERR"));
}

TEST(SessionAuth, OverlongResponseCancelsExchange) {
  AuthHarness h(true);
  h.cmd("AUTH X-TEST");
  EXPECT_EQ(h.cmd(std::string(300, 'A')), "-ERR Line too long\r\n");
  EXPECT_TRUE(h.cmd("CAPA").starts_with("+OK"));  // back to commands
}

TEST(SessionAuth, NotAfterLogin) {
  AuthHarness h(true);
  h.cmd("AUTH X-TEST");
  h.cmd("YmFy");
  EXPECT_EQ(h.cmd("AUTH X-TEST"), "-ERR Already logged in\r\n");
  EXPECT_EQ(h.cmd("CAPA").find("SASL"), std::string::npos);
}

}  // namespace
}  // namespace apop::pop3
