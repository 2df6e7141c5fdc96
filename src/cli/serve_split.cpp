#include "cli/serve_split.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/posix_fd.hpp"

namespace apop::cli {

namespace {

Error failed(const std::string& what) {
  return make_error(Errc::permanent, what + ": " + std::strerror(errno));
}

// Gives the open file `fd` (named `name` for the log) this owner, group and
// mode, logging what changed.
Result<void> set_owner(int fd, const std::string& name, uid_t uid, gid_t gid, mode_t mode) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return failed("stat " + name);
  if (st.st_uid != uid || st.st_gid != gid) {
    if (::fchown(fd, uid, gid) != 0) return failed("chown " + name);
    spdlog::info("auth_user: {} owner {}:{} (was {}:{})", name, uid, gid, st.st_uid, st.st_gid);
  }
  if ((st.st_mode & 07777) != mode) {
    if (::fchmod(fd, mode) != 0) return failed("chmod " + name);
    spdlog::info("auth_user: {} mode {:04o} (was {:04o})", name, mode, st.st_mode & 07777);
  }
  return {};
}

}  // namespace

Result<void> split_data_dir(const DataDir& dir, const net::Identity& auth,
                            const net::Identity& service) {
  const std::string root = dir.root.string();
  if (::mkdir(root.c_str(), 0710) != 0 && errno != EEXIST) return failed("mkdir " + root);
  UniqueFd dfd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) return failed("open " + root + " (a directory, not a symbolic link)");
  if (auto r = set_owner(dfd.get(), root, auth.uid, service.gid, 0710); !r) return r;
  // The auth user's files.
  const std::string db = dir.users_db().filename().string();
  for (const std::string& name :
       {dir.key_file().filename().string(), db, db + "-wal", db + "-shm", db + "-journal"}) {
    UniqueFd fd(::openat(dfd.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    const std::string path = root + "/" + name;
    if (!fd) {
      if (errno == ENOENT) continue;
      return failed("open " + path + " (a regular file, not a symbolic link)");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return failed("stat " + path);
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
      return make_error(Errc::permanent,
                        path +
                            " must be a regular file with one link (it is handed to the auth "
                            "user)");
    }
    if (auto r = set_owner(fd.get(), path, auth.uid, auth.gid, 0600); !r) return r;
  }
  // The service user's directories: created here (the service user cannot
  // create anything in the data directory any more).
  for (const std::string& name :
       {dir.mail_root().filename().string(), std::string("locks"), std::string("mbox-journal")}) {
    const std::string path = root + "/" + name;
    const bool made = ::mkdirat(dfd.get(), name.c_str(), 0700) == 0;
    if (!made && errno != EEXIST) return failed("mkdir " + path);
    UniqueFd fd(::openat(dfd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return failed("open " + path + " (a directory, not a symbolic link)");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return failed("stat " + path);
    if (made || st.st_uid == auth.uid || st.st_uid == 0) {
      // New, or left by a process that was not the service user.
      if (auto r = set_owner(fd.get(), path, service.uid, service.gid, 0700); !r) return r;
    }
  }
  return {};
}

}  // namespace apop::cli
