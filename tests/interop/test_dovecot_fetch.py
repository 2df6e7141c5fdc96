"""`apop fetch` against a real Dovecot (tests/interop/dovecot.py): APOP,
SCRAM-SHA-256, CRAM-MD5 and PLAIN logins, plain/STLS/implicit TLS, keep and
delete modes, and the three destinations (maildir, mbox, mda). Every message
must arrive byte for byte as it was put into Dovecot's Maildir."""

import json
import os
import re
import unittest

from apoptest import ApopTestCase, make_message
from dovecot import Dovecot, require_dovecot

PASSWORD = "Dovecot-pass-7731-heron"
# LF line endings as in a Maildir; a dot-stuffing case, a "From " line to be
# quoted in an mbox, an empty line at the end, a long line, 8-bit text.
MSGS = [
    make_message("dovecot 1", "First body.\n.starts with a dot\n..two dots\n.\n"),
    make_message("dovecot 2", "From here on, quoting matters.\n>From already quoted\n\n"),
    make_message("dovecot 3", ("x" * 900 + "\n") * 3 + "caf\u00e9 \u00fcber\n"),
]


def mbox_messages(data: bytes) -> list[bytes]:
    """Splits an mboxrd file: drops each "From " line, un-quotes ^>+From , drops the
    blank separator line."""
    out: list[list[bytes]] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"From "):
            out.append([])
            continue
        assert out, f"mbox does not start with a From line: {data[:80]!r}"
        if re.match(rb"^>+From ", line):
            line = line[1:]
        out[-1].append(line)
    msgs = []
    for lines in out:
        text = b"".join(lines)
        assert text.endswith(b"\n\n"), f"no blank separator line: {text[-40:]!r}"
        msgs.append(text[:-1])  # the separator; the message keeps its own final LF
    return msgs


class DovecotFetchCase(ApopTestCase):
    TLS = dict(stls=True, implicit_tls=True)

    def setUp(self):
        super().setUp()
        require_dovecot()
        self.dv = Dovecot(**self.TLS)
        self.addCleanup(self.dv.cleanup)
        self.dv.add_user("alice", PASSWORD)
        self.dv.start()
        for m in MSGS:
            self.dv.deliver("alice", m)
        self.state = os.path.join(self.env.root, "state")
        self.pwfile = os.path.join(self.env.root, "pw")
        with open(self.pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        self.maildir = os.path.join(self.env.root, "Maildir")

    def fetch(self, url: str, *args: str, to: str | None = None, expect: int = 0,
              env: dict | None = None, state: str | None = None):
        p = self.env.run("fetch", url, "--to", to or "maildir:" + self.maildir,
                         "--state", state or self.state, "--password-file", self.pwfile, "--json",
                         *args, env=env, timeout=60)
        if p.returncode != expect:
            raise AssertionError(
                f"`apop fetch {url} {' '.join(args)}` exited {p.returncode}, expected {expect}\n"
                f"stdout: {p.stdout!r}\nstderr: {p.stderr.decode(errors='replace')}\n"
                f"{self.dv.log()}")
        return json.loads(p.stdout) if p.stdout.strip() else None

    def fetched(self, maildir: str | None = None) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(maildir or self.maildir, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as fh:
                        out.append(fh.read())
        return out

    @property
    def plain_url(self) -> str:
        return f"pop3://alice@127.0.0.1:{self.dv.port}"

    @property
    def tls_url(self) -> str:
        return f"pop3s://alice@127.0.0.1:{self.dv.tls_port}"


class PlainDovecotTest(DovecotFetchCase):
    TLS = {}

    def test_apop_delete_mode_to_maildir(self):
        s = self.fetch(self.plain_url, "--auth", "apop", "--tls", "none")
        self.assertEqual(s["auth"], "apop")
        self.assertEqual(s["messages"]["stored"], 3)
        self.assertEqual(s["messages"]["deleted"], 3)
        self.assertEqual(sorted(self.fetched()), sorted(MSGS))
        self.assertEqual(self.dv.messages("alice"), [])  # deleted on the server
        s = self.fetch(self.plain_url, "--auth", "apop", "--tls", "none")
        self.assertEqual(s["messages"]["on_server"], 0)
        self.assertEqual(len(self.fetched()), 3)

    def test_apop_keep_mode_fetches_only_new_mail(self):
        s = self.fetch(self.plain_url, "--auth", "apop", "--tls", "none", "--keep")
        self.assertEqual(s["messages"]["stored"], 3)
        self.assertEqual(s["messages"]["deleted"], 0)
        self.assertEqual(len(self.dv.messages("alice")), 3)
        s = self.fetch(self.plain_url, "--auth", "apop", "--tls", "none", "--keep")
        self.assertEqual(s["messages"]["new"], 0)
        self.assertEqual(s["messages"]["stored"], 0)
        extra = make_message("dovecot extra", "Arrived later.\n")
        self.dv.deliver("alice", extra)
        s = self.fetch(self.plain_url, "--auth", "apop", "--tls", "none", "--keep")
        self.assertEqual(s["messages"]["stored"], 1)
        self.assertEqual(sorted(self.fetched()), sorted(MSGS + [extra]))

    def test_scram_without_tls(self):
        s = self.fetch(self.plain_url, "--auth", "scram-sha-256", "--tls", "none")
        self.assertEqual(s["auth"], "scram-sha-256")
        self.assertEqual(sorted(self.fetched()), sorted(MSGS))

    def test_wrong_password_is_an_auth_failure(self):
        with open(self.pwfile, "w") as f:
            f.write("not-the-password-123\n")
        self.fetch(self.plain_url, "--auth", "apop", "--tls", "none", expect=3)
        self.assertEqual(len(self.dv.messages("alice")), 3)
        self.assertEqual(self.fetched(), [])


class TlsDovecotTest(DovecotFetchCase):
    def test_scram_over_stls_keep_to_maildir(self):
        s = self.fetch(self.plain_url, "--auth", "scram-sha-256", "--tls", "starttls",
                       "--ca-file", self.dv.cert, "--keep")
        self.assertEqual(s["auth"], "scram-sha-256")
        self.assertEqual(s["messages"]["stored"], 3)
        self.assertEqual(s["messages"]["deleted"], 0)
        self.assertEqual(sorted(self.fetched()), sorted(MSGS))
        self.assertEqual(len(self.dv.messages("alice")), 3)

    def test_auto_picks_scram_inside_tls(self):
        s = self.fetch(self.plain_url, "--ca-file", self.dv.cert)
        self.assertEqual(s["auth"], "scram-sha-256")
        self.assertEqual(s["messages"]["deleted"], 3)
        self.assertEqual(sorted(self.fetched()), sorted(MSGS))
        self.assertEqual(self.dv.messages("alice"), [])

    def test_apop_over_implicit_tls_delete_to_mbox(self):
        mbox = os.path.join(self.env.root, "inbox.mbox")
        s = self.fetch(self.tls_url, "--auth", "apop", "--ca-file", self.dv.cert,
                       to="mbox:" + mbox)
        self.assertEqual(s["auth"], "apop")
        self.assertEqual(s["messages"]["stored"], 3)
        with open(mbox, "rb") as f:
            data = f.read()
        self.assertIn(b"\n>From here on, quoting matters.\n", data)
        self.assertIn(b"\n>>From already quoted\n", data)
        self.assertEqual(sorted(mbox_messages(data)), sorted(MSGS))
        self.assertEqual(self.dv.messages("alice"), [])

    def test_scram_over_implicit_tls_keep_to_mda(self):
        out = os.path.join(self.env.root, "mda-out")
        os.makedirs(out)
        s = self.fetch(self.tls_url, "--auth", "scram-sha-256", "--ca-file", self.dv.cert,
                       "--keep", to='mda:cat > "$MDA_OUT/msg.$$"', env={"MDA_OUT": out})
        self.assertEqual(s["messages"]["stored"], 3)
        got = []
        for name in os.listdir(out):
            with open(os.path.join(out, name), "rb") as f:
                got.append(f.read())
        self.assertEqual(sorted(got), sorted(MSGS))
        self.assertEqual(len(self.dv.messages("alice")), 3)

    def test_mda_tempfail_keeps_mail_on_the_server(self):
        s = self.fetch(self.tls_url, "--auth", "scram-sha-256", "--ca-file", self.dv.cert,
                       to="mda:cat >/dev/null; exit 75", expect=2)
        if s is not None:
            self.assertEqual(s["messages"]["deleted"], 0)
        self.assertEqual(sorted(self.dv.messages("alice")), sorted(MSGS))

    def test_cram_md5_and_plain_inside_tls(self):
        s = self.fetch(self.plain_url, "--auth", "cram-md5", "--tls", "starttls",
                       "--ca-file", self.dv.cert, "--keep")
        self.assertEqual(s["auth"], "cram-md5")
        self.assertEqual(s["messages"]["stored"], 3)
        other = os.path.join(self.env.root, "Maildir2")
        s = self.fetch(self.tls_url, "--auth", "plain", "--ca-file", self.dv.cert,
                       state=os.path.join(self.env.root, "state2"), to="maildir:" + other)
        self.assertEqual(s["auth"], "plain")
        self.assertEqual(sorted(self.fetched(other)), sorted(MSGS))

    def test_unknown_certificate_is_a_tls_failure(self):
        self.fetch(self.tls_url, "--auth", "scram-sha-256", expect=4)
        self.assertEqual(len(self.dv.messages("alice")), 3)


if __name__ == "__main__":
    unittest.main()
