"""`apop user import` (Dovecot passwd-file, popauth text) and `apop uidl import`
(dovecot-uidlist) against the real binary, then logins with poplib: APOP for
imported passwords, USER/PASS for imported hashes, and the upgrade of an
imported hash on the first login over TLS."""

import base64
import hashlib
import json
import os
import poplib
import sqlite3
import ssl
import subprocess

from apoptest import ApopTestCase, make_message, require_program

ALICE_PW = "alice-Plain-8812-cedar"
BOB_PW = "bob-Crypt-5521-maple"
ERIN_PW = "erin-Ssha-7730-birch"
JUDY_PW = "judy-B64-4410-alder"
EX_DATAERR = 65


def sha512_crypt(password: str) -> str:
    out = subprocess.run([require_program("openssl"), "passwd", "-6", "-stdin"],
                         input=password.encode() + b"\n", capture_output=True, check=True)
    return out.stdout.decode().strip()


def ssha256(password: str, salt: bytes = b"s4lt-8oct") -> str:
    d = hashlib.sha256(password.encode() + salt).digest()
    return base64.b64encode(d + salt).decode()


def make_cert(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [require_program("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


class DovecotPasswdImportTest(ApopTestCase):
    def setUp(self):
        super().setUp()
        self.passwd = os.path.join(self.env.root, "passwd")
        self.bob_hash = sha512_crypt(BOB_PW)
        with open(self.passwd, "w") as f:
            f.write("# exported from Dovecot\n"
                    f"alice:{{PLAIN}}{ALICE_PW}:1000:1000::/home/alice::\n"
                    f"bob:{{SHA512-CRYPT}}{self.bob_hash}:1001:1001::/home/bob::\n"
                    "carol:{CRAM-MD5}" + "ab" * 32 + "\n"
                    "dave:{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA\n"
                    f"erin:{{SSHA256}}{ssha256(ERIN_PW)}\n"
                    f"judy:{{PLAIN.B64}}{base64.b64encode(JUDY_PW.encode()).decode()}\n"
                    "bad name:{PLAIN}x\n")

    def import_(self, *args, expect=EX_DATAERR):
        p = self.env.check("user", "import", "--data", self.env.data, "--from", "dovecot-passwd",
                           self.passwd, "--json", *args, expect=expect)
        out = p.stdout.decode() + p.stderr.decode()
        for secret in (ALICE_PW, BOB_PW, self.bob_hash, ERIN_PW, JUDY_PW, "ab" * 32):
            self.assertNotIn(secret, out)
        return json.loads(p.stdout)

    def outcomes(self, report):
        return {l["user"]: (l["outcome"], l.get("access")) for l in report["lines"]}

    def test_report_dry_run_logins_and_upgrade(self):
        dry = self.import_("--dry-run")
        self.assertTrue(dry["dry_run"])
        self.assertEqual(dry["totals"], {"imported": 4, "skipped": 3, "failed": 0})
        self.assertFalse(os.path.exists(os.path.join(self.env.data, "users.sqlite")))
        self.assertEqual(self.env.users(), [])  # nothing written

        r = self.import_()
        self.assertEqual(r["totals"], {"imported": 4, "skipped": 3, "failed": 0})
        o = self.outcomes(r)
        self.assertEqual(o["alice"], ("imported", "all"))
        self.assertEqual(o["bob"], ("imported", "login-only"))
        self.assertEqual(o["erin"], ("imported", "login-only"))
        self.assertEqual(o["judy"], ("imported", "all"))
        self.assertEqual(o["carol"][0], "skipped")
        self.assertEqual(o["dave"][0], "skipped")
        reasons = {l["user"]: l.get("reason", "") for l in r["lines"]}
        self.assertIn("CRAM-MD5", reasons["carol"])
        self.assertIn("ARGON2ID", reasons["dave"])
        self.assertEqual(self.env.users(), ["alice", "bob", "erin", "judy"])
        show = self.env.check("user", "show", "--data", self.env.data, "bob").stdout.decode()
        self.assertIn("imported password hash: {SHA512-CRYPT}", show)

        # Again: everyone exists now and is skipped, unless --replace.
        again = self.import_()
        self.assertEqual(again["totals"]["imported"], 0)
        self.assertIn("exists", [l for l in again["lines"] if l["user"] == "alice"][0]["reason"])
        self.assertEqual(self.import_("--replace")["totals"]["imported"], 4)

        self.env.deliver("bob", make_message("for bob", "hello bob\n"))
        cert, key = make_cert(self.env.root)
        with self.env.server("--tls-cert", cert, "--tls-key", key,
                             tls_listen=["127.0.0.1:0"]) as srv:
            # PLAIN-imported: APOP works.
            for user, pw in (("alice", ALICE_PW), ("judy", JUDY_PW)):
                p = poplib.POP3("127.0.0.1", srv.port)
                p.apop(user, pw)
                p.quit()
            # Hash-imported: USER/PASS works (loopback is secure), APOP does not.
            for user, pw in (("bob", BOB_PW), ("erin", ERIN_PW)):
                p = poplib.POP3("127.0.0.1", srv.port)
                p.user(user)
                p.pass_(pw)
                p.quit()
                p = poplib.POP3("127.0.0.1", srv.port)
                with self.assertRaises(poplib.error_proto):
                    p.apop(user, pw)
                p.close()
            p = poplib.POP3("127.0.0.1", srv.port)
            p.user("bob")
            with self.assertRaises(poplib.error_proto):
                p.pass_("wrong-" + BOB_PW)
            p.close()
            # The first login over TLS upgrades the imported hash...
            ctx = ssl.create_default_context(cafile=cert)
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=ctx)
            p.user("bob")
            p.pass_(BOB_PW)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
            srv.wait_for_log(r"login ok user=bob mech=\S+ .*credential=password-upgraded")
            # ... so APOP works from now on, and USER/PASS still does.
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("bob", BOB_PW)
            p.quit()
            # AUTH PLAIN over TLS upgrades as USER/PASS does (erin: hash-imported too).
            p = poplib.POP3_SSL("127.0.0.1", srv.tls_ports[0], context=ctx)
            token = base64.b64encode(b"\0erin\0" + ERIN_PW.encode()).decode()
            self.assertTrue(p._shortcmd("AUTH PLAIN " + token).startswith(b"+OK"))
            p.quit()
            srv.wait_for_log(r"login ok user=erin mech=PLAIN .*credential=password-upgraded")
            p = poplib.POP3("127.0.0.1", srv.port)
            p.apop("erin", ERIN_PW)
            p.quit()
        show = self.env.check("user", "show", "--data", self.env.data, "bob").stdout.decode()
        self.assertNotIn("imported password hash", show)
        self.assertIn("password usable for APOP/CRAM-MD5: yes", show)

    def test_text_report_and_bad_file(self):
        p = self.env.check("user", "import", "--data", self.env.data, "--from", "dovecot-passwd",
                           self.passwd, expect=EX_DATAERR)
        text = p.stdout.decode()
        self.assertIn("line 2\talice\timported\t{PLAIN}", text)
        self.assertIn("imported 4, skipped 3, failed 0", text)
        self.assertNotIn(ALICE_PW, text)
        self.env.check("user", "import", "--data", self.env.data, "--from", "dovecot-passwd",
                       os.path.join(self.env.root, "missing"), expect=1)
        self.env.check("user", "import", "--data", self.env.data, "--from", "shadow",
                       self.passwd, expect=64)


class ImportedHashCostTest(ApopTestCase):
    """Issue 17 item 8: imported hashes whose check would cost more than the
    caps (limits.hpp) are refused at import with the reason, and one already
    in the database is never checked at login (fail closed, logged)."""

    BCRYPT_14 = "$2b$14$abcdefghijklmnopqrstuuwDHzgxfGt5Km9Hp2nahYKO82JgVlnDG"
    BCRYPT_12 = "$2b$12$abcdefghijklmnopqrstuue8V.b.5X.pJWyIltuX.PXPCpjXWyGRm"
    PW = "Secret-Pass-1"  # the password of both hashes

    def test_costly_hash_refused_at_import_and_never_checked_at_login(self):
        passwd = os.path.join(self.env.root, "passwd")
        with open(passwd, "w") as f:
            f.write(f"carol:{{BLF-CRYPT}}{self.BCRYPT_14}\n"
                    f"erin:{{BLF-CRYPT}}{self.BCRYPT_12}\n"
                    "sam:{SHA512-CRYPT}$6$rounds=500000$saltsalt$TYw5Vcf9Nal.fCv8yA3FyNXh5qYjyG3NF"
                    "WKXT5qv8fUxhW/BqQsPYc2Rp2Jo0AYJ/1L16MiP6FeGHXEu4L9Ae1\n")
        p = self.env.check("user", "import", "--data", self.env.data, "--from", "dovecot-passwd",
                           passwd, "--json", expect=EX_DATAERR)
        reasons = {l["user"]: (l["outcome"], l.get("reason", ""))
                   for l in json.loads(p.stdout)["lines"]}
        self.assertEqual(reasons["carol"], (
            "skipped", "bcrypt cost 14 is above apop's limit of 12 for an imported hash "
                       "(limits.hpp kMaxImportedBcryptCost): set a new password"))
        self.assertEqual(reasons["sam"][0], "skipped")
        self.assertIn("SHA-crypt rounds 500000 is above apop's limit of 300000", reasons["sam"][1])
        self.assertEqual(reasons["erin"][0], "imported")  # at the cap
        # A database written before the caps: carol's costly hash is in it.
        db = sqlite3.connect(os.path.join(self.env.data, "users.sqlite"))
        db.execute("UPDATE users SET password_hash = ? WHERE name = 'erin'",
                   ("{BLF-CRYPT}" + self.BCRYPT_14,))
        db.commit()
        db.close()
        with self.env.server() as srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            p.user("erin")
            with self.assertRaises(poplib.error_proto) as e:
                p.pass_(self.PW)  # the right password: still refused
            self.assertIn(b"[AUTH] Authentication failed.", e.exception.args[0])
            p.close()
            srv.wait_for_log(r"login failed user=erin mech=USER addr=\S+ tls=0 "
                             r"reason=policy policy=imported-hash$")
            # (That no crypt(3) check ran is counted by the unit tests:
            # auth_import_test.cpp, StoredHashAboveTheCapFailsClosedWithItsReason.)


class PopauthImportTest(ApopTestCase):
    def test_mailutils_forms_then_apop(self):
        path = os.path.join(self.env.root, "popauth.txt")
        with open(path, "w") as f:
            f.write("# popauth -l\n"
                    "alice alice-Apop-3301-fern\n"
                    "bob: bob Apop with spaces 77\n")
        p = self.env.check("user", "import", "--data", self.env.data, "--from", "popauth", path,
                           "--json")
        r = json.loads(p.stdout)
        self.assertEqual(r["totals"], {"imported": 2, "skipped": 0, "failed": 0})
        self.assertNotIn("alice-Apop-3301-fern", p.stdout.decode())
        with self.env.server() as srv:
            for user, pw in (("alice", "alice-Apop-3301-fern"), ("bob", "bob Apop with spaces 77")):
                c = poplib.POP3("127.0.0.1", srv.port)
                c.apop(user, pw)
                c.quit()


class UidlImportTest(ApopTestCase):
    def test_dovecot_uidlist_pins_dovecot_uidls(self):
        self.env.add_user("alice", "alice-Uidl-5512-spruce")
        md = self.env.maildir("alice")
        names = ["1276528487.M364837P9451.old", "1276528488.M1P1.old", "1276528489.M2P1.old"]
        for i, n in enumerate(names):
            with open(os.path.join(md, "cur", n + ":2,S"), "wb") as f:
                f.write(b"Subject: %d\n\nx\n" % i)
        with open(os.path.join(md, "dovecot-uidlist"), "w") as f:
            f.write("3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1\n"
                    f"25017 W13 :{names[0]}:2,S\n"
                    f"25018 :{names[1]}\n"
                    f"25020 Pkept-by-pop3-save-uidl :{names[2]}\n")
        self.env.deliver("alice", make_message("new", "new mail\n"))
        p = self.env.check("uidl", "import", "--data", self.env.data, "--from", "dovecot-uidlist",
                           "--user", "alice", "--json")
        self.assertEqual(json.loads(p.stdout)["pinned"], 3)
        # Idempotent: a second import pins nothing new.
        p = self.env.check("uidl", "import", "--data", self.env.data, "--from", "dovecot-uidlist",
                           "--user", "alice", "--json")
        self.assertEqual(json.loads(p.stdout)["already_pinned"], 3)
        with self.env.server() as srv:
            c = poplib.POP3("127.0.0.1", srv.port)
            c.apop("alice", "alice-Uidl-5512-spruce")
            uidls = [l.split()[1].decode() for l in c.uidl()[1]]
            c.quit()
        self.assertEqual(uidls[:3], ["%08X%08X" % (25017, 1275660208),
                                     "%08X%08X" % (25018, 1275660208),
                                     "kept-by-pop3-save-uidl"])
        self.assertEqual(len(uidls), 4)
        self.assertNotIn(uidls[3], uidls[:3])
        self.env.check("uidl", "import", "--data", self.env.data, "--from", "dovecot-uidlist",
                       "--user", "alice", "--format", "%m", expect=64)
