// Mailbox quotas: per-account limits in bytes and messages, enforced at
// delivery (`apop deliver`, the LMTP server).
//
// Maildir: the Maildir++ convention (Courier's README.maildirquota; Dovecot's
// "maildir" quota backend), so apop, Dovecot, Courier and maildrop agree on
// one mailbox's usage. MAILDIR/maildirsize holds
//   LIMITS\n            e.g. "1073741824S,50000C" (bytes S, messages C)
//   BYTES COUNT\n       one line per change, summed: "+size 1" per delivery,
//                       "-bytes -n" per POP3 UPDATE that removed n messages
// Lines are appended with O_APPEND. The file is recalculated from new/ and
// cur/ (sizes from the ",S=" field of the names, store/maildir_name.hpp;
// fstatat only for names without it) when it is missing or unreadable, its
// limits line differs from the current limits, it has grown to
// limits::kMaildirsizeMaxFile bytes, or it says the delivery would not fit
// and was last written limits::kMaildirsizeMaxAge ago or more (the
// Maildir++ rules).
//
// Concurrency: the check and the link into new/ happen under flock(LOCK_EX)
// on MAILDIR/apop-quota.lock (kQuotaLockFile), as do a POP3 UPDATE's unlinks
// and its negative line, and every recalculation; so two deliveries cannot
// both pass the check for the last free bytes, and a recalculation never
// sees a change whose line then lands in the new file twice.
//
// mbox: bytes are the file's size under the mbox locks; messages are its
// "From " lines, counted by reading the file under the same locks -- only
// when a message limit is set. Correct because every writer (apop, Postfix
// local(8)) quotes body lines starting "From " as ">From "; its cost is one
// sequential read of the file per delivery, which is why the limit in
// messages is best left unset for large mbox files.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/posix_fd.hpp"
#include "common/result.hpp"

namespace apop::store {

// 0 in either field: no limit on it. Both 0: no quota.
struct QuotaLimits {
  std::uint64_t bytes = 0;
  std::uint64_t messages = 0;
  bool unlimited() const { return bytes == 0 && messages == 0; }
  friend bool operator==(const QuotaLimits&, const QuotaLimits&) = default;
};

// Current usage. Signed: the sum of a maildirsize file's lines may be
// negative when the file is wrong (it is then recalculated).
struct QuotaUsage {
  std::int64_t bytes = 0;
  std::int64_t messages = 0;
};

// ---- I/O-free ----

// A parsed maildirsize file.
struct Maildirsize {
  QuotaLimits limits;
  QuotaUsage usage;       // sum of all lines after the first (saturating)
  std::size_t lines = 0;  // usage lines
};

// Parses maildirsize content. First line: comma-separated NUMBER followed by
// 'S' (bytes) or 'C' (messages), each at most once (an empty line: no
// limits). Then lines of two whitespace-separated signed decimal integers.
// Every line must end with '\n' (a line cut by a crash makes the file
// invalid). Errc::invalid otherwise; the caller then recalculates.
Result<Maildirsize> parse_maildirsize(std::string_view content);

// "1073741824S,50000C", "1000S", "20C"; "" for no limits.
std::string format_maildirsize_limits(const QuotaLimits& limits);

// Whether adding add_bytes / add_messages to `usage` stays within `limits`
// (usage + add <= limit for each limit that is set).
bool quota_allows(const QuotaLimits& limits, const QuotaUsage& usage, std::uint64_t add_bytes,
                  std::uint64_t add_messages);

// The Maildir++ recalculation rule. `parsed`: the file's content, nullopt
// when it is missing or invalid; `file_size`, `age`: its size and the time
// since its last change.
bool maildirsize_needs_recalc(const std::optional<Maildirsize>& parsed, std::uint64_t file_size,
                              std::chrono::seconds age, const QuotaLimits& limits,
                              std::uint64_t add_bytes, std::uint64_t add_messages);

// Parses "1G", "500M", "64k", "1024", "0" (binary multiples: K = 1024; an
// optional trailing 'B' or "iB"). Errc::invalid.
Result<std::uint64_t> parse_quota_size(std::string_view text);

// "1.0G", "512M", "300 bytes": for people.
std::string format_quota_size(std::uint64_t bytes);

// ---- I/O (Maildir) ----

inline constexpr std::string_view kMaildirsizeFile = "maildirsize";
inline constexpr std::string_view kQuotaLockFile = "apop-quota.lock";

// flock(LOCK_EX) on DIR/apop-quota.lock (created 0600), blocking; released
// when destroyed. dirfd: the Maildir.
class QuotaLock {
 public:
  static Result<QuotaLock> acquire(int dirfd);

 private:
  explicit QuotaLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// Whether DIR/maildirsize exists (so changes must be recorded in it even
// with no limits set now).
bool maildirsize_exists(int dirfd);

// Sums new/ and cur/ (regular files, dotfiles skipped). Errc::temporary.
Result<QuotaUsage> scan_maildir_usage(int dirfd);

// Under the QuotaLock: the usage from maildirsize, recalculated (and, with
// `write`, the file rewritten atomically with `limits`) when the Maildir++
// rules say so. With no limits the directory is scanned and no file is
// written. `now`: seconds since the epoch.
Result<QuotaUsage> maildir_quota_usage_locked(int dirfd, const QuotaLimits& limits,
                                              std::uint64_t add_bytes, std::uint64_t add_messages,
                                              std::int64_t now, bool write = true);

// Under the QuotaLock: appends "BYTES COUNT\n" when maildirsize exists
// (O_APPEND, no O_CREAT). On a failed write the file is removed, so the next
// check recalculates instead of trusting a count that missed a change.
void maildirsize_append(int dirfd, std::int64_t bytes, std::int64_t messages);

// For `apop user show`, reports and LMTP's early check at RCPT: the usage,
// read-only. It creates and writes nothing in the Maildir (`apop user` may
// run as root on a Maildir of the service user: a root-owned lock file or
// maildirsize would break its deliveries): a shared lock on an existing
// lock file, maildirsize when the rules trust it, else a scan.
Result<QuotaUsage> maildir_quota_usage(const std::filesystem::path& dir, const QuotaLimits& limits);

// ---- I/O (mbox) ----

// Messages in an mbox file: lines starting "From " (at offset 0 or after
// '\n'), read from fd with pread. Errc::temporary.
Result<std::uint64_t> count_mbox_messages(int fd);

// For `apop user show`: the file's size and message count (0, 0 when it
// does not exist). No lock: a report, not a check.
Result<QuotaUsage> mbox_quota_usage(const std::filesystem::path& file);

// The error of a delivery that does not fit: Errc::over_quota.
Error over_quota_error(const QuotaLimits& limits, const QuotaUsage& usage, std::uint64_t size);

}  // namespace apop::store
