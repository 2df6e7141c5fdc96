"""`apop serve --workers N --user U --auth-user A` (issue 19): the auth process
under a uid of its own, so that a worker cannot open secret.key or the account
database even without its Landlock file restriction, and `apop deliver` (run
as the service user, like an MTA's pipe) asks the auth process over the
auth-userdb socket instead of reading the database. Root only (CI runs as
root): the users are nobody (service) and daemon (auth)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import unittest

from apoptest import (ALICE_SECRET, ApopTestCase, assert_no_sanitizer_report,
                      cli_sanitizer_env, make_message, needs)
from test_privdrop import proc_ids
from test_workers import children

EX_NOUSER, EX_TEMPFAIL, EX_CONFIG = 67, 75, 78
IS_ROOT = os.geteuid() == 0


@needs(IS_ROOT, "users of their own need root")
class AuthUserTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.nobody = pwd.getpwnam("nobody")
        self.nogroup = grp.getgrnam("nogroup")
        self.daemon = pwd.getpwnam("daemon")
        os.chmod(self.env.root, 0o711)

    def single_uid_layout(self):
        """The data directory as a single-uid server has it: all nobody's."""
        for dirpath, dirnames, filenames in os.walk(self.env.data):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.chown(name, self.nobody.pw_uid, self.nogroup.gr_gid)

    def server(self, *extra: str, **kw):
        return self.env.server("--workers", "2", "--user", "nobody", "--group", "nogroup",
                               "--auth-user", "daemon", *extra, **kw)

    def deliver_as_nobody(self, user: str, message: bytes) -> subprocess.CompletedProcess:
        """`apop deliver USER` run as the service user, as Postfix's pipe(8) would."""
        def become_nobody():
            os.setgroups([])
            os.setgid(self.nogroup.gr_gid)
            os.setuid(self.nobody.pw_uid)
        p = subprocess.run([self.env.bin, "deliver", "--data", self.env.data, user],
                           input=message, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=cli_sanitizer_env(dict(os.environ)), preexec_fn=become_nobody,
                           cwd="/", timeout=30)
        assert_no_sanitizer_report("apop deliver", p.stderr.decode(errors="replace"))
        return p

    def owner(self, *parts: str) -> tuple[int, int, int]:
        st = os.lstat(os.path.join(self.env.data, *parts))
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    def test_the_auth_process_alone_can_open_the_key_and_the_accounts(self):
        self.setup_alice([make_message("one", "first\n")])
        self.single_uid_layout()
        key = os.path.join(self.env.data, "secret.key")
        # Without the workers' Landlock restriction: the uids alone keep them out.
        with self.server("--no-sandbox",
                         extra_env={"APOP_TEST_WORKER_PROBE": f"open:{key}"}) as srv:
            lines = srv.wait_for_log(r"test probe: open ", count=2)
            for line in lines:
                self.assertIn(f"open {key}: Permission denied", line)
            srv.wait_for_log(r"auth_user: .*secret.key owner 1:1")
            kids = children(srv)
            for name, pid in kids.items():
                want = self.daemon.pw_uid if name == "auth" else self.nobody.pw_uid
                for t in proc_ids(pid):
                    self.assertEqual(t["Uid"], [str(want)] * 4, name)
            # The layout of cli/serve_split.hpp.
            d, n, ng = self.daemon.pw_uid, self.nobody.pw_uid, self.nogroup.gr_gid
            self.assertEqual(self.owner(), (d, ng, 0o710))
            self.assertEqual(self.owner("secret.key"), (d, self.daemon.pw_gid, 0o600))
            self.assertEqual(self.owner("users.sqlite"), (d, self.daemon.pw_gid, 0o600))
            for sub in ("mail", "locks", "mbox-journal"):
                self.assertEqual(self.owner(sub)[:2], (n, ng), sub)
            self.assertEqual(self.owner("auth-userdb"), (d, ng, 0o660))
            # Logins go through the auth process as before.
            c = srv.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 1"))
            status, _ = c.cmd_multi("RETR 1")
            self.assertTrue(status.startswith(b"+OK"))
            self.assertEqual(c.cmd("DELE 1")[:3], b"+OK")
            self.assertEqual(c.quit()[:3], b"+OK")
        # A second start finds the layout made and changes nothing.
        with self.server() as srv:
            c = srv.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 0"))
            c.quit()
            self.assertNotIn("auth_user: ", srv.log())
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "auth-userdb")))

    def test_deliver_as_the_service_user_asks_the_auth_process(self):
        self.setup_alice([])
        self.single_uid_layout()
        with self.server() as srv:
            srv.wait_for_log(r"auth-userdb socket ")
            # The service user cannot read the accounts itself any more.
            p = self.deliver_as_nobody("alice", make_message("hello", "through the socket\n"))
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertEqual(self.deliver_as_nobody("mallory", b"Subject: x\n\nx\n").returncode,
                             EX_NOUSER)
            c = srv.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 1"))
            status, body = c.cmd_multi("RETR 1")
            self.assertIn(b"through the socket", b"\n".join(body))
            c.quit()
            # The message belongs to the service user (the workers read and delete it).
            files = self.env.message_files("alice")
            self.assertEqual(os.stat(files[0]).st_uid, self.nobody.pw_uid)
        # No server, no socket, no readable database: a temporary failure
        # (the MTA keeps the message and retries), never "unknown user".
        p = self.deliver_as_nobody("alice", make_message("later", "x\n"))
        self.assertEqual(p.returncode, EX_TEMPFAIL, p.stderr.decode())

    def test_lmtp_process_delivers_as_the_service_user(self):
        """The LMTP process: a child of its own as the service user, sandboxed,
        which asks the auth process for each recipient (it cannot read the
        accounts), delivering files the workers then serve. The socket is
        bound by the master as root and given Postfix's kind of group."""
        self.setup_alice([])
        self.single_uid_layout()
        sock_dir = os.path.join(self.env.root, "spool")
        os.mkdir(sock_dir, 0o755)  # root's, as Postfix's private/ is
        sock = os.path.join(sock_dir, "apop-lmtp")
        with self.server("--lmtp-listen", "unix:" + sock, "--lmtp-socket-group", "nogroup",
                         "--lmtp-socket-owner", "daemon", "--lmtp-socket-mode", "0660") as srv:
            srv.wait_for_log(r"listening on unix:.* \(lmtp\)")
            st = os.lstat(sock)
            self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                             (self.daemon.pw_uid, self.nogroup.gr_gid, 0o660))
            pid = children(srv)["lmtp"]
            for t in proc_ids(pid):
                self.assertEqual(t["Uid"], [str(self.nobody.pw_uid)] * 4)
            with open(f"/proc/{pid}/status") as fh:
                self.assertIn("\nSeccomp:\t2\n", fh.read())
            import smtplib
            lmtp = smtplib.LMTP(sock)
            self.addCleanup(lmtp.close)
            lmtp.ehlo("t")
            msg = make_message("by lmtp", "through the auth-userdb socket\n", eol=b"\r\n")
            refused = lmtp.sendmail("s@example.org", ["alice@example.com", "mallory@x"], msg)
            self.assertEqual(list(refused), ["mallory@x"])
            self.assertEqual(refused["mallory@x"][0], 550)
            lmtp.quit()
            files = self.env.message_files("alice")
            self.assertEqual(len(files), 1)
            self.assertEqual(os.stat(files[0]).st_uid, self.nobody.pw_uid)
            c = srv.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 1"))
            c.quit()

    def test_deliver_through_the_socket_enforces_the_accounts_quota(self):
        # Issue 21: the auth process's user_info carries the account's limits.
        self.setup_alice([])
        self.env.check("user", "quota", "--data", self.env.data, "alice", "--messages", "1")
        self.single_uid_layout()
        with self.server() as srv:
            srv.wait_for_log(r"auth-userdb socket ")
            p = self.deliver_as_nobody("alice", make_message("one", "fits\n"))
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            p = self.deliver_as_nobody("alice", make_message("two", "over\n"))
            self.assertEqual(p.returncode, 77, p.stderr.decode())  # EX_NOPERM: a bounce
            self.assertIn(b"5.2.2 Mailbox full", p.stderr)
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_refusals(self):
        self.setup_alice([])
        for args, expect in (
                (("--workers", "0", "--auth-user", "daemon"), "auth_user needs workers"),
                (("--workers", "1", "--auth-user", "daemon"), "auth_user needs user"),
                (("--workers", "1", "--user", "nobody", "--auth-user", "nobody"),
                 "auth_user must be another user than user"),
                (("--workers", "1", "--user", "nobody", "--auth-user", "no-such-user-x"),
                 "auth_user: ")):
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0", *args)
            self.assertEqual(p.returncode, EX_CONFIG, (args, p.stderr.decode()))
            self.assertIn(expect, p.stderr.decode(), args)

    def test_a_key_that_is_a_link_is_not_handed_over(self):
        self.setup_alice([])
        self.single_uid_layout()
        key = os.path.join(self.env.data, "secret.key")
        elsewhere = os.path.join(self.env.root, "elsewhere")
        os.rename(key, elsewhere)
        os.symlink(elsewhere, key)
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--workers", "1", "--user", "nobody", "--group", "nogroup",
                         "--auth-user", "daemon")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("secret.key", p.stderr.decode())
        self.assertEqual(os.stat(elsewhere).st_uid, self.nobody.pw_uid)


if __name__ == "__main__":
    unittest.main()
