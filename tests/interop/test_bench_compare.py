"""Smoke run of the side-by-side benchmark (bench/compare.py --quick): tiny sizes, no
thresholds. It keeps the harness working: every test of the table runs against apop and
both Dovecot process models and yields numbers. Skipped without Dovecot, unless CI is set
(see dovecot.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

from apoptest import REPO, apop_bin, require_program
from dovecot import require_dovecot


class CompareSmokeTest(unittest.TestCase):
    def test_quick_run_fills_the_table(self):
        require_dovecot()
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
        self.assertEqual(tests, {"1", "2", "3", "4"}, diag)
        for row in r["rows"]:
            for server in ("apop", "dovecot-stock", "dovecot-tuned"):
                v = row["values"].get(server)
                self.assertIsNotNone(v, f"{row['test']} {row['metric']} {server}\n{diag}")
                if row["metric"] != "PSS per session":  # a difference: noise at tiny sizes
                    self.assertGreaterEqual(v, 0, diag)
        rates = [row for row in r["rows"] if row["metric"] == "sessions/s"]
        self.assertEqual(len(rates), 2)
        for row in rates:
            for v in row["values"].values():
                self.assertGreater(v, 0, diag)
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
        text = p.stdout.decode()
        for needle in ("apop/tuned", "dovecot tuned", "5. fetch", "6. ", "machine:"):
            self.assertIn(needle, text)


if __name__ == "__main__":
    unittest.main()
