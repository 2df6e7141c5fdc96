// Delivery into a Maildir (maildir_deliver.cpp), as `apop deliver --maildir`,
// the fetch destination (client/destination.cpp) and the LMTP server
// (net/lmtp_server.cpp, from memory) do it. File names
// follow the convention of store/maildir.hpp:
//   TIME.M<usec>P<pid>Q<counter>.HOST,S=<size>,W=<crlfsize>
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

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
  // Create the Maildir on demand: when opening it, its tmp/ or its new/
  // fails with ENOENT or ENOTDIR, ensure_maildir(dir) is called once (it
  // walks the whole path) and the opens are tried again. A complete Maildir
  // costs no mkdir or stat. Off: a missing Maildir is an error.
  bool create = false;
};

// Delivers one message read from fd (until EOF) into the Maildir `dir`
// atomically: write to tmp/ with a unique name, fsync the file, link (or
// rename, where links are unsupported) into new/ with the final name, fsync
// new/. On any failure the tmp file is removed and no partial message is
// visible in new/ or cur/. A leading mbox "From " envelope line (as Postfix
// local(8) mailbox_command and procmail pass) is stripped, as dovecot-lda
// does. The Maildir is created only with opts.create (else call
// ensure_maildir first). Returns the final file name (in new/). Errors:
// Errc::temporary (missing/unwritable Maildir, disk full, I/O, read error on
// fd), Errc::invalid (message larger than opts.max_size -> treat as
// permanent by caller), Errc::over_quota (opts.quota).
Result<std::string> deliver(const std::filesystem::path& dir, int fd, const DeliverOptions& opts);

// As deliver(), for a message held in memory as the concatenation of
// `parts` (the LMTP server's trace block and message), written with
// writev(2). The bytes are stored as given: no "From " line is stripped.
// opts.max_size is checked against the parts' total before the Maildir is
// touched. Same file name (",S=" and ",W=" of the concatenation) and bytes
// as deliver() from a descriptor holding the same bytes that do not start
// with "From ".
Result<std::string> deliver_parts(const std::filesystem::path& dir,
                                  std::span<const std::string_view> parts,
                                  const DeliverOptions& opts);

// This host's name (gethostname), "localhost" when it has none: the host
// part of Maildir file names, before escape_maildir_host().
std::string local_hostname();

}  // namespace apop::store
