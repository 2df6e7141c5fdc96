"""Smoke run of the LMTP benchmark (bench/lmtp_postfix.py --smoke --no-held): 200
messages through a private Postfix into apop's LMTP and into Dovecot's, end to end
only; no thresholds. It keeps the harness working: both servers yield numbers, and
the script itself checks that every message was stored. Skipped without Postfix,
Dovecot's LMTP or root, unless CI is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

from apoptest import REPO, SLOWDOWN, apop_bin
from dovecot import require_dovecot_lmtp
from postfix import require_postfix


class LmtpBenchSmokeTest(unittest.TestCase):
    def test_smoke_run_yields_both_servers(self):
        require_postfix()
        require_dovecot_lmtp()
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lmtp-smoke-{os.getpid()}.json")
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "lmtp_postfix.py"),
                            "--apop", apop_bin(), "--smoke", "--no-held", "--json", out],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=240 * SLOWDOWN)
        diag = f"stdout:\n{p.stdout.decode()}\nstderr:\n{p.stderr.decode()[-4000:]}"
        self.assertEqual(p.returncode, 0, diag)
        with open(out) as f:
            r = json.load(f)
        self.assertEqual(r["messages"], 200)
        self.assertEqual(set(r["servers"]), {"apop", "dovecot"}, diag)
        for name, phases in r["servers"].items():
            self.assertEqual(set(phases), {"end_to_end"}, diag)
            e = phases["end_to_end"]
            self.assertEqual(e["messages"], 200)
            self.assertGreater(e["messages_per_s"], 0, diag)
            self.assertGreater(e["server_cpu_ms_per_message"], 0, f"{name}\n{diag}")
        self.assertIn("end_to_end", r["ratios"])


if __name__ == "__main__":
    unittest.main()
