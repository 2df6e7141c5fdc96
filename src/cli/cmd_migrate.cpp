// `apop migrate pop3[s]://USER@OLD-HOST[:PORT] --to-user USER`: copies a whole
// mailbox from a legacy POP3 server into a local user's Maildir with the
// fetch engine (client/fetch.hpp: TLS, strict APOP challenge checks,
// downgrade detection), keeping mail on the source, and pins every message's
// source UIDL in the Maildir's UIDL map (store/uidl_map.hpp) so that clients
// pointed at apop afterwards download nothing twice.
//
// Resumable, never duplicating: for each message
//   1. the message is written to tmp/ and fsynced,
//   2. "BASENAME UIDL" is appended to MAILDIR/apop-uidl and fsynced,
//   3. the file is linked into new/ and new/ fsynced,
//   4. the UIDL is added to the migration state file (atomic rewrite).
// A re-run skips the UIDLs of the state file; a message cut between 3 and 4
// is recognised by its map entry whose file exists and is not stored again;
// one cut between 2 and 3 has a map entry without a file and is copied again.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/pop3_target.hpp"
#include "client/account_state.hpp"
#include "client/destination.hpp"
#include "client/fetch.hpp"
#include "client/transport.hpp"
#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "store/maildir.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"

namespace apop::cli {
namespace {

namespace fs = std::filesystem;

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
  std::string password_file;
  std::string auth = "auto";
  std::string tls;
  std::string ca_file;
  bool insecure = false;
  bool allow_plaintext = false;
  bool accept_downgrade = false;
  bool dry_run = false;
  bool json = false;
  bool verbose = false;
  std::uint64_t max_messages = limits::kMaxFetchListing;
  std::uint64_t max_listing_bytes = limits::kMaxListingBytes;
  int timeout = 60;
};

// File-name-safe form of a state key.
std::string safe_name(std::string_view s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_' || c == '@';
    out.push_back(ok ? c : '_');
  }
  return out;
}

// Base names present in new/ and cur/.
Result<std::set<std::string>> live_bases(const fs::path& maildir) {
  std::set<std::string> out;
  for (const char* sub : {"new", "cur"}) {
    std::error_code ec;
    for (fs::directory_iterator it(maildir / sub, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.') continue;
      out.emplace(store::maildir_base_name(name));
    }
    if (ec)
      return make_error(Errc::temporary, "list " + (maildir / sub).string() + ": " + ec.message());
  }
  return out;
}

// Skips messages a cut run already put into the Maildir (map entry with a
// live file); everything else goes to the Maildir destination.
class MigrateDestination final : public client::Destination {
 public:
  MigrateDestination(std::unique_ptr<client::Destination> inner, std::set<std::string> present)
      : inner_(std::move(inner)), present_(std::move(present)) {}
  Result<void> store(std::string_view message, const client::MessageMeta& meta) override {
    if (!meta.uidl.empty() && present_.count(meta.uidl) != 0) {
      ++already_;
      return {};
    }
    auto r = inner_->store(message, meta);
    if (r) present_.insert(meta.uidl);
    return r;
  }
  std::string describe() const override { return inner_->describe(); }
  std::uint64_t already() const { return already_; }

 private:
  std::unique_ptr<client::Destination> inner_;
  std::set<std::string> present_;
  std::uint64_t already_ = 0;
};

int run_migrate(const MigrateArgs& a) {
  auto usage = [](const std::string& m) {
    std::fprintf(stderr, "apop migrate: %s\n", m.c_str());
    return kExitUsage;
  };
  std::string why;
  auto target = parse_url(a.url, why);
  if (!target) return usage(why);
  if (!auth::is_valid_username(a.to_user)) return usage("--to-user: invalid user name");
  auto endpoint = resolve_endpoint(*target, a.tls, why);
  if (!endpoint) return usage(why);
  const client::TlsMode mode = endpoint->mode;
  auto mech = client::parse_auth_mech(a.auth);
  if (!mech)
    return usage("--auth must be auto, apop, scram-sha-256, cram-md5, plain, login or user");
  if (a.timeout <= 0 || a.timeout > 86400) return usage("--timeout must be 1..86400 seconds");
  const std::uint16_t port = endpoint->port;

  DataDir dir = resolve_data_dir(a.data);
  {
    auto store = open_credentials(dir, resolve_users(a.users));
    if (!store) {
      std::fprintf(stderr, "apop migrate: %s\n", store.error().message.c_str());
      return kExitError;
    }
    auto exists = (*store)->has_user(a.to_user);
    if (!exists || !*exists) {
      std::fprintf(stderr, "apop migrate: no local user %s (apop user add / apop user import)\n",
                   a.to_user.c_str());
      return kExitNoUser;
    }
  }
  const fs::path maildir = dir.maildir(a.to_user);
  if (auto r = store::ensure_maildir(maildir); !r) {
    std::fprintf(stderr, "apop migrate: %s\n", r.error().message.c_str());
    return kExitError;
  }
  // One migration per Maildir at a time.
  UniqueFd lock(::open((maildir / "apop-migrate.lock").c_str(),
                       O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    std::fprintf(stderr, "apop migrate: %s\n",
                 lock ? "another apop migrate into this Maildir is running" : std::strerror(errno));
    return kExitError;
  }
  const fs::path state_path =
      maildir / ("apop-migrate-" + safe_name(target->host) + "-" + std::to_string(port) + "-" +
                 safe_name(target->user) + ".state");
  auto state = client::AccountState::load(state_path);
  if (!state) {
    std::fprintf(stderr, "apop migrate: state file %s: %s\n", state_path.c_str(),
                 state.error().message.c_str());
    return kExitError;
  }
  auto map = store::load_uidl_map(maildir);
  if (!map) {
    std::fprintf(stderr, "apop migrate: %s\n", map.error().message.c_str());
    return kExitError;
  }
  auto live = live_bases(maildir);
  if (!live) {
    std::fprintf(stderr, "apop migrate: %s\n", live.error().message.c_str());
    return kExitError;
  }
  std::set<std::string> present;
  for (const auto& [base, uidl] : map->by_base) {
    if (live->count(base) != 0) present.insert(uidl);
  }

  client::DestinationOptions dopts;
  dopts.before_publish = [maildir](std::string_view base,
                                   const client::MessageMeta& meta) -> Result<void> {
    if (meta.uidl.empty()) return make_error(Errc::permanent, "message without UIDL");
    return store::append_uidl_map(maildir, {{std::string(base), meta.uidl}});
  };
  auto inner = client::open_destination("maildir:" + maildir.string(), dopts);
  if (!inner) {
    std::fprintf(stderr, "apop migrate: %s\n", inner.error().message.c_str());
    return kExitError;
  }
  MigrateDestination dest(std::move(*inner), std::move(present));

  auto password = read_password(a.password_file);
  if (!password) return usage(password.error().message);
  if (password->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
    return usage("the password contains a line break or NUL");
  }
  client::FetchOptions opts;
  opts.user = target->user;
  opts.password = std::move(*password);
  opts.auth = *mech;
  opts.tls_mode = mode;
  opts.tls.server_name = target->host;
  opts.tls.ca_file = a.ca_file;
  opts.tls.insecure = a.insecure;
  opts.allow_plaintext = a.allow_plaintext;
  opts.keep = true;  // never DELE on the source
  opts.accept_downgrade = a.accept_downgrade;
  opts.listing.max_messages = a.max_messages;
  opts.listing.max_bytes = a.max_listing_bytes;
  opts.dry_run = a.dry_run;
  if (a.verbose) {
    opts.trace = [](std::string_view l) {
      std::fprintf(stderr, "%.*s\n", static_cast<int>(l.size()), l.data());
    };
  }
  opts.warn = [](std::string_view w) {
    std::fprintf(stderr, "apop migrate: warning: %.*s\n", static_cast<int>(w.size()), w.data());
  };

  client::ConnectOptions co;
  co.host = target->host;
  co.port = port;
  co.implicit_tls = mode == client::TlsMode::implicit;
  co.tls = opts.tls;
  co.timeout = std::chrono::seconds(a.timeout);
  client::FetchSummary sum;
  client::NetFailure nf = client::NetFailure::none;
  auto t = client::connect(co, &nf);
  if (!t) {
    sum.status = client::status_for(nf);
    sum.error = t.error().message;
  } else {
    sum = client::run_session(**t, dest, *state, opts);
  }
  const int code = static_cast<int>(sum.status);
  const std::uint64_t copied = sum.stored - dest.already();
  const std::uint64_t done_before = sum.on_server >= sum.new_messages + sum.store_failed
                                        ? sum.on_server - sum.new_messages - sum.store_failed
                                        : 0;
  if (a.json) {
    nlohmann::json j;
    j["status"] = code;
    j["ok"] = sum.status == client::FetchStatus::ok;
    if (!sum.error.empty()) j["error"] = sum.error;
    j["source"] = {{"host", target->host}, {"port", port}, {"user", target->user}};
    j["to_user"] = a.to_user;
    j["maildir"] = maildir.string();
    j["dry_run"] = a.dry_run;
    j["tls"] = sum.tls;
    j["auth"] = sum.auth;
    j["messages"] = {{"on_source", sum.on_server},
                     {"already_migrated", done_before + dest.already()},
                     {"to_copy", sum.new_messages},
                     {"copied", copied},
                     {"failed", sum.store_failed}};
    j["bytes"] = {{"to_copy", sum.new_bytes}, {"copied", sum.bytes}};
    j["warnings"] = sum.warnings;
    std::printf("%s\n", j.dump(2).c_str());
  } else if (sum.status == client::FetchStatus::ok) {
    if (a.dry_run) {
      std::printf("would copy %llu of %llu messages (%s); %llu already migrated\n",
                  static_cast<unsigned long long>(sum.new_messages),
                  static_cast<unsigned long long>(sum.on_server),
                  human_bytes(static_cast<double>(sum.new_bytes)).c_str(),
                  static_cast<unsigned long long>(done_before));
    } else {
      std::printf("copied %llu messages (%s), %llu already migrated, %llu failed; %llu on source\n",
                  static_cast<unsigned long long>(copied),
                  human_bytes(static_cast<double>(sum.bytes)).c_str(),
                  static_cast<unsigned long long>(done_before + dest.already()),
                  static_cast<unsigned long long>(sum.store_failed),
                  static_cast<unsigned long long>(sum.on_server));
    }
  }
  if (sum.status != client::FetchStatus::ok) {
    std::fprintf(stderr, "apop migrate: error: %s\n", sum.error.c_str());
  }
  return code;
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
      ->required();
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_option("--password-file", a->password_file,
                  "Read the source password from the first line of this file");
  sub->add_option("--auth", a->auth,
                  "auto|apop|scram-sha-256|cram-md5|plain|login|user (default auto)");
  sub->add_option("--tls", a->tls,
                  "implicit|starttls|auto|none (default: auto, implicit for pop3s://)");
  sub->add_option("--ca-file", a->ca_file, "Verify the server certificate against these CAs (PEM)");
  sub->add_flag("--insecure", a->insecure, "Do not verify the server certificate (dangerous)");
  sub->add_flag("--allow-plaintext", a->allow_plaintext, "Allow sending the password without TLS");
  sub->add_flag("--accept-downgrade", a->accept_downgrade,
                "Continue when the server offers less (TLS, APOP, SCRAM) than last time");
  sub->add_flag("--dry-run", a->dry_run,
                "Log in and report what would be copied (messages, bytes); copy nothing");
  sub->add_option("--timeout", a->timeout, "Network timeout per operation in seconds (default 60)");
  sub->add_option("--max-messages", a->max_messages,
                  "Refuse a maildrop announcing more messages than this (default 1000000; "
                  "exit 5)")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{100'000'000}));
  sub->add_option("--max-listing-bytes", a->max_listing_bytes,
                  "Refuse a UIDL listing with more octets of unique-ids than this (default "
                  "67108864; exit 5)")
      ->check(CLI::Range(std::uint64_t{1024}, std::uint64_t{1} << 40));
  sub->add_flag("--json", a->json, "Print a JSON summary on standard output");
  sub->add_flag("-v,--verbose", a->verbose, "Protocol trace on standard error (secrets hidden)");
  sub->footer(kMigrateFooter);
  registry.add(sub, [a] { return run_migrate(*a); });
}

}  // namespace apop::cli
