// Where `apop fetch --config` gets an account's password (or OAuth2 token)
// at each poll: a file, or a command run without a shell -- how token
// helpers such as mutt_oauth2.py are used (a token expires, so the command
// runs again on every poll).
//
// Contract: the secret returned is the first line (without its CR LF) and
// is never empty and never contains a NUL; it is never logged or put in an
// error message. Buffers that held more than the secret are wiped.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::client {

// The first line of `path` (a leading "~/" is $HOME). Like ssh with a
// private key, a file that group or other may access in any way (mode &
// 077) is refused, with the chmod that fixes it. Errc::invalid for that,
// for an unreadable file and for an empty first line.
Result<std::string> read_password_file(const std::string& path);

struct CommandLimits {
  std::size_t max_output = limits::kMaxPasswordCommandOutput;
  std::chrono::milliseconds timeout = limits::kPasswordCommandTimeout;
};

// Runs argv (argv[0] searched in $PATH; a leading "~/" in any element is
// $HOME) without a shell, in its own process group, with /dev/null as its
// standard input, our standard error as its own, an empty signal mask and
// the default SIGPIPE disposition; its standard output is read up to
// limits.max_output octets. Errc::temporary when it cannot be started,
// exits non-zero or by a signal, writes more than max_output (killed), runs
// longer than the timeout (its process group is killed) or its first line
// is empty. Safe to call from several threads at once.
Result<std::string> run_password_command(const std::vector<std::string>& argv,
                                         const CommandLimits& limits = {});

}  // namespace apop::client
