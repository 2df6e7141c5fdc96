#include "auth/secret_box.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "auth/random.hpp"
#include "common/posix_fd.hpp"

namespace apop::auth {
namespace {

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;

// AES-256-GCM fetched once (see fetched_md in digest.cpp: the legacy
// EVP_aes_256_gcm() object is looked up again at every init); never freed.
const EVP_CIPHER* aes_256_gcm() {
  static const EVP_CIPHER* const cipher = [] {
    const EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    if (c == nullptr) std::abort();
    return c;
  }();
  return cipher;
}

Errc errno_class(int e) {
  switch (e) {
    case EACCES:
    case EPERM:
    case ELOOP:
    case ENOTDIR:
    case EISDIR:
    case EROFS:
      return Errc::permanent;
    default:
      return Errc::temporary;
  }
}

Error sys_error(const std::string& what, const std::filesystem::path& p, int e) {
  return make_error(errno_class(e), what + " " + p.string() + ": " + std::strerror(e));
}

// Reads exactly `out.size()` bytes; false (errno set, or 0 on short file) otherwise.
bool read_all(int fd, std::span<unsigned char> out) {
  const ssize_t got =
      read_full(fd, std::span<char>(reinterpret_cast<char*>(out.data()), out.size()));
  if (got < 0) return false;
  if (static_cast<std::size_t>(got) < out.size()) {
    errno = 0;
    return false;
  }
  return true;
}

void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void SecretBox::KeyWiper::operator()(unsigned char* k) const noexcept {
  OPENSSL_cleanse(k, kKeySize);
  delete[] k;
}

SecretBox SecretBox::from_key(std::span<const unsigned char, kKeySize> key) {
  Key k(new unsigned char[kKeySize]);
  std::memcpy(k.get(), key.data(), kKeySize);
  return SecretBox(std::move(k));
}

SecretBox SecretBox::without_key() { return SecretBox(Key()); }

Result<SecretBox> SecretBox::load(const std::filesystem::path& key_file) {
  int open_errno = 0;
  {
    UniqueFd fd(::open(key_file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
    open_errno = errno;
    if (fd.get() >= 0) {
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) return sys_error("cannot stat key file", key_file, errno);
      if (!S_ISREG(st.st_mode)) {
        return make_error(Errc::permanent, "key file " + key_file.string() +
                                               " is not a regular file; refusing to use it");
      }
      if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return make_error(Errc::permanent,
                          "key file " + key_file.string() + " has mode " + mode +
                              " (group/other access); refusing to use it: run `chmod 600 " +
                              key_file.string() + "`");
      }
      if (st.st_size != static_cast<off_t>(kKeySize)) {
        return make_error(Errc::permanent, "key file " + key_file.string() + " has " +
                                               std::to_string(st.st_size) +
                                               " bytes, expected exactly " +
                                               std::to_string(kKeySize) + "; refusing to use it");
      }
      Key key(new unsigned char[kKeySize]);
      if (!read_all(fd.get(), std::span<unsigned char>(key.get(), kKeySize))) {
        int e = errno;
        if (e == 0) {
          return make_error(Errc::permanent, "key file " + key_file.string() + " is truncated");
        }
        return sys_error("cannot read key file", key_file, e);
      }
      return SecretBox(std::move(key), key_file.string());
    }
  }
  if (open_errno == ELOOP) {
    return make_error(Errc::permanent,
                      "key file " + key_file.string() + " is a symbolic link; refusing to use it");
  }
  if (open_errno == ENOENT) {
    return make_error(Errc::not_found, "key file " + key_file.string() + " does not exist");
  }
  return sys_error("cannot open key file", key_file, open_errno);
}

Result<SecretBox> SecretBox::open_or_create(const std::filesystem::path& key_file) {
  // Attempt 0 loads; if the file is missing we create it and load again (once
  // more if another process won the creation race).
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto loaded = load(key_file);
    if (loaded || loaded.error().code != Errc::not_found) return loaded;

    // Missing: write a new key to a private temporary file, then link it into
    // place (link() never replaces an existing file, so creation is atomic).
    std::array<unsigned char, kKeySize> fresh{};
    if (!random_bytes(fresh)) {
      return make_error(Errc::temporary, "CSPRNG failed while creating key file");
    }
    std::filesystem::path tmp = key_file;
    tmp += ".tmp." + random_hex(8);
    UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (out.get() < 0) {
      OPENSSL_cleanse(fresh.data(), fresh.size());
      return sys_error("cannot create key file", tmp, errno);
    }
    bool ok = ::fchmod(out.get(), 0600) == 0 &&
              write_all(out.get(), std::string_view(reinterpret_cast<const char*>(fresh.data()),
                                                    fresh.size())) &&
              ::fsync(out.get()) == 0;
    int e = errno;
    OPENSSL_cleanse(fresh.data(), fresh.size());
    if (::close(out.release()) != 0 && ok) {
      ok = false;
      e = errno;
    }
    if (!ok) {
      ::unlink(tmp.c_str());
      return sys_error("cannot write key file", tmp, e);
    }
    int linked = ::link(tmp.c_str(), key_file.c_str());
    e = errno;
    ::unlink(tmp.c_str());
    if (linked != 0 && e != EEXIST) return sys_error("cannot create key file", key_file, e);
    fsync_dir(key_file.parent_path());
    // Loop: load what is now in place (ours, or the race winner's).
  }
  return make_error(Errc::temporary, "key file " + key_file.string() + " keeps disappearing");
}

namespace {
// The key check value (the PostgreSQL store has kept it since its schema
// version 1; the SQLite store since its version 5): do not change.
constexpr std::string_view kKeyCheck = "apop secret.key check";
constexpr std::string_view kKeyCheckAad = "\x01key-check";
}  // namespace

Result<std::string> SecretBox::seal_key_check() const { return seal(kKeyCheck, kKeyCheckAad); }

bool SecretBox::opens_key_check(std::string_view sealed) const {
  auto opened = open(sealed, kKeyCheckAad);
  return opened && *opened == kKeyCheck;
}

Error SecretBox::key_mismatch(const std::string& store) const {
  const std::string file = key_file_.empty() ? std::string("the key") : "key file " + key_file_;
  return make_error(Errc::permanent,
                    file + " is not the key the secrets in " + store +
                        " are sealed with: restore the secret.key that belongs to them (from "
                        "a backup, or from a working server: every server and tool needs the "
                        "same one); refusing to use it, nothing was changed");
}

Result<std::string> SecretBox::seal(std::string_view plaintext, std::string_view aad) const {
  if (!key_)
    return make_error(Errc::permanent, "no key loaded (this command runs without secret.key)");
  if (plaintext.size() > static_cast<std::size_t>(INT32_MAX / 2) ||
      aad.size() > static_cast<std::size_t>(INT32_MAX / 2)) {
    return make_error(Errc::invalid, "secret too large to seal");
  }
  std::string out(1 + kNonceSize + plaintext.size() + kTagSize, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  o[0] = kVersion;
  unsigned char* nonce = o + 1;
  unsigned char* ct = nonce + kNonceSize;
  unsigned char* tag = ct + plaintext.size();
  if (!random_bytes(std::span<unsigned char>(nonce, kNonceSize))) {
    return make_error(Errc::temporary, "CSPRNG failed while sealing");
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  int fin = 0;
  bool ok =
      ctx && EVP_EncryptInit_ex(ctx.get(), aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceSize),
                          nullptr) == 1 &&
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key_.get(), nonce) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), ct, &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx.get(), ct + len, &fin) == 1 &&
      static_cast<std::size_t>(len + fin) == plaintext.size() &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag) == 1;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return make_error(Errc::temporary, "AES-256-GCM encryption failed");
  }
  return out;
}

namespace {
std::atomic<std::uint64_t> g_opens{0};  // SecretBox::opens()
}  // namespace

std::uint64_t SecretBox::opens() { return g_opens.load(std::memory_order_relaxed); }

Result<std::string> SecretBox::open(std::string_view sealed, std::string_view aad) const {
  g_opens.fetch_add(1, std::memory_order_relaxed);
  const Error bad = make_error(Errc::permanent,
                               "sealed secret cannot be opened (corrupted or tampered data, wrong "
                               "key file, or row belongs to another user)");
  if (!key_)
    return make_error(Errc::permanent, "no key loaded (this command runs without secret.key)");
  if (sealed.size() < 1 + kNonceSize + kTagSize ||
      sealed.size() > static_cast<std::size_t>(INT32_MAX / 2) ||
      aad.size() > static_cast<std::size_t>(INT32_MAX / 2)) {
    return bad;
  }
  const auto* in = reinterpret_cast<const unsigned char*>(sealed.data());
  if (in[0] != kVersion) {
    return make_error(Errc::permanent, "sealed secret has unknown format version " +
                                           std::to_string(static_cast<unsigned>(in[0])));
  }
  const unsigned char* nonce = in + 1;
  const unsigned char* ct = nonce + kNonceSize;
  const std::size_t ct_len = sealed.size() - 1 - kNonceSize - kTagSize;
  std::array<unsigned char, kTagSize> tag{};
  std::memcpy(tag.data(), ct + ct_len, kTagSize);

  std::string out(ct_len, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  int fin = 0;
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceSize),
                                nullptr) == 1 &&
            EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key_.get(), nonce) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                              reinterpret_cast<const unsigned char*>(aad.data()),
                              static_cast<int>(aad.size())) == 1 &&
            EVP_DecryptUpdate(ctx.get(), o, &len, ct, static_cast<int>(ct_len)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize),
                                tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), o + len, &fin) == 1 &&
            static_cast<std::size_t>(len + fin) == ct_len;
  if (!ok) {
    OPENSSL_cleanse(out.data(), out.size());
    return bad;
  }
  return out;
}

}  // namespace apop::auth
