"""Raw-socket protocol tests: RFC 1939, RFC 2449 CAPA/PIPELINING, RFC 3206 codes,
and apop's own guarantees (limits, locking, logging, shutdown)."""

import concurrent.futures
import re
import signal
import socket
import subprocess
import time
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, MSG_ID_RE, ApopTestCase, Conn, apop_digest,
                      crlf, make_message, timestamp_of, unstuff)

MSG1 = make_message("one", "body of one\n.dotted\n..double\nlast\n")
MSG2 = make_message("two", "b1\nb2\nb3\nb4\nb5\n")
MSG3 = make_message("three", "third\n")

PLAINTEXT_REFUSED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connection"
CAPA_ALWAYS = {b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"}


def capa(c: Conn) -> list[bytes]:
    status, lines = c.cmd_multi("CAPA")
    assert status.startswith(b"+OK"), status
    return lines


def capa_names(lines: list[bytes]) -> set[bytes]:
    return {l.split(b" ", 1)[0].upper() for l in lines}


def login_when_free(srv, user="alice", secret=ALICE_SECRET, timeout=5.0) -> Conn:
    """Logs in, retrying while the maildrop is still [IN-USE] (a dropped session's
    lock is released as soon as the server notices the disconnect)."""
    deadline = time.monotonic() + timeout
    while True:
        c = srv.connect()
        r = c.apop(user, secret)
        if r.startswith(b"+OK"):
            return c
        c.close()
        if not r.startswith(b"-ERR [IN-USE]") or time.monotonic() > deadline:
            raise AssertionError(f"login did not succeed: {r!r}")
        time.sleep(0.05)


class GreetingTest(ApopTestCase):

    def test_greeting_format(self):
        self.setup_alice()
        with self.env.server("--hostname", "pop.example.test") as srv:
            with srv.connect() as c:
                g = c.greeting
                self.assertLessEqual(len(g) + 2, 512)
                self.assertRegex(g, rb"^\+OK [\x20-\x7e]+$")
                ts = timestamp_of(g)
                m = MSG_ID_RE.fullmatch(ts)
                self.assertIsNotNone(m, ts)
                self.assertEqual(m.group("host"), b"pop.example.test")
                self.assertEqual(int(m.group("pid")), srv.pid)
                self.assertTrue(c.quit().startswith(b"+OK"))

    def test_thousand_greetings_have_distinct_timestamps(self):
        self.setup_alice()
        with self.env.server("--hostname", "pop.example.test") as srv:
            def greet(_):
                with Conn(srv.port) as c:
                    g = c.greeting
                    c.send(b"QUIT\r\n")
                    c.line()
                    return g

            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
                greetings = list(pool.map(greet, range(1000)))
            self.assertLess(time.monotonic() - start, 30)
        stamps = []
        for g in greetings:
            ts = timestamp_of(g)
            m = MSG_ID_RE.fullmatch(ts)
            self.assertIsNotNone(m, f"not a msg-id: {ts!r}")
            self.assertGreaterEqual(len(m.group("hex")), 32)  # >= 128 bits
            stamps.append(ts)
        self.assertEqual(len(set(stamps)), 1000)

    def test_timestamp_is_bound_to_its_connection(self):
        self.setup_alice()
        with self.env.server() as srv:
            with srv.connect() as a, srv.connect() as b:
                # A digest computed for connection a's timestamp is useless on b.
                r = b.cmd(f"APOP alice {apop_digest(a.timestamp, ALICE_SECRET)}")
                self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
                self.assertTrue(a.apop("alice", ALICE_SECRET).startswith(b"+OK"))


class CapaAndPlaintextTest(ApopTestCase):

    def test_capa_before_and_after_login(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                before = capa(c)
                names = capa_names(before)
                self.assertTrue(CAPA_ALWAYS <= names, before)
                self.assertIn(b"USER", names)  # loopback counts as secure
                self.assertIn(b"IMPLEMENTATION", names)
                for l in before:
                    self.assertRegex(l, rb"^[\x21-\x7e][\x20-\x7e]*$")
                c.login("alice", ALICE_SECRET)
                after = capa_names(capa(c))
                self.assertTrue(CAPA_ALWAYS <= after, after)
                self.assertTrue(c.cmd("STAT").startswith(b"+OK"))
                c.quit()

    def test_no_implementation(self):
        self.setup_alice()
        with self.env.server("--no-implementation") as srv:
            with srv.connect() as c:
                names = capa_names(capa(c))
                self.assertNotIn(b"IMPLEMENTATION", names)
                self.assertTrue(CAPA_ALWAYS <= names)

    def test_user_refused_without_secure_loopback(self):
        self.setup_alice([MSG1])
        with self.env.server("--no-secure-loopback") as srv:
            with srv.connect() as c:
                self.assertNotIn(b"USER", capa_names(capa(c)))
                self.assertEqual(c.cmd("USER alice"), PLAINTEXT_REFUSED)
                self.assertTrue(c.cmd("PASS " + ALICE_SECRET).startswith(b"-ERR"))
                # APOP works on any connection.
                c.login("alice", ALICE_SECRET)
                self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
                c.quit()
            self.assertNotIn(ALICE_SECRET, srv.log())

    def test_allow_plaintext_auth_reenables_user(self):
        self.setup_alice([MSG1])
        with self.env.server("--no-secure-loopback", "--allow-plaintext-auth") as srv:
            with srv.connect() as c:
                self.assertIn(b"USER", capa_names(capa(c)))
                self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
                self.assertTrue(c.cmd("PASS " + ALICE_SECRET).startswith(b"+OK"))
                self.assertTrue(c.cmd("STAT").startswith(b"+OK 1 "))
                c.quit()

    def test_user_pass_on_loopback(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
                self.assertTrue(c.cmd("PASS " + ALICE_SECRET).startswith(b"+OK"))
                self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
                c.quit()
            srv.wait_for_log(r"login ok user=alice mech=\S+ addr=127\.0\.0\.1:\d+")
            self.assertNotIn(ALICE_SECRET, srv.log())


class AuthFailureTest(ApopTestCase):

    def test_unknown_user_and_wrong_secret_are_indistinguishable(self):
        self.setup_alice([MSG1])
        with self.env.server("--max-auth-failures", "10") as srv:
            with srv.connect() as c:
                wrong = c.cmd(f"APOP alice {apop_digest(c.timestamp, 'wrong-secret-123456')}")
                unknown = c.cmd(f"APOP nosuchuser {apop_digest(c.timestamp, ALICE_SECRET)}")
                malformed = c.cmd("APOP alice 0123")
                self.assertTrue(wrong.startswith(b"-ERR [AUTH]"), wrong)
                self.assertEqual(wrong, unknown)
                self.assertTrue(malformed.startswith(b"-ERR"), malformed)
                # USER never reveals whether the user exists; PASS failures are identical.
                u1 = c.cmd("USER alice")
                p1 = c.cmd("PASS wrong-secret-123456")
                u2 = c.cmd("USER nosuchuser")
                p2 = c.cmd("PASS " + ALICE_SECRET)
                self.assertTrue(u1.startswith(b"+OK"), u1)
                self.assertEqual(u1.replace(b"alice", b"X"), u2.replace(b"nosuchuser", b"X"))
                self.assertTrue(p1.startswith(b"-ERR [AUTH]"), p1)
                self.assertEqual(p1, p2)
                # Still in AUTHORIZATION: STAT is a wrong-state error, then login works.
                self.assertTrue(c.cmd("STAT").startswith(b"-ERR"))
                c.login("alice", ALICE_SECRET)

    def test_uppercase_digest_accepted(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                d = apop_digest(c.timestamp, ALICE_SECRET).upper()
                self.assertTrue(c.cmd(f"APOP alice {d}").startswith(b"+OK"))

    def test_closed_after_three_failures(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                # Two failures leave the session usable.
                for _ in range(2):
                    self.assertTrue(c.apop("alice", "bad-secret-0000000").startswith(b"-ERR"))
                c.login("alice", ALICE_SECRET)
                c.quit()
            with srv.connect() as c:
                for i in range(3):
                    r = c.apop("alice" if i % 2 else "ghost", "bad-secret-0000000")
                    self.assertTrue(r.startswith(b"-ERR [AUTH]"), r)
                self.assertTrue(c.closed_by_server(5), "connection not closed after 3 failures")
            srv.wait_for_log(r"login failed user=alice mech=APOP", count=3)
            srv.wait_for_log(r"login failed user=ghost mech=APOP", count=2)

    def test_max_auth_failures_option(self):
        self.setup_alice()
        with self.env.server("--max-auth-failures", "1") as srv:
            with srv.connect() as c:
                self.assertTrue(c.apop("alice", "bad-secret-0000000").startswith(b"-ERR [AUTH]"))
                self.assertTrue(c.closed_by_server(5))

    def test_login_log_lines(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                bad_digest = apop_digest(c.timestamp, "another-wrong-secret")
                self.assertTrue(c.cmd(f"APOP alice {bad_digest}").startswith(b"-ERR"))
                fail_addr = c.client_addr
            with srv.connect() as c:
                good_digest = apop_digest(c.timestamp, ALICE_SECRET)
                self.assertTrue(c.cmd(f"APOP alice {good_digest}").startswith(b"+OK"))
                ok_addr = c.client_addr
                c.quit()
            ok = srv.wait_for_log(r"login ok ")
            failed = srv.wait_for_log(r"login failed ")
            self.assertEqual(len(ok), 1, srv.log())
            self.assertEqual(len(failed), 1, srv.log())
            self.assertRegex(ok[0], r"login ok user=alice mech=APOP addr=" + re.escape(ok_addr)
                             + r"(\s|$)")
            self.assertRegex(failed[0], r"login failed user=alice mech=APOP addr="
                             + re.escape(fail_addr) + r"(\s|$)")
            log = srv.log()
            for secret in (ALICE_SECRET, "another-wrong-secret", good_digest, bad_digest):
                self.assertNotIn(secret, log)


class LockTest(ApopTestCase):

    def test_in_use_and_release_after_abrupt_disconnect(self):
        self.setup_alice([MSG1])
        self.env.add_user("bob", BOB_SECRET)
        with self.env.server() as srv:
            first = srv.connect()
            first.login("alice", ALICE_SECRET)
            with srv.connect() as second:
                r = second.apop("alice", ALICE_SECRET)
                self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
            with srv.connect() as third:
                self.assertTrue(third.cmd("USER alice").startswith(b"+OK"))
                r = third.cmd("PASS " + ALICE_SECRET)
                self.assertTrue(r.startswith(b"-ERR [IN-USE]"), r)
            # Another user's maildrop is independent.
            with srv.connect() as b:
                b.login("bob", BOB_SECRET)
                b.quit()
            # The first session still works.
            self.assertEqual(first.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
            first.abort()  # no QUIT
            c = login_when_free(srv)
            self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
            c.quit()
            # And after a clean QUIT the lock is free at once.
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            c.quit()

    def test_lock_released_after_plain_close(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            first = srv.connect()
            first.login("alice", ALICE_SECRET)
            first.close()  # FIN, no QUIT
            login_when_free(srv).quit()


class CommandTest(ApopTestCase):

    def session(self, srv, *args) -> Conn:
        c = srv.connect()
        c.login("alice", ALICE_SECRET)
        return c

    def test_pipelining(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            with srv.connect() as c:
                d = apop_digest(c.timestamp, ALICE_SECRET)
                c.send((f"CAPA\r\nAPOP alice {d}\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\n"
                        "TOP 2 1\r\nDELE 1\r\nLIST 1\r\nNOOP\r\nRSET\r\nSTAT\r\nQUIT\r\n")
                       .encode())
                self.assertTrue(c.line().startswith(b"+OK"))
                self.assertTrue(CAPA_ALWAYS <= capa_names(c.multi()))
                self.assertTrue(c.line().startswith(b"+OK"))  # APOP
                size = len(crlf(MSG1)) + len(crlf(MSG2))
                self.assertEqual(c.line(), b"+OK 2 %d" % size)  # STAT
                self.assertTrue(c.line().startswith(b"+OK"))  # LIST
                self.assertEqual(c.multi(), [b"1 %d" % len(crlf(MSG1)),
                                             b"2 %d" % len(crlf(MSG2))])
                self.assertRegex(c.line(), rb"^\+OK 2 [\x21-\x7e]{1,70}$")  # UIDL 2
                self.assertTrue(c.line().startswith(b"+OK"))  # RETR 1
                self.assertEqual(unstuff(c.multi()), crlf(MSG1)[:-2].split(b"\r\n"))
                self.assertTrue(c.line().startswith(b"+OK"))  # TOP 2 1
                head = MSG2.split(b"\n\n")[0].split(b"\n")
                self.assertEqual(c.multi(), head + [b"", b"b1"])
                self.assertTrue(c.line().startswith(b"+OK"))  # DELE 1
                self.assertTrue(c.line().startswith(b"-ERR"))  # LIST 1 (deleted)
                self.assertTrue(c.line().startswith(b"+OK"))  # NOOP
                self.assertTrue(c.line().startswith(b"+OK"))  # RSET
                self.assertEqual(c.line(), b"+OK 2 %d" % size)  # STAT
                self.assertTrue(c.line().startswith(b"+OK"))  # QUIT
                self.assertTrue(c.closed_by_server(5))
                self.assertEqual(c.buf, b"")
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_commands_split_across_segments(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                # Commands split at arbitrary points still form the right lines.
                d = apop_digest(c.timestamp, ALICE_SECRET)
                for b in f"APOP alice {d}\r\nST".encode():
                    c.send(bytes([b]))
                c.send(b"AT\r")
                time.sleep(0.05)
                c.send(b"\nQUIT\r\n")
                self.assertTrue(c.line().startswith(b"+OK"))
                self.assertEqual(c.line(), b"+OK 1 %d" % len(crlf(MSG1)))
                self.assertTrue(c.line().startswith(b"+OK"))

    def test_overlong_line_is_rejected_whole(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server("--max-bad-commands", "50") as srv:
            c = self.session(srv)
            # Lines longer than 255 octets (with CRLF) whose tails, cut at any plausible
            # buffer boundary, would be valid commands. None of them may run.
            for prefix in (250, 251, 253, 254, 255, 256, 300, 511, 512, 1024, 4096):
                for tail in (b"QUIT", b"DELE 1"):
                    line = b"X" * prefix + tail + b"\r\n"
                    self.assertGreater(len(line), 255)
                    c.send(line + b"NOOP\r\n")
                    r = c.line()
                    self.assertTrue(r.startswith(b"-ERR"), (prefix, tail, r))
                    self.assertTrue(c.line().startswith(b"+OK"), (prefix, tail))
            # Also a line that *starts* like a valid command.
            c.send(b"DELE 1" + b" " * 250 + b"\r\nNOOP\r\n")
            self.assertTrue(c.line().startswith(b"-ERR"))
            self.assertTrue(c.line().startswith(b"+OK"))
            # 100 KB in one line, tail "QUIT".
            c.send(b"A" * (100 * 1024) + b"QUIT\r\nSTAT\r\n")
            self.assertTrue(c.line().startswith(b"-ERR"))
            self.assertEqual(c.line(), b"+OK 2 %d" % (len(crlf(MSG1)) + len(crlf(MSG2))))
            # Nothing was marked deleted, and the session is alive.
            self.assertTrue(c.cmd("LIST 1").startswith(b"+OK"))
            c.quit()
            with srv.connect() as c2:
                c2.login("alice", ALICE_SECRET)
                self.assertTrue(c2.cmd("STAT").startswith(b"+OK 2 "))
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_overlong_line_before_login(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                d = apop_digest(c.timestamp, ALICE_SECRET)
                # If the tail ran, this would log in.
                c.send(b"Y" * 255 + f"APOP alice {d}\r\n".encode() + b"STAT\r\n")
                self.assertTrue(c.line().startswith(b"-ERR"))
                self.assertTrue(c.line().startswith(b"-ERR"))  # STAT: still not logged in
                self.assertTrue(c.cmd(f"APOP alice {d}").startswith(b"+OK"))

    def test_nul_byte_is_rejected(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            c = self.session(srv)
            for bad in (b"NOOP\x00", b"STAT\x00QUIT", b"QUIT\x00", b"DELE\x001", b"DELE 1\x00",
                        b"\x00"):
                r = c.cmd(bad)
                self.assertTrue(r.startswith(b"-ERR"), (bad, r))
            self.assertTrue(c.cmd("LIST 1").startswith(b"+OK 1 "))
            c.quit()
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_strict_message_numbers(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server("--max-bad-commands", "100") as srv:
            c = self.session(srv)
            bad_numbers = ["0", "+1", "1x", "-1", "0x1", "1.0", "１",
                           "4294967297", "4294967296", "18446744073709551617",
                           "18446744073709551616", "99999999999999999999999999", "3"]
            for n in bad_numbers:
                for cmd in ("LIST", "RETR", "UIDL", "DELE"):
                    r = c.cmd(f"{cmd} {n}")
                    self.assertTrue(r.startswith(b"-ERR"), (cmd, n, r))
                r = c.cmd(f"TOP {n} 0")
                self.assertTrue(r.startswith(b"-ERR"), ("TOP", n, r))
            for m in ("-1", "+1", "1x", "18446744073709551617"):
                self.assertTrue(c.cmd(f"TOP 1 {m}").startswith(b"-ERR"), m)
            self.assertTrue(c.cmd("LIST 1 2").startswith(b"-ERR"))
            self.assertTrue(c.cmd("RETR").startswith(b"-ERR"))
            self.assertTrue(c.cmd("DELE").startswith(b"-ERR"))
            self.assertTrue(c.cmd("TOP 1").startswith(b"-ERR"))
            # Nothing got deleted by any of that.
            self.assertEqual(c.cmd("STAT"), b"+OK 2 %d" % (len(crlf(MSG1)) + len(crlf(MSG2))))
            self.assertEqual(c.cmd("LIST 2"), b"+OK 2 %d" % len(crlf(MSG2)))
            c.quit()
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_commands_are_case_insensitive(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                self.assertTrue(c.cmd(f"apop alice {apop_digest(c.timestamp, ALICE_SECRET)}")
                                .startswith(b"+OK"))
                self.assertEqual(c.cmd("stat"), b"+OK 1 %d" % len(crlf(MSG1)))
                self.assertTrue(c.cmd("Noop").startswith(b"+OK"))
                self.assertTrue(c.cmd("quit").startswith(b"+OK"))

    def test_wrong_state_commands(self):
        self.setup_alice([MSG1])
        with self.env.server("--max-bad-commands", "50") as srv:
            with srv.connect() as c:
                for cmd in ("STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET",
                            "TOP 1 0", "UIDL", "UIDL 1", "PASS whatever-secret", "XYZZY"):
                    r = c.cmd(cmd)
                    self.assertTrue(r.startswith(b"-ERR"), (cmd, r))
                c.login("alice", ALICE_SECRET)
                d = apop_digest(c.timestamp, ALICE_SECRET)
                for cmd in (f"APOP alice {d}", "USER alice", "PASS " + ALICE_SECRET, "XYZZY",
                            "STLS", "AUTH PLAIN"):
                    r = c.cmd(cmd)
                    self.assertTrue(r.startswith(b"-ERR"), (cmd, r))
                self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
                c.quit()

    def test_too_many_bad_commands_close_the_session(self):
        self.setup_alice()
        with self.env.server("--max-bad-commands", "3") as srv:
            with srv.connect() as c:
                c.send(b"BOGUS\r\n" * 10)
                self.assertTrue(c.closed_by_server(5), "session not closed")
                replies = [l for l in c.buf.split(b"\r\n") if l]
                self.assertGreaterEqual(len(replies), 1)
                self.assertLessEqual(len(replies), 4, replies)
                self.assertTrue(all(r.startswith(b"-ERR") for r in replies), replies)

    def test_dele_retr_rset(self):
        self.setup_alice([MSG1, MSG2, MSG3])
        with self.env.server() as srv:
            c = self.session(srv)
            self.assertTrue(c.cmd("DELE 2").startswith(b"+OK"))
            for cmd in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
                self.assertTrue(c.cmd(cmd).startswith(b"-ERR"), cmd)
            self.assertEqual(c.cmd("STAT"), b"+OK 2 %d" % (len(crlf(MSG1)) + len(crlf(MSG3))))
            status, lines = c.cmd_multi("LIST")
            self.assertEqual(lines, [b"1 %d" % len(crlf(MSG1)), b"3 %d" % len(crlf(MSG3))])
            status, lines = c.cmd_multi("UIDL")
            self.assertEqual([l.split()[0] for l in lines], [b"1", b"3"])
            # Numbers of the others are unchanged.
            status, body = c.cmd_multi("RETR 3")
            self.assertEqual(unstuff(body), crlf(MSG3)[:-2].split(b"\r\n"))
            self.assertTrue(c.cmd("RSET").startswith(b"+OK"))
            self.assertEqual(c.cmd("LIST 2"), b"+OK 2 %d" % len(crlf(MSG2)))
            self.assertEqual(c.cmd("STAT"), b"+OK 3 %d" % sum(len(crlf(m))
                                                                for m in (MSG1, MSG2, MSG3)))
            c.quit()
        self.assertEqual(len(self.env.message_files("alice")), 3)

    def test_dropped_connection_after_dele_removes_nothing(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            c = self.session(srv)
            self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
            self.assertTrue(c.cmd("DELE 2").startswith(b"+OK"))
            c.abort()
            c = login_when_free(srv)
            self.assertEqual(c.cmd("STAT"), b"+OK 2 %d" % (len(crlf(MSG1)) + len(crlf(MSG2))))
            c.quit()
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_quit_in_authorization_deletes_nothing(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            with srv.connect() as c:
                self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
                self.assertTrue(c.closed_by_server(5))
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_mail_delivered_during_session_shows_up_next_session(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            c = self.session(srv)
            status, uidl1 = c.cmd_multi("UIDL")
            self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
            self.env.deliver("alice", MSG3)
            size12 = len(crlf(MSG1)) + len(crlf(MSG2))
            self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG2)))
            self.assertTrue(c.cmd("LIST 3").startswith(b"-ERR"))
            self.assertEqual(c.cmd("LIST 2"), b"+OK 2 %d" % len(crlf(MSG2)))
            self.assertTrue(c.cmd("RSET").startswith(b"+OK"))
            self.assertEqual(c.cmd("STAT"), b"+OK 2 %d" % size12)
            self.assertEqual(c.cmd_multi("UIDL")[1], uidl1)
            c.quit()
            c = self.session(srv)
            self.assertEqual(c.cmd("STAT"), b"+OK 3 %d" % (size12 + len(crlf(MSG3))))
            status, uidl2 = c.cmd_multi("UIDL")
            self.assertEqual(uidl2[:2], uidl1)
            status, body = c.cmd_multi("RETR 3")
            self.assertEqual(unstuff(body), crlf(MSG3)[:-2].split(b"\r\n"))
            c.quit()

    def test_top_exact_output(self):
        msg = (b"From: a@example.org\nTo: b@example.org\nSubject: top\n\n"
               b"first\n.second starts with a dot\nthird\n")
        self.setup_alice([msg])
        with self.env.server() as srv:
            c = self.session(srv)
            status = c.cmd("TOP 1 0")
            self.assertTrue(status.startswith(b"+OK"), status)
            self.assertEqual(c.multi_raw(), b"From: a@example.org\r\nTo: b@example.org\r\n"
                                            b"Subject: top\r\n\r\n.\r\n")

            self.assertTrue(c.cmd("TOP 1 2").startswith(b"+OK"))
            self.assertEqual(c.multi(), [b"From: a@example.org", b"To: b@example.org",
                                         b"Subject: top", b"", b"first",
                                         b"..second starts with a dot"])
            self.assertTrue(c.cmd("TOP 1 100").startswith(b"+OK"))
            self.assertEqual(unstuff(c.multi()), crlf(msg)[:-2].split(b"\r\n"))
            c.quit()

    def test_retr_exact_bytes(self):
        msg = b"Subject: raw\n\n.\n..\n.x\nbare\rcr\nend"
        self.setup_alice([msg])
        with self.env.server() as srv:
            c = self.session(srv)
            size = len(crlf(msg))
            self.assertEqual(size, len(b"Subject: raw\r\n\r\n.\r\n..\r\n.x\r\nbare\rcr\r\nend"))
            self.assertEqual(c.cmd("LIST 1"), b"+OK 1 %d" % size)
            self.assertTrue(c.cmd("RETR 1").startswith(b"+OK"))
            expected = b"Subject: raw\r\n\r\n..\r\n...\r\n..x\r\nbare\rcr\r\nend\r\n.\r\n"
            self.assertEqual(c.multi_raw(), expected)
            self.assertEqual(c.buf, b"")
            c.quit()

    def test_uidl_stable_across_sessions_and_restart(self):
        self.setup_alice([MSG1, MSG2, MSG3])
        with self.env.server() as srv:
            c = self.session(srv)
            first = c.cmd_multi("UIDL")[1]
            c.quit()
            c = self.session(srv)
            self.assertEqual(c.cmd_multi("UIDL")[1], first)
            c.quit()
        self.assertEqual(len(first), 3)
        ids = [l.split(b" ", 1)[1] for l in first]
        self.assertEqual(len(set(ids)), 3)
        for u in ids:
            self.assertRegex(u, rb"^[\x21-\x7e]{1,70}$")
        with self.env.server() as srv:
            c = self.session(srv)
            self.assertEqual(c.cmd_multi("UIDL")[1], first)
            for i, u in enumerate(ids, 1):
                self.assertEqual(c.cmd(f"UIDL {i}"), b"+OK %d %s" % (i, u))
            self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
            c.quit()
            c = self.session(srv)
            self.assertEqual(c.cmd_multi("UIDL")[1], [b"1 " + ids[1], b"2 " + ids[2]])
            c.quit()

    def test_two_listeners(self):
        self.setup_alice([MSG1])
        with self.env.server(listen=["127.0.0.1:0", "127.0.0.1:0"]) as srv:
            self.assertEqual(len(set(srv.ports)), 2)
            for port in srv.ports:
                with srv.connect(port) as c:
                    c.login("alice", ALICE_SECRET)
                    self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG1)))
                    c.quit()

    def test_login_timeout(self):
        self.setup_alice()
        with self.env.server("--login-timeout", "1") as srv:
            with srv.connect() as c:
                start = time.monotonic()
                self.assertTrue(c.closed_by_server(10), "idle unauthenticated client kept")
                self.assertLess(time.monotonic() - start, 8)

    def test_idle_timeout_below_rfc_minimum_is_refused(self):
        try:
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                             "--idle-timeout", "60", timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("`apop serve --idle-timeout 60` started instead of refusing")
        self.assertIn(p.returncode, (1, 64), p.stderr)
        self.assertNotIn(b"listening on", p.stderr)


class ShutdownTest(ApopTestCase):

    def test_sigterm_with_open_session_loses_no_mail(self):
        self.setup_alice([MSG1, MSG2])
        srv = self.env.server()
        srv.start()
        c = srv.connect()
        c.login("alice", ALICE_SECRET)
        self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
        idle = srv.connect()  # and one not logged in
        rc = srv.stop(signal.SIGTERM)
        self.assertEqual(rc, 0, srv.diagnostics())
        self.assertTrue(c.closed_by_server(5))
        self.assertTrue(idle.closed_by_server(5))
        c.close()
        idle.close()
        self.assertEqual(sorted(self.env.stored_messages("alice")), sorted([MSG1, MSG2]))
        self.assertEqual(self.env.tmp_files("alice"), [])
        # A fresh server still serves both messages.
        with self.env.server() as srv2:
            c = srv2.connect()
            c.login("alice", ALICE_SECRET)
            self.assertTrue(c.cmd("STAT").startswith(b"+OK 2 "))
            c.quit()

    def test_sigint_stops_gracefully(self):
        self.setup_alice()
        srv = self.env.server()
        srv.start()
        with srv.connect() as c:
            self.assertTrue(c.greeting.startswith(b"+OK"))
        self.assertEqual(srv.stop(signal.SIGINT), 0, srv.diagnostics())
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


if __name__ == "__main__":
    unittest.main()
