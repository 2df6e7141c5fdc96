"""Python's stdlib poplib against the real apop binary."""

import poplib
import time
import unittest

from apoptest import (ALICE_SECRET, ApopTestCase, crlf, lines_of, make_message)

MSG1 = make_message("first", "Hello Alice,\n\nthis is the first message.\n-- \nBob\n")
MSG2 = make_message("second", "line one\nline two\nline three\nline four\n")
MSG3 = make_message("third", "short\n")


def client(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=10)


class PoplibTest(ApopTestCase):

    def test_apop_stat_list_uidl_top_retr(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            p = client(srv.port)
            self.assertTrue(p.getwelcome().startswith(b"+OK"))
            self.assertTrue(p.apop("alice", ALICE_SECRET).startswith(b"+OK"))
            self.assertEqual(p.stat(), (2, len(crlf(MSG1)) + len(crlf(MSG2))))

            resp, listing, _ = p.list()
            self.assertTrue(resp.startswith(b"+OK"))
            self.assertEqual(listing, [b"1 %d" % len(crlf(MSG1)), b"2 %d" % len(crlf(MSG2))])
            self.assertEqual(p.list(2), b"+OK 2 %d" % len(crlf(MSG2)))

            resp, uidls, _ = p.uidl()
            self.assertEqual([u.split()[0] for u in uidls], [b"1", b"2"])
            ids = [u.split()[1] for u in uidls]
            self.assertEqual(len(set(ids)), 2)
            self.assertEqual(p.uidl(1), b"+OK 1 " + ids[0])

            resp, lines, octets = p.retr(1)
            self.assertTrue(resp.startswith(b"+OK"))
            self.assertEqual(lines, lines_of(MSG1))
            self.assertEqual(octets, len(crlf(MSG1)))

            resp, lines, _ = p.top(2, 2)
            head, body = MSG2.split(b"\n\n", 1)
            self.assertEqual(lines, head.split(b"\n") + [b""] + body.split(b"\n")[:2])
            resp, lines, _ = p.top(2, 0)
            self.assertEqual(lines, head.split(b"\n") + [b""])

            self.assertTrue(p.noop().startswith(b"+OK"))
            self.assertTrue(p.quit().startswith(b"+OK"))
        # Nothing was deleted.
        self.assertEqual(len(self.env.message_files("alice")), 2)

    def test_user_pass_on_loopback(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = client(srv.port)
            self.assertIn("USER", p.capa())
            self.assertTrue(p.user("alice").startswith(b"+OK"))
            self.assertTrue(p.pass_(ALICE_SECRET).startswith(b"+OK"))
            self.assertEqual(p.stat(), (1, len(crlf(MSG1))))
            self.assertEqual(p.retr(1)[1], lines_of(MSG1))
            p.quit()

    def test_wrong_secret_raises(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = client(srv.port)
            with self.assertRaises(poplib.error_proto) as cm:
                p.apop("alice", ALICE_SECRET + "x")
            self.assertTrue(cm.exception.args[0].startswith(b"-ERR [AUTH]"), cm.exception)
            p.user("alice")
            with self.assertRaises(poplib.error_proto):
                p.pass_("not-the-secret-at-all")
            # Still in AUTHORIZATION after two failures: the right secret works.
            self.assertTrue(p.apop("alice", ALICE_SECRET).startswith(b"+OK"))
            p.quit()

    def test_dele_rset_quit_persist_across_sessions(self):
        self.setup_alice([MSG1, MSG2, MSG3])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            uidls = dict(u.split() for u in p.uidl()[1])
            self.assertTrue(p.dele(2).startswith(b"+OK"))
            self.assertEqual(p.stat(), (2, len(crlf(MSG1)) + len(crlf(MSG3))))
            self.assertTrue(p.rset().startswith(b"+OK"))
            self.assertEqual(p.stat()[0], 3)
            p.dele(1)
            p.dele(3)
            # Message numbers do not change within the session.
            self.assertEqual(p.list()[1], [b"2 %d" % len(crlf(MSG2))])
            self.assertTrue(p.quit().startswith(b"+OK"))

            # Second session: only message 2 is left, now number 1, same unique id.
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat(), (1, len(crlf(MSG2))))
            self.assertEqual(p.retr(1)[1], lines_of(MSG2))
            self.assertEqual(p.uidl()[1], [b"1 " + uidls[b"2"]])
            p.dele(1)
            p.quit()

            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat(), (0, 0))
            self.assertEqual(p.list()[1], [])
            p.quit()
        self.assertEqual(self.env.message_files("alice"), [])

    def test_deletion_without_quit_is_not_applied(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            p.dele(1)
            p.close()  # dropped, no QUIT
            # The lock is released when the server notices; poll for the next login.
            deadline = time.monotonic() + 5
            while True:
                q = client(srv.port)
                try:
                    q.apop("alice", ALICE_SECRET)
                    break
                except poplib.error_proto as e:
                    q.close()
                    if b"[IN-USE]" not in e.args[0] or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self.assertEqual(q.stat(), (1, len(crlf(MSG1))))
            q.quit()

    def test_dot_stuffing_round_trip(self):
        body = (".\n..\n.hidden line\n...three\nnot. a dot\n. space\n.\r\nend\n")
        msg = make_message("dots", body)
        self.setup_alice([msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            resp, lines, octets = p.retr(1)
            self.assertEqual(lines, lines_of(msg))
            self.assertEqual(octets, len(crlf(msg)))
            self.assertEqual(p.list(1), b"+OK 1 %d" % len(crlf(msg)))
            resp, lines, _ = p.top(1, 3)
            head = msg.split(b"\n\n", 1)[0].split(b"\n")
            self.assertEqual(lines, head + [b"", b".", b"..", b".hidden line"])
            p.quit()

    def test_lf_and_crlf_messages_have_the_same_size(self):
        lf = make_message("eol", "a\nb\n\nc d e\n", eol=b"\n")
        crlf_msg = make_message("eol", "a\nb\n\nc d e\n", eol=b"\r\n")
        self.assertEqual(crlf(lf), crlf_msg)
        self.setup_alice([lf, crlf_msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.list()[1], [b"1 %d" % len(crlf_msg), b"2 %d" % len(crlf_msg)])
            r1, r2 = p.retr(1), p.retr(2)
            self.assertEqual(r1[1], r2[1])
            self.assertEqual(r1[1], lines_of(lf))
            self.assertEqual(r1[2], len(crlf_msg))
            self.assertEqual(r2[2], len(crlf_msg))
            p.quit()

    def test_message_without_final_newline(self):
        msg = make_message("no-eol", "first line\nlast line without newline")
        self.assertFalse(msg.endswith(b"\n"))
        self.setup_alice([msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            # The missing final newline is not part of the message size.
            self.assertEqual(p.list(1), b"+OK 1 %d" % len(crlf(msg)))
            resp, lines, _ = p.retr(1)
            self.assertEqual(lines, lines_of(msg))
            self.assertEqual(lines[-1], b"last line without newline")
            p.quit()

    def test_empty_body_message(self):
        msg = make_message("empty body", "")
        self.assertTrue(msg.endswith(b"\n\n"))
        self.setup_alice([msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat(), (1, len(crlf(msg))))
            resp, lines, octets = p.retr(1)
            self.assertEqual(lines, lines_of(msg))
            self.assertEqual(lines[-1], b"")
            self.assertEqual(octets, len(crlf(msg)))
            resp, lines, _ = p.top(1, 5)
            self.assertEqual(lines, lines_of(msg))
            p.quit()

    def test_binary_and_long_lines(self):
        # 8-bit octets and a 2000-octet line survive unchanged.
        body = b"caf\xc3\xa9 \xff\xfe\x01\n" + b"y" * 2000 + b"\n"
        msg = make_message("8bit", body)
        self.setup_alice([msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.retr(1)[1], lines_of(msg))
            p.quit()

    def test_large_message(self):
        body = "".join(f"line {i:06d} " + "z" * 60 + "\n" for i in range(40000))  # ~2.8 MB
        msg = make_message("large", body)
        self.setup_alice([msg])
        with self.env.server() as srv:
            p = client(srv.port)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat(), (1, len(crlf(msg))))
            resp, lines, octets = p.retr(1)
            self.assertEqual(octets, len(crlf(msg)))
            self.assertEqual(lines, lines_of(msg))
            p.quit()


if __name__ == "__main__":
    unittest.main()
