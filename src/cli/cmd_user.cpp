// `apop user add|del|list|passwd|show|policy|mailbox|secret`: accounts, their
// passwords, per-device APOP secrets, per-account policy and mail location.
#include <spdlog/spdlog.h>

#include <charconv>
#include <ctime>
#include <iostream>
#include <optional>
#include <tuple>

#include "auth/credential_store.hpp"
#include "auth/password_policy.hpp"
#include "auth/random.hpp"
#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/user_quota.hpp"
#include "store/mail_location.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

struct UserArgs {
  std::string data;
  std::string users;  // --users URL
  std::string name;
  std::string secret_name;  // device secret
  bool password_stdin = false;
  bool generate = false;
  bool allow_weak = false;
  // policy: "" (unchanged), "default", or a value
  std::string mechanisms, device_only, apop_tls, require_tls;
  std::string login_delay, expire;  // RFC 2449, per account only
  bool global = false;
  std::string location;  // mailbox: "" (show), "default", or FORMAT:PATH
  // add: the server's mail_location, to know where the new account's mail
  // goes (a Maildir is created only for a maildir: location).
  std::string mail_location = std::string(store::kDefaultMailLocation);
  std::string config;  // show: apop serve's configuration (default quota, mail_location)
};

// The new secret for add/passwd: generated, from stdin, or prompted.
Result<std::string> new_secret(const UserArgs& a) {
  if (a.generate) return auth::generate_secret();
  auto s = read_secret(a.password_stdin, /*confirm=*/true);
  if (!s) return s;
  if (s->empty()) return make_error(Errc::invalid, "empty secret");
  if (!a.allow_weak) {
    if (auto strong = auth::check_secret_strength(*s); !strong) {
      return make_error(Errc::invalid, strong.error().message +
                                           " (use --generate for a strong one, or --allow-weak)");
    }
  }
  return s;
}

int fail(std::string_view what, const Error& e) {
  std::cerr << "apop user " << what << ": " << e.message << "\n";
  return e.code == Errc::invalid || e.code == Errc::exists || e.code == Errc::not_found
             ? kExitError
             : kExitTempFail;
}

int run_add(const UserArgs& a) {
  auto location = store::parse_mail_location(a.mail_location, /*require_user=*/true);
  if (!location) {
    std::cerr << "apop user add: --mail-location: " << location.error().message << "\n";
    return kExitUsage;
  }
  DataDir dir = resolve_data_dir(a.data);
  if (auto r = ensure_layout(dir); !r) return fail("add", r.error());
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("add", store.error());
  auto secret = new_secret(a);
  if (!secret) return fail("add", secret.error());
  // A new account has no location of its own: its mail goes where
  // --mail-location says. Only a Maildir is created ahead: an mbox is created
  // by the first delivery, as Postfix does, with the owner and mode the MTA
  // gives it.
  if (auto r = (*store)->add(a.name, *secret); !r) return fail("add", r.error());
  if (location->format == store::MailLocation::Format::maildir) {
    auto path = store::expand_mail_location(*location, a.name, dir.root);
    if (!path) return fail("add", path.error());
    if (auto r = store::ensure_maildir(*path); !r) return fail("add", r.error());
  }
  if (a.generate) std::cout << *secret << std::endl;  // printed once, never stored in clear
  std::cerr << "user " << a.name << " added\n";
  return kExitOk;
}

int run_passwd(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("passwd", store.error());
  auto secret = new_secret(a);
  if (!secret) return fail("passwd", secret.error());
  if (auto r = (*store)->set_password(a.name, *secret); !r) return fail("passwd", r.error());
  if (a.generate) std::cout << *secret << std::endl;
  std::cerr << "secret of " << a.name << " changed\n";
  return kExitOk;
}

int run_del(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("del", store.error());
  if (auto r = (*store)->remove(a.name); !r) return fail("del", r.error());
  // The Maildir is left in place: mail is never deleted by an account change.
  std::cerr << "user " << a.name << " deleted (mail kept in " << dir.maildir(a.name).string()
            << ")\n";
  return kExitOk;
}

int run_list(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("list", store.error());
  auto users = (*store)->list();
  if (!users) return fail("list", users.error());
  for (const auto& u : *users) std::cout << u.name << "\n";
  return kExitOk;
}

std::string date(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

int run_secret_add(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("secret add", store.error());
  auto exists = (*store)->has_user(a.name);
  if (!exists) return fail("secret add", exists.error());
  if (!*exists) return fail("secret add", make_error(Errc::not_found, "no such user: " + a.name));
  auto secret = new_secret(a);
  if (!secret) return fail("secret add", secret.error());
  if (auto r = (*store)->add_device_secret(a.name, a.secret_name, *secret); !r) {
    return fail("secret add", r.error());
  }
  if (a.generate) std::cout << *secret << std::endl;  // printed once, stored only encrypted
  std::cerr << "secret " << a.secret_name << " added for " << a.name << "\n";
  return kExitOk;
}

int run_secret_list(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("secret list", store.error());
  auto list = (*store)->device_secrets(a.name);
  if (!list) return fail("secret list", list.error());
  for (const auto& d : *list) std::cout << d.name << "\t" << date(d.created) << "\n";
  return kExitOk;
}

int run_secret_revoke(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("secret revoke", store.error());
  if (auto r = (*store)->revoke_device_secret(a.name, a.secret_name); !r) {
    return fail("secret revoke", r.error());
  }
  std::cerr << "secret " << a.secret_name << " of " << a.name << " revoked\n";
  return kExitOk;
}

// "on"/"off"/"default" -> set/clear; "" leaves the field alone.
Result<void> apply_bool(std::string_view v, std::optional<bool>& field, const char* what) {
  if (v.empty()) return {};
  if (v == "default") {
    field.reset();
  } else if (v == "on" || v == "yes" || v == "true") {
    field = true;
  } else if (v == "off" || v == "no" || v == "false") {
    field = false;
  } else {
    return make_error(Errc::invalid, std::string(what) + ": expected on, off or default");
  }
  return {};
}

std::string show_bool(const std::optional<bool>& own, bool effective) {
  std::string s = effective ? "on" : "off";
  return own ? s : s + " (default)";
}

// RFC 2449 LOGIN-DELAY: "SECONDS" or "default" ("" leaves it alone).
// Checked by the option's validator (login_delay_validator) at parse time.
Result<void> apply_login_delay(std::string_view v, std::optional<std::uint32_t>& field) {
  if (v.empty()) return {};
  if (v == "default") {
    field.reset();
    return {};
  }
  std::uint32_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || ptr != v.data() + v.size() || n > limits::kMaxLoginDelay) {
    return make_error(Errc::invalid, "expected seconds (0.." +
                                         std::to_string(limits::kMaxLoginDelay) + ") or default");
  }
  field = n;
  return {};
}

// RFC 2449 EXPIRE: "DAYS", "never" or "default" ("" leaves it alone).
// Checked by the option's validator (expire_validator) at parse time.
Result<void> apply_expire(std::string_view v, std::optional<std::int64_t>& field) {
  if (v.empty()) return {};
  if (v == "default") {
    field.reset();
    return {};
  }
  if (v == "never") {
    field = auth::kExpireNever;
    return {};
  }
  std::int64_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || ptr != v.data() + v.size() || n < 0 || n > limits::kMaxExpireDays) {
    return make_error(Errc::invalid, "expected days (0.." + std::to_string(limits::kMaxExpireDays) +
                                         "), never or default");
  }
  field = n;
  return {};
}

// A CLI11 validator from one of the apply_* parsers above: the value is
// refused at parse time (usage error) with the parser's message.
template <typename T>
CLI::Validator parser_validator(Result<void> (*apply)(std::string_view, std::optional<T>&),
                                const char* name) {
  return CLI::Validator(
      [apply](const std::string& v) -> std::string {
        std::optional<T> ignored;
        auto r = apply(v, ignored);
        return r ? std::string() : r.error().message;
      },
      name);
}

std::string show_expire(std::int64_t days) {
  if (days == auth::kExpireNever) return "never";
  if (days == 0) return "0 (retrieved messages are deleted at QUIT)";
  return std::to_string(days) + (days == 1 ? " day" : " days");
}

// RFC 2449 per-account values; the defaults live in the apop serve settings.
void print_login_limits(const auth::Policy& own) {
  std::cout << "login-delay: "
            << (own.login_delay ? std::to_string(*own.login_delay) + " seconds"
                                : std::string("default (apop serve login_delay)"))
            << "\n"
            << "expire: "
            << (own.expire_days ? show_expire(*own.expire_days)
                                : std::string("default (apop serve expire)"))
            << "\n";
}

void print_policy(const auth::Policy& own, const auth::Policy& defaults) {
  const auth::EffectivePolicy e = auth::resolve_policy(own, defaults);
  std::cout << "mechanisms: " << auth::format_mechanisms(e.mechanisms)
            << (own.mechanisms ? "" : " (default)") << "\n"
            << "device-secrets-only: " << show_bool(own.device_secrets_only, e.device_secrets_only)
            << "\n"
            << "md5-challenge-requires-tls: "
            << show_bool(own.md5_challenge_requires_tls, e.md5_challenge_requires_tls) << "\n"
            << "require-tls: " << show_bool(own.require_tls, e.require_tls) << "\n";
}

int run_policy(const UserArgs& a) {
  if (a.global != a.name.empty()) {
    std::cerr << "apop user policy: give a user name or --global (not both)\n";
    return kExitUsage;
  }
  DataDir dir = resolve_data_dir(a.data);
  if (auto r = ensure_layout(dir); !r) return fail("policy", r.error());
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("policy", store.error());
  auto defaults = (*store)->default_policy();
  if (!defaults) return fail("policy", defaults.error());
  auth::Policy p;
  if (a.global) {
    p = *defaults;
  } else {
    auto own = (*store)->policy(a.name);
    if (!own) return fail("policy", own.error());
    p = *own;
  }
  const auth::Policy before = p;
  if (a.mechanisms == "default") {
    p.mechanisms.reset();
  } else if (!a.mechanisms.empty()) {
    auto m = auth::parse_mechanisms(a.mechanisms);
    if (!m) {
      return fail("policy", make_error(Errc::invalid,
                                       "--mechanisms: a comma-separated list of apop, user, "
                                       "plain, login, cram-md5, scram-sha-256, scram-sha-1, "
                                       "all; or default"));
    }
    p.mechanisms = *m;
  }
  if (a.global && (!a.login_delay.empty() || !a.expire.empty())) {
    std::cerr << "apop user policy: --login-delay and --expire are per account; their defaults "
                 "are apop serve settings (login_delay, expire)\n";
    return kExitUsage;
  }
  // Both values were checked by their validators.
  (void)apply_login_delay(a.login_delay, p.login_delay);
  (void)apply_expire(a.expire, p.expire_days);
  for (auto [value, field, what] :
       {std::tuple{&a.device_only, &p.device_secrets_only, "--device-secrets-only"},
        std::tuple{&a.apop_tls, &p.md5_challenge_requires_tls, "--md5-challenge-requires-tls"},
        std::tuple{&a.require_tls, &p.require_tls, "--require-tls"}}) {
    if (auto r = apply_bool(*value, *field, what); !r) return fail("policy", r.error());
  }
  if (!(p == before)) {
    auto r = a.global ? (*store)->set_default_policy(p) : (*store)->set_policy(a.name, p);
    if (!r) return fail("policy", r.error());
    if (a.global) defaults = p;
    std::cerr << "policy of " << (a.global ? std::string("all accounts (defaults)") : a.name)
              << " changed";
    if (a.global) std::cerr << "; restart apop serve for the greeting to follow";
    std::cerr << "\n";
  }
  // For the defaults, "(default)" marks what follows the built-in default.
  print_policy(p, a.global ? auth::Policy{} : *defaults);
  if (!a.global) print_login_limits(p);
  return kExitOk;
}

int run_show(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("show", store.error());
  auto users = (*store)->list();
  if (!users) return fail("show", users.error());
  auto defaults = (*store)->default_policy();
  if (!defaults) return fail("show", defaults.error());
  for (const auto& u : *users) {
    if (u.name != a.name) continue;
    std::cout << "user: " << u.name << "\n"
              << "created: " << date(u.created) << "\n"
              << "password changed: " << date(u.updated) << "\n"
              << "password usable for APOP/CRAM-MD5: "
              << (u.has_password_copy &&
                          !auth::resolve_policy(u.policy, *defaults).device_secrets_only
                      ? "yes"
                      : "no (no encrypted copy kept)")
              << "\n";
    if (!u.foreign_scheme.empty()) {
      std::cout << "imported password hash: {" << u.foreign_scheme
                << "} (USER/PASS, PLAIN and LOGIN only until the first login over TLS)\n";
    }
    print_policy(u.policy, *defaults);
    print_login_limits(u.policy);
    std::cout << "last login: " << (u.last_login ? date(*u.last_login) : std::string("never"))
              << "\n"
              << "mail location: "
              << (u.mail_location ? *u.mail_location
                                  : std::string("default (apop serve mail_location)"))
              << "\n";
    // Quota: limits, and usage when the mailbox exists (cli/user_quota.hpp).
    ServeConfig cfg;
    if (!a.config.empty()) {
      if (auto r = ServeOptions::load_file(a.config, cfg); !r) return fail("show", r.error());
    }
    auto defaults_quota = default_quota(cfg);
    if (!defaults_quota) return fail("show", defaults_quota.error());
    const store::QuotaLimits limits = effective_quota(u.quota, *defaults_quota);
    auto usage = account_usage(cfg, dir, u.name, u.mail_location, limits);
    print_quota(std::cout, u.quota, limits, usage ? *usage : std::nullopt);
    if (!usage) std::cerr << "apop user show: quota usage: " << usage.error().message << "\n";
    auto secrets = (*store)->device_secrets(u.name);
    if (!secrets) return fail("show", secrets.error());
    std::cout << "device secrets: " << secrets->size() << "\n";
    for (const auto& d : *secrets) std::cout << "  " << d.name << "\t" << date(d.created) << "\n";
    return kExitOk;
  }
  return fail("show", make_error(Errc::not_found, "no such user: " + a.name));
}

int run_mailbox(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  if (auto r = ensure_layout(dir); !r) return fail("mailbox", r.error());
  auto store = open_credentials(dir, resolve_users(a.users));
  if (!store) return fail("mailbox", store.error());
  if (a.location == "default") {
    if (auto r = (*store)->set_mail_location(a.name, std::nullopt); !r) {
      return fail("mailbox", r.error());
    }
    std::cerr << "mail location of " << a.name << " changed\n";
  } else if (!a.location.empty()) {
    // Checked here; a path without %u is fine for one account.
    auto loc = store::parse_mail_location(a.location, /*require_user=*/false);
    if (!loc) return fail("mailbox", loc.error());
    if (auto r = (*store)->set_mail_location(a.name, store::format_mail_location(*loc)); !r) {
      return fail("mailbox", r.error());
    }
    std::cerr << "mail location of " << a.name << " changed\n";
  }
  auto own = (*store)->mail_location(a.name);
  if (!own) return fail("mailbox", own.error());
  std::cout << "mail location: "
            << (*own ? **own : std::string("default (apop serve mail_location)")) << "\n";
  return kExitOk;
}

void secret_options(CLI::App* sub, UserArgs& a) {
  auto* in = sub->add_flag("--password-stdin", a.password_stdin,
                           "Read the secret from the first line of stdin");
  auto* gen = sub->add_flag("--generate", a.generate,
                            "Generate a random secret and print it once on stdout");
  in->excludes(gen);
  sub->add_flag("--allow-weak", a.allow_weak, "Accept a short or common secret");
}

}  // namespace

void register_user(CLI::App& app, Registry& registry) {
  CLI::App* user = app.add_subcommand("user", "Manage accounts, passwords, device secrets, policy");
  user->require_subcommand(1);
  auto make = [&](CLI::App* parent, const char* name, const char* help, int (*fn)(const UserArgs&),
                  bool needs_name, bool takes_secret) {
    auto a = std::make_shared<UserArgs>();
    CLI::App* sub = parent->add_subcommand(name, help);
    sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
    sub->add_option("--users", a->users,
                    "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                    "DATA/users.sqlite)");
    if (needs_name) sub->add_option("user", a->name, "User name")->required();
    if (takes_secret) secret_options(sub, *a);
    registry.add(sub, [a, fn] { return fn(*a); });
    return std::make_pair(sub, a);
  };
  {
    auto [add, args] =
        make(user, "add", "Add a user (password from --password-stdin, --generate, or a prompt)",
             run_add, true, true);
    add->get_option("user")->check(user_name_validator());  // the new account's name
    add->add_option("--mail-location", args->mail_location,
                    "Where users' mail is, as apop serve's mail_location (default "
                    "maildir:%d/mail/%u): the Maildir is created there; none for mbox:PATH");
  }
  make(user, "passwd", "Change a user's password", run_passwd, true, true);
  make(user, "del", "Delete a user and their device secrets (their mail is kept)", run_del, true,
       false);
  make(user, "list", "List users", run_list, false, false);
  register_user_import(*user, registry);
  {
    auto [sub, a] =
        make(user, "show", "Show a user's credentials (never the secrets), policy, quota and usage",
             run_show, true, false);
    sub->add_option("--config", a->config,
                    "apop serve's TOML configuration file: its default quota and mail_location");
  }
  register_user_quota(*user, registry);

  {
    auto [sub, a] =
        make(user, "policy", "Show or change a user's policy, or with --global the defaults",
             run_policy, false, false);
    sub->add_option("user", a->name, "User name (omit with --global)");
    sub->add_flag("--global", a->global, "Change the defaults every account follows");
    sub->add_option("--mechanisms", a->mechanisms,
                    "Allowed login mechanisms: comma-separated apop, user, plain, login, "
                    "cram-md5, scram-sha-256, scram-sha-1, or all; 'default' to follow the "
                    "defaults");
    sub->add_option("--device-secrets-only", a->device_only,
                    "on: the password stops working for APOP/CRAM-MD5 and its encrypted copy "
                    "is deleted; off; default")
        ->check(CLI::IsMember({"on", "off", "default"}));
    sub->add_option("--md5-challenge-requires-tls,--apop-requires-tls", a->apop_tls,
                    "on: APOP and CRAM-MD5 (MD5 challenge-responses over the same "
                    "plaintext-equivalent secret) only inside TLS; off; default "
                    "(--apop-requires-tls: the older name)")
        ->check(CLI::IsMember({"on", "off", "default"}));
    sub->add_option("--require-tls", a->require_tls,
                    "on: every mechanism only inside TLS; off; default")
        ->check(CLI::IsMember({"on", "off", "default"}));
    sub->add_option("--login-delay", a->login_delay,
                    "RFC 2449 LOGIN-DELAY: minimum seconds between two logins of this account; "
                    "default: the apop serve setting login_delay")
        ->check(parser_validator(&apply_login_delay, "SECONDS|default"));
    sub->add_option("--expire", a->expire,
                    "RFC 2449 EXPIRE: days a message is kept (older ones are deleted at QUIT); "
                    "0: retrieved messages are deleted at QUIT; never; default: the apop serve "
                    "setting expire")
        ->check(parser_validator(&apply_expire, "DAYS|never|default"));
  }

  {
    auto [sub, a] = make(user, "mailbox",
                         "Show or set where a user's mail is (e.g. mbox:/var/mail/%u); "
                         "'default' follows apop serve mail_location",
                         run_mailbox, true, false);
    sub->add_option("location", a->location,
                    "maildir:PATH or mbox:PATH (%u user, %d data directory, %% a '%'), or "
                    "default");
  }

  CLI::App* secret = user->add_subcommand("secret", "Per-device APOP secrets");
  secret->require_subcommand(1);
  {
    auto [sub, a] =
        make(secret, "add", "Add a device secret for APOP/CRAM-MD5 (--generate prints it once)",
             run_secret_add, true, true);
    sub->add_option("--name", a->secret_name, "Device name (1-32 of A-Z a-z 0-9 . _ -)")
        ->required();
  }
  make(secret, "list", "List a user's device secrets (names and dates)", run_secret_list, true,
       false);
  {
    auto [sub, a] =
        make(secret, "revoke", "Revoke one device secret", run_secret_revoke, true, false);
    sub->add_option("name", a->secret_name, "Device name")->required();
  }
}

}  // namespace apop::cli
