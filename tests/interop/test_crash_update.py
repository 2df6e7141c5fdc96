"""Crash safety of the UPDATE state (RFC 1939 §6): `apop serve` is killed with
SIGKILL at random moments after QUIT, while it removes the deleted messages,
hundreds of times, with maildrops of 1, 10, 200 and 1,000 messages and various
subsets deleted (all, one, random, a prefix, a suffix, none).

After every kill the Maildir must be exactly its old or its new state: every
message present with identical bytes or (only if it was deleted) gone, no
file duplicated or added, and the set of removed messages either none or all
of the deleted ones, as the next session sees it (the server finishes a
commit cut after its commit point -- the update journal -- before listing;
see docs/architecture.md "Crash safety"). A client that got +OK for its QUIT,
or a kill after the journal was committed, must find the new state. The
restarted server serves the maildrop at once (no stale lock). Half of the
times a journal is left, the restarted server is killed again during the
login that finishes it (recovery must be idempotent). Between the kill and
the restart, new mail arrives in new/ (as deliveries would): it must survive.

On disk, right after a kill and before the restart, a partial removal is
allowed only while the update journal USER/apop-pop3.update is present. (A
server that unlinks without the journal fails this within a few kills at
1,000 messages, where the unlink loop takes milliseconds.)

The run is bounded by APOP_CRASH_BUDGET seconds (default 55, shared by the
sizes in APOP_CRASH_SIZES, default 1,10,200,1000) and APOP_CRASH_ITERATIONS kills
per size (default 150); the figures are printed (docs/robustness.md lists the
latest).
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import sys
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, Conn, apop_digest

JOURNAL = "apop-pop3.update"
JOURNAL_TMP = "apop-pop3.update.tmp"
SIZES = tuple(int(x) for x in os.environ.get("APOP_CRASH_SIZES", "1,10,200,1000").split(","))


def crlf_size(data: bytes) -> int:
    return len(re.sub(rb"(?<!\r)\n", b"\r\n", data))


class Mailbox:
    """Writes messages straight into the Maildir (Dovecot-style names with S= and
    W=) and reads the state back. UIDLs are the names' base without S=/W=."""

    def __init__(self, maildir: str, rng: random.Random):
        self.dir = maildir
        self.rng = rng
        self.counter = 0
        self.content: dict[str, bytes] = {}
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)

    def clear(self):
        for sub in ("cur", "new"):
            d = os.path.join(self.dir, sub)
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
        self.content.clear()

    def add(self, n: int, sub: str) -> list[str]:
        """n new messages in cur/ (as seen before) or new/ (as just delivered)."""
        out = []
        now = int(time.time())
        for _ in range(n):
            self.counter += 1
            uidl = f"{now}.M{self.counter}P{os.getpid()}.crashtest"
            body = b"".join(f"{uidl} line {k} ".encode() + b"x" * self.rng.randint(0, 90) + b"\n"
                            for k in range(self.rng.randint(1, 40)))
            data = f"From: a@example.org\nSubject: {uidl}\n\n".encode() + body
            name = f"{uidl},S={len(data)},W={crlf_size(data)}" + (":2," if sub == "cur" else "")
            with open(os.path.join(self.dir, sub, name), "wb") as f:
                f.write(data)
            self.content[uidl] = data
            out.append(uidl)
        return out

    def disk(self) -> tuple[dict[str, bytes], list[str]]:
        """({uidl: bytes} of every message file in new/ and cur/, [duplicates])."""
        found: dict[str, bytes] = {}
        dups = []
        for sub in ("new", "cur"):
            d = os.path.join(self.dir, sub)
            for f in os.listdir(d):
                uidl = f.split(",", 1)[0]
                with open(os.path.join(d, f), "rb") as fh:
                    data = fh.read()
                if uidl in found:
                    dups.append(f)
                found[uidl] = data
        return found, dups

    def journal_present(self) -> bool:
        return os.path.exists(os.path.join(self.dir, JOURNAL))


class CrashUpdateTest(ApopTestCase):

    def start_server(self):
        srv = self.env.server()
        srv.start()
        return srv

    def login(self, srv) -> Conn:
        """Logs alice in; a lock still held by a session that just ended is retried
        for at most 5 s (a stale lock after a kill is not: the test fails)."""
        deadline = time.monotonic() + 5
        while True:
            c = srv.connect()
            r = c.apop("alice", ALICE_SECRET)
            if r.startswith(b"+OK"):
                return c
            c.close()
            if b"[IN-USE]" not in r or time.monotonic() > deadline:
                self.fail(f"login failed: {r!r}\n{srv.diagnostics()}")
            time.sleep(0.01)

    def uidls(self, c: Conn) -> list[str]:
        status, lines = c.cmd_multi("UIDL")
        self.assertTrue(status.startswith(b"+OK"), status)
        return [l.split(b" ", 1)[1].decode() for l in lines]

    def choose(self, rng: random.Random, n: int) -> list[int]:
        """1-based message numbers to delete."""
        if n == 0:
            return []
        kind = rng.choice(["all", "one", "random", "random", "prefix", "suffix", "none"])
        if kind == "all":
            return list(range(1, n + 1))
        if kind == "one":
            return [rng.randint(1, n)]
        if kind == "random":
            return sorted(rng.sample(range(1, n + 1), rng.randint(1, n)))
        if kind == "prefix":
            return list(range(1, rng.randint(1, n) + 1))
        if kind == "suffix":
            return list(range(rng.randint(1, n), n + 1))
        return []

    def dele(self, c: Conn, numbers: list[int]):
        if numbers:
            c.send(b"".join(b"DELE %d\r\n" % i for i in numbers))
            for i in numbers:
                r = c.line()
                self.assertTrue(r.startswith(b"+OK"), f"DELE {i}: {r!r}")

    def check_disk(self, box: Mailbox, old: set[str], new: set[str], context: str,
                   exact: set[str] | None = None):
        found, dups = box.disk()
        self.assertEqual(dups, [], f"duplicate message file; {context}")
        if exact is not None:
            self.assertEqual(set(found), exact, context)
        self.assertLessEqual(set(found), old, f"unknown message file; {context}")
        self.assertLessEqual(new, set(found), f"kept message lost; {context}")
        for u, data in found.items():
            self.assertEqual(data, box.content[u], f"{u} changed; {context}")
        return set(found)

    def test_sigkill_during_update_is_all_or_nothing(self):
        rng = random.Random(int(os.environ.get("APOP_CRASH_SEED", "0")) or None)
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        budget = float(os.environ.get("APOP_CRASH_BUDGET", "55"))
        per_size = int(os.environ.get("APOP_CRASH_ITERATIONS", "150"))
        self.env.add_user("alice", ALICE_SECRET)
        box = Mailbox(self.env.maildir("alice"), rng)
        srv = self.start_server()

        # Calibration: how long QUIT takes for each size (deleting about half),
        # so kill delays spread over the whole UPDATE state.
        quit_time = {}
        for size in SIZES:
            samples = []
            for _ in range(3):
                box.clear()
                uidls = box.add(size, "cur")
                dels = list(range(1, size + 1, 2))
                c = self.login(srv)
                self.dele(c, dels)
                t0 = time.perf_counter()
                self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
                samples.append(time.perf_counter() - t0)
                c.close()
                kept = {u for k, u in enumerate(uidls, 1) if k not in dels}
                self.assertEqual(set(box.disk()[0]), kept)
                self.assertFalse(box.journal_present())
            quit_time[size] = sorted(samples)[1]  # the median: load spikes inflate the max

        stats = {s: {"kills": 0, "old": 0, "new": 0, "partial_on_disk": 0, "committed": 0,
                     "quit_ok": 0, "recovery_kills": 0} for s in SIZES}
        start = time.monotonic()
        for si, size in enumerate(SIZES):
            st = stats[size]
            size_deadline = start + budget * (si + 1) / len(SIZES)
            box.clear()
            box.add(size, "cur")
            # The states the next session may find, and whether it must be `new`.
            old = new = set(box.content)
            must_be_new = False
            context = f"seed {seed}, size {size}, first session"
            while True:
                # The restarted server: the lock is free, the commit cut by the
                # last kill is finished (or not begun): exactly old or new.
                c = self.login(srv)
                listing = self.uidls(c)
                seen = set(listing)
                self.assertEqual(len(listing), len(seen), f"duplicate UIDL; {context}")
                self.assertIn(seen, (old, new), f"neither the old nor the new state; {context}")
                if must_be_new:
                    self.assertEqual(seen, new, f"committed or +OK, but not new; {context}")
                if st["kills"]:
                    st["new" if seen == new and old != new else "old"] += 1
                self.check_disk(box, seen, seen, context, exact=seen)
                self.assertFalse(box.journal_present(), context)
                self.assertFalse(os.path.exists(os.path.join(box.dir, JOURNAL_TMP)), context)
                for u in set(box.content) - seen:
                    del box.content[u]
                if st["kills"] >= per_size or time.monotonic() >= size_deadline:
                    self.assertTrue(c.quit().startswith(b"+OK"))
                    break

                # This session deletes a subset and is killed during QUIT.
                dels = self.choose(rng, len(listing))
                old = seen
                new = seen - {listing[i - 1] for i in dels}
                self.dele(c, dels)
                delay = rng.uniform(0, quit_time[size])
                c.send(b"QUIT\r\n")
                t_end = time.perf_counter() + delay
                while time.perf_counter() < t_end:
                    pass
                os.kill(srv.pid, signal.SIGKILL)
                srv.kill_quietly()
                st["kills"] += 1
                c.sock.settimeout(0.5)
                got = b""
                try:
                    while True:
                        chunk = c.sock.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                except (socket.timeout, ConnectionResetError):
                    pass
                c.close()
                quit_ok = got.startswith(b"+OK")
                st["quit_ok"] += quit_ok
                context = (f"seed {seed}, size {size}, kill {st['kills']}, deleted "
                           f"{dels if len(dels) < 12 else f'{len(dels)} of {len(listing)}'}, "
                           f"delay {delay * 1000:.2f} ms, QUIT reply {got!r}")

                # On disk, before any recovery: identical bytes, nothing extra,
                # no duplicate; a partial removal only with the journal present.
                found = self.check_disk(box, old, new, context)
                committed = box.journal_present()
                st["committed"] += committed
                if found not in (old, new):
                    self.assertTrue(committed, f"partial removal without journal; {context}")
                    st["partial_on_disk"] += 1
                must_be_new = quit_ok or committed

                # Sometimes kill the restarted server again while a login
                # finishes the cut commit.
                if committed and rng.random() < 0.5:
                    srv = self.start_server()
                    c = srv.connect()
                    c.send(f"APOP alice {apop_digest(c.timestamp, ALICE_SECRET)}\r\n".encode())
                    t_end = time.perf_counter() + rng.uniform(0, quit_time[size])
                    while time.perf_counter() < t_end:
                        pass
                    os.kill(srv.pid, signal.SIGKILL)
                    srv.kill_quietly()
                    c.close()
                    st["recovery_kills"] += 1
                    found = self.check_disk(box, old, new, "recovery cut; " + context)
                    if found not in (old, new):
                        self.assertTrue(box.journal_present(),
                                        f"recovery cut lost the journal; {context}")

                # Mail delivered while the server is down must survive the
                # recovery (it is neither old nor deleted).
                arrived = set(box.add(rng.choice((0, 1, max(1, size - len(new)))), "new"))
                old, new = old | arrived, new | arrived
                srv = self.start_server()

        elapsed = time.monotonic() - start
        self.assertEqual(srv.stop(), 0)
        total = sum(s["kills"] for s in stats.values())
        report = [f"crash-update: seed {seed}, {total} kills in {elapsed:.1f} s"]
        for size in SIZES:
            s = stats[size]
            report.append(
                f"  {size:>3} messages: {s['kills']} kills (QUIT {quit_time[size] * 1000:.1f} ms); "
                f"then: old state {s['old']}, new state {s['new']}; journal committed at the "
                f"kill {s['committed']} (partial removal on disk {s['partial_on_disk']}); "
                f"+OK before the kill {s['quit_ok']}; kills during recovery "
                f"{s['recovery_kills']}")
        print("\n".join(report), file=sys.stderr)
        # Kills must have landed on both sides of the commit point; with delays
        # spread over the QUIT time, missing one side means the test is
        # not testing UPDATE.
        self.assertGreaterEqual(total, 30, "too few iterations within the budget")
        self.assertGreater(sum(s["old"] for s in stats.values()), 0)
        self.assertGreater(sum(s["new"] for s in stats.values()), 0)
        self.assertGreater(sum(s["committed"] for s in stats.values()), 0,
                           "no kill landed after the commit point")


if __name__ == "__main__":
    unittest.main()
