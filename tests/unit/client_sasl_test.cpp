// SASL client mechanisms against the RFC examples (RFC 7677 SCRAM-SHA-256,
// RFC 2195 CRAM-MD5) and against refusals a hostile server could provoke.
#include <gtest/gtest.h>

#include <string>

#include "auth/base64.hpp"
#include "client/protocol.hpp"

namespace apop::client {
namespace {

constexpr const char* kServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

TEST(ClientScram, Rfc7677Example) {
  ScramClient c("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
  EXPECT_EQ(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final_msg = c.client_final(kServerFirst);
  ASSERT_TRUE(final_msg) << final_msg.error().message;
  EXPECT_EQ(*final_msg,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  EXPECT_TRUE(c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
}

TEST(ClientScram, WrongServerSignatureIsRefused) {
  ScramClient c("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
  ASSERT_TRUE(c.client_final(kServerFirst));
  auto bad = c.verify_server_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::auth_failed);
  EXPECT_FALSE(c.verify_server_final("v=notbase64!"));
  EXPECT_FALSE(c.verify_server_final(""));
  auto e = c.verify_server_final("e=invalid-proof");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, Errc::auth_failed);
}

TEST(ClientScram, WrongPasswordGivesDifferentProof) {
  ScramClient c("user", "pencil2", "rOprNGfwEbeRWgbNEkqO");
  auto f = c.client_final(kServerFirst);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->find("p=dHzbZapWIk4jUhN"), std::string::npos);
  EXPECT_FALSE(c.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
}

TEST(ClientScram, RefusesHostileServerFirst) {
  const char* bad[] = {
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095",        // too few iterations
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",           // far too few
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1000000000",  // absurd
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999999",
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-4096",
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
      "r=OTHERNONCE,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",                    // nonce not ours
      "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",          // nonce not extended
      "r=rOprNGfwEbeRWgbNEkqO%x,s=,i=4096",                                // empty salt
      "r=rOprNGfwEbeRWgbNEkqO%x,s=!!!,i=4096",                             // bad base64
      "r=rOprNGfwEbeRWgbNEkqO%x,i=4096",                                   // no salt
      "r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==",               // no count
      "m=ext,r=rOprNGfwEbeRWgbNEkqO%x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // mandatory ext
      "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqO%x,i=4096",        // order
      "",
  };
  for (const char* s : bad) {
    ScramClient c("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
    EXPECT_FALSE(c.client_final(s)) << s;
  }
}

TEST(ClientScram, RandomNonceAndEscaping) {
  ScramClient a("a,b=c", "pw");
  ScramClient b("a,b=c", "pw");
  EXPECT_EQ(a.client_first().rfind("n,,n=a=2Cb=3Dc,r=", 0), 0u);
  EXPECT_NE(a.client_first(), b.client_first());
  EXPECT_GE(a.client_first().size(), std::string("n,,n=a=2Cb=3Dc,r=").size() + 32);
  EXPECT_FALSE(
      a.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));  // before final
}

TEST(ClientCramMd5, Rfc2195Example) {
  EXPECT_EQ(
      cram_md5_response("tim", "tanstaaftanstaaf", "<1896.697170952@postoffice.reston.mci.net>"),
      "tim b913a602c7eda7a495b4e6e7334d3890");
}

TEST(ClientPlain, Rfc4616Layout) {
  EXPECT_EQ(plain_response("tim", "tanstaaf"), std::string("\0tim\0tanstaaf", 13));
  EXPECT_EQ(auth::base64_encode(plain_response("tim", "tanstaaf")), "AHRpbQB0YW5zdGFhZg==");
}

}  // namespace
}  // namespace apop::client
