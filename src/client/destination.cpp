#include "client/destination.hpp"
#include "client/spawn_setup.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>
#include <utility>
#include <vector>

#include "client/handoff.hpp"
#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/dir_io.hpp"
#include "store/maildir.hpp"
#include "store/maildir_name.hpp"
#include "store/mbox.hpp"

extern char** environ;

namespace apop::client {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

Error sys_error(Errc code, const std::string& what, int err) {
  return make_error(code, what + ": " + std::strerror(err));
}

using store::fsync_retry;

// "~/x" -> "$HOME/x"; anything else unchanged.
std::string expand_home(std::string_view path) {
  if (path.size() >= 2 && path.substr(0, 2) == "~/") {
    const char* home = std::getenv("HOME");
    if (home != nullptr && home[0] != '\0') return std::string(home) + std::string(path.substr(1));
  }
  return std::string(path);
}

// ---------------------------------------------------------------------------
// maildir:DIR

class MaildirDestination final : public Destination {
 public:
  MaildirDestination(fs::path dir, std::string host, DestinationOptions::PublishHook hook = {})
      : dir_(std::move(dir)), host_(std::move(host)), hook_(std::move(hook)) {}

  std::string describe() const override { return "maildir:" + dir_.string(); }

  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    UniqueFd dirfd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return sys_error(Errc::temporary, "open Maildir " + dir_.string(), errno);
    UniqueFd tmpfd(::openat(dirfd.get(), "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!tmpfd) return sys_error(Errc::temporary, "open " + dir_.string() + "/tmp", errno);
    UniqueFd newfd(::openat(dirfd.get(), "new", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!newfd) return sys_error(Errc::temporary, "open " + dir_.string() + "/new", errno);

    pop3::CrlfSizer sizer;
    sizer.update(message);
    const std::string fields =
        ",S=" + std::to_string(message.size()) + ",W=" + std::to_string(sizer.size());

    for (int attempt = 0; attempt < 100; ++attempt) {
      const std::string base = unique_base();
      UniqueFd out(::openat(tmpfd.get(), base.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!out) {
        if (errno == EEXIST) continue;
        return sys_error(Errc::temporary, "create tmp file in " + dir_.string(), errno);
      }
      // From here on the tmp file is removed on every path: after a link it
      // is a second name, after a failure it is garbage.
      struct Unlink {
        int dir;
        const std::string& name;
        ~Unlink() { ::unlinkat(dir, name.c_str(), 0); }
      } unlink_tmp{tmpfd.get(), base};

      if (!write_all(out.get(), message)) {
        return sys_error(Errc::temporary, "write " + dir_.string() + "/tmp/" + base, errno);
      }
      if (fsync_retry(out.get()) != 0) return sys_error(Errc::temporary, "fsync tmp file", errno);
      if (out.close_checked() != 0) return sys_error(Errc::temporary, "close tmp file", errno);

      const std::string final_name = base + fields;
      if (hook_) {
        if (auto h = hook_(final_name, meta); !h) return h.error();
      }
      if (::linkat(tmpfd.get(), base.c_str(), newfd.get(), final_name.c_str(), 0) != 0) {
        const int err = errno;
        if (err == EEXIST) continue;  // someone else's file: new name
        const bool no_links = err == EPERM || err == ENOTSUP || err == EOPNOTSUPP ||
                              err == ENOSYS || err == EXDEV || err == EMLINK;
        if (!no_links) return sys_error(Errc::temporary, "link into new/", err);
        if (::renameat2(tmpfd.get(), base.c_str(), newfd.get(), final_name.c_str(),
                        RENAME_NOREPLACE) != 0) {
          if (errno == EEXIST) continue;
          return sys_error(Errc::temporary, "rename into new/", errno);
        }
      }
      if (fsync_retry(newfd.get()) != 0) {
        const int err = errno;
        // Not known to be durable: take it back so the message stays on the server.
        ::unlinkat(newfd.get(), final_name.c_str(), 0);
        return sys_error(Errc::temporary, "fsync " + dir_.string() + "/new", err);
      }
      return {};
    }
    return make_error(Errc::temporary, "no unique file name in " + dir_.string());
  }

 private:
  std::string unique_base() const {
    static std::atomic<std::uint64_t> counter{0};
    timeval tv{};
    ::gettimeofday(&tv, nullptr);
    const std::uint64_t q = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    return std::to_string(tv.tv_sec) + ".M" + std::to_string(tv.tv_usec) + "P" +
           std::to_string(::getpid()) + "Q" + std::to_string(q) + "." + host_;
  }

  fs::path dir_;
  std::string host_;  // escaped
  DestinationOptions::PublishHook hook_;
};

// ---------------------------------------------------------------------------
// mbox:FILE

// The mboxrd body: every line matching ^>*From  gets one more '>'; a final
// newline is added if missing, then the blank separator line.
std::string mboxrd_body(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 64 + 2);
  std::size_t pos = 0;
  while (pos < message.size()) {
    std::size_t end = message.find('\n', pos);
    const bool last = end == std::string_view::npos;
    if (last) end = message.size();
    std::string_view line = message.substr(pos, end - pos);
    std::size_t gt = 0;
    while (gt < line.size() && line[gt] == '>') ++gt;
    if (line.substr(gt, 5) == "From ") out += '>';
    out += line;
    out += '\n';
    pos = last ? end : end + 1;
  }
  out += '\n';
  return out;
}

std::string from_line(const MessageMeta& meta) {
  std::string sender = meta.envelope_from.empty() ? "MAILER-DAEMON" : meta.envelope_from;
  for (char& c : sender) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) c = '_';
  }
  const std::time_t t =
      meta.received_at > 0 ? static_cast<std::time_t>(meta.received_at) : std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char date[64];
  // asctime(3) format: "Thu Jan  2 10:00:00 2025".
  if (std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm) == 0) {
    std::snprintf(date, sizeof date, "Thu Jan  1 00:00:00 1970");
  }
  return "From " + sender + " " + date + "\n";
}

class MboxDestination final : public Destination {
 public:
  MboxDestination(fs::path file, DestinationOptions opts)
      : file_(std::move(file)), opts_(std::move(opts)) {}

  std::string describe() const override { return "mbox:" + file_.string(); }

  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    UniqueFd fd(::open(file_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600));
    if (!fd) return sys_error(Errc::temporary, "open " + file_.string(), errno);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
      return sys_error(Errc::temporary, "stat " + file_.string(), errno);
    if (!S_ISREG(st.st_mode)) {
      return make_error(Errc::permanent, file_.string() + ": not a regular file");
    }
    // The server's locking (store/mbox.hpp): the dotlock appears with our
    // PID in it (a private file link()ed into place), a dead owner's lock is
    // broken at once, then the fcntl write lock; a busy lock is a temporary
    // failure (the message stays on the server for the next run).
    auto lock =
        store::MboxLock::acquire(file_, fd.get(), /*write=*/true,
                                 store::MboxLockOptions{opts_.lock_timeout, opts_.dotlock_stale});
    if (!lock) return make_error(Errc::temporary, lock.error().message);
    // Size under the lock: what we must truncate back to on failure.
    if (::fstat(fd.get(), &st) != 0)
      return sys_error(Errc::temporary, "stat " + file_.string(), errno);
    const off_t original = st.st_size;

    std::string out;
    if (original > 0) {
      char tail[2] = {0, 0};
      const off_t from = original >= 2 ? original - 2 : 0;
      const ssize_t n = ::pread(fd.get(), tail, static_cast<std::size_t>(original - from), from);
      if (n < 0) return sys_error(Errc::temporary, "read " + file_.string(), errno);
      const std::string_view t(tail, static_cast<std::size_t>(n));
      if (t.empty() || t.back() != '\n') {
        out = "\n\n";
      } else if (t.size() == 2 && t[0] != '\n') {
        out = "\n";
      }
    }
    out += from_line(meta);
    out += mboxrd_body(message);

    auto fail = [&](const std::string& what, int err) -> Error {
      // No half message: cut the file back to where it was.
      if (::ftruncate(fd.get(), original) == 0) (void)fsync_retry(fd.get());
      return sys_error(Errc::temporary, what + " " + file_.string(), err);
    };
    if (!write_all(fd.get(), out)) return fail("write", errno);
    if (fsync_retry(fd.get()) != 0) return fail("fsync", errno);
    lock->reset();  // unlocks through fd, which must still be open
    if (fd.close_checked() != 0)
      return sys_error(Errc::temporary, "close " + file_.string(), errno);
    return {};
  }

 private:
  fs::path file_;
  DestinationOptions opts_;
};

// ---------------------------------------------------------------------------
// mda:COMMAND

bool safe_env_value(std::string_view v) {
  if (v.empty()) return false;
  for (char c : v) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '@' || c == '_' || c == '+' || c == '=' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The MDA's environment: ours without APOP_UIDL, SENDER and APOP_PASSWORD,
// plus APOP_UIDL and SENDER for this message (see destination.hpp).
std::vector<std::string> mda_environment(const MessageMeta& meta) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view kv(*e);
    if (kv.starts_with("APOP_UIDL=") || kv.starts_with("SENDER=")) continue;
    // Never the password (`apop fetch` removes it from environ once read;
    // this guards against a caller that did not).
    if (kv.starts_with("APOP_PASSWORD=")) continue;
    env.emplace_back(kv);
  }
  bool uidl_ok = true;
  for (char c : meta.uidl) uidl_ok = uidl_ok && c > 0x20 && c < 0x7F;
  env.push_back("APOP_UIDL=" + (uidl_ok ? meta.uidl : std::string()));
  if (safe_env_value(meta.envelope_from)) env.push_back("SENDER=" + meta.envelope_from);
  return env;
}

// SIGPIPE is blocked in this thread while we write to the MDA (EPIPE
// instead); the original mask is restored, and a SIGPIPE our writes raised
// discarded, on destruction.
class BlockSigpipe {
 public:
  BlockSigpipe() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_);
  }
  ~BlockSigpipe() {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) && !sigismember(&old_, SIGPIPE)) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_set_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  BlockSigpipe(const BlockSigpipe&) = delete;
  BlockSigpipe& operator=(const BlockSigpipe&) = delete;
  // The mask before: what the child gets.
  const sigset_t& original() const { return old_; }

 private:
  sigset_t pipe_set_;
  sigset_t old_;
};

// `/bin/sh -c command` with `stdin_fd` as its standard input and our stderr
// as its stdout, in its own process group (killed as a whole on timeout),
// with signal mask `mask` and SIGPIPE's default disposition. posix_spawn
// (glibc: clone with CLONE_VM|CLONE_VFORK) rather than fork(): no copy of our
// page tables per message, which made `apop fetch --to mda:` slower than
// fetchmail with the same MDA. Returns the child's pid; the error code is
// what posix_spawn* returned.
Result<pid_t> spawn_mda(const std::string& command, std::vector<std::string>& env, int stdin_fd,
                        const sigset_t& mask) {
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  std::vector<char*> argv{sh.data(), dash_c.data(), cmd.data(), nullptr};
  SpawnSetup spawn;
  sigset_t default_set;
  sigemptyset(&default_set);
  sigaddset(&default_set, SIGPIPE);
  // dup2 onto itself (stdin was closed, so the pipe got fd 0) clears
  // FD_CLOEXEC (POSIX 2024, glibc >= 2.29).
  int rc = posix_spawn_file_actions_adddup2(&spawn.fa, stdin_fd, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&spawn.fa, 2, 1);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(
        &spawn.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  if (rc == 0) rc = posix_spawnattr_setpgroup(&spawn.attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&spawn.attr, &mask);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&spawn.attr, &default_set);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawn(&pid, argv[0], &spawn.fa, &spawn.attr, argv.data(), envp.data());
  if (rc != 0) return sys_error(Errc::temporary, "start " + sh, rc);
  ::setpgid(pid, pid);  // also from here: no race with kill(-pid) later
  return pid;
}

// How writing the message to the MDA ended.
struct FeedOutcome {
  bool timed_out = false;
  bool short_read = false;  // EPIPE: the MDA closed its input early
  int write_errno = 0;      // another write error
};

// Writes `message` to the non-blocking pipe `fd` until done, an error or
// `deadline`.
FeedOutcome feed_mda(int fd, std::string_view message, Clock::time_point deadline) {
  FeedOutcome out;
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  std::string_view rest = message;
  while (!rest.empty()) {
    const ssize_t w = retry_eintr([&] { return ::write(fd, rest.data(), rest.size()); });
    if (w > 0) {
      rest.remove_prefix(static_cast<std::size_t>(w));
      continue;
    }
    if (w < 0 && errno != EAGAIN) {
      if (errno == EPIPE) {
        out.short_read = true;
      } else {
        out.write_errno = errno;
      }
      break;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      out.timed_out = true;
      break;
    }
    pollfd pfd{fd, POLLOUT, 0};
    ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
  }
  return out;
}

// Waits for the MDA until `deadline` (or kills its process group at once
// when `timed_out` is already set), then reaps it: its wait status.
// `timed_out` is set when it had to be killed. The exit is waited for on a
// pidfd (Linux 5.3), which poll() reports at once; a WNOHANG loop with
// sleeps (the fallback where pidfd_open is missing) cost milliseconds per
// message, which made `apop fetch --to mda:` slower than fetchmail.
Result<int> reap_mda(pid_t pid, Clock::time_point deadline, bool& timed_out) {
  const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  int status = 0;
  for (int attempt = 0; !timed_out; ++attempt) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) {
      return sys_error(Errc::temporary, "waitpid for the MDA", errno);
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    if (pidfd) {
      pollfd exited{pidfd.get(), POLLIN, 0};
      ::poll(&exited, 1, static_cast<int>(std::min<long long>(left, 1000)));
    } else {
      // 1 ms doubling to 50 ms: short MDAs are reaped quickly.
      std::this_thread::sleep_for(std::chrono::milliseconds(attempt < 6 ? 1 << attempt : 50));
    }
  }
  timed_out = true;
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  (void)retry_eintr([&] { return ::waitpid(pid, &status, 0); });
  return status;
}

// The MDA's verdict (see destination.hpp: what is temporary, what permanent).
Result<void> mda_verdict(const std::string& who, int status, const FeedOutcome& fed,
                         std::chrono::milliseconds timeout) {
  if (fed.timed_out) {
    return make_error(Errc::temporary, who + " did not finish within " +
                                           std::to_string(timeout.count()) + " ms; killed");
  }
  if (WIFSIGNALED(status)) {
    return make_error(Errc::temporary,
                      who + " killed by signal " + std::to_string(WTERMSIG(status)));
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (code == 75 || code == 71) {
    return make_error(Errc::temporary,
                      who + " exited with temporary failure " + std::to_string(code));
  }
  if (code != 0) {
    return make_error(Errc::permanent, who + " exited with status " + std::to_string(code));
  }
  if (fed.short_read) {
    return make_error(Errc::temporary,
                      who + " exited 0 without reading the whole message; not stored");
  }
  if (fed.write_errno != 0) return sys_error(Errc::temporary, "write to " + who, fed.write_errno);
  return {};
}

class MdaDestination final : public Destination {
 public:
  MdaDestination(std::string command, DestinationOptions opts)
      : command_(std::move(command)), opts_(std::move(opts)) {}

  std::string describe() const override { return "mda:" + command_; }

  Result<void> store(std::string_view message, const MessageMeta& meta) override {
    // Everything the child needs is prepared before it is spawned.
    std::vector<std::string> env = mda_environment(meta);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return sys_error(Errc::temporary, "pipe", errno);
    UniqueFd rd(p[0]), wr(p[1]);
    const BlockSigpipe sigpipe;
    auto pid = spawn_mda(command_, env, rd.get(), sigpipe.original());
    if (!pid) return pid.error();
    rd.reset();
    const auto deadline = Clock::now() + opts_.mda_timeout;
    FeedOutcome fed = feed_mda(wr.get(), message, deadline);
    wr.reset();  // EOF for the MDA
    auto status = reap_mda(*pid, deadline, fed.timed_out);
    if (!status) return status.error();
    return mda_verdict("MDA `" + command_ + "`", *status, fed, opts_.mda_timeout);
  }

 private:
  std::string command_;
  DestinationOptions opts_;
};

}  // namespace

Result<std::unique_ptr<Destination>> open_destination(std::string_view spec) {
  return open_destination(spec, DestinationOptions{});
}

Result<std::unique_ptr<Destination>> open_destination(std::string_view spec,
                                                      const DestinationOptions& options) {
  const auto colon = spec.find(':');
  const std::string usage =
      "expected maildir:DIR, mbox:FILE, mda:COMMAND, lmtp:unix:PATH, lmtp:HOST:PORT or "
      "smtp:HOST[:PORT]";
  if (colon == std::string_view::npos) {
    return make_error(Errc::invalid, "bad destination '" + std::string(spec) + "': " + usage);
  }
  const std::string_view kind = spec.substr(0, colon);
  const std::string_view arg = spec.substr(colon + 1);
  if (arg.find('\0') != std::string_view::npos) {
    return make_error(Errc::invalid, "bad destination: contains a NUL byte");
  }
  if (kind == "maildir") {
    if (arg.empty()) return make_error(Errc::invalid, "maildir: needs a directory (maildir:DIR)");
    fs::path dir = expand_home(arg);
    if (auto r = store::ensure_maildir(dir); !r) return r.error();
    const std::string host = store::escape_maildir_host(
        options.hostname.empty() ? store::local_hostname() : options.hostname);
    return std::unique_ptr<Destination>(
        std::make_unique<MaildirDestination>(dir, host, options.before_publish));
  }
  if (kind == "mbox") {
    if (arg.empty()) return make_error(Errc::invalid, "mbox: needs a file (mbox:FILE)");
    fs::path file = expand_home(arg);
    if (!file.has_filename()) {
      return make_error(Errc::invalid, "mbox:" + std::string(arg) + ": not a file name");
    }
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0) {
      if (!S_ISREG(st.st_mode)) {
        return make_error(Errc::invalid, "mbox:" + file.string() + ": not a regular file");
      }
    } else if (errno != ENOENT) {
      return sys_error(Errc::invalid, "mbox:" + file.string(), errno);
    } else {
      const fs::path parent = file.has_parent_path() ? file.parent_path() : fs::path(".");
      if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return make_error(Errc::invalid, "mbox:" + file.string() + ": directory " +
                                             parent.string() + " does not exist");
      }
    }
    return std::unique_ptr<Destination>(std::make_unique<MboxDestination>(file, options));
  }
  if (kind == "mda") {
    bool blank = true;
    for (char c : arg) blank = blank && (c == ' ' || c == '\t');
    if (blank) return make_error(Errc::invalid, "mda: needs a command (mda:COMMAND)");
    return std::unique_ptr<Destination>(
        std::make_unique<MdaDestination>(std::string(arg), options));
  }
  if (kind == "lmtp" || kind == "smtp") return open_handoff(kind, arg, options);
  return make_error(Errc::invalid,
                    "unknown destination type '" + std::string(kind) + "': " + usage);
}

}  // namespace apop::client
