// SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-1 (RFC 5802) server exchanges.
#include "auth/sasl_scram.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <string_view>

#include "auth/base64.hpp"
#include "auth_sasl_support.hpp"

namespace apop::auth {
namespace {

using namespace std::string_literals;
using testing::b64d;
using testing::Directory;
using testing::is_challenge;
using testing::is_failure;
using testing::is_success;
using testing::scram_attr;
using testing::ScramClient;

// RFC 7677 §3.
constexpr std::string_view k256ClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view k256ServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view k256ServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view k256ClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view k256ServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// RFC 5802 §5.
constexpr std::string_view k1ClientFirst = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
constexpr std::string_view k1ServerNonce = "3rfcNHYJY1ZVvWVs7j";
constexpr std::string_view k1ServerFirst =
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
constexpr std::string_view k1ClientFinal =
    "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
constexpr std::string_view k1ServerFinal = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";

class AuthSaslScram : public ::testing::Test {
 protected:
  void SetUp() override {
    SaslCredentials user;
    user.scram_sha256 =
        make_scram_verifier("SHA-256", "pencil", b64d("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096);
    user.scram_sha1 = make_scram_verifier("SHA-1", "pencil", b64d("QSXCR+Q6sek8bf92"), 4096);
    dir_.users["user"] = user;
    dir_.users["plain"].plaintext = "plain secret";
    dir_.users["a,b=c"].scram_sha256 =
        make_scram_verifier("SHA-256", "pencil", "sixteen byte slt", 4096);
  }
  std::unique_ptr<SaslExchange> rfc256() {
    return make_scram_exchange(ScramHash::sha256, dir_.lookup(), std::string(k256ServerNonce));
  }
  std::unique_ptr<SaslExchange> rfc1() {
    return make_scram_exchange(ScramHash::sha1, dir_.lookup(), std::string(k1ServerNonce));
  }
  // Runs client-first on a fresh RFC 7677 exchange and expects its server-first.
  std::unique_ptr<SaslExchange> after_rfc256_first(
      std::string_view client_first = k256ClientFirst) {
    auto ex = rfc256();
    SaslStep s = ex->step(client_first);
    EXPECT_TRUE(is_challenge(s));
    EXPECT_EQ(s.data, k256ServerFirst);
    return ex;
  }
  Directory dir_;
};

TEST_F(AuthSaslScram, Rfc7677Sha256Example) {
  auto ex = rfc256();
  SaslStep s = ex->step(k256ClientFirst);
  ASSERT_TRUE(is_challenge(s));
  EXPECT_EQ(s.data, k256ServerFirst);
  s = ex->step(k256ClientFinal);
  ASSERT_TRUE(is_challenge(s));  // server-final goes out as a challenge (RFC 5034 §4)
  EXPECT_EQ(s.data, k256ServerFinal);
  EXPECT_TRUE(s.user.empty());
  s = ex->step("");
  ASSERT_TRUE(is_success(s));
  EXPECT_EQ(s.user, "user");
  EXPECT_TRUE(s.data.empty());
  EXPECT_TRUE(is_failure(ex->step(""))) << "no step after success";
  EXPECT_EQ(dir_.looked_up, std::vector<std::string>{"user"});
}

TEST_F(AuthSaslScram, Rfc5802Sha1Example) {
  auto ex = rfc1();
  SaslStep s = ex->step(k1ClientFirst);
  ASSERT_TRUE(is_challenge(s));
  EXPECT_EQ(s.data, k1ServerFirst);
  s = ex->step(k1ClientFinal);
  ASSERT_TRUE(is_challenge(s));
  EXPECT_EQ(s.data, k1ServerFinal);
  s = ex->step("");
  ASSERT_TRUE(is_success(s));
  EXPECT_EQ(s.user, "user");
}

TEST_F(AuthSaslScram, TestClientReproducesRfcProofs) {
  ScramClient c{ScramHash::sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO"};
  EXPECT_EQ(c.client_first(), k256ClientFirst);
  EXPECT_EQ(c.client_final(k256ServerFirst), k256ClientFinal);
  EXPECT_EQ("v=" + c.expected_server_signature, k256ServerFinal);
  ScramClient c1{ScramHash::sha1, "user", "pencil", "fyko+d2lbbFgONRv9qkxdawL"};
  EXPECT_EQ(c1.client_final(k1ServerFirst), k1ClientFinal);
  EXPECT_EQ("v=" + c1.expected_server_signature, k1ServerFinal);
}

TEST_F(AuthSaslScram, PublicFactoryWithRandomServerNonce) {
  std::set<std::string> nonces;
  for (std::string_view mech : {"SCRAM-SHA-256", "scram-sha-1", "SCRAM-SHA-256"}) {
    auto ex = make_sasl_exchange(mech, dir_.lookup(), "");
    ASSERT_NE(ex, nullptr);
    ScramClient c{mech.size() == 13 ? ScramHash::sha256 : ScramHash::sha1, "user", "pencil"};
    SaslStep s = ex->step(std::nullopt);  // no initial response: empty challenge
    ASSERT_TRUE(is_challenge(s));
    EXPECT_EQ(s.data, "");
    s = ex->step(c.client_first());
    ASSERT_TRUE(is_challenge(s));
    std::string nonce = scram_attr(s.data, 'r');
    ASSERT_EQ(nonce.substr(0, c.client_nonce.size()), c.client_nonce);
    std::string server_part = nonce.substr(c.client_nonce.size());
    EXPECT_EQ(server_part.size(), 24u);
    for (char ch : server_part) EXPECT_TRUE(ch > 0x20 && ch < 0x7f && ch != ',') << ch;
    nonces.insert(server_part);
    s = ex->step(c.client_final(s.data));
    ASSERT_TRUE(is_challenge(s)) << mech;
    EXPECT_EQ(s.data, "v=" + c.expected_server_signature);
    s = ex->step("");
    ASSERT_TRUE(is_success(s));
    EXPECT_EQ(s.user, "user");
  }
  EXPECT_EQ(nonces.size(), 3u) << "server nonces must be fresh";
}

TEST_F(AuthSaslScram, WrongPasswordFailsAtTheProof) {
  for (ScramHash h : {ScramHash::sha256, ScramHash::sha1}) {
    auto ex = make_scram_exchange(h, dir_.lookup());
    ScramClient c{h, "user", "pencil2"};
    SaslStep s = ex->step(c.client_first());
    ASSERT_TRUE(is_challenge(s));
    s = ex->step(c.client_final(s.data));
    EXPECT_TRUE(is_failure(s));
    EXPECT_TRUE(s.data.empty());
    EXPECT_TRUE(is_failure(ex->step("")));
  }
}

TEST_F(AuthSaslScram, TamperedRfcProofFails) {
  std::string final_msg(k256ClientFinal);
  final_msg[final_msg.size() - 3] = 'W';  // "...AndVQ=" -> "...AndWQ="
  auto ex = after_rfc256_first();
  EXPECT_TRUE(is_failure(ex->step(final_msg)));
}

// Unknown users get a server-first of the same shape as known users, the same
// salt on every attempt, and fail at the proof like a wrong password.
TEST_F(AuthSaslScram, UnknownUserLooksLikeWrongPassword) {
  auto run = [&](const std::string& user, const std::string& password, std::string* server_first) {
    auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup());
    ScramClient c{ScramHash::sha256, user, password};
    SaslStep s = ex->step(c.client_first());
    EXPECT_TRUE(is_challenge(s));
    *server_first = s.data;
    return ex->step(c.client_final(s.data));
  };
  std::string known, unknown1, unknown2, other;
  SaslStep s = run("a=2Cb=3Dc", "wrong", &known);
  EXPECT_TRUE(is_failure(s));
  s = run("nobody", "pencil", &unknown1);
  EXPECT_TRUE(is_failure(s));
  EXPECT_TRUE(s.data.empty());
  s = run("nobody", "other", &unknown2);
  EXPECT_TRUE(is_failure(s));
  s = run("somebody", "pencil", &other);
  EXPECT_TRUE(is_failure(s));

  // Same shape as a known user's (16-octet salt, 4096 iterations).
  EXPECT_EQ(b64d(scram_attr(known, 's')).size(), 16u);
  EXPECT_EQ(b64d(scram_attr(unknown1, 's')).size(), 16u);
  EXPECT_EQ(scram_attr(unknown1, 'i'), "4096");
  EXPECT_EQ(scram_attr(known, 'i'), scram_attr(unknown1, 'i'));
  EXPECT_EQ(scram_attr(known, 'r').size(), scram_attr(unknown1, 'r').size());
  // Stable salt per unknown name, different between names.
  EXPECT_EQ(scram_attr(unknown1, 's'), scram_attr(unknown2, 's'));
  EXPECT_NE(scram_attr(unknown1, 's'), scram_attr(other, 's'));
  EXPECT_EQ(dir_.looked_up, (std::vector<std::string>{"a,b=c", "nobody", "nobody", "somebody"}));
}

TEST_F(AuthSaslScram, SaslnameEscapesAreDecoded) {
  auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup());
  ScramClient c{ScramHash::sha256, "a=2Cb=3Dc", "pencil"};
  SaslStep s = ex->step(c.client_first());
  ASSERT_TRUE(is_challenge(s));
  EXPECT_EQ(b64d(scram_attr(s.data, 's')), "sixteen byte slt");
  s = ex->step(c.client_final(s.data));
  ASSERT_TRUE(is_challenge(s));
  s = ex->step("");
  ASSERT_TRUE(is_success(s));
  EXPECT_EQ(s.user, "a,b=c");
}

TEST_F(AuthSaslScram, PlaintextOnlyUserGetsAnOnTheFlyVerifier) {
  std::string salt;
  for (int round = 0; round < 2; ++round) {
    auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup());
    ScramClient c{ScramHash::sha256, "plain", "plain secret"};
    SaslStep s = ex->step(c.client_first());
    ASSERT_TRUE(is_challenge(s));
    EXPECT_EQ(scram_attr(s.data, 'i'), "4096");
    if (round == 0) salt = scram_attr(s.data, 's');
    EXPECT_EQ(scram_attr(s.data, 's'), salt) << "salt is stable";
    s = ex->step(c.client_final(s.data));
    ASSERT_TRUE(is_challenge(s));
    EXPECT_EQ(s.data, "v=" + c.expected_server_signature);
    EXPECT_TRUE(is_success(ex->step("")));
  }
  auto ex = make_scram_exchange(ScramHash::sha1, dir_.lookup());
  ScramClient wrong{ScramHash::sha1, "plain", "plain secreT"};
  SaslStep s = ex->step(wrong.client_first());
  ASSERT_TRUE(is_challenge(s));
  EXPECT_TRUE(is_failure(ex->step(wrong.client_final(s.data))));
}

TEST_F(AuthSaslScram, MissingVerifierForThisHashFails) {
  // "a,b=c" has only a SHA-256 verifier and no plaintext: SCRAM-SHA-1 cannot work.
  auto ex = make_scram_exchange(ScramHash::sha1, dir_.lookup());
  ScramClient c{ScramHash::sha1, "a=2Cb=3Dc", "pencil"};
  SaslStep s = ex->step(c.client_first());
  ASSERT_TRUE(is_challenge(s));
  EXPECT_TRUE(is_failure(ex->step(c.client_final(s.data))));
}

TEST_F(AuthSaslScram, Gs2HeaderVariants) {
  // "y,,": client supports channel binding, thinks we do not; c= is base64("y,,").
  {
    auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup());
    ScramClient c{ScramHash::sha256, "user", "pencil"};
    c.gs2 = "y,,";
    SaslStep s = ex->step(c.client_first());
    ASSERT_TRUE(is_challenge(s));
    std::string final_msg = c.client_final(s.data);
    EXPECT_EQ(final_msg.substr(0, 7), "c=eSws,");
    s = ex->step(final_msg);
    ASSERT_TRUE(is_challenge(s));
    EXPECT_TRUE(is_success(ex->step("")));
  }
  // An authzid equal to the user is allowed.
  {
    auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup());
    ScramClient c{ScramHash::sha256, "user", "pencil"};
    c.gs2 = "n,a=user,";
    SaslStep s = ex->step(c.client_first());
    ASSERT_TRUE(is_challenge(s));
    s = ex->step(c.client_final(s.data));
    ASSERT_TRUE(is_challenge(s));
    EXPECT_TRUE(is_success(ex->step("")));
  }
  // Extensions in client-first are ignored.
  {
    auto ex = rfc256();
    SaslStep s = ex->step("n,,n=user,r=abc,x=ext");
    ASSERT_TRUE(is_challenge(s));
  }
}

TEST_F(AuthSaslScram, MalformedClientFirstFails) {
  const std::string cases[] = {
      "",
      "n",
      "n,",
      "n,,",
      "n,,n=user",
      "n,,n=user,",
      "n,,n=user,r=",
      "n,,r=abc,n=user",
      "n,,n=,r=abc",
      "n,,n=us=er,r=abc",    // bad escape
      "n,,n=us=2cer,r=abc",  // lowercase escape is not valid
      "n,,n=user=,r=abc",
      "n,,n=user,r=a b",  // space is not printable
      "n,,n=user,r=ab\x7f",
      "n,,n=user,r=abc,",
      "n,,n=user,r=abc,m=x",
      "n,,m=ext,n=user,r=abc",  // reserved m= must fail
      "n,,n=user,r=abc,1=x",
      "n,,n=user,r=abc,xx",
      "p=tls-unique,,n=user,r=abc",
      "p=tls-server-end-point,,n=user,r=abc",
      "x,,n=user,r=abc",
      "N,,n=user,r=abc",
      "nn,,n=user,r=abc",
      "n,a=other,n=user,r=abc",  // proxy authentication refused
      "n,a=,n=user,r=abc",
      "n,a=user",
      "n,b=user,n=user,r=abc",
      ",,n=user,r=abc",
      "n,,N=user,r=abc",
      "n,,n=user,R=abc",
      "n,,n=user,r=abc"s + '\0' + "x",
      "n,,n=us"s + '\0' + "er,r=abc",
  };
  for (const std::string& msg : cases) {
    auto ex = rfc256();
    EXPECT_TRUE(is_failure(ex->step(msg))) << "[" << msg << "]";
    EXPECT_TRUE(is_failure(ex->step(k256ClientFinal))) << "no recovery after failure";
  }
  // Through the empty-challenge path too.
  auto ex = rfc256();
  ASSERT_TRUE(is_challenge(ex->step(std::nullopt)));
  EXPECT_TRUE(is_failure(ex->step("p=tls-unique,,n=user,r=abc")));
}

TEST_F(AuthSaslScram, MalformedClientFinalFails) {
  const std::string nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  const std::string proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const std::string cases[] = {
      "",
      "c=biws",
      "c=biws,r=" + nonce,                                       // no proof
      "c=biws,r=" + nonce + ",p=",                               // empty proof
      "c=biws,r=" + nonce + ",p=" + proof + ",x=y",              // proof not last
      "c=biws,r=" + nonce + ",p=" + proof.substr(0, 40),         // bad base64 length
      "c=biws,r=" + nonce + ",p=" + proof.substr(0, 42) + "!=",  // bad base64 char
      "c=biws,r=" + nonce + ",p=" + base64_encode("short"),      // wrong proof length
      "c=biws,r=" + nonce + ",p=" + base64_encode(std::string(33, 'x')),
      "c=eSws,r=" + nonce + ",p=" + proof,                  // wrong channel binding (y,,)
      "c=cD10bHMtdW5pcXVlLCw=,r=" + nonce + ",p=" + proof,  // "p=tls-unique,,"
      "c=,r=" + nonce + ",p=" + proof,
      "r=" + nonce + ",p=" + proof,                // missing c=
      "c=biws,p=" + proof,                         // missing r=
      "r=" + nonce + ",c=biws,p=" + proof,         // wrong order
      "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=" + proof,  // client nonce only
      "c=biws,r=" + nonce + "x,p=" + proof,        // altered nonce
      "c=biws,r=" + nonce.substr(0, nonce.size() - 1) + ",p=" + proof,
      "c=biws,r=" + nonce + ",m=x,p=" + proof,  // reserved m=
      "c=biws,r=" + nonce + ",,p=" + proof,     // empty attribute
      "c=biws,r=" + nonce + ",p=" + proof + "\n",
      "c=biws ,r=" + nonce + ",p=" + proof,
      "c=biws,r=" + nonce + ",p=" + proof + '\0',
  };
  for (const std::string& msg : cases) {
    auto ex = after_rfc256_first();
    EXPECT_TRUE(is_failure(ex->step(msg))) << "[" << msg << "]";
    EXPECT_TRUE(is_failure(ex->step(""))) << "no recovery after failure";
  }
  // Extensions before the proof are accepted (the proof covers them); the RFC
  // proof does not, so it fails, but a proof computed over them succeeds.
  auto ex = after_rfc256_first();
  EXPECT_TRUE(is_failure(ex->step("c=biws,r=" + nonce + ",x=ext,p=" + proof)));
  ScramClient c{ScramHash::sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO"};
  c.final_extensions = ",x=ext";
  ex = after_rfc256_first();
  SaslStep s = ex->step(c.client_final(k256ServerFirst));
  ASSERT_TRUE(is_challenge(s));
  EXPECT_EQ(s.data, "v=" + c.expected_server_signature);
  EXPECT_TRUE(is_success(ex->step("")));
}

// A proof correctly computed over a wrong channel binding or nonce still fails:
// the server checks c= and r= themselves, not only the proof.
TEST_F(AuthSaslScram, SignedButWrongChannelBindingOrNonceFails) {
  const std::string nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  auto attempt = [&](std::optional<std::string> cb, std::optional<std::string> r) {
    ScramClient c{ScramHash::sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO"};
    c.channel_binding_override = std::move(cb);
    c.nonce_override = std::move(r);
    auto ex = after_rfc256_first();
    return ex->step(c.client_final(k256ServerFirst));
  };
  EXPECT_TRUE(is_challenge(attempt(std::nullopt, std::nullopt)));  // control
  EXPECT_TRUE(is_challenge(attempt("biws", nonce)));               // control
  EXPECT_TRUE(is_failure(attempt("eSws", std::nullopt)));          // "y,," after "n,,"
  EXPECT_TRUE(is_failure(attempt("cD10bHMtdW5pcXVlLCw=", std::nullopt)));
  EXPECT_TRUE(is_failure(attempt("", std::nullopt)));
  EXPECT_TRUE(is_failure(attempt(std::nullopt, "rOprNGfwEbeRWgbNEkqO")));
  EXPECT_TRUE(is_failure(attempt(std::nullopt, nonce + "x")));
  EXPECT_TRUE(is_failure(attempt(std::nullopt, "rOprNGfwEbeRWgbNEkqOother")));
  EXPECT_TRUE(is_failure(attempt(std::nullopt, "")));
}

TEST_F(AuthSaslScram, FallbackSaltsDifferPerUser) {
  dir_.users["plain2"].plaintext = "plain secret";
  auto salt_of = [&](ScramHash h, const std::string& user) {
    auto ex = make_scram_exchange(h, dir_.lookup());
    SaslStep s = ex->step(ScramClient(h, user, "x").client_first());
    EXPECT_TRUE(is_challenge(s));
    return b64d(scram_attr(s.data, 's'));
  };
  const std::string a = salt_of(ScramHash::sha256, "plain");
  EXPECT_EQ(a.size(), 16u);
  EXPECT_NE(a, salt_of(ScramHash::sha256, "plain2"));
  EXPECT_NE(a, salt_of(ScramHash::sha1, "plain"));  // one salt per hash
  EXPECT_EQ(a, salt_of(ScramHash::sha256, "plain"));
}

TEST_F(AuthSaslScram, ServerFinalMustBeAcknowledgedWithEmptyResponse) {
  for (std::optional<std::string_view> ack :
       {std::optional<std::string_view>("x"), std::optional<std::string_view>(std::nullopt),
        std::optional<std::string_view>(k256ServerFinal)}) {
    auto ex = after_rfc256_first();
    SaslStep s = ex->step(k256ClientFinal);
    ASSERT_TRUE(is_challenge(s));
    s = ex->step(ack);
    EXPECT_TRUE(is_failure(s));
    EXPECT_TRUE(s.user.empty());
  }
}

TEST_F(AuthSaslScram, EmptyInitialResponseAndMissingResponsesFail) {
  EXPECT_TRUE(is_failure(rfc256()->step("")));  // "=": empty client-first
  auto ex = rfc256();
  ASSERT_TRUE(is_challenge(ex->step(std::nullopt)));
  EXPECT_TRUE(is_failure(ex->step(std::nullopt)));
  ex = after_rfc256_first();
  EXPECT_TRUE(is_failure(ex->step(std::nullopt)));
}

TEST_F(AuthSaslScram, BadInjectedServerNonceFails) {
  for (std::string bad : {"", "a,b", "a b"}) {
    auto ex = make_scram_exchange(ScramHash::sha256, dir_.lookup(), bad);
    EXPECT_TRUE(is_failure(ex->step(k256ClientFirst))) << "[" << bad << "]";
  }
}

TEST_F(AuthSaslScram, NoLookupFunctionFailsSafely) {
  auto ex =
      make_scram_exchange(ScramHash::sha256, CredentialLookup{}, std::string(k256ServerNonce));
  SaslStep s = ex->step(k256ClientFirst);
  ASSERT_TRUE(is_challenge(s));
  EXPECT_TRUE(is_failure(ex->step(k256ClientFinal)));
}

}  // namespace
}  // namespace apop::auth
