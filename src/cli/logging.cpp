#include "cli/logging.hpp"

#include <fcntl.h>
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

namespace apop::cli {

namespace {

// The same layout main.cpp gives stderr, without colour codes.
constexpr const char* kFilePattern = "%Y-%m-%dT%H:%M:%S.%e%z %l %v";

int open_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

}  // namespace

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
    const std::string& path, std::chrono::milliseconds check_every) {
  int fd = open_append(path);
  if (fd < 0) {
    return make_error(Errc::permanent,
                      "cannot open log file " + path + ": " + std::strerror(errno));
  }
  return std::shared_ptr<WatchedFileSink>(new WatchedFileSink(path, fd, check_every));
}

WatchedFileSink::WatchedFileSink(std::string path, int fd, std::chrono::milliseconds check_every)
    : path_(std::move(path)), fd_(fd), check_every_(check_every) {
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
  if (::stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) return;
  int fd = open_append(path_);
  if (fd < 0) {
    if (!reopen_failed_reported_) {
      reopen_failed_reported_ = true;
      std::fprintf(stderr, "apop: cannot reopen log file %s after rotation: %s\n", path_.c_str(),
                   std::strerror(errno));
    }
    return;  // keep writing to the old file rather than lose lines
  }
  reopen_failed_reported_ = false;
  ::close(fd_);
  fd_ = fd;
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
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // disk full, I/O error: a logger cannot report it anywhere better
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

Result<void> install_logger(const LogTarget& target, spdlog::level::level_enum level) {
  std::shared_ptr<spdlog::logger> logger;
  switch (target.kind) {
    case LogTarget::Kind::stderr_stream:
      // main() already installed it (stderr, ISO timestamps).
      logger = spdlog::default_logger();
      break;
    case LogTarget::Kind::file: {
      auto sink = WatchedFileSink::open(target.path);
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
