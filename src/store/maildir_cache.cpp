#include "store/maildir_cache.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/posix_fd.hpp"
#include "store/dir_io.hpp"

namespace apop::store {

namespace {

constexpr std::string_view kMagic = "apopLST\n";
constexpr std::uint32_t kByteOrder = 0x01020304;
constexpr std::size_t kKeySize = 40;
constexpr std::size_t kHeaderSize = 8 + 4 + 4 + 4 + 4 + kKeySize + kKeySize + 8;
constexpr std::size_t kRecordSize = 16;
constexpr std::size_t kMaxName = 255;
constexpr std::size_t kMaxUidl = 70;

static_assert(kHeaderSize == 112);

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

template <typename T>
T get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

void put_key(std::string& out, const StatKey& k) {
  put(out, k.dev);
  put(out, k.ino);
  put(out, k.size);
  put(out, k.mtime_sec);
  put(out, k.mtime_nsec);
}

StatKey get_key(const char* p) {
  StatKey k;
  k.dev = get<std::uint64_t>(p);
  k.ino = get<std::uint64_t>(p + 8);
  k.size = get<std::int64_t>(p + 16);
  k.mtime_sec = get<std::int64_t>(p + 24);
  k.mtime_nsec = get<std::int64_t>(p + 32);
  return k;
}

Error bad(const char* what) { return make_error(Errc::invalid, std::string("cache: ") + what); }

bool valid_cached_name(std::string_view n) {
  if (n.empty() || n.size() > kMaxName || n.front() == '.') return false;
  return std::memchr(n.data(), '/', n.size()) == nullptr &&
         std::memchr(n.data(), '\0', n.size()) == nullptr;
}

bool valid_cached_uidl(std::string_view u) {
  if (u.empty() || u.size() > kMaxUidl) return false;
  for (const char c : u) {
    if (c < 0x21 || c > 0x7E) return false;
  }
  return true;
}

}  // namespace

StatKey stat_key(const struct stat& st) {
  StatKey k;
  k.dev = static_cast<std::uint64_t>(st.st_dev);
  k.ino = static_cast<std::uint64_t>(st.st_ino);
  k.size = static_cast<std::int64_t>(st.st_size);
  k.mtime_sec = static_cast<std::int64_t>(st.st_mtim.tv_sec);
  k.mtime_nsec = static_cast<std::int64_t>(st.st_mtim.tv_nsec);
  return k;
}

bool mtime_settled(const timespec& mtime, const timespec& now) {
  const std::int64_t window = kMaildirCacheDirtyWindow.count();
  // mtime + window <= now, in (sec, nsec).
  const std::int64_t sec = static_cast<std::int64_t>(mtime.tv_sec) + window;
  if (sec != static_cast<std::int64_t>(now.tv_sec))
    return sec < static_cast<std::int64_t>(now.tv_sec);
  return mtime.tv_nsec <= now.tv_nsec;
}

namespace {

// cache_checksum, fed in pieces: 8 bytes at a time, a multiply-xorshift mix
// (fast enough to be invisible next to reading the file; detects torn and
// damaged files). The total length is part of the seed.
class Checksum {
 public:
  explicit Checksum(std::size_t total) : h_(0x243F6A8885A308D3ull ^ total) {}
  void feed(std::string_view data) {
    while (!data.empty() && npend_ != 0) {
      pend_[npend_++] = data.front();
      data.remove_prefix(1);
      if (npend_ == 8) {
        mix(pend_);
        npend_ = 0;
      }
    }
    for (; data.size() >= 8; data.remove_prefix(8)) mix(data.data());
    for (const char c : data) pend_[npend_++] = c;
  }
  std::uint64_t finish() {
    std::uint64_t tail = 0;
    std::memcpy(&tail, pend_, npend_);
    std::uint64_t h = (h_ ^ tail ^ 0xFFull) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    return h;
  }

 private:
  void mix(const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h_ = (h_ ^ w) * 0x9E3779B97F4A7C15ull;
    h_ ^= h_ >> 29;
  }
  std::uint64_t h_;
  char pend_[8] = {};
  std::size_t npend_ = 0;
};

constexpr std::size_t kChunk = 256 * 1024;

// Encodes in pieces of about kChunk bytes passed to sink (false: stop).
// False when the sink refused, or the file would exceed kMaxMaildirCache.
bool encode_to(const StatKey& cur, const StatKey& uidl_map, bool clean, std::size_t count,
               const std::function<CacheRecord(std::size_t)>& record,
               const std::function<bool(std::string_view)>& sink) {
  std::size_t body = kHeaderSize + count * kRecordSize;
  for (std::size_t i = 0; i < count; ++i) {
    const CacheRecord r = record(i);
    body += r.name.size() + r.uidl.size();
  }
  if (body + 8 > kMaxMaildirCache) return false;
  Checksum sum(body);
  std::string out;
  out.reserve(kChunk + 1024);
  auto flush = [&]() {
    sum.feed(out);
    const bool ok = sink(out);
    out.clear();
    return ok;
  };
  out.append(kMagic);
  put(out, kByteOrder);
  put(out, kMaildirCacheVersion);
  put(out, static_cast<std::uint32_t>(clean ? 1 : 0));
  put(out, std::uint32_t{0});
  put_key(out, cur);
  put_key(out, uidl_map);
  put(out, static_cast<std::uint64_t>(count));
  for (std::size_t i = 0; i < count; ++i) {
    const CacheRecord r = record(i);
    put(out, r.size);
    put(out, static_cast<std::uint16_t>(r.name.size()));
    put(out, static_cast<std::uint16_t>(r.base_len));
    put(out, static_cast<std::uint8_t>(r.uidl.size()));
    out.append(3, '\0');
    if (out.size() >= kChunk && !flush()) return false;
  }
  for (std::size_t i = 0; i < count; ++i) {
    const CacheRecord r = record(i);
    out.append(r.name);
    out.append(r.uidl);
    if (out.size() >= kChunk && !flush()) return false;
  }
  if (!flush()) return false;
  put(out, sum.finish());
  return sink(out);
}

}  // namespace

std::uint64_t cache_checksum(std::string_view data) {
  Checksum c(data.size());
  c.feed(data);
  return c.finish();
}

std::string encode_maildir_cache(const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::span<const CacheRecord> records) {
  return encode_maildir_cache(cur, uidl_map, clean, records.size(),
                              [&records](std::size_t i) { return records[i]; });
}

std::string encode_maildir_cache(const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::size_t count,
                                 const std::function<CacheRecord(std::size_t)>& record) {
  std::string out;
  (void)encode_to(cur, uidl_map, clean, count, record, [&out](std::string_view piece) {
    out.append(piece);
    return true;
  });
  return out;
}

Result<MaildirCacheView> parse_maildir_cache(std::string_view data) {
  if (data.size() < kHeaderSize + 8) return bad("short file");
  const char* p = data.data();
  if (data.substr(0, kMagic.size()) != kMagic) return bad("not a cache file");
  if (get<std::uint32_t>(p + 8) != kByteOrder) return bad("other byte order");
  if (get<std::uint32_t>(p + 12) != kMaildirCacheVersion) return bad("other version");
  const std::uint32_t flags = get<std::uint32_t>(p + 16);
  if ((flags & ~1u) != 0 || get<std::uint32_t>(p + 20) != 0) return bad("unknown flags");
  const std::string_view body = data.substr(0, data.size() - 8);
  if (get<std::uint64_t>(data.data() + body.size()) != cache_checksum(body)) {
    return bad("checksum mismatch");
  }
  MaildirCacheView v;
  v.clean = (flags & 1u) != 0;
  v.cur = get_key(p + 24);
  v.uidl_map = get_key(p + 24 + kKeySize);
  const std::uint64_t count = get<std::uint64_t>(p + 24 + 2 * kKeySize);
  const std::size_t avail = body.size() - kHeaderSize;
  if (count > avail / kRecordSize) return bad("count beyond the file");
  v.count = static_cast<std::size_t>(count);
  v.table = body.substr(kHeaderSize, v.count * kRecordSize);
  const char* rec = p + kHeaderSize;
  std::size_t off = kHeaderSize + static_cast<std::size_t>(count) * kRecordSize;
  v.text = body.substr(off);
  for (std::size_t i = 0; i < count; ++i, rec += kRecordSize) {
    CacheRecord r;
    r.size = get<std::uint64_t>(rec);
    const std::size_t name_len = get<std::uint16_t>(rec + 8);
    r.base_len = get<std::uint16_t>(rec + 10);
    const std::size_t uidl_len = static_cast<unsigned char>(rec[12]);
    if (rec[13] != 0 || rec[14] != 0 || rec[15] != 0) return bad("bad record padding");
    if (name_len + uidl_len > body.size() - off) return bad("record beyond the file");
    r.name = body.substr(off, name_len);
    r.uidl = body.substr(off + name_len, uidl_len);
    off += name_len + uidl_len;
    if (!valid_cached_name(r.name)) return bad("bad file name");
    if (!valid_cached_uidl(r.uidl)) return bad("bad UIDL");
    if (r.base_len == 0 || r.base_len > name_len ||
        (r.base_len < name_len && r.name[r.base_len] != ':') ||
        r.name.substr(0, r.base_len).find(':') != std::string_view::npos) {
      return bad("bad base name length");
    }
  }
  if (off != body.size()) return bad("trailing bytes");
  return v;
}

CacheRecord MaildirCacheView::next(std::size_t i, std::size_t& text_off) const {
  const char* rec = table.data() + i * kRecordSize;
  CacheRecord r;
  r.size = get<std::uint64_t>(rec);
  const std::size_t name_len = get<std::uint16_t>(rec + 8);
  r.base_len = get<std::uint16_t>(rec + 10);
  const std::size_t uidl_len = static_cast<unsigned char>(rec[12]);
  r.name = text.substr(text_off, name_len);
  r.uidl = text.substr(text_off + name_len, uidl_len);
  text_off += name_len + uidl_len;
  return r;
}

std::vector<CacheRecord> MaildirCacheView::records() const {
  std::vector<CacheRecord> out;
  out.reserve(count);
  std::size_t off = 0;
  for (std::size_t i = 0; i < count; ++i) out.push_back(next(i, off));
  return out;
}

std::optional<std::string> read_maildir_cache(int dirfd) {
  const std::string name(kMaildirCacheFile);
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
      static_cast<std::uint64_t>(st.st_size) > kMaxMaildirCache) {
    return std::nullopt;
  }
  std::string buf(static_cast<std::size_t>(st.st_size), '\0');
  // An error, or a file shrunk meanwhile: whatever it is, not used.
  if (read_full(fd.get(), buf) != static_cast<ssize_t>(buf.size())) return std::nullopt;
  return buf;
}

namespace {

// tmp + rename around `fill` (which writes the content to the descriptor).
Result<void> write_cache_file(int dirfd, const std::function<bool(int)>& fill) {
  const std::string tmp(kMaildirCacheTmp);
  const std::string name(kMaildirCacheFile);
  UniqueFd fd(
      ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("create " + tmp, errno);
  errno = 0;
  const bool written = fill(fd.get());
  const int werr = errno;
  if (!written || fd.close_checked() != 0) {
    const int err = written ? errno : werr;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    if (err == 0) return bad("larger than the cache limit");
    return sys_error("write " + tmp, err);
  }
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    const int err = errno;
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return sys_error("rename " + tmp, err);
  }
  return {};
}

}  // namespace

Result<void> write_maildir_cache(int dirfd, std::string_view encoded) {
  if (encoded.size() > kMaxMaildirCache) return bad("too large to write");
  return write_cache_file(dirfd, [encoded](int fd) { return write_all(fd, encoded); });
}

Result<void> write_maildir_cache(int dirfd, const StatKey& cur, const StatKey& uidl_map, bool clean,
                                 std::size_t count,
                                 const std::function<CacheRecord(std::size_t)>& record) {
  return write_cache_file(dirfd, [&](int fd) {
    return encode_to(cur, uidl_map, clean, count, record,
                     [fd](std::string_view piece) { return write_all(fd, piece); });
  });
}

void remove_maildir_cache(int dirfd) {
  const std::string name(kMaildirCacheFile);
  ::unlinkat(dirfd, name.c_str(), 0);
}

}  // namespace apop::store
