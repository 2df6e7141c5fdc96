"""`apop fetch --config FILE` end to end against `apop serve`: several
accounts polled once (password_file and password_command, maildir and mbox,
keep and delete, max_message_size, fetch_limit), the exit status of a run
where one account fails, `apop config check --fetch`, and the daemon
(`--daemon`): it polls again, SIGHUP picks up a new account, SIGTERM exits
0, /metrics has the per-account gauges, and a SIGKILL in the middle of a poll
followed by a restart loses and duplicates nothing.

Exit codes: 0 every account ok, else the largest FetchStatus among the
accounts (1 other, 2 not stored, 3 auth, ...); 78 bad configuration.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import unittest
import urllib.request

from apoptest import ALICE_SECRET, SLOWDOWN, make_message, wait_until
from test_fetch import FetchTestCase, maildir_messages, mbox_messages

EXIT_OK, EXIT_OTHER, EXIT_AUTH, EXIT_CONFIG = 0, 1, 3, 78
BOB_SECRET = "bob-Orange-1234-river"
CAROL_SECRET = "carol-Green-5678-field"


def deliver_files(maildir: str, messages: list[bytes], tag: str) -> None:
    """Puts messages into a server-side Maildir the Maildir way (tmp/, rename
    into new/): much faster than one `apop deliver` per message."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    for i, m in enumerate(messages):
        name = f"{int(time.time())}.M{i}P{os.getpid()}.{tag}"
        with open(os.path.join(maildir, "tmp", name), "wb") as f:
            f.write(m)
        os.rename(os.path.join(maildir, "tmp", name), os.path.join(maildir, "new", name))


class Daemon:
    """`apop fetch --config FILE --daemon` with its stderr collected."""

    def __init__(self, argv: list[str], env: dict):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self.lock:
                self.lines.append(raw.decode(errors="replace"))

    def log(self) -> str:
        with self.lock:
            return "".join(self.lines)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30.0) -> None:
        wait_until(lambda: self.count(pattern) >= count, timeout=timeout * SLOWDOWN,
                   what=f"{count} x {pattern!r} in the daemon's log:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout * SLOWDOWN)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon still running after signal {sig}:\n{self.log()}")
        finally:
            self.reader.join(10)
            self.proc.stdout.close()
            self.proc.stderr.close()


class FetchConfigTest(FetchTestCase):

    def setUp(self):
        super().setUp()
        self.env.add_user("alice", ALICE_SECRET)
        self.env.add_user("bob", BOB_SECRET)
        self.env.add_user("carol", CAROL_SECRET)
        self.alice_msgs = [make_message(f"alice {i}", f"for alice {i}\n") for i in range(3)]
        self.bob_msgs = [make_message(f"bob {i}", f"for bob {i}\nFrom here\n") for i in range(2)]
        self.carol_small = [make_message(f"carol {i}", f"small {i}\n") for i in range(3)]
        self.carol_big = make_message("carol big", "z" * 70 + "\n" * 1 + ("y" * 70 + "\n") * 200)
        for m in self.alice_msgs:
            self.env.deliver("alice", m)
        for m in self.bob_msgs:
            self.env.deliver("bob", m)
        for m in self.carol_small + [self.carol_big]:
            self.env.deliver("carol", m)
        self.alice_md = os.path.join(self.work, "Mail", "alice")
        self.bob_mbox = os.path.join(self.work, "Mail", "bob.mbox")
        self.carol_md = os.path.join(self.work, "Mail", "carol")
        self.states = os.path.join(self.work, "fetch-state")
        os.makedirs(os.path.join(self.work, "Mail"))

    def secret_file(self, name: str, secret: str, mode: int = 0o600) -> str:
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, mode)
        return path

    def account(self, name: str, user: str, port: int, to: str, extra: str = "",
                secret: str | None = None, command: list[str] | None = None,
                mode: int = 0o600) -> str:
        if command is not None:
            source = "password_command = [" + ", ".join(f'"{a}"' for a in command) + "]"
        else:
            source = f'password_file = "{self.secret_file(name + ".pass", secret, mode)}"'
        return (f'[[account]]\nname = "{name}"\nurl = "pop3://{user}@127.0.0.1:{port}"\n'
                f'tls = "none"\nauth = "apop"\n{source}\nto = "{to}"\n{extra}\n')

    def config(self, port: int, *, alice_secret: str = ALICE_SECRET, alice_mode: int = 0o600,
               interval: str = "5m", extra_accounts: str = "") -> str:
        text = (f'max_parallel = 2\nstate_dir = "{self.states}"\n\n'
                f'[defaults]\npoll_interval = "{interval}"\n\n')
        text += self.account("alice", "alice", port, f"maildir:{self.alice_md}",
                             secret=alice_secret, mode=alice_mode)
        text += self.account("bob", "bob", port, f"mbox:{self.bob_mbox}",
                             command=["printf", "%s\\n", BOB_SECRET])
        text += self.account("carol", "carol", port, f"maildir:{self.carol_md}",
                             extra="keep = true\nmax_message_size = \"4K\"\nfetch_limit = 2",
                             secret=CAROL_SECRET)
        text += extra_accounts
        path = os.path.join(self.work, "fetch.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_config(self, path: str, *args: str, expect: int | None = None):
        e = {"HOME": self.work, "XDG_STATE_HOME": os.path.join(self.work, "xdg")}
        p = self.env.run("fetch", "--config", path, *args, env=e, timeout=90)
        if expect is not None and p.returncode != expect:
            self.fail(self.describe(p))
        return p

    def daemon_env(self) -> dict:
        e = dict(os.environ)
        e.pop("APOP_DATA", None)
        e.update({"HOME": self.work, "XDG_STATE_HOME": os.path.join(self.work, "xdg")})
        return e

    # ---------------------------------------------------------------------------------
    def test_once_three_accounts(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port)
            p = self.run_config(cfg, expect=EXIT_OK)
            err = p.stderr.decode()
            self.assertRegex(err, r"account=alice result=ok status=0 messages=3 bytes=\d+ "
                                  r"seconds=[\d.]+ deleted=3")
            self.assertRegex(err, r"account=bob result=ok status=0 messages=2 ")
            # carol: keep, the big one above max_message_size, 2 per poll.
            self.assertRegex(err, r"account=carol result=ok status=0 messages=2 .*too_big=1 "
                                  r"deferred=1")
            self.assertSameMessages(maildir_messages(self.alice_md), self.alice_msgs)
            self.assertSameMessages(mbox_messages(self.bob_mbox), self.bob_msgs)
            self.assertEqual(len(maildir_messages(self.carol_md)), 2)
            self.assertEqual(self.env.stored_messages("alice"), [])
            self.assertEqual(self.env.stored_messages("bob"), [])
            self.assertEqual(len(self.env.stored_messages("carol")), 4)
            for name in ("alice", "bob", "carol"):
                self.assertTrue(os.path.exists(os.path.join(self.states, name + ".state")))
            # Second run: carol's third small one; the big one never.
            p = self.run_config(cfg, expect=EXIT_OK)
            self.assertRegex(p.stderr.decode(), r"account=alice result=ok status=0 messages=0 ")
            self.assertSameMessages(maildir_messages(self.carol_md), self.carol_small)
            self.assertEqual(len(self.env.stored_messages("carol")), 4)
            # The secrets are in no output.
            for s in (ALICE_SECRET, BOB_SECRET, CAROL_SECRET):
                self.assertNotIn(s, p.stderr.decode() + err)
            # -v: accounts run in parallel; every trace line names its account.
            p = self.run_config(cfg, "-v", expect=EXIT_OK)
            err = p.stderr.decode()
            traces = [l for l in err.splitlines() if re.search(r"\b[CS]: ", l)]
            self.assertTrue(traces, err)
            for line in traces:
                self.assertRegex(line, r"^account=(alice|bob|carol) [CS]: ")
            for name in ("alice", "bob", "carol"):
                self.assertRegex(err, rf"(?m)^account={name} C: QUIT")
            for s in (ALICE_SECRET, BOB_SECRET, CAROL_SECRET):
                self.assertNotIn(s, err)

    def test_once_one_failing_account_sets_the_status_others_still_run(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port, alice_secret="wrong-secret")
            p = self.run_config(cfg, expect=EXIT_AUTH)
            err = p.stderr.decode()
            self.assertRegex(err, r"account=alice result=auth_failed status=3 messages=0 ")
            self.assertSameMessages(mbox_messages(self.bob_mbox), self.bob_msgs)
            self.assertEqual(len(self.env.stored_messages("alice")), 3)

    def test_password_file_readable_by_others_is_refused(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port, alice_mode=0o644)
            p = self.run_config(cfg, expect=EXIT_OTHER)
            err = p.stderr.decode()
            self.assertRegex(err, r"account=alice result=error status=1 .*too open.*chmod 600")
            self.assertRegex(err, r"account=bob result=ok")
            self.assertEqual(len(self.env.stored_messages("alice")), 3)

    def test_password_command_failure_is_that_accounts_error(self):
        with self.env.server() as srv:
            extra = self.account("dave", "alice", srv.port,
                                 f"maildir:{os.path.join(self.work, 'dave')}",
                                 command=["sh", "-c", "echo oops >&2; exit 4"])
            cfg = self.config(srv.port, extra_accounts=extra)
            p = self.run_config(cfg, expect=EXIT_OTHER)
            err = p.stderr.decode()
            self.assertIn("oops", err)  # the helper's stderr is passed through
            self.assertRegex(err, r"account=dave result=error .*password_command sh: exit status 4")
            self.assertRegex(err, r"account=alice result=ok")

    def test_mda_and_password_command_get_no_blocked_signals(self):
        # The signal handling of --config must not leave SIGTERM/SIGHUP blocked
        # in what it starts. The password command is checked directly
        # (python3 keeps the mask it was given); the MDA goes through /bin/sh,
        # which (dash) clears its mask itself, so only its shape is checked.
        blk = os.path.join(self.work, "sigblk")
        probe = ("import sys; "
                 "l = [x for x in open('/proc/self/status') if x.startswith('SigBlk')][0]; "
                 f"open('{blk}.pw', 'a').write(l); print(sys.argv[1])")
        with self.env.server() as srv:
            extra = self.account(
                "mda", "alice", srv.port,
                f"mda:grep SigBlk /proc/self/status >> {blk}; cat > /dev/null",
                command=["python3", "-c", probe.replace('"', '\\"'), ALICE_SECRET])
            path = os.path.join(self.work, "mda.toml")
            with open(path, "w") as f:
                f.write(f'state_dir = "{self.states}"\n' + extra)
            self.run_config(path, expect=EXIT_OK)
        with open(blk) as f:
            lines = [l for l in f.read().split("\n") if l]
        self.assertEqual(lines, ["SigBlk:\t0000000000000000"] * 3)
        with open(blk + ".pw") as f:
            self.assertEqual(f.read().strip(), "SigBlk:\t0000000000000000")

    def test_an_account_is_polled_by_one_process_at_a_time(self):
        import fcntl
        with self.env.server() as srv:
            cfg = self.config(srv.port)
            os.makedirs(self.states, exist_ok=True)
            with open(os.path.join(self.states, "alice.lock"), "w") as held:
                fcntl.flock(held, fcntl.LOCK_EX)
                p = self.run_config(cfg, expect=EXIT_OTHER)
            self.assertRegex(p.stderr.decode(),
                             r"account=alice result=error .*being polled by another apop fetch")
            self.assertRegex(p.stderr.decode(), r"account=bob result=ok")
            self.assertEqual(len(self.env.stored_messages("alice")), 3)
            self.run_config(cfg, expect=EXIT_OK)  # released
            self.assertEqual(self.env.stored_messages("alice"), [])

    def test_bad_configuration_names_file_line_and_key(self):
        path = os.path.join(self.work, "bad.toml")
        with open(path, "w") as f:
            f.write('[[account]]\nname = "a"\nurl = "pop3://u@h"\npassword_file = "p"\n'
                    'to = "maildir:/m"\nfetch_limit = "ten"\n')
        p = self.run_config(path, expect=EXIT_CONFIG)
        self.assertIn(f"{path}:6:15: key fetch_limit: expected an integer", p.stderr.decode())
        p = self.env.run("config", "check", "--fetch", path)
        self.assertEqual(p.returncode, EXIT_CONFIG, self.describe(p))
        self.assertIn(f"{path}:6:15: key fetch_limit", p.stderr.decode())
        with open(path, "w") as f:
            f.write('[[account]]\nname = "a"\nurl = "pop3s://u@h"\ntls = "none"\n'
                    'password_file = "p"\nto = "maildir:/m"\n')
        p = self.run_config(path, expect=EXIT_CONFIG)
        self.assertIn(f"{path}:1: key tls: pop3s:// means implicit TLS", p.stderr.decode())
        # Per-account settings are not command-line flags in this mode.
        for flags in (["--auth", "apop"], ["--password-file", path], ["--json"]):
            p = self.run_config(path, *flags, expect=64)
            self.assertIn("does not apply to --config", p.stderr.decode())
        p = self.env.run("fetch", "--daemon")
        self.assertEqual(p.returncode, 64, self.describe(p))

    def test_config_check_accepts_a_fetch_config(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port)
        p = self.env.check("config", "check", "--fetch", cfg)
        out = p.stdout.decode()
        self.assertIn('name = "alice"', out)
        self.assertIn("max_parallel = 2", out)
        self.assertNotIn(BOB_SECRET, out)

    # ---------------------------------------------------------------------------------
    def test_daemon_polls_reloads_and_stops(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1s")
            d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon",
                        "--metrics-listen", "127.0.0.1:0"], self.daemon_env())
            try:
                d.wait_for(r"account=alice result=ok", 2)
                self.assertSameMessages(maildir_messages(self.alice_md), self.alice_msgs)
                # New mail is picked up by a later poll.
                late = make_message("late", "arrived later\n")
                self.env.deliver("alice", late)
                wait_until(lambda: len(maildir_messages(self.alice_md)) == 4,
                           timeout=30 * SLOWDOWN, what="the late message fetched")
                # Metrics.
                port = int(re.search(r"metrics on 127\.0\.0\.1:(\d+)", d.log()).group(1))

                def scrape() -> str:
                    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=10).read().decode()
                # Recorded when the poll ends, a little after the message is stored.
                wait_until(lambda: 'apop_fetch_messages_total{account="alice"} 4' in scrape(),
                           timeout=30 * SLOWDOWN, what="the metrics of the late poll")
                body = scrape()
                self.assertRegex(body, r'apop_fetch_last_success_timestamp_seconds\{account="alice"\} '
                                       r'\d')
                self.assertRegex(body, r'apop_fetch_consecutive_failures\{account="bob"\} 0')
                self.assertRegex(body, r'apop_fetch_messages_total\{account="alice"\} 4')
                # SIGHUP: a new account.
                self.env.add_user("erin", "erin-Blue-9999-lake")
                self.env.deliver("erin", make_message("erin", "for erin\n"))
                erin_md = os.path.join(self.work, "Mail", "erin")
                extra = self.account("erin", "erin", srv.port, f"maildir:{erin_md}",
                                     secret="erin-Blue-9999-lake")
                self.config(srv.port, interval="1s", extra_accounts=extra)
                self.assertEqual(d.count(r"account=erin"), 0)
                d.proc.send_signal(signal.SIGHUP)
                d.wait_for(r"SIGHUP: configuration reloaded: 4 account")
                d.wait_for(r"account=erin result=ok status=0 messages=1 ")
                self.assertEqual(len(maildir_messages(erin_md)), 1)
                # A broken file on SIGHUP keeps the running configuration.
                with open(cfg, "a") as f:
                    f.write("bogus = 1\n")
                d.proc.send_signal(signal.SIGHUP)
                d.wait_for(r"configuration not reloaded.*key bogus: unknown key")
                before = d.count(r"account=erin result=ok")
                d.wait_for(r"account=erin result=ok", before + 1)
            finally:
                rc = d.stop()
            self.assertEqual(rc, 0, d.log())
            self.assertIn("daemon stopped", d.log())

    def test_daemon_failing_account_backs_off_others_continue(self):
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1s", alice_secret="wrong-secret")
            d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon"], self.daemon_env())
            try:
                # Backoff: alice waits ~1s, 2s, 4s after its failures while bob
                # polls every second.
                d.wait_for(r"account=bob result=ok", 6)
                self.assertLessEqual(d.count(r"account=alice result=auth_failed"), 4, d.log())
                self.assertGreaterEqual(d.count(r"account=alice result=auth_failed"), 2, d.log())
            finally:
                rc = d.stop()
            self.assertEqual(rc, 0, d.log())

    def test_daemon_sigterm_cuts_a_stalled_servers_wait_short(self):
        """A server that greets and then says nothing: with --timeout 60 the
        poll would hang a minute; after SIGTERM the wait ends once the server
        has been silent for limits::kFetchStopGrace (5 s), and the daemon exits
        0 (regression: it used to wait for the whole timeout)."""
        import socket
        lst = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(lst.close)
        held: list[socket.socket] = []
        greeted = threading.Event()

        def serve():
            try:
                c, _ = lst.accept()
            except OSError:
                return
            held.append(c)
            c.sendall(b"+OK stalling <1.2@stall.test>\r\n")
            greeted.set()  # then nothing, ever

        threading.Thread(target=serve, daemon=True).start()
        self.addCleanup(lambda: [c.close() for c in held])
        text = (f'state_dir = "{self.states}"\n\n'
                + self.account("stall", "alice", lst.getsockname()[1],
                               f"maildir:{self.alice_md}", secret=ALICE_SECRET))
        cfg = os.path.join(self.work, "stall.toml")
        with open(cfg, "w") as f:
            f.write(text)
        d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon", "--timeout", "60"],
                   self.daemon_env())
        self.assertTrue(greeted.wait(30 * SLOWDOWN), d.log())
        time.sleep(0.5)  # the client has sent APOP and waits for the reply
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log())
        self.assertGreater(took, 4, d.log())  # the grace is given
        self.assertLess(took, 5 + 5 * SLOWDOWN, d.log())  # not the 60 s timeout
        self.assertRegex(d.log(), r"account=stall result=network status=6 .*stopping: the server "
                                  r"sent nothing for 5 s")

    def test_daemon_sigterm_mid_poll_finishes_the_message_and_quits(self):
        many = [make_message(f"term {i}", f"message {i}\n" + ("x" * 76 + "\n") * 60)
                for i in range(600)]
        deliver_files(self.env.maildir("alice"), many, "term")
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1h")
            d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon"], self.daemon_env())
            wait_until(lambda: os.path.isdir(os.path.join(self.alice_md, "new")) and
                       len(os.listdir(os.path.join(self.alice_md, "new"))) > 20,
                       timeout=30 * SLOWDOWN, interval=0.005, what="messages arriving")
            self.assertEqual(d.stop(signal.SIGTERM), 0, d.log())
            self.assertRegex(d.log(), r"account=alice result=ok status=0 messages=\d+ .*stopped=1")
            got = maildir_messages(self.alice_md)
            left = self.env.stored_messages("alice")
        # Stopped early, QUIT normally: what was stored is deleted, the rest stays.
        self.assertGreater(len(left), 0)
        self.assertEqual(len(got), len(set(got)))
        self.assertSameMessages(got + left, self.alice_msgs + many)

    def test_daemon_sigkill_mid_poll_loses_and_duplicates_nothing(self):
        many = [make_message(f"many {i}", f"message {i}\n" + ("x" * 76 + "\n") * 60)
                for i in range(600)]
        deliver_files(self.env.maildir("alice"), many, "many")
        with self.env.server() as srv:
            cfg = self.config(srv.port, interval="1s")
            killed_mid_poll = False
            for attempt in range(5):
                before = len(maildir_messages(self.alice_md)) if os.path.isdir(self.alice_md) else 0
                if before >= len(self.alice_msgs) + len(many):
                    break
                d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon"],
                           self.daemon_env())
                # Kill as soon as this run has stored something, before it is done.
                wait_until(lambda: os.path.isdir(os.path.join(self.alice_md, "new")) and
                           len(os.listdir(os.path.join(self.alice_md, "new"))) > before + 20,
                           timeout=30 * SLOWDOWN, interval=0.005, what="messages arriving")
                d.stop(signal.SIGKILL)
                now = len(maildir_messages(self.alice_md))
                if now < len(self.alice_msgs) + len(many):
                    killed_mid_poll = True
            self.assertTrue(killed_mid_poll, "no kill landed in the middle of a poll")
            # Restart and let it finish.
            d = Daemon([self.env.bin, "fetch", "--config", cfg, "--daemon"], self.daemon_env())
            try:
                # File names only: the server removes files while we look.
                wait_until(lambda: self.env.message_files("alice") == [],
                           timeout=60 * SLOWDOWN, what="the server emptied")
                d.wait_for(r"account=alice result=ok status=0 messages=0 ", 1)
            finally:
                self.assertEqual(d.stop(), 0, d.log())
        got = maildir_messages(self.alice_md)
        self.assertEqual(len(got), len(set(got)), "duplicates in the Maildir")
        self.assertSameMessages(got, self.alice_msgs + many)


if __name__ == "__main__":
    unittest.main()
