// Imported users: foreign hashes (auth/foreign_hash.hpp), the passwd-file and
// popauth parsers (auth/user_import.hpp), the stores' import_foreign_hash and
// the upgrade on the first login over TLS.
#include <gtest/gtest.h>

#include <array>
#include <string>

#include "auth/authenticator.hpp"
#include "auth/base64.hpp"
#include "auth/foreign_hash.hpp"
#include "auth/memory_credential_store.hpp"
#include "auth/password_hash.hpp"
#include "auth/secret_box.hpp"
#include "auth/sqlite_credential_store.hpp"
#include "auth/user_import.hpp"
#include "common/limits.hpp"
#include "temp_dir.hpp"

namespace apop::auth {
namespace {

constexpr std::string_view kPw = "Secret-Pass-1";

// Made with `openssl passwd` and Python's hashlib/crypt (salt "saltsalt" /
// "NaCl1234") for the password "Secret-Pass-1".
struct Vector {
  const char* hash;
};
constexpr Vector kVectors[] = {
    {"{SHA512-CRYPT}$6$saltsalt$IA."
     "34oi8i3EeVL5xXkFpTXC8zhtxlTpR3dus3lLje6mvFYDUCbpEXyXoyx0XzIllcEGB3SBA85YNehD9OSqRX1"},
    {"{SHA256-CRYPT}$5$saltsalt$cjKlx6FjKNWLCba0hDGMTd1LTMILc6wfMH8Ekzw2NL7"},
    {"{MD5-CRYPT}$1$saltsalt$tsYV4ED7alLETiTl82xLy."},
    {"{CRYPT}$6$saltsalt$IA."
     "34oi8i3EeVL5xXkFpTXC8zhtxlTpR3dus3lLje6mvFYDUCbpEXyXoyx0XzIllcEGB3SBA85YNehD9OSqRX1"},
    {"{BLF-CRYPT}$2b$05$abcdefghijklmnopqrstuuer3izhKJhkNwcfXlL6UceoVLdDS44oC"},
    {"{CRYPT}$y$j9T$abcdefghijklmnop$8G7i6y4Xwj/YB6TZ982vzDl3BOivxdRRfQcCpenwzL5"},
    {"{SSHA256}EGYbNuZMfiT9YAWyBiAs4nOeCNpfnvAg0ALlAex9rEJOYUNsMTIzNA=="},
    {"{SSHA}cfL/uX/GAJYXhah7qp0SFiXhFBFOYUNsMTIzNA=="},
    {"{SSHA512}S9U5EhoK0IXS3W5SMbgg+"
     "GnTwaphBmKLiNlX5rs2TPqPd5CD9jRPKPicoLrllv0BJUGqiyr1aJBinW009tjdR05hQ2wxMjM0"},
    {"{SMD5}6FrJRcCAVrZ4mXNPwba2hU5hQ2wxMjM0"},
    {"{SHA}0ZiRi28uaF8Fe8BbYUTP03+Gs1c="},
    {"{sha256.hex}bebdac120d78c309075d91536388c587338c7efa453a33edfe4c10100ec6a857"},
    {"{SHA512}IBCa4n9gQ0nWS3MPjvvDqAdX3+Fk7at25DvjivHHdAXgf70Ci6j8MxdfK3iGZbEk8+"
     "6GfwMBdz0LQ3O9z2d0Tw=="},
    {"{PLAIN-MD5}e7c84164dc3df2d10d088aea32c7a5ba"},
    {"{LDAP-MD5}58hBZNw98tENCIrqMselug=="},
};

TEST(ForeignHash, KnownVectorsVerify) {
  for (const auto& v : kVectors) {
    SCOPED_TRACE(v.hash);
    std::string why;
    auto norm = normalize_foreign_hash(v.hash, why);
    ASSERT_TRUE(norm.has_value()) << why;
    EXPECT_TRUE(verify_foreign_hash(*norm, kPw));
    EXPECT_TRUE(verify_password_hash(*norm, kPw));  // the dispatcher
    EXPECT_FALSE(verify_foreign_hash(*norm, "Secret-Pass-2"));
    EXPECT_FALSE(verify_foreign_hash(*norm, ""));
    EXPECT_FALSE(verify_foreign_hash(*norm, std::string(kPw) + std::string(1, '\0')));
  }
}

TEST(ForeignHash, NormalisesSchemeCase) {
  std::string why;
  auto n = normalize_foreign_hash(
      "{sha256.hex}bebdac120d78c309075d91536388c587338c7efa453a33edfe4c10100ec6a857", why);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->substr(0, 12), "{SHA256.HEX}");
  EXPECT_EQ(foreign_scheme(*n), "SHA256.HEX");
}

TEST(ForeignHash, RefusesWhatItCannotVerify) {
  for (const char* bad : {
           "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ$aGFzaA",
           "{PBKDF2}$1$abc$1000$def",
           "{CRYPT}saltsalt1234",                                  // DES crypt
           "{MD5-CRYPT}$6$saltsalt$IA.34oi8i3EeVL5xXkFpTXC8zhtx",  // scheme/prefix mismatch
           "{SHA512-CRYPT}$6$",                                    // truncated
           "{SHA512-CRYPT}$6$saltsalt$",                           // a setting without the hash
           "{SHA512-CRYPT}$6$rounds=9999999$saltsalt$IA."
           "34oi8i3EeVL5xXkFpTXC8zhtxlTpR3dus3lLje6mvFYDUCbpEXyXoyx0XzIllcEGB3SBA85YNehD9OSqRX1",
           "{BLF-CRYPT}$2b$31$abcdefghijklmnopqrstuuer3izhKJhkNwcfXlL6UceoVLdDS44oC",     // cost
           "{CRYPT}$y$jFT$abcdefghijklmnop$8G7i6y4Xwj/YB6TZ982vzDl3BOivxdRRfQcCpenwzL5",  // N
           "{SHA}not base64!",
           "{SHA}AAAA",                                              // wrong length
           "{SSHA256}EGYbNuZMfiT9YAWyBiAs4nOeCNpfnvAg0ALlAex9rEI=",  // no salt
           "{SHA256.HEX}zz",
           "{SHA.HEX}",
           "{BLF-CRYPT.HEX}$2b$05$abc",
           "no scheme",
           "{}",
       }) {
    SCOPED_TRACE(bad);
    std::string why;
    EXPECT_FALSE(normalize_foreign_hash(bad, why).has_value());
    EXPECT_FALSE(why.empty());
    EXPECT_FALSE(verify_foreign_hash(bad, kPw));
    EXPECT_EQ(why.find("saltsalt"), std::string::npos);  // never echoes the hash
  }
}

// Issue 17 item 8: the work one imported hash may cost per login is capped
// (limits.hpp): above the cap it is refused at import with the reason; at the
// cap it is accepted and verifies.
constexpr std::string_view kBcrypt12 =
    "{BLF-CRYPT}$2b$12$abcdefghijklmnopqrstuue8V.b.5X.pJWyIltuX.PXPCpjXWyGRm";
constexpr std::string_view kBcrypt14 =
    "{BLF-CRYPT}$2b$14$abcdefghijklmnopqrstuuwDHzgxfGt5Km9Hp2nahYKO82JgVlnDG";
constexpr std::string_view kSha512Rounds300k =
    "{SHA512-CRYPT}$6$rounds=300000$saltsalt$LhLzWDh9aUE9uIasISS9p3Ght4NwaZ."
    "N2fqogQ9iIurFimd28oaPTNVSCmt4meT.am3zWE1E3iwt04H6L5bUA0";
constexpr std::string_view kSha512Rounds500k =
    "{SHA512-CRYPT}$6$rounds=500000$saltsalt$TYw5Vcf9Nal.fCv8yA3FyNXh5qYjyG3NFWKXT5qv8fUxhW/"
    "BqQsPYc2Rp2Jo0AYJ/1L16MiP6FeGHXEu4L9Ae1";
constexpr std::string_view kSha256Rounds300001 =
    "{SHA256-CRYPT}$5$rounds=300001$saltsalt$h/k.kJ/.uiRPDhnoQEgCEONgBomWcTJXgsUikXJ7912";
// Costlier than one scrypt, below the caps.
constexpr std::string_view kSha512Rounds100k =
    "{SHA512-CRYPT}$6$rounds=100000$saltsalt$Z8wdFiRqWl7JDSreS9/"
    "TfTtx1dJatIGfahjyGHtKbzvyZiSyQIURxn3LoSlQ4k58dKJeisByXCKYuEtPGJ4Td.";
constexpr std::string_view kBcrypt10 =
    "{BLF-CRYPT}$2b$10$abcdefghijklmnopqrstuuhmQWrO1ut/7HcR0YFZ8jiJMR1D/tcuC";

TEST(ForeignHash, CostAboveTheCapIsRefusedAtImportWithTheReason) {
  static_assert(limits::kMaxImportedBcryptCost == 12);
  static_assert(limits::kMaxImportedShaCryptRounds == 300'000);
  std::string text;
  for (std::string_view h :
       {kBcrypt14, kSha512Rounds500k, kSha256Rounds300001, kBcrypt12, kSha512Rounds300k}) {
    text += "u" + std::to_string(text.size()) + ":" + std::string(h) + "\n";
  }
  text += "sun:{CRYPT}$md5,rounds=65631$fCKJ6hJ7$$oW8dC0Ka9jbBASBqaLsVR/\n";
  text += "nb:{CRYPT}$sha1$210099$wuvafu9A5UbytptkOxCd$kUm6Vi5eAkfgPyhn5T6S2ISkPjxq\n";
  text += "yes:{CRYPT}$y$jCT$abcdefghijklmnop$8G7i6y4Xwj/YB6TZ982vzDl3BOivxdRRfQcCpenwzL5\n";
  const auto lines = parse_dovecot_passwd(text);
  ASSERT_EQ(lines.size(), 8u);
  auto reason = [&](std::size_t i) {
    EXPECT_EQ(lines[i].kind, ImportLine::Kind::skip) << i;
    EXPECT_EQ(lines[i].reason.find("saltsalt"), std::string::npos);  // never echoes the hash
    return lines[i].reason;
  };
  EXPECT_EQ(reason(0),
            "bcrypt cost 14 is above apop's limit of 12 for an imported hash (limits.hpp "
            "kMaxImportedBcryptCost): set a new password");
  EXPECT_EQ(reason(1),
            "SHA-crypt rounds 500000 is above apop's limit of 300000 for an imported hash "
            "(limits.hpp kMaxImportedShaCryptRounds): set a new password");
  EXPECT_NE(reason(2).find("SHA-crypt rounds 300001 is above"), std::string::npos);
  for (std::size_t i : {3u, 4u}) {  // at the cap: accepted, and it verifies
    EXPECT_EQ(lines[i].kind, ImportLine::Kind::hash) << lines[i].reason;
    EXPECT_TRUE(verify_foreign_hash(lines[i].secret, kPw));
  }
  EXPECT_NE(reason(5).find("crypt method $md5,rounds=65631$ is not accepted"), std::string::npos)
      << reason(5);
  EXPECT_NE(reason(6).find("crypt method $sha1$ is not accepted"), std::string::npos) << reason(6);
  // yescrypt N = 2^15, r = 32: 128 MiB per check.
  EXPECT_NE(reason(7).find("yescrypt 128*r*N bytes 134217728 is above"), std::string::npos)
      << reason(7);
}

// A stored hash above the cap (an older apop imported it, or it was written
// by hand) is not verified at all: fail closed, no crypt(3) run.
TEST(ForeignHash, StoredHashAboveTheCapIsNeverVerified) {
  for (std::string_view h : {kBcrypt14, kSha512Rounds500k}) {
    SCOPED_TRACE(h);
    EXPECT_NE(foreign_hash_refusal(h), "");
    const auto crypt_before = foreign_crypt_runs();
    EXPECT_EQ(check_foreign_hash(h, kPw), ForeignCheck::refused);  // even the right password
    EXPECT_EQ(check_password_hash(h, kPw), HashCheck::refused);
    EXPECT_EQ(foreign_crypt_runs(), crypt_before);
  }
  EXPECT_EQ(foreign_hash_refusal(kBcrypt12), "");
}

TEST(ForeignHash, OurOwnHashIsNotForeign) {
  auto h = hash_password("pw");
  ASSERT_TRUE(h);
  EXPECT_FALSE(is_foreign_hash(*h));
  EXPECT_TRUE(is_foreign_hash("{SHA}x"));
  EXPECT_FALSE(is_foreign_hash("{"));
}

// ---------------------------------------------------------------------------

const ImportLine* find(const std::vector<ImportLine>& v, std::size_t line) {
  for (const auto& l : v)
    if (l.line == line) return &l;
  return nullptr;
}

TEST(DovecotPasswd, EveryOutcome) {
  const std::string text =
      "# Dovecot passwd-file\n"
      "alice:{PLAIN}alice-Secret-1:1000:1000::/home/alice::\n"  // 2
      "bob:{SHA512-CRYPT}$6$saltsalt$IA."
      "34oi8i3EeVL5xXkFpTXC8zhtxlTpR3dus3lLje6mvFYDUCbpEXyXoyx0XzIllcEGB3SBA85YNehD9OSqRX1\n"  // 3
      "carol:{CRAM-MD5}0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"     // 4
      "dave:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA\n"                          // 5
      "\n"
      "erin:{PLAIN.B64}U2VjcmV0LVBhc3MtMQ==::::::userdb_quota_rule=*:storage=1G\n"  // 7
      "frank:$1$saltsalt$tsYV4ED7alLETiTl82xLy.\n"           // 8: default CRYPT
      "alice:{PLAIN}again\n"                                 // 9: duplicate
      "bad user:{PLAIN}x\n"                                  // 10
      "gina:\n"                                              // 11: empty
      "hank:{PLAIN}pw:::::: nologin\n"                       // 12
      "ivan\r\n"                                             // 13: no ':'
      "judy:{PLAIN.HEX}536563726574\r\n"                     // 14
      "kim:{SSHA}cfL/uX/GAJYXhah7qp0SFiXhFBFOYUNsMTIzNA==";  // 15, no final LF
  auto v = parse_dovecot_passwd(text);
  ASSERT_EQ(v.size(), 13u);
  using K = ImportLine::Kind;
  auto l = find(v, 2);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->user, "alice");
  EXPECT_EQ(l->kind, K::password);
  EXPECT_EQ(l->secret, "alice-Secret-1");
  l = find(v, 3);
  EXPECT_EQ(l->kind, K::hash);
  EXPECT_EQ(l->scheme, "SHA512-CRYPT");
  EXPECT_TRUE(verify_foreign_hash(l->secret, kPw));
  l = find(v, 4);
  EXPECT_EQ(l->kind, K::skip);
  EXPECT_NE(l->reason.find("CRAM-MD5"), std::string::npos);
  EXPECT_TRUE(l->secret.empty());
  EXPECT_EQ(find(v, 5)->kind, K::skip);
  EXPECT_NE(find(v, 5)->reason.find("ARGON2ID"), std::string::npos);
  l = find(v, 7);
  EXPECT_EQ(l->kind, K::password);
  EXPECT_EQ(l->secret, kPw);
  l = find(v, 8);
  EXPECT_EQ(l->kind, K::hash);
  EXPECT_EQ(l->scheme, "CRYPT");
  EXPECT_TRUE(verify_foreign_hash(l->secret, kPw));
  EXPECT_EQ(find(v, 9)->kind, K::skip);
  EXPECT_NE(find(v, 9)->reason.find("line 2"), std::string::npos);
  EXPECT_EQ(find(v, 10)->kind, K::skip);
  EXPECT_EQ(find(v, 10)->user, "");  // not printable as a name
  EXPECT_EQ(find(v, 11)->reason, "empty password");
  EXPECT_NE(find(v, 12)->reason.find("nologin"), std::string::npos);
  EXPECT_EQ(find(v, 13)->kind, K::skip);
  EXPECT_EQ(find(v, 14)->secret, "Secret");
  EXPECT_EQ(find(v, 15)->kind, K::hash);
  for (const auto& x : v) {
    EXPECT_EQ(x.reason.find("alice-Secret-1"), std::string::npos);
    EXPECT_EQ(x.reason.find("saltsalt"), std::string::npos);
  }
}

TEST(DovecotPasswd, PlaintextMustBeSendable) {
  auto v = parse_dovecot_passwd("a:{PLAIN.HEX}610d62\nb:{PLAIN}" + std::string(201, 'x') + "\n");
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0].kind, ImportLine::Kind::skip);
  EXPECT_EQ(v[1].kind, ImportLine::Kind::skip);
  EXPECT_TRUE(v[0].secret.empty());
}

TEST(Popauth, BothTextForms) {
  auto v = parse_popauth(
      "# popauth -l\n"
      "alice alice-apop-secret\n"
      "bob:   bob secret with spaces  \n"
      "carol\n"
      "\n"
      "  dave\tdave-secret\r\n"
      "alice other\n"
      "bad/name x\n");
  ASSERT_EQ(v.size(), 6u);
  EXPECT_EQ(v[0].user, "alice");
  EXPECT_EQ(v[0].secret, "alice-apop-secret");
  EXPECT_EQ(v[0].kind, ImportLine::Kind::password);
  EXPECT_EQ(v[1].user, "bob");
  EXPECT_EQ(v[1].secret, "bob secret with spaces");
  EXPECT_EQ(v[2].kind, ImportLine::Kind::skip);
  EXPECT_EQ(v[3].user, "dave");
  EXPECT_EQ(v[3].secret, "dave-secret");
  EXPECT_EQ(v[4].kind, ImportLine::Kind::skip);  // duplicate
  EXPECT_EQ(v[5].kind, ImportLine::Kind::skip);  // invalid name
}

// ---------------------------------------------------------------------------

class ImportStoreTest : public ::testing::TestWithParam<bool> {
 protected:
  std::unique_ptr<CredentialStore> make() {
    if (!GetParam()) return std::make_unique<MemoryCredentialStore>();
    std::array<unsigned char, 32> k{};
    k.fill(7);
    auto s = SqliteCredentialStore::open(dir_.path() / "users.sqlite", SecretBox::from_key(k));
    EXPECT_TRUE(s.ok());
    return std::move(*s);
  }
  test::TempDir dir_;
};

constexpr std::string_view kCrypt =
    "{SHA512-CRYPT}$6$saltsalt$IA."
    "34oi8i3EeVL5xXkFpTXC8zhtxlTpR3dus3lLje6mvFYDUCbpEXyXoyx0XzIllcEGB3SBA85YNehD9OSqRX1";

TEST_P(ImportStoreTest, ForeignHashLogsInWithUserPassOnlyThenUpgradesOverTls) {
  auto store = make();
  ASSERT_TRUE(store->import_foreign_hash("bob", kCrypt, false).ok());
  EXPECT_EQ(store->import_foreign_hash("bob", kCrypt, false).error().code, Errc::exists);
  auto list = store->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].foreign_scheme, "SHA512-CRYPT");
  EXPECT_FALSE((*list)[0].has_password_copy);
  {
    auto a = store->account("bob");
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->password.has_value());
    EXPECT_EQ(a->scram_sha256.iterations, 0u);
  }
  StoreAuthenticator auth(*store);
  pop3::AuthContext plain_ctx;
  EXPECT_FALSE(auth.verify_plain("bob", "wrong", plain_ctx).ok);
  auto r = auth.verify_plain("bob", kPw, plain_ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.credential, "password");
  // Still foreign: no upgrade outside TLS; APOP has nothing to check against.
  EXPECT_EQ(store->list()->at(0).foreign_scheme, "SHA512-CRYPT");
  EXPECT_FALSE(
      auth.verify_apop("bob", "<1.2@x>", "0123456789abcdef0123456789abcdef", plain_ctx).ok);

  pop3::AuthContext tls_ctx;
  tls_ctx.tls = true;
  r = auth.verify_plain("bob", kPw, tls_ctx);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.credential, "password-upgraded");
  auto after = store->list();
  EXPECT_EQ(after->at(0).foreign_scheme, "");
  EXPECT_TRUE(after->at(0).has_password_copy);
  auto a = store->account("bob");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->password.has_value());
  EXPECT_EQ(*a->password, kPw);
  EXPECT_GT(a->scram_sha256.iterations, 0u);
  EXPECT_TRUE(auth.verify_plain("bob", kPw, plain_ctx).ok);
}

// AUTH PLAIN and AUTH LOGIN upgrade an imported hash as USER/PASS does
// (StoreAuthenticator::upgrade_foreign_hash), only over TLS.
TEST_P(ImportStoreTest, SaslPlainAndLoginUpgradeForeignHashOverTls) {
  auto store = make();
  ASSERT_TRUE(store->import_foreign_hash("bob", kCrypt, false).ok());
  ASSERT_TRUE(store->import_foreign_hash("carl", kCrypt, false).ok());
  StoreAuthenticator auth(*store);
  auto scheme = [&](std::string_view user) {
    auto list = store->list();
    EXPECT_TRUE(list);
    for (const auto& u : *list) {
      if (u.name == user) return u.foreign_scheme;
    }
    return std::string("?");
  };
  auto plain = [&](std::string_view user, std::string_view pw, bool tls) {
    pop3::AuthContext ctx;
    ctx.tls = tls;
    auto s = auth.start_sasl("PLAIN", ctx);
    EXPECT_TRUE(s);
    return s->step(base64_encode(std::string(1, '\0') + std::string(user) + std::string(1, '\0') +
                                 std::string(pw)));
  };
  auto login = [&](std::string_view user, std::string_view pw, bool tls) {
    pop3::AuthContext ctx;
    ctx.tls = tls;
    auto s = auth.start_sasl("LOGIN", ctx);
    EXPECT_TRUE(s);
    EXPECT_EQ(s->step(std::nullopt).kind, pop3::SaslReply::Kind::challenge);
    EXPECT_EQ(s->step(base64_encode(user)).kind, pop3::SaslReply::Kind::challenge);
    return s->step(base64_encode(pw));
  };
  // Wrong password, or no TLS: no upgrade.
  EXPECT_TRUE(plain("bob", "wrong", true).failed());
  EXPECT_TRUE(login("carl", "wrong", true).failed());
  auto r = plain("bob", kPw, false);
  EXPECT_TRUE(r.succeeded());
  EXPECT_EQ(r.result.credential, "password");
  r = login("carl", kPw, false);
  EXPECT_TRUE(r.succeeded());
  EXPECT_EQ(r.result.credential, "password");
  EXPECT_EQ(scheme("bob"), "SHA512-CRYPT");
  EXPECT_EQ(scheme("carl"), "SHA512-CRYPT");
  // Over TLS: upgraded, once.
  r = plain("bob", kPw, true);
  EXPECT_TRUE(r.succeeded());
  EXPECT_EQ(r.result.credential, "password-upgraded");
  EXPECT_EQ(scheme("bob"), "");
  r = login("carl", kPw, true);
  EXPECT_TRUE(r.succeeded());
  EXPECT_EQ(r.result.credential, "password-upgraded");
  EXPECT_EQ(scheme("carl"), "");
  EXPECT_EQ(plain("bob", kPw, true).result.credential, "password");
  EXPECT_EQ(login("carl", kPw, true).result.credential, "password");
  // Our own secrets now: APOP works.
  auto a = store->account("carl");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->password.has_value());
  EXPECT_EQ(*a->password, kPw);
}

// Issue 17 item 8: a failed check of an imported hash at least as costly as
// scrypt runs no scrypt after it (it once ran one on top of every imported
// check); a cheaper imported hash (a salted digest) is padded with one
// scrypt, the same as an unknown user and an account of our own.
TEST_P(ImportStoreTest, FailedImportedHashLoginRunsNoScryptOnTop) {
  auto store = make();
  ASSERT_TRUE(store->import_foreign_hash("bob", kSha512Rounds100k, false).ok());
  ASSERT_TRUE(store->import_foreign_hash("bea", kBcrypt10, false).ok());
  ASSERT_TRUE(store->import_foreign_hash("sam", kVectors[7].hash, false).ok());  // {SSHA}
  ASSERT_TRUE(store->add("ours", kPw).ok());
  StoreAuthenticator auth(*store);
  const pop3::AuthContext ctx;
  struct Work {
    std::uint64_t scrypt, crypt;
  };
  auto work_of = [&](auto&& login) {
    const Work before{scrypt_runs(), foreign_crypt_runs()};
    login();
    return Work{scrypt_runs() - before.scrypt, foreign_crypt_runs() - before.crypt};
  };
  auto pass = [&](const char* user) {
    return work_of([&] { EXPECT_FALSE(auth.verify_plain(user, "wrong", ctx).ok); });
  };
  auto sasl_plain = [&](const char* user) {
    return work_of([&] {
      auto s = auth.start_sasl("PLAIN", ctx);
      ASSERT_TRUE(s);
      auto r = s->step(base64_encode(std::string(1, '\0') + user + std::string(1, '\0') + "x"));
      EXPECT_TRUE(r.failed());
      EXPECT_EQ(r.result.failure, apop::pop3::AuthFailure::credentials);
    });
  };
  for (const char* user : {"bob", "bea"}) {
    SCOPED_TRACE(user);
    for (Work w : {pass(user), sasl_plain(user)}) {
      EXPECT_EQ(w.crypt, 1u);
      EXPECT_EQ(w.scrypt, 0u);
    }
  }
  // The same scrypt count for a cheap imported hash, an unknown user and ours.
  for (const char* user : {"sam", "nobody", "ours"}) {
    SCOPED_TRACE(user);
    EXPECT_EQ(pass(user).scrypt, 1u);
    EXPECT_EQ(sasl_plain(user).scrypt, 1u);
  }
  // The right password: the costly hash alone, no scrypt either (no upgrade
  // outside TLS).
  const Work ok = work_of([&] { EXPECT_TRUE(auth.verify_plain("bob", kPw, ctx).ok); });
  EXPECT_EQ(ok.scrypt, 0u);
  EXPECT_EQ(ok.crypt, 1u);
}

// A stored imported hash above the cap fails closed (even with the right
// password) without a crypt(3) run, and the login says why for the log.
TEST_P(ImportStoreTest, StoredHashAboveTheCapFailsClosedWithItsReason) {
  auto store = make();
  // The stores take a hash as given (apop user import checks it first).
  ASSERT_TRUE(store->import_foreign_hash("old", kBcrypt14, false).ok());
  StoreAuthenticator auth(*store);
  const pop3::AuthContext tls{true};
  const auto crypt_before = foreign_crypt_runs();
  auto r = auth.verify_plain("old", kPw, tls);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failure, apop::pop3::AuthFailure::policy_imported_hash);
  auto s = auth.start_sasl("PLAIN", tls);
  ASSERT_TRUE(s);
  auto sr = s->step(base64_encode(std::string("\0old\0", 5) + std::string(kPw)));
  EXPECT_TRUE(sr.failed());
  EXPECT_EQ(sr.result.failure, apop::pop3::AuthFailure::policy_imported_hash);
  EXPECT_EQ(foreign_crypt_runs(), crypt_before);
  EXPECT_EQ(store->list()->at(0).foreign_scheme, "BLF-CRYPT");  // not upgraded
}

TEST_P(ImportStoreTest, ReplaceKeepsDeviceSecretsAndRefusesNonForeign) {
  auto store = make();
  ASSERT_TRUE(store->add("carol", "carol-Password-1").ok());
  ASSERT_TRUE(store->add_device_secret("carol", "phone", "phone-Secret-123").ok());
  EXPECT_EQ(store->import_foreign_hash("carol", "$scrypt$x", true).error().code, Errc::invalid);
  EXPECT_EQ(store->import_foreign_hash("bad name", kCrypt, true).error().code, Errc::invalid);
  ASSERT_TRUE(store->import_foreign_hash("carol", kCrypt, true).ok());
  auto a = store->account("carol");
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->password.has_value());
  EXPECT_EQ(a->device_secrets.size(), 1u);
  EXPECT_TRUE(verify_password_hash(a->password_hash, kPw));
  EXPECT_FALSE(verify_password_hash(a->password_hash, "carol-Password-1"));
}

INSTANTIATE_TEST_SUITE_P(Stores, ImportStoreTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Sqlite" : "Memory"; });

}  // namespace
}  // namespace apop::auth
