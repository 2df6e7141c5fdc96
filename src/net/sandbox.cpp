#include "net/sandbox.hpp"

#include <asm/ioctls.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>

namespace apop::net {
namespace {

// One allowed system call: unconditionally (no comparison), or when all of
// `cmp` hold (several rules for one call: any of them).
struct Rule {
  int nr;
  const char* name;
  std::vector<scmp_arg_cmp> cmp;
};

// Argument checks, spelled out (libseccomp's SCMP_A0... macros are C99
// compound literals). Argument `arg` equals `v`; (`arg` & `mask`) equals `v`.
scmp_arg_cmp eq(unsigned arg, scmp_datum_t v) { return scmp_arg_cmp{arg, SCMP_CMP_EQ, v, 0}; }
scmp_arg_cmp masked_eq(unsigned arg, scmp_datum_t mask, scmp_datum_t v) {
  return scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, mask, v};
}

class Rules {
 public:
  void allow(int nr, const char* name, std::initializer_list<scmp_arg_cmp> cmp = {}) {
    if (nr < 0) return;  // not a system call of this architecture (libseccomp's pseudo number)
    for (const auto& r : rules_) {
      if (r.nr == nr && r.cmp.empty()) return;  // already allowed unconditionally
    }
    rules_.push_back(Rule{nr, name, std::vector<scmp_arg_cmp>(cmp)});
  }
  const std::vector<Rule>& rules() const { return rules_; }

 private:
  std::vector<Rule> rules_;
};

#define APOP_SYS(name) SCMP_SYS(name), #name

// Built with AddressSanitizer (the asan preset, the fuzz targets): its
// runtime needs a few calls of its own (below).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizerRuntime = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitizerRuntime = true;
#else
constexpr bool kSanitizerRuntime = false;
#endif
#else
constexpr bool kSanitizerRuntime = false;
#endif

// The allow-list, grouped as docs/security.md "Worker sandbox" explains it.
// Measured with strace -f on `apop serve` under the interop workload
// (poplib, TLS, STLS, SASL, Maildir, mbox, the listing cache, reload), the
// SQLite calls subtracted; the thread and crypto groups also cover what that
// workload did not reach (a thread started late, an OpenSSL reseed).
Rules build(const SandboxOptions& o) {
  Rules r;
  const auto self = static_cast<scmp_datum_t>(::getpid());

  // Event loop: Asio's epoll reactor (its epoll, eventfd and timerfd exist
  // already), the inherited listeners, the client sockets and the
  // already-connected IPC sockets. No socket, socketpair, connect, bind or
  // listen: a worker makes no new socket and reaches nobody.
  r.allow(APOP_SYS(epoll_wait));
  r.allow(APOP_SYS(epoll_pwait));
  r.allow(APOP_SYS(epoll_ctl));
  r.allow(APOP_SYS(timerfd_settime));
  r.allow(APOP_SYS(accept));   // Asio's accept, then FIONBIO
  r.allow(APOP_SYS(accept4));  // the same in one call
  r.allow(APOP_SYS(getpeername));
  r.allow(APOP_SYS(getsockname));
  r.allow(APOP_SYS(getsockopt));  // reads only (SO_ERROR)
  r.allow(APOP_SYS(setsockopt), {eq(1, IPPROTO_TCP), eq(2, TCP_NODELAY)});
  // The receive timeout of the auth process's channels, set again on the
  // new ones after an auth restart (ipc::RemoteAuthenticator).
  r.allow(APOP_SYS(setsockopt), {eq(1, SOL_SOCKET), eq(2, SO_RCVTIMEO)});
  r.allow(APOP_SYS(shutdown));
  r.allow(APOP_SYS(read));
  r.allow(APOP_SYS(write));
  r.allow(APOP_SYS(readv));
  r.allow(APOP_SYS(writev));
  r.allow(APOP_SYS(recvfrom));  // recv()
  r.allow(APOP_SYS(sendto));    // send()
  r.allow(APOP_SYS(recvmsg));
  r.allow(APOP_SYS(sendmsg));
  // The asynchronous channel to the auth process (net/auth_channel.hpp):
  // a turn's requests in one call, the replies that arrived in one call.
  r.allow(APOP_SYS(sendmmsg));
  r.allow(APOP_SYS(recvmmsg));
  r.allow(APOP_SYS(poll));
  r.allow(APOP_SYS(ppoll));
  r.allow(APOP_SYS(close));
  // ioctl: non-blocking mode (Asio sets it with FIONBIO, not fcntl), bytes
  // available (socket::available), and isatty() (TCGETS) of stdio.
  r.allow(APOP_SYS(ioctl), {eq(1, FIONBIO)});
  r.allow(APOP_SYS(ioctl), {eq(1, FIONREAD)});
  r.allow(APOP_SYS(ioctl), {eq(1, TCGETS)});
  // fcntl: descriptor and status flags only (record locks below, per need).
  for (int cmd : {F_GETFD, F_SETFD, F_GETFL, F_SETFL}) {
    r.allow(APOP_SYS(fcntl), {eq(1, static_cast<scmp_datum_t>(cmd))});
  }

  // Signals: Asio's signal_set (SIGTERM, SIGINT, SIGHUP; handlers restored
  // at shutdown), and raise()/abort(), which signal only this process.
  r.allow(APOP_SYS(rt_sigaction));
  r.allow(APOP_SYS(rt_sigprocmask));
  r.allow(APOP_SYS(rt_sigreturn));
  r.allow(APOP_SYS(restart_syscall));
  r.allow(APOP_SYS(tgkill), {eq(0, self)});
  r.allow(APOP_SYS(kill), {eq(0, self)});

  // Threads and memory. clone only with CLONE_THREAD (a thread, never a new
  // process: fork() and posix_spawn() die); clone3 gets ENOSYS (rule in
  // apply: its flags are behind a pointer, which seccomp cannot read), and
  // glibc 2.34+ then falls back to clone. No executable mapping: mmap and
  // mprotect without PROT_EXEC (no dlopen after start-up, no JIT).
  r.allow(APOP_SYS(clone), {masked_eq(0, CLONE_THREAD, CLONE_THREAD)});
  r.allow(APOP_SYS(set_robust_list));
  r.allow(APOP_SYS(rseq));
  r.allow(APOP_SYS(futex));
  r.allow(APOP_SYS(gettid));
  r.allow(APOP_SYS(getpid));
  r.allow(APOP_SYS(getppid));  // is the master still there?
  r.allow(APOP_SYS(sched_yield));
  r.allow(APOP_SYS(sched_getaffinity));  // glibc's get_nprocs (malloc arenas)
  r.allow(APOP_SYS(exit));
  r.allow(APOP_SYS(exit_group));
  r.allow(APOP_SYS(brk));
  r.allow(APOP_SYS(mmap), {masked_eq(2, PROT_EXEC, 0)});
  r.allow(APOP_SYS(mprotect), {masked_eq(2, PROT_EXEC, 0)});
  r.allow(APOP_SYS(munmap));
  r.allow(APOP_SYS(mremap));   // realloc of a large block
  r.allow(APOP_SYS(madvise));  // free() and thread exit give pages back
  // prctl: thread names and reading the dumpable flag; never setting it
  // (a worker cannot make itself traceable again).
  for (int opt : {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE}) {
    r.allow(APOP_SYS(prctl), {eq(0, static_cast<scmp_datum_t>(opt))});
  }

  // Time: the vDSO answers clock_gettime without a system call; these are
  // its fallbacks, and the sleeps.
  r.allow(APOP_SYS(clock_gettime));
  r.allow(APOP_SYS(gettimeofday));
  r.allow(APOP_SYS(clock_nanosleep));
  r.allow(APOP_SYS(nanosleep));

  // TLS and crypto: OpenSSL's DRBG reseeds from getrandom (APOP timestamps,
  // TLS randoms). Its configuration and providers are loaded at start-up.
  r.allow(APOP_SYS(getrandom));

  // Files of the mail tree (Maildir: new/ -> cur/, the listing cache, the
  // lock file, UPDATE's unlink and fsync), the certificate and key re-read
  // on SIGHUP, the log file reopened after rotation. Paths are behind
  // pointers: seccomp cannot limit them (the uid and file modes do).
  r.allow(APOP_SYS(openat));
  r.allow(APOP_SYS(newfstatat));  // stat, lstat and fstat in glibc 2.33+
  r.allow(APOP_SYS(fstat));
  r.allow(APOP_SYS(lseek));
  r.allow(APOP_SYS(getdents64));
  r.allow(APOP_SYS(rename));  // std::filesystem::rename
  r.allow(APOP_SYS(renameat));
  r.allow(APOP_SYS(renameat2));
  r.allow(APOP_SYS(unlinkat));
  r.allow(APOP_SYS(fsync));
  r.allow(APOP_SYS(flock));
  // Its own ids: the owner check of the log file reopened after rotation
  // (and of an mbox spool).
  r.allow(APOP_SYS(getuid));
  r.allow(APOP_SYS(geteuid));
  r.allow(APOP_SYS(getgid));
  r.allow(APOP_SYS(getegid));

  if (o.mbox) {
    r.allow(APOP_SYS(link));              // dotlock: link(private name, NAME.lock)
    r.allow(APOP_SYS(unlink));            // dotlock removal
    r.allow(APOP_SYS(kill), {eq(1, 0)});  // is the dotlock's pid alive?
    r.allow(APOP_SYS(linkat));            // the rewritten copy: O_TMPFILE, then linked
    r.allow(APOP_SYS(mkdir));             // the session lock directory, made on first use
    r.allow(APOP_SYS(pread64));
    r.allow(APOP_SYS(pwrite64));
    r.allow(APOP_SYS(ftruncate));
    r.allow(APOP_SYS(fchmod));
    r.allow(APOP_SYS(fchown));
    r.allow(APOP_SYS(utimensat));  // futimens
    r.allow(APOP_SYS(faccessat));
    r.allow(APOP_SYS(faccessat2));
    r.allow(APOP_SYS(getgroups));  // with the ids: may this process write the spool?
    for (int cmd : {F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK}) {
      r.allow(APOP_SYS(fcntl), {eq(1, static_cast<scmp_datum_t>(cmd))});
    }
  }

  if (o.sqlite) {
    r.allow(APOP_SYS(pread64));
    r.allow(APOP_SYS(pwrite64));
    r.allow(APOP_SYS(ftruncate));
    r.allow(APOP_SYS(fdatasync));
    r.allow(APOP_SYS(unlink));  // -journal, -wal, -shm
    r.allow(APOP_SYS(fchown));  // as root: the new journal gets the database's owner
    for (int cmd : {F_SETLK, F_SETLKW, F_GETLK}) {
      r.allow(APOP_SYS(fcntl), {eq(1, static_cast<scmp_datum_t>(cmd))});
    }
  }
  if (o.delivery) {
    r.allow(APOP_SYS(memfd_create));
    r.allow(APOP_SYS(mkdir));
    r.allow(APOP_SYS(mkdirat));
    r.allow(APOP_SYS(link));
    r.allow(APOP_SYS(linkat));
    r.allow(APOP_SYS(unlink));  // tmp/ after the link, or a failed delivery's file
    r.allow(APOP_SYS(fdatasync));
    r.allow(APOP_SYS(socket), {eq(0, AF_UNIX), masked_eq(1, 0xff, SOCK_SEQPACKET)});
    r.allow(APOP_SYS(connect));
  }
  if (kSanitizerRuntime) {
    // ASan's runtime: an alternate signal stack per thread (sigaltstack),
    // and a pipe through which it checks that memory is readable (pipe2).
    // LeakSanitizer's exit scan (ptrace) stays outside: run sandboxed
    // processes with detect_leaks=0.
    r.allow(APOP_SYS(sigaltstack));
    r.allow(APOP_SYS(pipe2));
  }
  return r;
}

#undef APOP_SYS

struct CtxDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

Error seccomp_error(const std::string& what, int rc) {
  return make_error(Errc::permanent, "sandbox: " + what + ": " + std::strerror(-rc));
}

}  // namespace

std::vector<std::string> sandbox_allowed_syscalls(const SandboxOptions& options) {
  std::vector<std::string> names;
  const Rules rules = build(options);
  for (const auto& r : rules.rules()) names.emplace_back(r.name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

Result<void> apply_worker_sandbox(const SandboxOptions& options) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) {
    return make_error(Errc::permanent,
                      std::string("sandbox: prctl(PR_SET_NO_NEW_PRIVS): ") + std::strerror(errno));
  }
  const std::uint32_t deny = options.log_violations ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
  Ctx ctx(seccomp_init(deny));
  if (!ctx) return make_error(Errc::permanent, "sandbox: seccomp_init failed");
  // Another architecture's calling convention (i386's int 0x80 on x86_64,
  // x32) is refused like a call outside the list.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, deny); rc != 0) {
    return seccomp_error("bad-architecture action", rc);
  }
  // Every thread of the process, not just the caller.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return seccomp_error("thread synchronisation", rc);
  }
  // A binary search over the system-call numbers instead of a linear list
  // (libseccomp 2.5): the calls with argument checks (fcntl, ioctl,
  // setsockopt, ...), which the kernel's allow-cache cannot answer, are
  // found in a few comparisons. Best effort: an older libseccomp keeps the
  // linear filter.
  (void)seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2);
  const Rules rules = build(options);
  for (const auto& r : rules.rules()) {
    int rc =
        seccomp_rule_add_array(ctx.get(), SCMP_ACT_ALLOW, r.nr, static_cast<unsigned>(r.cmp.size()),
                               r.cmp.empty() ? nullptr : r.cmp.data());
    if (rc != 0) return seccomp_error(std::string("allowing ") + r.name, rc);
  }
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc != 0) {
    return seccomp_error("clone3", rc);
  }
  if (int rc = seccomp_load(ctx.get()); rc != 0) return seccomp_error("loading the filter", rc);
  return {};
}

}  // namespace apop::net
