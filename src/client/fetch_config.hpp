// The configuration file of `apop fetch --config FILE` (issue 20): any
// number of POP3 accounts, each with its server, login, destination and
// poll interval, in TOML (docs/fetch.md, "Many accounts and the daemon").
//
// The parser is I/O-free: the file's text in, a FetchConfig or the list of
// problems out, each "FILE:LINE:COL: key KEY: problem" like `apop serve
// --config` (cli/serve_config.cpp). Nothing is opened, run or resolved here:
// "~/" stays in paths, the URL is only checked for its form, and the
// password sources are read at each poll (client/password_source.hpp).
//
// Schema (every account key may also be given in [defaults], which each
// [[account]] table starts from; an account's own keys win):
//   max_parallel = 4            top level: accounts polled at once
//   state_dir = "DIR"           top level: UIDL state, one file per account
//   [defaults] ...
//   [[account]]
//   name                        required, unique, [A-Za-z0-9._-], at most 64
//   url                         required, pop3[s]://USER@HOST[:PORT]
//   auth, tls, ca_file          as --auth, --tls, --ca-file
//   password_file | password_command   exactly one (the second an argv array)
//   to                          required, as --to
//   deliver_to                  required with lmtp:/smtp:
//   on_reject                   keep | bounce
//   keep                        bool
//   max_message_size            integer octets or "20M" (K, M, G: 1024-based)
//   fetch_limit                 integer >= 0 (0: all)
//   poll_interval               integer seconds or "90s", "5m", "2h", "1d"
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/destination.hpp"
#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::client {

struct AccountConfig {
  std::string name;
  std::string url;
  std::string auth = "auto";
  std::string tls;  // empty: implicit for pop3s://, else auto
  std::string ca_file;
  std::string password_file;
  std::vector<std::string> password_command;  // argv, run without a shell
  std::string to;
  std::string deliver_to;
  DestinationOptions::OnReject on_reject = DestinationOptions::OnReject::keep;
  bool keep = false;
  std::uint64_t max_message_size = 0;  // 0: no limit of its own
  std::uint64_t fetch_limit = 0;       // 0: every new message
  std::chrono::seconds poll_interval = limits::kFetchPollInterval;
  // "FILE:LINE:COL: key url: " of the url key, for the checks the caller
  // does later (the full URL syntax, --tls against pop3s://).
  std::string url_at;
  // "FILE:LINE" of the [[account]] table.
  std::string at;
};

struct FetchConfig {
  unsigned max_parallel = limits::kFetchMaxParallelDefault;
  std::string state_dir;  // empty: $XDG_STATE_HOME/apop/fetch
  std::vector<AccountConfig> accounts;
};

// Parses `text` (the contents of `file`, which is used in messages only).
// Errc::invalid with one problem per line of the message (all that were
// found, at most 20) on any syntax error, unknown key, bad value, missing
// required key, duplicate name, or a file with no account.
Result<FetchConfig> parse_fetch_config(std::string_view text, std::string_view file);

// "90" "90s" "5m" "2h" "1d" -> seconds; nullopt when malformed or zero.
std::optional<std::chrono::seconds> parse_interval(std::string_view s);
// "1048576" "512K" "20M" "1G" (1024-based, case-insensitive) -> octets;
// nullopt when malformed or overflowing.
std::optional<std::uint64_t> parse_size(std::string_view s);

// Whether `name` can name an account: 1 to kMaxFetchAccountName octets of
// [A-Za-z0-9._-], not starting with '.' (it is a state file name).
bool valid_account_name(std::string_view name);

}  // namespace apop::client
