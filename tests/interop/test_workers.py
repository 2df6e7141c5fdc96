"""`apop serve --workers N` (issue 19): a master, one auth process and N network workers.

Logins through the auth process (APOP, USER/PASS, SCRAM), a worker or the auth
process killed under way (restarted; no mail lost, other sessions untouched),
SIGTERM drains everything, and a worker's memory holds neither a user's secret
nor secret.key (read through /proc/PID/mem; the auth process's memory, which
must hold them, is the positive control).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import unittest

import poplib
import ssl

from apoptest import (ALICE_SECRET, ApopTestCase, apop_digest, in_ci, make_message, needs, unstuff,
                      wait_until)
from test_sasl import scram_login
from test_metrics import metrics_port, scrape
from test_tls import make_cert

STARTED_RE = re.compile(r"(auth|lmtp|worker \d+) started pid=(\d+)")


def children(srv) -> dict[str, int]:
    """name -> pid of the latest start of each child, from the master's log."""
    out: dict[str, int] = {}
    for line in srv.log().splitlines():
        m = STARTED_RE.search(line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def socket_inodes(pid: int) -> set[str]:
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def connection_inode(client_port: int) -> str:
    """The inode of the server side of the loopback connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                remote_port = int(cols[2].split(":")[1], 16)
                if remote_port == client_port and cols[3] == "01" and cols[9] != "0":
                    return cols[9]
    raise AssertionError(f"no server socket for client port {client_port}")


def worker_of(srv, conn) -> str:
    """Which worker serves `conn` ("worker N")."""
    inode = connection_inode(conn.sock.getsockname()[1])
    for name, pid in children(srv).items():
        if name.startswith("worker") and alive(pid) and inode in socket_inodes(pid):
            return name
    raise AssertionError("no worker holds the connection")


def memory_holds(pid: int, needles: list[bytes]) -> set[bytes]:
    """Which of `needles` occur in the readable memory of `pid`."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            if hi - lo > 1 << 30:
                continue  # a sanitizer's shadow reservation, not the heap
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            for n in needles:
                if n in chunk:
                    found.add(n)
    return found


class WorkersTest(ApopTestCase):
    def start(self, workers: int = 2, *extra: str):
        """The server, to be entered with `with` (which starts it)."""
        srv = self.env.server("--workers", str(workers), *extra)
        srv.workers = workers
        return srv

    @staticmethod
    def ready(srv):
        wait_until(lambda: len(children(srv)) == srv.workers + 1,
                   what="the auth process and workers")

    def test_logins_go_through_the_auth_process(self):
        self.setup_alice([make_message("one", "first\n"), make_message("two", "second\n")])
        self.env.add_user("bob", "bobs-secret-long-1")
        with self.start(2) as srv:
            self.ready(srv)
            self.assertEqual(len({p for p in children(srv).values()}), 3)
            for _ in range(6):
                c = srv.connect()
                self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK Logged in, 2"))
                status, body = c.cmd_multi("RETR 2")
                self.assertTrue(status.startswith(b"+OK"))
                self.assertIn(b"second", b"\n".join(unstuff(body)))
                self.assertEqual(c.quit()[:3], b"+OK")
            c = srv.connect()
            self.assertTrue(c.apop("alice", "wrong-secret").startswith(b"-ERR [AUTH]"))
            self.assertEqual(c.cmd("USER bob"), b"+OK Send your password")
            self.assertTrue(c.cmd("PASS bobs-secret-long-1").startswith(b"+OK Logged in"))
            c.quit()
            c = srv.connect()
            reply = scram_login(c, "alice", ALICE_SECRET)
            self.assertTrue(reply.startswith(b"+OK"), reply)
            c.quit()
            srv.wait_for_log(r"login failed user=alice mech=APOP .* reason=auth")
            srv.wait_for_log(r"login ok user=bob mech=USER")
            srv.wait_for_log(r"login ok user=alice mech=SCRAM-SHA-256")

    def test_a_killed_worker_is_restarted_and_other_sessions_go_on(self):
        self.setup_alice([make_message(f"m{i}", f"body {i}\n") for i in range(3)])
        self.env.add_user("bob", "bobs-secret-long-1")
        self.env.deliver("bob", make_message("b", "bob's\n"))
        with self.start(2) as srv:
            self.ready(srv)
            # Two logged-in sessions, each on a worker; keep the one on the
            # worker that survives.
            sessions = []
            for user, secret in (("alice", ALICE_SECRET), ("bob", "bobs-secret-long-1")):
                for _ in range(60):
                    c = srv.connect()
                    c.login(user, secret)
                    sessions.append((user, c, worker_of(srv, c)))
                    if len({w for _, _, w in sessions}) == 2:
                        break
                    if len(sessions) < 2:
                        break
                    c.quit()
                    sessions.pop()
            workers_used = {w for _, _, w in sessions}
            if len(workers_used) < 2:
                self.skipTest("every connection went to one worker")  # pragma: no cover
            (victim_user, victim, victim_worker), (survivor_user, survivor, survivor_worker) = (
                sessions)
            victim_pid = children(srv)[victim_worker]
            self.assertEqual(victim.cmd("DELE 1")[:3], b"+OK")
            os.kill(victim_pid, signal.SIGKILL)
            srv.wait_for_log(rf"{victim_worker} pid={victim_pid} killed by signal 9")
            self.assertTrue(victim.closed_by_server())
            wait_until(lambda: children(srv)[victim_worker] != victim_pid and alive(
                children(srv)[victim_worker]), what="the worker's restart")
            # The other session never noticed.
            self.assertEqual(survivor.cmd("NOOP"), b"+OK")
            self.assertEqual(survivor.cmd("DELE 1")[:3], b"+OK")
            self.assertEqual(survivor.quit()[:3], b"+OK")
            # The victim's DELE was never committed (no UPDATE): nothing lost,
            # and its maildrop lock went with the process.
            expect = {"alice": 3, "bob": 1}
            expect[survivor_user] -= 1
            for user, n in expect.items():
                c = srv.connect()
                self.assertTrue(c.login(user, ALICE_SECRET if user == "alice" else
                                        "bobs-secret-long-1").startswith(
                                            f"+OK Logged in, {n} message".encode()))
                c.quit()

    def test_sigkill_of_workers_under_load_loses_and_duplicates_no_mail(self):
        """Eight users' clients retrieve and delete mail in a loop while workers
        are killed by SIGKILL again and again: afterwards every message whose
        QUIT was answered +OK is gone, every message never deleted is still
        there exactly once, and only a QUIT whose reply was lost may have gone
        either way."""
        users = [f"load{i}" for i in range(8)]
        per_user = 25
        for u in users:
            self.env.add_user(u, f"{u}-secret-long-1")
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.env.maildir(u), sub), exist_ok=True)
            for i in range(per_user):
                path = os.path.join(self.env.maildir(u), "new", f"1700000000.P1Q{i}.load")
                with open(path, "wb") as f:
                    f.write(make_message(f"{u}-{i}", f"body {u} {i}\n" * 40))
        confirmed: dict[str, set[str]] = {u: set() for u in users}
        in_doubt: dict[str, set[str]] = {u: set() for u in users}
        stop = threading.Event()
        errors: list[str] = []

        def client(user: str, port: int) -> None:
            while not stop.is_set():
                pending: list[str] = []
                try:
                    c = srv.connect(port=port, timeout=5)
                    if not c.apop(user, f"{user}-secret-long-1").startswith(b"+OK"):
                        c.close()
                        continue  # [IN-USE]: the lock of a session that just died
                    status, body = c.cmd_multi("RETR 1")
                    if not status.startswith(b"+OK"):
                        c.quit()
                        if status.startswith(b"-ERR No such message"):
                            return
                        continue
                    subject = next(l for l in unstuff(body) if l.startswith(b"Subject: "))
                    pending.append(subject[9:].decode())
                    if not c.cmd("DELE 1").startswith(b"+OK"):
                        errors.append(f"{user}: DELE refused")
                        return
                    c.send(b"QUIT\r\n")
                    in_doubt[user].update(pending)
                    if c.line().startswith(b"+OK"):
                        confirmed[user].update(pending)
                        in_doubt[user].difference_update(pending)
                    c.close()
                except (OSError, AssertionError, EOFError, StopIteration):
                    continue

        with self.start(2) as srv:
            self.ready(srv)
            port = srv.port
            threads = [threading.Thread(target=client, args=(u, port), daemon=True)
                       for u in users]
            for t in threads:
                t.start()
            kills = 0
            for round_ in range(6):
                time.sleep(0.4)
                name = f"worker {round_ % 2 + 1}"
                pid = children(srv)[name]
                os.kill(pid, signal.SIGKILL)
                kills += 1
                srv.wait_for_log(rf"{name} pid={pid} killed by signal 9")
                wait_until(lambda: children(srv)[name] != pid, what="the worker's restart")
            time.sleep(0.4)
            stop.set()
            for t in threads:
                t.join(20)
            self.assertEqual(errors, [])
            self.assertEqual(kills, 6)
        deleted_total = 0
        for u in users:
            subjects = []
            for path in self.env.message_files(u):
                with open(path, "rb") as f:
                    for line in f:
                        if line.startswith(b"Subject: "):
                            subjects.append(line[9:].strip().decode())
                            break
            self.assertEqual(len(subjects), len(set(subjects)), f"{u}: a message is duplicated")
            present = set(subjects)
            self.assertEqual(present & confirmed[u], set(), f"{u}: a confirmed DELE came back")
            never_deleted = {f"{u}-{i}" for i in range(per_user)} - confirmed[u] - in_doubt[u]
            self.assertEqual(never_deleted - present, set(), f"{u}: mail lost")
            deleted_total += len(confirmed[u])
        self.assertGreater(deleted_total, 20, "the load did not run")

    def test_the_auth_process_and_its_threads_run_under_sched_batch(self):
        # A worker's request must not preempt the worker (docs/architecture.md):
        # the auth process and every thread of it are SCHED_BATCH (3); the
        # workers keep the normal policy (0).
        def policies(pid: int) -> set[int]:
            found = set()
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    found.add(int(f.read().rsplit(")", 1)[1].split()[38]))
            return found

        self.setup_alice([make_message("one", "first\n")])
        with self.start(2) as srv:
            self.ready(srv)
            c = srv.connect()
            self.assertTrue(c.login("alice", ALICE_SECRET).startswith(b"+OK"))
            c.quit()
            kids = children(srv)
            self.assertEqual(policies(kids["auth"]), {3})
            for name, pid in kids.items():
                if name != "auth":
                    self.assertEqual(policies(pid), {0}, name)

    def test_a_session_waiting_for_its_verdict_does_not_hold_the_stop(self):
        # SIGSTOP the auth process: an APOP check waits on the worker's
        # asynchronous channel; on SIGTERM the worker must still exit at once
        # (the check fails as [SYS/TEMP] rather than waiting out its 10 s).
        self.setup_alice([make_message("one", "first\n")])
        srv = self.start(1).__enter__()  # stopped by hand below
        auth_pid = 0
        try:
            self.ready(srv)
            kids = children(srv)
            auth_pid = kids["auth"]
            worker_pid = next(pid for name, pid in kids.items() if name.startswith("worker"))
            c = srv.connect()
            os.kill(auth_pid, signal.SIGSTOP)
            c.send(f"APOP alice {apop_digest(c.timestamp, ALICE_SECRET)}\r\n".encode())
            time.sleep(0.3)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: not alive(worker_pid), timeout=4,
                       what="the worker's exit with a check in flight")
            self.assertLess(time.monotonic() - t0, 4)
            os.kill(auth_pid, signal.SIGCONT)
            self.assertEqual(srv.stop(), 0)
        finally:
            if auth_pid:
                try:
                    os.kill(auth_pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            srv.kill_quietly()

    def test_a_killed_auth_process_is_restarted(self):
        self.setup_alice([make_message("one", "first\n")])
        with self.start(2) as srv:
            self.ready(srv)
            before = srv.connect()
            before.login("alice", ALICE_SECRET)
            auth_pid = children(srv)["auth"]
            os.kill(auth_pid, signal.SIGKILL)
            srv.wait_for_log(rf"auth pid={auth_pid} killed by signal 9")
            wait_until(lambda: children(srv)["auth"] != auth_pid, what="the auth restart")
            srv.wait_for_log(r"auth process serving 2 workers", count=2)

            # Every worker gets its new channels: logins work again on each.
            def logins_ok() -> bool:
                for _ in range(8):
                    c = srv.connect()
                    r = c.apop("alice", ALICE_SECRET)
                    c.quit()
                    if not r.startswith((b"+OK", b"-ERR [IN-USE]")):
                        return False
                return True

            wait_until(logins_ok, timeout=10, what="logins after the auth restart")
            # The session logged in before the restart is untouched.
            self.assertTrue(before.cmd("STAT").startswith(b"+OK 1 "))

    def test_limits_count_every_workers_connections(self):
        self.setup_alice([make_message("one", "first\n")])
        with self.start(2, "--max-connections-per-address", "3",
                        "--max-sessions-per-user", "1") as srv:
            self.ready(srv)
            held = []
            for _ in range(3):
                c = srv.connect()
                self.assertTrue(c.greeting.startswith(b"+OK"))
                held.append(c)
            # Three connections from 127.0.0.1, whichever workers took them:
            # the fourth is refused by whichever worker accepts it.
            for _ in range(4):
                c = srv.connect()
                self.assertTrue(c.greeting.startswith(b"-ERR [SYS/TEMP]"), c.greeting)
                self.assertTrue(c.closed_by_server())
            srv.wait_for_log(r"reason=max-connections-per-address", count=4)
            # One session per user across workers: alice on one worker keeps
            # her second login out on every worker.
            held[0].login("alice", ALICE_SECRET)
            self.assertTrue(held[1].apop("alice", ALICE_SECRET).startswith(b"-ERR [IN-USE]"))
            # The connections of a killed worker stop counting.
            victim = worker_of(srv, held[0])
            os.kill(children(srv)[victim], signal.SIGKILL)
            srv.wait_for_log(rf"{victim} pid=\d+ killed by signal 9")

            def admitted() -> bool:
                c = srv.connect()
                ok = c.greeting.startswith(b"+OK")
                c.close()
                return ok

            wait_until(admitted, timeout=10, what="a connection after the worker's death")
            for c in held:
                c.close()

    def test_one_metrics_endpoint_with_the_totals_of_every_worker(self):
        self.setup_alice([make_message(f"m{i}", f"body {i}\n") for i in range(3)])
        self.env.add_user("bob", "bobs-secret-long-1")
        with self.start(2, "--metrics-listen", "127.0.0.1:0") as srv:
            self.ready(srv)
            port = metrics_port(srv)
            listener = f'listener="127.0.0.1:{srv.port}",tls="0"'
            # Logged-in sessions on both workers at once.
            sessions, logins = [], 0
            while len({w for _, w in sessions}) < 2 and logins < 60:
                c = srv.connect()
                user = "alice" if len(sessions) % 2 == 0 else "bob"
                c.login(user, ALICE_SECRET if user == "alice" else "bobs-secret-long-1")
                logins += 1
                w = worker_of(srv, c)
                if sessions and w == sessions[-1][1]:
                    c.quit()
                    continue
                sessions.append((c, w))
            if len({w for _, w in sessions}) < 2:
                self.skipTest("every connection went to one worker")  # pragma: no cover
            m = scrape(port)
            self.assertEqual(m[f"apop_sessions_active{{{listener}}}"], 2)
            self.assertEqual(m[f"apop_sessions_total{{{listener}}}"], logins)
            self.assertEqual(m['apop_logins_total{mech="APOP",result="ok"}'], logins)
            # The session on the worker to be killed retrieves a message first.
            (victim, victim_worker), (survivor, _) = sessions
            status, _ = victim.cmd_multi("RETR 1")
            self.assertTrue(status.startswith(b"+OK"))
            victim_pid = children(srv)[victim_worker]
            os.kill(victim_pid, signal.SIGKILL)
            srv.wait_for_log(rf"{victim_worker} pid={victim_pid} killed by signal 9")
            wait_until(lambda: children(srv)[victim_worker] != victim_pid,
                       what="the worker's restart")
            # Its open connection and session are no longer counted; every
            # counter keeps what it had (totals never go down).
            m2 = scrape(port)
            self.assertEqual(m2[f"apop_sessions_active{{{listener}}}"], 1)
            self.assertEqual(m2[f"apop_connections_active{{{listener}}}"], 1)
            self.assertEqual(m2[f"apop_sessions_total{{{listener}}}"], logins)
            self.assertGreaterEqual(m2[f"apop_sent_bytes_total{{{listener}}}"],
                                    m[f"apop_sent_bytes_total{{{listener}}}"])
            self.assertEqual(survivor.quit()[:3], b"+OK")
            m3 = scrape(port)
            self.assertEqual(m3[f"apop_sessions_active{{{listener}}}"], 0)
            self.assertEqual(m3["apop_session_duration_seconds_count"], logins - 1)
            # A failed login on whichever worker, counted once.
            c = srv.connect()
            self.assertTrue(c.apop("alice", "wrong-secret").startswith(b"-ERR"))
            c.close()
            wait_until(lambda: scrape(port).get('apop_logins_total{mech="APOP",result="failed"}')
                       == 1, what="the failed login in the totals")
            # The metrics process is restarted like any other child, with the
            # counts intact (they live in the master's mapping).
            pid = int(srv.wait_for_log(r"metrics started pid=(\d+)")[0].split("pid=")[1].split()[0])
            os.kill(pid, signal.SIGKILL)
            srv.wait_for_log(r"metrics on \S+", count=2)
            lines = [ln for ln in srv.log().splitlines() if "metrics on " in ln]
            port = int(lines[-1].rsplit(":", 1)[1])
            self.assertEqual(scrape(port)[f"apop_sessions_total{{{listener}}}"], logins)

    def test_metrics_address_in_use_fails_the_start(self):
        self.setup_alice([])
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                             "--workers", "2", "--metrics-listen", f"127.0.0.1:{port}")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(f"cannot serve metrics on 127.0.0.1:{port}", p.stderr.decode())
            self.assertNotIn("worker 1 started", p.stderr.decode())

    def test_reuse_port_gives_each_worker_its_own_socket(self):
        self.setup_alice([make_message("one", "first\n")])
        with self.start(2, "--reuse-port") as srv:
            self.ready(srv)
            seen = set()
            for _ in range(40):
                c = srv.connect()
                c.login("alice", ALICE_SECRET)
                seen.add(worker_of(srv, c))
                c.quit()
                if len(seen) == 2:
                    break
            self.assertEqual(seen, {"worker 1", "worker 2"})
            listening = [set(), set()]
            for i, name in enumerate(("worker 1", "worker 2")):
                for line in open("/proc/net/tcp").read().splitlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == srv.port:
                        if cols[9] in socket_inodes(children(srv)[name]):
                            listening[i].add(cols[9])
            self.assertEqual(len(listening[0]), 1)
            self.assertEqual(len(listening[1]), 1)
            self.assertNotEqual(listening[0], listening[1])

    def test_tls_and_sighup_in_every_worker(self):
        self.setup_alice([make_message("one", "first\n")])
        # Not in a directory that holds the data directory: a worker may read
        # only what lies beside it (net/landlock.hpp).
        tls_dir = os.path.join(self.env.root, "tls")
        os.mkdir(tls_dir)
        cert, key = make_cert(tls_dir, "first")
        srv = self.env.server("--workers", "2", "--tls-cert", cert, "--tls-key", key,
                              tls_listen=["127.0.0.1:0"])
        srv.workers = 2
        with srv:
            self.ready(srv)
            ctx = ssl.create_default_context(cafile=cert)
            before = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=ctx)
            before.apop("alice", ALICE_SECRET)
            first_der = before.sock.getpeercert(binary_form=True)
            new_cert, new_key = make_cert(tls_dir, "second")
            os.replace(new_cert, cert)
            os.replace(new_key, key)
            os.kill(srv.pid, signal.SIGHUP)  # the master forwards it
            srv.wait_for_log(r"tls certificate reloaded", count=2)  # one per worker
            ctx2 = ssl.create_default_context(cafile=cert)
            for _ in range(4):
                after = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=ctx2)
                self.assertNotEqual(after.sock.getpeercert(binary_form=True), first_der)
                after.quit()
            self.assertEqual(before.stat()[0], 1)
            before.quit()

    def test_a_worker_that_tries_to_exec_dies_by_the_sandbox(self):
        self.setup_alice([make_message("one", "first\n")])
        srv = self.env.server("--workers", "1", extra_env={"APOP_TEST_WORKER_PROBE": "exec"})
        with srv:
            srv.wait_for_log(r"worker 1 pid=\d+ killed by signal 31 \(Bad system call\); "
                             r"restarting", count=2)
            self.assertNotIn("exec was not stopped", srv.log())
            # The sandbox is on every thread of a worker.
            pid = children(srv)["worker 1"]
            self.assertTrue(alive(children(srv)["auth"]))
            del pid

    def test_a_worker_that_cannot_start_fails_the_start(self):
        # Regression: such a worker was restarted forever, and the server
        # looked up (it had logged "listening on") while serving nothing.
        self.setup_alice([])
        env = dict(os.environ, APOP_TEST_WORKER_PROBE="fail-start")
        p = self.env.run("serve", "--data", self.env.data, "--listen", "127.0.0.1:0",
                         "--workers", "2", env=env, timeout=60)
        log = p.stderr.decode()
        self.assertNotEqual(p.returncode, 0, log)
        self.assertIn("did not start; stopping", log)
        self.assertNotIn("listening on", log)

    def test_a_worker_cannot_open_the_key_or_the_accounts(self):
        # Landlock: even under the uid that owns them, a worker can open only
        # the mail trees and the files it re-reads; the auth process is the
        # only one that opens secret.key and users.sqlite.
        self.setup_alice([make_message("one", "first\n")])
        for name, expect in (("secret.key", "Permission denied"),
                             ("users.sqlite", "Permission denied"),
                             (os.path.join("mail", "alice", "cur"), "opened")):
            path = os.path.join(self.env.data, name)
            srv = self.env.server("--workers", "1",
                                  extra_env={"APOP_TEST_WORKER_PROBE": f"open:{path}"})
            srv.workers = 1
            with srv:
                self.ready(srv)
                lines = srv.wait_for_log(r"test probe: open ")
                self.assertIn(f"open {path}: {expect}", lines[0])
                c = srv.connect()
                c.login("alice", ALICE_SECRET)  # and the worker serves
                c.quit()
        # Without the sandbox (and its file restriction) the same open works:
        # the test can tell.
        path = os.path.join(self.env.data, "secret.key")
        srv = self.env.server("--workers", "1", "--no-sandbox",
                              extra_env={"APOP_TEST_WORKER_PROBE": f"open:{path}"})
        with srv:
            lines = srv.wait_for_log(r"test probe: open ")
            self.assertIn(f"open {path}: opened", lines[0])

    def test_workers_run_sandboxed_unless_told_not_to(self):
        self.setup_alice([make_message("one", "first\n")])
        for flags, expect in (((), "2"), (("--no-sandbox",), "0")):
            srv = self.env.server("--workers", "1", *flags)
            srv.workers = 1
            with srv:
                self.ready(srv)
                c = srv.connect()
                c.login("alice", ALICE_SECRET)  # the worker is up and serving
                pid = children(srv)["worker 1"]
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/status") as f:
                        status = f.read()
                    self.assertIn(f"Seccomp:\t{expect}", status, (flags, tid))
                c.quit()
                if flags:
                    self.assertIn("without their seccomp sandbox", srv.log())

    def test_the_auth_process_failing_at_start_stops_the_server(self):
        self.env.add_user("alice", ALICE_SECRET)
        with open(os.path.join(self.env.data, "secret.key"), "r+b") as f:
            key = bytearray(f.read())
            key[0] ^= 0xFF
            f.seek(0)
            f.write(key)
        p = self.env.run("serve", "--workers", "2", "--data", self.env.data, "--listen",
                         "127.0.0.1:0", timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"the auth process did not start", p.stderr)
        self.assertNotIn(b"worker 1 started", p.stderr)

    @needs(os.geteuid() == 0, "reading another process's memory needs root")
    def test_a_workers_memory_holds_no_secret_and_no_key(self):
        self.setup_alice([make_message("one", "first\n")])
        device = "device-secret-for-the-phone-7"
        self.env.check("user", "secret", "add", "--data", self.env.data, "alice", "--name",
                       "phone", "--password-stdin", input=device.encode() + b"\n")
        with open(os.path.join(self.env.data, "secret.key"), "rb") as f:
            key = f.read()
        self.assertGreaterEqual(len(key), 32)
        with self.start(2) as srv:
            self.ready(srv)
            for i in range(10):
                c = srv.connect()
                c.login("alice", device if i % 2 else ALICE_SECRET)
                c.quit()
                c = srv.connect()
                r = scram_login(c, "alice", ALICE_SECRET)
                self.assertTrue(r.startswith(b"+OK"), r)
                c.quit()
                # USER/PASS sends the password itself through the worker:
                # every copy (read buffer, line buffer, staged command, IPC
                # packet) is wiped once used.
                c = srv.connect()
                c.cmd("USER alice")
                self.assertTrue(c.cmd(f"PASS {ALICE_SECRET}").startswith(b"+OK"))
                c.quit()
                c = srv.connect()
                c.cmd("USER alice")
                self.assertTrue(c.cmd("PASS not-the-secret-but-long").startswith(b"-ERR"))
                c.quit()
            # Tails: a partly overwritten copy still counts.
            needles = [ALICE_SECRET.encode()[-10:], device.encode()[-10:], key[-32:]]
            pids = children(srv)
            # The positive control: the auth process holds the key and the
            # unsealed secrets it just used.
            self.assertIn(key[-32:], memory_holds(pids["auth"], needles))
            for name, pid in pids.items():
                if name.startswith("worker"):
                    self.assertEqual(memory_holds(pid, needles), set(), name)
            self.assertEqual(memory_holds(srv.pid, needles), set(), "master")


if __name__ == "__main__":
    unittest.main()
