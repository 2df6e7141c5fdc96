"""Hostile-input suite, connection part: clients that misuse the connection itself.

Floods of pipelined commands from a client that never reads, clients that send
one byte at a time (short --login-timeout/--login-deadline keep this fast),
silent and half-closed clients, many connections from one address (per-address
and total limits), connection storms, and STLS injection (CVE-2011-0411: plaintext
pipelined after STLS must be discarded). Each checks the reply or disconnect the
attacker gets, that other clients are served meanwhile, and (hostile.HostileCase)
that afterwards no descriptor is left, memory is bounded and a normal session works.
"""

import base64
import socket
import ssl
import threading
import time
import unittest

from apoptest import Conn, apop_digest, crlf, make_message, timestamp_of, wait_until
from hostile import (ALICE_MESSAGES, ALICE_SECRET, BOB_SECRET, HostileCase, fd_count,
                     read_multi_raw, recv_all_until_close)
from test_tls import make_cert

MIB = 1024 * 1024
ERR_BUSY = b"-ERR [SYS/TEMP] Too many connections, try again later"
BYE_IDLE = b"-ERR Disconnected for inactivity"
BYE_LATE = b"-ERR Disconnected: login took too long"


def connect_from(port: int, source: str, timeout: float = 5.0) -> socket.socket:
    """A TCP connection from another loopback address (127.0.0.0/8 is all local)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_line(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data[:-2]


def flood(s: socket.socket, payload: bytes, stall: float = 1.0, limit: int = 64 * MIB) -> int:
    """Sends `payload` repeatedly without ever reading, until the server stops
    taking it (no progress for `stall` seconds) or `limit` octets; returns octets sent."""
    s.setblocking(False)
    sent, last = 0, time.monotonic()
    block = payload * max(1, 65536 // len(payload))
    view = memoryview(block)
    off = 0
    while sent < limit and time.monotonic() - last < stall:
        try:
            n = s.send(view[off:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except (ConnectionResetError, BrokenPipeError):
            break
        sent += n
        off = (off + n) % len(block)
        last = time.monotonic()
    s.setblocking(True)
    return sent


class HostileSlowClientsTest(HostileCase):
    """Clients that are silent or trickle bytes (--login-timeout 1, --login-deadline 3)."""

    SERVER_ARGS = ("--login-timeout", "1", "--login-deadline", "3")

    def test_silent_client_is_closed_after_the_login_timeout(self):
        c = self.connect()
        t = time.monotonic()
        self.assertEqual(c.line(timeout=5), BYE_IDLE)
        self.assert_closed(c, 2)
        self.assertLess(time.monotonic() - t, 4)

    def test_one_byte_at_a_time_hits_the_login_deadline_while_others_are_served(self):
        # Others get full sessions meanwhile, promptly.
        stop = threading.Event()
        durations = []

        def others():
            while not stop.is_set():
                t = time.monotonic()
                self.normal_session_once()
                durations.append(time.monotonic() - t)
                time.sleep(0.05)
        th = threading.Thread(target=others)
        th.start()
        try:
            c = self.connect()
            t0 = time.monotonic()
            script = b"CAPA\r\nUSER a\r\nPASS " + b"x" * 100  # never finishes logging in
            # One octet every 0.15 s (well within the 1 s idle timeout) until 0.6 s
            # before the 3 s login deadline; then silence (nothing in flight at the close).
            for b in script:
                if time.monotonic() - t0 > 2.4:
                    break
                c.send(bytes([b]))
                time.sleep(0.15)
            data, closed = recv_all_until_close(c.sock, 3)
        finally:
            stop.set()
            th.join()
        got = c.buf + data
        self.assertTrue(closed, "trickling client was not disconnected")
        self.assertIn(b"+OK Capability list follows", got)
        self.assertIn(b"+OK Send your password", got)
        self.assertTrue(got.endswith(BYE_LATE + b"\r\n"), got[-100:])
        self.assertLess(time.monotonic() - t0, 4.5)
        self.srv.wait_for_log(r"disconnect addr=\S+ reason=login-deadline")
        self.assertGreater(len(durations), 3)
        self.assertLess(max(durations), 2.0, durations)

    def test_many_slow_clients_at_once(self):
        slow = [self.connect() for _ in range(30)]
        t0 = time.monotonic()
        for i in range(8):
            for c in slow:
                try:
                    c.send(b"N" if i % 2 == 0 else b"O")
                except OSError:
                    pass
            self.normal_session_once()
            time.sleep(0.3)
        for c in slow:
            self.assert_closed(c, 6, "(slow client past the login deadline)")
        self.assertLess(time.monotonic() - t0, 10)

    def test_idle_after_a_partial_line_and_after_half_close(self):
        c = self.connect()
        c.send(b"APOP alice 01234")  # never completed
        self.assertEqual(c.line(timeout=5), BYE_IDLE)
        self.assert_closed(c, 2)
        # Half-closed after a partial command: EOF ends the session at once.
        h = self.connect()
        h.send(b"CAPA\r\nNOOP")
        h.sock.shutdown(socket.SHUT_WR)
        data, closed = recv_all_until_close(h.sock, 2)
        self.assertTrue(closed)
        self.assertTrue((h.buf + data).startswith(b"+OK Capability list follows"))

    def test_pauses_after_login_are_not_cut_off_and_block_no_one(self):
        # After login the RFC 1939 inactivity timer (at least 10 minutes) applies,
        # not the 1 s login timeout: a slow client keeps its session, and others
        # are served meanwhile.
        c = self.login("bob", BOB_SECRET)
        for part in (b"ST", b"AT", b"\r\n"):
            c.send(part)
            self.normal_session_once()
            time.sleep(1.3)
        self.assertEqual(c.line(), b"+OK 0 0")
        self.assertEqual(c.cmd("QUIT"), b"+OK Logging out (0 messages left)")


class HostileFloodTest(HostileCase):
    """Pipelined floods from clients that never read (--login-timeout 2,
    --login-deadline 5)."""

    SERVER_ARGS = ("--login-timeout", "2", "--login-deadline", "5")

    @classmethod
    def prepare(cls, env):
        env.add_user("erin", "Emerald-pylon-3308-brook")
        env.deliver("erin", make_message("big", ("z" * 78 + "\n") * 13000))  # ~1 MiB

    def never_reading(self, source: str = "127.0.0.1") -> socket.socket:
        s = connect_from(self.srv.port, source)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.addCleanup(s.close)
        read_line(s)  # the greeting only
        return s

    def test_flood_before_login_is_cut_off_by_the_login_timeout(self):
        s = self.never_reading()
        t0 = time.monotonic()
        sent = flood(s, b"CAPA\r\n", stall=1.0, limit=16 * MIB)
        self.assertGreater(sent, 100_000)  # the server took a lot before pushing back
        self.assert_rss_bounded(f"with {sent} octets of CAPA unanswered")
        self.normal_session_once()  # served meanwhile
        # Its replies fill the kernel's send buffer (up to tcp_wmem's 4 MiB) and then
        # cannot be written: 2 s later the login timeout ends the session, or the
        # 5 s login deadline at the latest (filling 4 MiB with CAPA replies takes
        # long on a loaded machine). The descriptor is freed while the attacker
        # still holds its end.
        wait_until(lambda: fd_count(self.pid) <= self.fd0, timeout=9,
                   what="the flooding client's session to be closed by the server")
        type(self).flood_cutoff_seconds = time.monotonic() - t0
        data, closed = recv_all_until_close(s, 5)
        self.assertTrue(closed)
        self.assertTrue(data.startswith(b"+OK Capability list follows\r\n"))

    def test_flood_of_failed_logins_stops_at_the_failure_limit(self):
        s = connect_from(self.srv.port, "127.0.0.2")
        self.addCleanup(s.close)
        read_line(s)
        s.sendall((b"APOP alice " + b"0" * 32 + b"\r\n") * 500)
        data, closed = recv_all_until_close(s, 10)
        self.assertTrue(closed)
        self.assertEqual(data, b"-ERR [AUTH] Authentication failed.\r\n" * 3 +
                         b"-ERR Too many authentication failures, closing connection\r\n")
        # Only three attempts were checked (and logged); the rest never ran.
        time.sleep(0.2)
        self.assertEqual(len([l for l in self.srv.log().splitlines()
                              if "login failed" in l and "addr=127.0.0.2:" in l]), 3)

    def test_flood_after_login_from_a_client_that_never_reads(self):
        c = Conn(self.srv.port)
        self.addCleanup(c.close)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.login("erin", "Emerald-pylon-3308-brook")
        sent = flood(c.sock, b"RETR 1\r\nLIST\r\nUIDL\r\nTOP 1 5000\r\nNOOP\r\nSTAT\r\n",
                     stall=1.0, limit=8 * MIB)
        self.assertGreater(sent, 1000)
        self.assert_rss_bounded(f"with {sent} octets of RETR/LIST/UIDL/TOP unanswered")
        # Everybody else is served meanwhile.
        for _ in range(3):
            self.normal_session_once()
        self.note_fds()
        c.abort()  # the server's blocked write fails; the session ends without UPDATE
        wait_until(lambda: fd_count(self.pid) <= self.fd0, timeout=5,
                   what="the flooding session to end")
        # Its lock is released and nothing was deleted.
        e = self.login("erin", "Emerald-pylon-3308-brook")
        self.assertTrue(e.cmd("STAT").startswith(b"+OK 1 "))
        e.quit()

    def test_many_floods_at_once(self):
        socks = [self.never_reading() for _ in range(5)]
        c = Conn(self.srv.port)
        self.addCleanup(c.close)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.login("erin", "Emerald-pylon-3308-brook")
        socks.append(c.sock)
        payloads = [b"CAPA\r\nAUTH\r\n"] * 5 + [b"RETR 1\r\n"]
        threads = [threading.Thread(target=flood, args=(s, p, 1.0, 4 * MIB))
                   for s, p in zip(socks, payloads)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.normal_session_once()
        self.assert_rss_bounded("with six floods at once")
        for t in threads:
            t.join()
        self.assert_rss_bounded("with six floods at once")
        self.note_fds()
        for s in socks:  # abortive close: the server's blocked writes fail at once
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
            s.close()


class HostileConnectionLimitsTest(HostileCase):
    """Many connections from one address (--max-connections-per-address 5,
    --max-connections 16)."""

    SERVER_ARGS = ("--max-connections-per-address", "5", "--max-connections", "16")

    def test_per_address_limit(self):
        held = [connect_from(self.srv.port, "127.0.0.3") for _ in range(5)]
        for s in held:
            self.addCleanup(s.close)
            self.assertTrue(read_line(s).startswith(b"+OK "))
        for _ in range(3):
            extra = connect_from(self.srv.port, "127.0.0.3")
            self.addCleanup(extra.close)
            data, closed = recv_all_until_close(extra, 3)
            self.assertEqual(data, ERR_BUSY + b"\r\n")
            self.assertTrue(closed)
        self.srv.wait_for_log(r"connection refused addr=127\.0\.0\.3:\d+ "
                              r"reason=max-connections-per-address", count=3)
        # Other addresses are not affected.
        self.normal_session_once()
        other = connect_from(self.srv.port, "127.0.0.4")
        self.addCleanup(other.close)
        self.assertTrue(read_line(other).startswith(b"+OK "))
        other.close()
        # A slot freed is a slot available again.
        held.pop().close()
        def admitted():
            s = connect_from(self.srv.port, "127.0.0.3")
            self.addCleanup(s.close)
            line = read_line(s)
            if line == ERR_BUSY:
                return False
            self.assertTrue(line.startswith(b"+OK "))
            return True
        wait_until(admitted, timeout=3, what="a freed per-address slot")
        self.note_fds()

    def test_total_limit(self):
        held = []
        for i in range(16):
            s = connect_from(self.srv.port, f"127.0.1.{i // 4 + 1}")
            self.addCleanup(s.close)
            self.assertTrue(read_line(s).startswith(b"+OK "))
            held.append(s)
        self.note_fds()
        late = connect_from(self.srv.port, "127.0.2.1")
        self.addCleanup(late.close)
        data, closed = recv_all_until_close(late, 3)
        self.assertEqual(data, ERR_BUSY + b"\r\n")
        self.srv.wait_for_log(r"connection refused addr=127\.0\.2\.1:\d+ reason=max-connections$")
        for s in held:
            s.close()

    def test_connection_storm(self):
        # 300 connections as fast as possible from one address, each dropped
        # at once (some with RST): none gets a wrong reply, nothing leaks.
        results = {"greeting": 0, "busy": 0, "reset": 0}
        wrong = []
        lock = threading.Lock()

        def storm(n):
            for i in range(n):
                try:
                    s = connect_from(self.srv.port, "127.0.0.5")
                except OSError:
                    with lock:
                        results["reset"] += 1
                    continue
                try:
                    if i % 3 == 0:  # abortive close before reading anything
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
                        s.close()
                        continue
                    line = read_line(s)
                    key = "busy" if line == ERR_BUSY else "greeting"
                    with lock:
                        results[key] += 1
                        if key == "greeting" and not line.startswith(b"+OK "):
                            wrong.append(line)
                except (OSError, EOFError):
                    with lock:
                        results["reset"] += 1
                finally:
                    s.close()
        ts = [threading.Thread(target=storm, args=(50,)) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(wrong, [])
        self.assertGreater(results["greeting"], 0, results)
        self.assertGreater(results["greeting"] + results["busy"], 100, results)
        self.note_fds()


class HostileStlsTest(HostileCase):
    """STLS injection (CVE-2011-0411, CVE-2021-38084): nothing sent in plaintext
    after STLS, in the same segment, is ever executed."""

    @classmethod
    def prepare(cls, env):
        cls.cert, cls.key = make_cert(env.root, "hostile")
        cls.ctx = ssl.create_default_context(cafile=cls.cert)
        cls.SERVER_ARGS = ("--tls-cert", cls.cert, "--tls-key", cls.key, "--login-timeout", "2",
                           "--login-deadline", "4")

    def stls(self, injected: bytes) -> tuple[ssl.SSLSocket, bytes]:
        """Sends STLS and `injected` in one segment, checks that only the STLS reply
        comes back in plaintext, and completes the handshake."""
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        self.addCleanup(s.close)
        ts = timestamp_of(read_line(s))
        s.sendall(b"STLS\r\n" + injected)
        self.assertEqual(read_line(s), b"+OK Begin TLS negotiation now")
        s.settimeout(0.3)
        try:
            extra = s.recv(100, socket.MSG_PEEK)
        except socket.timeout:
            extra = b""
        self.assertEqual(extra, b"", "server answered plaintext sent after STLS")
        s.settimeout(5)
        tls = self.ctx.wrap_socket(s, server_hostname="localhost")
        self.addCleanup(tls.close)
        return tls, ts

    def tcmd(self, tls: ssl.SSLSocket, line: bytes) -> bytes:
        tls.sendall(line + b"\r\n")
        return read_line(tls)

    def test_injected_commands_are_not_executed(self):
        for injected in (
                b"USER alice\r\n",
                b"AUTH PLAIN\r\n",
                b"CAPA\r\nNOOP\r\nQUIT\r\n",
                b"X" * 300 + b"\r\n",
                b"\0\r\n" * 1000):
            with self.subTest(injected=injected[:30]):
                tls, ts = self.stls(injected)
                # USER was not run; nothing else answered; the session is fresh.
                self.assertEqual(self.tcmd(tls, b"PASS " + ALICE_SECRET.encode()),
                                 b"-ERR No username given")
                self.assertEqual(self.tcmd(tls, b"STAT"), b"-ERR Not logged in")
                r = self.tcmd(tls, f"APOP alice {apop_digest(ts, ALICE_SECRET)}".encode())
                self.assertTrue(r.startswith(b"+OK Logged in"), r)
                self.assertEqual(self.tcmd(tls, b"QUIT"), b"+OK Logging out (3 messages left)")
                tls.close()

    def test_injection_larger_than_one_read_breaks_the_handshake(self):
        # What the server has not read yet when it starts TLS goes to the TLS
        # layer, which refuses it: the connection is closed, nothing runs.
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        self.addCleanup(s.close)
        read_line(s)
        try:
            s.sendall(b"STLS\r\n" + b"NOOP\r\n" * 200_000)
        except OSError:
            pass
        data, closed = recv_all_until_close(s, 5)
        self.assertTrue(closed)
        self.assertEqual(data, b"+OK Begin TLS negotiation now\r\n")

    def test_injected_valid_apop_does_not_log_in(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        self.addCleanup(s.close)
        ts = timestamp_of(read_line(s))
        s.sendall(b"STLS\r\nAPOP alice " + apop_digest(ts, ALICE_SECRET).encode() +
                  b"\r\nDELE 1\r\nQUIT\r\n")
        self.assertEqual(read_line(s), b"+OK Begin TLS negotiation now")
        tls = self.ctx.wrap_socket(s, server_hostname="localhost")
        self.addCleanup(tls.close)
        self.assertEqual(self.tcmd(tls, b"STAT"), b"-ERR Not logged in")
        self.assertEqual(self.tcmd(tls, b"STLS"), b"-ERR TLS is already active")
        port = tls.getsockname()[1]
        tls.close()
        self.assertNotIn(f"login ok user=alice mech=APOP addr=127.0.0.1:{port} ", self.srv.log())

    def test_plaintext_in_place_of_the_handshake(self):
        for garbage in (b"CAPA\r\n", b"GET / HTTP/1.0\r\n\r\n", b"\0" * 4096,
                        b"\x16\x03\x01\xff\xff" + b"A" * 70000):
            with self.subTest(garbage=garbage[:20]):
                s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
                self.addCleanup(s.close)
                read_line(s)
                s.sendall(b"STLS\r\n")
                self.assertEqual(read_line(s), b"+OK Begin TLS negotiation now")
                try:
                    s.sendall(garbage)
                except OSError:
                    pass
                data, closed = recv_all_until_close(s, 5)
                self.assertTrue(closed)
                self.assertNotIn(b"+OK", data)
                s.close()
        self.srv.wait_for_log(r"reason=stls-handshake: ", count=3)

    def test_flood_over_tls_from_a_client_that_never_reads(self):
        # The timeout must also cancel a TLS write that cannot complete.
        tls, _ = self.stls(b"")
        tls.settimeout(0.5)
        t0 = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - t0 < 20:
                tls.send(b"CAPA\r\n" * 1000)
                sent += 6000
        except (socket.timeout, ssl.SSLError, OSError):
            pass
        self.assertGreater(sent, 100_000)
        self.assert_rss_bounded(f"with {sent} octets of CAPA unanswered over TLS")
        self.normal_session_once()
        wait_until(lambda: fd_count(self.pid) <= self.fd0, timeout=8,
                   what="the TLS flooding session to be ended by the login deadline")
        self.assertLess(time.monotonic() - t0, 12)

    def test_silence_after_stls_times_out(self):
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=5)
        self.addCleanup(s.close)
        read_line(s)
        s.sendall(b"STLS\r\n")
        self.assertEqual(read_line(s), b"+OK Begin TLS negotiation now")
        data, closed = recv_all_until_close(s, 5)
        self.assertTrue(closed, "a client that never starts the handshake was kept")


if __name__ == "__main__":
    unittest.main()
