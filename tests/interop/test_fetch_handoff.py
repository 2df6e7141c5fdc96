"""`apop fetch --to lmtp:/smtp:` (src/client/handoff.hpp): messages from
`apop serve` handed to a mail server.

- LMTP into a real Dovecot (Debian's dovecot-lmtpd), on its Unix socket and on
  TCP: every message arrives in Dovecot's Maildir byte for byte (after the
  trace headers Dovecot adds), the POP3 server is emptied.
- SMTP against a small fake server in this file (PIPELINING, SIZE, 8BITMIME)
  that answers 4xx to some messages the first time: those stay on the POP3
  server and arrive with the next fetch, nothing is duplicated; a 5xx keeps
  the message (exit 2) or, with --on-reject bounce, sends a DSN to the
  Return-Path through the same server and deletes the message.
"""

import json
import os
import smtplib
import socketserver
import threading
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message
from dovecot import Dovecot, require_dovecot_lmtp


def with_return_path(sender: str, msg: bytes) -> bytes:
    return f"Return-Path: <{sender}>\n".encode() + msg


MSGS = [
    with_return_path("carol@example.org",
                     make_message("handoff 0", "Plain body.\n.starts with a dot\n..two dots\n")),
    with_return_path("dave@example.org",
                     make_message("handoff 1", "Caf\xe9 in 8 bit.\n".encode("latin-1"))),
    make_message("handoff 2 no return path", "x\n" * 2000 + ".\n"),
]

def strip_trace(delivered: bytes) -> bytes:
    """The delivered message without the three trace fields Dovecot's LMTP puts
    on top (Return-Path, Delivered-To, a folded Received); fails if they are
    not there."""
    lines = delivered.split(b"\n")
    assert lines[0].startswith(b"Return-Path: <"), delivered[:200]
    assert lines[1] == b"Delivered-To: bob", delivered[:200]
    assert lines[2].startswith(b"Received: from "), delivered[:200]
    i = 3
    while lines[i][:1] == b"\t":
        i += 1
    return b"\n".join(lines[i:])


class FetchHandoffBase(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.setup_alice(MSGS)
        self.state = os.path.join(self.env.root, "state")
        self.pwfile = os.path.join(self.env.root, "pw")
        with open(self.pwfile, "w") as f:
            f.write(ALICE_SECRET + "\n")

    def fetch(self, port, to, *args, expect=0):
        p = self.env.run("fetch", f"pop3://alice@127.0.0.1:{port}", "--to", to, "--state",
                         self.state, "--password-file", self.pwfile, "--tls", "none", "--json",
                         *args, timeout=60)
        self.assertEqual(p.returncode, expect,
                         f"stdout: {p.stdout!r}\nstderr: {p.stderr.decode(errors='replace')}")
        return json.loads(p.stdout) if p.stdout.strip() else None


class LmtpDovecotTest(FetchHandoffBase):
    def setUp(self):
        require_dovecot_lmtp()
        super().setUp()
        self.dv = Dovecot(lmtp=True)
        self.addCleanup(self.dv.cleanup)
        self.dv.add_user("bob", "bob-secret-1")
        self.dv.start()

    def check_delivered(self):
        got = [strip_trace(m) for m in self.dv.messages("bob")]
        self.assertEqual(sorted(got), sorted(MSGS), self.dv.log())

    def test_unix_socket(self):
        # Dovecot offers CHUNKING: the messages go by BDAT LAST (RFC 3030), and
        # must arrive byte for byte as by DATA.
        lmtp = smtplib.LMTP(self.dv.lmtp_socket)
        self.addCleanup(lmtp.close)
        self.assertEqual(lmtp.ehlo("t")[0], 250)
        self.assertTrue(lmtp.has_extn("chunking"))
        lmtp.quit()
        with self.env.server() as srv:
            s = self.fetch(srv.port, "lmtp:unix:" + self.dv.lmtp_socket, "--deliver-to", "bob")
            self.assertEqual(s["messages"]["stored"], 3, s)
            self.assertEqual(s["messages"]["deleted"], 3)
            self.assertEqual(s["destination"], "lmtp:unix:" + self.dv.lmtp_socket)
        self.check_delivered()
        self.assertEqual(self.env.message_files("alice"), [])
        # Dovecot's trace header names the envelope sender we gave (the Return-Path).
        raw = b"\n".join(self.dv.messages("bob"))
        self.assertIn(b"Return-Path: <carol@example.org>", raw)

    def test_tcp_keep_mode(self):
        with self.env.server() as srv:
            s = self.fetch(srv.port, f"lmtp:127.0.0.1:{self.dv.lmtp_port}", "--deliver-to", "bob",
                           "--keep")
            self.assertEqual(s["messages"]["stored"], 3, s)
            self.assertEqual(len(self.env.message_files("alice")), 3)
            # Seen: nothing handed over twice.
            s = self.fetch(srv.port, f"lmtp:127.0.0.1:{self.dv.lmtp_port}", "--deliver-to", "bob",
                           "--keep")
            self.assertEqual(s["messages"]["stored"], 0)
        self.check_delivered()

    def test_unknown_recipient_is_kept(self):
        with self.env.server() as srv:
            s = self.fetch(srv.port, "lmtp:unix:" + self.dv.lmtp_socket, "--deliver-to",
                           "nobody-here", expect=2)
            self.assertEqual(s["messages"]["stored"], 0)
            self.assertEqual(s["messages"]["failed"], 3)
            self.assertTrue(any("RCPT TO" in w for w in s["warnings"]), s["warnings"])
        self.assertEqual(len(self.env.message_files("alice")), 3)
        self.assertEqual(self.dv.messages("bob"), [])


class FakeSmtp(socketserver.ThreadingTCPServer):
    """SMTP with PIPELINING, SIZE and 8BITMIME. `verdict(data)` answers the end
    of DATA; every accepted transaction is appended to `accepted` as
    (mail_from_line, rcpt_list, data)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, verdict):
        self.verdict = verdict
        self.accepted = []
        self.answered = []  # every end-of-data reply code
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()


class SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, text: str):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 fake.example ESMTP")
        mail, rcpts = None, []
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("latin-1")
            verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-fake.example\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n"
                           "250-8BITMIME\r\n250 ENHANCEDSTATUSCODES")
            elif verb == "MAIL":
                mail, rcpts = cmd, []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpts.append(cmd)
                self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if mail is None or not rcpts:
                    self.reply("503 5.5.1 no recipients")
                    continue
                self.reply("354 go ahead")
                data = b""
                while True:
                    dl = self.rfile.readline()
                    if not dl:
                        return
                    if dl == b".\r\n":
                        break
                    if dl.startswith(b"."):
                        dl = dl[1:]
                    data += dl
                data = data.replace(b"\r\n", b"\n")
                code = self.server.verdict(data)
                with self.server.lock:
                    self.server.answered.append(code)
                    if code.startswith("2"):
                        self.server.accepted.append((mail, rcpts, data))
                self.reply(code)
                mail, rcpts = None, []
            elif verb == "RSET":
                mail, rcpts = None, []
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 unknown")


class SmtpFakeTest(FetchHandoffBase):
    def smtp(self, verdict):
        srv = FakeSmtp(verdict)
        self.addCleanup(srv.close)
        return srv

    def test_temporary_failures_arrive_next_time_once(self):
        deferred = set()

        def verdict(data):
            # Messages 0 and 2 are deferred the first time they are offered.
            for marker in (b"handoff 0", b"handoff 2"):
                if marker in data and marker not in deferred:
                    deferred.add(marker)
                    return "451 4.3.0 try again later"
            return "250 2.0.0 queued"

        smtp = self.smtp(verdict)
        to = f"smtp:127.0.0.1:{smtp.server_address[1]}"
        with self.env.server() as srv:
            s = self.fetch(srv.port, to, "--deliver-to", "bob@example.net", expect=2)
            self.assertEqual(s["messages"]["stored"], 1, s)
            self.assertEqual(s["messages"]["failed"], 2)
            self.assertTrue(any("451 4.3.0" in w for w in s["warnings"]), s["warnings"])
            self.assertEqual(len(self.env.message_files("alice")), 2)
            s = self.fetch(srv.port, to, "--deliver-to", "bob@example.net")
            self.assertEqual(s["messages"]["stored"], 2, s)
            self.assertEqual(self.env.message_files("alice"), [])
        datas = [d for (_, _, d) in smtp.accepted]
        self.assertEqual(sorted(datas), sorted(MSGS))  # each exactly once, byte for byte
        for mail, rcpts, data in smtp.accepted:
            self.assertEqual(rcpts, ["RCPT TO:<bob@example.net>"])
            if data == MSGS[0]:
                self.assertTrue(mail.startswith("MAIL FROM:<carol@example.org> SIZE="), mail)
            if data == MSGS[1]:
                self.assertTrue(mail.endswith(" BODY=8BITMIME"), mail)
            if data == MSGS[2]:
                self.assertTrue(mail.startswith("MAIL FROM:<> "), mail)

    def test_permanent_failure_kept(self):
        smtp = self.smtp(lambda d: "554 5.6.0 rejected" if b"handoff 1" in d else "250 ok")
        to = f"smtp:127.0.0.1:{smtp.server_address[1]}"
        with self.env.server() as srv:
            s = self.fetch(srv.port, to, "--deliver-to", "bob@example.net", expect=2)
            self.assertEqual(s["messages"]["stored"], 2)
            self.assertTrue(any("554 5.6.0 rejected" in w for w in s["warnings"]), s["warnings"])
        self.assertEqual(len(self.env.message_files("alice")), 1)

    def test_bounce(self):
        smtp = self.smtp(lambda d: "550 5.7.1 no thanks"
                         if b"handoff 1" in d and b"multipart/report" not in d else "250 ok")
        to = f"smtp:127.0.0.1:{smtp.server_address[1]}"
        with self.env.server() as srv:
            s = self.fetch(srv.port, to, "--deliver-to", "bob@example.net", "--on-reject",
                           "bounce")
            self.assertEqual(s["messages"]["stored"], 3, s)
        self.assertEqual(self.env.message_files("alice"), [])
        bounces = [(m, r, d) for (m, r, d) in smtp.accepted if b"multipart/report" in d]
        self.assertEqual(len(bounces), 1)
        mail, rcpts, dsn = bounces[0]
        self.assertTrue(mail.startswith("MAIL FROM:<>"), mail)
        self.assertEqual(rcpts, ["RCPT TO:<dave@example.org>"])
        self.assertIn(b"Status: 5.7.1", dsn)
        self.assertIn(b"Subject: handoff 1", dsn)

    def test_needs_deliver_to(self):
        p = self.env.run("fetch", "pop3://alice@127.0.0.1:1", "--to", "smtp:127.0.0.1:25",
                         "--password-file", self.pwfile)
        self.assertEqual(p.returncode, 64, p.stderr)
        self.assertIn(b"--deliver-to", p.stderr)


if __name__ == "__main__":
    unittest.main()
