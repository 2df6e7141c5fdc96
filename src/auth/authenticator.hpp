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

#include "auth/credential_store.hpp"
#include "pop3/interfaces.hpp"

namespace apop::auth {

class StoreAuthenticator final : public pop3::Authenticator {
 public:
  explicit StoreAuthenticator(CredentialStore& store) : store_(store) {}

  // RFC 1939 §7 APOP: digest = hex(MD5(timestamp + secret)), either case.
  bool verify_apop(std::string_view user, std::string_view timestamp,
                   std::string_view digest) override;
  // USER/PASS: constant-time comparison with the stored secret.
  bool verify_plain(std::string_view user, std::string_view password) override;

 private:
  CredentialStore& store_;
};

}  // namespace apop::auth
