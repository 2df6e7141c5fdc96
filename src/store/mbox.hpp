// mbox maildrops and delivery, interoperating with Postfix local(8),
// procmail and mutt on the same files (docs/architecture.md, "mbox").
//
// Format (as Postfix and procmail write it, no Content-Length): a message
// begins with a line starting "From " at the start of the file or right after
// an empty line; it ends before the empty line that precedes the next "From "
// line (or at the end of the file, where one trailing empty line is the
// separator too). Only LF line endings are recognised as line ends. Leading
// empty lines before the first "From " line are ignored; any other leading
// text means the file is not an mbox (Errc::invalid).
//
// Quoting: body lines starting "From " are stored as ">From " (Postfix,
// procmail: "mboxo"). RETR and TOP send the message exactly as stored, after
// the "From " envelope line, ">From " lines included: mboxo quoting cannot be
// undone without also changing lines that really began with ">From ", so like
// Dovecot, qpopper and mutt we never unquote. All headers are sent as stored
// (X-UIDL and Status included); LIST sizes are the CRLF octets of exactly
// those bytes.
//
// Locking (what Postfix, procmail and mutt do on Debian): the dotlock
// FILE.lock (created with O_EXCL; a lock older than `dotlock_stale` is removed
// as stale; skipped when the directory does not let us create it: EACCES,
// EPERM, EROFS) and an fcntl lock on FILE (an open-file-description lock,
// F_OFD_SETLK, which conflicts with the POSIX locks of other processes but is
// not dropped when another descriptor of the file is closed). Both are polled
// until `lock_timeout`.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/result.hpp"
#include "pop3/interfaces.hpp"
#include "store/quota.hpp"

namespace apop::store {

// ---------------------------------------------------------------------------
// Parsing (pure, exposed for tests and the fuzzer).

// One message of an mbox buffer, as byte offsets into it:
// [start, body) is the "From " line with its LF, [body, end) the message as
// served, [end, next) the separator (empty or one LF), and next the start of
// the following message (or the buffer's size). The spans of all messages
// plus the leading empty lines cover the buffer exactly.
struct MboxSpan {
  std::uint64_t start = 0;
  std::uint64_t body = 0;
  std::uint64_t end = 0;
  std::uint64_t next = 0;
};

// Splits an mbox buffer into messages. Errc::invalid when it neither is
// empty (or only LFs) nor starts with a "From " line.
Result<std::vector<MboxSpan>> parse_mbox(std::string_view data);

// What a message tells about itself: its CRLF size (pop3::CrlfSizer of the
// body), its UIDL candidates and digests.
struct MboxMessageFacts {
  std::uint64_t size = 0;  // CRLF octets of [body, end)
  // The X-UIDL header's value (qpopper) when it is a valid UIDL (RFC 1939
  // §7: 1..70 chars in 0x21..0x7E); empty otherwise.
  std::string x_uidl;
  // "M" + 40 hex digits of SHA-1 over the "From " line and the header
  // fields, leaving out those that mail readers and servers rewrite (Status,
  // X-Status, X-Keywords, X-IMAP, X-IMAPbase, X-UID, X-UIDL, Content-Length,
  // Lines, X-Mozilla-Status, X-Mozilla-Status2). Independent of the
  // message's offset, so deleting other messages never changes it.
  std::string header_uidl;
  // SHA-1 of the body [body, end) (to check a snapshot is still what the
  // file holds).
  std::string body_digest;
  // Delivery time from the "From " line's asctime date (local time, as
  // Postfix writes it); 0 when it cannot be read.
  std::int64_t delivered = 0;
};
MboxMessageFacts mbox_message_facts(std::string_view data, const MboxSpan& span);

// The value of a header field (first occurrence, case-insensitive name,
// surrounding blanks trimmed, folded continuation lines joined as they are)
// in the header block at the start of `message`; nullopt when absent.
std::optional<std::string> mbox_header_value(std::string_view message, std::string_view name);

// ---------------------------------------------------------------------------
// Locking.

struct MboxLockOptions {
  std::chrono::milliseconds lock_timeout = limits::kMboxSessionLockTimeout;
  std::chrono::seconds dotlock_stale = limits::kDotlockStale;
};

// The private file a dotlock is written to before it is link()ed to
// FILE.lock: "FILE.lock.PID.N.apop", N = 0, 1, ... kDotlockPrivateNames - 1
// (created with O_EXCL; a name that exists is skipped). Exposed for tests.
inline constexpr unsigned kDotlockPrivateNames = 16;
std::string dotlock_private_name(const std::string& dotlock, long pid, unsigned n);

// Both locks on an mbox file (the dotlock and the fcntl lock on `fd`), held
// until destruction. The fcntl lock is a write lock when fd is open for
// writing, else a read lock (which still keeps writers out).
class MboxLock {
 public:
  // Errc::in_use when either lock is still busy at the timeout; Errc::temporary
  // on other errors.
  static Result<std::unique_ptr<MboxLock>> acquire(const std::filesystem::path& file, int fd,
                                                   bool write, const MboxLockOptions& opts);
  ~MboxLock();
  MboxLock(const MboxLock&) = delete;
  MboxLock& operator=(const MboxLock&) = delete;

 private:
  MboxLock() = default;
  std::string dotlock_;  // empty: no dotlock held
  int fd_ = -1;
};

// ---------------------------------------------------------------------------
// Serving.

// How QUIT applies deletions (apop serve --mbox-rewrite).
enum class MboxRewrite {
  // rename when the new file can get FILE's owner, group and mode (we are
  // root, or FILE's owner and a member of its group) and FILE's directory is
  // writable; else in place.
  automatic,
  rename,    // always rename (fails with Errc::temporary where not permitted)
  in_place,  // always in place
};

// "auto", "rename", "in-place" <-> MboxRewrite; nullopt for anything else.
std::optional<MboxRewrite> parse_mbox_rewrite(std::string_view s);

struct MboxOptions {
  MboxLockOptions lock;
  // Where the per-maildrop session locks live (one POP3 session per mbox
  // file at a time: [IN-USE]); created (0700) when missing.
  std::filesystem::path session_lock_dir;
  MboxRewrite rewrite = MboxRewrite::automatic;
  // Where in-place rewrites keep their journal when FILE's directory does
  // not let us create .FILE.apop-journal there (mbox-HASH.journal, HASH of
  // FILE's path); created (0700) when missing. Empty: only next to FILE.
  std::filesystem::path journal_dir;
  // Tests only: commit() stops with an error (as if the process died) when
  // this returns true for a stage. Rename: "write" (after each message
  // copied), "fsync" (new file complete and synced), "rename" (linked, not
  // renamed). In place: "journal-partial" (journal header written, not its
  // data), "journal" (journal complete and synced, mbox untouched), "move"
  // (after the first chunk moved down), "moved" (all moved and synced, not
  // truncated), "truncated" (truncated and synced, journal not removed).
  std::function<bool(std::string_view stage)> fail_at;
};

// ---------------------------------------------------------------------------
// In-place rewrite journal (docs/migration.md, "mbox").
//
// An in-place rewrite of FILE changes only [offset, size): it first writes
// the original bytes of that region to a journal, fsyncs it and its
// directory, then writes a NUL byte at new_size and fsyncs FILE (the mark
// that the file is not truncated yet: mail an MTA appends never starts with
// NUL), moves the kept messages down, fsyncs, truncates FILE to new_size,
// fsyncs, and removes the journal. Format: the text header
//   "APOP-MBOX-JOURNAL 1\n" then "dev D\n", "ino I\n", "size S\n",
//   "offset O\n", "new-size N\n", "path P\n" and an empty line,
// the S-O original bytes, and "SHA1HEX\n" (SHA-1 of everything before it).
struct MboxJournal {
  std::uint64_t dev = 0, ino = 0;
  std::uint64_t size = 0;      // FILE's size before the rewrite
  std::uint64_t offset = 0;    // where the first deleted message started
  std::uint64_t new_size = 0;  // FILE's size after it
  std::string path;            // FILE (informational)
  std::string region;          // FILE's original bytes [offset, size)
};
std::string encode_mbox_journal(const MboxJournal& j);
// Errc::invalid when incomplete (a crash while it was written), corrupted, or
// inconsistent.
Result<MboxJournal> decode_mbox_journal(std::string_view data);

// Where the journal of `file` may be: next to it, and in opts.journal_dir.
std::vector<std::filesystem::path> mbox_journal_paths(const std::filesystem::path& file,
                                                      const MboxOptions& opts);

// Crash recovery, to be called holding both locks, fd open read-write on
// `file`. For each journal of `file` that we own: an invalid one, or one of
// another file (device/inode), is removed (FILE was not touched yet); a valid
// one is undone when FILE was not truncated yet (the original bytes written
// back; mail appended since, at and after the original size, stays) and
// simply removed when it was (FILE holds the new state, plus mail appended
// since). Returns whether a journal was found. Errc::temporary on I/O errors
// or when FILE's size fits neither case (then the journal is left for the
// administrator).
Result<bool> recover_mbox(const std::filesystem::path& file, int fd, const MboxOptions& opts);

// Opens the mbox file `file` as a locked maildrop.
//
// open: takes the session lock (flock on SESSION_LOCK_DIR/mbox-HASH.lock,
// HASH from the path; busy -> Errc::in_use), then the mbox locks (busy until
// the timeout -> Errc::in_use), reads the file once and releases the mbox
// locks: the snapshot is the list of messages with their offsets, sizes,
// UIDLs and body digests. A missing file is an empty maildrop. UIDL: the
// X-UIDL header when valid and not already taken by an earlier message,
// else the header UIDL (duplicates get a deterministic hash-derived one).
//
// RETR/TOP read the message at its recorded offset without the locks (mail
// is only appended meanwhile); when the last byte has been read, the body's
// SHA-1 is checked against the snapshot, and a mismatch (someone rewrote the
// file in between) is an error instead of the end of the message, so the
// session drops the connection and the client never accepts a wrong message.
//
// commit(deleted): takes the mbox locks again, reads the file as it is now,
// and removes each deleted message found by identity ("From " line and body
// digest; each once), not by offset, so mail appended since the snapshot and
// changes made by other programs are kept. The new contents are written to a
// fresh file in the same directory (O_TMPFILE, or .NAME.apop-new where the
// file system lacks it), given the original's owner, group and mode, fsynced,
// renamed over FILE, and the directory fsynced: after a crash FILE is either
// the old or the new version. The owner must be kept exactly (Postfix
// refuses to deliver into a mailbox that is not the recipient's), so when
// fchown is not permitted (we are neither root nor the owner), the rewrite
// is done in place instead (MboxRewrite, recover_mbox above): the region from
// the first deleted message to the end is saved in a journal, the kept
// messages are moved down and the file truncated, all under both locks; the
// next login, QUIT or delivery (under the locks) completes or undoes an
// interrupted one. Either way FILE keeps its atime and mtime when we may set
// them (mail readers compare them to tell new mail).
class MboxOpener final : public pop3::MaildropOpener {
 public:
  MboxOpener(std::filesystem::path file, MboxOptions opts);
  Result<std::unique_ptr<pop3::Maildrop>> open(const pop3::MailboxAddress& where) override;
  // Opens `file` itself (the user name is not used).
  Result<std::unique_ptr<pop3::Maildrop>> open_file(const std::filesystem::path& file);

 private:
  std::filesystem::path file_;
  MboxOptions opts_;
};

Result<std::unique_ptr<pop3::Maildrop>> open_mbox(const std::filesystem::path& file,
                                                  const MboxOptions& opts);

// ---------------------------------------------------------------------------
// Delivery.

struct MboxDeliverOptions {
  MboxLockOptions lock{limits::kMboxLockTimeout, limits::kDotlockStale};
  std::uint64_t max_size = limits::kMaxDeliverSize;
  // Envelope sender for the "From " line when the message has none;
  // "MAILER-DAEMON" when empty or not a plain address.
  std::string sender;
  // Tests only: fail after writing, before fsync (the file must be cut back).
  bool fail_after_write = false;
  // The mailbox's quota (store/quota.hpp), checked under the locks: bytes
  // against the file's size plus what this delivery writes, messages by
  // counting its "From " lines (only when a message limit is set). Over:
  // Errc::over_quota, nothing written.
  QuotaLimits quota;
};

// Appends the message read from fd (until EOF) to the mbox `file` (created
// 0600 when missing), under both locks: a "From " line (the message's own
// leading "From " line when it has one, else "From SENDER DATE"), the
// message with every line beginning "From " written as ">From " (as Postfix
// does), a final LF if missing and one empty line; missing LFs at the end of
// the existing file are written first so the new "From " line starts a
// message. The file is fsynced; on any failure it is truncated back to its
// size before the append (no partial message stays). Errors: Errc::temporary
// (lock timeout -> also Errc::in_use mapped to temporary, I/O, disk full),
// Errc::invalid (message larger than max_size), Errc::permanent (FILE is not
// a regular file).
Result<void> mbox_deliver(const std::filesystem::path& file, int fd,
                          const MboxDeliverOptions& opts);

}  // namespace apop::store
