"""A throw-away Dovecot POP3 server for interop tests and benchmarks.

    from dovecot import Dovecot, require_dovecot

    require_dovecot()                       # SkipTest, or a failure when CI is set
    with Dovecot(stls=True, implicit_tls=True) as dv:
        dv.add_user("alice", "secret-Alice-1")
        dv.deliver("alice", b"Subject: hi\\n\\nbody\\n")
        ... connect to 127.0.0.1:dv.port (plain/STLS) or dv.tls_port (implicit TLS),
            verify the certificate with dv.cert ...
        dv.messages("alice")                # what is left in the Maildir

Debian's /usr/sbin/dovecot (package dovecot-pop3d; scripts/deps.sh installs
it) runs in the foreground (`dovecot -F`) with its own configuration in a
temporary directory: base_dir, state_dir, logs, a passwd-file with {PLAIN}
passwords (so APOP, CRAM-MD5 and SCRAM-SHA-256 all work), a static userdb and
Maildirs under ROOT/mail/USER. Nothing outside the temporary directory is read
or written (the system /etc/dovecot is never used), and only 127.0.0.1 on free
ports is listened on.

Users: when the tests run as a normal user, every Dovecot process runs as that
user. As root, Dovecot's login and internal processes run as the package's
unprivileged users (dovenull, dovecot) and mail as `nobody`; deliver() then
hands the files to that user.

Skipping: when /usr/sbin/dovecot is missing the tests are skipped, unless the
environment variable CI is set (CI installs it), where it is a failure.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

DOVECOT = "/usr/sbin/dovecot"


def dovecot_available() -> bool:
    return os.path.isfile(DOVECOT) and os.access(DOVECOT, os.X_OK)


IMAP_BIN = "/usr/lib/dovecot/imap"


def require_dovecot_imap() -> None:
    """As require_dovecot, for the IMAP server (Debian's dovecot-imapd)."""
    require_dovecot()
    if os.path.isfile(IMAP_BIN):
        return
    msg = f"{IMAP_BIN} not found: install Debian's dovecot-imapd (scripts/deps.sh installs it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        raise AssertionError(msg + " -- CI is set, so this is a failure, not a skip")
    raise unittest.SkipTest(msg)


LMTP_BIN = "/usr/lib/dovecot/lmtp"


def require_dovecot_lmtp() -> None:
    """As require_dovecot, for the LMTP server (Debian's dovecot-lmtpd)."""
    require_dovecot()
    if os.path.isfile(LMTP_BIN):
        return
    msg = f"{LMTP_BIN} not found: install Debian's dovecot-lmtpd (scripts/deps.sh installs it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        raise AssertionError(msg + " -- CI is set, so this is a failure, not a skip")
    raise unittest.SkipTest(msg)


def require_dovecot() -> None:
    """Skips the calling test when Dovecot is missing; fails instead when CI is set."""
    if dovecot_available():
        return
    msg = (f"{DOVECOT} not found: install Debian's dovecot-pop3d "
           f"(scripts/deps.sh installs it)")
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        raise AssertionError(msg + " -- CI is set, so this is a failure, not a skip")
    raise unittest.SkipTest(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: str, name: str = "dovecot", days: int = 90) -> tuple[str, str]:
    """A self-signed certificate (EC P-256) for localhost and 127.0.0.1."""
    cert = os.path.join(directory, f"{name}-cert.pem")
    key = os.path.join(directory, f"{name}-key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN=localhost/O={name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class Dovecot:
    """One Dovecot instance. Options (all keyword-only):

    stls                    offer STLS on the plain port (self-signed certificate, self.cert)
    implicit_tls            also listen with implicit TLS on self.tls_port
    disable_plaintext_auth  Dovecot's setting (note: Dovecot treats 127.0.0.1 as secure,
                            so USER/PLAIN stay available on loopback either way)
    login_service_count     `service pop3-login { service_count = N }`; 0 is Dovecot's
                            high-performance mode (one login process, many connections)
    mechanisms              auth_mechanisms (default: plain login cram-md5 scram-sha-256 apop)
    extra_config            appended verbatim to dovecot.conf
    imap                    also serve IMAP (Debian's dovecot-imapd) on self.imap_port, and
                            IMAPS on self.imaps_port when implicit_tls
    mail_root               serve the Maildirs under this directory (MAIL_ROOT/USER) instead
                            of ROOT/mail; as root they are handed to the mail user first
    extra_passdb            passdb blocks put before the passwd-file passdb (e.g. an oauth2
                            passdb restricted to `mechanisms = oauthbearer xoauth2`)
    lmtp                    also accept mail by LMTP (Debian's dovecot-lmtpd) on the Unix
                            socket self.lmtp_socket and on 127.0.0.1:self.lmtp_port, into
                            the users' Maildirs (`apop fetch --to lmtp:`)
    """

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    def __init__(self, *, stls: bool = False, implicit_tls: bool = False,
                 disable_plaintext_auth: bool = False, login_service_count: int | None = None,
                 mechanisms: str = "plain login cram-md5 scram-sha-256 apop",
                 extra_config: str = "", imap: bool = False, mail_root: str | None = None,
                 extra_passdb: str = "", lmtp: bool = False):
        self.imap = imap
        self.extra_passdb = extra_passdb
        self.lmtp = lmtp
        self.lmtp_port = 0
        self.lmtp_socket = ""
        self.imap_port = 0
        self.imaps_port = 0
        self.stls = stls
        self.implicit_tls = implicit_tls
        self.disable_plaintext_auth = disable_plaintext_auth
        self.login_service_count = login_service_count
        self.mechanisms = mechanisms
        self.extra_config = extra_config
        self.root = tempfile.mkdtemp(prefix="apop-dovecot-")
        self.mail_root = mail_root or os.path.join(self.root, "mail")
        self.conf = os.path.join(self.root, "dovecot.conf")
        self.passwd = os.path.join(self.root, "passwd")
        self.log_path = os.path.join(self.root, "dovecot.log")
        self.cert: str | None = None
        self.key: str | None = None
        self.port = 0
        self.tls_port = 0
        self.proc: subprocess.Popen | None = None
        self._users: dict[str, str] = {}
        self._seq = 0
        if os.getuid() == 0:
            self.internal_user, self.login_user, self.mail_user = "dovecot", "dovenull", "nobody"
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            self.internal_user = self.login_user = self.mail_user = me
        pw = pwd.getpwnam(self.mail_user)
        self.mail_uid, self.mail_gid = pw.pw_uid, pw.pw_gid
        self.mail_group = grp.getgrgid(pw.pw_gid).gr_name

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "Dovecot":
        require_dovecot()
        for d in ("run", "state", "mail", "home"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        if os.getuid() == 0:
            # Dovecot's unprivileged processes must reach the passwd-file and the mail.
            os.chmod(self.root, 0o755)
            for d in ("mail", "home"):
                os.chown(os.path.join(self.root, d), self.mail_uid, self.mail_gid)
            if self.mail_root != os.path.join(self.root, "mail"):
                self._hand_over(self.mail_root)
        if self.stls or self.implicit_tls:
            self.cert, self.key = make_cert(self.root)
            os.chmod(self.key, 0o644 if os.getuid() == 0 else 0o600)
        self._write_passwd()
        self.port = free_port()
        self.tls_port = free_port() if self.implicit_tls else 0
        if self.imap:
            require_dovecot_imap()
            self.imap_port = free_port()
            self.imaps_port = free_port() if self.implicit_tls else 0
        if self.lmtp:
            require_dovecot_lmtp()
            self.lmtp_port = free_port()
            self.lmtp_socket = os.path.join(self.root, "run", "lmtp")
        with open(self.conf, "w") as f:
            f.write(self._config())
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.START_TIMEOUT
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        ports += [p for p in (self.imap_port, self.imaps_port, self.lmtp_port) if p]
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace")
                self.proc = None
                raise AssertionError(f"dovecot exited at start\n{out}\n{self.log()}")
            if all(self._accepts(p) for p in ports):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"dovecot did not listen within {self.START_TIMEOUT}s\n"
                                     f"{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to the master, wait for it (and so for its children); kill after 10 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            self.proc.stdout.close()
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.cleanup()
        return False

    # -- users and mail -----------------------------------------------------------------
    def add_user(self, name: str, password: str) -> None:
        """Adds (or replaces) a user; works before and while the server runs."""
        self._users[name] = password
        if self.proc is not None:
            self._write_passwd()

    def maildir(self, user: str) -> str:
        return os.path.join(self.mail_root, user)

    def _hand_over(self, top: str) -> None:
        """As root: the mail user must own the Maildirs Dovecot serves."""
        if os.getuid() != 0:
            return
        os.chmod(self.root, 0o755)
        d = top
        while d not in ("/", ""):
            mode = os.stat(d).st_mode & 0o7777
            os.chmod(d, mode | 0o711)  # traversable by the mail user
            d = os.path.dirname(d)
        for dirpath, dirnames, filenames in os.walk(top):
            os.chown(dirpath, self.mail_uid, self.mail_gid)
            for n in filenames:
                os.chown(os.path.join(dirpath, n), self.mail_uid, self.mail_gid)

    def deliver(self, user: str, message: bytes) -> str:
        """Puts a message into the user's Maildir new/ (tmp/ then rename) and returns its path."""
        md = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        self._seq += 1
        name = f"{int(time.time())}.M{self._seq}P{os.getpid()}.apoptest,S={len(message)}"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(message)
        final = os.path.join(md, "new", name)
        os.rename(tmp, final)
        if os.getuid() == 0:
            for dirpath, dirnames, filenames in os.walk(md):
                os.chown(dirpath, self.mail_uid, self.mail_gid)
                for n in filenames:
                    os.chown(os.path.join(dirpath, n), self.mail_uid, self.mail_gid)
        return final

    def messages(self, user: str) -> list[bytes]:
        """The messages in the user's Maildir (new/ and cur/), in file-name order."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "--- dovecot log ---\n" + f.read() + "--- end ---"
        except OSError:
            return "(no dovecot log)"

    # -- internals ----------------------------------------------------------------------
    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _write_passwd(self) -> None:
        tmp = self.passwd + ".tmp"
        with open(tmp, "w") as f:
            for name, password in self._users.items():
                f.write(f"{name}:{{PLAIN}}{password}::::::\n")
        os.chmod(tmp, 0o644 if os.getuid() == 0 else 0o600)
        os.rename(tmp, self.passwd)

    def _config(self) -> str:
        r = self.root
        ssl = "no"
        if self.stls or self.implicit_tls:
            ssl = "yes"
        lines = [
            f"base_dir = {r}/run",
            f"state_dir = {r}/state",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"debug_log_path = {self.log_path}",
            "protocols = pop3" + (" imap" if self.imap else "") + (" lmtp" if self.lmtp else ""),
            "listen = 127.0.0.1",
            f"ssl = {ssl}",
            f"disable_plaintext_auth = {'yes' if self.disable_plaintext_auth else 'no'}",
            f"auth_mechanisms = {self.mechanisms}",
            f"default_internal_user = {self.internal_user}",
            f"default_internal_group = {grp.getgrgid(pwd.getpwnam(self.internal_user).pw_gid).gr_name}",
            f"default_login_user = {self.login_user}",
            "first_valid_uid = 1",
            self.extra_passdb,
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.passwd}",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={self.mail_uid} gid={self.mail_gid} home={r}/home/%u",
            "}",
            f"mail_location = maildir:{self.mail_root}/%u",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    port = {self.port}",
            "  }",
            "  inet_listener pop3s {",
            f"    port = {self.tls_port}",
            "    ssl = yes",
            "  }",
        ]
        if self.login_service_count is not None:
            lines.append(f"  service_count = {self.login_service_count}")
        lines.append("}")
        if self.imap:
            lines += [
                "service imap-login {",
                "  inet_listener imap {",
                f"    port = {self.imap_port}",
                "  }",
                "  inet_listener imaps {",
                f"    port = {self.imaps_port}",
                "    ssl = yes",
                "  }",
                "}",
            ]
        if self.lmtp:
            lines += [
                "service lmtp {",
                "  unix_listener lmtp {",
                "    mode = 0666",
                "  }",
                "  inet_listener lmtp {",
                "    address = 127.0.0.1",
                f"    port = {self.lmtp_port}",
                "  }",
                "}",
            ]
        lines += [
            "protocol pop3 {",
            "  pop3_uidl_format = %08Xu%08Xv",
            "}",
        ]
        if ssl == "yes":
            lines += [f"ssl_cert = <{self.cert}", f"ssl_key = <{self.key}",
                      "ssl_min_protocol = TLSv1.2"]
        if os.getuid() != 0:
            # Non-root: every service runs as the current user.
            me = self.internal_user
            services = ["anvil", "auth", "auth-worker", "config", "dict", "log", "stats",
                        "pop3", "pop3-login"]
            if self.imap:
                services += ["imap", "imap-login"]
            if self.lmtp:
                services += ["lmtp"]
            for svc in services:
                lines += [f"service {svc} {{", f"  user = {me}"]
                if svc in ("anvil", "pop3-login", "imap-login"):
                    lines.append("  chroot =")  # chroot(2) needs root
                lines.append("}")
        return "\n".join(lines) + "\n" + self.extra_config + "\n"


if __name__ == "__main__":
    # Smoke test: python3 dovecot.py
    import poplib
    with Dovecot(stls=True, implicit_tls=True) as dv:
        dv.add_user("alice", "secret-Alice-1")
        dv.deliver("alice", b"Subject: hi\n\nbody\n")
        p = poplib.POP3("127.0.0.1", dv.port)
        print(p.getwelcome())
        p.apop("alice", "secret-Alice-1")
        print(p.stat())
        p.quit()
        print("ok", dv.root)
