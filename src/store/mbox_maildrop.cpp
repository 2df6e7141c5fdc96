// Serving an mbox file as a maildrop and applying deletions at QUIT
// (store/mbox.hpp, "Serving"): the snapshot taken at open, RETR/TOP from it,
// and the rewrite by rename (the in-place one is in mbox_inplace.cpp).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <unordered_set>
#include <utility>

#include "store/maildir_name.hpp"
#include "store/mbox.hpp"
#include "store/mbox_internal.hpp"

namespace apop::store {

namespace fs = std::filesystem;
using namespace mbox_detail;

namespace {

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

std::string tmp_name(const fs::path& file) { return "." + file.filename().string() + ".apop-new"; }

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

std::optional<MboxRewrite> parse_mbox_rewrite(std::string_view s) {
  if (s == "auto") return MboxRewrite::automatic;
  if (s == "rename") return MboxRewrite::rename;
  if (s == "in-place") return MboxRewrite::in_place;
  return std::nullopt;
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

Result<std::unique_ptr<pop3::Maildrop>> MboxOpener::open(const pop3::MailboxAddress&) {
  return open_mbox(file_, opts_);
}

Result<std::unique_ptr<pop3::Maildrop>> MboxOpener::open_file(const fs::path& file) {
  return open_mbox(file, opts_);
}

}  // namespace apop::store
