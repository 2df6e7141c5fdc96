"""Running as a service: `apop serve --user/--group` started as root binds, reads the TLS
key, then becomes that user for good before serving; the warning when root runs without a
user; clear failures. Root-only tests skip when not run as root (CI runs as root)."""

import glob
import os
import poplib
import pwd
import grp
import resource
import shutil
import signal
import ssl
import re
import subprocess
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message, needs, wait_until

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


# Root only (CI runs as root: there a non-root run is a failure, apoptest.needs).
@needs(IS_ROOT, "privilege drop needs root")
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

    def test_workers_drop_too_and_die_with_a_killed_master(self):
        """Regression: the kernel clears PR_SET_PDEATHSIG when a process's ids
        change, so children that dropped privileges outlived a master killed by
        SIGKILL -- still serving and holding maildrop locks."""
        self.setup_alice([make_message("one", "first\n")])
        self.give_data_to_nobody()
        srv = self.env.server("--user", "nobody", "--group", "nogroup", "--workers", "2")
        srv.start()
        self.addCleanup(srv.kill_quietly)
        started = r"(?:auth|worker \d+) started pid=(\d+)"
        wait_until(lambda: len(re.findall(started, srv.log())) == 3,
                   what="the auth process and the workers")
        srv.wait_for_log(r"auth process serving 2 workers")
        kids = [int(p) for p in re.findall(started, srv.log())]
        # Should this regress, the orphans must not outlive the test.
        self.addCleanup(lambda: [os.kill(p, signal.SIGKILL) for p in kids if os.path.exists(
            f"/proc/{p}/status")])
        c = srv.connect()
        self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK"))
        for pid in kids:
            for t in proc_ids(pid):
                self.assertEqual(t["Uid"], [str(self.nobody.pw_uid)] * 4)
        os.kill(srv.pid, signal.SIGKILL)

        def all_gone() -> bool:
            for pid in kids:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().split(") ")[1][0] != "Z":
                            return False
                except FileNotFoundError:
                    pass
            return True

        wait_until(all_gone, timeout=10, what="the children's exit after the master's")
        self.assertTrue(c.closed_by_server())

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

    # -- issue 17 item 2: the log file, opened as root before the drop -----------------
    def log_dir_of_nobody(self) -> str:
        """A log directory the service account owns (as /var/log/apop often is)."""
        d = os.path.join(self.env.root, "log")
        os.mkdir(d, 0o755)
        os.chown(d, self.nobody.pw_uid, self.nogroup.gr_gid)
        return d

    def victim(self) -> tuple[str, bytes]:
        """A root-owned file a compromised service account would like root to append to."""
        path = os.path.join(self.env.root, "victim")
        content = b"root:precious:0:0\n"
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o600)
        return path, content

    def serve_refused(self, log_path: str, *args: str) -> bytes:
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0", "--log",
                         "file:" + log_path, *args, timeout=20)
        self.assertEqual(p.returncode, EX_CONFIG, p.stderr)
        self.assertNotIn(b"listening on", p.stderr)
        self.assertIn(log_path.encode(), p.stderr)
        return p.stderr

    def test_log_file_symlink_is_refused_and_its_target_untouched(self):
        self.setup_alice()
        log = os.path.join(self.log_dir_of_nobody(), "apop.log")
        victim, content = self.victim()
        os.symlink(victim, log)
        err = self.serve_refused(log, "--user", "nobody", "--group", "nogroup")
        self.assertIn(b"symbolic link", err)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), content)

    def test_log_file_hard_link_is_refused_and_its_target_untouched(self):
        self.setup_alice()
        log = os.path.join(self.log_dir_of_nobody(), "apop.log")
        victim, content = self.victim()
        os.link(victim, log)
        err = self.serve_refused(log, "--user", "nobody", "--group", "nogroup")
        self.assertIn(b"2 hard links", err)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), content)

    def test_log_file_owned_by_another_user_is_refused(self):
        self.setup_alice()
        log = os.path.join(self.log_dir_of_nobody(), "apop.log")
        with open(log, "wb"):
            pass
        # Another uid than root or the service user.
        os.chown(log, 12345, 12345)
        err = self.serve_refused(log, "--user", "nobody", "--group", "nogroup")
        self.assertIn(b"owned by uid 12345", err)
        self.assertIn(b"service user nobody", err)
        # nobody's file, when the server does not run as nobody.
        os.chown(log, self.nobody.pw_uid, self.nogroup.gr_gid)
        err = self.serve_refused(log)
        self.assertIn(b"owned by uid 65534 (nobody)", err)
        self.assertEqual(os.path.getsize(log), 0)

    def test_log_file_of_root_or_the_service_user_works(self):
        from test_fail2ban import FileLogServer
        self.setup_alice()
        self.give_data_to_nobody()
        d = self.log_dir_of_nobody()
        for owner in (0, self.nobody.pw_uid):
            log = os.path.join(d, f"apop-{owner}.log")
            with open(log, "wb"):
                pass
            os.chown(log, owner, owner and self.nogroup.gr_gid)
            srv = FileLogServer(self.env, log, "--user", "nobody", "--group", "nogroup")
            self.env._servers.append(srv)
            with srv:
                srv.wait_for_log(r"running as user=nobody")
            with open(log, "rb") as f:
                self.assertIn(b"running as user=nobody", f.read())
        # A new file is created by root (mode 0640), as before.
        log = os.path.join(d, "new.log")
        srv = FileLogServer(self.env, log, "--user", "nobody", "--group", "nogroup")
        self.env._servers.append(srv)
        with srv:
            srv.wait_for_log(r"serving data=")
        self.assertEqual(os.stat(log).st_mode & 0o777, 0o640)

    def test_log_file_reopened_after_rotation_is_checked_too(self):
        """Root without --user reopens the log as root after rotation: a symbolic link
        planted in its place (by whoever owns the log directory) is not followed."""
        from test_fail2ban import FileLogServer
        self.setup_alice()
        log = os.path.join(self.log_dir_of_nobody(), "apop.log")
        victim, content = self.victim()
        srv = FileLogServer(self.env, log)
        self.env._servers.append(srv)
        with srv:
            srv.wait_for_log(r"serving data=")
            os.rename(log, log + ".1")
            os.symlink(victim, log)
            time.sleep(1.2)  # the rotation check runs at most once a second
            for attempt in range(2):
                p = poplib.POP3("127.0.0.1", srv.port)
                p.user(f"rotated{attempt}")
                with self.assertRaises(poplib.error_proto):
                    p.pass_("wrong")
                p.close()
            srv.wait_for_log(r"after log rotation: log file .*apop\.log is a symbolic link")
            def in_old_file() -> bool:
                with open(log + ".1", "rb") as f:
                    return b"user=rotated1 " in f.read()
            wait_until(in_old_file, what="the line in the old file")
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), content)

    # -- issue 17 item 11: no core dumps, the root group, supplementary groups ---------
    def serve_as_nobody_without_switching(self, *args: str):
        """`apop serve` exec'd as nobody (setpriv, as systemd's User= does): the kernel
        makes such a process dumpable, and its core limit is what it inherited."""
        self.setup_alice()
        self.give_data_to_nobody()
        srv = self.env.server(*args)
        srv.argv = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                    "--"] + srv.argv
        return srv

    def raise_core_limit(self):
        self.addCleanup(resource.setrlimit, resource.RLIMIT_CORE,
                        resource.getrlimit(resource.RLIMIT_CORE))
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    @staticmethod
    def core_limit(pid: int) -> list[str]:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max core file size"):
                    return line.split()[4:6]
        raise AssertionError("no core limit in /proc/PID/limits")

    def test_server_is_not_dumpable_and_has_no_core_limit(self):
        # The test's own limit is raised so that "0" can only come from the server.
        self.raise_core_limit()
        with self.serve_as_nobody_without_switching() as srv:
            srv.wait_for_log(r"serving data=")
            # A non-dumpable process's /proc files belong to root: another process of
            # user nobody cannot read its memory or environment, nor ptrace it.
            self.assertEqual(os.stat(f"/proc/{srv.pid}/mem").st_uid, 0)
            self.assertEqual(os.stat(f"/proc/{srv.pid}/environ").st_uid, 0)
            self.assertEqual(self.core_limit(srv.pid), ["0", "0"])
        # Also with --user (root, then the drop: which resets the flag).
        self.give_data_to_nobody()
        with self.env.server("--user", "nobody", "--group", "nogroup") as srv:
            srv.wait_for_log(r"serving data=")
            self.assertEqual(os.stat(f"/proc/{srv.pid}/mem").st_uid, 0)
            self.assertEqual(self.core_limit(srv.pid), ["0", "0"])

    def test_allow_core_dumps_keeps_the_process_dumpable(self):
        self.raise_core_limit()
        with self.serve_as_nobody_without_switching("--allow-core-dumps") as srv:
            srv.wait_for_log(r"serving data=")
            self.assertEqual(os.stat(f"/proc/{srv.pid}/mem").st_uid, self.nobody.pw_uid)
            # The hard limit as inherited (ASan's runtime lowers the soft one itself).
            self.assertEqual(self.core_limit(srv.pid)[1], "unlimited")

    def test_root_group_is_refused(self):
        self.setup_alice()
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0", "--user",
                         "nobody", "--group", "root", timeout=20)
        self.assertEqual(p.returncode, EX_CONFIG, p.stderr)
        self.assertIn(b"gid 0", p.stderr)
        self.assertNotIn(b"listening on", p.stderr)

    def test_supplementary_groups_of_the_service_user_are_dropped(self):
        # A throw-away account that is also in another group (as a service account
        # in adm or ssl-cert would be).
        tag = f"apopt{os.getpid() % 100000}"
        extra, user = tag + "x", tag + "u"
        subprocess.run(["groupadd", extra], check=True, capture_output=True)
        self.addCleanup(subprocess.run, ["groupdel", extra], capture_output=True)
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--groups",
                        extra, "--shell", "/usr/sbin/nologin", user], check=True,
                       capture_output=True)
        self.addCleanup(subprocess.run, ["userdel", user], capture_output=True)
        pw = pwd.getpwnam(user)
        self.assertIn(user, grp.getgrnam(extra).gr_mem)
        self.setup_alice()
        for dirpath, dirnames, filenames in os.walk(self.env.data):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.chown(name, pw.pw_uid, pw.pw_gid)
        with self.env.server("--user", user) as srv:
            srv.wait_for_log(r"serving data=")
            for t in proc_ids(srv.pid):
                self.assertEqual(t["Groups"], [str(pw.pw_gid)])
                self.assertEqual(t["Gid"], [str(pw.pw_gid)] * 4)


if __name__ == "__main__":
    unittest.main()
