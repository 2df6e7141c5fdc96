// `apop deliver USER < message`: local delivery for MTAs (sysexits codes),
// into the user's Maildir or mbox (store/mail_location.hpp).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <variant>

#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/serve_config.hpp"
#include "ipc/userdb.hpp"
#include "store/mail_location.hpp"
#include "store/maildir.hpp"
#include "store/mbox.hpp"

namespace apop::cli {

namespace {

struct DeliverArgs {
  std::string data;
  std::string users;  // --users URL
  std::string user;
  std::string mail_location = std::string(store::kDefaultMailLocation);
  std::string config;  // apop serve's configuration file (quota settings)
  bool quota_full_tempfail = false;
};

// What the lookup learns: the account's own mail location and quota.
struct AccountInfo {
  std::optional<std::string> mail_location;
  auth::AccountQuota quota;
};

// Whether `user` has an account, and its own mail location: from the auth
// process's auth-userdb socket when the server runs one (auth_user: the
// database is not readable here), else from the account store. An exit
// status when the delivery ends here (67 unknown user, 75 temporary).
// `keep` holds the store open until the delivery is done, as before the
// lookup moved here: SQLite removes its -wal and -shm files when the last
// connection closes, and a server started on a disk the delivery then filled
// could not make them again.
std::variant<int, AccountInfo> lookup_account(const DataDir& dir, const std::string& users,
                                              const std::string& user,
                                              std::unique_ptr<auth::CredentialStore>& keep) {
  const auto socket = dir.root / std::string(ipc::kUserdbSocketName);
  struct stat st {};
  if (users.empty() && ::lstat(socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    auto info = ipc::query_userdb(socket, user, limits::kUserdbReplyTimeout);
    if (info) {
      if (info->status == ipc::UserStatus::unknown) {
        spdlog::error("deliver: unknown user {}", user);
        return kExitNoUser;
      }
      if (info->status == ipc::UserStatus::temporary) {
        spdlog::error("deliver: user={} the auth process cannot look the account up now", user);
        return kExitTempFail;
      }
      return AccountInfo{info->mail_location, {info->quota_bytes, info->quota_messages}};
    }
    // No server running: the database itself, if this user may read it.
    if (info.error().code != Errc::not_found || ::access(dir.users_db().c_str(), R_OK) != 0) {
      spdlog::error("deliver: {} (is apop serve running?)", info.error().message);
      return kExitTempFail;
    }
  }
  if (users.empty() && ::access(dir.users_db().c_str(), F_OK) != 0) {
    // A missing database is a broken installation, not an unknown user:
    // temporary, so the MTA keeps the message and retries.
    spdlog::error("deliver: no user database at {}", dir.users_db().string());
    return kExitTempFail;
  }
  // Delivery reads no secret: secret.key is neither read nor created.
  auto store = open_credentials(dir, users, limits::kPgPoolSize, KeyUse::none);
  if (!store) {
    spdlog::error("deliver: credentials: {}", store.error().message);
    return kExitTempFail;
  }
  auto found = (*store)->has_user(user);
  if (!found) {
    spdlog::error("deliver: {}", found.error().message);
    return kExitTempFail;
  }
  if (!*found) {
    spdlog::error("deliver: unknown user {}", user);
    return kExitNoUser;
  }
  auto own = (*store)->mail_location(user);
  if (!own) {
    spdlog::error("deliver: user={} {}", user, own.error().message);
    return kExitTempFail;
  }
  auto quota = (*store)->quota(user);
  if (!quota) {
    spdlog::error("deliver: user={} {}", user, quota.error().message);
    return kExitTempFail;
  }
  keep = std::move(*store);
  return AccountInfo{*own, *quota};
}

// Over quota: 77 (EX_NOPERM; Postfix bounces, as with dovecot-lda -e) with
// "5.2.2 Mailbox full" on stderr, which Postfix quotes in the bounce; or 75
// (EX_TEMPFAIL; Postfix retries) with quota_full_tempfail.
int over_quota(const std::string& user, const Error& e, bool tempfail) {
  spdlog::error("deliver: user={} {}", user, e.message);
  std::fputs(tempfail ? "4.2.2 Mailbox full\n" : "5.2.2 Mailbox full\n", stderr);
  return tempfail ? kExitTempFail : kExitNoPerm;
}

int run_deliver(const DeliverArgs& a) {
  // apop serve's settings that delivery shares: the default quota and
  // quota_full_tempfail (--config FILE; without one, serve's defaults).
  ServeConfig cfg;
  if (!a.config.empty()) {
    if (auto r = ServeOptions::load_file(a.config, cfg); !r) {
      spdlog::error("deliver: configuration: {}", r.error().message);
      return kExitTempFail;  // a broken file must not bounce mail
    }
  }
  const bool tempfail = a.quota_full_tempfail || cfg.quota_full_tempfail;
  auto defaults = default_quota(cfg);
  if (!defaults) {
    spdlog::error("deliver: configuration: {}", defaults.error().message);
    return kExitTempFail;
  }
  DataDir dir = resolve_data_dir(a.data.empty() ? cfg.data : a.data);
  if (!auth::is_valid_username(a.user)) {
    spdlog::error("deliver: unknown user");
    return kExitNoUser;
  }
  const std::string users = resolve_users(a.users.empty() ? cfg.users : a.users);
  std::unique_ptr<auth::CredentialStore> store;
  auto account = lookup_account(dir, users, a.user, store);
  if (auto* code = std::get_if<int>(&account)) return *code;
  const std::optional<std::string> own_location = std::get<AccountInfo>(account).mail_location;
  const store::QuotaLimits quota = effective_quota(std::get<AccountInfo>(account).quota, *defaults);
  auto fallback = store::parse_mail_location(a.mail_location, /*require_user=*/true);
  if (!fallback) {
    spdlog::error("deliver: --mail-location: {}", fallback.error().message);
    return kExitUsage;
  }
  store::LocationOpener locations(
      *fallback, dir.root, store::MboxOptions{},
      [&](std::string_view) -> Result<std::optional<std::string>> { return own_location; });
  auto where = locations.resolve(a.user);
  if (!where) {
    spdlog::error("deliver: user={} {}", a.user, where.error().message);
    return kExitTempFail;
  }
  if (where->first.format == store::MailLocation::Format::mbox) {
    store::MboxDeliverOptions mopts;
    // Postfix local(8) passes the envelope sender to mailbox_command in $SENDER.
    if (const char* sender = std::getenv("SENDER"); sender != nullptr) mopts.sender = sender;
    mopts.quota = quota;
    auto r = store::mbox_deliver(where->second, STDIN_FILENO, mopts);
    if (!r) {
      if (r.error().code == Errc::over_quota) return over_quota(a.user, r.error(), tempfail);
      spdlog::error("deliver: user={} mbox={} {}", a.user, where->second.string(),
                    r.error().message);
      return r.error().code == Errc::invalid ? kExitDataErr : kExitTempFail;
    }
    spdlog::info("delivered user={} mbox={}", a.user, where->second.string());
    return kExitOk;
  }
  const std::filesystem::path maildir = where->second;
  store::DeliverOptions opts;
  opts.hostname = store::local_hostname();
  if (auto made = ensure_layout(dir); !made) {
    spdlog::error("deliver: {}", made.error().message);
    return kExitTempFail;
  }
  opts.create = true;  // a missing Maildir (or part of it) is made
  opts.quota = quota;
  auto r = store::deliver(maildir, STDIN_FILENO, opts);
  if (!r) {
    if (r.error().code == Errc::over_quota) return over_quota(a.user, r.error(), tempfail);
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
      "deliver",
      "Deliver one message from stdin into USER's Maildir or mbox (exit codes per sysexits)");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--mail-location", a->mail_location,
                  "Where users' mail is, as apop serve's mail_location (default "
                  "maildir:%d/mail/%u); an account's own location (apop user mailbox) wins");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_option("--config", a->config,
                  "apop serve's TOML configuration file: its quota_bytes, quota_messages, "
                  "quota_full_tempfail (and data, users when not given here)");
  sub->add_flag("--quota-full-tempfail", a->quota_full_tempfail,
                "Over quota exits 75 (EX_TEMPFAIL: the MTA retries) instead of 77 (EX_NOPERM: "
                "a bounce)");
  sub->add_option("user", a->user, "Recipient account")->required();
  registry.add(sub, [a] { return run_deliver(*a); });
}

}  // namespace apop::cli
