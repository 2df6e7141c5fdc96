// The Maildir listing cache: MAILDIR/apop-cache.
//
// A later login on a big Maildir would otherwise read all of cur/ (one
// getdents entry per message), parse, sort and build the UIDLs again. The
// cache holds the result of that work -- the ordered message file names with
// their CRLF sizes and session UIDLs -- keyed on the identity of cur/ (device,
// inode, size, mtime with nanoseconds) and of the UIDL map file apop-uidl
// (absent: all zero). MaildirOpener::open (store/maildir.hpp) uses it as
// follows, under the maildrop lock, after the update-journal recovery and the
// new/ -> cur/ moves (new/ is always listed: an empty directory is cheap, and
// any file moved out of it changes cur/):
//  - It takes the clock, then fstat()s cur/ and stats apop-uidl, and only
//    then reads anything from cur/.
//  - Keys equal and the cache "clean" -> the listing is the cached one; cur/
//    is not read at all.
//  - Keys equal but the cache "dirty" -> cur/ is listed; the cached listing
//    is used when it names exactly the files present, else rebuilt.
//  - Otherwise (no cache, other keys, a damaged or foreign file) -> rebuilt
//    from the directory as without a cache.
// A cache is "clean" when the mtimes of cur/ and apop-uidl were older than
// kMaildirCacheDirtyWindow when they were taken (the clock is read
// before the stat): any later change of the directory then gets a newer
// mtime, so equal keys prove that cur/ has not changed. A younger mtime could
// be shared by a change made in the same timestamp tick just after the stat
// (Dovecot's "dirty" maildir sync, same window).
//
// Written (only for maildrops of kMaildirCacheMinMessages or more)
// after a rebuild, after a dirty cache was confirmed and is clean now, and
// after an UPDATE that removed messages (then with the key of cur/ after the
// unlinks, nearly always dirty). Written to apop-cache.tmp and renamed over
// apop-cache; never fsynced: a cache lost or torn by a crash fails its
// checksum or key and is rebuilt. Mode 0600.
//
// File format, version 1, host byte order (a cache from another
// architecture fails the byte-order mark and is rebuilt):
//   header (112 bytes):
//     8  magic "apopLST\n"
//     4  byte-order mark 0x01020304      4  version (1)
//     4  flags (bit 0: clean)            4  reserved (0)
//     40 key of cur/: dev, ino, size, mtime sec, mtime nsec (u64/i64 each)
//     40 key of apop-uidl (all zero when it is absent)
//     8  count of messages
//   count records of 16 bytes: u64 CRLF size, u16 name length (1..255),
//     u16 base name length (the name up to ':'), u8 UIDL length (1..70),
//     3 zero bytes
//   the names and UIDLs, each record's name then its UIDL, without separators
//   u64 checksum of everything before it (cache_checksum)
// The message order is the session's: message number i+1 is record i.
// Anything else (size, lengths, a name with '/' or NUL or a leading '.', a
// UIDL outside 0x21..0x7E, the checksum) makes the whole file invalid.
//
// Thread-safety: the functions hold no state; callers hold the maildrop lock.
#pragma once

#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace apop::store {

inline constexpr std::string_view kMaildirCacheFile = "apop-cache";
inline constexpr std::string_view kMaildirCacheTmp = "apop-cache.tmp";
inline constexpr std::uint32_t kMaildirCacheVersion = 1;

// The cache's limits live here, next to it (not protocol limits, no RFC):
// - It is written only for maildrops of at least kMaildirCacheMinMessages
//   messages: below that a listing of cur/ costs about what reading the cache
//   costs (one open and one read), so a cache would only add a file write per
//   change (measured: docs/performance.md, "Big mailboxes").
inline constexpr std::size_t kMaildirCacheMinMessages = 1000;
// - A cache file larger than this is ignored and none is written: 256 MiB
//   holds about 2 million messages' names, sizes and UIDLs; beyond that the
//   listing is read from the directory as without a cache.
inline constexpr std::uint64_t kMaxMaildirCache = 256ull * 1024 * 1024;
// - How old (against the clock) the mtime of cur/ (and apop-uidl) must be for
//   the cache to be trusted on its key alone: a change of the directory in
//   the same timestamp tick as the cache's stat would leave the mtime as it
//   was. 2 s covers 1-second (ext3, many NFS servers) and 2-second (FAT)
//   mtimes and the kernel's coarse clock tick; Dovecot uses the same rule
//   (a maildir sync is "dirty" while the mtime is within MAILDIR_SYNC_SECS
//   of now). A younger mtime makes a "dirty" cache, used only after cur/ is
//   listed and holds exactly the cached names.
inline constexpr std::chrono::seconds kMaildirCacheDirtyWindow{2};

// The identity of a file or directory as far as the cache is concerned.
struct StatKey {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t size = 0;
  std::int64_t mtime_sec = 0;
  std::int64_t mtime_nsec = 0;
  bool operator==(const StatKey&) const = default;
};
StatKey stat_key(const struct stat& st);

// True when `mtime` lies kMaildirCacheDirtyWindow or more before
// `now` (both CLOCK_REALTIME).
bool mtime_settled(const timespec& mtime, const timespec& now);

struct CacheRecord {
  std::string_view name;  // file name in cur/
  std::size_t base_len = 0;
  std::uint64_t size = 0;  // CRLF size
  std::string_view uidl;
};

// A parsed (and fully validated) cache; views into the parsed buffer. The
// records are decoded in order with next() (no per-record allocation: a
// login on 100,000 messages should not pay for a second copy of the list).
struct MaildirCacheView {
  StatKey cur;
  StatKey uidl_map;
  bool clean = false;
  std::size_t count = 0;
  std::string_view table;  // count records of 16 bytes
  std::string_view text;   // the names and UIDLs

  // Record i, whose name starts at text_off in `text`; advances text_off to
  // the next record's. Call for i = 0, 1, ... count-1 in order, starting
  // with text_off = 0.
  CacheRecord next(std::size_t i, std::size_t& text_off) const;
  // All records (convenience for tests and small users).
  std::vector<CacheRecord> records() const;
};

// Pure encoding and strict parsing (exposed for tests and fuzzing). parse
// returns Errc::invalid for anything encode would not produce (and for a
// checksum mismatch); the views point into `data`.
std::string encode_maildir_cache(const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::span<const CacheRecord> records);
// The same for `count` records produced by record(i) (called three times
// per record, in order; no copy of the list is made).
std::string encode_maildir_cache(const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::size_t count,
                                 const std::function<CacheRecord(std::size_t)>& record);
Result<MaildirCacheView> parse_maildir_cache(std::string_view data);

// 64-bit checksum used by the format (not cryptographic: it catches torn and
// damaged files, not malice -- whoever can write the Maildir owns the mail).
std::uint64_t cache_checksum(std::string_view data);

// Reads MAILDIR/apop-cache into `buf`. nullopt when absent, unreadable, not
// a regular file, or larger than kMaxMaildirCache (a cache never
// fails a login).
std::optional<std::string> read_maildir_cache(int dirfd);

// Writes MAILDIR/apop-cache atomically (tmp + rename, no fsync). Errors are
// returned for tests and logs only; callers ignore them (the cache is an
// optimisation). The tmp file is removed on failure.
Result<void> write_maildir_cache(int dirfd, std::string_view encoded);
// The same, encoding `count` records produced by record(i) (called three
// times per record, in order) in 256 KiB pieces: no copy of the list or of
// the file is held in memory.
Result<void> write_maildir_cache(int dirfd, const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::size_t count,
                                 const std::function<CacheRecord(std::size_t)>& record);

// Removes MAILDIR/apop-cache (a stale cache of a maildrop that became small).
void remove_maildir_cache(int dirfd);

}  // namespace apop::store
