// `apop deliver USER < message`: local delivery for MTAs (sysexits codes).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

struct DeliverArgs {
  std::string data;
  std::string users;  // --users URL
  std::string user;
};

int run_deliver(const DeliverArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  if (!auth::is_valid_username(a.user)) {
    spdlog::error("deliver: unknown user");
    return kExitNoUser;
  }
  const std::string users = resolve_users(a.users);
  if (users.empty() && ::access(dir.users_db().c_str(), F_OK) != 0) {
    // A missing database is a broken installation, not an unknown user:
    // temporary, so the MTA keeps the message and retries.
    spdlog::error("deliver: no user database at {}", dir.users_db().string());
    return kExitTempFail;
  }
  auto store = open_credentials(dir, users);
  if (!store) {
    spdlog::error("deliver: credentials: {}", store.error().message);
    return kExitTempFail;
  }
  auto found = (*store)->has_user(a.user);
  if (!found) {
    spdlog::error("deliver: {}", found.error().message);
    return kExitTempFail;
  }
  if (!*found) {
    spdlog::error("deliver: unknown user {}", a.user);
    return kExitNoUser;
  }
  store::DeliverOptions opts;
  opts.hostname = local_hostname();
  if (auto made = ensure_layout(dir); !made) {
    spdlog::error("deliver: {}", made.error().message);
    return kExitTempFail;
  }
  if (auto made = store::ensure_maildir(dir.maildir(a.user)); !made) {
    spdlog::error("deliver: user={} {}", a.user, made.error().message);
    return kExitTempFail;
  }
  auto r = store::deliver(dir.maildir(a.user), STDIN_FILENO, opts);
  if (!r) {
    spdlog::error("deliver: user={} {}", a.user, r.error().message);
    return r.error().code == Errc::invalid ? kExitDataErr : kExitTempFail;
  }
  spdlog::info("delivered user={} file={}", a.user, *r);
  return kExitOk;
}

}  // namespace

void register_deliver(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<DeliverArgs>();
  CLI::App* sub = app.add_subcommand(
      "deliver", "Deliver one message from stdin into USER's Maildir (exit codes per sysexits)");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_option("user", a->user, "Recipient account")->required();
  registry.add(sub, [a] { return run_deliver(*a); });
}

}  // namespace apop::cli
