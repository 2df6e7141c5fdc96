"""PROXY protocol v1/v2 on apop's listeners (issue 9), without a real load
balancer: raw sockets play HAProxy. A trusted proxy's header replaces the
peer address in logs and throttling; a header from anyone else, or no header
from a trusted proxy, closes the connection."""

from __future__ import annotations

import socket
import struct
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, apop_digest, timestamp_of

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(src: str, sport: int, dst: str = "192.0.2.1", dport: int = 110) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body


def recv_line(sock: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            return buf
        buf += chunk
    return buf[:-2]


def closed_without_greeting(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return True
    return data == b""


class ProxyProtocolTest(ApopTestCase):
    def connect(self, port: int, source: str = "127.0.0.1") -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.addCleanup(s.close)
        return s

    def test_v1_and_v2_headers_name_the_client(self):
        self.setup_alice()
        with self.env.server("--trusted-proxy", "127.0.0.0/8") as srv:
            s = self.connect(srv.port)
            s.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 40001 110\r\n")
            greeting = recv_line(s)
            s.sendall(f"APOP alice {apop_digest(timestamp_of(greeting), ALICE_SECRET)}\r\n".encode())
            self.assertTrue(recv_line(s).startswith(b"+OK"))
            s.sendall(b"QUIT\r\n")
            recv_line(s)
            srv.wait_for_log(r"login ok user=alice mech=APOP addr=198\.51\.100\.7:40001 ")

            # v2, with the first command in the same segment as the header.
            s = self.connect(srv.port)
            s.sendall(v2_tcp4("203.0.113.9", 40002) + b"CAPA\r\n")
            self.assertTrue(recv_line(s).startswith(b"+OK"))  # greeting
            self.assertTrue(recv_line(s).startswith(b"+OK"))  # CAPA
            while recv_line(s) != b".":
                pass
            # The real client is not on loopback: USER is refused as plaintext
            # (the proxy's loopback address does not make the connection secure).
            s.sendall(b"USER alice\r\n")
            reply = recv_line(s)
            self.assertTrue(reply.startswith(b"-ERR"), reply)
            s.sendall(b"APOP alice " + b"0" * 32 + b"\r\n")
            self.assertTrue(recv_line(s).startswith(b"-ERR [AUTH]"))
            srv.wait_for_log(r"login failed user=alice mech=APOP addr=203\.0\.113\.9:40002 ")

            # LOCAL (a health check): the proxy's own address.
            s = self.connect(srv.port)
            s.sendall(SIG + b"\x20\x00\x00\x00")
            self.assertTrue(recv_line(s).startswith(b"+OK"))

    def test_header_from_untrusted_peer_is_refused(self):
        self.setup_alice()
        with self.env.server("--trusted-proxy", "127.0.0.1") as srv:
            s = self.connect(srv.port, source="127.0.0.2")
            self.assertTrue(recv_line(s).startswith(b"+OK"))  # a direct client gets a greeting
            s.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 40001 110\r\n")
            self.assertTrue(closed_without_greeting(s))
            srv.wait_for_log(r"disconnect addr=127\.0\.0\.2:\d+ reason=proxy-header-untrusted")
            # Without a PROXY header, an untrusted peer is a normal client.
            s = self.connect(srv.port, source="127.0.0.2")
            recv_line(s)
            s.sendall(b"CAPA\r\n")
            self.assertTrue(recv_line(s).startswith(b"+OK"))

    def test_trusted_proxy_must_send_a_header(self):
        with self.env.server("--trusted-proxy", "127.0.0.1") as srv:
            # Garbage instead of a header: closed at once, no greeting.
            s = self.connect(srv.port)
            s.sendall(b"CAPA\r\n")
            self.assertTrue(closed_without_greeting(s))
            srv.wait_for_log(r"disconnect addr=127\.0\.0\.1:\d+ reason=proxy-header ")
            # Nothing at all: closed after the header timeout (5 s).
            s = self.connect(srv.port)
            start = time.monotonic()
            self.assertTrue(closed_without_greeting(s))
            self.assertLess(time.monotonic() - start, 9)
            srv.wait_for_log(r"reason=proxy-header detail=\"no PROXY header within the timeout\"")

    def test_config_check_rejects_bad_ranges(self):
        import os
        cfg = os.path.join(self.env.root, "apop.toml")
        with open(cfg, "w") as f:
            f.write('listen = ["127.0.0.1:110"]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
        out = self.env.check("config", "check", "--config", cfg).stdout.decode()
        self.assertIn('trusted_proxies = ["10.0.0.0/8", "::1"]', out)
        # The account store URL: its password never printed; not a URL: refused.
        with open(cfg, "w") as f:
            f.write('listen = ["127.0.0.1:110"]\n'
                    'users = "postgresql://apop:s3cret@db.example.org/apop?password=x&sslmode=require"\n')
        out = self.env.check("config", "check", "--config", cfg).stdout.decode()
        self.assertIn('users = "postgresql://apop:***@db.example.org/apop?password=***&sslmode=require"',
                      out)
        self.assertNotIn("s3cret", out)
        with open(cfg, "w") as f:
            f.write('listen = ["127.0.0.1:110"]\nusers = "/var/lib/apop/users.sqlite"\n')
        p = self.env.check("config", "check", "--config", cfg, expect=78)
        self.assertIn(b"postgresql://", p.stderr)
        with open(cfg, "w") as f:
            f.write('listen = ["127.0.0.1:110"]\ntrusted_proxies = ["10.0.0.0/33"]\n')
        p = self.env.check("config", "check", "--config", cfg, expect=78)
        self.assertIn(b"trusted_proxies", p.stderr)


if __name__ == "__main__":
    unittest.main()
