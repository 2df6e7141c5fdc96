// Where `apop fetch` puts downloaded mail. A Destination stores one message
// durably: store() returns success only when the message is safely on disk
// (fsync of file and directory) or an MDA accepted it (exit status 0), so the
// caller may then delete it on the server.
//
// Contract: `message` is the message as RFC 5322 text with LF line endings
// (the caller has undone dot-stuffing and CRLF). Errors: Errc::temporary means
// "keep the message on the server and try again later" (EX_TEMPFAIL, full disk,
// lock timeout); Errc::permanent means the destination refused it for good.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::client {

struct MessageMeta {
  std::string uidl;              // server UIDL, empty if the server has none
  std::string envelope_from;     // for the mbox "From " line; "MAILER-DAEMON" if unknown
  std::int64_t received_at = 0;  // UNIX seconds, for the "From " line date
};

class Destination {
 public:
  virtual ~Destination() = default;
  virtual Result<void> store(std::string_view message, const MessageMeta& meta) = 0;
  // Human description for logs: "maildir:/home/a/Maildir".
  virtual std::string describe() const = 0;
};

// Parses "maildir:DIR", "mbox:FILE" or "mda:COMMAND" and opens it
// (creating a Maildir's tmp/new/cur if missing); with options also the
// hand-off destinations "lmtp:unix:PATH", "lmtp:HOST:PORT", "smtp:HOST[:PORT]"
// (client/handoff.hpp), which need options.deliver_to. Errc::invalid for bad
// specs.
Result<std::unique_ptr<Destination>> open_destination(std::string_view spec);

// ---------------------------------------------------------------------------
// Details of the three destinations (additions to the contract above).
//
// A leading "~/" in DIR or FILE is replaced by $HOME (the shell does not
// expand it inside "--to maildir:~/Mail"). Destinations hold no descriptor or
// lock between store() calls, so a mail reader may use the mailbox while a
// fetch runs. A Destination is used by one thread at a time.
//
// maildir:DIR -- DIR/{cur,new,tmp} are created (mode 0700) if missing. Each
//   message is written to tmp/ under a Dovecot-style unique name
//   TIME.M<usec>P<pid>Q<counter>.HOST, fsynced, hard-linked (rename where the
//   file system has no links) into new/ as NAME,S=<size>,W=<crlf size>, and
//   new/ is fsynced; nothing partial is ever visible in new/. The message is
//   stored byte for byte (unlike store::deliver(), a leading "From " line is
//   not stripped: it came from the server, it is not our envelope).
//   Errors: Errc::temporary (I/O, disk full, permissions).
//
// mbox:FILE -- appended in mboxrd format: a "From SENDER DATE" line (asctime
//   format, UTC; SENDER is meta.envelope_from with blanks and control
//   characters replaced by '_', "MAILER-DAEMON" when empty), the message with
//   every line matching ^>*From  prefixed by '>', a final newline if missing,
//   and one blank line. If the existing file does not end in a blank line, the
//   missing newlines are written first so the new "From " line starts a
//   message. Locking: the server's (store::MboxLock): the dotlock FILE.lock,
//   which appears with our PID in it (a private file link()ed into place; a
//   lock older than dotlock_stale, or naming a PID that no longer exists, is
//   removed as stale; if the directory does not let us create it --
//   EACCES/EPERM/EROFS, e.g. /var/mail without group mail -- only the fcntl
//   lock is used), then an fcntl (OFD) write lock on FILE, both polled until
//   lock_timeout. The file is created with mode 0600 if missing. After the
//   write the file is fsynced; on any write or fsync error it is truncated back
//   to its original size, so no half message remains. Errors: Errc::temporary
//   (lock timeout, I/O, disk full), Errc::permanent (FILE is not a regular
//   file).
//
// mda:COMMAND -- for every message, `/bin/sh -c COMMAND` runs in its own
//   process group with the message exactly as given (LF line endings, no
//   "From " line) on its standard input, its standard output redirected to
//   our standard error (stdout belongs to `fetch --json`), stderr inherited,
//   default SIGPIPE handling and signal mask. Environment: ours plus
//   APOP_UIDL (meta.uidl, may be empty) and SENDER (meta.envelope_from, only
//   if it consists of [A-Za-z0-9.@_+=-]; both come from the server: quote
//   them in COMMAND). Result, following sysexits(3) and what fetchmail does (a
//   message is only removed from the server once the MDA reported success):
//     exit 0, whole message read           -> stored
//     exit 75 (EX_TEMPFAIL), 71 (EX_OSERR),
//     killed by a signal, timeout (mda_timeout, then SIGKILL of the process
//     group), or fork/exec/pipe failure    -> Errc::temporary
//     the command closed its input before reading the whole message (EPIPE),
//     whatever its exit status             -> Errc::temporary
//     any other non-zero exit status       -> Errc::permanent
//   (A command that exits 0 without reading a message small enough to fit in
//   the pipe buffer cannot be told apart from one that read it.)
//   Both errors mean "not stored": the caller must keep the message on the
//   server. The distinction only says whether the destination as a whole is
//   unavailable right now (temporary: stop this run) or this one message was
//   refused (permanent: the next message may still be delivered).
class HandoffPool;  // client/handoff.hpp

struct DestinationOptions {
  std::chrono::milliseconds lock_timeout = limits::kMboxLockTimeout;
  std::chrono::seconds dotlock_stale = limits::kDotlockStale;
  std::chrono::milliseconds mda_timeout = limits::kMdaTimeout;
  // HOST part of Maildir names; empty: gethostname().
  std::string hostname;
  // maildir only: called once the message is durable in tmp/, before it is
  // linked into new/ under its final name, with that name (the Maildir base
  // name) and the message's meta. An error aborts the store (the tmp file
  // is removed, nothing appears in new/). `apop migrate` records the UIDL
  // here, so that a message is never in the Maildir without it.
  using PublishHook =
      std::function<Result<void>(std::string_view base_name, const MessageMeta& meta)>;
  PublishHook before_publish;
  // The hand-off destinations (lmtp:unix:PATH, lmtp:HOST:PORT,
  // smtp:HOST[:PORT], client/handoff.hpp): the envelope recipient (RCPT TO),
  // required by them, ignored by the others.
  std::string deliver_to;
  // A hand-off destination's 5xx: keep the message on the POP3 server
  // (store() returns Errc::permanent; reported) or bounce it to its envelope
  // sender (a DSN through the same server; store() then succeeds).
  enum class OnReject { keep, bounce };
  OnReject on_reject = OnReject::keep;
  // The hand-off destinations' timeouts (RFC 5321 §4.5.3.2): connecting;
  // each reply to a command and each block of message data taken; the reply
  // to the final "." of DATA. A timeout is Errc::temporary.
  std::chrono::milliseconds smtp_connect_timeout = limits::kSmtpConnectTimeout;
  std::chrono::milliseconds smtp_command_timeout = limits::kSmtpCommandTimeout;
  std::chrono::milliseconds smtp_final_dot_timeout = limits::kSmtpFinalDotTimeout;
  // The hand-off destinations: where a finished destination leaves its open
  // connection for the next one to the same server (client/handoff.hpp);
  // none: each destination opens its own and QUITs it.
  std::shared_ptr<HandoffPool> pool;
};

Result<std::unique_ptr<Destination>> open_destination(std::string_view spec,
                                                      const DestinationOptions& options);

}  // namespace apop::client
