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

Result<std::unique_ptr<MboxLock>> MboxLock::acquire(const fs::path& file, int fd, bool write,
                                                    const MboxLockOptions& opts) {
  std::unique_ptr<MboxLock> lock(new MboxLock());
  const auto deadline = Clock::now() + opts.lock_timeout;
  const std::string dot = file.string() + ".lock";
  for (int attempt = 0;; ++attempt) {
    UniqueFd d(::open(dot.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (d) {
      lock->dotlock_ = dot;
      (void)write_all(d.get(), std::to_string(::getpid()) + "\n");
      break;
    }
    const int err = errno;
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
  std::error_code ec;
  fs::path abs = fs::absolute(file, ec);
  if (ec) abs = file;
  const std::string name =
      "mbox-" + sha1_hex(abs.lexically_normal().string()).substr(0, 32) + ".lock";
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
    auto lock = MboxLock::acquire(file, mbox.fd.get(), false, opts.lock);
    if (!lock) return lock.error();
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
