// POSIX helpers shared by the store (maildir.cpp, maildir_deliver.cpp,
// update_journal.cpp, maildir_cache.cpp, uidl_map.cpp, the mbox files).
// Thread-safety: reentrant; they hold no state.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace apop::store {

// Errc::temporary with "what: strerror(err)".
Error sys_error(const std::string& what, int err);

// openat(dirfd, name) as a directory, O_CLOEXEC; -1 with errno on failure.
int open_dir_at(int dirfd, const char* name);

// Calls `f(name, type)` for every entry of the directory open at `dirfd`
// but "." and "..", `type` being the DT_* of getdents(2) (DT_UNKNOWN on file
// systems that do not say). Reads with getdents64(2) on the caller's
// descriptor: its offset is rewound first and left at the end, so two
// threads must not list through one descriptor at once. 0, or an errno.
int for_each_dir_entry(int dirfd, const std::function<void(std::string_view, unsigned char)>& f);

// Regular, non-dot files of a directory (symlinks and other types skipped),
// read through `dirfd` as for_each_dir_entry does. `label` names the
// directory in errors. `expect`: room reserved up front (a guess; growing a
// vector of 100,000 strings moves them all a dozen times).
Result<std::vector<std::string>> list_files(int dirfd, const std::string& label,
                                            std::size_t expect = 0);

// fsync, retried on EINTR; 0 or -1 with errno.
int fsync_retry(int fd);

// read(2), retried on EINTR; bytes read, 0 at EOF, or -1 with errno.
ssize_t read_retry(int fd, char* buf, std::size_t n);

}  // namespace apop::store
