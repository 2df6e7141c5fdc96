// A one-session-per-maildrop lock that reaches beyond the maildrop's own
// (local) lock, and the MaildropOpener decorator that takes it first.
//
// Implementations: pg::MaildropLocks (PostgreSQL advisory locks shared by
// several servers, docs/scaling.md) and, in a network worker, the auth
// process holding those on the worker's behalf (ipc::RemoteMaildropLocks).
// The local lock (Maildir flock, mbox locks) stays with the inner opener:
// the shared lock may stack within one process or server (PostgreSQL
// session-level advisory locks do), so two sessions there are kept apart by
// the local one.
#pragma once

#include <memory>
#include <string_view>

#include "pop3/interfaces.hpp"

namespace apop::pop3 {

// Thread-safety: implementations are called from any thread at once.
class MaildropLocks {
 public:
  virtual ~MaildropLocks() = default;
  // Takes `user`'s lock: true when taken (give it back with one release()),
  // false when someone else holds it (another server), an error
  // (Errc::temporary) when that cannot be told (the database or the auth
  // process unreachable). May block for a network round trip.
  virtual Result<bool> try_lock(std::string_view user) = 0;
  // Gives back one lock taken by try_lock(). Best effort: a failure is the
  // implementation's to handle (log, reconnect); a user not held is ignored.
  virtual void release(std::string_view user) = 0;
};

// Decorates a MaildropOpener with MaildropLocks: before the inner open,
// locks.try_lock(user); held elsewhere -> Errc::in_use ([IN-USE]); cannot
// tell -> Errc::temporary ([SYS/TEMP]). The lock is released when the
// returned Maildrop is destroyed (after the inner one, so the local lock
// goes first), or at once when the inner open fails.
// Ownership: borrows `locks` and `inner`, which outlive it and every
// Maildrop it returned. Thread-safety: as `locks` and `inner`.
class LockingOpener final : public MaildropOpener {
 public:
  LockingOpener(MaildropLocks& locks, MaildropOpener& inner) : locks_(locks), inner_(inner) {}
  LockingOpener(const LockingOpener&) = delete;
  LockingOpener& operator=(const LockingOpener&) = delete;
  Result<std::unique_ptr<Maildrop>> open(const MailboxAddress& where) override;
  // opens_without_waiting() stays false: the lock is a network round trip.

 private:
  MaildropLocks& locks_;
  MaildropOpener& inner_;
};

}  // namespace apop::pop3
