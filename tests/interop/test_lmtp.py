"""`apop serve --lmtp-listen`: LMTP delivery (RFC 2033) with Python's smtplib.LMTP
over a Unix socket and TCP, read back with APOP through the same server."""

import os
import shutil
import re
import smtplib
import socket
import stat
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message

BOB_SECRET = "bob-secret-0123456789"


def lmtp_transaction(lmtp: smtplib.LMTP, sender: str, rcpts: list[str], msg: bytes):
    """MAIL, RCPTs, DATA by hand: smtplib reads one reply after DATA, LMTP
    sends one per accepted recipient. Returns (RCPT replies, DATA replies)."""
    code, text = lmtp.mail(sender)
    assert code == 250, (code, text)
    rcpt_replies = [lmtp.rcpt(r) for r in rcpts]
    accepted = sum(1 for code, _ in rcpt_replies if code == 250)
    code, text = lmtp.docmd("DATA")
    assert code == 354, (code, text)
    data = re.sub(rb"(?m)^\.", b"..", msg)  # dot-stuffing (msg has CRLF line ends)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    lmtp.send(data + b".\r\n")
    return rcpt_replies, [lmtp.getreply() for _ in range(accepted)]


# The trace block apop's LMTP puts on each copy (RFC 5321 §4.4): Return-Path
# and Received naming that copy's recipient only. LF in the store, CRLF by RETR.
TRACE_RE = re.compile(
    rb"Return-Path: <(?P<rp>[^>\r\n]*)>(?P<eol>\r?\n)"
    rb"Received: from (?P<client>\S+)(?P=eol)"
    rb"\tby (?P<by>\S+) with LMTP(?P=eol)"
    rb"\tfor <(?P<rcpt>[^>\r\n]+)>; "
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000(?P=eol)")


def split_trace(data: bytes, sender: str, rcpt: str, client: str | None = None) -> bytes:
    """Checks the trace block at the top of `data` and returns what follows."""
    m = TRACE_RE.match(data)
    assert m is not None, data[:300]
    assert m["rp"].decode() == sender, (m["rp"], sender)
    assert m["rcpt"].decode() == rcpt, (m["rcpt"], rcpt)
    if client is not None:
        assert m["client"].decode() == client, (m["client"], client)
    return data[m.end():]


class LmtpTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)
        self.env.add_user("bob", BOB_SECRET)

    def lmtp_tcp_port(self, srv) -> int:
        line = srv.wait_for_log(r"listening on \S+:\d+ \(lmtp\)")[0]
        return int(re.search(r"listening on \S+:(\d+) \(lmtp\)", line).group(1))

    def retrieve_all(self, srv, user: str, secret: str) -> list[bytes]:
        out = []
        with srv.connect() as c:
            self.assertTrue(c.apop(user, secret).startswith(b"+OK"))
            _, listing = c.cmd_multi("LIST")
            for entry in listing:
                n = entry.split()[0].decode()
                self.assertTrue(c.cmd("RETR " + n).startswith(b"+OK"))
                out.append(c.multi_raw())
            c.quit()
        return out

    def deliver_two(self, lmtp: smtplib.LMTP, body: str) -> bytes:
        msg = make_message("two recipients", body, eol=b"\r\n")
        lmtp.ehlo("test.example")  # LMTP's ehlo() sends LHLO
        self.assertTrue(lmtp.has_extn("pipelining"))
        self.assertTrue(lmtp.has_extn("enhancedstatuscodes"))
        self.assertTrue(lmtp.has_extn("8bitmime"))
        self.assertTrue(lmtp.has_extn("size"))
        rcpts, replies = lmtp_transaction(lmtp, "sender@example.org",
                                          ["alice@example.com", "bob@example.com"], msg)
        self.assertEqual([c for c, _ in rcpts], [250, 250])
        self.assertEqual([c for c, _ in replies], [250, 250], replies)
        self.assertTrue(all(t.startswith(b"2.0.0") for _, t in replies), replies)
        return msg

    def check_read_back(self, srv, msg: bytes):
        # RETR returns the message with CRLF line ends and dot-stuffing; the
        # message sent was CRLF and had no line starting with '.'.
        for user, secret in (("alice", ALICE_SECRET), ("bob", BOB_SECRET)):
            got = self.retrieve_all(srv, user, secret)
            self.assertEqual(len(got), 1, user)
            body = split_trace(got[0], "sender@example.org", user + "@example.com",
                               client="test.example")
            self.assertEqual(body, msg + b".\r\n", user)
            self.assertEqual(len(self.env.message_files(user)), 1)

    def test_unix_socket_two_recipients_mode_and_unknown_user(self):
        sock = os.path.join(self.env.root, "lmtp.sock")
        with self.env.server("--lmtp-listen", "unix:" + sock, "--lmtp-socket-mode", "0620") as srv:
            srv.wait_for_log(r"listening on unix:" + re.escape(sock) + r" \(lmtp\)")
            self.assertTrue(stat.S_ISSOCK(os.lstat(sock).st_mode))
            self.assertEqual(stat.S_IMODE(os.lstat(sock).st_mode), 0o620)
            lmtp = smtplib.LMTP(sock)
            self.addCleanup(lmtp.close)
            msg = self.deliver_two(lmtp, "Hello both.\n")
            # An unknown user: 550 5.1.1 at RCPT.
            lmtp.mail("sender@example.org")
            code, text = lmtp.rcpt("nobody@example.com")
            self.assertEqual(code, 550)
            self.assertTrue(text.startswith(b"5.1.1"), text)
            lmtp.rset()
            # HELO is not LMTP.
            code, _ = lmtp.docmd("HELO", "x")
            self.assertEqual(code, 500)
            lmtp.quit()
            self.check_read_back(srv, msg)

    def test_tcp_one_unknown_of_three_and_dot_unstuffing(self):
        with self.env.server("--lmtp-listen", "127.0.0.1:0") as srv:
            port = self.lmtp_tcp_port(srv)
            lmtp = smtplib.LMTP("127.0.0.1", port)
            self.addCleanup(lmtp.close)
            msg = make_message("dots", ".leading dot\n..two\nend\n", eol=b"\r\n")
            lmtp.ehlo("test.example")
            rcpts, replies = lmtp_transaction(
                lmtp, "s@example.org", ["alice@example.com", "ghost@example.com", "bob@x"], msg)
            self.assertEqual([c for c, _ in rcpts], [250, 550, 250])
            self.assertTrue(rcpts[1][1].startswith(b"5.1.1"), rcpts[1])
            # One reply per accepted recipient, nothing for the refused one.
            self.assertEqual([c for c, _ in replies], [250, 250])
            self.assertEqual(lmtp.noop()[0], 250)  # no reply left over
            lmtp.quit()
            # Stored dot-unstuffed with LF line ends; RETR stuffs again.
            stored = self.env.stored_messages("alice")
            self.assertEqual(len(stored), 1)
            self.assertEqual(split_trace(stored[0], "s@example.org", "alice@example.com"),
                             msg.replace(b"\r\n", b"\n"))
            got = self.retrieve_all(srv, "bob", BOB_SECRET)
            self.assertEqual(len(got), 1)
            self.assertEqual(split_trace(got[0], "s@example.org", "bob@x"),
                             msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")

    def test_bdat_pipelined_in_one_write(self):
        """RFC 3030 CHUNKING: MAIL, RCPTs, BDAT LAST and the raw message in one
        write, answered in one go (one reply per command, then per accepted
        recipient); a message in two chunks; nothing is dot-unstuffed."""
        sock = os.path.join(self.env.root, "lmtp.sock")
        with self.env.server("--lmtp-listen", "unix:" + sock) as srv:
            srv.wait_for_log(r"listening on unix:.* \(lmtp\)")
            msg = make_message("chunked", ".leading dot\r\n..two\r\nend\r\n", eol=b"\r\n")
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(10)
                c.connect(sock)
                f = c.makefile("rb")
                self.assertTrue(f.readline().startswith(b"220 "))
                c.sendall(b"LHLO t.example\r\n")
                ext = []
                while True:
                    line = f.readline()
                    ext.append(line[4:].strip())
                    if line[3:4] == b" ":
                        break
                self.assertIn(b"CHUNKING", ext)
                c.sendall(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\n"
                          b"RCPT TO:<ghost@example.com>\r\nRCPT TO:<bob@example.com>\r\n"
                          b"BDAT %d LAST\r\n" % len(msg) + msg)
                codes = [f.readline()[:9] for _ in range(6)]
                self.assertEqual(codes, [b"250 2.1.0", b"250 2.1.5", b"550 5.1.1", b"250 2.1.5",
                                         b"250 2.0.0", b"250 2.0.0"])
                # Two chunks, the second BDAT 0 LAST.
                c.sendall(b"MAIL FROM:<>\r\nRCPT TO:<alice@x>\r\nBDAT 5\r\nSubjeBDAT 9\r\n"
                          b"ct: 2\r\n\r\nBDAT 0 LAST\r\nQUIT\r\n")
                codes = [f.readline()[:9] for _ in range(6)]
                self.assertEqual(codes, [b"250 2.1.0", b"250 2.1.5", b"250 2.0.0", b"250 2.0.0",
                                         b"250 2.0.0", b"221 2.0.0"])
            stored = sorted(self.env.stored_messages("alice"), key=len)
            self.assertEqual(len(stored), 2)
            self.assertEqual(split_trace(stored[0], "", "alice@x"), b"Subject: 2\n\n")
            self.assertEqual(split_trace(stored[1], "s@example.org", "alice@example.com"),
                             msg.replace(b"\r\n", b"\n"))
            self.assertEqual(split_trace(self.env.stored_messages("bob")[0], "s@example.org",
                                         "bob@example.com"), msg.replace(b"\r\n", b"\n"))

    def test_fetch_hands_off_to_apop_lmtp(self):
        """`apop fetch --to lmtp:unix:` into apop's own LMTP (BDAT, as it offers
        CHUNKING): alice's mail moves to bob byte for byte, alice's is emptied."""
        msgs = [make_message("m%d" % i, ".dot\n..two\n" + "x\n" * (i * 500)) for i in range(3)]
        for m in msgs:
            self.env.deliver("alice", m)
        sock = os.path.join(self.env.root, "lmtp.sock")
        pw = os.path.join(self.env.root, "pw")
        with open(pw, "w") as f:
            f.write(ALICE_SECRET + "\n")
        with self.env.server("--lmtp-listen", "unix:" + sock) as srv:
            srv.wait_for_log(r"listening on unix:.* \(lmtp\)")
            p = self.env.run("fetch", f"pop3://alice@127.0.0.1:{srv.port}", "--to",
                             "lmtp:unix:" + sock, "--deliver-to", "bob@example.com", "--state",
                             os.path.join(self.env.root, "state"), "--password-file", pw,
                             "--tls", "none", timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        self.assertEqual(self.env.message_files("alice"), [])
        # No Return-Path in the fetched messages: the null reverse-path.
        got = sorted(split_trace(m, "", "bob@example.com") for m in self.env.stored_messages("bob"))
        self.assertEqual(got, sorted(msgs))

    def test_store_failure_is_451_for_that_recipient_only(self):
        # A regular file where alice's Maildir should be: her copy cannot be
        # stored (temporary: the MTA retries her alone), bob's is.
        alice_dir = self.env.maildir("alice")
        os.makedirs(os.path.dirname(alice_dir), exist_ok=True)
        if os.path.isdir(alice_dir):
            shutil.rmtree(alice_dir)
        with open(alice_dir, "w") as fh:
            fh.write("not a maildir")
        with self.env.server("--lmtp-listen", "127.0.0.1:0") as srv:
            lmtp = smtplib.LMTP("127.0.0.1", self.lmtp_tcp_port(srv))
            self.addCleanup(lmtp.close)
            lmtp.ehlo("t")
            msg = make_message("half", "x\n", eol=b"\r\n")
            _, replies = lmtp_transaction(lmtp, "s@x", ["alice@x", "bob@x"], msg)
            self.assertEqual([c for c, _ in replies], [451, 250], replies)
            self.assertTrue(replies[0][1].startswith(b"4.3.0"), replies)
            lmtp.quit()
            stored = self.env.stored_messages("bob")
            self.assertEqual(len(stored), 1)
            self.assertEqual(split_trace(stored[0], "s@x", "bob@x"), msg.replace(b"\r\n", b"\n"))

    def test_connection_cap(self):
        # limits::kLmtpMaxConnections open connections; the next gets 421 at
        # once; a closed one frees its place.
        with self.env.server("--lmtp-listen", "127.0.0.1:0") as srv:
            port = self.lmtp_tcp_port(srv)

            def connect():
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                self.addCleanup(s.close)
                return s, s.makefile("rb").readline()

            held = [connect() for _ in range(64)]
            self.assertTrue(all(g.startswith(b"220 ") for _, g in held))
            _, refused = connect()
            self.assertEqual(refused, b"421 4.3.2 Too many connections\r\n")
            held[0][0].sendall(b"QUIT\r\n")
            held[0][0].makefile("rb").readline()
            held[0][0].close()
            for _ in range(50):
                s, g = connect()
                if g.startswith(b"220 "):
                    break
                s.close()
            self.assertTrue(g.startswith(b"220 "), g)

    def test_mbox_location(self):
        mboxes = os.path.join(self.env.root, "mboxes")
        os.mkdir(mboxes)
        with self.env.server("--mail-location", "mbox:" + mboxes + "/%u",
                             "--lmtp-listen", "127.0.0.1:0") as srv:
            lmtp = smtplib.LMTP("127.0.0.1", self.lmtp_tcp_port(srv))
            self.addCleanup(lmtp.close)
            lmtp.ehlo("t")
            msg = make_message("to an mbox", "From here on\n", eol=b"\r\n")
            _, replies = lmtp_transaction(lmtp, "s@example.org", ["alice@x"], msg)
            self.assertEqual([c for c, _ in replies], [250])
            lmtp.quit()
            with open(os.path.join(mboxes, "alice"), "rb") as fh:
                data = fh.read()
            self.assertTrue(data.startswith(b"From s@example.org "), data[:80])
            self.assertIn(b"\n>From here on\n", data)
            # Exactly what `apop deliver` stores (its "From " quoting included,
            # as Postfix's local(8) does) for the same bytes, the trace block
            # included (Postfix's pipe(8) with flags R adds a Return-Path too).
            got = self.retrieve_all(srv, "alice", ALICE_SECRET)
            self.assertEqual(len(got), 1)
            body = split_trace(got[0], "s@example.org", "alice@x")
            trace = got[0][:len(got[0]) - len(body)].replace(b"\r\n", b"\n")
            r = self.env.run("deliver", "--data", self.env.data, "--mail-location",
                             "mbox:" + mboxes + "/%u", "bob", input=trace + msg)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(got, self.retrieve_all(srv, "bob", BOB_SECRET))
            self.assertEqual(body, msg.replace(b"\nFrom ", b"\n>From ") + b".\r\n")

    def test_config_check_and_bad_mode(self):
        conf = os.path.join(self.env.root, "apop.toml")
        with open(conf, "w") as fh:
            fh.write('workers = 0\nlisten = ["127.0.0.1:110"]\n'
                     'lmtp_listen = ["unix:/run/apop/lmtp", "127.0.0.1:24"]\n'
                     'lmtp_socket_group = "postfix"\nlmtp_max_recipients = 50\n')
        r = self.env.run("config", "check", "--config", conf)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout.decode()
        self.assertIn('lmtp_listen = ["unix:/run/apop/lmtp", "127.0.0.1:24"]', out)
        self.assertIn('lmtp_socket_mode = "0660"', out)
        self.assertIn("lmtp_max_recipients = 50", out)
        r = self.env.run("config", "check", "--config", conf, "--lmtp-socket-mode", "0668")
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("lmtp_socket_mode", r.stderr.decode())
        r = self.env.run("config", "check", "--config", conf, "--lmtp-listen", "unix:")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("lmtp_listen", r.stderr.decode())


class LmtpProcessTest(ApopTestCase):
    """With workers (the default), LMTP runs in a process of its own that the
    master supervises: the master keeps the listening socket, so a killed
    LMTP process is restarted on the same socket, and a client that connects
    meanwhile waits in the backlog instead of being refused."""

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)

    def test_killed_lmtp_process_restarts_on_the_same_socket(self):
        from test_workers import alive, children
        sock = os.path.join(self.env.root, "lmtp.sock")
        with self.env.server("--workers", "2", "--lmtp-listen", "unix:" + sock,
                             "--lmtp-threads", "3") as srv:
            srv.wait_for_log(r"listening on unix:.* \(lmtp\)")
            first = children(srv)["lmtp"]
            # The filter comes a moment after the process starts (it once
            # read 0 here on a loaded machine): wait for it, boundedly.
            deadline = time.monotonic() + 10
            while True:
                with open(f"/proc/{first}/status") as fh:
                    status = fh.read()
                if "\nSeccomp:\t2\n" in status or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.assertIn("\nSeccomp:\t2\n", status)
            # The main thread (signals), the accepting thread and three serving threads.
            self.assertEqual(len(os.listdir(f"/proc/{first}/task")), 5)
            os.kill(first, 9)
            c = smtplib.LMTP(sock)  # connects to the master's socket at once
            self.addCleanup(c.close)
            srv.wait_for_log(r"lmtp started pid=", count=2)
            second = children(srv)["lmtp"]
            self.assertNotEqual(first, second)
            self.assertFalse(alive(first))
            c.ehlo("t")
            msg = make_message("after a restart", "x\n", eol=b"\r\n")
            self.assertEqual(c.sendmail("s@x", ["alice@x"], msg), {})
            c.quit()
            stored = self.env.stored_messages("alice")
            self.assertEqual(len(stored), 1)
            self.assertEqual(split_trace(stored[0], "s@x", "alice@x"), msg.replace(b"\r\n", b"\n"))


    def test_sandboxed_process_makes_and_repairs_maildirs_on_demand(self):
        # The Maildir is opened as is; only a missing one (or a missing tmp/
        # or new/) is made, by the sandboxed process, and the copy is stored
        # byte for byte after its trace block. Its ",S=" and ",W=" fields
        # are the stored file's size and its CRLF size.
        sock = os.path.join(self.env.root, "lmtp.sock")
        box = self.env.maildir("alice")
        shutil.rmtree(box)
        with self.env.server("--workers", "2", "--lmtp-listen", "unix:" + sock) as srv:
            srv.wait_for_log(r"listening on unix:.* \(lmtp\)")
            c = smtplib.LMTP(sock)
            self.addCleanup(c.close)
            c.ehlo("t")
            msg = make_message("on demand", "line\n\nlast\n", eol=b"\r\n")
            self.assertEqual(c.sendmail("s@x", ["alice@x"], msg), {})
            for sub in ("cur", "new", "tmp"):
                self.assertTrue(os.path.isdir(os.path.join(box, sub)), sub)
            shutil.rmtree(os.path.join(box, "tmp"))
            self.assertEqual(c.sendmail("s@x", ["alice@x"], msg), {})
            self.assertTrue(os.path.isdir(os.path.join(box, "tmp")))
            c.quit()
        files = self.env.message_files("alice")
        self.assertEqual(len(files), 2)
        self.assertEqual(self.env.tmp_files("alice"), [])
        for path in files:
            with open(path, "rb") as fh:
                data = fh.read()
            self.assertEqual(split_trace(data, "s@x", "alice@x"), msg.replace(b"\r\n", b"\n"))
            crlf = len(data) + data.count(b"\n") - data.count(b"\r\n")
            self.assertTrue(path.endswith(f",S={len(data)},W={crlf}"), path)

if __name__ == "__main__":
    unittest.main()
