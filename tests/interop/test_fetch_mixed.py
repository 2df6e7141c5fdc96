"""`apop fetch --config FILE` against a mixed fleet, as in issue 20: one
configuration with an account on `apop serve` (APOP, Maildir), four accounts
on one private Dovecot (APOP over plain POP3, STLS, pop3s, OAUTHBEARER with a
JWT from a password_command; Dovecot validates it locally) and three
accounts on hostile fake servers (an APOP challenge with a byte outside
msg-id syntax, the CVE-2007-1558 shape: status 7; a LIST that lies about
sizes: status 5; a server that greets and then never answers: status 6 after
--timeout).

Once: the exit status is the worst account's (7), every account has its log
line, every honest account's mail arrives exactly once and byte for byte,
nothing is deleted on the hostile servers. Daemon: new mail on two servers
arrives at a later poll, the hostile accounts back off (the gaps between
their log lines grow) while the others keep their interval, SIGTERM exits 0
within --timeout; a SIGKILL in the middle of a poll with many messages on a
Dovecot account and on the `apop serve` account, then a restart, loses and
duplicates nothing.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import unittest

from apoptest import ALICE_SECRET, SLOWDOWN, make_message, wait_until
from dovecot import Dovecot, require_dovecot
from fakepop import FakePop
from test_fetch import FetchTestCase, maildir_messages
from test_fetch_config import Daemon, deliver_files
from test_fetch_oauth2 import jwt, use_oauth2_passdb

EXIT_SECURITY = 7
# --timeout of every run: what the stalling server costs each poll.
TIMEOUT = 3
FAKE_SECRET = "fake-Secret-4711-hill"
DV_SECRET = "dovecot-Purple-2468-sea"
DV_USERS = ("dvapop", "dvstls", "dvpop3s", "dvoauth")
HONEST = ("serve",) + DV_USERS


class TimedDaemon(Daemon):
    """A Daemon that also notes when each log line arrived."""

    def _read(self):
        self.times: list[tuple[float, str]] = []
        for raw in iter(self.proc.stderr.readline, b""):
            with self.lock:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                self.times.append((time.monotonic(), line))

    def gaps(self, pattern: str) -> list[float]:
        """Seconds between successive log lines matching pattern."""
        with self.lock:
            t = [when for when, line in self.times if re.search(pattern, line)]
        return [b - a for a, b in zip(t, t[1:])]


class FetchMixedTest(FetchTestCase):
    """One `apop serve`, one Dovecot, two hostile fakes, one configuration."""

    def setUp(self):
        super().setUp()
        require_dovecot()
        self.dv = Dovecot(stls=True, implicit_tls=True,
                          mechanisms="plain apop oauthbearer xoauth2",
                          extra_config="auth_failure_delay = 0\n")
        self.addCleanup(self.dv.cleanup)
        use_oauth2_passdb(self.dv)
        for u in DV_USERS:
            self.dv.add_user(u, DV_SECRET)
        self.dv.start()
        self.env.add_user("alice", ALICE_SECRET)
        # What each honest account has on its server (by account name).
        self.sent: dict[str, list[bytes]] = {}
        for name in HONEST:
            self.sent[name] = []
            self.put(name, [make_message(f"{name} {i}", f"To {name}, number {i}.\n"
                                         f".a leading dot\nFrom the start\n")
                            for i in range(3)])
        # Hostile servers: their mail must stay where it is.
        self.fake_msgs = [make_message(f"fake {i}", f"fake {i}\n") for i in range(2)]
        # CVE-2007-1558: a challenge with bytes outside msg-id syntax (chosen
        # challenges let a server recover the password through MD5 collisions).
        self.evil = FakePop(greeting=b"+OK POP3 ready <1896.697170952@dbc.mtvi\xe9w.ca.us>",
                            secret=FAKE_SECRET, messages=self.fake_msgs).start()
        self.addCleanup(self.evil.stop)
        self.liar = FakePop(secret=FAKE_SECRET, messages=self.fake_msgs,
                            replies={"LIST": b"+OK\r\n1 10\r\n2 10\r\n.",
                                     "LIST 1": b"+OK 1 10", "LIST 2": b"+OK 2 10",
                                     "STAT": b"+OK 2 20"}).start()
        self.addCleanup(self.liar.stop)
        # A server that greets, then never answers (until the test ends).
        self.released = threading.Event()
        self.addCleanup(self.released.set)
        self.stall = FakePop(secret=FAKE_SECRET, messages=self.fake_msgs,
                             cut=lambda conn, line: self.released.wait(60) and False).start()
        self.addCleanup(self.stall.stop)
        self.mail = os.path.join(self.work, "Mail")
        self.states = os.path.join(self.work, "fetch-state")
        os.makedirs(self.mail)

    # -- mail on the servers -------------------------------------------------------
    def put(self, name: str, messages: list[bytes]) -> None:
        """Puts messages on the server of an honest account (bulk: one rename
        each, one chown pass for Dovecot)."""
        if name == "serve":
            deliver_files(self.env.maildir("alice"), messages, f"m{len(self.sent[name])}")
        else:
            deliver_files(self.dv.maildir(name), messages, f"m{len(self.sent[name])}")
            self.dv._hand_over(self.dv.maildir(name))
        self.sent[name] += messages

    def left_on_server(self, name: str) -> int:
        if name == "serve":
            return len(self.env.message_files("alice"))
        n = 0
        for sub in ("new", "cur"):
            d = os.path.join(self.dv.maildir(name), sub)
            n += len(os.listdir(d)) if os.path.isdir(d) else 0
        return n

    def got(self, name: str) -> list[bytes]:
        return maildir_messages(os.path.join(self.mail, name))

    def assertExactlyOnce(self, name: str):
        got = self.got(name)
        self.assertEqual(len(got), len(set(got)), f"{name}: duplicates")
        self.assertSameMessages(got, self.sent[name])

    # -- the configuration ---------------------------------------------------------
    def secret_file(self, name: str, secret: str) -> str:
        path = os.path.join(self.work, name + ".pass")
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        return path

    def token_helper(self) -> list[str]:
        """A password_command printing a fresh JWT (a script, as a token
        helper would be)."""
        tok = os.path.join(self.work, "token")
        now = int(time.time())
        with open(tok, "w") as f:
            f.write(jwt({"sub": "dvoauth", "iat": now - 60, "nbf": now - 60,
                         "exp": now + 3600, "scope": "mail"}) + "\n")
        os.chmod(tok, 0o600)
        script = os.path.join(self.work, "token-helper.py")
        with open(script, "w") as f:
            f.write("import sys\nprint(open(sys.argv[1]).read().strip())\n")
        with open(tok) as f:
            self.token = f.read().strip()
        return ["python3", script, tok]

    def config(self, srv_port: int, interval: str = "5m", max_parallel: int = 4) -> str:
        dv, ca = self.dv, self.dv.cert
        accounts = [
            ("serve", f"pop3://alice@127.0.0.1:{srv_port}", 'tls = "none"\nauth = "apop"',
             ALICE_SECRET),
            ("dvapop", f"pop3://dvapop@127.0.0.1:{dv.port}", 'tls = "none"\nauth = "apop"',
             DV_SECRET),
            ("dvstls", f"pop3://dvstls@127.0.0.1:{dv.port}",
             f'tls = "starttls"\nca_file = "{ca}"', DV_SECRET),
            ("dvpop3s", f"pop3s://dvpop3s@127.0.0.1:{dv.tls_port}",
             f'tls = "implicit"\nca_file = "{ca}"', DV_SECRET),
            ("dvoauth", f"pop3s://dvoauth@127.0.0.1:{dv.tls_port}",
             f'auth = "oauthbearer"\nca_file = "{ca}"', None),
            ("evil", f"pop3://alice@127.0.0.1:{self.evil.port}", 'tls = "none"\nauth = "apop"',
             FAKE_SECRET),
            ("liar", f"pop3://alice@127.0.0.1:{self.liar.port}", 'tls = "none"\nauth = "apop"',
             FAKE_SECRET),
            ("stall", f"pop3://alice@127.0.0.1:{self.stall.port}", 'tls = "none"\nauth = "apop"',
             FAKE_SECRET),
        ]
        text = (f'max_parallel = {max_parallel}\nstate_dir = "{self.states}"\n\n'
                f'[defaults]\npoll_interval = "{interval}"\n\n')
        for name, url, extra, secret in accounts:
            if secret is None:
                source = "password_command = [" + ", ".join(
                    f'"{a}"' for a in self.token_helper()) + "]"
            else:
                source = f'password_file = "{self.secret_file(name, secret)}"'
            text += (f'[[account]]\nname = "{name}"\nurl = "{url}"\n{extra}\n{source}\n'
                     f'to = "maildir:{os.path.join(self.mail, name)}"\n\n')
        path = os.path.join(self.work, "fetch.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def env_vars(self) -> dict:
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        e.update({"HOME": self.work, "XDG_STATE_HOME": os.path.join(self.work, "xdg")})
        return e

    def daemon(self, cfg: str) -> Daemon:
        return TimedDaemon([self.env.bin, "fetch", "--config", cfg, "--daemon",
                            "--timeout", str(TIMEOUT)], self.env_vars())

    def assertHostileUntouched(self):
        for fake in (self.evil, self.liar, self.stall):
            self.assertEqual(fake.sent("DELE"), [])
            self.assertEqual(fake.messages, self.fake_msgs)
        self.assertEqual(self.evil.sent("APOP"), [], "APOP digest sent for a bad challenge")
        self.assertEqual(self.got("evil"), [])
        self.assertEqual(self.got("liar"), [])
        self.assertEqual(self.got("stall"), [])
        self.assertEqual(self.stall.credentials_sent(), [])

    def assertNoSecrets(self, text: str):
        for s in (ALICE_SECRET, DV_SECRET, FAKE_SECRET, self.token, self.token.split(".")[2]):
            self.assertNotIn(s, text)

    # ---------------------------------------------------------------------------------
    def test_once(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port)
            p = self.env.run("fetch", "--config", cfg, "--timeout", str(TIMEOUT),
                             env={"HOME": self.work,
                                  "XDG_STATE_HOME": os.path.join(self.work, "xdg")},
                             timeout=90)
            err = p.stderr.decode(errors="replace")
            self.assertEqual(p.returncode, EXIT_SECURITY, self.describe(p) + self.dv.log())
            for name in HONEST:
                self.assertRegex(err, rf"account={name} result=ok status=0 messages=3 "
                                      rf"bytes=\d+ seconds=[\d.]+ deleted=3")
                self.assertExactlyOnce(name)
                self.assertEqual(self.left_on_server(name), 0, name)
            self.assertRegex(err, r"account=evil result=security status=7 messages=0 ")
            self.assertRegex(err, r"account=liar result=protocol status=5 messages=0 ")
            self.assertRegex(err,
                             r"account=stall result=network status=6 messages=0 .*timed out")
            self.assertHostileUntouched()
            self.assertNoSecrets(err + p.stdout.decode(errors="replace"))
            # The Dovecot log shows the mechanisms really used.
            log = self.dv.log()
            self.assertRegex(log, r"pop3-login: Info: Login: user=<dvoauth>, "
                                  r"method=OAUTHBEARER.*TLS")
            self.assertRegex(log, r"pop3-login: Info: Login: user=<dvapop>, method=APOP")
            self.assertRegex(log, r"pop3-login: Info: Login: user=<dvstls>, .*TLS")
            self.assertRegex(log, r"pop3-login: Info: Login: user=<dvpop3s>, .*TLS")
            # A second run: nothing new, nothing fetched twice.
            p = self.env.run("fetch", "--config", cfg, "--timeout", str(TIMEOUT),
                             env={"HOME": self.work,
                                  "XDG_STATE_HOME": os.path.join(self.work, "xdg")},
                             timeout=90)
            self.assertEqual(p.returncode, EXIT_SECURITY, self.describe(p))
            for name in HONEST:
                self.assertRegex(p.stderr.decode(), rf"account={name} result=ok status=0 "
                                                    rf"messages=0 ")
                self.assertExactlyOnce(name)

    def test_daemon_new_mail_backoff_sigterm(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1s")
            d = self.daemon(cfg)
            try:
                for name in HONEST:
                    d.wait_for(rf"account={name} result=ok status=0 messages=3 ")
                # New mail on two servers between polls.
                late_serve = [make_message("serve late", "later, on apop serve\n")]
                late_dv = [make_message("dovecot late", "later, on Dovecot\n")]
                self.put("serve", late_serve)
                self.put("dvstls", late_dv)
                d.wait_for(r"account=serve result=ok status=0 messages=1 ")
                d.wait_for(r"account=dvstls result=ok status=0 messages=1 ")
                # The others keep their interval while the hostile ones back
                # off (1 s, 2 s, 4 s ... after each failure).
                start = d.count(r"account=dvpop3s result=ok")
                d.wait_for(r"account=dvpop3s result=ok", start + 5)
                d.wait_for(r"account=dvoauth result=ok", start + 4)
            finally:
                t0 = time.monotonic()
                rc = d.stop()
                stop_seconds = time.monotonic() - t0
            log = d.log()
            self.assertEqual(rc, 0, log)
            self.assertIn("daemon stopped", log)
            polls = d.count(r"account=dvpop3s result=ok")
            evil = d.count(r"account=evil result=security status=7 ")
            liar = d.count(r"account=liar result=protocol status=5 ")
            # A poll waiting on the stalled server ends at its timeout: SIGTERM
            # waits for it, no longer.
            self.assertLess(stop_seconds, TIMEOUT + 3 * SLOWDOWN, log)
            self.assertGreaterEqual(d.count(r"account=stall result=network status=6 "), 1, log)
            # The waits after failures grow (1 s, 2 s, 4 s ... jittered), the
            # honest accounts' stay at their interval.
            for name in ("evil", "liar"):
                g = d.gaps(rf"account={name} result=")
                self.assertGreater(g[-1], 1.75, f"{name} did not back off: {g}\n{log}")
            g = sorted(d.gaps(r"account=dvpop3s result=ok"))
            self.assertLess(g[len(g) // 2], 1.5 * SLOWDOWN, f"dvpop3s delayed: {g}\n{log}")
            self.assertGreaterEqual(evil, 2, log)
            self.assertGreaterEqual(liar, 2, log)
            # Backed off: clearly fewer polls than an account at its interval.
            self.assertLess(evil, polls - 2, log)
            self.assertLess(liar, polls - 2, log)
            for name in HONEST:
                self.assertExactlyOnce(name)
            self.assertHostileUntouched()
            self.assertNoSecrets(log)

    def test_daemon_sigkill_mid_poll_loses_and_duplicates_nothing(self):
        body = "x" * 76 + "\n"
        self.put("serve", [make_message(f"serve many {i}", f"message {i}\n" + body * 60)
                           for i in range(400)])
        self.put("dvpop3s", [make_message(f"dovecot many {i}", f"message {i}\n" + body * 60)
                             for i in range(400)])
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1s")

            def stored(name: str) -> int:
                d = os.path.join(self.mail, name, "new")
                return len(os.listdir(d)) if os.path.isdir(d) else 0
            killed_mid_poll = set()
            for attempt in range(4):
                before = {n: stored(n) for n in ("serve", "dvpop3s")}
                if all(before[n] >= len(self.sent[n]) for n in before):
                    break
                d = self.daemon(cfg)
                # Kill once both have stored something in this run.
                wait_until(lambda: all(stored(n) > min(before[n] + 20, len(self.sent[n]) - 1)
                                       for n in before),
                           timeout=30 * SLOWDOWN, interval=0.005, what="messages arriving")
                d.stop(signal.SIGKILL)
                for n in before:
                    if stored(n) < len(self.sent[n]):
                        killed_mid_poll.add(n)
            self.assertEqual(killed_mid_poll, {"serve", "dvpop3s"},
                             "no kill landed in the middle of both polls")
            d = self.daemon(cfg)
            try:
                wait_until(lambda: all(self.left_on_server(n) == 0 for n in HONEST),
                           timeout=60 * SLOWDOWN, what="the servers emptied")
                d.wait_for(r"account=serve result=ok status=0 messages=0 ")
                d.wait_for(r"account=dvpop3s result=ok status=0 messages=0 ")
            finally:
                self.assertEqual(d.stop(), 0, d.log())
        for name in HONEST:
            self.assertExactlyOnce(name)
        self.assertHostileUntouched()


if __name__ == "__main__":
    unittest.main()
