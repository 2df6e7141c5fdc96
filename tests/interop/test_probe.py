"""`apop probe`: the audit of a POP3 server against `apop serve` in several
configurations, against Dovecot, and against fake servers (repeated and
predictable timestamps, STLS injection) that also record every line the probe
sends: it must never send USER, PASS, APOP or AUTH."""

import json
import os
import socket
import threading
import unittest

from apoptest import ApopTestCase, require_program
from dovecot import Dovecot, make_cert, require_dovecot

EX_OK, EX_NETWORK, EX_USAGE = 0, 6, 64
ALLOWED_COMMANDS = {"CAPA", "STLS", "QUIT"}


class FakeServer:
    """A scripted POP3 server on 127.0.0.1: greets with greeting(n) on connection n,
    answers CAPA with `capa`, STLS with `stls_reply`, QUIT with +OK, anything else
    with -ERR; records every line received."""

    def __init__(self, greeting, capa=("TOP", "UIDL", "USER", "SASL PLAIN LOGIN CRAM-MD5"),
                 stls_reply=b"+OK begin TLS\r\n"):
        self.greeting = greeting
        self.capa = capa
        self.stls_reply = stls_reply
        self.received: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n = self.connections
            self.connections += 1
            try:
                self._session(conn, n)
            except OSError:
                pass
            finally:
                conn.close()

    def _session(self, conn, n):
        conn.settimeout(10)
        conn.sendall(self.greeting(n).encode() + b"\r\n")
        buf = b""
        while True:
            while b"\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            self.received.append(line)
            cmd = line.split(b" ")[0].upper()
            if cmd == b"CAPA":
                conn.sendall(b"+OK\r\n" + b"".join(c.encode() + b"\r\n" for c in self.capa)
                             + b".\r\n")
            elif cmd == b"STLS":
                conn.sendall(self.stls_reply)
                return  # no TLS here: the handshake fails or the injection is caught
            elif cmd == b"QUIT":
                conn.sendall(b"+OK bye\r\n")
                return
            else:
                conn.sendall(b"-ERR no\r\n")

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)

    def commands(self) -> set[str]:
        return {l.split(b" ")[0].decode(errors="replace").upper() for l in self.received}


class ProbeCase(ApopTestCase):
    def probe(self, *args: str, expect: int = EX_OK):
        p = self.env.check("probe", *args, "--json", expect=expect, timeout=120)
        if expect != EX_OK:
            return p
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise AssertionError(f"probe --json printed no JSON: {p.stdout!r}")

    def text(self, *args: str) -> str:
        return self.env.check("probe", *args, timeout=120).stdout.decode()

    def finding_ids(self, report) -> set[str]:
        return {f["id"] for f in report["findings"]}

    def fake(self, *a, **kw) -> FakeServer:
        f = FakeServer(*a, **kw)
        self.addCleanup(f.close)
        return f

    def assert_no_credentials(self, fake: FakeServer):
        self.assertTrue(fake.received, "the probe sent nothing at all")
        self.assertLessEqual(fake.commands(), ALLOWED_COMMANDS, fake.received)
        for line in fake.received:
            self.assertNotRegex(line.upper(), rb"^(USER|PASS|APOP|AUTH)\b")


class ApopServeTest(ProbeCase):
    def setUp(self):
        super().setUp()
        self.setup_alice()

    def test_default_plain_server(self):
        with self.env.server() as srv:
            r = self.probe(f"127.0.0.1:{srv.port}", "--connections", "10")
        self.assertEqual(r["connections"], 10)
        self.assertTrue(r["apop"]["offered"])
        self.assertTrue(r["apop"]["in_clear"])
        plain = r["apop"]["plain"]
        self.assertTrue(plain["valid_msg_id"])
        self.assertFalse(plain["repeats"])
        self.assertEqual(plain["distinct"], 10)
        self.assertGreaterEqual(plain["entropy_bits"], 100)
        self.assertFalse(plain["predictable"])
        self.assertTrue(r["capabilities"]["received"])
        self.assertTrue(r["capabilities"]["uidl"])
        self.assertFalse(r["tls_available"])
        # Loopback counts as secure for apop serve by default, so USER is offered;
        # seen from outside that is a plaintext login without TLS.
        self.assertIn("USER", r["plaintext_before_tls"])
        self.assertEqual(r["grade"], "D")
        self.assertIn("plaintext-login-no-tls", self.finding_ids(r))
        # Issue 17 item 12: the report names that cause (the probe connected
        # over loopback), not --allow-plaintext-auth, which is not set here.
        self.assertTrue(r["loopback"])
        finding = next(f for f in r["findings"] if f["id"] == "plaintext-login-no-tls")
        self.assertIn("connected over loopback", finding["message"])
        rec = finding["recommendation"]
        self.assertIn("another host", rec)
        self.assertLess(rec.index("loopback"), rec.index("--allow-plaintext-auth"), rec)

    def test_no_plaintext_is_better_than_plaintext(self):
        with self.env.server("--no-secure-loopback") as srv:
            strict = self.probe(f"127.0.0.1:{srv.port}")
        with self.env.server("--no-secure-loopback", "--allow-plaintext-auth") as srv:
            lax = self.probe(f"127.0.0.1:{srv.port}")
        self.assertEqual(strict["plaintext_before_tls"], [])
        self.assertEqual(strict["grade"], "C")  # no TLS at all
        self.assertIn("no-tls", self.finding_ids(strict))
        self.assertIn("USER", lax["plaintext_before_tls"])
        self.assertEqual(lax["grade"], "D")
        self.assertGreater(lax["grade"], strict["grade"])  # 'D' > 'C': worse
        self.assertTrue(any("plaintext" in rec for rec in lax["recommendations"]))
        self.assertTrue(any("TLS" in rec for rec in lax["recommendations"]))

    def test_text_report(self):
        with self.env.server("--no-secure-loopback") as srv:
            out = self.text(f"127.0.0.1:{srv.port}", "--connections", "3")
        self.assertIn("APOP (port", out)
        self.assertIn("entropy estimate", out)
        self.assertIn("recommendations:", out)
        self.assertRegex(out, r"\ngrade: C\n$")

    def tls_server(self, *args, days=90):
        cert, key = make_cert(self.env.root, "probe", days=days)
        srv = self.env.server("--tls-cert", cert, "--tls-key", key, *args,
                              tls_listen=["127.0.0.1:0"])
        return srv, cert

    def test_tls_and_apop_requires_tls_is_best(self):
        srv, cert = self.tls_server("--apop-requires-tls", "--no-secure-loopback")
        with srv:
            r = self.probe(f"127.0.0.1:{srv.port}", "--tls-port", str(srv.tls_ports[0]),
                           "--ca-file", cert)
        self.assertEqual(r["grade"], "A", json.dumps(r["findings"], indent=1))
        self.assertTrue(r["tls_available"])
        self.assertTrue(r["stls"]["offered"])
        self.assertTrue(r["stls"]["ok"])
        self.assertIn(r["stls"]["protocol"], ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(r["stls"]["verified"])
        self.assertTrue(r["stls"]["hostname_match"])
        self.assertIn(r["stls"]["days_left"], (88, 89, 90))
        self.assertTrue(r["implicit_tls"]["ok"])
        self.assertTrue(r["implicit_tls"]["verified"])
        # apop serve shows the timestamp before STLS (APOP after STLS needs it)
        # and refuses APOP until TLS; the probe notes what it cannot verify.
        self.assertTrue(r["apop"]["in_clear"])
        self.assertIn("apop-before-stls", self.finding_ids(r))
        self.assertTrue(r["apop"]["in_tls"])
        self.assertGreaterEqual(r["apop"]["tls"]["entropy_bits"], 100)
        self.assertEqual(r["plaintext_before_tls"], [])
        # Inside TLS the server offers USER (a TLS connection is secure).
        self.assertTrue(r["stls"]["capabilities"]["user"])

    def test_without_apop_requires_tls_and_unverified_certificate(self):
        srv, cert = self.tls_server("--no-secure-loopback")
        with srv:
            port, tls_port = str(srv.port), str(srv.tls_ports[0])
            with_ca = self.probe(f"127.0.0.1:{port}", "--tls-port", tls_port, "--ca-file", cert)
            no_ca = self.probe(f"127.0.0.1:{port}", "--tls-port", tls_port)
            ok = self.probe(f"127.0.0.1:{port}", "--tls-port", tls_port, "--insecure-ok")
        # The timestamp is visible before STLS with or without --apop-requires-tls
        # (APOP after STLS needs it); a passive probe can only note it.
        self.assertEqual(with_ca["grade"], "A", with_ca["findings"])
        self.assertIn("apop-before-stls", self.finding_ids(with_ca))
        self.assertTrue(any("apop-requires-tls" in rec for rec in with_ca["recommendations"]))
        self.assertFalse(no_ca["stls"]["verified"])  # self-signed, not in the system store
        self.assertFalse(no_ca["implicit_tls"]["verified"])
        self.assertIn("tls-certificate-unverified", self.finding_ids(no_ca))
        self.assertEqual(no_ca["grade"], "C")
        self.assertEqual(ok["grade"], "A")
        self.assertIn("tls-certificate-unverified", self.finding_ids(ok))  # still reported

    def test_certificate_expiring_soon(self):
        srv, cert = self.tls_server("--apop-requires-tls", "--no-secure-loopback", days=3)
        with srv:
            r = self.probe(f"127.0.0.1:{srv.port}", "--ca-file", cert)
        self.assertIn(r["stls"]["days_left"], (1, 2, 3))
        self.assertIn("tls-certificate-expiring", self.finding_ids(r))
        self.assertEqual(r["grade"], "B")
        self.assertTrue(any("Renew" in rec for rec in r["recommendations"]))

    def test_hostname_mismatch(self):
        srv, cert = self.tls_server("--apop-requires-tls", "--no-secure-loopback")
        with srv:
            r = self.probe(f"127.0.0.1:{srv.port}", "--ca-file", cert,
                           "--server-name", "mail.example.org")
        self.assertTrue(r["stls"]["verified"] is False or r["stls"]["hostname_match"] is False)
        self.assertFalse(r["stls"]["hostname_match"])
        self.assertEqual(r["grade"], "C")

    def test_only_tls_port_reachable(self):
        srv, cert = self.tls_server("--no-secure-loopback")
        with srv:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
            s.close()
            r = self.probe(f"127.0.0.1:{dead}", "--tls-port", str(srv.tls_ports[0]),
                           "--ca-file", cert)
        self.assertFalse(r["reachable"])
        self.assertTrue(r["implicit_tls"]["ok"])
        self.assertTrue(r["apop"]["in_tls"])


class ExitCodeTest(ProbeCase):
    def test_unreachable_is_network_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        p = self.probe(f"127.0.0.1:{port}", expect=EX_NETWORK)
        self.assertIn(b"cannot reach", p.stderr)
        self.assertEqual(p.stdout, b"")

    def test_usage(self):
        for args in (["probe"], ["probe", "127.0.0.1:notaport"], ["probe", "127.0.0.1:70000"],
                     ["probe", "127.0.0.1", "--connections", "0"], ["probe", "[::1"]):
            p = self.env.run(*args)
            self.assertEqual(p.returncode, EX_USAGE, (args, p.stderr))

    def test_shared_connection_options_are_checked(self):
        # --ca-file, --timeout and --json are declared with fetch's (the probe's
        # bounds: 1 to 300 seconds); the login and TLS-mode options are not offered.
        for args in (["--timeout", "0"], ["--timeout", "301"],
                     ["--ca-file", os.path.join(self.env.root, "missing")],
                     ["--auth", "apop"], ["--password-file", "/etc/hostname"]):
            with self.subTest(args=args):
                p = self.env.run("probe", "127.0.0.1:1", *args)
                self.assertEqual(p.returncode, EX_USAGE, (args, p.stderr))


class FakeServerTest(ProbeCase):
    def test_repeated_timestamp_is_grade_f_and_no_credentials_are_sent(self):
        fake = self.fake(lambda n: "+OK POP3 ready <1234.5678@fake.example>")
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "6")
        self.assertEqual(r["grade"], "F")
        self.assertTrue(r["apop"]["plain"]["repeats"])
        self.assertEqual(r["apop"]["plain"]["distinct"], 1)
        self.assertIn("apop-timestamp-repeats", self.finding_ids(r))
        self.assertEqual(fake.connections, 6)
        self.assert_no_credentials(fake)
        self.assertIn("CAPA", fake.commands())

    def test_pid_clock_timestamps_are_predictable(self):
        fake = self.fake(lambda n: f"+OK ready <{1896 + n}.{697170952 + 3 * n}@dbc.mtview.ca.us>")
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "8")
        plain = r["apop"]["plain"]
        self.assertTrue(plain["predictable"])
        self.assertLess(plain["entropy_bits"], 8)
        self.assertEqual([f["kind"] for f in plain["fields"]], ["counter", "counter"])
        self.assertIn("apop-timestamp-predictable", self.finding_ids(r))
        self.assertEqual(r["grade"], "D")
        self.assertTrue(any("predictable" in rec for rec in r["recommendations"]))
        self.assert_no_credentials(fake)

    def test_invalid_timestamp(self):
        fake = self.fake(lambda n: f"+OK ready <{n}abc def@host>", capa=("TOP",))
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "3")
        self.assertFalse(r["apop"]["plain"]["valid_msg_id"])
        self.assertIn("apop-timestamp-invalid", self.finding_ids(r))
        self.assert_no_credentials(fake)

    def test_no_timestamp(self):
        fake = self.fake(lambda n: "+OK ready", capa=("TOP", "UIDL"))
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "3")
        self.assertFalse(r["apop"]["offered"])
        self.assertEqual(r["grade"], "C")  # no TLS, but no password in the clear offered
        self.assert_no_credentials(fake)

    def test_stls_injection_is_detected(self):
        fake = self.fake(lambda n: f"+OK ready <{os.urandom(16).hex()}.1@h>",
                         capa=("STLS", "SASL SCRAM-SHA-256"),
                         stls_reply=b"+OK begin\r\n+OK injected\r\n")
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "3")
        self.assertTrue(r["stls"]["injection"], r["stls"])
        self.assertIn("stls-injection", self.finding_ids(r))
        self.assertEqual(r["grade"], "D")
        self.assertFalse(r["tls_available"])
        self.assert_no_credentials(fake)

    def test_err_greeting(self):
        fake = self.fake(lambda n: "-ERR go away")
        r = self.probe(f"127.0.0.1:{fake.port}", "--connections", "2")
        self.assertEqual(r["grade"], "F")
        self.assertFalse(any(c for c in fake.commands() if c not in ALLOWED_COMMANDS))


class DovecotProbeTest(ProbeCase):
    def setUp(self):
        super().setUp()
        require_dovecot()

    def test_dovecot_plain(self):
        with Dovecot() as dv:
            dv.add_user("alice", "Dovecot-secret-42")
            r = self.probe(f"127.0.0.1:{dv.port}", "--connections", "8")
        plain = r["apop"]["plain"]
        self.assertTrue(plain["offered"])
        self.assertTrue(plain["valid_msg_id"])
        self.assertFalse(plain["repeats"])
        # Dovecot 2.3's timestamp is <pid.counter.clock.base64(16 random octets)@host>:
        # the pid/counter/clock parts are flagged as predictable, the random part
        # keeps the whole well above the weak threshold.
        kinds = [f["kind"] for f in plain["fields"]]
        self.assertEqual(len(kinds), 4, plain["fields"])
        self.assertEqual(kinds[0], "constant")  # master's login process pid
        self.assertEqual(kinds[1], "counter")   # connection counter
        self.assertIn(kinds[2], ("constant", "counter"))  # clock
        self.assertEqual(kinds[3], "random")
        self.assertIn("apop-timestamp-structure", self.finding_ids(r))
        self.assertGreaterEqual(plain["entropy_bits"], 100)
        self.assertIn("SCRAM-SHA-256", r["capabilities"]["sasl"])
        self.assertIn("USER", r["plaintext_before_tls"])
        self.assertEqual(r["grade"], "D")

    def test_dovecot_high_performance_login_mode(self):
        # service_count = 0: one login process serves every connection.
        with Dovecot(login_service_count=0) as dv:
            r = self.probe(f"127.0.0.1:{dv.port}", "--connections", "12")
        plain = r["apop"]["plain"]
        self.assertEqual(plain["distinct"], 12)
        self.assertEqual(plain["fields"][0]["kind"], "constant")
        self.assertGreaterEqual(plain["entropy_bits"], 100)

    def test_dovecot_with_tls(self):
        with Dovecot(stls=True, implicit_tls=True) as dv:
            r = self.probe(f"127.0.0.1:{dv.port}", "--tls-port", str(dv.tls_port),
                           "--ca-file", dv.cert)
        self.assertTrue(r["stls"]["ok"], r["stls"])
        self.assertTrue(r["stls"]["verified"])
        self.assertTrue(r["implicit_tls"]["ok"])
        self.assertTrue(r["apop"]["in_tls"])
        # Dovecot treats 127.0.0.1 as secure: plaintext logins stay offered.
        self.assertIn("plaintext-login-before-tls", self.finding_ids(r))
        self.assertEqual(r["grade"], "C")


if __name__ == "__main__":
    unittest.main()
