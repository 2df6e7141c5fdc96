// Mailbox quotas (store/quota.hpp): the Maildir++ maildirsize file, its
// recalculation, the quota lock, and mbox counting.
#include "store/quota.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <limits>
#include <vector>

#include "common/limits.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {

namespace {

constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();

std::int64_t sat_add(std::int64_t a, std::int64_t b) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kI64Max : kI64Min;
  return r;
}

std::int64_t to_i64(std::uint64_t v) {
  return v > static_cast<std::uint64_t>(kI64Max) ? kI64Max : static_cast<std::int64_t>(v);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// An unsigned decimal of at most 19 digits that fits std::int64_t (what
// any writer's sums can be, and what parse_maildirsize writes back).
std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');  // 19 digits fit std::uint64_t
  }
  if (v > static_cast<std::uint64_t>(kI64Max)) return std::nullopt;
  return v;
}

std::optional<std::int64_t> parse_i64(std::string_view s) {
  bool neg = false;
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) {
    neg = s.front() == '-';
    s.remove_prefix(1);
  }
  // std::int64_t's minimum, as a saturated sum is written back: its
  // magnitude is one above the maximum that parse_u64 takes (found by
  // fuzz_maildirsize: the sum written back did not parse again).
  if (neg && s == "9223372036854775808") return kI64Min;
  auto v = parse_u64(s);
  if (!v) return std::nullopt;
  const auto i = static_cast<std::int64_t>(*v);
  return neg ? -i : i;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

Result<QuotaLimits> parse_limits_line(std::string_view line) {
  QuotaLimits q;
  bool seen_s = false, seen_c = false;
  if (line.empty()) return q;
  while (true) {
    const auto comma = line.find(',');
    const std::string_view part = line.substr(0, comma);
    if (part.size() < 2) return make_error(Errc::invalid, "maildirsize: bad limits line");
    const char kind = part.back();
    auto v = parse_u64(part.substr(0, part.size() - 1));
    if (!v) return make_error(Errc::invalid, "maildirsize: bad limit in the limits line");
    if (kind == 'S' && !seen_s) {
      q.bytes = *v;
      seen_s = true;
    } else if (kind == 'C' && !seen_c) {
      q.messages = *v;
      seen_c = true;
    } else {
      return make_error(Errc::invalid, "maildirsize: unknown or repeated limit");
    }
    if (comma == std::string_view::npos) break;
    line.remove_prefix(comma + 1);
  }
  return q;
}

std::string maildirsize_content(const QuotaLimits& limits, const QuotaUsage& usage) {
  return format_maildirsize_limits(limits) + "\n" + std::to_string(usage.bytes) + " " +
         std::to_string(usage.messages) + "\n";
}

Result<QuotaUsage> scan_dir(int dirfd, const char* sub, QuotaUsage usage) {
  UniqueFd d(open_dir_at(dirfd, sub));
  if (!d) {
    if (errno == ENOENT) return usage;
    return sys_error(std::string("open ") + sub + "/", errno);
  }
  auto names = list_files(d.get(), std::string(sub) + "/");
  if (!names) return names.error();
  for (const std::string& name : *names) {
    std::int64_t size = 0;
    if (auto s = maildir_name_field(maildir_base_name(name), 'S')) {
      size = to_i64(*s);
    } else {
      struct stat st {};
      if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed meanwhile (a POP3 UPDATE)
        return sys_error(std::string("stat ") + sub + "/" + name, errno);
      }
      size = static_cast<std::int64_t>(st.st_size);
    }
    usage.bytes = sat_add(usage.bytes, size);
    usage.messages = sat_add(usage.messages, 1);
  }
  return usage;
}

// Replaces DIR/maildirsize atomically (a temporary file, then rename). Best
// effort: the usage is known either way; a file not written is recalculated
// at the next check.
void write_maildirsize(int dirfd, const QuotaLimits& limits, const QuotaUsage& usage) {
  const std::string tmp = std::string(kMaildirsizeFile) + ".apop-" + std::to_string(::getpid());
  UniqueFd fd(
      ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return;
  const bool ok =
      write_all(fd.get(), maildirsize_content(limits, usage)) && fd.close_checked() == 0;
  if (!ok || ::renameat(dirfd, tmp.c_str(), dirfd, std::string(kMaildirsizeFile).c_str()) != 0) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
  }
}

}  // namespace

Result<Maildirsize> parse_maildirsize(std::string_view content) {
  Maildirsize out;
  auto nl = content.find('\n');
  if (nl == std::string_view::npos) return make_error(Errc::invalid, "maildirsize: no limits line");
  auto limits = parse_limits_line(content.substr(0, nl));
  if (!limits) return limits.error();
  out.limits = *limits;
  content.remove_prefix(nl + 1);
  while (!content.empty()) {
    nl = content.find('\n');
    if (nl == std::string_view::npos) {
      return make_error(Errc::invalid, "maildirsize: unterminated last line");
    }
    std::string_view line = content.substr(0, nl);
    content.remove_prefix(nl + 1);
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    while (!line.empty() && is_space(line.back())) line.remove_suffix(1);
    std::size_t sp = 0;
    while (sp < line.size() && !is_space(line[sp])) ++sp;
    std::size_t rest = sp;
    while (rest < line.size() && is_space(line[rest])) ++rest;
    auto bytes = parse_i64(line.substr(0, sp));
    auto count = parse_i64(line.substr(rest));
    if (sp == line.size() || !bytes || !count) {
      return make_error(Errc::invalid, "maildirsize: bad usage line");
    }
    out.usage.bytes = sat_add(out.usage.bytes, *bytes);
    out.usage.messages = sat_add(out.usage.messages, *count);
    ++out.lines;
  }
  return out;
}

std::string format_maildirsize_limits(const QuotaLimits& limits) {
  std::string s;
  if (limits.bytes != 0) s = std::to_string(limits.bytes) + "S";
  if (limits.messages != 0) {
    if (!s.empty()) s += ",";
    s += std::to_string(limits.messages) + "C";
  }
  return s;
}

bool quota_allows(const QuotaLimits& limits, const QuotaUsage& usage, std::uint64_t add_bytes,
                  std::uint64_t add_messages) {
  const std::int64_t b = sat_add(usage.bytes, to_i64(add_bytes));
  const std::int64_t m = sat_add(usage.messages, to_i64(add_messages));
  if (limits.bytes != 0 && b > to_i64(limits.bytes)) return false;
  if (limits.messages != 0 && m > to_i64(limits.messages)) return false;
  return true;
}

bool maildirsize_needs_recalc(const std::optional<Maildirsize>& parsed, std::uint64_t file_size,
                              std::chrono::seconds age, const QuotaLimits& limits,
                              std::uint64_t add_bytes, std::uint64_t add_messages) {
  if (!parsed) return true;
  if (!(parsed->limits == limits)) return true;
  if (file_size >= limits::kMaildirsizeMaxFile) return true;
  if (parsed->usage.bytes < 0 || parsed->usage.messages < 0) return true;  // surely wrong
  if (!quota_allows(limits, parsed->usage, add_bytes, add_messages) &&
      age >= limits::kMaildirsizeMaxAge) {
    return true;
  }
  return false;
}

Result<std::uint64_t> parse_quota_size(std::string_view text) {
  std::string_view s = text;
  std::size_t digits = 0;
  while (digits < s.size() && is_digit(s[digits])) ++digits;
  auto v = parse_u64(s.substr(0, digits));
  if (!v) return make_error(Errc::invalid, "not a size: " + std::string(text));
  std::string_view unit = s.substr(digits);
  if (unit.ends_with("iB")) {
    unit.remove_suffix(2);
    if (unit.empty()) return make_error(Errc::invalid, "not a size: " + std::string(text));
  } else if (unit.size() >= 1 && (unit.back() == 'B' || unit.back() == 'b')) {
    unit.remove_suffix(1);
  }
  int shift = 0;
  if (unit.size() > 1) return make_error(Errc::invalid, "not a size: " + std::string(text));
  if (unit.size() == 1) {
    switch (unit.front()) {
      case 'k':
      case 'K':
        shift = 10;
        break;
      case 'm':
      case 'M':
        shift = 20;
        break;
      case 'g':
      case 'G':
        shift = 30;
        break;
      case 't':
      case 'T':
        shift = 40;
        break;
      default:
        return make_error(Errc::invalid, "not a size: " + std::string(text));
    }
  }
  if (shift != 0 && *v > (static_cast<std::uint64_t>(kI64Max) >> shift)) {
    return make_error(Errc::invalid, "size too large: " + std::string(text));
  }
  return *v << shift;
}

std::string format_quota_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"K", "M", "G", "T"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%s", v, kUnits[u]);
  return buf;
}

Result<QuotaLock> QuotaLock::acquire(int dirfd) {
  UniqueFd fd(::openat(dirfd, std::string(kQuotaLockFile).c_str(),
                       O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("open the quota lock", errno);
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return sys_error("lock the quota lock", errno);
  }
  return QuotaLock(std::move(fd));
}

bool maildirsize_exists(int dirfd) {
  return ::faccessat(dirfd, std::string(kMaildirsizeFile).c_str(), F_OK, 0) == 0;
}

Result<QuotaUsage> scan_maildir_usage(int dirfd) {
  auto usage = scan_dir(dirfd, "new", QuotaUsage{});
  if (!usage) return usage.error();
  return scan_dir(dirfd, "cur", *usage);
}

Result<QuotaUsage> maildir_quota_usage_locked(int dirfd, const QuotaLimits& limits,
                                              std::uint64_t add_bytes, std::uint64_t add_messages,
                                              std::int64_t now, bool write) {
  if (limits.unlimited()) return scan_maildir_usage(dirfd);
  std::optional<Maildirsize> parsed;
  std::uint64_t file_size = 0;
  std::chrono::seconds age{0};
  UniqueFd fd(
      ::openat(dirfd, std::string(kMaildirsizeFile).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd) {
    struct stat st {};
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) {
      file_size = static_cast<std::uint64_t>(st.st_size);
      age = std::chrono::seconds(now - st.st_mtime);
      if (file_size < limits::kMaildirsizeMaxRead) {
        std::string content(file_size, '\0');
        std::size_t got = 0;
        while (got < content.size()) {
          const ssize_t n = read_retry(fd.get(), content.data() + got, content.size() - got);
          if (n <= 0) break;
          got += static_cast<std::size_t>(n);
        }
        content.resize(got);
        if (auto p = parse_maildirsize(content)) parsed = *p;
      }
    }
  } else if (errno != ENOENT) {
    return sys_error("open maildirsize", errno);
  }
  if (!maildirsize_needs_recalc(parsed, file_size, age, limits, add_bytes, add_messages)) {
    return parsed->usage;
  }
  auto usage = scan_maildir_usage(dirfd);
  if (!usage) return usage.error();
  if (write) write_maildirsize(dirfd, limits, *usage);
  return *usage;
}

void maildirsize_append(int dirfd, std::int64_t bytes, std::int64_t messages) {
  UniqueFd fd(::openat(dirfd, std::string(kMaildirsizeFile).c_str(),
                       O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return;  // no file: nothing to keep up to date
  const std::string line = std::to_string(bytes) + " " + std::to_string(messages) + "\n";
  if (!write_all(fd.get(), line) || fd.close_checked() != 0) {
    ::unlinkat(dirfd, std::string(kMaildirsizeFile).c_str(), 0);
  }
}

Result<QuotaUsage> maildir_quota_usage(const std::filesystem::path& dir,
                                       const QuotaLimits& limits) {
  UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) return sys_error("open Maildir " + dir.string(), errno);
  // No lock file yet: no delivery with a quota ran, so none is running.
  UniqueFd lock(::openat(dirfd.get(), std::string(kQuotaLockFile).c_str(),
                         O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (lock) {
    while (::flock(lock.get(), LOCK_SH) != 0) {
      if (errno != EINTR) return sys_error("lock the quota lock", errno);
    }
  }
  return maildir_quota_usage_locked(dirfd.get(), limits, 0, 0, std::time(nullptr), false);
}

Result<std::uint64_t> count_mbox_messages(int fd) {
  std::vector<char> buf(limits::kBodyChunk);
  std::uint64_t count = 0;
  off_t off = 0;
  // How much of "From " the current line has matched so far; -1: the line
  // does not start with it.
  int matched = 0;
  static constexpr std::string_view kFrom = "From ";
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read mbox", errno);
    }
    if (n == 0) break;
    off += n;
    for (ssize_t i = 0; i < n; ++i) {
      const char c = buf[static_cast<std::size_t>(i)];
      if (c == '\n') {
        matched = 0;
        continue;
      }
      if (matched < 0) continue;
      if (c == kFrom[static_cast<std::size_t>(matched)]) {
        if (++matched == static_cast<int>(kFrom.size())) {
          ++count;
          matched = -1;
        }
      } else {
        matched = -1;
      }
    }
  }
  return count;
}

Result<QuotaUsage> mbox_quota_usage(const std::filesystem::path& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return QuotaUsage{};
    return sys_error("open " + file.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + file.string(), errno);
  auto count = count_mbox_messages(fd.get());
  if (!count) return count.error();
  return QuotaUsage{static_cast<std::int64_t>(st.st_size), to_i64(*count)};
}

Error over_quota_error(const QuotaLimits& limits, const QuotaUsage& usage, std::uint64_t size) {
  std::string why = "mailbox full: " + std::to_string(usage.bytes) + " bytes in " +
                    std::to_string(usage.messages) + " messages";
  if (limits.bytes != 0) why += ", limit " + std::to_string(limits.bytes) + " bytes";
  if (limits.messages != 0) why += ", limit " + std::to_string(limits.messages) + " messages";
  why += "; the message has " + std::to_string(size) + " bytes";
  return make_error(Errc::over_quota, why);
}

}  // namespace apop::store
