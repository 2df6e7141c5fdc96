"""A private PostgreSQL cluster and an HAProxy for the scale-out tests.

PgCluster runs Debian's PostgreSQL (/usr/lib/postgresql/N/bin) from a temp
directory on a free loopback port, as a non-root user (PostgreSQL refuses to
run as root: under root the cluster runs as Debian's `postgres` user, or
`nobody`). Haproxy runs Debian's haproxy in the foreground with a generated
TCP-mode configuration that sends PROXY protocol v2 to the backends.

Both skip only when the programs are missing, and fail instead when CI is set
(apoptest.skip_or_fail: CI installs them through scripts/deps.sh).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from apoptest import skip_or_fail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> str | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    for d in reversed(dirs):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


class PgCluster:
    def __init__(self):
        self.bindir = pg_bindir()
        if self.bindir is None:
            skip_or_fail(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                "install the postgresql package (scripts/deps.sh)")
        self.root = tempfile.mkdtemp(prefix="apop-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "pgdata")
        self.log = os.path.join(self.root, "postgres.log")
        self.port = free_port()
        self.run_as: list[str] = []
        self.owner: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.owner = name
                break
            if self.owner is None:
                skip_or_fail("running as root without a postgres or nobody user")
            self.run_as = ["runuser", "-u", self.owner, "--"]
        self.started = False

    def _run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run(self.run_as + list(argv), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, cwd=self.root)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {p.returncode}:\n"
                                 f"{p.stdout.decode(errors='replace')}\n{self.log_text()}")
        return p

    def log_text(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return "--- postgres log ---\n" + f.read()[-4000:]
        except OSError:
            return ""

    def start_server(self):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                f"-c max_connections=100")
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", self.log,
                  "-o", opts, "-w", "-t", "60", "start")
        self.started = True

    def start(self) -> "PgCluster":
        os.mkdir(self.data, 0o700)
        if self.owner:
            pw = pwd.getpwnam(self.owner)
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-A", "trust", "-U",
                  "apop", "--no-sync", "-E", "UTF8", "--locale=C")
        self.start_server()
        return self

    def createdb(self, name: str) -> str:
        self._run(os.path.join(self.bindir, "createdb"), "-h", "127.0.0.1", "-p",
                  str(self.port), "-U", "apop", name)
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://apop@127.0.0.1:{self.port}/{db}"

    def psql(self, db: str, sql: str) -> str:
        p = self._run(os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p",
                      str(self.port), "-U", "apop", "-d", db, "-At", "-v", "ON_ERROR_STOP=1",
                      "-c", sql)
        return p.stdout.decode().strip()

    def stop(self, mode: str = "fast"):
        if self.started:
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                      "stop", check=False)
            self.started = False

    def cleanup(self):
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class Haproxy:
    """haproxy -db with a TCP frontend balancing round-robin over `backends`
    (ports on 127.0.0.1), PROXY v2 to each (also on health checks), health
    checks every 200 ms so a dead backend leaves within about half a second."""

    def __init__(self, backends: list[int]):
        self.bin = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                               if os.access("/usr/sbin/haproxy", os.X_OK) else None)
        if self.bin is None:
            skip_or_fail("haproxy not found: install the haproxy package (scripts/deps.sh)")
        self.root = tempfile.mkdtemp(prefix="apop-haproxy-")
        self.port = free_port()
        self.cfg = os.path.join(self.root, "haproxy.cfg")
        servers = "\n".join(f"  server s{i} 127.0.0.1:{p} check" for i, p in enumerate(backends))
        with open(self.cfg, "w") as f:
            f.write(f"""global
  maxconn 200

defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch

frontend pop3
  bind 127.0.0.1:{self.port}
  default_backend apop

backend apop
  balance roundrobin
  default-server inter 200ms fastinter 100ms downinter 200ms fall 2 rise 1 send-proxy-v2 check-send-proxy
{servers}
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Haproxy":
        check = subprocess.run([self.bin, "-c", "-f", self.cfg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        if check.returncode != 0:
            raise AssertionError(f"haproxy -c failed:\n{check.stdout.decode(errors='replace')}")
        self.out = open(os.path.join(self.root, "haproxy.log"), "wb")
        self.proc = subprocess.Popen([self.bin, "-db", "-f", self.cfg], stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise AssertionError(f"haproxy did not start listening on {self.port}\n{self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "haproxy.log"), encoding="utf-8",
                      errors="replace") as f:
                return "--- haproxy log ---\n" + f.read()[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None:
            self.out.close()
        shutil.rmtree(self.root, ignore_errors=True)
