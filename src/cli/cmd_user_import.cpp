// `apop user import --from dovecot-passwd|popauth FILE`: accounts from other
// servers' databases (parsers in auth/user_import.hpp), with a per-line
// report that never shows a secret.
#include <openssl/crypto.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "auth/memory_credential_store.hpp"
#include "auth/user_import.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "common/text.hpp"
#include "store/maildir.hpp"

namespace apop::cli {
namespace {

// Largest database file read (a passwd-file of ~100k users is ~10 MiB).
constexpr std::uintmax_t kMaxImportFile = 64ull * 1024 * 1024;

constexpr const char* kImportFooter = R"(Formats:
  dovecot-passwd  user:{SCHEME}data[:uid:gid:gecos:home:shell:extra]
                  {PLAIN}/{CLEAR} (and .B64/.HEX): the password, every mechanism;
                  crypt ($1$ $5$ $6$ $2b$ $y$), SHA/SSHA/SHA256/SSHA256/SHA512/
                  SSHA512/SMD5/PLAIN-MD5/LDAP-MD5: a login password for USER/PASS,
                  PLAIN and LOGIN only, upgraded on the first login over TLS;
                  {CRAM-MD5}, {ARGON2ID}, ...: not importable (reported).
  popauth         "user secret" or "user: secret" lines (GNU Mailutils popauth -l,
                  qpopper popauth databases dumped to text): APOP secrets.
Existing users are skipped unless --replace (which changes only the password).
Exit status: 0 every account imported (or would be, with --dry-run); 65 some
lines were skipped or failed (see the report); 1 the file or the database
could not be used; 64 usage error. Secrets are never printed.)";

struct ImportArgs {
  std::string data;
  std::string users;  // --users: a postgresql:// URL, else $APOP_USERS / DATA/users.sqlite
  std::string from;
  std::string file;
  bool dry_run = false;
  bool json = false;
  bool replace = false;
};

// User names from the file are printed; anything but printable ASCII is
// shown as '?'.
std::string shown(std::string_view s) {
  return printable(
      s, {.max = std::string_view::npos, .space = false, .hex_escape = false, .ellipsis = false});
}

struct Outcome {
  std::size_t line = 0;
  std::string user;
  std::string scheme;
  std::string outcome;  // imported, replaced, skipped, failed (with --dry-run: would-*)
  std::string access;   // "all" or "login-only" for imported accounts
  std::string reason;
};

int run_import(const ImportArgs& a) {
  const bool dovecot = a.from == "dovecot-passwd";
  std::error_code ec;
  const auto size = std::filesystem::file_size(a.file, ec);
  if (ec) {
    std::cerr << "apop user import: " << a.file << ": " << ec.message() << "\n";
    return kExitError;
  }
  if (size > kMaxImportFile) {
    std::cerr << "apop user import: " << a.file << " is larger than " << kMaxImportFile
              << " bytes\n";
    return kExitError;
  }
  std::ifstream in(a.file, std::ios::binary);
  if (!in) {
    std::cerr << "apop user import: cannot read " << a.file << "\n";
    return kExitError;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto lines = dovecot ? auth::parse_dovecot_passwd(text) : auth::parse_popauth(text);
  OPENSSL_cleanse(text.data(), text.size());

  DataDir dir = resolve_data_dir(a.data);
  if (!a.dry_run) {
    if (auto r = ensure_layout(dir); !r) {
      std::cerr << "apop user import: " << r.error().message << "\n";
      return kExitError;
    }
  }
  // --dry-run changes nothing: without a database yet, every user is new.
  std::unique_ptr<auth::CredentialStore> store;
  if (a.dry_run && resolve_users(a.users).empty() && !std::filesystem::exists(dir.users_db())) {
    store = std::make_unique<auth::MemoryCredentialStore>();
  } else {
    auto opened = open_credentials(dir, resolve_users(a.users));
    if (!opened) {
      std::cerr << "apop user import: " << opened.error().message << "\n";
      return kExitError;
    }
    store = std::move(*opened);
  }
  const std::string would = a.dry_run ? "would-" : "";
  std::vector<Outcome> report;
  std::size_t imported = 0, skipped = 0, failed = 0;
  for (auto& l : lines) {
    Outcome o{l.line, shown(l.user), l.scheme, {}, {}, {}};
    if (l.kind == auth::ImportLine::Kind::skip) {
      o.outcome = "skipped";
      o.reason = l.reason;
      ++skipped;
      report.push_back(std::move(o));
      continue;
    }
    auto exists = store->has_user(l.user);
    if (!exists) {
      std::cerr << "apop user import: " << exists.error().message << "\n";
      return kExitError;
    }
    if (*exists && !a.replace) {
      o.outcome = "skipped";
      o.reason = "user exists (use --replace to overwrite the password)";
      ++skipped;
      report.push_back(std::move(o));
      continue;
    }
    const bool password = l.kind == auth::ImportLine::Kind::password;
    o.access = password ? "all" : "login-only";
    Result<void> r;
    if (!a.dry_run) {
      if (!password) {
        r = store->import_foreign_hash(l.user, l.secret, a.replace);
      } else if (*exists) {
        r = store->set_password(l.user, l.secret);
      } else {
        r = store->add(l.user, l.secret);
      }
      if (r) r = store::ensure_maildir(dir.maildir(l.user));
    }
    if (!r) {
      o.outcome = "failed";
      o.reason = r.error().message;
      ++failed;
    } else {
      o.outcome = would + (*exists ? "replaced" : "imported");
      if (!password) {
        o.reason = "login password only (USER/PASS, PLAIN, LOGIN) until the first login over TLS";
      }
      ++imported;
    }
    report.push_back(std::move(o));
  }

  if (a.json) {
    nlohmann::json j;
    j["format"] = a.from;
    j["file"] = a.file;
    j["dry_run"] = a.dry_run;
    j["totals"] = {{"imported", imported}, {"skipped", skipped}, {"failed", failed}};
    j["lines"] = nlohmann::json::array();
    for (const auto& o : report) {
      nlohmann::json e = {
          {"line", o.line}, {"user", o.user}, {"scheme", o.scheme}, {"outcome", o.outcome}};
      if (!o.access.empty()) e["access"] = o.access;
      if (!o.reason.empty()) e["reason"] = o.reason;
      j["lines"].push_back(std::move(e));
    }
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& o : report) {
      std::cout << "line " << o.line << "\t" << (o.user.empty() ? "-" : o.user) << "\t"
                << o.outcome;
      if (!o.scheme.empty()) std::cout << "\t{" << o.scheme << "}";
      if (!o.reason.empty()) std::cout << "\t" << o.reason;
      std::cout << "\n";
    }
    std::cout << (a.dry_run ? "would import " : "imported ") << imported << ", skipped " << skipped
              << ", failed " << failed << "\n";
  }
  return skipped + failed == 0 ? kExitOk : kExitDataErr;
}

}  // namespace

void register_user_import(CLI::App& user, Registry& registry) {
  auto a = std::make_shared<ImportArgs>();
  CLI::App* sub = user.add_subcommand(
      "import", "Import accounts from a Dovecot passwd-file or a popauth (APOP) database");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--users", a->users,
                  "Account store: a postgresql:// URL (default: $APOP_USERS, else "
                  "DATA/users.sqlite)");
  sub->add_option("--from", a->from, "Format: dovecot-passwd or popauth")
      ->required()
      ->check(CLI::IsMember({"dovecot-passwd", "popauth"}));
  sub->add_option("file", a->file, "The database in text form")->required();
  sub->add_flag("--dry-run", a->dry_run, "Report what would be imported; change nothing");
  sub->add_flag("--json", a->json, "Print the report as JSON");
  sub->add_flag("--replace", a->replace,
                "Overwrite the password of users that already exist (default: skip them)");
  sub->footer(kImportFooter);
  registry.add(sub, [a] { return run_import(*a); });
}

}  // namespace apop::cli
