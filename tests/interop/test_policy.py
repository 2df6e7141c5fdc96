"""Per-device APOP secrets and per-account policy, end to end: `apop user secret`,
`apop user policy`, and what `apop serve` then accepts (poplib, curl, raw sockets)."""

import base64
import hashlib
import hmac
import poplib
import sqlite3
import ssl
import subprocess
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, apop_digest, make_message, require_program
from test_tls import make_cert

MSG = make_message("policy", "body\n")


class DeviceSecretTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice([MSG])

    def secret_add(self, name, *extra, secret=None, expect=0):
        args = ["user", "secret", "add", "--data", self.env.data, "alice", "--name", name, *extra]
        if secret is not None:
            return self.env.check(*args, "--password-stdin", input=secret.encode() + b"\n",
                                  expect=expect)
        return self.env.check(*args, expect=expect)

    def test_generate_list_use_and_revoke_one(self):
        phone = self.secret_add("phone", "--generate").stdout.decode().strip()
        self.assertGreaterEqual(len(phone), 24)
        self.assertNotIn("\n", phone)
        laptop = self.secret_add("laptop", "--generate").stdout.decode().strip()
        self.assertNotEqual(phone, laptop)
        listed = self.env.check("user", "secret", "list", "--data", self.env.data, "alice")
        names = [l.split("\t")[0] for l in listed.stdout.decode().splitlines()]
        self.assertEqual(names, ["laptop", "phone"])
        self.assertNotIn(phone.encode(), listed.stdout + listed.stderr)
        # Never stored in clear.
        with open(self.env.data + "/users.sqlite", "rb") as fh:
            self.assertNotIn(phone.encode(), fh.read())

        with self.env.server() as srv:
            for secret, name in ((phone, "device:phone"), (laptop, "device:laptop"),
                                 (ALICE_SECRET, "password")):
                p = poplib.POP3("127.0.0.1", srv.port)
                p.apop("alice", secret)
                self.assertEqual(p.stat()[0], 1)
                p.quit()
                srv.wait_for_log(rf"login ok user=alice mech=APOP addr=\S+ tls=0 credential={name}")
            # Device secrets are not login passwords.
            p = poplib.POP3("127.0.0.1", srv.port)
            p.user("alice")
            with self.assertRaises(poplib.error_proto):
                p.pass_(phone)
            p.close()

            self.env.check("user", "secret", "revoke", "--data", self.env.data, "alice", "phone")
            p = poplib.POP3("127.0.0.1", srv.port)
            with self.assertRaisesRegex(poplib.error_proto, r"\[AUTH\]"):
                p.apop("alice", phone)
            p.close()
            for secret in (laptop, ALICE_SECRET):
                p = poplib.POP3("127.0.0.1", srv.port)
                p.apop("alice", secret)
                p.quit()
        self.env.check("user", "secret", "revoke", "--data", self.env.data, "alice", "phone",
                       expect=1)

    def test_secret_equal_to_password_and_bad_names_refused(self):
        r = self.secret_add("phone", secret=ALICE_SECRET, expect=1)
        self.assertIn(b"differ from the account password", r.stderr)
        self.secret_add("bad/name", "--generate", expect=1)
        self.secret_add("phone", secret="Phone-Secret-Strong-1")
        r = self.secret_add("phone", secret="Other-Secret-Strong-2", expect=1)
        self.assertIn(b"already exists", r.stderr)
        # Nor can the password become equal to a device secret.
        r = self.env.check("user", "passwd", "--data", self.env.data, "alice", "--password-stdin",
                           input=b"Phone-Secret-Strong-1\n", expect=1)
        self.assertIn(b"device secret", r.stderr)
        self.env.check("user", "secret", "add", "--data", self.env.data, "nobody", "--name", "x",
                       "--generate", expect=1)

    def test_cram_md5_with_device_secret_through_curl(self):
        curl = require_program("curl")
        phone = self.secret_add("phone", "--generate").stdout.decode().strip()
        with self.env.server() as srv:
            out = subprocess.run(
                [curl, "-s", "--user", f"alice:{phone}", "--login-options", "AUTH=CRAM-MD5",
                 f"pop3://127.0.0.1:{srv.port}/1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Subject: policy", out.stdout)
            srv.wait_for_log(r"login ok user=alice mech=CRAM-MD5 .*credential=device:phone")


class PolicyTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice([MSG])

    def policy(self, *args, user="alice", expect=0):
        target = ["--global"] if user is None else [user]
        return self.env.check("user", "policy", "--data", self.env.data, *target, *args,
                              expect=expect)

    def test_device_secrets_only_deletes_copy(self):
        phone = self.env.check("user", "secret", "add", "--data", self.env.data, "alice",
                               "--name", "phone", "--generate").stdout.decode().strip()
        out = self.policy("--device-secrets-only", "on").stdout.decode()
        self.assertIn("device-secrets-only: on\n", out)
        db = sqlite3.connect(self.env.data + "/users.sqlite")
        (copy,) = db.execute("SELECT sealed_password FROM users WHERE name='alice'").fetchone()
        db.close()
        self.assertIsNone(copy)
        show = self.env.check("user", "show", "--data", self.env.data, "alice").stdout.decode()
        self.assertIn("password usable for APOP/CRAM-MD5: no", show)
        with self.env.server() as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            with self.assertRaisesRegex(poplib.error_proto, r"\[AUTH\]"):
                p.apop("alice", ALICE_SECRET)
            p.close()
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("alice", phone)
            p.quit()
            p = poplib.POP3("127.0.0.1", srv.port)  # the hash still serves USER/PASS
            p.user("alice")
            p.pass_(ALICE_SECRET)
            p.quit()

    def test_mechanism_policy_fails_like_wrong_credentials(self):
        self.policy("--mechanisms", "scram-sha-256,user")
        with self.env.server() as srv:
            c = srv.connect()
            wrong = c.cmd("APOP alice " + apop_digest(c.timestamp, "wrong-secret"))
            refused = c.cmd("APOP alice " + apop_digest(c.timestamp, ALICE_SECRET))
            self.assertEqual(wrong, refused)  # no hint that the secret was right
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=\S+ tls=0 "
                             r"reason=policy policy=mechanism")
            p = poplib.POP3("127.0.0.1", srv.port)
            p.user("alice")
            p.pass_(ALICE_SECRET)
            p.quit()

    def test_per_user_apop_requires_tls(self):
        cert, key = make_cert(self.env.root, "pol")
        ctx = ssl.create_default_context(cafile=cert)
        self.policy("--apop-requires-tls", "on")
        self.env.add_user("bob", "Bob-Secret-Long-Enough-1")
        with self.env.server("--tls-cert", cert, "--tls-key", key) as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            with self.assertRaisesRegex(poplib.error_proto, r"\[AUTH\]"):
                p.apop("alice", ALICE_SECRET)
            p.close()
            srv.wait_for_log(r"reason=policy policy=apop-tls")
            # bob has no such policy: APOP in the clear works for him.
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("bob", "Bob-Secret-Long-Enough-1")
            p.quit()
            # After STLS, with the plaintext greeting's timestamp, alice gets in.
            p = poplib.POP3("127.0.0.1", srv.port)
            p.stls(context=ctx)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
            srv.wait_for_log(r"login ok user=alice mech=APOP addr=\S+ tls=1 credential=password")

    def test_per_user_md5_challenge_requires_tls_covers_cram_md5(self):
        # Issue 17 item 6: the account policy under its new name refuses
        # CRAM-MD5 outside TLS as it refuses APOP (reason policy=cram-md5-tls).
        out = self.policy("--md5-challenge-requires-tls", "on").stdout.decode()
        self.assertIn("md5-challenge-requires-tls: on\n", out)
        with self.env.server("--no-secure-loopback") as srv:
            def cram(user, secret):
                with srv.connect() as c:
                    r = c.cmd("AUTH CRAM-MD5")
                    self.assertTrue(r.startswith(b"+ "), r)
                    digest = hmac.new(secret.encode(), base64.b64decode(r[2:]),
                                      hashlib.md5).hexdigest()
                    return c.cmd(base64.b64encode(f"{user} {digest}".encode()).decode())
            self.assertEqual(cram("alice", ALICE_SECRET), b"-ERR [AUTH] Authentication failed.")
            srv.wait_for_log(r"login failed user=alice mech=CRAM-MD5 addr=\S+ tls=0 "
                             r"reason=policy policy=cram-md5-tls")
        out = self.policy("--apop-requires-tls", "off").stdout.decode()  # the older name
        self.assertIn("md5-challenge-requires-tls: off\n", out)
        with self.env.server("--no-secure-loopback") as srv:
            self.assertTrue(cram("alice", ALICE_SECRET).startswith(b"+OK"))

    def test_global_defaults_and_greeting_without_apop(self):
        out = self.policy("--mechanisms", "scram-sha-256,user", user=None).stdout.decode()
        self.assertIn("mechanisms: user,scram-sha-256\n", out)
        with self.env.server() as srv:
            c = srv.connect()
            self.assertNotIn(b"<", c.greeting)
            self.assertRegex(c.cmd("APOP alice 0123456789abcdef0123456789abcdef"), rb"^-ERR")
        # One account allowed APOP again: the timestamp is back.
        self.policy("--mechanisms", "apop")
        shown = self.policy().stdout.decode()
        self.assertIn("mechanisms: apop\n", shown)
        with self.env.server() as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("alice", ALICE_SECRET)
            p.quit()
        self.policy("--mechanisms", "default")
        self.assertIn("mechanisms: user,scram-sha-256 (default)",
                      self.policy().stdout.decode())

    def test_bad_policy_values(self):
        self.policy("--mechanisms", "apop,telepathy", expect=1)
        self.policy("--require-tls", "maybe", expect=64)
        self.env.check("user", "policy", "--data", self.env.data, expect=64)
        self.policy(user="nobody", expect=1)

    def test_bad_login_delay_and_expire_are_usage_errors(self):
        # Checked by CLI11 validators when the command line is parsed (exit 64,
        # "bad argument" in apop(8)), with the accepted forms in the message.
        for args, hint in ((["--login-delay", "abc"], b"or default"),
                           (["--login-delay", "86401"], b"or default"),
                           (["--login-delay", "-1"], b"or default"),
                           (["--expire", "sometimes"], b"never or default"),
                           (["--expire", "-3"], b"never or default")):
            with self.subTest(args=args):
                p = self.policy(*args, expect=64)
                self.assertIn(args[0].encode() + b":", p.stderr)
                self.assertIn(hint, p.stderr)
        self.policy("--login-delay", "default", "--expire", "never")


if __name__ == "__main__":
    unittest.main()
