"""Maildir interoperability: messages written by other MTAs/MDAs (Postfix-style names
without sizes, Dovecot-style names with ,S= and ,W=) are served correctly, new/ moves
to cur/ when a session takes the maildrop, and QUIT removes exactly the deleted files."""

import os
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, crlf, make_message, unstuff

OURS = make_message("ours", "delivered by apop deliver\n")
POSTFIX = make_message("postfix", "written by postfix local(8)\nwith LF endings\n")
DOVECOT = make_message("dovecot", "written by dovecot-lda\r\n.with a dot\r\n", eol=b"\r\n")


class MaildirTest(ApopTestCase):

    def put(self, sub: str, name: str, content: bytes, age: int) -> str:
        path = os.path.join(self.env.maildir("alice"), sub, name)
        with open(path, "wb") as f:
            f.write(content)
        t = time.time() - age
        os.utime(path, (t, t))
        return path

    def retrieve_all(self, c) -> dict[bytes, bytes]:
        """uidl -> exact message bytes (CRLF form) of every message in the session."""
        out = {}
        for line in c.cmd_multi("UIDL")[1]:
            n, uid = line.split(b" ")
            status, body = c.cmd_multi(b"RETR " + n)
            self.assertTrue(status.startswith(b"+OK"), status)
            out[uid] = b"".join(l + b"\r\n" for l in unstuff(body))
        return out

    def test_foreign_maildir_files_are_served(self):
        self.setup_alice([OURS])
        self.put("new", "1700000000.V801I1234M5678.mx.example.org", POSTFIX, age=300)
        self.put("cur", "1700000001.M2P3.imap.example.org,S=%d,W=%d:2,S"
                 % (len(DOVECOT), len(crlf(DOVECOT))), DOVECOT, age=200)
        total = sum(len(crlf(m)) for m in (OURS, POSTFIX, DOVECOT))
        with self.env.server() as srv:
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            self.assertEqual(c.cmd("STAT"), b"+OK 3 %d" % total)
            sizes = sorted(int(l.split()[1]) for l in c.cmd_multi("LIST")[1])
            self.assertEqual(sizes, sorted(len(crlf(m)) for m in (OURS, POSTFIX, DOVECOT)))
            got = self.retrieve_all(c)
            self.assertEqual(sorted(got.values()), sorted(crlf(m) for m in
                                                          (OURS, POSTFIX, DOVECOT)))
            c.quit()

            # Taken by a session: nothing is left in new/, all three are in cur/.
            md = self.env.maildir("alice")
            self.assertEqual(os.listdir(os.path.join(md, "new")), [])
            cur = os.listdir(os.path.join(md, "cur"))
            self.assertEqual(len(cur), 3, cur)
            for name in cur:
                self.assertIn(":2,", name)

            # UIDLs are unchanged by the move, and QUIT removes exactly what was deleted.
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            again = self.retrieve_all(c)
            self.assertEqual(again, got)
            by_content = {v: k for k, v in got.items()}
            postfix_uid = by_content[crlf(POSTFIX)]
            for line in c.cmd_multi("UIDL")[1]:
                n, uid = line.split(b" ")
                if uid == postfix_uid:
                    self.assertTrue(c.cmd(b"DELE " + n).startswith(b"+OK"))
            c.quit()
        self.assertEqual(sorted(self.env.stored_messages("alice")), sorted([OURS, DOVECOT]))

    def test_messages_are_numbered_in_delivery_order(self):
        # Many deliveries within the same second: the Maildir names differ only in
        # their sub-second parts, and message n must still be the n-th delivered.
        msgs = [make_message(f"order {i:03d}", f"message number {i}\n") for i in range(1, 41)]
        self.setup_alice(msgs)
        with self.env.server() as srv:
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            order = []
            for i in range(1, len(msgs) + 1):
                status, lines = c.cmd_multi(f"TOP {i} 0")
                subject = [l for l in lines if l.startswith(b"Subject: ")]
                order.append(subject[0].decode()[len("Subject: "):])
            self.assertEqual(order, [f"order {i:03d}" for i in range(1, len(msgs) + 1)])
            c.quit()

    def test_hand_made_maildir_is_served(self):
        # The body is always streamed from the file; RETR sends the file's content.
        self.setup_alice([])
        os.makedirs(os.path.join(self.env.maildir("alice"), "new"), exist_ok=True)
        os.makedirs(os.path.join(self.env.maildir("alice"), "cur"), exist_ok=True)
        os.makedirs(os.path.join(self.env.maildir("alice"), "tmp"), exist_ok=True)
        self.put("new", "1700000002.M9P9.host", POSTFIX, age=10)
        with self.env.server() as srv:
            c = srv.connect()
            c.login("alice", ALICE_SECRET)
            self.assertEqual(c.cmd("LIST 1"), b"+OK 1 %d" % len(crlf(POSTFIX)))
            self.assertEqual(self.retrieve_all(c).popitem()[1], crlf(POSTFIX))
            c.quit()


if __name__ == "__main__":
    unittest.main()
