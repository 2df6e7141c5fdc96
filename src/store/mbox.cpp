#include "store/mbox.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <thread>
#include <unordered_set>
#include <utility>

#include "pop3/crlf.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

Error sys_error(const std::string& what, int err) {
  return make_error(Errc::temporary, what + ": " + std::strerror(err));
}

int fsync_retry(int fd) {
  for (;;) {
    const int r = ::fsync(fd);
    if (r == 0 || errno != EINTR) return r;
  }
}

ssize_t pread_retry(int fd, char* buf, std::size_t n, off_t off) {
  for (;;) {
    const ssize_t r = ::pread(fd, buf, n, off);
    if (r >= 0 || errno != EINTR) return r;
  }
}

// Incremental SHA-1 (libcrypto's default provider always has it).
class Sha1 {
 public:
  Sha1() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha1(), nullptr) != 1) std::abort();
  }
  ~Sha1() { EVP_MD_CTX_free(ctx_); }
  Sha1(const Sha1&) = delete;
  Sha1& operator=(const Sha1&) = delete;
  void update(std::string_view s) {
    if (!s.empty() && EVP_DigestUpdate(ctx_, s.data(), s.size()) != 1) std::abort();
  }
  // 40 lower-case hex digits.
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_, md, &len) != 1 || len < 20) std::abort();
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < 20; ++i) {
      out += kHex[md[i] >> 4];
      out += kHex[md[i] & 0xF];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha1_hex(std::string_view s) {
  Sha1 h;
  h.update(s);
  return h.hex();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Header fields that mail readers and servers add or rewrite in mbox files;
// left out of the header UIDL so that reading the mailbox with mutt does not
// make POP3 clients download it again.
constexpr std::array<std::string_view, 11> kVolatileHeaders = {
    "Status", "X-Status", "X-Keywords",     "X-IMAP",           "X-IMAPbase",       "X-UID",
    "X-UIDL", "Lines",    "Content-Length", "X-Mozilla-Status", "X-Mozilla-Status2"};

bool volatile_header(std::string_view name) {
  return std::any_of(kVolatileHeaders.begin(), kVolatileHeaders.end(),
                     [&](std::string_view v) { return iequals(v, name); });
}

// Calls f(name, raw_field) for each header field of the header block at the
// start of `message` (raw_field: the field's lines including their LFs).
template <typename F>
void for_each_header(std::string_view message, F&& f) {
  std::size_t pos = 0;
  while (pos < message.size()) {
    if (message[pos] == '\n' || message.substr(pos, 2) == "\r\n") return;  // end of header
    // A field: one line plus continuation lines (starting with SP or HTAB).
    std::size_t end = pos;
    for (;;) {
      const std::size_t nl = message.find('\n', end);
      end = nl == std::string_view::npos ? message.size() : nl + 1;
      if (end >= message.size() || (message[end] != ' ' && message[end] != '\t')) break;
    }
    const std::string_view field = message.substr(pos, end - pos);
    const std::size_t colon = field.find(':');
    const std::size_t nl = field.find('\n');
    if (colon == std::string_view::npos || (nl != std::string_view::npos && colon > nl)) {
      return;  // not a header field: the header ends here (a malformed message)
    }
    std::string_view name = field.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    f(name, field);
    pos = end;
  }
}

// The From line's date, "From SENDER Www Mmm dd hh:mm:ss yyyy[ ...]", as
// local time. 0 when unreadable.
std::int64_t from_line_time(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  // Find "Www Mmm " after the sender: try each space-separated position.
  static constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed",
                                                            "Thu", "Fri", "Sat"};
  for (std::size_t sp = line.find(' ', 5); sp != std::string_view::npos;
       sp = line.find(' ', sp + 1)) {
    const std::string_view rest = line.substr(sp + 1);
    if (rest.size() < 24 || rest[3] != ' ') continue;
    if (std::find(kDays.begin(), kDays.end(), rest.substr(0, 3)) == kDays.end()) continue;
    std::string text(rest.substr(4));
    std::tm tm{};
    const char* p = ::strptime(text.c_str(), "%b %d %H:%M:%S %Y", &tm);
    if (p == nullptr) continue;
    tm.tm_isdst = -1;
    const std::time_t t = std::mktime(&tm);
    return t == static_cast<std::time_t>(-1) ? 0 : static_cast<std::int64_t>(t);
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------
// Parsing.

Result<std::vector<MboxSpan>> parse_mbox(std::string_view data) {
  std::vector<MboxSpan> spans;
  std::size_t first = 0;
  while (first < data.size() && data[first] == '\n') ++first;
  if (first == data.size()) return spans;  // empty, or only empty lines
  if (data.substr(first, 5) != "From ") {
    return make_error(Errc::invalid, "not an mbox file: it does not begin with a \"From \" line");
  }
  // Message starts: "From " at `first`, and after every "\n\n".
  std::vector<std::size_t> starts{first};
  for (std::size_t p = data.find("\n\nFrom ", first); p != std::string_view::npos;
       p = data.find("\n\nFrom ", p + 1)) {
    starts.push_back(p + 2);
  }
  spans.reserve(starts.size());
  for (std::size_t i = 0; i < starts.size(); ++i) {
    MboxSpan s;
    s.start = starts[i];
    s.next = i + 1 < starts.size() ? starts[i + 1] : data.size();
    const std::size_t nl = data.find('\n', s.start);
    s.body = nl == std::string_view::npos || nl >= s.next ? s.next : nl + 1;
    s.end = s.next;
    // The separator: one LF of the "\n\n" before the next "From " line, or of
    // a trailing "\n\n" at the end of the file.
    if (s.end >= s.body + 1 && s.end >= 2 && data[s.end - 1] == '\n' && data[s.end - 2] == '\n') {
      --s.end;
    }
    spans.push_back(s);
  }
  return spans;
}

std::optional<std::string> mbox_header_value(std::string_view message, std::string_view name) {
  std::optional<std::string> out;
  for_each_header(message, [&](std::string_view n, std::string_view field) {
    if (out || !iequals(n, name)) return;
    std::string_view v = field.substr(field.find(':') + 1);
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!v.empty() && blank(v.front())) v.remove_prefix(1);
    while (!v.empty() && blank(v.back())) v.remove_suffix(1);
    out = std::string(v);
  });
  return out;
}

MboxMessageFacts mbox_message_facts(std::string_view data, const MboxSpan& span) {
  MboxMessageFacts f;
  const std::string_view from_line = data.substr(span.start, span.body - span.start);
  const std::string_view body = data.substr(span.body, span.end - span.body);
  f.size = pop3::crlf_size(body);
  f.body_digest = sha1_hex(body);
  if (auto x = mbox_header_value(body, "X-UIDL"); x && valid_uidl(*x)) f.x_uidl = *x;
  Sha1 h;
  h.update(from_line);
  for_each_header(body, [&](std::string_view name, std::string_view field) {
    if (!volatile_header(name)) h.update(field);
  });
  f.header_uidl = "M" + h.hex();
  f.delivered = from_line_time(from_line);
  return f;
}

// ---------------------------------------------------------------------------
// Locking.

namespace {

void backoff(int attempt) {
  const int ms = attempt < 5 ? 10 << attempt : 200;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 200)));
}

// A dotlock is stale when older than `stale`, or when it names (as procmail
// and liblockfile write it) the PID of a process that no longer exists.
bool dotlock_stale(const std::string& path, const struct stat& st, std::chrono::seconds stale) {
  const std::time_t now = std::time(nullptr);
  if (now - st.st_mtime > static_cast<std::time_t>(stale.count())) return true;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) return false;
  char buf[32] = {};
  const ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return false;
  char* endp = nullptr;
  const long pid = std::strtol(buf, &endp, 10);
  if (pid <= 0 || endp == buf || (*endp != '\n' && *endp != '\0')) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::string dotlock_private_name(const std::string& dotlock, long pid, unsigned n) {
  return dotlock + "." + std::to_string(pid) + "." + std::to_string(n) + ".apop";
}

Result<std::unique_ptr<MboxLock>> MboxLock::acquire(const fs::path& file, int fd, bool write,
                                                    const MboxLockOptions& opts) {
  std::unique_ptr<MboxLock> lock(new MboxLock());
  const auto deadline = Clock::now() + opts.lock_timeout;
  const std::string dot = file.string() + ".lock";
  for (int attempt = 0;; ++attempt) {
    // The dotlock appears with our PID already in it: written to a private
    // file first, then link()ed to FILE.lock (as liblockfile does). An
    // O_EXCL create followed by a write left an empty dotlock when the
    // process died in between, which no one can tell from a live one until
    // it is `dotlock_stale` old (found by a SIGKILL test under ASan).
    // The private file is created exclusively (O_EXCL, no symlink followed):
    // in a directory others can write, a hard link or symlink planted under
    // its name must not make us truncate or write the file it points to
    // (issue 17). A name that exists is someone else's: the next one is tried.
    int err = 0;
    bool created = false;
    std::string mine;
    for (unsigned n = 0; n < kDotlockPrivateNames; ++n) {
      mine = dotlock_private_name(dot, ::getpid(), n);
      UniqueFd d(::open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
      if (!d) {
        err = errno;
        if (err == EEXIST) continue;
        break;
      }
      created = true;
      err = 0;
      if (!write_all(d.get(), std::to_string(::getpid()) + "\n") || d.close_checked() != 0) {
        err = errno;
      } else if (::link(mine.c_str(), dot.c_str()) != 0) {
        err = errno;
      }
      ::unlink(mine.c_str());
      break;
    }
    if (!created && err == EEXIST) {
      return make_error(Errc::temporary, "cannot create a private dotlock file for " + dot +
                                             ": the " + std::to_string(kDotlockPrivateNames) +
                                             " names " + dotlock_private_name(dot, ::getpid(), 0) +
                                             " ... exist already (planted by someone else?)");
    }
    if (err == 0) {
      lock->dotlock_ = dot;
      break;
    }
    if (err == EACCES || err == EPERM || err == EROFS) break;  // fcntl lock only
    if (err != EEXIST) return sys_error("create dotlock " + dot, err);
    struct stat st {};
    if (::lstat(dot.c_str(), &st) == 0 && dotlock_stale(dot, st, opts.dotlock_stale)) {
      // Remove it only if it is still the same file (narrows the race with
      // another process that removed it and created its own meanwhile).
      struct stat again {};
      if (::lstat(dot.c_str(), &again) == 0 && again.st_ino == st.st_ino &&
          again.st_mtime == st.st_mtime) {
        ::unlink(dot.c_str());
      }
      continue;
    }
    if (Clock::now() >= deadline) {
      return make_error(Errc::in_use, "timed out waiting for the dotlock " + dot);
    }
    backoff(attempt);
  }
  for (int attempt = 0;; ++attempt) {
    struct flock fl {};
    fl.l_type = write ? F_WRLCK : F_RDLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) break;
    const int err = errno;
    if (err != EACCES && err != EAGAIN && err != EINTR) {
      return sys_error("fcntl lock " + file.string(), err);
    }
    if (Clock::now() >= deadline) {
      return make_error(Errc::in_use, "timed out waiting for the fcntl lock on " + file.string());
    }
    backoff(attempt);
  }
  lock->fd_ = fd;
  return lock;
}

MboxLock::~MboxLock() {
  if (fd_ >= 0) {
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    (void)::fcntl(fd_, F_OFD_SETLK, &fl);
  }
  if (!dotlock_.empty()) ::unlink(dotlock_.c_str());
}

// ---------------------------------------------------------------------------
// Serving.

namespace {

// A read-only mapping of a whole file (empty files map to an empty view).
class Mapping {
 public:
  static Result<Mapping> map(int fd, std::uint64_t size, const std::string& label) {
    Mapping m;
    if (size == 0) return m;
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return sys_error("mmap " + label, errno);
    m.data_ = static_cast<const char*>(p);
    m.size_ = size;
    return m;
  }
  Mapping() = default;
  Mapping(Mapping&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&&) = delete;
  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  }
  std::string_view view() const { return {data_, size_}; }

 private:
  const char* data_ = nullptr;
  std::size_t size_ = 0;
};

struct Snapshot {
  MboxSpan span;
  std::string from_line;
  std::string body_digest;
};

// Reads [body, end) of one message from the session's descriptor and checks
// its digest when the last byte has been read.
class MboxSource final : public pop3::ByteSource {
 public:
  MboxSource(int fd, const Snapshot& s) : fd_(fd), pos_(s.span.body), end_(s.span.end), snap_(s) {}
  Result<std::size_t> read(std::span<char> buf) override {
    if (buf.empty()) return std::size_t{0};
    if (pos_ >= end_) {
      if (!checked_) {
        checked_ = true;
        if (hash_.hex() != snap_.body_digest) {
          return make_error(Errc::temporary,
                            "mbox changed under the session: message no longer as listed");
        }
      }
      return std::size_t{0};
    }
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), end_ - pos_));
    const ssize_t n = pread_retry(fd_, buf.data(), want, static_cast<off_t>(pos_));
    if (n < 0) return sys_error("read mbox", errno);
    if (n == 0) return make_error(Errc::temporary, "mbox shrank under the session");
    hash_.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    pos_ += static_cast<std::uint64_t>(n);
    return static_cast<std::size_t>(n);
  }

 private:
  int fd_;
  std::uint64_t pos_, end_;
  const Snapshot& snap_;
  Sha1 hash_;
  bool checked_ = false;
};

// Open file descriptor of the mbox, read-write when permitted.
struct OpenedMbox {
  UniqueFd fd;
  bool writable = false;
};

Result<std::optional<OpenedMbox>> open_existing(const fs::path& file) {
  OpenedMbox o;
  o.fd.reset(::open(file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
  o.writable = static_cast<bool>(o.fd);
  if (!o.fd && (errno == EACCES || errno == EROFS || errno == EPERM)) {
    o.fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
  }
  if (!o.fd) {
    if (errno == ENOENT) return std::optional<OpenedMbox>{};
    return sys_error("open " + file.string(), errno);
  }
  struct stat st {};
  if (::fstat(o.fd.get(), &st) != 0) return sys_error("stat " + file.string(), errno);
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::temporary, file.string() + ": not a regular file");
  }
  return std::optional<OpenedMbox>{std::move(o)};
}

// Whether fd is (still) the file at `path`.
bool same_file(int fd, const fs::path& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

fs::path dir_of(const fs::path& file) {
  fs::path d = file.parent_path();
  return d.empty() ? fs::path(".") : d;
}

std::string tmp_name(const fs::path& file) { return "." + file.filename().string() + ".apop-new"; }

// A name for per-file state in a server directory: PREFIX + hash of the path.
std::string path_key(const fs::path& file) {
  std::error_code ec;
  fs::path abs = fs::absolute(file, ec);
  if (ec) abs = file;
  return sha1_hex(abs.lexically_normal().string()).substr(0, 32);
}

Result<void> fsync_dir_of(const fs::path& path) {
  const fs::path dir = dir_of(path);
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_error("open directory " + dir.string(), errno);
  if (fsync_retry(d.get()) != 0) return sys_error("fsync " + dir.string(), errno);
  return {};
}

Result<void> pread_exact(int fd, char* buf, std::size_t n, std::uint64_t off,
                         const std::string& label) {
  while (n > 0) {
    const ssize_t r = pread_retry(fd, buf, n, static_cast<off_t>(off));
    if (r < 0) return sys_error("read " + label, errno);
    if (r == 0) return make_error(Errc::temporary, "read " + label + ": unexpected end of file");
    buf += r;
    n -= static_cast<std::size_t>(r);
    off += static_cast<std::uint64_t>(r);
  }
  return {};
}

Result<void> pwrite_all(int fd, std::string_view data, std::uint64_t off,
                        const std::string& label) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("write " + label, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
    off += static_cast<std::uint64_t>(n);
  }
  return {};
}

// Whether a new file in FILE's directory can be given owner, group and mode
// of `st`: we are root, or its owner and a member of its group; and the
// directory lets us create it.
bool can_replace(const fs::path& file, const struct stat& st) {
  const uid_t euid = ::geteuid();
  bool owner_ok = euid == 0;
  if (!owner_ok && euid == st.st_uid) {
    owner_ok = ::getegid() == st.st_gid;
    if (!owner_ok) {
      const int n = ::getgroups(0, nullptr);
      std::vector<gid_t> groups(n > 0 ? static_cast<std::size_t>(n) : 0);
      const int got = n > 0 ? ::getgroups(n, groups.data()) : 0;
      for (int i = 0; i < got; ++i)
        owner_ok = owner_ok || groups[static_cast<std::size_t>(i)] == st.st_gid;
    }
  }
  return owner_ok && ::faccessat(AT_FDCWD, dir_of(file).c_str(), W_OK | X_OK, AT_EACCESS) == 0;
}

// Sets FILE's atime and mtime back to those of `st` (mail readers tell new
// mail by mtime > atime). Needs ownership (or root): skipped otherwise.
void keep_times(int fd, const struct stat& st) {
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  (void)::futimens(fd, times);
}

}  // namespace

Result<void> rewrite_mbox_in_place(const fs::path& file, int fd, std::string_view data,
                                   const std::vector<MboxSpan>& spans,
                                   const std::vector<bool>& drop, const struct stat& st,
                                   const MboxOptions& opts);

namespace {

class MboxDrop final : public pop3::Maildrop {
 public:
  MboxDrop(fs::path file, MboxOptions opts, UniqueFd session_lock, UniqueFd fd,
           std::vector<Snapshot> snaps, std::vector<pop3::MessageInfo> infos)
      : file_(std::move(file)),
        opts_(std::move(opts)),
        session_lock_(std::move(session_lock)),
        fd_(std::move(fd)),
        snaps_(std::move(snaps)),
        infos_(std::move(infos)) {}

  std::span<const pop3::MessageInfo> messages() const override { return infos_; }
  // Delivery times come from each message's From_ line, read with the
  // listing at open(): nothing more to load.
  void load_delivery_times() override {}

  Result<std::unique_ptr<pop3::ByteSource>> open(std::size_t index) override {
    if (index >= snaps_.size()) return make_error(Errc::invalid, "no such message");
    return std::unique_ptr<pop3::ByteSource>(
        std::make_unique<MboxSource>(fd_.get(), snaps_[index]));
  }

  Result<void> commit(std::span<const std::size_t> deleted) override;

 private:
  Result<void> rewrite(const OpenedMbox& mbox, std::string_view data,
                       const std::vector<MboxSpan>& spans, const std::vector<bool>& drop,
                       const struct stat& st);

  fs::path file_;
  MboxOptions opts_;
  UniqueFd session_lock_;
  UniqueFd fd_;
  std::vector<Snapshot> snaps_;
  std::vector<pop3::MessageInfo> infos_;
};

Result<void> MboxDrop::commit(std::span<const std::size_t> deleted) {
  if (deleted.empty()) return {};
  // What to delete, by identity: (From line, body digest) -> how many.
  std::map<std::pair<std::string, std::string>, std::size_t> doomed;
  std::optional<Error> bad_index;
  for (const std::size_t i : deleted) {
    if (i >= snaps_.size()) {
      if (!bad_index) bad_index = make_error(Errc::invalid, "commit: no such message index");
      continue;
    }
    ++doomed[{snaps_[i].from_line, snaps_[i].body_digest}];
  }
  std::optional<OpenedMbox> opened_mbox;
  std::unique_ptr<MboxLock> lock;
  for (int attempt = 0;; ++attempt) {
    auto opened = open_existing(file_);
    if (!opened) return opened.error();
    if (!*opened) return {};  // the file is gone, and the messages with it
    auto locked = MboxLock::acquire(file_, (*opened)->fd.get(), (*opened)->writable, opts_.lock);
    if (!locked) {
      return make_error(Errc::temporary, locked.error().message + " (nothing deleted)");
    }
    // Replaced by another program between our open and our lock? Again.
    if (same_file((*opened)->fd.get(), file_) || attempt == 3) {
      opened_mbox = std::move(*opened);
      lock = std::move(*locked);
      break;
    }
  }
  const OpenedMbox& mbox = *opened_mbox;
  if (mbox.writable) {
    // An interrupted in-place rewrite first.
    if (auto rec = recover_mbox(file_, mbox.fd.get(), opts_); !rec) {
      return make_error(Errc::temporary, rec.error().message + " (nothing deleted)");
    }
  }
  struct stat st {};
  if (::fstat(mbox.fd.get(), &st) != 0) return sys_error("stat " + file_.string(), errno);
  auto mapping =
      Mapping::map(mbox.fd.get(), static_cast<std::uint64_t>(st.st_size), file_.string());
  if (!mapping) return mapping.error();
  const std::string_view data = mapping->view();
  auto spans = parse_mbox(data);
  if (!spans) {
    return make_error(Errc::temporary,
                      file_.string() + ": " + spans.error().message + " (nothing deleted)");
  }
  std::vector<bool> drop(spans->size(), false);
  bool any = false;
  for (std::size_t k = 0; k < spans->size(); ++k) {
    const MboxSpan& s = (*spans)[k];
    auto key = std::make_pair(std::string(data.substr(s.start, s.body - s.start)),
                              sha1_hex(data.substr(s.body, s.end - s.body)));
    auto it = doomed.find(key);
    if (it == doomed.end() || it->second == 0) continue;
    --it->second;
    drop[k] = true;
    any = true;
  }
  if (any) {
    if (auto r = rewrite(mbox, data, *spans, drop, st); !r) return r;
  }
  if (bad_index) return *bad_index;
  return {};
}

Result<void> MboxDrop::rewrite(const OpenedMbox& mbox, std::string_view data,
                               const std::vector<MboxSpan>& spans, const std::vector<bool>& drop,
                               const struct stat& st) {
  const bool rename = opts_.rewrite == MboxRewrite::rename ||
                      (opts_.rewrite == MboxRewrite::automatic && can_replace(file_, st));
  if (!rename) {
    if (!mbox.writable) {
      return make_error(Errc::temporary, "cannot write " + file_.string() +
                                             " nor replace it (nothing deleted): the server "
                                             "needs write permission on the mbox");
    }
    return rewrite_mbox_in_place(file_, mbox.fd.get(), data, spans, drop, st, opts_);
  }
  const fs::path dir = dir_of(file_);
  UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) return sys_error("open directory " + dir.string(), errno);
  const std::string tmp = tmp_name(file_);
  const std::string base = file_.filename().string();
  auto fault = [&](std::string_view stage) { return opts_.fail_at && opts_.fail_at(stage); };

  // An unnamed file first (vanishes by itself if we die); a named one only
  // where the file system has no O_TMPFILE.
  bool named = false;
  UniqueFd out(::openat(dirfd.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (!out) {
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT) {
      return sys_error("create a file in " + dir.string(), errno);
    }
    ::unlinkat(dirfd.get(), tmp.c_str(), 0);  // left over by a crash
    out.reset(::openat(dirfd.get(), tmp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) return sys_error("create " + (dir / tmp).string(), errno);
    named = true;
  }
  struct Cleanup {
    int dir;
    const std::string& name;
    bool armed;
    ~Cleanup() {
      if (armed) ::unlinkat(dir, name.c_str(), 0);
    }
  } cleanup{dirfd.get(), tmp, named};

  // Leading empty lines, then every kept message with its separator.
  std::string_view leading = data.substr(0, spans.empty() ? data.size() : spans.front().start);
  if (!write_all(out.get(), leading)) return sys_error("write " + (dir / tmp).string(), errno);
  for (std::size_t k = 0; k < spans.size(); ++k) {
    if (drop[k]) continue;
    const MboxSpan& s = spans[k];
    if (!write_all(out.get(), data.substr(s.start, s.next - s.start))) {
      return sys_error("write " + (dir / tmp).string(), errno);
    }
    if (fault("write")) return make_error(Errc::temporary, "injected fault: write");
  }
  // Mail every MTA appends takes our locks, so the file cannot have grown;
  // should a writer that ignores locks have appended anyway, copy that too.
  std::uint64_t copied = data.size();
  std::vector<char> buf(limits::kBodyChunk);
  for (;;) {
    struct stat now {};
    if (::fstat(mbox.fd.get(), &now) != 0) return sys_error("stat " + file_.string(), errno);
    if (static_cast<std::uint64_t>(now.st_size) <= copied) break;
    const ssize_t n =
        pread_retry(mbox.fd.get(), buf.data(), buf.size(), static_cast<off_t>(copied));
    if (n < 0) return sys_error("read " + file_.string(), errno);
    if (n == 0) break;
    if (!write_all(out.get(), std::string_view(buf.data(), static_cast<std::size_t>(n)))) {
      return sys_error("write " + (dir / tmp).string(), errno);
    }
    copied += static_cast<std::uint64_t>(n);
  }
  // Owner, group and mode as before (/var/mail files are USER:mail 0660, and
  // Postfix refuses a mailbox that is not the recipient's).
  struct stat mine {};
  if (::fstat(out.get(), &mine) != 0) return sys_error("stat new mbox", errno);
  if ((mine.st_uid != st.st_uid || mine.st_gid != st.st_gid) &&
      ::fchown(out.get(), st.st_uid, st.st_gid) != 0) {
    return make_error(Errc::temporary,
                      "cannot give the rewritten " + file_.string() + " its owner " +
                          std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid) + " (" +
                          std::strerror(errno) +
                          "); nothing deleted: serve mbox files owned by the server's user, or "
                          "run the server as their owner");
  }
  if (::fchmod(out.get(), st.st_mode & 07777) != 0) return sys_error("chmod new mbox", errno);
  keep_times(out.get(), st);
  if (fsync_retry(out.get()) != 0) return sys_error("fsync new mbox", errno);
  if (fault("fsync")) return make_error(Errc::temporary, "injected fault: fsync");
  if (!named) {
    ::unlinkat(dirfd.get(), tmp.c_str(), 0);  // left over by a crash
    const std::string proc = "/proc/self/fd/" + std::to_string(out.get());
    if (::linkat(AT_FDCWD, proc.c_str(), dirfd.get(), tmp.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      return sys_error("link new mbox into " + dir.string(), errno);
    }
    cleanup.armed = true;
  }
  if (out.close_checked() != 0) return sys_error("close new mbox", errno);
  if (fault("rename")) return make_error(Errc::temporary, "injected fault: rename");
  if (::renameat(dirfd.get(), tmp.c_str(), dirfd.get(), base.c_str()) != 0) {
    return sys_error("rename the new mbox over " + file_.string(), errno);
  }
  cleanup.armed = false;
  if (fsync_retry(dirfd.get()) != 0) return sys_error("fsync " + dir.string(), errno);
  return {};
}

// flock on the per-file session lock: one POP3 session per mbox file.
Result<UniqueFd> session_lock(const fs::path& file, const fs::path& lock_dir) {
  if (lock_dir.empty()) return make_error(Errc::invalid, "no session lock directory for mbox");
  if (::mkdir(lock_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return sys_error("mkdir " + lock_dir.string(), errno);
  }
  const std::string name = "mbox-" + path_key(file) + ".lock";
  const fs::path path = lock_dir / name;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return sys_error("open " + path.string(), errno);
  for (;;) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      return make_error(Errc::in_use, "mbox " + file.string() + " is in use by another session");
    }
    return sys_error("flock " + path.string(), errno);
  }
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------
// In-place rewrite journal.

std::optional<MboxRewrite> parse_mbox_rewrite(std::string_view s) {
  if (s == "auto") return MboxRewrite::automatic;
  if (s == "rename") return MboxRewrite::rename;
  if (s == "in-place") return MboxRewrite::in_place;
  return std::nullopt;
}

namespace {

constexpr std::string_view kJournalMagic = "APOP-MBOX-JOURNAL 1\n";

std::string journal_header(const MboxJournal& j) {
  std::string h(kJournalMagic);
  h += "dev " + std::to_string(j.dev) + "\n";
  h += "ino " + std::to_string(j.ino) + "\n";
  h += "size " + std::to_string(j.size) + "\n";
  h += "offset " + std::to_string(j.offset) + "\n";
  h += "new-size " + std::to_string(j.new_size) + "\n";
  std::string path = j.path;
  std::replace(path.begin(), path.end(), '\n', '?');
  h += "path " + path + "\n\n";
  return h;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

}  // namespace

std::string encode_mbox_journal(const MboxJournal& j) {
  std::string out = journal_header(j);
  out += j.region;
  out += sha1_hex(out) + "\n";
  return out;
}

namespace {

// Parses the journal header at the start of `data` (which may hold more);
// returns the header's length.
Result<std::size_t> parse_journal_header(std::string_view data, MboxJournal& j) {
  auto bad = [](const std::string& why) {
    return make_error(Errc::invalid, "mbox journal: " + why);
  };
  if (!data.starts_with(kJournalMagic)) return bad("no header");
  std::size_t pos = kJournalMagic.size();
  const std::array<std::pair<std::string_view, std::uint64_t*>, 5> fields = {{
      {"dev ", &j.dev},
      {"ino ", &j.ino},
      {"size ", &j.size},
      {"offset ", &j.offset},
      {"new-size ", &j.new_size},
  }};
  for (const auto& [name, dest] : fields) {
    const std::size_t nl = data.find('\n', pos);
    if (nl == std::string_view::npos) return bad("truncated header");
    const std::string_view line = data.substr(pos, nl - pos);
    if (!line.starts_with(name) || !parse_u64(line.substr(name.size()), *dest)) {
      return bad("bad header line");
    }
    pos = nl + 1;
  }
  if (data.substr(pos, 5) != "path ") return bad("bad header line");
  const std::size_t end = data.find("\n\n", pos);
  if (end == std::string_view::npos) return bad("truncated header");
  j.path = std::string(data.substr(pos + 5, end - pos - 5));
  if (j.offset > j.new_size || j.new_size >= j.size) return bad("inconsistent sizes");
  return end + 2;
}

}  // namespace

Result<MboxJournal> decode_mbox_journal(std::string_view data) {
  auto bad = [](const std::string& why) {
    return make_error(Errc::invalid, "mbox journal: " + why);
  };
  if (!data.starts_with(kJournalMagic)) return bad("no header");
  if (data.size() < kJournalMagic.size() + 41 || data.back() != '\n') return bad("incomplete");
  const std::string_view body = data.substr(0, data.size() - 41);
  if (sha1_hex(body) != data.substr(data.size() - 41, 40)) return bad("checksum mismatch");
  MboxJournal j;
  auto header_len = parse_journal_header(body, j);
  if (!header_len) return header_len.error();
  if (body.size() - *header_len != j.size - j.offset) return bad("region length mismatch");
  j.region = std::string(body.substr(*header_len));
  return j;
}

std::vector<fs::path> mbox_journal_paths(const fs::path& file, const MboxOptions& opts) {
  std::vector<fs::path> out{dir_of(file) / ("." + file.filename().string() + ".apop-journal")};
  if (!opts.journal_dir.empty()) {
    out.push_back(opts.journal_dir / ("mbox-" + path_key(file) + ".journal"));
  }
  return out;
}

namespace {

// Removes a journal and makes that durable.
Result<void> remove_journal(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return sys_error("remove " + path.string(), errno);
  }
  return fsync_dir_of(path);
}

// The journal at `path` when it is ours to act on: a regular file owned by
// our effective user (anyone may create files in a 1777 /var/mail).
Result<std::optional<std::pair<UniqueFd, std::uint64_t>>> open_own_journal(const fs::path& path) {
  using Opened = std::optional<std::pair<UniqueFd, std::uint64_t>>;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT || errno == ELOOP || errno == EACCES) return Opened{};
    return sys_error("open " + path.string(), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + path.string(), errno);
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || st.st_nlink != 1) {
    return Opened{};  // not ours: never trusted, never removed
  }
  return Opened{std::make_pair(std::move(fd), static_cast<std::uint64_t>(st.st_size))};
}

// Checks a journal file without reading it whole into memory (it holds up
// to the whole mbox): header, length and checksum. Returns the header length.
Result<std::size_t> check_journal(int jf, std::uint64_t jsize, MboxJournal& j,
                                  const std::string& label) {
  constexpr std::size_t kTrailer = 41;  // 40 hex digits and LF
  std::string head(static_cast<std::size_t>(std::min<std::uint64_t>(jsize, 16384)), '\0');
  const ssize_t got = pread_retry(jf, head.data(), head.size(), 0);
  if (got < 0) return sys_error("read " + label, errno);
  head.resize(static_cast<std::size_t>(got));
  auto header_len = parse_journal_header(head, j);
  if (!header_len) return header_len.error();
  if (jsize < kTrailer || jsize - kTrailer != *header_len + (j.size - j.offset)) {
    return make_error(Errc::invalid, "mbox journal: incomplete");
  }
  Sha1 sum;
  std::vector<char> buf(limits::kBodyChunk);
  for (std::uint64_t pos = 0; pos < jsize - kTrailer;) {
    const auto n =
        static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), jsize - kTrailer - pos));
    if (auto r = pread_exact(jf, buf.data(), n, pos, label); !r) return r.error();
    sum.update(std::string_view(buf.data(), n));
    pos += n;
  }
  char trailer[kTrailer];
  if (auto r = pread_exact(jf, trailer, kTrailer, jsize - kTrailer, label); !r) return r.error();
  if (std::string_view(trailer, kTrailer) != sum.hex() + "\n") {
    return make_error(Errc::invalid, "mbox journal: checksum mismatch");
  }
  return header_len;
}

}  // namespace

Result<bool> recover_mbox(const fs::path& file, int fd, const MboxOptions& opts) {
  bool found = false;
  for (const fs::path& path : mbox_journal_paths(file, opts)) {
    auto opened = open_own_journal(path);
    if (!opened) return opened.error();
    if (!*opened) continue;
    found = true;
    const int jf = (*opened)->first.get();
    MboxJournal j;
    auto header_len = check_journal(jf, (*opened)->second, j, path.string());
    if (!header_len && header_len.error().code != Errc::invalid) return header_len.error();
    struct stat st {};
    if (::fstat(fd, &st) != 0) return sys_error("stat " + file.string(), errno);
    if (!header_len || j.dev != static_cast<std::uint64_t>(st.st_dev) ||
        j.ino != static_cast<std::uint64_t>(st.st_ino)) {
      // Incomplete (the rewrite died writing it: FILE untouched), damaged, or
      // of a file that is no longer there.
      if (auto r = remove_journal(path); !r) return r.error();
      continue;
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    char mark = 1;
    if (size > j.new_size) {
      const ssize_t n = pread_retry(fd, &mark, 1, static_cast<off_t>(j.new_size));
      if (n != 1) return sys_error("read " + file.string(), n < 0 ? errno : EIO);
    }
    if (size == j.new_size || (size > j.new_size && mark != '\0')) {
      // Truncated: FILE is the new state (plus mail appended since).
      if (auto r = remove_journal(path); !r) return r.error();
      continue;
    }
    if (size < j.size) {
      return make_error(Errc::temporary, file.string() + " does not match the rewrite journal " +
                                             path.string() + " (size " + std::to_string(size) +
                                             ", expected at least " + std::to_string(j.size) +
                                             "): left for the administrator (docs/migration.md)");
    }
    // Not truncated: put the original bytes back; [size, now) is mail
    // appended since and stays.
    std::vector<char> buf(limits::kBodyChunk);
    for (std::uint64_t pos = 0; pos < j.size - j.offset;) {
      const auto n =
          static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), j.size - j.offset - pos));
      if (auto r = pread_exact(jf, buf.data(), n, *header_len + pos, path.string()); !r) {
        return r.error();
      }
      if (auto r = pwrite_all(fd, std::string_view(buf.data(), n), j.offset + pos, file.string());
          !r) {
        return r.error();
      }
      pos += n;
    }
    if (fsync_retry(fd) != 0) return sys_error("fsync " + file.string(), errno);
    if (auto r = remove_journal(path); !r) return r.error();
  }
  return found;
}

namespace {

// Whether a journal of `file` may be waiting (cheap: lstat only).
bool journal_present(const fs::path& file, const MboxOptions& opts) {
  for (const fs::path& p : mbox_journal_paths(file, opts)) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) return true;
  }
  return false;
}

}  // namespace

namespace {

// Creates the journal file: next to FILE when its directory lets us (and no
// foreign file has that name), else in opts.journal_dir.
Result<std::pair<UniqueFd, fs::path>> create_journal(const fs::path& file,
                                                     const MboxOptions& opts) {
  const std::vector<fs::path> paths = mbox_journal_paths(file, opts);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (i == 1 && ::mkdir(opts.journal_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return sys_error("mkdir " + opts.journal_dir.string(), errno);
    }
    UniqueFd fd(::open(paths[i].c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd) return std::make_pair(std::move(fd), paths[i]);
    const int err = errno;
    // recover_mbox ran under the same locks: an existing file is not ours.
    if (i + 1 < paths.size() && (err == EACCES || err == EPERM || err == EROFS || err == EEXIST)) {
      continue;
    }
    return sys_error("create the rewrite journal " + paths[i].string(), err);
  }
  return make_error(Errc::temporary, "no place for the rewrite journal of " + file.string());
}

}  // namespace

// The in-place rewrite (see MboxJournal in mbox.hpp): under both locks, fd
// open read-write; `data` is FILE as read under them.
Result<void> rewrite_mbox_in_place(const fs::path& file, int fd, std::string_view data,
                                   const std::vector<MboxSpan>& spans,
                                   const std::vector<bool>& drop, const struct stat& st,
                                   const MboxOptions& opts) {
  auto fault = [&](std::string_view stage) { return opts.fail_at && opts.fail_at(stage); };
  const auto first =
      static_cast<std::size_t>(std::find(drop.begin(), drop.end(), true) - drop.begin());
  if (first >= spans.size()) return {};
  struct Seg {
    std::uint64_t src, len;
  };
  std::vector<Seg> keep;
  const std::uint64_t offset = spans[first].start;
  std::uint64_t new_size = offset;
  for (std::size_t k = first; k < spans.size(); ++k) {
    if (drop[k]) continue;
    keep.push_back({spans[k].start, spans[k].next - spans[k].start});
    new_size += spans[k].next - spans[k].start;
  }
  // Mail every MTA appends takes our locks, so the file cannot have grown;
  // should a writer that ignores locks have appended anyway, keep that too.
  struct stat now {};
  if (::fstat(fd, &now) != 0) return sys_error("stat " + file.string(), errno);
  const auto size = static_cast<std::uint64_t>(now.st_size);
  if (size < data.size()) return make_error(Errc::temporary, file.string() + " shrank");
  if (size > data.size()) {
    keep.push_back({data.size(), size - data.size()});
    new_size += size - data.size();
  }

  // 1. The journal: the original bytes of [offset, size).
  auto created = create_journal(file, opts);
  if (!created) return created.error();
  // Named references, not a structured binding: clang 14 cannot capture a
  // structured binding in a lambda (abandon below).
  auto& jfd = created->first;
  auto& jpath = created->second;
  MboxJournal head;
  head.dev = static_cast<std::uint64_t>(now.st_dev);
  head.ino = static_cast<std::uint64_t>(now.st_ino);
  head.size = size;
  head.offset = offset;
  head.new_size = new_size;
  head.path = file.string();
  std::vector<char> buf(limits::kBodyChunk);
  std::uint64_t header_len = 0;
  {
    auto abandon = [&](Error e) {
      ::unlink(jpath.c_str());
      e.message += " (nothing deleted)";
      return e;
    };
    const std::string header = journal_header(head);
    header_len = header.size();
    Sha1 sum;
    sum.update(header);
    if (!write_all(jfd.get(), header)) return abandon(sys_error("write " + jpath.string(), errno));
    if (fault("journal-partial")) return make_error(Errc::temporary, "injected fault: journal");
    for (std::uint64_t pos = offset; pos < size;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - pos));
      if (auto r = pread_exact(fd, buf.data(), n, pos, file.string()); !r) {
        return abandon(r.error());
      }
      const std::string_view chunk(buf.data(), n);
      sum.update(chunk);
      if (!write_all(jfd.get(), chunk)) {
        return abandon(sys_error("write " + jpath.string(), errno));
      }
      pos += n;
    }
    if (!write_all(jfd.get(), sum.hex() + "\n")) {
      return abandon(sys_error("write " + jpath.string(), errno));
    }
    if (fsync_retry(jfd.get()) != 0) return abandon(sys_error("fsync " + jpath.string(), errno));
    if (auto r = fsync_dir_of(jpath); !r) return abandon(r.error());
  }
  if (fault("journal")) return make_error(Errc::temporary, "injected fault: journal");

  // From here on, a failure undoes what was done (the journal stays for the
  // next login when even that fails).
  auto undo = [&](Error e) {
    if (auto r = recover_mbox(file, fd, opts); !r) {
      e.message += "; undoing failed too (" + r.error().message + "), the next login finishes it";
    } else {
      e.message += " (nothing deleted)";
    }
    return e;
  };
  // 2. The mark: a NUL at new_size until the truncation.
  if (auto r = pwrite_all(fd, std::string_view("\0", 1), new_size, file.string()); !r) {
    return undo(r.error());
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  // 3. The kept messages down, read from the journal (the mark, and the
  // moves themselves, overwrite parts of the file that are still to move).
  std::uint64_t dst = offset;
  bool first_chunk = true;
  for (const Seg& seg : keep) {
    for (std::uint64_t done = 0; done < seg.len;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), seg.len - done));
      if (auto r = pread_exact(jfd.get(), buf.data(), n, header_len + seg.src + done - offset,
                               jpath.string());
          !r) {
        return undo(r.error());
      }
      if (auto r = pwrite_all(fd, std::string_view(buf.data(), n), dst, file.string()); !r) {
        return undo(r.error());
      }
      done += n;
      dst += n;
      if (first_chunk && fault("move")) {
        return make_error(Errc::temporary, "injected fault: move");
      }
      first_chunk = false;
    }
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  if (fault("moved")) return make_error(Errc::temporary, "injected fault: moved");
  // 4. Cut the file. A writer that ignores the locks may have appended: then
  // undo rather than cut its mail off.
  if (::fstat(fd, &now) != 0) return undo(sys_error("stat " + file.string(), errno));
  if (static_cast<std::uint64_t>(now.st_size) != size) {
    return undo(make_error(Errc::temporary,
                           file.string() + " grew during the rewrite without taking the locks"));
  }
  if (::ftruncate(fd, static_cast<off_t>(new_size)) != 0) {
    return undo(sys_error("truncate " + file.string(), errno));
  }
  if (fsync_retry(fd) != 0) return undo(sys_error("fsync " + file.string(), errno));
  if (fault("truncated")) return make_error(Errc::temporary, "injected fault: truncated");
  keep_times(fd, st);
  jfd.reset();
  // 5. Done: the journal goes (should that fail, the next recovery sees the
  // truncated file and removes it).
  (void)remove_journal(jpath);
  return {};
}

Result<std::unique_ptr<pop3::Maildrop>> open_mbox(const fs::path& file, const MboxOptions& opts) {
  auto slock = session_lock(file, opts.session_lock_dir);
  if (!slock) return slock.error();
  auto opened = open_existing(file);
  if (!opened) return opened.error();
  std::vector<Snapshot> snaps;
  std::vector<pop3::MessageInfo> infos;
  UniqueFd fd;
  if (*opened) {
    OpenedMbox& mbox = **opened;
    // Reading takes a read lock only: the snapshot needs writers kept out,
    // not other readers.
    // ... unless an interrupted in-place rewrite must be finished first.
    const bool pending = journal_present(file, opts);
    if (pending && !mbox.writable) {
      return make_error(Errc::temporary, file.string() +
                                             ": an interrupted rewrite must be finished but the "
                                             "file is not writable");
    }
    auto lock = MboxLock::acquire(file, mbox.fd.get(), pending, opts.lock);
    if (!lock) return lock.error();
    if (pending) {
      if (auto rec = recover_mbox(file, mbox.fd.get(), opts); !rec) return rec.error();
    }
    struct stat st {};
    if (::fstat(mbox.fd.get(), &st) != 0) return sys_error("stat " + file.string(), errno);
    auto mapping =
        Mapping::map(mbox.fd.get(), static_cast<std::uint64_t>(st.st_size), file.string());
    if (!mapping) return mapping.error();
    const std::string_view data = mapping->view();
    auto spans = parse_mbox(data);
    if (!spans) return make_error(Errc::temporary, file.string() + ": " + spans.error().message);
    if (spans->size() > limits::kMaxMessages) spans->resize(limits::kMaxMessages);
    std::unordered_set<std::string> taken;
    std::vector<std::size_t> dups;
    std::vector<std::string> header_uidls;
    snaps.reserve(spans->size());
    infos.reserve(spans->size());
    for (const MboxSpan& s : *spans) {
      MboxMessageFacts f = mbox_message_facts(data, s);
      pop3::MessageInfo info;
      info.size = f.size;
      info.delivered = f.delivered;
      // X-UIDL first (what qpopper told the clients), when not taken yet.
      if (!f.x_uidl.empty() && taken.insert(f.x_uidl).second) {
        info.uidl = f.x_uidl;
      } else if (taken.insert(f.header_uidl).second) {
        info.uidl = f.header_uidl;
      } else {
        dups.push_back(infos.size());
      }
      header_uidls.push_back(f.header_uidl);
      snaps.push_back({s, std::string(data.substr(s.start, s.body - s.start)), f.body_digest});
      infos.push_back(std::move(info));
    }
    // Identical headers (the same message delivered twice in one second):
    // the n-th copy gets a hash of its header UIDL and n, stable as long as
    // the earlier copies stay.
    for (const std::size_t i : dups) {
      std::string candidate;
      for (unsigned k = 2; candidate.empty() || taken.count(candidate) != 0; ++k) {
        candidate = hashed_uidl(header_uidls[i] + "#" + std::to_string(k));
      }
      taken.insert(candidate);
      infos[i].uidl = std::move(candidate);
    }
    fd = std::move(mbox.fd);
  }
  return std::unique_ptr<pop3::Maildrop>(std::make_unique<MboxDrop>(
      file, opts, std::move(*slock), std::move(fd), std::move(snaps), std::move(infos)));
}

MboxOpener::MboxOpener(fs::path file, MboxOptions opts)
    : file_(std::move(file)), opts_(std::move(opts)) {}

Result<std::unique_ptr<pop3::Maildrop>> MboxOpener::open(std::string_view) {
  return open_mbox(file_, opts_);
}

Result<std::unique_ptr<pop3::Maildrop>> MboxOpener::open_file(const fs::path& file) {
  return open_mbox(file, opts_);
}

// ---------------------------------------------------------------------------
// Delivery.

namespace {

bool plain_sender(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) return false;
  }
  return true;
}

std::string asctime_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char date[64];
  if (std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm) == 0) {
    return "Thu Jan  1 00:00:00 1970";
  }
  return date;
}

}  // namespace

Result<void> mbox_deliver(const fs::path& file, int in, const MboxDeliverOptions& opts) {
  // Read the whole message first: the locks are then held only for the write.
  std::string msg;
  std::vector<char> buf(limits::kBodyChunk);
  for (;;) {
    const ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error("read message", errno);
    }
    if (n == 0) break;
    if (msg.size() + static_cast<std::uint64_t>(n) > opts.max_size) {
      return make_error(Errc::invalid, "message exceeds the maximum size of " +
                                           std::to_string(opts.max_size) + " bytes");
    }
    msg.append(buf.data(), static_cast<std::size_t>(n));
  }
  // The envelope line: the message's own, or ours.
  std::string out;
  std::string_view body = msg;
  if (body.starts_with("From ")) {
    const std::size_t nl = body.find('\n');
    const std::string_view line = body.substr(0, nl == std::string_view::npos ? body.size() : nl);
    out.append(line).push_back('\n');
    body.remove_prefix(nl == std::string_view::npos ? body.size() : nl + 1);
  } else {
    out += "From ";
    out += plain_sender(opts.sender) ? opts.sender : "MAILER-DAEMON";
    out += " " + asctime_now() + "\n";
  }
  out.reserve(out.size() + body.size() + body.size() / 64 + 2);
  std::size_t pos = 0;
  while (pos < body.size()) {
    std::size_t end = body.find('\n', pos);
    const bool last = end == std::string_view::npos;
    if (last) end = body.size();
    const std::string_view line = body.substr(pos, end - pos);
    if (line.starts_with("From ")) out += '>';
    out += line;
    out += '\n';
    pos = last ? end : end + 1;
  }
  out += '\n';

  UniqueFd fd;
  std::unique_ptr<MboxLock> lock;
  struct stat st {};
  for (int attempt = 0;; ++attempt) {
    fd.reset(::open(file.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW,
                    0600));
    if (!fd) return sys_error("open " + file.string(), errno);
    if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + file.string(), errno);
    if (!S_ISREG(st.st_mode)) {
      return make_error(Errc::permanent, file.string() + ": not a regular file");
    }
    auto locked = MboxLock::acquire(file, fd.get(), true, opts.lock);
    if (!locked) return make_error(Errc::temporary, locked.error().message);
    // A POP3 server rewrote (renamed over) the file between our open and
    // our lock: append to the new one, never to the unlinked old one.
    if (same_file(fd.get(), file) || attempt == 3) {
      lock = std::move(*locked);
      break;
    }
  }
  // The size under the lock: what to cut back to on failure.
  if (::fstat(fd.get(), &st) != 0) return sys_error("stat " + file.string(), errno);
  const off_t original = st.st_size;
  std::string lead;
  if (original > 0) {
    char tail[2] = {0, 0};
    const off_t from = original >= 2 ? original - 2 : 0;
    const ssize_t n = pread_retry(fd.get(), tail, static_cast<std::size_t>(original - from), from);
    if (n < 0) return sys_error("read " + file.string(), errno);
    const std::string_view t(tail, static_cast<std::size_t>(n));
    if (t.back() != '\n') {
      lead = "\n\n";
    } else if (t.size() == 2 && t[0] != '\n') {
      lead = "\n";
    }
  }
  auto fail = [&](const std::string& what, int err) -> Error {
    if (::ftruncate(fd.get(), original) == 0) (void)fsync_retry(fd.get());
    return sys_error(what + " " + file.string(), err);
  };
  if (!write_all(fd.get(), lead) || !write_all(fd.get(), out)) return fail("write", errno);
  if (opts.fail_after_write) return fail("write (injected fault)", EIO);
  if (fsync_retry(fd.get()) != 0) return fail("fsync", errno);
  return {};
}

}  // namespace apop::store
