#include "store/update_journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <unordered_set>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {

using namespace std::string_view_literals;

namespace {

constexpr std::string_view kHeader = "apop-update 1\n";
constexpr std::string_view kEnd = "E\0"sv;

bool plain_name(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string_view::npos &&
         s.find('\0') == std::string_view::npos;
}

std::size_t encoded_size(const UpdateJournal& j) {
  std::size_t n = kHeader.size() + kEnd.size();
  for (const auto* list : {&j.remove, &j.keep}) {
    for (const auto& name : *list) n += name.size() + 2;
  }
  return n;
}

Result<std::string> read_small_file(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return sys_error("stat update journal", errno);
  if (static_cast<std::uint64_t>(st.st_size) > limits::kMaxUpdateJournal) {
    return make_error(Errc::invalid, "update journal larger than the limit");
  }
  std::string data;
  data.reserve(static_cast<std::size_t>(st.st_size));
  char buf[16 * 1024];
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd, buf, sizeof buf); });
    if (n < 0) return sys_error("read update journal", errno);
    if (n == 0) break;
    if (data.size() + static_cast<std::size_t>(n) > limits::kMaxUpdateJournal) {
      return make_error(Errc::invalid, "update journal larger than the limit");
    }
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

}  // namespace

std::string encode_update_journal(const UpdateJournal& j) {
  std::string out;
  out.reserve(encoded_size(j));
  out += kHeader;
  for (const auto& name : j.remove) {
    out += 'D';
    out += name;
    out += '\0';
  }
  for (const auto& name : j.keep) {
    out += 'K';
    out += name;
    out += '\0';
  }
  out += kEnd;
  return out;
}

Result<UpdateJournal> parse_update_journal(std::string_view data) {
  auto bad = [](const char* why) { return make_error(Errc::invalid, why); };
  if (data.substr(0, kHeader.size()) != kHeader) return bad("update journal: bad header");
  data.remove_prefix(kHeader.size());
  UpdateJournal j;
  for (;;) {
    if (data.empty()) return bad("update journal: truncated");
    if (data == kEnd) break;
    const char type = data.front();
    if (type != 'D' && type != 'K') return bad("update journal: bad record type");
    data.remove_prefix(1);
    const auto nul = data.find('\0');
    if (nul == std::string_view::npos) return bad("update journal: truncated record");
    const std::string_view name = data.substr(0, nul);
    if (!plain_name(name)) return bad("update journal: bad file name");
    (type == 'D' ? j.remove : j.keep).emplace_back(name);
    data.remove_prefix(nul + 1);
  }
  return j;
}

Result<void> write_update_journal(int dirfd, const UpdateJournal& j) {
  if (encoded_size(j) > limits::kMaxUpdateJournal) {
    return make_error(Errc::invalid, "too many deleted messages for one update journal");
  }
  const std::string tmp(kUpdateJournalTmp);
  const std::string final_name(kUpdateJournalFile);
  UniqueFd fd(
      ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("create update journal", errno);
  auto fail = [&](const std::string& what, int err) -> Result<void> {
    fd.reset();
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return sys_error(what, err);
  };
  if (!write_all(fd.get(), encode_update_journal(j))) return fail("write update journal", errno);
  if (fsync_retry(fd.get()) != 0) return fail("fsync update journal", errno);
  if (fd.close_checked() != 0) return fail("close update journal", errno);
  if (::renameat(dirfd, tmp.c_str(), dirfd, final_name.c_str()) != 0) {
    return fail("rename update journal", errno);
  }
  if (fsync_retry(dirfd) != 0) {
    // Not known to be durable: take it back (nothing removed yet), so the
    // client is told the deletions failed and nothing happens later either.
    const int err = errno;
    ::unlinkat(dirfd, final_name.c_str(), 0);
    return sys_error("fsync Maildir directory", err);
  }
  return {};
}

Result<void> apply_update_journal(int curfd, const UpdateJournal& j) {
  std::optional<Error> first;
  auto note = [&](Error err) {
    if (!first) first = std::move(err);
  };
  std::unordered_set<std::string_view> named;
  for (const auto& n : j.remove) named.insert(n);
  for (const auto& n : j.keep) named.insert(n);
  std::optional<std::vector<std::string>> listing;  // lazily, at most once
  std::unordered_set<std::string> claimed;          // renamed files already taken
  for (const auto& name : j.remove) {
    if (::unlinkat(curfd, name.c_str(), 0) == 0) continue;
    if (errno != ENOENT) {
      note(sys_error("unlink cur/" + name, errno));
      continue;
    }
    // Gone: removed before a crash, or renamed (flags changed) by another
    // client. A file with the same base name that the journal does not name
    // is that message under its new name; the smallest such, for determinism.
    if (!listing) {
      auto l = list_files(curfd, "cur/");
      if (!l) {
        note(l.error());
        continue;
      }
      listing = std::move(l.value());
    }
    const std::string_view base = maildir_base_name(name);
    const std::string* best = nullptr;
    for (const auto& cand : *listing) {
      if (maildir_base_name(cand) != base || named.count(cand) != 0 || claimed.count(cand) != 0) {
        continue;
      }
      if (best == nullptr || cand < *best) best = &cand;
    }
    if (best == nullptr) continue;  // already gone: fine
    claimed.insert(*best);
    if (::unlinkat(curfd, best->c_str(), 0) != 0 && errno != ENOENT) {
      note(sys_error("unlink cur/" + *best, errno));
    }
  }
  if (fsync_retry(curfd) != 0) note(sys_error("fsync cur/", errno));
  if (first) return *first;
  return {};
}

Result<void> remove_update_journal(int dirfd) {
  // No fsync: a journal that comes back after a crash is finished again,
  // which is a no-op (its files are gone and cur/ was synced before this).
  const std::string name(kUpdateJournalFile);
  if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return sys_error("unlink update journal", errno);
  }
  return {};
}

Result<bool> recover_update_journal(int dirfd, int curfd) {
  const std::string tmp(kUpdateJournalTmp);
  if (::unlinkat(dirfd, tmp.c_str(), 0) != 0 && errno != ENOENT) {
    return sys_error("unlink uncommitted update journal", errno);
  }
  const std::string name(kUpdateJournalFile);
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return false;
    if (errno != ELOOP) return sys_error("open update journal", errno);
  }
  std::optional<UpdateJournal> journal;
  if (fd) {
    auto data = read_small_file(fd.get());
    if (!data && data.error().code == Errc::temporary) return data.error();
    if (data) {
      auto parsed = parse_update_journal(*data);
      if (parsed) journal = std::move(parsed.value());
    }
  }
  if (!journal) {
    // Damaged (or not ours, e.g. a symlink): keep the old state, keep the
    // file for the administrator.
    const std::string damaged(kUpdateJournalDamaged);
    if (::renameat(dirfd, name.c_str(), dirfd, damaged.c_str()) != 0) {
      return sys_error("rename damaged update journal", errno);
    }
    if (fsync_retry(dirfd) != 0) return sys_error("fsync Maildir directory", errno);
    return false;
  }
  if (auto r = apply_update_journal(curfd, *journal); !r) return r.error();
  if (auto r = remove_update_journal(dirfd); !r) return r.error();
  return true;
}

}  // namespace apop::store
