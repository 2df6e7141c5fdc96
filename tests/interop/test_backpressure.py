"""A client that stops reading cannot make the server buffer unbounded output."""

import socket
import time
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class BackpressureTest(ApopTestCase):
    def test_client_that_never_reads_does_not_grow_server_memory(self):
        body = ("x" * 78 + "\n") * (4 * 1024 * 1024 // 79)  # a ~4 MiB message
        self.setup_alice([make_message("big", body)])
        with self.env.server() as srv:
            base = rss_kib(srv.pid)
            # Log in, then pipeline 50 RETRs (~200 MiB of replies) and never read.
            with srv.connect() as c:
                c.login("alice", ALICE_SECRET)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.send(b"RETR 1\r\n" * 50)
                time.sleep(2.0)
                grown = rss_kib(srv.pid) - base
                # Socket buffers plus one output chunk, not the 200 MiB asked for.
                self.assertLess(grown, 32 * 1024, f"server RSS grew by {grown} KiB")
                # Another client is served normally meanwhile.
                with srv.connect() as other:
                    self.assertTrue(other.cmd("CAPA").startswith(b"+OK"))
                    other.quit()
                c.abort()
            # The stalled session ended without UPDATE and released its lock.
            with srv.connect() as again:
                wait_ok = False
                for _ in range(50):
                    r = again.apop("alice", ALICE_SECRET)
                    if r.startswith(b"+OK"):
                        wait_ok = True
                        break
                    time.sleep(0.1)
                self.assertTrue(wait_ok)
                self.assertTrue(again.cmd("STAT").startswith(b"+OK 1 "))
                again.quit()


if __name__ == "__main__":
    unittest.main()
