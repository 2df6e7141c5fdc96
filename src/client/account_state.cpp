#include "client/account_state.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "common/text.hpp"
#include "store/maildir_name.hpp"

namespace apop::client {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMagic = "apop-fetch-state 1";
// Far above any real maildrop (a UIDL line is at most 76 octets), but bounded:
// a state file is read whole.
constexpr std::uint64_t kMaxStateFile = 256ull * 1024 * 1024;

Error sys_error(Errc code, const std::string& what, int err) {
  return make_error(code, what + ": " + std::strerror(err));
}

Error corrupt(const fs::path& path, std::size_t line, const std::string& why) {
  return make_error(Errc::permanent, path.string() + ":" + std::to_string(line) +
                                         ": corrupt fetch state (" + why +
                                         "); fix or remove the file");
}

// Creates the missing directories of `dir` with mode 0700.
Result<void> make_dirs(const fs::path& dir) {
  fs::path prefix;
  for (const auto& part : dir) {
    prefix /= part;
    if (part == prefix.root_path() || part.empty()) continue;
    if (::mkdir(prefix.c_str(), 0700) == 0) continue;
    const int err = errno;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    return sys_error(Errc::temporary, "mkdir " + prefix.string(), err);
  }
  return {};
}

// Parses "tls=1 apop=0 scram=1" (exactly these keys, in this order).
bool parse_offer(std::string_view s, Offer& o) {
  const std::pair<std::string_view, bool*> keys[] = {
      {"tls=", &o.tls}, {"apop=", &o.apop}, {"scram=", &o.scram}};
  for (std::size_t i = 0; i < 3; ++i) {
    const auto [key, field] = keys[i];
    if (!s.starts_with(key)) return false;
    s.remove_prefix(key.size());
    if (s.empty() || (s[0] != '0' && s[0] != '1')) return false;
    *field = s[0] == '1';
    s.remove_prefix(1);
    if (i < 2) {
      if (!s.starts_with(' ')) return false;
      s.remove_prefix(1);
    }
  }
  return s.empty();
}

// Whether `tail` (an unterminated last line) can be the start of a valid
// "uidl X" line: a prefix of "uidl ", or "uidl " and at most kMaxUidl
// characters allowed in a UIDL (store::valid_uidl).
bool torn_uidl_line(std::string_view tail) {
  constexpr std::string_view kUidl = "uidl ";
  if (tail.size() <= kUidl.size()) return kUidl.starts_with(tail);
  if (!tail.starts_with(kUidl)) return false;
  const std::string_view id = tail.substr(kUidl.size());
  return store::valid_uidl(id);  // non-empty, at most kMaxUidl, 0x21..0x7E
}

std::string hex_sha256(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return to_hex(std::span<const unsigned char>(md, len));
}

}  // namespace

Result<AccountState> AccountState::load(const fs::path& path) {
  AccountState st;
  st.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return st;
    return sys_error(Errc::temporary, "open " + path.string(), errno);
  }
  std::string data;
  {
    struct stat sb {};
    if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
      ::close(fd);
      return make_error(Errc::permanent, path.string() + ": not a regular file");
    }
    if (static_cast<std::uint64_t>(sb.st_size) > kMaxStateFile) {
      ::close(fd);
      return make_error(Errc::permanent, path.string() + ": fetch state file is too large");
    }
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        return sys_error(Errc::temporary, "read " + path.string(), err);
      }
      if (n == 0) break;
      data.append(buf, static_cast<std::size_t>(n));
      if (data.size() > kMaxStateFile) {
        ::close(fd);
        return make_error(Errc::permanent, path.string() + ": fetch state file is too large");
      }
    }
    ::close(fd);
  }

  if (data.empty()) return corrupt(path, 1, "empty file");
  if (data.back() != '\n') {
    // A kill or crash during record_seen's append can leave the last line
    // torn. Only that is forgiven: a torn "uidl" line after a complete
    // header, dropped (the UIDL was not recorded; the message is fetched
    // once more, as when a kill lands just before an append). It is never
    // appended to: record_seen writes only to the file a save() of the same
    // object produced, and every session saves before its first append.
    const std::size_t last_nl = data.rfind('\n');
    if (last_nl == std::string::npos ||
        !torn_uidl_line(std::string_view(data).substr(last_nl + 1))) {
      const auto lines = static_cast<std::size_t>(std::count(data.begin(), data.end(), '\n'));
      return corrupt(path, lines + 1, "last line not terminated: truncated");
    }
    data.resize(last_nl + 1);
  }
  std::string_view rest(data);
  std::size_t lineno = 0;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
    ++lineno;
    if (lineno == 1) {
      if (line != kMagic) {
        if (line.starts_with("apop-fetch-state ")) {
          return corrupt(path, 1, "unsupported version '" + std::string(line) + "'");
        }
        return corrupt(path, 1, "not an apop fetch state file");
      }
      continue;
    }
    if (line.starts_with("uidl ")) {
      const std::string_view id = line.substr(5);
      if (!store::valid_uidl(id)) return corrupt(path, lineno, "invalid UIDL");
      st.uidls_.emplace(id);
    } else if (line.starts_with("offer ")) {
      if (st.has_offer_) return corrupt(path, lineno, "second offer line");
      Offer o;
      if (!parse_offer(line.substr(6), o)) return corrupt(path, lineno, "bad offer line");
      st.set_offer(o);
    } else {
      return corrupt(path, lineno, "unknown line");
    }
  }
  return st;
}

Result<void> AccountState::save() {
  append_fd_.reset();  // the old file is replaced: never append to it again
  if (path_.empty() || !path_.has_filename()) {
    return make_error(Errc::invalid, "fetch state has no file name");
  }
  const fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  if (auto r = make_dirs(dir); !r) return r;

  std::string text(kMagic);
  text += '\n';
  if (has_offer_) {
    text += "offer tls=";
    text += offer_.tls ? '1' : '0';
    text += " apop=";
    text += offer_.apop ? '1' : '0';
    text += " scram=";
    text += offer_.scram ? '1' : '0';
    text += '\n';
  }
  for (const auto& u : uidls_) {
    text += "uidl ";
    text += u;
    text += '\n';
  }

  // A name unique to this process and save (O_EXCL settles the rest): a
  // counter, not std::random_device, whose construction probes the CPU
  // (cpuid) at every save -- a trap to the hypervisor on a VM, measured at
  // 17 % of `apop fetch --config`'s CPU with a save per message.
  static std::atomic<std::uint64_t> counter{0};
  std::string tmp_name;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp_name = "." + path_.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
               std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
    fd = ::open((dir / tmp_name).c_str(),
                O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0 && errno != EEXIST) {
      return sys_error(Errc::temporary, "create " + (dir / tmp_name).string(), errno);
    }
  }
  if (fd < 0) return make_error(Errc::temporary, "no unique temporary name in " + dir.string());
  const fs::path tmp = dir / tmp_name;
  auto fail = [&](const std::string& what, int err) -> Error {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return sys_error(Errc::temporary, what + " " + tmp.string(), err);
  };
  if (::fchmod(fd, 0600) != 0) return fail("chmod", errno);  // whatever the umask
  if (!write_all(fd, text)) return fail("write", errno);
  if (::fsync(fd) != 0) return fail("fsync", errno);
  if (::rename(tmp.c_str(), path_.c_str()) != 0)
    return fail("rename to " + path_.string() + ":", errno);
  // The descriptor now names the state file, its offset at the end, the
  // last byte written '\n': record_seen appends to it.
  UniqueFd file(fd);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return sys_error(Errc::temporary, "open " + dir.string(), errno);
  const int sync_rc = ::fsync(dfd);
  const int sync_err = errno;
  ::close(dfd);
  if (sync_rc != 0) return sys_error(Errc::temporary, "fsync " + dir.string(), sync_err);
  append_fd_ = std::move(file);
  return {};
}

Result<void> AccountState::record_seen(std::string_view uidl) {
  if (!store::valid_uidl(uidl) || seen(uidl)) return {};  // mark_seen's rules: nothing new
  uidls_.emplace(uidl);
  if (!append_fd_) return save();  // no file of ours to append to: write it whole
  // One write(2): a line is at most 5 + kMaxUidl + 1 octets.
  char line[5 + limits::kMaxUidl + 1];
  std::memcpy(line, "uidl ", 5);
  std::memcpy(line + 5, uidl.data(), uidl.size());
  line[5 + uidl.size()] = '\n';
  const std::size_t len = 5 + uidl.size() + 1;
  const ssize_t w = retry_eintr([&] { return ::write(append_fd_.get(), line, len); });
  if (w < 0 || static_cast<std::size_t>(w) != len) {
    // The file may now end in a torn line: the next record_seen saves it
    // whole instead of appending after it.
    const int err = errno;
    append_fd_.reset();
    if (w < 0) return sys_error(Errc::temporary, "append to " + path_.string(), err);
    return make_error(Errc::temporary, "append to " + path_.string() + ": short write");
  }
  // fdatasync is enough: it flushes the size change with the data.
  if (retry_eintr([&] { return ::fdatasync(append_fd_.get()); }) != 0) {
    const int sync_err = errno;
    append_fd_.reset();
    return sys_error(Errc::temporary, "fdatasync " + path_.string(), sync_err);
  }
  return {};
}

bool AccountState::seen(std::string_view uidl) const { return uidls_.find(uidl) != uidls_.end(); }

void AccountState::mark_seen(std::string_view uidl) {
  // An invalid UIDL is not recorded: the file stays loadable, and the message
  // is fetched again rather than wrongly skipped.
  if (store::valid_uidl(uidl)) uidls_.emplace(uidl);
}

void AccountState::retain_only(const std::set<std::string>& on_server) {
  retain_only_if(
      [&on_server](std::string_view uid) { return on_server.count(std::string(uid)) != 0; });
}

void AccountState::retain_only_if(const std::function<bool(std::string_view)>& on_server) {
  for (auto it = uidls_.begin(); it != uidls_.end();) {
    if (!on_server(*it)) {
      it = uidls_.erase(it);
    } else {
      ++it;
    }
  }
}

fs::path AccountState::default_path(std::string_view user, std::string_view host, unsigned port) {
  fs::path base;
  const char* xdg = std::getenv("XDG_STATE_HOME");
  if (xdg != nullptr && xdg[0] == '/') {  // the XDG spec ignores relative paths
    base = xdg;
  } else {
    const char* home = std::getenv("HOME");
    std::string h = home != nullptr ? home : "";
    if (h.empty()) {
      if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr && pw->pw_dir != nullptr) {
        h = pw->pw_dir;
      }
    }
    base = fs::path(h.empty() ? "." : h) / ".local" / "state";
  }
  // user@host:port, host lower-cased, every byte outside [A-Za-z0-9._-] (and
  // '@' for the separator) written as %XX so the name is one safe component.
  const std::string lower_host = ascii_lowercase(host);
  const std::string account = std::string(user) + "@" + lower_host + ":" + std::to_string(port);
  std::string name;
  auto encode = [&name](std::string_view s) {
    for (char c : s) {
      const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      if (plain) {
        name += c;
      } else {
        name += '%';
        append_hex(name, std::string_view(&c, 1), /*upper=*/true);
      }
    }
  };
  encode(user);
  name += '@';
  encode(lower_host);
  name += '_';
  name += std::to_string(port);
  if (name.size() > 180) {
    // Keep names below NAME_MAX; the hash keeps them distinct.
    name = name.substr(0, 100) + "~" + hex_sha256(account).substr(0, 32);
  }
  if (name.front() == '.') name.replace(0, 1, "%2E");  // never a dot file
  return base / "apop" / (name + ".state");
}

}  // namespace apop::client
