"""Quotas (issue 21) through the real binary: `apop user quota` and `apop user
show`, `apop deliver` over quota (exit 77, or 75 with quota_full_tempfail),
LMTP 552 5.2.2 / 452 4.2.2 at RCPT (SIZE=) and after DATA, the default quota
from the configuration file, and a POP3 DELE + QUIT that frees room."""

import json
import os
import shutil
import smtplib
import time

from apoptest import ALICE_SECRET, ApopTestCase, make_message
from test_lmtp import BOB_SECRET, lmtp_transaction
from test_metrics import metrics_port, scrape


class QuotaTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)
        self.env.add_user("bob", BOB_SECRET)

    def quota(self, *args: str, expect: int = 0):
        return self.env.check("user", "quota", "--data", self.env.data, *args, expect=expect)

    def maildirsize(self, user: str) -> str:
        with open(os.path.join(self.env.maildir(user), "maildirsize")) as fh:
            return fh.read()

    def test_user_quota_sets_shows_and_clears(self):
        out = self.quota("alice", "--bytes", "1G", "--messages", "50000").stdout.decode()
        self.assertIn("quota bytes: 1073741824 (1.0G)\n", out)
        self.assertIn("quota messages: 50000\n", out)
        self.env.deliver("alice", make_message("one", "hello\n"))
        show = self.env.check("user", "show", "--data", self.env.data, "alice").stdout.decode()
        self.assertIn("quota bytes: 1073741824 (1.0G)\n", show)
        self.assertRegex(show, r"usage bytes: \d+ of 1073741824 \(0\.0%\)\n")
        self.assertIn("usage messages: 1 of 50000 (0.0%)\n", show)
        # Back to the default (here: unlimited); 0 is unlimited for this account.
        out = self.quota("alice", "--bytes", "default", "--messages", "0").stdout.decode()
        self.assertIn("quota bytes: unlimited (default)\n", out)
        self.assertIn("quota messages: unlimited\n", out)
        out = self.quota("alice", "--clear").stdout.decode()
        self.assertIn("quota messages: unlimited (default)\n", out)
        # Bad input: a clear error, nothing changed.
        bad = self.quota("alice", "--bytes", "lots", expect=1)
        self.assertIn(b"not a size", bad.stderr)
        self.quota("nobody", "--bytes", "1M", expect=1)

    def test_report_lists_every_account(self):
        self.quota("alice", "--messages", "4")
        self.env.deliver("alice", make_message("one", "hello\n"))
        text = self.quota("--report").stdout.decode().splitlines()
        self.assertEqual(text[0].split("\t")[0], "user")
        alice = [l for l in text if l.startswith("alice\t")][0].split("\t")
        self.assertEqual(alice[4:7], ["1", "4", "25.0%"])
        rows = json.loads(self.quota("--report", "--json").stdout)
        by_user = {r["user"]: r for r in rows}
        self.assertEqual(by_user["alice"]["messages"], 1)
        self.assertEqual(by_user["alice"]["messages_limit"], 4)
        self.assertEqual(by_user["alice"]["messages_percent"], 25.0)
        self.assertEqual(by_user["bob"]["messages"], 0)  # `user add` made an empty Maildir
        self.assertIsNone(by_user["bob"]["messages_percent"])  # no limit
        # Prometheus' text format, for node_exporter's textfile collector.
        prom = self.quota("--report", "--prometheus").stdout.decode()
        samples = dict(l.rsplit(" ", 1) for l in prom.splitlines() if not l.startswith("#"))
        self.assertEqual(samples['apop_quota_usage_messages{user="alice"}'], "1")
        self.assertEqual(samples['apop_quota_limit_messages{user="alice"}'], "4")
        self.assertEqual(samples['apop_quota_limit_messages{user="bob"}'], "0")
        self.assertEqual(int(samples['apop_quota_usage_bytes{user="alice"}']),
                         by_user["alice"]["bytes"])
        for name in ("usage_bytes", "limit_bytes", "usage_messages", "limit_messages"):
            self.assertIn(f"# TYPE apop_quota_{name} gauge\n", prom)
        r = self.env.run("user", "quota", "--data", self.env.data, "--report", "--json",
                         "--prometheus")
        self.assertNotEqual(r.returncode, 0)

    def test_deliver_over_quota_exits_77_or_75(self):
        self.quota("alice", "--messages", "2")
        for i in range(2):
            self.env.deliver("alice", make_message(f"m{i}", "hello\n"))
        over = self.env.deliver("alice", make_message("m3", "hello\n"), expect=77)
        self.assertIn(b"5.2.2 Mailbox full", over.stderr)
        temp = self.env.check("deliver", "--data", self.env.data, "--quota-full-tempfail", "alice",
                              input=make_message("m4", "x\n"), expect=75)
        self.assertIn(b"4.2.2 Mailbox full", temp.stderr)
        # The setting from apop serve's configuration file, and its older name.
        for key in ("quota_full_tempfail", "lmtp_over_quota_temporary"):
            conf = os.path.join(self.env.root, key + ".toml")
            with open(conf, "w") as fh:
                fh.write(f"{key} = true\n")
            self.env.check("deliver", "--data", self.env.data, "--config", conf, "alice",
                           input=make_message("m5", "x\n"), expect=75)
        self.assertEqual(len(self.env.message_files("alice")), 2)
        # Maildir++: the limits line, then one line per delivery.
        lines = self.maildirsize("alice").splitlines()
        self.assertEqual(lines[0], "2C")
        self.assertEqual(sum(int(l.split()[1]) for l in lines[1:]), 2)

    def test_default_quota_from_the_configuration_file(self):
        conf = os.path.join(self.env.root, "apop.toml")
        with open(conf, "w") as fh:
            fh.write('quota_bytes = "1K"\n')
        self.env.check("deliver", "--data", self.env.data, "--config", conf, "alice",
                       input=make_message("small", "x\n"))
        self.env.check("deliver", "--data", self.env.data, "--config", conf, "alice",
                       input=make_message("big", "y" * 2000 + "\n"), expect=77)
        # The account's own limit wins over the default.
        self.quota("alice", "--bytes", "1M")
        self.env.check("deliver", "--data", self.env.data, "--config", conf, "alice",
                       input=make_message("big", "y" * 2000 + "\n"))
        show = self.env.check("user", "show", "--data", self.env.data, "--config", conf,
                              "bob").stdout.decode()
        self.assertIn("quota bytes: 1024 (1.0K) (default)\n", show)
        self.assertIn("usage bytes: 0 of 1024 (0.0%)\n", show)

    def test_lmtp_552_or_452_and_dele_frees_room(self):
        self.quota("alice", "--messages", "1")
        msg = make_message("over lmtp", "hello\n", eol=b"\r\n")
        with self.env.server("--lmtp-listen", "127.0.0.1:0") as srv:
            line = srv.wait_for_log(r"listening on \S+:\d+ \(lmtp\)")[0]
            port = int(line.rsplit(":", 1)[1].split()[0])
            with smtplib.LMTP("127.0.0.1", port) as lmtp:
                lmtp.ehlo("test.example")
                # alice gets one, bob (no quota) too.
                rcpts, replies = lmtp_transaction(lmtp, "s@example.org",
                                                  ["alice@x", "bob@x"], msg)
                self.assertEqual([c for c, _ in replies], [250, 250])
                # alice is full: refused at RCPT, bob still gets his copy.
                rcpts, replies = lmtp_transaction(lmtp, "s@example.org",
                                                  ["alice@x", "bob@x"], msg)
                self.assertEqual(rcpts[0], (552, b"5.2.2 Mailbox full"))
                self.assertEqual([c for c, _ in replies], [250])
                # SIZE= that cannot fit bob's new 1000-byte limit: refused at
                # RCPT; a smaller one is accepted.
                self.quota("bob", "--bytes", "1000")
                # The LMTP server reuses an account's lookup for 1 s
                # (limits::kLmtpLookupCacheTtl): the new limit applies after.
                time.sleep(1.2)
                code, _ = lmtp.mail("s@example.org", ["SIZE=100"])
                self.assertEqual(code, 250)
                self.assertEqual(lmtp.rcpt("bob@x")[0], 250)
                lmtp.rset()
                code, _ = lmtp.mail("s@example.org", ["SIZE=5000"])
                self.assertEqual(code, 250)
                self.assertEqual(lmtp.rcpt("bob@x"), (552, b"5.2.2 Mailbox full"))
                lmtp.rset()
            # POP3: alice deletes her message; the next delivery fits.
            with srv.connect() as c:
                reply = c.apop("alice", ALICE_SECRET)
                self.assertTrue(reply.startswith(b"+OK"), (reply, srv.log()))
                self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
                self.assertTrue(c.quit().startswith(b"+OK"))
            self.assertTrue(self.maildirsize("alice").endswith(" -1\n"))
            with smtplib.LMTP("127.0.0.1", port) as lmtp:
                lmtp.ehlo("test.example")
                rcpts, replies = lmtp_transaction(lmtp, "s@example.org", ["alice@x"], msg)
                self.assertEqual([c for c, _ in replies], [250])
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_lmtp_after_data_with_quota_full_tempfail(self):
        # The RCPT check passes (no SIZE=, room for one more message), the
        # message itself does not fit: the per-recipient reply after DATA.
        self.quota("alice", "--bytes", "300")
        big = make_message("big", "z" * 400 + "\n", eol=b"\r\n")
        metrics = ("--metrics-listen", "127.0.0.1:0") if shutil.which("curl") else ()
        with self.env.server("--lmtp-listen", "127.0.0.1:0", "--quota-full-tempfail",
                             *metrics) as srv:
            line = srv.wait_for_log(r"listening on \S+:\d+ \(lmtp\)")[0]
            port = int(line.rsplit(":", 1)[1].split()[0])
            with smtplib.LMTP("127.0.0.1", port) as lmtp:
                lmtp.ehlo("test.example")
                rcpts, replies = lmtp_transaction(lmtp, "s@example.org",
                                                  ["alice@x", "bob@x"], big)
                self.assertEqual([c for c, _ in rcpts], [250, 250])
                self.assertEqual(replies[0], (452, b"4.2.2 Mailbox full"))
                self.assertEqual(replies[1][0], 250)
            if metrics:
                samples = scrape(metrics_port(srv))
                self.assertEqual(samples['apop_quota_rejections_total{path="lmtp"}'], 1)
        self.assertEqual(self.env.message_files("alice"), [])
        self.assertEqual(len(self.env.message_files("bob")), 1)
