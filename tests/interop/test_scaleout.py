"""Scale-out (issue 9): two `apop serve` processes sharing one data tree and a
PostgreSQL database, behind HAProxy sending PROXY protocol v2; real clients
(poplib, raw sockets) go through HAProxy.

Checks: `apop user ...` and `apop deliver` against PostgreSQL; logins served
by both servers, which log the client's real address; a second session of
the same user on the other server gets [IN-USE]; a brute force spread over
both servers is blocked on the combined count; killing a server mid-session
loses no mail and the client gets in again through HAProxy on the other one.

The whole suite runs again with every server started `--workers 2`
(WorkersScaleOutTest), and WorkersLockTest checks the maildrop lock that a
server's auth process holds for its workers: [IN-USE] across servers, given
back at QUIT, released when the worker holding it is killed with SIGKILL, and
mail retrieved and deleted consistently by sessions alternating between the
servers.

Needs Debian's postgresql and haproxy (scripts/deps.sh installs them); the
test is skipped, saying so, only when those binaries are missing.
"""

from __future__ import annotations

import os
import poplib
import re
import subprocess
import signal
import socket
import time
import unittest

from apoptest import (ALICE_SECRET, BOB_SECRET, ApopEnv, apop_digest, make_message, servers_with,
                      skip_or_fail, timestamp_of, unstuff, wait_until)
from pgcluster import Haproxy, PgCluster
from test_workers import alive, children, worker_of

CAROL_SECRET = "Nimbus-orchard-5581-quill"
BLOCK_AFTER = 4


class RawClient:
    """A POP3 client socket bound to a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed; partial {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def host(self) -> str:
        return re.search(rb"@([^>]+)>", self.greeting).group(1).decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class PgCase(unittest.TestCase):
    """A private PostgreSQL cluster for the class, a fresh database and data
    directory for each test."""
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.pg = PgCluster()
        try:
            cls.pg.start()
        except BaseException:
            cls.pg.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def setUp(self):
        self.env = ApopEnv()
        self.addCleanup(self.env.cleanup)
        self.db = f"apop_{self.id().rsplit('.', 1)[-1][:40].lower()}"
        self.url = self.pg.createdb(self.db)
        self.clients: list[RawClient] = []
        self.addCleanup(lambda: [c.close() for c in self.clients])

    # -- helpers -------------------------------------------------------------------
    def apop(self, *args: str, input: bytes | None = None, expect: int = 0):
        return self.env.check(*args, "--data", self.env.data, "--users", self.url, input=input,
                              expect=expect)

    def add_user(self, name: str, secret: str):
        self.apop("user", "add", name, "--password-stdin", input=secret.encode() + b"\n")

    def deliver(self, user: str, message: bytes):
        self.apop("deliver", user, input=message)

    def advisory_locks(self) -> int:
        return int(self.pg.psql(self.db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                         " AND granted"))

    def wait_for_locks(self, n: int, timeout: float = 5):
        deadline = time.monotonic() + timeout
        while self.advisory_locks() != n:
            if time.monotonic() > deadline:
                self.fail(f"expected {n} advisory lock(s), have {self.advisory_locks()}")
            time.sleep(0.1)


class ScaleOutTest(PgCase):

    def start_cluster(self):
        """Two servers (hostnames server-a, server-b) and HAProxy in front."""
        self.servers = []
        for name in ("server-a", "server-b"):
            s = self.env.server("--users", self.url, "--hostname", name, "--trusted-proxy",
                                "127.0.0.1", "--block-after-failures", str(BLOCK_AFTER),
                                "--max-auth-failures", "3", "-v")
            s.start()
            self.servers.append(s)
        self.haproxy = Haproxy([s.port for s in self.servers])
        self.addCleanup(self.haproxy.cleanup)
        self.haproxy.start()
        # Both backends answered a health check (PROXY v2 LOCAL): they are up.
        for s in self.servers:
            try:
                s.wait_for_log(r"connect addr=127\.0\.0\.1:\d+ proxy=", timeout=30)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{self.haproxy.log()}") from None

    def client(self, source: str = "127.0.0.1") -> RawClient:
        c = RawClient(self.haproxy.port, source)
        self.clients.append(c)
        return c

    def client_on(self, host: str, source: str = "127.0.0.1") -> RawClient:
        """A connection through HAProxy that landed on `host` (round robin)."""
        for _ in range(6):
            c = self.client(source)
            if c.host() == host:
                return c
            c.cmd("QUIT")
            c.close()
        self.fail(f"HAProxy never sent a connection to {host}")

    def login(self, c: RawClient, user: str, secret: str) -> bytes:
        return c.cmd(f"APOP {user} {apop_digest(timestamp_of(c.greeting), secret)}")

    def server(self, host: str):
        return self.servers[0 if host == "server-a" else 1]

    # -- tests ---------------------------------------------------------------------
    def test_unit_tests_against_this_cluster(self):
        """tests/unit/pg_shared_test.cpp skips its database tests without
        APOP_TEST_PG_URL: here they run against the private cluster."""
        unit = os.path.join(os.path.dirname(self.env.bin), "tests", "unit_pg")
        if not os.access(unit, os.X_OK):
            skip_or_fail(f"{unit} not built (APOP_TESTS=OFF)")
        env = dict(os.environ, APOP_TEST_PG_URL=self.url)
        p = subprocess.run([unit, "--gtest_brief=1"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=240)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertNotIn("SKIPPED", out)

    def test_user_commands_against_postgresql(self):
        self.add_user("alice", ALICE_SECRET)
        self.add_user("bob", BOB_SECRET)
        p = self.apop("user", "add", "alice", "--password-stdin", input=b"another-Secret-99x\n",
                      expect=1)
        self.assertIn(b"already exists", p.stderr)
        listing = self.apop("user", "list").stdout.decode()
        self.assertRegex(listing, r"(?m)^alice\b")
        self.assertRegex(listing, r"(?m)^bob\b")
        self.apop("user", "passwd", "bob", "--password-stdin", input=b"Marble-heron-7741-sage\n")
        self.apop("user", "secret", "add", "alice", "--name", "phone", "--password-stdin",
                  input=b"Copper-finch-2291-moss\n")
        self.assertIn("phone", self.apop("user", "secret", "list", "alice").stdout.decode())
        self.apop("user", "policy", "alice", "--require-tls", "on")
        self.assertIn("require", self.apop("user", "show", "alice").stdout.decode().lower())
        self.apop("user", "policy", "alice", "--require-tls", "default")
        self.apop("user", "secret", "revoke", "alice", "phone")
        self.apop("user", "del", "bob")
        self.apop("user", "del", "bob", expect=1)
        listing = self.apop("user", "list").stdout.decode()
        self.assertNotRegex(listing, r"(?m)^bob\b")
        # Delivery checks the user in PostgreSQL: unknown users are EX_NOUSER.
        self.deliver("alice", make_message("hello", "hi\n"))
        self.apop("deliver", "nobody-here", input=b"Subject: x\n\nx\n", expect=67)
        # Nothing went to SQLite; the rows are in PostgreSQL.
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "users.sqlite")))
        self.assertEqual(self.pg.psql(self.db, "SELECT name FROM users ORDER BY name"), "alice")
        # 4: the quota columns (issue 21).
        self.assertEqual(self.pg.psql(self.db, "SELECT version FROM schema_version"), "4")
        # Another secret.key would seal secrets no server can open: refused.
        other = self.env.check("user", "list", "--data", self.env.data + "-other", "--users",
                               self.url, expect=75)
        self.assertIn(b"secret.key", other.stderr)
        # A wrong URL is a configuration error, a down database a temporary one.
        bad = self.env.check("user", "list", "--data", self.env.data, "--users",
                             "mysql://x", expect=1)
        self.assertIn(b"postgresql://", bad.stderr)

    def test_logins_on_both_servers_see_the_real_client(self):
        self.add_user("alice", ALICE_SECRET)
        self.deliver("alice", make_message("one", "first\n"))
        self.start_cluster()
        seen = set()
        for _ in range(4):
            c = self.client()
            self.assertTrue(self.login(c, "alice", ALICE_SECRET).startswith(b"+OK"), c.greeting)
            self.assertTrue(c.cmd("STAT").startswith(b"+OK 1 "))
            port = c.sock.getsockname()[1]
            host = c.host()
            seen.add(host)
            self.assertTrue(c.cmd("QUIT").startswith(b"+OK"))
            c.close()
            # The server logs the client's own address (from the PROXY header),
            # not HAProxy's.
            self.server(host).wait_for_log(rf"login ok user=alice mech=APOP addr=127\.0\.0\.1:{port} ")
        self.assertEqual(seen, {"server-a", "server-b"})
        # poplib, a real client, through the balancer as well.
        for _ in range(2):
            p = poplib.POP3("127.0.0.1", self.haproxy.port, timeout=10)
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()

    def test_second_session_on_other_server_is_in_use(self):
        self.add_user("alice", ALICE_SECRET)
        self.deliver("alice", make_message("one", "first\n"))
        self.start_cluster()
        self.assertEqual(self.advisory_locks(), 0)
        first = self.client_on("server-a")
        self.assertTrue(self.login(first, "alice", ALICE_SECRET).startswith(b"+OK"))
        # The session holds the cluster-wide lock in PostgreSQL (the servers
        # share one host here, so their local flock would refuse as well).
        self.assertEqual(self.advisory_locks(), 1)
        second = self.client_on("server-b")
        reply = self.login(second, "alice", ALICE_SECRET)
        self.assertTrue(reply.startswith(b"-ERR [IN-USE]"), reply)
        self.servers[1].wait_for_log(r"login failed user=alice mech=APOP .* reason=in-use")
        # Released at QUIT: the other server gets it now.
        self.assertTrue(first.cmd("QUIT").startswith(b"+OK"))
        self.wait_for_locks(0)
        third = self.client_on("server-b")
        self.assertTrue(self.login(third, "alice", ALICE_SECRET).startswith(b"+OK"))
        third.cmd("QUIT")

    def test_brute_force_over_both_servers_is_blocked_as_one(self):
        self.add_user("alice", ALICE_SECRET)
        self.start_cluster()
        attacker = "127.0.0.2"  # another loopback address: its own counts and block
        hosts = []
        for i in range(BLOCK_AFTER):
            c = self.client_on("server-a" if i % 2 == 0 else "server-b", source=attacker)
            hosts.append(c.host())
            reply = c.cmd(f"APOP alice {'0' * 32}")
            self.assertTrue(reply.startswith(b"-ERR [AUTH]"), reply)
            c.close()
        self.assertEqual(hosts.count("server-a"), BLOCK_AFTER // 2)
        # Neither server saw BLOCK_AFTER failures by itself, yet both block now,
        # even the right secret.
        for host in ("server-a", "server-b"):
            c = self.client_on(host, source=attacker)
            reply = self.login(c, "alice", ALICE_SECRET)
            self.assertTrue(reply.startswith(b"-ERR [AUTH]"), reply)
            self.server(host).wait_for_log(
                r"login failed user=alice mech=APOP addr=127\.0\.0\.2:\d+ tls=0 reason=blocked")
            c.close()
        # The owner at their usual address is not locked out.
        c = self.client()
        self.assertTrue(self.login(c, "alice", ALICE_SECRET).startswith(b"+OK"))
        c.cmd("QUIT")

    def test_database_down_is_sys_temp_and_recovers(self):
        self.add_user("alice", ALICE_SECRET)
        self.deliver("alice", make_message("one", "first\n"))
        self.start_cluster()
        inside = self.client_on("server-a")
        self.assertTrue(self.login(inside, "alice", ALICE_SECRET).startswith(b"+OK"))
        self.pg.stop("fast")
        try:
            # A logged-in session carries on without the database.
            self.assertTrue(inside.cmd("STAT").startswith(b"+OK 1 "))
            for host in ("server-a", "server-b"):
                c = self.client_on(host)
                reply = self.login(c, "bob", BOB_SECRET)
                self.assertTrue(reply.startswith(b"-ERR [SYS/TEMP]"), reply)
                self.server(host).wait_for_log(
                    r"login failed user=bob mech=APOP .* reason=store-unavailable")
                c.close()
            # The tools say "try again later" (EX_TEMPFAIL): an MTA keeps the mail.
            self.env.check("deliver", "--data", self.env.data, "--users", self.url, "alice",
                           input=make_message("two", "second\n"), expect=75)
        finally:
            self.pg.start_server()
        self.assertTrue(inside.cmd("QUIT").startswith(b"+OK"))
        # Back by itself: the pools reconnect.
        for host in ("server-a", "server-b"):
            c = self.client_on(host)
            self.assertTrue(self.login(c, "alice", ALICE_SECRET).startswith(b"+OK"), host)
            c.cmd("QUIT")
        for s in self.servers:
            self.assertIsNone(s.proc.poll())

    def test_killed_server_loses_no_mail_and_clients_fail_over(self):
        self.add_user("alice", ALICE_SECRET)
        for i in range(3):
            self.deliver("alice", make_message(f"m{i}", f"body {i}\n"))
        self.start_cluster()
        c = self.client_on("server-a")
        self.assertTrue(self.login(c, "alice", ALICE_SECRET).startswith(b"+OK"))
        self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
        self.assertTrue(c.cmd("DELE 2").startswith(b"+OK"))
        self.assertEqual(self.advisory_locks(), 1)
        # server-a dies mid-session (no QUIT: no UPDATE); PostgreSQL drops
        # its lock with its connection.
        self.servers[0].proc.send_signal(signal.SIGKILL)
        self.servers[0].proc.wait(5)
        self.wait_for_locks(0)
        with self.assertRaises((ConnectionError, OSError)):
            c.cmd("STAT")
            c.cmd("STAT")
        # Clients get in again through HAProxy, on server-b: the lock went
        # with server-a's PostgreSQL connection, and every message is there.
        deadline = time.monotonic() + 10
        while True:
            try:
                p = poplib.POP3("127.0.0.1", self.haproxy.port, timeout=10)
                greeting = p.getwelcome()
                self.assertIn(b"@server-b>", greeting)
                p.apop("alice", ALICE_SECRET)
                break
            except (poplib.error_proto, OSError, EOFError) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no failover within 10 s: {e!r}\n"
                                         f"{self.servers[1].diagnostics()}")
                time.sleep(0.2)
        self.assertEqual(p.stat()[0], 3)
        p.quit()
        self.assertEqual(len(self.env.message_files("alice")), 3)


# Every server of the suite with a master, an auth process and two workers.
InWorkers = servers_with("--workers", "2")


class WorkersScaleOutTest(InWorkers, ScaleOutTest):
    """ScaleOutTest with `--workers 2` servers: logins through each server's
    auth process, the maildrop locks held there for the workers."""

    test_unit_tests_against_this_cluster = None  # run once, by ScaleOutTest


class WorkersLockTest(PgCase):
    """Two `apop serve --workers 2` on one database and one data tree, reached
    directly: the cluster-wide maildrop lock of a session is taken by its
    server's auth process for the worker that serves it."""

    MESSAGES = [make_message(f"m{i}", f"body {i}\n") for i in range(3)]

    def setUp(self):
        super().setUp()
        self.add_user("alice", ALICE_SECRET)
        for m in self.MESSAGES:
            self.deliver("alice", m)
        self.servers = []
        for name in ("server-a", "server-b"):
            s = self.env.server("--users", self.url, "--hostname", name, "--workers", "2", "-v")
            s.start()
            self.addCleanup(s.kill_quietly)
            self.servers.append(s)
        for s in self.servers:
            wait_until(lambda: len(children(s)) == 3, what="the auth process and two workers")

    def hold_in_postgresql(self, user: str) -> subprocess.Popen:
        """A psql session that holds `user`'s maildrop lock as another server would."""
        p = subprocess.Popen(self.pg.run_as + [
            os.path.join(self.pg.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.pg.port), "-U",
            "apop", "-d", self.db, "-At", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.pg.root)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        sql = f"SELECT pg_advisory_lock(hashtextextended('apop-maildrop:' || '{user}', 0));\n"
        p.stdin.write(sql.encode())
        p.stdin.flush()
        self.wait_for_locks(1)
        return p

    def uidls(self, c) -> list[bytes]:
        self.assertTrue(c.cmd("UIDL").startswith(b"+OK"))
        return [l.split()[1] for l in c.multi()]

    def body(self, c) -> bytes:
        """The message after RETR, with LF line ends as delivered."""
        return b"".join(line + b"\n" for line in unstuff(c.multi()))

    def test_in_use_on_the_other_server_until_quit(self):
        a, b = self.servers
        self.assertEqual(self.advisory_locks(), 0)
        first = a.connect()
        self.assertTrue(first.apop("alice", ALICE_SECRET).startswith(b"+OK Logged in, 3"))
        self.assertEqual(self.advisory_locks(), 1)  # in PostgreSQL, held by a's auth process
        other = b.connect()
        reply = other.apop("alice", ALICE_SECRET)
        self.assertTrue(reply.startswith(b"-ERR [IN-USE]"), reply)
        b.wait_for_log(r"login failed user=alice mech=APOP .* reason=in-use")
        # A second session on the same server (its other worker, perhaps):
        # refused as well, and the lock it stacked meanwhile is given back.
        same = a.connect()
        reply = same.apop("alice", ALICE_SECRET)
        self.assertTrue(reply.startswith(b"-ERR [IN-USE]"), reply)
        self.assertEqual(self.advisory_locks(), 1)
        self.assertTrue(first.quit().startswith(b"+OK"))
        self.wait_for_locks(0)
        again = b.connect()
        self.assertTrue(again.apop("alice", ALICE_SECRET).startswith(b"+OK Logged in, 3"))
        self.assertEqual(self.advisory_locks(), 1)
        self.assertTrue(again.quit().startswith(b"+OK"))
        self.wait_for_locks(0)

    def test_a_lock_held_in_postgresql_alone_is_in_use(self):
        """No other session holds the maildrop's flock here: the [IN-USE]
        comes from the database, through the auth process."""
        holder = self.hold_in_postgresql("alice")
        for s in self.servers:
            c = s.connect()
            reply = c.apop("alice", ALICE_SECRET)
            self.assertTrue(reply.startswith(b"-ERR [IN-USE]"), reply)
            c.close()
        self.assertEqual(self.advisory_locks(), 1)  # the refused ones left nothing behind
        holder.stdin.close()  # that "server" ends its session
        holder.wait(10)
        self.wait_for_locks(0)
        c = self.servers[0].connect()
        self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK"))
        c.quit()

    def test_sigkill_of_the_worker_releases_its_lock(self):
        a, b = self.servers
        c = a.connect()
        self.assertTrue(c.apop("alice", ALICE_SECRET).startswith(b"+OK Logged in, 3"))
        self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
        self.assertEqual(self.advisory_locks(), 1)
        worker = worker_of(a, c)
        pid, auth_pid = children(a)[worker], children(a)["auth"]
        os.kill(pid, signal.SIGKILL)
        a.wait_for_log(rf"{worker} pid={pid} killed by signal 9")
        # The auth process (alive, its database connection open) saw the
        # worker's channels close and gave back the lock it held for it.
        self.wait_for_locks(0, timeout=5)
        self.assertTrue(alive(auth_pid))
        self.assertEqual(children(a)["auth"], auth_pid)
        self.assertTrue(c.closed_by_server())
        # The user gets in again at once, on the other server; the killed
        # session's DELE was never committed.
        deadline = time.monotonic() + 5
        while True:
            d = b.connect()
            reply = d.apop("alice", ALICE_SECRET)
            if reply.startswith(b"+OK") or time.monotonic() > deadline:
                break
            d.close()
            time.sleep(0.1)
        self.assertTrue(reply.startswith(b"+OK Logged in, 3"), reply)
        self.assertTrue(d.quit().startswith(b"+OK"))
        self.wait_for_locks(0)
        # And on the server whose worker died (restarted by its master).
        wait_until(lambda: children(a)[worker] != pid and alive(children(a)[worker]),
                   what="the worker's restart")
        e = a.connect()
        self.assertTrue(e.apop("alice", ALICE_SECRET).startswith(b"+OK Logged in, 3"))
        e.quit()
        self.assertEqual(len(self.env.message_files("alice")), 3)

    def test_mail_retrieved_and_deleted_consistently_across_servers(self):
        expect = {}  # uidl -> message, as the first session lists them
        c = self.servers[0].connect()
        c.login("alice", ALICE_SECRET)
        for n, uidl in enumerate(self.uidls(c), 1):
            self.assertTrue(c.cmd(f"RETR {n}").startswith(b"+OK"))
            expect[uidl] = self.body(c)
        c.quit()
        self.assertEqual(sorted(expect.values()), sorted(self.MESSAGES))
        # Sessions alternate between the servers, each deleting the first
        # message it lists: each sees what the previous one left, with the
        # same UIDLs and contents.
        for i in range(len(self.MESSAGES)):
            c = self.servers[(i + 1) % 2].connect()
            reply = c.login("alice", ALICE_SECRET)
            self.assertTrue(reply.startswith(f"+OK Logged in, {len(expect)} message".encode()),
                            reply)
            uidls = self.uidls(c)
            self.assertEqual(sorted(uidls), sorted(expect))
            self.assertTrue(c.cmd("RETR 1").startswith(b"+OK"))
            self.assertEqual(self.body(c), expect.pop(uidls[0]))
            self.assertTrue(c.cmd("DELE 1").startswith(b"+OK"))
            self.assertTrue(c.quit().startswith(b"+OK"))
            self.assertEqual(len(self.env.message_files("alice")), len(expect))
            self.wait_for_locks(0)
        for s in self.servers:
            c = s.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 0"))
            c.quit()


if __name__ == "__main__":
    unittest.main()
