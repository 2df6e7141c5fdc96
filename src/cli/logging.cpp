#include "cli/logging.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/posix_fd.hpp"

namespace apop::cli {

namespace {

// The same layout main.cpp gives stderr, without colour codes.
constexpr const char* kFilePattern = "%Y-%m-%dT%H:%M:%S.%e%z %l %v";

// "uid 12345" or "uid 1000 (alice)".
std::string describe_uid(uid_t uid) {
  std::string out = "uid " + std::to_string(uid);
  std::vector<char> buf(4096);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    out += " (" + std::string(pw.pw_name) + ")";
  }
  return out;
}

}  // namespace

Result<int> open_log_file(const std::string& path, const LogFileOwners& owners) {
  // O_NONBLOCK: opening a FIFO for writing would wait for a reader; it is
  // refused below anyway, and cleared again for the regular file.
  UniqueFd fd(::open(path.c_str(),
                     O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK,
                     0640));
  if (fd.get() < 0) {
    const int e = errno;
    if (e == ELOOP) {
      return make_error(Errc::permanent, "log file " + path +
                                             " is a symbolic link: refusing to follow it (name "
                                             "the file itself)");
    }
    return make_error(Errc::permanent, "cannot open log file " + path + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return make_error(Errc::permanent,
                      "cannot stat log file " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(Errc::permanent,
                      "log file " + path + " is not a regular file: refusing to write to it");
  }
  const bool owner_ok = st.st_uid == 0 || st.st_uid == ::geteuid() ||
                        (owners.service_uid && st.st_uid == *owners.service_uid);
  if (!owner_ok) {
    std::string allowed = "root";
    if (::geteuid() != 0) allowed += ", " + describe_uid(::geteuid());
    if (owners.service_uid) {
      allowed += " or the service user " + owners.service_user + " (uid " +
                 std::to_string(*owners.service_uid) + ")";
    }
    return make_error(Errc::permanent, "log file " + path + " is owned by " +
                                           describe_uid(st.st_uid) + ", not by " + allowed +
                                           ": refusing to write to it");
  }
  if (st.st_nlink > 1) {
    return make_error(Errc::permanent,
                      "log file " + path + " has " + std::to_string(st.st_nlink) +
                          " hard links (it may be another file's name): refusing to write to it");
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return make_error(Errc::permanent,
                      "cannot set up log file " + path + ": " + std::strerror(errno));
  }
  return fd.release();
}

Result<LogTarget> parse_log_target(std::string_view text) {
  if (text == "stderr") return LogTarget{LogTarget::Kind::stderr_stream, {}};
  if (text == "syslog") return LogTarget{LogTarget::Kind::syslog, {}};
  if (text.substr(0, 5) == "file:") {
    std::string path(text.substr(5));
    if (path.empty() || path.front() != '/') {
      return make_error(Errc::invalid, "log file must be an absolute path: file:/var/log/apop.log");
    }
    return LogTarget{LogTarget::Kind::file, std::move(path)};
  }
  return make_error(Errc::invalid,
                    "log must be stderr, syslog or file:/PATH, not \"" + std::string(text) + "\"");
}

Result<spdlog::level::level_enum> parse_log_level(std::string_view text) {
  using L = spdlog::level::level_enum;
  static constexpr std::array<std::pair<std::string_view, L>, 8> kLevels = {{
      {"trace", L::trace},
      {"debug", L::debug},
      {"info", L::info},
      {"warning", L::warn},
      {"warn", L::warn},
      {"error", L::err},
      {"critical", L::critical},
      {"off", L::off},
  }};
  for (const auto& [name, level] : kLevels) {
    if (text == name) return level;
  }
  return make_error(
      Errc::invalid,
      "log_level must be trace, debug, info, warning, error, critical or off, not \"" +
          std::string(text) + "\"");
}

spdlog::level::level_enum effective_log_level(std::string_view log_level, bool verbose) {
  auto level = parse_log_level(log_level);
  spdlog::level::level_enum l = level ? *level : spdlog::level::info;
  return verbose && l > spdlog::level::debug ? spdlog::level::debug : l;
}

Result<std::shared_ptr<WatchedFileSink>> WatchedFileSink::open(
    const std::string& path, const LogFileOwners& owners, std::chrono::milliseconds check_every) {
  auto fd = open_log_file(path, owners);
  if (!fd) return fd.error();
  return std::shared_ptr<WatchedFileSink>(new WatchedFileSink(path, *fd, owners, check_every));
}

WatchedFileSink::WatchedFileSink(std::string path, int fd, LogFileOwners owners,
                                 std::chrono::milliseconds check_every)
    : path_(std::move(path)), owners_(std::move(owners)), fd_(fd), check_every_(check_every) {
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  set_formatter(std::make_unique<spdlog::pattern_formatter>(kFilePattern));
}

WatchedFileSink::~WatchedFileSink() {
  if (fd_ >= 0) ::close(fd_);
}

void WatchedFileSink::follow_rotation() {
  const auto now = std::chrono::steady_clock::now();
  if (now < next_check_) return;
  next_check_ = now + check_every_;
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) return;
  // The same checks as at start-up (now as the service user).
  auto fd = open_log_file(path_, owners_);
  if (!fd) {
    if (!reopen_failed_reported_) {
      reopen_failed_reported_ = true;
      std::fprintf(stderr, "apop: after log rotation: %s; still writing to the old file\n",
                   fd.error().message.c_str());
    }
    return;  // keep writing to the old file rather than lose lines
  }
  reopen_failed_reported_ = false;
  ::close(fd_);
  fd_ = *fd;
  if (::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

void WatchedFileSink::sink_it_(const spdlog::details::log_msg& msg) {
  follow_rotation();
  spdlog::memory_buf_t line;
  formatter_->format(msg, line);
  // One write(2) per line: with O_APPEND, lines never interleave and a
  // copytruncate leaves no hole.
  // Disk full, I/O error: a logger cannot report it anywhere better.
  (void)write_all(fd_, std::string_view(line.data(), line.size()));
}

Result<void> install_logger(const LogTarget& target, spdlog::level::level_enum level,
                            const LogFileOwners& owners) {
  std::shared_ptr<spdlog::logger> logger;
  switch (target.kind) {
    case LogTarget::Kind::stderr_stream:
      // main() already installed it (stderr, ISO timestamps).
      logger = spdlog::default_logger();
      break;
    case LogTarget::Kind::file: {
      auto sink = WatchedFileSink::open(target.path, owners);
      if (!sink) return sink.error();
      logger = std::make_shared<spdlog::logger>("apop", *sink);
      break;
    }
    case LogTarget::Kind::syslog:
      // The payload only: syslog stamps the time, the level is the priority.
      logger = std::make_shared<spdlog::logger>(
          "apop",
          std::make_shared<spdlog::sinks::syslog_sink_mt>("apop", LOG_PID, LOG_MAIL, false));
      break;
  }
  logger->set_level(level);
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);
  return {};
}

}  // namespace apop::cli
