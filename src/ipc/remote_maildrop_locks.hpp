// The network worker's pop3::MaildropLocks (issue 19): with a PostgreSQL
// account store the cluster-wide maildrop lock (pg::MaildropLocks) is held
// by the auth process on the worker's behalf, since a worker holds no
// database connection (the URL may carry the password, and its sandbox
// allows no socket()). Each call is one request over the
// RemoteAuthenticator's channels (lock_maildrop, unlock_maildrop:
// ipc/wire.hpp), on the calling thread's free channel like a login; a
// worker wires it up as pop3::LockingOpener(remote_locks, mail_locations).
//
// try_lock: locked -> true, in_use -> false; a temporary answer, a refusal
// (no fresh login of the user through this worker, the worker's lock bound
// reached), a timeout or a broken channel -> Errc::temporary ([SYS/TEMP]),
// as in a single-process server whose database is unreachable. release:
// awaited (so the lock is gone when the session's end is reported);
// failures are ignored: the auth process releases every lock of a worker
// whose channels close, and after an auth restart the old locks went with
// the old process's database connection.
//
// Ownership: borrows the RemoteAuthenticator, which outlives it.
// Thread-safety: any thread, as RemoteAuthenticator::call().
#pragma once

#include <string_view>

#include "common/result.hpp"
#include "ipc/remote_authenticator.hpp"
#include "pop3/maildrop_locks.hpp"

namespace apop::ipc {

class RemoteMaildropLocks final : public pop3::MaildropLocks {
 public:
  explicit RemoteMaildropLocks(RemoteAuthenticator& remote) : remote_(remote) {}
  Result<bool> try_lock(std::string_view user) override;
  void release(std::string_view user) override;

 private:
  RemoteAuthenticator& remote_;
};

}  // namespace apop::ipc
