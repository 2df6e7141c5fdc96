"""mbox deletions in place: the classic /var/mail layout, where the mbox belongs to its
user (USER:mail 0660) in a root:mail 2775 directory and the POP3 server runs as another
user in group mail, so it cannot create a file with the mbox's owner and must rewrite it
in place (a journal first, then the kept messages moved down, then a truncation).
Root only (chown, `apop serve --user`): skipped otherwise."""

import glob
import grp
import os
import poplib
import pwd
import random
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message, needs
from test_mbox import kill_during_quit, mbox_entry, read_mbox

IS_ROOT = os.geteuid() == 0
MBOX_OWNER = 4242  # alice's uid in the spool: no passwd entry needed


# Root only (CI runs as root: there a non-root run is a failure, apoptest.needs).
@needs(IS_ROOT, "needs root: mbox owned by another uid, apop serve --user")
class MboxInPlaceTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.nobody = pwd.getpwnam("nobody")
        self.mail = grp.getgrnam("mail")
        os.chmod(self.env.root, 0o711)
        self.spool = os.path.join(self.env.root, "spool")
        os.mkdir(self.spool)
        os.chown(self.spool, 0, self.mail.gr_gid)
        os.chmod(self.spool, 0o2775)  # Debian's /var/mail
        self.path = os.path.join(self.spool, "alice")
        self.location = "mbox:" + self.spool + "/%u"
        self.env.add_user("alice", ALICE_SECRET)
        for dirpath, dirnames, filenames in os.walk(self.env.data):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.chown(name, self.nobody.pw_uid, self.mail.gr_gid)

    def write(self, messages: list[bytes]) -> None:
        with open(self.path, "wb") as f:
            for m in messages:
                f.write(mbox_entry(m))
        os.chown(self.path, MBOX_OWNER, self.mail.gr_gid)
        os.chmod(self.path, 0o660)

    def serve(self, *args: str):
        return self.env.server("--mail-location", self.location, "--user", "nobody",
                               "--group", "mail", *args)

    def pop(self, srv) -> poplib.POP3:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=20)
        p.apop("alice", ALICE_SECRET)
        return p

    def journals(self) -> list[str]:
        return (glob.glob(os.path.join(self.spool, ".*.apop-journal")) +
                glob.glob(os.path.join(self.env.data, "mbox-journal", "*.journal")))

    def test_deletions_applied_in_place_keeping_owner_mode_and_times(self):
        msgs = [make_message("m%d" % i, "From here\nbody %d\n" % i) for i in range(6)]
        self.write(msgs)
        stored = read_mbox(self.path)  # as stored: ">From here"
        os.utime(self.path, (1000, 2000))  # unread new mail: mtime > atime
        before = os.stat(self.path)
        with self.serve() as srv:
            p = self.pop(srv)
            uidls = [l.split()[1] for l in p.uidl()[1]]
            for d in (1, 3, 6):
                p.dele(d)
            p.quit()
            after = os.stat(self.path)
            self.assertEqual(read_mbox(self.path), [stored[1], stored[3], stored[4]])
            self.assertEqual(after.st_ino, before.st_ino, "rewritten in place, not replaced")
            self.assertEqual((after.st_uid, after.st_gid), (MBOX_OWNER, self.mail.gr_gid))
            self.assertEqual(after.st_mode & 0o7777, 0o660)
            # Not the owner: the server may not set the times back (utimensat EPERM), so
            # mtime moves on, which keeps mtime > atime ("new mail") as it was.
            self.assertGreater(after.st_mtime, after.st_atime)
            self.assertEqual(self.journals(), [])
            self.assertFalse(os.path.exists(self.path + ".lock"))
            with open(self.path, "rb") as f:
                self.assertIn(b"\n>From here\n", f.read())  # quoting untouched
            p = self.pop(srv)
            self.assertEqual([l.split()[1] for l in p.uidl()[1]],
                             [uidls[1], uidls[3], uidls[4]])
            p.quit()
        # Forcing the rename path where it cannot work: a clear error, nothing deleted.
        with self.serve("--mbox-rewrite", "rename") as srv:
            p = self.pop(srv)
            p.dele(1)
            with self.assertRaises(poplib.error_proto) as cm:
                p.quit()
            self.assertIn(b"[SYS/TEMP]", cm.exception.args[0])
            self.assertEqual(len(read_mbox(self.path)), 3)

    def test_journal_in_the_data_directory_when_the_spool_is_not_writable(self):
        os.chmod(self.spool, 0o755)  # root:mail 0755: no dotlock, no journal there
        msgs = [make_message("m%d" % i, "body %d\n" % i) for i in range(4)]
        self.write(msgs)
        with self.serve() as srv:
            p = self.pop(srv)
            p.dele(2)
            p.quit()
            self.assertEqual(read_mbox(self.path), [msgs[0], msgs[2], msgs[3]])
            self.assertEqual(self.journals(), [])
            jdir = os.path.join(self.env.data, "mbox-journal")
            self.assertTrue(os.path.isdir(jdir))
            self.assertEqual(os.stat(jdir).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(self.path).st_uid, MBOX_OWNER)

    def test_sigkill_during_in_place_rewrite_never_loses_or_corrupts_mail(self):
        """SIGKILL the server at random moments of QUIT's in-place rewrite while a
        procmail-style writer keeps appending: after the next login (which finishes or
        undoes the rewrite) the mbox is the old or the new state plus every appended
        message, byte for byte."""
        iterations = int(os.environ.get("APOP_MBOX_KILLS", "30"))
        big = "x" * 70 + "\n"
        msgs = [make_message("k%03d" % i, big * 400) for i in range(150)]  # ~4.3 MB
        self.write(msgs)
        rng = random.Random(4321)
        outcomes = {"old": 0, "new": 0}
        journal_left = 0
        started = time.monotonic()
        for it in range(iterations):
            present = read_mbox(self.path)
            srv = self.serve().start()
            try:
                p = self.pop(srv)
                n = p.stat()[0]
                # Early messages: most of the file moves.
                doomed = sorted(rng.sample(range(1, min(n, 20) + 1), 3))
                for d in doomed:
                    p.dele(d)
                expect_new = [m for i, m in enumerate(present, 1) if i not in doomed]
                mine = kill_during_quit(srv, p, self.path, rng, f"late-{it}", 0.12)
            finally:
                srv.kill_quietly()
            if self.journals():
                journal_left += 1
            # The next login recovers; then the file is checked.
            srv = self.serve().start()
            try:
                p = self.pop(srv)
                count = p.stat()[0]
                p.quit()
            finally:
                srv.stop()
            self.assertEqual(self.journals(), [], "iteration %d" % it)
            now = read_mbox(self.path)
            self.assertEqual(count, len(now))
            tail = [m for m in now if m in mine]
            self.assertEqual(tail, mine, "appended mail lost or reordered (iteration %d)" % it)
            self.assertEqual(now[len(now) - len(mine):], mine, "iteration %d" % it)
            core = now[:len(now) - len(mine)]
            if core == present:
                outcomes["old"] += 1
            elif core == expect_new:
                outcomes["new"] += 1
            else:
                self.fail("iteration %d: neither the old nor the new state: %d messages"
                          % (it, len(core)))
            st = os.stat(self.path)
            self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777),
                             (MBOX_OWNER, self.mail.gr_gid, 0o660))
        print("\nSIGKILL during in-place rewrite: %d iterations in %.1f s, old state %d, "
              "new state %d, killed with a journal pending %d"
              % (iterations, time.monotonic() - started, outcomes["old"], outcomes["new"],
                 journal_left))
        self.assertEqual(outcomes["old"] + outcomes["new"], iterations)


if __name__ == "__main__":
    unittest.main()
