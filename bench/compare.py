#!/usr/bin/env python3
"""Side-by-side POP3 benchmark: `apop serve` against Dovecot (issue 7).

    bench/compare.py --apop build/release/apop [--quick] [--json OUT] [--only 1,2,...]
    bench/compare.py --only 7 --tls-key rsa4096 --apop-variants "w1=--workers 1" "w2=--workers 2"
    bench/compare.py --only 1,7 --apop-baseline /path/to/old/apop

Builds identical users and identical Maildirs (hard links of one set of files)
for apop and for two Dovecot instances -- Dovecot's stock process model and a
tuned one (long-lived login and pop3 processes: service_count = 0,
process_min_avail = number of cores) -- starts all three on loopback and
drives them with `apop bench`, the same workload for each, then prints a table
with the figures and the ratio apop : tuned Dovecot. docs/performance.md
describes the method and records the latest full run.

Server CPU is utime+stime of every process of the server's process tree read
from /proc/PID/stat before and after a run, plus the master's cutime+cstime
(children that exited meanwhile: Dovecot's per-session processes). Memory is
the sum of Pss over the tree from /proc/PID/smaps_rollup.

Test 7 runs implicit-TLS sessions (handshake, APOP, STAT, QUIT) against the same
servers and against the TLS cost floor (bench/tls_floor.cpp: apop's TLS context and
canned replies), with a certificate this script makes (--tls-key). More apop servers can
run in the same tests: variants of the flags of `apop serve` (--apop-variants, e.g. a
scaling measurement) and another binary (--apop-baseline, e.g. the previous release); the
table then has a column for each and their ratios.

Test 8 (bench/fetch_accounts.py) is `apop fetch --config` against fetchmail: many accounts
on one `apop serve` delivered into Dovecot's LMTP, one poll each, timed; then the same accounts
into an LMTP server that answers 451 to every third message, polled until all arrived (no
loss, no duplicate). With --only 8 nothing else is set up.

Test 9 (bench/lmtp_postfix.py) is Postfix delivering over LMTP into apop serve and into
Dovecot's LMTP: messages/s and server CPU per message, end to end and delivery only (as
root; skipped, and said so, without Postfix or root). Like test 8 it sets up its own servers.

Sizes come from flags or the environment (BENCH_<NAME>, e.g. BENCH_BIG=1000);
--quick selects tiny ones for a smoke run (CI: tests/interop/test_bench_compare.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))

from dovecot import DOVECOT, Dovecot, dovecot_available, free_port  # noqa: E402

import fetch_accounts  # noqa: E402  (bench/: the script's own directory is on sys.path)
import lmtp_postfix  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

# name: (full, quick, help)
SIZES = {
    "duration": (10.0, 1.0, "seconds each sessions/s run lasts"),
    "users": (100, 8, "users with a small mailbox (>= concurrency of the sessions/s run)"),
    "small_messages": (10, 3, "messages in each small mailbox"),
    "concurrency": (64, 4, "the high-concurrency sessions/s run"),
    "retr_messages": (1000, 20, "messages downloaded in the RETR run"),
    "retr_size": (100_000, 20_000, "octets per message in the RETR run"),
    "idle": (1000, 8, "idle logged-in sessions for the memory run"),
    "big": (100_000, 500, "messages in the big mailbox"),
    "big_later": (3, 2, "later logins measured on the big mailbox"),
    "fetch": (2000, 20, "messages of the fetch run"),
    "apop_idle": (10_000, 16, "idle sessions against apop alone (logged in: as many as there "
                              "are users, the others before login)"),
    "tls_concurrency": (48, 4, "the high-concurrency implicit-TLS sessions/s run (test 7)"),
    "tls_duration": (10.0, 0.5, "seconds each implicit-TLS sessions/s run lasts (test 7)"),
    "fetch_accounts": (100, 6, "accounts polled by apop fetch --config and fetchmail (test 8)"),
    "fetch_account_messages": (20, 6, "messages per account (test 8)"),
    "fetch_max_parallel": (4, 4, "max_parallel of apop fetch --config (test 8; apop's default)"),
    "lmtp_messages": (10_000, 50, "messages Postfix delivers over LMTP into each server "
                                  "(test 9)"),
    "fetch_rtt_ms": (0.0, 0.0, "round trip (ms) to apop serve through a delaying relay (test 8; "
                               "0: loopback)"),
}

# --tls-key: the key of the certificate every server gets (openssl req -newkey ...).
TLS_KEYS = {
    "rsa2048": ["-newkey", "rsa:2048"],
    "rsa4096": ["-newkey", "rsa:4096"],
    "ec256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
}

TESTS = range(1, 10)


def log(msg: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# /proc accounting
# --------------------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is None:
            continue
        children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of the process tree: live processes plus reaped children of the root."""
    total = 0
    for pid in tree_pids(root):
        f = _stat_fields(pid)
        if f is None:
            continue
        # fields after comm start at index 0 = state; utime is field 14 -> index 11
        total += int(f[11]) + int(f[12])
        if pid == root:
            total += int(f[13]) + int(f[14])
    return total / CLK_TCK


def tree_tasks(root: int) -> dict:
    """Processes and threads of the tree."""
    procs = threads = 0
    for pid in tree_pids(root):
        try:
            threads += len(os.listdir(f"/proc/{pid}/task"))
            procs += 1
        except OSError:
            pass
    return {"processes": procs, "threads": threads}


def tree_mem(root: int) -> dict:
    """Pss and Rss (KiB) summed over the tree, and the process count."""
    pss = rss = n = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
            n += 1
        except OSError:
            pass
    return {"pss_kib": pss, "rss_kib": rss, "processes": n}


# --------------------------------------------------------------------------------------
# Mail and users
# --------------------------------------------------------------------------------------

SEQ = [0]


def message(i: int, size: int) -> bytes:
    head = (f"From: Sender {i} <sender{i}@example.org>\n"
            f"To: <user@example.org>\n"
            f"Subject: benchmark message {i}\n"
            f"Message-ID: <bench.{i}@example.org>\n"
            f"Date: Thu, 02 Jan 2025 10:00:00 +0000\n\n").encode()
    line = (b"The quick brown fox jumps over the lazy dog; " * 2)[:75] + b"\n"
    body = bytearray()
    while len(head) + len(body) + len(line) <= size:
        body += line
    body += b"x" * max(0, size - len(head) - len(body) - 1) + b"\n"
    return head + bytes(body)


def write_maildir(path: str, count: int, size: int, sizes_vary: bool = False) -> None:
    """count messages in cur/ named like Dovecot's deliveries (S= and W= sizes)."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    t = 1735812000
    for i in range(count):
        sz = size if not sizes_vary else max(600, size // 2 + (i * 7919) % size)
        data = message(i, sz)
        SEQ[0] += 1
        vsize = len(data) + data.count(b"\n")
        name = f"{t + i}.M{SEQ[0]}P4242.bench,S={len(data)},W={vsize}:2,"
        with open(os.path.join(path, "cur", name), "wb") as f:
            f.write(data)


def link_tree(src: str, dst: str) -> None:
    """Fills dst (created when missing) with a copy of src's tree whose files are hard
    links (cp -al)."""
    os.makedirs(dst, exist_ok=True)
    subprocess.run(["cp", "-al", src + "/.", dst], check=True)


def chown_tree(path: str, uid: int, gid: int) -> None:
    subprocess.run(["chown", "-R", f"{uid}:{gid}", path], check=True)


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------

def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_bench_cert(directory: str, kind: str) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 with a key of `kind` (TLS_KEYS)."""
    cert = os.path.join(directory, f"bench-{kind}-cert.pem")
    key = os.path.join(directory, f"bench-{kind}-key.pem")
    subprocess.run(["openssl", "req", "-x509", *TLS_KEYS[kind], "-nodes", "-keyout", key,
                    "-out", cert, "-days", "30", "-subj", "/CN=localhost/O=bench",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def wait_port(port: int, timeout: float = 20, proc: subprocess.Popen | None = None,
              log_path: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            if log_path:
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-1500:]
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before listening on "
                               f"{port}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class LocalServer:
    """A server process this script started: its pid, and stop()."""
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class ApopServer(LocalServer):
    """`apop serve` of one binary with extra flags: the apop under test ("apop"), a variant
    of its flags ("apop:NAME", --apop-variants) or another binary ("apop-baseline")."""

    def __init__(self, apop: str, data: str, cert: str, key: str, root: str,
                 name: str = "apop", flags: list[str] | None = None):
        self.apop, self.data, self.cert, self.key = apop, data, cert, key
        self.name = name
        self.flags = list(flags or [])
        self.port = self.tls_port = 0
        self.ca = cert
        self.log_path = os.path.join(root, name.replace(":", "-") + "-serve.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ApopServer":
        self.port, self.tls_port = free_port(), free_port()
        argv = [self.apop, "serve", "--data", self.data,
                "--listen", f"127.0.0.1:{self.port}", "--tls-listen", f"127.0.0.1:{self.tls_port}",
                "--tls-cert", self.cert, "--tls-key", self.key,
                "--max-connections", "0", "--max-connections-per-address", "0",
                "--max-sessions-per-user", "0", "--auth-failure-delay-ms", "0",
                "--block-after-failures", "0", "--login-timeout", "3600",
                "--login-deadline", "3600", *self.flags]
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, preexec_fn=raise_nofile,
                                     start_new_session=True)
        try:
            wait_port(self.port, proc=self.proc, log_path=self.log_path)
            wait_port(self.tls_port, proc=self.proc, log_path=self.log_path)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc:
            super().stop()
            self.logf.close()


def build_floor(source: str, libs: list[str], root: str, cache: str) -> str:
    """Compiles bench/SOURCE (-O2) once per version of its text and of the compiler: the
    binary is kept in the cache directory (else in the run's tree)."""
    cxx = shutil.which("c++") or shutil.which("g++")
    path = os.path.join(REPO, "bench", source)
    h = hashlib.sha256()
    for part in (path, os.path.join(REPO, "bench", "floor_listen.hpp")):
        with open(part, "rb") as f:
            h.update(f.read())
    h.update(subprocess.run([cxx, "--version"], stdout=subprocess.PIPE).stdout)
    h.update(" ".join(libs).encode())
    where = cache or root
    os.makedirs(where, mode=0o700, exist_ok=True)
    binary = os.path.join(where, f"{source.rsplit('.', 1)[0]}-{h.hexdigest()[:16]}")
    if not os.path.exists(binary):
        tmp = f"{binary}.tmp{os.getpid()}"
        subprocess.run([cxx, "-O2", "-std=c++20", "-o", tmp, path, *libs], check=True)
        os.rename(tmp, binary)
    return binary


class FloorServer(LocalServer):
    """bench/pop3_floor.cpp: canned replies over the same TCP exchange, no work at all --
    what the kernel charges any server per session on this machine (test 1)."""
    name = "floor"

    def __init__(self, root: str, cache: str = ""):
        self.root, self.cache = root, cache
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "FloorServer":
        self.bin = build_floor("pop3_floor.cpp", [], self.root, self.cache)
        self.port = free_port()
        self.proc = subprocess.Popen([self.bin, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port)
        return self


class TlsFloorServer(FloorServer):
    """bench/tls_floor.cpp: apop's TLS context and certificate, the same handshakes and
    canned replies, no other work -- what OpenSSL and the kernel charge per implicit-TLS
    session (test 7)."""
    name = "floor"

    def __init__(self, root: str, cert: str, key: str, cache: str = ""):
        super().__init__(root, cache)
        self.cert, self.key = cert, key

    @property
    def tls_port(self) -> int:
        return self.port

    def start(self) -> "TlsFloorServer":
        self.bin = build_floor("tls_floor.cpp", ["-lssl", "-lcrypto"], self.root, self.cache)
        self.port = free_port()
        self.proc = subprocess.Popen([self.bin, str(self.port), self.cert, self.key],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.port, proc=self.proc)
        return self


class BenchDovecot(Dovecot):
    """Dovecot with limits raised for the benchmark; tuned adds long-lived processes. Its
    TLS listeners (STLS and pop3s) use the benchmark's certificate."""

    def __init__(self, tuned: bool, cert: str, key: str, **kw):
        extra = ("default_process_limit = 5000\n"
                 "default_client_limit = 10000\n"
                 "default_vsz_limit = 1G\n"
                 "mail_max_userip_connections = 100000\n")
        super().__init__(stls=True, implicit_tls=True, extra_config=extra, **kw)
        self.tuned = tuned
        self.name = "dovecot-tuned" if tuned else "dovecot-stock"
        self.bench_cert, self.bench_key = cert, key

    def _config(self) -> str:
        # Dovecot.start() made a certificate of its own: serve the benchmark's instead.
        self.cert, self.key = self.bench_cert, self.bench_key
        conf = super()._config()
        if self.tuned:
            conf = conf.replace(
                "service pop3-login {\n",
                "service pop3-login {\n  service_count = 0\n"
                f"  process_min_avail = {NCPU}\n  client_limit = 10000\n", 1)
            conf += ("service pop3 {\n  service_count = 0\n"
                     f"  process_min_avail = {NCPU}\n}}\n")
        return conf

    def start(self):
        raise_nofile()
        return super().start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ca(self) -> str:
        return self.cert


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------

class Compare:
    def __init__(self, args):
        self.a = args
        self.apop = os.path.abspath(args.apop)
        self.root = tempfile.mkdtemp(prefix="apop-compare-", dir=args.workdir)
        self.sizes = {k: args.sizes[k] for k in SIZES}
        self.results: dict = {"sizes": self.sizes, "machine": machine(), "rows": []}
        self.servers: list = []
        self.only = args.only
        self.results["failures"] = []
        self.results["tls_key"] = args.tls_key

    def problem(self, msg: str) -> None:
        """Something did not run as it should: logged, and listed in the results."""
        self.results["failures"].append(msg)
        log("PROBLEM: " + msg)

    # -- setup --------------------------------------------------------------------------
    def setup(self) -> None:
        s = self.sizes
        t0 = time.monotonic()
        self.users = [(f"u{i:05d}", f"bench-Secret-{i:05d}-xq") for i in
                      range(max(s["users"], s["idle"]))]
        self.dovecot_users = self.users
        log(f"making the certificate ({self.a.tls_key})")
        self.cert, self.key = make_bench_cert(self.root, self.a.tls_key)
        if os.getuid() == 0:
            os.chmod(self.key, 0o644)  # Dovecot's unprivileged login processes read it at start
        self.accounts = os.path.join(self.root, "accounts")
        with open(self.accounts, "w") as f:
            for u, p in self.users:
                f.write(f"{u} {p}\n")
        self.special = {"retr": "bench-Retr-Secret-77", "big": "bench-Big-Secret-88",
                        "fetch": "bench-Fetch-Secret-99"}
        for name, secret in self.special.items():
            with open(os.path.join(self.root, f"acct-{name}"), "w") as f:
                f.write(f"{name} {secret}\n")
        # One set of Maildirs, hard-linked into each server's tree.
        master = os.path.join(self.root, "maildirs")
        log(f"writing Maildirs ({len(self.users)} small, retr {s['retr_messages']}, "
            f"big {s['big']}, fetch {s['fetch']})")
        small = os.path.join(self.root, "small-template")
        write_maildir(small, s["small_messages"], 4000, sizes_vary=True)
        for u, _ in self.users:
            link_tree(small, os.path.join(master, u))
        write_maildir(os.path.join(master, "retr"), s["retr_messages"], s["retr_size"])
        write_maildir(os.path.join(master, "big"), s["big"], 2000, sizes_vary=True)
        write_maildir(os.path.join(master, "fetch"), s["fetch"], 8000, sizes_vary=True)
        # apop: users and Maildirs.
        self.apop_data = os.path.join(self.root, "apop-data")
        self.apop_users(self.users + list(self.special.items()))
        for name in os.listdir(master):
            link_tree(os.path.join(master, name), os.path.join(self.apop_data, "mail", name))
        self.master = master
        # The other apop servers (variants, baseline): a copy of the data directory each
        # (their own database file and key), the Maildirs hard-linked again.
        self.other_apop_data = {}
        for name, _, _ in self.other_apops():
            self.other_apop_data[name] = self.copy_apop_data(name)
        log(f"setup took {time.monotonic() - t0:.1f} s")

    def other_apops(self) -> list[tuple[str, str, list[str]]]:
        """(name, binary, serve flags) of every apop server besides the main one: the
        variants after the first (--apop-variants; the first is the main one) and the
        baseline binary (--apop-baseline)."""
        out = [(f"apop:{n}", self.apop, self.a.apop_flags + f) for n, f in self.a.variants[1:]]
        if self.a.apop_baseline:
            out.append(("apop-baseline", os.path.abspath(self.a.apop_baseline),
                        self.a.apop_baseline_flags))
        return out

    def copy_apop_data(self, name: str) -> str:
        dst = os.path.join(self.root, "apop-data-" + name.replace(":", "-"))
        os.makedirs(dst, mode=0o700)
        for entry in os.listdir(self.apop_data):
            src = os.path.join(self.apop_data, entry)
            if entry == "mail":
                link_tree(src, os.path.join(dst, entry))
            elif os.path.isdir(src):
                shutil.copytree(src, os.path.join(dst, entry), symlinks=True)
            else:
                shutil.copy2(src, os.path.join(dst, entry))
        return dst

    def apop_users(self, users) -> None:
        """Creates the users in apop's data directory, or copies them from the cache: 10,000
        `apop user add` runs (scrypt, SCRAM verifiers, fsync) take minutes on two cores."""
        key = hashlib.sha256("\n".join(f"{u} {p}" for u, p in users).encode()).hexdigest()[:16]
        cache = os.path.join(self.a.cache, key) if self.a.cache else None
        os.makedirs(self.apop_data, mode=0o700, exist_ok=True)
        if cache and os.path.isfile(os.path.join(cache, "done")):
            log(f"{len(users)} apop users from the cache {cache}")
            for name in os.listdir(cache):
                if name != "done":
                    shutil.copy2(os.path.join(cache, name), os.path.join(self.apop_data, name))
            return
        log(f"creating {len(users)} apop users")
        self.add_apop_users(users)
        if cache:
            os.makedirs(cache, mode=0o700, exist_ok=True)
            for name in os.listdir(self.apop_data):
                path = os.path.join(self.apop_data, name)
                if os.path.isfile(path):
                    shutil.copy2(path, os.path.join(cache, name))
            open(os.path.join(cache, "done"), "w").close()

    def add_apop_users(self, users) -> None:
        # One `apop user add` per user; in parallel batches (the store serialises writes).
        procs: list[subprocess.Popen] = []
        for u, p in users:
            pr = subprocess.Popen([self.apop, "user", "add", "--data", self.apop_data, u,
                                   "--password-stdin"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            pr.stdin.write(p.encode() + b"\n")
            pr.stdin.close()
            procs.append(pr)
            if len(procs) >= 8:
                self._reap(procs.pop(0))
        for pr in procs:
            self._reap(pr)

    @staticmethod
    def _reap(pr: subprocess.Popen) -> None:
        err = pr.stderr.read()
        if pr.wait() != 0:
            raise RuntimeError(f"apop user add failed: {err.decode(errors='replace')}")

    def start_dovecot(self, tuned: bool) -> BenchDovecot:
        dv = BenchDovecot(tuned, self.cert, self.key)
        for u, p in self.dovecot_users:
            dv.add_user(u, p)
        for name, secret in self.special.items():
            dv.add_user(name, secret)
        for name in [u for u, _ in self.dovecot_users] + list(self.special):
            link_tree(os.path.join(self.master, name), os.path.join(dv.root, "mail", name))
        if os.getuid() == 0:
            chown_tree(os.path.join(dv.root, "mail"), dv.mail_uid, dv.mail_gid)
        dv.start()
        return dv

    # -- running apop bench ----------------------------------------------------------------
    def bench(self, port: int, *args: str, tls: bool = False, accounts: str | None = None,
              timeout: float = 900, ca: str | None = None, insecure: bool = False) -> dict:
        argv = [self.apop, "bench", f"127.0.0.1:{port}", "--accounts", accounts or self.accounts,
                "--json", *args]
        if tls and insecure:
            argv += ["--tls", "--insecure"]
        elif tls:
            argv += ["--tls", "--ca-file", ca or self.cert]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if p.returncode not in (0, 2):
            raise RuntimeError(f"apop bench failed ({p.returncode}): {p.stderr.decode()}")
        return json.loads(p.stdout)

    def measured(self, server, port: int, *args: str, **kw) -> tuple[dict, float]:
        c0 = tree_cpu(server.pid)
        r = self.bench(port, *args, **kw)
        time.sleep(0.3)  # let exiting Dovecot processes be reaped into the master's cutime
        return r, tree_cpu(server.pid) - c0

    def hold_sessions(self, server, port: int, n: int, unauthenticated: int = 0) -> dict:
        """n logged-in idle sessions (plus `unauthenticated` ones that only read the greeting),
        all held at once; returns the memory of the server tree while they are held."""
        runs = [("stat", n, ["--workload", "stat"])]
        if unauthenticated:
            runs.append(("none", unauthenticated, ["--auth", "none"]))
        before = tree_mem(server.pid)
        procs = []
        for _, count, extra in runs:
            argv = [self.apop, "bench", f"127.0.0.1:{port}", "--accounts", self.accounts,
                    "--json", *extra, "--sessions", str(count), "--concurrency", str(count),
                    "--hold", "3600", "--timeout", "300"]
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=raise_nofile)
            lines: list[str] = []
            seen = threading.Event()

            def reader(p=p, lines=lines, seen=seen):
                for line in p.stderr:
                    lines.append(line)
                    if "holding" in line:
                        seen.set()
                seen.set()  # EOF: the run ended without holding

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            procs.append((p, lines, seen, th))
        deadline = time.monotonic() + max(120, (n + unauthenticated) / 5)
        for _, _, seen, _ in procs:
            seen.wait(max(1, deadline - time.monotonic()))
        time.sleep(1.0)
        during = tree_mem(server.pid)
        out = {"before": before, "during": during, "held": [], "reports": [], "stderr": ""}
        for p, lines, _, th in procs:
            p.send_signal(signal.SIGINT)
        for p, lines, _, th in procs:
            text = p.stdout.read()
            p.wait(300)
            th.join(5)
            out["held"].append(next((l.strip() for l in lines if "holding" in l), None))
            out["reports"].append(json.loads(text) if text.strip() else {})
            out["stderr"] += "".join(lines)[-500:]
        out["failed"] = sum(r.get("sessions_failed", 0) for r in out["reports"])
        out["ok"] = all(out["held"]) and out["failed"] == 0
        out["peak"] = sum(r.get("peak_in_flight", 0) for r in out["reports"])
        out["errors"] = [r.get("errors") for r in out["reports"]]
        return out

    # -- the table --------------------------------------------------------------------------
    def row(self, test: str, metric: str, values: dict, better: str, unit: str = "",
            target: str = "") -> None:
        """values: server name -> number or None. better: 'higher' or 'lower'. ratio is
        apop : tuned Dovecot (what `target` is about); ratios holds every ratio the table
        shows (ratio_pairs)."""
        ratios = {}
        for num, den in ratio_pairs(values):
            a, b = values.get(num), values.get(den)
            if a is not None and b is not None and a > 0 and b > 0:
                ratios[f"{num}/{den}"] = a / b
        self.results["rows"].append({"test": test, "metric": metric, "unit": unit,
                                     "values": values, "better": better,
                                     "ratio": ratios.get("apop/dovecot-tuned"),
                                     "ratios": ratios, "target": target})
        log(f"{test} {metric}: {values}")

    def wanted(self, n: int) -> bool:
        return not self.only or n in self.only

    def run(self) -> dict:
        s = self.sizes
        self.setup()
        main_flags = self.a.apop_flags + (self.a.variants[0][1] if self.a.variants else [])
        apop = ApopServer(self.apop, self.apop_data, self.cert, self.key, self.root,
                          flags=main_flags).start()
        self.servers.append(apop)
        servers = [apop]
        self.results["apop_servers"] = {"apop": {"binary": self.apop, "flags": main_flags,
                                                 "variant": (self.a.variants[0][0]
                                                             if self.a.variants else None)}}
        for name, binary, flags in self.other_apops():
            log(f"starting {name}: {binary} serve ... {' '.join(flags)}")
            srv = ApopServer(binary, self.other_apop_data[name], self.cert, self.key, self.root,
                             name=name, flags=flags)
            self.servers.append(srv)
            srv.start()
            servers.append(srv)
            self.results["apop_servers"][name] = {"binary": binary, "flags": flags,
                                                  "variant": name[5:] if name.startswith(
                                                      "apop:") else None}
        if self.a.dovecot:
            for tuned in (False, True):
                log(f"starting {'tuned' if tuned else 'stock'} Dovecot")
                dv = self.start_dovecot(tuned)
                self.servers.append(dv)
                servers.append(dv)
        time.sleep(1.0)
        self.results["versions"] = versions(self.apop)
        if self.a.apop_baseline:
            self.results["versions"]["apop-baseline"] = versions(
                os.path.abspath(self.a.apop_baseline), dovecot=False).get("apop")

        def port(srv, tls=False):
            return srv.tls_port if tls else srv.port

        # (1) sessions/s: connect, APOP, STAT, QUIT.
        if self.wanted(1):
            floor = FloorServer(self.root, self.a.cache).start()
            self.servers.append(floor)
            self.results["floor"] = {}
            for conc in (1, s["concurrency"]):
                r, c = self.measured(floor, floor.port, "--workload", "stat", "--sessions", "0",
                                     "--duration", str(s["duration"]), "--concurrency", str(conc))
                ok = r["sessions_ok"]
                self.results["floor"][str(conc)] = {
                    "sessions_per_s": r["sessions_per_s"],
                    "cpu_per_session_us": c / ok * 1e6 if ok else None}
                log(f"1. floor c={conc}: {self.results['floor'][str(conc)]}")
                rate = {"floor": r["sessions_per_s"]}
                cpu = {"floor": c / ok * 1e6 if ok else None}
                p99 = {"floor": r["latency_ms"]["session"]["p99"]}
                for srv in servers:
                    r, c = self.measured(srv, port(srv), "--workload", "stat", "--sessions", "0",
                                         "--duration", str(s["duration"]),
                                         "--concurrency", str(conc))
                    ok = r["sessions_ok"]
                    rate[srv.name] = r["sessions_per_s"]
                    cpu[srv.name] = c / ok * 1e6 if ok else None
                    p99[srv.name] = r["latency_ms"]["session"]["p99"]
                    if r["sessions_failed"]:
                        self.problem(f"1 c={conc} {srv.name}: {r['sessions_failed']} failed: "
                                     f"{r['errors']} {r['error_samples']}")
                self.row(f"1. APOP+STAT c={conc}", "sessions/s", rate, "higher", "/s")
                self.row(f"1. APOP+STAT c={conc}", "server CPU per session", cpu, "lower", "us",
                         "<= 1/10" if conc > 1 else "")
                self.row(f"1. APOP+STAT c={conc}", "session p99", p99, "lower", "ms")

        # (2) RETR throughput, plain and TLS.
        if self.wanted(2):
            acct = os.path.join(self.root, "acct-retr")
            for tls in (False, True):
                mbs, cpu = {}, {}
                for srv in servers:
                    r, c = self.measured(srv, port(srv, tls), "--workload", "retr", "--sessions",
                                         "1", "--concurrency", "1", tls=tls, accounts=acct,
                                         ca=srv.ca)
                    if r["messages"] != s["retr_messages"]:
                        self.problem(f"2 {srv.name}: {r['messages']} messages, errors "
                                     f"{r['errors']} {r['error_samples']}")
                    mb = r["bytes_received"] / 1e6
                    mbs[srv.name] = r["mb_per_s"]
                    cpu[srv.name] = c / mb * 1e3 if mb else None
                label = "TLS" if tls else "plain"
                self.row(f"2. RETR {s['retr_messages']}x{s['retr_size'] // 1000}KB {label}",
                         "MB/s", mbs, "higher", "MB/s")
                self.row(f"2. RETR {s['retr_messages']}x{s['retr_size'] // 1000}KB {label}",
                         "server CPU per MB", cpu, "lower", "ms", "<= 1/4" if tls else "<= 1/2")

        # (3) memory with idle logged-in sessions.
        if self.wanted(3):
            n = s["idle"]
            total, per, held = {}, {}, {}
            for srv in servers:
                m = self.hold_sessions(srv, port(srv), n)
                total[srv.name] = m["during"]["pss_kib"] / 1024
                per[srv.name] = ((m["during"]["pss_kib"] - m["before"]["pss_kib"]) / n
                                 if n else None)
                if not m["ok"]:
                    self.problem(f"3 {srv.name}: held={m['held']} errors={m['errors']} "
                                 f"{m['stderr']}")
                log(f"  {srv.name}: {m['during']['processes']} processes, peak {m['peak']} "
                    f"in flight")
            self.row(f"3. {n} idle sessions", "total PSS", total, "lower", "MiB")
            self.row(f"3. {n} idle sessions", "PSS per session", per, "lower", "KiB", "<= 1/20")

        # (4) login + STAT on the big mailbox, first and later.
        if self.wanted(4):
            acct = os.path.join(self.root, "acct-big")
            first, later = {}, {}
            for srv in servers:
                if isinstance(srv, ApopServer):
                    # A fresh server: whatever apop keeps in memory is gone.
                    srv.stop()
                    srv.start()
                times = []
                for i in range(1 + s["big_later"]):
                    r = self.bench(port(srv), "--workload", "stat", "--sessions", "1",
                                   "--timeout", "600", accounts=acct)
                    lat = r["latency_ms"]
                    if r["sessions_failed"]:
                        self.problem(f"4 {srv.name}: big mailbox failed: {r['errors']} "
                                     f"{r['error_samples']}")
                        times.append(None)
                        continue
                    times.append(lat["connect"]["max"] + lat["auth"]["max"] + lat["STAT"]["max"])
                first[srv.name] = times[0]
                rest = [t for t in times[1:] if t is not None]
                later[srv.name] = statistics.median(rest) if rest else None
            self.row(f"4. login+STAT {s['big']} msgs", "first login", first, "lower", "ms",
                     "faster")
            self.row(f"4. login+STAT {s['big']} msgs", "later login (median)", later, "lower",
                     "ms", "faster")

        # (7) implicit-TLS sessions/s: connect, TLS handshake, APOP, STAT, QUIT, against the
        # servers and the TLS cost floor. The client does not verify the certificate: the
        # server's work is the same, the client's (on the same cores) smaller.
        if self.wanted(7):
            floor = TlsFloorServer(self.root, self.cert, self.key, self.a.cache).start()
            self.servers.append(floor)
            self.results["tls_floor"] = {}
            # A few unmeasured sessions first: OpenSSL sets up its algorithms (provider
            # fetches, tables) on a process's first handshakes, Dovecot's login processes
            # on their first TLS connection; at the short durations of --quick that
            # start-up would count as a per-session cost.
            for srv in [floor] + servers:
                self.bench(srv.tls_port, "--workload", "stat", "--sessions", "8",
                           "--concurrency", "2", tls=True, insecure=True)
            for conc in sorted({1, s["tls_concurrency"]}):
                rate, cpu, p99 = {}, {}, {}
                for srv in [floor] + servers:
                    r, c = self.measured(srv, srv.tls_port, "--workload", "stat", "--sessions",
                                         "0", "--duration", str(s["tls_duration"]),
                                         "--concurrency", str(conc), tls=True, insecure=True)
                    ok = r["sessions_ok"]
                    rate[srv.name] = r["sessions_per_s"]
                    cpu[srv.name] = c / ok * 1e6 if ok else None
                    p99[srv.name] = r["latency_ms"]["session"]["p99"]
                    if r["sessions_failed"]:
                        self.problem(f"7 c={conc} {srv.name}: {r['sessions_failed']} failed: "
                                     f"{r['errors']} {r['error_samples']}")
                self.results["tls_floor"][str(conc)] = {"sessions_per_s": rate["floor"],
                                                        "cpu_per_session_us": cpu["floor"]}
                test = f"7. TLS APOP+STAT c={conc}"
                self.row(test, "sessions/s", rate, "higher", "/s")
                self.row(test, "server CPU per session", cpu, "lower", "us", "<= 1/4")
                self.row(test, "session p99", p99, "lower", "ms")

        # (5) apop fetch against fetchmail, same server (apop serve).
        if self.wanted(5):
            self.results["fetch"] = self.fetch_race(apop)

        # (6) 10,000 idle sessions against apop alone.
        if self.wanted(6):
            n = s["apop_idle"]
            # One account per logged-in session (apop locks maildrops): as many as there are
            # users; the rest connect and wait before login.
            logged = min(n, len(self.users))
            m = self.hold_sessions(apop, apop.port, logged, unauthenticated=n - logged)
            self.results["apop_idle"] = {
                "sessions": n, "logged_in": logged, "held": m["held"], "peak_in_flight": m["peak"],
                "failed": m["failed"], "errors": m["errors"],
                "pss_mib": m["during"]["pss_kib"] / 1024, "rss_mib": m["during"]["rss_kib"] / 1024,
                "pss_before_mib": m["before"]["pss_kib"] / 1024}
            log(f"6. {n} idle: {self.results['apop_idle']}")
            if not m["ok"]:
                self.problem(f"6: held={m['held']} errors={m['errors']} {m['stderr']}")
        # What each apop server ran as at the end (a variant's flags may change it:
        # --auth-threads, --workers).
        for srv in servers:
            if isinstance(srv, ApopServer) and srv.proc is not None:
                self.results["apop_servers"][srv.name].update(tree_tasks(srv.pid))
        return self.results

    def fetch_race(self, apop: ApopServer) -> dict:
        n = self.sizes["fetch"]
        secret = self.special["fetch"]
        out: dict = {"messages": n}
        pwfile = os.path.join(self.root, "fetch-pw")
        with open(pwfile, "w") as f:
            f.write(secret + "\n")
        os.chmod(pwfile, 0o600)
        runs = {}
        # apop fetch into a Maildir (its normal use), and into the same MDA fetchmail uses.
        for label, dest in (("apop fetch -> maildir", "maildir"), ("apop fetch -> mda", "mda")):
            d = tempfile.mkdtemp(dir=self.root, prefix="fetch-")
            to = (f"maildir:{d}/Maildir" if dest == "maildir"
                  else f"mda:/bin/sh -c 'cat > {d}/msg.$$'")
            argv = [self.apop, "fetch", f"pop3://fetch@127.0.0.1:{apop.port}", "--to", to,
                    "--password-file", pwfile, "--auth", "apop", "--tls", "none", "--keep",
                    "--state", os.path.join(d, "state"), "--json"]
            t = time.monotonic()
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
            runs[label] = time.monotonic() - t
            got = count_files(d) - 1  # minus the state file
            if p.returncode != 0 or got < n:
                self.problem(f"5 {label}: exit {p.returncode}, {got} files: "
                             f"{p.stderr.decode()[-400:]}")
        # fetchmail with an MDA (it has no Maildir writer of its own).
        d = tempfile.mkdtemp(dir=self.root, prefix="fetchmail-")
        rc = os.path.join(d, "fetchmailrc")
        with open(rc, "w") as f:
            f.write("set no syslog\nset invisible\n"
                    f"poll 127.0.0.1 protocol APOP service {apop.port} uidl\n"
                    f'  user "fetch" there with password "{secret}" is "root" here\n'
                    '  keep no rewrite sslproto ""\n'
                    f"  mda \"/bin/sh -c 'cat > {d}/msg.$$'\"\n")
        os.chmod(rc, 0o600)
        env = dict(os.environ, HOME=d, LC_ALL="C")
        t = time.monotonic()
        p = subprocess.run(["fetchmail", "-f", rc, "-i", os.path.join(d, "ids"), "--nosyslog",
                            "--nodetach"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, cwd=d, timeout=900)
        runs["fetchmail -> mda"] = time.monotonic() - t
        got = len([x for x in os.listdir(d) if x.startswith("msg.")])
        if p.returncode != 0 or got != n:
            self.problem(f"5 fetchmail: exit {p.returncode}, {got} messages: "
                         f"{p.stdout.decode()[-400:]}")
        out["wall_s"] = runs
        fm = runs["fetchmail -> mda"]
        out["speedup"] = {k: fm / v for k, v in runs.items() if k.startswith("apop") and v > 0}
        log(f"5. fetch: {out}")
        return out

    def cleanup(self) -> None:
        for srv in self.servers:
            try:
                if isinstance(srv, Dovecot):
                    srv.cleanup()
                else:
                    srv.stop()
            except Exception as e:  # noqa: BLE001 - best effort
                log(f"cleanup: {e}")
        if not self.a.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def default_workdir() -> str | None:
    """/dev/shm (tmpfs): creating 10,000 users is fsync-bound on a disk, and both servers
    then read and write their files at memory speed, so the figures measure the servers,
    not the disk."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 2 * 1024**3 and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return None


def count_files(d: str) -> int:
    return sum(len(files) for _, _, files in os.walk(d))


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": NCPU, "memory": mem, "kernel": platform.release(),
            "load_before": os.getloadavg()}


def versions(apop: str, dovecot: bool = True) -> dict:
    out = {}
    try:
        out["apop"] = subprocess.run([apop, "--version"], stdout=subprocess.PIPE,
                                     text=True).stdout.strip()
    except OSError:
        pass
    if dovecot and dovecot_available():
        out["dovecot"] = subprocess.run([DOVECOT, "--version"], stdout=subprocess.PIPE,
                                        text=True).stdout.strip()
    return out


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"
    return str(v)


def verdict(row) -> str:
    t, r = row["target"], row["ratio"]
    if not t or r is None:
        return ""
    if t == "faster":
        return "met" if r < 1 else "NOT met"
    if t.startswith("<= 1/"):
        return "met" if r <= 1 / float(t[5:]) else "NOT met"
    return ""


def server_rank(name: str) -> tuple:
    """Column order: apop, its variants, the baseline binary, the floor, Dovecot."""
    order = ["apop", "apop:", "apop-baseline", "floor", "dovecot-stock", "dovecot-tuned"]
    key = "apop:" if name.startswith("apop:") else name
    return (order.index(key) if key in order else len(order), name)


def short(name: str) -> str:
    return {"apop-baseline": "baseline", "dovecot-stock": "dovecot stock",
            "dovecot-tuned": "tuned"}.get(name, name)


def ratio_pairs(values: dict) -> list[tuple[str, str]]:
    """The ratios a row shows, (numerator, denominator): apop : tuned Dovecot (the targets),
    each variant : apop and : tuned Dovecot (scaling), apop : the baseline binary (new : old),
    apop : the cost floor."""
    pairs = [("apop", "dovecot-tuned")]
    for name in sorted(values, key=server_rank):
        if name.startswith("apop:"):
            pairs += [(name, "apop"), (name, "dovecot-tuned")]
    return pairs + [("apop", "apop-baseline"), ("apop", "floor")]


def table(results: dict) -> str:
    names = sorted({n for r in results["rows"] for n, v in r["values"].items() if v is not None}
                   | {"apop"}, key=server_rank)
    ratio_cols = []
    for r in results["rows"]:
        for k in r.get("ratios", {}):
            if k not in ratio_cols:
                ratio_cols.append(k)
    if "apop/dovecot-tuned" not in ratio_cols and "dovecot-tuned" in names:
        ratio_cols.insert(0, "apop/dovecot-tuned")
    order = {f"{a}/{b}": i for i, (a, b) in enumerate(ratio_pairs({n: 0 for n in names}))}
    ratio_cols.sort(key=lambda k: order.get(k, len(order)))
    head = (["test", "metric"] +
            [short(n) if n != "dovecot-tuned" else "dovecot tuned" for n in names] +
            ["/".join(short(x) for x in k.split("/")) for k in ratio_cols] + ["target", "verdict"])
    rows = [head]
    for r in results["rows"]:
        v = r["values"]
        unit = f" {r['unit']}" if r["unit"] else ""
        ratios = r.get("ratios", {})
        rows.append([r["test"], r["metric"] + (f" ({r['unit']})" if unit else "")] +
                    [fmt(v.get(n)) for n in names] +
                    [f"{ratios[k]:.3g}" if ratios.get(k) is not None else "-"
                     for k in ratio_cols] + [r["target"], verdict(r)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows if len(rows) > 1 else []):  # --only 8: no grid
        out.append("| " + " | ".join(c.ljust(widths[j]) for j, c in enumerate(r)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    fl = results.get("floor")
    if fl:
        cpu = {r["test"]: r["values"] for r in results["rows"]
               if r["metric"] == "server CPU per session"}
        out.append("")
        out.append("1. cost floor (bench/pop3_floor.cpp: the same exchange with canned replies, "
                   "no work; server CPU per session):")
        for conc, f1 in fl.items():
            v = cpu.get(f"1. APOP+STAT c={conc}", {})
            a, t, fc = v.get("apop"), v.get("dovecot-tuned"), f1["cpu_per_session_us"]
            line = f"   c={conc}: floor {fmt(fc)} us"
            if a is not None and fc is not None:
                line += f", apop {fmt(a)} us ({fmt(a - fc)} above the floor)"
            if t is not None and fc is not None:
                line += (f", tuned Dovecot {fmt(t)} us ({fmt(t - fc)} above); "
                         f"1/10 of Dovecot leaves apop {fmt(t / 10 - fc)} us above the floor")
            out.append(line)
    tf = results.get("tls_floor")
    if tf:
        cpu = {r["test"]: r["values"] for r in results["rows"]
               if r["metric"] == "server CPU per session"}
        out.append("")
        out.append("7. TLS cost floor (bench/tls_floor.cpp: apop's TLS context and certificate, "
                   "the same handshake and exchange with canned replies; server CPU per "
                   "session):")
        for conc, f1 in tf.items():
            v = cpu.get(f"7. TLS APOP+STAT c={conc}", {})
            fc = f1["cpu_per_session_us"]
            line = f"   c={conc}: floor {fmt(fc)} us"
            for n in sorted(v, key=server_rank):
                if n == "floor" or n == "dovecot-stock" or v[n] is None or fc is None:
                    continue
                line += f", {short(n)} {fmt(v[n])} us ({fmt(v[n] - fc)} above)"
            t = v.get("dovecot-tuned")
            if t is not None and fc is not None:
                line += f"; 1/4 of tuned Dovecot is {fmt(t / 4)} us"
            out.append(line)
    servers = results.get("apop_servers", {})
    if len(servers) > 1 or any(x["flags"] for x in servers.values()):
        out.append("")
        out.append("apop servers:")
        for n, x in servers.items():
            var = f" (variant {x['variant']})" if x.get("variant") else ""
            tasks = (f" ({x['processes']} processes, {x['threads']} threads)"
                     if "threads" in x else "")
            out.append(f"   {n}{var}: {x['binary']} serve ... {shlex.join(x['flags'])}{tasks}")
    f = results.get("fetch")
    if f:
        out.append("")
        out.append(f"5. fetch {f['messages']} messages from apop serve (wall time):")
        for k, v in f["wall_s"].items():
            sp = f["speedup"].get(k)
            out.append(f"   {k:<24} {v:8.2f} s" + (f"   {sp:.2f}x fetchmail" if sp else ""))
        best = max(f["speedup"].values()) if f["speedup"] else 0
        mda = f["speedup"].get("apop fetch -> mda", 0)
        out.append(f"   target >= 3x fetchmail: {'met' if best >= 3 else 'NOT met'} "
                   f"(maildir {f['speedup'].get('apop fetch -> maildir', 0):.2f}x, "
                   f"same MDA {mda:.2f}x)")
    fa = results.get("fetch_accounts")
    if fa:
        out.append("")
        out.append(fetch_accounts.summary(fa))
    lp = results.get("lmtp_postfix")
    if lp:
        out.append("")
        out.append(lmtp_postfix.summary(lp, prefix="9. "))
    i = results.get("apop_idle")
    if i:
        out.append("")
        out.append(f"6. {i['sessions']} idle sessions against apop ({i['logged_in']} logged in, "
                   f"the rest before login): peak {i['peak_in_flight']} in flight, PSS {i['pss_mib']:.1f} MiB (idle server "
                   f"{i['pss_before_mib']:.1f} MiB), RSS {i['rss_mib']:.1f} MiB, "
                   f"failed {i['failed']}; target < 512 MiB: "
                   f"{'met' if i['rss_mib'] < 512 and not i['failed'] else 'NOT met'}")
    m = results["machine"]
    out.append("")
    out.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}, "
               f"load average before {m['load_before'][0]:.2f}")
    if results.get("tls_key"):
        out.append(f"TLS certificate key: {results['tls_key']}")
    out.append(f"versions: {results.get('versions', {})}")
    for p in results.get("failures", []):
        out.append(f"PROBLEM: {p}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apop", default=os.environ.get("APOP_BIN",
                                                     os.path.join(REPO, "build/release/apop")))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    ap.add_argument("--no-dovecot", dest="dovecot", action="store_false",
                    help="apop alone (when Dovecot is not installed)")
    ap.add_argument("--only", default="", help="comma-separated test numbers (1-9)")
    ap.add_argument("--tls-key", choices=sorted(TLS_KEYS), default="rsa2048",
                    help="key of the certificate every server uses (default rsa2048; rsa4096 "
                         "makes the server's handshake cost dominate the client's)")
    ap.add_argument("--apop-flags", default="",
                    help="extra flags for every `apop serve` of --apop (one string, shell "
                         "syntax), e.g. --apop-flags='--auth-threads 2'")
    ap.add_argument("--apop-variants", nargs="+", default=[], metavar="NAME=FLAGS",
                    help="run the tests against one apop server per variant, each with "
                         "--apop-flags and its own FLAGS (e.g. \"w1=--workers 1\" "
                         "\"w2=--workers 2\"); the first is the column 'apop', the others "
                         "'apop:NAME', with their ratios to apop and to tuned Dovecot")
    ap.add_argument("--apop-baseline", default="", metavar="PATH",
                    help="also run the tests against this apop binary (e.g. the previous "
                         "release) in the same run: column 'baseline', ratio apop/baseline")
    ap.add_argument("--apop-baseline-flags", default=None,
                    help="extra `apop serve` flags for the baseline (default: --apop-flags)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--workdir", default=os.environ.get("BENCH_WORKDIR") or default_workdir(),
                    help="where the temporary tree goes (default: /dev/shm when it is a "
                         "tmpfs, else $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree")
    ap.add_argument("--cache", default=os.environ.get("BENCH_CACHE", os.path.join(
                        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                        "apop-bench")),
                    help="where apop's user databases are kept between runs ('' : nowhere)")
    for name, (full, quick, help_) in SIZES.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(full), default=None,
                        help=f"{help_} (default {full}, --quick {quick}; env BENCH_{name.upper()})")
    args = ap.parse_args()
    args.sizes = {}
    for name, (full, quick, _) in SIZES.items():
        v = getattr(args, name)
        if v is None and os.environ.get(f"BENCH_{name.upper()}"):
            v = type(full)(os.environ[f"BENCH_{name.upper()}"])
        args.sizes[name] = v if v is not None else (quick if args.quick else full)
    args.only = {int(x) for x in args.only.split(",") if x.strip()}
    if not args.only <= set(TESTS):
        ap.error(f"--only: tests are {TESTS.start}-{TESTS.stop - 1}")
    args.apop_flags = shlex.split(args.apop_flags)
    args.apop_baseline_flags = (shlex.split(args.apop_baseline_flags)
                                if args.apop_baseline_flags is not None else args.apop_flags)
    args.variants = []
    for v in args.apop_variants:
        name, sep, flags = v.partition("=")
        if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
            ap.error(f"--apop-variants: {v!r} is not NAME=FLAGS (NAME: letters, digits, - _)")
        if name in [n for n, _ in args.variants]:
            ap.error(f"--apop-variants: {name} given twice")
        args.variants.append((name, shlex.split(flags)))
    if args.apop_baseline and not (os.path.isfile(args.apop_baseline)
                                   and os.access(args.apop_baseline, os.X_OK)):
        print(f"compare: no apop binary at {args.apop_baseline} (--apop-baseline)",
              file=sys.stderr)
        return 1
    args.sizes["users"] = max(args.sizes["users"], args.sizes["concurrency"],
                              args.sizes["tls_concurrency"])
    if not (os.path.isfile(args.apop) and os.access(args.apop, os.X_OK)):
        print(f"compare: no apop binary at {args.apop} (build it: make release)", file=sys.stderr)
        return 1
    if args.dovecot and not dovecot_available():
        print(f"compare: {DOVECOT} is missing: install dovecot-pop3d (scripts/deps.sh) "
              "or pass --no-dovecot", file=sys.stderr)
        return 1
    if ((5 in args.only or 8 in args.only or not args.only)
            and shutil.which("fetchmail") is None):
        print("compare: fetchmail is missing (scripts/deps.sh installs it)", file=sys.stderr)
        return 1
    raise_nofile()
    if args.workdir:
        # Dovecot's trees (dovecot.py) go there too: hard links need one file system.
        tempfile.tempdir = args.workdir
    if args.only and args.only <= {8, 9}:
        # Tests 8 and 9 set up their own servers: none of the others' users and Maildirs.
        results = {"sizes": args.sizes, "machine": machine(), "rows": [], "failures": [],
                   "versions": versions(os.path.abspath(args.apop))}
    else:
        c = Compare(args)
        try:
            results = c.run()
        finally:
            c.cleanup()
    if 8 in args.only or not args.only:
        why = fetch_accounts.available() if args.dovecot else "--no-dovecot"
        if why:
            log(f"8: skipped ({why})")
        else:
            s = args.sizes
            log(f"8: {s['fetch_accounts']} accounts x {s['fetch_account_messages']} messages, "
                "apop fetch --config against fetchmail into Dovecot's LMTP")
            fa = fetch_accounts.run(os.path.abspath(args.apop), args.workdir,
                                    s["fetch_accounts"], s["fetch_account_messages"],
                                    s["fetch_max_parallel"], keep=args.keep,
                                    rtt_ms=s["fetch_rtt_ms"])
            results["fetch_accounts"] = fa
            results["failures"] += fa["failures"]
    if 9 in args.only or not args.only:
        why = lmtp_postfix.available() if args.dovecot else "--no-dovecot"
        if why:
            log(f"9: skipped ({why})")
        else:
            n = args.sizes["lmtp_messages"]
            log(f"9: {n} messages by Postfix over LMTP into apop and into Dovecot")
            opts = lmtp_postfix.options(apop=args.apop, messages=n,
                                        users=min(100, max(10, n // 5)), no_held=args.quick)
            try:
                results["lmtp_postfix"] = lmtp_postfix.run(opts)
            except Exception as e:  # noqa: BLE001 -- a failed test is a row of its own
                results["failures"].append(f"test 9: {e}")
    text = table(results)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
