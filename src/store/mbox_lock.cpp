// The mbox locks (store/mbox.hpp, "Locking"): the dotlock FILE.lock and an
// fcntl (OFD) lock on FILE, as Postfix, procmail and mutt take them.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "store/dir_io.hpp"
#include "store/mbox.hpp"
#include "store/mbox_internal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

void backoff(int attempt) {
  const int ms = attempt < 5 ? 10 << attempt : 200;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 200)));
}

// A dotlock is stale when older than `stale`, or when it names (as procmail
// and liblockfile write it) the PID of a process that no longer exists.
bool dotlock_stale(const std::string& path, const struct stat& st, std::chrono::seconds stale) {
  const std::time_t now = std::time(nullptr);
  if (now - st.st_mtime > static_cast<std::time_t>(stale.count())) return true;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) return false;
  char buf[32] = {};
  const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return false;
  char* endp = nullptr;
  const long pid = std::strtol(buf, &endp, 10);
  if (pid <= 0 || endp == buf || (*endp != '\n' && *endp != '\0')) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::string dotlock_private_name(const std::string& dotlock, long pid, unsigned n) {
  return dotlock + "." + std::to_string(pid) + "." + std::to_string(n) + ".apop";
}

Result<std::unique_ptr<MboxLock>> MboxLock::acquire(const fs::path& file, int fd, bool write,
                                                    const MboxLockOptions& opts) {
  std::unique_ptr<MboxLock> lock(new MboxLock());
  const auto deadline = Clock::now() + opts.lock_timeout;
  const std::string dot = file.string() + ".lock";
  for (int attempt = 0;; ++attempt) {
    // The dotlock appears with our PID already in it: written to a private
    // file first, then link()ed to FILE.lock (as liblockfile does). An
    // O_EXCL create followed by a write left an empty dotlock when the
    // process died in between, which no one can tell from a live one until
    // it is `dotlock_stale` old (found by a SIGKILL test under ASan).
    // The private file is created exclusively (O_EXCL, no symlink followed):
    // in a directory others can write, a hard link or symlink planted under
    // its name must not make us truncate or write the file it points to
    // (issue 17). A name that exists is someone else's: the next one is tried.
    int err = 0;
    bool created = false;
    std::string mine;
    for (unsigned n = 0; n < kDotlockPrivateNames; ++n) {
      mine = dotlock_private_name(dot, ::getpid(), n);
      UniqueFd d(::open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
      if (!d) {
        err = errno;
        if (err == EEXIST) continue;
        break;
      }
      created = true;
      err = 0;
      if (!write_all(d.get(), std::to_string(::getpid()) + "\n") || d.close_checked() != 0) {
        err = errno;
      } else if (::link(mine.c_str(), dot.c_str()) != 0) {
        err = errno;
      }
      ::unlink(mine.c_str());
      break;
    }
    if (!created && err == EEXIST) {
      return make_error(Errc::temporary, "cannot create a private dotlock file for " + dot +
                                             ": the " + std::to_string(kDotlockPrivateNames) +
                                             " names " + dotlock_private_name(dot, ::getpid(), 0) +
                                             " ... exist already (planted by someone else?)");
    }
    if (err == 0) {
      lock->dotlock_ = dot;
      break;
    }
    if (err == EACCES || err == EPERM || err == EROFS) break;  // fcntl lock only
    if (err != EEXIST) return sys_error("create dotlock " + dot, err);
    struct stat st {};
    if (::lstat(dot.c_str(), &st) == 0 && dotlock_stale(dot, st, opts.dotlock_stale)) {
      // Remove it only if it is still the same file (narrows the race with
      // another process that removed it and created its own meanwhile).
      struct stat again {};
      if (::lstat(dot.c_str(), &again) == 0 && again.st_ino == st.st_ino &&
          again.st_mtime == st.st_mtime) {
        ::unlink(dot.c_str());
      }
      continue;
    }
    if (Clock::now() >= deadline) {
      return make_error(Errc::in_use, "timed out waiting for the dotlock " + dot);
    }
    backoff(attempt);
  }
  for (int attempt = 0;; ++attempt) {
    struct flock fl {};
    fl.l_type = write ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) break;
    const int err = errno;
    if (err != EACCES && err != EAGAIN && err != EINTR) {
      return sys_error("fcntl lock " + file.string(), err);
    }
    if (Clock::now() >= deadline) {
      return make_error(Errc::in_use, "timed out waiting for the fcntl lock on " + file.string());
    }
    backoff(attempt);
  }
  lock->fd_ = fd;
  return lock;
}

MboxLock::~MboxLock() {
  if (fd_ >= 0) {
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    (void)::fcntl(fd_, F_OFD_SETLK, &fl);
  }
  if (!dotlock_.empty()) ::unlink(dotlock_.c_str());
}

}  // namespace apop::store
