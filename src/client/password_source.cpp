#include "client/password_source.hpp"
#include "client/spawn_setup.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/posix_fd.hpp"
#include "common/wipe.hpp"

extern char** environ;

namespace apop::client {
namespace {

using Clock = std::chrono::steady_clock;

std::string expand_home(const std::string& s) {
  if (s.starts_with("~/")) {
    const char* home = std::getenv("HOME");
    if (home != nullptr && *home != '\0') return std::string(home) + s.substr(1);
  }
  return s;
}

// The first line of `text` (CR LF or LF), wiping `text`.
Result<std::string> first_line(std::string& text, const std::string& what) {
  std::size_t end = text.find('\n');
  if (end == std::string::npos) end = text.size();
  if (end > 0 && text[end - 1] == '\r') --end;
  std::string line = text.substr(0, end);
  wipe(text);
  if (line.empty()) return make_error(Errc::invalid, what + ": the first line is empty");
  if (line.find('\0') != std::string::npos) {
    wipe(line);
    return make_error(Errc::invalid, what + ": the first line contains a NUL");
  }
  return line;
}

}  // namespace

Result<std::string> read_password_file(const std::string& path) {
  const std::string file = expand_home(path);
  const std::string what = "password_file " + file;
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd) return make_error(Errc::invalid, what + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return make_error(Errc::invalid, what + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(Errc::invalid, what + ": permissions " + mode +
                                         " are too open (group or other may access it); "
                                         "refusing it: chmod 600 " +
                                         file);
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n < 0) {
      wipe(buf, sizeof buf);
      wipe(text);
      return make_error(Errc::invalid, what + ": " + std::strerror(errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.find('\n') != std::string::npos || text.size() > limits::kMaxPasswordCommandOutput)
      break;
  }
  wipe(buf, sizeof buf);
  return first_line(text, what);
}

Result<std::string> run_password_command(const std::vector<std::string>& argv_in,
                                         const CommandLimits& lim) {
  if (argv_in.empty() || argv_in.front().empty())
    return make_error(Errc::invalid, "password_command: empty");
  std::vector<std::string> args;
  for (const auto& a : argv_in) args.push_back(expand_home(a));
  const std::string what = "password_command " + args.front();
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0)
    return make_error(Errc::temporary, what + ": pipe: " + std::strerror(errno));
  UniqueFd rd(p[0]), wr(p[1]);

  SpawnSetup spawn;
  sigset_t empty, defaults;
  sigemptyset(&empty);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  int rc = posix_spawn_file_actions_addopen(&spawn.fa, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&spawn.fa, wr.get(), 1);
  if (rc == 0) {
    rc = posix_spawnattr_setflags(
        &spawn.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  }
  if (rc == 0) rc = posix_spawnattr_setpgroup(&spawn.attr, 0);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&spawn.attr, &empty);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&spawn.attr, &defaults);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawnp(&pid, argv[0], &spawn.fa, &spawn.attr, argv.data(), environ);
  if (rc != 0) return make_error(Errc::temporary, what + ": cannot run it: " + std::strerror(rc));
  ::setpgid(pid, pid);
  wr.reset();

  // Read standard output until EOF, the size bound or the deadline.
  const auto deadline = Clock::now() + lim.timeout;
  std::string out;
  char buf[4096];
  std::string problem;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      problem = "did not finish within " + std::to_string(lim.timeout.count()) + " ms; killed";
      break;
    }
    pollfd pfd{rd.get(), POLLIN, 0};
    const int pr = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (pr < 0 && errno != EINTR) {
      problem = std::string("poll: ") + std::strerror(errno);
      break;
    }
    if (pr <= 0) continue;
    const ssize_t n = retry_eintr([&] { return ::read(rd.get(), buf, sizeof buf); });
    if (n < 0) {
      problem = std::string("read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > lim.max_output) {
      problem = "wrote more than " + std::to_string(lim.max_output) + " octets; killed";
      break;
    }
  }
  wipe(buf, sizeof buf);
  rd.reset();
  int status = 0;
  if (!problem.empty()) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    (void)retry_eintr([&] { return ::waitpid(pid, &status, 0); });
    wipe(out);
    return make_error(Errc::temporary, what + ": " + problem);
  }
  // Output closed: wait for the exit, within what is left of the timeout.
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      wipe(out);
      return make_error(Errc::temporary, what + ": waitpid: " + std::strerror(errno));
    }
    if (Clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      (void)retry_eintr([&] { return ::waitpid(pid, &status, 0); });
      wipe(out);
      return make_error(Errc::temporary, what + ": did not exit within " +
                                             std::to_string(lim.timeout.count()) + " ms; killed");
    }
    ::usleep(2000);
  }
  if (WIFSIGNALED(status)) {
    wipe(out);
    return make_error(Errc::temporary,
                      what + ": killed by signal " + std::to_string(WTERMSIG(status)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    wipe(out);
    return make_error(
        Errc::temporary,
        what + ": exit status " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  }
  auto line = first_line(out, what);
  if (!line) return make_error(Errc::temporary, line.error().message);
  return line;
}

}  // namespace apop::client
