#include "auth/secret_string.hpp"

#include <openssl/crypto.h>

#include <utility>

namespace apop::auth {

void wipe_string(std::string& s) noexcept {
  // resize() within the capacity never reallocates: every byte of the buffer
  // becomes part of the string, so all of them are overwritten (a short
  // string's buffer inside the object included), then the string is emptied.
  s.resize(s.capacity());
  OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

SecretString::SecretString(std::string&& s) noexcept : s_(std::move(s)) { wipe_string(s); }

SecretString::SecretString(SecretString&& other) noexcept : s_(std::move(other.s_)) {
  // A long string's buffer moved here; a short one was copied and its bytes
  // are still in `other`'s small-string buffer.
  other.wipe();
}

SecretString& SecretString::operator=(const SecretString& other) {
  if (this != &other) {
    wipe();
    s_ = other.s_;
  }
  return *this;
}

SecretString& SecretString::operator=(SecretString&& other) noexcept {
  if (this != &other) {
    wipe();
    s_ = std::move(other.s_);
    other.wipe();
  }
  return *this;
}

void SecretString::wipe() noexcept { wipe_string(s_); }

bool operator==(const SecretString& a, std::string_view b) {
  return a.s_.size() == b.size() && CRYPTO_memcmp(a.s_.data(), b.data(), b.size()) == 0;
}

}  // namespace apop::auth
