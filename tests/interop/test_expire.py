"""RFC 2449 LOGIN-DELAY and EXPIRE end to end: `apop serve --login-delay/--expire`
(and the config file keys), `apop user policy --login-delay/--expire`, checked with
Python's poplib (capa(), apop, retr) and raw sockets."""

import os
import poplib
import time

from apoptest import ALICE_SECRET, ApopTestCase, make_message

DAY = 86400


def age_files(paths, days):
    """Sets the mtime (the delivery time the server reads) `days` back."""
    t = time.time() - days * DAY
    for p in paths:
        os.utime(p, (t, t))


class ExpireTestCase(ApopTestCase):
    def pop(self, srv) -> poplib.POP3:
        p = poplib.POP3("127.0.0.1", srv.port, timeout=10)
        self.addCleanup(p.close)
        return p

    def policy(self, *args):
        return self.env.check("user", "policy", "--data", self.env.data, "alice", *args)

    def deliver_three(self):
        """Two messages delivered 10 days ago (by mtime), one now."""
        self.setup_alice([make_message("old-1", "a\n"), make_message("old-2", "b\n"),
                          make_message("recent", "c\n")])
        files = self.env.message_files("alice")
        self.assertEqual(len(files), 3)
        old = []
        for f in files:
            with open(f, "rb") as fh:
                if b"Subject: old-" in fh.read():
                    old.append(f)
        self.assertEqual(len(old), 2)
        age_files(old, 10)


class CapaTest(ExpireTestCase):
    def test_defaults_are_announced(self):
        self.setup_alice()
        with self.env.server() as srv:
            p = self.pop(srv)
            caps = p.capa()
            self.assertEqual(caps["LOGIN-DELAY"], ["0"])
            self.assertEqual(caps["EXPIRE"], ["NEVER"])
            p.apop("alice", ALICE_SECRET)
            caps = p.capa()
            self.assertEqual(caps["LOGIN-DELAY"], ["0"])
            self.assertEqual(caps["EXPIRE"], ["NEVER"])
            p.quit()

    def test_before_login_the_server_values_with_user_after_login_the_users(self):
        self.setup_alice()
        self.env.add_user("bob", "bobs-long-secret-1")
        self.policy("--login-delay", "600", "--expire", "never")
        with self.env.server("--login-delay", "120", "--expire", "30") as srv:
            p = self.pop(srv)
            caps = p.capa()
            # RFC 2449 §6.5/§6.7: values may differ per user -> "USER" before login.
            self.assertEqual(caps["LOGIN-DELAY"], ["120", "USER"])
            self.assertEqual(caps["EXPIRE"], ["30", "USER"])
            p.apop("alice", ALICE_SECRET)
            caps = p.capa()
            self.assertEqual(caps["LOGIN-DELAY"], ["600"])
            self.assertEqual(caps["EXPIRE"], ["NEVER"])
            p.quit()
            b = self.pop(srv)
            b.apop("bob", "bobs-long-secret-1")
            caps = b.capa()
            self.assertEqual(caps["LOGIN-DELAY"], ["120"])
            self.assertEqual(caps["EXPIRE"], ["30"])
            b.quit()

    def test_no_user_suffix_when_every_account_follows_the_defaults(self):
        self.setup_alice()
        with self.env.server("--login-delay", "60", "--expire", "7") as srv:
            with srv.connect() as c:
                _, caps = c.cmd_multi("CAPA")
                self.assertIn(b"LOGIN-DELAY 60", caps)
                self.assertIn(b"EXPIRE 7", caps)


class LoginDelayTest(ExpireTestCase):
    def test_second_login_too_soon_is_refused_after_correct_credentials_only(self):
        self.setup_alice([make_message("one", "body\n")])
        with self.env.server("--login-delay", "3600") as srv:
            p = self.pop(srv)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
            srv.wait_for_log(r"login ok user=alice")
            # Correct credentials, too soon: [LOGIN-DELAY], the maildrop stays closed.
            q = self.pop(srv)
            with self.assertRaises(poplib.error_proto) as cm:
                q.apop("alice", ALICE_SECRET)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR [LOGIN-DELAY] "),
                            cm.exception.args[0])
            # A wrong secret is still [AUTH]: the delay reveals nothing to guessers.
            with self.assertRaises(poplib.error_proto) as cm:
                q.apop("alice", "not-the-secret-at-all")
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH] "),
                            cm.exception.args[0])
            lines = srv.wait_for_log(r"login refused user=alice mech=APOP .*reason=login-delay "
                                     r"retry_after=\d+")
            self.assertTrue(lines)
            # Not a failed login (fail2ban must not ban a user for polling too often).
            # (Wait for the wrong secret's line: the log is read from a pipe.)
            srv.wait_for_log(r"login failed user=alice ")
            failed = [l for l in srv.log().splitlines() if "login failed" in l]
            self.assertEqual(len(failed), 1, failed)  # the wrong secret only
            self.assertIn("reason=auth", failed[0])
            # USER/PASS (loopback is secure) is refused the same way.
            with srv.connect() as c:
                self.assertTrue(c.cmd("USER alice").startswith(b"+OK"))
                self.assertTrue(c.cmd(f"PASS {ALICE_SECRET}").startswith(b"-ERR [LOGIN-DELAY] "))
        shown = self.env.check("user", "show", "--data", self.env.data, "alice").stdout.decode()
        self.assertIn("login-delay: default (apop serve login_delay)", shown)
        self.assertNotIn("last login: never", shown)

    def test_last_login_is_written_behind_while_the_server_runs(self):
        # apop serve notes last-login times in memory (LOGIN-DELAY holds at
        # once in the process) and writes them about once a second: another
        # process sees the login soon, without a restart.
        self.setup_alice()
        with self.env.server("--login-delay", "3600") as srv:
            p = self.pop(srv)
            p.apop("alice", ALICE_SECRET)
            p.quit()
            deadline = time.monotonic() + 10
            shown = ""
            while time.monotonic() < deadline:
                shown = self.env.check("user", "show", "--data", self.env.data,
                                       "alice").stdout.decode()
                if "last login: never" not in shown:
                    break
                time.sleep(0.2)
            self.assertNotIn("last login: never", shown)
            # And in the process itself it held at once.
            q = self.pop(srv)
            with self.assertRaises(poplib.error_proto) as cm:
                q.apop("alice", ALICE_SECRET)
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR [LOGIN-DELAY] "))

    def test_per_user_delay_and_no_delay_for_others(self):
        self.setup_alice()
        self.env.add_user("bob", "bobs-long-secret-1")
        self.policy("--login-delay", "3600")
        with self.env.server() as srv:
            for _ in range(2):
                b = self.pop(srv)
                b.apop("bob", "bobs-long-secret-1")
                b.quit()
            a = self.pop(srv)
            a.apop("alice", ALICE_SECRET)
            a.quit()
            a2 = self.pop(srv)
            with self.assertRaises(poplib.error_proto) as cm:
                a2.apop("alice", ALICE_SECRET)
            self.assertIn(b"[LOGIN-DELAY]", cm.exception.args[0])
        # Back to the default (none): the next login works at once.
        self.policy("--login-delay", "default")
        with self.env.server() as srv:
            a = self.pop(srv)
            a.apop("alice", ALICE_SECRET)
            a.quit()


class ExpireTest(ExpireTestCase):

    def test_old_messages_go_at_quit_and_not_on_a_dropped_connection(self):
        self.deliver_three()
        with self.env.server("--expire", "5") as srv:
            # Dropped connection: no UPDATE state, nothing is deleted.
            with srv.connect() as c:
                c.login("alice", ALICE_SECRET)
                self.assertTrue(c.cmd("STAT").startswith(b"+OK 3 "))
                c.abort()
            # The session is over (and its maildrop lock released) once the server
            # logs its logout; only then may the next login come (else [IN-USE]).
            srv.wait_for_log(r"logout user=alice .*reason=disconnected", timeout=30)
            self.assertEqual(len(self.env.message_files("alice")), 3)
            # QUIT: the two old ones are removed with the DELE'd ones (none here).
            p = self.pop(srv)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 3)  # still listed during the session
            self.assertIn(b"1 message left", p.quit())
        left = self.env.stored_messages("alice")
        self.assertEqual(len(left), 1)
        self.assertIn(b"Subject: recent", left[0])

    def test_expire_never_keeps_everything(self):
        self.deliver_three()
        with self.env.server() as srv:
            p = self.pop(srv)
            p.apop("alice", ALICE_SECRET)
            p.quit()
        self.assertEqual(len(self.env.message_files("alice")), 3)

    def test_expire_zero_deletes_retrieved_messages_at_quit(self):
        self.setup_alice([make_message("one", "a\n"), make_message("two", "b\n")])
        with self.env.server("--expire", "0") as srv:
            p = self.pop(srv)
            self.assertEqual(p.capa()["EXPIRE"], ["0"])
            p.apop("alice", ALICE_SECRET)
            p.retr(1)
            p.top(2, 0)
            p.quit()
        left = self.env.stored_messages("alice")
        self.assertEqual(len(left), 1)
        self.assertIn(b"Subject: two", left[0])

    def test_per_user_expire_overrides_the_default(self):
        self.deliver_three()
        self.policy("--expire", "1")
        shown = self.env.check("user", "show", "--data", self.env.data, "alice").stdout.decode()
        self.assertIn("expire: 1 day", shown)
        with self.env.server() as srv:
            p = self.pop(srv)
            self.assertEqual(p.capa()["EXPIRE"], ["NEVER", "USER"])
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.capa()["EXPIRE"], ["1"])
            p.quit()
        self.assertEqual(len(self.env.message_files("alice")), 1)


class ConfigTest(ExpireTestCase):
    def write(self, text):
        path = os.path.join(self.env.root, "apop.toml")
        with open(path, "w") as fh:
            fh.write(text)
        return path

    def test_file_takes_an_integer_or_never(self):
        for value, dumped in (("0", '"0"'), ("30", '"30"'), ('"never"', '"never"'),
                              ('"45"', '"45"')):
            path = self.write(f'listen = ["127.0.0.1:0"]\nlogin_delay = 90\nexpire = {value}\n')
            out = self.env.check("config", "check", "--config", path).stdout.decode()
            self.assertIn("login_delay = 90\n", out)
            self.assertIn(f"expire = {dumped}\n", out)

    def test_bad_values_are_named(self):
        for text, key in (('expire = "soon"\n', "expire"), ("expire = -1\n", "expire"),
                          ("expire = true\n", "expire"), ("login_delay = 999999\n", "login_delay"),
                          ('login_delay = "x"\n', "login_delay")):
            path = self.write('listen = ["127.0.0.1:0"]\n' + text)
            p = self.env.check("config", "check", "--config", path, expect=78)
            self.assertIn(key, p.stderr.decode(), text)

    def test_config_file_expire_is_applied(self):
        self.deliver_three()
        path = self.write("expire = 2\n")
        with self.env.server("--config", path) as srv:
            p = self.pop(srv)
            self.assertEqual(p.capa()["EXPIRE"], ["2"])
            p.apop("alice", ALICE_SECRET)
            p.quit()
        self.assertEqual(len(self.env.message_files("alice")), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
