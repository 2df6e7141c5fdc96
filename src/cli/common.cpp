#include "cli/common.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "auth/secret_box.hpp"
#include "auth/username.hpp"
#include "cli/commands.hpp"
#include "pg/shared.hpp"

namespace apop::cli {

DataDir resolve_data_dir(const std::string& flag) {
  if (!flag.empty()) return DataDir{flag};
  if (const char* env = std::getenv("APOP_DATA"); env && *env) return DataDir{env};
  return DataDir{"apop-data"};
}

namespace {
Result<void> make_dir(const std::filesystem::path& p) {
  if (::mkdir(p.c_str(), 0700) == 0 || errno == EEXIST) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return {};
    return make_error(Errc::permanent, p.string() + " exists and is not a directory");
  }
  return make_error(Errc::temporary, "cannot create " + p.string() + ": " + std::strerror(errno));
}
}  // namespace

Result<void> ensure_layout(const DataDir& dir) {
  if (auto r = make_dir(dir.root); !r) return r;
  return make_dir(dir.mail_root());
}

std::string resolve_users(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("APOP_USERS"); env && *env) return env;
  return {};
}

Result<std::unique_ptr<auth::CredentialStore>> open_credentials(const DataDir& dir,
                                                                const std::string& users,
                                                                unsigned pool_size, KeyUse key) {
  auto opened = open_typed_credentials(dir, users, pool_size, key);
  if (!opened) return opened.error();
  return std::move(opened->store);
}

Result<OpenedCredentials> open_typed_credentials(const DataDir& dir, const std::string& users,
                                                 unsigned pool_size, KeyUse key) {
  if (!users.empty() && !pg::is_postgres_url(users)) {
    return make_error(Errc::invalid,
                      "users: expected a postgresql:// URL (or nothing for the SQLite file in the "
                      "data directory), not \"" +
                          pg::redact(users) + "\"");
  }
  if (auto r = ensure_layout(dir); !r) return r.error();
  std::shared_ptr<pg::Pool> pool;
  if (!users.empty()) pool = std::make_shared<pg::Pool>(users, pool_size);
  const std::string where = users.empty() ? dir.users_db().string() : pg::redact(users);
  // The key: none at all for `deliver`; else the key file, created only
  // for an account store that holds nothing sealed yet (a new key would
  // open none of its secrets: refuse, and leave everything as it is).
  Result<auth::SecretBox> box = auth::SecretBox::without_key();
  if (key == KeyUse::required) {
    box = auth::SecretBox::load(dir.key_file());
    if (!box && box.error().code == Errc::not_found) {
      auto sealed = users.empty()
                        ? auth::SqliteCredentialStore::holds_sealed_secrets(dir.users_db())
                        : pg::PgCredentialStore::holds_sealed_secrets(*pool);
      if (!sealed) return sealed.error();
      // Another command may have created the key and sealed a secret with it
      // since the load above (two commands on a fresh data directory): load
      // again before refusing.
      if (*sealed) box = auth::SecretBox::load(dir.key_file());
      if (*sealed && !box && box.error().code == Errc::not_found) {
        return make_error(
            Errc::permanent,
            "key file " + dir.key_file().string() + " is missing, but the secrets in " + where +
                " are sealed with it: restore it (from a backup, or from a working "
                "server); refusing to create a new key, which would open none of them");
      }
      if (!*sealed) box = auth::SecretBox::open_or_create(dir.key_file());
    }
    if (!box) return box.error();
  }
  OpenedCredentials out;
  if (pool) {
    auto store = pg::PgCredentialStore::open(std::move(pool), std::move(*box));
    if (!store) return store.error();
    out.postgres = store->get();
    out.store = std::move(*store);
    return out;
  }
  auto store = auth::SqliteCredentialStore::open(dir.users_db(), std::move(*box));
  if (!store) return store.error();
  out.sqlite = store->get();
  out.store = std::move(*store);
  return out;
}

namespace {

std::string strip_eol(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

Result<std::string> prompt_no_echo(int fd, const char* prompt) {
  termios old{};
  if (::tcgetattr(fd, &old) != 0) {
    return make_error(Errc::invalid, "no terminal to prompt on: use --password-stdin");
  }
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  quiet.c_lflag |= ECHONL;
  (void)!::write(fd, prompt, std::strlen(prompt));
  ::tcsetattr(fd, TCSAFLUSH, &quiet);
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  ::tcsetattr(fd, TCSAFLUSH, &old);
  return strip_eol(std::move(line));
}

}  // namespace

Result<std::string> read_secret(bool from_stdin, bool confirm) {
  if (from_stdin) {
    std::string line;
    if (!std::getline(std::cin, line)) {
      return make_error(Errc::invalid, "no secret on standard input");
    }
    return strip_eol(std::move(line));
  }
  int fd = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (fd < 0) return make_error(Errc::invalid, "no terminal to prompt on: use --password-stdin");
  auto first = prompt_no_echo(fd, "Secret: ");
  if (first && confirm) {
    auto again = prompt_no_echo(fd, "Secret (again): ");
    if (!again) {
      first = again.error();
    } else if (*again != *first) {
      first = make_error(Errc::invalid, "the two secrets differ");
    }
  }
  ::close(fd);
  return first;
}

CLI::Validator user_name_validator() {
  return CLI::Validator(
      [](const std::string& name) -> std::string {
        if (auth::is_valid_username(name)) return {};
        return "invalid user name (letters, digits, . _ + @ -; at most " +
               std::to_string(limits::kMaxUsername) + ")";
      },
      "USER");
}

}  // namespace apop::cli
