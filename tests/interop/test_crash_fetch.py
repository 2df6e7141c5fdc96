"""Crash safety of `apop fetch` in delete mode: the client is killed with
SIGKILL at random moments (while retrieving, storing, deleting, quitting) over
and over against a real `apop serve`, and after every kill each message is
still on the server or complete in the destination Maildir -- never lost,
never partial. Duplicates are the documented at-least-once window: a message
stored but not yet recorded in the state file when the kill came is fetched
again by the next run, so at most one duplicate per kill. A final run without
a kill empties the server.

The kill delay adapts to the binary and the machine (a fetch starts in a few
tens of milliseconds on the debug build, in over a second under ASan on a
busy machine): it starts at the time `apop fetch --help` takes and then
follows what the kills hit, so most kills land while fetch is at work (at
least one must); new mail arrives on the server when it runs low.
APOP_CRASH_SEED repeats a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import unittest

from apoptest import ALICE_SECRET, assert_no_sanitizer_report, make_message
from test_fetch import FetchTestCase, maildir_messages


STEP = 1.3  # the kill delay's staircase factor


class FetchKillTest(FetchTestCase):

    def test_sigkill_in_delete_mode_loses_nothing(self):
        rng = random.Random(int(os.environ.get("APOP_CRASH_SEED", "0")) or None)
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        msgs: list[bytes] = []
        maildrop = self.env.maildir("alice")

        def arrive(n: int):
            """n new messages on the server, delivered the Maildir way (tmp/,
            then rename into new/), so the kills keep finding work."""
            for _ in range(n):
                i = len(msgs)
                lines = rng.choice((5, 50, 3000))
                body = "".join(f"message {i} line {k} " + "y" * rng.randrange(70) + "\n"
                               for k in range(lines))
                m = make_message(f"kill-{i}", body)
                name = f"{int(time.time())}.M{i}P{os.getpid()}.crashtest"
                with open(os.path.join(maildrop, "tmp", name), "wb") as f:
                    f.write(m)
                os.rename(os.path.join(maildrop, "tmp", name), os.path.join(maildrop, "new", name))
                msgs.append(m)

        self.setup_alice()
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildrop, sub), exist_ok=True)
        arrive(40)
        md = os.path.join(self.work, "Maildir")
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        e.update({"HOME": self.work, "XDG_STATE_HOME": os.path.join(self.work, "xdg")})
        # The kill delay starts at the time the binary needs to start (several
        # times longer under ASan or on a loaded machine) and then follows what
        # the kills hit: a kill before anything moved makes the next delay
        # longer, a run that finished before its kill shorter, so the kills
        # land while messages are retrieved, stored, deleted and QUIT runs.
        t0 = time.perf_counter()
        subprocess.run([self.env.bin, "fetch", "--help"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        delay = time.perf_counter() - t0
        outcomes = {"before_any_progress": 0, "mid_run": 0, "finished_first": 0,
                    "failed_first": 0}
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

            # 30 runs, each killed after a steered random delay.
            stored, on_server = check("start")
            for it in range(30):
                if len(on_server) < 10:
                    arrive(20)
                    on_server = self.env.stored_messages("alice")
                wait = delay * rng.uniform(0.5, 1.5)
                p = subprocess.Popen(argv, env=e, cwd=self.work, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                time.sleep(wait)
                p.send_signal(signal.SIGKILL)
                rc = p.wait(30)
                assert_no_sanitizer_report("apop fetch", p.stderr.read().decode("utf-8", "replace"))
                p.stderr.close()
                before = (len(stored), len(on_server))
                stored, on_server = check(f"seed {seed}, run {it}, killed after "
                                          f"{wait * 1000:.0f} ms, exit {rc}")
                if rc == -signal.SIGKILL:
                    kills += 1
                    if (len(stored), len(on_server)) == before:
                        outcomes["before_any_progress"] += 1
                        delay = min(delay * STEP, 60)
                    else:
                        outcomes["mid_run"] += 1
                elif rc == 0:
                    outcomes["finished_first"] += 1
                    delay /= STEP
                else:
                    # Most likely [IN-USE]: the server had not yet noticed
                    # the previous killed client. Harmless; not steered.
                    outcomes["failed_first"] += 1
                # The server must notice the dropped client and release the lock
                # before the next run (else it gets [IN-USE], also harmless).
                time.sleep(0.05)
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
        print(f"crash-fetch: seed {seed}, {kills} kills ({outcomes}), {len(msgs)} messages, "
              f"{dups} duplicates, {leftovers} tmp/ leftovers in the destination, kill delay "
              f"steered to {delay * 1000:.0f} ms", file=sys.stderr)
        # Else the kills did not test a fetch at work.
        self.assertGreater(outcomes["mid_run"], 0, "no kill landed while fetch was at work")


if __name__ == "__main__":
    unittest.main()
