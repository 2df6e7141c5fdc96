"""A scriptable, deliberately hostile POP3 server for client tests (`apop fetch`).

FakePop runs in a thread on 127.0.0.1 (a free port) and serves any number of
connections, one thread each. By default it is a small honest RFC 1939 server
(APOP / USER+PASS against one secret, CAPA, STAT, LIST, UIDL, RETR, TOP, DELE,
NOOP, RSET, QUIT, optional STLS and implicit TLS); every knob below turns it
into a liar:

    greeting          the greeting line (bytes, sent as is plus CRLF)
    capabilities      CAPA lines (None: CAPA answers -ERR)
    stls_inject       bytes sent right after "+OK Begin TLS" (STLS injection)
    tls_context       ssl.SSLContext for STLS (and implicit TLS if implicit_tls)
    replies           {"STAT": b"+OK ...", "LIST 1": b"...", ...}: a raw reply
                      replacing the normal one, keyed by the whole command
                      line (upper-cased) or else by its keyword (multi-line
                      replies include their lines and the final "."); a
                      callable instead returns an iterable of raw chunks,
                      sent one by one (streamed huge replies)
    retr_override     {n: bytes}: the raw body sent for RETR n (dot-stuffing
                      and the final "." are the caller's job)
    cut               a function(conn, line) -> bool called for every client
                      line before it is handled; True drops the connection
    cut_in_retr       (n, octets): drop the connection after sending this many
                      octets of the RETR n reply
    stls_no_handshake answer "+OK" to STLS and carry on in plaintext
    scram             offer-side SCRAM-SHA-256 behaviour (see _scram), with
                      capabilities listing "SASL SCRAM-SHA-256"

DELEs take effect (self.messages shrinks) only on QUIT, as RFC 1939 says.

Everything the client sends is recorded, decrypted where TLS was used:
`fake.lines` (all connections, in order) and `fake.conns[i].lines`. The test
helpers `sent(prefix)` and `credentials_sent()` answer "did the client send an
APOP digest / a password?".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import ssl
import threading
import time


def dot_stuff(message: bytes) -> bytes:
    """The RFC 1939 wire form of a message (LF or CRLF input), with the final '.'."""
    text = message.replace(b"\r\n", b"\n")
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    return out + b".\r\n"


def wire_size(message: bytes) -> int:
    """The size LIST reports: the message with CRLF line endings."""
    text = message.replace(b"\r\n", b"\n")
    return len(text) + text.count(b"\n")


class Conn:
    def __init__(self, fake: "FakePop", sock: socket.socket):
        self.fake = fake
        self.sock = sock
        self.buf = b""
        self.lines: list[bytes] = []
        self.tls = False
        self.closed = False
        self.authed = False
        self.user = None
        self.deleted: set[int] = set()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def reply(self, line: bytes | str):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")

    def readline(self) -> bytes | None:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                return None
            if not chunk:
                return None
            self.buf += chunk
            if len(self.buf) > 1 << 20:
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line[:-1] if line.endswith(b"\r") else line

    def close(self, abort: bool = False):
        """Ends the connection: an orderly FIN, or a reset when `abort`."""
        if self.closed:
            return
        self.closed = True
        if abort:
            _hard_close(self.sock)
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class FakePop:
    def __init__(self, *, greeting: bytes = b"+OK fake POP3 ready <1896.697170952@dbc.mtview.ca.us>",
                 user: str = "alice", secret: str = "fake-secret-123456",
                 messages: list[bytes] = (), capabilities: list[bytes] | None = None,
                 tls_context: ssl.SSLContext | None = None, implicit_tls: bool = False,
                 stls_inject: bytes = b"", replies: dict | None = None,
                 retr_override: dict | None = None, cut=None, cut_in_retr=None,
                 stls_no_handshake: bool = False, scram: str | None = None,
                 scram_iterations: int = 4096):
        self.greeting = greeting
        self.user = user
        self.secret = secret
        self.messages = list(messages)
        self.capabilities = (capabilities if capabilities is not None
                             else [b"TOP", b"UIDL", b"USER", b"PIPELINING"])
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.stls_inject = stls_inject
        self.replies = dict(replies or {})
        self.retr_override = dict(retr_override or {})
        self.cut = cut
        self.cut_in_retr = cut_in_retr
        self.stls_no_handshake = stls_no_handshake
        self.scram = scram
        self.scram_iterations = scram_iterations
        self.conns: list[Conn] = []
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "FakePop":
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                c.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- observation ----------------------------------------------------------------
    @property
    def lines(self) -> list[bytes]:
        with self.lock:
            return [l for c in self.conns for l in c.lines]

    def commands(self) -> list[str]:
        """The command keywords the client sent, upper-cased (SASL continuation
        lines appear as they are)."""
        return [l.split(b" ", 1)[0].decode("latin-1").upper() for l in self.lines]

    def sent(self, keyword: str) -> list[bytes]:
        kw = keyword.upper().encode()
        return [l for l in self.lines if l.split(b" ", 1)[0].upper() == kw]

    def credentials_sent(self) -> list[bytes]:
        """Lines that carry a credential or start an authentication."""
        return [l for l in self.lines
                if l.split(b" ", 1)[0].upper() in (b"APOP", b"PASS", b"USER", b"AUTH")
                or self.secret.encode() in l]

    def wait_idle(self, timeout: float = 5.0):
        """Waits until every connection has ended (the server side saw EOF)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(c.closed for c in self.conns):
                    return
            time.sleep(0.02)

    # -- serving --------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            c = Conn(self, sock)
            with self.lock:
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: Conn):
        try:
            sock = c.sock
            sock.settimeout(30)
            if self.implicit_tls:
                c.sock = self.tls_context.wrap_socket(sock, server_side=True)
                c.tls = True
            c.send(self.greeting + b"\r\n")
            while not c.closed:
                line = c.readline()
                if line is None:
                    break
                c.lines.append(line)
                if self.cut is not None and self.cut(c, line):
                    c.close(abort=True)
                    break
                if not self._handle(c, line):
                    break
        except (OSError, ssl.SSLError) as e:
            self.errors.append(repr(e))
        finally:
            c.close()

    def _visible(self, c: Conn) -> list[int]:
        return [i for i in range(1, len(self.messages) + 1) if i not in c.deleted]

    def _msgno(self, c: Conn, arg: bytes) -> int | None:
        try:
            n = int(arg)
        except ValueError:
            return None
        return n if 1 <= n <= len(self.messages) and n not in c.deleted else None

    def _handle(self, c: Conn, line: bytes) -> bool:
        parts = line.split(b" ")
        cmd = parts[0].upper().decode("latin-1")
        args = parts[1:]
        key = line.upper().decode("latin-1")
        if key in self.replies or cmd in self.replies:
            reply = self.replies.get(key, self.replies.get(cmd))
            if callable(reply):
                # A generator of the reply's raw chunks (sent as they come: a
                # huge listing without holding it in memory); the client may
                # hang up in the middle.
                try:
                    for chunk in reply():
                        c.send(chunk)
                except OSError:
                    return False
                return cmd != "QUIT"
            c.send(reply if reply.endswith(b"\r\n") else reply + b"\r\n")
            return cmd != "QUIT"
        if cmd == "CAPA":
            if self.capabilities is None:
                c.reply("-ERR no CAPA")
            else:
                c.send(b"+OK Capability list follows\r\n" +
                       b"".join(x + b"\r\n" for x in self.capabilities) + b".\r\n")
        elif cmd == "STLS":
            if self.tls_context is None or c.tls or c.authed:
                c.reply("-ERR STLS not available")
                return True
            c.send(b"+OK Begin TLS negotiation\r\n" + self.stls_inject)
            if self.stls_no_handshake:
                return True  # "+OK" and then plaintext as before: a stripping MITM
            c.sock = self.tls_context.wrap_socket(c.sock, server_side=True)
            c.tls = True
            c.buf = b""  # RFC 2595: nothing from before the handshake survives
        elif cmd == "APOP" and len(args) == 2:
            ts = self.greeting[self.greeting.find(b"<"):self.greeting.rfind(b">") + 1]
            good = hashlib.md5(ts + self.secret.encode()).hexdigest().encode()
            if args[0].decode("latin-1") == self.user and args[1].lower() == good:
                c.authed = True
                c.reply("+OK maildrop locked and ready")
            else:
                c.reply("-ERR [AUTH] authentication failed")
        elif cmd == "AUTH" and len(args) >= 1 and args[0].upper() == b"SCRAM-SHA-256" \
                and self.scram is not None:
            return self._scram(c, args[1] if len(args) > 1 else None)
        elif cmd == "USER" and len(args) == 1:
            c.user = args[0].decode("latin-1")
            c.reply("+OK")
        elif cmd == "PASS":
            if c.user == self.user and line[5:].decode("latin-1") == self.secret:
                c.authed = True
                c.reply("+OK logged in")
            else:
                c.reply("-ERR [AUTH] authentication failed")
        elif cmd == "QUIT":
            if c.authed:
                # UPDATE state: deletions take effect now.
                for n in sorted(c.deleted, reverse=True):
                    del self.messages[n - 1]
            c.reply("+OK bye")
            return False
        elif not c.authed:
            c.reply("-ERR not authenticated")
        elif cmd == "STAT":
            vis = self._visible(c)
            c.reply(f"+OK {len(vis)} {sum(wire_size(self.messages[i - 1]) for i in vis)}")
        elif cmd == "LIST" and not args:
            vis = self._visible(c)
            c.send(b"+OK\r\n" + b"".join(
                f"{i} {wire_size(self.messages[i - 1])}\r\n".encode() for i in vis) + b".\r\n")
        elif cmd == "UIDL" and not args:
            vis = self._visible(c)
            c.send(b"+OK\r\n" + b"".join(
                f"{i} {self.uidl(i)}\r\n".encode() for i in vis) + b".\r\n")
        elif cmd in ("LIST", "UIDL") and len(args) == 1:
            n = self._msgno(c, args[0])
            if n is None:
                c.reply("-ERR no such message")
            elif cmd == "LIST":
                c.reply(f"+OK {n} {wire_size(self.messages[n - 1])}")
            else:
                c.reply(f"+OK {n} {self.uidl(n)}")
        elif cmd in ("RETR", "TOP") and args:
            n = self._msgno(c, args[0])
            if n is None:
                c.reply("-ERR no such message")
                return True
            if cmd == "RETR" and n in self.retr_override:
                body = self.retr_override[n]
            else:
                body = dot_stuff(self.messages[n - 1])
            data = f"+OK {wire_size(self.messages[n - 1])} octets\r\n".encode() + body
            if cmd == "RETR" and self.cut_in_retr and self.cut_in_retr[0] == n:
                c.send(data[:self.cut_in_retr[1]])
                time.sleep(0.2)  # let the partial reply arrive before the reset
                c.close(abort=True)
                return False
            c.send(data)
        elif cmd == "DELE" and len(args) == 1:
            n = self._msgno(c, args[0])
            if n is None:
                c.reply("-ERR no such message")
            else:
                c.deleted.add(n)
                c.reply("+OK deleted")
        elif cmd == "NOOP":
            c.reply("+OK")
        elif cmd == "RSET":
            c.deleted.clear()
            c.reply("+OK")
        else:
            c.reply("-ERR unknown command")
        return True

    def _scram(self, c: Conn, initial: bytes | None) -> bool:
        """SCRAM-SHA-256 (RFC 5802/7677) over RFC 5034 AUTH. self.scram picks
        the behaviour: "honest", "bad_signature" (server-final does not prove
        knowledge of the password: a man in the middle), "bad_nonce" (the
        server nonce does not extend the client's), "bad_iterations" (uses
        self.scram_iterations, e.g. 1 or 10**9)."""
        def b64d(data: bytes) -> bytes:
            return base64.b64decode(data, validate=True)

        if initial is None or initial == b"=":
            c.reply("+ ")
            initial = c.readline()
            if initial is None:
                return False
            c.lines.append(initial)
        try:
            client_first = b64d(initial).decode()
            gs2, bare = client_first[:3], client_first[3:]
            if gs2 != "n,,":
                raise ValueError(gs2)
            attrs = dict(kv.split("=", 1) for kv in bare.split(","))
            cnonce = attrs["r"]
        except Exception:
            c.reply("-ERR bad SCRAM client-first")
            return True
        nonce = (cnonce if self.scram != "bad_nonce" else "X" + cnonce) + "srvNonce123"
        salt = b"fakepop-salt-16b"
        iterations = self.scram_iterations if self.scram == "bad_iterations" else 4096
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        c.reply(b"+ " + base64.b64encode(server_first.encode()))
        line = c.readline()
        if line is None:
            return False
        c.lines.append(line)
        if line == b"*":
            c.reply("-ERR authentication cancelled")
            return True
        try:
            client_final = b64d(line).decode()
            without_proof, proof_b64 = client_final.rsplit(",p=", 1)
            proof = base64.b64decode(proof_b64)
        except Exception:
            c.reply("-ERR bad SCRAM client-final")
            return True
        salted = hashlib.pbkdf2_hmac("sha256", self.secret.encode(), salt, 4096)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        if bytes(a ^ b for a, b in zip(proof, signature)) != client_key:
            c.reply("-ERR [AUTH] authentication failed")
            return True
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        verifier = hmac.new(server_key, auth_message, "sha256").digest()
        if self.scram == "bad_signature":
            verifier = bytes([verifier[0] ^ 1]) + verifier[1:]
        c.reply(b"+ " + base64.b64encode(b"v=" + base64.b64encode(verifier)))
        line = c.readline()
        if line is None:
            return False
        c.lines.append(line)
        c.authed = True
        c.reply("+OK logged in")
        return True

    def uidl(self, n: int) -> str:
        return "U" + hashlib.sha1(self.messages[n - 1]).hexdigest()[:20]


class CutProxy:
    """A TCP proxy in front of a real server that drops both connections at a
    chosen point of the FIRST connection it carries (later ones pass through):

      cut_client_before=b"DELE 2"   client->server: forward up to this string,
                                    wait `settle` seconds, then drop
      cut_server_at=b"MARKER"       server->client: forward up to this string,
                                    then drop
    """

    def __init__(self, target_port: int, *, cut_client_before: bytes | None = None,
                 cut_server_at: bytes | None = None, settle: float = 0.5):
        self.target_port = target_port
        self.cut_client_before = cut_client_before
        self.cut_server_at = cut_server_at
        self.settle = settle
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cut_done = threading.Event()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self):
        try:
            self.listener.close()
        except OSError:
            pass
        for s in self._socks:
            _hard_close(s)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            first = self.connections == 1
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._socks += [client, server]
            state = {"dead": False}
            threading.Thread(target=self._pump, daemon=True,
                             args=(client, server, self.cut_client_before if first else None,
                                   state, True)).start()
            threading.Thread(target=self._pump, daemon=True,
                             args=(server, client, self.cut_server_at if first else None,
                                   state, False)).start()

    def _pump(self, src, dst, marker, state, client_side):
        seen = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data or state["dead"]:
                _hard_close(src)
                _hard_close(dst)
                return
            if marker is not None:
                window = seen[-len(marker):] + data
                idx = window.find(marker)
                if idx >= 0:
                    upto = idx - len(seen[-len(marker):])
                    if upto > 0:
                        try:
                            dst.sendall(data[:upto])
                        except OSError:
                            pass
                    if client_side:
                        time.sleep(self.settle)  # let the server answer what it got
                    state["dead"] = True
                    self.cut_done.set()
                    _hard_close(src)
                    _hard_close(dst)
                    return
                seen = (seen + data)[-4096:]
            try:
                dst.sendall(data)
            except OSError:
                state["dead"] = True
                _hard_close(src)
                return


def _hard_close(s: socket.socket):
    """Drops a connection now, even while another thread is blocked in recv()
    on it (close() alone would not end the connection then)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    except OSError:
        pass
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
