"""Crash safety of `apop fetch` in delete mode: the client is killed with
SIGKILL at random moments (while retrieving, storing, deleting, quitting) over
and over against a real `apop serve`, and after every kill each message is
still on the server or complete in the destination Maildir -- never lost,
never partial. Duplicates are the documented at-least-once window: a message
stored but not yet recorded in the state file when the kill came is fetched
again by the next run, so at most one duplicate per kill. A final run without
a kill empties the server.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import unittest

from apoptest import ALICE_SECRET, make_message
from test_fetch import FetchTestCase, fetch_available, maildir_messages


@unittest.skipUnless(fetch_available(), "`apop fetch` is not built yet")
class FetchKillTest(FetchTestCase):

    def test_sigkill_in_delete_mode_loses_nothing(self):
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        msgs = []
        for i in range(40):
            lines = rng.choice((5, 50, 3000))
            body = "".join(f"message {i} line {k} " + "y" * rng.randrange(70) + "\n"
                           for k in range(lines))
            msgs.append(make_message(f"kill-{i}", body))
        self.setup_alice(msgs)
        md = os.path.join(self.work, "Maildir")
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        e.update({"HOME": self.work, "XDG_STATE_HOME": os.path.join(self.work, "xdg")})
        kills = 0
        with self.env.server() as srv:
            argv = [self.env.bin, "fetch", f"pop3://alice@127.0.0.1:{srv.port}", "--tls", "none",
                    "--auth", "apop", "--to", f"maildir:{md}", "--state", self.state,
                    "--timeout", "10", "--password-file", self.password_file(ALICE_SECRET)]

            def check(context: str):
                stored = maildir_messages(md)
                for m in stored:
                    self.assertIn(m, msgs, f"partial or altered message stored; {context}")
                on_server = self.env.stored_messages("alice")
                for m in on_server:
                    self.assertIn(m, msgs, context)
                missing = set(msgs) - set(stored) - set(on_server)
                self.assertEqual(missing, set(), f"messages lost; {context}")
                return stored, on_server

            # Up to 30 runs, each killed after a random delay (longer as the
            # mailbox empties, so QUIT and the state save are hit too).
            for it in range(30):
                if not self.env.stored_messages("alice"):
                    break
                p = subprocess.Popen(argv, env=e, cwd=self.work, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(rng.uniform(0, 0.05 + 0.02 * it))
                p.send_signal(signal.SIGKILL)
                rc = p.wait(30)
                p.stderr.close()
                kills += rc == -signal.SIGKILL
                # The server must notice the dropped client and release the lock
                # before the next run (else it gets [IN-USE], also harmless).
                time.sleep(0.05)
                check(f"seed {seed}, run {it}, exit {rc}")
            # A run to completion.
            for _ in range(50):
                p = self.fetch(f"pop3://alice@127.0.0.1:{srv.port}", "--tls", "none",
                               "--auth", "apop", "--to", f"maildir:{md}")
                if p.returncode == 0:
                    break
                time.sleep(0.1)  # the killed session's lock not released yet
            self.assertEqual(p.returncode, 0, self.describe(p))
        stored, on_server = check(f"seed {seed}, final run")
        self.assertEqual(on_server, [])
        self.assertEqual(set(stored), set(msgs))
        dups = len(stored) - len(msgs)
        self.assertLessEqual(dups, kills, "more than one duplicate per kill")
        leftovers = len(os.listdir(os.path.join(md, "tmp")))
        print(f"crash-fetch: seed {seed}, {kills} kills, {len(msgs)} messages, "
              f"{dups} duplicates, {leftovers} tmp/ leftovers in the destination",
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
