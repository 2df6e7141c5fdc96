// The UPDATE journal: makes the removal of a POP3 session's deleted messages
// (RFC 1939 §6, the UPDATE state) all-or-nothing across crashes.
//
// Maildir removal is one unlink per message, so a process killed in the
// middle of QUIT would leave some deleted messages behind. Instead the commit
// is decided by one atomic rename, like a database's write-ahead log:
//  1. write the file names to remove to USER/apop-pop3.update.tmp, fsync it,
//     rename it to USER/apop-pop3.update, fsync USER/  <- the commit point
//  2. unlink the messages, fsync cur/
//  3. unlink the journal (no fsync: finishing a journal twice is a no-op)
// A crash before the rename leaves the old state (the .tmp file is ignored
// and removed); after it, the next open of the maildrop (under its lock,
// before listing cur/) finishes step 2 and 3, so every POP3 session sees
// either the old or the new maildrop, never a part of the deletions.
//
// File format (version 1), all names plain file names in cur/:
//   "apop-update 1\n"
//   then records, each one type byte, a name and a NUL:
//     'D' name \0   a message to remove
//     'K' name \0   a message that shares a base name (the part before ':')
//                   with a removed one but stays (so recovery never mistakes
//                   it for a removed message renamed by another client)
//   then "E\0" and the end of the file.
// Anything else is a damaged journal: nothing is removed and it is renamed to
// USER/apop-pop3.update.damaged for the administrator (the old state stays,
// so no mail is lost; deleted messages show up again).
//
// Thread-safety: the functions hold no state; callers hold the maildrop lock.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace apop::store {

struct UpdateJournal {
  std::vector<std::string> remove;  // file names in cur/
  std::vector<std::string> keep;    // see 'K' above
};

inline constexpr std::string_view kUpdateJournalFile = "apop-pop3.update";
inline constexpr std::string_view kUpdateJournalTmp = "apop-pop3.update.tmp";
inline constexpr std::string_view kUpdateJournalDamaged = "apop-pop3.update.damaged";

// Pure encoding and strict parsing (exposed for tests and fuzzing). parse
// returns Errc::invalid for anything encode would not produce.
std::string encode_update_journal(const UpdateJournal& j);
Result<UpdateJournal> parse_update_journal(std::string_view data);

// Step 1: writes and commits the journal in the Maildir directory `dirfd`.
// Errors (Errc::temporary, or Errc::invalid when larger than
// limits::kMaxUpdateJournal): nothing is committed and the .tmp file is gone.
Result<void> write_update_journal(int dirfd, const UpdateJournal& j);

// Step 2 for a journal: unlinks its 'D' files in cur/ (a file renamed since,
// e.g. by an IMAP client changing flags, is found by its base name among the
// files the journal does not name; already gone is fine), then fsyncs cur/.
// Returns the first error; keeps going with the rest.
Result<void> apply_update_journal(int curfd, const UpdateJournal& j);

// Step 3: unlinks the journal (ENOENT is fine; not fsynced, see above).
Result<void> remove_update_journal(int dirfd);

// Recovery, called on open under the lock before cur/ is listed: removes a
// leftover .tmp journal; if a journal is present, applies and removes it (a
// damaged one is renamed aside, see above). Returns true when a committed
// journal was completed. Errors: Errc::temporary (I/O; the journal stays and
// is retried at the next open).
Result<bool> recover_update_journal(int dirfd, int curfd);

}  // namespace apop::store
