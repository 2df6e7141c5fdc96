// Maildir maildrops (and, through store/maildir_deliver.hpp, delivery),
// compatible with Dovecot and Postfix.
//
// Layout: mail_root/USER/ is a Maildir (cur/, new/, tmp/), plus the lock
// file mail_root/USER/apop-pop3.lock. File names follow the Maildir
// convention Dovecot uses:
//   TIME.M<usec>P<pid>Q<counter>.HOST,S=<size>,W=<crlfsize>[:2,FLAGS]
// where S= is the file size in bytes and W= the size with CRLF line endings
// (pop3::CrlfSizer). Files in new/ carry no ":2," info suffix; files in cur/
// do. Files written by other MDAs (no S=/W=) are read as well.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "common/result.hpp"
#include "pop3/interfaces.hpp"
// Delivery (deliver, DeliverOptions) has its own header and file; included
// here so that callers of the Maildir API keep one include.
#include "store/maildir_deliver.hpp"

namespace apop::store {

// Creates DIR, DIR/cur, DIR/new, DIR/tmp (mode 0700) if missing. Missing
// parents of DIR are created too (mode 0700). Existing directories are left
// as they are. Errors: Errc::temporary (I/O, permissions, or a path
// component exists but is not a directory).
Result<void> ensure_maildir(const std::filesystem::path& dir);

// Opens users' Maildirs under mail_root/USER/ (created on first open).
// Thread-safe: holds no mutable state; concurrent open() calls for the same
// user conflict through the lock file exactly as separate processes do.
//
// open(user):
//  - user must be a plain file name (non-empty, no '/', no NUL, not "." or
//    ".."), else Errc::invalid. (Real validation is auth's job; this only
//    keeps the path inside mail_root.)
//  - Takes flock(LOCK_EX|LOCK_NB) on mail_root/USER/apop-pop3.lock. Busy ->
//    Errc::in_use. The lock belongs to the returned Maildrop and is released
//    by its destructor (or by the kernel when the process dies).
//  - Finishes a commit cut by a crash (a leftover update journal, see
//    commit below), removes tmp/ files older than limits::kMaildirTmpMaxAge
//    (clean_maildir_tmp; at most once per kMaildirTmpScanInterval for a
//    Maildir in this process), then
//  - Moves every file in new/ to cur/ as "NAME:2,", then lists cur/ (dotfiles
//    and non-regular files are skipped). The list is a snapshot: mail
//    delivered later appears in the next session only. For maildrops of
//    kMaildirCacheMinMessages or more, the listing (names, sizes,
//    UIDLs, in order) is kept in MAILDIR/apop-cache and reused while cur/ and
//    apop-uidl are unchanged (store/maildir_cache.hpp); it gives exactly what
//    a listing of cur/ would.
//  - Order: by (numeric TIME prefix, base name, full name) -- stable across
//    sessions, so message numbers are predictable.
//  - Size: from ",W=" in the name when present, else counted by reading the
//    file with CrlfSizer (",S=" is never trusted for this).
//  - Delivery time (MessageInfo::delivered, for RFC 2449 EXPIRE): the
//    file's mtime, as Dovecot takes it; read by load_delivery_times() (one
//    fstatat per message), not by open(): the listing itself costs one
//    readdir of cur/ and no per-file system call when names carry ",W=".
//    A file gone by then keeps 0 (unknown: it never expires).
//  - UIDL: pinned by the map file mail_root/USER/apop-uidl (uidl_map.hpp:
//    the IDs of the server the mail was migrated from) when it has an entry
//    for the base name; else the base name (before ':') without its
//    ",S=" / ",W=" fields, when
//    that is 1..70 chars in 0x21..0x7E; otherwise "H" + 40 hex digits of
//    SHA-1(base name). Unaffected by new->cur moves and flag changes. If two
//    files map to the same UIDL, the first in list order keeps it and the
//    others get a deterministic hash-derived one.
//    A map file that cannot be read (I/O error, over
//    limits::kMaxUidlMapFile) fails the open with Errc::temporary rather than
//    show clients changed UIDLs.
//  - Errors: Errc::in_use, Errc::invalid, Errc::temporary (I/O).
//
// The returned Maildrop:
//  - open(i): reads the file recorded at scan time; if it was renamed (flags
//    changed by another client) it is found again in cur/ by its base name.
//    Gone -> Errc::not_found; out of range -> Errc::invalid; I/O ->
//    Errc::temporary (also from ByteSource::read).
//  - commit(deleted): all or nothing across crashes (store/update_journal.hpp):
//    writes and fsyncs the update journal USER/apop-pop3.update naming the
//    files (the commit point), unlinks each message (same base-name
//    fallback; already gone is fine), fsyncs cur/, removes the journal,
//    then rewrites the listing cache (best effort) for the next open.
//    Journal not written -> nothing removed, Errc::temporary. Unlink errors:
//    keeps going with the rest, returns the first error at the end
//    (Errc::temporary) and leaves the journal for the next open;
//    Errc::invalid for an out-of-range index (the others are removed).
class MaildirOpener final : public pop3::MaildropOpener {
 public:
  explicit MaildirOpener(std::filesystem::path mail_root);
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override;

  // The lock file name inside each user's Maildir.
  static constexpr std::string_view kLockFile = "apop-pop3.lock";

 private:
  const std::filesystem::path mail_root_;
};

// The Maildir rule for tmp/ (maildir(5), as Dovecot applies it): removes the
// regular files of DIR/tmp whose ctime is limits::kMaildirTmpMaxAge or more
// before `now` (seconds since the epoch) -- leftovers of deliveries that
// died. Best effort (errors are skipped); returns how many were removed.
// MaildirOpener::open calls it under the maildrop lock, at most once per
// limits::kMaildirTmpScanInterval for each Maildir.
std::size_t clean_maildir_tmp(const std::filesystem::path& dir, std::int64_t now);

}  // namespace apop::store
