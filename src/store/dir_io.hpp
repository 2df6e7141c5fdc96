// POSIX helpers shared by the Maildir code (maildir.cpp, update_journal.cpp).
// Thread-safety: reentrant; they hold no state.
#pragma once

#include <string>
#include <vector>

#include "common/result.hpp"

namespace apop::store {

// Errc::temporary with "what: strerror(err)".
Error sys_error(const std::string& what, int err);

// openat(dirfd, name) as a directory, O_CLOEXEC; -1 with errno on failure.
int open_dir_at(int dirfd, const char* name);

// Regular, non-dot files of a directory (symlinks and other types skipped).
// A fresh open description is used so the caller's descriptor keeps no
// directory offset. `label` names the directory in errors. `expect`: room
// reserved up front (a guess; growing a vector of 100,000 strings moves them
// all a dozen times).
Result<std::vector<std::string>> list_files(int dirfd, const std::string& label,
                                            std::size_t expect = 0);

// fsync, retried on EINTR; 0 or -1 with errno.
int fsync_retry(int fd);

}  // namespace apop::store
