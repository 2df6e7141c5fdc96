// Maildir maildrops (store/maildir.hpp): the session (MaildirDrop: RETR,
// commit through the update journal), tmp/ cleanup, new/ to cur/, and the
// opener. The listing of cur/ is maildir_listing.cpp, delivery
// maildir_deliver.cpp.
#include "store/maildir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/posix_fd.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_internal.hpp"
#include "store/maildir_name.hpp"
#include "store/quota.hpp"
#include "store/update_journal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using namespace maildir_detail;

namespace {

// ---------------------------------------------------------------------------
// Reading.

class FileSource final : public pop3::ByteSource {
 public:
  explicit FileSource(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<std::size_t> read(std::span<char> buf) override {
    if (buf.empty()) return std::size_t{0};
    const ssize_t n = read_retry(fd_.get(), buf.data(), buf.size());
    if (n < 0) return sys_error("read message", errno);
    return static_cast<std::size_t>(n);
  }

 private:
  UniqueFd fd_;
};

class MaildirDrop final : public pop3::Maildrop {
 public:
  MaildirDrop(UniqueFd lock, UniqueFd dir, UniqueFd cur, Listing listing)
      : lock_(std::move(lock)),
        dir_(std::move(dir)),
        cur_(std::move(cur)),
        entries_(std::move(listing.entries)),
        infos_(std::move(listing.infos)),
        name_store_(std::move(listing.name_store)),
        cache_store_(std::move(listing.cache_store)),
        cache_after_update_(listing.subset_stable && listing.map_known),
        map_key_(listing.map_key) {}

  // The lock is released when lock_ is closed (the only descriptor of that
  // open file description: opened without sharing, O_CLOEXEC).
  ~MaildirDrop() override = default;

  std::span<const pop3::MessageInfo> messages() const override { return infos_; }

  // Delivery time for RFC 2449 EXPIRE: the mtime, as Dovecot takes it
  // (delivery sets it, new/ -> cur/ keeps it, flag renames keep it).
  void load_delivery_times() override {
    if (times_loaded_) return;
    times_loaded_ = true;
    std::optional<std::vector<std::string>> listing;  // lazily, at most once
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      struct stat st {};
      if (::fstatat(cur_.get(), e.path().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno != ENOENT) continue;
        if (!listing) {
          auto l = list_files(cur_.get(), "cur/");
          if (!l) continue;
          listing = std::move(l.value());
        }
        auto found = find_renamed(e, *listing);
        if (!found) continue;  // gone: unknown age
        rename_recorded(e, *found);
        if (::fstatat(cur_.get(), e.path().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      }
      infos_[i].delivered = static_cast<std::int64_t>(st.st_mtim.tv_sec);
    }
  }

  Result<std::unique_ptr<pop3::ByteSource>> open(std::size_t index) override {
    if (index >= entries_.size()) return make_error(Errc::invalid, "no such message");
    Entry& e = entries_[index];
    UniqueFd fd(::openat(cur_.get(), e.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd && errno == ENOENT) {
      // Renamed since the scan (flags changed by another client)?
      auto listing = list_files(cur_.get(), "cur/");
      if (!listing) return listing.error();
      auto found = find_renamed(e, listing.value());
      if (!found)
        return make_error(Errc::not_found, "message file is gone: " + std::string(e.base()));
      rename_recorded(e, *found);
      fd.reset(::openat(cur_.get(), e.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      if (!fd && errno == ENOENT) {
        return make_error(Errc::not_found, "message file is gone: " + std::string(e.base()));
      }
    }
    if (!fd) return sys_error("open cur/" + e.path(), errno);
    return std::unique_ptr<pop3::ByteSource>(std::make_unique<FileSource>(std::move(fd)));
  }

  // All or nothing across crashes: the deletions are committed by writing
  // the update journal (store/update_journal.hpp) before the first unlink.
  Result<void> commit(std::span<const std::size_t> deleted) override {
    std::optional<Error> first;
    auto note = [&](Error err) {
      if (!first) first = std::move(err);
    };
    std::vector<bool> doomed(entries_.size(), false);
    UpdateJournal journal;
    std::unordered_set<std::string_view> doomed_bases;
    for (const std::size_t index : deleted) {
      if (index >= entries_.size()) {
        note(make_error(Errc::invalid, "commit: no such message index"));
        continue;
      }
      if (doomed[index]) continue;
      doomed[index] = true;
      journal.remove.push_back(entries_[index].path());
      doomed_bases.insert(entries_[index].base());
    }
    if (!journal.remove.empty()) {
      // Snapshot files sharing a base name with a removed one stay: name them
      // so a recovery never takes one for a removed message renamed since.
      for (std::size_t i = 0; i < entries_.size(); ++i) {
        if (!doomed[i] && doomed_bases.count(entries_[i].base()) != 0) {
          journal.keep.push_back(entries_[i].path());
        }
      }
      // Maildir++ quota (store/quota.hpp): when a maildirsize file is kept,
      // the unlinks and their negative line happen under the quota lock, so
      // a recalculation by a concurrent delivery never counts them twice.
      std::optional<QuotaLock> quota_lock;
      std::int64_t freed = 0;
      if (maildirsize_exists(dir_.get())) {
        if (auto locked = QuotaLock::acquire(dir_.get())) quota_lock.emplace(std::move(*locked));
        for (std::size_t i = 0; i < entries_.size(); ++i) {
          if (doomed[i]) freed += removed_size(entries_[i]);
        }
      }
      // The commit point. On failure nothing was removed.
      if (auto w = write_update_journal(dir_.get(), journal); !w) return w.error();
      if (auto a = apply_update_journal(cur_.get(), journal); !a) {
        // The journal stays: the next open of this maildrop finishes it.
        note(a.error());
        // Some files may be gone, some not: the count is unknown, so the
        // next check recalculates.
        if (quota_lock) ::unlinkat(dir_.get(), std::string(kMaildirsizeFile).c_str(), 0);
      } else {
        if (quota_lock) {
          maildirsize_append(dir_.get(), -freed, -static_cast<std::int64_t>(journal.remove.size()));
        }
        // Everything is removed and cur/ synced; a journal that survives a
        // failed unlink here is finished again (a no-op) at the next open,
        // so this is no failure of the commit.
        (void)remove_update_journal(dir_.get());
        update_cache(doomed);
      }
    }
    if (first) return *first;
    return {};
  }

 private:
  // A file in `listing` with e's base name that no other snapshot entry
  // claims; the smallest such name, for determinism.
  std::optional<std::string> find_renamed(const Entry& e, const std::vector<std::string>& listing) {
    fill_recorded();
    std::optional<std::string> best;
    for (const auto& name : listing) {
      if (maildir_base_name(name) != e.base() || recorded_.count(name) != 0) continue;
      if (!best || name < *best) best = name;
    }
    return best;
  }

  // A message's size as Maildir++ counts it: ",S=" of its name, else the
  // file's size (0 when it is already gone).
  std::int64_t removed_size(const Entry& e) {
    if (auto s = maildir_name_field(e.base(), 'S')) return static_cast<std::int64_t>(*s);
    struct stat st {};
    if (::fstatat(cur_.get(), e.path().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
    return static_cast<std::int64_t>(st.st_size);
  }

  // The names of the snapshot, as a set: built on the first rename only
  // (a login does not pay for it).
  void fill_recorded() {
    if (recorded_filled_) return;
    recorded_filled_ = true;
    recorded_.reserve(entries_.size());
    for (const auto& e : entries_) recorded_.insert(e.name);
  }

  // After an UPDATE that removed messages: the survivors, keyed on cur/ as
  // it is now. Always "dirty" (store/maildir_cache.hpp): the records are the
  // snapshot of the open, not a listing taken after this stat, so the next
  // open lists cur/ and uses them only when they name exactly its files (a
  // file another client added or renamed meanwhile fails that).
  void update_cache(const std::vector<bool>& doomed) {
    if (!cache_after_update_) return;
    struct stat st {};
    if (::fstat(cur_.get(), &st) != 0) {
      remove_maildir_cache(dir_.get());
      return;
    }
    std::vector<std::size_t> keep;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (!doomed[i]) keep.push_back(i);
    }
    if (keep.size() < kMaildirCacheMinMessages) {
      remove_maildir_cache(dir_.get());
      return;
    }
    if (!write_listing(dir_.get(), stat_key(st), map_key_, false, entries_, infos_, keep)) {
      remove_maildir_cache(dir_.get());
    }
  }

  void rename_recorded(Entry& e, const std::string& name) {
    fill_recorded();
    recorded_.erase(e.name);
    e.name = renamed_.emplace_back(name);
    recorded_.insert(e.name);
  }

  UniqueFd lock_;
  UniqueFd dir_;  // the Maildir itself (the update journal lives there)
  UniqueFd cur_;
  std::vector<Entry> entries_;
  std::vector<pop3::MessageInfo> infos_;
  std::vector<std::string> name_store_;  // see Entry
  std::string cache_store_;
  std::deque<std::string> renamed_;  // stable addresses
  std::unordered_set<std::string_view> recorded_;
  bool recorded_filled_ = false;
  bool times_loaded_ = false;
  const bool cache_after_update_;
  const StatKey map_key_;
};

bool plain_file_name(std::string_view s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string_view::npos &&
         s.find('\0') == std::string_view::npos;
}

// The Maildir rule for tmp/: a file whose inode has not changed for 36 hours
// (ctime, as Dovecot checks) is a leftover of a delivery that died (killed,
// crashed, power cut) and is removed. Best effort: errors are ignored, they
// do not keep a user from their mail. Returns how many files were removed.
std::size_t clean_tmp(int maildirfd, std::int64_t now) {
  UniqueFd tmpfd(open_dir_at(maildirfd, "tmp"));
  if (!tmpfd) return 0;
  auto names = list_files(tmpfd.get(), "tmp/");
  if (!names) return 0;
  const std::int64_t max_age =
      std::chrono::duration_cast<std::chrono::seconds>(limits::kMaildirTmpMaxAge).count();
  std::size_t removed = 0;
  for (const auto& name : names.value()) {
    struct stat st {};
    if (::fstatat(tmpfd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (static_cast<std::int64_t>(st.st_ctim.tv_sec) > now - max_age) continue;
    if (::unlinkat(tmpfd.get(), name.c_str(), 0) == 0) ++removed;
  }
  return removed;
}

// clean_tmp at most once per kMaildirTmpScanInterval for each Maildir in
// this process (as Dovecot scans tmp/ at most every 8 hours): a login then
// costs no listing of tmp/. Remembered by path in a bounded table (when it
// is full it is emptied, which costs one more scan per Maildir). A missing
// tmp/ is created again, as delivery needs it.
void maybe_clean_tmp(const fs::path& dir, int maildirfd, std::int64_t now) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::int64_t> last_scan;
  const std::int64_t interval =
      std::chrono::duration_cast<std::chrono::seconds>(limits::kMaildirTmpScanInterval).count();
  {
    std::lock_guard<std::mutex> lock(mu);
    auto [it, fresh] = last_scan.try_emplace(dir.native(), now);
    if (!fresh) {
      if (it->second > now - interval && it->second <= now) return;
      it->second = now;
    } else if (last_scan.size() > limits::kMaildirTmpScanMemo) {
      last_scan.clear();
      last_scan.emplace(dir.native(), now);
    }
  }
  struct stat st {};
  if (::fstatat(maildirfd, "tmp", &st, 0) != 0 && errno == ENOENT) {
    (void)ensure_maildir(dir);
    return;
  }
  clean_tmp(maildirfd, now);
}

// Moves every file of new/ to cur/ as NAME:2, (a name already carrying an
// info suffix keeps it). Files that vanish meanwhile are skipped.
Result<void> move_new_to_cur(int newfd, int curfd) {
  auto names = list_files(newfd, "new/");
  if (!names) return names.error();
  for (const auto& name : names.value()) {
    const std::string target = name.find(':') == std::string::npos ? name + ":2," : name;
    if (::renameat(newfd, name.c_str(), curfd, target.c_str()) != 0 && errno != ENOENT) {
      return sys_error("rename new/" + name + " to cur/", errno);
    }
  }
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------

Result<void> ensure_maildir(const fs::path& dir) {
  if (dir.empty()) return make_error(Errc::invalid, "empty Maildir path");
  auto make = [](const fs::path& p) -> Result<void> {
    if (::mkdir(p.c_str(), 0700) == 0) return {};
    const int err = errno;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return {};
      return make_error(Errc::temporary, p.string() + ": exists and is not a directory");
    }
    return sys_error("mkdir " + p.string(), err);
  };
  // Parents first (only those missing), then DIR and its three subdirectories.
  fs::path prefix;
  for (const auto& part : dir.lexically_normal()) {
    prefix /= part;
    if (part == prefix.root_path() || part.empty()) continue;
    if (auto r = make(prefix); !r) return r;
  }
  for (const char* sub : {"cur", "new", "tmp"}) {
    if (auto r = make(dir / sub); !r) return r;
  }
  return {};
}

std::size_t clean_maildir_tmp(const fs::path& dir, std::int64_t now) {
  UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) return 0;
  return clean_tmp(dirfd.get(), now);
}

MaildirOpener::MaildirOpener(fs::path mail_root) : mail_root_(std::move(mail_root)) {}

Result<std::unique_ptr<pop3::Maildrop>> MaildirOpener::open(const pop3::MailboxAddress& where) {
  const std::string_view user = where.user;
  if (!plain_file_name(user)) return make_error(Errc::invalid, "bad maildrop name");
  const fs::path dir = mail_root_ / std::string(user);
  // The common case, a complete Maildir, costs an open of it, its lock, an
  // open of new/ and cur/ and a listing of each (and of the root, which says
  // which of apop's own files to read): no stat or open that is bound to
  // fail. Otherwise ensure_maildir creates what is missing (it walks the
  // whole path) and the opens are tried once more.
  UniqueFd dirfd;
  UniqueFd newfd;
  UniqueFd curfd;
  const auto open_all = [&] {
    dirfd.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) return false;
    newfd.reset(open_dir_at(dirfd.get(), "new"));
    if (!newfd) return false;
    curfd.reset(open_dir_at(dirfd.get(), "cur"));
    return static_cast<bool>(curfd);
  };
  if (!open_all()) {
    if (errno != ENOENT && errno != ENOTDIR) return sys_error("open " + dir.string(), errno);
    if (auto r = ensure_maildir(dir); !r) return r.error();
    if (!open_all()) return sys_error("open " + dir.string(), errno);
  }

  const std::string lock_name(kLockFile);
  UniqueFd lock(
      ::openat(dirfd.get(), lock_name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) return sys_error("open lock file in " + dir.string(), errno);
  for (;;) {
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return make_error(Errc::in_use, "maildrop is locked");
    return sys_error("flock " + dir.string(), errno);
  }

  // Listed under the lock: no other session adds or removes apop's files.
  const RootFiles root = list_root(dirfd.get());
  // A QUIT that was cut by a crash after its commit point is finished first.
  if (root.maybe(root.journal)) {
    auto r = recover_update_journal(dirfd.get(), curfd.get());
    if (!r) return r.error();
    // Messages removed by a commit that a crash cut before its maildirsize
    // line (store/quota.hpp): the count is wrong, so the next quota check
    // recalculates. Safe without the quota lock: a delivery appending to the
    // removed file meanwhile is in new/, which the recalculation counts.
    if (*r) ::unlinkat(dirfd.get(), std::string(kMaildirsizeFile).c_str(), 0);
  }
  maybe_clean_tmp(dir, dirfd.get(), static_cast<std::int64_t>(::time(nullptr)));
  if (auto r = move_new_to_cur(newfd.get(), curfd.get()); !r) return r.error();
  newfd.reset();
  auto listing = list_maildrop(dirfd.get(), curfd.get(), dir, root);
  if (!listing) return listing.error();
  return std::unique_ptr<pop3::Maildrop>(std::make_unique<MaildirDrop>(
      std::move(lock), std::move(dirfd), std::move(curfd), std::move(listing.value())));
}

}  // namespace apop::store
