"""The Maildir listing cache (MAILDIR/apop-cache, store/maildir_cache.hpp) seen from a
POP3 client: later logins on a big Maildir are served from the cache, and mail delivered
in between -- by `apop deliver`, by a Dovecot-LDA-style writer into new/, by an IMAP-style
writer straight into cur/ -- and messages removed at QUIT or by another program show up
exactly as without a cache."""

import os
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, crlf, make_message, unstuff

COUNT = 1200  # above limits::kMaildirCacheMinMessages (1000)


def body(i: int) -> bytes:
    return make_message(f"bulk {i}", f"message number {i}\n")


class MaildirCacheTest(ApopTestCase):

    def fill(self) -> None:
        cur = os.path.join(self.env.maildir("alice"), "cur")
        for i in range(COUNT):
            data = body(i)
            name = f"{1700000000 + i}.M{i}P77.bulk,S={len(data)},W={len(crlf(data))}:2,S"
            with open(os.path.join(cur, name), "wb") as f:
                f.write(data)
        t = time.time() - 120  # settled: the first login writes a "clean" cache
        os.utime(cur, (t, t))

    def session(self, srv, dele: list[int] = ()) -> tuple[bytes, list[bytes]]:
        c = srv.connect()
        c.login("alice", ALICE_SECRET)
        stat = c.cmd("STAT")
        self.assertTrue(stat.startswith(b"+OK"), stat)
        uidl = c.cmd_multi("UIDL")[1]
        for n in dele:
            self.assertTrue(c.cmd(f"DELE {n}").startswith(b"+OK"))
        self.assertTrue(c.quit().startswith(b"+OK"))
        return stat, [l.split(b" ")[1] for l in uidl]

    def retr(self, srv, uid: bytes) -> bytes:
        c = srv.connect()
        c.login("alice", ALICE_SECRET)
        for line in c.cmd_multi("UIDL")[1]:
            n, u = line.split(b" ")
            if u == uid:
                status, lines = c.cmd_multi(b"RETR " + n)
                self.assertTrue(status.startswith(b"+OK"), status)
                c.quit()
                return b"".join(l + b"\r\n" for l in unstuff(lines))
        c.quit()
        self.fail(f"UIDL {uid!r} not listed")

    def test_later_logins_with_cache_and_deliveries_in_between(self):
        self.setup_alice()
        self.fill()
        md = self.env.maildir("alice")
        cache = os.path.join(md, "apop-cache")
        total = sum(len(crlf(body(i))) for i in range(COUNT))
        with self.env.server() as srv:
            stat1, uidl1 = self.session(srv)
            self.assertEqual(stat1, b"+OK %d %d" % (COUNT, total))
            self.assertTrue(os.path.isfile(cache), os.listdir(md))
            self.assertEqual(os.stat(cache).st_mode & 0o777, 0o600)

            # A later login, served from the cache: the same listing.
            stat2, uidl2 = self.session(srv)
            self.assertEqual((stat2, uidl2), (stat1, uidl1))

            # Deliveries between logins: apop deliver, a Dovecot-LDA-style writer
            # (tmp/ then rename into new/), an IMAP APPEND-style file straight in cur/.
            ours = make_message("ours", "delivered by apop deliver\n")
            self.env.deliver("alice", ours)
            lda = make_message("lda", "written into new/ by another MDA\n")
            lda_name = "1800000000.M1P2.mx,S=%d,W=%d" % (len(lda), len(crlf(lda)))
            with open(os.path.join(md, "tmp", lda_name), "wb") as f:
                f.write(lda)
            os.rename(os.path.join(md, "tmp", lda_name), os.path.join(md, "new", lda_name))
            imap = make_message("imap", "appended by an IMAP client\n")
            imap_name = "1800000001.M9P9.imap:2,S"
            with open(os.path.join(md, "cur", imap_name), "wb") as f:
                f.write(imap)

            stat3, uidl3 = self.session(srv)
            extra = sum(len(crlf(m)) for m in (ours, lda, imap))
            self.assertEqual(stat3, b"+OK %d %d" % (COUNT + 3, total + extra))
            self.assertEqual(uidl3[:COUNT], uidl1)
            self.assertEqual(self.retr(srv, uidl3[-1]), crlf(imap))
            self.assertEqual(self.retr(srv, uidl3[-2]), crlf(lda))
            self.assertIn(crlf(ours), [self.retr(srv, u) for u in uidl3[COUNT:]])

            # UPDATE removes two; the next logins (from the rewritten cache, then
            # from it again) agree with the directory.
            _, before = self.session(srv, dele=[1, COUNT + 1])
            stat4, uidl4 = self.session(srv)
            expected = [u for i, u in enumerate(before) if i not in (0, COUNT)]
            self.assertEqual(uidl4, expected)
            self.assertEqual(int(stat4.split()[1]), COUNT + 1)
            self.assertEqual(len(os.listdir(os.path.join(md, "cur"))), COUNT + 1)

            # A message removed by another program between logins is not listed.
            gone = sorted(os.listdir(os.path.join(md, "cur")))[5]
            os.unlink(os.path.join(md, "cur", gone))
            stat5, uidl5 = self.session(srv)
            self.assertEqual(int(stat5.split()[1]), COUNT)
            self.assertNotIn(gone.split(",S=")[0].encode(), uidl5)

            # Without the cache, the same listing.
            os.unlink(cache)
            stat6, uidl6 = self.session(srv)
            self.assertEqual((stat6, uidl6), (stat5, uidl5))
            self.assertTrue(os.path.isfile(cache))

    def test_small_maildrop_has_no_cache(self):
        self.setup_alice([make_message("one", "x\n"), make_message("two", "y\n")])
        with self.env.server() as srv:
            stat, _ = self.session(srv)
            self.assertTrue(stat.startswith(b"+OK 2 "), stat)
        self.assertFalse(os.path.exists(os.path.join(self.env.maildir("alice"), "apop-cache")))


if __name__ == "__main__":
    unittest.main()
