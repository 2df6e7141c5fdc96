"""Hostile-input suite, mail part: hostile message contents and mail arriving mid-session.

Messages with leading dots, a lone ".", NUL and every other octet, a 1 MiB line,
no final newline, no body, no header/body separator, bare CRs, nothing at all; each read by a
raw client (exact octets, dot-stuffing, LIST size = octets received) and by
Python's poplib (byte-exact after dot-unstuffing). Mail delivered with `apop
deliver` during a session follows RFC 1939 snapshot semantics: invisible until
the next session, never lost, never removed by DELE of other messages.
hostile.HostileCase checks descriptors, memory and a normal session after each test.
"""

import poplib
import threading
import unittest

from apoptest import Conn, apop_digest, crlf, make_message, wait_until
from hostile import ALICE_SECRET, BOB_SECRET, HostileCase, read_multi_raw, stuffed

MIB = 1024 * 1024
CAROL_SECRET = "Cobalt-harbor-5521-ridge"

# (name, stored octets). Each is delivered to carol in this order.
MESSAGES = [
    ("dots", b"Subject: dots\n\n.\n..\n...\n.x\n. \n.\r\n..\r\nmiddle\n.\n"),
    ("lone dot, no newline", b"."),
    ("dot line last, no newline", b"Subject: d\n\nl\n."),
    ("NUL octets", b"Subject: nul\n\na\0b\n\0\n\0\0\0\n.\0\n"),
    ("every octet", b"Subject: bin\n\n" + bytes(range(256)) + b"\n" + bytes(range(255, -1, -1))
     + b"\n"),
    ("1 MiB line", b"Subject: long\n\n" + b"y" * MIB + b"\nshort\n"),
    ("1 MiB line, no newline", b"Subject: long2\n\n" + b".z" * (MIB // 2)),
    ("no final newline", b"Subject: nfn\n\nno newline at end"),
    ("headers only", b"Subject: headers only\nX-A: b\n"),
    ("empty body", b"Subject: empty body\n\n"),
    ("bare CRs", b"Subject: cr\n\na\rb\r\rc\n\r\n\r.\n"),
    ("mixed line ends", b"Subject: mix\r\n\r\none\r\ntwo\nthree\r\r\nfour\n\n\n"),
    ("trailing bare CR", b"Subject: a\n\nx\r"),
    ("CRLF dot CRLF inside", b"Subject: t\r\n\r\nbefore\r\n.\r\nafter\r\n"),
    # `apop deliver` stores an empty input as is; it is served as an empty body.
    ("empty", b""),
]
NAMES = [n for n, _ in MESSAGES]


def wire(message: bytes) -> bytes:
    """The message octets as sent by RETR, unstuffed, without the terminating '.':
    CRLF form, plus CRLF when it does not end in LF (as Dovecot)."""
    body = crlf(message)
    if body and not body.endswith(b"\n"):
        body += b"\r\n"
    return body


def unstuff_raw(raw: bytes) -> bytes:
    """Undoes dot-stuffing of a multi-line body (terminator included) -> message octets."""
    assert raw.endswith(b".\r\n"), raw[-20:]
    raw = raw[:-3]
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"", "body does not end in CRLF before the terminator"
    out = []
    for l in lines[:-1]:
        assert not l == b".", "an unstuffed '.' line inside the body"
        out.append(l[1:] if l.startswith(b".") else l)
    return b"".join(l + b"\r\n" for l in out)


class HostileMessagesTest(HostileCase):
    @classmethod
    def prepare(cls, env):
        env.add_user("carol", CAROL_SECRET)
        for _, m in MESSAGES:
            env.deliver("carol", m)

    def carol(self) -> Conn:
        return self.login("carol", CAROL_SECRET)

    def test_raw_client_gets_exact_octets_and_sizes(self):
        c = self.carol()
        total = sum(len(crlf(m)) for _, m in MESSAGES)
        self.assertEqual(c.cmd("STAT"), f"+OK {len(MESSAGES)} {total}".encode())
        self.assertEqual(c.cmd("LIST"),
                         f"+OK {len(MESSAGES)} messages ({total} octets)".encode())
        listing = read_multi_raw(c)
        self.assertEqual(listing, b"".join(f"{i} {len(crlf(m))}\r\n".encode()
                                           for i, (_, m) in enumerate(MESSAGES, 1)) + b".\r\n")
        for i, (name, m) in enumerate(MESSAGES, 1):
            with self.subTest(message=name):
                size = len(crlf(m))
                self.assertEqual(c.cmd(f"LIST {i}"), f"+OK {i} {size}".encode())
                self.assertEqual(c.cmd(f"RETR {i}"), f"+OK {size} octets".encode())
                raw = read_multi_raw(c)
                self.assertEqual(raw, stuffed(m))
                got = unstuff_raw(raw)
                self.assertEqual(got, wire(m))
                # LIST's size is exactly the octets received; a message without a
                # final newline gets a CRLF the size does not count (Dovecot's rule).
                extra = 0 if m.endswith(b"\n") or not m else 2
                self.assertEqual(len(got), size + extra)

    def test_pipelined_retr_of_everything(self):
        c = self.carol()
        c.send(b"".join(f"RETR {i}\r\n".encode() for i in range(1, len(MESSAGES) + 1)) +
               b"NOOP\r\n")
        for i, (name, m) in enumerate(MESSAGES, 1):
            with self.subTest(message=name):
                self.assertEqual(c.line(), f"+OK {len(crlf(m))} octets".encode())
                self.assertEqual(read_multi_raw(c), stuffed(m))
        self.assertEqual(c.line(), b"+OK")

    def test_top_of_hostile_messages(self):
        c = self.carol()
        for i, (name, m) in enumerate(MESSAGES, 1):
            for n in (0, 1, 2):
                with self.subTest(message=name, lines=n):
                    self.assertEqual(c.cmd(f"TOP {i} {n}"), b"+OK Top of message follows")
                    got = unstuff_raw(read_multi_raw(c))
                    full = wire(m)
                    # TOP's output is a prefix of the message, in whole lines.
                    self.assertTrue(full.startswith(got), got[:200])
                    self.assertTrue(got == b"" or got.endswith(b"\r\n"))
            with self.subTest(message=name, lines="all"):
                self.assertEqual(c.cmd(f"TOP {i} 18446744073709551615"),
                                 b"+OK Top of message follows")
                self.assertEqual(unstuff_raw(read_multi_raw(c)), wire(m))

    def test_uidl_lines_are_valid(self):
        c = self.carol()
        self.assertEqual(c.cmd("UIDL"), b"+OK Unique-ID listing follows")
        lines = read_multi_raw(c).split(b"\r\n")[:-2]
        self.assertEqual(len(lines), len(MESSAGES))
        uids = set()
        for i, l in enumerate(lines, 1):
            n, uid = l.split(b" ")
            self.assertEqual(int(n), i)
            self.assertTrue(1 <= len(uid) <= 70 and all(0x21 <= b <= 0x7E for b in uid), uid)
            uids.add(uid)
        self.assertEqual(len(uids), len(MESSAGES))

    def test_poplib_is_byte_exact_after_unstuffing(self):
        old = poplib._MAXLINE
        poplib._MAXLINE = 2 * MIB  # poplib refuses lines over 2048 octets by default
        self.addCleanup(setattr, poplib, "_MAXLINE", old)
        p = poplib.POP3("127.0.0.1", self.srv.port, timeout=10)
        try:
            p.apop("carol", CAROL_SECRET)
            self.assertEqual(p.stat(), (len(MESSAGES), sum(len(crlf(m)) for _, m in MESSAGES)))
            for i, (name, m) in enumerate(MESSAGES, 1):
                with self.subTest(message=name):
                    resp, lines, octets = p.retr(i)
                    self.assertEqual(resp, f"+OK {len(crlf(m))} octets".encode())
                    self.assertEqual(b"".join(l + b"\r\n" for l in lines), wire(m))
                    # poplib's octet count is the unstuffed octets received.
                    self.assertEqual(octets, len(wire(m)))
                    self.assertEqual(int(p.list(i).split()[2]), len(crlf(m)))
            p.rset()
        finally:
            p.close()


class HostileDeliveryDuringSessionTest(HostileCase):
    """RFC 1939 §8 (and every real server): a session works on a snapshot."""

    OLD = [make_message(f"old {i}", f"old message {i}\n") for i in range(3)]

    USERS = {"dave": "Dandelion-quarry-7710-spire", "frank": "Fjord-walnut-2294-cinder"}

    @classmethod
    def prepare(cls, env):
        for user, secret in cls.USERS.items():
            env.add_user(user, secret)
            for m in cls.OLD:
                env.deliver(user, m)

    def open_session(self, user: str) -> Conn:
        return self.login(user, self.USERS[user])

    def snapshot_listing(self, c: Conn) -> tuple[bytes, bytes, bytes]:
        """STAT, LIST and UIDL of the session, as sent."""
        st = c.cmd("STAT")
        _, n, size = st.split(b" ")
        self.assertEqual(c.cmd("LIST"), b"+OK " + n + b" messages (" + size + b" octets)")
        lst = read_multi_raw(c)
        self.assertEqual(c.cmd("UIDL"), b"+OK Unique-ID listing follows")
        return st, lst, read_multi_raw(c)

    def test_delivery_mid_session_is_invisible_then_kept(self):
        new = [make_message("new 1", "arrived during the session\n"),
               make_message("new 2", ".dotted\nno newline")]
        c = self.open_session("dave")
        before = self.snapshot_listing(c)
        for m in new:
            self.env.deliver("dave", m)
        # Same snapshot: counts, sizes, UIDLs; the new messages have no number.
        self.assertEqual(self.snapshot_listing(c), before)
        self.assertEqual(c.cmd("LIST 4"), b"-ERR No such message")
        self.assertEqual(c.cmd("RETR 4"), b"-ERR No such message")
        # DELE of every old message, and QUIT: only those are removed.
        for i in (1, 2, 3):
            self.assertEqual(c.cmd(f"DELE {i}"), b"+OK Message deleted")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out (0 messages left)")
        c.close()
        self.assertEqual(sorted(self.env.stored_messages("dave")), sorted(new))
        # The next session sees exactly the new ones, byte-exact.
        c = self.open_session("dave")
        self.assertEqual(c.cmd("STAT"),
                         f"+OK 2 {sum(len(crlf(m)) for m in new)}".encode())
        got = []
        for i in (1, 2):
            c.cmd(f"RETR {i}")
            got.append(unstuff_raw(read_multi_raw(c)))
        self.assertEqual(sorted(got), sorted(wire(m) for m in new))

    def test_delivery_during_aborted_session_and_concurrent_deliveries(self):
        c = self.open_session("frank")
        self.assertEqual(c.cmd("DELE 1"), b"+OK Message deleted")
        # Ten deliveries race with the open session (and its lock).
        new = [make_message(f"burst {i}", f"burst message {i}\n" * (i + 1)) for i in range(10)]
        errors = []

        def deliver(m):
            p = self.env.run("deliver", "--data", self.env.data, "frank", input=m)
            if p.returncode != 0:
                errors.append(p.stderr)
        ts = [threading.Thread(target=deliver, args=(m,)) for m in new]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(c.cmd("STAT").split(b" ")[1], b"2")
        c.abort()  # dropped without QUIT: the DELE is forgotten
        self.assertEqual(sorted(self.env.stored_messages("frank")), sorted(self.OLD + new))
        c = self.open_session("frank")
        self.assertEqual(c.cmd("STAT").split(b" ")[1], b"13")
        # A QUIT with DELE of 1..13 in a session that began before more mail came.
        late = make_message("late", "came after the snapshot\n")
        self.env.deliver("frank", late)
        for i in range(1, 14):
            self.assertEqual(c.cmd(f"DELE {i}"), b"+OK Message deleted")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out (0 messages left)")
        self.assertEqual(self.env.stored_messages("frank"), [late])


if __name__ == "__main__":
    unittest.main()
