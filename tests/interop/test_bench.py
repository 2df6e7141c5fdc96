"""`apop bench` (the load generator) against `apop serve`, at tiny sizes: the numbers and
the JSON are consistent with what the server holds, failures are counted by kind, the run
is bounded by count, by time and by signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from apoptest import ALICE_SECRET, BOB_SECRET, ApopTestCase, crlf, make_message
from dovecot import make_cert

MESSAGES = [make_message(f"bench {i}", f"line {i}\n.dot-stuffed line\n" + "x" * (200 * i) + "\n")
            for i in range(1, 6)]
WIRE = sum(len(crlf(m)) for m in MESSAGES)  # what RETR sends, before dot-stuffing and ".\r\n"


class BenchTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice(MESSAGES)
        self.env.add_user("bob", BOB_SECRET)
        for m in MESSAGES:
            self.env.deliver("bob", m)
        self.accounts = self.write_accounts([("alice", ALICE_SECRET), ("bob", BOB_SECRET)])

    def write_accounts(self, pairs, name="accounts") -> str:
        path = os.path.join(self.env.root, name)
        with open(path, "w") as f:
            f.write("# user secret\n")
            for u, s in pairs:
                f.write(f"{u} {s}\n")
        return path

    def bench(self, port: int, *args: str, accounts: str | None = None, expect: int = 0,
              timeout: float = 60) -> dict:
        p = self.env.run("bench", f"127.0.0.1:{port}", "--accounts", accounts or self.accounts,
                         "--json", *args, timeout=timeout)
        self.assertEqual(p.returncode, expect,
                         f"exit {p.returncode}\nstdout: {p.stdout.decode()}\n"
                         f"stderr: {p.stderr.decode()}")
        return json.loads(p.stdout)

    def assert_latency_sane(self, lat: dict, count: int) -> None:
        self.assertEqual(lat["count"], count)
        self.assertLessEqual(lat["min"], lat["p50"])
        self.assertLessEqual(lat["p50"], lat["p90"])
        self.assertLessEqual(lat["p90"], lat["p99"])
        self.assertLessEqual(lat["p99"], lat["max"])
        self.assertGreater(lat["max"], 0)

    def test_retr_counts_every_message_and_octet(self):
        with self.env.server() as srv:
            r = self.bench(srv.port, "--workload", "retr", "--sessions", "12",
                           "--concurrency", "2")
        self.assertEqual(r["sessions_ok"], 12)
        self.assertEqual(r["sessions_failed"], 0)
        self.assertEqual(r["errors"], {})
        self.assertEqual(r["messages"], 12 * len(MESSAGES))
        self.assertEqual(r["workload"], "retr")
        self.assertEqual(r["concurrency"], 2)
        self.assertEqual(r["peak_in_flight"], 2)
        # Every RETR's body plus its status line, dot-stuffing and terminator, per session.
        self.assertGreater(r["bytes_received"], 12 * WIRE)
        self.assertLess(r["bytes_received"], 12 * (WIRE + 2000))
        self.assertGreater(r["sessions_per_s"], 0)
        self.assertAlmostEqual(r["mb_per_s"], r["bytes_received"] / 1e6 / r["elapsed_s"],
                               places=6)
        lat = r["latency_ms"]
        self.assert_latency_sane(lat["session"], 12)
        self.assert_latency_sane(lat["RETR"], 12 * len(MESSAGES))
        for k in ("connect", "auth", "STAT", "QUIT"):
            self.assert_latency_sane(lat[k], 12)
        # Sessions never overlap on one account (apop would answer [IN-USE]).
        self.assertNotIn("in-use", r["errors"])

    def test_workloads_and_mechanisms(self):
        with self.env.server() as srv:
            r = self.bench(srv.port, "--workload", "login", "--sessions", "4")
            self.assertEqual(r["sessions_ok"], 4)
            self.assertNotIn("STAT", r["latency_ms"])
            r = self.bench(srv.port, "--workload", "top", "--sessions", "4", "--max-messages", "2")
            self.assertEqual(r["messages"], 8)
            self.assertEqual(r["latency_ms"]["TOP"]["count"], 8)
            r = self.bench(srv.port, "--workload", "mixed", "--sessions", "8", "--concurrency", "2")
            self.assertEqual(r["sessions_ok"], 8)
            # 2 sessions of each kind: TOP of 5 and LIST + RETR of 5.
            self.assertEqual(r["latency_ms"]["UIDL"]["count"], 2)
            self.assertEqual(r["latency_ms"]["TOP"]["count"], 10)
            self.assertEqual(r["latency_ms"]["LIST"]["count"], 2)
            self.assertEqual(r["latency_ms"]["RETR"]["count"], 10)
            r = self.bench(srv.port, "--workload", "retr", "--sessions", "3", "--auth", "none")
            self.assertEqual(r["sessions_ok"], 3)
            self.assertEqual(r["messages"], 0)  # no login, no workload
            self.assertNotIn("auth", r["latency_ms"])
            self.assertEqual(r["latency_ms"]["QUIT"]["count"], 3)
            for mech in ("user", "scram-sha-256"):
                r = self.bench(srv.port, "--workload", "stat", "--sessions", "3", "--auth", mech)
                self.assertEqual(r["sessions_ok"], 3, r)
                self.assertEqual(r["auth"], mech)

    def test_wrong_secrets_are_counted_as_auth_errors(self):
        bad = self.write_accounts([("alice", ALICE_SECRET + "-nope"), ("nobody", "whatever-x")],
                                  "bad")
        with self.env.server("--block-after-failures", "0") as srv:
            r = self.bench(srv.port, "--sessions", "6", "--concurrency", "2", accounts=bad,
                           expect=2)
            self.assertEqual(r["sessions_ok"], 0)
            self.assertEqual(r["sessions_failed"], 6)
            self.assertEqual(r["errors"], {"auth": 6})
            self.assertIn("[AUTH]", r["error_samples"]["auth"])
            # Mixed: the good account succeeds, the bad one is counted.
            mixed = self.write_accounts([("alice", ALICE_SECRET), ("bob", "wrong-secret-000")],
                                        "mixed")
            r = self.bench(srv.port, "--sessions", "10", "--concurrency", "1", accounts=mixed,
                           expect=2)
            self.assertEqual(r["sessions_ok"] + r["sessions_failed"], 10)
            self.assertEqual(r["errors"], {"auth": r["sessions_failed"]})
            self.assertGreater(r["sessions_ok"], 0)
            self.assertGreater(r["sessions_failed"], 0)
            p = self.env.run("bench", f"127.0.0.1:{srv.port}", "--accounts", bad,
                             "--sessions", "2")
            self.assertEqual(p.returncode, 2)
            self.assertIn(b"auth", p.stdout)
            self.assertIn(b"sessions/s", p.stdout)

    def test_shared_account_is_in_use(self):
        one = self.write_accounts([("alice", ALICE_SECRET)], "one")
        with self.env.server() as srv:
            r = self.bench(srv.port, "--sessions", "2", "--concurrency", "2", "--hold", "1",
                           accounts=one, expect=2)
        self.assertEqual(r["sessions_ok"], 1)
        self.assertEqual(r["errors"], {"in-use": 1})

    def test_nothing_listening_is_a_connect_error(self):
        from dovecot import free_port
        r = self.bench(free_port(), "--sessions", "3", expect=2)
        self.assertEqual(r["errors"], {"connect": 3})

    def test_duration_bounds_the_run(self):
        with self.env.server() as srv:
            t = time.monotonic()
            r = self.bench(srv.port, "--sessions", "0", "--duration", "1", "--concurrency", "2")
            took = time.monotonic() - t
        self.assertGreater(r["sessions_ok"], 0)
        self.assertEqual(r["sessions_failed"], 0)
        self.assertLess(took, 10)
        self.assertGreaterEqual(r["elapsed_s"], 0.9)
        self.assertLess(r["elapsed_s"], 5)

    def test_hold_keeps_sessions_logged_in_until_sigint(self):
        with self.env.server() as srv:
            p = subprocess.Popen([self.env.bin, "bench", f"127.0.0.1:{srv.port}", "--accounts",
                                  self.accounts, "--json", "--sessions", "2", "--concurrency", "2",
                                  "--hold", "300"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            seen = threading.Event()
            err: list[bytes] = []

            def reader():
                for line in p.stderr:
                    err.append(line)
                    if b"holding 2 sessions" in line:
                        seen.set()

            threading.Thread(target=reader, daemon=True).start()
            try:
                self.assertTrue(seen.wait(20), b"".join(err))
                srv.wait_for_log(r"login ok user=(alice|bob)", 2, timeout=5)
                t = time.monotonic()
                p.send_signal(signal.SIGINT)
                out, _ = p.communicate(timeout=20)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.assertLess(time.monotonic() - t, 10)
        self.assertEqual(p.returncode, 0, b"".join(err))
        r = json.loads(out)
        self.assertEqual(r["sessions_ok"], 2)
        self.assertEqual(r["peak_in_flight"], 2)
        # The hold is not part of the session latency.
        self.assertLess(r["latency_ms"]["session"]["max"], 10_000)

    def test_tls_verifies_the_certificate(self):
        cert, key = make_cert(self.env.root, "bench")
        with self.env.server("--tls-cert", cert, "--tls-key", key,
                             tls_listen=["127.0.0.1:0"]) as srv:
            port = srv.tls_ports[0]
            r = self.bench(port, "--tls", "--ca-file", cert, "--workload", "retr",
                           "--sessions", "4", "--concurrency", "2")
            self.assertEqual(r["sessions_ok"], 4)
            self.assertTrue(r["tls"])
            self.assertEqual(r["messages"], 4 * len(MESSAGES))
            self.assertEqual(r["latency_ms"]["tls"]["count"], 4)
            # The self-signed certificate is not in the system store.
            r = self.bench(port, "--tls", "--sessions", "2", expect=2)
            self.assertEqual(r["errors"], {"tls": 2})
            self.assertIn("certificate verify failed", r["error_samples"]["tls"])
            r = self.bench(port, "--tls", "--insecure", "--sessions", "2")
            self.assertEqual(r["sessions_ok"], 2)
            # A name the certificate does not carry.
            r = self.bench(port, "--tls", "--ca-file", cert, "--server-name", "other.example",
                           "--sessions", "1", expect=2)
            self.assertEqual(r["errors"], {"tls": 1})

    def test_usage_errors(self):
        with self.env.server() as srv:
            target = f"127.0.0.1:{srv.port}"
            for args in (["--workload", "dele"], ["--auth", "plain"], ["--sessions", "0"],
                         ["--insecure"], ["--concurrency", "0"]):
                p = self.env.run("bench", target, "--accounts", self.accounts, *args)
                self.assertEqual(p.returncode, 64, (args, p.stderr))
            p = self.env.run("bench", "127.0.0.1:99999", "--accounts", self.accounts)
            self.assertEqual(p.returncode, 64, p.stderr)
            p = self.env.run("bench", target, "--accounts", os.path.join(self.env.root, "none"))
            self.assertEqual(p.returncode, 1)
            broken = os.path.join(self.env.root, "broken")
            with open(broken, "w") as f:
                f.write("alice\n")
            p = self.env.run("bench", target, "--accounts", broken)
            self.assertEqual(p.returncode, 1)
            self.assertIn(b"line 1", p.stderr)
