#include "store/uidl_map.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/limits.hpp"
#include "common/parse.hpp"
#include "common/posix_fd.hpp"
#include "common/text.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {
namespace {

std::optional<std::uint32_t> parse_u32(std::string_view s) {
  return parse_decimal<std::uint32_t>(s, {.max_digits = 10});
}

Error corrupt(std::size_t line, const std::string& what) {
  return make_error(Errc::invalid, "dovecot-uidlist line " + std::to_string(line) + ": " + what);
}

std::string number(std::uint64_t v, bool hex, bool upper_hex, std::size_t width, bool zero) {
  std::string digits = hex ? hex_number(v, upper_hex) : std::to_string(v);
  if (digits.size() < width) digits.insert(0, width - digits.size(), zero ? '0' : ' ');
  return digits;
}

}  // namespace

bool valid_map_base(std::string_view base) {
  if (base.empty() || base.size() > limits::kMaxMaildirBaseName) return false;
  for (char c : base) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e || c == '/' || c == ':') return false;
  }
  return true;
}

UidlMap parse_uidl_map(std::string_view text) {
  UidlMap m;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      ++m.bad_lines;  // torn last line
      break;
    }
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    const std::size_t sp = line.find(' ');
    if (sp == std::string_view::npos) {
      ++m.bad_lines;
      continue;
    }
    std::string_view base = line.substr(0, sp);
    std::string_view uidl = line.substr(sp + 1);
    if (!valid_map_base(base) || !valid_uidl(uidl)) {
      ++m.bad_lines;
      continue;
    }
    m.by_base[std::string(base)] = std::string(uidl);
  }
  return m;
}

std::string format_uidl_map_line(std::string_view base, std::string_view uidl) {
  std::string out(base);
  out.push_back(' ');
  out.append(uidl);
  out.push_back('\n');
  return out;
}

Result<UidlMap> load_uidl_map(const std::filesystem::path& maildir) {
  const auto path = maildir / std::string(kUidlMapFile);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return UidlMap{};
    return sys_error("open " + path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path.string(), errno);
  if (!S_ISREG(st.st_mode)) return make_error(Errc::invalid, path.string() + ": not a file");
  if (static_cast<std::uint64_t>(st.st_size) > limits::kMaxUidlMapFile) {
    return make_error(Errc::invalid, path.string() + " is larger than " +
                                         std::to_string(limits::kMaxUidlMapFile) + " bytes");
  }
  std::string text;
  text.resize(static_cast<std::size_t>(st.st_size));
  const ssize_t got = read_full(fd.get(), text);
  if (got < 0) return sys_error("read " + path.string(), errno);
  text.resize(static_cast<std::size_t>(got));  // shorter if it shrank meanwhile
  return parse_uidl_map(text);
}

Result<void> append_uidl_map(const std::filesystem::path& maildir,
                             const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string buf;
  for (const auto& [base, uidl] : entries) {
    if (!valid_map_base(base) || !valid_uidl(uidl)) {
      return make_error(Errc::invalid, "invalid UIDL map entry for " + base);
    }
    buf += format_uidl_map_line(base, uidl);
  }
  if (buf.empty()) return {};
  const auto path = maildir / std::string(kUidlMapFile);
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("open " + path.string(), errno);
  // A torn last line (a crash mid-append) must not swallow our first entry.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path.string(), errno);
  if (st.st_size > 0) {
    char last = '\n';
    UniqueFd rd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (rd && ::pread(rd.get(), &last, 1, st.st_size - 1) == 1 && last != '\n') {
      buf.insert(buf.begin(), '\n');
    }
  }
  if (!write_all(fd.get(), buf)) return sys_error("write " + path.string(), errno);
  if (::fsync(fd.get()) != 0) return sys_error("fsync " + path.string(), errno);
  if (!existed) {
    UniqueFd dir(::open(maildir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir || ::fsync(dir.get()) != 0) return sys_error("fsync " + maildir.string(), errno);
  }
  return {};
}

Result<DovecotUidlist> parse_dovecot_uidlist(std::string_view text) {
  DovecotUidlist out;
  std::size_t n = 0;
  bool header = true;
  std::uint32_t prev = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++n;
    if (header) {
      header = false;
      if (line.size() < 2 || line[0] < '0' || line[0] > '9' || line[1] != ' ') {
        return corrupt(n, "bad header (no version number)");
      }
      out.version = static_cast<unsigned>(line[0] - '0');
      line.remove_prefix(2);
      if (out.version == 1) {
        const std::size_t sp = line.find(' ');
        auto v = parse_u32(line.substr(0, sp));
        auto nx = sp == std::string_view::npos ? std::nullopt : parse_u32(line.substr(sp + 1));
        if (!v || !nx) return corrupt(n, "bad version 1 header");
        out.uid_validity = *v;
        out.next_uid = *nx;
      } else if (out.version == 3) {
        while (!line.empty()) {
          const std::size_t sp = line.find(' ');
          std::string_view f = line.substr(0, sp);
          line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
          if (f.empty()) continue;
          if (f[0] == 'V' || f[0] == 'N') {
            auto v = parse_u32(f.substr(1));
            if (!v) return corrupt(n, "bad header field " + std::string(1, f[0]));
            (f[0] == 'V' ? out.uid_validity : out.next_uid) = *v;
          }
        }
      } else {
        return corrupt(n, "unsupported version " + std::to_string(out.version));
      }
      if (out.uid_validity == 0 || out.next_uid == 0) {
        return corrupt(n, "header without uidvalidity or next uid");
      }
      continue;
    }
    if (line.empty() && text.empty()) break;  // final LF
    const std::size_t sp = line.find(' ');
    auto uid = parse_u32(line.substr(0, sp));
    if (!uid || *uid == 0 || sp == std::string_view::npos) return corrupt(n, "bad UID");
    if (*uid <= prev) return corrupt(n, "UIDs not ascending");
    prev = *uid;
    DovecotUidlist::Record r;
    r.uid = *uid;
    std::string_view rest = line.substr(sp + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    if (out.version == 3) {
      while (!rest.empty() && rest.front() != ':') {
        const std::size_t e = rest.find(' ');
        std::string_view f = rest.substr(0, e);
        if (f.front() == 'P' && f.size() > 1) r.pop3_uidl = std::string(f.substr(1));
        rest = e == std::string_view::npos ? std::string_view() : rest.substr(e);
        while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      }
      if (rest.empty()) return corrupt(n, "record without ':filename'");
      rest.remove_prefix(1);
    }
    if (rest.empty() || rest.find('/') != std::string_view::npos ||
        rest.find('\0') != std::string_view::npos) {
      return corrupt(n, "bad file name");
    }
    r.filename = std::string(rest);
    r.base = std::string(maildir_base_name(rest));
    out.records.push_back(std::move(r));
  }
  if (header) return corrupt(1, "empty file");
  return out;
}

Result<std::string> expand_pop3_uidl_format(std::string_view format, std::uint32_t uid,
                                            std::uint32_t uid_validity, std::string_view base) {
  std::string out;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (++i >= format.size()) return make_error(Errc::invalid, "format ends with '%'");
    if (format[i] == '%') {
      out.push_back('%');
      continue;
    }
    bool zero = false, hex = false, upper_hex = false;
    std::size_t width = 0;
    if (format[i] == '0') {
      zero = true;
      ++i;
    }
    if (const std::string_view w = leading_digits(format.substr(i)); !w.empty()) {
      const auto n = parse_decimal<std::size_t>(w, {.max = limits::kMaxUidl});
      if (!n) return make_error(Errc::invalid, "field width too large");
      width = *n;
      i += w.size();
    }
    if (i < format.size() && (format[i] == 'X' || format[i] == 'x')) {
      hex = true;
      upper_hex = format[i] == 'X';
      ++i;
    }
    if (i >= format.size()) return make_error(Errc::invalid, "format ends inside a variable");
    std::string_view var;
    if (format[i] == '{') {
      const std::size_t close = format.find('}', i);
      if (close == std::string_view::npos) return make_error(Errc::invalid, "unclosed %{");
      var = format.substr(i + 1, close - i - 1);
      i = close;
    } else {
      var = format.substr(i, 1);
    }
    if (var == "u" || var == "uid") {
      out += number(uid, hex, upper_hex, width, zero);
    } else if (var == "v" || var == "uidvalidity") {
      out += number(uid_validity, hex, upper_hex, width, zero);
    } else if (var == "f" || var == "filename") {
      if (hex) return make_error(Errc::invalid, "%f takes no hex modifier");
      std::string s(base);
      if (s.size() < width) s.insert(0, width - s.size(), ' ');
      out += s;
    } else if (var == "m" || var == "md5" || var == "g" || var == "guid") {
      return make_error(Errc::invalid, "%" + std::string(var) +
                                           " needs the message or Dovecot's index; not supported");
    } else {
      return make_error(Errc::invalid, "unknown variable %" + std::string(var));
    }
  }
  return out;
}

}  // namespace apop::store
