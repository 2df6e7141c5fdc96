// Where `apop serve` writes its log (setting `log`) and how much (`log_level`).
//
// Targets:
//   stderr        the default (systemd's journal takes it from there)
//   file:PATH     appended to PATH, one write(2) per line (O_APPEND); after
//                 logrotate moves or removes the file, the next line written
//                 (at most ~1 s later) notices it by inode and reopens PATH,
//                 so no postrotate signal is needed; `copytruncate` works too.
//                 PATH is opened (at start-up as root, after rotation as the
//                 service user) without following a symbolic link, and is
//                 refused unless it is a regular file with one link, owned
//                 by root, the service user or the process's own user: a
//                 service account that owns the log directory cannot point
//                 the log at another file (docs/security.md)
//   syslog        syslog(3), ident "apop", facility LOG_MAIL, with the pid
//
// Lines are the same key=value text on every target ("login failed user=U
// mech=M addr=IP:PORT tls=0|1 reason=..."); stderr and file lines start
// with an ISO 8601 timestamp and the level, syslog adds its own.
//
// Threading: the sinks are spdlog "_mt" sinks (a mutex per sink); any
// thread may log. install_logger() replaces spdlog's default logger and must
// be called before other threads log (at start-up).
#pragma once

#include <spdlog/common.h>
#include <spdlog/sinks/base_sink.h>

#include <sys/types.h>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace apop::cli {

struct LogTarget {
  enum class Kind { stderr_stream, file, syslog };
  Kind kind = Kind::stderr_stream;
  std::string path;  // Kind::file only
};

// "stderr", "syslog" or "file:/absolute/path"; Errc::invalid otherwise.
Result<LogTarget> parse_log_target(std::string_view text);
// "trace", "debug", "info", "warning", "error", "critical", "off" ("warn"
// is accepted too); Errc::invalid otherwise.
Result<spdlog::level::level_enum> parse_log_level(std::string_view text);

// The level to run at: `log_level` (validated with parse_log_level; info if
// it is not valid), at least debug when `verbose`.
spdlog::level::level_enum effective_log_level(std::string_view log_level, bool verbose);

// Who may own the log file: root, the user the process runs as when it
// opens it, and the service user (--user) the server drops to.
struct LogFileOwners {
  std::optional<uid_t> service_uid;
  std::string service_user;  // its name, for messages
};

// Opens (creates, mode 0640) PATH for appending: O_NOFOLLOW, O_NOCTTY,
// O_CLOEXEC, and O_NONBLOCK while opening (a FIFO does not hang it). Then,
// on the descriptor, refuses (Errc::permanent, naming PATH and the owner)
// a symbolic link, anything but a regular file, a file with more than one
// hard link (one planted to e.g. /etc/shadow), and a file owned by another
// user than root, geteuid() or owners.service_uid. Returns the descriptor.
Result<int> open_log_file(const std::string& path, const LogFileOwners& owners);

// A file sink that follows log rotation: before a write, at most once per
// `check_every` (zero: every write), it compares the inode at PATH with the
// one it has open and reopens PATH when they differ or PATH is gone. A
// failed or refused reopen keeps the old descriptor (and says so once on
// stderr).
class WatchedFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // open_log_file(path, owners); its error on failure.
  static Result<std::shared_ptr<WatchedFileSink>> open(
      const std::string& path, const LogFileOwners& owners = {},
      std::chrono::milliseconds check_every = std::chrono::seconds(1));
  ~WatchedFileSink() override;
  WatchedFileSink(const WatchedFileSink&) = delete;
  WatchedFileSink& operator=(const WatchedFileSink&) = delete;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}  // every line is one write(2): nothing is buffered

 private:
  WatchedFileSink(std::string path, int fd, LogFileOwners owners,
                  std::chrono::milliseconds check_every);
  void follow_rotation();  // under mutex_

  std::string path_;
  LogFileOwners owners_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::chrono::milliseconds check_every_;
  std::chrono::steady_clock::time_point next_check_{};
  bool reopen_failed_reported_ = false;
};

// Makes the default logger ("apop") write to `target` at `level`.
// Errc::permanent when the file cannot be opened or is refused (see
// open_log_file; `owners` names the service user).
Result<void> install_logger(const LogTarget& target, spdlog::level::level_enum level,
                            const LogFileOwners& owners = {});

}  // namespace apop::cli
