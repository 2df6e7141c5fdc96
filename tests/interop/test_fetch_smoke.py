"""`apop fetch` smoke tests against `apop serve`: APOP delete mode into a
Maildir, --keep twice (nothing new the second time), SCRAM-SHA-256 over
implicit TLS with --ca-file, and the plaintext refusal without TLS (exit 7).
The full suite (Dovecot, malicious servers, cuts) is test_fetch.py."""

import json
import os
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message
from test_tls import make_cert

MSGS = [make_message(f"smoke {i}", f"Body {i}.\n.starts with a dot\n") for i in range(3)]


class FetchSmokeTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice(MSGS)
        self.state = os.path.join(self.env.root, "state")
        self.out = os.path.join(self.env.root, "Maildir")
        self.pwfile = os.path.join(self.env.root, "pw")
        with open(self.pwfile, "w") as f:
            f.write(ALICE_SECRET + "\n")

    def fetch(self, url, *args, expect=0):
        p = self.env.run("fetch", url, "--to", "maildir:" + self.out, "--state", self.state,
                         "--password-file", self.pwfile, "--json", *args, timeout=60)
        self.assertEqual(p.returncode, expect,
                         f"stdout: {p.stdout!r}\nstderr: {p.stderr.decode(errors='replace')}")
        return json.loads(p.stdout) if p.stdout.strip() else None

    def fetched(self):
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.out, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as fh:
                        out.append(fh.read())
        return out

    def test_apop_delete_mode_to_maildir(self):
        with self.env.server() as srv:
            s = self.fetch(f"pop3://alice@127.0.0.1:{srv.port}", "--auth", "apop", "--tls", "none")
            self.assertEqual(s["auth"], "apop")
            self.assertEqual(s["messages"]["stored"], 3)
            self.assertEqual(s["messages"]["deleted"], 3)
            self.assertEqual(sorted(self.fetched()), sorted(MSGS))
            self.assertEqual(self.env.message_files("alice"), [])  # gone from the server
            # Nothing left: a second run succeeds with nothing new.
            s = self.fetch(f"pop3://alice@127.0.0.1:{srv.port}", "--auth", "apop", "--tls", "none")
            self.assertEqual(s["messages"]["on_server"], 0)
            self.assertEqual(len(self.fetched()), 3)

    def test_keep_twice_fetches_nothing_new(self):
        with self.env.server() as srv:
            url = f"pop3://alice@127.0.0.1:{srv.port}"
            s = self.fetch(url, "--keep", "--tls", "none")
            self.assertEqual(s["messages"]["stored"], 3)
            self.assertEqual(s["messages"]["deleted"], 0)
            self.assertEqual(len(self.env.message_files("alice")), 3)  # still on the server
            s = self.fetch(url, "--keep", "--tls", "none")
            self.assertEqual(s["messages"]["new"], 0)
            self.assertEqual(s["messages"]["stored"], 0)
            self.assertEqual(len(self.fetched()), 3)
            # A new message arrives: only it is fetched.
            extra = make_message("smoke extra", "New one.\n")
            self.env.deliver("alice", extra)
            s = self.fetch(url, "--keep", "--tls", "none")
            self.assertEqual(s["messages"]["stored"], 1)
            self.assertIn(extra, self.fetched())

    def test_scram_over_implicit_tls_with_ca_file(self):
        cert, key = make_cert(self.env.root, "smoke")
        with self.env.server("--tls-cert", cert, "--tls-key", key,
                             tls_listen=["127.0.0.1:0"]) as srv:
            port = srv.tls_ports[0]
            s = self.fetch(f"pop3s://alice@localhost:{port}", "--auth", "scram-sha-256",
                           "--ca-file", cert)
            self.assertTrue(s["tls"])
            self.assertEqual(s["auth"], "scram-sha-256")
            self.assertEqual(s["messages"]["stored"], 3)
            # Without the CA the certificate is refused: exit 4, nothing fetched.
            self.env.deliver("alice", MSGS[0])
            os.remove(self.state)
            self.fetch(f"pop3s://alice@localhost:{port}", expect=4)

    def test_plain_without_tls_is_refused(self):
        with self.env.server() as srv:
            s = self.fetch(f"pop3://alice@127.0.0.1:{srv.port}", "--auth", "plain", "--tls", "none",
                           expect=7)
            self.assertIn("clear", s["error"])
            self.assertEqual(self.fetched(), [])
            self.assertEqual(len(self.env.message_files("alice")), 3)


if __name__ == "__main__":
    unittest.main()
