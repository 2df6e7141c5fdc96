#include "store/mail_location.hpp"

#include <sys/stat.h>

#include "store/maildir.hpp"

namespace apop::store {

namespace fs = std::filesystem;

namespace {

bool plain_file_name(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string_view::npos &&
         s.find('\0') == std::string_view::npos;
}

}  // namespace

Result<MailLocation> parse_mail_location(std::string_view spec, bool require_user) {
  const auto colon = spec.find(':');
  if (colon == std::string_view::npos) {
    return make_error(Errc::invalid, "mail location \"" + std::string(spec) +
                                         "\": expected maildir:PATH or mbox:PATH");
  }
  MailLocation loc;
  const std::string_view format = spec.substr(0, colon);
  if (format == "maildir") {
    loc.format = MailLocation::Format::maildir;
  } else if (format == "mbox") {
    loc.format = MailLocation::Format::mbox;
  } else {
    return make_error(Errc::invalid, "mail location \"" + std::string(spec) +
                                         "\": unknown format \"" + std::string(format) +
                                         "\" (maildir or mbox)");
  }
  loc.path = std::string(spec.substr(colon + 1));
  if (loc.path.empty()) {
    return make_error(Errc::invalid, "mail location \"" + std::string(spec) + "\": empty path");
  }
  if (loc.path.find('\0') != std::string::npos) {
    return make_error(Errc::invalid, "mail location: NUL in path");
  }
  bool has_user = false;
  for (std::size_t i = 0; i < loc.path.size(); ++i) {
    if (loc.path[i] != '%') continue;
    const char next = i + 1 < loc.path.size() ? loc.path[i + 1] : '\0';
    if (next == 'u') {
      has_user = true;
    } else if (next != 'd' && next != '%') {
      return make_error(Errc::invalid, "mail location \"" + std::string(spec) +
                                           "\": unknown variable (use %u, %d or %%)");
    }
    ++i;
  }
  if (require_user && !has_user) {
    return make_error(Errc::invalid, "mail location \"" + std::string(spec) +
                                         "\": the path must contain %u (one mailbox per user)");
  }
  return loc;
}

std::string format_mail_location(const MailLocation& loc) {
  return (loc.format == MailLocation::Format::mbox ? "mbox:" : "maildir:") + loc.path;
}

Result<fs::path> expand_mail_location(const MailLocation& loc, std::string_view user,
                                      const fs::path& data_dir) {
  if (!plain_file_name(user)) return make_error(Errc::invalid, "bad maildrop name");
  std::string out;
  for (std::size_t i = 0; i < loc.path.size(); ++i) {
    const char c = loc.path[i];
    if (c != '%' || i + 1 >= loc.path.size()) {
      out += c;
      continue;
    }
    const char next = loc.path[++i];
    if (next == 'u') {
      out += user;
    } else if (next == 'd') {
      out += data_dir.string();
    } else {
      out += next;
    }
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return fs::path(out);
}

LocationOpener::LocationOpener(MailLocation fallback, fs::path data_dir, MboxOptions mbox,
                               Lookup per_user)
    : fallback_(std::move(fallback)),
      data_dir_(std::move(data_dir)),
      mbox_(std::move(mbox)),
      per_user_(std::move(per_user)) {}

Result<std::pair<MailLocation, fs::path>> LocationOpener::resolve(
    const pop3::MailboxAddress& where) const {
  MailLocation loc = fallback_;
  std::optional<std::string> own;
  if (!where.location.empty()) {
    own.emplace(where.location);
  } else if (per_user_) {
    auto looked_up = per_user_(where.user);
    if (!looked_up) {
      return make_error(Errc::temporary, "mail location of " + std::string(where.user) + ": " +
                                             looked_up.error().message);
    }
    own = std::move(*looked_up);
  }
  if (own) {
    auto parsed = parse_mail_location(*own, false);
    if (!parsed) return make_error(Errc::temporary, parsed.error().message);
    loc = std::move(*parsed);
  }
  auto path = expand_mail_location(loc, where.user, data_dir_);
  if (!path) return path.error();
  return std::make_pair(std::move(loc), std::move(*path));
}

bool LocationOpener::opens_without_waiting(const pop3::MailboxAddress& where) {
  auto r = resolve(where);
  // An unknown user or a bad location: open() fails at once too.
  if (!r) return true;
  return r->first.format == MailLocation::Format::maildir && maildir_opens_quickly(r->second);
}

fs::path mail_location_root(const MailLocation& loc, const fs::path& data_dir) {
  std::string out;
  for (std::size_t i = 0; i < loc.path.size(); ++i) {
    if (loc.path[i] != '%') {
      out += loc.path[i];
      continue;
    }
    if (i + 1 < loc.path.size() && loc.path[i + 1] == 'd') {
      out += data_dir.string();
      ++i;
      continue;
    }
    break;  // %u, %%: the user's part starts here
  }
  const auto slash = out.rfind('/');
  if (slash == std::string::npos) return fs::path(".");
  out.resize(slash == 0 ? 1 : slash);
  return fs::path(out);
}

bool maildir_opens_quickly(const fs::path& dir) {
  // A directory's size grows with its entries (ext4: about 80 bytes per
  // Maildir name in 4 KiB blocks; tmpfs: 20 bytes per entry) and never
  // shrinks on most file systems, so this errs on the side of the pool.
  std::uint64_t bytes = 0;
  for (const char* sub : {"/cur", "/new"}) {
    struct stat st {};
    const std::string path = dir.string() + sub;
    if (::stat(path.c_str(), &st) != 0) return true;  // open() creates or fails at once
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  return bytes <= kQuickMaildirDirBytes;
}

Result<std::unique_ptr<pop3::Maildrop>> LocationOpener::open(const pop3::MailboxAddress& where) {
  auto r = resolve(where);
  if (!r) return r.error();
  const auto& [loc, path] = *r;
  if (loc.format == MailLocation::Format::mbox) return open_mbox(path, mbox_);
  // A Maildir: MaildirOpener works on ROOT/NAME.
  const std::string name = path.filename().string();
  if (!plain_file_name(name)) {
    return make_error(Errc::temporary, "mail location " + path.string() + ": not a Maildir path");
  }
  MaildirOpener maildir(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  return maildir.open(name);
}

}  // namespace apop::store
