// `apop uidl import --from dovecot-uidlist --user USER [FILE]`: pins the
// POP3 UIDLs Dovecot gave the messages of a Maildir that moves to apop (the
// Maildir copied as it is), in MAILDIR/apop-uidl (store/uidl_map.hpp).
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "common/limits.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"

namespace apop::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUidlFooter =
    R"(Each record of dovecot-uidlist gets the UIDL Dovecot's POP3 server showed:
the record's P field (pop3_save_uidl) when present, else --format expanded
(Dovecot's pop3_uidl_format; default %08Xu%08Xv; variables %u uid, %v
uidvalidity, %f file name, with 0-padding width and X/x hex modifiers).
Messages already pinned keep their UIDL. New mail gets apop's own UIDL.
Exit status: 0 done; 65 some records could not be pinned; 1 the file or the
Maildir could not be used; 64 usage error.)";

struct UidlArgs {
  std::string data;
  std::string from;
  std::string user;
  std::string file;
  std::string format{store::kDovecotDefaultUidlFormat};
  bool dry_run = false;
  bool json = false;
};

int run_import(const UidlArgs& a) {
  DataDir dir = resolve_data_dir(a.data);
  const fs::path maildir = dir.maildir(a.user);
  const fs::path file = a.file.empty() ? maildir / "dovecot-uidlist" : fs::path(a.file);
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec || size > limits::kMaxUidlMapFile) {
    std::cerr << "apop uidl import: " << file.string() << ": "
              << (ec ? ec.message() : std::string("file too large")) << "\n";
    return kExitError;
  }
  std::ifstream in(file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in && !in.eof()) {
    std::cerr << "apop uidl import: cannot read " << file.string() << "\n";
    return kExitError;
  }
  auto list = store::parse_dovecot_uidlist(text);
  if (!list) {
    std::cerr << "apop uidl import: " << file.string() << ": " << list.error().message << "\n";
    return kExitError;
  }
  if (!fs::is_directory(maildir / "cur")) {
    std::cerr << "apop uidl import: " << maildir.string() << " is not a Maildir\n";
    return kExitError;
  }
  auto map = store::load_uidl_map(maildir);
  if (!map) {
    std::cerr << "apop uidl import: " << map.error().message << "\n";
    return kExitError;
  }
  std::vector<std::pair<std::string, std::string>> entries;
  std::size_t kept = 0, bad = 0;
  for (const auto& r : list->records) {
    std::string uidl;
    if (r.pop3_uidl) {
      uidl = *r.pop3_uidl;
    } else {
      auto e = store::expand_pop3_uidl_format(a.format, r.uid, list->uid_validity, r.base);
      if (e) uidl = std::move(*e);
    }
    if (!store::valid_uidl(uidl) || !store::valid_map_base(r.base)) {
      ++bad;
      std::cerr << "apop uidl import: uid " << r.uid << ": no valid UIDL\n";
      continue;
    }
    if (map->by_base.count(r.base) != 0) {
      ++kept;
      continue;
    }
    entries.emplace_back(r.base, std::move(uidl));
  }
  if (!a.dry_run) {
    if (auto w = store::append_uidl_map(maildir, entries); !w) {
      std::cerr << "apop uidl import: " << w.error().message << "\n";
      return kExitError;
    }
  }
  if (a.json) {
    nlohmann::json j = {{"file", file.string()},
                        {"records", list->records.size()},
                        {a.dry_run ? "would_pin" : "pinned", entries.size()},
                        {"already_pinned", kept},
                        {"invalid", bad},
                        {"uidvalidity", list->uid_validity},
                        {"format", a.format}};
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << (a.dry_run ? "would pin " : "pinned ") << entries.size() << " of "
              << list->records.size() << " UIDLs (" << kept << " already pinned, " << bad
              << " invalid) in " << (maildir / std::string(store::kUidlMapFile)).string() << "\n";
  }
  return bad == 0 ? kExitOk : kExitDataErr;
}

}  // namespace

void register_uidl(CLI::App& app, Registry& registry) {
  CLI::App* uidl = app.add_subcommand("uidl", "UIDL compatibility with the previous server");
  uidl->require_subcommand(1);
  auto a = std::make_shared<UidlArgs>();
  CLI::App* sub = uidl->add_subcommand(
      "import", "Pin the POP3 UIDLs Dovecot showed for a Maildir (from its dovecot-uidlist)");
  sub->add_option("--data", a->data, "Data directory (default: $APOP_DATA or ./apop-data)");
  sub->add_option("--from", a->from, "Format: dovecot-uidlist")
      ->required()
      ->check(CLI::IsMember({"dovecot-uidlist"}));
  sub->add_option("--user", a->user, "The user whose Maildir (DATA/mail/USER) is pinned")
      ->required()
      ->check(user_name_validator());
  sub->add_option("file", a->file, "The dovecot-uidlist (default: MAILDIR/dovecot-uidlist)");
  sub->add_option("--format", a->format,
                  "Dovecot's pop3_uidl_format on the old server (default %08Xu%08Xv)")
      ->check(CLI::Validator(
          [](const std::string& format) -> std::string {
            // Checked once, before anything is read: expanded for a sample record.
            auto f = store::expand_pop3_uidl_format(format, 1, 1, "x");
            return f ? std::string() : f.error().message;
          },
          "FORMAT"));
  sub->add_flag("--dry-run", a->dry_run, "Report; write nothing");
  sub->add_flag("--json", a->json, "Print the report as JSON");
  sub->footer(kUidlFooter);
  registry.add(sub, [a] { return run_import(*a); });
}

}  // namespace apop::cli
