#include "ipc/remote_maildrop_locks.hpp"

#include <string>
#include <variant>

namespace apop::ipc {

Result<bool> RemoteMaildropLocks::try_lock(std::string_view user) {
  Result<Reply> r = remote_.call(LockMaildrop{user});
  if (!r) return make_error(Errc::temporary, r.error().message);
  if (const auto* s = std::get_if<LockStatus>(&r.value())) {
    switch (s->outcome) {
      case LockOutcome::locked:
        return true;
      case LockOutcome::in_use:
        return false;
      case LockOutcome::temporary:
        break;
    }
    return make_error(Errc::temporary, "the auth process cannot reach the lock database");
  }
  return make_error(Errc::temporary, "the auth process refused the maildrop lock");
}

void RemoteMaildropLocks::release(std::string_view user) {
  (void)remote_.call(UnlockMaildrop{user});
}

}  // namespace apop::ipc
