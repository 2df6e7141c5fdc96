// Delivery into an mbox file (store/mbox.hpp, "Delivery"): `apop deliver
// --mbox` and the fetch destination append one message under both locks.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "store/dir_io.hpp"
#include "store/mbox.hpp"
#include "store/mbox_internal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using mbox_detail::pread_retry;
using mbox_detail::same_file;

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
  if (!opts.quota.unlimited()) {
    QuotaUsage usage{static_cast<std::int64_t>(original), 0};
    if (opts.quota.messages != 0) {
      auto count = count_mbox_messages(fd.get());
      if (!count) return make_error(Errc::temporary, count.error().message);
      usage.messages = static_cast<std::int64_t>(*count);
    }
    const std::uint64_t adding = lead.size() + out.size();
    if (!quota_allows(opts.quota, usage, adding, 1)) {
      return over_quota_error(opts.quota, usage, adding);
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
