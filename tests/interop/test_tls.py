"""TLS: implicit TLS (RFC 8314), STLS (RFC 2595) and its injection defence,
certificate reload on SIGHUP, with poplib, curl, fetchmail and raw sockets."""

import base64
import getpass
import hashlib
import hmac
import os
import poplib
import signal
import socket
import ssl
import subprocess
import time
import unittest

from apoptest import (ALICE_SECRET, ApopTestCase, apop_digest, make_message, require_program,
                      timestamp_of)

MSG = make_message("over tls", "Sent through TLS.\n.dot\n")


def make_cert(directory: str, name: str) -> tuple[str, str]:
    """A self-signed certificate for localhost / 127.0.0.1 (CN distinguishes them)."""
    cert = os.path.join(directory, f"{name}-cert.pem")
    key = os.path.join(directory, f"{name}-key.pem")
    subprocess.run(
        [require_program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", f"/CN=localhost/O={name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


class TlsTestCase(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.cert, self.key = make_cert(self.env.root, "first")
        self.ctx = ssl.create_default_context(cafile=self.cert)
        self.setup_alice([MSG])

    def server(self, *args, tls_listen=("127.0.0.1:0",)):
        return self.env.server("--tls-cert", self.cert, "--tls-key", self.key, *args,
                               tls_listen=list(tls_listen))


class ImplicitTlsTest(TlsTestCase):
    def test_log_line_and_poplib_pop3_ssl_with_apop(self):
        with self.server() as srv:
            self.assertEqual(len(srv.tls_ports), 1)
            self.assertRegex(srv.log(), r"listening on 127\.0\.0\.1:\d+ \(tls\)")
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=self.ctx)
            self.assertEqual(p.sock.version() in ("TLSv1.2", "TLSv1.3"), True)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            caps = p.capa()
            self.assertNotIn("STLS", caps)       # already TLS
            self.assertEqual(p.retr(1)[1][-1], b".dot")
            p.quit()

    def test_user_pass_allowed_over_tls_without_secure_loopback(self):
        with self.server("--no-secure-loopback") as srv:
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=self.ctx)
            self.assertIn("USER", p.capa())
            p.user("alice")
            p.pass_(ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()

    def test_tls_below_1_2_refused(self):
        with self.server() as srv:
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(self.cert)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            try:
                old.set_ciphers("ALL:@SECLEVEL=0")
            except ssl.SSLError:
                pass
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=old, timeout=5)

    def test_curl_pop3s(self):
        curl = require_program("curl")
        with self.server() as srv:
            port = srv.tls_ports[0]
            out = subprocess.run(
                [curl, "-sS", "--cacert", self.cert, "--resolve", f"localhost:{port}:127.0.0.1",
                 "--user", f"alice:{ALICE_SECRET}", "--login-options", "AUTH=+APOP",
                 f"pop3s://localhost:{port}/1"], capture_output=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Sent through TLS.", out.stdout)

    def test_curl_refuses_unknown_certificate(self):
        curl = require_program("curl")
        with self.server() as srv:
            port = srv.tls_ports[0]
            out = subprocess.run(
                [curl, "-sS", "--resolve", f"localhost:{port}:127.0.0.1",
                 "--user", f"alice:{ALICE_SECRET}", f"pop3s://localhost:{port}/"],
                capture_output=True, timeout=30)
            self.assertNotEqual(out.returncode, 0)  # self-signed: the client must refuse

    def test_garbage_instead_of_handshake_does_not_hurt(self):
        with self.server() as srv:
            s = socket.create_connection(("127.0.0.1", srv.tls_ports[0]), timeout=5)
            s.sendall(b"USER alice\r\n" * 10)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except (ConnectionError, socket.timeout):
                pass
            s.close()
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=self.ctx)
            p.apop("alice", ALICE_SECRET)
            p.quit()

    def test_fetchmail_over_tls_with_apop(self):
        self.fetchmail_over_tls("protocol APOP", "APOP")

    def test_fetchmail_over_tls_with_cram_md5(self):
        self.fetchmail_over_tls("protocol POP3 auth cram-md5", "CRAM-MD5")

    def fetchmail_over_tls(self, how, mech):
        fetchmail = require_program("fetchmail")
        home = os.path.join(self.env.root, "home")
        os.makedirs(home)
        out = os.path.join(self.env.root, "fetched.mbox")
        with self.server() as srv:
            rc = os.path.join(home, ".fetchmailrc")
            with open(rc, "w") as f:
                f.write("set no syslog\n"
                        f"poll localhost {how} service {srv.tls_ports[0]}\n"
                        f'  user "alice" there with password "{ALICE_SECRET}" is '
                        f'"{getpass.getuser()}" here\n'
                        f"  ssl sslcertck sslcertfile {self.cert} keep\n"
                        f'  mda "cat >> {out}"\n')
            os.chmod(rc, 0o600)
            p = subprocess.run([fetchmail, "-f", rc, "--nosyslog", "--nodetach", "-v"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                               env=dict(os.environ, HOME=home, LC_ALL="C"), cwd=home)
            self.assertEqual(p.returncode, 0, p.stdout.decode(errors="replace") +
                             p.stderr.decode(errors="replace"))
            with open(out, "rb") as f:
                self.assertIn(b"Sent through TLS.", f.read())
            srv.wait_for_log(rf"login ok user=alice mech={mech} addr=\S+ tls=1 ")


class StlsTest(TlsTestCase):
    def test_capa_offers_stls_only_before_tls_and_apop_uses_first_timestamp(self):
        with self.server("--no-secure-loopback", tls_listen=()) as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            ts = timestamp_of(p.getwelcome())
            caps = p.capa()
            self.assertIn("STLS", caps)
            self.assertNotIn("USER", caps)
            p.stls(context=self.ctx)
            caps = p.capa()
            self.assertNotIn("STLS", caps)
            self.assertIn("USER", caps)  # TLS makes the connection secure
            # poplib reuses the plaintext greeting's timestamp, as curl and mutt do.
            self.assertEqual(timestamp_of(p.welcome), ts)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()

    def test_stls_injection_is_never_executed(self):
        with self.server("--no-secure-loopback", tls_listen=()) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            f = s.makefile("rb")
            greeting = f.readline()
            ts = timestamp_of(greeting.rstrip(b"\r\n"))
            # Both commands in one segment: only STLS may be answered.
            s.sendall(b"STLS\r\nQUIT\r\n")
            self.assertTrue(f.readline().startswith(b"+OK"))
            s.settimeout(1.0)
            try:
                extra = s.recv(100, socket.MSG_PEEK)
            except socket.timeout:
                extra = b""
            self.assertEqual(extra, b"", "server answered in plaintext after STLS")
            s.settimeout(5)
            tls = self.ctx.wrap_socket(s, server_hostname="localhost")
            tf = tls.makefile("rwb")
            tf.write(b"CAPA\r\n")
            tf.flush()
            self.assertTrue(tf.readline().startswith(b"+OK"))  # QUIT was not run
            caps = []
            while (line := tf.readline()) != b".\r\n":
                caps.append(line.strip())
            self.assertNotIn(b"STLS", caps)
            tf.write(f"APOP alice {apop_digest(ts, ALICE_SECRET)}\r\n".encode())
            tf.flush()
            self.assertTrue(tf.readline().startswith(b"+OK"))
            tf.write(b"QUIT\r\n")
            tf.flush()
            self.assertTrue(tf.readline().startswith(b"+OK"))
            tls.close()

    def test_stls_refusals(self):
        with self.server(tls_listen=()) as srv:
            with srv.connect() as c:
                c.login("alice", ALICE_SECRET)
                self.assertTrue(c.cmd("STLS").startswith(b"-ERR"))  # not in TRANSACTION
                c.quit()
        with self.env.server() as plain:  # no certificate: no STLS at all
            with plain.connect() as c:
                self.assertTrue(c.cmd("STLS").startswith(b"-ERR"))
                _, caps = c.cmd_multi("CAPA")
                self.assertNotIn(b"STLS", caps)

    def test_plaintext_refused_until_stls(self):
        with self.server("--no-secure-loopback", tls_listen=()) as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            with self.assertRaises(poplib.error_proto) as e:
                p.user("alice")
            self.assertIn(b"[AUTH] Plaintext authentication disallowed", e.exception.args[0])
            p.stls(context=self.ctx)
            p.user("alice")
            p.pass_(ALICE_SECRET)
            p.quit()

    def test_curl_ssl_reqd_upgrades_with_stls(self):
        curl = require_program("curl")
        with self.server("--no-secure-loopback", tls_listen=()) as srv:
            out = subprocess.run(
                [curl, "-sS", "--ssl-reqd", "--cacert", self.cert,
                 "--resolve", f"localhost:{srv.port}:127.0.0.1",
                 "--user", f"alice:{ALICE_SECRET}", f"pop3://localhost:{srv.port}/1"],
                capture_output=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(b"Sent through TLS.", out.stdout)


class ReloadTest(TlsTestCase):
    def test_sighup_reloads_certificate_without_dropping_sessions(self):
        with self.server() as srv:
            port = srv.tls_ports[0]
            before = poplib.POP3_SSL("127.0.0.1", port, context=self.ctx)
            before.apop("alice", ALICE_SECRET)
            first_der = before.sock.getpeercert(binary_form=True)
            # Replace the files in place, then SIGHUP.
            new_cert, new_key = make_cert(self.env.root, "second")
            os.replace(new_cert, self.cert)
            os.replace(new_key, self.key)
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"tls certificate reloaded")
            ctx2 = ssl.create_default_context(cafile=self.cert)
            after = poplib.POP3_SSL("127.0.0.1", port, context=ctx2)
            self.assertNotEqual(after.sock.getpeercert(binary_form=True), first_der)
            after.quit()
            # The session opened before the reload still works.
            self.assertEqual(before.stat()[0], 1)
            before.quit()

    def test_bad_certificate_on_reload_keeps_the_old_one(self):
        with self.server() as srv:
            with open(self.cert, "w") as f:
                f.write("not a certificate\n")
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"tls reload failed")
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=self.ctx)
            p.apop("alice", ALICE_SECRET)
            p.quit()

    def test_missing_certificate_is_a_clear_startup_error(self):
        p = self.env.run("serve", "--data", self.env.data, "--tls-listen", "127.0.0.1:0",
                         "--tls-cert", self.cert, "--tls-key", self.cert)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"TLS key", p.stderr)


if __name__ == "__main__":
    unittest.main()


class ApopRequiresTlsTest(TlsTestCase):
    def test_apop_refused_before_tls_and_accepted_after(self):
        with self.server("--apop-requires-tls") as srv:
            with srv.connect() as c:  # plain listener with STLS: timestamp kept
                ts = timestamp_of(c.greeting)
                self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(
                    b"-ERR [AUTH] APOP requires TLS"))
            p = poplib.POP3("127.0.0.1", srv.port)
            p.stls(context=self.ctx)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
            q = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=self.ctx)
            q.apop("alice", ALICE_SECRET)
            q.quit()
            self.assertTrue(ts)

    def test_cram_md5_is_covered_too(self):
        # Issue 17 item 6: CRAM-MD5 is the other MD5 challenge-response over
        # the same plaintext-equivalent secret: hidden and refused before TLS,
        # offered and working after STLS.
        for flag in ("--md5-challenge-requires-tls", "--apop-requires-tls"):
            with self.server(flag, "--no-secure-loopback") as srv:
                with srv.connect() as c:
                    _, caps = c.cmd_multi("CAPA")
                    self.assertIn(b"SASL SCRAM-SHA-256 SCRAM-SHA-1", caps, flag)
                    self.assertNotIn(b"CRAM-MD5", b" ".join(caps), flag)
                    self.assertEqual(c.cmd("AUTH CRAM-MD5"),
                                     b"-ERR [AUTH] CRAM-MD5 requires TLS: use STLS first")
                p = poplib.POP3("127.0.0.1", srv.port)
                p.stls(context=self.ctx)
                self.assertIn("CRAM-MD5", p.capa()["SASL"])
                r = p._shortcmd("AUTH CRAM-MD5")
                challenge = base64.b64decode(r[2:])
                digest = hmac.new(ALICE_SECRET.encode(), challenge, hashlib.md5).hexdigest()
                r = p._shortcmd(base64.b64encode(f"alice {digest}".encode()).decode())
                self.assertTrue(r.startswith(b"+OK"), r)
                p.quit()
                srv.wait_for_log(r"login ok user=alice mech=CRAM-MD5 addr=\S+ tls=1")

    def test_no_timestamp_in_greeting_without_tls(self):
        with self.env.server("--apop-requires-tls") as srv:  # no certificate at all
            with srv.connect() as c:
                self.assertNotIn(b"<", c.greeting)
