// The network worker's sandbox (issue 19): PR_SET_NO_NEW_PRIVS and a
// seccomp allow-list (libseccomp), applied once start-up is over, so that a
// worker taken over through a parser or TLS bug cannot execve, ptrace,
// create or connect sockets, mount, change its ids, load BPF, and the like:
// any system call outside the list kills the whole process (SIGSYS), and
// the master restarts it.
//
// What must exist before apply_worker_sandbox() (the list has no call that
// makes them): the listeners (inherited; accept stays allowed), the TLS
// contexts, the log file, the already-connected IPC sockets to the auth
// process, every asio::io_context (epoll, eventfd and timerfd descriptors)
// and ideally the thread pool. Threads started later are allowed
// (clone with CLONE_THREAD only) and inherit the filter; threads running at
// the call get it too (SECCOMP_FILTER_FLAG_TSYNC).
//
// docs/security.md "Worker sandbox" lists every allowed call and why; the
// list was measured (strace -f of `apop serve` under the interop workload),
// not guessed.
//
// The non-dumpable part of the separation (no ptrace by a process of the
// same uid, /proc/PID/mem closed to it) is make_undumpable() in
// net/privileges.hpp; forbid_core_dumps() there calls it.
#pragma once

#include <string>
#include <vector>

#include "common/result.hpp"

namespace apop::net {

struct SandboxOptions {
  // mbox maildrops: dotlocks (link(2) of a private name, kill(pid, 0) on the
  // pid in a lock to find a stale one), OFD record locks, the update journal
  // and in-place rewrite (pread/pwrite, ftruncate), the rewrite of a copy
  // (linkat of an O_TMPFILE file, fchown/fchmod/utimensat to keep owner,
  // mode and times), the writability check of the spool (faccessat2) and
  // the lock-retry sleep. Off: a Maildir-only worker.
  bool mbox = true;
  // The single-process server's SQLite account store (the experimental
  // `apop serve --sandbox`): POSIX record locks (F_SETLK), fdatasync,
  // journal/WAL files (unlink, ftruncate, pread/pwrite). A worker never
  // opens the database: off.
  bool sqlite = false;
  // Mail delivery (the LMTP process, net/lmtp_server.hpp): the message
  // through an anonymous memory file (memfd_create), Maildir creation
  // (mkdir), tmp/ -> new/ by link(2) and fsync of files and directories, and
  // the account lookup at the auth-userdb socket: socket(2) for AF_UNIX
  // SOCK_SEQPACKET only, and connect(2) (seccomp cannot see the path: the
  // uid's file permissions decide which sockets answer). Off for a worker.
  bool delivery = false;
  // For building the list: a call outside it is allowed, and the kernel
  // logs it (SCMP_ACT_LOG: an audit record "type=1326 ... syscall=N" in
  // dmesg / journalctl -k) instead of killing the process. Debugging only.
  bool log_violations = false;
};

// PR_SET_NO_NEW_PRIVS, then the allow-list of `options` for every thread of
// the process (default action: kill the process). Irreversible. Errors
// (Errc::permanent): the kernel has no seccomp filter support, or a step
// failed (nothing was loaded then, but no_new_privs may be set).
Result<void> apply_worker_sandbox(const SandboxOptions& options = {});

// The names of the system calls the list allows with `options`, sorted
// (some only with the argument checks that docs/security.md describes;
// clone3 is not in it: it fails with ENOSYS so that glibc falls back to
// clone, whose flags can be checked).
std::vector<std::string> sandbox_allowed_syscalls(const SandboxOptions& options = {});

}  // namespace apop::net
