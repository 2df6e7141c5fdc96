"""fetchmail (protocol APOP) against the real apop binary."""

import getpass
import os
import stat
import subprocess
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message, require_program

MSG1 = make_message("fetch one", "First message for fetchmail.\n.dot line\n",
                    to="alice@example.org")
MSG2 = make_message("fetch two", "Second message.\nWith CRLF endings.\n", eol=b"\r\n",
                    to="alice@example.org")
MSG3 = make_message("fetch three", "Third message, delivered later.\n",
                    to="alice@example.org")

# fetchmail exit codes (fetchmail(1) EXIT CODES).
FM_OK, FM_NOMAIL, FM_AUTHFAIL = 0, 1, 3


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


class FetchmailTest(ApopTestCase):

    def setUp(self):
        super().setUp()
        self.fetchmail = require_program("fetchmail")
        self.home = os.path.join(self.env.root, "home")
        self.out = os.path.join(self.env.root, "delivered")
        os.makedirs(self.home)
        os.makedirs(self.out)
        # A tiny MDA: each message becomes one numbered file, in delivery order.
        self.mda = os.path.join(self.env.root, "mda.sh")
        with open(self.mda, "w") as f:
            f.write('#!/bin/sh\n'
                    'dir="$1"\n'
                    'n=$(ls "$dir" | wc -l)\n'
                    'cat > "$dir/$(printf %04d "$n")"\n')
        os.chmod(self.mda, 0o755)
        self.idfile = os.path.join(self.home, "fetchids")

    def rcfile(self, port: int, *, keep: bool, secret: str = ALICE_SECRET) -> str:
        path = os.path.join(self.home, ".fetchmailrc")
        with open(path, "w") as f:
            f.write(
                "set no syslog\n"
                "set invisible\n"
                f"poll 127.0.0.1 protocol APOP service {port} uidl\n"
                f'  user "alice" there with password "{secret}" is "{getpass.getuser()}" here\n'
                f"  {'keep' if keep else 'no keep'} no rewrite sslproto \"\"\n"
                f'  mda "{self.mda} {self.out}"\n')
        os.chmod(path, 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        return path

    def run_fetchmail(self, rc: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, HOME=self.home, LC_ALL="C")
        return subprocess.run(
            [self.fetchmail, "-f", rc, "-i", self.idfile, "--nosyslog", "--nodetach", "-v"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=self.home, timeout=60)

    def fetched(self) -> list[bytes]:
        out = []
        for name in sorted(os.listdir(self.out)):
            with open(os.path.join(self.out, name), "rb") as f:
                out.append(f.read())
        return out

    def assertExit(self, p: subprocess.CompletedProcess, code: int):
        self.assertEqual(p.returncode, code,
                         f"fetchmail exit {p.returncode}, expected {code}\n"
                         f"{p.stdout.decode(errors='replace')}")

    def test_apop_without_keep_empties_the_server(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            rc = self.rcfile(srv.port, keep=False)
            p = self.run_fetchmail(rc)
            self.assertExit(p, FM_OK)
            self.assertEqual(self.fetched(), [lf(MSG1), lf(MSG2)])
            self.assertIn("APOP", p.stdout.decode(errors="replace"))
            srv.wait_for_log(r"login ok user=alice mech=APOP")
            # Deleted on the server (committed at QUIT).
            self.assertEqual(self.env.message_files("alice"), [])
            # A second run finds nothing.
            self.assertExit(self.run_fetchmail(rc), FM_NOMAIL)
            self.assertEqual(len(self.fetched()), 2)

    def test_apop_with_keep_fetches_only_new_mail(self):
        self.setup_alice([MSG1, MSG2])
        with self.env.server() as srv:
            rc = self.rcfile(srv.port, keep=True)
            self.assertExit(self.run_fetchmail(rc), FM_OK)
            self.assertEqual(self.fetched(), [lf(MSG1), lf(MSG2)])
            self.assertEqual(len(self.env.message_files("alice")), 2)

            # Same idfile, nothing new: nothing fetched, nothing removed.
            self.assertExit(self.run_fetchmail(rc), FM_NOMAIL)
            self.assertEqual(len(self.fetched()), 2)
            self.assertEqual(len(self.env.message_files("alice")), 2)

            # New mail: only that one is fetched (UIDLs are stable).
            self.env.deliver("alice", MSG3)
            self.assertExit(self.run_fetchmail(rc), FM_OK)
            self.assertEqual(self.fetched(), [lf(MSG1), lf(MSG2), lf(MSG3)])
            self.assertEqual(len(self.env.message_files("alice")), 3)

        # UIDLs survive a server restart too: still nothing new afterwards.
        with self.env.server() as srv:
            rc = self.rcfile(srv.port, keep=True)
            self.assertExit(self.run_fetchmail(rc), FM_NOMAIL)
            self.assertEqual(len(self.fetched()), 3)

    def test_wrong_secret_fails_authentication(self):
        self.setup_alice([MSG1])
        with self.env.server() as srv:
            rc = self.rcfile(srv.port, keep=False, secret=ALICE_SECRET + "-nope")
            self.assertExit(self.run_fetchmail(rc), FM_AUTHFAIL)
            self.assertEqual(self.fetched(), [])
            self.assertEqual(len(self.env.message_files("alice")), 1)
            srv.wait_for_log(r"login failed user=alice mech=APOP")


if __name__ == "__main__":
    unittest.main()
