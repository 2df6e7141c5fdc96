"""Shared harness of the hostile-input suite (test_hostile_*.py).

Each test class starts one `apop serve` (class-wide, so hundreds of attacks run
against one process) and measures it from /proc:

  - before the first test: descriptors (/proc/PID/fd) and VmRSS/VmHWM, after a
    warm-up session (so buffers and the auth threads already exist);
  - after every test (the last cleanup): all clients closed, the descriptor count
    is back to the baseline (no leak), VmRSS and VmHWM (the peak) have grown by
    less than RSS_SLACK_KIB,
    the server is still running, and it serves a normal session (APOP login,
    STAT, RETR 1 byte-exact, QUIT);
  - under AddressSanitizer (its quarantine keeps freed memory resident) the
    memory bounds are not asserted, only reported; everything else is;
  - at the end of the class: one "hostile-figures:" line on stderr with the
    run time, the VmRSS/VmHWM growth and the descriptor counts (the figures
    docs/robustness.md quotes).

Raw sockets are used throughout: a client library would sanitise exactly the
bytes these tests are about.
"""

from __future__ import annotations

import base64
import functools
import mmap
import os
import socket
import sys
import threading
import time
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, ApopEnv, Conn, crlf, make_message,
                      wait_until)

# VmRSS may grow by this much over the baseline (allocator slack, TLS state);
# a leak or an unbounded buffer of the megabytes these tests send is far above.
RSS_SLACK_KIB = 4 * 1024

# Alice's mailbox: the normal session after every test reads it (never changed).
ALICE_MESSAGES = [
    make_message("first", "Hello Alice.\n.leading dot\n"),
    make_message("second", "Line one\nline two\n"),
    make_message("third", "x" * 500 + "\n"),
]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def address_sanitized(pid: int, binary: str) -> bool:
    """True when the server runs under AddressSanitizer (its quarantine keeps freed
    memory resident, so RSS says nothing about buffering there)."""
    with open(f"/proc/{pid}/maps") as f:
        if "libasan" in f.read():
            return True
    return _links_asan_statically(binary)


@functools.lru_cache(maxsize=None)
def _links_asan_statically(binary: str) -> bool:  # clang's static runtime
    with open(binary, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(b"__asan_init") != -1


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stuffed(message: bytes) -> bytes:
    """The octets RETR sends for a stored message, terminator included (RFC 1939
    §3 dot-stuffing; a missing final newline gets a CRLF before the '.', as Dovecot)."""
    body = crlf(message)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def read_multi_raw(c: Conn, timeout: float = 10.0) -> bytes:
    """The exact octets of a multi-line body, up to and including '.' CRLF."""
    deadline = time.monotonic() + timeout
    while True:
        end = c.buf.find(b"\r\n.\r\n")
        if c.buf.startswith(b".\r\n"):
            end = -2
        if end != -1:
            n = end + 5
            data, c.buf = c.buf[:n], c.buf[n:]
            return data
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no end of multi-line reply; have {len(c.buf)} octets")
        if not c._fill(left):
            raise EOFError(f"connection closed inside a multi-line reply ({len(c.buf)} octets)")


def recv_all_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Reads until EOF/RST or `timeout`; returns (data, closed)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


class HostileCase(unittest.TestCase):
    """A class-wide server plus per-test health checks (see the module doc)."""

    maxDiff = 2000
    SERVER_ARGS: tuple[str, ...] = ()
    RSS_SLACK_KIB = RSS_SLACK_KIB

    @classmethod
    def setUpClass(cls):
        cls.t0 = time.monotonic()
        cls.env = ApopEnv()
        try:
            cls.env.add_user("alice", ALICE_SECRET)
            cls.env.add_user("bob", BOB_SECRET)
            for m in ALICE_MESSAGES:
                cls.env.deliver("alice", m)
            cls.prepare(cls.env)
            cls.srv = cls.env.server(*cls.SERVER_ARGS).start()
            cls.pid = cls.srv.pid
            # Warm up: full sessions, and concurrent PLAIN logins so that every auth
            # thread has run the scrypt hash once (its buffer stays in that thread's
            # malloc arena: steady state, not growth).
            for _ in range(2):
                cls.normal_session_once()
            cls.warm_up_auth_threads()
            time.sleep(0.1)
            cls.fd0 = fd_count(cls.pid)
            st = proc_status(cls.pid)
            cls.rss0, cls.hwm0 = st["VmRSS"], st["VmHWM"]
            cls.max_fds = cls.fd0
            cls.max_rss_growth = 0
            cls.asan = address_sanitized(cls.pid, cls.env.bin)
        except BaseException:
            cls.env.cleanup()
            raise

    @classmethod
    def warm_up_auth_threads(cls, rounds: int = 3, width: int = 4):
        plain = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0" + BOB_SECRET.encode())

        def one():
            c = Conn(cls.srv.port)
            try:
                c.cmd(plain)
            finally:
                c.close()
        for _ in range(rounds):
            ts = [threading.Thread(target=one) for _ in range(width)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

    @classmethod
    def prepare(cls, env: ApopEnv):
        """Hook: more users or messages before the server starts."""

    @classmethod
    def tearDownClass(cls):
        try:
            st = proc_status(cls.pid)
            fds = fd_count(cls.pid)
            elapsed = time.monotonic() - cls.t0
            print(f"\nhostile-figures: class={cls.__name__} seconds={elapsed:.1f} "
                  f"fds_start={cls.fd0} fds_end={fds} fds_peak_seen={cls.max_fds} "
                  f"rss_start_kib={cls.rss0} rss_end_kib={st['VmRSS']} "
                  f"rss_growth_max_kib={cls.max_rss_growth} "
                  f"hwm_growth_kib={st['VmHWM'] - cls.hwm0} asan={int(cls.asan)}"
                  + "".join(f" {k}={v:.1f}" for k, v in sorted(vars(cls).items())
                            if k.endswith("_seconds") and isinstance(v, float)),
                  file=sys.stderr)
            rc = cls.srv.stop()
            if rc != 0:
                raise AssertionError(f"server exit status {rc} after SIGTERM\n"
                                     f"{cls.srv.diagnostics()}")
        finally:
            cls.env.cleanup()

    # -- per test -----------------------------------------------------------------------
    def setUp(self):
        self.conns: list[Conn] = []
        # Registered first, so it runs last: after tearDown and every other
        # cleanup (which close the test's sockets).
        self.addCleanup(self.assert_healthy)

    def tearDown(self):
        for c in self.conns:
            c.close()

    def connect(self, **kw) -> Conn:
        c = Conn(self.srv.port, **kw)
        self.conns.append(c)
        return c

    def raw(self, timeout: float = 10.0) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=timeout)
        self.addCleanup(s.close)
        return s

    def note_fds(self):
        type(self).max_fds = max(type(self).max_fds, fd_count(self.pid))

    def assert_rss_bounded(self, what: str = ""):
        """VmRSS now, and VmHWM (the peak so far: catches a buffer that grew and was
        freed again), each within RSS_SLACK_KIB of the class baseline."""
        st = proc_status(self.pid)
        grown = st["VmRSS"] - self.rss0
        peak = st["VmHWM"] - self.hwm0
        type(self).max_rss_growth = max(type(self).max_rss_growth, grown)
        if self.asan:
            return  # ASan's quarantine holds freed memory: bounds hold in normal builds
        self.assertLess(grown, self.RSS_SLACK_KIB,
                        f"server VmRSS grew by {grown} KiB {what}".rstrip())
        self.assertLess(peak, self.RSS_SLACK_KIB,
                        f"server VmHWM (peak RSS) grew by {peak} KiB {what}".rstrip())

    def assert_healthy(self):
        """Alive, no descriptor leak, memory bounded, and a normal session works."""
        self.assertIsNone(self.srv.proc.poll(),
                          f"server died\n{self.srv.diagnostics()}")
        try:
            wait_until(lambda: fd_count(self.pid) <= self.fd0, timeout=5,
                       what="the server's descriptors to return to the baseline")
        except AssertionError:
            raise AssertionError(
                f"descriptor leak: {fd_count(self.pid)} open, baseline {self.fd0}: "
                f"{sorted(os.readlink(f'/proc/{self.pid}/fd/{f}') for f in os.listdir(f'/proc/{self.pid}/fd'))}"
            ) from None
        self.assert_rss_bounded("after the test")
        self.normal_session_once()

    @classmethod
    def normal_session_once(cls):
        """APOP login, STAT, RETR 1 (byte-exact), QUIT. Retries briefly while a
        killed session's lock is being released."""
        deadline = time.monotonic() + 5
        while True:
            c = Conn(cls.srv.port)
            try:
                r = c.apop("alice", ALICE_SECRET)
                if r.startswith(b"-ERR [IN-USE]") and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if not r.startswith(b"+OK"):
                    raise AssertionError(f"normal session: APOP got {r!r}")
                size = sum(len(crlf(m)) for m in ALICE_MESSAGES)
                st = c.cmd("STAT")
                if st != f"+OK {len(ALICE_MESSAGES)} {size}".encode():
                    raise AssertionError(f"normal session: STAT got {st!r}")
                r = c.cmd("RETR 1")
                if r != f"+OK {len(crlf(ALICE_MESSAGES[0]))} octets".encode():
                    raise AssertionError(f"normal session: RETR 1 got {r!r}")
                body = read_multi_raw(c)
                if body != stuffed(ALICE_MESSAGES[0]):
                    raise AssertionError(f"normal session: RETR 1 body {body!r}")
                q = c.cmd("QUIT")
                if not q.startswith(b"+OK"):
                    raise AssertionError(f"normal session: QUIT got {q!r}")
                return
            finally:
                c.close()

    # -- assertions on replies ------------------------------------------------------
    def login(self, user: str = "alice", secret: str = ALICE_SECRET) -> Conn:
        c = self.connect()
        deadline = time.monotonic() + 5
        while True:
            r = c.apop(user, secret)
            if r.startswith(b"-ERR [IN-USE]") and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            self.assertTrue(r.startswith(b"+OK"), r)
            return c

    def assert_closed(self, c: Conn, timeout: float = 5.0, what: str = ""):
        self.assertTrue(c.closed_by_server(timeout),
                        f"server did not close the connection {what}; buffered {c.buf[:200]!r}")


__all__ = ["ALICE_MESSAGES", "ALICE_SECRET", "BOB_SECRET", "HostileCase", "RSS_SLACK_KIB",
           "fd_count", "proc_status", "read_multi_raw", "recv_all_until_close", "stuffed"]
