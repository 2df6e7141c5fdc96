"""mbox maildrops: apop serves /var/mail-style mbox files the way Postfix local(8),
procmail and mutt write and lock them. Python's `mailbox` module is the independent
reader: what it sees in the file must match what POP3 served and what QUIT left."""

import fcntl
import mailbox
import os
import poplib
import random
import signal
import socket
import threading
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, crlf, lines_of, make_message

FROM_DATE = "Thu Jan  2 10:00:00 2025"


def mbox_entry(message: bytes, sender: str = "sender@example.org") -> bytes:
    """One message as Postfix local(8) appends it: From line, ">From " quoting, blank line."""
    body = b"".join((b">" + l if l.startswith(b"From ") else l)
                    for l in message.splitlines(keepends=True))
    if not body.endswith(b"\n"):
        body += b"\n"
    return b"From %s %s\n" % (sender.encode(), FROM_DATE.encode()) + body + b"\n"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def locked_append(path: str, data: bytes, timeout: float = 30.0) -> None:
    """procmail-style delivery: dotlock PATH.lock (O_EXCL, PID inside, a dead owner's
    lock is stale), then a POSIX fcntl write lock, append, fsync, unlock."""
    lock = path + ".lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"%d\n" % os.getpid())
            os.close(fd)
            break
        except FileExistsError:
            try:
                with open(lock, "rb") as f:
                    pid = int(f.read().strip() or b"0")
                if pid and not pid_alive(pid):
                    os.unlink(lock)
                    continue
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("dotlock " + lock)
            time.sleep(0.005)
    try:
        with open(path, "ab") as f:
            fcntl.lockf(f, fcntl.LOCK_EX)
            # A rewrite renames a new file over PATH; under the dotlock that cannot
            # happen between our open and our lock, which this asserts.
            assert os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            fcntl.lockf(f, fcntl.LOCK_UN)
    finally:
        os.unlink(lock)


def kill_during_quit(srv, p: poplib.POP3, path: str, rng: random.Random, tag: str,
                     max_delay: float) -> list[bytes]:
    """Sends QUIT on `p` and SIGKILLs `srv` up to `max_delay` s later, while an
    MTA-like writer appends up to 3 messages to the mbox under its locks (the
    rewrite must keep them). Returns the messages appended."""
    stop = threading.Event()
    mine: list[bytes] = []

    def appender():
        k = 0
        while not stop.is_set() and k < 3:
            m = make_message(f"{tag}-{k}", "appended during QUIT\n")
            locked_append(path, mbox_entry(m))
            mine.append(m)
            k += 1
            time.sleep(rng.random() * 0.02)

    t = threading.Thread(target=appender)
    t.start()
    p.sock.sendall(b"QUIT\r\n")
    time.sleep(rng.random() * max_delay)
    os.kill(srv.pid, signal.SIGKILL)
    srv.kill_quietly()
    stop.set()
    t.join(30)
    p.close()
    return mine


def read_mbox(path: str) -> list[bytes]:
    """The messages (without From lines) as Python's mailbox module reads them."""
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(k) for k in box.keys()]
    finally:
        box.close()


class MboxTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.spool = os.path.join(self.env.root, "spool")
        os.mkdir(self.spool)
        self.path = os.path.join(self.spool, "alice")
        self.location = "mbox:" + self.spool + "/%u"
        self.env.add_user("alice", ALICE_SECRET)

    def serve(self, *args: str):
        return self.env.server("--mail-location", self.location, *args)

    def deliver(self, message: bytes, expect: int = 0, env: dict | None = None):
        return self.env.check("deliver", "--data", self.env.data, "--mail-location",
                              self.location, "alice", input=message, expect=expect, env=env)

    def pop(self, srv) -> poplib.POP3:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        p.apop("alice", ALICE_SECRET)
        return p

    def write(self, messages: list[bytes]) -> None:
        with open(self.path, "wb") as f:
            for m in messages:
                f.write(mbox_entry(m))
        os.chmod(self.path, 0o660)

    # ---------------------------------------------------------------------------------

    def test_retr_is_byte_exact_and_sizes_match(self):
        msgs = [
            make_message("one", "From the start of a line\n>From already quoted\nend\n"),
            make_message("two", "crlf inside\r\nbare\rcr\nno final newline"),
            b"X-UIDL: qpopper.UID-42\n" + make_message("three", "kept its qpopper UIDL\n"),
        ]
        self.write(msgs)
        stored = read_mbox(self.path)
        self.assertEqual(len(stored), 3)
        with self.serve() as srv:
            p = self.pop(srv)
            count, total = p.stat()
            self.assertEqual(count, 3)
            self.assertEqual(total, sum(len(crlf(m)) for m in stored))
            sizes = [int(l.split()[1]) for l in p.list()[1]]
            self.assertEqual(sizes, [len(crlf(m)) for m in stored])
            for i, m in enumerate(stored, 1):
                self.assertEqual(p.retr(i)[1], lines_of(m))
            # What RETR shows: the stored bytes, ">From " lines included (never unquoted).
            self.assertIn(b">From the start of a line", b"\n".join(p.retr(1)[1]))
            uidls = [l.split()[1] for l in p.uidl()[1]]
            self.assertEqual(uidls[2], b"qpopper.UID-42")
            self.assertEqual(len(set(uidls)), 3)
            p.quit()
            # Stable across sessions.
            p = self.pop(srv)
            self.assertEqual([l.split()[1] for l in p.uidl()[1]], uidls)
            p.quit()

    def test_dele_quit_rewrites_and_keeps_uidls_and_mode(self):
        msgs = [make_message("m%d" % i, "body %d\n" % i) for i in range(5)]
        self.write(msgs)
        before_stat = os.stat(self.path)
        with self.serve() as srv:
            p = self.pop(srv)
            uidls = [l.split()[1] for l in p.uidl()[1]]
            p.dele(1)
            p.dele(4)
            p.quit()
            self.assertEqual(read_mbox(self.path), [msgs[1], msgs[2], msgs[4]])
            st = os.stat(self.path)
            self.assertEqual(st.st_mode & 0o7777, 0o660)
            self.assertEqual((st.st_uid, st.st_gid), (before_stat.st_uid, before_stat.st_gid))
            self.assertFalse(os.path.exists(self.path + ".lock"))
            p = self.pop(srv)
            self.assertEqual([l.split()[1] for l in p.uidl()[1]],
                             [uidls[1], uidls[2], uidls[4]])
            p.quit()
            # A session that ends without QUIT deletes nothing.
            p = self.pop(srv)
            p.dele(1)
            p.close()  # no QUIT
            deadline = time.monotonic() + 10
            while True:  # [IN-USE] until the server has noticed the closed connection
                try:
                    p = self.pop(srv)
                    break
                except poplib.error_proto:
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.1)
            self.assertEqual(p.stat()[0], 3)
            p.quit()
            self.assertEqual(len(read_mbox(self.path)), 3)

    def test_concurrent_delivery_during_session(self):
        msgs = [make_message("old%d" % i, "old %d\n" % i) for i in range(3)]
        self.write(msgs)
        by_deliver = make_message("by-deliver", "From here on\nvia apop deliver\n")
        by_procmail = make_message("by-procmail", "via a procmail-style locked append\n")
        with self.serve() as srv:
            p = self.pop(srv)
            self.assertEqual(p.stat()[0], 3)
            # Mail arrives while the session holds the maildrop (the mbox locks are
            # not held between commands, so neither waits).
            t0 = time.monotonic()
            self.deliver(by_deliver, env={"SENDER": "bob@example.org"})
            locked_append(self.path, mbox_entry(by_procmail))
            self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(p.stat()[0], 3)  # the session's snapshot
            p.dele(2)
            p.quit()
            stored = read_mbox(self.path)
            self.assertEqual(stored[:2], [msgs[0], msgs[2]])
            self.assertEqual(len(stored), 4)
            self.assertIn(b">From here on\nvia apop deliver\n", stored[2])
            self.assertEqual(stored[3], by_procmail)
            with open(self.path, "rb") as f:
                self.assertIn(b"\n\nFrom bob@example.org ", f.read())
            p = self.pop(srv)
            self.assertEqual(p.stat()[0], 4)
            self.assertEqual(p.retr(4)[1], lines_of(by_procmail))
            p.quit()

    def test_in_use_while_another_holds_the_dotlock_or_fcntl_lock(self):
        self.write([make_message("x", "x\n")])
        with self.serve("--mbox-lock-timeout", "1") as srv:
            # A live process's dotlock.
            with open(self.path + ".lock", "w") as f:
                f.write("%d\n" % os.getpid())
            p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
            with self.assertRaises(poplib.error_proto) as cm:
                p.apop("alice", ALICE_SECRET)
            self.assertIn(b"[IN-USE]", cm.exception.args[0])
            p.close()
            os.unlink(self.path + ".lock")
            # A POSIX fcntl lock (mutt, procmail) held by this process.
            with open(self.path, "r+b") as f:
                fcntl.lockf(f, fcntl.LOCK_EX)
                p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
                with self.assertRaises(poplib.error_proto) as cm:
                    p.apop("alice", ALICE_SECRET)
                self.assertIn(b"[IN-USE]", cm.exception.args[0])
                p.close()
                # Our dotlock went away with the failed attempt.
                self.assertFalse(os.path.exists(self.path + ".lock"))
                fcntl.lockf(f, fcntl.LOCK_UN)
            # A second POP3 session while the first is open.
            p = self.pop(srv)
            q = poplib.POP3("127.0.0.1", srv.port, timeout=20)
            with self.assertRaises(poplib.error_proto) as cm:
                q.apop("alice", ALICE_SECRET)
            self.assertIn(b"[IN-USE]", cm.exception.args[0])
            q.close()
            p.quit()

    def test_per_user_location_and_deliver_exit_codes(self):
        # The server's default stays Maildir; alice alone is an mbox user.
        own = os.path.join(self.env.root, "alice.mbox")
        self.env.check("user", "mailbox", "--data", self.env.data, "alice", "mbox:" + own)
        shown = self.env.check("user", "show", "--data", self.env.data, "alice").stdout
        self.assertIn(b"mail location: mbox:" + own.encode(), shown)
        self.env.check("deliver", "--data", self.env.data, "alice",
                       input=make_message("own", "to the per-user mbox\n"))
        self.assertEqual(len(read_mbox(own)), 1)
        self.assertEqual(self.env.message_files("alice"), [])
        with self.env.server() as srv:
            p = self.pop(srv)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
        # Bad locations are refused with a clear error.
        bad = self.env.run("user", "mailbox", "--data", self.env.data, "alice", "imap:/x")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(b"unknown format", bad.stderr)
        bad = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                           "--mail-location", "mbox:/var/mail/shared")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(b"%u", bad.stderr)
        # A directory where the mbox should be: temporary failure (75), nothing lost.
        os.unlink(own)
        os.mkdir(own)
        self.env.check("deliver", "--data", self.env.data, "alice",
                       input=make_message("x", "x\n"), expect=75)
        self.env.check("user", "mailbox", "--data", self.env.data, "alice", "default")
        self.env.check("deliver", "--data", self.env.data, "alice",
                       input=make_message("back", "to the Maildir\n"))
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_user_add_creates_a_maildir_only_for_a_maildir_location(self):
        # An mbox location: no Maildir (the first delivery creates the mbox).
        self.env.check("user", "add", "--data", self.env.data, "--mail-location",
                       self.location, "bob", "--password-stdin", input=b"Bob-Secret-Pass-1\n")
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "mail", "bob")))
        self.assertFalse(os.path.exists(os.path.join(self.spool, "bob")))
        # A Maildir elsewhere: created there, not under DATA/mail.
        other = os.path.join(self.env.root, "maildirs")
        self.env.check("user", "add", "--data", self.env.data, "--mail-location",
                       "maildir:" + other + "/%u", "carol", "--password-stdin",
                       input=b"Carol-Secret-Pass-1\n")
        for sub in ("cur", "new", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(other, "carol", sub)))
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "mail", "carol")))
        # The default: DATA/mail/USER, as before.
        self.env.check("user", "add", "--data", self.env.data, "dave", "--password-stdin",
                       input=b"Dave-Secret-Pass-1\n")
        self.assertTrue(os.path.isdir(os.path.join(self.env.data, "mail", "dave", "new")))
        # A bad location is a usage error, and no account is created.
        bad = self.env.run("user", "add", "--data", self.env.data, "--mail-location",
                           "mbox:/var/mail/shared", "erin", "--password-stdin",
                           input=b"Erin-Secret-Pass-1\n")
        self.assertEqual(bad.returncode, 64, bad.stderr)
        self.assertIn(b"%u", bad.stderr)
        self.assertNotIn(b"erin", self.env.check("user", "list", "--data",
                                                   self.env.data).stdout)

    def test_sigkill_during_rewrite_never_loses_or_corrupts_mail(self):
        """SIGKILL the server at random moments of QUIT's rewrite while a procmail-style
        writer keeps appending: the file is always the old or the new state plus every
        appended message, each intact."""
        iterations = int(os.environ.get("APOP_MBOX_KILLS", "25"))
        big = "x" * 70 + "\n"
        msgs = [make_message("k%03d" % i, big * 400) for i in range(150)]  # ~4.3 MB
        self.write(msgs)
        rng = random.Random(1234)
        appended: list[bytes] = []
        outcomes = {"old": 0, "new": 0}
        for it in range(iterations):
            present = read_mbox(self.path)
            srv = self.serve().start()
            try:
                p = self.pop(srv)
                n = p.stat()[0]
                doomed = sorted(rng.sample(range(1, n + 1), 3))
                for d in doomed:
                    p.dele(d)
                expect_new = [m for i, m in enumerate(present, 1) if i not in doomed]
                mine = kill_during_quit(srv, p, self.path, rng, f"late-{it}", 0.15)
            finally:
                srv.kill_quietly()
            appended += mine
            now = read_mbox(self.path)
            tail = [m for m in now if m in mine]
            self.assertEqual(tail, mine, "appended mail lost or reordered (iteration %d)" % it)
            core = [m for m in now if m not in mine]
            if core == present:
                outcomes["old"] += 1
            elif core == expect_new:
                outcomes["new"] += 1
            else:
                self.fail("iteration %d: neither the old nor the new state: %d messages"
                          % (it, len(core)))
            # Drop the appended ones again (as a client would), to keep the file size.
            self.assertGreater(len(now), 0)
        print("\nSIGKILL during rewrite: %d iterations, old state %d, new state %d"
              % (iterations, outcomes["old"], outcomes["new"]))
        self.assertEqual(outcomes["old"] + outcomes["new"], iterations)


if __name__ == "__main__":
    unittest.main()
