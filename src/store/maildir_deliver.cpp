// Maildir delivery (store/maildir_deliver.hpp): `apop deliver --maildir`
// and the fetch destination write one message through tmp/ into new/.
#include "store/maildir_deliver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "common/posix_fd.hpp"
#include "pop3/crlf.hpp"
#include "store/dir_io.hpp"
#include "store/maildir_name.hpp"

namespace apop::store {

namespace fs = std::filesystem;

namespace {

std::string unique_base(const std::string& escaped_host) {
  static std::atomic<std::uint64_t> counter{0};
  timeval tv{};
  ::gettimeofday(&tv, nullptr);
  const std::uint64_t q = counter.fetch_add(1, std::memory_order_relaxed) + 1;
  return std::to_string(tv.tv_sec) + ".M" + std::to_string(tv.tv_usec) + "P" +
         std::to_string(::getpid()) + "Q" + std::to_string(q) + "." + escaped_host;
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
      failure = make_error(Errc::invalid, "message exceeds the maximum size of " +
                                              std::to_string(max_size) + " bytes");
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

}  // namespace

std::string local_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

Result<std::string> deliver(const fs::path& dir, int fd, const DeliverOptions& opts) {
  UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) return sys_error("open Maildir " + dir.string(), errno);
  UniqueFd tmpfd(open_dir_at(dirfd.get(), "tmp"));
  if (!tmpfd) return sys_error("open " + dir.string() + "/tmp", errno);
  UniqueFd newfd(open_dir_at(dirfd.get(), "new"));
  if (!newfd) return sys_error("open " + dir.string() + "/new", errno);

  const std::string host =
      escape_maildir_host(opts.hostname.empty() ? local_hostname() : opts.hostname);

  std::string base;
  UniqueFd out;
  for (int attempt = 0; attempt < 100 && !out; ++attempt) {
    base = unique_base(host);
    out.reset(::openat(tmpfd.get(), base.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out && errno != EEXIST) return sys_error("create tmp file in " + dir.string(), errno);
  }
  if (!out) return make_error(Errc::temporary, "no unique tmp file name in " + dir.string());
  TmpGuard guard(tmpfd.get(), base);

  auto copied = copy_message(fd, out.get(), opts.max_size);
  if (!copied) return copied.error();
  if (::fsync(out.get()) != 0) return sys_error("fsync tmp file", errno);
  if (out.close_checked() != 0) return sys_error("close tmp file", errno);

  const std::string final_name =
      base + ",S=" + std::to_string(copied->size) + ",W=" + std::to_string(copied->crlf_size);
  // The quota check and the link under one lock: two deliveries cannot both
  // take the last free bytes.
  std::optional<QuotaLock> quota_lock;
  if (!opts.quota.unlimited() || maildirsize_exists(dirfd.get())) {
    auto locked = QuotaLock::acquire(dirfd.get());
    if (!locked) return make_error(Errc::temporary, locked.error().message);
    quota_lock.emplace(std::move(*locked));
    if (!opts.quota.unlimited()) {
      auto usage = maildir_quota_usage_locked(dirfd.get(), opts.quota, copied->size, 1,
                                              static_cast<std::int64_t>(::time(nullptr)));
      if (!usage) return make_error(Errc::temporary, usage.error().message);
      if (!quota_allows(opts.quota, *usage, copied->size, 1)) {
        return over_quota_error(opts.quota, *usage, copied->size);
      }
    }
  }
  if (::linkat(tmpfd.get(), base.c_str(), newfd.get(), final_name.c_str(), 0) != 0) {
    const int err = errno;
    if (!link_unsupported(err)) return sys_error("link into new/", err);
    // Filesystems without hard links: rename, still refusing to replace.
    if (::renameat2(tmpfd.get(), base.c_str(), newfd.get(), final_name.c_str(), RENAME_NOREPLACE) !=
        0) {
      return sys_error("rename into new/", errno);
    }
    guard.disarm();
  }
  if (::fsync(newfd.get()) != 0) {
    const int err = errno;
    // Not known to be durable: take it back so the sender retries.
    ::unlinkat(newfd.get(), final_name.c_str(), 0);
    return sys_error("fsync new/", err);
  }
  if (quota_lock) maildirsize_append(dirfd.get(), static_cast<std::int64_t>(copied->size), 1);
  return final_name;
}

}  // namespace apop::store
