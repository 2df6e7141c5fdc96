"""Crash safety of `apop deliver`: killed with SIGKILL at random moments while
it reads a large message from stdin (or just after, while it syncs and links
the file), and out of disk space on a small tmpfs.

Promised (docs/robustness.md "Crash safety"): no partial message is ever
visible in new/ or cur/ -- a message there is complete, byte for byte; a
killed delivery may leave a file in tmp/ only, which no reader lists and which
the server removes when it is 36 hours old (the Maildir rule, as Dovecot
applies it; unit-tested in tests/unit/store_update_journal_test.cpp); a full
disk exits 75 (EX_TEMPFAIL, so the MTA retries) and leaves nothing, tmp/
included.

The tmpfs tests need root (mount -t tmpfs); they are skipped with a message
elsewhere.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from apoptest import ALICE_SECRET, EX_TEMPFAIL, ApopTestCase, make_message, skip_or_fail


def big_message(tag: str, size: int, rng: random.Random) -> bytes:
    line = bytes(rng.randrange(33, 127) for _ in range(100))
    body = b"".join(b"%s %08d %s\n" % (tag.encode(), i, line) for i in range(size // 120))
    return make_message(tag, body)


class DeliverKillTest(ApopTestCase):

    def test_sigkill_while_reading_or_committing_leaves_no_partial_message(self):
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        self.env.add_user("alice", ALICE_SECRET)
        complete = []  # messages that must be visible (delivered, or killed after the link)
        outcomes = {"before_eof": 0, "after_eof_absent": 0, "after_eof_present": 0, "ok": 0}
        for it in range(40):
            msg = big_message(f"m{it}", rng.choice((200_000, 2_000_000)), rng)
            p = subprocess.Popen([self.env.bin, "deliver", "--data", self.env.data, "alice"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            # Kill while reading (after a random part of the message), or after
            # EOF with a random delay (while it fsyncs, links, fsyncs new/).
            after_eof = rng.random() < 0.5
            cut = len(msg) if after_eof else rng.randrange(0, len(msg))
            try:
                for off in range(0, cut, 65536):
                    p.stdin.write(msg[off:min(cut, off + 65536)])
                p.stdin.flush()
                if after_eof:
                    p.stdin.close()
                    time.sleep(rng.uniform(0, 0.05))
            except BrokenPipeError:
                pass
            p.send_signal(signal.SIGKILL)
            rc = p.wait(30)
            try:
                p.stdin.close()
            except BrokenPipeError:
                pass
            visible = self.env.stored_messages("alice")
            context = f"seed {seed}, iteration {it}, cut at {cut}/{len(msg)}, exit {rc}"
            for m in visible:
                self.assertTrue(m in complete or m == msg, f"partial message visible; {context}")
            if msg in visible:
                self.assertTrue(after_eof, f"message visible before its end was read; {context}")
                complete.append(msg)
                outcomes["ok" if rc == 0 else "after_eof_present"] += 1
            else:
                self.assertNotEqual(rc, 0, f"exit 0 but the message is not there; {context}")
                outcomes["after_eof_absent" if after_eof else "before_eof"] += 1
            self.assertEqual(sorted(visible), sorted(complete), context)
        leftovers = self.env.tmp_files("alice")
        # A POP3 session sees exactly the complete messages (tmp/ is never listed).
        with self.env.server() as srv:
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            self.assertEqual(c.cmd("STAT").split()[1], str(len(complete)).encode())
            c.quit()
        print(f"crash-deliver: seed {seed}, 40 kills: {outcomes}, tmp/ leftovers "
              f"{len(leftovers)}", file=sys.stderr)


class TmpfsCase(ApopTestCase):
    """A data directory on a tmpfs of SIZE bytes (root only; skipped otherwise)."""

    SIZE = 1024 * 1024

    def setUp(self):
        super().setUp()
        mnt = tempfile.mkdtemp(prefix="apop-tmpfs-", dir=self.env.root)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.SIZE},mode=0700",
                            "apop-test", mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            # Root only; under CI (root) a failure.
            skip_or_fail("cannot mount a tmpfs (needs root): " + p.stdout.decode(errors="replace"))
        self.addCleanup(lambda: subprocess.run(["umount", "-l", mnt]))
        self.env.data = os.path.join(mnt, "data")


class DeliverDiskFullTest(TmpfsCase):

    def free(self) -> int:
        st = os.statvfs(self.env.data)
        return st.f_bavail * st.f_frsize

    def test_enospc_exits_75_and_leaves_nothing(self):
        rng = random.Random(7)
        self.env.add_user("alice", ALICE_SECRET)
        small = make_message("small", "fits\n")
        self.env.deliver("alice", small)
        # Larger than the whole filesystem: fails while writing tmp/.
        too_big = big_message("huge", 3 * self.SIZE, rng)
        p = self.env.deliver("alice", too_big, expect=EX_TEMPFAIL)
        self.assertIn(b"No space left on device", p.stderr)
        self.assertEqual(self.env.stored_messages("alice"), [small])
        self.assertEqual(self.env.tmp_files("alice"), [], "tmp/ file not removed after ENOSPC")
        # Fill the disk with messages of random sizes: each either lands whole
        # (exit 0) or not at all (exit 75); tmp/ stays empty.
        delivered = [small]
        failures = 0
        for i in range(40):
            m = big_message(f"fill{i}", rng.randrange(10_000, 200_000), rng)
            p = self.env.run("deliver", "--data", self.env.data, "alice", input=m)
            self.assertIn(p.returncode, (0, EX_TEMPFAIL), p.stderr)
            if p.returncode == 0:
                delivered.append(m)
            else:
                failures += 1
            self.assertEqual(sorted(self.env.stored_messages("alice")), sorted(delivered))
            self.assertEqual(self.env.tmp_files("alice"), [])
        self.assertGreater(failures, 0, "the disk never filled up")
        # The server still serves every delivered message, intact.
        with self.env.server() as srv:
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            self.assertEqual(c.cmd("STAT").split()[1], str(len(delivered)).encode())
            c.quit()
        print(f"crash-deliver: disk full: {len(delivered)} delivered, {failures} refused with 75, "
              f"{self.free()} bytes free", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
