"""The `apop` subcommands: user add/del/list/passwd, deliver, data directory handling."""

import os
import re
import stat
import subprocess
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, EX_NOUSER, EX_TEMPFAIL, EX_USAGE,
                      ApopTestCase, crlf, make_message)

MSG = make_message("cli", "delivered by the cli test\n")


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class UserTest(ApopTestCase):

    def login_works(self, user: str, secret: str, srv) -> bool:
        with srv.connect() as c:
            ok = c.apop(user, secret).startswith(b"+OK")
            c.cmd("QUIT")
            return ok

    def test_add_list_del(self):
        self.assertEqual(self.env.users(), [])
        self.env.add_user("alice", ALICE_SECRET)
        self.env.add_user("bob", BOB_SECRET)
        self.assertEqual(sorted(self.env.users()), ["alice", "bob"])
        # Adding an existing user fails and changes nothing.
        p = self.env.run("user", "add", "--data", self.env.data, "alice", "--password-stdin",
                         input=b"some-other-Secret-991\n")
        self.assertNotEqual(p.returncode, 0)
        with self.env.server() as srv:
            self.assertTrue(self.login_works("alice", ALICE_SECRET, srv))
            self.assertFalse(self.login_works("alice", "some-other-Secret-991", srv))
        self.env.check("user", "del", "--data", self.env.data, "bob")
        self.assertEqual(self.env.users(), ["alice"])
        # Deleting a missing user is an error.
        self.assertNotEqual(self.env.run("user", "del", "--data", self.env.data, "bob")
                            .returncode, 0)
        with self.env.server() as srv:
            self.assertFalse(self.login_works("bob", BOB_SECRET, srv))
            self.assertTrue(self.login_works("alice", ALICE_SECRET, srv))
        # A deleted user gets no mail.
        self.env.deliver("bob", MSG, expect=EX_NOUSER)

    def test_list_one_name_per_line(self):
        names = ["alice", "bob", "carol.smith", "dave+x", "eve-2"]
        for n in names:
            self.env.add_user(n, ALICE_SECRET)
        p = self.env.check("user", "list", "--data", self.env.data)
        self.assertEqual(sorted(p.stdout.decode().splitlines()), sorted(names))

    def test_invalid_user_names_refused(self):
        for bad in ("../evil", "a/b", ".hidden", "", "x" * 65, "sp ace", "-dash"):
            p = self.env.run("user", "add", "--data", self.env.data, bad, "--password-stdin",
                             input=ALICE_SECRET.encode() + b"\n")
            self.assertNotEqual(p.returncode, 0, bad)
        self.assertEqual(self.env.users(), [])
        self.assertFalse(os.path.exists(os.path.join(self.env.root, "evil")))
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "evil")))

    def test_passwd(self):
        self.env.add_user("alice", ALICE_SECRET)
        new = "fresh-Harbor-5521-tulip"
        self.env.check("user", "passwd", "--data", self.env.data, "alice", "--password-stdin",
                       input=new.encode() + b"\n")
        with self.env.server() as srv:
            self.assertFalse(self.login_works("alice", ALICE_SECRET, srv))
            self.assertTrue(self.login_works("alice", new, srv))
        p = self.env.check("user", "passwd", "--data", self.env.data, "alice", "--generate")
        generated = generated_secret(self, p.stdout)
        with self.env.server() as srv:
            self.assertFalse(self.login_works("alice", new, srv))
            self.assertTrue(self.login_works("alice", generated, srv))
        # Weak secrets are refused for passwd too; passwd of a missing user fails.
        p = self.env.run("user", "passwd", "--data", self.env.data, "alice", "--password-stdin",
                         input=b"Zq7mw!x\n")
        self.assertEqual(p.returncode, 1, p.stderr)
        p = self.env.run("user", "passwd", "--data", self.env.data, "nobody",
                         "--password-stdin", input=new.encode() + b"\n")
        self.assertNotEqual(p.returncode, 0)

    def test_weak_secrets_refused_unless_allow_weak(self):
        for weak in ("Zq7mw!x", "elevenchars", "password1234", "qwertyuiopasdf", "Password2024!"):
            p = self.env.run("user", "add", "--data", self.env.data, "alice",
                             "--password-stdin", input=weak.encode() + b"\n")
            self.assertEqual(p.returncode, 1, (weak, p.stdout, p.stderr))
            self.assertNotIn(weak.encode(), p.stdout + p.stderr)
        self.assertEqual(self.env.users(), [])
        self.env.check("user", "add", "--data", self.env.data, "alice", "--password-stdin",
                       "--allow-weak", input=b"Zq7mw!x\n")
        self.assertEqual(self.env.users(), ["alice"])
        with self.env.server() as srv:
            self.assertTrue(self.login_works("alice", "Zq7mw!x", srv))

    def test_generate(self):
        p = self.env.check("user", "add", "--data", self.env.data, "alice", "--generate")
        secret = generated_secret(self, p.stdout)
        self.assertNotIn(secret.encode(), p.stderr)
        p2 = self.env.check("user", "add", "--data", self.env.data, "bob", "--generate")
        self.assertNotEqual(generated_secret(self, p2.stdout), secret)
        with self.env.server() as srv:
            self.assertTrue(self.login_works("alice", secret, srv))
            self.assertNotIn(secret, srv.log())

    def test_secret_at_rest(self):
        self.env.add_user("alice", ALICE_SECRET)
        db = os.path.join(self.env.data, "users.sqlite")
        key = os.path.join(self.env.data, "secret.key")
        self.assertEqual(mode(db), 0o600)
        self.assertEqual(mode(key), 0o600)
        # No plaintext secret anywhere in the data directory (db, journal/WAL, key).
        for dirpath, _, files in os.walk(self.env.data):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    content = fh.read()
                self.assertNotIn(ALICE_SECRET.encode(), content, f)
                self.assertNotIn(ALICE_SECRET.encode("utf-16-le"), content, f)
        # After passwd too.
        self.env.check("user", "passwd", "--data", self.env.data, "alice", "--password-stdin",
                       input=BOB_SECRET.encode() + b"\n")
        self.assertEqual(mode(db), 0o600)
        with open(db, "rb") as fh:
            self.assertNotIn(BOB_SECRET.encode(), fh.read())

    def test_password_stdin_takes_first_line_only(self):
        self.env.check("user", "add", "--data", self.env.data, "alice", "--password-stdin",
                       input=ALICE_SECRET.encode() + b"\nsecond line ignored\n")
        self.env.check("user", "add", "--data", self.env.data, "bob", "--password-stdin",
                       input=BOB_SECRET.encode())  # no newline at all
        with self.env.server() as srv:
            self.assertTrue(self.login_works("alice", ALICE_SECRET, srv))
            self.assertTrue(self.login_works("bob", BOB_SECRET, srv))


def generated_secret(test: unittest.TestCase, stdout: bytes) -> str:
    text = stdout.decode().strip()
    test.assertTrue(text, "nothing printed")
    secret = text.splitlines()[-1].split()[-1]
    test.assertGreaterEqual(len(secret), 24, text)
    test.assertRegex(secret, r"^[\x21-\x7e]+$")
    return secret


class DeliverTest(ApopTestCase):

    def test_exit_codes(self):
        self.env.add_user("alice", ALICE_SECRET)
        self.assertEqual(self.env.deliver("alice", MSG).returncode, 0)
        self.env.deliver("nosuchuser", MSG, expect=EX_NOUSER)
        self.env.check("deliver", "--data", self.env.data, input=MSG, expect=EX_USAGE)
        self.env.check("deliver", "--data", self.env.data, "--no-such-option", "alice",
                       input=MSG, expect=EX_USAGE)
        self.assertEqual(len(self.env.message_files("alice")), 1)
        self.assertFalse(os.path.exists(self.env.maildir("nosuchuser")))

    def test_atomic_delivery_layout(self):
        self.env.add_user("alice", ALICE_SECRET)
        msgs = [make_message(f"m{i}", f"message {i}\n" * (i + 1)) for i in range(5)]
        for m in msgs:
            self.env.deliver("alice", m)
        for sub in ("new", "cur", "tmp"):
            self.assertTrue(os.path.isdir(os.path.join(self.env.maildir("alice"), sub)), sub)
        self.assertEqual(self.env.tmp_files("alice"), [])
        files = self.env.message_files("alice")
        self.assertEqual(len(files), 5)
        self.assertEqual(sorted(self.env.stored_messages("alice")), sorted(msgs))
        # Sizes are cached in the file name as Dovecot does: ,S=<file size> ,W=<CRLF size>.
        for f in files:
            name = os.path.basename(f)
            self.assertNotIn("/", name)
            with open(f, "rb") as fh:
                content = fh.read()
            m = re.search(r",S=(\d+)", name)
            self.assertIsNotNone(m, name)
            self.assertEqual(int(m.group(1)), len(content), name)
            w = re.search(r",W=(\d+)", name)
            self.assertIsNotNone(w, name)
            self.assertEqual(int(w.group(1)), len(crlf(content)), name)

    def test_temporary_failure_exits_75_and_leaves_nothing(self):
        self.env.add_user("alice", ALICE_SECRET)
        self.env.deliver("alice", MSG)
        # Break the Maildir: tmp/ is a plain file, so nothing can be written there.
        tmp = os.path.join(self.env.maildir("alice"), "tmp")
        os.rmdir(tmp)
        with open(tmp, "w") as f:
            f.write("not a directory\n")
        before = self.env.message_files("alice")
        p = self.env.deliver("alice", make_message("fails", "x\n"), expect=EX_TEMPFAIL)
        self.assertEqual(self.env.message_files("alice"), before, p.stderr)

    def test_binary_and_large_message_stored_unchanged(self):
        self.env.add_user("alice", ALICE_SECRET)
        big = make_message("big", b"".join(b"%08d \xff\x00\r\n" % i for i in range(200000)))
        self.env.deliver("alice", big)
        self.assertEqual(self.env.stored_messages("alice"), [big])


class DataDirTest(ApopTestCase):

    def test_apop_data_env_var(self):
        d = os.path.join(self.env.root, "from-env")
        e = {"APOP_DATA": d}
        self.env.check("user", "add", "alice", "--password-stdin",
                       input=ALICE_SECRET.encode() + b"\n", env=e)
        self.assertTrue(os.path.isfile(os.path.join(d, "users.sqlite")))
        self.assertEqual(self.env.check("user", "list", env=e).stdout.decode().split(),
                         ["alice"])
        self.env.check("deliver", "alice", input=MSG, env=e)
        self.assertEqual(len(os.listdir(os.path.join(d, "mail", "alice", "new"))) +
                         len(os.listdir(os.path.join(d, "mail", "alice", "cur"))), 1)
        with self.env.server(use_data_flag=False, extra_env=e) as srv:
            with srv.connect() as c:
                c.login("alice", ALICE_SECRET)
                self.assertEqual(c.cmd("STAT"), b"+OK 1 %d" % len(crlf(MSG)))
                c.quit()
        # --data wins over APOP_DATA.
        self.env.check("user", "add", "--data", self.env.data, "bob", "--password-stdin",
                       input=BOB_SECRET.encode() + b"\n", env=e)
        self.assertEqual(self.env.check("user", "list", env=e).stdout.decode().split(),
                         ["alice"])
        self.assertEqual(self.env.users(), ["bob"])

    def test_default_data_dir_is_created_on_first_start(self):
        cwd = os.path.join(self.env.root, "cwd")
        os.makedirs(cwd)
        with self.env.server(use_data_flag=False, cwd=cwd) as srv:
            with srv.connect() as c:
                self.assertTrue(c.greeting.startswith(b"+OK"))
        d = os.path.join(cwd, "apop-data")
        self.assertTrue(os.path.isdir(os.path.join(d, "mail")))
        self.assertTrue(os.path.isfile(os.path.join(d, "users.sqlite")))
        self.assertTrue(os.path.isfile(os.path.join(d, "secret.key")))
        self.assertEqual(mode(os.path.join(d, "users.sqlite")), 0o600)
        self.assertEqual(mode(os.path.join(d, "secret.key")), 0o600)
        self.env.check("user", "add", "carol", "--password-stdin", cwd=cwd,
                       input=ALICE_SECRET.encode() + b"\n")
        self.assertEqual(self.env.check("user", "list", "--data", d).stdout.decode().split(),
                         ["carol"])

    def test_usage_errors(self):
        self.env.check("serve", "--no-such-option", expect=EX_USAGE)
        self.env.check("no-such-subcommand", expect=EX_USAGE)
        p = self.env.run("serve", "--data", self.env.data, "--listen", "not-an-address",
                         timeout=15)
        self.assertIn(p.returncode, (1, EX_USAGE), p.stderr)
        p = self.env.run("--help")
        self.assertEqual(p.returncode, 0)
        for sub in (b"serve", b"user", b"deliver"):
            self.assertIn(sub, p.stdout + p.stderr)

    def test_version_is_the_cmake_project_version(self):
        # One source of truth: project(apop VERSION x.y.z) in CMakeLists.txt.
        top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        with open(os.path.join(top, "CMakeLists.txt")) as f:
            m = re.search(r"project\(\s*apop\s+VERSION\s+([0-9][0-9.]*)", f.read())
        self.assertIsNotNone(m, "no project(apop VERSION ...) in CMakeLists.txt")
        p = self.env.check("--version")
        self.assertEqual((p.stdout + p.stderr).decode().strip(), f"apop {m.group(1)}")

    def test_serve_fails_cleanly_when_port_is_taken(self):
        self.env.add_user("alice", ALICE_SECRET)
        with self.env.server() as srv:
            try:
                p = self.env.run("serve", "--data", self.env.data,
                                 "--listen", f"127.0.0.1:{srv.port}", timeout=15)
            except subprocess.TimeoutExpired:
                self.fail("a second server bound an address already in use")
            self.assertEqual(p.returncode, 1, p.stderr)


if __name__ == "__main__":
    unittest.main()
