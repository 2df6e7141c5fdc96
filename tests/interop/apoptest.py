"""Shared helpers for the apop interop tests.

Every test gets its own temporary data directory (ApopEnv) and starts its own
server (Server) on a free loopback port, so tests are independent and can run
in any order. The binary under test is $APOP_BIN (ctest sets it); when unset,
build/dev/apop of this checkout is used.

Nothing here skips: a missing binary or client program is a test failure with
a message that says what to install or build.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Secrets that satisfy the server's policy (>= 12 chars, not common).
ALICE_SECRET = "violet-Kettle-4920-marsh"
BOB_SECRET = "Quartz_lantern_8813_fjord"

# RFC 822 msg-id as apop's greeting promises it: <HEX.PID@HOST>, HEX >= 128 bits.
MSG_ID_RE = re.compile(
    rb"<(?P<hex>[0-9A-Fa-f]{32,})\.(?P<pid>[0-9]+)@"
    rb"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>"
)
# A greeting: +OK, some text, the msg-id as the last token.
GREETING_RE = re.compile(rb"^\+OK [\x20-\x7e]*?(?P<ts><[\x21-\x7e]+>)$")
LISTENING_RE = re.compile(r"listening on (\S+):(\d+)")

EX_OK, EX_USAGE, EX_NOUSER, EX_TEMPFAIL = 0, 64, 67, 75

# How much slower the binary under test is than the dev build: ctest sets 3 for
# the ASan+UBSan build (tests/CMakeLists.txt). It stretches the waits for
# something that must happen (server start and stop, log lines, wait_until,
# replies on a Conn, CLI runs); a wait for something that must NOT happen
# (`Conn.line(timeout=...)`) stays as written.
SLOWDOWN = max(1.0, float(os.environ.get("APOP_TEST_SLOWDOWN", "1") or 1))

# A report of ASan, LSan or UBSan in a process's standard error. The sanitizer
# options halt the process on the first report, but a CLI run that was expected
# to fail, or a server killed afterwards, would hide it: these checks do not.
SANITIZER_RE = re.compile(r"ERROR: (?:AddressSanitizer|LeakSanitizer)|runtime error: ")


def cli_sanitizer_env(env: dict) -> dict:
    """The environment for a short CLI run (`apop user add`, `deliver`, ...): under
    ASan, without LeakSanitizer's scan at exit, which costs a third of such a
    run's time (the suite starts thousands). Servers, the unit tests and every
    other process keep it; APOP_TEST_CLI_LEAKS=1 keeps it here too."""
    opts = env.get("ASAN_OPTIONS")
    if opts and env.get("APOP_TEST_CLI_LEAKS") != "1":
        parts = [o for o in opts.split(":") if o and not o.startswith("detect_leaks=")]
        env = dict(env, ASAN_OPTIONS=":".join(parts + ["detect_leaks=0"]))
    return env


def servers_with(*flags: str) -> type:
    """A mixin for a test class: every server its tests start gets `flags`
    (`--sandbox`, `--workers 2`: whole suites re-run that way). Under ASan the
    servers run without LeakSanitizer's exit scan, which stops the world with
    a ptrace'd thread that a seccomp sandbox (rightly) kills."""

    class ServersWith:
        def setUp(self):
            super().setUp()
            plain = self.env.server

            def server(*args, **kw):
                extra = dict(kw.pop("extra_env", None) or {})
                if os.environ.get("ASAN_OPTIONS"):
                    env = cli_sanitizer_env(dict(os.environ, APOP_TEST_CLI_LEAKS="0"))
                    extra["ASAN_OPTIONS"] = env["ASAN_OPTIONS"]
                return plain(*args, *flags, extra_env=extra, **kw)

            self.env.server = server

    return ServersWith


def measured_rss_env(env: dict) -> dict:
    """The environment for a process whose peak RSS a test bounds: under ASan,
    without the quarantine of freed memory (256 MiB by default: ASan keeps
    freed blocks unused for a while to catch use-after-free, so a process
    that frees as much as it allocates still grows to that size). Memory the
    process keeps is counted as before; what it frees is reused at once."""
    opts = env.get("ASAN_OPTIONS")
    if opts:
        parts = [o for o in opts.split(":") if o and not o.startswith("quarantine_size_mb=")]
        env = dict(env, ASAN_OPTIONS=":".join(parts + ["quarantine_size_mb=0"]))
    return env


def assert_no_sanitizer_report(what: str, stderr: str) -> None:
    m = SANITIZER_RE.search(stderr)
    if m:
        start = max(0, stderr.rfind("\n", 0, m.start()) - 2000)
        raise AssertionError(f"sanitizer report from {what}:\n{stderr[start:start + 8000]}")


def apop_bin() -> str:
    path = os.environ.get("APOP_BIN") or os.path.join(REPO, "build", "dev", "apop")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise AssertionError(
            f"apop binary not found or not executable at {path!r}: build it "
            f"(`make build`) or set APOP_BIN")
    # Absolute: servers and CLI runs start in the test's temporary directory.
    return os.path.abspath(path)


def in_ci() -> bool:
    """True when the environment variable CI is set (GitHub Actions sets CI=true)."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skips the calling test for a reason that holds only on a developer's
    machine (not root, an optional tool missing); when CI is set, where
    scripts/deps.sh installed everything and the suite runs as root, the same
    reason is a failure: nothing is skipped silently there."""
    if in_ci():
        raise AssertionError(reason + " -- CI is set, so this is a failure, not a skip")
    raise unittest.SkipTest(reason)


def needs(condition: bool, reason: str):
    """Class or method decorator: unittest.skipUnless(condition, reason), except
    that when CI is set a false condition fails every test (skip_or_fail)."""
    if condition:
        return lambda obj: obj
    if not in_ci():
        return unittest.skip(reason)

    def decorate(obj):
        if isinstance(obj, type):
            def setUp(self):
                skip_or_fail(reason)
            obj.setUp = setUp
            return obj

        def test(*args, **kwargs):
            skip_or_fail(reason)
        test.__name__ = obj.__name__
        return test
    return decorate


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name!r} is not installed; run scripts/deps.sh (or `make deps`) "
            f"to install the interop clients")
    return path


def apop_digest(timestamp: bytes | str, secret: str) -> str:
    """RFC 1939 section 7: lowercase hex MD5 of timestamp immediately followed by secret."""
    if isinstance(timestamp, str):
        timestamp = timestamp.encode("ascii")
    return hashlib.md5(timestamp + secret.encode("utf-8")).hexdigest()


def timestamp_of(greeting: bytes) -> bytes:
    m = GREETING_RE.match(greeting)
    if not m:
        raise AssertionError(f"greeting has no trailing <timestamp>: {greeting!r}")
    return m.group("ts")


def crlf(data: bytes) -> bytes:
    """The CRLF wire form apop promises (Dovecot's rule): every LF not preceded by CR
    becomes CRLF; everything else, bare CR included, is kept as is."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def lines_of(data: bytes) -> list[bytes]:
    """The lines of a message as a line-oriented client (poplib) sees them."""
    body = crlf(data)
    if body.endswith(b"\r\n"):
        body = body[:-2]
    return body.split(b"\r\n")


def make_message(subject: str, body: str | bytes, *, eol: bytes = b"\n",
                 sender: str = "sender@example.org", to: str = "alice@example.org") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    headers = [
        f"From: Sender <{sender}>".encode(),
        f"To: <{to}>".encode(),
        f"Subject: {subject}".encode(),
        b"Message-ID: <" + hashlib.sha1(subject.encode() + body).hexdigest().encode()
        + b"@example.org>",
        b"Date: Thu, 02 Jan 2025 10:00:00 +0000",
    ]
    text = b"\n".join(headers) + b"\n\n" + body
    return text.replace(b"\n", eol) if eol != b"\n" else text


# --------------------------------------------------------------------------------------
# Data directory and CLI
# --------------------------------------------------------------------------------------

class ApopEnv:
    """A temporary data directory plus the CLI subcommands that operate on it."""

    def __init__(self):
        self.bin = apop_bin()
        self.root = tempfile.mkdtemp(prefix="apop-interop-")
        self.data = os.path.join(self.root, "data")
        self._servers: list[Server] = []
        self.conns: list[Conn] = []

    def cleanup(self):
        for c in self.conns:
            c.close()
        for s in self._servers:
            s.kill_quietly()
        shutil.rmtree(self.root, ignore_errors=True)
        for s in self._servers:
            if s.proc is not None:
                assert_no_sanitizer_report(f"`{' '.join(s.argv[1:3])}`", s.log())

    # -- running the binary -----------------------------------------------------------
    def run(self, *args: str, input: bytes | None = None, env: dict | None = None,
            cwd: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        if env:
            e.update(env)
        e = cli_sanitizer_env(e)
        p = subprocess.run([self.bin, *args], input=input if input is not None else b"",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                           cwd=cwd or self.root, timeout=timeout * SLOWDOWN)
        assert_no_sanitizer_report(f"`apop {' '.join(args)}`",
                                   p.stderr.decode("utf-8", errors="replace"))
        return p

    def check(self, *args: str, input: bytes | None = None, expect: int = 0,
              **kw) -> subprocess.CompletedProcess:
        p = self.run(*args, input=input, **kw)
        if p.returncode != expect:
            raise AssertionError(
                f"`apop {' '.join(args)}` exited {p.returncode}, expected {expect}\n"
                f"stdout: {p.stdout!r}\nstderr: {p.stderr.decode(errors='replace')}")
        return p

    def add_user(self, name: str, secret: str, *extra: str) -> subprocess.CompletedProcess:
        return self.check("user", "add", "--data", self.data, name, "--password-stdin", *extra,
                          input=secret.encode() + b"\n")

    def deliver(self, user: str, message: bytes, expect: int = 0) -> subprocess.CompletedProcess:
        return self.check("deliver", "--data", self.data, user, input=message, expect=expect)

    def users(self) -> list[str]:
        p = self.check("user", "list", "--data", self.data)
        return [l for l in p.stdout.decode().splitlines() if l.strip()]

    # -- the Maildir ------------------------------------------------------------------
    def maildir(self, user: str) -> str:
        return os.path.join(self.data, "mail", user)

    def message_files(self, user: str) -> list[str]:
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            if os.path.isdir(d):
                out += [os.path.join(d, f) for f in sorted(os.listdir(d))]
        return out

    def tmp_files(self, user: str) -> list[str]:
        d = os.path.join(self.maildir(user), "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def stored_messages(self, user: str) -> list[bytes]:
        out = []
        for f in self.message_files(user):
            with open(f, "rb") as fh:
                out.append(fh.read())
        return out

    # -- servers ----------------------------------------------------------------------
    def server(self, *args: str, **kw) -> "Server":
        s = Server(self, *args, **kw)
        self._servers.append(s)
        return s


class ApopTestCase(unittest.TestCase):
    """Base class: self.env is a fresh ApopEnv, removed after the test."""

    maxDiff = None

    def setUp(self):
        self.env = ApopEnv()
        self.addCleanup(self.env.cleanup)

    def setup_alice(self, messages: list[bytes] = ()) -> None:
        self.env.add_user("alice", ALICE_SECRET)
        for m in messages:
            self.env.deliver("alice", m)


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------

class Server:
    """`apop serve` in the foreground on free loopback port(s).

    with env.server("--hostname", "x") as srv:
        srv.port, srv.ports, srv.log()
    On leaving the block it sends SIGTERM and asserts exit status 0 within 10 s.
    """

    START_TIMEOUT = 20.0 * SLOWDOWN
    STOP_TIMEOUT = 10.0 * SLOWDOWN

    def __init__(self, env: ApopEnv, *args: str, listen: list[str] | None = None,
                 tls_listen: list[str] = (), data: str | None = None, use_data_flag: bool = True,
                 extra_env: dict | None = None, cwd: str | None = None):
        self.env = env
        listen = listen if listen is not None else ["127.0.0.1:0"]
        argv = [env.bin, "serve"]
        if use_data_flag:
            argv += ["--data", data or env.data]
        for l in listen:
            argv += ["--listen", l]
        for l in tls_listen:
            argv += ["--tls-listen", l]
        argv += list(args)
        # The one-process server unless a test asks for workers (the default
        # is a worker per core: test_workers*, test_auth_user and the
        # servers_with("--workers", "2") suite re-runs test that model).
        if "--workers" not in args:
            argv += ["--workers", "0"]
        # Failed-login delays (2 s doubling to 15 s by default) would make every
        # test that tries a wrong secret slow; test_throttle.py sets its own.
        if not any(a.startswith("--auth-failure-delay") for a in args):
            argv += ["--auth-failure-delay-ms", "0"]
        self.argv = argv
        self.expected_listeners = len(listen) + len(tls_listen)
        self.extra_env = extra_env or {}
        self.cwd = cwd or env.root
        self.proc: subprocess.Popen | None = None
        self.ports: list[int] = []
        self._log: list[str] = []
        self._out: list[str] = []
        self._cond = threading.Condition()
        self._eof = False

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "Server":
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        e.update(self.extra_env)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=e, cwd=self.cwd, start_new_session=True)
        threading.Thread(target=self._reader, args=(self.proc.stderr, self._log, True),
                         daemon=True).start()
        threading.Thread(target=self._reader, args=(self.proc.stdout, self._out, False),
                         daemon=True).start()
        deadline = time.monotonic() + self.START_TIMEOUT
        with self._cond:
            while True:
                self.ports = [int(m.group(2)) for l in self._log
                              for m in [LISTENING_RE.search(l)] if m]
                if len(self.ports) >= self.expected_listeners:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(min(left, 0.2))
        if len(self.ports) < self.expected_listeners:
            rc = self.proc.poll()
            self.kill_quietly()
            raise AssertionError(
                f"server did not log {self.expected_listeners} 'listening on ADDR:PORT' "
                f"line(s) within {self.START_TIMEOUT:.0f}s (exit status {rc})\n"
                f"argv: {self.argv}\n{self.diagnostics()}")
        return self

    def _reader(self, stream, sink: list[str], is_log: bool):
        for raw in iter(stream.readline, b""):
            with self._cond:
                sink.append(raw.decode("utf-8", errors="replace"))
                self._cond.notify_all()
        with self._cond:
            if is_log:
                self._eof = True
            self._cond.notify_all()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait; returns its exit status. Kills and fails after 10 s."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill_quietly()
            raise AssertionError(
                f"server still running {self.STOP_TIMEOUT:.0f}s after signal {sig}; killed\n"
                f"{self.diagnostics()}")
        self._drain()
        return rc

    def kill_quietly(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:
                pass
        self._drain()

    def _drain(self):
        # Let the reader threads collect what the process wrote before it exited.
        deadline = time.monotonic() + 2
        with self._cond:
            while not self._eof and time.monotonic() < deadline:
                self._cond.wait(0.1)
        time.sleep(0.05)  # the stdout reader, too
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.kill_quietly()
            return False
        if self.proc.poll() is not None:
            rc = self.proc.returncode
            self._drain()
            raise AssertionError(f"server exited early with status {rc}\n{self.diagnostics()}")
        rc = self.stop()
        if rc != 0:
            raise AssertionError(f"server exit status after SIGTERM was {rc}, expected 0\n"
                                 f"{self.diagnostics()}")
        return False

    # -- observation ------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def tls_ports(self) -> list[int]:
        """Ports of the implicit-TLS listeners (their log lines end in ' (tls)')."""
        with self._cond:
            return [int(m.group(2)) for l in self._log
                    for m in [LISTENING_RE.search(l)] if m and l.rstrip().endswith("(tls)")]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with self._cond:
            return "".join(self._log)

    def diagnostics(self) -> str:
        with self._cond:
            return ("--- server stderr ---\n" + "".join(self._log) +
                    "--- server stdout ---\n" + "".join(self._out) + "--- end ---")

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        """Waits until `count` stderr lines match the regex; returns all matching lines."""
        rx = re.compile(pattern)
        timeout *= SLOWDOWN
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [l for l in self._log if rx.search(l)]
                if len(hits) >= count or time.monotonic() >= deadline:
                    break
                self._cond.wait(0.1)
        if len(hits) < count:
            raise AssertionError(f"expected {count} log line(s) matching {pattern!r}, "
                                 f"found {len(hits)}\n{self.diagnostics()}")
        return hits

    def connect(self, port: int | None = None, timeout: float = 10.0) -> "Conn":
        c = Conn(port or self.port, timeout=timeout)
        self.env.conns.append(c)  # closed at cleanup even when a test fails midway
        return c


# --------------------------------------------------------------------------------------
# Raw POP3 connection
# --------------------------------------------------------------------------------------

class Conn:
    """A raw POP3 client socket. Lines are returned without their CRLF; only CRLF ends
    a line (a server sending bare LF would time out here, which is a bug)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 read_greeting: bool = True):
        timeout *= SLOWDOWN
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.line() if read_greeting else b""

    # -- context manager --------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Drop the connection abruptly (RST, no QUIT)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
        except OSError:
            pass
        self.close()

    # -- I/O --------------------------------------------------------------------------
    @property
    def client_addr(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    @property
    def timestamp(self) -> bytes:
        return timestamp_of(self.greeting)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, timeout: float | None) -> bool:
        """Reads more; returns False on EOF."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self, timeout: float | None = None) -> bytes:
        while b"\r\n" not in self.buf:
            try:
                if not self._fill(timeout):
                    raise EOFError(f"connection closed; unterminated data: {self.buf!r}")
            except socket.timeout:
                raise AssertionError(f"timed out waiting for a CRLF line; buffered: "
                                     f"{self.buf[:300]!r}") from None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str | bytes) -> bytes:
        if isinstance(text, str):
            text = text.encode()
        self.send(text + b"\r\n")
        return self.line()

    def multi(self) -> list[bytes]:
        """The body of a multi-line reply (status line already read), still dot-stuffed,
        without the terminating '.'."""
        out = []
        while True:
            l = self.line()
            if l == b".":
                return out
            out.append(l)

    def multi_raw(self) -> bytes:
        """The exact octets of a multi-line body up to and including the final '.' CRLF."""
        return b"".join(l + b"\r\n" for l in self.multi()) + b".\r\n"

    def cmd_multi(self, text: str) -> tuple[bytes, list[bytes]]:
        status = self.cmd(text)
        if not status.startswith(b"+OK"):
            return status, []
        return status, self.multi()

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within `timeout` (any data still
        buffered or arriving is kept in self.buf)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if not self._fill(left):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return True

    # -- POP3 -------------------------------------------------------------------------
    def apop(self, user: str, secret: str) -> bytes:
        return self.cmd(f"APOP {user} {apop_digest(self.timestamp, secret)}")

    def login(self, user: str, secret: str) -> bytes:
        reply = self.apop(user, secret)
        if not reply.startswith(b"+OK"):
            raise AssertionError(f"APOP {user} failed: {reply!r}")
        return reply

    def quit(self) -> bytes:
        reply = self.cmd("QUIT")
        self.close()
        return reply


def unstuff(lines: list[bytes]) -> list[bytes]:
    return [l[1:] if l.startswith(b".") else l for l in lines]


def wait_until(pred, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    timeout *= SLOWDOWN
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
