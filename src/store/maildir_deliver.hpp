// Delivery into a Maildir (maildir_deliver.cpp), as `apop deliver --maildir`
// and the fetch destination (client/destination.cpp) do it. File names
// follow the convention of store/maildir.hpp:
//   TIME.M<usec>P<pid>Q<counter>.HOST,S=<size>,W=<crlfsize>
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/limits.hpp"
#include "common/result.hpp"
#include "store/quota.hpp"

namespace apop::store {

struct DeliverOptions {
  // Largest message accepted, in bytes as stored (after the "From " line is
  // stripped).
  std::uint64_t max_size = limits::kMaxDeliverSize;
  // HOST part of the unique name; empty -> gethostname(). '/' is written as
  // "\057", ':' as "\072" and ',' as "\054".
  std::string hostname;
  // The mailbox's quota (store/quota.hpp). Unlimited and no maildirsize
  // file: no quota work at all. Otherwise the check (usage + this message
  // within the limits, else Errc::over_quota and nothing delivered), the
  // link into new/ and the maildirsize line happen under the quota lock.
  QuotaLimits quota;
};

// Delivers one message read from fd (until EOF) into the Maildir `dir`
// atomically: write to tmp/ with a unique name, fsync the file, link (or
// rename, where links are unsupported) into new/ with the final name, fsync
// new/. On any failure the tmp file is removed and no partial message is
// visible in new/ or cur/. A leading mbox "From " envelope line (as Postfix
// local(8) mailbox_command and procmail pass) is stripped, as dovecot-lda
// does. The Maildir is not created (call ensure_maildir first). Returns the
// final file name (in new/). Errors: Errc::temporary (missing/unwritable
// Maildir, disk full, I/O, read error on fd), Errc::invalid (message larger
// than opts.max_size -> treat as permanent by caller).
Result<std::string> deliver(const std::filesystem::path& dir, int fd, const DeliverOptions& opts);

// This host's name (gethostname), "localhost" when it has none: the host
// part of Maildir file names, before escape_maildir_host().
std::string local_hostname();

}  // namespace apop::store
