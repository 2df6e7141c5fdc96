"""`apop fetch import-config` through the real binary: a .fetchmailrc and
getmail rc files in, `apop fetch --config` TOML out (read back with tomllib
and checked against the schema of docs/fetch.md), the inline passwords in
files of their own (mode 0600, never overwritten), the report of what was not
carried over on standard error, and no secret on standard output or error.
Then an imported getmail account fetches from `apop serve` with the values
the TOML gives (url, auth, password_file, to).

Exit codes: 0 at least one account written, 1 none usable (or I/O error),
64 usage.
"""

from __future__ import annotations

import os
import stat
import tomllib

from apoptest import ALICE_SECRET, ApopTestCase, make_message

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 64

# The keys of the schema (docs/fetch.md): an [[account]] holds only these.
ACCOUNT_KEYS = {"name", "url", "auth", "tls", "ca_file", "password_file", "password_command",
                "to", "deliver_to", "on_reject", "keep", "max_message_size", "fetch_limit",
                "poll_interval"}
TOP_KEYS = {"max_parallel", "state_dir", "defaults", "account"}

SECRETS = ["s3cr\"et pass", "BobSecretToken", "imapSecret-77", "x#yAz", "oldSecret-99",
           "w0rk s3cret;#x", "getmailImap-55"]

FETCHMAILRC = r"""# fetchmail for the household
set daemon 300
set logfile "/var/log/fetchmail.log"

defaults proto pop3 timeout 90
    fetchlimit 50

poll pop.example.com with proto pop3 port 995
    user "alice" there with password "s3cr\"et pass" is alice here
        options ssl keep sslcertck limit 20971520 mda "/usr/bin/procmail -d %T"
    user 'bob' with pass BobSecretToken is bob here, smtphost /run/dovecot/lmtp lmtp
poll imap.example.org proto imap user carol password "imapSecret-77"
poll pop.isp.net via mx.isp.net auth apop interval 2
    user carol@isp.net password "x#y\x41z" is carol here nokeep folder INBOX mimedecode
skip old.example.com user dave password "oldSecret-99"
"""

GETMAIL_WORK = """[retriever]
type = SimplePOP3SSLRetriever
server = pop.work.example
username = alice@work.example
password = w0rk s3cret;#x

[destination]
type = Maildir
path = ~/Mail/work/

[options]
delete = true
max_message_size = 10485760
verbose = 2
"""

GETMAIL_HOME = """[retriever]
type = SimplePOP3Retriever
server = pop.home.example
port = 1110
username = bob
password_command = ("/usr/bin/pass", "show", 'mail/home')

[destination]
type = MDA_external
path = /usr/bin/maildrop
arguments = ("-d", "bob")

[options]
read_all = false
"""

GETMAIL_IMAP = """[retriever]
type = SimpleIMAPSSLRetriever
server = imap.example
username = carol
password = getmailImap-55
[destination]
type = Maildir
path = ~/Mail/
"""


class FetchImportTest(ApopTestCase):
    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.env.root, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_import(self, *args: str, expect: int = EXIT_OK, env: dict | None = None):
        p = self.env.check("fetch", "import-config", *args, expect=expect, env=env)
        out, err = p.stdout.decode(), p.stderr.decode()
        for secret in SECRETS:
            self.assertNotIn(secret, out)
            self.assertNotIn(secret, err)
        return out, err

    def check_schema(self, doc: dict) -> None:
        self.assertLessEqual(set(doc), TOP_KEYS)
        names = [a["name"] for a in doc["account"]]
        self.assertEqual(len(names), len(set(names)))
        for a in doc["account"]:
            self.assertLessEqual(set(a), ACCOUNT_KEYS, a["name"])
            self.assertRegex(a["name"], r"^[A-Za-z0-9._-]+$")
            self.assertRegex(a["url"], r"^pop3s?://[^@/]+@[^@/]+$")
            self.assertRegex(a["to"], r"^(maildir|mbox|mda|lmtp|smtp):")
            # Exactly one password source.
            self.assertEqual(("password_file" in a) + ("password_command" in a), 1, a["name"])
            if "poll_interval" in a:
                self.assertRegex(a["poll_interval"], r"^[0-9]+[smhd]$")
            if "max_message_size" in a:
                self.assertRegex(a["max_message_size"], r"^[0-9]+[KMG]?$")

    def assert_secret_file(self, path: str, secret: str) -> None:
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, path)
        with open(path) as f:
            self.assertEqual(f.read(), secret + "\n")

    def test_fetchmailrc_to_stdout_with_secrets_dir(self):
        rc = self.write("fetchmailrc", FETCHMAILRC)
        secrets = os.path.join(self.env.root, "secrets")
        out, err = self.run_import("--from", "fetchmailrc", rc, "--secrets-dir", secrets)
        self.assertTrue(out.startswith("# apop fetch configuration"))
        self.assertIn(rc, out)  # the header names the source
        doc = tomllib.loads(out)
        self.check_schema(doc)
        acc = {a["name"]: a for a in doc["account"]}
        self.assertEqual(list(acc), ["alice-pop.example.com", "bob-pop.example.com", "pop.isp.net"])

        alice = acc["alice-pop.example.com"]
        self.assertEqual(alice["url"], "pop3s://alice@pop.example.com:995")
        self.assertEqual(alice["to"], "mda:/usr/bin/procmail -d %T")
        self.assertEqual((alice["keep"], alice["max_message_size"], alice["fetch_limit"],
                          alice["poll_interval"]), (True, "20M", 50, "5m"))
        self.assert_secret_file(alice["password_file"], "s3cr\"et pass")
        self.assertEqual(os.path.dirname(alice["password_file"]), secrets)

        bob = acc["bob-pop.example.com"]
        self.assertEqual((bob["to"], bob["deliver_to"], bob["keep"]),
                         ("lmtp:unix:/run/dovecot/lmtp", "bob", False))
        self.assert_secret_file(bob["password_file"], "BobSecretToken")

        carol = acc["pop.isp.net"]
        self.assertEqual((carol["url"], carol["auth"], carol["to"], carol["deliver_to"],
                          carol["poll_interval"]),
                         ("pop3://carol%40isp.net@mx.isp.net", "apop", "smtp:localhost:25",
                          "carol", "10m"))
        self.assert_secret_file(carol["password_file"], "x#yAz")
        self.assertEqual(sorted(os.listdir(secrets)), sorted(
            os.path.basename(a["password_file"]) for a in doc["account"]))
        self.assertEqual(stat.S_IMODE(os.stat(secrets).st_mode), 0o700)

        # The report: each option with its file and line, and the reason.
        self.assertIn("not carried over", err)
        self.assertRegex(err, r"fetchmailrc:3: set logfile: ")
        self.assertRegex(err, r"fetchmailrc:12: account carol@imap.example.org: protocol: "
                              r"account not imported: protocol imap")
        self.assertRegex(err, r"account pop.isp.net: folder: ")
        self.assertRegex(err, r"account pop.isp.net: mimedecode: ")
        self.assertRegex(err, r"account dave@old.example.com: skip: ")
        self.assertIn("3 account(s) written", err)

        # Again: the password files exist and are not overwritten (reported).
        with open(alice["password_file"], "w") as f:
            f.write("changed by hand\n")
        out2, err2 = self.run_import("--from", "fetchmailrc", rc, "--secrets-dir", secrets)
        self.assertEqual(out2, out)
        self.assertIn("exists and was not overwritten", err2)
        with open(alice["password_file"]) as f:
            self.assertEqual(f.read(), "changed by hand\n")

    def test_getmailrc_files_to_output_file(self):
        work = self.write("getmailrc-work", GETMAIL_WORK)
        home = self.write("home.rc", GETMAIL_HOME)
        imap = self.write("getmailrc", GETMAIL_IMAP)
        conf = os.path.join(self.env.root, "conf")
        os.mkdir(conf)
        out_toml = os.path.join(conf, "fetch.toml")
        out, err = self.run_import("--from", "getmailrc", work, home, imap, "-o", out_toml)
        self.assertEqual(out, "")
        with open(out_toml, "rb") as f:
            doc = tomllib.load(f)
        self.check_schema(doc)
        self.assertEqual([a["name"] for a in doc["account"]], ["work", "home"])
        w, h = doc["account"]
        self.assertEqual((w["url"], w["to"], w["keep"], w["max_message_size"]),
                         ("pop3s://alice%40work.example@pop.work.example", "maildir:~/Mail/work/",
                          False, "10M"))
        # Without --secrets-dir: beside the output.
        self.assertEqual(w["password_file"], os.path.join(conf, "work.pass"))
        self.assert_secret_file(w["password_file"], "w0rk s3cret;#x")
        self.assertEqual((h["url"], h["password_command"], h["to"], h["keep"]),
                         ("pop3://bob@pop.home.example:1110", ["/usr/bin/pass", "show", "mail/home"],
                          "mda:/usr/bin/maildrop -d bob", True))
        self.assertIn("account carol@imap.example: [retriever] type: account not imported: IMAP",
                      err)
        self.assertIn("account work: [options] verbose", err)

        # -o never overwrites.
        _, err = self.run_import("--from", "getmailrc", work, "-o", out_toml, expect=EXIT_NOTHING)
        self.assertIn("exists", err)

    def test_default_secrets_dir_under_home(self):
        home = os.path.join(self.env.root, "home")
        os.mkdir(home)
        work = self.write("getmailrc-work", GETMAIL_WORK)
        out, _ = self.run_import("--from", "getmailrc", work, env={"HOME": home})
        doc = tomllib.loads(out)
        path = doc["account"][0]["password_file"]
        self.assertEqual(path, os.path.join(home, ".config", "apop", "work.pass"))
        self.assert_secret_file(path, "w0rk s3cret;#x")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)

    def test_nothing_usable_and_usage(self):
        imap = self.write("getmailrc", GETMAIL_IMAP)
        out, err = self.run_import("--from", "getmailrc", imap, expect=EXIT_NOTHING)
        self.assertEqual(out, "")
        self.assertIn("IMAP", err)
        self.run_import("--from", "procmailrc", imap, expect=EXIT_USAGE)
        self.run_import("--from", "getmailrc", expect=EXIT_USAGE)
        self.run_import("--from", "getmailrc", os.path.join(self.env.root, "missing"),
                        expect=EXIT_USAGE)

    def test_fetch_url_still_parses_beside_the_subcommand(self):
        # `apop fetch URL --to DEST` and `apop fetch import-config` share the
        # `fetch` command: neither argument list is taken for the other.
        p = self.env.run("fetch", "--to", f"maildir:{self.env.root}/m")
        self.assertEqual(p.returncode, EXIT_USAGE)
        self.assertIn(b"url is required", p.stderr)
        p = self.env.run("fetch", "pop3://x@127.0.0.1:1")
        self.assertEqual(p.returncode, EXIT_USAGE)
        self.assertIn(b"--to is required", p.stderr)

    def test_imported_getmail_account_fetches(self):
        self.setup_alice([make_message("imported", "fetched with the imported settings\n")])
        with self.env.server() as srv:
            rc = self.write("getmailrc-local", f"""[retriever]
type = SimplePOP3Retriever
server = 127.0.0.1
port = {srv.port}
username = alice
password = {ALICE_SECRET}
use_apop = true

[destination]
type = Maildir
path = {self.env.root}/Maildir/

[options]
delete = true
""")
            p = self.env.check("fetch", "import-config", "--from", "getmailrc", rc,
                               "--secrets-dir", os.path.join(self.env.root, "s"))
            self.assertNotIn(ALICE_SECRET.encode(), p.stdout + p.stderr)
            a = tomllib.loads(p.stdout.decode())["account"][0]
            self.assertEqual(a["auth"], "apop")
            to = a["to"]
            self.env.check("fetch", a["url"], "--auth", a["auth"], "--tls", "none", "--to", to,
                           "--password-file", a["password_file"],
                           "--state", os.path.join(self.env.root, "state"))
        new = os.path.join(self.env.root, "Maildir", "new")
        files = os.listdir(new)
        self.assertEqual(len(files), 1)
        with open(os.path.join(new, files[0]), "rb") as f:
            self.assertIn(b"fetched with the imported settings", f.read())
