"""Load and soak generator for `apop serve` (used by test_load.py and bench/soak.py).

- provision(): N accounts in one SQLite transaction instead of N `apop user add`
  runs (each hashes the secret with scrypt and fsyncs the database: minutes for
  a thousand). One template account is made by the CLI; the others copy its
  row (the scrypt/SCRAM hashes do not depend on the name) with the APOP secret
  sealed for their own name, as the server's SecretBox does (AES-256-GCM,
  version byte 0x01, 12-byte nonce, ciphertext and tag, the user name as
  associated data). One provisioned account is checked by logging in before
  the load starts, so a format change fails loudly here.
- run(): `sessions` concurrent asyncio clients, each its own account (a maildrop
  is locked by one session), looping connect, APOP, STAT, RETR, QUIT until the
  duration ends; an attacker sending wrong APOP digests as fast as the server
  answers from another loopback address for a user that does not exist (so
  the per-user throttle of real users is untouched); a sampler of the server's
  VmRSS and open descriptors (/proc/PID). Returns the figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field

from apoptest import ApopEnv, crlf

GREETING_TS = re.compile(rb"(<[\x21-\x7e]+>)\r\n$")


def seal(key: bytes, secret: str, user: str) -> bytes:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # scripts/deps.sh installs python3-cryptography
        raise AssertionError("python3-cryptography is missing; run scripts/deps.sh") from e
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, secret.encode(), user.encode())


def provision(env: ApopEnv, names: list[str], secret: str, messages_per_user: int,
              rng: random.Random) -> dict[str, list[bytes]]:
    """Creates the accounts and their maildrops; returns {user: [message bytes]}."""
    template = "loadtemplate"
    env.add_user(template, secret)
    with open(os.path.join(env.data, "secret.key"), "rb") as f:
        key = f.read()
    db = sqlite3.connect(os.path.join(env.data, "users.sqlite"))
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        cols = [r[1] for r in db.execute("PRAGMA table_info(users)")]
        row = dict(zip(cols, db.execute(
            f"SELECT {', '.join(cols)} FROM users WHERE name = ?", (template,)).fetchone()))
        rows = []
        for name in names:
            r = dict(row)
            r["name"] = name
            r["sealed_password"] = seal(key, secret, name)
            rows.append(tuple(r[c] for c in cols))
        with db:
            db.executemany(f"INSERT INTO users ({', '.join(cols)}) VALUES "
                           f"({', '.join('?' for _ in cols)})", rows)
    finally:
        db.close()
    mail: dict[str, list[bytes]] = {}
    now = int(time.time())
    for n, name in enumerate(names):
        md = env.maildir(name)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), mode=0o700, exist_ok=True)
        msgs = []
        for i in range(messages_per_user):
            body = b"".join(b"%s message %d line %d %s\n" % (name.encode(), i, k,
                                                             b"z" * rng.randrange(60))
                            for k in range(rng.randrange(5, 200)))
            data = b"From: load@example.org\nSubject: load %d\n\n" % i + body
            fname = f"{now}.M{i}P{n}Q1.loadtest,S={len(data)},W={len(crlf(data))}"
            with open(os.path.join(md, "new", fname), "wb") as f:
                f.write(data)
            msgs.append(data)
        mail[name] = msgs
    return mail


@dataclass
class Figures:
    sessions: int = 0          # complete legitimate sessions (login..QUIT +OK)
    failures: int = 0          # legitimate sessions that failed in any way
    failure_samples: list[str] = field(default_factory=list)
    clients: int = 0           # concurrent legitimate clients
    peak_concurrent: int = 0   # most legitimate connections open at once
    attacker_attempts: int = 0  # wrong digests answered
    attacker_ok: int = 0       # wrong digests accepted (must stay 0)
    attacker_refused: int = 0  # connections closed/refused before an answer
    rss_start_kib: int = 0
    rss_peak_kib: int = 0
    rss_end_kib: int = 0
    fds_start: int = 0
    fds_peak: int = 0
    fds_end: int = 0
    seconds: float = 0.0
    retr_bytes: int = 0

    def summary(self) -> str:
        return (f"{self.clients} concurrent clients (peak {self.peak_concurrent} open), "
                f"{self.sessions} sessions in {self.seconds:.1f} s "
                f"({self.sessions / max(self.seconds, 1e-9):.0f}/s), {self.failures} failures; "
                f"attacker: {self.attacker_attempts} wrong digests answered, "
                f"{self.attacker_ok} accepted, {self.attacker_refused} connections cut; "
                f"server RSS start {self.rss_start_kib / 1024:.1f} MiB, "
                f"peak {self.rss_peak_kib / 1024:.1f} MiB, end {self.rss_end_kib / 1024:.1f} MiB; "
                f"descriptors start {self.fds_start}, peak {self.fds_peak}, "
                f"end {self.fds_end}")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    def __init__(self, port: int, pid: int, mail: dict[str, list[bytes]], secret: str,
                 duration: float, attacker_addr: str = "127.0.0.2", attackers: int = 50,
                 op_timeout: float = 120.0, seed: int = 0):
        self.port = port
        self.pid = pid
        self.mail = mail
        self.secret = secret
        self.duration = duration
        self.attacker_addr = attacker_addr
        self.attackers = attackers
        self.op_timeout = op_timeout
        self.rng = random.Random(seed)
        self.f = Figures(clients=len(mail))
        self.open_now = 0
        self.deadline = 0.0
        self.connected = 0
        self.all_connected = asyncio.Event()

    async def _line(self, r: asyncio.StreamReader) -> bytes:
        line = await asyncio.wait_for(r.readline(), self.op_timeout)
        if not line.endswith(b"\r\n"):
            raise EOFError(f"connection closed, got {line!r}")
        return line

    async def session(self, user: str, first: bool = False) -> None:
        w = None
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20,
                                        local_addr=("127.0.0.1", 0)), self.op_timeout)
            self.open_now += 1
            self.f.peak_concurrent = max(self.f.peak_concurrent, self.open_now)
            greeting = await self._line(r)
            if first:
                # All clients connected at once before the first logins, so
                # the server really holds `sessions` connections together.
                first = False
                self._arrive()
                await asyncio.wait_for(self.all_connected.wait(), self.op_timeout)
            m = GREETING_TS.search(greeting)
            if not greeting.startswith(b"+OK") or not m:
                raise AssertionError(f"greeting {greeting!r}")
            digest = hashlib.md5(m.group(1) + self.secret.encode()).hexdigest()
            w.write(f"APOP {user} {digest}\r\n".encode())
            reply = await self._line(r)
            if not reply.startswith(b"+OK"):
                raise AssertionError(f"APOP {user}: {reply!r}")
            w.write(b"STAT\r\n")
            reply = await self._line(r)
            msgs = self.mail[user]
            if reply.split()[:2] != [b"+OK", str(len(msgs)).encode()]:
                raise AssertionError(f"STAT: {reply!r}")
            k = self.rng.randrange(len(msgs))
            w.write(b"RETR %d\r\n" % (k + 1))
            reply = await self._line(r)
            if not reply.startswith(b"+OK"):
                raise AssertionError(f"RETR: {reply!r}")
            body = bytearray()
            while True:
                line = await self._line(r)
                if line == b".\r\n":
                    break
                body += line[1:] if line.startswith(b"..") else line
            if bytes(body) != crlf(msgs[k]):
                raise AssertionError(f"RETR {k + 1} of {user}: wrong content ({len(body)} octets)")
            self.f.retr_bytes += len(body)
            w.write(b"QUIT\r\n")
            reply = await self._line(r)
            if not reply.startswith(b"+OK"):
                raise AssertionError(f"QUIT: {reply!r}")
            rest = await asyncio.wait_for(r.read(), self.op_timeout)
            if rest:
                raise AssertionError(f"data after QUIT: {rest[:80]!r}")
            self.f.sessions += 1
        except Exception as e:  # noqa: BLE001 -- every failure is counted and sampled
            self.f.failures += 1
            if len(self.f.failure_samples) < 10:
                self.f.failure_samples.append(f"{user}: {type(e).__name__}: {e}")
        finally:
            if first:
                self._arrive()  # failed before the greeting: do not hold the others
            if w is not None:
                self.open_now -= 1
                w.close()
                try:
                    await w.wait_closed()
                except Exception:  # noqa: BLE001
                    pass

    def _arrive(self) -> None:
        self.connected += 1
        if self.connected == len(self.mail):
            self.all_connected.set()

    async def client(self, user: str) -> None:
        first = True
        while first or time.monotonic() < self.deadline:
            await self.session(user, first)
            first = False

    async def attacker(self, n: int) -> None:
        # A user that does not exist: the per-user failure count of real
        # users stays untouched; the per-address count of 127.0.0.2 grows.
        victim = f"nosuchuser{n}"
        while time.monotonic() < self.deadline:
            w = None
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port,
                                            local_addr=(self.attacker_addr, 0)), 30)
                greeting = await asyncio.wait_for(r.readline(), 30)
                if not greeting.startswith(b"+OK"):
                    self.f.attacker_refused += 1
                    continue
                while time.monotonic() < self.deadline:
                    guess = hashlib.md5(os.urandom(16)).hexdigest()
                    w.write(f"APOP {victim} {guess}\r\n".encode())
                    reply = await asyncio.wait_for(r.readline(), 30)
                    if not reply:
                        self.f.attacker_refused += 1
                        break
                    self.f.attacker_attempts += 1
                    if reply.startswith(b"+OK"):
                        self.f.attacker_ok += 1
            except (OSError, asyncio.TimeoutError, EOFError):
                self.f.attacker_refused += 1
                await asyncio.sleep(0.01)
            finally:
                if w is not None:
                    w.close()

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.f.rss_peak_kib = max(self.f.rss_peak_kib, rss_kib(self.pid))
                self.f.fds_peak = max(self.f.fds_peak, fd_count(self.pid))
            except OSError:
                pass
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def main(self) -> Figures:
        self.f.rss_start_kib = rss_kib(self.pid)
        self.f.fds_start = fd_count(self.pid)
        start = time.monotonic()
        self.deadline = start + self.duration
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(stop))
        attackers = [asyncio.create_task(self.attacker(i)) for i in range(self.attackers)]
        await asyncio.gather(*(self.client(u) for u in self.mail))
        self.f.seconds = time.monotonic() - start
        for a in attackers:
            a.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
        stop.set()
        await sampler
        return self.f


def run(port: int, pid: int, mail: dict[str, list[bytes]], secret: str, duration: float,
        **kw) -> Figures:
    return asyncio.run(Load(port, pid, mail, secret, duration, **kw).main())


def settle_fds(pid: int, target: int, timeout: float = 15.0) -> int:
    """Waits until the server's descriptor count is back to `target` (sessions
    closing); returns the last count seen."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n > target and time.monotonic() < deadline:
        time.sleep(0.1)
        n = fd_count(pid)
    return n


def raise_nofile(want: int = 16384) -> int:
    """Raises RLIMIT_NOFILE of this process (and so of the server it starts)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    new_soft = max(soft, want)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    return new_soft
