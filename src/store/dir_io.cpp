#include "store/dir_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/posix_fd.hpp"

namespace apop::store {

Error sys_error(const std::string& what, int err) {
  return make_error(Errc::temporary, what + ": " + std::strerror(err));
}

int open_dir_at(int dirfd, const char* name) {
  return ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int for_each_dir_entry(int dirfd, const std::function<void(std::string_view, unsigned char)>& f) {
  // The record getdents64(2) fills (linux_dirent64; glibc declares the call
  // but not the type).
  struct Dirent64 {
    std::uint64_t d_ino;
    std::int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[1];
  };
  if (::lseek(dirfd, 0, SEEK_SET) != 0) return errno;
  // 32 KiB as glibc's readdir uses: a 100,000-name cur/ takes some 200 calls.
  alignas(Dirent64) char buf[32 * 1024];
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::getdents64(dirfd, buf, sizeof buf); });
    if (n < 0) return errno;
    if (n == 0) return 0;
    for (ssize_t off = 0; off < n;) {
      Dirent64 e;
      std::memcpy(&e, buf + off, offsetof(Dirent64, d_name));
      const char* name = buf + off + offsetof(Dirent64, d_name);
      off += e.d_reclen;
      if (e.d_reclen == 0) return EIO;  // never from a sane kernel; no endless loop
      if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
      f(std::string_view(name), e.d_type);
    }
  }
}

Result<std::vector<std::string>> list_files(int dirfd, const std::string& label,
                                            std::size_t expect) {
  std::vector<std::string> names;
  names.reserve(expect);
  const int err = for_each_dir_entry(dirfd, [&](std::string_view name, unsigned char type) {
    if (name.front() == '.') return;
    bool regular = type == DT_REG;
    if (type == DT_UNKNOWN) {
      const std::string n(name);
      struct stat st {};
      regular = ::fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
    }
    if (regular) names.emplace_back(name);
  });
  if (err != 0) return sys_error("readdir " + label, err);
  return names;
}

ssize_t read_retry(int fd, char* buf, std::size_t n) {
  return retry_eintr([&] { return ::read(fd, buf, n); });
}

int fsync_retry(int fd) {
  return retry_eintr([fd] { return ::fsync(fd); });
}

}  // namespace apop::store
