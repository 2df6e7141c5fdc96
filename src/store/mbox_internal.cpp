// Helpers shared by the mbox files (store/mbox_internal.hpp).
#include "store/mbox_internal.hpp"
#include "common/text.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <span>

#include <cerrno>
#include <cstdlib>

#include "common/posix_fd.hpp"

namespace apop::store::mbox_detail {

namespace fs = std::filesystem;

ssize_t pread_retry(int fd, char* buf, std::size_t n, off_t off) {
  for (;;) {
    const ssize_t r = ::pread(fd, buf, n, off);
    if (r >= 0 || errno != EINTR) return r;
  }
}

Sha1::Sha1() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha1(), nullptr) != 1) std::abort();
}

Sha1::~Sha1() { EVP_MD_CTX_free(ctx_); }

void Sha1::update(std::string_view s) {
  if (!s.empty() && EVP_DigestUpdate(ctx_, s.data(), s.size()) != 1) std::abort();
}

std::string Sha1::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx_, md, &len) != 1 || len < 20) std::abort();
  return to_hex(std::span<const unsigned char>(md, 20));
}

std::string sha1_hex(std::string_view s) {
  Sha1 h;
  h.update(s);
  return h.hex();
}

// Whether fd is (still) the file at `path`.
bool same_file(int fd, const fs::path& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

fs::path dir_of(const fs::path& file) {
  fs::path d = file.parent_path();
  return d.empty() ? fs::path(".") : d;
}

// A name for per-file state in a server directory: PREFIX + hash of the path.
std::string path_key(const fs::path& file) {
  std::error_code ec;
  fs::path abs = fs::absolute(file, ec);
  if (ec) abs = file;
  return sha1_hex(abs.lexically_normal().string()).substr(0, 32);
}

Result<void> fsync_dir_of(const fs::path& path) {
  const fs::path dir = dir_of(path);
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open directory " + dir.string(), errno);
  if (fsync_retry(d.get()) != 0) return sys_error("fsync " + dir.string(), errno);
  return {};
}

Result<void> pread_exact(int fd, char* buf, std::size_t n, std::uint64_t off,
                         const std::string& label) {
  while (n > 0) {
    const ssize_t r = pread_retry(fd, buf, n, static_cast<off_t>(off));
    if (r < 0) return sys_error("read " + label, errno);
    if (r == 0) return make_error(Errc::temporary, "read " + label + ": unexpected end of file");
    buf += r;
    n -= static_cast<std::size_t>(r);
    off += static_cast<std::uint64_t>(r);
  }
  return {};
}

Result<void> pwrite_all(int fd, std::string_view data, std::uint64_t off,
                        const std::string& label) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + label, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    off += static_cast<std::uint64_t>(n);
  }
  return {};
}

// Sets FILE's atime and mtime back to those of `st` (mail readers tell new
// mail by mtime > atime). Needs ownership (or root): skipped otherwise.
void keep_times(int fd, const struct stat& st) {
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  (void)::futimens(fd, times);
}

}  // namespace apop::store::mbox_detail
