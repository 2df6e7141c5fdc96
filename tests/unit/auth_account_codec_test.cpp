// auth/account_codec.hpp: the credential domain logic the SQLite, PostgreSQL
// and memory stores share (sealing with the right associated data, the
// keep-a-copy policy, the dummy work of unknown users, the key check, the
// column readers).
#include "auth/account_codec.hpp"

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "auth/password_hash.hpp"

namespace apop::auth {
namespace {

SecretBox test_box(unsigned char fill = 9) {
  std::array<unsigned char, 32> k{};
  k.fill(fill);
  return SecretBox::from_key(k);
}

// The value of a call expected to succeed.
template <class T>
T ok(Result<T> r) {
  if (!r) {
    ADD_FAILURE() << r.error().message;
    return T{};
  }
  return std::move(*r);
}

// A row of the store as it would be read from SQL, one sealed copy.
AccountRow row_with_copy(const AccountCodec& codec, std::string_view user,
                         std::string_view password) {
  AccountRow row;
  row.password_hash = "$scrypt$not-checked-here";
  auto sealed = codec.box().seal(password, password_aad(user));
  EXPECT_TRUE(sealed.ok());
  row.sealed_password = *sealed;
  return row;
}

TEST(AccountCodec, AssociatedDataIsByteForByteTheStoredFormat) {
  // Databases written before the shared module must keep opening: the copy
  // is sealed with the bare user name, a device secret with
  // user NUL "device" NUL name.
  EXPECT_EQ(password_aad("alice"), "alice");
  EXPECT_EQ(device_aad("alice", "phone"), std::string("alice\0device\0phone", 18));
  EXPECT_EQ(device_aad("", ""), std::string("\0device\0", 8));
}

TEST(AccountCodec, UnsealsWhatTheBoxSealedWithTheSameAad) {
  const AccountCodec codec(test_box());
  const SecretBox& box = codec.box();
  AccountRow row = row_with_copy(codec, "alice", "alices-password");
  row.scram_sha256 = "bad verifier";  // decodes to an unusable verifier, not an error
  row.policy.login_delay = 300;
  row.policy.expire_days = 7;
  row.last_login = 1700000000;
  row.mail_location = "mbox:/var/mail/alice";
  std::vector<SealedDevice> devices{
      {"laptop", ok(box.seal("laptop-secret", std::string("alice\0device\0laptop", 19)))},
      {"phone", ok(box.seal("phone-secret", device_aad("alice", "phone")))}};
  auto a = codec.unseal("alice", std::move(row), Policy{}, devices);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->name, "alice");
  EXPECT_EQ(a->password_hash, "$scrypt$not-checked-here");
  EXPECT_EQ(a->scram_sha256.iterations, 0u);
  ASSERT_TRUE(a->password.has_value());
  EXPECT_EQ(a->password->view(), "alices-password");
  ASSERT_EQ(a->device_secrets.size(), 2u);
  EXPECT_EQ(a->device_secrets[0].name, "laptop");
  EXPECT_EQ(a->device_secrets[0].secret.view(), "laptop-secret");
  EXPECT_EQ(a->device_secrets[1].secret.view(), "phone-secret");
  EXPECT_EQ(a->login_delay, 300u);
  EXPECT_EQ(a->expire_days, 7);
  EXPECT_EQ(a->last_login, 1700000000);
  EXPECT_EQ(a->mail_location, "mbox:/var/mail/alice");
}

TEST(AccountCodec, WrongAadOrKeyIsPermanentNotAWrongPassword) {
  const AccountCodec codec(test_box());
  // Alice's copy on Bob's row (a swapped row) does not open.
  auto swapped = codec.unseal("bob", row_with_copy(codec, "alice", "pw"), Policy{}, {});
  ASSERT_FALSE(swapped.ok());
  EXPECT_EQ(swapped.error().code, Errc::permanent);
  EXPECT_NE(swapped.error().message.find("stored password of user bob cannot be decrypted"),
            std::string::npos)
      << swapped.error().message;
  EXPECT_EQ(swapped.error().message.find("pw"), std::string::npos);
  // A device secret renamed (sealed as "phone", stored as "tablet").
  AccountRow plain;
  auto renamed = codec.unseal(
      "alice", std::move(plain), Policy{},
      {{"tablet", ok(codec.box().seal("device-secret", device_aad("alice", "phone")))}});
  ASSERT_FALSE(renamed.ok());
  EXPECT_EQ(renamed.error().code, Errc::permanent);
  EXPECT_NE(renamed.error().message.find("device secret tablet of user alice"), std::string::npos);
  // Another key.
  const AccountCodec other(test_box(10));
  auto wrong_key = other.unseal("alice", row_with_copy(codec, "alice", "pw"), Policy{}, {});
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_EQ(wrong_key.error().code, Errc::permanent);
}

TEST(AccountCodec, DeviceSecretsOnlyDropsTheCopy) {
  const AccountCodec codec(test_box());
  Policy only;
  only.device_secrets_only = true;
  Policy not_only;
  not_only.device_secrets_only = false;
  // Own policy first, then the default.
  EXPECT_TRUE(keeps_password_copy(Policy{}, Policy{}));
  EXPECT_FALSE(keeps_password_copy(only, Policy{}));
  EXPECT_FALSE(keeps_password_copy(Policy{}, only));
  EXPECT_TRUE(keeps_password_copy(not_only, only));
  const SealedPassword sealed{"h", "v256", "v1", "sealed-copy"};
  EXPECT_EQ(sealed.copy_for(Policy{}, Policy{}), std::optional<std::string_view>("sealed-copy"));
  EXPECT_EQ(sealed.copy_for(Policy{}, only), std::nullopt);
  EXPECT_EQ(sealed.copy_for(only, Policy{}), std::nullopt);
  EXPECT_EQ(sealed.copy_for(not_only, only), std::optional<std::string_view>("sealed-copy"));
  // A copy still in the row is neither returned nor decrypted.
  const auto opens = SecretBox::opens();
  auto a = codec.unseal("alice", row_with_copy(codec, "alice", "pw"), only, {});
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_FALSE(a->password.has_value());
  EXPECT_TRUE(a->policy.device_secrets_only);
  EXPECT_EQ(SecretBox::opens() - opens, 0u);
}

TEST(AccountCodec, UnknownUserCostsOneDecryptionLikeAKnownOne) {
  const AccountCodec codec(test_box());
  auto before = SecretBox::opens();
  const Error e = codec.unknown_user("nobody");
  EXPECT_EQ(SecretBox::opens() - before, 1u);
  EXPECT_EQ(e.code, Errc::not_found);
  EXPECT_EQ(e.message, "no such user: nobody");
  before = SecretBox::opens();
  ASSERT_TRUE(codec.unseal("alice", row_with_copy(codec, "alice", "pw"), Policy{}, {}).ok());
  EXPECT_EQ(SecretBox::opens() - before, 1u);
}

TEST(AccountCodec, SealsANewPasswordForStorage) {
  const AccountCodec codec(test_box());
  auto sealed = codec.seal_password("alice", "alices-password");
  ASSERT_TRUE(sealed.ok()) << sealed.error().message;
  EXPECT_TRUE(verify_password_hash(sealed->hash, "alices-password"));
  EXPECT_TRUE(decode_verifier(sealed->scram_sha256).has_value());
  EXPECT_TRUE(decode_verifier(sealed->scram_sha1).has_value());
  EXPECT_EQ(sealed->sealed_copy.find("alices-password"), std::string::npos);
  // The copy opens with the user name as associated data, and only so.
  auto opened = codec.box().open(sealed->sealed_copy, "alice");
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(*opened, "alices-password");
  EXPECT_FALSE(codec.box().open(sealed->sealed_copy, "bob").ok());
  auto device = codec.seal_device_secret("alice", "phone", "phone-secret");
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(ok(codec.box().open(*device, device_aad("alice", "phone"))), "phone-secret");
}

TEST(AccountCodec, DeviceSecretChecks) {
  const AccountCodec codec(test_box());
  EXPECT_TRUE(check_new_device_secret("phone-1.a_b", "s").ok());
  EXPECT_EQ(check_new_device_secret("bad name", "s").error().code, Errc::invalid);
  EXPECT_EQ(check_new_device_secret(std::string(33, 'a'), "s").error().code, Errc::invalid);
  EXPECT_EQ(check_new_device_secret("phone", "").error().message, "empty secret");

  auto hash = hash_password("account-password");
  ASSERT_TRUE(hash.ok());
  EXPECT_EQ(check_differs_from_password(*hash, "account-password").error().code, Errc::invalid);
  EXPECT_TRUE(check_differs_from_password(*hash, "other-secret").ok());

  // A new password must not equal a device secret; one that does not open
  // (another key) is skipped rather than blocking the new password.
  const AccountCodec other(test_box(10));
  std::vector<SealedDevice> devices{
      {"broken", ok(other.seal_device_secret("alice", "broken", "new-password"))},
      {"phone", ok(codec.seal_device_secret("alice", "phone", "phone-secret"))}};
  EXPECT_TRUE(codec.check_differs_from_devices("alice", "new-password", devices).ok());
  auto same = codec.check_differs_from_devices("alice", "phone-secret", devices);
  ASSERT_FALSE(same.ok());
  EXPECT_EQ(same.error().code, Errc::invalid);
  EXPECT_EQ(same.error().message, "the password equals device secret phone");
}

TEST(AccountCodec, DefaultPolicyHasNoLoginLimits) {
  EXPECT_TRUE(check_default_policy(Policy{}).ok());
  Policy delay;
  delay.login_delay = 60;
  EXPECT_EQ(check_default_policy(delay).error().code, Errc::invalid);
  Policy expire;
  expire.expire_days = kExpireNever;
  EXPECT_EQ(check_default_policy(expire).error().code, Errc::invalid);
}

TEST(AccountCodec, KeyCheck) {
  const SecretBox box = test_box();
  const SecretBox other = test_box(10);
  const std::string where = "users.db";
  // Nothing stored yet: a check value to write, which opens with the key.
  auto fresh = check_key(box, KeySample{}, where);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(fresh->has_value());
  EXPECT_TRUE(box.opens_key_check(**fresh));
  // A stored value: nothing to write with the right key, a mismatch with another.
  KeySample stored;
  stored.check = **fresh;
  auto same = check_key(box, stored, where);
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same->has_value());
  auto wrong = check_key(other, stored, where);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, Errc::permanent);
  EXPECT_NE(wrong.error().message.find(where), std::string::npos);
  // No value yet (an old database): the sampled secrets decide.
  KeySample old;
  old.password.emplace("alice", ok(box.seal("pw", "alice")));
  old.device.emplace("alice",
                     SealedDevice{"phone", ok(box.seal("s", device_aad("alice", "phone")))});
  auto opens = check_key(box, old, where);
  ASSERT_TRUE(opens.ok());
  EXPECT_TRUE(opens->has_value());
  EXPECT_EQ(check_key(other, old, where).error().code, Errc::permanent);
  KeySample swapped_device;
  swapped_device.device.emplace("bob", old.device->second);
  EXPECT_EQ(check_key(box, swapped_device, where).error().code, Errc::permanent);
}

// A row of columns, as a SQL result would give it (monostate: NULL).
struct FakeRow {
  std::vector<std::variant<std::monostate, std::string, std::int64_t>> cols;
  bool is_null(int i) const { return std::holds_alternative<std::monostate>(cols.at(i)); }
  std::string text(int i) const { return is_null(i) ? "" : std::get<std::string>(cols.at(i)); }
  std::string blob(int i) const { return text(i); }
  std::int64_t integer(int i) const { return is_null(i) ? 0 : std::get<std::int64_t>(cols.at(i)); }
  std::optional<std::int64_t> opt_integer(int i) const {
    if (is_null(i)) return std::nullopt;
    return integer(i);
  }
  std::optional<bool> opt_boolean(int i) const {
    if (is_null(i)) return std::nullopt;
    return integer(i) != 0;
  }
};

TEST(AccountCodec, ColumnReadersFollowTheDocumentedOrder) {
  using V = std::int64_t;
  const std::monostate null;
  // password_hash, scram_sha256, scram_sha1, sealed_password, mechanisms,
  // device_secrets_only, apop_requires_tls, require_tls, login_delay,
  // expire_days, last_login, mail_location, quota_bytes, quota_messages
  const FakeRow account{{std::string("hash"), std::string("v256"), std::string("v1"),
                         std::string("sealed"), std::string("apop,user"), V{1}, null, V{0},
                         V{0x100000000}, V{-1}, V{1700000000}, std::string("maildir:~/Mail"),
                         V{1073741824}, V{0}}};
  const AccountRow a = read_account_row(account);
  EXPECT_EQ(a.password_hash, "hash");
  EXPECT_EQ(a.scram_sha256, "v256");
  EXPECT_EQ(a.scram_sha1, "v1");
  EXPECT_EQ(a.sealed_password, "sealed");
  EXPECT_EQ(a.policy.mechanisms, kMechApop | kMechUser);
  EXPECT_EQ(a.policy.device_secrets_only, true);
  EXPECT_EQ(a.policy.md5_challenge_requires_tls, std::nullopt);
  EXPECT_EQ(a.policy.require_tls, false);
  EXPECT_EQ(a.policy.login_delay, std::nullopt);  // out of range reads as unset
  EXPECT_EQ(a.policy.expire_days, kExpireNever);
  EXPECT_EQ(a.last_login, 1700000000);
  EXPECT_EQ(a.mail_location, "maildir:~/Mail");
  EXPECT_EQ(a.quota, (AccountQuota{1073741824u, 0u}));

  const FakeRow no_copy{{std::string("hash"), std::string(""), std::string(""), null, null, null,
                         null, null, V{30}, null, null, null, null, V{-5}}};
  const AccountRow b = read_account_row(no_copy);
  EXPECT_EQ(b.sealed_password, std::nullopt);
  Policy delay_only;
  delay_only.login_delay = 30;
  EXPECT_EQ(b.policy, delay_only);
  EXPECT_EQ(b.mail_location, std::nullopt);
  EXPECT_EQ(b.quota, AccountQuota{});  // a negative limit reads as unset

  // name, created, updated, device secrets, has copy, six policy columns,
  // last_login, password_hash, mail_location, quota_bytes, quota_messages
  const FakeRow user{{std::string("alice"), V{10}, V{20}, V{2}, V{1}, null, null, V{1}, null, null,
                      null, null, std::string("{SHA512-CRYPT}$6$x$y"), null, null, V{500}}};
  const UserRecord u = read_user_record(user);
  EXPECT_EQ(u.name, "alice");
  EXPECT_EQ(u.created, 10);
  EXPECT_EQ(u.updated, 20);
  EXPECT_EQ(u.device_secrets, 2u);
  EXPECT_TRUE(u.has_password_copy);
  EXPECT_EQ(u.policy.md5_challenge_requires_tls, true);
  EXPECT_EQ(u.last_login, std::nullopt);
  EXPECT_EQ(u.foreign_scheme, "SHA512-CRYPT");
  EXPECT_EQ(u.mail_location, std::nullopt);
  EXPECT_EQ(u.quota, (AccountQuota{std::nullopt, 500u}));
}

TEST(AccountCodec, PolicyColumnsRoundTrip) {
  Policy p;
  p.mechanisms = kMechScramSha256 | kMechApop;
  p.md5_challenge_requires_tls = true;
  p.login_delay = 900;
  p.expire_days = 30;
  const PolicyColumns c = policy_columns(p);
  EXPECT_EQ(c.mechanisms, "apop,scram-sha-256");
  EXPECT_EQ(c.device_secrets_only, std::nullopt);
  EXPECT_EQ(c.apop_requires_tls, true);
  EXPECT_EQ(c.login_delay, 900);
  EXPECT_EQ(c.expire_days, 30);
  auto opt =
      [](const std::optional<bool>& b) -> std::variant<std::monostate, std::string, std::int64_t> {
    if (!b) return std::monostate{};
    return std::int64_t{*b ? 1 : 0};
  };
  const FakeRow back{{*c.mechanisms, opt(c.device_secrets_only), opt(c.apop_requires_tls),
                      opt(c.require_tls), *c.login_delay, *c.expire_days}};
  EXPECT_EQ(read_own_policy(back, 0), p);
}

}  // namespace
}  // namespace apop::auth
