"""Hostile-input suite, protocol part: malformed lines and arguments over raw sockets.

Overlong lines (with and without CRLF, up to megabytes), NUL, bare CR and bare
LF, 8-bit and control bytes, TAB and extra spaces; every command with missing,
extra, signed, zero, huge and non-numeric arguments; commands in the wrong
state; unknown commands; AUTH with bad base64 and oversized responses. Each
case checks the exact reply (or the disconnect), and hostile.HostileCase checks
after every test that the server kept no descriptor, stayed within its memory
bound and serves a normal session.
"""

import base64
import re
import socket
import time
import unittest

from apoptest import apop_digest, crlf
from hostile import ALICE_MESSAGES, ALICE_SECRET, HostileCase, read_multi_raw, stuffed

MIB = 1024 * 1024
LIMIT = 255  # RFC 2449 §4: a command line is at most 255 octets with its CRLF
SIZES = [len(crlf(m)) for m in ALICE_MESSAGES]
N = len(ALICE_MESSAGES)

BAD_NUMBERS = [b"+1", b"-1", b"1a", b"a1", b"abc", b"0x1", b"1.0", b"1e3", b"\xb9",
               b"4294967296", b"18446744073709551616", b"99999999999999999999",
               b"-4294967295"]
ABSENT_NUMBERS = [b"0", b"00", str(N + 1).encode(), b"4294967295"]

ERR_UNKNOWN = b"-ERR Unknown command"
ERR_BAD_BYTE = b"-ERR Invalid character in command"
ERR_TOO_LONG = b"-ERR Line too long"
ERR_ARG_LONG = b"-ERR Argument too long"
ERR_NOT_LOGGED_IN = b"-ERR Not logged in"
ERR_LOGGED_IN = b"-ERR Already logged in"
ERR_BAD_NUMBER = b"-ERR Invalid message number"
ERR_NO_MESSAGE = b"-ERR No such message"
ERR_AUTH = b"-ERR [AUTH] Authentication failed."
ERR_SASL = b"-ERR Invalid SASL response"
CAPA_FIRST = b"+OK Capability list follows"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


class HostileLinesTest(HostileCase):
    """Line framing: lengths, terminators and bytes that are not commands."""

    def test_line_limit_is_exactly_255_octets_with_crlf(self):
        c = self.connect()
        at_limit = b"USER " + b"a" * (LIMIT - 2 - 5)  # processed: its argument is too long
        self.assertEqual(c.cmd(at_limit), ERR_ARG_LONG)
        self.assertEqual(c.cmd(at_limit + b"a"), ERR_TOO_LONG)
        # A bare LF counts as if it were CRLF (Dovecot's rule too).
        c.send(at_limit + b"\n")
        self.assertEqual(c.line(), ERR_ARG_LONG)
        c.send(at_limit + b"a\n")
        self.assertEqual(c.line(), ERR_TOO_LONG)
        self.assertEqual(c.cmd("CAPA"), CAPA_FIRST)

    def test_megabyte_lines_are_rejected_whole_with_one_reply(self):
        for term in (b"\r\n", b"\n"):
            with self.subTest(term=term):
                c = self.connect()
                # The tail of the line looks like a command: it must not run.
                c.send(b"NOOP " + b"x" * (4 * MIB) + b" QUIT" + term + b"CAPA\r\n")
                self.assertEqual(c.line(), ERR_TOO_LONG)
                self.assertEqual(c.line(), CAPA_FIRST)
                read_multi_raw(c)
                self.assert_rss_bounded("after a 4 MiB line")
                c.close()

    def test_megabyte_line_after_login_is_rejected_whole(self):
        c = self.login()
        c.send(b"DELE 1" + b" " * MIB + b"\r\nSTAT\r\n")
        self.assertEqual(c.line(), ERR_TOO_LONG)
        self.assertEqual(c.line(), f"+OK {N} {sum(SIZES)}".encode())  # nothing deleted
        c.send(b"RETR " + b"1" * (2 * MIB) + b"\r\n")
        self.assertEqual(c.line(), ERR_TOO_LONG)
        self.assertEqual(c.cmd("NOOP"), b"+OK")

    def test_endless_line_without_crlf_keeps_memory_bounded(self):
        c = self.connect()
        chunk = b"A" * 65536
        for _ in range(8 * 16):  # 8 MiB, never a line end
            c.send(chunk)
        time.sleep(0.2)
        self.assert_rss_bounded("while an 8 MiB unterminated line is being sent")
        # The line is still being discarded: the next LF ends it, with one reply.
        c.send(b"\r\nNOOP\r\n")
        self.assertEqual(c.line(), ERR_TOO_LONG)
        self.assertEqual(c.line(), ERR_NOT_LOGGED_IN)
        # And one that ends with the connection instead of a line end.
        for _ in range(32):
            c.send(chunk)
        c.close()

    def test_megabyte_of_nul_cr_and_8bit_bytes(self):
        for filler in (b"\0", b"\r", b"\xff", b"\x1b", b"\t", b" "):
            with self.subTest(filler=filler):
                c = self.connect()
                c.send(filler * MIB + b"\r\nCAPA\r\n")
                self.assertEqual(c.line(), ERR_TOO_LONG)
                self.assertEqual(c.line(), CAPA_FIRST)
                c.close()

    def test_overlong_line_trickled_in_small_segments(self):
        c = self.connect()
        for _ in range(LIMIT + 10):
            c.send(b"B")
        c.send(b"\r\n")
        self.assertEqual(c.line(), ERR_TOO_LONG)
        for b in b"CAPA\r\n":  # one octet per segment is still one command
            c.send(bytes([b]))
        self.assertEqual(c.line(), CAPA_FIRST)

    def test_nul_bytes(self):
        cases = [b"\0", b"NOOP\0", b"CA\0PA", b"\0CAPA", b"USER alice\0", b"USER al\0ice",
                 b"APOP alice\0 " + b"0" * 32, b"QUIT\0"]
        c = self.connect()
        for line in cases[:5]:
            with self.subTest(line=line):
                self.assertEqual(c.cmd(line), ERR_BAD_BYTE)
        c = self.connect()
        for line in cases[5:]:
            with self.subTest(line=line):
                self.assertEqual(c.cmd(line), ERR_BAD_BYTE)
        # QUIT\0 did not quit; PASS has no user (USER al\0ice was not run).
        self.assertEqual(c.cmd("PASS x"), b"-ERR No username given")
        t = self.login()
        for line in (b"RETR 1\0", b"DELE\0 1", b"LIST \0", b"QUIT\0", b"STAT\0"):
            with self.subTest(line=line):
                self.assertEqual(t.cmd(line), ERR_BAD_BYTE)
        self.assertEqual(t.cmd("STAT"), f"+OK {N} {sum(SIZES)}".encode())

    def test_bare_cr(self):
        c = self.connect()
        # A CR not followed by LF is part of the line, which is then refused whole:
        # "NOOP\rQUIT" must not run QUIT.
        self.assertEqual(c.cmd(b"NOOP\rQUIT"), ERR_BAD_BYTE)
        self.assertEqual(c.cmd(b"CAPA\r"), ERR_BAD_BYTE)  # CAPA CR CR LF
        self.assertEqual(c.cmd(b"\r"), ERR_BAD_BYTE)
        # A line ended by CR alone is not a line: nothing is answered.
        c.send(b"CAPA\r")
        c.sock.settimeout(0.3)
        with self.assertRaises(socket.timeout):
            c.sock.recv(100)
        c.send(b"\n")  # now it is "CAPA" CRLF
        self.assertEqual(c.line(), CAPA_FIRST)

    def test_bare_lf_session(self):
        c = self.connect()
        c.send(b"CAPA\n")
        self.assertEqual(c.line(), CAPA_FIRST)
        read_multi_raw(c)
        c.send(f"APOP alice {apop_digest(c.timestamp, ALICE_SECRET)}\n".encode())
        self.assertTrue(c.line().startswith(b"+OK Logged in"))
        c.send(b"STAT\nLIST 2\nRETR 2\n")
        self.assertEqual(c.line(), f"+OK {N} {sum(SIZES)}".encode())
        self.assertEqual(c.line(), f"+OK 2 {SIZES[1]}".encode())
        self.assertEqual(c.line(), f"+OK {SIZES[1]} octets".encode())
        self.assertEqual(read_multi_raw(c), stuffed(ALICE_MESSAGES[1]))
        c.send(b"NOOP\n")
        self.assertEqual(c.line(), b"+OK")  # replies are always CRLF

    def test_8bit_and_control_bytes(self):
        every = bytes(b for b in range(1, 256) if b not in (0x0a, 0x0d))
        self.assertEqual(len(every) + 2, LIMIT)  # fits the line limit exactly
        c = self.connect()
        for line in (every, b"\xffCAPA", b"CAPA\x1b[2J", b"\x7f", b"NOO\xd0",
                     b"\xef\xbb\xbfCAPA"):
            with self.subTest(line=line):
                self.assertEqual(c.cmd(line), ERR_UNKNOWN)
        c = self.connect()
        # USER takes any octets (as Dovecot); the login then simply fails, and the
        # log shows no raw control or 8-bit octet.
        self.assertEqual(c.cmd(b"USER \x1b]0;pwned\x07\xff\xfe\x01evil"), b"+OK Send your password")
        self.assertEqual(c.cmd(b"PASS \x00"), ERR_BAD_BYTE)
        self.assertEqual(c.cmd(b"USER \x1b]0;pwned\x07\xff\xfe\x01evil"), b"+OK Send your password")
        self.assertEqual(c.cmd(b"PASS \x1b\xff wrong"), ERR_AUTH)
        self.assertEqual(c.cmd(b"APOP \x1b[31m\xc3\xa9 " + b"0" * 32), ERR_AUTH)
        lines = self.srv.wait_for_log(r"login failed user=\S+ mech=(USER|APOP)", count=2)
        for l in lines:
            self.assertRegex(l, r"user=\?\]0;pwned\?\?\?\?evil |user=\?\[31m\?\? ")
        self.assertIsNone(re.search(r"[\x00-\x08\x0b-\x1f\x7f]", self.srv.log()),
                          "a control octet reached the log")

    def test_tab_and_extra_spaces(self):
        c = self.connect()
        self.assertEqual(c.cmd(b"CAPA\t"), ERR_UNKNOWN)      # TAB is not a separator
        self.assertEqual(c.cmd(b"USER\talice"), ERR_UNKNOWN)
        self.assertEqual(c.cmd(b" CAPA"), ERR_UNKNOWN)      # nor is a leading space allowed
        self.assertEqual(c.cmd(b""), ERR_UNKNOWN)
        self.assertEqual(c.cmd(b"    "), ERR_UNKNOWN)
        self.assertEqual(c.cmd(b"CAPA "), CAPA_FIRST)       # trailing spaces are no argument
        read_multi_raw(c)
        ts = c.timestamp
        self.assertTrue(c.cmd(f"APOP   alice   {apop_digest(ts, ALICE_SECRET)}   ".encode())
                        .startswith(b"+OK Logged in"))
        self.assertEqual(c.cmd(b"LIST   2  "), f"+OK 2 {SIZES[1]}".encode())
        self.assertEqual(c.cmd(b"LIST\t2"), ERR_UNKNOWN)
        self.assertEqual(c.cmd(b"LIST 2\t"), ERR_BAD_NUMBER)
        self.assertEqual(c.cmd(b"TOP  1   0"), b"+OK Top of message follows")
        read_multi_raw(c)
        self.assertEqual(c.cmd(b"STAT "), f"+OK {N} {sum(SIZES)}".encode())

    def test_nothing_pipelined_after_quit_runs(self):
        c = self.login()
        c.send(b"DELE 1\r\nRSET\r\nQUIT\r\nDELE 2\r\nDELE 3\r\n")
        self.assertEqual(c.line(), b"+OK Message deleted")
        self.assertTrue(c.line().startswith(b"+OK Maildrop has 3 messages"))
        self.assertEqual(c.line(), b"+OK Logging out (3 messages left)")
        self.assert_closed(c)
        self.assertEqual(c.buf, b"")
        # (the health check then finds all three messages)

    def test_flood_of_empty_lines_closes_after_the_bad_command_limit(self):
        c = self.connect()
        c.send(b"\r\n" * 100000)
        replies = [c.line() for _ in range(10)]
        self.assertEqual(replies, [ERR_UNKNOWN] * 9 +
                         [b"-ERR Too many bad commands, closing connection"])
        self.assert_closed(c)
        self.assertEqual(c.buf, b"")

    def test_bad_command_limit_counts_every_kind(self):
        c = self.login()
        bad = [b"XYZZY", b"LIST x", b"RETR", b"TOP 1 x", b"USER a", b"\0", b"x" * 300,
               b"STAT 1", b"DELE -1"]
        for line in bad:
            self.assertNotEqual(c.cmd(line), b"+OK")
        # Not bad commands: a well-formed request for an absent message.
        self.assertEqual(c.cmd("LIST 9"), ERR_NO_MESSAGE)
        self.assertEqual(c.cmd("NOOP"), b"+OK")
        self.assertEqual(c.cmd("NOOP 1"), b"-ERR Too many bad commands, closing connection")
        self.assert_closed(c)


class HostileCommandsTest(HostileCase):
    """Every command, every kind of bad argument, in both states."""

    # Bad commands and failed logins are what this class sends: no limit gets in the way
    # (the limits themselves are tested in HostileLinesTest).
    SERVER_ARGS = ("--max-bad-commands", "1000", "--max-auth-failures", "100")

    def setUp(self):
        super().setUp()
        self._session = None

    def expect(self, line: bytes, reply: bytes, *, login: bool, multi: bool = False):
        """Sends `line` (before login on a fresh connection, after login on the test's
        logged-in one), checks the exact reply (and reads the body of a multi-line
        one), then checks the session goes on."""
        with self.subTest(line=line, logged_in=login):
            if login:
                if self._session is None:
                    self._session = self.login()
                c = self._session
            else:
                c = self.connect()
            try:
                self.assertEqual(c.cmd(line), reply, f"{line!r}")
                if multi:
                    read_multi_raw(c)
                self.assertEqual(c.cmd("NOOP"), b"+OK" if login else ERR_NOT_LOGGED_IN)
            except BaseException:
                c.close()
                if login:
                    self._session = None
                raise
            if not login:
                c.close()

    def test_authorization_state(self):
        long_arg = b"a" * 41
        cases = [
            (b"XYZZY", ERR_UNKNOWN), (b"UTF8", ERR_UNKNOWN), (b"LANG", ERR_UNKNOWN),
            (b"STARTTLS", ERR_UNKNOWN), (b"USERS alice", ERR_UNKNOWN), (b"CAP", ERR_UNKNOWN),
            (b"HELP", ERR_UNKNOWN), (b"EHLO x", ERR_UNKNOWN), (b"LAST", ERR_UNKNOWN),
            (b"RPOP alice", ERR_UNKNOWN), (b"XTND XMIT", ERR_UNKNOWN),
            (b"CAPA x", b"-ERR CAPA takes no arguments"),
            (b"QUIT x", b"-ERR QUIT takes no arguments"),
            (b"USER", b"-ERR Usage: USER name"), (b"USER ", b"-ERR Usage: USER name"),
            (b"USER a b", b"-ERR Usage: USER name"), (b"USER " + long_arg, ERR_ARG_LONG),
            (b"USER " + b"a" * 40, b"+OK Send your password"),
            (b"PASS", b"-ERR No username given"), (b"PASS x", b"-ERR No username given"),
            (b"APOP", b"-ERR Usage: APOP name digest"),
            (b"APOP alice", b"-ERR Usage: APOP name digest"),
            (b"APOP alice " + b"0" * 32 + b" x", b"-ERR Usage: APOP name digest"),
            (b"APOP alice " + b"0" * 32, ERR_AUTH), (b"APOP alice " + b"g" * 32, ERR_AUTH),
            (b"APOP alice 0", ERR_AUTH), (b"APOP alice -1", ERR_AUTH),
            (b"APOP alice " + b"0" * 33, ERR_AUTH), (b"APOP " + long_arg + b" 0", ERR_ARG_LONG),
            (b"APOP alice " + long_arg, ERR_ARG_LONG),
            (b"APOP nobody " + b"0" * 32, ERR_AUTH),
            (b"STLS", b"-ERR TLS is not available"),
            (b"STLS x", b"-ERR STLS takes no arguments"),
            (b"AUTH FOO", b"-ERR Unsupported authentication mechanism"),
            (b"AUTH " + long_arg, b"-ERR Unsupported authentication mechanism"),
            (b"AUTH PLAIN a b", b"-ERR Usage: AUTH mechanism [initial-response]"),
            (b"AUTH PLAIN !!!", ERR_SASL), (b"AUTH PLAIN ====", ERR_SASL),
            (b"AUTH PLAIN YQ", ERR_SASL), (b"AUTH PLAIN " + b64(b"garbage"), ERR_AUTH),
            (b"AUTH PLAIN =", ERR_AUTH),
        ]
        for line, reply in cases:
            self.expect(line, reply, login=False)
        # Every transaction command, with any arguments, before login.
        for cmd in (b"STAT", b"LIST", b"UIDL", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP",
                    b"stat", b"Retr"):
            for arg in (b"", b" 1", b" 1 2", b" -1", b" 99999999999999999999", b" x"):
                self.expect(cmd + arg, ERR_NOT_LOGGED_IN, login=False)
        self.expect(b"AUTH", b"+OK Supported mechanisms follow", login=False, multi=True)

    def test_message_number_arguments(self):
        for cmd, usage in ((b"LIST", b"-ERR Usage: LIST [message]"),
                           (b"UIDL", b"-ERR Usage: UIDL [message]"),
                           (b"RETR", b"-ERR Usage: RETR message"),
                           (b"DELE", b"-ERR Usage: DELE message")):
            for n in BAD_NUMBERS:
                self.expect(cmd + b" " + n, ERR_BAD_NUMBER, login=True)
            for n in ABSENT_NUMBERS:
                self.expect(cmd + b" " + n, ERR_NO_MESSAGE, login=True)
            self.expect(cmd + b" 1 2", usage, login=True)
            self.expect(cmd + b" 1 1", usage, login=True)
            self.expect(cmd + b" " + b"0" * 40 + b"1", ERR_ARG_LONG, login=True)
            if cmd in (b"RETR", b"DELE"):
                self.expect(cmd, usage, login=True)
        # Leading zeros are the same number (as Dovecot).
        self.expect(b"LIST 0002", f"+OK 2 {SIZES[1]}".encode(), login=True)
        self.expect(b"LIST " + b"0" * 39 + b"3", f"+OK 3 {SIZES[2]}".encode(), login=True)
        self.expect(b"RETR 02", f"+OK {SIZES[1]} octets".encode(), login=True, multi=True)

    def test_top_arguments(self):
        usage = b"-ERR Usage: TOP message lines"
        for line, reply in (
                (b"TOP", usage), (b"TOP 1", usage), (b"TOP 1 1 1", usage),
                (b"TOP 1 -1", b"-ERR Invalid number of lines"),
                (b"TOP 1 +1", b"-ERR Invalid number of lines"),
                (b"TOP 1 x", b"-ERR Invalid number of lines"),
                (b"TOP 1 18446744073709551616", b"-ERR Invalid number of lines"),
                (b"TOP 1 99999999999999999999", b"-ERR Invalid number of lines"),
                (b"TOP 0 1", ERR_NO_MESSAGE), (b"TOP 4294967295 0", ERR_NO_MESSAGE),
                (b"TOP -1 1", ERR_BAD_NUMBER), (b"TOP 4294967296 1", ERR_BAD_NUMBER),
                (b"TOP x 1", ERR_BAD_NUMBER)):
            self.expect(line, reply, login=True)
        # A huge line count means "the whole message" (as Dovecot): up to 2^64-1.
        for lines in (b"4294967295", b"4294967296", b"99999999999", b"18446744073709551615"):
            self.expect(b"TOP 1 " + lines, b"+OK Top of message follows", login=True, multi=True)
        c = self._session
        self.assertEqual(c.cmd(b"TOP 1 18446744073709551615"), b"+OK Top of message follows")
        self.assertEqual(read_multi_raw(c), stuffed(ALICE_MESSAGES[0]))

    def test_commands_without_arguments_refuse_extras(self):
        for line, reply in ((b"STAT x", b"-ERR STAT takes no arguments"),
                            (b"STAT 1", b"-ERR STAT takes no arguments"),
                            (b"NOOP x", b"-ERR NOOP takes no arguments"),
                            (b"RSET 1", b"-ERR RSET takes no arguments"),
                            (b"CAPA 1", b"-ERR CAPA takes no arguments"),
                            (b"QUIT now", b"-ERR QUIT takes no arguments")):
            self.expect(line, reply, login=True)

    def test_wrong_state_after_login(self):
        for line in (b"USER alice", b"USER", b"PASS x", b"PASS", b"APOP alice " + b"0" * 32,
                     b"APOP", b"AUTH", b"AUTH PLAIN", b"AUTH PLAIN !!!", b"STLS", b"stls"):
            self.expect(line, ERR_LOGGED_IN, login=True)
        for line in (b"XYZZY", b"UTF8", b"LANG", b"", b"LAST", b"RPOP x"):
            self.expect(line, ERR_UNKNOWN, login=True)

    def test_deleted_message_is_refused_everywhere(self):
        c = self.login()
        self.assertEqual(c.cmd("DELE 2"), b"+OK Message deleted")
        for line in (b"DELE 2", b"LIST 2", b"UIDL 2", b"RETR 2", b"TOP 2 0"):
            self.assertEqual(c.cmd(line), b"-ERR Message is deleted", line)
        self.assertEqual(c.cmd("STAT"), f"+OK {N - 1} {sum(SIZES) - SIZES[1]}".encode())
        self.assertEqual(c.cmd("RSET"),
                         f"+OK Maildrop has {N} messages ({sum(SIZES)} octets)".encode())
        c.abort()  # no QUIT: nothing is removed (the health check reads all three)

class HostileAuthTest(HostileCase):
    """AUTH (RFC 5034) with bad base64, oversized and cancelled responses."""

    def test_bad_base64_in_continuation(self):
        for mech in (b"PLAIN", b"LOGIN", b"CRAM-MD5", b"SCRAM-SHA-256", b"SCRAM-SHA-1"):
            for bad in (b"!!!", b"YQ", b"YQ==YQ==", b"=", b"\xff\xfe", b"Y Q", b"*x"):
                with self.subTest(mech=mech, response=bad):
                    c = self.connect()
                    self.assertTrue(c.cmd(b"AUTH " + mech).startswith(b"+ "))
                    # ("=" is an empty initial response only, RFC 5034 §4.)
                    self.assertEqual(c.cmd(bad), ERR_SASL)
                    # The exchange is over: the next line is a command again.
                    self.assertEqual(c.cmd("CAPA"), CAPA_FIRST)
                    c.close()

    def test_cancel_and_garbage_responses(self):
        for mech in (b"PLAIN", b"LOGIN", b"CRAM-MD5", b"SCRAM-SHA-256"):
            with self.subTest(mech=mech):
                c = self.connect()
                self.assertTrue(c.cmd(b"AUTH " + mech).startswith(b"+ "))
                self.assertEqual(c.cmd(b"*"), b"-ERR Authentication cancelled")
                self.assertEqual(c.cmd("CAPA"), CAPA_FIRST)
                c.close()
        # Well-formed base64 of nonsense: an ordinary authentication failure.
        for line in (b"AUTH PLAIN " + b64(b"\0\0\0\0"), b"AUTH PLAIN " + b64(b"\xff" * 100),
                     b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=,r="),
                     b"AUTH SCRAM-SHA-256 " + b64(b"p=tls-unique,,n=alice,r=x"),
                     b"AUTH SCRAM-SHA-1 " + b64(b"y,a=bob,n=alice,r=x")):
            with self.subTest(line=line):
                c = self.connect()
                self.assertEqual(c.cmd(line), ERR_AUTH)
                c.close()

    def test_oversized_responses(self):
        # Initial response too long for the 255-octet line: refused whole.
        c = self.connect()
        self.assertEqual(c.cmd(b"AUTH PLAIN " + b64(b"\0alice\0" + b"s" * 300)), ERR_TOO_LONG)
        self.assertEqual(c.cmd("CAPA"), CAPA_FIRST)
        read_multi_raw(c)
        # Continuation responses of 300 octets and of 2 MiB end the exchange.
        for size in (300, 2 * MIB):
            with self.subTest(size=size):
                self.assertTrue(c.cmd(b"AUTH LOGIN").startswith(b"+ "))
                self.assertEqual(c.cmd(b"Y" * size), ERR_TOO_LONG)
                self.assertEqual(c.cmd("CAPA"), CAPA_FIRST)  # not taken as a response
                read_multi_raw(c)
        # A huge base64 user name that fits the line: an ordinary failure.
        c = self.connect()
        self.assertTrue(c.cmd(b"AUTH LOGIN").startswith(b"+ "))
        self.assertTrue(c.cmd(b64(b"u" * 180)).startswith(b"+ "))
        self.assertEqual(c.cmd(b64(b"p" * 180)), ERR_AUTH)

    def test_pipelined_auth_exchange_with_bad_lines(self):
        c = self.connect()
        c.send(b"AUTH PLAIN\r\n!!!\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN\r\n" + b"\0\r\n" + b"CAPA\r\n")
        self.assertEqual(c.line(), b"+ ")
        self.assertEqual(c.line(), ERR_SASL)
        self.assertEqual(c.line(), b"+ ")
        self.assertEqual(c.line(), b"-ERR Authentication cancelled")
        self.assertEqual(c.line(), b"+ ")
        self.assertEqual(c.line(), ERR_BAD_BYTE)
        self.assertEqual(c.line(), CAPA_FIRST)
        read_multi_raw(c)
        # A good exchange still works on this connection afterwards.
        r = c.cmd(b"AUTH PLAIN " + b64(b"\0alice\0" + ALICE_SECRET.encode()))
        self.assertTrue(r.startswith(b"+OK Logged in"), r)
        self.assertEqual(c.cmd("STAT"), f"+OK {N} {sum(SIZES)}".encode())


if __name__ == "__main__":
    unittest.main()
