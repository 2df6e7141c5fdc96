"""The key that seals the stored secrets (DATA/secret.key), issue 17 item 7:
`apop deliver` neither reads nor creates it; a command that opens an account
store with another key, or without its key while sealed secrets exist, refuses
with an error naming the key file, and changes nothing (not the database, not
the key file)."""

import os
import poplib
import sqlite3
import unittest

from apoptest import ALICE_SECRET, BOB_SECRET, ApopTestCase, make_message

EX_TEMPFAIL = 75


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class SecretKeyTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice()
        self.key = os.path.join(self.env.data, "secret.key")
        self.db = os.path.join(self.env.data, "users.sqlite")

    def user_count(self) -> int:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM users").fetchone()[0]
        finally:
            con.close()

    def assert_refused_everywhere(self, why: bytes):
        """user add, user passwd, user list and serve all refuse, naming the key file,
        and the database keeps its bytes and its one user."""
        before = read_bytes(self.db)
        runs = [
            self.env.run("user", "add", "--data", self.env.data, "bob", "--password-stdin",
                         input=BOB_SECRET.encode() + b"\n"),
            self.env.run("user", "passwd", "--data", self.env.data, "alice", "--password-stdin",
                         input=BOB_SECRET.encode() + b"\n"),
            self.env.run("user", "list", "--data", self.env.data),
        ]
        for p in runs:
            self.assertEqual(p.returncode, EX_TEMPFAIL, p.stderr)
            self.assertIn(self.key.encode(), p.stderr)
            self.assertIn(why, p.stderr)
        serve = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                             timeout=20)
        self.assertNotEqual(serve.returncode, 0, serve.stderr)
        self.assertIn(self.key.encode(), serve.stderr)
        self.assertNotIn(b"listening on", serve.stderr)
        self.assertEqual(read_bytes(self.db), before)
        self.assertEqual(self.user_count(), 1)

    def test_deliver_neither_reads_nor_creates_the_key(self):
        os.rename(self.key, self.key + ".away")
        self.env.deliver("alice", make_message("one", "no key needed\n"))
        self.assertFalse(os.path.exists(self.key), "deliver created a new secret.key")
        self.assertEqual(len(self.env.message_files("alice")), 1)
        # A key deliver could not use (group-readable: every other command refuses it).
        os.rename(self.key + ".away", self.key)
        original = read_bytes(self.key)
        os.chmod(self.key, 0o644)
        self.env.deliver("alice", make_message("two", "still delivered\n"))
        self.assertEqual(len(self.env.message_files("alice")), 2)
        self.assertEqual(read_bytes(self.key), original)
        os.chmod(self.key, 0o600)
        # The account's secret still opens: a login works.
        with self.env.server() as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 2)
            p.quit()

    def test_another_key_is_refused_before_anything_changes(self):
        with open(self.key, "wb") as f:
            f.write(os.urandom(32))
        replaced = read_bytes(self.key)
        self.assert_refused_everywhere(b"is not the key")
        self.assertEqual(read_bytes(self.key), replaced)

    def test_a_missing_key_is_not_replaced_while_sealed_secrets_exist(self):
        os.unlink(self.key)
        self.assert_refused_everywhere(b"is missing")
        self.assertFalse(os.path.exists(self.key), "a new secret.key was created")

    def test_a_fresh_data_directory_still_gets_a_key(self):
        fresh = os.path.join(self.env.root, "fresh")
        self.env.check("user", "add", "--data", fresh, "carol", "--password-stdin",
                       input=BOB_SECRET.encode() + b"\n")
        self.assertEqual(len(read_bytes(os.path.join(fresh, "secret.key"))), 32)
        # And the same key is used next time (the check value matches).
        self.env.check("user", "passwd", "--data", fresh, "carol", "--password-stdin",
                       input=ALICE_SECRET.encode() + b"\n")


if __name__ == "__main__":
    unittest.main()
