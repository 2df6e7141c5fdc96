// `apop migrate pop3[s]://USER@OLD-HOST[:PORT] --to-user USER`: copies a whole
// mailbox from a legacy POP3 server into a local user's Maildir, keeping its
// UIDLs. The engine (locking, the UIDL map, resumption) is
// client/migrate.hpp; this file is options, the local user check and output.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/pop3_target.hpp"
#include "client/fetch.hpp"
#include "client/migrate.hpp"
#include "client/transport.hpp"

namespace apop::cli {
namespace {

constexpr const char* kMigrateFooter =
    R"(The source mailbox is never changed: messages are read with RETR and left
there (no DELE). Every message's UIDL on the source is kept: apop serves the
copied message under the same UIDL (MAILDIR/apop-uidl), so POP3 clients
that leave mail on the server download nothing twice. A re-run after an
interruption copies only what is missing, never a message twice.
The state of a migration is MAILDIR/apop-migrate-HOST-PORT-USER.state.
Exit status: as `apop fetch` (0 success, 2 some messages could not be
stored, 3 authentication, 4 TLS, 5 protocol (also a listing above
--max-messages or --max-listing-bytes), 6 network, 7 security refusal,
1 other), 67 the local user does not exist, 64 usage error.
The password comes from --password-file, else $APOP_PASSWORD, else a prompt
without echo on the terminal; never from the command line.)";

struct MigrateArgs {
  std::string url;
  std::string to_user;
  std::string data;
  std::string users;  // --users: a postgresql:// URL, else $APOP_USERS / DATA/users.sqlite
  bool dry_run = false;
  ConnectionArgs conn;
};

int usage(const std::string& m) {
  std::fprintf(stderr, "apop migrate: %s\n", m.c_str());
  return kExitUsage;
}

int error(const std::string& m) {
  std::fprintf(stderr, "apop migrate: %s\n", m.c_str());
  return kExitError;
}

// The local user must exist: kExitOk, else the exit status.
int check_local_user(const DataDir& dir, const MigrateArgs& a) {
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return error(store.error().message);
  auto exists = (*store)->has_user(a.to_user);
  if (!exists || !*exists) {
    std::fprintf(stderr, "apop migrate: no local user %s (apop user add / apop user import)\n",
                 a.to_user.c_str());
    return kExitNoUser;
  }
  return kExitOk;
}

void print_json(const MigrateArgs& a, const Target& target, std::uint16_t port,
                const client::Migration& m, const client::FetchSummary& sum) {
  const client::MigrationCounts n = m.counts(sum);
  nlohmann::json j;
  j["status"] = static_cast<int>(sum.status);
  j["ok"] = sum.status == client::FetchStatus::ok;
  if (!sum.error.empty()) j["error"] = sum.error;
  j["source"] = {{"host", target.host}, {"port", port}, {"user", target.user}};
  j["to_user"] = a.to_user;
  j["maildir"] = m.maildir().string();
  j["dry_run"] = a.dry_run;
  j["tls"] = sum.tls;
  j["auth"] = sum.auth;
  j["messages"] = {{"on_source", sum.on_server},
                   {"already_migrated", n.already_migrated},
                   {"to_copy", sum.new_messages},
                   {"copied", n.copied},
                   {"failed", sum.store_failed}};
  j["bytes"] = {{"to_copy", sum.new_bytes}, {"copied", sum.bytes}};
  j["warnings"] = sum.warnings;
  std::printf("%s\n", j.dump(2).c_str());
}

void print_text(const MigrateArgs& a, const client::Migration& m, const client::FetchSummary& sum) {
  const client::MigrationCounts n = m.counts(sum);
  if (a.dry_run) {
    std::printf("would copy %llu of %llu messages (%s); %llu already migrated\n",
                static_cast<unsigned long long>(sum.new_messages),
                static_cast<unsigned long long>(sum.on_server),
                human_bytes(static_cast<double>(sum.new_bytes)).c_str(),
                static_cast<unsigned long long>(n.done_before));
  } else {
    std::printf("copied %llu messages (%s), %llu already migrated, %llu failed; %llu on source\n",
                static_cast<unsigned long long>(n.copied),
                human_bytes(static_cast<double>(sum.bytes)).c_str(),
                static_cast<unsigned long long>(n.already_migrated),
                static_cast<unsigned long long>(sum.store_failed),
                static_cast<unsigned long long>(sum.on_server));
  }
}

int run_migrate(const MigrateArgs& a) {
  std::string why;
  auto target = parse_url(a.url, why);
  if (!target) return usage(why);
  auto endpoint = resolve_endpoint(*target, a.conn.tls, why);
  if (!endpoint) return usage(why);

  const DataDir dir = resolve_data_dir(a.data);
  if (int code = check_local_user(dir, a); code != kExitOk) return code;
  auto migration =
      client::Migration::open(dir.maildir(a.to_user), {target->host, endpoint->port, target->user});
  if (!migration) return error(migration.error().message);
  client::Migration& m = **migration;

  auto password = read_login_password(a.conn.password_file);
  if (!password) return usage(password.error().message);
  client::FetchOptions opts = fetch_options(*target, *endpoint, a.conn, "migrate");
  opts.password = std::move(*password);
  opts.dry_run = a.dry_run;

  const client::FetchSummary sum =
      connect_and_run(connect_options(*target, *endpoint, opts, a.conn), /*show_tls=*/false,
                      [&](client::Transport& t) { return m.run(t, opts); });
  if (a.conn.json) {
    print_json(a, *target, endpoint->port, m, sum);
  } else if (sum.status == client::FetchStatus::ok) {
    print_text(a, m, sum);
  }
  if (sum.status != client::FetchStatus::ok) {
    std::fprintf(stderr, "apop migrate: error: %s\n", sum.error.c_str());
  }
  return static_cast<int>(sum.status);
}

}  // namespace

void register_migrate(CLI::App& app, Registry& registry) {
  auto a = std::make_shared<MigrateArgs>();
  CLI::App* sub = app.add_subcommand(
      "migrate", "Copy a mailbox from a legacy POP3 server, keeping its UIDLs (resumable)");
  sub->add_option("url", a->url,
                  "pop3://USER@HOST[:PORT] (port 110) or pop3s://USER@HOST[:PORT] (port 995)")
      ->required();
  sub->add_option("--to-user", a->to_user, "The local apop user whose Maildir receives the mail")
      ->required()
      ->check(user_name_validator());
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_flag("--dry-run", a->dry_run,
                "Log in and report what would be copied (messages, bytes); copy nothing");
  add_connection_options(sub, a->conn);
  sub->footer(kMigrateFooter);
  registry.add(sub, [a] { return run_migrate(*a); });
}

}  // namespace apop::cli
