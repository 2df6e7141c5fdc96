// Pieces shared by `apop fetch` and `apop migrate`: the pop3[s]:// URL, the
// password (file, environment or prompt; never argv), byte counts for people.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "client/fetch.hpp"
#include "common/result.hpp"

namespace apop::cli {

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

// The environment variable that may hold the password.
inline constexpr const char* kPasswordEnv = "APOP_PASSWORD";

// The first line of password_file, else $APOP_PASSWORD, else a prompt
// without echo. Errc::invalid when none is available. $APOP_PASSWORD is
// removed from the environment (and its value overwritten) in every case, so
// nothing this process starts (the MDA of `fetch --to mda:`) inherits it.
Result<std::string> read_password(const std::string& password_file);

// $APOP_PASSWORD's value (nullopt when unset or empty), removed from the
// environment as above. Exposed for tests.
std::optional<std::string> take_password_env();

// "1.5 MiB".
std::string human_bytes(double b);

}  // namespace apop::cli
