"""Prometheus metrics (`apop serve --metrics-listen ADDR:PORT`), scraped with
curl during and after real sessions (poplib and raw sockets)."""

from __future__ import annotations

import poplib
import re
import socket
import subprocess
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, ApopTestCase, Conn, apop_digest, crlf,
                      make_message, require_program, wait_until)

METRICS_RE = re.compile(r"metrics on (\S+):(\d+)")
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def metrics_port(srv) -> int:
    """The port of the metrics endpoint, from the `metrics on ADDR:PORT` log line."""
    line = srv.wait_for_log(METRICS_RE.pattern)[0]
    return int(METRICS_RE.search(line).group(2))


def scrape(port: int) -> dict[str, float]:
    """GET /metrics with curl; {'name{labels}': value} of every sample."""
    require_program("curl")
    p = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10",
                        f"http://127.0.0.1:{port}/metrics"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"curl exited {p.returncode}: {p.stderr.decode()}")
    out = {}
    for line in p.stdout.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"not a Prometheus text sample: {line!r}")
        out[m.group(1)] = float(m.group(2))
    return out


class ConnFrom(Conn):
    """A raw POP3 connection from another loopback address, so that failed
    logins of one test step do not throttle the next (per-address defence)."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10.0,
                                             source_address=(source, 0))
        self.timeout = 10.0
        self.buf = b""
        self.greeting = self.line()


class Metrics(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.first = make_message("first", "line one\nline two\n" * 50)
        self.second = make_message("second", "short body\n")
        self.setup_alice([self.first, self.second])
        # carol has no APOP secret (device secrets only, none added).
        self.env.add_user("carol", BOB_SECRET)
        self.env.check("user", "policy", "--data", self.env.data, "carol",
                       "--device-secrets-only", "on")

    def test_scrape_during_and_after_a_session(self):
        with self.env.server("--metrics-listen", "127.0.0.1:0") as srv:
            mport = metrics_port(srv)
            L = f'listener="127.0.0.1:{srv.port}",tls="0"'
            before = scrape(mport)
            self.assertEqual(before[f"apop_connections_total{{{L}}}"], 0)
            self.assertEqual(before[f"apop_sessions_active{{{L}}}"], 0)
            self.assertEqual(before["apop_session_duration_seconds_count"], 0)

            # A failed login (unknown user) and APOP for an account without
            # an APOP secret, each from its own address.
            with ConnFrom(srv.port, "127.0.0.2") as c:
                self.assertTrue(c.cmd(f"APOP mallory {apop_digest(c.timestamp, 'x' * 12)}")
                                .startswith(b"-ERR"))
                c.cmd("QUIT")
            with ConnFrom(srv.port, "127.0.0.3") as c:
                self.assertTrue(c.cmd(f"APOP carol {apop_digest(c.timestamp, BOB_SECRET)}")
                                .startswith(b"-ERR"))
                c.cmd("QUIT")

            p = poplib.POP3("127.0.0.1", srv.port, timeout=10)
            p.apop("alice", ALICE_SECRET)
            resp, lines, octets = p.retr(1)
            self.assertTrue(resp.startswith(b"+OK"))
            p.dele(2)
            during = scrape(mport)
            self.assertEqual(during[f"apop_sessions_active{{{L}}}"], 1, during)
            self.assertEqual(during[f"apop_sessions_total{{{L}}}"], 1)
            self.assertEqual(during[f"apop_connections_active{{{L}}}"], 1)
            self.assertEqual(during[f"apop_connections_total{{{L}}}"], 3)
            self.assertEqual(during['apop_logins_total{mech="APOP",result="ok"}'], 1)
            self.assertEqual(during['apop_logins_total{mech="APOP",result="failed"}'], 1)
            self.assertEqual(during['apop_logins_total{mech="APOP",result="no-apop-secret"}'], 1)
            # The RETR body has been written already.
            self.assertGreater(during[f"apop_sent_bytes_total{{{L}}}"], len(crlf(self.first)))
            # Per-session counts are added when the session ends.
            self.assertEqual(during['apop_commands_total{command="RETR"}'], 0)
            self.assertEqual(during["apop_session_duration_seconds_count"], 0)
            p.quit()

            wait_until(lambda: scrape(mport)[f"apop_sessions_active{{{L}}}"] == 0,
                       what="the session to end")
            srv.wait_for_log(r"logout user=alice .* reason=quit")
            after = scrape(mport)
            self.assertEqual(after[f"apop_connections_active{{{L}}}"], 0)
            self.assertEqual(after['apop_commands_total{command="RETR"}'], 1)
            self.assertEqual(after['apop_commands_total{command="DELE"}'], 1)
            self.assertEqual(after['apop_commands_total{command="TOP"}'], 0)
            self.assertEqual(after["apop_retr_bytes_total"], len(crlf(self.first)))
            self.assertEqual(after["apop_session_duration_seconds_count"], 1)
            self.assertEqual(after['apop_session_duration_seconds_bucket{le="+Inf"}'], 1)
            self.assertGreater(after["apop_session_duration_seconds_sum"], 0)
            self.assertGreater(after[f"apop_sent_bytes_total{{{L}}}"],
                               during[f"apop_sent_bytes_total{{{L}}}"])
            # The failed logins never became sessions.
            self.assertEqual(after[f"apop_sessions_total{{{L}}}"], 1)

    def test_top_user_pass_and_a_dropped_session(self):
        with self.env.server("--metrics-listen", "127.0.0.1:0") as srv:
            mport = metrics_port(srv)
            p = poplib.POP3("127.0.0.1", srv.port, timeout=10)
            p.user("alice")
            p.pass_(ALICE_SECRET)
            p.top(1, 0)
            p.top(2, 1)
            p.dele(1)
            p.rset()
            p.dele(2)
            p.sock.close()  # no QUIT: nothing is deleted, but the session is counted
            p.file.close()
            srv.wait_for_log(r"logout user=alice .* reason=disconnected")
            m = scrape(mport)
            self.assertEqual(m['apop_logins_total{mech="USER",result="ok"}'], 1)
            self.assertEqual(m['apop_commands_total{command="TOP"}'], 2)
            self.assertEqual(m['apop_commands_total{command="DELE"}'], 1)  # net of RSET
            self.assertEqual(m["apop_session_duration_seconds_count"], 1)
            self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_bad_metrics_listen_is_a_configuration_error(self):
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--metrics-listen", "localhost")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("metrics_listen: ", p.stderr.decode())

    def test_metrics_port_in_use_fails_at_start(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--metrics-listen", f"127.0.0.1:{port}")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f"cannot serve metrics on 127.0.0.1:{port}", p.stderr.decode())


if __name__ == "__main__":
    unittest.main()
