"""curl's pop3:// client against the real apop binary."""

import poplib
import subprocess
import unittest

from apoptest import (ALICE_SECRET, ApopTestCase, crlf, make_message, require_program)

MSG1 = make_message("curl one", "Hello from curl test one.\n.leading dot\n..two dots\n")
MSG2 = make_message("curl two", "Second message\nwith two lines\n")

CURLE_LOGIN_DENIED = 67


class CurlTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.curl_bin = require_program("curl")

    def curl(self, port: int, path: str = "/", *args: str, user: str = "alice",
             secret: str = ALICE_SECRET, apop: bool = True) -> subprocess.CompletedProcess:
        argv = [self.curl_bin, "-sS", "--max-time", "20", f"pop3://127.0.0.1:{port}{path}",
                "--user", f"{user}:{secret}"]
        if apop:
            argv += ["--login-options", "AUTH=+APOP"]
        return subprocess.run(argv + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=30)

    def ok(self, p: subprocess.CompletedProcess) -> bytes:
        self.assertEqual(p.returncode, 0, f"curl failed: {p.stderr.decode(errors='replace')}")
        return p.stdout

    def test_apop_list_and_retrieve(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            listing = self.ok(self.curl(srv.port, "/"))
            self.assertEqual(listing, b"1 %d\r\n2 %d\r\n" % (len(crlf(MSG1)), len(crlf(MSG2))))
            # curl removes the dot-stuffing and writes the message with CRLF line ends.
            self.assertEqual(self.ok(self.curl(srv.port, "/1")), crlf(MSG1))
            self.assertEqual(self.ok(self.curl(srv.port, "/2")), crlf(MSG2))
            srv.wait_for_log(r"login ok user=alice mech=APOP", count=3)
        # Retrieval does not delete.
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_apop_is_used_and_secret_never_sent(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = self.curl(srv.port, "/1", "-v")
            self.assertEqual(self.ok(p), crlf(MSG1))
            trace = p.stderr.decode(errors="replace")
            self.assertRegex(trace, r"> APOP alice [0-9a-f]{32}")
            self.assertNotIn("> USER", trace)
            self.assertNotIn(ALICE_SECRET, trace)

    def test_default_login_options_work(self):
        # Without ;AUTH=+APOP curl picks APOP by itself from the greeting's timestamp
        # (curl cannot be forced to USER/PASS when the greeting offers APOP; USER/PASS
        # interop is covered by test_poplib and test_protocol).
        self.setup_alice([MSG2])
        with self.env.server() as srv:
            self.assertEqual(self.ok(self.curl(srv.port, "/1", apop=False)), crlf(MSG2))

    def test_wrong_secret_is_denied(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = self.curl(srv.port, "/", secret=ALICE_SECRET + "-wrong")
            self.assertEqual(p.returncode, CURLE_LOGIN_DENIED, p.stderr)
            self.assertEqual(p.stdout, b"")
            p = self.curl(srv.port, "/", user="nobody")
            self.assertEqual(p.returncode, CURLE_LOGIN_DENIED, p.stderr)
            srv.wait_for_log(r"login failed user=alice mech=APOP")
            srv.wait_for_log(r"login failed user=nobody mech=APOP")

    def test_missing_message_is_an_error(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = self.curl(srv.port, "/2")
            self.assertNotEqual(p.returncode, 0)
            self.assertEqual(p.stdout, b"")

    def test_uidl_top_and_dele_via_custom_requests(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            uidl = self.ok(self.curl(srv.port, "/", "-X", "UIDL"))
            rows = uidl.split(b"\r\n")
            self.assertEqual(rows[-1], b"")
            rows = [r.split(b" ") for r in rows[:-1]]
            self.assertEqual([r[0] for r in rows], [b"1", b"2"])

            top = self.ok(self.curl(srv.port, "/", "-X", "TOP 1 0"))
            head = MSG1.split(b"\n\n", 1)[0]
            self.assertEqual(top, crlf(head + b"\n\n"))

            # DELE with -I (no body expected); curl then QUITs, which commits it.
            self.ok(self.curl(srv.port, "/1", "-X", "DELE", "-I"))

            p = poplib.POP3("127.0.0.1", srv.port, timeout=10)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat(), (1, len(crlf(MSG2))))
            self.assertEqual(p.uidl()[1], [b"1 " + rows[1][1]])
            p.quit()


if __name__ == "__main__":
    unittest.main()
