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
restarted server serves the maildrop at once: its first login must succeed
(no stale lock, no retry). Half of the times a journal is left, the restarted
server is killed again during the login that finishes it (recovery must be
idempotent). Between the kill and the restart, new mail arrives in new/ (as
deliveries would): it must survive.

On disk, right after a kill and before the restart, a partial removal is
allowed only while the update journal USER/apop-pop3.update is present. (A
server that unlinks without the journal fails this within a few kills at
1,000 messages, where the unlink loop takes milliseconds.)

How it reaches hundreds of kills: each size runs in its own worker process
with its own data directory and server, so one worker's server starts (the
bulk of an iteration: exec, dynamic linking, the user database; about 1 s of
wall time under ASan on a busy machine) while another one kills. Messages are
hard links to a pool of files written once per worker, so a mailbox is filled
with link() instead of writing files, and "byte for byte" is checked without
reading every message every time: every message file must be the very inode
of its pool file (one lstat; a rewritten, replaced or torn message is another
inode), and the pool files -- which keep every inode
alive, deleted or not -- are compared with their contents at the end.

Kill timing adapts to the binary and the machine (a debug, optimised or ASan
build, an idle or loaded machine): each worker times one QUIT of its size to
start with, then steers its kill delay after every kill by what the kill hit
(a staircase): a kill before the commit point (old state on disk, no
journal) makes the next delays longer, one after the journal was removed
(new state) shorter, and one with the journal on disk keeps them; delays are
drawn around that estimate (and sometimes anywhere from 0 to twice it), so
every size gets kills before, inside and after the commit window. Kills
during recovery are steered the same way (journal still there or gone).

The run is bounded by APOP_CRASH_BUDGET seconds of kills (default 55; the
workers run side by side; a size that has not yet had 10 kills with some on
each side of the commit point goes on for at most the budget once more),
APOP_CRASH_ITERATIONS kills per size (default 400) and APOP_CRASH_SIZES
(default 1,10,200,1000); APOP_CRASH_SEED repeats a run.
The figures are printed (docs/robustness.md lists the latest).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import unittest

from apoptest import (ALICE_SECRET, LISTENING_RE, ApopTestCase, Conn, apop_digest,
                      assert_no_sanitizer_report)

JOURNAL = "apop-pop3.update"
JOURNAL_TMP = "apop-pop3.update.tmp"
SIZES = tuple(int(x) for x in os.environ.get("APOP_CRASH_SIZES", "1,10,200,1000").split(","))
START_TIMEOUT = 60.0  # a server start under ASan on a loaded machine
STEP = 1.25  # the staircase's factor
MIN_KILLS = 10  # per size


def crlf_size(data: bytes) -> int:
    return len(re.sub(rb"(?<!\r)\n", b"\r\n", data))


class Failure(Exception):
    pass


def check(cond, message: str):
    if not cond:
        raise Failure(message)


class LiteServer:
    """`apop serve` on 127.0.0.1:0 with nothing but what the test needs: no
    reader threads, the log read from its pipe only up to the listening line
    (the rest, a few lines per session, stays in the pipe until the kill)."""

    def __init__(self, binary: str, data: str):
        # The one-process server: the kill must hit the process doing UPDATE
        # (workers have their own SIGKILL test, test_workers).
        self.argv = [binary, "serve", "--data", data, "--listen", "127.0.0.1:0",
                     "--workers", "0", "--auth-failure-delay-ms", "0"]
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = b""
        self.last_log = b""  # of the previous server, for diagnostics

    def start(self):
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        self.last_log, self.log = self.log, b""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e,
                                     start_new_session=True)
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            m = LISTENING_RE.search(self.log.decode("utf-8", "replace"))
            if m:
                self.port = int(m.group(2))
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.log += chunk
        rc = self.proc.poll()
        self.kill()
        raise Failure(f"server did not listen within {START_TIMEOUT:.0f} s (exit status {rc})"
                      f"\n{self.diagnostics()}")

    def kill(self):
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()  # no timeout: Popen polls with sleeps then
        self._collect()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self._collect()
        return rc

    def _collect(self):
        # The process is gone: the pipe has its remaining output and then EOF.
        fd = self.proc.stderr.fileno()
        while select.select([fd], [], [], 1.0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.log += chunk
        self.proc.stderr.close()
        self.proc = None
        # A sanitizer report halts the server, but the kill would hide it.
        try:
            assert_no_sanitizer_report("apop serve", self.log.decode("utf-8", "replace"))
        except AssertionError as e:
            raise Failure(str(e)) from None

    def diagnostics(self) -> str:
        return ("--- previous server's stderr ---\n" + self.last_log.decode("utf-8", "replace")
                + "--- server stderr ---\n" + self.log.decode("utf-8", "replace") + "--- end ---")


class Mailbox:
    """The Maildir of one worker, filled with hard links to its pool: one file
    per message, each written once (Dovecot-style names with S= and W=). A
    message's UIDL is its name's base without S=/W=."""

    def __init__(self, maildir: str, pool_dir: str, size: int, rng: random.Random):
        self.dir = maildir
        self.rng = rng
        self.counter = 0
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        os.makedirs(pool_dir)
        # Enough for the maildrop, what arrives while the server is down, and
        # the messages deleted but not yet known to be gone.
        self.pool: list[tuple[str, int, bytes, str]] = []  # (path, inode, content, S=,W=)
        for k in range(2 * size + 8):
            body = b"".join(f"pool {k} line {j} ".encode() + b"x" * rng.randint(0, 90) + b"\n"
                            for j in range(rng.randint(1, 40)))
            data = f"From: a@example.org\nSubject: pool message {k}\n\n".encode() + body
            path = os.path.join(pool_dir, str(k))
            with open(path, "wb") as f:
                f.write(data)
            self.pool.append((path, os.stat(path).st_ino, data,
                              f"S={len(data)},W={crlf_size(data)}"))
        self.free = list(range(len(self.pool)))
        rng.shuffle(self.free)
        self.of: dict[str, int] = {}  # UIDL -> pool index, for every message not known gone

    def add(self, n: int, sub: str) -> list[str]:
        """Up to n new messages in cur/ (as seen before) or new/ (as just delivered)."""
        out = []
        now = int(time.time())
        for _ in range(min(n, len(self.free))):
            k = self.free.pop()
            path, _, _, sizes = self.pool[k]
            self.counter += 1
            uidl = f"{now}.M{self.counter}P{os.getpid()}.crashtest"
            name = f"{uidl},{sizes}" + (":2," if sub == "cur" else "")
            os.link(path, os.path.join(self.dir, sub, name))
            self.of[uidl] = k
            out.append(uidl)
        return out

    def gone(self, uidls):
        for u in uidls:
            self.free.append(self.of.pop(u))

    def disk(self, context: str) -> set[str]:
        """The UIDLs of the message files in new/ and cur/; each must be the inode
        of its pool file, none duplicated, none unknown."""
        found: set[str] = set()
        for sub in ("new", "cur"):
            with os.scandir(os.path.join(self.dir, sub)) as it:
                for entry in it:
                    uidl = entry.name.split(",", 1)[0]
                    check(uidl not in found, f"duplicate message file {entry.name}; {context}")
                    check(uidl in self.of, f"unknown message file {entry.name}; {context}")
                    # st_ino, not d_ino: overlayfs may report another d_ino.
                    check(entry.stat(follow_symlinks=False).st_ino == self.pool[self.of[uidl]][1],
                          f"{entry.name} is not the file that was delivered (rewritten or "
                          f"replaced); {context}")
                    found.add(uidl)
        return found

    def verify_pool(self):
        for path, inode, data, _ in self.pool:
            with open(path, "rb") as f:
                check(f.read() == data and os.fstat(f.fileno()).st_ino == inode,
                      f"message file {path} changed")

    def journal_present(self) -> bool:
        return os.path.exists(os.path.join(self.dir, JOURNAL))

    def journal_removals(self, context: str) -> set[str]:
        """The UIDLs a committed journal removes (its format: store/update_journal.hpp;
        renamed into place only when complete, so it must parse)."""
        with open(os.path.join(self.dir, JOURNAL), "rb") as f:
            data = f.read()
        check(data.startswith(b"apop-update 1\n") and data.endswith(b"E\0"),
              f"journal torn or malformed: {data[:60]!r}...{data[-20:]!r}; {context}")
        removed = set()
        for record in data[len(b"apop-update 1\n"):-2].split(b"\0")[:-1]:
            check(record[:1] in (b"D", b"K") and len(record) > 1,
                  f"journal record {record!r}; {context}")
            if record[:1] == b"D":
                removed.add(record[1:].decode().split(",", 1)[0])
        return removed

    def journal_tmp_present(self) -> bool:
        return os.path.exists(os.path.join(self.dir, JOURNAL_TMP))


def choose(rng: random.Random, n: int) -> list[int]:
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


def pause(seconds: float):
    """Waits precisely: sleep most of it, spin the end (a worker is one thread)."""
    end = time.perf_counter() + seconds
    if seconds > 0.002:
        time.sleep(seconds - 0.001)
    while time.perf_counter() < end:
        pass


class Staircase:
    """A kill delay that follows what the kills hit: up after a kill that came
    too early, down after one that came too late, so delays gather around the
    moment of interest wherever it is on this binary and machine."""

    def __init__(self, start: float):
        self.est = max(start, 20e-6)

    def draw(self, rng: random.Random) -> float:
        if rng.random() < 0.3:
            return rng.uniform(0, 2 * self.est)
        return self.est * rng.uniform(0.6, 1.4)

    def early(self):
        self.est = min(self.est * STEP, 5.0)

    def late(self):
        self.est = max(self.est / STEP, 20e-6)


class Worker:
    """Kills the server of one maildrop size over and over; returns its figures."""

    def __init__(self, binary: str, template: str, root: str, size: int, seed: int,
                 budget: float, iterations: int, stop_event):
        self.size = size
        self.seed = seed
        self.rng = random.Random(seed)
        self.deadline = time.monotonic() + budget
        self.hard_deadline = self.deadline + budget
        self.iterations = iterations
        self.stop_event = stop_event
        data = os.path.join(root, "data")
        shutil.copytree(template, data)
        self.box = Mailbox(os.path.join(data, "mail", "alice"), os.path.join(root, "pool"), size,
                           self.rng)
        self.srv = LiteServer(binary, data)
        self.st = {"kills": 0, "before": 0, "committed": 0, "after": 0, "nothing_deleted": 0,
                   "old": 0, "new": 0, "partial_on_disk": 0, "quit_ok": 0, "recovery_kills": 0,
                   "recovery_cut": 0, "quit_ms": 0.0, "commit_ms": 0.0, "recovery_ms": 0.0}

    def fail(self, message: str):
        raise Failure(f"{message}\n{self.srv.diagnostics()}")

    def connect(self) -> Conn:
        try:
            return Conn(self.srv.port, timeout=30)
        except OSError as e:
            self.fail(f"connect: {e}")

    def login(self, context: str) -> Conn:
        c = self.connect()
        r = c.apop("alice", ALICE_SECRET)
        if not r.startswith(b"+OK"):
            c.close()
            self.fail(f"login failed (a stale lock?): {r!r}; {context}")
        return c

    def uidls(self, c: Conn) -> list[str]:
        status, lines = c.cmd_multi("UIDL")
        check(status.startswith(b"+OK"), f"UIDL: {status!r}")
        return [l.split(b" ", 1)[1].decode() for l in lines]

    def dele(self, c: Conn, numbers: list[int]):
        if numbers:
            c.send(b"".join(b"DELE %d\r\n" % i for i in numbers))
            for i in numbers:
                r = c.line()
                check(r.startswith(b"+OK"), f"DELE {i}: {r!r}")

    def check_between(self, old: set[str], new: set[str], context: str) -> set[str]:
        found = self.box.disk(context)
        check(found <= old, f"unknown message on disk; {context}")
        check(new <= found, f"kept message lost: {sorted(new - found)[:5]}; {context}")
        return found

    def enough(self) -> bool:
        """What the test asserts for each size. A size that has not got it
        when the budget is spent (a slow binary on a loaded machine) goes on
        for at most the budget once more."""
        st = self.st
        return (st["kills"] >= MIN_KILLS and st["before"] > 0
                and st["committed"] + st["after"] > 0)

    def calibrate(self) -> tuple[float, float]:
        """One QUIT deleting about half of a full maildrop, timed, and the time
        of a login: where the kill delays start."""
        box = self.box
        box.add(self.size, "cur")
        self.srv.start()
        c = self.connect()
        t0 = time.perf_counter()
        r = c.apop("alice", ALICE_SECRET)
        login_time = time.perf_counter() - t0
        check(r.startswith(b"+OK"), f"login: {r!r}")
        listing = self.uidls(c)
        dels = list(range(1, len(listing) + 1, 2))
        self.dele(c, dels)
        t0 = time.perf_counter()
        check(c.cmd("QUIT").startswith(b"+OK"), "QUIT")
        quit_time = time.perf_counter() - t0
        c.close()
        self.srv.kill()  # the next server starts from a known state
        gone = {listing[i - 1] for i in dels}
        found = box.disk("calibration")
        check(found == set(listing) - gone, "calibration QUIT did not remove its messages")
        check(not box.journal_present(), "journal left after a QUIT")
        box.gone(gone)
        box.add(len(gone), "cur")
        return quit_time, login_time

    def run(self) -> dict:
        st, box, rng, size = self.st, self.box, self.rng, self.size
        quit_time, login_time = self.calibrate()
        st["quit_ms"] = quit_time * 1000
        commit = Staircase(quit_time / 2)
        recovery = Staircase(login_time)
        old = new = set(box.of)
        must_be_new = False
        context = f"seed {self.seed}, size {size}, first session"
        self.srv.start()
        while True:
            # The restarted server: the lock is free, the commit cut by the
            # last kill is finished (or not begun): exactly old or new.
            c = self.login(context)
            listing = self.uidls(c)
            seen = set(listing)
            check(len(listing) == len(seen), f"duplicate UIDL; {context}")
            check(seen in (old, new), f"neither the old nor the new state: "
                  f"{len(seen)} messages, old {len(old)}, new {len(new)}; {context}")
            if must_be_new:
                check(seen == new, f"committed or +OK, but not the new state; {context}")
            if st["kills"]:
                st["new" if seen == new and old != new else "old"] += 1
            check(box.disk(context) == seen, f"disk differs from the listing; {context}")
            check(not box.journal_present(), f"journal left after login; {context}")
            check(not box.journal_tmp_present(), f"journal .tmp left after login; {context}")
            box.gone(set(box.of) - seen)
            if (st["kills"] >= self.iterations or self.stop_event.is_set()
                    or time.monotonic() >= self.hard_deadline
                    or (time.monotonic() >= self.deadline and self.enough())):
                check(c.quit().startswith(b"+OK"), "final QUIT")
                rc = self.srv.stop()
                check(rc == 0, f"exit status {rc} after SIGTERM\n{self.srv.diagnostics()}")
                break

            # This session deletes a subset and is killed during QUIT.
            dels = choose(rng, len(listing))
            old = seen
            new = seen - {listing[i - 1] for i in dels}
            self.dele(c, dels)
            delay = commit.draw(rng) if old != new else rng.uniform(0, 2 * commit.est)
            c.send(b"QUIT\r\n")
            pause(delay)
            self.srv.kill()
            st["kills"] += 1
            got = b""
            c.sock.settimeout(5)
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
            context = (f"seed {self.seed}, size {size}, kill {st['kills']}, deleted "
                       f"{dels if len(dels) < 12 else f'{len(dels)} of {len(listing)}'}, "
                       f"delay {delay * 1000:.3f} ms, QUIT reply {got!r}")

            # On disk, before any recovery: the files are the delivered ones,
            # nothing extra, no duplicate; a partial removal only with the
            # journal present. What the kill hit steers the next delay.
            found = self.check_between(old, new, context)
            committed = box.journal_present()
            if committed:
                check(box.journal_removals(context) == old - new,
                      f"the journal does not name exactly the deleted messages; {context}")
            elif box.journal_tmp_present():
                check(found == old, f"removal before the journal was committed; {context}")
            if found not in (old, new):
                check(committed, f"partial removal without journal; {context}")
                st["partial_on_disk"] += 1
            if old == new:
                st["nothing_deleted"] += 1
            elif committed:
                st["committed"] += 1
            elif found == old and not quit_ok:
                st["before"] += 1
                commit.early()
            else:
                check(found == new, f"+OK for QUIT, but the old state on disk; {context}")
                st["after"] += 1
                commit.late()
            must_be_new = quit_ok or committed

            # Sometimes kill the restarted server again while a login
            # finishes the cut commit.
            if committed and rng.random() < 0.5:
                self.srv.start()
                c = self.connect()
                c.send(f"APOP alice {apop_digest(c.timestamp, ALICE_SECRET)}\r\n".encode())
                pause(recovery.draw(rng))
                self.srv.kill()
                c.close()
                st["recovery_kills"] += 1
                found = self.check_between(old, new, "recovery cut; " + context)
                if box.journal_present():
                    st["recovery_cut"] += 1
                    recovery.early()
                else:
                    recovery.late()
                    check(found == new, f"journal gone, removal not finished; {context}")

            # Mail delivered while the server is down must survive the
            # recovery (it is neither old nor deleted).
            # An emptied maildrop is refilled (else the next kills delete nothing).
            refill = max(1, size - len(new))
            arrived = set(box.add(rng.choice((0, 1, refill, refill)) if new else refill, "new"))
            old, new = old | arrived, new | arrived
            self.srv.start()
        box.verify_pool()
        st["commit_ms"] = commit.est * 1000
        st["recovery_ms"] = recovery.est * 1000
        return st


def worker_main(conn, args):
    w = None
    try:
        w = Worker(*args)
        conn.send(("ok", w.run()))
    except BaseException as e:  # noqa: B036 -- everything goes back to the test
        text = str(e) if isinstance(e, Failure) else traceback.format_exc()
        try:
            args[-1].set()  # the other workers stop early
            conn.send(("fail", f"size {args[3]}: {text}"))
        finally:
            if w is not None:
                w.srv.kill()
    finally:
        conn.close()


class CrashUpdateTest(ApopTestCase):

    def test_sigkill_during_update_is_all_or_nothing(self):
        seed = int(os.environ.get("APOP_CRASH_SEED", "0")) or random.randrange(1, 1 << 30)
        budget = float(os.environ.get("APOP_CRASH_BUDGET", "55"))
        per_size = int(os.environ.get("APOP_CRASH_ITERATIONS", "400"))
        self.env.add_user("alice", ALICE_SECRET)
        # Fork, not spawn: the workers inherit this module and the template.
        ctx = multiprocessing.get_context("fork")
        stop_event = ctx.Event()
        start = time.monotonic()
        workers = []
        for i, size in enumerate(SIZES):
            parent, child = ctx.Pipe(duplex=False)
            args = (self.env.bin, self.env.data, os.path.join(self.env.root, f"w{size}"), size,
                    seed + i, budget, per_size, stop_event)
            p = ctx.Process(target=worker_main, args=(child, args), daemon=True)
            p.start()
            child.close()
            workers.append((size, p, parent))
        results, failures = {}, []
        for size, p, parent in workers:
            # Bounded: twice the budget, one last session and a slow server start.
            left = 2 * budget + 2 * START_TIMEOUT + 60 - (time.monotonic() - start)
            if parent.poll(max(left, 1)):
                try:
                    status, value = parent.recv()
                except EOFError:
                    status, value = "fail", f"size {size}: worker died (exit {p.exitcode})"
            else:
                status, value = "fail", f"size {size}: worker still running after the budget"
                stop_event.set()
            p.join(10)
            if p.is_alive():
                p.kill()
            if status == "ok":
                results[size] = value
            else:
                failures.append(value)
        elapsed = time.monotonic() - start
        if failures:
            self.fail(f"seed {seed} (APOP_CRASH_SEED):\n" + "\n".join(failures))

        total = sum(s["kills"] for s in results.values())
        report = [f"crash-update: seed {seed}, {total} kills in {elapsed:.1f} s "
                  f"({len(SIZES)} workers side by side)"]
        for size in SIZES:
            s = results[size]
            report.append(
                f"  {size:>4} messages: {s['kills']} kills (QUIT {s['quit_ms']:.1f} ms, kill "
                f"delays steered to {s['commit_ms']:.2f} ms); the kill came before the commit "
                f"point {s['before']}, with the journal on disk {s['committed']} (partial "
                f"removal {s['partial_on_disk']}), after it {s['after']}, nothing deleted "
                f"{s['nothing_deleted']}; +OK before the kill {s['quit_ok']}; next session: "
                f"old state {s['old']}, new state {s['new']}; kills during recovery "
                f"{s['recovery_kills']} ({s['recovery_cut']} cut it, delays steered to "
                f"{s['recovery_ms']:.2f} ms)")
        print("\n".join(report), file=sys.stderr)
        # Kills must have landed on both sides of the commit point for every
        # size, and some inside the journal's window: else the test is not
        # testing UPDATE.
        for size in SIZES:
            s = results[size]
            self.assertGreaterEqual(s["kills"], MIN_KILLS,
                                    f"size {size}: too few kills in twice the budget")
            self.assertGreater(s["before"], 0, f"size {size}: no kill before the commit point")
            self.assertGreater(s["committed"] + s["after"], 0,
                               f"size {size}: no kill after the commit point")
        self.assertGreater(sum(s["committed"] for s in results.values()), 0,
                           "no kill landed while the journal was on disk")
        self.assertGreater(sum(s["old"] for s in results.values()), 0)
        self.assertGreater(sum(s["new"] for s in results.values()), 0)


if __name__ == "__main__":
    unittest.main()
