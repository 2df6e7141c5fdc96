"""Smoke run of the side-by-side benchmark (bench/compare.py --quick): tiny sizes, no
thresholds. It keeps the harness working: every test of the table runs against apop and
both Dovecot process models (and the cost floors) and yields numbers. Skipped without
Dovecot, unless CI is set (see dovecot.py). A second run checks the extra apop servers
(--apop-variants, --apop-baseline) on the TLS test alone, without Dovecot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

from apoptest import REPO, apop_bin, require_program
from dovecot import require_dovecot, require_dovecot_lmtp
from postfix import postfix_available


class CompareSmokeTest(unittest.TestCase):
    def test_quick_run_fills_the_table(self):
        require_dovecot()
        require_dovecot_lmtp()  # test 8
        require_program("fetchmail")
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"compare-smoke-{os.getpid()}.json")
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "compare.py"),
                            "--apop", apop_bin(), "--quick", "--json", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=280)
        diag = f"stdout:\n{p.stdout.decode()}\nstderr:\n{p.stderr.decode()[-4000:]}"
        self.assertEqual(p.returncode, 0, diag)
        with open(out) as f:
            r = json.load(f)
        tests = {row["test"].split(".")[0] for row in r["rows"]}
        self.assertEqual(tests, {"1", "2", "3", "4", "7"}, diag)
        for row in r["rows"]:
            for server in ("apop", "dovecot-stock", "dovecot-tuned"):
                v = row["values"].get(server)
                self.assertIsNotNone(v, f"{row['test']} {row['metric']} {server}\n{diag}")
                if row["metric"] != "PSS per session":  # a difference: noise at tiny sizes
                    self.assertGreaterEqual(v, 0, diag)
        rates = [row for row in r["rows"] if row["metric"] == "sessions/s"]
        self.assertEqual(len(rates), 4)
        for row in rates:
            self.assertEqual(set(row["values"]), {"apop", "floor", "dovecot-stock",
                                                  "dovecot-tuned"}, diag)
            for v in row["values"].values():
                self.assertGreater(v, 0, diag)
        # Test 7 (implicit TLS): the floor's CPU per session and the ratios to it.
        tls = [row for row in r["rows"] if row["test"].startswith("7.")]
        self.assertEqual(len(tls), 6, diag)
        for row in tls:
            self.assertIsNotNone(row["values"].get("floor"), diag)
            self.assertIn("apop/floor", row["ratios"], diag)
            self.assertIn("apop/dovecot-tuned", row["ratios"], diag)
        self.assertEqual(set(r["tls_floor"]), {"1", "4"}, diag)
        self.assertEqual(r["tls_key"], "rsa2048")
        f = r["fetch"]
        self.assertEqual(set(f["wall_s"]), {"apop fetch -> maildir", "apop fetch -> mda",
                                            "fetchmail -> mda"}, diag)
        self.assertEqual(r["failures"], [], diag)
        i = r["apop_idle"]
        self.assertEqual(i["failed"], 0, diag)
        self.assertTrue(i["held"] and all(i["held"]), diag)
        self.assertEqual(i["peak_in_flight"], i["sessions"], diag)
        self.assertGreater(i["logged_in"], 0, diag)
        self.assertGreater(i["pss_mib"], 0)
        # Test 8 (bench/fetch_accounts.py): both clients delivered everything exactly once
        # into Dovecot's LMTP, and every message arrived through the 451s.
        fa = r["fetch_accounts"]
        for who in ("apop", "fetchmail"):
            for c in fa["speed"]["checks"][who]:
                self.assertEqual(c["delivered"], c["expected"], diag)
                self.assertEqual(c["lost"] + c["duplicated"] + c["left_on_server"], 0, diag)
            self.assertGreater(fa["speed"]["median_s"][who], 0, diag)
        t = fa["tempfail"]["check"]
        self.assertEqual((t["delivered"], t["lost"], t["duplicated"]), (t["expected"], 0, 0),
                         diag)
        self.assertGreater(fa["tempfail"]["polls"], 1, diag)
        text = p.stdout.decode()
        for needle in ("apop/tuned", "apop/floor", "dovecot tuned", "5. fetch", "6. ",
                       "7. TLS cost floor", "8. ", "target >= 5x", "machine:"):
            self.assertIn(needle, text)
        # Test 9 (bench/lmtp_postfix.py; root and Postfix, as CI has): Postfix delivered
        # every message over LMTP into both servers (the script counts them), numbers each.
        if postfix_available() and os.getuid() == 0:
            lp = r["lmtp_postfix"]
            self.assertEqual(set(lp["servers"]), {"apop", "dovecot"}, diag)
            for phases in lp["servers"].values():
                e = phases["end_to_end"]
                self.assertEqual(e["messages"], 50, diag)
                self.assertGreater(e["messages_per_s"], 0, diag)
                # /proc counts in clock ticks (10 ms): 50 messages may cost a tick or two.
                self.assertGreaterEqual(e["server_cpu_ms_per_message"], 0, diag)
            self.assertIn("9. 50 messages by Postfix over LMTP", text)
        else:
            self.assertNotIn("lmtp_postfix", r)

    def test_variants_and_baseline(self):
        """Two variants of `apop serve`'s flags and a baseline binary (here the same one)
        run test 7 in the same run: a column each, the ratios, and each server ran with its
        own flags (--auth-threads shows in its thread count)."""
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"compare-var-{os.getpid()}.json")
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "compare.py"),
                            "--apop", apop_bin(), "--quick", "--only", "7", "--no-dovecot",
                            "--tls-key", "ec256", "--tls-concurrency", "1",
                            "--tls-duration", "0.3", "--apop-variants",
                            "a1=--workers 0 --auth-threads 1",
                            "a3=--workers 0 --auth-threads 3", "--apop-baseline", apop_bin(),
                            "--json", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        diag = f"stdout:\n{p.stdout.decode()}\nstderr:\n{p.stderr.decode()[-4000:]}"
        self.assertEqual(p.returncode, 0, diag)
        with open(out) as f:
            r = json.load(f)
        self.assertEqual(r["failures"], [], diag)
        self.assertEqual([row["test"] for row in r["rows"]], ["7. TLS APOP+STAT c=1"] * 3, diag)
        for row in r["rows"]:
            self.assertEqual(set(row["values"]), {"apop", "apop:a3", "apop-baseline", "floor"},
                             diag)
            self.assertEqual(set(row["ratios"]), {"apop:a3/apop", "apop/apop-baseline",
                                                  "apop/floor"}, diag)
            for v in row["values"].values():
                self.assertGreater(v, 0, diag)
        s = r["apop_servers"]
        self.assertEqual(s["apop"]["flags"], ["--workers", "0", "--auth-threads", "1"], diag)
        self.assertEqual(s["apop"]["variant"], "a1", diag)
        self.assertEqual(s["apop:a3"]["flags"], ["--workers", "0", "--auth-threads", "3"], diag)
        self.assertEqual(s["apop-baseline"]["flags"], [], diag)
        self.assertEqual(s["apop:a3"]["threads"] - s["apop"]["threads"], 2, diag)
        text = p.stdout.decode()
        for needle in ("apop:a3/apop", "apop/baseline", "apop/floor", "variant a3"):
            self.assertIn(needle, text)


if __name__ == "__main__":
    unittest.main()
