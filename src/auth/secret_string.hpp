// A string for plaintext secrets (passwords, APOP/CRAM-MD5 secrets, device
// secrets) that overwrites its bytes with OPENSSL_cleanse whenever they stop
// being its value: on destruction, wipe(), assignment over it, and when it is
// moved from. Unlike a std::string whose destructor wipes size() bytes, it
// also wipes a short string's bytes kept inside the object (the small-string
// buffer, which a move copies and leaves behind) and the whole capacity of a
// long one, before the buffer is freed or reused.
//
// No operator<< and only a constant-time operator== (CRYPTO_memcmp): it is
// read as a std::string_view (view(), or the implicit conversion) by the
// code that hashes or compares it.
// Thread-safety: as std::string.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace apop::auth {

class SecretString {
 public:
  SecretString() = default;
  // Implicit: a secret is taken from wherever it comes (a decrypted
  // std::string, a literal in tests). From an rvalue std::string the source
  // is wiped too.
  SecretString(std::string_view s) : s_(s) {}    // NOLINT(google-explicit-constructor)
  SecretString(const char* s) : s_(s) {}         // NOLINT(google-explicit-constructor)
  SecretString(const std::string& s) : s_(s) {}  // NOLINT(google-explicit-constructor)
  SecretString(std::string&& s) noexcept;        // NOLINT(google-explicit-constructor)
  SecretString(const SecretString& other) : s_(other.s_) {}
  SecretString(SecretString&& other) noexcept;
  SecretString& operator=(const SecretString& other);
  SecretString& operator=(SecretString&& other) noexcept;
  ~SecretString() { wipe(); }

  // Overwrites every byte of the buffer (its whole capacity) and empties it;
  // the buffer itself is kept (data() stays valid).
  void wipe() noexcept;

  std::string_view view() const { return s_; }
  operator std::string_view() const { return s_; }  // NOLINT(google-explicit-constructor)
  const char* data() const { return s_.data(); }
  std::size_t size() const { return s_.size(); }
  std::size_t capacity() const { return s_.capacity(); }
  bool empty() const { return s_.empty(); }

  // Constant time in the contents (not the lengths).
  friend bool operator==(const SecretString& a, std::string_view b);

 private:
  std::string s_;
};

// Overwrites every byte of `s`'s buffer (its whole capacity) and empties it.
void wipe_string(std::string& s) noexcept;

}  // namespace apop::auth
