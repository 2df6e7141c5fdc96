"""A throw-away Postfix instance for interop tests and benchmarks.

    from postfix import Postfix, require_postfix

    require_postfix()                       # SkipTest, or a failure when CI is set
    with Postfix(domains={"a.test": "lmtp:unix:/abs/lmtp.sock"},
                 pipes={"apopdeliver": ("nobody", "/path/apop deliver --data D ${user}")},
                 ) as pf:
        smtplib.SMTP("127.0.0.1", pf.port).sendmail(...)
        pf.wait_queue_empty()
        pf.log()                            # its maillog_file

Debian's Postfix (package postfix; scripts/deps.sh installs it) runs as a
private instance: its own config_directory, queue_directory and
data_directory in a temporary directory, `postfix -c DIR start` / `stop`. It
listens only on one free 127.0.0.1 port (SMTP, its master.cf), logs to a
file in the temporary directory (maillog_file through postlogd, no syslog)
and never reads /etc/postfix/main.cf or master.cf, nor touches the system
instance's queue. No service runs chrooted (so `lmtp:unix:` may name an
absolute path and pipe(8) commands see the real file system).

Every domain is a virtual mailbox domain: `domains` maps each to its
transport (`lmtp:unix:PATH`, or the name of a pipe(8) service from `pipes`),
through transport_maps. Recipients are not checked by Postfix
(smtpd_reject_unlisted_recipient = no): the delivery agent decides, so an
unknown user is refused by apop and bounced by Postfix.

Postfix's master must run as root (it drops to mail_owner, postfix, for its
daemons; lmtp(8) connects as postfix, pipe(8) runs its command as `user=`):
the tests need root, and skip (or fail when CI is set) without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"


def postfix_available() -> bool:
    return os.path.isfile(POSTFIX) and os.access(POSTFIX, os.X_OK)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_postfix() -> None:
    """Skips the calling test when Postfix is missing or we are not root; fails
    instead when CI is set (CI installs it and runs as root)."""
    msg = None
    if not postfix_available():
        msg = f"{POSTFIX} not found: install Debian's postfix (scripts/deps.sh installs it)"
    elif os.getuid() != 0:
        msg = "a private Postfix instance needs root (its master runs as root)"
    if msg is None:
        return
    if _ci():
        raise AssertionError(msg + " -- CI is set, so this is a failure, not a skip")
    raise unittest.SkipTest(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    """One private Postfix instance. Options (keyword-only):

    domains     {domain: transport}: `lmtp:unix:/ABS/PATH`, `lmtp:inet:127.0.0.1:PORT`
                or a pipe service name from `pipes` (a bare name: `NAME:` is added)
    pipes       {service: (user, argv)}: pipe(8) services in master.cf, flags=DRu
                (Delivered-To and Return-Path prepended, ${user} lowercased), as
                Dovecot's documentation shows for dovecot-lda
    main        extra main.cf settings, {name: value}, applied last (they win)
    """

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 20.0

    # Queue timers short enough for a test: a deferred message is retried
    # within seconds, not minutes (the defaults are 300 s and more).
    FAST_QUEUE = {
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
        "maximal_queue_lifetime": "1h",
        "bounce_queue_lifetime": "1h",
    }

    def __init__(self, *, domains: dict[str, str], pipes: dict[str, tuple[str, str]] | None = None,
                 main: dict[str, str] | None = None, myhostname: str = "mx.apop.test"):
        self.domains = dict(domains)
        self.pipes = dict(pipes or {})
        self.extra_main = dict(main or {})
        self.myhostname = myhostname
        self.root = tempfile.mkdtemp(prefix="apop-postfix-")
        self.conf_dir = os.path.join(self.root, "etc")
        self.queue_dir = os.path.join(self.root, "spool")
        self.data_dir = os.path.join(self.root, "lib")
        self.log_path = os.path.join(self.root, "maillog")
        self.port = 0
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "Postfix":
        require_postfix()
        # The postfix user must traverse to its queue and to sockets put here.
        os.chmod(self.root, 0o755)
        for d in (self.conf_dir, self.queue_dir, self.data_dir):
            os.makedirs(d, exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")
        self.port = free_port()
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(self.master_cf())
        # The log file exists before postlogd opens it (it appends).
        open(self.log_path, "a").close()
        # `postfix check` (run by start) creates the queue's directories with
        # their owners and modes, and finds configuration errors.
        self._postfix("check")
        self._postfix("start")
        self.started = True
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.makefile("rb").readline().startswith(b"220 "):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        log = self.log()
        self.stop()
        raise AssertionError(f"Postfix did not answer on 127.0.0.1:{self.port} within "
                             f"{self.START_TIMEOUT:.0f}s\n{log[-4000:]}")

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        subprocess.run([POSTFIX, "-c", self.conf_dir, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=self.STOP_TIMEOUT)
        # `postfix stop` signals the master and returns; wait for its pid file
        # to go (the master removes it on exit), so no daemon outlives the test.
        pid_file = os.path.join(self.queue_dir, "pid", "master.pid")
        deadline = time.monotonic() + self.STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(pid_file) as f:
                    pid = int(f.read().strip() or 0)
                os.kill(pid, 0)
            except (OSError, ValueError):
                return
            time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Postfix":
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> bool:
        self.cleanup()
        return False

    # -- configuration ------------------------------------------------------------------
    def main_settings(self) -> dict[str, str]:
        transports = ", ".join(
            f"{d}={t if ':' in t else t + ':'}" for d, t in self.domains.items())
        s = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.myhostname,
            "mydomain": "apop.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": self.log_path,
            # maillog_file must start with one of these (default /var, /dev/stdout).
            "maillog_file_prefixes": self.root,
            "virtual_mailbox_domains": " ".join(self.domains),
            "virtual_mailbox_maps": "",
            # The delivery agent checks the recipient (apop: 550 5.1.1).
            "smtpd_reject_unlisted_recipient": "no",
            "transport_maps": "inline:{ " + transports + " }" if transports else "",
            # No DNS: everything here is loopback or a Unix socket.
            "smtp_dns_support_level": "disabled",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "biff": "no",
            "alias_maps": "",
            "alias_database": "",
            # The pipe(8) services deliver one recipient per command.
            **{f"{name}_destination_recipient_limit": "1" for name in self.pipes},
            "smtputf8_enable": "no",
            "message_size_limit": str(64 << 20),
            **self.FAST_QUEUE,
        }
        s.update(self.extra_main)
        return s

    def main_cf(self) -> str:
        return "".join(f"{k} = {v}\n" for k, v in self.main_settings().items())

    def master_cf(self) -> str:
        # service type private unpriv chroot wakeup maxproc command
        rows = [
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            "pickup    unix  n - n 60   1 pickup",
            "cleanup   unix  n - n -    0 cleanup",
            "qmgr      unix  n - n 300  1 qmgr",
            "rewrite   unix  - - n -    - trivial-rewrite",
            "bounce    unix  - - n -    0 bounce",
            "defer     unix  - - n -    0 bounce",
            "trace     unix  - - n -    0 bounce",
            "verify    unix  - - n -    1 verify",
            "flush     unix  n - n 1000? 0 flush",
            "proxymap  unix  - - n -    - proxymap",
            "smtp      unix  - - n -    - smtp",
            "relay     unix  - - n -    - smtp",
            "showq     unix  n - n -    - showq",
            "error     unix  - - n -    - error",
            "retry     unix  - - n -    - error",
            "discard   unix  - - n -    - discard",
            "lmtp      unix  - - n -    - lmtp",
            "anvil     unix  - - n -    1 anvil",
            "scache    unix  - - n -    1 scache",
            "postlog   unix-dgram n - n - 1 postlogd",
        ]
        for name, (user, argv) in self.pipes.items():
            rows.append(f"{name} unix - n n - - pipe\n  flags=DRu user={user} argv={argv}")
        return "\n".join(rows) + "\n"

    # -- observation --------------------------------------------------------------------
    def _postfix(self, *args: str) -> None:
        p = subprocess.run([POSTFIX, "-c", self.conf_dir, *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"`postfix -c {self.conf_dir} {' '.join(args)}` exited "
                                 f"{p.returncode}:\n{p.stdout.decode(errors='replace')}\n"
                                 f"{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def queue(self) -> list[dict]:
        """The queue as `postqueue -j` shows it: one dict per message."""
        p = subprocess.run([POSTQUEUE, "-c", self.conf_dir, "-j"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        if p.returncode != 0:
            raise AssertionError(f"postqueue -j: {p.stderr.decode(errors='replace')}")
        return [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]

    def flush(self) -> None:
        """`postqueue -f`: deferred mail is retried now."""
        subprocess.run([POSTQUEUE, "-c", self.conf_dir, "-f"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            q = self.queue()
            if not q:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix's queue not empty after {timeout:.0f}s: {q}\n"
                                     f"{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Waits until `count` lines of the maillog match `pattern` (a regex); returns them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = [l for l in self.log().splitlines() if rx.search(l)]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} maillog line(s) matching {pattern!r} not seen in "
                                     f"{timeout:.0f}s; the log:\n{self.log()[-6000:]}")
            time.sleep(0.1)
