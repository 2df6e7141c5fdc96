#!/usr/bin/env python3
"""Many accounts into LMTP: `apop fetch --config` against fetchmail (issue 20).

    bench/fetch_accounts.py --apop build/release/apop [--accounts 100] [--messages 20]
    bench/compare.py --only 8 ...           (the same run, as test 8 of the table)

One `apop serve` holds ACCOUNTS users with MESSAGES messages each (2-8 KB,
From/To/Subject/Date/Message-ID headers, a unique Message-ID per message and
round). A private Dovecot (tests/interop/dovecot.py, lmtp=True) accepts them by
LMTP on its Unix socket into one Maildir per user (RCPT TO:<uNNNNN@bench.example>,
`auth_username_format = %Ln`).

1. Speed. One poll of every account by `apop fetch --config FILE` (one
   [[account]] per user, `to = "lmtp:unix:SOCKET"`, keep = false, a
   password_file each, max_parallel as --max-parallel, default 4 = apop's
   default) and one run of fetchmail with a .fetchmailrc of the same accounts
   (one `poll` entry each: APOP, `smtphost SOCKET lmtp`, `smtpname`, no keep).
   The mail is put back on `apop serve` and Dovecot's Maildirs are emptied
   before each run; each run is timed (wall clock, process start to exit) and
   checked: every message in its user's Maildir exactly once (Message-ID), none
   left on the POP3 server. The ratio is fetchmail's time : apop's; target >= 5.
2. Temporary failures. The same accounts, `apop fetch --config` into a small
   LMTP server of the bench (tests/interop/fakelmtp.py) that answers 451 to
   every third message it receives (counted over all connections), polled
   again until everything has arrived (at most --max-polls): no message lost
   or delivered twice, the POP3 server empty; the number of polls is reported.

Prints a summary (and JSON with --json); compare.py calls run() for test 8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
sys.path.insert(0, HERE)

from dovecot import Dovecot, LMTP_BIN, dovecot_available  # noqa: E402
from fakelmtp import FakeLmtp  # noqa: E402

DOMAIN = "bench.example"
SECRET = "bench-Fetch-Accounts-Secret-42"
MSGID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.I | re.M)


def log(msg: str) -> None:
    print(f"[fetch-accounts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def message(user: str, i: int, rnd: int) -> tuple[bytes, str]:
    """One message of `user` (2-8 KB) and its Message-ID."""
    msgid = f"<fa.{rnd}.{user}.{i}@sender.example.org>"
    size = 2000 + (i * 2731 + int(user[1:]) * 977) % 6000
    head = (f"Return-Path: <sender{i}@example.org>\n"
            f"Received: from mx.example.org (mx.example.org [192.0.2.25])\n"
            f"\tby pop.example.net with ESMTPS id {rnd:x}{i:04x}; Thu, 02 Jan 2025 10:00:00 +0000\n"
            f"From: Sender {i} <sender{i}@example.org>\n"
            f"To: {user} <{user}@{DOMAIN}>\n"
            f"Subject: fetch benchmark round {rnd} message {i}\n"
            f"Date: Thu, 02 Jan 2025 10:{i % 60:02d}:00 +0000\n"
            f"Message-ID: {msgid}\n"
            f"MIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=utf-8\n\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body, msgid


def message_ids(messages: list[bytes]) -> list[str]:
    out = []
    for m in messages:
        hit = MSGID.search(m)
        out.append(hit.group(1).decode() if hit else "(none)")
    return out


class DelayProxy:
    """TCP relay to 127.0.0.1:target that holds every chunk rtt/2 in each direction
    (order kept): a POP3 server at a network distance, for this benchmark only (a
    netem qdisc would slow the whole machine's loopback). Runs in its own thread."""

    def __init__(self, target: int, rtt_ms: float):
        self.target, self.delay = target, rtt_ms / 2000.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> "DelayProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._conn, "127.0.0.1", 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        q: asyncio.Queue = asyncio.Queue()

        async def later():
            while True:
                due, data = await q.get()
                wait = due - self._loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if w.can_write_eof():
                        w.write_eof()
                    return
                w.write(data)
                await w.drain()

        sender = asyncio.ensure_future(later())
        try:
            while True:
                data = await r.read(65536)
                q.put_nowait((self._loop.time() + self.delay, data or None))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError, asyncio.CancelledError):
            sender.cancel()
        finally:
            w.close()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            cw.close()
            return
        try:
            await asyncio.gather(self._pump(cr, sw), self._pump(sr, cw),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # stop()
            pass


class ApopLmtp:
    """apop's own LMTP (`apop serve --lmtp-listen`, workers as by default) as the
    destination, with the methods of dovecot.py's Dovecot that the bench uses: a
    second data directory with the same accounts (users.sqlite and secret.key
    copied), its Maildirs read back."""

    def __init__(self, bench: "Bench"):
        from compare import ApopServer, make_bench_cert
        root = bench.root
        self.data = os.path.join(root, "lmtp-data")
        os.makedirs(self.data, mode=0o700)
        for f in ("users.sqlite", "secret.key"):
            shutil.copy2(os.path.join(bench.data, f), os.path.join(self.data, f))
        self.lmtp_socket = os.path.join(root, "apop-lmtp.sock")
        cert, key = make_bench_cert(root, "ec256")
        self.server = ApopServer(bench.apop, self.data, cert, key, root, name="apop-lmtp",
                                 flags=["--lmtp-listen", "unix:" + self.lmtp_socket]).start()
        self.proc = self.server.proc

    def maildir(self, user: str) -> str:
        return os.path.join(self.data, "mail", user)

    # The messages in the user's Maildir: read as dovecot.py reads Dovecot's
    # (it needs only maildir()).
    messages = Dovecot.messages

    def cleanup(self) -> None:
        self.server.stop()


class Bench:
    def __init__(self, apop: str, root: str, accounts: int, messages: int,
                 max_parallel: int, rtt_ms: float = 0, lmtp: str = "dovecot"):
        self.apop = os.path.abspath(apop)
        self.root = root
        self.users = [f"u{i:05d}" for i in range(1, accounts + 1)]
        self.per_user = messages
        self.max_parallel = max_parallel
        self.rtt_ms = rtt_ms
        self.lmtp = lmtp
        self.proxy: DelayProxy | None = None
        self.round = 0
        self.expected: dict[str, list[str]] = {}
        self.failures: list[str] = []
        self.apop_server = None
        self.dovecot: Dovecot | None = None

    def problem(self, msg: str) -> None:
        self.failures.append(msg)
        log("PROBLEM: " + msg)

    # -- the POP3 server ------------------------------------------------------------------
    def setup_server(self) -> None:
        from compare import ApopServer, make_bench_cert
        from loadgen import seal
        import sqlite3
        self.data = os.path.join(self.root, "apop-data")
        os.makedirs(self.data, mode=0o700)
        # One user by the CLI; the others copy its row with the APOP secret sealed for
        # their name (tests/interop/loadgen.py does the same): 100 `apop user add` runs
        # would take a minute of scrypt on two cores.
        p = subprocess.run([self.apop, "user", "add", "--data", self.data, "template",
                            "--password-stdin"], input=SECRET.encode() + b"\n",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"apop user add: {p.stderr.decode(errors='replace')}")
        with open(os.path.join(self.data, "secret.key"), "rb") as f:
            key = f.read()
        db = sqlite3.connect(os.path.join(self.data, "users.sqlite"))
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            cols = [r[1] for r in db.execute("PRAGMA table_info(users)")]
            row = dict(zip(cols, db.execute(f"SELECT {', '.join(cols)} FROM users WHERE "
                                            "name = ?", ("template",)).fetchone()))
            rows = []
            for name in self.users:
                r = dict(row, name=name, sealed_password=seal(key, SECRET, name))
                rows.append(tuple(r[c] for c in cols))
            with db:
                db.executemany(f"INSERT INTO users ({', '.join(cols)}) VALUES "
                               f"({', '.join('?' for _ in cols)})", rows)
        finally:
            db.close()
        cert, key_path = make_bench_cert(self.root, "ec256")
        self.apop_server = ApopServer(self.apop, self.data, cert, key_path, self.root,
                                      name="apop").start()
        self.port = self.client_port = self.apop_server.port
        if self.rtt_ms:
            self.proxy = DelayProxy(self.port, self.rtt_ms).start()
            self.client_port = self.proxy.port

    def provision(self) -> None:
        """Fresh mail on the POP3 server (a new round: new Message-IDs); whatever was
        left from the previous round is removed first."""
        self.round += 1
        self.expected = {}
        t = int(time.time())
        for n, user in enumerate(self.users):
            md = os.path.join(self.data, "mail", user)
            for sub in ("cur", "new", "tmp"):
                d = os.path.join(md, sub)
                os.makedirs(d, mode=0o700, exist_ok=True)
                for f in os.listdir(d):
                    os.unlink(os.path.join(d, f))
            ids = []
            for i in range(self.per_user):
                data, msgid = message(user, i, self.round)
                name = f"{t}.M{self.round}R{n}U{i}.fabench,S={len(data)}"
                with open(os.path.join(md, "tmp", name), "wb") as f:
                    f.write(data)
                os.rename(os.path.join(md, "tmp", name), os.path.join(md, "new", name))
                ids.append(msgid)
            self.expected[user] = ids

    def left_on_server(self) -> int:
        n = 0
        for user in self.users:
            for sub in ("cur", "new"):
                d = os.path.join(self.data, "mail", user, sub)
                n += len(os.listdir(d)) if os.path.isdir(d) else 0
        return n

    def verify(self, label: str, stored) -> dict:
        """stored(user) -> that user's delivered messages. Every expected Message-ID
        exactly once, nothing else; none left on the POP3 server."""
        lost = dup = extra = total = 0
        for user in self.users:
            got = Counter(message_ids(stored(user)))
            total += sum(got.values())
            want = set(self.expected[user])
            lost += sum(1 for m in want if got[m] == 0)
            dup += sum(c - 1 for m, c in got.items() if m in want and c > 1)
            extra += sum(c for m, c in got.items() if m not in want)
        left = self.left_on_server()
        out = {"delivered": total, "expected": len(self.users) * self.per_user,
               "lost": lost, "duplicated": dup, "unexpected": extra, "left_on_server": left}
        if lost or dup or extra or left:
            self.problem(f"8 {label}: {out}")
        return out

    # -- Dovecot's LMTP -------------------------------------------------------------------
    def start_dovecot(self) -> None:
        # RCPT TO:<uNNNNN@bench.example> is user uNNNNN (the domain dropped).
        self.dovecot = Dovecot(lmtp=True, extra_config="auth_username_format = %Ln\n"
                                                       "default_process_limit = 500\n")
        for u in self.users:
            self.dovecot.add_user(u, SECRET)
        self.dovecot.start()
        self.socket = self.dovecot.lmtp_socket

    def empty_dovecot(self) -> None:
        for u in self.users:
            shutil.rmtree(self.dovecot.maildir(u), ignore_errors=True)

    def start_lmtp(self) -> None:
        if self.lmtp == "dovecot":
            self.start_dovecot()
        else:
            self.dovecot = ApopLmtp(self)  # the same interface as dovecot.py's
            self.socket = self.dovecot.lmtp_socket


    # -- the clients ----------------------------------------------------------------------
    def apop_config(self, path: str, to: str, state: str) -> None:
        pw_dir = os.path.join(self.root, "passwords")
        os.makedirs(pw_dir, mode=0o700, exist_ok=True)
        out = [f"max_parallel = {self.max_parallel}", f'state_dir = "{state}"', ""]
        for u in self.users:
            pw = os.path.join(pw_dir, u)
            if not os.path.exists(pw):
                with open(pw, "w") as f:
                    f.write(SECRET + "\n")
                os.chmod(pw, 0o600)
            out += ["[[account]]", f'name = "{u}"', f'url = "pop3://{u}@127.0.0.1:{self.client_port}"',
                    'auth = "apop"', 'tls = "none"', f'password_file = "{pw}"', f'to = "{to}"',
                    f'deliver_to = "{u}@{DOMAIN}"', "keep = false", ""]
        with open(path, "w") as f:
            f.write("\n".join(out))

    def run_apop(self, config: str) -> tuple[float, subprocess.CompletedProcess]:
        t = time.monotonic()
        p = subprocess.run([self.apop, "fetch", "--config", config], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        return time.monotonic() - t, p

    def fetchmailrc(self, path: str) -> None:
        out = ["set no syslog", "set no bouncemail", ""]
        for u in self.users:
            # `via`: a poll label per account on the same server, as a user with 100
            # mailboxes on one host would write it.
            out += [f"poll {u} via 127.0.0.1 protocol APOP service {self.client_port}",
                    f'  user "{u}" there with password "{SECRET}" is "root" here',
                    "  no keep fetchall no rewrite sslproto \"\"",
                    f'  smtphost "{self.socket}" lmtp smtpname "{u}@{DOMAIN}"', ""]
        with open(path, "w") as f:
            f.write("\n".join(out))
        os.chmod(path, 0o600)

    def run_fetchmail(self, rc: str, home: str) -> tuple[float, subprocess.CompletedProcess]:
        env = dict(os.environ, HOME=home, LC_ALL="C")
        t = time.monotonic()
        p = subprocess.run(["fetchmail", "-f", rc, "-i", os.path.join(home, "ids"),
                            "--nosyslog", "--nodetach"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=home,
                           timeout=900)
        return time.monotonic() - t, p

    # -- the runs ---------------------------------------------------------------------------
    def speed(self, rounds: int) -> dict:
        self.start_lmtp()
        cfg = os.path.join(self.root, "fetch.toml")
        self.apop_config(cfg, f"lmtp:unix:{self.socket}", os.path.join(self.root, "state"))
        home = os.path.join(self.root, "fetchmail-home")
        os.makedirs(home, mode=0o700)
        rc = os.path.join(home, "fetchmailrc")
        self.fetchmailrc(rc)
        times: dict[str, list[float]] = {"apop": [], "fetchmail": []}
        checks: dict[str, list[dict]] = {"apop": [], "fetchmail": []}
        cpu: dict[str, list[dict]] = {"apop": [], "fetchmail": []}
        for r in range(rounds):
            for who in ("fetchmail", "apop"):
                self.provision()
                self.empty_dovecot()
                if os.path.exists(os.path.join(home, "ids")):
                    os.unlink(os.path.join(home, "ids"))
                log(f"round {r + 1}: {who}, {len(self.users)} accounts x {self.per_user}")
                cpu0 = self.cpu()
                if who == "apop":
                    wall, p = self.run_apop(cfg)
                    ok = p.returncode == 0
                    out = p.stderr.decode(errors="replace")
                else:
                    wall, p = self.run_fetchmail(rc, home)
                    ok = p.returncode == 0
                    out = p.stdout.decode(errors="replace")
                if not ok:
                    self.problem(f"8 {who}: exit {p.returncode}: {out[-600:]}")
                time.sleep(0.3)  # Dovecot's exited processes reaped into the master's cutime
                cpu1 = self.cpu()
                cpu[who].append({k: cpu1[k] - cpu0[k] for k in cpu0})
                c = self.verify(who, self.dovecot.messages)
                log(f"  {who}: {wall:.2f} s, CPU s {cpu[who][-1]}, {c}")
                times[who].append(wall)
                checks[who].append(c)
        a, f = statistics.median(times["apop"]), statistics.median(times["fetchmail"])
        return {"wall_s": times, "median_s": {"apop": a, "fetchmail": f},
                "speedup": f / a if a > 0 else None, "checks": checks, "cpu_s": cpu}

    def cpu(self) -> dict:
        """CPU seconds so far of the client (this script's reaped children), of `apop
        serve` and of Dovecot (its process tree: LMTP, auth, ...)."""
        from compare import tree_cpu
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"client": ru.ru_utime + ru.ru_stime,
                "apop_serve": tree_cpu(self.apop_server.pid),
                "dovecot": tree_cpu(self.dovecot.proc.pid)}

    def tempfail(self, every: int, max_polls: int) -> dict:
        lm = FakeLmtp(os.path.join(self.root, "fakelmtp-mail"), self.users,
                      tempfail_every=every).start()
        try:
            cfg = os.path.join(self.root, "fetch-tempfail.toml")
            self.apop_config(cfg, f"lmtp:127.0.0.1:{lm.port}",
                             os.path.join(self.root, "state-tempfail"))
            self.provision()
            want = len(self.users) * self.per_user
            polls, codes, walls, arrived = 0, [], [], []
            while polls < max_polls:
                polls += 1
                wall, p = self.run_apop(cfg)
                walls.append(wall)
                codes.append(p.returncode)
                have = sum(len(lm.messages(u)) for u in self.users)
                arrived.append(have)
                log(f"  tempfail poll {polls}: exit {p.returncode}, {have}/{want} arrived, "
                    f"{lm.tempfailed} answered 451 so far, {wall:.2f} s")
                if p.returncode not in (0, 2):
                    self.problem(f"8 tempfail poll {polls}: exit {p.returncode}: "
                                 f"{p.stderr.decode(errors='replace')[-600:]}")
                if self.left_on_server() == 0:
                    break
            c = self.verify("tempfail", lm.messages)
            return {"every": every, "polls": polls, "exit_codes": codes, "wall_s": walls,
                    "arrived_after_poll": arrived, "answered_451": lm.tempfailed,
                    "accepted": lm.accepted, "check": c}
        finally:
            lm.stop()

    def cleanup(self) -> None:
        if self.proxy:
            self.proxy.stop()
        if self.apop_server:
            self.apop_server.stop()
        if self.dovecot:
            self.dovecot.cleanup()


def available() -> str:
    """Why test 8 cannot run here, or ''."""
    if not dovecot_available() or not os.path.isfile(LMTP_BIN):
        return "Dovecot's LMTP (dovecot-lmtpd) is missing"
    if shutil.which("fetchmail") is None:
        return "fetchmail is missing"
    return ""


def run(apop: str, workdir: str | None, accounts: int, messages: int, max_parallel: int,
        rounds: int = 1, tempfail_every: int = 3, max_polls: int = 20,
        keep: bool = False, rtt_ms: float = 0, lmtp: str = "dovecot") -> dict:
    if workdir:
        # Dovecot's tree (dovecot.py: tempfile.mkdtemp) goes there too.
        tempfile.tempdir = workdir
    root = tempfile.mkdtemp(prefix="apop-fetch-accounts-", dir=workdir)
    if os.getuid() == 0:
        os.chmod(root, 0o755)  # Dovecot's unprivileged processes reach its tree below
    b = Bench(apop, root, accounts, messages, max_parallel, rtt_ms, lmtp)
    t0 = time.monotonic()
    out: dict = {"accounts": accounts, "messages_per_account": messages,
                 "max_parallel": max_parallel, "load_before": os.getloadavg(),
                 "workdir": workdir or tempfile.gettempdir(), "rtt_ms": rtt_ms, "lmtp": lmtp}
    try:
        b.setup_server()
        out["speed"] = b.speed(rounds)
        out["tempfail"] = b.tempfail(tempfail_every, max_polls)
    finally:
        b.cleanup()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    out["seconds"] = time.monotonic() - t0
    out["failures"] = b.failures
    return out


def summary(r: dict) -> str:
    s, t = r["speed"], r["tempfail"]
    n = r["accounts"] * r["messages_per_account"]
    lines = [f"8. {r['accounts']} accounts x {r['messages_per_account']} messages "
             f"({n}) from one apop serve"
             + (f" at {r['rtt_ms']:g} ms round trip (relay)" if r.get("rtt_ms") else "")
             + (" into apop serve's LMTP" if r.get("lmtp") == "apop" else " into Dovecot's LMTP")
             + ", one poll (wall time):"]
    for who, label in (("fetchmail", f"fetchmail ({r['accounts']} poll entries)"),
                       ("apop", f"apop fetch --config (max_parallel {r['max_parallel']})")):
        runs = ", ".join(f"{x:.2f}" for x in s["wall_s"][who])
        ch = s["checks"][who][-1]
        cpu = s["cpu_s"][who][-1]
        lines.append(f"   {label:<42} {s['median_s'][who]:8.2f} s  (runs: {runs}; delivered "
                     f"{ch['delivered']}/{ch['expected']}, lost {ch['lost']}, duplicated "
                     f"{ch['duplicated']}, left on server {ch['left_on_server']}; CPU s: "
                     f"client {cpu['client']:.2f}, apop serve {cpu['apop_serve']:.2f}, "
                     f"LMTP server {cpu['dovecot']:.2f})")
    sp = s["speedup"] or 0
    lines.append(f"   fetchmail/apop {sp:.2f}x; target >= 5x: {'met' if sp >= 5 else 'NOT met'}")
    c = t["check"]
    ok = not (c["lost"] or c["duplicated"] or c["unexpected"] or c["left_on_server"])
    lines.append(f"   451 to every {'third' if t['every'] == 3 else str(t['every']) + 'th'} "
                 f"message (fake LMTP): all {c['expected']} arrived after {t['polls']} polls "
                 f"(arrived after each: {t['arrived_after_poll']}; {t['answered_451']} answered "
                 f"451); lost {c['lost']}, duplicated {c['duplicated']}, left on server "
                 f"{c['left_on_server']}: {'met' if ok else 'NOT met'}"
                 if c["delivered"] == c["expected"] else
                 f"   451 to every {t['every']}th message: {c} after {t['polls']} polls: NOT met")
    lines.append(f"   trees (Maildirs of both servers) in {r['workdir']}; "
                 f"load average before {r['load_before'][0]:.2f}, after "
                 f"{r['load_after'][0]:.2f}; the whole test took {r['seconds']:.0f} s")
    return "\n".join(lines)


def default_workdir() -> str | None:
    from compare import default_workdir as dw
    return dw()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apop", default=os.environ.get("APOP_BIN",
                                                     os.path.join(REPO, "build/release/apop")))
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--messages", type=int, default=20, help="messages per account")
    ap.add_argument("--max-parallel", type=int, default=4,
                    help="max_parallel of apop's configuration (default 4, apop's default)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="timed runs of each client (the median is compared)")
    ap.add_argument("--rtt-ms", type=float, default=0,
                    help="put the POP3 server this many ms of round trip away (a relay that "
                         "holds each chunk half of it each way; default 0: loopback)")
    ap.add_argument("--lmtp", choices=("dovecot", "apop"), default="dovecot",
                    help="the LMTP server both clients deliver to: Dovecot's (default) or "
                         "apop serve's own (--lmtp-listen; the issue allows either)")
    ap.add_argument("--tempfail-every", type=int, default=3)
    ap.add_argument("--max-polls", type=int, default=20)
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR") or default_workdir(),
                    help="where the temporary trees go, Dovecot's Maildirs too (default: "
                         "/dev/shm when it is a tmpfs, as compare.py: the clients are "
                         "measured, not the disk's fsync; '-': $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    a = ap.parse_args()
    if a.workdir == "-":
        a.workdir = None
    why = available()
    if why:
        print(f"fetch_accounts: {why} (scripts/deps.sh installs it)", file=sys.stderr)
        return 1
    r = run(a.apop, a.workdir, a.accounts, a.messages, a.max_parallel, a.rounds,
            a.tempfail_every, a.max_polls, a.keep, a.rtt_ms, a.lmtp)
    print(summary(r))
    for p in r["failures"]:
        print(f"PROBLEM: {p}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
