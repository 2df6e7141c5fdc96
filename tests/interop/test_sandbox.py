"""The network workers' seccomp allow-list (src/net/sandbox.hpp) on the real
server: the experimental `apop serve --sandbox` applies it (plus the SQLite
set) to today's single-process server after start-up. The poplib, TLS
(implicit, STLS, SIGHUP reload), SASL, Maildir, listing-cache and mbox
(dotlock, rewrite, in place) suites run unchanged against it: any system
call outside the list kills the server with SIGSYS, which fails the test
(no greeting, or an exit status other than 0 after SIGTERM)."""
import os
import signal
import unittest
from unittest import mock

from apoptest import (ALICE_SECRET, ApopTestCase, cli_sanitizer_env, make_message,
                      servers_with)

import test_fail2ban
import test_maildir
import test_maildir_cache
import test_mbox
import test_mbox_inplace
import test_poplib
import test_sasl
import test_tls


def sandboxed_env(env: dict) -> dict:
    """Under ASan, without LeakSanitizer's exit scan: it stops the world with
    a ptrace'd thread, which the sandbox (rightly) kills."""
    return cli_sanitizer_env(dict(env, APOP_TEST_CLI_LEAKS="0"))


# Mixin: every server the test starts runs with --sandbox.
Sandboxed = servers_with("--sandbox")


def status_fields(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


class SandboxOnTest(Sandboxed, ApopTestCase):
    def test_filter_is_loaded_and_the_server_serves_and_stops(self):
        self.setup_alice([make_message("one", "hello")])
        with self.env.server() as srv:
            srv.wait_for_log(r"seccomp sandbox applied")
            st = status_fields(srv.pid)
            self.assertEqual(st["NoNewPrivs"], "1")
            self.assertEqual(st["Seccomp"], "2")  # filter mode
            # Every thread (the auth pool, the SQLite writer) has it too.
            for tid in os.listdir(f"/proc/{srv.pid}/task"):
                with open(f"/proc/{srv.pid}/task/{tid}/status") as f:
                    self.assertIn("Seccomp:\t2", f.read(), f"thread {tid}")
            for _ in range(3):
                with srv.connect() as c:
                    self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK"))
                    self.assertTrue(c.cmd("STAT").startswith(b"+OK 1 "))
                    self.assertTrue(c.quit().startswith(b"+OK"))
            os.kill(srv.pid, signal.SIGHUP)  # reload: re-reads the configuration
            srv.wait_for_log(r"config reloaded")
            os.kill(srv.pid, 0)
            with srv.connect() as c:
                self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK"))
                self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
                self.assertTrue(c.quit().startswith(b"+OK"))
            os.kill(srv.pid, 0)
        self.assertEqual(self.env.stored_messages("alice"), [])

    def test_refused_with_metrics_or_syslog(self):
        self.setup_alice()
        env = sandboxed_env(dict(os.environ))
        for extra, why in ((["--metrics-listen", "127.0.0.1:0"], "cannot serve metrics"),
                           (["--log", "syslog"], "cannot log to syslog")):
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                             "--workers", "0", "--sandbox", *extra, env=env)
            self.assertNotEqual(p.returncode, 0, extra)
            log = p.stderr.decode()
            if extra[0] == "--log":
                continue  # the refusal went to syslog
            self.assertIn("--sandbox " + why, log)

    def test_refused_with_workers(self):
        # The one-process experiment; network workers are sandboxed already.
        self.setup_alice()
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--workers", "2", "--sandbox")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--sandbox is the one-process server's experiment", p.stderr.decode())

    def test_hidden_from_help(self):
        p = self.env.run("serve", "--help")
        self.assertEqual(p.returncode, 0)
        self.assertNotIn("--sandbox", p.stdout.decode())


class SandboxedFileLogServer(test_fail2ban.FileLogServer):
    def __init__(self, env, log_path: str, *args: str, **kw):
        extra = dict(kw.pop("extra_env", None) or {})
        if os.environ.get("ASAN_OPTIONS"):
            extra["ASAN_OPTIONS"] = sandboxed_env(dict(os.environ))["ASAN_OPTIONS"]
        super().__init__(env, log_path, *args, "--sandbox", extra_env=extra, **kw)


class SandboxLogFileRotationTest(test_fail2ban.LogFileRotation):
    """log = file:PATH under the sandbox: writes, and the reopen after rotation."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(test_fail2ban, "FileLogServer", SandboxedFileLogServer)
        patcher.start()
        self.addCleanup(patcher.stop)


# The existing suites, each server under the sandbox.
class SandboxPoplibTest(Sandboxed, test_poplib.PoplibTest):
    pass


class SandboxMaildirTest(Sandboxed, test_maildir.MaildirTest):
    pass


class SandboxMaildirCacheTest(Sandboxed, test_maildir_cache.MaildirCacheTest):
    pass


class SandboxImplicitTlsTest(Sandboxed, test_tls.ImplicitTlsTest):
    pass


class SandboxStlsTest(Sandboxed, test_tls.StlsTest):
    pass


class SandboxTlsReloadTest(Sandboxed, test_tls.ReloadTest):
    pass


class SandboxSaslTest(Sandboxed, test_sasl.SaslTest):
    pass


class SandboxMboxTest(Sandboxed, test_mbox.MboxTest):
    pass


class SandboxMboxInPlaceTest(Sandboxed, test_mbox_inplace.MboxInPlaceTest):
    pass


if __name__ == "__main__":
    unittest.main()
