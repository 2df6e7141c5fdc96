"""`apop fetch --config` with many accounts into an LMTP server that answers
451 to every third message (fakelmtp.py): polled again until everything has
arrived, no message is lost or delivered twice and the POP3 server ends
empty -- the correctness half of issue 20's measure (bench/fetch_accounts.py
runs the same with 100 accounts and times it against fetchmail).
"""

from __future__ import annotations

import os
import sys
import unittest
from collections import Counter

from apoptest import ApopTestCase

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))

import fetch_accounts  # noqa: E402
from fakelmtp import FakeLmtp  # noqa: E402

ACCOUNTS, MESSAGES = 6, 6
EXIT_OK, EXIT_NOT_STORED = 0, 2


class FetchTempfailTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        root = os.path.join(self.env.root, "bench")
        os.makedirs(root)
        # The bench's provisioning and checks, with this test's apop binary.
        self.b = fetch_accounts.Bench(self.env.bin, root, ACCOUNTS, MESSAGES, max_parallel=4)
        self.addCleanup(self.b.cleanup)
        self.b.setup_server()
        self.b.provision()
        self.lm = FakeLmtp(os.path.join(root, "lmtp-mail"), self.b.users,
                           tempfail_every=3).start()
        self.addCleanup(self.lm.stop)
        self.cfg = os.path.join(root, "fetch.toml")
        self.b.apop_config(self.cfg, f"lmtp:127.0.0.1:{self.lm.port}",
                           os.path.join(root, "state"))

    def poll(self) -> int:
        _, p = self.b.run_apop(self.cfg)
        self.assertIn(p.returncode, (EXIT_OK, EXIT_NOT_STORED),
                      p.stderr.decode(errors="replace"))
        return p.returncode

    def test_every_third_message_tempfailed_arrives_later_exactly_once(self):
        total = ACCOUNTS * MESSAGES
        codes, arrived = [], []
        for _ in range(12):
            codes.append(self.poll())
            arrived.append(sum(len(self.lm.messages(u)) for u in self.b.users))
            # Never more than were sent, at any point: no duplicate in between.
            self.assertLessEqual(arrived[-1], total)
            # What arrived is gone from the POP3 server, what did not is still there.
            self.assertEqual(self.b.left_on_server(), total - arrived[-1], arrived)
            if arrived[-1] == total:
                break
        # The first poll met 451s (a third of the messages) and said so (exit 2); the
        # last one delivered the rest and exited 0.
        self.assertEqual(codes[0], EXIT_NOT_STORED, codes)
        self.assertEqual(arrived[0], total - total // 3, arrived)
        self.assertEqual(codes[-1], EXIT_OK, codes)
        self.assertGreater(len(codes), 1)
        self.assertEqual(self.lm.accepted, total)
        self.assertGreaterEqual(self.lm.tempfailed, total // 3)
        for u in self.b.users:
            got = Counter(fetch_accounts.message_ids(self.lm.messages(u)))
            self.assertEqual(sorted(got), sorted(self.b.expected[u]), u)
            self.assertEqual(max(got.values()), 1, f"{u}: duplicates {got}")
        check = self.b.verify("tempfail", self.lm.messages)
        self.assertEqual(check["lost"] + check["duplicated"] + check["unexpected"], 0, check)
        self.assertEqual(self.b.failures, [])

    def test_accounts_share_lmtp_connections(self):
        """An account's LMTP connection is left for the next account (client/
        handoff.hpp HandoffPool): with max_parallel 4, at most 4 connections
        carry the 6 accounts' messages, and every message arrives once."""
        lm = FakeLmtp(os.path.join(self.env.root, "bench", "shared-mail"), self.b.users).start()
        self.addCleanup(lm.stop)
        cfg = os.path.join(self.env.root, "bench", "shared.toml")
        self.b.apop_config(cfg, f"lmtp:127.0.0.1:{lm.port}",
                           os.path.join(self.env.root, "bench", "state-shared"))
        _, p = self.b.run_apop(cfg)
        self.assertEqual(p.returncode, EXIT_OK, p.stderr.decode(errors="replace"))
        self.assertEqual(lm.accepted, ACCOUNTS * MESSAGES)
        self.assertLessEqual(lm.connections, 4)
        check = self.b.verify("shared", lm.messages)
        self.assertEqual(check["lost"] + check["duplicated"] + check["unexpected"], 0, check)

    def test_fake_server_tempfails_every_third(self):
        # The test's own instrument: a client that sends three messages sees 250, 250, 451,
        # and only two are stored.
        import smtplib
        with smtplib.LMTP("127.0.0.1", self.lm.port) as c:
            c.ehlo_or_helo_if_needed()
            codes = []
            for i in range(3):
                try:
                    c.sendmail("s@example.org", [f"{self.b.users[0]}@x"],
                               f"Message-ID: <t{i}@x>\n\nbody {i}\n")
                    codes.append(250)
                except smtplib.SMTPRecipientsRefused as e:
                    codes.append(list(e.recipients.values())[0][0])
                except smtplib.SMTPDataError as e:
                    codes.append(e.smtp_code)
        self.assertEqual(codes, [250, 250, 451])
        self.assertEqual(len(self.lm.messages(self.b.users[0])), 2)


if __name__ == "__main__":
    unittest.main()
