#include "client/publish_journal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/posix_fd.hpp"
#include "store/maildir_name.hpp"

namespace apop::client {
namespace {

Error io_error(Errc code, const std::string& what, int err) {
  return make_error(code, what + ": " + std::strerror(err));
}

// Whether `dir` (new/ or cur/) has an entry named `base` followed by nothing,
// ',' (the S=/W= fields) or ':' (the info of cur/).
bool has_base(const std::filesystem::path& dir, std::string_view base) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    if (name.starts_with(base) &&
        (name.size() == base.size() || name[base.size()] == ',' || name[base.size()] == ':')) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

Result<void> PublishJournal::record(std::string_view base_name, const MessageMeta& meta) const {
  if (meta.uidl.empty()) return {};
  const std::string line = meta.uidl + " " + std::string(base_name) + "\n";
  UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd || !write_all(fd.get(), line) || fd.close_checked() != 0)
    return io_error(Errc::temporary, "write " + path_.string(), errno);
  return {};
}

Result<void> PublishJournal::recover(AccountState& state,
                                     const std::filesystem::path& maildir) const {
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[512];
  const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
  fd.reset();
  if (n > 0) {
    const std::string_view text(buf, static_cast<std::size_t>(n));
    const std::size_t sp = text.find(' ');
    const std::size_t nl = text.find('\n');
    if (sp != std::string_view::npos && nl != std::string_view::npos && sp < nl &&
        nl + 1 == text.size()) {
      const std::string_view uidl = text.substr(0, sp);
      const std::string_view base = text.substr(sp + 1, nl - sp - 1);
      const bool sane = store::valid_uidl(uidl) && !base.empty() &&
                        base.find('/') == std::string_view::npos && base.front() != '.';
      if (sane && !state.seen(uidl) &&
          (has_base(maildir / "new", base) || has_base(maildir / "cur", base))) {
        state.mark_seen(uidl);
        if (auto s = state.save(); !s) return s;
      }
    }
  }
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
    return io_error(Errc::temporary, "unlink " + path_.string(), errno);
  return {};
}

}  // namespace apop::client
