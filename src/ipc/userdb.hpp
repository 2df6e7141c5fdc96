// The auth-userdb socket (issue 19, `auth_user`): with the account database
// readable by the auth process's user alone, local programs of the service
// user -- `apop deliver`, run by the MTA -- ask the auth process whether an
// account exists and where its mail goes (Dovecot's auth-userdb socket, which
// dovecot-lda asks, is the model). Nothing secret crosses: a user name in, a
// status and the account's own mail location out (ipc/wire.hpp,
// user_lookup / user_info).
//
// The socket is a SOCK_SEQPACKET Unix socket in the data directory, mode 0660,
// owned by the auth user and the service group; the server also checks the
// peer's uid (SO_PEERCRED) against a list. One request and one reply per
// connection; a client that sends nothing within the timeout, a malformed
// packet or a peer not on the list gets the connection closed.
//
// Thread-safety: UserdbService::handle may run on any thread; serve() runs
// on one thread (the caller's) until the listening socket is shut down.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/posix_fd.hpp"
#include "common/result.hpp"
#include "ipc/wire.hpp"

namespace apop::ipc {

// The file name of the socket in the data directory.
inline constexpr std::string_view kUserdbSocketName = "auth-userdb";

// Answers one lookup from the account store (a function: src/ipc links no
// account code). It must say `unknown` for a name that is not a valid user
// name and `temporary` when the store cannot answer.
using UserLookupFn = std::function<UserInfo(std::string_view user)>;

class UserdbService {
 public:
  // `allowed`: the peer uids served (others are closed without a reply).
  UserdbService(UserLookupFn lookup, std::vector<uid_t> allowed);

  // The reply to one packet, or nullopt when it is not a well-formed
  // user_lookup (the connection is then closed without one).
  std::optional<std::string> handle(std::string_view packet) const;
  // Accepts and answers connections on `listen_fd` until it is shut down
  // (shutdown(2) from another thread ends the loop). Each connection gets
  // `timeout` to send its request.
  void serve(int listen_fd, std::chrono::milliseconds timeout) const;

 private:
  UserLookupFn lookup_;
  std::vector<uid_t> allowed_;
};

// Listens at `path`: a socket left there by an earlier run is replaced,
// anything else is refused (Errc::permanent). The socket gets mode 0660,
// owner `owner` and group `group` (called as root, or as `owner`).
Result<UniqueFd> listen_userdb(const std::filesystem::path& path, uid_t owner, gid_t group);

// One lookup at the socket `path`. Errc::not_found when nothing listens
// there (no socket file, or refused: no auth process is running);
// Errc::temporary when the reply does not come within `timeout` or is not
// a well-formed user_info.
Result<UserInfo> query_userdb(const std::filesystem::path& path, std::string_view user,
                              std::chrono::milliseconds timeout);

}  // namespace apop::ipc
