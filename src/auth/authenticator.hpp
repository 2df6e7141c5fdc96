// pop3::Authenticator backed by a CredentialStore.
//
// Ownership: holds a non-owning reference; the store must outlive the
// authenticator. Thread-safety: as thread-safe as the store (all
// CredentialStore implementations are), no state of its own.
// Never logs; unknown users (and lookup errors) get the same digest/compare
// work against a fixed dummy secret and then fail, so replies and timing do
// not reveal whether a user exists.
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
  explicit StoreAuthenticator(CredentialStore& store, ChallengeGenerator* challenges = nullptr)
      : store_(store), challenges_(challenges) {}

  // RFC 1939 §7 APOP: digest = hex(MD5(timestamp + secret)), either case.
  bool verify_apop(std::string_view user, std::string_view timestamp,
                   std::string_view digest) override;
  // USER/PASS: constant-time comparison with the stored secret.
  bool verify_plain(std::string_view user, std::string_view password) override;

  // RFC 5034 SASL: SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN (the
  // last two are plaintext: the core offers them on secure connections only).
  std::vector<pop3::SaslMechanism> sasl_mechanisms() const override;
  std::unique_ptr<pop3::SaslSession> start_sasl(std::string_view mechanism) override;

 private:
  CredentialStore& store_;
  ChallengeGenerator* challenges_;
};

}  // namespace apop::auth
