// The listing of a Maildir's cur/ for a session (maildir_internal.hpp): from
// the listing cache when it is valid, else from the directory (sizes, UIDLs,
// pinned UIDLs of apop-uidl), and the cache written back for big maildrops.
#include "store/maildir_internal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/limits.hpp"
#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_cache.hpp"
#include "store/maildir_name.hpp"
#include "store/uidl_map.hpp"
#include "store/update_journal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using namespace maildir_detail;

namespace {

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

}  // namespace

// Writes the cache of entries[i] for the indexes in `keep` (all when
// empty), streamed: no copy of the list or of the file is made.
Result<void> maildir_detail::write_listing(int dirfd, const StatKey& cur, const StatKey& map,
                                           bool clean, const std::vector<Entry>& entries,
                                           const std::vector<pop3::MessageInfo>& infos,
                                           const std::vector<std::size_t>& keep) {
  const std::size_t n = keep.empty() ? entries.size() : keep.size();
  return write_maildir_cache(dirfd, cur, map, clean, n, [&](std::size_t k) {
    const std::size_t i = keep.empty() ? k : keep[k];
    return CacheRecord{entries[i].name, entries[i].base_len, infos[i].size, infos[i].uidl};
  });
}

RootFiles maildir_detail::list_root(int dirfd) {
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

Result<Listing> maildir_detail::list_maildrop(int dirfd, int curfd, const fs::path& dir,
                                              const RootFiles& root) {
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

}  // namespace apop::store
