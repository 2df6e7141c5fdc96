// `apop user add|del|list|passwd`: accounts and their APOP secrets.
#include <spdlog/spdlog.h>

#include <iostream>

#include "auth/password_policy.hpp"
#include "auth/random.hpp"
#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "store/maildir.hpp"

namespace apop::cli {

namespace {

struct UserArgs {
  std::string data;
  std::string name;
  bool password_stdin = false;
  bool generate = false;
  bool allow_weak = false;
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
  if (!auth::is_valid_username(a.name)) {
    std::cerr << "apop user add: invalid user name (letters, digits, . _ + @ -; at most "
              << limits::kMaxUsername << ")\n";
    return kExitUsage;
  }
  DataDir dir = resolve_data_dir(a.data);
  if (auto r = ensure_layout(dir); !r) return fail("add", r.error());
  auto store = open_credentials(dir);
  if (!store) return fail("add", store.error());
  auto secret = new_secret(a);
  if (!secret) return fail("add", secret.error());
  if (auto r = (*store)->add(a.name, *secret); !r) return fail("add", r.error());
  if (auto r = store::ensure_maildir(dir.maildir(a.name)); !r) return fail("add", r.error());
  if (a.generate) std::cout << *secret << std::endl;  // printed once, never stored in clear
  std::cerr << "user " << a.name << " added\n";
  return kExitOk;
}

int run_passwd(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir);
  if (!store) return fail("passwd", store.error());
  auto secret = new_secret(a);
  if (!secret) return fail("passwd", secret.error());
  if (auto r = (*store)->set_secret(a.name, *secret); !r) return fail("passwd", r.error());
  if (a.generate) std::cout << *secret << std::endl;
  std::cerr << "secret of " << a.name << " changed\n";
  return kExitOk;
}

int run_del(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir);
  if (!store) return fail("del", store.error());
  if (auto r = (*store)->remove(a.name); !r) return fail("del", r.error());
  // The Maildir is left in place: mail is never deleted by an account change.
  std::cerr << "user " << a.name << " deleted (mail kept in " << dir.maildir(a.name).string()
            << ")\n";
  return kExitOk;
}

int run_list(const UserArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  auto store = open_credentials(dir);
  if (!store) return fail("list", store.error());
  auto users = (*store)->list();
  if (!users) return fail("list", users.error());
  for (const auto& u : *users) std::cout << u.name << "\n";
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
  CLI::App* user = app.add_subcommand("user", "Manage accounts and their secrets");
  user->require_subcommand(1);
  auto make = [&](const char* name, const char* help, int (*fn)(const UserArgs&), bool needs_name,
                  bool takes_secret) {
    auto a = std::make_shared<UserArgs>();
    CLI::App* sub = user->add_subcommand(name, help);
    sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
    if (needs_name) sub->add_option("name", a->name, "User name")->required();
    if (takes_secret) secret_options(sub, *a);
    registry.add(sub, [a, fn] { return fn(*a); });
  };
  make("add", "Add a user (secret from --password-stdin, --generate, or a prompt)", run_add, true,
       true);
  make("passwd", "Change a user's secret", run_passwd, true, true);
  make("del", "Delete a user (their mail is kept)", run_del, true, false);
  make("list", "List users", run_list, false, false);
}

}  // namespace apop::cli
