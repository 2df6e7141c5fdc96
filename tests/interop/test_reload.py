"""SIGHUP re-reads `apop serve --config FILE`: runtime settings apply to new sessions,
settings that need a restart are named and kept, a broken file keeps the running
configuration, and command-line flags still override the file."""

import os
import signal

from apoptest import ALICE_SECRET, ApopTestCase, make_message


class ReloadTest(ApopTestCase):
    def write_config(self, text: str, listen: str = "127.0.0.1:0") -> str:
        path = os.path.join(self.env.root, "apop.toml")
        with open(path + ".new", "w") as f:
            f.write(f'data = "{self.env.data}"\nlisten = ["{listen}"]\n' + text)
        os.replace(path + ".new", path)
        return path

    def start(self, *flags: str):
        self.setup_alice([make_message("m", "body\n")])
        path = self.write_config("max_bad_commands = 3\nimplementation = true\n")
        srv = self.env.server("--config", path, *flags, listen=[], use_data_flag=False)
        srv.expected_listeners = 1
        return path, srv

    def caps(self, conn) -> list[bytes]:
        status, lines = conn.cmd_multi("CAPA")
        self.assertTrue(status.startswith(b"+OK"), status)
        return lines

    def bad_commands_before_close(self, srv, send: int = 8) -> int:
        """Pipelines `send` unknown commands; the server answers each with -ERR until
        max_bad_commands is reached, then closes: the number of replies is the limit."""
        c = srv.connect()
        c.send(b"XYZZY\r\n" * send)
        replies = 0
        while True:
            try:
                line = c.line()
            except EOFError:
                return replies
            self.assertTrue(line.startswith(b"-ERR"), line)
            replies += 1

    def reload(self, srv, count: int, pattern: str = r"config reloaded"):
        os.kill(srv.pid, signal.SIGHUP)
        return srv.wait_for_log(pattern, count=count)

    def test_runtime_settings_apply_to_new_sessions(self):
        path, srv = self.start()
        with srv:
            before = srv.connect()
            self.assertIn(b"IMPLEMENTATION apop 0.1.0", self.caps(before))
            self.assertEqual(self.bad_commands_before_close(srv), 3)
            self.write_config("max_bad_commands = 1\nimplementation = false\n")
            line = self.reload(srv, 1)[0]
            self.assertIn("max_bad_commands", line)
            self.assertIn("implementation", line)
            self.assertNotIn("restart to apply", srv.log())
            after = srv.connect()
            self.assertNotIn(b"IMPLEMENTATION apop 0.1.0", self.caps(after))
            self.assertEqual(self.bad_commands_before_close(srv), 1)
            # The session opened before the reload keeps its configuration and works.
            self.assertIn(b"IMPLEMENTATION apop 0.1.0", self.caps(before))
            before.login("alice", ALICE_SECRET)
            self.assertTrue(before.cmd("STAT").startswith(b"+OK 1 "))
            before.quit()

    def test_restart_settings_are_named_and_kept(self):
        path, srv = self.start()
        with srv:
            self.write_config('max_bad_commands = 2\nhostname = "elsewhere.example"\n',
                              listen="127.0.0.1:1")
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"config reload: listen changed, restart to apply")
            srv.wait_for_log(r"config reload: hostname changed, restart to apply")
            srv.wait_for_log(r"config reloaded applied=max_bad_commands\b")
            c = srv.connect()  # still on the original port, original host name
            self.assertNotIn(b"elsewhere.example", c.greeting)
            c.close()
            self.assertEqual(self.bad_commands_before_close(srv), 2)

    def test_broken_file_keeps_the_running_configuration(self):
        path, srv = self.start()
        with srv:
            with open(path, "w") as f:
                f.write("max_bad_commands = [\n")
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"config reload failed, keeping the running configuration: "
                             r".*apop\.toml:\d+:\d+")
            self.write_config("max_bad_commands = 0\n")  # parses, out of range
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"config reload failed, keeping the running configuration: "
                             r".*key max_bad_commands: must be between", count=1)
            self.assertNotIn("config reloaded", srv.log())
            c = srv.connect()
            self.assertIn(b"IMPLEMENTATION apop 0.1.0", self.caps(c))
            c.close()
            self.assertEqual(self.bad_commands_before_close(srv), 3)
            # A good file afterwards is taken.
            self.write_config("max_bad_commands = 1\n")
            self.reload(srv, 1)
            self.assertEqual(self.bad_commands_before_close(srv), 1)

    def test_flags_still_override_the_file_on_reload(self):
        path, srv = self.start("--max-bad-commands", "2")
        with srv:
            self.write_config("max_bad_commands = 5\nimplementation = false\n")
            self.reload(srv, 1)
            c = srv.connect()
            self.assertNotIn(b"IMPLEMENTATION apop 0.1.0", self.caps(c))
            c.close()
            self.assertEqual(self.bad_commands_before_close(srv), 2)

    def test_without_a_file_sighup_keeps_the_flags(self):
        self.setup_alice()
        with self.env.server("--no-implementation") as srv:
            os.kill(srv.pid, signal.SIGHUP)
            srv.wait_for_log(r"config reloaded applied=-")
            c = srv.connect()
            self.assertNotIn(b"IMPLEMENTATION apop 0.1.0", self.caps(c))
            c.close()
