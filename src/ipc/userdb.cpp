#include "ipc/userdb.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace apop::ipc {

namespace {

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

Result<sockaddr_un> unix_address(const std::filesystem::path& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const std::string p = path.string();
  if (p.size() >= sizeof sa.sun_path) {
    return make_error(Errc::invalid, "socket path too long: " + p);
  }
  std::memcpy(sa.sun_path, p.c_str(), p.size() + 1);
  return sa;
}

// Waits up to `ms` for `fd` to be readable; false on timeout or error.
bool wait_readable(int fd, std::chrono::milliseconds ms) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    const int n = ::poll(&p, 1, static_cast<int>(ms.count()));
    if (n < 0 && errno == EINTR) continue;
    return n > 0 && (p.revents & POLLIN) != 0;
  }
}

// One packet of at most kMaxIpcMessage bytes; a longer one is cut (and so
// fails to decode, MSG_TRUNC tells the full size).
std::optional<std::string> recv_packet(int fd) {
  std::string buf(limits::kMaxIpcMessage + 1, '\0');
  ssize_t n;
  do {
    n = ::recv(fd, buf.data(), buf.size(), MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  if (static_cast<std::size_t>(n) > limits::kMaxIpcMessage) return std::string();
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

}  // namespace

UserdbService::UserdbService(UserLookupFn lookup, std::vector<uid_t> allowed)
    : lookup_(std::move(lookup)), allowed_(std::move(allowed)) {}

std::optional<std::string> UserdbService::handle(std::string_view packet) const {
  auto req = decode_user_lookup(packet);
  if (!req) return std::nullopt;
  UserInfo info = lookup_(req->second.user);
  if (info.status != UserStatus::found) {
    info.mail_location.reset();
    info.quota_bytes.reset();
    info.quota_messages.reset();
  }
  std::string out;
  if (!encode_user_info(req->first, info, out)) {
    // A location over the wire's bound: the delivery is retried, not misrouted.
    (void)encode_user_info(req->first, UserInfo{UserStatus::temporary, std::nullopt}, out);
  }
  return out;
}

void UserdbService::serve(int listen_fd, std::chrono::milliseconds timeout) const {
  for (;;) {
    const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      return;  // shut down (EINVAL) or closed
    }
    UniqueFd conn(c);
    ucred peer{};
    socklen_t len = sizeof peer;
    if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
        std::find(allowed_.begin(), allowed_.end(), peer.uid) == allowed_.end()) {
      continue;
    }
    if (!wait_readable(c, timeout)) continue;
    const auto packet = recv_packet(c);
    if (!packet) continue;
    const auto reply = handle(*packet);
    if (reply) (void)::send(c, reply->data(), reply->size(), MSG_NOSIGNAL);
  }
}

Result<UniqueFd> listen_userdb(const std::filesystem::path& path, uid_t owner, gid_t group) {
  auto sa = unix_address(path);
  if (!sa) return sa.error();
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(Errc::permanent,
                        path.string() + " exists and is not a socket: remove it or move it away");
    }
    if (::unlink(path.c_str()) != 0) return make_error(Errc::permanent, errno_text("unlink"));
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return make_error(Errc::temporary, errno_text("socket"));
  // Created without any access for others until the owner and mode are set.
  const mode_t old = ::umask(0177);
  const int bound = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa);
  ::umask(old);
  if (bound != 0) return make_error(Errc::permanent, errno_text(("bind " + path.string()).c_str()));
  if (::lchown(path.c_str(), owner, group) != 0 || ::chmod(path.c_str(), 0660) != 0) {
    const Error e =
        make_error(Errc::permanent, errno_text(("chown/chmod " + path.string()).c_str()));
    ::unlink(path.c_str());
    return e;
  }
  if (::listen(fd.get(), 64) != 0) return make_error(Errc::temporary, errno_text("listen"));
  return fd;
}

Result<UserInfo> query_userdb(const std::filesystem::path& path, std::string_view user,
                              std::chrono::milliseconds timeout) {
  auto sa = unix_address(path);
  if (!sa) return sa.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return make_error(Errc::temporary, errno_text("socket"));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*sa), sizeof *sa) != 0) {
    const bool absent = errno == ENOENT || errno == ECONNREFUSED;
    return make_error(absent ? Errc::not_found : Errc::temporary,
                      errno_text(("connect " + path.string()).c_str()));
  }
  std::string req;
  if (auto r = encode_user_lookup(1, UserLookup{user}, req); !r) return r.error();
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return make_error(Errc::temporary, errno_text("send"));
  }
  if (!wait_readable(fd.get(), timeout)) {
    return make_error(Errc::temporary, "no answer from " + path.string());
  }
  const auto packet = recv_packet(fd.get());
  if (!packet) return make_error(Errc::temporary, "the auth process closed " + path.string());
  auto info = decode_user_info(*packet);
  if (!info || info->first != 1) {
    return make_error(Errc::temporary, "malformed answer from " + path.string());
  }
  return std::move(info->second);
}

}  // namespace apop::ipc
