#include "net/privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace apop::net {
namespace {

std::string errno_text(int e) { return std::strerror(e); }

// getpwnam_r/getgrnam_r/getgrgid_r with a buffer that grows on ERANGE.
template <typename Entry, typename Key, typename Fn>
Result<bool> lookup(Fn fn, Key key, Entry& entry, std::vector<char>& buf) {
  buf.resize(4096);
  for (;;) {
    Entry* found = nullptr;
    int rc = fn(key, &entry, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc != 0) return make_error(Errc::temporary, errno_text(rc));
    return found != nullptr;
  }
}

std::vector<gid_t> current_groups() {
  int n = getgroups(0, nullptr);
  std::vector<gid_t> g(n > 0 ? static_cast<std::size_t>(n) : 0);
  if (n > 0) {
    n = getgroups(n, g.data());
    g.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  std::sort(g.begin(), g.end());
  return g;
}

// The process's permitted, effective and ambient capability sets are empty
// (a non-root process keeps capabilities when SECBIT_KEEP_CAPS was set, or
// through ambient capabilities; neither must survive the drop).
bool has_capabilities() {
  __user_cap_header_struct hdr{};
  hdr.version = _LINUX_CAPABILITY_VERSION_3;
  hdr.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return true;  // cannot tell: assume the worst
  for (const auto& d : data) {
    if (d.permitted != 0 || d.effective != 0) return true;
  }
  return false;
}

std::string describe(const Identity& id) {
  return "user " + id.user + " (uid " + std::to_string(id.uid) + "), group " + id.group + " (gid " +
         std::to_string(id.gid) + ")";
}

bool already_is(const Identity& id) {
  uid_t r = 0, e = 0, s = 0;
  gid_t gr = 0, ge = 0, gs = 0;
  if (getresuid(&r, &e, &s) != 0 || getresgid(&gr, &ge, &gs) != 0) return false;
  return r == id.uid && e == id.uid && s == id.uid && gr == id.gid && ge == id.gid && gs == id.gid;
}

// The kernel clears the parent-death signal (PR_SET_PDEATHSIG) whenever a
// process's credentials change (commit_creds): a supervised child that
// drops privileges would outlive a master killed by SIGKILL, still serving
// and holding maildrop locks. This keeps it across a change: it sets the
// signal again afterwards and, if the parent died in between, sends it now.
class KeepParentDeathSignal {
 public:
  KeepParentDeathSignal() : parent_(::getppid()) {
    int sig = 0;
    if (::prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) == 0) signal_ = sig;
  }
  ~KeepParentDeathSignal() {
    if (signal_ == 0) return;
    ::prctl(PR_SET_PDEATHSIG, signal_, 0, 0, 0);
    if (::getppid() != parent_) ::kill(::getpid(), signal_);
  }
  KeepParentDeathSignal(const KeepParentDeathSignal&) = delete;
  KeepParentDeathSignal& operator=(const KeepParentDeathSignal&) = delete;

 private:
  pid_t parent_;
  int signal_ = 0;
};

}  // namespace

Result<Identity> lookup_identity(const std::string& user, const std::string& group) {
  if (user.empty()) {
    return make_error(Errc::invalid, "group " + group + " given without user: set both");
  }
  Identity id;
  id.user = user;
  std::vector<char> buf;
  passwd pw{};
  auto found = lookup(getpwnam_r, user.c_str(), pw, buf);
  if (!found) return make_error(Errc::invalid, "user " + user + ": " + found.error().message);
  if (!*found) return make_error(Errc::invalid, "user " + user + ": no such user");
  id.uid = pw.pw_uid;
  id.gid = pw.pw_gid;
  if (id.uid == 0) {
    return make_error(Errc::invalid,
                      "user " + user + " is root (uid 0): name an unprivileged user");
  }
  std::vector<char> gbuf;
  ::group gr{};
  if (!group.empty()) {
    auto g = lookup(getgrnam_r, group.c_str(), gr, gbuf);
    if (!g) return make_error(Errc::invalid, "group " + group + ": " + g.error().message);
    if (!*g) return make_error(Errc::invalid, "group " + group + ": no such group");
    id.gid = gr.gr_gid;
    id.group = group;
  } else {
    auto g = lookup(getgrgid_r, id.gid, gr, gbuf);
    id.group = g && *g ? std::string(gr.gr_name) : std::to_string(id.gid);
  }
  if (id.gid == 0) {
    return make_error(Errc::invalid,
                      "group " + id.group + " is root's group (gid 0)" +
                          (group.empty() ? " (the primary group of user " + user + ")" : "") +
                          ": name an unprivileged group with --group");
  }
  // The chosen group only: the user's supplementary groups are dropped (a
  // file the server must read, such as a TLS key re-read on SIGHUP, goes to
  // this group instead).
  id.groups = {id.gid};
  return id;
}

bool running_as_root() { return geteuid() == 0; }

Result<void> check_can_become(const Identity& id) {
  if (running_as_root() || already_is(id)) return {};
  return make_error(Errc::invalid, "cannot switch to " + describe(id) +
                                       ": not running as root (uid " + std::to_string(getuid()) +
                                       "); start as root, or as that user without --user/--group");
}

Result<void> drop_privileges(const Identity& id) {
  if (!running_as_root()) {
    if (already_is(id)) return {};
    return check_can_become(id);
  }
  const std::string what = "dropping privileges to " + describe(id) + ": ";
  const KeepParentDeathSignal keep;
  if (setgroups(id.groups.size(), id.groups.data()) != 0) {
    return make_error(Errc::permanent, what + "setgroups: " + errno_text(errno));
  }
  if (setresgid(id.gid, id.gid, id.gid) != 0) {
    return make_error(Errc::permanent, what + "setresgid: " + errno_text(errno));
  }
  if (setresuid(id.uid, id.uid, id.uid) != 0) {
    return make_error(Errc::permanent, what + "setresuid: " + errno_text(errno));
  }
  // Verify, never trust: every id is the target's, the group list is
  // exactly the target's, no capability is left, and root cannot be regained.
  if (!already_is(id)) {
    return make_error(Errc::permanent, what + "real/effective/saved ids did not all change");
  }
  if (current_groups() != id.groups) {
    return make_error(Errc::permanent, what + "the supplementary group list did not change");
  }
  if (has_capabilities()) {
    return make_error(Errc::permanent, what + "capabilities remain after the switch");
  }
  if (setuid(0) == 0 || seteuid(0) == 0 || (id.gid != 0 && (setgid(0) == 0 || setegid(0) == 0))) {
    return make_error(Errc::permanent, what + "root could be regained");
  }
  if (setgroups(0, nullptr) == 0) {
    return make_error(Errc::permanent, what + "the group list could still be changed");
  }
  return {};
}

Result<void> forbid_core_dumps() {
  const rlimit none{0, 0};
  if (::setrlimit(RLIMIT_CORE, &none) != 0) {
    return make_error(Errc::permanent, "setrlimit(RLIMIT_CORE, 0): " + errno_text(errno));
  }
  return make_undumpable();
}

Result<void> make_undumpable() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return make_error(Errc::permanent, "prctl(PR_SET_DUMPABLE, 0): " + errno_text(errno));
  }
  if (::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return make_error(Errc::permanent, "the process is still dumpable after PR_SET_DUMPABLE 0");
  }
  return {};
}

Result<std::unique_ptr<ActingAs>> ActingAs::begin(const Identity& id) {
  if (!running_as_root()) return make_error(Errc::permanent, "acting as another user needs root");
  std::unique_ptr<ActingAs> a(new ActingAs());
  a->saved_groups_ = current_groups();
  a->saved_egid_ = getegid();
  const std::string what = "acting as " + describe(id) + ": ";
  const KeepParentDeathSignal keep;
  if (setgroups(id.groups.size(), id.groups.data()) != 0) {
    int e = errno;
    return make_error(Errc::permanent, what + "setgroups: " + errno_text(e));
  }
  // From here on the destructor restores root, whatever failed.
  if (setegid(id.gid) != 0) {
    int e = errno;
    return make_error(Errc::permanent, what + "setegid: " + errno_text(e));
  }
  if (seteuid(id.uid) != 0) {
    int e = errno;
    return make_error(Errc::permanent, what + "seteuid: " + errno_text(e));
  }
  return a;
}

ActingAs::~ActingAs() {
  const KeepParentDeathSignal keep;
  if (seteuid(0) != 0 || setegid(saved_egid_) != 0 ||
      setgroups(saved_groups_.size(), saved_groups_.data()) != 0) {
    std::fprintf(stderr, "apop: cannot return to root after acting as the service user: %s\n",
                 std::strerror(errno));
    std::abort();
  }
}

}  // namespace apop::net
