"""Running as a service: `apop serve --user/--group` started as root binds, reads the TLS
key, then becomes that user for good before serving; the warning when root runs without a
user; clear failures. Root-only tests skip when not run as root (CI runs as root)."""

import glob
import os
import poplib
import pwd
import grp
import shutil
import signal
import ssl
import subprocess
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message

EX_CONFIG = 78
IS_ROOT = os.geteuid() == 0


def proc_ids(pid: int) -> list[dict]:
    """Uid/Gid/Groups/CapEff/CapPrm of every thread of `pid`."""
    out = []
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        fields = {}
        with open(status) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapAmb"):
                    fields[key] = value.split()
        out.append(fields)
    return out


def make_cert(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


@unittest.skipUnless(IS_ROOT, "privilege drop needs root")
class PrivilegeDropTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.nobody = pwd.getpwnam("nobody")
        self.nogroup = grp.getgrnam("nogroup")
        # nobody must be able to reach the data directory inside the test's tmp dir.
        os.chmod(self.env.root, 0o711)

    def give_data_to_nobody(self):
        for dirpath, dirnames, filenames in os.walk(self.env.data):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.chown(name, self.nobody.pw_uid, self.nogroup.gr_gid)

    def test_drops_to_user_and_group_for_good_and_serves_mail(self):
        self.setup_alice([make_message("one", "first\n"), make_message("two", "second\n")])
        self.give_data_to_nobody()
        with self.env.server("--user", "nobody", "--group", "nogroup") as srv:
            srv.wait_for_log(r"running as user=nobody uid=65534 group=nogroup gid=65534")
            srv.wait_for_log(r"serving data=")
            threads = proc_ids(srv.pid)
            self.assertGreaterEqual(len(threads), 2)  # the auth pool changed too
            for t in threads:
                uid, gid = str(self.nobody.pw_uid), str(self.nogroup.gr_gid)
                self.assertEqual(t["Uid"], [uid] * 4, "real, effective, saved, fs uid")
                self.assertEqual(t["Gid"], [gid] * 4, "real, effective, saved, fs gid")
                self.assertIn(t["Groups"], ([], [gid]))
                self.assertEqual(int(t["CapEff"][0], 16), 0)
                self.assertEqual(int(t["CapPrm"][0], 16), 0)
            # Dropped before any client input: the order of the log lines.
            log = srv.log()
            self.assertLess(log.index("running as user=nobody"), log.index("serving data="))
            self.assertNotIn("running as root", log)
            # A client logs in, reads and deletes (unlink as nobody in nobody's Maildir).
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 2)
            self.assertIn(b"first", b"\n".join(p.retr(1)[1]))
            p.dele(1)
            p.quit()
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_new_data_directory_belongs_to_the_user(self):
        parent = os.path.join(self.env.root, "state")
        os.mkdir(parent, 0o700)
        os.chown(parent, self.nobody.pw_uid, self.nogroup.gr_gid)
        data = os.path.join(parent, "data")
        with self.env.server("--user", "nobody", "--group", "nogroup", data=data) as srv:
            srv.wait_for_log(r"serving data=")
        for path in (data, os.path.join(data, "mail"), os.path.join(data, "users.sqlite"),
                     os.path.join(data, "secret.key")):
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (self.nobody.pw_uid, self.nogroup.gr_gid),
                             path)

    def test_data_directory_not_owned_by_the_user_is_a_clear_startup_error(self):
        self.setup_alice()
        os.chmod(self.env.data, 0o700)  # root's, as `apop user add` left it
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--user", "nobody", "--group", "nogroup", timeout=20)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"must be owned by user nobody", p.stderr)
        self.assertNotIn(b"listening on", p.stderr)

    def test_warns_loudly_when_root_runs_without_a_user(self):
        self.setup_alice()
        with self.env.server() as srv:
            line = srv.wait_for_log(r"running as root: set --user/--group")[0]
            self.assertIn(" warning ", line)
            self.assertEqual(proc_ids(srv.pid)[0]["Uid"][1], "0")

    def test_unknown_user_or_group_is_a_configuration_error(self):
        for args, text in ((["--user", "no-such-user-apop"], b"no such user"),
                           (["--user", "nobody", "--group", "no-such-group-apop"],
                            b"no such group"),
                           (["--group", "nogroup"], b"without user"),
                           (["--user", "root"], b"is root")):
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0", *args,
                             timeout=20)
            self.assertEqual(p.returncode, EX_CONFIG, (args, p.stderr))
            self.assertIn(text, p.stderr)
            self.assertNotIn(b"listening on", p.stderr)

    def test_non_root_cannot_switch_user(self):
        shutil.chown(self.env.root, "nobody", "nogroup")
        daemon = pwd.getpwnam("daemon")

        def as_nobody():
            os.setgroups([])
            os.setgid(self.nogroup.gr_gid)
            os.setuid(self.nobody.pw_uid)

        p = subprocess.run([self.env.bin, "serve", "--data", self.env.data, "--listen",
                            "127.0.0.1:0", "--user", daemon.pw_name], preexec_fn=as_nobody,
                           capture_output=True, timeout=20, cwd=self.env.root)
        self.assertEqual(p.returncode, EX_CONFIG, p.stderr)
        self.assertIn(b"not running as root", p.stderr)
        self.assertNotIn(b"listening on", p.stderr)

    def test_root_only_tls_key_is_read_before_the_drop_and_a_reload_keeps_it(self):
        self.setup_alice([make_message("tls", "over tls\n")])
        self.give_data_to_nobody()
        tls_dir = os.path.join(self.env.root, "tls")
        os.mkdir(tls_dir, 0o700)  # root only, like /etc/letsencrypt/archive
        cert, key = make_cert(tls_dir)
        os.chmod(key, 0o600)
        ctx = ssl.create_default_context(cafile=cert)
        with self.env.server("--user", "nobody", "--group", "nogroup", "--tls-cert", cert,
                             "--tls-key", key, tls_listen=["127.0.0.1:0"]) as srv:
            port = srv.tls_ports[0]
            os.kill(srv.pid, signal.SIGHUP)
            # The certificate directory is root's: reading it again is refused, clearly.
            srv.wait_for_log(r"reload failed, keeping the .*Permission denied.*runs as user "
                             r"nobody: the files it re-reads must be readable by it")
            p = poplib.POP3_SSL("localhost", port, context=ctx)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()


if __name__ == "__main__":
    unittest.main()
