#!/usr/bin/env python3
"""LMTP benchmark (issue 21): a private Postfix delivers N messages over LMTP
into `apop serve --lmtp-listen unix:PATH`, then the same into Dovecot's LMTP
(dovecot-lmtpd), same run, same Postfix settings.

    bench/lmtp_postfix.py --apop build/release/apop [--messages 10000] [--json OUT]
    bench/lmtp_postfix.py --apop build/dev/apop --smoke        # 200 messages

For each server: a fresh Postfix instance (tests/interop/postfix.py) whose one
virtual domain, bench.test, goes to the server's LMTP Unix socket; --users
accounts; messages of 4-20 KB (a fixed pseudo-random mix, the same for both
servers) to random accounts, one recipient each, injected by --connections
SMTP clients in parallel. Two figures per server:

- end to end: messages/s from the first injection until Postfix's log shows
  every message `status=sent` (injection and delivery overlap, as in
  production; Postfix's own cost, identical for both, is part of it);
- delivery only (unless --no-held): the same number again, injected while the
  lmtp transport is held (`defer_transports = lmtp`), then released
  (`postqueue -f`): messages/s from the release until all are sent: the LMTP
  server's throughput with Postfix's queue manager feeding it as fast as the
  concurrency allows.

Server CPU per message: utime+stime of the server's process tree from
/proc/PID/stat before and after each phase, plus what the tree's root reaped
(for Dovecot: the master's cutime+cstime, i.e. lmtp, auth and log processes
that exited meanwhile; every Dovecot process is counted, the master, auth and
log included). Postfix's CPU (its master's tree) is reported too.

Identical Postfix settings for both (main.cf): lmtp_destination_concurrency_limit
(--lmtp-concurrency, default 20, Postfix's default), lmtp_destination_recipient_limit
= 50, lmtp_connection_cache_on_demand = yes, lmtp_connection_cache_time_limit = 2s,
default_process_limit = 100, and the queue timers of postfix.py. apop fsyncs each
message; Dovecot runs with its default mail_fsync = optimized. Must run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
sys.path.insert(0, HERE)

from dovecot import Dovecot, require_dovecot_lmtp  # noqa: E402
from postfix import Postfix, require_postfix  # noqa: E402

DOMAIN = "bench.test"
SECRET = "Bench-secret-4417-lantern"
SERVICE_USER, SERVICE_GROUP = "nobody", "nogroup"


def tree_cpu(pid: int) -> float:
    # bench/compare.py's /proc accounting, imported when used: compare.py
    # imports this module (its test 9).
    import compare
    return compare.tree_cpu(pid)


def log(msg: str) -> None:
    print(f"[lmtp_postfix {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_messages(count: int, users: int, seed: int = 21) -> list[tuple[str, bytes]]:
    """(recipient, CRLF message) pairs: sizes uniform in 4-20 KB, lines of 76."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        rcpt = f"user{rnd.randrange(users)}@{DOMAIN}"
        size = rnd.randrange(4096, 20480)
        head = (f"From: <sender@example.org>\r\nTo: <{rcpt}>\r\nSubject: bench {i}\r\n"
                f"Message-ID: <bench.{i}@example.org>\r\n"
                "Date: Thu, 02 Jan 2025 10:00:00 +0000\r\n\r\n").encode()
        line = (f"{i:08d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:76].encode() + b"\r\n"
        body = line * max(1, (size - len(head)) // len(line))
        out.append((rcpt, head + body))
    return out


def inject(port: int, messages: list[tuple[str, bytes]], connections: int) -> None:
    """Sends the messages over `connections` SMTP sessions in parallel."""
    errors: list[str] = []

    def worker(part: list[tuple[str, bytes]]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                s.ehlo("bench.client")
                for rcpt, msg in part:
                    refused = s.sendmail("sender@example.org", [rcpt], msg)
                    if refused:
                        errors.append(f"{rcpt}: {refused}")
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(messages[k::connections],))
               for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"injection failed: {errors[:5]}")


def count_sent(pf: Postfix) -> tuple[int, int]:
    """(status=sent, status=bounced or deferred) lines of lmtp(8) in the maillog."""
    text = pf.log()
    return (len(re.findall(r"postfix/lmtp\[\d+\]: [0-9A-F]+: to=.*status=sent", text)),
            len(re.findall(r"postfix/lmtp\[\d+\]: [0-9A-F]+: to=.*status=(?:bounced|deferred)",
                           text)))


def wait_sent(pf: Postfix, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        sent, failed = count_sent(pf)
        if sent >= total:
            return
        if failed:
            bad = [l for l in pf.log().splitlines()
                   if "status=bounced" in l or "status=deferred" in l]
            raise RuntimeError(f"{failed} deliveries failed:\n" + "\n".join(bad)[:3000])
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sent} of {total} delivered after {timeout:.0f}s")
        time.sleep(0.2)


def postfix_master_pid(pf: Postfix) -> int:
    with open(os.path.join(pf.queue_dir, "pid", "master.pid")) as f:
        return int(f.read().strip())


def postfix_settings(args) -> dict[str, str]:
    return {
        "lmtp_destination_concurrency_limit": str(args.lmtp_concurrency),
        "lmtp_destination_recipient_limit": "50",
        "lmtp_connection_cache_on_demand": "yes",
        "lmtp_connection_cache_time_limit": "2s",
        "default_process_limit": "100",
        "smtpd_client_connection_count_limit": "0",
        "in_flow_delay": "0",
    }


def run_phases(name: str, server_pid: int, sock: str, messages, args) -> dict:
    """End to end, then delivery only, into the LMTP server at `sock`."""
    result: dict = {}
    n = len(messages)
    settings = postfix_settings(args)
    with Postfix(domains={DOMAIN: "lmtp:unix:" + sock}, main=settings) as pf:
        pf_pid = postfix_master_pid(pf)
        cpu0, pcpu0, t0 = tree_cpu(server_pid), tree_cpu(pf_pid), time.monotonic()
        inject(pf.port, messages, args.connections)
        t_inj = time.monotonic()
        wait_sent(pf, n, args.timeout)
        t1, cpu1, pcpu1 = time.monotonic(), tree_cpu(server_pid), tree_cpu(pf_pid)
        result["end_to_end"] = {
            "messages": n, "wall_s": t1 - t0, "inject_s": t_inj - t0,
            "messages_per_s": n / (t1 - t0),
            "server_cpu_ms_per_message": (cpu1 - cpu0) * 1000 / n,
            "postfix_cpu_ms_per_message": (pcpu1 - pcpu0) * 1000 / n,
        }
        log(f"{name}: end to end {n} messages in {t1 - t0:.2f}s "
            f"({n / (t1 - t0):.0f}/s), server CPU {(cpu1 - cpu0) * 1000 / n:.3f} ms/message")
    if args.no_held:
        return result
    # Held: the lmtp transport deferred, and no retry before the flush (the
    # queue timers of an hour; postqueue -f retries everything at once).
    held = dict(settings, defer_transports="lmtp", queue_run_delay="3600s",
                minimal_backoff_time="3600s", maximal_backoff_time="3600s")
    with Postfix(domains={DOMAIN: "lmtp:unix:" + sock}, main=held) as pf:
        pf_pid = postfix_master_pid(pf)
        inject(pf.port, messages, args.connections)
        pf.wait_log(r"status=deferred \(deferred transport\)", n, timeout=args.timeout)
        subprocess.run(["postconf", "-c", pf.conf_dir, "-e", "defer_transports ="], check=True)
        subprocess.run(["postfix", "-c", pf.conf_dir, "reload"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # the reload reaches qmgr before the flush
        if count_sent(pf)[0]:
            raise RuntimeError("held messages were delivered before the flush")
        cpu0, pcpu0, t0 = tree_cpu(server_pid), tree_cpu(pf_pid), time.monotonic()
        pf.flush()
        wait_sent(pf, n, args.timeout)
        t1, cpu1, pcpu1 = time.monotonic(), tree_cpu(server_pid), tree_cpu(pf_pid)
        result["delivery_only"] = {
            "messages": n, "wall_s": t1 - t0, "messages_per_s": n / (t1 - t0),
            "server_cpu_ms_per_message": (cpu1 - cpu0) * 1000 / n,
            "postfix_cpu_ms_per_message": (pcpu1 - pcpu0) * 1000 / n,
        }
        log(f"{name}: delivery only {n} messages in {t1 - t0:.2f}s "
            f"({n / (t1 - t0):.0f}/s), server CPU {(cpu1 - cpu0) * 1000 / n:.3f} ms/message")
    return result


def count_maildir(root: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) in ("new", "cur"):
            total += len(files)
    return total


def bench_apop(args, messages, work: str) -> dict:
    data = os.path.join(work, "apop-data")
    env = dict(os.environ)
    env.pop("APOP_DATA", None)
    for i in range(args.users):
        subprocess.run([args.apop, "user", "add", "--data", data, f"user{i}", "--password-stdin"],
                       input=SECRET.encode() + b"\n", check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["chown", "-R", f"{SERVICE_USER}:{SERVICE_GROUP}", data], check=True)
    sockdir = os.path.join(work, "apop-lmtp")
    os.mkdir(sockdir, 0o755)
    sock = os.path.join(sockdir, "lmtp")
    # Workers as by default: LMTP in a process of its own (--apop-flag=--workers=0 for the
    # one-process server).
    argv = [args.apop, "serve", "--data", data, "--listen", "127.0.0.1:0",
            "--lmtp-listen", "unix:" + sock, "--lmtp-socket-group", "postfix",
            "--user", SERVICE_USER, *args.apop_flags]
    logf = open(os.path.join(work, "apop.log"), "w+")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                logf.seek(0)
                raise RuntimeError(f"apop serve did not start:\n{logf.read()[-3000:]}")
            time.sleep(0.05)
        result = run_phases("apop", proc.pid, sock, messages, args)
    finally:
        proc.terminate()
        proc.wait(20)
        logf.close()
    expected = len(messages) * (1 if args.no_held else 2)
    stored = count_maildir(os.path.join(data, "mail"))
    if stored != expected:
        raise RuntimeError(f"apop stored {stored} messages, expected {expected}")
    return result


def bench_dovecot(args, messages) -> dict:
    dv = Dovecot(lmtp=True, extra_config="auth_username_format = %Ln\n")
    for i in range(args.users):
        dv.add_user(f"user{i}", SECRET)
    try:
        dv.start()
        result = run_phases("dovecot", dv.proc.pid, dv.lmtp_socket, messages, args)
        expected = len(messages) * (1 if args.no_held else 2)
        stored = count_maildir(dv.mail_root)
        if stored != expected:
            raise RuntimeError(f"Dovecot stored {stored} messages, expected {expected}")
        return result
    finally:
        dv.cleanup()


def available() -> str:
    """Why the benchmark cannot run here, or ''."""
    from postfix import postfix_available
    from dovecot import LMTP_BIN, dovecot_available
    if not postfix_available():
        return "Postfix is missing (scripts/deps.sh installs it)"
    if os.getuid() != 0:
        return "not root (Postfix's master runs as root)"
    if not dovecot_available() or not os.path.isfile(LMTP_BIN):
        return "Dovecot's LMTP (dovecot-lmtpd) is missing"
    return ""


def options(**kw) -> argparse.Namespace:
    """The benchmark's settings: main()'s defaults, overridden by `kw`."""
    return argparse.Namespace(**dict(dict(
        apop=os.path.join(REPO, "build", "release", "apop"), messages=10_000, users=100,
        connections=8, lmtp_concurrency=20, no_held=False, only=None, apop_flags=[],
        timeout=1800.0), **kw))


def run(args: argparse.Namespace) -> dict:
    """Both servers (or args.only), each phase; the results and the ratios."""
    args.apop = os.path.abspath(args.apop)
    require_postfix()
    if args.only != "apop":
        require_dovecot_lmtp()
    from compare import machine, versions
    messages = make_messages(args.messages, args.users)
    work = tempfile.mkdtemp(prefix="apop-lmtp-bench-")
    os.chmod(work, 0o711)
    results: dict = {"messages": args.messages, "users": args.users,
                     "connections": args.connections, "lmtp_concurrency": args.lmtp_concurrency,
                     "bytes": sum(len(m) for _, m in messages),
                     "machine": machine(), "versions": versions(args.apop), "servers": {}}
    try:
        if args.only != "dovecot":
            results["servers"]["apop"] = bench_apop(args, messages, work)
        if args.only != "apop":
            results["servers"]["dovecot"] = bench_dovecot(args, messages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = results["servers"]
    if "apop" in s and "dovecot" in s:
        ratios = {}
        for phase in s["apop"]:
            a, d = s["apop"][phase], s["dovecot"][phase]
            ratios[phase] = {
                "messages_per_s apop/dovecot": a["messages_per_s"] / d["messages_per_s"],
                "server_cpu_per_message dovecot/apop":
                    d["server_cpu_ms_per_message"] / max(a["server_cpu_ms_per_message"], 1e-9),
            }
        results["ratios"] = ratios
    return results


def summary(results: dict, prefix: str = "") -> str:
    """The table of the results (bench/compare.py prints it as test 9)."""
    out = [f"{prefix}{results['messages']} messages by Postfix over LMTP "
           f"({results['users']} users, lmtp concurrency {results['lmtp_concurrency']}):",
           f"   {'phase':<14} {'server':<8} {'msg/s':>8} {'server CPU ms/msg':>18} "
           f"{'Postfix CPU ms/msg':>19}"]
    for name, phases in results["servers"].items():
        for phase, r in phases.items():
            out.append(f"   {phase:<14} {name:<8} {r['messages_per_s']:>8.0f} "
                       f"{r['server_cpu_ms_per_message']:>18.3f} "
                       f"{r['postfix_cpu_ms_per_message']:>19.3f}")
    for phase, r in results.get("ratios", {}).items():
        out.append(f"   {phase}: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    return "\n".join(out)


def main() -> int:
    d = options()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apop", default=d.apop)
    ap.add_argument("--messages", type=int, default=d.messages)
    ap.add_argument("--smoke", action="store_true", help="200 messages, 10 users (a smoke run)")
    ap.add_argument("--users", type=int, default=d.users)
    ap.add_argument("--connections", type=int, default=d.connections,
                    help="parallel SMTP injectors")
    ap.add_argument("--lmtp-concurrency", type=int, default=d.lmtp_concurrency,
                    help="Postfix's lmtp_destination_concurrency_limit (both servers)")
    ap.add_argument("--no-held", action="store_true", help="skip the delivery-only phase")
    ap.add_argument("--only", choices=("apop", "dovecot"), help="one server only")
    ap.add_argument("--apop-flag", dest="apop_flags", action="append", default=[],
                    help="an extra flag of apop serve (repeatable)")
    ap.add_argument("--timeout", type=float, default=d.timeout)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.smoke:
        args.messages, args.users = 200, 10
    results = run(args)
    print(summary(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
