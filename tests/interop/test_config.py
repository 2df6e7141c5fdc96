"""`apop serve --config FILE` and `apop config check`: the TOML file, precedence of
flags over the file, and precise errors (file, line, key)."""

import os
import poplib
import unittest

from apoptest import ALICE_SECRET, ApopTestCase, make_message

EX_CONFIG = 78


class ConfigTest(ApopTestCase):
    def write(self, name, text):
        path = os.path.join(self.env.root, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_prints_effective_configuration_with_flag_override(self):
        path = self.write("a.toml", 'listen = ["127.0.0.1:0"]\nmax_auth_failures = 5\n'
                                    "secure_loopback = false\n")
        out = self.env.check("config", "check", "--config", path, "--max-auth-failures", "7")
        text = out.stdout.decode()
        self.assertIn('listen = ["127.0.0.1:0"]\n', text)
        self.assertIn("max_auth_failures = 7\n", text)
        self.assertIn("secure_loopback = false\n", text)
        self.assertIn("idle_timeout = 600\n", text)

    def test_every_key_of_the_shipped_example_is_known(self):
        example = os.path.join(os.path.dirname(__file__), "..", "..", "contrib", "apop.toml")
        with open(example) as f:
            text = f.read()
        # The example names real certificate paths; point them at files that exist.
        text = text.replace("/etc/letsencrypt/live/pop.example.org/fullchain.pem", example)
        text = text.replace("/etc/letsencrypt/live/pop.example.org/privkey.pem", example)
        path = self.write("example.toml", text)
        out = self.env.check("config", "check", "--config", path)
        self.assertIn('data = "/var/lib/apop"', out.stdout.decode())

    def test_md5_challenge_requires_tls_and_its_older_name(self):
        # Issue 17 item 6: the key says what it covers (APOP and CRAM-MD5);
        # the older key and flag still work.
        for text in ("md5_challenge_requires_tls = true\n", "apop_requires_tls = true\n"):
            path = self.write("md5.toml", 'listen = ["127.0.0.1:0"]\n' + text)
            out = self.env.check("config", "check", "--config", path).stdout.decode()
            self.assertIn("md5_challenge_requires_tls = true\n", out, text)
            self.assertNotIn("apop_requires_tls", out)
        plain = self.write("plain.toml", 'listen = ["127.0.0.1:0"]\n')
        for flag in ("--md5-challenge-requires-tls", "--apop-requires-tls"):
            out = self.env.check("config", "check", "--config", plain, flag)
            self.assertIn("md5_challenge_requires_tls = true\n", out.stdout.decode(), flag)
        path = self.write("both.toml", 'listen = ["127.0.0.1:0"]\napop_requires_tls = true\n'
                                       "md5_challenge_requires_tls = false\n")
        p = self.env.check("config", "check", "--config", path, expect=EX_CONFIG)
        self.assertRegex(p.stderr.decode(), r"both\.toml:3:1: key md5_challenge_requires_tls: "
                                            r"given twice \(apop_requires_tls is the older name")

    def test_errors_name_file_line_and_key(self):
        cases = [
            ('listen = ["127.0.0.1:0"]\nbogus = 1\n', r"bad\.toml:2:1: key bogus: unknown key"),
            ('listen = "127.0.0.1:0"\n', r"bad\.toml:1:\d+: key listen: expected an array"),
            ("max_auth_failures = 0\n", r"bad\.toml:1:\d+: key max_auth_failures: must be between"),
            ('max_auth_failures = "3"\n', r"key max_auth_failures: expected an integer"),
            ("secure_loopback = 1\n", r"key secure_loopback: expected true or false"),
            ("listen = [\n", r"bad\.toml:\d+:\d+: "),
            ('listen = ["nowhere"]\n', r"bad\.toml: listen: "),
            ('listen = ["127.0.0.1:0"]\ntls_cert = "/nonexistent.pem"\ntls_key = "/x"\n',
             r"no such file: /nonexistent\.pem"),
        ]
        for text, pattern in cases:
            path = self.write("bad.toml", text)
            p = self.env.check("config", "check", "--config", path, expect=EX_CONFIG)
            self.assertRegex(p.stderr.decode(), pattern, text)
            # serve refuses the same file: 78 (EX_CONFIG) for what the file parser finds,
            # 64 for settings that parse but cannot be used.
            r = self.env.run("serve", "--config", path, timeout=10)
            self.assertIn(r.returncode, (EX_CONFIG, 64), text)

    def test_serve_reads_the_file_and_flags_override(self):
        self.setup_alice([make_message("cfg", "body\n")])
        path = self.write("serve.toml", f'data = "{self.env.data}"\nlisten = ["127.0.0.1:0"]\n'
                                        "implementation = false\nsecure_loopback = false\n")
        srv = self.env.server("--config", path, listen=[], use_data_flag=False)
        srv.expected_listeners = 1
        with srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            caps = p.capa()
            self.assertNotIn("IMPLEMENTATION", caps)
            self.assertNotIn("USER", caps)  # secure_loopback = false from the file
            p.apop("alice", ALICE_SECRET)
            self.assertEqual(p.stat()[0], 1)
            p.quit()
        srv = self.env.server("--config", path, "--allow-plaintext-auth", listen=[])
        srv.expected_listeners = 1
        with srv:
            p = poplib.POP3("127.0.0.1", srv.port)
            self.assertIn("USER", p.capa())  # the flag wins
            p.quit()


if __name__ == "__main__":
    unittest.main()
