"""`apop fetch --auth oauthbearer|xoauth2` against a real Dovecot whose oauth2
passdb validates JWTs locally (introspection_mode = local, an HS256 key in an
fs dict: no network). A fresh token logs in over pop3s with both
mechanisms; an expired one fails with exit status 3 and the decoded JSON
status; the token never appears on stdout or stderr, -v included."""

import base64
import hashlib
import hmac
import json
import os
import time
import unittest

from apoptest import ApopTestCase, make_message
from dovecot import Dovecot, require_dovecot

KEY = b"apop-interop-hs256-key-0123456789abcdef"
USER = "alice"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, key: bytes = KEY) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(sig)}"


def use_oauth2_passdb(dv: Dovecot) -> None:
    """Dovecot's oauth2 passdb validating HS256 JWTs signed with KEY locally
    (no network), for OAUTHBEARER and XOAUTH2; set before dv.start()."""
    keys = os.path.join(dv.root, "keys")
    # The lookup key is shared/<azp:default>/<alg>/<kid:default> (the alg
    # as in the JWT header); the fs dict drops "shared/". HMAC keys are
    # stored base64.
    d = os.path.join(keys, "default", "HS256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "default"), "w") as f:
        f.write(base64.b64encode(KEY).decode())
    conf = os.path.join(dv.root, "dovecot-oauth2.conf.ext")
    with open(conf, "w") as f:
        f.write("introspection_mode = local\n"
                f"local_validation_key_dict = fs:posix:prefix={keys}/\n"
                "username_attribute = sub\n"
                "username_format = %Lu\n"
                "scope = mail\n"
                "openid_configuration_url = https://idp.example/.well-known/openid-configuration\n"
                "debug = yes\n")
    if os.getuid() == 0:
        for dirpath, _, files in os.walk(keys):
            os.chmod(dirpath, 0o755)
            for n in files:
                os.chmod(os.path.join(dirpath, n), 0o644)
        os.chmod(conf, 0o644)
    dv.extra_passdb = ("passdb {\n  driver = oauth2\n"
                            "  mechanisms = oauthbearer xoauth2\n"
                            f"  args = {conf}\n}}")


class FetchOAuth2Test(ApopTestCase):
    def setUp(self):
        super().setUp()
        require_dovecot()
        self.dv = Dovecot(stls=False, implicit_tls=True,
                          mechanisms="plain oauthbearer xoauth2",
                          extra_config="auth_failure_delay = 0\n")
        self.addCleanup(self.dv.cleanup)
        use_oauth2_passdb(self.dv)
        self.dv.add_user(USER, "unused-password-8812")
        self.dv.start()
        self.msgs = [make_message("oauth 1", "First.\n"), make_message("oauth 2", "Second.\n")]
        for m in self.msgs:
            self.dv.deliver(USER, m)
        self.tokfile = os.path.join(self.env.root, "token")
        self.maildir = os.path.join(self.env.root, "Maildir")

    def token(self, exp_offset: int) -> str:
        now = int(time.time())
        return jwt({"sub": USER, "iat": now - 60, "nbf": now - 60, "exp": now + exp_offset,
                    "scope": "mail"})

    def fetch(self, mech: str, token: str, *args: str, expect: int = 0, state: str = "state",
              url: str | None = None):
        with open(self.tokfile, "w") as f:
            f.write(token + "\n")
        p = self.env.run("fetch", url or f"pop3s://{USER}@127.0.0.1:{self.dv.tls_port}",
                         "--to", "maildir:" + self.maildir, "--ca-file", self.dv.cert,
                         "--state", os.path.join(self.env.root, state), "--auth", mech,
                         "--password-file", self.tokfile, "--json", *args, timeout=60)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if p.returncode != expect:
            raise AssertionError(f"`apop fetch --auth {mech}` exited {p.returncode}, expected "
                                 f"{expect}\nstdout: {out}\nstderr: {err}\n{self.dv.log()}")
        # The token (and its signature, and its base64 as sent) never shown.
        for secret in (token, token.split(".")[2],
                       base64.b64encode(token.encode()).decode()[8:40]):
            self.assertNotIn(secret, out)
            self.assertNotIn(secret, err)
        return json.loads(out) if out.strip() else None, err

    def fetched(self) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as fh:
                        out.append(fh.read())
        return out

    def test_oauthbearer_fetches(self):
        j, err = self.fetch("oauthbearer", self.token(3600), "--keep", "-v")
        self.assertEqual(j["auth"], "oauthbearer")
        self.assertEqual(j["messages"]["stored"], 2)
        self.assertEqual(sorted(self.fetched()), sorted(self.msgs))
        self.assertIn("<hidden>", err)

    def test_xoauth2_fetches(self):
        j, err = self.fetch("xoauth2", self.token(3600), "-v")
        self.assertEqual(j["auth"], "xoauth2")
        self.assertEqual(j["messages"]["stored"], 2)
        self.assertEqual(sorted(self.fetched()), sorted(self.msgs))
        self.assertEqual(self.dv.messages(USER), [])  # deleted after the fetch
        self.assertIn("<hidden>", err)

    def test_expired_token_fails_with_decoded_status(self):
        # Dovecot 2.3 answers OAUTHBEARER with RFC 7628's status (no scope),
        # XOAUTH2 with Google's (the HTTP status and the scope).
        oidc = "openid-configuration: https://idp.example/.well-known/openid-configuration"
        for mech, want in (("oauthbearer", f"invalid_token ({oidc})"),
                           ("xoauth2", f"401 (scope: mail; {oidc})")):
            with self.subTest(mech=mech):
                j, err = self.fetch(mech, self.token(-600), "-v", expect=3)
                self.assertIn("token rejected: " + want, j["error"])
                self.assertIn("S: + eyJ", err)  # the error challenge in the trace
                self.assertNotIn("eyJ", j["error"])  # decoded, not base64
                self.assertEqual(self.fetched(), [])
        self.assertEqual(len(self.dv.messages(USER)), 2)

    def test_refused_without_tls(self):
        # Dovecot offers the mechanisms on its plain port (loopback counts as
        # secure there); apop does not send a bearer token in the clear.
        j, err = self.fetch("oauthbearer", self.token(3600), "--tls", "none", "-v", expect=7,
                            url=f"pop3://{USER}@127.0.0.1:{self.dv.port}")
        self.assertIn("bearer token in the clear", j["error"])
        self.assertNotIn("C: AUTH", err)
        self.assertEqual(len(self.dv.messages(USER)), 2)

    def test_wrong_key_fails(self):
        now = int(time.time())
        bad = jwt({"sub": USER, "iat": now, "exp": now + 3600, "scope": "mail"}, key=b"other-key")
        j, _ = self.fetch("oauthbearer", bad, expect=3)
        self.assertIn("token rejected", j["error"])


if __name__ == "__main__":
    unittest.main()
