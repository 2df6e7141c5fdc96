"""Connection limits on an implicit-TLS listener (RFC 8314): a connection over
a limit is told so inside TLS (handshake, then `-ERR [SYS/TEMP] Too many
connections`, then close), never with a plaintext line before the handshake
(which TLS clients report as "wrong version number"). Refusals cost little:
each handshake is bounded in time, only so many run at once, and none counts
against the limits. Plain listeners (with STLS) still get the plaintext line.
"""

from __future__ import annotations

import poplib
import socket
import ssl
import time
import unittest

from apoptest import ApopTestCase, SLOWDOWN, make_message, wait_until
from test_tls import make_cert

BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later"
MAX_TLS_REFUSALS = 64  # limits::kMaxTlsRefusals
TLS_HANDSHAKE_RECORD = 0x16  # RFC 8446 §5.1 ContentType handshake(22)


def connect_from(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10 * SLOWDOWN,
                                    source_address=(source, 0))


def tls_refusal(ctx: ssl.SSLContext, port: int, source: str = "127.0.0.1"):
    """Handshakes by hand over a raw socket; returns (the server's first bytes on
    the wire, the first line read inside TLS, whether the server then closed)."""
    sock = connect_from(port, source)
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        first = b""

        def pump() -> bool:
            nonlocal first
            pending = outgoing.read()
            if pending:
                sock.sendall(pending)
            data = sock.recv(65536)
            if not first:
                first = data
            if not data:
                incoming.write_eof()
                return False
            incoming.write(data)
            return True

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not pump():
                    return first, None, True
            except ssl.SSLError:
                # e.g. "wrong version number": plaintext where a record was due.
                return first, None, False
        sock.sendall(outgoing.read())
        text = b""
        closed = False
        while b"\r\n" not in text:
            try:
                chunk = tls.read(4096)
                if not chunk:
                    closed = True
                    break
                text += chunk
            except ssl.SSLWantReadError:
                if not pump():
                    closed = True
                    break
        line = text.split(b"\r\n")[0] if b"\r\n" in text else text
        if not closed:
            # After the line the server closes (with or without close_notify).
            while True:
                try:
                    if not tls.read(4096):
                        break
                except ssl.SSLWantReadError:
                    if not pump():
                        break
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    break
            closed = True
        return first, line, closed
    finally:
        sock.close()


def read_all_until_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data, True
            data += chunk
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


class Pop3Ssl(poplib.POP3_SSL):
    """poplib.POP3_SSL that closes its socket when the greeting is an -ERR
    (poplib raises from its constructor and leaves the socket open)."""

    def _create_socket(self, timeout):
        self._made = super()._create_socket(timeout)
        return self._made

    def __init__(self, *args, **kw):
        try:
            super().__init__(*args, **kw)
        except poplib.error_proto:
            self._made.close()
            raise


class HeldTls:
    """An admitted implicit-TLS session from `source`, greeting read."""

    def __init__(self, ctx: ssl.SSLContext, port: int, source: str):
        self.sock = ctx.wrap_socket(connect_from(port, source), server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline().rstrip(b"\r\n")

    def quit(self):
        self.sock.sendall(b"QUIT\r\n")
        self.file.readline()
        self.close()

    def close(self):
        self.file.close()
        self.sock.close()


class TlsLimitsTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.cert, self.key = make_cert(self.env.root, "limits")
        self.ctx = ssl.create_default_context(cafile=self.cert)
        self.setup_alice([make_message("hi", "Hi.\n")])

    def server(self, *args: str):
        # A plain listener (STLS offered) and an implicit-TLS one.
        return self.env.server("--tls-cert", self.cert, "--tls-key", self.key, *args,
                               listen=["127.0.0.1:0"], tls_listen=["127.0.0.1:0"])

    def hold_tls(self, port: int, source: str = "127.0.0.1") -> "HeldTls":
        h = HeldTls(self.ctx, port, source)
        self.addCleanup(h.close)
        self.assertTrue(h.greeting.startswith(b"+OK"), h.greeting)
        return h

    def assert_refused_inside_tls(self, port: int, source: str = "127.0.0.1"):
        first, line, closed = tls_refusal(self.ctx, port, source)
        self.assertTrue(first, "the server sent nothing")
        self.assertEqual(first[0], TLS_HANDSHAKE_RECORD,
                         f"the first bytes on the wire are not a TLS record: {first[:64]!r}")
        self.assertNotIn(b"-ERR", first)
        self.assertEqual(line, BUSY)
        self.assertTrue(closed)

    def test_per_address_limit_is_told_inside_tls(self):
        with self.server("--max-connections-per-address", "2") as srv:
            tls_port = srv.tls_ports[0]
            plain_port = [p for p in srv.ports if p != tls_port][0]
            held = [self.hold_tls(tls_port) for _ in range(2)]
            self.assert_refused_inside_tls(tls_port)
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.1:\d+ "
                             r"reason=max-connections-per-address tls=1$")
            # What a real TLS client sees: the server's reason, not "wrong version number".
            with self.assertRaises(poplib.error_proto) as e:
                Pop3Ssl("127.0.0.1", tls_port, context=self.ctx, timeout=10 * SLOWDOWN)
            self.assertEqual(e.exception.args[0], BUSY)
            # The plain listener (STLS offered) still answers in plaintext.
            s = connect_from(plain_port)
            self.addCleanup(s.close)
            self.assertEqual(read_all_until_close(s, 5 * SLOWDOWN), (BUSY + b"\r\n", True))
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.1:\d+ "
                             r"reason=max-connections-per-address$")
            # Other addresses get in; refusals held no slot.
            self.hold_tls(tls_port, "127.0.0.2").quit()
            held[0].quit()
            wait_until(lambda: self.try_admit(tls_port), what="a freed slot")

    def try_admit(self, port: int) -> bool:
        try:
            p = Pop3Ssl("127.0.0.1", port, context=self.ctx, timeout=10 * SLOWDOWN)
        except poplib.error_proto as e:
            self.assertEqual(e.args[0], BUSY)
            return False
        p.quit()
        return True

    def test_total_limit_is_told_inside_tls(self):
        with self.server("--max-connections", "2") as srv:
            tls_port = srv.tls_ports[0]
            plain_port = [p for p in srv.ports if p != tls_port][0]
            self.hold_tls(tls_port, "127.0.0.2")
            self.hold_tls(tls_port, "127.0.0.3")
            self.assert_refused_inside_tls(tls_port, "127.0.0.4")
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.4:\d+ "
                             r"reason=max-connections tls=1$")
            s = connect_from(plain_port, "127.0.0.5")
            self.addCleanup(s.close)
            self.assertEqual(read_all_until_close(s, 5 * SLOWDOWN), (BUSY + b"\r\n", True))
            srv.wait_for_log(r"connection refused addr=127\.0\.0\.5:\d+ reason=max-connections$")

    def test_refusals_are_bounded_in_time_and_number(self):
        # The login timeout (30 s) is longer than a refusal's own bound (10 s).
        with self.server("--max-connections-per-address", "1", "--login-timeout", "30") as srv:
            tls_port = srv.tls_ports[0]
            held = self.hold_tls(tls_port)
            # Clients that never send a ClientHello: each holds a refusal handshake.
            silent = []
            for _ in range(MAX_TLS_REFUSALS):
                s = connect_from(tls_port)
                self.addCleanup(s.close)
                silent.append(s)
            srv.wait_for_log(r"reason=max-connections-per-address tls=1$", count=MAX_TLS_REFUSALS,
                             timeout=10)
            # One more: closed at once, without a word (and never in plaintext).
            start = time.monotonic()
            s = connect_from(tls_port)
            self.addCleanup(s.close)
            self.assertEqual(read_all_until_close(s, 5 * SLOWDOWN), (b"", True))
            self.assertLess(time.monotonic() - start, 5 * SLOWDOWN)
            srv.wait_for_log(r"reason=max-connections-per-address tls=1 reply=none$")
            # The pending refusals count against no limit: the slot held is the only one.
            held.quit()
            wait_until(lambda: self.try_admit(tls_port), what="a freed slot")
            # Each pending refusal ends by itself within its bound (10 s), with
            # no byte sent, never the login timeout (30 s).
            for s in silent:
                data, closed = read_all_until_close(s, 20 * SLOWDOWN)
                self.assertEqual((data, closed), (b"", True))
            self.assertLess(time.monotonic() - start, 20 * SLOWDOWN)
            # The budget is back: a refusal is told inside TLS again.
            self.hold_tls(tls_port)
            self.assert_refused_inside_tls(tls_port)


if __name__ == "__main__":
    unittest.main()
