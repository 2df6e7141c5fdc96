"""SASL AUTH (RFC 5034) against the real binary: curl's PLAIN, LOGIN and
CRAM-MD5, and a SCRAM-SHA-256 / SCRAM-SHA-1 client of our own (RFC 5802/7677)."""

import base64
import hashlib
import hmac
import os
import subprocess
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message, require_program

MSG = make_message("sasl", "Fetched with SASL.\n")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def scram_login(conn, user: str, password: str, hash_name: str = "sha256",
                mech: str = "SCRAM-SHA-256", tamper: bool = False) -> bytes:
    """Runs a SCRAM exchange on a raw connection; returns the final reply line."""
    cnonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={cnonce}"
    r = conn.cmd(f"AUTH {mech} " + b64(("n,," + first_bare).encode()).decode())
    assert r.startswith(b"+ "), r
    server_first = base64.b64decode(r[2:]).decode()
    fields = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert fields["r"].startswith(cnonce)
    salt = base64.b64decode(fields["s"])
    iterations = int(fields["i"])
    assert iterations >= 4096
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    stored_key = hashlib.new(hash_name, client_key).digest()
    final_wo_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hash_name).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    if tamper:
        proof = bytes([proof[0] ^ 1]) + proof[1:]
    r = conn.cmd(b64(f"{final_wo_proof},p={base64.b64encode(proof).decode()}".encode()))
    if not r.startswith(b"+ "):
        return r
    server_final = base64.b64decode(r[2:]).decode()
    server_key = hmac.new(salted, b"Server Key", hash_name).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, hash_name).digest()).decode()
    assert server_final == f"v={expected}", (server_final, expected)
    return conn.cmd("")


class SaslTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice([MSG])

    def test_capa_lists_sasl_by_connection(self):
        with self.env.server("--no-secure-loopback") as srv:
            with srv.connect() as c:
                _, caps = c.cmd_multi("CAPA")
                sasl = [l for l in caps if l.startswith(b"SASL ")]
                self.assertEqual(sasl, [b"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5"])
                plain = b64(b"\0alice\0x").decode()
                self.assertTrue(c.cmd(f"AUTH PLAIN {plain}").startswith(
                    b"-ERR [AUTH] Plaintext authentication disallowed"))
        with self.env.server() as srv:  # loopback counts as secure
            with srv.connect() as c:
                _, caps = c.cmd_multi("CAPA")
                self.assertIn(b"SASL SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN", caps)
                head, mechs = c.cmd_multi("AUTH")
                self.assertTrue(head.startswith(b"+OK"))
                self.assertEqual(mechs, [b"SCRAM-SHA-256", b"SCRAM-SHA-1", b"CRAM-MD5",
                                         b"PLAIN", b"LOGIN"])

    def test_scram_sha256_and_sha1(self):
        with self.env.server("--no-secure-loopback") as srv:
            for hash_name, mech in (("sha256", "SCRAM-SHA-256"), ("sha1", "SCRAM-SHA-1")):
                with srv.connect() as c:
                    r = scram_login(c, "alice", ALICE_SECRET, hash_name, mech)
                    self.assertTrue(r.startswith(b"+OK"), r)
                    self.assertTrue(c.cmd("STAT").startswith(b"+OK 1 "))
                    c.quit()
            srv.wait_for_log(r"login ok user=alice mech=SCRAM-SHA-256")
            srv.wait_for_log(r"login ok user=alice mech=SCRAM-SHA-1")

    def test_scram_wrong_proof_and_unknown_user_fail_alike(self):
        with self.env.server() as srv:
            with srv.connect() as c:
                wrong = scram_login(c, "alice", ALICE_SECRET, tamper=True)
            with srv.connect() as c:
                unknown = scram_login(c, "mallory", ALICE_SECRET)
            self.assertEqual(wrong, unknown)
            self.assertTrue(wrong.startswith(b"-ERR [AUTH]"), wrong)

    def test_cancel_and_bad_base64(self):
        with self.env.server() as srv:
            with srv.connect() as c:
                self.assertTrue(c.cmd("AUTH LOGIN").startswith(b"+ "))
                self.assertEqual(c.cmd("*"), b"-ERR Authentication cancelled")
                self.assertTrue(c.cmd("AUTH PLAIN !!!notbase64").startswith(b"-ERR"))
                self.assertTrue(c.cmd("AUTH PLAIN").startswith(b"+"))
                self.assertTrue(c.cmd("AGFsaWNl=").startswith(b"-ERR"))  # non-canonical
                r = c.cmd("AUTH PLAIN " + b64(f"\0alice\0{ALICE_SECRET}".encode()).decode())
                self.assertTrue(r.startswith(b"+OK"), r)

    def curl(self, port: int, mech: str, secret: str = ALICE_SECRET):
        return subprocess.run(
            [require_program("curl"), "-sS", "--user", f"alice:{secret}",
             "--login-options", f"AUTH={mech}", f"pop3://127.0.0.1:{port}/1"],
            capture_output=True, timeout=30)

    def test_curl_plain_login_cram_md5(self):
        with self.env.server() as srv:
            for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
                out = self.curl(srv.port, mech)
                self.assertEqual(out.returncode, 0, (mech, out.stderr))
                self.assertIn(b"Fetched with SASL.", out.stdout)
                srv.wait_for_log(rf"login ok user=alice mech={mech}")
            out = self.curl(srv.port, "CRAM-MD5", "wrong-secret-entirely")
            self.assertNotEqual(out.returncode, 0)


if __name__ == "__main__":
    unittest.main()
