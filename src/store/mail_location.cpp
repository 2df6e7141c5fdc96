#include "store/mail_location.hpp"

#include <sys/stat.h>

#include <atomic>
#include <chrono>

#include "store/maildir.hpp"

namespace apop::store {

namespace fs = std::filesystem;

namespace {

std::atomic<std::uint64_t> next_opener_id{1};  // LocationOpener::id_

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
      per_user_(std::move(per_user)),
      id_(next_opener_id.fetch_add(1, std::memory_order_relaxed)) {}

Result<std::pair<MailLocation, fs::path>> LocationOpener::resolve(std::string_view user) const {
  MailLocation loc = fallback_;
  if (per_user_) {
    auto own = per_user_(user);
    if (!own) {
      return make_error(Errc::temporary,
                        "mail location of " + std::string(user) + ": " + own.error().message);
    }
    if (*own) {
      auto parsed = parse_mail_location(**own, false);
      if (!parsed) return make_error(Errc::temporary, parsed.error().message);
      loc = std::move(*parsed);
    }
  }
  auto path = expand_mail_location(loc, user, data_dir_);
  if (!path) return path.error();
  return std::make_pair(std::move(loc), std::move(*path));
}

namespace {

// The Session asks opens_without_waiting(user) and then, on the same thread
// and a few microseconds later, open(user): the second resolve reuses the
// first answer (one account lookup fewer per login). Keyed by the opener's
// id (never reused, unlike its address) and the user; short-lived, so that a
// location changed meanwhile (`apop user mailbox`) is seen by the next login.
struct ResolveMemo {
  std::uint64_t opener = 0;
  std::string user;
  std::chrono::steady_clock::time_point at;
  std::pair<MailLocation, fs::path> value;
};
thread_local ResolveMemo resolve_memo;
constexpr std::chrono::seconds kResolveMemoLife{1};

}  // namespace

bool LocationOpener::opens_without_waiting(std::string_view user) {
  auto r = resolve(user);
  // An unknown user or a lookup error: open() fails at once too.
  if (!r) return true;
  const bool quick =
      r->first.format == MailLocation::Format::maildir && maildir_opens_quickly(r->second);
  resolve_memo.opener = id_;
  resolve_memo.user.assign(user);
  resolve_memo.at = std::chrono::steady_clock::now();
  resolve_memo.value = std::move(*r);
  return quick;
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

Result<std::unique_ptr<pop3::Maildrop>> LocationOpener::open(std::string_view user) {
  Result<std::pair<MailLocation, fs::path>> r = make_error(Errc::temporary, "unresolved");
  if (resolve_memo.opener == id_ && resolve_memo.user == user &&
      std::chrono::steady_clock::now() - resolve_memo.at < kResolveMemoLife) {
    r = std::move(resolve_memo.value);
  } else {
    r = resolve(user);
  }
  resolve_memo.opener = 0;
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
