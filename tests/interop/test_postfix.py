"""A real Postfix (Debian's, a private instance on a loopback port: postfix.py)
delivers into apop by both paths docs/operations.md shows:

- domains a.test and b.test: `virtual_transport`-style LMTP into `apop serve
  --lmtp-listen unix:PATH` (socket group postfix, mode 0660; the server runs
  as the service user, here `nobody`);
- domain c.test: a pipe(8) service running `apop deliver ... ${user}` as that
  same user (flags=DRu, as Dovecot's documentation shows for dovecot-lda).

Messages go in by SMTP (smtplib), come out by POP3 (poplib, APOP) and are
compared byte for byte: what Postfix prepends (Received; Return-Path and
Delivered-To on the pipe path) is matched exactly, the rest is the message
sent. An unknown recipient is refused by apop (550 5.1.1 / exit 67) and
bounced by Postfix to the sender, itself an apop account. Over quota: 552
5.2.2 / exit 77 bounce; with the temporary-failure setting 452 4.2.2 / exit 75
defer (skipped while `apop user quota` does not exist).

Root and Postfix are needed: skipped without them, unless CI is set."""

from __future__ import annotations

import os
import poplib
import re
import smtplib
import subprocess
import unittest

from apoptest import SLOWDOWN, ApopTestCase, cli_sanitizer_env, needs
from postfix import Postfix, postfix_available

SECRETS = {
    "alice": "violet-Kettle-4920-marsh",      # alice@a.test, LMTP
    "bob": "Quartz_lantern_8813_fjord",       # bob@b.test, LMTP
    "carol": "Amber-window-5531-heron",        # carol@c.test, pipe to apop deliver
    "sender": "Copper_meadow_7702_finch",     # sender@b.test: receives the bounces
}
SERVICE_USER, SERVICE_GROUP = "nobody", "nogroup"
SENDER = "sender@b.test"


def lmtp_serve_flags(sock: str) -> list[str]:
    """The `apop serve` flags of the LMTP path, in one place: workers, as
    by default (LMTP in a process of its own, as the service user, asking the
    auth process for each recipient), the socket for Postfix's lmtp(8) (user
    postfix) and the service user."""
    return ["--workers", "2", "--lmtp-listen", "unix:" + sock, "--lmtp-socket-group", "postfix",
            "--lmtp-socket-mode", "0660", "--user", SERVICE_USER]


def message(subject: str, to: str) -> bytes:  # `to`: an address, or a whole To: value
    """A CRLF message with what a byte-for-byte comparison should catch:
    8-bit text, a line starting with a dot, a "From " line, trailing blanks."""
    to = to if "<" in to else f"<{to}>"
    return (f"From: Sender <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@b.test>\r\n"
            "Date: Thu, 02 Jan 2025 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            "\r\n"
            "Grüße aus Köln.\r\n.a line with a leading dot\r\n..two dots\r\n"
            "From the start of a line\r\n  indented, trailing blanks  \r\n\r\nend\r\n"
            ).encode()


# What Postfix prepends: smtpd's Received header (HELO name, then "unknown":
# peername lookups are off), naming the recipient when the message had one.
RECEIVED = (rb"Received: from client\.b\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
            rb"\tby mx\.apop\.test \(Postfix\) with ESMTP id (?P<qid>[0-9A-F]+)\r\n"
            rb"\tfor <(?P<rcpt>[^>]+)>; [^\r\n]+\r\n")
RECEIVED_MANY = (rb"Received: from client\.b\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
                 rb"\tby mx\.apop\.test \(Postfix\) with ESMTP id (?P<qid>[0-9A-F]+);\r\n"
                 rb"\t[^\r\n]+\r\n")
# pipe(8) with flags=DR: Return-Path and Delivered-To, before smtpd's header.
PIPE_HEADERS = (rb"Return-Path: <(?P<rp>[^>]*)>\r\nDelivered-To: (?P<dt>[^\r\n]+)\r\n")
# apop's LMTP (RFC 5321 §4.4, the final delivery): Return-Path, and Received
# from Postfix's lmtp(8) (LHLO with myhostname) naming this copy's recipient.
LMTP_TRACE = (rb"Return-Path: <(?P<rp>[^>]*)>\r\n"
              rb"Received: from mx\.apop\.test\r\n\tby (?P<by>\S+) with LMTP\r\n"
              rb"\tfor <(?P<dt>[^>\r\n]+)>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} "
              rb"\d\d:\d\d:\d\d \+0000\r\n")


def quota_supported(env) -> bool:
    """Whether `apop user` has the `quota` subcommand (CLI11 lists them)."""
    h = env.run("user", "--help").stdout.decode()
    return re.search(r"^\s+quota\s", h, re.M) is not None


@needs(postfix_available() and os.getuid() == 0,
       "needs Debian's postfix (scripts/deps.sh installs it) and root")
class PostfixTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        for user, secret in SECRETS.items():
            self.env.add_user(user, secret)
        self.apop_argv = self.env.bin + " deliver --data " + self.env.data

    # -- set-up ---------------------------------------------------------------------
    def hand_over(self) -> None:
        """The data directory to the service user (serve --user and the pipe run
        as it); the test's temporary directory traversable to reach it."""
        os.chmod(self.env.root, 0o711)
        subprocess.run(["chown", "-R", f"{SERVICE_USER}:{SERVICE_GROUP}", self.env.data],
                       check=True)

    def start(self, *, tempfail: bool = False, deliver_flags: str = "",
              main: dict[str, str] | None = None):
        """apop serve (LMTP) and a Postfix delivering into it; returns (server, postfix)."""
        self.hand_over()
        sockdir = os.path.join(self.env.root, "lmtp")
        os.mkdir(sockdir, 0o755)
        sock = os.path.join(sockdir, "apop-lmtp")
        flags = lmtp_serve_flags(sock)
        if tempfail:
            flags.append(self.serve_tempfail_flag())
        srv = self.env.server(*flags)
        srv.start()  # stopped by finish(), or killed by the env's cleanup
        srv.wait_for_log(r"listening on unix:" + re.escape(sock) + r" \(lmtp\)")
        lmtp = "lmtp:unix:" + sock
        main = dict(main or {})
        # pipe(8) runs `apop deliver` with Postfix's environment, not ours:
        # the sanitizer settings of a CLI run (the asan preset) go through
        # export_environment.
        san = [f"{k}={v}" for k, v in cli_sanitizer_env(dict(os.environ)).items()
               if k in ("ASAN_OPTIONS", "UBSAN_OPTIONS")]
        if san:
            main["export_environment"] = " ".join(["TZ", "MAIL_CONFIG", "LANG", *san])
        pf = Postfix(domains={"a.test": lmtp, "b.test": lmtp, "c.test": "apopdeliver"},
                     pipes={"apopdeliver": (f"{SERVICE_USER}:{SERVICE_GROUP}",
                                            f"{self.apop_argv}{deliver_flags} ${{user}}")},
                     main=main)
        self.addCleanup(pf.cleanup)
        pf.start()
        return srv, pf

    def serve_tempfail_flag(self) -> str:
        h = self.env.run("serve", "--help").stdout.decode()
        for flag in ("--quota-full-tempfail", "--lmtp-over-quota-temporary"):
            if flag in h:
                return flag
        self.fail("apop serve has no over-quota temporary-failure flag")

    def send(self, pf: Postfix, msg: bytes, rcpts: list[str]) -> dict:
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=30 * SLOWDOWN) as s:
            s.ehlo("client.b.test")
            return s.sendmail(SENDER, rcpts, msg, mail_options=["BODY=8BITMIME"])

    def retrieve(self, srv, user: str) -> list[bytes]:
        """Every message of `user`, by APOP, as CRLF bytes (poplib unstuffs dots)."""
        p = poplib.POP3("127.0.0.1", srv.port, timeout=30 * SLOWDOWN)
        try:
            p.apop(user, SECRETS[user])
            count, _ = p.stat()
            return [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
        finally:
            p.quit()

    def assert_delivered(self, got: bytes, original: bytes, rcpt: str, pipe: bool,
                         pf: Postfix, single: bool = True) -> None:
        """`got` is exactly the trace headers of the final delivery (pipe(8)'s,
        or apop's LMTP's) and Postfix's Received, followed by `original`."""
        self.assertTrue(got.endswith(original), got)
        prefix = got[:len(got) - len(original)]
        pattern = ((PIPE_HEADERS if pipe else LMTP_TRACE)
                   + (RECEIVED if single else RECEIVED_MANY))
        m = re.fullmatch(pattern, prefix)
        self.assertIsNotNone(m, prefix)
        if single:
            self.assertEqual(m["rcpt"].decode(), rcpt)
        # Either path: the envelope sender and this copy's own recipient.
        self.assertEqual(m["rp"].decode(), SENDER)
        self.assertEqual(m["dt"].decode(), rcpt)
        # The queue id in the header is the one Postfix logged as delivered
        # to this recipient.
        qid = m["qid"].decode()
        pf.wait_log(rf"{qid}: to=<{re.escape(rcpt)}>, relay=.*status=sent")

    def finish(self, srv) -> None:
        """Stops the server: a clean exit (status 0) on SIGTERM."""
        self.assertEqual(srv.stop(), 0, srv.diagnostics())

    def bounces(self, srv) -> list[bytes]:
        return self.retrieve(srv, "sender")

    # -- tests ----------------------------------------------------------------------
    def test_two_lmtp_domains_and_pipe_domain_byte_for_byte(self):
        srv, pf = self.start()
        sent = {}
        for rcpt, pipe in (("alice@a.test", False), ("bob@b.test", False),
                           ("carol@c.test", True)):
            sent[rcpt] = (message("to " + rcpt, rcpt), pipe)
            self.assertEqual(self.send(pf, sent[rcpt][0], [rcpt]), {})
        pf.wait_queue_empty()
        for rcpt, (msg, pipe) in sent.items():
            got = self.retrieve(srv, rcpt.split("@")[0])
            self.assertEqual(len(got), 1, rcpt)
            self.assert_delivered(got[0], msg, rcpt, pipe, pf)
        lines = pf.wait_log(r"to=<(alice@a\.test|bob@b\.test)>.*status=sent", 2)
        self.assertTrue(all("relay=mx.apop.test[" in l for l in lines), lines)
        self.assertIn("delivered user=alice", srv.log())
        self.assertIn("delivered user=bob", srv.log())
        self.assertEqual(self.bounces(srv), [])
        self.finish(srv)

    def test_one_message_to_three_recipients_stored_once_each(self):
        srv, pf = self.start()
        msg = message("to all three", "<alice@a.test>, <bob@b.test>, <carol@c.test>")
        rcpts = ["alice@a.test", "bob@b.test", "carol@c.test"]
        self.assertEqual(self.send(pf, msg, rcpts), {})
        pf.wait_queue_empty()
        for rcpt in rcpts:
            got = self.retrieve(srv, rcpt.split("@")[0])
            self.assertEqual(len(got), 1, rcpt)
            self.assert_delivered(got[0], msg, rcpt, rcpt.endswith("c.test"), pf, single=False)
        self.finish(srv)

    def test_unknown_recipients_are_bounced_to_the_sender(self):
        srv, pf = self.start()
        msg = message("to nobody", "ghost@a.test")
        self.assertEqual(self.send(pf, msg, ["ghost@a.test", "alice@a.test"]), {})
        self.assertEqual(self.send(pf, message("nobody here", "x"), ["ghost@c.test"]), {})
        pf.wait_queue_empty()
        # LMTP: apop refused the recipient at RCPT with 550 5.1.1.
        line = pf.wait_log(r"to=<ghost@a\.test>.*status=bounced")[0]
        self.assertIn("dsn=5.1.1", line)
        self.assertRegex(line, r"said: 550 5\.1\.1 No such user \(in reply to RCPT TO")
        # pipe: apop deliver exited 67 (EX_NOUSER), a permanent failure.
        line = pf.wait_log(r"to=<ghost@c\.test>.*status=bounced")[0]
        self.assertIn("dsn=5.1.1", line)
        # The other recipient of the same message got it.
        self.assertEqual(len(self.retrieve(srv, "alice")), 1)
        # Two bounces, delivered by LMTP to the sender's apop mailbox.
        b = self.bounces(srv)
        self.assertEqual(len(b), 2, b)
        lmtp_bounce = next(x for x in b if b"ghost@a.test" in x)
        self.assertIn(b"Final-Recipient: rfc822; ghost@a.test", lmtp_bounce)
        self.assertIn(b"Status: 5.1.1", lmtp_bounce)
        self.assertIn(b"550 5.1.1 No such user", lmtp_bounce)
        self.assertIn(b"Subject: to nobody", lmtp_bounce)
        self.assertNotIn(b"alice@a.test", lmtp_bounce.split(b"Content-Description: Undelivered")[0])
        pipe_bounce = next(x for x in b if b"ghost@c.test" in x)
        self.assertIn(b"Status: 5.1.1", pipe_bounce)
        self.finish(srv)

    def test_unknown_recipient_refused_at_rcpt_by_address_verification(self):
        # docs/operations.md's advice for an Internet-facing server: Postfix
        # probes apop's LMTP (the RCPT's 550 5.1.1 is the answer) and refuses
        # the SMTP RCPT itself: nothing is queued, nothing bounces.
        srv, pf = self.start(main={
            "smtpd_recipient_restrictions": "reject_unverified_recipient",
            "unverified_recipient_reject_code": "550",
            "address_verify_poll_delay": "1s",
        })
        with smtplib.SMTP("127.0.0.1", pf.port, timeout=60 * SLOWDOWN) as s:
            s.ehlo("client.b.test")
            self.assertEqual(s.mail(SENDER)[0], 250)
            code, text = s.rcpt("ghost@a.test")
            self.assertEqual(code, 550, text)
            self.assertIn(b"5.1.1 <ghost@a.test>: Recipient address rejected", text)
            self.assertIn(b"550 5.1.1 No such user", text)
            # A known one passes the same check (its probe is accepted by apop).
            self.assertEqual(s.rcpt("alice@a.test")[0], 250)
            msg = message("verified", "alice@a.test")
            self.assertEqual(s.data(msg)[0], 250)
        pf.wait_queue_empty()
        got = self.retrieve(srv, "alice")
        self.assertEqual(len(got), 1)
        self.assert_delivered(got[0], msg, "alice@a.test", False, pf)
        self.assertEqual(self.bounces(srv), [])
        # Probes end at RCPT: apop stored nothing for ghost.
        self.assertNotIn("user=ghost", srv.log())
        self.finish(srv)

    # -- quotas (skipped until `apop user quota` exists) -----------------------------
    def fill(self, *users: str) -> None:
        """One message each, then a quota of one message: the next is over."""
        if not quota_supported(self.env):
            self.skipTest("apop user quota is not implemented yet")
        for u in users:
            self.env.deliver(u, message("first", u))
            self.env.check("user", "quota", "--data", self.env.data, u, "--messages", "1")

    def test_over_quota_bounces(self):
        self.fill("alice", "carol")
        srv, pf = self.start()
        self.send(pf, message("too much", "alice@a.test"), ["alice@a.test"])
        self.send(pf, message("too much", "carol@c.test"), ["carol@c.test"])
        pf.wait_queue_empty()
        line = pf.wait_log(r"to=<alice@a\.test>.*status=bounced")[0]
        self.assertIn("dsn=5.2.2", line)
        self.assertIn("552 5.2.2", line)
        # pipe: exit 77 (EX_NOPERM), which pipe(8) bounces.
        pf.wait_log(r"to=<carol@c\.test>.*status=bounced")
        self.assertEqual(len(self.retrieve(srv, "alice")), 1)
        self.assertEqual(len(self.retrieve(srv, "carol")), 1)
        b = self.bounces(srv)
        self.assertEqual(len(b), 2, b)
        self.assertTrue(any(b"552 5.2.2" in x and b"alice@a.test" in x for x in b), b)
        self.finish(srv)

    def test_over_quota_deferred_with_tempfail_setting(self):
        self.fill("alice", "carol")
        h = self.env.run("deliver", "--help").stdout.decode()
        if "--quota-full-tempfail" not in h:
            self.skipTest("apop deliver has no --quota-full-tempfail yet")
        srv, pf = self.start(tempfail=True, deliver_flags=" --quota-full-tempfail")
        self.send(pf, message("too much", "alice@a.test"), ["alice@a.test"])
        self.send(pf, message("too much", "carol@c.test"), ["carol@c.test"])
        line = pf.wait_log(r"to=<alice@a\.test>.*status=deferred")[0]
        self.assertIn("452 4.2.2", line)
        # pipe: exit 75 (EX_TEMPFAIL), which pipe(8) defers.
        pf.wait_log(r"to=<carol@c\.test>.*status=deferred")
        queued = sorted(r["address"] for m in pf.queue() for r in m["recipients"])
        self.assertEqual(queued, ["alice@a.test", "carol@c.test"])
        self.assertEqual(len(self.retrieve(srv, "alice")), 1)
        self.assertEqual(len(self.retrieve(srv, "carol")), 1)
        self.assertEqual(self.bounces(srv), [])
        self.finish(srv)

if __name__ == "__main__":
    unittest.main()
