// Small POSIX helpers shared by the modules that do file I/O themselves
// (secret key, Maildir, mbox, fetch destinations and state): an owning file
// descriptor, a retry-on-EINTR wrapper for any system call, and reads and
// writes that survive short transfers and EINTR.
// Thread-safety: a UniqueFd is owned by one thread at a time; the functions
// are reentrant.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <span>
#include <string_view>
#include <utility>

namespace apop {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // Closes now and reports the close() error (NFS reports write errors here).
  int close_checked() {
    const int fd = std::exchange(fd_, -1);
    return fd >= 0 ? ::close(fd) : 0;
  }

 private:
  int fd_ = -1;
};

// Calls `call()` again while it fails with EINTR (-1 and errno == EINTR):
// retry_eintr([&] { return ::fsync(fd); }). Returns the last result.
template <typename Call>
auto retry_eintr(Call&& call) {
  for (;;) {
    const auto r = call();
    if (r != -1 || errno != EINTR) return r;
  }
}

// Writes all of `data`; false with errno set on failure.
inline bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t w = retry_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (w < 0) return false;
    data.remove_prefix(static_cast<std::size_t>(w));
  }
  return true;
}

// Reads until `out` is full or end of file: the number of bytes read (less
// than out.size() only at end of file), or -1 with errno on a read error.
inline ssize_t read_full(int fd, std::span<char> out) {
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = retry_eintr([&] { return ::read(fd, out.data() + got, out.size() - got); });
    if (n < 0) return -1;
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

}  // namespace apop
