"""Logs for fail2ban: `apop serve --log file:PATH` writes the login lines that
contrib/fail2ban/filter.d/apop.conf reads, checked with Debian's own
`fail2ban-regex` against lines the server really wrote; and the log file
follows logrotate (moved away, or truncated in place).

Clients connect from different loopback source addresses (127.0.0.2, ...),
so the test can tell that fail2ban extracts the right address (without the
port) for each failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, REPO, ApopTestCase, Conn, Server, apop_digest,
                      require_program, wait_until)

FILTER = os.path.join(REPO, "contrib", "fail2ban", "filter.d", "apop.conf")
JAIL = os.path.join(REPO, "contrib", "fail2ban", "jail.d", "apop.conf")
# fail2ban's shared prefix definitions, installed by the Debian package.
COMMON_CONF = "/etc/fail2ban/filter.d/common.conf"


class FileLogServer(Server):
    """`apop serve --log file:PATH`: stderr stays empty, so the lines of the log
    file are fed into the same list that Server.wait_for_log() and the
    `listening on` detection read."""

    def __init__(self, env, log_path: str, *args: str, **kw):
        super().__init__(env, "--log", "file:" + log_path, *args, **kw)
        self.log_path = log_path
        self._seen = 0

    def start(self) -> "FileLogServer":
        threading.Thread(target=self._tail, daemon=True).start()
        return super().start()

    def _tail(self):
        while True:
            running = self.proc is None or self.proc.poll() is None
            try:
                with open(self.log_path, "rb") as f:
                    lines = f.read().split(b"\n")[:-1]  # complete lines only
            except FileNotFoundError:
                lines = []
            if len(lines) > self._seen:
                with self._cond:
                    self._log.extend(l.decode("utf-8", "replace") + "\n"
                                     for l in lines[self._seen:])
                    self._seen = len(lines)
                    self._cond.notify_all()
            if not running:
                return
            time.sleep(0.05)


class ConnFrom(Conn):
    """A raw POP3 connection from a chosen local address (any 127.x.y.z is
    loopback on Linux; "::1" for IPv6)."""

    def __init__(self, port: int, source: str, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10.0,
                                             source_address=(source, 0))
        self.timeout = 10.0
        self.buf = b""
        self.greeting = self.line()


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fail2ban_regex(log_file: str, out: str) -> list[str]:
    """Runs fail2ban-regex with the shipped filter (next to Debian's
    common.conf, as when installed in /etc/fail2ban/filter.d) and returns the
    `-o out` lines (msg: matched lines, ip: extracted addresses)."""
    require_program("fail2ban-regex")
    if not os.path.isfile(COMMON_CONF):
        raise AssertionError(f"{COMMON_CONF} missing: install fail2ban (scripts/deps.sh)")
    d = os.path.join(os.path.dirname(log_file), "f2b", "filter.d")
    os.makedirs(d, exist_ok=True)
    shutil.copy(COMMON_CONF, d)
    shutil.copy(FILTER, d)
    p = subprocess.run(["fail2ban-regex", "-o", out, log_file, os.path.join(d, "apop.conf")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"fail2ban-regex exited {p.returncode}\n"
                             f"{p.stdout.decode()}\n{p.stderr.decode()}")
    return [l for l in p.stdout.decode().splitlines() if l.strip()]


class Fail2banFilter(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)
        # carol has no APOP secret at all: device secrets only, none added.
        self.env.add_user("carol", BOB_SECRET)
        self.env.check("user", "policy", "--data", self.env.data, "carol",
                       "--device-secrets-only", "on")
        self.log_path = os.path.join(self.env.root, "apop.log")

    def server(self, *args: str, **kw) -> FileLogServer:
        s = FileLogServer(self.env, self.log_path, *args, **kw)
        self.env._servers.append(s)
        return s

    def test_filter_matches_exactly_the_failures_with_their_address(self):
        failures: list[tuple[str, str]] = []  # (source address, what)
        successes: list[str] = []
        with self.server(listen=["127.0.0.1:0", "[::1]:0"]) as srv:
            port, port6 = srv.ports

            def attempt(source: str, what: str, ok: bool, fn, v6: bool = False):
                c = ConnFrom(port6 if v6 else port, source, host="::1" if v6 else "127.0.0.1")
                self.env.conns.append(c)
                reply = fn(c)
                self.assertEqual(reply.startswith(b"+OK"), ok, f"{what}: {reply!r}")
                (successes.append(source) if ok else failures.append((source, what)))
                c.cmd("QUIT")
                c.close()

            def user_pass(user, secret):
                def go(c):
                    self.assertTrue(c.cmd(f"USER {user}").startswith(b"+OK"))
                    return c.cmd(f"PASS {secret}")
                return go

            attempt("127.0.0.2", "wrong APOP digest", False,
                    lambda c: c.cmd(f"APOP alice {apop_digest(c.timestamp, 'wrong-secret')}"))
            attempt("127.0.0.3", "APOP unknown user", False,
                    lambda c: c.cmd(f"APOP nobody {apop_digest(c.timestamp, ALICE_SECRET)}"))
            attempt("127.0.0.4", "wrong PASS", False, user_pass("alice", "not-the-password"))
            attempt("127.0.0.5", "PASS unknown user", False, user_pass("mallory", "whatever-123"))
            attempt("127.0.0.6", "APOP without an APOP secret", False,
                    lambda c: c.cmd(f"APOP carol {apop_digest(c.timestamp, BOB_SECRET)}"))
            attempt("::1", "wrong APOP digest over IPv6", False,
                    lambda c: c.cmd(f"APOP alice {apop_digest(c.timestamp, 'nope-nope')}"),
                    v6=True)
            attempt("127.0.0.7", "APOP ok", True, lambda c: c.apop("alice", ALICE_SECRET))
            attempt("127.0.0.8", "USER/PASS ok", True, user_pass("alice", ALICE_SECRET))
            attempt("127.0.0.9", "USER/PASS ok (no-APOP account)", True,
                    user_pass("carol", BOB_SECRET))
            srv.wait_for_log(r"login failed ", count=len(failures))
            srv.wait_for_log(r"login ok ", count=len(successes))

        with open(self.log_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        failed = [l for l in lines if " login failed " in l]
        ok = [l for l in lines if " login ok " in l]
        self.assertEqual(len(failed), len(failures), "\n".join(lines))
        self.assertEqual(len(ok), len(successes), "\n".join(lines))
        # Regression: a QUIT before login used to log a "logout user=-" line
        # (and count a session): only logged-in sessions log out.
        logouts = [l for l in lines if " logout " in l]
        self.assertEqual(len(logouts), len(successes), "\n".join(lines))
        for l in failed:
            self.assertRegex(l, r"^\S+ \S+ login failed user=\S+ mech=\S+ "
                                r"addr=(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+ tls=[01] reason=")

        matched = fail2ban_regex(self.log_path, "msg")
        self.assertEqual(sorted(matched), sorted(failed),
                         "fail2ban must match every failed login and nothing else")
        ips = fail2ban_regex(self.log_path, "ip")
        self.assertEqual(sorted(ips), sorted(s for s, _ in failures))
        for s in successes:
            self.assertNotIn(s, ips)

        # The same lines through syslog or the systemd journal: with a
        # "host apop[PID]: " prefix, with or without apop's own timestamp
        # and level in front of the message.
        syslog = os.path.join(self.env.root, "syslog")
        with open(syslog, "w", encoding="utf-8") as f:
            for l in lines:
                payload = l.split(" ", 2)[2]  # without apop's timestamp and level
                f.write(f"Nov 23 12:00:00 mailhost apop[4242]: {payload}\n")
                f.write(f"Nov 23 12:00:01 mailhost apop[4242]: {l}\n")
        ips = fail2ban_regex(syslog, "ip")
        self.assertEqual(sorted(ips), sorted(2 * [s for s, _ in failures]))

    def test_jail_example_uses_the_filter_and_pop3_ports(self):
        with open(JAIL, encoding="utf-8") as f:
            jail = f.read()
        self.assertIn("filter   = apop", jail)
        self.assertIn("port     = pop3,pop3s", jail)
        self.assertIn("logpath  = /var/log/apop/apop.log", jail)
        self.assertIn("backend  = systemd", jail)
        with open("/etc/services", encoding="utf-8") as f:
            services = f.read()
        self.assertRegex(services, r"(?m)^pop3\s+110/tcp")
        self.assertRegex(services, r"(?m)^pop3s\s+995/tcp")


class LogFileRotation(ApopTestCase):
    """log = file:PATH follows logrotate: a moved-away file is noticed by inode
    and PATH reopened (no signal needed); copytruncate leaves no hole."""

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)
        self.log_path = os.path.join(self.env.root, "apop.log")

    def fail_once(self, port: int, user: str):
        with Conn(port) as c:
            c.cmd(f"APOP {user} {apop_digest(c.timestamp, 'wrong-secret')}")
            c.cmd("QUIT")

    def test_moved_file_is_reopened_and_no_line_is_lost(self):
        srv = FileLogServer(self.env, self.log_path)
        self.env._servers.append(srv)
        with srv:
            self.fail_once(srv.port, "before")
            srv.wait_for_log(r"login failed user=before ")
            os.rename(self.log_path, self.log_path + ".1")  # logrotate's default (create)
            n = 0

            def rotated():
                nonlocal n
                n += 1
                self.fail_once(srv.port, f"after{n}")
                return os.path.exists(self.log_path) and "login failed" in read_text(
                    self.log_path)

            wait_until(rotated, timeout=15, interval=0.2, what="a new log file at PATH")
        with open(self.log_path + ".1", encoding="utf-8") as f:
            old = f.read()
        with open(self.log_path, encoding="utf-8") as f:
            new = f.read()
        self.assertIn("login failed user=before ", old)
        self.assertIn("listening on", old)
        self.assertNotIn("listening on", new)
        self.assertIn("stopped", new)  # the shutdown line went to the new file
        for i in range(1, n + 1):
            hits = [t for t in (old, new)
                    if re.search(rf"login failed user=after{i} ", t)]
            self.assertEqual(len(hits), 1, f"after{i} must be in exactly one file")
        self.assertIn(f"login failed user=after{n} ", new)

    def test_copytruncate_leaves_no_hole(self):
        srv = FileLogServer(self.env, self.log_path)
        self.env._servers.append(srv)
        with srv:
            self.fail_once(srv.port, "before")
            srv.wait_for_log(r"login failed user=before ")
            shutil.copy(self.log_path, self.log_path + ".1")
            os.truncate(self.log_path, 0)
            self.fail_once(srv.port, "after")
            wait_until(lambda: "user=after " in read_text(self.log_path),
                       what="the line after truncation")
        with open(self.log_path, "rb") as f:
            data = f.read()
        self.assertNotIn(b"\0", data)  # O_APPEND: written at the new end, not the old offset
        self.assertTrue(data.startswith(b"20"), data[:80])
        self.assertNotIn(b"user=before ", data)

    def test_bad_log_settings_are_configuration_errors(self):
        for args, want in [(("--log", "journal"), "log: log must be stderr, syslog or file:/PATH"),
                           (("--log", "file:relative.log"), "absolute path"),
                           (("--log-level", "loud"), "log_level: "),
                           (("--log", "file:/nonexistent-dir/x/apop.log"),
                            "cannot open log file /nonexistent-dir/x/apop.log")]:
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0", *args)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(want, p.stderr.decode(), args)


if __name__ == "__main__":
    unittest.main()
