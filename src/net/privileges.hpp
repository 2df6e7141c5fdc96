// Running as a service: dropping root for good after the listeners are
// bound (`apop serve --user NAME --group NAME`).
//
// Threading: every function here changes or reads process-wide credentials.
// glibc applies set*id()/setgroups() to every thread of the process, so
// threads already started (the auth pool) change identity too; still, call
// these from the main thread while no session runs (before Server::run()).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace apop::net {

// Who the server becomes.
struct Identity {
  std::string user;   // as named (for logs)
  std::string group;  // the group's name (the user's primary group by default)
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // the group list to run with: {gid} only
};

// Looks up `user` (and `group`, else the user's primary group) in the system
// databases (NSS). Errors (Errc::invalid): unknown user or group, a group
// without a user, the user root (uid 0: nothing would be dropped), the group
// root (gid 0, named or the user's primary group: root's group owns files a
// service must not reach). The user's supplementary groups (/etc/group) are
// not kept: the group list becomes the one group, so a service account that
// is also in e.g. adm or shadow does not carry them into the server.
Result<Identity> lookup_identity(const std::string& user, const std::string& group);

// True when the process has root's effective user id.
bool running_as_root();

// Whether the process can become `id`: Errc::invalid with a clear message
// when it is not root and is not already exactly `id` (a non-root process
// cannot switch user). Returns without error when it already is `id`
// (e.g. systemd started it with User= and the file also names the user).
Result<void> check_can_become(const Identity& id);

// Becomes `id` for good: setgroups(id.groups), setresgid(gid x3),
// setresuid(uid x3), then verifies that the real, effective and saved ids
// and the group list are `id`'s and that regaining root (setuid(0),
// seteuid(0), setgid(0)) fails. The parent-death signal (PR_SET_PDEATHSIG),
// which the kernel clears on the switch, is set again. A no-op when the
// process already is `id` and not root. On any error the process may be half-dropped: the caller
// MUST exit without reading client input (Errc::permanent).
Result<void> drop_privileges(const Identity& id);

// The process becomes non-dumpable: prctl(PR_SET_DUMPABLE, 0), verified
// with PR_GET_DUMPABLE. The kernel then writes no core file, gives
// /proc/PID/mem, environ, ... to root, and refuses ptrace attach by another
// process of the same user (issue 19: separate processes started
// unprivileged stay separate). A change of uid or gid (and an execve)
// resets the flag (to fs.suid_dumpable): call it again after
// drop_privileges. Errc::permanent on failure.
Result<void> make_undumpable();

// No core dumps of this process: make_undumpable() and RLIMIT_CORE 0 (soft
// and hard). Call it again after drop_privileges (see make_undumpable).
// Errc::permanent when either fails.
Result<void> forbid_core_dumps();

// While alive (root only), the effective gid, uid and the group list are
// `id`'s (real and saved stay root), so that files the server creates in its
// data directory belong to `id` and access is checked as `id`. The
// destructor returns to root; if that fails the process aborts (it would
// otherwise run in an unknown identity). Not copyable, not movable.
class ActingAs {
 public:
  // Errc::permanent when not root or the switch fails (root is then restored).
  static Result<std::unique_ptr<ActingAs>> begin(const Identity& id);
  ~ActingAs();
  ActingAs(const ActingAs&) = delete;
  ActingAs& operator=(const ActingAs&) = delete;

 private:
  ActingAs() = default;
  std::vector<gid_t> saved_groups_;
  gid_t saved_egid_ = 0;
};

}  // namespace apop::net
