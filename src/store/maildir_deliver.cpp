// Maildir delivery (store/maildir_deliver.hpp): `apop deliver --maildir`,
// the fetch destination and the LMTP server write one message through tmp/
// into new/.
#include "store/maildir_deliver.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/dir_io.hpp"
#include "store/maildir.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {

namespace fs = std::filesystem;

namespace {

// This process's id for the P field, asked once: getpid(2) is a system
// call each time (glibc caches it no more). A forked child asks again
// (pthread_atfork); posix_spawn's children exec at once and deliver nothing.
pid_t own_pid() {
  static std::atomic<pid_t> pid{0};
  static const bool registered = [] {
    return ::pthread_atfork(nullptr, nullptr, [] { pid.store(0, std::memory_order_relaxed); }) == 0;
  }();
  pid_t p = registered ? pid.load(std::memory_order_relaxed) : 0;
  if (p == 0) {
    p = ::getpid();
    if (registered) pid.store(p, std::memory_order_relaxed);
  }
  return p;
}

std::string unique_base(const std::string& escaped_host) {
  static std::atomic<std::uint64_t> counter{0};
  timeval tv{};
  ::gettimeofday(&tv, nullptr);
  const std::uint64_t q = counter.fetch_add(1, std::memory_order_relaxed) + 1;
  return std::to_string(tv.tv_sec) + ".M" + std::to_string(tv.tv_usec) + "P" +
         std::to_string(own_pid()) + "Q" + std::to_string(q) + "." + escaped_host;
}

// Removes the tmp/ file on scope exit unless disarmed.
class TmpGuard {
 public:
  TmpGuard(int dirfd, std::string name) : dirfd_(dirfd), name_(std::move(name)) {}
  TmpGuard(const TmpGuard&) = delete;
  TmpGuard& operator=(const TmpGuard&) = delete;
  ~TmpGuard() {
    if (armed_) ::unlinkat(dirfd_, name_.c_str(), 0);
  }
  void disarm() { armed_ = false; }

 private:
  int dirfd_;
  std::string name_;
  bool armed_ = true;
};

// Errc::invalid: larger than opts.max_size.
Error too_large(std::uint64_t max_size) {
  return make_error(Errc::invalid,
                    "message exceeds the maximum size of " + std::to_string(max_size) + " bytes");
}

// Streams the message from `in` to `out`, dropping a leading "From " line.
struct CopyResult {
  std::uint64_t size = 0;
  std::uint64_t crlf_size = 0;
};

Result<CopyResult> copy_message(int in, int out, std::uint64_t max_size) {
  static constexpr std::string_view kFrom = "From ";
  enum class Lead { check, skip, copy } lead = Lead::check;
  std::string head;  // bytes seen while they still match a prefix of "From "
  CopyResult r;
  pop3::CrlfSizer sizer;
  std::optional<Error> failure;

  auto emit = [&](std::string_view data) -> bool {
    if (data.empty()) return true;
    if (data.size() > max_size - r.size) {
      failure = too_large(max_size);
      return false;
    }
    if (!write_all(out, data)) {
      failure = sys_error("write tmp file", errno);
      return false;
    }
    r.size += data.size();
    sizer.update(data);
    return true;
  };

  std::vector<char> buf(limits::kBodyChunk);
  for (;;) {
    const ssize_t n = read_retry(in, buf.data(), buf.size());
    if (n < 0) return sys_error("read message", errno);
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<std::size_t>(n));
    while (lead == Lead::check && !chunk.empty()) {
      head += chunk.front();
      chunk.remove_prefix(1);
      if (kFrom.substr(0, head.size()) != head) {
        lead = Lead::copy;
        if (!emit(head)) return *failure;
      } else if (head.size() == kFrom.size()) {
        lead = Lead::skip;
      }
    }
    if (lead == Lead::skip) {
      const auto nl = chunk.find('\n');
      if (nl == std::string_view::npos) continue;
      chunk.remove_prefix(nl + 1);
      lead = Lead::copy;
    }
    if (lead == Lead::copy && !emit(chunk)) return *failure;
  }
  if (lead == Lead::check && !emit(head)) return *failure;  // e.g. just "Fro"
  r.crlf_size = sizer.size();
  return r;
}

bool link_unsupported(int err) {
  return err == EPERM || err == ENOTSUP || err == EOPNOTSUPP || err == ENOSYS || err == EXDEV ||
         err == EMLINK;
}

// Writes all of `parts` in order, kWritevBatch iovecs per writev(2), after
// short writes and EINTR too. false with errno set on failure.
bool writev_all(int fd, std::span<const std::string_view> parts) {
  static_assert(limits::kWritevBatch <= IOV_MAX);
  std::size_t next = 0;  // first part not wholly written
  std::size_t done = 0;  // bytes of parts[next] written
  while (next < parts.size()) {
    std::array<iovec, limits::kWritevBatch> iov{};
    std::size_t n = 0;
    for (std::size_t i = next; i < parts.size() && n < iov.size(); ++i) {
      const std::string_view part = parts[i].substr(i == next ? done : 0);
      if (part.empty()) continue;
      iov[n++] = iovec{const_cast<char*>(part.data()), part.size()};
    }
    if (n == 0) return true;  // only empty parts left
    const ssize_t w = retry_eintr([&] { return ::writev(fd, iov.data(), static_cast<int>(n)); });
    if (w < 0) return false;
    if (w == 0) {
      errno = EIO;  // a regular file takes bytes or fails; never loop
      return false;
    }
    auto left = static_cast<std::size_t>(w);
    while (next < parts.size() && left >= parts[next].size() - done) {
      left -= parts[next].size() - done;
      ++next;
      done = 0;
    }
    done += left;
  }
  return true;
}

// The descriptors of a Maildir that a delivery needs.
struct MaildirFds {
  UniqueFd dir;
  UniqueFd tmp;
  UniqueFd fresh;  // new/
};

// Opens `dir`, its tmp/ and its new/; with `create`, makes what is missing
// (ENOENT, or ENOTDIR for a file in the way: ensure_maildir says which) and
// opens once more.
Result<MaildirFds> open_maildir(const fs::path& dir, bool create) {
  MaildirFds m;
  int err = 0;
  const char* failed = nullptr;  // what could not be opened
  const auto open_all = [&] {
    m.dir.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!m.dir) {
      err = errno;
      failed = "";
      return false;
    }
    m.tmp.reset(open_dir_at(m.dir.get(), "tmp"));
    if (!m.tmp) {
      err = errno;
      failed = "/tmp";
      return false;
    }
    m.fresh.reset(open_dir_at(m.dir.get(), "new"));
    if (!m.fresh) {
      err = errno;
      failed = "/new";
      return false;
    }
    return true;
  };
  if (open_all()) return m;
  if (create && (err == ENOENT || err == ENOTDIR)) {
    if (auto made = ensure_maildir(dir); !made) {
      return make_error(Errc::temporary, made.error().message);
    }
    if (open_all()) return m;
  }
  const std::string what =
      *failed == '\0' ? "open Maildir " + dir.string() : "open " + dir.string() + failed;
  return sys_error(what, err);
}

// The delivery both entry points share: a unique tmp/ file that
// `write(fd)` fills (returning the sizes of what it wrote), fsync, the
// quota check under its lock, the link (or rename) into new/ with the final
// name, fsync of new/, the maildirsize line. The tmp/ file is removed on
// every failure.
template <typename Write>
Result<std::string> deliver_with(const fs::path& dir, const DeliverOptions& opts, Write&& write) {
  auto fds = open_maildir(dir, opts.create);
  if (!fds) return fds.error();
  const int dirfd = fds->dir.get();
  const int tmpfd = fds->tmp.get();
  const int newfd = fds->fresh.get();

  const std::string host =
      escape_maildir_host(opts.hostname.empty() ? local_hostname() : opts.hostname);

  std::string base;
  UniqueFd out;
  for (int attempt = 0; attempt < 100 && !out; ++attempt) {
    base = unique_base(host);
    out.reset(
        ::openat(tmpfd, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out && errno != EEXIST) return sys_error("create tmp file in " + dir.string(), errno);
  }
  if (!out) return make_error(Errc::temporary, "no unique tmp file name in " + dir.string());
  TmpGuard guard(tmpfd, base);

  Result<CopyResult> copied = write(out.get());
  if (!copied) return copied.error();
  if (::fsync(out.get()) != 0) return sys_error("fsync tmp file", errno);
  if (out.close_checked() != 0) return sys_error("close tmp file", errno);

  const std::string final_name =
      base + ",S=" + std::to_string(copied->size) + ",W=" + std::to_string(copied->crlf_size);
  // The quota check and the link under one lock: two deliveries cannot both
  // take the last free bytes.
  std::optional<QuotaLock> quota_lock;
  if (!opts.quota.unlimited() || maildirsize_exists(dirfd)) {
    auto locked = QuotaLock::acquire(dirfd);
    if (!locked) return make_error(Errc::temporary, locked.error().message);
    quota_lock.emplace(std::move(*locked));
    if (!opts.quota.unlimited()) {
      auto usage = maildir_quota_usage_locked(dirfd, opts.quota, copied->size, 1,
                                              static_cast<std::int64_t>(::time(nullptr)));
      if (!usage) return make_error(Errc::temporary, usage.error().message);
      if (!quota_allows(opts.quota, *usage, copied->size, 1)) {
        return over_quota_error(opts.quota, *usage, copied->size);
      }
    }
  }
  if (::linkat(tmpfd, base.c_str(), newfd, final_name.c_str(), 0) != 0) {
    const int err = errno;
    if (!link_unsupported(err)) return sys_error("link into new/", err);
    // Filesystems without hard links: rename, still refusing to replace.
    if (::renameat2(tmpfd, base.c_str(), newfd, final_name.c_str(), RENAME_NOREPLACE) != 0) {
      return sys_error("rename into new/", errno);
    }
    guard.disarm();
  }
  if (::fsync(newfd) != 0) {
    const int err = errno;
    // Not known to be durable: take it back so the sender retries.
    ::unlinkat(newfd, final_name.c_str(), 0);
    return sys_error("fsync new/", err);
  }
  if (quota_lock) maildirsize_append(dirfd, static_cast<std::int64_t>(copied->size), 1);
  return final_name;
}

}  // namespace

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

Result<std::string> deliver(const fs::path& dir, int fd, const DeliverOptions& opts) {
  return deliver_with(dir, opts, [&](int out) { return copy_message(fd, out, opts.max_size); });
}

Result<std::string> deliver_parts(const fs::path& dir, std::span<const std::string_view> parts,
                                  const DeliverOptions& opts) {
  CopyResult sizes;
  pop3::CrlfSizer sizer;
  for (const std::string_view part : parts) {
    sizes.size += part.size();
    sizer.update(part);  // keeps a CR that ends one part for the next
  }
  sizes.crlf_size = sizer.size();
  if (sizes.size > opts.max_size) return too_large(opts.max_size);
  return deliver_with(dir, opts, [&](int out) -> Result<CopyResult> {
    if (!writev_all(out, parts)) return sys_error("write tmp file", errno);
    return sizes;
  });
}

}  // namespace apop::store
