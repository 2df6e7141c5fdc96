// Pieces shared by `apop fetch`, `apop migrate` (and in part `apop probe`):
// the connection options and their CLI declaration, the pop3[s]:// URL, the
// password (file, environment or prompt; never argv), byte counts for people.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "client/fetch.hpp"
#include "client/transport.hpp"
#include "common/limits.hpp"
#include "common/result.hpp"

namespace apop::cli {

// How to reach and log in to a POP3 server: the options `apop fetch` and
// `apop migrate` share; `apop probe` takes the TLS verification, timeout and
// JSON part (ConnectionOptionSet).
struct ConnectionArgs {
  std::string password_file;
  std::string auth = "auto";  // checked by the option's validator
  std::string tls;            // empty: implicit for pop3s://, else auto
  std::string ca_file;
  bool insecure = false;
  bool allow_plaintext = false;
  bool accept_downgrade = false;
  unsigned timeout = 60;  // seconds per network operation
  std::uint64_t max_messages = limits::kMaxFetchListing;
  std::uint64_t max_listing_bytes = limits::kMaxListingBytes;
  bool json = false;
  bool verbose = false;
};

// Which of the ConnectionArgs a subcommand offers, and its timeout bounds.
struct ConnectionOptionSet {
  bool login = true;     // --password-file, --auth, --allow-plaintext, --accept-downgrade
  bool tls_mode = true;  // --tls, --insecure
  bool listing = true;   // --max-messages, --max-listing-bytes
  bool verbose = true;   // -v, --verbose
  unsigned max_timeout = 86400;
  const char* timeout_help = "Network timeout per operation in seconds";
  const char* ca_file_help = "Verify the server certificate against these CAs (PEM)";
  const char* json_help = "Print a JSON summary on standard output";
};

// Declares the options of `set` on `sub`, writing into `a` (which must
// outlive the parse). Values are checked by CLI11 validators (IsMember,
// Range, ExistingFile): a bad one is a usage error (exit 64) naming the
// option. The timeout's default is a.timeout as given.
// One write of prefix + line + '\n' to standard error (a trace line).
void print_line(std::string_view prefix, std::string_view line);

void add_connection_options(CLI::App* sub, ConnectionArgs& a, const ConnectionOptionSet& set = {});

struct Target {
  bool implicit = false;  // pop3s://
  std::string user;
  std::string host;
  std::uint16_t port = 0;  // 0: the default for the TLS mode
};

// pop3://USER@HOST[:PORT] and pop3s://... (RFC 2384 without ;AUTH=); USER
// may be percent-encoded. nullopt with `why` on a bad URL.
std::optional<Target> parse_url(std::string_view url, std::string& why);

// The TLS mode and port for `target` and a --tls flag (implicit, starttls,
// auto, none; empty: implicit for pop3s://, else auto). nullopt with `why`
// when the flag is unknown or contradicts pop3s://.
struct Endpoint {
  client::TlsMode mode = client::TlsMode::automatic;
  std::uint16_t port = 110;
};
std::optional<Endpoint> resolve_endpoint(const Target& target, const std::string& tls,
                                         std::string& why);

// The fetch engine's options for `target` and `endpoint` (password not yet
// set): authentication, TLS, downgrade and listing limits from `a`; with
// --verbose the protocol trace, and warnings, on standard error prefixed
// with "apop COMMAND: warning: ".
client::FetchOptions fetch_options(const Target& target, const Endpoint& endpoint,
                                   const ConnectionArgs& a, std::string_view command);

// The transport's options: host, port, implicit TLS, the TLS options of
// `opts`, the timeout of `a`.
client::ConnectOptions connect_options(const Target& target, const Endpoint& endpoint,
                                       const client::FetchOptions& opts, const ConnectionArgs& a);

// Connects and runs `session` on the transport; a connection failure becomes
// the summary's status and error. With `show_tls`, the negotiated TLS
// protocol and cipher are printed on standard error (`apop fetch -v`).
client::FetchSummary connect_and_run(
    const client::ConnectOptions& co, bool show_tls,
    const std::function<client::FetchSummary(client::Transport&)>& session);

// The environment variable that may hold the password.
inline constexpr const char* kPasswordEnv = "APOP_PASSWORD";

// The first line of password_file, else $APOP_PASSWORD, else a prompt
// without echo. Errc::invalid when none is available. $APOP_PASSWORD is
// removed from the environment (and its value overwritten) in every case, so
// nothing this process starts (the MDA of `fetch --to mda:`) inherits it.
Result<std::string> read_password(const std::string& password_file);

// read_password(), refusing a password with a line break or NUL (it would
// inject commands): Errc::invalid with the reason.
Result<std::string> read_login_password(const std::string& password_file);

// $APOP_PASSWORD's value (nullopt when unset or empty), removed from the
// environment as above. Exposed for tests.
std::optional<std::string> take_password_env();

// "1.5 MiB".
std::string human_bytes(double b);

}  // namespace apop::cli
