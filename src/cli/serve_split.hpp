// `auth_user` (issue 19): the auth process under a uid of its own, so that
// the network workers cannot open secret.key or the account database even
// where Landlock is missing -- the uid separation Dovecot's auth process and
// OpenSSH's monitor have.
//
// The data directory's layout then (made by split_data_dir, as root, at
// every start of the auth process; a single-uid layout is converted, each
// change logged):
//
//   DATA/                  auth user, service group, 0710 (the service user
//                          may pass through to its directories, not list)
//   DATA/secret.key        auth user, 0600
//   DATA/users.sqlite*     auth user, 0600 (with -wal, -shm, -journal)
//   DATA/mail/, locks/, mbox-journal/   service user, 0700 (created if missing)
//   DATA/auth-userdb       the socket `apop deliver` asks (ipc/userdb.hpp):
//                          auth user, service group, 0660
#pragma once

#include "cli/common.hpp"
#include "common/result.hpp"
#include "net/privileges.hpp"

namespace apop::cli {

// As root: gives the data directory the layout above. Refuses (Errc::
// permanent) a key or database file that is a symbolic link, not a regular
// file or has more than one link (root would otherwise hand a file it was
// tricked into to the auth user), and a data directory that is a symbolic
// link.
Result<void> split_data_dir(const DataDir& dir, const net::Identity& auth,
                            const net::Identity& service);

}  // namespace apop::cli
