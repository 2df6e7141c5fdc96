// AES-256-GCM encryption of secrets at rest (the credential database).
//
// Sealed format: version 0x01 || 12-byte random nonce || ciphertext ||
// 16-byte GCM tag. The associated data (the user name) is authenticated, so a
// sealed secret copied onto another user's row does not open.
//
// Ownership: a SecretBox owns its 32-byte key on the heap and wipes it
// (OPENSSL_cleanse) on destruction. Movable, not copyable; a moved-from box
// holds no key and every seal/open on it fails with Errc::permanent.
// Thread-safety: seal() and open() are const and may run concurrently on one
// box (each call uses its own cipher context).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::auth {

class SecretBox {
 public:
  static constexpr std::size_t kKeySize = 32;
  static constexpr std::size_t kNonceSize = 12;
  static constexpr std::size_t kTagSize = 16;
  static constexpr unsigned char kVersion = 0x01;

  // Loads `key_file` (exactly 32 raw bytes). When it does not exist, creates
  // it with 32 CSPRNG bytes, mode 0600, fsynced, race-safe: the key is written
  // to a private temporary file (O_CREAT|O_EXCL) and hard-linked into place,
  // so other processes see either no file or the complete key; if another
  // process won the race, its key is loaded. The parent directory must exist.
  // Errors: Errc::permanent for a key file of the wrong size, one that is not
  // a regular file (symlinks are not followed), or one with any group/other
  // permission bits (mode & 077); Errc::temporary for I/O errors.
  static Result<SecretBox> open_or_create(const std::filesystem::path& key_file);

  // Loads `key_file` as open_or_create does, but never creates it:
  // Errc::not_found when it does not exist (same checks otherwise).
  static Result<SecretBox> load(const std::filesystem::path& key_file);

  // A box without a key, for commands that need none (`apop deliver`): the
  // stores open with it without checking the key, and every seal/open fails
  // with Errc::permanent.
  static SecretBox without_key();

  // A box with the given key (tests, tools). The key is copied.
  static SecretBox from_key(std::span<const unsigned char, kKeySize> key);

  SecretBox(SecretBox&&) noexcept = default;
  SecretBox& operator=(SecretBox&&) noexcept = default;
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;
  ~SecretBox() = default;  // the key's deleter wipes it

  // Encrypts `plaintext` with a fresh random nonce, binding `aad`.
  // Errc::temporary if the CSPRNG/cipher fails.
  Result<std::string> seal(std::string_view plaintext, std::string_view aad) const;

  // Decrypts and authenticates. Errc::permanent when the data is truncated,
  // has an unknown version, was tampered with, or the key or aad differ.
  Result<std::string> open(std::string_view sealed, std::string_view aad) const;

  bool has_key() const { return key_ != nullptr; }
  // The key file this box was loaded from ("" for from_key/without_key),
  // for error messages.
  const std::string& key_file() const { return key_file_; }

  // The key check value a credential store keeps with its sealed secrets
  // (SQLite and PostgreSQL alike): a constant sealed with this box. A store
  // opened with another key finds that the check does not open and refuses
  // (key_mismatch) before it changes anything.
  Result<std::string> seal_key_check() const;
  // True when `sealed` (from seal_key_check) opens with this box.
  bool opens_key_check(std::string_view sealed) const;
  // Errc::permanent: this box's key file is not the key the secrets of
  // `store` (e.g. "/data/users.sqlite") are sealed with.
  Error key_mismatch(const std::string& store) const;

  // Test seam: how many open() calls this process made, on any box
  // (relaxed atomic).
  static std::uint64_t opens();

 private:
  struct KeyWiper {
    void operator()(unsigned char* k) const noexcept;
  };
  using Key = std::unique_ptr<unsigned char[], KeyWiper>;
  explicit SecretBox(Key key, std::string key_file = {})
      : key_(std::move(key)), key_file_(std::move(key_file)) {}
  Key key_;
  std::string key_file_;
};

}  // namespace apop::auth
