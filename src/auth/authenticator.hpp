// pop3::Authenticator backed by a CredentialStore: checks credentials and
// enforces each account's policy (allowed mechanisms, device-secrets-only,
// APOP and CRAM-MD5 or every mechanism only inside TLS). On success it reports the
// account's own RFC 2449 LOGIN-DELAY/EXPIRE and last login
// (AuthResult::limits); pop3::Session enforces LOGIN-DELAY with them, so a
// delayed user has passed the same credential check as anyone else and a
// wrong secret is never answered with [LOGIN-DELAY].
//
// Which secret works where:
//   APOP, CRAM-MD5      the password's encrypted copy (unless device-secrets-only)
//                       and every device secret
//   USER/PASS, PLAIN,   the password (slow hash)
//   LOGIN
//   SCRAM-SHA-256/1     the password (stored verifiers)
//
// Ownership: holds non-owning references; the store (and the challenge
// generator) must outlive the authenticator. Thread-safety: as thread-safe
// as the store (all CredentialStore implementations are), no state of its own.
// Never logs; unknown users (and lookup errors) get the same digest/hash work
// against dummy secrets and then fail, and a policy refusal fails after the
// same work as wrong credentials, so replies and timing do not reveal whether
// a user exists (a known user with device secrets costs one MD5 more each).
#pragma once

#include <string_view>

#include "auth/challenge.hpp"
#include "auth/credential_store.hpp"
#include "pop3/interfaces.hpp"

namespace apop::auth {

class StoreAuthenticator final : public pop3::Authenticator {
 public:
  // `challenges` (optional, non-owning) makes CRAM-MD5 challenges; without
  // it CRAM-MD5 is not offered.
  explicit StoreAuthenticator(AccountSource& store, ChallengeGenerator* challenges = nullptr)
      : store_(store), challenges_(challenges) {}

  // RFC 1939 §7 APOP: digest = hex(MD5(timestamp + secret)), either case.
  pop3::AuthResult verify_apop(std::string_view user, std::string_view timestamp,
                               std::string_view digest, const pop3::AuthContext& ctx) override;
  // USER/PASS: the slow hash of the password.
  pop3::AuthResult verify_plain(std::string_view user, std::string_view password,
                                const pop3::AuthContext& ctx) override;

  // RFC 5034 SASL: SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN (the
  // last two are plaintext: the core offers them on secure connections only).
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override;
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mechanism,
                                                const pop3::AuthContext& ctx) override;
  // RFC 2449 LOGIN-DELAY: stores the time as the account's last login
  // (CredentialStore::record_login); a store error is ignored.
  void record_login(std::string_view user, std::int64_t when) override;

 private:
  // After a password login (USER/PASS, PLAIN, LOGIN) with the account's
  // stored `password_hash`: replaces an imported foreign hash by our own
  // secrets when the connection is secure. Returns the credential name for
  // the logs.
  std::string upgrade_foreign_hash(std::string_view user, std::string_view password,
                                   std::string_view password_hash, const pop3::AuthContext& ctx);

  AccountSource& store_;
  ChallengeGenerator* challenges_;
};

// Why `policy` refuses `mechanism` (a kMech* bit) on this connection, or
// AuthFailure::none when it allows it.
pop3::AuthFailure policy_refusal(const EffectivePolicy& policy, MechanismSet mechanism,
                                 const pop3::AuthContext& ctx);

}  // namespace apop::auth
