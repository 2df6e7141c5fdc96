#include "pop3/maildrop_locks.hpp"

#include <string>

#include "pop3/guarded_maildrop.hpp"

namespace apop::pop3 {

Result<std::unique_ptr<Maildrop>> LockingOpener::open(const MailboxAddress& where) {
  auto got = locks_.try_lock(where.user);
  if (!got) return make_error(Errc::temporary, "maildrop lock unavailable: " + got.error().message);
  if (!*got) return make_error(Errc::in_use, "maildrop is in use on another server");
  auto inner = inner_.open(where);
  if (!inner) {
    locks_.release(where.user);
    return inner.error();
  }
  // The local lock is released first (with the inner maildrop), then the shared one.
  return guard_maildrop(std::move(*inner),
                        [this, user = std::string(where.user)] { locks_.release(user); });
}

}  // namespace apop::pop3
