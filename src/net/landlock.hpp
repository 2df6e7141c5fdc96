// Landlock (Linux 5.13+): a network worker restricts its own file system
// access to what it needs -- the mail tree, its lock and journal
// directories, the log file's directory, the files it re-reads on SIGHUP --
// so that, even under the uid that owns the data directory, it cannot open
// `secret.key` or the account database (docs/security.md, "An attacker who
// owns a worker"). Seccomp (net/sandbox.hpp) cannot filter paths; Landlock
// can, and needs no privilege.
#pragma once

#include <string>
#include <vector>

#include "common/result.hpp"

namespace apop::net {

struct FsRule {
  std::string path;    // a directory (everything beneath it) or a file
  bool write = false;  // also create, write, rename, remove beneath it
};

// The Landlock ABI version of the running kernel; 0 when it has none (not
// built, or disabled at boot).
int landlock_abi();

// Restricts this process (every thread started from now on, and the calling
// thread; call it before the other threads start, or from each) to `rules`:
// any other file or directory cannot be opened, created or removed. Paths
// that do not exist are skipped (listed in `skipped`). Sets
// PR_SET_NO_NEW_PRIVS. Errc::permanent when a step fails; false (nothing
// restricted) when the kernel has no Landlock or only ABI 1 (Linux 5.13-5.18,
// which refuses every rename across directories, so Maildir could not work).
Result<bool> restrict_filesystem(const std::vector<FsRule>& rules,
                                 std::vector<std::string>* skipped = nullptr);

}  // namespace apop::net
