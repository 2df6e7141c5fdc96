"""A small LMTP server (RFC 2033) that stores into per-recipient Maildirs and
answers 451 to every Nth message: the destination of test_fetch_tempfail.py
and of bench/fetch_accounts.py's temporary-failure run.

    lm = FakeLmtp(root, ["alice"], tempfail_every=3).start()  # 127.0.0.1:lm.port
    ... apop fetch --to lmtp:127.0.0.1:{lm.port} --deliver-to alice ...
    lm.messages("alice")      # the stored messages (bytes, LF line ends)
    lm.stop()

Offers PIPELINING, 8BITMIME, SIZE and ENHANCEDSTATUSCODES, as Dovecot's LMTP
does; MAIL, RCPT and DATA may arrive in one write. Every recipient must be a
known user (`users`, local part before any '@'), else 550 5.1.1. The end of
DATA is counted over the whole server (all connections): messages number
1, 2, 3, ... and every `tempfail_every`-th gets `451 4.3.0` for each of its
recipients and is not stored; the others are written into MAILROOT/USER
(tmp/, then a rename into new/) before the 250 goes out, so an accepted
message is on disk. Runs in a thread of its own (asyncio loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

MAX_LINE = 4096


class FakeLmtp:
    def __init__(self, root: str, users: list[str], tempfail_every: int = 0):
        self.root = root
        self.users = set(users)
        self.tempfail_every = tempfail_every
        self.port = 0
        self.received = 0        # ends of DATA seen (every message, accepted or not)
        self.accepted = 0
        self.tempfailed = 0
        self.connections = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> "FakeLmtp":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._session, "127.0.0.1", 0, limit=1 << 20))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake LMTP server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "FakeLmtp":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    # -- mail ---------------------------------------------------------------------------
    def maildir(self, user: str) -> str:
        return os.path.join(self.root, user)

    def messages(self, user: str) -> list[bytes]:
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir(user), sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out

    def _store(self, user: str, data: bytes) -> None:
        md = self.maildir(user)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        with self._lock:
            self._seq += 1
            seq = self._seq
        name = f"{int(time.time())}.M{seq}P{os.getpid()}.fakelmtp,S={len(data)}"
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(md, "new", name))

    # -- the protocol -------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1

        def reply(text: str):
            writer.write(text.encode() + b"\r\n")

        try:
            reply("220 fakelmtp.example LMTP ready")
            await writer.drain()
            greeted = False
            mail = None
            rcpts: list[str] = []
            while True:
                line = await reader.readline()
                if not line:
                    return
                if len(line) > MAX_LINE:
                    reply("500 5.5.2 line too long")
                    return
                cmd = line.rstrip(b"\r\n").decode("latin-1")
                verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "LHLO":
                    greeted = True
                    mail, rcpts = None, []
                    writer.write(b"250-fakelmtp.example\r\n250-PIPELINING\r\n"
                                 b"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
                                 b"250 SIZE 104857600\r\n")
                elif verb == "QUIT":
                    reply("221 2.0.0 bye")
                    await writer.drain()
                    return
                elif verb == "RSET":
                    mail, rcpts = None, []
                    reply("250 2.0.0 OK")
                elif verb == "NOOP":
                    reply("250 2.0.0 OK")
                elif not greeted:
                    reply("503 5.5.1 LHLO first")
                elif verb == "MAIL":
                    mail, rcpts = cmd, []
                    reply("250 2.1.0 OK")
                elif verb == "RCPT":
                    addr = cmd.partition(":")[2].strip().split(" ", 1)[0].strip("<>")
                    user = addr.split("@", 1)[0]
                    if mail is None:
                        reply("503 5.5.1 MAIL first")
                    elif user not in self.users:
                        reply(f"550 5.1.1 <{addr}> user unknown")
                    else:
                        rcpts.append(user)
                        reply("250 2.1.5 OK")
                elif verb == "DATA":
                    if not rcpts:
                        reply("503 5.5.1 no valid recipients")
                        continue
                    reply("354 go ahead")
                    await writer.drain()
                    body = bytearray()
                    while True:
                        l = await reader.readline()
                        if not l:
                            return
                        if l in (b".\r\n", b".\n"):
                            break
                        if l.startswith(b"."):
                            l = l[1:]
                        body += l.replace(b"\r\n", b"\n")
                    with self._lock:
                        self.received += 1
                        n = self.received
                        fail = self.tempfail_every and n % self.tempfail_every == 0
                        if fail:
                            self.tempfailed += 1
                        else:
                            self.accepted += 1
                    for user in rcpts:
                        if fail:
                            reply(f"451 4.3.0 <{user}> temporary failure {n}, try again later")
                        else:
                            self._store(user, bytes(body))
                            reply(f"250 2.0.0 <{user}> stored {n}")
                    mail, rcpts = None, []
                else:
                    reply("502 5.5.2 unknown command")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
