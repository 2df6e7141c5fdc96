// `apop serve`'s set-up steps, shared by the single-process server
// (cmd_serve.cpp) and the multi-process one (serve_workers.cpp): checking the
// configuration, identity and logging, opening the account store, the
// authenticator chain and maildrop opener, and the SIGHUP reload.
#pragma once

#include <spdlog/spdlog.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "auth/authenticator.hpp"
#include "auth/challenge.hpp"
#include "auth/throttle.hpp"
#include "cli/common.hpp"
#include "cli/serve_config.hpp"
#include "net/lmtp_server.hpp"
#include "net/privileges.hpp"
#include "net/server.hpp"
#include "pg/shared.hpp"
#include "store/mail_location.hpp"

namespace apop::cli {

// Re-reads the configuration (file, then the command-line flags again).
using Reread = std::function<Result<ServeConfig>()>;

constexpr const char* kGreeting = "apop POP3 server ready";

// A step of run_serve that failed: the exit status (the step logged why).
struct Exit {
  int code;
};
template <typename T>
using Step = std::variant<T, Exit>;

// The server options a configuration asks for, or what is wrong with it
// (Errc::invalid, naming the setting).
Result<net::ServerOptions> server_options(const ServeConfig& a);
// The LMTP listeners' settings (checked by server_options() too):
// Errc::invalid for a bad lmtp_listen or lmtp_socket_mode.
Result<net::LmtpServerOptions> lmtp_options(const ServeConfig& a, const std::string& hostname);
// RFC 2449: some account has its own LOGIN-DELAY / EXPIRE, different from
// the server's, so CAPA before login appends "USER" (§6.5, §6.7).
void mark_per_user_limits(const std::vector<auth::UserRecord>& users, pop3::SessionConfig& s);
// The first steps of every `apop serve`: debug level, no core dumps, the
// service identity, the log target, the server options (each failure
// logged, its exit status returned).
struct Prelude {
  Result<std::optional<net::Identity>> identity;
  net::ServerOptions options;
};
Step<Prelude> serve_prelude(const ServeConfig& a);
// The identity `user`/`group` name (nullopt when neither is set).
Result<std::optional<net::Identity>> service_identity(const ServeConfig& a);
// No core file, no ptrace by the same user (unless allow_core_dumps).
bool forbid_core_dumps(const ServeConfig& a, spdlog::level::level_enum level);
// Installs the log target (file opened before any privilege drop).
bool start_logging(const ServeConfig& a, const Result<std::optional<net::Identity>>& identity);
// Checks that the identity can be taken (or warns about running as root).
bool check_identity(const Result<std::optional<net::Identity>>& identity);
// The data directory and the account store, opened as the service user.
Step<OpenedCredentials> open_store(const ServeConfig& a, const DataDir& dir,
                                   const std::optional<net::Identity>& identity);
// APOP enabled for someone at all, per-user LOGIN-DELAY/EXPIRE (from the store).
bool apply_stored_policy(auth::CredentialStore& store, pop3::SessionConfig& session);

// Logins and maildrops on top of the opened store: the authenticator chain
// (the store, then the failed-login defence in front of it) and the
// maildrop opener. With PostgreSQL the servers share the failed-login state
// and the maildrop locks there (docs/scaling.md); alone, they live in
// memory and in the maildrop's lock file. Members refer to each other: the
// object stays where it was built.
struct Services {
  OpenedCredentials creds;
  std::shared_ptr<auth::ChallengeGenerator> challenges;
  std::unique_ptr<auth::StoreAuthenticator> authenticator;
  std::unique_ptr<auth::FailureTracker> failures;
  std::unique_ptr<auth::ThrottlingAuthenticator> throttled;
  std::unique_ptr<store::LocationOpener> locations;
  std::unique_ptr<pg::SharedLockOpener> shared_locks;

  bool shared() const { return creds.postgres != nullptr; }
  pop3::MaildropOpener& opener() {
    return shared_locks ? static_cast<pop3::MaildropOpener&>(*shared_locks) : *locations;
  }
};

auth::ThrottleConfig throttle_config(const ServeConfig& a);
// The mail of an account: its own location (returned by the login), else
// mail_location.
std::unique_ptr<store::LocationOpener> mail_locations(const ServeConfig& a, const DataDir& dir);
std::unique_ptr<Services> build_services(OpenedCredentials creds, const ServeConfig& a,
                                         const DataDir& dir, const std::string& hostname);
// Binds the listeners, then drops root for good (when started as root with
// user/group).
bool bind_and_drop(net::Server& server, const ServeConfig& a,
                   const std::optional<net::Identity>& identity);

// What a reload keeps from start-up (not re-read from the configuration).
struct ReloadFixed {
  bool apop_enabled = true;
  bool inline_apop = false;
  auth::CredentialStore* creds = nullptr;  // null in a worker (no store)
  bool login_delay_per_user = false;       // a worker's, from the auth process
  bool expire_per_user = false;
  std::string hint;  // appended to reload errors
};

// SIGHUP: re-read the configuration; apply what can change at run time to
// new sessions, name what needs a restart, keep everything on error.
void reload(net::Server& server, const Reread& reread, ServeConfig& running,
            const ReloadFixed& fixed);

// `apop serve` with workers > 0: a master, one auth process and the network
// workers (serve_workers.cpp). Returns the exit status.
int run_serve_workers(const ServeConfig& a, const Reread& reread);

}  // namespace apop::cli
