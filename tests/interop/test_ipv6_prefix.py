"""IPv6 clients are counted by prefix (--ipv6-prefix-length, default 64): the
per-address connection cap, the failed-login counts and the block list treat
every address of one /64 as one client.

A test needs many source addresses of one /64: as root it routes two
documentation prefixes to `lo` (`ip -6 route add local 2001:db8:1:2::/64 dev
lo`, and 2001:db8:1:3::/64, used by no other test) and its clients bind to
any address in them with IPV6_FREEBIND, all talking to a server on [::1].
The routes are removed at the end. Needs root and iproute2 (`ip`): without
them the tests fail, saying so (the CI runs as root).
"""

from __future__ import annotations

import os
import socket
import subprocess
import unittest

from apoptest import (ALICE_SECRET, EX_OK, ApopTestCase, Conn, make_message, require_program,
                      wait_until)

PREFIX_A = "2001:db8:1:2"  # the attacker's /64
PREFIX_B = "2001:db8:1:3"  # a neighbour's /64
ROUTES = [f"{PREFIX_A}::/64", f"{PREFIX_B}::/64"]
IPV6_FREEBIND = 78  # <linux/in6.h>; socket.IPV6_FREEBIND is missing from some Pythons
BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed."
MSG = make_message("hello", "Hello.\n")

_added: list[str] = []


def setUpModule():
    if os.geteuid() != 0:
        raise AssertionError("test_ipv6_prefix needs root (it adds local routes for "
                             f"{', '.join(ROUTES)} on lo)")
    ip = require_program("ip")
    for route in ROUTES:
        # replace: a route left behind by an interrupted run is taken over.
        subprocess.run([ip, "-6", "route", "replace", "local", route, "dev", "lo"], check=True)
        _added.append(route)


def tearDownModule():
    for route in _added:
        subprocess.run([require_program("ip"), "-6", "route", "del", "local", route, "dev", "lo"],
                       check=False)


class V6Conn(Conn):
    """A Conn from `source` (any address of the routed prefixes) to [::1]:port."""

    def __init__(self, port: int, source: str, timeout: float = 10.0, read_greeting: bool = True):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        self.sock.bind((source, 0))
        self.sock.connect(("::1", port))
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.line() if read_greeting else b""


class Ipv6PrefixTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.setup_alice([MSG])

    def server(self, *args: str):
        return self.env.server(*args, listen=["[::1]:0"])

    def connect(self, srv, source: str, read_greeting: bool = True) -> V6Conn:
        c = V6Conn(srv.port, source, read_greeting=read_greeting)
        self.env.conns.append(c)
        return c

    def test_connection_cap_counts_every_address_of_a_64_as_one(self):
        with self.server("--max-connections-per-address", "3") as srv:
            held = [self.connect(srv, f"{PREFIX_A}::{i:x}") for i in range(1, 4)]
            for c in held:
                self.assertTrue(c.greeting.startswith(b"+OK"), c.greeting)
            # A fourth address of the same /64 (another interface ID) is refused.
            extra = self.connect(srv, f"{PREFIX_A}:dead:beef:1:2", read_greeting=False)
            self.assertEqual(extra.line(), BUSY)
            self.assertTrue(extra.closed_by_server(5))
            # The log names the client's own address, and the prefix it was counted by.
            srv.wait_for_log(rf"connection refused addr=\[{PREFIX_A}:dead:beef:1:2\]:\d+ "
                             rf"reason=max-connections-per-address prefix={PREFIX_A}::/64$")
            # Another /64 and ::1 are not affected.
            other = self.connect(srv, f"{PREFIX_B}::1")
            self.assertTrue(other.greeting.startswith(b"+OK"), other.greeting)
            local = Conn(srv.port, host="::1")
            self.env.conns.append(local)
            self.assertTrue(local.greeting.startswith(b"+OK"), local.greeting)
            # A slot freed by one address of the /64 is free for any other.
            held[0].quit()

            def admitted():
                c = self.connect(srv, f"{PREFIX_A}::99", read_greeting=False)
                line = c.line()
                c.close()
                if line == BUSY:
                    return False
                self.assertTrue(line.startswith(b"+OK"), line)
                return True
            wait_until(admitted, what="a slot freed in the /64")

    def test_failed_logins_from_many_addresses_block_the_whole_64(self):
        flags = ("--block-after-failures", "5", "--block-window", "600",
                 "--block-duration", "600")
        with self.server(*flags) as srv:
            # Five guesses, each from a fresh address of one /64.
            for i in range(1, 6):
                c = self.connect(srv, f"{PREFIX_A}::{i:x}")
                self.assertEqual(c.apop("alice", f"guess-{i}-not-the-secret"), AUTH_FAILED)
                c.close()
            # The /64 is blocked: a sixth address fails even with the right secret ...
            c = self.connect(srv, f"{PREFIX_A}:ffff:ffff:ffff:fff0")
            self.assertEqual(c.apop("alice", ALICE_SECRET), AUTH_FAILED)
            srv.wait_for_log(rf"login failed user=alice mech=APOP "
                             rf"addr=\[{PREFIX_A}:ffff:ffff:ffff:fff0\]:\d+ tls=0 "
                             rf"reason=blocked prefix={PREFIX_A}::/64$")
            # The neighbouring /64 is not affected.
            n = self.connect(srv, f"{PREFIX_B}::5")
            self.assertTrue(n.apop("alice", ALICE_SECRET).startswith(b"+OK"))
            n.quit()
            srv.wait_for_log(rf"login ok user=alice mech=APOP addr=\[{PREFIX_B}::5\]:\d+ ")
            # Every failure was logged with its real address.
            for i in range(1, 6):
                self.assertRegex(srv.log(), rf"addr=\[{PREFIX_A}::{i:x}\]:\d+ tls=0 "
                                            r"reason=(auth|throttled)\n")

    def test_prefix_length_128_counts_each_address(self):
        flags = ("--ipv6-prefix-length", "128", "--max-connections-per-address", "3",
                 "--block-after-failures", "5", "--block-window", "600",
                 "--block-duration", "600")
        with self.server(*flags) as srv:
            held = [self.connect(srv, f"{PREFIX_A}::{i:x}") for i in range(1, 6)]
            for c in held:
                self.assertTrue(c.greeting.startswith(b"+OK"), c.greeting)
            for c in held:
                c.close()
            for i in range(1, 6):
                c = self.connect(srv, f"{PREFIX_A}::{i + 16:x}")
                self.assertEqual(c.apop("alice", f"guess-{i}-not-the-secret"), AUTH_FAILED)
                c.close()
            c = self.connect(srv, f"{PREFIX_A}::ff")
            self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK"))
            c.quit()
            self.assertNotIn("reason=blocked", srv.log())
            self.assertNotIn("connection refused", srv.log())
            # Per address it still is: the cap holds for one address.
            same = [self.connect(srv, f"{PREFIX_A}::7", read_greeting=False) for _ in range(4)]
            lines = [c.line() for c in same]
            self.assertEqual(lines.count(BUSY), 1, lines)
            self.assertEqual(sum(l.startswith(b"+OK") for l in lines), 3, lines)
            srv.wait_for_log(rf"connection refused addr=\[{PREFIX_A}::7\]:\d+ "
                             r"reason=max-connections-per-address$")

    def test_option_range_and_config_key(self):
        path = os.path.join(self.env.root, "v6.toml")
        with open(path, "w") as f:
            f.write('listen = ["[::1]:0"]\nipv6_prefix_length = 56\n')
        out = self.env.check("config", "check", "--config", path)
        self.assertIn("ipv6_prefix_length = 56\n", out.stdout.decode())
        out = self.env.check("config", "check", "--config", path, "--ipv6-prefix-length", "48")
        self.assertIn("ipv6_prefix_length = 48\n", out.stdout.decode())
        with open(path, "w") as f:
            f.write('listen = ["[::1]:0"]\n')
        out = self.env.check("config", "check", "--config", path)
        self.assertIn("ipv6_prefix_length = 64\n", out.stdout.decode())
        for bad in ("129", "31", "0"):
            with open(path, "w") as f:
                f.write(f'listen = ["[::1]:0"]\nipv6_prefix_length = {bad}\n')
            p = self.env.run("config", "check", "--config", path)
            self.assertNotEqual(p.returncode, EX_OK, bad)
            self.assertRegex(p.stderr.decode(),
                             r"key ipv6_prefix_length: must be between 32 and 128", bad)
            p = self.env.run("serve", "--listen", "[::1]:0", "--ipv6-prefix-length", bad,
                             timeout=10)
            self.assertNotEqual(p.returncode, EX_OK, bad)
            self.assertIn("ipv6-prefix-length", p.stderr.decode(), bad)


if __name__ == "__main__":
    unittest.main()
