// ~730 lines, one job (serving a Maildir): its listing and MaildirDrop share Entry and Listing.
#include "store/maildir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_cache.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"
#include "store/update_journal.hpp"

namespace apop::store {

namespace fs = std::filesystem;

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

// CRLF size of a file by reading it. nullopt + errno ENOENT when it vanished.
Result<std::optional<std::uint64_t>> count_crlf_size(int dirfd, const std::string& name) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::optional<std::uint64_t>{};
    return sys_error("open cur/" + name, errno);
  }
  pop3::CrlfSizer sizer;
  std::vector<char> buf(limits::kBodyChunk);
  for (;;) {
    const ssize_t n = read_retry(fd.get(), buf.data(), buf.size());
    if (n < 0) return sys_error("read cur/" + name, errno);
    if (n == 0) break;
    sizer.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
  }
  return std::optional<std::uint64_t>{sizer.size()};
}

// The names are views: into the listing's strings, the cache file's bytes or
// a renamed name, all owned by the maildrop (Listing/MaildirDrop storage) and
// never moved; one allocation per message less on a big login.
struct Entry {
  std::string_view name;  // file name in cur/ as last seen (not NUL-terminated)
  // Length of the base name (the part before ':'; a rename by another client
  // changes the flags only, so the base stays a prefix of name).
  std::size_t base_len = 0;
  std::string_view base() const { return name.substr(0, base_len); }
  std::string path() const { return std::string(name); }  // for the *at() calls
};

// What the open of a maildrop found, and what a later cache write needs.
struct Listing {
  std::vector<Entry> entries;
  std::vector<pop3::MessageInfo> infos;
  // The UIDLs are the ones a fresh listing of any subset would give (no
  // duplicate needed a hash-derived UIDL) and nothing was cut at
  // kMaxMessages: a cache written after UPDATE may hold the survivors.
  bool subset_stable = false;
  // The key of apop-uidl at the open (StatKey{} when absent); known = false
  // when it could not be stat()ed (then no cache is read or written).
  StatKey map_key;
  bool map_known = false;
  // What the entries' names point into.
  std::vector<std::string> name_store;
  std::string cache_store;
};

// A set of string views (the strings outlive it), open addressing: one
// allocation for a big maildrop's 100,000 UIDLs or names instead of a node
// each (std::unordered_set cost a third of a first login's CPU).
class ViewSet {
 public:
  explicit ViewSet(std::size_t expected) { rehash(expected * 2); }
  // False when v was there already. v must not be a null view.
  bool insert(std::string_view v) {
    const auto h = hash(v);
    Slot* s = find(v, h);
    if (s->used()) return false;
    *s = Slot{v.data(), static_cast<std::uint32_t>(v.size()), h};
    if (++size_ * 2 > slots_.size()) rehash(slots_.size() * 2);
    return true;
  }
  bool contains(std::string_view v) const {
    return const_cast<ViewSet*>(this)->find(v, hash(v))->used();
  }
  std::size_t size() const { return size_; }

 private:
  struct Slot {  // 16 bytes; used when data != nullptr
    const char* data = nullptr;
    std::uint32_t len = 0;
    std::uint32_t hash = 0;
    std::string_view view() const { return {data, len}; }
    bool used() const { return data != nullptr; }
  };
  static std::uint32_t hash(std::string_view v) {
    return static_cast<std::uint32_t>(std::hash<std::string_view>{}(v));
  }
  Slot* find(std::string_view v, std::uint32_t h) {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = h & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (!s.used() || (s.hash == h && s.view() == v)) return &s;
    }
  }
  void rehash(std::size_t want) {
    std::size_t cap = 16;
    while (cap < want) cap <<= 1;
    std::vector<Slot> old = std::exchange(slots_, std::vector<Slot>(cap));
    for (const Slot& s : old) {
      if (s.used()) *find(s.view(), s.hash) = s;
    }
  }
  std::vector<Slot> slots_;
  std::size_t size_ = 0;
};

// CLOCK_REALTIME, the clock file timestamps come from.
timespec realtime_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

// Writes the cache of entries[i] for the indexes in `keep` (all when
// empty), streamed: no copy of the list or of the file is made.
Result<void> write_listing(int dirfd, const StatKey& cur, const StatKey& map, bool clean,
                           const std::vector<Entry>& entries,
                           const std::vector<pop3::MessageInfo>& infos,
                           const std::vector<std::size_t>& keep = {}) {
  const std::size_t n = keep.empty() ? entries.size() : keep.size();
  return write_maildir_cache(dirfd, cur, map, clean, n, [&](std::size_t k) {
    const std::size_t i = keep.empty() ? k : keep[k];
    return CacheRecord{entries[i].name, entries[i].base_len, infos[i].size, infos[i].uidl};
  });
}

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
      // The commit point. On failure nothing was removed.
      if (auto w = write_update_journal(dir_.get(), journal); !w) return w.error();
      if (auto a = apply_update_journal(cur_.get(), journal); !a) {
        // The journal stays: the next open of this maildrop finishes it.
        note(a.error());
      } else {
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

// Orders the files of cur/ (`all`, as listed) into entries with sizes and
// unique UIDLs.
Result<Listing> scan_cur(int curfd, std::vector<std::string> all, const UidlMap& pinned) {
  // Sorted by a small key (moving whole entries with their strings around
  // costs more than the rest of the scan on big maildrops).
  struct Item {
    std::string_view base;  // into the name
    std::uint64_t time = 0;
    std::uint64_t size = 0;
    std::size_t name = 0;  // index into all
  };
  std::vector<Item> items;
  items.reserve(all.size());
  for (std::size_t n = 0; n < all.size(); ++n) {
    const std::string& name = all[n];
    Item it;
    it.name = n;
    it.base = maildir_base_name(name);
    it.time = maildir_name_time(it.base);
    if (auto w = maildir_name_field(it.base, 'W')) {
      it.size = *w;
    } else {
      auto counted = count_crlf_size(curfd, name);
      if (!counted) return counted.error();
      if (!counted.value()) continue;  // vanished
      it.size = *counted.value();
    }
    items.push_back(it);
  }
  std::sort(items.begin(), items.end(), [&all](const Item& a, const Item& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.base != b.base) return maildir_name_less(a.base, b.base);
    return all[a.name] < all[b.name];
  });
  Listing out;
  out.subset_stable = true;
  if (items.size() > limits::kMaxMessages) {
    items.resize(limits::kMaxMessages);
    out.subset_stable = false;
  }

  // UIDLs: pinned ones first (they are what clients already saw), then the
  // defaults; the first file (in list order) with a given UIDL keeps it;
  // later ones get the first free of a few hash-derived candidates. The set
  // holds views of the UIDLs in `infos` (sized once, never moved).
  std::vector<pop3::MessageInfo>& infos = out.infos;
  infos.resize(items.size());
  ViewSet taken(items.size());
  std::vector<std::size_t> dups;
  for (const bool pinned_pass : {true, false}) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      auto p = pinned.by_base.empty() ? pinned.by_base.end()
                                      : pinned.by_base.find(std::string(items[i].base));
      if ((p != pinned.by_base.end()) != pinned_pass) continue;
      infos[i].size = items[i].size;
      infos[i].uidl = pinned_pass ? p->second : maildir_uidl(items[i].base);
      if (!taken.insert(infos[i].uidl)) dups.push_back(i);
    }
  }
  if (!dups.empty()) out.subset_stable = false;
  for (const std::size_t i : dups) {
    const std::string& name = all[items[i].name];
    std::string candidate = hashed_uidl(items[i].base);
    if (taken.contains(candidate)) candidate = hashed_uidl(name);
    for (unsigned k = 1; taken.contains(candidate); ++k) {
      candidate = hashed_uidl(name + "#" + std::to_string(k));
    }
    infos[i].uidl = std::move(candidate);
    taken.insert(infos[i].uidl);
  }

  std::vector<Entry>& entries = out.entries;
  entries.resize(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    entries[i].base_len = items[i].base.size();
    entries[i].name = all[items[i].name];
  }
  out.name_store = std::move(all);  // the views stay valid: the strings do not move
  return out;
}

// The listing a cache holds, as entries and infos; the names point into
// `buf` (the cache file's bytes), which the listing then owns.
Listing from_cache(const MaildirCacheView& view, std::string&& buf) {
  Listing out;
  out.subset_stable = true;  // only such listings are cached
  out.entries.resize(view.count);
  out.infos.resize(view.count);
  std::size_t off = 0;
  for (std::size_t i = 0; i < view.count; ++i) {
    const CacheRecord r = view.next(i, off);
    out.entries[i].name = r.name;
    out.entries[i].base_len = r.base_len;
    out.infos[i].size = r.size;
    out.infos[i].uidl.assign(r.uidl);
  }
  out.cache_store = std::move(buf);  // a heap buffer: the views stay valid
  return out;
}

// True when `names` (a listing of cur/) are exactly the cached file names.
bool same_files(const std::vector<std::string>& names, const MaildirCacheView& view) {
  if (names.size() != view.count) return false;
  ViewSet cached(view.count);
  std::size_t off = 0;
  for (std::size_t i = 0; i < view.count; ++i) cached.insert(view.next(i, off).name);
  if (cached.size() != names.size()) return false;
  for (const auto& n : names) {
    if (!cached.contains(n)) return false;
  }
  return true;
}

// Which of apop's own files the Maildir root holds, from one listing of it
// (two getdents calls instead of a failed open or stat per file).
// `known` false: the listing failed, so each file is looked for.
struct RootFiles {
  bool known = false;
  bool journal = false;   // kUpdateJournalFile or kUpdateJournalTmp
  bool uidl_map = false;  // kUidlMapFile
  bool cache = false;     // kMaildirCacheFile
  bool maybe(bool seen) const { return !known || seen; }
};

RootFiles list_root(int dirfd) {
  RootFiles r;
  const int err = for_each_dir_entry(dirfd, [&r](std::string_view name, unsigned char) {
    if (!name.starts_with("apop-")) return;
    if (name == kUpdateJournalFile || name == kUpdateJournalTmp) r.journal = true;
    if (name == kUidlMapFile) r.uidl_map = true;
    if (name == kMaildirCacheFile) r.cache = true;
  });
  r.known = err == 0;
  return r;
}

// The listing of cur/ for a session: from the cache MAILDIR/apop-cache when
// it is valid for cur/ as it is now, else from the directory (then the cache
// is rewritten for big maildrops). See store/maildir_cache.hpp for the rules.
// `root` says which of the cache and the UIDL map may exist.
Result<Listing> list_maildrop(int dirfd, int curfd, const fs::path& dir, const RootFiles& root) {
  // The clock first, then the stats, then anything read from cur/.
  const timespec now = realtime_now();
  struct stat cur_st {};
  if (::fstat(curfd, &cur_st) != 0) return sys_error("stat " + dir.string() + "/cur", errno);
  const StatKey cur_key = stat_key(cur_st);
  StatKey map_key;
  bool map_known = true;
  bool map_settled = true;
  {
    const std::string map_name(kUidlMapFile);
    struct stat st {};
    if (!root.maybe(root.uidl_map)) {
      // Absent when the root was listed: map_key stays the "no file" key.
    } else if (::fstatat(dirfd, map_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      map_key = stat_key(st);
      map_settled = mtime_settled(st.st_mtim, now);
    } else if (errno != ENOENT) {
      map_known = false;
    }
  }
  const bool settled = map_settled && mtime_settled(cur_st.st_mtim, now);

  std::optional<std::string> buf;
  std::optional<MaildirCacheView> view;
  if (map_known && root.maybe(root.cache)) buf = read_maildir_cache(dirfd);
  if (buf) {
    auto parsed = parse_maildir_cache(*buf);
    if (parsed && parsed->cur == cur_key && parsed->uidl_map == map_key) {
      view = std::move(parsed.value());
    }
  }
  if (view && view->clean) {
    Listing l = from_cache(*view, std::move(*buf));
    l.map_key = map_key;
    l.map_known = true;
    return l;
  }

  // Room for the names: the cached count, else a guess from the directory's
  // size (tmpfs counts 20 bytes an entry, ext4 about 8 + the name rounded up;
  // reserved but untouched memory costs nothing).
  const std::size_t expect =
      view ? view->count
           : static_cast<std::size_t>(std::min<std::int64_t>(cur_st.st_size / 16, 1 << 22));
  auto names = list_files(curfd, "cur/", expect);
  if (!names) return names.error();
  if (view && same_files(names.value(), *view)) {
    // A dirty cache that names exactly what is there: its order, sizes and
    // UIDLs are what a rebuild would give. Clean from now on if cur/ has
    // settled (this listing came after the stat).
    Listing l = from_cache(*view, std::move(*buf));
    l.map_key = map_key;
    l.map_known = true;
    if (settled) {
      (void)write_listing(dirfd, cur_key, map_key, true, l.entries, l.infos);
    }
    return l;
  }

  // UIDLs pinned by a migration: better no session than changed UIDLs
  // (every client would download everything again).
  auto pinned = root.maybe(root.uidl_map) ? load_uidl_map(dir) : Result<UidlMap>(UidlMap{});
  if (!pinned) return make_error(Errc::temporary, "UIDL map: " + pinned.error().message);
  auto scanned = scan_cur(curfd, std::move(names.value()), *pinned);
  if (!scanned) return scanned.error();
  Listing& l = scanned.value();
  l.map_key = map_key;
  l.map_known = map_known;
  if (map_known && l.subset_stable && l.entries.size() >= kMaildirCacheMinMessages) {
    if (!write_listing(dirfd, cur_key, map_key, settled, l.entries, l.infos)) {
      remove_maildir_cache(dirfd);
    }
  } else if (buf) {
    remove_maildir_cache(dirfd);  // stale: the maildrop is small now (or not cacheable)
  }
  return std::move(l);
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

Result<std::unique_ptr<pop3::Maildrop>> MaildirOpener::open(std::string_view user) {
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
    if (auto r = recover_update_journal(dirfd.get(), curfd.get()); !r) return r.error();
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
