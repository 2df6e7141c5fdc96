// net/sandbox: the worker's seccomp allow-list, applied in forked children
// (it cannot be undone): a child does a worker's work under it and exits 0;
// a child that tries what a worker never does dies of SIGSYS. And
// make_undumpable (net/privileges): a process of the same uid cannot read
// the memory of a non-dumpable one, while it can read a dumpable one's.
#include "net/sandbox.hpp"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pwd.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "net/privileges.hpp"
#include "temp_dir.hpp"

namespace apop::net {
namespace {

namespace fs = std::filesystem;

// How a forked child ended.
struct Ended {
  bool exited = false;
  int code = -1;   // exit status when exited
  int signal = 0;  // the killing signal otherwise
  std::string text() const {
    return exited ? "exited " + std::to_string(code)
                  : std::string("killed by ") + ::strsignal(signal);
  }
};

Ended wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Ended e;
  e.exited = WIFEXITED(status);
  if (e.exited) e.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
  return e;
}

// Runs `body` in a child that first forbids core dumps (a seccomp kill
// dumps core otherwise) and applies the sandbox; the child ends with
// _exit(body()) (no atexit handlers: under ASan, LeakSanitizer's exit scan
// would itself be outside the list). Exit 100: the sandbox failed to load.
Ended sandboxed(const SandboxOptions& opts, const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (auto r = forbid_core_dumps(); !r) ::_exit(100);
    if (auto r = apply_worker_sandbox(opts); !r) {
      std::fprintf(stderr, "%s\n", r.error().message.c_str());
      ::_exit(100);
    }
    ::_exit(body());
  }
  return wait_for(pid);
}

// --- the list itself ---

TEST(Sandbox, ListHasNothingAWorkerMustNeverDo) {
  const std::vector<std::string> never = {"execve",
                                          "execveat",
                                          "fork",
                                          "vfork",
                                          "clone3",
                                          "ptrace",
                                          "process_vm_readv",
                                          "process_vm_writev",
                                          "socket",
                                          "socketpair",
                                          "connect",
                                          "bind",
                                          "listen",
                                          "mount",
                                          "umount2",
                                          "pivot_root",
                                          "chroot",
                                          "unshare",
                                          "setns",
                                          "setuid",
                                          "setgid",
                                          "setreuid",
                                          "setregid",
                                          "setresuid",
                                          "setresgid",
                                          "setgroups",
                                          "setfsuid",
                                          "capset",
                                          "kexec_load",
                                          "kexec_file_load",
                                          "bpf",
                                          "perf_event_open",
                                          "keyctl",
                                          "add_key",
                                          "request_key",
                                          "init_module",
                                          "finit_module",
                                          "delete_module",
                                          "io_uring_setup",
                                          "userfaultfd",
                                          "memfd_create",
                                          "open_by_handle_at",
                                          "personality",
                                          "seccomp",
                                          "pidfd_open",
                                          "pidfd_getfd",
                                          "kcmp",
                                          "iopl",
                                          "ioperm",
                                          "reboot",
                                          "swapon",
                                          "acct",
                                          "syslog",
                                          "sethostname",
                                          "settimeofday",
                                          "clock_settime",
                                          "chmod",
                                          "chown",
                                          "symlink",
                                          "mknod"};
  for (bool mbox : {false, true}) {
    for (bool sqlite : {false, true}) {
      SandboxOptions o;
      o.mbox = mbox;
      o.sqlite = sqlite;
      const auto allowed = sandbox_allowed_syscalls(o);
      ASSERT_TRUE(std::is_sorted(allowed.begin(), allowed.end()));
      for (const auto& name : never) {
        EXPECT_EQ(std::find(allowed.begin(), allowed.end(), name), allowed.end())
            << name << " allowed with mbox=" << mbox << " sqlite=" << sqlite;
      }
    }
  }
}

TEST(Sandbox, OptionsAddOnlyWhatTheyNeed) {
  SandboxOptions maildir;
  maildir.mbox = false;
  SandboxOptions mbox;  // the default
  SandboxOptions sqlite;
  sqlite.mbox = false;
  sqlite.sqlite = true;
  auto has = [](const SandboxOptions& o, const char* name) {
    const auto l = sandbox_allowed_syscalls(o);
    return std::find(l.begin(), l.end(), name) != l.end();
  };
  for (const char* name : {"openat", "renameat", "unlinkat", "fsync", "flock", "getdents64",
                           "epoll_wait", "accept", "getrandom", "clone", "futex"}) {
    EXPECT_TRUE(has(maildir, name)) << name;
  }
  for (const char* name : {"link", "linkat", "unlink", "ftruncate", "pwrite64", "fchown"}) {
    EXPECT_FALSE(has(maildir, name)) << name;
    EXPECT_TRUE(has(mbox, name)) << name;
  }
  EXPECT_FALSE(has(mbox, "fdatasync"));
  EXPECT_TRUE(has(sqlite, "fdatasync"));
  EXPECT_FALSE(has(sqlite, "link"));
}

// --- a worker's work under the sandbox ---

// A throw-away self-signed P-256 certificate and key in a server context,
// and a client context that does not verify it.
struct TlsPair {
  SSL_CTX* server = nullptr;
  SSL_CTX* client = nullptr;
  TlsPair() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("sandbox.test"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    server = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(server, cert);
    SSL_CTX_use_PrivateKey(server, key);
    client = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client, SSL_VERIFY_NONE, nullptr);
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  ~TlsPair() {
    SSL_CTX_free(server);
    SSL_CTX_free(client);
  }
};

// Maildir work: deliver into tmp/ and move to new/, list, move to cur/,
// read back, lock, remove, sync. 0 on success, else the failed step.
int maildir_work(const fs::path& md) {
  const std::string msg = "Subject: x\r\n\r\nbody\r\n";
  const fs::path tmp = md / "tmp" / "1.M1P1.host";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 || ::write(fd, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size()) ||
      ::fsync(fd) != 0 || ::close(fd) != 0) {
    return 1;
  }
  if (::rename(tmp.c_str(), (md / "new" / "1.M1P1.host").c_str()) != 0) return 2;
  std::error_code ec;
  int listed = 0;
  for (const auto& e : fs::directory_iterator(md / "new", ec)) {
    fs::rename(e.path(), md / "cur" / (e.path().filename().string() + ":2,S"), ec);
    if (ec) return 3;
    ++listed;
  }
  if (ec || listed != 1) return 4;
  std::ifstream in(md / "cur" / "1.M1P1.host:2,S", std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (back != msg) return 5;
  struct stat st {};
  if (::stat((md / "cur").c_str(), &st) != 0 ||
      fs::file_size(md / "cur" / "1.M1P1.host:2,S") != msg.size())
    return 6;
  int dir = ::open(md.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::flock(dir, LOCK_EX | LOCK_NB) != 0) return 7;
  int cur = ::openat(dir, "cur", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0 || ::unlinkat(cur, "1.M1P1.host:2,S", 0) != 0 || ::fsync(cur) != 0) return 8;
  if (::flock(dir, LOCK_UN) != 0 || ::close(cur) != 0 || ::close(dir) != 0) return 9;
  return 0;
}

// A TLS handshake with itself over `fds` (a connected stream pair): the
// server side on a new thread, the client here; one line each way.
int tls_work(const TlsPair& tls, const int fds[2]) {
  int server_result = -1;
  std::thread server([&] {
    SSL* s = SSL_new(tls.server);
    SSL_set_fd(s, fds[1]);
    char buf[16] = {};
    if (SSL_accept(s) == 1 && SSL_write(s, "+OK ready\r\n", 11) == 11 &&
        SSL_read(s, buf, sizeof buf) == 6 && std::string(buf, 6) == "QUIT\r\n") {
      server_result = 0;
    }
    SSL_shutdown(s);
    SSL_free(s);
  });
  SSL* c = SSL_new(tls.client);
  SSL_set_fd(c, fds[0]);
  char buf[16] = {};
  int rc = 0;
  if (SSL_connect(c) != 1) rc = 20;
  if (rc == 0 && (SSL_read(c, buf, sizeof buf) != 11 || std::string(buf, 11) != "+OK ready\r\n")) {
    rc = 21;
  }
  if (rc == 0 && SSL_write(c, "QUIT\r\n", 6) != 6) rc = 22;
  server.join();
  SSL_free(c);
  if (rc == 0 && server_result != 0) rc = 23;
  return rc;
}

// What a worker does with the auth process: send a request and read the
// reply on an already-connected SOCK_SEQPACKET pair, with poll and epoll.
int ipc_work(const int pkt[2], int epfd) {
  if (::send(pkt[0], "LOGIN", 5, 0) != 5) return 30;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = pkt[1];
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, pkt[1], &ev) != 0) return 31;
  epoll_event got{};
  if (::epoll_wait(epfd, &got, 1, 1000) != 1 || got.data.fd != pkt[1]) return 32;
  char buf[16];
  if (::recv(pkt[1], buf, sizeof buf, 0) != 5) return 33;
  if (::send(pkt[1], "OK", 2, MSG_NOSIGNAL) != 2) return 34;
  pollfd p{pkt[0], POLLIN, 0};
  if (::poll(&p, 1, 1000) != 1 || ::recv(pkt[0], buf, sizeof buf, 0) != 2) return 35;
  return 0;
}

// Asio's reactor (made before the sandbox, like a worker's io_context): a
// timer and an async read and write on a stream pair.
int asio_work(asio::io_context& io, asio::local::stream_protocol::socket& a,
              asio::local::stream_protocol::socket& b) {
  bool timer_fired = false;
  std::array<char, 4> in{};
  std::size_t read = 0;
  asio::steady_timer t(io, std::chrono::milliseconds(1));
  t.async_wait([&](const asio::error_code& ec) { timer_fired = !ec; });
  asio::async_write(a, asio::buffer("RETR", 4), [](const asio::error_code&, std::size_t) {});
  asio::async_read(b, asio::buffer(in), [&](const asio::error_code& ec, std::size_t n) {
    if (!ec) read = n;
  });
  io.run();
  if (!timer_fired) return 40;
  if (read != 4 || std::string(in.data(), 4) != "RETR") return 41;
  return 0;
}

TEST(Sandbox, WorkerWorkRunsUnderIt) {
  for (bool mbox : {false, true}) {
    test::TempDir dir("apop-sandbox");
    const fs::path md = dir.path() / "Maildir";
    for (const char* sub : {"tmp", "new", "cur"}) fs::create_directories(md / sub);
    // Everything a worker holds before the sandbox: TLS contexts, the
    // connections, the IPC channel, the event loop.
    TlsPair tls;
    int stream[2], pkt[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stream), 0);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pkt), 0);
    const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
    ASSERT_GE(epfd, 0);
    asio::io_context io;
    asio::local::stream_protocol::socket a(io), b(io);
    asio::local::connect_pair(a, b);

    SandboxOptions o;
    o.mbox = mbox;
    const Ended e = sandboxed(o, [&] {
      if (int rc = maildir_work(md); rc != 0) return rc;
      if (int rc = tls_work(tls, stream); rc != 0) return rc;
      if (int rc = ipc_work(pkt, epfd); rc != 0) return rc;
      if (int rc = asio_work(io, a, b); rc != 0) return rc;
      unsigned char random[32];
      if (RAND_bytes(random, sizeof random) != 1) return 50;
      if (::getrandom(random, sizeof random, 0) != static_cast<ssize_t>(sizeof random)) return 51;
      // clone3 is refused softly (glibc then uses clone, as std::thread above did).
      if (::syscall(SYS_clone3, nullptr, 0) != -1 || errno != ENOSYS) return 52;
      if (::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) return 53;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return 0;
    });
    EXPECT_TRUE(e.exited && e.code == 0) << "mbox=" << mbox << ": " << e.text();
    for (int fd : {stream[0], stream[1], pkt[0], pkt[1], epfd}) ::close(fd);
  }
}

TEST(Sandbox, MboxDotlockWorkRunsUnderIt) {
  test::TempDir dir("apop-sandbox");
  const fs::path spool = dir.path();
  const Ended e = sandboxed(SandboxOptions{}, [&] {
    const std::string mine = (spool / "alice.lock.1234").string();
    const std::string lock = (spool / "alice.lock").string();
    int fd = ::open(mine.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || ::close(fd) != 0) return 1;
    if (::link(mine.c_str(), lock.c_str()) != 0 || ::unlink(mine.c_str()) != 0) return 2;
    if (::kill(::getppid(), 0) != 0) return 3;  // "is the lock's owner alive?"
    if (::unlink(lock.c_str()) != 0) return 4;
    // An OFD lock and an in-place rewrite of the mbox file.
    fd = ::open((spool / "alice").c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || ::fcntl(fd, F_OFD_SETLK, &fl) != 0) return 5;
    if (::pwrite(fd, "From x\n", 7, 0) != 7 || ::ftruncate(fd, 7) != 0 || ::fsync(fd) != 0)
      return 6;
    if (::fchmod(fd, 0600) != 0 || ::futimens(fd, nullptr) != 0) return 7;
    void* p = ::mmap(nullptr, 7, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED || std::memcmp(p, "From x\n", 7) != 0 || ::munmap(p, 7) != 0) return 8;
    return ::close(fd) == 0 ? 0 : 9;
  });
  EXPECT_TRUE(e.exited && e.code == 0) << e.text();
}

// --- what kills a worker ---

struct Forbidden {
  const char* what;
  std::function<void()> call;
  bool mbox = true;
};

TEST(Sandbox, ForbiddenCallsKillTheProcess) {
  int unconnected = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(unconnected, 0);
  const std::vector<Forbidden> cases = {
      {"execve /bin/true",
       [] {
         char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
         ::execve("/bin/true", argv, environ);
       }},
      {"socket(AF_INET)", [] { ::socket(AF_INET, SOCK_STREAM, 0); }},
      {"socket(AF_UNIX)", [] { ::socket(AF_UNIX, SOCK_SEQPACKET, 0); }},
      {"connect",
       [&] {
         sockaddr_un to{};
         to.sun_family = AF_UNIX;
         std::strcpy(to.sun_path, "/nonexistent/apop.sock");
         ::connect(unconnected, reinterpret_cast<sockaddr*>(&to), sizeof to);
       }},
      {"ptrace(PTRACE_TRACEME)", [] { ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr); }},
      {"fork", [] { ::fork(); }},
      {"mprotect PROT_EXEC",
       [] {
         void* p =
             ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
         ::mprotect(p, 4096, PROT_READ | PROT_EXEC);
       }},
      {"prctl(PR_SET_DUMPABLE, 1)", [] { ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); }},
      {"setuid", [] { ::syscall(SYS_setuid, 65534); }},
      {"signal to another process", [] { ::kill(::getppid(), SIGCONT); }},
      {"kill(pid, 0) without mbox", [] { ::kill(::getppid(), 0); }, false},
      {"link without mbox", [] { ::link("/nonexistent/a", "/nonexistent/b"); }, false},
      {"fcntl(F_SETLK) without sqlite",
       [] {
         struct flock fl {};
         ::fcntl(0, F_SETLK, &fl);
       }},
      {"ioctl(TIOCSTI)",
       [] {
         char c = 'x';
         ::ioctl(0, TIOCSTI, &c);
       }},
  };
  for (const auto& c : cases) {
    SandboxOptions o;
    o.mbox = c.mbox;
    const Ended e = sandboxed(o, [&] {
      c.call();
      return 0;  // survived: a failure
    });
    EXPECT_TRUE(!e.exited && e.signal == SIGSYS) << c.what << ": " << e.text();
  }
  ::close(unconnected);
}

// A thread already running when the sandbox is applied (a worker's pool
// started earlier) is under it too (SECCOMP_FILTER_FLAG_TSYNC).
TEST(Sandbox, ThreadsStartedBeforeAreCovered) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int go[2];
    if (::pipe(go) != 0) ::_exit(9);
    std::thread early([&] {
      char c = 0;
      if (::read(go[0], &c, 1) != 1) ::_exit(8);
      ::socket(AF_INET, SOCK_STREAM, 0);  // must kill the whole process
      ::_exit(0);
    });
    if (!forbid_core_dumps() || !apply_worker_sandbox(SandboxOptions{})) ::_exit(100);
    (void)::write(go[1], "g", 1);
    early.join();
    ::_exit(0);
  }
  const Ended e = wait_for(pid);
  EXPECT_TRUE(!e.exited && e.signal == SIGSYS) << e.text();
}

TEST(Sandbox, LogViolationsLetsTheCallThrough) {
  SandboxOptions o;
  o.log_violations = true;
  const Ended e = sandboxed(o, [] {
    const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    return s >= 0 && ::close(s) == 0 ? 0 : 1;
  });
  EXPECT_TRUE(e.exited && e.code == 0) << e.text();
}

// --- non-dumpable: the same user cannot read the memory ---

// uid and gid of `nobody`, to run the check as a user without CAP_SYS_PTRACE
// when the tests run as root.
bool nobody_ids(uid_t& uid, gid_t& gid) {
  const passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr) return false;
  uid = pw->pw_uid;
  gid = pw->pw_gid;
  return true;
}

bool become(uid_t uid, gid_t gid) {
  return ::setgroups(0, nullptr) == 0 && ::setresgid(gid, gid, gid) == 0 &&
         ::setresuid(uid, uid, uid) == 0;
}

// A target process (as `nobody` when root) that is dumpable or made
// undumpable (and sandboxed) and waits; a prober of the same uid opens
// /proc/TARGET/mem and tries PTRACE_ATTACH. Returns the prober's exit code:
// 0 both refused, 1 open worked, 2 attach worked, 3 both worked, 9 setup.
int probe_target(bool undumpable) {
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  const bool root = ::geteuid() == 0;
  if (root && !nobody_ids(uid, gid)) return 9;
  int hold[2], ready[2];
  if (::pipe(hold) != 0 || ::pipe(ready) != 0) return 9;
  std::fflush(nullptr);
  const pid_t target = ::fork();
  if (target == 0) {
    ::close(hold[1]);
    ::close(ready[0]);
    if (root && !become(uid, gid)) ::_exit(9);
    if (undumpable) {
      if (!make_undumpable() || !apply_worker_sandbox(SandboxOptions{})) ::_exit(9);
    } else {
      ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);                  // a uid change reset it
      ::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);  // Yama, where present
    }
    char c = 0;
    (void)::write(ready[1], "r", 1);
    (void)::read(hold[0], &c, 1);
    ::_exit(0);
  }
  ::close(hold[0]);
  ::close(ready[1]);
  char c = 0;
  if (::read(ready[0], &c, 1) != 1) return 9;
  const pid_t prober = ::fork();
  if (prober == 0) {
    if (root && !become(uid, gid)) ::_exit(9);
    int rc = 0;
    const std::string mem = "/proc/" + std::to_string(target) + "/mem";
    const int fd = ::open(mem.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) rc |= 1;
    if (fd < 0 && errno != EACCES && errno != EPERM) ::_exit(9);
    if (::ptrace(PTRACE_SEIZE, target, nullptr, nullptr) == 0) {
      rc |= 2;
      ::ptrace(PTRACE_DETACH, target, nullptr, nullptr);
    }
    ::_exit(rc);
  }
  const Ended p = wait_for(prober);
  ::close(hold[1]);  // the target ends
  ::close(ready[0]);
  wait_for(target);
  return p.exited ? p.code : 9;
}

TEST(Sandbox, UndumpableWorkerIsClosedToItsOwnUser) {
  // Control: a dumpable process of the same uid is open to the prober
  // (else the check below could not fail).
  EXPECT_EQ(probe_target(false), 3) << "a dumpable target's memory should be readable";
  EXPECT_EQ(probe_target(true), 0) << "an undumpable target's memory was readable";
  // And the flag itself (root bypasses the checks above through
  // CAP_SYS_PTRACE, hence the prober as `nobody`).
  const Ended e =
      sandboxed(SandboxOptions{}, [] { return ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 ? 0 : 1; });
  EXPECT_TRUE(e.exited && e.code == 0) << e.text();
}

}  // namespace
}  // namespace apop::net
