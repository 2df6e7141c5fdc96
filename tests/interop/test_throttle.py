"""Failed-login defence and connection limits with real sockets.

The attacker connects from 127.0.0.2 (any 127.0.0.0/8 address is loopback on
Linux), the legitimate user from 127.0.0.1. Delays are small (200 ms base) and
only lower bounds are asserted: a slow machine cannot make these tests fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, ApopTestCase, Conn, apop_digest, make_message,
                      wait_until)
from test_sasl import scram_login

MSG1 = make_message("hello", "Hello.\n")
ATTACKER = "127.0.0.2"


class FromConn(Conn):
    """A Conn whose client side is bound to `source` (a loopback address)."""

    def __init__(self, port: int, source: str, timeout: float = 10.0, read_greeting: bool = True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.line() if read_greeting else b""


class ThrottleTest(ApopTestCase):

    FLAGS = ("--auth-failure-delay-ms", "200", "--auth-failure-delay-max-ms", "800",
             "--block-after-failures", "5", "--block-window", "600", "--block-duration", "600",
             "--max-auth-failures", "10")

    def connect_from(self, srv, source: str) -> FromConn:
        c = FromConn(srv.port, source)
        self.env.conns.append(c)
        return c

    def test_attacker_is_slowed_then_blocked_while_the_user_logs_in(self):
        self.setup_alice([MSG1])
        with self.env.server(*self.FLAGS) as srv:
            # alice's usual address: one good login makes 127.0.0.1 known good.
            with srv.connect() as home:
                home.login("alice", ALICE_SECRET)
                home.quit()

            attacker = self.connect_from(srv, ATTACKER)
            replies = []
            # Failures 1..4: 200, 400, 800, 800 ms before each reply.
            for i, want_ms in enumerate((200, 400, 800, 800)):
                start = time.monotonic()
                r = attacker.apop("alice", f"guess-{i}-not-the-secret")
                elapsed = time.monotonic() - start
                replies.append(r)
                self.assertEqual(r, b"-ERR [AUTH] Authentication failed.")
                self.assertGreaterEqual(elapsed, want_ms / 1000 * 0.95, f"attempt {i + 1}")
            # The 5th failure within the window blocks 127.0.0.2 (USER/PASS counts too).
            self.assertTrue(attacker.cmd("USER alice").startswith(b"+OK"))
            self.assertEqual(attacker.cmd("PASS guess-5-not-the-secret"),
                             b"-ERR [AUTH] Authentication failed.")
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=127\.0\.0\.2:\d+ tls=0 "
                             r"reason=auth$")
            srv.wait_for_log(r"login failed user=alice mech=\S+ addr=127\.0\.0\.2:\d+ tls=0 "
                             r"reason=throttled$", count=4)

            # Blocked: even the right secret fails, with the very same reply.
            start = time.monotonic()
            r = attacker.apop("alice", ALICE_SECRET)
            self.assertEqual(r, replies[0])
            self.assertGreaterEqual(time.monotonic() - start, 0.8 * 0.95)
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=127\.0\.0\.2:\d+ tls=0 "
                             r"reason=blocked$")
            # A new connection from the blocked address is refused the same way.
            again = self.connect_from(srv, ATTACKER)
            self.assertEqual(again.apop("alice", ALICE_SECRET), replies[0])
            srv.wait_for_log(r"reason=blocked$", count=2)

            # Meanwhile alice logs in from her usual address.
            with srv.connect() as home:
                self.assertTrue(home.apop("alice", ALICE_SECRET).startswith(b"+OK"))
                home.quit()
            srv.wait_for_log(r"login ok user=alice mech=APOP addr=127\.0\.0\.1:\d+", count=2)
            # Her typo at home is not charged with the attacker's failures
            # against her name (127.0.0.1 is known good: a plain failure) ...
            with srv.connect() as home:
                self.assertEqual(home.apop("alice", "typo-not-the-secret"), replies[0])
                self.assertTrue(home.apop("alice", ALICE_SECRET).startswith(b"+OK"))
                home.quit()
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=127\.0\.0\.1:\d+ tls=0 "
                             r"reason=auth$")
            # ... while a fresh address guessing her name is throttled at once.
            fresh = self.connect_from(srv, "127.0.0.3")
            self.assertEqual(fresh.apop("alice", "guess-from-elsewhere"), replies[0])
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=127\.0\.0\.3:\d+ tls=0 "
                             r"reason=throttled$")
            self.assertNotIn(ALICE_SECRET, srv.log())
            # Still exactly the one attacker address was ever blocked.
            self.assertNotRegex(srv.log(), r"addr=127\.0\.0\.[13]:\d+ tls=0 reason=blocked")

    def test_failure_reply_is_delayed_without_stalling_other_clients(self):
        self.setup_alice([MSG1])
        self.env.add_user("bob", BOB_SECRET)
        # One auth thread: a delay that slept on it would hold bob's login too.
        flags = ("--auth-failure-delay-ms", "5000", "--auth-failure-delay-max-ms", "5000",
                 "--block-after-failures", "0", "--auth-threads", "1")
        with self.env.server(*flags) as srv:
            attacker = self.connect_from(srv, ATTACKER)
            attacker.send(f"APOP alice {apop_digest(attacker.timestamp, 'nope-nope')}\r\n"
                          .encode())
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=127\.0\.0\.2:\d+")
            with srv.connect() as bob:
                bob.login("bob", BOB_SECRET)
                bob.quit()
            # bob was served while the attacker's reply was still waiting.
            self.assertFalse(attacker.closed_by_server(0.01) or attacker.buf,
                             "the failure reply came before bob was served")
            self.assertEqual(attacker.line(), b"-ERR [AUTH] Authentication failed.")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sasl_fail(conn: Conn, mech: str, user: str) -> bytes:
    """One AUTH exchange of `mech` for `user` with a wrong secret, run to its end."""
    if mech == "PLAIN":
        return conn.cmd("AUTH PLAIN " + b64(f"\0{user}\0wrong-secret".encode()))
    if mech == "LOGIN":
        assert conn.cmd("AUTH LOGIN").startswith(b"+ ")
        assert conn.cmd(b64(user.encode())).startswith(b"+ ")
        return conn.cmd(b64(b"wrong-secret"))
    if mech == "CRAM-MD5":
        r = conn.cmd("AUTH CRAM-MD5")
        assert r.startswith(b"+ "), r
        digest = hmac.new(b"wrong-secret", base64.b64decode(r[2:]), hashlib.md5).hexdigest()
        return conn.cmd(b64(f"{user} {digest}".encode()))
    hash_name = "sha1" if mech == "SCRAM-SHA-1" else "sha256"
    return scram_login(conn, user, "wrong-secret", hash_name, mech)


class SaslThrottleTest(ApopTestCase):
    """Issue 17 item 3: failed SASL logins count against the user name they
    tried (from any address) and are logged with it."""

    FLAGS = ("--auth-failure-delay-ms", "200", "--auth-failure-delay-max-ms", "3200",
             "--block-after-failures", "100", "--max-auth-failures", "10")
    MECHS = ("PLAIN", "CRAM-MD5", "SCRAM-SHA-256", "LOGIN", "SCRAM-SHA-1")

    def test_sasl_failures_from_many_addresses_slow_the_name_and_name_it_in_the_log(self):
        self.setup_alice([MSG1])
        with self.env.server(*self.FLAGS) as srv:
            # One failure per mechanism, each from a new loopback address:
            # the address counts stay at 1, the count of "alice" grows, so
            # the delays double: 200, 400, 800, 1600, 3200 ms.
            for i, mech in enumerate(self.MECHS):
                source = f"127.0.0.{i + 2}"
                c = FromConn(srv.port, source)
                self.env.conns.append(c)
                start = time.monotonic()
                r = sasl_fail(c, mech, "alice")
                elapsed = time.monotonic() - start
                self.assertEqual(r, b"-ERR [AUTH] Authentication failed.", mech)
                want = 0.2 * 2 ** i
                self.assertGreaterEqual(elapsed, want * 0.95, f"{mech} from {source}")
                reason = "auth" if i == 0 else "throttled"
                srv.wait_for_log(rf"login failed user=alice mech={mech} "
                                 rf"addr={source.replace('.', '[.]')}:\d+ tls=0 reason={reason}$")
            self.assertNotIn("user=- ", srv.log())
            # The right secret still works from alice's own address.
            with srv.connect() as home:
                r = home.cmd("AUTH PLAIN " + b64(f"\0alice\0{ALICE_SECRET}".encode()))
                self.assertTrue(r.startswith(b"+OK"), r)
                home.quit()


class LimitTest(ApopTestCase):

    def test_connections_per_address_and_total(self):
        self.setup_alice()
        with self.env.server("--max-connections-per-address", "2", "--max-connections",
                             "3") as srv:
            a1 = srv.connect()
            a2 = srv.connect()
            self.assertTrue(a1.greeting.startswith(b"+OK"))
            self.assertTrue(a2.greeting.startswith(b"+OK"))
            a3 = Conn(srv.port, read_greeting=False)
            self.env.conns.append(a3)
            self.assertEqual(a3.line(), b"-ERR [SYS/TEMP] Too many connections, try again later")
            self.assertTrue(a3.closed_by_server(5))
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.1:\d+ "
                             r"reason=max-connections-per-address$")
            # Another address still gets in, up to the total.
            b1 = self.connect_from(srv, "127.0.0.2")
            self.assertTrue(b1.greeting.startswith(b"+OK"))
            c1 = FromConn(srv.port, "127.0.0.3", read_greeting=False)
            self.env.conns.append(c1)
            self.assertEqual(c1.line(), b"-ERR [SYS/TEMP] Too many connections, try again later")
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.3:\d+ reason=max-connections$")
            # Freed slots are reusable.
            a1.quit()
            b1.quit()

            def admitted():
                c = Conn(srv.port, read_greeting=False)
                self.env.conns.append(c)
                ok = c.line().startswith(b"+OK")
                if not ok:
                    c.close()
                return c if ok else None
            again = wait_until(admitted, timeout=5, what="a freed connection slot")
            again.send(b"QUIT\r\n")
            self.assertTrue(again.line().startswith(b"+OK"))
            a2.quit()

    def connect_from(self, srv, source: str) -> FromConn:
        c = FromConn(srv.port, source)
        self.env.conns.append(c)
        return c

    def test_sessions_per_user(self):
        self.setup_alice([MSG1])
        with self.env.server("--max-sessions-per-user", "1") as srv:
            first = srv.connect()
            first.login("alice", ALICE_SECRET)
            with srv.connect() as second:
                r = second.apop("alice", ALICE_SECRET)
                self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
            # Refused by the session limit, before the maildrop lock is tried.
            srv.wait_for_log(r"session limit user=alice max=1$")
            first.quit()
            with srv.connect() as third:
                wait_until(lambda: third.apop("alice", ALICE_SECRET).startswith(b"+OK"),
                           timeout=5, what="alice's session slot")
                third.quit()

    def test_pre_login_deadline_closes_a_trickling_client(self):
        self.setup_alice()
        with self.env.server("--login-deadline", "2", "--login-timeout", "60") as srv:
            c = srv.connect()
            start = time.monotonic()
            closed = False
            # One byte every 0.3 s: never idle, never a whole command.
            for ch in b"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX":
                try:
                    c.send(bytes([ch]))
                except OSError:
                    closed = True
                    break
                if c.closed_by_server(0.3):
                    closed = True
                    break
            self.assertTrue(closed, "trickling client still connected after 15 s")
            self.assertGreaterEqual(time.monotonic() - start, 2 * 0.95)
            self.assertIn(b"-ERR Disconnected: login took too long\r\n", c.buf)
            srv.wait_for_log(r"disconnect addr=127\.0\.0\.1:\d+ reason=login-deadline$")
            # A client that logs in in time is not affected by the deadline.
            with srv.connect() as ok:
                ok.login("alice", ALICE_SECRET)
                time.sleep(2.5)
                self.assertTrue(ok.cmd("STAT").startswith(b"+OK"))
                ok.quit()


if __name__ == "__main__":
    unittest.main()
