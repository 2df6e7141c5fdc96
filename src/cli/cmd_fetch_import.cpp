// `apop fetch import-config --from fetchmailrc|getmailrc FILE...`: an
// existing fetchmail or getmail setup as `apop fetch --config` TOML
// (client/fetch_import.hpp parses and writes; this reads the files, stores
// the inline passwords in files of their own and prints the report).
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "client/fetch_import.hpp"
#include "common/limits.hpp"
#include "common/wipe.hpp"

namespace apop::cli {
namespace {

constexpr const char* kImportFooter =
    R"(Writes the accounts of a .fetchmailrc or of getmail rc files (one account
per file, named after the file) as `apop fetch --config` TOML: on standard
output, or into -o FILE (which must not exist). A password written in an rc
file is stored in a file of its own, NAME.pass (mode 0600, never
overwritten), in --secrets-dir (default: the directory of -o, else
~/.config/apop), and referenced by password_file; it is never printed.
Every option that could not be carried over is listed on standard error
with the reason.
Exit status:
  0  at least one account was written (options listed as not carried over
     do not change this)
  1  no usable account, or a file could not be read or written
  64 usage error)";

struct ImportArgs {
  std::string from;
  std::vector<std::string> files;
  std::string output;
  std::string secrets_dir;
};

void say(const std::string& m) {
  std::fprintf(stderr, "apop fetch import-config: %s\n", m.c_str());
}

std::string local_user() {
  if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr && pw->pw_name != nullptr)
    return pw->pw_name;
  const char* u = std::getenv("USER");
  return u ? u : "";
}

// The whole file, at most limits::kMaxImportRcFile bytes.
Result<std::string> read_rc(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(Errc::not_found, std::strerror(errno));
  std::string text(limits::kMaxImportRcFile + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return make_error(Errc::temporary, "read error");
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > limits::kMaxImportRcFile)
    return make_error(Errc::invalid,
                      "larger than " + std::to_string(limits::kMaxImportRcFile) + " bytes");
  return text;
}

// Writes `data` into a new file `path` (O_EXCL: never over an existing file
// or through a symbolic link) with `mode`, synced.
Result<void> write_new_file(const std::filesystem::path& path, std::string_view data, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0)
    return make_error(errno == EEXIST ? Errc::exists : Errc::temporary, std::strerror(errno));
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return make_error(Errc::temporary, std::strerror(e));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(path.c_str());
    return make_error(Errc::temporary, std::strerror(errno));
  }
  return {};
}

std::filesystem::path default_secrets_dir(const ImportArgs& a) {
  if (!a.secrets_dir.empty()) return a.secrets_dir;
  if (!a.output.empty()) {
    auto parent = std::filesystem::absolute(a.output).parent_path();
    return parent;
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".config" / "apop";
}

// Moves each inline password into DIR/NAME.pass and points password_file at
// it; an account with no password source gets the path to create, with a
// note. The passwords are wiped from memory.
void store_secrets(client::ImportResult& r, const std::filesystem::path& dir, bool& dir_ready) {
  for (std::size_t i = 0; i < r.accounts.size(); ++i) {
    auto& acc = r.accounts[i];
    if (!acc.password_command.empty() || !acc.password_file.empty()) {
      wipe(acc.password);
      continue;
    }
    const auto file = std::filesystem::absolute(dir / (acc.name + ".pass"));
    acc.password_file = file.string();
    auto note = [&](std::string why) {
      r.skipped.push_back({acc.source, acc.name, "password", std::move(why), i});
    };
    if (acc.password.empty()) {
      note(
          "none in the rc file (fetchmail's ~/.netrc, a prompt or getmail's keyring are not "
          "read): write it on the first line of " +
          file.string() + " (mode 0600)");
      continue;
    }
    if (acc.password.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      note(
          "contains a line break or NUL, which a password file cannot hold: not carried over; "
          "write it to " +
          file.string());
      wipe(acc.password);
      continue;
    }
    if (!dir_ready) {
      // The leaf is private (0700); missing parents are made as usual.
      std::error_code ec;
      if (!std::filesystem::is_directory(dir, ec)) {
        std::filesystem::create_directories(dir.parent_path(), ec);
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
          ec = std::error_code(errno, std::generic_category());
        else
          ec.clear();
      }
      if (ec) {
        note("not stored: cannot create " + dir.string() + ": " + ec.message());
        wipe(acc.password);
        continue;
      }
      dir_ready = true;
    }
    std::string line = acc.password + "\n";
    auto w = write_new_file(file, line, 0600);
    wipe(line);
    wipe(acc.password);
    if (!w) {
      note(w.error().code == Errc::exists
               ? file.string() +
                     " exists and was not overwritten: make sure its first line is "
                     "the password"
               : "not stored in " + file.string() + ": " + w.error().message);
    }
  }
}

int run_import(const ImportArgs& a) {
  const bool fetchmail = a.from == "fetchmailrc";
  if (!a.output.empty() && std::filesystem::exists(std::filesystem::symlink_status(a.output))) {
    say(a.output + " exists; not overwritten");
    return kExitError;
  }
  client::ImportOptions opts;
  opts.local_user = local_user();
  client::ImportResult all;
  bool read_error = false;
  for (const auto& f : a.files) {
    auto text = read_rc(f);
    if (!text) {
      say(f + ": " + text.error().message);
      read_error = true;
      continue;
    }
    opts.source_name = f;
    auto r =
        fetchmail ? client::parse_fetchmailrc(*text, opts) : client::parse_getmailrc(*text, opts);
    wipe(*text);
    if (!r) {
      say(f + ": " + r.error().message);
      read_error = true;
      continue;
    }
    client::append_import(all, std::move(*r));
  }
  client::finish_import(all);
  if (all.accounts.empty()) {
    for (const auto& s : all.skipped)
      std::fprintf(stderr, "%s\n", client::format_skipped(s).c_str());
    say(read_error ? "nothing imported" : "no account that apop fetch can poll");
    return kExitError;
  }

  bool dir_ready = false;
  const auto dir = default_secrets_dir(a);
  store_secrets(all, dir, dir_ready);
  const std::string toml = client::render_toml(all.accounts, a.files);
  if (a.output.empty()) {
    std::fwrite(toml.data(), 1, toml.size(), stdout);
    std::fflush(stdout);
  } else if (auto w = write_new_file(a.output, toml, 0600); !w) {
    say(a.output + ": " + w.error().message);
    return kExitError;
  }
  if (!all.skipped.empty()) {
    say("not carried over:");
    for (const auto& s : all.skipped)
      std::fprintf(stderr, "  %s\n", client::format_skipped(s).c_str());
  }
  say(std::to_string(all.accounts.size()) + " account(s) written" +
      (a.output.empty() ? std::string() : " to " + a.output));
  return kExitOk;
}

}  // namespace

void register_fetch_import(CLI::App* fetch, Registry& registry) {
  auto a = std::make_shared<ImportArgs>();
  CLI::App* sub = fetch->add_subcommand(
      "import-config",
      "Convert a .fetchmailrc or getmail rc files into `apop fetch --config` TOML");
  sub->add_option("--from", a->from, "Format of the files: fetchmailrc or getmailrc")
      ->required()
      ->check(CLI::IsMember({"fetchmailrc", "getmailrc"}));
  sub->add_option("files", a->files, "The rc files (getmail: one account per file)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", a->output,
                  "Write the TOML into this new file, not standard output");
  sub->add_option("--secrets-dir", a->secrets_dir,
                  "Directory for the password files (default: that of -o, else ~/.config/apop)");
  sub->footer(kImportFooter);
  registry.add(sub, [a] { return run_import(*a); });
}

}  // namespace apop::cli
