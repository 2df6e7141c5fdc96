#include "store/dir_io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/posix_fd.hpp"

namespace apop::store {

Error sys_error(const std::string& what, int err) {
  return make_error(Errc::temporary, what + ": " + std::strerror(err));
}

int open_dir_at(int dirfd, const char* name) {
  return ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

Result<std::vector<std::string>> list_files(int dirfd, const std::string& label,
                                            std::size_t expect) {
  UniqueFd fd(open_dir_at(dirfd, "."));
  if (!fd) return sys_error("open " + label, errno);
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return sys_error("fdopendir " + label, errno);
  fd.release();  // closedir closes it
  std::vector<std::string> names;
  names.reserve(expect);
  int err = 0;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      err = errno;
      break;
    }
    if (e->d_name[0] == '.') continue;
    bool regular = e->d_type == DT_REG;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      regular =
          ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
    }
    if (regular) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  if (err != 0) return sys_error("readdir " + label, err);
  return names;
}

int fsync_retry(int fd) {
  for (;;) {
    const int r = ::fsync(fd);
    if (r == 0 || errno != EINTR) return r;
  }
}

}  // namespace apop::store
