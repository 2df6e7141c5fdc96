"""`apop migrate` from a real Dovecot POP3 server (tests/interop/dovecot.py):
every message byte for byte, every UIDL unchanged (UIDL listings of Dovecot
and of apop compared), --dry-run, resume after SIGKILL without duplicates, a
fetchmail .fetchids state file staying valid across the switch, and the
Maildir served as it is by Dovecot IMAP (imaplib over TLS)."""

import imaplib
import json
import os
import poplib
import signal
import ssl
import subprocess
import time
import getpass

from apoptest import ApopTestCase, crlf, make_message, require_program
from dovecot import Dovecot, require_dovecot

PASSWORD = "Dovecot-pass-7731-heron"
LOCAL_SECRET = "Local-apop-4410-osprey"
MSGS = [
    make_message("migrate 1", "First body.\n.starts with a dot\n..two dots\n.\n"),
    make_message("migrate 2", "From here on, quoting matters.\n>From already quoted\n\n"),
    make_message("migrate 3", ("x" * 900 + "\n") * 3 + "caf\u00e9 \u00fcber\n"),
    # (Not here: a file with CRLF line ends or without a final newline. POP3
    # carries lines, not bytes; such a message arrives with LF line ends and
    # a final newline -- see docs/migration.md.)
]


def pop3_view(port: int, user: str, secret: str) -> dict[str, bytes]:
    """UIDL -> message (LF line endings, dot-unstuffed) as a POP3 client sees it."""
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    p.apop(user, secret)
    out = {}
    for line in p.uidl()[1]:
        num, uid = line.split()
        lines = p.retr(int(num))[1]
        out[uid.decode()] = b"\n".join(lines) + b"\n"
    p.quit()
    return out


class MigrateCase(ApopTestCase):
    def setUp(self):
        super().setUp()
        require_dovecot()
        self.dv = Dovecot(stls=True, implicit_tls=True)
        self.addCleanup(self.dv.cleanup)
        self.dv.add_user("alice", PASSWORD)
        self.dv.start()
        for m in MSGS:
            self.dv.deliver("alice", m)
        self.env.add_user("alice", LOCAL_SECRET)

    def argv(self, *args: str) -> list[str]:
        return ["migrate", f"pop3://alice@127.0.0.1:{self.dv.port}", "--to-user", "alice",
                "--data", self.env.data, "--tls", "starttls", "--ca-file", self.dv.cert,
                "--auth", "apop", "--json", *args]

    def migrate(self, *args: str, expect: int = 0) -> dict:
        p = self.env.run(*self.argv(*args), env={"APOP_PASSWORD": PASSWORD}, timeout=120)
        if p.returncode != expect:
            raise AssertionError(f"apop migrate exited {p.returncode}, expected {expect}\n"
                                 f"stdout: {p.stdout!r}\nstderr: {p.stderr!r}\n{self.dv.log()}")
        self.assertNotIn(PASSWORD.encode(), p.stdout + p.stderr)
        return json.loads(p.stdout)

    def assert_same_mailbox(self):
        """Byte for byte the same files, and the same UIDL -> message over POP3."""
        self.assertEqual(sorted(self.env.stored_messages("alice")),
                         sorted(self.dv.messages("alice")))
        theirs = pop3_view(self.dv.port, "alice", PASSWORD)
        with self.env.server() as srv:
            ours = pop3_view(srv.port, "alice", LOCAL_SECRET)
        self.assertEqual(ours, theirs)
        return theirs


class MigrateTest(MigrateCase):
    def test_dry_run_then_migration_keeps_bytes_and_uidls(self):
        dry = self.migrate("--dry-run")
        self.assertTrue(dry["dry_run"])
        self.assertEqual(dry["messages"]["to_copy"], len(MSGS))
        self.assertEqual(dry["bytes"]["to_copy"], sum(len(crlf(m)) for m in MSGS))
        self.assertEqual(self.env.stored_messages("alice"), [])

        r = self.migrate()
        self.assertTrue(r["ok"], r)
        self.assertTrue(r["tls"])
        self.assertEqual(r["auth"], "apop")
        self.assertEqual(r["messages"]["copied"], len(MSGS))
        view = self.assert_same_mailbox()
        self.assertEqual(len(view), len(MSGS))
        self.assertEqual(len(self.dv.messages("alice")), len(MSGS))  # nothing deleted

        # A re-run copies nothing; new mail on the source is copied alone.
        again = self.migrate()
        self.assertEqual(again["messages"]["copied"], 0)
        self.assertEqual(again["messages"]["already_migrated"], len(MSGS))
        self.dv.deliver("alice", make_message("late", "arrived after the first run\n"))
        self.assertEqual(self.migrate("--dry-run")["messages"]["to_copy"], 1)
        self.assertEqual(self.migrate()["messages"]["copied"], 1)
        self.assert_same_mailbox()

    def test_lost_state_file_never_duplicates(self):
        """A cut after the link into new/ but before the state save: the UIDL map
        recognises the messages already there."""
        self.migrate()
        md = self.env.maildir("alice")
        for n in os.listdir(md):
            if n.endswith(".state"):
                os.unlink(os.path.join(md, n))
        r = self.migrate()
        self.assertEqual(r["messages"]["copied"], 0)
        self.assertEqual(len(self.env.stored_messages("alice")), len(MSGS))
        self.assert_same_mailbox()

    def test_errors(self):
        p = self.env.run("migrate", f"pop3://alice@127.0.0.1:{self.dv.port}", "--to-user",
                         "nobody-here", "--data", self.env.data,
                         env={"APOP_PASSWORD": PASSWORD})
        self.assertEqual(p.returncode, 67, p.stderr)
        p = self.env.run(*self.argv(), env={"APOP_PASSWORD": "wrong-" + PASSWORD})
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertEqual(self.env.stored_messages("alice"), [])


class MigrateResumeTest(MigrateCase):
    COUNT = 300

    def test_kill_mid_way_then_rerun_copies_the_rest_once(self):
        body = ("resume line of text " * 50 + "\n") * 20  # ~20 KB each
        for i in range(self.COUNT):
            self.dv.deliver("alice", make_message(f"bulk {i}", f"#{i}\n" + body))
        total = self.COUNT + len(MSGS)
        proc = subprocess.Popen([self.env.bin, *self.argv()], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(os.environ,
                                                                 APOP_PASSWORD=PASSWORD))
        new = os.path.join(self.env.maildir("alice"), "new")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.isdir(new) and len(os.listdir(new)) >= 20:
                break
            time.sleep(0.005)
        self.assertIsNone(proc.poll(), "migrate finished before it could be interrupted")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        copied_before = len(self.env.stored_messages("alice"))
        self.assertGreater(copied_before, 0)
        self.assertLess(copied_before, total)

        r = self.migrate()
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["messages"]["copied"] + copied_before, total)
        self.assertEqual(len(self.env.stored_messages("alice")), total)
        self.assertEqual(len(set(self.env.stored_messages("alice"))), total)  # no duplicates
        self.assert_same_mailbox()


class FetchmailSwitchTest(MigrateCase):
    def test_fetchids_stays_valid_across_the_switch(self):
        fetchmail = require_program("fetchmail")
        home = os.path.join(self.env.root, "home")
        os.makedirs(home)
        out = os.path.join(self.env.root, "fetched.mbox")

        def run(port: int, secret: str) -> subprocess.CompletedProcess:
            rc = os.path.join(home, ".fetchmailrc")
            with open(rc, "w") as f:
                f.write("set no syslog\n"
                        f"poll 127.0.0.1 protocol APOP service {port} uidl\n"
                        f'  user "alice" there with password "{secret}" is '
                        f'"{getpass.getuser()}" here\n'
                        f'  keep mda "cat >> {out}"\n')
            os.chmod(rc, 0o600)
            return subprocess.run([fetchmail, "-f", rc, "--nosyslog", "--nodetach", "-v",
                                   "-i", os.path.join(home, ".fetchids")],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                                  env=dict(os.environ, HOME=home, LC_ALL="C"), cwd=home)

        first = run(self.dv.port, PASSWORD)
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        with open(out, "rb") as f:
            fetched = f.read()
        for m in MSGS:
            self.assertIn(m.splitlines()[0], fetched)
        with open(os.path.join(home, ".fetchids"), "rb") as f:
            ids = f.read()
        self.assertEqual(len([l for l in ids.splitlines() if l.startswith(b"alice@")]),
                         len(MSGS), ids)

        self.migrate()
        with self.env.server() as srv:
            second = run(srv.port, LOCAL_SECRET)
        # fetchmail exit 1: no mail (every UIDL already in .fetchids).
        self.assertEqual(second.returncode, 1, second.stdout + second.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), fetched)


class ImapPathTest(MigrateCase):
    def test_dovecot_imap_serves_the_migrated_maildir(self):
        self.migrate()
        expected = sorted(crlf(m) for m in self.env.stored_messages("alice"))
        imap = Dovecot(imap=True, implicit_tls=True,
                       mail_root=os.path.join(self.env.data, "mail"))
        self.addCleanup(imap.cleanup)
        imap.add_user("alice", PASSWORD)
        imap.start()
        ctx = ssl.create_default_context(cafile=imap.cert)
        c = imaplib.IMAP4_SSL("127.0.0.1", imap.imaps_port, ssl_context=ctx)
        c.login("alice", PASSWORD)
        typ, data = c.select("INBOX", readonly=True)
        self.assertEqual(typ, "OK")
        self.assertEqual(int(data[0]), len(MSGS))
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        got = sorted(part[1] for part in data if isinstance(part, tuple))
        c.logout()
        self.assertEqual(got, expected)
